//! Update storms through the real binary (issue 16): simulated OpenCTI → `harfanglab-intel run`
//! (a child process) → simulated HarfangLab at 10 ms latency, both simulators in this process on
//! loopback.
//!
//! The stream: `HLI_STORM_INDICATORS` (default 100) indicators, each created and then updated 50
//! times in a row (description and score every time; the pattern changes A → B at update 20 and
//! B → C at update 40). Run twice: coalescing on (the default `HARFANGLAB_INTEL_COALESCE_MAX`)
//! and off (`HARFANGLAB_INTEL_COALESCE_MAX=1`). Printed per run: events, OpenCTI `indicator`
//! reads per event (the OpenCTI simulator's GraphQL log), HarfangLab requests and successful
//! writes per event (the HarfangLab simulator's counters, from the first write on), events/s
//! (from the first HarfangLab write until the connector's metrics count every event finished),
//! and a check of the final HarfangLab state: every indicator holds exactly its pattern C's IOC
//! enabled, and A's and B's are no longer enabled.
//!
//! Two streams: as fast as the simulator sends (the reads then mostly see the final state
//! already), and with the events 1 ms apart (the reads see the states in between, as against a
//! platform where the updates keep coming).
//!
//! Run with `cargo bench --bench storm`. `HLI_BENCH_BIN` runs another build of the connector.

use harfanglab_intel::sim::opencti::{self as octisim, OpenCtiSimConfig, ScenarioEvent};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command};

mod support;
use std::time::{Duration, Instant};
use support::{OCTI_EXT, connector, free_port, harfanglab_at, start, state_dir, with_metrics};

const UPDATES: u64 = 50;
const LATENCY: Duration = Duration::from_millis(10);
const WORKERS: usize = 16;

/// The IP of indicator `n`'s pattern version `v` (0 = A, 1 = B, 2 = C).
fn ip(n: u64, v: u64) -> String {
    format!("10.{}.{}.{}", (n >> 8) & 255, n & 255, v + 1)
}

fn pattern(n: u64, v: u64) -> String {
    format!("[ipv4-addr:value = '{}']", ip(n, v))
}

fn stix(n: u64, version: u64, k: u64) -> Value {
    json!({"id": format!("indicator--00000002-0000-4000-8000-{n:012x}"),
        "spec_version": "2.1", "type": "indicator", "name": format!("storm-{n}"),
        "description": format!("edit {k}"), "pattern": pattern(n, version),
        "pattern_type": "stix", "revoked": false,
        "extensions": {OCTI_EXT: {"id": format!("00000001-0000-4000-8000-{n:012x}"),
            "score": 50 + k % 40, "type": "Indicator"}}})
}

/// Pattern version after update `k` (0 = the create).
fn version(k: u64) -> u64 {
    match k {
        0..20 => 0,
        20..40 => 1,
        _ => 2,
    }
}

fn storm(n: u64) -> Vec<ScenarioEvent> {
    let mut out = vec![ScenarioEvent {
        event: "create".into(),
        data: json!({"version": "4", "type": "create", "scope": "external",
            "message": "creates an indicator", "origin": {}, "data": stix(n, 0, 0)}),
    }];
    for k in 1..=UPDATES {
        let (before, after) = (stix(n, version(k - 1), k - 1), stix(n, version(k), k));
        let mut patch = vec![json!({"op": "replace", "path": "/description",
            "value": after["description"]})];
        let mut reverse = vec![json!({"op": "replace", "path": "/description",
            "value": before["description"]})];
        if version(k) != version(k - 1) {
            patch.push(json!({"op": "replace", "path": "/pattern", "value": after["pattern"]}));
            reverse.push(json!({"op": "replace", "path": "/pattern", "value": before["pattern"]}));
        }
        out.push(ScenarioEvent {
            event: "update".into(),
            data: json!({"version": "4", "type": "update", "scope": "external",
                "message": "updates an indicator", "origin": {}, "data": after,
                "context": {"patch": patch, "reverse_patch": reverse}}),
        });
    }
    out
}

fn spawn(octi: &str, hl: &str, dir: &Path, coalesce_max: usize, metrics_port: u16) -> Child {
    start(
        with_metrics(&mut connector(octi, hl, dir), metrics_port)
            .env("HARFANGLAB_INTEL_WORKERS", WORKERS.to_string())
            .env("HARFANGLAB_INTEL_COALESCE_MAX", coalesce_max.to_string()),
    )
}

/// Events the connector finished (applied, skipped, dead-lettered), from its metrics.
fn finished(metrics: &str) -> u64 {
    let Ok(mut resp) = ureq::get(metrics).call() else {
        return 0;
    };
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("harfanglab_intel_events_total{") && !l.contains("retried"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

struct Run {
    events: u64,
    reads: u64,
    requests: u64,
    writes: u64,
    elapsed: Duration,
    /// Indicators whose final IOCs are not exactly their pattern C's.
    wrong: Vec<u64>,
}

fn run(indicators: u64, coalesce_max: usize, event_delay: Duration) -> Run {
    let scenario: Vec<ScenarioEvent> = (0..indicators).flat_map(storm).collect();
    let total = scenario.len() as u64;
    let mut octi = octisim::serve(
        "127.0.0.1:0",
        OpenCtiSimConfig {
            scenario,
            heartbeat: Duration::from_secs(1),
            ..OpenCtiSimConfig::default()
        },
    )
    .expect("opencti sim");
    octi.set_event_delay(event_delay);
    let hl = harfanglab_at(LATENCY);
    let dir = state_dir("storm");
    let port = free_port();
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let mut child = spawn(&octi.base_url(), hl.base_url(), &dir, coalesce_max, port);
    let wait_start = Instant::now();
    while hl.writes() == 0 && wait_start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (t0, r0) = (Instant::now(), hl.total_requests());
    while finished(&metrics) < total && t0.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = t0.elapsed();
    let events = finished(&metrics);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let reads = octi
        .graphql_requests()
        .iter()
        .filter(|b| {
            b["query"]
                .as_str()
                .is_some_and(|q| q.contains("indicator("))
        })
        .count() as u64;
    let enabled: BTreeSet<String> = hl
        .ioc_rules()
        .into_iter()
        .filter(|r| r.enabled)
        .map(|r| r.value)
        .collect();
    let wrong = (0..indicators)
        .filter(|n| {
            !enabled.contains(&ip(*n, 2))
                || enabled.contains(&ip(*n, 0))
                || enabled.contains(&ip(*n, 1))
        })
        .collect();
    let result = Run {
        events,
        reads,
        requests: hl.total_requests().saturating_sub(r0),
        writes: hl.writes(),
        elapsed,
        wrong,
    };
    hl.shutdown();
    octi.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn main() {
    let indicators: u64 = std::env::var("HLI_STORM_INDICATORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    println!(
        "update storms: {indicators} indicators, each created then updated {UPDATES} times in a row \
         (pattern A -> B -> C); HarfangLab latency {} ms, {WORKERS} workers",
        LATENCY.as_millis()
    );
    for delay in [Duration::ZERO, Duration::from_millis(1)] {
        println!();
        if delay.is_zero() {
            println!("stream as fast as it goes (reads mostly see the final state already):");
        } else {
            println!(
                "stream events {} ms apart (reads see the states in between):",
                delay.as_millis()
            );
        }
        println!(
            "| coalescing | events | OpenCTI reads/event | HL requests/event | HL writes/event | events/s | final state |"
        );
        println!("|---|---:|---:|---:|---:|---:|---|");
        for (label, max) in [("on (max 64)", 64usize), ("off (max 1)", 1)] {
            let r = run(indicators, max, delay);
            let per = |x: u64| x as f64 / r.events.max(1) as f64;
            let state = if r.wrong.is_empty() {
                "ok".to_owned()
            } else {
                format!(
                    "WRONG for {} indicators, e.g. {:?}",
                    r.wrong.len(),
                    &r.wrong[..r.wrong.len().min(5)]
                )
            };
            println!(
                "| {label} | {} | {:.3} | {:.3} | {:.3} | {:.0} | {state} |",
                r.events,
                per(r.reads),
                per(r.requests),
                per(r.writes),
                r.events as f64 / r.elapsed.as_secs_f64().max(1e-9),
            );
        }
    }
}
