//! The test process's one logger: `log` allows a single logger per process and every test runs
//! in this one, so the tests that check what was logged share this capture and look for lines
//! of their own (ids, hosts) among the others'.

use std::sync::{Mutex, OnceLock};

/// Every log line of the test process at any level, as `"<LEVEL> <message>"`, except what no
/// test may look at: mockito's (it is the server and prints what it received, token included)
/// and `ureq_proto`'s TRACE hex dumps of raw wire bytes (Authorization included; the logger
/// setup in main keeps `ureq_proto` at DEBUG or quieter).
pub struct Capture(Mutex<Vec<(log::Level, String)>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target().starts_with("mockito") {
            return;
        }
        if record.target().starts_with("ureq_proto") && record.level() == log::Level::Trace {
            return;
        }
        if let Ok(mut lines) = self.0.lock() {
            lines.push((
                record.level(),
                format!("{} {}", record.level(), record.args()),
            ));
        }
    }
    fn flush(&self) {}
}

impl Capture {
    /// The lines captured so far at `level` or more severe.
    pub fn lines_at(&self, level: log::Level) -> Vec<String> {
        self.0
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|(at, _)| *at <= level)
                    .map(|(_, line)| line.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The capture, installed as the process's logger on first use.
pub fn logs() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        let _ = log::set_logger(capture);
        log::set_max_level(log::LevelFilter::Trace);
        capture
    })
}
