//! Shared harness of the `e2e_*` tests and the `end_to_end` benchmark: both simulators in the
//! test process on loopback, the real `harfanglab-intel run` binary as a child process with a
//! scrubbed environment, completion by polling its checkpoint file, signals through `kill(1)`,
//! scenario generators and a normalised snapshot of the HarfangLab state to compare runs.
//!
//! No fixed sleeps: every wait polls a condition every few milliseconds up to a generous timeout
//! and fails with the connector's stderr attached.

use harfanglab_intel::sim::harfanglab::{self as hlsim, Faults, HarfangLabSim, SimConfig};
use harfanglab_intel::sim::opencti::{
    self as octisim, OpenCtiSim, OpenCtiSimConfig, ScenarioEvent,
};
use harfanglab_intel::{RuleKind, compare_event_ids, rule_holders};
use serde_json::{Value, json};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The connector id every e2e run uses (one per test via its own state dir).
pub const CONNECTOR_ID: &str = "6f1c2b7e-3d4a-4b5c-8d9e-0a1b2c3d4e5f";
pub const OCTI_TOKEN: &str = "octi-e2e-token";
pub const HL_TOKEN: &str = "hl-e2e-token";
pub const STREAM_ID: &str = "live-e2e";
/// Poll period of every wait.
pub const POLL: Duration = Duration::from_millis(20);

/// The debug binary `cargo test` built.
pub fn test_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_harfanglab-intel"))
}

/// `fixtures/demo-stream.jsonl`.
pub fn demo_scenario() -> Vec<ScenarioEvent> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo-stream.jsonl");
    octisim::load_scenario(&path).unwrap_or_else(|e| panic!("demo scenario: {e}"))
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "hli-e2e-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, AtomicOrdering::SeqCst)
        ));
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Both simulators plus the state directory of one connector.
pub struct World {
    pub octi: OpenCtiSim,
    pub hl: HarfangLabSim,
    pub state: TempDir,
}

impl World {
    /// Start both simulators on 127.0.0.1:0 with `scenario` and HarfangLab `faults` (seeded dice).
    pub fn start(scenario: Vec<ScenarioEvent>, faults: Faults, seed: u64) -> World {
        World::start_with(scenario, faults, seed, |_| {})
    }

    /// [`World::start`] with the OpenCTI simulator's settings changed by `octi` (platform
    /// version, schema gaps).
    pub fn start_with(
        scenario: Vec<ScenarioEvent>,
        faults: Faults,
        seed: u64,
        octi: impl FnOnce(&mut OpenCtiSimConfig),
    ) -> World {
        let mut config = OpenCtiSimConfig {
            token: OCTI_TOKEN.into(),
            stream_id: STREAM_ID.into(),
            heartbeat: Duration::from_millis(200),
            scenario,
            ..OpenCtiSimConfig::default()
        };
        octi(&mut config);
        let octi = octisim::serve("127.0.0.1:0", config).expect("start OpenCTI simulator");
        let hl = hlsim::serve(
            "127.0.0.1:0",
            SimConfig {
                token: HL_TOKEN.into(),
                faults,
                seed,
                max_connections: 512,
                ..SimConfig::default()
            },
        )
        .expect("start HarfangLab simulator");
        World {
            octi,
            hl,
            state: TempDir::new("state"),
        }
    }

    /// The demo scenario, no faults.
    pub fn demo() -> World {
        World::start(demo_scenario(), Faults::default(), 1)
    }

    pub fn checkpoint_path(&self) -> PathBuf {
        self.state
            .path()
            .join(format!("{CONNECTOR_ID}.checkpoint.json"))
    }

    /// `start_from` of the local checkpoint file, if there is a readable one.
    pub fn checkpoint(&self) -> Option<String> {
        read_checkpoint(&self.checkpoint_path())
    }

    pub fn last_event_id(&self) -> String {
        self.octi
            .event_ids()
            .last()
            .cloned()
            .expect("scenario has events")
    }

    /// The default options of a connector run against this world.
    pub fn opts(&self) -> RunOpts {
        RunOpts {
            workers: 8,
            extra: Vec::new(),
            binary: test_binary(),
        }
    }

    /// `harfanglab-intel <args>` with this world's environment (and `opts.extra` on top).
    pub fn command(&self, opts: &RunOpts, args: &[&str]) -> Command {
        let mut cmd = Command::new(&opts.binary);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_PROXY", "*")
            .env("no_proxy", "*")
            .current_dir(self.state.path())
            .stdin(Stdio::null());
        let workers = opts.workers.to_string();
        let base: [(&str, &str); 21] = [
            ("OPENCTI_URL", &self.octi.base_url()),
            ("OPENCTI_TOKEN", OCTI_TOKEN),
            ("CONNECTOR_ID", CONNECTOR_ID),
            ("CONNECTOR_NAME", "HarfangLab Intel e2e"),
            ("CONNECTOR_LIVE_STREAM_ID", STREAM_ID),
            ("CONNECTOR_LIVE_STREAM_IDLE_TIMEOUT", "3"),
            ("CONNECTOR_PING_INTERVAL", "1"),
            ("CONNECTOR_LOG_LEVEL", "info"),
            ("HARFANGLAB_INTEL_URL", self.hl.base_url()),
            ("HARFANGLAB_INTEL_TOKEN", HL_TOKEN),
            ("HARFANGLAB_INTEL_SSL_VERIFY", "true"),
            (
                "HARFANGLAB_INTEL_STATE_DIR",
                &self.state.path().to_string_lossy(),
            ),
            ("HARFANGLAB_INTEL_WORKERS", &workers),
            ("HARFANGLAB_INTEL_REMOVE_INDICATOR", "true"),
            ("HARFANGLAB_INTEL_MAX_RETRIES", "30"),
            // Short event retry waits (the faulted runs retry many events; 1 s doubling from
            // the default base would make the waits, not the work, the test's length).
            ("HARFANGLAB_INTEL_RETRY_BACKOFF_MAX", "200ms"),
            ("HARFANGLAB_INTEL_REQUEST_TIMEOUT", "10"),
            ("HARFANGLAB_INTEL_CONNECT_TIMEOUT", "5"),
            ("HARFANGLAB_INTEL_SHUTDOWN_TIMEOUT", "10"),
            // The live path's tests; the reconciliation tests turn it on (`e2e_reconcile`).
            ("HARFANGLAB_INTEL_RECONCILE_INTERVAL", "0"),
            ("OPENCTI_REQUEST_TIMEOUT", "10"),
        ];
        for (k, v) in base {
            cmd.env(k, v);
        }
        for (k, v) in &opts.extra {
            cmd.env(k, v);
        }
        cmd
    }

    /// Spawn `harfanglab-intel run` against this world.
    pub fn spawn(&self, opts: &RunOpts) -> Connector {
        let log = self
            .state
            .path()
            .join(format!("connector-{}.log", next_run_number()));
        let stderr = File::create(&log).expect("create connector log");
        let mut cmd = self.command(opts, &["run"]);
        cmd.stdout(Stdio::null()).stderr(stderr);
        let child = cmd.spawn().expect("spawn harfanglab-intel run");
        Connector {
            child,
            log,
            started: Instant::now(),
        }
    }

    /// Run the connector until the checkpoint reaches the last event, then SIGTERM it and check
    /// it exits 0. Returns the normalised HarfangLab state.
    pub fn run_to_end(&self, opts: &RunOpts, timeout: Duration) -> Snapshot {
        let streams = self.octi.stream_requests().len();
        let mut c = self.spawn(opts);
        // Up to the stream before any SIGTERM: when the checkpoint is already at the end (a
        // restart after the work was done), the signal must not reach a process still starting
        // (its default action kills it).
        wait_until(&mut c, "a stream connection", timeout, || {
            self.octi.stream_requests().len() > streams
        });
        let last = self.last_event_id();
        self.wait_checkpoint(&mut c, &last, timeout);
        c.terminate_ok(Duration::from_secs(15));
        snapshot(&self.hl)
    }

    /// Poll the checkpoint file until it is at or past `target`; panics (with the connector's
    /// stderr) on timeout or if the connector exits first.
    pub fn wait_checkpoint(&self, c: &mut Connector, target: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = self.checkpoint()
                && compare_event_ids(&pos, target) != Ordering::Less
            {
                return;
            }
            if let Some(status) = c.try_wait() {
                panic!(
                    "connector exited ({status}) before the checkpoint reached {target} (at {:?})\n{}",
                    self.checkpoint(),
                    c.stderr_tail()
                );
            }
            if Instant::now() >= deadline {
                let pos = self.checkpoint();
                c.kill();
                panic!(
                    "checkpoint did not reach {target} within {timeout:?} (at {pos:?})\n{}",
                    c.stderr_tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Poll `cond` until it holds; panics (with the connector's stderr) on timeout or if the
/// connector exits first. Returns the time since the connector started.
pub fn wait_until(
    c: &mut Connector,
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return c.started.elapsed();
        }
        if let Some(status) = c.try_wait() {
            panic!(
                "connector exited ({status}) before {what}\n{}",
                c.stderr_tail()
            );
        }
        if Instant::now() >= deadline {
            c.kill();
            panic!("no {what} within {timeout:?}\n{}", c.stderr_tail());
        }
        std::thread::sleep(POLL);
    }
}

fn next_run_number() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, AtomicOrdering::SeqCst)
}

/// How to run the connector.
#[derive(Clone, Debug)]
pub struct RunOpts {
    pub workers: usize,
    /// Extra (or overriding) environment variables.
    pub extra: Vec<(String, String)>,
    pub binary: PathBuf,
}

impl RunOpts {
    pub fn env(mut self, k: &str, v: &str) -> RunOpts {
        self.extra.push((k.into(), v.into()));
        self
    }

    pub fn workers(mut self, n: usize) -> RunOpts {
        self.workers = n;
        self
    }
}

/// `start_from` of a checkpoint file (`None`: missing or unreadable, e.g. mid-rename).
pub fn read_checkpoint(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.get("start_from")?.as_str().map(str::to_owned)
}

/// A running connector child process.
pub struct Connector {
    pub child: Child,
    pub log: PathBuf,
    pub started: Instant,
}

impl Connector {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Send a signal with kill(1) (`TERM`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Wait for the exit up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGKILL and reap (a real crash: no shutdown code runs).
    pub fn kill(&mut self) {
        if self.try_wait().is_none() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(self.pid().to_string())
                .status();
        }
        let _ = self.child.wait();
    }

    /// SIGTERM, then require exit status 0 within `deadline`. Returns the time it took.
    pub fn terminate_ok(&mut self, deadline: Duration) -> Duration {
        let t0 = Instant::now();
        self.signal("TERM");
        match self.wait_exit(deadline) {
            Some(s) if s.success() => t0.elapsed(),
            Some(s) => panic!(
                "connector exited with {s} after SIGTERM\n{}",
                self.stderr_tail()
            ),
            None => {
                self.kill();
                panic!(
                    "connector still running {deadline:?} after SIGTERM\n{}",
                    self.stderr_tail()
                )
            }
        }
    }

    /// The last lines of the connector's stderr, for failure messages.
    /// The file the connector's stderr goes to.
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    pub fn stderr_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(60);
        format!(
            "--- connector stderr ({}, last {} lines) ---\n{}",
            self.log.display(),
            lines.len() - from,
            lines[from..].join("\n")
        )
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        // Never leave a connector running after a failed test.
        self.kill();
    }
}

/// One IOC rule, normalised.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IocState {
    pub ioc_type: String,
    pub value: String,
    pub enabled: bool,
    /// `id score=<s> platforms=<p,..>` per holder, sorted.
    pub holders: Vec<String>,
}

/// One Sigma rule or Yara file, normalised.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleState {
    pub name: String,
    pub content_hash: u64,
    pub enabled: bool,
    /// Holder ids from the content's holders line (sorted; empty without one).
    pub holders: Vec<String>,
}

/// The HarfangLab state, order-independent (sorted), ids dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub iocs: Vec<IocState>,
    pub sigma: Vec<RuleState>,
    pub yara: Vec<RuleState>,
}

impl Snapshot {
    /// The IOC rule of `(type, value)`; panics if there are several.
    pub fn ioc(&self, ioc_type: &str, value: &str) -> Option<&IocState> {
        let found: Vec<&IocState> = self
            .iocs
            .iter()
            .filter(|i| i.ioc_type == ioc_type && i.value.eq_ignore_ascii_case(value))
            .collect();
        assert!(found.len() <= 1, "duplicate IOC rules: {found:#?}");
        found.first().copied()
    }

    /// An IOC held (enabled) by at least one indicator.
    pub fn is_live(&self, ioc_type: &str, value: &str) -> bool {
        self.ioc(ioc_type, value)
            .is_some_and(|i| i.enabled && !i.holders.is_empty())
    }

    /// Holder ids (internal ids) of an IOC.
    pub fn holder_ids(&self, ioc_type: &str, value: &str) -> Vec<String> {
        self.ioc(ioc_type, value)
            .map(|i| {
                i.holders
                    .iter()
                    .map(|h| h.split(' ').next().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// No two IOC rules with the same type and value (case-insensitive, as HarfangLab).
    pub fn assert_no_duplicates(&self) {
        let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
        for i in &self.iocs {
            *seen
                .entry((i.ioc_type.clone(), i.value.to_ascii_lowercase()))
                .or_default() += 1;
        }
        let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(dups.is_empty(), "duplicated IOC rules: {dups:?}");
        for (what, rules) in [("Sigma", &self.sigma), ("Yara", &self.yara)] {
            let mut names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
            let n = names.len();
            names.dedup();
            assert_eq!(n, names.len(), "duplicated {what} rules: {rules:#?}");
        }
    }

    /// A readable diff of two snapshots (for assertion messages).
    pub fn diff(&self, other: &Snapshot) -> String {
        let mut out = String::new();
        let mut side = |name: &str, a: &[String], b: &[String]| {
            for x in a.iter().filter(|x| !b.contains(x)) {
                out.push_str(&format!("- {name} {x}\n"));
            }
            for x in b.iter().filter(|x| !a.contains(x)) {
                out.push_str(&format!("+ {name} {x}\n"));
            }
        };
        let fmt_iocs = |s: &Snapshot| s.iocs.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>();
        let fmt_rules = |r: &[RuleState]| r.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>();
        side("ioc", &fmt_iocs(self), &fmt_iocs(other));
        side("sigma", &fmt_rules(&self.sigma), &fmt_rules(&other.sigma));
        side("yara", &fmt_rules(&self.yara), &fmt_rules(&other.yara));
        out
    }
}

/// Assert two snapshots are equal, printing the difference.
pub fn assert_same_state(expected: &Snapshot, got: &Snapshot, what: &str) {
    assert!(
        expected == got,
        "{what}: HarfangLab state differs from the clean run (- clean, + this run):\n{}",
        expected.diff(got)
    );
}

fn content_hash(s: &str) -> u64 {
    // SipHash with fixed keys: stable within one build, which is all a comparison needs.
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Normalise the simulator's objects.
pub fn snapshot(hl: &HarfangLabSim) -> Snapshot {
    let mut iocs: Vec<IocState> = hl
        .ioc_rules()
        .into_iter()
        .map(|r| IocState {
            holders: holders_of(r.comment.as_deref()),
            ioc_type: r.ioc_type,
            value: r.value,
            enabled: r.enabled,
        })
        .collect();
    iocs.sort();
    let rules = |kind: RuleKind, list: Vec<harfanglab_intel::RemoteRule>| {
        let mut v: Vec<RuleState> = list
            .into_iter()
            .map(|r| RuleState {
                content_hash: content_hash(&r.content),
                holders: rule_holders::split(kind, &r.content)
                    .0
                    .map(|h| h.ids().to_vec())
                    .unwrap_or_default(),
                name: r.name,
                enabled: r.enabled,
            })
            .collect();
        v.sort();
        v
    };
    Snapshot {
        iocs,
        sigma: rules(RuleKind::Sigma, hl.sigma_rules()),
        yara: rules(RuleKind::Yara, hl.yara_files()),
    }
}

fn holders_of(comment: Option<&str>) -> Vec<String> {
    let Some(v) = comment.and_then(|c| serde_json::from_str::<Value>(c).ok()) else {
        return Vec::new();
    };
    let mut out: Vec<String> = v
        .get("holders")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|h| {
                    let platforms: Vec<&str> = h
                        .get("platforms")
                        .and_then(Value::as_array)
                        .map(|p| p.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    format!(
                        "{} score={} platforms={}",
                        h.get("id").and_then(Value::as_str).unwrap_or("?"),
                        h.get("score").map(Value::to_string).unwrap_or_default(),
                        platforms.join(",")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Scenario generation (OpenCTI envelopes shaped like fixtures/demo-stream.jsonl).

const OCTI_EXT: &str = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba";

/// Internal (stable) id of generated indicator `n`.
pub fn internal_id(n: u64) -> String {
    format!("00000001-0000-4000-8000-{n:012x}")
}

/// Standard id of generated indicator `n`, generation `generation` (it changes with the pattern).
pub fn standard_id(n: u64, generation: u64) -> String {
    format!("indicator--{:08x}-0000-4000-8000-{n:012x}", 2 + generation)
}

/// `[ipv4-addr:value = '<ip>']`
pub fn ipv4_pattern(ip: &str) -> String {
    format!("[ipv4-addr:value = '{ip}']")
}

/// A distinct test IPv4 address for `k < 2^24` (`10.x.y.z`).
pub fn ip_for(k: u64) -> String {
    format!("10.{}.{}.{}", (k >> 16) & 0xff, (k >> 8) & 0xff, k & 0xff)
}

/// STIX indicator of generated indicator `n`.
pub fn indicator_stix(n: u64, generation: u64, name: &str, pattern: &str, score: i64) -> Value {
    json!({
        "confidence": 75,
        "created": "2024-06-15T10:00:00.000Z",
        "description": format!("e2e indicator {n}"),
        "extensions": {
            OCTI_EXT: {
                "created_at": "2024-06-15T10:00:00.000Z",
                "detection": true,
                "extension_type": "property-extension",
                "id": internal_id(n),
                "is_inferred": false,
                "main_observable_type": "IPv4-Addr",
                "score": score,
                "stix_ids": [],
                "type": "Indicator",
                "updated_at": "2024-06-15T10:00:00.000Z"
            }
        },
        "id": standard_id(n, generation),
        "indicator_types": ["malicious-activity"],
        "labels": ["e2e"],
        "lang": "en",
        "modified": "2024-06-15T10:00:00.000Z",
        "name": name,
        "pattern": pattern,
        "pattern_type": "stix",
        "pattern_version": "2.1",
        "revoked": false,
        "spec_version": "2.1",
        "type": "indicator",
        "valid_from": "2024-06-15T10:00:00.000Z",
        "valid_until": "2034-06-15T10:00:00.000Z"
    })
}

fn envelope(kind: &str, message: String, data: Value, context: Option<Value>) -> Value {
    let mut env = json!({
        "version": "4",
        "type": kind,
        "scope": "external",
        "message": message,
        "origin": {"user_id": "88ec0c6a-13ce-5e39-b486-354fe4a7084f", "socket": "query"},
        "data": data,
    });
    if let Some(c) = context {
        env["context"] = c;
    }
    env
}

fn event(kind: &str, data: Value) -> ScenarioEvent {
    ScenarioEvent {
        event: kind.into(),
        data,
    }
}

/// `create` of the indicator whose STIX is `stix`.
pub fn create_from(stix: &Value) -> ScenarioEvent {
    event(
        "create",
        envelope(
            "create",
            format!(
                "creates a Indicator `{}`",
                stix["name"].as_str().unwrap_or("")
            ),
            stix.clone(),
            None,
        ),
    )
}

/// `create` of an IPv4 indicator.
pub fn create_ip(n: u64, ip: &str, score: i64) -> ScenarioEvent {
    let stix = indicator_stix(n, 0, ip, &ipv4_pattern(ip), score);
    event(
        "create",
        envelope("create", format!("creates a Indicator `{ip}`"), stix, None),
    )
}

/// `update` changing the pattern of indicator `n` from `old_ip` to `new_ip`; with `new_id`
/// the standard id changes too (generation `old_gen` → `old_gen + 1`, `/id` in the patches).
pub fn update_ip(n: u64, old_gen: u64, old_ip: &str, new_ip: &str, new_id: bool) -> ScenarioEvent {
    let new_gen = if new_id { old_gen + 1 } else { old_gen };
    let stix = indicator_stix(n, new_gen, new_ip, &ipv4_pattern(new_ip), 60);
    let mut patch = vec![
        json!({"op": "replace", "path": "/pattern", "value": ipv4_pattern(new_ip)}),
        json!({"op": "replace", "path": "/name", "value": new_ip}),
    ];
    let mut reverse = vec![
        json!({"op": "replace", "path": "/pattern", "value": ipv4_pattern(old_ip)}),
        json!({"op": "replace", "path": "/name", "value": old_ip}),
    ];
    if new_id {
        patch.push(json!({"op": "replace", "path": "/id", "value": standard_id(n, new_gen)}));
        reverse.push(json!({"op": "replace", "path": "/id", "value": standard_id(n, old_gen)}));
    }
    event(
        "update",
        envelope(
            "update",
            format!("replaces `{}` in `pattern`", ipv4_pattern(new_ip)),
            stix,
            Some(json!({"patch": patch, "reverse_patch": reverse})),
        ),
    )
}

/// `delete` of indicator `n` whose last pattern is `ip` (generation `generation`).
pub fn delete_ip(n: u64, generation: u64, ip: &str) -> ScenarioEvent {
    let stix = indicator_stix(n, generation, ip, &ipv4_pattern(ip), 60);
    event(
        "delete",
        envelope("delete", format!("deletes a Indicator `{ip}`"), stix, None),
    )
}

/// `create` of a Sigma indicator `n` named `name` with rule `content`.
pub fn create_sigma(n: u64, name: &str, content: &str) -> ScenarioEvent {
    let stix = sigma_stix(n, name, content);
    event(
        "create",
        envelope(
            "create",
            format!("creates a Indicator `{name}`"),
            stix,
            None,
        ),
    )
}

/// STIX of Sigma indicator `n`.
pub fn sigma_stix(n: u64, name: &str, content: &str) -> Value {
    let mut stix = indicator_stix(n, 0, name, content, 70);
    stix["pattern_type"] = json!("sigma");
    stix["extensions"][OCTI_EXT]["main_observable_type"] = json!("Unknown");
    stix
}

/// `update` of indicator `n` from STIX `before` to STIX `after` (patches on `/pattern` and
/// `/name` where they differ).
pub fn update_stix(before: &Value, after: &Value) -> ScenarioEvent {
    let mut patch = Vec::new();
    let mut reverse = Vec::new();
    for field in ["pattern", "name"] {
        if before[field] != after[field] {
            patch
                .push(json!({"op": "replace", "path": format!("/{field}"), "value": after[field]}));
            reverse.push(
                json!({"op": "replace", "path": format!("/{field}"), "value": before[field]}),
            );
        }
    }
    event(
        "update",
        envelope(
            "update",
            format!("updates `{}`", after["name"].as_str().unwrap_or("")),
            after.clone(),
            Some(json!({"patch": patch, "reverse_patch": reverse})),
        ),
    )
}

/// `delete` of the indicator whose last STIX is `stix`.
pub fn delete_stix(stix: &Value) -> ScenarioEvent {
    event(
        "delete",
        envelope(
            "delete",
            format!(
                "deletes a Indicator `{}`",
                stix["name"].as_str().unwrap_or("")
            ),
            stix.clone(),
            None,
        ),
    )
}

/// `merge` of `sources` (their STIX as they were) into `target` (its STIX as merged), shaped like
/// `storeMergeEvent`: the target's standard ids gain the sources'.
pub fn merge_into(target: &Value, sources: &[Value]) -> ScenarioEvent {
    let mut merged = target.clone();
    let ids: Vec<Value> = sources.iter().map(|s| s["id"].clone()).collect();
    merged["extensions"][OCTI_EXT]["stix_ids"] = json!(ids);
    let path = format!("/extensions/{OCTI_EXT}/stix_ids");
    let names: Vec<&str> = sources.iter().filter_map(|s| s["name"].as_str()).collect();
    event(
        "merge",
        envelope(
            "merge",
            format!(
                "merges Indicator {} in `{}`",
                names.join(", "),
                target["name"].as_str().unwrap_or("")
            ),
            merged,
            Some(json!({
                "patch": [{"op": "replace", "path": path, "value": ids}],
                "reverse_patch": [{"op": "replace", "path": path, "value": []}],
                "sources": sources,
                "deletions": [],
                "shifts": [],
            })),
        ),
    )
}

/// A `based-on` relationship `rel` from indicator `n` to an observable (`create` or `delete`).
pub fn based_on(
    kind: &str,
    rel: u64,
    n: u64,
    generation: u64,
    target_type: &str,
    target_value: &str,
) -> ScenarioEvent {
    let data = json!({
        "confidence": 75,
        "created": "2024-06-15T10:00:01.000Z",
        "extensions": {
            OCTI_EXT: {
                "created_at": "2024-06-15T10:00:01.000Z",
                "extension_type": "property-extension",
                "id": format!("00000005-0000-4000-8000-{rel:012x}"),
                "is_inferred": false,
                "source_ref": internal_id(n),
                "source_type": "Indicator",
                "target_ref": format!("00000006-0000-4000-8000-{rel:012x}"),
                "target_type": target_type,
                "target_value": target_value,
                "type": "based-on",
                "updated_at": "2024-06-15T10:00:01.000Z"
            }
        },
        "id": format!("relationship--00000003-0000-4000-8000-{rel:012x}"),
        "modified": "2024-06-15T10:00:01.000Z",
        "relationship_type": "based-on",
        "revoked": false,
        "source_ref": standard_id(n, generation),
        "spec_version": "2.1",
        "target_ref": format!("{}--00000004-0000-4000-8000-{rel:012x}", target_type.to_ascii_lowercase()),
        "type": "relationship"
    });
    let verb = if kind == "delete" {
        "deletes"
    } else {
        "creates"
    };
    event(
        kind,
        envelope(
            kind,
            format!("{verb} the relation based-on to `{target_value}` ({target_type})"),
            data,
            None,
        ),
    )
}

/// `n` independent IPv4 indicator creates (`ip_for(offset + i)`), ids `offset + i`.
pub fn bulk_creates(offset: u64, n: u64) -> Vec<ScenarioEvent> {
    (0..n)
        .map(|i| create_ip(offset + i, &ip_for(offset + i), 40 + (i % 60) as i64))
        .collect()
}

/// Work on its own thread (e.g. the clean reference run), joined even when the test panics
/// first, so its connector child is always reaped instead of outliving the test process.
pub struct Background<T: Send + 'static>(Option<std::thread::JoinHandle<T>>);

impl<T: Send + 'static> Background<T> {
    pub fn spawn(f: impl FnOnce() -> T + Send + 'static) -> Background<T> {
        Background(Some(std::thread::spawn(f)))
    }

    pub fn join(mut self) -> T {
        match self.0.take().map(std::thread::JoinHandle::join) {
            Some(Ok(v)) => v,
            _ => panic!("background run failed"),
        }
    }
}

impl<T: Send + 'static> Drop for Background<T> {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}
