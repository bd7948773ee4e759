//! The concrete event handler: OpenCTI answers from mockito, HarfangLab is the in-memory
//! `MemoryApi`, events are the committed fixtures (`fixtures/opencti/*.json`) decoded as the
//! stream reader decodes them. Checks what each kind of event does to HarfangLab, and how
//! failures are classified (retry / dead letter / fatal).

use harfanglab_intel::pipeline::{EventHandler, Outcome};
use harfanglab_intel::service::{self, Work, event_key};
use harfanglab_intel::{
    EventError, FailureKind, Fault, HarfangLabError, IocRule, OCTI_EXT, RuleComment, RuleKind,
    Target,
};
use mockito::Matcher;
use serde_json::{Value, json};
use std::time::Duration;

use crate::support::handler::{Fx, INTERNAL, decode_at, fixture, setup};

/// Decode a fixture line (`{"event", "data"}`) like the reader does.
fn work(line: &Value) -> Work {
    decode_at(line, "1718445600000-0")
}

fn key(w: &Work) -> String {
    match w {
        Work::Event(ev) => event_key(ev).unwrap(),
        _ => panic!(),
    }
}

impl Fx {
    fn handle(&self, w: &Work) -> Outcome {
        self.handler.handle("1718445600000-0", &key(w), w)
    }
}

/// The GraphQL answer for the indicator, with these linked observables.
fn gql_indicator(pattern: &str, observables: &[(&str, &str)]) -> String {
    let edges: Vec<Value> = observables
        .iter()
        .enumerate()
        .map(|(i, (t, v))| {
            json!({"node": {"id": obs_id(t, v), "standard_id": format!("sco--{i}"),
                "entity_type": t, "observable_value": v}})
        })
        .collect();
    json!({"data": {"indicator": {
        "id": INTERNAL, "standard_id": "indicator--00000002-0000-4000-8000-000000003d2b",
        "entity_type": "Indicator", "name": "1.2.3.4", "pattern_type": "stix",
        "pattern": pattern, "x_opencti_score": 80, "x_mitre_platforms": ["windows"],
        "revoked": false, "observables": {"edges": edges}}}})
    .to_string()
}

fn applied(o: &Outcome) {
    assert!(matches!(o, Outcome::Applied(_)), "{o:?}");
}

fn based_on(event: &str, target_type: &str, value: &str) -> Work {
    let mut line = fixture(if event == "create" {
        "based-on-create.json"
    } else {
        "based-on-delete.json"
    });
    let ext = &mut line["data"]["data"]["extensions"][OCTI_EXT];
    ext["target_type"] = json!(target_type);
    ext["target_value"] = json!(value);
    ext["target_ref"] = json!(obs_id(target_type, value));
    work(&line)
}

/// The internal id the mocked platform gives an observable.
fn obs_id(entity_type: &str, value: &str) -> String {
    format!("obs-{entity_type}-{value}")
}

#[test]
fn based_on_delete_keeps_a_value_another_linked_observable_provides() {
    let mut fx = setup();
    let m = fx.answer(gql_indicator(
        "[ipv4-addr:value = '1.2.3.4']",
        &[("Domain-Name", "x.example"), ("Hostname", "x.example")],
    ));
    applied(&fx.handle(&work(&fixture("indicator-create.json"))));
    assert_eq!(fx.values(), ["1.2.3.4", "x.example"]);
    // The read races the delete: both are still listed; the Hostname still provides x.example.
    applied(&fx.handle(&based_on("delete", "Domain-Name", "x.example")));
    assert_eq!(fx.values(), ["1.2.3.4", "x.example"]);
    m.remove();
    // The read after the delete lists only the Hostname: same answer.
    let m = fx.answer(gql_indicator(
        "[ipv4-addr:value = '1.2.3.4']",
        &[("Hostname", "x.example")],
    ));
    applied(&fx.handle(&based_on("delete", "Domain-Name", "x.example")));
    assert_eq!(fx.values(), ["1.2.3.4", "x.example"]);
    m.remove();
    // Unlinking the Hostname too releases it.
    let _m = fx.answer(gql_indicator("[ipv4-addr:value = '1.2.3.4']", &[]));
    applied(&fx.handle(&based_on("delete", "Hostname", "x.example")));
    assert_eq!(fx.values(), ["1.2.3.4"]);
}

#[test]
fn based_on_delete_releases_only_the_unlinked_observable() {
    let mut fx = setup();
    let m = fx.answer(gql_indicator(
        "[ipv4-addr:value = '1.2.3.4']",
        &[("IPv4-Addr", "9.9.9.9"), ("Domain-Name", "x.example")],
    ));
    let create = work(&fixture("indicator-create.json"));
    assert_eq!(key(&create), INTERNAL);
    applied(&fx.handle(&create));
    assert_eq!(fx.values(), ["1.2.3.4", "9.9.9.9", "x.example"]);
    // The read races the delete: the platform still lists the relationship. Only 9.9.9.9 goes.
    let rel = based_on("delete", "IPv4-Addr", "9.9.9.9");
    assert_eq!(
        key(&rel),
        INTERNAL,
        "a based-on counts as its source indicator"
    );
    applied(&fx.handle(&rel));
    assert_eq!(fx.values(), ["1.2.3.4", "x.example"]);
    m.remove();
    // Unlinking an observable the pattern names keeps its value.
    let m = fx.answer(gql_indicator(
        "[ipv4-addr:value = '1.2.3.4']",
        &[("Domain-Name", "x.example")],
    ));
    applied(&fx.handle(&based_on("delete", "IPv4-Addr", "1.2.3.4")));
    assert_eq!(fx.values(), ["1.2.3.4", "x.example"]);
    m.remove();
    // Indicator gone from the platform: release that observable only.
    let _null = fx.answer(json!({"data": {"indicator": null}}).to_string());
    applied(&fx.handle(&based_on("delete", "Domain-Name", "x.example")));
    assert_eq!(fx.values(), ["1.2.3.4"]);
}

#[test]
fn based_on_create_adds_the_observable_even_when_the_indicator_is_gone() {
    let mut fx = setup();
    let m = fx.answer(gql_indicator(
        "[ipv4-addr:value = '1.2.3.4']",
        &[("Url", "http://linked.example/a")],
    ));
    applied(&fx.handle(&based_on("create", "Url", "http://linked.example/a")));
    assert_eq!(fx.values(), ["1.2.3.4", "http://linked.example/a"]);
    m.remove();
    let _null = fx.answer(json!({"data": {"indicator": null}}).to_string());
    applied(&fx.handle(&based_on("create", "Domain-Name", "late.example")));
    assert_eq!(
        fx.values(),
        ["1.2.3.4", "http://linked.example/a", "late.example"]
    );
    // An observable type HarfangLab has no IOC type for is skipped, not failed.
    let o = fx.handle(&based_on("create", "Email-Addr", "a@b.example"));
    assert!(matches!(o, Outcome::Skipped(_)), "{o:?}");
}

/// The indicator created with pattern 1.2.3.4, then its pattern update (STIX, 1.2.3.4 →
/// 5.6.7.8) applied while the GraphQL read answers `read`.
fn after_pattern_update(read: String) -> Fx {
    let mut fx = setup();
    let m = fx.answer(gql_indicator("[ipv4-addr:value = '1.2.3.4']", &[]));
    applied(&fx.handle(&work(&fixture("indicator-create.json"))));
    assert_eq!(fx.values(), ["1.2.3.4"]);
    m.remove();
    let _m = fx.answer(read);
    applied(&fx.handle(&work(&fixture("indicator-update-pattern.json"))));
    fx
}

#[test]
fn pattern_update_releases_the_former_values() {
    let fx = after_pattern_update(gql_indicator("[ipv4-addr:value = '5.6.7.8']", &[]));
    assert_eq!(fx.values(), ["5.6.7.8"]);
}

#[test]
fn edited_observable_value_releases_the_former_value() {
    let mut fx = setup();
    let m = fx.answer(gql_indicator(
        "[ipv4-addr:value = '1.2.3.4']",
        &[("IPv4-Addr", "9.9.9.9")],
    ));
    applied(&fx.handle(&work(&fixture("indicator-create.json"))));
    assert_eq!(fx.values(), ["1.2.3.4", "9.9.9.9"]);
    m.remove();
    // The linked observable's value was edited 9.9.9.9 → 8.8.8.8; the pattern is unchanged.
    let path = format!("/extensions/{}/observable_values/0/value", OCTI_EXT);
    let mut line = fixture("indicator-update-pattern.json");
    line["data"]["context"] = json!({
        "patch": [{"op": "replace", "path": path, "value": "8.8.8.8"}],
        "reverse_patch": [{"op": "replace", "path": path, "value": "9.9.9.9"}],
    });
    let data = &mut line["data"]["data"];
    data["pattern"] = json!("[ipv4-addr:value = '1.2.3.4']");
    data["extensions"][OCTI_EXT]["observable_values"] =
        json!([{"type": "IPv4-Addr", "value": "8.8.8.8"}]);
    let _m = fx.answer(gql_indicator(
        "[ipv4-addr:value = '1.2.3.4']",
        &[("IPv4-Addr", "8.8.8.8")],
    ));
    applied(&fx.handle(&work(&line)));
    assert_eq!(fx.values(), ["1.2.3.4", "8.8.8.8"]);
}

/// `gql_indicator` with another pattern type.
fn gql_typed(pattern_type: &str, pattern: &str) -> String {
    let mut v: Value = serde_json::from_str(&gql_indicator(pattern, &[])).unwrap();
    v["data"]["indicator"]["pattern_type"] = json!(pattern_type);
    v.to_string()
}

const SIGMA: &str = "title: Suspicious cmd\nid: 6b1e9ef4-1b59-4d3a-9b8c-2f5c0e2a7d11\nlogsource:\n  category: process_creation\n  product: windows\ndetection:\n  sel:\n    Image|endswith: '\\cmd.exe'\n  condition: sel\nlevel: high\n";

/// An update whose `reverse_patch` says the pattern (and its type) were `pattern_type`/`pattern`.
fn type_change(pattern_type: &str, pattern: &str) -> Work {
    let mut line = fixture("indicator-update-pattern.json");
    line["data"]["context"]["reverse_patch"] = json!([
        {"op": "replace", "path": "/pattern_type", "value": pattern_type},
        {"op": "replace", "path": "/pattern", "value": pattern},
    ]);
    work(&line)
}

#[test]
fn pattern_type_change_releases_what_the_former_type_produced() {
    let mut fx = setup();
    // sigma → stix: the Sigma rule goes, the new IOC comes.
    let m = fx.answer(gql_typed("sigma", SIGMA));
    applied(&fx.handle(&work(&fixture("indicator-create.json"))));
    assert_eq!(fx.mem.rules(RuleKind::Sigma).len(), 1);
    m.remove();
    let m = fx.answer(gql_typed("stix", "[ipv4-addr:value = '1.2.3.4']"));
    applied(&fx.handle(&type_change("sigma", SIGMA)));
    assert!(fx.mem.rules(RuleKind::Sigma).is_empty());
    assert_eq!(fx.values(), ["1.2.3.4"]);
    m.remove();
    // stix → an unsupported type: skipped, but the former IOCs are released.
    let _m = fx.answer(gql_typed("snort", "alert tcp any any -> any any (sid:1;)"));
    let o = fx.handle(&type_change("stix", "[ipv4-addr:value = '1.2.3.4']"));
    assert!(matches!(o, Outcome::Skipped(_)), "{o:?}");
    assert!(fx.values().is_empty(), "{:?}", fx.values());
}

/// The former pattern is read with the type the event states, not the type of a read that is
/// already ahead of it: the pattern changed and, before the worker got to it, the type changed
/// too (the read answers Sigma). 1.2.3.4 still goes.
#[test]
fn former_iocs_follow_the_event_not_a_read_that_is_ahead() {
    let fx = after_pattern_update(gql_typed("sigma", SIGMA));
    assert!(fx.values().is_empty(), "{:?}", fx.values());
    assert_eq!(fx.mem.rules(RuleKind::Sigma).len(), 1);
}

#[test]
fn delete_releases_a_python_era_holder_recorded_under_an_older_stix_id() {
    let fx = setup();
    fx.mem.insert_ioc(IocRule {
        id: "r1".into(),
        ioc_type: "ip_both".into(),
        value: "5.6.7.8".into(),
        source_id: Some("ioc-src".into()),
        description: None,
        comment: Some(
            r#"{"indicator_id": "indicator--old", "indicator_score": 80, "indicator_platforms": []}"#
                .into(),
        ),
        enabled: true,
        hl_status: None,
    });
    let mut line = fixture("indicator-delete.json");
    line["data"]["data"]["extensions"][OCTI_EXT]["stix_ids"] = json!(["indicator--old"]);
    applied(&fx.handle(&work(&line)));
    assert!(fx.mem.iocs().is_empty(), "{:?}", fx.mem.iocs());
}

#[test]
fn indicator_delete_uses_the_payload_and_its_observable_values() {
    let mut fx = setup();
    let _m = fx.answer(gql_indicator(
        "[ipv4-addr:value = '5.6.7.8']",
        &[("IPv4-Addr", "1.2.3.4")],
    ));
    applied(&fx.handle(&work(&fixture("indicator-update-pattern.json"))));
    assert_eq!(fx.values(), ["1.2.3.4", "5.6.7.8"]);
    // The delete payload carries pattern 5.6.7.8 and observable_values [1.2.3.4]; no GraphQL.
    let mut line = fixture("indicator-delete.json");
    line["data"]["data"]["extensions"][OCTI_EXT]["observable_values"] =
        json!([{"type": "IPv4-Addr", "value": "1.2.3.4"}]);
    applied(&fx.handle(&work(&line)));
    assert!(fx.values().is_empty(), "{:?}", fx.values());
}

fn kind(o: &Outcome) -> FailureKind {
    match o {
        Outcome::Failed { kind, .. } => *kind,
        o => panic!("not a failure: {o:?}"),
    }
}

#[test]
fn failures_are_classified_retry_dead_letter_or_fatal() {
    let mut fx = setup();
    let create = work(&fixture("indicator-create.json"));
    // OpenCTI unavailable: retried as such, with its `Retry-After` for the owner's wait.
    let m = fx
        .server
        .mock("POST", "/graphql")
        .with_status(503)
        .with_header("retry-after", "4")
        .create();
    let o = fx.handle(&create);
    assert_eq!(
        kind(&o),
        FailureKind::Unavailable {
            retry_after: Some(Duration::from_secs(4))
        },
        "OpenCTI 503 is retried: {o:?}"
    );
    m.remove();
    // An OpenCTI 500 or a GraphQL error may be about this indicator: retried, and counted.
    let m = fx.server.mock("POST", "/graphql").with_status(500).create();
    assert_eq!(kind(&fx.handle(&create)), FailureKind::Transient);
    m.remove();
    let m = fx
        .server
        .mock("POST", "/graphql")
        .with_body(r#"{"errors":[{"message":"boom"}],"data":null}"#)
        .create();
    assert_eq!(kind(&fx.handle(&create)), FailureKind::Transient);
    m.remove();
    // HarfangLab throttling: unavailable with its `Retry-After`; a HarfangLab 500: transient.
    {
        let _m = fx.answer(gql_indicator("[ipv4-addr:value = '1.2.3.4']", &[]));
        let throttled = HarfangLabError::Status {
            op: "find IOCRule".into(),
            status: 429,
            body: "slow down".into(),
            retry_after: Some(Duration::from_secs(9)),
        };
        fx.mem.inject(Target::Any, Fault::Fail(throttled), Some(1));
        assert_eq!(
            kind(&fx.handle(&create)),
            FailureKind::Unavailable {
                retry_after: Some(Duration::from_secs(9))
            }
        );
        let broken = HarfangLabError::Status {
            op: "find IOCRule".into(),
            status: 500,
            body: "oops".into(),
            retry_after: None,
        };
        fx.mem.inject(Target::Any, Fault::Fail(broken), Some(1));
        assert_eq!(kind(&fx.handle(&create)), FailureKind::Transient);
        fx.mem.clear_faults();
        assert!(fx.values().is_empty(), "the failed attempts wrote nothing");
    }
    let m = fx.server.mock("POST", "/graphql").with_status(401).create();
    assert!(matches!(fx.handle(&create), Outcome::Fatal(_)));
    m.remove();
    let m = fx.server.mock("POST", "/graphql").with_status(401).create();
    assert!(matches!(fx.handle(&create), Outcome::Fatal(_)));
    m.remove();
    // Untranslatable pattern: dead letter, naming the problem.
    let _m = fx.answer(gql_indicator("[ipv4-addr:value = '1.2.3.4'", &[]));
    match fx.handle(&create) {
        Outcome::Failed {
            kind: FailureKind::Permanent,
            reason,
        } => assert!(reason.contains("invalid STIX pattern"), "{reason}"),
        o => panic!("{o:?}"),
    }
    // A malformed event is a dead letter naming its id.
    let bad = Work::Malformed(EventError {
        event_id: Some("1718445600000-0".into()),
        event: "create".into(),
        reason: "no data".into(),
    });
    let o = fx.handler.handle("1718445600000-0", "malformed:x", &bad);
    match o {
        Outcome::Failed {
            kind: FailureKind::Permanent,
            reason,
        } => assert!(reason.contains("1718445600000-0"), "{reason}"),
        o => panic!("{o:?}"),
    }
    assert!(fx.values().is_empty());
}

const ABSORBED: &str = "00000001-0000-4000-8000-0000000abcde";

/// A copy of the fixture indicator under the absorbed indicator's ids, with `pattern`.
fn absorbed_stix(pattern: &str) -> Value {
    let mut stix = fixture("indicator-create.json")["data"]["data"].clone();
    stix["id"] = json!("indicator--00000002-0000-4000-8000-0000000abcde");
    stix["name"] = json!("duplicate of 1.2.3.4");
    stix["pattern"] = json!(pattern);
    let ext = &mut stix["extensions"][OCTI_EXT];
    ext["id"] = json!(ABSORBED);
    ext["observable_values"] = json!([]);
    stix
}

impl Fx {
    /// Reads of the absorbed indicator answer "not found" until the mock is dropped.
    fn absorbed_is_gone(&mut self) -> mockito::Mock {
        self.server
            .mock("POST", "/graphql")
            .match_body(Matcher::PartialJson(json!({"variables": {"id": ABSORBED}})))
            .with_body(json!({"data": {"indicator": null}}).to_string())
            .create()
    }
}

/// The `merge` of the absorbed indicator into the fixture indicator (`storeMergeEvent`: the
/// target as merged, `context.sources` as they were).
fn merge(sources: Vec<Value>) -> Work {
    let mut line = fixture("indicator-create.json");
    line["event"] = json!("merge");
    line["data"]["type"] = json!("merge");
    line["data"]["message"] = json!("merges Indicator `duplicate of 1.2.3.4` in `1.2.3.4`");
    line["data"]["context"] = json!({"patch": [], "reverse_patch": [], "sources": sources, "deletions": [], "shifts": []});
    work(&line)
}

#[test]
fn merge_moves_the_absorbed_holds_to_the_target_and_releases_the_rest() {
    let mut fx = setup();
    let m = fx.answer(gql_indicator("[ipv4-addr:value = '1.2.3.4']", &[]));
    applied(&fx.handle(&work(&fixture("indicator-create.json"))));
    m.remove();
    // The absorbed indicator, created earlier: 1.2.3.4 (shared) and 7.7.7.7 (its own).
    let pattern = "[ipv4-addr:value = '1.2.3.4'] OR [ipv4-addr:value = '7.7.7.7']";
    let mut line = fixture("indicator-create.json");
    line["data"]["data"] = absorbed_stix(pattern);
    let created = work(&line);
    let _gone = fx.absorbed_is_gone();
    applied(&fx.handler.handle("1718445600001-0", ABSORBED, &created));
    assert_eq!(fx.values(), ["1.2.3.4", "7.7.7.7"]);

    let merged = merge(vec![absorbed_stix(pattern)]);
    let Work::Event(ev) = &merged else { panic!() };
    // Ordered after and before the absorbed indicator's own events too.
    assert_eq!(key(&merged), INTERNAL);
    assert_eq!(service::also_keys(ev), [ABSORBED]);
    let _m = fx.answer(gql_indicator("[ipv4-addr:value = '1.2.3.4']", &[]));
    applied(&fx.handle(&merged));
    assert_eq!(
        fx.values(),
        ["1.2.3.4"],
        "7.7.7.7 was only the absorbed one's"
    );
    let shared = &fx.mem.iocs()[0];
    let (comment, _) = RuleComment::decode(shared.comment.as_deref());
    let holders: Vec<&str> = comment.holders.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(holders, [INTERNAL]);
    assert!(shared.enabled);
    // The absorbed indicator's delete, if one ever comes: nothing to do.
    fx.mem.reset_calls();
    let mut delete = fixture("indicator-delete.json");
    delete["data"]["data"] = absorbed_stix(pattern);
    applied(
        &fx.handler
            .handle("1718445600003-0", ABSORBED, &work(&delete)),
    );
    assert_eq!(
        fx.mem.calls_to("update_ioc") + fx.mem.calls_to("delete_ioc"),
        0
    );
    assert_eq!(fx.values(), ["1.2.3.4"]);
}

#[test]
fn merge_into_an_unhandled_target_still_releases_the_absorbed() {
    let mut fx = setup();
    let _gone = fx.absorbed_is_gone();
    let mut line = fixture("indicator-create.json");
    line["data"]["data"] = absorbed_stix("[ipv4-addr:value = '7.7.7.7']");
    applied(&fx.handler.handle("1718445600001-0", ABSORBED, &work(&line)));
    assert_eq!(fx.values(), ["7.7.7.7"]);
    // The target is a snort indicator: it wants nothing here.
    let _m = fx.answer(gql_typed(
        "snort",
        "alert tcp any any -> any any (msg:\"x\";)",
    ));
    let merged = merge(vec![absorbed_stix("[ipv4-addr:value = '7.7.7.7']")]);
    applied(&fx.handle(&merged));
    assert!(fx.values().is_empty(), "{:?}", fx.values());
}
