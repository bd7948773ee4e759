//! End to end, issue 7 behaviours with the real binary: an observable linked by `based-on`
//! beyond the pattern becomes an IOC held by the indicator and is released when the relationship
//! is deleted (the indicator's other IOCs stay); a pattern change that also regenerates the
//! standard id (`/id` in `reverse_patch`) releases the old values; and
//! `CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE=false` opens the stream without `recover` (checked on
//! the requests the OpenCTI simulator recorded; without the setting, the first request has it).

use crate::support::e2e::{World, based_on, bulk_creates, create_ip, internal_id, update_ip};
use harfanglab_intel::sim::harfanglab::Faults;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);
const LINKED_DOMAIN: &str = "linked.e2e-demo.example";

fn has_recover(query: &str) -> bool {
    query
        .split('&')
        .any(|kv| kv.split('=').next() == Some("recover"))
}

#[test]
fn linked_observables_and_pattern_change_with_new_standard_id() {
    let world = World::start(
        vec![
            create_ip(1, "10.77.0.1", 80),
            create_ip(2, "10.77.0.3", 60),
            based_on("create", 1, 1, 0, "IPv4-Addr", "10.77.0.2"),
            based_on("create", 2, 1, 0, "Domain-Name", LINKED_DOMAIN),
            // Linked value equal to the pattern's: still one rule, one holder.
            based_on("create", 3, 2, 0, "IPv4-Addr", "10.77.0.3"),
        ],
        Faults::default(),
        1,
    );
    let mut c = world.spawn(&world.opts().workers(4));
    world.wait_checkpoint(&mut c, &world.last_event_id(), TIMEOUT);
    let s = crate::support::e2e::snapshot(&world.hl);
    let one = vec![internal_id(1)];
    assert!(
        s.is_live("ip_both", "10.77.0.2"),
        "linked IPv4 beyond the pattern: {s:#?}"
    );
    assert_eq!(s.holder_ids("ip_both", "10.77.0.2"), one);
    assert!(s.is_live("domain_name", LINKED_DOMAIN), "{s:#?}");
    assert_eq!(s.holder_ids("domain_name", LINKED_DOMAIN), one);
    assert_eq!(s.holder_ids("ip_both", "10.77.0.1"), one);
    assert_eq!(s.holder_ids("ip_both", "10.77.0.3"), vec![internal_id(2)]);
    assert_eq!(s.iocs.len(), 4);

    // Unlink the IPv4: released; the pattern's IOC and the other linked one stay.
    let ev = based_on("delete", 1, 1, 0, "IPv4-Addr", "10.77.0.2");
    let id = world.octi.append_event(&ev.event, ev.data);
    world.wait_checkpoint(&mut c, &id, TIMEOUT);
    let s = crate::support::e2e::snapshot(&world.hl);
    assert!(
        s.ioc("ip_both", "10.77.0.2").is_none(),
        "{:?}",
        s.ioc("ip_both", "10.77.0.2")
    );
    assert_eq!(s.holder_ids("ip_both", "10.77.0.1"), one);
    assert_eq!(s.holder_ids("domain_name", LINKED_DOMAIN), one);

    // Pattern change regenerating the standard id: old value released, new one held by the same
    // (internal) id, the still-linked domain kept.
    let ev = update_ip(1, 0, "10.77.0.1", "10.77.0.9", true);
    let id = world.octi.append_event(&ev.event, ev.data);
    world.wait_checkpoint(&mut c, &id, TIMEOUT);
    c.terminate_ok(Duration::from_secs(15));
    let s = crate::support::e2e::snapshot(&world.hl);
    s.assert_no_duplicates();
    assert!(
        s.ioc("ip_both", "10.77.0.1").is_none(),
        "old value kept: {:?}",
        s.ioc("ip_both", "10.77.0.1")
    );
    assert_eq!(s.holder_ids("ip_both", "10.77.0.9"), one);
    assert_eq!(s.holder_ids("domain_name", LINKED_DOMAIN), one);
    assert_eq!(s.holder_ids("ip_both", "10.77.0.3"), vec![internal_id(2)]);
    assert_eq!(s.iocs.len(), 3, "{s:#?}");

    // Default recover setting: the first stream request of a first run asks for recovery.
    let reqs = world.octi.stream_requests();
    assert!(
        reqs.first().is_some_and(|r| has_recover(&r.query)),
        "first run without the setting should send recover=: {reqs:?}"
    );
}

#[test]
fn recover_iso_date_false_opens_the_stream_without_recover() {
    let world = World::start(bulk_creates(0, 5), Faults::default(), 1);
    world.octi.set_drop_every(Some(2)); // several connections: none may carry recover
    let opts = world
        .opts()
        .workers(2)
        .env("CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE", "false");
    let s = world.run_to_end(&opts, TIMEOUT);
    assert_eq!(s.iocs.len(), 5);
    let reqs = world.octi.stream_requests();
    assert!(reqs.len() >= 2, "{reqs:?}");
    for r in &reqs {
        assert!(!has_recover(&r.query), "stream opened with recover: {r:?}");
    }
}
