//! Reconciliation at scale, and the inventory's memory.
//!
//! 1. **Inventory memory**: 1,000,000 IOC keys (and, separately, 1,000,000 rule names) put into
//!    an `Inventory` in this process: resident memory before and after, bytes per rule over the
//!    baseline, and the table size the inventory reports. Target ≤ 64 bytes per rule.
//! 2. **A pass over 100,000 indicators and 100,000 rules** at 10 ms simulated HarfangLab latency:
//!    the real binary's `reconcile` (a child process) against the OpenCTI simulator (recovery
//!    mode, 100,000 indicators) and the HarfangLab simulator seeded with the 100,000 IOC rules
//!    they want, 1 % of them missing and 1 % held by indicators OpenCTI no longer has. Prints the
//!    pass's time, its drift and repairs, and the child's peak RSS.
//!
//! `HLI_BENCH_PASS_N=20000` changes the size of the pass; `HLI_BENCH_PASS=0` skips it.
//! Run with `cargo bench --bench reconcile`.

use harfanglab_intel::sim::harfanglab::{self as hlsim, Faults, SimConfig};
use harfanglab_intel::sim::opencti::{self as octisim, OpenCtiSimConfig, ScenarioEvent};
use harfanglab_intel::{Inventory, IocKey, IocType, RuleKind};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const OCTI_EXT: &str = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba";

fn status_kb(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn inventory_memory() {
    const N: u64 = 1_000_000;
    println!("inventory memory ({N} rules, this process):");
    for what in ["IOC keys", "rule names"] {
        let before = status_kb("self", "VmRSS:");
        let inv = Inventory::new();
        let t0 = Instant::now();
        for n in 0..N {
            match what {
                "IOC keys" => inv.add_ioc(&IocKey {
                    ioc_type: IocType::DomainName,
                    value: format!("bench-{n}.example"),
                }),
                _ => inv.add_rule(RuleKind::Yara, None, &format!("bench_rule_{n}.yar")),
            }
        }
        inv.mark_complete();
        let after = status_kb("self", "VmRSS:");
        let per_rule = (after.saturating_sub(before) * 1024) as f64 / N as f64;
        println!(
            "  {what:<10}: RSS {:.1} MB -> {:.1} MB: {per_rule:.1} bytes per rule over the baseline (table {:.1} bytes per rule), built in {} ms",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            inv.table_bytes() as f64 / N as f64,
            t0.elapsed().as_millis()
        );
        drop(inv);
    }
}

fn indicator(n: u64) -> ScenarioEvent {
    let d = format!("pass-{n}.example");
    let data = json!({"version": "4", "type": "create", "scope": "external",
        "message": "creates an indicator", "origin": {},
        "data": {"id": format!("indicator--00000002-0000-4000-8000-{n:012x}"),
            "spec_version": "2.1", "type": "indicator", "name": d,
            "pattern": format!("[domain-name:value = '{d}']"),
            "pattern_type": "stix", "revoked": false,
            "extensions": {OCTI_EXT: {"id": internal(n), "score": 70, "type": "Indicator"}}}});
    ScenarioEvent {
        event: "create".into(),
        data,
    }
}

fn internal(n: u64) -> String {
    format!("00000001-0000-4000-8000-{n:012x}")
}

fn comment(holder: &str) -> String {
    json!({"indicator_id": null, "indicator_score": 70, "indicator_platforms": [],
        "holders": [{"id": holder, "standard_id": null, "score": 70, "platforms": []}]})
    .to_string()
}

fn pass(n: u64) {
    println!("\nreconciliation pass: {n} indicators, {n} rules, 10 ms HarfangLab latency:");
    let scenario: Vec<ScenarioEvent> = (0..n).map(indicator).collect();
    let octi = octisim::serve(
        "127.0.0.1:0",
        OpenCtiSimConfig {
            scenario,
            recover_mode: true,
            heartbeat: Duration::from_millis(500),
            ..OpenCtiSimConfig::default()
        },
    )
    .expect("opencti sim");
    let hl = hlsim::serve("127.0.0.1:0", SimConfig::default()).expect("harfanglab sim");
    // Every indicator's IOC, held by it; 1 % missing, and 1 % of rules held by gone indicators.
    let seeds: Vec<Value> = (0..n)
        .map(|k| {
            let (value, holder) = if k % 100 == 7 {
                (
                    format!("gone-{k}.example"),
                    format!("00000009-0000-4000-8000-{k:012x}"),
                )
            } else if k % 100 == 3 {
                (
                    format!("extra-{k}.example"),
                    format!("00000009-0000-4000-8000-{k:012x}"),
                )
            } else {
                (format!("pass-{k}.example"), internal(k))
            };
            json!({"resource": "IOCRule", "source": "from_OpenCTI", "type": "domain_name",
                "value": value, "comment": comment(&holder), "enabled": true,
                "hl_status": "stable", "description": ""})
        })
        .collect();
    let t = Instant::now();
    hl.seed(&seeds).expect("seed");
    println!(
        "  seeded {} rules in {} ms",
        seeds.len(),
        t.elapsed().as_millis()
    );
    drop(seeds);
    hl.set_faults(Faults {
        latency: Duration::from_millis(10),
        ..Faults::default()
    });
    let dir = std::env::temp_dir().join(format!("hli-bench-pass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let writes0 = hl.writes();
    let requests0 = hl.total_requests();
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_harfanglab-intel"))
        .arg("reconcile")
        .env_clear()
        .current_dir(&dir)
        .env("OPENCTI_URL", octi.base_url())
        .env("OPENCTI_TOKEN", "sim-token")
        .env("CONNECTOR_ID", "b0000000-0000-4000-8000-000000000002")
        .env("CONNECTOR_LIVE_STREAM_ID", "live")
        .env("CONNECTOR_LOG_LEVEL", "warn")
        .env("HARFANGLAB_INTEL_URL", hl.base_url())
        .env("HARFANGLAB_INTEL_TOKEN", "sim-token")
        .env("HARFANGLAB_INTEL_STATE_DIR", &dir)
        .env("HARFANGLAB_INTEL_REMOVE_INDICATOR", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn reconcile");
    let pid = child.id().to_string();
    let mut peak = 0;
    let status = loop {
        peak = peak.max(status_kb(&pid, "VmHWM:"));
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = t0.elapsed();
    let out = child
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    println!(
        "  exit {status}, {:.1} s, peak RSS {:.1} MB",
        elapsed.as_secs_f64(),
        peak as f64 / 1024.0
    );
    println!(
        "  HarfangLab: {} requests, {} writes",
        hl.total_requests() - requests0,
        hl.writes() - writes0
    );
    for line in out.lines() {
        println!("  | {line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    inventory_memory();
    if std::env::var("HLI_BENCH_PASS").is_ok_and(|v| v == "0") {
        return;
    }
    let n = std::env::var("HLI_BENCH_PASS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    pass(n);
}
