//! Helpers shared by every integration test (one test binary, `tests/tests.rs`): the built
//! binary's path, a working configuration environment, an environment lookup for `Config`, and
//! the one process-wide log capture; the themed harnesses live in the submodules.

pub mod corpora;
pub mod demo_expected;
pub mod e2e;
pub mod handler;
pub mod logs;
pub mod net;
pub mod pipeline;
pub mod scratch;
pub mod service;

use std::collections::HashMap;

/// The debug binary `cargo test` built.
pub const BIN: &str = env!("CARGO_BIN_EXE_harfanglab-intel");

/// A complete, valid configuration environment for the binary.
pub const GOOD_ENV: &[(&str, &str)] = &[
    // Loopback ports nobody listens on (1 needs root): `check` probes fail fast, locally.
    ("OPENCTI_URL", "https://127.0.0.1:1/"),
    ("OPENCTI_TOKEN", "octi-secret-token-4242"),
    ("CONNECTOR_ID", "0b8a3c1e-5f2d-4e6a-9b7c-1d2e3f4a5b6c"),
    ("CONNECTOR_LIVE_STREAM_ID", "stream-1"),
    ("HARFANGLAB_INTEL_URL", "http://127.0.0.1:1"),
    ("HARFANGLAB_INTEL_TOKEN", "hl-secret-token-4242"),
];

/// An environment made of `pairs`, in the shape `Config::from_sources` reads it.
pub fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}
