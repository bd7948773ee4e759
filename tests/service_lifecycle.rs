//! The service in-process against both simulators over loopback HTTP: a reset from the OpenCTI
//! UI restarts the stream in-process from the first-run position (one made while the service was
//! stopped is taken by the startup ping, before the stream opens), dry-run writes nothing
//! anywhere, fatal startup errors end the run with a clear message, the final checkpoint is
//! on disk and in OpenCTI, and metrics are served while it runs.

use crate::support::service::{demo_scenario, run_options, start_sims, state_dir};
use harfanglab_intel::pipeline::{PipelineStats, Shutdown};
use harfanglab_intel::service::{self, RunSummary, ServiceError};
use harfanglab_intel::sim::harfanglab::{self as hlsim, HarfangLabSim};
use harfanglab_intel::sim::opencti::OpenCtiSim;
use harfanglab_intel::{Checkpoint, Config, compare_event_ids, demo_config};
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Env {
    octi: OpenCtiSim,
    hl: HarfangLabSim,
    dir: PathBuf,
    config: Config,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.hl.shutdown();
        self.octi.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn env(name: &str) -> Env {
    let (octi, hl) = start_sims(demo_scenario(), Duration::ZERO);
    let dir = state_dir(&format!("service-{name}"));
    let config = demo_config(&octi.base_url(), hl.base_url(), &dir, Some(4));
    Env {
        octi,
        hl,
        dir,
        config,
    }
}

/// Wait (bounded) until `cond` holds.
fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn reached(stats: &PipelineStats, last: &str) -> bool {
    stats
        .snapshot()
        .watermark
        .is_some_and(|w| compare_event_ids(&w, last) != std::cmp::Ordering::Less)
}

/// Run the service on a thread while `during` runs, then shut it down.
fn with_service(
    config: &Config,
    during: impl FnOnce(&PipelineStats),
) -> Result<RunSummary, ServiceError> {
    let stats = PipelineStats::new();
    let shutdown = Shutdown::new();
    std::thread::scope(|s| {
        let h = s.spawn(|| service::run_with(config, &shutdown, run_options(&stats)));
        during(&stats);
        shutdown.trigger();
        h.join().expect("service thread")
    })
}

/// Run the service alone: it must stop by itself (fatal error) within 20 s.
fn run_alone(config: &Config) -> Result<RunSummary, ServiceError> {
    let stats = PipelineStats::new();
    let shutdown = Shutdown::new();
    std::thread::scope(|s| {
        let h = s.spawn(|| service::run_with(config, &shutdown, run_options(&stats)));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !h.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let finished = h.is_finished();
        shutdown.trigger();
        let r = h.join().expect("service thread");
        assert!(finished, "the service did not stop by itself: {r:?}");
        r
    })
}

#[test]
fn ui_reset_restarts_the_stream_in_process_from_the_first_run_position() {
    let e = env("reset");
    let last = e.octi.event_ids().last().cloned().unwrap();
    let id = e.config.connector.id.to_string();
    let summary = with_service(&e.config, |stats| {
        wait_for("the last event", Duration::from_secs(30), || {
            reached(stats, &last)
        });
        // A ping has stored our position (pings every second in the demo config).
        wait_for("a stored state", Duration::from_secs(10), || {
            e.octi
                .connector_state(&id)
                .is_some_and(|s| s.contains(&last))
        });
        e.octi.reset_state_from_ui(&id);
        wait_for(
            "a second stream connection",
            Duration::from_secs(10),
            || e.octi.stream_requests().len() >= 2,
        );
        wait_for("the replay to finish", Duration::from_secs(30), || {
            reached(stats, &last) && stats.snapshot().applied >= 2 * 222
        });
    })
    .expect("service");
    assert_eq!(summary.sessions, 2);
    let reqs = e.octi.stream_requests();
    // The restart starts from the first-run position (demo: `0-0`, no recover), not from the
    // position the platform dropped.
    assert_eq!(reqs[1].header("last-event-id"), Some("0-0"), "{reqs:?}");
    // After the replay the final state pushed to OpenCTI is the last event again.
    let state = e.octi.connector_state(&id).unwrap_or_default();
    assert!(state.contains(&last), "{state}");
    // Replays are idempotent: same number of IOC rules as after one pass.
    assert_eq!(e.hl.ioc_rules().len(), 178);
}

#[test]
fn a_reset_made_while_stopped_is_taken_by_the_startup_ping_before_the_stream_opens() {
    let e = env("reset-while-stopped");
    let id = e.config.connector.id.to_string();
    // The platform held a position, then "reset state" was clicked while the service was down:
    // the flag waits for the next ping (§3.4).
    e.octi.set_connector_state(
        &id,
        r#"{"start_from": "1718445600000-1", "recover_until": false}"#,
    );
    e.octi.reset_state_from_ui(&id);
    let last = e.octi.event_ids().last().cloned().unwrap();
    let summary = with_service(&e.config, |stats| {
        wait_for("the last event", Duration::from_secs(30), || {
            reached(stats, &last)
        });
        // Periodic pings (every second in the demo config) came and found nothing to reset.
        let pings = e.octi.ping_count();
        wait_for("two more pings", Duration::from_secs(10), || {
            e.octi.ping_count() >= pings + 2
        });
    })
    .expect("service");
    // The startup ping took the reset before the stream opened: one session, one stream
    // connection, no replay.
    assert_eq!(summary.sessions, 1, "{summary:?}");
    assert_eq!(e.octi.stream_requests().len(), 1);
    let state = e.octi.connector_state(&id).unwrap_or_default();
    assert!(state.contains(&last), "{state}");
}

#[test]
fn shutdown_during_the_reset_drain_keeps_the_reset() {
    let e = env("reset-stop");
    let mut config = e.config.clone();
    config.service.shutdown_timeout = Duration::from_secs(2);
    // Slow HarfangLab: events are still in flight when the reset is seen, so the session's
    // drain lasts long enough for the shutdown to arrive before a new session starts.
    e.hl.set_faults(hlsim::Faults {
        latency: Duration::from_millis(150),
        ..hlsim::Faults::default()
    });
    let id = config.connector.id.to_string();
    let first = e.octi.event_ids()[0].clone();
    let summary = with_service(&config, |stats| {
        wait_for("a stored position", Duration::from_secs(30), || {
            reached(stats, &first)
                && e.octi
                    .connector_state(&id)
                    .and_then(|s| Checkpoint::from_state_json(&s))
                    .is_some_and(|c| c.start_from != "0-0")
        });
        let pings = e.octi.ping_count();
        e.octi.reset_state_from_ui(&id);
        wait_for(
            "the ping that sees the reset",
            Duration::from_secs(10),
            || e.octi.ping_count() > pings,
        );
        // Let the pinger read the answer and stop the session.
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            stats.snapshot().in_flight > 0,
            "the drain must still be running"
        );
    })
    .expect("service");
    assert_eq!(summary.sessions, 1, "{summary:?}");
    assert_eq!(e.octi.stream_requests().len(), 1);
    // Neither the final ping nor the local file brings the dropped position back.
    let state = e.octi.connector_state(&id).unwrap_or_default();
    let pushed = Checkpoint::from_state_json(&state);
    assert!(
        state.is_empty() || pushed.as_ref().is_some_and(|c| c.start_from == "0-0"),
        "{state}"
    );
    assert_eq!(summary.watermark.as_deref(), Some("0-0"));
    let file = std::fs::read_to_string(e.dir.join(format!("{id}.checkpoint.json"))).unwrap();
    assert!(file.contains("\"0-0\""), "{file}");
}

#[test]
fn dry_run_writes_nothing_to_harfanglab_or_opencti_and_keeps_its_own_checkpoint() {
    let e = env("dry");
    let mut config = e.config.clone();
    config.harfanglab.dry_run = true;
    let last = e.octi.event_ids().last().cloned().unwrap();
    let summary = with_service(&config, |stats| {
        wait_for("the last event", Duration::from_secs(30), || {
            reached(stats, &last)
        });
        // Let at least one ping period pass: none may be sent.
        std::thread::sleep(Duration::from_millis(1200));
    })
    .expect("service");
    assert_eq!(e.hl.writes(), 0, "{:?}", e.hl.request_counts());
    assert!(e.hl.total_requests() > 0, "reads still happen");
    assert!(e.hl.ioc_rules().is_empty() && e.hl.sources().is_empty());
    assert!(summary.dry_run_skipped_writes >= 178, "{summary:?}");
    assert!(e.octi.registered().is_empty());
    assert_eq!(e.octi.ping_count(), 0);
    let id = config.connector.id.to_string();
    assert!(e.dir.join(format!("{id}.dry-run.checkpoint.json")).exists());
    assert!(!e.dir.join(format!("{id}.checkpoint.json")).exists());
}

#[test]
fn final_checkpoint_is_on_disk_and_in_opencti_and_metrics_are_served() {
    let e = env("final");
    let mut config = e.config.clone();
    // The service's bound port is not visible from here: pick a free one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.connector.metrics_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let last = e.octi.event_ids().last().cloned().unwrap();
    let mut scraped = String::new();
    let summary = with_service(&config, |stats| {
        wait_for("the last event", Duration::from_secs(30), || {
            reached(stats, &last)
        });
        let agent = ureq::Agent::new_with_defaults();
        scraped = agent
            .get(&format!("http://127.0.0.1:{port}/metrics"))
            .call()
            .expect("scrape")
            .body_mut()
            .read_to_string()
            .unwrap();
    })
    .expect("service");
    assert!(
        scraped.contains("harfanglab_intel_events_total{type=\"create\",outcome=\"applied\"}"),
        "{scraped}"
    );
    assert!(scraped.contains("harfanglab_intel_harfanglab_requests_total{op=\"create_ioc\""));
    assert_eq!(summary.watermark.as_deref(), Some(last.as_str()));
    let id = config.connector.id.to_string();
    let file = std::fs::read_to_string(e.dir.join(format!("{id}.checkpoint.json"))).unwrap();
    assert!(file.contains(&last), "{file}");
    assert!(
        e.octi
            .connector_state(&id)
            .unwrap_or_default()
            .contains(&last),
        "the last ping carries the final position"
    );
}

#[test]
fn wrong_harfanglab_token_is_a_clear_fatal_error_at_startup() {
    let e = env("hltoken");
    let mut config = e.config.clone();
    config.harfanglab.token = harfanglab_intel::Secret::new("wrong");
    let started = Instant::now();
    let err = run_alone(&config).unwrap_err();
    assert!(matches!(err, ServiceError::HarfangLab(_)), "{err:?}");
    assert!(err.to_string().contains("HARFANGLAB_INTEL_TOKEN"), "{err}");
    assert!(!err.to_string().contains("wrong"));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn unknown_stream_is_a_clear_fatal_error() {
    let e = env("stream");
    let mut config = e.config.clone();
    config.connector.live_stream_id = "no-such-stream".into();
    let err = run_alone(&config).unwrap_err();
    assert!(matches!(err, ServiceError::Stream(_)), "{err:?}");
    assert!(
        err.to_string().contains("CONNECTOR_LIVE_STREAM_ID"),
        "{err}"
    );
}

#[test]
fn a_taken_metrics_port_is_named_as_such() {
    let e = env("metrics-port");
    let mut config = e.config.clone();
    // Held for the whole test: the service cannot bind it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    config.connector.metrics_addr = Some(addr);
    let err = run_alone(&config).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ServiceError::Metrics { .. }), "{err:?}");
    assert!(
        text.contains(&format!("metrics server cannot listen on {addr}"))
            && text.contains("CONNECTOR_METRICS_PORT")
            && text.contains("CONNECTOR_EXPOSE_METRICS=false"),
        "{text}"
    );
    assert!(!text.contains("thread"), "{text}");
    drop(taken);
}
