//! The concrete [`EventHandler`]: one OpenCTI stream event in, HarfangLab changes out.
//!
//! Owns the meaning of each event for HarfangLab (issue 5 "Indicator resolution", issue 7). Each
//! event reads top to bottom: read (OpenCTI GraphQL) → translate → sync. The event arrives
//! decoded (`opencti::events`: the payload's translation input and its [`FormerState`], built
//! once on the reader thread); nothing here reads the stream JSON again.
//! - indicator create/update: re-read the indicator from OpenCTI (linked observables, current
//!   state); when it is gone, use the decoded payload. The former state (name, pattern type,
//!   IOCs, ids) goes to the sync layer, which releases what the old pattern named; when the
//!   pattern type changed, what the former type produced is released first.
//! - indicator delete: the decoded payload only (with the extension's `observable_values`) →
//!   release.
//! - indicator merge: the target is re-read (it now also has the absorbed indicators'
//!   observables) and translated; each absorbed indicator is translated from the payload (it no
//!   longer exists) → one merge in the sync layer: the absorbed holds move to the target, what
//!   only they wanted is released. The event is ordered with the absorbed indicators' events too
//!   ([`also_keys`]).
//! - `based-on` create: re-read the indicator and upsert it (it now lists the observable).
//! - `based-on` delete: re-read the indicator and release ONLY the removed observable's value
//!   (unless the pattern still names it), not every IOC of the indicator (the Python bug).
//!
//! Bursts (issue 16): creates and updates of one indicator that wait behind each other on its
//! key are [`coalescable`](EventHandler::coalescable) and come as one batch. A batch reads the
//! indicator once and applies it once with the union of the events' former states
//! ([`merge_formers`]): every former IOC the current state no longer wants goes, under every
//! former id. A former state that cannot be merged (a second pattern-type change, or a second
//! rename / pattern change of a Sigma or Yara indicator: each names another rule to release or
//! to find) ends the batch there, and the rest comes as the next one. An indicator gone from
//! OpenCTI is applied one event at a time, each from its own payload, exactly as alone. Deletes,
//! merges, relationships, malformed events and reconciliation jobs are never coalesced.
//!
//! Classification: `is_fatal` → [`Outcome::Fatal`]; otherwise the error's `FailureKind` (for
//! HarfangLab: unavailable, transient or permanent = dead letter; the pipeline's budget decides
//! what counts). OpenCTI read errors are retried unless fatal: unavailable ones as such, the rest
//! (GraphQL errors, odd answers) as transient.

use crate::harfanglab::api::ThreatIntelApi;
use crate::metrics::{Health, Metrics};
use crate::notify::WatchdogGate;
use crate::opencti::api::{ApiError, OpenCtiApi};
use crate::opencti::events::{
    BasedOn, EventError, EventKind, IndicatorEvent, Payload, StreamEvent,
};
use crate::pipeline::{BatchItem, EventHandler, Outcome, PayloadInfo};
use crate::retry::{FailureKind, Retryable};
use crate::sync::{Absorbed, SyncError, SyncReport, Syncer};
use crate::translate::{self, FormerState, Indicator, IocKey, LinkedObservable, Translation};

/// The pipeline payload: a decoded event, or one that could not be decoded (dead-lettered).
#[derive(Debug)]
pub enum Work {
    Event(Box<StreamEvent>),
    Malformed(EventError),
    /// A position-only item (ignored event name); never handed to the handler.
    Ignored,
    /// A reconciliation repair (a synthetic job of the pipeline: never checkpointed).
    Reconcile(Box<crate::reconcile::ReconcileJob>),
}

impl Work {
    /// The pipeline key: the indicator the event is about (a `based-on` relationship counts as
    /// its source indicator), by its stable internal id when known. `None`: nothing to do.
    pub fn key(&self) -> Option<String> {
        match self {
            Work::Event(ev) => event_key(ev),
            Work::Malformed(e) => Some(format!(
                "malformed:{}",
                e.event_id.as_deref().unwrap_or("<no id>")
            )),
            Work::Ignored | Work::Reconcile(_) => None,
        }
    }
}

/// The other pipeline keys of an event: a merge's absorbed indicators, whose own earlier events
/// must be applied before their holds move, and whose later ones (a delete) after.
pub fn also_keys(ev: &StreamEvent) -> Vec<String> {
    match &ev.payload {
        Payload::Indicator(i) => i.absorbed.iter().map(|a| a.indicator.id.clone()).collect(),
        _ => Vec::new(),
    }
}

/// See [`Work::key`].
pub fn event_key(ev: &StreamEvent) -> Option<String> {
    match &ev.payload {
        Payload::Indicator(i) => Some(i.indicator.id.clone()),
        Payload::BasedOn(b) => Some(
            b.source_internal_id
                .clone()
                .unwrap_or_else(|| b.source_ref.clone()),
        ),
        Payload::Other { .. } => None,
    }
}

/// Applies events through one shared [`Syncer`].
pub struct Handler<A: ThreatIntelApi> {
    opencti: OpenCtiApi,
    syncer: Syncer<A>,
    metrics: Metrics,
    health: Health,
    gate: WatchdogGate,
}

impl<A: ThreatIntelApi> Handler<A> {
    pub fn new(
        opencti: OpenCtiApi,
        syncer: Syncer<A>,
        metrics: Metrics,
        health: Health,
        gate: WatchdogGate,
    ) -> Self {
        Handler {
            opencti,
            syncer,
            metrics,
            health,
            gate,
        }
    }

    /// The shared syncer (its API holds the HarfangLab client).
    pub fn syncer(&self) -> &Syncer<A> {
        &self.syncer
    }

    fn apply(&self, ev: &StreamEvent, key: &str) -> Outcome {
        match (&ev.payload, ev.kind) {
            (Payload::Indicator(i), EventKind::Delete) => self.indicator_delete(i),
            (Payload::Indicator(i), EventKind::Merge) => self.indicator_merge(&ev.id, i),
            (Payload::Indicator(i), _) => self.indicator_upsert(&ev.id, i),
            (Payload::BasedOn(_), EventKind::Merge) => {
                Outcome::Skipped("a relationship merge is not handled".to_owned())
            }
            (Payload::BasedOn(b), EventKind::Delete) => self.based_on_delete(b, key),
            (Payload::BasedOn(b), _) => self.based_on_create(b, key),
            (Payload::Other { stix_type }, _) => {
                Outcome::Skipped(format!("{stix_type} is not handled"))
            }
        }
    }

    /// Read the indicator from OpenCTI; `Err` is the outcome to return.
    fn read(&self, id: &str) -> Result<Option<Indicator>, Outcome> {
        match self.opencti.indicator(id) {
            Ok(found) => {
                self.health.opencti_reachable();
                Ok(found.map(|g| g.to_translate()))
            }
            Err(e) => Err(api_outcome(&e)),
        }
    }

    /// The indicator as OpenCTI has it now; when it is gone, as the payload states it (the best
    /// we know: a later delete releases it). `Err`: the outcome to return.
    fn current(&self, ev: &IndicatorEvent) -> Result<Indicator, Outcome> {
        Ok(self
            .read(&ev.indicator.id)?
            .unwrap_or_else(|| ev.indicator.clone()))
    }

    fn indicator_upsert(&self, event_id: &str, ev: &IndicatorEvent) -> Outcome {
        match self.current(ev) {
            Ok(indicator) => self.upsert_state(event_id, indicator, &ev.former),
            Err(o) => o,
        }
    }

    /// A burst of creates/updates of one indicator (stream order, at least one): one read, one
    /// apply for as many of them as [`merge_formers`] can merge. Returns the outcome and how
    /// many events (a prefix) it is the outcome of.
    fn indicator_upsert_burst(&self, events: &[BurstMember<'_>]) -> (Outcome, usize) {
        let Some(&(first_id, _, first)) = events.first() else {
            return (Outcome::retry("an empty batch"), 0);
        };
        let indicator = match self.read(&first.indicator.id) {
            Ok(Some(i)) => i,
            // Gone from OpenCTI: each event applies its own payload (the best we know, a later
            // delete releases it), as it would alone.
            Ok(None) => {
                return (
                    self.upsert_state(first_id, first.indicator.clone(), &first.former),
                    1,
                );
            }
            Err(o) => return (o, 1),
        };
        let (former, n) = merge_formers(
            events.iter().map(|(_, _, e)| &e.former),
            &indicator.pattern_type,
        );
        log::debug!(
            "event={first_id} indicator={}: {n} events applied as one (one read)",
            indicator.id
        );
        (self.upsert_state(first_id, indicator, &former), n)
    }

    /// Make HarfangLab hold what `indicator` (its current state) names, releasing what
    /// `former` named and it no longer does.
    fn upsert_state(&self, event_id: &str, indicator: Indicator, former: &FormerState) -> Outcome {
        let (translation, unsupported) = match translate::translate(&indicator) {
            Ok(t) => (t, None),
            // Nothing is wanted any more: still release what a former type produced.
            Err(e) if e.is_unsupported() => (Translation::default(), Some(e.to_string())),
            Err(e) => return Outcome::permanent(e.to_string()),
        };
        if let Err(o) = self.release_former_type(event_id, former, &indicator, &translation) {
            return o;
        }
        match unsupported {
            Some(reason) => Outcome::Skipped(reason),
            None => self.sync_outcome(self.syncer.upsert(&indicator, &translation, former)),
        }
    }

    /// When the update changed the pattern type, release what the former pattern (and type,
    /// and name) produced: the old Sigma rule / Yara file / IOCs, except the IOCs `current`
    /// still wants. `Err`: the outcome to return.
    fn release_former_type(
        &self,
        event_id: &str,
        former: &FormerState,
        indicator: &Indicator,
        current: &Translation,
    ) -> Result<(), Outcome> {
        let Some(old_type) = former.pattern_type.as_deref() else {
            return Ok(());
        };
        if old_type
            .trim()
            .eq_ignore_ascii_case(indicator.pattern_type.trim())
        {
            return Ok(());
        }
        let before = Indicator {
            pattern_type: old_type.to_owned(),
            pattern: former
                .pattern
                .as_ref()
                .unwrap_or(&indicator.pattern)
                .clone(),
            name: former.name.as_ref().unwrap_or(&indicator.name).clone(),
            ..indicator.clone()
        };
        let is_stix = old_type.trim().eq_ignore_ascii_case("stix");
        let mut t = match translate::translate(&before) {
            Ok(t) => t,
            Err(_) if is_stix => observables_only(&before),
            // Sigma/Yara: the sync layer still looks the rule up by name.
            Err(_) => Translation::default(),
        };
        t.iocs.retain(|k| !current.iocs.contains(k));
        // `before` carries the former name: the current one is the other name to look up.
        let aliases = FormerState {
            name: (before.name != indicator.name).then(|| indicator.name.clone()),
            ids: former.ids.clone(),
            ..FormerState::default()
        };
        log::debug!(
            "event={event_id} indicator={}: pattern type {old_type:?} → {:?}, releasing what the former one produced",
            indicator.id,
            indicator.pattern_type
        );
        match self.syncer.release(&before, &t, &aliases) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.sync_outcome(Err(e))),
        }
    }

    fn indicator_delete(&self, ev: &IndicatorEvent) -> Outcome {
        let translation = match translate::translate(&ev.indicator) {
            Ok(t) => t,
            Err(e) if e.is_unsupported() => return Outcome::Skipped(e.to_string()),
            // Untranslatable pattern: still release the observables' IOCs (and the Sigma/Yara
            // rule, which the sync layer looks up by name).
            Err(_) => observables_only(&ev.indicator),
        };
        self.sync_outcome(self.syncer.release(&ev.indicator, &translation, &ev.former))
    }

    fn indicator_merge(&self, event_id: &str, ev: &IndicatorEvent) -> Outcome {
        let target = match self.current(ev) {
            Ok(i) => i,
            Err(o) => return o,
        };
        let (translation, broken) = match translate::translate(&target) {
            Ok(t) => (t, None),
            // The absorbed holds must go wherever the target stands: it wants nothing (another
            // pattern type) or only its observables' IOCs (a pattern that does not translate).
            Err(e) if e.is_unsupported() => (Translation::default(), None),
            Err(e) => (observables_only(&target), Some(e.to_string())),
        };
        if let Err(o) = self.release_former_type(event_id, &ev.former, &target, &translation) {
            return o;
        }
        let absorbed: Vec<Absorbed> = ev
            .absorbed
            .iter()
            .map(|a| Absorbed {
                translation: match translate::translate(&a.indicator) {
                    Ok(t) => t,
                    Err(e) if e.is_unsupported() => Translation::default(),
                    // As its delete would: observables, and the rule by name.
                    Err(_) => observables_only(&a.indicator),
                },
                indicator: a.indicator.clone(),
                former: a.former.clone(),
            })
            .collect();
        let outcome =
            self.sync_outcome(
                self.syncer
                    .merge(&target, &translation, &ev.former, &absorbed),
            );
        match (outcome, broken) {
            // Applied for the absorbed indicators, but the target's own pattern is broken: the
            // event is recorded as failed with the reason (replaying it is harmless).
            (Outcome::Applied(summary), Some(reason)) => Outcome::permanent(format!(
                "merge applied ({summary}), but the target's pattern cannot be translated: {reason}"
            )),
            (outcome, _) => outcome,
        }
    }

    fn based_on_create(&self, b: &BasedOn, key: &str) -> Outcome {
        let lookup = b.source_internal_id.as_deref().unwrap_or(&b.source_ref);
        match self.read(lookup) {
            Ok(Some(indicator)) => {
                let translation = match translate::translate(&indicator) {
                    Ok(t) => t,
                    Err(e) if e.is_unsupported() => return Outcome::Skipped(e.to_string()),
                    Err(e) => return Outcome::permanent(e.to_string()),
                };
                self.sync_outcome(self.syncer.upsert(
                    &indicator,
                    &translation,
                    &FormerState::default(),
                ))
            }
            Ok(None) => {
                let ioc = match removed_ioc(b) {
                    Ok(k) => k,
                    Err(reason) => return Outcome::Skipped(reason),
                };
                let stub = stub_indicator(b, key);
                let t = Translation {
                    iocs: vec![ioc],
                    ..Translation::default()
                };
                self.sync_outcome(self.syncer.upsert(&stub, &t, &FormerState::default()))
            }
            Err(o) => o,
        }
    }

    fn based_on_delete(&self, b: &BasedOn, key: &str) -> Outcome {
        let removed = match removed_ioc(b) {
            Ok(k) => k,
            Err(reason) => return Outcome::Skipped(reason),
        };
        let lookup = b.source_internal_id.as_deref().unwrap_or(&b.source_ref);
        match self.read(lookup) {
            Ok(Some(mut indicator)) => {
                // The platform may still list the relationship (read racing the delete).
                indicator.observables.retain(|o| !is_target(b, o, &removed));
                let translation = match translate::translate(&indicator) {
                    Ok(t) => t,
                    Err(e) if e.is_unsupported() => return Outcome::Skipped(e.to_string()),
                    Err(_) => observables_only(&indicator),
                };
                let mut was = translation.iocs.clone();
                if !was.contains(&removed) {
                    was.push(removed);
                }
                let former = FormerState {
                    iocs: Some(was),
                    ..FormerState::default()
                };
                self.sync_outcome(self.syncer.upsert(&indicator, &translation, &former))
            }
            Ok(None) => {
                let stub = stub_indicator(b, key);
                let t = Translation {
                    iocs: vec![removed],
                    ..Translation::default()
                };
                self.sync_outcome(self.syncer.release(&stub, &t, &FormerState::default()))
            }
            Err(o) => o,
        }
    }

    fn sync_outcome(&self, r: Result<SyncReport, SyncError>) -> Outcome {
        match r {
            Ok(report) => {
                self.health.harfanglab_reachable();
                Outcome::Applied(summary(&report))
            }
            Err(e) if e.is_fatal() => Outcome::Fatal(e.to_string()),
            Err(e) => {
                let kind = e.failure_kind();
                if kind == FailureKind::Permanent {
                    // A permanent failure is still an answer from HarfangLab.
                    self.health.harfanglab_reachable();
                }
                Outcome::failed(e.to_string(), kind)
            }
        }
    }
}

impl<A: ThreatIntelApi> EventHandler<Work> for Handler<A> {
    fn handle(&self, event_id: &str, key: &str, payload: &Work) -> Outcome {
        if let Work::Reconcile(job) = payload {
            let outcome = crate::reconcile::execute(job, &self.opencti, &self.syncer);
            if matches!(outcome, Outcome::Applied(_) | Outcome::Skipped(_)) {
                self.health.harfanglab_reachable();
            }
            log::debug!("indicator={key}: {}: {outcome:?}", job.describe());
            self.gate.progress();
            self.health.progress();
            return outcome;
        }
        let (kind, outcome) = match payload {
            Work::Malformed(e) => ("malformed", Outcome::permanent(e.to_string())),
            Work::Ignored | Work::Reconcile(_) => {
                ("ignored", Outcome::Skipped("nothing to do".to_owned()))
            }
            Work::Event(ev) => (ev.kind.as_str(), self.apply(ev, key)),
        };
        self.record(event_id, key, kind, &outcome);
        outcome
    }

    /// Creates and updates of an indicator (not a merge): their effect is "apply the current
    /// state, release the former one", which a burst can do once.
    fn coalescable(&self, _key: &str, payload: &Work) -> bool {
        burst_member(payload).is_some()
    }

    fn handle_batch(&self, key: &str, events: &[BatchItem<'_, Work>]) -> Vec<Outcome> {
        let burst: Option<Vec<BurstMember<'_>>> = events
            .iter()
            .map(|e| burst_member(e.payload).map(|(kind, i)| (e.event_id, kind, i)))
            .collect();
        let Some(burst) = burst else {
            // Not ours to coalesce (the pipeline only batches coalescable events): one by one.
            return self.handle_one_by_one(key, events);
        };
        let (outcome, n) = self.indicator_upsert_burst(&burst);
        // A retry or a fatal outcome is the first event's: the rest waits behind it.
        let n = if outcome.is_final() { n } else { 1 };
        let mut outcomes = Vec::with_capacity(n);
        for &(event_id, kind, _) in &burst[..n.min(burst.len())] {
            self.record(event_id, key, kind.as_str(), &outcome);
            outcomes.push(outcome.clone());
        }
        outcomes
    }

    fn describe(&self, payload: &Work) -> PayloadInfo {
        match payload {
            Work::Malformed(e) => PayloadInfo {
                event: e.event.clone(),
                excerpt: Some(e.reason.clone()),
            },
            Work::Event(ev) => PayloadInfo {
                event: ev.kind.as_str().to_owned(),
                excerpt: Some(ev.stix.clone()),
            },
            Work::Ignored => PayloadInfo::default(),
            Work::Reconcile(job) => PayloadInfo {
                event: "reconcile".to_owned(),
                excerpt: Some(job.describe()),
            },
        }
    }
}

impl<A: ThreatIntelApi> Handler<A> {
    /// Metrics, debug line and watchdog progress for one finished (or retried) event.
    fn record(&self, event_id: &str, key: &str, kind: &str, outcome: &Outcome) {
        let label = match &outcome {
            Outcome::Applied(_) => "applied",
            Outcome::Skipped(_) => "skipped",
            Outcome::Failed {
                kind: FailureKind::Permanent,
                ..
            } => "dead_letter",
            Outcome::Failed { .. } => "retried",
            Outcome::Fatal(_) => "fatal",
        };
        self.metrics.event(kind, label);
        log::debug!("event={event_id} indicator={key}: {kind} → {label}");
        // A finished (or retried) event is progress for the systemd watchdog.
        self.gate.progress();
        self.health.progress();
    }
}

/// An event of a burst: its id, its kind (create or update) and its indicator event.
type BurstMember<'a> = (&'a str, EventKind, &'a IndicatorEvent);

/// The kind and indicator event of a create or update that may join a burst (not a merge,
/// nothing absorbed).
fn burst_member(payload: &Work) -> Option<(EventKind, &IndicatorEvent)> {
    let Work::Event(ev) = payload else {
        return None;
    };
    match (&ev.payload, ev.kind) {
        (Payload::Indicator(i), EventKind::Create | EventKind::Update) if i.absorbed.is_empty() => {
            Some((ev.kind, i))
        }
        _ => None,
    }
}

/// The former state of a burst of events of one indicator whose current state has type
/// `current_type`, and how many of the events (a prefix, at least one) it stands for.
///
/// Applying the current state once with the merged former state does what applying it once per
/// event with each event's own former state does:
/// - former IOCs and former ids are unions (each event releases its former IOCs the current
///   state lacks, under its holder ids);
/// - the former name, pattern and pattern type have one slot each: they matter when the type
///   changed (what the former type produced is released, found by the former name and pattern)
///   or when the current type is Sigma/Yara (the rule is found by the former name; a former
///   Sigma pattern's id is released). Only one event of a burst may carry such a change: a
///   second one ends the prefix. Otherwise they do not matter (a STIX pattern's IOCs are in
///   `iocs`) and are dropped.
/// - `standard_id_changed` is an "or". An event whose pattern changed to something unknown
///   (the id changed, no former pattern or IOCs) warns when applied alone; merged with an event
///   that knows former IOCs or a former pattern the warning would be lost (the merged state
///   knows something), so such events never share a burst: the prefix ends before the first
///   one that would mix them.
pub fn merge_formers<'a>(
    formers: impl IntoIterator<Item = &'a FormerState>,
    current_type: &str,
) -> (FormerState, usize) {
    let t = current_type.trim();
    let rules = t.eq_ignore_ascii_case("sigma") || t.eq_ignore_ascii_case("yara");
    let mut merged = FormerState::default();
    let mut structural = false;
    let mut unknown_change = false;
    let mut n = 0;
    for f in formers {
        let carries =
            f.pattern_type.is_some() || (rules && (f.name.is_some() || f.pattern.is_some()));
        // What `sync` tests before its "former pattern is unknown" warning.
        let unknown = f.standard_id_changed && f.pattern.is_none() && f.iocs.is_none();
        let knows = merged.iocs.is_some()
            || merged.pattern.is_some()
            || f.iocs.is_some()
            || (carries && f.pattern.is_some());
        if n > 0 && (unknown_change || unknown) && knows {
            break;
        }
        unknown_change |= unknown;
        merged.standard_id_changed |= f.standard_id_changed;
        if carries {
            if structural {
                break;
            }
            structural = true;
            merged.name.clone_from(&f.name);
            merged.pattern_type.clone_from(&f.pattern_type);
            merged.pattern.clone_from(&f.pattern);
        }
        if let Some(iocs) = &f.iocs {
            merged
                .iocs
                .get_or_insert_with(Vec::new)
                .extend(iocs.iter().cloned());
        }
        merged.ids.extend(f.ids.iter().cloned());
        n += 1;
    }
    if let Some(iocs) = merged.iocs.as_mut() {
        iocs.sort();
        iocs.dedup();
    }
    merged.ids.sort();
    merged.ids.dedup();
    (merged, n.max(1))
}

fn api_outcome(e: &ApiError) -> Outcome {
    if e.is_fatal() {
        return Outcome::Fatal(e.to_string());
    }
    match e.failure_kind() {
        kind @ FailureKind::Unavailable { .. } => Outcome::failed(e.to_string(), kind),
        // Kept retryable (as transient, so it counts): a GraphQL error or an odd answer about
        // one indicator may pass later, and is dead-lettered once the budget is spent.
        FailureKind::Transient | FailureKind::Permanent => Outcome::retry(e.to_string()),
    }
}

/// IOCs of the linked observables only (when the pattern itself cannot be translated).
fn observables_only(indicator: &Indicator) -> Translation {
    let mut iocs: Vec<IocKey> = indicator
        .observables
        .iter()
        .filter_map(|o| translate::observable_ioc(&o.entity_type, &o.value).ok())
        .collect();
    iocs.sort();
    iocs.dedup();
    Translation {
        iocs,
        ..Translation::default()
    }
}

/// Whether `o` is the relationship's target observable: by identity (internal or standard
/// id), so another linked observable mapping to the same IOC keeps providing it. Only an
/// observable carrying no id at all is compared by IOC.
fn is_target(b: &BasedOn, o: &LinkedObservable, removed: &IocKey) -> bool {
    if o.id.is_none() && o.standard_id.is_none() {
        return translate::observable_ioc(&o.entity_type, &o.value)
            .ok()
            .as_ref()
            == Some(removed);
    }
    let internal = o.id.is_some() && o.id == b.target_internal_id;
    let standard = !b.target_ref.is_empty() && o.standard_id.as_deref() == Some(&b.target_ref);
    internal || standard
}

fn removed_ioc(b: &BasedOn) -> Result<IocKey, String> {
    match (&b.target_type, &b.target_value) {
        (Some(t), Some(v)) => translate::observable_ioc(t, v),
        _ => Err(format!(
            "based-on {} carries no target_type/target_value",
            b.id
        )),
    }
}

/// The holder identity of an indicator known only through a relationship.
fn stub_indicator(b: &BasedOn, key: &str) -> Indicator {
    Indicator {
        id: key.to_owned(),
        standard_id: Some(b.source_ref.clone()),
        pattern_type: "stix".to_owned(),
        ..Indicator::default()
    }
}

/// One short line for the debug log.
fn summary(r: &SyncReport) -> String {
    let mut parts = Vec::new();
    for (name, c) in [("ioc", &r.iocs), ("sigma", &r.sigma), ("yara", &r.yara)] {
        let mut s = Vec::new();
        for (n, label) in [
            (c.created, "created"),
            (c.updated, "updated"),
            (c.re_enabled, "re-enabled"),
            (c.disabled, "disabled"),
            (c.deleted, "deleted"),
            (c.unchanged, "unchanged"),
            (c.skipped, "skipped"),
        ] {
            if n > 0 {
                s.push(format!("{n} {label}"));
            }
        }
        if !s.is_empty() {
            parts.push(format!("{name}: {}", s.join(", ")));
        }
    }
    if parts.is_empty() {
        parts.push("nothing to change".to_owned());
    }
    format!("{} ({} HarfangLab calls)", parts.join("; "), r.api_calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn based_on_key_is_the_source_indicator() {
        let b = BasedOn {
            source_ref: "indicator--s".into(),
            source_internal_id: Some("int-s".into()),
            ..BasedOn::default()
        };
        let ev = StreamEvent {
            id: "1-0".into(),
            kind: EventKind::Create,
            payload: Payload::BasedOn(b.clone()),
            stix: String::new(),
        };
        assert_eq!(event_key(&ev).as_deref(), Some("int-s"));
        let ev2 = StreamEvent {
            payload: Payload::BasedOn(BasedOn {
                source_internal_id: None,
                ..b
            }),
            ..ev.clone()
        };
        assert_eq!(event_key(&ev2).as_deref(), Some("indicator--s"));
        let ev3 = StreamEvent {
            payload: Payload::Other {
                stix_type: "malware".into(),
            },
            ..ev
        };
        assert_eq!(event_key(&ev3), None);
    }

    fn ip(v: &str) -> IocKey {
        IocKey {
            ioc_type: crate::translate::IocType::IpBoth,
            value: v.into(),
        }
    }

    #[test]
    fn formers_merge_into_unions_of_iocs_and_ids() {
        let formers = [
            FormerState {
                ids: vec!["indicator--old".into()],
                ..FormerState::default()
            },
            FormerState {
                pattern: Some("[ipv4-addr:value = '1.1.1.1']".into()),
                iocs: Some(vec![ip("1.1.1.1")]),
                ids: vec!["indicator--a".into()],
                ..FormerState::default()
            },
            FormerState {
                pattern: Some("[ipv4-addr:value = '2.2.2.2']".into()),
                name: Some("renamed".into()),
                iocs: Some(vec![ip("2.2.2.2"), ip("1.1.1.1")]),
                ids: vec!["indicator--b".into(), "indicator--old".into()],
                ..FormerState::default()
            },
        ];
        let (merged, n) = merge_formers(&formers, "stix");
        assert_eq!(n, 3, "STIX pattern changes and renames all merge");
        assert_eq!(merged.iocs, Some(vec![ip("1.1.1.1"), ip("2.2.2.2")]));
        assert_eq!(
            merged.ids,
            ["indicator--a", "indicator--b", "indicator--old"]
        );
        // Nothing known about IOCs: still unknown.
        let (merged, _) = merge_formers(&formers[..1], "stix");
        assert_eq!(merged.iocs, None);
    }

    #[test]
    fn a_second_rule_or_type_change_ends_the_burst() {
        let rename = |name: &str| FormerState {
            name: Some(name.into()),
            ..FormerState::default()
        };
        let edit = FormerState::default();
        let formers = [edit.clone(), rename("n1"), edit.clone(), rename("n2"), edit];
        // Yara/Sigma: each rename names a file to find; one per burst.
        let (merged, n) = merge_formers(&formers, "yara");
        assert_eq!((n, merged.name.as_deref()), (3, Some("n1")));
        let (_, n) = merge_formers(&formers, " Sigma ");
        assert_eq!(n, 3);
        // STIX: names do not matter.
        let (merged, n) = merge_formers(&formers, "stix");
        assert_eq!((n, merged.name), (5, None));
        // A type change always carries its former pattern and name.
        let retype = |t: &str| FormerState {
            pattern_type: Some(t.into()),
            pattern: Some("p".into()),
            ..FormerState::default()
        };
        let (merged, n) = merge_formers(&[retype("sigma"), retype("yara")], "stix");
        assert_eq!((n, merged.pattern_type.as_deref()), (1, Some("sigma")));
        assert_eq!(merged.pattern.as_deref(), Some("p"));
        // The first event alone always goes, whatever it carries.
        let (_, n) = merge_formers(&[rename("x")], "yara");
        assert_eq!(n, 1);
    }

    #[test]
    fn a_pattern_change_of_unknown_former_keeps_its_warning_in_a_burst() {
        let unknown = FormerState {
            standard_id_changed: true,
            ..FormerState::default()
        };
        let edit = FormerState::default();
        let known = FormerState {
            pattern: Some("[ipv4-addr:value = '1.1.1.1']".into()),
            iocs: Some(vec![ip("1.1.1.1")]),
            standard_id_changed: true,
            ..FormerState::default()
        };
        // Among plain edits: merged, and the merged state still says the id changed.
        let (merged, n) = merge_formers(&[edit.clone(), unknown.clone(), edit.clone()], "stix");
        assert_eq!(n, 3);
        assert!(merged.standard_id_changed && merged.iocs.is_none() && merged.pattern.is_none());
        // Next to an event that knows former IOCs, the warning would be lost: not merged.
        let (merged, n) = merge_formers(&[unknown.clone(), edit.clone(), known.clone()], "stix");
        assert_eq!(n, 2);
        assert!(merged.standard_id_changed && merged.iocs.is_none());
        let (merged, n) = merge_formers(&[known.clone(), unknown.clone()], "stix");
        assert_eq!(n, 1);
        assert_eq!(merged.iocs, Some(vec![ip("1.1.1.1")]));
        // A known change alone sets the flag too (no warning: its IOCs are known).
        let (merged, n) = merge_formers(&[edit, known], "stix");
        assert_eq!(n, 2);
        assert!(merged.standard_id_changed && merged.iocs.is_some());
    }
}
