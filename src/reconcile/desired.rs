//! The desired state: the indicators the configured live stream delivers, by replaying that
//! stream itself (same stream id, same `listen-delete` / `no-dependencies` / `with-inferences`
//! headers as the live reader, so the same filters) on a second connection in recover mode:
//! `Last-Event-ID: 0-0` and `recover=<pass start>`. The platform then sends every matching
//! element as a synthetic `create` (ids `<updated_at ms>-0`) and tails from the recover date
//! (opencti-protocol.md §1.3).
//!
//! What arrives is folded: create/update replace an indicator (by internal id), delete removes it,
//! merge removes the absorbed ones and replaces the target. The replay is complete once an id at
//! or after `<pass start ms>-0` arrives (the tail; idle heartbeats carry "now"), or, when the
//! platform replays its log instead (it ignored `recover`), once a heartbeat at or after the
//! `connected` event's `lastEventId` shows the whole log as of the connection was sent.
//!
//! Why recover mode makes it exact: it reads the current state from the platform's database,
//! with the stream's own filters. A plain log replay folds to the same set only while the
//! platform still holds the whole log (`redis:trimming` drops old events; an indicator created
//! before the trimmed part would be missing, and look orphaned). The fold makes both correct.
//!
//! Only identities are kept (internal id, standard id, older standard ids): the repair job reads
//! each indicator through GraphQL, as the live path does.

use crate::opencti::events::{EventKind, IndicatorEvent, Payload, StreamEvent};
use crate::opencti::stream::{StreamItem, StreamOptions, StreamReader};
use crate::state::Checkpoint;
use crossbeam_channel::Receiver;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One indicator of the desired set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredIndicator {
    /// Internal id (else the standard id): the pipeline key and the holder id we write.
    pub id: String,
    /// Standard id and older standard ids (`stix_ids`): holder ids the Python connector (or an
    /// earlier pattern) may have recorded.
    pub other_ids: Vec<String>,
}

/// The folded replay.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    pub indicators: HashMap<String, DesiredIndicator>,
    /// Stream events folded.
    pub events: u64,
    /// The platform said `no-recover`: this was a log replay.
    pub log_replay: bool,
}

impl Desired {
    /// Fold one stream event.
    pub fn apply(&mut self, ev: &StreamEvent) {
        let Payload::Indicator(i) = &ev.payload else {
            return;
        };
        self.events += 1;
        match ev.kind {
            EventKind::Delete => {
                self.indicators.remove(&i.indicator.id);
            }
            EventKind::Merge => {
                for a in &i.absorbed {
                    self.indicators.remove(&a.indicator.id);
                }
                self.put(i);
            }
            EventKind::Create | EventKind::Update => self.put(i),
        }
    }

    fn put(&mut self, i: &IndicatorEvent) {
        let mut other_ids: Vec<String> = i
            .indicator
            .standard_id
            .iter()
            .chain(&i.former.ids)
            .filter(|s| **s != i.indicator.id && !s.is_empty())
            .cloned()
            .collect();
        other_ids.sort();
        other_ids.dedup();
        self.indicators.insert(
            i.indicator.id.clone(),
            DesiredIndicator {
                id: i.indicator.id.clone(),
                other_ids,
            },
        );
    }

    /// Every id a holder entry of a desired indicator may carry.
    pub fn aliases(&self) -> HashSet<&str> {
        self.indicators
            .values()
            .flat_map(|d| {
                std::iter::once(d.id.as_str()).chain(d.other_ids.iter().map(String::as_str))
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.indicators.len()
    }
}

/// Why a replay did not complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// The stream cannot be read (same errors as the live reader's first connection).
    Stream(String),
    /// Shutdown (or the session ended) first.
    Stopped,
    /// No byte of progress for this long.
    Stalled(Duration),
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Stream(m) => write!(f, "replay of the live stream failed: {m}"),
            ReplayError::Stopped => write!(f, "replay of the live stream interrupted by shutdown"),
            ReplayError::Stalled(d) => write!(
                f,
                "replay of the live stream made no progress for {}",
                humantime::format_duration(*d)
            ),
        }
    }
}

impl std::error::Error for ReplayError {}

/// `<ms>-<seq>` as numbers.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// `2024-06-15T10:00:00.123Z`
fn iso_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Replay the live stream described by `opts` in recover mode up to `pass_start`, folding it.
/// Ends on completion, on `stop` (a message or disconnection), or after `stall` without any item.
pub fn replay(
    opts: &StreamOptions,
    pass_start: SystemTime,
    stop: &Receiver<()>,
    stall: Duration,
) -> Result<Desired, ReplayError> {
    // The recover date is sent with millisecond precision; the tail starts there.
    let start_ms = pass_start
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let pass_start = UNIX_EPOCH + Duration::from_millis(start_ms);
    let (tx, rx) = crossbeam_channel::bounded(256);
    let (stop_reader, reader_stop) = crossbeam_channel::bounded::<()>(1);
    let start = Checkpoint {
        start_from: "0-0".to_owned(),
        recover_until: Some(iso_millis(pass_start)),
    };
    let mut opts = opts.clone();
    // A replay should not wait long between reconnects.
    opts.backoff_max = opts.backoff_max.min(Duration::from_secs(10));
    let reader = StreamReader::spawn(opts, start, tx, reader_stop)
        .map_err(|e| ReplayError::Stream(format!("cannot start the replay reader: {e}")))?;
    let mut desired = Desired::default();
    let mut head: Option<(u64, u64)> = None;
    let result = loop {
        let item = crossbeam_channel::select! {
            recv(rx) -> item => item,
            recv(stop) -> _ => break Err(ReplayError::Stopped),
            default(stall) => break Err(ReplayError::Stalled(stall)),
        };
        let Ok(item) = item else {
            // The reader ended by itself: a fatal stream error (logged by the reader).
            break Err(ReplayError::Stream(
                "the stream refused the replay (see the previous error)".to_owned(),
            ));
        };
        let (id, heartbeat) = match &item {
            StreamItem::Connected(info) => {
                head = info.last_event_id.as_deref().and_then(parse_id);
                continue;
            }
            StreamItem::Event(ev) => {
                desired.apply(ev);
                (Some(ev.id.clone()), false)
            }
            StreamItem::Heartbeat { id } => (Some(id.clone()), true),
            StreamItem::Ignored { id, .. } => (id.clone(), false),
            StreamItem::Malformed(e) => (e.event_id.clone(), false),
            StreamItem::NoRecover { id } => {
                desired.log_replay = true;
                (id.clone(), false)
            }
            StreamItem::Disconnected { .. } => continue,
        };
        let Some(pos) = id.as_deref().and_then(parse_id) else {
            continue;
        };
        let tail = pos >= (start_ms, 0);
        let whole_log = heartbeat && head.is_some_and(|h| pos >= h);
        if tail || whole_log {
            if whole_log && !tail {
                desired.log_replay = true;
            }
            break Ok(desired);
        }
    };
    let _ = stop_reader.send(());
    drop(rx);
    if let Err(ReplayError::Stream(_)) = &result
        && let Err(e) = reader.join()
    {
        return Err(ReplayError::Stream(e.to_string()));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opencti::events::IndicatorEvent;
    use crate::translate::{FormerState, Indicator};

    fn ev(kind: EventKind, id: &str, absorbed: &[&str]) -> StreamEvent {
        let ind = |id: &str| IndicatorEvent {
            indicator: Indicator {
                id: format!("int-{id}"),
                standard_id: Some(format!("indicator--{id}")),
                ..Indicator::default()
            },
            former: FormerState {
                ids: vec![format!("indicator--{id}-old")],
                ..FormerState::default()
            },
            absorbed: Vec::new(),
        };
        let mut main = ind(id);
        main.absorbed = absorbed.iter().map(|a| ind(a)).collect();
        StreamEvent {
            id: "1-0".into(),
            kind,
            payload: Payload::Indicator(main),
            stix: serde_json::Value::Null,
        }
    }

    #[test]
    fn the_fold_follows_creates_deletes_and_merges() {
        let mut d = Desired::default();
        for e in [
            ev(EventKind::Create, "a", &[]),
            ev(EventKind::Create, "b", &[]),
            ev(EventKind::Create, "c", &[]),
            ev(EventKind::Update, "a", &[]),
            ev(EventKind::Delete, "b", &[]),
            ev(EventKind::Merge, "a", &["c"]),
        ] {
            d.apply(&e);
        }
        let mut ids: Vec<&String> = d.indicators.keys().collect();
        ids.sort();
        assert_eq!(ids, ["int-a"]);
        let aliases = d.aliases();
        assert!(aliases.contains("indicator--a") && aliases.contains("indicator--a-old"));
        assert!(!aliases.contains("int-c"));
        assert_eq!(d.events, 6);
    }

    #[test]
    fn ids_compare_as_numbers() {
        assert!(parse_id("10-0") > parse_id("9-5"));
        assert_eq!(parse_id("x"), None);
        assert!(
            iso_millis(UNIX_EPOCH + Duration::from_millis(1_718_445_600_123)).ends_with(".123Z")
        );
    }
}
