//! The metrics server over real HTTP on 127.0.0.1:0: scrape, parse the exposition text with a
//! small parser written here, check values; `/healthz` in its fresh / stale / stuck states.

use std::collections::BTreeMap;
use std::time::Duration;

use harfanglab_intel::{Health, Metrics, MetricsServer};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

fn get(server: &MetricsServer, path: &str) -> Answer {
    let url = format!("http://{}{path}", server.local_addr());
    let mut response = agent().get(&url).call().unwrap();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Answer {
        status: response.status().as_u16(),
        content_type,
        body: response.body_mut().read_to_string().unwrap(),
    }
}

/// One sample: name, sorted labels, value.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

/// A strict-enough parser of the text format 0.0.4: every sample's family must have been
/// declared by `# HELP` and `# TYPE` lines first; label values are unescaped.
fn parse(text: &str) -> (Samples, BTreeMap<String, String>) {
    let mut samples = Samples::new();
    let mut types = BTreeMap::new();
    let mut helped = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap().to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                helped.contains(&name.to_owned()),
                "TYPE before HELP: {line}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{line}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let (labels, rest) = parse_labels(&line[open + 1..]);
                (&line[..open], labels, rest)
            }
            None => {
                let (name, rest) = line.split_once(' ').unwrap();
                (name, Vec::new(), rest)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name {name}"
        );
        assert!(types.contains_key(name), "sample before its TYPE: {line}");
        let value: f64 = rest
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("value in {line}"));
        let mut labels = labels;
        labels.sort();
        samples.insert((name.to_owned(), labels), value);
    }
    (samples, types)
}

/// Parses `k="v",k2="v2"} rest` and returns the labels and what follows the `}`.
fn parse_labels(s: &str) -> (Vec<(String, String)>, &str) {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let rest1 = rest.strip_prefix(',').unwrap_or(rest);
        let (key, after_key) = rest1.split_once("=\"").unwrap();
        let mut value = String::new();
        let mut chars = after_key.char_indices();
        let end = loop {
            match chars.next().unwrap() {
                (_, '\\') => match chars.next().unwrap().1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        rest = &after_key[end + 1..];
    }
}

fn sample(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut key: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    key.sort();
    samples.get(&(name.to_owned(), key)).copied()
}

#[test]
fn scrape_returns_the_counted_values() {
    let metrics = Metrics::new();
    let server = MetricsServer::start("127.0.0.1:0", metrics.clone(), Health::default()).unwrap();

    for _ in 0..3 {
        metrics.event("create", "applied");
    }
    metrics.event("delete", "skipped");
    metrics.harfanglab_request("create_ioc", Some(201));
    metrics.harfanglab_request("create_ioc", Some(201));
    metrics.harfanglab_request("find_ioc", Some(503));
    metrics.harfanglab_request("odd \"op\"\\x\ny", None);
    metrics.retry("find_ioc");
    metrics.dead_letter();
    metrics.opencti_ping(true);
    metrics.opencti_ping(false);
    metrics.set_checkpoint("1718445600000-0");
    metrics.set_stream_head("1718445612250-0");
    metrics.set_busy_workers(4);
    metrics.add_collector(|m| m.set_queue_depth(17));

    let answer = get(&server, "/metrics");
    assert_eq!(answer.status, 200);
    assert!(answer.content_type.starts_with("text/plain; version=0.0.4"));
    let (samples, types) = parse(&answer.body);

    let p = "harfanglab_intel_";
    assert_eq!(types[&format!("{p}events_total")], "counter");
    assert_eq!(types[&format!("{p}stream_lag_seconds")], "gauge");
    let events = format!("{p}events_total");
    assert_eq!(
        sample(
            &samples,
            &events,
            &[("type", "create"), ("outcome", "applied")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &samples,
            &events,
            &[("type", "delete"), ("outcome", "skipped")]
        ),
        Some(1.0)
    );
    let requests = format!("{p}harfanglab_requests_total");
    assert_eq!(
        sample(
            &samples,
            &requests,
            &[("op", "create_ioc"), ("status", "201")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &samples,
            &requests,
            &[("op", "find_ioc"), ("status", "503")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &samples,
            &requests,
            &[("op", "odd \"op\"\\x\ny"), ("status", "error")]
        ),
        Some(1.0),
        "escaped label value round-trips"
    );
    assert_eq!(
        sample(
            &samples,
            &format!("{p}retries_total"),
            &[("op", "find_ioc")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&samples, &format!("{p}dead_letters_total"), &[]),
        Some(1.0)
    );
    let pings = format!("{p}opencti_pings_total");
    assert_eq!(sample(&samples, &pings, &[("outcome", "ok")]), Some(1.0));
    assert_eq!(sample(&samples, &pings, &[("outcome", "error")]), Some(1.0));
    assert_eq!(
        sample(&samples, &format!("{p}checkpoint_timestamp_seconds"), &[]),
        Some(1718445600.0)
    );
    assert_eq!(
        sample(&samples, &format!("{p}stream_lag_seconds"), &[]),
        Some(12.25)
    );
    assert_eq!(
        sample(&samples, &format!("{p}queue_depth"), &[]),
        Some(17.0)
    );
    assert_eq!(
        sample(&samples, &format!("{p}busy_workers"), &[]),
        Some(4.0)
    );
    let rss = sample(&samples, "process_resident_memory_bytes", &[]).unwrap();
    assert!(rss > 1024.0 * 1024.0, "rss {rss}");

    // Counters move between scrapes.
    metrics.event("create", "applied");
    let (samples, _) = parse(&get(&server, "/metrics").body);
    assert_eq!(
        sample(
            &samples,
            &events,
            &[("type", "create"), ("outcome", "applied")]
        ),
        Some(4.0)
    );
}

#[test]
fn namespace_and_subsystem_prefix_every_name() {
    let metrics = Metrics::with_prefix("opencti", "connectors");
    metrics.event("update", "applied");
    let server = MetricsServer::start("127.0.0.1:0", metrics, Health::default()).unwrap();
    let (samples, _) = parse(&get(&server, "/metrics").body);
    assert_eq!(
        sample(
            &samples,
            "opencti_connectors_harfanglab_intel_events_total",
            &[("type", "update"), ("outcome", "applied")]
        ),
        Some(1.0)
    );
    assert!(
        samples
            .keys()
            .all(|(name, _)| name.starts_with("opencti_connectors_"))
    );
}

#[test]
fn healthz_is_ok_only_when_both_ends_and_the_pipeline_are_fresh() {
    use std::time::Instant;
    let health = Health::new(Duration::from_secs(120));
    let server = MetricsServer::start("127.0.0.1:0", Metrics::new(), health.clone()).unwrap();

    // Nothing reported yet (startup): unhealthy, with every reason.
    let answer = get(&server, "/healthz");
    assert_eq!(answer.status, 503);
    assert_eq!(answer.content_type, "application/json");
    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(json["status"], "unhealthy");
    assert_eq!(json["reasons"].as_array().unwrap().len(), 3);

    // All fresh.
    health.opencti_reachable();
    health.harfanglab_reachable();
    health.progress();
    let answer = get(&server, "/healthz");
    assert_eq!((answer.status, answer.body.as_str()), (200, "ok\n"));

    // A stale end. The server checks against the real clock, so use a 1 ms window: the
    // HarfangLab report is 20 ms old, the others are dated in the future (age 0).
    let strict = Health::new(Duration::from_millis(1));
    let server2 = MetricsServer::start("127.0.0.1:0", Metrics::new(), strict.clone()).unwrap();
    let long_ago = Instant::now();
    strict.harfanglab_reachable_at(long_ago);
    std::thread::sleep(Duration::from_millis(20));
    strict.opencti_reachable_at(Instant::now() + Duration::from_secs(3600));
    strict.progress_at(Instant::now() + Duration::from_secs(3600));
    let answer = get(&server2, "/healthz");
    assert_eq!(answer.status, 503);
    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let reasons: Vec<&str> = json["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].starts_with("harfanglab not reachable for"));

    // No progress: both ends fresh but the pipeline is stuck.
    let stuck = Health::new(Duration::from_millis(1));
    stuck.opencti_reachable_at(Instant::now() + Duration::from_secs(3600));
    stuck.harfanglab_reachable_at(Instant::now() + Duration::from_secs(3600));
    let server3 = MetricsServer::start("127.0.0.1:0", Metrics::new(), stuck).unwrap();
    let answer = get(&server3, "/healthz");
    assert_eq!(answer.status, 503);
    assert!(
        answer.body.contains("pipeline not making progress"),
        "{}",
        answer.body
    );
}

#[test]
fn unknown_paths_are_404_and_other_methods_405() {
    let server = MetricsServer::start("127.0.0.1:0", Metrics::new(), Health::default()).unwrap();
    assert_eq!(get(&server, "/").status, 404);
    assert_eq!(get(&server, "/metricsx").status, 404);
    assert_eq!(get(&server, "/metrics?x=1").status, 200);
    let url = format!("http://{}/metrics", server.local_addr());
    let response = agent().post(&url).send("").unwrap();
    assert_eq!(response.status().as_u16(), 405);
}

#[test]
fn dropping_the_server_frees_the_port_promptly() {
    let server = MetricsServer::start("127.0.0.1:0", Metrics::new(), Health::default()).unwrap();
    let addr = server.local_addr();
    let started = std::time::Instant::now();
    drop(server);
    assert!(started.elapsed() < Duration::from_secs(2));
    // tiny_http closes its listener from its own accept thread, which it does not join: allow
    // that thread a moment to notice.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still listening on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_address_in_use_is_an_error_not_a_panic() {
    let first = MetricsServer::start("127.0.0.1:0", Metrics::new(), Health::default()).unwrap();
    let bind = first.local_addr().to_string();
    let err = MetricsServer::start(&bind, Metrics::new(), Health::default()).unwrap_err();
    assert!(err.to_string().contains(&bind), "{err}");
}
