//! The Sigma `condition` expression: a tokenizer and recursive-descent checker.
//!
//! It accepts what pySigma 2 accepts (`sigma/conditions.py`) and nothing more, so the connector
//! rejects the retired pipe/aggregation syntax (`sel | count() by host > 5`, `| near`) before
//! HarfangLab does. We only need a verdict and the referenced identifiers, not a tree.
//!
//! Grammar (pySigma's pyparsing `infix_notation`, operators case-sensitive):
//!
//! ```text
//! condition  := or_expr EOF
//! or_expr    := and_expr ("or" and_expr)*
//! and_expr   := not_expr ("and" not_expr)*
//! not_expr   := "not" not_expr | operand
//! operand    := "(" or_expr ")" | quantifier "of" pattern | identifier
//! quantifier := "1" | "any" | "all"
//! identifier := [A-Za-z0-9_-]+
//! pattern    := [A-Za-z0-9_*]+            ("them" is a pattern matching every identifier)
//! ```

use std::fmt;

/// Why a condition string is rejected. `offset` is a 0-based character offset in the condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConditionError {
    pub(crate) offset: usize,
    pub(crate) kind: ConditionErrorKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ConditionErrorKind {
    /// `selection | count() by host > 5`: the pre-correlation aggregation syntax.
    Pipe,
    /// `selection % other`: a character that is not part of the condition language.
    BadChar(char),
    /// `selection and`, `(selection`: the expression ends too early; names what was expected.
    UnexpectedEnd(&'static str),
    /// `selection other`, `and selection`: a token where something else was expected.
    Unexpected {
        found: String,
        expected: &'static str,
    },
    /// `sel*` outside `1 of`/`all of`, or `1 of sel-*` (`-` is not allowed in a pattern).
    BadWord { word: String, why: &'static str },
    /// Empty or blank condition.
    Empty,
}

impl fmt::Display for ConditionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ConditionErrorKind::Pipe => f.write_str(
                "the pipe syntax (`| count() ...`, `| near ...`) is retired Sigma: \
                 aggregations are Sigma correlation rules now, which HarfangLab does not take",
            ),
            ConditionErrorKind::BadChar(c) => write!(f, "unexpected character {c:?}"),
            ConditionErrorKind::UnexpectedEnd(expected) => {
                write!(f, "condition ends too early: expected {expected}")
            }
            ConditionErrorKind::Unexpected { found, expected } => {
                write!(f, "unexpected `{found}`: expected {expected}")
            }
            ConditionErrorKind::BadWord { word, why } => write!(f, "`{word}`: {why}"),
            ConditionErrorKind::Empty => f.write_str("condition is empty"),
        }
    }
}

/// What a valid condition refers to: plain identifiers (must exist in `detection`) and
/// `of` patterns (may match nothing, as in pySigma).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConditionRefs {
    /// `(identifier, character offset)` in source order.
    pub(crate) identifiers: Vec<(String, usize)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenKind {
    Word,
    LParen,
    RParen,
    /// Any character outside the language; the parser reports it where it is met.
    Other(char),
    Eof,
}

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    kind: TokenKind,
    text: &'a str,
    /// Character offset of the token's first character.
    offset: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '*'
}

/// Split a condition into tokens, ending with `Eof`. Only a pipe fails here: pySigma reports it
/// before anything else, and it is by far the most common reason a real rule is rejected.
fn tokenize(src: &str) -> Result<Vec<Token<'_>>, ConditionError> {
    if let Some(pos) = src.chars().position(|c| c == '|') {
        return Err(ConditionError {
            offset: pos,
            kind: ConditionErrorKind::Pipe,
        });
    }
    let mut tokens = Vec::new();
    let mut chars = src.char_indices().enumerate().peekable();
    while let Some((offset, (byte, c))) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '(' | ')' => tokens.push(Token {
                kind: if c == '(' {
                    TokenKind::LParen
                } else {
                    TokenKind::RParen
                },
                text: &src[byte..byte + 1],
                offset,
            }),
            c if is_word_char(c) => {
                let mut end = byte + c.len_utf8();
                while let Some(&(_, (b, next))) = chars.peek() {
                    if !is_word_char(next) {
                        break;
                    }
                    end = b + next.len_utf8();
                    chars.next();
                }
                tokens.push(Token {
                    kind: TokenKind::Word,
                    text: &src[byte..end],
                    offset,
                });
            }
            other => tokens.push(Token {
                kind: TokenKind::Other(other),
                text: &src[byte..byte + other.len_utf8()],
                offset,
            }),
        }
    }
    tokens.push(Token {
        kind: TokenKind::Eof,
        text: "",
        offset: src.chars().count(),
    });
    Ok(tokens)
}

/// Check one condition string; on success return what it references.
pub(crate) fn check_condition(src: &str) -> Result<ConditionRefs, ConditionError> {
    let tokens = tokenize(src)?;
    if tokens.len() == 1 {
        return Err(ConditionError {
            offset: 0,
            kind: ConditionErrorKind::Empty,
        });
    }
    let mut parser = Parser {
        tokens,
        pos: 0,
        refs: ConditionRefs::default(),
        depth: 0,
    };
    parser.or_expr()?;
    let next = parser.peek();
    if next.kind != TokenKind::Eof {
        return Err(parser.unexpected(next, "`and`, `or` or the end of the condition"));
    }
    Ok(parser.refs)
}

/// Nesting bound: a hostile condition of 100k `(` must not overflow the stack.
const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
    refs: ConditionRefs,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Token<'a> {
        // The token list always ends with Eof and `bump` never moves past it.
        self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token<'a> {
        let token = self.peek();
        if token.kind != TokenKind::Eof {
            self.pos += 1;
        }
        token
    }

    fn is_keyword(token: Token<'_>, keyword: &str) -> bool {
        token.kind == TokenKind::Word && token.text == keyword
    }

    fn unexpected(&self, token: Token<'_>, expected: &'static str) -> ConditionError {
        let kind = match token.kind {
            TokenKind::Eof => ConditionErrorKind::UnexpectedEnd(expected),
            TokenKind::Other(c) => ConditionErrorKind::BadChar(c),
            _ => ConditionErrorKind::Unexpected {
                found: token.text.to_string(),
                expected,
            },
        };
        ConditionError {
            offset: token.offset,
            kind,
        }
    }

    /// `or_expr := and_expr ("or" and_expr)*`
    fn or_expr(&mut self) -> Result<(), ConditionError> {
        self.and_expr()?;
        while Self::is_keyword(self.peek(), "or") {
            self.bump();
            self.and_expr()?;
        }
        Ok(())
    }

    /// `and_expr := not_expr ("and" not_expr)*`
    fn and_expr(&mut self) -> Result<(), ConditionError> {
        self.not_expr()?;
        while Self::is_keyword(self.peek(), "and") {
            self.bump();
            self.not_expr()?;
        }
        Ok(())
    }

    /// `not_expr := "not" not_expr | operand` (iterative: `not not not x` is legal).
    fn not_expr(&mut self) -> Result<(), ConditionError> {
        while Self::is_keyword(self.peek(), "not") {
            self.bump();
        }
        self.operand()
    }

    /// `operand := "(" or_expr ")" | quantifier "of" pattern | identifier`
    fn operand(&mut self) -> Result<(), ConditionError> {
        const OPERAND: &str = "a detection identifier, `1 of`, `all of`, `not` or `(`";
        let token = self.bump();
        match token.kind {
            TokenKind::LParen => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(ConditionError {
                        offset: token.offset,
                        kind: ConditionErrorKind::BadWord {
                            word: "(".to_string(),
                            why: "parentheses nested too deeply",
                        },
                    });
                }
                self.or_expr()?;
                self.depth -= 1;
                let close = self.bump();
                if close.kind != TokenKind::RParen {
                    return Err(self.unexpected(close, "`)`"));
                }
                Ok(())
            }
            TokenKind::Word if matches!(token.text, "and" | "or") => {
                Err(self.unexpected(token, OPERAND))
            }
            TokenKind::Word
                if matches!(token.text, "1" | "any" | "all")
                    && Self::is_keyword(self.peek(), "of") =>
            {
                self.bump();
                let pattern = self.bump();
                if pattern.kind != TokenKind::Word || matches!(pattern.text, "and" | "or" | "not") {
                    return Err(self.unexpected(pattern, "an identifier pattern or `them`"));
                }
                if pattern.text.contains('-') {
                    return Err(ConditionError {
                        offset: pattern.offset,
                        kind: ConditionErrorKind::BadWord {
                            word: pattern.text.to_string(),
                            why: "`-` is not allowed in an `of` pattern",
                        },
                    });
                }
                Ok(())
            }
            TokenKind::Word => {
                if token.text.contains('*') {
                    return Err(ConditionError {
                        offset: token.offset,
                        kind: ConditionErrorKind::BadWord {
                            word: token.text.to_string(),
                            why: "a `*` wildcard is only allowed after `1 of` or `all of`",
                        },
                    });
                }
                self.refs
                    .identifiers
                    .push((token.text.to_string(), token.offset));
                Ok(())
            }
            TokenKind::RParen | TokenKind::Other(_) | TokenKind::Eof => {
                Err(self.unexpected(token, OPERAND))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str) -> Vec<String> {
        match check_condition(src) {
            Ok(refs) => refs.identifiers.into_iter().map(|(i, _)| i).collect(),
            Err(e) => panic!("{src:?} rejected: {e}"),
        }
    }

    fn err(src: &str) -> ConditionError {
        match check_condition(src) {
            Ok(refs) => panic!("{src:?} accepted: {refs:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn accepts_the_sigma_condition_language() {
        assert_eq!(ok("selection"), ["selection"]);
        assert_eq!(ok("selection and not filter"), ["selection", "filter"]);
        assert_eq!(
            ok("(sel1 or sel-2) and not (f_1 and f2)"),
            ["sel1", "sel-2", "f_1", "f2"]
        );
        assert!(ok("1 of selection_* and not 1 of filter_*").is_empty());
        assert!(ok("all of them").is_empty());
        assert!(ok("any of sel*").is_empty());
        assert_eq!(ok("not not x"), ["x"]);
        assert_eq!(ok("  sel\n  and\tother  "), ["sel", "other"]);
        // Keywords are case-sensitive words: `notepad`, `order`, `android` are identifiers.
        assert_eq!(
            ok("notepad or order and android"),
            ["notepad", "order", "android"]
        );
    }

    #[test]
    fn rejects_pipes_first_with_their_position() {
        let e = err("selection | count() by host > 5");
        assert_eq!(e.kind, ConditionErrorKind::Pipe);
        assert_eq!(e.offset, 10);
        assert_eq!(err("a |near b").kind, ConditionErrorKind::Pipe);
    }

    #[test]
    fn rejects_syntax_errors_with_offsets() {
        let e = err("count(subdomain) per query > 200");
        assert_eq!(e.offset, 5);
        assert!(matches!(e.kind, ConditionErrorKind::Unexpected { ref found, .. } if found == "("));
        assert_eq!(
            err("a and").kind,
            ConditionErrorKind::UnexpectedEnd(
                "a detection identifier, `1 of`, `all of`, `not` or `(`"
            )
        );
        assert_eq!(
            err("(a or b").kind,
            ConditionErrorKind::UnexpectedEnd("`)`")
        );
        assert_eq!(err("a b").offset, 2);
        assert_eq!(err("and a").offset, 0);
        assert_eq!(err("a)").offset, 1);
        assert_eq!(err("sel* and b").offset, 0);
        assert_eq!(err("1 of sel-*").offset, 5);
        assert_eq!(
            err("1 of").kind,
            ConditionErrorKind::UnexpectedEnd("an identifier pattern or `them`")
        );
        assert_eq!(err("a > 5").kind, ConditionErrorKind::BadChar('>'));
        assert_eq!(err("a > 5").offset, 2);
        assert_eq!(err("  ").kind, ConditionErrorKind::Empty);
        assert_eq!(err("a AND b").offset, 2);
        // Offsets count characters, not bytes.
        assert_eq!(err("é é").offset, 0);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let src = format!("{}a{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(check_condition(&src).is_err());
        let ok_src = format!("{}a{}", "(".repeat(10), ")".repeat(10));
        assert!(check_condition(&ok_src).is_ok());
    }
}
