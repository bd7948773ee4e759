//! Per-key ordering without head-of-line blocking.
//!
//! Instead of hashing keys onto per-worker queues (where one slow or retrying indicator blocks
//! every other key that hashes to the same worker), the owner keeps one FIFO per *busy* key: a
//! key is busy while one of its events is running or waiting for a retry, and later events for it
//! wait in its FIFO. An idle key's event goes straight to the shared job channel, where any idle
//! worker takes it. So same-key events run strictly in stream order, and different keys use every
//! worker. Memory is bounded by the owner's cap on events in flight, not by the number of keys.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::worker::Job;

/// FIFOs of waiting jobs for the keys that are busy. A key is busy iff it is in the map.
#[derive(Debug)]
pub(crate) struct KeyQueues<T> {
    busy: HashMap<Arc<str>, VecDeque<Job<T>>>,
    waiting: usize,
}

impl<T> Default for KeyQueues<T> {
    fn default() -> Self {
        KeyQueues {
            busy: HashMap::new(),
            waiting: 0,
        }
    }
}

impl<T> KeyQueues<T> {
    /// A new event arrives: returns it if its key was idle (dispatch it now, the key becomes
    /// busy), or queues it behind the key's running event and returns `None`.
    pub fn admit(&mut self, job: Job<T>) -> Option<Job<T>> {
        match self.busy.get_mut(&job.key) {
            Some(queue) => {
                queue.push_back(job);
                self.waiting += 1;
                None
            }
            None => {
                self.busy.insert(job.key.clone(), VecDeque::new());
                Some(job)
            }
        }
    }

    /// The running event of `key` has finished: the key's next event to dispatch, or `None` (the
    /// key is idle again).
    pub fn next(&mut self, key: &str) -> Option<Job<T>> {
        let queue = self.busy.get_mut(key)?;
        match queue.pop_front() {
            Some(job) => {
                self.waiting -= 1;
                Some(job)
            }
            None => {
                self.busy.remove(key);
                None
            }
        }
    }

    /// Give up on `key` (fatal result, lost worker, shutdown during a retry): its waiting events
    /// are dropped unrun and the key becomes idle. Returns how many were dropped.
    pub fn abandon(&mut self, key: &str) -> usize {
        let dropped = self.busy.remove(key).map_or(0, |q| q.len());
        self.waiting -= dropped;
        dropped
    }

    /// Events waiting behind a running one.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Keys with an event running or waiting for a retry.
    pub fn busy_keys(&self) -> usize {
        self.busy.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(seq: u64, key: &str) -> Job<()> {
        Job {
            seq,
            event_id: Arc::from("1-0"),
            key: Arc::from(key),
            payload: (),
            attempts: Default::default(),
        }
    }

    #[test]
    fn same_key_waits_and_comes_out_in_order() {
        let mut q = KeyQueues::default();
        assert_eq!(q.admit(job(0, "a")).map(|j| j.seq), Some(0));
        assert!(q.admit(job(1, "a")).is_none());
        assert_eq!(q.admit(job(2, "b")).map(|j| j.seq), Some(2));
        assert!(q.admit(job(3, "a")).is_none());
        assert_eq!(q.waiting(), 2);
        assert_eq!(q.next("a").map(|j| j.seq), Some(1));
        assert_eq!(q.next("a").map(|j| j.seq), Some(3));
        assert!(q.next("a").is_none());
        assert_eq!(q.busy_keys(), 1);
        // Idle again: the next event for "a" is dispatched at once.
        assert_eq!(q.admit(job(4, "a")).map(|j| j.seq), Some(4));
    }

    #[test]
    fn abandon_drops_waiting_events() {
        let mut q = KeyQueues::default();
        assert!(q.admit(job(0, "a")).is_some());
        assert!(q.admit(job(1, "a")).is_none());
        assert!(q.admit(job(2, "a")).is_none());
        assert_eq!(q.abandon("a"), 2);
        assert_eq!(q.waiting(), 0);
        assert_eq!(q.abandon("a"), 0);
        assert!(q.next("a").is_none());
    }
}
