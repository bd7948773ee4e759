//! End to end (the real binary, both simulators): a shared Sigma rule and merges. Two Sigma
//! indicators carry one rule (same `id`) and a third one too; deleting that third one keeps the
//! rule. Then two merges of three indicators: STIX ones sharing IOCs (one absorbed indicator's
//! update and `based-on` observable arrive just before the merge), and Sigma ones sharing the
//! rule (one absorbed with a rule of its own). Finally a delete of an absorbed indicator, which
//! must change nothing. The final HarfangLab state only comes out right when the holds move in
//! one write per object and the merge is ordered after the absorbed indicators' own events.

use crate::support::e2e::{
    World, based_on, create_ip, create_sigma, delete_stix, indicator_stix, internal_id,
    ipv4_pattern, merge_into, sigma_stix, update_stix,
};
use harfanglab_intel::sim::harfanglab::Faults;
use std::time::Duration;

const RULE_X: &str = "7d3c2a10-5b4e-4f6a-8c9d-0e1f2a3b4c5d";
const RULE_Y: &str = "8e4d3b21-6c5f-4a7b-9d0e-1f2a3b4c5d6e";

fn rule(id: &str, image: &str) -> String {
    format!(
        "title: Suspicious {image}\nid: {id}\nlogsource:\n  category: process_creation\n  product: windows\ndetection:\n  sel:\n    Image|endswith: '\\\\{image}.exe'\n  condition: sel\nlevel: high\n"
    )
}

fn two_ips(a: &str, b: &str) -> String {
    format!("{} OR {}", ipv4_pattern(a), ipv4_pattern(b))
}

#[test]
fn merges_and_a_shared_sigma_rule_through_the_binary() {
    // STIX: t (A, B), s1 (A, C), s2 (A; then A, E; and observable D), o (C).
    let (a, b, c, d, e) = (
        "10.90.0.1",
        "10.90.0.2",
        "10.90.0.3",
        "10.90.0.4",
        "10.90.0.5",
    );
    let t = indicator_stix(1, 0, "t", &two_ips(a, b), 80);
    let s1 = indicator_stix(2, 0, "s1", &two_ips(a, c), 60);
    let s2 = indicator_stix(3, 0, "s2", &ipv4_pattern(a), 60);
    let s2_later = indicator_stix(3, 0, "s2", &two_ips(a, e), 60);
    // Sigma: st and ss1 share rule X, keeper too; ss2 has rule Y.
    let st = sigma_stix(10, "Rule X (st)", &rule(RULE_X, "cmd"));
    let ss1 = sigma_stix(11, "Rule X (ss1)", &rule(RULE_X, "cmd"));
    let ss2 = sigma_stix(12, "Rule Y (ss2)", &rule(RULE_Y, "wmic"));
    let keeper = sigma_stix(13, "Rule X (keeper)", &rule(RULE_X, "cmd"));

    let mut scenario = vec![
        crate::support::e2e::create_from(&t),
        crate::support::e2e::create_from(&s1),
        crate::support::e2e::create_from(&s2),
        create_ip(4, c, 50),
        create_sigma(10, "Rule X (st)", &rule(RULE_X, "cmd")),
        create_sigma(11, "Rule X (ss1)", &rule(RULE_X, "cmd")),
        create_sigma(12, "Rule Y (ss2)", &rule(RULE_Y, "wmic")),
        create_sigma(13, "Rule X (keeper)", &rule(RULE_X, "cmd")),
    ];
    // Unrelated work between the steps, so workers are busy and events overlap.
    let mut other = 100u64;
    let mut fill = |scenario: &mut Vec<_>, n: u64| {
        for _ in 0..n {
            scenario.push(create_ip(other, &crate::support::e2e::ip_for(other), 40));
            other += 1;
        }
    };
    fill(&mut scenario, 20);
    // One holder of the shared rule goes: the rule stays for the other two.
    scenario.push(delete_stix(&keeper));
    fill(&mut scenario, 10);
    // The absorbed s2 changes just before the merge: the merge must come after.
    scenario.push(based_on("create", 1, 3, 0, "IPv4-Addr", d));
    scenario.push(update_stix(&s2, &s2_later));
    scenario.push(merge_into(&t, &[s1.clone(), s2_later.clone()]));
    fill(&mut scenario, 10);
    scenario.push(merge_into(&st, &[ss1.clone(), ss2.clone()]));
    fill(&mut scenario, 10);
    // A delete of an absorbed indicator (OpenCTI sends none; a replay or a filter might).
    scenario.push(delete_stix(&s1));
    fill(&mut scenario, 10);
    let others = other - 100;

    let faults = Faults {
        latency: Duration::from_millis(2),
        ..Faults::default()
    };
    let world = World::start(scenario, faults, 14);
    let s = world.run_to_end(&world.opts().workers(8), Duration::from_secs(60));
    s.assert_no_duplicates();

    assert_eq!(s.holder_ids("ip_both", a), [internal_id(1)], "{s:#?}");
    assert_eq!(s.holder_ids("ip_both", b), [internal_id(1)]);
    assert_eq!(s.holder_ids("ip_both", c), [internal_id(4)]);
    // The absorbed s2's observable moved to the target with its relationship.
    assert_eq!(s.holder_ids("ip_both", d), [internal_id(1)]);
    assert!(
        s.ioc("ip_both", e).is_none(),
        "only the absorbed s2 wanted {e}: {:?}",
        s.ioc("ip_both", e)
    );
    for v in [a, b, c, d] {
        assert!(s.is_live("ip_both", v), "{v}");
    }
    assert_eq!(s.iocs.len() as u64, 4 + others, "{:#?}", s.iocs);

    assert_eq!(s.sigma.len(), 1, "rule Y goes with ss2: {:#?}", s.sigma);
    let x = &s.sigma[0];
    assert!(x.enabled);
    assert_eq!(x.holders, [internal_id(10)]);
    assert_eq!(x.name, "Rule X (st)");
}
