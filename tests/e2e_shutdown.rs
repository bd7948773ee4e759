//! End to end graceful shutdown: SIGTERM while the connector is busy (HarfangLab answering in
//! 20 ms, hundreds of events queued) exits 0 within the shutdown deadline, and the checkpoint it
//! saved is exact: every event at or before it is reflected in HarfangLab, and a restart finishes
//! the stream into the same state as a clean run.

use crate::support::e2e::{World, bulk_creates, ip_for, update_ip};
use harfanglab_intel::sim::harfanglab::Faults;
use harfanglab_intel::sim::opencti::ScenarioEvent;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const CREATES: u64 = 500;
const UPDATES: u64 = 100;
/// Shorter than the time the in-flight events need (256 × ~40 ms / 4 workers): some work is
/// abandoned at the deadline, and the checkpoint must still not cover it.
const SHUTDOWN_TIMEOUT_SECS: u64 = 2;

fn new_ip(n: u64) -> String {
    ip_for(100_000 + n)
}

/// 500 creates, then pattern updates of the first 100 indicators.
fn scenario() -> Vec<ScenarioEvent> {
    let mut s = bulk_creates(0, CREATES);
    for n in 0..UPDATES {
        s.push(update_ip(n, 0, &ip_for(n), &new_ip(n), false));
    }
    s
}

/// Indicator → its value after applying the first `count` scenario events.
fn model_after(count: usize) -> BTreeMap<u64, String> {
    let mut m = BTreeMap::new();
    for i in 0..count as u64 {
        if i < CREATES {
            m.insert(i, ip_for(i));
        } else {
            m.insert(i - CREATES, new_ip(i - CREATES));
        }
    }
    m
}

#[test]
fn sigterm_while_busy_exits_0_in_time_with_an_exact_checkpoint() {
    let clean = crate::support::e2e::Background::spawn(|| {
        let world = World::start(scenario(), Faults::default(), 5);
        world.run_to_end(&world.opts().workers(16), Duration::from_secs(60))
    });

    let faults = Faults {
        latency: Duration::from_millis(20),
        ..Faults::default()
    };
    let world = World::start(scenario(), faults, 5);
    let ids = world.octi.event_ids();
    let opts = world.opts().workers(4).env(
        "HARFANGLAB_INTEL_SHUTDOWN_TIMEOUT",
        &SHUTDOWN_TIMEOUT_SECS.to_string(),
    );
    let mut c = world.spawn(&opts);

    // Busy: a checkpoint was saved and work is flowing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.checkpoint().is_none() || world.hl.writes() < 60 {
        assert!(
            c.try_wait().is_none(),
            "connector exited\n{}",
            c.stderr_tail()
        );
        assert!(
            Instant::now() < deadline,
            "no progress\n{}",
            c.stderr_tail()
        );
        std::thread::sleep(crate::support::e2e::POLL);
    }
    let took = c.terminate_ok(Duration::from_secs(SHUTDOWN_TIMEOUT_SECS + 3));
    assert!(
        took <= Duration::from_secs(SHUTDOWN_TIMEOUT_SECS + 2),
        "shutdown took {took:?}"
    );

    let saved = world.checkpoint().expect("a checkpoint after SIGTERM");
    let pos = ids
        .iter()
        .position(|id| *id == saved)
        .unwrap_or_else(|| panic!("checkpoint {saved} is not an event id"));
    assert!(
        pos + 1 < ids.len(),
        "the stream was already finished at SIGTERM: the test did not stop a busy connector"
    );
    // Nothing at or before the checkpoint is missing from HarfangLab.
    let s = crate::support::e2e::snapshot(&world.hl);
    let missing: Vec<(u64, String, Option<&crate::support::e2e::IocState>)> = model_after(pos + 1)
        .into_iter()
        // The handler re-reads each indicator from OpenCTI (its current state), and the stream
        // runs ahead of the workers, so a create may already carry a later pattern: the value at
        // the checkpoint or the indicator's final value both prove the event was applied.
        .filter(|(n, ip)| {
            !s.is_live("ip_both", ip) && (*n >= UPDATES || !s.is_live("ip_both", &new_ip(*n)))
        })
        .map(|(n, ip)| {
            let rule = s.ioc("ip_both", &ip);
            (n, ip, rule)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "checkpoint {saved} (event #{pos}) is past unfinished work: {} indicator(s) missing from HarfangLab: {missing:?}\n{}",
        missing.len(),
        c.stderr_tail()
    );
    // ... and no update at or before it left its old value behind.
    for n in 0..(pos as u64 + 1).saturating_sub(CREATES) {
        assert!(
            s.ioc("ip_both", &ip_for(n)).is_none(),
            "checkpoint {saved}: update of indicator {n} not applied"
        );
    }

    // Restart without latency and finish: same state as the clean run.
    world.hl.set_faults(Faults::default());
    let got = world.run_to_end(&world.opts().workers(16), Duration::from_secs(60));
    got.assert_no_duplicates();
    let clean = clean.join();
    crate::support::e2e::assert_same_state(&clean, &got, "SIGTERM + restart");
    assert_eq!(clean.iocs.len() as u64, CREATES);
}
