//! Prometheus metrics and the `/healthz` state of the connector.
//!
//! [`Metrics`] is the registry every stage writes to (a cheap `Arc` clone of atomics, plus small
//! label maps behind a mutex); it renders the text exposition format on demand. [`Health`]
//! (`health.rs`) records when each end last answered. [`MetricsServer`] (`server.rs`) serves both
//! over HTTP on its own thread; the caller starts it only when `CONNECTOR_EXPOSE_METRICS=true`.
//! The byte format lives in `exposition.rs`. This module decides no policy: which outcome an event
//! had, or when a request counts as a retry, is the caller's word.

mod exposition;
mod health;
mod server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use health::{DEFAULT_HEALTH_WINDOW, Health};
pub use server::MetricsServer;

use exposition::{Kind, Value, Writer, sanitize_name_part};

/// A labelled family keeps at most this many series; later label sets are folded into one
/// series whose labels are all `other`, so a bug upstream cannot grow memory without bound.
const MAX_SERIES: usize = 256;

/// Label value used for series past [`MAX_SERIES`].
const OVERFLOW_LABEL: &str = "other";

/// A scrape-time hook that refreshes gauges from their owner (pipeline stats, client stats).
type Collector = Box<dyn Fn(&Metrics) + Send + Sync>;

/// The connector's metric registry. Cheap to clone; all clones update the same values.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Registry>,
}

struct Registry {
    /// `namespace_subsystem_` (each part optional) in front of every family name.
    prefix: String,
    events: CounterVec<2>,
    harfanglab_requests: CounterVec<2>,
    retries: CounterVec<1>,
    opencti_pings: CounterVec<1>,
    dead_letters: AtomicU64,
    /// Milliseconds part of the checkpointed event id; 0 = none yet.
    checkpoint_ms: AtomicU64,
    /// Milliseconds part of the newest event id seen on the stream (heartbeats included).
    stream_head_ms: AtomicU64,
    queue_depth: AtomicU64,
    busy_workers: AtomicU64,
    /// Events in the pipeline owner's timer heap, waiting for their retry.
    waiting_retry: AtomicU64,
    concurrency_limit: AtomicU64,
    harfanglab_in_flight: AtomicU64,
    reconcile: ReconcileFamilies,
    collectors: Mutex<Vec<Collector>>,
}

/// `harfanglab_intel_reconcile_*`.
#[derive(Default)]
struct ReconcileFamilies {
    /// Passes by outcome (`converged`, `not_converged`, `guarded`, `failed`).
    passes: CounterVec<1>,
    /// Drift found / repaired, by class.
    found: CounterVec<1>,
    repaired: CounterVec<1>,
    guard_trips: AtomicU64,
    /// Unix seconds of the start of the last converged pass; 0 = none yet.
    last_success: AtomicU64,
    running: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with unprefixed names (`harfanglab_intel_…`).
    pub fn new() -> Metrics {
        Metrics::with_prefix("", "")
    }

    /// A registry whose names start with `namespace_subsystem_` (from
    /// `CONNECTOR_METRICS_NAMESPACE` / `CONNECTOR_METRICS_SUBSYSTEM`; either may be empty, as in
    /// the Python client). Invalid characters become `_`.
    pub fn with_prefix(namespace: &str, subsystem: &str) -> Metrics {
        let mut prefix = String::new();
        for part in [namespace, subsystem] {
            let part = sanitize_name_part(part);
            if !part.is_empty() {
                prefix.push_str(&part);
                prefix.push('_');
            }
        }
        Metrics {
            inner: Arc::new(Registry {
                prefix,
                events: CounterVec::default(),
                harfanglab_requests: CounterVec::default(),
                retries: CounterVec::default(),
                opencti_pings: CounterVec::default(),
                dead_letters: AtomicU64::new(0),
                checkpoint_ms: AtomicU64::new(0),
                stream_head_ms: AtomicU64::new(0),
                queue_depth: AtomicU64::new(0),
                busy_workers: AtomicU64::new(0),
                waiting_retry: AtomicU64::new(0),
                concurrency_limit: AtomicU64::new(0),
                harfanglab_in_flight: AtomicU64::new(0),
                reconcile: ReconcileFamilies::default(),
                collectors: Mutex::new(Vec::new()),
            }),
        }
    }

    /// One stream event handled: `event_type` is `create`/`update`/`delete` (or another stream
    /// event name), `outcome` e.g. `applied`, `skipped`, `failed`, `dead_letter`.
    pub fn event(&self, event_type: &str, outcome: &str) {
        self.inner.events.add([event_type, outcome], 1);
    }

    /// One HarfangLab request answered with `status`, or failed without an answer (`None`,
    /// rendered `status="error"`). `op` names the API call, e.g. `create_ioc`.
    pub fn harfanglab_request(&self, op: &str, status: Option<u16>) {
        self.inner
            .harfanglab_requests
            .add([op, &status_label(status)], 1);
    }

    /// Mirrors a request total kept elsewhere (the HarfangLab client's own stats), for a
    /// scrape-time collector: `status` is the label as counted there (`404`, `4xx` for a code
    /// the client does not count one by one, `error`). The caller keeps it monotonic.
    pub fn set_harfanglab_requests(&self, op: &str, status: &str, total: u64) {
        self.inner.harfanglab_requests.set([op, status], total);
    }

    /// One retry of a HarfangLab request (`op` as in [`Metrics::harfanglab_request`]).
    pub fn retry(&self, op: &str) {
        self.inner.retries.add([op], 1);
    }

    /// Mirrors a retry total kept elsewhere (see [`Metrics::set_harfanglab_requests`]).
    pub fn set_retries(&self, op: &str, total: u64) {
        self.inner.retries.set([op], total);
    }

    /// Mirrors the events written to the dead-letter file, as the pipeline owner counts them
    /// (permanent failures and spent retry budgets alike), for a scrape-time collector.
    pub fn set_dead_letters(&self, total: u64) {
        self.inner.dead_letters.store(total, Ordering::Relaxed);
    }

    /// One `pingConnector` call, successful or not.
    pub fn opencti_ping(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.inner.opencti_pings.add([outcome], 1);
    }

    /// The checkpoint (watermark) moved to `event_id` (`<ms>-<seq>`). Returns `false` and
    /// changes nothing when the id has no millisecond part.
    pub fn set_checkpoint(&self, event_id: &str) -> bool {
        store_event_ms(&self.inner.checkpoint_ms, event_id)
    }

    /// The stream delivered `event_id` (an event or a heartbeat): the head the lag is measured
    /// against. Returns `false` for an id without a millisecond part.
    pub fn set_stream_head(&self, event_id: &str) -> bool {
        store_event_ms(&self.inner.stream_head_ms, event_id)
    }

    /// Events read from the stream and not yet finished.
    pub fn set_queue_depth(&self, depth: usize) {
        self.inner
            .queue_depth
            .store(u64::try_from(depth).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Workers currently handling an event.
    pub fn set_busy_workers(&self, busy: usize) {
        self.inner
            .busy_workers
            .store(u64::try_from(busy).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Events waiting for their retry in the pipeline owner's timer heap (holding no worker).
    pub fn set_waiting_retry(&self, waiting: usize) {
        self.inner.waiting_retry.store(
            u64::try_from(waiting).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The limit on HarfangLab requests in flight (fixed, or where `auto` has it now) and the
    /// requests in flight.
    pub fn set_concurrency(&self, limit: usize, in_flight: usize) {
        let r = &self.inner;
        r.concurrency_limit
            .store(u64::try_from(limit).unwrap_or(u64::MAX), Ordering::Relaxed);
        r.harfanglab_in_flight.store(
            u64::try_from(in_flight).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// A reconciliation pass started (`true`) or ended.
    pub fn reconcile_running(&self, running: bool) {
        self.inner
            .reconcile
            .running
            .store(u64::from(running), Ordering::Relaxed);
    }

    /// A reconciliation pass ended: `outcome` (`converged`, `not_converged`, `guarded`,
    /// `failed`), drift found and repaired per class, and when the pass started if it converged.
    pub fn reconcile_pass(
        &self,
        outcome: &str,
        per_class: &[(&str, u64, u64)],
        converged_at: Option<std::time::SystemTime>,
    ) {
        let r = &self.inner.reconcile;
        r.passes.add([outcome], 1);
        if outcome == "guarded" {
            r.guard_trips.fetch_add(1, Ordering::Relaxed);
        }
        for (class, found, repaired) in per_class {
            r.found.add([class], *found);
            r.repaired.add([class], *repaired);
        }
        if let Some(t) = converged_at {
            let secs = t
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            r.last_success.store(secs, Ordering::Relaxed);
        }
    }

    /// Registers a hook run at the start of every scrape, to pull gauges from their owner
    /// (e.g. `set_queue_depth` from a `PipelineStats` snapshot). Keep it cheap and non-blocking.
    pub fn add_collector(&self, collector: impl Fn(&Metrics) + Send + Sync + 'static) {
        lock(&self.inner.collectors).push(Box::new(collector));
    }

    /// The whole registry in the Prometheus text format 0.0.4 (after running the collectors).
    pub fn render(&self) -> String {
        for collector in lock(&self.inner.collectors).iter() {
            collector(self);
        }
        let r = &self.inner;
        let name = |base: &str| format!("{}harfanglab_intel_{base}", r.prefix);
        let mut w = Writer::default();

        let n = name("events_total");
        w.family(
            &n,
            "Stream events handled, by event type and outcome.",
            Kind::Counter,
        );
        r.events.write(&mut w, &n, ["type", "outcome"]);

        let n = name("harfanglab_requests_total");
        w.family(
            &n,
            "HarfangLab API requests, by operation and HTTP status code (a rare code under its class, e.g. 4xx; error = no answer).",
            Kind::Counter,
        );
        r.harfanglab_requests.write(&mut w, &n, ["op", "status"]);

        let n = name("retries_total");
        w.family(
            &n,
            "HarfangLab API requests retried, by operation.",
            Kind::Counter,
        );
        r.retries.write(&mut w, &n, ["op"]);

        let n = name("dead_letters_total");
        w.family(&n, "Events written to the dead-letter file.", Kind::Counter);
        w.sample(&n, &[], Value::Int(load(&r.dead_letters)));

        let n = name("opencti_pings_total");
        w.family(
            &n,
            "OpenCTI pingConnector calls, by outcome.",
            Kind::Counter,
        );
        r.opencti_pings.write(&mut w, &n, ["outcome"]);

        let checkpoint = load(&r.checkpoint_ms);
        let head = load(&r.stream_head_ms);
        let n = name("checkpoint_timestamp_seconds");
        w.family(
            &n,
            "Time encoded in the checkpointed stream event id (Unix seconds).",
            Kind::Gauge,
        );
        if checkpoint > 0 {
            w.sample(&n, &[], Value::Float(checkpoint as f64 / 1000.0));
        }
        let n = name("stream_head_timestamp_seconds");
        w.family(
            &n,
            "Time encoded in the newest stream event or heartbeat id seen (Unix seconds).",
            Kind::Gauge,
        );
        if head > 0 {
            w.sample(&n, &[], Value::Float(head as f64 / 1000.0));
        }
        let n = name("stream_lag_seconds");
        w.family(
            &n,
            "How far the checkpoint is behind the stream head, in seconds.",
            Kind::Gauge,
        );
        if checkpoint > 0 && head > 0 {
            let lag_ms = head.saturating_sub(checkpoint);
            w.sample(&n, &[], Value::Float(lag_ms as f64 / 1000.0));
        }

        let n = name("queue_depth");
        w.family(
            &n,
            "Events read from the stream and not finished yet.",
            Kind::Gauge,
        );
        w.sample(&n, &[], Value::Int(load(&r.queue_depth)));

        let n = name("busy_workers");
        w.family(&n, "Workers currently handling an event.", Kind::Gauge);
        w.sample(&n, &[], Value::Int(load(&r.busy_workers)));

        let n = name("events_waiting_retry");
        w.family(
            &n,
            "Events waiting for their retry backoff (holding no worker).",
            Kind::Gauge,
        );
        w.sample(&n, &[], Value::Int(load(&r.waiting_retry)));

        let n = name("concurrency_limit");
        w.family(
            &n,
            "Most HarfangLab requests allowed in flight: the worker count, or where the adaptive limit (workers=auto) is now.",
            Kind::Gauge,
        );
        w.sample(&n, &[], Value::Int(load(&r.concurrency_limit)));

        let n = name("harfanglab_in_flight");
        w.family(&n, "HarfangLab requests in flight now.", Kind::Gauge);
        w.sample(&n, &[], Value::Int(load(&r.harfanglab_in_flight)));

        let rc = &r.reconcile;
        let n = name("reconcile_passes_total");
        w.family(
            &n,
            "Reconciliation passes, by outcome (converged, not_converged, guarded, failed).",
            Kind::Counter,
        );
        rc.passes.write(&mut w, &n, ["outcome"]);
        let n = name("reconcile_drift_found_total");
        w.family(
            &n,
            "Drift found by reconciliation, by class.",
            Kind::Counter,
        );
        rc.found.write(&mut w, &n, ["class"]);
        let n = name("reconcile_drift_repaired_total");
        w.family(
            &n,
            "Drift repaired by reconciliation, by class.",
            Kind::Counter,
        );
        rc.repaired.write(&mut w, &n, ["class"]);
        let n = name("reconcile_guard_trips_total");
        w.family(
            &n,
            "Passes stopped by the mass-deletion guard (HARFANGLAB_INTEL_RECONCILE_MAX_DELETE_RATIO).",
            Kind::Counter,
        );
        w.sample(&n, &[], Value::Int(load(&rc.guard_trips)));
        let n = name("reconcile_last_success_timestamp_seconds");
        w.family(
            &n,
            "Start of the last reconciliation pass that converged (Unix seconds).",
            Kind::Gauge,
        );
        let last = load(&rc.last_success);
        if last > 0 {
            w.sample(&n, &[], Value::Int(last));
        }
        let n = name("reconcile_running");
        w.family(&n, "1 while a reconciliation pass runs.", Kind::Gauge);
        w.sample(&n, &[], Value::Int(load(&rc.running)));

        // The conventional unprefixed-by-product name, so stock dashboards find it.
        if let Some(rss) = resident_memory_bytes() {
            let n = format!("{}process_resident_memory_bytes", r.prefix);
            w.family(&n, "Resident memory size in bytes.", Kind::Gauge);
            w.sample(&n, &[], Value::Int(rss));
        }

        let n = name("build_info");
        w.family(
            &n,
            "Always 1; the version label names the build.",
            Kind::Gauge,
        );
        w.sample(&n, &[("version", env!("CARGO_PKG_VERSION"))], Value::Int(1));
        w.finish()
    }
}

/// Milliseconds part of an OpenCTI stream event id (`"1718445605000-0"` → 1718445605000).
pub fn event_id_millis(event_id: &str) -> Option<u64> {
    let (ms, seq) = event_id.split_once('-')?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ms.parse().ok()
}

fn store_event_ms(slot: &AtomicU64, event_id: &str) -> bool {
    match event_id_millis(event_id) {
        Some(ms) => {
            slot.store(ms, Ordering::Relaxed);
            true
        }
        None => false,
    }
}

fn status_label(status: Option<u16>) -> String {
    status.map_or_else(|| "error".to_owned(), |s| s.to_string())
}

fn load(v: &AtomicU64) -> u64 {
    v.load(Ordering::Relaxed)
}

/// A poisoned metrics lock only means a panic elsewhere mid-update; the counts are still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `VmRSS` from `/proc/self/status`, read at scrape time; `None` off Linux or on a parse error.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        _ => None,
    }
}

/// A counter family with `N` labels: a short list of (label values, count).
///
/// A `Vec` scanned linearly rather than a map: families hold a handful of series, and the scan
/// compares `&str`s, so counting an existing series allocates nothing. Sorted at render time.
struct CounterVec<const N: usize> {
    series: Mutex<Vec<([String; N], u64)>>,
}

impl<const N: usize> Default for CounterVec<N> {
    fn default() -> Self {
        CounterVec {
            series: Mutex::new(Vec::new()),
        }
    }
}

impl<const N: usize> CounterVec<N> {
    fn add(&self, labels: [&str; N], n: u64) {
        let mut series = lock(&self.series);
        let slot = Self::slot(&mut series, labels);
        *slot = slot.saturating_add(n);
    }

    fn set(&self, labels: [&str; N], total: u64) {
        let mut series = lock(&self.series);
        *Self::slot(&mut series, labels) = total;
    }

    fn slot<'a>(series: &'a mut Vec<([String; N], u64)>, labels: [&str; N]) -> &'a mut u64 {
        let find = |series: &[([String; N], u64)], wanted: [&str; N]| {
            series
                .iter()
                .position(|(values, _)| values.iter().zip(wanted).all(|(have, want)| have == want))
        };
        let index = match find(series, labels) {
            Some(index) => index,
            None => {
                let key = if series.len() < MAX_SERIES {
                    labels
                } else {
                    [OVERFLOW_LABEL; N]
                };
                match find(series, key) {
                    Some(index) => index,
                    None => {
                        series.push((key.map(str::to_owned), 0));
                        series.len() - 1
                    }
                }
            }
        };
        &mut series[index].1
    }

    fn write(&self, w: &mut Writer, name: &str, keys: [&str; N]) {
        let mut series = lock(&self.series).clone();
        series.sort();
        for (values, count) in &series {
            let mut labels = [("", ""); N];
            for (i, label) in labels.iter_mut().enumerate() {
                *label = (keys[i], values[i].as_str());
            }
            w.sample(name, &labels, Value::Int(*count));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_millis_takes_the_ms_part() {
        assert_eq!(event_id_millis("1718445605000-0"), Some(1718445605000));
        assert_eq!(event_id_millis("1718445605000-12"), Some(1718445605000));
        assert_eq!(event_id_millis("0-0"), Some(0));
        assert_eq!(event_id_millis("1718445605000"), None);
        assert_eq!(event_id_millis("abc-0"), None);
        assert_eq!(event_id_millis("1-x"), None);
        assert_eq!(event_id_millis(""), None);
    }

    #[test]
    fn vm_rss_is_parsed_in_bytes() {
        let status = "Name:\tx\nVmHWM:\t  9000 kB\nVmRSS:\t   1234 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("VmRSS: 12 MB\n"), None);
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn rss_of_this_process_is_readable() {
        assert!(resident_memory_bytes().is_some_and(|b| b > 0));
    }

    #[test]
    fn render_has_help_type_and_escaped_labels() {
        let m = Metrics::new();
        m.event("create", "applied");
        m.event("create", "applied");
        m.harfanglab_request("create_\"ioc\"", Some(201));
        m.harfanglab_request("create_ioc", None);
        let text = m.render();
        assert!(text.contains("# TYPE harfanglab_intel_events_total counter\n"));
        assert!(
            text.contains("harfanglab_intel_events_total{type=\"create\",outcome=\"applied\"} 2\n")
        );
        assert!(text.contains(
            "harfanglab_intel_harfanglab_requests_total{op=\"create_\\\"ioc\\\"\",status=\"201\"} 1\n"
        ));
        assert!(text.contains("{op=\"create_ioc\",status=\"error\"} 1\n"));
        // Unknown checkpoint: the family is declared but has no sample.
        assert!(!text.contains("\nharfanglab_intel_stream_lag_seconds "));
    }

    #[test]
    fn prefix_applies_to_every_family() {
        let m = Metrics::with_prefix("opencti", "hl-intel");
        let text = m.render();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("opencti_hl_intel_"), "{line}");
        }
    }

    #[test]
    fn lag_is_head_minus_checkpoint() {
        let m = Metrics::new();
        assert!(m.set_checkpoint("1718445600000-0"));
        assert!(m.set_stream_head("1718445605500-3"));
        assert!(!m.set_stream_head("garbage"));
        let text = m.render();
        assert!(
            text.contains("harfanglab_intel_stream_lag_seconds 5.5\n"),
            "{text}"
        );
        assert!(text.contains("harfanglab_intel_checkpoint_timestamp_seconds 1718445600\n"));
    }

    #[test]
    fn label_cardinality_is_capped() {
        let m = Metrics::new();
        for i in 0..(MAX_SERIES + 10) {
            m.retry(&format!("op{i}"));
        }
        let text = m.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("harfanglab_intel_retries_total{"))
            .count();
        assert_eq!(series, MAX_SERIES + 1);
        assert!(text.contains("harfanglab_intel_retries_total{op=\"other\"} 10\n"));
    }

    #[test]
    fn collectors_run_at_scrape_time() {
        let m = Metrics::new();
        m.add_collector(|m| m.set_queue_depth(42));
        assert!(m.render().contains("harfanglab_intel_queue_depth 42\n"));
    }
}
