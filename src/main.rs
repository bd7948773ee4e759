//! The `harfanglab-intel` binary: arguments → the signal handler → a command of [`app`] → exit
//! code (0 ok, 1 run-time failure, 2 configuration or usage error, 130 on a second signal). The
//! work, the reports and which failure is which code live in `app`; logging in `logging`.

use clap::error::ErrorKind::ArgumentConflict;
use clap::{CommandFactory, Parser, Subcommand};
use harfanglab_intel::allocator;
use harfanglab_intel::app;
use harfanglab_intel::logging;
use harfanglab_intel::pipeline::Shutdown;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
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
    /// Log HarfangLab writes instead of doing them (same as HARFANGLAB_INTEL_DRY_RUN=true);
    /// for `run`, `check` and `reconcile` (report the drift, repair nothing) only.
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
    /// Translate indicators (JSON Lines or pretty-printed documents, streamed) offline; one JSON
    /// line out per indicator.
    Translate {
        /// Input file; `-` or nothing reads standard input.
        file: Option<PathBuf>,
        /// Exit 1 when any indicator could not be translated.
        #[arg(long)]
        strict: bool,
    },
    /// One reconciliation pass now: compare what the live stream delivers with our HarfangLab
    /// lists and repair the drift (`--dry-run`: report it only). Exit 0 when converged, 1 when a
    /// repair failed or the mass-deletion guard tripped.
    Reconcile {
        /// One JSON line per drift on standard output (the summary goes to standard error).
        #[arg(long)]
        json: bool,
        /// Repair even when the pass would release more than
        /// HARFANGLAB_INTEL_RECONCILE_MAX_DELETE_RATIO of our rules.
        #[arg(long)]
        force: bool,
    },
    /// Run against built-in simulators of OpenCTI and HarfangLab.
    Demo,
    /// Ask the running connector's /healthz on 127.0.0.1 (metrics must be exposed): exit 0 when
    /// healthy, 1 when not, 2 on a configuration error. For container HEALTHCHECKs.
    Healthcheck,
}

impl Command {
    /// Why `--dry-run` means nothing for this command, `None` where it applies.
    fn ignores_dry_run(&self) -> Option<&'static str> {
        match self {
            Command::Run | Command::Check | Command::Reconcile { .. } => None,
            Command::Translate { .. } => Some("`translate` is offline and never writes"),
            Command::Demo => Some("`demo` only writes to its own built-in HarfangLab simulator"),
            Command::Healthcheck => Some("`healthcheck` only reads /healthz"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.as_ref().unwrap_or(&Command::Run);
    if let (true, Some(why)) = (cli.dry_run, command.ignores_dry_run()) {
        // A flag that is silently ignored would let `--dry-run demo` look like a safe try-out.
        let msg = format!("--dry-run applies to `run`, `check` and `reconcile` only: {why}");
        Cli::command().error(ArgumentConflict, msg).exit();
    }
    match run(command, cli.config.as_deref(), cli.dry_run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.report(&mut io::stderr());
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(command: &Command, config: Option<&Path>, dry_run: bool) -> Result<(), app::AppError> {
    match command {
        Command::Run => {
            // First: a re-execution (malloc tuning) replaces this process image; a failed one
            // is a startup error (`allocator`).
            let tuning = allocator::tune().map_err(app::AppError::Reexec)?;
            let config = app::load_config(config, dry_run)?;
            allocator::log(&tuning);
            app::run(&config, &install_signal_handler())
        }
        Command::Check => app::check_command(config, dry_run, &mut io::stdout()),
        Command::Reconcile { json, force } => {
            let args = app::ReconcileArgs {
                dry_run,
                json: *json,
                force: *force,
            };
            let stop = install_signal_handler();
            app::reconcile_command(config, args, &stop, &mut io::stdout(), &mut io::stderr())
        }
        Command::Demo => {
            logging::init(logging::env_level());
            app::demo(&mut io::stdout(), &install_signal_handler())
        }
        Command::Translate { file, strict } => {
            logging::init(logging::env_level());
            let mut out = BufWriter::new(io::stdout().lock());
            app::translate_command(file.as_deref(), *strict, &mut out)
        }
        Command::Healthcheck => app::healthcheck_command(config, &mut io::stdout()),
    }
}

/// Install the SIGINT/SIGTERM handler (ctrlc, `termination` feature; one per process) and
/// return the [`Shutdown`] it triggers. A second signal exits 130 at once: the checkpoint on
/// disk is always a correct resume position.
fn install_signal_handler() -> Shutdown {
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let installed = ctrlc::set_handler(move || {
        if s.on_signal() {
            // The logger may hold a lock mid-line; a plain write is the safe last word.
            eprintln!("harfanglab-intel: second signal, exiting now");
            std::process::exit(130);
        }
        log::info!("signal received: stopping (again to exit at once)");
    });
    if let Err(e) = installed {
        log::warn!("cannot install the signal handler: {e}");
    }
    shutdown
}
