//! The command line of the standalone simulators (`cargo run --example simulators -- --help`):
//! where each simulator listens, which scenario the OpenCTI one replays, and whether the
//! HarfangLab one insists on trailing slashes. Parsing only; the example starts the servers.

use clap::Parser;
use std::path::PathBuf;

/// Starts the OpenCTI and HarfangLab simulators on loopback and prints their URLs and tokens,
/// to poke at with curl or to point a real `harfanglab-intel run` at. Ctrl-C stops both.
#[derive(Debug, Parser, PartialEq)]
#[command(name = "simulators")]
pub struct StandaloneArgs {
    /// Address of the OpenCTI simulator (GraphQL and live stream).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4000")]
    pub opencti: String,
    /// Address of the HarfangLab simulator (threat-intel REST API).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    pub harfanglab: String,
    /// JSON Lines scenario the OpenCTI live stream replays (e.g. fixtures/demo-stream.jsonl);
    /// none: an empty stream.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Django mode: a HarfangLab path without its trailing `/` answers 301 to the slashed path,
    /// as the real server does (default: served like the slashed path).
    #[arg(long)]
    pub strict: bool,
    /// The OpenCTI release the simulator answers as (`about { version }` and the GraphQL schema
    /// of that release: fields it lacks are refused as that release refuses them).
    #[arg(long, value_name = "VERSION")]
    pub opencti_version: Option<String>,
    /// JSON Lines of rules the HarfangLab simulator starts with (`{"resource": "IOCRule",
    /// "source": "from_OpenCTI", "type": ..., "value": ..., "comment": ...}`, see
    /// `HarfangLabSim::seed`): drift for `harfanglab-intel reconcile` to find.
    #[arg(long, value_name = "FILE")]
    pub seed: Option<PathBuf>,
    /// OpenCTI recovery mode: a stream opened with `recover=` first gets the current state as
    /// synthetic creates, as the platform sends it (default: the log is replayed).
    #[arg(long)]
    pub recover_mode: bool,
    /// Latency the HarfangLab simulator adds to every answer, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Physical capacity of the HarfangLab simulator: requests it serves at once (each for
    /// `--latency-ms`); more wait in a queue, and past the queue get 429 with `Retry-After: 1`
    /// (default: unlimited).
    #[arg(long, value_name = "N")]
    pub capacity: Option<usize>,
    /// Requests that may wait for a slot of `--capacity` before the next one gets a 429
    /// (default: as many as the capacity).
    #[arg(long, value_name = "N", requires = "capacity")]
    pub capacity_queue: Option<usize>,
}

impl StandaloneArgs {
    /// The HarfangLab simulator's capacity from `--capacity` and `--capacity-queue`.
    pub fn capacity_limit(&self) -> Option<crate::sim::capacity::CapacityLimit> {
        let mut limit = crate::sim::capacity::CapacityLimit::new(self.capacity?);
        if let Some(queue) = self.capacity_queue {
            limit.queue = queue;
        }
        Some(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_is_an_answer_not_an_unknown_argument() {
        let err = StandaloneArgs::try_parse_from(["simulators", "--help"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp);
        let help = err.to_string();
        for option in [
            "--opencti <ADDR>",
            "--harfanglab <ADDR>",
            "--scenario <FILE>",
            "--strict",
            "--opencti-version <VERSION>",
        ] {
            assert!(help.contains(option), "{help}");
        }
    }

    #[test]
    fn defaults_and_values() {
        let args = StandaloneArgs::try_parse_from(["simulators"]).unwrap();
        assert_eq!(
            args,
            StandaloneArgs {
                opencti: "127.0.0.1:4000".into(),
                harfanglab: "127.0.0.1:8443".into(),
                scenario: None,
                strict: false,
                opencti_version: None,
                seed: None,
                recover_mode: false,
                latency_ms: 0,
                capacity: None,
                capacity_queue: None,
            }
        );
        assert_eq!(args.capacity_limit(), None);
        let args = StandaloneArgs::try_parse_from([
            "simulators",
            "--latency-ms",
            "50",
            "--capacity",
            "32",
            "--capacity-queue",
            "4",
        ])
        .unwrap();
        assert_eq!(args.latency_ms, 50);
        let limit = args.capacity_limit().unwrap();
        assert_eq!((limit.concurrent, limit.queue), (32, 4));
        let err =
            StandaloneArgs::try_parse_from(["simulators", "--capacity-queue", "4"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let args = StandaloneArgs::try_parse_from([
            "simulators",
            "--scenario",
            "fixtures/demo-stream.jsonl",
            "--strict",
        ])
        .unwrap();
        assert_eq!(args.scenario, Some("fixtures/demo-stream.jsonl".into()));
        assert!(args.strict);
        let err = StandaloneArgs::try_parse_from(["simulators", "--bogus"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
    }
}
