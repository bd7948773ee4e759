//! The HarfangLab simulator: raw HTTP behaviour (uniqueness, envelopes, strict slashes,
//! pagination, auth, faults, counters) and the real client driven against it end to end.

use harfanglab_intel::sim::harfanglab::{Faults, HarfangLabSim, SimConfig, serve};
use harfanglab_intel::{
    Client, ClientOptions, FailureKind, HarfangLabError, IocKey, IocRuleBody, IocType, RetryPolicy,
    Retryable, RuleBody, RuleFilter, RuleKind, Secret, SourceKind, ThreatIntelApi,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const TI: &str = "/api/data/threat_intelligence";

fn sim_with(config: SimConfig) -> HarfangLabSim {
    serve("127.0.0.1:0", config).expect("simulator")
}

fn lenient() -> HarfangLabSim {
    sim_with(SimConfig {
        max_connections: 64,
        ..SimConfig::default()
    })
}

struct Raw {
    status: u16,
    body: Value,
    location: Option<String>,
    retry_after: Option<String>,
}

/// One raw request, no redirects followed, any status readable.
fn raw(
    sim: &HarfangLabSim,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Raw {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .build()
        .into();
    let url = format!("{}{path}", sim.base_url());
    let auth = token.map(|t| format!("Token {t}"));
    let result = match (method, body) {
        ("GET" | "DELETE", _) => {
            let mut req = if method == "GET" {
                agent.get(&url)
            } else {
                agent.delete(&url)
            };
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.call()
        }
        (_, body) => {
            let mut req = match method {
                "POST" => agent.post(&url),
                "PUT" => agent.put(&url),
                _ => agent.patch(&url),
            };
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.header("Content-Type", "application/json")
                .send(body.unwrap_or(json!({})).to_string())
        }
    };
    let mut resp = result.expect("http exchange");
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let location = header("location");
    let retry_after = header("retry-after");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    Raw {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        location,
        retry_after,
    }
}

fn call(sim: &HarfangLabSim, method: &str, path: &str, body: Option<Value>) -> Raw {
    let token = sim.token().to_owned();
    raw(sim, method, path, Some(&token), body)
}

fn ioc(source: &str, ioc_type: &str, value: &str) -> Value {
    json!({"source_id": source, "type": ioc_type, "value": value, "description": "", "comment": "",
           "hl_status": "stable", "enabled": true})
}

const SIGMA: &str = "title: Suspicious PowerShell\nid: 5c6b4a0e-6e4c-4f0b-9d1a-2b3c4d5e6f70\ntags:\n  - attack.t1059.001\nlogsource: {product: windows}\ndetection: {sel: {Image: x}, condition: sel}\n";

#[test]
fn ioc_uniqueness_is_type_value_and_source() {
    let sim = lenient();
    let a = sim.add_source(SourceKind::Ioc, "a");
    let b = sim.add_source(SourceKind::Ioc, "b");
    let path = format!("{TI}/IOCRule/");
    let first = call(&sim, "POST", &path, Some(ioc(&a, "ip_both", "1.2.3.4")));
    assert_eq!(first.status, 201);
    assert_eq!(first.body["source"], json!(a));
    assert!(
        first.body["creation_date"]
            .as_str()
            .is_some_and(|d| d.ends_with('Z'))
    );
    let dup = call(&sim, "POST", &path, Some(ioc(&a, "ip_both", "1.2.3.4")));
    assert_eq!(dup.status, 400);
    assert_eq!(
        dup.body,
        json!({"__all__": ["['Ioc rule with this Type, Value and Source already exists.']"]})
    );
    assert_eq!(
        call(&sim, "POST", &path, Some(ioc(&a, "ip_src", "1.2.3.4"))).status,
        201
    );
    assert_eq!(
        call(&sim, "POST", &path, Some(ioc(&b, "ip_both", "1.2.3.4"))).status,
        201
    );
    let hash = "D41D8CD98F00B204E9800998ECF8427E";
    assert_eq!(
        call(&sim, "POST", &path, Some(ioc(&a, "hash", hash))).status,
        201
    );
    let dup = call(
        &sim,
        "POST",
        &path,
        Some(ioc(&a, "hash", &hash.to_lowercase())),
    );
    assert_eq!(dup.status, 400, "hashes are unique case-insensitively");
    assert_eq!(sim.ioc_rules().len(), 4);
    // A PATCH into an existing (type, value, source) is refused too.
    let id = first.body["id"].as_str().expect("id").to_owned();
    let other = call(&sim, "POST", &path, Some(ioc(&a, "ip_both", "5.6.7.8")));
    let other_id = other.body["id"].as_str().expect("id");
    let clash = call(
        &sim,
        "PATCH",
        &format!("{path}{other_id}/"),
        Some(json!({"value": "1.2.3.4"})),
    );
    assert_eq!(clash.status, 400);
    let ok = call(
        &sim,
        "PATCH",
        &format!("{path}{id}/"),
        Some(json!({"enabled": false})),
    );
    assert_eq!((ok.status, &ok.body["enabled"]), (200, &json!(false)));
}

#[test]
fn ioc_values_and_fields_are_validated() {
    let sim = lenient();
    let s = sim.add_source(SourceKind::Ioc, "s");
    let path = format!("{TI}/IOCRule/");
    let bad = call(&sim, "POST", &path, Some(ioc(&s, "hash", "xyz")));
    assert_eq!(bad.status, 400);
    assert!(bad.body["value"].is_array(), "{:?}", bad.body);
    let bad = call(&sim, "POST", &path, Some(ioc(&s, "hostname", "a.com")));
    assert!(bad.body["type"].is_array(), "{:?}", bad.body);
    let bad = call(&sim, "POST", &path, Some(ioc("missing", "url", "http://a")));
    assert!(bad.body["source_id"].is_array(), "{:?}", bad.body);
    let bad = call(
        &sim,
        "POST",
        &path,
        Some(json!({"source_id": s, "type": "url"})),
    );
    assert_eq!(bad.body, json!({"value": ["This field is required."]}));
    let bad = call(
        &sim,
        "POST",
        &path,
        Some(json!({"source_id": s, "type": "url", "value": "x", "hl_status": "bogus"})),
    );
    assert!(bad.body["hl_status"].is_array(), "{:?}", bad.body);
    let strict = sim_with(SimConfig {
        accept_sha512: false,
        max_connections: 64,
        ..SimConfig::default()
    });
    let s2 = strict.add_source(SourceKind::Ioc, "s");
    let r = call(
        &strict,
        "POST",
        &path,
        Some(ioc(&s2, "hash", &"a".repeat(128))),
    );
    assert_eq!(r.status, 400);
    assert_eq!(sim.writes(), 0);
}

#[test]
fn sigma_create_answers_the_status_envelope_and_uses_the_sigma_id() {
    let sim = lenient();
    let s = sim.add_source(SourceKind::Sigma, "s");
    let path = format!("{TI}/SigmaRule/");
    let body = json!({"source_id": s, "name": "PS", "content": SIGMA, "hl_status": "stable", "enabled": true});
    let r = call(&sim, "POST", &path, Some(body.clone()));
    assert_eq!(r.status, 200);
    let entry = &r.body["status"][0];
    assert_eq!(entry["status"], json!(true));
    assert_eq!(entry["code"], json!(201));
    assert_eq!(entry["id"], json!("5c6b4a0e-6e4c-4f0b-9d1a-2b3c4d5e6f70"));
    assert_eq!(entry["filename"], json!("PS"));
    let got = call(
        &sim,
        "GET",
        &format!("{path}5c6b4a0e-6e4c-4f0b-9d1a-2b3c4d5e6f70/"),
        None,
    );
    assert_eq!(got.body["rule_name"], json!("Suspicious PowerShell"));
    assert_eq!(got.body["rule_technique_tags"], json!(["attack.t1059.001"]));
    // Same Sigma id again: refused inside the envelope, unless overwrite.
    let dup = call(&sim, "POST", &path, Some(body.clone()));
    assert_eq!(dup.status, 200);
    assert_eq!(dup.body["status"][0]["status"], json!(false));
    assert!(
        dup.body["status"][0]["content"]
            .as_str()
            .is_some_and(|c| c.contains("already exists"))
    );
    let mut over = body.clone();
    over["overwrite"] = json!(true);
    over["name"] = json!("PS v2");
    let r = call(&sim, "POST", &path, Some(over));
    assert_eq!(r.body["status"][0]["status"], json!(true));
    assert_eq!(r.body["status"][0]["code"], json!(200));
    let rules = sim.sigma_rules();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].name, "PS v2");
    // Unparseable content is a failed entry; blank content and a long name are 400s.
    let bad = call(
        &sim,
        "POST",
        &path,
        Some(json!({"source_id": s, "name": "x", "content": "detection: {}"})),
    );
    assert_eq!(bad.status, 200);
    assert_eq!(bad.body["status"][0]["status"], json!(false));
    let blank = call(
        &sim,
        "POST",
        &path,
        Some(json!({"source_id": s, "name": "x", "content": " "})),
    );
    assert_eq!(blank.status, 400);
    let long = call(
        &sim,
        "POST",
        &path,
        Some(json!({"source_id": s, "name": "n".repeat(101), "content": SIGMA})),
    );
    assert!(long.body["name"].is_array(), "{:?}", long.body);
    // The Sigma id cannot change through PATCH.
    let other = SIGMA.replace(
        "5c6b4a0e-6e4c-4f0b-9d1a-2b3c4d5e6f70",
        "11111111-2222-3333-4444-555555555555",
    );
    let patch = call(
        &sim,
        "PATCH",
        &format!("{path}5c6b4a0e-6e4c-4f0b-9d1a-2b3c4d5e6f70/"),
        Some(json!({"content": other})),
    );
    assert_eq!(patch.status, 400);
}

#[test]
fn yara_files_get_rule_names_and_search() {
    let sim = lenient();
    let s = sim.add_source(SourceKind::Yara, "s");
    let path = format!("{TI}/YaraFile/");
    let content = "rule Alpha { condition: true }\nprivate rule Beta_2 { condition: Alpha }";
    let r = call(
        &sim,
        "POST",
        &path,
        Some(json!({"source_id": s, "name": "pack", "content": content})),
    );
    assert_eq!(r.body["status"][0]["status"], json!(true), "{:?}", r.body);
    let none = call(
        &sim,
        "POST",
        &path,
        Some(json!({"source_id": s, "name": "bad", "content": "hello"})),
    );
    assert_eq!(none.body["status"][0]["status"], json!(false));
    assert_eq!(sim.yara_files()[0].rule_names, vec!["Alpha", "Beta_2"]);
    let found = call(
        &sim,
        "GET",
        &format!("{path}?source_id={s}&search=beta"),
        None,
    );
    assert_eq!(found.body["count"], json!(1));
    let found = call(
        &sim,
        "GET",
        &format!("{path}?source_id={s}&rule_name__exact=Alpha"),
        None,
    );
    assert_eq!(found.body["count"], json!(1));
    let found = call(
        &sim,
        "GET",
        &format!("{path}?source_id={s}&name__exact=pac"),
        None,
    );
    assert_eq!(found.body["count"], json!(0));
}

#[test]
fn yara_meta_id_clash_is_a_failed_status_unless_overwrite() {
    let sim = lenient();
    let (s, other) = (
        sim.add_source(SourceKind::Yara, "s"),
        sim.add_source(SourceKind::Yara, "other"),
    );
    let path = format!("{TI}/YaraFile/");
    let file = |marker: &str| {
        format!("rule R_{marker} {{\n  meta:\n    id = \"meta-1\"\n  condition:\n    true\n}}\n")
    };
    let post = |source: &str, name: &str, content: String, overwrite: bool| {
        call(
            &sim,
            "POST",
            &path,
            Some(
                json!({"source_id": source, "name": name, "content": content, "overwrite": overwrite}),
            ),
        )
    };
    let first = post(&s, "one", file("a"), false);
    assert_eq!(
        first.body["status"][0]["status"],
        json!(true),
        "{:?}",
        first.body
    );
    let id = first.body["status"][0]["id"].as_str().unwrap().to_owned();

    // Same meta.id in the same source list: refused inside the envelope, nothing stored.
    let clash = post(&s, "two", file("b"), false);
    assert_eq!(clash.status, 200);
    assert_eq!(clash.body["status"][0]["status"], json!(false));
    assert!(
        clash.body["status"][0]["content"]
            .as_str()
            .is_some_and(|m| m.contains("already exists") && m.contains("one"))
    );
    assert_eq!(sim.yara_files().len(), 1);

    // Another source list is another namespace.
    let elsewhere = post(&other, "two", file("b"), false);
    assert_eq!(elsewhere.body["status"][0]["status"], json!(true));

    // overwrite replaces the clashing file, keeping its id.
    let over = post(&s, "two", file("c"), true);
    assert_eq!(over.body["status"][0]["status"], json!(true));
    assert_eq!(over.body["status"][0]["id"], json!(id));
    let ours: Vec<_> = sim
        .yara_files()
        .into_iter()
        .filter(|f| f.source_id.as_deref() == Some(s.as_str()))
        .collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(
        (ours[0].name.as_str(), ours[0].rule_names.clone()),
        ("two", vec!["R_c".to_owned()])
    );

    // A PATCH that would give another file the same meta.id is a 400.
    let plain = post(&s, "plain", "rule Plain { condition: true }".into(), false);
    let plain_id = plain.body["status"][0]["id"].as_str().unwrap().to_owned();
    let patch = call(
        &sim,
        "PATCH",
        &format!("{path}{plain_id}/"),
        Some(json!({"content": file("d")})),
    );
    assert_eq!(patch.status, 400, "{:?}", patch.body);
    assert!(patch.body["content"].is_array());
}

#[test]
fn yara_rule_name_clash_is_refused_only_when_enabled() {
    for unique in [false, true] {
        let sim = sim_with(SimConfig {
            unique_yara_rule_names: unique,
            ..SimConfig::default()
        });
        let s = sim.add_source(SourceKind::Yara, "s");
        let path = format!("{TI}/YaraFile/");
        for name in ["one", "two"] {
            call(
                &sim,
                "POST",
                &path,
                Some(
                    json!({"source_id": s, "name": name, "content": "rule Same { condition: true }"}),
                ),
            );
        }
        let expected = if unique { 1 } else { 2 };
        assert_eq!(sim.yara_files().len(), expected, "unique={unique}");
    }
}

#[test]
fn lost_replies_apply_the_write_but_answer_502() {
    let sim = lenient();
    let src = sim.add_source(SourceKind::Ioc, "s");
    sim.set_faults(Faults {
        lost_reply_rate: 1.0,
        ..Faults::default()
    });
    let path = format!("{TI}/IOCRule/");
    let created = call(
        &sim,
        "POST",
        &path,
        Some(ioc(&src, "domain_name", "lost.example")),
    );
    assert_eq!(created.status, 502);
    assert_eq!(sim.ioc_rules().len(), 1, "the create was applied");
    // Reads and failed writes are answered as usual.
    assert_eq!(call(&sim, "GET", &path, None).status, 200);
    let again = call(
        &sim,
        "POST",
        &path,
        Some(ioc(&src, "domain_name", "lost.example")),
    );
    assert_eq!(again.status, 400);
    sim.set_faults(Faults::default());
    let id = sim.ioc_rules()[0].id.clone();
    assert_eq!(
        call(&sim, "DELETE", &format!("{path}{id}/"), None).status,
        204
    );
}

#[test]
fn strict_mode_redirects_slashless_paths() {
    let sim = sim_with(SimConfig {
        strict: true,
        max_connections: 64,
        ..SimConfig::default()
    });
    let slashless = format!("{TI}/IOCSource?name__exact=x");
    let r = call(&sim, "GET", &slashless, None);
    assert_eq!(r.status, 301);
    assert_eq!(
        r.location.as_deref(),
        Some(format!("{TI}/IOCSource/?name__exact=x").as_str())
    );
    let r = call(
        &sim,
        "POST",
        &format!("{TI}/IOCSource"),
        Some(json!({"name": "x"})),
    );
    assert_eq!(r.status, 301);
    assert!(
        sim.sources().is_empty(),
        "a redirected POST creates nothing"
    );
    assert_eq!(
        call(
            &sim,
            "POST",
            &format!("{TI}/IOCSource/"),
            Some(json!({"name": "x"}))
        )
        .status,
        201
    );
    // /api/version is canonical without the slash.
    assert_eq!(call(&sim, "GET", "/api/version", None).status, 200);

    let lenient = lenient();
    let r = call(
        &lenient,
        "POST",
        &format!("{TI}/IOCSource"),
        Some(json!({"name": "x"})),
    );
    assert_eq!(r.status, 201);
}

#[test]
fn lists_paginate_with_limit_offset_and_next() {
    let sim = lenient();
    let s = sim.add_source(SourceKind::Ioc, "s");
    for i in 0..25 {
        let r = call(
            &sim,
            "POST",
            &format!("{TI}/IOCRule/"),
            Some(ioc(&s, "domain_name", &format!("d{i}.example"))),
        );
        assert_eq!(r.status, 201);
    }
    let page = call(
        &sim,
        "GET",
        &format!("{TI}/IOCRule/?source_id={s}&limit=10"),
        None,
    );
    assert_eq!(page.body["count"], json!(25));
    assert_eq!(page.body["results"].as_array().map(Vec::len), Some(10));
    let next = page.body["next"].as_str().expect("next");
    assert!(
        next.starts_with(sim.base_url()) && next.contains("offset=10"),
        "{next}"
    );
    assert_eq!(page.body["previous"], Value::Null);
    let last = call(
        &sim,
        "GET",
        &format!("{TI}/IOCRule/?source_id={s}&limit=10&offset=20"),
        None,
    );
    assert_eq!(last.body["results"].as_array().map(Vec::len), Some(5));
    assert_eq!(last.body["results"][0]["value"], json!("d20.example"));
    assert_eq!(last.body["next"], Value::Null);
    // Unknown filters are ignored, as django-filter does.
    let all = call(
        &sim,
        "GET",
        &format!("{TI}/IOCRule/?valeu__exact=nothing"),
        None,
    );
    assert_eq!(all.body["count"], json!(25));

    let relative = sim_with(SimConfig {
        absolute_next: false,
        max_connections: 64,
        ..SimConfig::default()
    });
    let s = relative.add_source(SourceKind::Ioc, "s");
    for i in 0..3 {
        call(
            &relative,
            "POST",
            &format!("{TI}/IOCRule/"),
            Some(ioc(&s, "url", &format!("http://x/{i}"))),
        );
    }
    let page = call(&relative, "GET", &format!("{TI}/IOCRule/?limit=2"), None);
    assert!(
        page.body["next"]
            .as_str()
            .is_some_and(|n| n.starts_with("/api/")),
        "{:?}",
        page.body
    );
}

#[test]
fn auth_failures_use_drf_details() {
    let sim = lenient();
    let path = format!("{TI}/IOCSource/");
    let r = raw(&sim, "GET", &path, None, None);
    assert_eq!(
        (r.status, r.body),
        (
            401,
            json!({"detail": "Authentication credentials were not provided."})
        )
    );
    let r = raw(&sim, "GET", &path, Some("wrong"), None);
    assert_eq!(
        (r.status, r.body),
        (401, json!({"detail": "Invalid token."}))
    );
    let r = raw(&sim, "GET", &path, Some("sim-forbidden-token"), None);
    assert_eq!(r.status, 403);
    assert_eq!(
        raw(&sim, "GET", "/api/version", None, None).body,
        json!({"version": "9.11.0"})
    );
    assert_eq!(
        call(&sim, "GET", &format!("{TI}/IOCRule/nope/"), None).body,
        json!({"detail": "Not found."})
    );
    assert_eq!(
        call(&sim, "DELETE", &format!("{TI}/IOCRule/nope/"), None).status,
        404
    );
}

#[test]
fn faults_are_injected_at_runtime() {
    let sim = lenient();
    let path = format!("{TI}/IOCSource/");
    sim.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    assert_eq!(call(&sim, "GET", &path, None).status, 503);
    sim.set_faults(Faults {
        hangup: true,
        ..Faults::default()
    });
    let (client, _tx) = client_for(&sim);
    let err = client.probe().unwrap_err();
    assert!(
        matches!(err, HarfangLabError::Unreachable { .. }),
        "{err:?}"
    );
    assert_eq!(client.stats().retries(), 10);
    sim.set_faults(Faults {
        throttle_rate: 1.0,
        retry_after_secs: Some(7),
        ..Faults::default()
    });
    let r = call(&sim, "GET", &path, None);
    assert_eq!((r.status, r.retry_after.as_deref()), (429, Some("7")));
    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    assert_eq!(call(&sim, "GET", &path, None).status, 500);
    // About half the requests fail at a 0.5 rate, the same ones for the same seed.
    let run = || {
        let sim = sim_with(SimConfig {
            seed: 42,
            max_connections: 64,
            faults: Faults {
                error_rate: 0.5,
                ..Faults::default()
            },
            ..SimConfig::default()
        });
        (0..40)
            .map(|_| call(&sim, "GET", &path, None).status)
            .collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first, run());
    let failures = first.iter().filter(|s| **s == 500).count();
    assert!((8..=32).contains(&failures), "{failures}");
    sim.set_faults(Faults::default());
    assert_eq!(call(&sim, "GET", &path, None).status, 200);
}

/// Latency is a wait in each handler thread, so concurrent requests overlap.
#[test]
fn latency_does_not_serialise_requests() {
    let sim = lenient();
    sim.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    });
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert_eq!(call(&sim, "GET", "/api/version", None).status, 200));
        }
    });
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(1100),
        "serialised: {elapsed:?}"
    );
}

#[test]
fn counters_track_requests_and_writes_and_reset() {
    let sim = lenient();
    let s = sim.add_source(SourceKind::Ioc, "s");
    let r = call(
        &sim,
        "POST",
        &format!("{TI}/IOCRule/"),
        Some(ioc(&s, "url", "http://a")),
    );
    let id = r.body["id"].as_str().expect("id").to_owned();
    call(&sim, "GET", &format!("{TI}/IOCRule/{id}/"), None);
    call(&sim, "DELETE", &format!("{TI}/IOCRule/{id}/"), None);
    call(&sim, "DELETE", &format!("{TI}/IOCRule/{id}/"), None);
    call(&sim, "GET", "/api/version", None);
    assert_eq!(sim.requests("POST", "IOCRule"), 1);
    assert_eq!(sim.requests("DELETE", "IOCRule"), 2);
    assert_eq!(sim.requests("GET", "version"), 1);
    assert_eq!(sim.total_requests(), 5);
    assert_eq!(sim.writes(), 2);
    sim.reset_counters();
    assert_eq!((sim.total_requests(), sim.writes()), (0, 0));
    assert_eq!(sim.sources().len(), 1);
    sim.reset();
    assert!(sim.sources().is_empty());
}

#[test]
fn deleting_a_source_cascades_to_its_rules() {
    let sim = lenient();
    let s = sim.add_source(SourceKind::Ioc, "s");
    call(
        &sim,
        "POST",
        &format!("{TI}/IOCRule/"),
        Some(ioc(&s, "url", "http://a")),
    );
    assert_eq!(
        call(&sim, "DELETE", &format!("{TI}/IOCSource/{s}/"), None).status,
        204
    );
    assert!(sim.ioc_rules().is_empty());
}

#[test]
fn shutdown_closes_the_port() {
    let sim = lenient();
    let url = sim.base_url().to_owned();
    sim.shutdown();
    sim.shutdown();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    assert!(agent.get(format!("{url}/api/version")).call().is_err());
}

// ---- the real client against the simulator -------------------------------------------------

fn client_for(sim: &HarfangLabSim) -> (Client, crossbeam_channel::Sender<()>) {
    let mut opts = ClientOptions::new(sim.base_url(), Secret::new(sim.token()));
    opts.proxy_from_env = false;
    opts.page_size = 7;
    opts.retry = RetryPolicy {
        max_retries: 10,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    (Client::new(opts, rx).expect("client"), tx)
}

fn strict_sim() -> HarfangLabSim {
    sim_with(SimConfig {
        strict: true,
        max_connections: 64,
        ..SimConfig::default()
    })
}

#[test]
fn client_full_lifecycle_on_a_strict_server() {
    let sim = strict_sim();
    let (client, _tx) = client_for(&sim);
    let report = client.probe().expect("probe");
    assert_eq!(report.version.as_deref(), Some("9.11.0"));
    let lists = client.ensure_source_lists("from_OpenCTI").expect("lists");
    assert_eq!(sim.sources().len(), 3);
    let writes = sim.writes();
    assert_eq!(
        client.ensure_source_lists("from_OpenCTI").expect("again"),
        lists
    );
    assert_eq!(
        sim.writes(),
        writes,
        "existing lists are found, not re-created"
    );

    let body = IocRuleBody {
        source_id: lists.ioc.clone(),
        ioc_type: IocType::Hash,
        value: "d41d8cd98f00b204e9800998ecf8427e".into(),
        description: "d".into(),
        comment: "{}".into(),
        hl_status: "stable".into(),
        enabled: true,
    };
    let created = client.create_ioc(&body).expect("create");
    let dup = client.create_ioc(&body).unwrap_err();
    assert!(
        matches!(dup, HarfangLabError::AlreadyExists { .. }),
        "{dup:?}"
    );
    let key = IocKey {
        ioc_type: IocType::Hash,
        value: body.value.clone(),
    };
    assert_eq!(
        client
            .find_ioc(&lists.ioc, &key)
            .expect("find")
            .map(|r| r.id),
        Some(created.id.clone())
    );
    let mut off = body.clone();
    off.enabled = false;
    assert!(
        !client
            .update_ioc(&created.id, &off)
            .expect("update")
            .enabled
    );
    client.delete_ioc(&created.id).expect("delete");
    client
        .delete_ioc(&created.id)
        .expect("delete again is fine");
    assert_eq!(client.find_ioc(&lists.ioc, &key).expect("find"), None);

    let rule = RuleBody {
        source_id: lists.sigma.clone(),
        name: "PS".into(),
        content: SIGMA.into(),
        hl_status: "stable".into(),
        enabled: true,
        overwrite: false,
    };
    let created = client.create_rule(RuleKind::Sigma, &rule).expect("sigma");
    assert_eq!(created.id, "5c6b4a0e-6e4c-4f0b-9d1a-2b3c4d5e6f70");
    let again = client.create_rule(RuleKind::Sigma, &rule).unwrap_err();
    assert!(
        matches!(again, HarfangLabError::AlreadyExists { .. }),
        "{again:?}"
    );
    let fetched = client
        .get_rule(RuleKind::Sigma, &created.id)
        .expect("get")
        .expect("exists");
    assert_eq!(fetched.rule_name.as_deref(), Some("Suspicious PowerShell"));
    let mut renamed = rule.clone();
    renamed.name = "PS2".into();
    assert_eq!(
        client
            .update_rule(RuleKind::Sigma, &created.id, &renamed)
            .expect("patch")
            .name,
        "PS2"
    );
    let bad = RuleBody {
        content: "not: [a sigma rule".into(),
        ..rule.clone()
    };
    assert!(matches!(
        client.create_rule(RuleKind::Sigma, &bad).unwrap_err(),
        HarfangLabError::RuleRejected {
            code: Some(400),
            ..
        }
    ));
    client
        .delete_rule(RuleKind::Sigma, &created.id)
        .expect("delete");
    assert_eq!(
        client.get_rule(RuleKind::Sigma, &created.id).expect("get"),
        None
    );

    // Duplicate Yara names across pages (page size 7).
    for i in 0..16 {
        let y = RuleBody {
            source_id: lists.yara.clone(),
            name: if i % 2 == 0 {
                "same".into()
            } else {
                format!("y{i}")
            },
            content: format!("rule r{i} {{ condition: true }}"),
            hl_status: "stable".into(),
            enabled: true,
            overwrite: false,
        };
        client.create_rule(RuleKind::Yara, &y).expect("yara");
    }
    let same = client
        .find_rules(
            RuleKind::Yara,
            &lists.yara,
            &RuleFilter::Name("same".into()),
        )
        .expect("find");
    assert_eq!(same.len(), 8);
    let all = client
        .find_rules(RuleKind::Yara, &lists.yara, &RuleFilter::All)
        .expect("all");
    assert_eq!(all.len(), 16);
    let hits = client
        .find_rules(
            RuleKind::Yara,
            &lists.yara,
            &RuleFilter::Search("r15".into()),
        )
        .expect("search");
    assert_eq!(
        hits.iter()
            .map(|r| r.rule_names.clone())
            .collect::<Vec<_>>(),
        vec![vec!["r15".to_owned()]]
    );
    // No redirect of any code on the way.
    let redirects: Vec<_> = client
        .stats()
        .snapshot()
        .into_iter()
        .filter(|(op, status, _)| *op == "find_rules" && status.starts_with('3'))
        .collect();
    assert!(redirects.is_empty(), "{redirects:?}");
}

/// Retry `call` while it fails for a retryable reason, as the pipeline retries an event (the
/// client itself only resends a dropped connection). Checks each failure's kind on the way.
fn until_ok<T>(
    failures: &mut Vec<FailureKind>,
    mut call: impl FnMut() -> Result<T, HarfangLabError>,
) -> T {
    for _ in 0..200 {
        match call() {
            Ok(v) => return v,
            Err(e) if e.is_retryable() => failures.push(e.failure_kind()),
            Err(e) => panic!("not retryable: {e:?}"),
        }
    }
    panic!("still failing after 200 attempts");
}

#[test]
fn client_faults_come_back_classified_and_a_retry_gets_through() {
    let sim = sim_with(SimConfig {
        seed: 7,
        max_connections: 64,
        faults: Faults {
            error_rate: 0.2,
            throttle_rate: 0.2,
            retry_after_secs: Some(0),
            ..Faults::default()
        },
        ..SimConfig::default()
    });
    let (client, _tx) = client_for(&sim);
    let mut failures = Vec::new();
    let lists = until_ok(&mut failures, || client.ensure_source_lists("x"));
    for i in 0..30 {
        let body = IocRuleBody {
            source_id: lists.ioc.clone(),
            ioc_type: IocType::DomainName,
            value: format!("d{i}.example"),
            description: String::new(),
            comment: String::new(),
            hl_status: "stable".into(),
            enabled: true,
        };
        until_ok(&mut failures, || client.create_ioc(&body));
    }
    assert_eq!(sim.ioc_rules().len(), 30);
    // The simulated 500s are transient, the 429s unavailable with their `Retry-After: 0`.
    let throttled = FailureKind::Unavailable {
        retry_after: Some(Duration::ZERO),
    };
    assert!(failures.contains(&FailureKind::Transient), "{failures:?}");
    assert!(failures.contains(&throttled), "{failures:?}");
    assert!(
        failures
            .iter()
            .all(|k| *k == FailureKind::Transient || *k == throttled),
        "{failures:?}"
    );
    // Nothing was waited for or resent inside the client.
    assert_eq!(client.stats().retries(), 0);
}

#[test]
fn client_sees_a_forbidden_token_at_probe() {
    let sim = lenient();
    let mut opts = ClientOptions::new(sim.base_url(), Secret::new("sim-forbidden-token"));
    opts.proxy_from_env = false;
    let (_tx, rx) = crossbeam_channel::unbounded();
    let client = Client::new(opts, rx).expect("client");
    assert!(matches!(
        client.probe().unwrap_err(),
        HarfangLabError::Forbidden { .. }
    ));
}

#[test]
fn seeding_keeps_python_comments_mixed_case_and_disabled_rules_and_names_a_bad_entry() {
    let sim = sim_with(SimConfig::default());
    let dir = std::env::temp_dir().join(format!("hli-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("seed.jsonl");
    std::fs::write(
        &file,
        concat!(
            "# a rule the Python connector wrote, with its casing\n",
            r#"{"resource":"IOCRule","source":"from_OpenCTI","type":"domain_name","value":"Evil.COM","comment":"{\"indicator_id\":\"indicator--1\"}","enabled":false}"#,
            "\n",
            r#"{"resource":"SigmaRule","source":"from_OpenCTI","name":"T","content":"title: T\nlogsource:\n  product: windows\ndetection:\n  s:\n    a: b\n  condition: s\n"}"#,
            "\n"
        ),
    )
    .unwrap();
    let ids = sim.seed_file(&file).unwrap();
    assert_eq!(ids.len(), 2);
    let iocs = sim.ioc_rules();
    assert_eq!(iocs[0].value, "Evil.COM");
    assert!(!iocs[0].enabled);
    assert!(iocs[0].comment.as_deref().unwrap().contains("indicator--1"));
    assert_eq!(sim.sigma_rules().len(), 1);
    // One list of each kind was created, by name.
    assert_eq!(sim.sources().len(), 2);
    let err = sim
        .seed(&[json!({"resource": "IOCRule", "source": "from_OpenCTI", "type": "ip_both", "value": "not an ip"})])
        .unwrap_err();
    assert!(err.contains("seed entry 1"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
