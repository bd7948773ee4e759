//! The live-stream reader: one thread holding the SSE connection to `GET {url}/stream/{id}`, turning
//! frames into [`StreamItem`]s on a caller-provided bounded channel.
//!
//! Owns the connection lifecycle (opencti-protocol.md §1): request headers and `recover` parameter,
//! dead-stream detection, reconnects with the crate's backoff (`crate::retry`, no attempt limit,
//! capped at `backoff_max`, at least the server's `Retry-After`) resuming after the last id
//! received (heartbeats included), HTTP status policy, `no-recover`, and prompt shutdown/restart.
//!
//! Decisions:
//! - **Dead stream**: ureq 3.5's `timeout_per_read` bounds every socket read, so "no bytes for
//!   `idle_timeout`" (default 15 s = 3 server heartbeat periods) fails the read and the connection is
//!   reopened. No global/recv_body timeout is set (it would bound the whole endless body).
//! - **Shutdown / restart**: each connection gets its own `ureq::Agent`; a small watcher thread
//!   waits on the shutdown receiver and calls `Agent::shutdown()`, which interrupts the blocked
//!   read. [`StreamReader::restart_from`] does the same and the loop reconnects from the new
//!   position (UI state reset). Backoff waits select on the shutdown and control channels (not
//!   `retry::wait`, which watches shutdown only: a restart must end the wait too).
//! - **Backpressure**: items are sent with a blocking send on the bounded channel (the socket is
//!   not read meanwhile); the send also ends on shutdown or restart.
//! - **Status policy**: 200 streams. 401/403 and 404 are fatal on the *first* connection (a
//!   configuration error: the message names `OPENCTI_TOKEN` and the capability, or
//!   `CONNECTOR_LIVE_STREAM_ID`); on later connections they are logged as errors and retried with
//!   backoff (a token rotation or a platform restart must not kill a long-running service).
//!   410 (stream stopped), 429, 5xx and any other answer are retried with backoff (a 429 or
//!   503's `Retry-After` is a minimum, still capped at `backoff_max`).
//! - **Compression**: `Accept-Encoding: identity` by default: the platform's compression middleware
//!   flushes per event, so gzip saves little on a live stream, and raw bytes keep the idle detection
//!   exact. `compression: true` asks for gzip, which ureq decodes (tested against the simulator).

use super::events::{self, ConnectedInfo, Decoded, EventError, Payload, StreamEvent};
use super::sse::{DEFAULT_MAX_LINE, Frame, FrameReader};
use super::{TlsOptions, USER_AGENT, base_url, tls_config};
use crate::cause::Cause;
use crate::retry::{self, RetryPolicy};
use crate::secret::Secret;
use crate::state::Checkpoint;
use crate::tls::CaBundleError;
use crossbeam_channel::{Receiver, Sender, select};
use std::fmt;
use std::io::{self, BufReader};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

/// Settings of the stream reader (the integrator maps `Config` onto it).
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// `OPENCTI_URL` (trailing `/` ignored).
    pub url: String,
    pub token: Secret,
    /// `CONNECTOR_LIVE_STREAM_ID`; empty = the raw `/stream`.
    pub stream_id: String,
    /// `CONNECTOR_LIVE_STREAM_LISTEN_DELETE` (default true).
    pub listen_delete: bool,
    /// `CONNECTOR_LIVE_STREAM_NO_DEPENDENCIES` (default true).
    pub no_dependencies: bool,
    /// `CONNECTOR_LIVE_STREAM_WITH_INFERENCES` (default false).
    pub with_inferences: bool,
    pub tls: TlsOptions,
    pub connect_timeout: Duration,
    /// Time to receive the response headers.
    pub response_timeout: Duration,
    /// No byte for this long = dead connection (default 15 s).
    pub idle_timeout: Duration,
    /// Ceiling of the first reconnect delay (doubles per failed connection, with jitter).
    pub backoff_base: Duration,
    /// Reconnect delay cap (default 60 s).
    pub backoff_max: Duration,
    /// Ask for gzip (default false, see module doc).
    pub compression: bool,
    /// SSE line bound.
    pub max_line: usize,
}

impl StreamOptions {
    pub fn new(url: impl Into<String>, token: Secret, stream_id: impl Into<String>) -> Self {
        StreamOptions {
            url: url.into(),
            token,
            stream_id: stream_id.into(),
            listen_delete: true,
            no_dependencies: true,
            with_inferences: false,
            tls: TlsOptions::default(),
            connect_timeout: Duration::from_secs(15),
            response_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(15),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            compression: false,
            max_line: DEFAULT_MAX_LINE,
        }
    }

    /// `{url}/stream/{id}` plus `?recover=` (percent-encoded) when recovering.
    pub fn request_url(&self, recover_until: Option<&str>) -> String {
        let mut u = format!("{}/stream", base_url(&self.url));
        if !self.stream_id.is_empty() {
            u.push('/');
            u.push_str(&percent_encode(&self.stream_id));
        }
        if let Some(r) = recover_until {
            u.push_str("?recover=");
            u.push_str(&percent_encode(r));
        }
        u
    }

    /// The SSE request (opencti-protocol.md §1.1), the one place its headers are written: the
    /// reader and [`probe`] both send it. `last_event_id` is the resume position; a probe sends
    /// none, so the platform starts live-only (§1.3) and replays nothing.
    fn request(
        &self,
        agent: &ureq::Agent,
        url: &str,
        last_event_id: Option<&str>,
    ) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let tf = |b: bool| if b { "true" } else { "false" };
        let req = agent
            .get(url)
            .header("Authorization", &format!("Bearer {}", self.token.expose()))
            .header("Accept", "text/event-stream")
            .header("Cache-Control", "no-cache")
            .header("listen-delete", tf(self.listen_delete))
            .header("no-dependencies", tf(self.no_dependencies))
            .header("with-inferences", tf(self.with_inferences))
            .header(
                "Accept-Encoding",
                if self.compression { "gzip" } else { "identity" },
            );
        match last_event_id {
            Some(id) => req.header("Last-Event-ID", id),
            None => req,
        }
    }
}

/// RFC 3986 unreserved characters kept, everything else `%XX` (a `+hh:mm` offset stays intact).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What the reader sends downstream.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamItem {
    /// A connection is open (the `connected` frame, §1.6).
    Connected(ConnectedInfo),
    /// A create/update/delete/merge of an Indicator, a create/delete of a `based-on`
    /// relationship.
    Event(Box<StreamEvent>),
    /// A position-only frame (`heartbeat`, `consumer_metrics`).
    Heartbeat { id: String },
    /// Understood and ignored: unknown event names, other STIX types. Carries the id so
    /// the checkpoint can advance past it.
    Ignored {
        id: Option<String>,
        event: String,
        reason: String,
    },
    /// A create/update/delete that could not be decoded (skip and record; `event_id` is the
    /// position).
    Malformed(EventError),
    /// The platform will not honour `recover` (`no-recover`, §8): the reader stops sending it and
    /// the checkpoint should drop `recover_until`. `id`, when present, is a position.
    NoRecover { id: Option<String> },
    /// The connection ended; the reader reconnects after `retry_in`.
    Disconnected { reason: String, retry_in: Duration },
}

/// Why the reader stopped for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// 401/403 on the first connection.
    Auth { status: u16, stream_id: String },
    /// 404 on the first connection.
    NotFound { url: String, stream_id: String },
    /// The CA bundle (`OPENCTI_CA_FILE`) cannot be used.
    Setup(CaBundleError),
    /// The reader thread panicked (a bug).
    ReaderPanicked,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Auth { status, stream_id } => write!(
                f,
                "OpenCTI refused the live stream (HTTP {status}): check OPENCTI_TOKEN, and that its \
                 user can read live stream {stream_id:?} (CONNECTOR_LIVE_STREAM_ID; a private stream \
                 needs the TAXIIAPI capability or membership, the global `live` stream needs BYPASS)"
            ),
            StreamError::NotFound { url, stream_id } => write!(
                f,
                "OpenCTI answered 404 for {}: check OPENCTI_URL and CONNECTOR_LIVE_STREAM_ID \
                 ({stream_id:?})",
                crate::secret::redact_url(url)
            ),
            StreamError::Setup(e) => write!(f, "live stream setup: {e}"),
            StreamError::ReaderPanicked => f.write_str("the live stream reader thread panicked"),
        }
    }
}

impl std::error::Error for StreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StreamError::Setup(e) => Some(e),
            _ => None,
        }
    }
}

/// Counters of the reader (snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub connections: u64,
    pub events: u64,
    pub heartbeats: u64,
    pub ignored: u64,
    pub malformed: u64,
    pub disconnects: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    events: AtomicU64,
    heartbeats: AtomicU64,
    ignored: AtomicU64,
    malformed: AtomicU64,
    disconnects: AtomicU64,
}

/// Shared between the reader, the watcher and the handle; one lock so that "stop" / "restart" and
/// "the agent to interrupt" are always seen together.
#[derive(Default)]
struct Ctl {
    agent: Option<ureq::Agent>,
    stop: bool,
    restart: Option<Checkpoint>,
}

struct Shared {
    ctl: Mutex<Ctl>,
    counters: Counters,
}

impl Shared {
    fn interrupt(&self, f: impl FnOnce(&mut Ctl)) {
        let agent = match self.ctl.lock() {
            Ok(mut c) => {
                f(&mut c);
                c.agent.take()
            }
            Err(_) => None,
        };
        if let Some(a) = agent {
            a.shutdown();
        }
    }
}

/// Handle of the reader thread.
pub struct StreamReader {
    shared: Arc<Shared>,
    wake: Sender<()>,
    thread: Option<thread::JoinHandle<Result<(), StreamError>>>,
}

impl StreamReader {
    /// Start reading from `start` (its `start_from` is sent as `Last-Event-ID`, its
    /// `recover_until` as `recover`). Items go to `items` (bounded: backpressure); the reader stops
    /// when `shutdown` is disconnected (or receives a message) or `items` is disconnected. When
    /// the thread ends it drops its `Sender`, so a consumer's receive loop ends; [`join`](Self::join)
    /// then tells whether it was a fatal configuration error.
    pub fn spawn(
        opts: StreamOptions,
        start: Checkpoint,
        items: Sender<StreamItem>,
        shutdown: Receiver<()>,
    ) -> io::Result<StreamReader> {
        let shared = Arc::new(Shared {
            ctl: Mutex::new(Ctl::default()),
            counters: Counters::default(),
        });
        let (wake, wake_rx) = crossbeam_channel::bounded::<()>(1);
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        {
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            let wake = wake.clone();
            thread::Builder::new()
                .name("stream-watch".into())
                .spawn(move || {
                    select! {
                        recv(shutdown) -> _ => {
                            shared.interrupt(|c| c.stop = true);
                            let _ = wake.try_send(());
                        }
                        recv(done_rx) -> _ => {}
                    }
                })?;
        }
        let thread = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("stream-reader".into())
                .spawn(move || {
                    let _done = done_tx; // dropped at exit: ends the watcher
                    let mut r = Reader {
                        opts,
                        pos: start,
                        items,
                        shutdown,
                        wake: wake_rx,
                        shared,
                        ever_connected: false,
                        attempt: 0,
                        rng: fastrand::Rng::new(),
                    };
                    let res = r.run();
                    if let Err(e) = &res {
                        log::error!("{e}");
                    }
                    res
                })?
        };
        Ok(StreamReader {
            shared,
            wake,
            thread: Some(thread),
        })
    }

    /// Drop the current connection and resume from `position` (after a reset from the UI).
    /// Items already queued in the channel are from the old position; the caller discards them.
    pub fn restart_from(&self, position: Checkpoint) {
        self.shared.interrupt(|c| c.restart = Some(position));
        let _ = self.wake.try_send(());
    }

    /// Counters so far.
    pub fn stats(&self) -> StreamStats {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StreamStats {
            connections: g(&c.connections),
            events: g(&c.events),
            heartbeats: g(&c.heartbeats),
            ignored: g(&c.ignored),
            malformed: g(&c.malformed),
            disconnects: g(&c.disconnects),
        }
    }

    /// Whether the thread has ended (fatal error, shutdown, or consumer gone).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Wait for the thread. `Err` only for fatal configuration errors.
    pub fn join(mut self) -> Result<(), StreamError> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(StreamError::ReaderPanicked),
            None => Ok(()),
        }
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shared.interrupt(|c| c.stop = true);
            let _ = self.wake.try_send(());
        }
    }
}

/// How one connection ended.
enum End {
    /// Shutdown requested or consumer gone: leave.
    Stop,
    /// Restart from a new position: reconnect at once.
    Restart(Checkpoint),
    /// Reconnect after a backoff; `reset_backoff` when the connection delivered frames;
    /// `retry_after` when the server asked for a wait.
    Retry {
        reason: String,
        reset_backoff: bool,
        retry_after: Option<Duration>,
    },
    Fatal(StreamError),
}

struct Reader {
    opts: StreamOptions,
    pos: Checkpoint,
    items: Sender<StreamItem>,
    shutdown: Receiver<()>,
    wake: Receiver<()>,
    shared: Arc<Shared>,
    ever_connected: bool,
    attempt: u32,
    rng: fastrand::Rng,
}

impl Reader {
    fn run(&mut self) -> Result<(), StreamError> {
        let tls = tls_config(&self.opts.tls).map_err(StreamError::Setup)?;
        loop {
            match self.connect_once(&tls) {
                End::Stop => return Ok(()),
                End::Fatal(e) => return Err(e),
                End::Restart(cp) => {
                    log::info!(
                        "live stream: restarting from {} (recover until {:?})",
                        cp.start_from,
                        cp.recover_until
                    );
                    self.pos = cp;
                    self.attempt = 0;
                }
                End::Retry {
                    reason,
                    reset_backoff,
                    retry_after,
                } => {
                    if reset_backoff {
                        self.attempt = 0;
                    }
                    let policy =
                        RetryPolicy::until_stopped(self.opts.backoff_base, self.opts.backoff_max);
                    let delay = policy.delay(self.attempt, retry_after, &mut self.rng);
                    self.attempt = self.attempt.saturating_add(1);
                    self.shared
                        .counters
                        .disconnects
                        .fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "live stream: {reason}; reconnecting in {:.1}s from {}",
                        delay.as_secs_f64(),
                        self.pos.start_from
                    );
                    let item = StreamItem::Disconnected {
                        reason,
                        retry_in: delay,
                    };
                    match self.send(item) {
                        Some(End::Restart(cp)) => {
                            self.pos = cp;
                            continue;
                        }
                        Some(_) => return Ok(()),
                        None => {}
                    }
                    match self.wait(delay) {
                        Some(End::Restart(cp)) => {
                            self.pos = cp;
                            self.attempt = 0;
                        }
                        Some(_) => return Ok(()),
                        None => {}
                    }
                }
            }
        }
    }

    /// Pending stop/restart, if any.
    fn control(&self) -> Option<End> {
        let mut c = self.shared.ctl.lock().ok()?;
        if c.stop {
            return Some(End::Stop);
        }
        c.restart.take().map(End::Restart)
    }

    /// Backoff wait ending early on shutdown or restart.
    fn wait(&self, delay: Duration) -> Option<End> {
        let deadline = std::time::Instant::now() + delay;
        loop {
            if let Some(e) = self.control() {
                return Some(e);
            }
            select! {
                recv(self.shutdown) -> _ => return Some(End::Stop),
                recv(self.wake) -> _ => continue,
                default(deadline.saturating_duration_since(std::time::Instant::now())) => return None,
            }
        }
    }

    /// Blocking send (backpressure) that gives way to shutdown/restart. `None` = sent.
    fn send(&self, item: StreamItem) -> Option<End> {
        // Fast path without a copy; the blocking path below clones (it is waiting anyway).
        let item = match self.items.try_send(item) {
            Ok(()) => return None,
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                log::info!("live stream: consumer gone, stopping");
                return Some(End::Stop);
            }
            Err(crossbeam_channel::TrySendError::Full(item)) => item,
        };
        loop {
            if let Some(e) = self.control() {
                return Some(e);
            }
            select! {
                send(self.items, item.clone()) -> r => return match r {
                    Ok(()) => None,
                    Err(_) => {
                        log::info!("live stream: consumer gone, stopping");
                        Some(End::Stop)
                    }
                },
                recv(self.shutdown) -> _ => return Some(End::Stop),
                recv(self.wake) -> _ => continue,
            }
        }
    }

    fn connect_once(&mut self, tls: &ureq::tls::TlsConfig) -> End {
        let o = &self.opts;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(o.connect_timeout))
            .timeout_recv_response(Some(o.response_timeout))
            .timeout_per_read(Some(o.idle_timeout))
            .user_agent(USER_AGENT)
            .tls_config(tls.clone())
            // ureq's defaults are 2 × 128 KiB, zeroed: a quarter of a MiB of RSS for one request
            // header out and a body the `BufReader` below buffers again.
            .input_buffer_size(STREAM_INPUT_BUFFER)
            .output_buffer_size(4 * 1024)
            .build()
            .new_agent();
        // Register the agent so shutdown/restart can interrupt it; bail out if one is pending.
        {
            let Ok(mut c) = self.shared.ctl.lock() else {
                return End::Stop;
            };
            if c.stop {
                return End::Stop;
            }
            if let Some(cp) = c.restart.take() {
                return End::Restart(cp);
            }
            c.agent = Some(agent.clone());
        }
        let recover = self.pos.recover_until.clone();
        let url = o.request_url(recover.as_deref());
        log::info!(
            "live stream: connecting to {} from {} (listen-delete={}, no-dependencies={}, with-inferences={})",
            crate::secret::redact_url(&url),
            self.pos.start_from,
            o.listen_delete,
            o.no_dependencies,
            o.with_inferences
        );
        let req = o.request(&agent, &url, Some(&self.pos.start_from));
        let resp = match req.call() {
            Ok(r) => r,
            Err(e) => {
                return self.control().unwrap_or(End::Retry {
                    reason: format!("cannot connect: {e}"),
                    reset_backoff: false,
                    retry_after: None,
                });
            }
        };
        let status = resp.status().as_u16();
        if status != 200 {
            let reason_phrase = resp.status().canonical_reason().unwrap_or("");
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
            return self.status_end(status, reason_phrase, &url, retry_after);
        }
        self.ever_connected = true;
        self.shared
            .counters
            .connections
            .fetch_add(1, Ordering::Relaxed);
        let body = resp.into_body().into_reader();
        let frames = FrameReader::with_limit(BufReader::with_capacity(64 * 1024, body), o.max_line);
        let mut delivered = false;
        for frame in frames {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    return self.control().unwrap_or_else(|| {
                        let idle = matches!(&e, super::sse::SseError::Io(io) if is_timeout(io));
                        End::Retry {
                            reason: if idle {
                                format!(
                                    "no data for {:?} (dead connection): {e}",
                                    self.opts.idle_timeout
                                )
                            } else {
                                e.to_string()
                            },
                            reset_backoff: delivered,
                            retry_after: None,
                        }
                    });
                }
            };
            // Only a position (not a bare `connected`) proves the stream works: a server that
            // accepts and closes at once keeps backing off.
            delivered |= frame.id.is_some();
            if let Some(end) = self.handle_frame(frame) {
                return end;
            }
        }
        self.control().unwrap_or(End::Retry {
            reason: "server closed the stream".into(),
            reset_backoff: delivered,
            retry_after: None,
        })
    }

    fn status_end(
        &self,
        status: u16,
        phrase: &str,
        url: &str,
        retry_after: Option<Duration>,
    ) -> End {
        let first = !self.ever_connected;
        let stream_id = self.opts.stream_id.clone();
        match status {
            401 | 403 if first => End::Fatal(StreamError::Auth { status, stream_id }),
            404 if first => End::Fatal(StreamError::NotFound {
                url: url.split('?').next().unwrap_or(url).to_owned(),
                stream_id,
            }),
            401 | 403 | 404 => {
                let e = if status == 404 {
                    StreamError::NotFound {
                        url: url.into(),
                        stream_id,
                    }
                    .to_string()
                } else {
                    StreamError::Auth { status, stream_id }.to_string()
                };
                log::error!("{e} (was working before: retrying)");
                End::Retry {
                    reason: format!("HTTP {status}"),
                    reset_backoff: false,
                    retry_after: None,
                }
            }
            410 => End::Retry {
                reason: format!(
                    "HTTP 410: live stream {stream_id:?} is stopped on the platform (start it in \
                     Data sharing > Live streams)"
                ),
                reset_backoff: false,
                retry_after: None,
            },
            s => End::Retry {
                reason: format!("HTTP {s} {phrase}"),
                reset_backoff: false,
                retry_after,
            },
        }
    }

    /// Update the position and forward the frame; `Some` ends the connection.
    fn handle_frame(&mut self, frame: Frame) -> Option<End> {
        let c = &self.shared.counters;
        if let Some(id) = &frame.id {
            // Heartbeats included: resume after the last id seen on the wire (§1.5).
            self.pos.start_from = id.clone();
        }
        let item = match events::decode(&frame) {
            Ok(Decoded::Event(ev)) => match &ev.payload {
                Payload::Other { stix_type } => {
                    c.ignored.fetch_add(1, Ordering::Relaxed);
                    log::debug!("event={} {}: {stix_type} ignored", ev.id, ev.kind.as_str());
                    StreamItem::Ignored {
                        id: Some(ev.id.clone()),
                        event: ev.kind.as_str().into(),
                        reason: format!("STIX type {stix_type}"),
                    }
                }
                _ => {
                    c.events.fetch_add(1, Ordering::Relaxed);
                    StreamItem::Event(ev)
                }
            },
            Ok(Decoded::Heartbeat { id }) => {
                c.heartbeats.fetch_add(1, Ordering::Relaxed);
                StreamItem::Heartbeat { id: id? }
            }
            Ok(Decoded::Connected(info)) => {
                log::info!(
                    "live stream: connected (stream last event {:?})",
                    info.last_event_id
                );
                StreamItem::Connected(info)
            }
            Ok(Decoded::NoRecover { id }) => {
                if self.pos.recover_until.take().is_some() {
                    log::info!("live stream: platform will not recover; no longer sending recover");
                }
                StreamItem::NoRecover { id }
            }
            Ok(Decoded::Ignored { id, event }) => {
                c.ignored.fetch_add(1, Ordering::Relaxed);
                log::debug!("event={} {event}: ignored", id.as_deref().unwrap_or("-"));
                StreamItem::Ignored {
                    id,
                    reason: format!("event {event}"),
                    event,
                }
            }
            Err(e) => {
                c.malformed.fetch_add(1, Ordering::Relaxed);
                log::warn!("{e}");
                StreamItem::Malformed(e)
            }
        };
        self.send(item)
    }
}

/// Why a one-shot [`probe`] of the stream failed, worded for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// The CA bundle (`OPENCTI_CA_FILE`) cannot be used.
    Setup(CaBundleError),
    /// No HTTP answer (refused, DNS, TLS handshake, timeout); `source` is the `ureq::Error`.
    Connect(Cause),
    /// 401/403: token or stream id (OpenCTI answers 401 for an unknown stream too, §1.2).
    Auth { status: u16, stream_id: String },
    /// 404: wrong URL (base path) or stream id.
    NotFound { url: String, stream_id: String },
    /// 410: the live stream exists but is stopped.
    Stopped { stream_id: String },
    /// Any other status.
    Status { status: u16, reason: String },
    /// 200 but no `connected` event before the stream ended (`None`) or failed (its
    /// `SseError`: a timeout, a reset, an over-long line).
    NoConnected(Option<Cause>),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Setup(e) => write!(f, "live stream setup: {e}"),
            ProbeError::Connect(e) => write!(f, "cannot open the live stream: {e}"),
            ProbeError::Auth { status, stream_id } => StreamError::Auth {
                status: *status,
                stream_id: stream_id.clone(),
            }
            .fmt(f),
            ProbeError::NotFound { url, stream_id } => StreamError::NotFound {
                url: url.clone(),
                stream_id: stream_id.clone(),
            }
            .fmt(f),
            ProbeError::Stopped { stream_id } => write!(
                f,
                "live stream {stream_id:?} is stopped on the platform (HTTP 410): start it in \
                 Data sharing > Live streams (CONNECTOR_LIVE_STREAM_ID)"
            ),
            ProbeError::Status { status, reason } => {
                write!(f, "the live stream answered HTTP {status} {reason}")
            }
            ProbeError::NoConnected(cause) => {
                f.write_str("the live stream opened but sent no `connected` event: ")?;
                match cause {
                    Some(e) => write!(f, "{e}")?,
                    None => f.write_str("the server closed the stream")?,
                }
                f.write_str(" (a proxy buffering text/event-stream?)")
            }
        }
    }
}

impl std::error::Error for ProbeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProbeError::Setup(e) => Some(e),
            ProbeError::Connect(e) | ProbeError::NoConnected(Some(e)) => Some(e.error()),
            _ => None,
        }
    }
}

/// The stream connection's read buffer: the response header, then the body in chunks this size
/// (the `BufReader` over the body holds 64 KiB for the frame parser).
const STREAM_INPUT_BUFFER: usize = 32 * 1024;

/// Open the stream once with the reader's headers, read until the `connected` event and close
/// (for `harfanglab-intel check`). `timeout` bounds the whole exchange. No `Last-Event-ID` is
/// sent, so the platform starts live-only (§1.3) and replays nothing.
pub fn probe(opts: &StreamOptions, timeout: Duration) -> Result<ConnectedInfo, ProbeError> {
    let tls = tls_config(&opts.tls).map_err(ProbeError::Setup)?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .timeout_connect(Some(opts.connect_timeout.min(timeout)))
        .user_agent(USER_AGENT)
        .tls_config(tls)
        .build()
        .new_agent();
    let url = opts.request_url(None);
    let resp = opts
        .request(&agent, &url, None)
        .call()
        .map_err(|e| ProbeError::Connect(Cause::new(e)))?;
    let stream_id = opts.stream_id.clone();
    match resp.status().as_u16() {
        200 => {}
        status @ (401 | 403) => return Err(ProbeError::Auth { status, stream_id }),
        404 => return Err(ProbeError::NotFound { url, stream_id }),
        410 => return Err(ProbeError::Stopped { stream_id }),
        status => {
            return Err(ProbeError::Status {
                status,
                reason: resp.status().canonical_reason().unwrap_or("").to_owned(),
            });
        }
    }
    let body = resp.into_body().into_reader();
    let frames = FrameReader::with_limit(BufReader::new(body), opts.max_line);
    for frame in frames {
        let frame = frame.map_err(|e| ProbeError::NoConnected(Some(Cause::new(e))))?;
        if let Ok(Decoded::Connected(info)) = events::decode(&frame) {
            return Ok(info);
        }
    }
    Err(ProbeError::NoConnected(None))
}

/// A read that failed because no byte arrived within the per-read timeout.
fn is_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
        || e.kind() == io::ErrorKind::WouldBlock
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<ureq::Error>())
            .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_strips_slash_and_encodes_recover() {
        let o = StreamOptions::new("https://octi.example/", Secret::new("t"), "live");
        assert_eq!(
            o.request_url(Some("2024-06-15T09:00:00+02:00")),
            "https://octi.example/stream/live?recover=2024-06-15T09%3A00%3A00%2B02%3A00"
        );
        let o = StreamOptions::new("https://octi.example", Secret::new("t"), "");
        assert_eq!(o.request_url(None), "https://octi.example/stream");
    }

    #[test]
    fn errors_name_the_settings() {
        let e = StreamError::Auth {
            status: 401,
            stream_id: "s".into(),
        };
        assert!(e.to_string().contains("OPENCTI_TOKEN"));
        assert!(e.to_string().contains("CONNECTOR_LIVE_STREAM_ID"));
        let e = StreamError::NotFound {
            url: "u".into(),
            stream_id: "s".into(),
        };
        assert!(e.to_string().contains("CONNECTOR_LIVE_STREAM_ID"));
    }
}
