//! Simulators of the external services, for tests, benchmarks, the `demo` command and local runs:
//! `opencti` (live stream + GraphQL, with the schema of each release in `opencti_schema`),
//! `harfanglab` (an in-memory threat-intel server), `http` (the small HTTP/1.1 server the
//! HarfangLab simulator runs on), `capacity` (the HarfangLab simulator's physical limit on
//! requests served at once) and `standalone` (the command line of
//! `cargo run --example simulators`).

pub mod capacity;
pub mod harfanglab;
pub(crate) mod http;
pub mod opencti;
mod opencti_schema;
pub mod standalone;
