//! The OpenCTI and HarfangLab simulators as a standalone process, to poke at with curl or to
//! point a real `harfanglab-intel run` at (issue 3: "runs standalone so people can poke at it").
//!
//! ```text
//! cargo run --example simulators -- [--opencti 127.0.0.1:4000] [--harfanglab 127.0.0.1:8443]
//!                                    [--scenario fixtures/demo-stream.jsonl] [--strict]
//!                                    [--opencti-version 6.5.0]
//!                                    [--latency-ms 50] [--capacity 32] [--capacity-queue 32]
//! cargo run --example simulators -- --help
//! curl -H 'Authorization: Token sim-token' http://127.0.0.1:8443/api/data/threat_intelligence/IOCRule/
//! ```
//!
//! Both bind to loopback unless told otherwise; Ctrl-C stops them. Not part of the product.

use clap::Parser;
use harfanglab_intel::sim::harfanglab::{self as hl, SimConfig};
use harfanglab_intel::sim::opencti::{self as octi, OpenCtiSimConfig};
use harfanglab_intel::sim::standalone::StandaloneArgs;
use std::process::ExitCode;

fn main() -> ExitCode {
    // `--help` prints the options and exits 0; a bad argument is a usage error (exit 2).
    let args = StandaloneArgs::parse();
    let scenario = match &args.scenario {
        Some(path) => match octi::load_scenario(path) {
            Ok(events) => events,
            Err(e) => {
                eprintln!("simulators: {e}");
                return ExitCode::from(2);
            }
        },
        None => Vec::new(),
    };
    let events = scenario.len();
    let mut octi_config = OpenCtiSimConfig {
        scenario,
        recover_mode: args.recover_mode,
        ..OpenCtiSimConfig::default()
    };
    if let Some(v) = args.opencti_version.clone() {
        octi_config.version = v;
    }
    let (token, stream) = (octi_config.token.clone(), octi_config.stream_id.clone());
    let octi_version = octi_config.version.clone();
    let mut opencti = match octi::serve(&args.opencti, octi_config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("simulators: cannot serve OpenCTI on {}: {e}", args.opencti);
            return ExitCode::FAILURE;
        }
    };
    let harfanglab = match hl::serve(
        &args.harfanglab,
        SimConfig {
            strict: args.strict,
            faults: hl::Faults {
                latency: std::time::Duration::from_millis(args.latency_ms),
                ..hl::Faults::default()
            },
            capacity: args.capacity_limit(),
            ..SimConfig::default()
        },
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "simulators: cannot serve HarfangLab on {}: {e}",
                args.harfanglab
            );
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.seed {
        match harfanglab.seed_file(path) {
            Ok(ids) => println!(
                "HarfangLab seeded with {} rules from {}",
                ids.len(),
                path.display()
            ),
            Err(e) => {
                eprintln!("simulators: cannot seed HarfangLab: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "OpenCTI {}  {}  (OPENCTI_TOKEN={token}, CONNECTOR_LIVE_STREAM_ID={stream}, {events} scenario events)",
        octi_version,
        opencti.base_url()
    );
    println!(
        "HarfangLab  {}  (HARFANGLAB_INTEL_TOKEN={}, strict slashes: {})",
        harfanglab.base_url(),
        harfanglab.token(),
        args.strict
    );
    println!("Ctrl-C stops both.");
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    }) {
        eprintln!("simulators: cannot handle Ctrl-C: {e}");
        return ExitCode::FAILURE;
    }
    let _ = rx.recv();
    harfanglab.shutdown();
    opencti.shutdown();
    ExitCode::SUCCESS
}
