//! The demo scenario (`fixtures/demo-stream.jsonl`) through the real service over real HTTP
//! reaches exactly the HarfangLab state `fixtures/README.md` describes, object by object — also
//! when the stream drops every 7 events and when HarfangLab answers 5xx / 429 at random.
//!
//! The expected state (`demo_expected`) is written by hand from the scenario description.

mod demo_expected;

use demo_expected::{check_state, internal};
use harfanglab_intel::demo::{DemoError, DemoOptions, DemoResult, run_demo};
use harfanglab_intel::pipeline::Shutdown;
use harfanglab_intel::sim::harfanglab::Faults;
use std::time::{Duration, Instant};

fn check_counters(r: &DemoResult) {
    let c = &r.counters;
    assert_eq!(c.events, 227);
    // The malware create and the merge have nothing to do.
    assert_eq!(c.ignored, 2);
    // Snort is not handled: skipped, not failed.
    assert_eq!(c.skipped, 1);
    // demo-invalid-pattern: its create and its update are dead-lettered, nothing else.
    assert_eq!(c.failed, 2, "{:?}", r.dead_letters);
    assert_eq!(c.dead_letters, 2);
    for l in &r.dead_letters {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["key"], internal(195));
        assert!(
            v["reason"]
                .as_str()
                .unwrap()
                .contains("invalid STIX pattern")
        );
    }
    assert_eq!(c.applied, 227 - 2 - 1 - 2);
}

#[test]
fn demo_reaches_the_expected_harfanglab_state() {
    let r = run_demo(&DemoOptions::default()).expect("demo");
    check_state(&r);
    check_counters(&r);
    assert_eq!(r.summary.sessions, 1);
    // The checkpoint reached the last event.
    assert_eq!(
        r.summary.watermark.as_deref(),
        Some(r.last_event_id.as_str())
    );
    // The printed report names what it shows.
    let text = r.render();
    assert!(text.contains("HarfangLab IOC rules (178)"), "{text}");
    assert!(text.contains("demo-shared-ioc-b"));
}

#[test]
fn demo_state_survives_stream_drops_every_7_events() {
    let r = run_demo(&DemoOptions {
        drop_stream_every: Some(7),
        workers: 4,
        ..DemoOptions::default()
    })
    .expect("demo");
    check_state(&r);
    // 227 events and heartbeats, a drop every 7: dozens of reconnects really happened.
    assert!(r.counters.stream_connections > 20, "{:?}", r.counters);
    // A replayed event may be handled twice; none failed beyond the invalid one.
    assert!(r.dead_letters.iter().all(|l| l.contains(&internal(195))));
}

#[test]
fn demo_state_survives_harfanglab_5xx_and_429() {
    let r = run_demo(&DemoOptions {
        harfanglab_faults: Faults {
            error_rate: 0.2,
            throttle_rate: 0.1,
            ..Faults::default()
        },
        timeout: Duration::from_secs(120),
        ..DemoOptions::default()
    })
    .expect("demo");
    check_state(&r);
    check_counters(&r);
}

#[test]
fn a_stop_signal_stops_the_demo_promptly() {
    let stop = Shutdown::new();
    let started = Instant::now();
    let trigger = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            stop.trigger();
        })
    };
    // 50 ms per HarfangLab call: the whole scenario would take several seconds.
    let result = run_demo(&DemoOptions {
        harfanglab_faults: Faults {
            latency: Duration::from_millis(50),
            ..Faults::default()
        },
        stop,
        ..DemoOptions::default()
    });
    trigger.join().unwrap();
    let elapsed = started.elapsed();
    match result {
        Err(DemoError::Interrupted { last, .. }) => assert!(!last.is_empty()),
        other => panic!("expected an interrupted demo, got {other:?}"),
    }
    assert!(
        elapsed < Duration::from_secs(3),
        "stopped after {elapsed:?}"
    );
}
