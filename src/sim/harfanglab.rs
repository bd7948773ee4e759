//! An in-memory HarfangLab threat-intel server (over `sim::http`) for tests, benchmarks and local runs:
//! source lists, IOC rules, Sigma rules and Yara files as `docs/harfanglab-api.md` describes them,
//! with DRF-style pagination and errors, Django's trailing-slash redirect (`strict` mode),
//! server-side parsing of Sigma/YARA content, fault injection and request counters.
//!
//! What is INFERRED in the spec is a documented choice here (and configurable where it matters):
//! a Sigma `id:` that is a UUID becomes the object id, and re-posting it fails inside the
//! `{"status": [...]}` envelope unless `overwrite: true`; Yara files get random ids, and one whose
//! `meta.id` (or, opt-in, rule identifier) another file of its source list declares is refused
//! the same way (`overwrite: true` replaces that file); hash values
//! are unique case-insensitively; CIDR ranges and SHA-512 are switchable. Not a product
//! component: it never talks to anything but its own clients.

use super::capacity::{Capacity, CapacityLimit, Refused};
use super::http::{self, HttpRequest, HttpResponse, HttpServer};
use crate::harfanglab::model::{IocRule, RemoteRule, SourceKind, SourceList};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::debug;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TI_PREFIX: &str = "/api/data/threat_intelligence";

/// How the simulated server behaves. `Default` is a lenient server on token `sim-token`.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The token with every permission (`Authorization: Token <token>`).
    pub token: String,
    /// Known tokens whose user lacks the threat-intel roles: 403 on every TI call.
    pub forbidden_tokens: Vec<String>,
    /// Django mode: a path without its trailing `/` answers 301 `Location: <path>/` (any
    /// method). Lenient mode (false) serves it like the slashed path.
    pub strict: bool,
    /// `GET /api/version` answer.
    pub version: String,
    /// Whether `/api/version` checks the token (unknown on the real server; default no).
    pub version_requires_auth: bool,
    /// Accept 128-hex (SHA-512) values for `hash` IOCs.
    pub accept_sha512: bool,
    /// Accept CIDR ranges for `ip_*` IOCs.
    pub accept_cidr: bool,
    /// Most simultaneous connections; each is served on its own thread, so injected latency
    /// never serialises requests (more get a 503).
    pub max_connections: usize,
    /// `limit` when the query has none.
    pub default_page_size: usize,
    /// Largest `limit` honoured.
    pub max_page_size: usize,
    /// `next`/`previous` as absolute URLs (DRF default) or relative paths.
    pub absolute_next: bool,
    /// Faults active from the start (change them with [`HarfangLabSim::set_faults`]).
    pub faults: Faults,
    /// Seed of the fault dice, so a sequential test sees the same faults every run.
    pub seed: u64,
    /// Also refuse a Yara file declaring a rule identifier that another file of the same
    /// source list declares (the clash on `meta.id` is always refused). The spec only infers
    /// identity from `meta.id` (§6.3); uniqueness of rule names is a guess, so it is opt-in.
    pub unique_yara_rule_names: bool,
    /// A physical limit (`sim::capacity`): at most this many requests served at once (each for
    /// `Faults::latency`), a queue behind them, 429 with `Retry-After` past the queue. `None`:
    /// every request is served at once.
    pub capacity: Option<CapacityLimit>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            token: "sim-token".to_owned(),
            forbidden_tokens: vec!["sim-forbidden-token".to_owned()],
            strict: false,
            version: "9.11.0".to_owned(),
            version_requires_auth: false,
            accept_sha512: true,
            accept_cidr: true,
            max_connections: 256,
            default_page_size: 100,
            max_page_size: 10_000,
            absolute_next: true,
            faults: Faults::default(),
            seed: 0,
            unique_yara_rule_names: false,
            capacity: None,
        }
    }
}

/// Injected misbehaviour, settable at runtime.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Added before every answer (waits end at shutdown).
    pub latency: Duration,
    /// Share of requests (0.0-1.0) answered 500.
    pub error_rate: f64,
    /// Share of requests (0.0-1.0) answered 429.
    pub throttle_rate: f64,
    /// `Retry-After` seconds sent with a 429 (`None`: no header).
    pub retry_after_secs: Option<u64>,
    /// Every request whose URL (path and query) or body contains this text is answered 429
    /// (with `retry_after_secs`), the others normally: one object throttled while the rest
    /// flows. Each such answer is timed ([`HarfangLabSim::throttled_at`]).
    pub throttle_matching: Option<String>,
    /// Share of successful writes (POST/PATCH/PUT/DELETE) whose answer is lost: the change is
    /// applied, but the client gets a 502 (a proxy or load balancer timing out), so its retry
    /// meets the result of its first attempt ("already exists", 404 on delete).
    pub lost_reply_rate: f64,
    /// Outage: every request is answered 503.
    pub down: bool,
    /// Broken network: every connection is closed without an answer (checked before `down`).
    /// For "connection refused", shut the simulator down.
    pub hangup: bool,
}

/// The six resources under `/api/data/threat_intelligence/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Res {
    IocSource,
    SigmaSource,
    YaraSource,
    IocRule,
    SigmaRule,
    YaraFile,
}

impl Res {
    const ALL: [Res; 6] = [
        Res::IocSource,
        Res::SigmaSource,
        Res::YaraSource,
        Res::IocRule,
        Res::SigmaRule,
        Res::YaraFile,
    ];

    fn parse(name: &str) -> Option<Res> {
        Res::ALL.into_iter().find(|r| r.name() == name)
    }

    fn name(self) -> &'static str {
        match self {
            Res::IocSource => "IOCSource",
            Res::SigmaSource => "SigmaSource",
            Res::YaraSource => "YaraSource",
            Res::IocRule => "IOCRule",
            Res::SigmaRule => "SigmaRule",
            Res::YaraFile => "YaraFile",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn is_source(self) -> bool {
        matches!(self, Res::IocSource | Res::SigmaSource | Res::YaraSource)
    }

    /// The source list resource a rule belongs to.
    fn source(self) -> Res {
        match self {
            Res::IocRule | Res::IocSource => Res::IocSource,
            Res::SigmaRule | Res::SigmaSource => Res::SigmaSource,
            Res::YaraFile | Res::YaraSource => Res::YaraSource,
        }
    }

    fn of_source_kind(kind: SourceKind) -> Res {
        match kind {
            SourceKind::Ioc => Res::IocSource,
            SourceKind::Sigma => Res::SigmaSource,
            SourceKind::Yara => Res::YaraSource,
        }
    }

    /// DRF's lower-case model wording for messages.
    fn noun(self) -> &'static str {
        match self {
            Res::IocSource => "ioc source",
            Res::SigmaSource => "sigma source",
            Res::YaraSource => "yara source",
            Res::IocRule => "ioc rule",
            Res::SigmaRule => "sigma rule",
            Res::YaraFile => "yara file",
        }
    }
}

/// Objects of one resource, in creation order, with an id index.
#[derive(Default)]
struct Table {
    rows: BTreeMap<u64, Map<String, Value>>,
    ids: HashMap<String, u64>,
}

impl Table {
    fn get(&self, id: &str) -> Option<&Map<String, Value>> {
        self.ids.get(id).and_then(|seq| self.rows.get(seq))
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Map<String, Value>> {
        let seq = *self.ids.get(id)?;
        self.rows.get_mut(&seq)
    }

    fn remove(&mut self, id: &str) -> Option<Map<String, Value>> {
        let seq = self.ids.remove(id)?;
        self.rows.remove(&seq)
    }
}

#[derive(Default)]
struct State {
    next_seq: u64,
    tables: [Table; 6],
    /// (source_id, type, normalised value) → IOC rule id: the CONFIRMED uniqueness (§7).
    ioc_unique: HashMap<(String, String, String), String>,
    requests: HashMap<(String, String), u64>,
    writes: u64,
    /// When each `throttle_matching` 429 was answered.
    throttled: Vec<Instant>,
}

impl State {
    fn table(&self, res: Res) -> &Table {
        &self.tables[res.index()]
    }

    fn table_mut(&mut self, res: Res) -> &mut Table {
        &mut self.tables[res.index()]
    }

    fn insert(&mut self, res: Res, id: String, obj: Map<String, Value>) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let table = self.table_mut(res);
        table.ids.insert(id, seq);
        table.rows.insert(seq, obj);
    }
}

struct Shared {
    config: SimConfig,
    base_url: OnceLock<String>,
    faults: Mutex<Faults>,
    dice: Mutex<fastrand::Rng>,
    state: Mutex<State>,
    /// Disconnected at shutdown: ends latency waits.
    stop_rx: Receiver<()>,
    capacity: Option<Capacity>,
}

/// A running simulator. Stops on [`HarfangLabSim::shutdown`] or drop.
pub struct HarfangLabSim {
    shared: Arc<Shared>,
    server: HttpServer,
    addr: SocketAddr,
    stop_tx: Mutex<Option<Sender<()>>>,
}

/// Start a simulator on `bind` (`"127.0.0.1:0"` for an ephemeral port).
pub fn serve(bind: &str, config: SimConfig) -> io::Result<HarfangLabSim> {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let max_connections = config.max_connections;
    let shared = Arc::new(Shared {
        base_url: OnceLock::new(),
        faults: Mutex::new(config.faults.clone()),
        dice: Mutex::new(fastrand::Rng::with_seed(config.seed)),
        state: Mutex::new(State::default()),
        stop_rx,
        capacity: config.capacity.clone().map(Capacity::new),
        config,
    });
    let handler_shared = Arc::clone(&shared);
    let server = http::start(
        bind,
        "hl-sim",
        max_connections,
        Arc::new(move |request| handle(&handler_shared, request)),
    )?;
    let addr = server.addr();
    let _ = shared.base_url.set(format!("http://{addr}"));
    debug!("HarfangLab simulator listening on {addr}");
    Ok(HarfangLabSim {
        shared,
        server,
        addr,
        stop_tx: Mutex::new(Some(stop_tx)),
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked handler must not take the whole simulator down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl HarfangLabSim {
    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> &str {
        self.shared.base_url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The full-permission token.
    pub fn token(&self) -> &str {
        &self.shared.config.token
    }

    /// Stop accepting, end latency waits, close connections and join their threads. Idempotent.
    pub fn shutdown(&self) {
        lock(&self.stop_tx).take();
        if let Some(c) = &self.shared.capacity {
            c.close();
        }
        self.server.shutdown();
    }

    /// Requests refused with a 429 because the capacity's queue was full.
    pub fn capacity_refusals(&self) -> u64 {
        self.shared.capacity.as_ref().map_or(0, Capacity::refused)
    }

    /// The longest capacity queue seen.
    pub fn capacity_peak_queue(&self) -> usize {
        self.shared
            .capacity
            .as_ref()
            .map_or(0, Capacity::peak_waiting)
    }

    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults;
    }

    pub fn faults(&self) -> Faults {
        lock(&self.shared.faults).clone()
    }

    /// Create a source list directly (test setup); returns its id.
    pub fn add_source(&self, kind: SourceKind, name: &str) -> String {
        let mut state = lock(&self.shared.state);
        let id = uuid::Uuid::new_v4().to_string();
        let now = timestamp(SystemTime::now());
        let obj = json!({
            "id": id, "name": name, "description": "", "enabled": true,
            "creation_date": now, "last_update": now,
        });
        if let Value::Object(map) = obj {
            state.insert(Res::of_source_kind(kind), id.clone(), map);
        }
        id
    }

    /// Pre-seed rules (a test's "HarfangLab as it was before"), as if an API client had created
    /// them, with the server's own validation: each entry is
    /// `{"resource": "IOCRule" | "SigmaRule" | "YaraFile", "source": "<list name>", ...}` plus the
    /// object's writable fields (`type`, `value`, `comment`, `enabled`, ... or `name`,
    /// `content`, `enabled`). The source list is created when missing. Python-format comments
    /// and mixed-case values are kept as given. Returns the new object ids, in order.
    pub fn seed(&self, entries: &[Value]) -> Result<Vec<String>, String> {
        let mut ids = Vec::with_capacity(entries.len());
        for (n, entry) in entries.iter().enumerate() {
            let bad = |m: &str| format!("seed entry {}: {m}", n + 1);
            let mut body = entry
                .as_object()
                .cloned()
                .ok_or_else(|| bad("not a JSON object"))?;
            let res = body
                .remove("resource")
                .and_then(|r| r.as_str().and_then(Res::parse))
                .filter(|r| !r.is_source())
                .ok_or_else(|| bad("`resource` must be IOCRule, SigmaRule or YaraFile"))?;
            let list = body
                .remove("source")
                .and_then(|s| s.as_str().map(str::to_owned))
                .ok_or_else(|| bad("`source` (the list name) is missing"))?;
            let kind = match res {
                Res::IocRule => SourceKind::Ioc,
                Res::SigmaRule => SourceKind::Sigma,
                _ => SourceKind::Yara,
            };
            let source_id = self
                .sources()
                .into_iter()
                .find(|(k, l)| *k == kind && l.name == list)
                .map(|(_, l)| l.id)
                .unwrap_or_else(|| self.add_source(kind, &list));
            body.insert("source_id".into(), json!(source_id));
            let enabled = body.get("enabled").and_then(Value::as_bool);
            let mut state = lock(&self.shared.state);
            let reply = self.shared.create(&mut state, res, body);
            let answer = reply.body.clone().unwrap_or(Value::Null);
            let id = answer["id"]
                .as_str()
                .or(answer["status"][0]["id"].as_str())
                .map(str::to_owned)
                .ok_or_else(|| bad(&format!("refused: {answer}")))?;
            // A rule import always creates enabled rules; apply the seed's state.
            if let (Some(enabled), Some(obj)) = (enabled, state.table_mut(res).get_mut(&id)) {
                obj.insert("enabled".into(), json!(enabled));
            }
            ids.push(id);
        }
        Ok(ids)
    }

    /// Read seed entries from a JSON Lines file (see [`HarfangLabSim::seed`]); `#` lines skipped.
    pub fn seed_file(&self, path: &std::path::Path) -> Result<Vec<String>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            entries.push(
                serde_json::from_str(line)
                    .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?,
            );
        }
        self.seed(&entries)
    }

    /// Every source list, by kind, in creation order.
    pub fn sources(&self) -> Vec<(SourceKind, SourceList)> {
        let mut out = Vec::new();
        for kind in [SourceKind::Ioc, SourceKind::Sigma, SourceKind::Yara] {
            for obj in self.objects_of(Res::of_source_kind(kind)) {
                if let Ok(s) = serde_json::from_value(obj) {
                    out.push((kind, s));
                }
            }
        }
        out
    }

    pub fn ioc_rules(&self) -> Vec<IocRule> {
        typed(self.objects_of(Res::IocRule))
    }

    pub fn sigma_rules(&self) -> Vec<RemoteRule> {
        typed(self.objects_of(Res::SigmaRule))
    }

    pub fn yara_files(&self) -> Vec<RemoteRule> {
        typed(self.objects_of(Res::YaraFile))
    }

    /// Raw JSON objects of a resource (`"IOCRule"`, `"SigmaSource"`, ...), in creation order.
    pub fn objects(&self, resource: &str) -> Vec<Value> {
        Res::parse(resource)
            .map(|r| self.objects_of(r))
            .unwrap_or_default()
    }

    fn objects_of(&self, res: Res) -> Vec<Value> {
        let state = lock(&self.shared.state);
        state
            .table(res)
            .rows
            .values()
            .map(|m| Value::Object(m.clone()))
            .collect()
    }

    /// Requests received for `(method, resource)`, e.g. `("POST", "IOCRule")`; the resource is
    /// `version` for `/api/version` and `other` for unknown paths. Faulted requests count too.
    pub fn requests(&self, method: &str, resource: &str) -> u64 {
        lock(&self.shared.state)
            .requests
            .get(&(method.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Every request counter.
    pub fn request_counts(&self) -> HashMap<(String, String), u64> {
        lock(&self.shared.state).requests.clone()
    }

    /// TCP connections accepted so far (connection reuse keeps this near the client's pool size).
    pub fn connections_accepted(&self) -> u64 {
        self.server.connections_accepted()
    }

    pub fn total_requests(&self) -> u64 {
        lock(&self.shared.state).requests.values().sum()
    }

    /// When each 429 of [`Faults::throttle_matching`] was answered, in order.
    pub fn throttled_at(&self) -> Vec<Instant> {
        lock(&self.shared.state).throttled.clone()
    }

    /// Successful creates, updates and deletes.
    pub fn writes(&self) -> u64 {
        lock(&self.shared.state).writes
    }

    /// Zero the request and write counters, keep the objects.
    pub fn reset_counters(&self) {
        let mut state = lock(&self.shared.state);
        state.requests.clear();
        state.writes = 0;
    }

    /// Forget every object and counter.
    pub fn reset(&self) {
        *lock(&self.shared.state) = State::default();
    }
}

impl Drop for HarfangLabSim {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn typed<T: serde::de::DeserializeOwned>(values: Vec<Value>) -> Vec<T> {
    values
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

/// An answer before it is written.
struct Reply {
    status: u16,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    fn detail(status: u16, text: &str) -> Reply {
        Reply::json(status, json!({ "detail": text }))
    }

    /// DRF field error: `{"<field>": ["<message>"]}`.
    fn field(field: &str, message: &str) -> Reply {
        let mut map = Map::new();
        map.insert(field.to_owned(), json!([message]));
        Reply::json(400, Value::Object(map))
    }

    fn not_found() -> Reply {
        Reply::detail(404, "Not found.")
    }

    fn header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }
}

fn handle(shared: &Shared, request: HttpRequest) -> HttpResponse {
    let method = request.method.to_ascii_uppercase();
    let reply = match std::str::from_utf8(&request.body) {
        Ok(body) => shared.route(&method, &request.url, request.header("authorization"), body),
        Err(_) => Reply::detail(400, "JSON parse error - the body is not UTF-8"),
    };
    let mut headers: Vec<(String, String)> = reply
        .headers
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    if reply.body.is_some() {
        headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
    }
    HttpResponse {
        status: reply.status,
        headers,
        body: reply
            .body
            .map(|b| b.to_string().into_bytes())
            .unwrap_or_default(),
    }
}

/// Split `a=1&b=x%20y` into decoded pairs.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Query parameters, first value wins.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn usize(&self, key: &str) -> Option<usize> {
        self.get(key).and_then(|v| v.parse().ok())
    }
}

impl Shared {
    fn base_url(&self) -> &str {
        self.base_url.get().map_or("", String::as_str)
    }

    fn route(&self, method: &str, url: &str, auth: Option<&str>, body: &str) -> Reply {
        let reply = self.route_and_apply(method, url, auth, body);
        let write = matches!(method, "POST" | "PATCH" | "PUT" | "DELETE");
        if write && (200..300).contains(&reply.status) {
            let rate = lock(&self.faults).lost_reply_rate;
            if rate > 0.0 && lock(&self.dice).f64() < rate {
                return Reply::detail(502, "Bad Gateway (simulated: applied, answer lost).");
            }
        }
        reply
    }

    fn route_and_apply(&self, method: &str, url: &str, auth: Option<&str>, body: &str) -> Reply {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let resource_label = resource_label(path);
        {
            let mut state = lock(&self.state);
            *state
                .requests
                .entry((method.to_owned(), resource_label.to_owned()))
                .or_insert(0) += 1;
        }
        if let Some(reply) = self.inject_faults(url, body) {
            return reply;
        }
        if path == "/api/version" || path == "/api/version/" {
            if self.config.version_requires_auth
                && let Some(reply) = self.check_auth(auth)
            {
                return reply;
            }
            return Reply::json(200, json!({ "version": self.config.version }));
        }
        let Some(rest) = path.strip_prefix(TI_PREFIX) else {
            return Reply::not_found();
        };
        if !rest.ends_with('/') && self.config.strict {
            // Django CommonMiddleware (APPEND_SLASH) runs before the view and its auth.
            let location = if query.is_empty() {
                format!("{path}/")
            } else {
                format!("{path}/?{query}")
            };
            return Reply {
                status: 301,
                body: None,
                headers: vec![("Location", location)],
            };
        }
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let (res, id) = match segments.as_slice() {
            [res] => (Res::parse(res), None),
            [res, id] => (Res::parse(res), Some(percent_decode(id))),
            _ => (None, None),
        };
        let Some(res) = res else {
            return Reply::not_found();
        };
        if let Some(reply) = self.check_auth(auth) {
            return reply;
        }
        let params = Params(parse_query(query));
        let mut state = lock(&self.state);
        match (method, id) {
            ("GET", None) => self.list(&state, res, path, &params),
            ("POST", None) => match parse_body(body) {
                Ok(obj) => self.create(&mut state, res, obj),
                Err(reply) => reply,
            },
            ("GET", Some(id)) => match state.table(res).get(&id) {
                Some(obj) => Reply::json(200, Value::Object(obj.clone())),
                None => Reply::not_found(),
            },
            ("PATCH" | "PUT", Some(id)) => match parse_body(body) {
                Ok(obj) => self.update(&mut state, res, &id, obj, method == "PUT"),
                Err(reply) => reply,
            },
            ("DELETE", Some(id)) => delete(&mut state, res, &id),
            (other, _) => Reply::detail(405, &format!("Method \"{other}\" not allowed.")),
        }
    }

    fn inject_faults(&self, url: &str, body: &str) -> Option<Reply> {
        let faults = lock(&self.faults).clone();
        let throttle = |faults: &Faults| {
            let reply = Reply::detail(429, "Request was throttled.");
            match faults.retry_after_secs {
                Some(s) => reply.header("Retry-After", s.to_string()),
                None => reply,
            }
        };
        if faults.hangup {
            return Some(Reply {
                status: http::HANGUP,
                body: None,
                headers: Vec::new(),
            });
        }
        if faults.down {
            return Some(Reply::detail(
                503,
                "Service unavailable (simulated outage).",
            ));
        }
        // Held through the latency: that is the time the request occupies the server.
        let _slot = match self.capacity.as_ref().map(Capacity::enter) {
            None => None,
            Some(Ok(slot)) => Some(slot),
            Some(Err(Refused::Closed)) => {
                return Some(Reply::detail(503, "Simulator shutting down."));
            }
            Some(Err(Refused::Overloaded)) => {
                let reply = Reply::detail(429, "Request was throttled (capacity).");
                return Some(
                    match self
                        .capacity
                        .as_ref()
                        .and_then(|c| c.limit().retry_after_secs)
                    {
                        Some(s) => reply.header("Retry-After", s.to_string()),
                        None => reply,
                    },
                );
            }
        };
        if !faults.latency.is_zero() {
            match self.stop_rx.recv_timeout(faults.latency) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    return Some(Reply::detail(503, "Simulator shutting down."));
                }
            }
        }
        if let Some(text) = &faults.throttle_matching
            && (url.contains(text.as_str()) || body.contains(text.as_str()))
        {
            lock(&self.state).throttled.push(Instant::now());
            return Some(throttle(&faults));
        }
        if faults.throttle_rate <= 0.0 && faults.error_rate <= 0.0 {
            return None;
        }
        let roll = lock(&self.dice).f64();
        if roll < faults.throttle_rate {
            return Some(throttle(&faults));
        }
        if roll < faults.throttle_rate + faults.error_rate {
            return Some(Reply::detail(500, "Internal Server Error (simulated)."));
        }
        None
    }

    /// DRF TokenAuthentication wording (INFERRED, §1).
    fn check_auth(&self, auth: Option<&str>) -> Option<Reply> {
        let token = match auth.map(str::trim) {
            None | Some("") => {
                return Some(Reply::detail(
                    401,
                    "Authentication credentials were not provided.",
                ));
            }
            Some(h) => match h.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("token") => token.trim(),
                _ => {
                    return Some(Reply::detail(
                        401,
                        "Authentication credentials were not provided.",
                    ));
                }
            },
        };
        if token == self.config.token {
            None
        } else if self.config.forbidden_tokens.iter().any(|t| t == token) {
            Some(Reply::detail(
                403,
                "You do not have permission to perform this action.",
            ))
        } else {
            Some(Reply::detail(401, "Invalid token."))
        }
    }

    fn list(&self, state: &State, res: Res, path: &str, params: &Params) -> Reply {
        let limit = params
            .usize("limit")
            .filter(|l| *l > 0)
            .unwrap_or(self.config.default_page_size)
            .min(self.config.max_page_size)
            .max(1);
        let offset = params.usize("offset").unwrap_or(0);
        let table = state.table(res);
        let matches: Vec<&Map<String, Value>> = match ioc_fast_path(state, res, params) {
            Some(hit) => hit.into_iter().collect(),
            None => table
                .rows
                .values()
                .filter(|obj| matches_filters(res, obj, params))
                .collect(),
        };
        let count = matches.len();
        let results: Vec<Value> = matches
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|m| Value::Object(m.clone()))
            .collect();
        let next =
            (offset + limit < count).then(|| self.page_url(path, params, limit, offset + limit));
        let previous =
            (offset > 0).then(|| self.page_url(path, params, limit, offset.saturating_sub(limit)));
        Reply::json(
            200,
            json!({ "count": count, "next": next, "previous": previous, "results": results }),
        )
    }

    fn page_url(&self, path: &str, params: &Params, limit: usize, offset: usize) -> String {
        let mut query: Vec<String> = params
            .0
            .iter()
            .filter(|(k, _)| k != "limit" && k != "offset")
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect();
        query.push(format!("limit={limit}"));
        query.push(format!("offset={offset}"));
        let relative = format!("{path}?{}", query.join("&"));
        if self.config.absolute_next {
            format!("{}{relative}", self.base_url())
        } else {
            relative
        }
    }

    fn create(&self, state: &mut State, res: Res, body: Map<String, Value>) -> Reply {
        let now = timestamp(SystemTime::now());
        match res {
            Res::IocSource | Res::SigmaSource | Res::YaraSource => {
                let name = match required_str(&body, "name") {
                    Ok(n) => n,
                    Err(reply) => return reply,
                };
                if let Some(reply) = source_name_taken(state, res, &name, None) {
                    return reply;
                }
                let id = uuid::Uuid::new_v4().to_string();
                let mut obj = Map::new();
                obj.insert("id".into(), json!(id));
                obj.insert("name".into(), json!(name));
                obj.insert("description".into(), json!(""));
                obj.insert("enabled".into(), json!(true));
                obj.insert("creation_date".into(), json!(now));
                obj.insert("last_update".into(), json!(now));
                if let Some(reply) = merge_writable(res, &mut obj, &body) {
                    return reply;
                }
                state.insert(res, id, obj.clone());
                state.writes += 1;
                Reply::json(201, Value::Object(obj))
            }
            Res::IocRule => {
                let id = uuid::Uuid::new_v4().to_string();
                let mut obj = Map::new();
                for (k, v) in [
                    ("id", json!(id)),
                    ("source_id", Value::Null),
                    ("source", Value::Null),
                    ("type", Value::Null),
                    ("value", Value::Null),
                    ("description", Value::Null),
                    ("comment", Value::Null),
                    ("info", Value::Null),
                    ("category", Value::Null),
                    ("references", json!([])),
                    ("enabled", json!(true)),
                    ("hl_status", json!("stable")),
                    ("hl_testing_start_time", json!(now)),
                    ("global_state", json!("alert")),
                    ("block_on_agent", json!(false)),
                    ("quarantine_on_agent", json!(false)),
                    ("endpoint_detection", json!(false)),
                    ("silent", json!(false)),
                    ("rule_level", Value::Null),
                    ("rule_level_override", Value::Null),
                    ("rule_confidence_override", Value::Null),
                    ("alert_count", json!(0)),
                    ("creation_date", json!(now)),
                    ("last_update", json!(now)),
                ] {
                    obj.insert(k.to_owned(), v);
                }
                for field in ["source_id", "type", "value"] {
                    if let Err(reply) = required_str(&body, field) {
                        return reply;
                    }
                }
                if let Some(reply) = merge_writable(res, &mut obj, &body) {
                    return reply;
                }
                if let Some(reply) = self.validate_ioc(state, &obj, None) {
                    return reply;
                }
                state.ioc_unique.insert(ioc_key(&obj), id.clone());
                state.insert(res, id, obj.clone());
                state.writes += 1;
                Reply::json(201, Value::Object(obj))
            }
            Res::SigmaRule | Res::YaraFile => self.import_rule(state, res, body, now),
        }
    }

    /// Sigma/Yara create: HTTP 200 with the batch-import envelope (§6.1).
    fn import_rule(
        &self,
        state: &mut State,
        res: Res,
        body: Map<String, Value>,
        now: String,
    ) -> Reply {
        for field in ["source_id", "name", "content"] {
            if let Err(reply) = required_str(&body, field) {
                return reply;
            }
        }
        // Serializer validation (400) comes before the import itself (envelope).
        if let Some(reply) = validate_rule(state, res, &body) {
            return reply;
        }
        let name = str_of(&body, "name").to_owned();
        let content = str_of(&body, "content").to_owned();
        let overwrite = body
            .get("overwrite")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let failed = |message: String| {
            Reply::json(
                200,
                json!({ "status": [{ "status": false, "code": 400, "filename": name, "content": message }] }),
            )
        };
        let parsed = match parse_rule(res, &content) {
            Ok(p) => p,
            Err(message) => return failed(message),
        };
        let mut replaced: Option<Map<String, Value>> = None;
        let clash = match res {
            Res::YaraFile => self.yara_clash(state, &body, &content, None),
            _ => None,
        };
        let id = match (&parsed.id, clash) {
            (_, Some((clash_id, clash_name))) => {
                if !overwrite {
                    return failed(format!(
                        "Duplicate rule: a yara rule of the file {clash_name:?} already exists in this source."
                    ));
                }
                replaced = state.table_mut(res).remove(&clash_id);
                clash_id
            }
            (parsed_id, None) => match parsed_id {
                Some(id) if state.table(res).get(id).is_some() => {
                    if !overwrite {
                        return failed(format!(
                            "{} with this id ({id}) already exists.",
                            capitalised(res.noun())
                        ));
                    }
                    replaced = state.table_mut(res).remove(id);
                    id.clone()
                }
                Some(id) => id.clone(),
                None => uuid::Uuid::new_v4().to_string(),
            },
        };
        let creation = replaced
            .as_ref()
            .and_then(|o| o.get("creation_date").cloned())
            .unwrap_or_else(|| json!(now));
        let mut obj = Map::new();
        for (k, v) in [
            ("id", json!(id)),
            ("source_id", Value::Null),
            ("source", Value::Null),
            ("name", Value::Null),
            ("content", Value::Null),
            ("enabled", json!(true)),
            ("hl_status", json!("stable")),
            ("global_state", json!("alert")),
            ("block_on_agent", json!(false)),
            ("quarantine_on_agent", json!(false)),
            ("rule_level_override", Value::Null),
            ("rule_confidence_override", Value::Null),
            ("creation_date", creation),
            ("last_update", json!(now)),
        ] {
            obj.insert(k.to_owned(), v);
        }
        if let Some(reply) = merge_writable(res, &mut obj, &body) {
            if let Some(old) = replaced {
                state.insert(res, id, old);
            }
            return reply;
        }
        if let Some(reply) = validate_rule(state, res, &obj) {
            if let Some(old) = replaced {
                state.insert(res, id, old);
            }
            return reply;
        }
        apply_parsed(res, &mut obj, &parsed);
        let code = if replaced.is_some() { 200 } else { 201 };
        state.insert(res, id.clone(), obj);
        state.writes += 1;
        Reply::json(
            200,
            json!({ "status": [{ "status": true, "code": code, "id": id, "filename": name, "content": content }] }),
        )
    }

    fn update(
        &self,
        state: &mut State,
        res: Res,
        id: &str,
        body: Map<String, Value>,
        put: bool,
    ) -> Reply {
        let Some(current) = state.table(res).get(id).cloned() else {
            return Reply::not_found();
        };
        if put {
            let required: &[&str] = match res {
                Res::IocRule => &["source_id", "type", "value"],
                Res::SigmaRule | Res::YaraFile => &["source_id", "name", "content"],
                _ => &["name"],
            };
            for field in required {
                if let Err(reply) = required_str(&body, field) {
                    return reply;
                }
            }
        }
        let mut obj = current.clone();
        if let Some(reply) = merge_writable(res, &mut obj, &body) {
            return reply;
        }
        match res {
            Res::IocSource | Res::SigmaSource | Res::YaraSource => {
                if let Some(reply) = source_name_taken(state, res, str_of(&obj, "name"), Some(id)) {
                    return reply;
                }
            }
            Res::IocRule => {
                if let Some(reply) = self.validate_ioc(state, &obj, Some(id)) {
                    return reply;
                }
                state.ioc_unique.remove(&ioc_key(&current));
                state.ioc_unique.insert(ioc_key(&obj), id.to_owned());
            }
            Res::SigmaRule | Res::YaraFile => {
                if let Some(reply) = validate_rule(state, res, &obj) {
                    return reply;
                }
                let parsed = match parse_rule(res, str_of(&obj, "content")) {
                    Ok(p) => p,
                    Err(message) => return Reply::field("content", &message),
                };
                if res == Res::YaraFile
                    && let Some((_, clash_name)) =
                        self.yara_clash(state, &obj, str_of(&obj, "content"), Some(id))
                {
                    return Reply::field(
                        "content",
                        &format!(
                            "Duplicate rule: a yara rule of the file {clash_name:?} already exists in this source."
                        ),
                    );
                }
                if res == Res::SigmaRule && parsed.id.as_deref().is_some_and(|new| new != id) {
                    return Reply::field(
                        "content",
                        "The id of a Sigma rule cannot be modified once the rule has been created.",
                    );
                }
                apply_parsed(res, &mut obj, &parsed);
            }
        }
        obj.insert("last_update".into(), json!(timestamp(SystemTime::now())));
        if let Some(slot) = state.table_mut(res).get_mut(id) {
            *slot = obj.clone();
        }
        state.writes += 1;
        Reply::json(200, Value::Object(obj))
    }

    /// The (id, name) of another Yara file of `obj`'s source list that declares one of the
    /// `meta.id`s of `content` (or, with `unique_yara_rule_names`, one of its rule identifiers).
    fn yara_clash(
        &self,
        state: &State,
        obj: &Map<String, Value>,
        content: &str,
        own_id: Option<&str>,
    ) -> Option<(String, String)> {
        let source_id = str_of(obj, "source_id");
        state
            .table(Res::YaraFile)
            .rows
            .values()
            .filter(|other| {
                Some(str_of(other, "id")) != own_id && str_of(other, "source_id") == source_id
            })
            // The same rule as the in-memory fake's.
            .find(|other| {
                crate::sync::content::yara_files_clash(
                    content,
                    str_of(other, "content"),
                    self.config.unique_yara_rule_names,
                )
            })
            .map(|other| {
                (
                    str_of(other, "id").to_owned(),
                    str_of(other, "name").to_owned(),
                )
            })
    }

    /// Type and value checks plus (type, value, source) uniqueness (§5.5, §7).
    fn validate_ioc(
        &self,
        state: &State,
        obj: &Map<String, Value>,
        own_id: Option<&str>,
    ) -> Option<Reply> {
        let source_id = str_of(obj, "source_id");
        if state.table(Res::IocSource).get(source_id).is_none() {
            return Some(Reply::field(
                "source_id",
                &format!("Invalid pk \"{source_id}\" - object does not exist."),
            ));
        }
        let ioc_type = str_of(obj, "type");
        let value = str_of(obj, "value");
        if let Err(message) = validate_ioc_value(&self.config, ioc_type, value) {
            let field = if message.contains("valid choice") {
                "type"
            } else {
                "value"
            };
            return Some(Reply::field(field, &message));
        }
        match state.ioc_unique.get(&ioc_key(obj)) {
            Some(other) if Some(other.as_str()) != own_id => Some(Reply::json(
                400,
                json!({ "__all__": ["['Ioc rule with this Type, Value and Source already exists.']"] }),
            )),
            _ => None,
        }
    }
}

fn delete(state: &mut State, res: Res, id: &str) -> Reply {
    let Some(obj) = state.table_mut(res).remove(id) else {
        return Reply::not_found();
    };
    if res == Res::IocRule {
        state.ioc_unique.remove(&ioc_key(&obj));
    }
    if res.is_source() {
        // The rules' foreign key cascades, as a Django model would.
        for rule in [Res::IocRule, Res::SigmaRule, Res::YaraFile] {
            if rule.source() != res {
                continue;
            }
            let doomed: Vec<String> = state
                .table(rule)
                .rows
                .values()
                .filter(|o| str_of(o, "source_id") == id)
                .map(|o| str_of(o, "id").to_owned())
                .collect();
            for rid in doomed {
                if let Some(o) = state.table_mut(rule).remove(&rid)
                    && rule == Res::IocRule
                {
                    state.ioc_unique.remove(&ioc_key(&o));
                }
            }
        }
    }
    state.writes += 1;
    Reply {
        status: 204,
        body: None,
        headers: Vec::new(),
    }
}

fn resource_label(path: &str) -> &str {
    if path.trim_end_matches('/') == "/api/version" {
        return "version";
    }
    path.strip_prefix(TI_PREFIX)
        .and_then(|rest| rest.split('/').find(|s| !s.is_empty()))
        .and_then(Res::parse)
        .map_or("other", Res::name)
}

fn parse_body(body: &str) -> Result<Map<String, Value>, Reply> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Reply::json(
            400,
            json!({ "non_field_errors": ["Invalid data. Expected a dictionary."] }),
        )),
        Err(e) => Err(Reply::detail(400, &format!("JSON parse error - {e}"))),
    }
}

fn str_of<'a>(obj: &'a Map<String, Value>, key: &str) -> &'a str {
    obj.get(key).and_then(Value::as_str).unwrap_or("")
}

fn required_str(body: &Map<String, Value>, field: &str) -> Result<String, Reply> {
    match body.get(field) {
        None | Some(Value::Null) => Err(Reply::field(field, "This field is required.")),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(Reply::field(field, "This field may not be blank."))
        }
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Reply::field(field, "Not a valid string.")),
    }
}

/// Copy the client-writable fields of `body` into `obj`, type-checking the ones we know.
/// Server-side fields (`id`, dates, `source`, parsed rule names) are never taken from clients.
fn merge_writable(
    res: Res,
    obj: &mut Map<String, Value>,
    body: &Map<String, Value>,
) -> Option<Reply> {
    const SERVER_SIDE: &[&str] = &[
        "id",
        "source",
        "creation_date",
        "last_update",
        "rule_name",
        "rule_names",
        "rule_technique_tags",
        "overwrite",
        "alert_count",
        "hl_testing_start_time",
    ];
    for (key, value) in body {
        if SERVER_SIDE.contains(&key.as_str()) {
            continue;
        }
        match key.as_str() {
            "enabled"
            | "block_on_agent"
            | "quarantine_on_agent"
            | "endpoint_detection"
            | "silent"
                if !value.is_boolean() =>
            {
                return Some(Reply::field(key, "Must be a valid boolean."));
            }
            "hl_status"
                if !matches!(value.as_str(), Some("stable" | "testing" | "experimental")) =>
            {
                return Some(Reply::field(
                    key,
                    &format!("{value} is not a valid choice."),
                ));
            }
            "global_state"
                if !matches!(
                    value.as_str(),
                    Some("alert" | "backend_alert" | "block" | "disabled" | "quarantine")
                ) =>
            {
                return Some(Reply::field(
                    key,
                    &format!("{value} is not a valid choice."),
                ));
            }
            "name"
                if !res.is_source() && value.as_str().is_some_and(|n| n.chars().count() > 100) =>
            {
                return Some(Reply::field(
                    key,
                    "Ensure this field has no more than 100 characters.",
                ));
            }
            _ => {}
        }
        obj.insert(key.clone(), value.clone());
    }
    if !res.is_source() {
        let source = obj.get("source_id").cloned().unwrap_or(Value::Null);
        obj.insert("source".into(), source);
    }
    None
}

fn source_name_taken(state: &State, res: Res, name: &str, own_id: Option<&str>) -> Option<Reply> {
    let taken = state
        .table(res)
        .rows
        .values()
        .any(|o| str_of(o, "name") == name && Some(str_of(o, "id")) != own_id);
    taken.then(|| {
        Reply::field(
            "name",
            &format!("{} with this name already exists.", res.noun()),
        )
    })
}

fn validate_rule(state: &State, res: Res, obj: &Map<String, Value>) -> Option<Reply> {
    let source_id = str_of(obj, "source_id");
    if state.table(res.source()).get(source_id).is_none() {
        return Some(Reply::field(
            "source_id",
            &format!("Invalid pk \"{source_id}\" - object does not exist."),
        ));
    }
    let name = str_of(obj, "name");
    if name.is_empty() {
        return Some(Reply::field("name", "This field may not be blank."));
    }
    if name.chars().count() > 100 {
        return Some(Reply::field(
            "name",
            "Ensure this field has no more than 100 characters.",
        ));
    }
    if str_of(obj, "content").trim().is_empty() {
        return Some(Reply::field("content", "This field may not be blank."));
    }
    None
}

fn ioc_key(obj: &Map<String, Value>) -> (String, String, String) {
    let ioc_type = str_of(obj, "type");
    let value = str_of(obj, "value");
    let value = if ioc_type == "hash" {
        value.to_ascii_lowercase()
    } else {
        value.to_owned()
    };
    (
        str_of(obj, "source_id").to_owned(),
        ioc_type.to_owned(),
        value,
    )
}

/// `GET IOCRule/?source_id=&type=&value__exact=` through the uniqueness index (the connector's
/// hot lookup), when no other filter could change the answer.
fn ioc_fast_path<'a>(
    state: &'a State,
    res: Res,
    params: &Params,
) -> Option<Option<&'a Map<String, Value>>> {
    if res != Res::IocRule || params.get("search").is_some() {
        return None;
    }
    let source_id = params.get("source_id")?;
    let ioc_type = params.get("type")?;
    let value = params.get("value__exact").or_else(|| params.get("value"))?;
    let value = if ioc_type == "hash" {
        value.to_ascii_lowercase()
    } else {
        value.to_owned()
    };
    let id = state
        .ioc_unique
        .get(&(source_id.to_owned(), ioc_type.to_owned(), value));
    let hit = id.and_then(|id| state.table(res).get(id));
    // The index is case-insensitive for hashes; `value__exact` is not.
    Some(hit.filter(|o| matches_filters(res, o, params)))
}

/// django-filter semantics: listed lookups filter, unknown parameters are ignored (§3).
fn matches_filters(res: Res, obj: &Map<String, Value>, params: &Params) -> bool {
    let field = |k: &str| str_of(obj, k);
    let contains = |hay: &str, needle: &str| hay.to_lowercase().contains(&needle.to_lowercase());
    for (key, want) in &params.0 {
        let ok = match (res, key.as_str()) {
            (_, "name__exact") | (_, "name") => field("name") == want,
            (r, "search") if r.is_source() => contains(field("name"), want),
            (Res::IocRule, "source_id") | (Res::SigmaRule | Res::YaraFile, "source_id") => {
                field("source_id") == want
            }
            (Res::IocRule, "type") => field("type") == want,
            (Res::IocRule, "value__exact") | (Res::IocRule, "value") => field("value") == want,
            (Res::IocRule, "search") => {
                contains(field("value"), want)
                    || contains(field("comment"), want)
                    || contains(field("description"), want)
            }
            (Res::SigmaRule | Res::YaraFile, "rule_name__exact" | "rule_name") => {
                field("rule_name") == want || rule_names(obj).any(|n| n == want)
            }
            (Res::SigmaRule | Res::YaraFile, "search") => {
                contains(field("name"), want)
                    || contains(field("rule_name"), want)
                    || rule_names(obj).any(|n| contains(n, want))
            }
            _ => true,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn rule_names(obj: &Map<String, Value>) -> impl Iterator<Item = &str> {
    obj.get("rule_names")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// Per-type value validation (§5.5; messages INFERRED).
fn validate_ioc_value(config: &SimConfig, ioc_type: &str, value: &str) -> Result<(), String> {
    let value = value.trim();
    match ioc_type {
        "hash" => {
            let len_ok =
                matches!(value.len(), 32 | 40 | 64) || (config.accept_sha512 && value.len() == 128);
            if len_ok && value.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(())
            } else {
                Err("Enter a valid MD5, SHA-1 or SHA-256 hash.".to_owned())
            }
        }
        "ip_both" | "ip_src" | "ip_dst" => {
            let ok = match value.split_once('/') {
                None => value.parse::<IpAddr>().is_ok(),
                Some((ip, bits)) if config.accept_cidr => {
                    match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
                        (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
                        (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
                        _ => false,
                    }
                }
                Some(_) => false,
            };
            if ok {
                Ok(())
            } else {
                Err("Enter a valid IPv4 or IPv6 address.".to_owned())
            }
        }
        "domain_name" => {
            let labels_ok = value.len() <= 253
                && value.trim_end_matches('.').split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b >= 0x80
                        })
                });
            if labels_ok && !value.is_empty() {
                Ok(())
            } else {
                Err("Enter a valid domain name.".to_owned())
            }
        }
        "url" | "filename" | "filepath" => {
            if value.is_empty() {
                Err("This field may not be blank.".to_owned())
            } else {
                Ok(())
            }
        }
        other => Err(format!("\"{other}\" is not a valid choice.")),
    }
}

/// What the server derives from a rule's content.
struct ParsedRule {
    /// Sigma `id` when it is a UUID (then the object id).
    id: Option<String>,
    rule_name: Option<String>,
    rule_names: Vec<String>,
    tags: Vec<String>,
}

fn parse_rule(res: Res, content: &str) -> Result<ParsedRule, String> {
    if res == Res::SigmaRule {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(content).map_err(|e| format!("Invalid Sigma rule: {e}"))?;
        let map = doc
            .as_mapping()
            .ok_or_else(|| "Invalid Sigma rule: not a YAML mapping".to_owned())?;
        let title = map
            .get("title")
            .and_then(serde_yaml::Value::as_str)
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| "Invalid Sigma rule: missing title".to_owned())?;
        // The same rule as the in-memory fake's.
        let id = crate::sync::content::sigma_object_id(content);
        let tags = map
            .get("tags")
            .and_then(serde_yaml::Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(serde_yaml::Value::as_str)
            .filter(|t| t.starts_with("attack.t"))
            .map(str::to_owned)
            .collect();
        Ok(ParsedRule {
            id,
            rule_name: Some(title.to_owned()),
            rule_names: Vec::new(),
            tags,
        })
    } else {
        let names = yara_rule_names(content);
        if names.is_empty() {
            return Err("Invalid YARA file: no rule found".to_owned());
        }
        Ok(ParsedRule {
            id: None,
            rule_name: None,
            rule_names: names,
            tags: Vec::new(),
        })
    }
}

fn apply_parsed(res: Res, obj: &mut Map<String, Value>, parsed: &ParsedRule) {
    if res == Res::SigmaRule {
        obj.insert("rule_name".into(), json!(parsed.rule_name));
    } else {
        obj.insert("rule_names".into(), json!(parsed.rule_names));
    }
    obj.insert("rule_technique_tags".into(), json!(parsed.tags));
}

/// Names of the `rule <ident>` declarations of a YARA file, skipping comments and strings.
/// A simple scan, not a parser: the server's real check is stricter.
pub fn yara_rule_names(content: &str) -> Vec<String> {
    let bytes = content.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut names = Vec::new();
    let mut i = 0;
    let mut expect_name = false;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if b == b'/' && bytes.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                i += 1;
            }
            i += 2;
        } else if b == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            expect_name = false;
        } else if is_ident(b) && !b.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            let word = &content[start..i];
            if expect_name {
                names.push(word.to_owned());
                expect_name = false;
            } else if word == "rule" {
                expect_name = true;
            }
        } else {
            if !b.is_ascii_whitespace() {
                expect_name = false;
            }
            i += 1;
        }
    }
    names
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// ISO-8601 UTC with microseconds and `Z`, as the real server writes dates (§5.4).
fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_its_capacity_and_queue_the_server_answers_429_with_retry_after() {
        let sim = serve(
            "127.0.0.1:0",
            SimConfig {
                capacity: Some(CapacityLimit {
                    concurrent: 1,
                    queue: 0,
                    retry_after_secs: Some(3),
                }),
                ..SimConfig::default()
            },
        )
        .unwrap();
        let path = format!("{TI_PREFIX}/IOCRule/");
        let get = || sim.shared.route("GET", &path, Some("Token sim-token"), "");
        let busy = sim.shared.capacity.as_ref().unwrap().enter().unwrap();
        let reply = get();
        assert_eq!(reply.status, 429);
        assert_eq!(reply.headers, vec![("Retry-After", "3".to_owned())]);
        assert_eq!(sim.capacity_refusals(), 1);
        drop(busy);
        assert_eq!(get().status, 200);
        sim.shutdown();
        assert_eq!(get().status, 503, "closed: shutting down");
    }

    #[test]
    fn timestamps_are_iso_with_micros() {
        let t = UNIX_EPOCH + Duration::from_micros(1_729_767_122_639_129);
        assert_eq!(timestamp(t), "2024-10-24T10:52:02.639129Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn yara_names_skip_comments_and_strings() {
        let src = r#"
import "pe"
// rule commented_out
/* rule also_not */
private rule First : tag { strings: $a = "rule fake" condition: $a }
global rule Second_2 { condition: First }
rule
  Third { condition: true }
"#;
        assert_eq!(yara_rule_names(src), vec!["First", "Second_2", "Third"]);
        assert!(yara_rule_names("not yara at all").is_empty());
        assert!(yara_rule_names("rule").is_empty());
        assert!(yara_rule_names("\"unterminated").is_empty());
        assert!(yara_rule_names("/* unterminated").is_empty());
    }

    #[test]
    fn query_strings_decode() {
        assert_eq!(
            parse_query("a=1&b=x%20y+z&c&d=%zz"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("c".into(), "".into()),
                ("d".into(), "%zz".into())
            ]
        );
        assert_eq!(percent_decode("%E2%82%AC%"), "€%");
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");
    }

    #[test]
    fn ioc_values_are_validated_per_type() {
        let cfg = SimConfig::default();
        let strict = SimConfig {
            accept_sha512: false,
            accept_cidr: false,
            ..SimConfig::default()
        };
        assert!(validate_ioc_value(&cfg, "hash", &"a".repeat(64)).is_ok());
        assert!(validate_ioc_value(&cfg, "hash", &"A".repeat(32)).is_ok());
        assert!(validate_ioc_value(&cfg, "hash", &"a".repeat(33)).is_err());
        assert!(validate_ioc_value(&cfg, "hash", &"g".repeat(40)).is_err());
        assert!(validate_ioc_value(&cfg, "hash", &"a".repeat(128)).is_ok());
        assert!(validate_ioc_value(&strict, "hash", &"a".repeat(128)).is_err());
        assert!(validate_ioc_value(&cfg, "ip_both", "10.0.0.0/8").is_ok());
        assert!(validate_ioc_value(&strict, "ip_both", "10.0.0.0/8").is_err());
        assert!(validate_ioc_value(&cfg, "ip_src", "2001:db8::1").is_ok());
        assert!(validate_ioc_value(&cfg, "ip_dst", "999.1.1.1").is_err());
        assert!(validate_ioc_value(&cfg, "domain_name", "evil.example.com").is_ok());
        assert!(validate_ioc_value(&cfg, "domain_name", "evil..com").is_err());
        assert!(validate_ioc_value(&cfg, "domain_name", "has space.com").is_err());
        assert!(validate_ioc_value(&cfg, "url", "").is_err());
        assert!(validate_ioc_value(&cfg, "hostname", "x").is_err());
    }

    #[test]
    fn sigma_content_is_parsed() {
        let p = parse_rule(
            Res::SigmaRule,
            "title: Test\nid: 5C6B4A0E-6E4C-4F0B-9D1A-2B3C4D5E6F70\ntags: [attack.t1059.001, cve.2021]\n",
        )
        .unwrap();
        assert_eq!(p.rule_name.as_deref(), Some("Test"));
        assert_eq!(
            p.id.as_deref(),
            Some("5c6b4a0e-6e4c-4f0b-9d1a-2b3c4d5e6f70")
        );
        assert_eq!(p.tags, vec!["attack.t1059.001"]);
        assert!(
            parse_rule(Res::SigmaRule, "id: not-a-uuid\ntitle: T")
                .unwrap()
                .id
                .is_none()
        );
        assert!(parse_rule(Res::SigmaRule, "detection: {}").is_err());
        assert!(parse_rule(Res::SigmaRule, "[1, 2]").is_err());
        assert!(parse_rule(Res::SigmaRule, ": : :").is_err());
    }
}
