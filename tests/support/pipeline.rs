//! Shared fakes for the `pipeline_*` integration tests: a closure handler, a recording sink,
//! a feeder thread and fast options.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Receiver;
use harfanglab_intel::RetryPolicy;
use harfanglab_intel::pipeline::{
    self, CheckpointSink, DeadLetterLog, EventHandler, Input, Outcome, PayloadInfo, PipelineError,
    PipelineOptions, PipelineSummary, Shutdown,
};

/// Test payload: the position of the event in the stream and its operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Ev {
    pub n: usize,
    pub op: &'static str,
}

/// A handler made of a closure `(event_id, key, payload) -> Outcome`.
pub struct FnHandler<F>(pub F);

impl<F> EventHandler<Ev> for FnHandler<F>
where
    F: Fn(&str, &str, &Ev) -> Outcome + Sync,
{
    fn handle(&self, event_id: &str, key: &str, payload: &Ev) -> Outcome {
        (self.0)(event_id, key, payload)
    }

    fn describe(&self, payload: &Ev) -> PayloadInfo {
        PayloadInfo {
            event: payload.op.to_owned(),
            excerpt: Some(format!("n={}", payload.n)),
        }
    }
}

/// A check run on each saved watermark (panics to fail the test).
pub type SaveCheck = Box<dyn FnMut(&str)>;

/// Records every saved watermark; an optional check runs at each save.
#[derive(Default)]
pub struct RecordingSink {
    pub saves: Arc<Mutex<Vec<String>>>,
    pub check: Option<SaveCheck>,
}

impl CheckpointSink for RecordingSink {
    fn save(&mut self, event_id: &str) {
        if let Some(check) = self.check.as_mut() {
            check(event_id);
        }
        self.saves.lock().unwrap().push(event_id.to_owned());
    }
}

impl RecordingSink {
    pub fn saved(&self) -> Vec<String> {
        self.saves.lock().unwrap().clone()
    }
}

/// Event id for stream position `n` (unique in these tests so positions can be recovered).
pub fn id(n: usize) -> String {
    format!("{}-0", 1000 + n)
}

/// Stream position from an id made by [`id`].
pub fn pos(id: &str) -> usize {
    id.trim_end_matches("-0").parse::<usize>().expect("test id") - 1000
}

pub fn event(n: usize, key: &str, op: &'static str) -> Input<Ev> {
    Input::Event {
        event_id: id(n),
        key: Some(key.to_owned()),
        also_keys: Vec::new(),
        payload: Ev { n, op },
    }
}

/// An event about `key` that is also ordered with `also` (a merge and its absorbed keys).
pub fn multi_key_event(n: usize, key: &str, also: &[&str], op: &'static str) -> Input<Ev> {
    Input::Event {
        event_id: id(n),
        key: Some(key.to_owned()),
        also_keys: also.iter().map(|k| (*k).to_owned()).collect(),
        payload: Ev { n, op },
    }
}

/// A bounded source fed by a thread that sends `items` then closes the channel.
pub fn feed(items: Vec<Input<Ev>>, capacity: usize) -> Receiver<Input<Ev>> {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    std::thread::spawn(move || {
        for item in items {
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    rx
}

/// Options with short timers for tests.
pub fn fast_opts(workers: usize) -> PipelineOptions {
    PipelineOptions {
        workers,
        queue_per_worker: 16,
        shutdown_deadline: Duration::from_secs(5),
        summary_every: Duration::from_millis(200),
        save_every: Duration::from_millis(1),
        tick_every: Duration::from_millis(50),
        retry: RetryPolicy {
            max_retries: 2,
            base: Duration::from_millis(20),
            cap: Duration::from_millis(100),
        },
        ..PipelineOptions::default()
    }
}

/// Run the pipeline over `source` until it closes and everything drained: no hooks, its own
/// shutdown signal, a sink nobody reads.
pub fn run_to_end<H: EventHandler<Ev>>(
    source: Receiver<Input<Ev>>,
    handler: &H,
    opts: &PipelineOptions,
    dead_letters: DeadLetterLog,
) -> PipelineSummary {
    pipeline::run(
        source,
        handler,
        &mut RecordingSink::default(),
        &mut (),
        opts,
        &Shutdown::new(),
        dead_letters,
    )
    .expect("run")
}

/// Run the pipeline over `source` into `sink` with no hooks and no dead-letter log.
pub fn run_plain<H: EventHandler<Ev>, S: CheckpointSink>(
    source: Receiver<Input<Ev>>,
    handler: &H,
    sink: &mut S,
    opts: &PipelineOptions,
    shutdown: &Shutdown,
) -> Result<PipelineSummary, PipelineError> {
    pipeline::run(
        source,
        handler,
        sink,
        &mut (),
        opts,
        shutdown,
        DeadLetterLog::disabled(),
    )
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hli-pipeline-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Simulated work (test-only: product code never sleeps).
pub fn work_for(d: Duration) {
    std::thread::sleep(d);
}
