//! YARA validation: the content of a `pattern_type: yara` indicator must be a self-contained YARA
//! source that HarfangLab can compile; we extract rule names (HarfangLab's `rule_names`) and the
//! `meta` ids (HarfangLab derives a YaraFile's identity from `meta: id`).
//!
//! Parsing is done by `yara-x-parser` (the parser of YARA-X, VirusTotal's YARA rewrite). On top
//! of its syntax checks we add the checks libyara's compiler makes that need no module data:
//!
//! - `include` is rejected: HarfangLab receives one file and has nothing to resolve it against;
//! - at least one rule; no two rules with the same name; no repeated tag on a rule; no two
//!   patterns with the same name in one rule (anonymous `$` patterns excepted);
//! - every named pattern is used by the condition (libyara: "unreferenced string");
//! - an identifier used directly as a boolean (`is__elf and $a`) must be a rule defined earlier
//!   in the file or a `for`/`with` variable (libyara: "undefined identifier"). This is the usual
//!   failure of rules copied out of a set whose private helper rules live in another file.
//!
//! Not checked (needs the engine's module and external definitions, which only HarfangLab knows):
//! module field names (`androguard.url`, `cuckoo.sync`), unknown modules, external variables,
//! types of expressions, regular-expression semantics. YARA-X-only syntax that libyara lacks
//! (`with`, `"""` strings) is accepted as the parser accepts it.
//!
//! Positions are 1-based lines and columns counted in characters.

use super::RuleError;
use serde::Serialize;
use std::collections::HashSet;
use yara_x_parser::ast::dfs::{DFSContext, DFSEvent, DFSIter};
use yara_x_parser::ast::{
    AST, Expr, Item, MetaValue, OfItems, PatternSet, Rule, RuleFlags, WithSpan,
};

/// What we extract from a YARA source file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct YaraMeta {
    /// Rule identifiers in source order.
    pub rule_names: Vec<String>,
    /// Values of `id` entries in the rules' `meta:` sections, in source order.
    pub meta_ids: Vec<String>,
}

/// One rule of a YARA file, for callers that need more than [`YaraMeta`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct YaraRule {
    pub name: String,
    pub tags: Vec<String>,
    pub private: bool,
    pub global: bool,
    /// Values of the rule's `meta` `id` entries (strings as written, integers in decimal).
    pub meta_ids: Vec<String>,
}

/// A parsed YARA file: imported modules and rules, both in source order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct YaraFile {
    pub imports: Vec<String>,
    pub rules: Vec<YaraRule>,
}

impl YaraFile {
    /// The summary `translate` and `sync` work with.
    pub fn meta(&self) -> YaraMeta {
        YaraMeta {
            rule_names: self.rules.iter().map(|r| r.name.clone()).collect(),
            meta_ids: self
                .rules
                .iter()
                .flat_map(|r| r.meta_ids.iter().cloned())
                .collect(),
        }
    }
}

/// Parse and validate one YARA source.
pub fn parse_yara(content: &str) -> Result<YaraMeta, RuleError> {
    parse_yara_file(content).map(|file| file.meta())
}

/// Parse and validate one YARA source, keeping per-rule details (tags, private/global flags).
pub fn parse_yara_file(content: &str) -> Result<YaraFile, RuleError> {
    // yara-x-parser is built to never panic, but it is third-party code handed untrusted input
    // from the stream: a panic here must become a rejected rule, not a dead worker.
    let ast = std::panic::catch_unwind(|| AST::from(content)).map_err(|_| RuleError {
        line: None,
        column: None,
        message: "the YARA parser failed on this input".to_string(),
    })?;
    if let Some(error) = ast.errors().first() {
        return Err(parser_error(content, error));
    }

    let mut file = YaraFile::default();
    let mut defined: HashSet<&str> = HashSet::new();
    for item in &ast.items {
        match item {
            Item::Import(import) => file.imports.push(import.module_name.to_string()),
            Item::Include(include) => {
                return Err(error_at(
                    content,
                    include.span().start(),
                    format!(
                        "`include \"{}\"` cannot be resolved: HarfangLab receives a single \
                         file, put the included rules in it",
                        include.file_name
                    ),
                ));
            }
            Item::Rule(rule) => {
                let name = rule.identifier.name;
                if defined.contains(name) {
                    return Err(error_at(
                        content,
                        rule.identifier.span().start(),
                        format!("duplicate rule name `{name}`"),
                    ));
                }
                check_tags(content, rule)?;
                check_patterns(content, rule)?;
                check_bare_identifiers(content, rule, &defined)?;
                defined.insert(name);
                file.rules.push(rule_info(rule));
            }
        }
    }
    if file.rules.is_empty() {
        return Err(RuleError {
            line: None,
            column: None,
            message: "no YARA rule in the content".to_string(),
        });
    }
    Ok(file)
}

fn rule_info(rule: &Rule<'_>) -> YaraRule {
    let meta_ids = rule
        .meta
        .iter()
        .flatten()
        .filter(|meta| meta.identifier.name == "id")
        .filter_map(|meta| match &meta.value {
            MetaValue::String((text, _)) => Some((*text).to_string()),
            MetaValue::Bytes((bytes, _)) => Some(bytes.to_string()),
            MetaValue::Integer((n, _)) => Some(n.to_string()),
            MetaValue::Float(_) | MetaValue::Bool(_) => None,
        })
        .collect();
    YaraRule {
        name: rule.identifier.name.to_string(),
        tags: rule
            .tags
            .iter()
            .flatten()
            .map(|tag| tag.name.to_string())
            .collect(),
        private: rule.flags.contains(RuleFlags::Private),
        global: rule.flags.contains(RuleFlags::Global),
        meta_ids,
    }
}

/// libyara: "duplicated tag identifier".
fn check_tags(content: &str, rule: &Rule<'_>) -> Result<(), RuleError> {
    let mut seen: HashSet<&str> = HashSet::new();
    for tag in rule.tags.iter().flatten() {
        if !seen.insert(tag.name) {
            return Err(error_at(
                content,
                tag.span().start(),
                format!(
                    "duplicate tag `{}` on rule `{}`",
                    tag.name, rule.identifier.name
                ),
            ));
        }
    }
    Ok(())
}

/// Duplicate and unreferenced patterns (libyara "duplicated string identifier",
/// "unreferenced string"). Anonymous `$` patterns are exempt from both.
fn check_patterns(content: &str, rule: &Rule<'_>) -> Result<(), RuleError> {
    let Some(patterns) = &rule.patterns else {
        return Ok(());
    };
    let mut seen: HashSet<&str> = HashSet::new();
    for pattern in patterns {
        let ident = pattern.identifier();
        if ident.name != "$" && !seen.insert(ident.name) {
            return Err(error_at(
                content,
                ident.span().start(),
                format!(
                    "duplicate pattern `{}` in rule `{}`",
                    ident.name, rule.identifier.name
                ),
            ));
        }
    }

    let uses = PatternUses::of(&rule.condition);
    if uses.them {
        return Ok(());
    }
    for pattern in patterns {
        let ident = pattern.identifier();
        if ident.name != "$" && !uses.covers(ident.name) {
            return Err(error_at(
                content,
                ident.span().start(),
                format!(
                    "pattern `{}` is not used in the condition of rule `{}`",
                    ident.name, rule.identifier.name
                ),
            ));
        }
    }
    Ok(())
}

/// How a condition refers to patterns: by name (without sigil), by prefix (`$a*`), or `them`.
#[derive(Default)]
struct PatternUses<'src> {
    names: HashSet<&'src str>,
    prefixes: Vec<&'src str>,
    them: bool,
}

impl<'src> PatternUses<'src> {
    fn of(condition: &'src Expr<'src>) -> Self {
        let mut uses = PatternUses::default();
        for event in DFSIter::new(condition) {
            let DFSEvent::Enter(expr) = event else {
                continue;
            };
            match expr {
                Expr::PatternMatch(m) => uses.name(m.identifier.name),
                Expr::PatternCount(p) => uses.name(p.identifier.name),
                Expr::PatternOffset(p) | Expr::PatternLength(p) => uses.name(p.identifier.name),
                Expr::Of(of) => {
                    if let OfItems::PatternSet(set) = &of.items {
                        uses.set(set);
                    }
                }
                Expr::ForOf(for_of) => uses.set(&for_of.pattern_set),
                _ => {}
            }
        }
        uses
    }

    /// `$a`, `#a`, `@a`, `!a` all name pattern `$a`.
    fn name(&mut self, ident: &'src str) {
        self.names.insert(ident.get(1..).unwrap_or(""));
    }

    fn set(&mut self, set: &PatternSet<'src>) {
        match set {
            PatternSet::Them { .. } => self.them = true,
            PatternSet::Set(items) => {
                for item in items {
                    let name = item.identifier.get(1..).unwrap_or("");
                    if item.wildcard {
                        self.prefixes.push(name);
                    } else {
                        self.names.insert(name);
                    }
                }
            }
        }
    }

    fn covers(&self, pattern: &str) -> bool {
        let name = pattern.get(1..).unwrap_or("");
        self.names.contains(name) || self.prefixes.iter().any(|p| name.starts_with(p))
    }
}

/// Identifiers used directly as booleans must be earlier rules or loop/`with` variables.
fn check_bare_identifiers(
    content: &str,
    rule: &Rule<'_>,
    defined: &HashSet<&str>,
) -> Result<(), RuleError> {
    let mut iter = DFSIter::new(&rule.condition);
    while let Some(event) = iter.next() {
        let DFSEvent::Enter(Expr::Ident(ident)) = event else {
            continue;
        };
        let boolean_position = iter.contexts().next().is_some_and(|ctx| {
            matches!(
                ctx,
                DFSContext::Root
                    | DFSContext::Body(_)
                    | DFSContext::Operand(Expr::And(_) | Expr::Or(_) | Expr::Not(_))
            )
        });
        if !boolean_position || defined.contains(ident.name) {
            continue;
        }
        let in_scope = iter.contexts().any(|ctx| {
            let scope = match ctx {
                DFSContext::Body(e)
                | DFSContext::Items(e)
                | DFSContext::WithDeclaration(e)
                | DFSContext::Operand(e)
                | DFSContext::Index(e)
                | DFSContext::FuncArg(e)
                | DFSContext::Range(e)
                | DFSContext::Anchor(e)
                | DFSContext::Quantifier(e)
                | DFSContext::FuncSelf(e) => e,
                DFSContext::Root => return false,
            };
            match scope {
                Expr::ForIn(f) => f.variables.iter().any(|v| v.name == ident.name),
                Expr::With(w) => w
                    .declarations
                    .iter()
                    .any(|d| d.identifier.name == ident.name),
                _ => false,
            }
        });
        if !in_scope {
            return Err(error_at(
                content,
                ident.span().start(),
                format!(
                    "`{}` in rule `{}` is not a rule defined earlier in this content \
                     (HarfangLab compiles the file alone)",
                    ident.name, rule.identifier.name
                ),
            ));
        }
    }
    Ok(())
}

fn parser_error(content: &str, error: &yara_x_parser::ast::Error) -> RuleError {
    use yara_x_parser::ast::Error as E;
    let (span, message) = match error {
        E::SyntaxError { message, span } => (span, format!("syntax error: {message}")),
        E::InvalidInteger { message, span }
        | E::InvalidFloat { message, span }
        | E::InvalidRegexpModifier { message, span }
        | E::InvalidEscapeSequence { message, span } => (span, message.clone()),
        E::InvalidUTF8(span) => (span, "invalid UTF-8".to_string()),
        E::UnexpectedEscapeSequence(span) => (
            span,
            "escape sequences are not allowed in this string".to_string(),
        ),
    };
    error_at(content, span.start(), message)
}

/// A [`RuleError`] at byte `offset` of `content`, as a 1-based line and character column.
fn error_at(content: &str, offset: usize, message: String) -> RuleError {
    let (line, column) = line_column(content, offset);
    RuleError {
        line: Some(line),
        column: Some(column),
        message,
    }
}

fn line_column(content: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(content.len());
    while !content.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &content[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(content: &str) -> RuleError {
        match parse_yara(content) {
            Ok(meta) => panic!("accepted: {meta:?}"),
            Err(e) => e,
        }
    }

    const FILE: &str = r#"
import "pe"

// a comment with rule fake { condition: true }
private rule is_pe {
    condition:
        uint16(0) == 0x5A4D
}

global rule small : ignore {
    condition: filesize < 10MB
}

rule Evil_Thing : apt malware {
    meta:
        author = "someone"
        id = "2f17fbcc-ed10-40ea-a3a9-92ecdc32ce6f"
        score = 80
    strings:
        $text = "evil\x00string" wide ascii
        $hex = { 4D 5A [2-4] ( 90 | 91 ) ?? }
        $re = /evil[0-9]{2,}/ nocase
        $ = "anonymous"
    condition:
        is_pe and (2 of ($text, $re*) or #hex > 1) and not $
}

/* rule commented_out { condition: true } */
rule second { meta: id = 42 condition: for any i in (1..2) : ( i == 1 ) }
"#;

    #[test]
    fn extracts_names_ids_tags_and_flags_in_source_order() {
        let file = parse_yara_file(FILE).unwrap();
        assert_eq!(file.imports, ["pe"]);
        let names: Vec<_> = file.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["is_pe", "small", "Evil_Thing", "second"]);
        assert!(file.rules[0].private && !file.rules[0].global);
        assert!(file.rules[1].global && !file.rules[1].private);
        assert_eq!(file.rules[1].tags, ["ignore"]);
        assert_eq!(file.rules[2].tags, ["apt", "malware"]);
        assert_eq!(
            parse_yara(FILE).unwrap(),
            YaraMeta {
                rule_names: names.iter().map(|n| n.to_string()).collect(),
                meta_ids: vec![
                    "2f17fbcc-ed10-40ea-a3a9-92ecdc32ce6f".to_string(),
                    "42".to_string()
                ],
            }
        );
    }

    #[test]
    fn syntax_errors_have_one_based_positions() {
        let e = error("rule a {\n  condition:\n    true and\n}\n");
        assert_eq!((e.line, e.column), (Some(4), Some(1)), "{e}");
        assert!(e.message.starts_with("syntax error: "), "{e}");

        let e = error("rule a { strings: $a = \"x\" condition: $a }\nrule b { condition: }");
        assert_eq!((e.line, e.column), (Some(2), Some(21)), "{e}");

        // Columns count characters: the error follows a two-byte character.
        let e = error("rule a { meta: x = \"é\" condition: @@ }");
        assert_eq!((e.line, e.column), (Some(1), Some(36)), "{e}");

        let e = error("rule a { strings: $a = \"\\q\" condition: $a }");
        assert_eq!(e.line, Some(1));
        assert!(e.message.contains("escape"), "{e}");
    }

    #[test]
    fn include_is_rejected_at_its_position() {
        let e = error("include \"other.yar\"\nrule a { condition: true }");
        assert_eq!((e.line, e.column), (Some(1), Some(1)));
        assert!(
            e.message
                .starts_with("`include \"other.yar\"` cannot be resolved")
        );
    }

    #[test]
    fn duplicates_unused_patterns_and_undefined_rules_are_rejected() {
        let e = error("rule a { condition: true }\n\nrule a { condition: false }");
        assert_eq!(
            (e.line, e.column, e.message.as_str()),
            (Some(3), Some(6), "duplicate rule name `a`")
        );

        let e = error("rule a : t1 t2 t1 { condition: true }");
        assert_eq!((e.line, e.column), (Some(1), Some(16)));
        assert_eq!(e.message, "duplicate tag `t1` on rule `a`");

        let e = error("rule a {\n strings:\n  $x = \"1\"\n  $x = \"2\"\n condition: $x }");
        assert_eq!((e.line, e.column), (Some(4), Some(3)));
        assert_eq!(e.message, "duplicate pattern `$x` in rule `a`");

        let e = error("rule a {\n strings:\n  $x = \"1\"\n  $y = \"2\"\n condition: $x }");
        assert_eq!((e.line, e.column), (Some(4), Some(3)));
        assert_eq!(
            e.message,
            "pattern `$y` is not used in the condition of rule `a`"
        );

        // Uses through counts, offsets, wildcards and `them` all count.
        for condition in [
            "#y > 0 and $x",
            "@y[1] == !x[1]",
            "any of ($x, $y*)",
            "all of them",
        ] {
            let src = format!(
                "rule a {{ strings: $x = \"1\" $yy = \"2\" $y = \"3\" condition: {condition} }}"
            );
            let verdict = parse_yara(&src);
            let uses_all = condition.contains("them") || condition.contains("$y*");
            assert_eq!(verdict.is_ok(), uses_all, "{condition}: {verdict:?}");
        }

        let e = error("rule b {\n condition:\n  is__elf and filesize < 10\n}");
        assert_eq!((e.line, e.column), (Some(3), Some(3)));
        assert!(
            e.message
                .starts_with("`is__elf` in rule `b` is not a rule defined earlier")
        );
        // A rule defined later does not count (YARA resolves in source order).
        assert!(parse_yara("rule b { condition: a }\nrule a { condition: true }").is_err());
        // Loop and `with` variables are in scope; module fields are not checked.
        assert!(parse_yara("rule c { condition: with big = filesize : ( big ) }").is_ok());
        assert!(parse_yara("rule c { condition: for any x in (1, 2) : ( x == 1 ) }").is_ok());
        assert!(
            parse_yara(
                "import \"pe\"\nrule d { condition: pe.is_dll() and pe.number_of_sections > 1 }"
            )
            .is_ok()
        );
    }

    #[test]
    fn empty_content_is_rejected() {
        assert_eq!(error("").message, "no YARA rule in the content");
        assert_eq!(
            error("import \"pe\"\n// nothing\n").message,
            "no YARA rule in the content"
        );
    }

    #[test]
    fn hostile_input_does_not_panic() {
        let deep = format!(
            "rule a {{ condition: {}true{} }}",
            "(".repeat(5_000),
            ")".repeat(5_000)
        );
        let _ = parse_yara(&deep);
        for input in [
            "rule",
            "rule {",
            "\u{0}",
            "rule a { strings: $a = { 4",
            "/*",
            "rule a { condition: \"\\",
        ] {
            assert!(parse_yara(input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 1), (1, 1));
        assert_eq!(line_column("x", 99), (1, 2));
    }
}
