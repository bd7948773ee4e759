//! Failure handling: permanent failures are dead-lettered and the stream goes on; retryable ones
//! are retried with backoff without blocking other keys (a `Retry-After` is honoured, up to the
//! cap); an outage spends no attempt budget, a lone failing event does; fatal results and worker
//! panics stop the pipeline with an error.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::pipeline::*;
use harfanglab_intel::RetryPolicy;
use harfanglab_intel::pipeline::{self, DeadLetterLog, Input, Outcome, PipelineError, Shutdown};

/// A fresh directory with a dead-letter log `file` in it, and the log's path.
fn dead_letter_log(tag: &str, file: &str) -> (PathBuf, DeadLetterLog, PathBuf) {
    let dir = temp_dir(tag);
    let log = DeadLetterLog::open(&dir, file).expect("open");
    let path = log.path().expect("path").to_owned();
    (dir, log, path)
}

/// The records of a dead-letter file that may not exist (nothing written).
fn read_dead_letters_or_none(path: &std::path::Path) -> Vec<serde_json::Value> {
    if path.exists() {
        read_dead_letters(path)
    } else {
        Vec::new()
    }
}

fn read_dead_letters(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("dead-letter file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn permanent_failure_is_dead_lettered_and_the_stream_continues() {
    let (dir, log, path) = dead_letter_log("permanent", "connector-a.jsonl");
    let items: Vec<Input<Ev>> = (0..20)
        .map(|n| event(n, &format!("k{}", n % 5), "create"))
        .collect();
    let applied: Mutex<Vec<usize>> = Mutex::default();
    let handler = FnHandler(|_: &str, _: &str, ev: &Ev| {
        if ev.n == 7 {
            Outcome::permanent("HTTP 400: invalid value")
        } else {
            applied.lock().unwrap().push(ev.n);
            Outcome::Applied(String::new())
        }
    });
    // The watermark may pass event 7 only once its record is on disk.
    let check_path = path.clone();
    let mut sink = RecordingSink {
        check: Some(Box::new(move |w: &str| {
            if pos(w) >= 7 {
                let text = std::fs::read_to_string(&check_path).unwrap_or_default();
                assert!(
                    text.contains(&id(7)),
                    "watermark {w} passed an unsynced dead letter"
                );
            }
        })),
        ..RecordingSink::default()
    };
    let summary = pipeline::run(
        feed(items, 8),
        &handler,
        &mut sink,
        &mut (),
        &fast_opts(3),
        &Shutdown::new(),
        log,
    )
    .expect("run");
    assert_eq!(summary.stats.failed, 1);
    assert_eq!(summary.stats.applied, 19);
    assert_eq!(summary.watermark, Some(id(19)));
    // Same key as event 7 (k2): later events still applied.
    assert!(applied.lock().unwrap().contains(&12));
    let records = read_dead_letters(&path);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["event_id"], id(7));
    assert_eq!(records[0]["key"], "k2");
    assert_eq!(records[0]["event"], "create");
    assert_eq!(records[0]["reason"], "HTTP 400: invalid value");
    assert_eq!(records[0]["excerpt"], "n=7");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn retryable_failure_is_retried_then_applied_without_blocking_other_keys() {
    // Key "a" fails twice with a retryable error; during its backoff every event of other keys
    // must complete. Its second event must wait for the first.
    let mut items = vec![event(0, "a", "create"), event(1, "a", "update")];
    for n in 2..40 {
        items.push(event(n, &format!("k{n}"), "create"));
    }
    let attempts = AtomicUsize::new(0);
    let order: Mutex<Vec<usize>> = Mutex::default();
    let handler = FnHandler(|_: &str, _: &str, ev: &Ev| {
        if ev.n == 0 && attempts.fetch_add(1, Ordering::SeqCst) < 2 {
            return Outcome::retry("HTTP 503");
        }
        order.lock().unwrap().push(ev.n);
        Outcome::Applied(String::new())
    });
    let mut opts = fast_opts(1);
    opts.retry = RetryPolicy {
        max_retries: 4,
        base: Duration::from_millis(300),
        cap: Duration::from_secs(1),
    };
    let summary = run_to_end(feed(items, 8), &handler, &opts, DeadLetterLog::disabled());
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(summary.stats.retries, 2);
    assert_eq!(summary.stats.applied, 40);
    assert_eq!(summary.stats.failed, 0);
    let order = order.into_inner().unwrap();
    let first = order.iter().position(|&n| n == 0).expect("event 0 applied");
    let second = order.iter().position(|&n| n == 1).expect("event 1 applied");
    assert!(first < second, "same-key order broken: {order:?}");
    // Even with a single worker, the other keys ran during key a's backoff.
    assert!(
        first >= 38,
        "other keys were blocked by the retrying key: {order:?}"
    );
    assert_eq!(summary.watermark, Some(id(39)));
}

#[test]
fn exhausted_retries_are_dead_lettered() {
    let (dir, log, path) = dead_letter_log("exhausted", "c.jsonl");
    let attempts = AtomicUsize::new(0);
    let handler = FnHandler(|_: &str, _: &str, _: &Ev| {
        attempts.fetch_add(1, Ordering::SeqCst);
        Outcome::retry("timeout")
    });
    let summary = run_to_end(
        feed(vec![event(0, "a", "delete")], 2),
        &handler,
        &fast_opts(1),
        log,
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(summary.stats.failed, 1);
    assert_eq!(summary.watermark, Some(id(0)));
    let records = read_dead_letters(&path);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["reason"], "gave up after 3 attempts: timeout");
    assert_eq!(records[0]["event"], "delete");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fatal_outcome_stops_the_pipeline_with_an_error() {
    // A long stream: run must stop early, trigger the shared shutdown, and not checkpoint the
    // fatal event.
    let items: Vec<Input<Ev>> = (0..10_000)
        .map(|n| event(n, &format!("k{}", n % 10), "create"))
        .collect();
    let handler = FnHandler(|_: &str, _: &str, ev: &Ev| {
        if ev.n == 25 {
            Outcome::Fatal("HTTP 401: token revoked".into())
        } else {
            Outcome::Applied(String::new())
        }
    });
    let shutdown = Shutdown::new();
    let mut sink = RecordingSink::default();
    let err = run_plain(
        feed(items, 8),
        &handler,
        &mut sink,
        &fast_opts(2),
        &shutdown,
    )
    .expect_err("fatal must stop the run");
    match &err {
        PipelineError::Fatal {
            event_id,
            key,
            reason,
        } => {
            assert_eq!(event_id, &id(25));
            assert_eq!(key, "k5");
            assert!(reason.contains("401"));
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains(&id(25)));
    assert!(shutdown.is_triggered());
    let saves = sink.saved();
    assert!(
        saves.iter().all(|w| pos(w) < 25),
        "fatal event checkpointed: {saves:?}"
    );
}

#[test]
fn panicking_handler_stops_the_pipeline_instead_of_wedging_it() {
    let items: Vec<Input<Ev>> = (0..2_000)
        .map(|n| event(n, &format!("k{}", n % 10), "create"))
        .collect();
    let handler = FnHandler(|_: &str, _: &str, ev: &Ev| {
        if ev.n == 30 {
            panic!("handler bug (expected in this test)");
        }
        Outcome::Applied(String::new())
    });
    let shutdown = Shutdown::new();
    let mut sink = RecordingSink::default();
    let err = run_plain(
        feed(items, 8),
        &handler,
        &mut sink,
        &fast_opts(3),
        &shutdown,
    )
    .expect_err("panic must surface as an error");
    assert!(
        matches!(err, PipelineError::WorkerPanicked { .. }),
        "got {err}"
    );
    assert!(shutdown.is_triggered());
    assert!(sink.saved().iter().all(|w| pos(w) < 30));
}

/// With `auto` the pool keeps channel ends for the workers it adds, so it never disconnects:
/// the owner must still see every worker gone (the live count) and stop at once, not wait out
/// the shutdown deadline (an hour here) with the queued events.
#[test]
fn a_growing_pool_whose_workers_all_panicked_stops_at_once() {
    use harfanglab_intel::{AdaptiveOptions, ConcurrencyLimit, Limiter};
    let items: Vec<Input<Ev>> = (0..200)
        .map(|n| event(n, &format!("k{}", n % 10), "create"))
        .collect();
    let handler = FnHandler(|_: &str, _: &str, _: &Ev| -> Outcome {
        panic!("handler bug (expected in this test)");
    });
    let opts = pipeline::PipelineOptions {
        worker_limit: Some(std::sync::Arc::new(Limiter::new(
            ConcurrencyLimit::Adaptive(AdaptiveOptions {
                initial: 2,
                max: 2,
                ..AdaptiveOptions::default()
            }),
        ))),
        shutdown_deadline: Duration::from_secs(3600),
        ..fast_opts(2)
    };
    let shutdown = Shutdown::new();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut sink = RecordingSink::default();
            let result = run_plain(feed(items, 8), &handler, &mut sink, &opts, &shutdown);
            let _ = done_tx.send(result);
        });
        // Not a speed bound: without the live count this waits for the hour-long deadline.
        let Ok(result) = done_rx.recv_timeout(Duration::from_secs(300)) else {
            // A second signal ends the wait, so the failure is reported rather than hung.
            shutdown.on_signal();
            panic!("the owner waited for the deadline with no worker left");
        };
        let err = result.expect_err("panics must surface as an error");
        assert!(
            matches!(err, PipelineError::WorkerPanicked { .. }),
            "got {err}"
        );
    });
    assert!(shutdown.is_triggered());
}

/// An outage: every event fails for availability until it ends. Nothing may be dead-lettered,
/// however long it lasts past the attempt budget, and everything applies after it.
#[test]
fn an_outage_spends_no_attempt_budget() {
    let (dir, log, path) = dead_letter_log("outage", "c.jsonl");
    let up = AtomicBool::new(false);
    let attempts = AtomicUsize::new(0);
    let handler = FnHandler(|_: &str, _: &str, _: &Ev| {
        attempts.fetch_add(1, Ordering::SeqCst);
        if up.load(Ordering::SeqCst) {
            Outcome::Applied(String::new())
        } else {
            Outcome::unavailable("HarfangLab unreachable", None)
        }
    });
    let items: Vec<Input<Ev>> = (0..20)
        .map(|n| event(n, &format!("k{n}"), "create"))
        .collect();
    // Budget: 3 counted attempts, 100 ms apart at most: spent in well under a second if the
    // outage counted.
    let opts = fast_opts(4);
    let summary = std::thread::scope(|s| {
        s.spawn(|| {
            work_for(Duration::from_millis(1500));
            up.store(true, Ordering::SeqCst);
        });
        run_to_end(feed(items, 8), &handler, &opts, log)
    });
    assert_eq!(summary.stats.failed, 0, "{:?}", summary.stats);
    assert_eq!(summary.stats.applied, 20);
    assert_eq!(summary.watermark, Some(id(19)));
    let budget = 20 * (opts.retry.max_retries as usize + 1);
    assert!(
        attempts.load(Ordering::SeqCst) > 2 * budget,
        "the outage was shorter than the budget: {} attempts",
        attempts.load(Ordering::SeqCst)
    );
    assert!(read_dead_letters_or_none(&path).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// One event failing for availability while the others are applied is about that event: its
/// failures count, and it is dead-lettered once the budget is spent.
#[test]
fn a_lone_unavailable_event_among_applied_ones_spends_its_budget() {
    let (dir, log, path) = dead_letter_log("lone", "c.jsonl");
    let stuck = AtomicUsize::new(0);
    let handler = FnHandler(|_: &str, key: &str, _: &Ev| {
        if key == "stuck" {
            stuck.fetch_add(1, Ordering::SeqCst);
            return Outcome::unavailable("find IOCRule: HarfangLab did not answer in time", None);
        }
        work_for(Duration::from_millis(5));
        Outcome::Applied(String::new())
    });
    let mut items = vec![event(0, "stuck", "create")];
    items.extend((1..400).map(|n| event(n, &format!("k{n}"), "create")));
    let summary = run_to_end(feed(items, 8), &handler, &fast_opts(1), log);
    assert_eq!(summary.stats.failed, 1, "{:?}", summary.stats);
    assert_eq!(summary.stats.applied, 399);
    let records = read_dead_letters(&path);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["key"], "stuck");
    let reason = records[0]["reason"].as_str().expect("reason");
    // One worker, the stuck event first: its first failure came before anything was applied
    // (it may be the start of an outage) and does not count; the next three do (max_retries 2).
    assert_eq!(
        reason,
        "gave up after 4 attempts (3 counted): find IOCRule: HarfangLab did not answer in time"
    );
    assert_eq!(stuck.load(Ordering::SeqCst), 4);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `Retry-After` delays that key at least that long (capped by `retry.cap`), and the wait
/// holds no worker: with one worker, the other keys are applied meanwhile.
#[test]
fn retry_after_delays_the_key_without_holding_the_worker() {
    const HINT: Duration = Duration::from_millis(600);
    let started = std::time::Instant::now();
    let tried: Mutex<Vec<Duration>> = Mutex::default();
    let others: Mutex<Vec<Duration>> = Mutex::default();
    let handler = FnHandler(|_: &str, key: &str, _: &Ev| {
        if key == "a" {
            let mut t = tried.lock().unwrap();
            t.push(started.elapsed());
            if t.len() == 1 {
                return Outcome::unavailable("HTTP 429", Some(HINT));
            }
        } else {
            others.lock().unwrap().push(started.elapsed());
        }
        Outcome::Applied(String::new())
    });
    let mut items = vec![event(0, "a", "create")];
    items.extend((1..10).map(|n| event(n, &format!("k{n}"), "create")));
    let mut opts = fast_opts(1);
    opts.retry.cap = Duration::from_secs(5);
    let summary = run_to_end(feed(items, 16), &handler, &opts, DeadLetterLog::disabled());
    assert_eq!(summary.stats.applied, 10);
    let tried = tried.into_inner().unwrap();
    assert_eq!(tried.len(), 2, "{tried:?}");
    assert!(tried[1] - tried[0] >= HINT, "retried too early: {tried:?}");
    let others = others.into_inner().unwrap();
    assert_eq!(others.len(), 9);
    assert!(
        others.iter().all(|t| *t < tried[1]),
        "the other keys waited for key a: {others:?} vs {tried:?}"
    );

    // A hint beyond the cap waits the cap.
    let tried: Mutex<Vec<Duration>> = Mutex::default();
    let started = std::time::Instant::now();
    let handler = FnHandler(|_: &str, _: &str, _: &Ev| {
        let mut t = tried.lock().unwrap();
        t.push(started.elapsed());
        if t.len() == 1 {
            Outcome::unavailable("HTTP 503", Some(Duration::from_secs(3600)))
        } else {
            Outcome::Applied(String::new())
        }
    });
    opts.retry.cap = Duration::from_millis(300);
    run_to_end(
        feed(vec![event(0, "a", "create")], 2),
        &handler,
        &opts,
        DeadLetterLog::disabled(),
    );
    let tried = tried.into_inner().unwrap();
    let waited = tried[1] - tried[0];
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}
