//! The holders line of a Sigma rule or Yara file: which OpenCTI indicators want the rule, kept in
//! the rule's own content, as a comment the detection engines skip.
//!
//! HarfangLab's Sigma and Yara objects have no free-text field besides `content`
//! (harfanglab-api.md §6: `name`, `content`, `enabled`, `hl_status`, `source_id`), and the name is
//! what analysts read. So the connector writes the holders as the content's **first line**:
//!
//! ```text
//! # harfanglab-intel holders: <id> <id> …      (Sigma: a YAML comment)
//! // harfanglab-intel holders: <id> <id> …     (YARA: a line comment)
//! ```
//!
//! followed by the rule exactly as the indicator's pattern has it. Why this is safe: YAML and YARA
//! parsers drop comments before anything else, so the Sigma `id`, `title`, `detection` and every
//! other field, and the YARA rules, strings and conditions, are the ones the indicator carries;
//! HarfangLab parses the same rule (its `rule_name` / `rule_names` are unchanged), and so do the
//! connector's own readers (`sync::content`). A first line is always a comment position: before
//! a YAML document (directives included) and before any YARA declaration.
//!
//! The ids are the holders' OpenCTI internal ids (the standard id when there is none), sorted,
//! separated by one space: about 37 bytes per holder (a 36-character UUID and a space), plus
//! ~30 bytes for the marker. Only the first line is read, so a marker-like line anywhere else in a
//! rule is the rule's own text. Content without the line was written before holders existed (by an
//! earlier version or the Python connector): it has no recorded holders and is adopted.

use crate::harfanglab::model::RuleKind;

/// The marker opening the holders line of a Sigma rule.
pub const SIGMA_MARKER: &str = "# harfanglab-intel holders:";
/// The marker opening the holders line of a Yara file.
pub const YARA_MARKER: &str = "// harfanglab-intel holders:";

/// The indicators that want one rule. Sorted, unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleHolders {
    ids: Vec<String>,
}

fn marker(kind: RuleKind) -> &'static str {
    match kind {
        RuleKind::Sigma => SIGMA_MARKER,
        RuleKind::Yara => YARA_MARKER,
    }
}

/// Can `id` be written on the holders line? Anything but whitespace and control characters (a
/// line break would end the comment and put the rest into the rule).
pub fn is_recordable(id: &str) -> bool {
    !id.is_empty() && !id.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The holders recorded in `content` (`None`: no holders line) and the rule itself.
pub fn split(kind: RuleKind, content: &str) -> (Option<RuleHolders>, &str) {
    let (first, rest) = match content.find('\n') {
        Some(i) => (&content[..i], &content[i + 1..]),
        None => (content, ""),
    };
    let Some(list) = first.strip_prefix(marker(kind)) else {
        return (None, content);
    };
    let mut holders = RuleHolders::default();
    for id in list.split_whitespace() {
        holders.insert(id);
    }
    (Some(holders), rest)
}

/// `body` with `holders` as its first line. `body` must not carry a holders line itself (pass
/// what [`split`] returns).
pub fn join(kind: RuleKind, holders: &RuleHolders, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 32 + 37 * holders.ids.len());
    out.push_str(marker(kind));
    for id in &holders.ids {
        out.push(' ');
        out.push_str(id);
    }
    out.push('\n');
    out.push_str(body);
    out
}

impl RuleHolders {
    /// The holder ids, sorted.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Record `id`, first removing every holder that is one of `aliases` (the same indicator
    /// under another id), so one indicator is one holder. `id` must be [`is_recordable`].
    pub fn add(&mut self, id: &str, aliases: &[String]) {
        self.release(aliases);
        self.insert(id);
    }

    /// Remove every holder that is one of `aliases`; `true` when one was removed.
    pub fn release(&mut self, aliases: &[String]) -> bool {
        let before = self.ids.len();
        self.ids.retain(|h| !aliases.contains(h));
        self.ids.len() != before
    }

    /// Is one of `aliases` a holder?
    pub fn holds_any(&self, aliases: &[String]) -> bool {
        self.ids.iter().any(|h| aliases.contains(h))
    }

    /// The holders that are none of `aliases`.
    pub fn others<'a>(&'a self, aliases: &'a [String]) -> impl Iterator<Item = &'a str> + 'a {
        self.ids
            .iter()
            .filter(|h| !aliases.contains(h))
            .map(String::as_str)
    }

    fn insert(&mut self, id: &str) {
        if let Err(i) = self.ids.binary_search_by(|h| h.as_str().cmp(id)) {
            self.ids.insert(i, id.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::content;

    const SIGMA: &str = "title: Suspicious cmd\nid: 6b1e9ef4-1b59-4d3a-9b8c-2f5c0e2a7d11\nlogsource:\n  product: windows\ndetection:\n  sel:\n    Image|endswith: '\\cmd.exe'\n  condition: sel\n";
    const YARA: &str = "import \"pe\"\nrule Evil_1 : tag\n{\n  meta:\n    id = \"m-1\"\n  strings:\n    $a = \"x\"\n  condition:\n    $a\n}\n";

    fn aliases(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn holders(ids: &[&str]) -> RuleHolders {
        let mut h = RuleHolders::default();
        for id in ids {
            h.add(id, &[]);
        }
        h
    }

    #[test]
    fn join_then_split_round_trips_and_sorts() {
        let h = holders(&["b-2", "a-1", "b-2"]);
        assert_eq!(h.ids(), ["a-1", "b-2"]);
        for (kind, body) in [(RuleKind::Sigma, SIGMA), (RuleKind::Yara, YARA)] {
            let content = join(kind, &h, body);
            assert!(content.ends_with(body));
            let (read, rest) = split(kind, &content);
            assert_eq!(read.as_ref(), Some(&h));
            assert_eq!(rest, body);
        }
        let empty = join(RuleKind::Sigma, &RuleHolders::default(), SIGMA);
        assert!(
            empty.starts_with("# harfanglab-intel holders:\n"),
            "{empty}"
        );
        assert_eq!(
            split(RuleKind::Sigma, &empty),
            (Some(RuleHolders::default()), SIGMA)
        );
    }

    #[test]
    fn content_without_the_line_has_no_holders() {
        assert_eq!(split(RuleKind::Sigma, SIGMA), (None, SIGMA));
        assert_eq!(split(RuleKind::Yara, YARA), (None, YARA));
        // The other family's marker, or the marker further down, is the rule's own text.
        let yara_line = format!("{YARA_MARKER} x\n{SIGMA}");
        assert_eq!(split(RuleKind::Sigma, &yara_line).0, None);
        let later = format!("title: t\n{SIGMA_MARKER} x\n");
        assert_eq!(split(RuleKind::Sigma, &later).0, None);
        // A holders line and nothing else (no trailing newline).
        let bare = split(RuleKind::Yara, "// harfanglab-intel holders: a");
        assert_eq!(bare, (Some(holders(&["a"])), ""));
    }

    #[test]
    fn parsers_see_the_same_rule_with_the_line() {
        let h = holders(&["00000001-0000-4000-8000-000000000001", "internal-2"]);
        let sigma = join(RuleKind::Sigma, &h, SIGMA);
        assert_eq!(content::sigma_id(&sigma), content::sigma_id(SIGMA));
        assert_eq!(content::sigma_title(&sigma), content::sigma_title(SIGMA));
        let with: serde_yaml::Value = serde_yaml::from_str(&sigma).unwrap();
        let without: serde_yaml::Value = serde_yaml::from_str(SIGMA).unwrap();
        assert_eq!(with, without, "the YAML document is unchanged");
        crate::rules::sigma::parse_sigma(&sigma).expect("still a valid Sigma rule");
        let yara = join(RuleKind::Yara, &h, YARA);
        let meta = crate::rules::yara::parse_yara(&yara).expect("still valid YARA");
        assert_eq!(meta, crate::rules::yara::parse_yara(YARA).unwrap());
    }

    #[test]
    fn add_and_release_follow_aliases() {
        let mut h = holders(&["indicator--a", "internal-b"]);
        // The same indicator under its internal id replaces its standard-id entry.
        h.add("internal-a", &aliases(&["internal-a", "indicator--a"]));
        assert_eq!(h.ids(), ["internal-a", "internal-b"]);
        assert!(h.holds_any(&aliases(&["x", "internal-b"])));
        assert_eq!(
            h.others(&aliases(&["internal-a"])).collect::<Vec<_>>(),
            ["internal-b"]
        );
        assert!(h.release(&aliases(&["internal-b", "indicator--b"])));
        assert!(!h.release(&aliases(&["internal-b"])));
        assert!(h.release(&aliases(&["internal-a"])));
        assert!(h.is_empty());
    }

    #[test]
    fn only_single_line_ids_are_recordable() {
        assert!(is_recordable("00000001-0000-4000-8000-000000000001"));
        assert!(is_recordable("indicator--0f4a"));
        for bad in ["", "a b", "a\nid: x", "a\rb", "a\u{0}"] {
            assert!(!is_recordable(bad), "{bad:?}");
        }
    }

    #[test]
    fn per_holder_cost_is_one_uuid_and_a_space() {
        let one = join(RuleKind::Sigma, &holders(&[&"a".repeat(36)]), "");
        let two = join(
            RuleKind::Sigma,
            &holders(&[&"a".repeat(36), &"b".repeat(36)]),
            "",
        );
        assert_eq!(two.len() - one.len(), 37);
        assert_eq!(one.len(), SIGMA_MARKER.len() + 37 + 1);
    }
}
