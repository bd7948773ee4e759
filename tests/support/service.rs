//! Set-up shared by the `service_*` tests: both simulators on 127.0.0.1 with ephemeral ports
//! (the simulators' default tokens, which `demo_config` uses), a fresh per-test state
//! directory, and run options with short ticks and back-offs so the tests stay quick.

use harfanglab_intel::pipeline::PipelineStats;
use harfanglab_intel::service::RunOptions;
use harfanglab_intel::sim::harfanglab::{self as hlsim, Faults, HarfangLabSim, SimConfig};
use harfanglab_intel::sim::opencti::{
    self as octisim, OpenCtiSim, OpenCtiSimConfig, ScenarioEvent,
};
use harfanglab_intel::{DEMO_SCENARIO, Notifier, compare_event_ids};
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// The demo scenario the service tests replay.
pub fn demo_scenario() -> Vec<ScenarioEvent> {
    octisim::parse_scenario(DEMO_SCENARIO).unwrap()
}

/// Start the OpenCTI simulator with `scenario` (100 ms heartbeats) and the HarfangLab simulator
/// answering every call after `latency`.
pub fn start_sims(scenario: Vec<ScenarioEvent>, latency: Duration) -> (OpenCtiSim, HarfangLabSim) {
    let octi = octisim::serve(
        "127.0.0.1:0",
        OpenCtiSimConfig {
            scenario,
            heartbeat: Duration::from_millis(100),
            ..OpenCtiSimConfig::default()
        },
    )
    .unwrap();
    let hl = hlsim::serve(
        "127.0.0.1:0",
        SimConfig {
            faults: Faults {
                latency,
                ..Faults::default()
            },
            ..SimConfig::default()
        },
    )
    .unwrap();
    (octi, hl)
}

/// A state directory path unique to this test run (not created: the service creates it).
pub fn state_dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "hli-{tag}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ))
}

/// In-process run options: no systemd, short ticks and back-offs.
pub fn run_options(stats: &PipelineStats) -> RunOptions {
    RunOptions {
        stats: stats.clone(),
        notifier: Notifier::disabled(),
        summary_every: Duration::from_secs(30),
        tick_every: Duration::from_millis(200),
        startup_backoff_max: Duration::from_millis(200),
        stream_backoff: Duration::from_millis(50),
    }
}

/// Whether a saved stream position is at or past the event id `id`.
pub fn at_or_after(pos: Option<&str>, id: &str) -> bool {
    pos.is_some_and(|p| compare_event_ids(p, id) != std::cmp::Ordering::Less)
}

/// Wait for a child process to exit; kill it and fail the test after `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
