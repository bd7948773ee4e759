//! Reading indicators from a file for the offline `translate` command, as a stream.
//!
//! Accepted values: an OpenCTI indicator in the GraphQL read shape (`id`, `standard_id`, `name`,
//! `pattern_type`, `pattern`, `x_opencti_score`, `x_mitre_platforms`, `observables`), a STIX 2.1
//! indicator as the live stream sends it (score and platforms in the OpenCTI / MITRE
//! extensions), a stream event envelope (`{"type":"create","data":{...}}`), a STIX bundle (every
//! indicator in it, with the observables its `based-on` relationships point to inside the
//! bundle) or a list of those.
//!
//! How the input is cut into values, line by line (no line decides for the others):
//! 1. A line that holds a complete JSON value is one value (**JSON Lines**).
//! 2. A line that opens a `{` or `[` without closing it starts a **multi-line document** (a
//!    pretty-printed bundle) that ends where its brackets close. Exception: when the next
//!    non-blank line is a complete JSON value by itself (and the opening line does not end with
//!    `[`), the opening line is a broken JSON line of its own.
//! 3. A document that does not parse is one error at the line and column where it breaks;
//!    unless some of its lines are complete JSON values by themselves: then it was JSON Lines
//!    after a broken line, and every one of its lines is read again on its own (rule 1 or 4).
//! 4. Anything else (invalid JSON, a `# comment`, invalid UTF-8) is one error naming the line
//!    and column; reading goes on with the next line.
//!
//! Memory: one line at a time in JSON Lines; a multi-line document is held whole while it is
//! read. Pure apart from reading: bytes in, [`InputItem`]s out, in input order. Translation
//! itself is `translate`'s job.

use crate::translate::{Indicator, LinkedObservable};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead};

/// The OpenCTI STIX extension (internal id, score, ...), opencti-protocol.md §2.3.
const OCTI_EXTENSION: &str = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba";
/// The MITRE STIX extension (platforms).
const MITRE_EXTENSION: &str = "extension-definition--322b8f77-262a-4cb8-a915-1e441e00329b";

/// Where an item comes from: the 1-based line (of the object itself inside a multi-line
/// document) and, inside a bundle or list, the 0-based index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub object: Option<usize>,
}

impl Position {
    fn from_line(line: usize) -> Self {
        Position { line, object: None }
    }
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
    /// What identifies the indicator to a person (its id, else its name), also when it cannot
    /// be read as one (a missing `pattern`); `None` when the input holds neither.
    pub label: Option<String>,
    pub indicator: Result<Indicator, String>,
}

/// Read every indicator of `input` at once (see [`IndicatorReader`] for a stream). Never fails
/// as a whole: problems become error items. Only the unit tests read a whole input at once.
#[cfg(test)]
pub fn read_indicators(input: &[u8]) -> Vec<InputItem> {
    let mut reader = IndicatorReader::new(input);
    let mut items = Vec::new();
    // Reading a slice cannot fail.
    while let Ok(true) = reader.read_next(&mut items) {}
    items
}

/// One line taken from the input, without its line break.
struct Line {
    number: usize,
    bytes: Vec<u8>,
    /// Read again after a document turned out to be JSON Lines: never starts a document.
    alone: bool,
}

/// Reads indicators from JSON Lines or multi-line JSON documents, value by value, with the
/// rules of the module documentation.
pub struct IndicatorReader<R> {
    input: R,
    /// Number of the last line taken from `input`.
    lines_read: usize,
    /// Lines taken from `input` and not handled yet, in order.
    pending: VecDeque<Line>,
}

impl<R: BufRead> IndicatorReader<R> {
    pub fn new(input: R) -> Self {
        IndicatorReader {
            input,
            lines_read: 0,
            pending: VecDeque::new(),
        }
    }

    /// Append the items of the next value (a line or a document) to `out`. `Ok(false)` at the
    /// end of the input; `Err` only when reading the input fails.
    pub fn read_next(&mut self, out: &mut Vec<InputItem>) -> io::Result<bool> {
        loop {
            let Some(line) = self.next_line()? else {
                return Ok(false);
            };
            if line.bytes.trim_ascii().is_empty() {
                continue;
            }
            match serde_json::from_slice::<Value>(&line.bytes) {
                Ok(value) => push_value(&value, &Locator::line(line.number), out),
                Err(e) if e.is_eof() && !line.alone && opens_container(&line.bytes) => {
                    self.read_document(line, out)?
                }
                Err(e) => out.push(line_error(&line, &e)),
            }
            return Ok(true);
        }
    }

    fn next_line(&mut self) -> io::Result<Option<Line>> {
        if let Some(line) = self.pending.pop_front() {
            return Ok(Some(line));
        }
        let mut bytes = Vec::new();
        if self.input.read_until(b'\n', &mut bytes)? == 0 {
            return Ok(None);
        }
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        self.lines_read += 1;
        Ok(Some(Line {
            number: self.lines_read,
            bytes,
            alone: false,
        }))
    }

    /// `first` opens a value it does not close: read the document it starts (rules 2 and 3).
    fn read_document(&mut self, first: Line, out: &mut Vec<InputItem>) -> io::Result<()> {
        let mut brackets = Brackets::default();
        brackets.feed(&first.bytes);
        let mut probing = !first.bytes.trim_ascii_end().ends_with(b"[");
        let mut lines = vec![first];
        while !brackets.closed() {
            let Some(line) = self.next_line()? else {
                break;
            };
            if probing && !line.bytes.trim_ascii().is_empty() {
                probing = false;
                if is_complete_value(&line.bytes) {
                    // Rule 2's exception: a broken JSON line, then JSON Lines again.
                    self.pending.push_front(line);
                    out.push(unclosed_line_error(&lines[0]));
                    return Ok(());
                }
            }
            brackets.feed(&line.bytes);
            lines.push(line);
        }
        let start = lines[0].number;
        let document = lines
            .iter()
            .map(|l| l.bytes.as_slice())
            .collect::<Vec<_>>()
            .join(&b'\n');
        let Err(e) = push_document(&document, start, out) else {
            return Ok(());
        };
        if lines[1..].iter().any(|l| is_complete_value(&l.bytes)) {
            // Rule 3's exception: every line gets its own answer.
            out.push(unclosed_line_error(&lines[0]));
            for mut line in lines.into_iter().skip(1).rev() {
                line.alone = true;
                self.pending.push_front(line);
            }
            return Ok(());
        }
        let line = start + e.line().saturating_sub(1);
        let context = if e.is_eof() {
            format!(" (the document that starts on line {start} is not closed)")
        } else if line != start {
            format!(" (in the document that starts on line {start})")
        } else {
            String::new()
        };
        out.push(InputItem {
            position: Position::from_line(line),
            label: None,
            indicator: Err(format!(
                "line {line}, column {}: invalid JSON: {}{context}",
                e.column(),
                json_message(&e)
            )),
        });
        Ok(())
    }
}

/// Tracks bracket depth over the lines of a document, ignoring brackets inside strings.
#[derive(Default)]
struct Brackets {
    depth: usize,
    opened: bool,
    in_string: bool,
    escaped: bool,
}

impl Brackets {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    self.opened = true;
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
    }

    /// The first bracket has been closed again.
    fn closed(&self) -> bool {
        self.opened && self.depth == 0
    }
}

fn opens_container(line: &[u8]) -> bool {
    matches!(line.trim_ascii_start().first(), Some(b'{' | b'['))
}

fn is_complete_value(line: &[u8]) -> bool {
    !line.trim_ascii().is_empty() && serde_json::from_slice::<IgnoredAny>(line).is_ok()
}

/// The error item of a line that is not JSON.
fn line_error(line: &Line, e: &serde_json::Error) -> InputItem {
    let hint = if e.is_eof() {
        " (the line ends before its value does)"
    } else {
        ""
    };
    InputItem {
        position: Position::from_line(line.number),
        label: None,
        indicator: Err(format!(
            "line {}, column {}: invalid JSON: {}{hint}",
            line.number,
            e.column(),
            json_message(e)
        )),
    }
}

/// The error item of a line that opens a value and does not close it.
fn unclosed_line_error(line: &Line) -> InputItem {
    match serde_json::from_slice::<IgnoredAny>(&line.bytes) {
        Err(e) => line_error(line, &e),
        // Not reached (the line did not parse), but never lose the line.
        Ok(_) => InputItem {
            position: Position::from_line(line.number),
            label: None,
            indicator: Err(format!("line {}: invalid JSON", line.number)),
        },
    }
}

/// serde_json's message without its own " at line X column Y" suffix (we print the position).
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// The `objects` of a bundle, unparsed, to find the line each one starts on.
#[derive(Deserialize)]
struct BundleObjects<'a> {
    #[serde(borrow)]
    objects: Vec<&'a RawValue>,
}

/// Items of a multi-line document starting on line `start`, each bundle object or list element
/// at the line it starts on.
fn push_document(
    document: &[u8],
    start: usize,
    out: &mut Vec<InputItem>,
) -> Result<(), serde_json::Error> {
    let value: Value = serde_json::from_slice(document)?;
    let raws = match &value {
        Value::Array(_) => serde_json::from_slice::<Vec<&RawValue>>(document).ok(),
        Value::Object(o) if is_bundle(o) => serde_json::from_slice::<BundleObjects<'_>>(document)
            .ok()
            .map(|b| b.objects),
        _ => None,
    };
    // Element offsets are increasing: count line breaks once, from one element to the next.
    let mut lines = Vec::new();
    let (mut line, mut from) = (start, 0);
    for raw in raws.iter().flatten() {
        let offset = (raw.get().as_ptr() as usize)
            .saturating_sub(document.as_ptr() as usize)
            .clamp(from, document.len());
        line += document[from..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        from = offset;
        lines.push(line);
    }
    let locator = Locator {
        line: start,
        elements: raws.is_some().then_some(lines.as_slice()),
    };
    push_value(&value, &locator, out);
    Ok(())
}

/// Where a value and, in a multi-line document, each element of its list or bundle start.
struct Locator<'a> {
    line: usize,
    elements: Option<&'a [usize]>,
}

impl Locator<'_> {
    fn line(line: usize) -> Self {
        Locator {
            line,
            elements: None,
        }
    }

    fn element(&self, i: usize) -> Position {
        Position {
            line: self
                .elements
                .and_then(|lines| lines.get(i).copied())
                .unwrap_or(self.line),
            object: Some(i),
        }
    }
}

fn is_bundle(o: &Map<String, Value>) -> bool {
    o.get("type").and_then(Value::as_str) == Some("bundle")
}

fn push_value(value: &Value, at: &Locator<'_>, items: &mut Vec<InputItem>) {
    match value {
        Value::Array(values) => {
            for (i, v) in values.iter().enumerate() {
                push_element(v, at.element(i), items);
            }
        }
        Value::Object(o) if is_bundle(o) => push_bundle(o, at, items),
        _ => push_element(value, Position::from_line(at.line), items),
    }
}

/// One element: an indicator (or what should have been one), or a bundle inside a list.
fn push_element(value: &Value, position: Position, items: &mut Vec<InputItem>) {
    if let Value::Object(o) = value
        && is_bundle(o)
    {
        return push_bundle(o, &Locator::line(position.line), items);
    }
    items.push(InputItem {
        position,
        label: label(value),
        indicator: indicator_from_value(value).map_err(|e| format!("{position}: {e}")),
    });
}

fn push_bundle(o: &Map<String, Value>, at: &Locator<'_>, items: &mut Vec<InputItem>) {
    let Some(objects) = o.get("objects").and_then(Value::as_array) else {
        let position = Position::from_line(at.line);
        items.push(InputItem {
            position,
            label: None,
            indicator: Err(format!("{position}: bundle without an `objects` list")),
        });
        return;
    };
    let linked = based_on_observables(objects);
    for (i, v) in objects.iter().enumerate() {
        // Only indicators are translated; the bundle's other objects are context.
        if v.get("type").and_then(Value::as_str) != Some("indicator") {
            continue;
        }
        let position = at.element(i);
        let indicator = indicator_from_value(v).map(|mut ind| {
            let own_id = v.get("id").and_then(Value::as_str).unwrap_or_default();
            for (_, obs) in linked.iter().filter(|(src, _)| *src == own_id) {
                let known = ind.observables.iter().any(|k| {
                    k.value == obs.value && k.entity_type.eq_ignore_ascii_case(&obs.entity_type)
                });
                if !known {
                    ind.observables.push(obs.clone());
                }
            }
            ind
        });
        items.push(InputItem {
            position,
            label: label(v),
            indicator: indicator.map_err(|e| format!("{position}: {e}")),
        });
    }
}

/// The indicator's id as [`indicator_from_value`] would pick it (OpenCTI internal id, `id`,
/// `standard_id`), else its name; read leniently, so that an item that fails still names the
/// indicator it is about.
fn label(value: &Value) -> Option<String> {
    let mut o = value.as_object()?;
    if is_event(o)
        && let Some(Value::Object(data)) = o.get("data")
    {
        o = data;
    }
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let octi_id = o
        .get("extensions")
        .and_then(|e| e.get(OCTI_EXTENSION))
        .and_then(|e| e.get("id"));
    text(octi_id)
        .or_else(|| text(o.get("id")))
        .or_else(|| text(o.get("standard_id")))
        .or_else(|| text(o.get("name")))
}

/// A stream event envelope: `{"version":"4","type":"create","data":{...}}`.
fn is_event(o: &Map<String, Value>) -> bool {
    o.get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| matches!(t, "create" | "update" | "delete" | "merge"))
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
    if let (true, Some(Value::Object(data))) = (is_event(o), o.get("data")) {
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
        // Each object at the line it starts on, not the document's first line.
        assert_eq!(
            items[0].position,
            Position {
                line: 5,
                object: Some(0)
            }
        );
        assert_eq!(
            items[1].indicator.as_ref().unwrap_err(),
            "line 7, object 2: field `x_opencti_score` must be a number, found a string"
        );
        assert_eq!(items[1].label.as_deref(), Some("indicator--b"));
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

    /// `(line, object, Ok(id) | Err(error))` of every item, for compact expectations.
    fn summary(items: &[InputItem]) -> Vec<(usize, Option<usize>, Result<String, String>)> {
        items
            .iter()
            .map(|i| {
                (
                    i.position.line,
                    i.position.object,
                    i.indicator
                        .as_ref()
                        .map(|ind| ind.id.clone())
                        .map_err(Clone::clone),
                )
            })
            .collect()
    }

    const VALID: &str = "{\"id\":\"a\",\"pattern\":\"p\"}\n{\"id\":\"b\",\"pattern\":\"p\"}\n{\"id\":\"c\",\"pattern\":\"p\"}\n";

    #[test]
    fn a_bad_first_line_is_one_error_and_every_other_line_is_read() {
        for (first, error) in [
            (
                &b"{\"id\": broken"[..],
                "line 1, column 8: invalid JSON: expected value",
            ),
            (
                b"# exported from OpenCTI",
                "line 1, column 1: invalid JSON: expected value",
            ),
            (b"{\"id\":\"\xff\xfe\"}", "line 1, column "),
            (
                b"{\"id\": \"x\",",
                "line 1, column 11: invalid JSON: EOF while parsing an object (the line ends \
                 before its value does)",
            ),
        ] {
            let mut input = first.to_vec();
            input.extend_from_slice(b"\n");
            input.extend_from_slice(VALID.as_bytes());
            let items = read_indicators(&input);
            let got = summary(&items);
            assert_eq!(got.len(), 4, "{first:?}: {got:?}");
            let e = got[0].2.as_ref().unwrap_err();
            assert!(e.starts_with(error), "{first:?}: {e}");
            let rest: Vec<_> = got[1..].iter().map(|g| (g.0, g.2.clone())).collect();
            assert_eq!(
                rest,
                vec![
                    (2, Ok("a".into())),
                    (3, Ok("b".into())),
                    (4, Ok("c".into()))
                ],
                "{first:?}"
            );
        }
    }

    #[test]
    fn unclosed_lines_before_json_lines_each_get_an_error() {
        // The probe does not catch this one (line 2 is unclosed too): the "document" fails and,
        // holding complete lines, is read again line by line.
        let input = format!("{{\"id\": \"x\",\n  {{\"id\": \"y\",\n\n{VALID}");
        let got = summary(&read_indicators(input.as_bytes()));
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(
            got[0]
                .2
                .as_ref()
                .unwrap_err()
                .starts_with("line 1, column 11: invalid JSON: EOF")
        );
        assert!(
            got[1]
                .2
                .as_ref()
                .unwrap_err()
                .starts_with("line 2, column 13: invalid JSON: EOF")
        );
        assert_eq!(got[2], (4, None, Ok("a".into())));
        assert_eq!(got[4], (6, None, Ok("c".into())));
    }

    #[test]
    fn pretty_documents_and_json_lines_mix() {
        let input = b"[\n  {\"id\": \"one\", \"pattern\": \"p\"}\n]\n{\"id\":\"two\",\"pattern\":\"p\"}\n{\n  \"id\": \"three\",\n  \"pattern\": \"p\"\n}\n";
        assert_eq!(
            summary(&read_indicators(input)),
            vec![
                (2, Some(0), Ok("one".into())),
                (4, None, Ok("two".into())),
                (5, None, Ok("three".into())),
            ]
        );
    }

    #[test]
    fn a_broken_pretty_document_is_one_error_at_its_real_line() {
        let input = b"{\n  \"type\": \"bundle\",\n  \"objects\": [\n    {\"type\": \"indicator\", \"id\": \"a\", \"pattern\": \"p\"},\n    {\"type\": \"indicator\" \"id\": \"b\"}\n  ]\n}\n{\"id\":\"after\",\"pattern\":\"p\"}\n";
        let got = summary(&read_indicators(input));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[0].2.as_ref().unwrap_err(),
            "line 5, column 26: invalid JSON: expected `,` or `}` (in the document that starts on \
             line 1)"
        );
        assert_eq!(got[0].0, 5);
        assert_eq!(got[1], (8, None, Ok("after".into())));
        // Never closed: the error is at the end, and says where the document began.
        let got = summary(&read_indicators(
            b"\n{\n  \"type\": \"bundle\",\n  \"objects\": [\n",
        ));
        assert_eq!(got.len(), 1);
        let e = got[0].2.as_ref().unwrap_err();
        assert!(
            e.starts_with("line 4, column ")
                && e.ends_with("(the document that starts on line 2 is not closed)"),
            "{e}"
        );
    }

    #[test]
    fn an_item_that_is_not_an_indicator_still_names_it() {
        let items = read_indicators(
            b"{\"id\":\"3d2b\",\"name\":\"no pattern\"}\n{\"name\":\"only a name\"}\n{\"type\":\"create\",\"data\":{\"id\":\"indicator--1\",\"type\":\"indicator\",\"extensions\":{\"extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba\":{\"id\":\"internal-1\"}}}}\n[1]\n",
        );
        let labels: Vec<Option<&str>> = items.iter().map(|i| i.label.as_deref()).collect();
        assert_eq!(
            labels,
            vec![Some("3d2b"), Some("only a name"), Some("internal-1"), None]
        );
        assert!(items.iter().all(|i| i.indicator.is_err()));
    }

    #[test]
    fn lines_are_read_as_they_come() {
        /// Two good lines, then a read error: the reader must have answered both first.
        struct FailsAfter(std::io::Cursor<Vec<u8>>);
        impl std::io::Read for FailsAfter {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0.read(buf)
            }
        }
        impl BufRead for FailsAfter {
            fn fill_buf(&mut self) -> io::Result<&[u8]> {
                if self.0.position() as usize >= self.0.get_ref().len() {
                    return Err(io::Error::other("disk gone"));
                }
                self.0.fill_buf()
            }
            fn consume(&mut self, n: usize) {
                self.0.consume(n)
            }
        }
        let mut reader = IndicatorReader::new(FailsAfter(std::io::Cursor::new(
            b"{\"id\":\"a\",\"pattern\":\"p\"}\n{\"id\":\"b\",\"pattern\":\"p\"}\n".to_vec(),
        )));
        let mut items = Vec::new();
        assert!(reader.read_next(&mut items).unwrap());
        assert!(reader.read_next(&mut items).unwrap());
        assert_eq!(items.len(), 2);
        assert_eq!(
            reader.read_next(&mut items).unwrap_err().to_string(),
            "disk gone"
        );
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
