//! STIX 2.1 pattern lexer: `&str` → [`Token`]s with byte spans into the input.
//!
//! Mirrors the lexer rules of the OASIS ANTLR grammar (`STIXPattern.g4`, as shipped in
//! stix2-patterns 2.1.2): longest match wins, ties go to the rule defined first (so `AND` is a
//! keyword, `ANDROID` an identifier, `true` a boolean). The lexer never fails: a byte sequence no
//! rule accepts becomes one [`TokenKind::Invalid`] token (a whole UTF-8 character) and the parser
//! reports it. The stream always ends with exactly one [`TokenKind::Eof`]. Tokens carry spans
//! only, never copies of the text, so lexing allocates nothing.

/// A byte range `start..end` in the pattern text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The text this span covers (empty if the span does not fit `src`).
    pub fn text(self, src: &str) -> &str {
        src.get(self.start..self.end).unwrap_or("")
    }
}

/// Token kinds, named after the grammar's lexer rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// `-12`
    IntNeg,
    /// `12`, `+12`
    IntPos,
    /// `-1.5`
    FloatNeg,
    /// `1.5`, `.5`, `+1.5`
    FloatPos,
    /// `h'ffd8'`
    Hex,
    /// `b'dGVzdA=='`
    Binary,
    /// `'it\'s'`
    Str,
    /// `true`, `false`
    Bool,
    /// `t'2016-06-01T01:30:00Z'`
    Timestamp,
    And,
    Or,
    Not,
    FollowedBy,
    Like,
    Matches,
    IsSuperset,
    IsSubset,
    Exists,
    /// Reserved by the grammar, used by no rule.
    Last,
    In,
    Start,
    Stop,
    Seconds,
    Within,
    Repeats,
    Times,
    /// `[a-zA-Z_][a-zA-Z0-9_]*`
    Ident,
    /// `[a-zA-Z_][a-zA-Z0-9_-]*` containing a hyphen (object types only).
    IdentHyphen,
    /// `=` or `==`
    Eq,
    /// `!=` or `<>`
    Neq,
    Lt,
    Le,
    Gt,
    Ge,
    /// A lone `'` (an unterminated string).
    Quote,
    Colon,
    Dot,
    Comma,
    RParen,
    LParen,
    RBrack,
    LBrack,
    Plus,
    Minus,
    Power,
    Divide,
    Asterisk,
    /// A character no rule accepts.
    Invalid,
    Eof,
}

impl TokenKind {
    /// How an error message names this kind of token.
    pub fn description(self) -> &'static str {
        use TokenKind::*;
        match self {
            IntNeg | IntPos => "an integer",
            FloatNeg | FloatPos => "a float",
            Hex => "a hex literal",
            Binary => "a binary literal",
            Str => "a string",
            Bool => "a boolean",
            Timestamp => "a timestamp",
            And | Or | Not | FollowedBy | Like | Matches | IsSuperset | IsSubset | Exists
            | Last | In | Start | Stop | Seconds | Within | Repeats | Times => "keyword",
            Ident | IdentHyphen => "identifier",
            Eq | Neq | Lt | Le | Gt | Ge => "operator",
            Quote => "unterminated string",
            Invalid => "invalid character",
            Eof => "end of pattern",
            _ => "symbol",
        }
    }
}

/// One token: its kind and where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Span,
}

/// Iterator over the tokens of a pattern; whitespace and comments are skipped.
#[derive(Clone, Debug)]
pub struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    done: bool,
    /// A search for `*/` already failed: later `/*` cannot be closed either (keeps lexing
    /// linear on inputs like `/*/*/*...`).
    no_comment_end: bool,
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Lexer<'a> {
        Lexer {
            src,
            pos: 0,
            done: false,
            no_comment_end: false,
        }
    }

    /// The next token; after the end, `Eof` forever.
    pub fn next_token(&mut self) -> Token {
        self.skip_trivia();
        let bytes = self.src.as_bytes();
        let start = self.pos;
        let Some(&c) = bytes.get(start) else {
            return Token {
                kind: TokenKind::Eof,
                span: Span::new(start, start),
            };
        };
        let (kind, len) = lex_at(self.src, start, c);
        self.pos = start + len;
        Token {
            kind,
            span: Span::new(start, start + len),
        }
    }

    /// Skip whitespace (the grammar's `WS` set), `/* */` and `//` comments.
    fn skip_trivia(&mut self) {
        let bytes = self.src.as_bytes();
        loop {
            let Some(&c) = bytes.get(self.pos) else {
                return;
            };
            match c {
                b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c => self.pos += 1,
                b'/' if bytes.get(self.pos + 1) == Some(&b'*') && !self.no_comment_end => {
                    // An unclosed `/*` is not a comment: ANTLR falls back to `/` then `*`.
                    match find(bytes, self.pos + 2, b"*/") {
                        Some(end) => self.pos = end + 2,
                        None => {
                            self.no_comment_end = true;
                            return;
                        }
                    }
                }
                b'/' if bytes.get(self.pos + 1) == Some(&b'/') => {
                    let mut p = self.pos + 2;
                    while p < bytes.len() && bytes[p] != b'\r' && bytes[p] != b'\n' {
                        p += 1;
                    }
                    self.pos = p;
                }
                c if c >= 0x80 => {
                    let ch = self.src[self.pos..].chars().next();
                    match ch {
                        Some(ch) if is_unicode_ws(ch) => self.pos += ch.len_utf8(),
                        _ => return,
                    }
                }
                _ => return,
            }
        }
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    /// Yields every token including one final `Eof`, then `None`.
    fn next(&mut self) -> Option<Token> {
        if self.done {
            return None;
        }
        let t = self.next_token();
        if t.kind == TokenKind::Eof {
            self.done = true;
        }
        Some(t)
    }
}

fn is_unicode_ws(ch: char) -> bool {
    matches!(
        ch,
        '\u{0085}' | '\u{00a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Lex one token at `start` (first byte `c`, not trivia): `(kind, length in bytes)`.
fn lex_at(src: &str, start: usize, c: u8) -> (TokenKind, usize) {
    use TokenKind::*;
    let b = &src.as_bytes()[start..];
    let at = |i: usize| b.get(i).copied();
    match c {
        b'-' => number(b, 1, true).unwrap_or((Minus, 1)),
        b'+' => number(b, 1, false).unwrap_or((Plus, 1)),
        b'0'..=b'9' | b'.' => number(b, 0, false).unwrap_or((Dot, 1)),
        b'\'' => match string_len(b) {
            Some(n) => (Str, n),
            None => (Quote, 1),
        },
        b'=' => (Eq, if at(1) == Some(b'=') { 2 } else { 1 }),
        b'!' if at(1) == Some(b'=') => (Neq, 2),
        b'<' => match at(1) {
            Some(b'=') => (Le, 2),
            Some(b'>') => (Neq, 2),
            _ => (Lt, 1),
        },
        b'>' => match at(1) {
            Some(b'=') => (Ge, 2),
            _ => (Gt, 1),
        },
        b':' => (Colon, 1),
        b',' => (Comma, 1),
        b'(' => (LParen, 1),
        b')' => (RParen, 1),
        b'[' => (LBrack, 1),
        b']' => (RBrack, 1),
        b'^' => (Power, 1),
        b'/' => (Divide, 1),
        b'*' => (Asterisk, 1),
        b'a'..=b'z' | b'A'..=b'Z' | b'_' => word(b),
        _ => {
            let n = src[start..].chars().next().map_or(1, char::len_utf8);
            (Invalid, n)
        }
    }
}

/// Numbers after an optional sign of `sign_len` bytes: the longest of the int and float rules.
/// `neg`: the sign is `-` (a negative int must have digits; `-` alone is `Minus`).
fn number(b: &[u8], sign_len: usize, neg: bool) -> Option<(TokenKind, usize)> {
    let digits = |from: usize| {
        b[from.min(b.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    // Int: '0' | [1-9][0-9]*
    let int_len = match b.get(sign_len) {
        Some(b'0') => Some(sign_len + 1),
        Some(b'1'..=b'9') => Some(sign_len + digits(sign_len)),
        _ => None,
    };
    // Float: [0-9]* '.' [0-9]+
    let lead = digits(sign_len);
    let float_len = if b.get(sign_len + lead) == Some(&b'.') {
        let frac = digits(sign_len + lead + 1);
        (frac > 0).then_some(sign_len + lead + 1 + frac)
    } else {
        None
    };
    let (int_kind, float_kind) = if neg {
        (TokenKind::IntNeg, TokenKind::FloatNeg)
    } else {
        (TokenKind::IntPos, TokenKind::FloatPos)
    };
    match (int_len, float_len) {
        (Some(i), Some(f)) if f > i => Some((float_kind, f)),
        (Some(i), _) => Some((int_kind, i)),
        (None, Some(f)) => Some((float_kind, f)),
        (None, None) => None,
    }
}

/// Length of a string literal starting at `b[0] == '\''`: only `\'` and `\\` escapes are legal.
fn string_len(b: &[u8]) -> Option<usize> {
    let mut i = 1;
    loop {
        match b.get(i)? {
            b'\'' => return Some(i + 1),
            b'\\' => match b.get(i + 1)? {
                b'\'' | b'\\' => i += 2,
                _ => return None,
            },
            _ => i += 1,
        }
    }
}

/// Identifiers, keywords, booleans and the prefixed literals `h'..'`, `b'..'`, `t'..'`.
fn word(b: &[u8]) -> (TokenKind, usize) {
    use TokenKind::*;
    if b.get(1) == Some(&b'\'') {
        let lit = match b[0] {
            b'h' => hex_len(b).map(|n| (Hex, n)),
            b'b' => binary_len(b).map(|n| (Binary, n)),
            b't' => timestamp_len(b).map(|n| (Timestamp, n)),
            _ => None,
        };
        if let Some(lit) = lit {
            return lit;
        }
    }
    let plain = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    let hyphen = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_' || **c == b'-')
        .count();
    if hyphen > plain {
        return (IdentHyphen, hyphen);
    }
    let kind = match &b[..plain] {
        b"true" | b"false" => Bool,
        b"AND" => And,
        b"OR" => Or,
        b"NOT" => Not,
        b"FOLLOWEDBY" => FollowedBy,
        b"LIKE" => Like,
        b"MATCHES" => Matches,
        b"ISSUPERSET" => IsSuperset,
        b"ISSUBSET" => IsSubset,
        b"EXISTS" => Exists,
        b"LAST" => Last,
        b"IN" => In,
        b"START" => Start,
        b"STOP" => Stop,
        b"SECONDS" => Seconds,
        b"WITHIN" => Within,
        b"REPEATS" => Repeats,
        b"TIMES" => Times,
        _ => Ident,
    };
    (kind, plain)
}

/// `h'` (HexDigit HexDigit)* `'`
fn hex_len(b: &[u8]) -> Option<usize> {
    let n = b[2..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
    (n % 2 == 0 && b.get(2 + n) == Some(&b'\'')).then_some(n + 3)
}

/// `b'` (B64{4})* (B64{4} | B64{3} '=' | B64{2} '==') `'`
fn binary_len(b: &[u8]) -> Option<usize> {
    let is_b64 = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    let n = b[2..].iter().take_while(|c| is_b64(c)).count();
    let pad = b[2 + n..].iter().take_while(|c| **c == b'=').count().min(2);
    let ok = match pad {
        0 => n >= 4 && n % 4 == 0,
        1 => n % 4 == 3,
        _ => n % 4 == 2,
    };
    (ok && b.get(2 + n + pad) == Some(&b'\'')).then_some(n + pad + 3)
}

/// `t'YYYY-MM-DDTHH:MM:SS(.f+)?Z'` with the grammar's per-field ranges (month 01-12, day 01-31,
/// hour 00-23, minute 00-59, second 00-60); like the validator, `2024-02-30` passes.
fn timestamp_len(b: &[u8]) -> Option<usize> {
    let d = |i: usize| b.get(i).filter(|c| c.is_ascii_digit()).map(|c| c - b'0');
    let lit = |i: usize, c: u8| b.get(i) == Some(&c);
    // t ' Y Y Y Y - M M - D D T h h : m m : s s
    // 0 1 2 3 4 5 6 7 8 9 ...
    for i in 2..6 {
        d(i)?;
    }
    if !lit(6, b'-') || !lit(9, b'-') || !lit(12, b'T') || !lit(15, b':') || !lit(18, b':') {
        return None;
    }
    let two = |i: usize| Some(d(i)? * 10 + d(i + 1)?);
    let (month, day, hour, min, sec) = (two(7)?, two(10)?, two(13)?, two(16)?, two(19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 21;
    if lit(i, b'.') {
        let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        i += 1 + n;
    }
    (lit(i, b'Z') && lit(i + 1, b'\'')).then_some(i + 2)
}

#[cfg(test)]
mod tests {
    use super::TokenKind::*;
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        Lexer::new(src).map(|t| t.kind).collect()
    }

    fn texts(src: &str) -> Vec<&str> {
        Lexer::new(src).map(|t| t.span.text(src)).collect()
    }

    #[test]
    fn simple_comparison() {
        let src = "[file:hashes.'SHA-256' = 'ab']";
        assert_eq!(
            kinds(src),
            [LBrack, Ident, Colon, Ident, Dot, Str, Eq, Str, RBrack, Eof]
        );
        assert_eq!(
            texts(src),
            [
                "[",
                "file",
                ":",
                "hashes",
                ".",
                "'SHA-256'",
                "=",
                "'ab'",
                "]",
                ""
            ]
        );
    }

    #[test]
    fn keywords_identifiers_and_hyphens() {
        assert_eq!(kinds("AND ANDROID and"), [And, Ident, Ident, Eof]);
        assert_eq!(
            kinds("AND-x true true_ false"),
            [IdentHyphen, Bool, Ident, Bool, Eof]
        );
        assert_eq!(kinds("win-registry-key"), [IdentHyphen, Eof]);
        assert_eq!(kinds("within"), [Ident, Eof]);
    }

    #[test]
    fn numbers() {
        assert_eq!(
            texts("1 -5 +3 .5 -0.25 007.5"),
            ["1", "-5", "+3", ".5", "-0.25", "007.5", ""]
        );
        assert_eq!(
            kinds("1 -5 +3 .5 -0.25"),
            [IntPos, IntNeg, IntPos, FloatPos, FloatNeg, Eof]
        );
        // `01` is two ints (no leading zeros), `1.` an int then a dot.
        assert_eq!(kinds("01"), [IntPos, IntPos, Eof]);
        assert_eq!(kinds("1."), [IntPos, Dot, Eof]);
        assert_eq!(kinds("- +"), [Minus, Plus, Eof]);
    }

    #[test]
    fn prefixed_literals() {
        assert_eq!(kinds("h'ffd8' h'abc'"), [Hex, Ident, Str, Eof]);
        assert_eq!(
            kinds("b'dGhpcyBpcyBhIHRlc3Q=' b'===='"),
            [Binary, Ident, Str, Eof]
        );
        assert_eq!(
            kinds("b'' b'YWJj' b'YQ=='"),
            [Ident, Str, Binary, Binary, Eof]
        );
        assert_eq!(kinds("t'2024-01-15T12:30:45.123Z'"), [Timestamp, Eof]);
        assert_eq!(kinds("t'2024-02-30T12:00:00Z'"), [Timestamp, Eof]);
        for bad in [
            "t'2024-13-01T12:00:00Z'",
            "t'2024-01-32T12:00:00Z'",
            "t'2024-01-15T24:00:00Z'",
            "t'2024-01-15T12:30:61Z'",
            "t'2024-01-15T12:30:45'",
            "t'2024-01-15T12:30:45.Z'",
        ] {
            assert_eq!(kinds(bad), [Ident, Str, Eof], "{bad}");
        }
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(kinds(r"'it\'s' 'a\\b'"), [Str, Str, Eof]);
        // `\n` is not a legal escape: no string, a lone quote.
        assert_eq!(kinds(r"'a\n'")[0], Quote);
        assert_eq!(kinds("'open"), [Quote, Ident, Eof]);
    }

    #[test]
    fn operators_comments_and_invalid() {
        assert_eq!(
            kinds("= == != <> < <= > >="),
            [Eq, Eq, Neq, Neq, Lt, Le, Gt, Ge, Eof]
        );
        assert_eq!(kinds("/* c */ a // rest\n b"), [Ident, Ident, Eof]);
        assert_eq!(kinds("/* open"), [Divide, Asterisk, Ident, Eof]);
        assert_eq!(kinds("/*/**/ a"), [Ident, Eof]);
        assert_eq!(
            kinds("/* a /* b"),
            [Divide, Asterisk, Ident, Divide, Asterisk, Ident, Eof]
        );
        // Many unclosed comment openers lex in linear time.
        assert_eq!(Lexer::new(&"/* ".repeat(50_000)).count(), 100_001);
        assert_eq!(kinds("? é !"), [Invalid, Invalid, Invalid, Eof]);
        assert_eq!(kinds("\u{3000}a\u{a0}"), [Ident, Eof]);
        assert_eq!(texts("é"), ["é", ""]);
    }
}
