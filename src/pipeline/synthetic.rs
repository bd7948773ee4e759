//! Synthetic jobs: work that is not a stream event (reconciliation repairs), run by the same
//! workers in the same per-key lines as the stream events of its key, and never checkpointed.
//!
//! How they enter the owner: on a second channel ([`Side`]) next to the stream source, read only
//! while fewer than `cap` synthetic jobs are in flight, so the stream keeps its whole in-flight
//! window and a live event waits behind at most `cap` synthetic jobs for a worker.
//!
//! Why the checkpoint stays exact: a synthetic job gets a sequence number from its own range
//! (high bit set) and never enters the `CheckpointTracker`, so it can neither hold the watermark
//! back nor move it. It is never dead-lettered either (it is not an event; the handler reports
//! its failure), and it does not count in the event statistics.
//!
//! Why a live update is never overwritten by an older view: between [`Side::Watch`] and
//! [`Side::Unwatch`] the owner remembers the keys of every stream event it admits; a synthetic job
//! whose key is among them is dropped unrun (the live event is newer than the view the job was
//! planned from), whether it arrives after that event or was waiting behind it. A job admitted
//! before a live event of its key runs first, and the live event after it.

use std::collections::HashSet;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::checkpoint::Seq;

/// What a reconciliation (or any other producer of synthetic work) sends the owner.
#[derive(Debug)]
pub enum Side<T> {
    /// Start remembering the keys of admitted stream events. `ack` is answered once the owner has
    /// done so: every stream event admitted after the answer counts as newer than the caller's
    /// view.
    Watch { ack: Sender<()> },
    /// One job for `key`, in `key`'s line after what is already there.
    Job { key: String, payload: T },
    /// Forget the remembered keys.
    Unwatch,
}

/// First sequence number of synthetic jobs (stream items count up from 0).
const SYNTHETIC_BASE: Seq = 1 << 63;

/// Is `seq` a synthetic job's?
pub(crate) fn is_synthetic(seq: Seq) -> bool {
    seq >= SYNTHETIC_BASE
}

/// The owner's side of the side channel.
pub(crate) struct SideState<T> {
    rx: Receiver<Side<T>>,
    /// The channel is still open.
    pub open: bool,
    /// Synthetic jobs admitted and not finished.
    pub in_flight: usize,
    /// Most synthetic jobs in flight at once.
    pub cap: usize,
    next_seq: Seq,
    watching: bool,
    touched: HashSet<Arc<str>>,
    /// Jobs dropped because a stream event of their key was admitted since the watch.
    pub dropped: u64,
}

impl<T> SideState<T> {
    pub fn new(rx: Receiver<Side<T>>, cap: usize) -> Self {
        SideState {
            rx,
            open: true,
            in_flight: 0,
            cap: cap.max(1),
            next_seq: SYNTHETIC_BASE,
            watching: false,
            touched: HashSet::new(),
            dropped: 0,
        }
    }

    pub fn receiver(&self) -> &Receiver<Side<T>> {
        &self.rx
    }

    /// Room for another synthetic job.
    pub fn has_room(&self) -> bool {
        self.open && self.in_flight < self.cap
    }

    pub fn next_seq(&mut self) -> Seq {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// A stream event about `keys` was admitted.
    pub fn saw(&mut self, key: &str, also: &[String]) {
        if self.watching {
            self.touched.insert(Arc::from(key));
            self.touched
                .extend(also.iter().map(|k| Arc::from(k.as_str())));
        }
    }

    /// Was a stream event of `key` admitted since the watch began?
    pub fn is_stale(&self, key: &str) -> bool {
        self.watching && self.touched.contains(key)
    }

    pub fn watch(&mut self, ack: &Sender<()>) {
        self.watching = true;
        self.touched.clear();
        let _ = ack.send(());
    }

    pub fn unwatch(&mut self) {
        self.watching = false;
        self.touched = HashSet::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_remembered_only_while_watching() {
        let (_tx, rx) = crossbeam_channel::unbounded::<Side<()>>();
        let mut s = SideState::new(rx, 2);
        s.saw("a", &[]);
        assert!(!s.is_stale("a"));
        let (ack, acked) = crossbeam_channel::bounded(1);
        s.watch(&ack);
        assert!(acked.try_recv().is_ok());
        s.saw("b", &["c".to_owned()]);
        assert!(s.is_stale("b") && s.is_stale("c") && !s.is_stale("a"));
        s.unwatch();
        assert!(!s.is_stale("b"));
        assert!(is_synthetic(s.next_seq()) && !is_synthetic(5));
    }
}
