//! Throughput of rule validation over the real corpora: every SigmaHQ rule through
//! `parse_sigma` and every YARA file through `parse_yara`. Prints numbers; asserts nothing.
//!
//! `cargo bench --bench rules` (corpora found like the conformance tests: `HLI_CORPORA`, else a
//! `shared/corpora` beside an ancestor of the crate).

use harfanglab_intel::{parse_sigma, parse_yara};
use std::path::Path;
use std::time::{Duration, Instant};

#[path = "../tests/support/corpora.rs"]
mod corpora;
use corpora::corpora_dir;

const ROUNDS: usize = 5;

/// Every file named in an oracle, read into memory so that only parsing is timed.
fn load(dir: &Path) -> Vec<String> {
    let oracle = std::fs::read_to_string(dir.join("oracle-expected.jsonl")).expect("oracle");
    oracle
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).expect("oracle row");
            let file = row["file"].as_str().expect("file field");
            std::fs::read_to_string(dir.join(file)).expect("corpus file")
        })
        .collect()
}

/// Best of `ROUNDS` passes over `files`; returns (time, accepted count).
fn bench<T, E>(files: &[String], parse: impl Fn(&str) -> Result<T, E>) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut accepted = 0;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        accepted = files.iter().filter(|f| parse(f).is_ok()).count();
        best = best.min(start.elapsed());
    }
    (best, accepted)
}

fn report(name: &str, files: &[String], (time, accepted): (Duration, usize)) {
    let bytes: usize = files.iter().map(String::len).sum();
    let secs = time.as_secs_f64();
    println!(
        "{name:6} {:5} files {:6.2} MB  best of {ROUNDS}: {:8.1} ms  {:8.0} files/s  {:6.1} MB/s  \
         {:7.1} us/file  ({accepted} accepted)",
        files.len(),
        bytes as f64 / 1e6,
        secs * 1e3,
        files.len() as f64 / secs,
        bytes as f64 / 1e6 / secs,
        secs * 1e6 / files.len() as f64,
    );
}

fn main() {
    let corpora = corpora_dir();
    let sigma = load(&corpora.join("sigma"));
    let yara = load(&corpora.join("yara"));
    report("sigma", &sigma, bench(&sigma, parse_sigma));
    report("yara", &yara, bench(&yara, parse_yara));
}
