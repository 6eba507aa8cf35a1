//! Retry delays: exponential backoff with full jitter.

use std::time::Duration;

/// How long to wait before attempt `n + 1`; a value, so tests and callers can tune it.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Delay ceiling for the first retry.
    pub base: Duration,
    /// Largest delay ever chosen.
    pub max: Duration,
}

impl RetryPolicy {
    /// For ordinary transient errors.
    pub const TRANSIENT: RetryPolicy = RetryPolicy {
        base: Duration::from_millis(200),
        max: Duration::from_secs(30),
    };
    /// For throttling (503 SlowDown): start slower.
    pub const THROTTLED: RetryPolicy = RetryPolicy {
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    /// The ceiling for the delay after `attempts` failed attempts (1 = first failure).
    pub fn ceiling(&self, attempts: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempts.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A delay drawn uniformly from `0..=ceiling(attempts)` ("full jitter"), so retries from
    /// many workers do not arrive together.
    pub fn delay(&self, attempts: u32) -> Duration {
        let ceiling = self.ceiling(attempts).as_millis() as u64;
        Duration::from_millis(rand::random_range(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_max() {
        let p = RetryPolicy::TRANSIENT;
        assert_eq!(p.ceiling(1), Duration::from_millis(200));
        assert_eq!(p.ceiling(2), Duration::from_millis(400));
        assert_eq!(p.ceiling(3), Duration::from_millis(800));
        assert_eq!(p.ceiling(40), Duration::from_secs(30));
    }

    #[test]
    fn delays_stay_under_the_ceiling() {
        let p = RetryPolicy::TRANSIENT;
        for attempt in 1..12 {
            for _ in 0..50 {
                assert!(p.delay(attempt) <= p.ceiling(attempt));
            }
        }
    }
}
