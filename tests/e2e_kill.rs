//! End to end under crashes: the real connector process is killed with SIGKILL at seeded random
//! points of its work (after a random number of HarfangLab writes) and restarted, several times;
//! the last run finishes the stream. The final HarfangLab state must equal the clean run's:
//! nothing lost, nothing duplicated, holders exact.

mod e2e_support;

use e2e_support::{POLL, World, assert_same_state, demo_scenario};
use harfanglab_intel::sim::harfanglab::Faults;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn sigkill_at_random_points_and_restart_ends_in_the_clean_state() {
    // The clean run and the crashing run go side by side (independent worlds).
    let clean = e2e_support::Background::spawn(|| {
        let world = World::demo();
        world.run_to_end(&world.opts(), TIMEOUT)
    });

    // A little HarfangLab latency so work is spread over time and a kill lands mid-flight.
    let faults = Faults {
        latency: Duration::from_millis(2),
        ..Faults::default()
    };
    let world = World::start(demo_scenario(), faults, 3);
    let last = world.last_event_id();
    let mut rng = fastrand::Rng::with_seed(0x05EE_DE2E);
    let mut kills = 0;
    let mut positions = Vec::new();
    let mut finished = false;
    while kills < 4 && !finished {
        let mut c = world.spawn(&world.opts());
        let target = world.hl.writes() + rng.u64(5..40);
        let deadline = Instant::now() + Duration::from_secs(30);
        while world.hl.writes() < target {
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
                "no progress to {target} writes\n{}",
                c.stderr_tail()
            );
            std::thread::sleep(Duration::from_millis(rng.u64(1..5)).min(POLL));
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
