//! `harfanglab-intel demo`: the whole connector against built-in simulators, no configuration.
//!
//! Starts the OpenCTI simulator (replaying `fixtures/demo-stream.jsonl`, embedded in the binary)
//! and the HarfangLab simulator on `127.0.0.1:0`, builds a [`Config`] pointing at them (temporary
//! state directory, short ping interval, the product's `workers=auto` and coalescing), runs the REAL [`service::run_with`] over
//! real HTTP on a thread, waits until the checkpoint reaches the scenario's last event id, stops
//! it like a signal would, and returns the resulting HarfangLab lists and counters
//! ([`DemoResult`]), which [`DemoResult::render`] tells as a story (`story`): what the scenario
//! exercises, a summary, then the lists. Tests use the same entry point with faults switched on
//! ([`DemoOptions`]); Ctrl-C ends it early through [`DemoOptions::stop`].

use crate::config::{Config, Recover, TlsVerify};
use crate::harfanglab::model::{IocRule, RemoteRule};
use crate::notify::Notifier;
use crate::opencti::events::OCTI_EXT;
use crate::pipeline::{PipelineStats, Shutdown};
use crate::secret::Secret;
use crate::service::{self, RunOptions, RunSummary, ServiceError};
use crate::sim::harfanglab::{self as hlsim, Faults, SimConfig};
use crate::sim::opencti::{self as octisim, OpenCtiSimConfig, parse_scenario};
use crate::state::compare_event_ids;
use crate::sync::comment::RuleComment;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

mod story;
use std::path::PathBuf;
use std::time::{Duration, Instant};
pub use story::ScenarioFacts;

/// The demo scenario (see `fixtures/README.md`).
pub const DEMO_SCENARIO: &str = include_str!("../fixtures/demo-stream.jsonl");

/// Source list name the demo uses.
pub const DEMO_LIST: &str = "OpenCTI demo";

/// How to run the demo (defaults: the plain demo).
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// JSON Lines scenario text.
    pub scenario: String,
    /// A fixed worker count; `None`: the product default (`auto`).
    pub workers: Option<usize>,
    /// Give up when the checkpoint has not reached the last event by then.
    pub timeout: Duration,
    /// HarfangLab simulator faults (latency, 5xx / 429 rates).
    pub harfanglab_faults: Faults,
    /// Close every stream connection after this many events.
    pub drop_stream_every: Option<usize>,
    /// State directory (a fresh temporary one when `None`; removed afterwards).
    pub state_dir: Option<PathBuf>,
    /// Stops the demo early (`main` passes the one its Ctrl-C / SIGTERM handler triggers).
    pub stop: Shutdown,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            scenario: DEMO_SCENARIO.to_owned(),
            workers: None,
            timeout: Duration::from_secs(60),
            harfanglab_faults: Faults::default(),
            drop_stream_every: None,
            state_dir: None,
            stop: Shutdown::new(),
        }
    }
}

/// Why the demo failed.
#[derive(Debug)]
pub enum DemoError {
    /// The scenario text does not parse.
    Scenario(String),
    /// A simulator could not start.
    Simulator(std::io::Error),
    /// The service stopped with an error.
    Service(ServiceError),
    /// The checkpoint did not reach the last event in time.
    Timeout {
        reached: Option<String>,
        last: String,
    },
    /// [`DemoOptions::stop`] fired (Ctrl-C) before the checkpoint reached the last event.
    Interrupted {
        reached: Option<String>,
        last: String,
    },
    /// The service thread panicked.
    Panicked,
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DemoError::Scenario(e) => write!(f, "demo scenario: {e}"),
            DemoError::Simulator(e) => write!(f, "cannot start a simulator: {e}"),
            DemoError::Service(e) => write!(f, "the connector failed: {e}"),
            DemoError::Timeout { reached, last } => write!(
                f,
                "the connector did not reach the last event {last} in time (checkpoint: {})",
                reached.as_deref().unwrap_or("none")
            ),
            DemoError::Interrupted { reached, last } => write!(
                f,
                "demo interrupted before the last event {last} (checkpoint: {}): no report",
                reached.as_deref().unwrap_or("none")
            ),
            DemoError::Panicked => f.write_str("the connector thread panicked"),
        }
    }
}

impl std::error::Error for DemoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DemoError::Simulator(e) => Some(e),
            DemoError::Service(e) => Some(e),
            _ => None,
        }
    }
}

/// Counters of one demo run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DemoCounters {
    /// Events in the scenario.
    pub events: usize,
    pub applied: u64,
    pub skipped: u64,
    /// Dead-lettered (permanent failures).
    pub failed: u64,
    /// Events with nothing to do (other STIX types, unknown event names).
    pub ignored: u64,
    pub retries: u64,
    /// Lines in the dead-letter file.
    pub dead_letters: usize,
    /// HarfangLab requests seen by the simulator, by `(method, resource)`.
    pub harfanglab_requests: BTreeMap<(String, String), u64>,
    pub harfanglab_total: u64,
    /// Stream connections the OpenCTI simulator served (1 + reconnects).
    pub stream_connections: usize,
    pub elapsed: Duration,
}

/// The HarfangLab state and counters after the demo.
#[derive(Clone, Debug)]
pub struct DemoResult {
    pub iocs: Vec<IocRule>,
    pub sigma: Vec<RemoteRule>,
    pub yara: Vec<RemoteRule>,
    pub counters: DemoCounters,
    /// The dead-letter records (JSON lines).
    pub dead_letters: Vec<String>,
    /// Indicator internal id → name, from the scenario (to print holders readably).
    pub names: HashMap<String, String>,
    pub summary: RunSummary,
    pub last_event_id: String,
    /// What the scenario asks for, read from its events (the report's story).
    pub scenario: ScenarioFacts,
}

impl DemoResult {
    /// Holder ids of an IOC rule (from its comment).
    pub fn holders(rule: &IocRule) -> Vec<String> {
        let (c, _) = RuleComment::decode(rule.comment.as_deref());
        c.holders.into_iter().map(|h| h.id).collect()
    }

    /// Holder names (ids when unknown).
    pub fn holder_names(&self, rule: &IocRule) -> Vec<String> {
        Self::holders(rule)
            .into_iter()
            .map(|id| self.names.get(&id).cloned().unwrap_or(id))
            .collect()
    }
}

/// Internal id → name for every indicator of the scenario (latest name wins).
fn scenario_names(events: &[octisim::ScenarioEvent]) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for ev in events {
        let d = &ev.data["data"];
        if d["type"] != "indicator" {
            continue;
        }
        let id = d
            .pointer(&format!("/extensions/{OCTI_EXT}/id"))
            .and_then(Value::as_str);
        if let (Some(id), Some(name)) = (id, d["name"].as_str()) {
            names.insert(id.to_owned(), name.to_owned());
        }
    }
    names
}

/// Run the demo and return the HarfangLab state it produced.
pub fn run_demo(opts: &DemoOptions) -> Result<DemoResult, DemoError> {
    let started = Instant::now();
    let scenario = parse_scenario(&opts.scenario).map_err(DemoError::Scenario)?;
    let names = scenario_names(&scenario);
    let facts = ScenarioFacts::read(&scenario);
    let n_events = scenario.len();
    let mut octi = octisim::serve(
        "127.0.0.1:0",
        OpenCtiSimConfig {
            scenario,
            heartbeat: Duration::from_millis(200),
            ..OpenCtiSimConfig::default()
        },
    )
    .map_err(DemoError::Simulator)?;
    octi.set_drop_every(opts.drop_stream_every);
    let hl = hlsim::serve(
        "127.0.0.1:0",
        SimConfig {
            faults: opts.harfanglab_faults.clone(),
            ..SimConfig::default()
        },
    )
    .map_err(DemoError::Simulator)?;
    let last = octi.event_ids().last().cloned().unwrap_or_default();

    let (state_dir, temporary) = match &opts.state_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "harfanglab-intel-demo-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4()
            )),
            true,
        ),
    };
    let config = demo_config(&octi.base_url(), hl.base_url(), &state_dir, opts.workers);
    let stats = PipelineStats::new();
    let shutdown = Shutdown::new();
    let run_opts = RunOptions {
        stats: stats.clone(),
        notifier: Notifier::disabled(),
        summary_every: Duration::from_secs(10),
        tick_every: Duration::from_millis(500),
        startup_backoff_max: Duration::from_secs(2),
        stream_backoff: Duration::from_millis(50),
    };

    let outcome = std::thread::scope(|scope| {
        let service = std::thread::Builder::new()
            .name("demo-service".into())
            .spawn_scoped(scope, || service::run_with(&config, &shutdown, run_opts))
            .map_err(DemoError::Simulator)?;
        let deadline = Instant::now() + opts.timeout;
        let reached = loop {
            let w = stats.snapshot().watermark;
            if w.as_deref()
                .is_some_and(|w| compare_event_ids(w, &last) != std::cmp::Ordering::Less)
            {
                break Ok(());
            }
            if service.is_finished() {
                break Ok(()); // its result says why
            }
            if Instant::now() >= deadline {
                break Err(DemoError::Timeout {
                    reached: w,
                    last: last.clone(),
                });
            }
            // A 20 ms poll of the checkpoint that a stop request (Ctrl-C) ends at once.
            if opts.stop.wait_timeout(Duration::from_millis(20)) {
                break Err(DemoError::Interrupted {
                    reached: stats.snapshot().watermark,
                    last: last.clone(),
                });
            }
        };
        shutdown.trigger();
        let result = service.join().map_err(|_| DemoError::Panicked)?;
        reached?;
        result.map_err(DemoError::Service)
    });

    let dead_letter_file =
        state_dir.join(service::dead_letter_name(&config.connector.id.to_string()));
    let dead_letters: Vec<String> = std::fs::read_to_string(&dead_letter_file)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    if temporary {
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    let summary = outcome?;

    let mut requests = BTreeMap::new();
    for ((method, resource), n) in hl.request_counts() {
        requests.insert((method, resource), n);
    }
    let s = &summary.stats;
    let counters = DemoCounters {
        events: n_events,
        applied: s.applied,
        skipped: s.skipped,
        failed: s.failed,
        ignored: s.ignored,
        retries: s.retries,
        dead_letters: dead_letters.len(),
        harfanglab_total: hl.total_requests(),
        harfanglab_requests: requests,
        stream_connections: octi.stream_requests().len(),
        elapsed: started.elapsed(),
    };
    let result = DemoResult {
        iocs: hl.ioc_rules(),
        sigma: hl.sigma_rules(),
        yara: hl.yara_files(),
        counters,
        dead_letters,
        names,
        summary,
        last_event_id: last,
        scenario: facts,
    };
    hl.shutdown();
    octi.shutdown();
    Ok(result)
}

/// The configuration the demo runs with (what a user would put in `config.yml`): the
/// product's workers (`auto` unless `workers` fixes a count) and coalescing.
pub fn demo_config(
    opencti_url: &str,
    harfanglab_url: &str,
    state_dir: &std::path::Path,
    workers: Option<usize>,
) -> Config {
    let mut c = Config::default();
    c.opencti.url = opencti_url.to_owned();
    c.opencti.token = Secret::new("sim-token");
    c.opencti.tls = TlsVerify::SystemRoots;
    c.opencti.request_timeout = Duration::from_secs(10);
    c.connector.id = uuid::Uuid::from_u128(0x2b0c_7a9e_0000_4000_8000_0000_0000_0001);
    c.connector.name = "HarfangLab Intel (demo)".to_owned();
    c.connector.scope = vec!["harfanglab".to_owned()];
    c.connector.live_stream_id = "live".to_owned();
    c.connector.recover = Recover::Disabled;
    c.connector.ping_interval = Duration::from_secs(1);
    c.connector.stream_idle_timeout = Duration::from_secs(5);
    c.harfanglab.url = harfanglab_url.to_owned();
    c.harfanglab.token = Secret::new("sim-token");
    c.harfanglab.tls = TlsVerify::SystemRoots;
    c.harfanglab.source_list_name = DEMO_LIST.to_owned();
    c.harfanglab.remove_indicator = true;
    c.harfanglab.connect_timeout = Duration::from_secs(5);
    c.harfanglab.request_timeout = Duration::from_secs(10);
    c.harfanglab.max_retries = 10;
    c.harfanglab.retry_backoff_max = Duration::from_millis(500);
    c.service.state_dir = state_dir.to_owned();
    c.service.use_product_concurrency();
    if let Some(n) = workers {
        c.service.workers = n;
        c.service.workers_auto = false;
    }
    c.service.shutdown_timeout = Duration::from_secs(5);
    // The demo tells the live stream's story; `harfanglab-intel reconcile` is the pass.
    c.reconcile.interval = None;
    c
}
