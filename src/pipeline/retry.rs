//! Retry policy for retryable handler failures: how many attempts, and the exponential backoff
//! with jitter between them.
//!
//! The wait itself is not done here, nor in a worker: the owner thread keeps delayed jobs in a
//! timer heap, so a backing-off event holds no worker thread (other keys keep flowing) and the
//! wait ends at once on shutdown.

use std::time::Duration;

/// When and how often a retryable failure is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = never retry). After the last one fails, the event
    /// is dead-lettered.
    pub max_attempts: u32,
    /// Backoff before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Cap on the backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// May an event that has failed `failures` times be tried again?
    pub fn allows_retry(&self, failures: u32) -> bool {
        failures < self.max_attempts
    }

    /// Wait after the `failures`-th failure (1-based): `initial * 2^(failures-1)`, capped, then
    /// "equal jitter" (uniform in [half, full]) so many keys failing together (HarfangLab down)
    /// do not retry in lockstep.
    pub fn backoff(&self, failures: u32, rng: &mut fastrand::Rng) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let full = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let half = full / 2;
        let spread = (full - half).as_nanos().min(u128::from(u64::MAX)) as u64;
        half + Duration::from_nanos(if spread == 0 { 0 } else { rng.u64(0..=spread) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..100 {
            let d1 = p.backoff(1, &mut rng);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.backoff(3, &mut rng);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d20 = p.backoff(20, &mut rng);
            assert!(d20 >= Duration::from_millis(500) && d20 <= Duration::from_secs(1));
            let huge = p.backoff(u32::MAX, &mut rng);
            assert!(huge <= Duration::from_secs(1));
        }
    }

    #[test]
    fn attempts_are_counted_including_the_first() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(p.allows_retry(1));
        assert!(p.allows_retry(2));
        assert!(!p.allows_retry(3));
        let once = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        assert!(!once.allows_retry(1));
    }
}
