//! The contract between the pipeline core and whoever does the work for one event: the items the
//! reader feeds in ([`Input`]), the [`EventHandler`] trait the workers call, and the [`Outcome`]
//! that tells the core what happens next (checkpoint, retry, dead-letter, or stop).
//!
//! The core is generic over the payload `T`, so it knows nothing about STIX or HarfangLab.
//!
//! Coalescing (`batch.rs`): a handler that says some payloads are [`EventHandler::coalescable`]
//! gets runs of them that wait behind each other on one key as one [`EventHandler::handle_batch`]
//! call; the default never coalesces.

use std::time::Duration;

use crate::retry::FailureKind;

/// One item from the stream reader, in stream order.
#[derive(Debug, Clone, PartialEq)]
pub enum Input<T> {
    /// A stream event. `event_id` is the SSE id (not unique: dependency events reuse it).
    Event {
        event_id: String,
        /// The indicator id the event is about (a `based-on` relationship counts as its source
        /// indicator). Events with the same key are applied in stream order. `None`: nothing to
        /// do (ignored types); it completes at once, still in order for the checkpoint.
        key: Option<String>,
        /// Further keys the event is ordered with (a merge: the indicators it absorbs): it runs
        /// only once every earlier event of `key` and of each of these has finished, and later
        /// events of any of them wait for it. Ignored without `key`.
        also_keys: Vec<String>,
        payload: T,
    },
    /// A heartbeat (or `connected`) carrying the server's last event id.
    Heartbeat { event_id: String },
}

/// What happened to one event. Decides the next step in the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The change was applied; the text is a short summary for the debug log.
    Applied(String),
    /// Deliberately not applied (unsupported pattern, below threshold, ...); the text says why.
    Skipped(String),
    /// The event could not be applied; `kind` says what a retry means. `Permanent`: logged,
    /// written to the dead-letter file and counted, the stream goes on. `Transient` and
    /// `Unavailable`: the owner tries the event again after a backoff (at least the
    /// `Retry-After`) without holding a worker; only the failures that count (see the
    /// `pipeline` module doc) spend its attempt budget, and once it is spent the event is
    /// dead-lettered.
    Failed { reason: String, kind: FailureKind },
    /// Continuing makes no sense (auth revoked, misconfiguration): the pipeline stops and
    /// `run` returns `PipelineError::Fatal`. The event is not checkpointed.
    Fatal(String),
}

impl Outcome {
    /// A failure that may pass on another try and may be the event's own fault (counts).
    pub fn retry(reason: impl Into<String>) -> Self {
        Outcome::failed(reason, FailureKind::Transient)
    }

    /// The far end did not serve the event (outage, throttling): retried, counted only when
    /// other events are getting through meanwhile. `retry_after`: the server's hint.
    pub fn unavailable(reason: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Outcome::failed(reason, FailureKind::Unavailable { retry_after })
    }

    /// A permanent failure (goes to the dead-letter file).
    pub fn permanent(reason: impl Into<String>) -> Self {
        Outcome::failed(reason, FailureKind::Permanent)
    }

    /// A failure of the given kind.
    pub fn failed(reason: impl Into<String>, kind: FailureKind) -> Self {
        Outcome::Failed {
            reason: reason.into(),
            kind,
        }
    }
}

impl Outcome {
    /// Whether this outcome ends the event's run for good (applied, skipped, or a permanent
    /// failure: dead-lettered, and the key goes on). A retryable failure or a fatal one does
    /// not: the events behind it on its key must wait.
    pub fn is_final(&self) -> bool {
        match self {
            Outcome::Applied(_) | Outcome::Skipped(_) => true,
            Outcome::Failed { kind, .. } => *kind == FailureKind::Permanent,
            Outcome::Fatal(_) => false,
        }
    }
}

/// One event of a batch handed to [`EventHandler::handle_batch`], in stream order.
#[derive(Debug)]
pub struct BatchItem<'a, T> {
    pub event_id: &'a str,
    pub payload: &'a T,
}

/// Facts about a payload for the dead-letter record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadInfo {
    /// The stream event name (`create`, `update`, `delete`, ...).
    pub event: String,
    /// A short excerpt of the payload for a human (the core truncates it); no secrets.
    pub excerpt: Option<String>,
}

/// Does the work for one event. Called concurrently from several worker threads (hence `Sync`);
/// calls sharing a key (`key` or `also_keys`) never overlap and come in stream order.
/// Implementations must not panic
/// on any input: a panic stops the pipeline (the event is not checkpointed).
pub trait EventHandler<T>: Sync {
    /// Apply one event. `key` is the `Input::Event` key (never called for key-less events).
    fn handle(&self, event_id: &str, key: &str, payload: &T) -> Outcome;

    /// May this event run in one batch with its neighbours of the same key (events that wait
    /// right behind each other and are all coalescable)? Default: no, every event runs alone.
    /// Say yes only for events whose effect the handler can apply together with the others in
    /// [`EventHandler::handle_batch`]. Key-less events, events with several keys and synthetic
    /// jobs are never batched, whatever this says.
    fn coalescable(&self, _key: &str, _payload: &T) -> bool {
        false
    }

    /// Apply several events of one key (stream order, at least two, each one `coalescable`).
    /// Returns their outcomes in order: one per event, or fewer, in which case the events
    /// without an outcome were not run and run later, in order, after the last one returned
    /// (the pipeline hands them out again, possibly as another batch). An outcome that is not
    /// [`Outcome::is_final`] (a retryable failure, a fatal one) ends the batch there: the
    /// outcomes after it are ignored, and the events after it wait behind its retry. An empty
    /// answer counts as a retryable failure of the first event.
    ///
    /// Default: [`EventHandler::handle_one_by_one`].
    fn handle_batch(&self, key: &str, events: &[BatchItem<'_, T>]) -> Vec<Outcome> {
        self.handle_one_by_one(key, events)
    }

    /// The events of a batch one by one through [`EventHandler::handle`], stopping at the first
    /// outcome that is not final: what a batch means without coalescing. The default of
    /// [`EventHandler::handle_batch`], and what an override does with a batch it declines.
    /// Not meant to be overridden (it would change what "one by one" means for the pipeline).
    fn handle_one_by_one(&self, key: &str, events: &[BatchItem<'_, T>]) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(events.len());
        for e in events {
            let outcome = self.handle(e.event_id, key, e.payload);
            let go_on = outcome.is_final();
            outcomes.push(outcome);
            if !go_on {
                break;
            }
        }
        outcomes
    }

    /// Describe a payload for its dead-letter record. Called only for dead-lettered events.
    fn describe(&self, _payload: &T) -> PayloadInfo {
        PayloadInfo::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Fails event 2 once (retryable) and event 4 for good; records what ran.
    struct Plain(Mutex<Vec<u32>>);

    impl EventHandler<u32> for Plain {
        fn handle(&self, _: &str, _: &str, n: &u32) -> Outcome {
            self.0.lock().unwrap().push(*n);
            match n {
                2 => Outcome::retry("busy"),
                4 => Outcome::permanent("bad"),
                _ => Outcome::Applied(String::new()),
            }
        }
    }

    #[test]
    fn the_default_batch_runs_one_by_one_and_stops_at_the_first_retry() {
        let h = Plain(Mutex::default());
        assert!(
            !h.coalescable("k", &1),
            "nothing is coalesced unless the handler says so"
        );
        let payloads = [0u32, 4, 1, 2, 3];
        let items: Vec<BatchItem<'_, u32>> = payloads
            .iter()
            .map(|p| BatchItem {
                event_id: "1-0",
                payload: p,
            })
            .collect();
        let outcomes = h.handle_batch("k", &items);
        // A permanent failure is final (dead letter) and does not stop it; a retry does.
        assert_eq!(outcomes.len(), 4, "{outcomes:?}");
        assert!(outcomes[1].is_final() && !outcomes[3].is_final());
        assert_eq!(*h.0.lock().unwrap(), [0, 4, 1, 2]);
    }
}
