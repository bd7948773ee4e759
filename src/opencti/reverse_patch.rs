//! What an update changed: the indicator's [`FormerState`] rebuilt from the `reverse_patch` of the
//! event's context (opencti-protocol.md §2.5), for [`events`](super::events) to attach to the
//! decoded indicator. Pure: the one thing it cannot turn into data (a former pattern that does not
//! parse) is a debug log line.
//!
//! The reverse patch is a JSON Patch (fast-json-patch style: `replace` / `add` / `remove`; a
//! `remove` without value says the field did not exist) that turns the object as sent back into
//! the object before the update. Top-level fields (`/name`, `/pattern`, `/pattern_type`, `/id`)
//! are read directly, the last op for a path winning. The OpenCTI extension's `observable_values`
//! list is replayed op by op over the list as sent ([`apply_patch_op`]), since its ops address
//! list items (`/0/value`).

use super::events::OCTI_EXT;
use crate::translate::{self, FormerState, Indicator, IocKey};
use serde_json::Value;

/// One JSON Patch operation.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchOp {
    pub op: String,
    pub path: String,
    /// Absent for `remove` ops.
    pub value: Option<Value>,
}

/// The operations of a patch (`context.reverse_patch`); ops without `op` or `path` are left out.
pub fn patch_ops(v: Option<&Value>) -> Vec<PatchOp> {
    v.and_then(Value::as_array)
        .map(|ops| {
            ops.iter()
                .filter_map(|op| {
                    Some(PatchOp {
                        op: op.get("op")?.as_str()?.to_owned(),
                        path: op.get("path")?.as_str()?.to_owned(),
                        value: op.get("value").cloned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What `current` (decoded from the STIX object `stix` of event `event_id`) was before the update
/// whose reverse patch is `reverse` (empty for a create or delete). `stix_ids`, the older
/// standard ids the platform keeps, are holder aliases whatever the event.
pub fn former_state(
    event_id: &str,
    stix: &Value,
    reverse: &[PatchOp],
    current: &Indicator,
    stix_ids: Vec<String>,
) -> FormerState {
    let pattern_type = former_value(reverse, "/pattern_type");
    let pattern = former_value(reverse, "/pattern");
    let former_type = pattern_type.as_deref().unwrap_or(&current.pattern_type);
    let is_stix = matches!(
        former_type.trim().to_ascii_lowercase().as_str(),
        "stix" | ""
    );
    let pattern_iocs = match &pattern {
        Some(p) if is_stix => match translate::stix_iocs(p) {
            Ok((keys, _)) => Some(keys),
            Err(e) => {
                log::debug!(
                    "event={event_id} indicator={}: former pattern unreadable ({e}); its IOCs cannot be released",
                    current.id
                );
                None
            }
        },
        // Former Sigma/Yara pattern: the rule identity (id / name) follows the indicator.
        _ => None,
    };
    // An edited observable value: release the former one (upsert keeps what is still current).
    let iocs = match former_observable_iocs(stix, reverse) {
        Some(mut obs) => {
            obs.extend(pattern_iocs.into_iter().flatten());
            obs.sort();
            obs.dedup();
            Some(obs)
        }
        None => pattern_iocs,
    };
    FormerState {
        name: former_value(reverse, "/name"),
        pattern_type,
        pattern,
        iocs,
        // The standard id derives from the pattern, so it changes with it; the older ones the
        // platform keeps (`stix_ids`) may name a Python-era holder.
        ids: former_value(reverse, "/id")
            .into_iter()
            .chain(stix_ids)
            .collect(),
        standard_id_changed: reverse.iter().any(|op| op.path == "/id"),
    }
}

/// The value `path` had before the update, when the update changed it and it existed (a
/// non-string value is rendered as JSON text). Last op for the path wins.
fn former_value(reverse: &[PatchOp], path: &str) -> Option<String> {
    let op = reverse.iter().rev().find(|op| op.path == path)?;
    match (&op.op[..], &op.value) {
        ("remove", _) | (_, None) => None,
        (_, Some(Value::String(s))) => Some(s.clone()),
        (_, Some(v)) => Some(v.to_string()),
    }
}

/// IOCs of the extension's `observable_values` before the update, rebuilt from the list as sent
/// and the reverse-patch ops under that path. `None`: the update did not touch them.
fn former_observable_iocs(stix: &Value, reverse: &[PatchOp]) -> Option<Vec<IocKey>> {
    let prefix = format!("/extensions/{OCTI_EXT}/observable_values");
    let ops: Vec<_> = reverse
        .iter()
        .filter_map(|op| {
            let rest = op.path.strip_prefix(&prefix)?;
            (rest.is_empty() || rest.starts_with('/')).then_some((op, rest))
        })
        .collect();
    if ops.is_empty() {
        return None;
    }
    let mut doc = stix
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::IocType;
    use serde_json::json;

    fn ip(v: &str) -> IocKey {
        IocKey {
            ioc_type: IocType::IpBoth,
            value: v.into(),
        }
    }

    fn stix_indicator(pattern_type: &str) -> Indicator {
        Indicator {
            id: "int-1".into(),
            pattern_type: pattern_type.into(),
            ..Indicator::default()
        }
    }

    fn ops(v: Value) -> Vec<PatchOp> {
        patch_ops(Some(&v))
    }

    #[test]
    fn top_level_fields_give_former_values_last_op_winning() {
        let reverse = ops(json!([
            {"op": "replace", "path": "/pattern", "value": "[ipv4-addr:value = '8.8.8.8']"},
            {"op": "replace", "path": "/pattern", "value": "[ipv4-addr:value = '9.9.9.9']"},
            {"op": "remove", "path": "/name"},
            {"op": "replace", "path": "/id", "value": "indicator--before"},
            {"op": "replace", "path": "/revoked", "value": false},
            {"path": "/no-op"},
        ]));
        assert_eq!(reverse.len(), 5, "an op without `op` is left out");
        let f = former_state(
            "1-0",
            &json!({}),
            &reverse,
            &stix_indicator("stix"),
            vec!["indicator--older".into()],
        );
        assert_eq!(
            f,
            FormerState {
                name: None,
                pattern_type: None,
                pattern: Some("[ipv4-addr:value = '9.9.9.9']".into()),
                iocs: Some(vec![ip("9.9.9.9")]),
                ids: vec!["indicator--before".into(), "indicator--older".into()],
                standard_id_changed: true,
            }
        );
        assert_eq!(
            former_value(&reverse, "/revoked").as_deref(),
            Some("false"),
            "non-string values are JSON text"
        );
    }

    #[test]
    fn former_pattern_iocs_follow_the_former_type() {
        let stix_pattern = json!({"op": "replace", "path": "/pattern",
            "value": "[ipv4-addr:value = '9.9.9.9']"});
        // Type unchanged and not STIX: the former pattern names a rule, not IOCs.
        let f = former_state(
            "1-0",
            &json!({}),
            &ops(json!([stix_pattern])),
            &stix_indicator("sigma"),
            Vec::new(),
        );
        assert_eq!(f.iocs, None);
        assert!(f.pattern.is_some());
        // sigma now, STIX before: the former IOCs are released.
        let f = former_state(
            "1-0",
            &json!({}),
            &ops(json!([stix_pattern,
                {"op": "replace", "path": "/pattern_type", "value": "stix"}])),
            &stix_indicator("sigma"),
            Vec::new(),
        );
        assert_eq!(f.pattern_type.as_deref(), Some("stix"));
        assert_eq!(f.iocs, Some(vec![ip("9.9.9.9")]));
        // An unreadable former STIX pattern: unknown, not empty.
        let f = former_state(
            "1-0",
            &json!({}),
            &ops(json!([{"op": "replace", "path": "/pattern", "value": "[ipv4-addr:value ="}])),
            &stix_indicator("stix"),
            Vec::new(),
        );
        assert_eq!(f.iocs, None);
    }

    #[test]
    fn edited_observable_values_give_the_former_ones_with_the_pattern_ones() {
        let path = format!("/extensions/{OCTI_EXT}/observable_values");
        let stix = json!({"extensions": {OCTI_EXT: {"observable_values": [
            {"type": "IPv4-Addr", "value": "8.8.8.8"}]}}});
        let reverse = ops(json!([
            {"op": "replace", "path": format!("{path}/0/value"), "value": "9.9.9.9"},
            {"op": "add", "path": format!("{path}/1"), "value": {"type": "IPv4-Addr", "value": "1.1.1.1"}},
            {"op": "replace", "path": "/pattern", "value": "[ipv4-addr:value = '2.2.2.2']"},
        ]));
        let f = former_state("1-0", &stix, &reverse, &stix_indicator("stix"), Vec::new());
        assert_eq!(
            f.iocs,
            Some(vec![ip("1.1.1.1"), ip("2.2.2.2"), ip("9.9.9.9")])
        );
        // A path that only starts like the list is not the list.
        let other = ops(json!([{"op": "remove", "path": format!("{path}_count")}]));
        let f = former_state("1-0", &stix, &other, &stix_indicator("stix"), Vec::new());
        assert_eq!(f.iocs, None);
        // The whole list was absent before: no former observable IOCs, but known.
        let gone = ops(json!([{"op": "remove", "path": path}]));
        let f = former_state("1-0", &stix, &gone, &stix_indicator("stix"), Vec::new());
        assert_eq!(f.iocs, Some(Vec::new()));
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
}
