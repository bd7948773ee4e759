//! Translation: one OpenCTI indicator → the HarfangLab objects it should produce. Pure, no I/O.
//!
//! The types below are the contract used by `opencti::events` (which builds an [`Indicator`] and
//! its [`FormerState`] from a stream event), `sync` and `pipeline`. This module owns the meaning
//! of a STIX pattern for HarfangLab: which comparisons become IOC rules and which are skipped
//! (always with a readable reason, never sent). The policy, in the order it is applied to each
//! comparison:
//!
//! 1. Only these paths map to IOC types: `domain-name:value` and `hostname:value` →
//!    `domain_name`; `ipv4-addr:value`, `ipv6-addr:value` → `ip_both`; `url:value` → `url`;
//!    `file:name` → `filename`; `file:hashes.<MD5|SHA-1|SHA-256|SHA-512>` (any spelling:
//!    `MD5`, `'SHA-1'`, `SHA256`, `sha256`, ...) → `hash`. Everything else is skipped: other
//!    objects and properties, reference paths (`network-traffic:dst_ref.value`: the value
//!    belongs to another object), other hash algorithms (SSDEEP, TLSH, SHA3-...).
//! 2. An observation inside a `FOLLOWEDBY` sequence, or under a `WITHIN` / `REPEATS` /
//!    `START ... STOP` qualifier (on itself or an enclosing group), is skipped: an IOC fires on
//!    any single sighting and cannot express order, counts or time windows.
//! 3. Negated comparisons (`NOT ...`, `!=`) are skipped: they describe what must *not* be seen.
//!    (`NOT !=` is a double negation and counts as `=`.)
//! 4. Only exact matches become IOCs: `=`, and `IN (...)` (one IOC per member). `LIKE`,
//!    `MATCHES`, `<`, `ISSUBSET`, `EXISTS`, ... are skipped.
//! 5. Inside one observation, `AND` narrows: `[file:name = 'x' AND file:hashes.MD5 = 'y']` is one
//!    file, so only the hash is emitted and the name is skipped (a name IOC would fire on every
//!    file called `x`). Other supported comparisons joined by `AND` — including ones on
//!    different object types, such as `[ipv4-addr:value = 'a' AND domain-name:value = 'b']` —
//!    are each emitted: each is a value the indicator names as malicious, and HarfangLab cannot
//!    express the conjunction (this is what OpenCTI's own observable extraction does).
//!    `OR` and several observations (`[..] AND [..]`, `[..] OR [..]`) give several IOCs.
//! 6. Values are normalised as HarfangLab stores them; invalid ones are skipped with the
//!    reason: hashes lower-case hex of the algorithm's length; IPs canonical (`std::net`), a
//!    `/32` or `/128` is the host, wider CIDR ranges are skipped; domains lower-case without a
//!    trailing dot, checked label by label (IP addresses, defanged or non-ASCII values are
//!    refused); URLs trimmed, with or without a scheme (defanged `hxxp://` refused); file names
//!    non-empty.
//!
//! The grammar alone decides whether a pattern can be translated ([`crate::stix::parse_syntax`]):
//! a value the reference validator would reject (a malformed hash) is skipped by rule 6 rather
//! than failing the whole indicator.

use crate::rules::RuleError;
use crate::rules::sigma::SigmaMeta;
use crate::rules::yara::YaraMeta;
use crate::stix::{
    BoolOp, Comparison, ComparisonExpr, ComparisonOp, Literal, ObjectPath, ObservationExpr,
    ObservationOp, PathStep, PatternError, Value, parse_syntax,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// HarfangLab's limit on rule names (Swagger: `name` maxLength 100).
pub const HARFANGLAB_NAME_MAX: usize = 100;

/// IOC rule types this connector emits (HarfangLab `IOCRule.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IocType {
    DomainName,
    IpBoth,
    Url,
    Filename,
    Hash,
}

impl IocType {
    /// The type named by HarfangLab's `type` field, when it is one this connector writes.
    pub fn parse(name: &str) -> Option<IocType> {
        [
            IocType::DomainName,
            IocType::IpBoth,
            IocType::Url,
            IocType::Filename,
            IocType::Hash,
        ]
        .into_iter()
        .find(|t| t.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IocType::DomainName => "domain_name",
            IocType::IpBoth => "ip_both",
            IocType::Url => "url",
            IocType::Filename => "filename",
            IocType::Hash => "hash",
        }
    }
}

/// One IOC as HarfangLab identifies it inside a source list: (type, normalised value).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IocKey {
    #[serde(rename = "type")]
    pub ioc_type: IocType,
    pub value: String,
}

/// Something in an indicator that was deliberately not turned into a HarfangLab object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Where it came from: an object path (`ipv4-addr:value`) or `observable:<entity type>`.
    pub path: String,
    pub value: String,
    pub reason: String,
}

/// An observable linked to the indicator by a `based-on` relationship (GraphQL `observables`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedObservable {
    pub entity_type: String,
    pub value: String,
    /// OpenCTI internal id (GraphQL `id`), when known: identifies the observable, since two
    /// linked observables may map to the same IOC (a `Domain-Name` and a `Hostname` "x.com").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// STIX standard id (GraphQL `standard_id`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_id: Option<String>,
}

/// The indicator as translation sees it (built from the GraphQL read or the stream payload).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Indicator {
    /// Stable identity used to hold IOCs: the OpenCTI internal id when known, else the STIX id.
    pub id: String,
    /// STIX standard id (`indicator--...`), may change when the pattern changes.
    pub standard_id: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub pattern_type: String,
    pub pattern: String,
    pub score: Option<i64>,
    pub platforms: Vec<String>,
    pub revoked: bool,
    pub observables: Vec<LinkedObservable>,
}

/// What an indicator was before the change an event reports, so that `sync` releases what it
/// no longer wants and still finds what it holds. Built once, when the event is decoded
/// (`opencti::events`, from an update's `reverse_patch`); every field is empty when nothing of
/// it changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FormerState {
    /// The former name, when the change renamed the indicator (a Sigma rule / Yara file is still
    /// found by it).
    pub name: Option<String>,
    /// The former pattern type, when the change replaced it: what the former type produced (an
    /// old Sigma rule after a switch to STIX, ...) is released.
    pub pattern_type: Option<String>,
    /// The former pattern, when the change replaced it.
    pub pattern: Option<String>,
    /// IOCs the indicator wanted before: the former STIX pattern's and the former observable
    /// values'. `None`: unchanged or unknown (a warning is logged when `ids` shows the pattern
    /// changed).
    pub iocs: Option<Vec<IocKey>>,
    /// Other ids the indicator's holder entry may be recorded under: the former STIX standard id
    /// (it changes with the pattern) and the older ones the platform keeps (`stix_ids`).
    pub ids: Vec<String>,
}

/// A Sigma rule ready to send: validated metadata, name (≤ 100 chars) and content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SigmaSpec {
    pub meta: SigmaMeta,
    pub name: String,
    pub content: String,
}

/// A YARA file ready to send: validated metadata, name (≤ 100 chars) and content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct YaraSpec {
    pub meta: YaraMeta,
    pub name: String,
    pub content: String,
}

/// Everything one indicator should produce in HarfangLab.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Translation {
    /// Deduplicated and sorted.
    pub iocs: Vec<IocKey>,
    pub sigma: Option<SigmaSpec>,
    pub yara: Option<YaraSpec>,
    pub skipped: Vec<Skipped>,
}

/// Why an indicator cannot be translated at all (the event is recorded as failed).
#[derive(Clone, Debug, PartialEq)]
pub enum TranslateError {
    /// The STIX pattern does not parse; Display names the byte position.
    Pattern(PatternError),
    Sigma(RuleError),
    Yara(RuleError),
    /// `pattern_type` is not stix, sigma or yara (e.g. snort, suricata): the pipeline records
    /// the event as skipped, not failed (see [`TranslateError::is_unsupported`]).
    UnsupportedPatternType(String),
}

impl TranslateError {
    /// True when the indicator is of a kind this connector does not handle (skip and record),
    /// false when it is handled but broken (record as failed).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, TranslateError::UnsupportedPatternType(_))
    }

    /// How `translate` lists an indicator that is skipped as a whole (an unsupported pattern
    /// type): path `pattern_type`, its value, and this error as the reason (the one `run`
    /// records).
    pub fn skipped_indicator(&self, indicator: &Indicator) -> Skipped {
        Skipped {
            path: "pattern_type".to_owned(),
            value: indicator.pattern_type.clone(),
            reason: self.to_string(),
        }
    }
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TranslateError::Pattern(e) => write!(f, "invalid STIX pattern: {e}"),
            TranslateError::Sigma(e) => write!(f, "invalid Sigma rule: {e}"),
            TranslateError::Yara(e) => write!(f, "invalid YARA rule: {e}"),
            TranslateError::UnsupportedPatternType(t) => {
                write!(f, "pattern_type {t:?} is not handled (stix, sigma, yara)")
            }
        }
    }
}

impl std::error::Error for TranslateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TranslateError::Pattern(e) => Some(e),
            TranslateError::Sigma(e) | TranslateError::Yara(e) => Some(e),
            TranslateError::UnsupportedPatternType(_) => None,
        }
    }
}

/// Translate one indicator: pattern IOCs (stix) or the rule (sigma / yara); a stix indicator
/// also gets the IOCs of its linked observables, merged by (type, value). `pattern_type` is matched case-insensitively;
/// an empty one means stix. Revocation and scores are the pipeline's business, not ours.
pub fn translate(indicator: &Indicator) -> Result<Translation, TranslateError> {
    let mut out = Translation::default();
    let name = || {
        if indicator.name.trim().is_empty() {
            None
        } else {
            Some(truncate_name(&indicator.name))
        }
    };
    match indicator.pattern_type.trim().to_ascii_lowercase().as_str() {
        "stix" | "" => {
            let (iocs, skipped) = stix_iocs(&indicator.pattern)?;
            out.iocs = iocs;
            out.skipped = skipped;
        }
        "sigma" => {
            let meta = crate::rules::sigma::parse_sigma(&indicator.pattern)
                .map_err(TranslateError::Sigma)?;
            // An unnamed indicator still needs a rule name: fall back to the rule's title.
            let name = name().unwrap_or_else(|| truncate_name(&meta.title));
            out.sigma = Some(SigmaSpec {
                meta,
                name,
                content: indicator.pattern.clone(),
            });
        }
        "yara" => {
            let meta =
                crate::rules::yara::parse_yara(&indicator.pattern).map_err(TranslateError::Yara)?;
            let name = name()
                .or_else(|| meta.rule_names.first().map(|n| truncate_name(n)))
                .unwrap_or_default();
            out.yara = Some(YaraSpec {
                meta,
                name,
                content: indicator.pattern.clone(),
            });
        }
        _ => {
            return Err(TranslateError::UnsupportedPatternType(
                indicator.pattern_type.clone(),
            ));
        }
    }
    // Issue 7: linked observables count for stix indicators only (a Sigma/Yara indicator's
    // observables are context for the rule, not IOCs of their own).
    let is_stix = matches!(
        indicator.pattern_type.trim().to_ascii_lowercase().as_str(),
        "stix" | ""
    );
    for obs in indicator.observables.iter().filter(|_| is_stix) {
        match observable_ioc(&obs.entity_type, &obs.value) {
            Ok(key) => out.iocs.push(key),
            Err(reason) => out.skipped.push(Skipped {
                path: format!("observable:{}", obs.entity_type),
                value: obs.value.clone(),
                reason,
            }),
        }
    }
    out.iocs.sort();
    out.iocs.dedup();
    Ok(out)
}

/// IOCs of a STIX pattern alone (used to diff a former pattern against the new one):
/// deduplicated and sorted keys, and the skipped comparisons in pattern order.
pub fn stix_iocs(pattern: &str) -> Result<(Vec<IocKey>, Vec<Skipped>), TranslateError> {
    let parsed = parse_syntax(pattern).map_err(TranslateError::Pattern)?;
    let mut acc = Acc::default();
    walk_observation(&parsed.expr, &ObsContext::default(), &mut acc);
    acc.iocs.sort();
    acc.iocs.dedup();
    Ok((acc.iocs, acc.skipped))
}

/// The IOC for an observable linked by `based-on`, or the reason it is skipped.
///
/// `Domain-Name`/`Hostname` → domain_name, `IPv4-Addr`/`IPv6-Addr` → ip_both, `Url` → url,
/// `StixFile`/`File` → hash when the value is MD5/SHA-1/SHA-256/SHA-512 hex (OpenCTI shows a
/// file by a hash when it has one), else filename; `Artifact` → hash only (its other
/// representative values are URLs or payloads, not names). Other types have no IOC type.
pub fn observable_ioc(entity_type: &str, value: &str) -> Result<IocKey, String> {
    let key = |ioc_type, value| IocKey { ioc_type, value };
    match entity_type.to_ascii_lowercase().as_str() {
        "domain-name" | "hostname" => normalise_domain(value).map(|v| key(IocType::DomainName, v)),
        "ipv4-addr" | "ipv6-addr" => normalise_ip(value).map(|v| key(IocType::IpBoth, v)),
        "url" => normalise_url(value).map(|v| key(IocType::Url, v)),
        "stixfile" | "file" => match normalise_hash(value, None) {
            Ok(h) => Ok(key(IocType::Hash, h)),
            Err(_) => normalise_filename(value).map(|v| key(IocType::Filename, v.to_string())),
        },
        "artifact" => normalise_hash(value, None)
            .map(|h| key(IocType::Hash, h))
            .map_err(|e| format!("Artifact value is not a file hash: {e}")),
        _ => Err(format!(
            "observable type {entity_type} has no HarfangLab IOC type"
        )),
    }
}

/// The key an IOC rule's stored `type` and `value` stand for, normalised exactly as this
/// connector normalises what it sends (case-folded domains and hashes, canonical IPs, ...), so a
/// rule written with other casing (the Python connector) is known as the same IOC. `None`: a
/// type this connector does not write, or a value it would refuse.
pub fn normalised_key(ioc_type: &str, value: &str) -> Option<IocKey> {
    let ioc_type = IocType::parse(ioc_type)?;
    let value = match ioc_type {
        IocType::DomainName => normalise_domain(value),
        IocType::IpBoth => normalise_ip(value),
        IocType::Url => normalise_url(value),
        IocType::Filename => normalise_filename(value).map(str::to_owned),
        IocType::Hash => normalise_hash(value, None),
    }
    .ok()?;
    Some(IocKey { ioc_type, value })
}

/// The IOC one value would give on `path` with `=`, ignoring the pattern's structure:
/// `None` when the path is not mapped, else the key or why the value is refused.
/// (Exposed for invariant tests over real patterns, so only with `testkit`.)
#[cfg(any(test, feature = "testkit"))]
pub fn path_value_ioc(path: &ObjectPath<'_>, value: &str) -> Option<Result<IocKey, String>> {
    let target = classify(path).ok()?;
    Some(target_ioc(target, value))
}

/// Hash algorithms HarfangLab `hash` IOCs take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HashAlgo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgo {
    fn hex_len(self) -> usize {
        match self {
            HashAlgo::Md5 => 32,
            HashAlgo::Sha1 => 40,
            HashAlgo::Sha256 => 64,
            HashAlgo::Sha512 => 128,
        }
    }

    fn name(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "MD5",
            HashAlgo::Sha1 => "SHA-1",
            HashAlgo::Sha256 => "SHA-256",
            HashAlgo::Sha512 => "SHA-512",
        }
    }
}

/// What a supported object path becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Domain,
    Ip,
    Url,
    Filename,
    Hash(HashAlgo),
}

/// Map an object path to an IOC target, or say why it has none.
fn classify(path: &ObjectPath<'_>) -> Result<Target, String> {
    let ty = path.object_type.to_ascii_lowercase();
    let keys: Vec<Option<&str>> = path.steps.iter().map(PathStep::key).collect();
    let is = |k: &str| keys.len() == 1 && keys[0].is_some_and(|s| s.eq_ignore_ascii_case(k));
    match ty.as_str() {
        "domain-name" | "hostname" if is("value") => return Ok(Target::Domain),
        "ipv4-addr" | "ipv6-addr" if is("value") => return Ok(Target::Ip),
        "url" if is("value") => return Ok(Target::Url),
        "file" if is("name") => return Ok(Target::Filename),
        "file" if keys.len() == 2 && keys[0].is_some_and(|k| k.eq_ignore_ascii_case("hashes")) => {
            let Some(algo) = keys[1] else {
                return Err("hash selected by index, not by algorithm name".to_string());
            };
            let norm: String = algo
                .chars()
                .filter(|c| !matches!(c, '-' | '_' | ' ' | '\''))
                .collect::<String>()
                .to_ascii_uppercase();
            return match norm.as_str() {
                "MD5" => Ok(Target::Hash(HashAlgo::Md5)),
                "SHA1" => Ok(Target::Hash(HashAlgo::Sha1)),
                "SHA256" => Ok(Target::Hash(HashAlgo::Sha256)),
                "SHA512" => Ok(Target::Hash(HashAlgo::Sha512)),
                _ => Err(format!(
                    "hash algorithm {algo} is not taken by HarfangLab (MD5, SHA-1, SHA-256, SHA-512)"
                )),
            };
        }
        _ => {}
    }
    if path.is_reference() {
        Err(
            "reference path: the value belongs to a referenced object; not mapped to an IOC type"
                .to_string(),
        )
    } else {
        Err("object path not mapped to a HarfangLab IOC type".to_string())
    }
}

fn target_ioc(target: Target, value: &str) -> Result<IocKey, String> {
    let (ioc_type, value) = match target {
        Target::Domain => (IocType::DomainName, normalise_domain(value)?),
        Target::Ip => (IocType::IpBoth, normalise_ip(value)?),
        Target::Url => (IocType::Url, normalise_url(value)?),
        Target::Filename => (IocType::Filename, normalise_filename(value)?.to_string()),
        Target::Hash(algo) => (IocType::Hash, normalise_hash(value, Some(algo))?),
    };
    Ok(IocKey { ioc_type, value })
}

/// Lower-case hex of the algorithm's length (`algo` None: any of 32/40/64/128 digits).
fn normalise_hash(value: &str, algo: Option<HashAlgo>) -> Result<String, String> {
    let v = value.trim();
    if v.is_empty() {
        return Err("empty hash value".to_string());
    }
    if !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("hash value is not hexadecimal".to_string());
    }
    match algo {
        Some(a) if v.len() != a.hex_len() => {
            return Err(format!(
                "{} hex digits, but {} has {}",
                v.len(),
                a.name(),
                a.hex_len()
            ));
        }
        None if ![32, 40, 64, 128].contains(&v.len()) => {
            return Err(format!(
                "{} hex digits is not an MD5, SHA-1, SHA-256 or SHA-512 length",
                v.len()
            ));
        }
        _ => {}
    }
    Ok(v.to_ascii_lowercase())
}

/// One host address in canonical form; `/32` and `/128` are hosts, wider ranges are refused.
fn normalise_ip(value: &str) -> Result<String, String> {
    let v = value.trim();
    let (addr, prefix) = match v.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (v, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 or IPv6 address"))?;
    if let Some(p) = prefix {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match p.parse::<u8>() {
            Ok(n) if n == max => {}
            Ok(n) if n < max => {
                return Err(format!(
                    "CIDR range /{n} is not a single host (ip_both IOCs are single addresses)"
                ));
            }
            _ => return Err(format!("invalid CIDR prefix /{p}")),
        }
    }
    Ok(ip.to_string())
}

/// Lower-case ASCII domain without a trailing dot, each label 1-63 of `[a-z0-9_-]`.
fn normalise_domain(value: &str) -> Result<String, String> {
    let v = value.trim();
    let v = v.strip_suffix('.').unwrap_or(v).to_ascii_lowercase();
    if v.is_empty() {
        return Err("empty domain name".to_string());
    }
    if !v.is_ascii() {
        return Err(
            "non-ASCII domain name: internationalised names must be in punycode (xn--)".to_string(),
        );
    }
    if v.parse::<IpAddr>().is_ok() {
        return Err("an IP address, not a domain name".to_string());
    }
    if v.len() > 253 {
        return Err(format!(
            "domain name is {} characters long (max 253)",
            v.len()
        ));
    }
    for label in v.split('.') {
        if label.is_empty() {
            return Err("empty label in domain name".to_string());
        }
        if label.len() > 63 {
            return Err(format!("label of {} characters (max 63)", label.len()));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("invalid character {c:?} in domain name"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("domain label starts or ends with a hyphen".to_string());
        }
    }
    Ok(v)
}

/// Trimmed URL. Real feeds often omit the scheme (`pastebin.com/raw/x`, 42% of the corpus's
/// `url:value`s): HarfangLab matches URLs as written, so a scheme-less URL is kept as is. A
/// scheme, when present, must be well formed; defanged schemes and inner spaces are refused.
fn normalise_url(value: &str) -> Result<String, String> {
    let v = value.trim();
    if v.is_empty() {
        return Err("empty URL".to_string());
    }
    if v.chars().any(char::is_control) {
        return Err("URL contains control characters".to_string());
    }
    if v.chars().any(char::is_whitespace) {
        return Err("URL contains white space".to_string());
    }
    let Some((scheme, rest)) = v.split_once("://") else {
        return Ok(v.to_string());
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(format!("invalid URL scheme {scheme:?}"));
    }
    if ["hxxp", "hxxps", "fxp"].contains(&scheme.to_ascii_lowercase().as_str()) {
        return Err(format!("defanged URL ({scheme}://)"));
    }
    if rest.is_empty() {
        return Err("URL has nothing after the scheme".to_string());
    }
    Ok(v.to_string())
}

/// A file name is kept as written; it only has to be non-blank and free of control characters.
fn normalise_filename(value: &str) -> Result<&str, String> {
    if value.trim().is_empty() {
        return Err("empty file name".to_string());
    }
    if value.chars().any(char::is_control) {
        return Err("file name contains control characters".to_string());
    }
    Ok(value)
}

#[derive(Default)]
struct Acc {
    iocs: Vec<IocKey>,
    skipped: Vec<Skipped>,
}

/// What the enclosing observation expressions impose on a `[...]`.
#[derive(Clone, Default)]
struct ObsContext {
    followed_by: bool,
    /// Qualifiers on the observation or an enclosing group, as written.
    qualifiers: Vec<String>,
}

fn walk_observation(e: &ObservationExpr<'_>, ctx: &ObsContext, acc: &mut Acc) {
    let with = |qualifiers: &[crate::stix::Qualifier<'_>]| {
        let mut c = ctx.clone();
        c.qualifiers
            .extend(qualifiers.iter().map(|q| q.to_string()));
        c
    };
    match e {
        ObservationExpr::Simple {
            comparison,
            qualifiers,
            ..
        } => walk_comparison(comparison, &with(qualifiers), false, acc),
        ObservationExpr::Group { inner, qualifiers } => {
            walk_observation(inner, &with(qualifiers), acc)
        }
        ObservationExpr::Compound { op, operands } => {
            let mut c = ctx.clone();
            c.followed_by |= *op == ObservationOp::FollowedBy;
            for o in operands {
                walk_observation(o, &c, acc);
            }
        }
    }
}

/// `anded_with_hash`: some `AND` above this node also requires a file hash.
fn walk_comparison(e: &ComparisonExpr<'_>, ctx: &ObsContext, anded_with_hash: bool, acc: &mut Acc) {
    match e {
        ComparisonExpr::Comparison(c) => comparison(c, ctx, anded_with_hash, acc),
        ComparisonExpr::Compound {
            op: BoolOp::Or,
            operands,
        } => {
            for o in operands {
                walk_comparison(o, ctx, anded_with_hash, acc);
            }
        }
        ComparisonExpr::Compound {
            op: BoolOp::And,
            operands,
        } => {
            let hashes: Vec<bool> = operands.iter().map(has_file_hash).collect();
            for (i, o) in operands.iter().enumerate() {
                let sibling_hash = hashes.iter().enumerate().any(|(j, h)| *h && j != i);
                walk_comparison(o, ctx, anded_with_hash || sibling_hash, acc);
            }
        }
    }
}

/// The subtree contains a positive exact comparison on a supported file hash.
fn has_file_hash(e: &ComparisonExpr<'_>) -> bool {
    match e {
        ComparisonExpr::Comparison(c) => {
            exact(c) && matches!(classify(&c.path), Ok(Target::Hash(_)))
        }
        ComparisonExpr::Compound { operands, .. } => operands.iter().any(has_file_hash),
    }
}

/// `=`, `IN` or `NOT !=`: an exact, positive match.
fn exact(c: &Comparison<'_>) -> bool {
    match c.op {
        ComparisonOp::Eq | ComparisonOp::In => !c.negated,
        ComparisonOp::Neq => c.negated,
        _ => false,
    }
}

fn comparison(c: &Comparison<'_>, ctx: &ObsContext, anded_with_hash: bool, acc: &mut Acc) {
    let values: Vec<&Literal<'_>> = match &c.value {
        Value::Literal(l) => vec![l],
        Value::Set(items) => items.iter().collect(),
        Value::None => Vec::new(),
    };
    // Rendered only when something is skipped: most comparisons become IOCs.
    let path = || c.path.to_string();
    let mut skip_all = |reason: String| {
        if values.is_empty() {
            acc.skipped.push(Skipped {
                path: path(),
                value: String::new(),
                reason: reason.clone(),
            });
        }
        for v in &values {
            acc.skipped.push(Skipped {
                path: path(),
                value: v.text().into_owned(),
                reason: reason.clone(),
            });
        }
    };
    let target = match classify(&c.path) {
        Ok(t) => t,
        Err(reason) => return skip_all(reason),
    };
    if ctx.followed_by {
        return skip_all(
            "observation is part of a FOLLOWEDBY sequence: an IOC cannot express the order"
                .to_string(),
        );
    }
    if let Some(q) = ctx.qualifiers.first() {
        return skip_all(format!(
            "observation is qualified by `{q}`: an IOC cannot express it"
        ));
    }
    if c.is_negative() {
        return skip_all(format!(
            "negated comparison (`{}{}`): the value must not be observed",
            if c.negated { "NOT " } else { "" },
            c.op.as_str()
        ));
    }
    if !exact(c) {
        return skip_all(format!("operator {} is not an exact match", c.op.as_str()));
    }
    if anded_with_hash && target == Target::Filename {
        return skip_all(
            "ANDed with a file hash in the same observation: the hash alone identifies the file"
                .to_string(),
        );
    }
    for v in values {
        let Literal::Str(s) = v else {
            acc.skipped.push(Skipped {
                path: path(),
                value: v.text().into_owned(),
                reason: "value is not a string literal".to_string(),
            });
            continue;
        };
        match target_ioc(target, s) {
            Ok(key) => acc.iocs.push(key),
            Err(reason) => acc.skipped.push(Skipped {
                path: path(),
                value: s.to_string(),
                reason,
            }),
        }
    }
}

/// Cut a name to HarfangLab's limit, on a char boundary. The one place names are cut.
pub fn truncate_name(name: &str) -> String {
    name.chars().take(HARFANGLAB_NAME_MAX).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: &str = "cead3f77f6cda6ec00f57d76c9a6879f";
    const SHA1: &str = "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12";
    const SHA256: &str = "aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f";

    fn key(t: IocType, v: &str) -> IocKey {
        IocKey {
            ioc_type: t,
            value: v.to_string(),
        }
    }

    fn iocs(pattern: &str) -> Vec<IocKey> {
        stix_iocs(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"))
            .0
    }

    /// The single skipped entry's reason.
    fn skip_reason(pattern: &str) -> String {
        let (iocs, skipped) = stix_iocs(pattern).unwrap();
        assert!(iocs.is_empty(), "{pattern}: {iocs:?}");
        assert_eq!(skipped.len(), 1, "{pattern}: {skipped:?}");
        skipped[0].reason.clone()
    }

    #[test]
    fn stored_values_normalise_like_sent_ones() {
        let k = |t, v: &str| normalised_key(t, v);
        assert_eq!(
            k("domain_name", "Evil.COM."),
            Some(key(IocType::DomainName, "evil.com"))
        );
        assert_eq!(
            k("hash", &MD5.to_uppercase()),
            Some(key(IocType::Hash, MD5))
        );
        assert_eq!(
            k("ip_both", "10.0.0.1/32"),
            Some(key(IocType::IpBoth, "10.0.0.1"))
        );
        assert_eq!(
            k("url", " http://x/A "),
            Some(key(IocType::Url, "http://x/A"))
        );
        assert_eq!(
            k("filename", "A.exe"),
            Some(key(IocType::Filename, "A.exe"))
        );
        assert_eq!(k("ip_src", "10.0.0.1"), None);
        assert_eq!(k("hash", "xyz"), None);
    }

    #[test]
    fn hash_key_spellings() {
        let sha512 = "a".repeat(128);
        let cases = [
            ("MD5", MD5),
            ("'MD5'", MD5),
            ("md5", MD5),
            ("SHA1", SHA1),
            ("'SHA-1'", SHA1),
            ("sha1", SHA1),
            ("SHA256", SHA256),
            ("'SHA-256'", SHA256),
            ("sha256", SHA256),
            ("'sha-256'", SHA256),
            ("SHA512", &sha512),
            ("'SHA512'", &sha512),
            ("'SHA-512'", &sha512),
        ];
        for (k, v) in cases {
            let p = format!("[file:hashes.{k} = '{}']", v.to_uppercase());
            assert_eq!(iocs(&p), [key(IocType::Hash, v)], "{p}");
        }
    }

    #[test]
    fn bad_hash_values_are_skipped_with_reason() {
        assert_eq!(
            skip_reason(&format!("[file:hashes.'SHA-256' = '{MD5}']")),
            "32 hex digits, but SHA-256 has 64"
        );
        assert_eq!(
            skip_reason("[file:hashes.MD5 = 'zzzz3f77f6cda6ec00f57d76c9a6879f']"),
            "hash value is not hexadecimal"
        );
        assert!(skip_reason("[file:hashes.SSDEEP = '3:a:b']").contains("not taken by HarfangLab"));
        assert!(skip_reason(&format!("[artifact:hashes.MD5 = '{MD5}']")).contains("not mapped"));
    }

    #[test]
    fn value_normalisation() {
        let cases = [
            (
                "[domain-name:value = 'Evil.Example.COM.']",
                key(IocType::DomainName, "evil.example.com"),
            ),
            (
                "[hostname:value = 'srv-01.corp.example']",
                key(IocType::DomainName, "srv-01.corp.example"),
            ),
            (
                "[ipv4-addr:value = ' 198.51.100.7 ']",
                key(IocType::IpBoth, "198.51.100.7"),
            ),
            (
                "[ipv4-addr:value = '198.51.100.7/32']",
                key(IocType::IpBoth, "198.51.100.7"),
            ),
            (
                "[ipv6-addr:value = '2001:0DB8:0000:0000:0000:0000:0000:0001']",
                key(IocType::IpBoth, "2001:db8::1"),
            ),
            (
                "[ipv6-addr:value = '2001:db8::1/128']",
                key(IocType::IpBoth, "2001:db8::1"),
            ),
            (
                "[url:value = '  http://evil.example/a?b=C  ']",
                key(IocType::Url, "http://evil.example/a?b=C"),
            ),
            (
                "[url:value = 'pastebin.com/raw/wR3ETdbi']",
                key(IocType::Url, "pastebin.com/raw/wR3ETdbi"),
            ),
            (
                "[file:name = 'Invoice.PDF.exe']",
                key(IocType::Filename, "Invoice.PDF.exe"),
            ),
        ];
        for (p, want) in cases {
            assert_eq!(iocs(p), [want], "{p}");
        }
    }

    #[test]
    fn invalid_values_are_skipped_with_reason() {
        let cases = [
            (
                "[ipv4-addr:value = '10.0.0.0/8']",
                "CIDR range /8 is not a single host",
            ),
            (
                "[ipv6-addr:value = '2001:db8::/32']",
                "CIDR range /32 is not a single host",
            ),
            (
                "[ipv4-addr:value = '999.1.1.1']",
                "is not an IPv4 or IPv6 address",
            ),
            ("[ipv4-addr:value = '1.2.3.4/40']", "invalid CIDR prefix"),
            (
                "[domain-name:value = 'evil[.]com']",
                "invalid character '['",
            ),
            (
                "[domain-name:value = '198.51.100.7']",
                "an IP address, not a domain name",
            ),
            ("[domain-name:value = 'bücher.example']", "punycode"),
            ("[domain-name:value = '-bad.example']", "hyphen"),
            ("[domain-name:value = 'a..example']", "empty label"),
            ("[url:value = 'evil.example/a path']", "white space"),
            (
                "[url:value = '1http://evil.example/']",
                "invalid URL scheme",
            ),
            ("[url:value = 'hxxp://evil.example/']", "defanged"),
            ("[file:name = '  ']", "empty file name"),
            ("[ipv4-addr:value = 1]", "not a string literal"),
        ];
        for (p, want) in cases {
            let reason = skip_reason(p);
            assert!(reason.contains(want), "{p}: {reason}");
        }
    }

    #[test]
    fn name_anded_with_hash_keeps_only_the_hash() {
        let p = format!("[file:name = 'x.exe' AND file:hashes.MD5 = '{MD5}']");
        let (found, skipped) = stix_iocs(&p).unwrap();
        assert_eq!(found, [key(IocType::Hash, MD5)]);
        assert_eq!(skipped.len(), 1);
        assert_eq!(
            (skipped[0].path.as_str(), skipped[0].value.as_str()),
            ("file:name", "x.exe")
        );
        assert!(skipped[0].reason.contains("hash alone identifies the file"));
        // Also through nesting.
        let p = format!(
            "[(file:name = 'a' OR file:name = 'b') AND file:hashes.'SHA-256' = '{SHA256}']"
        );
        assert_eq!(iocs(&p).len(), 1);
        // OR with a hash does not constrain: both are IOCs.
        let p = format!("[file:name = 'x.exe' OR file:hashes.MD5 = '{MD5}']");
        assert_eq!(
            iocs(&p),
            [key(IocType::Filename, "x.exe"), key(IocType::Hash, MD5)]
        );
    }

    #[test]
    fn compound_patterns() {
        let p = "[ipv4-addr:value = '198.51.100.1' OR ipv4-addr:value = '198.51.100.2'] AND [domain-name:value = 'a.example']";
        assert_eq!(
            iocs(p),
            [
                key(IocType::DomainName, "a.example"),
                key(IocType::IpBoth, "198.51.100.1"),
                key(IocType::IpBoth, "198.51.100.2"),
            ]
        );
        // Different object types ANDed in one observation: each value is emitted.
        let p = "[ipv4-addr:value = '198.51.100.1' AND domain-name:value = 'a.example']";
        assert_eq!(iocs(p).len(), 2);
        // IN gives one IOC per member; duplicates collapse.
        let p = "[domain-name:value IN ('a.example', 'B.example', 'b.example.')]";
        assert_eq!(
            iocs(p),
            [
                key(IocType::DomainName, "a.example"),
                key(IocType::DomainName, "b.example")
            ]
        );
        // Unsupported parts next to supported ones are skipped, the rest kept.
        let p = "[domain-name:value = 'a.example' AND domain-name:resolves_to_refs[*].value = '198.51.100.1']";
        let (i, s) = stix_iocs(p).unwrap();
        assert_eq!(i, [key(IocType::DomainName, "a.example")]);
        assert!(s[0].reason.starts_with("reference path"), "{s:?}");
        assert_eq!(s[0].path, "domain-name:resolves_to_refs[*].value");
    }

    #[test]
    fn operators_and_qualifiers_that_change_meaning_are_skipped() {
        let cases = [
            (
                "[domain-name:value != 'a.example']",
                "negated comparison (`!=`)",
            ),
            (
                "[domain-name:value NOT = 'a.example']",
                "negated comparison (`NOT =`)",
            ),
            (
                "[domain-name:value NOT IN ('a.example')]",
                "negated comparison (`NOT IN`)",
            ),
            (
                "[domain-name:value LIKE '%.example']",
                "operator LIKE is not an exact match",
            ),
            (
                "[url:value MATCHES '^http']",
                "operator MATCHES is not an exact match",
            ),
            (
                "[ipv4-addr:value ISSUBSET '10.0.0.0/8']",
                "operator ISSUBSET",
            ),
            ("[EXISTS file:name]", "operator EXISTS"),
            (
                "[url:value = 'http://a.example/'] WITHIN 300 SECONDS",
                "qualified by `WITHIN 300 SECONDS`",
            ),
            (
                "([url:value = 'http://a.example/']) REPEATS 3 TIMES",
                "qualified by `REPEATS 3 TIMES`",
            ),
            (
                "[url:value = 'http://a.example/'] START t'2016-06-01T01:30:00Z' STOP t'2016-06-02T01:30:00Z'",
                "qualified by `START",
            ),
            ("[process:name = 'evil.exe']", "not mapped"),
            (
                "[network-traffic:dst_ref.value = '198.51.100.1']",
                "reference path",
            ),
        ];
        for (p, want) in cases {
            let reason = skip_reason(p);
            assert!(reason.contains(want), "{p}: {reason}");
        }
        let (i, s) =
            stix_iocs("[url:value = 'http://a.example/'] FOLLOWEDBY [file:name = 'x']").unwrap();
        assert!(i.is_empty());
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(|s| s.reason.contains("FOLLOWEDBY")));
        // Double negation is an equality.
        assert_eq!(
            iocs("[file:name NOT != 'x']"),
            [key(IocType::Filename, "x")]
        );
    }

    #[test]
    fn pattern_errors_name_the_byte() {
        let err = stix_iocs("[file:name = ]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid STIX pattern: at byte 13: expected a literal value, found symbol `]`"
        );
        assert!(!err.is_unsupported());
        // A value the validator rejects does not fail the whole pattern.
        let (i, s) = stix_iocs("[file:hashes.MD5 = 'f00' OR file:name = 'x']").unwrap();
        assert_eq!(i, [key(IocType::Filename, "x")]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn observables() {
        let ok = [
            (
                "Domain-Name",
                "Evil.Example.",
                key(IocType::DomainName, "evil.example"),
            ),
            (
                "Hostname",
                "host.example",
                key(IocType::DomainName, "host.example"),
            ),
            (
                "IPv4-Addr",
                "198.51.100.1",
                key(IocType::IpBoth, "198.51.100.1"),
            ),
            (
                "IPv6-Addr",
                "2001:DB8::1",
                key(IocType::IpBoth, "2001:db8::1"),
            ),
            (
                "Url",
                "https://a.example/x",
                key(IocType::Url, "https://a.example/x"),
            ),
            ("StixFile", &MD5.to_uppercase(), key(IocType::Hash, MD5)),
            (
                "StixFile",
                "payload.exe",
                key(IocType::Filename, "payload.exe"),
            ),
            ("Artifact", SHA256, key(IocType::Hash, SHA256)),
        ];
        for (t, v, want) in ok {
            assert_eq!(observable_ioc(t, v), Ok(want), "{t} {v}");
        }
        assert!(
            observable_ioc("Email-Addr", "a@b.example")
                .unwrap_err()
                .contains("Email-Addr")
        );
        assert!(observable_ioc("Artifact", "https://x.example/a").is_err());
        assert!(
            observable_ioc("IPv4-Addr", "10.0.0.0/8")
                .unwrap_err()
                .contains("CIDR")
        );
    }

    #[test]
    fn translate_merges_observables_and_dispatches_on_type() {
        let mut ind = Indicator {
            id: "i1".into(),
            name: "x".into(),
            pattern_type: "STIX".into(),
            pattern: "[ipv4-addr:value = '198.51.100.1']".into(),
            observables: vec![
                LinkedObservable {
                    entity_type: "IPv4-Addr".into(),
                    value: "198.51.100.1".into(),
                    ..LinkedObservable::default()
                },
                LinkedObservable {
                    entity_type: "Url".into(),
                    value: "http://a.example/".into(),
                    ..LinkedObservable::default()
                },
                LinkedObservable {
                    entity_type: "Mutex".into(),
                    value: "m".into(),
                    ..LinkedObservable::default()
                },
            ],
            ..Indicator::default()
        };
        let t = translate(&ind).unwrap();
        assert_eq!(
            t.iocs,
            [
                key(IocType::IpBoth, "198.51.100.1"),
                key(IocType::Url, "http://a.example/")
            ]
        );
        assert_eq!(t.skipped.len(), 1);
        assert_eq!(t.skipped[0].path, "observable:Mutex");
        assert!(t.sigma.is_none() && t.yara.is_none());

        for other in ["snort", "suricata", "pcre"] {
            ind.pattern_type = other.into();
            let err = translate(&ind).unwrap_err();
            assert!(err.is_unsupported(), "{other}");
            assert_eq!(err, TranslateError::UnsupportedPatternType(other.into()));
        }
        // Sigma/Yara: the linked observables are not IOCs of the indicator.
        ind.pattern_type = "yara".into();
        ind.pattern = "rule r { strings: $a = \"x\" condition: $a }".into();
        let t = translate(&ind).unwrap();
        assert!(t.yara.is_some());
        assert!(t.iocs.is_empty() && t.skipped.is_empty(), "{t:?}");
        ind.pattern_type = "stix".into();
        ind.pattern = "[ipv4-addr:value = '1".into();
        assert!(matches!(translate(&ind), Err(TranslateError::Pattern(_))));
    }

    #[test]
    fn truncate_name_cuts_on_char_boundary() {
        let long = "é".repeat(150);
        assert_eq!(truncate_name(&long).chars().count(), HARFANGLAB_NAME_MAX);
        assert_eq!(truncate_name("short"), "short");
    }
}
