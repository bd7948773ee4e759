//! Throughput of the HarfangLab client against the in-process simulator (0 and 10 ms injected
//! latency, 1/4/16 threads sharing one `Client`), and the process RSS before and after 20,000
//! distinct IOC rules go through create + delete, to show the client does not grow.
//!
//! Run: `cargo bench --bench harfanglab_client`.

use harfanglab_intel::sim::harfanglab::{Faults, HarfangLabSim, SimConfig, serve};
use harfanglab_intel::{
    Client, ClientOptions, IocRuleBody, IocType, Secret, SourceKind, ThreatIntelApi,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const RUN: Duration = Duration::from_secs(3);

fn client_for(sim: &HarfangLabSim) -> (Client, crossbeam_channel::Sender<()>) {
    let mut opts = ClientOptions::new(sim.base_url(), Secret::new(sim.token()));
    opts.proxy_from_env = false;
    opts.max_idle_connections = 32;
    let (tx, rx) = crossbeam_channel::unbounded();
    (Client::new(opts, rx).expect("client"), tx)
}

fn body(source: &str, n: u64) -> IocRuleBody {
    IocRuleBody {
        source_id: source.to_owned(),
        ioc_type: IocType::DomainName,
        value: format!("host-{n}.bench.example"),
        description: "benchmark".to_owned(),
        comment: "{}".to_owned(),
        hl_status: "stable".to_owned(),
        enabled: true,
    }
}

/// Requests per second with `threads` workers creating distinct IOC rules for `RUN`.
fn throughput(latency: Duration, threads: usize) -> (u64, f64) {
    let sim = serve(
        "127.0.0.1:0",
        SimConfig {
            max_connections: 32,
            faults: Faults {
                latency,
                ..Faults::default()
            },
            ..SimConfig::default()
        },
    )
    .expect("simulator");
    let source = sim.add_source(SourceKind::Ioc, "bench");
    let (client, _tx) = client_for(&sim);
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while start.elapsed() < RUN {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if client.create_ioc(&body(&source, n)).is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let ok = done.load(Ordering::Relaxed);
    (ok, ok as f64 / secs)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Create then delete `count` distinct rules with 4 threads; the simulator ends empty, so any
/// growth would be the client's.
fn churn(client: &Client, source: &str, from: u64, count: u64) {
    let next = AtomicU64::new(from);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= from + count {
                        break;
                    }
                    if let Ok(rule) = client.create_ioc(&body(source, n)) {
                        let _ = client.delete_ioc(&rule.id);
                    }
                }
            });
        }
    });
}

fn main() {
    println!(
        "HarfangLab client throughput against the in-process simulator ({} s per cell)",
        RUN.as_secs()
    );
    println!("| latency | threads | requests | req/s |");
    println!("|--------:|--------:|---------:|------:|");
    for latency_ms in [0u64, 10] {
        for threads in [1usize, 4, 16] {
            let (n, rate) = throughput(Duration::from_millis(latency_ms), threads);
            println!("| {latency_ms} ms | {threads} | {n} | {rate:.0} |");
        }
    }

    let sim = serve("127.0.0.1:0", SimConfig::default()).expect("simulator");
    let source = sim.add_source(SourceKind::Ioc, "rss");
    let (client, _tx) = client_for(&sim);
    churn(&client, &source, 0, 2_000);
    let before = rss_kib();
    let start = Instant::now();
    churn(&client, &source, 1_000_000, 20_000);
    let after = rss_kib();
    println!();
    println!(
        "RSS: {before} KiB after a 2,000-rule warm-up, {after} KiB after 20,000 more distinct rules (create + delete, {:.1} s, {} rules left in the simulator, {} requests, {} retries)",
        start.elapsed().as_secs_f64(),
        sim.ioc_rules().len(),
        client.stats().total_requests(),
        client.stats().retries()
    );
}
