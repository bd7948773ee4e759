//! Retry timing for every caller: one [`RetryPolicy`] (exponential backoff, one jitter scheme, a
//! cap), one classification of failures by what a retry means ([`FailureKind`]), one
//! `Retry-After` parser and one wait that ends on shutdown.
//!
//! Who waits where (README "Failures and retries"): long waits happen only in the pipeline
//! owner's timer heap, where a waiting event holds no thread; the HTTP clients resend at most
//! [`RetryPolicy::quick`] (a dropped keep-alive connection, well under a second); startup
//! (`service::until_up`) and the stream reconnect wait on their own thread with their own caps.
//! Nothing here sleeps without watching a shutdown signal.

use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::time::{Duration, SystemTime};

/// How often and how long to retry.
///
/// Retry `n` (0 = the first retry) waits a random time in `[c/2, c]` with
/// `c = min(cap, base * 2^n)` ("equal jitter"): many callers that failed together (an outage)
/// spread out, and each wait has a floor, so the time an event spends retrying is bounded from
/// below as well as from above (README "Failures and retries").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (`u32::MAX`: until it works or shutdown).
    pub max_retries: u32,
    /// Ceiling of the first wait; doubles with each retry.
    pub base: Duration,
    /// Upper bound of every wait, computed or asked for by the server (`Retry-After`).
    pub cap: Duration,
}

/// The pipeline's defaults (`HARFANGLAB_INTEL_MAX_RETRIES=8`, 1 s doubling,
/// `HARFANGLAB_INTEL_RETRY_BACKOFF_MAX=60`).
impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The only retry an HTTP client makes itself: two resends, 50 then 100 ms at most (150 ms
    /// in all), for a request whose connection dropped (a stale keep-alive connection, a reset).
    /// Anything longer is the pipeline's job, so a worker is never parked in a wait.
    pub const fn quick() -> RetryPolicy {
        RetryPolicy {
            max_retries: 2,
            base: Duration::from_millis(50),
            cap: Duration::from_millis(100),
        }
    }

    /// Retry until it works or shutdown (startup waits, stream reconnects).
    pub const fn until_stopped(base: Duration, cap: Duration) -> RetryPolicy {
        RetryPolicy {
            max_retries: u32::MAX,
            base,
            cap,
        }
    }

    /// May a call that has been retried `retries` times be retried again?
    pub fn allows(&self, retries: u32) -> bool {
        retries < self.max_retries
    }

    /// The upper bound of the wait before retry `retry` (0-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The jittered wait before retry `retry`: uniform in `[ceiling/2, ceiling]`.
    pub fn backoff(&self, retry: u32, rng: &mut fastrand::Rng) -> Duration {
        let ceiling = self.ceiling(retry);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rng.u64(0..=spread))
    }

    /// The wait before retry `retry`: the jittered backoff, or longer when the server asked for
    /// more (`Retry-After` is a minimum), never more than `cap` (a hostile or buggy value must
    /// not stall a key for a day). Never shorter than the backoff, so `Retry-After: 0` cannot
    /// make a hot loop.
    pub fn delay(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        let backoff = self.backoff(retry, rng);
        match retry_after {
            Some(asked) => asked.max(backoff).min(self.cap),
            None => backoff,
        }
    }

    /// Bounds of the total wait over every retry the policy allows (`None` when unbounded):
    /// `(shortest, longest)`. The README's worst case is this for the default policy.
    pub fn total_wait(&self) -> Option<(Duration, Duration)> {
        if self.max_retries == u32::MAX {
            return None;
        }
        let longest: Duration = (0..self.max_retries).map(|n| self.ceiling(n)).sum();
        let shortest: Duration = (0..self.max_retries).map(|n| self.ceiling(n) / 2).sum();
        Some((shortest, longest))
    }
}

/// What a failure says about trying again. Every boundary's error enum maps onto it
/// ([`Retryable`]), and the pipeline decides from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Trying again cannot help (a 4xx, an invalid pattern): record it.
    Permanent,
    /// Another try may pass, and the cause may be the request itself (a 500, a GraphQL
    /// error): each one spends the event's attempt budget.
    Transient,
    /// The far end did not serve the call (unreachable, timeout, 429, 502, 503, 504, or the
    /// process is stopping): about its availability, not about the event. `retry_after` is the
    /// server's `Retry-After`, if it sent one.
    Unavailable { retry_after: Option<Duration> },
}

impl FailureKind {
    /// The kind of an HTTP status that is not a success: 429 and 502-504 are availability
    /// (throttling, a gateway that cannot reach its backend, an overloaded server, a gateway
    /// timeout); another 5xx is transient; the rest is permanent.
    pub fn of_status(status: u16, retry_after: Option<Duration>) -> FailureKind {
        match status {
            429 | 502..=504 => FailureKind::Unavailable { retry_after },
            500.. => FailureKind::Transient,
            _ => FailureKind::Permanent,
        }
    }

    /// An availability failure without a server hint.
    pub const UNAVAILABLE: FailureKind = FailureKind::Unavailable { retry_after: None };

    /// Worth trying again (transient or unavailable).
    pub fn is_retryable(self) -> bool {
        self != FailureKind::Permanent
    }
}

/// An error that says what a retry means (each boundary's error enum: `HarfangLabError`,
/// `ApiError`, `SyncError`).
pub trait Retryable {
    /// The failure's kind.
    fn failure_kind(&self) -> FailureKind;

    /// Worth trying again later (transient or unavailable)?
    fn is_retryable(&self) -> bool {
        self.failure_kind().is_retryable()
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
/// disconnection (every `Sender` dropped), which is how the whole process broadcasts it
/// (`pipeline::Shutdown::receiver`).
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

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn ceiling_doubles_from_base_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.ceiling(0), secs(1.0));
        assert_eq!(p.ceiling(3), secs(8.0));
        assert_eq!(p.ceiling(5), secs(32.0));
        assert_eq!(p.ceiling(6), secs(60.0));
        assert_eq!(p.ceiling(40), secs(60.0));
        assert_eq!(p.ceiling(u32::MAX), secs(60.0));
    }

    #[test]
    fn backoff_is_equal_jitter_between_half_and_the_ceiling() {
        let p = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(7);
        for retry in 0..40 {
            for _ in 0..20 {
                let d = p.backoff(retry, &mut rng);
                let c = p.ceiling(retry);
                assert!(d >= c / 2 && d <= c, "{d:?} at retry {retry}");
            }
        }
        let draws: std::collections::HashSet<_> = (0..50).map(|_| p.backoff(5, &mut rng)).collect();
        assert!(draws.len() > 40, "the jitter should spread the waits");
    }

    #[test]
    fn a_zero_base_never_waits() {
        let p = RetryPolicy {
            base: Duration::ZERO,
            ..RetryPolicy::default()
        };
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(p.backoff(3, &mut rng), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_a_minimum_capped_by_the_cap() {
        let p = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(1);
        // Longer than the backoff: honoured exactly.
        assert_eq!(p.delay(0, Some(secs(5.0)), &mut rng), secs(5.0));
        // Beyond the cap: the cap.
        assert_eq!(p.delay(0, Some(secs(86_400.0)), &mut rng), p.cap);
        // Shorter than the backoff (`Retry-After: 0`): the backoff, so no hot loop.
        for _ in 0..20 {
            let d = p.delay(4, Some(Duration::ZERO), &mut rng);
            assert!(d >= secs(8.0) && d <= secs(16.0), "{d:?}");
        }
    }

    #[test]
    fn quick_retries_stay_well_under_a_second() {
        let (shortest, longest) = RetryPolicy::quick().total_wait().expect("bounded");
        assert_eq!(longest, Duration::from_millis(150));
        assert_eq!(shortest, Duration::from_millis(75));
        assert!(RetryPolicy::quick().allows(1) && !RetryPolicy::quick().allows(2));
    }

    /// The numbers the README states for the default policy.
    #[test]
    fn the_default_worst_case_is_the_one_the_readme_states() {
        let (shortest, longest) = RetryPolicy::default().total_wait().expect("bounded");
        assert_eq!(shortest, secs(91.5));
        assert_eq!(longest, secs(183.0));
        let forever = RetryPolicy::until_stopped(secs(1.0), secs(60.0));
        assert_eq!(forever.total_wait(), None);
        assert!(forever.allows(u32::MAX - 1));
    }

    #[test]
    fn statuses_are_classified_by_what_a_retry_means() {
        let hint = Some(secs(3.0));
        for s in [429, 502, 503, 504] {
            assert_eq!(
                FailureKind::of_status(s, hint),
                FailureKind::Unavailable { retry_after: hint },
                "{s}"
            );
        }
        for s in [500, 501, 505, 599] {
            assert_eq!(
                FailureKind::of_status(s, hint),
                FailureKind::Transient,
                "{s}"
            );
        }
        for s in [301, 400, 404, 409, 413] {
            assert_eq!(
                FailureKind::of_status(s, None),
                FailureKind::Permanent,
                "{s}"
            );
        }
        assert!(FailureKind::UNAVAILABLE.is_retryable() && FailureKind::Transient.is_retryable());
        assert!(!FailureKind::Permanent.is_retryable());
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
