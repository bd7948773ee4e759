//! `harfanglab-intel reconcile [--dry-run] [--json] [--force]`: one reconciliation pass, now,
//! through the same code as `run`'s passes (the pipeline, its workers and the same repairs),
//! without following the live stream. A human summary, plus with `--json` one JSON line per
//! drift on standard output (`class`, `object`, `action`, `reason`, `indicator`, `result`); the
//! summary then goes to standard error. Exit 0 when converged (dry-run: when the pass ran), 1 when
//! a repair failed, the guard tripped or the pass could not run, 2 on a configuration error.

use super::AppError;
use crate::harfanglab::model::{SourceKind, SourceLists};
use crate::harfanglab::{Client, HarfangLabError};
use crate::metrics::{Health, Metrics};
use crate::notify::{Notifier, WatchdogGate};
use crate::opencti::api::OpenCtiApi;
use crate::pipeline::{self, DeadLetterLog, PipelineOptions, Shutdown};
use crate::reconcile::{PassDeps, run_pass};
use crate::service::{Handler, SideSink, Work, pass_options};
use crate::sync::{SyncSettings, Syncer};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// What the command line asked for.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReconcileArgs {
    pub dry_run: bool,
    pub json: bool,
    pub force: bool,
}

/// Run the command: `Ok` when converged, [`AppError::NotConverged`] (exit 1, the summary said
/// why) or [`AppError::Reconcile`] when the pass could not run.
pub fn reconcile_command(
    path: Option<&Path>,
    args: ReconcileArgs,
    shutdown: &Shutdown,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), AppError> {
    let config = super::load_config(path, args.dry_run)?;
    match reconcile_once(&config, args, shutdown, out, err) {
        Ok(true) => Ok(()),
        Ok(false) => Err(AppError::NotConverged),
        Err(e) => Err(AppError::Reconcile(e)),
    }
}

/// One pass; `Ok(converged)`.
fn reconcile_once(
    config: &crate::config::Config,
    args: ReconcileArgs,
    shutdown: &Shutdown,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<bool, String> {
    let dry_run = config.harfanglab.dry_run;
    let opencti = OpenCtiApi::new(config.opencti_api_options())
        .map_err(|e| e.to_string())?
        .with_shutdown(shutdown.receiver().clone());
    opencti.about().map_err(|e| e.to_string())?;
    let client = Client::new(
        config.harfanglab_client_options(),
        shutdown.receiver().clone(),
    )
    .map_err(|e| e.to_string())?;
    client.probe().map_err(|e| e.to_string())?;
    let name = &config.harfanglab.source_list_name;
    let list = |kind: SourceKind| -> Result<String, HarfangLabError> {
        if dry_run {
            Ok(client
                .find_source(kind, name)?
                .map(|l| l.id)
                .unwrap_or_default())
        } else {
            client.ensure_source(kind, name).map(|l| l.id)
        }
    };
    let lists = SourceLists {
        ioc: list(SourceKind::Ioc).map_err(|e| e.to_string())?,
        sigma: list(SourceKind::Sigma).map_err(|e| e.to_string())?,
        yara: list(SourceKind::Yara).map_err(|e| e.to_string())?,
    };
    let settings = SyncSettings {
        lists: lists.clone(),
        remove_indicator: config.harfanglab.remove_indicator,
        rule_maturity: config.harfanglab.rule_maturity.as_str().to_owned(),
        enforce_enabled: config.reconcile.enforce_enabled,
    };
    let syncer = Syncer::new(client.clone(), settings);
    let metrics = Metrics::new();
    let gate = WatchdogGate::new(Notifier::disabled(), Duration::from_secs(60));
    let handler = Handler::new(
        opencti,
        syncer,
        metrics.clone(),
        Health::new(crate::metrics::DEFAULT_HEALTH_WINDOW),
        gate,
    );
    let mut opts = pass_options(config);
    opts.force = args.force;
    opts.keep_records = true;
    let stream = config.stream_options();
    let popts = PipelineOptions {
        worker_limit: client.worker_limit(),
        ..config.pipeline_options()
    };
    // No live stream here: the source stays empty, and is closed once the pass is over (the
    // pipeline then ends).
    let (source_tx, source_rx) = crossbeam_channel::bounded::<pipeline::Input<Work>>(1);
    let (side_tx, side_rx) = crossbeam_channel::bounded(64);
    let result = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            pipeline::run_with_side(
                source_rx,
                side_rx,
                &handler,
                &mut (),
                &mut (),
                &popts,
                shutdown,
                DeadLetterLog::disabled(),
            )
        });
        let sink = SideSink {
            tx: side_tx,
            stop: shutdown.receiver().clone(),
        };
        let deps = PassDeps {
            client: &client,
            lists: &lists,
            stream: &stream,
            inventory: None,
            jobs: &sink,
            stop: shutdown.receiver(),
            metrics: Some(&metrics),
        };
        let summary = run_pass(&deps, opts);
        drop(sink);
        drop(source_tx);
        let piped = run.join();
        (summary, piped)
    });
    let (summary, piped) = result;
    match piped {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("a worker panicked".to_owned()),
    }
    let summary = summary.map_err(|e| e.to_string())?;
    let human = summary.human();
    let written = if args.json {
        summary
            .records
            .iter()
            .try_for_each(|r| writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default()))
            .and_then(|()| err.write_all(human.as_bytes()))
    } else {
        out.write_all(human.as_bytes())
    };
    let _ = written.and_then(|()| out.flush());
    let ok = if dry_run {
        summary.guard.is_none() && !summary.interrupted
    } else {
        summary.converged()
    };
    Ok(ok)
}
