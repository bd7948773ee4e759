//! Translation over the ~9,000 real STIX patterns of the corpus: never fails or panics, and every
//! `=` comparison on a supported path is accounted for — it yields its IOC or a skipped entry —
//! while no IOC appears that no comparison explains. Prints counts by IOC type and skip reason.
//! Runs on the sample shipped in `tests/corpora/sample`, then on the full corpora when found.

use harfanglab_intel::stix::{ComparisonOp, Value, parse_syntax};
use harfanglab_intel::{Indicator, IocType, path_value_ioc, stix_iocs, translate};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::Path;

use crate::support::corpora::{full_corpora, read_jsonl, sample_dir};

#[test]
fn sample_real_patterns_translate_with_every_value_accounted_for() {
    real_patterns_translate_with_every_value_accounted_for(&sample_dir(), false);
}

#[test]
fn full_real_patterns_translate_with_every_value_accounted_for() {
    if let Some(dir) = full_corpora(
        "translate_real_patterns::full_real_patterns_translate_with_every_value_accounted_for",
    ) {
        real_patterns_translate_with_every_value_accounted_for(&dir, true);
    }
}

#[test]
fn sample_non_stix_pattern_types_are_dispatched() {
    non_stix_pattern_types_are_dispatched(&sample_dir());
}

#[test]
fn full_non_stix_pattern_types_are_dispatched() {
    if let Some(dir) =
        full_corpora("translate_real_patterns::full_non_stix_pattern_types_are_dispatched")
    {
        non_stix_pattern_types_are_dispatched(&dir);
    }
}

fn real_patterns_translate_with_every_value_accounted_for(dir: &Path, full: bool) {
    let rows = read_jsonl::<Json>(dir, "stix-patterns/real-patterns.jsonl");
    let minimum = if full { 8000 } else { 20 };
    assert!(
        rows.len() > minimum,
        "corpus unexpectedly small: {}",
        rows.len()
    );
    let mut by_type: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let (mut comparisons, mut exact_supported, mut skipped_total) = (0, 0, 0);
    let mut problems = Vec::new();

    for row in &rows {
        let pattern = row["pattern"].as_str().expect("pattern");
        let indicator = Indicator {
            id: "indicator--test".into(),
            name: "test".into(),
            pattern_type: "stix".into(),
            pattern: pattern.into(),
            ..Indicator::default()
        };
        let t = match translate(&indicator) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{pattern}: {e}"));
                continue;
            }
        };
        let (iocs, skipped) = stix_iocs(pattern).expect("stix_iocs agrees with translate");
        assert_eq!((&iocs, &skipped), (&t.iocs, &t.skipped), "{pattern}");
        assert!(
            t.iocs.windows(2).all(|w| w[0] < w[1]),
            "not sorted/unique: {pattern}"
        );

        let parsed = parse_syntax(pattern).expect("translated patterns parse");
        let mut explained = vec![false; t.iocs.len()];
        for ctx in parsed.comparisons() {
            comparisons += 1;
            let c = ctx.comparison;
            let path = c.path.to_string();
            let values: Vec<String> = match &c.value {
                Value::Literal(l) => vec![l.text().into_owned()],
                Value::Set(items) => items.iter().map(|l| l.text().into_owned()).collect(),
                Value::None => vec![String::new()],
            };
            for v in &values {
                let mapped = path_value_ioc(&c.path, v);
                if let Some(Ok(key)) = &mapped {
                    for (i, k) in t.iocs.iter().enumerate() {
                        explained[i] |= k == key;
                    }
                }
                let positive_eq = c.op == ComparisonOp::Eq && !c.negated;
                if !positive_eq || mapped.is_none() {
                    continue;
                }
                exact_supported += 1;
                let emitted = matches!(&mapped, Some(Ok(k)) if t.iocs.contains(k));
                let recorded = t.skipped.iter().any(|s| s.path == path && &s.value == v);
                if !emitted && !recorded {
                    problems.push(format!(
                        "{pattern}: `{path} = {v}` neither emitted nor skipped"
                    ));
                }
            }
        }
        if let Some(i) = explained.iter().position(|e| !e) {
            problems.push(format!(
                "{pattern}: IOC {:?} explained by no comparison",
                t.iocs[i]
            ));
        }
        for k in &t.iocs {
            *by_type.entry(k.ioc_type.as_str()).or_default() += 1;
        }
        skipped_total += t.skipped.len();
        for s in &t.skipped {
            // Group reasons by their wording, not the values inside them.
            let head: String = s
                .reason
                .split(&[':', '('][..])
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            *reasons.entry(head).or_default() += 1;
        }
    }

    println!(
        "translate over {} real patterns: {comparisons} comparisons, {exact_supported} `=` on supported paths, \
         {} IOCs {by_type:?}, {skipped_total} skipped",
        rows.len(),
        by_type.values().sum::<usize>()
    );
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    for (reason, n) in reasons.iter().take(12) {
        println!("  skipped {n:>5}: {reason}");
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The corpus is dominated by hashes, domains, URLs and IPs: most values must come through.
    let (hashes, domains) = if full { (4000, 1500) } else { (5, 1) };
    assert!(by_type.get(IocType::Hash.as_str()).copied().unwrap_or(0) > hashes);
    assert!(
        by_type
            .get(IocType::DomainName.as_str())
            .copied()
            .unwrap_or(0)
            > domains
    );
    assert!(
        skipped_total > 0,
        "no comparison was skipped: the skip paths did not run"
    );
}

fn non_stix_pattern_types_are_dispatched(dir: &Path) {
    let rows = read_jsonl::<Json>(dir, "stix-patterns/non-stix-indicator-patterns.jsonl");
    let mut unsupported = 0;
    for row in &rows {
        let pattern_type = row["pattern_type"].as_str().expect("pattern_type");
        // sigma and yara go to the rules module, implemented on another branch.
        if matches!(pattern_type, "sigma" | "yara") {
            continue;
        }
        let indicator = Indicator {
            pattern_type: pattern_type.into(),
            pattern: row["pattern"].as_str().expect("pattern").into(),
            ..Indicator::default()
        };
        let err = translate(&indicator).expect_err(pattern_type);
        assert!(err.is_unsupported(), "{pattern_type}: {err}");
        unsupported += 1;
    }
    println!("non-stix: {unsupported} indicators of unsupported types recorded as skipped");
    assert!(unsupported >= 5);
}
