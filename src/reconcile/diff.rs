//! The diff, pure: the actual index and the desired state (ids from the replay; one indicator's
//! translation at a time, read when its repair job runs) → drift, by class, and the repairs.
//!
//! Classes, each counted and reported with the object, the action and the reason:
//! - `missing`: an object an indicator wants is absent (create), or present without that
//!   indicator among its holders (hold);
//! - `orphaned`: a holder that is no longer in the desired set, or a desired indicator that no
//!   longer wants the object (release; the object is deleted or disabled when nobody is left);
//! - `duplicate`: several IOC rules whose values normalise to one (keep one, union the holders,
//!   delete/disable the rest), or one stored with other casing (normalise: the live path's
//!   `value__exact` lookup would miss it and create a duplicate);
//! - `python_format`: written by the Python connector (or without holders): adopt;
//! - `content`: a Sigma rule / Yara file whose content differs from the indicator's pattern
//!   (restore);
//! - `disabled`: disabled by hand while indicators still want it: reported, re-enabled only with
//!   `HARFANGLAB_INTEL_RECONCILE_ENFORCE_ENABLED=true`.

use super::actual::{ActualIndex, ActualIoc, ActualRule, HolderEntry, digest};
use crate::harfanglab::model::RuleKind;
use crate::sync::comment::Origin;
use crate::sync::repair::HeldObject;
use crate::sync::rule_holders;
use crate::translate::{IocKey, Translation};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// What kind of drift.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Missing,
    Orphaned,
    Duplicate,
    PythonFormat,
    Content,
    Disabled,
}

impl Class {
    pub const ALL: [Class; 6] = [
        Class::Missing,
        Class::Orphaned,
        Class::Duplicate,
        Class::PythonFormat,
        Class::Content,
        Class::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Missing => "missing",
            Class::Orphaned => "orphaned",
            Class::Duplicate => "duplicate",
            Class::PythonFormat => "python_format",
            Class::Content => "content",
            Class::Disabled => "disabled",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a repair does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Hold,
    Release,
    Merge,
    Normalise,
    Adopt,
    Restore,
    /// Reported only.
    Report,
    ReEnable,
}

/// One drift found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub class: Class,
    /// `IOC domain_name evil.com`, `Sigma rule "x"`, ...
    pub object: String,
    pub action: Action,
    pub reason: String,
}

/// The repairs of one desired indicator.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndicatorPlan {
    pub drift: Vec<Drift>,
    /// Upsert the indicator (creates, holds, adoption, content, re-enable): the live path's own
    /// write, which reads every object again first.
    pub upsert: bool,
    /// Duplicate groups to merge first: normalised key and the stored keys of the group.
    pub merges: Vec<(IocKey, Vec<IocKey>)>,
    /// Holds the indicator has on objects it no longer wants: object and the recorded id.
    pub releases: Vec<(HeldObject, String)>,
}

fn ioc_name(key: &IocKey) -> String {
    format!("IOC {} {}", key.ioc_type.as_str(), key.value)
}

fn rule_name(r: &ActualRule) -> String {
    match r.kind {
        RuleKind::Sigma => format!("Sigma rule {:?}", r.name),
        RuleKind::Yara => format!("Yara file {:?}", r.name),
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({:?}): {}",
            self.class.as_str(),
            self.object,
            self.action,
            self.reason
        )
    }
}

fn holds_ioc(r: &ActualIoc, aliases: &[&str]) -> bool {
    r.holders.iter().any(|h| {
        aliases.contains(&h.id.as_str())
            || h.standard_id
                .as_deref()
                .is_some_and(|s| aliases.contains(&s))
    })
}

/// Was this disabled IOC rule disabled by a person? (Same rule as the sync layer.)
fn ioc_disabled_by_hand(r: &ActualIoc) -> bool {
    !r.enabled
        && match r.origin {
            Origin::Ours => !r.holders.is_empty(),
            Origin::Python => false,
            Origin::Empty | Origin::Foreign => true,
        }
}

fn rule_disabled_by_hand(r: &ActualRule) -> bool {
    !r.enabled && r.holders.as_ref().is_some_and(|h| !h.is_empty())
}

/// Plan the repairs of one desired indicator: `id` and `other_ids` are the ids its holder entries
/// may carry, `translation` what it wants now (empty when revoked). Objects listing one of its
/// ids that it does not want are released from it.
pub fn plan_indicator(
    index: &ActualIndex,
    id: &str,
    other_ids: &[String],
    translation: &Translation,
    enforce_enabled: bool,
) -> IndicatorPlan {
    let mut plan = IndicatorPlan::default();
    let aliases: Vec<&str> = std::iter::once(id)
        .chain(other_ids.iter().map(String::as_str))
        .collect();
    let drift = |plan: &mut IndicatorPlan, class, object: String, action, reason: &str| {
        plan.drift.push(Drift {
            class,
            object,
            action,
            reason: reason.to_owned(),
        });
    };
    // Objects it wants, by index position, to find the holds it no longer needs.
    let mut wanted_iocs: HashSet<&str> = HashSet::new();
    let mut wanted_rules: HashSet<&str> = HashSet::new();
    for key in &translation.iocs {
        let found = index.iocs_for(key);
        wanted_iocs.extend(found.iter().map(|r| r.id.as_str()));
        let object = ioc_name(key);
        let Some(first) = found.first() else {
            missing(&mut plan, object);
            continue;
        };
        let keeper = found
            .iter()
            .find(|r| r.stored.value == key.value)
            .unwrap_or(first);
        if found.len() > 1 {
            drift(
                &mut plan,
                Class::Duplicate,
                object.clone(),
                Action::Merge,
                &format!("{} rules normalise to this value", found.len()),
            );
            plan.merges.push((
                key.clone(),
                found.iter().map(|r| r.stored.clone()).collect(),
            ));
            plan.upsert = true;
        } else if first.stored.value != key.value {
            drift(
                &mut plan,
                Class::Duplicate,
                object.clone(),
                Action::Normalise,
                &format!(
                    "stored as {:?}: an exact lookup misses it and would create a duplicate",
                    first.stored.value
                ),
            );
            plan.merges.push((key.clone(), vec![first.stored.clone()]));
            plan.upsert = true;
        }
        let held = found.iter().any(|r| holds_ioc(r, &aliases));
        match keeper.origin {
            Origin::Python => {
                drift(
                    &mut plan,
                    Class::PythonFormat,
                    object.clone(),
                    Action::Adopt,
                    "comment written by the Python connector",
                );
                plan.upsert = true;
            }
            Origin::Empty | Origin::Foreign if !held => {
                drift(
                    &mut plan,
                    Class::Missing,
                    object.clone(),
                    Action::Hold,
                    "present without connector ownership",
                );
                plan.upsert = true;
            }
            _ if !held => {
                drift(
                    &mut plan,
                    Class::Missing,
                    object.clone(),
                    Action::Hold,
                    "present, but this indicator is not among its holders",
                );
                plan.upsert = true;
            }
            _ => {}
        }
        if ioc_disabled_by_hand(keeper) {
            disabled(&mut plan, object, enforce_enabled);
        }
    }
    for (kind, spec) in [
        (
            RuleKind::Sigma,
            translation
                .sigma
                .as_ref()
                .map(|s| (&s.name, &s.content, s.meta.id.as_deref())),
        ),
        (
            RuleKind::Yara,
            translation
                .yara
                .as_ref()
                .map(|s| (&s.name, &s.content, None)),
        ),
    ] {
        let Some((name, content, sigma_id)) = spec else {
            continue;
        };
        let found: Vec<&ActualRule> = match sigma_id {
            Some(sid) => index.sigma_for(sid),
            None => index
                .named(kind, name)
                .into_iter()
                .filter(|r| r.sigma_id.is_none() || kind == RuleKind::Yara)
                .collect(),
        };
        let object = match kind {
            RuleKind::Sigma => format!("Sigma rule {name:?}"),
            RuleKind::Yara => format!("Yara file {name:?}"),
        };
        // Prefer the one this indicator holds (names are not unique).
        let Some(rule) = found
            .iter()
            .find(|r| {
                r.holders
                    .as_ref()
                    .is_some_and(|h| h.iter().any(|x| aliases.contains(&x.as_str())))
            })
            .or(found.first())
        else {
            missing(&mut plan, object);
            continue;
        };
        wanted_rules.insert(rule.id.as_str());
        match &rule.holders {
            None => {
                drift(
                    &mut plan,
                    Class::PythonFormat,
                    object.clone(),
                    Action::Adopt,
                    "written without a holders line (Python connector or an earlier version)",
                );
                plan.upsert = true;
            }
            Some(h) if !h.iter().any(|x| aliases.contains(&x.as_str())) => {
                drift(
                    &mut plan,
                    Class::Missing,
                    object.clone(),
                    Action::Hold,
                    "present, but this indicator is not among its holders",
                );
                plan.upsert = true;
            }
            Some(_) => {}
        }
        let wanted = rule_holders::split(kind, content).1;
        if rule.body_digest != digest(wanted) {
            drift(
                &mut plan,
                Class::Content,
                object.clone(),
                Action::Restore,
                "content differs from the indicator's pattern",
            );
            plan.upsert = true;
        }
        if rule_disabled_by_hand(rule) {
            disabled(&mut plan, object, enforce_enabled);
        }
    }
    // Holds it no longer needs (its pattern changed while we were not looking).
    for alias in &aliases {
        let (iocs, rules) = index.held_by(alias);
        for r in iocs
            .into_iter()
            .filter(|r| !wanted_iocs.contains(r.id.as_str()))
        {
            drift(
                &mut plan,
                Class::Orphaned,
                ioc_name(&r.key),
                Action::Release,
                "the indicator no longer wants it",
            );
            plan.releases.push((r.held_object(), (*alias).to_owned()));
        }
        for r in rules
            .into_iter()
            .filter(|r| !wanted_rules.contains(r.id.as_str()))
        {
            drift(
                &mut plan,
                Class::Orphaned,
                rule_name(r),
                Action::Release,
                "the indicator no longer wants it",
            );
            plan.releases.push((r.held_object(), (*alias).to_owned()));
        }
    }
    plan
}

/// Wanted and absent: created by the upsert.
fn missing(plan: &mut IndicatorPlan, object: String) {
    plan.upsert = true;
    plan.drift.push(Drift {
        class: Class::Missing,
        object,
        action: Action::Create,
        reason: "wanted and absent".to_owned(),
    });
}

fn disabled(plan: &mut IndicatorPlan, object: String, enforce: bool) {
    let (action, reason) = if enforce {
        plan.upsert = true;
        (
            Action::ReEnable,
            "disabled by hand while held (HARFANGLAB_INTEL_RECONCILE_ENFORCE_ENABLED)",
        )
    } else {
        (
            Action::Report,
            "disabled by hand while held; left disabled (set HARFANGLAB_INTEL_RECONCILE_ENFORCE_ENABLED=true to re-enable)",
        )
    };
    plan.drift.push(Drift {
        class: Class::Disabled,
        object,
        action,
        reason: reason.to_owned(),
    });
}

/// What to release one orphaned holder from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Orphaned {
    pub objects: Vec<HeldObject>,
    pub drift: Vec<Drift>,
}

/// Holders no longer in the desired set, by holder, and the numbers the guard needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrphanPlan {
    /// Recorded holder id → the objects to release it from.
    pub by_holder: BTreeMap<String, Orphaned>,
    /// Objects that would be left without any holder (deleted or disabled).
    pub emptied: usize,
    /// Objects with at least one recorded holder (the guard's denominator).
    pub held: usize,
}

impl OrphanPlan {
    /// The share of held objects the pass would delete or disable.
    pub fn release_ratio(&self) -> f64 {
        if self.held == 0 {
            0.0
        } else {
            self.emptied as f64 / self.held as f64
        }
    }
}

/// Every holder entry whose indicator is not in the desired set (`desired` = every id a desired
/// indicator's entry may carry).
pub fn plan_orphans(index: &ActualIndex, desired: &HashSet<&str>) -> OrphanPlan {
    let mut plan = OrphanPlan::default();
    let is_desired = |e: &HolderEntry| {
        desired.contains(e.id.as_str())
            || e.standard_id
                .as_deref()
                .is_some_and(|s| desired.contains(s))
    };
    for r in &index.iocs {
        if r.holders.is_empty() {
            continue;
        }
        plan.held += 1;
        let gone: Vec<&HolderEntry> = r.holders.iter().filter(|h| !is_desired(h)).collect();
        if gone.len() == r.holders.len() {
            plan.emptied += 1;
        }
        for h in gone {
            let o = plan.by_holder.entry(h.id.clone()).or_default();
            o.drift.push(Drift {
                class: Class::Orphaned,
                object: ioc_name(&r.key),
                action: Action::Release,
                reason: format!("holder {} is not in the live stream's indicators", h.id),
            });
            o.objects.push(r.held_object());
        }
    }
    for r in &index.rules {
        let Some(holders) = r.holders.as_ref().filter(|h| !h.is_empty()) else {
            continue;
        };
        plan.held += 1;
        let gone: Vec<&String> = holders
            .iter()
            .filter(|h| !desired.contains(h.as_str()))
            .collect();
        if gone.len() == holders.len() {
            plan.emptied += 1;
        }
        for h in gone {
            let o = plan.by_holder.entry(h.clone()).or_default();
            o.drift.push(Drift {
                class: Class::Orphaned,
                object: rule_name(r),
                action: Action::Release,
                reason: format!("holder {h} is not in the live stream's indicators"),
            });
            o.objects.push(r.held_object());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harfanglab::model::{IocRule, RemoteRule};
    use crate::rules::sigma::parse_sigma;
    use crate::translate::{IocType, SigmaSpec};

    const SIGMA: &str = "title: T\nid: 6b1e9ef4-1b59-4d3a-9b8c-2f5c0e2a7d11\nlogsource:\n  product: windows\ndetection:\n  sel:\n    Image: x\n  condition: sel\n";

    fn ours(ids: &[&str]) -> String {
        let holders: Vec<String> = ids
            .iter()
            .map(|i| format!(r#"{{"id":"{i}","standard_id":null,"score":null,"platforms":[]}}"#))
            .collect();
        format!(
            r#"{{"indicator_id":"{}","indicator_score":null,"indicator_platforms":[],"holders":[{}]}}"#,
            ids.first().unwrap_or(&""),
            holders.join(",")
        )
    }

    fn ioc(id: &str, value: &str, comment: &str, enabled: bool) -> IocRule {
        IocRule {
            id: id.into(),
            ioc_type: "domain_name".into(),
            value: value.into(),
            source_id: Some("s".into()),
            description: None,
            comment: Some(comment.into()),
            enabled,
            hl_status: Some("stable".into()),
        }
    }

    fn sigma(id: &str, content: &str, enabled: bool) -> RemoteRule {
        RemoteRule {
            id: id.into(),
            name: "T".into(),
            content: content.into(),
            source_id: Some("s".into()),
            enabled,
            hl_status: Some("stable".into()),
            rule_name: None,
            rule_names: Vec::new(),
        }
    }

    fn dom(v: &str) -> IocKey {
        IocKey {
            ioc_type: IocType::DomainName,
            value: v.into(),
        }
    }

    fn wants(domains: &[&str], sigma: Option<&str>) -> Translation {
        Translation {
            iocs: domains.iter().map(|d| dom(d)).collect(),
            sigma: sigma.map(|c| SigmaSpec {
                meta: parse_sigma(c).unwrap(),
                name: "T".into(),
                content: c.into(),
            }),
            ..Translation::default()
        }
    }

    fn classes(plan: &IndicatorPlan) -> Vec<(Class, Action)> {
        plan.drift.iter().map(|d| (d.class, d.action)).collect()
    }

    #[test]
    fn converged_state_has_no_drift_and_needs_no_write() {
        let content = rule_holders::join(
            RuleKind::Sigma,
            &{
                let mut h = rule_holders::RuleHolders::default();
                h.add("int-a", &[]);
                h
            },
            SIGMA,
        );
        let index = ActualIndex::from_rows(
            [ioc("r1", "a.com", &ours(&["int-a"]), true)],
            [sigma("s1", &content, true)],
            [],
        );
        let plan = plan_indicator(&index, "int-a", &[], &wants(&["a.com"], Some(SIGMA)), false);
        assert_eq!(plan, IndicatorPlan::default());
    }

    #[test]
    fn each_class_is_found_with_its_repair() {
        let index = ActualIndex::from_rows(
            [
                // Python format, mixed case, duplicated by a normalised copy.
                ioc("r1", "Evil.COM", r#"{"indicator_id":"indicator--a"}"#, true),
                ioc("r2", "evil.com", &ours(&["int-z"]), true),
                // Held by someone else only.
                ioc("r3", "b.com", &ours(&["int-z"]), true),
                // Held by us but no longer wanted.
                ioc("r4", "old.com", &ours(&["int-a", "int-z"]), true),
                // Disabled by hand while held.
                ioc("r5", "c.com", &ours(&["int-a"]), false),
            ],
            // Content edited by hand, no holders line.
            [sigma("s1", &SIGMA.replace("Image: x", "Image: y"), true)],
            [],
        );
        let t = wants(&["evil.com", "b.com", "c.com", "new.com"], Some(SIGMA));
        let plan = plan_indicator(&index, "int-a", &["indicator--a".to_owned()], &t, false);
        let got = classes(&plan);
        for want in [
            (Class::Duplicate, Action::Merge),
            (Class::Missing, Action::Hold),
            (Class::Missing, Action::Create),
            (Class::Disabled, Action::Report),
            (Class::PythonFormat, Action::Adopt),
            (Class::Content, Action::Restore),
            (Class::Orphaned, Action::Release),
        ] {
            assert!(got.contains(&want), "{want:?} missing from {got:?}");
        }
        assert!(plan.upsert);
        assert_eq!(
            plan.merges,
            vec![(dom("evil.com"), vec![dom("Evil.COM"), dom("evil.com")])]
        );
        assert_eq!(plan.releases.len(), 1);
        assert_eq!(plan.releases[0].1, "int-a");
        let enforced = plan_indicator(&index, "int-a", &[], &t, true);
        assert!(classes(&enforced).contains(&(Class::Disabled, Action::ReEnable)));
    }

    #[test]
    fn orphans_and_the_guard_numbers() {
        let index = ActualIndex::from_rows(
            [
                ioc("r1", "a.com", &ours(&["int-a", "int-gone"]), true),
                ioc("r2", "b.com", &ours(&["int-gone"]), true),
                ioc("r3", "c.com", r#"{"indicator_id":"indicator--py"}"#, true),
                ioc("r4", "d.com", "a note", true),
            ],
            [],
            [],
        );
        let desired: HashSet<&str> = ["int-a", "indicator--py"].into_iter().collect();
        let plan = plan_orphans(&index, &desired);
        assert_eq!(plan.held, 3, "a foreign comment holds nothing");
        assert_eq!(plan.emptied, 1);
        assert_eq!(plan.by_holder.keys().collect::<Vec<_>>(), ["int-gone"]);
        assert_eq!(plan.by_holder["int-gone"].objects.len(), 2);
        // An empty OpenCTI answer releases everything we hold.
        let none = plan_orphans(&index, &HashSet::new());
        assert_eq!(none.release_ratio(), 1.0);
        assert!((plan.release_ratio() - 1.0 / 3.0).abs() < 1e-9);
    }
}
