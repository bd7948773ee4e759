//! Typed OpenCTI live-stream events: an SSE [`Frame`] in, a [`Decoded`] value out. Pure, no I/O.
//!
//! Owns the meaning of the event names (`create`/`update`/`delete`, `connected`, `heartbeat`,
//! `no-recover`, `consumer_metrics`, `merge`, unknown ones) and of the JSON envelope
//! (opencti-protocol.md §2.2-§2.7): which STIX objects matter (Indicators and `based-on`
//! relationships), where OpenCTI hides the internal id, score and platforms (extensions, §2.3), and
//! what an update changed (the `reverse_patch` of its context, §2.5).
//!
//! Every field is optional on the wire (§2.2: empty properties are omitted), so decoding reads a
//! `serde_json::Value` by hand and only fails (an [`EventError`] naming the event id) when the
//! object cannot be identified at all. Dispatch follows the SSE event name, not the payload `type`
//! (an update leaving the stream filters arrives as `event: delete`, §2.2 caveat).

use super::sse::Frame;
use crate::translate;
use serde_json::Value;
use std::fmt;

/// OpenCTI's property extension (internal id, score, stix_ids, relationship endpoints).
pub const OCTI_EXT: &str = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba";
/// MITRE's property extension (`platforms`).
pub const MITRE_EXT: &str = "extension-definition--322b8f77-262a-4cb8-a915-1e441e00329b";

/// What an id-bearing create/update/delete asks for (from the SSE event name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Create,
    Update,
    Delete,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Create => "create",
            EventKind::Update => "update",
            EventKind::Delete => "delete",
        }
    }
}

/// One JSON Patch operation of an update's `context`.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchOp {
    pub op: String,
    pub path: String,
    /// Absent for `remove` ops.
    pub value: Option<Value>,
}

/// The value a field had before an update, read from `reverse_patch`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Former {
    /// The update did not touch the field.
    #[default]
    Unchanged,
    /// The field did not exist before (reverse op is `remove` without value).
    Absent,
    /// The former value (non-string JSON values are rendered as JSON text).
    Value(String),
}

impl Former {
    /// The former value if the field changed and existed before.
    pub fn value(&self) -> Option<&str> {
        match self {
            Former::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// The STIX Indicator carried by an event, with the OpenCTI extension fields extracted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndicatorData {
    /// OpenCTI internal id (OCTI extension `id`), stable across pattern changes.
    pub internal_id: Option<String>,
    /// STIX standard id (`data.id`).
    pub standard_id: String,
    /// Other STIX ids the platform knows this indicator by (OCTI extension `stix_ids`).
    pub stix_ids: Vec<String>,
    pub name: String,
    pub description: Option<String>,
    pub pattern: String,
    pub pattern_type: String,
    /// OCTI extension `score` (= `x_opencti_score`).
    pub score: Option<i64>,
    /// MITRE extension `platforms` (= `x_mitre_platforms`).
    pub platforms: Vec<String>,
    pub revoked: bool,
}

/// A `based-on` relationship: indicator → observable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasedOn {
    /// Relationship STIX id.
    pub id: String,
    /// Relationship internal id (OCTI extension `id`).
    pub internal_id: Option<String>,
    /// Indicator STIX id (`source_ref`).
    pub source_ref: String,
    /// Indicator internal id (OCTI extension `source_ref`).
    pub source_internal_id: Option<String>,
    /// Observable STIX id (`target_ref`).
    pub target_ref: String,
    /// Observable internal id (OCTI extension `target_ref`).
    pub target_internal_id: Option<String>,
    /// Observable representative value (OCTI extension `target_value`).
    pub target_value: Option<String>,
    /// Observable entity type, e.g. `IPv4-Addr` (OCTI extension `target_type`).
    pub target_type: Option<String>,
}

/// The object an event is about.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    Indicator(IndicatorData),
    BasedOn(BasedOn),
    /// Any other STIX type or relationship type (ignored by the connector, counted by the caller).
    Other {
        stix_type: String,
    },
}

/// Former values of the fields the connector cares about (update events only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FormerValues {
    pub name: Former,
    pub pattern: Former,
    pub pattern_type: Former,
    /// The former STIX standard id (a `/id` op: the platform may regenerate it on pattern change).
    pub standard_id: Former,
    pub revoked: Former,
}

/// A create/update/delete event of the live stream.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamEvent {
    /// SSE id (`<ms>-<seq>`); not unique per frame (dependencies reuse it, §2.1).
    pub id: String,
    /// From the SSE event name.
    pub kind: EventKind,
    /// Payload `type` (may differ from `kind`, §2.2 caveat).
    pub payload_type: Option<String>,
    pub version: Option<String>,
    pub scope: Option<String>,
    pub message: Option<String>,
    pub origin: Value,
    /// Payload `event_id` (6.x), when present.
    pub event_id: Option<String>,
    pub patch: Vec<PatchOp>,
    pub reverse_patch: Vec<PatchOp>,
    pub former: FormerValues,
    pub payload: Payload,
    /// The STIX object as sent (`data.data`), for [`indicator_from_stix`] and debugging.
    pub stix: Value,
}

/// The `connected` event's stream information (§1.6). All optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectedInfo {
    pub last_event_id: Option<String>,
    pub first_event_id: Option<String>,
    pub stream_size: Option<u64>,
    pub connection_id: Option<String>,
}

/// A frame interpreted.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    Event(Box<StreamEvent>),
    /// `heartbeat` or `consumer_metrics`: only the position matters.
    Heartbeat {
        id: Option<String>,
    },
    Connected(ConnectedInfo),
    /// The platform will not honour `recover` (§8): stop sending it.
    NoRecover {
        id: Option<String>,
    },
    /// `merge` or an unknown event name: understood and ignored.
    Ignored {
        id: Option<String>,
        event: String,
    },
}

/// A create/update/delete frame whose payload cannot be used. Skip-and-record, never fatal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventError {
    pub event_id: Option<String>,
    pub event: String,
    pub reason: String,
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.event_id.as_deref().unwrap_or("<no id>");
        write!(f, "malformed {} event {id}: {}", self.event, self.reason)
    }
}

impl std::error::Error for EventError {}

/// Interpret one SSE frame.
pub fn decode(frame: &Frame) -> Result<Decoded, EventError> {
    let kind = match frame.event.as_str() {
        "create" => EventKind::Create,
        "update" => EventKind::Update,
        "delete" => EventKind::Delete,
        "heartbeat" | "consumer_metrics" => {
            return Ok(Decoded::Heartbeat {
                id: frame.id.clone(),
            });
        }
        "connected" => return Ok(Decoded::Connected(connected_info(&frame.data))),
        "no-recover" => {
            return Ok(Decoded::NoRecover {
                id: frame.id.clone(),
            });
        }
        other => {
            return Ok(Decoded::Ignored {
                id: frame.id.clone(),
                event: other.to_owned(),
            });
        }
    };
    let err = |reason: String| EventError {
        event_id: frame.id.clone(),
        event: frame.event.clone(),
        reason,
    };
    let id = frame
        .id
        .clone()
        .ok_or_else(|| err("event has no id".into()))?;
    let mut env: Value =
        serde_json::from_str(&frame.data).map_err(|e| err(format!("invalid JSON: {e}")))?;
    let obj = env
        .as_object_mut()
        .ok_or_else(|| err("data is not a JSON object".into()))?;
    let stix = obj.remove("data").unwrap_or(Value::Null);
    if !stix.is_object() {
        return Err(err("envelope has no `data` object".into()));
    }
    let payload = payload_of(&stix).map_err(err)?;
    let context = obj.get("context");
    let patch = patch_ops(context.and_then(|c| c.get("patch")));
    let reverse_patch = patch_ops(context.and_then(|c| c.get("reverse_patch")));
    let former = FormerValues {
        name: former(&reverse_patch, "/name"),
        pattern: former(&reverse_patch, "/pattern"),
        pattern_type: former(&reverse_patch, "/pattern_type"),
        standard_id: former(&reverse_patch, "/id"),
        revoked: former(&reverse_patch, "/revoked"),
    };
    Ok(Decoded::Event(Box::new(StreamEvent {
        id,
        kind,
        payload_type: str_field(&env, "type"),
        version: match env.get("version") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        },
        scope: str_field(&env, "scope"),
        message: str_field(&env, "message"),
        origin: env.get("origin").cloned().unwrap_or(Value::Null),
        event_id: str_field(&env, "event_id"),
        patch,
        reverse_patch,
        former,
        payload,
        stix,
    })))
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn connected_info(data: &str) -> ConnectedInfo {
    let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    ConnectedInfo {
        last_event_id: str_field(&v, "lastEventId"),
        first_event_id: str_field(&v, "firstEventId"),
        stream_size: v.get("streamSize").and_then(Value::as_u64),
        connection_id: str_field(&v, "connectionId"),
    }
}

fn payload_of(stix: &Value) -> Result<Payload, String> {
    let stix_type = str_field(stix, "type").ok_or("STIX object has no `type`")?;
    match stix_type.as_str() {
        "indicator" => Ok(Payload::Indicator(indicator_data(stix)?)),
        "relationship" if str_field(stix, "relationship_type").as_deref() == Some("based-on") => {
            let ext = stix.get("extensions").and_then(|e| e.get(OCTI_EXT));
            let ext_str = |k: &str| ext.and_then(|e| str_field(e, k));
            Ok(Payload::BasedOn(BasedOn {
                id: str_field(stix, "id").ok_or("relationship has no `id`")?,
                internal_id: ext_str("id"),
                source_ref: str_field(stix, "source_ref").ok_or("based-on has no `source_ref`")?,
                source_internal_id: ext_str("source_ref"),
                target_ref: str_field(stix, "target_ref").unwrap_or_default(),
                target_internal_id: ext_str("target_ref"),
                target_value: ext_str("target_value"),
                target_type: ext_str("target_type"),
            }))
        }
        "relationship" => Ok(Payload::Other {
            stix_type: format!(
                "relationship/{}",
                str_field(stix, "relationship_type").unwrap_or_default()
            ),
        }),
        _ => Ok(Payload::Other { stix_type }),
    }
}

fn indicator_data(stix: &Value) -> Result<IndicatorData, String> {
    let standard_id = str_field(stix, "id").ok_or("indicator has no `id`")?;
    let ext = stix.get("extensions").and_then(|e| e.get(OCTI_EXT));
    let mitre = stix.get("extensions").and_then(|e| e.get(MITRE_EXT));
    Ok(IndicatorData {
        internal_id: ext.and_then(|e| str_field(e, "id")),
        standard_id,
        stix_ids: strings(ext.and_then(|e| e.get("stix_ids"))),
        name: str_field(stix, "name").unwrap_or_default(),
        description: str_field(stix, "description"),
        pattern: str_field(stix, "pattern").unwrap_or_default(),
        pattern_type: str_field(stix, "pattern_type").unwrap_or_default(),
        score: ext
            .and_then(|e| e.get("score"))
            .or_else(|| stix.get("x_opencti_score"))
            .and_then(as_int),
        platforms: match mitre.and_then(|m| m.get("platforms")) {
            Some(p) => strings(Some(p)),
            None => strings(stix.get("x_mitre_platforms")),
        },
        revoked: stix
            .get("revoked")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// Integers may arrive as floats (`80.0`) from some writers.
fn as_int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn patch_ops(v: Option<&Value>) -> Vec<PatchOp> {
    v.and_then(Value::as_array)
        .map(|ops| {
            ops.iter()
                .filter_map(|op| {
                    Some(PatchOp {
                        op: str_field(op, "op")?,
                        path: str_field(op, "path")?,
                        value: op.get("value").cloned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The former value of `path` from a reverse patch (§2.5). Last op for the path wins.
pub fn former(reverse_patch: &[PatchOp], path: &str) -> Former {
    match reverse_patch.iter().rev().find(|op| op.path == path) {
        None => Former::Unchanged,
        Some(op) => match (&op.op[..], &op.value) {
            ("remove", _) | (_, None) => Former::Absent,
            (_, Some(Value::String(s))) => Former::Value(s.clone()),
            (_, Some(v)) => Former::Value(v.to_string()),
        },
    }
}

/// The translation input built from a stream STIX indicator (used when the GraphQL read returns
/// null, e.g. after a delete). `observables` stay empty: the stream payload does not carry the
/// `based-on` targets; the caller adds those it tracked.
pub fn indicator_from_stix(stix: &Value) -> translate::Indicator {
    let d = indicator_data(stix).unwrap_or_else(|_| IndicatorData {
        name: str_field(stix, "name").unwrap_or_default(),
        pattern: str_field(stix, "pattern").unwrap_or_default(),
        pattern_type: str_field(stix, "pattern_type").unwrap_or_default(),
        ..IndicatorData::default()
    });
    let standard_id = (!d.standard_id.is_empty()).then(|| d.standard_id.clone());
    translate::Indicator {
        id: d
            .internal_id
            .clone()
            .or_else(|| standard_id.clone())
            .unwrap_or_default(),
        standard_id,
        name: d.name,
        description: d.description,
        pattern_type: d.pattern_type,
        pattern: d.pattern,
        score: d.score,
        platforms: d.platforms,
        revoked: d.revoked,
        observables: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(id: Option<&str>, event: &str, data: Value) -> Frame {
        Frame {
            id: id.map(str::to_owned),
            event: event.into(),
            data: data.to_string(),
            retry: None,
        }
    }

    fn indicator() -> Value {
        json!({"id":"indicator--0f4a","type":"indicator","spec_version":"2.1",
            "extensions":{
                OCTI_EXT:{"id":"3d2b","score":80,"stix_ids":["indicator--old"]},
                MITRE_EXT:{"platforms":["windows","linux"]}},
            "name":"1.2.3.4","pattern":"[ipv4-addr:value = '1.2.3.4']","pattern_type":"stix",
            "revoked":false})
    }

    fn event(decoded: Decoded) -> StreamEvent {
        match decoded {
            Decoded::Event(e) => *e,
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn indicator_create_extracts_extensions() {
        let f = frame(
            Some("1-0"),
            "create",
            json!({"version":"4","type":"create","data":indicator()}),
        );
        let e = event(decode(&f).unwrap());
        assert_eq!(e.kind, EventKind::Create);
        let Payload::Indicator(d) = e.payload else {
            panic!()
        };
        assert_eq!(d.internal_id.as_deref(), Some("3d2b"));
        assert_eq!(d.score, Some(80));
        assert_eq!(d.platforms, ["windows", "linux"]);
        assert_eq!(d.stix_ids, ["indicator--old"]);
    }

    #[test]
    fn dispatch_follows_the_sse_name_not_the_payload_type() {
        let f = frame(
            Some("1-0"),
            "delete",
            json!({"type":"update","data":indicator()}),
        );
        let e = event(decode(&f).unwrap());
        assert_eq!(e.kind, EventKind::Delete);
        assert_eq!(e.payload_type.as_deref(), Some("update"));
    }

    #[test]
    fn reverse_patch_gives_former_values() {
        let f = frame(
            Some("2-0"),
            "update",
            json!({"type":"update","data":indicator(),"context":{"patch":[],"reverse_patch":[
            {"op":"replace","path":"/pattern","value":"[ipv4-addr:value = '9.9.9.9']"},
            {"op":"remove","path":"/description"},
            {"op":"remove","path":"/name"},
            {"op":"replace","path":"/id","value":"indicator--before"}]}}),
        );
        let e = event(decode(&f).unwrap());
        assert_eq!(
            e.former.pattern,
            Former::Value("[ipv4-addr:value = '9.9.9.9']".into())
        );
        assert_eq!(e.former.name, Former::Absent);
        assert_eq!(e.former.standard_id.value(), Some("indicator--before"));
        assert_eq!(e.former.revoked, Former::Unchanged);
    }

    #[test]
    fn based_on_relationship_is_recognised() {
        let rel = json!({"id":"relationship--7c1d","type":"relationship","relationship_type":"based-on",
            "source_ref":"indicator--0f4a","target_ref":"ipv4-addr--a3c5",
            "extensions":{OCTI_EXT:{"id":"r1","source_ref":"3d2b","target_value":"1.2.3.4","target_type":"IPv4-Addr"}}});
        let e = event(decode(&frame(Some("3-0"), "create", json!({"data":rel}))).unwrap());
        let Payload::BasedOn(b) = e.payload else {
            panic!()
        };
        assert_eq!(b.source_ref, "indicator--0f4a");
        assert_eq!(b.target_value.as_deref(), Some("1.2.3.4"));
        assert_eq!(b.target_type.as_deref(), Some("IPv4-Addr"));
    }

    #[test]
    fn other_types_are_payload_other() {
        let e = event(
            decode(&frame(
                Some("4-0"),
                "create",
                json!({"data":{"type":"malware","id":"malware--1"}}),
            ))
            .unwrap(),
        );
        assert_eq!(
            e.payload,
            Payload::Other {
                stix_type: "malware".into()
            }
        );
    }

    #[test]
    fn control_events_are_understood() {
        assert_eq!(
            decode(&frame(Some("5-0"), "heartbeat", json!("2024"))).unwrap(),
            Decoded::Heartbeat {
                id: Some("5-0".into())
            }
        );
        let c = decode(&frame(
            None,
            "connected",
            json!({"lastEventId":"9-0","connectionId":"c"}),
        ))
        .unwrap();
        assert!(
            matches!(c, Decoded::Connected(ConnectedInfo { last_event_id: Some(ref l), .. }) if l == "9-0")
        );
        assert!(matches!(
            decode(&frame(Some("6-0"), "merge", json!({}))).unwrap(),
            Decoded::Ignored { .. }
        ));
        assert!(matches!(
            decode(&frame(None, "no-recover", json!({}))).unwrap(),
            Decoded::NoRecover { .. }
        ));
        assert!(matches!(
            decode(&frame(None, "consumer_metrics", json!({}))).unwrap(),
            Decoded::Heartbeat { .. }
        ));
    }

    #[test]
    fn malformed_events_are_errors_naming_the_id() {
        let bad = [
            Frame {
                id: Some("7-0".into()),
                event: "create".into(),
                data: "{not json".into(),
                retry: None,
            },
            frame(Some("7-0"), "create", json!([1])),
            frame(Some("7-0"), "update", json!({"data":"x"})),
            frame(Some("7-0"), "delete", json!({"data":{"id":"x"}})),
            frame(
                Some("7-0"),
                "create",
                json!({"data":{"type":"indicator","name":"n"}}),
            ),
        ];
        for f in bad {
            let e = decode(&f).unwrap_err();
            assert!(e.to_string().contains("7-0"), "{e}");
        }
    }

    #[test]
    fn indicator_from_stix_prefers_internal_id() {
        let i = indicator_from_stix(&indicator());
        assert_eq!(i.id, "3d2b");
        assert_eq!(i.standard_id.as_deref(), Some("indicator--0f4a"));
        assert_eq!(i.score, Some(80));
        assert_eq!(i.platforms, ["windows", "linux"]);
        let mut no_ext = indicator();
        no_ext.as_object_mut().unwrap().remove("extensions");
        let i = indicator_from_stix(&no_ext);
        assert_eq!(i.id, "indicator--0f4a");
        assert_eq!(i.score, None);
    }
}
