//! The demo's report as a story for a SOC engineer: first what the scenario exercises, then a
//! summary with its terms defined, then the HarfangLab lists.
//!
//! Nothing here is written for one scenario: [`ScenarioFacts`] reads the scenario's events with
//! the connector's own decoder (`opencti::events`) and translator (`translate`), and every
//! outcome printed is looked up in the [`DemoResult`] (the simulator's final lists, the run's
//! counters and dead letters). A changed scenario changes the story.

use super::DemoResult;
use crate::harfanglab::model::IocRule;
use crate::opencti::events::{self, Decoded, EventKind, Payload};
use crate::opencti::sse::Frame;
use crate::sim::opencti::ScenarioEvent;
use crate::translate::{self, Indicator, IocKey};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What one indicator of the scenario went through.
#[derive(Clone, Debug, Default, PartialEq)]
struct Tracked {
    name: String,
    pattern_type: String,
    pattern: String,
    deleted: bool,
    /// The latest `revoked` value.
    revoked: bool,
    /// The `revoked` value after each update that changed it.
    revocations: Vec<bool>,
}

/// One `based-on` relationship: the indicator it starts from and the observable it points to.
#[derive(Clone, Debug, PartialEq)]
struct Link {
    /// The indicator's key (OpenCTI internal id, else STIX id).
    indicator: String,
    entity_type: String,
    value: String,
    /// Not deleted by the end of the scenario.
    alive: bool,
}

/// A pattern that an update replaced.
#[derive(Clone, Debug, PartialEq)]
pub struct PatternChange {
    pub name: String,
    pub before: String,
    pub after: String,
}

/// What the scenario's events ask of the connector, read the way the connector reads them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScenarioFacts {
    pub events: usize,
    /// Indicator events by kind (create, update, delete).
    pub indicator_events: BTreeMap<&'static str, usize>,
    /// Created indicators by pattern type.
    pub created_by_type: BTreeMap<String, usize>,
    /// `based-on` relationship events by kind.
    pub based_on_events: BTreeMap<&'static str, usize>,
    pub pattern_changes: Vec<PatternChange>,
    /// `(former name, new name)`.
    pub renames: Vec<(String, String)>,
    /// What the events have nothing for HarfangLab about, e.g. `malware DemoRAT (create)`.
    pub ignored: Vec<String>,
    /// `based-on` links by relationship id, in first-seen order.
    links: Vec<(String, Link)>,
    /// Indicators by key (OpenCTI internal id, else standard id), in first-seen order.
    indicators: Vec<(String, Tracked)>,
}

impl ScenarioFacts {
    /// Read the scenario's events as the connector's stream decoder does.
    pub fn read(events: &[ScenarioEvent]) -> ScenarioFacts {
        let mut facts = ScenarioFacts {
            events: events.len(),
            ..ScenarioFacts::default()
        };
        for (n, ev) in events.iter().enumerate() {
            let frame = Frame {
                id: Some(format!("{n}-0")),
                event: ev.event.clone(),
                data: ev.data.to_string(),
                retry: None,
            };
            match events::decode(&frame) {
                Ok(Decoded::Event(ev)) => facts.event(&ev),
                Ok(Decoded::Ignored { event, .. }) => {
                    facts.ignored.push(format!("a {event} event"))
                }
                Ok(_) => {}
                Err(e) => facts.ignored.push(e.to_string()),
            }
        }
        facts
    }

    fn event(&mut self, ev: &events::StreamEvent) {
        let (d, former) = match &ev.payload {
            Payload::Indicator(e) => (&e.indicator, &e.former),
            Payload::BasedOn(b) => {
                *self.based_on_events.entry(ev.kind.as_str()).or_default() += 1;
                let link = Link {
                    indicator: b
                        .source_internal_id
                        .clone()
                        .unwrap_or_else(|| b.source_ref.clone()),
                    entity_type: b.target_type.clone().unwrap_or_default(),
                    value: b.target_value.clone().unwrap_or_default(),
                    alive: ev.kind != EventKind::Delete,
                };
                match self.links.iter_mut().find(|(id, _)| *id == b.id) {
                    Some((_, known)) => known.alive = link.alive,
                    None => self.links.push((b.id.clone(), link)),
                }
                return;
            }
            Payload::Other { stix_type } => {
                // Read again only here (the demo report): the event keeps the text.
                let stix: Value = serde_json::from_str(&ev.stix).unwrap_or(Value::Null);
                let name = stix.get("name").and_then(Value::as_str).unwrap_or("");
                self.ignored
                    .push(format!("{stix_type} {name} ({})", ev.kind.as_str()));
                return;
            }
        };
        *self.indicator_events.entry(ev.kind.as_str()).or_default() += 1;
        let key = d.id.clone();
        let at = match self.indicators.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.indicators.push((key, Tracked::default()));
                self.indicators.len() - 1
            }
        };
        let t = &mut self.indicators[at].1;
        if ev.kind == EventKind::Create && t.name.is_empty() {
            *self
                .created_by_type
                .entry(d.pattern_type.clone())
                .or_default() += 1;
        }
        if let Some(before) = &former.pattern
            && *before != d.pattern
        {
            self.pattern_changes.push(PatternChange {
                name: d.name.clone(),
                before: before.clone(),
                after: d.pattern.clone(),
            });
        }
        if let Some(before) = &former.name
            && *before != d.name
        {
            self.renames.push((before.clone(), d.name.clone()));
        }
        if ev.kind == EventKind::Update && t.revoked != d.revoked {
            t.revocations.push(d.revoked);
        }
        t.revoked = d.revoked;
        t.name = d.name.clone();
        t.pattern_type = d.pattern_type.clone();
        t.pattern = d.pattern.clone();
        t.deleted |= ev.kind == EventKind::Delete;
    }

    fn translated(t: &Tracked) -> Result<translate::Translation, translate::TranslateError> {
        translate::translate(&Indicator {
            name: t.name.clone(),
            pattern_type: t.pattern_type.clone(),
            pattern: t.pattern.clone(),
            ..Indicator::default()
        })
    }

    /// IOCs the patterns of two indicators or more name: key → their names.
    fn shared_iocs(&self) -> BTreeMap<IocKey, Vec<&Tracked>> {
        let mut by_key: BTreeMap<IocKey, Vec<&Tracked>> = BTreeMap::new();
        for (_, t) in &self.indicators {
            for key in Self::translated(t).map(|t| t.iocs).unwrap_or_default() {
                by_key.entry(key).or_default().push(t);
            }
        }
        by_key.retain(|_, holders| holders.len() > 1);
        by_key
    }

    /// The `based-on` links of each indicator, indicators in first-seen order.
    fn links_by_indicator(&self) -> Vec<(&str, Vec<&Link>)> {
        let mut out: Vec<(&str, Vec<&Link>)> = Vec::new();
        for (_, link) in &self.links {
            match out.iter_mut().find(|(k, _)| *k == link.indicator) {
                Some((_, links)) => links.push(link),
                None => out.push((&link.indicator, vec![link])),
            }
        }
        out
    }

    /// An indicator's latest name, else its key.
    fn name_of<'a>(&'a self, key: &'a str) -> &'a str {
        self.indicators
            .iter()
            .find(|(k, _)| k == key)
            .map_or(key, |(_, t)| t.name.as_str())
    }

    /// Indicators of a pattern type: `(created, deleted)`.
    fn count_type(&self, pattern_type: &str) -> (usize, usize) {
        let of_type = || {
            self.indicators
                .iter()
                .filter(|(_, t)| t.pattern_type.eq_ignore_ascii_case(pattern_type))
        };
        (
            of_type().count(),
            of_type().filter(|(_, t)| t.deleted).count(),
        )
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// `186 stix, 8 sigma, ...`: most frequent first.
fn counts(map: &BTreeMap<impl AsRef<str>, usize>) -> String {
    let mut entries: Vec<(&str, usize)> = map.iter().map(|(k, n)| (k.as_ref(), *n)).collect();
    entries.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    entries
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Report lines are wrapped here; continuation lines are indented under the text.
const WIDTH: usize = 100;

/// `text` wrapped at [`WIDTH`] columns, the first line starting with `first`, the others with
/// as many spaces.
fn wrapped(out: &mut String, first: &str, text: &str) {
    let indent = " ".repeat(first.chars().count());
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split(' ') {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            let _ = writeln!(out, "{line}");
            line = indent.clone();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    let _ = writeln!(out, "{line}");
}

fn bullet(out: &mut String, text: &str) {
    wrapped(out, "  - ", text);
}

impl DemoResult {
    fn has_ioc(&self, key: &IocKey) -> Option<&IocRule> {
        self.iocs
            .iter()
            .find(|r| r.ioc_type == key.ioc_type.as_str() && r.value == key.value)
    }

    fn ioc_text(key: &IocKey) -> String {
        format!("{} {}", key.ioc_type.as_str(), key.value)
    }

    /// What the scenario exercises, each point with what HarfangLab holds because of it.
    fn story(&self, out: &mut String) {
        let f = &self.scenario;
        let _ = writeln!(out, "What the scenario exercises ({} events):", f.events);
        let kind = |m: &BTreeMap<&str, usize>, k: &str| m.get(k).copied().unwrap_or(0);
        let mut text = format!(
            "indicators: {} created ({}), {} updated, {} deleted",
            kind(&f.indicator_events, "create"),
            counts(&f.created_by_type),
            kind(&f.indicator_events, "update"),
            kind(&f.indicator_events, "delete"),
        );
        if !f.based_on_events.is_empty() {
            text.push_str(&format!(
                "; based-on relationships: {} created, {} deleted",
                kind(&f.based_on_events, "create"),
                kind(&f.based_on_events, "delete")
            ));
        }
        bullet(out, &text);
        for (key, holders) in f.shared_iocs() {
            let names: Vec<String> = holders.iter().map(|t| t.name.clone()).collect();
            let deleted: Vec<String> = holders
                .iter()
                .filter(|t| t.deleted)
                .map(|t| t.name.clone())
                .collect();
            let now = match self.has_ioc(&key) {
                Some(rule) => format!(
                    "the rule stays, held by {}",
                    and_list(&self.holder_names(rule))
                ),
                None => "the rule is gone".to_owned(),
            };
            let what = if deleted.is_empty() {
                now
            } else {
                format!("{} deleted, {now}", and_list(&deleted))
            };
            bullet(
                out,
                &format!(
                    "shared IOC: {} is in the patterns of {}; {what} (a rule goes only when no \
                     indicator wants it any more)",
                    Self::ioc_text(&key),
                    and_list(&names)
                ),
            );
        }
        for c in &f.pattern_changes {
            let iocs = |p: &str| translate::stix_iocs(p).map(|(k, _)| k).unwrap_or_default();
            let (before, after) = (iocs(&c.before), iocs(&c.after));
            let mut effects: Vec<String> = before
                .iter()
                .filter(|k| !after.contains(k))
                .map(|k| format!("{} {} (released)", Self::ioc_text(k), self.state(k)))
                .collect();
            effects.extend(
                after
                    .iter()
                    .map(|k| format!("{} {}", Self::ioc_text(k), self.state(k))),
            );
            bullet(
                out,
                &format!(
                    "pattern change: {} {} -> {}: {}",
                    c.name,
                    c.before,
                    c.after,
                    and_list(&effects)
                ),
            );
        }
        for (_, t) in f
            .indicators
            .iter()
            .filter(|(_, t)| !t.revocations.is_empty())
        {
            let history = t
                .revocations
                .iter()
                .map(|&r| if r { "revoked" } else { "un-revoked" })
                .collect::<Vec<_>>()
                .join(" then ");
            let iocs = ScenarioFacts::translated(t)
                .map(|t| t.iocs)
                .unwrap_or_default();
            let states: Vec<String> = iocs
                .iter()
                .map(|k| format!("{} {}", Self::ioc_text(k), self.state(k)))
                .collect();
            bullet(
                out,
                &format!("revocation: {} {history}: {}", t.name, and_list(&states)),
            );
        }
        for (before, after) in &f.renames {
            bullet(
                out,
                &format!("rename: {before} -> {after}: the same rules, held under the new name"),
            );
        }
        for (indicator, links) in f.links_by_indicator() {
            let name = f.name_of(indicator);
            let describe = |alive: bool| {
                links
                    .iter()
                    .filter(|l| l.alive == alive)
                    .map(
                        |l| match translate::observable_ioc(&l.entity_type, &l.value) {
                            Ok(k) => format!("{} {}", Self::ioc_text(&k), self.state(&k)),
                            Err(reason) => {
                                format!("{} {} (not an IOC: {reason})", l.entity_type, l.value)
                            }
                        },
                    )
                    .collect::<Vec<_>>()
            };
            let mut text = format!(
                "based-on: {name} links observables {}",
                and_list(&describe(true))
            );
            let unlinked = describe(false);
            if !unlinked.is_empty() {
                text.push_str(&format!("; unlinked later: {}", and_list(&unlinked)));
            }
            bullet(out, &text);
        }
        let (sigma, sigma_deleted) = f.count_type("sigma");
        if sigma > 0 {
            bullet(
                out,
                &format!(
                    "Sigma identity: a Sigma rule is found again by the rule's own `id:`, whatever \
                     the indicator is called: {sigma} created, {sigma_deleted} deleted, {} in \
                     HarfangLab",
                    self.sigma.len()
                ),
            );
        }
        let (yara, yara_deleted) = f.count_type("yara");
        if yara > 0 {
            bullet(
                out,
                &format!(
                    "Yara identity: a Yara file is found again by the indicator's name (current or \
                     former): {yara} created, {yara_deleted} deleted, {} in HarfangLab",
                    self.yara.len()
                ),
            );
        }
        for (key, t) in &f.indicators {
            match ScenarioFacts::translated(t) {
                Err(e) if e.is_unsupported() => bullet(
                    out,
                    &format!("skipped: {} ({e}): nothing is sent for it", t.name),
                ),
                Err(e) => {
                    let dead = self
                        .dead_letters
                        .iter()
                        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                        .filter(|v| v["key"].as_str() == Some(key.as_str()))
                        .count();
                    bullet(
                        out,
                        &format!(
                            "invalid pattern: {} ({e}): {dead} of its events dead-lettered; no \
                             retry can make an invalid pattern valid, so each event is recorded \
                             in the dead-letter file with its reason and the stream goes on",
                            t.name
                        ),
                    );
                }
                Ok(_) => {}
            }
        }
        if !f.ignored.is_empty() {
            bullet(
                out,
                &format!(
                    "ignored: {}: nothing in them for HarfangLab",
                    and_list(&f.ignored)
                ),
            );
        }
    }

    /// `held` or `gone`: whether HarfangLab has the IOC rule at the end.
    fn state(&self, key: &IocKey) -> &'static str {
        if self.has_ioc(key).is_some() {
            "held"
        } else {
            "gone"
        }
    }

    /// The counters, with the words defined where they are used.
    fn summary(&self, out: &mut String) {
        let c = &self.counters;
        let handled = (c.applied + c.skipped + c.failed).max(1);
        let _ = writeln!(
            out,
            "\nSummary: {} events in {:.2} s over {} stream connection(s), up to event {}:",
            c.events,
            c.elapsed.as_secs_f64(),
            c.stream_connections,
            self.last_event_id
        );
        for (word, n, meaning) in [
            ("applied", c.applied, "done in HarfangLab".to_owned()),
            (
                "skipped",
                c.skipped,
                "deliberately not applied: an indicator (or observable) of a kind this connector \
                 does not handle; nothing sent, nothing failed"
                    .to_owned(),
            ),
            (
                "failed",
                c.failed,
                format!(
                    "cannot be applied, now or later (an invalid pattern, a 4xx from HarfangLab): \
                     recorded in the dead-letter file ({} lines) with the reason",
                    c.dead_letters
                ),
            ),
            (
                "ignored",
                c.ignored,
                "nothing in them for HarfangLab (other STIX objects, merges): not looked at"
                    .to_owned(),
            ),
            (
                "retries",
                c.retries,
                "HarfangLab calls repeated after a network error, a 429 or a 5xx".to_owned(),
            ),
        ] {
            wrapped(out, &format!("  {word:<8} {n:>5}  "), &meaning);
        }
        wrapped(
            out,
            "",
            &format!(
                "HarfangLab now holds {} IOC rules, {} Sigma rules and {} Yara files, after {} \
                 requests ({:.2} per handled event).",
                self.iocs.len(),
                self.sigma.len(),
                self.yara.len(),
                c.harfanglab_total,
                c.harfanglab_total as f64 / handled as f64
            ),
        );
    }

    /// The IOC list: the value column as wide as the widest value that has a holder cell, and a
    /// holder cell only where it says more than the value (an indicator named after its value).
    fn ioc_list(&self, out: &mut String) {
        let mut iocs: Vec<&IocRule> = self.iocs.iter().collect();
        iocs.sort_by(|a, b| (&a.ioc_type, &a.value).cmp(&(&b.ioc_type, &b.value)));
        let rows: Vec<(&IocRule, Option<String>)> = iocs
            .into_iter()
            .map(|r| {
                let names = self.holder_names(r);
                let says_more =
                    !matches!(names.as_slice(), [only] if only.eq_ignore_ascii_case(&r.value));
                (r, says_more.then(|| names.join(", ")))
            })
            .collect();
        let type_width = rows
            .iter()
            .map(|(r, _)| r.ioc_type.len())
            .max()
            .unwrap_or(4);
        let value_width = rows
            .iter()
            .filter(|(_, holders)| holders.is_some())
            .map(|(r, _)| r.value.len())
            .max()
            .unwrap_or(0)
            .max("value".len());
        let _ = writeln!(out, "\nHarfangLab IOC rules ({}):", rows.len());
        let _ = writeln!(
            out,
            "  {:type_width$}  {:value_width$}  held by (when not an indicator named after the value)",
            "type", "value"
        );
        for (r, holders) in &rows {
            let off = if r.enabled { "" } else { " (disabled)" };
            let line = match holders {
                Some(h) => format!(
                    "  {:type_width$}  {:value_width$}  {h}{off}",
                    r.ioc_type, r.value
                ),
                None => format!("  {:type_width$}  {}{off}", r.ioc_type, r.value),
            };
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }

    /// The human-readable report the `demo` command prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "harfanglab-intel demo: the real connector between simulated OpenCTI and HarfangLab \
             (HTTP on loopback).\n"
        );
        self.story(&mut out);
        self.summary(&mut out);
        self.ioc_list(&mut out);
        let width = self
            .sigma
            .iter()
            .chain(&self.yara)
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0);
        let _ = writeln!(out, "\nHarfangLab Sigma rules ({}):", self.sigma.len());
        let mut sigma = self.sigma.clone();
        sigma.sort_by(|a, b| a.name.cmp(&b.name));
        for r in &sigma {
            let off = if r.enabled { "" } else { " (disabled)" };
            let _ = writeln!(out, "  {:width$}  id {}{off}", r.name, r.id);
        }
        let _ = writeln!(out, "\nHarfangLab Yara files ({}):", self.yara.len());
        let mut yara = self.yara.clone();
        yara.sort_by(|a, b| a.name.cmp(&b.name));
        for r in &yara {
            let off = if r.enabled { "" } else { " (disabled)" };
            let _ = writeln!(
                out,
                "  {:width$}  rules {}{off}",
                r.name,
                r.rule_names.join(", ")
            );
        }
        let c = &self.counters;
        let _ = writeln!(out, "\nHarfangLab requests ({}):", c.harfanglab_total);
        for ((method, resource), n) in &c.harfanglab_requests {
            let _ = writeln!(out, "  {method:<6} {resource:<12} {n:>5}");
        }
        if !self.dead_letters.is_empty() {
            let _ = writeln!(out, "\nDead letters ({}):", self.dead_letters.len());
            for l in &self.dead_letters {
                let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
                let _ = writeln!(
                    out,
                    "  event {} indicator {}: {}",
                    v["event_id"].as_str().unwrap_or("?"),
                    v["key"]
                        .as_str()
                        .map(|k| self.names.get(k).map_or(k, String::as_str))
                        .unwrap_or("?"),
                    v["reason"].as_str().unwrap_or("?")
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_words_whole_and_indents_continuations() {
        let mut out = String::new();
        let text = "word ".repeat(60);
        wrapped(&mut out, "  - ", text.trim_end());
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.len() > 2, "{out}");
        assert!(lines.iter().all(|l| l.chars().count() <= WIDTH), "{out}");
        assert!(lines[0].starts_with("  - word"));
        assert!(
            lines[1..].iter().all(|l| l.starts_with("    word")),
            "{out}"
        );
        assert_eq!(out.split_whitespace().filter(|w| *w == "word").count(), 60);
        // A word longer than the width stays whole on its own line.
        let mut out = String::new();
        let long = "x".repeat(WIDTH + 5);
        wrapped(&mut out, "  ", &format!("a {long} b"));
        assert_eq!(out, format!("  a\n  {long}\n  b\n"));
    }

    #[test]
    fn lists_read_as_text() {
        let s = |v: &[&str]| and_list(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&[]), "");
        assert_eq!(s(&["a"]), "a");
        assert_eq!(s(&["a", "b"]), "a and b");
        assert_eq!(s(&["a", "b", "c"]), "a, b and c");
        let mut m = BTreeMap::new();
        m.insert("stix".to_owned(), 186);
        m.insert("sigma".to_owned(), 8);
        m.insert("snort".to_owned(), 1);
        assert_eq!(counts(&m), "186 stix, 8 sigma, 1 snort");
    }
}
