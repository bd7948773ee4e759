//! Coalescing in the pipeline core: events of one key that wait behind each other run as one
//! batch when the handler says they may, and every event still gets its own outcome: the
//! checkpoint covers each, failures retry or dead-letter the right events, nothing runs twice,
//! the order per key holds across batches, and synthetic jobs are never batched.

use std::sync::Mutex;
use std::time::Duration;

use crate::support::pipeline::{
    Ev, RecordingSink, event, fast_opts, feed, id, multi_key_event, temp_dir,
};
use crossbeam_channel::{Receiver, Sender};
use harfanglab_intel::pipeline::{
    self, BatchItem, DeadLetterLog, EventHandler, Input, Outcome, PayloadInfo, Shutdown, Side,
};

/// One call of the handler: the key and the stream positions it covered (one for `handle`).
#[derive(Debug, Clone, PartialEq)]
struct Call {
    key: String,
    ns: Vec<usize>,
    batch: bool,
}

type Decide = dyn Fn(&Ev, usize) -> Outcome + Sync;

/// Coalesces everything but `delete` and `reconcile`; `decide(event, attempt)` gives each
/// event's outcome (`attempt` counts that event's runs from 0). `gate`: event 0 waits until the
/// event with op `open` has run, so everything between them queues up behind it.
struct Recorder {
    calls: Mutex<Vec<Call>>,
    runs: Mutex<std::collections::HashMap<usize, usize>>,
    decide: Box<Decide>,
    /// One shared outcome for the batch (a coalescing handler), or each event's own, one by one.
    shared_outcome: bool,
    gate: (Sender<()>, Receiver<()>),
}

impl Recorder {
    fn new(shared_outcome: bool, decide: impl Fn(&Ev, usize) -> Outcome + Sync + 'static) -> Self {
        Recorder {
            calls: Mutex::default(),
            runs: Mutex::default(),
            decide: Box::new(decide),
            shared_outcome,
            gate: crossbeam_channel::unbounded(),
        }
    }

    fn attempt(&self, n: usize) -> usize {
        let mut runs = self.runs.lock().unwrap();
        let r = runs.entry(n).or_default();
        *r += 1;
        *r - 1
    }

    /// One event's work; `alone`: a call of its own (not inside a recorded batch).
    fn apply(&self, key: &str, ev: &Ev, alone: bool) -> Outcome {
        if ev.n == 0 && ev.op != "reconcile" {
            let _ = self.gate.1.recv_timeout(Duration::from_secs(10));
        }
        if ev.op == "open" {
            let _ = self.gate.0.send(());
        }
        if alone {
            self.calls.lock().unwrap().push(Call {
                key: key.to_owned(),
                ns: vec![ev.n],
                batch: false,
            });
        }
        let attempt = self.attempt(ev.n);
        (self.decide)(ev, attempt)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn batches(&self) -> Vec<Vec<usize>> {
        self.calls()
            .into_iter()
            .filter(|c| c.batch)
            .map(|c| c.ns)
            .collect()
    }

    /// Positions in the order the handler applied them (for one key).
    fn order(&self, key: &str) -> Vec<usize> {
        self.calls()
            .into_iter()
            .filter(|c| c.key == key)
            .flat_map(|c| c.ns)
            .collect()
    }
}

impl EventHandler<Ev> for Recorder {
    fn handle(&self, _event_id: &str, key: &str, ev: &Ev) -> Outcome {
        self.apply(key, ev, true)
    }

    fn coalescable(&self, _key: &str, ev: &Ev) -> bool {
        !matches!(ev.op, "delete" | "reconcile")
    }

    fn handle_batch(&self, key: &str, events: &[BatchItem<'_, Ev>]) -> Vec<Outcome> {
        assert!(events.len() >= 2, "a batch has at least two events");
        assert!(
            events.iter().all(|e| self.coalescable(key, e.payload)),
            "only coalescable events are batched: {events:?}"
        );
        self.calls.lock().unwrap().push(Call {
            key: key.to_owned(),
            ns: events.iter().map(|e| e.payload.n).collect(),
            batch: true,
        });
        if !self.shared_outcome {
            // What the default `handle_batch` does, inside the recorded batch call.
            let mut outcomes = Vec::new();
            for e in events {
                let o = self.apply(key, e.payload, false);
                let go_on = o.is_final();
                outcomes.push(o);
                if !go_on {
                    break;
                }
            }
            return outcomes;
        }
        // One read, one apply: the first event's outcome stands for all of them.
        let attempt = self.attempt(events[0].payload.n);
        for e in &events[1..] {
            self.attempt(e.payload.n);
        }
        let o = (self.decide)(events[0].payload, attempt);
        if o.is_final() {
            vec![o; events.len()]
        } else {
            vec![o]
        }
    }

    fn describe(&self, ev: &Ev) -> PayloadInfo {
        PayloadInfo {
            event: ev.op.to_owned(),
            excerpt: Some(format!("n={}", ev.n)),
        }
    }
}

fn applied(_: &Ev, _: usize) -> Outcome {
    Outcome::Applied(String::new())
}

/// Event 0 on `key`, then `ops` on `key` (positions 1..), then the `open` event on another key
/// that releases event 0: everything on `key` after 0 is queued when 0 finishes.
fn storm(key: &str, ops: &[&'static str]) -> Vec<Input<Ev>> {
    let mut items = vec![event(0, key, "update")];
    for (i, op) in ops.iter().enumerate() {
        items.push(event(i + 1, key, op));
    }
    items.push(event(ops.len() + 1, "z", "open"));
    items
}

fn run(
    handler: &Recorder,
    items: Vec<Input<Ev>>,
    coalesce_max: usize,
    name: &str,
) -> (pipeline::PipelineSummary, RecordingSink, DeadLogDir) {
    let mut opts = fast_opts(2);
    opts.queue_per_worker = 64;
    opts.coalesce_max = coalesce_max;
    let dir = temp_dir(name);
    let dead = DeadLetterLog::open(&dir, "dl.jsonl").unwrap();
    let mut sink = RecordingSink::default();
    let n = items.len();
    let summary = pipeline::run(
        feed(items, n + 1),
        handler,
        &mut sink,
        &mut (),
        &opts,
        &Shutdown::new(),
        dead,
    )
    .expect("run");
    (summary, sink, DeadLogDir(dir))
}

struct DeadLogDir(std::path::PathBuf);

impl DeadLogDir {
    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.0.join("dl.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for DeadLogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_burst_waiting_behind_one_event_runs_as_one_batch_and_every_event_is_checkpointed() {
    let h = Recorder::new(true, applied);
    let ops = vec!["update"; 49];
    let (summary, sink, _dir) = run(&h, storm("a", &ops), 64, "burst");
    assert_eq!(h.batches(), [(1..=49).collect::<Vec<_>>()]);
    // Event 0 alone, the batch, the opener: three calls for 51 events.
    assert_eq!(h.calls().len(), 3, "{:?}", h.calls());
    assert_eq!(summary.stats.applied, 51, "stats count events, not batches");
    assert_eq!(summary.stats.received, 51);
    assert_eq!(summary.watermark.as_deref(), Some(id(50).as_str()));
    assert_eq!(
        sink.saved().last().map(String::as_str),
        Some(id(50).as_str())
    );
    assert_eq!(h.order("a"), (0..=49).collect::<Vec<_>>());
}

#[test]
fn batches_are_capped_and_keep_the_order_across_batches() {
    let h = Recorder::new(true, applied);
    let ops = vec!["update"; 49];
    let (summary, _, _dir) = run(&h, storm("a", &ops), 10, "cap");
    let sizes: Vec<usize> = h.batches().iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 10, 10, 10, 9]);
    assert_eq!(h.order("a"), (0..=49).collect::<Vec<_>>());
    assert_eq!(summary.stats.applied, 51);
}

#[test]
fn coalesce_max_one_turns_coalescing_off() {
    let h = Recorder::new(true, applied);
    let (summary, _, _dir) = run(&h, storm("a", &["update"; 20]), 1, "off");
    assert!(h.batches().is_empty());
    assert_eq!(h.calls().len(), 22);
    assert_eq!(summary.stats.applied, 22);
}

#[test]
fn uncoalescable_and_multi_key_events_end_a_batch_and_run_alone() {
    let h = Recorder::new(true, applied);
    let mut items = storm("a", &["update", "update", "delete", "update", "update"]);
    let opener = items.pop().unwrap();
    // A merge into "a" (also ordered with "b"), then two more updates.
    items.push(multi_key_event(6, "a", &["b"], "merge"));
    items.push(event(7, "a", "update"));
    items.push(event(8, "a", "update"));
    items.push(event(9, "z", "open"));
    drop(opener);
    let (summary, _, _dir) = run(&h, items, 64, "split");
    assert_eq!(h.batches(), [vec![1, 2], vec![4, 5], vec![7, 8]]);
    assert_eq!(h.order("a"), (0..=8).collect::<Vec<_>>());
    assert_eq!(summary.stats.applied, 10);
}

#[test]
fn a_failed_batch_retries_as_a_batch_and_no_event_runs_twice_or_is_lost() {
    // The shared read fails twice (transient), then applies.
    let h = Recorder::new(true, |_, attempt| {
        if attempt < 2 {
            Outcome::retry("OpenCTI answered 500")
        } else {
            Outcome::Applied(String::new())
        }
    });
    let ops = vec!["update"; 9];
    let (summary, _, _dir) = run(&h, storm("a", &ops), 64, "retry");
    // Event 0 runs alone and fails; when its retry is due, 1..=9 wait behind it and join it:
    // the batch fails once more (event 0's second attempt), then applies as a whole.
    assert_eq!(
        h.batches(),
        [(0..=9).collect::<Vec<_>>(), (0..=9).collect()]
    );
    assert_eq!(summary.stats.applied, 11);
    assert_eq!(summary.stats.failed, 0);
    assert_eq!(
        summary.stats.retries,
        2 + 2,
        "counted per failed job (event 0's, the opener's)"
    );
    let runs = h.runs.lock().unwrap().clone();
    assert!(
        (1..=9).all(|n| runs[&n] == 2),
        "ran with the batch: {runs:?}"
    );
    assert_eq!(summary.watermark.as_deref(), Some(id(10).as_str()));
}

#[test]
fn one_by_one_in_a_batch_stops_at_a_failure_and_finished_events_do_not_run_again() {
    // Default `handle_batch`: event 3 fails once; 1 and 2 must not run again.
    let h = Recorder::new(false, |ev, attempt| {
        if ev.n == 3 && attempt == 0 {
            Outcome::unavailable("HarfangLab 503", None)
        } else {
            Outcome::Applied(String::new())
        }
    });
    let (summary, _, _dir) = run(&h, storm("a", &["update"; 6]), 64, "partial");
    let runs = h.runs.lock().unwrap().clone();
    for n in 0..=7 {
        let expected = if n == 3 { 2 } else { 1 };
        assert_eq!(
            runs.get(&n),
            Some(&expected),
            "event {n} ran {:?} times",
            runs.get(&n)
        );
    }
    // 1..=6, then (after 3's retry) 3..=6 again as a batch: 3 first, in order.
    assert_eq!(h.batches(), [vec![1, 2, 3, 4, 5, 6], vec![3, 4, 5, 6]]);
    assert_eq!(summary.stats.applied, 8);
    assert_eq!(summary.stats.retries, 1);
    assert_eq!(summary.watermark.as_deref(), Some(id(7).as_str()));
}

#[test]
fn a_permanent_batch_failure_dead_letters_every_event_of_it() {
    let h = Recorder::new(true, |ev, _| {
        if ev.op == "bad" {
            Outcome::permanent("the pattern cannot be translated")
        } else {
            Outcome::Applied(String::new())
        }
    });
    let mut ops = vec!["bad"; 5];
    ops.push("delete");
    let (summary, _, dir) = run(&h, storm("a", &ops), 64, "permanent");
    assert_eq!(h.batches(), [vec![1, 2, 3, 4, 5]]);
    assert_eq!(summary.stats.failed, 5);
    assert_eq!(summary.stats.applied, 3);
    let recorded: Vec<String> = dir
        .records()
        .iter()
        .map(|r| r["event_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(recorded, (1..=5).map(id).collect::<Vec<_>>());
    assert_eq!(summary.watermark.as_deref(), Some(id(7).as_str()));
}

#[test]
fn a_batch_whose_budget_is_spent_dead_letters_its_head_and_the_rest_runs_again() {
    // Event 1 keeps failing (transient); the others apply. max_retries = 2 (fast_opts).
    let h = Recorder::new(true, |ev, _| {
        if ev.n == 1 {
            Outcome::retry("500")
        } else {
            Outcome::Applied(String::new())
        }
    });
    let (summary, _, dir) = run(&h, storm("a", &["update"; 4]), 64, "spent");
    let batches = h.batches();
    // 1..=4 three times (first try + 2 retries), then 2..=4 once 1 is dead-lettered.
    assert_eq!(batches.len(), 4, "{batches:?}");
    assert_eq!(batches.last(), Some(&vec![2, 3, 4]));
    assert_eq!(summary.stats.failed, 1);
    assert_eq!(summary.stats.applied, 5);
    assert_eq!(dir.records().len(), 1);
    assert_eq!(summary.watermark.as_deref(), Some(id(5).as_str()));
}

#[test]
fn synthetic_jobs_are_never_batched_and_stay_in_line() {
    let h = Recorder::new(true, applied);
    let (src_tx, src_rx) = crossbeam_channel::unbounded();
    let (side_tx, side_rx) = crossbeam_channel::unbounded();
    // Event 0 holds "a"; a repair of "a" and live updates queue behind it in some order.
    src_tx.send(event(0, "a", "update")).unwrap();
    side_tx
        .send(Side::Job {
            key: "a".to_owned(),
            payload: Ev {
                n: 100,
                op: "reconcile",
            },
        })
        .unwrap();
    for n in 1..=6 {
        src_tx.send(event(n, "a", "update")).unwrap();
    }
    src_tx.send(event(7, "z", "open")).unwrap();
    drop(src_tx);
    drop(side_tx);
    let mut opts = fast_opts(2);
    opts.queue_per_worker = 64;
    let dir = temp_dir("coalesce-side");
    let summary = pipeline::run_with_side(
        src_rx,
        side_rx,
        &h,
        &mut RecordingSink::default(),
        &mut (),
        &opts,
        &Shutdown::new(),
        DeadLetterLog::open(&dir, "dl.jsonl").unwrap(),
    )
    .expect("run");
    let _ = std::fs::remove_dir_all(&dir);
    let calls = h.calls();
    let repair: Vec<&Call> = calls.iter().filter(|c| c.ns.contains(&100)).collect();
    assert_eq!(repair.len(), 1, "{calls:?}");
    assert!(!repair[0].batch, "a synthetic job runs alone");
    assert!(h.batches().iter().all(|b| !b.contains(&100)));
    // Live events of "a" in stream order, whatever their batches.
    let live: Vec<usize> = h.order("a").into_iter().filter(|n| *n != 100).collect();
    assert_eq!(live, (0..=6).collect::<Vec<_>>());
    assert_eq!(
        summary.stats.applied, 8,
        "the repair does not count as an event"
    );
    assert_eq!(summary.watermark.as_deref(), Some(id(7).as_str()));
}

#[test]
fn a_dead_letter_that_cannot_be_written_mid_batch_leaves_the_rest_uncounted() {
    // Writes to /dev/full fail (ENOSPC) once a record does not fit the write buffer.
    let full = std::path::Path::new("/dev/full");
    if !full.exists() {
        return;
    }
    // Each event's own outcome: 1 applies, 2 fails for good (a record too big to buffer),
    // 3 and 4 apply inside the same batch after it.
    let h = Recorder::new(false, |ev, _| {
        if ev.op == "bad" {
            Outcome::permanent("x".repeat(64 * 1024))
        } else {
            Outcome::Applied(String::new())
        }
    });
    let mut opts = fast_opts(2);
    opts.queue_per_worker = 64;
    opts.coalesce_max = 64;
    let dead = DeadLetterLog::open(std::path::Path::new("/dev"), "full").expect("/dev/full");
    let items = storm("a", &["update", "bad", "update", "update"]);
    let result = pipeline::run(
        feed(items, 8),
        &h,
        &mut RecordingSink::default(),
        &mut (),
        &opts,
        &Shutdown::new(),
        dead,
    );
    assert!(
        result.is_err(),
        "a dead letter that cannot be written stops the pipeline"
    );
    assert_eq!(h.batches(), [vec![1, 2, 3, 4]]);
    let stats = opts.stats.snapshot();
    // 0, 1 and the opener (5) are applied; 2, 3 and 4 are given up with the key, not applied.
    assert_eq!(stats.applied, 3, "{stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert_eq!(stats.abandoned, 3, "{stats:?}");
}
