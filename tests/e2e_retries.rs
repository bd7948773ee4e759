//! End to end retries (README "Failures and retries"), the real binary against both simulators:
//! a throttled indicator waits for its `Retry-After` in the pipeline owner's timer heap, not in
//! a worker (with one worker, the other indicators are applied meanwhile), and is not tried
//! again before the server's hint; a HarfangLab outage (connections closed, then 503) longer
//! than any event's attempt budget dead-letters nothing, and every event applies once it ends.

use crate::support::e2e::{
    CONNECTOR_ID, World, create_ip, ip_for, read_checkpoint, snapshot, wait_until,
};
use harfanglab_intel::compare_event_ids;
use harfanglab_intel::sim::harfanglab::Faults;
use std::cmp::Ordering;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The dead-letter records written so far (one JSON line each).
fn dead_letters(world: &World) -> Vec<String> {
    let path = world
        .state
        .path()
        .join(format!("{CONNECTOR_ID}.dead-letters.jsonl"));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(str::to_owned).collect()
}

fn assert_no_dead_letters(world: &World, when: &str) {
    let records = dead_letters(world);
    assert!(
        records.is_empty(),
        "{} events dead-lettered {when}, the first: {}",
        records.len(),
        records[0]
    );
}

#[test]
fn a_throttled_indicator_holds_no_worker_and_waits_for_its_retry_after() {
    const RETRY_AFTER: Duration = Duration::from_secs(4);
    let throttled_ip = "10.77.0.1";
    let mut scenario = vec![create_ip(1, throttled_ip, 70)];
    for n in 2..=6 {
        scenario.push(create_ip(n, &ip_for(n), 70));
    }
    let faults = Faults {
        throttle_matching: Some(throttled_ip.into()),
        retry_after_secs: Some(RETRY_AFTER.as_secs()),
        ..Faults::default()
    };
    let world = World::start(scenario, faults, 3);
    let last = world.last_event_id();
    // One worker: had the throttled event waited in it, nothing else could run meanwhile. The
    // backoff cap is above the hint, so the hint is what the wait honours.
    let opts = world
        .opts()
        .workers(1)
        .env("HARFANGLAB_INTEL_RETRY_BACKOFF_MAX", "10");
    let mut c = world.spawn(&opts);
    let others_applied = || {
        let s = snapshot(&world.hl);
        (2..=6).all(|n| s.is_live("ip_both", &ip_for(n)))
    };
    wait_until(
        &mut c,
        "the other indicators applied",
        TIMEOUT,
        others_applied,
    );
    let throttled = world.hl.throttled_at();
    let first = *throttled
        .first()
        .expect("the throttled indicator was tried first");
    let others_done = first.elapsed();
    assert!(
        others_done < RETRY_AFTER,
        "the other indicators waited for the throttled one ({others_done:?} after its 429)"
    );
    assert_eq!(throttled.len(), 1, "retried before its Retry-After");
    // The throttling ends: any attempt from now on succeeds, so the time the IOC appears is
    // the time of the retry.
    world.hl.set_faults(Faults::default());
    wait_until(&mut c, "the throttled indicator applied", TIMEOUT, || {
        snapshot(&world.hl).is_live("ip_both", throttled_ip)
    });
    let retried_after = first.elapsed();
    assert!(
        retried_after >= RETRY_AFTER,
        "retried {retried_after:?} after a Retry-After of {RETRY_AFTER:?}"
    );
    assert!(
        retried_after < RETRY_AFTER + Duration::from_secs(5),
        "{retried_after:?}"
    );
    world.wait_checkpoint(&mut c, &last, TIMEOUT);
    c.terminate_ok(Duration::from_secs(15));
    assert_no_dead_letters(&world, "in the end");
    assert_eq!(world.hl.throttled_at().len(), 1);
}

#[test]
fn an_outage_longer_than_the_attempt_budget_dead_letters_nothing() {
    let world = World::start(vec![create_ip(1, &ip_for(1), 70)], Faults::default(), 5);
    // Three attempts, 200 ms apart at most: if outage failures counted, every event would be
    // dead-lettered within a second.
    let opts = world.opts().env("HARFANGLAB_INTEL_MAX_RETRIES", "2");
    let mut c = world.spawn(&opts);
    let before = world.last_event_id();
    world.wait_checkpoint(&mut c, &before, TIMEOUT);

    // HarfangLab goes away (connections closed without an answer), then answers 503.
    world.hl.set_faults(Faults {
        hangup: true,
        ..Faults::default()
    });
    let events = 2..=30u64;
    let appended: Vec<String> = events
        .clone()
        .map(|n| {
            let ev = create_ip(n, &ip_for(n), 70);
            world.octi.append_event(&ev.event, ev.data)
        })
        .collect();
    let last = world.last_event_id();
    let requests = world.hl.total_requests();
    let outage = Instant::now();
    // Every event well past its budget of 3 attempts.
    let budget = 3 * (*events.end() - 1);
    wait_until(&mut c, "attempts during the outage", TIMEOUT, || {
        world.hl.total_requests() - requests > 3 * budget
            && outage.elapsed() > Duration::from_secs(2)
    });
    world.hl.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    let requests = world.hl.total_requests();
    wait_until(&mut c, "attempts answered 503", TIMEOUT, || {
        world.hl.total_requests() - requests > budget && outage.elapsed() > Duration::from_secs(4)
    });
    assert_no_dead_letters(&world, "during the outage");
    let held = read_checkpoint(&world.checkpoint_path()).expect("a checkpoint");
    assert_eq!(
        compare_event_ids(&held, &appended[0]),
        Ordering::Less,
        "the checkpoint {held} passed unfinished events"
    );
    assert!(
        !snapshot(&world.hl).is_live("ip_both", &ip_for(2)),
        "applied during the outage?"
    );

    // The outage ends: everything applies, nothing was lost.
    world.hl.set_faults(Faults::default());
    world.wait_checkpoint(&mut c, &last, TIMEOUT);
    c.terminate_ok(Duration::from_secs(15));
    let s = snapshot(&world.hl);
    s.assert_no_duplicates();
    for n in 1..=*events.end() {
        assert!(s.is_live("ip_both", &ip_for(n)), "indicator {n} missing");
    }
    assert_no_dead_letters(&world, "in the end");
}
