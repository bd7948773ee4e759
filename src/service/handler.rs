//! The concrete [`EventHandler`]: one OpenCTI stream event in, HarfangLab changes out.
//!
//! Owns the meaning of each event for HarfangLab (issue 5 "Indicator resolution", issue 7):
//! - indicator create/update: re-read the indicator from OpenCTI (linked observables, current
//!   state); when it is gone, use the stream payload. Former name / pattern / standard id come
//!   from the `reverse_patch` so the sync layer releases what the old pattern named.
//! - indicator delete: the payload only (plus the extension's `observable_values`) → release.
//! - `based-on` create: re-read the indicator and upsert it (it now lists the observable).
//! - `based-on` delete: re-read the indicator and release ONLY the removed observable's value
//!   (unless the pattern still names it), not every IOC of the indicator (the Python bug).
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
    self, BasedOn, EventError, EventKind, IndicatorData, OCTI_EXT, Payload, StreamEvent,
};
use crate::pipeline::{EventHandler, Outcome, PayloadInfo};
use crate::retry::{FailureKind, Retryable};
use crate::sync::{Former, SyncError, SyncReport, Syncer};
use crate::translate::{self, Indicator, IocKey, LinkedObservable, Translation};
use serde_json::Value;

/// The pipeline payload: a decoded event, or one that could not be decoded (dead-lettered).
#[derive(Debug)]
pub enum Work {
    Event(Box<StreamEvent>),
    Malformed(EventError),
    /// A position-only item (ignored event name); never handed to the handler.
    Ignored,
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
            Work::Ignored => None,
        }
    }
}

/// See [`Work::key`].
pub fn event_key(ev: &StreamEvent) -> Option<String> {
    match &ev.payload {
        Payload::Indicator(d) => Some(indicator_key(d)),
        Payload::BasedOn(b) => Some(
            b.source_internal_id
                .clone()
                .unwrap_or_else(|| b.source_ref.clone()),
        ),
        Payload::Other { .. } => None,
    }
}

fn indicator_key(d: &IndicatorData) -> String {
    d.internal_id
        .clone()
        .unwrap_or_else(|| d.standard_id.clone())
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
            (Payload::Indicator(d), EventKind::Delete) => self.indicator_delete(ev, d),
            (Payload::Indicator(d), _) => self.indicator_upsert(ev, d, key),
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

    fn indicator_upsert(&self, ev: &StreamEvent, d: &IndicatorData, key: &str) -> Outcome {
        let lookup = d.internal_id.as_deref().unwrap_or(&d.standard_id);
        let indicator = match self.read(lookup) {
            Ok(Some(i)) => i,
            // Deleted since: the payload is the best we know (a later delete releases it).
            Ok(None) => payload_indicator(&ev.stix, key),
            Err(o) => return o,
        };
        let translation = match translate::translate(&indicator) {
            Ok(t) => t,
            Err(e) if e.is_unsupported() => {
                // Nothing is wanted any more: still release what a former type produced.
                return match self.release_former_type(ev, &indicator, &[]) {
                    Ok(()) => Outcome::Skipped(e.to_string()),
                    Err(o) => o,
                };
            }
            Err(e) => return Outcome::permanent(e.to_string()),
        };
        if let Err(o) = self.release_former_type(ev, &indicator, &translation.iocs) {
            return o;
        }
        let former = former(ev, &indicator);
        self.sync_outcome(self.syncer.upsert(&indicator, &translation, &former))
    }

    /// When the update changed the pattern type, release what the former pattern (and type,
    /// and name) produced: the old Sigma rule / Yara file / IOCs, except the IOCs in `keep`
    /// (still wanted by the current translation). `Err`: the outcome to return.
    fn release_former_type(
        &self,
        ev: &StreamEvent,
        current: &Indicator,
        keep: &[IocKey],
    ) -> Result<(), Outcome> {
        let f = &ev.former;
        let Some(old_type) = f.pattern_type.value() else {
            return Ok(());
        };
        if old_type
            .trim()
            .eq_ignore_ascii_case(current.pattern_type.trim())
        {
            return Ok(());
        }
        let before = Indicator {
            pattern_type: old_type.to_owned(),
            pattern: f.pattern.value().unwrap_or(&current.pattern).to_owned(),
            name: f.name.value().unwrap_or(&current.name).to_owned(),
            ..current.clone()
        };
        let is_stix = old_type.trim().eq_ignore_ascii_case("stix");
        let mut t = match translate::translate(&before) {
            Ok(t) => t,
            Err(_) if is_stix => observables_only(&before),
            // Sigma/Yara: the sync layer still looks the rule up by name.
            Err(_) => Translation::default(),
        };
        t.iocs.retain(|k| !keep.contains(k));
        let former = Former {
            name: (before.name != current.name).then(|| current.name.clone()),
            iocs: None,
            ids: former(ev, current).ids,
        };
        log::debug!(
            "event={} indicator={}: pattern type {old_type:?} → {:?}, releasing what the former one produced",
            ev.id,
            current.id,
            current.pattern_type
        );
        match self.syncer.release(&before, &t, &former) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.sync_outcome(Err(e))),
        }
    }

    fn indicator_delete(&self, ev: &StreamEvent, d: &IndicatorData) -> Outcome {
        let indicator = payload_indicator(&ev.stix, &indicator_key(d));
        let former = former(ev, &indicator);
        let translation = match translate::translate(&indicator) {
            Ok(t) => t,
            Err(e) if e.is_unsupported() => return Outcome::Skipped(e.to_string()),
            // Untranslatable pattern: still release the observables' IOCs (and the Sigma/Yara
            // rule, which the sync layer looks up by name).
            Err(_) => observables_only(&indicator),
        };
        self.sync_outcome(self.syncer.release(&indicator, &translation, &former))
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
                self.sync_outcome(
                    self.syncer
                        .upsert(&indicator, &translation, &Former::default()),
                )
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
                self.sync_outcome(self.syncer.upsert(&stub, &t, &Former::default()))
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
                let former = Former {
                    iocs: Some(was),
                    ..Former::default()
                };
                self.sync_outcome(self.syncer.upsert(&indicator, &translation, &former))
            }
            Ok(None) => {
                let stub = stub_indicator(b, key);
                let t = Translation {
                    iocs: vec![removed],
                    ..Translation::default()
                };
                self.sync_outcome(self.syncer.release(&stub, &t, &Former::default()))
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
        let (kind, outcome) = match payload {
            Work::Malformed(e) => ("malformed", Outcome::permanent(e.to_string())),
            Work::Ignored => ("ignored", Outcome::Skipped("nothing to do".to_owned())),
            Work::Event(ev) => (ev.kind.as_str(), self.apply(ev, key)),
        };
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
        if label == "dead_letter" {
            self.metrics.dead_letter();
        }
        log::debug!("event={event_id} indicator={key}: {kind} → {label}");
        // A finished (or retried) event is progress for the systemd watchdog.
        self.gate.progress();
        self.health.progress();
        outcome
    }

    fn describe(&self, payload: &Work) -> PayloadInfo {
        match payload {
            Work::Malformed(e) => PayloadInfo {
                event: e.event.clone(),
                excerpt: Some(e.reason.clone()),
            },
            Work::Event(ev) => PayloadInfo {
                event: ev.kind.as_str().to_owned(),
                excerpt: Some(ev.stix.to_string()),
            },
            Work::Ignored => PayloadInfo::default(),
        }
    }
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

/// The translation input from the stream payload, with the OpenCTI extension's
/// `observable_values` as linked observables (so values held through observables are released).
fn payload_indicator(stix: &Value, key: &str) -> Indicator {
    let mut indicator = events::indicator_from_stix(stix);
    if indicator.id.is_empty() {
        indicator.id = key.to_owned();
    }
    let values = stix
        .pointer(&format!("/extensions/{OCTI_EXT}/observable_values"))
        .and_then(Value::as_array);
    for v in values.into_iter().flatten() {
        let (Some(t), Some(value)) = (
            v.get("type").and_then(Value::as_str),
            v.get("value").and_then(Value::as_str),
        ) else {
            continue;
        };
        indicator.observables.push(LinkedObservable {
            entity_type: t.to_owned(),
            value: value.to_owned(),
            ..LinkedObservable::default()
        });
    }
    indicator
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

/// What the update changed, from its `reverse_patch`.
fn former(ev: &StreamEvent, current: &Indicator) -> Former {
    let f = &ev.former;
    let former_type = f
        .pattern_type
        .value()
        .unwrap_or(current.pattern_type.as_str());
    let is_stix = matches!(
        former_type.trim().to_ascii_lowercase().as_str(),
        "stix" | ""
    );
    let iocs = match f.pattern.value() {
        Some(p) if is_stix => match translate::stix_iocs(p) {
            Ok((keys, _)) => Some(keys),
            Err(e) => {
                log::debug!(
                    "event={} indicator={}: former pattern unreadable ({e}); its IOCs cannot be released",
                    ev.id,
                    current.id
                );
                None
            }
        },
        // Former Sigma/Yara pattern: the rule identity (id / name) follows the indicator.
        _ => None,
    };
    // An edited observable value: release the former one (upsert keeps what is still current).
    let iocs = match former_observable_iocs(ev) {
        Some(mut obs) => {
            obs.extend(iocs.into_iter().flatten());
            obs.sort();
            obs.dedup();
            Some(obs)
        }
        None => iocs,
    };
    Former {
        name: f.name.value().map(str::to_owned),
        iocs,
        ids: f
            .standard_id
            .value()
            .map(str::to_owned)
            .into_iter()
            // Older standard ids the platform keeps (`stix_ids`): a Python-era holder may be
            // recorded under one of them.
            .chain(former_stix_ids(ev))
            .collect(),
    }
}

/// The OCTI extension's `stix_ids` of an indicator event (holder aliases).
fn former_stix_ids(ev: &StreamEvent) -> Vec<String> {
    match &ev.payload {
        Payload::Indicator(d) => d.stix_ids.clone(),
        _ => Vec::new(),
    }
}

/// IOCs of the extension's `observable_values` before the update, rebuilt from the payload and
/// the `reverse_patch` ops under that path. `None`: the update did not touch them.
fn former_observable_iocs(ev: &StreamEvent) -> Option<Vec<IocKey>> {
    let prefix = format!("/extensions/{OCTI_EXT}/observable_values");
    let ops: Vec<_> = ev
        .reverse_patch
        .iter()
        .filter_map(|op| {
            let rest = op.path.strip_prefix(&prefix)?;
            (rest.is_empty() || rest.starts_with('/')).then_some((op, rest))
        })
        .collect();
    if ops.is_empty() {
        return None;
    }
    let mut doc = ev
        .stix
        .pointer(&prefix)
        .cloned()
        .unwrap_or_else(|| Value::Array(Vec::new()));
    for (op, rest) in ops {
        apply_patch_op(&mut doc, &op.op, rest, op.value.as_ref());
    }
    let mut keys: Vec<IocKey> = doc
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let t = v.get("type")?.as_str()?;
            let value = v.get("value")?.as_str()?;
            translate::observable_ioc(t, value).ok()
        })
        .collect();
    keys.sort();
    keys.dedup();
    Some(keys)
}

/// Apply one JSON Patch op (`add` / `replace` / `remove`) at `path` (relative to `doc`, JSON
/// Pointer syntax). Ops that do not fit the document are ignored: never panics.
fn apply_patch_op(doc: &mut Value, op: &str, path: &str, value: Option<&Value>) {
    if path.is_empty() {
        *doc = match (op, value) {
            ("remove", _) | (_, None) => Value::Array(Vec::new()),
            (_, Some(v)) => v.clone(),
        };
        return;
    }
    let Some((parent, last)) = path.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    let Some(target) = doc.pointer_mut(parent) else {
        return;
    };
    match target {
        Value::Array(items) => {
            let index = if last == "-" {
                Some(items.len())
            } else {
                last.parse::<usize>().ok()
            };
            let Some(i) = index else { return };
            match (op, value) {
                ("remove", _) if i < items.len() => {
                    items.remove(i);
                }
                ("add", Some(v)) if i <= items.len() => items.insert(i, v.clone()),
                ("replace", Some(v)) if i < items.len() => items[i] = v.clone(),
                _ => {}
            }
        }
        Value::Object(map) => match (op, value) {
            ("remove", _) => {
                map.remove(&last);
            }
            (_, Some(v)) => {
                map.insert(last, v.clone());
            }
            _ => {}
        },
        _ => {}
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
    use serde_json::json;

    #[test]
    fn payload_indicator_reads_observable_values() {
        let stix = json!({"id":"indicator--x","type":"indicator","name":"n",
            "pattern":"[ipv4-addr:value = '1.2.3.4']","pattern_type":"stix",
            "extensions":{OCTI_EXT:{"id":"int-1","observable_values":[
                {"type":"Domain-Name","value":"a.example"},{"type":"IPv4-Addr"}]}}});
        let i = payload_indicator(&stix, "k");
        assert_eq!(i.id, "int-1");
        assert_eq!(
            i.observables,
            vec![LinkedObservable {
                entity_type: "Domain-Name".into(),
                value: "a.example".into(),
                ..LinkedObservable::default()
            }]
        );
    }

    #[test]
    fn reverse_patch_rebuilds_the_former_observable_values() {
        let mut doc = json!([{"type": "IPv4-Addr", "value": "8.8.8.8"}]);
        apply_patch_op(&mut doc, "replace", "/0/value", Some(&json!("9.9.9.9")));
        apply_patch_op(
            &mut doc,
            "add",
            "/1",
            Some(&json!({"type": "Url", "value": "u"})),
        );
        apply_patch_op(
            &mut doc,
            "add",
            "/-",
            Some(&json!({"type": "Url", "value": "w"})),
        );
        apply_patch_op(&mut doc, "remove", "/1", None);
        // Out of range or wrong shape: ignored.
        apply_patch_op(&mut doc, "remove", "/9", None);
        apply_patch_op(&mut doc, "replace", "/x/value", Some(&json!("y")));
        assert_eq!(
            doc,
            json!([{"type": "IPv4-Addr", "value": "9.9.9.9"}, {"type": "Url", "value": "w"}])
        );
        apply_patch_op(&mut doc, "remove", "", None);
        assert_eq!(doc, json!([]));
    }

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
            payload_type: None,
            version: None,
            scope: None,
            message: None,
            origin: Value::Null,
            event_id: None,
            patch: vec![],
            reverse_patch: vec![],
            former: Default::default(),
            payload: Payload::BasedOn(b.clone()),
            stix: Value::Null,
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
}
