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
pub(crate) fn tls_config(tls: &TlsOptions) -> Result<ureq::tls::TlsConfig, String> {
    let mut b = ureq::tls::TlsConfig::builder().disable_verification(!tls.verify);
    if let Some(path) = &tls.ca_bundle {
        let pem = std::fs::read(path).map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => return Err(format!("CA bundle {}: {e}", path.display())),
            }
        }
        if certs.is_empty() {
            return Err(format!("CA bundle {} holds no certificate", path.display()));
        }
        b = b.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
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
    fn unreadable_or_empty_ca_bundle_is_a_clear_error() {
        let missing = TlsOptions {
            verify: true,
            ca_bundle: Some("/nonexistent/ca.pem".into()),
        };
        assert!(
            tls_config(&missing)
                .unwrap_err()
                .contains("/nonexistent/ca.pem")
        );
        let dir = std::env::temp_dir().join(format!("hli-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, b"not a certificate").unwrap();
        let e = tls_config(&TlsOptions {
            verify: true,
            ca_bundle: Some(empty),
        })
        .unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
        assert!(tls_config(&TlsOptions::default()).is_ok());
    }
}
