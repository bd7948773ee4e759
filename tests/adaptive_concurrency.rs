//! `HARFANGLAB_INTEL_WORKERS=auto` against a HarfangLab that can serve only 2 requests at once
//! and throttles (429, `Retry-After: 1`) anything past that: the real binary still applies every
//! event (nothing dead-lettered, the checkpoint reaches the last event), and its adaptive limit,
//! read from the metrics endpoint, goes below where it starts (16, unit-tested in
//! `concurrency.rs`) once the 429s come. No timing
//! assertions: only what happened.

use crate::support::e2e::{HL_TOKEN, OCTI_TOKEN, STREAM_ID, TempDir, World, bulk_creates, ip_for};
use harfanglab_intel::sim::capacity::CapacityLimit;
use harfanglab_intel::sim::harfanglab::{self as hlsim, Faults, SimConfig};
use harfanglab_intel::sim::opencti::{self as octisim, OpenCtiSimConfig};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const EVENTS: u64 = 120;
const TIMEOUT: Duration = Duration::from_secs(120);

/// `harfanglab_intel_concurrency_limit` from the metrics endpoint (`None`: not up yet).
fn scrape_limit(port: u16) -> Option<u64> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("harfanglab_intel_concurrency_limit "))
        .and_then(|v| v.trim().parse().ok())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[test]
fn auto_applies_every_event_against_a_throttling_server_and_backs_off() {
    let octi = octisim::serve(
        "127.0.0.1:0",
        OpenCtiSimConfig {
            token: OCTI_TOKEN.into(),
            stream_id: STREAM_ID.into(),
            heartbeat: Duration::from_millis(200),
            scenario: bulk_creates(0, EVENTS),
            ..OpenCtiSimConfig::default()
        },
    )
    .expect("start OpenCTI simulator");
    let hl = hlsim::serve(
        "127.0.0.1:0",
        SimConfig {
            token: HL_TOKEN.into(),
            faults: Faults {
                latency: Duration::from_millis(20),
                ..Faults::default()
            },
            capacity: Some(CapacityLimit {
                concurrent: 2,
                queue: 0,
                retry_after_secs: Some(1),
            }),
            max_connections: 512,
            ..SimConfig::default()
        },
    )
    .expect("start HarfangLab simulator");
    let world = World {
        octi,
        hl,
        state: TempDir::new("adaptive"),
    };
    let port = free_port();
    let opts = world
        .opts()
        .env("HARFANGLAB_INTEL_WORKERS", "auto")
        .env("CONNECTOR_EXPOSE_METRICS", "true")
        .env("CONNECTOR_METRICS_HOST", "127.0.0.1")
        .env("CONNECTOR_METRICS_PORT", &port.to_string());
    let mut connector = world.spawn(&opts);
    let last = world.last_event_id();

    // Watch the limit while the connector works, until the checkpoint covers every event.
    let mut seen: Vec<u64> = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(limit) = scrape_limit(port) {
            seen.push(limit);
        }
        let done = world.checkpoint().is_some_and(|pos| {
            harfanglab_intel::compare_event_ids(&pos, &last) != std::cmp::Ordering::Less
        });
        if done {
            break;
        }
        if let Some(status) = connector.try_wait() {
            panic!("connector exited ({status})\n{}", connector.stderr_tail());
        }
        if Instant::now() >= deadline {
            connector.kill();
            panic!(
                "checkpoint at {:?}, not {last}\n{}",
                world.checkpoint(),
                connector.stderr_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    connector.terminate_ok(Duration::from_secs(15));

    let refusals = world.hl.capacity_refusals();
    assert!(
        refusals > 0,
        "the server never throttled: not a test of backing off"
    );
    let lowest = seen.iter().min().copied();
    assert!(
        lowest.is_some_and(|l| l < 16),
        "after {refusals} 429s the limit never went below 16: {seen:?}"
    );

    // Nothing lost: one IOC rule per event, no dead letter.
    let iocs = world.hl.ioc_rules();
    for n in 0..EVENTS {
        let ip = ip_for(n);
        assert!(
            iocs.iter().any(|r| r.value == ip),
            "{ip} missing after {refusals} 429s\n{}",
            connector.stderr_tail()
        );
    }
    assert_eq!(iocs.len() as u64, EVENTS);
    let dead_letters: Vec<_> = std::fs::read_dir(world.state.path())
        .expect("state dir")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(".dead-letters.jsonl")
        })
        .filter(|e| e.metadata().is_ok_and(|m| m.len() > 0))
        .collect();
    assert!(dead_letters.is_empty(), "{dead_letters:?}");
}
