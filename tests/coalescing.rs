//! Update storms through the concrete handler (issue 16): a burst of updates of one indicator
//! handed over as one batch reads the indicator from OpenCTI once and writes HarfangLab once,
//! and leaves HarfangLab exactly as applying the events one by one does, including the
//! cleanups of a pattern that changed A → B → C inside the burst. OpenCTI answers from mockito,
//! HarfangLab is the in-memory `MemoryApi`, events are the committed fixtures decoded as the
//! stream reader decodes them.

use harfanglab_intel::pipeline::{BatchItem, EventHandler, Outcome};
use harfanglab_intel::service::{Work, event_key};
use harfanglab_intel::{OCTI_EXT, RuleKind};
use serde_json::{Value, json};

use crate::support::handler::{Fx, INTERNAL, decode_at, fixture, setup};

fn work(line: &Value, id: &str) -> Work {
    decode_at(line, id)
}

/// The GraphQL answer for the indicator: `pattern`, and whether it is revoked.
fn gql(pattern: &str, revoked: bool) -> String {
    json!({"data": {"indicator": {
        "id": INTERNAL, "standard_id": "indicator--00000002-0000-4000-8000-000000003d2b",
        "entity_type": "Indicator", "name": "storm", "pattern_type": "stix",
        "pattern": pattern, "x_opencti_score": 80, "x_mitre_platforms": ["windows"],
        "revoked": revoked, "observables": {"edges": []}}}})
    .to_string()
}

const A: &str = "[ipv4-addr:value = '1.1.1.1' OR ipv4-addr:value = '2.2.2.2']";
const B: &str = "[ipv4-addr:value = '3.3.3.3']";
const B2: &str = "[ipv4-addr:value = '5.5.5.5' OR ipv4-addr:value = '2.2.2.2']";
const C: &str = "[ipv4-addr:value = '4.4.4.4' OR ipv4-addr:value = '2.2.2.2']";

/// An update whose payload has `pattern`; `former`: the pattern it replaced (`None`: only the
/// description changed).
fn update(n: usize, pattern: &str, former: Option<&str>) -> Work {
    let mut line = fixture("indicator-update-pattern.json");
    let (patch, reverse) = match former {
        Some(f) => (
            json!([{"op": "replace", "path": "/pattern", "value": pattern}]),
            json!([{"op": "replace", "path": "/pattern", "value": f}]),
        ),
        None => (
            json!([{"op": "replace", "path": "/description", "value": format!("edit {n}")}]),
            json!([{"op": "replace", "path": "/description", "value": format!("edit {}", n - 1)}]),
        ),
    };
    line["data"]["context"] = json!({"patch": patch, "reverse_patch": reverse});
    line["data"]["data"]["pattern"] = json!(pattern);
    line["data"]["data"]["extensions"][OCTI_EXT]["observable_values"] = json!([]);
    work(&line, &format!("{}-0", 1000 + n))
}

/// The storm after the indicator was created with A and its first update (A → B) ran alone
/// while OpenCTI was already at B2 (HarfangLab holds B2's values): 49 more updates, where
/// update 25 changes B → B2 and update 50 changes B2 → C; the rest edit the description.
fn storm_events() -> Vec<Work> {
    let mut evs = Vec::new();
    for n in 2..=50 {
        evs.push(match n {
            25 => update(n, B2, Some(B)),
            50 => update(n, C, Some(B2)),
            _ => update(n, if n < 25 { B } else { B2 }, None),
        });
    }
    evs
}

impl Fx {
    /// HarfangLab's IOC rules as comparable text (value, enabled, comment).
    fn state(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .mem
            .iocs()
            .into_iter()
            .map(|r| format!("{} {:?}", r.value, r.comment))
            .collect();
        v.sort();
        v
    }

    /// Created with A, first update (A → B) applied alone while the read already says B2.
    fn before_the_storm(&mut self) {
        let m = self.answer(gql(A, false));
        let create = work(&fixture("indicator-create.json"), "1000-0");
        applied(&self.handler.handle("1000-0", INTERNAL, &create));
        assert_eq!(self.values(), ["1.1.1.1", "2.2.2.2"]);
        m.remove();
        let m = self.answer(gql(B2, false));
        applied(
            &self
                .handler
                .handle("1001-0", INTERNAL, &update(1, B, Some(A))),
        );
        assert_eq!(self.values(), ["2.2.2.2", "5.5.5.5"]);
        m.remove();
        self.mem.reset_calls();
    }

    /// Apply `evs` as the pipeline would hand them over with coalescing: batches, each run
    /// again from the first event without an outcome. Returns the calls made.
    fn coalesced(&self, evs: &[Work]) -> usize {
        let mut rest = evs;
        let mut calls = 0;
        while !rest.is_empty() {
            calls += 1;
            if rest.len() == 1 {
                applied(&self.handler.handle("x", INTERNAL, &rest[0]));
                break;
            }
            let items: Vec<BatchItem<'_, Work>> = rest
                .iter()
                .map(|w| BatchItem {
                    event_id: "x",
                    payload: w,
                })
                .collect();
            let outcomes = self.handler.handle_batch(INTERNAL, &items);
            assert!(!outcomes.is_empty());
            outcomes.iter().for_each(applied);
            rest = &rest[outcomes.len()..];
        }
        calls
    }

    fn one_by_one(&self, evs: &[Work]) {
        for w in evs {
            applied(&self.handler.handle("x", INTERNAL, w));
        }
    }
}

fn applied(o: &Outcome) {
    assert!(matches!(o, Outcome::Applied(_)), "{o:?}");
}

#[test]
fn every_create_and_update_of_an_indicator_is_coalescable_and_nothing_else() {
    let fx = setup();
    let up = update(2, B, None);
    assert!(fx.handler.coalescable(INTERNAL, &up));
    let create = work(&fixture("indicator-create.json"), "1-0");
    assert!(fx.handler.coalescable(INTERNAL, &create));
    let delete = work(&fixture("indicator-delete.json"), "2-0");
    assert!(!fx.handler.coalescable(INTERNAL, &delete));
    let rel = work(&fixture("based-on-create.json"), "3-0");
    assert!(!fx.handler.coalescable(&event_key_of(&rel), &rel));
    assert!(!fx.handler.coalescable(INTERNAL, &Work::Ignored));
    let mut merge = fixture("indicator-update-pattern.json");
    merge["event"] = json!("merge");
    merge["data"]["context"] = json!({"sources": [merge["data"]["data"].clone()]});
    let merge = work(&merge, "4-0");
    assert!(!fx.handler.coalescable(INTERNAL, &merge));
}

fn event_key_of(w: &Work) -> String {
    match w {
        Work::Event(ev) => event_key(ev).unwrap(),
        _ => panic!(),
    }
}

#[test]
fn a_storm_reads_once_writes_far_less_and_ends_as_one_by_one_with_every_former_released() {
    let evs = storm_events();

    let mut alone = setup();
    alone.before_the_storm();
    let read = alone.reads(gql(C, false)).expect(evs.len()).create();
    alone.one_by_one(&evs);
    read.assert();
    let alone_calls = alone.mem.calls();

    let mut batch = setup();
    batch.before_the_storm();
    let read = batch.reads(gql(C, false)).expect(1).create();
    assert_eq!(batch.coalesced(&evs), 1, "49 STIX updates are one batch");
    read.assert();
    let batch_calls = batch.mem.calls();

    // 1.1.1.1 (A) went before the storm; 3.3.3.3 (B) and 5.5.5.5 (B2, the one HarfangLab
    // holds, named by update 50's former state only) go now.
    assert_eq!(batch.values(), ["2.2.2.2", "4.4.4.4"]);
    assert_eq!(batch.state(), alone.state());
    assert!(
        batch_calls * 10 <= alone_calls,
        "HarfangLab calls: {batch_calls} coalesced, {alone_calls} one by one"
    );
}

#[test]
fn a_revoked_indicator_in_a_storm_releases_everything_every_event_named() {
    let evs = storm_events();
    let mut alone = setup();
    alone.before_the_storm();
    let _m = alone.answer(gql(C, true));
    alone.one_by_one(&evs);

    let mut batch = setup();
    batch.before_the_storm();
    let _m = batch.answer(gql(C, true));
    assert_eq!(batch.coalesced(&evs), 1);
    assert!(batch.values().is_empty(), "{:?}", batch.values());
    assert_eq!(batch.state(), alone.state());
}

#[test]
fn an_indicator_gone_from_opencti_is_applied_one_event_at_a_time_from_each_payload() {
    let evs = storm_events();
    let mut alone = setup();
    alone.before_the_storm();
    let _m = alone.answer(json!({"data": {"indicator": null}}).to_string());
    alone.one_by_one(&evs);

    let mut batch = setup();
    batch.before_the_storm();
    let read = batch
        .reads(json!({"data": {"indicator": null}}).to_string())
        .expect(evs.len())
        .create();
    // Every batch applies its first event only (one read each, as alone); the last one alone.
    assert_eq!(batch.coalesced(&evs), evs.len());
    read.assert();
    assert_eq!(batch.state(), alone.state());
    assert_eq!(batch.values(), ["2.2.2.2", "4.4.4.4"]);
}

#[test]
fn a_failed_read_is_the_first_events_and_the_rest_waits() {
    let mut fx = setup();
    fx.before_the_storm();
    let _m = fx
        .server
        .mock("POST", "/graphql")
        .with_status(500)
        .with_body("boom")
        .create();
    let evs = storm_events();
    let items: Vec<BatchItem<'_, Work>> = evs
        .iter()
        .map(|w| BatchItem {
            event_id: "x",
            payload: w,
        })
        .collect();
    let outcomes = fx.handler.handle_batch(INTERNAL, &items);
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert!(!outcomes[0].is_final(), "{outcomes:?}");
    assert_eq!(fx.mem.calls(), 0);
}

const SIGMA: &str = "title: Suspicious cmd\nid: 6b1e9ef4-1b59-4d3a-9b8c-2f5c0e2a7d11\nlogsource:\n  category: process_creation\n  product: windows\ndetection:\n  sel:\n    Image|endswith: '\\cmd.exe'\n  condition: sel\nlevel: high\n";

fn gql_typed(pattern_type: &str, pattern: &str) -> String {
    let mut v: Value = serde_json::from_str(&gql(pattern, false)).unwrap();
    v["data"]["indicator"]["pattern_type"] = json!(pattern_type);
    v.to_string()
}

/// An update whose former state had another pattern type (and pattern).
fn retype(n: usize, pattern: &str, former_type: &str, former: &str) -> Work {
    let mut line = fixture("indicator-update-pattern.json");
    line["data"]["context"] = json!({
        "patch": [{"op": "replace", "path": "/pattern_type", "value": "stix"}],
        "reverse_patch": [
            {"op": "replace", "path": "/pattern_type", "value": former_type},
            {"op": "replace", "path": "/pattern", "value": former},
        ],
    });
    line["data"]["data"]["pattern"] = json!(pattern);
    line["data"]["data"]["extensions"][OCTI_EXT]["observable_values"] = json!([]);
    work(&line, &format!("{}-0", 1000 + n))
}

impl Fx {
    /// The indicator was a Sigma rule: HarfangLab holds it.
    fn held_as_sigma(&mut self) {
        let m = self.answer(gql_typed("sigma", SIGMA));
        let create = work(&fixture("indicator-create.json"), "1000-0");
        applied(&self.handler.handle("1000-0", INTERNAL, &create));
        assert_eq!(self.mem.rules(RuleKind::Sigma).len(), 1);
        m.remove();
    }
}

#[test]
fn a_type_change_inside_a_storm_releases_the_former_rule_and_a_second_one_splits_the_batch() {
    // Sigma → STIX A, edits, A → C: one batch (one type change).
    let evs = vec![
        retype(2, A, "sigma", SIGMA),
        update(3, A, None),
        update(4, C, Some(A)),
        update(5, C, None),
    ];
    let mut alone = setup();
    alone.held_as_sigma();
    let _m = alone.answer(gql(C, false));
    alone.one_by_one(&evs);

    let mut batch = setup();
    batch.held_as_sigma();
    let _m = batch.answer(gql(C, false));
    assert_eq!(batch.coalesced(&evs), 1);
    assert!(batch.mem.rules(RuleKind::Sigma).is_empty());
    assert_eq!(batch.values(), ["2.2.2.2", "4.4.4.4"]);
    assert_eq!(batch.state(), alone.state());

    // Two type changes in one burst: the second starts the next batch, each releases its own.
    let evs = vec![
        retype(2, A, "sigma", SIGMA),
        update(3, A, None),
        retype(4, C, "sigma", SIGMA),
        update(5, C, None),
    ];
    let mut batch = setup();
    batch.held_as_sigma();
    let _m = batch.answer(gql(C, false));
    assert_eq!(batch.coalesced(&evs), 2);
    assert!(batch.mem.rules(RuleKind::Sigma).is_empty());
    assert_eq!(batch.values(), ["2.2.2.2", "4.4.4.4"]);
}
