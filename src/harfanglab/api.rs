//! `ThreatIntelApi`: the HarfangLab calls the sync layer needs, as a trait, so `sync` can be
//! tested with an in-memory fake and run with the real client (`harfanglab::client::Client`).
//!
//! Contract for implementors: transient failures (network, timeout, 429, 5xx) are retried inside
//! the implementation; what comes out is final for this attempt. Paths always end in `/`.

use super::HarfangLabError;
use super::model::{IocRule, IocRuleBody, RemoteRule, RuleBody, RuleFilter, RuleKind};
use crate::translate::IocKey;

pub trait ThreatIntelApi: Send + Sync {
    /// The IOC rule with this (type, value) in the source list, if any.
    fn find_ioc(&self, source_id: &str, key: &IocKey) -> Result<Option<IocRule>, HarfangLabError>;
    /// POST a new IOC rule. A duplicate answers `HarfangLabError::AlreadyExists`.
    fn create_ioc(&self, body: &IocRuleBody) -> Result<IocRule, HarfangLabError>;
    /// PATCH an IOC rule with the full writable set.
    fn update_ioc(&self, id: &str, body: &IocRuleBody) -> Result<IocRule, HarfangLabError>;
    /// DELETE an IOC rule; a 404 (already gone) is `Ok`.
    fn delete_ioc(&self, id: &str) -> Result<(), HarfangLabError>;

    /// GET one Sigma rule / Yara file by object id; `None` on 404.
    fn get_rule(&self, kind: RuleKind, id: &str) -> Result<Option<RemoteRule>, HarfangLabError>;
    /// List rules of a source list matching the filter (all pages).
    fn find_rules(
        &self,
        kind: RuleKind,
        source_id: &str,
        filter: &RuleFilter,
    ) -> Result<Vec<RemoteRule>, HarfangLabError>;
    /// POST a rule; checks the `{"status": [...]}` envelope and returns the created object
    /// (fetched back when the envelope holds only its id).
    fn create_rule(&self, kind: RuleKind, body: &RuleBody) -> Result<RemoteRule, HarfangLabError>;
    /// PATCH a rule.
    fn update_rule(
        &self,
        kind: RuleKind,
        id: &str,
        body: &RuleBody,
    ) -> Result<RemoteRule, HarfangLabError>;
    /// DELETE a rule; a 404 (already gone) is `Ok`.
    fn delete_rule(&self, kind: RuleKind, id: &str) -> Result<(), HarfangLabError>;
}
