//! The demo scenario (`fixtures/demo-stream.jsonl`) through the real service over real HTTP
//! reaches exactly the HarfangLab state `fixtures/README.md` describes, object by object — also
//! when the stream drops every 7 events and when HarfangLab answers 5xx / 429 at random.
//!
//! The expected state (`demo_expected`) is written by hand from the scenario description.

use crate::support::demo_expected::{check_state, internal};
use harfanglab_intel::pipeline::Shutdown;
use harfanglab_intel::sim::harfanglab::Faults;
use harfanglab_intel::{DemoError, DemoOptions, DemoResult, run_demo};
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
    check_report(&r.render());
}

/// The line of the report that starts with `prefix` (after its indentation), joined with its
/// wrapped continuation lines.
fn item(text: &str, prefix: &str) -> String {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(prefix));
    let Some(first) = lines.next() else {
        panic!("no `{prefix}` line in:\n{text}")
    };
    let mut joined = first.trim().to_owned();
    for l in lines.take_while(|l| l.starts_with("    ") && !l.trim_start().starts_with("- ")) {
        joined.push(' ');
        joined.push_str(l.trim());
    }
    joined
}

/// The report tells the story first, then the summary, then the lists (fixtures/README.md
/// describes the scenario this checks against).
fn check_report(text: &str) {
    let story = text
        .find("What the scenario exercises (227 events):")
        .expect(text);
    let summary = text.find("Summary: 227 events").expect(text);
    let lists = text.find("HarfangLab IOC rules (178):").expect(text);
    assert!(story < summary && summary < lists, "{text}");
    assert_eq!(
        item(text, "- shared IOC:"),
        "- shared IOC: domain_name shared.malicious-demo.example is in the patterns of \
         demo-shared-ioc-a and demo-shared-ioc-b; demo-shared-ioc-a deleted, the rule stays, held \
         by demo-shared-ioc-b (a rule goes only when no indicator wants it any more)"
    );
    let change = item(text, "- pattern change: demo-pattern-change");
    assert!(
        change.ends_with("ip_both 198.51.100.150 gone (released) and ip_both 198.51.100.151 held"),
        "{change}"
    );
    assert!(item(text, "- revocation: demo-revoked revoked:").ends_with(" gone"));
    assert!(
        item(
            text,
            "- revocation: demo-unrevoked revoked then un-revoked:"
        )
        .ends_with("ip_both 203.0.113.151 held")
    );
    assert!(item(text, "- Sigma identity:").ends_with("8 created, 1 deleted, 7 in HarfangLab"));
    assert!(item(text, "- Yara identity:").ends_with("8 created, 1 deleted, 7 in HarfangLab"));
    let invalid = item(
        text,
        "- invalid pattern: demo-invalid-pattern (invalid STIX pattern",
    );
    assert!(
        invalid.contains("2 of its events dead-lettered"),
        "{invalid}"
    );
    assert!(item(text, "- skipped: demo-snort-rule").contains("\"snort\" is not handled"));
    assert!(
        item(text, "- ignored:").contains("malware DemoRAT (create) and malware DemoRAT (merge)")
    );
    // The words of the summary are defined where they are printed.
    assert!(item(text, "skipped      1  deliberately not applied").contains("nothing failed"));
    assert!(item(text, "ignored      2  nothing in them for HarfangLab").contains("merges"));
    assert!(item(text, "failed       2  ").contains("dead-letter file (2 lines)"));

    // The IOC list: a holder cell only where it says more than the value, in one column.
    let rows: Vec<&str> = text[lists..]
        .lines()
        .skip(2)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(rows.len(), 178);
    let header = text[lists..].lines().nth(1).unwrap();
    let holder_column = header.find("held by").unwrap();
    let mut with_holders = 0;
    for row in &rows {
        let fields: Vec<&str> = row.split_whitespace().collect();
        let (value, holders) = (fields[1], &fields[2..]);
        if holders.is_empty() {
            continue;
        }
        with_holders += 1;
        assert_eq!(row.find(holders[0]), Some(holder_column), "{row}");
        assert_ne!(holders.join(" ").to_ascii_lowercase(), value, "{row}");
    }
    // compound-0..3 (2 + 1 + 2 + 2 values), demo-shared-ioc-b (2), demo-pattern-change,
    // demo-rename-after, demo-unrevoked, demo-based-on (2): 14 rules whose holder is not named
    // after the value; the other indicators are named after their value.
    assert_eq!(
        with_holders, 14,
        "rows whose holder is not named after the value"
    );
    // Every value starts in the value column, the ten SHA-512 ones (128 hex digits) included.
    let value_column = header.find("value").unwrap();
    let mut sha512 = 0;
    for row in &rows {
        let value = row.split_whitespace().nth(1).unwrap();
        assert_eq!(row.find(value), Some(value_column), "{row}");
        sha512 += usize::from(value.len() == 128);
    }
    assert_eq!(sha512, 10);
}

#[test]
fn the_story_is_read_from_the_scenario_not_written_for_it() {
    // Another shared value, another pattern change: the report follows the scenario.
    let scenario = DemoOptions::default()
        .scenario
        .replace("shared.malicious-demo.example", "twice.example")
        .replace("198.51.100.151", "198.51.100.152");
    let r = run_demo(&DemoOptions {
        scenario,
        ..DemoOptions::default()
    })
    .expect("demo");
    let text = r.render();
    let shared = item(&text, "- shared IOC:");
    assert!(
        shared.contains("domain_name twice.example is in the patterns of"),
        "{shared}"
    );
    assert!(!text.contains("shared.malicious-demo.example"), "{text}");
    let change = item(&text, "- pattern change: demo-pattern-change");
    assert!(change.ends_with("ip_both 198.51.100.152 held"), "{change}");
}

#[test]
fn demo_state_survives_stream_drops_every_7_events() {
    let r = run_demo(&DemoOptions {
        drop_stream_every: Some(7),
        workers: Some(4),
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
