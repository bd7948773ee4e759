//! Reconciliation inside `run`: one pass once the first catch-up is done, then one every
//! `HARFANGLAB_INTEL_RECONCILE_INTERVAL`, on its own thread (never the reader's, the owner's or the
//! pinger's), for as long as the stream session lasts.
//!
//! "Caught up" is read from the pipeline's gauges: something was checkpointed and nothing is in
//! flight or waiting in the source channel, twice in a row a poll apart. A pass that starts while
//! the stream still delivers is harmless (live events win, `pipeline::synthetic`), only earlier
//! than needed.

use super::{PassDeps, PassOptions, run_pass};
use crate::pipeline::PipelineStats;
use crossbeam_channel::Receiver;
use std::time::{Duration, Instant};

/// How often the catch-up is polled.
const POLL: Duration = Duration::from_millis(500);

/// Wait for `d` unless `stop` fires first (`true`: stopped).
fn wait(stop: &Receiver<()>, d: Duration) -> bool {
    !matches!(
        stop.recv_timeout(d),
        Err(crossbeam_channel::RecvTimeoutError::Timeout)
    )
}

/// Passes until `deps.stop`: the first after the catch-up, then every `interval`.
pub fn run_schedule(
    deps: &PassDeps<'_>,
    opts: &PassOptions,
    interval: Duration,
    stats: &PipelineStats,
) {
    let mut idle_polls = 0;
    loop {
        let s = stats.snapshot();
        let idle = s.watermark.is_some() && s.in_flight == 0 && s.source_backlog == 0;
        idle_polls = if idle { idle_polls + 1 } else { 0 };
        if idle_polls >= 2 {
            break;
        }
        if wait(deps.stop, POLL) {
            return;
        }
    }
    loop {
        let started = Instant::now();
        log::info!(
            "reconciliation: pass starting (every {})",
            humantime::format_duration(interval)
        );
        match run_pass(deps, opts.clone()) {
            Ok(summary) => {
                for line in summary.human().lines() {
                    log::info!("{line}");
                }
            }
            Err(e) => log::error!(
                "reconciliation: pass failed: {e}; next one in {}",
                humantime::format_duration(interval)
            ),
        }
        let next = interval.saturating_sub(started.elapsed()).max(POLL);
        if wait(deps.stop, next) {
            return;
        }
    }
}
