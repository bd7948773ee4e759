//! YARA conformance: `parse_yara` against the libyara / YARA-X oracle over signature-base and
//! Yara-Rules (`shared/corpora/yara/oracle-expected.jsonl`, one row per file, each compiled alone).
//!
//! - Where libyara compiles a file, we accept it with the same rule names in the same order,
//!   except the files in [`DELIBERATE_DIFFERENCES`].
//! - Where libyara rejects a file, we reject it too, unless its error is one of the semantic
//!   kinds in [`SEMANTIC_ERRORS`] that we cannot check without HarfangLab's module definitions.
//!
//! - The oracle's failures are all semantic, so syntax rejection is also exercised on a sample of
//!   accepted files with their last `}` removed.
//!
//! Each file is parsed once (plus the sample); a summary is printed (`-- --nocapture`). Runs on
//! the sample shipped in `tests/corpora/sample`, then on the full corpora when they are found.

use harfanglab_intel::parse_yara;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

use crate::support::corpora::{full_corpora, read_jsonl, sample_dir};

/// Files libyara compiles that we reject on purpose: `(file, reason)`.
const DELIBERATE_DIFFERENCES: &[(&str, &str)] = &[
    // Index files: libyara resolves `include` from the corpus directory; HarfangLab gets one
    // file with nothing to resolve it against, so we reject `include` with a clear error.
    ("Yara-Rules/antidebug_antivm_index.yar", INCLUDE),
    ("Yara-Rules/capabilities_index.yar", INCLUDE),
    ("Yara-Rules/crypto_index.yar", INCLUDE),
    ("Yara-Rules/cve_rules_index.yar", INCLUDE),
    ("Yara-Rules/email_index.yar", INCLUDE),
    ("Yara-Rules/exploit_kits_index.yar", INCLUDE),
    ("Yara-Rules/maldocs_index.yar", INCLUDE),
    ("Yara-Rules/packers_index.yar", INCLUDE),
    ("Yara-Rules/webshells_index.yar", INCLUDE),
    // Index files that libyara rejects too (an included file uses a cuckoo field): we reject
    // them for the `include`.
    ("Yara-Rules/index.yar", INCLUDE),
    ("Yara-Rules/index_w_mobile.yar", INCLUDE),
    ("Yara-Rules/malware_index.yar", INCLUDE),
    // Files without a single rule (comments, or imports only): valid YARA, but nothing for
    // HarfangLab to run, and HarfangLab lists a YaraFile by its rule names.
    ("Yara-Rules/mobile_malware_index.yar", NO_RULE),
    ("Yara-Rules/utils/virustotal.yar", NO_RULE),
    ("signature-base/yara/apt_flame2_orchestrator.yar", NO_RULE),
    ("signature-base/yara/gen_faked_versions.yar", NO_RULE),
    ("signature-base/yara/gen_regsrv32_issue.yar", NO_RULE),
    ("signature-base/yara/gen_thumbs_cloaking.yar", NO_RULE),
];

const INCLUDE: &str = "`include` cannot be resolved for a single file sent to HarfangLab";
const NO_RULE: &str = "no rule in the file";

/// libyara errors we do not reproduce: `(error text, we_reject, reason)`. `we_reject` says what
/// we do with such files; it is asserted.
const SEMANTIC_ERRORS: &[(&str, bool, &str)] = &[
    (
        "invalid field name",
        false,
        "module field names (androguard, cuckoo) depend on the modules the engine has",
    ),
    (
        "unknown module",
        false,
        "the module list depends on the engine (the oracle's libyara lacks cuckoo, androguard)",
    ),
    (
        "undefined identifier",
        true,
        "a bare identifier must be a rule defined earlier in the same file: checked",
    ),
];

#[derive(Deserialize)]
struct OracleRow {
    file: String,
    compiles: bool,
    error: Option<String>,
    /// `null` when libyara does not compile the file.
    rule_names: Option<Vec<String>>,
    yara_x: YaraX,
}

#[derive(Deserialize)]
struct YaraX {
    compiles: bool,
}

/// The [`SEMANTIC_ERRORS`] entry matching a libyara error message, if any.
fn semantic_kind(error: &str) -> Option<&'static (&'static str, bool, &'static str)> {
    SEMANTIC_ERRORS
        .iter()
        .find(|(text, _, _)| error.contains(text))
}

#[test]
fn yara_sample_matches_libyara_oracle() {
    yara_corpus_matches_libyara_oracle(&sample_dir(), false);
}

#[test]
fn yara_full_corpus_matches_libyara_oracle() {
    if let Some(dir) = full_corpora("yara_conformance::yara_full_corpus_matches_libyara_oracle") {
        yara_corpus_matches_libyara_oracle(&dir, true);
    }
}

fn yara_corpus_matches_libyara_oracle(corpora: &Path, full: bool) {
    let yara_dir = corpora.join("yara");
    let rows: Vec<OracleRow> = read_jsonl(corpora, "yara/oracle-expected.jsonl");
    let minimum = if full { 1000 } else { 10 };
    assert!(rows.len() > minimum, "oracle has only {} rows", rows.len());

    let deliberate: BTreeMap<&str, &str> = DELIBERATE_DIFFERENCES.iter().copied().collect();
    let mut failures = Vec::new();
    let mut same_names = 0;
    let mut rules_seen = 0;
    let mut deliberate_seen = 0;
    let mut rejected_like_libyara = 0;
    let mut semantic: BTreeMap<&str, (usize, usize)> = BTreeMap::new(); // kind -> (accepted, rejected)
    let mut yara_x_only_rejects = Vec::new();
    let mut truncated = 0;

    for row in &rows {
        let path = yara_dir.join(&row.file);
        let content = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let result = parse_yara(&content);

        if let Some(reason) = deliberate.get(row.file.as_str()) {
            deliberate_seen += 1;
            if !row.compiles {
                // Index files including a file libyara rejects: we reject for our own reason.
                assert!(result.is_err(), "{}: {reason}, yet accepted", row.file);
                continue;
            }
            match &result {
                Err(e) if (*reason == INCLUDE) == e.message.contains("include") => {}
                other => failures.push(format!(
                    "{}: expected a rejection for {reason:?}, got {other:?}",
                    row.file
                )),
            }
            continue;
        }

        if row.compiles {
            match &result {
                Ok(meta) => {
                    rules_seen += meta.rule_names.len();
                    if Some(&meta.rule_names) == row.rule_names.as_ref() {
                        same_names += 1;
                    } else {
                        failures.push(format!(
                            "{}: rule names differ: ours {:?} libyara {:?}",
                            row.file, meta.rule_names, row.rule_names
                        ));
                    }
                    if !row.yara_x.compiles {
                        yara_x_only_rejects.push(row.file.as_str());
                    }
                    // The oracle has no syntax errors (its failures are all module/identifier
                    // errors), so make some: the 1st, 21st, 41st, ... file without its last `}`
                    // must fail (skipped when that `}` sits in a trailing comment).
                    if same_names % 20 == 1
                        && let Some(last_brace) = content.rfind('}')
                        && !content[last_brace..].contains("*/")
                    {
                        truncated += 1;
                        let broken =
                            format!("{}{}", &content[..last_brace], &content[last_brace + 1..]);
                        match parse_yara(&broken) {
                            Err(e) if e.line.is_some() => {}
                            other => failures.push(format!(
                                "{}: accepted or unpositioned without its last `}}`: {other:?}",
                                row.file
                            )),
                        }
                    }
                }
                Err(e) => failures.push(format!("{}: libyara compiles, we reject: {e}", row.file)),
            }
            continue;
        }

        let error = row.error.as_deref().unwrap_or("");
        match (semantic_kind(error), &result) {
            (None, Err(_)) => rejected_like_libyara += 1,
            (None, Ok(_)) => failures.push(format!(
                "{}: libyara reports a syntax-level error we miss: {error}",
                row.file
            )),
            (Some(&(kind, we_reject, _)), result) => {
                let entry = semantic.entry(kind).or_default();
                if result.is_err() {
                    entry.1 += 1;
                } else {
                    entry.0 += 1;
                }
                if result.is_err() != we_reject {
                    failures.push(format!(
                        "{}: libyara `{kind}`: expected reject={we_reject}, got {result:?}",
                        row.file
                    ));
                }
            }
        }
    }

    println!("YARA conformance over {} files:", rows.len());
    println!("  libyara compiles, same {rules_seen} rule names in order: {same_names} files");
    println!(
        "    of which YARA-X rejects (regex/type strictness, not syntax): {}",
        yara_x_only_rejects.len()
    );
    println!("  libyara rejects for a non-module reason, rejected too: {rejected_like_libyara}");
    println!("  accepted files made invalid by removing the last `}}`, rejected: {truncated}");
    for (kind, (accepted, rejected)) in &semantic {
        println!("  libyara `{kind}`: we accept {accepted}, we reject {rejected}");
    }
    println!("  deliberate differences (include / no rule): {deliberate_seen}");
    println!("  unexpected differences: {}", failures.len());
    for line in failures.iter().take(30) {
        println!("    {line}");
    }

    if full {
        assert_eq!(
            deliberate_seen,
            DELIBERATE_DIFFERENCES.len(),
            "every listed deliberate difference must exist in the oracle"
        );
    } else {
        assert!(
            same_names > 0 && truncated > 0 && deliberate_seen > 0,
            "the sample must exercise accepted, truncated and deliberately rejected files"
        );
    }
    assert!(
        failures.is_empty(),
        "{} unexpected differences",
        failures.len()
    );
}
