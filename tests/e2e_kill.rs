//! End to end under crashes: the real connector process is killed with SIGKILL at seeded random
//! points of its work (after a random number of HarfangLab writes) and restarted, several times;
//! the last run finishes the stream. The final HarfangLab state must equal the clean run's:
//! nothing lost, nothing duplicated, holders exact.

use crate::support::e2e::{POLL, World, assert_same_state, demo_scenario};
use harfanglab_intel::compare_event_ids;
use harfanglab_intel::sim::harfanglab::Faults;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn sigkill_at_random_points_and_restart_ends_in_the_clean_state() {
    // The clean run and the crashing run go side by side (independent worlds).
    let clean = crate::support::e2e::Background::spawn(|| {
        let world = World::demo();
        world.run_to_end(&world.opts(), TIMEOUT)
    });

    // HarfangLab latency and few workers spread the work over a few seconds (the checkpoint is
    // saved about once a second), so kills land mid-flight and mid-stream. (20 ms: a new IOC
    // costs one request since the inventory, so 10 ms ran the stream out before the kills.)
    let faults = Faults {
        latency: Duration::from_millis(20),
        ..Faults::default()
    };
    let world = World::start(demo_scenario(), faults, 3);
    let last = world.last_event_id();
    let mut rng = fastrand::Rng::with_seed(0x05EE_DE2E);
    let mut kills = 0;
    let mut positions = Vec::new();
    let ids = world.octi.event_ids();
    let index_of = |pos: &Option<String>| {
        pos.as_ref()
            .and_then(|p| ids.iter().position(|id| id == p))
            .map_or(0, |i| i + 1)
    };
    let mut finished = false;
    while kills < 4 && !finished {
        let mut c = world.spawn(&world.opts().workers(2));
        // Alternate two kinds of random points: after a random number of new HarfangLab writes
        // (mid-request, before any checkpoint save), and once the saved checkpoint has moved a
        // random distance (so the next run resumes mid-stream, not from the start).
        let by_writes = kills % 2 == 0;
        let writes_target = world.hl.writes() + rng.u64(5..40);
        let from = index_of(&world.checkpoint());
        let cp_target = ids[(from + rng.usize(10..60)).min(ids.len() - 10)].clone();
        let reached = || {
            if by_writes {
                world.hl.writes() >= writes_target
            } else {
                world
                    .checkpoint()
                    .is_some_and(|p| compare_event_ids(&p, &cp_target).is_ge())
            }
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reached() {
            if world.checkpoint().as_deref() == Some(last.as_str()) {
                // The whole stream is done: no work left to interrupt.
                finished = true;
                break;
            }
            if let Some(status) = c.try_wait() {
                panic!(
                    "connector exited ({status}) on its own\n{}",
                    c.stderr_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no progress (by_writes={by_writes})\n{}",
                c.stderr_tail()
            );
            std::thread::sleep(Duration::from_millis(rng.u64(1..5)).min(POLL));
        }
        if world.checkpoint().as_deref() == Some(last.as_str()) {
            // The target was reached together with the end of the stream (one checkpoint save
            // covered both): a kill now would not be in the middle of any work.
            finished = true;
        }
        if !finished {
            c.kill();
            kills += 1;
            positions.push((world.hl.writes(), world.checkpoint()));
        }
    }
    assert!(
        kills >= 3,
        "the stream finished after {kills} kills: {positions:?}"
    );

    eprintln!("SIGKILLs at (HarfangLab writes, checkpoint): {positions:?}");
    let got = world.run_to_end(&world.opts(), TIMEOUT);
    got.assert_no_duplicates();
    let clean = clean.join();
    assert_same_state(
        &clean,
        &got,
        &format!("after {kills} SIGKILLs at {positions:?}"),
    );
}
