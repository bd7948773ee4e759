//! harfanglab-intel: feeds HarfangLab EDR threat-intel lists from an OpenCTI live stream.
//!
//! Data flow (one process, no async runtime):
//!
//! ```text
//! OpenCTI /stream/<id> ──SSE──▶ opencti::stream (reader thread)
//!        │                              │ StreamEvent (decoded once: Indicator + FormerState),
//!        │                              │ bounded crossbeam channels (sharded by indicator)
//!        │                              ▼
//! OpenCTI /graphql ◀──read──── pipeline workers ── translate (pure: stix / rules) ──▶ sync (diff, refcount)
//!                                       │                                                 │
//!                                       │ completions                                     ▼
//!                                       ▼                                   harfanglab::client ──REST──▶ HarfangLab
//!                               checkpoint owner (state) ──ping──▶ OpenCTI connector state
//! ```
//!
//! Pure cores (`stix`, `rules`, `translate`, the SSE framer, diffing in `sync`) touch no network;
//! only `opencti::{stream,api}` and `harfanglab::client` hold a ureq `Agent`.
//!
//! The public surface is what the binary, the integration tests, the benchmarks and the example
//! use, and nothing else: the modules are private and re-exported item by item below, so the
//! compiler reports whatever nothing uses. A handful of modules stay public as namespaces, where
//! the qualified name says more than the item's (`pipeline::run`, `service::run_with`,
//! `sim::harfanglab::serve`, `stix::Value`); `allocator`, `app` and `logging` are the binary's. The in-memory
//! HarfangLab fake (`MemoryApi`) is test code: it exists only with the `testkit` feature, which
//! the crate's own tests and benchmarks turn on (`[dev-dependencies]` in `Cargo.toml`).
#![forbid(unsafe_code)]

// Namespaces (see above).
pub mod allocator;
pub mod app;
pub mod logging;
pub mod pipeline;
pub mod service;
pub mod sim;
pub mod stix;

mod cause;
mod concurrency;
mod config;
mod demo;
mod harfanglab;
mod indicator_file;
mod metrics;
mod notify;
mod opencti;
mod reconcile;
mod resolver;
mod retry;
mod rules;
mod secret;
mod state;
mod sync;
mod tls;
mod translate;

// Configuration: the settings table, its sources and the resolved `Config`.
#[cfg(any(test, feature = "testkit"))]
pub use config::reference_markdown;
pub use config::{
    CONNECTOR_NAME, Config, ConfigError, HARFANGLAB_INTEL_SOURCE_LIST_NAME,
    Origin as SettingOrigin, RawConfig, Recover, RuleMaturity, SETTINGS, Section, Setting,
    TlsVerify,
};
pub use secret::Secret;

// Translation: STIX indicators to HarfangLab IOC / Sigma / Yara, and the rule parsers.
pub use rules::sigma::{SigmaMeta, parse_sigma};
pub use rules::yara::{YaraMeta, parse_yara};
#[cfg(any(test, feature = "testkit"))]
pub use translate::path_value_ioc;
pub use translate::{
    FormerState, Indicator, IocKey, IocType, SigmaSpec, Translation, YaraSpec, stix_iocs, translate,
};

// OpenCTI: the live stream, its events and the GraphQL API.
pub use opencti::api::{
    ABOUT_QUERY, ApiError, ApiOptions, INDICATOR_QUERY, OpenCtiApi, PING_MUTATION,
    PING_MUTATION_WITH_INFO, PingOutcome, PlatformVersion, REGISTER_MUTATION, Registration,
};
pub use opencti::events::{
    Decoded, EventError, EventKind, OCTI_EXT, Payload, decode as decode_event,
};
pub use opencti::sse::{Frame, FrameReader, Framer};
pub use opencti::stream::{
    StreamError, StreamItem, StreamOptions, StreamReader, probe as probe_stream,
};

// HarfangLab: the REST client and its model.
pub use harfanglab::client::Op;
pub use harfanglab::model::{
    IocRule, IocRuleBody, RemoteRule, RuleBody, RuleFilter, RuleKind, SourceKind, SourceLists,
};
pub use harfanglab::{Client, ClientOptions, HarfangLabError, ThreatIntelApi};

// The limit on HarfangLab requests in flight (fixed, or adaptive for `workers=auto`).
pub use concurrency::{AdaptiveOptions, ConcurrencyLimit, Limiter};

// Sync: the diff and reference counting over a `ThreatIntelApi`.
pub use sync::comment::{Origin as CommentOrigin, RuleComment};
pub use sync::dry_run::DryRunApi;
pub use sync::inventory::Inventory;
#[cfg(any(test, feature = "testkit"))]
pub use sync::memory::{Fault, MemoryApi, Target};
pub use sync::rule_holders;
pub use sync::{Absorbed, Counts, SyncError, SyncObject, SyncReport, SyncSettings, Syncer};

// Stream position, retries, systemd, metrics and the demo.
pub use demo::{DEMO_SCENARIO, DemoError, DemoOptions, DemoResult, demo_config, run_demo};
pub use metrics::{Health, Metrics, MetricsServer};
pub use notify::{Notifier, WatchdogGate};
pub use retry::{FailureKind, RetryPolicy, Retryable};
pub use state::{
    Checkpoint, CheckpointStore, CheckpointWriter, FirstRun, LocalCheckpoint,
    Origin as CheckpointOrigin, compare_event_ids, reconcile as reconcile_start,
};
