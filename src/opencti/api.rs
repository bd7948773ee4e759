//! OpenCTI GraphQL client: `about`, `registerConnector`, `pingConnector`, `indicator(id)`.
//!
//! Owns the request bodies (opencti-protocol.md §3, §4) and how the platform version changes them:
//! GraphQL rejects unknown input fields, so `registerConnector` sends only what the platform knows
//! (5.x / 6.0-6.4: base fields; 6.5+: `listen_callback_uri`; 6.8+: `auto_update`,
//! `enrichment_resolution`), and `pingConnector` sends `connectorInfo` only from 6.2. An unknown
//! version gets the smallest input (base fields, no `connectorInfo`), which every version accepts.
//!
//! Transport errors, timeouts, 429 and 5xx are retried with exponential backoff (the waits end at
//! once on shutdown); a GraphQL `errors` array becomes [`ApiError::Graphql`] with its message;
//! 401/403 are [`ApiError::Auth`] (fatal: fix `OPENCTI_TOKEN`). The ping's state is the pycti
//! JSON (`state::Checkpoint::to_state_json`), and a ping answering an empty state while ours is not
//! is a reset from the UI ([`PingOutcome::Reset`], §3.4).

use super::{TlsOptions, USER_AGENT, base_url, tls_config};
use crate::secret::Secret;
use crate::state::Checkpoint;
use crate::translate;
use crossbeam_channel::Receiver;
use serde::Deserialize;
use serde_json::{Value, json};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// Retries after the first attempt for retryable failures.
    pub max_retries: u32,
    /// First backoff delay; doubles per retry, with jitter, capped at 60 s.
    pub backoff: Duration,
    /// Extra headers (`OPENCTI_CUSTOM_HEADERS`), sent on GraphQL calls only (like pycti). Values
    /// may carry credentials, hence `Secret`.
    pub custom_headers: Vec<(String, Secret)>,
    /// Idle keep-alive connections kept in the pool: size it to the number of threads calling
    /// [`OpenCtiApi::indicator`] at once (the workers), or each call past it opens a new
    /// connection (ureq's default keeps 3 per host).
    pub max_idle_connections: usize,
}

/// Per-connection read buffer of the agent: holds a whole response header and reads bodies in
/// chunks of this size (ureq's default is 128 KiB, allocated and zeroed per connection).
const INPUT_BUFFER: usize = 32 * 1024;
/// Per-connection write buffer: a request header, then the body in chunks of this size.
const OUTPUT_BUFFER: usize = 16 * 1024;

impl ApiOptions {
    pub fn new(url: impl Into<String>, token: Secret) -> Self {
        ApiOptions {
            url: url.into(),
            token,
            tls: TlsOptions::default(),
            timeout: Duration::from_secs(60),
            max_retries: 4,
            backoff: Duration::from_secs(1),
            custom_headers: Vec::new(),
            max_idle_connections: 8,
        }
    }
}

/// A failed GraphQL call, classified by what happens next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// Network error or timeout (retryable).
    Transport { op: &'static str, message: String },
    /// Non-2xx answer other than 401/403 (`retryable` for 429 and 5xx).
    Status {
        op: &'static str,
        status: u16,
        body: String,
    },
    /// 401/403: the token is wrong or lacks a capability (fatal).
    Auth { op: &'static str, status: u16 },
    /// The answer carried GraphQL `errors` (not retried; e.g. missing capability, bad input).
    Graphql {
        op: &'static str,
        message: String,
        name: Option<String>,
    },
    /// The answer is not the expected JSON.
    Decode { op: &'static str, message: String },
    /// Setup problem (TLS bundle, URL).
    Setup(String),
    /// Shutdown was requested during a backoff wait.
    Shutdown,
}

impl ApiError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Transport { .. } => true,
            ApiError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// Whether the error needs operator action (token, capability, setup).
    pub fn is_fatal(&self) -> bool {
        matches!(self, ApiError::Auth { .. } | ApiError::Setup(_))
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Transport { op, message } => {
                write!(
                    f,
                    "OpenCTI GraphQL {op}: cannot reach the platform: {message}"
                )
            }
            ApiError::Status { op, status, body } => {
                write!(f, "OpenCTI GraphQL {op}: HTTP {status}: {body}")
            }
            ApiError::Auth { op, status } => write!(
                f,
                "OpenCTI GraphQL {op}: HTTP {status}: OPENCTI_TOKEN is invalid or its user lacks \
                 the capability (CONNECTORAPI to register/ping, KNOWLEDGE to read indicators)"
            ),
            ApiError::Graphql { op, message, name } => match name {
                Some(n) => write!(f, "OpenCTI GraphQL {op}: {n}: {message}"),
                None => write!(f, "OpenCTI GraphQL {op}: {message}"),
            },
            ApiError::Decode { op, message } => {
                write!(f, "OpenCTI GraphQL {op}: unexpected answer: {message}")
            }
            ApiError::Setup(m) => write!(f, "OpenCTI client setup: {m}"),
            ApiError::Shutdown => f.write_str("OpenCTI GraphQL call interrupted by shutdown"),
        }
    }
}

impl std::error::Error for ApiError {}

/// A platform version `major.minor.patch` (from `about { version }`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlatformVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl PlatformVersion {
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
        Some(PlatformVersion {
            major,
            minor,
            patch,
        })
    }

    fn at_least(self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
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
pub const PING_MUTATION_V62: &str = "mutation PingConnector($id: ID!, $state: String, $connectorInfo: ConnectorInfoInput) { pingConnector(id: $id, state: $state, connectorInfo: $connectorInfo) { id connector_state } }";
pub const PING_MUTATION_V5: &str = "mutation PingConnector($id: ID!, $state: String) { pingConnector(id: $id, state: $state) { id connector_state } }";
pub const INDICATOR_QUERY: &str = "query Indicator($id: String!) { indicator(id: $id) { id standard_id entity_type name description pattern_type pattern confidence x_opencti_score x_mitre_platforms revoked valid_from valid_until observables { edges { node { id standard_id entity_type observable_value } } } } }";

/// The `registerConnector` input for a platform version (§3.1).
fn register_input(reg: &Registration, version: Option<PlatformVersion>) -> Value {
    let mut input = json!({
        "id": reg.id,
        "name": reg.name,
        "type": "STREAM",
        "scope": reg.scope,
        "auto": false,
        "only_contextual": false,
        "playbook_compatible": false,
    });
    if let (Some(v), Some(obj)) = (version, input.as_object_mut()) {
        if v.at_least(6, 5) {
            obj.insert("listen_callback_uri".into(), Value::Null);
        }
        if v.at_least(6, 8) {
            obj.insert("auto_update".into(), json!(false));
            obj.insert("enrichment_resolution".into(), json!("none"));
        }
    }
    input
}

/// The `pingConnector` variables (§3.2). `state` is `None` before any position exists.
fn ping_variables(id: &str, state: Option<&Checkpoint>, version: Option<PlatformVersion>) -> Value {
    let state = state.map_or_else(|| "null".to_owned(), Checkpoint::to_state_json);
    let mut vars = json!({ "id": id, "state": state });
    if version.is_some_and(|v| v.at_least(6, 2)) {
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
}

/// Retry activity shared by every clone of an [`OpenCtiApi`] (the service watchdog reads it:
/// a call sitting in retries during an outage is not a wedged worker).
#[derive(Debug, Default)]
pub struct RetryActivity {
    /// Retries scheduled (attempts after the first).
    pub retries: AtomicU64,
    /// Threads inside a retry wait right now.
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
        })
    }

    /// The retry activity of this client and its clones.
    pub fn retry_activity(&self) -> Arc<RetryActivity> {
        Arc::clone(&self.retries)
    }

    /// Backoff waits end (with [`ApiError::Shutdown`]) when this receiver is disconnected.
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

    /// `registerConnector` with the input the platform version supports.
    pub fn register_connector(
        &self,
        reg: &Registration,
        version: Option<PlatformVersion>,
    ) -> Result<Registered, ApiError> {
        let vars = json!({ "input": register_input(reg, version) });
        let data = self.call("registerConnector", REGISTER_MUTATION, vars)?;
        let c = data
            .get("registerConnector")
            .filter(|c| c.is_object())
            .ok_or_else(|| ApiError::Decode {
                op: "registerConnector",
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
        let query = if version.is_some_and(|v| v.at_least(6, 2)) {
            PING_MUTATION_V62
        } else {
            PING_MUTATION_V5
        };
        let data = self.call("pingConnector", query, ping_variables(id, state, version))?;
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

    /// POST with retries; returns the `data` object.
    fn call(&self, op: &'static str, query: &str, variables: Value) -> Result<Value, ApiError> {
        let body = json!({ "query": query, "variables": variables }).to_string();
        let mut attempt = 0u32;
        loop {
            match self.call_once(op, &body) {
                Err(e) if e.is_retryable() && attempt < self.opts.max_retries => {
                    let delay = backoff_delay(self.opts.backoff, attempt);
                    log::warn!("{e}; retrying in {delay:?}");
                    attempt += 1;
                    let _waiting = self.retries.enter_wait();
                    if let Some(rx) = &self.shutdown {
                        if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) | Ok(()) =
                            rx.recv_timeout(delay)
                        {
                            return Err(ApiError::Shutdown);
                        }
                    } else {
                        // No shutdown channel given: plain wait (tests, one-shot tools).
                        let (_tx, rx) = crossbeam_channel::bounded::<()>(0);
                        let _ = rx.recv_timeout(delay);
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
            | ureq::Error::TlsRequired => ApiError::Setup(format!(
                "TLS failure talking to OpenCTI ({op}): {e}; check OPENCTI_SSL_VERIFY and OPENCTI_CA_FILE"
            )),
            e => ApiError::Transport {
                op,
                message: e.to_string(),
            },
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| ApiError::Transport {
                op,
                message: e.to_string(),
            })?;
        if status == 401 || status == 403 {
            return Err(ApiError::Auth { op, status });
        }
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        if let Some(err) = parsed
            .as_ref()
            .and_then(|v| v.get("errors"))
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("unknown GraphQL error")
                .to_owned();
            let name = err
                .get("name")
                .or_else(|| err.pointer("/extensions/code"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            // OpenCTI reports a bad token as a GraphQL error (AUTH_REQUIRED) with HTTP 200.
            if matches!(name.as_deref(), Some("AUTH_REQUIRED" | "FORBIDDEN_ACCESS")) {
                return Err(ApiError::Auth { op, status });
            }
            return Err(ApiError::Graphql { op, message, name });
        }
        if !(200..300).contains(&status) {
            return Err(ApiError::Status {
                op,
                status,
                body: text.chars().take(500).collect(),
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

/// Exponential backoff with ±25 % jitter, capped at 60 s.
pub(crate) fn backoff_delay(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let capped = exp.min(Duration::from_secs(60));
    let jitter = 0.75 + fastrand::f64() * 0.5;
    capped.mul_f64(jitter).min(Duration::from_secs(60))
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

    #[test]
    fn register_input_follows_the_version() {
        let reg = Registration {
            id: "c1".into(),
            name: "HarfangLab".into(),
            scope: vec!["harfanglab".into()],
        };
        let keys = |v: Option<&str>| {
            let i = register_input(&reg, v.and_then(PlatformVersion::parse));
            let mut k: Vec<String> = i.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k.join(",")
        };
        let base = "auto,id,name,only_contextual,playbook_compatible,scope,type";
        assert_eq!(keys(None), base);
        assert_eq!(keys(Some("5.12.0")), base);
        assert_eq!(keys(Some("6.4.9")), base);
        assert_eq!(
            keys(Some("6.5.0")),
            "auto,id,listen_callback_uri,name,only_contextual,playbook_compatible,scope,type"
        );
        assert_eq!(
            keys(Some("6.8.10")),
            "auto,auto_update,enrichment_resolution,id,listen_callback_uri,name,only_contextual,playbook_compatible,scope,type"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Duration::from_secs(1);
        assert!(backoff_delay(b, 0) <= Duration::from_millis(1250));
        assert!(backoff_delay(b, 3) >= Duration::from_secs(6));
        assert!(backoff_delay(b, 30) <= Duration::from_secs(60));
    }

    #[test]
    fn errors_never_show_the_token_and_classify() {
        let e = ApiError::Auth {
            op: "about",
            status: 401,
        };
        assert!(e.is_fatal() && !e.is_retryable());
        assert!(e.to_string().contains("OPENCTI_TOKEN"));
        let s = ApiError::Status {
            op: "x",
            status: 503,
            body: String::new(),
        };
        assert!(s.is_retryable());
    }
}
