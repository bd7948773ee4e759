//! Sigma rule validation: the pattern must be a YAML mapping with `title` and `detection`.
//! TODO(owner: rules helper): implement.

use super::RuleError;
use serde::Serialize;

/// What we extract from a Sigma rule. `id` is the rule's identity in HarfangLab.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SigmaMeta {
    pub id: Option<String>,
    pub title: String,
    pub level: Option<String>,
    pub status: Option<String>,
    pub tags: Vec<String>,
}

/// Parse and validate one Sigma rule.
pub fn parse_sigma(content: &str) -> Result<SigmaMeta, RuleError> {
    let _ = content;
    unimplemented!("rules::sigma::parse_sigma")
}
