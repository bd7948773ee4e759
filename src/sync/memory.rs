//! `MemoryApi`: an in-memory HarfangLab threat-intel store implementing [`ThreatIntelApi`], for
//! tests of `sync` and of the modules that drive it (no threads, sockets or server needed).
//!
//! It follows what `docs/harfanglab-api.md` knows of the server, with the same rules as the HTTP
//! simulator (`sim::harfanglab`) wherever the spec infers: IOC rules are unique per
//! (source, type, value) and a duplicate create is `AlreadyExists` (§7); a Sigma rule's `id`, when
//! a UUID, is its object id, a create of an existing id is refused unless `overwrite` and an
//! update may not change it (§6.3); a YARA file sharing a `meta: id` with another file of its list
//! (or, opt-in, a rule identifier) is refused on create and on update
//! (`content::yara_files_clash`). Refusals come out as the real client reports the simulator's
//! answers (its "already exists" is `AlreadyExists`). Names are not unique; deleting a missing
//! object is fine. It counts
//! calls per operation and can inject failures or stale reads for chosen objects. The handle is
//! a cheap `Clone` sharing one store, so several `Syncer`s can play several processes.

use crate::harfanglab::HarfangLabError;
use crate::harfanglab::api::ThreatIntelApi;
use crate::harfanglab::model::{IocRule, IocRuleBody, RemoteRule, RuleBody, RuleFilter, RuleKind};
use crate::sync::content;
use crate::translate::{HARFANGLAB_NAME_MAX, IocKey};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The duplicate-IOC body a real server sent (connectors#1975).
pub const IOC_DUPLICATE_BODY: &str =
    r#"{"__all__": ["['Ioc rule with this Type, Value and Source already exists.']"]}"#;

/// Which calls an injected fault applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Calls about the IOC with this value (find, create, update, delete).
    IocValue(String),
    /// Calls about the Sigma rule / YARA file with this name or object id, or a lookup by it.
    Rule(String),
    /// Every call.
    Any,
}

/// What an injected fault does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with this error.
    Fail(HarfangLabError),
    /// A read answers "absent" (as if another process created the object just after); ignored
    /// by writes.
    Miss,
}

#[derive(Clone, Debug)]
struct Injection {
    target: Target,
    fault: Fault,
    /// `None`: forever.
    remaining: Option<u32>,
}

/// IOC uniqueness key: (source id, type, value).
type IocIndexKey = (String, String, String);

#[derive(Default)]
struct Store {
    iocs: BTreeMap<String, IocRule>,
    /// The uniqueness index over `iocs`, so lookups stay O(log n) in benchmarks.
    ioc_index: BTreeMap<IocIndexKey, String>,
    sigma: BTreeMap<String, RemoteRule>,
    yara: BTreeMap<String, RemoteRule>,
    next_id: u64,
}

impl Store {
    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.next_id)
    }

    fn index_key(rule: &IocRule) -> IocIndexKey {
        (
            rule.source_id.clone().unwrap_or_default(),
            rule.ioc_type.clone(),
            rule.value.clone(),
        )
    }

    fn put_ioc(&mut self, rule: IocRule) {
        self.remove_ioc(&rule.id);
        self.ioc_index
            .insert(Store::index_key(&rule), rule.id.clone());
        self.iocs.insert(rule.id.clone(), rule);
    }

    fn remove_ioc(&mut self, id: &str) {
        if let Some(old) = self.iocs.remove(id) {
            self.ioc_index.remove(&Store::index_key(&old));
        }
    }

    /// Id of the IOC rule with this (source, type, value).
    fn ioc_id(&self, source_id: &str, ioc_type: &str, value: &str) -> Option<&String> {
        self.ioc_index
            .get(&(source_id.to_owned(), ioc_type.to_owned(), value.to_owned()))
    }

    fn rules(&mut self, kind: RuleKind) -> &mut BTreeMap<String, RemoteRule> {
        match kind {
            RuleKind::Sigma => &mut self.sigma,
            RuleKind::Yara => &mut self.yara,
        }
    }
}

#[derive(Default)]
struct Inner {
    store: Mutex<Store>,
    calls: Mutex<BTreeMap<&'static str, u64>>,
    faults: Mutex<Vec<Injection>>,
    interleave: AtomicBool,
    unique_yara_rule_names: AtomicBool,
}

/// An in-memory HarfangLab; clones share the same store.
#[derive(Clone, Default)]
pub struct MemoryApi {
    inner: Arc<Inner>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The fake's state stays consistent across a panicking test thread: each call either
    // finished its update or never started it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryApi {
    pub fn new() -> MemoryApi {
        MemoryApi::default()
    }

    /// Yield the thread inside every call, so concurrent callers interleave between a find and
    /// the create that follows it (makes races likely in tests without sleeping).
    pub fn set_interleave(&self, on: bool) {
        self.inner.interleave.store(on, Ordering::Relaxed);
    }

    /// Also refuse a YARA file declaring a rule identifier another file of its source list
    /// declares (the simulator's `SimConfig::unique_yara_rule_names`; off by default, as there).
    pub fn set_unique_yara_rule_names(&self, on: bool) {
        self.inner
            .unique_yara_rule_names
            .store(on, Ordering::Relaxed);
    }

    /// Inject `fault` into the next `times` matching calls (`None`: all of them).
    pub fn inject(&self, target: Target, fault: Fault, times: Option<u32>) {
        locked(&self.inner.faults).push(Injection {
            target,
            fault,
            remaining: times,
        });
    }

    /// Remove every injected fault.
    pub fn clear_faults(&self) {
        locked(&self.inner.faults).clear();
    }

    /// Total calls made.
    pub fn calls(&self) -> u64 {
        locked(&self.inner.calls).values().sum()
    }

    /// Calls made to one operation (`find_ioc`, `create_ioc`, `update_ioc`, `delete_ioc`,
    /// `get_rule`, `find_rules`, `create_rule`, `update_rule`, `delete_rule`).
    pub fn calls_to(&self, op: &str) -> u64 {
        locked(&self.inner.calls).get(op).copied().unwrap_or(0)
    }

    pub fn reset_calls(&self) {
        locked(&self.inner.calls).clear();
    }

    /// Every IOC rule, in id order.
    pub fn iocs(&self) -> Vec<IocRule> {
        locked(&self.inner.store).iocs.values().cloned().collect()
    }

    /// Every Sigma rule or YARA file, in id order.
    pub fn rules(&self, kind: RuleKind) -> Vec<RemoteRule> {
        locked(&self.inner.store)
            .rules(kind)
            .values()
            .cloned()
            .collect()
    }

    /// Store an IOC rule as is (seeding: a rule made by a person or the Python connector).
    pub fn insert_ioc(&self, rule: IocRule) {
        locked(&self.inner.store).put_ioc(rule);
    }

    /// Store a Sigma rule or YARA file as is.
    pub fn insert_rule(&self, kind: RuleKind, rule: RemoteRule) {
        locked(&self.inner.store)
            .rules(kind)
            .insert(rule.id.clone(), rule);
    }

    /// Count the call, yield if asked, and apply the first matching fault.
    fn enter(&self, op: &'static str, subjects: &[&str], is_read: bool) -> Option<Fault> {
        *locked(&self.inner.calls).entry(op).or_default() += 1;
        if self.inner.interleave.load(Ordering::Relaxed) {
            std::thread::yield_now();
        }
        let mut faults = locked(&self.inner.faults);
        let hit = faults.iter_mut().position(|inj| {
            let matches = match &inj.target {
                Target::Any => true,
                Target::IocValue(v) => op.ends_with("_ioc") && subjects.contains(&v.as_str()),
                Target::Rule(v) => !op.ends_with("_ioc") && subjects.contains(&v.as_str()),
            };
            matches && (is_read || matches!(inj.fault, Fault::Fail(_)))
        })?;
        let fault = faults[hit].fault.clone();
        if let Some(n) = &mut faults[hit].remaining {
            *n -= 1;
            if *n == 0 {
                faults.remove(hit);
            }
        }
        Some(fault)
    }

    fn ioc_value_of(&self, id: &str) -> String {
        locked(&self.inner.store)
            .iocs
            .get(id)
            .map(|r| r.value.clone())
            .unwrap_or_default()
    }

    fn rule_name_of(&self, kind: RuleKind, id: &str) -> String {
        locked(&self.inner.store)
            .rules(kind)
            .get(id)
            .map(|r| r.name.clone())
            .unwrap_or_default()
    }
}

fn op_name(verb: &str, kind: RuleKind) -> String {
    format!("{verb} {}", kind.resource())
}

fn not_found(op: String) -> HarfangLabError {
    HarfangLabError::Status {
        op,
        status: 404,
        body: r#"{"detail": "Not found."}"#.to_owned(),
        retry_after: None,
    }
}

fn bad_request(op: String, field: &str, message: &str) -> HarfangLabError {
    HarfangLabError::Status {
        op,
        status: 400,
        body: serde_json::json!({ field: [message] }).to_string(),
        retry_after: None,
    }
}

fn rejected(op: String, message: String) -> HarfangLabError {
    HarfangLabError::RuleRejected {
        op,
        code: Some(400),
        message,
    }
}

/// What the client makes of the simulator's answer to a YARA file clashing with `name`'s (in the
/// import envelope on create, a 400 on update): its "already exists" is a duplicate.
fn yara_duplicate(op: String, name: &str) -> HarfangLabError {
    HarfangLabError::AlreadyExists {
        op,
        body: format!(
            "Duplicate rule: a yara rule of the file {name:?} already exists in this source."
        ),
    }
}

/// DRF-level checks shared by rule create and update (Swagger `_CreateSigmaRule`).
fn check_rule_body(op: &str, body: &RuleBody) -> Result<(), HarfangLabError> {
    let len = body.name.chars().count();
    if body.source_id.is_empty() {
        return Err(bad_request(
            op.to_owned(),
            "source_id",
            "This field is required.",
        ));
    }
    if len == 0 || len > HARFANGLAB_NAME_MAX {
        return Err(bad_request(
            op.to_owned(),
            "name",
            "Ensure this field has between 1 and 100 characters.",
        ));
    }
    if body.content.trim().is_empty() {
        return Err(bad_request(
            op.to_owned(),
            "content",
            "This field may not be blank.",
        ));
    }
    Ok(())
}

impl ThreatIntelApi for MemoryApi {
    fn find_ioc(&self, source_id: &str, key: &IocKey) -> Result<Option<IocRule>, HarfangLabError> {
        match self.enter("find_ioc", &[&key.value], true) {
            Some(Fault::Fail(e)) => return Err(e),
            Some(Fault::Miss) => return Ok(None),
            None => {}
        }
        let store = locked(&self.inner.store);
        Ok(store
            .ioc_id(source_id, key.ioc_type.as_str(), &key.value)
            .and_then(|id| store.iocs.get(id))
            .cloned())
    }

    fn create_ioc(&self, body: &IocRuleBody) -> Result<IocRule, HarfangLabError> {
        if let Some(Fault::Fail(e)) = self.enter("create_ioc", &[&body.value], false) {
            return Err(e);
        }
        let op = "create IOCRule".to_owned();
        if body.value.is_empty() {
            return Err(bad_request(op, "value", "This field may not be blank."));
        }
        let mut store = locked(&self.inner.store);
        let duplicate = store
            .ioc_id(&body.source_id, body.ioc_type.as_str(), &body.value)
            .is_some();
        if duplicate {
            return Err(HarfangLabError::AlreadyExists {
                op,
                body: IOC_DUPLICATE_BODY.to_owned(),
            });
        }
        let id = store.new_id();
        let rule = content::ioc_echo(id, body);
        store.put_ioc(rule.clone());
        Ok(rule)
    }

    fn update_ioc(&self, id: &str, body: &IocRuleBody) -> Result<IocRule, HarfangLabError> {
        let value = self.ioc_value_of(id);
        if let Some(Fault::Fail(e)) = self.enter("update_ioc", &[&value, &body.value, id], false) {
            return Err(e);
        }
        let op = "update IOCRule".to_owned();
        let mut store = locked(&self.inner.store);
        if !store.iocs.contains_key(id) {
            return Err(not_found(op));
        }
        let clash = store
            .ioc_id(&body.source_id, body.ioc_type.as_str(), &body.value)
            .is_some_and(|other| other != id);
        if clash {
            return Err(HarfangLabError::AlreadyExists {
                op,
                body: IOC_DUPLICATE_BODY.to_owned(),
            });
        }
        let rule = content::ioc_echo(id.to_owned(), body);
        store.put_ioc(rule.clone());
        Ok(rule)
    }

    fn delete_ioc(&self, id: &str) -> Result<(), HarfangLabError> {
        let value = self.ioc_value_of(id);
        if let Some(Fault::Fail(e)) = self.enter("delete_ioc", &[&value, id], false) {
            return Err(e);
        }
        locked(&self.inner.store).remove_ioc(id);
        Ok(())
    }

    fn get_rule(&self, kind: RuleKind, id: &str) -> Result<Option<RemoteRule>, HarfangLabError> {
        let name = self.rule_name_of(kind, id);
        match self.enter("get_rule", &[id, &name], true) {
            Some(Fault::Fail(e)) => return Err(e),
            Some(Fault::Miss) => return Ok(None),
            None => {}
        }
        Ok(locked(&self.inner.store).rules(kind).get(id).cloned())
    }

    fn find_rules(
        &self,
        kind: RuleKind,
        source_id: &str,
        filter: &RuleFilter,
    ) -> Result<Vec<RemoteRule>, HarfangLabError> {
        let subject = match filter {
            RuleFilter::Name(s) | RuleFilter::Search(s) => s.as_str(),
            RuleFilter::All => "",
        };
        match self.enter("find_rules", &[subject], true) {
            Some(Fault::Fail(e)) => return Err(e),
            Some(Fault::Miss) => return Ok(Vec::new()),
            None => {}
        }
        let mut store = locked(&self.inner.store);
        let needle = subject.to_lowercase();
        Ok(store
            .rules(kind)
            .values()
            .filter(|r| r.source_id.as_deref() == Some(source_id))
            .filter(|r| match filter {
                RuleFilter::Name(n) => r.name == *n,
                // DRF SearchFilter: case-insensitive substring over the name fields.
                RuleFilter::Search(_) => {
                    r.name.to_lowercase().contains(&needle)
                        || r.rule_name
                            .as_deref()
                            .is_some_and(|n| n.to_lowercase().contains(&needle))
                        || r.rule_names
                            .iter()
                            .any(|n| n.to_lowercase().contains(&needle))
                }
                RuleFilter::All => true,
            })
            .cloned()
            .collect())
    }

    fn create_rule(&self, kind: RuleKind, body: &RuleBody) -> Result<RemoteRule, HarfangLabError> {
        if let Some(Fault::Fail(e)) = self.enter("create_rule", &[&body.name], false) {
            return Err(e);
        }
        let op = op_name("create", kind);
        check_rule_body(&op, body)?;
        let unique_names = self.inner.unique_yara_rule_names.load(Ordering::Relaxed);
        let mut store = locked(&self.inner.store);
        let id = match kind {
            RuleKind::Sigma => {
                if content::sigma_title(&body.content).is_none() {
                    return Err(rejected(op, "Invalid Sigma rule: missing title".to_owned()));
                }
                // A UUID `id` is the object id (as the simulator: `content::sigma_object_id`).
                match content::sigma_object_id(&body.content) {
                    Some(sigma_id) if store.sigma.contains_key(&sigma_id) && !body.overwrite => {
                        // The envelope's "already exists", as the client reports it.
                        return Err(HarfangLabError::AlreadyExists {
                            op,
                            body: format!("Sigma rule with this id ({sigma_id}) already exists."),
                        });
                    }
                    Some(sigma_id) => sigma_id,
                    None => store.new_id(),
                }
            }
            RuleKind::Yara => {
                if content::yara_rule_names(&body.content).is_empty() {
                    return Err(rejected(op, "Invalid YARA file: no rule found".to_owned()));
                }
                let clash = store.yara.values().find(|r| {
                    r.source_id.as_deref() == Some(body.source_id.as_str())
                        && content::yara_files_clash(&body.content, &r.content, unique_names)
                });
                match clash {
                    Some(r) if !body.overwrite => {
                        return Err(yara_duplicate(op, &r.name));
                    }
                    Some(r) => r.id.clone(),
                    None => store.new_id(),
                }
            }
        };
        let rule = content::rule_echo(kind, id.clone(), body);
        store.rules(kind).insert(id, rule.clone());
        Ok(rule)
    }

    fn update_rule(
        &self,
        kind: RuleKind,
        id: &str,
        body: &RuleBody,
    ) -> Result<RemoteRule, HarfangLabError> {
        let name = self.rule_name_of(kind, id);
        if let Some(Fault::Fail(e)) = self.enter("update_rule", &[id, &name, &body.name], false) {
            return Err(e);
        }
        let op = op_name("update", kind);
        check_rule_body(&op, body)?;
        let mut store = locked(&self.inner.store);
        if !store.rules(kind).contains_key(id) {
            return Err(not_found(op));
        }
        let unique_names = self.inner.unique_yara_rule_names.load(Ordering::Relaxed);
        match kind {
            RuleKind::Sigma => {
                if content::sigma_title(&body.content).is_none() {
                    return Err(bad_request(
                        op,
                        "content",
                        "Invalid Sigma rule: missing title",
                    ));
                }
                // "The ID of a Sigma rule has to be unique and cannot be modified once the rule
                // has been created" (HarfangLab doc, harfanglab-api.md §6.3).
                if content::sigma_object_id(&body.content).is_some_and(|new| new != id) {
                    return Err(bad_request(
                        op,
                        "content",
                        "The id of a Sigma rule cannot be modified once the rule has been created.",
                    ));
                }
            }
            RuleKind::Yara => {
                if content::yara_rule_names(&body.content).is_empty() {
                    return Err(bad_request(
                        op,
                        "content",
                        "Invalid YARA file: no rule found",
                    ));
                }
                let clash = store.yara.values().find(|r| {
                    r.id != id
                        && r.source_id.as_deref() == Some(body.source_id.as_str())
                        && content::yara_files_clash(&body.content, &r.content, unique_names)
                });
                if let Some(r) = clash {
                    return Err(yara_duplicate(op, &r.name));
                }
            }
        }
        let rule = content::rule_echo(kind, id.to_owned(), body);
        store.rules(kind).insert(id.to_owned(), rule.clone());
        Ok(rule)
    }

    fn delete_rule(&self, kind: RuleKind, id: &str) -> Result<(), HarfangLabError> {
        let name = self.rule_name_of(kind, id);
        if let Some(Fault::Fail(e)) = self.enter("delete_rule", &[id, &name], false) {
            return Err(e);
        }
        locked(&self.inner.store).rules(kind).remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::IocType;

    fn ioc_body(value: &str) -> IocRuleBody {
        IocRuleBody {
            source_id: "src".into(),
            ioc_type: IocType::IpBoth,
            value: value.into(),
            description: String::new(),
            comment: String::new(),
            hl_status: "stable".into(),
            enabled: true,
        }
    }

    fn rule_body(name: &str, content: &str, overwrite: bool) -> RuleBody {
        RuleBody {
            source_id: "src".into(),
            name: name.into(),
            content: content.into(),
            hl_status: "stable".into(),
            enabled: true,
            overwrite,
        }
    }

    const SIGMA: &str = "title: T\nid: 11111111-1111-4111-8111-111111111111\ndetection:\n  s:\n    a: b\n  condition: s\n";

    #[test]
    fn ioc_uniqueness_is_per_source_type_and_value() {
        let api = MemoryApi::new();
        api.create_ioc(&ioc_body("1.2.3.4")).unwrap();
        let dup = api.create_ioc(&ioc_body("1.2.3.4")).unwrap_err();
        assert!(matches!(dup, HarfangLabError::AlreadyExists { .. }));
        let mut other_type = ioc_body("1.2.3.4");
        other_type.ioc_type = IocType::DomainName;
        api.create_ioc(&other_type).unwrap();
        let mut other_source = ioc_body("1.2.3.4");
        other_source.source_id = "src2".into();
        api.create_ioc(&other_source).unwrap();
        assert_eq!(api.iocs().len(), 3);
        let key = IocKey {
            ioc_type: IocType::IpBoth,
            value: "1.2.3.4".into(),
        };
        let found = api.find_ioc("src", &key).unwrap().unwrap();
        assert_eq!(found.ioc_type, "ip_both");
        assert_eq!(api.calls_to("create_ioc"), 4);
        assert_eq!(api.calls(), 5);
    }

    #[test]
    fn seeded_and_updated_iocs_are_found_by_their_current_value() {
        let api = MemoryApi::new();
        let key = |v: &str| IocKey {
            ioc_type: IocType::IpBoth,
            value: v.into(),
        };
        let mut seeded = content::ioc_echo("seed-1".into(), &ioc_body("1.1.1.1"));
        seeded.comment = Some("by hand".into());
        api.insert_ioc(seeded.clone());
        assert_eq!(api.find_ioc("src", &key("1.1.1.1")).unwrap(), Some(seeded));
        api.update_ioc("seed-1", &ioc_body("2.2.2.2")).unwrap();
        assert_eq!(api.find_ioc("src", &key("1.1.1.1")).unwrap(), None);
        assert!(api.find_ioc("src", &key("2.2.2.2")).unwrap().is_some());
        api.create_ioc(&ioc_body("1.1.1.1")).unwrap();
        let clash = api.update_ioc("seed-1", &ioc_body("1.1.1.1")).unwrap_err();
        assert!(matches!(clash, HarfangLabError::AlreadyExists { .. }));
        api.delete_ioc("seed-1").unwrap();
        assert_eq!(api.find_ioc("src", &key("2.2.2.2")).unwrap(), None);
        assert_eq!(api.iocs().len(), 1);
    }

    #[test]
    fn delete_of_missing_objects_is_ok_and_update_of_missing_is_404() {
        let api = MemoryApi::new();
        api.delete_ioc("nope").unwrap();
        api.delete_rule(RuleKind::Yara, "nope").unwrap();
        let err = api.update_ioc("nope", &ioc_body("x")).unwrap_err();
        assert!(matches!(err, HarfangLabError::Status { status: 404, .. }));
    }

    #[test]
    fn sigma_id_is_the_object_id_and_overwrite_replaces() {
        let api = MemoryApi::new();
        let created = api
            .create_rule(RuleKind::Sigma, &rule_body("a", SIGMA, false))
            .unwrap();
        assert_eq!(created.id, "11111111-1111-4111-8111-111111111111");
        assert_eq!(created.rule_name.as_deref(), Some("T"));
        let dup = api
            .create_rule(RuleKind::Sigma, &rule_body("b", SIGMA, false))
            .unwrap_err();
        assert!(matches!(dup, HarfangLabError::AlreadyExists { .. }));
        api.create_rule(RuleKind::Sigma, &rule_body("b", SIGMA, true))
            .unwrap();
        let all = api.rules(RuleKind::Sigma);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, "b");
        let changed_id = SIGMA.replace("1111-4111", "2222-4222");
        let err = api
            .update_rule(
                RuleKind::Sigma,
                &created.id,
                &rule_body("b", &changed_id, false),
            )
            .unwrap_err();
        assert!(matches!(err, HarfangLabError::Status { status: 400, .. }));
        let no_title = api
            .create_rule(RuleKind::Sigma, &rule_body("c", "id: x\n", false))
            .unwrap_err();
        assert!(matches!(no_title, HarfangLabError::RuleRejected { .. }));
    }

    #[test]
    fn yara_clashes_follow_the_simulator_and_search_matches_rule_names() {
        let api = MemoryApi::new();
        let yara = "rule Evil { condition: true }";
        api.create_rule(RuleKind::Yara, &rule_body("f1", yara, false))
            .unwrap();
        // Rule identifiers are not unique by default (as `SimConfig::unique_yara_rule_names`).
        let twin = api
            .create_rule(RuleKind::Yara, &rule_body("f1-twin", yara, false))
            .unwrap();
        api.delete_rule(RuleKind::Yara, &twin.id).unwrap();
        api.set_unique_yara_rule_names(true);
        let dup = api
            .create_rule(RuleKind::Yara, &rule_body("f2", yara, false))
            .unwrap_err();
        assert!(matches!(dup, HarfangLabError::AlreadyExists { .. }));
        api.set_unique_yara_rule_names(false);
        // A shared `meta: id` always clashes, on create and on update.
        let tagged = |rule: &str| format!("rule {rule} {{ meta: id = \"m-1\" condition: true }}");
        let t1 = api
            .create_rule(RuleKind::Yara, &rule_body("t1", &tagged("T1"), false))
            .unwrap();
        let dup = api
            .create_rule(RuleKind::Yara, &rule_body("t2", &tagged("T2"), false))
            .unwrap_err();
        assert!(dup.to_string().contains("Duplicate rule"), "{dup}");
        let f1 = api
            .find_rules(RuleKind::Yara, "src", &RuleFilter::Name("f1".into()))
            .unwrap();
        let err = api
            .update_rule(
                RuleKind::Yara,
                &f1[0].id,
                &rule_body("f1", &tagged("F1"), false),
            )
            .unwrap_err();
        assert!(matches!(err, HarfangLabError::AlreadyExists { .. }));
        api.delete_rule(RuleKind::Yara, &t1.id).unwrap();
        let found = api
            .find_rules(RuleKind::Yara, "src", &RuleFilter::Search("evil".into()))
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].rule_names, vec!["Evil"]);
        let by_name = api
            .find_rules(RuleKind::Yara, "src", &RuleFilter::Name("f2".into()))
            .unwrap();
        assert!(by_name.is_empty());
        let long = "x".repeat(101);
        let err = api
            .create_rule(
                RuleKind::Yara,
                &rule_body(&long, "rule B { condition: true }", false),
            )
            .unwrap_err();
        assert!(matches!(err, HarfangLabError::Status { status: 400, .. }));
    }

    #[test]
    fn injected_faults_hit_only_their_target_and_expire() {
        let api = MemoryApi::new();
        let timeout = HarfangLabError::Timeout {
            op: "create IOCRule".into(),
        };
        api.inject(
            Target::IocValue("bad".into()),
            Fault::Fail(timeout.clone()),
            Some(1),
        );
        assert_eq!(api.create_ioc(&ioc_body("bad")).unwrap_err(), timeout);
        api.create_ioc(&ioc_body("bad")).unwrap();
        api.create_ioc(&ioc_body("good")).unwrap();
        api.inject(Target::IocValue("good".into()), Fault::Miss, None);
        let key = IocKey {
            ioc_type: IocType::IpBoth,
            value: "good".into(),
        };
        assert_eq!(api.find_ioc("src", &key).unwrap(), None);
        assert_eq!(api.find_ioc("src", &key).unwrap(), None);
        api.clear_faults();
        assert!(api.find_ioc("src", &key).unwrap().is_some());
    }
}
