//! Retry policy for HarfangLab calls: exponential backoff with full jitter and a cap, `Retry-After`
//! parsing (delta-seconds or HTTP date, capped), and a wait that ends promptly on shutdown.
//!
//! Owns only the timing decisions; which failures are retried is decided by `client`
//! (network errors, timeouts, 429 and 5xx, see `docs/harfanglab-api.md` §1 and §7).

use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::time::{Duration, SystemTime};

/// How many times and how long to retry a transient failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts in all).
    pub max_retries: u32,
    /// First backoff ceiling; attempt `n` waits a random time in `[0, min(cap, base * 2^n)]`.
    pub base: Duration,
    /// Upper bound of any computed backoff.
    pub cap: Duration,
    /// Upper bound of a server-sent `Retry-After` (a hostile or buggy value must not park a worker).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Full-jitter backoff for retry number `attempt` (0 = first retry): uniform in
    /// `[0, min(cap, base * 2^attempt)]`. Full jitter spreads the retries of many workers that
    /// failed together (AWS architecture blog, "Exponential Backoff And Jitter").
    pub fn backoff(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.u64(0..=millis))
    }

    /// The deterministic upper bound of [`RetryPolicy::backoff`].
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait before the next attempt: the server's `Retry-After` (capped) when it sent a
    /// usable one, else the jittered backoff.
    pub fn delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        match retry_after {
            Some(d) => d.min(self.max_retry_after),
            None => self.backoff(attempt, rng),
        }
    }
}

/// Parse a `Retry-After` header value: delta-seconds (`"120"`) or an HTTP date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`), relative to `now`. A date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Why a wait did not run to its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupted;

/// Wait `duration` unless shutdown is signalled first. Shutdown is a message on `shutdown` or its
/// disconnection (every `Sender` dropped), which is how the whole process broadcasts it.
pub fn wait(shutdown: &Receiver<()>, duration: Duration) -> Result<(), Interrupted> {
    match shutdown.recv_timeout(duration) {
        Err(RecvTimeoutError::Timeout) => Ok(()),
        Ok(()) | Err(RecvTimeoutError::Disconnected) => Err(Interrupted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn backoff_stays_under_an_exponential_ceiling_and_the_cap() {
        let p = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(7);
        assert_eq!(p.ceiling(0), Duration::from_millis(200));
        assert_eq!(p.ceiling(3), Duration::from_millis(1600));
        assert_eq!(p.ceiling(20), Duration::from_secs(30));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(30));
        for attempt in 0..40 {
            let d = p.backoff(attempt, &mut rng);
            assert!(d <= p.ceiling(attempt), "{d:?} at {attempt}");
        }
    }

    #[test]
    fn backoff_is_jittered() {
        let p = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(1);
        let draws: std::collections::HashSet<_> = (0..50).map(|_| p.backoff(5, &mut rng)).collect();
        assert!(draws.len() > 10, "full jitter should spread the waits");
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(42));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(42))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(42));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn retry_after_is_capped() {
        let p = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(1);
        let d = p.delay(0, Some(Duration::from_secs(86_400)), &mut rng);
        assert_eq!(d, p.max_retry_after);
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(2)), &mut rng),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn wait_ends_on_disconnect_and_on_message() {
        let (tx, rx) = crossbeam_channel::unbounded::<()>();
        assert_eq!(wait(&rx, Duration::from_millis(5)), Ok(()));
        tx.send(()).unwrap();
        assert_eq!(wait(&rx, Duration::from_secs(30)), Err(Interrupted));
        drop(tx);
        let start = Instant::now();
        assert_eq!(wait(&rx, Duration::from_secs(30)), Err(Interrupted));
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
