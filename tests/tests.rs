//! The integration tests, one binary (as ripgrep's `tests/tests.rs`): it links the crate once
//! and every test shares the helpers in `support/`. Each former test file is a module here, so
//! `cargo test --test tests <module>::` runs one of them. All tests share this one process:
//! nothing here may set environment variables or other process-wide state (children get their
//! environment through `Command::envs`; the one logger is `support::logs`).

mod support;

mod adaptive_concurrency;
mod cli_basics;
mod cli_check;
mod cli_healthcheck;
mod cli_translate;
mod coalescing;
mod config_reference;
mod config_resolution;
mod config_validation;
mod container_files;
mod container_image;
mod demo_scenario;
mod e2e_faults;
mod e2e_issue7;
mod e2e_kill;
mod e2e_merge;
mod e2e_opencti_releases;
mod e2e_ordering;
mod e2e_reconcile;
mod e2e_retries;
mod e2e_shutdown;
mod harfanglab_client;
mod harfanglab_simulator;
mod metrics_endpoint;
mod notify_socket;
mod opencti_api;
mod opencti_fixtures;
mod opencti_sim_connector;
mod opencti_sse;
mod opencti_stream;
mod pipeline_checkpoint;
mod pipeline_coalescing;
mod pipeline_failures;
mod pipeline_ordering;
mod pipeline_shutdown;
mod pipeline_synthetic;
mod service_handler;
mod service_lifecycle;
mod service_ordering;
mod service_process;
mod sigma_conformance;
mod state_checkpoint_writer;
mod stix_conformance;
mod sync_semantics;
mod systemd_units;
mod translate_real_patterns;
mod yara_conformance;
