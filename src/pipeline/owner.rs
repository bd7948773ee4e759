//! The owner thread's loop: the single place that reads the source, decides which event runs
//! next, receives completions, schedules retries, writes dead letters, moves the watermark and
//! calls the checkpoint sink, the tick hook and the summary log.
//!
//! One `select!` over the source (only while under the in-flight cap), the workers' reports and
//! the shutdown signal, with a timeout to the next timer (save, summary, tick, retry, deadline).
//! No sleeps, no locks: every piece of state here has exactly this one owner.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendError, Sender};

use super::checkpoint::{CheckpointSink, CheckpointTracker};
use super::dead_letter::{DeadLetter, DeadLetterLog};
use super::dispatch::KeyQueues;
use super::handler::{Input, Outcome};
use super::stats::Counter;
use super::worker::{Job, Report};
use super::{PipelineError, PipelineHooks, PipelineOptions, PipelineSummary, Shutdown, StopReason};

/// Most source items taken per wake-up, so completions and timers are never starved.
const SOURCE_BURST: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the source.
    Running,
    /// The source closed: finish everything, retries included.
    SourceClosed,
    /// Shutdown triggered: stop reading, finish what is buffered until the deadline.
    Stopping { deadline: Instant },
}

/// A job waiting for its retry backoff; the heap pops the earliest `due` first.
struct Delayed<T> {
    due: Instant,
    job: Job<T>,
}

impl<T> PartialEq for Delayed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due && self.job.seq == other.job.seq
    }
}
impl<T> Eq for Delayed<T> {}
impl<T> PartialOrd for Delayed<T> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Delayed<T> {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // Reversed: BinaryHeap is a max-heap.
        (other.due, other.job.seq).cmp(&(self.due, self.job.seq))
    }
}

/// Sets the workers' abandon flag when the owner returns or unwinds, so workers never run what
/// is still queued once the owner has stopped accounting for it.
struct AbandonOnDrop<'a>(&'a AtomicBool);

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

pub(crate) struct Owner<'a, T, S, K> {
    opts: &'a PipelineOptions,
    sink: &'a mut S,
    hooks: &'a mut K,
    shutdown: &'a Shutdown,
    dead_letters: DeadLetterLog,
    /// Set once a dead-letter write failed: no checkpoint may be saved after that.
    dead_letters_broken: bool,
    jobs: Sender<Job<T>>,
    abandon: &'a AtomicBool,
    tracker: CheckpointTracker,
    keys: KeyQueues<T>,
    delayed: BinaryHeap<Delayed<T>>,
    /// Jobs sent to workers whose report has not come back.
    outstanding: usize,
    phase: Phase,
    error: Option<PipelineError>,
    saved: Option<String>,
    rng: fastrand::Rng,
    started: Instant,
    next_save: Instant,
    next_summary: Instant,
    next_tick: Instant,
    /// (time, finished count) at the previous summary line, for the rate.
    last_summary: (Instant, u64),
}

impl<'a, T, S: CheckpointSink, K: PipelineHooks> Owner<'a, T, S, K> {
    pub(crate) fn new(
        opts: &'a PipelineOptions,
        sink: &'a mut S,
        hooks: &'a mut K,
        shutdown: &'a Shutdown,
        dead_letters: DeadLetterLog,
        jobs: Sender<Job<T>>,
        abandon: &'a AtomicBool,
    ) -> Self {
        let now = Instant::now();
        // A zero period would make the loop spin.
        let period = |d: Duration| d.max(Duration::from_millis(1));
        Owner {
            opts,
            sink,
            hooks,
            shutdown,
            dead_letters,
            dead_letters_broken: false,
            jobs,
            abandon,
            tracker: CheckpointTracker::new(),
            keys: KeyQueues::default(),
            delayed: BinaryHeap::new(),
            outstanding: 0,
            phase: Phase::Running,
            error: None,
            saved: None,
            rng: fastrand::Rng::new(),
            started: now,
            next_save: now,
            next_summary: now + period(opts.summary_every),
            next_tick: now + period(opts.tick_every),
            last_summary: (now, 0),
        }
    }

    /// Run to the end; returns the summary and the first fatal error, if any.
    pub(crate) fn run(
        mut self,
        source: Receiver<Input<T>>,
        reports: Receiver<Report<T>>,
    ) -> (PipelineSummary, Option<PipelineError>) {
        // Declared after `self` (a parameter), so it drops first: the flag is set before the job
        // sender inside `self` is dropped.
        let _abandon = AbandonOnDrop(self.abandon);
        let never_input = crossbeam_channel::never();
        let never_report = crossbeam_channel::never();
        let never_signal = crossbeam_channel::never();
        let cap = self.opts.max_in_flight();
        let mut reports_open = true;
        log::info!(
            "pipeline: started ({} workers, at most {cap} events in flight)",
            self.opts.workers.max(1)
        );

        loop {
            let now = Instant::now();
            if !matches!(self.phase, Phase::Stopping { .. }) && self.shutdown.is_triggered() {
                self.enter_stopping(now);
            }
            if let Phase::Stopping { deadline } = self.phase
                && (self.shutdown.is_hard() || now >= deadline)
            {
                if self.tracker.in_flight() > 0 {
                    log::warn!(
                        "pipeline: shutdown deadline reached with {} events unfinished",
                        self.tracker.in_flight()
                    );
                }
                break;
            }
            if self.phase != Phase::Running && self.outstanding == 0 && self.delayed.is_empty() {
                break;
            }
            if !reports_open {
                // Every worker is gone (all panicked): nothing can finish any more.
                self.shutdown.trigger();
                break;
            }
            self.release_due(now);
            self.periodic(now, &source);

            let timeout = self.next_wake(now);
            let accepting = self.phase == Phase::Running && self.tracker.in_flight() < cap;
            let src = if accepting { &source } else { &never_input };
            let rep = if reports_open {
                &reports
            } else {
                &never_report
            };
            let sig = match self.phase {
                Phase::Stopping { .. } => &never_signal,
                _ => self.shutdown.receiver(),
            };
            crossbeam_channel::select! {
                recv(src) -> msg => match msg {
                    Ok(input) => {
                        self.admit(input);
                        // Take a short burst while under the cap: one select per item is slow.
                        for _ in 1..SOURCE_BURST {
                            if self.tracker.in_flight() >= cap {
                                break;
                            }
                            match source.try_recv() {
                                Ok(input) => self.admit(input),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(_) => {
                        log::info!(
                            "pipeline: source closed; draining {} events",
                            self.tracker.in_flight()
                        );
                        self.phase = Phase::SourceClosed;
                    }
                },
                recv(rep) -> msg => match msg {
                    Ok(report) => {
                        self.on_report(report);
                        while let Ok(report) = reports.try_recv() {
                            self.on_report(report);
                        }
                    }
                    Err(_) => reports_open = false,
                },
                // Only wakes the loop; the phase change happens at the top.
                recv(sig) -> _ => {},
                default(timeout) => {},
            }
        }

        let reason = match self.phase {
            Phase::Stopping { .. } => StopReason::Shutdown,
            _ => StopReason::SourceClosed,
        };
        self.finish(reason)
    }

    /// Final accounting: abandon what is left, sync dead letters, save the checkpoint.
    fn finish(mut self, reason: StopReason) -> (PipelineSummary, Option<PipelineError>) {
        self.abandon.store(true, Ordering::Release);
        let abandoned = self.tracker.in_flight();
        self.opts.stats.add(Counter::Abandoned, abandoned as u64);
        if abandoned > 0 {
            log::warn!(
                "pipeline: {abandoned} events abandoned (not checkpointed; replayed after restart)"
            );
        }
        self.save();
        self.opts.stats.set_gauges(abandoned, 0, 0);
        let stats = self.opts.stats.snapshot();
        log::info!(
            "pipeline: stopped ({reason:?}) after {}: {}",
            humantime::format_duration(round_secs(self.started.elapsed())),
            summary_counts(&stats)
        );
        let summary = PipelineSummary {
            reason,
            stats,
            watermark: self.saved.clone(),
            elapsed: self.started.elapsed(),
        };
        (summary, self.error.take())
    }

    fn enter_stopping(&mut self, now: Instant) {
        let deadline = now + self.opts.shutdown_deadline;
        self.phase = Phase::Stopping { deadline };
        // A retry wait would outlast any reasonable deadline: give those keys up now.
        for delayed in std::mem::take(&mut self.delayed) {
            self.keys.abandon(delayed.job.seq);
        }
        log::info!(
            "pipeline: shutdown: stopped reading; {} events in flight, deadline {}",
            self.tracker.in_flight(),
            humantime::format_duration(self.opts.shutdown_deadline)
        );
    }

    fn admit(&mut self, input: Input<T>) {
        match input {
            Input::Heartbeat { event_id } => {
                self.opts.stats.add(Counter::Heartbeat, 1);
                self.tracker.heartbeat(&event_id);
            }
            Input::Event {
                event_id,
                key: None,
                ..
            } => {
                self.opts.stats.add(Counter::Received, 1);
                self.opts.stats.add(Counter::Ignored, 1);
                log::debug!("event={event_id}: nothing to do");
                self.tracker.begin_finished(&event_id);
            }
            Input::Event {
                event_id,
                key: Some(key),
                also_keys,
                payload,
            } => {
                self.opts.stats.add(Counter::Received, 1);
                let seq = self.tracker.begin(&event_id);
                let job = Job {
                    seq,
                    event_id: event_id.into(),
                    key: key.into(),
                    payload,
                    failures: 0,
                };
                let also = also_keys.into_iter().map(Into::into).collect();
                if let Some(job) = self.keys.admit(job, also) {
                    self.dispatch(job);
                }
            }
        }
    }

    fn dispatch(&mut self, job: Job<T>) {
        match self.jobs.send(job) {
            Ok(()) => self.outstanding += 1,
            Err(SendError(job)) => {
                // No worker left to run it; the loop notices and stops.
                self.keys.abandon(job.seq);
                self.shutdown.trigger();
            }
        }
    }

    fn on_report(&mut self, report: Report<T>) {
        match report {
            Report::Done {
                seq,
                event_id,
                key,
                outcome,
                failures,
                info,
            } => {
                self.outstanding -= 1;
                match outcome {
                    Outcome::Applied(summary) => {
                        log::debug!("event={event_id} indicator={key}: applied: {summary}");
                        self.opts.stats.add(Counter::Applied, 1);
                    }
                    Outcome::Skipped(reason) => {
                        log::debug!("event={event_id} indicator={key}: skipped: {reason}");
                        self.opts.stats.add(Counter::Skipped, 1);
                    }
                    Outcome::Failed { reason, .. } => {
                        log::error!(
                            "event={event_id} indicator={key}: failed (attempt {failures}), \
                             dead-lettered: {reason}"
                        );
                        let info = info.unwrap_or_default();
                        let record =
                            DeadLetter::new(&event_id, &key, info.event, reason, info.excerpt);
                        if let Err(e) = self.dead_letters.append(&record) {
                            log::error!("pipeline: {e}; stopping");
                            self.dead_letters_broken = true;
                            self.fail(e.into());
                            self.keys.abandon(seq);
                            return;
                        }
                        self.opts.stats.add(Counter::Failed, 1);
                    }
                    Outcome::Fatal(reason) => {
                        log::error!("event={event_id} indicator={key}: fatal: {reason}; stopping");
                        self.fail(PipelineError::Fatal {
                            event_id: event_id.to_string(),
                            key: key.to_string(),
                            reason,
                        });
                        self.keys.abandon(seq);
                        return;
                    }
                }
                self.tracker.finish(seq);
                for next in self.keys.finish(seq) {
                    self.dispatch(next);
                }
            }
            Report::Retry { job, reason } => {
                self.outstanding -= 1;
                if matches!(self.phase, Phase::Stopping { .. }) {
                    log::info!(
                        "event={} indicator={}: not retried (shutting down): {reason}",
                        job.event_id,
                        job.key
                    );
                    self.keys.abandon(job.seq);
                    return;
                }
                let wait = self.opts.retry.backoff(job.failures, &mut self.rng);
                log::warn!(
                    "event={} indicator={}: attempt {} failed, retrying in {}: {reason}",
                    job.event_id,
                    job.key,
                    job.failures,
                    humantime::format_duration(round_millis(wait))
                );
                self.opts.stats.add(Counter::Retry, 1);
                self.delayed.push(Delayed {
                    due: Instant::now() + wait,
                    job,
                });
            }
            Report::Lost { worker, running } => {
                if let Some((seq, _)) = running {
                    self.outstanding -= 1;
                    self.keys.abandon(seq);
                }
                self.fail(PipelineError::WorkerPanicked {
                    workers: vec![worker],
                });
            }
        }
    }

    /// Record the first fatal error and stop everything (the reader included).
    fn fail(&mut self, error: PipelineError) {
        if self.error.is_none() {
            self.error = Some(error);
        }
        self.shutdown.trigger();
    }

    fn release_due(&mut self, now: Instant) {
        while self.delayed.peek().is_some_and(|d| d.due <= now) {
            if let Some(Delayed { job, .. }) = self.delayed.pop() {
                self.dispatch(job);
            }
        }
    }

    fn periodic(&mut self, now: Instant, source: &Receiver<Input<T>>) {
        self.opts.stats.set_gauges(
            self.tracker.in_flight(),
            source.len(),
            self.outstanding.min(self.opts.workers.max(1)),
        );
        if self.tracker.is_changed() && now >= self.next_save {
            self.save();
            self.next_save = now + self.opts.save_every;
        }
        if now >= self.next_summary {
            self.log_summary(now);
            self.next_summary = now + self.opts.summary_every.max(Duration::from_millis(1));
        }
        if now >= self.next_tick {
            self.hooks.tick(&self.opts.stats.snapshot());
            self.next_tick = now + self.opts.tick_every.max(Duration::from_millis(1));
        }
    }

    /// Make dead letters durable, then hand the watermark to the sink.
    fn save(&mut self) {
        if self.dead_letters_broken {
            return;
        }
        if let Err(e) = self.dead_letters.sync() {
            log::error!("pipeline: {e}; stopping");
            self.dead_letters_broken = true;
            self.fail(e.into());
            return;
        }
        if let Some(watermark) = self.tracker.watermark() {
            log::debug!("pipeline: checkpoint {watermark}");
            self.sink.save(watermark);
            self.opts.stats.set_watermark(watermark);
            self.saved = Some(watermark.to_owned());
        }
        self.tracker.mark_saved();
    }

    fn log_summary(&mut self, now: Instant) {
        let stats = self.opts.stats.snapshot();
        let finished = stats.applied + stats.skipped + stats.ignored + stats.failed;
        let (then, before) = self.last_summary;
        let secs = now.duration_since(then).as_secs_f64();
        let rate = if secs > 0.0 {
            (finished - before) as f64 / secs
        } else {
            0.0
        };
        self.last_summary = (now, finished);
        log::info!(
            "pipeline: {rate:.1} events/s, {}, queued behind a key={}, keys busy={}",
            summary_counts(&stats),
            self.keys.waiting(),
            self.keys.busy_keys()
        );
    }

    /// Time until the next timer the loop must act on.
    fn next_wake(&self, now: Instant) -> Duration {
        let mut next = self.next_summary.min(self.next_tick);
        if self.tracker.is_changed() {
            next = next.min(self.next_save);
        }
        if let Some(d) = self.delayed.peek() {
            next = next.min(d.due);
        }
        if let Phase::Stopping { deadline } = self.phase {
            next = next.min(deadline);
        }
        next.saturating_duration_since(now)
    }
}

fn summary_counts(s: &super::StatsSnapshot) -> String {
    format!(
        "received={} applied={} skipped={} ignored={} failed={} retries={} abandoned={} \
         in_flight={} source_backlog={} watermark={}",
        s.received,
        s.applied,
        s.skipped,
        s.ignored,
        s.failed,
        s.retries,
        s.abandoned,
        s.in_flight,
        s.source_backlog,
        s.watermark.as_deref().unwrap_or("-")
    )
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

fn round_millis(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().min(u128::from(u64::MAX)) as u64)
}
