//! YARA validation: parse the rules, extract rule names and `meta` ids, positioned syntax errors.
//! TODO(owner: rules helper): implement.

use super::RuleError;
use serde::Serialize;

/// What we extract from a YARA source file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct YaraMeta {
    /// Rule identifiers in source order.
    pub rule_names: Vec<String>,
    /// Values of `id` entries in the rules' `meta:` sections, in source order.
    pub meta_ids: Vec<String>,
}

/// Parse and validate one YARA source.
pub fn parse_yara(content: &str) -> Result<YaraMeta, RuleError> {
    let _ = content;
    unimplemented!("rules::yara::parse_yara")
}
