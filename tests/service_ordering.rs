//! Ordering end to end: a create / update / update / delete / re-create burst on one indicator,
//! interleaved with many other indicators, through the real service with 16 workers and a
//! slow HarfangLab, applies in stream order: only the last pattern's value is left, and every
//! other indicator's value is there.

use crate::support::service::{run_options, start_sims, state_dir};
use harfanglab_intel::pipeline::{PipelineStats, Shutdown};
use harfanglab_intel::service;
use harfanglab_intel::sim::opencti::ScenarioEvent;
use harfanglab_intel::{OCTI_EXT, compare_event_ids, demo_config};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn stix(n: u32, name: &str, pattern: &str) -> Value {
    json!({
        "id": format!("indicator--00000002-0000-4000-8000-{n:012x}"),
        "spec_version": "2.1", "type": "indicator", "name": name,
        "pattern": pattern, "pattern_type": "stix", "revoked": false,
        "created": "2024-06-15T10:00:00.000Z", "modified": "2024-06-15T10:00:00.000Z",
        "valid_from": "2024-06-15T10:00:00.000Z",
        "extensions": {OCTI_EXT: {"extension_type": "property-extension",
            "id": format!("00000001-0000-4000-8000-{n:012x}"), "score": 70,
            "type": "Indicator", "stix_ids": []}},
    })
}

fn event(kind: &str, data: Value, context: Option<Value>) -> ScenarioEvent {
    let mut env = json!({"version": "4", "type": kind, "scope": "external",
        "message": format!("{kind}s an indicator"), "origin": {}, "data": data});
    if let Some(c) = context {
        env["context"] = c;
    }
    ScenarioEvent {
        event: kind.into(),
        data: env,
    }
}

fn ip_pattern(ip: &str) -> String {
    format!("[ipv4-addr:value = '{ip}']")
}

fn update(n: u32, from: &str, to: &str) -> ScenarioEvent {
    event(
        "update",
        stix(n, "burst", &ip_pattern(to)),
        Some(json!({
            "patch": [{"op": "replace", "path": "/pattern", "value": ip_pattern(to)}],
            "reverse_patch": [{"op": "replace", "path": "/pattern", "value": ip_pattern(from)}],
        })),
    )
}

#[test]
fn a_burst_on_one_indicator_applies_in_order_among_many_others() {
    const BURST: u32 = 1000;
    let steps = ["198.51.100.1", "198.51.100.2", "198.51.100.3"];
    let mut scenario = Vec::new();
    for i in 0..60u32 {
        scenario.push(event(
            "create",
            stix(
                i + 1,
                &format!("o-{i}"),
                &format!("[domain-name:value = 'o-{i}.order.example']"),
            ),
            None,
        ));
        match i {
            5 => scenario.push(event(
                "create",
                stix(BURST, "burst", &ip_pattern(steps[0])),
                None,
            )),
            15 => scenario.push(update(BURST, steps[0], steps[1])),
            25 => scenario.push(update(BURST, steps[1], steps[2])),
            35 => scenario.push(event(
                "delete",
                stix(BURST, "burst", &ip_pattern(steps[2])),
                None,
            )),
            45 => scenario.push(event(
                "create",
                stix(BURST, "burst", &ip_pattern("198.51.100.4")),
                None,
            )),
            _ => {}
        }
    }
    let (mut octi, hl) = start_sims(scenario, Duration::from_millis(5));
    let dir = state_dir("ordering");
    let config = demo_config(&octi.base_url(), hl.base_url(), &dir, Some(16));
    let last = octi.event_ids().last().cloned().unwrap();
    let stats = PipelineStats::new();
    let shutdown = Shutdown::new();
    let opts = run_options(&stats);
    let result = std::thread::scope(|s| {
        let h = s.spawn(|| service::run_with(&config, &shutdown, opts));
        let deadline = Instant::now() + Duration::from_secs(60);
        while stats
            .snapshot()
            .watermark
            .is_none_or(|w| compare_event_ids(&w, &last) == std::cmp::Ordering::Less)
        {
            assert!(Instant::now() < deadline && !h.is_finished(), "stalled");
            std::thread::sleep(Duration::from_millis(20));
        }
        shutdown.trigger();
        h.join().unwrap()
    });
    let summary = result.expect("service");
    assert_eq!(summary.stats.failed, 0);
    let mut values: Vec<String> = hl.ioc_rules().into_iter().map(|r| r.value).collect();
    values.sort();
    let mut want: Vec<String> = (0..60)
        .map(|i| format!("o-{i}.order.example"))
        .chain(std::iter::once("198.51.100.4".to_owned()))
        .collect();
    want.sort();
    assert_eq!(values, want);
    hl.shutdown();
    octi.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}
