//! End-to-end throughput and memory: simulated OpenCTI stream → the real `harfanglab-intel run`
//! binary (a child process, the release build `cargo bench` makes) → simulated HarfangLab on
//! loopback. For HarfangLab latency 0/10/50 ms × 1/4/16/32 workers: events per second, HarfangLab
//! requests per event (from the simulator's counters) and the connector's peak RSS (`VmHWM` of the
//! child from `/proc/<pid>/status`, read just before SIGTERM, so the simulators' memory in this
//! process is not counted). Then peak RSS at 10,000 vs 100,000 events (0 ms, 32 workers).
//! Prints a table. Run with `cargo bench --bench end_to_end`.
//!
//! Each event is a create of a new IPv4 indicator (one IOC rule). The rate is measured from the
//! process start until the simulator has received the POST of the last IOC rule, so it includes
//! startup (register, source lists) — negligible at these sizes.

#[path = "../tests/e2e_support/mod.rs"]
mod e2e_support;

use e2e_support::{World, bulk_creates};
use harfanglab_intel::sim::harfanglab::Faults;
use std::time::{Duration, Instant};

struct Row {
    latency_ms: u64,
    workers: usize,
    events: u64,
    secs: f64,
    requests_per_event: f64,
    peak_rss_kb: Option<u64>,
}

/// `VmHWM` (peak resident set) of a process, in kB.
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Event count for a configuration: 10,000, scaled down so a slow one takes ~10 s.
fn events_for(latency_ms: u64, workers: usize) -> u64 {
    if latency_ms == 0 {
        return 10_000;
    }
    // About two HarfangLab round trips per new IOC (lookup + create).
    let est_rate = workers as f64 * 1000.0 / (latency_ms as f64 * 2.0);
    ((est_rate * 10.0) as u64).clamp(200, 10_000)
}

fn run(latency_ms: u64, workers: usize, events: u64) -> Row {
    let faults = Faults {
        latency: Duration::from_millis(latency_ms),
        ..Faults::default()
    };
    let world = World::start(bulk_creates(0, events), faults, 1);
    let opts = world
        .opts()
        .workers(workers)
        .env("CONNECTOR_LOG_LEVEL", "warn");
    // The child's environment is scrubbed; pass glibc's arena cap through to measure its effect
    // on RSS (`MALLOC_ARENA_MAX=2 cargo bench --bench end_to_end`).
    let opts = match std::env::var("MALLOC_ARENA_MAX") {
        Ok(v) => opts.env("MALLOC_ARENA_MAX", &v),
        Err(_) => opts,
    };
    let t0 = Instant::now();
    let mut c = world.spawn(&opts);
    let deadline = t0 + Duration::from_secs(600);
    while world.hl.requests("POST", "IOCRule") < events {
        if let Some(status) = c.try_wait() {
            panic!("connector exited ({status})\n{}", c.stderr_tail());
        }
        assert!(Instant::now() < deadline, "timeout\n{}", c.stderr_tail());
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = t0.elapsed().as_secs_f64();
    let peak = peak_rss_kb(c.pid());
    let requests = world.hl.total_requests();
    c.terminate_ok(Duration::from_secs(30));
    let created = world.hl.ioc_rules().len() as u64;
    assert_eq!(created, events, "IOC rules created");
    Row {
        latency_ms,
        workers,
        events,
        secs,
        requests_per_event: requests as f64 / events as f64,
        peak_rss_kb: peak,
    }
}

fn mb(kb: Option<u64>) -> String {
    kb.map(|k| format!("{:.1}", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

fn print(rows: &[Row]) {
    println!(
        "| HL latency | workers | events | seconds | events/s | HL requests/event | peak RSS (MB) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} ms | {} | {} | {:.2} | {:.0} | {:.2} | {} |",
            r.latency_ms,
            r.workers,
            r.events,
            r.secs,
            r.events as f64 / r.secs,
            r.requests_per_event,
            mb(r.peak_rss_kb)
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; another argument selects one "latency/workers" cell (e.g. `10/32`)
    // or `rss` (the 10k vs 100k runs only).
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    println!(
        "end_to_end: binary {}",
        e2e_support::test_binary().display()
    );
    let mut rows = Vec::new();
    for latency_ms in [0u64, 10, 50] {
        for workers in [1usize, 4, 16, 32] {
            let name = format!("{latency_ms}/{workers}");
            if filter.as_deref().is_some_and(|f| f != name) {
                continue;
            }
            let events = events_for(latency_ms, workers);
            let row = run(latency_ms, workers, events);
            println!(
                "  {name}: {} events in {:.2} s ({:.0}/s)",
                row.events,
                row.secs,
                row.events as f64 / row.secs
            );
            rows.push(row);
        }
    }
    println!();
    print(&rows);

    if filter.is_none() || filter.as_deref() == Some("rss") {
        println!();
        println!("RSS flatness (0 ms, 32 workers):");
        let small = run(0, 32, 10_000);
        let large = run(0, 32, 100_000);
        print(&[small, large]);
    }
}
