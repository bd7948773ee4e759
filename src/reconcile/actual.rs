//! The actual state: what our three source lists hold, listed page by page and indexed by
//! normalised identity (IOC type + value as `translate::normalised_key` reads a stored rule;
//! Sigma id; rule name), with the holders decoded. Rules outside our three lists are never
//! listed, so never touched.
//!
//! Memory: each object keeps its id, identity, holder ids and a 64-bit digest of its content
//! (not the content): a few hundred bytes per rule for the length of a pass.

use crate::harfanglab::model::{IocRule, RemoteRule, RuleKind, SourceLists};
use crate::harfanglab::{Client, HarfangLabError};
use crate::sync::comment::{Origin, RuleComment};
use crate::sync::content;
use crate::sync::inventory::Inventory;
use crate::sync::repair::HeldObject;
use crate::sync::rule_holders;
use crate::translate::{IocKey, IocType, normalised_key};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// One holder entry of an IOC rule's comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderEntry {
    /// The recorded id (internal id; the standard id for a Python-connector holder).
    pub id: String,
    pub standard_id: Option<String>,
}

/// An IOC rule of our list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActualIoc {
    pub id: String,
    /// Type and value as stored.
    pub stored: IocKey,
    /// Normalised.
    pub key: IocKey,
    pub holders: Vec<HolderEntry>,
    pub origin: Origin,
    pub enabled: bool,
}

/// A Sigma rule or Yara file of our lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActualRule {
    pub kind: RuleKind,
    pub id: String,
    pub name: String,
    /// Lower-cased Sigma `id` (Sigma only).
    pub sigma_id: Option<String>,
    /// Digest of the content without its holders line.
    pub body_digest: u64,
    /// `None`: written without a holders line (Python connector, earlier versions).
    pub holders: Option<Vec<String>>,
    pub enabled: bool,
}

impl ActualRule {
    /// The object as a release addresses it.
    pub fn held_object(&self) -> HeldObject {
        HeldObject::Rule {
            kind: self.kind,
            id: self.id.clone(),
            name: self.name.clone(),
            sigma_id: self.sigma_id.clone(),
        }
    }
}

impl ActualIoc {
    pub fn held_object(&self) -> HeldObject {
        HeldObject::Ioc {
            stored: self.stored.clone(),
            key: self.key.clone(),
        }
    }
}

/// Digest of rule content as reconciliation compares it.
pub fn digest(body: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}

/// Our lists, indexed.
#[derive(Debug, Default)]
pub struct ActualIndex {
    pub iocs: Vec<ActualIoc>,
    pub rules: Vec<ActualRule>,
    /// IOC rules of types this connector does not write (left alone).
    pub foreign_types: usize,
    by_key: HashMap<IocKey, Vec<usize>>,
    sigma_by_id: HashMap<String, Vec<usize>>,
    by_name: HashMap<(RuleKind, String), Vec<usize>>,
    /// Recorded holder id → IOC rules / rules listing it.
    iocs_by_holder: HashMap<String, Vec<usize>>,
    rules_by_holder: HashMap<String, Vec<usize>>,
}

impl ActualIndex {
    /// Index listed objects (for the unit tests; a pass builds it page by page).
    #[cfg(test)]
    pub fn from_rows(
        iocs: impl IntoIterator<Item = IocRule>,
        sigma: impl IntoIterator<Item = RemoteRule>,
        yara: impl IntoIterator<Item = RemoteRule>,
    ) -> ActualIndex {
        let mut index = ActualIndex::default();
        for r in iocs {
            index.add_ioc(r);
        }
        for r in sigma {
            index.add_rule(RuleKind::Sigma, r);
        }
        for r in yara {
            index.add_rule(RuleKind::Yara, r);
        }
        index
    }

    /// List our three source lists (every page) into an index, and teach `inventory` what they
    /// hold (marking it complete).
    pub fn list(
        client: &Client,
        lists: &SourceLists,
        inventory: Option<&Inventory>,
    ) -> Result<ActualIndex, HarfangLabError> {
        let mut index = ActualIndex::default();
        // `source_id` is re-checked: a server that ignored the filter must not hand us other
        // lists' rules to repair.
        let ours = |s: &Option<String>, list: &str| s.as_deref().is_none_or(|s| s == list);
        client.visit_list("IOCRule", &lists.ioc, |page: Vec<IocRule>| {
            for r in page.into_iter().filter(|r| ours(&r.source_id, &lists.ioc)) {
                index.add_ioc(r);
            }
        })?;
        for (kind, source) in [
            (RuleKind::Sigma, &lists.sigma),
            (RuleKind::Yara, &lists.yara),
        ] {
            client.visit_list(kind.resource(), source, |page: Vec<RemoteRule>| {
                for r in page.into_iter().filter(|r| ours(&r.source_id, source)) {
                    index.add_rule(kind, r);
                }
            })?;
        }
        if let Some(inventory) = inventory {
            index.teach(inventory);
        }
        Ok(index)
    }

    /// Put what the index holds into `inventory` (when it is not built yet) and mark it complete.
    pub fn teach(&self, inventory: &Inventory) {
        if inventory.is_complete() {
            return;
        }
        inventory.reserve(self.iocs.len());
        for i in &self.iocs {
            inventory.add_ioc(&i.key);
        }
        for r in &self.rules {
            inventory.add_rule(r.kind, r.sigma_id.as_deref(), &r.name);
        }
        inventory.mark_complete();
    }

    fn add_ioc(&mut self, r: IocRule) {
        let Some(key) = normalised_key(&r.ioc_type, &r.value) else {
            self.foreign_types += 1;
            return;
        };
        let stored = IocKey {
            ioc_type: IocType::parse(&r.ioc_type).unwrap_or(key.ioc_type),
            value: r.value,
        };
        let (comment, origin) = RuleComment::decode(r.comment.as_deref());
        let holders: Vec<HolderEntry> = comment
            .holders
            .iter()
            .cloned()
            .map(|h| HolderEntry {
                id: h.id,
                standard_id: h.standard_id,
            })
            .collect();
        let n = self.iocs.len();
        self.by_key.entry(key.clone()).or_default().push(n);
        for h in &comment.holders {
            self.iocs_by_holder.entry(h.id.clone()).or_default().push(n);
        }
        self.iocs.push(ActualIoc {
            id: r.id,
            stored,
            key,
            holders,
            origin,
            enabled: r.enabled,
        });
    }

    fn add_rule(&mut self, kind: RuleKind, r: RemoteRule) {
        let (recorded, body) = rule_holders::split(kind, &r.content);
        let sigma_id = match kind {
            RuleKind::Sigma => content::sigma_id(body).map(|i| i.to_ascii_lowercase()),
            RuleKind::Yara => None,
        };
        let n = self.rules.len();
        if let Some(id) = &sigma_id {
            self.sigma_by_id.entry(id.clone()).or_default().push(n);
        }
        self.by_name
            .entry((kind, r.name.clone()))
            .or_default()
            .push(n);
        for h in recorded.iter().flat_map(|h| h.ids()) {
            self.rules_by_holder.entry(h.clone()).or_default().push(n);
        }
        self.rules.push(ActualRule {
            kind,
            id: r.id,
            name: r.name,
            sigma_id,
            body_digest: digest(body),
            holders: recorded.map(|h| h.ids().to_vec()),
            enabled: r.enabled,
        });
    }

    /// The IOC rules whose value normalises to `key`.
    pub fn iocs_for(&self, key: &IocKey) -> Vec<&ActualIoc> {
        self.by_key
            .get(key)
            .map(|v| v.iter().map(|&i| &self.iocs[i]).collect())
            .unwrap_or_default()
    }

    /// The Sigma rules with this id (any case).
    pub fn sigma_for(&self, id: &str) -> Vec<&ActualRule> {
        self.sigma_by_id
            .get(&id.to_ascii_lowercase())
            .map(|v| v.iter().map(|&i| &self.rules[i]).collect())
            .unwrap_or_default()
    }

    /// The rules of `kind` named `name`.
    pub fn named(&self, kind: RuleKind, name: &str) -> Vec<&ActualRule> {
        self.by_name
            .get(&(kind, name.to_owned()))
            .map(|v| v.iter().map(|&i| &self.rules[i]).collect())
            .unwrap_or_default()
    }

    /// The IOC rules and rules listing `holder` (exactly that recorded id).
    pub fn held_by(&self, holder: &str) -> (Vec<&ActualIoc>, Vec<&ActualRule>) {
        let pick = |m: &HashMap<String, Vec<usize>>| m.get(holder).cloned().unwrap_or_default();
        (
            pick(&self.iocs_by_holder)
                .into_iter()
                .map(|i| &self.iocs[i])
                .collect(),
            pick(&self.rules_by_holder)
                .into_iter()
                .map(|i| &self.rules[i])
                .collect(),
        )
    }

    /// Objects in the index.
    pub fn len(&self) -> usize {
        self.iocs.len() + self.rules.len()
    }
}

/// Build `inventory` from a listing of our three lists without keeping the objects (startup: a
/// million rules cost one page of memory at a time), then mark it complete. Returns the objects
/// seen.
pub fn build_inventory(
    client: &Client,
    lists: &SourceLists,
    inventory: &Inventory,
) -> Result<usize, HarfangLabError> {
    /// Only what the inventory keeps (the rest of each object is skipped by serde).
    #[derive(serde::Deserialize)]
    struct Ioc {
        #[serde(rename = "type")]
        ioc_type: String,
        value: String,
    }
    #[derive(serde::Deserialize)]
    struct Rule {
        name: String,
        #[serde(default)]
        content: String,
    }
    let mut seen = 0usize;
    client.visit_list("IOCRule", &lists.ioc, |page: Vec<Ioc>| {
        seen += page.len();
        for r in page {
            if let Some(key) = normalised_key(&r.ioc_type, &r.value) {
                inventory.add_ioc(&key);
            }
        }
    })?;
    for (kind, source) in [
        (RuleKind::Sigma, &lists.sigma),
        (RuleKind::Yara, &lists.yara),
    ] {
        client.visit_list(kind.resource(), source, |page: Vec<Rule>| {
            seen += page.len();
            for r in page {
                let sigma_id = match kind {
                    RuleKind::Sigma => content::sigma_id(rule_holders::split(kind, &r.content).1),
                    RuleKind::Yara => None,
                };
                inventory.add_rule(kind, sigma_id.as_deref(), &r.name);
            }
        })?;
    }
    inventory.mark_complete();
    Ok(seen)
}
