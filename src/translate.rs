//! Translation: one OpenCTI indicator → the HarfangLab objects it should produce. Pure, no I/O.
//!
//! TODO(owner: stix helper): implement the functions; the types below are the contract used by
//! `sync` and `pipeline` (fields may be added, existing ones must not change meaning).

use crate::rules::RuleError;
use crate::rules::sigma::SigmaMeta;
use crate::rules::yara::YaraMeta;
use serde::{Deserialize, Serialize};
use std::fmt;

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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedObservable {
    pub entity_type: String,
    pub value: String,
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
    Pattern(String),
    Sigma(RuleError),
    Yara(RuleError),
    /// `pattern_type` is not stix, sigma or yara.
    UnsupportedPatternType(String),
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

impl std::error::Error for TranslateError {}

/// Translate one indicator.
pub fn translate(indicator: &Indicator) -> Result<Translation, TranslateError> {
    let _ = indicator;
    unimplemented!("translate::translate")
}

/// IOCs of a STIX pattern alone (used to diff a former pattern against the new one).
pub fn stix_iocs(pattern: &str) -> Result<(Vec<IocKey>, Vec<Skipped>), TranslateError> {
    let _ = pattern;
    unimplemented!("translate::stix_iocs")
}

/// The IOC for an observable linked by `based-on`, or the reason it is skipped.
pub fn observable_ioc(entity_type: &str, value: &str) -> Result<IocKey, String> {
    let _ = (entity_type, value);
    unimplemented!("translate::observable_ioc")
}

/// Cut a name to HarfangLab's limit, on a char boundary. The one place names are cut.
pub fn truncate_name(name: &str) -> String {
    name.chars().take(HARFANGLAB_NAME_MAX).collect()
}
