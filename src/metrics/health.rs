//! Liveness of both ends and of the pipeline, as answered by `GET /healthz`.
//!
//! [`Health`] records *when* things last went right: the OpenCTI stream delivered a byte or a
//! heartbeat, a HarfangLab request got an answer, the pipeline finished an event or idled
//! healthily. [`Health::check`] turns that into healthy / unhealthy-with-reasons. It does not
//! probe anything itself: callers report, and an idle deployment must probe HarfangLab now and
//! then (the connector's periodic tick) so a quiet stream does not read as an unreachable EDR.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default freshness window: two minutes is 24 OpenCTI heartbeats and three pings.
pub const DEFAULT_HEALTH_WINDOW: Duration = Duration::from_secs(120);

/// Shared health state. Cheap to clone; all clones see the same timestamps.
#[derive(Clone, Debug)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    window: Duration,
    base: Instant,
    opencti: Stamp,
    harfanglab: Stamp,
    progress: Stamp,
}

/// Nanoseconds after `base`, plus one; 0 means "never". Updated with `fetch_max` so reports
/// from several threads never move it backwards.
#[derive(Debug, Default)]
struct Stamp(AtomicU64);

impl Stamp {
    fn mark(&self, base: Instant, now: Instant) {
        let nanos = now.saturating_duration_since(base).as_nanos();
        let stamp = u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1;
        self.0.fetch_max(stamp, Ordering::Relaxed);
    }

    /// Time elapsed since the mark, or `None` if never marked.
    fn age(&self, base: Instant, now: Instant) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            stamp => Some(now.saturating_duration_since(base + Duration::from_nanos(stamp - 1))),
        }
    }
}

/// The outcome of a health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthReport {
    /// Why the service is unhealthy; empty when healthy.
    pub reasons: Vec<String>,
}

impl HealthReport {
    pub fn is_healthy(&self) -> bool {
        self.reasons.is_empty()
    }

    /// `{"status":"ok"}` or `{"status":"unhealthy","reasons":[…]}`.
    pub fn to_json(&self) -> String {
        let value = if self.is_healthy() {
            serde_json::json!({ "status": "ok" })
        } else {
            serde_json::json!({ "status": "unhealthy", "reasons": self.reasons })
        };
        value.to_string()
    }
}

impl Health {
    /// Health state where each report stays good for `window`.
    pub fn new(window: Duration) -> Health {
        Health {
            inner: Arc::new(Inner {
                window,
                base: Instant::now(),
                opencti: Stamp::default(),
                harfanglab: Stamp::default(),
                progress: Stamp::default(),
            }),
        }
    }

    /// The freshness window this state was built with.
    pub fn window(&self) -> Duration {
        self.inner.window
    }

    /// The OpenCTI stream (or GraphQL API) answered: call on every frame/heartbeat or ping.
    pub fn opencti_reachable(&self) {
        self.opencti_reachable_at(Instant::now());
    }

    /// HarfangLab answered (any HTTP status counts: the server is up and talking).
    pub fn harfanglab_reachable(&self) {
        self.harfanglab_reachable_at(Instant::now());
    }

    /// The pipeline finished an event, or is idle with nothing stuck.
    pub fn progress(&self) {
        self.progress_at(Instant::now());
    }

    pub fn opencti_reachable_at(&self, now: Instant) {
        self.inner.opencti.mark(self.inner.base, now);
    }

    pub fn harfanglab_reachable_at(&self, now: Instant) {
        self.inner.harfanglab.mark(self.inner.base, now);
    }

    pub fn progress_at(&self, now: Instant) {
        self.inner.progress.mark(self.inner.base, now);
    }

    /// Checks all three reports against the window, now.
    pub fn check(&self) -> HealthReport {
        self.check_at(Instant::now())
    }

    /// [`Health::check`] at a given instant (tests drive the clock).
    pub fn check_at(&self, now: Instant) -> HealthReport {
        let inner = &self.inner;
        let mut reasons = Vec::new();
        let parts = [
            (&inner.opencti, "opencti stream not reachable"),
            (&inner.harfanglab, "harfanglab not reachable"),
            (&inner.progress, "pipeline not making progress"),
        ];
        for (stamp, what) in parts {
            match stamp.age(inner.base, now) {
                None => reasons.push(format!("{what} yet")),
                Some(age) if age > inner.window => {
                    reasons.push(format!("{what} for {} s", age.as_secs()));
                }
                Some(_) => {}
            }
        }
        HealthReport { reasons }
    }
}

impl Default for Health {
    fn default() -> Health {
        Health::new(DEFAULT_HEALTH_WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_reported_is_unhealthy_with_three_reasons() {
        let h = Health::new(Duration::from_secs(60));
        let report = h.check();
        assert_eq!(report.reasons.len(), 3, "{report:?}");
        assert!(report.reasons[0].contains("opencti"));
    }

    #[test]
    fn fresh_reports_are_healthy_and_go_stale_after_the_window() {
        let h = Health::new(Duration::from_secs(60));
        let t0 = Instant::now();
        h.opencti_reachable_at(t0);
        h.harfanglab_reachable_at(t0);
        h.progress_at(t0);
        assert!(h.check_at(t0 + Duration::from_secs(60)).is_healthy());
        h.opencti_reachable_at(t0 + Duration::from_secs(100));
        h.progress_at(t0 + Duration::from_secs(100));
        let report = h.check_at(t0 + Duration::from_secs(101));
        assert_eq!(report.reasons, vec!["harfanglab not reachable for 101 s"]);
        assert!(report.to_json().contains(r#""status":"unhealthy""#));
    }

    #[test]
    fn healthy_json_is_status_ok() {
        let report = HealthReport { reasons: vec![] };
        assert_eq!(report.to_json(), r#"{"status":"ok"}"#);
    }
}
