//! The IOC rule `comment` codec: which OpenCTI indicators hold (want) an IOC rule.
//!
//! HarfangLab has no field for ownership, so the connector keeps it in the rule's free-text
//! `comment` as JSON. The Python connector wrote `{"indicator_id", "indicator_score",
//! "indicator_platforms"}` for the last writer only; we keep those three keys (so tooling that
//! reads them keeps working) and add `holders`, the full list of indicators that want the rule.
//! Encoding is deterministic (holders sorted by id, platforms sorted) so an unchanged rule
//! re-encodes to the same string and is not patched. Decoding never fails: anything that is not
//! ours or the Python connector's is reported as [`Origin::Foreign`] and kept verbatim.

use serde::Serialize;
use serde_json::{Map, Value};

/// One indicator that wants an IOC rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holder {
    /// Stable OpenCTI internal id (or the standard id for a holder adopted from the Python
    /// connector, until that indicator upserts again).
    pub id: String,
    /// STIX standard id (`indicator--…`); it changes when the pattern changes.
    pub standard_id: Option<String>,
    pub score: Option<i64>,
    /// Sorted, deduplicated.
    pub platforms: Vec<String>,
}

impl Holder {
    /// A holder with its platforms normalised (sorted, deduplicated) for a stable encoding.
    pub fn new(
        id: impl Into<String>,
        standard_id: Option<String>,
        score: Option<i64>,
        platforms: &[String],
    ) -> Holder {
        let mut platforms = platforms.to_vec();
        platforms.sort();
        platforms.dedup();
        Holder {
            id: id.into(),
            standard_id,
            score,
            platforms,
        }
    }

    /// Is this holder one of the given identities (internal id, standard id or a former id)?
    fn is_any_of(&self, aliases: &[String]) -> bool {
        aliases
            .iter()
            .any(|a| *a == self.id || self.standard_id.as_deref() == Some(a.as_str()))
    }
}

/// Where a decoded comment came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// No comment (null, empty or blank).
    Empty,
    /// Written by this connector (has a `holders` list).
    Ours,
    /// Written by the Python connector: one `indicator_id`, no holders list.
    Python,
    /// Anything else: a person's note, another tool's JSON. Kept as `user_comment`.
    Foreign,
}

/// The decoded ownership of one IOC rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleComment {
    /// Sorted by `id`, ids unique.
    pub holders: Vec<Holder>,
    /// Foreign text found in the comment when the rule was adopted. A rule carrying it was not
    /// created by a connector, so it is never deleted, only disabled.
    pub user_comment: Option<String>,
}

/// The JSON written into `comment`; field order is the serialisation order.
#[derive(Serialize)]
struct Wire<'a> {
    indicator_id: Option<&'a str>,
    indicator_score: Option<i64>,
    indicator_platforms: Vec<&'a str>,
    holders: &'a [Holder],
    #[serde(skip_serializing_if = "Option::is_none")]
    user_comment: Option<&'a str>,
}

impl RuleComment {
    /// Decode a rule's comment. Never fails: unknown content is `Origin::Foreign`.
    pub fn decode(comment: Option<&str>) -> (RuleComment, Origin) {
        let text = comment.unwrap_or("");
        if text.trim().is_empty() {
            return (RuleComment::default(), Origin::Empty);
        }
        let foreign = || {
            let decoded = RuleComment {
                holders: Vec::new(),
                user_comment: Some(text.to_owned()),
            };
            (decoded, Origin::Foreign)
        };
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
            return foreign();
        };
        if let Some(list) = map.get("holders") {
            let Some(list) = list.as_array() else {
                return foreign();
            };
            let mut decoded = RuleComment {
                holders: Vec::new(),
                user_comment: map
                    .get("user_comment")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            };
            for entry in list {
                let Some(holder) = entry.as_object().and_then(holder_from_json) else {
                    return foreign();
                };
                decoded.put(holder);
            }
            return (decoded, Origin::Ours);
        }
        if map.contains_key("indicator_id") {
            let mut decoded = RuleComment::default();
            // A Python-connector rule: its one indicator (a STIX standard id) becomes a holder
            // identified by that standard id; it merges with the indicator's internal id on the
            // indicator's next upsert.
            if let Some(id) = map
                .get("indicator_id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                let platforms = string_list(map.get("indicator_platforms"));
                decoded.put(Holder::new(
                    id,
                    Some(id.to_owned()),
                    map.get("indicator_score").and_then(score_from_json),
                    &platforms,
                ));
            }
            return (decoded, Origin::Python);
        }
        foreign()
    }

    /// The deterministic JSON string for `comment`.
    pub fn encode(&self) -> String {
        let compat = self
            .holders
            .iter()
            .find(|h| h.standard_id.is_some())
            .or(self.holders.first());
        let mut platforms: Vec<&str> = self
            .holders
            .iter()
            .flat_map(|h| h.platforms.iter().map(String::as_str))
            .collect();
        platforms.sort_unstable();
        platforms.dedup();
        let wire = Wire {
            indicator_id: compat.map(|h| h.standard_id.as_deref().unwrap_or(h.id.as_str())),
            indicator_score: self.holders.iter().filter_map(|h| h.score).max(),
            indicator_platforms: platforms,
            holders: &self.holders,
            user_comment: self.user_comment.as_deref(),
        };
        // Serialising plain strings, integers and lists into a String cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// Add or refresh `holder`, first removing every holder that is one of `aliases` (the same
    /// indicator under its standard id or a former id), so one indicator is one holder.
    pub fn upsert(&mut self, holder: Holder, aliases: &[String]) {
        self.holders.retain(|h| !h.is_any_of(aliases));
        self.put(holder);
    }

    /// Remove every holder that is one of `aliases`; `true` when one was removed.
    pub fn release(&mut self, aliases: &[String]) -> bool {
        let before = self.holders.len();
        self.holders.retain(|h| !h.is_any_of(aliases));
        self.holders.len() != before
    }

    fn put(&mut self, holder: Holder) {
        match self.holders.binary_search_by(|h| h.id.cmp(&holder.id)) {
            Ok(i) => self.holders[i] = holder,
            Err(i) => self.holders.insert(i, holder),
        }
    }
}

fn holder_from_json(map: &Map<String, Value>) -> Option<Holder> {
    let id = map.get("id")?.as_str().filter(|s| !s.is_empty())?;
    let standard_id = map
        .get("standard_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let platforms = string_list(map.get("platforms"));
    Some(Holder::new(
        id,
        standard_id,
        map.get("score").and_then(score_from_json),
        &platforms,
    ))
}

/// Scores are integers, but be lenient with what another writer may have stored.
fn score_from_json(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f.round() as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn string_list(v: Option<&Value>) -> Vec<String> {
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

    fn aliases(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn holder(id: &str, std: &str, score: i64, platforms: &[&str]) -> Holder {
        let platforms: Vec<String> = platforms.iter().map(|s| s.to_string()).collect();
        Holder::new(id, Some(std.to_owned()), Some(score), &platforms)
    }

    #[test]
    fn empty_and_blank_comments_are_empty() {
        for c in [None, Some(""), Some("  \n")] {
            let (decoded, origin) = RuleComment::decode(c);
            assert_eq!(origin, Origin::Empty);
            assert!(decoded.holders.is_empty());
            assert_eq!(decoded.user_comment, None);
        }
    }

    #[test]
    fn foreign_text_and_foreign_json_are_kept_verbatim() {
        for c in [
            "blocked after incident 42",
            "[1,2]",
            r#"{"owner": "soc"}"#,
            r#"{"holders": 3}"#,
            r#"{"holders": [{"no_id": 1}]}"#,
        ] {
            let (decoded, origin) = RuleComment::decode(Some(c));
            assert_eq!(origin, Origin::Foreign, "{c}");
            assert_eq!(decoded.user_comment.as_deref(), Some(c));
            assert!(decoded.holders.is_empty());
        }
    }

    #[test]
    fn python_comment_becomes_a_holder_by_standard_id() {
        let c = r#"{"indicator_id": "indicator--1", "indicator_score": 80, "indicator_platforms": ["windows", "linux"]}"#;
        let (decoded, origin) = RuleComment::decode(Some(c));
        assert_eq!(origin, Origin::Python);
        assert_eq!(
            decoded.holders,
            vec![holder(
                "indicator--1",
                "indicator--1",
                80,
                &["linux", "windows"]
            )]
        );
        // Null score and platforms, as the Python connector writes for bare indicators.
        let c = r#"{"indicator_id": "indicator--2", "indicator_score": null, "indicator_platforms": null}"#;
        let (decoded, origin) = RuleComment::decode(Some(c));
        assert_eq!(origin, Origin::Python);
        assert_eq!(decoded.holders[0].score, None);
        assert!(decoded.holders[0].platforms.is_empty());
    }

    #[test]
    fn encoding_keeps_compat_keys_and_is_deterministic() {
        let mut a = RuleComment::default();
        a.upsert(holder("b-id", "indicator--b", 40, &["linux"]), &[]);
        a.upsert(
            holder("a-id", "indicator--a", 90, &["windows", "linux"]),
            &[],
        );
        let mut b = RuleComment::default();
        b.upsert(
            holder("a-id", "indicator--a", 90, &["linux", "windows"]),
            &[],
        );
        b.upsert(holder("b-id", "indicator--b", 40, &["linux"]), &[]);
        assert_eq!(a.encode(), b.encode());
        let v: Value = serde_json::from_str(&a.encode()).unwrap();
        assert_eq!(v["indicator_id"], "indicator--a");
        assert_eq!(v["indicator_score"], 90);
        assert_eq!(
            v["indicator_platforms"],
            serde_json::json!(["linux", "windows"])
        );
        assert_eq!(v["holders"][0]["id"], "a-id");
        assert_eq!(v["holders"][1]["standard_id"], "indicator--b");
        assert!(v.get("user_comment").is_none());
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let mut c = RuleComment {
            holders: Vec::new(),
            user_comment: Some("note".into()),
        };
        c.upsert(holder("x", "indicator--x", 10, &["macos"]), &[]);
        c.upsert(Holder::new("y", None, None, &[]), &[]);
        let (decoded, origin) = RuleComment::decode(Some(&c.encode()));
        assert_eq!(origin, Origin::Ours);
        assert_eq!(decoded, c);
    }

    #[test]
    fn upsert_merges_the_same_indicator_under_another_id() {
        let c =
            r#"{"indicator_id": "indicator--1", "indicator_score": 50, "indicator_platforms": []}"#;
        let (mut decoded, _) = RuleComment::decode(Some(c));
        decoded.upsert(
            holder("internal-1", "indicator--1", 60, &[]),
            &aliases(&["internal-1", "indicator--1"]),
        );
        assert_eq!(decoded.holders.len(), 1);
        assert_eq!(decoded.holders[0].id, "internal-1");
        // A former standard id (pattern changed) also identifies the holder.
        decoded.upsert(
            holder("internal-1", "indicator--2", 60, &[]),
            &aliases(&["internal-1", "indicator--2", "indicator--1"]),
        );
        assert_eq!(decoded.holders.len(), 1);
        assert_eq!(
            decoded.holders[0].standard_id.as_deref(),
            Some("indicator--2")
        );
    }

    #[test]
    fn release_matches_internal_standard_or_former_id() {
        let mut c = RuleComment::default();
        c.upsert(holder("i1", "indicator--1", 1, &[]), &[]);
        c.upsert(holder("i2", "indicator--2", 2, &[]), &[]);
        c.upsert(holder("i3", "indicator--3", 3, &[]), &[]);
        assert!(c.release(&aliases(&["i1"])));
        assert!(c.release(&aliases(&["nope", "indicator--2"])));
        assert!(!c.release(&aliases(&["i1"])));
        assert_eq!(c.holders.len(), 1);
        assert!(c.release(&aliases(&["indicator--3"])));
        assert!(c.holders.is_empty());
        assert_eq!(
            c.encode(),
            r#"{"indicator_id":null,"indicator_score":null,"indicator_platforms":[],"holders":[]}"#
        );
    }
}
