//! Throughput of the STIX pattern engine over the ~9,000 real patterns of the corpus:
//! patterns parsed per second on one thread (`parse_pattern`, validator checks included), and
//! indicators translated per second with rayon on all cores. Each phase repeats for ≥ 2 s.
//! Run: `cargo bench --bench patterns`.

use harfanglab_intel::stix::parse_pattern;
use harfanglab_intel::{Indicator, translate};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::{Duration, Instant};

#[path = "../tests/support/corpora.rs"]
mod corpora;
use corpora::corpora_dir;

const MIN_RUN: Duration = Duration::from_secs(2);

fn main() {
    let path = corpora_dir()
        .join("stix-patterns")
        .join("real-patterns.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let patterns: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["pattern"].as_str().map(str::to_string))
        .collect();
    let bytes: usize = patterns.iter().map(String::len).sum();
    println!("{} real patterns, {bytes} bytes", patterns.len());

    // Single-threaded parsing.
    let start = Instant::now();
    let (mut parsed, mut rounds) = (0usize, 0usize);
    while start.elapsed() < MIN_RUN {
        for p in &patterns {
            if black_box(parse_pattern(black_box(p))).is_ok() {
                parsed += 1;
            }
        }
        rounds += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = rounds * patterns.len();
    println!(
        "parse_pattern, 1 thread: {total} patterns in {secs:.2} s = {:.0} patterns/s ({:.1} MB/s), {parsed} valid",
        total as f64 / secs,
        (rounds * bytes) as f64 / secs / 1e6
    );

    // Parallel translation of whole indicators.
    let indicators: Vec<Indicator> = patterns
        .iter()
        .enumerate()
        .map(|(i, p)| Indicator {
            id: format!("indicator-{i}"),
            name: format!("bench {i}"),
            pattern_type: "stix".into(),
            pattern: p.clone(),
            ..Indicator::default()
        })
        .collect();
    let start = Instant::now();
    let (mut iocs, mut rounds) = (0usize, 0usize);
    while start.elapsed() < MIN_RUN {
        iocs += indicators
            .par_iter()
            .map(|ind| translate(black_box(ind)).map_or(0, |t| t.iocs.len()))
            .sum::<usize>();
        rounds += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = rounds * indicators.len();
    println!(
        "translate, rayon on {} threads: {total} indicators in {secs:.2} s = {:.0} indicators/s ({iocs} IOCs)",
        rayon::current_num_threads(),
        total as f64 / secs
    );
}
