//! A connection's send rate: evenly spaced sends at an adaptive rate, and
//! exact sliding-window quotas.
//!
//! - **Pacing**: `per_second` N spaces sends 1/N s apart with a burst of
//!   one (GCRA with a single slot), so any window of t seconds holds at most
//!   N·t + 1 sends. The rate changes at run time (below), which a fixed
//!   quota of a limiter crate such as governor cannot follow without being
//!   rebuilt and losing its state, and every call takes the time explicitly
//!   so tests are deterministic; the state is one number.
//! - **Quotas**: `per_minute`, `per_hour`, `per_day` are sliding windows over
//!   the send times (a provider's "2,000 per 24 h" is rolling). Times are kept
//!   as long as the longest configured window, at most the largest quota of
//!   them (8 bytes each). The daemon loads the last day's sends from the
//!   store at start, so a restart grants no fresh quota.
//! - **Adaptive rate (AIMD)**: a throttling reply halves the rate (from the
//!   measured rate of the last 2 s when unlimited), down to a floor of one
//!   send per 5 s; throttles less than 1 s apart count once. Every 2 s
//!   without one the rate grows by a tenth of the ceiling (at least 0.5/s)
//!   until it is back at the ceiling (or, when unlimited, back at the rate
//!   before the first decrease, and then unlimited again).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// The lowest adaptive rate (one send per 5 s).
pub const FLOOR: f64 = 0.2;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
const RECOVER_EVERY_MS: i64 = 2_000;
const THROTTLE_DEBOUNCE_MS: i64 = 1_000;

/// The configured limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateSettings {
    /// Sends per second (ceiling of the adaptive rate).
    pub per_second: Option<u32>,
    /// Quota per sliding minute.
    pub per_minute: Option<u32>,
    /// Quota per sliding hour.
    pub per_hour: Option<u32>,
    /// Quota per sliding day.
    pub per_day: Option<u32>,
}

/// Why a send must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// Pacing.
    Rate,
    /// The minute quota.
    Minute,
    /// The hour quota.
    Hour,
    /// The day quota.
    Day,
}

/// When to ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// Unix milliseconds.
    pub until_ms: i64,
    /// Which limit.
    pub reason: WaitReason,
}

/// What the admin API and metrics show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateState {
    /// `limits.per_second`.
    pub configured_per_second: Option<u32>,
    /// The rate now; `None`: unlimited.
    pub effective_per_second: Option<f64>,
    /// Below the ceiling after throttling replies.
    pub throttled: bool,
    /// Throttling signals counted.
    pub throttle_events: u64,
    /// The last one, Unix milliseconds.
    pub last_throttled_at_ms: Option<i64>,
    /// Sends in the last minute (counted only when a quota needs it).
    pub sent_last_minute: u64,
    /// Sends in the last hour (idem).
    pub sent_last_hour: u64,
    /// Sends in the last day (idem).
    pub sent_last_day: u64,
    /// `limits.per_minute`.
    pub per_minute: Option<u32>,
    /// `limits.per_hour`.
    pub per_hour: Option<u32>,
    /// `limits.per_day`.
    pub per_day: Option<u32>,
}

#[derive(Debug)]
struct State {
    settings: RateSettings,
    /// The adaptive rate; `None`: unlimited.
    rate: Option<f64>,
    /// Where recovery stops when the ceiling is unlimited.
    recover_to: Option<f64>,
    /// GCRA: the earliest time of the next send.
    next_free_ms: f64,
    /// Send times within the longest window (quotas), oldest first.
    times: VecDeque<i64>,
    /// Recent send times for measuring the rate (last 2 s).
    recent: VecDeque<i64>,
    last_now: i64,
    last_throttle: Option<i64>,
    last_change: i64,
    throttles: u64,
}

/// One connection's limiter.
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<State>,
}

fn ceiling(s: &RateSettings) -> Option<f64> {
    s.per_second.map(f64::from)
}

fn window(s: &RateSettings) -> i64 {
    if s.per_day.is_some() {
        DAY
    } else if s.per_hour.is_some() {
        HOUR
    } else if s.per_minute.is_some() {
        MINUTE
    } else {
        0
    }
}

impl State {
    fn now(&mut self, now_ms: i64) -> i64 {
        // A clock step backwards must not block sending.
        self.last_now = self.last_now.max(now_ms);
        self.last_now
    }

    fn trim(&mut self, now: i64) {
        let keep = window(&self.settings);
        while self.times.front().is_some_and(|t| *t <= now - keep) {
            self.times.pop_front();
        }
        // More than the largest quota never changes a wait (the history of a
        // quota lowered on reload, say): keep the buffer bounded by it.
        let most = [
            self.settings.per_minute,
            self.settings.per_hour,
            self.settings.per_day,
        ]
        .into_iter()
        .flatten()
        .max()
        .map_or(0, |n| n as usize);
        while self.times.len() > most {
            self.times.pop_front();
        }
        while self.recent.front().is_some_and(|t| *t <= now - 2_000) {
            self.recent.pop_front();
        }
    }

    fn count_since(&self, since: i64) -> usize {
        self.times.len() - self.times.partition_point(|t| *t <= since)
    }

    fn recover(&mut self, now: i64) {
        let Some(rate) = self.rate else { return };
        let top = ceiling(&self.settings).or(self.recover_to);
        let Some(top) = top else { return };
        if rate >= top {
            return;
        }
        let steps = (now - self.last_change) / RECOVER_EVERY_MS;
        if steps <= 0
            || self
                .last_throttle
                .is_some_and(|t| now - t < RECOVER_EVERY_MS)
        {
            return;
        }
        #[allow(clippy::cast_precision_loss)]
        // reason: steps is small (time since the last change / 2 s).
        let grown = rate + (top * 0.1).max(0.5) * steps as f64;
        self.last_change += steps * RECOVER_EVERY_MS;
        if grown >= top {
            if ceiling(&self.settings).is_some() {
                self.rate = Some(top);
            } else {
                self.rate = None;
                self.recover_to = None;
            }
        } else {
            self.rate = Some(grown);
        }
    }

    fn quota_wait(&self, now: i64) -> Option<Wait> {
        let s = self.settings;
        for (limit, span, reason) in [
            (s.per_minute, MINUTE, WaitReason::Minute),
            (s.per_hour, HOUR, WaitReason::Hour),
            (s.per_day, DAY, WaitReason::Day),
        ] {
            let Some(limit) = limit else { continue };
            let limit = limit as usize;
            let inside = self.count_since(now - span);
            if inside >= limit {
                // The send that must leave the window first: a send at t is
                // outside the window from t + span on.
                let idx = self.times.len() - limit;
                let until = self.times.get(idx).map_or(now + 1, |t| t + span);
                return Some(Wait {
                    until_ms: until.max(now + 1),
                    reason,
                });
            }
        }
        None
    }
}

impl Limiter {
    /// A limiter with `history` (send times of the last day) counted.
    pub fn new(settings: RateSettings, history: &[i64], now_ms: i64) -> Self {
        // A send recorded "in the future" (the store's clock ahead of ours)
        // counts as sent now, so it leaves the window on time.
        let mut times: Vec<i64> = history.iter().map(|t| (*t).min(now_ms)).collect();
        times.sort_unstable();
        let mut state = State {
            settings,
            rate: ceiling(&settings),
            recover_to: None,
            next_free_ms: 0.0,
            times: times.into(),
            recent: VecDeque::new(),
            last_now: now_ms,
            last_throttle: None,
            last_change: now_ms,
            throttles: 0,
        };
        state.trim(now_ms);
        Self {
            state: Mutex::new(state),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// New settings (reload); history and throttle state are kept, the
    /// adaptive rate clamped to the new ceiling.
    pub fn update(&self, settings: RateSettings, now_ms: i64) {
        self.with(|s| {
            if s.settings == settings {
                return;
            }
            let now = s.now(now_ms);
            let old_top = ceiling(&s.settings).or(s.recover_to);
            s.settings = settings;
            match (ceiling(&settings), s.rate) {
                (Some(c), Some(r)) => s.rate = Some(r.min(c)),
                (Some(c), None) => s.rate = Some(c),
                // Unlimited now: a throttled rate keeps recovering, up to
                // where it stood before the throttling, then is unlimited.
                (None, Some(r)) if old_top.is_some_and(|top| r < top) => {
                    s.recover_to = old_top;
                }
                (None, _) => {
                    s.rate = None;
                    s.recover_to = None;
                }
            }
            if ceiling(&settings).is_some() {
                s.recover_to = None;
            }
            s.trim(now);
        });
    }

    /// Takes over the connection's send history from the store (its sends
    /// by any process, as when another process held the connection's send
    /// lease until now): quotas count them, and the next
    /// slot of the rate comes no earlier than one interval after the
    /// latest of them.
    pub fn adopt(&self, history: &[i64], now_ms: i64) {
        self.with(|s| {
            let now = s.now(now_ms);
            // The store's record replaces this process's own, except for
            // its sends newer than the store's latest (not recorded yet).
            let latest = history.iter().copied().max().unwrap_or(i64::MIN);
            let mut times: Vec<i64> = history
                .iter()
                .map(|t| (*t).min(now))
                .chain(s.times.iter().copied().filter(|t| *t > latest))
                .collect();
            times.sort_unstable();
            s.times = times.into();
            if let (Some(rate), Some(last)) = (s.rate, history.iter().copied().max()) {
                #[allow(clippy::cast_precision_loss)]
                // reason: Unix milliseconds fit f64's 53-bit mantissa exactly.
                let next = last.min(now) as f64 + 1000.0 / rate.max(FLOOR);
                s.next_free_ms = s.next_free_ms.max(next);
            }
            s.trim(now);
        });
    }

    /// Takes a send slot if pacing and every quota allow one now.
    pub fn try_acquire(&self, now_ms: i64) -> Result<(), Wait> {
        self.with(|s| {
            let now = s.now(now_ms);
            s.recover(now);
            s.trim(now);
            if let Some(w) = s.quota_wait(now) {
                return Err(w);
            }
            #[allow(clippy::cast_precision_loss)]
            // reason: Unix milliseconds fit f64's 53-bit mantissa exactly.
            let nowf = now as f64;
            if let Some(rate) = s.rate {
                if nowf < s.next_free_ms {
                    #[allow(clippy::cast_possible_truncation)]
                    // reason: a time in milliseconds, rounded up.
                    let until = s.next_free_ms.ceil() as i64;
                    return Err(Wait {
                        until_ms: until.max(now + 1),
                        reason: WaitReason::Rate,
                    });
                }
                s.next_free_ms = nowf.max(s.next_free_ms) + 1000.0 / rate.max(FLOOR);
            }
            if window(&s.settings) > 0 {
                s.times.push_back(now);
            }
            s.recent.push_back(now);
            Ok(())
        })
    }

    /// A throttling reply: multiplicative decrease.
    pub fn on_throttled(&self, now_ms: i64) {
        self.with(|s| {
            let now = s.now(now_ms);
            if s.last_throttle
                .is_some_and(|t| now - t < THROTTLE_DEBOUNCE_MS)
            {
                return;
            }
            s.trim(now);
            let base = match s.rate {
                Some(r) => r,
                None => {
                    #[allow(clippy::cast_precision_loss)]
                    // reason: at most a few thousand sends in 2 s.
                    let measured = (s.recent.len() as f64 / 2.0).max(1.0);
                    s.recover_to = Some(measured);
                    measured
                }
            };
            s.rate = Some((base * 0.5).max(FLOOR));
            s.last_throttle = Some(now);
            s.last_change = now;
            s.throttles += 1;
            // The slower spacing applies from now on.
            #[allow(clippy::cast_precision_loss)]
            let nowf = now as f64;
            s.next_free_ms = s.next_free_ms.max(nowf);
        });
    }

    /// A send that was not throttled: lets recovery proceed.
    pub fn on_sent(&self, now_ms: i64) {
        self.with(|s| {
            let now = s.now(now_ms);
            s.recover(now);
        });
    }

    /// Whether the adaptive rate is at its floor.
    pub fn at_floor(&self) -> bool {
        self.with(|s| s.rate.is_some_and(|r| r <= FLOOR))
    }

    /// The state for the API.
    pub fn snapshot(&self, now_ms: i64) -> RateState {
        self.with(|s| {
            let now = s.now(now_ms);
            s.recover(now);
            s.trim(now);
            let count = |span: i64| s.count_since(now - span) as u64;
            RateState {
                configured_per_second: s.settings.per_second,
                effective_per_second: s.rate,
                throttled: match (s.rate, ceiling(&s.settings)) {
                    (Some(r), Some(c)) => r < c,
                    (Some(_), None) => true,
                    (None, _) => false,
                },
                throttle_events: s.throttles,
                last_throttled_at_ms: s.last_throttle,
                sent_last_minute: count(MINUTE),
                sent_last_hour: count(HOUR),
                sent_last_day: count(DAY),
                per_minute: s.settings.per_minute,
                per_hour: s.settings.per_hour,
                per_day: s.settings.per_day,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_second(n: u32) -> RateSettings {
        RateSettings {
            per_second: Some(n),
            ..RateSettings::default()
        }
    }

    fn sends(l: &Limiter, from: i64, to: i64) -> usize {
        (from..to).filter(|t| l.try_acquire(*t).is_ok()).count()
    }

    #[test]
    fn sends_are_evenly_spaced_without_a_burst() {
        let l = Limiter::new(per_second(10), &[], 0);
        assert_eq!(sends(&l, 0, 5000), 50);
        let l = Limiter::new(per_second(10), &[], 0);
        assert_eq!(l.try_acquire(0), Ok(()));
        assert_eq!(
            l.try_acquire(1),
            Err(Wait {
                until_ms: 100,
                reason: WaitReason::Rate
            })
        );
    }

    #[test]
    fn a_minute_quota_blocks_until_the_first_send_leaves_the_window() {
        let l = Limiter::new(
            RateSettings {
                per_minute: Some(60),
                ..RateSettings::default()
            },
            &[],
            0,
        );
        for t in 0..60 {
            assert!(l.try_acquire(t).is_ok());
        }
        let w = l.try_acquire(100).unwrap_err();
        assert_eq!(w.reason, WaitReason::Minute);
        assert_eq!(w.until_ms, 60_000);
        // Then the send at 0 ms has left the window, the one at 1 ms not yet.
        assert!(l.try_acquire(59_999).is_err());
        assert!(l.try_acquire(60_000).is_ok());
        assert!(l.try_acquire(60_000).is_err());
        assert!(l.try_acquire(60_001).is_ok());
    }

    #[test]
    fn history_counts_against_the_day_quota() {
        let settings = RateSettings {
            per_day: Some(3),
            ..RateSettings::default()
        };
        let now = 10 * DAY;
        let l = Limiter::new(settings, &[now - 5_000, now - 1_000, now - DAY - 1], now);
        assert!(l.try_acquire(now).is_ok());
        assert_eq!(l.try_acquire(now).unwrap_err().reason, WaitReason::Day);
        assert_eq!(l.snapshot(now).sent_last_day, 3);
    }

    #[test]
    fn throttling_halves_the_rate_once_per_second_and_recovers_to_the_ceiling() {
        let l = Limiter::new(per_second(20), &[], 0);
        l.on_throttled(0);
        l.on_throttled(500);
        assert_eq!(l.snapshot(500).effective_per_second, Some(10.0));
        assert!(l.snapshot(500).throttled);
        l.on_throttled(1000);
        assert_eq!(l.snapshot(1000).effective_per_second, Some(5.0));
        // +2/s per 2 s without a throttle.
        assert_eq!(l.snapshot(3000).effective_per_second, Some(7.0));
        assert_eq!(l.snapshot(20_000).effective_per_second, Some(20.0));
        assert!(!l.snapshot(20_000).throttled);
    }

    #[test]
    fn unlimited_becomes_limited_at_half_the_measured_rate_and_unlimited_again() {
        let l = Limiter::new(RateSettings::default(), &[], 0);
        for t in 0..40 {
            assert!(l.try_acquire(t * 50).is_ok());
        }
        l.on_throttled(2000);
        // 40 sends in 2 s = 20/s measured, halved.
        let r = l.snapshot(2000).effective_per_second.unwrap();
        assert!((r - 10.0).abs() < 1.5, "{r}");
        assert_eq!(l.snapshot(60_000).effective_per_second, None);
    }

    #[test]
    fn repeated_throttling_reaches_the_floor() {
        let l = Limiter::new(per_second(4), &[], 0);
        for i in 0..10 {
            l.on_throttled(i * 1000);
        }
        assert!(l.at_floor());
        assert_eq!(l.snapshot(9000).effective_per_second, Some(FLOOR));
    }

    #[test]
    fn a_lower_ceiling_on_reload_clamps_the_rate() {
        let l = Limiter::new(per_second(50), &[], 0);
        l.update(per_second(5), 10);
        assert_eq!(l.snapshot(10).effective_per_second, Some(5.0));
        assert!(!l.snapshot(10).throttled);
    }

    #[test]
    fn a_clock_step_backwards_does_not_block() {
        let l = Limiter::new(per_second(10), &[], 1_000_000);
        assert!(l.try_acquire(1_000_000).is_ok());
        assert!(l.try_acquire(5).is_err());
        assert!(l.try_acquire(1_000_100).is_ok());
    }

    #[test]
    fn removing_the_ceiling_after_a_throttle_recovers_then_unlimits() {
        let l = Limiter::new(per_second(20), &[], 0);
        l.on_throttled(0);
        l.update(RateSettings::default(), 100);
        let s = l.snapshot(100);
        assert_eq!(s.effective_per_second, Some(10.0));
        assert!(s.throttled);
        assert_eq!(l.snapshot(60_000).effective_per_second, None);
        // Without a throttle the ceiling's removal is immediate.
        let l = Limiter::new(per_second(20), &[], 0);
        l.update(RateSettings::default(), 100);
        assert_eq!(l.snapshot(100).effective_per_second, None);
    }

    #[test]
    fn history_from_the_future_counts_as_now_and_the_buffer_stays_bounded() {
        let settings = RateSettings {
            per_minute: Some(2),
            ..RateSettings::default()
        };
        let now = 10 * DAY;
        let future = now + HOUR;
        let history: Vec<i64> = (0..1000)
            .map(|i| now - 30_000 + i)
            .chain([future])
            .collect();
        let l = Limiter::new(settings, &history, now);
        let w = l.try_acquire(now).unwrap_err();
        assert_eq!(w.reason, WaitReason::Minute);
        // The two newest count: the one from "the future" (now) and now - 29_001.
        assert_eq!(w.until_ms, now - 30_000 + 999 + MINUTE);
        assert_eq!(l.snapshot(now).sent_last_minute, 2);
        assert!(l.try_acquire(now + MINUTE).is_ok());
    }

    #[test]
    fn adopted_history_counts_for_quotas_and_spaces_the_next_send() {
        let settings = RateSettings {
            per_second: Some(10),
            per_minute: Some(3),
            ..RateSettings::default()
        };
        let now = 10 * DAY;
        let l = Limiter::new(settings, &[], now);
        // Another process sent at now - 50 and twice before.
        l.adopt(&[now - 20_000, now - 10_000, now - 50], now);
        assert_eq!(l.snapshot(now).sent_last_minute, 3);
        let w = l.try_acquire(now).unwrap_err();
        assert_eq!(w.reason, WaitReason::Minute);
        assert_eq!(w.until_ms, now - 20_000 + MINUTE);

        let l = Limiter::new(per_second(10), &[], now);
        l.adopt(&[now - 50], now);
        let w = l.try_acquire(now).unwrap_err();
        assert_eq!((w.reason, w.until_ms), (WaitReason::Rate, now + 50));
        assert!(l.try_acquire(now + 50).is_ok());
    }
}
