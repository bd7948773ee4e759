//! The `harfanglab-intel` binary: arguments, configuration, logging set-up, signals, dispatch to [`app`], exit codes
//! (0 ok, 1 runtime failure, 2 configuration or usage error). Everything else lives in the library.

use clap::{Parser, Subcommand};
use harfanglab_intel::app::{self, AppError, EXIT_CONFIG, EXIT_FAILURE, EXIT_OK};
use harfanglab_intel::config::{self, Config, RawConfig};
use harfanglab_intel::logging;
use harfanglab_intel::pipeline::Shutdown;
use log::{error, info, warn};
use std::path::PathBuf;
use std::process::ExitCode;

/// Feeds HarfangLab EDR threat-intel lists (IOC, Sigma, Yara) from an OpenCTI live stream.
#[derive(Parser)]
#[command(name = "harfanglab-intel", version, about)]
struct Cli {
    /// Config file (default: ./config.yml, then /etc/harfanglab-intel/config.yml; none is fine).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "HARFANGLAB_INTEL_CONFIG"
    )]
    config: Option<PathBuf>,
    /// Log HarfangLab writes instead of doing them (same as HARFANGLAB_INTEL_DRY_RUN=true).
    #[arg(long, global = true)]
    dry_run: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the connector (the default).
    Run,
    /// Validate the configuration and print a report.
    Check,
    /// Translate indicators (JSON Lines or a STIX bundle) offline; one JSON line out per indicator.
    Translate {
        /// Input file; `-` or nothing reads standard input.
        file: Option<PathBuf>,
        /// Exit 1 when any indicator could not be translated.
        #[arg(long)]
        strict: bool,
    },
    /// Run against built-in simulators of OpenCTI and HarfangLab.
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command.as_ref().unwrap_or(&Command::Run) {
        Command::Run => match load_config(&cli) {
            Ok(config) => finish(app::run(&config, &Shutdown::install_signal_handler())),
            Err(code) => code,
        },
        Command::Check => check(&cli),
        Command::Demo => {
            logging::init(logging::env_level());
            let _ = Shutdown::install_signal_handler();
            finish(app::demo(&mut std::io::stdout()))
        }
        Command::Translate { file, strict } => {
            logging::init(logging::env_level());
            translate(file.as_deref(), *strict)
        }
    };
    ExitCode::from(code)
}

/// Read and validate the configuration, start logging, log the summary. `Err` is the exit code.
fn load_config(cli: &Cli) -> Result<Config, u8> {
    let raw = read_raw(cli)?;
    logging::init(raw.log_level());
    for w in raw.warnings() {
        warn!("{w}");
    }
    let mut config = Config::from_raw(&raw).map_err(config_failure)?;
    config.harfanglab.dry_run |= cli.dry_run;
    for w in config.warnings() {
        warn!("{w}");
    }
    info!(
        "harfanglab-intel {} starting: {}",
        env!("CARGO_PKG_VERSION"),
        config.summary()
    );
    Ok(config)
}

fn read_raw(cli: &Cli) -> Result<RawConfig, u8> {
    RawConfig::load(cli.config.as_deref(), &config::process_env).map_err(config_failure)
}

fn config_failure(e: config::ConfigError) -> u8 {
    // Printed directly: this must reach the person even when logging is not set up.
    eprintln!("harfanglab-intel: {e}");
    if matches!(e, config::ConfigError::Invalid(_)) {
        eprintln!(
            "Set each of them in the environment or in the YAML config file \
             (see config.yml.sample and the README's configuration reference)."
        );
    }
    EXIT_CONFIG
}

fn check(cli: &Cli) -> u8 {
    let raw = match read_raw(cli) {
        Ok(raw) => raw,
        Err(code) => return code,
    };
    println!("{}", app::settings_report(&raw));
    for w in raw.warnings() {
        println!("[WARN] config file: {w}");
    }
    let mut config = match Config::from_raw(&raw) {
        Ok(c) => c,
        Err(e) => return config_failure(e),
    };
    config.harfanglab.dry_run |= cli.dry_run;
    let report = app::check(&config);
    print!("{report}");
    if report.passed() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }
}

fn translate(file: Option<&std::path::Path>, strict: bool) -> u8 {
    let input = match app::read_input(file) {
        Ok(i) => i,
        Err(e) => return finish(Err(e)),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match app::translate(&input, &mut out) {
        Ok(s) => {
            info!("translated {} item(s), {} with an error", s.items, s.failed);
            if strict && s.failed > 0 {
                EXIT_FAILURE
            } else {
                EXIT_OK
            }
        }
        Err(e) => finish(Err(e)),
    }
}

fn finish(result: Result<(), AppError>) -> u8 {
    match result {
        Ok(()) => EXIT_OK,
        Err(e) if e.is_broken_pipe() => EXIT_OK,
        Err(e) => {
            error!("{e}");
            EXIT_FAILURE
        }
    }
}
