//! Behaviour of the sync layer (`sync::Syncer`) against a HarfangLab store: reference-counted
//! IOCs, adoption of Python-connector rules, pattern changes, Sigma/Yara identity, revocation,
//! concurrency, call economy and partial failures.
//!
//! The scenarios are generic over a factory returning any `ThreatIntelApi` and inspect the
//! store only through that trait, so they can run against the HTTP simulator as well:
//! `scenarios!(module_name, factory_fn)` instantiates them, where the factory returns a fresh
//! backend and the ids of its three source lists. Failure injection and server behaviours
//! only `MemoryApi` is known to have live in `memory_only`.

use harfanglab_intel::harfanglab::HarfangLabError;
use harfanglab_intel::harfanglab::api::ThreatIntelApi;
use harfanglab_intel::harfanglab::client::{Client, ClientOptions};
use harfanglab_intel::harfanglab::model::{
    IocRule, IocRuleBody, RemoteRule, RuleBody, RuleFilter, RuleKind, SourceLists,
};
use harfanglab_intel::retry::Retryable;
use harfanglab_intel::rules::sigma::SigmaMeta;
use harfanglab_intel::rules::yara::YaraMeta;
use harfanglab_intel::secret::Secret;
use harfanglab_intel::sim::harfanglab::{Faults, HarfangLabSim, SimConfig};
use harfanglab_intel::sync::comment::{Origin, RuleComment};
use harfanglab_intel::sync::dry_run::DryRunApi;
use harfanglab_intel::sync::memory::{Fault, MemoryApi, Target};
use harfanglab_intel::sync::{SyncSettings, Syncer};
use harfanglab_intel::translate::{
    FormerState, Indicator, IocKey, IocType, SigmaSpec, Translation, YaraSpec,
};

// ---- fixtures -------------------------------------------------------------------------------

fn lists() -> SourceLists {
    SourceLists {
        ioc: "ioc-list".into(),
        sigma: "sigma-list".into(),
        yara: "yara-list".into(),
    }
}

fn syncer<A: ThreatIntelApi>(api: A, remove_indicator: bool) -> Syncer<A> {
    syncer_on((api, lists()), remove_indicator)
}

/// A syncer over a backend and its three source lists (a real server has its own list ids).
fn syncer_on<A: ThreatIntelApi>(backend: (A, SourceLists), remove_indicator: bool) -> Syncer<A> {
    let (api, lists) = backend;
    Syncer::new(
        api,
        SyncSettings {
            lists,
            remove_indicator,
            rule_maturity: "stable".into(),
        },
    )
}

/// Indicator `n`: internal id `internal-n`, standard id `indicator--n`.
fn indicator(n: &str) -> Indicator {
    Indicator {
        id: format!("internal-{n}"),
        standard_id: Some(format!("indicator--{n}")),
        name: format!("Indicator {n}"),
        description: Some(format!("about {n}")),
        pattern_type: "stix".into(),
        pattern: String::new(),
        score: Some(50),
        platforms: vec!["windows".into()],
        ..Indicator::default()
    }
}

fn ip(v: &str) -> IocKey {
    IocKey {
        ioc_type: IocType::IpBoth,
        value: v.into(),
    }
}

fn iocs(keys: &[IocKey]) -> Translation {
    let mut iocs = keys.to_vec();
    iocs.sort();
    iocs.dedup();
    Translation {
        iocs,
        ..Translation::default()
    }
}

fn one(key: &IocKey) -> Translation {
    iocs(std::slice::from_ref(key))
}

fn none() -> FormerState {
    FormerState::default()
}

const SIGMA_ID: &str = "6b1e9ef4-1b59-4d3a-9b8c-2f5c0e2a7d11";

fn sigma_content(id: Option<&str>, field: &str) -> String {
    let id_line = id.map(|i| format!("id: {i}\n")).unwrap_or_default();
    format!(
        "title: Suspicious {field}\n{id_line}logsource:\n  category: process_creation\n  product: windows\ndetection:\n  sel:\n    Image|endswith: '\\{field}.exe'\n  condition: sel\nlevel: high\n"
    )
}

fn sigma(name: &str, id: Option<&str>, field: &str) -> Translation {
    Translation {
        sigma: Some(SigmaSpec {
            meta: SigmaMeta {
                id: id.map(str::to_owned),
                title: format!("Suspicious {field}"),
                level: Some("high".into()),
                ..SigmaMeta::default()
            },
            name: name.into(),
            content: sigma_content(id, field),
        }),
        ..Translation::default()
    }
}

fn yara_content(rule: &str, marker: &str) -> String {
    format!("rule {rule}\n{{\n  strings:\n    $a = \"{marker}\"\n  condition:\n    $a\n}}\n")
}

fn yara(name: &str, rule: &str, marker: &str) -> Translation {
    Translation {
        yara: Some(YaraSpec {
            meta: YaraMeta {
                rule_names: vec![rule.into()],
                meta_ids: Vec::new(),
            },
            name: name.into(),
            content: yara_content(rule, marker),
        }),
        ..Translation::default()
    }
}

fn find<A: ThreatIntelApi>(s: &Syncer<A>, key: &IocKey) -> Option<IocRule> {
    s.api()
        .find_ioc(&s.settings().lists.ioc, key)
        .expect("find_ioc")
}

/// Internal ids of the holders recorded on the IOC rule.
fn holders<A: ThreatIntelApi>(s: &Syncer<A>, key: &IocKey) -> Vec<String> {
    let rule = find(s, key).expect("the IOC rule exists");
    let (decoded, origin) = RuleComment::decode(rule.comment.as_deref());
    assert_eq!(origin, Origin::Ours, "comment: {:?}", rule.comment);
    decoded.holders.into_iter().map(|h| h.id).collect()
}

fn all_rules<A: ThreatIntelApi>(s: &Syncer<A>, kind: RuleKind) -> Vec<RemoteRule> {
    let source = match kind {
        RuleKind::Sigma => &s.settings().lists.sigma,
        RuleKind::Yara => &s.settings().lists.yara,
    };
    s.api()
        .find_rules(kind, source, &RuleFilter::All)
        .expect("find_rules")
}

fn seed_ioc<A: ThreatIntelApi>(s: &Syncer<A>, key: &IocKey, comment: &str) -> IocRule {
    s.api()
        .create_ioc(&IocRuleBody {
            source_id: s.settings().lists.ioc.clone(),
            ioc_type: key.ioc_type,
            value: key.value.clone(),
            description: "seeded".into(),
            comment: comment.into(),
            hl_status: "stable".into(),
            enabled: true,
        })
        .expect("seed IOC")
}

// ---- scenarios (generic over the backend) ---------------------------------------------------

fn shared_ip_stays_until_its_last_holder_is_released<A: ThreatIntelApi>(
    new_api: fn() -> (A, SourceLists),
) {
    let s = syncer_on(new_api(), true);
    let (a, b) = (indicator("a"), indicator("b"));
    s.upsert(&a, &iocs(&[ip("10.0.0.1"), ip("10.0.0.2")]), &none())
        .unwrap();
    s.upsert(&b, &iocs(&[ip("10.0.0.1")]), &none()).unwrap();
    assert_eq!(holders(&s, &ip("10.0.0.1")), ["internal-a", "internal-b"]);

    let report = s
        .release(&a, &iocs(&[ip("10.0.0.1"), ip("10.0.0.2")]), &none())
        .unwrap();
    assert_eq!((report.iocs.updated, report.iocs.deleted), (1, 1));
    assert_eq!(holders(&s, &ip("10.0.0.1")), ["internal-b"]);
    assert!(find(&s, &ip("10.0.0.2")).is_none());
    let rule = find(&s, &ip("10.0.0.1")).unwrap();
    assert!(rule.enabled);
    let v: serde_json::Value = serde_json::from_str(rule.comment.as_deref().unwrap()).unwrap();
    assert_eq!(v["indicator_id"], "indicator--b");

    let report = s.release(&b, &iocs(&[ip("10.0.0.1")]), &none()).unwrap();
    assert_eq!(report.iocs.deleted, 1);
    assert!(find(&s, &ip("10.0.0.1")).is_none());
}

fn last_release_disables_and_a_new_holder_re_enables<A: ThreatIntelApi>(
    new_api: fn() -> (A, SourceLists),
) {
    let s = syncer_on(new_api(), false);
    let (a, b) = (indicator("a"), indicator("b"));
    let t = iocs(&[ip("10.0.0.1")]);
    s.upsert(&a, &t, &none()).unwrap();
    s.upsert(&b, &t, &none()).unwrap();
    s.release(&a, &t, &none()).unwrap();
    assert!(find(&s, &ip("10.0.0.1")).unwrap().enabled);
    let report = s.release(&b, &t, &none()).unwrap();
    assert_eq!(report.iocs.disabled, 1);
    let rule = find(&s, &ip("10.0.0.1")).unwrap();
    assert!(!rule.enabled);
    assert!(holders(&s, &ip("10.0.0.1")).is_empty());

    let report = s.upsert(&b, &t, &none()).unwrap();
    assert_eq!(report.iocs.re_enabled, 1);
    assert!(find(&s, &ip("10.0.0.1")).unwrap().enabled);
    assert_eq!(holders(&s, &ip("10.0.0.1")), ["internal-b"]);
}

fn pattern_change_releases_the_old_values<A: ThreatIntelApi>(new_api: fn() -> (A, SourceLists)) {
    let s = syncer_on(new_api(), true);
    let (a, b) = (indicator("a"), indicator("b"));
    let old = [ip("10.0.0.1"), ip("10.0.0.2")];
    s.upsert(&a, &iocs(&old), &none()).unwrap();
    s.upsert(&b, &iocs(&[ip("10.0.0.2")]), &none()).unwrap();

    let mut a2 = a.clone();
    a2.standard_id = Some("indicator--a-v2".into());
    let former = FormerState {
        iocs: Some(old.to_vec()),
        ids: vec!["indicator--a".into()],
        ..FormerState::default()
    };
    let report = s
        .upsert(&a2, &iocs(&[ip("10.0.0.3"), ip("10.0.0.1")]), &former)
        .unwrap();
    assert_eq!(report.iocs.created, 1, "{report:?}");
    assert_eq!(report.iocs.updated, 2, "{report:?}"); // .2 released, .1 refreshed std id
    assert_eq!(holders(&s, &ip("10.0.0.2")), ["internal-b"]);
    assert_eq!(holders(&s, &ip("10.0.0.1")), ["internal-a"]);
    assert_eq!(holders(&s, &ip("10.0.0.3")), ["internal-a"]);

    // The pattern changes again: .1 had only A, so it goes.
    let former = FormerState {
        iocs: Some(vec![ip("10.0.0.3"), ip("10.0.0.1")]),
        ..FormerState::default()
    };
    s.upsert(&a2, &iocs(&[ip("10.0.0.3")]), &former).unwrap();
    assert!(find(&s, &ip("10.0.0.1")).is_none());
}

fn sigma_rename_updates_the_same_rule<A: ThreatIntelApi>(new_api: fn() -> (A, SourceLists)) {
    let s = syncer_on(new_api(), true);
    let a = indicator("a");
    let report = s
        .upsert(&a, &sigma("Old name", Some(SIGMA_ID), "cmd"), &none())
        .unwrap();
    assert_eq!(report.sigma.created, 1);
    let mut renamed = a.clone();
    renamed.name = "New name".into();
    let former = FormerState {
        name: Some("Old name".into()),
        ..FormerState::default()
    };
    let report = s
        .upsert(&renamed, &sigma("New name", Some(SIGMA_ID), "cmd"), &former)
        .unwrap();
    assert_eq!(report.sigma.updated, 1);
    let rules = all_rules(&s, RuleKind::Sigma);
    assert_eq!(rules.len(), 1, "no duplicate: {rules:?}");
    assert_eq!(rules[0].name, "New name");
}

fn sigma_content_change_updates_in_place<A: ThreatIntelApi>(new_api: fn() -> (A, SourceLists)) {
    let s = syncer_on(new_api(), true);
    let a = indicator("a");
    s.upsert(&a, &sigma("Rule", Some(SIGMA_ID), "cmd"), &none())
        .unwrap();
    let report = s
        .upsert(&a, &sigma("Rule", Some(SIGMA_ID), "powershell"), &none())
        .unwrap();
    assert_eq!(report.sigma.updated, 1);
    let rules = all_rules(&s, RuleKind::Sigma);
    assert_eq!(rules.len(), 1);
    assert!(rules[0].content.contains("powershell"));
    // Same content again: found, not written.
    let report = s
        .upsert(&a, &sigma("Rule", Some(SIGMA_ID), "powershell"), &none())
        .unwrap();
    assert_eq!(report.sigma.unchanged, 1);
    assert_eq!(report.sigma.writes(), 0);
}

fn sigma_without_id_is_identified_by_name<A: ThreatIntelApi>(new_api: fn() -> (A, SourceLists)) {
    let s = syncer_on(new_api(), true);
    let a = indicator("a");
    s.upsert(&a, &sigma("No id", None, "cmd"), &none()).unwrap();
    let report = s
        .upsert(&a, &sigma("No id", None, "wmic"), &none())
        .unwrap();
    assert_eq!(report.sigma.updated, 1);
    let former = FormerState {
        name: Some("No id".into()),
        ..FormerState::default()
    };
    let report = s
        .upsert(&a, &sigma("Still no id", None, "wmic"), &former)
        .unwrap();
    assert_eq!(report.sigma.updated, 1);
    let rules = all_rules(&s, RuleKind::Sigma);
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].name, "Still no id");
    let report = s
        .release(&a, &sigma("Still no id", None, "wmic"), &none())
        .unwrap();
    assert_eq!(report.sigma.deleted, 1);
    assert!(all_rules(&s, RuleKind::Sigma).is_empty());
}

fn yara_duplicate_conflict_is_resolved_by_update<A: ThreatIntelApi>(
    new_api: fn() -> (A, SourceLists),
) {
    let s = syncer_on(new_api(), true);
    // A file holding rule `Evil_Loader` exists under a name we cannot trace (renamed while the
    // connector was down, or uploaded by the Python connector under another name).
    let a = indicator("a");
    let mut ghost = a.clone();
    ghost.name = "Untraceable".into();
    s.upsert(&ghost, &yara("Untraceable", "Evil_Loader", "v1"), &none())
        .unwrap();
    let report = s
        .upsert(&a, &yara("Indicator a", "Evil_Loader", "v2"), &none())
        .unwrap();
    assert_eq!((report.yara.updated, report.yara.created), (1, 0));
    let files = all_rules(&s, RuleKind::Yara);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].name, "Indicator a");
    assert!(files[0].content.contains("v2"));
}

/// A file carrying `meta: id` (HarfangLab's inferred Yara identity, §6.3) already exists under
/// a name we cannot trace: the create is refused, the clash is found and updated in place.
fn yara_meta_id_clash_is_resolved_by_update<A: ThreatIntelApi>(new_api: fn() -> (A, SourceLists)) {
    let s = syncer_on(new_api(), true);
    let with_id = |name: &str, marker: &str| {
        let mut t = yara(name, "Tagged_Loader", marker);
        if let Some(spec) = t.yara.as_mut() {
            spec.content = format!(
                "rule Tagged_Loader\n{{\n  meta:\n    id = \"5d0c1f7e-yara-0001\"\n  strings:\n    $a = \"{marker}\"\n  condition:\n    $a\n}}\n"
            );
            spec.meta.meta_ids = vec!["5d0c1f7e-yara-0001".into()];
        }
        t
    };
    let a = indicator("a");
    let mut ghost = a.clone();
    ghost.name = "Renamed while we were down".into();
    s.upsert(
        &ghost,
        &with_id("Renamed while we were down", "v1"),
        &none(),
    )
    .unwrap();
    let report = s
        .upsert(&a, &with_id("Indicator a", "v2"), &none())
        .unwrap();
    assert_eq!((report.yara.updated, report.yara.created), (1, 0));
    let files = all_rules(&s, RuleKind::Yara);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].name, "Indicator a");
    assert!(files[0].content.contains("v2"));
}

fn yara_rename_updates_the_same_file<A: ThreatIntelApi>(new_api: fn() -> (A, SourceLists)) {
    let s = syncer_on(new_api(), false);
    let a = indicator("a");
    s.upsert(&a, &yara("Indicator a", "Stealer", "x"), &none())
        .unwrap();
    let mut renamed = a.clone();
    renamed.name = "Indicator a (v2)".into();
    let former = FormerState {
        name: Some("Indicator a".into()),
        ..FormerState::default()
    };
    let report = s
        .upsert(&renamed, &yara("Indicator a (v2)", "Stealer", "y"), &former)
        .unwrap();
    assert_eq!(report.yara.updated, 1);
    let files = all_rules(&s, RuleKind::Yara);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].name, "Indicator a (v2)");
    let report = s
        .release(&renamed, &yara("Indicator a (v2)", "Stealer", "y"), &none())
        .unwrap();
    assert_eq!(report.yara.disabled, 1);
    assert!(!all_rules(&s, RuleKind::Yara)[0].enabled);
}

fn revoked_is_released_and_unrevoked_comes_back<A: ThreatIntelApi>(
    new_api: fn() -> (A, SourceLists),
) {
    let s = syncer_on(new_api(), true);
    let (a, b) = (indicator("a"), indicator("b"));
    let mut t = iocs(&[ip("10.0.0.1"), ip("10.0.0.2")]);
    t.yara = yara("Indicator a", "Revokable", "z").yara;
    s.upsert(&a, &t, &none()).unwrap();
    s.upsert(&b, &iocs(&[ip("10.0.0.1")]), &none()).unwrap();

    let mut revoked = a.clone();
    revoked.revoked = true;
    let report = s.upsert(&revoked, &t, &none()).unwrap();
    assert_eq!(report.iocs.deleted, 1);
    assert_eq!(report.iocs.updated, 1);
    assert_eq!(report.yara.deleted, 1);
    assert_eq!(holders(&s, &ip("10.0.0.1")), ["internal-b"]);
    assert!(find(&s, &ip("10.0.0.2")).is_none());
    assert!(all_rules(&s, RuleKind::Yara).is_empty());

    let report = s.upsert(&a, &t, &none()).unwrap();
    assert_eq!((report.iocs.created, report.iocs.updated), (1, 1));
    assert_eq!(report.yara.created, 1);
    assert_eq!(holders(&s, &ip("10.0.0.1")), ["internal-a", "internal-b"]);
}

fn concurrent_upserts_of_one_ioc_keep_every_holder<A: ThreatIntelApi>(
    new_api: fn() -> (A, SourceLists),
) {
    const WORKERS: usize = 16;
    let s = syncer_on(new_api(), true);
    let shared = ip("192.0.2.1");
    std::thread::scope(|scope| {
        for w in 0..WORKERS {
            let (s, shared) = (&s, &shared);
            scope.spawn(move || {
                let ind = indicator(&format!("{w:02}"));
                let own = ip(&format!("198.51.100.{w}"));
                let t = iocs(&[shared.clone(), own]);
                s.upsert(&ind, &t, &none()).expect("upsert");
            });
        }
    });
    let expected: Vec<String> = (0..WORKERS).map(|w| format!("internal-{w:02}")).collect();
    assert_eq!(holders(&s, &shared), expected);
    for w in 0..WORKERS {
        assert!(find(&s, &ip(&format!("198.51.100.{w}"))).is_some());
    }
}

fn python_connector_rules_are_adopted<A: ThreatIntelApi>(new_api: fn() -> (A, SourceLists)) {
    let s = syncer_on(new_api(), true);
    let key = ip("203.0.113.7");
    let legacy = r#"{"indicator_id": "indicator--a", "indicator_score": 80, "indicator_platforms": ["linux"]}"#;
    seed_ioc(&s, &key, legacy);

    // Another indicator upserts the same IP: the legacy holder is kept next to it.
    let b = indicator("b");
    let report = s.upsert(&b, &one(&key), &none()).unwrap();
    assert_eq!(report.iocs.updated, 1);
    assert_eq!(holders(&s, &key), ["indicator--a", "internal-b"]);
    let rule = find(&s, &key).unwrap();
    let v: serde_json::Value = serde_json::from_str(rule.comment.as_deref().unwrap()).unwrap();
    assert_eq!(v["indicator_id"], "indicator--a");
    assert_eq!(v["indicator_score"], 80);
    assert_eq!(
        v["indicator_platforms"],
        serde_json::json!(["linux", "windows"])
    );
    assert_eq!(rule.description.as_deref(), Some("about b"));

    // The legacy indicator upserts with its standard id: merged into one holder.
    let a = indicator("a");
    s.upsert(&a, &one(&key), &none()).unwrap();
    assert_eq!(holders(&s, &key), ["internal-a", "internal-b"]);

    s.release(&a, &one(&key), &none()).unwrap();
    s.release(&b, &one(&key), &none()).unwrap();
    assert!(find(&s, &key).is_none());

    // A legacy rule released by its standard id alone goes away too.
    let key2 = ip("203.0.113.8");
    seed_ioc(
        &s,
        &key2,
        r#"{"indicator_id": "indicator--c", "indicator_score": null, "indicator_platforms": null}"#,
    );
    let mut c = indicator("c");
    c.id = "internal-unknown-to-the-comment".into();
    let report = s.release(&c, &one(&key2), &none()).unwrap();
    assert_eq!(report.iocs.deleted, 1);
}

fn foreign_rules_are_adopted_but_never_deleted<A: ThreatIntelApi>(
    new_api: fn() -> (A, SourceLists),
) {
    let s = syncer_on(new_api(), true);
    let (manual, empty) = (ip("198.18.0.1"), ip("198.18.0.2"));
    seed_ioc(&s, &manual, "added by the SOC, ticket 42");
    seed_ioc(&s, &empty, "");
    let a = indicator("a");
    let t = iocs(&[manual.clone(), empty.clone()]);

    // Release by an indicator that never upserted: not ours, untouched.
    let report = s.release(&a, &t, &none()).unwrap();
    assert_eq!(report.iocs.skipped, 2);
    assert_eq!(find(&s, &empty).unwrap().comment.as_deref(), Some(""));

    s.upsert(&a, &t, &none()).unwrap();
    assert_eq!(holders(&s, &manual), ["internal-a"]);
    let (decoded, _) = RuleComment::decode(find(&s, &manual).unwrap().comment.as_deref());
    assert_eq!(
        decoded.user_comment.as_deref(),
        Some("added by the SOC, ticket 42")
    );

    let report = s.release(&a, &t, &none()).unwrap();
    assert_eq!((report.iocs.disabled, report.iocs.deleted), (1, 1));
    assert!(!find(&s, &manual).unwrap().enabled);
    assert!(find(&s, &empty).is_none());
}

fn unchanged_upsert_costs_one_call_per_ioc<A: ThreatIntelApi>(new_api: fn() -> (A, SourceLists)) {
    let s = syncer_on(new_api(), true);
    let a = indicator("a");
    let t = iocs(&[ip("10.1.0.1"), ip("10.1.0.2")]);
    let first = s.upsert(&a, &t, &none()).unwrap();
    assert_eq!(first.iocs.created, 2);
    assert_eq!(first.api_calls, 4, "a new IOC costs 1 find + 1 create");
    let again = s.upsert(&a, &t, &none()).unwrap();
    assert_eq!(again.iocs.unchanged, 2);
    assert_eq!(again.iocs.writes(), 0);
    assert_eq!(again.api_calls, 2, "an unchanged IOC costs 1 find");
}

fn replayed_events_are_harmless<A: ThreatIntelApi>(new_api: fn() -> (A, SourceLists)) {
    let s = syncer_on(new_api(), true);
    let (a, b) = (indicator("a"), indicator("b"));
    let mut t = iocs(&[ip("10.2.0.1")]);
    t.sigma = sigma("Replay", Some(SIGMA_ID), "cmd").sigma;
    s.upsert(&b, &iocs(&[ip("10.2.0.1")]), &none()).unwrap();
    s.upsert(&a, &t, &none()).unwrap();
    let replay = s.upsert(&a, &t, &none()).unwrap();
    assert_eq!(replay.iocs.writes() + replay.sigma.writes(), 0);
    s.release(&a, &t, &none()).unwrap();
    let replay = s.release(&a, &t, &none()).unwrap();
    assert_eq!(replay.iocs.writes() + replay.sigma.writes(), 0);
    assert_eq!(holders(&s, &ip("10.2.0.1")), ["internal-b"]);
    assert!(all_rules(&s, RuleKind::Sigma).is_empty());
}

fn sigma_release_spares_a_rule_renamed_by_another_indicator<A: ThreatIntelApi>(
    new_api: fn() -> (A, SourceLists),
) {
    let s = syncer_on(new_api(), true);
    let (a, b) = (indicator("a"), indicator("b"));
    s.upsert(&a, &sigma("Indicator a", Some(SIGMA_ID), "cmd"), &none())
        .unwrap();
    // Indicator b carries the very same Sigma rule and writes it last.
    s.upsert(&b, &sigma("Indicator b", Some(SIGMA_ID), "cmd"), &none())
        .unwrap();
    let report = s
        .release(&a, &sigma("Indicator a", Some(SIGMA_ID), "cmd"), &none())
        .unwrap();
    assert_eq!(report.sigma.skipped, 1);
    assert_eq!(all_rules(&s, RuleKind::Sigma).len(), 1);
}

/// Instantiate every generic scenario as a `#[test]` against `$factory`.
macro_rules! scenarios {
    ($module:ident, $factory:path) => {
        mod $module {
            #[test]
            fn shared_ip_stays_until_its_last_holder_is_released() {
                super::shared_ip_stays_until_its_last_holder_is_released($factory)
            }
            #[test]
            fn last_release_disables_and_a_new_holder_re_enables() {
                super::last_release_disables_and_a_new_holder_re_enables($factory)
            }
            #[test]
            fn pattern_change_releases_the_old_values() {
                super::pattern_change_releases_the_old_values($factory)
            }
            #[test]
            fn sigma_rename_updates_the_same_rule() {
                super::sigma_rename_updates_the_same_rule($factory)
            }
            #[test]
            fn sigma_content_change_updates_in_place() {
                super::sigma_content_change_updates_in_place($factory)
            }
            #[test]
            fn sigma_without_id_is_identified_by_name() {
                super::sigma_without_id_is_identified_by_name($factory)
            }
            #[test]
            fn yara_meta_id_clash_is_resolved_by_update() {
                super::yara_meta_id_clash_is_resolved_by_update($factory)
            }
            #[test]
            fn yara_rename_updates_the_same_file() {
                super::yara_rename_updates_the_same_file($factory)
            }
            #[test]
            fn revoked_is_released_and_unrevoked_comes_back() {
                super::revoked_is_released_and_unrevoked_comes_back($factory)
            }
            #[test]
            fn concurrent_upserts_of_one_ioc_keep_every_holder() {
                super::concurrent_upserts_of_one_ioc_keep_every_holder($factory)
            }
            #[test]
            fn python_connector_rules_are_adopted() {
                super::python_connector_rules_are_adopted($factory)
            }
            #[test]
            fn foreign_rules_are_adopted_but_never_deleted() {
                super::foreign_rules_are_adopted_but_never_deleted($factory)
            }
            #[test]
            fn unchanged_upsert_costs_one_call_per_ioc() {
                super::unchanged_upsert_costs_one_call_per_ioc($factory)
            }
            #[test]
            fn replayed_events_are_harmless() {
                super::replayed_events_are_harmless($factory)
            }
            #[test]
            fn sigma_release_spares_a_rule_renamed_by_another_indicator() {
                super::sigma_release_spares_a_rule_renamed_by_another_indicator($factory)
            }
        }
    };
}

/// The fake, with calls yielding so that concurrent workers interleave between find and create.
fn memory_api() -> (MemoryApi, SourceLists) {
    let api = MemoryApi::new();
    api.set_interleave(true);
    (api, lists())
}

scenarios!(memory, super::memory_api);

// ---- the same scenarios through the real client and the HTTP simulator ----------------------

/// The real `Client` over a private simulator it keeps alive (the simulator stops on drop).
struct SimBackend {
    client: Client,
    _shutdown: crossbeam_channel::Sender<()>,
    _sim: HarfangLabSim,
}

impl ThreatIntelApi for SimBackend {
    fn find_ioc(&self, source_id: &str, key: &IocKey) -> Result<Option<IocRule>, HarfangLabError> {
        self.client.find_ioc(source_id, key)
    }
    fn create_ioc(&self, body: &IocRuleBody) -> Result<IocRule, HarfangLabError> {
        self.client.create_ioc(body)
    }
    fn update_ioc(&self, id: &str, body: &IocRuleBody) -> Result<IocRule, HarfangLabError> {
        self.client.update_ioc(id, body)
    }
    fn delete_ioc(&self, id: &str) -> Result<(), HarfangLabError> {
        self.client.delete_ioc(id)
    }
    fn get_rule(&self, kind: RuleKind, id: &str) -> Result<Option<RemoteRule>, HarfangLabError> {
        self.client.get_rule(kind, id)
    }
    fn find_rules(
        &self,
        kind: RuleKind,
        source_id: &str,
        filter: &RuleFilter,
    ) -> Result<Vec<RemoteRule>, HarfangLabError> {
        self.client.find_rules(kind, source_id, filter)
    }
    fn create_rule(&self, kind: RuleKind, body: &RuleBody) -> Result<RemoteRule, HarfangLabError> {
        self.client.create_rule(kind, body)
    }
    fn update_rule(
        &self,
        kind: RuleKind,
        id: &str,
        body: &RuleBody,
    ) -> Result<RemoteRule, HarfangLabError> {
        self.client.update_rule(kind, id, body)
    }
    fn delete_rule(&self, kind: RuleKind, id: &str) -> Result<(), HarfangLabError> {
        self.client.delete_rule(kind, id)
    }
}

/// A client for `sim` with no proxy (and the default quick resend only: the storm test retries
/// whole upserts, as the pipeline does).
fn sim_client(sim: &HarfangLabSim) -> (Client, crossbeam_channel::Sender<()>) {
    let mut opts = ClientOptions::new(sim.base_url(), Secret::new(sim.token()));
    opts.proxy_from_env = false;
    opts.page_size = 5; // small pages: lookups and listings cross page boundaries
    let (tx, rx) = crossbeam_channel::unbounded();
    (Client::new(opts, rx).expect("client"), tx)
}

fn sim_backend_with(config: SimConfig) -> (SimBackend, SourceLists) {
    let sim = harfanglab_intel::sim::harfanglab::serve("127.0.0.1:0", config).expect("simulator");
    let (client, shutdown) = sim_client(&sim);
    let lists = client
        .ensure_source_lists("OpenCTI Intel")
        .expect("source lists");
    let backend = SimBackend {
        client,
        _shutdown: shutdown,
        _sim: sim,
    };
    (backend, lists)
}

/// A strict (Django-like) simulator: a path without its trailing `/` would be a 301.
fn simulator() -> (SimBackend, SourceLists) {
    sim_backend_with(SimConfig {
        strict: true,
        max_connections: 64,
        ..SimConfig::default()
    })
}

scenarios!(simulator, super::simulator);

// ---- MemoryApi-only: failure injection and call accounting ---------------------------------

mod memory_only {
    use super::*;

    /// Needs a server that rejects a second file declaring an existing rule identifier (an
    /// INFERRED behaviour `MemoryApi` implements; harfanglab-api.md §6.3).
    #[test]
    fn yara_duplicate_conflict_is_resolved_by_update() {
        super::yara_duplicate_conflict_is_resolved_by_update(super::memory_api)
    }

    fn status(code: u16) -> HarfangLabError {
        HarfangLabError::Status {
            op: "create IOCRule".into(),
            status: code,
            body: "{}".into(),
            retry_after: None,
        }
    }

    #[test]
    fn permanent_failure_of_one_ioc_does_not_lose_the_others() {
        let api = MemoryApi::new();
        let s = syncer(api.clone(), true);
        api.inject(
            Target::IocValue("10.9.0.2".into()),
            Fault::Fail(status(400)),
            None,
        );
        let t = iocs(&[ip("10.9.0.1"), ip("10.9.0.2"), ip("10.9.0.3")]);
        let err = s.upsert(&indicator("a"), &t, &none()).unwrap_err();
        assert_eq!(err.failed, 1);
        assert!(!err.is_retryable() && !err.is_fatal());
        assert_eq!(err.indicator_id, "internal-a");
        assert_eq!(
            err.object,
            harfanglab_intel::sync::SyncObject::Ioc(ip("10.9.0.2"))
        );
        assert_eq!(err.report.iocs.created, 2);
        assert!(err.to_string().contains("10.9.0.2"), "{err}");
        assert_eq!(api.iocs().len(), 2);
    }

    #[test]
    fn mixed_failures_keep_the_permanent_error_and_stay_retryable() {
        let api = MemoryApi::new();
        let s = syncer(api.clone(), true);
        api.inject(
            Target::IocValue("10.9.1.1".into()),
            Fault::Fail(HarfangLabError::Timeout {
                op: "find IOCRule".into(),
            }),
            Some(1),
        );
        api.inject(
            Target::IocValue("10.9.1.2".into()),
            Fault::Fail(status(400)),
            None,
        );
        let t = iocs(&[ip("10.9.1.1"), ip("10.9.1.2"), ip("10.9.1.3")]);
        let err = s.upsert(&indicator("a"), &t, &none()).unwrap_err();
        assert_eq!((err.failed, err.retryable), (2, 1));
        assert!(matches!(
            err.error,
            HarfangLabError::Status { status: 400, .. }
        ));
        assert!(err.is_retryable(), "the timed-out IOC must be retried");
        // The retry completes the transient one; the permanent one fails again, alone.
        let err = s.upsert(&indicator("a"), &t, &none()).unwrap_err();
        assert_eq!((err.failed, err.retryable), (1, 0));
        assert_eq!(err.report.iocs.created, 1);
        assert_eq!(api.iocs().len(), 2);
    }

    #[test]
    fn fatal_error_stops_the_run() {
        let api = MemoryApi::new();
        let s = syncer(api.clone(), true);
        api.inject(
            Target::Any,
            Fault::Fail(HarfangLabError::Unauthorized {
                op: "find IOCRule".into(),
                detail: "Invalid token.".into(),
            }),
            None,
        );
        let t = iocs(&[ip("10.9.2.1"), ip("10.9.2.2")]);
        let err = s.upsert(&indicator("a"), &t, &none()).unwrap_err();
        assert!(err.is_fatal() && !err.is_retryable());
        assert_eq!(err.failed, 1);
        assert_eq!(api.calls(), 1);
    }

    #[test]
    fn ioc_created_by_another_process_is_updated_not_duplicated() {
        let api = MemoryApi::new();
        let other_process = syncer(api.clone(), true);
        let s = syncer(api.clone(), true);
        let key = ip("10.9.3.1");
        other_process
            .upsert(&indicator("b"), &one(&key), &none())
            .unwrap();
        // Our find runs before the other process' create lands.
        api.inject(Target::IocValue(key.value.clone()), Fault::Miss, Some(1));
        let report = s.upsert(&indicator("a"), &one(&key), &none()).unwrap();
        assert_eq!((report.iocs.created, report.iocs.updated), (0, 1));
        assert_eq!(report.api_calls, 4); // find (stale), create (exists), find, update
        assert_eq!(api.iocs().len(), 1);
        assert_eq!(holders(&s, &key), ["internal-a", "internal-b"]);
    }

    #[test]
    fn sigma_create_clash_is_resolved_by_update() {
        let api = MemoryApi::new();
        let s = syncer(api.clone(), true);
        let a = indicator("a");
        s.upsert(&a, &sigma("Indicator a", Some(SIGMA_ID), "cmd"), &none())
            .unwrap();
        // The id probe misses once (e.g. a server that does not use the Sigma id as object
        // id), and the name differs: the create is refused as a duplicate, then resolved.
        api.inject(Target::Rule(SIGMA_ID.into()), Fault::Miss, Some(1));
        let report = s
            .upsert(&a, &sigma("Renamed", Some(SIGMA_ID), "cmd"), &none())
            .unwrap();
        assert_eq!((report.sigma.created, report.sigma.updated), (0, 1));
        let rules = api.rules(RuleKind::Sigma);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].name, "Renamed");
    }

    #[test]
    fn sigma_clash_without_id_lookup_is_found_by_title_search() {
        let api = MemoryApi::new();
        let s = syncer(api.clone(), true);
        let a = indicator("a");
        s.upsert(&a, &sigma("Indicator a", Some(SIGMA_ID), "cmd"), &none())
            .unwrap();
        // A server whose object ids are not Sigma ids: every id probe misses.
        api.inject(Target::Rule(SIGMA_ID.into()), Fault::Miss, None);
        let report = s
            .upsert(
                &a,
                &sigma("Renamed untraced", Some(SIGMA_ID), "cmd"),
                &none(),
            )
            .unwrap();
        assert_eq!((report.sigma.created, report.sigma.updated), (0, 1));
        assert_eq!(api.rules(RuleKind::Sigma)[0].name, "Renamed untraced");
    }

    #[test]
    fn sigma_rule_in_another_source_list_is_left_alone() {
        let api = MemoryApi::new();
        let s = syncer(api.clone(), true);
        api.insert_rule(
            RuleKind::Sigma,
            RemoteRule {
                id: SIGMA_ID.into(),
                name: "The SOC's own copy".into(),
                content: sigma_content(Some(SIGMA_ID), "cmd"),
                source_id: Some("soc-list".into()),
                enabled: true,
                hl_status: Some("stable".into()),
                rule_name: None,
                rule_names: Vec::new(),
            },
        );
        let a = indicator("a");
        let t = sigma("Indicator a", Some(SIGMA_ID), "cmd");
        assert_eq!(s.upsert(&a, &t, &none()).unwrap().sigma.skipped, 1);
        assert_eq!(s.release(&a, &t, &none()).unwrap().sigma.skipped, 1);
        assert_eq!(api.rules(RuleKind::Sigma)[0].name, "The SOC's own copy");
    }

    #[test]
    fn dry_run_reports_the_work_but_writes_nothing() {
        let api = MemoryApi::new();
        let s = syncer(DryRunApi::new(api.clone()), true);
        let mut t = iocs(&[ip("10.9.4.1")]);
        t.yara = yara("Indicator a", "Dry", "d").yara;
        let report = s.upsert(&indicator("a"), &t, &none()).unwrap();
        assert_eq!((report.iocs.created, report.yara.created), (1, 1));
        assert_eq!(s.api().skipped_writes(), 2);
        assert!(api.iocs().is_empty());
        assert!(api.rules(RuleKind::Yara).is_empty());
        assert_eq!(api.calls_to("create_ioc") + api.calls_to("create_rule"), 0);
    }

    #[test]
    fn undecodable_sigma_pattern_is_still_released_by_name() {
        let api = MemoryApi::new();
        let s = syncer(api.clone(), true);
        let mut a = indicator("a");
        a.pattern_type = "sigma".into();
        a.pattern = sigma_content(Some(SIGMA_ID), "cmd");
        s.upsert(&a, &sigma("Indicator a", Some(SIGMA_ID), "cmd"), &none())
            .unwrap();
        // The delete event's pattern no longer translates: the pipeline passes no spec.
        let report = s.release(&a, &Translation::default(), &none()).unwrap();
        assert_eq!(report.sigma.deleted, 1);
        assert!(api.rules(RuleKind::Sigma).is_empty());
    }
}

// ---- simulator-only: opt-in server behaviours and fault storms ------------------------------

mod simulator_only {
    use super::*;
    use harfanglab_intel::sync::{SyncError, SyncReport};
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

    /// A simulator that also refuses a second file declaring an existing rule identifier (an
    /// opt-in guess, `SimConfig::unique_yara_rule_names`).
    fn unique_rule_names() -> (SimBackend, SourceLists) {
        sim_backend_with(SimConfig {
            unique_yara_rule_names: true,
            max_connections: 64,
            ..SimConfig::default()
        })
    }

    #[test]
    fn yara_duplicate_conflict_is_resolved_by_update() {
        super::yara_duplicate_conflict_is_resolved_by_update(unique_rule_names)
    }

    const INDICATORS: usize = 24;
    const THREADS: usize = 4;
    const SHARED: usize = 6;

    /// Indicator `i` holds two shared IPs and one of its own; every third is then deleted.
    fn workload(i: usize) -> (Indicator, Vec<IocKey>, bool) {
        let keys = vec![
            ip(&format!("192.0.2.{}", i % SHARED)),
            ip(&format!("192.0.2.{}", (i * 5 + 1) % SHARED)),
            ip(&format!("198.51.100.{i}")),
        ];
        (indicator(&format!("{i:02}")), keys, i.is_multiple_of(3))
    }

    /// What the workload must leave: each wanted IP with its exact holders (sorted).
    fn expected() -> BTreeMap<String, Vec<String>> {
        let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in 0..INDICATORS {
            let (ind, keys, released) = workload(i);
            if released {
                continue;
            }
            for k in keys {
                let holders = want.entry(k.value).or_default();
                if !holders.contains(&ind.id) {
                    holders.push(ind.id.clone());
                }
            }
        }
        want.values_mut().for_each(|h| h.sort());
        want
    }

    /// Run `step` until it succeeds, as the pipeline retries a whole event (the client itself
    /// only resends a dropped connection); counts the retries in `retries`.
    fn until_applied(
        retries: &AtomicU64,
        what: &str,
        mut step: impl FnMut() -> Result<SyncReport, SyncError>,
    ) {
        for _ in 0..200 {
            match step() {
                Ok(_) => return,
                Err(e) if e.is_retryable() => {
                    retries.fetch_add(1, AtomicOrdering::Relaxed);
                }
                Err(e) => panic!("{what}: {e}"),
            }
        }
        panic!("{what}: still failing after 200 attempts");
    }

    /// Run the workload on `THREADS` threads through the real client, retrying each upsert and
    /// release as a whole while it fails for a retryable reason (what the pipeline does); return
    /// the simulator's IOC rules as value → sorted holders, and the number of those retries.
    fn run_workload(faults: Faults) -> (BTreeMap<String, Vec<String>>, u64) {
        let sim = harfanglab_intel::sim::harfanglab::serve(
            "127.0.0.1:0",
            SimConfig {
                seed: 42,
                max_connections: 64,
                ..SimConfig::default()
            },
        )
        .expect("simulator");
        let (client, _shutdown) = sim_client(&sim);
        let lists = client
            .ensure_source_lists("OpenCTI Intel")
            .expect("source lists");
        let retries = AtomicU64::new(0);
        sim.set_faults(faults);
        let s = Syncer::new(
            client,
            SyncSettings {
                lists,
                remove_indicator: true,
                rule_maturity: "stable".into(),
            },
        );
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let s = &s;
                let retries = &retries;
                scope.spawn(move || {
                    for i in (t..INDICATORS).step_by(THREADS) {
                        let (ind, keys, released) = workload(i);
                        let tr = iocs(&keys);
                        until_applied(retries, "upsert through the storm", || {
                            s.upsert(&ind, &tr, &none())
                        });
                        if released {
                            until_applied(retries, "release through the storm", || {
                                s.release(&ind, &tr, &none())
                            });
                        }
                    }
                });
            }
        });
        sim.set_faults(Faults::default());
        let mut state: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rule in sim.ioc_rules() {
            assert!(rule.enabled, "{rule:?}");
            let (decoded, origin) = RuleComment::decode(rule.comment.as_deref());
            assert_eq!(origin, Origin::Ours, "{rule:?}");
            let mut holders: Vec<String> = decoded.holders.into_iter().map(|h| h.id).collect();
            holders.sort();
            let previous = state.insert(rule.value.clone(), holders);
            assert!(previous.is_none(), "two rules for {}", rule.value);
        }
        (state, retries.into_inner())
    }

    #[test]
    fn throttling_and_server_error_storms_still_converge() {
        let (calm, calm_retries) = run_workload(Faults::default());
        assert_eq!(calm, expected());
        assert_eq!(calm_retries, 0);
        let (stormy, retries) = run_workload(Faults {
            error_rate: 0.2,
            throttle_rate: 0.1,
            retry_after_secs: Some(1),
            ..Faults::default()
        });
        assert!(retries > 20, "the storm hardly hit: {retries} retries");
        assert_eq!(stormy, calm);
    }

    /// Writes applied by the server whose answer is lost (502): the client's retry of a create
    /// meets "already exists", of a delete a 404; the result is still the fault-free one.
    #[test]
    fn writes_applied_but_unanswered_still_converge() {
        let (state, retries) = run_workload(Faults {
            lost_reply_rate: 0.25,
            ..Faults::default()
        });
        assert!(
            retries > 10,
            "hardly any answer was lost: {retries} retries"
        );
        assert_eq!(state, expected());
    }
}
