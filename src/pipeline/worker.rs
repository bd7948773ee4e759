//! Worker threads: take one ready job at a time from the shared job channel, call the handler,
//! and report the result to the owner thread. Workers hold no pipeline state and never wait: the
//! owner decides what a result means for ordering, retries and the checkpoint.
//!
//! A [`PanicGuard`] on each worker's stack triggers shutdown and tells the owner when the handler
//! panics, so a crashing worker never wedges the process (ripgrep `ignore`'s `Drop for Worker`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};

use super::budget::Attempts;
use super::checkpoint::Seq;
use super::handler::{EventHandler, Outcome};
use super::shutdown::Shutdown;
use crate::retry::FailureKind;

/// One event ready to run (the owner guarantees no other job with the same key is running).
#[derive(Debug)]
pub(crate) struct Job<T> {
    pub seq: Seq,
    pub event_id: Arc<str>,
    pub key: Arc<str>,
    pub payload: T,
    /// Its failed attempts so far.
    pub attempts: Attempts,
    /// Events of the same key coalesced behind it (`batch.rs`), in stream order; usually empty.
    pub followers: Vec<Job<T>>,
}

/// What a worker tells the owner.
#[derive(Debug)]
pub(crate) enum Report<T> {
    /// A final result.
    Done {
        seq: Seq,
        event_id: Arc<str>,
        key: Arc<str>,
        outcome: Final,
    },
    /// `Failed`: the job comes back; the owner retries it later or dead-letters it.
    Failed {
        job: Job<T>,
        reason: String,
        kind: FailureKind,
    },
    /// A batch ran (`batch.rs`): its events, head first, and the handler's outcomes.
    Batch {
        jobs: Vec<Job<T>>,
        outcomes: Vec<Outcome>,
    },
    /// The worker is unwinding from a panic while running `seq` (if any).
    Lost {
        worker: String,
        running: Option<(Seq, Arc<str>)>,
    },
}

impl<T> Report<T> {
    fn done(job: Job<T>, outcome: Final) -> Self {
        Report::Done {
            seq: job.seq,
            event_id: job.event_id,
            key: job.key,
            outcome,
        }
    }
}

/// The outcomes that end an event's run (a failure is a [`Report::Failed`]).
#[derive(Debug)]
pub(crate) enum Final {
    Applied(String),
    Skipped(String),
    Fatal(String),
}

/// Everything a worker borrows from `pipeline::run`'s scope.
pub(crate) struct WorkerContext<'a, H> {
    pub handler: &'a H,
    pub shutdown: &'a Shutdown,
    /// Set by the owner at the end of the drain: drop remaining jobs unrun.
    pub abandon: &'a AtomicBool,
}

struct PanicGuard<'a, T> {
    name: &'a str,
    running: Option<(Seq, Arc<str>)>,
    reports: &'a Sender<Report<T>>,
    shutdown: &'a Shutdown,
}

impl<T> Drop for PanicGuard<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            log::error!("worker {} panicked; stopping the pipeline", self.name);
            self.shutdown.trigger();
            // The owner may be gone already; nothing else to do then.
            let _ = self.reports.send(Report::Lost {
                worker: self.name.to_owned(),
                running: self.running.take(),
            });
        }
    }
}

/// The worker loop: runs until the job channel is closed (the owner finished).
pub(crate) fn work<T, H: EventHandler<T>>(
    name: &str,
    ctx: &WorkerContext<'_, H>,
    jobs: &Receiver<Job<T>>,
    reports: &Sender<Report<T>>,
) {
    let mut guard = PanicGuard {
        name,
        running: None,
        reports,
        shutdown: ctx.shutdown,
    };
    for job in jobs.iter() {
        if ctx.abandon.load(Ordering::Acquire) {
            // Past the shutdown deadline: unrun jobs are not checkpointed and will be replayed.
            continue;
        }
        guard.running = Some((job.seq, job.key.clone()));
        if !job.followers.is_empty() {
            let report = super::batch::run(ctx.handler, job);
            guard.running = None;
            if reports.send(report).is_err() {
                break;
            }
            continue;
        }
        let outcome = ctx.handler.handle(&job.event_id, &job.key, &job.payload);
        let report = match outcome {
            Outcome::Applied(summary) => Report::done(job, Final::Applied(summary)),
            Outcome::Skipped(reason) => Report::done(job, Final::Skipped(reason)),
            Outcome::Fatal(reason) => Report::done(job, Final::Fatal(reason)),
            Outcome::Failed { reason, kind } => Report::Failed { job, reason, kind },
        };
        guard.running = None;
        if reports.send(report).is_err() {
            break;
        }
    }
}
