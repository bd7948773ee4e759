//! Sync-layer throughput against the in-memory fake (no network): what the diffing, the holder
//! codecs (IOC comment, Sigma/Yara holders line) and the striped locks cost per indicator, and
//! what a merge costs. Prints numbers; asserts nothing.
//!
//! Run: `cargo bench --bench sync`.

use harfanglab_intel::{
    Absorbed, FormerState, Indicator, IocKey, IocType, MemoryApi, RuleKind, SigmaMeta, SigmaSpec,
    SourceLists, SyncSettings, Syncer, Translation, YaraMeta, YaraSpec,
};
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
            enforce_enabled: false,
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

    rules_and_merges();
}

/// A Sigma rule whose `id` is a UUID made of `n` (the fake, like HarfangLab, uses it as object id).
fn sigma(name: String, n: usize) -> Translation {
    let id = format!("{:08x}-0000-4000-8000-{:012x}", n, n);
    let content = format!(
        "title: Bench {n}\nid: {id}\nlogsource:\n  product: windows\ndetection:\n  sel:\n    Image|endswith: '\\\\b{n}.exe'\n  condition: sel\n"
    );
    Translation {
        sigma: Some(SigmaSpec {
            meta: SigmaMeta {
                id: Some(id),
                title: format!("Bench {n}"),
                ..SigmaMeta::default()
            },
            name,
            content,
        }),
        ..Translation::default()
    }
}

fn yara(name: String, n: usize) -> Translation {
    Translation {
        yara: Some(YaraSpec {
            meta: YaraMeta {
                rule_names: vec![format!("Bench_{n}")],
                meta_ids: Vec::new(),
            },
            content: format!("rule Bench_{n} {{ strings: $a = \"b{n}\" condition: $a }}\n"),
            name,
        }),
        ..Translation::default()
    }
}

/// Sigma rules and Yara files (new, replayed, one shared by many) and merges.
fn rules_and_merges() {
    let per_thread = 500;
    for (what, make) in [
        ("Sigma", sigma as fn(String, usize) -> Translation),
        ("Yara", yara),
    ] {
        let s = syncer();
        let new = |t: usize, i: usize| {
            let n = t * per_thread + i;
            (indicator(n), make(format!("Indicator {n}"), n))
        };
        // The fake checks a new Yara file against every file of its list (a `meta: id` clash):
        // that rate measures the fake more than the sync layer.
        let (rate, calls) = run(&s, per_thread, new);
        println!(
            "new {what} rules, {THREADS} threads:  {rate:>10.0} upserts/s, {calls:.2} calls/upsert"
        );
        let (rate, calls) = run(&s, per_thread, new);
        println!(
            "replayed {what} rules:             {rate:>10.0} upserts/s, {calls:.2} calls/upsert"
        );
    }

    // One Sigma rule (one `id`) carried by every indicator: its holders line grows.
    let shared = syncer();
    let per_thread = 100;
    let (rate, calls) = run(&shared, per_thread, |t, i| {
        let n = t * per_thread + i;
        (indicator(n), sigma(format!("Indicator {n}"), 7))
    });
    let rule = shared.api().rules(RuleKind::Sigma);
    let line = rule
        .first()
        .and_then(|r| r.content.lines().next())
        .map_or(0, str::len);
    println!(
        "one Sigma rule shared by {} indicators:  {rate:>10.0} upserts/s, {calls:.2} calls/upsert, holders line {line} bytes ({:.1} bytes/holder with ids of {} chars)",
        THREADS * per_thread,
        line as f64 / (THREADS * per_thread) as f64,
        indicator(100).id.len()
    );

    // Merges of three STIX indicators sharing one of their three IOCs each.
    let s = syncer();
    let merges = 2_000;
    let triple = |k: usize| -> Vec<(Indicator, Translation)> {
        (0..3)
            .map(|j| {
                let n = k * 3 + j;
                let tr = Translation {
                    iocs: vec![ip(20, k), ip(21 + j, k), ip(24 + j, k)],
                    ..Translation::default()
                };
                (indicator(n), tr)
            })
            .collect()
    };
    for k in 0..merges {
        for (ind, tr) in triple(k) {
            let _ = s.upsert(&ind, &tr, &FormerState::default());
        }
    }
    let start = Instant::now();
    let mut calls = 0u64;
    for k in 0..merges {
        let mut three = triple(k);
        let (target, tr) = three.remove(0);
        let absorbed: Vec<Absorbed> = three
            .into_iter()
            .map(|(indicator, translation)| Absorbed {
                indicator,
                translation,
                former: FormerState::default(),
            })
            .collect();
        match s.merge(&target, &tr, &FormerState::default(), &absorbed) {
            Ok(r) => calls += u64::from(r.api_calls),
            Err(e) => eprintln!("merge failed: {e}"),
        }
    }
    let rate = merges as f64 / start.elapsed().as_secs_f64();
    println!(
        "merges of 3 indicators (7 IOCs, 1 shared), 1 thread: {rate:>8.0} merges/s, {:.2} calls/merge",
        calls as f64 / merges as f64
    );
}
