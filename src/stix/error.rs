//! `PatternError`: why a STIX pattern is rejected, and at which byte.
//!
//! Syntax errors are fail-fast (the first unexpected token). The other kinds mirror the extra
//! checks of the OASIS validator (stix2-patterns 2.1.2) that reject a pattern the grammar accepts.
//! Every kind is "skip and record": a bad pattern never becomes better by retrying.

use super::ast::QualifierKind;
use std::fmt;

/// A rejected pattern: byte offset into the pattern text plus what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError {
    pub offset: usize,
    pub kind: ErrorKind,
}

/// What is wrong with a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The grammar does not allow this token here, e.g. `[file:size = ]`
    /// (expected a literal value, found `]`).
    Unexpected {
        expected: &'static str,
        /// The offending token as written (shortened), or "end of pattern".
        found: String,
    },
    /// Brackets or parentheses nested deeper than `parser::MAX_DEPTH`,
    /// e.g. 10,000 `(`. Refused to bound the parser's stack use.
    TooDeep,
    /// A value that is not valid for the hash algorithm its key names, e.g.
    /// `[file:hashes.'SHA-256' = 'f00']` (validator: "'f00' is not a valid SHA-256 hash").
    InvalidHash { algorithm: String, value: String },
    /// `hashes` selected by list index, e.g. `[file:hashes[0] = 'ab']`: the reference validator
    /// crashes on it, so it is not a valid pattern for it either.
    HashIndexSelector,
    /// The same qualifier twice directly on one `[...]`, e.g. `[a:b = 1] WITHIN 5 SECONDS
    /// WITHIN 6 SECONDS` (allowed on a parenthesised group, like the validator does).
    DuplicateQualifier(QualifierKind),
    /// The text does not start with `[` after any `(` and whitespace, e.g. `/* c */ [a:b = 1]`
    /// (the validator's raw-text "input is missing square brackets" check).
    MissingBrackets,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: ", self.offset)?;
        match &self.kind {
            ErrorKind::Unexpected { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            ErrorKind::TooDeep => f.write_str("expressions nested too deeply"),
            ErrorKind::InvalidHash { algorithm, value } => {
                write!(f, "'{value}' is not a valid {algorithm} hash")
            }
            ErrorKind::HashIndexSelector => {
                f.write_str("hashes must be selected by algorithm name, not by index")
            }
            ErrorKind::DuplicateQualifier(k) => {
                write!(
                    f,
                    "duplicate qualifier type {} on one observation",
                    k.as_str()
                )
            }
            ErrorKind::MissingBrackets => f.write_str(
                "expected the pattern to start with `[`, input is missing square brackets",
            ),
        }
    }
}

impl std::error::Error for PatternError {}
