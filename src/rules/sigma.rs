//! Sigma rule validation: the content of a `pattern_type: sigma` indicator must be one Sigma rule
//! that HarfangLab can take, and we extract the metadata that identifies it there.
//!
//! The checks follow pySigma 2 (`SigmaRule.from_dict`, the reference the corpus oracle uses) so
//! that a rule we send is one HarfangLab's own parser should accept:
//!
//! - one YAML document holding a mapping (duplicate keys are an error, as in pySigma's loader);
//! - `title`: a string of at most 256 characters, and not blank (pySigma allows `""`; HarfangLab
//!   shows the title as the rule name, so an empty one is refused);
//! - `id`: optional, but when present a UUID (pySigma rejects anything else and HarfangLab uses
//!   it as the rule's identity). It is normalised to the lowercase hyphenated form;
//! - `level` (informational/low/medium/high/critical) and `status`
//!   (stable/test/experimental/deprecated/unsupported): optional, case-insensitive as in
//!   pySigma, normalised to lowercase;
//! - `date`/`modified`: optional, `yyyy-mm-dd` (or pySigma's `yyyy/m/d`, or a YAML timestamp);
//! - `tags`: optional list of strings;
//! - `logsource`: a mapping naming at least one of `category`, `product`, `service`;
//! - `detection`: a mapping with a `condition` (a string or a non-empty list of strings) and at
//!   least one search identifier; every condition must parse (see the `condition` submodule)
//!   and every plain identifier it names must be defined.
//!
//! Deliberate choices (documented here because HarfangLab's behaviour is not public):
//!
//! - **Multi-document YAML is rejected.** HarfangLab stores one rule per object, identified by the
//!   Sigma `id`; the `action: global` multi-document form expands into several rules that share
//!   one id, which HarfangLab cannot hold as separate objects. Empty documents (a lone leading or
//!   trailing `---`) do not count.
//! - **Correlation rules are rejected** (no `detection`): HarfangLab's agents evaluate single-event
//!   rules. The retired pipe aggregations (`| count() by x > 5`) are rejected like pySigma does.
//! - Detection values and field modifiers are not validated (the modifier list keeps growing and
//!   the server is the authority on which ones it supports).
//!
//! YAML syntax errors carry serde_yaml's line and column. serde_yaml's `Value` does not keep
//! positions, so semantic errors are located by a best-effort scan of block-style keys
//! (`locate_key`); flow-style content gets errors without a position.

mod condition;

use super::RuleError;
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

/// What we extract from a Sigma rule. `id` is the rule's identity in HarfangLab.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SigmaMeta {
    /// The rule's UUID, lowercase hyphenated; `None` when the rule has no `id`.
    pub id: Option<String>,
    pub title: String,
    /// Lowercase, one of [`LEVELS`].
    pub level: Option<String>,
    /// Lowercase, one of [`STATUSES`].
    pub status: Option<String>,
    pub tags: Vec<String>,
}

/// Sigma levels (pySigma `SigmaLevel`; also HarfangLab's `rule_level_override` values).
pub const LEVELS: [&str; 5] = ["informational", "low", "medium", "high", "critical"];

/// Sigma statuses (pySigma `SigmaStatus`).
pub const STATUSES: [&str; 5] = [
    "stable",
    "test",
    "experimental",
    "deprecated",
    "unsupported",
];

/// pySigma's limit on `title` length, in characters.
pub const TITLE_MAX_CHARS: usize = 256;

/// Parse and validate one Sigma rule.
pub fn parse_sigma(content: &str) -> Result<SigmaMeta, RuleError> {
    let rule = load_single_document(content)?;
    let Value::Mapping(rule) = rule else {
        return Err(RuleError {
            line: Some(1),
            column: Some(1),
            message: format!(
                "a Sigma rule must be a YAML mapping, found {}",
                describe(&rule)
            ),
        });
    };
    let at = Locator { src: content };

    if !rule.contains_key("detection") && rule.contains_key("correlation") {
        return Err(at.error(
            &["correlation"],
            "Sigma correlation rules are not supported: HarfangLab takes detection rules"
                .to_string(),
        ));
    }
    let title = check_title(&rule, &at)?;
    let id = check_id(&rule, &at)?;
    let level = check_enum(&rule, "level", &LEVELS, &at)?;
    let status = check_enum(&rule, "status", &STATUSES, &at)?;
    check_date(&rule, "date", &at)?;
    check_date(&rule, "modified", &at)?;
    let tags = check_tags(&rule, &at)?;
    check_logsource(&rule, &at)?;
    check_detection(&rule, &at)?;

    Ok(SigmaMeta {
        id,
        title,
        level,
        status,
        tags,
    })
}

/// Load the YAML stream and return its only non-empty document.
fn load_single_document(content: &str) -> Result<Value, RuleError> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(content) {
        let value = Value::deserialize(document).map_err(yaml_error)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    match documents.len() {
        0 => Err(RuleError {
            line: None,
            column: None,
            message: "empty content: a Sigma rule must be a YAML mapping".to_string(),
        }),
        1 => Ok(documents.remove(0)),
        n => {
            let line = second_document_line(content);
            Err(RuleError {
                line,
                column: line.map(|_| 1),
                message: format!(
                    "{n} YAML documents: HarfangLab takes one Sigma rule per object \
                     (multi-document `action: global` rules are not supported)"
                ),
            })
        }
    }
}

/// Turn a serde_yaml error into a positioned [`RuleError`] without repeating the position.
fn yaml_error(err: serde_yaml::Error) -> RuleError {
    let mut message = err.to_string();
    let (line, column) = match err.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(at) = message.find(&suffix) {
                message.replace_range(at..at + suffix.len(), "");
            }
            (Some(loc.line()), Some(loc.column()))
        }
        None => (None, None),
    };
    RuleError {
        line,
        column,
        message: format!("invalid YAML: {message}"),
    }
}

/// 1-based line of the `---` marker that starts the second document, if it can be found.
fn second_document_line(content: &str) -> Option<usize> {
    let mut seen_content = false;
    for (index, line) in content.lines().enumerate() {
        if is_document_marker(line) {
            if seen_content {
                return Some(index + 1);
            }
        } else if !is_blank_or_comment(line) && !line.starts_with('%') {
            seen_content = true;
        }
    }
    None
}

fn is_document_marker(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

fn is_blank_or_comment(line: &str) -> bool {
    let trimmed = line.trim_start();
    trimmed.is_empty() || trimmed.starts_with('#')
}

/// A short name for a YAML value's type, for messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn check_title(rule: &Mapping, at: &Locator<'_>) -> Result<String, RuleError> {
    let title = match rule.get("title") {
        None => return Err(at.error(&[], "missing `title`".to_string())),
        Some(Value::String(title)) => title,
        Some(other) => {
            return Err(at.error(
                &["title"],
                format!("`title` must be a string, found {}", describe(other)),
            ));
        }
    };
    if title.trim().is_empty() {
        return Err(at.error(&["title"], "`title` is empty".to_string()));
    }
    let chars = title.chars().count();
    if chars > TITLE_MAX_CHARS {
        return Err(at.error(
            &["title"],
            format!("`title` is {chars} characters long, the limit is {TITLE_MAX_CHARS}"),
        ));
    }
    Ok(title.clone())
}

fn check_id(rule: &Mapping, at: &Locator<'_>) -> Result<Option<String>, RuleError> {
    match rule.get("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => match uuid::Uuid::try_parse(id) {
            Ok(uuid) => Ok(Some(uuid.hyphenated().to_string())),
            Err(_) => Err(at.error(
                &["id"],
                format!(
                    "`id` {id:?} is not a UUID (HarfangLab identifies Sigma rules by a UUID `id`)"
                ),
            )),
        },
        Some(other) => Err(at.error(
            &["id"],
            format!("`id` must be a UUID string, found {}", describe(other)),
        )),
    }
}

/// An optional string field restricted to `allowed` (case-insensitive), returned lowercase.
fn check_enum(
    rule: &Mapping,
    key: &str,
    allowed: &[&str],
    at: &Locator<'_>,
) -> Result<Option<String>, RuleError> {
    match rule.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => {
            let lower = value.to_ascii_lowercase();
            if allowed.contains(&lower.as_str()) {
                Ok(Some(lower))
            } else {
                Err(at.error(
                    &[key],
                    format!("`{key}` {value:?} is not one of {}", allowed.join(", ")),
                ))
            }
        }
        Some(other) => Err(at.error(
            &[key],
            format!("`{key}` must be a string, found {}", describe(other)),
        )),
    }
}

/// `date`/`modified`: pySigma accepts `yyyy-mm-dd` and `yyyy/m/d` for years 1000..3999.
fn check_date(rule: &Mapping, key: &str, at: &Locator<'_>) -> Result<(), RuleError> {
    let text = match rule.get(key) {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(at.error(
                &[key],
                format!("`{key}` must be a date, found {}", describe(other)),
            ));
        }
    };
    if parse_date(&text).is_none() {
        return Err(at.error(
            &[key],
            format!("`{key}` {text:?} is not a date, use yyyy-mm-dd"),
        ));
    }
    Ok(())
}

/// `(year, month, day)` of a pySigma-accepted date string, checked against the calendar.
///
/// A YAML timestamp with a time (`2023-1-5T10:00:00`, `2023-01-05 10:00:00`) is a date object
/// for PyYAML, which pySigma accepts whatever its text; serde_yaml hands it over as a string, so
/// we accept a valid date followed by a time-looking part.
fn parse_date(text: &str) -> Option<(u32, u32, u32)> {
    if let Some(split) = text.find(['T', 't', ' ', '\t']) {
        let (date, time) = (
            &text[..split],
            text[split..].trim_start_matches(['T', 't', ' ', '\t']),
        );
        let looks_like_time =
            time.as_bytes().first().is_some_and(u8::is_ascii_digit) && time.contains(':');
        return if looks_like_time && date.contains('-') {
            parse_ymd(date, false)
        } else {
            None
        };
    }
    parse_ymd(text, text.contains('-'))
}

/// `yyyy-mm-dd` when `fixed_width`, else `yyyy/m/d` or (for timestamps) `yyyy-m-d`.
fn parse_ymd(text: &str, fixed_width: bool) -> Option<(u32, u32, u32)> {
    let sep = if text.contains('-') { '-' } else { '/' };
    let mut parts = text.split(sep);
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let digits = |s: &str, min: usize, max: usize| {
        (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    let ok = if fixed_width {
        digits(y, 4, 4) && digits(m, 2, 2) && digits(d, 2, 2)
    } else {
        digits(y, 4, 4) && digits(m, 1, 2) && digits(d, 1, 2)
    };
    if !ok {
        return None;
    }
    let (y, m, d): (u32, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1000..=3999).contains(&y) || !(1..=12).contains(&m) {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    (1..=days).contains(&d).then_some((y, m, d))
}

fn check_tags(rule: &Mapping, at: &Locator<'_>) -> Result<Vec<String>, RuleError> {
    match rule.get("tags") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(tag) => Ok(tag.clone()),
                other => Err(at.error(
                    &["tags"],
                    format!(
                        "`tags` must be a list of strings, found {}",
                        describe(other)
                    ),
                )),
            })
            .collect(),
        Some(other) => Err(at.error(
            &["tags"],
            format!(
                "`tags` must be a list of strings, found {}",
                describe(other)
            ),
        )),
    }
}

fn check_logsource(rule: &Mapping, at: &Locator<'_>) -> Result<(), RuleError> {
    let logsource = match rule.get("logsource") {
        None => return Err(at.error(&[], "missing `logsource`".to_string())),
        Some(Value::Mapping(logsource)) => logsource,
        Some(other) => {
            return Err(at.error(
                &["logsource"],
                format!("`logsource` must be a mapping, found {}", describe(other)),
            ));
        }
    };
    let mut named = false;
    for key in ["category", "product", "service", "definition"] {
        match logsource.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(_)) => named |= key != "definition",
            Some(other) => {
                return Err(at.error(
                    &["logsource", key],
                    format!(
                        "`logsource.{key}` must be a string, found {}",
                        describe(other)
                    ),
                ));
            }
        }
    }
    if !named {
        return Err(at.error(
            &["logsource"],
            "`logsource` names none of `category`, `product`, `service`".to_string(),
        ));
    }
    Ok(())
}

fn check_detection(rule: &Mapping, at: &Locator<'_>) -> Result<(), RuleError> {
    let detection = match rule.get("detection") {
        None => return Err(at.error(&[], "missing `detection`".to_string())),
        Some(Value::Mapping(detection)) => detection,
        Some(other) => {
            return Err(at.error(
                &["detection"],
                format!("`detection` must be a mapping, found {}", describe(other)),
            ));
        }
    };

    let mut identifiers = Vec::new();
    for (key, definition) in detection {
        let Value::String(name) = key else {
            return Err(at.error(
                &["detection"],
                format!("`detection` keys must be strings, found {}", describe(key)),
            ));
        };
        if name == "condition" {
            continue;
        }
        let valid = match definition {
            Value::Mapping(m) => !m.is_empty(),
            Value::Sequence(s) => !s.is_empty(),
            Value::String(_) | Value::Number(_) => true,
            _ => false,
        };
        if !valid {
            return Err(at.error(
                &["detection", name],
                format!(
                    "search identifier `{name}` must be a non-empty mapping, list or value, \
                     found {}",
                    match definition {
                        Value::Mapping(_) => "an empty mapping",
                        Value::Sequence(_) => "an empty list",
                        other => describe(other),
                    }
                ),
            ));
        }
        identifiers.push(name.as_str());
    }

    let conditions: Vec<&str> = match detection.get("condition") {
        None => {
            return Err(at.error(&["detection"], "missing `detection.condition`".to_string()));
        }
        Some(Value::String(condition)) => vec![condition.as_str()],
        Some(Value::Sequence(items)) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(condition) => Ok(condition.as_str()),
                other => Err(at.error(
                    &["detection", "condition"],
                    format!(
                        "`detection.condition` must be a string or a list of strings, found {} \
                         in the list",
                        describe(other)
                    ),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(at.error(
                &["detection", "condition"],
                format!(
                    "`detection.condition` must be a string or a non-empty list of strings, \
                     found {}",
                    match other {
                        Value::Sequence(_) => "an empty list",
                        other => describe(other),
                    }
                ),
            ));
        }
    };
    if identifiers.is_empty() {
        return Err(at.error(
            &["detection"],
            "`detection` defines no search identifier besides `condition`".to_string(),
        ));
    }

    for condition in conditions {
        let refs = condition::check_condition(condition).map_err(|e| {
            at.condition_error(condition, e.offset, format!("invalid `condition`: {e}"))
        })?;
        for (name, offset) in refs.identifiers {
            if !identifiers.contains(&name.as_str()) {
                return Err(at.condition_error(
                    condition,
                    offset,
                    format!("`condition` uses `{name}`, which `detection` does not define"),
                ));
            }
        }
    }
    Ok(())
}

/// Best-effort positions of keys in block-style YAML (serde_yaml's `Value` keeps none).
struct Locator<'a> {
    src: &'a str,
}

impl Locator<'_> {
    /// An error located at the key `path` when it can be found (nothing for `&[]`).
    fn error(&self, path: &[&str], message: String) -> RuleError {
        let position = if path.is_empty() {
            None
        } else {
            locate_key(self.src, path)
        };
        RuleError {
            line: position.map(|p| p.0),
            column: position.map(|p| p.1),
            message,
        }
    }

    /// An error inside a condition string: pointed at the character when the condition is
    /// written on the `condition:` line itself, else at the key.
    fn condition_error(&self, condition: &str, offset: usize, message: String) -> RuleError {
        let position = locate_key(self.src, &["detection", "condition"]).map(|(line, column)| {
            match condition_start(self.src, line, condition) {
                Some(start) => (line, start + offset),
                None => (line, column),
            }
        });
        RuleError {
            line: position.map(|p| p.0),
            column: position.map(|p| p.1),
            message,
        }
    }
}

/// 1-based `(line, column)` of the block-mapping key at `path`, e.g. `["detection", "condition"]`.
///
/// Understands block mappings (each key on its own line, deeper keys more indented), quoted keys
/// and comments; returns `None` for flow style or anything it does not recognise.
fn locate_key(src: &str, path: &[&str]) -> Option<(usize, usize)> {
    let mut depth = 0;
    // Indentation of the key matched at `depth - 1`, and of the first child line seen under it.
    let mut parent_indent: Option<usize> = None;
    let mut child_indent: Option<usize> = None;
    for (index, line) in src.lines().enumerate() {
        if is_blank_or_comment(line) || is_document_marker(line) {
            continue;
        }
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(parent) = parent_indent {
            if indent <= parent {
                return None; // left the parent's block without finding the key
            }
            match child_indent {
                None => child_indent = Some(indent),
                Some(child) if indent != child => continue, // deeper content
                Some(_) => {}
            }
        } else if indent != 0 {
            continue;
        }
        let rest = &line[indent..];
        if line_key(rest) == Some(path[depth]) {
            depth += 1;
            if depth == path.len() {
                return Some((index + 1, line[..indent].chars().count() + 1));
            }
            parent_indent = Some(indent);
            child_indent = None;
        }
    }
    None
}

/// The key of a `key: value` line (plain, `'single'` or `"double"` quoted), if it is one.
fn line_key(line: &str) -> Option<&str> {
    let (key, rest) = match line.chars().next()? {
        quote @ ('"' | '\'') => {
            let end = line[1..].find(quote)? + 1;
            (&line[1..end], &line[end + 1..])
        }
        _ => {
            let colon = line.find(':')?;
            (line[..colon].trim_end(), &line[colon..])
        }
    };
    let after = rest.trim_start_matches(' ').strip_prefix(':')?;
    (after.is_empty() || after.starts_with([' ', '\t'])).then_some(key)
}

/// 1-based column where `condition` starts on `line` when it is written there verbatim as a
/// plain or quoted scalar (`condition: sel and not filter`).
fn condition_start(src: &str, line: usize, condition: &str) -> Option<usize> {
    let text = src.lines().nth(line - 1)?;
    let colon = text.find(':')?;
    let value = text[colon + 1..].trim_start();
    let value_col = text.len() - value.len();
    let quoted = value.starts_with(['"', '\'']);
    let body = if quoted { &value[1..] } else { value };
    body.starts_with(condition)
        .then(|| text[..value_col].chars().count() + usize::from(quoted) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "\
title: Suspicious Thing
id: 5F2A8C4E-1B3D-4E6F-8A9B-0C1D2E3F4A5B
status: Test
level: HIGH
date: 2024-02-29
modified: 2024/3/1
tags:
    - attack.execution
    - attack.t1059.001
logsource:
    category: process_creation
    product: windows
detection:
    selection:
        Image|endswith: '\\evil.exe'
    filter_main:
        User: SYSTEM
    condition: selection and not 1 of filter_*
falsepositives:
    - Unknown
";

    fn error(content: &str) -> RuleError {
        match parse_sigma(content) {
            Ok(meta) => panic!("accepted: {meta:?}"),
            Err(e) => e,
        }
    }

    fn at(content: &str) -> (Option<usize>, Option<usize>, String) {
        let e = error(content);
        (e.line, e.column, e.message)
    }

    #[test]
    fn extracts_and_normalises_metadata() {
        let meta = parse_sigma(VALID).unwrap();
        assert_eq!(meta.title, "Suspicious Thing");
        assert_eq!(
            meta.id.as_deref(),
            Some("5f2a8c4e-1b3d-4e6f-8a9b-0c1d2e3f4a5b")
        );
        assert_eq!(meta.level.as_deref(), Some("high"));
        assert_eq!(meta.status.as_deref(), Some("test"));
        assert_eq!(meta.tags, ["attack.execution", "attack.t1059.001"]);
    }

    #[test]
    fn id_is_optional_and_braced_or_simple_uuids_are_canonicalised() {
        let no_id = VALID.replace("id: 5F2A8C4E-1B3D-4E6F-8A9B-0C1D2E3F4A5B\n", "");
        assert_eq!(parse_sigma(&no_id).unwrap().id, None);
        let simple = VALID.replace(
            "5F2A8C4E-1B3D-4E6F-8A9B-0C1D2E3F4A5B",
            "5f2a8c4e1b3d4e6f8a9b0c1d2e3f4a5b",
        );
        assert_eq!(
            parse_sigma(&simple).unwrap().id.as_deref(),
            Some("5f2a8c4e-1b3d-4e6f-8a9b-0c1d2e3f4a5b")
        );
    }

    #[test]
    fn yaml_syntax_errors_carry_serde_yaml_positions() {
        let (line, column, message) = at("title: x\ndetection:\n  a: [1, 2\n");
        assert_eq!(line, Some(4));
        assert!(column.is_some());
        assert!(message.starts_with("invalid YAML: "), "{message}");
        assert!(
            !message.contains(&format!("at line {}", line.unwrap())),
            "{message}"
        );

        // serde_yaml points duplicate keys at the mapping that holds them.
        let (line, _, message) = at("title: a\ntitle: b\n");
        assert_eq!(line, Some(1));
        assert!(message.contains("duplicate"), "{message}");
    }

    #[test]
    fn wrong_shapes_are_named_and_located() {
        assert_eq!(
            at("- a\n- b\n"),
            (
                Some(1),
                Some(1),
                "a Sigma rule must be a YAML mapping, found a list".to_string()
            )
        );
        assert_eq!(
            error("").message,
            "empty content: a Sigma rule must be a YAML mapping"
        );
        assert_eq!(error("# only a comment\n").line, None);

        let no_title = VALID.replace("title: Suspicious Thing\n", "");
        assert_eq!(at(&no_title), (None, None, "missing `title`".to_string()));

        let list_title = VALID.replace("title: Suspicious Thing", "title: [a]");
        assert_eq!(
            at(&list_title),
            (
                Some(1),
                Some(1),
                "`title` must be a string, found a list".to_string()
            )
        );

        let bad_detection = VALID.replace(
            "detection:\n    selection:",
            "detection: selection\nx:\n    selection:",
        );
        assert_eq!(
            at(&bad_detection),
            (
                Some(13),
                Some(1),
                "`detection` must be a mapping, found a string".to_string()
            )
        );

        let no_condition = VALID.replace("    condition: selection and not 1 of filter_*\n", "");
        assert_eq!(
            at(&no_condition),
            (
                Some(13),
                Some(1),
                "missing `detection.condition`".to_string()
            )
        );
    }

    #[test]
    fn id_level_status_and_dates_are_checked() {
        let bad_id = VALID.replace("5F2A8C4E-1B3D-4E6F-8A9B-0C1D2E3F4A5B", "my-rule-1");
        let (line, column, message) = at(&bad_id);
        assert_eq!((line, column), (Some(2), Some(1)));
        assert!(
            message.starts_with("`id` \"my-rule-1\" is not a UUID"),
            "{message}"
        );

        let bad_level = VALID.replace("level: HIGH", "level: severe");
        assert_eq!(
            at(&bad_level),
            (
                Some(4),
                Some(1),
                "`level` \"severe\" is not one of informational, low, medium, high, critical"
                    .to_string()
            )
        );
        let bad_status = VALID.replace("status: Test", "status: production");
        assert_eq!(error(&bad_status).line, Some(3));
        for (date, ok) in [
            ("2024-02-29", true),
            ("2024/2/9", true),
            ("2024-2-9", false),
            ("2024-02-29T10:00:00Z", true),
            ("2024-2-9 10:00:00", true),
            ("2024-02-29Tnoon", false),
            ("24-02-29", false),
            ("2024-13-01", false),
        ] {
            let src = VALID.replace("date: 2024-02-29", &format!("date: {date}"));
            assert_eq!(parse_sigma(&src).is_ok(), ok, "{date}");
        }
        let bad_date = VALID.replace("date: 2024-02-29", "date: 2023-02-29");
        assert_eq!(
            error(&bad_date).message,
            "`date` \"2023-02-29\" is not a date, use yyyy-mm-dd"
        );
        let numeric_id = VALID.replace("5F2A8C4E-1B3D-4E6F-8A9B-0C1D2E3F4A5B", "12");
        assert_eq!(
            error(&numeric_id).message,
            "`id` must be a UUID string, found a number"
        );
    }

    #[test]
    fn condition_errors_point_into_the_condition() {
        let piped = VALID.replace(
            "selection and not 1 of filter_*",
            "selection | count() by host > 5",
        );
        let e = error(&piped);
        assert_eq!((e.line, e.column), (Some(18), Some(26)));
        assert!(e.message.contains("pipe syntax"), "{}", e.message);

        let quoted = VALID.replace("selection and not 1 of filter_*", "'selection and sel2'");
        assert_eq!(
            at(&quoted),
            (
                Some(18),
                Some(31),
                "`condition` uses `sel2`, which `detection` does not define".to_string()
            )
        );

        let folded = VALID.replace(
            "condition: selection and not 1 of filter_*",
            "condition: >\n        selection and\n        (",
        );
        let e = error(&folded);
        assert_eq!((e.line, e.column), (Some(18), Some(5)));
        assert!(
            e.message.starts_with("invalid `condition`: "),
            "{}",
            e.message
        );
    }

    #[test]
    fn condition_lists_and_detection_contents_are_checked() {
        let list = VALID.replace(
            "condition: selection and not 1 of filter_*",
            "condition:\n        - selection\n        - selection and filter_main",
        );
        assert!(parse_sigma(&list).is_ok());
        let empty = VALID.replace(
            "condition: selection and not 1 of filter_*",
            "condition: []",
        );
        assert!(error(&empty).message.contains("non-empty list"));
        let null_search = VALID.replace("        User: SYSTEM\n", "");
        assert_eq!(
            at(&null_search),
            (
                Some(16),
                Some(5),
                "search identifier `filter_main` must be a non-empty mapping, list or value, \
                 found null"
                    .to_string()
            )
        );
    }

    #[test]
    fn multi_document_and_correlation_rules_are_rejected() {
        let multi = format!("{VALID}---\n{VALID}");
        let (line, column, message) = at(&multi);
        assert_eq!((line, column), (Some(21), Some(1)));
        assert!(message.starts_with("2 YAML documents"), "{message}");
        // Empty leading and trailing documents do not count.
        assert!(parse_sigma(&format!("---\n{VALID}---\n")).is_ok());

        let correlation = "title: c\ncorrelation:\n  type: event_count\n";
        assert_eq!(
            at(correlation),
            (
                Some(2),
                Some(1),
                "Sigma correlation rules are not supported: HarfangLab takes detection rules"
                    .to_string()
            )
        );
    }

    #[test]
    fn logsource_is_required() {
        let none = VALID.replace(
            "logsource:\n    category: process_creation\n    product: windows\n",
            "",
        );
        assert_eq!(error(&none).message, "missing `logsource`");
        let empty = VALID.replace(
            "    category: process_creation\n    product: windows\n",
            "    definition: x\n",
        );
        assert_eq!(error(&empty).line, Some(10));
    }

    #[test]
    fn crlf_content_is_parsed_and_located() {
        let crlf = VALID.replace('\n', "\r\n");
        assert_eq!(parse_sigma(&crlf).unwrap(), parse_sigma(VALID).unwrap());
        let bad = crlf.replace("level: HIGH", "level: 3");
        assert_eq!(
            at(&bad),
            (
                Some(4),
                Some(1),
                "`level` must be a string, found a number".to_string()
            )
        );
    }

    #[test]
    fn key_locator_handles_quotes_comments_and_nesting() {
        let src =
            "# c\n\"title\": x\ndetection:\n  # c\n  sel:\n    condition: 1\n  'condition' : y\n";
        assert_eq!(locate_key(src, &["title"]), Some((2, 1)));
        assert_eq!(locate_key(src, &["detection", "condition"]), Some((7, 3)));
        assert_eq!(locate_key(src, &["detection", "missing"]), None);
        assert_eq!(locate_key("{title: x}", &["title"]), None);
    }

    #[test]
    fn hostile_input_does_not_panic() {
        for input in [
            "\u{0}",
            "title: \"\\u",
            "&a [*a]",
            "a: &a [*a, *a]\nb: *a",
            "title: x\ndetection: {condition: ((((((((}",
            "\u{feff}title: x",
            ":\n:\n:",
        ] {
            let _ = parse_sigma(input);
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_sigma(&deep).is_err());
    }
}
