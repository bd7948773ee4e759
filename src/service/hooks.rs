//! The glue threads and callbacks around the pipeline core: the reader → pipeline adapter, the
//! checkpoint sink, the owner-thread tick (metrics, `STATUS=`, watchdog, summary with lag) and
//! the OpenCTI ping loop (state push, UI reset detection, idle HarfangLab probe).
//!
//! Everything here is shared between one service run's threads through [`Shared`]; nothing
//! blocks without also watching a shutdown signal.

use super::handler::Work;
use crate::concurrency::Limiter;
use crate::harfanglab::Client;
use crate::harfanglab::client::ClientStats;
use crate::metrics::{Health, Metrics, event_id_millis};
use crate::notify::{Notifier, WatchdogGate};
use crate::opencti::api::{OpenCtiApi, PingOutcome, PlatformVersion, RetryActivity};
use crate::opencti::stream::StreamItem;
use crate::pipeline::{
    CheckpointSink, Input, PipelineHooks, PipelineStats, Shutdown, StatsSnapshot,
};
use crate::state::{Checkpoint, CheckpointWriter};
use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// State shared by the threads of one service run.
pub struct Shared {
    pub metrics: Metrics,
    pub health: Health,
    pub notifier: Notifier,
    pub gate: WatchdogGate,
    pub stats: PipelineStats,
    /// Milliseconds part of the newest id the stream delivered (0 = none yet).
    pub head_ms: AtomicU64,
    /// The platform sent `no-recover`: stop writing `recover_until`.
    pub no_recover: AtomicBool,
    /// `READY=1` sent.
    pub ready: AtomicBool,
    /// A ping saw a reset from the UI; the session loop restarts from the first-run position.
    pub reset_pending: AtomicBool,
    /// The current session's stop signal (to end it on reset or shutdown).
    pub session: Mutex<Option<Shutdown>>,
}

impl Shared {
    /// Fresh per-run state: no stream head, no `no-recover`, not ready, no reset, no session.
    pub fn new(
        metrics: Metrics,
        health: Health,
        notifier: Notifier,
        gate: WatchdogGate,
        stats: PipelineStats,
    ) -> Shared {
        Shared {
            metrics,
            health,
            notifier,
            gate,
            stats,
            head_ms: AtomicU64::new(0),
            no_recover: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            reset_pending: AtomicBool::new(false),
            session: Mutex::new(None),
        }
    }

    /// Stop the current session (if any).
    pub fn stop_session(&self) {
        if let Some(s) = self
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            s.trigger();
        }
    }

    /// Lag of the watermark behind the stream head, when both are known.
    pub fn lag(&self, watermark: Option<&str>) -> Option<Duration> {
        let head = self.head_ms.load(Ordering::Relaxed);
        let mark = watermark.and_then(event_id_millis)?;
        (head > 0).then(|| Duration::from_millis(head.saturating_sub(mark)))
    }

    fn saw_head(&self, id: &str) {
        if let Some(ms) = event_id_millis(id) {
            self.head_ms.fetch_max(ms, Ordering::Relaxed);
        }
        self.metrics.set_stream_head(id);
        self.health.opencti_reachable();
    }

    /// One-line status for `STATUS=` and the periodic log.
    fn status_line(&self, s: &StatsSnapshot) -> String {
        let lag = match self.lag(s.watermark.as_deref()) {
            Some(l) => humantime::format_duration(Duration::from_millis(
                u64::try_from(l.as_millis()).unwrap_or(u64::MAX) / 100 * 100,
            ))
            .to_string(),
            None => "unknown".to_owned(),
        };
        format!(
            "applied {} skipped {} failed {} in flight {} lag {lag} checkpoint {}",
            s.applied,
            s.skipped,
            s.failed,
            s.in_flight,
            s.watermark.as_deref().unwrap_or("none")
        )
    }
}

/// Map reader items to pipeline inputs until the reader ends (its sender dropped) or the
/// pipeline stops reading (our send fails). Updates metrics and health as items arrive.
pub fn forward(items: &Receiver<StreamItem>, out: &Sender<Input<Work>>, shared: &Shared) {
    for item in items.iter() {
        let input = match item {
            StreamItem::Connected(info) => {
                shared.health.opencti_reachable();
                if let Some(id) = &info.last_event_id {
                    shared.saw_head(id);
                }
                if !shared.ready.swap(true, Ordering::SeqCst) {
                    shared.notifier.ready();
                }
                shared.notifier.status("connected to the OpenCTI stream");
                continue;
            }
            StreamItem::Event(ev) => {
                shared.saw_head(&ev.id);
                let key = super::handler::event_key(&ev);
                if key.is_none() {
                    shared.metrics.event(ev.kind.as_str(), "ignored");
                }
                Input::Event {
                    event_id: ev.id.clone(),
                    key,
                    also_keys: super::handler::also_keys(&ev),
                    payload: Work::Event(ev),
                }
            }
            StreamItem::Heartbeat { id } => {
                shared.saw_head(&id);
                Input::Heartbeat { event_id: id }
            }
            StreamItem::Ignored { id, event, reason } => {
                shared.metrics.event(&event, "ignored");
                log::debug!(
                    "event={} ignored ({event}): {reason}",
                    id.as_deref().unwrap_or("<no id>")
                );
                match id {
                    Some(id) => {
                        shared.saw_head(&id);
                        Input::Event {
                            event_id: id,
                            key: None,
                            also_keys: Vec::new(),
                            payload: Work::Ignored,
                        }
                    }
                    None => continue,
                }
            }
            StreamItem::Malformed(e) => match e.event_id.clone() {
                Some(id) => {
                    shared.saw_head(&id);
                    let work = Work::Malformed(e);
                    Input::Event {
                        event_id: id,
                        key: work.key(),
                        also_keys: Vec::new(),
                        payload: work,
                    }
                }
                None => {
                    log::warn!("{e}; it has no id, so it cannot be recorded");
                    continue;
                }
            },
            StreamItem::NoRecover { id } => {
                shared.no_recover.store(true, Ordering::SeqCst);
                match id {
                    Some(id) => Input::Heartbeat { event_id: id },
                    None => continue,
                }
            }
            StreamItem::Disconnected { reason, retry_in } => {
                shared.notifier.status(&format!(
                    "OpenCTI stream disconnected ({reason}); reconnecting in {}",
                    humantime::format_duration(Duration::from_secs(retry_in.as_secs()))
                ));
                continue;
            }
        };
        if out.send(input).is_err() {
            return;
        }
    }
}

/// Hands watermarks to the checkpoint writer (which writes the file at most once a second).
pub struct Sink<'a> {
    pub writer: &'a CheckpointWriter,
    pub shared: &'a Shared,
    /// The `recover_until` of this session's start position (kept until `no-recover`).
    pub recover_until: Option<String>,
}

impl CheckpointSink for Sink<'_> {
    fn save(&mut self, event_id: &str) {
        if self.shared.no_recover.load(Ordering::Relaxed) {
            self.recover_until = None;
        }
        self.writer.update(Checkpoint {
            start_from: event_id.to_owned(),
            recover_until: self.recover_until.clone(),
        });
        self.shared.metrics.set_checkpoint(event_id);
    }
}

/// Owner-thread tick: gauges, idle progress for the watchdog, `STATUS=`, a periodic log line.
pub struct Hooks<'a> {
    pub shared: &'a Shared,
    pub summary_every: Duration,
    pub last_summary: Instant,
    /// The HarfangLab client's counters (attempts, quick resends).
    pub client: Arc<ClientStats>,
    /// The HarfangLab client's limit on requests in flight (threads waiting for a permit).
    pub limiter: Arc<Limiter>,
    /// The OpenCTI API's resend counters.
    pub opencti: Arc<RetryActivity>,
    /// What the previous tick saw.
    pub seen: Activity,
}

/// Signs of life between two ticks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    pub watermark: Option<String>,
    /// HarfangLab HTTP exchanges finished (each attempt counts).
    pub requests: u64,
    /// Event retries the pipeline scheduled, plus HarfangLab and OpenCTI quick resends.
    pub retries: u64,
}

/// What the pipeline is doing right now (from its gauges and the clients').
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Busy {
    pub in_flight: u64,
    /// Workers running a handler.
    pub workers: u64,
    /// Events parked in the owner's timer heap until their retry.
    pub retry_waiting: u64,
    /// Threads inside a client's quick resend wait.
    pub resending: u64,
    /// Threads waiting for a HarfangLab permit (a free slot, or a `Retry-After` hold, which
    /// may last `max_hold`, a minute), plus one while a hold is under way.
    pub throttled: u64,
}

/// Whether a tick is progress for the systemd watchdog: nothing in flight (idle), the
/// watermark moved, a HarfangLab attempt, an event retry or a resend happened since `before`,
/// a thread is inside a resend wait or waits for a HarfangLab permit (throttled: a slot frees
/// within a request timeout, a hold ends within `max_hold`), or every unfinished event is parked for its retry with no
/// worker busy. During an outage the events wait in the owner's timer heap (this tick runs on
/// the owner thread, so it is alive) and retry every backoff: not a restart loop. A wedged
/// worker (busy, no attempts finishing, no retries) still stops the pings, even while other
/// events wait for their retries.
fn watchdog_progress(busy: Busy, before: &Activity, now: &Activity) -> bool {
    busy.in_flight == 0
        || now.watermark != before.watermark
        || now.requests != before.requests
        || now.retries != before.retries
        || busy.resending > 0
        || busy.throttled > 0
        || (busy.retry_waiting > 0 && busy.workers == 0)
}

impl PipelineHooks for Hooks<'_> {
    fn tick(&mut self, s: &StatsSnapshot) {
        let sh = self.shared;
        sh.metrics
            .set_queue_depth(usize::try_from(s.in_flight).unwrap_or(usize::MAX));
        sh.metrics
            .set_busy_workers(usize::try_from(s.busy_workers).unwrap_or(usize::MAX));
        let now = Activity {
            watermark: s.watermark.clone(),
            requests: self.client.total_requests(),
            retries: s.retries
                + self.client.retries()
                + self.opencti.retries.load(Ordering::Relaxed),
        };
        let busy = Busy {
            in_flight: s.in_flight,
            workers: s.busy_workers,
            retry_waiting: s.retry_waiting,
            resending: self.client.waiting_to_retry()
                + self.opencti.waiting.load(Ordering::Relaxed),
            throttled: self.limiter.waiting() as u64 + u64::from(self.limiter.is_held()),
        };
        if watchdog_progress(busy, &self.seen, &now) {
            sh.gate.progress();
        }
        self.seen = now;
        if s.in_flight == 0 {
            // Idle with nothing stuck is healthy.
            sh.health.progress();
        }
        let line = sh.status_line(s);
        sh.notifier.status(&line);
        if self.last_summary.elapsed() >= self.summary_every {
            self.last_summary = Instant::now();
            log::info!("status: {line}");
        }
    }
}

/// What the ping loop needs.
pub struct Pinger<'a> {
    pub api: &'a OpenCtiApi,
    pub client: &'a Client,
    pub writer: &'a CheckpointWriter,
    pub shared: &'a Shared,
    pub connector_id: String,
    pub version: Option<PlatformVersion>,
    pub interval: Duration,
    pub dry_run: bool,
}

impl Pinger<'_> {
    /// Ping every `interval` until `stop` fires (the first ping went out at startup, right after
    /// registration).
    pub fn run(&self, stop: &Shutdown) {
        while !stop.wait_timeout(self.interval) {
            self.probe_if_idle();
            if self.dry_run || self.shared.reset_pending.load(Ordering::SeqCst) {
                continue;
            }
            self.ping_once();
        }
    }

    /// HarfangLab health when no event proves it.
    fn probe_if_idle(&self) {
        if self.shared.stats.snapshot().in_flight > 0 {
            return;
        }
        match self.client.probe() {
            Ok(_) => self.shared.health.harfanglab_reachable(),
            Err(e) => log::warn!("HarfangLab health probe failed: {e}"),
        }
    }

    /// One ping with the latest checkpoint; a reset from the UI ends the current session.
    fn ping_once(&self) {
        let pinged = ping(self.api, &self.connector_id, self.writer, self.version);
        self.shared.metrics.opencti_ping(pinged != Pinged::Failed);
        match pinged {
            Pinged::Stored => self.shared.health.opencti_reachable(),
            Pinged::Reset => {
                self.shared.reset_pending.store(true, Ordering::SeqCst);
                self.shared.stop_session();
            }
            Pinged::Failed => {}
        }
    }
}

/// What a ping's answer means for the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pinged {
    /// The platform answered (our state stored, or another one it holds: logged).
    Stored,
    /// The state was reset from the OpenCTI UI: the caller restarts from the first-run position
    /// and must not push the old one again (§3.4).
    Reset,
    /// The ping failed (logged; the next ping tries again).
    Failed,
}

/// One ping with the writer's latest position: logs what the answer means and marks the
/// position acknowledged when the platform stored it. Used at startup and by the [`Pinger`].
pub fn ping(
    api: &OpenCtiApi,
    connector_id: &str,
    writer: &CheckpointWriter,
    version: Option<PlatformVersion>,
) -> Pinged {
    let current = writer.current().map(|l| l.checkpoint);
    match api.ping_connector(connector_id, current.as_ref(), version) {
        Ok(PingOutcome::Stored) => {
            if current.is_some() {
                writer.mark_acked();
            }
            Pinged::Stored
        }
        Ok(PingOutcome::Diverged(state)) => {
            log::warn!(
                "OpenCTI holds another state for connector {connector_id} ({state}); is another \
                 instance running with the same CONNECTOR_ID? Keeping ours"
            );
            Pinged::Stored
        }
        Ok(PingOutcome::Reset) => {
            log::warn!(
                "the connector state was reset from the OpenCTI UI: restarting the stream from \
                 the first-run position (the old position is dropped)"
            );
            Pinged::Reset
        }
        Err(e) => {
            log::warn!("ping to OpenCTI failed (retried at the next ping): {e}");
            Pinged::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::DEFAULT_HEALTH_WINDOW;
    use crate::opencti::events::{self, ConnectedInfo, Decoded, EventError};
    use crate::opencti::sse::Frame;
    use crate::state::{CheckpointStore, LocalCheckpoint};
    use serde_json::json;

    fn shared() -> Shared {
        Shared::new(
            Metrics::new(),
            Health::new(DEFAULT_HEALTH_WINDOW),
            Notifier::disabled(),
            WatchdogGate::new(Notifier::disabled(), Duration::from_secs(60)),
            PipelineStats::new(),
        )
    }

    #[test]
    fn watchdog_progress_tells_an_outage_from_a_wedged_worker() {
        let before = Activity {
            watermark: Some("1-0".into()),
            requests: 10,
            retries: 2,
        };
        let same = before.clone();
        let working = Busy {
            in_flight: 3,
            workers: 3,
            ..Busy::default()
        };
        // Busy and nothing moved, nobody waiting: wedged, no progress.
        assert!(!watchdog_progress(working, &before, &same));
        // Idle is healthy.
        assert!(watchdog_progress(Busy::default(), &before, &same));
        // Watermark moved.
        let moved = Activity {
            watermark: Some("2-0".into()),
            ..same.clone()
        };
        assert!(watchdog_progress(working, &before, &moved));
        // An attempt finished (e.g. a 10 s connect timeout) or a retry was scheduled.
        let attempt = Activity {
            requests: 11,
            ..same.clone()
        };
        assert!(watchdog_progress(working, &before, &attempt));
        let retry = Activity {
            retries: 3,
            ..same.clone()
        };
        assert!(watchdog_progress(working, &before, &retry));
        // Inside a client's quick resend wait.
        let resending = Busy {
            resending: 1,
            ..working
        };
        assert!(watchdog_progress(resending, &before, &same));
        // Waiting for a HarfangLab permit: a Retry-After hold can outlast a watchdog period
        // with no attempt finishing.
        let throttled = Busy {
            throttled: 2,
            ..working
        };
        assert!(watchdog_progress(throttled, &before, &same));
        // An outage: every event parked in the owner's timer heap (429 Retry-After 120 s),
        // no worker busy: alive.
        let parked = Busy {
            in_flight: 3,
            workers: 0,
            retry_waiting: 3,
            ..Busy::default()
        };
        assert!(watchdog_progress(parked, &before, &same));
        // A worker wedged while others wait for their retries: not progress.
        let wedged = Busy {
            in_flight: 3,
            workers: 1,
            retry_waiting: 2,
            ..Busy::default()
        };
        assert!(!watchdog_progress(wedged, &before, &same));
    }

    fn event(id: &str, data: serde_json::Value) -> StreamItem {
        let frame = Frame {
            id: Some(id.into()),
            event: "create".into(),
            data: json!({"version": "4", "type": "create", "data": data}).to_string(),
            retry: None,
        };
        match events::decode(&frame) {
            Ok(Decoded::Event(ev)) => StreamItem::Event(ev),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn forward_maps_items_to_inputs_in_order() {
        let ext = events::OCTI_EXT;
        let items = vec![
            StreamItem::Connected(ConnectedInfo::default()),
            event(
                "5-0",
                json!({"id": "indicator--a", "type": "indicator", "name": "a",
                    "pattern": "[ipv4-addr:value = '1.1.1.1']", "pattern_type": "stix",
                    "extensions": {ext: {"id": "int-a"}}}),
            ),
            event(
                "5-1",
                json!({"id": "relationship--r", "type": "relationship",
                    "relationship_type": "based-on", "source_ref": "indicator--a",
                    "target_ref": "ipv4-addr--x",
                    "extensions": {ext: {"source_ref": "int-a", "target_type": "IPv4-Addr",
                        "target_value": "1.1.1.1"}}}),
            ),
            event(
                "6-0",
                json!({"id": "malware--m", "type": "malware", "name": "m"}),
            ),
            StreamItem::Ignored {
                id: Some("6-1".into()),
                event: "relocate".into(),
                reason: "event relocate".into(),
            },
            StreamItem::Ignored {
                id: None,
                event: "x".into(),
                reason: "no id".into(),
            },
            StreamItem::Malformed(EventError {
                event_id: Some("7-0".into()),
                event: "create".into(),
                reason: "bad".into(),
            }),
            StreamItem::Heartbeat { id: "9-0".into() },
            StreamItem::NoRecover { id: None },
        ];
        let (tx, rx) = crossbeam_channel::unbounded();
        for i in items {
            tx.send(i).unwrap();
        }
        drop(tx);
        let (out_tx, out_rx) = crossbeam_channel::unbounded();
        let sh = shared();
        forward(&rx, &out_tx, &sh);
        drop(out_tx);
        let got: Vec<(String, Option<String>)> = out_rx
            .iter()
            .map(|i| match i {
                Input::Event { event_id, key, .. } => (event_id, key),
                Input::Heartbeat { event_id } => (format!("hb {event_id}"), None),
            })
            .collect();
        let s = |x: &str| Some(x.to_owned());
        assert_eq!(
            got,
            vec![
                ("5-0".into(), s("int-a")),
                // A based-on relationship is keyed by its source indicator.
                ("5-1".into(), s("int-a")),
                ("6-0".into(), None),
                ("6-1".into(), None),
                ("7-0".into(), s("malformed:7-0")),
                ("hb 9-0".into(), None),
            ]
        );
        assert!(sh.ready.load(Ordering::SeqCst));
        assert!(sh.no_recover.load(Ordering::SeqCst));
        assert_eq!(sh.head_ms.load(Ordering::SeqCst), 9);
        assert_eq!(sh.lag(Some("6-1")), Some(Duration::from_millis(3)));
    }

    #[test]
    fn sink_drops_recover_until_after_no_recover() {
        let dir = std::env::temp_dir().join(format!("hli-sink-{}", uuid::Uuid::new_v4()));
        let store = CheckpointStore::new(&dir, "c");
        let initial = LocalCheckpoint {
            checkpoint: Checkpoint {
                start_from: "0-0".into(),
                recover_until: Some("2024-06-15T00:00:00Z".into()),
            },
            platform_acked: false,
        };
        let writer = CheckpointWriter::spawn(store, initial, Duration::from_millis(1)).unwrap();
        let sh = shared();
        let mut sink = Sink {
            writer: &writer,
            shared: &sh,
            recover_until: Some("2024-06-15T00:00:00Z".into()),
        };
        sink.save("5-0");
        let cp = writer.current().unwrap().checkpoint;
        assert_eq!(cp.start_from, "5-0");
        assert!(cp.recover_until.is_some());
        sh.no_recover.store(true, Ordering::SeqCst);
        sink.save("6-0");
        let cp = writer.current().unwrap().checkpoint;
        assert_eq!((cp.start_from.as_str(), cp.recover_until), ("6-0", None));
        drop(writer);
        let _ = std::fs::remove_dir_all(dir);
    }
}
