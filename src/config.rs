//! Configuration: every setting, where it comes from, and the validated [`Config`] the service runs on.
//!
//! Two stages (ripgrep's low/high args). [`RawConfig`] resolves each setting of the [`SETTINGS`]
//! table from the environment, then `config.yml`, then the default, with pycti's
//! `get_config_variable` precedence (opencti-protocol.md §5): an environment variable wins even when
//! it is set to the empty string, and an empty value means "use the default". [`Config::from_raw`]
//! then checks and types everything, reporting *all* problems at once, each naming the environment
//! variable and the YAML key. The environment is read through an injectable lookup so tests never
//! touch the process environment. This module does no network I/O and never logs: warnings are
//! returned for `main` to log once the logger exists. `options` (a submodule) hands each component
//! the options it is built from (`config.stream_options()`, ...), the one place a setting is
//! mapped onto a component.

mod options;

use crate::retry::RetryPolicy;
use crate::secret::{Secret, redact_url};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// YAML section of a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Opencti,
    Connector,
    HarfangLabIntel,
}

impl Section {
    /// The YAML name of the section.
    pub fn name(self) -> &'static str {
        match self {
            Section::Opencti => "opencti",
            Section::Connector => "connector",
            Section::HarfangLabIntel => "harfanglab_intel",
        }
    }
}

/// One setting, defined once: used by resolution, validation messages, the README reference and
/// the `config.yml.sample` consistency test.
#[derive(Debug)]
pub struct Setting {
    /// Environment variable (wins over YAML, even when empty).
    pub env: &'static str,
    pub section: Section,
    /// Key inside the YAML section.
    pub key: &'static str,
    /// Raw default used when the value is absent or empty; `None` = no default.
    pub default: Option<&'static str>,
    /// Must end up with a non-empty value.
    pub required: bool,
    /// A token: its value is never printed.
    pub secret: bool,
    /// One line for people (README, sample, `check`).
    pub doc: &'static str,
}

impl Setting {
    /// `section.key`, as written in messages.
    pub fn yaml_path(&self) -> String {
        format!("{}.{}", self.section.name(), self.key)
    }
}

macro_rules! settings {
    ($( $name:ident = $env:literal, $section:ident . $key:literal, $default:expr, $req:literal, $secret:literal, $doc:literal; )*) => {
        $(
            #[doc = $doc]
            pub static $name: Setting = Setting {
                env: $env,
                section: Section::$section,
                key: $key,
                default: $default,
                required: $req,
                secret: $secret,
                doc: $doc,
            };
        )*
        /// Every setting, in documentation order.
        pub static SETTINGS: &[&Setting] = &[$(&$name),*];
    };
}

settings! {
    OPENCTI_URL = "OPENCTI_URL", Opencti."url", None, true, false,
        "OpenCTI base URL (http or https; a trailing `/` is removed).";
    OPENCTI_TOKEN = "OPENCTI_TOKEN", Opencti."token", None, true, true,
        "OpenCTI API token of the connector's user.";
    OPENCTI_SSL_VERIFY = "OPENCTI_SSL_VERIFY", Opencti."ssl_verify", Some("false"), false, false,
        "Verify OpenCTI's TLS certificate: a boolean or a CA-bundle file path (pycti default: false).";
    OPENCTI_CA_FILE = "OPENCTI_CA_FILE", Opencti."ca_file", None, false, false,
        "PEM CA bundle to verify OpenCTI with (turns verification on unless ssl_verify is explicitly false).";
    OPENCTI_CUSTOM_HEADERS = "OPENCTI_CUSTOM_HEADERS", Opencti."custom_headers", None, false, true,
        "Extra headers on GraphQL calls, `name:value;name2:value2` (pycti format; values are treated as secrets).";
    OPENCTI_REQUEST_TIMEOUT = "OPENCTI_REQUEST_TIMEOUT", Opencti."request_timeout", Some("60"), false, false,
        "Timeout of one OpenCTI GraphQL request, seconds (or `1m30s`).";
    CONNECTOR_ID = "CONNECTOR_ID", Connector."id", None, true, false,
        "Connector id registered in OpenCTI (a UUID, keep it stable: OpenCTI stores the stream position under it).";
    CONNECTOR_TYPE = "CONNECTOR_TYPE", Connector."type", Some("STREAM"), false, false,
        "Connector type; only `STREAM` is accepted.";
    CONNECTOR_NAME = "CONNECTOR_NAME", Connector."name", Some("HarfangLab Intel"), false, false,
        "Name shown in OpenCTI.";
    CONNECTOR_SCOPE = "CONNECTOR_SCOPE", Connector."scope", Some("harfanglab"), false, false,
        "Comma-separated scope sent at registration.";
    CONNECTOR_LOG_LEVEL = "CONNECTOR_LOG_LEVEL", Connector."log_level", Some("info"), false, false,
        "Log level: error, warn (warning), info, debug or trace, any case (pycti defaults to error).";
    CONNECTOR_LIVE_STREAM_ID = "CONNECTOR_LIVE_STREAM_ID", Connector."live_stream_id", None, true, false,
        "Id of the OpenCTI live stream to follow.";
    CONNECTOR_LIVE_STREAM_LISTEN_DELETE = "CONNECTOR_LIVE_STREAM_LISTEN_DELETE", Connector."live_stream_listen_delete", Some("true"), false, false,
        "Ask the stream for delete events (`listen-delete` header).";
    CONNECTOR_LIVE_STREAM_NO_DEPENDENCIES = "CONNECTOR_LIVE_STREAM_NO_DEPENDENCIES", Connector."live_stream_no_dependencies", Some("true"), false, false,
        "Do not receive the dependencies of streamed objects (`no-dependencies` header).";
    CONNECTOR_LIVE_STREAM_WITH_INFERENCES = "CONNECTOR_LIVE_STREAM_WITH_INFERENCES", Connector."live_stream_with_inferences", Some("false"), false, false,
        "Also receive inferred objects (`with-inferences` header).";
    CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE = "CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE", Connector."live_stream_recover_iso_date", None, false, false,
        "First run only: replay matching objects updated until this ISO date; unset = until now; `false`/`no`/`none` = no recovery.";
    CONNECTOR_LIVE_STREAM_START_TIMESTAMP = "CONNECTOR_LIVE_STREAM_START_TIMESTAMP", Connector."live_stream_start_timestamp", None, false, false,
        "First run only: start the stream at this epoch time in milliseconds (unset = from the beginning, `0-0`).";
    CONNECTOR_LIVE_STREAM_IDLE_TIMEOUT = "CONNECTOR_LIVE_STREAM_IDLE_TIMEOUT", Connector."live_stream_idle_timeout", Some("15"), false, false,
        "Seconds without a byte before the stream is considered dead and reopened (3 server heartbeats).";
    CONNECTOR_PING_INTERVAL = "CONNECTOR_PING_INTERVAL", Connector."ping_interval", Some("40"), false, false,
        "Seconds between OpenCTI pings (which also save the stream position in OpenCTI).";
    CONNECTOR_EXPOSE_METRICS = "CONNECTOR_EXPOSE_METRICS", Connector."expose_metrics", Some("false"), false, false,
        "Serve Prometheus metrics over HTTP.";
    CONNECTOR_METRICS_HOST = "CONNECTOR_METRICS_HOST", Connector."metrics_host", Some("0.0.0.0"), false, false,
        "IP address the metrics server listens on.";
    CONNECTOR_METRICS_PORT = "CONNECTOR_METRICS_PORT", Connector."metrics_port", Some("9095"), false, false,
        "Port of the metrics server.";
    CONNECTOR_METRICS_NAMESPACE = "CONNECTOR_METRICS_NAMESPACE", Connector."metrics_namespace", None, false, false,
        "Optional prefix of every metric name (pycti).";
    CONNECTOR_METRICS_SUBSYSTEM = "CONNECTOR_METRICS_SUBSYSTEM", Connector."metrics_subsystem", None, false, false,
        "Optional second prefix of every metric name, after the namespace (pycti).";
    HARFANGLAB_INTEL_URL = "HARFANGLAB_INTEL_URL", HarfangLabIntel."url", None, true, false,
        "HarfangLab manager URL, port included (http or https; a trailing `/` is removed).";
    HARFANGLAB_INTEL_TOKEN = "HARFANGLAB_INTEL_TOKEN", HarfangLabIntel."token", None, true, true,
        "HarfangLab API token (`Authorization: Token ...`).";
    HARFANGLAB_INTEL_SSL_VERIFY = "HARFANGLAB_INTEL_SSL_VERIFY", HarfangLabIntel."ssl_verify", Some("true"), false, false,
        "Verify HarfangLab's TLS certificate: a boolean or a CA-bundle file path.";
    HARFANGLAB_INTEL_CA_FILE = "HARFANGLAB_INTEL_CA_FILE", HarfangLabIntel."ca_file", None, false, false,
        "PEM CA bundle to verify HarfangLab with (e.g. an on-premise manager's own CA).";
    HARFANGLAB_INTEL_SOURCE_LIST_NAME = "HARFANGLAB_INTEL_SOURCE_LIST_NAME", HarfangLabIntel."source_list_name", Some("from_OpenCTI"), false, false,
        "Name of the IOC, Sigma and Yara source lists the connector owns in HarfangLab.";
    HARFANGLAB_INTEL_REMOVE_INDICATOR = "HARFANGLAB_INTEL_REMOVE_INDICATOR", HarfangLabIntel."remove_indicator", Some("false"), false, false,
        "When an indicator goes away: delete its rules (true) or only disable them (false).";
    HARFANGLAB_INTEL_RULE_MATURITY = "HARFANGLAB_INTEL_RULE_MATURITY", HarfangLabIntel."rule_maturity", Some("stable"), false, false,
        "Maturity of created Sigma/Yara rules: `stable` or `testing` (required by the Python connector).";
    HARFANGLAB_INTEL_STATE_DIR = "HARFANGLAB_INTEL_STATE_DIR", HarfangLabIntel."state_dir", Some("/var/lib/harfanglab-intel"), false, false,
        "Directory of the local state; default `$STATE_DIRECTORY` (systemd, first entry) else /var/lib/harfanglab-intel.";
    HARFANGLAB_INTEL_WORKERS = "HARFANGLAB_INTEL_WORKERS", HarfangLabIntel."workers", Some("auto"), false, false,
        "Worker threads applying events to HarfangLab: `auto`, HarfangLab requests in flight follow its latency and 429/503 answers (an adaptive limit between 1 and 256, starting at 16) and the workers grow with that limit, or past it while the limit has free slots and events wait for a worker (at most 256); or a fixed number, 1 to 256 (at most that many requests in flight).";
    HARFANGLAB_INTEL_CONNECT_TIMEOUT = "HARFANGLAB_INTEL_CONNECT_TIMEOUT", HarfangLabIntel."connect_timeout", Some("10"), false, false,
        "TCP+TLS connect timeout for HarfangLab and OpenCTI, seconds.";
    HARFANGLAB_INTEL_REQUEST_TIMEOUT = "HARFANGLAB_INTEL_REQUEST_TIMEOUT", HarfangLabIntel."request_timeout", Some("30"), false, false,
        "Timeout of one HarfangLab request, seconds.";
    HARFANGLAB_INTEL_MAX_RETRIES = "HARFANGLAB_INTEL_MAX_RETRIES", HarfangLabIntel."max_retries", Some("8"), false, false,
        "Retries of an event that keeps failing for a reason of its own (a 500, an OpenCTI GraphQL error, a timeout while other events get through) before it is dead-lettered. Failures while HarfangLab or OpenCTI is unavailable for every event (unreachable, timeouts, 429, 502-504) do not count: an outage waits, it does not dead-letter (README: Failures and retries).";
    HARFANGLAB_INTEL_RETRY_BACKOFF_MAX = "HARFANGLAB_INTEL_RETRY_BACKOFF_MAX", HarfangLabIntel."retry_backoff_max", Some("60"), false, false,
        "Longest wait before an event's retry, seconds: the wait doubles from 1 s (with jitter) up to this, and a `Retry-After` header is honoured up to this. A waiting event holds no worker.";
    HARFANGLAB_INTEL_DRY_RUN = "HARFANGLAB_INTEL_DRY_RUN", HarfangLabIntel."dry_run", Some("false"), false, false,
        "Log the HarfangLab writes instead of doing them (reads still happen). `--dry-run` sets it.";
    HARFANGLAB_INTEL_SHUTDOWN_TIMEOUT = "HARFANGLAB_INTEL_SHUTDOWN_TIMEOUT", HarfangLabIntel."shutdown_timeout", Some("30"), false, false,
        "Seconds given to in-flight events to finish after SIGTERM/Ctrl-C.";
    HARFANGLAB_INTEL_RECONCILE_INTERVAL = "HARFANGLAB_INTEL_RECONCILE_INTERVAL", HarfangLabIntel."reconcile_interval", Some("24h"), false, false,
        "Reconciliation in `run`: one pass after the first catch-up, then one every this long (seconds or like `24h`); `0` turns it off (README: Reconciliation).";
    HARFANGLAB_INTEL_RECONCILE_MAX_DELETE_RATIO = "HARFANGLAB_INTEL_RECONCILE_MAX_DELETE_RATIO", HarfangLabIntel."reconcile_max_delete_ratio", Some("0.2"), false, false,
        "Mass-deletion guard: a pass that would release more than this share (0 to 1) of our rules repairs nothing and logs an error (`reconcile --force` overrides).";
    HARFANGLAB_INTEL_RECONCILE_ENFORCE_ENABLED = "HARFANGLAB_INTEL_RECONCILE_ENFORCE_ENABLED", HarfangLabIntel."reconcile_enforce_enabled", Some("false"), false, false,
        "Re-enable rules disabled by hand that indicators still want (default: keep them disabled and report them; applies to live events too).";
    HARFANGLAB_INTEL_COALESCE_MAX = "HARFANGLAB_INTEL_COALESCE_MAX", HarfangLabIntel."coalesce_max", Some("64"), false, false,
        "Most updates of one indicator applied together (one OpenCTI read, one HarfangLab write) when they wait behind each other; each is still checkpointed and counted. `1` turns coalescing off (1 to 1024; README: Update storms).";
}

/// Where a raw value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The environment variable (possibly set to the empty string).
    Env,
    /// The YAML file.
    File,
    /// A systemd credential file, `$CREDENTIALS_DIRECTORY/<name>` (tokens only, see
    /// [`credential_name`]); consulted when the environment variable is unset.
    Credential,
    /// Neither: the default (or nothing).
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Env => "environment",
            Origin::File => "config file",
            Origin::Credential => "systemd credential",
            Origin::Default => "default",
        })
    }
}

/// One setting after resolution, before validation.
#[derive(Clone)]
pub struct RawEntry {
    pub setting: &'static Setting,
    /// The value as provided (trimmed), `None` when neither env nor YAML had it.
    pub provided: Option<String>,
    pub origin: Origin,
}

impl RawEntry {
    /// The value the setting takes: the provided one unless empty, else the default.
    pub fn effective(&self) -> Option<&str> {
        match self.provided.as_deref() {
            Some(v) if !v.is_empty() => Some(v),
            _ => self.setting.default,
        }
    }

    /// Whether the effective value is the default (nothing, or an empty string, was provided).
    pub fn is_default(&self) -> bool {
        !matches!(self.provided.as_deref(), Some(v) if !v.is_empty())
    }

    /// The value for people: tokens are shown as `[REDACTED]`, the `user:password@` of a URL
    /// as `***@`.
    pub fn display_value(&self) -> String {
        match self.effective() {
            None => "(unset)".to_owned(),
            Some(_) if self.setting.secret => Secret::new("").to_string(),
            Some(v) if v.contains("://") => redact_url(v),
            Some(v) => v.to_owned(),
        }
    }
}

impl fmt::Debug for RawEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawEntry")
            .field("env", &self.setting.env)
            .field("value", &self.display_value())
            .field("origin", &self.origin)
            .finish()
    }
}

/// One thing wrong with one setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub env: &'static str,
    pub yaml_path: String,
    pub origin: Origin,
    /// What is wrong and what is expected; never contains a token.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = match self.origin {
            Origin::Env => ", set in the environment",
            Origin::File => ", set in the config file",
            Origin::Credential => ", read from $CREDENTIALS_DIRECTORY",
            Origin::Default => "",
        };
        write!(
            f,
            "{} (YAML {}{from}): {}",
            self.env, self.yaml_path, self.message
        )
    }
}

/// Why the configuration cannot be used. Always fatal: `main` exits with code 2.
#[derive(Debug)]
pub enum ConfigError {
    /// The config file exists but cannot be read (permissions, a directory, not UTF-8).
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The config file is not valid YAML or not shaped as sections of keys.
    Yaml {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// One or more settings are missing or invalid (all of them are listed).
    Invalid(Vec<Problem>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            ConfigError::Yaml {
                path,
                line,
                column,
                message,
            } => {
                write!(f, "invalid config file {}", path.display())?;
                match (line, column) {
                    (Some(l), Some(c)) => write!(f, " at line {l}, column {c}")?,
                    (Some(l), None) => write!(f, " at line {l}")?,
                    _ => {}
                }
                write!(f, ": {message}")
            }
            ConfigError::Invalid(problems) => {
                let n = problems.len();
                write!(
                    f,
                    "invalid configuration ({n} problem{}):",
                    if n == 1 { "" } else { "s" }
                )?;
                for p in problems {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The default config file locations, tried in order when `--config` is not given.
pub const DEFAULT_CONFIG_PATHS: [&str; 2] = ["config.yml", "/etc/harfanglab-intel/config.yml"];

/// Read the process environment (the lookup `main` passes; tests pass a map instead).
/// The systemd credential (`LoadCredential=<name>:...`) that supplies a token when its
/// environment variable is unset; `None` for every other setting.
pub fn credential_name(setting: &Setting) -> Option<&'static str> {
    match setting.env {
        "OPENCTI_TOKEN" => Some("opencti_token"),
        "HARFANGLAB_INTEL_TOKEN" => Some("harfanglab_token"),
        _ => None,
    }
}

/// `dir/name` trimmed (a trailing newline is usual in secret files); `Ok(None)` when the file
/// does not exist (that credential was not loaded: the config file may still have the token).
fn read_credential(dir: &Path, name: &str) -> Result<Option<String>, String> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Ok(Some(text.trim().to_owned())),
            Err(_) => Err(format!("credential file {} is not UTF-8", path.display())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "cannot read credential file {}: {e}",
            path.display()
        )),
    }
}

/// A value that is not UTF-8 is read lossily (it then fails validation rather than vanishing).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// Every setting resolved from env / YAML / default, plus warnings about the file.
#[derive(Debug, Clone)]
pub struct RawConfig {
    entries: Vec<RawEntry>,
    file: Option<PathBuf>,
    /// `$STATE_DIRECTORY` as systemd sets it (first entry), used when the state dir is defaulted.
    state_directory: Option<String>,
    warnings: Vec<String>,
    /// Problems found while reading (a YAML value that is a list or a map).
    problems: Vec<Problem>,
    /// The proxy variables set in the environment, userinfo already redacted.
    proxies: Vec<(&'static str, String)>,
}

/// The proxy variables the HTTP clients read: ureq takes the first of `ALL_PROXY`,
/// `HTTPS_PROXY`, `HTTP_PROXY` (upper then lower case) that holds a valid proxy URL for both
/// ends, minus the hosts in `NO_PROXY`.
pub const PROXY_VARIABLES: [&str; 8] = [
    "ALL_PROXY",
    "all_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
];

impl RawConfig {
    /// Locate and read the config file, then resolve every setting.
    ///
    /// `explicit` comes from `--config`; otherwise the first existing file of
    /// [`DEFAULT_CONFIG_PATHS`] is used. No file at all is fine (environment only). A named file
    /// that does not exist is a warning, not an error, so that a unit or compose file may always
    /// pass `--config` and still be configured by the environment alone; any other read failure
    /// (permissions, a directory) is an error.
    pub fn load(
        explicit: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RawConfig, ConfigError> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => DEFAULT_CONFIG_PATHS
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file()),
        };
        let Some(path) = path else {
            return RawConfig::from_yaml(None, env);
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => RawConfig::from_yaml(Some((&path, &text)), env),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut raw = RawConfig::from_yaml(None, env)?;
                raw.warnings.push(format!(
                    "config file {} does not exist: using the environment and defaults only",
                    path.display()
                ));
                Ok(raw)
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Resolve every setting from a YAML text (with the path it came from, for messages) and the
    /// environment lookup.
    pub fn from_yaml(
        yaml: Option<(&Path, &str)>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RawConfig, ConfigError> {
        let mut warnings = Vec::new();
        let mut problems = Vec::new();
        let file = match yaml {
            Some((path, text)) => Some((path, parse_yaml(path, text, &mut warnings)?)),
            None => None,
        };
        let mut entries = Vec::with_capacity(SETTINGS.len());
        for &setting in SETTINGS {
            let credential = || {
                let name = credential_name(setting)?;
                let dir = env("CREDENTIALS_DIRECTORY").filter(|d| !d.trim().is_empty())?;
                Some(read_credential(Path::new(dir.trim()), name))
            };
            let from_env = env(setting.env);
            // A credential file that does not exist falls through to the YAML file.
            let from_credential = match from_env {
                Some(_) => None,
                None => credential().and_then(Result::transpose),
            };
            let (provided, origin) = if let Some(v) = from_env {
                (Some(v.trim().to_owned()), Origin::Env)
            } else if let Some(read) = from_credential {
                match read {
                    Ok(v) => (Some(v), Origin::Credential),
                    Err(message) => {
                        problems.push(Problem {
                            env: setting.env,
                            yaml_path: setting.yaml_path(),
                            origin: Origin::Credential,
                            message,
                        });
                        (None, Origin::Credential)
                    }
                }
            } else if let Some(v) = file.as_ref().and_then(|(_, f)| f.get(setting)) {
                match yaml_scalar(setting, v) {
                    Ok(Some(s)) => (Some(s), Origin::File),
                    // YAML `null` (`key:` with nothing after it) counts as not set.
                    Ok(None) => (None, Origin::Default),
                    Err(message) => {
                        problems.push(Problem {
                            env: setting.env,
                            yaml_path: setting.yaml_path(),
                            origin: Origin::File,
                            message,
                        });
                        (None, Origin::File)
                    }
                }
            } else {
                (None, Origin::Default)
            };
            entries.push(RawEntry {
                setting,
                provided,
                origin,
            });
        }
        let state_directory = env("STATE_DIRECTORY").and_then(|v| {
            v.split(':')
                .map(str::trim)
                .find(|s| !s.is_empty())
                .map(str::to_owned)
        });
        // Redacted on the way in: a proxy URL may carry credentials, and nothing reads the
        // originals from here (the HTTP clients read the environment themselves).
        let proxies = PROXY_VARIABLES
            .iter()
            .filter_map(|&name| Some((name, redact_url(env(name)?.trim()))))
            .collect();
        Ok(RawConfig {
            entries,
            file: file.map(|(p, _)| p.to_path_buf()),
            state_directory,
            warnings,
            problems,
            proxies,
        })
    }

    /// The resolved settings, in [`SETTINGS`] order.
    pub fn entries(&self) -> &[RawEntry] {
        &self.entries
    }

    /// The proxy variables set in the environment ([`PROXY_VARIABLES`] order), with any
    /// `user:password@` replaced by `***@`.
    pub fn proxies(&self) -> &[(&'static str, String)] {
        &self.proxies
    }

    /// The config file that was read, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Things worth a `warn!` (deprecated section name, unknown keys).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The entry of a setting of [`SETTINGS`].
    pub fn entry(&self, setting: &Setting) -> Option<&RawEntry> {
        self.entries.iter().find(|e| e.setting.env == setting.env)
    }

    /// The log level, best effort (used to start logging before full validation): `info` when
    /// the setting is invalid (validation then reports it).
    pub fn log_level(&self) -> log::LevelFilter {
        self.entry(&CONNECTOR_LOG_LEVEL)
            .and_then(RawEntry::effective)
            .and_then(|v| parse_log_level(v).ok())
            .unwrap_or(log::LevelFilter::Info)
    }
}

/// The YAML file's settings, per section, after the `harfanglab` alias is folded in.
struct YamlFile {
    sections: Vec<(Section, serde_yaml::Mapping)>,
}

impl YamlFile {
    fn get(&self, setting: &Setting) -> Option<&serde_yaml::Value> {
        self.sections
            .iter()
            .filter(|(s, _)| *s == setting.section)
            .find_map(|(_, m)| m.get(setting.key))
    }
}

fn parse_yaml(
    path: &Path,
    text: &str,
    warnings: &mut Vec<String>,
) -> Result<YamlFile, ConfigError> {
    let yaml_error = |line, column, message: String| ConfigError::Yaml {
        path: path.to_path_buf(),
        line,
        column,
        message,
    };
    let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        let loc = e.location();
        let text = e.to_string();
        // serde_yaml repeats the position inside its message; we print it once, up front.
        let message = match &loc {
            Some(l) => text.replacen(
                &format!(" at line {} column {}", l.line(), l.column()),
                "",
                1,
            ),
            None => text,
        };
        yaml_error(
            loc.as_ref().map(|l| l.line()),
            loc.as_ref().map(|l| l.column()),
            message,
        )
    })?;
    let top = match doc {
        // An empty file (or only comments) is an empty config.
        serde_yaml::Value::Null => serde_yaml::Mapping::new(),
        serde_yaml::Value::Mapping(m) => m,
        _ => {
            return Err(yaml_error(
                None,
                None,
                "the top level must be a mapping of sections (opencti:, connector:, harfanglab_intel:)"
                    .to_owned(),
            ));
        }
    };
    let mut sections = Vec::new();
    let mut alias = None;
    for (name, value) in top {
        let Some(name) = name.as_str().map(str::to_owned) else {
            warnings.push(format!(
                "{}: ignoring a non-text top-level key",
                path.display()
            ));
            continue;
        };
        let section = match name.as_str() {
            "opencti" => Section::Opencti,
            "connector" => Section::Connector,
            "harfanglab_intel" => Section::HarfangLabIntel,
            "harfanglab" => {
                warnings.push(format!(
                    "{}: section `harfanglab` is read as `harfanglab_intel` (the Python connector's \
                     sample name); rename it, `harfanglab_intel` keys win over it",
                    path.display()
                ));
                Section::HarfangLabIntel
            }
            other => {
                warnings.push(format!(
                    "{}: ignoring unknown section `{other}`",
                    path.display()
                ));
                continue;
            }
        };
        let mapping = match value {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => serde_yaml::Mapping::new(),
            _ => {
                return Err(yaml_error(
                    None,
                    None,
                    format!("section `{name}` must be a mapping of keys"),
                ));
            }
        };
        for key in mapping.keys() {
            let known = key
                .as_str()
                .is_some_and(|k| SETTINGS.iter().any(|s| s.section == section && s.key == k));
            if !known {
                warnings.push(format!(
                    "{}: ignoring unknown key `{name}.{}`",
                    path.display(),
                    yaml_key_text(key)
                ));
            }
        }
        if name == "harfanglab" {
            alias = Some(mapping);
        } else {
            sections.push((section, mapping));
        }
    }
    // The alias goes last so that `harfanglab_intel` keys win over `harfanglab` ones.
    if let Some(m) = alias {
        sections.push((Section::HarfangLabIntel, m));
    }
    Ok(YamlFile { sections })
}

fn yaml_key_text(key: &serde_yaml::Value) -> String {
    match key {
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
    }
}

/// A YAML value as the string pycti would see, `None` for null. Lists are accepted for the
/// scope (joined with `,`); other lists and maps are errors.
fn yaml_scalar(setting: &Setting, value: &serde_yaml::Value) -> Result<Option<String>, String> {
    use serde_yaml::Value;
    match value {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::String(s) => Ok(Some(s.trim().to_owned())),
        Value::Sequence(items) if setting.env == CONNECTOR_SCOPE.env => {
            let mut parts = Vec::new();
            for item in items {
                match yaml_scalar(setting, item)? {
                    Some(s) => parts.push(s),
                    None => continue,
                }
            }
            Ok(Some(parts.join(",")))
        }
        Value::Tagged(t) => yaml_scalar(setting, &t.value),
        Value::Sequence(_) | Value::Mapping(_) => {
            Err("expected a single value, found a list or a mapping".to_owned())
        }
    }
}

/// How a TLS peer is verified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TlsVerify {
    /// No verification at all (the user turned it off).
    Disabled,
    /// The system / bundled web PKI roots.
    #[default]
    SystemRoots,
    /// Only the CAs of this PEM file.
    CaFile(PathBuf),
}

impl TlsVerify {
    /// Whether the peer certificate is verified at all.
    pub fn verify(&self) -> bool {
        !matches!(self, TlsVerify::Disabled)
    }

    /// The CA bundle to trust instead of the built-in roots.
    pub fn ca_file(&self) -> Option<&Path> {
        match self {
            TlsVerify::CaFile(p) => Some(p),
            _ => None,
        }
    }

    /// For the summary line: what verification means for `url` (none at all over plain http).
    fn describe_for(&self, url: &str) -> String {
        if url.starts_with("http://") {
            return "none (http)".to_owned();
        }
        match self {
            TlsVerify::Disabled => "off".to_owned(),
            TlsVerify::SystemRoots => "on".to_owned(),
            TlsVerify::CaFile(p) => format!("ca:{}", p.display()),
        }
    }
}

/// Maturity given to created Sigma/Yara rules (`hl_status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RuleMaturity {
    #[default]
    Stable,
    Testing,
}

impl RuleMaturity {
    /// The HarfangLab API value.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleMaturity::Stable => "stable",
            RuleMaturity::Testing => "testing",
        }
    }
}

/// The `recover` parameter of the first stream connection (opencti-protocol.md §1.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Recover {
    /// Unset: recover until the time of the first run.
    #[default]
    UntilNow,
    /// `false`/`no`/`none`: send no recover parameter.
    Disabled,
    /// Recover until this ISO 8601 date (as written by the user; percent-encode it on the wire).
    Until(String),
}

/// OpenCTI connection.
#[derive(Clone, Debug, Default)]
pub struct OpenCtiConfig {
    /// Base URL without a trailing `/`.
    pub url: String,
    /// `Authorization: Bearer` token (GraphQL and stream).
    pub token: Secret,
    /// Verification of OpenCTI's certificate (GraphQL and stream).
    pub tls: TlsVerify,
    /// `OPENCTI_CUSTOM_HEADERS`, for GraphQL calls only (like pycti); values may be credentials.
    pub custom_headers: Vec<(String, Secret)>,
    /// Whole-request timeout of GraphQL calls (not used on the stream).
    pub request_timeout: Duration,
}

/// How this connector registers and follows the stream.
#[derive(Clone, Debug)]
pub struct ConnectorConfig {
    /// Registration id; OpenCTI keeps the connector state under it.
    pub id: uuid::Uuid,
    /// Display name in OpenCTI (at least 2 characters, as registration requires).
    pub name: String,
    /// Scope sent at registration, split on `,`.
    pub scope: Vec<String>,
    /// Level for this crate's logs (HTTP/TLS crates stay at `warn`).
    pub log_level: log::LevelFilter,
    /// The stream followed: `{url}/stream/{live_stream_id}`.
    pub live_stream_id: String,
    /// `listen-delete` header.
    pub listen_delete: bool,
    /// `no-dependencies` header.
    pub no_dependencies: bool,
    /// `with-inferences` header.
    pub with_inferences: bool,
    /// First run only.
    pub recover: Recover,
    /// First run only: start position, epoch milliseconds (`<ms>-0`); `None` = `0-0`.
    pub start_timestamp_ms: Option<u64>,
    /// No byte for this long: the stream is dead, reconnect.
    pub stream_idle_timeout: Duration,
    /// Period of `pingConnector` (which carries the stream state).
    pub ping_interval: Duration,
    /// Where to serve metrics, `None` when not exposed.
    pub metrics_addr: Option<SocketAddr>,
    /// First metric name prefix (`namespace_`), possibly empty.
    pub metrics_namespace: String,
    /// Second metric name prefix (`subsystem_`), possibly empty.
    pub metrics_subsystem: String,
}

impl Default for ConnectorConfig {
    /// Placeholder values for tests that build a `Config` by hand (not the documented defaults).
    fn default() -> Self {
        ConnectorConfig {
            id: uuid::Uuid::nil(),
            name: String::new(),
            scope: Vec::new(),
            log_level: log::LevelFilter::Info,
            live_stream_id: String::new(),
            listen_delete: true,
            no_dependencies: true,
            with_inferences: false,
            recover: Recover::UntilNow,
            start_timestamp_ms: None,
            stream_idle_timeout: Duration::from_secs(15),
            ping_interval: Duration::from_secs(40),
            metrics_addr: None,
            metrics_namespace: String::new(),
            metrics_subsystem: String::new(),
        }
    }
}

/// HarfangLab connection and behaviour.
#[derive(Clone, Debug, Default)]
pub struct HarfangLabConfig {
    /// Manager URL without a trailing `/`.
    pub url: String,
    /// `Authorization: Token` API key.
    pub token: Secret,
    /// Verification of the manager's certificate.
    pub tls: TlsVerify,
    /// Name of the IOC, Sigma and Yara sources the connector owns.
    pub source_list_name: String,
    /// Delete (true) or disable (false) rules no indicator needs any more.
    pub remove_indicator: bool,
    /// `hl_status` of created Sigma/Yara rules.
    pub rule_maturity: RuleMaturity,
    /// Connect timeout, used for OpenCTI too.
    pub connect_timeout: Duration,
    /// Whole-request timeout of one REST call.
    pub request_timeout: Duration,
    /// Counted failures an event may retry before it is dead-lettered (the pipeline's budget;
    /// availability failures during an outage do not count, `pipeline/budget.rs`).
    pub max_retries: u32,
    /// Longest wait before an event's retry (backoff cap, and cap of an honoured `Retry-After`).
    pub retry_backoff_max: Duration,
    /// Log writes instead of doing them.
    pub dry_run: bool,
}

impl HarfangLabConfig {
    /// The retry policy of failed events, the one place the two retry settings mean something:
    /// `max_retries` counted failures, waits doubling from 1 s up to `retry_backoff_max`. (The
    /// HTTP clients only resend a dropped connection, `RetryPolicy::quick`.)
    pub fn event_retry(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries,
            base: Duration::from_secs(1),
            cap: self.retry_backoff_max,
        }
    }
}

/// Reconciliation (README "Reconciliation"). `Default` holds the documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconcileConfig {
    /// Time between two passes in `run`; `None` = no pass in `run` (`0`).
    pub interval: Option<Duration>,
    /// A pass that would release more than this share of our rules repairs nothing.
    pub max_delete_ratio: f64,
    /// Re-enable rules disabled by hand that indicators still want.
    pub enforce_enabled: bool,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            interval: Some(Duration::from_secs(24 * 3600)),
            max_delete_ratio: 0.2,
            enforce_enabled: false,
        }
    }
}

/// Process-level settings.
#[derive(Clone, Debug, Default)]
pub struct ServiceConfig {
    /// Where the local state lives (created at start if missing).
    pub state_dir: PathBuf,
    /// Worker threads, 1 to 256; with `workers_auto`, the number the pool starts with.
    pub workers: usize,
    /// `HARFANGLAB_INTEL_WORKERS=auto`: an adaptive limit on HarfangLab requests in flight
    /// (`crate::concurrency`), with a worker pool that grows with it up to 256.
    pub workers_auto: bool,
    /// Time given to in-flight events after a termination signal.
    pub shutdown_timeout: Duration,
    /// Most events of one indicator run as one batch (1 = no coalescing; 0 in a hand-built
    /// `Config` counts as 1).
    pub coalesce_max: usize,
}

impl ServiceConfig {
    /// Set workers and coalescing as an empty configuration does (the settings table's
    /// defaults: `workers=auto`, `coalesce_max=64`), for a `Config` built by hand that must run
    /// like the product (the demo); `Config::default()` has a fixed count and no coalescing.
    pub fn use_product_concurrency(&mut self) {
        let workers = HARFANGLAB_INTEL_WORKERS.default.unwrap_or("auto");
        self.workers_auto = workers.eq_ignore_ascii_case("auto");
        self.workers = if self.workers_auto {
            crate::concurrency::AdaptiveOptions::default().initial
        } else {
            workers.parse().unwrap_or(1)
        };
        self.coalesce_max = HARFANGLAB_INTEL_COALESCE_MAX
            .default
            .and_then(|d| d.parse().ok())
            .unwrap_or(1);
    }

    /// `16`, or `auto` (logs, the startup summary).
    pub fn describe_workers(&self) -> String {
        if self.workers_auto {
            "auto".to_owned()
        } else {
            self.workers.to_string()
        }
    }
}

/// The validated configuration. `Debug` is safe to log: tokens are [`Secret`]s.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// `opencti:` settings.
    pub opencti: OpenCtiConfig,
    /// `connector:` settings.
    pub connector: ConnectorConfig,
    /// `harfanglab_intel:` connection and behaviour settings.
    pub harfanglab: HarfangLabConfig,
    /// `harfanglab_intel:` process settings (state, workers, shutdown).
    pub service: ServiceConfig,
    /// `harfanglab_intel:` reconciliation settings.
    pub reconcile: ReconcileConfig,
}

impl Config {
    /// Convenience for callers and tests: resolve and validate from a YAML text and an
    /// environment lookup (no file system access except CA-file existence checks and, when the
    /// lookup sets `CREDENTIALS_DIRECTORY`, reading the token credential files).
    pub fn from_sources(
        yaml: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let path = Path::new("config.yml");
        let raw = RawConfig::from_yaml(yaml.map(|y| (path, y)), &env)?;
        Config::from_raw(&raw)
    }

    /// Validate and type every setting; on failure every problem is listed.
    pub fn from_raw(raw: &RawConfig) -> Result<Config, ConfigError> {
        let mut v = Validator {
            raw,
            problems: raw.problems.clone(),
        };

        let opencti = OpenCtiConfig {
            url: v.url(&OPENCTI_URL),
            token: v.token(&OPENCTI_TOKEN),
            tls: v.tls(&OPENCTI_SSL_VERIFY, &OPENCTI_CA_FILE),
            custom_headers: v.headers(&OPENCTI_CUSTOM_HEADERS),
            request_timeout: v.seconds(&OPENCTI_REQUEST_TIMEOUT),
        };

        match v.string(&CONNECTOR_TYPE) {
            Some(t) if !t.eq_ignore_ascii_case("STREAM") => {
                v.problem(&CONNECTOR_TYPE, format!("must be STREAM, got {t:?}"))
            }
            _ => {}
        }
        let expose_metrics = v.boolean(&CONNECTOR_EXPOSE_METRICS);
        let metrics_host = v.parsed::<IpAddr>(&CONNECTOR_METRICS_HOST, "an IP address");
        let metrics_port = v.parsed::<u16>(&CONNECTOR_METRICS_PORT, "a port number (1-65535)");
        if metrics_port == Some(0) {
            v.problem(
                &CONNECTOR_METRICS_PORT,
                "must be between 1 and 65535".to_owned(),
            );
        }
        let connector = ConnectorConfig {
            id: v.uuid(&CONNECTOR_ID),
            name: v.name(&CONNECTOR_NAME),
            scope: v
                .string(&CONNECTOR_SCOPE)
                .map(|s| {
                    s.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            log_level: v.log_level(&CONNECTOR_LOG_LEVEL),
            live_stream_id: v.string(&CONNECTOR_LIVE_STREAM_ID).unwrap_or_default(),
            listen_delete: v.boolean(&CONNECTOR_LIVE_STREAM_LISTEN_DELETE),
            no_dependencies: v.boolean(&CONNECTOR_LIVE_STREAM_NO_DEPENDENCIES),
            with_inferences: v.boolean(&CONNECTOR_LIVE_STREAM_WITH_INFERENCES),
            recover: v.recover(&CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE),
            start_timestamp_ms: v.parsed::<u64>(
                &CONNECTOR_LIVE_STREAM_START_TIMESTAMP,
                "an epoch time in milliseconds",
            ),
            stream_idle_timeout: v.seconds(&CONNECTOR_LIVE_STREAM_IDLE_TIMEOUT),
            ping_interval: v.seconds(&CONNECTOR_PING_INTERVAL),
            metrics_addr: match (expose_metrics, metrics_host, metrics_port) {
                (true, Some(h), Some(p)) => Some(SocketAddr::new(h, p)),
                _ => None,
            },
            metrics_namespace: v.string(&CONNECTOR_METRICS_NAMESPACE).unwrap_or_default(),
            metrics_subsystem: v.string(&CONNECTOR_METRICS_SUBSYSTEM).unwrap_or_default(),
        };

        let harfanglab = HarfangLabConfig {
            url: v.url(&HARFANGLAB_INTEL_URL),
            token: v.token(&HARFANGLAB_INTEL_TOKEN),
            tls: v.tls(&HARFANGLAB_INTEL_SSL_VERIFY, &HARFANGLAB_INTEL_CA_FILE),
            source_list_name: v
                .string(&HARFANGLAB_INTEL_SOURCE_LIST_NAME)
                .unwrap_or_default(),
            remove_indicator: v.boolean(&HARFANGLAB_INTEL_REMOVE_INDICATOR),
            rule_maturity: v.rule_maturity(&HARFANGLAB_INTEL_RULE_MATURITY),
            connect_timeout: v.seconds(&HARFANGLAB_INTEL_CONNECT_TIMEOUT),
            request_timeout: v.seconds(&HARFANGLAB_INTEL_REQUEST_TIMEOUT),
            max_retries: v
                .parsed::<u32>(&HARFANGLAB_INTEL_MAX_RETRIES, "a whole number")
                .unwrap_or_default(),
            retry_backoff_max: v.seconds(&HARFANGLAB_INTEL_RETRY_BACKOFF_MAX),
            dry_run: v.boolean(&HARFANGLAB_INTEL_DRY_RUN),
        };

        let workers_auto = v
            .string(&HARFANGLAB_INTEL_WORKERS)
            .is_some_and(|w| w.trim().eq_ignore_ascii_case("auto"));
        let workers = if workers_auto {
            crate::concurrency::AdaptiveOptions::default().initial
        } else {
            let workers = v
                .parsed::<usize>(&HARFANGLAB_INTEL_WORKERS, "a whole number or `auto`")
                .unwrap_or_default();
            if !(1..=256).contains(&workers) && v.string(&HARFANGLAB_INTEL_WORKERS).is_some() {
                v.problem(
                    &HARFANGLAB_INTEL_WORKERS,
                    format!("must be between 1 and 256 or `auto`, got {workers}"),
                );
            }
            workers
        };
        let coalesce_max = v
            .parsed::<usize>(&HARFANGLAB_INTEL_COALESCE_MAX, "a whole number")
            .unwrap_or(1);
        if !(1..=1024).contains(&coalesce_max) {
            v.problem(
                &HARFANGLAB_INTEL_COALESCE_MAX,
                format!("must be between 1 and 1024, got {coalesce_max}"),
            );
        }
        let service = ServiceConfig {
            state_dir: v.state_dir(&HARFANGLAB_INTEL_STATE_DIR),
            workers,
            workers_auto,
            shutdown_timeout: v.seconds(&HARFANGLAB_INTEL_SHUTDOWN_TIMEOUT),
            coalesce_max,
        };

        let reconcile = ReconcileConfig {
            interval: v.interval(&HARFANGLAB_INTEL_RECONCILE_INTERVAL),
            max_delete_ratio: v.ratio(&HARFANGLAB_INTEL_RECONCILE_MAX_DELETE_RATIO),
            enforce_enabled: v.boolean(&HARFANGLAB_INTEL_RECONCILE_ENFORCE_ENABLED),
        };

        if v.problems.is_empty() {
            Ok(Config {
                opencti,
                connector,
                harfanglab,
                service,
                reconcile,
            })
        } else {
            Err(ConfigError::Invalid(v.problems))
        }
    }

    /// One line for the startup log. Contains no token.
    pub fn summary(&self) -> String {
        let c = &self.connector;
        let h = &self.harfanglab;
        format!(
            "opencti={} tls={} stream={} connector={} ({:?}) harfanglab={} tls={} list={:?} \
             maturity={} remove_indicator={} dry_run={} workers={} state_dir={} metrics={} log={} \
             reconcile={}",
            redact_url(&self.opencti.url),
            self.opencti.tls.describe_for(&self.opencti.url),
            c.live_stream_id,
            c.id,
            c.name,
            redact_url(&h.url),
            h.tls.describe_for(&h.url),
            h.source_list_name,
            h.rule_maturity.as_str(),
            h.remove_indicator,
            h.dry_run,
            self.service.describe_workers(),
            self.service.state_dir.display(),
            c.metrics_addr
                .map(|a| a.to_string())
                .unwrap_or_else(|| "off".to_owned()),
            c.log_level.as_str().to_ascii_lowercase(),
            match self.reconcile.interval {
                Some(i) => format!(
                    "every {} (max_delete_ratio {}, enforce_enabled {})",
                    humantime::format_duration(i),
                    self.reconcile.max_delete_ratio,
                    self.reconcile.enforce_enabled
                ),
                None => "off".to_owned(),
            },
        )
    }

    /// Things that are allowed but deserve a `warn!` at startup.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.opencti.tls == TlsVerify::Disabled && self.opencti.url.starts_with("https") {
            out.push(
                "TLS certificate verification towards OpenCTI is off (OPENCTI_SSL_VERIFY defaults \
                 to false like pycti); set OPENCTI_SSL_VERIFY=true or OPENCTI_CA_FILE"
                    .to_owned(),
            );
        }
        if self.harfanglab.tls == TlsVerify::Disabled && self.harfanglab.url.starts_with("https") {
            out.push(
                "TLS certificate verification towards HarfangLab is off (HARFANGLAB_INTEL_SSL_VERIFY=false)"
                    .to_owned(),
            );
        }
        out
    }
}

/// Parse a log level name: error, warn/warning, info, debug, trace (any case).
pub fn parse_log_level(value: &str) -> Result<log::LevelFilter, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "error" => Ok(log::LevelFilter::Error),
        "warn" | "warning" => Ok(log::LevelFilter::Warn),
        "info" => Ok(log::LevelFilter::Info),
        "debug" => Ok(log::LevelFilter::Debug),
        "trace" => Ok(log::LevelFilter::Trace),
        _ => Err(format!(
            "unknown log level {value:?} (expected error, warn, warning, info, debug or trace)"
        )),
    }
}

/// Parse a boolean the way people write them: true/false, yes/no, on/off, 1/0, any case.
fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Collects problems while typing the raw values.
struct Validator<'a> {
    raw: &'a RawConfig,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn problem(&mut self, setting: &'static Setting, message: String) {
        // One problem per setting is enough to act on; the first is the most basic.
        if self.problems.iter().any(|p| p.env == setting.env) {
            return;
        }
        let origin = self
            .raw
            .entry(setting)
            .map(|e| e.origin)
            .unwrap_or(Origin::Default);
        self.problems.push(Problem {
            env: setting.env,
            yaml_path: setting.yaml_path(),
            origin,
            message,
        });
    }

    /// The effective value, with the required and `ChangeMe` checks done.
    fn string(&mut self, setting: &'static Setting) -> Option<String> {
        let entry = self.raw.entry(setting)?;
        match entry.effective() {
            None => {
                if setting.required {
                    let message = match (entry.origin, entry.provided.is_some()) {
                        (Origin::Env, true) => "required, but set to an empty string",
                        (Origin::File, true) => "required, but empty in the config file",
                        (Origin::Credential, true) => "required, but the credential file is empty",
                        _ => "required, but not set",
                    };
                    self.problem(setting, message.to_owned());
                }
                None
            }
            Some(v) if v.eq_ignore_ascii_case("changeme") => {
                self.problem(
                    setting,
                    "still the `ChangeMe` placeholder of the sample: set a real value".to_owned(),
                );
                None
            }
            Some(v) => Some(v.to_owned()),
        }
    }

    /// OpenCTI's registration refuses names shorter than 2 characters (opencti-protocol.md §3.1).
    fn name(&mut self, setting: &'static Setting) -> String {
        let name = self.string(setting).unwrap_or_default();
        if name.chars().count() < 2 {
            self.problem(
                setting,
                format!("must be at least 2 characters, got {name:?}"),
            );
        }
        name
    }

    fn token(&mut self, setting: &'static Setting) -> Secret {
        let value = self.string(setting).unwrap_or_default();
        if value.chars().any(char::is_whitespace) {
            // Never echo a token, not even a wrong one.
            self.problem(setting, "must not contain spaces".to_owned());
        }
        Secret::new(value)
    }

    /// `name:value;name2:value2`: split on `;`, then on the first `:` (pycti). Unlike pycti, a
    /// pair without `:` or with an empty name is reported instead of silently dropped; values are
    /// never echoed (they are often credentials).
    fn headers(&mut self, setting: &'static Setting) -> Vec<(String, Secret)> {
        let Some(value) = self.string(setting) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, pair) in value.split(';').map(str::trim).enumerate() {
            if pair.is_empty() {
                continue;
            }
            match pair.split_once(':') {
                Some((name, v))
                    if !name.trim().is_empty()
                        && name.trim().bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    out.push((name.trim().to_owned(), Secret::new(v.trim())));
                }
                _ => self.problem(
                    setting,
                    format!(
                        "header {} is not `name:value` (expected name:value;name2:value2)",
                        i + 1
                    ),
                ),
            }
        }
        out
    }

    fn url(&mut self, setting: &'static Setting) -> String {
        let Some(value) = self.string(setting) else {
            return String::new();
        };
        let lower = value.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"));
        match rest {
            None => self.problem(
                setting,
                format!("must be an http:// or https:// URL, got {value:?}"),
            ),
            Some(r) if r.is_empty() || r.starts_with('/') => {
                self.problem(setting, format!("has no host: {value:?}"))
            }
            Some(_) if value.chars().any(char::is_whitespace) => {
                self.problem(setting, format!("must not contain spaces: {value:?}"))
            }
            Some(_) => {}
        }
        value.trim_end_matches('/').to_owned()
    }

    fn boolean(&mut self, setting: &'static Setting) -> bool {
        let Some(value) = self.string(setting) else {
            return false;
        };
        parse_bool(&value).unwrap_or_else(|| {
            self.problem(
                setting,
                format!("must be a boolean (true/false, yes/no, on/off, 1/0), got {value:?}"),
            );
            false
        })
    }

    fn parsed<T: std::str::FromStr>(&mut self, setting: &'static Setting, what: &str) -> Option<T> {
        let value = self.string(setting)?;
        match value.parse::<T>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.problem(setting, format!("must be {what}, got {value:?}"));
                None
            }
        }
    }

    /// Whole seconds (`30`) or a humantime duration (`1m30s`); must be positive.
    fn seconds(&mut self, setting: &'static Setting) -> Duration {
        let Some(value) = self.string(setting) else {
            return Duration::ZERO;
        };
        let parsed = match value.parse::<u64>() {
            Ok(s) => Ok(Duration::from_secs(s)),
            Err(_) => humantime::parse_duration(&value),
        };
        match parsed {
            Ok(d) if d.is_zero() => {
                self.problem(setting, "must be more than 0 seconds".to_owned());
                d
            }
            Ok(d) => d,
            Err(_) => {
                self.problem(
                    setting,
                    format!("must be a number of seconds (or like `1m30s`), got {value:?}"),
                );
                Duration::ZERO
            }
        }
    }

    /// A duration where `0` means "off" (`None`).
    fn interval(&mut self, setting: &'static Setting) -> Option<Duration> {
        let value = self.string(setting)?;
        let parsed = match value.parse::<u64>() {
            Ok(s) => Ok(Duration::from_secs(s)),
            Err(_) => humantime::parse_duration(&value),
        };
        match parsed {
            Ok(d) if d.is_zero() => None,
            Ok(d) => Some(d),
            Err(_) => {
                self.problem(
                    setting,
                    format!(
                        "must be a number of seconds (or like `24h`), `0` for off, got {value:?}"
                    ),
                );
                None
            }
        }
    }

    /// A share between 0 and 1.
    fn ratio(&mut self, setting: &'static Setting) -> f64 {
        let value = self.string(setting).unwrap_or_default();
        match value.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => r,
            _ => {
                self.problem(
                    setting,
                    format!(
                        "must be a number between 0 and 1 (a share of the rules), got {value:?}"
                    ),
                );
                0.0
            }
        }
    }

    fn uuid(&mut self, setting: &'static Setting) -> uuid::Uuid {
        let Some(value) = self.string(setting) else {
            return uuid::Uuid::nil();
        };
        // Only the hyphenated form: it is what OpenCTI shows and stores.
        match uuid::Uuid::try_parse(&value) {
            Ok(id) if value.len() == 36 && id.is_nil() => {
                self.problem(
                    setting,
                    format!(
                        "is the nil UUID {value}, which cannot identify a connector: generate one \
                         with `uuidgen` and keep it"
                    ),
                );
                id
            }
            Ok(id) if value.len() == 36 => id,
            _ => {
                self.problem(
                    setting,
                    format!(
                        "must be a UUID like 0b8a3c1e-5f2d-4e6a-9b7c-1d2e3f4a5b6c (generate one with \
                         `uuidgen`), got {value:?}"
                    ),
                );
                uuid::Uuid::nil()
            }
        }
    }

    fn log_level(&mut self, setting: &'static Setting) -> log::LevelFilter {
        let Some(value) = self.string(setting) else {
            return log::LevelFilter::Info;
        };
        parse_log_level(&value).unwrap_or_else(|m| {
            self.problem(setting, m);
            log::LevelFilter::Info
        })
    }

    fn rule_maturity(&mut self, setting: &'static Setting) -> RuleMaturity {
        let Some(value) = self.string(setting) else {
            return RuleMaturity::Stable;
        };
        match value.to_ascii_lowercase().as_str() {
            "stable" => RuleMaturity::Stable,
            "testing" => RuleMaturity::Testing,
            _ => {
                self.problem(setting, format!("must be stable or testing, got {value:?}"));
                RuleMaturity::Stable
            }
        }
    }

    fn recover(&mut self, setting: &'static Setting) -> Recover {
        let Some(value) = self.string(setting) else {
            return Recover::UntilNow;
        };
        if matches!(value.to_ascii_lowercase().as_str(), "false" | "no" | "none") {
            return Recover::Disabled;
        }
        if is_iso_date(&value) {
            Recover::Until(value)
        } else {
            self.problem(
                setting,
                format!(
                    "must be an ISO 8601 date like 2024-06-15T10:00:00Z, or false/no/none, got {value:?}"
                ),
            );
            Recover::UntilNow
        }
    }

    fn tls(&mut self, verify: &'static Setting, ca: &'static Setting) -> TlsVerify {
        let ca_file = self.string(ca).map(PathBuf::from);
        if let Some(p) = ca_file.as_ref().filter(|p| !p.is_file()) {
            self.problem(ca, format!("CA file {} does not exist", p.display()));
        }
        let verify_entry_default = self.raw.entry(verify).is_none_or(RawEntry::is_default);
        let Some(value) = self.string(verify) else {
            return TlsVerify::SystemRoots;
        };
        match (parse_bool(&value), ca_file) {
            (Some(true), None) => TlsVerify::SystemRoots,
            (Some(true), Some(p)) => TlsVerify::CaFile(p),
            (Some(false), None) => TlsVerify::Disabled,
            // A CA file with a *defaulted* `false` (OpenCTI) means the user wants verification.
            (Some(false), Some(p)) if verify_entry_default => TlsVerify::CaFile(p),
            (Some(false), Some(_)) => {
                self.problem(
                    ca,
                    format!(
                        "is set but {} turns verification off; drop one of them",
                        verify.env
                    ),
                );
                TlsVerify::Disabled
            }
            (None, ca_file) => {
                let path = PathBuf::from(&value);
                if !path.is_file() {
                    self.problem(
                        verify,
                        format!(
                            "must be a boolean or the path of an existing CA-bundle file, got {value:?}"
                        ),
                    );
                } else if ca_file.as_ref().is_some_and(|c| *c != path) {
                    self.problem(
                        ca,
                        format!(
                            "conflicts with {} which already names a CA bundle",
                            verify.env
                        ),
                    );
                }
                TlsVerify::CaFile(path)
            }
        }
    }

    fn state_dir(&mut self, setting: &'static Setting) -> PathBuf {
        let defaulted = self.raw.entry(setting).is_none_or(RawEntry::is_default);
        if let (true, Some(dir)) = (defaulted, &self.raw.state_directory) {
            return PathBuf::from(dir);
        }
        PathBuf::from(self.string(setting).unwrap_or_default())
    }
}

/// `YYYY-MM-DD`, optionally followed by `T` (or a space) and `HH:MM[:SS[.fff]]` and an optional
/// `Z` or `±HH:MM` offset: the ISO 8601 forms OpenCTI's date parser accepts.
fn is_iso_date(value: &str) -> bool {
    fn digits(s: &[u8], n: usize) -> bool {
        s.len() >= n && s[..n].iter().all(u8::is_ascii_digit)
    }
    fn num(s: &[u8]) -> u32 {
        s.iter().fold(0, |a, d| a * 10 + u32::from(d - b'0'))
    }
    let b = value.as_bytes();
    // Each slice is taken only after `get` proved it in bounds (short-circuit order matters).
    if !(digits(b, 4)
        && b.get(4) == Some(&b'-')
        && digits(&b[5..], 2)
        && b.get(7) == Some(&b'-')
        && digits(&b[8..], 2))
    {
        return false;
    }
    let (month, day) = (num(&b[5..7]), num(&b[8..10]));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return false;
    }
    let rest = &b[10..];
    if rest.is_empty() {
        return true;
    }
    if !matches!(rest[0], b'T' | b't' | b' ') {
        return false;
    }
    let t = &rest[1..];
    if !(digits(t, 2) && t.get(2) == Some(&b':') && digits(&t[3..], 2)) {
        return false;
    }
    if num(&t[..2]) > 23 || num(&t[3..5]) > 59 {
        return false;
    }
    let mut i = 5;
    if t.get(i) == Some(&b':') {
        if !digits(&t[i + 1..], 2) || num(&t[i + 1..i + 3]) > 60 {
            return false;
        }
        i += 3;
        if t.get(i) == Some(&b'.') {
            let frac = t[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if frac == 0 {
                return false;
            }
            i += 1 + frac;
        }
    }
    match &t[i..] {
        [] | [b'Z'] | [b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] | [b'+' | b'-', h1, h2, m1, m2] => {
            [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
        }
        _ => false,
    }
}

/// The configuration reference as a Markdown table (README "Configuration reference"), for
/// `tests/config_reference.rs`, which keeps the README generated from it: only with `testkit`.
#[cfg(any(test, feature = "testkit"))]
pub fn reference_markdown() -> String {
    let mut out =
        String::from("| Env variable | YAML key | Default | Meaning |\n|---|---|---|---|\n");
    for s in SETTINGS {
        let default = match (s.default, s.required) {
            (_, true) => "**required**".to_owned(),
            (Some(d), _) => format!("`{d}`"),
            (None, _) => "(unset)".to_owned(),
        };
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} |\n",
            s.env,
            s.yaml_path(),
            default,
            s.doc.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const MINIMAL: &[(&str, &str)] = &[
        ("OPENCTI_URL", "http://opencti:8080/"),
        ("OPENCTI_TOKEN", "octi-token-1"),
        ("CONNECTOR_ID", "0b8a3c1e-5f2d-4e6a-9b7c-1d2e3f4a5b6c"),
        ("CONNECTOR_LIVE_STREAM_ID", "live-1"),
        ("HARFANGLAB_INTEL_URL", "https://hl.example:8443"),
        ("HARFANGLAB_INTEL_TOKEN", "hl-token-1"),
    ];

    #[test]
    fn reconcile_settings_default_parse_and_refuse_nonsense() {
        let c = Config::from_sources(None, env(MINIMAL)).unwrap();
        assert_eq!(c.reconcile, ReconcileConfig::default());
        assert_eq!(c.reconcile.interval, Some(Duration::from_secs(86_400)));
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("HARFANGLAB_INTEL_RECONCILE_INTERVAL", "0"));
        pairs.push(("HARFANGLAB_INTEL_RECONCILE_MAX_DELETE_RATIO", "0.5"));
        pairs.push(("HARFANGLAB_INTEL_RECONCILE_ENFORCE_ENABLED", "yes"));
        let c = Config::from_sources(None, env(&pairs)).unwrap();
        assert_eq!(c.reconcile.interval, None);
        assert_eq!(c.reconcile.max_delete_ratio, 0.5);
        assert!(c.reconcile.enforce_enabled);
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("HARFANGLAB_INTEL_RECONCILE_INTERVAL", "1h30m"));
        let c = Config::from_sources(None, env(&pairs)).unwrap();
        assert_eq!(c.reconcile.interval, Some(Duration::from_secs(5400)));
        for (name, bad) in [
            ("HARFANGLAB_INTEL_RECONCILE_INTERVAL", "daily"),
            ("HARFANGLAB_INTEL_RECONCILE_MAX_DELETE_RATIO", "1.5"),
            ("HARFANGLAB_INTEL_RECONCILE_MAX_DELETE_RATIO", "x"),
        ] {
            let mut pairs = MINIMAL.to_vec();
            pairs.push((name, bad));
            let err = Config::from_sources(None, env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn product_concurrency_is_what_an_empty_configuration_sets() {
        let c = Config::from_sources(None, env(MINIMAL)).unwrap();
        let mut by_hand = Config::default().service;
        by_hand.use_product_concurrency();
        assert!(by_hand.workers_auto && c.service.workers_auto);
        assert_eq!(
            (by_hand.workers, by_hand.coalesce_max),
            (c.service.workers, c.service.coalesce_max)
        );
    }

    #[test]
    fn coalesce_max_defaults_to_64_and_is_bounded() {
        let c = Config::from_sources(None, env(MINIMAL)).unwrap();
        assert_eq!(c.service.coalesce_max, 64);
        assert_eq!(c.pipeline_options().coalesce_max, 64);
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("HARFANGLAB_INTEL_COALESCE_MAX", "1"));
        let c = Config::from_sources(None, env(&pairs)).unwrap();
        assert_eq!(c.pipeline_options().coalesce_max, 1);
        for bad in ["0", "1025", "off"] {
            let mut pairs = MINIMAL.to_vec();
            pairs.push(("HARFANGLAB_INTEL_COALESCE_MAX", bad));
            let err = Config::from_sources(None, env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("HARFANGLAB_INTEL_COALESCE_MAX"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn tokens_come_from_systemd_credentials_when_their_variables_are_unset() {
        let dir = std::env::temp_dir().join(format!("hli-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("opencti_token"), "octi-from-cred\n").unwrap();
        std::fs::write(dir.join("harfanglab_token"), "hl-from-cred\n").unwrap();
        let creds = dir.to_str().unwrap();
        let mut pairs: Vec<(&str, &str)> = MINIMAL
            .iter()
            .copied()
            .filter(|(k, _)| !k.ends_with("_TOKEN"))
            .collect();
        pairs.push(("CREDENTIALS_DIRECTORY", creds));
        let yaml = "opencti:\n  token: octi-from-yaml\n";
        let raw = RawConfig::from_yaml(Some((Path::new("c.yml"), yaml)), &env(&pairs)).unwrap();
        let origin = |name: &str| {
            raw.entries()
                .iter()
                .find(|e| e.setting.env == name)
                .map(|e| e.origin)
        };
        assert_eq!(origin("OPENCTI_TOKEN"), Some(Origin::Credential));
        assert_eq!(origin("HARFANGLAB_INTEL_TOKEN"), Some(Origin::Credential));
        let c = Config::from_raw(&raw).unwrap();
        assert_eq!(c.opencti.token.expose(), "octi-from-cred");
        assert_eq!(c.harfanglab.token.expose(), "hl-from-cred");

        // The environment variable still wins; a missing credential file falls back to YAML.
        std::fs::remove_file(dir.join("opencti_token")).unwrap();
        pairs.push(("HARFANGLAB_INTEL_TOKEN", "hl-from-env"));
        let c = Config::from_sources(Some(yaml), env(&pairs)).unwrap();
        assert_eq!(c.opencti.token.expose(), "octi-from-yaml");
        assert_eq!(c.harfanglab.token.expose(), "hl-from-env");

        // An empty credential is reported as such, naming the variable.
        pairs.pop();
        std::fs::write(dir.join("harfanglab_token"), "\n").unwrap();
        let err = Config::from_sources(Some(yaml), env(&pairs))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HARFANGLAB_INTEL_TOKEN (YAML harfanglab_intel.token, read from $CREDENTIALS_DIRECTORY): required, but the credential file is empty"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn workers_accept_auto_from_env_and_yaml() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("HARFANGLAB_INTEL_WORKERS", "Auto"));
        let c = Config::from_sources(None, env(&pairs)).unwrap();
        assert!(c.service.workers_auto);
        assert_eq!(
            c.service.workers, 16,
            "the pool starts at the initial limit"
        );
        assert_eq!(c.service.describe_workers(), "auto");

        let yaml = "harfanglab_intel:\n  workers: auto\n";
        let c = Config::from_sources(Some(yaml), env(MINIMAL)).unwrap();
        assert!(c.service.workers_auto);
        let yaml = "harfanglab_intel:\n  workers: 32\n";
        let c = Config::from_sources(Some(yaml), env(MINIMAL)).unwrap();
        assert!(!c.service.workers_auto);
        assert_eq!(c.service.describe_workers(), "32");

        for bad in ["automatic", "0", "257"] {
            pairs.pop();
            pairs.push(("HARFANGLAB_INTEL_WORKERS", bad));
            let err = Config::from_sources(None, env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("HARFANGLAB_INTEL_WORKERS (YAML harfanglab_intel.workers")
                    && err.contains("`auto`"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn settings_are_defined_once() {
        for (i, a) in SETTINGS.iter().enumerate() {
            for b in &SETTINGS[i + 1..] {
                assert_ne!(a.env, b.env);
                assert_ne!(a.yaml_path(), b.yaml_path());
            }
        }
    }

    #[test]
    fn minimal_env_gives_documented_defaults() {
        let c = Config::from_sources(None, env(MINIMAL)).unwrap();
        assert_eq!(c.opencti.url, "http://opencti:8080");
        assert_eq!(c.opencti.tls, TlsVerify::Disabled);
        assert_eq!(c.harfanglab.tls, TlsVerify::SystemRoots);
        assert_eq!(c.harfanglab.source_list_name, "from_OpenCTI");
        assert_eq!(c.harfanglab.rule_maturity, RuleMaturity::Stable);
        assert!(c.connector.listen_delete && c.connector.no_dependencies);
        assert!(!c.connector.with_inferences);
        assert_eq!(c.connector.recover, Recover::UntilNow);
        assert_eq!(c.connector.start_timestamp_ms, None);
        assert_eq!(c.connector.stream_idle_timeout, Duration::from_secs(15));
        assert_eq!(c.connector.ping_interval, Duration::from_secs(40));
        assert_eq!(c.connector.metrics_addr, None);
        assert_eq!(c.connector.scope, vec!["harfanglab".to_owned()]);
        assert_eq!(c.connector.log_level, log::LevelFilter::Info);
        assert_eq!(c.service.workers, 16);
        assert!(c.service.workers_auto, "auto by default");
        assert_eq!(
            c.service.state_dir,
            PathBuf::from("/var/lib/harfanglab-intel")
        );
        assert_eq!(c.harfanglab.request_timeout, Duration::from_secs(30));
        assert_eq!(c.opencti.request_timeout, Duration::from_secs(60));
    }

    #[test]
    fn booleans_accept_common_spellings() {
        for (s, b) in [
            ("TRUE", true),
            ("Yes", true),
            ("on", true),
            ("1", true),
            ("False", false),
            ("NO", false),
            ("Off", false),
            ("0", false),
        ] {
            assert_eq!(parse_bool(s), Some(b), "{s}");
        }
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn durations_accept_seconds_and_humantime_and_reject_zero() {
        let mut e = MINIMAL.to_vec();
        e.push(("CONNECTOR_PING_INTERVAL", "1m30s"));
        let c = Config::from_sources(None, env(&e)).unwrap();
        assert_eq!(c.connector.ping_interval, Duration::from_secs(90));
        e.push(("HARFANGLAB_INTEL_SHUTDOWN_TIMEOUT", "0"));
        let err = Config::from_sources(None, env(&e)).unwrap_err().to_string();
        assert!(err.contains("HARFANGLAB_INTEL_SHUTDOWN_TIMEOUT"), "{err}");
    }

    #[test]
    fn iso_dates() {
        for ok in [
            "2024-06-15",
            "2024-06-15T10:00:00Z",
            "2024-06-15T10:00Z",
            "2024-06-15 10:00:00.123+02:00",
            "2024-06-15T10:00:00.5-0500",
        ] {
            assert!(is_iso_date(ok), "{ok}");
        }
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2024-06-15T25:00",
            "2024-06-15T10:00:00+2",
            "2024-6-1",
        ] {
            assert!(!is_iso_date(bad), "{bad}");
        }
        // Every prefix of valid dates must be answered, never panic (slicing is hand-checked).
        for full in ["2024-06-15T10:00:00.123+02:00", "2024-06-15 10:00:00.5Z"] {
            for end in 0..=full.len() {
                let _ = is_iso_date(&full[..end]);
            }
        }
    }

    #[test]
    fn metrics_address_when_exposed() {
        let mut e = MINIMAL.to_vec();
        e.push(("CONNECTOR_EXPOSE_METRICS", "yes"));
        e.push(("CONNECTOR_METRICS_HOST", "127.0.0.1"));
        let c = Config::from_sources(None, env(&e)).unwrap();
        assert_eq!(
            c.connector.metrics_addr,
            Some("127.0.0.1:9095".parse().unwrap())
        );
    }

    #[test]
    fn custom_headers_follow_pycti_format_and_stay_secret() {
        let mut e = MINIMAL.to_vec();
        e.push(("OPENCTI_CUSTOM_HEADERS", "X-Auth: s3cr3t ; X-Tenant:t1;"));
        let c = Config::from_sources(None, env(&e)).unwrap();
        let h: Vec<_> = c
            .opencti
            .custom_headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.expose()))
            .collect();
        assert_eq!(h, vec![("X-Auth", "s3cr3t"), ("X-Tenant", "t1")]);
        assert!(!format!("{c:?}").contains("s3cr3t"));
        e.push(("OPENCTI_CUSTOM_HEADERS", "X-Auth=s3cr3t"));
        let err = Config::from_sources(None, env(&e)).unwrap_err().to_string();
        assert!(
            err.contains("OPENCTI_CUSTOM_HEADERS") && !err.contains("s3cr3t"),
            "{err}"
        );
    }

    #[test]
    fn connector_name_needs_two_characters() {
        let mut e = MINIMAL.to_vec();
        e.push(("CONNECTOR_NAME", "x"));
        let err = Config::from_sources(None, env(&e)).unwrap_err().to_string();
        assert!(
            err.contains(
                "CONNECTOR_NAME (YAML connector.name, set in the environment): must be at least 2"
            ),
            "{err}"
        );
    }

    #[test]
    fn reference_lists_every_setting() {
        let md = reference_markdown();
        for s in SETTINGS {
            assert!(md.contains(s.env) && md.contains(&s.yaml_path()));
        }
    }
}
