//! Conformance of `stix::parse_pattern` with the OASIS reference validator (stix2-patterns 2.1.2).
//!
//! Reads `stix-patterns/validator-cases.jsonl`, `real-patterns.jsonl` and the oracle rows in
//! `oracle-expected.jsonl` (validator cases first, then real patterns, same order). For every
//! STIX 2.1 case we must agree on `valid` (validator) and `parse_ok` (grammar only). For every
//! valid pattern we must extract the same comparisons — object type, path steps, operator and
//! decoded value — compared **in the oracle's order** (grouped by object type in order of first
//! appearance, pattern order within a type), plus the same observation operators and qualifiers.

use harfanglab_intel::stix::{
    ComparisonOp, Literal, PathStep, Pattern, Value, parse_pattern, parse_syntax,
};
use serde_json::{Value as Json, json};
use std::collections::BTreeSet;
use std::path::Path;

use crate::support::corpora::{full_corpora, read_jsonl, sample_dir};

/// Cases where we knowingly differ from the oracle: (pattern, reason). Empty: we agree on all.
const DELIBERATE_DIFFERENCES: &[(&str, &str)] = &[];

fn literal_json(l: &Literal<'_>) -> Json {
    Json::String(l.text().into_owned())
}

/// Our comparisons in the oracle's shape and order.
fn our_comparisons(p: &Pattern<'_>) -> Vec<Json> {
    let mut rows: Vec<(String, Json)> = Vec::new();
    for ctx in p.comparisons() {
        let c = ctx.comparison;
        if c.op == ComparisonOp::Exists {
            continue; // the inspector does not list EXISTS (none in the corpus)
        }
        let path: Vec<Json> = c
            .path
            .steps
            .iter()
            .map(|s| match s {
                PathStep::Key(k) => json!(k),
                PathStep::Index(Some(n)) => json!(n),
                PathStep::Index(None) => json!(null),
                PathStep::AnyIndex => json!("[*]"),
            })
            .collect();
        let op = format!("{}{}", if c.negated { "NOT " } else { "" }, c.op.as_str());
        let value = match &c.value {
            Value::Literal(l) => literal_json(l),
            Value::Set(items) => Json::Array(items.iter().map(literal_json).collect()),
            Value::None => Json::Null,
        };
        rows.push((
            c.path.object_type.to_string(),
            json!({"object_type": c.path.object_type, "path": path, "object_path": c.path.to_string(), "operator": op, "value": value}),
        ));
    }
    // Group by object type in order of first appearance, keeping pattern order inside a group.
    let mut types: Vec<String> = Vec::new();
    for (t, _) in &rows {
        if !types.contains(t) {
            types.push(t.clone());
        }
    }
    let mut out = Vec::new();
    for t in &types {
        out.extend(
            rows.iter()
                .filter(|(rt, _)| rt == t)
                .map(|(_, j)| j.clone()),
        );
    }
    out
}

fn oracle_comparisons(row: &Json) -> Vec<Json> {
    row["comparisons"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    // The inspector keeps the operator token as written (`==`, `<>`).
                    let op = c["operator"].as_str().unwrap_or("").replace("==", "=").replace("<>", "!=");
                    json!({"object_type": c["object_type"], "path": c["path"], "object_path": c["object_path"], "operator": op, "value": c["value"]})
                })
                .collect()
        })
        .unwrap_or_default()
}

fn sorted_strings(v: &Json) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Column of the first "Error found at line 1:N" in the oracle's errors (ANTLR counts characters;
/// the cases are ASCII so that is our byte offset). The synthetic "missing square brackets" line
/// is skipped when a real syntax error follows it.
fn oracle_error_column(row: &Json) -> Option<usize> {
    let errors = row["errors"].as_array()?;
    let mut columns = errors.iter().filter_map(|e| {
        let e = e.as_str()?;
        let rest = e.strip_prefix("FAIL: Error found at line 1:")?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        Some((
            digits.parse::<usize>().ok()?,
            e.contains("missing square brackets"),
        ))
    });
    let first = columns.next()?;
    match (first, columns.next()) {
        ((_, true), Some((col, _))) => Some(col),
        ((col, _), _) => Some(col),
    }
}

#[test]
fn sample_agrees_with_reference_validator() {
    agrees_with_reference_validator(&sample_dir(), "sample");
}

#[test]
fn full_corpus_agrees_with_reference_validator() {
    if let Some(dir) = full_corpora("stix_conformance::full_corpus_agrees_with_reference_validator")
    {
        agrees_with_reference_validator(&dir, "full corpus");
    }
}

fn agrees_with_reference_validator(dir: &Path, which: &str) {
    let cases = read_jsonl::<Json>(dir, "stix-patterns/validator-cases.jsonl");
    let reals = read_jsonl::<Json>(dir, "stix-patterns/real-patterns.jsonl");
    let oracle = read_jsonl::<Json>(dir, "stix-patterns/oracle-expected.jsonl");
    assert_eq!(
        cases.len() + reals.len(),
        oracle.len(),
        "oracle rows = cases + real patterns"
    );
    let (min_cases, min_reals) = if which == "sample" {
        (20, 20)
    } else {
        (200, 8000)
    };
    assert!(
        cases.len() > min_cases && reals.len() > min_reals,
        "{which} unexpectedly small"
    );

    let mut failures = Vec::new();
    let (mut checked, mut valid_agree, mut syntax_agree, mut cmp_agree, mut cmp_checked) =
        (0, 0, 0, 0, 0);
    let mut comparisons_seen = 0;
    let (mut error_positions, mut position_agree) = (0, 0);
    for (input, row) in cases.iter().chain(reals.iter()).zip(&oracle) {
        let pattern = input["pattern"].as_str().expect("pattern");
        assert_eq!(
            row["pattern"].as_str(),
            Some(pattern),
            "oracle row out of order"
        );
        let version = input["stix_version"].as_str().unwrap_or("2.1");
        if version != "2.1" {
            continue; // the connector speaks STIX 2.1; the 2.0 grammar differs (START/STOP strings)
        }
        if DELIBERATE_DIFFERENCES.iter().any(|(p, _)| *p == pattern) {
            continue;
        }
        checked += 1;
        let ours = parse_pattern(pattern);
        let oracle_valid = row["valid"].as_bool().expect("valid");
        if ours.is_ok() == oracle_valid {
            valid_agree += 1;
        } else {
            failures.push(format!(
                "valid: ours {:?} oracle {oracle_valid} {:?} for {pattern}",
                ours.as_ref().err().map(|e| e.to_string()),
                row["errors"]
            ));
        }
        // Where the validator reports a syntax error, we must point at the same place.
        if let (Err(e), Some(column)) = (&ours, oracle_error_column(row)) {
            error_positions += 1;
            if e.offset == column {
                position_agree += 1;
            } else {
                failures.push(format!(
                    "error offset: ours {e} oracle {:?} for {pattern}",
                    row["errors"]
                ));
            }
        }
        let syntax_ok = parse_syntax(pattern).is_ok();
        if syntax_ok == row["parse_ok"].as_bool().expect("parse_ok") {
            syntax_agree += 1;
        } else {
            failures.push(format!("parse_ok: ours {syntax_ok} for {pattern}"));
        }
        let (Ok(p), true) = (&ours, oracle_valid) else {
            continue;
        };
        cmp_checked += 1;
        let mine = our_comparisons(p);
        let theirs = oracle_comparisons(row);
        comparisons_seen += theirs.len();
        let ops: Vec<String> = p
            .observation_ops()
            .iter()
            .map(|o| o.as_str().to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let quals: Vec<String> = p
            .qualifiers()
            .iter()
            .map(|q| q.to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if mine == theirs
            && ops == sorted_strings(&row["observation_ops"])
            && quals == sorted_strings(&row["qualifiers"])
        {
            cmp_agree += 1;
        } else {
            failures.push(format!(
                "extraction differs for {pattern}\n  ours:   {mine:?} {ops:?} {quals:?}\n  oracle: {theirs:?} {} {}",
                row["observation_ops"], row["qualifiers"]
            ));
        }
    }
    println!(
        "stix conformance ({which}): {checked} STIX 2.1 patterns checked; valid agrees {valid_agree}/{checked}, \
         parse_ok agrees {syntax_agree}/{checked}; syntax error offset agrees \
         {position_agree}/{error_positions}; comparisons agree on {cmp_agree}/{cmp_checked} valid \
         patterns ({comparisons_seen} comparisons); {} deliberate differences",
        DELIBERATE_DIFFERENCES.len()
    );
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every path of the comparison ran: invalid patterns with a position, valid ones extracted.
    assert!(
        error_positions > 0 && cmp_checked > 0 && comparisons_seen > cmp_checked,
        "{which}: too few kinds of case to exercise every check"
    );
}
