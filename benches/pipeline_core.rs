//! Throughput and memory of the pipeline core alone (no network): events/s with a no-op handler
//! and with a 10 ms handler (simulated HarfangLab round trip) at 1/4/16/32 workers, and peak RSS
//! (VmHWM) after 10,000 vs 100,000 events, each measured in a fresh child process.
//!
//! Run: `cargo bench --bench pipeline_core`. Prints a Markdown table.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use harfanglab_intel::pipeline::{
    self, DeadLetterLog, EventHandler, Input, Outcome, PipelineOptions, Shutdown,
};

/// Roughly the size of a STIX indicator event as read from the stream.
const PAYLOAD_BYTES: usize = 1024;
const KEYS: usize = 5_000;
const RSS_ENV: &str = "PIPELINE_BENCH_RSS_EVENTS";

struct NoOp;
impl EventHandler<Vec<u8>> for NoOp {
    fn handle(&self, _: &str, _: &str, payload: &Vec<u8>) -> Outcome {
        std::hint::black_box(payload);
        Outcome::Applied(String::new())
    }
}

struct Io(Duration);
impl EventHandler<Vec<u8>> for Io {
    fn handle(&self, _: &str, _: &str, _: &Vec<u8>) -> Outcome {
        // Benchmark-only stand-in for a blocking HTTP call.
        std::thread::sleep(self.0);
        Outcome::Applied(String::new())
    }
}

/// Feed `events` events (generated lazily, so the producer holds no backlog) and return
/// events/s measured over the whole run.
fn measure<H: EventHandler<Vec<u8>>>(handler: &H, workers: usize, events: usize) -> f64 {
    let (tx, rx) = crossbeam_channel::bounded(256);
    let producer = std::thread::spawn(move || {
        for n in 0..events {
            let input = Input::Event {
                event_id: format!("{}-0", 1_700_000_000_000u64 + n as u64),
                key: Some(format!("indicator--{:08}", n % KEYS)),
                also_keys: Vec::new(),
                payload: vec![b'x'; PAYLOAD_BYTES],
            };
            if tx.send(input).is_err() {
                return;
            }
        }
    });
    let opts = PipelineOptions {
        workers,
        summary_every: Duration::from_secs(3600),
        tick_every: Duration::from_secs(3600),
        ..PipelineOptions::default()
    };
    let t0 = Instant::now();
    let summary = pipeline::run(
        rx,
        handler,
        &mut (),
        &mut (),
        &opts,
        &Shutdown::new(),
        DeadLetterLog::disabled(),
    )
    .expect("pipeline run");
    let secs = t0.elapsed().as_secs_f64();
    producer.join().expect("producer");
    assert_eq!(summary.stats.applied, events as u64);
    events as f64 / secs
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss_child(events: usize) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new(exe)
        .env(RSS_ENV, events.to_string())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn main() {
    if let Ok(n) = std::env::var(RSS_ENV) {
        let events: usize = n.parse().expect("event count");
        measure(&NoOp, 4, events);
        println!("{}", vm_hwm_kib().unwrap_or(0));
        return;
    }

    println!("| handler | workers | events | events/s |");
    println!("|---|---:|---:|---:|");
    for workers in [1, 4, 16, 32] {
        let rate = measure(&NoOp, workers, 100_000);
        println!("| no-op | {workers} | 100000 | {rate:.0} |");
    }
    for workers in [1, 4, 16, 32] {
        // 400 events per worker keeps each run ~4 s; 100,000 events at 1 worker would be 17 min.
        let events = (400 * workers).min(100_000);
        let rate = measure(&Io(Duration::from_millis(10)), workers, events);
        println!(
            "| sleep 10 ms | {workers} | {events} | {rate:.0} (ideal {}) |",
            workers * 100
        );
    }
    println!();
    println!("| events (no-op, 4 workers, fresh process) | peak RSS (VmHWM) |");
    println!("|---:|---:|");
    for events in [10_000, 100_000] {
        match rss_child(events) {
            Some(kib) => println!("| {events} | {:.1} MiB |", kib as f64 / 1024.0),
            None => println!("| {events} | n/a |"),
        }
    }
}
