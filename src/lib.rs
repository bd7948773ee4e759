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
#![forbid(unsafe_code)]

pub mod app;
pub mod cause;
pub mod concurrency;
pub mod config;
pub mod demo;
pub mod harfanglab;
pub mod indicator_file;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod opencti;
pub mod pipeline;
pub mod reconcile;
pub mod resolver;
pub mod retry;
pub mod rules;
pub mod secret;
pub mod service;
pub mod sim;
pub mod state;
pub mod stix;
pub mod sync;
pub mod tls;
pub mod translate;
