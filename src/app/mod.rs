//! What the commands do once `main` has parsed the arguments: `run`, `demo`, `check`,
//! `translate`, `healthcheck`, `reconcile`.
//!
//! `main` owns the arguments, the signal handler and the process exit; this module owns the work
//! and the glue around it (reading the configuration, printing reports). Every command returns
//! `Result<(), AppError>`, and [`AppError::exit_code`] is the one place a failure becomes an exit
//! code: 0 ok (a closed stdout pipe included), 1 run-time failure (a failed check, an unhealthy
//! connector, `translate --strict` with errors), 2 configuration error. `run` and `demo` are here;
//! `check`, `translate` and `healthcheck` have a module each.

mod check;
mod healthcheck;
mod reconcile;
mod translate;

pub use check::{check_command, check_local, settings_report};
pub use healthcheck::{HealthcheckError, healthcheck_command};
pub use reconcile::{ReconcileArgs, reconcile_command};
pub use translate::translate_command;

use crate::cause::Chain;
use crate::config::{self, Config, ConfigError, RawConfig};
use crate::pipeline::Shutdown;
use std::fmt;
use std::io::{self, Write};
use std::path::Path;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the command failed at run time (I/O, a failed check, `translate --strict` errors).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the configuration (or the command line) is invalid.
pub const EXIT_CONFIG: u8 = 2;

/// Why a command failed; [`AppError::exit_code`] says how the process ends, [`AppError::report`]
/// tells the operator.
#[derive(Debug)]
pub enum AppError {
    /// The configuration file or environment is invalid (exit 2).
    Config(ConfigError),
    /// The service stopped with a fatal error.
    Service(crate::service::ServiceError),
    /// The demo failed.
    Demo(crate::demo::DemoError),
    /// The `translate` input cannot be read.
    Input { path: String, source: io::Error },
    /// Standard output cannot be written.
    Output(io::Error),
    /// `check` found `failed` failing items (its report, already printed, names them).
    CheckFailed { failed: usize },
    /// `healthcheck`: the connector is not healthy, or cannot be asked.
    Unhealthy(HealthcheckError),
    /// `translate --strict`: `failed` of `items` could not be translated (each output line
    /// says why).
    Untranslated { items: usize, failed: usize },
    /// `reconcile`: the pass could not run (either end unreachable, a refused replay).
    Reconcile(String),
    /// `reconcile`: the pass ran and did not converge (its summary, already printed, says why).
    NotConverged,
    /// `run`: the malloc-tuning re-execution failed; the process must stop (exit 2: the
    /// environment is the fix, a restart cannot help).
    Reexec(crate::allocator::ReexecError),
}

impl AppError {
    /// A closed pipe on stdout (`translate ... | head`) is not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, AppError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// The process exit code of this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Config(_) | AppError::Reexec(_) => EXIT_CONFIG,
            e if e.is_broken_pipe() => EXIT_OK,
            _ => EXIT_FAILURE,
        }
    }

    /// Tell the operator, once, with the chain of causes ([`Chain`]). A configuration or
    /// healthcheck problem is written to `err` directly (stderr in `main`): it must reach the
    /// operator even when logging is not set up. A run-time failure goes to the log. A failed
    /// check or strict translation has said everything in its output already, and a closed pipe
    /// is no news.
    pub fn report(&self, err: &mut dyn Write) {
        match self {
            AppError::Config(e) => {
                let _ = writeln!(err, "harfanglab-intel: {}", Chain(e));
                if matches!(e, ConfigError::Invalid(_)) {
                    let _ = writeln!(
                        err,
                        "Set each of them in the environment or in the YAML config file \
                         (see config.yml.sample and the README's configuration reference)."
                    );
                }
            }
            AppError::Unhealthy(e) => {
                let _ = writeln!(err, "harfanglab-intel: {}", Chain(e));
            }
            // Before logging exists.
            AppError::Reexec(e) => {
                let _ = writeln!(err, "harfanglab-intel: {}", Chain(e));
            }
            AppError::CheckFailed { .. }
            | AppError::Untranslated { .. }
            | AppError::NotConverged => {}
            AppError::Reconcile(e) => {
                log::error!("reconcile: {e}");
                let _ = writeln!(err, "harfanglab-intel reconcile: {e}");
            }
            e if e.is_broken_pipe() => {}
            e => log::error!("{}", Chain(e)),
        }
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // These read as the error they carry.
            AppError::Config(e) => fmt::Display::fmt(e, f),
            AppError::Service(e) => fmt::Display::fmt(e, f),
            AppError::Demo(e) => fmt::Display::fmt(e, f),
            AppError::Unhealthy(e) => fmt::Display::fmt(e, f),
            AppError::Reexec(e) => fmt::Display::fmt(e, f),
            AppError::Input { path, source } => write!(f, "cannot read {path}: {source}"),
            AppError::Output(e) => write!(f, "cannot write the output: {e}"),
            AppError::CheckFailed { failed } => write!(f, "{failed} check(s) failed"),
            AppError::Untranslated { items, failed } => {
                write!(f, "{failed} of {items} item(s) could not be translated")
            }
            AppError::Reconcile(e) => write!(f, "reconciliation failed: {e}"),
            AppError::NotConverged => write!(f, "reconciliation did not converge"),
        }
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppError::Config(e) => Some(e),
            AppError::Input { source, .. } | AppError::Output(source) => Some(source),
            AppError::Service(e) => Some(e),
            AppError::Demo(e) => Some(e),
            AppError::Unhealthy(e) => Some(e),
            AppError::Reexec(e) => Some(e),
            AppError::CheckFailed { .. }
            | AppError::Untranslated { .. }
            | AppError::Reconcile(_)
            | AppError::NotConverged => None,
        }
    }
}

/// Read the configuration file (explicit `path`, else the default locations) and the process
/// environment.
pub fn read_raw_config(path: Option<&Path>) -> Result<RawConfig, AppError> {
    RawConfig::load(path, &config::process_env).map_err(AppError::Config)
}

/// The configuration for `run`: read and validate it, start logging at its level, log its
/// warnings and summary.
pub fn load_config(path: Option<&Path>, dry_run: bool) -> Result<Config, AppError> {
    let raw = read_raw_config(path)?;
    crate::logging::init(raw.log_level());
    for w in raw.warnings() {
        log::warn!("{w}");
    }
    let mut config = Config::from_raw(&raw).map_err(AppError::Config)?;
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

/// Run the connector until `shutdown` fires (signals) or a fatal error.
pub fn run(config: &Config, shutdown: &Shutdown) -> Result<(), AppError> {
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
pub fn demo(out: &mut dyn Write, stop: &Shutdown) -> Result<(), AppError> {
    let opts = crate::demo::DemoOptions {
        stop: stop.clone(),
        ..crate::demo::DemoOptions::default()
    };
    let result = crate::demo::run_demo(&opts).map_err(AppError::Demo)?;
    out.write_all(result.render().as_bytes())
        .and_then(|()| out.flush())
        .map_err(AppError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::healthcheck::probe_healthz;

    #[test]
    fn each_failure_has_its_documented_exit_code() {
        let config = ConfigError::Invalid(Vec::new());
        assert_eq!(AppError::Config(config).exit_code(), EXIT_CONFIG);
        let pipe = io::Error::from(io::ErrorKind::BrokenPipe);
        assert_eq!(AppError::Output(pipe).exit_code(), EXIT_OK);
        let full = io::Error::from(io::ErrorKind::StorageFull);
        assert_eq!(AppError::Output(full).exit_code(), EXIT_FAILURE);
        assert_eq!(
            AppError::CheckFailed { failed: 1 }.exit_code(),
            EXIT_FAILURE
        );
        let strict = AppError::Untranslated {
            items: 3,
            failed: 1,
        };
        assert_eq!(strict.exit_code(), EXIT_FAILURE);
        let unhealthy = AppError::Unhealthy(HealthcheckError::NotEnabled);
        assert_eq!(unhealthy.exit_code(), EXIT_FAILURE);
    }

    #[test]
    fn the_library_never_ends_the_process() {
        // Only `main` may exit (the second signal's 130): a library exit would skip the final
        // checkpoint save and the report of why.
        let needle = ["process", "::", "exit("].concat();
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        let mut offenders = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("src/main.rs")
                    && std::fs::read_to_string(&path).unwrap().contains(&needle)
                {
                    offenders.push(path);
                }
            }
        }
        assert!(offenders.is_empty(), "{offenders:?}");
    }

    #[test]
    fn configuration_and_health_problems_are_written_out_the_rest_is_logged() {
        let mut err = Vec::new();
        AppError::Unhealthy(HealthcheckError::NotEnabled).report(&mut err);
        let text = String::from_utf8(err).unwrap();
        assert!(
            text.starts_with("harfanglab-intel: metrics are not exposed"),
            "{text}"
        );
        // A real chain (healthcheck → ureq → I/O): each cause once, on one line.
        let unreachable = probe_healthz(
            "127.0.0.1:1".parse().unwrap(),
            std::time::Duration::from_secs(2),
        )
        .unwrap_err();
        let cause = std::error::Error::source(&unreachable).unwrap().to_string();
        let mut err = Vec::new();
        AppError::Unhealthy(unreachable).report(&mut err);
        let text = String::from_utf8(err).unwrap();
        assert!(
            text.starts_with("harfanglab-intel: cannot reach http://127.0.0.1:1/healthz: "),
            "{text}"
        );
        assert_eq!(text.matches(&cause).count(), 1, "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        for quiet in [
            AppError::CheckFailed { failed: 2 },
            AppError::Output(io::Error::from(io::ErrorKind::BrokenPipe)),
        ] {
            let mut err = Vec::new();
            quiet.report(&mut err);
            assert!(err.is_empty(), "{quiet}");
        }
    }
}
