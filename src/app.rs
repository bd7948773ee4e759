//! What the commands do once `main` has parsed the arguments: `run`, `demo`, `check`, `translate`,
//! `healthcheck`.
//!
//! `main` owns arguments, signals and the process exit; this module owns the work and the glue
//! around it (reading the configuration, printing reports, choosing the exit code). `run`/`demo`
//! are extension points the pipeline wires; `check` reports the configuration, the local
//! prerequisites and what live probes of both ends found (OpenCTI GraphQL and live stream,
//! HarfangLab token, permission and source lists; it writes nothing); `translate` is the offline
//! translation of an indicator file, one JSON line out per indicator; `healthcheck` asks a running
//! connector's `/healthz` on the loopback interface (the container `HEALTHCHECK`).

use crate::config::{self, Config, ConfigError, RawConfig, TlsVerify};
use crate::harfanglab::HarfangLabError;
use crate::harfanglab::client::Client;
use crate::harfanglab::model::SourceKind;
use crate::indicator_file::{IndicatorReader, InputItem};
use crate::opencti::api::{ApiError, OpenCtiApi, PlatformVersion};
use crate::opencti::stream::{self, ProbeError};
use crate::retry::RetryPolicy;
use crate::translate::{Indicator, TranslateError, Translation};
use rayon::prelude::*;
use serde::Serialize;
use std::fmt;
use std::io::{self, BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the command failed at run time (I/O, a failed check, `translate --strict` errors).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the configuration (or the command line) is invalid.
pub const EXIT_CONFIG: u8 = 2;

/// Why a command failed at run time. Fatal for the command: `main` logs it and exits 1.
#[derive(Debug)]
pub enum AppError {
    /// The service stopped with a fatal error.
    Service(crate::service::ServiceError),
    /// The demo failed.
    Demo(crate::demo::DemoError),
    /// The `translate` input cannot be read.
    Input { path: String, source: io::Error },
    /// Standard output cannot be written.
    Output(io::Error),
}

impl AppError {
    /// A closed pipe on stdout (`translate ... | head`) is not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, AppError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Service(e) => write!(f, "{e}"),
            AppError::Demo(e) => write!(f, "{e}"),
            AppError::Input { path, source } => write!(f, "cannot read {path}: {source}"),
            AppError::Output(e) => write!(f, "cannot write the output: {e}"),
        }
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppError::Input { source, .. } | AppError::Output(source) => Some(source),
            AppError::Service(e) => Some(e),
            AppError::Demo(e) => Some(e),
        }
    }
}

/// Run the connector until `shutdown` fires (signals) or a fatal error.
pub fn run(config: &Config, shutdown: &crate::pipeline::Shutdown) -> Result<(), AppError> {
    let s = crate::service::run(config, shutdown).map_err(AppError::Service)?;
    log::info!(
        "stopped after {}: {} applied, {} skipped, {} failed, {} abandoned; checkpoint {}",
        humantime::format_duration(std::time::Duration::from_secs(s.elapsed.as_secs())),
        s.stats.applied,
        s.stats.skipped,
        s.stats.failed,
        s.stats.abandoned,
        s.watermark.as_deref().unwrap_or("none")
    );
    Ok(())
}

/// Run the self-contained demo (simulated OpenCTI and HarfangLab) and print its report;
/// `stop` (the signal handler's) ends it early.
pub fn demo(out: &mut dyn Write, stop: &crate::pipeline::Shutdown) -> Result<(), AppError> {
    let opts = crate::demo::DemoOptions {
        stop: stop.clone(),
        ..crate::demo::DemoOptions::default()
    };
    let result = crate::demo::run_demo(&opts).map_err(AppError::Demo)?;
    out.write_all(result.render().as_bytes())
        .and_then(|()| out.flush())
        .map_err(AppError::Output)
}

/// Turn a command's result into its exit code: a closed stdout pipe is success, any other error
/// is logged once and exits 1.
pub fn exit_code(result: Result<(), AppError>) -> u8 {
    match result {
        Ok(()) => EXIT_OK,
        Err(e) if e.is_broken_pipe() => EXIT_OK,
        Err(e) => {
            log::error!("{e}");
            EXIT_FAILURE
        }
    }
}

/// Read the configuration file (explicit `path`, else the default locations) and the process
/// environment. On failure the problem is written to `err` and `Err` holds the exit code (2).
pub fn read_raw_config(path: Option<&Path>, err: &mut dyn Write) -> Result<RawConfig, u8> {
    RawConfig::load(path, &config::process_env).map_err(|e| config_failure(&e, err))
}

/// Write a configuration error for a person and return [`EXIT_CONFIG`]. Written to `err`
/// directly (stderr in `main`): it must reach the operator even before logging is set up.
pub fn config_failure(e: &ConfigError, err: &mut dyn Write) -> u8 {
    let _ = writeln!(err, "harfanglab-intel: {e}");
    if matches!(e, ConfigError::Invalid(_)) {
        let _ = writeln!(
            err,
            "Set each of them in the environment or in the YAML config file \
             (see config.yml.sample and the README's configuration reference)."
        );
    }
    EXIT_CONFIG
}

/// The configuration for `run`: read and validate it, start logging at its level, log its
/// warnings and summary. `Err` is the exit code, the problem already written to `err`.
pub fn load_config(path: Option<&Path>, dry_run: bool, err: &mut dyn Write) -> Result<Config, u8> {
    let raw = read_raw_config(path, err)?;
    crate::logging::init(raw.log_level());
    for w in raw.warnings() {
        log::warn!("{w}");
    }
    let mut config = Config::from_raw(&raw).map_err(|e| config_failure(&e, err))?;
    config.harfanglab.dry_run |= dry_run;
    for w in config.warnings() {
        log::warn!("{w}");
    }
    log::info!(
        "harfanglab-intel {} starting: {}",
        env!("CARGO_PKG_VERSION"),
        config.summary()
    );
    Ok(config)
}

/// The `check` command: print every setting with its origin, then the [`check`] report, to
/// `out`. Exit 0 when every check passed, 1 when one failed, 2 on a configuration error.
pub fn check_command(
    path: Option<&Path>,
    dry_run: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let raw = match read_raw_config(path, err) {
        Ok(raw) => raw,
        Err(code) => return code,
    };
    let _ = writeln!(out, "{}", settings_report(&raw));
    for w in raw.warnings() {
        let _ = writeln!(out, "[WARN] config file: {w}");
    }
    let mut config = match Config::from_raw(&raw) {
        Ok(c) => c,
        Err(e) => return config_failure(&e, err),
    };
    config.harfanglab.dry_run |= dry_run;
    // Flushed before the probes so a slow probe does not hold back the settings.
    let _ = out.flush();
    let report = check(&config);
    let _ = write!(out, "{report}");
    let _ = out.flush();
    if report.passed() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }
}

/// The `translate` command: translate `file` (standard input for `None` or `-`) to `out`, log
/// the counts. Exit 0, or 1 when the input or output fails, or (`strict`) any item failed. A
/// closed output pipe (`| head`) stops it quietly with 0.
pub fn translate_command(file: Option<&Path>, strict: bool, out: &mut dyn Write) -> u8 {
    let result = match open_input(file) {
        Ok((name, input)) => translate(input, &name, out),
        Err(e) => Err(e),
    };
    match result {
        Ok(s) => {
            log::info!("translated {} item(s), {} with an error", s.items, s.failed);
            if strict && s.failed > 0 {
                EXIT_FAILURE
            } else {
                EXIT_OK
            }
        }
        Err(e) => exit_code(Err(e)),
    }
}

/// How long `healthcheck` waits for `/healthz`, connection included: below the container
/// `HEALTHCHECK --timeout=5s`, so a hung connector reads as "unhealthy: timed out", not as a
/// killed probe.
pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Why `healthcheck` found the connector unhealthy. Every variant exits 1.
#[derive(Debug)]
pub enum HealthcheckError {
    /// `CONNECTOR_EXPOSE_METRICS` is off: there is no endpoint to ask.
    NotEnabled,
    /// Nothing answered at `url` (connection refused, timeout, reset).
    Unreachable { url: String, detail: String },
    /// `/healthz` answered something other than 200; `body` is its (JSON) reasons.
    Unhealthy { status: u16, body: String },
}

impl fmt::Display for HealthcheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthcheckError::NotEnabled => f.write_str(
                "metrics are not exposed (CONNECTOR_EXPOSE_METRICS is false), so there is no \
                 /healthz to ask: set CONNECTOR_EXPOSE_METRICS=true for the connector and for \
                 this command",
            ),
            HealthcheckError::Unreachable { url, detail } => {
                write!(f, "cannot reach {url}: {detail}")
            }
            HealthcheckError::Unhealthy { status, body } => {
                write!(f, "unhealthy (HTTP {status}): {body}")
            }
        }
    }
}

impl std::error::Error for HealthcheckError {}

/// Where `healthcheck` asks: the configured metrics port on the loopback interface. The probe
/// runs inside the connector's own host or container, so loopback always reaches a server bound
/// to `0.0.0.0`/`::` (the default) or to loopback, and the check never leaves the machine. A
/// server bound to one non-loopback address is not reachable this way. `None` when metrics are
/// not exposed.
pub fn healthz_address(config: &Config) -> Option<SocketAddr> {
    let bind = config.connector.metrics_addr?;
    let ip = match bind.ip() {
        IpAddr::V6(v6) if v6.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    Some(SocketAddr::new(ip, bind.port()))
}

/// `GET http://<addr>/healthz` with `timeout` for the whole exchange, no proxy, no redirect.
/// `Ok` on 200; otherwise why not.
pub fn probe_healthz(addr: SocketAddr, timeout: Duration) -> Result<(), HealthcheckError> {
    let url = format!("http://{addr}/healthz");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        // Loopback only: an HTTP_PROXY in the container environment must not see this request.
        .proxy(None)
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut response = agent
        .get(&url)
        .call()
        .map_err(|e| HealthcheckError::Unreachable {
            url: url.clone(),
            detail: e.to_string(),
        })?;
    let status = response.status().as_u16();
    if status == 200 {
        return Ok(());
    }
    // The 503 body is a short JSON reason list; cap it so a stranger on the port cannot flood us.
    let body = response
        .body_mut()
        .with_config()
        .limit(4096)
        .read_to_string()
        .unwrap_or_else(|e| format!("(body unreadable: {e})"));
    Err(HealthcheckError::Unhealthy {
        status,
        body: body.trim().to_owned(),
    })
}

/// The `healthcheck` command: read the configuration like `run`, ask `/healthz` on the loopback
/// interface, print one line. Exit 0 healthy, 1 unhealthy or unreachable, 2 on a configuration
/// error. Logging is not started: the container runtime keeps this output, one line is enough.
pub fn healthcheck_command(path: Option<&Path>, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let raw = match read_raw_config(path, err) {
        Ok(raw) => raw,
        Err(code) => return code,
    };
    let config = match Config::from_raw(&raw) {
        Ok(c) => c,
        Err(e) => return config_failure(&e, err),
    };
    let result = healthz_address(&config)
        .ok_or(HealthcheckError::NotEnabled)
        .and_then(|addr| probe_healthz(addr, HEALTHCHECK_TIMEOUT).map(|()| addr));
    match result {
        Ok(addr) => {
            let _ = writeln!(out, "healthy (http://{addr}/healthz)");
            EXIT_OK
        }
        Err(e) => {
            let _ = writeln!(err, "harfanglab-intel: {e}");
            EXIT_FAILURE
        }
    }
}

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckStatus {
    Ok,
    Warn,
    Fail,
}

/// One line of the `check` report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckItem {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
}

/// What `check` found. `main` prints it and exits 1 when any item failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    pub fn push(&mut self, name: &str, status: CheckStatus, detail: impl Into<String>) {
        self.items.push(CheckItem {
            name: name.to_owned(),
            status,
            detail: detail.into(),
        });
    }

    /// No item failed (warnings are fine).
    pub fn passed(&self) -> bool {
        self.items.iter().all(|i| i.status != CheckStatus::Fail)
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            let tag = match item.status {
                CheckStatus::Ok => "ok  ",
                CheckStatus::Warn => "WARN",
                CheckStatus::Fail => "FAIL",
            };
            writeln!(f, "[{tag}] {}: {}", item.name, item.detail)?;
        }
        Ok(())
    }
}

/// Check a validated configuration, the local prerequisites and both ends: OpenCTI (GraphQL
/// `about` with the token, the live stream up to its `connected` event) and HarfangLab
/// (version, token, threat-intel permission, the three source lists; found, never created).
pub fn check(config: &Config) -> CheckReport {
    let mut report = check_local(config);
    check_opencti(config, &mut report);
    check_harfanglab(config, &mut report);
    report
}

/// The part of [`check`] that needs no network: configuration, CA files, state directory.
pub fn check_local(config: &Config) -> CheckReport {
    let mut report = CheckReport::default();
    report.push("configuration", CheckStatus::Ok, config.summary());
    for w in config.warnings() {
        report.push("tls", CheckStatus::Warn, w);
    }
    for (name, tls) in [
        ("opencti ca file", &config.opencti.tls),
        ("harfanglab ca file", &config.harfanglab.tls),
    ] {
        if let TlsVerify::CaFile(path) = tls {
            match std::fs::read(path) {
                Ok(bytes)
                    if String::from_utf8_lossy(&bytes).contains("-----BEGIN CERTIFICATE-----") =>
                {
                    report.push(name, CheckStatus::Ok, path.display().to_string())
                }
                Ok(_) => report.push(
                    name,
                    CheckStatus::Fail,
                    format!("{} holds no PEM certificate", path.display()),
                ),
                Err(e) => report.push(
                    name,
                    CheckStatus::Fail,
                    format!("cannot read {}: {e}", path.display()),
                ),
            }
        }
    }
    check_state_dir(&config.service.state_dir, &mut report);
    report
}

fn check_state_dir(dir: &Path, report: &mut CheckReport) {
    const NAME: &str = "state directory";
    if !dir.exists() {
        report.push(
            NAME,
            CheckStatus::Warn,
            format!(
                "{} does not exist yet; it will be created at start",
                dir.display()
            ),
        );
        return;
    }
    if !dir.is_dir() {
        report.push(
            NAME,
            CheckStatus::Fail,
            format!("{} is not a directory", dir.display()),
        );
        return;
    }
    // Probe writability the only reliable way: write and remove a file.
    let probe = dir.join(format!(".check-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            report.push(
                NAME,
                CheckStatus::Ok,
                format!("{} is writable", dir.display()),
            );
        }
        Err(e) => report.push(
            NAME,
            CheckStatus::Fail,
            format!("{} is not writable: {e}", dir.display()),
        ),
    }
}

/// Upper bound of one probe in `check`: a hung server must not hang the command.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// `about { version }` proves reachability and the token; then the stream is opened.
fn check_opencti(config: &Config, report: &mut CheckReport) {
    // Connect to the configured URL; print it without its userinfo.
    let url = &crate::secret::redact_url(&config.opencti.url);
    let mut opts = config.opencti_api_options();
    opts.timeout = opts.timeout.min(PROBE_TIMEOUT);
    // No resend: a check reports, it does not ride out an outage.
    opts.retry.max_retries = 0;
    let about = OpenCtiApi::new(opts).and_then(|api| api.about());
    let token_ok = match about {
        Ok(version) => {
            report.push(
                "opencti",
                CheckStatus::Ok,
                format!("{url} reachable, OPENCTI_TOKEN accepted"),
            );
            match PlatformVersion::parse(&version) {
                Some(_) => report.push("opencti version", CheckStatus::Ok, version),
                None => report.push(
                    "opencti version",
                    CheckStatus::Warn,
                    format!(
                        "{version:?} is not a release number; registration assumes the newest \
                         platform"
                    ),
                ),
            }
            true
        }
        Err(e) => {
            let detail = match &e {
                ApiError::Auth { status, .. } => {
                    // 401/403 come from the HTTP layer; OpenCTI itself answers a bad token with
                    // HTTP 200 and a GraphQL AUTH_REQUIRED / FORBIDDEN_ACCESS error.
                    let how = if (200..300).contains(status) {
                        format!("GraphQL authentication error, HTTP {status}")
                    } else {
                        format!("HTTP {status}")
                    };
                    format!(
                        "{url} refused OPENCTI_TOKEN ({how}): set the token of the connector's \
                         OpenCTI user"
                    )
                }
                ApiError::Transport { message, .. } => format!(
                    "cannot reach {url}/graphql: {message}; check OPENCTI_URL, the network and \
                     HTTPS_PROXY/NO_PROXY"
                ),
                other => format!("{other} (OPENCTI_URL={url})"),
            };
            report.push("opencti", CheckStatus::Fail, detail);
            false
        }
    };
    let c = &config.connector;
    const STREAM: &str = "opencti live stream";
    if !token_ok {
        report.push(
            STREAM,
            CheckStatus::Fail,
            format!(
                "{:?} not checked: OpenCTI must answer with a valid token first",
                c.live_stream_id
            ),
        );
        return;
    }
    // `probe` bounds the connect and the whole exchange by PROBE_TIMEOUT itself.
    let opts = config.stream_options();
    let stream_url = crate::secret::redact_url(&opts.request_url(None));
    match stream::probe(&opts, PROBE_TIMEOUT) {
        Ok(info) => {
            let mut detail = format!("{stream_url} open");
            if let Some(last) = &info.last_event_id {
                detail.push_str(&format!(", newest event {last}"));
            }
            if let Some(size) = info.stream_size {
                detail.push_str(&format!(", {size} events retained"));
            }
            report.push(STREAM, CheckStatus::Ok, detail);
        }
        // The token works (about answered), so a 401/403 here is about the stream itself:
        // OpenCTI answers 401 for an unknown stream id (opencti-protocol.md §1.2).
        Err(ProbeError::Auth { status, stream_id }) => report.push(
            STREAM,
            CheckStatus::Fail,
            format!(
                "OpenCTI refused live stream {stream_id:?} (HTTP {status}) although OPENCTI_TOKEN \
                 is valid: check CONNECTOR_LIVE_STREAM_ID (the id shown in Data sharing > Live \
                 streams) and that the token's user may read that stream (TAXIIAPI capability or \
                 membership; the global `live` stream needs BYPASS)"
            ),
        ),
        Err(e) => report.push(STREAM, CheckStatus::Fail, e.to_string()),
    }
}

/// The HarfangLab probe (version, token, read permission), then a lookup of each source list.
fn check_harfanglab(config: &Config, report: &mut CheckReport) {
    let h = &config.harfanglab;
    let mut opts = config.harfanglab_client_options();
    opts.connect_timeout = opts.connect_timeout.min(PROBE_TIMEOUT);
    opts.request_timeout = opts.request_timeout.min(PROBE_TIMEOUT);
    // One quick retry: a check reports, it does not ride out an outage.
    opts.retry = RetryPolicy {
        max_retries: 1,
        ..RetryPolicy::quick()
    };
    // Kept alive until the end of the check: a disconnected channel would cut retry waits short.
    let (_shutdown_tx, shutdown_rx) = crossbeam_channel::bounded::<()>(0);
    let client = match Client::new(opts, shutdown_rx) {
        Ok(c) => c,
        Err(e) => {
            report.push("harfanglab", CheckStatus::Fail, e.to_string());
            return;
        }
    };
    let url = &crate::secret::redact_url(&h.url);
    match client.probe() {
        Ok(found) => {
            let version = found
                .version
                .map(|v| format!(", version {v}"))
                .unwrap_or_default();
            report.push(
                "harfanglab",
                CheckStatus::Ok,
                format!(
                    "{url} reachable{version}, HARFANGLAB_INTEL_TOKEN accepted, threat-intel \
                     lists readable (write permission is proven by the first write)"
                ),
            );
        }
        Err(e) => {
            let detail = match &e {
                HarfangLabError::Unreachable { detail, .. } => format!(
                    "cannot reach {url}: {detail}; check HARFANGLAB_INTEL_URL, the network and \
                     HTTPS_PROXY/NO_PROXY"
                ),
                HarfangLabError::Timeout { .. } => format!(
                    "{url} did not answer within {:?}; check HARFANGLAB_INTEL_URL and the network",
                    h.request_timeout.min(PROBE_TIMEOUT)
                ),
                HarfangLabError::Tls { detail, .. } => format!(
                    "TLS failure with {url}: {detail}; for a private CA set \
                     HARFANGLAB_INTEL_CA_FILE (HARFANGLAB_INTEL_SSL_VERIFY=false only for tests)"
                ),
                HarfangLabError::Unauthorized { .. } => format!(
                    "{url} refused HARFANGLAB_INTEL_TOKEN (HTTP 401): create an API key for the \
                     connector's user and set it"
                ),
                other => other.to_string(),
            };
            report.push("harfanglab", CheckStatus::Fail, detail);
            return;
        }
    }
    let name = &h.source_list_name;
    for kind in [SourceKind::Ioc, SourceKind::Sigma, SourceKind::Yara] {
        let item = format!("harfanglab {}", kind.resource());
        match client.find_source(kind, name) {
            Ok(Some(list)) if list.enabled => {
                report.push(&item, CheckStatus::Ok, format!("{name:?} id {}", list.id))
            }
            Ok(Some(list)) => report.push(
                &item,
                CheckStatus::Warn,
                format!(
                    "{name:?} id {} is disabled in HarfangLab: its rules do not reach the agents \
                     until it is enabled",
                    list.id
                ),
            ),
            Ok(None) => report.push(
                &item,
                CheckStatus::Ok,
                format!("{name:?} not found: it will be created on first run"),
            ),
            Err(e) => report.push(&item, CheckStatus::Fail, e.to_string()),
        }
    }
}

/// Every setting with its value (tokens redacted) and where it came from, for `check`.
pub fn settings_report(raw: &RawConfig) -> String {
    let mut out = match raw.file() {
        Some(p) => format!("config file: {}\n", p.display()),
        None => "config file: none (environment and defaults only)\n".to_owned(),
    };
    let width = raw
        .entries()
        .iter()
        .map(|e| e.setting.env.len())
        .max()
        .unwrap_or(0);
    for e in raw.entries() {
        let origin = if e.is_default() && e.provided.is_some() {
            // pycti semantics: an empty value selects the default, whoever set it.
            format!("default; empty in the {}", e.origin)
        } else {
            e.origin.to_string()
        };
        out.push_str(&format!(
            "  {:width$}  {}  ({origin})\n",
            e.setting.env,
            e.display_value(),
        ));
    }
    if !raw.proxies().is_empty() {
        out.push_str(
            "proxies (environment; the first valid one of ALL_PROXY, HTTPS_PROXY, HTTP_PROXY \
             serves both ends, except NO_PROXY hosts):\n",
        );
        for (name, value) in raw.proxies() {
            out.push_str(&format!("  {name:width$}  {value}\n"));
        }
    }
    out
}

/// Counts of a `translate` run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TranslateSummary {
    /// Output lines written (one per indicator or bad input item).
    pub items: usize,
    /// Items whose `error` is set.
    pub failed: usize,
}

/// The input of `translate` and its name for messages: a file, or standard input for `None` /
/// `-`.
pub fn open_input(file: Option<&Path>) -> Result<(String, Box<dyn BufRead>), AppError> {
    match file {
        Some(p) if p != Path::new("-") => {
            let name = p.display().to_string();
            match std::fs::File::open(p) {
                Ok(f) => Ok((name, Box::new(io::BufReader::new(f)))),
                Err(source) => Err(AppError::Input { path: name, source }),
            }
        }
        _ => Ok((
            "standard input".to_owned(),
            Box::new(io::BufReader::new(io::stdin())),
        )),
    }
}

/// Items translated together, in parallel: what `translate` holds in memory at once (with the
/// lines of a multi-line document, which is read whole).
pub const TRANSLATE_BATCH: usize = 1024;

/// Translate every indicator of `input` (named `name` in messages) with
/// [`crate::translate::translate`] and write one JSON line per item to `out`, in input order.
pub fn translate(
    input: impl BufRead,
    name: &str,
    out: &mut dyn Write,
) -> Result<TranslateSummary, AppError> {
    translate_with(input, name, out, crate::translate::translate)
}

/// [`translate`] with the translation function given (tests use a fake one). The input is
/// streamed [`TRANSLATE_BATCH`] items at a time; each batch is written and flushed before the
/// next is read, so a closed output stops the run within one batch.
pub fn translate_with<F>(
    input: impl BufRead,
    name: &str,
    out: &mut dyn Write,
    f: F,
) -> Result<TranslateSummary, AppError>
where
    F: Fn(&Indicator) -> Result<Translation, TranslateError> + Sync,
{
    let mut reader = IndicatorReader::new(input);
    let mut summary = TranslateSummary::default();
    let mut batch = Vec::with_capacity(TRANSLATE_BATCH);
    let mut more = true;
    while more {
        batch.clear();
        while more && batch.len() < TRANSLATE_BATCH {
            more = reader
                .read_next(&mut batch)
                .map_err(|source| AppError::Input {
                    path: name.to_owned(),
                    source,
                })?;
        }
        // Translation is pure and CPU-bound: rayon keeps the output in input order.
        let results: Vec<Result<Translation, String>> = batch
            .par_iter()
            .map(|item| translate_item(item, &f))
            .collect();
        for (item, result) in batch.iter().zip(&results) {
            let line = output_line(item, result);
            serde_json::to_writer(&mut *out, &line).map_err(|e| AppError::Output(e.into()))?;
            out.write_all(b"\n").map_err(AppError::Output)?;
            summary.items += 1;
            if result.is_err() {
                summary.failed += 1;
            }
        }
        out.flush().map_err(AppError::Output)?;
    }
    Ok(summary)
}

fn translate_item<F>(item: &InputItem, f: &F) -> Result<Translation, String>
where
    F: Fn(&Indicator) -> Result<Translation, TranslateError>,
{
    let indicator = item.indicator.as_ref().map_err(Clone::clone)?;
    // A panic in translation is a bug, but it must cost one line, not the whole file.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(indicator))) {
        Ok(Ok(t)) => Ok(t),
        // A pattern type this connector does not handle is skipped, as `run` skips it.
        Ok(Err(e)) if e.is_unsupported() => Ok(Translation {
            skipped: vec![e.skipped_indicator(indicator)],
            ..Translation::default()
        }),
        Ok(Err(e)) => Err(format!("{}: {e}", item.position)),
        Err(_) => Err(format!(
            "{}: internal error: translation panicked",
            item.position
        )),
    }
}

/// One output line of `translate`.
#[derive(Serialize)]
struct OutputLine<'a> {
    /// The indicator's id, else its name (also when it could not be read); `null` when the
    /// input item names neither.
    indicator: Option<&'a str>,
    line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    object: Option<usize>,
    iocs: &'a [crate::translate::IocKey],
    sigma: Option<&'a crate::translate::SigmaSpec>,
    yara: Option<&'a crate::translate::YaraSpec>,
    skipped: &'a [crate::translate::Skipped],
    error: Option<&'a str>,
}

fn output_line<'a>(item: &'a InputItem, result: &'a Result<Translation, String>) -> OutputLine<'a> {
    let indicator = item.label.as_deref();
    match result {
        Ok(t) => OutputLine {
            indicator,
            line: item.position.line,
            object: item.position.object,
            iocs: &t.iocs,
            sigma: t.sigma.as_ref(),
            yara: t.yara.as_ref(),
            skipped: &t.skipped,
            error: None,
        },
        Err(e) => OutputLine {
            indicator,
            line: item.position.line,
            object: item.position.object,
            iocs: &[],
            sigma: None,
            yara: None,
            skipped: &[],
            error: Some(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::{IocKey, IocType, Skipped};
    use serde_json::Value;

    /// A stand-in for the real translation: one IOC from the pattern, errors on demand.
    fn fake(ind: &Indicator) -> Result<Translation, TranslateError> {
        match ind.pattern.as_str() {
            "bad" => Err(TranslateError::Pattern(
                crate::stix::parse_syntax("x").expect_err("`x` is not a pattern"),
            )),
            "boom" => panic!("fake translation bug"),
            p => Ok(Translation {
                iocs: vec![IocKey {
                    ioc_type: IocType::DomainName,
                    value: p.to_owned(),
                }],
                skipped: vec![Skipped {
                    path: "x:y".into(),
                    value: "v".into(),
                    reason: "r".into(),
                }],
                ..Translation::default()
            }),
        }
    }

    fn lines(input: &str) -> (TranslateSummary, Vec<Value>) {
        let mut out = Vec::new();
        let summary = translate_with(input.as_bytes(), "test input", &mut out, fake).unwrap();
        let text = String::from_utf8(out).unwrap();
        (
            summary,
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
        )
    }

    #[test]
    fn output_keeps_input_order_and_reports_errors_per_line() {
        let mut input = String::new();
        for i in 0..200 {
            input.push_str(&format!(
                "{{\"id\":\"id-{i}\",\"pattern\":\"d{i}.example\"}}\n"
            ));
        }
        input.push_str("{\"name\":\"bad one\",\"pattern\":\"bad\"}\nnot json\n{\"name\":\"n\",\"pattern\":\"boom\"}\n");
        let (summary, out) = lines(&input);
        assert_eq!(
            summary,
            TranslateSummary {
                items: 203,
                failed: 3
            }
        );
        for (i, v) in out.iter().take(200).enumerate() {
            assert_eq!(v["indicator"], format!("id-{i}"));
            assert_eq!(v["iocs"][0]["type"], "domain_name");
            assert_eq!(v["iocs"][0]["value"], format!("d{i}.example"));
            assert_eq!(v["skipped"][0]["reason"], "r");
            assert!(v["error"].is_null() && v["sigma"].is_null() && v["yara"].is_null());
        }
        assert_eq!(out[200]["indicator"], "bad one");
        assert_eq!(
            out[200]["error"],
            "line 201: invalid STIX pattern: at byte 0: expected `[` or `(`, found identifier `x`"
        );
        assert!(out[201]["indicator"].is_null());
        assert!(
            out[201]["error"]
                .as_str()
                .unwrap()
                .starts_with("line 202, column 2: invalid JSON")
        );
        assert_eq!(
            out[202]["error"],
            "line 203: internal error: translation panicked"
        );
        assert_eq!(out[202]["iocs"], Value::Array(vec![]));
    }

    #[test]
    fn check_reports_state_dir_problems() {
        let mut config = Config::default();
        config.service.state_dir = std::env::temp_dir();
        let r = check_local(&config);
        assert!(r.passed(), "{r}");
        config.service.state_dir = std::path::PathBuf::from("/proc/version");
        let r = check_local(&config);
        assert!(!r.passed());
        assert!(
            r.to_string()
                .contains("[FAIL] state directory: /proc/version is not a directory")
        );
    }

    #[test]
    fn healthz_is_asked_on_loopback_at_the_metrics_port() {
        let mut config = Config::default();
        assert!(healthz_address(&config).is_none());
        for (bind, expected) in [
            ("0.0.0.0:9095", "127.0.0.1:9095"),
            ("10.1.2.3:9100", "127.0.0.1:9100"),
            ("[::]:9095", "127.0.0.1:9095"),
            ("[::1]:9095", "[::1]:9095"),
        ] {
            config.connector.metrics_addr = Some(bind.parse().unwrap());
            assert_eq!(
                healthz_address(&config),
                Some(expected.parse().unwrap()),
                "{bind}"
            );
        }
    }
}
