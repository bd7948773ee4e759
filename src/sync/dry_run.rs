//! `DryRunApi<A>`: wraps a real [`ThreatIntelApi`] so the connector reads HarfangLab for real
//! but writes nothing. Each write it would make is logged at `info!` (`[dry-run] would create
//! IOC hash <value> …`) and answered with a plausible object built from the request, so the
//! sync layer takes the same decisions and its reports count what a real run would do.

use crate::harfanglab::HarfangLabError;
use crate::harfanglab::api::ThreatIntelApi;
use crate::harfanglab::model::{IocRule, IocRuleBody, RemoteRule, RuleBody, RuleFilter, RuleKind};
use crate::sync::content;
use crate::translate::IocKey;
use std::sync::atomic::{AtomicU64, Ordering};

/// Reads pass through to `A`; writes are logged and skipped.
pub struct DryRunApi<A> {
    inner: A,
    writes: AtomicU64,
}

impl<A> DryRunApi<A> {
    pub fn new(inner: A) -> DryRunApi<A> {
        DryRunApi {
            inner,
            writes: AtomicU64::new(0),
        }
    }

    /// The wrapped API.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// How many writes were skipped so far.
    pub fn skipped_writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn count(&self) -> u64 {
        self.writes.fetch_add(1, Ordering::Relaxed) + 1
    }
}

fn state(enabled: bool) -> &'static str {
    if enabled { "enabled" } else { "disabled" }
}

impl<A: ThreatIntelApi> ThreatIntelApi for DryRunApi<A> {
    fn find_ioc(&self, source_id: &str, key: &IocKey) -> Result<Option<IocRule>, HarfangLabError> {
        self.inner.find_ioc(source_id, key)
    }

    fn create_ioc(&self, body: &IocRuleBody) -> Result<IocRule, HarfangLabError> {
        let n = self.count();
        log::info!(
            "[dry-run] would create IOC {} {} ({}, {})",
            body.ioc_type.as_str(),
            body.value,
            state(body.enabled),
            body.hl_status
        );
        Ok(content::ioc_echo(format!("dry-run-{n}"), body))
    }

    fn update_ioc(&self, id: &str, body: &IocRuleBody) -> Result<IocRule, HarfangLabError> {
        self.count();
        log::info!(
            "[dry-run] would update IOC {} {} (rule {id}, {}, comment {})",
            body.ioc_type.as_str(),
            body.value,
            state(body.enabled),
            body.comment
        );
        Ok(content::ioc_echo(id.to_owned(), body))
    }

    fn delete_ioc(&self, id: &str) -> Result<(), HarfangLabError> {
        self.count();
        log::info!("[dry-run] would delete IOC rule {id}");
        Ok(())
    }

    fn get_rule(&self, kind: RuleKind, id: &str) -> Result<Option<RemoteRule>, HarfangLabError> {
        self.inner.get_rule(kind, id)
    }

    fn find_rules(
        &self,
        kind: RuleKind,
        source_id: &str,
        filter: &RuleFilter,
    ) -> Result<Vec<RemoteRule>, HarfangLabError> {
        self.inner.find_rules(kind, source_id, filter)
    }

    fn create_rule(&self, kind: RuleKind, body: &RuleBody) -> Result<RemoteRule, HarfangLabError> {
        let n = self.count();
        log::info!(
            "[dry-run] would create {} {:?} ({}, {})",
            kind.resource(),
            body.name,
            state(body.enabled),
            body.hl_status
        );
        // A Sigma rule's id is its object id (harfanglab-api.md §6.3); keep that plausible.
        let id = match kind {
            RuleKind::Sigma => content::sigma_id(&body.content),
            RuleKind::Yara => None,
        };
        Ok(content::rule_echo(
            kind,
            id.unwrap_or(format!("dry-run-{n}")),
            body,
        ))
    }

    fn update_rule(
        &self,
        kind: RuleKind,
        id: &str,
        body: &RuleBody,
    ) -> Result<RemoteRule, HarfangLabError> {
        self.count();
        log::info!(
            "[dry-run] would update {} {:?} (rule {id}, {}, {})",
            kind.resource(),
            body.name,
            state(body.enabled),
            body.hl_status
        );
        Ok(content::rule_echo(kind, id.to_owned(), body))
    }

    fn delete_rule(&self, kind: RuleKind, id: &str) -> Result<(), HarfangLabError> {
        self.count();
        log::info!("[dry-run] would delete {} {id}", kind.resource());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::memory::MemoryApi;
    use crate::translate::IocType;

    #[test]
    fn writes_are_skipped_and_reads_pass_through() {
        let real = MemoryApi::new();
        let seeded = real
            .create_ioc(&IocRuleBody {
                source_id: "src".into(),
                ioc_type: IocType::Hash,
                value: "aa".repeat(16),
                description: String::new(),
                comment: String::new(),
                hl_status: "stable".into(),
                enabled: true,
            })
            .unwrap();
        let dry = DryRunApi::new(real.clone());
        let key = IocKey {
            ioc_type: IocType::Hash,
            value: "aa".repeat(16),
        };
        assert_eq!(dry.find_ioc("src", &key).unwrap(), Some(seeded.clone()));
        let mut body = IocRuleBody {
            source_id: "src".into(),
            ioc_type: IocType::Hash,
            value: "bb".repeat(16),
            description: "d".into(),
            comment: String::new(),
            hl_status: "stable".into(),
            enabled: true,
        };
        let created = dry.create_ioc(&body).unwrap();
        assert_eq!(created.value, body.value);
        body.enabled = false;
        assert!(!dry.update_ioc(&seeded.id, &body).unwrap().enabled);
        dry.delete_ioc(&seeded.id).unwrap();
        let rule = RuleBody {
            source_id: "src".into(),
            name: "n".into(),
            content: "title: t\nid: abc\n".into(),
            hl_status: "stable".into(),
            enabled: true,
            overwrite: false,
        };
        assert_eq!(dry.create_rule(RuleKind::Sigma, &rule).unwrap().id, "abc");
        dry.update_rule(RuleKind::Sigma, "abc", &rule).unwrap();
        dry.delete_rule(RuleKind::Sigma, "abc").unwrap();
        assert_eq!(dry.skipped_writes(), 6);
        // Nothing reached the store: only the seeded rule, and only read calls.
        assert_eq!(real.iocs(), vec![seeded]);
        assert!(real.rules(RuleKind::Sigma).is_empty());
        assert_eq!(real.calls(), 2);
    }
}
