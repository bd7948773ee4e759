//! HarfangLab side: the REST client (`client`), the wire model (`model`), its errors (`error`)
//! and the trait the sync layer programs against (`api`). Retry timing is `crate::retry`.

pub mod api;
pub mod client;
pub mod error;
pub mod model;

pub use api::ThreatIntelApi;
pub use client::{Client, ClientOptions};
pub use error::HarfangLabError;
