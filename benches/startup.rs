//! Start-up latency of the real binary: from spawning `harfanglab-intel run` to the first object
//! applied in HarfangLab (the first IOC rule the HarfangLab simulator holds), against both
//! simulators in this process on loopback, replaying the demo scenario. Also printed: spawn to
//! the stream request reaching the OpenCTI simulator (configuration, registration, HarfangLab
//! probe and source lists done). Each run uses fresh simulators and a fresh state directory.
//!
//! `cargo bench --bench startup` measures this build's binary. With `HLI_IMAGE_ROOTFS` (the
//! root filesystem `scripts/build-image.sh --export DIR` writes) it runs the image's static
//! binary the way the image does: `chroot --userspec=65532:65532 DIR /harfanglab-intel run`
//! (needs root). `HLI_BENCH_BIN` runs another binary directly; `HLI_STARTUP_RUNS` (default 20)
//! sets the number of runs. Target (README, "Container"): 50 ms to the first applied object.

use harfanglab_intel::DEMO_SCENARIO;
use harfanglab_intel::sim::harfanglab::{self as hlsim, SimConfig};
use harfanglab_intel::sim::opencti::{self as octisim, OpenCtiSimConfig};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How the connector is started: the command and the state directory it sees / we read.
struct Launch {
    program: String,
    prefix: Vec<String>,
    /// (directory as the connector sees it, the same directory from here)
    state: (PathBuf, PathBuf),
    what: String,
}

fn launch(run: usize) -> Launch {
    let id = format!("hli-startup-{}-{run}", std::process::id());
    if let Some(root) = std::env::var_os("HLI_IMAGE_ROOTFS").map(PathBuf::from) {
        let inside = PathBuf::from("/var/lib/harfanglab-intel").join(&id);
        let outside = root.join(inside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&outside).unwrap();
        let chown = Command::new("chown")
            .args(["65532:65532", &outside.display().to_string()])
            .status()
            .unwrap();
        assert!(chown.success());
        return Launch {
            program: "chroot".into(),
            prefix: vec![
                "--userspec=65532:65532".into(),
                root.display().to_string(),
                "/harfanglab-intel".into(),
            ],
            state: (inside, outside),
            what: format!("image {} (chroot, uid 65532)", root.display()),
        };
    }
    let program = std::env::var("HLI_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_harfanglab-intel").to_owned());
    let dir = std::env::temp_dir().join(id);
    Launch {
        what: program.clone(),
        program,
        prefix: Vec::new(),
        state: (dir.clone(), dir),
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let runs: usize = std::env::var("HLI_STARTUP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let scenario = octisim::parse_scenario(DEMO_SCENARIO).unwrap();
    let mut to_stream = Vec::new();
    let mut to_first = Vec::new();
    let mut what = String::new();
    for run in 0..runs {
        let octi = octisim::serve(
            "127.0.0.1:0",
            OpenCtiSimConfig {
                scenario: scenario.clone(),
                ..OpenCtiSimConfig::default()
            },
        )
        .unwrap();
        let hl = hlsim::serve("127.0.0.1:0", SimConfig::default()).unwrap();
        let l = launch(run);
        what = l.what.clone();
        let started = Instant::now();
        let mut child = Command::new(&l.program)
            .args(&l.prefix)
            .arg("run")
            .env_clear()
            // The image's PATH (also how `chroot` is found).
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("OPENCTI_URL", octi.base_url())
            .env("OPENCTI_TOKEN", "sim-token")
            .env("CONNECTOR_ID", "5e1f0c00-0000-4000-8000-0000000057a7")
            .env("CONNECTOR_LIVE_STREAM_ID", "live")
            .env("CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE", "false")
            .env("CONNECTOR_LOG_LEVEL", "warn")
            .env("HARFANGLAB_INTEL_URL", hl.base_url())
            .env("HARFANGLAB_INTEL_TOKEN", "sim-token")
            .env("HARFANGLAB_INTEL_STATE_DIR", &l.state.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the connector");
        let mut stream_at = None;
        let deadline = started + Duration::from_secs(10);
        let first = loop {
            if stream_at.is_none() && !octi.stream_requests().is_empty() {
                stream_at = Some(started.elapsed());
            }
            if !hl.ioc_rules().is_empty() {
                break started.elapsed();
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "the connector exited early"
            );
            assert!(Instant::now() < deadline, "no object applied within 10 s");
            std::thread::sleep(Duration::from_micros(100));
        };
        to_first.push(first);
        to_stream.push(stream_at.unwrap_or(first));
        let _ = child.kill();
        let _ = child.wait();
        hl.shutdown();
        let mut octi = octi;
        octi.shutdown();
        let _ = std::fs::remove_dir_all(&l.state.1);
    }
    to_first.sort();
    to_stream.sort();
    println!(
        "startup of `harfanglab-intel run`: {what}, {runs} runs, demo scenario, loopback simulators"
    );
    println!(
        "{:<38} {:>8} {:>8} {:>8} {:>8}",
        "ms from spawn", "min", "median", "p90", "max"
    );
    for (name, v) in [
        ("to the stream request (OpenCTI)", &to_stream),
        ("to the first applied object (HL)", &to_first),
    ] {
        println!(
            "{name:<38} {:>8} {:>8} {:>8} {:>8}",
            ms(v[0]),
            ms(percentile(v, 50)),
            ms(percentile(v, 90)),
            ms(v[v.len() - 1])
        );
    }
}
