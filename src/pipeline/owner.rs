//! The owner thread's loop: the single place that reads the source, decides which event runs
//! next, receives completions, decides retries (the attempt budget, `budget.rs`) and keeps the
//! waiting ones in its timer heap, writes dead letters, moves the watermark and calls the
//! checkpoint sink, the tick hook and the summary log.
//!
//! One `select!` over the source (only while under the in-flight cap), the workers' reports and
//! the shutdown signal, with a timeout to the next timer (save, summary, tick, retry, deadline).
//! No sleeps, no locks: every piece of state here has exactly this one owner.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendError, Sender};

use super::batch;
use super::budget::Budget;
use super::checkpoint::{CheckpointSink, CheckpointTracker, Seq};
use super::dead_letter::{DeadLetter, DeadLetterLog};
use super::dispatch::KeyQueues;
use super::handler::{EventHandler, Input, Outcome};
use super::pool::Pool;
use super::stats::{Counter, Gauges};
use super::synthetic::{Side, SideState, is_synthetic};
use super::worker::{Final, Job, Report};
use super::{PipelineError, PipelineHooks, PipelineOptions, PipelineSummary, Shutdown, StopReason};
use crate::retry::FailureKind;

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

pub(crate) struct Owner<'a, T, H, S, K> {
    opts: &'a PipelineOptions,
    /// Only for `describe` (a dead letter's excerpt) and `coalescable`; workers run `handle`.
    handler: &'a H,
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
    budget: Budget,
    /// Synthetic jobs (reconciliation): their channel and accounting (`synthetic.rs`).
    side: SideState<T>,
    /// Jobs sent to workers whose report has not come back.
    outstanding: usize,
    /// The worker threads (fixed, or growing with the concurrency limit).
    pool: Pool<'a>,
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

impl<'a, T, H: EventHandler<T>, S: CheckpointSink, K: PipelineHooks> Owner<'a, T, H, S, K> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        opts: &'a PipelineOptions,
        handler: &'a H,
        sink: &'a mut S,
        hooks: &'a mut K,
        shutdown: &'a Shutdown,
        dead_letters: DeadLetterLog,
        jobs: Sender<Job<T>>,
        abandon: &'a AtomicBool,
        side: Receiver<Side<T>>,
        pool: Pool<'a>,
    ) -> Self {
        let now = Instant::now();
        // A zero period would make the loop spin.
        let period = |d: Duration| d.max(Duration::from_millis(1));
        Owner {
            opts,
            handler,
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
            budget: Budget::default(),
            // A live event waits behind at most this many synthetic jobs for a worker.
            side: SideState::new(side, opts.workers.max(1)),
            outstanding: 0,
            pool,
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
        let mut reports_open = true;
        log::info!(
            "pipeline: started ({} workers{}, at most {} events in flight)",
            self.pool.workers(),
            if self.opts.worker_limit.is_some() {
                ", growing with the concurrency limit"
            } else {
                ""
            },
            self.opts.max_in_flight_with(self.pool.workers())
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
            if !reports_open || self.pool.workers() == 0 {
                // Every worker is gone (all panicked): nothing can finish any more. Their last
                // reports (`Lost`) are sent before their thread ends: take them first.
                while let Ok(report) = reports.try_recv() {
                    self.on_report(report);
                }
                self.shutdown.trigger();
                break;
            }
            self.release_due(now);
            self.pool.grow(self.outstanding);
            let cap = self.opts.max_in_flight_with(self.pool.workers());
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
            let ended = self.pool.ended();
            let never_side = crossbeam_channel::never();
            let side = if self.side.has_room() && !matches!(self.phase, Phase::Stopping { .. }) {
                self.side.receiver().clone()
            } else {
                never_side
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
                recv(side) -> msg => match msg {
                    Ok(input) => self.admit_side(input),
                    Err(_) => self.side.open = false,
                },
                // Only wakes the loop; the phase change happens at the top.
                recv(sig) -> _ => {},
                // A worker thread ended: the top of the loop sees whether any is left.
                recv(ended) -> _ => {},
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
        self.opts.stats.set_gauges(Gauges {
            in_flight: abandoned,
            ..Gauges::default()
        });
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
                self.side.saw(&key, &also_keys);
                let seq = self.tracker.begin(&event_id);
                let job = Job {
                    seq,
                    event_id: event_id.into(),
                    key: key.into(),
                    payload,
                    attempts: self.budget.admit(),
                    followers: Vec::new(),
                };
                let also = also_keys.into_iter().map(Into::into).collect();
                if let Some(job) = self.keys.admit(job, also) {
                    self.dispatch(job);
                }
            }
        }
    }

    /// A message of the side channel: a synthetic job joins its key's line (dropped at once when
    /// a stream event of its key came after the watch), or the watch starts or ends.
    fn admit_side(&mut self, input: Side<T>) {
        match input {
            Side::Watch { ack } => self.side.watch(&ack),
            Side::Unwatch => self.side.unwatch(),
            Side::Job { key, payload } => {
                if self.side.is_stale(&key) {
                    self.side.dropped += 1;
                    log::debug!("indicator={key}: reconciliation job dropped: a newer live event");
                    return;
                }
                let job = Job {
                    seq: self.side.next_seq(),
                    event_id: Arc::from("reconcile"),
                    key: key.into(),
                    payload,
                    attempts: self.budget.admit(),
                    followers: Vec::new(),
                };
                self.side.in_flight += 1;
                if let Some(job) = self.keys.admit(job, Vec::new()) {
                    self.dispatch(job);
                }
            }
        }
    }

    fn dispatch(&mut self, mut job: Job<T>) {
        if is_synthetic(job.seq) && self.side.is_stale(&job.key) {
            // It waited behind a live event of its key that is newer than its view.
            self.side.dropped += 1;
            log::debug!(
                "indicator={}: reconciliation job dropped: a newer live event",
                job.key
            );
            self.finished(job.seq);
            return;
        }
        let max = self.opts.coalesce_max;
        if max > 1 && !is_synthetic(job.seq) {
            let (handler, key) = (self.handler, job.key.clone());
            if handler.coalescable(&key, &job.payload) {
                self.keys
                    .coalesce(&mut job, max, |p| handler.coalescable(&key, p));
            }
        }
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
            } => {
                self.outstanding -= 1;
                self.on_final(seq, &event_id, &key, outcome);
            }
            Report::Batch { jobs, outcomes } => {
                self.outstanding -= 1;
                self.on_batch(jobs, outcomes);
            }
            Report::Failed { job, reason, kind } => {
                self.outstanding -= 1;
                self.on_failure(job, reason, kind);
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

    /// A batch came back (`batch.rs`): the events not run wait in their line again, the
    /// finished ones finish in order, then the one that stopped the batch is handled as a lone
    /// event's failure would be. Each event counts once in the stats.
    fn on_batch(&mut self, jobs: Vec<Job<T>>, outcomes: Vec<Outcome>) {
        let split = batch::split(jobs, outcomes);
        // First, so that finishing the last run event dispatches the next one.
        for job in split.unrun {
            self.keys.put_back(job);
        }
        for (job, outcome) in split.done.into_iter().chain(split.stopped) {
            // Given up while this loop ran (a dead letter that could not be written abandons
            // its key's line, the rest of this batch included): not applied as far as the
            // stream position goes, so neither counted nor finished; `finish` counts it as
            // abandoned (replayed after a restart).
            if !self.keys.is_tracked(job.seq) {
                log::debug!(
                    "event={} indicator={}: result dropped: its key was given up",
                    job.event_id,
                    job.key
                );
                continue;
            }
            match outcome {
                Outcome::Applied(s) => {
                    self.on_final(job.seq, &job.event_id, &job.key, Final::Applied(s))
                }
                Outcome::Skipped(s) => {
                    self.on_final(job.seq, &job.event_id, &job.key, Final::Skipped(s))
                }
                Outcome::Fatal(s) => {
                    self.on_final(job.seq, &job.event_id, &job.key, Final::Fatal(s))
                }
                Outcome::Failed { reason, kind } => self.on_failure(job, reason, kind),
            }
        }
    }

    /// An event's final result: count it, then finish it (or stop everything, `Fatal`).
    fn on_final(&mut self, seq: Seq, event_id: &str, key: &str, outcome: Final) {
        match outcome {
            // A synthetic job is not an event: its handler reported what it did.
            Final::Applied(_) | Final::Skipped(_) if is_synthetic(seq) => {}
            Final::Applied(summary) => {
                log::debug!("event={event_id} indicator={key}: applied: {summary}");
                self.opts.stats.add(Counter::Applied, 1);
                self.budget.applied();
            }
            Final::Skipped(reason) => {
                log::debug!("event={event_id} indicator={key}: skipped: {reason}");
                self.opts.stats.add(Counter::Skipped, 1);
            }
            Final::Fatal(reason) => {
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
        self.finished(seq);
    }

    /// A failed attempt: dead-letter it (permanent, or its budget spent), give it up (shutting
    /// down), or put it in the timer heap for its backoff.
    fn on_failure(&mut self, mut job: Job<T>, reason: String, kind: FailureKind) {
        let counts = self.budget.failed(&mut job.attempts, kind);
        let a = job.attempts;
        let retry = &self.opts.retry;
        let spent = counts && !retry.allows(a.counted - 1);
        if is_synthetic(job.seq) && (kind == FailureKind::Permanent || spent) {
            // Not an event: no dead letter; its handler reported the failure.
            log::debug!(
                "indicator={}: reconciliation job given up: {reason}",
                job.key
            );
            self.finished(job.seq);
            return;
        }
        if kind == FailureKind::Permanent || spent {
            let reason = if kind == FailureKind::Permanent {
                reason
            } else if a.counted == a.failures {
                format!("gave up after {} attempts: {reason}", a.failures)
            } else {
                format!(
                    "gave up after {} attempts ({} counted): {reason}",
                    a.failures, a.counted
                )
            };
            self.dead_letter(job, reason);
            return;
        }
        if matches!(self.phase, Phase::Stopping { .. }) {
            log::info!(
                "event={} indicator={}: not retried (shutting down): {reason}",
                job.event_id,
                job.key
            );
            self.keys.abandon(job.seq);
            return;
        }
        let retry_after = match kind {
            FailureKind::Unavailable { retry_after } => retry_after,
            _ => None,
        };
        let wait = retry.delay(a.failures - 1, retry_after, &mut self.rng);
        let budget = if counts {
            format!("{}/{} retries used", a.counted, retry.max_retries)
        } else {
            "not counted: the far end is unavailable for other events too".to_owned()
        };
        let line = format!(
            "event={} indicator={}: attempt {} failed ({budget}), retrying in {}: {reason}",
            job.event_id,
            job.key,
            a.failures,
            humantime::format_duration(round_millis(wait))
        );
        // During an outage every event lands here once per backoff: one warning per event (its
        // first failure, or one that counts), the rest at debug; the summary line counts them.
        if counts || a.failures == 1 {
            log::warn!("{line}");
        } else {
            log::debug!("{line}");
        }
        self.opts.stats.add(Counter::Retry, 1);
        self.delayed.push(Delayed {
            due: Instant::now() + wait,
            job,
        });
    }

    fn dead_letter(&mut self, job: Job<T>, reason: String) {
        let (event_id, key) = (&job.event_id, &job.key);
        log::error!(
            "event={event_id} indicator={key}: failed (attempt {}), dead-lettered: {reason}",
            job.attempts.failures
        );
        let info = self.handler.describe(&job.payload);
        let record = DeadLetter::new(event_id, key, info.event, reason, info.excerpt);
        if let Err(e) = self.dead_letters.append(&record) {
            log::error!("pipeline: {e}; stopping");
            self.dead_letters_broken = true;
            self.fail(e.into());
            self.keys.abandon(job.seq);
            return;
        }
        self.opts.stats.add(Counter::Failed, 1);
        self.finished(job.seq);
    }

    /// `seq` is done (applied, skipped or recorded): move the watermark, run what was waiting
    /// for it on its keys.
    fn finished(&mut self, seq: Seq) {
        if is_synthetic(seq) {
            self.side.in_flight = self.side.in_flight.saturating_sub(1);
        } else {
            self.tracker.finish(seq);
        }
        for next in self.keys.finish(seq) {
            self.dispatch(next);
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
        self.opts.stats.set_gauges(Gauges {
            in_flight: self.tracker.in_flight(),
            source_backlog: source.len(),
            busy_workers: self.outstanding.min(self.pool.workers()),
            retry_waiting: self.delayed.len(),
        });
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
         in_flight={} retry_waiting={} source_backlog={} watermark={}",
        s.received,
        s.applied,
        s.skipped,
        s.ignored,
        s.failed,
        s.retries,
        s.abandoned,
        s.in_flight,
        s.retry_waiting,
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
