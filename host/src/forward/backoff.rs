//! What a failed attempt leads to: the next attempt after an exponential,
//! fully jittered wait, or a dead letter once the row is `max_age` old.

use std::time::Duration;

use crate::config::Forwarder;
use crate::store::outbox::Outcome;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The upper bound of the wait after the `attempt`-th failure (1-based):
/// `initial_delay` doubled per earlier failure, at most `max_delay`.
pub(super) fn ceiling(forwarder: &Forwarder, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(40);
    forwarder
        .retry
        .initial_delay
        .saturating_mul(1u32 << doublings.min(31))
        .min(forwarder.retry.max_delay)
}

/// The outcome of a failed attempt made at `now_ms`. `jitter` is uniform in
/// `[0, 1)`; the wait is `jitter * ceiling` ("full jitter", which spreads
/// the retries of many rows that failed together). The last attempt is
/// placed at the row's `max_age` rather than past it, and a failure at or
/// after `max_age` is final.
pub(super) fn after_failure(
    forwarder: &Forwarder,
    attempts_before: u32,
    enqueued_at_ms: i64,
    now_ms: i64,
    error: String,
    jitter: f64,
) -> Outcome {
    let deadline = enqueued_at_ms.saturating_add(millis(forwarder.max_age));
    if now_ms >= deadline {
        return Outcome::Dead { error };
    }
    let cap = ceiling(forwarder, attempts_before.saturating_add(1));
    let wait = cap.mul_f64(jitter.clamp(0.0, 1.0));
    // A floor of 10 ms keeps a receiver that fails instantly from being
    // hammered in a tight loop when the jitter draws close to zero.
    let wait = millis(wait).max(10);
    Outcome::Retry {
        next_attempt_at_ms: now_ms.saturating_add(wait).min(deadline),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceLocation;
    use crate::config::forwarder::{Retry, Target};

    fn forwarder() -> Forwarder {
        Forwarder {
            name: "f".into(),
            workspace: "w".into(),
            target: Target::File("/tmp/x".into()),
            secret: None,
            kinds: None,
            max_age: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
            concurrency: 1,
            retry: Retry {
                initial_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(8),
            },
            source: SourceLocation {
                file: "f.yaml".into(),
                line: 1,
                column: 1,
            },
        }
    }

    #[test]
    fn the_ceiling_doubles_per_failure_up_to_max_delay() {
        let f = forwarder();
        let secs: Vec<u64> = (1..=6).map(|n| ceiling(&f, n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 8, 8]);
        assert_eq!(ceiling(&f, u32::MAX), Duration::from_secs(8));
    }

    #[test]
    fn waits_are_jittered_below_the_ceiling_and_end_in_a_dead_letter_at_max_age() {
        let f = forwarder();
        let retry_at =
            |attempts, now, jitter| match after_failure(&f, attempts, 0, now, "e".into(), jitter) {
                Outcome::Retry {
                    next_attempt_at_ms, ..
                } => Some(next_attempt_at_ms),
                _ => None,
            };
        assert_eq!(retry_at(0, 1000, 0.5), Some(1500));
        assert_eq!(retry_at(2, 1000, 0.999), Some(1000 + 3996));
        assert_eq!(retry_at(0, 1000, 0.0), Some(1010), "floor");
        // Never scheduled past max_age: the last try is at the deadline.
        assert_eq!(retry_at(5, 59_000, 0.9), Some(60_000));
        assert!(matches!(
            after_failure(&f, 9, 0, 60_000, "gone".into(), 0.5),
            Outcome::Dead { error } if error == "gone"
        ));
    }
}
