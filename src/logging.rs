//! Process logging: simplelog to stderr with UTC RFC 3339 timestamps and thread names, colours
//! only on a terminal (journald and container logs get plain text). The library itself only uses
//! the `log` macros; the binary calls [`init`] once.

use std::io::IsTerminal;

/// The level for commands that read no config file: `CONNECTOR_LOG_LEVEL` if valid, else info.
pub fn env_level() -> log::LevelFilter {
    crate::config::process_env("CONNECTOR_LOG_LEVEL")
        .and_then(|v| crate::config::parse_log_level(&v).ok())
        .unwrap_or(log::LevelFilter::Info)
}

/// Log to stderr with UTC RFC 3339 timestamps and thread names, colours only on a terminal.
/// HTTP/TLS crates are kept at `warn` so `debug` stays about this connector.
pub fn init(level: log::LevelFilter) {
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
