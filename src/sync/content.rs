//! Light, never-failing reads of rule content that the sync layer and the in-memory fake need
//! for identity: a Sigma rule's `id` and `title`, a YARA file's rule identifiers and meta ids.
//!
//! This is not validation (that is `rules::{sigma,yara}`): it only looks at content that
//! HarfangLab already holds, or at a pattern `translate` could not handle, to find the object.
//! YARA content that `rules::yara` parses is read through it (exact: comments, strings and
//! multi-line declarations are handled); content it rejects (remote files may use features or
//! mistakes our validator refuses) falls back to a line scan, so a lookup never fails. Sigma ids
//! are read leniently here, as written: `rules::sigma` rejects a non-UUID id, but a remote rule
//! carrying one must still be found by it.
//!
//! It also builds the object HarfangLab echoes back for a write (`ioc_echo`, `rule_echo`), which
//! the in-memory fake and dry-run both hand out without a server.

use crate::harfanglab::model::{IocRule, IocRuleBody, RemoteRule, RuleBody, RuleKind};
use crate::rules::yara::parse_yara;
use serde_yaml::Value;

/// The Sigma rule's `id` (its identity in HarfangLab), if the content is a YAML mapping with one.
pub fn sigma_id(content: &str) -> Option<String> {
    sigma_field(content, "id")
}

/// The Sigma rule's `title` (HarfangLab shows it as `rule_name`).
pub fn sigma_title(content: &str) -> Option<String> {
    sigma_field(content, "title")
}

fn sigma_field(content: &str, field: &str) -> Option<String> {
    let doc: Value = serde_yaml::from_str(content).ok()?;
    let value = doc.as_mapping()?.get(field)?;
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// The object id HarfangLab gives a Sigma rule: its `id` when that is a UUID (hyphenated, lower
/// case), else none (the server picks one). The in-memory fake and the simulator both use it, so
/// they agree on which creates clash (harfanglab-api.md §6.3, INFERRED).
pub fn sigma_object_id(content: &str) -> Option<String> {
    let id = sigma_id(content)?;
    uuid::Uuid::parse_str(&id)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// Do two YARA files of one source list clash on HarfangLab: a shared `meta: id` (the inferred
/// identity, harfanglab-api.md §6.3), or, where rule identifiers are unique too
/// (`unique_rule_names`, a guess both fakes make opt-in), a shared rule identifier? The
/// in-memory fake and the simulator refuse a file that clashes with another (unless
/// `overwrite`), through this one rule.
pub fn yara_files_clash(a: &str, b: &str, unique_rule_names: bool) -> bool {
    let ids = yara_meta_ids(a);
    if !ids.is_empty() && yara_meta_ids(b).iter().any(|i| ids.contains(i)) {
        return true;
    }
    unique_rule_names && {
        let names = yara_rule_names(a);
        yara_rule_names(b).iter().any(|n| names.contains(n))
    }
}

/// Identifiers of the `rule` declarations of a YARA source, in order.
pub fn yara_rule_names(content: &str) -> Vec<String> {
    match parse_yara(content) {
        Ok(meta) => meta.rule_names,
        Err(_) => scan_rule_names(content),
    }
}

/// Values of `id` meta entries of a YARA source, in order.
pub fn yara_meta_ids(content: &str) -> Vec<String> {
    match parse_yara(content) {
        Ok(meta) => meta.meta_ids,
        Err(_) => scan_meta_ids(content),
    }
}

/// Fallback for content the parser rejects: a line-oriented scan
/// (`[private|global] rule <ident> [: tags] {`), enough to find the rules a file declares.
fn scan_rule_names(content: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in content.lines() {
        let mut words = line
            .split(|c: char| c.is_whitespace() || c == '{' || c == ':')
            .filter(|w| !w.is_empty())
            .skip_while(|w| *w == "private" || *w == "global");
        if words.next() != Some("rule") {
            continue;
        }
        if let Some(name) = words.next()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
        {
            names.push(name.to_owned());
        }
    }
    names
}

/// Fallback for content the parser rejects: `id = "..."` lines.
fn scan_meta_ids(content: &str) -> Vec<String> {
    content
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("id")?.trim_start();
            let rest = rest.strip_prefix('=')?.trim();
            let quoted = rest.strip_prefix('"')?;
            let end = quoted.find('"')?;
            Some(quoted[..end].to_owned())
        })
        .collect()
}

/// The IOC rule HarfangLab hands back for a write of `body` under `id`: the in-memory fake stores
/// it, dry-run returns it in place of the write it skips.
pub(crate) fn ioc_echo(id: String, body: &IocRuleBody) -> IocRule {
    IocRule {
        id,
        ioc_type: body.ioc_type.as_str().to_owned(),
        value: body.value.clone(),
        source_id: Some(body.source_id.clone()),
        description: Some(body.description.clone()),
        comment: Some(body.comment.clone()),
        enabled: body.enabled,
        hl_status: Some(body.hl_status.clone()),
    }
}

/// The Sigma/YARA object HarfangLab hands back for a write of `body` under `id`, with the
/// identity fields (`rule_name`, `rule_names`) it derives from the content.
pub(crate) fn rule_echo(kind: RuleKind, id: String, body: &RuleBody) -> RemoteRule {
    RemoteRule {
        id,
        name: body.name.clone(),
        content: body.content.clone(),
        source_id: Some(body.source_id.clone()),
        enabled: body.enabled,
        hl_status: Some(body.hl_status.clone()),
        rule_name: match kind {
            RuleKind::Sigma => sigma_title(&body.content),
            RuleKind::Yara => None,
        },
        rule_names: match kind {
            RuleKind::Sigma => Vec::new(),
            RuleKind::Yara => yara_rule_names(&body.content),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_fields() {
        let rule = "title: Suspicious thing\nid: 5f1c0a2e-0000-4000-8000-000000000001\ndetection:\n  sel:\n    a: b\n  condition: sel\n";
        assert_eq!(
            sigma_id(rule).as_deref(),
            Some("5f1c0a2e-0000-4000-8000-000000000001")
        );
        assert_eq!(sigma_title(rule).as_deref(), Some("Suspicious thing"));
        assert_eq!(sigma_id("title: x\n"), None);
        assert_eq!(sigma_id("id: ''\n"), None);
        assert_eq!(sigma_id("- not a mapping"), None);
        assert_eq!(sigma_id(": : :"), None);
    }

    #[test]
    fn sigma_object_ids_are_canonical_uuids_only() {
        let rule = |id: &str| format!("title: t\nid: {id}\n");
        assert_eq!(
            sigma_object_id(&rule("6B1E9EF4-1B59-4D3A-9B8C-2F5C0E2A7D11")).as_deref(),
            Some("6b1e9ef4-1b59-4d3a-9b8c-2f5c0e2a7d11")
        );
        assert_eq!(sigma_object_id(&rule("not-a-uuid")), None);
        assert_eq!(sigma_object_id("title: t\n"), None);
    }

    #[test]
    fn yara_clash_is_a_shared_meta_id_or_opt_in_rule_name() {
        let file = |rule: &str, id: Option<&str>| match id {
            Some(id) => format!("rule {rule} {{ meta: id = \"{id}\" condition: true }}"),
            None => format!("rule {rule} {{ condition: true }}"),
        };
        let (a, b) = (file("A", Some("m-1")), file("B", Some("m-1")));
        assert!(yara_files_clash(&a, &b, false));
        assert!(!yara_files_clash(&file("A", None), &file("A", None), false));
        assert!(yara_files_clash(&file("A", None), &file("A", None), true));
        assert!(!yara_files_clash(
            &file("A", Some("m-1")),
            &file("B", Some("m-2")),
            true
        ));
    }

    #[test]
    fn yara_names_and_meta_ids() {
        let src = "import \"pe\"\nprivate rule Helper { condition: true }\nrule Evil_1 : tag1 tag2\n{\n  meta:\n    id = \"abc-1\"\n    author = \"x\"\n  condition: Helper\n}\nglobal rule G{condition:true}\n// rule commented {\nrule 9bad { condition: true }\n";
        assert_eq!(yara_rule_names(src), vec!["Helper", "Evil_1", "G"]);
        assert_eq!(yara_meta_ids(src), vec!["abc-1"]);
        assert!(yara_rule_names("").is_empty());
    }

    #[test]
    fn valid_yara_is_read_by_the_parser_not_by_lines() {
        // A rule split over lines, a commented-out rule and a string that looks like one: only
        // the parser gets these right; the line scan is the fallback for invalid content.
        let src = "/* rule Old_Version { condition: true } */\nrule\n  Split_Name\n{\n  meta:\n    id = \"m-1\"\n    note = \"id = \\\"not-an-id\\\"\"\n  strings:\n    $a = \"rule Fake {\"\n  condition:\n    $a\n}\n";
        assert_eq!(yara_rule_names(src), vec!["Split_Name"]);
        assert_eq!(yara_meta_ids(src), vec!["m-1"]);
        assert_eq!(scan_rule_names(src), Vec::<String>::new());
        // Invalid YARA (an unclosed parenthesis) is still scanned.
        let broken = "rule Broken {\n  meta:\n    id = \"b-1\"\n  condition: (true\n}\n";
        assert!(parse_yara(broken).is_err());
        assert_eq!(yara_rule_names(broken), vec!["Broken"]);
        assert_eq!(yara_meta_ids(broken), vec!["b-1"]);
    }
}
