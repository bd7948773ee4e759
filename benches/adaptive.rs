//! Adaptive concurrency (`HARFANGLAB_INTEL_WORKERS=auto`) against fixed 16 workers: the real
//! binary (a child process) between simulated OpenCTI and a simulated HarfangLab that has a
//! physical capacity (`sim::capacity`: `HLI_BENCH_CAPACITY` requests served at once, default 64,
//! as many again queued, then 429 with `Retry-After: 1`), at 10, 50 and 200 ms of HarfangLab
//! latency.
//!
//! Per cell: events/s (IOC creates the simulator received, from the first write), HarfangLab
//! requests per event, the share of the physical limit (events/s ÷ (capacity ÷ (requests per
//! event × latency))), the concurrency limit the connector settled on (the median of
//! `harfanglab_intel_concurrency_limit` over the second half of the cell, scraped from its
//! metrics endpoint four times a second), the 429s the simulator answered and the connector's
//! peak RSS (`VmHWM`). Diagnostics of the 429s: the highest limit and HarfangLab in-flight count
//! the scrapes saw, the simulator's longest queue (`capacity_peak_queue`; 429s start once it is
//! full) and the seconds into the cell (from the first write) of the scrapes that saw new 429s.
//! Each cell runs a stream of 20,000 new indicators until done or for
//! `HLI_BENCH_SECONDS` (default 20) seconds.
//!
//! Run with `cargo bench --bench adaptive`. `HLI_BENCH_CELLS=50:auto,50:16` runs only those
//! `latency_ms:workers` cells; `HLI_BENCH_BIN` runs another build of the connector.

use harfanglab_intel::sim::capacity::CapacityLimit;
use harfanglab_intel::sim::harfanglab::{self as hlsim, Faults, SimConfig};
use harfanglab_intel::sim::opencti::{self as octisim, OpenCtiSimConfig, ScenarioEvent};
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command};

mod support;
use std::time::{Duration, Instant};
use support::{
    OCTI_EXT, connector, env_or, free_port, metrics, sample, start, state_dir, vm_hwm_kb,
    with_metrics,
};

const BASE_MS: u64 = 1_718_445_600_000;
const EVENTS: u64 = 20_000;

fn indicator(n: u64) -> ScenarioEvent {
    let ip = format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
    let data = json!({"version": "4", "type": "create", "scope": "external",
        "message": "creates an indicator", "origin": {},
        "data": {"id": format!("indicator--00000002-0000-4000-8000-{n:012x}"),
            "spec_version": "2.1", "type": "indicator", "name": ip,
            "pattern": format!("[ipv4-addr:value = '{ip}']"),
            "pattern_type": "stix", "revoked": false,
            "extensions": {OCTI_EXT: {"id": format!("00000001-0000-4000-8000-{n:012x}"),
                "score": 70, "type": "Indicator"}}}});
    ScenarioEvent {
        event: "create".into(),
        data,
    }
}

/// `harfanglab_intel_concurrency_limit` and `harfanglab_intel_harfanglab_in_flight` from the
/// connector's metrics endpoint.
fn scrape_limit(port: u16) -> Option<(u64, u64)> {
    let text = metrics(port)?;
    Some((
        sample(&text, "harfanglab_intel_concurrency_limit")?,
        sample(&text, "harfanglab_intel_harfanglab_in_flight").unwrap_or(0),
    ))
}

fn spawn(octi: &str, hl: &str, dir: &Path, workers: &str, metrics_port: u16) -> Child {
    start(
        with_metrics(&mut connector(octi, hl, dir), metrics_port)
            .env("HARFANGLAB_INTEL_WORKERS", workers)
            .env("HARFANGLAB_INTEL_RECONCILE_INTERVAL", "0"),
    )
}

struct Cell {
    events: u64,
    per_sec: f64,
    requests_per_event: f64,
    /// Median limit over the second half of the cell.
    settled_limit: Option<u64>,
    throttled: u64,
    rss_kb: u64,
    /// The highest limit and in-flight count scraped.
    peak_limit: u64,
    peak_in_flight: u64,
    /// The simulator's longest capacity queue.
    peak_queue: usize,
    /// Seconds into the cell of the scrapes that saw new 429s (during the drain: "end").
    throttled_at: Vec<String>,
}

fn run(latency: Duration, workers: &str, capacity: usize, budget: Duration) -> Cell {
    let mut octi = octisim::serve(
        "127.0.0.1:0",
        OpenCtiSimConfig {
            scenario: (0..EVENTS).map(indicator).collect(),
            heartbeat: Duration::from_secs(1),
            base_ms: BASE_MS,
            ..OpenCtiSimConfig::default()
        },
    )
    .expect("opencti sim");
    let hl = hlsim::serve(
        "127.0.0.1:0",
        SimConfig {
            faults: Faults {
                latency,
                ..Faults::default()
            },
            capacity: Some(CapacityLimit::new(capacity)),
            max_connections: 1024,
            ..SimConfig::default()
        },
    )
    .expect("harfanglab sim");
    let dir = state_dir("adaptive");
    let port = free_port();
    let mut child = spawn(&octi.base_url(), hl.base_url(), &dir, workers, port);
    let created = || hl.requests("POST", "IOCRule");
    let wait_start = Instant::now();
    while created() == 0 && wait_start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (t0, w0, r0, th0) = (
        Instant::now(),
        created(),
        hl.total_requests(),
        hl.capacity_refusals(),
    );
    let mut limits: Vec<(Duration, u64)> = Vec::new();
    let (mut peak_limit, mut peak_in_flight) = (0, 0);
    let mut throttled_at = Vec::new();
    let mut seen_429 = th0;
    let mut rss = 0;
    loop {
        rss = rss.max(vm_hwm_kb(child.id()));
        if let Some((l, in_flight)) = scrape_limit(port) {
            limits.push((t0.elapsed(), l));
            peak_limit = peak_limit.max(l);
            peak_in_flight = peak_in_flight.max(in_flight);
        }
        let refused = hl.capacity_refusals();
        if refused > seen_429 {
            throttled_at.push(format!(
                "{:.2}s:{}",
                t0.elapsed().as_secs_f64(),
                refused - seen_429
            ));
            seen_429 = refused;
        }
        if created() >= EVENTS || t0.elapsed() >= budget {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let (elapsed, events) = (t0.elapsed(), created().saturating_sub(w0));
    rss = rss.max(vm_hwm_kb(child.id()));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let finished = created().saturating_sub(w0);
    let requests = hl.total_requests().saturating_sub(r0);
    let throttled = hl.capacity_refusals().saturating_sub(th0);
    if hl.capacity_refusals() > seen_429 {
        throttled_at.push(format!("end:{}", hl.capacity_refusals() - seen_429));
    }
    let peak_queue = hl.capacity_peak_queue();
    hl.shutdown();
    octi.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    let half = elapsed / 2;
    let mut late: Vec<u64> = limits
        .iter()
        .filter(|(t, _)| *t >= half)
        .map(|&(_, l)| l)
        .collect();
    late.sort_unstable();
    Cell {
        events,
        per_sec: events as f64 / elapsed.as_secs_f64().max(1e-9),
        requests_per_event: requests as f64 / finished.max(1) as f64,
        settled_limit: late.get(late.len() / 2).copied(),
        throttled,
        rss_kb: rss,
        peak_limit,
        peak_in_flight,
        peak_queue,
        throttled_at,
    }
}

fn main() {
    let budget = Duration::from_secs(env_or("HLI_BENCH_SECONDS", 20));
    let capacity: usize = env_or("HLI_BENCH_CAPACITY", 64);
    let only: Option<Vec<(u64, String)>> = std::env::var("HLI_BENCH_CELLS").ok().map(|v| {
        v.split(',')
            .filter_map(|c| {
                let (l, w) = c.trim().split_once(':')?;
                Some((l.parse().ok()?, w.to_owned()))
            })
            .collect()
    });
    println!(
        "adaptive concurrency: simulated OpenCTI -> harfanglab-intel (child process) -> simulated HarfangLab"
    );
    println!(
        "HarfangLab capacity: {capacity} requests at once, {capacity} queued, then 429 (Retry-After: 1); \
         stream of {EVENTS} new indicators; each cell runs until done or {budget:?}\n"
    );
    println!(
        "| HarfangLab latency | workers | events | events/s | HL requests/event | share of the physical limit | settled limit | 429s | peak RSS | peak limit / in flight | peak sim queue | 429s at |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for latency_ms in [10u64, 50, 200] {
        for workers in ["auto", "16"] {
            if only
                .as_ref()
                .is_some_and(|o| !o.iter().any(|(l, w)| *l == latency_ms && w == workers))
            {
                continue;
            }
            let latency = Duration::from_millis(latency_ms);
            let c = run(latency, workers, capacity, budget);
            let physical =
                capacity as f64 / (c.requests_per_event.max(1e-9) * latency.as_secs_f64());
            println!(
                "| {latency_ms} ms | {workers} | {} | {:.0} | {:.2} | {:.0} % of {:.0}/s | {} | {} | {:.1} MB | {} / {} | {} | {} |",
                c.events,
                c.per_sec,
                c.requests_per_event,
                100.0 * c.per_sec / physical,
                physical,
                c.settled_limit
                    .map_or_else(|| "-".to_owned(), |l| l.to_string()),
                c.throttled,
                c.rss_kb as f64 / 1024.0,
                c.peak_limit,
                c.peak_in_flight,
                c.peak_queue,
                if c.throttled_at.is_empty() {
                    "-".to_owned()
                } else {
                    c.throttled_at.join(" ")
                }
            );
        }
    }
}
