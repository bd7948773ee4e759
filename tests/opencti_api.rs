//! The GraphQL client against mockito: exact request bodies, version-dependent inputs (gated at
//! the exact patch release), dropping what the platform says it does not know, the ping state
//! format, reset detection, null indicators, errors, their classification and the quick resend.

use crate::support::net::{dropping_server, silent_server};
use harfanglab_intel::{
    ABOUT_QUERY, ApiError, ApiOptions, Checkpoint, FailureKind, INDICATOR_QUERY, OpenCtiApi,
    PING_MUTATION, PING_MUTATION_WITH_INFO, PingOutcome, PlatformVersion, REGISTER_MUTATION,
    Registration, RetryPolicy, Retryable, Secret,
};
use mockito::Matcher;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn api(server: &mockito::Server) -> OpenCtiApi {
    api_at(&format!("{}/", server.url()))
}

fn api_at(url: &str) -> OpenCtiApi {
    let mut o = ApiOptions::new(url, Secret::new("tok-123"));
    o.retry = RetryPolicy {
        max_retries: 2,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
    };
    o.timeout = Duration::from_secs(5);
    OpenCtiApi::new(o).unwrap()
}

fn v(s: &str) -> Option<PlatformVersion> {
    PlatformVersion::parse(s)
}

fn reg() -> Registration {
    Registration {
        id: "c0ffee00-0000-4000-8000-000000000001".into(),
        name: "HarfangLab Intel".into(),
        scope: vec!["harfanglab".into()],
    }
}

#[test]
fn about_sends_the_health_check_with_bearer_token() {
    let mut server = mockito::Server::new();
    let m = server
        .mock("POST", "/graphql")
        .match_header("authorization", "Bearer tok-123")
        .match_header("content-type", "application/json")
        .match_body(Matcher::Json(
            json!({"query": ABOUT_QUERY, "variables": {}}),
        ))
        .with_body(r#"{"data":{"about":{"version":"6.8.10"}}}"#)
        .create();
    assert_eq!(api(&server).about().unwrap(), "6.8.10");
    m.assert();
}

#[test]
fn register_sends_only_the_fields_of_the_platform_version() {
    let mut server = mockito::Server::new();
    let v5 = json!({"id": reg().id, "name": "HarfangLab Intel", "type": "STREAM",
        "scope": ["harfanglab"], "auto": false, "only_contextual": false});
    let mut base = v5.clone();
    base["playbook_compatible"] = json!(false);
    let mut v657 = base.clone();
    v657["listen_callback_uri"] = json!(null);
    let mut v689 = v657.clone();
    v689["auto_update"] = json!(false);
    v689["enrichment_resolution"] = json!("none");
    let answer = r#"{"data":{"registerConnector":{"id":"c0ffee00-0000-4000-8000-000000000001","connector_state":"{\"start_from\": \"5-0\", \"recover_until\": false}"}}}"#;
    for (version, input) in [
        ("5.10.2", &v5),
        ("5.12.3", &base),
        ("6.4.1", &base),
        ("6.5.0", &base),
        ("6.5.6", &base),
        ("6.5.7", &v657),
        ("6.8.0", &v657),
        ("6.8.8", &v657),
        ("6.8.9", &v689),
        ("6.8.10", &v689),
        ("7.260615.1", &v689),
        // Not a release number (a development build): the newest input.
        ("master", &v689),
    ] {
        let m = server
            .mock("POST", "/graphql")
            .match_body(Matcher::Json(
                json!({"query": REGISTER_MUTATION, "variables": {"input": input}}),
            ))
            .with_body(answer)
            .expect(1)
            .create();
        let r = api(&server).register_connector(&reg(), v(version)).unwrap();
        assert_eq!(
            r.connector_state.as_deref(),
            Some(r#"{"start_from": "5-0", "recover_until": false}"#)
        );
        m.assert();
        m.remove();
    }
}

#[test]
fn ping_state_is_python_json_and_connector_info_depends_on_version() {
    let mut server = mockito::Server::new();
    let cp = Checkpoint {
        start_from: "1718445605000-0".into(),
        recover_until: Some("2024-06-15T09:00:00Z".into()),
    };
    let state = r#"{"start_from": "1718445605000-0", "recover_until": "2024-06-15T09:00:00Z"}"#;
    let answer = json!({"data":{"pingConnector":{"id":"c1","connector_state": state}}}).to_string();
    let with_info = server
        .mock("POST", "/graphql")
        .match_body(Matcher::Json(json!({"query": PING_MUTATION_WITH_INFO, "variables": {
            "id": "c1", "state": state, "connectorInfo": {"run_and_terminate": false, "buffering": false,
            "queue_threshold": 500.0, "queue_messages_size": 0.0, "next_run_datetime": null,
            "last_run_datetime": null}}})))
        .with_body(&answer)
        .expect(3)
        .create();
    let without = server
        .mock("POST", "/graphql")
        .match_body(Matcher::Json(
            json!({"query": PING_MUTATION, "variables": {"id": "c1", "state": state}}),
        ))
        .with_body(&answer)
        .expect(3)
        .create();
    let a = api(&server);
    for version in ["6.2.12", "6.8.10", "7.260615.1"] {
        assert_eq!(
            a.ping_connector("c1", Some(&cp), v(version)).unwrap(),
            PingOutcome::Stored
        );
    }
    for version in ["5.12.0", "6.0.0", "6.2.11"] {
        assert_eq!(
            a.ping_connector("c1", Some(&cp), v(version)).unwrap(),
            PingOutcome::Stored
        );
    }
    with_info.assert();
    without.assert();
}

#[test]
fn a_field_the_platform_does_not_know_is_dropped_once_for_every_clone() {
    let mut server = mockito::Server::new();
    // The platform says 6.8.10 but lacks `listen_callback_uri` (graphql-js 17 wording, with a
    // second, unrelated error in the same answer).
    let refused = server
        .mock("POST", "/graphql")
        .match_body(Matcher::Regex("listen_callback_uri".into()))
        .with_body(r#"{"errors":[
            {"message":"Variable \"$input\" has invalid value: Expected value of type \"RegisterConnectorInput\" not to include unknown field \"listen_callback_uri\", found: { id: \"c1\" }.","extensions":{"code":"BAD_USER_INPUT"}},
            {"message":"Variable \"$input\" got invalid value 1; something else","extensions":{"code":"BAD_USER_INPUT"}}]}"#)
        .expect(1)
        .create();
    let without = json!({"id": reg().id, "name": "HarfangLab Intel", "type": "STREAM",
        "scope": ["harfanglab"], "auto": false, "only_contextual": false,
        "playbook_compatible": false, "auto_update": false, "enrichment_resolution": "none"});
    let accepted = server
        .mock("POST", "/graphql")
        .match_body(Matcher::Json(
            json!({"query": REGISTER_MUTATION, "variables": {"input": without}}),
        ))
        .with_body(r#"{"data":{"registerConnector":{"id":"c1","connector_state":null}}}"#)
        .expect(2)
        .create();
    let a = api(&server);
    let clone = a.clone();
    a.register_connector(&reg(), v("6.8.10")).unwrap();
    // Remembered: a clone does not send it again.
    clone.register_connector(&reg(), v("6.8.10")).unwrap();
    refused.assert();
    accepted.assert();
}

#[test]
fn an_unknown_ping_argument_is_dropped_and_the_ping_sent_again() {
    let mut server = mockito::Server::new();
    let refused = server
        .mock("POST", "/graphql")
        .match_body(Matcher::Regex("connectorInfo".into()))
        .with_body(r#"{"errors":[
            {"message":"Unknown type \"ConnectorInfoInput\".","extensions":{"code":"GRAPHQL_VALIDATION_FAILED"}},
            {"message":"Unknown argument \"connectorInfo\" on field \"Mutation.pingConnector\".","extensions":{"code":"GRAPHQL_VALIDATION_FAILED"}}]}"#)
        .expect(1)
        .create();
    let accepted = server
        .mock("POST", "/graphql")
        .match_body(Matcher::Json(
            json!({"query": PING_MUTATION, "variables": {"id": "c1", "state": "null"}}),
        ))
        .with_body(r#"{"data":{"pingConnector":{"id":"c1","connector_state":null}}}"#)
        .expect(2)
        .create();
    let a = api(&server);
    for _ in 0..2 {
        assert_eq!(
            a.ping_connector("c1", None, v("6.3.0")).unwrap(),
            PingOutcome::Stored
        );
    }
    refused.assert();
    accepted.assert();
}

#[test]
fn a_required_field_the_platform_does_not_know_is_a_clear_fatal_error() {
    let mut server = mockito::Server::new();
    let message = r#"Variable "$input" got invalid value { id: "c1" }; Field "type" is not defined by type "RegisterConnectorInput"."#;
    let _m = server
        .mock("POST", "/graphql")
        .with_body(
            json!({"errors": [{"message": message, "extensions": {"code": "BAD_USER_INPUT"}}]})
                .to_string(),
        )
        .expect(1)
        .create();
    let e = api(&server)
        .register_connector(&reg(), v("6.0.3"))
        .unwrap_err();
    assert!(matches!(e, ApiError::Unsupported { .. }), "{e:?}");
    assert!(e.is_fatal() && !e.is_retryable());
    let text = e.to_string();
    assert!(text.contains(message), "{text}");
    assert!(text.contains("OpenCTI 6.0.3"), "{text}");
}

#[test]
fn ping_detects_a_reset_from_the_ui_and_a_diverging_state() {
    let mut server = mockito::Server::new();
    let cp = Checkpoint {
        start_from: "9-0".into(),
        recover_until: None,
    };
    let a = api(&server);
    let m = server
        .mock("POST", "/graphql")
        .with_body(r#"{"data":{"pingConnector":{"id":"c1","connector_state":""}}}"#)
        .create();
    assert_eq!(
        a.ping_connector("c1", Some(&cp), v("6.8.0")).unwrap(),
        PingOutcome::Reset
    );
    m.remove();
    let m = server
        .mock("POST", "/graphql")
        .with_body(r#"{"data":{"pingConnector":{"id":"c1","connector_state":"{\"start_from\": \"1-0\"}"}}}"#)
        .create();
    assert!(matches!(
        a.ping_connector("c1", Some(&cp), v("6.8.0")).unwrap(),
        PingOutcome::Diverged(_)
    ));
    m.remove();
    // Same position written by pycti without recover_until: not a divergence.
    let _m = server
        .mock("POST", "/graphql")
        .with_body(r#"{"data":{"pingConnector":{"id":"c1","connector_state":"{\"start_from\":\"9-0\",\"recover_until\":false}"}}}"#)
        .create();
    assert_eq!(
        a.ping_connector("c1", Some(&cp), v("6.8.0")).unwrap(),
        PingOutcome::Stored
    );
}

#[test]
fn indicator_null_is_none_and_a_full_answer_is_translated() {
    let mut server = mockito::Server::new();
    let a = api(&server);
    let m = server
        .mock("POST", "/graphql")
        .match_body(Matcher::Json(
            json!({"query": INDICATOR_QUERY, "variables": {"id": "indicator--gone"}}),
        ))
        .with_body(r#"{"data":{"indicator":null}}"#)
        .create();
    assert_eq!(a.indicator("indicator--gone").unwrap(), None);
    m.assert();
    let _m = server
        .mock("POST", "/graphql")
        .match_body(Matcher::PartialJson(json!({"variables": {"id": "indicator--0f4a"}})))
        .with_body(r#"{"data":{"indicator":{"id":"3d2b","standard_id":"indicator--0f4a","entity_type":"Indicator",
            "name":"1.2.3.4","description":"C2 server","pattern_type":"stix","pattern":"[ipv4-addr:value = '1.2.3.4']",
            "confidence":75,"x_opencti_score":80,"x_mitre_platforms":["windows",null],"revoked":false,
            "valid_from":"2024-06-15T10:00:00.000Z","valid_until":null,
            "observables":{"edges":[{"node":{"id":"9a8b","standard_id":null,"entity_type":"IPv4-Addr","observable_value":"1.2.3.4"}}]}}}}"#)
        .create();
    let i = a
        .indicator("indicator--0f4a")
        .unwrap()
        .unwrap()
        .to_translate();
    assert_eq!(i.id, "3d2b");
    assert_eq!(i.standard_id.as_deref(), Some("indicator--0f4a"));
    assert_eq!(i.score, Some(80));
    assert_eq!(i.platforms, ["windows"]);
    assert_eq!(i.observables.len(), 1);
    assert_eq!(i.observables[0].value, "1.2.3.4");
}

#[test]
fn graphql_errors_become_typed_errors_with_the_message() {
    let mut server = mockito::Server::new();
    let _m = server
        .mock("POST", "/graphql")
        .with_body(r#"{"errors":[{"message":"Field \"auto_update\" is not defined by type \"X\".","extensions":{"code":"BAD_USER_INPUT"}},{"message":"second"}],"data":null}"#)
        .create();
    let e = api(&server).about().unwrap_err();
    let ApiError::Graphql { unknown, name, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(unknown, &["auto_update"]);
    assert_eq!(name.as_deref(), Some("BAD_USER_INPUT"));
    assert!(e.to_string().contains("auto_update"), "{e}");
    assert!(
        e.to_string().contains("second"),
        "every message is kept: {e}"
    );
    assert!(!e.is_retryable());
}

#[test]
fn auth_errors_are_fatal_and_do_not_leak_the_token() {
    let mut server = mockito::Server::new();
    let _m = server.mock("POST", "/graphql").with_status(401).create();
    let e = api(&server).about().unwrap_err();
    assert!(e.is_fatal());
    assert!(e.to_string().contains("OPENCTI_TOKEN") && !e.to_string().contains("tok-123"));
    let mut server = mockito::Server::new();
    let _m = server
        .mock("POST", "/graphql")
        .with_body(r#"{"errors":[{"message":"You must be logged in","extensions":{"code":"AUTH_REQUIRED"}}]}"#)
        .create();
    assert!(api(&server).about().unwrap_err().is_fatal());
}

/// Statuses are not retried by the client: the caller waits (the pipeline's timer heap, startup,
/// the next ping) without the client holding a thread. A 503's `Retry-After` travels with it.
#[test]
fn unavailable_statuses_come_back_at_once_with_their_retry_after() {
    let mut server = mockito::Server::new();
    let fail = server
        .mock("POST", "/graphql")
        .with_status(503)
        .with_header("retry-after", "7")
        .expect(1)
        .create();
    let e = api(&server).about().unwrap_err();
    fail.assert();
    assert!(
        matches!(e, ApiError::Status { status: 503, retry_after: Some(d), .. } if d == Duration::from_secs(7)),
        "{e:?}"
    );
    assert_eq!(
        e.failure_kind(),
        FailureKind::Unavailable {
            retry_after: Some(Duration::from_secs(7))
        }
    );
}

#[test]
fn server_errors_are_transient_and_not_retried_by_the_client() {
    let mut server = mockito::Server::new();
    let fail = server
        .mock("POST", "/graphql")
        .with_status(500)
        .expect(1)
        .create();
    let e = api(&server).about().unwrap_err();
    assert!(matches!(e, ApiError::Status { status: 500, .. }));
    assert_eq!(e.failure_kind(), FailureKind::Transient);
    fail.assert();
}

/// A dropped connection (a stale keep-alive connection) is resent at once, at most
/// `retry.max_retries` times.
#[test]
fn a_dropped_connection_is_resent_quickly() {
    let (url, accepted) = dropping_server(2, r#"{"data":{"about":{"version":"6.4.0"}}}"#);
    let api = api_at(&url);
    let activity = api.retry_activity();
    let t0 = std::time::Instant::now();
    assert_eq!(api.about().unwrap(), "6.4.0");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    assert_eq!(activity.retries.load(Ordering::Relaxed), 2);

    // Three drops with two resends allowed: the transport error comes back, unavailable.
    let (url, accepted) = dropping_server(3, "{}");
    let e = api_at(&url).about().unwrap_err();
    assert!(
        matches!(e, ApiError::Transport { timeout: false, .. }),
        "{e:?}"
    );
    assert_eq!(e.failure_kind(), FailureKind::UNAVAILABLE);
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    // The transport error is kept whole, not only its text.
    let cause = std::error::Error::source(&e).and_then(|c| c.downcast_ref::<ureq::Error>());
    assert!(cause.is_some(), "{e:?}");
}

/// A timeout is not resent: the platform may still be working on it, and it already held the
/// thread for the whole timeout.
#[test]
fn a_timeout_is_not_resent() {
    let (url, accepted) = silent_server();
    let mut o = ApiOptions::new(url, Secret::new("tok-123"));
    o.timeout = Duration::from_millis(300);
    let e = OpenCtiApi::new(o).unwrap().about().unwrap_err();
    assert!(
        matches!(e, ApiError::Transport { timeout: true, .. }),
        "{e:?}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn custom_headers_are_sent() {
    let mut server = mockito::Server::new();
    let m = server
        .mock("POST", "/graphql")
        .match_header("x-tenant", "blue")
        .with_body(r#"{"data":{"about":{"version":"6.8.0"}}}"#)
        .create();
    let mut o = ApiOptions::new(server.url(), Secret::new("tok-123"));
    o.custom_headers = vec![("X-Tenant".into(), Secret::new("blue"))];
    assert!(!format!("{o:?}").contains("blue"));
    OpenCtiApi::new(o).unwrap().about().unwrap();
    m.assert();
}

#[test]
fn shutdown_interrupts_a_resend_wait() {
    let (url, accepted) = dropping_server(usize::MAX, "{}");
    let mut o = ApiOptions::new(url, Secret::new("tok-123"));
    // A long resend wait: only the shutdown can end it early.
    o.retry = RetryPolicy {
        max_retries: 5,
        base: Duration::from_secs(30),
        cap: Duration::from_secs(30),
    };
    let (tx, rx) = crossbeam_channel::bounded::<()>(0);
    let api = OpenCtiApi::new(o).unwrap().with_shutdown(rx);
    let activity = api.retry_activity();
    let t = std::thread::spawn(move || api.about());
    // The thread sits in the resend wait: the gauge the watchdog reads shows it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while activity.waiting.load(Ordering::Relaxed) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(activity.waiting.load(Ordering::Relaxed), 1);
    assert_eq!(activity.retries.load(Ordering::Relaxed), 1);
    let t0 = std::time::Instant::now();
    drop(tx);
    assert_eq!(t.join().unwrap().unwrap_err(), ApiError::Shutdown);
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(activity.waiting.load(Ordering::Relaxed), 0);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}
