//! OpenCTI GraphQL client: `about`, `registerConnector`, `pingConnector`, `indicator(id)`.
//!
//! Owns the request bodies (opencti-protocol.md §3, §4) and how the platform version changes them.
//! GraphQL rejects unknown input fields and arguments, so `registerConnector` and `pingConnector`
//! send a field only from the release whose schema has it ([`FIELD_GATES`]: major, minor and
//! patch). An unparsable version (a development build) is taken as the newest release. The table
//! is not trusted alone: when the platform answers that it does not know a field or argument we
//! sent (graphql-js `Field "x" is not defined by type "T"`, `Unknown argument "x" on field ...`,
//! `Unknown type "T"`, any quoting, several errors: [`unknown_names`]), that field is dropped for
//! the rest of the process (shared by every clone of the client), logged once at `warn` with the
//! platform version, and the call is sent again. A platform that refuses even the required fields
//! is [`ApiError::Unsupported`], quoting its message.
//!
//! A request whose connection dropped is resent at most [`RetryPolicy::quick`] (the waits end at
//! once on shutdown); timeouts, 429 and 5xx are returned at once, classified by
//! [`ApiError::failure_kind`] with the server's `Retry-After`, for the caller to wait without
//! holding a worker (the pipeline's timer heap, startup's `until_up`, the next ping; README
//! "Failures and retries"). A GraphQL `errors` array becomes [`ApiError::Graphql`] with its messages;
//! 401/403 are [`ApiError::Auth`] (fatal: fix `OPENCTI_TOKEN`). The ping's state is the pycti
//! JSON (`state::Checkpoint::to_state_json`), and a ping answering an empty state while ours is not
//! is a reset from the UI ([`PingOutcome::Reset`], §3.4).

use super::{TlsOptions, USER_AGENT, base_url, tls_config};
use crate::cause::Cause;
use crate::retry::{self, FailureKind, RetryPolicy, Retryable};
use crate::secret::Secret;
use crate::state::Checkpoint;
use crate::tls::CaBundleError;
use crate::translate;
use crossbeam_channel::Receiver;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

/// Settings of the GraphQL client (the integrator maps `Config` onto it).
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// `OPENCTI_URL` (a trailing `/` is ignored).
    pub url: String,
    /// `OPENCTI_TOKEN`.
    pub token: Secret,
    pub tls: TlsOptions,
    /// Whole-request timeout (pycti uses 300 s).
    pub timeout: Duration,
    /// Resends of a request whose connection dropped (keep it short: a worker waits).
    pub retry: RetryPolicy,
    /// Extra headers (`OPENCTI_CUSTOM_HEADERS`), sent on GraphQL calls only (like pycti). Values
    /// may carry credentials, hence `Secret`.
    pub custom_headers: Vec<(String, Secret)>,
    /// Idle keep-alive connections kept in the pool: size it to the number of threads calling
    /// [`OpenCtiApi::indicator`] at once (the workers), or each call past it opens a new
    /// connection (ureq's default keeps 3 per host).
    pub max_idle_connections: usize,
}

/// Per-connection read buffer of the agent: holds a whole response header (16 KiB leaves room
/// for a proxy's) and reads bodies in chunks of this size (ureq's default is 128 KiB, allocated
/// and zeroed per connection: with one connection per worker, each KiB here is a KiB of RSS per
/// worker).
const INPUT_BUFFER: usize = 16 * 1024;
/// Per-connection write buffer: our request header (under 1 KiB), then the body in chunks of
/// this size.
const OUTPUT_BUFFER: usize = 4 * 1024;

impl ApiOptions {
    pub fn new(url: impl Into<String>, token: Secret) -> Self {
        ApiOptions {
            url: url.into(),
            token,
            tls: TlsOptions::default(),
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::quick(),
            custom_headers: Vec::new(),
            max_idle_connections: 8,
        }
    }
}

/// A failed GraphQL call, classified by what happens next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// Network error or timeout: unavailable. Only a dropped connection (`timeout` false) is
    /// resent by the client itself.
    Transport {
        op: &'static str,
        /// The `ureq::Error`.
        source: Cause,
        timeout: bool,
    },
    /// Non-2xx answer other than 401/403: 429 and 502-504 unavailable (with the server's
    /// `Retry-After`, if any), another 5xx transient, the rest permanent.
    Status {
        op: &'static str,
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    /// 401/403: the token is wrong or lacks a capability (fatal).
    Auth { op: &'static str, status: u16 },
    /// The answer carried GraphQL `errors` (not retried; e.g. missing capability, bad input).
    Graphql {
        op: &'static str,
        /// Every error's message, joined with ` | `.
        message: String,
        /// The first error's `name` or `extensions.code` (`BAD_USER_INPUT`, ...).
        name: Option<String>,
        /// Input fields, arguments and types the messages say the platform does not know.
        unknown: Vec<String>,
    },
    /// The platform refuses the call even without any of the optional fields: it does not know
    /// a field the call cannot do without (fatal: this platform release is not supported).
    Unsupported {
        op: &'static str,
        /// The platform version (`(unknown version)` when `about` gave no release number).
        version: String,
        /// Optional fields already dropped for this platform.
        dropped: Vec<&'static str>,
        /// The platform's messages.
        message: String,
    },
    /// The answer is not the expected JSON.
    Decode { op: &'static str, message: String },
    /// The CA bundle (`OPENCTI_CA_FILE`) cannot be used (fatal).
    Setup(CaBundleError),
    /// The TLS handshake or the certificate failed (fatal: `OPENCTI_SSL_VERIFY`,
    /// `OPENCTI_CA_FILE`; retrying cannot fix it). `source` is the `ureq::Error`.
    Tls { op: &'static str, source: Cause },
    /// Shutdown was requested during a resend wait.
    Shutdown,
}

/// What a retry means: transport failures, 429, 502-504 and shutdown are about the platform's
/// availability (or ours), another 5xx is transient, the rest permanent.
impl Retryable for ApiError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            ApiError::Transport { .. } | ApiError::Shutdown => FailureKind::UNAVAILABLE,
            ApiError::Status {
                status,
                retry_after,
                ..
            } => FailureKind::of_status(*status, *retry_after),
            _ => FailureKind::Permanent,
        }
    }
}

impl ApiError {
    /// Whether the error needs operator action (token, capability, setup).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ApiError::Auth { .. }
                | ApiError::Setup(_)
                | ApiError::Tls { .. }
                | ApiError::Unsupported { .. }
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Transport { op, source, .. } => {
                write!(
                    f,
                    "OpenCTI GraphQL {op}: cannot reach the platform: {source}"
                )
            }
            ApiError::Status {
                op, status, body, ..
            } => {
                write!(f, "OpenCTI GraphQL {op}: HTTP {status}: {body}")
            }
            ApiError::Auth { op, status } => {
                // OpenCTI answers a bad token with HTTP 200 and a GraphQL AUTH_REQUIRED error:
                // "HTTP 200" next to a refusal reads like a success, so name the GraphQL answer.
                let how = if (200..300).contains(status) {
                    "authentication failure in the GraphQL answer".to_owned()
                } else {
                    format!("HTTP {status}")
                };
                write!(
                    f,
                    "OpenCTI GraphQL {op}: OpenCTI refused OPENCTI_TOKEN ({how}): the token is \
                     invalid or its user lacks the capability (CONNECTORAPI to register/ping, \
                     KNOWLEDGE to read indicators)"
                )
            }
            ApiError::Graphql {
                op, message, name, ..
            } => match name {
                Some(n) => write!(f, "OpenCTI GraphQL {op}: {n}: {message}"),
                None => write!(f, "OpenCTI GraphQL {op}: {message}"),
            },
            ApiError::Unsupported {
                op,
                version,
                dropped,
                message,
            } => {
                let dropped = if dropped.is_empty() {
                    "none".to_owned()
                } else {
                    dropped.join(", ")
                };
                write!(
                    f,
                    "OpenCTI GraphQL {op}: OpenCTI {version} does not accept even the minimal \
                     {op} call (optional fields dropped: {dropped}); this OpenCTI release is not \
                     supported (README: Supported OpenCTI releases): {message}"
                )
            }
            ApiError::Decode { op, message } => {
                write!(f, "OpenCTI GraphQL {op}: unexpected answer: {message}")
            }
            ApiError::Setup(e) => write!(f, "OpenCTI client setup: {e}"),
            ApiError::Tls { op, source } => write!(
                f,
                "OpenCTI client setup: TLS failure talking to OpenCTI ({op}): {source}; check \
                 OPENCTI_SSL_VERIFY and OPENCTI_CA_FILE"
            ),
            ApiError::Shutdown => f.write_str("OpenCTI GraphQL call interrupted by shutdown"),
        }
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApiError::Transport { source, .. } | ApiError::Tls { source, .. } => {
                Some(source.error())
            }
            ApiError::Setup(e) => Some(e),
            _ => None,
        }
    }
}

/// A platform version `major.minor.patch` (from `about { version }`). Ordered field by field,
/// so `7.260817.0` (the 7.x `7.YYMMDD.N` scheme) is later than every 6.x.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlatformVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl PlatformVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> PlatformVersion {
        PlatformVersion {
            major,
            minor,
            patch,
        }
    }

    /// Lenient: `6.8.10`, `6.2`, `7.260817.0-rc1`; `None` when no leading number.
    pub fn parse(s: &str) -> Option<PlatformVersion> {
        let mut it = s.trim().trim_start_matches('v').split(['.', '-', '+']);
        let num = |p: Option<&str>| -> Option<u32> {
            let p = p?;
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        let major = num(it.next())?;
        let minor = num(it.next()).unwrap_or(0);
        let patch = num(it.next()).unwrap_or(0);
        Some(PlatformVersion::new(major, minor, patch))
    }
}

impl fmt::Display for PlatformVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Which call an optional field belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldSlot {
    /// A field of `registerConnector`'s `RegisterConnectorInput`.
    RegisterInput,
    /// An argument of `pingConnector` (and its variable).
    PingArgument,
}

/// A field the connector sends that a platform may not know, and the first release whose schema
/// has it. The required fields (`id`, `name`, `type`; the ping's `id` and `state`) are not here:
/// they are always sent and never dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldGate {
    pub name: &'static str,
    pub slot: FieldSlot,
    /// First release with it; `None`: in every release since 5.0 (still dropped if a platform
    /// says it does not know it).
    pub since: Option<PlatformVersion>,
    /// Other names a platform may blame for it (an argument's input type).
    pub also_named: &'static [&'static str],
}

impl FieldGate {
    /// Whether the table says `version` has it (an unknown version is taken as the newest).
    pub fn in_release(&self, version: Option<PlatformVersion>) -> bool {
        match (self.since, version) {
            (Some(since), Some(v)) => v >= since,
            _ => true,
        }
    }

    fn named(&self, name: &str) -> bool {
        self.name == name || self.also_named.contains(&name)
    }
}

const fn gate(name: &'static str, slot: FieldSlot, since: Option<PlatformVersion>) -> FieldGate {
    FieldGate {
        name,
        slot,
        since,
        also_named: &[],
    }
}

/// Where each optional field first appears, from `opencti-graphql/config/schema/opencti.graphql`
/// at each release tag (pycti follows the same steps).
pub const FIELD_GATES: &[FieldGate] = &[
    gate("scope", FieldSlot::RegisterInput, None),
    gate("auto", FieldSlot::RegisterInput, None),
    gate("only_contextual", FieldSlot::RegisterInput, None),
    gate(
        "playbook_compatible",
        FieldSlot::RegisterInput,
        Some(PlatformVersion::new(5, 11, 0)),
    ),
    gate(
        "listen_callback_uri",
        FieldSlot::RegisterInput,
        Some(PlatformVersion::new(6, 5, 7)),
    ),
    gate(
        "auto_update",
        FieldSlot::RegisterInput,
        Some(PlatformVersion::new(6, 8, 9)),
    ),
    gate(
        "enrichment_resolution",
        FieldSlot::RegisterInput,
        Some(PlatformVersion::new(6, 8, 9)),
    ),
    FieldGate {
        also_named: &["ConnectorInfoInput"],
        ..gate(
            "connectorInfo",
            FieldSlot::PingArgument,
            Some(PlatformVersion::new(6, 2, 12)),
        )
    },
];

/// Names a GraphQL error message says the schema does not know, in order: input fields
/// (graphql-js 16 `Field "x" is not defined by type "T".`, 17 `... not to include unknown field
/// "x"`), arguments (`Unknown argument "x" on field "T.f".`) and types (`Unknown type "T".`).
/// Double, single or back quotes, escaped or not; several per message. Other errors give none.
pub fn unknown_names(message: &str) -> Vec<String> {
    // ASCII lower-casing keeps byte offsets, so positions found in `lower` index `message`.
    let lower = message.to_ascii_lowercase();
    let mut found: Vec<(usize, String)> = Vec::new();
    let mut scan = |marker: &str, followed_by: Option<&str>| {
        for (at, _) in lower.match_indices(marker) {
            let Some((name, end)) = quoted_name(message, at + marker.len()) else {
                continue;
            };
            let tail_ok = followed_by.is_none_or(|t| lower[end..].trim_start().starts_with(t));
            if tail_ok && !found.iter().any(|(_, n)| *n == name) {
                found.push((at, name));
            }
        }
    };
    scan("field ", Some("is not defined by type"));
    scan("unknown field ", None);
    scan("unknown argument ", None);
    scan("unknown type ", None);
    found.sort();
    found.into_iter().map(|(_, n)| n).collect()
}

/// A quoted GraphQL name starting at `from` (after spaces and backslashes); returns it and the
/// offset just past its closing quote.
fn quoted_name(s: &str, from: usize) -> Option<(String, usize)> {
    let rest = s.get(from..)?;
    let open = rest.trim_start_matches([' ', '\\']);
    let quote = open
        .chars()
        .next()
        .filter(|c| matches!(c, '"' | '\'' | '`'))?;
    let body = &open[1..];
    let len = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let close = body[len..].trim_start_matches('\\');
    if len == 0 || !close.starts_with(quote) {
        return None;
    }
    let end = s.len() - close.len() + 1;
    Some((body[..len].to_owned(), end))
}

/// Optional fields the platform said it does not know: not sent again for the life of the
/// process. Shared by every clone of an [`OpenCtiApi`].
#[derive(Debug, Default)]
struct DroppedFields(Mutex<BTreeSet<&'static str>>);

impl DroppedFields {
    fn names(&self) -> MutexGuard<'_, BTreeSet<&'static str>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What `registerConnector` sends (pycti defaults for a stream connector).
#[derive(Clone, Debug)]
pub struct Registration {
    /// `CONNECTOR_ID` (uuid).
    pub id: String,
    /// `CONNECTOR_NAME`.
    pub name: String,
    /// `CONNECTOR_SCOPE` split on `,`.
    pub scope: Vec<String>,
}

/// The part of the register answer a stream connector needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub id: String,
    /// Raw `connector_state` (null, `""` or pycti JSON).
    pub connector_state: Option<String>,
}

/// What a ping learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PingOutcome {
    /// The platform stored and returned our state.
    Stored,
    /// We sent a state and got an empty one back: "reset state" from the UI (§3.4). The caller
    /// restarts from the first-run position and must not push the old state again.
    Reset,
    /// The platform answered another non-empty state (another instance?). Logged by the caller.
    Diverged(String),
}

/// An indicator as read by the minimal query of §4.3.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct GqlIndicator {
    pub id: String,
    pub standard_id: Option<String>,
    pub entity_type: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub pattern_type: Option<String>,
    pub pattern: Option<String>,
    pub confidence: Option<i64>,
    pub x_opencti_score: Option<i64>,
    pub x_mitre_platforms: Option<Vec<Option<String>>>,
    pub revoked: Option<bool>,
    pub valid_from: Option<String>,
    pub valid_until: Option<String>,
    pub observables: Option<Connection>,
}

/// GraphQL `{ edges { node } }` connection of observables.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Connection {
    pub edges: Vec<Edge>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Edge {
    pub node: ObservableNode,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ObservableNode {
    pub id: String,
    pub standard_id: Option<String>,
    pub entity_type: String,
    pub observable_value: Option<String>,
}

impl GqlIndicator {
    /// The translation input (internal id as identity, observables from `based-on`).
    pub fn to_translate(&self) -> translate::Indicator {
        translate::Indicator {
            id: if self.id.is_empty() {
                self.standard_id.clone().unwrap_or_default()
            } else {
                self.id.clone()
            },
            standard_id: self.standard_id.clone(),
            name: self.name.clone().unwrap_or_default(),
            description: self.description.clone(),
            pattern_type: self.pattern_type.clone().unwrap_or_default(),
            pattern: self.pattern.clone().unwrap_or_default(),
            score: self.x_opencti_score,
            platforms: self
                .x_mitre_platforms
                .iter()
                .flatten()
                .flatten()
                .cloned()
                .collect(),
            revoked: self.revoked.unwrap_or(false),
            observables: self
                .observables
                .iter()
                .flat_map(|c| &c.edges)
                .filter_map(|e| {
                    Some(translate::LinkedObservable {
                        entity_type: e.node.entity_type.clone(),
                        value: e.node.observable_value.clone()?,
                        id: (!e.node.id.is_empty()).then(|| e.node.id.clone()),
                        standard_id: e.node.standard_id.clone(),
                    })
                })
                .collect(),
        }
    }
}

pub const ABOUT_QUERY: &str = "query healthCheck { about { version } }";
pub const REGISTER_MUTATION: &str = "mutation RegisterConnector($input: RegisterConnectorInput) { registerConnector(input: $input) { id connector_state } }";
/// The ping with `connectorInfo` (releases from 6.2.12).
pub const PING_MUTATION_WITH_INFO: &str = "mutation PingConnector($id: ID!, $state: String, $connectorInfo: ConnectorInfoInput) { pingConnector(id: $id, state: $state, connectorInfo: $connectorInfo) { id connector_state } }";
/// The ping every release knows.
pub const PING_MUTATION: &str = "mutation PingConnector($id: ID!, $state: String) { pingConnector(id: $id, state: $state) { id connector_state } }";
pub const INDICATOR_QUERY: &str = "query Indicator($id: String!) { indicator(id: $id) { id standard_id entity_type name description pattern_type pattern confidence x_opencti_score x_mitre_platforms revoked valid_from valid_until observables { edges { node { id standard_id entity_type observable_value } } } } }";

/// The `registerConnector` input (§3.1, pycti's values for a stream connector) with the optional
/// fields `send` keeps.
fn register_input(reg: &Registration, send: impl Fn(&str) -> bool) -> Value {
    let mut input = json!({
        "id": reg.id,
        "name": reg.name,
        "type": "STREAM",
    });
    let optional = [
        ("scope", json!(reg.scope)),
        ("auto", json!(false)),
        ("only_contextual", json!(false)),
        ("playbook_compatible", json!(false)),
        ("listen_callback_uri", Value::Null),
        ("auto_update", json!(false)),
        ("enrichment_resolution", json!("none")),
    ];
    for (name, value) in optional {
        if send(name) {
            input[name] = value;
        }
    }
    input
}

/// The `pingConnector` variables (§3.2). `state` is `None` before any position exists.
fn ping_variables(id: &str, state: Option<&Checkpoint>, connector_info: bool) -> Value {
    let state = state.map_or_else(|| "null".to_owned(), Checkpoint::to_state_json);
    let mut vars = json!({ "id": id, "state": state });
    if connector_info {
        vars["connectorInfo"] = json!({
            "run_and_terminate": false,
            "buffering": false,
            "queue_threshold": 500.0,
            "queue_messages_size": 0.0,
            "next_run_datetime": null,
            "last_run_datetime": null,
        });
    }
    vars
}

/// Whether a returned `connector_state` is empty (reset or never set).
fn is_empty_state(s: Option<&str>) -> bool {
    matches!(
        s.map(str::trim),
        None | Some("") | Some("null") | Some("{}")
    )
}

/// Blocking GraphQL client. Cheap to clone (the agent is shared).
#[derive(Clone)]
pub struct OpenCtiApi {
    agent: ureq::Agent,
    endpoint: String,
    opts: ApiOptions,
    shutdown: Option<Receiver<()>>,
    retries: Arc<RetryActivity>,
    /// Optional fields the platform refused, left out of every later call by every clone.
    dropped: Arc<DroppedFields>,
}

/// Resend activity shared by every clone of an [`OpenCtiApi`] (the service watchdog counts a
/// resend as a sign of life).
#[derive(Debug, Default)]
pub struct RetryActivity {
    /// Resends made after a dropped connection (attempts after the first).
    pub retries: AtomicU64,
    /// Threads inside a resend wait right now (each at most [`RetryPolicy::quick`]).
    pub waiting: AtomicU64,
}

impl RetryActivity {
    /// Count a retry and one more waiting thread, until the guard drops.
    fn enter_wait(&self) -> WaitGuard<'_> {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.waiting.fetch_add(1, Ordering::Relaxed);
        WaitGuard(&self.waiting)
    }
}

/// Decrements the waiting gauge on drop (also on an early shutdown return).
struct WaitGuard<'a>(&'a AtomicU64);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for OpenCtiApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenCtiApi")
            .field("endpoint", &crate::secret::redact_url(&self.endpoint))
            .finish_non_exhaustive()
    }
}

impl OpenCtiApi {
    pub fn new(opts: ApiOptions) -> Result<OpenCtiApi, ApiError> {
        let tls = tls_config(&opts.tls).map_err(ApiError::Setup)?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(opts.timeout))
            .timeout_connect(Some(Duration::from_secs(15).min(opts.timeout)))
            .user_agent(USER_AGENT)
            .tls_config(tls)
            .max_idle_connections(opts.max_idle_connections.max(1))
            .max_idle_connections_per_host(opts.max_idle_connections.max(1))
            // Small per-connection buffers (see `INPUT_BUFFER`): the defaults (2 × 128 KiB,
            // zeroed) cost RSS per pooled connection and CPU per new one.
            .input_buffer_size(INPUT_BUFFER)
            .output_buffer_size(OUTPUT_BUFFER)
            .build();
        Ok(OpenCtiApi {
            agent: crate::resolver::agent(config),
            endpoint: format!("{}/graphql", base_url(&opts.url)),
            opts,
            shutdown: None,
            retries: Arc::default(),
            dropped: Arc::default(),
        })
    }

    /// The retry activity of this client and its clones.
    pub fn retry_activity(&self) -> Arc<RetryActivity> {
        Arc::clone(&self.retries)
    }

    /// Resend waits end (with [`ApiError::Shutdown`]) when this receiver is disconnected.
    pub fn with_shutdown(mut self, shutdown: Receiver<()>) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// `about { version }`: the platform version string.
    pub fn about(&self) -> Result<String, ApiError> {
        let data = self.call("about", ABOUT_QUERY, json!({}))?;
        data.pointer("/about/version")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Decode {
                op: "about",
                message: "no about.version".into(),
            })
    }

    /// `registerConnector` with the input the platform version supports (less what the
    /// platform said it does not know).
    pub fn register_connector(
        &self,
        reg: &Registration,
        version: Option<PlatformVersion>,
    ) -> Result<Registered, ApiError> {
        const OP: &str = "registerConnector";
        let data = loop {
            let sent = self.sendable(FieldSlot::RegisterInput, version);
            let vars = json!({ "input": register_input(reg, |f| sent.contains(&f)) });
            match self.call(OP, REGISTER_MUTATION, vars) {
                Ok(data) => break data,
                Err(e) => self.drop_unknown(e, &sent, version)?,
            }
        };
        let c = data
            .get("registerConnector")
            .filter(|c| c.is_object())
            .ok_or_else(|| ApiError::Decode {
                op: OP,
                message: "registerConnector is null".into(),
            })?;
        Ok(Registered {
            id: c
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or(&reg.id)
                .to_owned(),
            connector_state: c
                .get("connector_state")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// `pingConnector` with our state; tells whether the platform reset it.
    pub fn ping_connector(
        &self,
        id: &str,
        state: Option<&Checkpoint>,
        version: Option<PlatformVersion>,
    ) -> Result<PingOutcome, ApiError> {
        let data = loop {
            let sent = self.sendable(FieldSlot::PingArgument, version);
            let info = sent.contains(&"connectorInfo");
            let query = if info {
                PING_MUTATION_WITH_INFO
            } else {
                PING_MUTATION
            };
            match self.call("pingConnector", query, ping_variables(id, state, info)) {
                Ok(data) => break data,
                Err(e) => self.drop_unknown(e, &sent, version)?,
            }
        };
        let returned = data
            .pointer("/pingConnector/connector_state")
            .and_then(Value::as_str);
        let sent = state.map(Checkpoint::to_state_json);
        Ok(match (sent, returned) {
            (Some(_), r) if is_empty_state(r) => PingOutcome::Reset,
            (Some(s), Some(r)) if s != r => {
                // Same position written differently (e.g. by pycti) is not a divergence.
                if Checkpoint::from_state_json(r) == state.cloned() {
                    PingOutcome::Stored
                } else {
                    PingOutcome::Diverged(r.to_owned())
                }
            }
            _ => PingOutcome::Stored,
        })
    }

    /// The optional fields of `slot` to send to `version`: those its release has, less those
    /// the platform already refused.
    fn sendable(&self, slot: FieldSlot, version: Option<PlatformVersion>) -> Vec<&'static str> {
        FIELD_GATES
            .iter()
            .filter(|g| {
                g.slot == slot && g.in_release(version) && !self.dropped.names().contains(g.name)
            })
            .map(|g| g.name)
            .collect()
    }

    /// After a failed call that sent the optional fields `sent`: `Ok` when the platform named
    /// some of them as unknown (they are dropped for good, logged once; the caller sends again),
    /// else the error to return ([`ApiError::Unsupported`] when it names a field the call
    /// cannot drop).
    fn drop_unknown(
        &self,
        err: ApiError,
        sent: &[&'static str],
        version: Option<PlatformVersion>,
    ) -> Result<(), ApiError> {
        let ApiError::Graphql {
            op,
            message,
            unknown,
            ..
        } = &err
        else {
            return Err(err);
        };
        if unknown.is_empty() {
            return Err(err);
        }
        let shown = version.map_or_else(|| "(unknown version)".to_owned(), |v| v.to_string());
        let mut dropped_any = false;
        for g in FIELD_GATES.iter().filter(|g| sent.contains(&g.name)) {
            if !unknown.iter().any(|n| g.named(n)) {
                continue;
            }
            dropped_any = true;
            // `insert` is true the first time only: one warning per field and process.
            if self.dropped.names().insert(g.name) {
                let expected = match g.since {
                    Some(since) if g.in_release(version) => {
                        format!(" (the connector expected it from {since} on)")
                    }
                    _ => String::new(),
                };
                log::warn!(
                    "OpenCTI {shown} does not know `{}` in {op}{expected}: not sending it again \
                     (the platform said: {message})",
                    g.name
                );
            }
        }
        if dropped_any {
            return Ok(());
        }
        Err(ApiError::Unsupported {
            op,
            version: shown,
            dropped: self.dropped.names().iter().copied().collect(),
            message: message.clone(),
        })
    }

    /// `indicator(id)` by internal or standard id; `None` when the platform answers null.
    pub fn indicator(&self, id: &str) -> Result<Option<GqlIndicator>, ApiError> {
        let data = self.call("indicator", INDICATOR_QUERY, json!({ "id": id }))?;
        match data.get("indicator") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| ApiError::Decode {
                    op: "indicator",
                    message: e.to_string(),
                }),
        }
    }

    /// POST, resending after a dropped connection (at most `opts.retry`, a quick policy);
    /// returns the `data` object.
    fn call(&self, op: &'static str, query: &str, variables: Value) -> Result<Value, ApiError> {
        let body = json!({ "query": query, "variables": variables }).to_string();
        let mut rng = fastrand::Rng::new();
        let mut retries = 0u32;
        loop {
            match self.call_once(op, &body) {
                Err(e @ ApiError::Transport { timeout: false, .. })
                    if self.opts.retry.allows(retries) =>
                {
                    let delay = self.opts.retry.backoff(retries, &mut rng);
                    log::debug!("{e}; resending in {} ms", delay.as_millis());
                    retries += 1;
                    let _waiting = self.retries.enter_wait();
                    // No shutdown channel given (tests, one-shot tools): a wait nothing ends early.
                    let never = crossbeam_channel::never();
                    let shutdown = self.shutdown.as_ref().unwrap_or(&never);
                    if retry::wait(shutdown, delay).is_err() {
                        return Err(ApiError::Shutdown);
                    }
                }
                other => return other,
            }
        }
    }

    fn call_once(&self, op: &'static str, body: &str) -> Result<Value, ApiError> {
        let mut req = self
            .agent
            .post(&self.endpoint)
            .header(
                "Authorization",
                &format!("Bearer {}", self.opts.token.expose()),
            )
            .header("Content-Type", "application/json")
            .header("Accept", "application/json");
        for (k, v) in &self.opts.custom_headers {
            req = req.header(k, v.expose());
        }
        let mut resp = req.send(body).map_err(|e| match e {
            // A certificate problem needs the operator (OPENCTI_SSL_VERIFY / OPENCTI_CA_FILE);
            // retrying cannot fix it.
            ureq::Error::Tls(_)
            | ureq::Error::Pem(_)
            | ureq::Error::Rustls(_)
            | ureq::Error::TlsRequired => ApiError::Tls {
                op,
                source: Cause::new(e),
            },
            e => transport_error(op, e),
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| transport_error(op, e))?;
        if status == 401 || status == 403 {
            return Err(ApiError::Auth { op, status });
        }
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let errors = parsed
            .as_ref()
            .and_then(|v| v.get("errors"))
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty());
        if let Some(errors) = errors {
            let name = errors[0]
                .get("name")
                .or_else(|| errors[0].pointer("/extensions/code"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            // OpenCTI reports a bad token as a GraphQL error (AUTH_REQUIRED) with HTTP 200.
            if matches!(name.as_deref(), Some("AUTH_REQUIRED" | "FORBIDDEN_ACCESS")) {
                return Err(ApiError::Auth { op, status });
            }
            let messages: Vec<&str> = errors
                .iter()
                .map(|e| {
                    e.get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown GraphQL error")
                })
                .collect();
            let mut unknown: Vec<String> = Vec::new();
            for n in messages.iter().flat_map(|m| unknown_names(m)) {
                if !unknown.contains(&n) {
                    unknown.push(n);
                }
            }
            return Err(ApiError::Graphql {
                op,
                message: messages.join(" | "),
                name,
                unknown,
            });
        }
        if !(200..300).contains(&status) {
            return Err(ApiError::Status {
                op,
                status,
                body: text.chars().take(500).collect(),
                retry_after,
            });
        }
        match parsed.and_then(|mut v| v.get_mut("data").map(Value::take)) {
            Some(d) if d.is_object() => Ok(d),
            _ => Err(ApiError::Decode {
                op,
                message: format!(
                    "no `data` object in: {}",
                    text.chars().take(200).collect::<String>()
                ),
            }),
        }
    }
}

/// A request that got no answer: a timeout (not resent) or a dropped connection.
fn transport_error(op: &'static str, e: ureq::Error) -> ApiError {
    let timeout = match &e {
        ureq::Error::Timeout(_) => true,
        ureq::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        _ => false,
    };
    ApiError::Transport {
        op,
        source: Cause::new(e),
        timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_leniently() {
        let v = |s| PlatformVersion::parse(s);
        assert_eq!(
            v("6.8.10"),
            Some(PlatformVersion {
                major: 6,
                minor: 8,
                patch: 10
            })
        );
        assert_eq!(v("7.260817.0-rc1").map(|v| v.minor), Some(260817));
        assert_eq!(v("5.12").map(|v| v.patch), Some(0));
        assert_eq!(v("dev"), None);
    }

    fn sent_by_release(slot: FieldSlot, version: &str) -> Vec<&'static str> {
        let v = PlatformVersion::parse(version);
        FIELD_GATES
            .iter()
            .filter(|g| g.slot == slot && g.in_release(v))
            .map(|g| g.name)
            .collect()
    }

    #[test]
    fn gates_are_exact_to_the_patch_release() {
        use FieldSlot::{PingArgument, RegisterInput};
        let base = ["scope", "auto", "only_contextual"];
        let with = |extra: &[&'static str]| [&base[..], extra].concat();
        let cases: [(&str, Vec<&str>); 10] = [
            ("5.10.3", with(&[])),
            ("5.11.0", with(&["playbook_compatible"])),
            ("6.4.9", with(&["playbook_compatible"])),
            ("6.5.6", with(&["playbook_compatible"])),
            (
                "6.5.7",
                with(&["playbook_compatible", "listen_callback_uri"]),
            ),
            (
                "6.8.8",
                with(&["playbook_compatible", "listen_callback_uri"]),
            ),
            (
                "6.8.9",
                with(&[
                    "playbook_compatible",
                    "listen_callback_uri",
                    "auto_update",
                    "enrichment_resolution",
                ]),
            ),
            (
                "6.9.1",
                with(&[
                    "playbook_compatible",
                    "listen_callback_uri",
                    "auto_update",
                    "enrichment_resolution",
                ]),
            ),
            (
                "7.260817.0",
                with(&[
                    "playbook_compatible",
                    "listen_callback_uri",
                    "auto_update",
                    "enrichment_resolution",
                ]),
            ),
            // A development build is taken as the newest release.
            (
                "dev",
                with(&[
                    "playbook_compatible",
                    "listen_callback_uri",
                    "auto_update",
                    "enrichment_resolution",
                ]),
            ),
        ];
        for (version, want) in cases {
            assert_eq!(sent_by_release(RegisterInput, version), want, "{version}");
        }
        for (version, info) in [
            ("6.1.9", false),
            ("6.2.0", false),
            ("6.2.11", false),
            ("6.2.12", true),
            ("6.3.0", true),
            ("7.250101.3", true),
        ] {
            let got = sent_by_release(PingArgument, version) == ["connectorInfo"];
            assert_eq!(got, info, "{version}");
        }
    }

    #[test]
    fn register_input_has_the_required_fields_and_the_kept_optional_ones() {
        let reg = Registration {
            id: "c1".into(),
            name: "HarfangLab".into(),
            scope: vec!["harfanglab".into()],
        };
        let keys = |keep: &[&str]| {
            let i = register_input(&reg, |f| keep.contains(&f));
            let mut k: Vec<String> = i.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k.join(",")
        };
        assert_eq!(keys(&[]), "id,name,type");
        assert_eq!(
            keys(&["scope", "listen_callback_uri"]),
            "id,listen_callback_uri,name,scope,type"
        );
        let all: Vec<&str> = FIELD_GATES
            .iter()
            .filter(|g| g.slot == FieldSlot::RegisterInput)
            .map(|g| g.name)
            .collect();
        // Every register gate has a value in the input (and nothing else is optional).
        assert_eq!(
            keys(&all).split(',').count(),
            3 + all.len(),
            "{}",
            keys(&all)
        );
    }

    #[test]
    fn unknown_names_reads_graphql_js_messages_in_any_quoting() {
        let cases: [(&str, &[&str]); 9] = [
            (
                r#"Variable "$input" got invalid value { id: "c1", name: "x", listen_callback_uri: null }; Field "listen_callback_uri" is not defined by type "RegisterConnectorInput"."#,
                &["listen_callback_uri"],
            ),
            (
                r#"Variable "$input" got invalid value {...}; Field "auto_udpate" is not defined by type "RegisterConnectorInput". Did you mean "auto_update"?"#,
                &["auto_udpate"],
            ),
            // graphql-js 17.
            (
                r#"Variable "$input" has invalid value: Expected value of type "RegisterConnectorInput" not to include unknown field "enrichment_resolution", found: { id: "c1" }."#,
                &["enrichment_resolution"],
            ),
            (
                r#"Unknown argument "connectorInfo" on field "Mutation.pingConnector"."#,
                &["connectorInfo"],
            ),
            (
                r#"Unknown type "ConnectorInfoInput"."#,
                &["ConnectorInfoInput"],
            ),
            // graphql-core style single quotes, escaped quotes, back quotes.
            (
                "Field 'auto_update' is not defined by type 'RegisterConnectorInput'.",
                &["auto_update"],
            ),
            (
                r#"Unknown argument "connectorInfo" on field "Mutation.pingConnector"."#,
                &["connectorInfo"],
            ),
            (
                "unknown type `ConnectorInfoInput`; Unknown argument `connectorInfo`",
                &["ConnectorInfoInput", "connectorInfo"],
            ),
            // Not about unknown names.
            (
                r#"Field "RegisterConnectorInput.name" of required type "String!" was not provided. Cannot query field "x" on type "Connector"."#,
                &[],
            ),
        ];
        for (message, want) in cases {
            assert_eq!(unknown_names(message), want, "{message}");
        }
    }

    #[test]
    fn unsupported_quotes_the_platform_and_is_fatal() {
        let e = ApiError::Unsupported {
            op: "registerConnector",
            version: "5.3.0".into(),
            dropped: vec!["playbook_compatible"],
            message: r#"Field "type" is not defined by type "RegisterConnectorInput"."#.into(),
        };
        assert!(e.is_fatal() && !e.is_retryable());
        let text = e.to_string();
        assert!(text.contains("OpenCTI 5.3.0"), "{text}");
        assert!(text.contains("playbook_compatible"), "{text}");
        assert!(text.contains(r#"Field "type" is not defined"#), "{text}");
    }

    #[test]
    fn errors_never_show_the_token_and_classify() {
        let e = ApiError::Auth {
            op: "about",
            status: 401,
        };
        assert!(e.is_fatal() && !e.is_retryable());
        assert!(e.to_string().contains("OPENCTI_TOKEN"));
        assert!(
            e.to_string()
                .contains("OpenCTI refused OPENCTI_TOKEN (HTTP 401)"),
            "{e}"
        );
        // A GraphQL AUTH_REQUIRED comes with HTTP 200: no "HTTP 200" that reads like success.
        let graphql = ApiError::Auth {
            op: "about",
            status: 200,
        }
        .to_string();
        assert!(
            graphql.contains(
                "OpenCTI refused OPENCTI_TOKEN (authentication failure in the GraphQL answer)"
            ),
            "{graphql}"
        );
        assert!(!graphql.contains("HTTP 200"), "{graphql}");
        let s = ApiError::Status {
            op: "x",
            status: 503,
            body: String::new(),
            retry_after: Some(Duration::from_secs(7)),
        };
        assert!(s.is_retryable());
        assert_eq!(
            s.failure_kind(),
            FailureKind::Unavailable {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        let s500 = ApiError::Status {
            op: "x",
            status: 500,
            body: String::new(),
            retry_after: None,
        };
        assert_eq!(s500.failure_kind(), FailureKind::Transient);
        assert_eq!(ApiError::Shutdown.failure_kind(), FailureKind::UNAVAILABLE);
    }
}
