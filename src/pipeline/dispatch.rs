//! Per-key ordering without head-of-line blocking, for events about one key or several.
//!
//! Instead of hashing keys onto per-worker queues (where one slow or retrying indicator blocks
//! every other key that hashes to the same worker), the owner keeps one line per *busy* key: the
//! events about that key that are running, waiting for a retry, or waiting for their turn, in
//! stream order. An event runs when it is first in line for every one of its keys (most events
//! have one; a merge also has those of the indicators it absorbs). An event whose keys are all
//! idle goes straight to the shared job channel, where any idle worker takes it. So events sharing
//! a key run strictly in stream order, and unrelated keys use every worker.
//!
//! No deadlock is possible: an event joins the end of all its lines at once, in stream order, so
//! "is ahead of" follows stream order on every line, and the oldest unfinished event is always
//! first in all of its lines. Memory is bounded by the owner's cap on events in flight, not by the
//! number of keys.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::checkpoint::Seq;
use super::synthetic::is_synthetic;
use super::worker::Job;

/// One admitted event: its keys, and the job itself while it waits for its turn.
#[derive(Debug)]
struct Entry<T> {
    key: Arc<str>,
    /// Its other keys (sorted, without `key`); empty for most events.
    also: Vec<Arc<str>>,
    /// `Some` while waiting; taken when dispatched.
    waiting: Option<Job<T>>,
}

impl<T> Entry<T> {
    fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        std::iter::once(&self.key).chain(&self.also)
    }
}

/// Sequence numbers are distinct counters: a multiplication spreads them well enough, and is
/// much cheaper than SipHash on the owner thread's hot path.
#[derive(Default)]
struct SeqHasher(u64);

impl Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The lines of the busy keys and the events in them. A key is busy iff it has a line.
#[derive(Debug)]
pub(crate) struct KeyQueues<T> {
    lines: HashMap<Arc<str>, VecDeque<Seq>>,
    entries: HashMap<Seq, Entry<T>, BuildHasherDefault<SeqHasher>>,
    waiting: usize,
}

impl<T> Default for KeyQueues<T> {
    fn default() -> Self {
        KeyQueues {
            lines: HashMap::new(),
            entries: HashMap::default(),
            waiting: 0,
        }
    }
}

impl<T> KeyQueues<T> {
    /// A new event arrives, about `job.key` and `also` (duplicates are fine): returns it if it
    /// is first in line for each of them (dispatch it now; its keys become busy), or keeps it
    /// until it is and returns `None`.
    pub fn admit(&mut self, job: Job<T>, mut also: Vec<Arc<str>>) -> Option<Job<T>> {
        also.retain(|k| *k != job.key);
        also.sort_unstable();
        also.dedup();
        let seq = job.seq;
        let mut first_everywhere = true;
        for key in std::iter::once(&job.key).chain(&also) {
            let line = self.lines.entry(key.clone()).or_default();
            first_everywhere &= line.is_empty();
            line.push_back(seq);
        }
        let key = job.key.clone();
        let (waiting, ready) = if first_everywhere {
            (None, Some(job))
        } else {
            self.waiting += 1;
            (Some(job), None)
        };
        self.entries.insert(seq, Entry { key, also, waiting });
        ready
    }

    /// Event `seq` has finished: it leaves its lines. Returns the events that are now first in
    /// line for all their keys, to dispatch (several when `seq` had several keys).
    pub fn finish(&mut self, seq: Seq) -> Vec<Job<T>> {
        let Some(entry) = self.remove(seq) else {
            return Vec::new();
        };
        let mut ready = Vec::new();
        for key in entry.keys() {
            let front = self.lines.get(key).and_then(|line| line.front().copied());
            // `take_if_ready` takes each job once, even when it is the front of several lines.
            ready.extend(front.and_then(|f| self.take_if_ready(f)));
        }
        ready
    }

    /// Give up on event `seq` (fatal result, lost worker, shutdown during a retry): it leaves its
    /// lines, and every event waiting behind it on any of its keys, and behind those in turn, is
    /// dropped unrun (dropping less would run them out of order). Returns how many were dropped.
    pub fn abandon(&mut self, seq: Seq) -> usize {
        let mut dropped = 0;
        let mut doomed = vec![seq];
        while let Some(seq) = doomed.pop() {
            let Some(entry) = self.entries.get(&seq) else {
                continue;
            };
            for key in entry.keys() {
                if let Some(line) = self.lines.get(key) {
                    doomed.extend(line.iter().skip_while(|s| **s != seq).skip(1));
                }
            }
            if self.remove(seq).is_some_and(|e| e.waiting.is_some()) {
                dropped += 1;
            }
        }
        dropped
    }

    /// Coalescing (`batch.rs`): move the events waiting right behind `head` in its key's line
    /// into `head.followers`, while each `fits` (the handler's `coalescable`), has that key only,
    /// and is a stream event, up to `max` events in all. `head` must be the front of its line
    /// with no other key (the owner checks `fits` for it). The followers stay in the line, as
    /// running: nothing behind them is dispatched before they finish.
    pub fn coalesce(&mut self, head: &mut Job<T>, max: usize, fits: impl Fn(&T) -> bool) {
        if max < 2 || is_synthetic(head.seq) {
            return;
        }
        let Some(line) = self.lines.get(&head.key) else {
            return;
        };
        let alone = self
            .entries
            .get(&head.seq)
            .is_some_and(|e| e.also.is_empty() && e.waiting.is_none());
        if !alone || line.front() != Some(&head.seq) {
            return;
        }
        for seq in line.iter().skip(1) {
            if head.followers.len() + 1 >= max || is_synthetic(*seq) {
                break;
            }
            let Some(entry) = self.entries.get_mut(seq) else {
                break;
            };
            if !entry.also.is_empty() || !entry.waiting.as_ref().is_some_and(|j| fits(&j.payload)) {
                break;
            }
            if let Some(job) = entry.waiting.take() {
                self.waiting -= 1;
                head.followers.push(job);
            }
        }
    }

    /// A coalesced event that was not run goes back to waiting in its lines (it is still in
    /// them). Returns `false` (and drops it) if it is no longer tracked.
    pub fn put_back(&mut self, job: Job<T>) -> bool {
        match self.entries.get_mut(&job.seq) {
            Some(entry) if entry.waiting.is_none() => {
                entry.waiting = Some(job);
                self.waiting += 1;
                true
            }
            _ => false,
        }
    }

    /// Is `seq` still in its lines (admitted, not finished nor abandoned)?
    pub fn is_tracked(&self, seq: Seq) -> bool {
        self.entries.contains_key(&seq)
    }

    /// Events waiting for their turn.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Keys with an event running, waiting for a retry or waiting for its turn.
    pub fn busy_keys(&self) -> usize {
        self.lines.len()
    }

    /// Dispatch `seq` if it is waiting and first in all its lines.
    fn take_if_ready(&mut self, seq: Seq) -> Option<Job<T>> {
        let entry = self.entries.get_mut(&seq)?;
        let lines = &self.lines;
        let first_everywhere = std::iter::once(&entry.key)
            .chain(&entry.also)
            .all(|k| lines.get(k).and_then(|line| line.front()) == Some(&seq));
        if !first_everywhere {
            return None;
        }
        let job = entry.waiting.take()?;
        self.waiting -= 1;
        Some(job)
    }

    /// Take `seq` out of its lines (dropping the lines left empty) and out of the entries.
    fn remove(&mut self, seq: Seq) -> Option<Entry<T>> {
        let entry = self.entries.remove(&seq)?;
        if entry.waiting.is_some() {
            self.waiting -= 1;
        }
        for key in entry.keys() {
            if let Some(line) = self.lines.get_mut(key) {
                // Usually the front: it was running.
                if line.front() == Some(&seq) {
                    line.pop_front();
                } else {
                    line.retain(|s| *s != seq);
                }
                if line.is_empty() {
                    self.lines.remove(key);
                }
            }
        }
        Some(entry)
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
            followers: Vec::new(),
        }
    }

    fn keys(ks: &[&str]) -> Vec<Arc<str>> {
        ks.iter().map(|k| Arc::from(*k)).collect()
    }

    fn seqs(jobs: Vec<Job<()>>) -> Vec<u64> {
        let mut s: Vec<u64> = jobs.into_iter().map(|j| j.seq).collect();
        s.sort_unstable();
        s
    }

    #[test]
    fn same_key_waits_and_comes_out_in_order() {
        let mut q = KeyQueues::default();
        assert_eq!(q.admit(job(0, "a"), vec![]).map(|j| j.seq), Some(0));
        assert!(q.admit(job(1, "a"), vec![]).is_none());
        assert_eq!(q.admit(job(2, "b"), vec![]).map(|j| j.seq), Some(2));
        assert!(q.admit(job(3, "a"), vec![]).is_none());
        assert_eq!(q.waiting(), 2);
        assert_eq!(seqs(q.finish(0)), [1]);
        assert_eq!(seqs(q.finish(1)), [3]);
        assert!(q.finish(3).is_empty());
        assert_eq!(q.busy_keys(), 1);
        // Idle again: the next event for "a" is dispatched at once.
        assert_eq!(q.admit(job(4, "a"), vec![]).map(|j| j.seq), Some(4));
    }

    #[test]
    fn coalesce_takes_the_run_of_fitting_single_key_events_behind_the_head() {
        let mut q = KeyQueues::default();
        let mut head = q.admit(job(0, "a"), vec![]).expect("idle key");
        for s in 1..=3 {
            assert!(q.admit(job(s, "a"), vec![]).is_none());
        }
        // A multi-key event ends the run, and what follows it stays too.
        assert!(q.admit(job(4, "a"), keys(&["b"])).is_none());
        assert!(q.admit(job(5, "a"), vec![]).is_none());
        q.coalesce(&mut head, 64, |_| true);
        assert_eq!(seqs(std::mem::take(&mut head.followers)), [1, 2, 3]);
        assert_eq!(q.waiting(), 2);
        // The followers are still in line, as running: finishing the head releases nothing.
        assert!(q.finish(0).is_empty());
        assert!(q.finish(1).is_empty() && q.finish(2).is_empty());
        assert_eq!(seqs(q.finish(3)), [4]);
    }

    #[test]
    fn coalesce_respects_the_cap_fits_and_synthetic_jobs_and_put_back_restores() {
        let mut q = KeyQueues::default();
        let mut head = q.admit(job(0, "a"), vec![]).expect("idle key");
        for s in 1..=4 {
            assert!(q.admit(job(s, "a"), vec![]).is_none());
        }
        q.coalesce(&mut head, 3, |_| true);
        let followers = std::mem::take(&mut head.followers);
        assert_eq!(followers.iter().map(|j| j.seq).collect::<Vec<_>>(), [1, 2]);
        // The batch stopped after 1: 2 goes back to waiting, and runs after 1.
        let mut followers = followers.into_iter();
        let one = followers.next().unwrap();
        assert!(q.put_back(followers.next().unwrap()));
        assert_eq!(q.waiting(), 3);
        assert!(q.finish(0).is_empty());
        let mut next = q.finish(one.seq);
        assert_eq!(next.iter().map(|j| j.seq).collect::<Vec<_>>(), [2]);
        let mut two = next.pop().unwrap();
        q.coalesce(&mut two, 64, |_| false);
        assert!(two.followers.is_empty(), "nothing fits");

        // A synthetic job is never a head nor a follower.
        let mut q = KeyQueues::default();
        let mut head = q.admit(job(0, "s"), vec![]).expect("idle key");
        assert!(q.admit(job(is_synthetic_seq(), "s"), vec![]).is_none());
        assert!(q.admit(job(1, "s"), vec![]).is_none());
        q.coalesce(&mut head, 64, |_| true);
        assert!(head.followers.is_empty());
        assert!(q.finish(0).len() == 1);
        let mut synthetic = q.admit(job(2, "t"), vec![]).expect("idle key");
        synthetic.seq = is_synthetic_seq() + 1;
        q.coalesce(&mut synthetic, 64, |_| true);
        assert!(synthetic.followers.is_empty());
    }

    fn is_synthetic_seq() -> u64 {
        1 << 63
    }

    #[test]
    fn abandon_drops_waiting_events() {
        let mut q = KeyQueues::default();
        assert!(q.admit(job(0, "a"), vec![]).is_some());
        assert!(q.admit(job(1, "a"), vec![]).is_none());
        assert!(q.admit(job(2, "a"), vec![]).is_none());
        assert_eq!(q.abandon(0), 2);
        assert_eq!(q.waiting(), 0);
        assert_eq!(q.busy_keys(), 0);
        assert_eq!(q.abandon(0), 0);
        assert!(q.finish(0).is_empty());
    }

    #[test]
    fn a_multi_key_event_waits_for_every_key_and_holds_them_all() {
        let mut q = KeyQueues::default();
        assert!(q.admit(job(0, "s1"), vec![]).is_some());
        assert!(q.admit(job(1, "t"), vec![]).is_some());
        // The merge of s1 and s2 into t: behind 0 (s1) and 1 (t); s2 is idle.
        assert!(q.admit(job(2, "t"), keys(&["s1", "s2"])).is_none());
        // Later events of any of its keys wait behind it, even on the idle one.
        assert!(q.admit(job(3, "s2"), vec![]).is_none());
        assert!(q.admit(job(4, "x"), vec![]).is_some());
        assert!(q.finish(1).is_empty(), "still behind 0 on s1");
        assert_eq!(seqs(q.finish(0)), [2]);
        assert!(q.finish(4).is_empty());
        assert_eq!(seqs(q.finish(2)), [3]);
        assert!(q.finish(3).is_empty());
        assert_eq!((q.waiting(), q.busy_keys()), (0, 0));
    }

    #[test]
    fn finishing_a_multi_key_event_can_release_several() {
        let mut q = KeyQueues::default();
        assert!(q.admit(job(0, "t"), keys(&["a", "b", "t"])).is_some());
        assert!(q.admit(job(1, "a"), vec![]).is_none());
        assert!(q.admit(job(2, "b"), vec![]).is_none());
        assert!(q.admit(job(3, "b"), keys(&["a"])).is_none());
        assert_eq!(q.busy_keys(), 3);
        assert_eq!(seqs(q.finish(0)), [1, 2]);
        assert!(q.finish(1).is_empty(), "3 is still behind 2 on b");
        assert_eq!(seqs(q.finish(2)), [3]);
    }

    #[test]
    fn abandon_drops_everything_behind_on_every_key() {
        let mut q = KeyQueues::default();
        assert!(q.admit(job(0, "a"), vec![]).is_some());
        assert!(q.admit(job(1, "c"), vec![]).is_some());
        assert!(q.admit(job(2, "b"), keys(&["a"])).is_none());
        assert!(q.admit(job(3, "b"), vec![]).is_none());
        assert!(q.admit(job(4, "c"), vec![]).is_none());
        // 2 is behind 0 on a, 3 behind 2 on b; 4 only waits on c.
        assert_eq!(q.abandon(0), 2);
        assert_eq!(q.waiting(), 1);
        assert_eq!(seqs(q.finish(1)), [4]);
        // b is idle again.
        assert!(q.admit(job(5, "b"), vec![]).is_some());
    }

    #[test]
    fn random_admissions_run_in_order_per_key_and_always_drain() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let mut q = KeyQueues::default();
            let mut running: Vec<Job<()>> = Vec::new();
            let mut order: HashMap<String, Vec<u64>> = HashMap::new();
            let mut keys_of: HashMap<u64, Vec<String>> = HashMap::new();
            let mut admitted = 0u64;
            let mut done = 0u64;
            while done < 40 {
                if admitted < 40 && (running.is_empty() || rng.bool()) {
                    let n = rng.usize(1..=3);
                    let ks: Vec<String> = (0..n).map(|_| format!("k{}", rng.u8(0..5))).collect();
                    let also = ks[1..].iter().map(|k| Arc::from(k.as_str())).collect();
                    keys_of.insert(admitted, ks.clone());
                    running.extend(q.admit(job(admitted, &ks[0]), also));
                    admitted += 1;
                } else {
                    assert!(!running.is_empty(), "stuck with {} waiting", q.waiting());
                    let j = running.swap_remove(rng.usize(..running.len()));
                    // No other running event shares a key with this one.
                    for other in &running {
                        assert!(
                            keys_of[&other.seq]
                                .iter()
                                .all(|k| !keys_of[&j.seq].contains(k))
                        );
                    }
                    for k in &keys_of[&j.seq] {
                        order.entry(k.clone()).or_default().push(j.seq);
                    }
                    running.extend(q.finish(j.seq));
                    done += 1;
                }
            }
            for seqs in order.values_mut() {
                seqs.dedup();
                assert!(
                    seqs.windows(2).all(|w| w[0] < w[1]),
                    "out of order: {seqs:?}"
                );
            }
            assert_eq!((q.waiting(), q.busy_keys()), (0, 0));
        }
    }
}
