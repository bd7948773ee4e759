//! Behaviour of the sync layer (`sync::Syncer`) against a HarfangLab store: reference-counted
//! IOCs, adoption of Python-connector rules, pattern changes, Sigma/Yara identity, revocation,
//! concurrency, call economy and partial failures.
//!
//! The scenarios are generic over a factory returning any `ThreatIntelApi` and inspect the
//! store only through that trait, so they can run against the HTTP simulator as well:
//! `scenarios!(module_name, factory_fn)` instantiates them, where the factory returns a fresh
//! backend and the ids of its three source lists. Failure injection and server behaviours
//! only `MemoryApi` is known to have live in `memory_only`.

use crate::support::logs::logs;
use harfanglab_intel::sim::harfanglab::{Faults, HarfangLabSim, SimConfig};
use harfanglab_intel::{
    Absorbed, Client, ClientOptions, CommentOrigin, Counts, DryRunApi, Fault, FormerState,
    HarfangLabError, Indicator, IocKey, IocRule, IocRuleBody, IocType, MemoryApi, RemoteRule,
    Retryable, RuleBody, RuleComment, RuleFilter, RuleKind, Secret, SigmaMeta, SigmaSpec,
    SourceLists, SyncError, SyncReport, SyncSettings, Syncer, Target, ThreatIntelApi, Translation,
    YaraMeta, YaraSpec, rule_holders,
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
            enforce_enabled: false,
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
    assert_eq!(origin, CommentOrigin::Ours, "comment: {:?}", rule.comment);
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
    assert_clash_updated_in_place(&s, &a, &yara("Indicator a", "Evil_Loader", "v2"));
}

/// Upserting `a` with `v2` (marker "v2", named "Indicator a") updates the one clashing Yara
/// file in place instead of creating a second one.
fn assert_clash_updated_in_place<A: ThreatIntelApi>(
    s: &Syncer<A>,
    a: &Indicator,
    v2: &Translation,
) {
    let report = s.upsert(a, v2, &none()).unwrap();
    assert_eq!((report.yara.updated, report.yara.created), (1, 0));
    let files = all_rules(s, RuleKind::Yara);
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
    assert_clash_updated_in_place(&s, &a, &with_id("Indicator a", "v2"));
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

// ---- holders on Sigma rules and Yara files, merges (each with remove_indicator true / false) --

const SIGMA_ID_2: &str = "0c9f3a55-4b1e-4e0a-9d4c-7a2b6e1f8c32";

/// The holder ids on a rule's holders line (which it must have).
fn rule_holders_of(kind: RuleKind, rule: &RemoteRule) -> Vec<String> {
    let (holders, _) = rule_holders::split(kind, &rule.content);
    let holders = holders.unwrap_or_else(|| panic!("no holders line: {:?}", rule.content));
    holders.ids().to_vec()
}

/// The one rule of `kind`; panics when there are none or several.
fn only_rule<A: ThreatIntelApi>(s: &Syncer<A>, kind: RuleKind) -> RemoteRule {
    let mut rules = all_rules(s, kind);
    assert_eq!(rules.len(), 1, "{rules:#?}");
    rules.remove(0)
}

/// After the last holder left: gone (`remove_indicator`) or disabled and held by nobody.
fn assert_released_rule<A: ThreatIntelApi>(s: &Syncer<A>, kind: RuleKind, remove: bool) {
    let rules = all_rules(s, kind);
    if remove {
        assert!(rules.is_empty(), "{rules:#?}");
    } else {
        assert_eq!(rules.len(), 1, "{rules:#?}");
        assert!(!rules[0].enabled, "{:?}", rules[0]);
        assert!(rule_holders_of(kind, &rules[0]).is_empty());
    }
}

/// `deleted` when removing, `disabled` otherwise.
fn gone(c: &Counts, remove: bool) -> u32 {
    if remove { c.deleted } else { c.disabled }
}

fn shared_sigma_id_is_released_holder_by_holder<A: ThreatIntelApi>(
    new_api: fn() -> (A, SourceLists),
    remove: bool,
) {
    let s = syncer_on(new_api(), remove);
    let (a, b) = (indicator("a"), indicator("b"));
    let t = |i: &Indicator| sigma(&i.name, Some(SIGMA_ID), "cmd");
    assert_eq!(s.upsert(&a, &t(&a), &none()).unwrap().sigma.created, 1);
    let report = s.upsert(&b, &t(&b), &none()).unwrap();
    assert_eq!((report.sigma.created, report.sigma.updated), (0, 1));
    let rule = only_rule(&s, RuleKind::Sigma);
    assert_eq!(
        rule_holders_of(RuleKind::Sigma, &rule),
        ["internal-a", "internal-b"]
    );
    // The holders line, then the rule exactly as the pattern has it.
    assert_eq!(
        rule.content,
        format!(
            "# harfanglab-intel holders: internal-a internal-b\n{}",
            sigma_content(Some(SIGMA_ID), "cmd")
        )
    );
    // Delete one: the other still wants it, enabled.
    let report = s.release(&a, &t(&a), &none()).unwrap();
    assert_eq!((report.sigma.updated, report.sigma.writes()), (1, 1));
    let rule = only_rule(&s, RuleKind::Sigma);
    assert!(rule.enabled);
    assert_eq!(rule_holders_of(RuleKind::Sigma, &rule), ["internal-b"]);
    assert_eq!(s.release(&a, &t(&a), &none()).unwrap().sigma.writes(), 0);
    // Delete both: nobody wants it.
    let report = s.release(&b, &t(&b), &none()).unwrap();
    assert_eq!(gone(&report.sigma, remove), 1);
    assert_released_rule(&s, RuleKind::Sigma, remove);
    // Wanted again.
    let report = s.upsert(&a, &t(&a), &none()).unwrap();
    if remove {
        assert_eq!(report.sigma.created, 1);
    } else {
        assert_eq!(report.sigma.re_enabled, 1);
    }
    let rule = only_rule(&s, RuleKind::Sigma);
    assert!(rule.enabled);
    assert_eq!(rule_holders_of(RuleKind::Sigma, &rule), ["internal-a"]);
}

fn shared_sigma_rule_follows_a_rename_of_one_holder<A: ThreatIntelApi>(
    new_api: fn() -> (A, SourceLists),
    remove: bool,
) {
    let s = syncer_on(new_api(), remove);
    let (a, b) = (indicator("a"), indicator("b"));
    s.upsert(&a, &sigma("Indicator a", Some(SIGMA_ID), "cmd"), &none())
        .unwrap();
    s.upsert(&b, &sigma("Indicator b", Some(SIGMA_ID), "cmd"), &none())
        .unwrap();
    let mut renamed = a.clone();
    renamed.name = "A renamed".into();
    let former = FormerState {
        name: Some("Indicator a".into()),
        ..FormerState::default()
    };
    let t = sigma("A renamed", Some(SIGMA_ID), "cmd");
    let report = s.upsert(&renamed, &t, &former).unwrap();
    assert_eq!((report.sigma.updated, report.sigma.created), (1, 0));
    let rule = only_rule(&s, RuleKind::Sigma);
    assert_eq!(rule.name, "A renamed");
    assert_eq!(
        rule_holders_of(RuleKind::Sigma, &rule),
        ["internal-a", "internal-b"]
    );
    let report = s
        .release(&b, &sigma("Indicator b", Some(SIGMA_ID), "cmd"), &none())
        .unwrap();
    assert_eq!(report.sigma.updated, 1);
    let rule = only_rule(&s, RuleKind::Sigma);
    assert!(rule.enabled);
    assert_eq!(rule_holders_of(RuleKind::Sigma, &rule), ["internal-a"]);
    let report = s.release(&renamed, &t, &none()).unwrap();
    assert_eq!(gone(&report.sigma, remove), 1);
    assert_released_rule(&s, RuleKind::Sigma, remove);
}

/// The same Yara file from two indicators: by name (both carry it), or by HarfangLab's identity
/// (`meta: id`) under two names, where the file carries its last writer's name.
fn shared_yara_file_is_released_holder_by_holder<A: ThreatIntelApi>(
    new_api: fn() -> (A, SourceLists),
    remove: bool,
) {
    let s = syncer_on(new_api(), remove);
    let (mut a, mut b) = (indicator("a"), indicator("b"));
    a.name = "Shared loader".into();
    b.name = "Shared loader".into();
    let t = yara("Shared loader", "Shared_Loader", "x");
    s.upsert(&a, &t, &none()).unwrap();
    assert_eq!(s.upsert(&b, &t, &none()).unwrap().yara.updated, 1);
    let file = only_rule(&s, RuleKind::Yara);
    assert_eq!(
        rule_holders_of(RuleKind::Yara, &file),
        ["internal-a", "internal-b"]
    );
    assert!(file.content.starts_with("// harfanglab-intel holders: "));
    assert_eq!(file.rule_names, ["Shared_Loader"]);
    assert_eq!(s.release(&a, &t, &none()).unwrap().yara.updated, 1);
    let file = only_rule(&s, RuleKind::Yara);
    assert!(file.enabled);
    assert_eq!(rule_holders_of(RuleKind::Yara, &file), ["internal-b"]);
    assert_eq!(gone(&s.release(&b, &t, &none()).unwrap().yara, remove), 1);
    assert_released_rule(&s, RuleKind::Yara, remove);

    let s = syncer_on(new_api(), remove);
    let (c, d) = (indicator("c"), indicator("d"));
    let tagged = |name: &str| {
        let mut t = yara(name, "Tagged_Loader", "v1");
        if let Some(spec) = t.yara.as_mut() {
            spec.content = "rule Tagged_Loader\n{\n  meta:\n    id = \"5d0c1f7e-yara-0002\"\n  condition:\n    true\n}\n".into();
            spec.meta.meta_ids = vec!["5d0c1f7e-yara-0002".into()];
        }
        t
    };
    s.upsert(&c, &tagged("Indicator c"), &none()).unwrap();
    // HarfangLab refuses a second file with that `meta: id`: d joins c's.
    let report = s.upsert(&d, &tagged("Indicator d"), &none()).unwrap();
    assert_eq!((report.yara.created, report.yara.updated), (0, 1));
    let file = only_rule(&s, RuleKind::Yara);
    assert_eq!(file.name, "Indicator d");
    assert_eq!(
        rule_holders_of(RuleKind::Yara, &file),
        ["internal-c", "internal-d"]
    );
    // c's file is found although it carries d's name.
    assert_eq!(
        s.release(&c, &tagged("Indicator c"), &none())
            .unwrap()
            .yara
            .updated,
        1
    );
    assert_eq!(
        rule_holders_of(RuleKind::Yara, &only_rule(&s, RuleKind::Yara)),
        ["internal-d"]
    );
    let report = s.release(&d, &tagged("Indicator d"), &none()).unwrap();
    assert_eq!(gone(&report.yara, remove), 1);
    assert_released_rule(&s, RuleKind::Yara, remove);
}

fn conflicting_sigma_content_takes_the_newest_and_is_logged<A: ThreatIntelApi>(
    new_api: fn() -> (A, SourceLists),
    remove: bool,
) {
    logs();
    let s = syncer_on(new_api(), remove);
    let (mut a, mut b) = (indicator("a"), indicator("b"));
    // Ids of their own, to find this test's log line among the others'.
    a.id = format!("conflict-a-{remove}");
    b.id = format!("conflict-b-{remove}");
    s.upsert(&a, &sigma("Indicator a", Some(SIGMA_ID), "cmd"), &none())
        .unwrap();
    s.upsert(&b, &sigma("Indicator b", Some(SIGMA_ID), "wmic"), &none())
        .unwrap();
    let rule = only_rule(&s, RuleKind::Sigma);
    let (_, body) = rule_holders::split(RuleKind::Sigma, &rule.content);
    assert_eq!(
        body,
        sigma_content(Some(SIGMA_ID), "wmic"),
        "the newest event wins"
    );
    assert_eq!(
        rule_holders_of(RuleKind::Sigma, &rule),
        [a.id.clone(), b.id.clone()]
    );
    let logged = logs().lines_at(log::Level::Info).into_iter().any(|l| {
        l.starts_with("WARN")
            && l.contains("different content")
            && l.contains(&format!("indicator={}", b.id))
            && l.contains(&a.id)
    });
    assert!(
        logged,
        "the conflict is logged with both ids: {:#?}",
        logs().lines_at(log::Level::Info)
    );
    // a's next event is the newest now.
    s.upsert(&a, &sigma("Indicator a", Some(SIGMA_ID), "cmd"), &none())
        .unwrap();
    let rule = only_rule(&s, RuleKind::Sigma);
    assert!(
        rule.content
            .ends_with(&sigma_content(Some(SIGMA_ID), "cmd"))
    );
    s.release(&a, &sigma("Indicator a", Some(SIGMA_ID), "cmd"), &none())
        .unwrap();
    assert_eq!(
        rule_holders_of(RuleKind::Sigma, &only_rule(&s, RuleKind::Sigma)),
        [b.id.clone()]
    );
    let report = s
        .release(&b, &sigma("Indicator b", Some(SIGMA_ID), "wmic"), &none())
        .unwrap();
    assert_eq!(gone(&report.sigma, remove), 1);
    assert_released_rule(&s, RuleKind::Sigma, remove);
}

/// An update that changes the Sigma rule's `id` (HarfangLab cannot change it in place): the new
/// rule is written, the former id's rule loses the holder (and goes when it was the last one).
fn sigma_id_change_releases_the_former_rule<A: ThreatIntelApi>(new_api: fn() -> (A, SourceLists)) {
    let s = syncer_on(new_api(), true);
    let (a, b) = (indicator("a"), indicator("b"));
    s.upsert(&a, &sigma("Indicator a", Some(SIGMA_ID), "cmd"), &none())
        .unwrap();
    s.upsert(&b, &sigma("Indicator b", Some(SIGMA_ID_2), "cmd"), &none())
        .unwrap();
    let former = FormerState {
        pattern: Some(sigma_content(Some(SIGMA_ID), "cmd")),
        ..FormerState::default()
    };
    let report = s
        .upsert(&a, &sigma("Indicator a", Some(SIGMA_ID_2), "cmd"), &former)
        .unwrap();
    assert_eq!(
        (report.sigma.updated, report.sigma.deleted),
        (1, 1),
        "{report:?}"
    );
    let rule = only_rule(&s, RuleKind::Sigma);
    assert_eq!(rule.id, SIGMA_ID_2);
    assert_eq!(
        rule_holders_of(RuleKind::Sigma, &rule),
        ["internal-a", "internal-b"]
    );
}

/// The fake and the simulator enforce the same identity rules (harfanglab-api.md §6.3, INFERRED
/// parts included): a Sigma UUID `id` is the object id, a second create of it is refused inside
/// the import envelope, an update may not change it; a Yara `meta: id` is unique in a list, rule
/// identifiers are not (by default).
fn backends_agree_on_rule_identity<A: ThreatIntelApi>(new_api: fn() -> (A, SourceLists)) {
    let s = syncer_on(new_api(), true);
    let (api, lists) = (s.api(), &s.settings().lists);
    let body = |source: &str, name: &str, content: String| RuleBody {
        source_id: source.to_owned(),
        name: name.to_owned(),
        content,
        hl_status: "stable".into(),
        enabled: true,
        overwrite: false,
    };
    let upper = sigma_content(Some(&SIGMA_ID.to_ascii_uppercase()), "cmd");
    let created = api
        .create_rule(RuleKind::Sigma, &body(&lists.sigma, "one", upper))
        .unwrap();
    assert_eq!(created.id, SIGMA_ID, "the canonical UUID is the object id");
    let again = api
        .create_rule(
            RuleKind::Sigma,
            &body(&lists.sigma, "two", sigma_content(Some(SIGMA_ID), "wmic")),
        )
        .unwrap_err();
    // A duplicate, as the IOC one (`Syncer` finds and updates it).
    assert!(
        matches!(&again, HarfangLabError::AlreadyExists { body, .. } if body.contains("already exists")),
        "{again:?}"
    );
    let moved = api
        .update_rule(
            RuleKind::Sigma,
            SIGMA_ID,
            &body(&lists.sigma, "one", sigma_content(Some(SIGMA_ID_2), "cmd")),
        )
        .unwrap_err();
    assert!(
        matches!(moved, HarfangLabError::Status { status: 400, .. }),
        "{moved:?}"
    );
    let not_uuid = sigma_content(Some("rule-7"), "cmd");
    let a = api
        .create_rule(RuleKind::Sigma, &body(&lists.sigma, "a", not_uuid.clone()))
        .unwrap();
    let b = api
        .create_rule(RuleKind::Sigma, &body(&lists.sigma, "b", not_uuid))
        .unwrap();
    assert_ne!(a.id, b.id, "an id that is not a UUID identifies nothing");

    let tagged = |rule: &str| {
        format!("rule {rule}\n{{\n  meta:\n    id = \"m-77\"\n  condition:\n    true\n}}\n")
    };
    api.create_rule(RuleKind::Yara, &body(&lists.yara, "t1", tagged("Tagged_1")))
        .unwrap();
    let clash = api
        .create_rule(RuleKind::Yara, &body(&lists.yara, "t2", tagged("Tagged_2")))
        .unwrap_err();
    assert!(
        matches!(&clash, HarfangLabError::AlreadyExists { body, .. } if body.contains("Duplicate rule")),
        "{clash:?}"
    );
    let file = |name: &str| {
        api.find_rules(RuleKind::Yara, &lists.yara, &RuleFilter::Name(name.into()))
            .unwrap()
            .remove(0)
    };
    let t3 = api
        .create_rule(
            RuleKind::Yara,
            &body(&lists.yara, "t3", yara_content("Tagged_3", "x")),
        )
        .unwrap();
    let moved = api
        .update_rule(
            RuleKind::Yara,
            &t3.id,
            &body(&lists.yara, "t3", tagged("Tagged_3")),
        )
        .unwrap_err();
    assert!(
        matches!(moved, HarfangLabError::AlreadyExists { .. }),
        "{moved:?}"
    );
    assert_eq!(file("t1").rule_names, ["Tagged_1"]);
    let twin = yara_content("Twin", "x");
    api.create_rule(RuleKind::Yara, &body(&lists.yara, "w1", twin.clone()))
        .unwrap();
    api.create_rule(RuleKind::Yara, &body(&lists.yara, "w2", twin))
        .expect("rule identifiers are not unique by default");
}

fn absorbed(indicator: &Indicator, translation: Translation) -> Absorbed {
    Absorbed {
        indicator: indicator.clone(),
        translation,
        former: none(),
    }
}

/// Two merges of three indicators: STIX ones sharing IOCs (t, s1, s2; o also holds s1's
/// second value), Sigma ones sharing a rule (st, ss1; ss2 has a rule of its own). Returns the
/// absorbed indicators and what they wanted.
fn merged_world<A: ThreatIntelApi>(s: &Syncer<A>, remove: bool) -> Vec<Absorbed> {
    let (x, y, z, w) = (
        ip("10.5.0.1"),
        ip("10.5.0.2"),
        ip("10.5.0.3"),
        ip("10.5.0.4"),
    );
    let (t, s1, s2, o) = (
        indicator("t"),
        indicator("s1"),
        indicator("s2"),
        indicator("o"),
    );
    let wants = [
        (&t, iocs(&[x.clone(), z.clone()])),
        (&s1, iocs(&[x.clone(), y.clone()])),
        (&s2, iocs(&[x.clone(), w.clone()])),
        (&o, one(&y)),
    ];
    for (i, tr) in &wants {
        s.upsert(i, tr, &none()).unwrap();
    }
    assert_eq!(holders(s, &x), ["internal-s1", "internal-s2", "internal-t"]);
    let merged = [
        absorbed(&s1, wants[1].1.clone()),
        absorbed(&s2, wants[2].1.clone()),
    ];
    let report = s.merge(&t, &wants[0].1, &none(), &merged).unwrap();
    // x: the target added and the absorbed removed in one write; nothing deleted or re-created.
    // y: s1 leaves, o keeps it. z: t's already. w: only s2 wanted it.
    assert_eq!(
        (
            report.iocs.created,
            report.iocs.updated,
            report.iocs.unchanged
        ),
        (0, 2, 1),
        "{report:?}"
    );
    assert_eq!(gone(&report.iocs, remove), 1);
    assert_eq!(report.iocs.writes(), 3);
    assert_eq!(holders(s, &x), ["internal-t"]);
    assert!(find(s, &x).unwrap().enabled);
    assert_eq!(holders(s, &y), ["internal-o"]);
    assert_eq!(holders(s, &z), ["internal-t"]);
    if remove {
        assert!(find(s, &w).is_none());
    } else {
        assert!(!find(s, &w).unwrap().enabled);
    }

    let (st, ss1, ss2) = (indicator("st"), indicator("ss1"), indicator("ss2"));
    let rule = |i: &Indicator, id: &str| sigma(&i.name, Some(id), "cmd");
    s.upsert(&st, &rule(&st, SIGMA_ID), &none()).unwrap();
    s.upsert(&ss1, &rule(&ss1, SIGMA_ID), &none()).unwrap();
    s.upsert(&ss2, &rule(&ss2, SIGMA_ID_2), &none()).unwrap();
    let sigma_merged = [
        absorbed(&ss1, rule(&ss1, SIGMA_ID)),
        absorbed(&ss2, rule(&ss2, SIGMA_ID_2)),
    ];
    let report = s
        .merge(&st, &rule(&st, SIGMA_ID), &none(), &sigma_merged)
        .unwrap();
    assert_eq!(
        (report.sigma.created, report.sigma.updated),
        (0, 1),
        "{report:?}"
    );
    assert_eq!(gone(&report.sigma, remove), 1);
    let rules = all_rules(s, RuleKind::Sigma);
    let shared = rules
        .iter()
        .find(|r| r.id == SIGMA_ID)
        .expect("the shared rule");
    assert!(shared.enabled);
    assert_eq!(shared.name, "Indicator st");
    assert_eq!(rule_holders_of(RuleKind::Sigma, shared), ["internal-st"]);
    let own = rules.iter().find(|r| r.id == SIGMA_ID_2);
    if remove {
        assert!(own.is_none(), "{rules:#?}");
    } else {
        let own = own.expect("disabled, not deleted");
        assert!(!own.enabled && rule_holders_of(RuleKind::Sigma, own).is_empty());
    }
    merged.into_iter().chain(sigma_merged).collect()
}

fn merge_of_three_moves_their_holds_to_the_target<A: ThreatIntelApi>(
    new_api: fn() -> (A, SourceLists),
    remove: bool,
) {
    let s = syncer_on(new_api(), remove);
    merged_world(&s, remove);
    // Replayed (a restart before the checkpoint moved past it): nothing to write.
    let t = indicator("t");
    let replay = s
        .merge(
            &t,
            &iocs(&[ip("10.5.0.1"), ip("10.5.0.3")]),
            &none(),
            &[absorbed(
                &indicator("s1"),
                iocs(&[ip("10.5.0.1"), ip("10.5.0.2")]),
            )],
        )
        .unwrap();
    assert_eq!(replay.iocs.writes(), 0, "{replay:?}");
}

fn delete_of_an_absorbed_indicator_changes_nothing<A: ThreatIntelApi>(
    new_api: fn() -> (A, SourceLists),
    remove: bool,
) {
    let s = syncer_on(new_api(), remove);
    let absorbed = merged_world(&s, remove);
    let before = (
        all_rules(&s, RuleKind::Sigma),
        s.api()
            .find_rules(RuleKind::Yara, &s.settings().lists.yara, &RuleFilter::All)
            .unwrap(),
    );
    let iocs_before: Vec<Option<IocRule>> = ["10.5.0.1", "10.5.0.2", "10.5.0.3", "10.5.0.4"]
        .iter()
        .map(|v| find(&s, &ip(v)))
        .collect();
    for a in &absorbed {
        let report = s.release(&a.indicator, &a.translation, &a.former).unwrap();
        assert_eq!(
            report.iocs.writes() + report.sigma.writes() + report.yara.writes(),
            0,
            "{}: {report:?}",
            a.indicator.id
        );
    }
    let after = (
        all_rules(&s, RuleKind::Sigma),
        s.api()
            .find_rules(RuleKind::Yara, &s.settings().lists.yara, &RuleFilter::All)
            .unwrap(),
    );
    assert_eq!(before, after);
    let iocs_after: Vec<Option<IocRule>> = ["10.5.0.1", "10.5.0.2", "10.5.0.3", "10.5.0.4"]
        .iter()
        .map(|v| find(&s, &ip(v)))
        .collect();
    assert_eq!(iocs_before, iocs_after);

    // The other order (a delete before the merge): the merge then finds nothing of it to move,
    // and the target keeps what it wants.
    let (u, v) = (indicator("u"), indicator("v"));
    let (shared, own) = (ip("10.6.0.1"), ip("10.6.0.2"));
    s.upsert(&u, &one(&shared), &none()).unwrap();
    s.upsert(&v, &iocs(&[shared.clone(), own.clone()]), &none())
        .unwrap();
    s.release(&v, &iocs(&[shared.clone(), own.clone()]), &none())
        .unwrap();
    let report = s
        .merge(
            &u,
            &one(&shared),
            &none(),
            &[absorbed_of(&v, &[shared.clone(), own.clone()])],
        )
        .unwrap();
    // At most u's own description comes back (v wrote it last); nothing goes, nothing comes.
    let c = report.iocs;
    assert_eq!(
        (c.created, c.deleted, c.disabled, c.re_enabled),
        (0, 0, 0, 0),
        "{report:?}"
    );
    assert_eq!(holders(&s, &shared), ["internal-u"]);
    assert!(find(&s, &shared).unwrap().enabled);
}

fn absorbed_of(indicator: &Indicator, keys: &[IocKey]) -> Absorbed {
    absorbed(indicator, iocs(keys))
}

/// One module per scenario taking `remove_indicator`, with a test for each value.
macro_rules! two_modes {
    ($factory:path; $($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn removing() {
                    crate::sync_semantics::$name($factory, true)
                }
                #[test]
                fn disabling() {
                    crate::sync_semantics::$name($factory, false)
                }
            }
        )*
    };
}

/// Instantiate every generic scenario as a `#[test]` against `$factory` (a path from the crate
/// root).
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
            fn backends_agree_on_rule_identity() {
                super::backends_agree_on_rule_identity($factory)
            }
            #[test]
            fn sigma_id_change_releases_the_former_rule() {
                super::sigma_id_change_releases_the_former_rule($factory)
            }
            two_modes!(
                $factory;
                shared_sigma_id_is_released_holder_by_holder,
                shared_sigma_rule_follows_a_rename_of_one_holder,
                shared_yara_file_is_released_holder_by_holder,
                conflicting_sigma_content_takes_the_newest_and_is_logged,
                merge_of_three_moves_their_holds_to_the_target,
                delete_of_an_absorbed_indicator_changes_nothing,
            );
        }
    };
}

/// The fake, with calls yielding so that concurrent workers interleave between find and create.
fn memory_api() -> (MemoryApi, SourceLists) {
    let api = MemoryApi::new();
    api.set_interleave(true);
    (api, lists())
}

scenarios!(memory, crate::sync_semantics::memory_api);

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

scenarios!(simulator, crate::sync_semantics::simulator);

// ---- MemoryApi-only: failure injection and call accounting ---------------------------------

mod memory_only {
    use super::*;

    /// The "former pattern is unknown" warning of an upsert, for indicator `id`.
    fn unknown_pattern_warned(id: &str) -> bool {
        logs().lines_at(log::Level::Warn).into_iter().any(|l| {
            l.starts_with("WARN")
                && l.contains("former pattern is unknown")
                && l.contains(&format!("indicator={id}:"))
        })
    }

    /// Every event carries the older standard ids the platform keeps (`stix_ids`): they alone
    /// say nothing about the pattern, so no warning. A replaced standard id without the former
    /// pattern is a pattern change whose IOCs cannot be released: warned.
    #[test]
    fn unknown_former_pattern_is_warned_only_when_the_pattern_changed() {
        logs();
        let s = syncer(MemoryApi::new(), true);
        let mut quiet = indicator("stix-ids-only");
        quiet.id = "warn-test-stix-ids-only".into();
        let stix_ids_only = FormerState {
            ids: vec!["indicator--python-era".into()],
            ..FormerState::default()
        };
        s.upsert(&quiet, &one(&ip("10.61.0.1")), &stix_ids_only)
            .unwrap();
        assert!(
            !unknown_pattern_warned(&quiet.id),
            "false warning: {:#?}",
            logs().lines_at(log::Level::Warn)
        );

        let mut changed = indicator("id-replaced");
        changed.id = "warn-test-id-replaced".into();
        let id_replaced = FormerState {
            ids: vec!["indicator--before".into()],
            standard_id_changed: true,
            ..FormerState::default()
        };
        s.upsert(&changed, &one(&ip("10.61.0.2")), &id_replaced)
            .unwrap();
        assert!(
            unknown_pattern_warned(&changed.id),
            "missing warning: {:#?}",
            logs().lines_at(log::Level::Warn)
        );
    }

    /// Needs a server that also rejects a second file declaring an existing rule identifier (an
    /// opt-in guess of both fakes, `MemoryApi::set_unique_yara_rule_names`, harfanglab-api.md
    /// §6.3): the create is refused, the clash found and updated.
    #[test]
    fn yara_duplicate_conflict_is_resolved_by_update() {
        super::yara_duplicate_conflict_is_resolved_by_update(|| {
            let (api, lists) = super::memory_api();
            api.set_unique_yara_rule_names(true);
            (api, lists)
        })
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
            harfanglab_intel::SyncObject::Ioc(ip("10.9.0.2"))
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
                enforce_enabled: false,
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
            assert_eq!(origin, CommentOrigin::Ours, "{rule:?}");
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

// ---- random histories against the fake ------------------------------------------------------

/// Seeded random histories of create / update (with renames) / delete / merge over a few
/// indicators sharing IP values, names, Sigma ids and Yara rules, against the fake, with
/// `remove_indicator` true and false. After every step: every object a live indicator wants
/// exists, is enabled and lists it; every holder listed is a live indicator that wants that
/// object; nothing nobody wants stays enabled (or exists at all, when removing).
mod histories {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    const SEEDS: u64 = 100;
    const STEPS: usize = 40;
    const NAMES: [&str; 3] = ["Shared 0", "Shared 1", "Shared 2"];
    const SIGMA_IDS: [&str; 2] = [SIGMA_ID, SIGMA_ID_2];
    const BODIES: [&str; 2] = ["cmd", "wmic"];
    const YARA_RULES: [&str; 2] = ["History_A", "History_B"];

    /// What an indicator's pattern names. Its kind is fixed at creation (a type change is the
    /// handler's business, tested in `service_handler`).
    #[derive(Clone, Debug)]
    enum Pattern {
        Ips(Vec<u8>),
        Sigma { id: usize, body: usize },
        Yara { rule: usize, body: usize },
    }

    #[derive(Clone, Debug)]
    struct Live {
        indicator: Indicator,
        pattern: Pattern,
    }

    fn value(k: u8) -> IocKey {
        ip(&format!("10.77.0.{k}"))
    }

    fn translation(name: &str, p: &Pattern) -> Translation {
        match p {
            Pattern::Ips(v) => iocs(&v.iter().map(|k| value(*k)).collect::<Vec<_>>()),
            Pattern::Sigma { id, body } => sigma(name, Some(SIGMA_IDS[*id]), BODIES[*body]),
            Pattern::Yara { rule, body } => yara(name, YARA_RULES[*rule], BODIES[*body]),
        }
    }

    fn random_pattern(rng: &mut fastrand::Rng, kind: u8) -> Pattern {
        match kind {
            0 => {
                let mut v: Vec<u8> = (0..rng.usize(1..=3)).map(|_| rng.u8(0..5)).collect();
                v.sort_unstable();
                v.dedup();
                Pattern::Ips(v)
            }
            1 => Pattern::Sigma {
                id: rng.usize(..2),
                body: rng.usize(..2),
            },
            _ => Pattern::Yara {
                rule: rng.usize(..2),
                body: rng.usize(..2),
            },
        }
    }

    fn kind_of(p: &Pattern) -> u8 {
        match p {
            Pattern::Ips(_) => 0,
            Pattern::Sigma { .. } => 1,
            Pattern::Yara { .. } => 2,
        }
    }

    fn named(n: usize, name: &str) -> Indicator {
        Indicator {
            id: format!("hist-{n}"),
            standard_id: Some(format!("indicator--hist-{n}")),
            name: name.to_owned(),
            ..Indicator::default()
        }
    }

    fn check(api: &MemoryApi, live: &[Live], remove: bool, history: &[String]) {
        let context = || history.join("\n");
        let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for l in live {
            if let Pattern::Ips(v) = &l.pattern {
                for k in v {
                    wanted
                        .entry(value(*k).value)
                        .or_default()
                        .insert(l.indicator.id.clone());
                }
            }
        }
        let rules = api.iocs();
        for rule in &rules {
            let (decoded, _) = RuleComment::decode(rule.comment.as_deref());
            let holders: BTreeSet<String> = decoded.holders.into_iter().map(|h| h.id).collect();
            let want = wanted.get(&rule.value).cloned().unwrap_or_default();
            assert_eq!(holders, want, "IOC {} holders\n{}", rule.value, context());
            assert_eq!(
                rule.enabled,
                !want.is_empty(),
                "IOC {}\n{}",
                rule.value,
                context()
            );
            assert!(
                !remove || !want.is_empty(),
                "IOC {} left\n{}",
                rule.value,
                context()
            );
        }
        for v in wanted.keys() {
            assert!(
                rules.iter().any(|r| r.value == *v),
                "IOC {v} missing\n{}",
                context()
            );
        }
        for (kind, k) in [(RuleKind::Sigma, 1), (RuleKind::Yara, 2)] {
            let mut held: BTreeMap<String, usize> = BTreeMap::new();
            for rule in api.rules(kind) {
                let holders = rule_holders_of(kind, &rule);
                assert_eq!(rule.enabled, !holders.is_empty(), "{rule:?}\n{}", context());
                assert!(
                    !remove || !holders.is_empty(),
                    "{rule:?} left\n{}",
                    context()
                );
                for h in holders {
                    let l = live
                        .iter()
                        .find(|l| l.indicator.id == h)
                        .unwrap_or_else(|| panic!("{h} on {rule:?} is gone\n{}", context()));
                    assert_eq!(kind_of(&l.pattern), k, "{h} on {rule:?}\n{}", context());
                    if let Pattern::Sigma { id, .. } = l.pattern {
                        assert_eq!(rule.id, SIGMA_IDS[id], "{h} on {rule:?}\n{}", context());
                    }
                    *held.entry(h).or_default() += 1;
                }
            }
            for l in live.iter().filter(|l| kind_of(&l.pattern) == k) {
                assert_eq!(
                    held.get(&l.indicator.id),
                    Some(&1),
                    "{} must hold exactly one {kind:?} rule\n{}",
                    l.indicator.id,
                    context()
                );
            }
        }
    }

    fn run(seed: u64, remove: bool) {
        let api = MemoryApi::new();
        let s = syncer(api.clone(), remove);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut live: Vec<Live> = Vec::new();
        let mut next = 0;
        let mut history = vec![format!("seed {seed}, remove_indicator {remove}")];
        for _ in 0..STEPS {
            match rng.u8(0..10) {
                0..=2 if live.len() >= 2 => {
                    // Merge 1 or 2 of the others into one.
                    let target = live.swap_remove(rng.usize(..live.len()));
                    let n = rng.usize(1..=2.min(live.len()));
                    let sources: Vec<Live> = (0..n)
                        .map(|_| live.swap_remove(rng.usize(..live.len())))
                        .collect();
                    let absorbed: Vec<Absorbed> = sources
                        .iter()
                        .map(|l| Absorbed {
                            indicator: l.indicator.clone(),
                            translation: translation(&l.indicator.name, &l.pattern),
                            former: none(),
                        })
                        .collect();
                    history.push(format!(
                        "merge {:?} into {} {:?}",
                        sources
                            .iter()
                            .map(|l| format!(
                                "{} {:?} {:?}",
                                l.indicator.id, l.indicator.name, l.pattern
                            ))
                            .collect::<Vec<_>>(),
                        target.indicator.id,
                        target.pattern
                    ));
                    let t = translation(&target.indicator.name, &target.pattern);
                    s.merge(&target.indicator, &t, &none(), &absorbed)
                        .expect("merge");
                    live.push(target);
                }
                3..=5 if !live.is_empty() => {
                    let i = rng.usize(..live.len());
                    let old = live[i].clone();
                    let mut indicator = old.indicator.clone();
                    let mut former = none();
                    if rng.bool() {
                        indicator.name = NAMES[rng.usize(..NAMES.len())].to_owned();
                        if indicator.name != old.indicator.name {
                            former.name = Some(old.indicator.name.clone());
                        }
                    }
                    let pattern = random_pattern(&mut rng, kind_of(&old.pattern));
                    // What the decoder reads from the reverse patch.
                    match &old.pattern {
                        Pattern::Ips(_) => {
                            former.iocs = Some(translation("", &old.pattern).iocs);
                        }
                        Pattern::Sigma { id, body } => {
                            former.pattern =
                                Some(sigma_content(Some(SIGMA_IDS[*id]), BODIES[*body]));
                        }
                        Pattern::Yara { rule, body } => {
                            former.pattern = Some(yara_content(YARA_RULES[*rule], BODIES[*body]));
                        }
                    }
                    history.push(format!(
                        "update {} {:?} {:?} -> {:?} {:?}",
                        indicator.id, old.indicator.name, old.pattern, indicator.name, pattern
                    ));
                    s.upsert(&indicator, &translation(&indicator.name, &pattern), &former)
                        .expect("update");
                    live[i] = Live { indicator, pattern };
                }
                6..=7 if !live.is_empty() => {
                    let l = live.swap_remove(rng.usize(..live.len()));
                    history.push(format!("delete {} {:?}", l.indicator.id, l.pattern));
                    s.release(
                        &l.indicator,
                        &translation(&l.indicator.name, &l.pattern),
                        &none(),
                    )
                    .expect("delete");
                }
                _ => {
                    let indicator = named(next, NAMES[rng.usize(..NAMES.len())]);
                    next += 1;
                    let kind = rng.u8(0..3);
                    let pattern = random_pattern(&mut rng, kind);
                    history.push(format!(
                        "create {} {:?} {:?}",
                        indicator.id, indicator.name, pattern
                    ));
                    s.upsert(&indicator, &translation(&indicator.name, &pattern), &none())
                        .expect("create");
                    live.push(Live { indicator, pattern });
                }
            }
            check(&api, &live, remove, &history);
        }
    }

    #[test]
    fn random_histories_keep_exactly_what_live_indicators_want() {
        for seed in 0..SEEDS {
            run(seed, true);
            run(seed, false);
        }
    }
}
