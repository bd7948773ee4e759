//! Sync-layer throughput against the in-memory fake (no network): what the diffing, the holder
//! comment codec and the striped locks cost per indicator. Prints numbers; asserts nothing.
//!
//! Run: `cargo bench --bench sync`.

use harfanglab_intel::harfanglab::model::SourceLists;
use harfanglab_intel::sync::memory::MemoryApi;
use harfanglab_intel::sync::{SyncSettings, Syncer};
use harfanglab_intel::translate::{FormerState, Indicator, IocKey, IocType, Translation};
use std::time::Instant;

const THREADS: usize = 8;

fn syncer() -> Syncer<MemoryApi> {
    Syncer::new(
        MemoryApi::new(),
        SyncSettings {
            lists: SourceLists {
                ioc: "i".into(),
                sigma: "s".into(),
                yara: "y".into(),
            },
            remove_indicator: true,
            rule_maturity: "stable".into(),
        },
    )
}

fn indicator(n: usize) -> Indicator {
    Indicator {
        id: format!("internal-{n}"),
        standard_id: Some(format!("indicator--{n}")),
        name: format!("Indicator {n}"),
        score: Some(60),
        platforms: vec!["windows".into(), "linux".into()],
        ..Indicator::default()
    }
}

fn ip(a: usize, b: usize) -> IocKey {
    IocKey {
        ioc_type: IocType::IpBoth,
        value: format!("10.{}.{}.{}", a % 256, b / 256 % 256, b % 256),
    }
}

/// Run `per_thread` upserts on each of THREADS threads; returns (upserts/s, API calls/upsert).
fn run(
    s: &Syncer<MemoryApi>,
    per_thread: usize,
    make: impl Fn(usize, usize) -> (Indicator, Translation) + Sync,
) -> (f64, f64) {
    let start = Instant::now();
    let calls: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let make = &make;
                scope.spawn(move || {
                    let mut calls = 0u64;
                    for i in 0..per_thread {
                        let (ind, tr) = make(t, i);
                        match s.upsert(&ind, &tr, &FormerState::default()) {
                            Ok(r) => calls += u64::from(r.api_calls),
                            Err(e) => eprintln!("upsert failed: {e}"),
                        }
                    }
                    calls
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let n = (THREADS * per_thread) as f64;
    (n / start.elapsed().as_secs_f64(), calls as f64 / n)
}

fn main() {
    let per_thread = 2_000;
    let s = syncer();
    let disjoint = |t: usize, i: usize| {
        let n = t * per_thread + i;
        let tr = Translation {
            iocs: vec![ip(1, n), ip(2, n), ip(3, n)],
            ..Translation::default()
        };
        (indicator(n), tr)
    };
    let (rate, calls) = run(&s, per_thread, disjoint);
    println!(
        "new indicators, 3 IOCs each, {THREADS} threads: {rate:>10.0} upserts/s, {calls:.2} calls/upsert"
    );
    let (rate, calls) = run(&s, per_thread, disjoint);
    println!(
        "replayed (unchanged) upserts:                    {rate:>10.0} upserts/s, {calls:.2} calls/upsert"
    );

    // One hot IOC wanted by every indicator: the holder list (and comment) grows to 1 600.
    let hot = syncer();
    let per_thread = 200;
    let (rate, calls) = run(&hot, per_thread, |t, i| {
        let tr = Translation {
            iocs: vec![ip(9, 9)],
            ..Translation::default()
        };
        (indicator(t * per_thread + i), tr)
    });
    let comment_len = hot
        .api()
        .iocs()
        .first()
        .and_then(|r| r.comment.as_ref().map(String::len))
        .unwrap_or(0);
    println!(
        "one IOC shared by {} indicators:               {rate:>10.0} upserts/s, {calls:.2} calls/upsert, final comment {comment_len} bytes",
        THREADS * per_thread
    );
}
