//! Reconnect backoff: exponential with full jitter.
//!
//! The delay before retry `attempt` (0-based) is uniform in
//! `[0, min(cap, base * 2^attempt)]`. Full jitter spreads a herd of agents that lost
//! their gateway at the same moment over the whole window instead of having them
//! retry in lock step.

use std::time::Duration;

/// Backoff policy. Pure: randomness comes in through the caller's generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry.
    pub base: Duration,
    /// Largest ceiling.
    pub cap: Duration,
}

impl Backoff {
    /// The upper bound of the delay before retry `attempt`: `min(cap, base * 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before retry `attempt`, drawn uniformly from `[0, ceiling(attempt)]`
    /// with millisecond resolution.
    pub fn delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.u64(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Backoff {
        Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let b = policy();
        assert_eq!(b.ceiling(0), Duration::from_millis(500));
        assert_eq!(b.ceiling(1), Duration::from_millis(1000));
        assert_eq!(b.ceiling(5), Duration::from_millis(16_000));
        assert_eq!(b.ceiling(6), Duration::from_secs(30));
        assert_eq!(b.ceiling(1000), Duration::from_secs(30));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn ceiling_is_monotone() {
        let b = policy();
        for a in 0..200 {
            assert!(b.ceiling(a) <= b.ceiling(a + 1), "attempt {a}");
        }
    }

    #[test]
    fn delay_stays_within_ceiling_and_spreads() {
        let b = policy();
        let mut rng = fastrand::Rng::with_seed(7);
        for attempt in 0..40 {
            let mut min = Duration::MAX;
            let mut max = Duration::ZERO;
            for _ in 0..200 {
                let d = b.delay(attempt, &mut rng);
                assert!(d <= b.ceiling(attempt));
                min = min.min(d);
                max = max.max(d);
            }
            // Full jitter: the draws cover most of the window, down to near zero.
            assert!(
                min <= b.ceiling(attempt) / 10,
                "attempt {attempt}: min {min:?}"
            );
            assert!(
                max >= b.ceiling(attempt) * 8 / 10,
                "attempt {attempt}: max {max:?}"
            );
        }
    }

    #[test]
    fn huge_base_saturates_at_cap() {
        let b = Backoff {
            base: Duration::from_secs(u64::MAX / 4),
            cap: Duration::from_secs(60),
        };
        assert_eq!(b.ceiling(40), Duration::from_secs(60));
        let mut rng = fastrand::Rng::with_seed(1);
        assert!(b.delay(40, &mut rng) <= Duration::from_secs(60));
    }
}
