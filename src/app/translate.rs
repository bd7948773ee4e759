//! The `translate` command: the offline translation of an indicator file (JSON Lines or
//! pretty-printed documents, streamed), one JSON line out per indicator, in input order.

use super::AppError;
use crate::indicator_file::{IndicatorReader, InputItem};
use crate::translate::{Indicator, TranslateError, Translation};
use rayon::prelude::*;
use serde::Serialize;
use std::io::{self, BufRead, Write};
use std::path::Path;

/// The `translate` command: translate `file` (standard input for `None` or `-`) to `out`, log
/// the counts. `Err` when the input or output fails, or (`strict`) when any item failed
/// ([`AppError::Untranslated`]); all exit 1. A closed output pipe (`| head`) is
/// [`AppError::Output`] with a broken pipe, which exits 0.
pub fn translate_command(
    file: Option<&Path>,
    strict: bool,
    out: &mut dyn Write,
) -> Result<(), AppError> {
    let (name, input) = open_input(file)?;
    let s = translate(input, &name, out)?;
    log::info!("translated {} item(s), {} with an error", s.items, s.failed);
    if strict && s.failed > 0 {
        return Err(AppError::Untranslated {
            items: s.items,
            failed: s.failed,
        });
    }
    Ok(())
}

/// Counts of a `translate` run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TranslateSummary {
    /// Output lines written (one per indicator or bad input item).
    pub items: usize,
    /// Items whose `error` is set.
    pub failed: usize,
}

/// The input of `translate` and its name for messages: a file, or standard input for `None` /
/// `-`.
pub fn open_input(file: Option<&Path>) -> Result<(String, Box<dyn BufRead>), AppError> {
    match file {
        Some(p) if p != Path::new("-") => {
            let name = p.display().to_string();
            match std::fs::File::open(p) {
                Ok(f) => Ok((name, Box::new(io::BufReader::new(f)))),
                Err(source) => Err(AppError::Input { path: name, source }),
            }
        }
        _ => Ok((
            "standard input".to_owned(),
            Box::new(io::BufReader::new(io::stdin())),
        )),
    }
}

/// Items translated together, in parallel: what `translate` holds in memory at once (with the
/// lines of a multi-line document, which is read whole).
pub const TRANSLATE_BATCH: usize = 1024;

/// Translate every indicator of `input` (named `name` in messages) with
/// [`crate::translate::translate`] and write one JSON line per item to `out`, in input order.
pub fn translate(
    input: impl BufRead,
    name: &str,
    out: &mut dyn Write,
) -> Result<TranslateSummary, AppError> {
    translate_with(input, name, out, crate::translate::translate)
}

/// [`translate`] with the translation function given (tests use a fake one). The input is
/// streamed [`TRANSLATE_BATCH`] items at a time; each batch is written and flushed before the
/// next is read, so a closed output stops the run within one batch.
pub fn translate_with<F>(
    input: impl BufRead,
    name: &str,
    out: &mut dyn Write,
    f: F,
) -> Result<TranslateSummary, AppError>
where
    F: Fn(&Indicator) -> Result<Translation, TranslateError> + Sync,
{
    let mut reader = IndicatorReader::new(input);
    let mut summary = TranslateSummary::default();
    let mut batch = Vec::with_capacity(TRANSLATE_BATCH);
    let mut more = true;
    while more {
        batch.clear();
        while more && batch.len() < TRANSLATE_BATCH {
            more = reader
                .read_next(&mut batch)
                .map_err(|source| AppError::Input {
                    path: name.to_owned(),
                    source,
                })?;
        }
        // Translation is pure and CPU-bound: rayon keeps the output in input order.
        let results: Vec<Result<Translation, String>> = batch
            .par_iter()
            .map(|item| translate_item(item, &f))
            .collect();
        for (item, result) in batch.iter().zip(&results) {
            let line = output_line(item, result);
            serde_json::to_writer(&mut *out, &line).map_err(|e| AppError::Output(e.into()))?;
            out.write_all(b"\n").map_err(AppError::Output)?;
            summary.items += 1;
            if result.is_err() {
                summary.failed += 1;
            }
        }
        out.flush().map_err(AppError::Output)?;
    }
    Ok(summary)
}

fn translate_item<F>(item: &InputItem, f: &F) -> Result<Translation, String>
where
    F: Fn(&Indicator) -> Result<Translation, TranslateError>,
{
    let indicator = item.indicator.as_ref().map_err(Clone::clone)?;
    // A panic in translation is a bug, but it must cost one line, not the whole file.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(indicator))) {
        Ok(Ok(t)) => Ok(t),
        // A pattern type this connector does not handle is skipped, as `run` skips it.
        Ok(Err(e)) if e.is_unsupported() => Ok(Translation {
            skipped: vec![e.skipped_indicator(indicator)],
            ..Translation::default()
        }),
        Ok(Err(e)) => Err(format!("{}: {e}", item.position)),
        Err(_) => Err(format!(
            "{}: internal error: translation panicked",
            item.position
        )),
    }
}

/// One output line of `translate`.
#[derive(Serialize)]
struct OutputLine<'a> {
    /// The indicator's id, else its name (also when it could not be read); `null` when the
    /// input item names neither.
    indicator: Option<&'a str>,
    line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    object: Option<usize>,
    iocs: &'a [crate::translate::IocKey],
    sigma: Option<&'a crate::translate::SigmaSpec>,
    yara: Option<&'a crate::translate::YaraSpec>,
    skipped: &'a [crate::translate::Skipped],
    error: Option<&'a str>,
}

fn output_line<'a>(item: &'a InputItem, result: &'a Result<Translation, String>) -> OutputLine<'a> {
    let indicator = item.label.as_deref();
    match result {
        Ok(t) => OutputLine {
            indicator,
            line: item.position.line,
            object: item.position.object,
            iocs: &t.iocs,
            sigma: t.sigma.as_ref(),
            yara: t.yara.as_ref(),
            skipped: &t.skipped,
            error: None,
        },
        Err(e) => OutputLine {
            indicator,
            line: item.position.line,
            object: item.position.object,
            iocs: &[],
            sigma: None,
            yara: None,
            skipped: &[],
            error: Some(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::{IocKey, IocType, Skipped};
    use serde_json::Value;

    /// A stand-in for the real translation: one IOC from the pattern, errors on demand.
    fn fake(ind: &Indicator) -> Result<Translation, TranslateError> {
        match ind.pattern.as_str() {
            "bad" => Err(TranslateError::Pattern(
                crate::stix::parse_syntax("x").expect_err("`x` is not a pattern"),
            )),
            "boom" => panic!("fake translation bug"),
            p => Ok(Translation {
                iocs: vec![IocKey {
                    ioc_type: IocType::DomainName,
                    value: p.to_owned(),
                }],
                skipped: vec![Skipped {
                    path: "x:y".into(),
                    value: "v".into(),
                    reason: "r".into(),
                }],
                ..Translation::default()
            }),
        }
    }

    fn lines(input: &str) -> (TranslateSummary, Vec<Value>) {
        let mut out = Vec::new();
        let summary = translate_with(input.as_bytes(), "test input", &mut out, fake).unwrap();
        let text = String::from_utf8(out).unwrap();
        (
            summary,
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
        )
    }

    #[test]
    fn output_keeps_input_order_and_reports_errors_per_line() {
        let mut input = String::new();
        for i in 0..200 {
            input.push_str(&format!(
                "{{\"id\":\"id-{i}\",\"pattern\":\"d{i}.example\"}}\n"
            ));
        }
        input.push_str("{\"name\":\"bad one\",\"pattern\":\"bad\"}\nnot json\n{\"name\":\"n\",\"pattern\":\"boom\"}\n");
        let (summary, out) = lines(&input);
        assert_eq!(
            summary,
            TranslateSummary {
                items: 203,
                failed: 3
            }
        );
        for (i, v) in out.iter().take(200).enumerate() {
            assert_eq!(v["indicator"], format!("id-{i}"));
            assert_eq!(v["iocs"][0]["type"], "domain_name");
            assert_eq!(v["iocs"][0]["value"], format!("d{i}.example"));
            assert_eq!(v["skipped"][0]["reason"], "r");
            assert!(v["error"].is_null() && v["sigma"].is_null() && v["yara"].is_null());
        }
        assert_eq!(out[200]["indicator"], "bad one");
        assert_eq!(
            out[200]["error"],
            "line 201: invalid STIX pattern: at byte 0: expected `[` or `(`, found identifier `x`"
        );
        assert!(out[201]["indicator"].is_null());
        assert!(
            out[201]["error"]
                .as_str()
                .unwrap()
                .starts_with("line 202, column 2: invalid JSON")
        );
        assert_eq!(
            out[202]["error"],
            "line 203: internal error: translation panicked"
        );
        assert_eq!(out[202]["iocs"], Value::Array(vec![]));
    }
}
