//! End to end ordering: bursts of create → update → update (→ delete) on 20 indicators, each
//! event separated by unrelated creates, run with 32 workers. The final HarfangLab state can only
//! come from in-order application per indicator: the last pattern's value present (held by that
//! indicator only), every earlier value released, deleted indicators leave nothing behind (never a
//! resurrected rule), and every unrelated indicator is present.

use crate::support::e2e::{World, create_ip, delete_ip, internal_id, ip_for, update_ip};
use harfanglab_intel::sim::harfanglab::Faults;
use std::time::Duration;

const BURSTS: u64 = 20;
const OTHERS_BETWEEN: u64 = 3;

fn burst_ip(n: u64, step: u64) -> String {
    format!("10.200.{n}.{step}")
}

#[test]
fn bursts_on_one_indicator_apply_in_order_with_many_workers() {
    let mut scenario = Vec::new();
    let mut other = 1_000u64;
    let mut push_others = |scenario: &mut Vec<_>, k: u64| {
        for _ in 0..k {
            scenario.push(create_ip(other, &ip_for(other), 50));
            other += 1;
        }
    };
    for stage in 0..4u64 {
        for n in 1..=BURSTS {
            let ev = match stage {
                0 => create_ip(n, &burst_ip(n, 1), 70),
                1 => update_ip(n, 0, &burst_ip(n, 1), &burst_ip(n, 2), false),
                // Even indicators also get a new standard id with their last pattern.
                2 => update_ip(n, 0, &burst_ip(n, 2), &burst_ip(n, 3), n % 2 == 0),
                _ if n % 2 == 1 => delete_ip(n, 0, &burst_ip(n, 3)),
                _ => continue,
            };
            scenario.push(ev);
            push_others(&mut scenario, OTHERS_BETWEEN);
        }
    }
    push_others(&mut scenario, 50);
    let others = other - 1_000;

    // A little latency makes concurrent work overlap for real.
    let faults = Faults {
        latency: Duration::from_millis(1),
        ..Faults::default()
    };
    let world = World::start(scenario, faults, 11);
    let s = world.run_to_end(&world.opts().workers(32), Duration::from_secs(60));
    s.assert_no_duplicates();

    for n in 1..=BURSTS {
        for step in 1..=2 {
            assert!(
                s.ioc("ip_both", &burst_ip(n, step)).is_none(),
                "indicator {n}: superseded value {} still there: {:?}",
                burst_ip(n, step),
                s.ioc("ip_both", &burst_ip(n, step))
            );
        }
        let last = burst_ip(n, 3);
        if n % 2 == 1 {
            assert!(
                s.ioc("ip_both", &last).is_none(),
                "deleted indicator {n} resurrected: {:?}",
                s.ioc("ip_both", &last)
            );
        } else {
            assert!(
                s.is_live("ip_both", &last),
                "indicator {n}: last value {last} missing"
            );
            assert_eq!(s.holder_ids("ip_both", &last), vec![internal_id(n)]);
        }
    }
    for k in 1_000..1_000 + others {
        assert!(
            s.is_live("ip_both", &ip_for(k)),
            "unrelated indicator {k} missing"
        );
    }
    assert_eq!(
        s.iocs.len() as u64,
        others + BURSTS / 2,
        "unexpected extra IOC rules"
    );
}
