//! The concrete event handler under test, as `service_handler` and `coalescing` drive it:
//! OpenCTI answers from mockito, HarfangLab is the in-memory `MemoryApi`, events are the
//! committed fixtures (`fixtures/opencti/*.json`) decoded as the stream reader decodes them.

use harfanglab_intel::service::{Handler, Work};
use harfanglab_intel::{
    ApiOptions, Decoded, Frame, Health, MemoryApi, Metrics, Notifier, OpenCtiApi, Secret,
    SourceLists, SyncSettings, Syncer, WatchdogGate, decode_event,
};
use mockito::Matcher;
use serde_json::{Value, json};
use std::time::Duration;

/// The OpenCTI internal id of the fixtures' indicator.
pub const INTERNAL: &str = "00000001-0000-4000-8000-000000003d2b";

/// A fixture line (`{"event", "data"}`) of `fixtures/opencti/`.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/opencti/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Decode a fixture line like the reader does, as stream event `id`.
pub fn decode_at(line: &Value, id: &str) -> Work {
    let frame = Frame {
        id: Some(id.into()),
        event: line["event"].as_str().unwrap().into(),
        data: line["data"].to_string(),
        retry: None,
    };
    match decode_event(&frame).unwrap() {
        Decoded::Event(ev) => Work::Event(ev),
        other => panic!("not an event: {other:?}"),
    }
}

pub struct Fx {
    pub server: mockito::ServerGuard,
    pub mem: MemoryApi,
    pub handler: Handler<MemoryApi>,
}

/// A handler over a fresh mockito OpenCTI (no retries, 5 s timeout) and an empty `MemoryApi`
/// with the three source lists, removing IOCs whose last holder goes.
pub fn setup() -> Fx {
    let server = mockito::Server::new();
    let mut o = ApiOptions::new(server.url(), Secret::new("tok"));
    o.retry.max_retries = 0;
    o.timeout = Duration::from_secs(5);
    let api = OpenCtiApi::new(o).unwrap();
    let mem = MemoryApi::new();
    let settings = SyncSettings {
        lists: SourceLists {
            ioc: "ioc-src".into(),
            sigma: "sigma-src".into(),
            yara: "yara-src".into(),
        },
        remove_indicator: true,
        rule_maturity: "stable".into(),
        enforce_enabled: false,
    };
    let handler = Handler::new(
        api,
        Syncer::new(mem.clone(), settings),
        Metrics::new(),
        Health::new(Duration::from_secs(60)),
        WatchdogGate::new(Notifier::disabled(), Duration::from_secs(60)),
    );
    Fx {
        server,
        mem,
        handler,
    }
}

impl Fx {
    /// The values of HarfangLab's IOC rules, sorted.
    pub fn values(&self) -> Vec<String> {
        let mut v: Vec<String> = self.mem.iocs().into_iter().map(|r| r.value).collect();
        v.sort();
        v
    }

    /// Answer every `indicator` query with `body` until the returned mock is removed.
    pub fn answer(&mut self, body: String) -> mockito::Mock {
        self.reads(body).create()
    }

    /// The `indicator` query's answer, not created yet (to set the expected number of reads).
    pub fn reads(&mut self, body: String) -> mockito::Mock {
        self.server
            .mock("POST", "/graphql")
            .match_body(Matcher::PartialJson(json!({"variables": {"id": INTERNAL}})))
            .with_header("content-type", "application/json")
            .with_body(body)
    }
}
