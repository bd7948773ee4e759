//! Trusted roots from a PEM CA bundle (`OPENCTI_CA_FILE`, `HARFANGLAB_INTEL_CA_FILE`), read the
//! same way for the agents of both ends; the error names the file and keeps why it failed.

use crate::cause::Cause;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a CA bundle cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaBundleError {
    /// The file cannot be read (its `io::Error`), or a PEM block in it is broken.
    Unreadable { path: PathBuf, source: Cause },
    /// The file holds no PEM certificate.
    NoCertificate { path: PathBuf },
}

impl fmt::Display for CaBundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaBundleError::Unreadable { path, source } => {
                write!(f, "CA bundle {}: {source}", path.display())
            }
            CaBundleError::NoCertificate { path } => {
                write!(f, "CA bundle {} holds no PEM certificate", path.display())
            }
        }
    }
}

impl std::error::Error for CaBundleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CaBundleError::Unreadable { source, .. } => Some(source.error()),
            CaBundleError::NoCertificate { .. } => None,
        }
    }
}

/// The certificates of the PEM bundle at `path` (other PEM items are ignored), as ureq roots.
pub fn root_certs(path: &Path) -> Result<ureq::tls::RootCerts, CaBundleError> {
    let unreadable = |source: Cause| CaBundleError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let pem = std::fs::read(path).map_err(|e| unreadable(Cause::new(e)))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(unreadable(Cause::new(e))),
        }
    }
    if certs.is_empty() {
        return Err(CaBundleError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn unreadable_or_empty_bundle_is_a_clear_error_that_keeps_its_cause() {
        let e = root_certs(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(
            e.to_string().starts_with("CA bundle /nonexistent/ca.pem: "),
            "{e}"
        );
        // The I/O error itself is kept, not only its text.
        let io = std::error::Error::source(&e).and_then(|c| c.downcast_ref::<io::Error>());
        assert_eq!(io.map(io::Error::kind), Some(io::ErrorKind::NotFound));

        let dir = std::env::temp_dir().join(format!("hli-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, b"not a certificate").unwrap();
        let e = root_certs(&empty).unwrap_err();
        assert_eq!(e, CaBundleError::NoCertificate { path: empty });
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
