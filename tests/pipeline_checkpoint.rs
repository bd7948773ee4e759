//! Exact checkpoints through the whole core: the saved watermark never passes an event that has
//! not finished, whatever the completion order; heartbeats move it only when nothing is in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::pipeline::*;
use harfanglab_intel::pipeline::{Input, Outcome, Shutdown};

#[test]
fn out_of_order_completions_never_let_the_watermark_pass_unfinished_work() {
    const N: usize = 400;
    let done: Arc<Vec<AtomicBool>> = Arc::new((0..N).map(|_| AtomicBool::new(false)).collect());
    let mut items = Vec::new();
    for n in 0..N {
        // Every 7th event has nothing to do (finishes at once, still in order).
        if n % 7 == 3 {
            items.push(Input::Event {
                event_id: id(n),
                key: None,
                also_keys: Vec::new(),
                payload: Ev { n, op: "x" },
            });
        } else {
            items.push(event(n, &format!("k{}", n % 40), "update"));
        }
    }
    let handler = {
        let done = done.clone();
        FnHandler(move |_id: &str, _key: &str, ev: &Ev| {
            work_for(Duration::from_micros(fastrand::u64(0..2000)));
            done[ev.n].store(true, Ordering::SeqCst);
            Outcome::Applied(String::new())
        })
    };
    let check_done = done.clone();
    let mut sink = RecordingSink {
        check: Some(Box::new(move |w: &str| {
            let p = pos(w);
            for n in (0..=p).filter(|n| n % 7 != 3) {
                assert!(
                    check_done[n].load(Ordering::SeqCst),
                    "watermark {w} saved while event {n} is unfinished"
                );
            }
        })),
        ..RecordingSink::default()
    };
    let summary = run_plain(
        feed(items, 16),
        &handler,
        &mut sink,
        &fast_opts(8),
        &Shutdown::new(),
    )
    .expect("run");
    let saves = sink.saved();
    assert!(
        saves.len() > 1,
        "expected several intermediate saves, got {saves:?}"
    );
    assert!(
        saves.windows(2).all(|w| pos(&w[0]) <= pos(&w[1])),
        "watermark moved back"
    );
    assert_eq!(saves.last(), Some(&id(N - 1)));
    assert_eq!(summary.watermark, Some(id(N - 1)));
    assert_eq!(
        summary.stats.ignored,
        (0..N).filter(|n| n % 7 == 3).count() as u64
    );
}

#[test]
fn heartbeats_while_idle_move_the_watermark() {
    let items = vec![
        Input::Heartbeat {
            event_id: "500-0".into(),
        },
        Input::Heartbeat {
            event_id: "600-0".into(),
        },
    ];
    let handler = FnHandler(|_: &str, _: &str, _: &Ev| Outcome::Applied(String::new()));
    let mut sink = RecordingSink::default();
    let summary = run_plain(
        feed(items, 4),
        &handler,
        &mut sink,
        &fast_opts(1),
        &Shutdown::new(),
    )
    .expect("run");
    assert_eq!(summary.watermark.as_deref(), Some("600-0"));
    assert_eq!(summary.stats.heartbeats, 2);
}

/// Runs event 0 (held until the owner has taken the heartbeat and `after` off the source), then
/// a heartbeat, then `after` (if any); returns every saved watermark plus whether event 0 had
/// finished at that save.
fn busy_heartbeat(after: Option<Input<Ev>>) -> Vec<(String, bool)> {
    let expect_received = if after.is_some() { 2 } else { 1 };
    let mut items = vec![
        event(0, "k0", "create"),
        Input::Heartbeat { event_id: id(50) },
    ];
    items.extend(after);
    let opts = fast_opts(2);
    let stats = opts.stats.clone();
    let first_done = Arc::new(AtomicBool::new(false));
    let handler = {
        let first_done = first_done.clone();
        FnHandler(move |_: &str, _: &str, ev: &Ev| {
            if ev.n == 0 {
                // Stay busy until the owner has seen the heartbeat (and the newer event).
                for _ in 0..2000 {
                    let s = stats.snapshot();
                    if s.heartbeats == 1 && s.received == expect_received {
                        break;
                    }
                    work_for(Duration::from_millis(5));
                }
                first_done.store(true, Ordering::SeqCst);
            }
            Outcome::Applied(String::new())
        })
    };
    let saves = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut sink = {
        let (saves, first_done) = (saves.clone(), first_done.clone());
        RecordingSink {
            check: Some(Box::new(move |w: &str| {
                saves
                    .lock()
                    .unwrap()
                    .push((w.to_owned(), first_done.load(Ordering::SeqCst)));
            })),
            ..RecordingSink::default()
        }
    };
    run_plain(feed(items, 4), &handler, &mut sink, &opts, &Shutdown::new()).expect("run");
    saves.lock().unwrap().clone()
}

#[test]
fn heartbeat_while_busy_is_applied_once_in_flight_events_finish() {
    let saves = busy_heartbeat(None);
    assert!(
        saves.iter().all(|(_, first_done)| *first_done),
        "saved before event 0: {saves:?}"
    );
    assert_eq!(saves.last().map(|s| s.0.as_str()), Some(id(50).as_str()));
}

#[test]
fn heartbeat_while_busy_is_dropped_when_a_newer_event_follows() {
    let saves = busy_heartbeat(Some(event(60, "k1", "create")));
    assert!(
        saves.iter().all(|(_, first_done)| *first_done),
        "saved before event 0: {saves:?}"
    );
    assert!(
        saves.iter().all(|(w, _)| *w != id(50)),
        "heartbeat applied: {saves:?}"
    );
    assert_eq!(saves.last().map(|s| s.0.as_str()), Some(id(60).as_str()));
}
