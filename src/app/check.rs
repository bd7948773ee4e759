//! The `check` command: every setting with its origin, then a report of the local prerequisites
//! and of live probes of both ends (OpenCTI GraphQL `about` and the live stream up to its
//! `connected` event; HarfangLab version, token, read permission and source lists). It writes
//! nothing anywhere. The clients are the ones `run` builds (`Config`'s constructors), with
//! shorter timeouts and at most one quick resend: a check reports, it does not ride out an outage.

use super::{AppError, read_raw_config};
use crate::concurrency::ConcurrencyLimit;
use crate::config::{Config, RawConfig, TlsVerify};
use crate::harfanglab::HarfangLabError;
use crate::harfanglab::client::{Client, ClientOptions};
use crate::harfanglab::model::SourceKind;
use crate::opencti::api::{ApiError, OpenCtiApi, PlatformVersion};
use crate::opencti::stream::{self, ProbeError};
use crate::pipeline::Shutdown;
use crate::retry::RetryPolicy;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// The `check` command: print every setting with its origin, then the `check` report, to
/// `out`. `Err` when the configuration is invalid ([`AppError::Config`], exit 2) or an item
/// failed ([`AppError::CheckFailed`], exit 1; the report says which).
pub fn check_command(
    path: Option<&Path>,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<(), AppError> {
    let raw = read_raw_config(path)?;
    let _ = writeln!(out, "{}", settings_report(&raw));
    for w in raw.warnings() {
        let _ = writeln!(out, "[WARN] config file: {w}");
    }
    let mut config = Config::from_raw(&raw).map_err(AppError::Config)?;
    config.harfanglab.dry_run |= dry_run;
    // Flushed before the probes so a slow probe does not hold back the settings.
    let _ = out.flush();
    let report = check(&config);
    let _ = write!(out, "{report}");
    let _ = out.flush();
    match report.failed() {
        0 => Ok(()),
        failed => Err(AppError::CheckFailed { failed }),
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

/// What `check` found. [`check_command`] prints it and fails (exit 1) when any item failed.
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
        self.failed() == 0
    }

    /// How many items failed.
    pub fn failed(&self) -> usize {
        self.items
            .iter()
            .filter(|i| i.status == CheckStatus::Fail)
            .count()
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

/// The part of `check` that needs no network: configuration, CA files, state directory.
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
        // Read the way the clients will read it: what passes here loads at start.
        if let TlsVerify::CaFile(path) = tls {
            match crate::tls::root_certs(path) {
                Ok(_) => report.push(name, CheckStatus::Ok, path.display().to_string()),
                Err(e) => report.push(name, CheckStatus::Fail, e.to_string()),
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
/// Requests in flight during a check (it sends them one after another).
const PROBE_CONCURRENCY: usize = 4;

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
                ApiError::Transport { source, .. } => format!(
                    "cannot reach {url}/graphql: {source}; check OPENCTI_URL, the network and \
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

/// The service's HarfangLab client options, cut down for a check: short timeouts, one quick
/// resend, and a fixed limit on requests in flight (a check makes a few probe requests one at a
/// time; an adaptive limit could hold them for a server's `Retry-After`, up to a minute).
fn probe_client_options(config: &Config) -> ClientOptions {
    let mut opts = config.harfanglab_client_options();
    opts.connect_timeout = opts.connect_timeout.min(PROBE_TIMEOUT);
    opts.request_timeout = opts.request_timeout.min(PROBE_TIMEOUT);
    // One quick retry: a check reports, it does not ride out an outage.
    opts.retry = RetryPolicy {
        max_retries: 1,
        ..RetryPolicy::quick()
    };
    opts.concurrency = ConcurrencyLimit::Fixed(PROBE_CONCURRENCY);
    opts
}

/// The HarfangLab probe (version, token, read permission), then a lookup of each source list.
fn check_harfanglab(config: &Config, report: &mut CheckReport) {
    let h = &config.harfanglab;
    let opts = probe_client_options(config);
    // Never triggered, and alive until the end of the check: a disconnected receiver would cut
    // the resend wait short. (`check` ends on a signal the default way: no handler is installed.)
    let never = Shutdown::new();
    let client = match Client::new(opts, never.receiver().clone()) {
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
                HarfangLabError::Unreachable { source, .. } => format!(
                    "cannot reach {url}: {source}; check HARFANGLAB_INTEL_URL, the network and \
                     HTTPS_PROXY/NO_PROXY"
                ),
                HarfangLabError::Timeout { .. } => format!(
                    "{url} did not answer within {:?}; check HARFANGLAB_INTEL_URL and the network",
                    h.request_timeout.min(PROBE_TIMEOUT)
                ),
                HarfangLabError::Tls { source, .. } => format!(
                    "TLS failure with {url}: {source}; for a private CA set \
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_reads_a_ca_file_as_the_clients_will() {
        let dir = std::env::temp_dir().join(format!("hli-check-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = Config::default();
        config.service.state_dir = std::env::temp_dir();
        for (name, text, expected) in [
            ("text.pem", "not a certificate", "holds no PEM certificate"),
            // The marker alone is not a certificate: the clients would refuse it at start.
            (
                "broken.pem",
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                "CA bundle",
            ),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            config.opencti.tls = TlsVerify::CaFile(path);
            let r = check_local(&config);
            let line = r.to_string();
            assert!(!r.passed(), "{line}");
            assert!(line.contains("[FAIL] opencti ca file: CA bundle"), "{line}");
            assert!(line.contains(expected), "{line}");
        }
        let _ = std::fs::remove_dir_all(dir);
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
    fn check_probes_harfanglab_with_a_fixed_limit() {
        let mut config = Config::default();
        config.service.workers_auto = true;
        assert!(matches!(
            config.harfanglab_client_options().concurrency,
            ConcurrencyLimit::Adaptive(_)
        ));
        let opts = probe_client_options(&config);
        assert_eq!(opts.concurrency, ConcurrencyLimit::Fixed(PROBE_CONCURRENCY));
        assert!(opts.request_timeout <= PROBE_TIMEOUT);
    }
}
