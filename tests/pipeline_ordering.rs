//! Per-key ordering: events with the same key are applied one at a time in stream order, while
//! different keys run in parallel; an event with several keys (a merge) is ordered with each.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::pipeline::*;
use harfanglab_intel::pipeline::{DeadLetterLog, Outcome, Shutdown, StopReason};

#[test]
fn create_update_delete_burst_on_one_key_keeps_stream_order_among_many_keys() {
    // One hot indicator gets a create/update.../delete burst interleaved with 300 events on
    // 60 other indicators.
    let mut items = Vec::new();
    let mut hot = Vec::new();
    let mut n = 0;
    for round in 0..60 {
        let op = match round {
            0 => "create",
            59 => "delete",
            _ => "update",
        };
        items.push(event(n, "indicator--hot", op));
        hot.push(n);
        n += 1;
        for k in 0..5 {
            items.push(event(
                n,
                &format!("indicator--{}", (round * 5 + k) % 60),
                "update",
            ));
            n += 1;
        }
    }
    let total = n;

    let seen: Mutex<HashMap<String, Vec<(usize, &'static str)>>> = Mutex::default();
    let running: Mutex<HashSet<String>> = Mutex::default();
    let concurrent = AtomicUsize::new(0);
    let max_concurrent = AtomicUsize::new(0);
    let handler = FnHandler(|_id: &str, key: &str, ev: &Ev| {
        assert!(
            running.lock().unwrap().insert(key.to_owned()),
            "two events of {key} ran at the same time"
        );
        let now = concurrent.fetch_add(1, Ordering::SeqCst) + 1;
        max_concurrent.fetch_max(now, Ordering::SeqCst);
        work_for(Duration::from_micros(fastrand::u64(0..1500)));
        seen.lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default()
            .push((ev.n, ev.op));
        concurrent.fetch_sub(1, Ordering::SeqCst);
        running.lock().unwrap().remove(key);
        Outcome::Applied(String::new())
    });

    let mut sink = RecordingSink::default();
    let summary = run_plain(
        feed(items, 16),
        &handler,
        &mut sink,
        &fast_opts(6),
        &Shutdown::new(),
    )
    .expect("run");

    assert_eq!(summary.reason, StopReason::SourceClosed);
    assert_eq!(summary.stats.applied, total as u64);
    let seen = seen.into_inner().unwrap();
    let hot_seen = &seen["indicator--hot"];
    assert_eq!(hot_seen.iter().map(|(n, _)| *n).collect::<Vec<_>>(), hot);
    assert_eq!(hot_seen.first().map(|e| e.1), Some("create"));
    assert_eq!(hot_seen.last().map(|e| e.1), Some("delete"));
    for (key, events) in &seen {
        assert!(
            events.windows(2).all(|w| w[0].0 < w[1].0),
            "{key} out of order: {events:?}"
        );
    }
    assert_eq!(seen.values().map(Vec::len).sum::<usize>(), total);
    assert!(
        max_concurrent.load(Ordering::SeqCst) > 1,
        "different keys never ran in parallel"
    );
    assert_eq!(summary.watermark, Some(id(total - 1)));
}

#[test]
fn a_slow_key_does_not_block_other_keys() {
    // Head-of-line check: key "slow" is stuck until every other event has been handled. With
    // hash sharding, keys sharing its worker would wait; with per-key queues they must not.
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    let others_done = AtomicUsize::new(0);
    let mut items = vec![event(0, "slow", "create"), event(1, "slow", "update")];
    for n in 2..200 {
        items.push(event(n, &format!("k{n}"), "create"));
    }
    let handler = FnHandler(|_id: &str, key: &str, ev: &Ev| {
        if key == "slow" && ev.n == 0 {
            release_rx
                .recv_timeout(Duration::from_secs(20))
                .expect("other keys were blocked behind the slow key");
        } else if key != "slow" && others_done.fetch_add(1, Ordering::SeqCst) + 1 == 198 {
            let _ = release_tx.send(());
        }
        Outcome::Applied(String::new())
    });
    let summary = run_to_end(
        feed(items, 8),
        &handler,
        &crate::support::pipeline::fast_opts(2),
        DeadLetterLog::disabled(),
    );
    assert_eq!(summary.stats.applied, 200);
}

#[test]
fn a_multi_key_event_runs_after_and_before_the_events_of_each_of_its_keys() {
    // A merge of s1 and s2 into t (event 3), between events of each, among unrelated events;
    // its first attempt fails and is retried: it keeps all its keys meanwhile.
    let mut items = vec![
        event(0, "s1", "update"),
        event(1, "t", "update"),
        event(2, "s2", "update"),
        multi_key_event(3, "t", &["s1", "s2"], "merge"),
        event(4, "s2", "delete"),
        event(5, "s1", "delete"),
        event(6, "t", "update"),
    ];
    for n in 7..60 {
        items.push(event(n, &format!("k{n}"), "create"));
    }
    let keys_of = |n: usize| -> Vec<&'static str> {
        match n {
            0 | 5 => vec!["s1"],
            1 | 6 => vec!["t"],
            2 | 4 => vec!["s2"],
            3 => vec!["t", "s1", "s2"],
            _ => vec![],
        }
    };
    let order: Mutex<Vec<usize>> = Mutex::default();
    let running: Mutex<HashSet<&'static str>> = Mutex::default();
    let merge_attempts = AtomicUsize::new(0);
    let handler = FnHandler(|_id: &str, _key: &str, ev: &Ev| {
        for k in keys_of(ev.n) {
            assert!(
                running.lock().unwrap().insert(k),
                "event {} ran while another event of {k} was running",
                ev.n
            );
        }
        // The events the merge waits for are slow, so it would overtake them if it could.
        if ev.n < 3 {
            work_for(Duration::from_millis(30));
        }
        let outcome = if ev.n == 3 && merge_attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            Outcome::retry("HarfangLab 503")
        } else {
            order.lock().unwrap().push(ev.n);
            Outcome::Applied(String::new())
        };
        for k in keys_of(ev.n) {
            running.lock().unwrap().remove(k);
        }
        outcome
    });
    let summary = run_plain(
        feed(items, 8),
        &handler,
        &mut RecordingSink::default(),
        &fast_opts(4),
        &Shutdown::new(),
    )
    .expect("run");
    assert_eq!(summary.stats.applied, 60);
    assert_eq!(merge_attempts.load(Ordering::SeqCst), 2);
    let order = order.into_inner().unwrap();
    let at = |n: usize| order.iter().position(|&m| m == n).expect("applied");
    for before in [0, 1, 2] {
        assert!(at(before) < at(3), "{before} after the merge: {order:?}");
    }
    for after in [4, 5, 6] {
        assert!(at(3) < at(after), "{after} before the merge: {order:?}");
    }
    assert_eq!(summary.watermark, Some(id(59)));
}
