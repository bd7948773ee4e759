//! End to end across OpenCTI releases (issue 10): the real binary against the OpenCTI simulator
//! answering as each release (its own schema table: it refuses every field the release lacks,
//! as graphql-js does). On each: it registers with every field the release has and nothing more,
//! pings within 5 s of start although `CONNECTOR_PING_INTERVAL` is the default 40 s (so only the
//! startup ping can land), applies a scenario, pushes its final position to OpenCTI at SIGTERM,
//! and, restarted without its local checkpoint, resumes from the platform's position.
//!
//! One more platform lacks fields the connector's version table says it has (the simulator's
//! `lacks`): the connector drops them on the platform's word, warns once per process, and works
//! all the same. And a platform refusing a required field stops the service with its message.
//!
//! The cases run in parallel threads (each its own simulators and connector process).

use crate::support::e2e::{
    CONNECTOR_ID, Connector, World, based_on, bulk_creates, create_ip, delete_ip, update_ip,
    wait_until,
};
use harfanglab_intel::sim::harfanglab::Faults;
use harfanglab_intel::sim::opencti::ScenarioEvent;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The promise of issue 10: pinged within 5 s of start.
const FIRST_PING: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(60);
const LINKED: &str = "linked.release.example";

const BASE: &[&str] = &[
    "id",
    "name",
    "type",
    "scope",
    "auto",
    "only_contextual",
    "playbook_compatible",
];
const CALLBACK: &[&str] = &["listen_callback_uri"];
const AUTO_UPDATE: &[&str] = &["auto_update", "enrichment_resolution"];

/// One simulated platform.
struct Case {
    version: &'static str,
    /// Names the platform lacks although the connector's table says the release has them.
    lacks: &'static [&'static str],
    /// The `registerConnector` input fields the platform must end up accepting.
    registered: Vec<&'static str>,
    /// Whether the accepted pings carry `connectorInfo`.
    connector_info: bool,
}

fn case(version: &'static str, extra: &[&[&'static str]], connector_info: bool) -> Case {
    let mut registered = BASE.to_vec();
    for e in extra {
        registered.extend_from_slice(e);
    }
    Case {
        version,
        lacks: &[],
        registered,
        connector_info,
    }
}

/// Creates, an update, a delete and a linked observable: 6 IOC rules at the end.
fn scenario() -> Vec<ScenarioEvent> {
    let mut s = bulk_creates(0, 6);
    s.push(update_ip(1, 0, "10.0.0.1", "10.99.0.1", false));
    s.push(delete_ip(2, 0, "10.0.0.2"));
    s.push(based_on("create", 1, 3, 0, "Domain-Name", LINKED));
    s
}

fn ping_bodies(world: &World) -> Vec<Value> {
    world
        .octi
        .graphql_requests()
        .into_iter()
        .filter(|b| {
            b["query"]
                .as_str()
                .is_some_and(|q| q.contains("pingConnector"))
        })
        .collect()
}

fn lines_with(c: &Connector, needle: &str) -> usize {
    std::fs::read_to_string(&c.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// What one case measured.
struct Timings {
    first_ping: Duration,
    first_ping_after_restart: Duration,
    total: Duration,
}

fn run_case(case: &Case) -> Timings {
    let t0 = Instant::now();
    let v = case.version;
    let lacks: Vec<String> = case.lacks.iter().map(|s| (*s).to_owned()).collect();
    let world = World::start_with(scenario(), Faults::default(), 1, |c| {
        c.version = v.into();
        c.lacks = lacks;
    });
    let opts = world.opts().workers(2).env("CONNECTOR_PING_INTERVAL", "40");
    let last = world.last_event_id();

    // Registers and pings at once.
    let mut c = world.spawn(&opts);
    let first_ping = wait_until(&mut c, "first ping", FIRST_PING, || {
        world.octi.ping_count() >= 1
    });
    let registered = world.octi.registered();
    assert_eq!(registered.len(), 1, "{v}: {registered:?}");
    let mut keys: Vec<&str> = registered[0]
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    let mut want = case.registered.clone();
    want.sort_unstable();
    assert_eq!(keys, want, "{v}: registered input");

    // Applies the scenario.
    world.wait_checkpoint(&mut c, &last, TIMEOUT);
    let s = crate::support::e2e::snapshot(&world.hl);
    s.assert_no_duplicates();
    assert!(s.is_live("ip_both", "10.99.0.1"), "{v}: {s:#?}");
    assert!(s.ioc("ip_both", "10.0.0.1").is_none(), "{v}: {s:#?}");
    assert!(s.ioc("ip_both", "10.0.0.2").is_none(), "{v}: {s:#?}");
    assert!(s.is_live("domain_name", LINKED), "{v}: {s:#?}");
    assert_eq!(s.iocs.len(), 6, "{v}: {s:#?}");
    c.terminate_ok(Duration::from_secs(15));

    // The final position reached OpenCTI.
    let state = world.octi.connector_state(CONNECTOR_ID).unwrap_or_default();
    assert!(state.contains(&last), "{v}: platform state {state:?}");
    let pings = ping_bodies(&world);
    let accepted = pings.last().expect("pings");
    assert_eq!(
        accepted["variables"].get("connectorInfo").is_some(),
        case.connector_info,
        "{v}: {accepted}"
    );
    let rejections = world.octi.rejections();
    if case.lacks.is_empty() {
        // The table is right for this release: nothing was refused.
        assert!(rejections.is_empty(), "{v}: {rejections:?}");
        assert!(
            pings
                .iter()
                .all(|p| p["variables"].get("connectorInfo").is_some() == case.connector_info),
            "{v}: {pings:?}"
        );
    } else {
        // Refused once per missing name (then remembered), and said once at warn.
        assert!(!rejections.is_empty(), "{v}");
        for name in case.lacks.iter().filter(|n| !n.ends_with("Input")) {
            let said = lines_with(&c, &format!("does not know `{name}`"));
            assert_eq!(said, 1, "{v}: warnings about {name}\n{}", c.stderr_tail());
            assert_eq!(
                lines_with(&c, &format!("OpenCTI {v} does not know `{name}`")),
                1,
                "{v}: the warning names the platform version\n{}",
                c.stderr_tail()
            );
        }
    }
    let refused_once = rejections.len();

    // Restart without the local checkpoint: the platform's position is the one used.
    std::fs::remove_file(world.checkpoint_path()).expect("remove the local checkpoint");
    let pings_before = world.octi.ping_count();
    let streams_before = world.octi.stream_requests().len();
    let mut c = world.spawn(&opts);
    let first_ping_after_restart =
        wait_until(&mut c, "first ping after restart", FIRST_PING, || {
            world.octi.ping_count() > pings_before
        });
    let ev = create_ip(100, "10.100.0.1", 70);
    let id = world.octi.append_event(&ev.event, ev.data);
    world.wait_checkpoint(&mut c, &id, TIMEOUT);
    let reqs = world.octi.stream_requests();
    assert_eq!(
        reqs[streams_before].header("last-event-id"),
        Some(last.as_str()),
        "{v}: resumed from {:?}",
        reqs[streams_before]
    );
    let s = crate::support::e2e::snapshot(&world.hl);
    assert!(s.is_live("ip_both", "10.100.0.1"), "{v}: {s:#?}");
    assert_eq!(s.iocs.len(), 7, "{v}: {s:#?}");
    c.terminate_ok(Duration::from_secs(15));
    let state = world.octi.connector_state(CONNECTOR_ID).unwrap_or_default();
    assert!(state.contains(&id), "{v}: platform state {state:?}");
    // A new process asks again (the dropped fields are remembered per process), as often.
    assert_eq!(world.octi.rejections().len(), 2 * refused_once, "{v}");
    Timings {
        first_ping,
        first_ping_after_restart,
        total: t0.elapsed(),
    }
}

#[test]
fn registers_pings_applies_and_resumes_on_every_release() {
    let mut wrong_table = case("6.9.4", &[CALLBACK, &["enrichment_resolution"]], false);
    wrong_table.lacks = &["auto_update", "connectorInfo", "ConnectorInfoInput"];
    let cases = vec![
        case("6.0.0", &[], false),
        case("6.2.11", &[], false),
        case("6.4.0", &[], true),
        case("6.5.0", &[], true),
        case("6.5.7", &[CALLBACK], true),
        case("6.8.0", &[CALLBACK], true),
        case("6.8.9", &[CALLBACK, AUTO_UPDATE], true),
        case("6.9.4", &[CALLBACK, AUTO_UPDATE], true),
        case("7.260615.1", &[CALLBACK, AUTO_UPDATE], true),
        wrong_table,
    ];
    let t0 = Instant::now();
    let runs: Vec<_> = cases
        .into_iter()
        .map(|c| {
            std::thread::Builder::new()
                .name(c.version.into())
                .spawn(move || {
                    let label = format!(
                        "{}{}",
                        c.version,
                        if c.lacks.is_empty() {
                            ""
                        } else {
                            " (lacks fields)"
                        }
                    );
                    (label, run_case(&c))
                })
                .expect("spawn a case")
        })
        .collect();
    let mut failed = 0;
    for run in runs {
        match run.join() {
            Ok((label, t)) => eprintln!(
                "OpenCTI {label:<26} first ping {:>6.0?}, after restart {:>6.0?}, case {:>6.1?}",
                t.first_ping, t.first_ping_after_restart, t.total
            ),
            Err(_) => failed += 1,
        }
    }
    eprintln!("all releases in {:.1?}", t0.elapsed());
    assert_eq!(
        failed, 0,
        "{failed} release case(s) failed (see the panics above)"
    );
}

#[test]
fn a_platform_refusing_a_required_field_stops_the_service_with_its_message() {
    let world = World::start_with(scenario(), Faults::default(), 1, |c| {
        c.version = "6.8.10".into();
        c.lacks = vec!["name".into(), "listen_callback_uri".into()];
    });
    let mut c = world.spawn(&world.opts().workers(1));
    let status = c.wait_exit(Duration::from_secs(20));
    let log = std::fs::read_to_string(&c.log).unwrap_or_default();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "{}",
        c.stderr_tail()
    );
    assert!(
        log.contains(r#"Field "name" is not defined by type "RegisterConnectorInput"."#),
        "{log}"
    );
    assert!(
        log.contains("OpenCTI 6.8.10 does not accept even the minimal registerConnector"),
        "{log}"
    );
    assert!(
        log.contains("optional fields dropped: listen_callback_uri"),
        "{log}"
    );
    assert!(world.octi.registered().is_empty());
    assert_eq!(world.octi.ping_count(), 0);
}
