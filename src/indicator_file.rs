//! Reading indicators from a file for the offline `translate` command.
//!
//! Accepted input (detected from the first non-blank line):
//! - **JSON Lines**: the first non-blank line is a complete JSON value. Each non-blank line is then
//!   on its own: an OpenCTI indicator in the GraphQL read shape (`id`, `standard_id`, `name`,
//!   `pattern_type`, `pattern`, `x_opencti_score`, `x_mitre_platforms`, `observables`), a STIX 2.1
//!   indicator as the live stream sends it (score and platforms in the OpenCTI / MITRE
//!   extensions), a stream event envelope (`{"type":"create","data":{...}}`) or a STIX bundle
//!   (every indicator in it, with the observables its `based-on` relationships point to inside
//!   the bundle). A bad line becomes one error item naming the line; the rest go on.
//! - **One JSON document** otherwise (e.g. a pretty-printed bundle): a bundle, an indicator or an
//!   array of those.
//!
//! Pure: bytes in, [`InputItem`]s out, in input order. Translation itself is `translate`'s job.

use crate::translate::{Indicator, LinkedObservable};
use serde_json::{Map, Value};
use std::fmt;

/// The OpenCTI STIX extension (internal id, score, ...), opencti-protocol.md §2.3.
const OCTI_EXTENSION: &str = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba";
/// The MITRE STIX extension (platforms).
const MITRE_EXTENSION: &str = "extension-definition--322b8f77-262a-4cb8-a915-1e441e00329b";

/// Where an item comes from: the 1-based line and, inside a bundle or array, the 0-based index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub object: Option<usize>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.object {
            Some(i) => write!(f, "line {}, object {i}", self.line),
            None => write!(f, "line {}", self.line),
        }
    }
}

/// One indicator read from the input, or why the input at that position is not one.
#[derive(Clone, Debug, PartialEq)]
pub struct InputItem {
    pub position: Position,
    pub indicator: Result<Indicator, String>,
}

/// Read every indicator of a JSON Lines file or a single JSON document. Never fails as a whole:
/// problems become error items.
pub fn read_indicators(input: &[u8]) -> Vec<InputItem> {
    let mut items = Vec::new();
    let first = input
        .split(|b| *b == b'\n')
        .enumerate()
        .find(|(_, l)| !l.trim_ascii().is_empty());
    let Some((_, first_line)) = first else {
        return items;
    };
    let json_lines = serde_json::from_slice::<Value>(first_line).is_ok();
    if json_lines {
        for (i, line) in input.split(|b| *b == b'\n').enumerate() {
            let line_no = i + 1;
            if line.trim_ascii().is_empty() {
                continue;
            }
            match serde_json::from_slice::<Value>(line) {
                Ok(v) => push_value(&v, line_no, None, &mut items),
                Err(e) => items.push(InputItem {
                    position: Position {
                        line: line_no,
                        object: None,
                    },
                    indicator: Err(format!(
                        "line {line_no}, column {}: invalid JSON: {}",
                        e.column(),
                        json_message(&e)
                    )),
                }),
            }
        }
    } else {
        match serde_json::from_slice::<Value>(input) {
            Ok(v) => {
                let line = first.map(|(i, _)| i + 1).unwrap_or(1);
                push_value(&v, line, None, &mut items);
            }
            Err(e) => items.push(InputItem {
                position: Position {
                    line: e.line(),
                    object: None,
                },
                indicator: Err(format!(
                    "line {}, column {}: invalid JSON: {}",
                    e.line(),
                    e.column(),
                    json_message(&e)
                )),
            }),
        }
    }
    items
}

/// serde_json's message without its own " at line X column Y" suffix (we print the position).
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

fn push_value(value: &Value, line: usize, object: Option<usize>, items: &mut Vec<InputItem>) {
    let position = Position { line, object };
    match value {
        Value::Array(values) if object.is_none() => {
            for (i, v) in values.iter().enumerate() {
                push_value(v, line, Some(i), items);
            }
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("bundle") => {
            let Some(objects) = o.get("objects").and_then(Value::as_array) else {
                items.push(InputItem {
                    position,
                    indicator: Err(format!("{position}: bundle without an `objects` list")),
                });
                return;
            };
            let linked = based_on_observables(objects);
            for (i, v) in objects.iter().enumerate() {
                // Only indicators are translated; the bundle's other objects are context.
                if v.get("type").and_then(Value::as_str) == Some("indicator") {
                    let position = Position {
                        line,
                        object: Some(i),
                    };
                    let indicator = indicator_from_value(v).map(|mut ind| {
                        let own_id = v.get("id").and_then(Value::as_str).unwrap_or_default();
                        for (_, o) in linked.iter().filter(|(src, _)| *src == own_id) {
                            let known = ind.observables.iter().any(|k| {
                                k.value == o.value
                                    && k.entity_type.eq_ignore_ascii_case(&o.entity_type)
                            });
                            if !known {
                                ind.observables.push(o.clone());
                            }
                        }
                        ind
                    });
                    items.push(InputItem {
                        position,
                        indicator: indicator.map_err(|e| format!("{position}: {e}")),
                    });
                }
            }
        }
        _ => items.push(InputItem {
            position,
            indicator: indicator_from_value(value).map_err(|e| format!("{position}: {e}")),
        }),
    }
}

/// `(indicator STIX id, observable)` for every `based-on` relationship of a bundle whose target
/// observable is in the bundle too: what OpenCTI's GraphQL `observables` field would return.
fn based_on_observables(objects: &[Value]) -> Vec<(&str, LinkedObservable)> {
    let by_id: std::collections::HashMap<&str, &Value> = objects
        .iter()
        .filter_map(|o| Some((o.get("id")?.as_str()?, o)))
        .collect();
    let mut out = Vec::new();
    for rel in objects {
        let field = |k: &str| rel.get(k).and_then(Value::as_str);
        if field("type") != Some("relationship") || field("relationship_type") != Some("based-on") {
            continue;
        }
        let (Some(source), Some(target)) = (field("source_ref"), field("target_ref")) else {
            continue;
        };
        if let Some(observable) = by_id.get(target).and_then(|o| linked_observable(o)) {
            out.push((source, observable));
        }
    }
    out
}

/// An observable (SCO) as OpenCTI names it: entity type and representative value (for a file,
/// its strongest hash, else its name).
fn linked_observable(sco: &Value) -> Option<LinkedObservable> {
    let stix_type = sco.get("type")?.as_str()?;
    let (entity_type, value) = if stix_type == "file" {
        let hashes = sco.get("hashes").and_then(Value::as_object);
        let hash = ["SHA-256", "SHA-1", "MD5", "SHA-512"]
            .iter()
            .find_map(|k| hashes?.get(*k)?.as_str());
        let value = hash.or_else(|| sco.get("name")?.as_str())?;
        ("StixFile".to_owned(), value)
    } else {
        (opencti_entity_type(stix_type), sco.get("value")?.as_str()?)
    };
    Some(LinkedObservable {
        entity_type,
        value: value.to_owned(),
        ..LinkedObservable::default()
    })
}

/// OpenCTI's entity type for a STIX cyber-observable type: `ipv4-addr` → `IPv4-Addr`,
/// `domain-name` → `Domain-Name`, `x-opencti-hostname` → `Hostname`.
fn opencti_entity_type(stix_type: &str) -> String {
    let t = stix_type.strip_prefix("x-opencti-").unwrap_or(stix_type);
    t.split('-')
        .map(|part| match part {
            "ipv4" => "IPv4".to_owned(),
            "ipv6" => "IPv6".to_owned(),
            _ => {
                let mut c = part.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Build a [`Indicator`] from one JSON object: GraphQL read shape, stream STIX shape, or a stream
/// event envelope around the latter.
pub fn indicator_from_value(value: &Value) -> Result<Indicator, String> {
    let Value::Object(o) = value else {
        return Err(format!("expected a JSON object, found {}", kind(value)));
    };
    // A stream event envelope: {"version":"4","type":"create","data":{...}}.
    let is_event = o
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| matches!(t, "create" | "update" | "delete" | "merge"));
    if let (true, Some(Value::Object(data))) = (is_event, o.get("data")) {
        return indicator_from_object(data);
    }
    indicator_from_object(o)
}

fn indicator_from_object(o: &Map<String, Value>) -> Result<Indicator, String> {
    match o.get("type").and_then(Value::as_str) {
        Some(t) if t != "indicator" => return Err(format!("not an indicator (type {t:?})")),
        _ => {}
    }
    let extensions = o.get("extensions").and_then(Value::as_object);
    let octi = extensions
        .and_then(|e| e.get(OCTI_EXTENSION))
        .and_then(Value::as_object);
    let mitre = extensions
        .and_then(|e| e.get(MITRE_EXTENSION))
        .and_then(Value::as_object);

    let top_id = string(o, "id")?;
    let stix_id = top_id.clone().filter(|id| id.starts_with("indicator--"));
    let standard_id = string(o, "standard_id")?.or(stix_id);
    let id = match octi {
        Some(ext) => string(ext, "id")?,
        None => None,
    }
    .or(top_id)
    .or_else(|| standard_id.clone())
    .unwrap_or_default();

    let pattern = string(o, "pattern")?.ok_or_else(|| "missing field `pattern`".to_owned())?;
    let score = match integer(o, "x_opencti_score")? {
        Some(s) => Some(s),
        None => match octi {
            Some(ext) => integer(ext, "score")?,
            None => None,
        },
    };
    let platforms = match strings(o, "x_mitre_platforms")? {
        Some(p) => p,
        None => match mitre {
            Some(ext) => strings(ext, "platforms")?.unwrap_or_default(),
            None => Vec::new(),
        },
    };
    let revoked = match o.get("revoked") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(format!(
                "field `revoked` must be a boolean, found {}",
                kind(other)
            ));
        }
    };
    Ok(Indicator {
        id,
        standard_id,
        name: string(o, "name")?.unwrap_or_default(),
        description: string(o, "description")?,
        // OpenCTI always sets it; a hand-written test line may not.
        pattern_type: string(o, "pattern_type")?.unwrap_or_else(|| "stix".to_owned()),
        pattern,
        score,
        platforms,
        revoked,
        observables: observables(o)?,
    })
}

/// `observables` as pycti returns it (a list of nodes), as the raw GraphQL connection
/// (`{"edges":[{"node":...}]}`), or as [`LinkedObservable`]s.
fn observables(o: &Map<String, Value>) -> Result<Vec<LinkedObservable>, String> {
    let nodes: Vec<&Value> = match o.get("observables") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(Value::Object(c)) => match c.get("edges") {
            Some(Value::Array(edges)) => edges.iter().filter_map(|e| e.get("node")).collect(),
            _ => return Err("field `observables` must be a list or have `edges`".to_owned()),
        },
        Some(other) => {
            return Err(format!(
                "field `observables` must be a list, found {}",
                kind(other)
            ));
        }
    };
    let mut out = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.into_iter().enumerate() {
        let Value::Object(n) = node else {
            return Err(format!("observable {i} must be an object"));
        };
        let entity_type = string(n, "entity_type")?
            .ok_or_else(|| format!("observable {i}: missing `entity_type`"))?;
        let value = match string(n, "observable_value")? {
            Some(v) => v,
            None => string(n, "value")?
                .ok_or_else(|| format!("observable {i}: missing `observable_value`"))?,
        };
        out.push(LinkedObservable {
            entity_type,
            value,
            ..LinkedObservable::default()
        });
    }
    Ok(out)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn string(o: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "field `{key}` must be a string, found {}",
            kind(other)
        )),
    }
}

fn integer(o: &Map<String, Value>, key: &str) -> Result<Option<i64>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("field `{key}` must be a whole number, found {n}")),
        Some(other) => Err(format!(
            "field `{key}` must be a number, found {}",
            kind(other)
        )),
    }
}

fn strings(o: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "field `{key}` must hold strings, found {}",
                    kind(other)
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(format!(
            "field `{key}` must be a list, found {}",
            kind(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(items: &[InputItem]) -> Vec<&Indicator> {
        items
            .iter()
            .map(|i| i.indicator.as_ref().unwrap())
            .collect()
    }

    #[test]
    fn graphql_read_shape() {
        let line = r#"{"id":"3d2b","standard_id":"indicator--0f4a","name":"1.2.3.4","description":"C2","pattern_type":"stix","pattern":"[ipv4-addr:value = '1.2.3.4']","x_opencti_score":80,"x_mitre_platforms":["windows"],"revoked":false,"observables":{"edges":[{"node":{"id":"9a","entity_type":"IPv4-Addr","observable_value":"1.2.3.4"}}]}}"#;
        let items = read_indicators(line.as_bytes());
        let ind = ok(&items)[0];
        assert_eq!(ind.id, "3d2b");
        assert_eq!(ind.standard_id.as_deref(), Some("indicator--0f4a"));
        assert_eq!(ind.score, Some(80));
        assert_eq!(ind.platforms, vec!["windows"]);
        assert_eq!(
            ind.observables,
            vec![LinkedObservable {
                entity_type: "IPv4-Addr".into(),
                value: "1.2.3.4".into(),
                ..LinkedObservable::default()
            }]
        );
    }

    #[test]
    fn stream_stix_shape_reads_extensions() {
        let line = format!(
            r#"{{"type":"create","data":{{"id":"indicator--0f4a","type":"indicator","name":"n","pattern":"[x:y = 'z']","pattern_type":"stix","extensions":{{"{OCTI_EXTENSION}":{{"id":"uuid-1","score":55}},"{MITRE_EXTENSION}":{{"platforms":["linux"]}}}}}}}}"#
        );
        let items = read_indicators(line.as_bytes());
        let ind = ok(&items)[0];
        assert_eq!(ind.id, "uuid-1");
        assert_eq!(ind.standard_id.as_deref(), Some("indicator--0f4a"));
        assert_eq!(ind.score, Some(55));
        assert_eq!(ind.platforms, vec!["linux"]);
    }

    #[test]
    fn bad_lines_are_items_and_do_not_stop_the_rest() {
        let input = b"{\"pattern\":\"a\",\"name\":\"one\"}\n\n{not json\n{\"name\":\"no pattern\"}\n[1]\n{\"pattern\":\"b\"}\n";
        let items = read_indicators(input);
        assert_eq!(items.len(), 5);
        assert_eq!(items[0].indicator.as_ref().unwrap().name, "one");
        let e = items[1].indicator.as_ref().unwrap_err();
        assert!(e.starts_with("line 3, column "), "{e}");
        assert_eq!(
            items[2].indicator.as_ref().unwrap_err(),
            "line 4: missing field `pattern`"
        );
        assert!(
            items[3]
                .indicator
                .as_ref()
                .unwrap_err()
                .starts_with("line 5, object 0: expected a JSON object")
        );
        assert_eq!(items[4].position.line, 6);
        assert_eq!(items[4].indicator.as_ref().unwrap().pattern_type, "stix");
    }

    #[test]
    fn pretty_bundle_document_keeps_only_indicators_in_order() {
        let input = br#"{
  "type": "bundle",
  "id": "bundle--1",
  "objects": [
    {"type": "indicator", "id": "indicator--a", "name": "A", "pattern": "pa", "pattern_type": "stix"},
    {"type": "relationship", "id": "relationship--r"},
    {"type": "indicator", "id": "indicator--b", "name": "B", "pattern": "pb", "pattern_type": "yara", "x_opencti_score": "high"}
  ]
}"#;
        let items = read_indicators(input);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].indicator.as_ref().unwrap().id, "indicator--a");
        assert_eq!(
            items[0].position,
            Position {
                line: 1,
                object: Some(0)
            }
        );
        assert_eq!(
            items[1].indicator.as_ref().unwrap_err(),
            "line 1, object 2: field `x_opencti_score` must be a number, found a string"
        );
    }

    #[test]
    fn bundle_based_on_relationships_link_observables() {
        let input = br#"{"type":"bundle","objects":[
            {"type":"indicator","id":"indicator--a","pattern":"[x:y = 'z']","observables":[{"entity_type":"IPv4-Addr","observable_value":"1.2.3.4"}]},
            {"type":"ipv4-addr","id":"ipv4-addr--1","value":"1.2.3.4"},
            {"type":"file","id":"file--1","name":"evil.exe","hashes":{"MD5":"d41d8cd98f00b204e9800998ecf8427e","SHA-256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}},
            {"type":"file","id":"file--2","name":"only-name.dll"},
            {"type":"relationship","id":"relationship--1","relationship_type":"based-on","source_ref":"indicator--a","target_ref":"ipv4-addr--1"},
            {"type":"relationship","id":"relationship--2","relationship_type":"based-on","source_ref":"indicator--a","target_ref":"file--1"},
            {"type":"relationship","id":"relationship--3","relationship_type":"indicates","source_ref":"indicator--a","target_ref":"file--2"},
            {"type":"relationship","id":"relationship--4","relationship_type":"based-on","source_ref":"indicator--b","target_ref":"file--2"},
            {"type":"relationship","id":"relationship--5","relationship_type":"based-on","source_ref":"indicator--a","target_ref":"domain-name--absent"},
            {"type":"indicator","id":"indicator--b","pattern":"[x:y = 'w']"}
        ]}"#;
        let items = read_indicators(input);
        let obs = |i: usize| -> Vec<(String, String)> {
            items[i]
                .indicator
                .as_ref()
                .unwrap()
                .observables
                .iter()
                .map(|o| (o.entity_type.clone(), o.value.clone()))
                .collect()
        };
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(
            obs(0),
            vec![
                pair("IPv4-Addr", "1.2.3.4"),
                pair(
                    "StixFile",
                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                ),
            ]
        );
        assert_eq!(obs(1), vec![pair("StixFile", "only-name.dll")]);
    }

    #[test]
    fn stix_types_get_opencti_entity_names() {
        for (stix, octi) in [
            ("ipv4-addr", "IPv4-Addr"),
            ("ipv6-addr", "IPv6-Addr"),
            ("domain-name", "Domain-Name"),
            ("url", "Url"),
            ("x-opencti-hostname", "Hostname"),
            ("windows-registry-key", "Windows-Registry-Key"),
        ] {
            assert_eq!(opencti_entity_type(stix), octi);
        }
    }

    #[test]
    fn broken_document_is_one_positioned_error() {
        let items = read_indicators(b"{\n  \"type\": \"bundle\",\n  \"objects\": [\n}\n");
        assert_eq!(items.len(), 1);
        let e = items[0].indicator.as_ref().unwrap_err();
        assert!(e.starts_with("line 4, column"), "{e}");
    }

    #[test]
    fn other_stix_types_are_refused() {
        let items = read_indicators(br#"{"type":"relationship","id":"relationship--1"}"#);
        assert_eq!(
            items[0].indicator.as_ref().unwrap_err(),
            "line 1: not an indicator (type \"relationship\")"
        );
    }

    #[test]
    fn empty_input_gives_nothing_and_garbage_never_panics() {
        assert!(read_indicators(b"").is_empty());
        assert!(read_indicators(b"  \n\n").is_empty());
        for input in [
            &b"\xff\xfe"[..],
            b"}",
            b"\"x\"\n3",
            b"[[[[",
            b"{\"observables\":{\"edges\":7},\"pattern\":\"p\"}",
        ] {
            let items = read_indicators(input);
            assert!(items.iter().all(|i| i.indicator.is_err()), "{input:?}");
        }
    }
}
