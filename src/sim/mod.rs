//! Simulators of the external systems (loopback servers for tests and demos).

pub mod opencti;
