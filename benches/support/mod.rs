//! What the benchmarks that run the real binary share: the connector's command line against the
//! simulators, its metrics endpoint, and the `/proc` readings (peak RSS, CPU) they report.
//! Each bench is its own crate and uses only part of this, hence the `dead_code` allowance.
#![allow(dead_code)]

use harfanglab_intel::sim::harfanglab::{self as hlsim, Faults, HarfangLabSim, SimConfig};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The OpenCTI extension of the indicators the benches stream.
pub const OCTI_EXT: &str = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba";

/// `harfanglab-intel run` (this build, or `HLI_BENCH_BIN`) against the two simulators, with its
/// state in `dir`, errors only on stderr, and a clean environment: add the bench's own settings
/// (`HARFANGLAB_INTEL_WORKERS`, ...) and call [`start`].
pub fn connector(octi: &str, hl: &str, dir: &Path) -> Command {
    let bin = std::env::var("HLI_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_harfanglab-intel").to_owned());
    let mut c = Command::new(bin);
    c.arg("run")
        .env_clear()
        .current_dir(dir)
        .env("OPENCTI_URL", octi)
        .env("OPENCTI_TOKEN", "sim-token")
        .env("CONNECTOR_ID", "b0000000-0000-4000-8000-000000000001")
        .env("CONNECTOR_LIVE_STREAM_ID", "live")
        .env("CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE", "false")
        .env("CONNECTOR_LOG_LEVEL", "error")
        .env("HARFANGLAB_INTEL_URL", hl)
        .env("HARFANGLAB_INTEL_TOKEN", "sim-token")
        .env("HARFANGLAB_INTEL_STATE_DIR", dir)
        .env("HARFANGLAB_INTEL_SHUTDOWN_TIMEOUT", "20")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    c
}

/// [`connector`] with its metrics endpoint on 127.0.0.1:`port`.
pub fn with_metrics(c: &mut Command, port: u16) -> &mut Command {
    c.env("CONNECTOR_EXPOSE_METRICS", "true")
        .env("CONNECTOR_METRICS_HOST", "127.0.0.1")
        .env("CONNECTOR_METRICS_PORT", port.to_string())
}

pub fn start(c: &mut Command) -> Child {
    c.spawn().expect("spawn harfanglab-intel")
}

/// A numeric setting of the bench from the environment (`HLI_BENCH_*`), `default` when unset or
/// not a number.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The connector's `/metrics` text (`None` while it is not up).
pub fn metrics(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The value of an unlabelled sample `name` in a metrics text.
pub fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Peak RSS (`VmHWM`) of a process, in KiB.
pub fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// `utime + stime` of a process in clock ticks (100 per second on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the `(comm)`, which may itself hold spaces.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// A HarfangLab simulator on an ephemeral loopback port answering after `latency`.
pub fn harfanglab_at(latency: Duration) -> HarfangLabSim {
    hlsim::serve(
        "127.0.0.1:0",
        SimConfig {
            faults: Faults {
                latency,
                ..Faults::default()
            },
            ..SimConfig::default()
        },
    )
    .expect("harfanglab sim")
}

/// A fresh state directory for one connector run (`hli-bench-<tag>-<pid>-<random>`).
pub fn state_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hli-bench-{tag}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("bench state dir");
    dir
}
