//! STIX 2.1 pattern syntax tree, borrowing from the pattern text.
//!
//! Shapes follow the grammar, flattened where the grammar is only about precedence: a chain
//! `a AND b AND c` is one [`ObservationExpr::Compound`] with three operands, parentheses inside
//! brackets leave no node. Strings are unescaped lazily into `Cow` (borrowed when the literal has
//! no escape). [`Pattern::comparisons`] walks the tree and gives each comparison its context
//! (negation, connecting operators, qualifiers) for translation and for the conformance test.

use super::lexer::Span;
use std::borrow::Cow;
use std::fmt;

/// A parsed pattern: one observation expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Pattern<'a> {
    pub expr: ObservationExpr<'a>,
}

/// Operators between observation expressions (`[..] AND [..]`), by increasing precedence:
/// `FOLLOWEDBY` < `OR` < `AND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObservationOp {
    FollowedBy,
    Or,
    And,
}

impl ObservationOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ObservationOp::FollowedBy => "FOLLOWEDBY",
            ObservationOp::Or => "OR",
            ObservationOp::And => "AND",
        }
    }
}

/// An observation expression.
#[derive(Clone, Debug, PartialEq)]
pub enum ObservationExpr<'a> {
    /// `[ comparison ]` followed by the qualifiers applied directly to it.
    Simple {
        comparison: ComparisonExpr<'a>,
        qualifiers: Vec<Qualifier<'a>>,
        /// From `[` to `]`.
        span: Span,
    },
    /// `( observations )` followed by its qualifiers.
    Group {
        inner: Box<ObservationExpr<'a>>,
        qualifiers: Vec<Qualifier<'a>>,
    },
    /// Two or more operands joined by one operator (left-associative chain).
    Compound {
        op: ObservationOp,
        operands: Vec<ObservationExpr<'a>>,
    },
}

/// `AND` / `OR` inside brackets (`AND` binds tighter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BoolOp {
    And,
    Or,
}

/// A comparison expression inside one pair of brackets.
#[derive(Clone, Debug, PartialEq)]
pub enum ComparisonExpr<'a> {
    Comparison(Comparison<'a>),
    Compound {
        op: BoolOp,
        operands: Vec<ComparisonExpr<'a>>,
    },
}

/// Comparison operators. `NOT` is kept apart in [`Comparison::negated`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ComparisonOp {
    /// `=` or `==`
    Eq,
    /// `!=` or `<>`
    Neq,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Like,
    Matches,
    IsSubset,
    IsSuperset,
    /// `EXISTS path` (no value).
    Exists,
}

impl ComparisonOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ComparisonOp::Eq => "=",
            ComparisonOp::Neq => "!=",
            ComparisonOp::Lt => "<",
            ComparisonOp::Le => "<=",
            ComparisonOp::Gt => ">",
            ComparisonOp::Ge => ">=",
            ComparisonOp::In => "IN",
            ComparisonOp::Like => "LIKE",
            ComparisonOp::Matches => "MATCHES",
            ComparisonOp::IsSubset => "ISSUBSET",
            ComparisonOp::IsSuperset => "ISSUPERSET",
            ComparisonOp::Exists => "EXISTS",
        }
    }
}

/// One comparison: `path [NOT] op value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison<'a> {
    pub path: ObjectPath<'a>,
    /// `NOT` written before the operator.
    pub negated: bool,
    pub op: ComparisonOp,
    pub value: Value<'a>,
    /// The whole comparison in the pattern text.
    pub span: Span,
    /// The value (literal or set) in the pattern text; empty for `EXISTS`.
    pub value_span: Span,
}

impl Comparison<'_> {
    /// True when the comparison matches what must *not* be observed: `NOT`, or `!=` (but
    /// `NOT !=` is a double negation, hence positive).
    pub fn is_negative(&self) -> bool {
        self.negated != (self.op == ComparisonOp::Neq)
    }
}

/// The right-hand side of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    Literal(Literal<'a>),
    /// `IN ('a', 'b')`
    Set(Vec<Literal<'a>>),
    /// `EXISTS` has no value.
    None,
}

/// A literal. Non-string literals keep their exact source text (`+5`, `h'ffd8'`, `t'...Z'`).
#[derive(Clone, Debug, PartialEq)]
pub enum Literal<'a> {
    Int(&'a str),
    Float(&'a str),
    /// Unescaped content (`\'` → `'`, `\\` → `\`).
    Str(Cow<'a, str>),
    Bool(bool),
    /// Whole token, `t'...'`.
    Timestamp(&'a str),
    /// Whole token, `b'...'`.
    Binary(&'a str),
    /// Whole token, `h'...'`.
    Hex(&'a str),
}

impl<'a> Literal<'a> {
    /// The string content, for string literals only.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Literal::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The decoded value as text: string content, else the literal as written.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Literal::Str(s) => Cow::Borrowed(s),
            Literal::Int(t)
            | Literal::Float(t)
            | Literal::Timestamp(t)
            | Literal::Binary(t)
            | Literal::Hex(t) => Cow::Borrowed(t),
            Literal::Bool(true) => Cow::Borrowed("true"),
            Literal::Bool(false) => Cow::Borrowed("false"),
        }
    }
}

impl fmt::Display for Literal<'_> {
    /// STIX syntax: strings re-quoted and re-escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => write_quoted(f, s),
            other => f.write_str(&other.text()),
        }
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("'")?;
    for ch in s.chars() {
        if ch == '\'' || ch == '\\' {
            f.write_str("\\")?;
        }
        fmt::Write::write_char(f, ch)?;
    }
    f.write_str("'")
}

/// `object-type:first.key[0].'quoted key'[*]`
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectPath<'a> {
    pub object_type: &'a str,
    /// At least one step; the first is always a key.
    pub steps: Vec<PathStep<'a>>,
}

/// One step of an object path.
#[derive(Clone, Debug, PartialEq)]
pub enum PathStep<'a> {
    /// `.name` or `.'quoted-name'` (unescaped).
    Key(Cow<'a, str>),
    /// `[3]`, `[-1]`; `None` when the index does not fit an `i64`.
    Index(Option<i64>),
    /// `[*]`
    AnyIndex,
}

impl PathStep<'_> {
    pub fn key(&self) -> Option<&str> {
        match self {
            PathStep::Key(k) => Some(k),
            _ => None,
        }
    }
}

impl ObjectPath<'_> {
    /// True if the path goes through a reference property (`dst_ref`, `resolves_to_refs`): the
    /// value then belongs to another object.
    pub fn is_reference(&self) -> bool {
        self.steps.iter().any(|s| {
            s.key()
                .is_some_and(|k| k.ends_with("_ref") || k.ends_with("_refs"))
        })
    }
}

impl fmt::Display for ObjectPath<'_> {
    /// Canonical rendering, as the reference inspector prints paths: keys that are not plain
    /// identifiers are single-quoted (`file:hashes.'SHA-256'`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.object_type)?;
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                PathStep::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let plain = k.chars().enumerate().all(|(j, c)| {
                        c == '_' || c.is_ascii_alphabetic() || (j > 0 && c.is_ascii_digit())
                    }) && !k.is_empty();
                    if plain {
                        f.write_str(k)?;
                    } else {
                        write_quoted(f, k)?;
                    }
                }
                PathStep::Index(Some(n)) => write!(f, "[{n}]")?,
                PathStep::Index(None) => f.write_str("[?]")?,
                PathStep::AnyIndex => f.write_str("[*]")?,
            }
        }
        Ok(())
    }
}

/// The kind of a qualifier, for duplicate detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QualifierKind {
    Within,
    Repeats,
    StartStop,
}

impl QualifierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            QualifierKind::Within => "WITHIN",
            QualifierKind::Repeats => "REPEATS",
            QualifierKind::StartStop => "STARTSTOP",
        }
    }
}

/// A qualifier; numbers and timestamps keep their source text.
#[derive(Clone, Debug, PartialEq)]
pub enum Qualifier<'a> {
    /// `WITHIN 300 SECONDS` (int or float)
    Within { seconds: &'a str, span: Span },
    /// `REPEATS 5 TIMES`
    Repeats { times: &'a str, span: Span },
    /// `START t'..' STOP t'..'` (whole timestamp tokens)
    StartStop {
        start: &'a str,
        stop: &'a str,
        span: Span,
    },
}

impl Qualifier<'_> {
    pub fn kind(&self) -> QualifierKind {
        match self {
            Qualifier::Within { .. } => QualifierKind::Within,
            Qualifier::Repeats { .. } => QualifierKind::Repeats,
            Qualifier::StartStop { .. } => QualifierKind::StartStop,
        }
    }

    pub fn span(&self) -> Span {
        match self {
            Qualifier::Within { span, .. }
            | Qualifier::Repeats { span, .. }
            | Qualifier::StartStop { span, .. } => *span,
        }
    }
}

impl fmt::Display for Qualifier<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Qualifier::Within { seconds, .. } => write!(f, "WITHIN {seconds} SECONDS"),
            Qualifier::Repeats { times, .. } => write!(f, "REPEATS {times} TIMES"),
            Qualifier::StartStop { start, stop, .. } => write!(f, "START {start} STOP {stop}"),
        }
    }
}

/// A comparison seen with its surroundings, as produced by [`Pattern::comparisons`].
#[derive(Clone, Debug)]
pub struct ComparisonContext<'p, 'a> {
    pub comparison: &'p Comparison<'a>,
    /// Index of its `[...]` observation, in pattern order.
    pub observation: usize,
    /// Comparison operators on the way from the brackets down to this comparison.
    pub comparison_ops: Vec<BoolOp>,
    /// Observation operators on the way from the pattern root down to its observation.
    pub observation_ops: Vec<ObservationOp>,
    /// Qualifiers applying to its observation (directly or on an enclosing group), inner first.
    pub qualifiers: Vec<&'p Qualifier<'a>>,
}

impl ComparisonContext<'_, '_> {
    /// The comparison describes what must not be observed (`NOT`, `!=`).
    pub fn is_negative(&self) -> bool {
        self.comparison.is_negative()
    }
}

impl<'a> Pattern<'a> {
    /// Every comparison in pattern order, with its context.
    pub fn comparisons(&self) -> Vec<ComparisonContext<'_, 'a>> {
        let mut out = Vec::new();
        let mut observation = 0;
        walk_observation(
            &self.expr,
            &mut Vec::new(),
            &mut Vec::new(),
            &mut observation,
            &mut out,
        );
        out
    }

    /// Call `f` on every comparison in pattern order (no context, no allocation).
    pub fn for_each_comparison<'p>(&'p self, mut f: impl FnMut(&'p Comparison<'a>)) {
        fn obs<'p, 'a>(e: &'p ObservationExpr<'a>, f: &mut impl FnMut(&'p Comparison<'a>)) {
            match e {
                ObservationExpr::Simple { comparison, .. } => cmp(comparison, f),
                ObservationExpr::Group { inner, .. } => obs(inner, f),
                ObservationExpr::Compound { operands, .. } => {
                    operands.iter().for_each(|o| obs(o, f))
                }
            }
        }
        fn cmp<'p, 'a>(e: &'p ComparisonExpr<'a>, f: &mut impl FnMut(&'p Comparison<'a>)) {
            match e {
                ComparisonExpr::Comparison(c) => f(c),
                ComparisonExpr::Compound { operands, .. } => {
                    operands.iter().for_each(|o| cmp(o, f))
                }
            }
        }
        obs(&self.expr, &mut f);
    }

    /// Observation operators used anywhere in the pattern.
    pub fn observation_ops(&self) -> Vec<ObservationOp> {
        fn walk(e: &ObservationExpr<'_>, out: &mut Vec<ObservationOp>) {
            match e {
                ObservationExpr::Simple { .. } => {}
                ObservationExpr::Group { inner, .. } => walk(inner, out),
                ObservationExpr::Compound { op, operands } => {
                    if !out.contains(op) {
                        out.push(*op);
                    }
                    operands.iter().for_each(|o| walk(o, out));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.expr, &mut out);
        out
    }

    /// Every qualifier in the pattern, in source order.
    pub fn qualifiers(&self) -> Vec<&Qualifier<'a>> {
        fn walk<'p, 'a>(e: &'p ObservationExpr<'a>, out: &mut Vec<&'p Qualifier<'a>>) {
            match e {
                ObservationExpr::Simple { qualifiers, .. } => out.extend(qualifiers),
                ObservationExpr::Group { inner, qualifiers } => {
                    walk(inner, out);
                    out.extend(qualifiers);
                }
                ObservationExpr::Compound { operands, .. } => {
                    operands.iter().for_each(|o| walk(o, out))
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.expr, &mut out);
        out
    }
}

fn walk_observation<'p, 'a>(
    e: &'p ObservationExpr<'a>,
    ops: &mut Vec<ObservationOp>,
    quals: &mut Vec<&'p Qualifier<'a>>,
    observation: &mut usize,
    out: &mut Vec<ComparisonContext<'p, 'a>>,
) {
    match e {
        ObservationExpr::Simple {
            comparison,
            qualifiers,
            ..
        } => {
            // Inner qualifiers first: they apply before the enclosing groups' ones.
            let mut all: Vec<&Qualifier<'a>> = qualifiers.iter().collect();
            all.extend(quals.iter().rev());
            walk_comparison(comparison, &mut Vec::new(), ops, &all, *observation, out);
            *observation += 1;
        }
        ObservationExpr::Group { inner, qualifiers } => {
            let mark = quals.len();
            quals.extend(qualifiers.iter().rev());
            walk_observation(inner, ops, quals, observation, out);
            quals.truncate(mark);
        }
        ObservationExpr::Compound { op, operands } => {
            ops.push(*op);
            for o in operands {
                walk_observation(o, ops, quals, observation, out);
            }
            ops.pop();
        }
    }
}

fn walk_comparison<'p, 'a>(
    e: &'p ComparisonExpr<'a>,
    bool_ops: &mut Vec<BoolOp>,
    obs_ops: &[ObservationOp],
    quals: &[&'p Qualifier<'a>],
    observation: usize,
    out: &mut Vec<ComparisonContext<'p, 'a>>,
) {
    match e {
        ComparisonExpr::Comparison(c) => out.push(ComparisonContext {
            comparison: c,
            observation,
            comparison_ops: bool_ops.clone(),
            observation_ops: obs_ops.to_vec(),
            qualifiers: quals.to_vec(),
        }),
        ComparisonExpr::Compound { op, operands } => {
            bool_ops.push(*op);
            for o in operands {
                walk_comparison(o, bool_ops, obs_ops, quals, observation, out);
            }
            bool_ops.pop();
        }
    }
}
