//! The in-memory watermark: which stream event id may be saved as "resume after here".
//!
//! Owned by the pipeline's single owner thread; workers never touch it (they report completions).
//! This is NOT the checkpoint *file*: persisting the id is the job of a [`CheckpointSink`]
//! (implemented by `crate::state`).
//!
//! Rule: the watermark is the event id of the newest item such that it and every earlier item
//! have finished (applied, skipped, ignored or dead-lettered). Event ids are not unique (OpenCTI
//! reuses an event's id for its dependency events), so items are tracked by a sequence number
//! given in stream order. Heartbeat ids advance the watermark only when nothing is in flight; a
//! heartbeat that arrives while events are in flight is remembered and applied when they have all
//! finished, unless a newer event arrived meanwhile.
//!
//! Memory is O(unfinished items), not O(window): finished items are forgotten at once. Each
//! unfinished item remembers the id of the item just before it, which is exactly the watermark
//! once everything before it has finished.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Where the watermark goes: called by the owner thread at most about once per `save_every` when
/// the watermark moved, and once at shutdown. Implementations log their own I/O errors (a failed
/// save only means a longer replay after a restart).
pub trait CheckpointSink {
    /// Persist `event_id` as the stream position to resume after.
    fn save(&mut self, event_id: &str);
}

/// A sink that keeps nothing (dry runs, tests, benchmarks).
impl CheckpointSink for () {
    fn save(&mut self, _event_id: &str) {}
}

/// Sequence number of an item in stream order (internal; ids are not unique).
pub type Seq = u64;

#[derive(Debug)]
struct Unfinished {
    /// Id of the item just before this one (the watermark once this one is the oldest
    /// unfinished and everything before it is done); `None` for the very first item.
    prev: Option<Arc<str>>,
}

/// Tracks unfinished items and derives the exact watermark.
#[derive(Debug, Default)]
pub struct CheckpointTracker {
    next_seq: Seq,
    /// Id of the newest event begun (seq `next_seq - 1`).
    last_id: Option<Arc<str>>,
    unfinished: BTreeMap<Seq, Unfinished>,
    /// A heartbeat seen while busy: its id and `next_seq` when it arrived. Applied when
    /// `unfinished` empties while `next_seq` is unchanged.
    heartbeat: Option<(Arc<str>, Seq)>,
    watermark: Option<Arc<str>>,
    /// Watermark moved since the last [`CheckpointTracker::take_changed`].
    changed: bool,
}

impl CheckpointTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a new event (in stream order) that is now in flight; returns its sequence number.
    pub fn begin(&mut self, event_id: &str) -> Seq {
        let seq = self.next_seq;
        self.next_seq += 1;
        let id: Arc<str> = Arc::from(event_id);
        let prev = self.last_id.replace(id);
        self.unfinished.insert(seq, Unfinished { prev });
        seq
    }

    /// Register an event that needs no work (ignored types): finished at once, still in order.
    pub fn begin_finished(&mut self, event_id: &str) {
        let seq = self.begin(event_id);
        self.finish(seq);
    }

    /// Register a heartbeat id (see the module doc for when it takes effect).
    pub fn heartbeat(&mut self, event_id: &str) {
        let id: Arc<str> = Arc::from(event_id);
        if self.unfinished.is_empty() {
            self.heartbeat = None;
            self.set(id);
        } else {
            self.heartbeat = Some((id, self.next_seq));
        }
    }

    /// Mark `seq` finished (applied, skipped or dead-lettered). Unknown or repeated seqs are
    /// ignored.
    pub fn finish(&mut self, seq: Seq) {
        let was_oldest = self.unfinished.first_key_value().map(|(s, _)| *s) == Some(seq);
        if self.unfinished.remove(&seq).is_none() || !was_oldest {
            return;
        }
        match self.unfinished.first_key_value() {
            // Everything before `oldest` has finished, so the item just before it is the answer.
            Some((_, oldest)) => {
                if let Some(prev) = oldest.prev.clone() {
                    self.set(prev);
                }
            }
            None => {
                match self.heartbeat.take() {
                    // No event came after the heartbeat: its (newer) id wins.
                    Some((hb, at)) if at == self.next_seq => self.set(hb),
                    _ => {
                        if let Some(last) = self.last_id.clone() {
                            self.set(last);
                        }
                    }
                }
            }
        }
    }

    fn set(&mut self, id: Arc<str>) {
        if self.watermark.as_deref() != Some(&*id) {
            self.changed = true;
        }
        self.watermark = Some(id);
    }

    /// The current watermark, if any item has finished yet.
    pub fn watermark(&self) -> Option<&str> {
        self.watermark.as_deref()
    }

    /// Number of events begun and not finished.
    pub fn in_flight(&self) -> usize {
        self.unfinished.len()
    }

    /// Has the watermark moved since the last call to [`CheckpointTracker::mark_saved`]?
    pub fn is_changed(&self) -> bool {
        self.changed
    }

    /// Record that the current watermark has been handed to the sink.
    pub fn mark_saved(&mut self) {
        self.changed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_completion_moves_to_each_event() {
        let mut t = CheckpointTracker::new();
        let a = t.begin("1-0");
        let b = t.begin("2-0");
        assert_eq!(t.watermark(), None);
        t.finish(a);
        assert_eq!(t.watermark(), Some("1-0"));
        t.finish(b);
        assert_eq!(t.watermark(), Some("2-0"));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn out_of_order_completion_waits_for_the_oldest() {
        let mut t = CheckpointTracker::new();
        let a = t.begin("1-0");
        let b = t.begin("2-0");
        let c = t.begin("3-0");
        t.finish(c);
        t.finish(b);
        assert_eq!(t.watermark(), None);
        t.finish(a);
        assert_eq!(t.watermark(), Some("3-0"));
    }

    #[test]
    fn duplicate_ids_are_tracked_separately() {
        // OpenCTI reuses an event's id for its dependency events.
        let mut t = CheckpointTracker::new();
        let a = t.begin("5-0");
        let b = t.begin("5-0");
        let c = t.begin("6-0");
        t.finish(a);
        assert_eq!(t.watermark(), Some("5-0"));
        t.finish(c);
        assert_eq!(t.watermark(), Some("5-0"));
        t.finish(b);
        assert_eq!(t.watermark(), Some("6-0"));
    }

    #[test]
    fn idle_heartbeat_applies_at_once() {
        let mut t = CheckpointTracker::new();
        t.heartbeat("9-0");
        assert_eq!(t.watermark(), Some("9-0"));
        assert!(t.is_changed());
    }

    #[test]
    fn busy_heartbeat_applies_when_all_finish() {
        let mut t = CheckpointTracker::new();
        let a = t.begin("1-0");
        t.heartbeat("7-0");
        assert_eq!(t.watermark(), None);
        t.finish(a);
        assert_eq!(t.watermark(), Some("7-0"));
    }

    #[test]
    fn busy_heartbeat_is_dropped_when_a_newer_event_came() {
        let mut t = CheckpointTracker::new();
        let a = t.begin("1-0");
        t.heartbeat("7-0");
        let b = t.begin("8-0");
        t.finish(a);
        assert_eq!(t.watermark(), Some("1-0"));
        t.finish(b);
        assert_eq!(t.watermark(), Some("8-0"));
    }

    #[test]
    fn ignored_event_finishes_immediately_but_in_order() {
        let mut t = CheckpointTracker::new();
        let a = t.begin("1-0");
        t.begin_finished("2-0");
        assert_eq!(t.watermark(), None);
        t.finish(a);
        assert_eq!(t.watermark(), Some("2-0"));
        t.begin_finished("3-0");
        assert_eq!(t.watermark(), Some("3-0"));
    }

    #[test]
    fn finishing_twice_or_unknown_is_harmless() {
        let mut t = CheckpointTracker::new();
        let a = t.begin("1-0");
        let _b = t.begin("2-0");
        t.finish(a);
        t.finish(a);
        t.finish(999);
        assert_eq!(t.watermark(), Some("1-0"));
        assert_eq!(t.in_flight(), 1);
    }

    /// Reference model: every item ever seen, in order.
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Event,
        Heartbeat,
    }
    struct Item {
        kind: Kind,
        done: bool,
        /// For heartbeats: everything was finished at some moment while it was the newest item.
        eligible: bool,
    }

    /// Property: for random interleavings of begin / ignored / heartbeat / finish, the watermark
    /// (1) never names an item with an unfinished event at or before it, (2) never moves back,
    /// and (3) equals the reference: the last item of the finished prefix that is an event or an
    /// eligible heartbeat.
    #[test]
    fn random_completion_orders_never_pass_an_unfinished_event() {
        for seed in 0..400u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut t = CheckpointTracker::new();
            let mut items: Vec<Item> = Vec::new();
            let mut open: Vec<(Seq, usize)> = Vec::new(); // (seq, index in items)
            let mut last_pos: Option<usize> = None;
            for _ in 0..rng.usize(1..200) {
                match rng.u8(0..10) {
                    0..=3 => {
                        let idx = items.len();
                        let seq = t.begin(&format!("{idx}-0"));
                        items.push(Item {
                            kind: Kind::Event,
                            done: false,
                            eligible: false,
                        });
                        open.push((seq, idx));
                    }
                    4 => {
                        let idx = items.len();
                        t.begin_finished(&format!("{idx}-0"));
                        items.push(Item {
                            kind: Kind::Event,
                            done: true,
                            eligible: false,
                        });
                    }
                    5 => {
                        let idx = items.len();
                        t.heartbeat(&format!("{idx}-0"));
                        items.push(Item {
                            kind: Kind::Heartbeat,
                            done: true,
                            eligible: false,
                        });
                    }
                    _ => {
                        if !open.is_empty() {
                            let (seq, idx) = open.swap_remove(rng.usize(0..open.len()));
                            items[idx].done = true;
                            t.finish(seq);
                        }
                    }
                }
                if items.iter().all(|i| i.done)
                    && let Some(last) = items.last_mut()
                    && last.kind == Kind::Heartbeat
                {
                    last.eligible = true;
                }
                // Reference watermark.
                let prefix = items.iter().take_while(|i| i.done).count();
                let expected = items[..prefix]
                    .iter()
                    .rposition(|i| i.kind == Kind::Event || i.eligible);
                let got = t.watermark().map(|w| {
                    w.trim_end_matches("-0")
                        .parse::<usize>()
                        .expect("test ids are numbers")
                });
                if let Some(pos) = got {
                    assert!(
                        items[..=pos].iter().all(|i| i.done),
                        "seed {seed}: watermark {pos} passes an unfinished event"
                    );
                    assert!(last_pos.is_none_or(|l| l <= pos), "seed {seed}: moved back");
                    last_pos = Some(pos);
                }
                assert_eq!(got, expected, "seed {seed}: watermark is not exact");
                assert_eq!(t.in_flight(), open.len());
            }
        }
    }
}
