//! The `harfanglab-intel` binary: arguments, configuration, logging, dispatch to [`app`], exit codes
//! (0 ok, 1 runtime failure, 2 configuration or usage error). Everything else lives in the library.

use clap::{Parser, Subcommand};
use harfanglab_intel::app::{self, AppError, EXIT_CONFIG, EXIT_FAILURE, EXIT_OK};
use harfanglab_intel::config::{self, Config, RawConfig};
use harfanglab_intel::pipeline::Shutdown;
use log::{error, info, warn};
use std::io::IsTerminal;
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
            Ok(config) => finish(app::run(&config, &signals())),
            Err(code) => code,
        },
        Command::Check => check(&cli),
        Command::Demo => {
            init_logging(env_log_level());
            let _ = signals();
            finish(app::demo(&mut std::io::stdout()))
        }
        Command::Translate { file, strict } => {
            init_logging(env_log_level());
            translate(file.as_deref(), *strict)
        }
    };
    ExitCode::from(code)
}

/// SIGINT/SIGTERM: the first one shuts down gracefully, a second one exits 130 at once (the
/// checkpoint on disk is always a correct resume position).
fn signals() -> Shutdown {
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let installed = ctrlc::set_handler(move || {
        if s.on_signal() {
            eprintln!("harfanglab-intel: second signal, exiting now");
            std::process::exit(130);
        }
        log::info!("signal received: stopping (again to exit at once)");
    });
    if let Err(e) = installed {
        warn!("cannot install the signal handler: {e}");
    }
    shutdown
}

/// Read and validate the configuration, start logging, log the summary. `Err` is the exit code.
fn load_config(cli: &Cli) -> Result<Config, u8> {
    let raw = read_raw(cli)?;
    init_logging(raw.log_level());
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

/// The level for commands that read no config file: `CONNECTOR_LOG_LEVEL` if valid, else info.
fn env_log_level() -> log::LevelFilter {
    config::process_env("CONNECTOR_LOG_LEVEL")
        .and_then(|v| config::parse_log_level(&v).ok())
        .unwrap_or(log::LevelFilter::Info)
}

/// Log to stderr with UTC RFC 3339 timestamps and thread names, colours only on a terminal.
/// HTTP/TLS crates are kept at `warn` so `debug` stays about this connector.
fn init_logging(level: log::LevelFilter) {
    use simplelog::{
        ColorChoice, CombinedLogger, ConfigBuilder, TermLogger, TerminalMode, ThreadLogMode,
    };
    const NOISY: [&str; 2] = ["ureq", "rustls"];
    let colors = if std::io::stderr().is_terminal() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let base = || {
        let mut b = ConfigBuilder::new();
        b.set_time_format_rfc3339()
            .set_thread_level(log::LevelFilter::Error)
            .set_thread_mode(ThreadLogMode::Names)
            .set_target_level(log::LevelFilter::Error)
            .set_location_level(log::LevelFilter::Off);
        b
    };
    let mut ours = base();
    let mut noisy = base();
    for target in NOISY {
        ours.add_filter_ignore_str(target);
        noisy.add_filter_allow_str(target);
    }
    // ureq_proto hex-dumps requests (Authorization header included) at TRACE: never log it.
    noisy.add_filter_ignore_str("ureq_proto");
    let loggers: Vec<Box<dyn simplelog::SharedLogger>> = vec![
        TermLogger::new(level, ours.build(), TerminalMode::Stderr, colors),
        TermLogger::new(
            level.min(log::LevelFilter::Warn),
            noisy.build(),
            TerminalMode::Stderr,
            colors,
        ),
    ];
    // Fails only if a logger is already set, which cannot happen in this binary.
    let _ = CombinedLogger::init(loggers);
}
