//! Reconciliation: HarfangLab converges on what OpenCTI says, whatever happened before (events
//! missed while down, dead-lettered events, rules written by the Python connector with other
//! casing, hand edits, a restored backup). The live stream gives latency; a pass gives truth.
//!
//! One pass:
//! 1. **Watch**: the pipeline owner starts remembering the keys of the stream events it admits
//!    (`pipeline::Side::Watch`), so a repair planned from this pass's view never overwrites a
//!    newer live event.
//! 2. **Actual** ([`actual`]): list our three source lists, every page, indexed by normalised
//!    identity with the holders decoded.
//! 3. **Desired** ([`desired`]): replay the configured live stream in recover mode and fold it
//!    into the set of indicators it delivers.
//! 4. **Guard**: the holders no longer desired ([`diff::plan_orphans`]); if releasing them would
//!    delete or disable more than `max_delete_ratio` of the objects we hold, nothing is repaired,
//!    an `error` names the numbers and a metric counts the trip (`--force` overrides). An empty
//!    OpenCTI answer (a token that lost its permissions, a changed stream filter) trips it.
//! 5. **Repair** through the pipeline as synthetic jobs keyed by the indicator (the live path's
//!    per-key ordering): one job per desired indicator reads it through GraphQL like a live event,
//!    translates it as the live path does, diffs it against the index ([`diff::plan_indicator`])
//!    and repairs (merge duplicates, release holds it no longer needs, then the live upsert); one
//!    job per orphaned holder releases it. Jobs of indicators with a newer live event are dropped.
//!
//! Nothing here blocks the live stream: the pass runs on its own thread, its jobs take at most a
//! worker's share of the pipeline (`pipeline::synthetic`), and `/healthz` keeps its meaning.

pub mod actual;
pub mod desired;
pub mod diff;
pub mod schedule;

use crate::harfanglab::api::ThreatIntelApi;
use crate::harfanglab::model::SourceLists;
use crate::harfanglab::{Client, HarfangLabError};
use crate::metrics::Metrics;
use crate::opencti::api::OpenCtiApi;
use crate::opencti::stream::StreamOptions;
use crate::pipeline::Outcome;
use crate::retry::{FailureKind, Retryable};
use crate::sync::Syncer;
use crate::sync::inventory::Inventory;
use crate::sync::repair::HeldObject;
use crate::translate::{self, FormerState, Translation};
use actual::ActualIndex;
use crossbeam_channel::Receiver;
use desired::{DesiredIndicator, ReplayError};
use diff::{Action, Class, Drift};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// How a pass behaves.
#[derive(Clone, Debug)]
pub struct PassOptions {
    /// Report the drift, repair nothing.
    pub dry_run: bool,
    /// Repair even when the mass-deletion guard trips.
    pub force: bool,
    /// `HARFANGLAB_INTEL_RECONCILE_MAX_DELETE_RATIO`.
    pub max_delete_ratio: f64,
    /// `HARFANGLAB_INTEL_RECONCILE_ENFORCE_ENABLED`.
    pub enforce_enabled: bool,
    /// Keep one record per drift (the `reconcile` command prints them); `run` keeps counts only.
    pub keep_records: bool,
    /// The replay gives up after this long without any item.
    pub replay_stall: Duration,
}

impl Default for PassOptions {
    fn default() -> Self {
        PassOptions {
            dry_run: false,
            force: false,
            max_delete_ratio: 0.2,
            enforce_enabled: false,
            keep_records: false,
            replay_stall: Duration::from_secs(60),
        }
    }
}

/// Where a pass sends its jobs: the pipeline's side channel (`pipeline::Side`), wrapped by the
/// caller (the payload type is the caller's).
pub trait JobSink {
    /// Start remembering live keys; `false` when the pipeline is gone.
    fn watch(&self) -> bool;
    /// Queue one job keyed by `key` (blocks while the pipeline is busy); `false` when it is gone.
    fn submit(&self, key: String, job: ReconcileJob) -> bool;
    /// Stop remembering live keys.
    fn unwatch(&self);
}

/// What a pass reads and writes with.
pub struct PassDeps<'a> {
    /// Lists our source lists.
    pub client: &'a Client,
    pub lists: &'a SourceLists,
    /// The live reader's options: the replay uses the same stream, token and headers.
    pub stream: &'a StreamOptions,
    /// Taught by the listing when not built yet.
    pub inventory: Option<&'a Inventory>,
    pub jobs: &'a dyn JobSink,
    /// Shutdown (or end of the session): the pass stops where it is.
    pub stop: &'a Receiver<()>,
    pub metrics: Option<&'a Metrics>,
}

/// The guard tripped: the numbers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GuardTrip {
    pub would_release: usize,
    pub held: usize,
    pub ratio: f64,
    pub max_ratio: f64,
    pub desired: usize,
}

/// What became of one drift.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Dry run, or the guard tripped: not repaired.
    Planned,
    Repaired,
    /// Reported only (a rule disabled by hand).
    Reported,
    Failed,
    /// Not run: a newer live event of the indicator came first, or shutdown.
    Dropped,
}

/// One drift and its fate (a `--json` line).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record {
    pub class: Class,
    pub object: String,
    pub action: Action,
    pub reason: String,
    /// The indicator (or recorded holder id) it is about.
    pub indicator: String,
    pub result: Fate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Counts per class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClassCounts {
    pub found: u64,
    pub repaired: u64,
    pub failed: u64,
}

/// What a pass did.
#[derive(Clone, Debug, Default)]
pub struct PassSummary {
    pub elapsed: Duration,
    /// Indicators the live stream delivers.
    pub desired: usize,
    /// Objects in our three lists.
    pub actual: usize,
    pub classes: [ClassCounts; 6],
    /// Jobs not run (newer live event, shutdown).
    pub dropped: u64,
    /// Desired indicators gone when their job read them (deleted since the replay).
    pub gone: u64,
    /// Desired indicators whose pattern does not translate (left alone, as the live path's
    /// dead letter left them).
    pub untranslatable: u64,
    pub guard: Option<GuardTrip>,
    /// The platform replayed its log instead of recovering (exact only while it holds it all).
    pub log_replay: bool,
    /// Stopped before the end.
    pub interrupted: bool,
    pub records: Vec<Record>,
}

impl PassSummary {
    /// Every drift found was repaired (or only reported), nothing stopped the pass.
    pub fn converged(&self) -> bool {
        self.guard.is_none() && !self.interrupted && self.failed() == 0
    }

    pub fn found(&self) -> u64 {
        self.classes.iter().map(|c| c.found).sum()
    }

    pub fn failed(&self) -> u64 {
        self.classes.iter().map(|c| c.failed).sum()
    }

    /// Human summary, a few lines.
    pub fn human(&self) -> String {
        let mut out = format!(
            "reconciliation: {} indicators in the live stream, {} objects in our lists, {} drift found in {}\n",
            self.desired,
            self.actual,
            self.found(),
            humantime::format_duration(Duration::from_millis(self.elapsed.as_millis() as u64))
        );
        for class in Class::ALL {
            let c = self.classes[class.index()];
            if c.found > 0 {
                out.push_str(&format!(
                    "  {:<14} found {:>6}  repaired {:>6}  failed {:>6}\n",
                    class.as_str(),
                    c.found,
                    c.repaired,
                    c.failed
                ));
            }
        }
        if let Some(g) = &self.guard {
            out.push_str(&format!(
                "  GUARD: would release {} of {} held objects ({:.0}% > {:.0}%): nothing repaired (--force overrides)\n",
                g.would_release,
                g.held,
                g.ratio * 100.0,
                g.max_ratio * 100.0
            ));
        }
        if self.dropped > 0 {
            out.push_str(&format!(
                "  {} jobs not run (a newer live event, or shutdown)\n",
                self.dropped
            ));
        }
        if self.untranslatable > 0 {
            out.push_str(&format!(
                "  {} indicators with a pattern that cannot be translated were left alone\n",
                self.untranslatable
            ));
        }
        if self.log_replay {
            out.push_str("  note: the platform replayed its log instead of recovering (exact only while it keeps the whole log)\n");
        }
        if self.interrupted {
            out.push_str("  interrupted before the end\n");
        }
        out.push_str(if self.converged() {
            "  converged\n"
        } else {
            "  NOT converged\n"
        });
        out
    }
}

/// Why a pass could not run at all.
#[derive(Debug)]
pub enum PassError {
    /// Listing our lists failed.
    HarfangLab(HarfangLabError),
    /// The replay failed.
    Replay(ReplayError),
}

impl fmt::Display for PassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PassError::HarfangLab(e) => write!(f, "listing our HarfangLab lists: {e}"),
            PassError::Replay(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for PassError {}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The tallies of a pass, shared by its jobs.
#[derive(Default)]
struct Tally {
    classes: [ClassCounts; 6],
    dropped: u64,
    gone: u64,
    untranslatable: u64,
    records: Vec<Record>,
}

/// One pass's shared state (the jobs hold it).
pub struct Pass {
    index: ActualIndex,
    desired: HashMap<String, DesiredIndicator>,
    opts: PassOptions,
    tally: Mutex<Tally>,
    pending: Mutex<usize>,
    done: Condvar,
}

impl Pass {
    fn new(
        index: ActualIndex,
        desired: HashMap<String, DesiredIndicator>,
        opts: PassOptions,
    ) -> Pass {
        Pass {
            index,
            desired,
            opts,
            tally: Mutex::new(Tally::default()),
            pending: Mutex::new(0),
            done: Condvar::new(),
        }
    }

    fn record(&self, indicator: &str, drift: &[Drift], result: Fate, error: Option<&str>) {
        let mut t = lock(&self.tally);
        for d in drift {
            let c = &mut t.classes[d.class.index()];
            c.found += 1;
            let result = match (result, d.action) {
                (Fate::Repaired, Action::Report) => Fate::Reported,
                (r, _) => r,
            };
            match result {
                Fate::Repaired => c.repaired += 1,
                Fate::Failed => c.failed += 1,
                _ => {}
            }
            if self.opts.keep_records {
                t.records.push(Record {
                    class: d.class,
                    object: d.object.clone(),
                    action: d.action,
                    reason: d.reason.clone(),
                    indicator: indicator.to_owned(),
                    result,
                    error: error.map(str::to_owned),
                });
            }
        }
    }

    /// Wait until every job has finished (or been dropped); `false` on `stop`.
    fn wait(&self, stop: &Receiver<()>) -> bool {
        let mut pending = lock(&self.pending);
        while *pending > 0 {
            if stopped(stop) {
                return false;
            }
            pending = self
                .done
                .wait_timeout(pending, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// Has `stop` fired (a message, or every sender gone)?
fn stopped(stop: &Receiver<()>) -> bool {
    matches!(
        stop.try_recv(),
        Ok(()) | Err(crossbeam_channel::TryRecvError::Disconnected)
    )
}

/// What a job is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A desired indicator (by internal id): read, diff, repair.
    Indicator(String),
    /// A recorded holder no longer desired: release it from these objects.
    Orphan {
        holder: String,
        objects: Vec<HeldObject>,
        drift: Vec<Drift>,
    },
}

#[derive(Default)]
struct JobState {
    /// The drift its first run found (recorded when the job ends).
    drift: Option<Vec<Drift>>,
    /// The last run's error (`None` after a success).
    error: Option<String>,
    ran: bool,
}

/// One synthetic job of a pass. Dropping it (run, given up, or never run) accounts for it.
pub struct ReconcileJob {
    pass: Arc<Pass>,
    target: Target,
    state: Mutex<JobState>,
}

impl fmt::Debug for ReconcileJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconcileJob")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl ReconcileJob {
    fn new(pass: &Arc<Pass>, target: Target) -> ReconcileJob {
        *lock(&pass.pending) += 1;
        ReconcileJob {
            pass: Arc::clone(pass),
            target,
            state: Mutex::new(JobState::default()),
        }
    }

    /// What it is about, for logs and dead-letter-free failure reports.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Indicator(id) => format!("reconcile indicator {id}"),
            Target::Orphan {
                holder, objects, ..
            } => {
                format!(
                    "release orphaned holder {holder} from {} objects",
                    objects.len()
                )
            }
        }
    }
}

impl Drop for ReconcileJob {
    fn drop(&mut self) {
        let state = std::mem::take(&mut *lock(&self.state));
        let who = match &self.target {
            Target::Indicator(id) => id.as_str(),
            Target::Orphan { holder, .. } => holder.as_str(),
        };
        let drift = match &self.target {
            Target::Orphan { drift, .. } => Some(drift.clone()),
            Target::Indicator(_) => state.drift,
        };
        let dry = self.pass.opts.dry_run;
        match (state.ran, drift) {
            (false, drift) => {
                lock(&self.pass.tally).dropped += 1;
                if let Some(d) = drift {
                    self.pass.record(who, &d, Fate::Dropped, None);
                }
            }
            (true, Some(d)) if dry => self.pass.record(who, &d, Fate::Planned, None),
            (true, Some(d)) => match &state.error {
                None => self.pass.record(who, &d, Fate::Repaired, None),
                Some(e) => self.pass.record(who, &d, Fate::Failed, Some(e)),
            },
            (true, None) => {}
        }
        let mut pending = lock(&self.pass.pending);
        *pending = pending.saturating_sub(1);
        self.pass.done.notify_all();
    }
}

/// Run one job (a pipeline worker calls it for a synthetic job).
pub fn execute<A: ThreatIntelApi>(
    job: &ReconcileJob,
    opencti: &OpenCtiApi,
    syncer: &Syncer<A>,
) -> Outcome {
    let pass = &job.pass;
    let outcome = match &job.target {
        Target::Indicator(id) => indicator_job(job, id, opencti, syncer),
        Target::Orphan {
            holder, objects, ..
        } => {
            if pass.opts.dry_run {
                Ok(())
            } else {
                let mut first: Option<HarfangLabError> = None;
                for o in objects {
                    if let Err(e) = syncer.release_holder(o, holder) {
                        first.get_or_insert(e);
                    }
                }
                first.map_or(Ok(()), |e| Err(JobError::HarfangLab(e)))
            }
        }
    };
    let mut state = lock(&job.state);
    state.ran = true;
    match outcome {
        Ok(()) => {
            state.error = None;
            Outcome::Applied(String::new())
        }
        Err(JobError::Skip(why)) => {
            state.error = None;
            Outcome::Skipped(why)
        }
        Err(JobError::Outcome(o)) => {
            state.error = Some(match &o {
                Outcome::Failed { reason, .. } | Outcome::Fatal(reason) => reason.clone(),
                _ => String::new(),
            });
            o
        }
        Err(JobError::HarfangLab(e)) => {
            state.error = Some(e.to_string());
            if e.is_fatal() {
                Outcome::Fatal(e.to_string())
            } else {
                Outcome::failed(e.to_string(), e.failure_kind())
            }
        }
    }
}

enum JobError {
    /// Nothing to do (gone, untranslatable).
    Skip(String),
    /// The outcome as is (an OpenCTI read failure).
    Outcome(Outcome),
    HarfangLab(HarfangLabError),
}

impl From<HarfangLabError> for JobError {
    fn from(e: HarfangLabError) -> Self {
        JobError::HarfangLab(e)
    }
}

fn indicator_job<A: ThreatIntelApi>(
    job: &ReconcileJob,
    id: &str,
    opencti: &OpenCtiApi,
    syncer: &Syncer<A>,
) -> Result<(), JobError> {
    let pass = &job.pass;
    let read = opencti.indicator(id).map_err(|e| {
        JobError::Outcome(if e.is_fatal() {
            Outcome::Fatal(e.to_string())
        } else {
            match e.failure_kind() {
                kind @ FailureKind::Unavailable { .. } => Outcome::failed(e.to_string(), kind),
                _ => Outcome::retry(e.to_string()),
            }
        })
    })?;
    let Some(found) = read else {
        lock(&pass.tally).gone += 1;
        return Err(JobError::Skip("gone since the replay".to_owned()));
    };
    let indicator = found.to_translate();
    let translation = if indicator.revoked {
        Translation::default()
    } else {
        match translate::translate(&indicator) {
            Ok(t) => t,
            Err(e) if e.is_unsupported() => Translation::default(),
            Err(e) => {
                lock(&pass.tally).untranslatable += 1;
                return Err(JobError::Skip(e.to_string()));
            }
        }
    };
    let other_ids: Vec<String> = pass
        .desired
        .get(id)
        .map(|d| d.other_ids.clone())
        .unwrap_or_default();
    let plan = diff::plan_indicator(
        &pass.index,
        id,
        &other_ids,
        &translation,
        pass.opts.enforce_enabled,
    );
    {
        let mut state = lock(&job.state);
        if state.drift.is_none() {
            state.drift = Some(plan.drift.clone());
        }
    }
    if pass.opts.dry_run || plan.drift.is_empty() {
        return Ok(());
    }
    let mut first: Option<HarfangLabError> = None;
    for (key, stored) in &plan.merges {
        if let Err(e) = syncer.merge_duplicates(key, stored) {
            first.get_or_insert(e);
        }
    }
    for (object, holder) in &plan.releases {
        if let Err(e) = syncer.release_holder(object, holder) {
            first.get_or_insert(e);
        }
    }
    if plan.upsert && !indicator.revoked {
        let former = FormerState {
            ids: other_ids,
            // Known: nothing to release through a former pattern.
            iocs: Some(Vec::new()),
            ..FormerState::default()
        };
        if let Err(e) = syncer.upsert(&indicator, &translation, &former) {
            first.get_or_insert(e.error.clone());
        }
    }
    first.map_or(Ok(()), |e| Err(e.into()))
}

/// Run one pass to the end (see the module doc). `Ok` with a summary whether it converged, the
/// guard tripped or a repair failed; `Err` when it could not look at both sides at all.
pub fn run_pass(deps: &PassDeps<'_>, opts: PassOptions) -> Result<PassSummary, PassError> {
    let started = Instant::now();
    let pass_start = SystemTime::now();
    if let Some(m) = deps.metrics {
        m.reconcile_running(true);
    }
    let result = pass_inner(deps, opts, pass_start, started);
    deps.jobs.unwatch();
    if let Some(m) = deps.metrics {
        m.reconcile_running(false);
        match &result {
            Ok(s) => {
                let outcome = if s.guard.is_some() {
                    "guarded"
                } else if s.converged() {
                    "converged"
                } else {
                    "not_converged"
                };
                let per_class: Vec<(&str, u64, u64)> = Class::ALL
                    .iter()
                    .map(|c| {
                        let n = s.classes[c.index()];
                        (c.as_str(), n.found, n.repaired)
                    })
                    .collect();
                m.reconcile_pass(outcome, &per_class, s.converged().then_some(pass_start));
            }
            Err(_) => m.reconcile_pass("failed", &[], None),
        }
    }
    result
}

fn pass_inner(
    deps: &PassDeps<'_>,
    opts: PassOptions,
    pass_start: SystemTime,
    started: Instant,
) -> Result<PassSummary, PassError> {
    let mut summary = PassSummary::default();
    if !deps.jobs.watch() {
        summary.interrupted = true;
        return Ok(summary);
    }
    log::info!("reconciliation: listing our HarfangLab lists");
    let index = ActualIndex::list(deps.client, deps.lists, deps.inventory)
        .map_err(PassError::HarfangLab)?;
    log::info!(
        "reconciliation: {} objects listed ({} IOC rules of other types left alone); replaying the live stream in recover mode",
        index.len(),
        index.foreign_types
    );
    let desired = desired::replay(deps.stream, pass_start, deps.stop, opts.replay_stall)
        .map_err(PassError::Replay)?;
    summary.desired = desired.len();
    summary.actual = index.len();
    summary.log_replay = desired.log_replay;
    let orphans = {
        let aliases = desired.aliases();
        diff::plan_orphans(&index, &aliases)
    };
    let ratio = orphans.release_ratio();
    if ratio > opts.max_delete_ratio {
        let trip = GuardTrip {
            would_release: orphans.emptied,
            held: orphans.held,
            ratio,
            max_ratio: opts.max_delete_ratio,
            desired: desired.len(),
        };
        if opts.force {
            log::warn!(
                "reconciliation: the pass would delete or disable {} of the {} objects we hold ({:.1}% > {:.1}%); --force: repairing anyway",
                trip.would_release,
                trip.held,
                ratio * 100.0,
                opts.max_delete_ratio * 100.0
            );
        } else {
            log::error!(
                "reconciliation: mass-deletion guard: the pass would delete or disable {} of the {} objects we hold ({:.1}% > HARFANGLAB_INTEL_RECONCILE_MAX_DELETE_RATIO {:.1}%) with {} indicators in the live stream; nothing repaired. An empty or much smaller answer from OpenCTI (a token that lost its permissions, a changed stream filter) looks like this; run `harfanglab-intel reconcile --force` if it is right",
                trip.would_release,
                trip.held,
                ratio * 100.0,
                opts.max_delete_ratio * 100.0,
                trip.desired
            );
            summary.guard = Some(trip);
            let pass = Pass::new(ActualIndex::default(), HashMap::new(), opts);
            for (holder, o) in &orphans.by_holder {
                pass.record(holder, &o.drift, Fate::Planned, None);
            }
            let t = std::mem::take(&mut *lock(&pass.tally));
            summary.classes = t.classes;
            summary.records = t.records;
            summary.elapsed = started.elapsed();
            return Ok(summary);
        }
    }
    let mut ids: Vec<String> = desired.indicators.keys().cloned().collect();
    ids.sort();
    let pass = Arc::new(Pass::new(index, desired.indicators, opts));
    let mut interrupted = false;
    for id in ids {
        let job = ReconcileJob::new(&pass, Target::Indicator(id.clone()));
        if !deps.jobs.submit(id, job) {
            interrupted = true;
            break;
        }
    }
    if !interrupted {
        for (holder, diff::Orphaned { objects, drift }) in orphans.by_holder {
            let job = ReconcileJob::new(
                &pass,
                Target::Orphan {
                    holder: holder.clone(),
                    objects,
                    drift,
                },
            );
            if !deps.jobs.submit(holder, job) {
                interrupted = true;
                break;
            }
        }
    }
    if !pass.wait(deps.stop) {
        interrupted = true;
    }
    let t = std::mem::take(&mut *lock(&pass.tally));
    summary.classes = t.classes;
    summary.dropped = t.dropped;
    summary.gone = t.gone;
    summary.untranslatable = t.untranslatable;
    summary.records = t.records;
    summary.interrupted = interrupted;
    summary.elapsed = started.elapsed();
    log::info!(
        "reconciliation: pass done in {}: {} drift found, {} repaired, {} failed{}",
        humantime::format_duration(Duration::from_secs(summary.elapsed.as_secs())),
        summary.found(),
        summary.classes.iter().map(|c| c.repaired).sum::<u64>(),
        summary.failed(),
        if interrupted { " (interrupted)" } else { "" }
    );
    Ok(summary)
}
