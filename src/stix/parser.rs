//! Recursive-descent parser for the whole STIX 2.1 patterning grammar, plus the reference
//! validator's extra checks.
//!
//! [`parse_syntax`] accepts exactly what the OASIS ANTLR grammar accepts (stix2-patterns 2.1.2,
//! `Pattern(..)` succeeding). [`parse_pattern`] additionally applies the checks of
//! `stix2patterns.validator.validate` (hash value formats, duplicate qualifiers, leading
//! brackets), so `parse_pattern(p).is_ok()` is the validator's verdict. Errors are fail-fast with
//! the byte offset of the first offending token. Nesting is bounded by [`MAX_DEPTH`] so no input
//! can exhaust the stack.

use super::ast::*;
use super::error::{ErrorKind, PatternError};
use super::lexer::{Lexer, Span, Token, TokenKind};
use std::borrow::Cow;

/// Deepest allowed nesting of `(` and `[` (real patterns use 3 or fewer).
pub const MAX_DEPTH: usize = 64;

/// Parse a pattern and apply the reference validator's extra checks.
pub fn parse_pattern(src: &str) -> Result<Pattern<'_>, PatternError> {
    let pattern = parse_syntax(src)?;
    validate(src, &pattern)?;
    Ok(pattern)
}

/// Parse a pattern against the grammar only (no hash-format or qualifier checks).
pub fn parse_syntax(src: &str) -> Result<Pattern<'_>, PatternError> {
    let mut lexer = Lexer::new(src);
    let tok = lexer.next_token();
    let mut p = Parser {
        src,
        lexer,
        tok,
        prev_end: 0,
        depth: 0,
    };
    p.pattern()
}

type PResult<T> = Result<T, PatternError>;

struct Parser<'a> {
    src: &'a str,
    lexer: Lexer<'a>,
    /// The current (not yet consumed) token.
    tok: Token,
    /// End of the last consumed token.
    prev_end: usize,
    depth: usize,
}

const OBSERVATION_LEVELS: [(TokenKind, ObservationOp); 3] = [
    (TokenKind::FollowedBy, ObservationOp::FollowedBy),
    (TokenKind::Or, ObservationOp::Or),
    (TokenKind::And, ObservationOp::And),
];

impl<'a> Parser<'a> {
    fn bump(&mut self) -> Token {
        let t = self.tok;
        self.prev_end = t.span.end;
        self.tok = self.lexer.next_token();
        t
    }

    fn at(&self, kind: TokenKind) -> bool {
        self.tok.kind == kind
    }

    fn text(&self, t: Token) -> &'a str {
        t.span.text(self.src)
    }

    fn error(&self, expected: &'static str) -> PatternError {
        let found = match self.tok.kind {
            TokenKind::Eof => "end of pattern".to_string(),
            kind => {
                let text = self.text(self.tok);
                let short: String = text.chars().take(40).collect();
                let ellipsis = if short.len() < text.len() { "..." } else { "" };
                format!("{} `{short}{ellipsis}`", kind.description())
            }
        };
        PatternError {
            offset: self.tok.span.start,
            kind: ErrorKind::Unexpected { expected, found },
        }
    }

    fn expect(&mut self, kind: TokenKind, expected: &'static str) -> PResult<Token> {
        if self.at(kind) {
            Ok(self.bump())
        } else {
            Err(self.error(expected))
        }
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(PatternError {
                offset: self.tok.span.start,
                kind: ErrorKind::TooDeep,
            });
        }
        Ok(())
    }

    /// `pattern : observationExpressions EOF`
    fn pattern(&mut self) -> PResult<Pattern<'a>> {
        let expr = self.observations(0)?;
        if !self.at(TokenKind::Eof) {
            return Err(self.error("AND, OR, FOLLOWEDBY, a qualifier or end of pattern"));
        }
        Ok(Pattern { expr })
    }

    /// ```text
    /// observationExpressions   : observationExpressions FOLLOWEDBY observationExpressions | observationExpressionOr
    /// observationExpressionOr  : observationExpressionOr OR observationExpressionOr | observationExpressionAnd
    /// observationExpressionAnd : observationExpressionAnd AND observationExpressionAnd | observationExpression
    /// ```
    /// One function per precedence level (`level` indexes [`OBSERVATION_LEVELS`]).
    fn observations(&mut self, level: usize) -> PResult<ObservationExpr<'a>> {
        let Some(&(token, op)) = OBSERVATION_LEVELS.get(level) else {
            return self.observation();
        };
        let first = self.observations(level + 1)?;
        if !self.at(token) {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.at(token) {
            self.bump();
            operands.push(self.observations(level + 1)?);
        }
        Ok(ObservationExpr::Compound { op, operands })
    }

    /// ```text
    /// observationExpression
    ///   : '[' comparisonExpression ']'   | '(' observationExpressions ')'
    ///   | observationExpression startStopQualifier | … withinQualifier | … repeatedQualifier
    /// ```
    fn observation(&mut self) -> PResult<ObservationExpr<'a>> {
        match self.tok.kind {
            TokenKind::LBrack => {
                let open = self.bump();
                self.enter()?;
                let comparison = self.comparisons(false)?;
                let close = self.expect(TokenKind::RBrack, "`]`, AND or OR")?;
                self.depth -= 1;
                let qualifiers = self.qualifiers()?;
                Ok(ObservationExpr::Simple {
                    comparison,
                    qualifiers,
                    span: Span::new(open.span.start, close.span.end),
                })
            }
            TokenKind::LParen => {
                self.bump();
                self.enter()?;
                let inner = self.observations(0)?;
                self.expect(TokenKind::RParen, "`)`, AND, OR, FOLLOWEDBY or a qualifier")?;
                self.depth -= 1;
                let qualifiers = self.qualifiers()?;
                Ok(ObservationExpr::Group {
                    inner: Box::new(inner),
                    qualifiers,
                })
            }
            _ => Err(self.error("`[` or `(`")),
        }
    }

    /// ```text
    /// startStopQualifier : START TimestampLiteral STOP TimestampLiteral
    /// withinQualifier    : WITHIN (IntPosLiteral|FloatPosLiteral) SECONDS
    /// repeatedQualifier  : REPEATS IntPosLiteral TIMES
    /// ```
    fn qualifiers(&mut self) -> PResult<Vec<Qualifier<'a>>> {
        let mut out = Vec::new();
        loop {
            let start = self.tok.span.start;
            let q = match self.tok.kind {
                TokenKind::Within => {
                    self.bump();
                    let n = if matches!(self.tok.kind, TokenKind::IntPos | TokenKind::FloatPos) {
                        self.bump()
                    } else {
                        return Err(self.error("a positive number of seconds"));
                    };
                    let end = self.expect(TokenKind::Seconds, "SECONDS")?;
                    Qualifier::Within {
                        seconds: self.text(n),
                        span: Span::new(start, end.span.end),
                    }
                }
                TokenKind::Repeats => {
                    self.bump();
                    let n = self.expect(TokenKind::IntPos, "a positive integer")?;
                    let end = self.expect(TokenKind::Times, "TIMES")?;
                    Qualifier::Repeats {
                        times: self.text(n),
                        span: Span::new(start, end.span.end),
                    }
                }
                TokenKind::Start => {
                    self.bump();
                    let from = self.expect(TokenKind::Timestamp, "a timestamp t'...'")?;
                    self.expect(TokenKind::Stop, "STOP")?;
                    let to = self.expect(TokenKind::Timestamp, "a timestamp t'...'")?;
                    Qualifier::StartStop {
                        start: self.text(from),
                        stop: self.text(to),
                        span: Span::new(start, to.span.end),
                    }
                }
                _ => return Ok(out),
            };
            out.push(q);
        }
    }

    /// ```text
    /// comparisonExpression    : comparisonExpression OR comparisonExpression | comparisonExpressionAnd
    /// comparisonExpressionAnd : comparisonExpressionAnd AND comparisonExpressionAnd | propTest
    /// ```
    fn comparisons(&mut self, and_level: bool) -> PResult<ComparisonExpr<'a>> {
        let (token, op) = if and_level {
            (TokenKind::And, BoolOp::And)
        } else {
            (TokenKind::Or, BoolOp::Or)
        };
        let first = if and_level {
            self.prop_test()?
        } else {
            self.comparisons(true)?
        };
        if !self.at(token) {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.at(token) {
            self.bump();
            operands.push(if and_level {
                self.prop_test()?
            } else {
                self.comparisons(true)?
            });
        }
        Ok(ComparisonExpr::Compound { op, operands })
    }

    /// ```text
    /// propTest
    ///   : objectPath NOT? (EQ|NEQ) primitiveLiteral        | objectPath NOT? (GT|LT|GE|LE) orderableLiteral
    ///   | objectPath NOT? IN setLiteral                    | objectPath NOT? (LIKE|MATCHES|ISSUBSET|ISSUPERSET) StringLiteral
    ///   | '(' comparisonExpression ')'                     | EXISTS objectPath
    /// ```
    fn prop_test(&mut self) -> PResult<ComparisonExpr<'a>> {
        let start = self.tok.span.start;
        match self.tok.kind {
            TokenKind::LParen => {
                self.bump();
                self.enter()?;
                let inner = self.comparisons(false)?;
                self.expect(TokenKind::RParen, "`)`, AND or OR")?;
                self.depth -= 1;
                return Ok(inner);
            }
            TokenKind::Exists => {
                self.bump();
                let path = self.object_path()?;
                let end = self.prev_end;
                return Ok(ComparisonExpr::Comparison(Comparison {
                    path,
                    negated: false,
                    op: ComparisonOp::Exists,
                    value: Value::None,
                    span: Span::new(start, end),
                    value_span: Span::new(end, end),
                }));
            }
            _ => {}
        }
        let path = self.object_path()?;
        let negated = self.at(TokenKind::Not);
        if negated {
            self.bump();
        }
        let op = match self.tok.kind {
            TokenKind::Eq => ComparisonOp::Eq,
            TokenKind::Neq => ComparisonOp::Neq,
            TokenKind::Lt => ComparisonOp::Lt,
            TokenKind::Le => ComparisonOp::Le,
            TokenKind::Gt => ComparisonOp::Gt,
            TokenKind::Ge => ComparisonOp::Ge,
            TokenKind::In => ComparisonOp::In,
            TokenKind::Like => ComparisonOp::Like,
            TokenKind::Matches => ComparisonOp::Matches,
            TokenKind::IsSubset => ComparisonOp::IsSubset,
            TokenKind::IsSuperset => ComparisonOp::IsSuperset,
            _ if negated => return Err(self.error("a comparison operator after NOT")),
            _ => return Err(self.error("a comparison operator")),
        };
        self.bump();
        let value_start = self.tok.span.start;
        let value = match op {
            ComparisonOp::Eq | ComparisonOp::Neq => Value::Literal(self.literal(true)?),
            ComparisonOp::Lt | ComparisonOp::Le | ComparisonOp::Gt | ComparisonOp::Ge => {
                Value::Literal(self.literal(false)?)
            }
            ComparisonOp::In => Value::Set(self.set()?),
            _ => {
                let t = self.expect(TokenKind::Str, "a string")?;
                Value::Literal(Literal::Str(unescape(self.text(t))))
            }
        };
        let end = self.prev_end;
        Ok(ComparisonExpr::Comparison(Comparison {
            path,
            negated,
            op,
            value,
            span: Span::new(start, end),
            value_span: Span::new(value_start, end),
        }))
    }

    /// ```text
    /// objectPath           : objectType ':' firstPathComponent objectPathComponent?
    /// objectType           : IdentifierWithoutHyphen | IdentifierWithHyphen
    /// firstPathComponent   : IdentifierWithoutHyphen | StringLiteral
    /// objectPathComponent  : objectPathComponent objectPathComponent
    ///                      | '.' (IdentifierWithoutHyphen | StringLiteral)
    ///                      | '[' (IntPosLiteral | IntNegLiteral | '*') ']'
    /// ```
    fn object_path(&mut self) -> PResult<ObjectPath<'a>> {
        if !matches!(self.tok.kind, TokenKind::Ident | TokenKind::IdentHyphen) {
            return Err(self.error("an object path (`type:property`)"));
        }
        let t = self.bump();
        let object_type = self.text(t);
        self.expect(TokenKind::Colon, "`:` after the object type")?;
        let mut steps = Vec::with_capacity(2);
        steps.push(self.key("a property name")?);
        loop {
            match self.tok.kind {
                TokenKind::Dot => {
                    self.bump();
                    steps.push(self.key("a property name after `.`")?);
                }
                TokenKind::LBrack => {
                    self.bump();
                    let step = match self.tok.kind {
                        TokenKind::Asterisk => PathStep::AnyIndex,
                        TokenKind::IntPos | TokenKind::IntNeg => {
                            let text = self.text(self.tok);
                            PathStep::Index(text.trim_start_matches('+').parse().ok())
                        }
                        _ => return Err(self.error("a list index or `*`")),
                    };
                    self.bump();
                    self.expect(TokenKind::RBrack, "`]` after the list index")?;
                    steps.push(step);
                }
                _ => return Ok(ObjectPath { object_type, steps }),
            }
        }
    }

    fn key(&mut self, expected: &'static str) -> PResult<PathStep<'a>> {
        match self.tok.kind {
            TokenKind::Ident => {
                let t = self.bump();
                Ok(PathStep::Key(Cow::Borrowed(self.text(t))))
            }
            TokenKind::Str => {
                let t = self.bump();
                Ok(PathStep::Key(unescape(self.text(t))))
            }
            _ => Err(self.error(expected)),
        }
    }

    /// `primitiveLiteral : orderableLiteral | BoolLiteral` (`with_bool`), else
    /// `orderableLiteral : Int | Float | String | Binary | Hex | Timestamp literals`.
    fn literal(&mut self, with_bool: bool) -> PResult<Literal<'a>> {
        let text = self.text(self.tok);
        let lit = match self.tok.kind {
            TokenKind::IntPos | TokenKind::IntNeg => Literal::Int(text),
            TokenKind::FloatPos | TokenKind::FloatNeg => Literal::Float(text),
            TokenKind::Str => Literal::Str(unescape(text)),
            TokenKind::Timestamp => Literal::Timestamp(text),
            TokenKind::Binary => Literal::Binary(text),
            TokenKind::Hex => Literal::Hex(text),
            TokenKind::Bool if with_bool => Literal::Bool(text == "true"),
            _ if with_bool => return Err(self.error("a literal value")),
            _ => {
                return Err(
                    self.error("an orderable literal (number, string, timestamp, binary or hex)")
                );
            }
        };
        self.bump();
        Ok(lit)
    }

    /// `setLiteral : '(' ')' | '(' primitiveLiteral (',' primitiveLiteral)* ')'`
    fn set(&mut self) -> PResult<Vec<Literal<'a>>> {
        self.expect(TokenKind::LParen, "`(` opening the IN list")?;
        let mut items = Vec::new();
        if self.at(TokenKind::RParen) {
            self.bump();
            return Ok(items);
        }
        loop {
            items.push(self.literal(true)?);
            match self.tok.kind {
                TokenKind::Comma => {
                    self.bump();
                }
                TokenKind::RParen => {
                    self.bump();
                    return Ok(items);
                }
                _ => return Err(self.error("`,` or `)` in the IN list")),
            }
        }
    }
}

/// Content of a string literal token (quotes included): `\'` → `'`, `\\` → `\`.
/// Borrows when there is no escape.
fn unescape(token: &str) -> Cow<'_, str> {
    let inner = token
        .strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .unwrap_or(token);
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The reference validator's checks beyond the grammar (stix2patterns `validator.py`,
/// `helpers.brackets_check`, `v21/validator.py` qualifier listener, `v21/object_validator.py`).
fn validate(src: &str, pattern: &Pattern<'_>) -> Result<(), PatternError> {
    if !starts_with_bracket(src) {
        return Err(PatternError {
            offset: 0,
            kind: ErrorKind::MissingBrackets,
        });
    }
    check_qualifiers(&pattern.expr)?;
    let mut result = Ok(());
    pattern.for_each_comparison(|c| {
        if result.is_ok() {
            result = check_hash(src, c);
        }
    });
    result
}

/// Any number of `(` and whitespace, then `[` (on raw text, so a leading comment fails it).
fn starts_with_bracket(src: &str) -> bool {
    // Python's str.isspace also counts the ASCII separators 0x1c-0x1f.
    src.chars()
        .find(|&c| !(c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c) || c == '('))
        == Some('[')
}

/// The validator rejects a qualifier type repeated directly on one `[...]` (not on a group).
fn check_qualifiers(e: &ObservationExpr<'_>) -> Result<(), PatternError> {
    match e {
        ObservationExpr::Simple { qualifiers, .. } => {
            for (i, q) in qualifiers.iter().enumerate() {
                if qualifiers[..i].iter().any(|p| p.kind() == q.kind()) {
                    return Err(PatternError {
                        offset: q.span().start,
                        kind: ErrorKind::DuplicateQualifier(q.kind()),
                    });
                }
            }
            Ok(())
        }
        ObservationExpr::Group { inner, .. } => check_qualifiers(inner),
        ObservationExpr::Compound { operands, .. } => {
            operands.iter().try_for_each(check_qualifiers)
        }
    }
}

/// Hash-value formats by normalised algorithm name (upper case, no `-`), as the validator has
/// them: (name, hex lengths); SSDEEP and MD6 are special-cased in [`hash_value_ok`].
const HASH_FORMATS: &[(&str, &[usize])] = &[
    ("MD5", &[32]),
    ("RIPEMD160", &[40]),
    ("SHA1", &[40]),
    ("SHA224", &[56]),
    ("SHA256", &[64]),
    ("SHA384", &[96]),
    ("SHA512", &[128]),
    ("SHA3224", &[56]),
    ("SHA3256", &[64]),
    ("SHA3384", &[96]),
    ("SHA3512", &[128]),
    ("WHIRLPOOL", &[128]),
];

fn check_hash(src: &str, c: &Comparison<'_>) -> Result<(), PatternError> {
    if c.op == ComparisonOp::Exists || !c.path.steps.iter().any(|s| s.key() == Some("hashes")) {
        return Ok(());
    }
    let selector = match c.path.steps.last() {
        Some(PathStep::Key(k)) => k,
        Some(PathStep::AnyIndex) | None => return Ok(()),
        Some(PathStep::Index(_)) => {
            return Err(PatternError {
                offset: c.span.start,
                kind: ErrorKind::HashIndexSelector,
            });
        }
    };
    let algo = selector.to_uppercase().replace(['-', '\''], "");
    // The validator checks the literal as written with every quote removed.
    let value = c.value_span.text(src).replace('\'', "");
    if hash_value_ok(&algo, &value) {
        Ok(())
    } else {
        Err(PatternError {
            offset: c.value_span.start,
            kind: ErrorKind::InvalidHash {
                algorithm: selector.to_string(),
                value,
            },
        })
    }
}

/// Mirrors `re.match(HASHES_REGEX[algo], value)`; unknown algorithms pass.
fn hash_value_ok(algo: &str, value: &str) -> bool {
    // Python's `$` also matches before one final newline.
    let v = value.strip_suffix('\n').unwrap_or(value);
    let hex_run = |s: &str| s.bytes().take_while(u8::is_ascii_hexdigit).count();
    match algo {
        "SSDEEP" => {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/+:.".contains(&b))
        }
        // The upstream MD6 regex lacks a group around its alternation: in effect it only
        // requires 32 leading hex digits (or a newline, 4 spaces and 64 hex digits).
        "MD6" => {
            hex_run(value) >= 32
                || value
                    .strip_prefix("\n    ")
                    .is_some_and(|r| hex_run(r) >= 64)
        }
        _ => match HASH_FORMATS.iter().find(|(name, _)| *name == algo) {
            Some((_, lens)) => lens.contains(&v.len()) && hex_run(v) == v.len(),
            None => true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> PatternError {
        match parse_pattern(src) {
            Ok(p) => panic!("{src} parsed: {p:?}"),
            Err(e) => e,
        }
    }

    fn only(src: &str) -> Comparison<'_> {
        let p = parse_pattern(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        let mut v = p.comparisons();
        assert_eq!(v.len(), 1, "{src}");
        v.remove(0).comparison.clone()
    }

    #[test]
    fn single_comparison_with_quoted_key() {
        let c = only(
            "[file:hashes.'SHA-256' = 'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f']",
        );
        assert_eq!(c.path.object_type, "file");
        assert_eq!(c.path.steps[1].key(), Some("SHA-256"));
        assert_eq!(c.path.to_string(), "file:hashes.'SHA-256'");
        assert_eq!(c.op, ComparisonOp::Eq);
        assert!(!c.is_negative());
    }

    #[test]
    fn escapes_are_decoded_and_borrowed_when_absent() {
        let c = only(r"[windows-registry-key:key = 'HKLM\\foo\\bar\'s']");
        let Value::Literal(Literal::Str(s)) = &c.value else {
            panic!()
        };
        assert_eq!(s, r"HKLM\foo\bar's");
        let c = only("[url:value = 'http://x']");
        let Value::Literal(Literal::Str(s)) = &c.value else {
            panic!()
        };
        assert!(matches!(s, Cow::Borrowed(_)));
    }

    #[test]
    fn paths_with_indexes_and_references() {
        let c = only("[obj-type:a.b[*][1].'c-d'[-2] NOT ISSUPERSET '1.2.3.4/16']");
        assert_eq!(
            c.path.steps,
            [
                PathStep::Key("a".into()),
                PathStep::Key("b".into()),
                PathStep::AnyIndex,
                PathStep::Index(Some(1)),
                PathStep::Key("c-d".into()),
                PathStep::Index(Some(-2)),
            ]
        );
        assert!(c.negated && c.is_negative());
        assert_eq!(c.op, ComparisonOp::IsSuperset);
        assert!(
            only("[network-traffic:dst_ref.value = 'x']")
                .path
                .is_reference()
        );
    }

    #[test]
    fn operators_and_literals() {
        let cases = [
            ("[a:b != 1]", ComparisonOp::Neq, true),
            ("[a:b NOT != 1]", ComparisonOp::Neq, false),
            ("[a:b <> 1]", ComparisonOp::Neq, true),
            ("[a:b == 1]", ComparisonOp::Eq, false),
            ("[a:b < 1.5]", ComparisonOp::Lt, false),
            ("[a:b >= -3]", ComparisonOp::Ge, false),
            ("[a:b LIKE 'x%']", ComparisonOp::Like, false),
            ("[a:b NOT MATCHES '^x']", ComparisonOp::Matches, true),
            ("[a:b ISSUBSET '10.0.0.0/8']", ComparisonOp::IsSubset, false),
            ("[a:b = h'ff00']", ComparisonOp::Eq, false),
            ("[a:b = b'YWJj']", ComparisonOp::Eq, false),
            ("[a:b = t'2016-06-01T01:30:00Z']", ComparisonOp::Eq, false),
            ("[a:b = true]", ComparisonOp::Eq, false),
            ("[EXISTS a:b]", ComparisonOp::Exists, false),
        ];
        for (src, op, negative) in cases {
            let c = only(src);
            assert_eq!((c.op, c.is_negative()), (op, negative), "{src}");
        }
        let c = only("[a:b NOT IN ('x', 2, true)]");
        assert_eq!(
            c.value,
            Value::Set(vec![
                Literal::Str("x".into()),
                Literal::Int("2"),
                Literal::Bool(true)
            ])
        );
        assert_eq!(
            c.value_span.text("[a:b NOT IN ('x', 2, true)]"),
            "('x', 2, true)"
        );
    }

    #[test]
    fn precedence_and_over_or_over_followedby() {
        let p = parse_pattern("[a:b = 1] FOLLOWEDBY [a:b = 2] OR [a:b = 3] AND [a:b = 4]").unwrap();
        let ObservationExpr::Compound { op, operands } = &p.expr else {
            panic!()
        };
        assert_eq!((*op, operands.len()), (ObservationOp::FollowedBy, 2));
        let ObservationExpr::Compound { op, operands } = &operands[1] else {
            panic!()
        };
        assert_eq!((*op, operands.len()), (ObservationOp::Or, 2));
        assert!(matches!(
            &operands[1],
            ObservationExpr::Compound {
                op: ObservationOp::And,
                ..
            }
        ));

        let p = parse_pattern("[a:b = 1 OR a:c = 2 AND a:d = 3]").unwrap();
        let ctx = p.comparisons();
        assert_eq!(ctx[0].comparison_ops, [BoolOp::Or]);
        assert_eq!(ctx[1].comparison_ops, [BoolOp::Or, BoolOp::And]);
    }

    #[test]
    fn qualifiers_bind_to_their_observation() {
        let src = "([a:b = 1] REPEATS 2 TIMES AND [a:c = 2]) WITHIN 10.5 SECONDS OR [a:d = 3] START t'2016-06-01T01:30:00Z' STOP t'2016-06-01T02:30:00Z'";
        let p = parse_pattern(src).unwrap();
        let ctx = p.comparisons();
        let texts = |i: usize| {
            ctx[i]
                .qualifiers
                .iter()
                .map(|q| q.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(0), ["REPEATS 2 TIMES", "WITHIN 10.5 SECONDS"]);
        assert_eq!(texts(1), ["WITHIN 10.5 SECONDS"]);
        assert_eq!(
            texts(2),
            ["START t'2016-06-01T01:30:00Z' STOP t'2016-06-01T02:30:00Z'"]
        );
        assert_eq!(
            ctx[0].observation_ops,
            [ObservationOp::Or, ObservationOp::And]
        );
        assert_eq!(
            ctx.iter().map(|c| c.observation).collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }

    #[test]
    fn syntax_errors_name_position_expected_and_found() {
        let cases = [
            (
                "[file:size = ]",
                13,
                "expected a literal value, found symbol `]`",
            ),
            (
                "file:size = 1280",
                0,
                "expected `[` or `(`, found identifier `file`",
            ),
            (
                "[file.size = 1280]",
                5,
                "expected `:` after the object type, found symbol `.`",
            ),
            (
                "[file:name MATCHES /.*\\.dll/]",
                19,
                "expected a string, found symbol `/`",
            ),
            (
                "[a:b = 1] WITHIN 5 HOURS",
                19,
                "expected SECONDS, found identifier `HOURS`",
            ),
            (
                "[a:b = 1] WITHIN -5 SECONDS",
                17,
                "expected a positive number of seconds, found an integer `-5`",
            ),
            (
                "[a:b = 1] within 2 seconds",
                10,
                "expected AND, OR, FOLLOWEDBY, a qualifier or end of pattern, found identifier `within`",
            ),
            (
                "[a:b =? 1]",
                6,
                "expected a literal value, found invalid character `?`",
            ),
            (
                "[a:b = 1",
                8,
                "expected `]`, AND or OR, found end of pattern",
            ),
            (
                "[x:c = t'2024-13-01T12:00:00Z']",
                7,
                "expected a literal value, found identifier `t`",
            ),
        ];
        for (src, offset, msg) in cases {
            let e = parse_syntax(src).expect_err(src);
            assert_eq!(e.offset, offset, "{src}: {e}");
            assert_eq!(e.to_string(), format!("at byte {offset}: {msg}"), "{src}");
        }
    }

    #[test]
    fn validator_extra_checks() {
        let e = err("[file:hashes.'SHA-256' = 'f00']");
        assert_eq!(
            e.to_string(),
            "at byte 25: 'f00' is not a valid SHA-256 hash"
        );
        assert!(parse_syntax("[file:hashes.'SHA-256' = 'f00']").is_ok());
        // Any spelling of the algorithm is checked; unknown algorithms are not.
        assert!(matches!(
            err("[file:hashes.sha1 = 'abc']").kind,
            ErrorKind::InvalidHash { .. }
        ));
        assert!(parse_pattern("[file:hashes.TLSH = 'anything']").is_ok());
        assert!(parse_pattern("[file:hashes.MD5 = 'CEAD3F77F6CDA6EC00F57D76C9A6879F']").is_ok());
        assert_eq!(
            err("[file:hashes[0] = 'ab']").kind,
            ErrorKind::HashIndexSelector
        );

        let e = err("[a:b = 1] WITHIN 5 SECONDS WITHIN 6 SECONDS");
        assert_eq!(
            (e.offset, e.kind),
            (27, ErrorKind::DuplicateQualifier(QualifierKind::Within))
        );
        assert!(parse_pattern("([a:b = 1]) WITHIN 5 SECONDS WITHIN 6 SECONDS").is_ok());
        assert!(parse_pattern("([a:b = 1] REPEATS 2 TIMES) REPEATS 2 TIMES").is_ok());

        assert_eq!(err("/* c */ [a:b = 1]").kind, ErrorKind::MissingBrackets);
        assert!(parse_syntax("/* c */ [a:b = 1]").is_ok());
        assert!(parse_pattern(" ( ([a:b = 1]))").is_ok());
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{}[a:b = 1]{}", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(parse_syntax(&deep).unwrap_err().kind, ErrorKind::TooDeep);
        let deep = format!("[{}a:b = 1{}]", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(parse_syntax(&deep).unwrap_err().kind, ErrorKind::TooDeep);
        let ok = format!("{}[a:b = 1]{}", "(".repeat(50), ")".repeat(50));
        assert!(parse_pattern(&ok).is_ok());
    }

    /// Parsing never panics: random bytes, random token soups and mutations of real patterns.
    #[test]
    fn never_panics_on_arbitrary_input() {
        const SEEDS: &[&str] = &[
            "[file:hashes.'SHA-256' = 'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f']",
            "([file:hashes.MD5 = '79054025255fb1a26e4bc422aef54eb4'] FOLLOWEDBY [win-registry-key:key = 'HKEY_LOCAL_MACHINE\\\\foo\\\\bar']) WITHIN 300 SECONDS",
            "[network-traffic:dst_ref.type = 'ipv4-addr' AND network-traffic:dst_port IN (443, 8443)] REPEATS 5 TIMES",
            "[x:created = t'2024-01-15T12:30:45.123Z'] START t'2016-06-01T01:30:00Z' STOP t'2016-06-01T02:20:00Z'",
            "[obj-type:a.b[*][1].'c-d' NOT ISSUPERSET '1.2.3.4/16' OR EXISTS a:b] AND [a:b = b'YWJj' AND a:c < h'ff']",
        ];
        const SOUP: &[&str] = &[
            "[",
            "]",
            "(",
            ")",
            "'",
            "'x'",
            "\\",
            "AND",
            "OR",
            "NOT",
            "FOLLOWEDBY",
            "IN",
            "LIKE",
            "MATCHES",
            "ISSUBSET",
            "EXISTS",
            "WITHIN",
            "REPEATS",
            "TIMES",
            "SECONDS",
            "START",
            "STOP",
            "=",
            "!=",
            "<",
            ">=",
            ":",
            ".",
            ",",
            "*",
            "-",
            "+",
            "1",
            "-2",
            "3.5",
            "file",
            "a-b",
            "hashes",
            "'SHA-256'",
            "t'2016-06-01T01:30:00Z'",
            "h'ff'",
            "b'YWJj'",
            "true",
            "/*",
            "*/",
            "//",
            "\n",
            " ",
            "é",
            "\u{3000}",
            "\0",
        ];
        let mut rng = fastrand::Rng::with_seed(0x5717_2024);
        let run = |s: &str| {
            // Either outcome is fine; what matters is no panic and a sane offset.
            if let Err(e) = parse_pattern(s) {
                assert!(e.offset <= s.len(), "{s:?}: {e}");
                let _ = e.to_string();
            }
        };
        for _ in 0..3000 {
            let len = rng.usize(0..80);
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            run(&String::from_utf8_lossy(&bytes));
            let ascii: String = (0..len).map(|_| rng.char(' '..='~')).collect();
            run(&ascii);
            let soup: Vec<&str> = (0..rng.usize(0..30))
                .map(|_| SOUP[rng.usize(..SOUP.len())])
                .collect();
            run(&soup.join(if rng.bool() { " " } else { "" }));
            let seed = SEEDS[rng.usize(..SEEDS.len())];
            let mut chars: Vec<char> = seed.chars().collect();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..chars.len().max(1));
                match rng.u8(0..3) {
                    0 if !chars.is_empty() => {
                        chars.remove(i.min(chars.len() - 1));
                    }
                    1 => chars.insert(i.min(chars.len()), rng.char(' '..='~')),
                    _ => chars.truncate(i),
                }
            }
            run(&chars.iter().collect::<String>());
        }
    }
}
