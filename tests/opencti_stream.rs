//! The live-stream reader against the OpenCTI simulator: resume after drops, dead-stream detection,
//! status policy (a 429's `Retry-After` honoured), headers (the reader's and `probe`'s), gzip,
//! restart and shutdown.

use crossbeam_channel::{Receiver, Sender, bounded};
use harfanglab_intel::sim::opencti::{
    ConnFault, OpenCtiSim, OpenCtiSimConfig, ScenarioEvent, serve,
};
use harfanglab_intel::{
    Checkpoint, Payload, Secret, StreamError, StreamItem, StreamOptions, StreamReader, probe_stream,
};
use serde_json::json;
use std::time::{Duration, Instant};

const OCTI: &str = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba";

fn indicator_event(n: usize) -> ScenarioEvent {
    ScenarioEvent {
        event: "create".into(),
        data: json!({"version":"4","type":"create","scope":"external",
            "message": format!("creates a Indicator `10.0.0.{n}`"),
            "data": {"id": format!("indicator--{n:08}"), "type":"indicator","spec_version":"2.1",
                "extensions": {OCTI: {"id": format!("internal-{n}"), "score": 50}},
                "name": format!("10.0.0.{n}"), "pattern": format!("[ipv4-addr:value = '10.0.0.{n}']"),
                "pattern_type":"stix","revoked":false}}),
    }
}

fn sim(n: usize) -> OpenCtiSim {
    let cfg = OpenCtiSimConfig {
        heartbeat: Duration::from_millis(50),
        scenario: (0..n).map(indicator_event).collect(),
        ..OpenCtiSimConfig::default()
    };
    serve("127.0.0.1:0", cfg).unwrap()
}

fn opts(sim: &OpenCtiSim) -> StreamOptions {
    let mut o = StreamOptions::new(
        format!("{}/", sim.base_url()),
        Secret::new("sim-token"),
        "live",
    );
    o.backoff_base = Duration::from_millis(10);
    o.idle_timeout = Duration::from_millis(400);
    o
}

fn start(from: &str) -> Checkpoint {
    Checkpoint {
        start_from: from.into(),
        recover_until: None,
    }
}

struct Run {
    reader: StreamReader,
    rx: Receiver<StreamItem>,
    shutdown: Option<Sender<()>>,
}

fn run(o: StreamOptions, from: Checkpoint, cap: usize) -> Run {
    let (tx, rx) = bounded(cap);
    let (stx, srx) = bounded::<()>(0);
    let reader = StreamReader::spawn(o, from, tx, srx).unwrap();
    Run {
        reader,
        rx,
        shutdown: Some(stx),
    }
}

/// Collect items until `n` events arrived (or 10 s passed).
fn events(rx: &Receiver<StreamItem>, n: usize, others: &mut Vec<StreamItem>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ids = Vec::new();
    while ids.len() < n {
        match rx.recv_deadline(deadline) {
            Ok(StreamItem::Event(e)) => {
                assert!(matches!(e.payload, Payload::Indicator(_)));
                ids.push(e.id.clone());
            }
            Ok(other) => others.push(other),
            Err(_) => panic!("only {} of {n} events; other items: {others:?}", ids.len()),
        }
    }
    ids
}

#[test]
fn resumes_after_drops_without_loss_or_duplicates() {
    let sim = sim(20);
    sim.set_drop_every(Some(3));
    let r = run(opts(&sim), start("0-0"), 4);
    let mut others = Vec::new();
    let ids = events(&r.rx, 20, &mut others);
    assert_eq!(ids, sim.event_ids());
    let reqs = sim.stream_requests();
    assert!(reqs.len() >= 7, "{} connections", reqs.len());
    // Each reconnect resumes from the last id delivered on the previous connection.
    assert_eq!(reqs[0].header("last-event-id"), Some("0-0"));
    assert_eq!(reqs[1].header("last-event-id"), Some(ids[2].as_str()));
    assert!(
        others
            .iter()
            .any(|i| matches!(i, StreamItem::Disconnected { .. }))
    );
    drop(r.shutdown);
    r.reader.join().unwrap();
}

#[test]
fn stalled_stream_is_detected_and_reopened() {
    let sim = sim(6);
    sim.push_faults([ConnFault::StallAfter(2)]);
    let r = run(opts(&sim), start("0-0"), 16);
    let mut others = Vec::new();
    let t0 = Instant::now();
    let ids = events(&r.rx, 6, &mut others);
    assert_eq!(ids, sim.event_ids());
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "idle timeout honoured"
    );
    let reason = others
        .iter()
        .find_map(|i| match i {
            StreamItem::Disconnected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("a disconnect");
    assert!(reason.contains("no data"), "{reason}");
    assert_eq!(
        sim.stream_requests()[1].header("last-event-id"),
        Some(ids[1].as_str())
    );
    drop(r.shutdown);
    r.reader.join().unwrap();
}

#[test]
fn stopped_stream_410_and_5xx_are_retried_until_it_works() {
    let sim = sim(3);
    sim.push_faults([
        ConnFault::Status(410),
        ConnFault::Status(503),
        ConnFault::Status(410),
    ]);
    let r = run(opts(&sim), start("0-0"), 16);
    let mut others = Vec::new();
    assert_eq!(events(&r.rx, 3, &mut others), sim.event_ids());
    let reasons: Vec<String> = others
        .iter()
        .filter_map(|i| match i {
            StreamItem::Disconnected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].contains("410") && reasons[0].contains("stopped"));
    assert!(reasons[1].contains("503"));
    drop(r.shutdown);
    r.reader.join().unwrap();
}

/// A throttled stream waits the server's `Retry-After` before reconnecting (the backoff here is
/// 10 ms, so a wait of a second can only be the hint), then streams.
#[test]
fn a_throttled_stream_reconnects_after_its_retry_after() {
    let sim = sim(2);
    sim.push_faults([ConnFault::Throttled(1)]);
    let t0 = Instant::now();
    let r = run(opts(&sim), start("0-0"), 16);
    let mut others = Vec::new();
    assert_eq!(events(&r.rx, 2, &mut others), sim.event_ids());
    let waits: Vec<Duration> = others
        .iter()
        .filter_map(|i| match i {
            StreamItem::Disconnected { reason, retry_in } => {
                assert!(reason.contains("429"), "{reason}");
                Some(*retry_in)
            }
            _ => None,
        })
        .collect();
    assert_eq!(waits.len(), 1, "{others:?}");
    assert!(
        waits[0] >= Duration::from_secs(1) && waits[0] <= Duration::from_secs(2),
        "{waits:?}"
    );
    assert!(t0.elapsed() >= Duration::from_secs(1));
    let statuses: Vec<u16> = sim.stream_requests().iter().map(|q| q.status).collect();
    assert_eq!(statuses, [429, 200]);
    drop(r.shutdown);
    r.reader.join().unwrap();
}

#[test]
fn bad_token_on_first_connection_is_fatal_and_names_the_setting() {
    let sim = sim(1);
    let mut o = opts(&sim);
    o.token = Secret::new("wrong-token");
    let r = run(o, start("0-0"), 4);
    let err = r.reader.join().unwrap_err();
    assert!(matches!(err, StreamError::Auth { status: 401, .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("OPENCTI_TOKEN") && !msg.contains("wrong-token"),
        "{msg}"
    );
    assert_eq!(sim.stream_requests().len(), 1);
    // The reader dropped its sender: a consumer loop ends.
    assert!(r.rx.recv_timeout(Duration::from_secs(1)).is_err());
}

#[test]
fn unknown_stream_id_is_fatal_on_first_connection() {
    let sim = sim(1);
    let mut o = opts(&sim);
    o.stream_id = "nope".into();
    let r = run(o, start("0-0"), 4);
    let err = r.reader.join().unwrap_err();
    assert!(
        err.to_string().contains("CONNECTOR_LIVE_STREAM_ID"),
        "{err}"
    );
}

#[test]
fn auth_failure_after_a_working_connection_is_retried() {
    let sim = sim(4);
    sim.push_faults([ConnFault::DropAfter(2), ConnFault::Status(401)]);
    let r = run(opts(&sim), start("0-0"), 16);
    let mut others = Vec::new();
    assert_eq!(events(&r.rx, 4, &mut others), sim.event_ids());
    assert_eq!(sim.stream_requests()[1].status, 401);
    drop(r.shutdown);
    r.reader.join().unwrap();
}

#[test]
fn request_carries_pycti_headers_and_encoded_recover_and_probe_sends_the_same() {
    let sim = sim(1);
    let mut o = opts(&sim);
    o.listen_delete = false;
    o.with_inferences = true;
    let from = Checkpoint {
        start_from: "0-0".into(),
        recover_until: Some("2024-06-15T09:00:00+02:00".into()),
    };
    let r = run(o.clone(), from, 16);
    let mut others = Vec::new();
    events(&r.rx, 1, &mut others);
    let req = &sim.stream_requests()[0];
    assert_eq!(req.path, "/stream/live");
    assert_eq!(req.query, "recover=2024-06-15T09%3A00%3A00%2B02%3A00");
    assert_eq!(req.header("authorization"), Some("Bearer sim-token"));
    assert_eq!(req.header("accept"), Some("text/event-stream"));
    assert_eq!(req.header("cache-control"), Some("no-cache"));
    assert_eq!(req.header("listen-delete"), Some("false"));
    assert_eq!(req.header("no-dependencies"), Some("true"));
    assert_eq!(req.header("with-inferences"), Some("true"));
    assert_eq!(req.header("last-event-id"), Some("0-0"));
    assert_eq!(req.header("accept-encoding"), Some("identity"));
    assert!(
        matches!(others.first(), Some(StreamItem::Connected(_))),
        "{others:?}"
    );
    drop(r.shutdown);
    r.reader.join().unwrap();

    // `check`'s probe sends the same request (one builder), live-only: no resume position.
    probe_stream(&o, Duration::from_secs(5)).unwrap();
    let probe = &sim.stream_requests()[1];
    assert_eq!(probe.path, req.path);
    for name in [
        "authorization",
        "accept",
        "cache-control",
        "listen-delete",
        "no-dependencies",
        "with-inferences",
        "accept-encoding",
    ] {
        assert_eq!(probe.header(name), req.header(name), "{name}");
    }
    assert_eq!(probe.header("last-event-id"), None);
}

#[test]
fn gzip_stream_is_decoded() {
    let sim = sim(5);
    let mut o = opts(&sim);
    o.compression = true;
    let r = run(o, start("0-0"), 16);
    let mut others = Vec::new();
    assert_eq!(events(&r.rx, 5, &mut others), sim.event_ids());
    assert_eq!(
        sim.stream_requests()[0].header("accept-encoding"),
        Some("gzip")
    );
    drop(r.shutdown);
    r.reader.join().unwrap();
}

#[test]
fn heartbeats_carry_the_position_and_resume_is_strictly_after() {
    let sim = sim(4);
    let ids = sim.event_ids();
    let r = run(opts(&sim), start(&ids[1]), 16);
    let mut others = Vec::new();
    assert_eq!(events(&r.rx, 2, &mut others), ids[2..]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match r.rx.recv_deadline(deadline).expect("a heartbeat") {
            StreamItem::Heartbeat { id } => {
                assert_eq!(id, ids[3]);
                break;
            }
            _ => continue,
        }
    }
    drop(r.shutdown);
    r.reader.join().unwrap();
}

#[test]
fn appended_events_arrive_live() {
    let sim = sim(1);
    let r = run(opts(&sim), start("0-0"), 16);
    let mut others = Vec::new();
    events(&r.rx, 1, &mut others);
    let id = sim.append_event("create", indicator_event(7).data);
    assert_eq!(events(&r.rx, 1, &mut others), [id]);
    drop(r.shutdown);
    r.reader.join().unwrap();
}

#[test]
fn restart_from_replays_from_the_given_position() {
    let sim = sim(3);
    let r = run(opts(&sim), start("0-0"), 16);
    let mut others = Vec::new();
    let ids = events(&r.rx, 3, &mut others);
    r.reader.restart_from(start("0-0"));
    assert_eq!(events(&r.rx, 3, &mut others), ids);
    drop(r.shutdown);
    r.reader.join().unwrap();
}

#[test]
fn shutdown_interrupts_an_idle_connection_promptly() {
    let sim = sim(1);
    sim.push_faults([ConnFault::StallAfter(1)]);
    let mut o = opts(&sim);
    o.idle_timeout = Duration::from_secs(30);
    let r = run(o, start("0-0"), 16);
    let mut others = Vec::new();
    events(&r.rx, 1, &mut others);
    let t0 = Instant::now();
    drop(r.shutdown);
    r.reader.join().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

#[test]
fn backpressure_holds_the_reader_without_losing_events() {
    let sim = sim(30);
    let r = run(opts(&sim), start("0-0"), 1);
    // Let the reader fill the channel and block on it.
    let got = r.rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(matches!(got, StreamItem::Connected(_)));
    std::thread::park_timeout(Duration::from_millis(200));
    assert!(r.rx.len() <= 1);
    let mut others = Vec::new();
    assert_eq!(events(&r.rx, 30, &mut others), sim.event_ids());
    assert_eq!(sim.stream_requests().len(), 1, "no reconnect needed");
    drop(r.shutdown);
    r.reader.join().unwrap();
}

#[test]
fn no_recover_stops_sending_the_recover_date() {
    let cfg = OpenCtiSimConfig {
        heartbeat: Duration::from_millis(50),
        scenario: (0..2).map(indicator_event).collect(),
        no_recover: true,
        ..OpenCtiSimConfig::default()
    };
    let sim = serve("127.0.0.1:0", cfg).unwrap();
    sim.push_faults([ConnFault::DropAfter(1)]);
    let from = Checkpoint {
        start_from: "0-0".into(),
        recover_until: Some("2024-06-15T09:00:00Z".into()),
    };
    let r = run(opts(&sim), from, 16);
    let mut others = Vec::new();
    assert_eq!(events(&r.rx, 2, &mut others), sim.event_ids());
    assert!(
        others
            .iter()
            .any(|i| matches!(i, StreamItem::NoRecover { .. }))
    );
    let reqs = sim.stream_requests();
    assert_eq!(reqs[0].query, "recover=2024-06-15T09%3A00%3A00Z");
    assert_eq!(reqs[1].query, "");
    drop(r.shutdown);
    r.reader.join().unwrap();
}
