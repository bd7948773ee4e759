//! Graceful shutdown and backpressure: a triggered shutdown stops reading, drains within the
//! deadline, abandons the rest without checkpointing it; retry waits end at once; a slow handler
//! keeps the number of buffered items bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::pipeline::*;
use harfanglab_intel::RetryPolicy;
use harfanglab_intel::pipeline::{
    self, DeadLetterLog, Input, Outcome, PipelineHooks, Shutdown, StatsSnapshot, StopReason,
};

/// An endless source: sends events (10 keys) until the receiver is dropped or `stop` fires.
fn endless(shutdown: Shutdown) -> crossbeam_channel::Receiver<Input<Ev>> {
    let (tx, rx) = crossbeam_channel::bounded(16);
    std::thread::spawn(move || {
        for n in 0.. {
            if shutdown.is_triggered()
                || tx
                    .send(event(n, &format!("k{}", n % 10), "update"))
                    .is_err()
            {
                return;
            }
        }
    });
    rx
}

const MAX_EVENTS: usize = 1 << 20;

fn done_flags() -> Arc<Vec<AtomicBool>> {
    Arc::new((0..MAX_EVENTS).map(|_| AtomicBool::new(false)).collect())
}

/// A sink that fails the test when a watermark passes an event whose handler has not finished.
fn finished_prefix_sink(done: &Arc<Vec<AtomicBool>>) -> RecordingSink {
    let check = done.clone();
    RecordingSink {
        check: Some(Box::new(move |w: &str| {
            let p = pos(w);
            assert!(
                (0..=p).all(|n| check[n].load(Ordering::SeqCst)),
                "{w} passes unfinished work"
            );
        })),
        ..RecordingSink::default()
    }
}

#[test]
fn shutdown_during_a_busy_stream_drains_and_checkpoints_only_finished_work() {
    let shutdown = Shutdown::new();
    let done = done_flags();
    let handled = AtomicUsize::new(0);
    let handler = {
        let (done, shutdown) = (done.clone(), shutdown.clone());
        FnHandler(move |_: &str, _: &str, ev: &Ev| {
            work_for(Duration::from_millis(2));
            done[ev.n].store(true, Ordering::SeqCst);
            if handled.fetch_add(1, Ordering::SeqCst) == 100 {
                shutdown.trigger();
            }
            Outcome::Applied(String::new())
        })
    };
    let mut sink = finished_prefix_sink(&done);
    let mut opts = fast_opts(4);
    opts.shutdown_deadline = Duration::from_secs(10);
    let summary = run_plain(
        endless(shutdown.clone()),
        &handler,
        &mut sink,
        &opts,
        &shutdown,
    )
    .expect("run");
    assert_eq!(summary.reason, StopReason::Shutdown);
    // Everything read was drained well within the deadline: nothing abandoned, and the last
    // save is exactly the last event read.
    assert_eq!(summary.stats.abandoned, 0);
    assert_eq!(summary.stats.applied, summary.stats.received);
    let last = summary.watermark.expect("watermark");
    assert_eq!(pos(&last) as u64 + 1, summary.stats.received);
    assert!(summary.elapsed < Duration::from_secs(10));
}

#[test]
fn shutdown_deadline_abandons_unfinished_events_without_checkpointing_them() {
    let shutdown = Shutdown::new();
    let done = done_flags();
    let started = AtomicUsize::new(0);
    let handler = {
        let (done, shutdown) = (done.clone(), shutdown.clone());
        FnHandler(move |_: &str, _: &str, ev: &Ev| {
            if started.fetch_add(1, Ordering::SeqCst) == 8 {
                shutdown.trigger();
            }
            work_for(Duration::from_millis(100));
            done[ev.n].store(true, Ordering::SeqCst);
            Outcome::Applied(String::new())
        })
    };
    let mut sink = finished_prefix_sink(&done);
    let mut opts = fast_opts(2);
    opts.queue_per_worker = 32;
    opts.shutdown_deadline = Duration::from_millis(300);
    let t0 = Instant::now();
    let summary = run_plain(
        endless(shutdown.clone()),
        &handler,
        &mut sink,
        &opts,
        &shutdown,
    )
    .expect("run");
    // Deadline (0.3 s) + at most one running handler call (0.1 s) + slack for a loaded CI box.
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert!(summary.stats.abandoned > 0, "{:?}", summary.stats);
    assert_eq!(
        summary.stats.applied + summary.stats.abandoned,
        summary.stats.received,
        "{:?}",
        summary.stats
    );
    if let Some(w) = &summary.watermark {
        assert!((pos(w) as u64) < summary.stats.received);
    }
}

#[test]
fn retry_wait_ends_at_once_on_shutdown() {
    let shutdown = Shutdown::new();
    let handler = {
        let shutdown = shutdown.clone();
        FnHandler(move |_: &str, _: &str, _: &Ev| {
            shutdown.trigger();
            Outcome::retry("HTTP 503")
        })
    };
    let mut opts = fast_opts(1);
    opts.retry = RetryPolicy {
        max_retries: 9,
        base: Duration::from_secs(600),
        cap: Duration::from_secs(600),
    };
    let (tx, source) = crossbeam_channel::bounded(4);
    tx.send(event(0, "a", "create")).unwrap();
    tx.send(event(1, "a", "update")).unwrap();
    let t0 = Instant::now();
    let summary = run_plain(
        source,
        &handler,
        &mut RecordingSink::default(),
        &opts,
        &shutdown,
    )
    .expect("run");
    drop(tx);
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "waited out the backoff"
    );
    assert_eq!(summary.stats.abandoned, 2);
    assert_eq!(summary.watermark, None);
}

#[test]
fn closed_source_drains_everything_including_pending_retries() {
    let failed_once = AtomicBool::new(false);
    let handler = FnHandler(|_: &str, _: &str, ev: &Ev| {
        if ev.n == 3 && !failed_once.swap(true, Ordering::SeqCst) {
            return Outcome::retry("connection reset");
        }
        Outcome::Applied(String::new())
    });
    let items: Vec<Input<Ev>> = (0..10)
        .map(|n| event(n, &format!("k{n}"), "create"))
        .collect();
    let summary = run_to_end(
        feed(items, 4),
        &handler,
        &fast_opts(2),
        DeadLetterLog::disabled(),
    );
    assert_eq!(summary.reason, StopReason::SourceClosed);
    assert_eq!(summary.stats.applied, 10);
    assert_eq!(summary.stats.retries, 1);
    assert_eq!(summary.watermark, Some(id(9)));
}

#[test]
fn slow_handler_with_fast_source_keeps_buffered_items_bounded() {
    const SOURCE_CAP: usize = 8;
    const EVENTS: usize = 400;
    let sent = Arc::new(AtomicUsize::new(0));
    let finished = AtomicUsize::new(0);
    let max_buffered = AtomicUsize::new(0);
    let (tx, source) = crossbeam_channel::bounded(SOURCE_CAP);
    let feeder = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            for n in 0..EVENTS {
                tx.send(event(n, &format!("k{n}"), "create")).unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let mut opts = fast_opts(2);
    opts.queue_per_worker = 4;
    let cap = opts.max_in_flight();
    let handler = FnHandler(|_: &str, _: &str, _: &Ev| {
        let buffered = sent.load(Ordering::SeqCst) - finished.load(Ordering::SeqCst);
        max_buffered.fetch_max(buffered, Ordering::SeqCst);
        work_for(Duration::from_micros(500));
        finished.fetch_add(1, Ordering::SeqCst);
        Outcome::Applied(String::new())
    });
    /// Highest in-flight count and busy-worker gauge seen by the tick hook.
    struct MaxInFlight(u64, u64);
    impl PipelineHooks for MaxInFlight {
        fn tick(&mut self, stats: &StatsSnapshot) {
            self.0 = self.0.max(stats.in_flight);
            self.1 = self.1.max(stats.busy_workers);
        }
    }
    let mut hooks = MaxInFlight(0, 0);
    opts.tick_every = Duration::from_millis(1);
    let summary = pipeline::run(
        source,
        &handler,
        &mut RecordingSink::default(),
        &mut hooks,
        &opts,
        &Shutdown::new(),
        DeadLetterLog::disabled(),
    )
    .expect("run");
    feeder.join().unwrap();
    assert_eq!(summary.stats.applied, EVENTS as u64);
    // Items between the producer and the end of a handler: the source channel, the owner's
    // in-flight cap, and the one item the producer may have counted late.
    let max = max_buffered.load(Ordering::SeqCst);
    assert!(
        max <= SOURCE_CAP + cap + 1,
        "buffered {max} > {}",
        SOURCE_CAP + cap + 1
    );
    assert!(hooks.0 <= cap as u64, "in flight {} > cap {cap}", hooks.0);
    assert!(hooks.0 > 0, "tick hook never ran");
    assert!(
        (1..=opts.workers as u64).contains(&hooks.1),
        "busy workers gauge {} outside 1..={}",
        hooks.1,
        opts.workers
    );
}
