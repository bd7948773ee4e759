//! The real binary (`harfanglab-intel run`, configured by environment variables) as a child
//! process against both simulators on loopback: SIGTERM during a busy stream exits 0 within the
//! deadline with a correct checkpoint, and SIGKILL at random points followed by restarts ends in
//! exactly the expected HarfangLab state (nothing lost, nothing duplicated).

use crate::support::service::{at_or_after, demo_scenario, start_sims, state_dir, wait_exit};
use harfanglab_intel::sim::harfanglab::{Faults, HarfangLabSim};
use harfanglab_intel::sim::opencti::OpenCtiSim;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CONNECTOR_ID: &str = "7f0c1e2d-0000-4000-8000-00000000abcd";

struct Env {
    octi: OpenCtiSim,
    hl: HarfangLabSim,
    dir: PathBuf,
    last: String,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.hl.shutdown();
        self.octi.shutdown();
        if std::thread::panicking() {
            // Keep the connector's log and state for the failure report.
            eprintln!("connector log and state kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn env(name: &str, latency: Duration) -> Env {
    let (octi, hl) = start_sims(demo_scenario(), latency);
    let dir = state_dir(&format!("process-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let last = octi.event_ids().last().cloned().unwrap();
    Env {
        octi,
        hl,
        dir,
        last,
    }
}

fn spawn(e: &Env) -> Child {
    spawn_with(e, &[])
}

fn spawn_with(e: &Env, extra: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_harfanglab-intel"))
        .arg("run")
        .env_clear()
        .envs(extra.iter().copied())
        .current_dir(&e.dir) // no ./config.yml here
        .env("OPENCTI_URL", e.octi.base_url())
        .env("OPENCTI_TOKEN", "sim-token")
        .env("CONNECTOR_ID", CONNECTOR_ID)
        .env("CONNECTOR_LIVE_STREAM_ID", "live")
        .env("CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE", "false")
        .env("CONNECTOR_PING_INTERVAL", "1")
        .env("CONNECTOR_LOG_LEVEL", "warn")
        .env("HARFANGLAB_INTEL_URL", e.hl.base_url())
        .env("HARFANGLAB_INTEL_TOKEN", "sim-token")
        .env("HARFANGLAB_INTEL_SOURCE_LIST_NAME", "OpenCTI process test")
        .env("HARFANGLAB_INTEL_REMOVE_INDICATOR", "true")
        .env("HARFANGLAB_INTEL_STATE_DIR", &e.dir)
        .env("HARFANGLAB_INTEL_WORKERS", "4")
        .env("HARFANGLAB_INTEL_SHUTDOWN_TIMEOUT", "5")
        .env("HARFANGLAB_INTEL_RETRY_BACKOFF_MAX", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // The child's log goes to a file in the test's directory (kept on failure), not into the
        // test runner's output.
        .stderr(stderr_log(e))
        .spawn()
        .expect("spawn harfanglab-intel")
}

fn stderr_log(e: &Env) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(e.dir.join("connector.stderr.log"))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// The saved position (`start_from` of the checkpoint file), if any.
fn checkpoint(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(format!("{CONNECTOR_ID}.checkpoint.json"))).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["start_from"].as_str().map(str::to_owned)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} failed");
}

/// Run to the end of the stream, then stop with SIGTERM (exit 0 expected).
fn run_to_end(e: &Env) {
    let connections = e.octi.stream_requests().len();
    let mut child = spawn(e);
    let deadline = Instant::now() + Duration::from_secs(60);
    // This process is up (it opened the stream) and the saved position is the last event.
    while e.octi.stream_requests().len() == connections
        || !at_or_after(checkpoint(&e.dir).as_deref(), &e.last)
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the connector exited early"
        );
        assert!(Instant::now() < deadline, "the connector did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&child, "-TERM");
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(15)).code(),
        Some(0)
    );
}

#[test]
fn sigterm_during_a_busy_stream_exits_0_in_time_with_a_correct_checkpoint() {
    // 100 ms per HarfangLab request: the 227 events need ~15 s with 4 workers, more than the
    // 5 s drain deadline, so the deadline really cuts the drain short.
    let e = env("term", Duration::from_millis(100));
    let mut child = spawn(&e);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Busy: some progress saved, far from the end.
    while checkpoint(&e.dir).is_none_or(|c| c == "0-0") {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = checkpoint(&e.dir).unwrap();
    assert!(!at_or_after(Some(&before), &e.last), "not busy any more");
    let stopped = Instant::now();
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{status:?}");
    // Drain deadline 5 s + final save and ping.
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopped.elapsed()
    );
    let after = checkpoint(&e.dir).unwrap();
    assert!(at_or_after(Some(&after), &before), "{after} < {before}");
    // The final position was pushed to OpenCTI by the last ping.
    let state = e.octi.connector_state(CONNECTOR_ID).unwrap_or_default();
    assert!(state.contains(&after), "{state} vs {after}");
    // Correct means: resuming from it loses nothing. Finish the stream and check everything.
    e.hl.set_faults(Faults::default());
    run_to_end(&e);
    crate::support::demo_expected::check_lists(
        &e.hl.ioc_rules(),
        &e.hl.sigma_rules(),
        &e.hl.yara_files(),
    );
}

#[test]
fn sigkill_at_random_points_and_restarts_end_in_the_expected_state() {
    let e = env("kill", Duration::from_millis(3));
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut positions = Vec::new();
    for _ in 0..4 {
        let mut child = spawn(&e);
        let wait = Duration::from_millis(rng.u64(200..900));
        std::thread::sleep(wait);
        child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
        let _ = child.wait();
        positions.push(checkpoint(&e.dir));
    }
    // Killed runs really made progress and never moved the checkpoint backwards.
    assert!(positions.iter().any(Option::is_some), "{positions:?}");
    for w in positions.windows(2) {
        if let (Some(a), Some(b)) = (&w[0], &w[1]) {
            assert!(at_or_after(Some(b), a), "{positions:?}");
        }
    }
    run_to_end(&e);
    crate::support::demo_expected::check_lists(
        &e.hl.ioc_rules(),
        &e.hl.sigma_rules(),
        &e.hl.yara_files(),
    );
}

#[test]
fn a_second_signal_exits_130_at_once() {
    let e = env("twice", Duration::from_millis(50));
    let mut child = spawn(&e);
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoint(&e.dir).is_none_or(|c| c == "0-0") {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, "-TERM");
    std::thread::sleep(Duration::from_millis(100));
    signal(&child, "-INT");
    let status = wait_exit(&mut child, Duration::from_secs(3));
    assert_eq!(status.code(), Some(130), "{status:?}");
}

#[test]
fn systemd_is_told_ready_status_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let e = env("notify", Duration::ZERO);
    let path = e.dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let path_str = path.to_str().unwrap().to_owned();
    let mut child = spawn_with(
        &e,
        &[("NOTIFY_SOCKET", &path_str), ("WATCHDOG_USEC", "2000000")],
    );
    let mut got: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stopped = false;
    loop {
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let done = at_or_after(checkpoint(&e.dir).as_deref(), &e.last);
        let watched = got.iter().any(|m| m.contains("WATCHDOG=1"));
        let status = got.iter().any(|m| m.contains("STATUS=applied"));
        if done && watched && status && !stopped {
            signal(&child, "-TERM");
            stopped = true;
        }
        if stopped && child.try_wait().unwrap().is_some() {
            while let Ok(n) = socket.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            break;
        }
        assert!(Instant::now() < deadline, "{got:?}");
    }
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(1)).code(),
        Some(0)
    );
    let pos = |needle: &str| got.iter().position(|m| m.contains(needle));
    let ready = pos("READY=1").expect("READY=1");
    let stopping = pos("STOPPING=1").expect("STOPPING=1");
    assert!(ready < stopping, "{got:?}");
    assert!(
        got.iter().any(|m| m.contains("STATUS=applied")),
        "a summary STATUS line: {got:?}"
    );
}

/// The environment the process `pid` got from its last `exec` (`/proc/<pid>/environ`), with
/// GLIBC_TUNABLES whole again: glibc splits its value at each `:` in place (NUL bytes) while
/// parsing it at startup.
fn environment_of(pid: u32) -> Vec<String> {
    let mut raw = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let key = b"GLIBC_TUNABLES=";
    if let Some(at) = raw.windows(key.len()).position(|w| w == key) {
        let mut i = at + key.len();
        // The tunables are `glibc.<name>=<value>` items: rejoin those that follow.
        while i < raw.len() {
            if raw[i] == 0 {
                if !raw[i + 1..].starts_with(b"glibc.") {
                    break;
                }
                raw[i] = b':';
            }
            i += 1;
        }
    }
    raw.split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// `run` re-executes itself once with glibc's malloc tunables (`allocator`): under the same
/// pid (signals, systemd's MAINPID and the watchdog still address it, the marker names it) and
/// only when the user set no GLIBC_TUNABLES of their own. A marker copied from another
/// process's environment does not turn the tuning off.
#[test]
fn run_reexecutes_once_with_malloc_tunables_unless_the_user_set_them() {
    use harfanglab_intel::allocator::{MARKER, TUNABLES};
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    let user = "glibc.malloc.arena_max=4";
    for (extra, tunables, tuned) in [
        (&[][..], TUNABLES, true),
        (&[("GLIBC_TUNABLES", user)][..], user, false),
        (&[(MARKER, "1")][..], TUNABLES, true),
    ] {
        let e = env("malloc", Duration::ZERO);
        let mut child = KillOnDrop(spawn_with(&e, extra));
        let child = &mut child.0;
        let deadline = Instant::now() + Duration::from_secs(30);
        // The stream is opened by the process as it runs after any re-execution.
        while e.octi.stream_requests().is_empty() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the connector exited early"
            );
            assert!(Instant::now() < deadline, "the stream was never opened");
            std::thread::sleep(Duration::from_millis(20));
        }
        let vars = environment_of(child.id());
        assert!(
            vars.contains(&format!("GLIBC_TUNABLES={tunables}")),
            "{vars:?}"
        );
        let marker = format!("{MARKER}={}", child.id());
        assert_eq!(vars.contains(&marker), tuned, "{vars:?}");
        signal(child, "-TERM");
        assert_eq!(wait_exit(child, Duration::from_secs(15)).code(), Some(0));
    }
}

/// A child that a failed assertion does not leave running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
