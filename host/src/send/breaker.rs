//! A connection's circuit breaker: after `failures_to_open` consecutive
//! connection-level failures the connection is paused; when the pause is
//! over one probe (the staged check) decides whether it closes again or
//! pauses for twice as long (up to `max_pause_ms`).

use serde::Serialize;

/// When a circuit opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive connection-level failures that open it.
    pub failures_to_open: u32,
    /// First pause, milliseconds.
    pub initial_pause_ms: i64,
    /// Longest pause, milliseconds.
    pub max_pause_ms: i64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures_to_open: 5,
            initial_pause_ms: 30_000,
            max_pause_ms: 600_000,
        }
    }
}

/// The phase of a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerPhase {
    /// Sending normally.
    Closed,
    /// Paused.
    Open,
    /// A probe is running.
    HalfOpen,
}

/// What the lane may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Send.
    Send,
    /// Run the probe first (exactly one caller gets this).
    Probe,
    /// Paused until then.
    Paused {
        /// Unix milliseconds.
        until_ms: i64,
    },
}

/// The state the admin API shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerState {
    /// Phase.
    pub state: BreakerPhase,
    /// Connection-level failures in a row.
    pub consecutive_failures: u32,
    /// End of the current pause, Unix milliseconds.
    pub paused_until_ms: Option<i64>,
    /// Length of the current pause.
    pub pause_ms: Option<i64>,
    /// Times the circuit opened.
    pub opened_total: u64,
    /// The last connection-level failure (class name).
    pub last_failure: Option<String>,
    /// When it happened, Unix milliseconds.
    pub last_failure_at_ms: Option<i64>,
}

/// One connection's circuit.
#[derive(Debug, Clone)]
pub struct Breaker {
    settings: BreakerSettings,
    phase: BreakerPhase,
    failures: u32,
    pause_ms: i64,
    until_ms: i64,
    /// When the running probe was handed out (a lost probe is re-offered).
    probe_at_ms: i64,
    opened: u64,
    last_failure: Option<(String, i64)>,
}

impl Breaker {
    /// A closed circuit.
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            phase: BreakerPhase::Closed,
            failures: 0,
            pause_ms: settings.initial_pause_ms.max(1),
            until_ms: 0,
            probe_at_ms: 0,
            opened: 0,
            last_failure: None,
        }
    }

    /// Whether to send, probe or wait.
    pub fn admit(&mut self, now_ms: i64) -> Admit {
        match self.phase {
            BreakerPhase::Closed => Admit::Send,
            BreakerPhase::Open if now_ms < self.until_ms => Admit::Paused {
                until_ms: self.until_ms,
            },
            BreakerPhase::Open => {
                self.phase = BreakerPhase::HalfOpen;
                self.probe_at_ms = now_ms;
                Admit::Probe
            }
            BreakerPhase::HalfOpen => {
                let lost = self
                    .probe_at_ms
                    .saturating_add(self.settings.initial_pause_ms.max(1));
                if now_ms >= lost {
                    self.probe_at_ms = now_ms;
                    Admit::Probe
                } else {
                    Admit::Paused { until_ms: lost }
                }
            }
        }
    }

    /// A send reached the server without a connection-level failure. Only a
    /// closed circuit counts it: a send that was already in flight when the
    /// circuit opened says nothing about the connection now, so only the
    /// probe closes an open circuit.
    pub fn on_success(&mut self, _now_ms: i64) {
        if self.phase == BreakerPhase::Closed {
            self.failures = 0;
        }
    }

    /// A connection-level failure of a send. An open or half-open circuit
    /// records it but only the probe's outcome moves it.
    pub fn on_failure(&mut self, now_ms: i64, reason: &str) {
        self.last_failure = Some((reason.to_owned(), now_ms));
        self.failures = self.failures.saturating_add(1);
        if self.phase == BreakerPhase::Closed
            && self.failures >= self.settings.failures_to_open.max(1)
        {
            self.open(now_ms);
        }
    }

    /// The probe's outcome: `None` closes the circuit, a failure class opens
    /// it again for twice as long (up to the cap).
    pub fn on_probe(&mut self, now_ms: i64, failure: Option<&str>) {
        match failure {
            None => {
                self.phase = BreakerPhase::Closed;
                self.failures = 0;
                self.pause_ms = self.settings.initial_pause_ms.max(1);
            }
            Some(reason) => {
                self.last_failure = Some((reason.to_owned(), now_ms));
                self.failures = self.failures.saturating_add(1);
                self.pause_ms = self
                    .pause_ms
                    .saturating_mul(2)
                    .min(self.settings.max_pause_ms.max(1));
                self.open(now_ms);
            }
        }
    }

    fn open(&mut self, now_ms: i64) {
        self.phase = BreakerPhase::Open;
        self.until_ms = now_ms.saturating_add(self.pause_ms);
        self.opened = self.opened.saturating_add(1);
    }

    /// The state for the API.
    pub fn snapshot(&self, _now_ms: i64) -> BreakerState {
        let paused = self.phase != BreakerPhase::Closed;
        BreakerState {
            state: self.phase,
            consecutive_failures: self.failures,
            paused_until_ms: paused.then_some(self.until_ms),
            pause_ms: paused.then_some(self.pause_ms),
            opened_total: self.opened,
            last_failure: self.last_failure.as_ref().map(|(r, _)| r.clone()),
            last_failure_at_ms: self.last_failure.as_ref().map(|(_, t)| *t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings {
            failures_to_open: 3,
            initial_pause_ms: 100,
            max_pause_ms: 350,
        })
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let mut b = breaker();
        b.on_failure(0, "timeout");
        b.on_failure(0, "timeout");
        b.on_success(0);
        b.on_failure(0, "timeout");
        b.on_failure(0, "timeout");
        assert_eq!(b.admit(1), Admit::Send);
        b.on_failure(1, "connection_refused");
        assert_eq!(b.admit(2), Admit::Paused { until_ms: 101 });
        assert_eq!(
            b.snapshot(2).last_failure.as_deref(),
            Some("connection_refused")
        );
    }

    #[test]
    fn one_probe_after_the_pause_and_its_failure_doubles_the_pause_up_to_the_cap() {
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(0, "timeout");
        }
        assert_eq!(b.admit(100), Admit::Probe);
        assert!(matches!(b.admit(101), Admit::Paused { .. }));
        b.on_probe(110, Some("timeout"));
        assert_eq!(b.admit(111), Admit::Paused { until_ms: 310 });
        assert_eq!(b.admit(310), Admit::Probe);
        b.on_probe(310, Some("timeout"));
        assert_eq!(b.snapshot(310).pause_ms, Some(350));
        assert_eq!(b.admit(660), Admit::Probe);
        b.on_probe(661, None);
        assert_eq!(b.admit(662), Admit::Send);
        assert_eq!(b.snapshot(662).opened_total, 3);
    }

    #[test]
    fn a_lost_probe_is_offered_again() {
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(0, "timeout");
        }
        assert_eq!(b.admit(100), Admit::Probe);
        assert!(matches!(b.admit(150), Admit::Paused { .. }));
        assert_eq!(b.admit(200), Admit::Probe);
    }

    #[test]
    fn sends_in_flight_when_it_opened_neither_close_nor_reopen_it() {
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(0, "timeout");
        }
        // A send that was already on its way succeeds: still open.
        b.on_success(10);
        assert_eq!(b.admit(20), Admit::Paused { until_ms: 100 });
        assert_eq!(b.admit(100), Admit::Probe);
        // Another late send fails while the probe runs: the pause is not
        // doubled and the circuit stays half-open for the probe.
        b.on_failure(101, "timeout");
        assert_eq!(b.snapshot(101).state, BreakerPhase::HalfOpen);
        assert_eq!(b.snapshot(101).pause_ms, Some(100));
        b.on_probe(102, None);
        assert_eq!(b.admit(103), Admit::Send);
        assert_eq!(b.snapshot(103).consecutive_failures, 0);
    }
}
