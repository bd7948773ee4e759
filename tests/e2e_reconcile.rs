//! Reconciliation end to end: the real binary (`reconcile`, and `run`'s pass after the catch-up)
//! against both simulators, the OpenCTI one in recovery mode, the HarfangLab one pre-seeded with
//! drift: every class repaired, dry-run changing nothing, the mass-deletion guard tripping on an
//! empty OpenCTI answer, and a live update racing a pass.

use crate::support::e2e::*;
use harfanglab_intel::sim::harfanglab::Faults;
use harfanglab_intel::sim::opencti::ScenarioEvent;
use harfanglab_intel::{RuleKind, rule_holders};
use serde_json::{Value, json};
use std::process::Output;
use std::time::Duration;

const LIST: &str = "from_OpenCTI";
const TIMEOUT: Duration = Duration::from_secs(60);
const SIGMA: &str = "title: Suspicious cmd\nid: 6b1e9ef4-1b59-4d3a-9b8c-2f5c0e2a7d11\nlogsource:\n  product: windows\ndetection:\n  sel:\n    Image|endswith: '\\cmd.exe'\n  condition: sel\n";

fn domain_create(n: u64, domain: &str) -> ScenarioEvent {
    let pattern = format!("[domain-name:value = '{domain}']");
    create_from(&indicator_stix(n, 0, domain, &pattern, 60))
}

/// A comment as this connector writes it, held by `ids`.
fn ours(ids: &[String]) -> String {
    let holders: Vec<Value> = ids
        .iter()
        .map(|i| json!({"id": i, "standard_id": null, "score": null, "platforms": []}))
        .collect();
    json!({"indicator_id": ids.first(), "indicator_score": null, "indicator_platforms": [], "holders": holders})
        .to_string()
}

/// A comment as the Python connector wrote it (one indicator, by standard id).
fn python(standard: &str) -> String {
    json!({"indicator_id": standard, "indicator_score": 60, "indicator_platforms": []}).to_string()
}

fn ioc_seed(ty: &str, value: &str, comment: &str, enabled: bool) -> Value {
    json!({"resource": "IOCRule", "source": LIST, "type": ty, "value": value,
        "comment": comment, "enabled": enabled, "hl_status": "stable", "description": ""})
}

/// A world whose OpenCTI simulator recovers (`recover=` gives the current state) and whose
/// HarfangLab simulator holds `seed`.
fn world(scenario: Vec<ScenarioEvent>, seed: &[Value]) -> World {
    world_with(scenario, seed, true)
}

fn world_with(scenario: Vec<ScenarioEvent>, seed: &[Value], recover_mode: bool) -> World {
    let w = World::start_with(scenario, Faults::default(), 1, |c| {
        c.recover_mode = recover_mode
    });
    w.hl.seed(seed).expect("seed");
    w
}

fn reconcile(w: &World, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut opts = w.opts().workers(4);
    for (k, v) in env {
        opts = opts.env(k, v);
    }
    let mut all = vec!["reconcile"];
    all.extend_from_slice(args);
    w.command(&opts, &all).output().expect("run reconcile")
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The seeded drift, one of each class, and the indicators that want what is seeded.
fn drift_world(recover_mode: bool) -> (World, Vec<Value>) {
    let scenario = vec![
        create_ip(1, "10.0.0.1", 60),             // missing: its IOC is absent
        domain_create(2, "evil.com"),             // Python format, mixed case
        domain_create(3, "dup.com"),              // two rules normalise to it
        create_sigma(4, "Suspicious cmd", SIGMA), // content edited by hand
        domain_create(5, "off.com"),              // disabled by hand while held
    ];
    let edited = rule_holders::join(
        RuleKind::Sigma,
        &{
            let mut h = rule_holders::RuleHolders::default();
            h.add(&internal_id(4), &[]);
            h
        },
        &SIGMA.replace("cmd.exe", "powershell.exe"),
    );
    let seed = vec![
        ioc_seed("domain_name", "Evil.COM", &python(&standard_id(2, 0)), true),
        ioc_seed("domain_name", "Dup.com", &python(&standard_id(3, 0)), true),
        ioc_seed("domain_name", "dup.com", &ours(&[internal_id(3)]), true),
        ioc_seed("domain_name", "off.com", &ours(&[internal_id(5)]), false),
        // Held by an indicator OpenCTI no longer has.
        ioc_seed(
            "domain_name",
            "gone.com",
            &ours(&["00000009-dead-4000-8000-000000000001".into()]),
            true,
        ),
        // Held by indicator 1, whose pattern no longer names it.
        ioc_seed("domain_name", "old.com", &ours(&[internal_id(1)]), true),
        // Not ours to touch: another list.
        json!({"resource": "IOCRule", "source": "someone_else", "type": "domain_name",
            "value": "gone.com", "comment": ours(&["x".into()]), "enabled": true}),
        json!({"resource": "SigmaRule", "source": LIST, "name": "Suspicious cmd",
            "content": edited, "enabled": true}),
        // Enough held objects that one orphan stays under the guard's 20 %.
        ioc_seed("domain_name", "keep1.com", &ours(&[internal_id(2)]), true),
        ioc_seed("domain_name", "keep2.com", &ours(&[internal_id(2)]), true),
    ];
    let w = world_with(scenario, &seed, recover_mode);
    (w, seed)
}

#[test]
fn each_drift_class_is_repaired_from_a_seeded_state() {
    let (w, _) = drift_world(true);
    let before_foreign =
        w.hl.ioc_rules()
            .into_iter()
            .filter(|r| r.value == "gone.com")
            .count();
    assert_eq!(before_foreign, 2);
    let out = reconcile(&w, &["--json"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let records = lines(&out);
    let has = |class: &str, action: &str| {
        records
            .iter()
            .any(|r| r["class"] == class && r["action"] == action)
    };
    for (class, action) in [
        ("missing", "create"),
        ("python_format", "adopt"),
        ("duplicate", "normalise"),
        ("duplicate", "merge"),
        ("content", "restore"),
        ("disabled", "report"),
        ("orphaned", "release"),
    ] {
        assert!(has(class, action), "no {class}/{action} in\n{}", text(&out));
    }
    assert!(
        records
            .iter()
            .all(|r| r["result"] == "repaired" || r["result"] == "reported"),
        "{}",
        text(&out)
    );

    let s = snapshot(&w.hl);
    let rules = w.hl.ioc_rules();
    let ours_list = |v: &str| {
        rules
            .iter()
            .filter(|r| {
                r.value.eq_ignore_ascii_case(v)
                    && r.comment.as_deref().is_some_and(|c| !c.contains("\"x\""))
            })
            .count()
    };
    // missing: created and held by indicator 1.
    assert_eq!(s.holder_ids("ip_both", "10.0.0.1"), vec![internal_id(1)]);
    // Python format + mixed case: one rule, normalised, held by indicator 2's internal id.
    assert!(rules.iter().any(|r| r.value == "evil.com"));
    assert!(!rules.iter().any(|r| r.value == "Evil.COM"));
    assert_eq!(
        s.holder_ids("domain_name", "evil.com"),
        vec![internal_id(2)]
    );
    // Duplicates merged into one rule held by indicator 3 (once).
    assert_eq!(ours_list("dup.com"), 1);
    assert_eq!(s.holder_ids("domain_name", "dup.com"), vec![internal_id(3)]);
    // Content restored, holder kept.
    let sigma = w.hl.sigma_rules();
    assert_eq!(sigma.len(), 1);
    assert_eq!(
        rule_holders::split(RuleKind::Sigma, &sigma[0].content).1,
        SIGMA
    );
    // Disabled by hand: still disabled, still held.
    let off = s.ioc("domain_name", "off.com").expect("off.com kept");
    assert!(!off.enabled);
    // Orphaned: deleted (remove_indicator=true); the other list's rule untouched.
    assert_eq!(ours_list("gone.com"), 0);
    assert_eq!(
        rules.iter().filter(|r| r.value == "gone.com").count(),
        1,
        "the rule in another list must stay"
    );
    assert_eq!(
        ours_list("old.com"),
        0,
        "a hold the indicator no longer wants is released"
    );

    // A second pass finds nothing left to repair (the hand-disabled rule is reported again).
    let again = reconcile(&w, &["--json"], &[]);
    assert!(again.status.success(), "{}", text(&again));
    let left: Vec<Value> = lines(&again)
        .into_iter()
        .filter(|r| r["class"] != "disabled")
        .collect();
    assert!(left.is_empty(), "{left:#?}");

    // With enforcement the hand-disabled rule comes back.
    let out = reconcile(
        &w,
        &[],
        &[("HARFANGLAB_INTEL_RECONCILE_ENFORCE_ENABLED", "true")],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(snapshot(&w.hl).is_live("domain_name", "off.com"));
}

#[test]
fn a_platform_that_replays_its_log_instead_of_recovering_is_folded_to_the_same_state() {
    let (recovered, _) = drift_world(true);
    let (replayed, _) = drift_world(false);
    for w in [&recovered, &replayed] {
        let out = reconcile(w, &[], &[]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_same_state(
        &snapshot(&recovered.hl),
        &snapshot(&replayed.hl),
        "log replay",
    );
    let q = |w: &World| w.octi.stream_requests()[0].query.clone();
    assert!(q(&replayed).contains("recover="), "{}", q(&replayed));
}

#[test]
fn dry_run_changes_nothing() {
    let (w, _) = drift_world(true);
    let before = snapshot(&w.hl);
    let writes = w.hl.writes();
    let out = reconcile(&w, &["--dry-run", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let records = lines(&out);
    assert!(records.len() >= 7, "{}", text(&out));
    assert!(
        records.iter().all(|r| r["result"] == "planned"),
        "{}",
        text(&out)
    );
    assert_eq!(w.hl.writes(), writes, "a dry run wrote to HarfangLab");
    assert_same_state(&before, &snapshot(&w.hl), "dry run");
}

#[test]
fn the_guard_trips_on_an_empty_opencti_answer_and_force_overrides_it() {
    let held: Vec<Value> = (0..5)
        .map(|n| {
            ioc_seed(
                "domain_name",
                &format!("held{n}.com"),
                &ours(&[internal_id(n)]),
                true,
            )
        })
        .collect();
    let w = world(Vec::new(), &held);
    let before = snapshot(&w.hl);
    let out = reconcile(&w, &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("mass-deletion guard"), "{all}");
    assert!(all.contains("5 of the 5"), "{all}");
    assert_same_state(&before, &snapshot(&w.hl), "guarded pass");
    let out = reconcile(&w, &["--force"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(snapshot(&w.hl).iocs.is_empty(), "{:#?}", snapshot(&w.hl));
}

#[test]
fn run_reconciles_after_the_catch_up_and_a_live_update_racing_the_pass_wins() {
    // 60 indicators; HarfangLab lost all their IOCs behind the connector's back after the
    // catch-up, so the pass has real work (60 creates at 20 ms each) while live updates move 10
    // of them to new addresses.
    let scenario: Vec<ScenarioEvent> = (0..60).map(|n| create_ip(n, &ip_for(n), 50)).collect();
    let w = World::start_with(scenario, Faults::default(), 1, |c| c.recover_mode = true);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
        .to_string();
    let opts = w
        .opts()
        .workers(4)
        .env("HARFANGLAB_INTEL_RECONCILE_INTERVAL", "3s")
        .env("CONNECTOR_EXPOSE_METRICS", "true")
        .env("CONNECTOR_METRICS_HOST", "127.0.0.1")
        .env("CONNECTOR_METRICS_PORT", &port);
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    let mut c = w.spawn(&opts);
    let last = w.last_event_id();
    w.wait_checkpoint(&mut c, &last, TIMEOUT);
    let log = c.log_path();
    wait_until(&mut c, "the first pass", TIMEOUT, || {
        log_count(&log, "reconciliation: pass done") >= 1
    });
    // Lose every IOC rule, then slow HarfangLab down so the next pass overlaps live updates.
    for r in w.hl.ioc_rules() {
        let _ = ureq_delete(&w, &r.id);
    }
    w.hl.set_faults(Faults {
        latency: Duration::from_millis(20),
        ..Faults::default()
    });
    wait_until(&mut c, "a second pass starting", TIMEOUT, || {
        log_count(&log, "reconciliation: pass starting") >= 2
    });
    for n in 0..10 {
        w.octi
            .append_event("update", update_envelope(n, &ip_for(n), &ip_for(1000 + n)));
    }
    // /healthz stays healthy while the pass runs.
    let mut probes = 0;
    wait_until(&mut c, "the second pass to end", TIMEOUT, || {
        let status = ureq::get(&healthz).call().map(|r| r.status().as_u16());
        assert_eq!(
            status.as_ref().ok(),
            Some(&200),
            "/healthz during a pass: {status:?}"
        );
        probes += 1;
        log_count(&log, "reconciliation: pass done") >= 2
    });
    assert!(probes > 1, "the pass ended before /healthz was asked");
    let last = w.last_event_id();
    w.wait_checkpoint(&mut c, &last, TIMEOUT);
    c.terminate_ok(Duration::from_secs(15));
    let s = snapshot(&w.hl);
    s.assert_no_duplicates();
    for n in 0..10 {
        assert!(
            s.is_live("ip_both", &ip_for(1000 + n)),
            "new ip of {n}: {s:#?}"
        );
        assert!(
            s.ioc("ip_both", &ip_for(n)).is_none(),
            "old ip of {n} came back: {s:#?}"
        );
    }
    for n in 10..60 {
        assert_eq!(
            s.holder_ids("ip_both", &ip_for(n)),
            vec![internal_id(n)],
            "{n}"
        );
    }
    assert_eq!(s.iocs.len(), 60);
}

fn update_envelope(n: u64, old_ip: &str, new_ip: &str) -> Value {
    update_ip(n, 0, old_ip, new_ip, false).data
}

fn log_count(log: &std::path::Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// Delete a rule behind the connector's back (as a person in the console would).
fn ureq_delete(w: &World, id: &str) -> Result<(), String> {
    let url = format!(
        "{}/api/data/threat_intelligence/IOCRule/{id}/",
        w.hl.base_url()
    );
    ureq::delete(&url)
        .header("Authorization", &format!("Token {HL_TOKEN}"))
        .call()
        .map(|_| ())
        .map_err(|e| e.to_string())
}
