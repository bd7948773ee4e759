//! Typed OpenCTI live-stream events: an SSE [`Frame`] in, a [`Decoded`] value out. Pure, no I/O.
//!
//! Owns the meaning of the event names (`create`/`update`/`delete`, `connected`, `heartbeat`,
//! `no-recover`, `consumer_metrics`, `merge`, unknown ones) and of the JSON envelope
//! (opencti-protocol.md §2.2-§2.7): which STIX objects matter (Indicators and `based-on`
//! relationships), where OpenCTI hides the internal id, score, platforms and observable values
//! (extensions, §2.3), and what an update changed (the indicator's [`FormerState`], replayed from
//! the `reverse_patch` of its context by [`reverse_patch`](super::reverse_patch), §2.5).
//!
//! An event is decoded once, here, on the reader thread: an indicator event carries the
//! translation input ([`translate::Indicator`]) and its [`FormerState`], and the worker never reads
//! the JSON again. The STIX object as sent is kept only for the dead-letter excerpt.
//!
//! Every field is optional on the wire (§2.2: empty properties are omitted), so decoding reads a
//! `serde_json::Value` by hand and only fails (an [`EventError`] naming the event id) when the
//! object cannot be identified at all. Dispatch follows the SSE event name, not the payload `type`
//! (an update leaving the stream filters arrives as `event: delete`, §2.2 caveat).
//!
//! A `merge` (§2.2) is an update of the target (same envelope, `context.reverse_patch`) plus
//! `context.sources`, the absorbed objects as they were: [`EventKind::Merge`], whose
//! [`IndicatorEvent`] lists the absorbed indicators ([`IndicatorEvent::absorbed`]), each read by
//! the same per-object decoding as the target. On a live stream OpenCTI sends nothing else for a
//! merge (read in its source: `database/middleware` `mergeEntities` stores the one merge event,
//! `database/redis` `storeMergeEvent`, after `mergeEntitiesRaw` moved the sources' relationships
//! to the target and removed the sources with `elDeleteElements`, which streams nothing; the live
//! stream handler in `graphql/sseMiddleware` forwards a merge like a create). A `delete` of an
//! absorbed indicator can still reach us (a replay, or one sent before the merge): the consumer
//! must handle both orders.

use super::reverse_patch::{former_state, patch_ops};
use super::sse::Frame;
use crate::translate::{self, FormerState, LinkedObservable};
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
    /// Other objects were merged into this one (`context.sources`).
    Merge,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Create => "create",
            EventKind::Update => "update",
            EventKind::Delete => "delete",
            EventKind::Merge => "merge",
        }
    }
}

/// An event about a STIX Indicator, decoded once.
#[derive(Clone, Debug, PartialEq)]
pub struct IndicatorEvent {
    /// The indicator as the payload states it, as a translation input: the OpenCTI internal id
    /// (else the STIX id) as `id`, score and platforms from the extensions, and the OpenCTI
    /// extension's `observable_values` as linked observables (so a delete releases the values
    /// held through observables). Also the pipeline key. The worker prefers a fresh GraphQL read
    /// and falls back on this one.
    pub indicator: translate::Indicator,
    /// What the indicator was before: former name / pattern type / pattern / IOCs (update and
    /// merge events, from the reverse patch) and the other ids its holder may be recorded under
    /// (any event).
    pub former: FormerState,
    /// A merge: the indicators absorbed into this one, as they were before (their `former` holds
    /// only their other ids; their own `absorbed` is empty). Empty for any other event.
    pub absorbed: Vec<IndicatorEvent>,
}

/// A `based-on` relationship: indicator → observable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasedOn {
    /// Relationship STIX id.
    pub id: String,
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
    Indicator(IndicatorEvent),
    BasedOn(BasedOn),
    /// Any other STIX type or relationship type (ignored by the connector, counted by the caller).
    Other {
        stix_type: String,
    },
}

/// A create/update/delete event of the live stream.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamEvent {
    /// SSE id (`<ms>-<seq>`); not unique per frame (dependencies reuse it, §2.1).
    pub id: String,
    /// From the SSE event name (the payload `type` may differ, §2.2 caveat).
    pub kind: EventKind,
    pub payload: Payload,
    /// The STIX object as sent (`data.data`), as compact JSON text. Kept only for the dead-letter
    /// excerpt, so that an operator sees a failed event as the platform sent it; nothing decodes
    /// it again. Text, not a `Value`: every event in the pipeline window holds it, and a tree
    /// costs a map node, a key and a value allocation per field (README "Performance", Memory).
    pub stix: String,
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
    /// An unknown event name: understood and ignored.
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
        "merge" => EventKind::Merge,
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
    let payload = match str_field(&stix, "type").as_deref() {
        Some("indicator") => {
            let (indicator, stix_ids) = indicator_of(&stix).map_err(err)?;
            let reverse = patch_ops(env.pointer("/context/reverse_patch"));
            let former = former_state(&id, &stix, &reverse, &indicator, stix_ids);
            let absorbed = match kind {
                EventKind::Merge => absorbed(&id, env.pointer("/context/sources")).map_err(err)?,
                _ => Vec::new(),
            };
            Payload::Indicator(IndicatorEvent {
                indicator,
                former,
                absorbed,
            })
        }
        Some("relationship") => relationship(&stix).map_err(err)?,
        Some(other) => Payload::Other {
            stix_type: other.to_owned(),
        },
        None => return Err(err("STIX object has no `type`".into())),
    };
    Ok(Decoded::Event(Box::new(StreamEvent {
        id,
        kind,
        payload,
        stix: stix.to_string(),
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

/// A relationship: `based-on` matters, any other type is [`Payload::Other`].
fn relationship(stix: &Value) -> Result<Payload, String> {
    let relationship_type = str_field(stix, "relationship_type").unwrap_or_default();
    if relationship_type != "based-on" {
        return Ok(Payload::Other {
            stix_type: format!("relationship/{relationship_type}"),
        });
    }
    let ext = stix.get("extensions").and_then(|e| e.get(OCTI_EXT));
    let ext_str = |k: &str| ext.and_then(|e| str_field(e, k));
    Ok(Payload::BasedOn(BasedOn {
        id: str_field(stix, "id").ok_or("relationship has no `id`")?,
        source_ref: str_field(stix, "source_ref").ok_or("based-on has no `source_ref`")?,
        source_internal_id: ext_str("source_ref"),
        target_ref: str_field(stix, "target_ref").unwrap_or_default(),
        target_internal_id: ext_str("target_ref"),
        target_value: ext_str("target_value"),
        target_type: ext_str("target_type"),
    }))
}

/// The indicators of a merge's `context.sources` (other types are left out: OpenCTI merges
/// objects of one type). A source that is not an object, or an indicator without `id`, makes the
/// event malformed: its holds could not be moved.
fn absorbed(event_id: &str, sources: Option<&Value>) -> Result<Vec<IndicatorEvent>, String> {
    let Some(sources) = sources else {
        return Ok(Vec::new());
    };
    let list = sources
        .as_array()
        .ok_or("merge `context.sources` is not a list")?;
    let mut out = Vec::with_capacity(list.len());
    for (i, source) in list.iter().enumerate() {
        if !source.is_object() {
            return Err(format!("merge source {i} is not an object"));
        }
        if str_field(source, "type").as_deref() != Some("indicator") {
            continue;
        }
        let (indicator, stix_ids) =
            indicator_of(source).map_err(|e| format!("merge source {i}: {e}"))?;
        let former = former_state(event_id, source, &[], &indicator, stix_ids);
        out.push(IndicatorEvent {
            indicator,
            former,
            absorbed: Vec::new(),
        });
    }
    Ok(out)
}

/// One STIX indicator object as a translation input, and the other standard ids the platform
/// knows it by (OCTI extension `stix_ids`).
fn indicator_of(stix: &Value) -> Result<(translate::Indicator, Vec<String>), String> {
    let standard_id = str_field(stix, "id").ok_or("indicator has no `id`")?;
    let ext = stix.get("extensions").and_then(|e| e.get(OCTI_EXT));
    let mitre = stix.get("extensions").and_then(|e| e.get(MITRE_EXT));
    let indicator = translate::Indicator {
        // The internal id is stable across pattern changes; the standard id is not.
        id: ext
            .and_then(|e| str_field(e, "id"))
            .unwrap_or_else(|| standard_id.clone()),
        standard_id: (!standard_id.is_empty()).then_some(standard_id),
        name: str_field(stix, "name").unwrap_or_default(),
        description: str_field(stix, "description"),
        pattern_type: str_field(stix, "pattern_type").unwrap_or_default(),
        pattern: str_field(stix, "pattern").unwrap_or_default(),
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
        observables: observable_values(ext),
    };
    Ok((indicator, strings(ext.and_then(|e| e.get("stix_ids")))))
}

/// The OCTI extension's `observable_values` (`{"type", "value"}`; entries without both, such as
/// hash-only files, are left out) as linked observables without ids.
fn observable_values(ext: Option<&Value>) -> Vec<LinkedObservable> {
    let values = ext
        .and_then(|e| e.get("observable_values"))
        .and_then(Value::as_array);
    values
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some(LinkedObservable {
                entity_type: str_field(v, "type")?,
                value: str_field(v, "value")?,
                ..LinkedObservable::default()
            })
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::{IocKey, IocType};
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
                OCTI_EXT:{"id":"3d2b","score":80,"stix_ids":["indicator--old"],
                    "observable_values":[{"type":"Domain-Name","value":"a.example"},
                        {"type":"StixFile","hashes":{"MD5":"x"}}]},
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

    fn indicator_event(e: StreamEvent) -> IndicatorEvent {
        match e.payload {
            Payload::Indicator(i) => i,
            other => panic!("not an indicator: {other:?}"),
        }
    }

    #[test]
    fn indicator_create_is_the_translation_input() {
        let f = frame(
            Some("1-0"),
            "create",
            json!({"version":"4","type":"create","data":indicator()}),
        );
        let e = event(decode(&f).unwrap());
        assert_eq!(e.kind, EventKind::Create);
        assert_eq!(
            serde_json::from_str::<Value>(&e.stix).unwrap(),
            indicator(),
            "kept as sent for the dead-letter excerpt"
        );
        let IndicatorEvent {
            indicator,
            former,
            absorbed,
        } = indicator_event(e);
        assert!(absorbed.is_empty());
        assert_eq!(
            indicator,
            translate::Indicator {
                id: "3d2b".into(),
                standard_id: Some("indicator--0f4a".into()),
                name: "1.2.3.4".into(),
                description: None,
                pattern_type: "stix".into(),
                pattern: "[ipv4-addr:value = '1.2.3.4']".into(),
                score: Some(80),
                platforms: vec!["windows".into(), "linux".into()],
                revoked: false,
                // A value-less entry (hashes only) is left out.
                observables: vec![LinkedObservable {
                    entity_type: "Domain-Name".into(),
                    value: "a.example".into(),
                    ..LinkedObservable::default()
                }],
            }
        );
        // A create changed nothing; the older standard ids still name the holder.
        assert_eq!(
            former,
            FormerState {
                ids: vec!["indicator--old".into()],
                ..FormerState::default()
            }
        );
    }

    #[test]
    fn without_extensions_the_standard_id_is_the_identity() {
        let mut stix = indicator();
        stix.as_object_mut().unwrap().remove("extensions");
        stix["x_opencti_score"] = json!(55.0);
        stix["x_mitre_platforms"] = json!(["macos"]);
        let i = indicator_event(event(
            decode(&frame(Some("1-0"), "create", json!({"data": stix}))).unwrap(),
        ))
        .indicator;
        assert_eq!(i.id, "indicator--0f4a");
        assert_eq!(i.score, Some(55), "a float score is an integer");
        assert_eq!(i.platforms, ["macos"]);
        assert!(i.observables.is_empty());
    }

    #[test]
    fn dispatch_follows_the_sse_name_not_the_payload_type() {
        let f = frame(
            Some("1-0"),
            "delete",
            json!({"type":"update","data":indicator()}),
        );
        assert_eq!(event(decode(&f).unwrap()).kind, EventKind::Delete);
    }

    #[test]
    fn an_update_carries_the_former_state() {
        let f = frame(
            Some("2-0"),
            "update",
            json!({"type":"update","data":indicator(),"context":{"patch":[],"reverse_patch":[
            {"op":"replace","path":"/pattern","value":"[ipv4-addr:value = '9.9.9.9']"},
            {"op":"remove","path":"/description"},
            {"op":"replace","path":"/name","value":"before"},
            {"op":"replace","path":"/id","value":"indicator--before"}]}}),
        );
        let former = indicator_event(event(decode(&f).unwrap())).former;
        assert_eq!(
            former,
            FormerState {
                name: Some("before".into()),
                pattern_type: None,
                pattern: Some("[ipv4-addr:value = '9.9.9.9']".into()),
                iocs: Some(vec![IocKey {
                    ioc_type: IocType::IpBoth,
                    value: "9.9.9.9".into()
                }]),
                ids: vec!["indicator--before".into(), "indicator--old".into()],
                standard_id_changed: true,
            }
        );
    }

    #[test]
    fn based_on_relationship_is_recognised() {
        let rel = json!({"id":"relationship--7c1d","type":"relationship","relationship_type":"based-on",
            "source_ref":"indicator--0f4a","target_ref":"ipv4-addr--a3c5",
            "extensions":{OCTI_EXT:{"id":"r1","source_ref":"3d2b","target_ref":"o1",
                "target_value":"1.2.3.4","target_type":"IPv4-Addr"}}});
        let e = event(decode(&frame(Some("3-0"), "create", json!({"data":rel}))).unwrap());
        assert_eq!(
            e.payload,
            Payload::BasedOn(BasedOn {
                id: "relationship--7c1d".into(),
                source_ref: "indicator--0f4a".into(),
                source_internal_id: Some("3d2b".into()),
                target_ref: "ipv4-addr--a3c5".into(),
                target_internal_id: Some("o1".into()),
                target_value: Some("1.2.3.4".into()),
                target_type: Some("IPv4-Addr".into()),
            })
        );
    }

    #[test]
    fn other_types_are_payload_other() {
        let other = |data: Value| event(decode(&frame(Some("4-0"), "create", data)).unwrap());
        assert_eq!(
            other(json!({"data":{"type":"malware","id":"malware--1"}})).payload,
            Payload::Other {
                stix_type: "malware".into()
            }
        );
        assert_eq!(
            other(json!({"data":{"type":"relationship","relationship_type":"uses"}})).payload,
            Payload::Other {
                stix_type: "relationship/uses".into()
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
            decode(&frame(Some("6-0"), "relocate", json!({}))).unwrap(),
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
    fn a_merge_lists_the_absorbed_indicators() {
        let source = |n: &str| {
            json!({"id": format!("indicator--s{n}"), "type": "indicator", "name": format!("s{n}"),
                "pattern": "[ipv4-addr:value = '1.2.3.4']", "pattern_type": "stix",
                "extensions": {OCTI_EXT: {"id": format!("int-s{n}"),
                    "stix_ids": [format!("indicator--s{n}-old")]}}})
        };
        let f = frame(
            Some("8-0"),
            "merge",
            json!({"type": "merge", "data": indicator(), "context": {
                "patch": [], "reverse_patch": [{"op": "replace", "path": "/name", "value": "was"}],
                "sources": [source("1"), {"type": "malware", "id": "malware--x"}, source("2")]}}),
        );
        let e = event(decode(&f).unwrap());
        assert_eq!(e.kind, EventKind::Merge);
        let target = indicator_event(e);
        assert_eq!(target.indicator.id, "3d2b");
        assert_eq!(target.former.name.as_deref(), Some("was"));
        let ids: Vec<&str> = target
            .absorbed
            .iter()
            .map(|a| a.indicator.id.as_str())
            .collect();
        assert_eq!(ids, ["int-s1", "int-s2"], "the malware source is left out");
        assert_eq!(target.absorbed[0].former.ids, ["indicator--s1-old"]);
        assert_eq!(
            target.absorbed[1].indicator.standard_id.as_deref(),
            Some("indicator--s2")
        );
        // No sources: a merge that moves nothing (still the target's update).
        let bare = frame(Some("8-1"), "merge", json!({"data": indicator()}));
        assert!(
            indicator_event(event(decode(&bare).unwrap()))
                .absorbed
                .is_empty()
        );
        // A source that cannot be identified makes the event malformed, naming it.
        for sources in [json!("x"), json!([1]), json!([{"type": "indicator"}])] {
            let bad = frame(
                Some("8-2"),
                "merge",
                json!({"data": indicator(), "context": {"sources": sources}}),
            );
            let e = decode(&bad).unwrap_err();
            assert!(
                e.to_string().contains("8-2") && e.to_string().contains("merge"),
                "{e}"
            );
        }
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
            frame(
                Some("7-0"),
                "create",
                json!({"data":{"type":"relationship","relationship_type":"based-on","id":"r"}}),
            ),
        ];
        for f in bad {
            let e = decode(&f).unwrap_err();
            assert!(e.to_string().contains("7-0"), "{e}");
        }
    }
}
