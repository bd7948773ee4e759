//! Prometheus text exposition format 0.0.4: names, label escaping, sample values.
//!
//! Owns the byte-level format only (what a scraper parses); which families exist and what they
//! mean lives in `metrics/mod.rs`. Reference: <https://prometheus.io/docs/instrumenting/exposition_formats/>.

use std::fmt::Write as _;

/// `Content-Type` of a scrape answer in this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The kind written on a family's `# TYPE` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
}

/// A sample value: counters are integers, gauges may be fractional.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Value {
    Int(u64),
    Float(f64),
}

/// Accumulates one scrape's text.
#[derive(Default)]
pub(crate) struct Writer {
    out: String,
}

impl Writer {
    /// Writes the `# HELP` and `# TYPE` lines that open a family. Each family must be opened once,
    /// before its samples (the format forbids interleaving families).
    pub(crate) fn family(&mut self, name: &str, help: &str, kind: Kind) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// Writes one sample line `name{k="v",…} value`.
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Value) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label_value(val));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        match value {
            Value::Int(v) => {
                let _ = write!(self.out, "{v}");
            }
            Value::Float(v) => self.out.push_str(&format_float(v)),
        }
        self.out.push('\n');
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// Label values escape backslash, double quote and line feed.
pub(crate) fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes backslash and line feed (quotes stay as they are).
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Go's `ParseFloat` spellings for the special values; Rust's `inf` would not parse.
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

/// Turns a user-supplied namespace or subsystem into a valid metric-name fragment: characters
/// outside `[a-zA-Z0-9_:]` become `_`, and a leading digit gets a `_` in front.
pub(crate) fn sanitize_name_part(part: &str) -> String {
    let mut out: String = part
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label_value("l1\nl2"), r"l1\nl2");
        assert_eq!(escape_label_value("plain é"), "plain é");
    }

    #[test]
    fn family_and_samples_render_in_order() {
        let mut w = Writer::default();
        w.family("x_total", "Things\nseen \\ here", Kind::Counter);
        w.sample("x_total", &[("a", "1"), ("b", "q\"")], Value::Int(3));
        w.sample("x_total", &[], Value::Float(0.5));
        w.sample("x_total", &[], Value::Float(f64::INFINITY));
        w.sample("x_total", &[], Value::Float(1718445605.0));
        assert_eq!(
            w.finish(),
            "# HELP x_total Things\\nseen \\\\ here\n# TYPE x_total counter\n\
             x_total{a=\"1\",b=\"q\\\"\"} 3\nx_total 0.5\nx_total +Inf\nx_total 1718445605\n"
        );
    }

    #[test]
    fn name_parts_are_sanitized() {
        assert_eq!(sanitize_name_part("opencti"), "opencti");
        assert_eq!(sanitize_name_part("my-ns.x"), "my_ns_x");
        assert_eq!(sanitize_name_part("9lives"), "_9lives");
    }
}
