//! HarfangLab side: the REST client (`client`), the wire model (`model`), its errors (`error`) and
//! the trait the sync layer programs against (`api`).

pub mod api;
pub mod error;
pub mod model;

pub use api::ThreatIntelApi;
pub use error::HarfangLabError;
