//! The service's side of reconciliation: the pipeline side channel as a [`JobSink`], the pass
//! schedule thread of a stream session, and the startup build of the inventory.

use super::handler::Work;
use crate::config::Config;
use crate::harfanglab::Client;
use crate::harfanglab::model::SourceLists;
use crate::metrics::Metrics;
use crate::pipeline::{PipelineStats, Side};
use crate::reconcile::{JobSink, PassDeps, PassOptions, ReconcileJob, actual, schedule};
use crate::sync::inventory::Inventory;
use crossbeam_channel::{Receiver, Sender};
use std::time::Duration;

/// The pipeline's side channel, ending when `stop` fires.
pub struct SideSink {
    pub tx: Sender<Side<Work>>,
    pub stop: Receiver<()>,
}

impl SideSink {
    fn send(&self, msg: Side<Work>) -> bool {
        crossbeam_channel::select! {
            send(self.tx, msg) -> r => r.is_ok(),
            recv(self.stop) -> _ => false,
        }
    }
}

impl JobSink for SideSink {
    fn watch(&self) -> bool {
        let (ack, acked) = crossbeam_channel::bounded(1);
        if !self.send(Side::Watch { ack }) {
            return false;
        }
        crossbeam_channel::select! {
            recv(acked) -> r => r.is_ok(),
            recv(self.stop) -> _ => false,
        }
    }

    fn submit(&self, key: String, job: ReconcileJob) -> bool {
        self.send(Side::Job {
            key,
            payload: Work::Reconcile(Box::new(job)),
        })
    }

    fn unwatch(&self) {
        // Blocking (but ending on stop): a lost Unwatch would keep the owner remembering keys.
        let _ = self.send(Side::Unwatch);
    }
}

/// The options of a pass in `run` (counts only; dry-run follows `HARFANGLAB_INTEL_DRY_RUN`).
pub fn pass_options(config: &Config) -> PassOptions {
    PassOptions {
        dry_run: config.harfanglab.dry_run,
        force: false,
        max_delete_ratio: config.reconcile.max_delete_ratio,
        enforce_enabled: config.reconcile.enforce_enabled,
        keep_records: false,
        replay_stall: (config.connector.stream_idle_timeout * 4).max(Duration::from_secs(60)),
    }
}

/// What the schedule thread of one session needs.
pub struct Schedule<'a> {
    pub config: &'a Config,
    pub client: &'a Client,
    pub lists: &'a SourceLists,
    pub inventory: &'a Inventory,
    pub metrics: &'a Metrics,
    pub stats: &'a PipelineStats,
}

impl Schedule<'_> {
    /// Passes until `sink.stop` (the session's end); nothing when the interval is `0`.
    pub fn run(&self, sink: SideSink) {
        let Some(interval) = self.config.reconcile.interval else {
            return;
        };
        let stream = self.config.stream_options();
        let deps = PassDeps {
            client: self.client,
            lists: self.lists,
            stream: &stream,
            inventory: Some(self.inventory),
            jobs: &sink,
            stop: &sink.stop,
            metrics: Some(self.metrics),
        };
        schedule::run_schedule(&deps, &pass_options(self.config), interval, self.stats);
    }
}

/// Startup: list our lists into the inventory so the first catch-up already creates with one
/// request. On failure the inventory stays unbuilt (every object looked up first, as before)
/// until a reconciliation pass lists the lists.
pub fn build_inventory(client: &Client, lists: &SourceLists, inventory: &Inventory) {
    let started = std::time::Instant::now();
    match actual::build_inventory(client, lists, inventory) {
        Ok(n) => log::info!(
            "inventory: {n} objects of our lists known in {} ms ({} fingerprints, ~{} KiB)",
            started.elapsed().as_millis(),
            inventory.len(),
            inventory.table_bytes() / 1024
        ),
        Err(e) => log::warn!(
            "inventory: listing our lists failed ({e}); new objects are looked up before they are created until a reconciliation pass lists them"
        ),
    }
}
