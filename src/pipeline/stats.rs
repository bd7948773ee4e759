//! `PipelineStats`: live counters of the pipeline core, for the metrics endpoint and the periodic
//! summary log line.
//!
//! Written only by the pipeline owner thread (from completions), read by anyone through a cheap
//! clone and [`PipelineStats::snapshot`]. Relaxed atomics: each counter is exact, a snapshot is
//! not a consistent cut across counters (fine for metrics).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

/// A shared handle on the counters; clones see the same values.
#[derive(Debug, Clone, Default)]
pub struct PipelineStats {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    received: AtomicU64,
    ignored: AtomicU64,
    heartbeats: AtomicU64,
    applied: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    abandoned: AtomicU64,
    in_flight: AtomicU64,
    busy_workers: AtomicU64,
    source_backlog: AtomicU64,
    retry_waiting: AtomicU64,
    watermark: Mutex<Option<String>>,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Events read from the source (heartbeats excluded).
    pub received: u64,
    /// Events without a key (nothing to do).
    pub ignored: u64,
    pub heartbeats: u64,
    pub applied: u64,
    pub skipped: u64,
    /// Dead-lettered (permanent failure or retries exhausted).
    pub failed: u64,
    /// Retries scheduled (a failed event put back to wait in the owner's timer heap).
    pub retries: u64,
    /// Events given up at shutdown (not checkpointed; replayed after a restart).
    pub abandoned: u64,
    /// Events read and not finished (queued per key, running, or waiting for a retry).
    pub in_flight: u64,
    /// Events waiting for their retry in the owner's timer heap (holding no worker).
    pub retry_waiting: u64,
    /// Events handed to a worker and not reported back, capped at the worker count: the
    /// workers running a handler now (a job can sit briefly in the hand-off channel).
    pub busy_workers: u64,
    /// Items waiting in the source channel (the reader's side of the backpressure).
    pub source_backlog: u64,
    /// Last watermark handed to the checkpoint sink.
    pub watermark: Option<String>,
}

/// The gauges the owner publishes at each turn of its loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Gauges {
    pub in_flight: usize,
    pub source_backlog: usize,
    pub busy_workers: usize,
    pub retry_waiting: usize,
}

/// Which counter to bump (keeps the owner's code free of field plumbing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    Received,
    Ignored,
    Heartbeat,
    Applied,
    Skipped,
    Failed,
    Retry,
    Abandoned,
}

impl PipelineStats {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let i = &self.inner;
        StatsSnapshot {
            received: i.received.load(Relaxed),
            ignored: i.ignored.load(Relaxed),
            heartbeats: i.heartbeats.load(Relaxed),
            applied: i.applied.load(Relaxed),
            skipped: i.skipped.load(Relaxed),
            failed: i.failed.load(Relaxed),
            retries: i.retries.load(Relaxed),
            abandoned: i.abandoned.load(Relaxed),
            in_flight: i.in_flight.load(Relaxed),
            retry_waiting: i.retry_waiting.load(Relaxed),
            busy_workers: i.busy_workers.load(Relaxed),
            source_backlog: i.source_backlog.load(Relaxed),
            watermark: i
                .watermark
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    pub(crate) fn add(&self, counter: Counter, n: u64) {
        let i = &self.inner;
        let c = match counter {
            Counter::Received => &i.received,
            Counter::Ignored => &i.ignored,
            Counter::Heartbeat => &i.heartbeats,
            Counter::Applied => &i.applied,
            Counter::Skipped => &i.skipped,
            Counter::Failed => &i.failed,
            Counter::Retry => &i.retries,
            Counter::Abandoned => &i.abandoned,
        };
        c.fetch_add(n, Relaxed);
    }

    pub(crate) fn set_gauges(&self, gauges: Gauges) {
        let Gauges {
            in_flight,
            source_backlog,
            busy_workers,
            retry_waiting,
        } = gauges;
        self.inner.in_flight.store(in_flight as u64, Relaxed);
        self.inner
            .retry_waiting
            .store(retry_waiting as u64, Relaxed);
        self.inner.busy_workers.store(busy_workers as u64, Relaxed);
        self.inner
            .source_backlog
            .store(source_backlog as u64, Relaxed);
    }

    pub(crate) fn set_watermark(&self, id: &str) {
        let mut w = self
            .inner
            .watermark
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match w.as_mut() {
            Some(s) => {
                s.clear();
                s.push_str(id);
            }
            None => *w = Some(id.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_counters() {
        let a = PipelineStats::new();
        let b = a.clone();
        a.add(Counter::Applied, 2);
        a.add(Counter::Failed, 1);
        a.set_gauges(Gauges {
            in_flight: 5,
            source_backlog: 7,
            busy_workers: 3,
            retry_waiting: 2,
        });
        a.set_watermark("3-0");
        let s = b.snapshot();
        assert_eq!(
            (
                s.applied,
                s.failed,
                s.in_flight,
                s.source_backlog,
                s.busy_workers,
                s.retry_waiting
            ),
            (2, 1, 5, 7, 3, 2)
        );
        assert_eq!(s.watermark.as_deref(), Some("3-0"));
    }
}
