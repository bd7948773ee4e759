//! Repairs of objects that reconciliation finds wrong and the live path cannot see: duplicates of
//! one normalised IOC value (written with other casing by the Python connector, where
//! `value__exact` misses them), and holders that no longer exist (an indicator deleted while the
//! connector was down). `reconcile` decides what to repair; this module does it, with the same
//! striped locks and write rules as [`Syncer::upsert`] / [`Syncer::release`]:
//!
//! - every repair re-reads the object first (the listing is only a snapshot) and changes only what
//!   is still wrong, so a live event that got there first is never undone;
//! - a holder is released by its exact recorded id (not by aliases): an indicator that came back
//!   under its internal id is not released through its old standard id;
//! - an object left without holders is deleted or disabled per `remove_indicator`, a rule carrying
//!   a person's comment only disabled, exactly as a release does.

use super::comment::{Origin, RuleComment};
use super::rule_holders;
use super::{Counts, LockKey, Syncer, content};
use crate::harfanglab::HarfangLabError;
use crate::harfanglab::api::ThreatIntelApi;
use crate::harfanglab::model::{IocRule, IocRuleBody, RuleBody, RuleKind};
use crate::translate::IocKey;

/// A rule to release a holder from, as the listing saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeldObject {
    /// An IOC rule: its stored value (maybe not normalised) and its normalised key.
    Ioc { stored: IocKey, key: IocKey },
    /// A Sigma rule / Yara file by object id, with what it is locked by in the live path.
    Rule {
        kind: RuleKind,
        id: String,
        name: String,
        sigma_id: Option<String>,
    },
}

impl<A: ThreatIntelApi> Syncer<A> {
    /// Keep one IOC rule of several whose values normalise to `key` (`stored` are their stored
    /// keys): the one already stored normalised (else the first), with every holder of all of
    /// them and the normalised value; the others are deleted, or disabled without holders
    /// (`remove_indicator` false, or they carry a person's comment). A single rule stored
    /// un-normalised is rewritten normalised in place. Returns the counts (`updated` for the
    /// keeper, `deleted`/`disabled` for the others).
    pub fn merge_duplicates(
        &self,
        key: &IocKey,
        stored: &[IocKey],
    ) -> Result<Counts, HarfangLabError> {
        let _guard = self.locks.lock(&[LockKey::Ioc(key)]);
        let source = &self.settings.lists.ioc;
        let mut rules: Vec<IocRule> = Vec::new();
        for s in stored {
            if let Some(rule) = self.api.find_ioc(source, s)?
                && !rules.iter().any(|r| r.id == rule.id)
            {
                rules.push(rule);
            }
        }
        let mut counts = Counts::default();
        if rules.is_empty() || (rules.len() == 1 && rules[0].value == key.value) {
            counts.unchanged += 1;
            return Ok(counts);
        }
        let keep = rules.iter().position(|r| r.value == key.value).unwrap_or(0);
        let keeper = rules.remove(keep);
        let (mut merged, _) = RuleComment::decode(keeper.comment.as_deref());
        for other in &rules {
            let (theirs, _) = RuleComment::decode(other.comment.as_deref());
            for h in theirs.holders {
                let aliases: Vec<String> = std::iter::once(h.id.clone())
                    .chain(h.standard_id.clone())
                    .collect();
                if !merged.holders.iter().any(|m| aliases.contains(&m.id)) {
                    merged.upsert(h, &[]);
                }
            }
            if merged.user_comment.is_none() {
                merged.user_comment = theirs.user_comment;
            }
        }
        let body = self.rewrite(&keeper, key, &merged, keeper.enabled);
        self.api.update_ioc(&keeper.id, &body)?;
        counts.updated += 1;
        for other in rules {
            let (theirs, _) = RuleComment::decode(other.comment.as_deref());
            self.retire_ioc(&other, theirs.user_comment.is_some(), &mut counts)?;
        }
        self.inventory.add_ioc(key);
        Ok(counts)
    }

    /// Release the holder recorded as `holder` (exactly that id) from `object`; delete or disable
    /// the object when nobody is left. A rule that no longer lists it is left alone.
    pub fn release_holder(
        &self,
        object: &HeldObject,
        holder: &str,
    ) -> Result<Counts, HarfangLabError> {
        let mut counts = Counts::default();
        match object {
            HeldObject::Ioc { stored, key } => {
                let _guard = self.locks.lock(&[LockKey::Ioc(key)]);
                let source = &self.settings.lists.ioc;
                let Some(rule) = self.api.find_ioc(source, stored)? else {
                    counts.unchanged += 1;
                    return Ok(counts);
                };
                let (mut comment, origin) = RuleComment::decode(rule.comment.as_deref());
                let before = comment.holders.len();
                comment.holders.retain(|h| h.id != holder);
                if comment.holders.len() == before || matches!(origin, Origin::Foreign) {
                    counts.unchanged += 1;
                    return Ok(counts);
                }
                if comment.holders.is_empty() {
                    if self.settings.remove_indicator && comment.user_comment.is_none() {
                        self.api.delete_ioc(&rule.id)?;
                        self.inventory.remove_ioc(key);
                        counts.deleted += 1;
                        return Ok(counts);
                    }
                    counts.disabled += 1;
                } else {
                    counts.updated += 1;
                }
                let enabled = rule.enabled && !comment.holders.is_empty();
                let body = self.rewrite(&rule, stored, &comment, enabled);
                self.api.update_ioc(&rule.id, &body)?;
            }
            HeldObject::Rule {
                kind,
                id,
                name,
                sigma_id,
            } => {
                let kind = *kind;
                let lock = match (kind, sigma_id) {
                    (RuleKind::Sigma, Some(sid)) => LockKey::Sigma(sid),
                    (RuleKind::Sigma, None) => LockKey::SigmaName(name),
                    (RuleKind::Yara, _) => LockKey::Yara(name),
                };
                let _guard = self.locks.lock(&[lock]);
                let Some(rule) = self.api.get_rule(kind, id)? else {
                    counts.unchanged += 1;
                    return Ok(counts);
                };
                let (recorded, body) = rule_holders::split(kind, &rule.content);
                let Some(mut holders) = recorded else {
                    counts.unchanged += 1;
                    return Ok(counts);
                };
                if !holders.release(&[holder.to_owned()]) {
                    counts.unchanged += 1;
                    return Ok(counts);
                }
                let keep = !holders.is_empty();
                if !keep && self.settings.remove_indicator {
                    self.api.delete_rule(kind, &rule.id)?;
                    let sid = match kind {
                        RuleKind::Sigma => content::sigma_id(body),
                        RuleKind::Yara => None,
                    };
                    self.inventory.remove_rule(kind, sid.as_deref(), &rule.name);
                    counts.deleted += 1;
                    return Ok(counts);
                }
                let update = RuleBody {
                    source_id: rule.source_id.clone().unwrap_or_else(|| match kind {
                        RuleKind::Sigma => self.settings.lists.sigma.clone(),
                        RuleKind::Yara => self.settings.lists.yara.clone(),
                    }),
                    name: rule.name.clone(),
                    content: rule_holders::join(kind, &holders, body),
                    hl_status: rule
                        .hl_status
                        .clone()
                        .unwrap_or_else(|| self.settings.rule_maturity.clone()),
                    enabled: rule.enabled && keep,
                    overwrite: false,
                };
                self.api.update_rule(kind, &rule.id, &update)?;
                if keep {
                    counts.updated += 1;
                } else {
                    counts.disabled += 1;
                }
            }
        }
        Ok(counts)
    }

    /// The full writable set of `rule` with `comment`, `enabled` and the value of `key`; the
    /// rest as the rule has it.
    fn rewrite(
        &self,
        rule: &IocRule,
        key: &IocKey,
        comment: &RuleComment,
        enabled: bool,
    ) -> IocRuleBody {
        IocRuleBody {
            source_id: self.settings.lists.ioc.clone(),
            ioc_type: key.ioc_type,
            value: key.value.clone(),
            description: rule.description.clone().unwrap_or_default(),
            comment: comment.encode(),
            hl_status: rule
                .hl_status
                .clone()
                .unwrap_or_else(|| self.settings.rule_maturity.clone()),
            enabled,
        }
    }

    /// A duplicate given up: deleted, or disabled without holders (a person's comment, or
    /// `remove_indicator` false).
    fn retire_ioc(
        &self,
        rule: &IocRule,
        user_comment: bool,
        counts: &mut Counts,
    ) -> Result<(), HarfangLabError> {
        if self.settings.remove_indicator && !user_comment {
            self.api.delete_ioc(&rule.id)?;
            counts.deleted += 1;
            return Ok(());
        }
        let (mut comment, _) = RuleComment::decode(rule.comment.as_deref());
        comment.holders.clear();
        let Some(ioc_type) = crate::translate::IocType::parse(&rule.ioc_type) else {
            return Ok(());
        };
        let stored = IocKey {
            ioc_type,
            value: rule.value.clone(),
        };
        let body = self.rewrite(rule, &stored, &comment, false);
        self.api.update_ioc(&rule.id, &body)?;
        counts.disabled += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harfanglab::model::SourceLists;
    use crate::sync::SyncSettings;
    use crate::sync::memory::MemoryApi;
    use crate::translate::IocType;

    fn syncer(remove: bool) -> Syncer<MemoryApi> {
        Syncer::new(
            MemoryApi::new(),
            SyncSettings {
                lists: SourceLists {
                    ioc: "ioc".into(),
                    sigma: "sigma".into(),
                    yara: "yara".into(),
                },
                remove_indicator: remove,
                rule_maturity: "stable".into(),
                enforce_enabled: false,
            },
        )
    }

    fn rule(id: &str, value: &str, comment: &str) -> IocRule {
        IocRule {
            id: id.into(),
            ioc_type: "domain_name".into(),
            value: value.into(),
            source_id: Some("ioc".into()),
            description: None,
            comment: Some(comment.into()),
            enabled: true,
            hl_status: Some("stable".into()),
        }
    }

    fn dom(v: &str) -> IocKey {
        IocKey {
            ioc_type: IocType::DomainName,
            value: v.into(),
        }
    }

    #[test]
    fn duplicates_merge_into_the_normalised_rule_with_every_holder() {
        let s = syncer(true);
        let python =
            r#"{"indicator_id":"indicator--p","indicator_score":50,"indicator_platforms":[]}"#;
        s.api().insert_ioc(rule("r1", "Evil.COM", python));
        let ours = r#"{"indicator_id":"indicator--a","indicator_score":null,"indicator_platforms":[],"holders":[{"id":"int-a","standard_id":"indicator--a","score":null,"platforms":[]}]}"#;
        s.api().insert_ioc(rule("r2", "evil.com", ours));
        let c = s
            .merge_duplicates(&dom("evil.com"), &[dom("Evil.COM"), dom("evil.com")])
            .unwrap();
        assert_eq!((c.updated, c.deleted), (1, 1));
        let left = s.api().iocs();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, "r2");
        let (kept, _) = RuleComment::decode(left[0].comment.as_deref());
        let ids: Vec<&str> = kept.holders.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["indicator--p", "int-a"]);
        // Done: a second run changes nothing.
        let c = s
            .merge_duplicates(&dom("evil.com"), &[dom("Evil.COM"), dom("evil.com")])
            .unwrap();
        assert_eq!(c.unchanged, 1);
    }

    #[test]
    fn a_lone_mixed_case_rule_is_normalised_in_place() {
        let s = syncer(false);
        s.api().insert_ioc(rule("r1", "Evil.COM", ""));
        let c = s
            .merge_duplicates(&dom("evil.com"), &[dom("Evil.COM")])
            .unwrap();
        assert_eq!(c.updated, 1);
        assert_eq!(s.api().iocs()[0].value, "evil.com");
    }

    #[test]
    fn release_holder_removes_exactly_that_id() {
        let s = syncer(true);
        let two = r#"{"indicator_id":"indicator--a","indicator_score":null,"indicator_platforms":[],"holders":[{"id":"indicator--a","standard_id":"indicator--a","score":null,"platforms":[]},{"id":"int-a","standard_id":"indicator--a","score":null,"platforms":[]}]}"#;
        s.api().insert_ioc(rule("r1", "a.com", two));
        let obj = HeldObject::Ioc {
            stored: dom("a.com"),
            key: dom("a.com"),
        };
        // The old standard-id holder goes; the same indicator under its internal id stays.
        let c = s.release_holder(&obj, "indicator--a").unwrap();
        assert_eq!(c.updated, 1);
        let (left, _) = RuleComment::decode(s.api().iocs()[0].comment.as_deref());
        assert_eq!(left.holders.len(), 1);
        assert_eq!(left.holders[0].id, "int-a");
        let c = s.release_holder(&obj, "int-a").unwrap();
        assert_eq!(c.deleted, 1);
        assert!(s.api().iocs().is_empty());
        let c = s.release_holder(&obj, "int-a").unwrap();
        assert_eq!(c.unchanged, 1);
    }
}
