//! Simulators of the external services, for tests, benchmarks and local runs
//! (`harfanglab`: an in-memory HarfangLab threat-intel server).

pub mod harfanglab;
