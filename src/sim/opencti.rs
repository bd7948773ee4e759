//! OpenCTI simulator for tests and demos: the live stream (`GET /stream/<id>`) and the GraphQL
//! calls the connector makes (`about`, `registerConnector`, `pingConnector`, `indicator`).
//!
//! Owns a scenario of stream events (JSON Lines, see [`parse_scenario`]) with ids `<ms>-<seq>`
//! assigned in increasing order, and fault injection per stream connection (HTTP status, drop,
//! stall, per-event delay) plus runtime appends. It answers like the platform where it matters to
//! the connector (opencti-protocol.md §1.2, §1.5, §1.6, §3, §4): `connected` first without id,
//! resume strictly after `Last-Event-ID` / `from`, heartbeats carrying the last id, 401 for a bad
//! token or an unknown stream id, gzip when asked, reset-on-next-ping exactly as §3.4; a `merge`
//! event deletes its sources and moves their relationships to the target for the GraphQL reads
//! that follow (as `mergeEntities` does). The GraphQL side takes a platform version and refuses
//! what that release's schema lacks exactly as the real server does (HTTP 200, `errors` with
//! `extensions.code`, no `data`; see `opencti_schema`).
//!
//! It is a small hand-written HTTP/1.1 server on `std::net` (one request per connection,
//! `Connection: close`), not tiny_http: an SSE body must be written unbuffered and the simulator
//! must be able to close or stall a single connection on demand, which tiny_http's chunked
//! response writer (buffers 8 KiB) and its keep-alive connection handling do not allow.
//! Loopback only; never exposed by the product.

use super::opencti_schema::{Rejection, Schema};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// One scenario line: an SSE event name and the envelope sent as `data`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScenarioEvent {
    pub event: String,
    pub data: Value,
}

/// Parse JSON Lines: each line `{"event": "...", "data": {envelope}}` or a bare envelope (its
/// `type` is then the event name). Blank lines and lines starting with `#` or `//` are skipped.
pub fn parse_scenario(text: &str) -> Result<Vec<ScenarioEvent>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("//") {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        let is_wrapped = v.get("event").is_some_and(Value::is_string) && v.get("data").is_some();
        if is_wrapped {
            out.push(ScenarioEvent {
                event: v["event"].as_str().unwrap_or_default().to_owned(),
                data: v["data"].clone(),
            });
        } else {
            let event = v
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("line {}: no `event` and no envelope `type`", n + 1))?
                .to_owned();
            out.push(ScenarioEvent { event, data: v });
        }
    }
    Ok(out)
}

/// Read a JSON Lines scenario file.
pub fn load_scenario(path: &Path) -> Result<Vec<ScenarioEvent>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_scenario(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// What the next stream connection does (queued with [`OpenCtiSim::push_faults`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnFault {
    /// Behave normally.
    None,
    /// Answer this HTTP status (410, 401, 500, ...) instead of streaming.
    Status(u16),
    /// Answer 429 with `Retry-After: <seconds>` instead of streaming.
    Throttled(u64),
    /// Close the connection after this many events.
    DropAfter(usize),
    /// Stop sending any byte (heartbeats included) after this many events.
    StallAfter(usize),
}

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct OpenCtiSimConfig {
    /// Accepted Bearer token.
    pub token: String,
    /// Accepted stream id (other ids get 401, like the platform).
    pub stream_id: String,
    /// `about { version }`, and the release whose schema the GraphQL answers follow.
    pub version: String,
    /// Input fields, arguments or types this platform lacks on top of what its release lacks
    /// (a platform the connector's version table is wrong about).
    pub lacks: Vec<String>,
    /// Heartbeat period (platform: 5 s; tests use short ones).
    pub heartbeat: Duration,
    /// Epoch ms of the first event id.
    pub base_ms: u64,
    pub scenario: Vec<ScenarioEvent>,
    /// Answer a `recover` request with a `no-recover` event (recent platforms, §8).
    pub no_recover: bool,
    /// Recovery mode (§1.3): a connection that starts before its `recover` date first gets the
    /// current state of every indicator and `based-on` relationship as synthetic `create`s
    /// (ids `<ms of its last event>-0`, in that order), then the events appended after the
    /// connection; idle heartbeats carry at least `<recover ms>-0`, and later appended events
    /// get ids after the recover date, as the platform's tail does. Off: `recover` is ignored
    /// and the log is replayed (what the tests of the live path expect).
    pub recover_mode: bool,
}

impl Default for OpenCtiSimConfig {
    fn default() -> Self {
        OpenCtiSimConfig {
            token: "sim-token".into(),
            stream_id: "live".into(),
            version: "6.8.10".into(),
            lacks: Vec::new(),
            heartbeat: Duration::from_millis(200),
            base_ms: 1_718_445_600_000,
            scenario: Vec::new(),
            no_recover: false,
            recover_mode: false,
        }
    }
}

/// A stream request as received (for assertions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRequest {
    pub path: String,
    pub query: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Status answered.
    pub status: u16,
}

impl StreamRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Inner {
    events: Vec<(String, ScenarioEvent)>,
    /// Id (indicator internal / standard id, `based-on` source refs) → indices of the events
    /// naming it, so an `indicator(id)` answer reads only the events that matter instead of
    /// replaying the whole scenario under the lock (O(events) per call made benchmarks measure
    /// the simulator).
    by_id: HashMap<String, Vec<usize>>,
    /// Each event's SSE frame, rendered once.
    wire: Vec<Arc<str>>,
    next_ms: u64,
    faults: VecDeque<ConnFault>,
    drop_every: Option<usize>,
    event_delay: Duration,
    /// Highest scenario index written to any stream connection (+1).
    delivered: usize,
    requests: Vec<StreamRequest>,
    registered: Vec<Value>,
    states: HashMap<String, String>,
    reset_pending: HashMap<String, bool>,
    ping_count: u64,
    graphql: Vec<Value>,
    /// GraphQL errors answered because the schema lacks what a request named.
    rejected: Vec<Value>,
}

struct Shared {
    cfg: OpenCtiSimConfig,
    schema: Schema,
    inner: Mutex<Inner>,
    changed: Condvar,
    stop: AtomicBool,
    accepted: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running simulator. Dropping it shuts it down.
pub struct OpenCtiSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

/// Start the simulator on `bind` (use `127.0.0.1:0`).
pub fn serve(bind: &str, cfg: OpenCtiSimConfig) -> io::Result<OpenCtiSim> {
    let listener = TcpListener::bind(bind)?;
    let addr = listener.local_addr()?;
    let mut inner = Inner {
        events: Vec::new(),
        by_id: HashMap::new(),
        wire: Vec::new(),
        next_ms: cfg.base_ms,
        faults: VecDeque::new(),
        drop_every: None,
        event_delay: Duration::ZERO,
        delivered: 0,
        requests: Vec::new(),
        registered: Vec::new(),
        states: HashMap::new(),
        reset_pending: HashMap::new(),
        ping_count: 0,
        graphql: Vec::new(),
        rejected: Vec::new(),
    };
    for ev in &cfg.scenario {
        let id = next_id(&mut inner);
        inner.wire.push(render(&id, ev));
        inner.events.push((id, ev.clone()));
        index_last(&mut inner);
    }
    let shared = Arc::new(Shared {
        schema: Schema::new(&cfg.version, &cfg.lacks),
        cfg,
        inner: Mutex::new(inner),
        changed: Condvar::new(),
        stop: AtomicBool::new(false),
        accepted: AtomicU64::new(0),
    });
    let acceptor = {
        let shared = shared.clone();
        thread::Builder::new()
            .name("octi-sim".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                    let shared = shared.clone();
                    let _ = thread::Builder::new()
                        .name("octi-sim-conn".into())
                        .spawn(move || {
                            let _ = handle_conn(&shared, conn);
                        });
                }
            })?
    };
    Ok(OpenCtiSim {
        addr,
        shared,
        acceptor: Some(acceptor),
    })
}

fn render(id: &str, ev: &ScenarioEvent) -> Arc<str> {
    format!("id: {id}\nevent: {}\ndata: {}\n\n", ev.event, ev.data).into()
}

/// Ids `<ms>-<seq>`: two events per millisecond so both parts of the id vary.
fn next_id(inner: &mut Inner) -> String {
    let n = inner.events.len() as u64;
    let id = format!("{}-{}", inner.next_ms, n % 2);
    if n % 2 == 1 {
        inner.next_ms += 1;
    }
    id
}

impl OpenCtiSim {
    /// `http://127.0.0.1:<port>`.
    /// TCP connections accepted so far (stream and GraphQL).
    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Faults for the next stream connections, in order.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = ConnFault>) {
        self.shared.lock().faults.extend(faults);
    }

    /// Close every stream connection after `n` events (`None`: never).
    pub fn set_drop_every(&self, n: Option<usize>) {
        self.shared.lock().drop_every = n;
    }

    /// Delay before each event (slow platform).
    pub fn set_event_delay(&self, d: Duration) {
        self.shared.lock().event_delay = d;
    }

    /// Append an event at runtime; returns its id.
    pub fn append_event(&self, event: &str, data: Value) -> String {
        let mut g = self.shared.lock();
        let id = next_id(&mut g);
        let ev = ScenarioEvent {
            event: event.into(),
            data,
        };
        let frame = render(&id, &ev);
        g.wire.push(frame);
        g.events.push((id.clone(), ev));
        index_last(&mut g);
        drop(g);
        self.shared.changed.notify_all();
        id
    }

    /// Ids of all events, in order.
    pub fn event_ids(&self) -> Vec<String> {
        self.shared
            .lock()
            .events
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The next ping of `connector_id` behaves like after "reset state" in the UI (§3.4).
    pub fn reset_state_from_ui(&self, connector_id: &str) {
        let mut g = self.shared.lock();
        g.states.insert(connector_id.into(), String::new());
        g.reset_pending.insert(connector_id.into(), true);
    }

    /// Preset a connector's stored state (e.g. left by the Python connector).
    pub fn set_connector_state(&self, connector_id: &str, state: &str) {
        self.shared
            .lock()
            .states
            .insert(connector_id.into(), state.into());
    }

    /// Stored `connector_state`.
    pub fn connector_state(&self, connector_id: &str) -> Option<String> {
        self.shared.lock().states.get(connector_id).cloned()
    }

    /// `registerConnector` inputs received.
    pub fn registered(&self) -> Vec<Value> {
        self.shared.lock().registered.clone()
    }

    pub fn ping_count(&self) -> u64 {
        self.shared.lock().ping_count
    }

    /// The GraphQL errors answered because the platform's schema lacks what a request named
    /// (each `{"message", "extensions": {"code"}}`), in order.
    pub fn rejections(&self) -> Vec<Value> {
        self.shared.lock().rejected.clone()
    }

    /// All GraphQL request bodies received.
    pub fn graphql_requests(&self) -> Vec<Value> {
        self.shared.lock().graphql.clone()
    }

    /// Stream requests received.
    pub fn stream_requests(&self) -> Vec<StreamRequest> {
        self.shared.lock().requests.clone()
    }

    /// Stop accepting and end all connections.
    pub fn shutdown(&mut self) {
        if self.shared.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shared.changed.notify_all();
        // Unblock accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

impl Drop for OpenCtiSim {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Read one request; `None` when the client closed the connection between requests.
fn read_request(r: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (path, query) = (path.to_owned(), query.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len.min(64 * 1024 * 1024)];
    r.read_exact(&mut body)?;
    Ok(Some(Request {
        method,
        path,
        query,
        headers,
        body,
    }))
}

/// Answer and close the connection.
fn respond(conn: &mut TcpStream, status: u16, ctype: &str, body: &[u8]) -> io::Result<()> {
    write_response(conn, status, ctype, body, false)
}

/// The whole response in one write: with keep-alive, a header and body in separate small
/// writes would meet Nagle's algorithm and the client's delayed ACK (a 40 ms stall).
fn write_response(
    conn: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        reason(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes();
    out.extend_from_slice(body);
    conn.write_all(&out)?;
    conn.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        410 => "This live stream is stopped",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serve one connection: GraphQL requests keep it alive (as the real platform does, so clients
/// reuse their pooled connections); a stream request takes it over until the stream ends.
fn handle_conn(shared: &Shared, conn: TcpStream) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    // The first request is expected at once; later ones may come after an idle spell longer
    // than the client pool's idle age (ureq: 15 s), so the client, not us, closes idle ones.
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut conn = conn;
    loop {
        let Some(req) = read_request(&mut reader)? else {
            return Ok(());
        };
        if shared.stop.load(Ordering::SeqCst) {
            // A stopped simulator answers nothing, even on a connection opened before.
            return Ok(());
        }
        conn.set_read_timeout(None)?;
        if req.method == "POST" && req.path.ends_with("/graphql") {
            let keep_alive = !req
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            handle_graphql(shared, &mut conn, &req, keep_alive)?;
            if !keep_alive {
                return Ok(());
            }
            conn.set_read_timeout(Some(Duration::from_secs(60)))?;
            continue;
        }
        if req.method == "GET" && (req.path == "/stream" || req.path.starts_with("/stream/")) {
            return handle_stream(shared, conn, &req);
        }
        return respond(&mut conn, 404, "text/plain", b"not found");
    }
}

fn authorized(shared: &Shared, req: &Request) -> bool {
    req.header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| t == shared.cfg.token)
}

/// Index of the first event strictly after `pos` (`0`, `0-0` or unparsable = from the start).
fn start_index(events: &[(String, ScenarioEvent)], pos: Option<&str>) -> usize {
    let parse = |s: &str| -> Option<(u64, u64)> {
        let (a, b) = s.split_once('-')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    match pos.and_then(parse) {
        None => 0,
        Some(p) => events
            .iter()
            .position(|(id, _)| parse(id).is_some_and(|i| i > p))
            .unwrap_or(events.len()),
    }
}

fn handle_stream(shared: &Shared, mut conn: TcpStream, req: &Request) -> io::Result<()> {
    // strip_prefix, not trim_start_matches: a stream id may itself start with "stream".
    let stream_id = req.path.strip_prefix("/stream").unwrap_or_default();
    let stream_id = stream_id.strip_prefix('/').unwrap_or(stream_id);
    let fault = shared.lock().faults.pop_front().unwrap_or(ConnFault::None);
    let (status, retry_after) = if !authorized(shared, req) || stream_id != shared.cfg.stream_id {
        (401, None)
    } else {
        match fault {
            ConnFault::Status(s) => (s, None),
            ConnFault::Throttled(secs) => (429, Some(secs)),
            _ => (200, None),
        }
    };
    shared.lock().requests.push(StreamRequest {
        path: req.path.clone(),
        query: req.query.clone(),
        headers: req.headers.clone(),
        status,
    });
    if let Some(secs) = retry_after {
        write!(
            conn,
            "HTTP/1.1 429 {}\r\nRetry-After: {secs}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            reason(429)
        )?;
        return conn.flush();
    }
    if status != 200 {
        return respond(&mut conn, status, "text/plain", reason(status).as_bytes());
    }
    let gzip = req
        .header("accept-encoding")
        .is_some_and(|v| v.contains("gzip"));
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache, no-transform\r\nConnection: close\r\n{}\r\n",
        if gzip {
            "Content-Encoding: gzip\r\n"
        } else {
            ""
        }
    )?;
    conn.flush()?;
    let pos = query_param(&req.query, "from")
        .or_else(|| req.header("from").map(str::to_owned))
        .or_else(|| req.header("last-event-id").map(str::to_owned));
    let raw = conn.try_clone()?;
    let mut out: Box<dyn Write> = if gzip {
        Box::new(GzEncoder::new(conn, Compression::fast()))
    } else {
        Box::new(conn)
    };
    let recover = query_param(&req.query, "recover");
    let no_recover = shared.cfg.no_recover && recover.is_some();
    let recover_ms = recover
        .filter(|_| shared.cfg.recover_mode && !no_recover)
        .and_then(|r| humantime::parse_rfc3339_weak(&r).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        // Recovery only while the start is before the recover date.
        .filter(|r| parse_pos(pos.as_deref()).is_none_or(|(ms, _)| ms < *r));
    let res = stream_loop(shared, &mut *out, pos, fault, no_recover, recover_ms);
    let _ = out.flush();
    drop(out);
    let _ = raw.shutdown(Shutdown::Both);
    res
}

/// `<ms>-<seq>` as numbers (`0` and `0-0` are the start).
fn parse_pos(pos: Option<&str>) -> Option<(u64, u64)> {
    let (a, b) = pos?.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn stream_loop(
    shared: &Shared,
    out: &mut dyn Write,
    pos: Option<String>,
    fault: ConnFault,
    no_recover: bool,
    recover_ms: Option<u64>,
) -> io::Result<()> {
    let mut recovered: Vec<Arc<str>> = Vec::new();
    let (mut next, info) = {
        let mut g = shared.lock();
        let next = match recover_ms {
            Some(r) => {
                recovered = recovery_frames(&g.events);
                // The platform tails from the recover date: what is appended from now on gets
                // later ids; the GraphQL reads see the whole current state.
                g.next_ms = g.next_ms.max(r + 1);
                g.delivered = g.events.len();
                g.events.len()
            }
            None => start_index(&g.events, pos.as_deref()),
        };
        let info = json!({
            "lastEventId": g.events.last().map(|e| e.0.clone()).unwrap_or_else(|| "0-0".into()),
            "firstEventId": g.events.first().map(|e| e.0.clone()).unwrap_or_else(|| "0-0".into()),
            "streamSize": g.events.len(),
            "connectionId": uuid::Uuid::new_v4().to_string(),
        });
        (next, info)
    };
    write!(out, "event: connected\ndata: {info}\n\n")?;
    if no_recover {
        write!(out, "event: no-recover\ndata: {{}}\n\n")?;
    }
    out.flush()?;
    let mut last_id = pos.filter(|p| !p.is_empty());
    for frame in &recovered {
        out.write_all(frame.as_bytes())?;
        if let Some(id) = frame
            .strip_prefix("id: ")
            .and_then(|f| f.split('\n').next())
        {
            last_id = Some(id.to_owned());
        }
    }
    out.flush()?;
    // Idle heartbeats of a recovering connection carry at least the recover date.
    let floor = recover_ms.map(|r| format!("{r}-0"));
    let mut sent = 0usize;
    let mut last_write = Instant::now();
    let drop_after = match fault {
        ConnFault::DropAfter(n) => Some(n),
        _ => shared.lock().drop_every,
    };
    let stall_after = match fault {
        ConnFault::StallAfter(n) => Some(n),
        _ => None,
    };
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        if drop_after.is_some_and(|n| sent >= n) {
            return Ok(());
        }
        if stall_after.is_some_and(|n| sent >= n) {
            // Hold the connection open without a byte until shutdown.
            let g = shared.lock();
            let _ = shared.changed.wait_timeout(g, Duration::from_millis(100));
            continue;
        }
        let mut g = shared.lock();
        if next < g.events.len() {
            let delay = g.event_delay;
            if !delay.is_zero() {
                let _ = shared.changed.wait_timeout(g, delay);
                g = shared.lock();
            }
            let id = g.events[next].0.clone();
            let frame = g.wire[next].clone();
            g.delivered = g.delivered.max(next + 1);
            drop(g);
            out.write_all(frame.as_bytes())?;
            out.flush()?;
            last_id = Some(id);
            next += 1;
            sent += 1;
            last_write = Instant::now();
            continue;
        }
        let hb = shared.cfg.heartbeat;
        let due = last_write + hb;
        let now = Instant::now();
        if now >= due {
            drop(g);
            let beat = match (&last_id, &floor) {
                (Some(l), Some(f)) if parse_pos(Some(l)) < parse_pos(Some(f)) => Some(f.clone()),
                (None, Some(f)) => Some(f.clone()),
                (l, _) => l.clone(),
            };
            if let Some(id) = &beat {
                let ms = id
                    .split('-')
                    .next()
                    .and_then(|m| m.parse::<u64>().ok())
                    .unwrap_or(0);
                let date = humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH + Duration::from_millis(ms),
                );
                write!(out, "id: {id}\nevent: heartbeat\ndata: \"{date}\"\n\n")?;
            } else {
                write!(out, ": keep-alive\n\n")?;
            }
            out.flush()?;
            last_write = Instant::now();
            continue;
        }
        let _ = shared.changed.wait_timeout(g, due - now);
    }
}

/// The current state as recovery sends it: every live indicator (latest version; merged sources
/// gone) and `based-on` relationship, as a synthetic `create` with id `<ms of its last event>-0`,
/// ordered by that time.
fn recovery_frames(events: &[(String, ScenarioEvent)]) -> Vec<Arc<str>> {
    // object key -> (ms, STIX, alive)
    let mut state: HashMap<String, (u64, Value, bool)> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for (id, ev) in events {
        let ms = parse_pos(Some(id)).map_or(0, |(ms, _)| ms);
        let stix = &ev.data["data"];
        let key = match stix["type"].as_str() {
            Some("indicator") => stix["extensions"][OCTI]["id"]
                .as_str()
                .or(stix["id"].as_str())
                .unwrap_or("")
                .to_owned(),
            Some("relationship") if stix["relationship_type"] == "based-on" => {
                stix["id"].as_str().unwrap_or("").to_owned()
            }
            _ => continue,
        };
        for source in merge_sources(ev) {
            let k = source["extensions"][OCTI]["id"]
                .as_str()
                .or(source["id"].as_str())
                .unwrap_or("");
            if let Some(s) = state.get_mut(k) {
                s.2 = false;
            }
        }
        if !state.contains_key(&key) {
            order.push(key.clone());
        }
        state.insert(key, (ms, stix.clone(), ev.event != "delete"));
    }
    let mut live: Vec<(u64, String, Value)> = order
        .into_iter()
        .filter_map(|k| {
            let (ms, stix, alive) = state.remove(&k)?;
            alive.then_some((ms, k, stix))
        })
        .collect();
    live.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    live.into_iter()
        .map(|(ms, _, stix)| {
            let envelope = json!({
                "version": "4",
                "type": "create",
                "scope": "external",
                "origin": {"referer": "init-create"},
                "message": "recovered",
                "data": stix,
            });
            Arc::from(format!("id: {ms}-0\nevent: create\ndata: {envelope}\n\n"))
        })
        .collect()
}

fn graphql_error(message: &str, code: &str) -> Value {
    json!({"errors": [{"message": message, "extensions": {"code": code}}], "data": null})
}

fn handle_graphql(
    shared: &Shared,
    conn: &mut TcpStream,
    req: &Request,
    keep_alive: bool,
) -> io::Result<()> {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    shared.lock().graphql.push(body.clone());
    let answer = if !authorized(shared, req) {
        graphql_error("You must be logged in to do this.", "AUTH_REQUIRED")
    } else {
        graphql_answer(shared, &body)
    };
    write_response(
        conn,
        200,
        "application/json",
        answer.to_string().as_bytes(),
        keep_alive,
    )
}

/// The answer to a request the schema refuses: errors only, no `data` (graphql-js stops before
/// execution), HTTP 200 like the platform.
fn rejected(shared: &Shared, errors: Vec<Rejection>) -> Value {
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|r| json!({"message": r.message, "extensions": {"code": r.code}}))
        .collect();
    shared.lock().rejected.extend(errors.iter().cloned());
    json!({ "errors": errors })
}

fn graphql_answer(shared: &Shared, body: &Value) -> Value {
    let query = body.get("query").and_then(Value::as_str).unwrap_or("");
    let vars = body.get("variables").cloned().unwrap_or(Value::Null);
    for field in ["registerConnector", "pingConnector"] {
        if query.contains(field) {
            let errors = shared.schema.reject(query, field, &vars);
            if !errors.is_empty() {
                return rejected(shared, errors);
            }
        }
    }
    if query.contains("registerConnector") {
        let input = vars.get("input").cloned().unwrap_or(Value::Null);
        let id = input
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let mut g = shared.lock();
        g.registered.push(input);
        let state = g.states.get(&id).cloned();
        return json!({"data": {"registerConnector": {"id": id, "connector_state": state}}});
    }
    if query.contains("pingConnector") {
        let id = vars
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let state = vars.get("state").and_then(Value::as_str).map(str::to_owned);
        let mut g = shared.lock();
        g.ping_count += 1;
        if g.reset_pending.remove(&id).unwrap_or(false) {
            // §3.4: the flag is cleared, the pushed state discarded, "" returned.
            g.states.insert(id.clone(), String::new());
        } else if let Some(s) = state {
            g.states.insert(id.clone(), s);
        }
        let st = g.states.get(&id).cloned();
        return json!({"data": {"pingConnector": {"id": id, "connector_state": st}}});
    }
    if query.contains("indicator(") {
        let id = vars.get("id").and_then(Value::as_str).unwrap_or("");
        let g = shared.lock();
        let upto = g.delivered;
        let ind = indicator_view(relevant_events(&g, upto, id), id);
        return json!({"data": {"indicator": ind}});
    }
    if query.contains("about") {
        return json!({"data": {"about": {"version": shared.cfg.version}}});
    }
    graphql_error("Unknown operation", "UNSUPPORTED")
}

const OCTI: &str = crate::opencti::events::OCTI_EXT;
const MITRE: &str = crate::opencti::events::MITRE_EXT;

/// Index the newest event under the ids it names (see `Inner::by_id`).
fn index_last(inner: &mut Inner) {
    let i = inner.events.len() - 1;
    let stix = &inner.events[i].1.data["data"];
    let ext = &stix["extensions"][OCTI];
    let keys: Vec<&str> = match stix["type"].as_str() {
        // A merge is also about its sources (they are gone after it).
        Some("indicator") => [stix]
            .into_iter()
            .chain(merge_sources(&inner.events[i].1))
            .flat_map(|o| {
                [
                    o["id"].as_str().unwrap_or(""),
                    o["extensions"][OCTI]["id"].as_str().unwrap_or(""),
                ]
            })
            .collect(),
        Some("relationship") => vec![
            stix["source_ref"].as_str().unwrap_or(""),
            ext["source_ref"].as_str().unwrap_or(""),
        ],
        _ => Vec::new(),
    };
    let keys: Vec<String> = keys
        .into_iter()
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    for k in keys {
        let list = inner.by_id.entry(k).or_default();
        if list.last() != Some(&i) {
            list.push(i);
        }
    }
}

/// The indicators a `merge` event absorbed (`context.sources`); none for any other event.
fn merge_sources(ev: &ScenarioEvent) -> impl Iterator<Item = &Value> {
    let sources = match ev.event.as_str() {
        "merge" => ev.data["context"]["sources"].as_array(),
        _ => None,
    };
    sources.into_iter().flatten()
}

/// The delivered events (index < `upto`) about indicator `id` under any of its ids, in order:
/// those naming `id`, then everything naming the ids those indicator events carry.
fn relevant_events<'a>(g: &'a Inner, upto: usize, id: &str) -> Vec<&'a (String, ScenarioEvent)> {
    let mut ids = vec![id.to_owned()];
    let mut seen: std::collections::BTreeSet<usize> = std::collections::BTreeSet::new();
    while let Some(k) = ids.pop() {
        for &i in g.by_id.get(&k).into_iter().flatten() {
            if i >= upto || !seen.insert(i) {
                continue;
            }
            let stix = &g.events[i].1.data["data"];
            if stix["type"] == "indicator" {
                let objects = std::iter::once(stix).chain(merge_sources(&g.events[i].1));
                for other in objects
                    .flat_map(|o| [o["id"].as_str(), o["extensions"][OCTI]["id"].as_str()])
                    .flatten()
                {
                    if other != k {
                        ids.push(other.to_owned());
                    }
                }
            }
        }
    }
    seen.into_iter().map(|i| &g.events[i]).collect()
}

/// The GraphQL `indicator` answer after applying `events` (latest version by internal or standard
/// id, observables from live `based-on` relationships; null when deleted or unknown). A `merge`
/// deletes its sources and moves their relationships to the target, as the platform does.
fn indicator_view<'a>(
    events: impl IntoIterator<Item = &'a (String, ScenarioEvent)>,
    id: &str,
) -> Value {
    // internal id -> (latest STIX, deleted, all standard ids seen)
    let mut inds: HashMap<String, (Value, bool, Vec<String>)> = HashMap::new();
    // relationship id -> (indicator ref (std or internal), target)
    let mut rels: HashMap<String, (String, Option<String>, Value)> = HashMap::new();
    // absorbed indicator id (std or internal) -> the internal id of the merge target
    let mut merged_into: HashMap<String, String> = HashMap::new();
    for (_, ev) in events {
        let stix = &ev.data["data"];
        let ext = &stix["extensions"][OCTI];
        let sid = stix["id"].as_str().unwrap_or("").to_owned();
        match stix["type"].as_str() {
            Some("indicator") => {
                let iid = ext["id"].as_str().map(str::to_owned).unwrap_or(sid.clone());
                for source in merge_sources(ev) {
                    let source_sid = source["id"].as_str().unwrap_or("").to_owned();
                    let source_iid = source["extensions"][OCTI]["id"]
                        .as_str()
                        .map_or(source_sid.clone(), str::to_owned);
                    if let Some(gone) = inds.get_mut(&source_iid) {
                        gone.1 = true;
                    }
                    merged_into.insert(source_sid, iid.clone());
                    merged_into.insert(source_iid, iid.clone());
                }
                let entry = inds
                    .entry(iid)
                    .or_insert_with(|| (Value::Null, false, Vec::new()));
                entry.0 = stix.clone();
                entry.1 = ev.event == "delete";
                if !entry.2.contains(&sid) {
                    entry.2.push(sid);
                }
            }
            Some("relationship") if stix["relationship_type"] == "based-on" => {
                if ev.event == "delete" {
                    rels.remove(&sid);
                } else {
                    rels.insert(
                        sid,
                        (
                            stix["source_ref"].as_str().unwrap_or("").to_owned(),
                            ext["source_ref"].as_str().map(str::to_owned),
                            json!({
                                "id": ext["target_ref"],
                                "standard_id": stix["target_ref"],
                                "entity_type": ext["target_type"],
                                "observable_value": ext["target_value"],
                            }),
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    let Some((iid, (stix, _, sids))) = inds
        .iter()
        .find(|(iid, (_, deleted, sids))| !deleted && (*iid == id || sids.iter().any(|s| s == id)))
    else {
        return Value::Null;
    };
    let mut observables: Vec<Value> = rels
        .values()
        .filter(|(src, src_internal, _)| {
            let moved = [Some(src), src_internal.as_ref()]
                .into_iter()
                .flatten()
                .any(|s| merged_into.get(s) == Some(iid));
            sids.contains(src) || src_internal.as_deref() == Some(iid.as_str()) || moved
        })
        .map(|(_, _, node)| json!({"node": node}))
        .collect();
    observables.sort_by_key(|n| n.to_string());
    let ext = &stix["extensions"][OCTI];
    json!({
        "id": iid,
        "standard_id": stix["id"],
        "entity_type": "Indicator",
        "name": stix["name"],
        "description": stix.get("description"),
        "pattern_type": stix["pattern_type"],
        "pattern": stix["pattern"],
        "confidence": stix.get("confidence"),
        "x_opencti_score": ext.get("score"),
        "x_mitre_platforms": stix["extensions"][MITRE].get("platforms"),
        "revoked": stix["revoked"].as_bool().unwrap_or(false),
        "valid_from": stix.get("valid_from"),
        "valid_until": stix.get("valid_until"),
        "observables": {"edges": observables},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_accepts_wrapped_and_bare_lines() {
        let s = parse_scenario(
            "# comment\n{\"event\":\"create\",\"data\":{\"type\":\"create\"}}\n\n{\"type\":\"delete\",\"data\":{}}\n",
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].event, "delete");
        assert!(parse_scenario("{}").is_err());
    }

    #[test]
    fn resume_is_strictly_after_the_given_id() {
        let ev = ScenarioEvent {
            event: "create".into(),
            data: json!({}),
        };
        let events: Vec<_> = ["5-0", "5-1", "6-0"]
            .iter()
            .map(|i| (i.to_string(), ev.clone()))
            .collect();
        assert_eq!(start_index(&events, Some("0-0")), 0);
        assert_eq!(start_index(&events, Some("5-0")), 1);
        assert_eq!(start_index(&events, Some("5-1")), 2);
        assert_eq!(start_index(&events, Some("9-0")), 3);
        assert_eq!(start_index(&events, None), 0);
    }

    #[test]
    fn a_merge_deletes_its_sources_and_moves_their_relationships() {
        let ind = |n: &str| {
            json!({"type": "indicator", "id": format!("indicator--{n}"), "name": n,
                "pattern": "[ipv4-addr:value = '1.2.3.4']", "pattern_type": "stix",
                "extensions": {OCTI: {"id": format!("int-{n}")}}})
        };
        let ev = |event: &str, data: Value| {
            (
                "1-0".to_owned(),
                ScenarioEvent {
                    event: event.into(),
                    data,
                },
            )
        };
        let rel = json!({"type": "relationship", "relationship_type": "based-on",
            "id": "relationship--r", "source_ref": "indicator--s",
            "extensions": {OCTI: {"source_ref": "int-s", "target_ref": "obs-1",
                "target_type": "IPv4-Addr", "target_value": "7.7.7.7"}}});
        let events = vec![
            ev("create", json!({"data": ind("t")})),
            ev("create", json!({"data": ind("s")})),
            ev("create", json!({"data": rel})),
            ev(
                "merge",
                json!({"data": ind("t"), "context": {"sources": [ind("s")]}}),
            ),
        ];
        let target = indicator_view(&events, "int-t");
        let edges = target["observables"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), 1, "{target}");
        assert_eq!(edges[0]["node"]["observable_value"], "7.7.7.7");
        assert_eq!(indicator_view(&events, "int-s"), Value::Null);
        assert_eq!(indicator_view(&events, "indicator--s"), Value::Null);
        // Before the merge, the relationship is the source's.
        assert_eq!(
            indicator_view(&events[..3], "int-t")["observables"]["edges"],
            json!([])
        );
    }

    #[test]
    fn recovery_sends_the_current_state_as_creates_in_update_order() {
        let ind = |n: &str, ip: &str| {
            json!({"type": "indicator", "id": format!("indicator--{n}"), "name": n,
                "pattern": format!("[ipv4-addr:value = '{ip}']"), "pattern_type": "stix",
                "extensions": {OCTI: {"id": format!("int-{n}")}}})
        };
        let ev = |id: &str, event: &str, data: Value| {
            (
                id.to_owned(),
                ScenarioEvent {
                    event: event.into(),
                    data,
                },
            )
        };
        let events = vec![
            ev("10-0", "create", json!({"data": ind("a", "1.1.1.1")})),
            ev("11-0", "create", json!({"data": ind("b", "2.2.2.2")})),
            ev("12-1", "update", json!({"data": ind("a", "3.3.3.3")})),
            ev("13-0", "delete", json!({"data": ind("b", "2.2.2.2")})),
            ev("14-0", "create", json!({"data": ind("c", "4.4.4.4")})),
            ev(
                "15-0",
                "merge",
                json!({"data": ind("a", "3.3.3.3"), "context": {"sources": [ind("c", "4.4.4.4")]}}),
            ),
        ];
        let frames = recovery_frames(&events);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert!(
            frames[0].starts_with("id: 15-0\nevent: create\n"),
            "{}",
            frames[0]
        );
        assert!(frames[0].contains("3.3.3.3") && frames[0].contains("init-create"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%3Ab%2B"), "a:b+");
        assert_eq!(percent_decode("%zz%"), "%zz%");
    }
}
