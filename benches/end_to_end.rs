//! End-to-end throughput of the real binary: simulated OpenCTI → `harfanglab-intel run` (a child
//! process) → simulated HarfangLab, both simulators in this process on loopback.
//!
//! Prints a table: HarfangLab latency × worker count → events/s, HarfangLab requests per event,
//! and the connector's peak RSS (`VmHWM` of the child). Then RSS at 10,000 and 100,000 events of
//! one run, to show it stays flat. Each cell runs on a stream of 10,000 new indicators (IPv4,
//! domains, URLs, hashes in turn) for at most `HLI_BENCH_SECONDS` (default 10) seconds;
//! events/s is counted from the IOC creates the HarfangLab simulator received (one per event), and the
//! final checkpoint is checked to cover them. Run with `cargo bench --bench end_to_end`.
//!
//! Also printed per cell: the connector's own CPU time per event (`utime + stime` of the child,
//! so the simulators' share of the 2 cores is not counted) and the TCP connections both
//! simulators accepted (connection reuse keeps it near the pool sizes).
//!
//! Every event creates one new IOC, so "HL requests/new object" is the HarfangLab requests per
//! event after startup (timing starts at the first write): 1.00 when the inventory lets every
//! create go straight to a POST (issue 16's target: ≤ 1.05).
//!
//! After the table, a memory breakdown of the 1- and 32-worker cells, read from the child's
//! `/proc/<pid>/smaps` at the end of the cell (all events applied or the time spent), before it
//! stops: the binary's own pages (text and data, file-backed: the kernel maps a file's cached
//! pages 64 KiB around each fault), shared libraries (libc), heap (`[heap]` and the anonymous mappings of glibc's malloc
//! arenas: events in the pipeline window, the per-connection HTTP buffers, the DNS cache, the
//! inventory), thread stacks (each thread's touched stack pages, its static TLS at the top, and
//! Rust's signal stack with its guard), and the rest.
//!
//! Last, the first sync at scale: 1,000,000 indicators replayed from `0-0` through the binary at
//! 10 ms HarfangLab latency, with its time, events/s and RSS at 10 %, 50 % and 100 %.
//!
//! Environment: `HLI_BENCH_BIN` runs another build of the connector (e.g. a baseline binary);
//! `HLI_BENCH_CELLS=0:32,10:32` runs only those `latency_ms:workers` cells; `HLI_BENCH_LONG=0`
//! skips the 100,000-event run; `HLI_BENCH_FIRST_SYNC=0` skips the 1,000,000-indicator first
//! sync (`=200000` makes it smaller).

use harfanglab_intel::sim::opencti::{self as octisim, OpenCtiSimConfig, ScenarioEvent};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command};

mod support;
use std::time::{Duration, Instant};
use support::{OCTI_EXT, connector, cpu_ticks, env_or, harfanglab_at, start, state_dir, vm_hwm_kb};

const BASE_MS: u64 = 1_718_445_600_000;

fn indicator(n: u64) -> ScenarioEvent {
    let (pattern, name) = match n % 4 {
        0 => {
            let ip = format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
            (format!("[ipv4-addr:value = '{ip}']"), ip)
        }
        1 => {
            let d = format!("bench-{n}.example");
            (format!("[domain-name:value = '{d}']"), d)
        }
        2 => {
            let u = format!("http://bench-{n}.example/p");
            (format!("[url:value = '{u}']"), u)
        }
        _ => {
            let h = format!("{n:064x}");
            (format!("[file:hashes.'SHA-256' = '{h}']"), h)
        }
    };
    let data = json!({"version": "4", "type": "create", "scope": "external",
        "message": "creates an indicator", "origin": {},
        "data": {"id": format!("indicator--00000002-0000-4000-8000-{n:012x}"),
            "spec_version": "2.1", "type": "indicator", "name": name, "pattern": pattern,
            "pattern_type": "stix", "revoked": false,
            "extensions": {OCTI_EXT: {"id": format!("00000001-0000-4000-8000-{n:012x}"),
                "score": 70, "type": "Indicator"}}}});
    ScenarioEvent {
        event: "create".into(),
        data,
    }
}

/// Position of a simulator event id (`<ms>-<seq>`, two events per millisecond) + 1.
fn events_done(id: &str) -> u64 {
    let Some((ms, seq)) = id.split_once('-') else {
        return 0;
    };
    let (Ok(ms), Ok(seq)) = (ms.parse::<u64>(), seq.parse::<u64>()) else {
        return 0;
    };
    (ms.saturating_sub(BASE_MS)) * 2 + seq + 1
}

fn checkpoint(dir: &Path) -> u64 {
    let path = dir.join("b0000000-0000-4000-8000-000000000001.checkpoint.json");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["start_from"].as_str().map(events_done))
        .unwrap_or(0)
}

fn spawn(octi: &str, hl: &str, dir: &Path, workers: usize) -> Child {
    start(connector(octi, hl, dir).env("HARFANGLAB_INTEL_WORKERS", workers.to_string()))
}

struct Cell {
    events: u64,
    per_sec: f64,
    requests_per_event: f64,
    rss_kb: u64,
    /// Connector CPU milliseconds per event.
    cpu_ms_per_event: f64,
    /// TCP connections accepted by the HarfangLab and the OpenCTI simulators.
    connections: (u64, u64),
    /// RSS sampled when the checkpoint passed each mark.
    rss_at: Vec<(u64, u64)>,
    /// Where the RSS is at the end of the cell, before the stop.
    memory: Memory,
}

/// RSS of one process by kind of mapping, in KiB (from `/proc/<pid>/smaps`).
#[derive(Default, Clone, Copy)]
struct Memory {
    binary: u64,
    libs: u64,
    heap: u64,
    stacks: u64,
    other: u64,
    /// glibc malloc arenas besides the main one (anonymous heaps aligned on 64 MiB).
    arenas: u64,
    threads: u64,
}

impl Memory {
    fn total(&self) -> u64 {
        self.binary + self.libs + self.heap + self.stacks + self.other
    }
}

/// One line of `smaps` naming a mapping: `start-end perms offset dev inode [path]`.
struct Mapping {
    start: u64,
    end: u64,
    perms: String,
    path: String,
    rss_kb: u64,
}

fn mappings(pid: u32) -> Vec<Mapping> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((s, e)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16))
        {
            let perms = f.next().unwrap_or("").to_owned();
            let path = f.nth(3).unwrap_or("").to_owned();
            out.push(Mapping {
                start,
                end,
                perms,
                path,
                rss_kb: 0,
            });
        } else if first == "Rss:"
            && let Some(m) = out.last_mut()
        {
            m.rss_kb = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    out
}

fn memory(pid: u32) -> Memory {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_owned()
        })
        .unwrap_or_default();
    let maps = mappings(pid);
    let mut m = Memory {
        threads: std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count() as u64)
            .unwrap_or(0),
        ..Memory::default()
    };
    const ARENA_ALIGN: u64 = 64 << 20;
    for (i, map) in maps.iter().enumerate() {
        // glibc puts a thread's stack (and Rust its signal stack) right above a small
        // inaccessible guard; an arena's reserve is above its used part, and much larger.
        let after_guard = i > 0 && {
            let below = &maps[i - 1];
            below.end == map.start
                && below.perms.starts_with("---")
                && below.path.is_empty()
                && below.end - below.start <= 64 << 10
        };
        let kind = match map.path.as_str() {
            p if !exe.is_empty() && p == exe => &mut m.binary,
            p if p.starts_with('/') => &mut m.libs,
            "[heap]" => &mut m.heap,
            "[stack]" => &mut m.stacks,
            "" if map.perms.starts_with("rw") && after_guard => &mut m.stacks,
            "" if map.perms.starts_with("rw") => {
                if map.start % ARENA_ALIGN == 0 {
                    m.arenas += 1;
                }
                &mut m.heap
            }
            _ => &mut m.other,
        };
        *kind += map.rss_kb;
    }
    m
}

fn run(n_events: u64, latency: Duration, workers: usize, budget: Duration, marks: &[u64]) -> Cell {
    let scenario: Vec<ScenarioEvent> = (0..n_events).map(indicator).collect();
    let mut octi = octisim::serve(
        "127.0.0.1:0",
        OpenCtiSimConfig {
            scenario,
            heartbeat: Duration::from_secs(1),
            base_ms: BASE_MS,
            ..OpenCtiSimConfig::default()
        },
    )
    .expect("opencti sim");
    let hl = harfanglab_at(latency);
    let dir = state_dir("run");
    let mut child = spawn(&octi.base_url(), hl.base_url(), &dir, workers);
    // Progress is counted from the IOC creates the simulator received: every event of this
    // stream creates one new IOC, and nothing else creates one. (The checkpoint file is saved at most once a second, too coarse to
    // time a 10,000-event run that takes about a second; it is checked after the drain.)
    // Timing starts at the first write (startup excluded).
    let wait_start = Instant::now();
    let created = || hl.requests("POST", "IOCRule");
    while created() == 0 && wait_start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (t0, w0, r0) = (Instant::now(), created(), hl.total_requests());
    let cpu0 = cpu_ticks(child.id());
    let mut rss_at = Vec::new();
    let mut next_mark = 0;
    let mut rss = 0;
    loop {
        let done = created();
        rss = rss.max(vm_hwm_kb(child.id()));
        while next_mark < marks.len() && done >= marks[next_mark] {
            rss_at.push((marks[next_mark], vm_hwm_kb(child.id())));
            next_mark += 1;
        }
        if done >= n_events || t0.elapsed() >= budget {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (elapsed, events) = (t0.elapsed(), created().saturating_sub(w0));
    let cpu1 = cpu_ticks(child.id());
    rss = rss.max(vm_hwm_kb(child.id()));
    let memory = memory(child.id());
    // Requests per event over whole events: stop (the drain finishes what is in flight and
    // saves the final checkpoint), then count both.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let finished = created().saturating_sub(w0);
    let checkpointed = checkpoint(&dir);
    if checkpointed < created() {
        eprintln!(
            "WARNING: final checkpoint covers {checkpointed} events, {} were applied",
            created()
        );
    }
    let requests = hl.total_requests().saturating_sub(r0);
    let connections = (hl.connections_accepted(), octi.connections_accepted());
    hl.shutdown();
    octi.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    Cell {
        events,
        per_sec: events as f64 / elapsed.as_secs_f64().max(1e-9),
        requests_per_event: requests as f64 / (finished.max(1)) as f64,
        rss_kb: rss,
        cpu_ms_per_event: cpu1.saturating_sub(cpu0) as f64 * 10.0 / (events.max(1)) as f64,
        connections,
        rss_at,
        memory,
    }
}

fn main() {
    let budget = Duration::from_secs(env_or("HLI_BENCH_SECONDS", 10));
    let only: Option<Vec<(u64, usize)>> = std::env::var("HLI_BENCH_CELLS").ok().map(|v| {
        v.split(',')
            .filter_map(|c| {
                let (l, w) = c.trim().split_once(':')?;
                Some((l.parse().ok()?, w.parse().ok()?))
            })
            .collect()
    });
    println!(
        "end to end: simulated OpenCTI -> harfanglab-intel (child process) -> simulated HarfangLab"
    );
    println!("stream of 10,000 new indicators; each cell runs until done or {budget:?}\n");
    println!(
        "| HarfangLab latency | workers | events | events/s | connector CPU/event | HL requests/new object | connections HL/OpenCTI | peak RSS |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut breakdowns = Vec::new();
    for latency_ms in [0u64, 10, 50] {
        for workers in [1usize, 4, 16, 32] {
            if only
                .as_ref()
                .is_some_and(|o| !o.contains(&(latency_ms, workers)))
            {
                continue;
            }
            let c = run(
                10_000,
                Duration::from_millis(latency_ms),
                workers,
                budget,
                &[],
            );
            println!(
                "| {latency_ms} ms | {workers} | {} | {:.0} | {:.3} ms | {:.2} | {} / {} | {:.1} MB |",
                c.events,
                c.per_sec,
                c.cpu_ms_per_event,
                c.requests_per_event,
                c.connections.0,
                c.connections.1,
                c.rss_kb as f64 / 1024.0
            );
            if workers == 1 || workers == 32 {
                breakdowns.push((latency_ms, workers, c.rss_kb, c.memory));
            }
        }
    }
    print_breakdowns(&breakdowns);
    if !std::env::var("HLI_BENCH_LONG").is_ok_and(|v| v == "0") {
        long_stream(budget);
    }
    let first_sync: u64 = std::env::var("HLI_BENCH_FIRST_SYNC")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    if first_sync > 0 {
        first_sync_at_scale(first_sync);
    }
}

/// Where the RSS goes, for the 1- and 32-worker cells (MiB, like the table).
fn print_breakdowns(rows: &[(u64, usize, u64, Memory)]) {
    if rows.is_empty() {
        return;
    }
    println!(
        "\nMemory at the end of each cell, before the stop (/proc/<pid>/smaps RSS, MB; peak as in the table):"
    );
    println!(
        "| HarfangLab latency | workers | peak RSS | RSS now | binary (text, data) | shared libs | heap (malloc; arenas besides main) | thread stacks (incl. TLS) | other | threads |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mb = |kb: u64| kb as f64 / 1024.0;
    for (latency_ms, workers, peak, m) in rows {
        println!(
            "| {latency_ms} ms | {workers} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} ({}) | {:.1} | {:.1} | {} |",
            mb(*peak),
            mb(m.total()),
            mb(m.binary),
            mb(m.libs),
            mb(m.heap),
            m.arenas,
            mb(m.stacks),
            mb(m.other),
            m.threads
        );
    }
}

/// 1,000,000 indicators (by default) from `0-0` at 10 ms: time, events/s, RSS at 10/50/100 %.
fn first_sync_at_scale(n: u64) {
    println!(
        "\nFirst sync at scale ({n} indicators from 0-0, 10 ms HarfangLab latency, 32 workers):"
    );
    let marks = [n / 10, n / 2, n];
    let t = Instant::now();
    let c = run(
        n,
        Duration::from_millis(10),
        32,
        Duration::from_secs(4 * 3600),
        &marks,
    );
    for (mark, kb) in &c.rss_at {
        println!(
            "  after {mark:>8} events ({:>3} %): peak RSS {:.1} MB",
            mark * 100 / n,
            *kb as f64 / 1024.0
        );
    }
    println!(
        "  {} events in {:.0} s ({:.0} events/s after the first write), {:.2} HL requests/new object, {:.3} ms connector CPU/event, peak RSS {:.1} MB (wall time with setup {:.0} s)",
        c.events,
        c.events as f64 / c.per_sec.max(1e-9),
        c.per_sec,
        c.requests_per_event,
        c.cpu_ms_per_event,
        c.rss_kb as f64 / 1024.0,
        t.elapsed().as_secs_f64()
    );
}

fn long_stream(budget: Duration) {
    println!("\nRSS over a long stream (0 ms, 32 workers, 100,000 events):");
    let c = run(
        100_000,
        Duration::ZERO,
        32,
        budget * 12,
        &[10_000, 50_000, 100_000],
    );
    for (mark, kb) in &c.rss_at {
        println!(
            "  after {mark:>7} events: peak RSS {:.1} MB",
            *kb as f64 / 1024.0
        );
    }
    println!(
        "  {} events at {:.0} events/s, {:.3} ms connector CPU/event, peak RSS {:.1} MB",
        c.events,
        c.per_sec,
        c.cpu_ms_per_event,
        c.rss_kb as f64 / 1024.0
    );
}
