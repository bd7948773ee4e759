//! Validation and identification of rule content carried by indicators: Sigma (YAML) and YARA.
//!
//! Pure: `&str` in, metadata or a positioned error out. HarfangLab parses this content server side
//! and identifies Sigma rules by their `id`, so we validate before sending and use the same identity.
//!
//! - [`sigma::parse_sigma`]: one Sigma rule (YAML), checked like pySigma; see `sigma` for the
//!   deliberate differences (multi-document rules, correlation rules).
//! - [`yara::parse_yara`] / [`yara::parse_yara_file`]: a self-contained YARA file, parsed by
//!   `yara-x-parser` plus the module-independent checks of libyara's compiler.
//!
//! Both are checked against oracles over real corpora in `tests/{sigma,yara}_conformance.rs`.

pub mod sigma;
pub mod yara;

use std::fmt;

/// A rule that cannot be sent: what is wrong and, when known, where (1-based line and column,
/// columns counted in characters).
///
/// Always permanent: the content itself is invalid, so retrying cannot help. The indicator is
/// skipped and the error recorded (logged with the indicator id); nothing is sent to HarfangLab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.message),
            (Some(l), None) => write!(f, "line {l}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for RuleError {}
