//! The inventory: what our three source lists hold, kept as compact fingerprints so the live path
//! creates a new object with one request (POST) instead of lookup + create, and a new Sigma rule
//! without the 404 probe by id.
//!
//! What it stores: a 64-bit fingerprint per IOC key (type + normalised value, exactly as
//! `translate::normalised_key` reads a stored rule), per Sigma id (lower-cased) and, counted, per
//! Sigma rule / Yara file name; nothing else (no ids, no comments, no contents: the live path still
//! reads an existing object before changing it). 9 bytes per fingerprint in the hash table, about
//! 19 bytes per rule with the table's slack (`benches/reconcile.rs` measures 1,000,000 rules).
//!
//! Why it stays correct when others edit the lists:
//! - "present" is only a hint: the live path then looks the object up as before, so a stale
//!   "present" (someone deleted the rule behind our back, or two keys share a fingerprint) costs
//!   the lookup it would have cost anyway, never a wrong write;
//! - "absent" sends a create straight away. For IOCs and Sigma ids HarfangLab itself refuses a
//!   duplicate (`400 already exists`, or the import envelope), which falls back to lookup + update;
//!   so a rule someone else created since the listing is found, not duplicated. Names are not
//!   unique on the server, so names are counted (a name is absent only when no rule we know of has
//!   it) and our own creates and deletes keep the counts; counts never go below what exists
//!   because of us (an over-count is a lookup, never a duplicate).
//! - Until the startup listing has completed, every answer is [`Known::Unknown`] (lookup first).
//!
//! Not owned here: building it (`reconcile::actual` lists the lists), using it (`sync`).

use crate::harfanglab::model::RuleKind;
use crate::translate::IocKey;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// What the inventory knows about an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// Not in our lists as far as we know: create it directly.
    Absent,
    /// Probably there: look it up.
    Present,
    /// The inventory is not built (yet): look it up.
    Unknown,
}

/// Fingerprints are already uniform: the table uses them as their own hash.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type FpSet = HashSet<u64, BuildHasherDefault<Identity>>;
type FpCounts = HashMap<u64, u32, BuildHasherDefault<Identity>>;

/// A counted set that costs a plain set's memory when (as usual) each name is on one rule.
#[derive(Default)]
struct Names {
    present: FpSet,
    /// Rules beyond the first that carry the name.
    extra: FpCounts,
}

impl Names {
    fn add(&mut self, fp: u64) {
        if !self.present.insert(fp) {
            *self.extra.entry(fp).or_insert(0) += 1;
        }
    }

    fn remove(&mut self, fp: u64) {
        match self.extra.get_mut(&fp) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.extra.remove(&fp);
            }
            None => {
                self.present.remove(&fp);
            }
        }
    }
}

/// The inventory of our source lists. Shared by every worker (`Sync`), cheap to query.
#[derive(Default)]
pub struct Inventory {
    /// IOC keys and Sigma ids: HarfangLab refuses duplicates of those itself.
    unique: Mutex<FpSet>,
    /// Sigma rule and Yara file names (names are not unique server side, so they are counted:
    /// `names` holds every name, `extra` how many more rules than one carry it).
    names: Mutex<Names>,
    complete: AtomicBool,
}

/// Namespaces of the fingerprints, so an IOC value never meets a rule name.
#[derive(Hash)]
enum Fp<'a> {
    Ioc(&'a IocKey),
    SigmaId(&'a str),
    Name(RuleKind, &'a str),
}

fn fingerprint(item: &Fp<'_>) -> u64 {
    // Fixed keys: the same object always gets the same fingerprint.
    let mut h = std::hash::DefaultHasher::new();
    item.hash(&mut h);
    h.finish()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inventory")
            .field("complete", &self.is_complete())
            .field("fingerprints", &self.len())
            .finish()
    }
}

impl Inventory {
    pub fn new() -> Inventory {
        Inventory::default()
    }

    /// Has a whole listing gone into it? Before that every answer is [`Known::Unknown`].
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// The listing is in: answers become [`Known::Absent`] / [`Known::Present`].
    pub fn mark_complete(&self) {
        self.complete.store(true, Ordering::Release);
    }

    /// Fingerprints held (IOC keys, Sigma ids and distinct names).
    pub fn len(&self) -> usize {
        lock(&self.unique).len() + lock(&self.names).present.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the tables (capacity, not just what is in use).
    pub fn table_bytes(&self) -> usize {
        // hashbrown: one slot of the entry size plus one control byte per bucket; buckets are
        // about 8/7 of the capacity.
        let slots = |cap: usize, size: usize| cap * 8 / 7 * (size + 1);
        let names = lock(&self.names);
        slots(lock(&self.unique).capacity(), 8)
            + slots(names.present.capacity(), 8)
            + slots(names.extra.capacity(), 16)
    }

    fn answer(&self, present: bool) -> Known {
        match (self.is_complete(), present) {
            (false, _) => Known::Unknown,
            (true, true) => Known::Present,
            (true, false) => Known::Absent,
        }
    }

    /// Is there an IOC rule for `key` in our IOC list?
    pub fn ioc(&self, key: &IocKey) -> Known {
        let fp = fingerprint(&Fp::Ioc(key));
        self.answer(lock(&self.unique).contains(&fp))
    }

    /// Is a rule named `name` of `kind` in our list? / Is the Sigma rule `id` there?
    pub fn rule(&self, kind: RuleKind, sigma_id: Option<&str>, names: &[String]) -> Known {
        let id_known = sigma_id.is_some_and(|id| {
            let fp = fingerprint(&Fp::SigmaId(&id.to_ascii_lowercase()));
            lock(&self.unique).contains(&fp)
        });
        let names_known = {
            let known = lock(&self.names);
            names
                .iter()
                .any(|n| known.present.contains(&fingerprint(&Fp::Name(kind, n))))
        };
        self.answer(id_known || names_known)
    }

    /// An IOC rule for `key` exists (listed, or we created it).
    pub fn add_ioc(&self, key: &IocKey) {
        lock(&self.unique).insert(fingerprint(&Fp::Ioc(key)));
    }

    /// We deleted the IOC rule of `key`.
    pub fn remove_ioc(&self, key: &IocKey) {
        lock(&self.unique).remove(&fingerprint(&Fp::Ioc(key)));
    }

    /// A rule named `name` (Sigma id `sigma_id`) exists (listed, or we created it).
    pub fn add_rule(&self, kind: RuleKind, sigma_id: Option<&str>, name: &str) {
        if let Some(id) = sigma_id {
            lock(&self.unique).insert(fingerprint(&Fp::SigmaId(&id.to_ascii_lowercase())));
        }
        lock(&self.names).add(fingerprint(&Fp::Name(kind, name)));
    }

    /// We deleted the rule named `name` (Sigma id `sigma_id`).
    pub fn remove_rule(&self, kind: RuleKind, sigma_id: Option<&str>, name: &str) {
        if let Some(id) = sigma_id {
            lock(&self.unique).remove(&fingerprint(&Fp::SigmaId(&id.to_ascii_lowercase())));
        }
        lock(&self.names).remove(fingerprint(&Fp::Name(kind, name)));
    }

    /// Make room for `additional` more IOC fingerprints (before a big listing).
    pub fn reserve(&self, additional: usize) {
        lock(&self.unique).reserve(additional);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::IocType;

    fn key(v: &str) -> IocKey {
        IocKey {
            ioc_type: IocType::DomainName,
            value: v.to_owned(),
        }
    }

    #[test]
    fn unknown_until_complete_then_absent_or_present() {
        let inv = Inventory::new();
        inv.add_ioc(&key("a.com"));
        assert_eq!(inv.ioc(&key("a.com")), Known::Unknown);
        inv.mark_complete();
        assert_eq!(inv.ioc(&key("a.com")), Known::Present);
        assert_eq!(inv.ioc(&key("b.com")), Known::Absent);
        inv.remove_ioc(&key("a.com"));
        assert_eq!(inv.ioc(&key("a.com")), Known::Absent);
        // Another type with the same value is another IOC.
        inv.add_ioc(&key("c.com"));
        let url = IocKey {
            ioc_type: IocType::Url,
            value: "c.com".into(),
        };
        assert_eq!(inv.ioc(&url), Known::Absent);
    }

    #[test]
    fn names_are_counted_and_ids_fold_case() {
        let inv = Inventory::new();
        inv.mark_complete();
        let names = |n: &str| vec![n.to_owned()];
        inv.add_rule(RuleKind::Yara, None, "evil");
        inv.add_rule(RuleKind::Yara, None, "evil");
        inv.remove_rule(RuleKind::Yara, None, "evil");
        // One file named "evil" is still there: a create must look it up first.
        assert_eq!(
            inv.rule(RuleKind::Yara, None, &names("evil")),
            Known::Present
        );
        inv.remove_rule(RuleKind::Yara, None, "evil");
        assert_eq!(
            inv.rule(RuleKind::Yara, None, &names("evil")),
            Known::Absent
        );
        // A Sigma rule is known by its id whatever the case, and not as a Yara name.
        inv.add_rule(RuleKind::Sigma, Some("AB-1"), "t");
        assert_eq!(
            inv.rule(RuleKind::Sigma, Some("ab-1"), &names("x")),
            Known::Present
        );
        assert_eq!(
            inv.rule(RuleKind::Sigma, Some("ab-2"), &names("x")),
            Known::Absent
        );
        assert_eq!(inv.rule(RuleKind::Yara, None, &names("t")), Known::Absent);
        assert_eq!(inv.rule(RuleKind::Sigma, None, &names("t")), Known::Present);
    }
}
