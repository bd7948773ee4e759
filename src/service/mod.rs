//! The running service: startup against both ends, then stream sessions through the pipeline
//! until shutdown. `app::run` and the demo call [`run_with`]; `main` owns signals.
//!
//! Two halves. `startup` (its own file): OpenCTI `about` (version) → `registerConnector`
//! (skipped in dry-run) → reconcile the local checkpoint with the platform state → first
//! `pingConnector` (as pycti, right after registration; skipped in dry-run) → HarfangLab `probe`
//! → `ensure_source` for each of the three lists, which yields one `Started` value. Serving (here)
//! consumes it: metrics server (when enabled), signal watch, ping and watchdog threads around the
//! sessions (stream reader + pipeline), then the final checkpoint and ping.
//!
//! Decisions:
//! - **Unreachable at startup** (network error, timeout, 429/5xx) is retried with the crate's
//!   backoff (`crate::retry`: 1 s doubling to `startup_backoff_max`, 60 s, with jitter, at least
//!   the server's `Retry-After`), each attempt logged, until it works or shutdown: a supervisor
//!   restart loop would only add noise. **Fatal** answers (401/403, TLS, bad URL,
//!   unknown stream, GraphQL errors at registration, a platform that refuses even the minimal
//!   registration) end the run with a clear error (exit 1). Fields a platform does not know are
//!   dropped by the GraphQL client itself (`opencti::api`), not here.
//! - **Sessions**: one stream reader + one pipeline run is a session. A reset from the OpenCTI
//!   UI (seen by the ping) ends the session (draining it), replaces the local checkpoint with
//!   the first-run position, and starts a new session; the old state is never pushed back.
//! - **Dry-run**: HarfangLab writes are logged, not made (`DryRunApi`); the checkpoint and dead
//!   letters use `<id>.dry-run` files, and nothing is written to OpenCTI (no register, no ping)
//!   so a later real run starts from its own position.
//! - **Shutdown**: the global [`Shutdown`] stops the session (drain within
//!   `service.shutdown_timeout`), then the final checkpoint is written and a last ping sent.

mod handler;
mod hooks;
mod reconciling;
mod startup;

pub use handler::{Handler, Work, also_keys, event_key};
pub use reconciling::{SideSink, pass_options};

use crate::config::Config;
use crate::harfanglab::client::ClientConfigError;
use crate::harfanglab::model::SourceLists;
use crate::harfanglab::{Client, HarfangLabError, ThreatIntelApi};
use crate::metrics::{DEFAULT_HEALTH_WINDOW, Health, Metrics, MetricsServer};
use crate::notify::{Notifier, WatchdogGate};
use crate::opencti::api::{ApiError, OpenCtiApi, PlatformVersion};
use crate::opencti::stream::{StreamError, StreamOptions, StreamReader};
use crate::pipeline::{
    self, DeadLetterError, DeadLetterLog, PipelineError, PipelineOptions, PipelineStats, Shutdown,
    StatsSnapshot,
};
use crate::state::{self, CheckpointWriter, FirstRun, LocalCheckpoint};
use crate::sync::dry_run::DryRunApi;
use crate::sync::{SyncSettings, Syncer};
use hooks::{Hooks, Pinger, Shared, Sink};
use startup::Startup;
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

/// Knobs that are not user configuration (tests and the demo change them).
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Live pipeline counters (clone before the run to watch it from elsewhere).
    pub stats: PipelineStats,
    /// systemd notifications (`Notifier::from_env()` for the real service).
    pub notifier: Notifier,
    /// Period of the pipeline's summary line and of ours (with the lag).
    pub summary_every: Duration,
    /// Period of the owner tick (gauges, `STATUS=`, idle watchdog progress).
    pub tick_every: Duration,
    /// Cap of the startup retry backoff.
    pub startup_backoff_max: Duration,
    /// Ceiling of the first stream reconnect delay (doubles with jitter up to 60 s).
    pub stream_backoff: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            stats: PipelineStats::new(),
            notifier: Notifier::from_env(),
            summary_every: Duration::from_secs(60),
            tick_every: Duration::from_secs(2),
            startup_backoff_max: Duration::from_secs(60),
            stream_backoff: Duration::from_secs(1),
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    /// Stream sessions (1 + resets from the UI); 0 when stopped during startup.
    pub sessions: u32,
    pub stats: StatsSnapshot,
    /// The final checkpoint position.
    pub watermark: Option<String>,
    /// HarfangLab HTTP exchanges made (retries included).
    pub harfanglab_requests: u64,
    /// Writes a dry run logged instead of making.
    pub dry_run_skipped_writes: u64,
    pub elapsed: Duration,
}

/// Why the service stopped with an error. All are fatal for the process (exit 1).
#[derive(Debug)]
pub enum ServiceError {
    /// OpenCTI refused us (token, capability, setup) or answered nonsense.
    OpenCti(ApiError),
    /// The live stream cannot be read (token, unknown stream id, TLS setup).
    Stream(StreamError),
    /// HarfangLab refused us (token, permission, TLS) or answered nonsense.
    HarfangLab(HarfangLabError),
    /// The HarfangLab client cannot be built (URL, CA bundle).
    ClientSetup(ClientConfigError),
    /// The state directory cannot be created.
    StateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The dead-letter file in the state directory cannot be opened.
    DeadLetters(DeadLetterError),
    /// The pipeline stopped (fatal event outcome, dead-letter file, worker panic).
    Pipeline(PipelineError),
    /// A thread could not be started.
    Thread(std::io::Error),
    /// The metrics server cannot listen on `addr` (the port is taken, or the address is not
    /// this host's).
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // These read as the error they carry.
            ServiceError::OpenCti(e) => fmt::Display::fmt(e, f),
            ServiceError::Stream(e) => fmt::Display::fmt(e, f),
            ServiceError::HarfangLab(e) => fmt::Display::fmt(e, f),
            ServiceError::ClientSetup(e) => fmt::Display::fmt(e, f),
            ServiceError::Pipeline(e) => fmt::Display::fmt(e, f),
            ServiceError::StateDir { path, source } => {
                write!(
                    f,
                    "state directory: cannot create {}: {source}",
                    path.display()
                )
            }
            ServiceError::DeadLetters(e) => write!(f, "state directory: {e}"),
            ServiceError::Thread(e) => write!(f, "cannot start a thread: {e}"),
            // `source` names the address ("metrics server cannot listen on ...: Address in use").
            ServiceError::Metrics { addr, source } => write!(
                f,
                "{source}: port {} is taken or {} is not an address of this host; choose a free \
                 CONNECTOR_METRICS_PORT (or CONNECTOR_METRICS_HOST), or set \
                 CONNECTOR_EXPOSE_METRICS=false",
                addr.port(),
                addr.ip()
            ),
        }
    }
}

impl std::error::Error for ServiceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServiceError::OpenCti(e) => Some(e),
            ServiceError::Stream(e) => Some(e),
            ServiceError::HarfangLab(e) => Some(e),
            ServiceError::ClientSetup(e) => Some(e),
            ServiceError::DeadLetters(e) => Some(e),
            ServiceError::Pipeline(e) => Some(e),
            ServiceError::StateDir { source, .. }
            | ServiceError::Thread(source)
            | ServiceError::Metrics { source, .. } => Some(source),
        }
    }
}

/// Run the connector with production options until `shutdown` (or a fatal error).
pub fn run(config: &Config, shutdown: &Shutdown) -> Result<RunSummary, ServiceError> {
    run_with(config, shutdown, RunOptions::default())
}

/// [`run`] with explicit [`RunOptions`]: `Startup` until both ends are up, then
/// `Started::serve` until shutdown.
pub fn run_with(
    config: &Config,
    shutdown: &Shutdown,
    opts: RunOptions,
) -> Result<RunSummary, ServiceError> {
    let began = Instant::now();
    match Startup::new(config, shutdown, &opts).run()? {
        Some(started) => started.serve(began),
        None => {
            log::info!("shutdown during startup");
            Ok(RunSummary {
                sessions: 0,
                stats: StatsSnapshot::default(),
                watermark: None,
                harfanglab_requests: 0,
                dry_run_skipped_writes: 0,
                elapsed: began.elapsed(),
            })
        }
    }
}

/// Everything serving needs, established by [`Startup`]: both ends up, the stream position
/// reconciled, the source lists known.
struct Started<'a> {
    config: &'a Config,
    shutdown: &'a Shutdown,
    opts: &'a RunOptions,
    api: OpenCtiApi,
    client: Client,
    version: Option<PlatformVersion>,
    dry_run: bool,
    connector_id: String,
    file_id: String,
    first_run: FirstRun,
    start: state::Checkpoint,
    writer: CheckpointWriter,
    /// Whether the startup ping went through (`None`: not sent, dry-run).
    first_ping: Option<bool>,
    lists: SourceLists,
}

impl Started<'_> {
    /// Serve until shutdown (or a fatal error), then save the final checkpoint and send a last
    /// ping with it.
    fn serve(self, began: Instant) -> Result<RunSummary, ServiceError> {
        let h = &self.config.harfanglab;
        let settings = SyncSettings {
            lists: self.lists.clone(),
            remove_indicator: h.remove_indicator,
            rule_maturity: h.rule_maturity.as_str().to_owned(),
            enforce_enabled: self.config.reconcile.enforce_enabled,
        };
        let result = if self.dry_run {
            let dry = DryRunApi::new(self.client.clone());
            let syncer = Syncer::new(dry, settings);
            self.serve_with(syncer, |s| s.api().skipped_writes())
        } else {
            self.serve_with(Syncer::new(self.client.clone(), settings), |_| 0)
        };
        let final_cp = self.writer.current().map(|l| l.checkpoint);
        let Started {
            writer,
            api,
            client,
            version,
            dry_run,
            connector_id,
            opts,
            ..
        } = self;
        if let Err(e) = writer.finish() {
            log::error!("final checkpoint save failed: {e}");
        }
        let (sessions, dry_writes) = result?;
        // Last ping with the final position (the shutdown only shortens its retry waits).
        if !dry_run {
            match api.ping_connector(&connector_id, final_cp.as_ref(), version) {
                Ok(_) => log::debug!("final ping sent"),
                Err(e) => log::warn!("final ping to OpenCTI failed: {e}"),
            }
        }
        Ok(RunSummary {
            sessions,
            watermark: final_cp.map(|c| c.start_from),
            stats: opts.stats.snapshot(),
            harfanglab_requests: client.stats().total_requests(),
            dry_run_skipped_writes: dry_writes,
            elapsed: began.elapsed(),
        })
    }

    /// Metrics, ping and watchdog threads around the session loop. Returns the number of
    /// sessions and the dry-run write count.
    fn serve_with<A: ThreatIntelApi>(
        &self,
        syncer: Syncer<A>,
        dry_writes: impl Fn(&Syncer<A>) -> u64,
    ) -> Result<(u32, u64), ServiceError> {
        let writer = &self.writer;
        let c = &self.config.connector;
        let metrics = Metrics::with_prefix(&c.metrics_namespace, &c.metrics_subsystem);
        if let Some(ok) = self.first_ping {
            metrics.opencti_ping(ok);
        }
        let health = Health::new(DEFAULT_HEALTH_WINDOW);
        health.harfanglab_reachable();
        health.opencti_reachable();
        let notifier = self.opts.notifier.clone();
        let gate = WatchdogGate::new(
            notifier.clone(),
            Duration::from_secs(60).max(self.opts.tick_every * 3),
        );
        register_collectors(&metrics, &self.client, &self.opts.stats);
        let _server = match c.metrics_addr {
            Some(addr) => {
                let s = MetricsServer::start(&addr.to_string(), metrics.clone(), health.clone())
                    .map_err(|source| ServiceError::Metrics { addr, source })?;
                log::info!("metrics and /healthz served on http://{}", s.local_addr());
                Some(s)
            }
            None => None,
        };
        let shared = Shared::new(
            metrics.clone(),
            health.clone(),
            notifier.clone(),
            gate.clone(),
            self.opts.stats.clone(),
        );
        let api = self.api.clone();
        let handler = Handler::new(api, syncer, metrics, health, gate.clone());
        // Ends the helper threads (ping, watchdog, signal watch) when the session loop is over.
        let helpers = Shutdown::new();
        let result = std::thread::scope(|scope| {
            let (shared, helpers, global) = (&shared, &helpers, self.shutdown);
            std::thread::Builder::new()
                .name("signal-watch".into())
                .spawn_scoped(scope, move || {
                    crossbeam_channel::select! {
                        recv(global.receiver()) -> _ => {
                            shared.notifier.stopping();
                            shared.notifier.status("stopping: draining in-flight events");
                            shared.stop_session();
                        }
                        recv(helpers.receiver()) -> _ => {}
                    }
                })
                .map_err(ServiceError::Thread)?;
            let pinger = Pinger {
                api: &self.api,
                client: &self.client,
                writer,
                shared,
                connector_id: self.connector_id.clone(),
                version: self.version,
                interval: c.ping_interval,
                dry_run: self.dry_run,
            };
            let ping = std::thread::Builder::new()
                .name("ping".into())
                .spawn_scoped(scope, move || pinger.run(helpers));
            if let Err(e) = ping {
                helpers.trigger(); // ends the signal watcher, so the scope can close
                return Err(ServiceError::Thread(e));
            }
            let syncer = handler.syncer();
            let (client, inventory) = (&self.client, syncer.inventory());
            let lists = &syncer.settings().lists;
            let inv = std::thread::Builder::new()
                .name("inventory".into())
                .spawn_scoped(scope, move || {
                    reconciling::build_inventory(client, lists, inventory)
                });
            if let Err(e) = inv {
                log::warn!("inventory thread not started: {e}");
            }
            let watchdog = gate.spawn(helpers.receiver().clone());
            if let Err(e) = watchdog {
                log::warn!("watchdog thread not started: {e}");
            }
            let r = self.sessions(&handler, writer, shared);
            helpers.trigger();
            r
        });
        let sessions = result?;
        Ok((sessions, dry_writes(handler.syncer())))
    }

    /// Run sessions until shutdown; a UI reset starts a new one from the first-run position.
    fn sessions<A: ThreatIntelApi>(
        &self,
        handler: &Handler<A>,
        writer: &CheckpointWriter,
        shared: &Shared,
    ) -> Result<u32, ServiceError> {
        let mut start = self.start.clone();
        let mut count = 0;
        loop {
            count += 1;
            let session = Shutdown::new();
            *shared
                .session
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(session.clone());
            if self.shutdown.is_triggered() {
                session.trigger();
            }
            shared.no_recover.store(false, Ordering::SeqCst);
            self.session(handler, writer, shared, &session, &start)?;
            let reset = shared.reset_pending.load(Ordering::SeqCst);
            if reset {
                // Also on shutdown during the reset drain: the platform has already cleared its
                // state, so keeping (and finally pinging) the old position would undo the reset.
                start = self.first_run.checkpoint(SystemTime::now());
                writer.replace(LocalCheckpoint {
                    checkpoint: start.clone(),
                    platform_acked: false,
                });
            }
            if self.shutdown.is_triggered() || !reset {
                if reset {
                    log::warn!(
                        "stopping during a reset from the OpenCTI UI: the next run starts after {}",
                        start.start_from
                    );
                }
                return Ok(count);
            }
            log::warn!(
                "restarting the stream after a reset from the OpenCTI UI: start after {}, \
                 recover until {}",
                start.start_from,
                start.recover_until.as_deref().unwrap_or("-")
            );
            shared.reset_pending.store(false, Ordering::SeqCst);
        }
    }

    /// One reader + pipeline run from `start` until `session` fires or the reader ends.
    fn session<A: ThreatIntelApi>(
        &self,
        handler: &Handler<A>,
        writer: &CheckpointWriter,
        shared: &Shared,
        session: &Shutdown,
        start: &state::Checkpoint,
    ) -> Result<(), ServiceError> {
        // Small channels: the pipeline's own in-flight window is the real buffer.
        let (item_tx, item_rx) = crossbeam_channel::bounded(64);
        let (input_tx, input_rx) = crossbeam_channel::bounded(64);
        let reader = StreamReader::spawn(
            StreamOptions {
                backoff_base: self.opts.stream_backoff,
                ..self.config.stream_options()
            },
            start.clone(),
            item_tx,
            session.receiver().clone(),
        )
        .map_err(ServiceError::Thread)?;
        let dead_letters = DeadLetterLog::open(
            &self.config.service.state_dir,
            &dead_letter_name(&self.file_id),
        )
        .map_err(ServiceError::DeadLetters)?;
        let popts = PipelineOptions {
            summary_every: self.opts.summary_every,
            tick_every: self.opts.tick_every,
            stats: self.opts.stats.clone(),
            worker_limit: self.client.worker_limit(),
            ..self.config.pipeline_options()
        };
        let mut sink = Sink {
            writer,
            shared,
            recover_until: start.recover_until.clone(),
        };
        let mut hooks = Hooks {
            shared,
            summary_every: self.opts.summary_every,
            last_summary: Instant::now(),
            client: self.client.stats(),
            limiter: self.client.limiter(),
            opencti: self.api.retry_activity(),
            seen: hooks::Activity::default(),
        };
        // Reconciliation jobs enter the pipeline here (`pipeline::synthetic`).
        let (side_tx, side_rx) = crossbeam_channel::bounded(64);
        let schedule = reconciling::Schedule {
            config: self.config,
            client: &self.client,
            lists: &handler.syncer().settings().lists,
            inventory: handler.syncer().inventory(),
            metrics: &shared.metrics,
            stats: &self.opts.stats,
        };
        let result = std::thread::scope(|scope| {
            let adapter = std::thread::Builder::new()
                .name("stream-adapter".into())
                .spawn_scoped(scope, move || hooks::forward(&item_rx, &input_tx, shared))
                .map_err(ServiceError::Thread)?;
            let side = SideSink {
                tx: side_tx,
                stop: session.receiver().clone(),
            };
            let schedule = &schedule;
            std::thread::Builder::new()
                .name("reconcile".into())
                .spawn_scoped(scope, move || schedule.run(side))
                .map_err(ServiceError::Thread)?;
            let r = pipeline::run_with_side(
                input_rx,
                side_rx,
                handler,
                &mut sink,
                &mut hooks,
                &popts,
                session,
                dead_letters,
            );
            // The pipeline may have stopped on its own (fatal outcome): stop the reader too.
            session.trigger();
            let _ = adapter.join();
            Ok::<_, ServiceError>(r)
        });
        let pipeline_result = result?;
        let reader_result = reader.join();
        reader_result.map_err(ServiceError::Stream)?;
        let summary = pipeline_result.map_err(ServiceError::Pipeline)?;
        log::debug!(
            "session ended ({:?}), checkpoint {}",
            summary.reason,
            summary.watermark.as_deref().unwrap_or("none")
        );
        Ok(())
    }
}

/// `<connector id>.dead-letters.jsonl` (same character rules as the checkpoint file).
pub fn dead_letter_name(file_id: &str) -> String {
    format!("{}.dead-letters.jsonl", state::file_safe(file_id))
}

/// Mirror the client's and the pipeline's own counters at scrape time.
fn register_collectors(metrics: &Metrics, client: &Client, stats: &PipelineStats) {
    let cs = client.stats();
    let limiter = client.limiter();
    metrics.add_collector(move |m| {
        m.set_concurrency(limiter.limit(), limiter.in_flight());
        for (op, status, n) in cs.snapshot() {
            m.set_harfanglab_requests(op, status, n);
        }
        for op in crate::harfanglab::client::Op::ALL {
            let r = cs.retries_of(op);
            if r > 0 {
                m.set_retries(op.name(), r);
            }
        }
    });
    let stats = stats.clone();
    metrics.add_collector(move |m| {
        let s = stats.snapshot();
        m.set_queue_depth(usize::try_from(s.in_flight).unwrap_or(usize::MAX));
        m.set_busy_workers(usize::try_from(s.busy_workers).unwrap_or(usize::MAX));
        m.set_waiting_retry(usize::try_from(s.retry_waiting).unwrap_or(usize::MAX));
        // The owner's count covers every dead-letter path, spent retry budgets included.
        m.set_dead_letters(s.failed);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harfanglab_request_metrics_carry_the_real_status_code() {
        use crate::harfanglab::ClientOptions;
        use crate::harfanglab::client::Op;
        use crate::secret::Secret;
        let (_tx, rx) = crossbeam_channel::bounded::<()>(0);
        let client = Client::new(
            ClientOptions::new("http://127.0.0.1:1", Secret::new("t")),
            rx,
        )
        .unwrap();
        let stats = client.stats();
        for status in [Some(404), Some(404), Some(429), Some(503), None] {
            stats.record(Op::GetRule, status);
        }
        let metrics = Metrics::new();
        register_collectors(&metrics, &client, &PipelineStats::new());
        let text = metrics.render();
        let line = |status: &str| {
            format!(
                "harfanglab_intel_harfanglab_requests_total{{op=\"get_rule\",status=\"{status}\"}}"
            )
        };
        for (status, n) in [("404", 2), ("429", 1), ("503", 1), ("error", 1)] {
            assert!(text.contains(&format!("{} {n}\n", line(status))), "{text}");
        }
        // The client's default cap, and nothing on the wire.
        assert!(
            text.contains("harfanglab_intel_concurrency_limit 256\n"),
            "{text}"
        );
        assert!(
            text.contains("harfanglab_intel_harfanglab_in_flight 0\n"),
            "{text}"
        );
        for wrong in ["400", "500"] {
            assert!(!text.contains(&line(wrong)), "{text}");
        }
    }

    /// A client that is never called (the collectors only read its stats).
    fn idle_client() -> Client {
        use crate::harfanglab::ClientOptions;
        use crate::secret::Secret;
        let (_tx, rx) = crossbeam_channel::bounded::<()>(0);
        Client::new(
            ClientOptions::new("http://127.0.0.1:1", Secret::new("t")),
            rx,
        )
        .unwrap()
    }

    /// Fails every attempt retryably (a 500: always counted against the budget).
    struct FailRetryably;

    impl pipeline::EventHandler<()> for FailRetryably {
        fn handle(&self, event_id: &str, _key: &str, _payload: &()) -> pipeline::Outcome {
            pipeline::Outcome::retry(format!("event {event_id}: HTTP 500"))
        }
    }

    fn one_event() -> crossbeam_channel::Receiver<pipeline::Input<()>> {
        let (tx, rx) = crossbeam_channel::unbounded();
        tx.send(pipeline::Input::Event {
            event_id: "1-0".into(),
            key: Some("indicator-a".into()),
            also_keys: Vec::new(),
            payload: (),
        })
        .unwrap();
        rx
    }

    /// Pipeline stats and the metrics that read them at scrape time (an idle client's too).
    fn collected_stats() -> (PipelineStats, Metrics) {
        let stats = PipelineStats::new();
        let metrics = Metrics::new();
        register_collectors(&metrics, &idle_client(), &stats);
        (stats, metrics)
    }

    fn pipeline_options(
        stats: &PipelineStats,
        retry: crate::retry::RetryPolicy,
    ) -> PipelineOptions {
        PipelineOptions {
            workers: 1,
            retry,
            stats: stats.clone(),
            ..PipelineOptions::default()
        }
    }

    /// The handler never sees the last failure as a dead letter (it only knows the attempt
    /// failed retryably): the count comes from the pipeline owner, which decides.
    #[test]
    fn dead_letters_total_counts_events_whose_retry_budget_is_spent() {
        let (stats, metrics) = collected_stats();
        let retry = crate::retry::RetryPolicy {
            max_retries: 1,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(5),
        };
        let source = one_event();
        let summary = pipeline::run(
            source,
            &FailRetryably,
            &mut (),
            &mut (),
            &pipeline_options(&stats, retry),
            &Shutdown::new(),
            DeadLetterLog::disabled(),
        )
        .unwrap();
        assert_eq!(summary.stats.failed, 1, "{:?}", summary.stats);
        let text = metrics.render();
        assert!(
            text.contains("\nharfanglab_intel_dead_letters_total 1\n"),
            "{text}"
        );
    }

    #[test]
    fn events_waiting_for_their_retry_are_a_gauge() {
        let (stats, metrics) = collected_stats();
        // A first backoff far longer than the test: the event stays in the timer heap.
        let retry = crate::retry::RetryPolicy {
            max_retries: 5,
            base: Duration::from_secs(600),
            cap: Duration::from_secs(600),
        };
        let opts = pipeline_options(&stats, retry);
        let shutdown = Shutdown::new();
        let (tx, source) = crossbeam_channel::unbounded();
        tx.send(pipeline::Input::Event {
            event_id: "1-0".into(),
            key: Some("indicator-a".into()),
            also_keys: Vec::new(),
            payload: (),
        })
        .unwrap();
        let gauge = "\nharfanglab_intel_events_waiting_retry ";
        assert!(metrics.render().contains(&format!("{gauge}0\n")));
        std::thread::scope(|s| {
            let run = s.spawn(|| {
                pipeline::run(
                    source,
                    &FailRetryably,
                    &mut (),
                    &mut (),
                    &opts,
                    &shutdown,
                    DeadLetterLog::disabled(),
                )
            });
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while stats.snapshot().retry_waiting == 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let text = metrics.render();
            shutdown.trigger();
            drop(tx);
            let _ = run.join().expect("pipeline thread");
            assert!(text.contains(&format!("{gauge}1\n")), "{text}");
        });
    }

    #[test]
    fn dead_letter_file_is_per_connector() {
        assert_eq!(
            dead_letter_name("2b0c7a9e-0000-4000-8000-000000000001"),
            "2b0c7a9e-0000-4000-8000-000000000001.dead-letters.jsonl"
        );
        assert_eq!(
            dead_letter_name("a/b.dry-run"),
            "a_b.dry-run.dead-letters.jsonl"
        );
    }
}
