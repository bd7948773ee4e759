//! End to end under faults: the demo scenario (`fixtures/demo-stream.jsonl`) run by the real
//! binary against both simulators reaches exactly the clean run's HarfangLab state when the stream
//! is cut every 7 events, when HarfangLab answers 5xx/429 on a seeded share of requests, and both.
//! The clean state itself is checked on the key facts `fixtures/README.md` lists.

use crate::support::e2e::{Snapshot, World, assert_same_state, demo_scenario};
use harfanglab_intel::sim::harfanglab::Faults;
use harfanglab_intel::sim::opencti::ScenarioEvent;
use std::sync::OnceLock;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Internal id of the demo indicator named `name` (from its create event).
fn demo_internal_id(scenario: &[ScenarioEvent], name: &str) -> String {
    scenario
        .iter()
        .find(|e| e.event == "create" && e.data["data"]["name"] == name)
        .and_then(|e| {
            e.data["data"]["extensions"]["extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba"]
                ["id"]
                .as_str()
        })
        .unwrap_or_else(|| panic!("no create of {name} in the demo scenario"))
        .to_owned()
}

/// The clean run's state and HarfangLab request count, computed once for the tests of this file.
fn clean_run() -> &'static (Snapshot, u64) {
    static CLEAN: OnceLock<(Snapshot, u64)> = OnceLock::new();
    CLEAN.get_or_init(|| {
        let world = World::demo();
        let state = world.run_to_end(&world.opts(), TIMEOUT);
        (state, world.hl.total_requests())
    })
}

fn clean_state() -> &'static Snapshot {
    &clean_run().0
}

#[test]
fn clean_demo_run_reaches_the_documented_state() {
    let s = clean_state();
    let scenario = demo_scenario();
    s.assert_no_duplicates();
    assert!(s.iocs.len() > 150, "too few IOC rules: {}", s.iocs.len());

    // Shared IOC: `a` was deleted, `b` still holds the domain (and only b).
    let b = demo_internal_id(&scenario, "demo-shared-ioc-b");
    assert!(
        s.is_live("domain_name", "shared.malicious-demo.example"),
        "{s:#?}"
    );
    assert_eq!(
        s.holder_ids("domain_name", "shared.malicious-demo.example"),
        vec![b]
    );
    assert!(s.is_live("ip_both", "192.0.2.222"));

    // Pattern change: the old value is released, the new one is held.
    assert!(
        !s.is_live("ip_both", "198.51.100.150"),
        "{:?}",
        s.ioc("ip_both", "198.51.100.150")
    );
    assert!(s.is_live("ip_both", "198.51.100.151"));
    let changed = demo_internal_id(&scenario, "demo-pattern-change");
    assert_eq!(s.holder_ids("ip_both", "198.51.100.151"), vec![changed]);

    // Revoked indicator: its IOC is gone (remove_indicator=true in the harness).
    assert!(
        s.ioc("url", "http://revoked.malicious-demo.example/")
            .is_none()
    );
    // Deleted indicators: rules gone.
    assert!(s.ioc("ip_both", "198.51.100.1").is_none());
    assert!(
        s.ioc("domain_name", "c2-1.malicious-demo.example")
            .is_none()
    );
    assert!(
        s.ioc("ip_both", "203.0.113.11").is_none(),
        "delete carrying an update payload"
    );
    assert!(s.ioc("hash", "7019384980BD204D9A94AE6FC00D9741").is_none());
    // Score-only update to 95 reached the holder.
    assert!(
        s.ioc("ip_both", "198.51.100.4")
            .is_some_and(|i| i.holders.iter().any(|h| h.contains("score=95"))),
        "{:?}",
        s.ioc("ip_both", "198.51.100.4")
    );
    // Based-on: the observable beyond the pattern that was unlinked is released, the domain kept.
    assert!(s.is_live("domain_name", "based-on-extra.malicious-demo.example"));
    assert!(!s.is_live("ip_both", "198.51.100.161"));
    assert!(s.is_live("ip_both", "198.51.100.160"));

    // 8 Sigma rules and 8 YARA rules created, one of each deleted.
    assert_eq!(s.sigma.len(), 7, "{:#?}", s.sigma);
    assert_eq!(s.yara.len(), 7, "{:#?}", s.yara);
    assert!(s.sigma.iter().chain(&s.yara).all(|r| r.enabled));
    assert!(!s.sigma.iter().any(|r| r.name.contains("process 0")));
    assert!(!s.yara.iter().any(|r| r.name.contains("Malware_0")));
}

fn hl_faults() -> Faults {
    Faults {
        error_rate: 0.20,
        throttle_rate: 0.10,
        retry_after_secs: Some(0),
        ..Faults::default()
    }
}

fn faulted_run(drop_every: Option<usize>, faults: Faults, what: &str) {
    let world = World::start(demo_scenario(), faults.clone(), 7);
    world.octi.set_drop_every(drop_every);
    let got = world.run_to_end(&world.opts(), TIMEOUT);
    got.assert_no_duplicates();
    assert_same_state(clean_state(), &got, what);
    if drop_every.is_some() {
        let reconnects = world.octi.stream_requests().len();
        assert!(
            reconnects >= 227 / 7,
            "only {reconnects} stream connections"
        );
    }
    if faults != Faults::default() {
        // Retries of the ~30% faulted answers show up as extra requests.
        let total = world.hl.total_requests() as f64;
        let clean = clean_run().1 as f64;
        assert!(
            total > clean * 1.15,
            "faults did not bite: {total} requests vs {clean} in the clean run"
        );
    }
}

#[test]
fn stream_dropped_every_7_events_reaches_the_clean_state() {
    faulted_run(Some(7), Faults::default(), "stream dropped every 7 events");
}

#[test]
fn harfanglab_5xx_and_429_reach_the_clean_state() {
    faulted_run(None, hl_faults(), "HarfangLab 20% 5xx + 10% 429");
}

#[test]
fn dropped_stream_and_harfanglab_errors_together_reach_the_clean_state() {
    faulted_run(Some(7), hl_faults(), "stream drops + HarfangLab errors");
}
