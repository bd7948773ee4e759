//! Stream position ("checkpoint"): the local file, its coalescing writer, the Python-compatible state
//! JSON pushed to OpenCTI, and the startup reconciliation between the local file and the platform.
//!
//! The checkpoint is pycti's state dict `{"start_from": "<event id>", "recover_until": "<date>"}`
//! (opencti-protocol.md §1.3). It lives in two places:
//! - a local file `<state_dir>/<connector_id>.checkpoint.json`, written atomically (temp file, fsync,
//!   rename, fsync of the directory) at most about once a second plus a final save on shutdown;
//! - the platform's `connector_state`, pushed by the ping every ~40 s (so a migrating user keeps
//!   their position, and a reset from the UI is visible).
//!
//! # Reconciliation at startup ([`reconcile`])
//!
//! | local file | platform state (register) | result |
//! |---|---|---|
//! | none | none / empty | **first run**: `start_from` = `CONNECTOR_LIVE_STREAM_START_TIMESTAMP` + `-0` or `0-0`; `recover_until` = `CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE`, or now (`YYYY-MM-DDTHH:MM:SSZ`), or none when that setting is `false/no/none` |
//! | none | checkpoint (also legacy `connectorLastEventId`/`connectorStartTime`) | **platform**: migration from the Python connector, or local file lost |
//! | present, platform acked it | none / empty | **reset**: the platform once held our state and now has none: a "reset state" from the UI (or the connector was deleted there) → first-run defaults |
//! | present, never acked | none / empty | **local**: we stopped before any ping stored it (the platform never had one) |
//! | present | checkpoint | **newer** event id wins (`<ms>-<seq>` compared numerically; pings lag the local file by up to 40 s, while a newer platform id means another instance, e.g. the Python connector, ran since) |
//!
//! "Empty" is `null`, `""`, `"null"`, or anything that is not a JSON object with a usable
//! `start_from`. "Acked" is a flag in the local file, set once a ping stored our state on the
//! platform ([`CheckpointWriter::mark_acked`]): it is what tells "the platform lost / reset it" from
//! "the platform never had it". A reset while running is detected by the ping (see `opencti::api`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cmp::Ordering;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// The stream position, as pycti stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Last event id processed (`<ms>-<seq>`, `0-0` = start of the stream).
    pub start_from: String,
    /// `recover=` date sent to the stream; `None` = no recovery.
    pub recover_until: Option<String>,
}

impl Checkpoint {
    /// The state string for `pingConnector`, serialised like Python's `json.dumps` (`", "` and
    /// `": "` separators, non-ASCII escaped) so pycti can read it back. No recovery is `false`
    /// (what pycti stores when the recover setting is `false`).
    pub fn to_state_json(&self) -> String {
        let recover = match &self.recover_until {
            Some(r) => py_string(r),
            None => "false".to_owned(),
        };
        format!(
            "{{\"start_from\": {}, \"recover_until\": {recover}}}",
            py_string(&self.start_from)
        )
    }

    /// Parse a platform `connector_state` (pycti format, legacy keys accepted). `None` when empty.
    pub fn from_state_json(state: &str) -> Option<Checkpoint> {
        let v: Value = serde_json::from_str(state.trim()).ok()?;
        let obj = v.as_object()?;
        let pick = |new: &str, legacy: &str| {
            obj.get(legacy)
                .filter(|v| !v.is_null())
                .or_else(|| obj.get(new))
                .cloned()
        };
        let start_from = match pick("start_from", "connectorLastEventId")? {
            Value::String(s) if !s.is_empty() => s,
            Value::Number(n) => format!("{n}-0"),
            _ => return None,
        };
        let recover_until = match pick("recover_until", "connectorStartTime") {
            Some(Value::String(s)) if !is_falsy(&s) && !s.is_empty() => Some(s),
            _ => None,
        };
        Some(Checkpoint {
            start_from,
            recover_until,
        })
    }
}

/// pycti's FALSY values for the recover setting (§1.1).
fn is_falsy(s: &str) -> bool {
    matches!(s, "no" | "none" | "No" | "None" | "false" | "False")
}

/// A JSON string literal as Python's `json.dumps` writes it (ensure_ascii).
fn py_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7f => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A parsed stream event id `<ms>-<seq>`, ordered numerically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
}

impl EventId {
    /// `None` for anything that is not `<digits>-<digits>` (or bare `<digits>`, read as `-0`).
    pub fn parse(s: &str) -> Option<EventId> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Some(EventId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Compare two event ids numerically; unparsable ids sort before parsable ones.
pub fn compare_event_ids(a: &str, b: &str) -> Ordering {
    EventId::parse(a).cmp(&EventId::parse(b))
}

/// What the local file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalCheckpoint {
    #[serde(flatten)]
    pub checkpoint: Checkpoint,
    /// A ping stored this connector's state on the platform at least once.
    #[serde(default)]
    pub platform_acked: bool,
}

/// Failure to read or write the local checkpoint file.
#[derive(Debug)]
pub enum StateError {
    /// I/O on `path` failed (fatal at startup: the state directory must be writable).
    Io { path: PathBuf, source: io::Error },
    /// The file exists but is not a checkpoint (the caller logs it and treats it as missing).
    Corrupt { path: PathBuf, reason: String },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Io { path, source } => {
                write!(f, "checkpoint file {}: {source}", path.display())
            }
            StateError::Corrupt { path, reason } => {
                write!(
                    f,
                    "checkpoint file {} is unreadable: {reason}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for StateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StateError::Io { source, .. } => Some(source),
            StateError::Corrupt { .. } => None,
        }
    }
}

/// The local checkpoint file of one connector.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    path: PathBuf,
}

/// `id` with every character other than `[A-Za-z0-9._-]` replaced by `_`: the stem of a file
/// named after the connector in the state directory.
pub fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl CheckpointStore {
    /// `<state_dir>/<connector_id>.checkpoint.json` (characters other than `[A-Za-z0-9._-]` in the
    /// id become `_`).
    pub fn new(state_dir: &Path, connector_id: &str) -> Self {
        CheckpointStore {
            path: state_dir.join(format!("{}.checkpoint.json", file_safe(connector_id))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved checkpoint; `Ok(None)` when there is no file.
    pub fn load(&self) -> Result<Option<LocalCheckpoint>, StateError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// Replace the file atomically: write `<file>.tmp`, fsync, rename over the file, fsync the
    /// directory. A crash at any point leaves either the old or the new content.
    pub fn save(&self, cp: &LocalCheckpoint) -> Result<(), StateError> {
        let io_err = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io_err)?;
        let tmp = self.tmp_path();
        let json = serde_json::to_vec_pretty(cp).map_err(|e| io_err(io::Error::other(e)))?;
        {
            let mut f = fs::File::create(&tmp).map_err(io_err)?;
            f.write_all(&json).map_err(io_err)?;
            f.sync_all().map_err(io_err)?;
        }
        fs::rename(&tmp, &self.path).map_err(io_err)?;
        // The rename is durable only once the directory entry is; not possible on every platform.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The temporary file used by [`save`](Self::save).
    pub fn tmp_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".tmp");
        PathBuf::from(p)
    }
}

/// Default minimum time between two checkpoint file writes.
pub const DEFAULT_SAVE_INTERVAL: Duration = Duration::from_secs(1);

struct WriterShared {
    latest: Option<LocalCheckpoint>,
    dirty: bool,
    last_error: Option<String>,
    saves: u64,
}

/// Saves checkpoints in the background, at most once per `min_interval` (latest wins), plus a final
/// save in [`finish`](Self::finish). Errors are logged and retried with the next save.
pub struct CheckpointWriter {
    shared: Arc<Mutex<WriterShared>>,
    wake: crossbeam_channel::Sender<()>,
    stop: crossbeam_channel::Sender<()>,
    thread: Option<thread::JoinHandle<()>>,
    store: CheckpointStore,
}

impl CheckpointWriter {
    /// Start the writer thread. `initial` is the state already on disk (or to be written).
    pub fn spawn(
        store: CheckpointStore,
        initial: LocalCheckpoint,
        min_interval: Duration,
    ) -> io::Result<CheckpointWriter> {
        let shared = Arc::new(Mutex::new(WriterShared {
            latest: Some(initial),
            dirty: false,
            last_error: None,
            saves: 0,
        }));
        let (wake, wake_rx) = crossbeam_channel::bounded::<()>(1);
        let (stop, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let thread = {
            let shared = shared.clone();
            let store = store.clone();
            thread::Builder::new()
                .name("checkpoint".into())
                .spawn(move || writer_loop(&store, &shared, &wake_rx, &stop_rx, min_interval))?
        };
        Ok(CheckpointWriter {
            shared,
            wake,
            stop,
            thread: Some(thread),
            store,
        })
    }

    /// Record a new position (cheap; the thread saves it within `min_interval`).
    pub fn update(&self, checkpoint: Checkpoint) {
        self.with(|s| {
            let acked = s.latest.as_ref().is_some_and(|l| l.platform_acked);
            s.latest = Some(LocalCheckpoint {
                checkpoint,
                platform_acked: acked,
            });
        });
    }

    /// The platform has stored our state (a ping succeeded without reset).
    pub fn mark_acked(&self) {
        self.with(|s| {
            if let Some(l) = s.latest.as_mut()
                && !l.platform_acked
            {
                l.platform_acked = true;
            }
        });
    }

    /// Replace the whole local state (after a reset from the UI: new position, not acked).
    pub fn replace(&self, local: LocalCheckpoint) {
        self.with(|s| s.latest = Some(local));
    }

    /// The latest recorded position.
    pub fn current(&self) -> Option<LocalCheckpoint> {
        self.shared.lock().ok().and_then(|s| s.latest.clone())
    }

    /// Number of completed file writes (for tests and metrics).
    pub fn saves(&self) -> u64 {
        self.shared.lock().map(|s| s.saves).unwrap_or(0)
    }

    fn with(&self, f: impl FnOnce(&mut WriterShared)) {
        if let Ok(mut s) = self.shared.lock() {
            f(&mut s);
            s.dirty = true;
        }
        let _ = self.wake.try_send(());
    }

    /// Stop the thread and write the latest position one last time (synchronously).
    pub fn finish(mut self) -> Result<(), StateError> {
        self.shutdown_thread();
        let latest = self.shared.lock().ok().and_then(|s| s.latest.clone());
        match latest {
            Some(l) => self.store.save(&l),
            None => Ok(()),
        }
    }

    fn shutdown_thread(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown_thread();
            if let Some(l) = self.shared.lock().ok().and_then(|s| s.latest.clone())
                && let Err(e) = self.store.save(&l)
            {
                log::error!("final checkpoint save failed: {e}");
            }
        }
    }
}

fn writer_loop(
    store: &CheckpointStore,
    shared: &Mutex<WriterShared>,
    wake: &crossbeam_channel::Receiver<()>,
    stop: &crossbeam_channel::Receiver<()>,
    min_interval: Duration,
) {
    let mut last_save: Option<Instant> = None;
    loop {
        crossbeam_channel::select! {
            recv(stop) -> _ => return,
            recv(wake) -> _ => {}
        }
        // Coalesce: wait out the rest of the interval (or a stop) before writing.
        if let Some(t) = last_save {
            let next = t + min_interval;
            if let Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) =
                stop.recv_deadline(next)
            {
                return; // finish() does the final save
            }
        }
        let todo = shared.lock().ok().and_then(|mut s| {
            let d = s.dirty;
            s.dirty = false;
            if d { s.latest.clone() } else { None }
        });
        if let Some(cp) = todo {
            let res = store.save(&cp);
            if let Ok(mut s) = shared.lock() {
                match res {
                    Ok(()) => {
                        s.saves += 1;
                        s.last_error = None;
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        if s.last_error.as_deref() != Some(&msg) {
                            log::error!("{msg}");
                        }
                        s.last_error = Some(msg);
                        s.dirty = true;
                    }
                }
            }
            last_save = Some(Instant::now());
        }
    }
}

/// First-run settings (only used when no state exists anywhere).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FirstRun {
    /// `CONNECTOR_LIVE_STREAM_START_TIMESTAMP` (epoch milliseconds).
    pub start_timestamp: Option<String>,
    /// `CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE`: a date, or `false/no/none` for no recovery.
    pub recover_iso_date: Option<String>,
}

impl FirstRun {
    /// The first-run checkpoint at time `now` (§1.3).
    pub fn checkpoint(&self, now: SystemTime) -> Checkpoint {
        let start_from = match self.start_timestamp.as_deref().map(str::trim) {
            Some(ts) if !ts.is_empty() => format!("{ts}-0"),
            _ => "0-0".to_owned(),
        };
        let recover_until = match self.recover_iso_date.as_deref().map(str::trim) {
            Some(d) if is_falsy(d) => None,
            Some(d) if !d.is_empty() => Some(d.to_owned()),
            _ => Some(humantime::format_rfc3339_seconds(now).to_string()),
        };
        Checkpoint {
            start_from,
            recover_until,
        }
    }
}

/// Which rule of the reconciliation table applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    FirstRun,
    /// Platform state only (migration from the Python connector or lost local file).
    Platform,
    /// Local file only (the platform never stored it).
    Local,
    /// Both present, the local one is newer (or equal).
    LocalNewer,
    /// Both present, the platform one is newer.
    PlatformNewer,
    /// The platform dropped a state it had acknowledged: reset from the UI.
    Reset,
}

/// The outcome of [`reconcile`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconciled {
    pub checkpoint: Checkpoint,
    pub origin: Origin,
    /// Whether the platform already holds this state (drives the `platform_acked` flag).
    pub platform_acked: bool,
}

/// Decide where the stream starts (module doc table). Pure.
pub fn reconcile(
    local: Option<&LocalCheckpoint>,
    platform_state: Option<&str>,
    first_run: &FirstRun,
    now: SystemTime,
) -> Reconciled {
    let platform = platform_state.and_then(Checkpoint::from_state_json);
    let done = |checkpoint: Checkpoint, origin, platform_acked| Reconciled {
        checkpoint,
        origin,
        platform_acked,
    };
    match (local, platform) {
        (None, None) => done(first_run.checkpoint(now), Origin::FirstRun, false),
        (None, Some(p)) => done(p, Origin::Platform, true),
        (Some(l), None) if l.platform_acked => {
            done(first_run.checkpoint(now), Origin::Reset, false)
        }
        (Some(l), None) => done(l.checkpoint.clone(), Origin::Local, false),
        (Some(l), Some(p)) => {
            if compare_event_ids(&p.start_from, &l.checkpoint.start_from) == Ordering::Greater {
                done(p, Origin::PlatformNewer, true)
            } else {
                done(l.checkpoint.clone(), Origin::LocalNewer, true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(start: &str, rec: Option<&str>) -> Checkpoint {
        Checkpoint {
            start_from: start.into(),
            recover_until: rec.map(Into::into),
        }
    }

    #[test]
    fn state_json_matches_python_json_dumps() {
        assert_eq!(
            cp("1718445605000-0", Some("2024-06-15T09:00:00Z")).to_state_json(),
            r#"{"start_from": "1718445605000-0", "recover_until": "2024-06-15T09:00:00Z"}"#
        );
        assert_eq!(
            cp("0-0", None).to_state_json(),
            r#"{"start_from": "0-0", "recover_until": false}"#
        );
        assert_eq!(py_string("é\"\n"), r#""\u00e9\"\n""#);
    }

    #[test]
    fn state_json_round_trips_and_reads_legacy_keys() {
        let c = cp("5-1", Some("2024-01-01T00:00:00Z"));
        assert_eq!(Checkpoint::from_state_json(&c.to_state_json()), Some(c));
        assert_eq!(
            Checkpoint::from_state_json(
                r#"{"connectorLastEventId": "7-0", "connectorStartTime": "2023-01-01T00:00:00Z"}"#
            ),
            Some(cp("7-0", Some("2023-01-01T00:00:00Z")))
        );
        for empty in ["", "null", "{}", "[]", "garbage", r#"{"start_from": ""}"#] {
            assert_eq!(Checkpoint::from_state_json(empty), None, "{empty:?}");
        }
        assert_eq!(
            Checkpoint::from_state_json(r#"{"start_from": "1-0", "recover_until": false}"#),
            Some(cp("1-0", None))
        );
    }

    #[test]
    fn event_ids_compare_numerically() {
        assert_eq!(compare_event_ids("9-0", "10-0"), Ordering::Less);
        assert_eq!(compare_event_ids("10-2", "10-10"), Ordering::Less);
        assert_eq!(compare_event_ids("10-0", "10-0"), Ordering::Equal);
        assert_eq!(compare_event_ids("junk", "0-0"), Ordering::Less);
    }

    #[test]
    fn first_run_defaults() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_718_445_600);
        let fr = FirstRun::default();
        assert_eq!(fr.checkpoint(now), cp("0-0", Some("2024-06-15T10:00:00Z")));
        let fr = FirstRun {
            start_timestamp: Some("1700000000000".into()),
            recover_iso_date: Some("2024-01-01T00:00:00Z".into()),
        };
        assert_eq!(
            fr.checkpoint(now),
            cp("1700000000000-0", Some("2024-01-01T00:00:00Z"))
        );
        for no in ["false", "no", "None"] {
            let fr = FirstRun {
                start_timestamp: None,
                recover_iso_date: Some(no.into()),
            };
            assert_eq!(fr.checkpoint(now).recover_until, None);
        }
    }

    #[test]
    fn reconciliation_table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_718_445_600);
        let fr = FirstRun::default();
        let first = fr.checkpoint(now);
        let local = |s: &str, acked| LocalCheckpoint {
            checkpoint: cp(s, None),
            platform_acked: acked,
        };
        let plat = r#"{"start_from": "20-0", "recover_until": "2024-01-01T00:00:00Z"}"#;
        let legacy = r#"{"connectorLastEventId": "30-0"}"#;
        #[rustfmt::skip]
        let table: Vec<(Option<LocalCheckpoint>, Option<&str>, Origin, Checkpoint)> = vec![
            (None, None, Origin::FirstRun, first.clone()),
            (None, Some(""), Origin::FirstRun, first.clone()),
            (None, Some(plat), Origin::Platform, cp("20-0", Some("2024-01-01T00:00:00Z"))),
            (None, Some(legacy), Origin::Platform, cp("30-0", None)),
            (Some(local("10-0", true)), Some(""), Origin::Reset, first.clone()),
            (Some(local("10-0", true)), None, Origin::Reset, first.clone()),
            (Some(local("10-0", false)), Some(""), Origin::Local, cp("10-0", None)),
            (Some(local("10-0", false)), Some("null"), Origin::Local, cp("10-0", None)),
            (Some(local("100-0", true)), Some(plat), Origin::LocalNewer, cp("100-0", None)),
            (Some(local("9-0", true)), Some(plat), Origin::PlatformNewer, cp("20-0", Some("2024-01-01T00:00:00Z"))),
            (Some(local("20-0", false)), Some(plat), Origin::LocalNewer, cp("20-0", None)),
        ];
        for (i, (l, p, origin, expected)) in table.into_iter().enumerate() {
            let r = reconcile(l.as_ref(), p, &fr, now);
            assert_eq!((r.origin, &r.checkpoint), (origin, &expected), "row {i}");
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "hli-state-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempdir("rt");
        let store = CheckpointStore::new(&dir, "conn/1");
        assert!(store.path().ends_with("conn_1.checkpoint.json"));
        assert_eq!(store.load().unwrap(), None);
        let l = LocalCheckpoint {
            checkpoint: cp("1-0", Some("x")),
            platform_acked: true,
        };
        store.save(&l).unwrap();
        assert_eq!(store.load().unwrap(), Some(l));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn crash_between_write_and_rename_keeps_the_old_file() {
        let dir = tempdir("crash");
        let store = CheckpointStore::new(&dir, "c");
        let old = LocalCheckpoint {
            checkpoint: cp("1-0", None),
            platform_acked: false,
        };
        store.save(&old).unwrap();
        // Simulated crash: a half-written temp file, never renamed.
        fs::write(store.tmp_path(), b"{\"start_from\": \"99").unwrap();
        assert_eq!(store.load().unwrap(), Some(old));
        // The next save replaces the stale temp file.
        let new = LocalCheckpoint {
            checkpoint: cp("2-0", None),
            platform_acked: false,
        };
        store.save(&new).unwrap();
        assert_eq!(store.load().unwrap(), Some(new));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn corrupt_file_is_reported() {
        let dir = tempdir("corrupt");
        let store = CheckpointStore::new(&dir, "c");
        fs::write(store.path(), b"nope").unwrap();
        assert!(matches!(store.load(), Err(StateError::Corrupt { .. })));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn writer_coalesces_and_saves_on_finish() {
        let dir = tempdir("writer");
        let store = CheckpointStore::new(&dir, "c");
        let init = LocalCheckpoint {
            checkpoint: cp("0-0", None),
            platform_acked: false,
        };
        let w = CheckpointWriter::spawn(store.clone(), init, Duration::from_secs(3600)).unwrap();
        for i in 1..=1000 {
            w.update(cp(&format!("{i}-0"), None));
        }
        w.mark_acked();
        // One immediate save at most (interval is an hour), then the final one.
        assert!(w.saves() <= 1);
        w.finish().unwrap();
        let got = store.load().unwrap().unwrap();
        assert_eq!(got.checkpoint.start_from, "1000-0");
        assert!(got.platform_acked);
        let _ = fs::remove_dir_all(dir);
    }
}
