//! Sigma conformance: `parse_sigma` against the pySigma oracle over the SigmaHQ corpus
//! (`shared/corpora/sigma/oracle-expected.jsonl`, one row per rule file).
//!
//! Every file pySigma accepts must be accepted with the same title, id, level and status; every
//! file pySigma rejects must be rejected. The only exceptions are listed, with their reason, in
//! [`DELIBERATE_DIFFERENCES`]. A summary of verdicts and rejection reasons is printed
//! (`cargo test --test tests sigma_conformance:: -- --nocapture`). Runs on the sample shipped in
//! `tests/corpora/sample`, then on the full corpora when they are found.

use harfanglab_intel::parse_sigma;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

use crate::support::corpora::{full_corpora, read_jsonl, sample_dir};

/// Files where we knowingly disagree with pySigma: `(file, we accept?, reason)`.
const DELIBERATE_DIFFERENCES: &[(&str, bool, &str)] = &[
    (
        "unsupported/windows/sysmon_process_reimaging.yml",
        false,
        "multi-document `action: global` rule: pySigma expands it into 2 rules sharing one id; \
         HarfangLab holds one rule per object, identified by that id",
    ),
    (
        "unsupported/windows/win_remote_service.yml",
        false,
        "multi-document `action: global` rule: pySigma expands it into 2 rules sharing one id; \
         HarfangLab holds one rule per object, identified by that id",
    ),
];

#[derive(Deserialize)]
struct OracleRow {
    file: String,
    yaml_ok: bool,
    documents: Vec<serde_json::Value>,
    pysigma_ok: bool,
    pysigma_rules: Vec<PySigmaRule>,
}

#[derive(Deserialize)]
struct PySigmaRule {
    title: Option<String>,
    id: Option<String>,
    level: Option<String>,
    status: Option<String>,
}

fn count_yml_files(dir: &Path) -> usize {
    let mut count = 0;
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            count += count_yml_files(&path);
        } else if path.extension().is_some_and(|ext| ext == "yml") {
            count += 1;
        }
    }
    count
}

/// The first words of a rejection message, to group rejections in the summary.
fn reason_class(message: &str) -> String {
    let cut = message
        .find(['"', '`', '('])
        .map_or(message.len(), |quote| {
            // keep `invalid `condition`: the pipe syntax` whole, cut before per-file details
            if message[..quote].ends_with("invalid ") {
                message.len()
            } else {
                quote
            }
        });
    message[..cut]
        .chars()
        .take(48)
        .collect::<String>()
        .trim()
        .to_string()
}

#[test]
fn sigma_sample_matches_pysigma_oracle() {
    sigma_corpus_matches_pysigma_oracle(&sample_dir(), false);
}

#[test]
fn sigma_full_corpus_matches_pysigma_oracle() {
    if let Some(dir) = full_corpora("sigma_conformance::sigma_full_corpus_matches_pysigma_oracle") {
        sigma_corpus_matches_pysigma_oracle(&dir, true);
    }
}

fn sigma_corpus_matches_pysigma_oracle(corpora: &Path, full: bool) {
    let sigma_dir = corpora.join("sigma");
    let rows: Vec<OracleRow> = read_jsonl(corpora, "sigma/oracle-expected.jsonl");
    assert_eq!(
        rows.len(),
        count_yml_files(&sigma_dir),
        "the oracle must cover every .yml file of the corpus"
    );

    let deliberate: BTreeMap<&str, (bool, &str)> = DELIBERATE_DIFFERENCES
        .iter()
        .map(|&(file, accept, reason)| (file, (accept, reason)))
        .collect();
    let mut failures = Vec::new();
    let mut accepted = 0;
    let mut rejected_like_pysigma: BTreeMap<String, usize> = BTreeMap::new();
    let mut deliberate_seen = Vec::new();

    for row in &rows {
        let path = sigma_dir.join(&row.file);
        let content = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let result = parse_sigma(&content);

        if let Some(&(accept, reason)) = deliberate.get(row.file.as_str()) {
            assert_ne!(
                accept, row.pysigma_ok,
                "{}: listed as a deliberate difference but pySigma agrees",
                row.file
            );
            if result.is_ok() != accept {
                failures.push(format!(
                    "{}: deliberate difference not honoured (expected accept={accept}): {result:?}",
                    row.file
                ));
            }
            deliberate_seen.push(format!("{} ({reason})", row.file));
            continue;
        }

        match (&result, row.pysigma_ok) {
            (Ok(meta), true) => {
                accepted += 1;
                let [expected] = row.pysigma_rules.as_slice() else {
                    failures.push(format!(
                        "{}: pySigma built {} rules from one file; list it as a deliberate \
                         difference",
                        row.file,
                        row.pysigma_rules.len()
                    ));
                    continue;
                };
                let ours = (
                    Some(meta.title.as_str()),
                    meta.id.as_deref(),
                    meta.level.as_deref(),
                    meta.status.as_deref(),
                );
                let theirs = (
                    expected.title.as_deref(),
                    expected.id.as_deref(),
                    expected.level.as_deref(),
                    expected.status.as_deref(),
                );
                if ours != theirs {
                    failures.push(format!(
                        "{}: (title, id, level, status) {ours:?} != pySigma {theirs:?}",
                        row.file
                    ));
                }
            }
            (Err(e), false) => {
                *rejected_like_pysigma
                    .entry(reason_class(&e.message))
                    .or_default() += 1;
            }
            (Err(e), true) => {
                failures.push(format!("{}: pySigma accepts, we reject: {e}", row.file))
            }
            (Ok(meta), false) => failures.push(format!(
                "{}: pySigma rejects, we accept: {meta:?}",
                row.file
            )),
        }
        assert!(
            row.yaml_ok || result.is_err(),
            "{}: invalid YAML accepted",
            row.file
        );
        assert!(!row.documents.is_empty() || result.is_err());
    }

    println!("Sigma conformance over {} files:", rows.len());
    println!("  accepted, same title/id/level/status as pySigma: {accepted}");
    println!(
        "  rejected like pySigma: {}",
        rejected_like_pysigma.values().sum::<usize>()
    );
    for (reason, count) in &rejected_like_pysigma {
        println!("    {count:4}  {reason}");
    }
    println!("  deliberate differences: {}", deliberate_seen.len());
    for line in &deliberate_seen {
        println!("    {line}");
    }
    println!("  unexpected differences: {}", failures.len());
    for line in failures.iter().take(30) {
        println!("    {line}");
    }

    if full {
        assert_eq!(
            deliberate_seen.len(),
            DELIBERATE_DIFFERENCES.len(),
            "every listed deliberate difference must exist in the corpus"
        );
    } else {
        assert!(
            accepted > 0 && !rejected_like_pysigma.is_empty(),
            "the sample must hold both accepted and rejected rules"
        );
    }
    assert!(
        failures.is_empty(),
        "{} unexpected differences",
        failures.len()
    );
}
