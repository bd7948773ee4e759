//! Simulators of the external services, for tests, benchmarks and local runs
//! (`harfanglab`: an in-memory HarfangLab threat-intel server; `http`: the tiny HTTP/1.1 server
//! it runs on).

pub mod harfanglab;
pub mod http;
