//! `PipelineError`: why `pipeline::run` stopped abnormally. Every variant is fatal for the run
//! (the caller exits non-zero and a supervisor restarts it); retryable and permanent per-event
//! failures never surface here, they are retried or dead-lettered inside the pipeline.

use std::fmt;

use super::dead_letter::DeadLetterError;

#[derive(Debug)]
pub enum PipelineError {
    /// The handler returned `Outcome::Fatal` (auth revoked, misconfiguration). The event is not
    /// checkpointed, so it is replayed after the cause is fixed.
    Fatal {
        event_id: String,
        key: String,
        reason: String,
    },
    /// A dead-letter record could not be written or synced; stopping keeps the watermark from
    /// passing an event with no trace.
    DeadLetter(DeadLetterError),
    /// One or more worker threads panicked (a bug in the handler).
    WorkerPanicked { workers: Vec<String> },
    /// A worker thread could not be started.
    Spawn(std::io::Error),
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PipelineError::Fatal {
                event_id,
                key,
                reason,
            } => {
                write!(f, "fatal error on event {event_id} (key {key}): {reason}")
            }
            PipelineError::DeadLetter(e) => write!(f, "dead-letter log failed: {e}"),
            PipelineError::WorkerPanicked { workers } => {
                write!(f, "worker thread(s) panicked: {}", workers.join(", "))
            }
            PipelineError::Spawn(e) => write!(f, "cannot start a worker thread: {e}"),
        }
    }
}

impl std::error::Error for PipelineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PipelineError::DeadLetter(e) => Some(e),
            PipelineError::Spawn(e) => Some(e),
            PipelineError::Fatal { .. } | PipelineError::WorkerPanicked { .. } => None,
        }
    }
}

impl From<DeadLetterError> for PipelineError {
    fn from(e: DeadLetterError) -> Self {
        PipelineError::DeadLetter(e)
    }
}
