//! The blocking HarfangLab REST client: one shared ureq `Agent` (connection reuse across worker
//! threads), `Authorization: Token`, a quick resend of a dropped connection, and every
//! threat-intel call the connector makes (startup probe, source lists, IOC rules, Sigma rules,
//! Yara files).
//!
//! Owns the wire: paths (always with the trailing `/`, except `/api/version`), status handling,
//! error classification and request statistics. It does not decide what to create or delete;
//! that is `sync`, which calls it through [`ThreatIntelApi`]. See `docs/harfanglab-api.md` §9.
//!
//! Retries: a call is resent only after a dropped connection, at most [`RetryPolicy::quick`]
//! (150 ms of waits in all, see [`Client::send`]). Timeouts, 429 and 5xx are returned at once,
//! classified by [`HarfangLabError::failure_kind`] with the server's `Retry-After`: the pipeline
//! owner waits for them without holding a worker (`crate::retry`, README "Failures and retries").
//!
//! Concurrency: every attempt holds a permit of the client's [`Limiter`] while it is on the wire
//! (`crate::concurrency`): a fixed cap (`HARFANGLAB_INTEL_WORKERS=<n>`) or an adaptive one
//! (`auto`) that follows the round trips, halves on 429/503 and holds new requests until their
//! `Retry-After` has passed. That hold, and a wait for a free slot, are the only waits before a
//! request: shutdown ends the hold at once and the wait for a slot after `shutdown_drain`.
//!
//! Shutdown: `Client::new` takes a `crossbeam_channel::Receiver<()>`. A message on it, or its
//! disconnection (every `Sender` dropped, the usual way to broadcast shutdown), ends a resend wait
//! at once with [`HarfangLabError::ShuttingDown`] (`retry::wait`). Requests already on the wire
//! finish (bounded by `request_timeout`).

use super::api::ThreatIntelApi;
use super::error::HarfangLabError;
use super::model::{
    ImportAnswer, IocRule, IocRuleBody, Page, ProbeReport, RemoteRule, RuleBody, RuleFilter,
    RuleKind, SourceKind, SourceList, SourceLists,
};
use crate::cause::Cause;
use crate::concurrency::{self, ConcurrencyLimit, Limiter, RequestOutcome};
use crate::retry::{self, RetryPolicy};
use crate::secret::Secret;
use crate::tls::CaBundleError;
use crate::translate::{IocKey, IocType};
use crossbeam_channel::Receiver;
use log::{debug, trace, warn};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Prefix of every threat-intel resource (§3).
pub const TI_PREFIX: &str = "/api/data/threat_intelligence";
/// Description given to the source lists this connector creates (the original connector's text).
pub const SOURCE_DESCRIPTION: &str = "Cyber Threat Intelligence knowledge imported from OpenCTI, and any changes must be made only to it.";
/// Error bodies are cut to this many characters in errors and logs.
const BODY_EXCERPT: usize = 500;
/// Largest response body read (a list page of 1000 rules with contents fits easily).
const MAX_BODY: u64 = 64 * 1024 * 1024;

/// Everything needed to build a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Manager URL, e.g. `https://abcdef0123456789.hurukai.io:8443`; a trailing `/` is stripped.
    pub base_url: String,
    /// API token (`Authorization: Token <key>`).
    pub token: Secret,
    /// Verify the server certificate (default true). Off is logged loudly at construction.
    pub verify_tls: bool,
    /// PEM bundle of the CA(s) to trust instead of the built-in web roots (private CAs).
    pub ca_file: Option<PathBuf>,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout (connect, send, receive, body).
    pub request_timeout: Duration,
    /// Resends of a request whose connection dropped (keep it short: a worker waits).
    pub retry: RetryPolicy,
    pub user_agent: String,
    /// `limit` of each list page.
    pub page_size: u32,
    /// A listing stops (with a warning) after this many objects.
    pub max_list_items: usize,
    /// Idle keep-alive connections kept in the pool (size it to the number of worker threads).
    pub max_idle_connections: usize,
    /// Take a proxy from `ALL_PROXY`/`HTTPS_PROXY`/`HTTP_PROXY`, honouring `NO_PROXY`.
    pub proxy_from_env: bool,
    /// Requests in flight at once: a fixed cap or the adaptive limit (`crate::concurrency`).
    pub concurrency: ConcurrencyLimit,
    /// After shutdown, how long a request may still wait for a free slot of that limit (the
    /// pipeline's shutdown deadline; `crate::concurrency`, "Shutdown").
    pub shutdown_drain: Duration,
}

/// Per-connection read buffer of the agent: holds a whole response header (a few hundred bytes
/// from HarfangLab; 16 KiB leaves room for a proxy's) and reads bodies in chunks of this size.
/// ureq zeroes both buffers of every pooled connection: at 32 workers each KiB here is 32 KiB
/// of RSS (`cargo bench --bench end_to_end`, memory breakdown).
const INPUT_BUFFER: usize = 16 * 1024;
/// Per-connection write buffer: our request header (under 1 KiB), then the body in chunks of
/// this size.
const OUTPUT_BUFFER: usize = 4 * 1024;

impl ClientOptions {
    /// Options with the defaults: TLS verified, 10 s connect, 60 s request, quick resends only
    /// ([`RetryPolicy::quick`]), pages of 500, lists capped at 100 000 objects.
    pub fn new(base_url: impl Into<String>, token: Secret) -> Self {
        ClientOptions {
            base_url: base_url.into(),
            token,
            verify_tls: true,
            ca_file: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            retry: RetryPolicy::quick(),
            user_agent: format!("harfanglab-intel/{}", env!("CARGO_PKG_VERSION")),
            page_size: 500,
            max_list_items: 100_000,
            max_idle_connections: 32,
            proxy_from_env: true,
            concurrency: ConcurrencyLimit::Fixed(concurrency::MAX_LIMIT),
            shutdown_drain: concurrency::DEFAULT_DRAIN,
        }
    }
}

/// Why a [`Client`] could not be built (configuration, not network).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientConfigError {
    /// The base URL is not `http(s)://host[:port]`.
    BaseUrl { url: String, detail: String },
    /// The CA bundle (`HARFANGLAB_INTEL_CA_FILE`) could not be read or holds no certificate.
    CaFile(CaBundleError),
}

impl fmt::Display for ClientConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientConfigError::BaseUrl { url, detail } => {
                let url = crate::secret::redact_url(url);
                write!(f, "invalid HarfangLab URL {url:?}: {detail}")
            }
            ClientConfigError::CaFile(e) => write!(f, "HarfangLab TLS setup: {e}"),
        }
    }
}

impl std::error::Error for ClientConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientConfigError::CaFile(e) => Some(e),
            ClientConfigError::BaseUrl { .. } => None,
        }
    }
}

/// The operations the client counts, one per kind of call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Version,
    FindSource,
    CreateSource,
    FindIoc,
    CreateIoc,
    UpdateIoc,
    DeleteIoc,
    GetRule,
    FindRules,
    CreateRule,
    UpdateRule,
    DeleteRule,
    /// A whole source list, page by page (inventory, reconciliation).
    List,
}

impl Op {
    pub const ALL: [Op; 13] = [
        Op::Version,
        Op::FindSource,
        Op::CreateSource,
        Op::FindIoc,
        Op::CreateIoc,
        Op::UpdateIoc,
        Op::DeleteIoc,
        Op::GetRule,
        Op::FindRules,
        Op::CreateRule,
        Op::UpdateRule,
        Op::DeleteRule,
        Op::List,
    ];

    /// Metric label.
    pub fn name(self) -> &'static str {
        match self {
            Op::Version => "version",
            Op::FindSource => "find_source",
            Op::CreateSource => "create_source",
            Op::FindIoc => "find_ioc",
            Op::CreateIoc => "create_ioc",
            Op::UpdateIoc => "update_ioc",
            Op::DeleteIoc => "delete_ioc",
            Op::GetRule => "get_rule",
            Op::FindRules => "find_rules",
            Op::CreateRule => "create_rule",
            Op::UpdateRule => "update_rule",
            Op::DeleteRule => "delete_rule",
            Op::List => "list",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The status codes counted one by one: what HarfangLab (and the proxies and load balancers in
/// front of it) answer in practice. Any other code is counted under its class (`4xx`, ...), an
/// exchange without an answer under `error`. A fixed table keeps the counters' memory bounded
/// whatever a server answers.
const COUNTED_STATUSES: [(u16, &str); 18] = [
    (200, "200"),
    (201, "201"),
    (204, "204"),
    (301, "301"),
    (302, "302"),
    (304, "304"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (409, "409"),
    (413, "413"),
    (429, "429"),
    (500, "500"),
    (502, "502"),
    (503, "503"),
    (504, "504"),
];

/// Labels of the slots after the counted codes: one per class, then codes outside 100-599, then
/// no answer at all.
const OTHER_SLOTS: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other", "error"];

/// Counter slots per operation.
const SLOTS: usize = COUNTED_STATUSES.len() + OTHER_SLOTS.len();

/// The counter slot of an exchange that ended with `status` (`None`: no HTTP answer).
fn status_slot(status: Option<u16>) -> usize {
    let table = COUNTED_STATUSES.len();
    match status {
        None => SLOTS - 1,
        Some(code) => match COUNTED_STATUSES.iter().position(|&(c, _)| c == code) {
            Some(i) => i,
            None if (100..600).contains(&code) => table + usize::from(code / 100 - 1),
            None => SLOTS - 2,
        },
    }
}

/// The metric label of a slot: the code itself, its class (`4xx`), `other` or `error`.
fn slot_label(slot: usize) -> &'static str {
    COUNTED_STATUSES
        .get(slot)
        .map(|&(_, label)| label)
        .unwrap_or_else(|| OTHER_SLOTS[slot - COUNTED_STATUSES.len()])
}

/// Request counters for metrics, shared by every clone of a [`Client`].
#[derive(Debug)]
pub struct ClientStats {
    requests: [[AtomicU64; SLOTS]; Op::ALL.len()],
    retries: [AtomicU64; Op::ALL.len()],
    /// Threads inside a quick resend wait (at most 150 ms each).
    waiting: AtomicU64,
}

impl Default for ClientStats {
    fn default() -> Self {
        ClientStats {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            retries: std::array::from_fn(|_| AtomicU64::new(0)),
            waiting: AtomicU64::new(0),
        }
    }
}

impl ClientStats {
    /// HTTP exchanges of `op` counted with `status` (`None`: no answer), each retry attempt
    /// included. A code outside the counted table shares its class's counter.
    pub fn requests(&self, op: Op, status: Option<u16>) -> u64 {
        self.requests[op.index()][status_slot(status)].load(Ordering::Relaxed)
    }

    /// All HTTP exchanges.
    pub fn total_requests(&self) -> u64 {
        self.requests
            .iter()
            .flatten()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Quick resends of `op` after a dropped connection (event retries are the pipeline's).
    pub fn retries_of(&self, op: Op) -> u64 {
        self.retries[op.index()].load(Ordering::Relaxed)
    }

    /// All retries.
    pub fn retries(&self) -> u64 {
        self.retries.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Threads inside a resend wait right now.
    pub fn waiting_to_retry(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Non-zero request counters as `(op, status label, count)`, for a metrics exporter: the
    /// label is the real code (`404`), its class (`4xx`) for a code outside the counted table,
    /// `other` for one outside 100-599, `error` for no answer.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for op in Op::ALL {
            for (slot, counter) in self.requests[op.index()].iter().enumerate() {
                let n = counter.load(Ordering::Relaxed);
                if n > 0 {
                    out.push((op.name(), slot_label(slot), n));
                }
            }
        }
        out
    }

    /// Count one exchange of `op` that ended with `status` (`None`: no answer).
    pub(crate) fn record(&self, op: Op, status: Option<u16>) {
        self.requests[op.index()][status_slot(status)].fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// An HTTP answer, read whole.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
    /// `Retry-After`, parsed when the answer came.
    retry_after: Option<Duration>,
    location: Option<String>,
}

/// One logical call: what to send and how to name it in errors.
struct Call<'a> {
    op: Op,
    /// `create IOCRule`, `find SigmaRule`, ... (the `op` of errors).
    label: String,
    method: Method,
    path: String,
    query: Vec<(&'a str, String)>,
    body: Option<String>,
}

/// The HarfangLab REST client. Cheap to clone; clones share the connection pool and statistics.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    agent: ureq::Agent,
    base: String,
    https: bool,
    /// `Token <key>`, kept as a `Secret` so it can never be formatted by accident.
    authorization: Secret,
    retry: RetryPolicy,
    page_size: u32,
    max_list_items: usize,
    shutdown: Receiver<()>,
    shutting_down: AtomicBool,
    stats: Arc<ClientStats>,
    limiter: Arc<Limiter>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &crate::secret::redact_url(&self.inner.base))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Build the client and its agent. Nothing is sent; call [`Client::probe`] for that.
    pub fn new(opts: ClientOptions, shutdown: Receiver<()>) -> Result<Client, ClientConfigError> {
        let base = normalise_base_url(&opts.base_url)?;
        let https = base.starts_with("https://");
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &opts.ca_file {
            tls = tls.root_certs(crate::tls::root_certs(path).map_err(ClientConfigError::CaFile)?);
        }
        if !opts.verify_tls {
            warn!(
                "TLS certificate verification is DISABLED for {}: anyone on the network path can impersonate HarfangLab and read the API token; set HARFANGLAB_INTEL_SSL_VERIFY=true (and HARFANGLAB_INTEL_CA_FILE for a private CA)",
                crate::secret::redact_url(&base)
            );
            tls = tls.disable_verification(true);
        }
        let proxy = if opts.proxy_from_env {
            ureq::Proxy::try_from_env()
        } else {
            None
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Never follow a redirect: a 301 from Django's APPEND_SLASH turns a POST into a GET
            // and drops a PATCH body (§3); we send canonical paths and report any 3xx.
            .max_redirects(0)
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_global(Some(opts.request_timeout))
            .user_agent(opts.user_agent.as_str())
            .accept("application/json")
            .tls_config(tls.build())
            .proxy(proxy)
            .max_idle_connections(opts.max_idle_connections.max(1))
            .max_idle_connections_per_host(opts.max_idle_connections.max(1))
            // ureq allocates (and zeroes) both buffers per connection, 128 KiB each by default:
            // with one pooled connection per worker that was most of the RSS at 32 workers.
            // Our bodies stream through the buffers in chunks (a page of 500 rules still
            // works); only a response header must fit in the input buffer.
            .input_buffer_size(INPUT_BUFFER)
            .output_buffer_size(OUTPUT_BUFFER)
            .build();
        Ok(Client {
            inner: Arc::new(Inner {
                agent: crate::resolver::agent(config),
                base,
                https,
                authorization: Secret::new(format!("Token {}", opts.token.expose())),
                retry: opts.retry,
                page_size: opts.page_size.max(1),
                max_list_items: opts.max_list_items.max(1),
                shutdown,
                shutting_down: AtomicBool::new(false),
                stats: Arc::new(ClientStats::default()),
                limiter: Arc::new(
                    Limiter::new(opts.concurrency).with_shutdown_drain(opts.shutdown_drain),
                ),
            }),
        })
    }

    /// Request and retry counters (shared by all clones).
    pub fn stats(&self) -> Arc<ClientStats> {
        Arc::clone(&self.inner.stats)
    }

    /// The limit on requests in flight (shared by all clones): its gauges, and what an `auto`
    /// worker pool grows to.
    pub fn limiter(&self) -> Arc<Limiter> {
        Arc::clone(&self.inner.limiter)
    }

    /// The limit when it is adaptive (`auto`): what the worker pool grows with
    /// (`PipelineOptions::worker_limit`).
    pub fn worker_limit(&self) -> Option<Arc<Limiter>> {
        self.inner.limiter.is_adaptive().then(|| self.limiter())
    }

    /// The normalised base URL (no trailing `/`).
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// Startup check: `GET /api/version` (logged, may need no auth), then
    /// `GET …/IOCSource/?limit=1`, which proves the token and the threat-intel read role.
    /// The error separates unreachable, TLS, 401 and 403.
    pub fn probe(&self) -> Result<ProbeReport, HarfangLabError> {
        let call = Call {
            op: Op::Version,
            label: "get version".to_owned(),
            method: Method::Get,
            path: "/api/version".to_owned(),
            query: Vec::new(),
            body: None,
        };
        let ans = self.send(&call)?;
        let version = if ans.status == 200 {
            serde_json::from_str::<serde_json::Value>(&ans.body)
                .ok()
                .and_then(|v| v.get("version")?.as_str().map(str::to_owned))
        } else {
            debug!("GET /api/version answered {}; going on", ans.status);
            None
        };
        let call = Call {
            op: Op::FindSource,
            label: "probe IOCSource".to_owned(),
            method: Method::Get,
            path: collection(SourceKind::Ioc.resource()),
            query: vec![("limit", "1".to_owned())],
            body: None,
        };
        let ans = self.send(&call)?;
        if ans.status != 200 {
            return Err(status_error(&call.label, &ans));
        }
        let page: Page<serde_json::Value> = decode(&call.label, &ans.body)?;
        Ok(ProbeReport {
            version,
            ioc_sources: page.count,
        })
    }

    /// Find-or-create the three source lists named `name` (IOC, Sigma, Yara).
    pub fn ensure_source_lists(&self, name: &str) -> Result<SourceLists, HarfangLabError> {
        Ok(SourceLists {
            ioc: self.ensure_source(SourceKind::Ioc, name)?.id,
            sigma: self.ensure_source(SourceKind::Sigma, name)?.id,
            yara: self.ensure_source(SourceKind::Yara, name)?.id,
        })
    }

    /// Find-or-create one source list. Race-safe: if another instance creates it between our
    /// lookup and our POST, the 400 "already exists" leads to a second lookup.
    pub fn ensure_source(
        &self,
        kind: SourceKind,
        name: &str,
    ) -> Result<SourceList, HarfangLabError> {
        if let Some(found) = self.find_source(kind, name)? {
            return Ok(found);
        }
        match self.create_source(kind, name) {
            Ok(created) => Ok(created),
            Err(HarfangLabError::AlreadyExists { op, body }) => self
                .find_source(kind, name)?
                .ok_or(HarfangLabError::AlreadyExists { op, body }),
            Err(e) => Err(e),
        }
    }

    /// The source list of this kind whose name is exactly `name`.
    pub fn find_source(
        &self,
        kind: SourceKind,
        name: &str,
    ) -> Result<Option<SourceList>, HarfangLabError> {
        let label = format!("find {}", kind.resource());
        let path = collection(kind.resource());
        let found: Vec<SourceList> = self.list_all(
            Op::FindSource,
            &label,
            &path,
            vec![("name__exact", name.to_owned())],
        )?;
        // `name__exact` should already filter, but an ignored filter would return everything.
        Ok(found.into_iter().find(|s| s.name == name))
    }

    /// POST a source list `{name, description, enabled: true}`.
    fn create_source(&self, kind: SourceKind, name: &str) -> Result<SourceList, HarfangLabError> {
        #[derive(Serialize)]
        struct NewSource<'a> {
            name: &'a str,
            description: &'a str,
            enabled: bool,
        }
        let label = format!("create {}", kind.resource());
        let body = NewSource {
            name,
            description: SOURCE_DESCRIPTION,
            enabled: true,
        };
        let ans = self.write(
            Op::CreateSource,
            &label,
            Method::Post,
            collection(kind.resource()),
            &body,
        )?;
        decode(&label, &ans.body)
    }

    /// Every object of one of our source lists (`resource` = `IOCRule`, `SigmaRule` or
    /// `YaraFile`), page by page: `visit` gets each page as it arrives, so a listing of a million
    /// rules never holds more than one page. No cap on the number of objects (unlike the
    /// lookups).
    pub fn visit_list<T: DeserializeOwned>(
        &self,
        resource: &str,
        source_id: &str,
        mut visit: impl FnMut(Vec<T>),
    ) -> Result<(), HarfangLabError> {
        let label = format!("list {resource}");
        self.pages(
            Op::List,
            &label,
            &collection(resource),
            vec![("source_id", source_id.to_owned())],
            usize::MAX,
            &mut visit,
        )
    }

    /// Every page of a list, by `offset += results.len()`, until `next` is null, a page is
    /// empty, `count` is reached or `max_list_items` is hit (warned).
    fn list_all<T: DeserializeOwned>(
        &self,
        op: Op,
        label: &str,
        path: &str,
        filters: Vec<(&str, String)>,
    ) -> Result<Vec<T>, HarfangLabError> {
        let mut out: Vec<T> = Vec::new();
        let max = self.inner.max_list_items;
        self.pages(op, label, path, filters, max, &mut |page: Vec<T>| {
            out.extend(page)
        })?;
        if out.len() > max {
            out.truncate(max);
        }
        Ok(out)
    }

    /// The paging loop of [`Client::list_all`] and [`Client::visit_list`]: stops after `max`
    /// objects (warned).
    fn pages<T: DeserializeOwned>(
        &self,
        op: Op,
        label: &str,
        path: &str,
        filters: Vec<(&str, String)>,
        max: usize,
        visit: &mut dyn FnMut(Vec<T>),
    ) -> Result<(), HarfangLabError> {
        let mut seen = 0usize;
        let mut offset = 0usize;
        loop {
            let mut query = filters.clone();
            query.push(("limit", self.inner.page_size.to_string()));
            query.push(("offset", offset.to_string()));
            let call = Call {
                op,
                label: label.to_owned(),
                method: Method::Get,
                path: path.to_owned(),
                query,
                body: None,
            };
            let ans = self.send(&call)?;
            if ans.status != 200 {
                return Err(status_error(label, &ans));
            }
            let page: Page<T> = decode(label, &ans.body)?;
            let n = page.results.len();
            visit(page.results);
            seen += n;
            offset += n;
            let reached_count = page.count.is_some_and(|c| offset as u64 >= c);
            if page.next.is_none() || n == 0 || reached_count {
                break;
            }
            if seen >= max {
                warn!(
                    "{label}: listing stopped at {seen} objects (max_list_items); results are incomplete"
                );
                break;
            }
        }
        Ok(())
    }

    /// Send a call; returns the answer whatever its status (callers decide what a status means,
    /// [`status_error`] classifies it), or the final transport error. The only retry here is
    /// [`RetryPolicy::quick`]-sized: a request whose connection dropped ([`HarfangLabError::
    /// Unreachable`]: a stale keep-alive connection, a reset) is sent again at once. Every
    /// request is safe to resend: reads and deletes are idempotent, and a create that did land
    /// meets "already exists", which the sync layer resolves. A timeout is not resent (the server
    /// may still be working on it, and it already held the worker for the whole request
    /// timeout), nor is any status: 429, 5xx and longer outages go back to the pipeline, which
    /// waits in its timer heap without holding a worker.
    fn send(&self, call: &Call<'_>) -> Result<Answer, HarfangLabError> {
        let inner = &*self.inner;
        let url = format!("{}{}", inner.base, call.path);
        let mut rng = fastrand::Rng::new();
        let mut retries: u32 = 0;
        loop {
            let permit = inner.limiter.acquire(&inner.shutdown).map_err(|_| {
                inner.shutting_down.store(true, Ordering::Relaxed);
                HarfangLabError::ShuttingDown {
                    op: call.label.clone(),
                }
            })?;
            let started = Instant::now();
            let result = self.exchange(call.method, &url, &call.query, call.body.as_deref());
            let ms = started.elapsed().as_millis();
            permit.finish(limiter_outcome(call.op, &result));
            let err = match result {
                Ok(ans) => {
                    inner.stats.record(call.op, Some(ans.status));
                    debug!(
                        "{} {} -> {} ({ms} ms)",
                        call.method.as_str(),
                        call.path,
                        ans.status
                    );
                    trace!("{} body: {}", call.label, excerpt(&ans.body));
                    return Ok(ans);
                }
                Err(e) => {
                    inner.stats.record(call.op, None);
                    let err = transport_error(&call.label, inner.https, e);
                    debug!(
                        "{} {} -> failed ({ms} ms): {err}",
                        call.method.as_str(),
                        call.path
                    );
                    err
                }
            };
            let dropped = matches!(err, HarfangLabError::Unreachable { .. });
            if !dropped || !inner.retry.allows(retries) {
                return Err(err);
            }
            let delay = inner.retry.backoff(retries, &mut rng);
            retries += 1;
            inner.stats.retries[call.op.index()].fetch_add(1, Ordering::Relaxed);
            debug!(
                "{}: {err}; resending ({retries}/{}) in {} ms",
                call.label,
                inner.retry.max_retries,
                delay.as_millis()
            );
            self.pause(&call.label, delay)?;
        }
    }

    /// Wait before a retry unless shutdown is signalled (then `ShuttingDown` at once).
    fn pause(&self, label: &str, delay: Duration) -> Result<(), HarfangLabError> {
        let inner = &*self.inner;
        let shutting_down = || HarfangLabError::ShuttingDown {
            op: label.to_owned(),
        };
        if inner.shutting_down.load(Ordering::Relaxed) {
            return Err(shutting_down());
        }
        inner.stats.waiting.fetch_add(1, Ordering::Relaxed);
        let waited = retry::wait(&inner.shutdown, delay);
        inner.stats.waiting.fetch_sub(1, Ordering::Relaxed);
        waited.map_err(|_| {
            // A message wakes one waiter only: remember it for every other thread.
            inner.shutting_down.store(true, Ordering::Relaxed);
            shutting_down()
        })
    }

    /// One HTTP exchange, body read whole.
    fn exchange(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, String)],
        body: Option<&str>,
    ) -> Result<Answer, ureq::Error> {
        let inner = &*self.inner;
        let auth = inner.authorization.expose();
        let pairs = query.iter().map(|(k, v)| (*k, v.as_str()));
        let mut resp = match method {
            Method::Get => inner
                .agent
                .get(url)
                .header("Authorization", auth)
                .query_pairs(pairs)
                .call()?,
            Method::Delete => inner
                .agent
                .delete(url)
                .header("Authorization", auth)
                .query_pairs(pairs)
                .call()?,
            Method::Post | Method::Patch => {
                let builder = if method == Method::Post {
                    inner.agent.post(url)
                } else {
                    inner.agent.patch(url)
                };
                builder
                    .header("Authorization", auth)
                    .header("Content-Type", "application/json")
                    .query_pairs(pairs)
                    .send(body.unwrap_or("{}"))?
            }
        };
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after =
            header("retry-after").and_then(|v| retry::parse_retry_after(&v, SystemTime::now()));
        let location = header("location");
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()?;
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            retry_after,
            location,
        })
    }

    fn rule_from_answer(
        &self,
        kind: RuleKind,
        label: &str,
        body: &RuleBody,
        ans: &Answer,
    ) -> Result<RemoteRule, HarfangLabError> {
        let value: serde_json::Value = decode(label, &ans.body)?;
        if value.get("status").is_none_or(|s| !s.is_array()) {
            // Some servers may answer the object itself (201), like the other resources.
            return serde_json::from_value(value).map_err(|e| HarfangLabError::Decode {
                op: label.to_owned(),
                detail: format!("{e}: {}", excerpt(&ans.body)),
            });
        }
        let answer: ImportAnswer =
            serde_json::from_value(value).map_err(|e| HarfangLabError::Decode {
                op: label.to_owned(),
                detail: format!("{e}: {}", excerpt(&ans.body)),
            })?;
        let Some(first) = answer.status.into_iter().next() else {
            return Err(HarfangLabError::RuleRejected {
                op: label.to_owned(),
                code: None,
                message: "the import answered an empty status list: nothing was created".to_owned(),
            });
        };
        let rejected = |message: String| HarfangLabError::RuleRejected {
            op: label.to_owned(),
            code: first.code,
            message,
        };
        if first.status == Some(false) {
            let message = excerpt(first.content.as_deref().unwrap_or("no reason given"));
            // A Sigma id clash (re-posting a rule without `overwrite`) is reported in the
            // envelope; the sync layer treats it like the IOC duplicate (find + update).
            if message.to_ascii_lowercase().contains("already exists") {
                return Err(HarfangLabError::AlreadyExists {
                    op: label.to_owned(),
                    body: message,
                });
            }
            return Err(rejected(message));
        }
        let Some(id) = first.id.clone().filter(|id| !id.is_empty()) else {
            return Err(rejected("the import status holds no object id".to_owned()));
        };
        match (first.filename, first.content) {
            (Some(name), Some(content)) => Ok(RemoteRule {
                id,
                name,
                content,
                source_id: Some(body.source_id.clone()),
                enabled: body.enabled,
                hl_status: Some(body.hl_status.clone()),
                rule_name: None,
                rule_names: Vec::new(),
            }),
            _ => self
                .get_rule(kind, &id)?
                .ok_or_else(|| HarfangLabError::Decode {
                    op: label.to_owned(),
                    detail: format!("created {} {id} is not readable (404)", kind.resource()),
                }),
        }
    }
}

/// What an exchange tells the concurrency limit: 429 and 503 are the server's own "too much";
/// 502/504 and transport failures (timeouts, resets) are a lost answer; any other answer is a
/// round trip, except a list page, whose size (not the queue) sets its time.
fn limiter_outcome(op: Op, result: &Result<Answer, ureq::Error>) -> RequestOutcome {
    match result {
        Ok(ans) => match ans.status {
            429 | 503 => RequestOutcome::Overloaded {
                retry_after: ans.retry_after,
            },
            502 | 504 => RequestOutcome::Dropped,
            _ if op == Op::List => RequestOutcome::Ignored,
            _ => RequestOutcome::Answered,
        },
        Err(_) => RequestOutcome::Dropped,
    }
}

impl ThreatIntelApi for Client {
    fn find_ioc(&self, source_id: &str, key: &IocKey) -> Result<Option<IocRule>, HarfangLabError> {
        let found: Vec<IocRule> = self.list_all(
            Op::FindIoc,
            "find IOCRule",
            &collection("IOCRule"),
            vec![
                ("source_id", source_id.to_owned()),
                ("type", key.ioc_type.as_str().to_owned()),
                ("value__exact", key.value.clone()),
            ],
        )?;
        // Re-check locally: uniqueness is (type, value, source) and an ignored filter would
        // return unrelated rules (§3, §5.5).
        Ok(found.into_iter().find(|r| {
            r.ioc_type == key.ioc_type.as_str()
                && same_value(key.ioc_type, &r.value, &key.value)
                && r.source_id.as_deref().is_none_or(|s| s == source_id)
        }))
    }

    fn create_ioc(&self, body: &IocRuleBody) -> Result<IocRule, HarfangLabError> {
        let label = "create IOCRule";
        let ans = self.write(
            Op::CreateIoc,
            label,
            Method::Post,
            collection("IOCRule"),
            body,
        )?;
        decode(label, &ans.body)
    }

    fn update_ioc(&self, id: &str, body: &IocRuleBody) -> Result<IocRule, HarfangLabError> {
        let label = "update IOCRule";
        let ans = self.write(
            Op::UpdateIoc,
            label,
            Method::Patch,
            detail("IOCRule", id),
            body,
        )?;
        decode(label, &ans.body)
    }

    fn delete_ioc(&self, id: &str) -> Result<(), HarfangLabError> {
        self.delete(Op::DeleteIoc, "delete IOCRule", detail("IOCRule", id))
    }

    fn get_rule(&self, kind: RuleKind, id: &str) -> Result<Option<RemoteRule>, HarfangLabError> {
        let label = format!("get {}", kind.resource());
        let ans = self.send(&Call {
            op: Op::GetRule,
            label: label.clone(),
            method: Method::Get,
            path: detail(kind.resource(), id),
            query: Vec::new(),
            body: None,
        })?;
        match ans.status {
            200 => decode(&label, &ans.body).map(Some),
            404 => Ok(None),
            _ => Err(status_error(&label, &ans)),
        }
    }

    fn find_rules(
        &self,
        kind: RuleKind,
        source_id: &str,
        filter: &RuleFilter,
    ) -> Result<Vec<RemoteRule>, HarfangLabError> {
        let label = format!("find {}", kind.resource());
        let mut query = vec![("source_id", source_id.to_owned())];
        match filter {
            RuleFilter::Name(name) => query.push(("name__exact", name.clone())),
            RuleFilter::Search(text) => query.push(("search", text.clone())),
            RuleFilter::All => {}
        }
        let found: Vec<RemoteRule> =
            self.list_all(Op::FindRules, &label, &collection(kind.resource()), query)?;
        Ok(found
            .into_iter()
            .filter(|r| r.source_id.as_deref().is_none_or(|s| s == source_id))
            .filter(|r| match filter {
                RuleFilter::Name(name) => &r.name == name,
                RuleFilter::Search(_) | RuleFilter::All => true,
            })
            .collect())
    }

    fn create_rule(&self, kind: RuleKind, body: &RuleBody) -> Result<RemoteRule, HarfangLabError> {
        let label = format!("create {}", kind.resource());
        let ans = self.write(
            Op::CreateRule,
            &label,
            Method::Post,
            collection(kind.resource()),
            body,
        )?;
        self.rule_from_answer(kind, &label, body, &ans)
    }

    fn update_rule(
        &self,
        kind: RuleKind,
        id: &str,
        body: &RuleBody,
    ) -> Result<RemoteRule, HarfangLabError> {
        let label = format!("update {}", kind.resource());
        let ans = self.write(
            Op::UpdateRule,
            &label,
            Method::Patch,
            detail(kind.resource(), id),
            body,
        )?;
        decode(&label, &ans.body)
    }

    fn delete_rule(&self, kind: RuleKind, id: &str) -> Result<(), HarfangLabError> {
        let label = format!("delete {}", kind.resource());
        self.delete(Op::DeleteRule, &label, detail(kind.resource(), id))
    }
}

impl Client {
    /// POST or PATCH a JSON `body`: 200 or 201 is done (the answer is handed back to decode),
    /// any other status is its error.
    fn write<T: Serialize>(
        &self,
        op: Op,
        label: &str,
        method: Method,
        path: String,
        body: &T,
    ) -> Result<Answer, HarfangLabError> {
        let ans = self.send(&Call {
            op,
            label: label.to_owned(),
            method,
            path,
            query: Vec::new(),
            body: Some(encode(label, body)?),
        })?;
        match ans.status {
            200 | 201 => Ok(ans),
            _ => Err(status_error(label, &ans)),
        }
    }

    /// DELETE: 204 or 200 is done, 404 means already gone.
    fn delete(&self, op: Op, label: &str, path: String) -> Result<(), HarfangLabError> {
        let ans = self.send(&Call {
            op,
            label: label.to_owned(),
            method: Method::Delete,
            path,
            query: Vec::new(),
            body: None,
        })?;
        match ans.status {
            200 | 202 | 204 => Ok(()),
            404 => {
                debug!("{label}: already gone (404)");
                Ok(())
            }
            _ => Err(status_error(label, &ans)),
        }
    }
}

/// `…/<Resource>/`
fn collection(resource: &str) -> String {
    format!("{TI_PREFIX}/{resource}/")
}

/// `…/<Resource>/<id>/`, the id percent-encoded so it stays one path segment.
fn detail(resource: &str, id: &str) -> String {
    let mut out = format!("{TI_PREFIX}/{resource}/");
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push('/');
    out
}

/// IOC values compare exactly, except hashes (hex, case-insensitive).
fn same_value(ioc_type: IocType, a: &str, b: &str) -> bool {
    match ioc_type {
        IocType::Hash => a.eq_ignore_ascii_case(b),
        _ => a == b,
    }
}

fn normalise_base_url(raw: &str) -> Result<String, ClientConfigError> {
    let base = raw.trim().trim_end_matches('/');
    let bad = |detail: &str| ClientConfigError::BaseUrl {
        url: raw.to_owned(),
        detail: detail.to_owned(),
    };
    let rest = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"))
        .ok_or_else(|| bad("it must start with https:// or http://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("it has no host"));
    }
    if rest.contains(['?', '#', ' ']) {
        return Err(bad("it must not hold a query, fragment or space"));
    }
    base.parse::<ureq::http::Uri>()
        .map_err(|e| bad(&e.to_string()))?;
    Ok(base.to_owned())
}

/// Map a ureq failure to our classification (retryable or not).
fn transport_error(label: &str, https: bool, e: ureq::Error) -> HarfangLabError {
    use std::io::ErrorKind;
    let op = label.to_owned();
    match e {
        ureq::Error::Timeout(_) => HarfangLabError::Timeout { op },
        ureq::Error::Io(ref io)
            if matches!(io.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) =>
        {
            HarfangLabError::Timeout { op }
        }
        // rustls reports handshake and certificate failures as InvalidData I/O errors.
        ureq::Error::Io(ref io) if https && io.kind() == ErrorKind::InvalidData => {
            HarfangLabError::Tls {
                op,
                source: Cause::new(e),
            }
        }
        ureq::Error::Tls(_)
        | ureq::Error::Pem(_)
        | ureq::Error::Rustls(_)
        | ureq::Error::TlsRequired => HarfangLabError::Tls {
            op,
            source: Cause::new(e),
        },
        ureq::Error::Io(_)
        | ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::Protocol(_)
        | ureq::Error::ConnectProxyFailed(_)
        | ureq::Error::BodyStalled => HarfangLabError::Unreachable {
            op,
            source: Cause::new(e),
        },
        other => HarfangLabError::Decode {
            op,
            detail: format!("request failed: {other}"),
        },
    }
}

/// The error for an answer the caller did not expect.
fn status_error(label: &str, ans: &Answer) -> HarfangLabError {
    let op = label.to_owned();
    let summary = summarise_body(&ans.body);
    match ans.status {
        401 => HarfangLabError::Unauthorized {
            op,
            detail: summary,
        },
        403 => HarfangLabError::Forbidden {
            op,
            detail: summary,
        },
        400 | 409 if ans.body.to_ascii_lowercase().contains("already exists") => {
            HarfangLabError::AlreadyExists { op, body: summary }
        }
        300..=399 => HarfangLabError::Status {
            op,
            status: ans.status,
            body: format!(
                "redirect to {} not followed (the client sends canonical paths; check the base URL)",
                crate::secret::redact_url(ans.location.as_deref().unwrap_or("?"))
            ),
            retry_after: None,
        },
        status => HarfangLabError::Status {
            op,
            status,
            body: summary,
            retry_after: ans.retry_after,
        },
    }
}

/// A short, readable form of an error body: DRF `detail`, else the compact JSON (field errors),
/// else the text; at most ~500 characters.
fn summarise_body(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => match map.get("detail") {
            Some(serde_json::Value::String(d)) if map.len() == 1 => excerpt(d),
            _ => excerpt(&serde_json::Value::Object(map).to_string()),
        },
        Ok(other) => excerpt(&other.to_string()),
        Err(_) if body.trim().is_empty() => "(empty body)".to_owned(),
        Err(_) => excerpt(body.trim()),
    }
}

/// At most `BODY_EXCERPT` characters, cut on a char boundary.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(BODY_EXCERPT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn decode<T: DeserializeOwned>(label: &str, body: &str) -> Result<T, HarfangLabError> {
    serde_json::from_str(body).map_err(|e| HarfangLabError::Decode {
        op: label.to_owned(),
        detail: format!("{e}: {}", excerpt(body)),
    })
}

fn encode<T: Serialize>(label: &str, body: &T) -> Result<String, HarfangLabError> {
    serde_json::to_string(body).map_err(|e| HarfangLabError::Decode {
        op: label.to_owned(),
        detail: format!("cannot encode the request: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::Retryable;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.to_owned(),
            retry_after: None,
            location: None,
        }
    }

    #[test]
    fn base_url_is_normalised_and_checked() {
        assert_eq!(
            normalise_base_url("https://hl.example:8443/").unwrap(),
            "https://hl.example:8443"
        );
        assert_eq!(
            normalise_base_url(" http://127.0.0.1:1 ").unwrap(),
            "http://127.0.0.1:1"
        );
        assert!(normalise_base_url("hl.example").is_err());
        assert!(normalise_base_url("https://").is_err());
        assert!(normalise_base_url("https://h/?x=1").is_err());
    }

    #[test]
    fn paths_keep_the_trailing_slash_and_one_segment_ids() {
        assert_eq!(
            collection("IOCRule"),
            "/api/data/threat_intelligence/IOCRule/"
        );
        assert_eq!(
            detail("SigmaRule", "2f17fbcc-ed10"),
            "/api/data/threat_intelligence/SigmaRule/2f17fbcc-ed10/"
        );
        assert_eq!(
            detail("YaraFile", "a/b?c"),
            "/api/data/threat_intelligence/YaraFile/a%2Fb%3Fc/"
        );
    }

    #[test]
    fn error_bodies_are_summarised_and_classified() {
        let e = status_error(
            "create IOCRule",
            &answer(
                400,
                r#"{"__all__": ["['Ioc rule with this Type, Value and Source already exists.']"]}"#,
            ),
        );
        assert!(matches!(e, HarfangLabError::AlreadyExists { .. }), "{e:?}");
        let e = status_error("x", &answer(401, r#"{"detail": "Invalid token."}"#));
        assert_eq!(
            e,
            HarfangLabError::Unauthorized {
                op: "x".into(),
                detail: "Invalid token.".into()
            }
        );
        assert!(e.is_fatal());
        let e = status_error("x", &answer(400, r#"{"value": ["bad hash"]}"#));
        assert_eq!(
            e,
            HarfangLabError::Status {
                op: "x".into(),
                status: 400,
                body: r#"{"value":["bad hash"]}"#.into(),
                retry_after: None,
            }
        );
        assert!(!e.is_retryable());
        let long = "é".repeat(2000);
        let e = status_error("x", &answer(500, &long));
        let HarfangLabError::Status { body, .. } = e else {
            panic!("expected Status")
        };
        assert_eq!(body.chars().count(), BODY_EXCERPT + 1);
        assert_eq!(summarise_body(""), "(empty body)");
    }

    #[test]
    fn stats_count_by_op_and_real_status() {
        let s = ClientStats::default();
        for status in [
            Some(201),
            Some(404),
            Some(404),
            Some(429),
            Some(503),
            Some(418),
        ] {
            s.record(Op::CreateIoc, status);
        }
        s.record(Op::CreateIoc, Some(999));
        s.record(Op::DeleteIoc, None);
        assert_eq!(s.requests(Op::CreateIoc, Some(201)), 1);
        assert_eq!(s.requests(Op::CreateIoc, Some(404)), 2);
        // 400 is its own counter: the 404s, 429 and 418 are not in it.
        assert_eq!(s.requests(Op::CreateIoc, Some(400)), 0);
        assert_eq!(s.total_requests(), 8);
        assert_eq!(
            s.snapshot(),
            vec![
                ("create_ioc", "201", 1),
                ("create_ioc", "404", 2),
                ("create_ioc", "429", 1),
                ("create_ioc", "503", 1),
                ("create_ioc", "4xx", 1),
                ("create_ioc", "other", 1),
                ("delete_ioc", "error", 1)
            ]
        );
    }

    #[test]
    fn every_status_has_one_slot_and_a_label() {
        for code in 0..=u16::MAX {
            let slot = status_slot(Some(code));
            assert!(slot < SLOTS - 1, "{code}");
            let label = slot_label(slot);
            let expected = match COUNTED_STATUSES.iter().find(|(c, _)| *c == code) {
                Some((_, l)) => l.to_string(),
                None if (100..600).contains(&code) => format!("{}xx", code / 100),
                None => "other".to_owned(),
            };
            assert_eq!(label, expected, "{code}");
        }
        assert_eq!(slot_label(status_slot(None)), "error");
    }

    #[test]
    fn hashes_compare_case_insensitively_only() {
        assert!(same_value(IocType::Hash, "ABCD", "abcd"));
        assert!(!same_value(IocType::DomainName, "A.com", "a.com"));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let (_tx, rx) = crossbeam_channel::unbounded();
        let opts = ClientOptions::new("http://127.0.0.1:9", Secret::new("tok-SECRET-1"));
        assert!(!format!("{opts:?}").contains("tok-SECRET-1"));
        let client = Client::new(opts, rx).unwrap();
        assert!(!format!("{client:?}").contains("tok-SECRET-1"));
    }

    /// The per-connection buffers are small (`INPUT_BUFFER`, `OUTPUT_BUFFER`): bodies far larger
    /// than them still go both ways, e.g. a page of 100 Yara files of 64 KiB each (6.4 MB).
    #[test]
    fn bodies_much_larger_than_the_buffers_go_both_ways() {
        use crate::harfanglab::model::{RuleBody, RuleFilter, RuleKind};
        use crate::sim::harfanglab::{SimConfig, serve};
        let sim = serve("127.0.0.1:0", SimConfig::default()).unwrap();
        let (_tx, rx) = crossbeam_channel::unbounded();
        let mut opts = ClientOptions::new(sim.base_url(), Secret::new(sim.token()));
        opts.proxy_from_env = false;
        let client = Client::new(opts, rx).unwrap();
        let lists = client.ensure_source_lists("big").unwrap();
        let pad = "x".repeat(64 * 1024);
        for n in 0..100 {
            let content = format!(
                "rule big_{n} {{\n  meta:\n    pad = \"{pad}\"\n  strings:\n    $a = \"n{n}\"\n  condition:\n    $a\n}}\n"
            );
            assert!(content.len() > INPUT_BUFFER + OUTPUT_BUFFER);
            let body = RuleBody {
                source_id: lists.yara.clone(),
                name: format!("big_{n}.yar"),
                content,
                hl_status: "stable".into(),
                enabled: true,
                overwrite: false,
            };
            client.create_rule(RuleKind::Yara, &body).unwrap();
        }
        let all = client
            .find_rules(RuleKind::Yara, &lists.yara, &RuleFilter::All)
            .unwrap();
        assert_eq!(all.len(), 100);
        assert!(all.iter().all(|r| r.content.contains(&pad)));
        sim.shutdown();
    }
}
