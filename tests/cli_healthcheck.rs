//! `harfanglab-intel healthcheck`, the built binary against a real `MetricsServer` started here
//! on 127.0.0.1: healthy → 0, unhealthy (stale or never reported) → 1 with the JSON reasons,
//! nothing listening or metrics off → 1 with the reason, bad configuration → 2. Each run has an
//! empty environment, so a proxy or config of the machine cannot leak in.

use harfanglab_intel::{Health, Metrics, MetricsServer};
use std::process::Command;
use std::time::Duration;

use crate::support::{BIN, GOOD_ENV};

/// Run `healthcheck` with `GOOD_ENV` plus `extra`; (exit code, stdout, stderr).
fn healthcheck(extra: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("healthcheck")
        .env_clear()
        .envs(GOOD_ENV.iter().copied())
        .envs(extra.iter().copied())
        // No config.yml of the developer's or CI's working directory.
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn healthcheck_on_port(port: u16) -> (i32, String, String) {
    let port = port.to_string();
    healthcheck(&[
        ("CONNECTOR_EXPOSE_METRICS", "true"),
        ("CONNECTOR_METRICS_PORT", &port),
    ])
}

fn serve(health: Health) -> MetricsServer {
    MetricsServer::start("127.0.0.1:0", Metrics::new(), health).unwrap()
}

fn report_everything(health: &Health) {
    health.opencti_reachable();
    health.harfanglab_reachable();
    health.progress();
}

#[test]
fn healthy_connector_exits_0() {
    let health = Health::new(Duration::from_secs(600));
    report_everything(&health);
    let server = serve(health);
    let port = server.local_addr().port().to_string();
    // A proxy in the environment (dead here) must not be used for the loopback probe.
    let (code, out, err) = healthcheck(&[
        ("CONNECTOR_EXPOSE_METRICS", "true"),
        ("CONNECTOR_METRICS_PORT", &port),
        ("HTTP_PROXY", "http://127.0.0.1:1"),
        ("ALL_PROXY", "http://127.0.0.1:1"),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("healthy"), "{out}");
}

#[test]
fn stale_connector_exits_1_with_the_json_reasons() {
    // A zero window: every report is already too old when /healthz is asked.
    let health = Health::new(Duration::ZERO);
    report_everything(&health);
    let server = serve(health);
    let (code, out, err) = healthcheck_on_port(server.local_addr().port());
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("unhealthy (HTTP 503)"), "{err}");
    assert!(err.contains(r#""status":"unhealthy""#), "{err}");
    assert!(err.contains("harfanglab not reachable for"), "{err}");
}

#[test]
fn connector_that_never_reported_exits_1() {
    let server = serve(Health::new(Duration::from_secs(600)));
    let (code, _, err) = healthcheck_on_port(server.local_addr().port());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("opencti stream not reachable yet"), "{err}");
}

#[test]
fn nothing_listening_exits_1_with_the_url() {
    // A port that was free a moment ago: bind, note, release.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, out, err) = healthcheck_on_port(port);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(&format!("cannot reach http://127.0.0.1:{port}/healthz")),
        "{err}"
    );
}

#[test]
fn metrics_not_exposed_exits_1_and_says_how_to_enable_them() {
    let (code, _, err) = healthcheck(&[("CONNECTOR_EXPOSE_METRICS", "false")]);
    assert_eq!(code, 1, "{err}");
    // The switch is off; the message says so, and what to set (not a `=true` that reads as
    // if it were already on).
    assert!(
        err.contains(
            "metrics are not exposed (CONNECTOR_EXPOSE_METRICS is false), so there is no \
             /healthz to ask: set CONNECTOR_EXPOSE_METRICS=true for the connector and for \
             this command"
        ),
        "{err}"
    );
}

#[test]
fn bad_configuration_exits_2() {
    let (code, _, err) = healthcheck(&[
        ("CONNECTOR_EXPOSE_METRICS", "true"),
        ("CONNECTOR_METRICS_PORT", "0"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("CONNECTOR_METRICS_PORT"), "{err}");
    assert!(!err.contains("secret-token"), "{err}");
}
