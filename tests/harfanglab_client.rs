//! The HarfangLab client against mockito: exact requests (paths, headers, bodies) and every
//! error path (auth, duplicates, envelopes, failure kinds and `Retry-After`, the quick resend of a
//! dropped connection, shutdown, pagination, transport failures).

use crate::support::logs::logs;
use crate::support::net::{dropping_server, silent_server};
use crossbeam_channel::Sender;
use harfanglab_intel::{
    Client, ClientOptions, FailureKind, HarfangLabError, IocKey, IocRuleBody, IocType, Op,
    RetryPolicy, Retryable, RuleBody, RuleFilter, RuleKind, Secret, SourceKind, ThreatIntelApi,
};
use mockito::Matcher;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

const TOKEN: &str = "tok-S3CRET-4242";
const TI: &str = "/api/data/threat_intelligence";

fn options(url: &str) -> ClientOptions {
    let mut opts = ClientOptions::new(url, Secret::new(TOKEN));
    opts.proxy_from_env = false;
    opts.request_timeout = Duration::from_secs(10);
    opts.retry = RetryPolicy {
        max_retries: 3,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
    };
    opts
}

/// A client and the shutdown sender that keeps it running (drop it to signal shutdown).
fn client_with(opts: ClientOptions) -> (Client, Sender<()>) {
    logs();
    let (tx, rx) = crossbeam_channel::unbounded();
    (Client::new(opts, rx).expect("client"), tx)
}

fn client(server: &mockito::Server) -> (Client, Sender<()>) {
    client_with(options(&server.url()))
}

fn ioc_body() -> IocRuleBody {
    IocRuleBody {
        source_id: "src-1".into(),
        ioc_type: IocType::IpBoth,
        value: "77.91.78.118".into(),
        description: "from OpenCTI".into(),
        comment: r#"{"indicator_id":"indicator--1"}"#.into(),
        hl_status: "stable".into(),
        enabled: true,
    }
}

fn ioc_json(id: &str) -> serde_json::Value {
    json!({"id": id, "source_id": "src-1", "source": "src-1", "type": "ip_both",
           "value": "77.91.78.118", "description": "from OpenCTI", "comment": null,
           "enabled": true, "hl_status": "stable"})
}

fn rule_body() -> RuleBody {
    RuleBody {
        source_id: "sig-1".into(),
        name: "Suspicious PowerShell".into(),
        content: "title: T\nid: 5c6b4a0e-6e4c-4f0b-9d1a-2b3c4d5e6f70\n".into(),
        hl_status: "stable".into(),
        enabled: true,
        overwrite: false,
    }
}

#[test]
fn create_ioc_sends_the_exact_request_and_reads_201() {
    let mut server = mockito::Server::new();
    let mock = server
        .mock("POST", format!("{TI}/IOCRule/").as_str())
        .match_header("authorization", format!("Token {TOKEN}").as_str())
        .match_header("content-type", "application/json")
        .match_header("accept", "application/json")
        .match_body(Matcher::Json(json!({
            "source_id": "src-1", "type": "ip_both", "value": "77.91.78.118",
            "description": "from OpenCTI", "comment": "{\"indicator_id\":\"indicator--1\"}",
            "hl_status": "stable", "enabled": true
        })))
        .with_status(201)
        .with_body(ioc_json("rule-1").to_string())
        .expect(1)
        .create();
    let (client, _tx) = client(&server);
    let rule = client.create_ioc(&ioc_body()).expect("created");
    mock.assert();
    assert_eq!(rule.id, "rule-1");
    assert_eq!(rule.ioc_type, "ip_both");
    assert_eq!(client.stats().requests(Op::CreateIoc, Some(201)), 1);
}

#[test]
fn create_ioc_accepts_200_too() {
    let mut server = mockito::Server::new();
    server
        .mock("POST", format!("{TI}/IOCRule/").as_str())
        .with_status(200)
        .with_body(ioc_json("rule-2").to_string())
        .create();
    let (client, _tx) = client(&server);
    assert_eq!(
        client.create_ioc(&ioc_body()).expect("created").id,
        "rule-2"
    );
}

#[test]
fn duplicate_ioc_is_already_exists_and_not_retried() {
    let mut server = mockito::Server::new();
    let mock = server
        .mock("POST", format!("{TI}/IOCRule/").as_str())
        .with_status(400)
        .with_body(
            r#"{"__all__": ["['Ioc rule with this Type, Value and Source already exists.']"]}"#,
        )
        .expect(1)
        .create();
    let (client, _tx) = client(&server);
    let err = client.create_ioc(&ioc_body()).unwrap_err();
    mock.assert();
    assert!(
        matches!(err, HarfangLabError::AlreadyExists { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("already exists"));
}

#[test]
fn validation_errors_are_permanent_with_the_server_message() {
    let mut server = mockito::Server::new();
    let mock = server
        .mock("POST", format!("{TI}/IOCRule/").as_str())
        .with_status(400)
        .with_body(r#"{"value": ["Enter a valid IPv4 or IPv6 address."]}"#)
        .expect(1)
        .create();
    let (client, _tx) = client(&server);
    let err = client.create_ioc(&ioc_body()).unwrap_err();
    mock.assert();
    assert_eq!(
        err,
        HarfangLabError::Status {
            op: "create IOCRule".into(),
            status: 400,
            body: r#"{"value":["Enter a valid IPv4 or IPv6 address."]}"#.into(),
            retry_after: None,
        }
    );
    assert!(!err.is_retryable() && !err.is_fatal());
}

#[test]
fn unauthorized_and_forbidden_are_fatal_with_the_detail() {
    let mut server = mockito::Server::new();
    let m401 = server
        .mock("PATCH", format!("{TI}/IOCRule/r1/").as_str())
        .with_status(401)
        .with_body(r#"{"detail": "Invalid token."}"#)
        .expect(1)
        .create();
    let m403 = server
        .mock("DELETE", format!("{TI}/IOCRule/r2/").as_str())
        .with_status(403)
        .with_body(r#"{"detail": "You do not have permission to perform this action."}"#)
        .expect(1)
        .create();
    let (client, _tx) = client(&server);
    let err = client.update_ioc("r1", &ioc_body()).unwrap_err();
    assert_eq!(
        err,
        HarfangLabError::Unauthorized {
            op: "update IOCRule".into(),
            detail: "Invalid token.".into()
        }
    );
    assert!(err.is_fatal());
    assert!(err.to_string().contains("HARFANGLAB_INTEL_TOKEN"));
    let err = client.delete_ioc("r2").unwrap_err();
    assert!(
        matches!(&err, HarfangLabError::Forbidden { detail, .. } if detail.contains("permission"))
    );
    assert!(err.is_fatal());
    m401.assert();
    m403.assert();
}

#[test]
fn update_patches_the_slashed_detail_path() {
    let mut server = mockito::Server::new();
    let mock = server
        .mock("PATCH", format!("{TI}/IOCRule/rule-1/").as_str())
        .match_header("authorization", format!("Token {TOKEN}").as_str())
        .match_body(Matcher::PartialJson(
            json!({"enabled": true, "type": "ip_both"}),
        ))
        .with_status(200)
        .with_body(ioc_json("rule-1").to_string())
        .expect(1)
        .create();
    let (client, _tx) = client(&server);
    assert_eq!(
        client
            .update_ioc("rule-1", &ioc_body())
            .expect("updated")
            .id,
        "rule-1"
    );
    mock.assert();
}

#[test]
fn delete_accepts_204_200_and_404() {
    let mut server = mockito::Server::new();
    let mut mocks = Vec::new();
    for (id, status) in [("a", 204), ("b", 200), ("c", 404)] {
        mocks.push(
            server
                .mock("DELETE", format!("{TI}/IOCRule/{id}/").as_str())
                .with_status(status)
                .with_body(if status == 404 {
                    r#"{"detail": "Not found."}"#
                } else {
                    ""
                })
                .expect(1)
                .create(),
        );
    }
    let sigma = server
        .mock("DELETE", format!("{TI}/SigmaRule/d/").as_str())
        .with_status(204)
        .expect(1)
        .create();
    let (client, _tx) = client(&server);
    for id in ["a", "b", "c"] {
        client.delete_ioc(id).expect("deleted or gone");
    }
    client.delete_rule(RuleKind::Sigma, "d").expect("deleted");
    for m in &mocks {
        m.assert();
    }
    sigma.assert();
}

#[test]
fn find_ioc_filters_on_the_server_and_rechecks_locally() {
    let mut server = mockito::Server::new();
    let other_type =
        json!({"id": "x", "source_id": "src-1", "type": "ip_src", "value": "77.91.78.118"});
    let mock = server
        .mock("GET", format!("{TI}/IOCRule/").as_str())
        .match_query(Matcher::AllOf(vec![
            Matcher::UrlEncoded("source_id".into(), "src-1".into()),
            Matcher::UrlEncoded("type".into(), "ip_both".into()),
            Matcher::UrlEncoded("value__exact".into(), "77.91.78.118".into()),
            Matcher::UrlEncoded("offset".into(), "0".into()),
        ]))
        .match_header("authorization", format!("Token {TOKEN}").as_str())
        .with_status(200)
        .with_body(
            json!({"count": 2, "next": null, "previous": null,
                   "results": [other_type, ioc_json("rule-1")]})
            .to_string(),
        )
        .expect(1)
        .create();
    let (client, _tx) = client(&server);
    let key = IocKey {
        ioc_type: IocType::IpBoth,
        value: "77.91.78.118".into(),
    };
    let found = client.find_ioc("src-1", &key).expect("listed");
    mock.assert();
    assert_eq!(found.map(|r| r.id).as_deref(), Some("rule-1"));
}

#[test]
fn find_ioc_returns_none_on_an_empty_page() {
    let mut server = mockito::Server::new();
    server
        .mock("GET", format!("{TI}/IOCRule/").as_str())
        .match_query(Matcher::Any)
        .with_status(200)
        .with_body(r#"{"count": 0, "next": null, "previous": null, "results": []}"#)
        .create();
    let (client, _tx) = client(&server);
    let key = IocKey {
        ioc_type: IocType::Hash,
        value: "d41d8cd98f00b204e9800998ecf8427e".into(),
    };
    assert_eq!(client.find_ioc("src-1", &key).expect("listed"), None);
}

/// Three pages: `next` absolute, then relative, then null. The client pages by offset.
#[test]
fn pagination_follows_absolute_relative_and_null_next() {
    let mut server = mockito::Server::new();
    let base = server.url();
    let rule = |i: usize| json!({"id": format!("r{i}"), "name": "dup", "content": "rule a {condition: true}", "source_id": "y-1"});
    let pages = [
        (
            0,
            json!({"count": 5, "next": format!("{base}{TI}/YaraFile/?limit=2&offset=2"), "previous": null, "results": [rule(0), rule(1)]}),
        ),
        (
            2,
            json!({"count": 5, "next": format!("{TI}/YaraFile/?limit=2&offset=4"), "previous": "x", "results": [rule(2), rule(3)]}),
        ),
        (
            4,
            json!({"count": 5, "next": null, "previous": "x", "results": [rule(4)]}),
        ),
    ];
    let mut mocks = Vec::new();
    for (offset, body) in pages {
        mocks.push(
            server
                .mock("GET", format!("{TI}/YaraFile/").as_str())
                .match_query(Matcher::AllOf(vec![
                    Matcher::UrlEncoded("source_id".into(), "y-1".into()),
                    Matcher::UrlEncoded("name__exact".into(), "dup".into()),
                    Matcher::UrlEncoded("limit".into(), "2".into()),
                    Matcher::UrlEncoded("offset".into(), offset.to_string()),
                ]))
                .with_status(200)
                .with_body(body.to_string())
                .expect(1)
                .create(),
        );
    }
    let mut opts = options(&base);
    opts.page_size = 2;
    let (client, _tx) = client_with(opts);
    let found = client
        .find_rules(RuleKind::Yara, "y-1", &RuleFilter::Name("dup".into()))
        .expect("listed");
    for m in &mocks {
        m.assert();
    }
    let ids: Vec<_> = found.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["r0", "r1", "r2", "r3", "r4"]);
}

#[test]
fn listing_stops_at_the_cap() {
    let mut server = mockito::Server::new();
    let rule = |i: usize| json!({"id": format!("r{i}"), "name": "n", "source_id": "s"});
    let mock = server
        .mock("GET", format!("{TI}/SigmaRule/").as_str())
        .match_query(Matcher::Any)
        .with_status(200)
        .with_body(
            json!({"count": 1000, "next": "/more", "results": [rule(0), rule(1)]}).to_string(),
        )
        .expect(2)
        .create();
    let mut opts = options(&server.url());
    opts.page_size = 2;
    opts.max_list_items = 3;
    let (client, _tx) = client_with(opts);
    let found = client
        .find_rules(RuleKind::Sigma, "s", &RuleFilter::All)
        .expect("listed");
    mock.assert();
    assert_eq!(found.len(), 3);
}

#[test]
fn sigma_create_reads_the_status_envelope() {
    let mut server = mockito::Server::new();
    let mock = server
        .mock("POST", format!("{TI}/SigmaRule/").as_str())
        .match_body(Matcher::Json(json!({
            "source_id": "sig-1", "name": "Suspicious PowerShell",
            "content": "title: T\nid: 5c6b4a0e-6e4c-4f0b-9d1a-2b3c4d5e6f70\n",
            "hl_status": "stable", "enabled": true
        })))
        .with_status(200)
        .with_body(
            json!({"status": [{"status": true, "code": 201,
                "id": "5c6b4a0e-6e4c-4f0b-9d1a-2b3c4d5e6f70",
                "filename": "Suspicious PowerShell", "content": "title: T\n"}]})
            .to_string(),
        )
        .expect(1)
        .create();
    let (client, _tx) = client(&server);
    let rule = client
        .create_rule(RuleKind::Sigma, &rule_body())
        .expect("created");
    mock.assert();
    assert_eq!(rule.id, "5c6b4a0e-6e4c-4f0b-9d1a-2b3c4d5e6f70");
    assert_eq!(rule.name, "Suspicious PowerShell");
    assert_eq!(rule.source_id.as_deref(), Some("sig-1"));
}

#[test]
fn yara_create_with_201_and_only_an_id_is_fetched_back() {
    let mut server = mockito::Server::new();
    server
        .mock("POST", format!("{TI}/YaraFile/").as_str())
        .with_status(201)
        .with_body(r#"{"status": [{"status": true, "id": "y-9"}]}"#)
        .create();
    let get = server
        .mock("GET", format!("{TI}/YaraFile/y-9/").as_str())
        .with_status(200)
        .with_body(json!({"id": "y-9", "name": "n", "content": "rule a {condition: true}", "rule_names": ["a"]}).to_string())
        .expect(1)
        .create();
    let (client, _tx) = client(&server);
    let rule = client
        .create_rule(RuleKind::Yara, &rule_body())
        .expect("created");
    get.assert();
    assert_eq!(rule.rule_names, vec!["a"]);
}

#[test]
fn rejected_and_empty_envelopes_are_rule_rejected() {
    let mut server = mockito::Server::new();
    let (client, _tx) = client(&server);
    let mut post = |body: &str| {
        server
            .mock("POST", format!("{TI}/SigmaRule/").as_str())
            .with_status(200)
            .with_body(body)
            .expect(1)
            .create()
    };
    let m = post(
        r#"{"status": [{"status": false, "code": 400, "content": "Invalid Sigma rule: missing title"}]}"#,
    );
    let err = client
        .create_rule(RuleKind::Sigma, &rule_body())
        .unwrap_err();
    m.assert();
    m.remove();
    assert_eq!(
        err,
        HarfangLabError::RuleRejected {
            op: "create SigmaRule".into(),
            code: Some(400),
            message: "Invalid Sigma rule: missing title".into()
        }
    );
    let m = post(r#"{"status": []}"#);
    let err = client
        .create_rule(RuleKind::Sigma, &rule_body())
        .unwrap_err();
    m.assert();
    m.remove();
    assert!(
        matches!(err, HarfangLabError::RuleRejected { code: None, .. }),
        "{err:?}"
    );
    let m = post(
        r#"{"status": [{"status": false, "code": 400, "content": "Sigma rule with this id already exists."}]}"#,
    );
    let err = client
        .create_rule(RuleKind::Sigma, &rule_body())
        .unwrap_err();
    m.assert();
    assert!(
        matches!(err, HarfangLabError::AlreadyExists { .. }),
        "{err:?}"
    );
}

#[test]
fn get_rule_is_none_on_404() {
    let mut server = mockito::Server::new();
    server
        .mock("GET", format!("{TI}/SigmaRule/gone/").as_str())
        .with_status(404)
        .with_body(r#"{"detail": "Not found."}"#)
        .create();
    let (client, _tx) = client(&server);
    assert_eq!(
        client.get_rule(RuleKind::Sigma, "gone").expect("answered"),
        None
    );
}

/// Statuses are never waited for inside the client (a worker would be parked): they come back at
/// once, classified, for the pipeline to retry the event from its timer heap.
#[test]
fn unavailable_statuses_come_back_at_once_without_a_resend() {
    let mut server = mockito::Server::new();
    let busy = server
        .mock("POST", format!("{TI}/IOCRule/").as_str())
        .with_status(503)
        .with_body(r#"{"detail": "busy"}"#)
        .expect(1)
        .create();
    let (client, _tx) = client(&server);
    let err = client.create_ioc(&ioc_body()).unwrap_err();
    busy.assert();
    assert_eq!(
        err,
        HarfangLabError::Status {
            op: "create IOCRule".into(),
            status: 503,
            body: "busy".into(),
            retry_after: None,
        }
    );
    assert_eq!(err.failure_kind(), FailureKind::UNAVAILABLE);
    let stats = client.stats();
    assert_eq!(stats.retries_of(Op::CreateIoc), 0);
    assert_eq!(stats.requests(Op::CreateIoc, Some(503)), 1);
}

#[test]
fn a_500_is_transient_and_not_resent() {
    let mut server = mockito::Server::new();
    let mock = server
        .mock("GET", format!("{TI}/SigmaRule/x/").as_str())
        .with_status(500)
        .with_body(r#"{"detail": "Internal Server Error"}"#)
        .expect(1)
        .create();
    let (client, _tx) = client(&server);
    let err = client.get_rule(RuleKind::Sigma, "x").unwrap_err();
    mock.assert();
    assert_eq!(
        err,
        HarfangLabError::Status {
            op: "get SigmaRule".into(),
            status: 500,
            body: "Internal Server Error".into(),
            retry_after: None,
        }
    );
    assert!(err.is_retryable());
    assert_eq!(err.failure_kind(), FailureKind::Transient);
    assert_eq!(client.stats().retries(), 0);
}

#[test]
fn request_counters_keep_the_real_status_code() {
    let mut server = mockito::Server::new();
    let missing = server
        .mock("GET", format!("{TI}/SigmaRule/gone/").as_str())
        .with_status(404)
        .with_body(r#"{"detail": "Not found."}"#)
        .expect(1)
        .create();
    let throttled = server
        .mock("GET", format!("{TI}/SigmaRule/busy/").as_str())
        .with_status(429)
        .with_body(r#"{"detail": "Request was throttled."}"#)
        .expect(1)
        .create();
    let unavailable = server
        .mock("GET", format!("{TI}/SigmaRule/busy/").as_str())
        .with_status(503)
        .with_body("down")
        .expect(3)
        .create();
    let (client, _tx) = client(&server);
    assert_eq!(client.get_rule(RuleKind::Sigma, "gone").unwrap(), None);
    // Each failing call is one request: the client does not retry a status.
    for _ in 0..4 {
        assert!(client.get_rule(RuleKind::Sigma, "busy").is_err());
    }
    missing.assert();
    throttled.assert();
    unavailable.assert();
    assert_eq!(
        client.stats().snapshot(),
        vec![
            ("get_rule", "404", 1),
            ("get_rule", "429", 1),
            ("get_rule", "503", 3)
        ]
    );
}

/// A 429's `Retry-After`, parsed when the answer came, returned at once with the error.
fn throttled(retry_after: &str) -> (Option<Duration>, Duration) {
    let mut server = mockito::Server::new();
    let throttled = server
        .mock("DELETE", format!("{TI}/IOCRule/r/").as_str())
        .with_status(429)
        .with_header("retry-after", retry_after)
        .with_body(r#"{"detail": "Request was throttled."}"#)
        .expect(1)
        .create();
    let (client, _tx) = client(&server);
    let start = Instant::now();
    let err = client.delete_ioc("r").unwrap_err();
    let took = start.elapsed();
    throttled.assert();
    let FailureKind::Unavailable { retry_after } = err.failure_kind() else {
        panic!("a 429 is unavailable: {err:?}");
    };
    (retry_after, took)
}

#[test]
fn throttling_carries_retry_after_in_seconds() {
    let (retry_after, took) = throttled("120");
    assert_eq!(retry_after, Some(Duration::from_secs(120)));
    assert!(
        took < Duration::from_secs(5),
        "waited in the client: {took:?}"
    );
}

#[test]
fn throttling_carries_retry_after_as_an_http_date() {
    let when = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    let (retry_after, took) = throttled(&when);
    // HTTP dates have one-second resolution: between 1 and 2 s.
    let asked = retry_after.expect("a retry-after");
    assert!(
        asked >= Duration::from_secs(1) && asked <= Duration::from_secs(2),
        "{asked:?}"
    );
    assert!(
        took < Duration::from_secs(1),
        "waited in the client: {took:?}"
    );
}

/// A dropped connection (a stale keep-alive connection) is resent at once, within the policy.
#[test]
fn a_dropped_connection_is_resent_quickly() {
    let (url, accepted) = dropping_server(
        2,
        r#"{"count": 0, "next": null, "previous": null, "results": []}"#,
    );
    let (client, _tx) = client_with(options(&url));
    let key = IocKey {
        ioc_type: IocType::DomainName,
        value: "a.example".into(),
    };
    let start = Instant::now();
    assert_eq!(
        client
            .find_ioc("src", &key)
            .expect("found nothing after two drops"),
        None
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    assert_eq!(client.stats().retries_of(Op::FindIoc), 2);
}

/// A timeout is not resent: it already held the worker for the whole request timeout, and the
/// server may still be working on it.
#[test]
fn a_timeout_is_not_resent() {
    let (url, accepted) = silent_server();
    let mut opts = options(&url);
    opts.request_timeout = Duration::from_millis(300);
    let (client, _tx) = client_with(opts);
    let err = client.delete_ioc("x").unwrap_err();
    assert!(matches!(err, HarfangLabError::Timeout { .. }), "{err:?}");
    assert_eq!(err.failure_kind(), FailureKind::UNAVAILABLE);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(client.stats().retries(), 0);
}

#[test]
fn shutdown_interrupts_a_resend_wait_promptly() {
    let (url, _accepted) = dropping_server(usize::MAX, "{}");
    let mut opts = options(&url);
    // A long wait between resends: only the shutdown can end it early.
    opts.retry = RetryPolicy {
        max_retries: 5,
        base: Duration::from_secs(60),
        cap: Duration::from_secs(60),
    };
    let (client, tx) = client_with(opts);
    let worker = {
        let client = client.clone();
        std::thread::spawn(move || client.create_ioc(&ioc_body()))
    };
    // The worker sits in the resend wait: the gauge the watchdog reads shows it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.stats().waiting_to_retry() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(client.stats().waiting_to_retry(), 1);
    let start = Instant::now();
    drop(tx);
    let result = worker.join().expect("worker thread");
    assert_eq!(client.stats().waiting_to_retry(), 0);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        result.unwrap_err(),
        HarfangLabError::ShuttingDown {
            op: "create IOCRule".into()
        }
    );
    // Later resends give up at once too.
    let err = client.create_ioc(&ioc_body()).unwrap_err();
    assert!(matches!(err, HarfangLabError::ShuttingDown { .. }));
}

#[test]
fn connection_refused_is_unreachable_after_retries() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let (client, _tx) = client_with(options(&format!("http://127.0.0.1:{port}")));
    let err = client.delete_ioc("x").unwrap_err();
    assert!(
        matches!(err, HarfangLabError::Unreachable { .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(client.stats().retries(), 3);
    assert_eq!(client.stats().requests(Op::DeleteIoc, None), 4);
    // The transport error is kept whole, not only its text.
    let cause = std::error::Error::source(&err).and_then(|c| c.downcast_ref::<ureq::Error>());
    assert!(cause.is_some(), "{err:?}");
    assert!(
        err.to_string().ends_with(&cause.unwrap().to_string()),
        "{err}"
    );
}

#[test]
fn a_tls_failure_is_reported_as_tls_and_not_retried() {
    let server = mockito::Server::new();
    let https = server.url().replace("http://", "https://");
    let (client, _tx) = client_with(options(&https));
    let err = client.probe().unwrap_err();
    assert!(matches!(err, HarfangLabError::Tls { .. }), "{err:?}");
    assert_eq!(client.stats().retries(), 0);
    let cause = std::error::Error::source(&err).and_then(|c| c.downcast_ref::<ureq::Error>());
    assert!(cause.is_some(), "{err:?}");
}

#[test]
fn a_redirect_is_reported_not_followed() {
    let mut server = mockito::Server::new();
    server
        .mock("GET", format!("{TI}/SigmaRule/x/").as_str())
        .with_status(301)
        .with_header("location", "/elsewhere/")
        .create();
    let target = server.mock("GET", "/elsewhere/").expect(0).create();
    let (client, _tx) = client(&server);
    let err = client.get_rule(RuleKind::Sigma, "x").unwrap_err();
    target.assert();
    assert!(
        matches!(&err, HarfangLabError::Status { status: 301, body, .. } if body.contains("/elsewhere/")),
        "{err:?}"
    );
}

#[test]
fn probe_reads_the_version_then_checks_the_token() {
    let mut server = mockito::Server::new();
    let version = server
        .mock("GET", "/api/version")
        .with_status(200)
        .with_body(r#"{"version": "9.11.0"}"#)
        .expect(1)
        .create();
    let sources = server
        .mock("GET", format!("{TI}/IOCSource/").as_str())
        .match_query(Matcher::UrlEncoded("limit".into(), "1".into()))
        .match_header("authorization", format!("Token {TOKEN}").as_str())
        .with_status(200)
        .with_body(r#"{"count": 3, "next": null, "previous": null, "results": [{"id": "s", "name": "n"}]}"#)
        .expect(1)
        .create();
    let (client, _tx) = client(&server);
    let report = client.probe().expect("probe");
    version.assert();
    sources.assert();
    assert_eq!(report.version.as_deref(), Some("9.11.0"));
    assert_eq!(report.ioc_sources, Some(3));
}

#[test]
fn probe_separates_bad_token_and_missing_permission() {
    for (status, detail) in [
        (401, "Invalid token."),
        (403, "You do not have permission to perform this action."),
    ] {
        let mut server = mockito::Server::new();
        server.mock("GET", "/api/version").with_status(404).create();
        server
            .mock("GET", format!("{TI}/IOCSource/").as_str())
            .match_query(Matcher::Any)
            .with_status(status)
            .with_body(json!({ "detail": detail }).to_string())
            .expect(1)
            .create();
        let (client, _tx) = client(&server);
        let err = client.probe().unwrap_err();
        match status {
            401 => assert!(
                matches!(err, HarfangLabError::Unauthorized { .. }),
                "{err:?}"
            ),
            _ => assert!(matches!(err, HarfangLabError::Forbidden { .. }), "{err:?}"),
        }
        assert!(err.to_string().contains(detail));
    }
}

#[test]
fn ensure_source_refinds_after_losing_a_creation_race() {
    let mut server = mockito::Server::new();
    let empty = server
        .mock("GET", format!("{TI}/IOCSource/").as_str())
        .match_query(Matcher::UrlEncoded(
            "name__exact".into(),
            "from_OpenCTI".into(),
        ))
        .with_status(200)
        .with_body(r#"{"count": 0, "next": null, "results": []}"#)
        .expect(1)
        .create();
    let create = server
        .mock("POST", format!("{TI}/IOCSource/").as_str())
        .match_body(Matcher::Json(json!({
            "name": "from_OpenCTI",
            "description": "Cyber Threat Intelligence knowledge imported from OpenCTI, and any changes must be made only to it.",
            "enabled": true
        })))
        .with_status(400)
        .with_body(r#"{"name": ["ioc source with this name already exists."]}"#)
        .expect(1)
        .create();
    let found = server
        .mock("GET", format!("{TI}/IOCSource/").as_str())
        .match_query(Matcher::UrlEncoded("name__exact".into(), "from_OpenCTI".into()))
        .with_status(200)
        .with_body(r#"{"count": 2, "next": null, "results": [{"id": "other", "name": "from_OpenCTI_2"}, {"id": "won", "name": "from_OpenCTI"}]}"#)
        .expect(1)
        .create();
    let (client, _tx) = client(&server);
    let source = client
        .ensure_source(SourceKind::Ioc, "from_OpenCTI")
        .expect("source");
    empty.assert();
    create.assert();
    found.assert();
    assert_eq!(source.id, "won");
}

#[test]
fn disabling_tls_verification_warns_at_construction() {
    let mut opts = options("https://hl.invalid:8443/");
    opts.verify_tls = false;
    let (client, _tx) = client_with(opts);
    assert_eq!(client.base_url(), "https://hl.invalid:8443");
    let lines = logs().lines_at(log::Level::Trace);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("WARN") && l.contains("DISABLED") && l.contains("hl.invalid")),
        "{lines:?}"
    );
}

#[test]
fn a_bad_ca_file_or_url_fails_construction() {
    let mut opts = options("https://hl.example");
    opts.ca_file = Some("/nonexistent/ca.pem".into());
    let (_tx, rx) = crossbeam_channel::unbounded::<()>();
    let err = Client::new(opts, rx.clone()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    let dir = std::env::temp_dir().join(format!("hl-ca-{}", std::process::id()));
    std::fs::write(&dir, "not a certificate").expect("write temp file");
    let mut opts = options("https://hl.example");
    opts.ca_file = Some(dir.clone());
    let err = Client::new(opts, rx.clone()).unwrap_err();
    let _ = std::fs::remove_file(&dir);
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
    assert!(Client::new(options("ftp://x"), rx).is_err());
}

#[test]
fn logs_and_errors_never_show_the_token() {
    let mut server = mockito::Server::new();
    server
        .mock("GET", format!("{TI}/IOCRule/").as_str())
        .match_query(Matcher::Any)
        .with_status(401)
        .with_body(r#"{"detail": "Invalid token."}"#)
        .create();
    let (client, _tx) = client(&server);
    let key = IocKey {
        ioc_type: IocType::Url,
        value: "http://x".into(),
    };
    let err = client.find_ioc("s", &key).unwrap_err();
    assert!(!format!("{err} {err:?} {client:?}").contains(TOKEN));
    let lines = logs().lines_at(log::Level::Trace);
    assert!(!lines.is_empty());
    let leaks: Vec<_> = lines.iter().filter(|l| l.contains(TOKEN)).collect();
    assert!(leaks.is_empty(), "{leaks:?}");
}
