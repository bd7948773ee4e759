//! HarfangLab side: the REST client (`client`), its retry policy (`retry`), the wire model
//! (`model`), its errors (`error`) and the trait the sync layer programs against (`api`).

pub mod api;
pub mod client;
pub mod error;
pub mod model;
pub mod retry;

pub use api::ThreatIntelApi;
pub use client::{Client, ClientOptions, ClientStats};
pub use error::HarfangLabError;
