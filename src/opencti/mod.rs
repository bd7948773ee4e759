//! The OpenCTI side of the connector: the live stream (SSE framing, typed events, the reader
//! thread) and the GraphQL API (about, register, ping, indicator read).
//!
//! `sse`, `events` and `reverse_patch` are pure; `stream` and `api` hold the ureq agents. The wire
//! contract is `/work/shared/docs/opencti-protocol.md` (section numbers in comments refer to it).

pub mod api;
pub mod events;
pub mod reverse_patch;
pub mod sse;
pub mod stream;

/// Strip trailing `/` from a configured base URL (pycti 7 does the same, §8).
pub(crate) fn base_url(url: &str) -> &str {
    url.trim_end_matches('/')
}

use crate::tls::CaBundleError;
use std::path::PathBuf;

/// TLS settings for both OpenCTI agents (`OPENCTI_SSL_VERIFY`, default off in pycti: the caller
/// logs a warning when it is off).
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// Verify the server certificate.
    pub verify: bool,
    /// PEM bundle of trusted roots instead of the built-in Mozilla roots.
    pub ca_bundle: Option<PathBuf>,
}

/// Build ureq's TLS config; the error names the CA bundle that could not be read.
pub(crate) fn tls_config(tls: &TlsOptions) -> Result<ureq::tls::TlsConfig, CaBundleError> {
    let mut b = ureq::tls::TlsConfig::builder().disable_verification(!tls.verify);
    if let Some(path) = &tls.ca_bundle {
        b = b.root_certs(crate::tls::root_certs(path)?);
    }
    Ok(b.build())
}

/// User-Agent for both agents.
pub(crate) const USER_AGENT: &str = concat!("harfanglab-intel/", env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_strips_trailing_slashes() {
        assert_eq!(base_url("https://octi.example//"), "https://octi.example");
    }

    #[test]
    fn a_ca_bundle_replaces_the_built_in_roots() {
        let missing = TlsOptions {
            verify: true,
            ca_bundle: Some("/nonexistent/ca.pem".into()),
        };
        assert!(matches!(
            tls_config(&missing),
            Err(CaBundleError::Unreadable { .. })
        ));
        assert!(tls_config(&TlsOptions::default()).is_ok());
    }
}
