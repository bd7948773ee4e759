//! `HarfangLabError`: every way a HarfangLab call can fail, classified by what happens next
//! ([`HarfangLabError::failure_kind`], [`HarfangLabError::is_fatal`]).

use crate::cause::Cause;
use crate::retry::{FailureKind, Retryable};
use std::fmt;
use std::time::Duration;

/// A failed HarfangLab call. `op` names the operation (`create IOCRule`, `find SigmaRule`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HarfangLabError {
    /// Connection refused / reset / DNS (after the client's quick resends): unavailable.
    /// `source` is the `ureq::Error`.
    Unreachable { op: String, source: Cause },
    /// Connect or read timeout: unavailable.
    Timeout { op: String },
    /// TLS handshake or certificate failure: fatal at startup, permanent otherwise. `source` is
    /// the `ureq::Error`.
    Tls { op: String, source: Cause },
    /// 401: the token (`HARFANGLAB_INTEL_TOKEN`) is wrong. Fatal.
    Unauthorized { op: String, detail: String },
    /// 403: the token's user lacks the threat-intel roles. Fatal.
    Forbidden { op: String, detail: String },
    /// 400 whose body says the object already exists (IOC uniqueness or Sigma id clash).
    AlreadyExists { op: String, body: String },
    /// A Sigma/Yara import answered `{"status": [...]}` with a failed (or no) entry.
    RuleRejected {
        op: String,
        code: Option<u16>,
        message: String,
    },
    /// Any other unexpected status: 429 and 502-504 are unavailable (with the server's
    /// `Retry-After`, if any), another 5xx transient, the rest permanent.
    Status {
        op: String,
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    /// The answer was not the JSON we expect.
    Decode { op: String, detail: String },
    /// The process is shutting down; a resend wait was interrupted.
    ShuttingDown { op: String },
}

/// What a retry means: unreachable, timeout, 429, 502-504 and shutdown are about HarfangLab's
/// availability (or ours), another 5xx is transient, the rest permanent.
impl Retryable for HarfangLabError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            HarfangLabError::Unreachable { .. }
            | HarfangLabError::Timeout { .. }
            | HarfangLabError::ShuttingDown { .. } => FailureKind::UNAVAILABLE,
            HarfangLabError::Status {
                status,
                retry_after,
                ..
            } => FailureKind::of_status(*status, *retry_after),
            _ => FailureKind::Permanent,
        }
    }
}

impl HarfangLabError {
    /// Should the whole process stop (credentials or permissions are wrong)?
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            HarfangLabError::Unauthorized { .. } | HarfangLabError::Forbidden { .. }
        )
    }
}

impl fmt::Display for HarfangLabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarfangLabError::Unreachable { op, source } => {
                write!(f, "{op}: HarfangLab unreachable: {source}")
            }
            HarfangLabError::Timeout { op } => write!(f, "{op}: HarfangLab did not answer in time"),
            HarfangLabError::Tls { op, source } => write!(
                f,
                "{op}: TLS failure talking to HarfangLab ({source}); for a private CA set HARFANGLAB_INTEL_CA_FILE"
            ),
            HarfangLabError::Unauthorized { op, detail } => write!(
                f,
                "{op}: HarfangLab rejected the token (401: {detail}); check HARFANGLAB_INTEL_TOKEN"
            ),
            HarfangLabError::Forbidden { op, detail } => write!(
                f,
                "{op}: the HarfangLab user lacks permission (403: {detail}); it needs the roles \"View rules, IOC, rulesets, and whitelists\" and \"Edit rules, IOC, and rulesets\""
            ),
            HarfangLabError::AlreadyExists { op, body } => {
                write!(f, "{op}: already exists: {body}")
            }
            HarfangLabError::RuleRejected { op, code, message } => match code {
                Some(c) => write!(f, "{op}: HarfangLab rejected the rule ({c}): {message}"),
                None => write!(f, "{op}: HarfangLab rejected the rule: {message}"),
            },
            HarfangLabError::Status {
                op, status, body, ..
            } => {
                write!(f, "{op}: HarfangLab answered {status}: {body}")
            }
            HarfangLabError::Decode { op, detail } => {
                write!(f, "{op}: unexpected answer from HarfangLab: {detail}")
            }
            HarfangLabError::ShuttingDown { op } => write!(f, "{op}: interrupted by shutdown"),
        }
    }
}

impl std::error::Error for HarfangLabError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HarfangLabError::Unreachable { source, .. } | HarfangLabError::Tls { source, .. } => {
                Some(source.error())
            }
            _ => None,
        }
    }
}
