//! Synthetic jobs (reconciliation repairs) in the pipeline core: ordered with the stream events of
//! their key, dropped when a newer live event of their key came after the watch, and never part
//! of the checkpoint, the dead letters or the event counts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::pipeline::{Ev, FnHandler, RecordingSink, event, fast_opts, id, temp_dir};
use crossbeam_channel::{Receiver, Sender};
use harfanglab_intel::pipeline::{self, DeadLetterLog, Input, Outcome, Shutdown, Side};

/// What the handler saw, in order: (key, op).
type Seen = Arc<Mutex<Vec<(String, &'static str)>>>;

fn wait_for(seen: &Seen, key: &str, op: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !seen
        .lock()
        .unwrap()
        .iter()
        .any(|(k, o)| k == key && *o == op)
    {
        assert!(std::time::Instant::now() < deadline, "{key}/{op} never ran");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A handler that records every (key, op) it runs into `seen` and applies it, except `hold_op`:
/// that one waits for `release` (10 s at most) and then answers `held()`.
fn recording_handler(
    seen: &Seen,
    release: Receiver<()>,
    hold_op: &'static str,
    held: fn() -> Outcome,
) -> FnHandler<impl Fn(&str, &str, &Ev) -> Outcome + Sync> {
    let seen = seen.clone();
    FnHandler(move |_: &str, key: &str, ev: &Ev| {
        seen.lock().unwrap().push((key.to_owned(), ev.op));
        if ev.op == hold_op {
            let _ = release.recv_timeout(Duration::from_secs(10));
            return held();
        }
        Outcome::Applied(String::new())
    })
}

fn job(key: &str, op: &'static str) -> Side<Ev> {
    Side::Job {
        key: key.to_owned(),
        payload: Ev { n: 0, op },
    }
}

#[test]
fn synthetic_jobs_neither_hold_nor_move_the_checkpoint_and_are_never_dead_lettered() {
    let (src_tx, src_rx): (Sender<Input<Ev>>, Receiver<Input<Ev>>) = crossbeam_channel::unbounded();
    let (side_tx, side_rx) = crossbeam_channel::unbounded();
    let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
    let seen: Seen = Arc::default();
    let handler = recording_handler(&seen, release_rx, "slow-repair", || {
        Outcome::permanent("repair refused")
    });
    let dir = temp_dir("synthetic");
    let dead = DeadLetterLog::open(&dir, "dl.jsonl").unwrap();
    let sink = RecordingSink::default();
    let saves = sink.saves.clone();
    let opts = fast_opts(2);
    let mut sink = sink;
    let summary = std::thread::scope(|scope| {
        scope.spawn(|| {
            side_tx.send(job("s", "slow-repair")).unwrap();
            wait_for(&seen, "s", "slow-repair");
            for n in 0..4 {
                src_tx.send(event(n, "a", "create")).unwrap();
            }
            // The live events finish and are checkpointed while the repair still runs.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while saves.lock().unwrap().last() != Some(&id(3)) {
                assert!(std::time::Instant::now() < deadline, "checkpoint held back");
                std::thread::sleep(Duration::from_millis(2));
            }
            release_tx.send(()).unwrap();
            drop(src_tx);
            drop(side_tx);
        });
        pipeline::run_with_side(
            src_rx,
            side_rx,
            &handler,
            &mut sink,
            &mut (),
            &opts,
            &Shutdown::new(),
            dead,
        )
        .expect("run")
    });
    assert_eq!(summary.watermark.as_deref(), Some(id(3).as_str()));
    assert_eq!(summary.stats.received, 4);
    assert_eq!(summary.stats.applied, 4);
    assert_eq!(summary.stats.failed, 0);
    let dead_letters = std::fs::read_to_string(dir.join("dl.jsonl")).unwrap_or_default();
    assert!(dead_letters.is_empty(), "{dead_letters}");
}

#[test]
fn a_job_behind_a_newer_live_event_is_dropped_one_ahead_of_it_runs_first() {
    let (src_tx, src_rx) = crossbeam_channel::unbounded();
    let (side_tx, side_rx) = crossbeam_channel::unbounded();
    let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
    let seen: Seen = Arc::default();
    let handler = recording_handler(
        &seen,
        release_rx,
        "hold",
        || Outcome::Applied(String::new()),
    );
    let opts = fast_opts(4);
    std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            pipeline::run_with_side(
                src_rx,
                side_rx,
                &handler,
                &mut (),
                &mut (),
                &opts,
                &Shutdown::new(),
                DeadLetterLog::disabled(),
            )
        });
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        side_tx.send(Side::Watch { ack: ack_tx }).unwrap();
        ack_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        // x: a live event after the watch, then the job planned from the older view.
        src_tx.send(event(0, "x", "create")).unwrap();
        wait_for(&seen, "x", "create");
        side_tx.send(job("x", "repair")).unwrap();
        // z: the job runs first (it is held), the live event waits behind it and runs after.
        side_tx.send(job("z", "hold")).unwrap();
        wait_for(&seen, "z", "hold");
        src_tx.send(event(1, "z", "update")).unwrap();
        // y: no live event, the job runs.
        side_tx.send(job("y", "repair")).unwrap();
        wait_for(&seen, "y", "repair");
        release_tx.send(()).unwrap();
        wait_for(&seen, "z", "update");
        side_tx.send(Side::Unwatch).unwrap();
        drop(src_tx);
        drop(side_tx);
        run.join().unwrap().expect("run");
    });
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.contains(&("x".to_owned(), "repair")), "{seen:?}");
    let at = |k: &str, o: &str| seen.iter().position(|(a, b)| a == k && *b == o).unwrap();
    assert!(at("z", "hold") < at("z", "update"), "{seen:?}");
}
