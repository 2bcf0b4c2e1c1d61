//! When a recipient's temporary failure is tried again: exponential
//! backoff with "equal jitter" (half the wait fixed, half random, so a
//! retry never comes at once yet a burst of failures spreads out), up to a
//! max age after which the recipient fails for good.

/// The retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Ceiling of the first wait, in milliseconds.
    pub initial_delay_ms: i64,
    /// Largest ceiling, in milliseconds.
    pub max_delay_ms: i64,
    /// How long after queueing a recipient may still be retried.
    pub max_age_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_delay_ms: 30_000,
            max_delay_ms: 3_600_000,
            max_age_ms: 3 * 24 * 3_600_000,
        }
    }
}

/// What to do after a temporary failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time (Unix milliseconds).
    RetryAt(i64),
    /// Past the max age: fail for good.
    GiveUp,
}

/// After the `attempts`-th temporary failure (1-based) of a recipient
/// queued at `queued_at_ms`: the wait is `ceiling * (0.5 + 0.5 * jitter)`
/// with `ceiling = min(max_delay, initial * 2^(attempts-1))`. The last
/// retry is placed at the max age rather than after it.
pub fn next_attempt(
    policy: &RetryPolicy,
    attempts: u32,
    queued_at_ms: i64,
    now_ms: i64,
    jitter: f64,
) -> Next {
    let deadline = queued_at_ms.saturating_add(policy.max_age_ms.max(0));
    if now_ms >= deadline {
        return Next::GiveUp;
    }
    let doublings = attempts.saturating_sub(1).min(62);
    let ceiling = policy
        .initial_delay_ms
        .max(1)
        .checked_mul(1i64 << doublings)
        .unwrap_or(i64::MAX)
        .min(policy.max_delay_ms.max(1));
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.5
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    // reason: the ceiling is at most max_delay (hours), exact enough in f64.
    let wait = ((ceiling as f64) * (0.5 + 0.5 * jitter)) as i64;
    Next::RetryAt(now_ms.saturating_add(wait.max(1)).min(deadline))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RetryPolicy = RetryPolicy {
        initial_delay_ms: 1000,
        max_delay_ms: 8000,
        max_age_ms: 60_000,
    };

    #[test]
    fn waits_double_per_attempt_up_to_the_cap() {
        let at = |n| match next_attempt(&P, n, 0, 10, 1.0) {
            Next::RetryAt(t) => t - 10,
            Next::GiveUp => -1,
        };
        assert_eq!(
            [at(1), at(2), at(3), at(4), at(5), at(9)],
            [1000, 2000, 4000, 8000, 8000, 8000]
        );
    }

    #[test]
    fn jitter_keeps_the_wait_between_half_and_all_of_the_ceiling() {
        assert_eq!(next_attempt(&P, 1, 0, 0, 0.0), Next::RetryAt(500));
        assert_eq!(next_attempt(&P, 1, 0, 0, 0.5), Next::RetryAt(750));
        assert_eq!(next_attempt(&P, 1, 0, 0, f64::NAN), Next::RetryAt(750));
        assert_eq!(next_attempt(&P, 1, 0, 0, -3.0), Next::RetryAt(500));
    }

    #[test]
    fn the_last_retry_lands_on_the_max_age_then_it_gives_up() {
        assert_eq!(next_attempt(&P, 9, 0, 59_000, 1.0), Next::RetryAt(60_000));
        assert_eq!(next_attempt(&P, 9, 0, 60_000, 1.0), Next::GiveUp);
    }

    #[test]
    fn huge_inputs_do_not_overflow() {
        let p = RetryPolicy {
            initial_delay_ms: i64::MAX,
            max_delay_ms: i64::MAX,
            max_age_ms: i64::MAX,
        };
        assert!(matches!(
            next_attempt(&p, u32::MAX, i64::MAX - 5, 0, 1.0),
            Next::RetryAt(_)
        ));
    }
}
