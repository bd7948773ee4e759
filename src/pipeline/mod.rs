//! The pipeline core: stream items in, per-key ordered parallel work, exact checkpoints out.
//!
//! ```text
//! reader thread ──Input<T> (bounded, caller's)──▶ owner thread (this module's `run`)
//!                                                   │ per-key lines (dispatch), retry timers,
//!                                                   │ checkpoint tracker, dead letters, stats
//!                       ┌──── Job (ready keys) ─────┘
//!                       ▼                                 ▲
//!                 worker × N ── EventHandler::handle ── Report (completions)
//! ```
//!
//! Coalescing: events of one key waiting behind each other may run as one batch
//! (`EventHandler::handle_batch`, rules in `batch.rs`); each still has its own outcome.
//!
//! The owner is the single thread that reads the source, decides what runs, and owns every piece
//! of mutable state (no locks shared by workers). Generic over the payload `T` and the handler, so
//! it knows nothing about OpenCTI or HarfangLab; the real wiring lives in the caller.
//!
//! Retries: a failed event goes back to the owner, which dead-letters it (`Permanent`, or its
//! attempt budget spent, see `budget.rs`) or keeps it in its timer heap until its backoff is over
//! (`crate::retry::RetryPolicy`, at least the server's `Retry-After`, at most `retry.cap`). A
//! waiting event holds no worker, other keys keep flowing, and the wait ends at once on shutdown.
//! This is the only long wait an event ever makes; the HTTP clients below resend at most a
//! dropped connection (`RetryPolicy::quick`). Rules and numbers: README "Failures and retries".
//!
//! Shutdown: `Shutdown::trigger` → the owner stops reading the source → buffered events drain
//! until `shutdown_deadline` → the rest is abandoned (not checkpointed) → workers join → final
//! checkpoint save. When the source closes (reader gone), everything drains, retries included.

mod batch;
mod budget;
mod checkpoint;
mod dead_letter;
mod dispatch;
mod error;
mod handler;
mod owner;
mod pool;
mod shutdown;
mod stats;
mod synthetic;
mod worker;

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::concurrency::Limiter;
use crate::retry::RetryPolicy;

pub use checkpoint::CheckpointSink;
pub use dead_letter::{DeadLetterError, DeadLetterLog};
pub use error::PipelineError;
pub use handler::{BatchItem, EventHandler, Input, Outcome, PayloadInfo};
pub use shutdown::Shutdown;
pub use stats::{PipelineStats, StatsSnapshot};
pub use synthetic::Side;

/// Tuning of the pipeline core. `Default` gives production values.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Worker threads (each runs one event at a time). At least 1. With `worker_limit`, the
    /// number the pool starts with.
    pub workers: usize,
    /// `auto`: the pool grows, while jobs wait for a worker, to what this limit on requests in
    /// flight can use, and past it while the limit has room (`pool.rs`, at most 256 threads).
    /// `None`: exactly `workers`.
    pub worker_limit: Option<Arc<Limiter>>,
    /// Events in flight per worker: the owner stops reading the source once
    /// `workers * queue_per_worker` events are read and unfinished (backpressure onto the reader).
    pub queue_per_worker: usize,
    /// After a shutdown is triggered, how long in-flight events may still finish.
    pub shutdown_deadline: Duration,
    /// Period of the one-line `info!` summary.
    pub summary_every: Duration,
    /// Minimum time between two checkpoint saves while the watermark moves.
    pub save_every: Duration,
    /// Period of [`PipelineHooks::tick`] (e.g. OpenCTI connector ping).
    pub tick_every: Duration,
    /// Retries of failed events: `max_retries` is the budget of counted failures
    /// (`HARFANGLAB_INTEL_MAX_RETRIES`), `cap` the longest wait (`HARFANGLAB_INTEL_RETRY_BACKOFF_MAX`).
    pub retry: RetryPolicy,
    /// Most events of one key run as one batch (`batch.rs`) when they wait behind each other
    /// and the handler says they may (`EventHandler::coalescable`); 1 turns coalescing off
    /// (`HARFANGLAB_INTEL_COALESCE_MAX`).
    pub coalesce_max: usize,
    /// Where live counters are published (clone it before `run` to read them elsewhere).
    /// Counters accumulate across runs that share one handle.
    pub stats: PipelineStats,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            workers: 4,
            worker_limit: None,
            queue_per_worker: 64,
            shutdown_deadline: Duration::from_secs(30),
            summary_every: Duration::from_secs(60),
            save_every: Duration::from_secs(1),
            tick_every: Duration::from_secs(40),
            retry: RetryPolicy::default(),
            coalesce_max: 64,
            stats: PipelineStats::default(),
        }
    }
}

impl PipelineOptions {
    /// The cap on events read and not finished.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight_with(self.workers)
    }

    /// The cap on events read and not finished while `workers` threads run (a growing pool).
    pub fn max_in_flight_with(&self, workers: usize) -> usize {
        workers.max(1).saturating_mul(self.queue_per_worker.max(1))
    }
}

/// Periodic work run on the owner thread between completions (keep it short: completions wait).
pub trait PipelineHooks {
    /// Called every `tick_every` (first call one period after start).
    fn tick(&mut self, _stats: &StatsSnapshot) {}
}

/// No periodic work.
impl PipelineHooks for () {}

/// Why `run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The source channel closed and everything drained.
    SourceClosed,
    /// `Shutdown` was triggered (by a signal, a fatal result or a panic).
    Shutdown,
}

/// What a run did, returned on success (and logged on every exit).
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSummary {
    pub reason: StopReason,
    /// Final counters; `abandoned` counts events read but never finished.
    pub stats: StatsSnapshot,
    /// The last watermark handed to the sink.
    pub watermark: Option<String>,
    pub elapsed: Duration,
}

/// Run the pipeline until the source closes (drain everything) or `shutdown` fires (drain until
/// the deadline). Workers are scoped threads named `hli-worker-N` borrowing `handler`; the
/// calling thread is the owner. The sink gets the watermark about once per `save_every` and once
/// at the end (after dead letters are synced).
///
/// Errors: a `Fatal` outcome, a dead-letter write failure or a worker panic (each also triggers
/// `shutdown`, so the reader stops too). The final checkpoint is saved in every case.
pub fn run<T, H, S, K>(
    source: Receiver<Input<T>>,
    handler: &H,
    sink: &mut S,
    hooks: &mut K,
    opts: &PipelineOptions,
    shutdown: &Shutdown,
    dead_letters: DeadLetterLog,
) -> Result<PipelineSummary, PipelineError>
where
    T: Send,
    H: EventHandler<T>,
    S: CheckpointSink,
    K: PipelineHooks,
{
    // Closed at once: no synthetic work.
    let (none, side) = crossbeam_channel::bounded(0);
    drop(none);
    run_with_side(
        source,
        side,
        handler,
        sink,
        hooks,
        opts,
        shutdown,
        dead_letters,
    )
}

/// [`run`] with a channel of synthetic jobs (`synthetic.rs`: reconciliation repairs ordered with
/// the stream events of their key, never checkpointed). The run ends as [`run`] does, with the
/// source: a producer of synthetic work keeps the source open until its jobs have finished.
#[allow(clippy::too_many_arguments)]
pub fn run_with_side<T, H, S, K>(
    source: Receiver<Input<T>>,
    side: Receiver<Side<T>>,
    handler: &H,
    sink: &mut S,
    hooks: &mut K,
    opts: &PipelineOptions,
    shutdown: &Shutdown,
    dead_letters: DeadLetterLog,
) -> Result<PipelineSummary, PipelineError>
where
    T: Send,
    H: EventHandler<T>,
    S: CheckpointSink,
    K: PipelineHooks,
{
    let workers = opts.workers.max(1);
    // Unbounded on purpose: the owner never has more than `max_in_flight` jobs out, so these
    // channels are bounded by construction, and the owner must never block on a send (a worker
    // blocked on its report while the owner blocks on a job would deadlock).
    let (job_tx, job_rx) = crossbeam_channel::unbounded();
    let (report_tx, report_rx) = crossbeam_channel::unbounded();
    let abandon = AtomicBool::new(false);
    // Worker threads not ended (`pool::Alive`).
    let live = pool::Live::new();
    let ctx = worker::WorkerContext {
        handler,
        shutdown,
        abandon: &abandon,
    };

    std::thread::scope(|scope| {
        let handles = RefCell::new(Vec::with_capacity(workers));
        let spawn = |i: usize, jobs: Receiver<_>, reports: crossbeam_channel::Sender<_>| {
            let name = format!("hli-worker-{i}");
            let ctx = &ctx;
            let thread_name = name.clone();
            let alive = pool::Alive::new(&live);
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn_scoped(scope, move || {
                    let _alive = alive;
                    worker::work(&thread_name, ctx, &jobs, &reports)
                })?;
            handles.borrow_mut().push((name, handle));
            std::io::Result::Ok(())
        };
        let mut spawn_error = None;
        for i in 0..workers {
            if let Err(e) = spawn(i, job_rx.clone(), report_tx.clone()) {
                spawn_error = Some(e);
                break;
            }
        }
        // A growing pool keeps ends to hand to the workers it adds (until the owner is done);
        // a fixed one does not, so its workers see "disconnected" when the owner is done. Either
        // way the owner sees every worker gone by the live count (`pool::Alive`).
        let pool = match (&opts.worker_limit, &spawn_error) {
            (Some(limit), None) => {
                let (jobs, reports) = (job_rx.clone(), report_tx.clone());
                let spawn = &spawn;
                pool::Pool::growing(
                    workers,
                    &live,
                    Arc::clone(limit),
                    Box::new(move |i| spawn(i, jobs.clone(), reports.clone())),
                )
            }
            _ => pool::Pool::fixed(workers, &live),
        };
        drop(job_rx);
        drop(report_tx);
        if let Some(e) = spawn_error {
            drop(job_tx);
            for (_, handle) in handles.take() {
                let _ = handle.join();
            }
            return Err(PipelineError::Spawn(e));
        }

        let owner = owner::Owner::new(
            opts,
            handler,
            sink,
            hooks,
            shutdown,
            dead_letters,
            job_tx,
            &abandon,
            side,
            pool,
        );
        let (summary, mut error) = owner.run(source, report_rx);

        let panicked: Vec<String> = handles
            .take()
            .into_iter()
            .filter_map(|(name, handle)| handle.join().is_err().then_some(name))
            .collect();
        if !panicked.is_empty() && error.is_none() {
            error = Some(PipelineError::WorkerPanicked { workers: panicked });
        }
        match error {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    })
}
