//! The sync layer: turns "indicator X wants these HarfangLab objects" (a [`Translation`]) into
//! the minimal set of HarfangLab calls, with reference counting of every object it writes.
//!
//! What it owns, and how it differs from the Python connector (whose IOC comment names one
//! indicator, so the last writer wins, and whose delete removes every IOC of the pattern with no
//! reference check):
//! - **Holders.** Every object records which indicators want it: an IOC rule in its `comment`
//!   ([`comment`]), a Sigma rule / Yara file in a comment line of its content
//!   ([`rule_holders`]). Release removes one holder; the object is deleted (or disabled) only when
//!   no holder is left, and re-enabled when one comes back. Rules written without holders (Python
//!   connector, earlier versions) are adopted; an unchanged object is not patched.
//! - **Merges** ([`Syncer::merge`]): the absorbed indicators' holds move to the target in one write
//!   per object; what only they wanted is released as their delete would.
//! - **Pattern changes** release the former pattern's IOCs that the new one lacks.
//! - **Sigma identity** is the rule's own `id`; **Yara identity** the indicator name (current,
//!   then former: renaming one of several holders takes it out of their file), and on release
//!   also the file that lists the indicator under another name; duplicate conflicts resolve by
//!   find-and-update. Holders that disagree on a rule's content: the newest event's content is
//!   written and the conflict logged with the indicator ids.
//! - **Concurrency.** find → create/update runs under a striped lock per identity ([`locks`]),
//!   and a create answered "already exists" (another process) re-finds and updates.
//! - **Partial failure** of one object never stops the others ([`SyncError`]).
//!
//! Not owned here: translation (`translate`), the REST client (`harfanglab::client`), event
//! ordering and retries of whole events (`pipeline`). One `Syncer` must be shared by all
//! workers (it is `Sync`): the striped locks only serialise callers of the same instance.
//!
//! Decisions on objects this connector did not write (to be stated in the README too):
//! - an IOC rule in our list with an **empty** comment, or a **foreign** one (free text, other
//!   JSON), is adopted by the first indicator that upserts it; foreign text is kept as
//!   `user_comment`, and a rule carrying it is only ever disabled, never deleted;
//! - a Sigma rule / Yara file without a holders line is adopted by the indicator that upserts it
//!   (it becomes the holder), and released by the indicator whose name it carries;
//! - release never touches an object that does not name the released indicator as a holder;
//! - a Sigma rule found by id in another source list is left alone (skipped, warned).

pub mod comment;
pub mod content;
pub mod dry_run;
pub mod inventory;
pub mod locks;
#[cfg(any(test, feature = "testkit"))]
pub mod memory;
pub mod repair;
pub mod rule_holders;

use crate::harfanglab::HarfangLabError;
use crate::harfanglab::api::ThreatIntelApi;
use crate::harfanglab::model::{
    IocRule, IocRuleBody, RemoteRule, RuleBody, RuleFilter, RuleKind, SourceLists,
};
use crate::retry::{FailureKind, Retryable};
use crate::translate::{FormerState, Indicator, IocKey, Translation, truncate_name};
use comment::{Holder, Origin, RuleComment};
use inventory::{Inventory, Known};
use locks::StripedLocks;
use log::{debug, info, warn};
use rule_holders::RuleHolders;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What the sync layer needs from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSettings {
    /// Ids of our three source lists.
    pub lists: SourceLists,
    /// `HARFANGLAB_INTEL_REMOVE_INDICATOR`: delete rules nobody wants (true) or disable them.
    pub remove_indicator: bool,
    /// `HARFANGLAB_INTEL_RULE_MATURITY`, sent as `hl_status` (`stable`, `testing`).
    pub rule_maturity: String,
    /// `HARFANGLAB_INTEL_RECONCILE_ENFORCE_ENABLED`: re-enable a rule someone disabled while
    /// indicators still hold it (false: it stays disabled, counted as `kept_disabled`).
    pub enforce_enabled: bool,
}

/// Per object family: what one upsert/release did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub created: u32,
    pub updated: u32,
    /// Was disabled, is wanted again: updated with `enabled: true`.
    pub re_enabled: u32,
    /// Nobody wants it and `remove_indicator` is false (or it carries a user comment).
    pub disabled: u32,
    pub deleted: u32,
    /// Already as wanted: no write.
    pub unchanged: u32,
    /// Not ours to touch (foreign rule, rule owned by another indicator, other source list).
    pub skipped: u32,
    /// Wanted, but disabled by hand while held (an analyst's false positive): left disabled
    /// (`enforce_enabled` false); its holders are still recorded.
    pub kept_disabled: u32,
}

impl Counts {
    /// Objects written (created, updated, re-enabled, disabled or deleted).
    pub fn writes(&self) -> u32 {
        self.created + self.updated + self.re_enabled + self.disabled + self.deleted
    }

    fn add(&mut self, other: &Counts) {
        self.created += other.created;
        self.updated += other.updated;
        self.re_enabled += other.re_enabled;
        self.disabled += other.disabled;
        self.deleted += other.deleted;
        self.unchanged += other.unchanged;
        self.skipped += other.skipped;
        self.kept_disabled += other.kept_disabled;
    }
}

/// What one `upsert`/`release` did, per family, plus the HarfangLab calls it cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub iocs: Counts,
    pub sigma: Counts,
    pub yara: Counts,
    pub api_calls: u32,
}

impl SyncReport {
    /// Add another report (e.g. to total a batch).
    pub fn add(&mut self, other: &SyncReport) {
        self.iocs.add(&other.iocs);
        self.sigma.add(&other.sigma);
        self.yara.add(&other.yara);
        self.api_calls += other.api_calls;
    }
}

/// A HarfangLab object the sync layer works on, for error context and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncObject {
    Ioc(IocKey),
    /// Sigma rule, by name.
    Sigma(String),
    /// Yara file, by name.
    Yara(String),
}

impl fmt::Display for SyncObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncObject::Ioc(k) => write!(f, "IOC {} {}", k.ioc_type.as_str(), k.value),
            SyncObject::Sigma(n) => write!(f, "Sigma rule {n:?}"),
            SyncObject::Yara(n) => write!(f, "Yara file {n:?}"),
        }
    }
}

/// Some objects of one indicator failed. Every object was attempted (unless a fatal or
/// shutdown error stopped the run); `report` counts what succeeded.
///
/// Which error is kept: the first fatal one, else the first permanent one, else the first
/// retryable one. Classification of the whole: fatal if any failure is fatal; otherwise
/// retryable if any failure is retryable (including shutdown). Retrying the whole event is safe
/// because upsert/release are idempotent: objects that already succeeded cost one find each, a
/// permanent failure fails again and is then recorded by the caller. So a transient failure is
/// never lost because a permanent one happened next to it.
///
/// The details live in a box (read them through `Deref`: `err.error`, `err.failed`, ...) so
/// `Result<SyncReport, SyncError>` stays small.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncError(Box<SyncFailure>);

/// The details of a [`SyncError`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncFailure {
    /// `Indicator::id` of the indicator being synced.
    pub indicator_id: String,
    /// The object whose failure is kept in `error`.
    pub object: SyncObject,
    pub error: HarfangLabError,
    /// How many objects failed in total (≥ 1).
    pub failed: u32,
    /// How many of those failures are worth retrying.
    pub retryable: u32,
    /// How many of the retryable ones are about HarfangLab's availability (unreachable,
    /// timeout, 429, 502-504, shutdown) rather than transient (another 5xx).
    pub unavailable: u32,
    /// The longest `Retry-After` HarfangLab sent with those failures.
    pub retry_after: Option<Duration>,
    /// What was done despite the failures.
    pub report: SyncReport,
}

impl SyncError {
    pub fn new(failure: SyncFailure) -> SyncError {
        SyncError(Box::new(failure))
    }

    /// The process should stop (HarfangLab rejects the credentials).
    pub fn is_fatal(&self) -> bool {
        self.0.error.is_fatal()
    }
}

/// What retrying the whole means: permanent when nothing failed for a retryable reason (or a
/// failure is fatal); unavailable when every retryable failure was about HarfangLab's
/// availability (with the longest `Retry-After`); transient otherwise. A permanent failure next
/// to retryable ones does not make the whole permanent (see the type's doc).
impl Retryable for SyncError {
    fn failure_kind(&self) -> FailureKind {
        let f = &self.0;
        if self.is_fatal() || f.retryable == 0 {
            FailureKind::Permanent
        } else if f.retryable > f.unavailable {
            FailureKind::Transient
        } else {
            FailureKind::Unavailable {
                retry_after: f.retry_after,
            }
        }
    }
}

impl std::ops::Deref for SyncError {
    type Target = SyncFailure;

    fn deref(&self) -> &SyncFailure {
        &self.0
    }
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "indicator {}: {}: {}",
            self.indicator_id, self.object, self.error
        )?;
        if self.failed > 1 {
            write!(
                f,
                " ({} objects failed, {} retryable)",
                self.failed, self.retryable
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for SyncError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// What a striped lock is taken on: one identity per object, namespaced per family.
#[derive(Hash)]
enum LockKey<'a> {
    Ioc(&'a IocKey),
    Sigma(&'a str),
    SigmaName(&'a str),
    Yara(&'a str),
}

/// Applies indicators to HarfangLab. Share one instance between all workers.
pub struct Syncer<A: ThreatIntelApi> {
    api: A,
    settings: SyncSettings,
    locks: StripedLocks,
    inventory: Arc<Inventory>,
}

impl<A: ThreatIntelApi> Syncer<A> {
    /// A syncer with an empty inventory (not built: every object is looked up first until
    /// [`Inventory::mark_complete`]).
    pub fn new(api: A, settings: SyncSettings) -> Syncer<A> {
        Syncer {
            api,
            settings,
            locks: StripedLocks::default(),
            inventory: Arc::new(Inventory::new()),
        }
    }

    /// What our lists hold, as far as we know (built by `reconcile::actual`, kept by our own
    /// creates and deletes).
    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.inventory
    }

    /// The API this syncer writes to.
    pub fn api(&self) -> &A {
        &self.api
    }

    pub fn settings(&self) -> &SyncSettings {
        &self.settings
    }

    /// Make HarfangLab hold what `translation` says for `indicator` (create or update event).
    /// A revoked indicator is released instead. Former-pattern IOCs missing from the new
    /// pattern are released; a rename updates the same Sigma rule / Yara file.
    pub fn upsert(
        &self,
        indicator: &Indicator,
        translation: &Translation,
        former: &FormerState,
    ) -> Result<SyncReport, SyncError> {
        if indicator.revoked {
            debug!("indicator={}: revoked, releasing its objects", indicator.id);
            return self.release(indicator, translation, former);
        }
        let mut run = Run::new(self, indicator, former, &[]);
        run.hold(translation);
        run.finish()
    }

    /// Withdraw `indicator` from everything `translation` (and the former pattern) names
    /// (delete event, revocation). Shared objects lose only this holder. When the indicator's
    /// Sigma/Yara pattern could not be translated, the rule is still looked up by name.
    pub fn release(
        &self,
        indicator: &Indicator,
        translation: &Translation,
        former: &FormerState,
    ) -> Result<SyncReport, SyncError> {
        let mut run = Run::new(self, indicator, former, &[]);
        let mut handled = Handled::default();
        run.withdraw(Whose::Own, indicator, translation, former, &mut handled);
        run.finish()
    }

    /// A merge (`merge` event): `absorbed` indicators were merged into `target`, which now wants
    /// `translation`. Every object the target wants gets the target as a holder and loses the
    /// absorbed ones in the same write (nothing is deleted and re-created, no detection gap);
    /// what only the absorbed indicators wanted is released as their delete would release it.
    /// The target's own former state (`former`) is handled as in [`Syncer::upsert`]. A revoked
    /// target releases everything. A later delete of an absorbed indicator finds no hold: a no-op.
    pub fn merge(
        &self,
        target: &Indicator,
        translation: &Translation,
        former: &FormerState,
        absorbed: &[Absorbed],
    ) -> Result<SyncReport, SyncError> {
        let mut run = Run::new(self, target, former, absorbed);
        let mut handled = Handled::default();
        if target.revoked {
            debug!(
                "indicator={}: revoked, releasing its objects and the absorbed ones'",
                target.id
            );
            run.withdraw(Whose::Both, target, translation, former, &mut handled);
        } else {
            run.hold(translation);
            handled.hold(
                translation,
                run.rule_identities(target, translation, former),
            );
        }
        for a in absorbed {
            run.withdraw(
                Whose::Absorbed,
                &a.indicator,
                &a.translation,
                &a.former,
                &mut handled,
            );
        }
        run.finish()
    }
}

/// An indicator absorbed by a merge, as the `merge` event describes it (it no longer exists in
/// OpenCTI): what it wanted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Absorbed {
    pub indicator: Indicator,
    /// Its translation (observables-only or empty when its pattern cannot be translated).
    pub translation: Translation,
    /// Other ids its holder entries may be recorded under (`stix_ids`).
    pub former: FormerState,
}

/// Whose holds a release removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Whose {
    /// The run's indicator's (delete, revocation, former pattern).
    Own,
    /// The absorbed indicators' (a merge: objects only they wanted).
    Absorbed,
    /// Both (a merge into a revoked target).
    Both,
}

/// Objects a run already dealt with, so a merge touches each object once.
#[derive(Default)]
struct Handled {
    iocs: BTreeSet<IocKey>,
    /// [`RuleIdentity::key`]s.
    rules: BTreeSet<String>,
}

impl Handled {
    /// The objects a held translation wrote (their absorbed holders were dropped in that write).
    fn hold(&mut self, translation: &Translation, rules: Vec<RuleIdentity>) {
        self.iocs.extend(translation.iocs.iter().cloned());
        self.rules.extend(rules.iter().map(RuleIdentity::key));
    }
}

/// How a Sigma rule / Yara file is found: by Sigma id first (Sigma), then by names, then (Yara
/// and id-less Sigma) by its rule identifiers / title among the rules that list a holder.
#[derive(Clone)]
struct RuleIdentity {
    kind: RuleKind,
    /// Sigma `id`; `None` for Yara and for Sigma rules without one.
    sigma_id: Option<String>,
    /// Current name, then the former name on a rename (truncated like names we send).
    names: Vec<String>,
    /// What `search=` finds the rule by: the Yara rule identifiers, the Sigma title.
    terms: Vec<String>,
}

impl RuleIdentity {
    fn sigma(
        id: Option<String>,
        content: &str,
        title: &str,
        name: &str,
        former: Option<&str>,
    ) -> RuleIdentity {
        let title = Some(title.to_owned())
            .filter(|t| !t.is_empty())
            .or_else(|| content::sigma_title(content));
        RuleIdentity {
            kind: RuleKind::Sigma,
            sigma_id: id.or_else(|| content::sigma_id(content)),
            names: names(name, former),
            terms: title.into_iter().collect(),
        }
    }

    fn yara(
        rule_names: &[String],
        content: &str,
        name: &str,
        former: Option<&str>,
    ) -> RuleIdentity {
        let terms = if rule_names.is_empty() {
            content::yara_rule_names(content)
        } else {
            rule_names.to_vec()
        };
        RuleIdentity {
            kind: RuleKind::Yara,
            sigma_id: None,
            names: names(name, former),
            terms,
        }
    }

    /// A Yara / id-less Sigma identity after a rename: the identity by the current name, and the
    /// one by the former name. Any other identity stays whole (`None`).
    fn split_former(&self) -> (RuleIdentity, Option<RuleIdentity>) {
        if self.sigma_id.is_some() || self.names.len() < 2 {
            return (self.clone(), None);
        }
        let with_names = |names: &[String]| RuleIdentity {
            names: names.to_vec(),
            ..self.clone()
        };
        (
            with_names(&self.names[..1]),
            Some(with_names(&self.names[1..])),
        )
    }

    /// One string per object identity, to touch each object once in a merge.
    fn key(&self) -> String {
        match (&self.sigma_id, self.names.first()) {
            (Some(id), _) => format!("sigma-id:{}", id.to_ascii_lowercase()),
            (None, name) => format!("{}:{}", self.kind.resource(), name.map_or("", |n| n)),
        }
    }

    /// Is `rule` (a `search=` hit for `term`) this rule: same Yara rule identifier, same Sigma
    /// id, or (id-less Sigma) same title and no id?
    fn shares(&self, term: &str, rule: &RemoteRule) -> bool {
        match (self.kind, &self.sigma_id) {
            (RuleKind::Yara, _) => {
                rule.rule_names.iter().any(|n| n == term)
                    || content::yara_rule_names(&rule.content)
                        .iter()
                        .any(|n| n == term)
            }
            (RuleKind::Sigma, Some(id)) => content::sigma_id(&rule.content)
                .is_some_and(|theirs| same_sigma_id(Some(id), &theirs)),
            (RuleKind::Sigma, None) => {
                content::sigma_id(&rule.content).is_none()
                    && (rule.rule_name.as_deref() == Some(term)
                        || content::sigma_title(&rule.content).as_deref() == Some(term))
            }
        }
    }
}

/// The current name, then the former one when it differs (both truncated like names we send).
fn names(current: &str, former: Option<&str>) -> Vec<String> {
    let mut names = vec![current.to_owned()];
    if let Some(former) = former.map(truncate_name)
        && former != current
    {
        names.push(former);
    }
    names
}

/// The holders a rule's content records (`None`: written without holders).
fn recorded_holders(kind: RuleKind, rule: &RemoteRule) -> Option<RuleHolders> {
    rule_holders::split(kind, &rule.content).0
}

/// Where a lookup found the rule.
enum Located {
    Ours(RemoteRule),
    /// Same Sigma id, but in a source list that is not ours: not ours to change.
    Elsewhere(RemoteRule),
    Missing,
}

/// A failure kept for the summary error.
struct Failure {
    object: SyncObject,
    error: HarfangLabError,
}

/// One upsert, release or merge in progress: the indicator, the counts, the failures.
struct Run<'s, A: ThreatIntelApi> {
    syncer: &'s Syncer<A>,
    indicator: &'s Indicator,
    former: &'s FormerState,
    /// Every id the indicator's holder entry may carry: internal id, standard id, former ids.
    aliases: Vec<String>,
    /// A merge: every id the absorbed indicators' holder entries may carry. Each object the run
    /// holds loses them in the same write.
    absorbed: Vec<String>,
    report: SyncReport,
    failures: Vec<Failure>,
    /// A fatal or shutdown error ends the run: the rest would fail the same way.
    stopped: bool,
}

fn is_shutdown(e: &HarfangLabError) -> bool {
    matches!(e, HarfangLabError::ShuttingDown { .. })
}

/// A create refused because the object exists (IOC uniqueness, Sigma id, Yara rule clash).
fn is_duplicate(e: &HarfangLabError) -> bool {
    match e {
        HarfangLabError::AlreadyExists { .. } => true,
        HarfangLabError::RuleRejected { message, .. } => {
            let m = message.to_ascii_lowercase();
            m.contains("already exist") || m.contains("duplicate")
        }
        _ => false,
    }
}

/// Internal id, standard id and former ids of one indicator: what its holder entry may carry.
fn aliases_of(indicator: &Indicator, former: &FormerState) -> Vec<String> {
    let mut aliases: Vec<String> = std::iter::once(indicator.id.clone())
        .chain(indicator.standard_id.clone())
        .chain(former.ids.iter().cloned())
        .filter(|a| !a.is_empty())
        .collect();
    aliases.sort();
    aliases.dedup();
    aliases
}

impl<'s, A: ThreatIntelApi> Run<'s, A> {
    fn new(
        syncer: &'s Syncer<A>,
        indicator: &'s Indicator,
        former: &'s FormerState,
        absorbed: &[Absorbed],
    ) -> Self {
        let aliases = aliases_of(indicator, former);
        let mut absorbed: Vec<String> = absorbed
            .iter()
            .flat_map(|a| aliases_of(&a.indicator, &a.former))
            // The target keeps the absorbed standard ids among its own (`stix_ids`); only its own
            // internal and standard ids are never an absorbed holder.
            .filter(|a| *a != indicator.id && Some(a) != indicator.standard_id.as_ref())
            .collect();
        absorbed.sort();
        absorbed.dedup();
        Run {
            syncer,
            indicator,
            former,
            aliases,
            absorbed,
            report: SyncReport::default(),
            failures: Vec::new(),
            stopped: false,
        }
    }

    /// The holder ids a release removes.
    fn ids(&self, whose: Whose) -> Vec<String> {
        match whose {
            Whose::Own => self.aliases.clone(),
            Whose::Absorbed => self.absorbed.clone(),
            Whose::Both => {
                let mut both: Vec<String> =
                    self.aliases.iter().chain(&self.absorbed).cloned().collect();
                both.sort();
                both.dedup();
                both
            }
        }
    }

    /// Hold what `translation` names (upsert; merge target): former-pattern IOCs the new pattern
    /// lacks are released, the rest is created or updated with this indicator as a holder.
    fn hold(&mut self, translation: &Translation) {
        let former = self.former;
        let current: BTreeSet<&IocKey> = translation.iocs.iter().collect();
        match &former.iocs {
            Some(old) => {
                let gone: BTreeSet<&IocKey> = old.iter().filter(|k| !current.contains(k)).collect();
                for key in gone {
                    self.each(SyncObject::Ioc(key.clone()), |r| {
                        r.release_ioc(key, Whose::Own)
                    });
                }
            }
            // A former standard id means the pattern changed (the id derives from it).
            None if !former.ids.is_empty() => warn!(
                "indicator={}: pattern changed but the former pattern is unknown; IOCs of the older pattern may remain in HarfangLab",
                self.indicator.id
            ),
            None => {}
        }
        for key in current {
            self.each(SyncObject::Ioc(key.clone()), |r| r.upsert_ioc(key));
        }
        let former_name = former.name.as_deref();
        if let Some(spec) = &translation.sigma {
            let ident = RuleIdentity::sigma(
                spec.meta.id.clone(),
                &spec.content,
                &spec.meta.title,
                &spec.name,
                former_name,
            );
            self.each(SyncObject::Sigma(spec.name.clone()), |r| {
                r.upsert_rule(&ident, &spec.name, &spec.content)
            });
            // The pattern changed the rule's `id`: HarfangLab cannot change it in place, so the
            // former id's rule loses this holder (after the new one is written: no gap).
            if let Some(old) = &former.pattern
                && let Some(old_id) = content::sigma_id(old)
                && ident
                    .sigma_id
                    .as_deref()
                    .is_none_or(|new| !same_sigma_id(Some(new), &old_id))
            {
                let before = RuleIdentity::sigma(Some(old_id), old, "", &spec.name, former_name);
                self.each(SyncObject::Sigma(spec.name.clone()), |r| {
                    r.release_rule(&before, Whose::Own)
                });
            }
        }
        if let Some(spec) = &translation.yara {
            let ident = RuleIdentity::yara(
                &spec.meta.rule_names,
                &spec.content,
                &spec.name,
                former_name,
            );
            self.each(SyncObject::Yara(spec.name.clone()), |r| {
                r.upsert_rule(&ident, &spec.name, &spec.content)
            });
        }
    }

    /// Release `whose` holds on everything `indicator` named (`translation` and the former
    /// IOCs), skipping the objects in `handled` and recording the others there.
    fn withdraw(
        &mut self,
        whose: Whose,
        indicator: &Indicator,
        translation: &Translation,
        former: &FormerState,
        handled: &mut Handled,
    ) {
        let keys: BTreeSet<&IocKey> = translation
            .iocs
            .iter()
            .chain(former.iocs.iter().flatten())
            .collect();
        for key in keys {
            if handled.iocs.insert(key.clone()) {
                self.each(SyncObject::Ioc(key.clone()), |r| r.release_ioc(key, whose));
            }
        }
        for ident in self.rule_identities(indicator, translation, former) {
            if handled.rules.insert(ident.key()) {
                let object = match ident.kind {
                    RuleKind::Sigma => SyncObject::Sigma(ident.names[0].clone()),
                    RuleKind::Yara => SyncObject::Yara(ident.names[0].clone()),
                };
                self.each(object, |r| r.release_rule(&ident, whose));
            }
        }
    }

    /// The Sigma rule / Yara file `indicator` names: from its translation, or (pattern that could
    /// not be translated) from its pattern type, name and the pattern read leniently.
    fn rule_identities(
        &self,
        indicator: &Indicator,
        translation: &Translation,
        former: &FormerState,
    ) -> Vec<RuleIdentity> {
        let former_name = former.name.as_deref();
        let name = truncate_name(&indicator.name);
        let pattern_type = indicator.pattern_type.trim();
        let mut out = Vec::new();
        match &translation.sigma {
            Some(spec) => out.push(RuleIdentity::sigma(
                spec.meta.id.clone(),
                &spec.content,
                &spec.meta.title,
                &spec.name,
                former_name,
            )),
            None if pattern_type.eq_ignore_ascii_case("sigma") => out.push(RuleIdentity::sigma(
                None,
                &indicator.pattern,
                "",
                &name,
                former_name,
            )),
            None => {}
        }
        match &translation.yara {
            Some(spec) => out.push(RuleIdentity::yara(
                &spec.meta.rule_names,
                &spec.content,
                &spec.name,
                former_name,
            )),
            None if pattern_type.eq_ignore_ascii_case("yara") => out.push(RuleIdentity::yara(
                &[],
                &indicator.pattern,
                &name,
                former_name,
            )),
            None => {}
        }
        out
    }

    /// Run one object's step, recording its failure instead of stopping the others.
    fn each(
        &mut self,
        object: SyncObject,
        step: impl FnOnce(&mut Self) -> Result<(), HarfangLabError>,
    ) {
        if self.stopped {
            return;
        }
        if let Err(error) = step(self) {
            if error.is_fatal() || is_shutdown(&error) {
                self.stopped = true;
            }
            if !error.is_retryable() {
                warn!("indicator={}: {object}: {error}", self.indicator.id);
            } else {
                debug!("indicator={}: {object}: {error}", self.indicator.id);
            }
            self.failures.push(Failure { object, error });
        }
    }

    fn finish(self) -> Result<SyncReport, SyncError> {
        let mut retryable = 0;
        let mut unavailable = 0;
        let mut retry_after: Option<Duration> = None;
        for f in &self.failures {
            match f.error.failure_kind() {
                FailureKind::Permanent => {}
                FailureKind::Transient => retryable += 1,
                FailureKind::Unavailable { retry_after: asked } => {
                    retryable += 1;
                    unavailable += 1;
                    retry_after = retry_after.max(asked);
                }
            }
        }
        let kept = self
            .failures
            .iter()
            .find(|f| f.error.is_fatal())
            .or_else(|| self.failures.iter().find(|f| !f.error.is_retryable()))
            .or(self.failures.first());
        match kept {
            None => Ok(self.report),
            Some(f) => Err(SyncError::new(SyncFailure {
                indicator_id: self.indicator.id.clone(),
                object: f.object.clone(),
                error: f.error.clone(),
                failed: self.failures.len() as u32,
                retryable,
                unavailable,
                retry_after,
                report: self.report,
            })),
        }
    }

    /// Every HarfangLab call goes through here so the report counts it.
    fn call<T>(
        &mut self,
        f: impl FnOnce(&'s A) -> Result<T, HarfangLabError>,
    ) -> Result<T, HarfangLabError> {
        self.report.api_calls += 1;
        f(&self.syncer.api)
    }

    fn settings(&self) -> &'s SyncSettings {
        &self.syncer.settings
    }

    // ---- IOC rules ------------------------------------------------------------------------

    fn holder(&self) -> Holder {
        let i = self.indicator;
        Holder::new(
            self.holder_id(),
            i.standard_id.clone(),
            i.score,
            &i.platforms,
        )
    }

    /// The id recorded for this indicator: internal id, else standard id ("" when neither).
    fn holder_id(&self) -> String {
        let i = self.indicator;
        match (&i.id, &i.standard_id) {
            (id, _) if !id.is_empty() => id.clone(),
            (_, Some(std)) => std.clone(),
            _ => String::new(),
        }
    }

    fn ioc_body(
        &self,
        key: &IocKey,
        description: String,
        comment: &RuleComment,
        enabled: bool,
    ) -> IocRuleBody {
        IocRuleBody {
            source_id: self.settings().lists.ioc.clone(),
            ioc_type: key.ioc_type,
            value: key.value.clone(),
            description,
            comment: comment.encode(),
            hl_status: self.settings().rule_maturity.clone(),
            enabled,
        }
    }

    /// An indicator without any id cannot be recorded as a holder: its IOCs are skipped.
    fn anonymous(&mut self, key: &IocKey) -> bool {
        if !self.holder_id().is_empty() {
            return false;
        }
        warn!(
            "indicator {:?} has no id; IOC {} {} skipped",
            self.indicator.name,
            key.ioc_type.as_str(),
            key.value
        );
        self.report.iocs.skipped += 1;
        true
    }

    fn upsert_ioc(&mut self, key: &IocKey) -> Result<(), HarfangLabError> {
        if self.anonymous(key) {
            return Ok(());
        }
        let syncer = self.syncer;
        let _guard = syncer.locks.lock(&[LockKey::Ioc(key)]);
        let source = &syncer.settings.lists.ioc;
        // Known absent: straight to the create (a duplicate answer still finds the rule).
        let found = match syncer.inventory.ioc(key) {
            Known::Absent => None,
            Known::Present | Known::Unknown => self.call(|api| api.find_ioc(source, key))?,
        };
        let rule = match found {
            Some(rule) => rule,
            None => {
                let mut comment = RuleComment::default();
                comment.upsert(self.holder(), &self.aliases);
                let description = self.indicator.description.clone().unwrap_or_default();
                let body = self.ioc_body(key, description, &comment, true);
                match self.call(|api| api.create_ioc(&body)) {
                    Ok(_) => {
                        syncer.inventory.add_ioc(key);
                        self.report.iocs.created += 1;
                        debug!(
                            "indicator={}: created IOC {} {}",
                            self.indicator.id,
                            key.ioc_type.as_str(),
                            key.value
                        );
                        return Ok(());
                    }
                    // Another process created it between our find (or listing) and create: take
                    // it over.
                    Err(e) if is_duplicate(&e) => {
                        syncer.inventory.add_ioc(key);
                        match self.call(|api| api.find_ioc(source, key))? {
                            Some(rule) => rule,
                            None => return Err(e),
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        self.refresh_ioc(key, rule)
    }

    /// Add this indicator to an existing rule's holders and write it only if something changed.
    fn refresh_ioc(&mut self, key: &IocKey, rule: IocRule) -> Result<(), HarfangLabError> {
        let (mut comment, origin) = RuleComment::decode(rule.comment.as_deref());
        match origin {
            Origin::Python => info!(
                "indicator={}: adopting IOC {} {} written by the Python connector",
                self.indicator.id,
                key.ioc_type.as_str(),
                key.value
            ),
            Origin::Empty | Origin::Foreign => info!(
                "indicator={}: adopting IOC {} {} found in the source list without connector ownership",
                self.indicator.id,
                key.ioc_type.as_str(),
                key.value
            ),
            Origin::Ours => {}
        }
        let keep_disabled = !rule.enabled
            && !self.settings().enforce_enabled
            && disabled_by_hand(origin, !comment.holders.is_empty());
        comment.release(&self.absorbed);
        comment.upsert(self.holder(), &self.aliases);
        let description = self.indicator.description.clone().unwrap_or_default();
        let body = self.ioc_body(key, description, &comment, !keep_disabled);
        if ioc_is_as_wanted(&rule, &body) {
            if keep_disabled {
                self.report.iocs.kept_disabled += 1;
            } else {
                self.report.iocs.unchanged += 1;
            }
            return Ok(());
        }
        self.call(|api| api.update_ioc(&rule.id, &body))?;
        if keep_disabled {
            self.report.iocs.kept_disabled += 1;
        } else if rule.enabled {
            self.report.iocs.updated += 1;
        } else {
            self.report.iocs.re_enabled += 1;
        }
        Ok(())
    }

    /// Remove `whose` holds from the IOC rule of `key`; delete or disable it when none is left.
    fn release_ioc(&mut self, key: &IocKey, whose: Whose) -> Result<(), HarfangLabError> {
        if whose == Whose::Own && self.anonymous(key) {
            return Ok(());
        }
        let released = self.ids(whose);
        let syncer = self.syncer;
        let _guard = syncer.locks.lock(&[LockKey::Ioc(key)]);
        let source = &syncer.settings.lists.ioc;
        let Some(rule) = self.call(|api| api.find_ioc(source, key))? else {
            self.report.iocs.unchanged += 1;
            return Ok(());
        };
        let (mut comment, origin) = RuleComment::decode(rule.comment.as_deref());
        if !comment.release(&released) {
            // Not held by this indicator: another indicator's, a person's, or already released.
            if matches!(origin, Origin::Empty | Origin::Foreign) {
                debug!(
                    "indicator={}: IOC {} {} has no connector ownership; left alone",
                    self.indicator.id,
                    key.ioc_type.as_str(),
                    key.value
                );
                self.report.iocs.skipped += 1;
            } else {
                self.report.iocs.unchanged += 1;
            }
            return Ok(());
        }
        let description = rule.description.clone().unwrap_or_default();
        if !comment.holders.is_empty() {
            let body = self.ioc_body(key, description, &comment, true);
            self.call(|api| api.update_ioc(&rule.id, &body))?;
            self.report.iocs.updated += 1;
        } else if self.settings().remove_indicator && comment.user_comment.is_none() {
            self.call(|api| api.delete_ioc(&rule.id))?;
            self.syncer.inventory.remove_ioc(key);
            self.report.iocs.deleted += 1;
        } else {
            let body = self.ioc_body(key, description, &comment, false);
            self.call(|api| api.update_ioc(&rule.id, &body))?;
            self.report.iocs.disabled += 1;
        }
        Ok(())
    }

    // ---- Sigma rules and Yara files -------------------------------------------------------

    fn counts(&mut self, kind: RuleKind) -> &mut Counts {
        match kind {
            RuleKind::Sigma => &mut self.report.sigma,
            RuleKind::Yara => &mut self.report.yara,
        }
    }

    fn source_of(&self, kind: RuleKind) -> &'s str {
        match kind {
            RuleKind::Sigma => &self.syncer.settings.lists.sigma,
            RuleKind::Yara => &self.syncer.settings.lists.yara,
        }
    }

    fn lock_rule<'k>(&self, ident: &'k RuleIdentity) -> Vec<LockKey<'k>> {
        match (ident.kind, &ident.sigma_id) {
            (RuleKind::Sigma, Some(id)) => vec![LockKey::Sigma(id)],
            (RuleKind::Sigma, None) => ident.names.iter().map(|n| LockKey::SigmaName(n)).collect(),
            (RuleKind::Yara, _) => ident.names.iter().map(|n| LockKey::Yara(n)).collect(),
        }
    }

    /// Find the rule: Sigma by id (object id, then names filtered by the content's id), Yara
    /// and id-less Sigma by exact name (current, then former). Among rules sharing a name, one
    /// that lists a holder of `holding` comes first.
    fn locate(
        &mut self,
        ident: &RuleIdentity,
        holding: &[String],
    ) -> Result<Located, HarfangLabError> {
        let kind = ident.kind;
        let source = self.source_of(kind);
        // The id goes into a URL path: probe only ids made of URL-safe characters (Sigma ids
        // are UUIDs); anything else is found by name below.
        if let Some(id) = &ident.sigma_id
            && is_path_safe(id)
            && let Some(rule) = self.call(|api| api.get_rule(kind, id))?
        {
            return Ok(match rule.source_id.as_deref() {
                Some(s) if s != source => Located::Elsewhere(rule),
                _ => Located::Ours(rule),
            });
        }
        for name in &ident.names {
            let filter = RuleFilter::Name(name.clone());
            let found = self.call(|api| api.find_rules(kind, source, &filter))?;
            let candidates: Vec<&RemoteRule> = found
                .iter()
                .filter(|r| {
                    r.name == *name
                        && match kind {
                            // Same id; or a rule without id (the indicator gained one). An id-less
                            // spec never takes over a rule that has an id of its own.
                            RuleKind::Sigma => match content::sigma_id(&r.content) {
                                None => true,
                                Some(theirs) => same_sigma_id(ident.sigma_id.as_deref(), &theirs),
                            },
                            RuleKind::Yara => true,
                        }
                })
                .collect();
            let hit = candidates
                .iter()
                .find(|r| recorded_holders(kind, r).is_some_and(|h| h.holds_any(holding)))
                .or(candidates.first());
            if let Some(rule) = hit {
                return Ok(Located::Ours((*rule).clone()));
            }
            if kind == RuleKind::Sigma && found.iter().any(|r| r.name == *name) {
                // HarfangLab forbids changing a rule's id, and names are not unique: it may be
                // this indicator's rule before its id changed, or another indicator's rule.
                warn!(
                    "indicator={}: a Sigma rule named {name:?} with another id exists; left as is (if this indicator's rule id changed, remove the old rule by hand)",
                    self.indicator.id
                );
            }
        }
        Ok(Located::Missing)
    }

    /// For a release: [`Run::locate`], then (Yara, id-less Sigma: their identity is a name, and
    /// a rule HarfangLab made shared carries its last writer's) the rule found by `search=` on its
    /// rule identifiers / title that lists a holder of `holding`. A Sigma id needs no second
    /// look: the id is the rule.
    fn locate_held(
        &mut self,
        ident: &RuleIdentity,
        holding: &[String],
    ) -> Result<Located, HarfangLabError> {
        let found = self.locate(ident, holding)?;
        if !matches!(found, Located::Missing) || ident.sigma_id.is_some() || holding.is_empty() {
            return Ok(found);
        }
        let kind = ident.kind;
        self.search(ident, |rule| {
            recorded_holders(kind, rule).is_some_and(|h| h.holds_any(holding))
        })
    }

    /// After a create was refused as a duplicate, find the rule it clashes with: the usual
    /// lookup, then the search by the rule's own names.
    fn locate_conflict(&mut self, ident: &RuleIdentity) -> Result<Located, HarfangLabError> {
        let found = self.locate(ident, &[])?;
        if !matches!(found, Located::Missing) {
            return Ok(found);
        }
        self.search(ident, |_| true)
    }

    /// `search=` by the rule's own names (Yara rule identifiers, Sigma title), keeping the first
    /// hit that is this rule ([`RuleIdentity::shares`]) and that `also` accepts.
    fn search(
        &mut self,
        ident: &RuleIdentity,
        also: impl Fn(&RemoteRule) -> bool,
    ) -> Result<Located, HarfangLabError> {
        let kind = ident.kind;
        let source = self.source_of(kind);
        for term in &ident.terms {
            let filter = RuleFilter::Search(term.clone());
            let hits = self.call(|api| api.find_rules(kind, source, &filter))?;
            if let Some(rule) = hits.into_iter().find(|r| ident.shares(term, r) && also(r)) {
                return Ok(Located::Ours(rule));
            }
        }
        Ok(Located::Missing)
    }

    fn rule_body(&self, kind: RuleKind, name: &str, content: String, enabled: bool) -> RuleBody {
        RuleBody {
            source_id: self.source_of(kind).to_owned(),
            name: name.to_owned(),
            content,
            hl_status: self.settings().rule_maturity.clone(),
            enabled,
            overwrite: false,
        }
    }

    /// This indicator's id on a holders line, or `None` (counted as skipped, warned) when it has
    /// none that can be written there.
    fn rule_holder_id(&mut self, kind: RuleKind, name: &str) -> Option<String> {
        let id = self.holder_id();
        if rule_holders::is_recordable(&id) {
            return Some(id);
        }
        warn!(
            "indicator {:?} has no id that can be recorded ({id:?}); {} {name:?} skipped",
            self.indicator.name,
            kind.resource()
        );
        self.counts(kind).skipped += 1;
        None
    }

    /// Make the rule hold `content` under `name` with this indicator as a holder (and without
    /// the absorbed ones, in a merge).
    fn upsert_rule(
        &mut self,
        ident: &RuleIdentity,
        name: &str,
        content: &str,
    ) -> Result<(), HarfangLabError> {
        let kind = ident.kind;
        let Some(me) = self.rule_holder_id(kind, name) else {
            return Ok(());
        };
        // A pattern copied out of HarfangLab may carry a holders line of its own: not the rule.
        let wanted = rule_holders::split(kind, content).1;
        let syncer = self.syncer;
        let _guard = syncer.locks.lock(&self.lock_rule(ident));
        self.upsert_locked(ident, &me, name, wanted)
    }

    /// [`Run::upsert_rule`] under the rule's lock.
    fn upsert_locked(
        &mut self,
        ident: &RuleIdentity,
        me: &str,
        name: &str,
        wanted: &str,
    ) -> Result<(), HarfangLabError> {
        let kind = ident.kind;
        let holding = self.ids(Whose::Both);
        // A Yara file / id-less Sigma rule is the rule of the indicators of its name: after a
        // rename, the rule of the new name comes first, the one of the former name second. A
        // Sigma id is the rule whatever the names. No search by holders here: a rule listing
        // this indicator under another name is another name's rule, and one HarfangLab counts
        // as the same (a shared `meta: id`) answers the create below as a duplicate.
        let (current, former) = ident.split_former();
        let sigma_id = ident.sigma_id.as_deref();
        let inventory = &self.syncer.inventory;
        // No rule with this id or any of these names in our list: no probe, straight to the
        // create (an id HarfangLab already has answers as a duplicate, handled below).
        let known = inventory.rule(kind, sigma_id, &ident.names);
        let located = match known {
            Known::Absent => Located::Missing,
            Known::Present | Known::Unknown => self.locate(&current, &holding)?,
        };
        match located {
            Located::Ours(rule) => {
                self.refresh_rule(kind, rule, me, name, wanted)?;
                if let Some(former) = &former {
                    // Renamed into a rule other indicators carry: out of the former name's.
                    self.leave(former)?;
                }
                return Ok(());
            }
            Located::Elsewhere(rule) => return self.skip_elsewhere(kind, &rule),
            Located::Missing => {}
        }
        if let Some(former) = former.as_ref().filter(|_| known != Known::Absent) {
            match self.locate(former, &holding)? {
                Located::Ours(rule) => {
                    let holders = recorded_holders(kind, &rule).unwrap_or_default();
                    let others: Vec<&str> = holders.others(&self.aliases).collect();
                    if others.is_empty() {
                        // Its only holder renamed: the rule follows the name.
                        return self.refresh_rule(kind, rule, me, name, wanted);
                    }
                    info!(
                        "indicator={}: renamed; leaving {} {:?} to its other holders ({})",
                        self.indicator.id,
                        kind.resource(),
                        rule.name,
                        others.join(", ")
                    );
                    self.drop_holds(kind, rule, Whose::Own, &former.names)?;
                }
                Located::Elsewhere(rule) => return self.skip_elsewhere(kind, &rule),
                Located::Missing => {}
            }
        }
        let mut holders = RuleHolders::default();
        holders.add(me, &[]);
        let content = rule_holders::join(kind, &holders, wanted);
        let body = self.rule_body(kind, name, content, true);
        match self.call(|api| api.create_rule(kind, &body)) {
            Ok(_) => {
                self.syncer.inventory.add_rule(kind, sigma_id, name);
                self.counts(kind).created += 1;
                debug!(
                    "indicator={}: created {} {name:?}",
                    self.indicator.id,
                    kind.resource()
                );
                Ok(())
            }
            // Same Sigma id / Yara rule already there (another process, a renamed indicator we
            // could not trace): update it rather than fail.
            Err(e) if is_duplicate(&e) => match self.locate_conflict(&current)? {
                // (The clashing rule is one the inventory did not know: it reads it now.)
                Located::Ours(rule) => self.refresh_rule(kind, rule, me, name, wanted),
                Located::Elsewhere(rule) => self.skip_elsewhere(kind, &rule),
                Located::Missing => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Write `rule` as `wanted` under `name`, with this indicator as a holder (and without the
    /// absorbed ones, in a merge), unless it is so already.
    fn refresh_rule(
        &mut self,
        kind: RuleKind,
        rule: RemoteRule,
        me: &str,
        name: &str,
        wanted: &str,
    ) -> Result<(), HarfangLabError> {
        let (recorded, current) = rule_holders::split(kind, &rule.content);
        let mut holders = recorded.unwrap_or_else(|| {
            info!(
                "indicator={}: adopting {} {:?} written without holders (Python connector or an earlier version)",
                self.indicator.id,
                kind.resource(),
                rule.name
            );
            RuleHolders::default()
        });
        holders.release(&self.absorbed);
        let others: Vec<&str> = holders.others(&self.aliases).collect();
        if current != wanted && !others.is_empty() {
            warn!(
                "indicator={}: {} {:?} is also held by {} with different content; this event's content is written (the newest wins)",
                self.indicator.id,
                kind.resource(),
                rule.name,
                others.join(", ")
            );
        }
        // Held, yet disabled: someone disabled it by hand (we only disable a rule nobody holds;
        // the Python connector only when releasing, and it wrote no holders line).
        let keep_disabled = !rule.enabled
            && !self.settings().enforce_enabled
            && recorded_holders(kind, &rule).is_some_and(|h| !h.is_empty());
        holders.add(me, &self.aliases);
        let content = rule_holders::join(kind, &holders, wanted);
        let body = self.rule_body(kind, name, content, !keep_disabled);
        if rule.name == body.name
            && rule.content == body.content
            && rule.hl_status.as_deref() == Some(body.hl_status.as_str())
            && rule.enabled == body.enabled
        {
            if keep_disabled {
                self.counts(kind).kept_disabled += 1;
            } else {
                self.counts(kind).unchanged += 1;
            }
            return Ok(());
        }
        if rule.name != body.name {
            let sigma_id = content::sigma_id(wanted);
            self.syncer
                .inventory
                .add_rule(kind, sigma_id.as_deref(), &body.name);
        }
        self.call(|api| api.update_rule(kind, &rule.id, &body))?;
        if keep_disabled {
            self.counts(kind).kept_disabled += 1;
        } else if rule.enabled {
            self.counts(kind).updated += 1;
        } else {
            self.counts(kind).re_enabled += 1;
        }
        Ok(())
    }

    /// Take this indicator out of the rule of its former name (by name only: a rule found by
    /// its rule identifiers may be the one it just joined).
    fn leave(&mut self, former: &RuleIdentity) -> Result<(), HarfangLabError> {
        let aliases = self.aliases.clone();
        match self.locate(former, &aliases)? {
            Located::Ours(rule) => self.drop_holds(former.kind, rule, Whose::Own, &former.names),
            Located::Elsewhere(_) | Located::Missing => Ok(()),
        }
    }

    /// Count and log a rule we must not touch; always `Ok`.
    fn skip_elsewhere(&mut self, kind: RuleKind, rule: &RemoteRule) -> Result<(), HarfangLabError> {
        warn!(
            "indicator={}: {} {} ({:?}) exists in another source list; left alone",
            self.indicator.id,
            kind.resource(),
            rule.id,
            rule.name
        );
        self.counts(kind).skipped += 1;
        Ok(())
    }

    /// Remove `whose` holds from the rule; delete or disable it when no holder is left.
    fn release_rule(&mut self, ident: &RuleIdentity, whose: Whose) -> Result<(), HarfangLabError> {
        let kind = ident.kind;
        let released = self.ids(whose);
        let syncer = self.syncer;
        let _guard = syncer.locks.lock(&self.lock_rule(ident));
        match self.locate_held(ident, &released)? {
            Located::Ours(rule) => self.drop_holds(kind, rule, whose, &ident.names),
            Located::Elsewhere(rule) => self.skip_elsewhere(kind, &rule),
            Located::Missing => {
                self.counts(kind).unchanged += 1;
                Ok(())
            }
        }
    }

    /// Remove `whose` holds from `rule` (found by one of `names`, or by its holders); delete or
    /// disable it when no holder is left.
    fn drop_holds(
        &mut self,
        kind: RuleKind,
        rule: RemoteRule,
        whose: Whose,
        names: &[String],
    ) -> Result<(), HarfangLabError> {
        let released = self.ids(whose);
        let (recorded, body) = rule_holders::split(kind, &rule.content);
        let holders = match recorded {
            Some(mut holders) => {
                if !holders.release(&released) {
                    // Not held by the released indicator(s): another indicator's, or done already.
                    self.counts(kind).unchanged += 1;
                    return Ok(());
                }
                holders
            }
            // Written before holders existed: the indicator whose name it carries wrote it last
            // (a rule found by Sigma id under another indicator's name is that one's).
            None if names.contains(&rule.name) => RuleHolders::default(),
            None => {
                debug!(
                    "indicator={}: {} {:?} belongs to another indicator; left alone",
                    self.indicator.id,
                    kind.resource(),
                    rule.name
                );
                self.counts(kind).skipped += 1;
                return Ok(());
            }
        };
        let content = rule_holders::join(kind, &holders, body);
        let keep = !holders.is_empty();
        if !keep && self.settings().remove_indicator {
            self.call(|api| api.delete_rule(kind, &rule.id))?;
            let sigma_id = match kind {
                RuleKind::Sigma => content::sigma_id(body),
                RuleKind::Yara => None,
            };
            self.syncer
                .inventory
                .remove_rule(kind, sigma_id.as_deref(), &rule.name);
            self.counts(kind).deleted += 1;
            return Ok(());
        }
        if rule.enabled == keep && rule.content == content {
            self.counts(kind).unchanged += 1;
            return Ok(());
        }
        let mut update = self.rule_body(kind, &rule.name, content, keep);
        if let Some(status) = &rule.hl_status {
            update.hl_status = status.clone();
        }
        self.call(|api| api.update_rule(kind, &rule.id, &update))?;
        if keep {
            self.counts(kind).updated += 1;
        } else {
            self.counts(kind).disabled += 1;
        }
        Ok(())
    }
}

/// Was a disabled IOC rule disabled by a person (so it stays disabled unless `enforce_enabled`)?
/// We disable only rules nobody holds, and the Python connector only when it released its one
/// indicator; a rule no connector wrote (empty or foreign comment) was disabled by whoever
/// manages it.
fn disabled_by_hand(origin: Origin, held: bool) -> bool {
    match origin {
        Origin::Ours => held,
        Origin::Python => false,
        Origin::Empty | Origin::Foreign => true,
    }
}

/// Does the rule already hold exactly what we would write?
fn ioc_is_as_wanted(rule: &IocRule, body: &IocRuleBody) -> bool {
    rule.enabled == body.enabled
        && rule.comment.as_deref() == Some(body.comment.as_str())
        && rule.description.as_deref().unwrap_or("") == body.description
        && rule.hl_status.as_deref() == Some(body.hl_status.as_str())
}

/// Sigma ids are UUIDs: compare them without regard to case (`rules::sigma` lowercases).
fn same_sigma_id(ours: Option<&str>, theirs: &str) -> bool {
    ours.is_some_and(|o| o.eq_ignore_ascii_case(theirs))
}

/// Can this id be put in a URL path as is?
fn is_path_safe(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && id != "."
        && id != ".."
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::yara::YaraMeta;
    use crate::sync::memory::{Fault, MemoryApi, Target};
    use crate::translate::{IocType, SigmaSpec, YaraSpec};

    fn syncer(api: MemoryApi, remove_indicator: bool) -> Syncer<MemoryApi> {
        Syncer::new(
            api,
            SyncSettings {
                enforce_enabled: false,
                lists: SourceLists {
                    ioc: "i".into(),
                    sigma: "s".into(),
                    yara: "y".into(),
                },
                remove_indicator,
                rule_maturity: "testing".into(),
            },
        )
    }

    fn hash(v: &str) -> IocKey {
        IocKey {
            ioc_type: IocType::Hash,
            value: v.into(),
        }
    }

    fn indicator() -> Indicator {
        Indicator {
            id: "internal-1".into(),
            standard_id: Some("indicator--1".into()),
            name: "One".into(),
            ..Indicator::default()
        }
    }

    #[test]
    fn duplicate_detection_covers_ioc_and_rule_envelopes() {
        let op = String::from("op");
        assert!(is_duplicate(&HarfangLabError::AlreadyExists {
            op: op.clone(),
            body: String::new()
        }));
        for (message, dup) in [
            ("Sigma rule with id x already exists", true),
            ("Duplicate rule name", true),
            ("syntax error line 3", false),
        ] {
            let e = HarfangLabError::RuleRejected {
                op: op.clone(),
                code: Some(400),
                message: message.into(),
            };
            assert_eq!(is_duplicate(&e), dup, "{message}");
        }
        assert!(!is_duplicate(&HarfangLabError::Timeout { op }));
    }

    #[test]
    fn only_url_safe_ids_are_probed() {
        assert!(is_path_safe("6b1e9ef4-1b59-4d3a-9b8c-2f5c0e2a7d11"));
        for bad in ["", ".", "..", "a/b", "a b", "x?y", "é"] {
            assert!(!is_path_safe(bad), "{bad}");
        }
    }

    #[test]
    fn odd_sigma_id_is_found_by_name_without_a_probe() {
        let api = MemoryApi::new();
        let s = syncer(api.clone(), true);
        let content = "title: t\nid: a/../b\ndetection:\n  x:\n    a: b\n  condition: x\n";
        let t = Translation {
            sigma: Some(SigmaSpec {
                meta: Default::default(),
                name: "One".into(),
                content: content.into(),
            }),
            ..Translation::default()
        };
        s.upsert(&indicator(), &t, &FormerState::default()).unwrap();
        api.reset_calls();
        let report = s.upsert(&indicator(), &t, &FormerState::default()).unwrap();
        assert_eq!(report.sigma.unchanged, 1);
        assert_eq!(api.calls_to("get_rule"), 0);
        assert_eq!(api.calls_to("find_rules"), 1);
    }

    const SIGMA_NEW: &str = "title: t\nid: 6b1e9ef4-1b59-4d3a-9b8c-2f5c0e2a7d11\nlogsource:\n  product: windows\ndetection:\n  x:\n    a: b\n  condition: x\n";

    fn sigma_spec(name: &str) -> Translation {
        Translation {
            sigma: Some(SigmaSpec {
                meta: crate::rules::sigma::parse_sigma(SIGMA_NEW).unwrap(),
                name: name.into(),
                content: SIGMA_NEW.into(),
            }),
            ..Translation::default()
        }
    }

    #[test]
    fn with_a_built_inventory_a_new_object_costs_one_request() {
        let api = MemoryApi::new();
        let s = syncer(api.clone(), true);
        s.inventory().mark_complete();
        let t = Translation {
            iocs: vec![hash(&"a".repeat(32))],
            ..Translation::default()
        };
        let r = s.upsert(&indicator(), &t, &FormerState::default()).unwrap();
        assert_eq!((r.iocs.created, r.api_calls), (1, 1));
        assert_eq!(api.calls_to("find_ioc"), 0);
        // A new Sigma rule: no probe by id, no lookup by name.
        let r = s
            .upsert(&indicator(), &sigma_spec("One"), &FormerState::default())
            .unwrap();
        assert_eq!((r.sigma.created, r.api_calls), (1, 1));
        assert_eq!(api.calls_to("get_rule") + api.calls_to("find_rules"), 0);
        // Known now: the next upsert reads them first, as before.
        let r = s.upsert(&indicator(), &t, &FormerState::default()).unwrap();
        assert_eq!((r.iocs.unchanged, r.api_calls), (1, 1));
    }

    #[test]
    fn inventory_misses_fall_back_to_a_lookup_never_a_wrong_write() {
        let api = MemoryApi::new();
        let s = syncer(api.clone(), true);
        // Someone else created it after the listing: the create answers "already exists",
        // then the rule is found and this indicator added to it.
        api.insert_ioc(IocRule {
            id: "r1".into(),
            ioc_type: "hash".into(),
            value: "b".repeat(32),
            source_id: Some("i".into()),
            description: None,
            comment: None,
            enabled: true,
            hl_status: Some("testing".into()),
        });
        s.inventory().mark_complete();
        let t = Translation {
            iocs: vec![hash(&"b".repeat(32))],
            ..Translation::default()
        };
        let r = s.upsert(&indicator(), &t, &FormerState::default()).unwrap();
        assert_eq!(r.iocs.updated, 1);
        assert_eq!(api.iocs().len(), 1);
        // Someone deleted it behind our back: the stale "present" costs a lookup, then a create.
        api.delete_ioc("r1").unwrap();
        let r = s.upsert(&indicator(), &t, &FormerState::default()).unwrap();
        assert_eq!((r.iocs.created, r.api_calls), (1, 2));
        // Our own delete forgets it: the next create is direct.
        s.release(&indicator(), &t, &FormerState::default())
            .unwrap();
        api.reset_calls();
        let r = s.upsert(&indicator(), &t, &FormerState::default()).unwrap();
        assert_eq!((r.iocs.created, r.api_calls), (1, 1));
    }

    #[test]
    fn a_rule_disabled_by_hand_stays_disabled_unless_enforced() {
        let api = MemoryApi::new();
        let s = syncer(api.clone(), false);
        let t = Translation {
            iocs: vec![hash(&"c".repeat(32))],
            ..Translation::default()
        };
        s.upsert(&indicator(), &t, &FormerState::default()).unwrap();
        let mut rule = api.iocs()[0].clone();
        rule.enabled = false;
        api.insert_ioc(rule);
        let r = s.upsert(&indicator(), &t, &FormerState::default()).unwrap();
        assert_eq!(r.iocs.kept_disabled, 1);
        assert!(!api.iocs()[0].enabled);
        // Released by us (nobody holds it), it comes back when wanted again.
        s.release(&indicator(), &t, &FormerState::default())
            .unwrap();
        let r = s.upsert(&indicator(), &t, &FormerState::default()).unwrap();
        assert_eq!(r.iocs.re_enabled, 1);
        let mut rule = api.iocs()[0].clone();
        rule.enabled = false;
        api.insert_ioc(rule);
        let mut enforced = syncer(api.clone(), false);
        enforced.settings.enforce_enabled = true;
        let r = enforced
            .upsert(&indicator(), &t, &FormerState::default())
            .unwrap();
        assert_eq!(r.iocs.re_enabled, 1);
        assert!(api.iocs()[0].enabled);
    }

    #[test]
    fn sigma_ids_match_regardless_of_case() {
        let api = MemoryApi::new();
        let s = syncer(api.clone(), true);
        let upper = "title: t\nid: 6B1E9EF4-1B59-4D3A-9B8C-2F5C0E2A7D11\ndetection:\n  x:\n    a: b\n  condition: x\n";
        let spec = |name: &str, id: Option<&str>| Translation {
            sigma: Some(SigmaSpec {
                meta: crate::rules::sigma::SigmaMeta {
                    id: id.map(str::to_owned),
                    title: "t".into(),
                    ..Default::default()
                },
                name: name.into(),
                content: upper.into(),
            }),
            ..Translation::default()
        };
        s.upsert(&indicator(), &spec("One", None), &FormerState::default())
            .unwrap();
        // Found by name although the probe with the upper-case id misses.
        let report = s
            .upsert(&indicator(), &spec("One", None), &FormerState::default())
            .unwrap();
        assert_eq!(report.sigma.unchanged, 1);
        // The canonical lower-case id (as `rules::sigma` gives it) finds it directly.
        let lower = Some("6b1e9ef4-1b59-4d3a-9b8c-2f5c0e2a7d11");
        let former = FormerState {
            name: Some("One".into()),
            ..FormerState::default()
        };
        let report = s
            .upsert(&indicator(), &spec("Two", lower), &former)
            .unwrap();
        assert_eq!((report.sigma.updated, report.api_calls), (1, 2));
        assert_eq!(api.rules(RuleKind::Sigma).len(), 1);
    }

    #[test]
    fn indicator_without_any_id_is_skipped_not_recorded() {
        let api = MemoryApi::new();
        let s = syncer(api.clone(), true);
        let anonymous = Indicator {
            name: "nameless".into(),
            ..Indicator::default()
        };
        let t = Translation {
            iocs: vec![hash(&"ab".repeat(16))],
            ..Translation::default()
        };
        let report = s.upsert(&anonymous, &t, &FormerState::default()).unwrap();
        assert_eq!(report.iocs.skipped, 1);
        assert_eq!(report.api_calls, 0);
        assert!(api.iocs().is_empty());
    }

    #[test]
    fn disabled_yara_file_wanted_again_is_re_enabled() {
        let api = MemoryApi::new();
        let s = syncer(api.clone(), false);
        let t = Translation {
            yara: Some(YaraSpec {
                meta: YaraMeta::default(),
                name: "One".into(),
                content: "rule One { condition: true }".into(),
            }),
            ..Translation::default()
        };
        s.upsert(&indicator(), &t, &FormerState::default()).unwrap();
        let report = s
            .release(&indicator(), &t, &FormerState::default())
            .unwrap();
        assert_eq!(report.yara.disabled, 1);
        let again = s
            .release(&indicator(), &t, &FormerState::default())
            .unwrap();
        assert_eq!((again.yara.unchanged, again.yara.writes()), (1, 0));
        let report = s.upsert(&indicator(), &t, &FormerState::default()).unwrap();
        assert_eq!(report.yara.re_enabled, 1);
        let files = api.rules(RuleKind::Yara);
        assert!(files[0].enabled);
        assert_eq!(files[0].hl_status.as_deref(), Some("testing"));
    }

    #[test]
    fn shutdown_stops_the_run_and_is_retryable() {
        let api = MemoryApi::new();
        let s = syncer(api.clone(), true);
        api.inject(
            Target::Any,
            Fault::Fail(HarfangLabError::ShuttingDown {
                op: "find IOCRule".into(),
            }),
            Some(1),
        );
        let t = Translation {
            iocs: vec![hash(&"aa".repeat(16)), hash(&"bb".repeat(16))],
            ..Translation::default()
        };
        let err = s
            .upsert(&indicator(), &t, &FormerState::default())
            .unwrap_err();
        assert!(err.is_retryable() && !err.is_fatal());
        assert_eq!((err.failed, err.report.api_calls), (1, 1));
        assert!(api.iocs().is_empty(), "nothing after the shutdown");
        let text = err.to_string();
        assert!(
            text.starts_with("indicator internal-1: IOC hash aaaa"),
            "{text}"
        );
    }

    #[test]
    fn maturity_change_patches_an_otherwise_unchanged_ioc() {
        let api = MemoryApi::new();
        let t = Translation {
            iocs: vec![hash(&"cd".repeat(16))],
            ..Translation::default()
        };
        syncer(api.clone(), true)
            .upsert(&indicator(), &t, &FormerState::default())
            .unwrap();
        let mut stable = syncer(api.clone(), true);
        stable.settings.rule_maturity = "stable".into();
        let report = stable
            .upsert(&indicator(), &t, &FormerState::default())
            .unwrap();
        assert_eq!(report.iocs.updated, 1);
        assert_eq!(api.iocs()[0].hl_status.as_deref(), Some("stable"));
    }
}
