//! STIX 2.1 patterning: lexer, parser, syntax tree and errors. Pure, no I/O.
//!
//! Phases: `lexer` (text → tokens with byte spans, never fails) → `parser` (tokens →
//! [`Pattern`], fail-fast [`PatternError`]). [`parse_pattern`] agrees with the OASIS reference
//! validator (stix2-patterns 2.1.2) on what is valid; [`parse_syntax`] is the grammar alone.
//! What a pattern *means* for HarfangLab lives in `crate::translate`, not here.
//!
//! ```
//! use harfanglab_intel::stix::{parse_pattern, ComparisonOp};
//! let p = parse_pattern("[ipv4-addr:value = '198.51.100.1' OR domain-name:value = 'x.example']").unwrap();
//! let cmps = p.comparisons();
//! assert_eq!(cmps.len(), 2);
//! assert_eq!(cmps[0].comparison.op, ComparisonOp::Eq);
//! assert_eq!(cmps[1].comparison.path.to_string(), "domain-name:value");
//! ```

mod ast;
mod error;
mod lexer;
mod parser;

pub use ast::{
    BoolOp, Comparison, ComparisonContext, ComparisonExpr, ComparisonOp, Literal, ObjectPath,
    ObservationExpr, ObservationOp, PathStep, Pattern, Qualifier, QualifierKind, Value,
};
pub use error::{ErrorKind, PatternError};
pub use parser::{parse_pattern, parse_syntax};
