//! Coalescing: several events of one key that wait behind each other run as one job, so a
//! handler that reads the current state anyway (the service re-reads the indicator from OpenCTI)
//! reads it once and applies it once for a whole burst of updates, while every event still gets
//! its own outcome (stats, dead letters, the checkpoint).
//!
//! Where batches form: when the owner dispatches an event that is first in its key's line
//! (`dispatch.rs`, [`KeyQueues::coalesce`](super::dispatch::KeyQueues::coalesce)), the events
//! waiting right behind it on that key join it while each is
//! [`coalescable`](super::EventHandler::coalescable), has that key only, and is a stream event
//! (a synthetic job is never batched, and ends a run), up to `PipelineOptions::coalesce_max`.
//! The joined events stay in the line (as running), so nothing else of the key can overtake.
//!
//! How outcomes come back ([`split`]): in order, the events with a final outcome (applied,
//! skipped, dead-lettered) finish one by one; the first non-final outcome (a retryable failure,
//! a fatal one) is that event's, handled as a lone event's would be (retry timer with its own
//! attempt budget, dead letter, stop); every event after it, or without an outcome, goes back
//! to waiting in its line and runs after it. A retried event is coalesced again with what waits
//! behind it when its timer fires. So no event is lost or finished twice, and the order per key
//! holds across batches.

use super::handler::{BatchItem, EventHandler, Outcome};
use super::worker::{Job, Report};

/// Run a batch on a worker: `head.followers` are the events after it.
pub(crate) fn run<T, H: EventHandler<T>>(handler: &H, mut head: Job<T>) -> Report<T> {
    let followers = std::mem::take(&mut head.followers);
    let mut jobs = Vec::with_capacity(followers.len() + 1);
    jobs.push(head);
    jobs.extend(followers);
    let items: Vec<BatchItem<'_, T>> = jobs
        .iter()
        .map(|j| BatchItem {
            event_id: &j.event_id,
            payload: &j.payload,
        })
        .collect();
    let outcomes = handler.handle_batch(&jobs[0].key, &items);
    drop(items);
    Report::Batch { jobs, outcomes }
}

/// A batch's events sorted by what happens next.
pub(crate) struct Split<T> {
    /// Finished events with their (final) outcome, in order.
    pub done: Vec<(Job<T>, Outcome)>,
    /// The event whose outcome ended the batch early (retry, fatal), if any.
    pub stopped: Option<(Job<T>, Outcome)>,
    /// Events not run: they wait in their line again.
    pub unrun: Vec<Job<T>>,
}

/// Pair a batch's events with the handler's outcomes (see the module doc).
pub(crate) fn split<T>(jobs: Vec<Job<T>>, outcomes: Vec<Outcome>) -> Split<T> {
    let mut split = Split {
        done: Vec::with_capacity(jobs.len()),
        stopped: None,
        unrun: Vec::new(),
    };
    let mut outcomes = outcomes.into_iter();
    let mut jobs = jobs.into_iter();
    let mut first = true;
    for job in jobs.by_ref() {
        let outcome = match outcomes.next() {
            Some(o) => o,
            // Nothing at all for the batch: the first event failed (keeps the key moving, and
            // the attempt budget ends a handler that keeps doing it).
            None if first => Outcome::retry("the handler returned no outcome for the batch"),
            None => {
                split.unrun.push(job);
                break;
            }
        };
        first = false;
        if outcome.is_final() {
            split.done.push((job, outcome));
        } else {
            split.stopped = Some((job, outcome));
            break;
        }
    }
    split.unrun.extend(jobs);
    split
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn job(seq: u64) -> Job<()> {
        Job {
            seq,
            event_id: Arc::from(format!("{seq}-0")),
            key: Arc::from("k"),
            payload: (),
            attempts: Default::default(),
            followers: Vec::new(),
        }
    }

    fn seqs(jobs: &[Job<()>]) -> Vec<u64> {
        jobs.iter().map(|j| j.seq).collect()
    }

    #[test]
    fn every_event_gets_the_shared_outcome() {
        let s = split(
            (0..3).map(job).collect(),
            vec![Outcome::Applied("x".into()); 3],
        );
        assert_eq!(s.done.len(), 3);
        assert!(s.stopped.is_none() && s.unrun.is_empty());
    }

    #[test]
    fn a_retryable_failure_stops_the_batch_and_the_rest_waits() {
        let s = split(
            (0..4).map(job).collect(),
            vec![
                Outcome::Applied("a".into()),
                Outcome::permanent("bad"),
                Outcome::retry("later"),
                // Ignored: after a non-final outcome.
                Outcome::Applied("b".into()),
            ],
        );
        let done: Vec<u64> = s.done.iter().map(|(j, _)| j.seq).collect();
        assert_eq!(done, [0, 1], "a permanent failure is final (dead letter)");
        assert_eq!(s.stopped.as_ref().map(|(j, _)| j.seq), Some(2));
        assert_eq!(seqs(&s.unrun), [3]);
    }

    #[test]
    fn missing_outcomes_leave_the_rest_unrun_and_none_at_all_is_a_failure() {
        let s = split(
            (0..3).map(job).collect(),
            vec![Outcome::Skipped("s".into())],
        );
        assert_eq!(s.done.len(), 1);
        assert!(s.stopped.is_none());
        assert_eq!(seqs(&s.unrun), [1, 2]);

        let s = split((0..2).map(job).collect(), Vec::new());
        assert!(s.done.is_empty());
        let (j, o) = s.stopped.expect("the first event failed");
        assert_eq!(j.seq, 0);
        assert!(!o.is_final(), "{o:?}");
        assert_eq!(seqs(&s.unrun), [1]);
    }

    #[test]
    fn fatal_stops_the_batch() {
        let s = split(
            (0..2).map(job).collect(),
            vec![Outcome::Fatal("auth".into()), Outcome::Applied("x".into())],
        );
        assert!(s.done.is_empty());
        assert!(matches!(s.stopped, Some((_, Outcome::Fatal(_)))));
        assert_eq!(seqs(&s.unrun), [1]);
    }
}
