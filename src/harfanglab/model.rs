//! The HarfangLab threat-intel wire model: source lists, IOC rules, Sigma rules, Yara files, as
//! the REST API returns and accepts them (see `docs/harfanglab-api.md` §4-§6).
//!
//! Every field the server may omit is optional or defaulted: the API is not publicly documented.

use crate::translate::IocType;
use serde::{Deserialize, Serialize};

/// The three kinds of source list the connector owns, one per object family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    Ioc,
    Sigma,
    Yara,
}

impl SourceKind {
    /// REST resource name: `IOCSource`, `SigmaSource`, `YaraSource`.
    pub fn resource(self) -> &'static str {
        match self {
            SourceKind::Ioc => "IOCSource",
            SourceKind::Sigma => "SigmaSource",
            SourceKind::Yara => "YaraSource",
        }
    }
}

/// A source list (`IOCSource`, `SigmaSource`, `YaraSource`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceList {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// Ids of the three source lists named `HARFANGLAB_INTEL_SOURCE_LIST_NAME`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceLists {
    pub ioc: String,
    pub sigma: String,
    pub yara: String,
}

/// An IOC rule as HarfangLab returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IocRule {
    pub id: String,
    #[serde(rename = "type")]
    pub ioc_type: String,
    pub value: String,
    #[serde(default)]
    pub source_id: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Opaque string; this connector stores JSON in it (holders, score, platforms).
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub hl_status: Option<String>,
}

/// Body of an IOC rule create (POST) or update (PATCH): the full writable set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IocRuleBody {
    pub source_id: String,
    #[serde(rename = "type")]
    pub ioc_type: IocType,
    pub value: String,
    pub description: String,
    pub comment: String,
    pub hl_status: String,
    pub enabled: bool,
}

/// Sigma rules and Yara files share one shape and one set of calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleKind {
    Sigma,
    Yara,
}

impl RuleKind {
    /// REST resource name: `SigmaRule` or `YaraFile`.
    pub fn resource(self) -> &'static str {
        match self {
            RuleKind::Sigma => "SigmaRule",
            RuleKind::Yara => "YaraFile",
        }
    }
}

/// A Sigma rule or Yara file as HarfangLab returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRule {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub source_id: Option<String>,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub hl_status: Option<String>,
    /// Sigma: the server-computed rule title.
    #[serde(default)]
    pub rule_name: Option<String>,
    /// Yara: the server-computed rule identifiers.
    #[serde(default)]
    pub rule_names: Vec<String>,
}

/// Body of a Sigma/Yara create (POST) or update (PATCH).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleBody {
    pub source_id: String,
    pub name: String,
    pub content: String,
    pub hl_status: String,
    pub enabled: bool,
    /// Create only: replace an existing rule with the same Sigma id / Yara meta id.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub overwrite: bool,
}

/// How to look Sigma rules / Yara files up in a source list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleFilter {
    /// `name__exact=` (names are NOT unique server side).
    Name(String),
    /// `search=` (substring over names, rule names, ...); callers re-check the results.
    Search(String),
    /// Every rule of the source list (paginated).
    All,
}

/// One page of a DRF limit/offset list: `{"count", "next", "previous", "results"}` (§3).
/// `next` may be absolute, relative or null; the client pages by `offset += results.len()` and
/// only uses `next` to know whether to go on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub next: Option<String>,
    #[serde(default)]
    pub previous: Option<String>,
    pub results: Vec<T>,
}

/// One entry of the Sigma/Yara import answer `{"status": [...]}` (§6.1). On success it carries
/// the new object's `id`, `filename` (the name) and `content`; on failure `status: false` with
/// the error text in `content`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportStatus {
    /// Missing is read as success when an `id` is present.
    #[serde(default)]
    pub status: Option<bool>,
    #[serde(default)]
    pub code: Option<u16>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub filename: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
}

/// The Sigma/Yara create answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportAnswer {
    pub status: Vec<ImportStatus>,
}

/// What the startup probe learnt (`Client::probe`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeReport {
    /// `GET /api/version` → `version`, when the server answered it.
    pub version: Option<String>,
    /// `count` of the `IOCSource/?limit=1` page: the token can read threat-intel lists.
    pub ioc_sources: Option<u64>,
}

fn default_true() -> bool {
    true
}
