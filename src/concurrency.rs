//! The limit on HarfangLab requests in flight: a [`Limiter`] hands out one RAII [`Permit`] per
//! request, and the permit's outcome (its round trip, a 429/503 with `Retry-After`, a timeout)
//! moves the limit. `HARFANGLAB_INTEL_WORKERS=auto` sizes it from what the server shows;
//! a fixed worker count makes it a plain cap at that number.
//!
//! Why this algorithm: a HarfangLab manager serves some number of requests at once; past that,
//! requests queue (latency grows) and then it throttles (429). Throughput is
//! `in-flight / latency` until the queue starts, so the right limit is "as many as the server
//! serves at once, plus a small queue", and that number is invisible from here except through
//! latency. [`Vegas`] is TCP Vegas as Netflix's concurrency-limits applies it to requests: it
//! keeps the lowest round trip seen (`min_rtt`, the unloaded latency), estimates the queue the
//! limit builds as `limit × (1 − min_rtt / rtt)` over a window of about one round trip of
//! samples, grows fast while there is no queue (only until the first queue or failure: "slow
//! start", as in TCP, since a fast step outruns its own feedback by a round trip), then by
//! `log10(limit)` per window while the queue is small, and shrinks once it exceeds a few
//! requests (thresholds scale with `log10(limit)`). A 429 or 503 is the server
//! saying it is past its limit: the limit halves (once per round of feedback, not once per
//! throttled request) and no new permit is handed out until its `Retry-After` has passed.
//! A server that throttles instead of queueing gives no latency signal before its 429s, so the
//! limit a 429 came at becomes a ceiling for a while (`ceiling_for`): the limit grows back to
//! just under it, not through it again every few round trips (each time costing a
//! `Retry-After` hold). Timeouts and dropped connections shrink it gently (×0.9). Gradient-style limiters need a
//! smoothed long-term RTT on top; Vegas with a probe is less state for the same behaviour here.
//!
//! Recovery: `min_rtt` only falls by itself, so a server that became slower for good would look
//! permanently queued. Every `probe_every` the limiter halves its cap for one window (BBR's
//! ProbeRTT), which drains the queue it built, and takes the lowest round trip of that window as
//! the new `min_rtt`, higher or lower.
//!
//! The core ([`Vegas`]) is pure: time comes in as arguments, so it is tested without clocks or
//! network. [`Limiter`] adds the mutex, the in-flight count and the wait, which ends when a
//! permit is freed or a hold expires (a `select!` on the freed-slot and shutdown channels, never
//! a bare sleep).
//!
//! Shutdown: the pipeline drains in-flight events for its shutdown deadline, and with `auto`
//! about a fifth of the workers wait here for a slot at any moment. Those waits are the drain's
//! own work, so they go on after the signal: a slot frees as soon as a request on the wire
//! answers (within the request timeout). What shutdown ends at once is a `Retry-After` hold
//! (the server asked for a pause that can outlast the drain; the events go back to the owner and
//! are replayed after restart) and a wait for a slot still unanswered `drain` (the pipeline's
//! shutdown deadline, `ClientOptions::shutdown_drain`) after the limiter first saw the signal (a
//! waiter sees it at once, anyone else at their next `acquire`): from then on every `acquire`
//! gets [`Stopped`], a free slot or not. So a worker is never held here
//! past the deadline; with the request it may have on the wire it ends within the deadline plus
//! one request timeout, and whatever it had not finished by the deadline the owner has already
//! counted as abandoned (not checkpointed).

use crossbeam_channel::{Receiver, Sender};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The fewest requests in flight the adaptive limit goes down to.
pub const MIN_LIMIT: usize = 1;
/// The most requests in flight (and worker threads) `auto` goes up to.
pub const MAX_LIMIT: usize = 256;

/// How the number of requests in flight is bounded.
#[derive(Clone, Debug, PartialEq)]
pub enum ConcurrencyLimit {
    /// At most this many, never changed (`HARFANGLAB_INTEL_WORKERS=<n>`).
    Fixed(usize),
    /// Follows latency and throttling (`HARFANGLAB_INTEL_WORKERS=auto`).
    Adaptive(AdaptiveOptions),
}

/// Tuning of the adaptive limit. `Default` gives the production values.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveOptions {
    /// The limit before any feedback (the former default worker count).
    pub initial: usize,
    /// Bounds of the limit.
    pub min: usize,
    pub max: usize,
    /// Period of the `min_rtt` probe (see the module header).
    pub probe_every: Duration,
    /// Longest hold honoured for one `Retry-After` (a hostile value must not stall us for a day).
    pub max_hold: Duration,
    /// How long the limit a 429/503 came at stays a ceiling (see the module header).
    pub ceiling_for: Duration,
}

/// How long waits for a slot go on after shutdown unless told otherwise (the pipeline's default
/// shutdown deadline).
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

impl Default for AdaptiveOptions {
    fn default() -> Self {
        AdaptiveOptions {
            initial: 16,
            min: MIN_LIMIT,
            max: MAX_LIMIT,
            probe_every: Duration::from_secs(10),
            max_hold: Duration::from_secs(60),
            ceiling_for: Duration::from_secs(30),
        }
    }
}

/// What one request ended as, as far as the limit is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The server answered (any status but an overload): its round trip is a latency sample.
    Answered,
    /// Answered, but its round trip says nothing about queueing (a big list page): no sample.
    Ignored,
    /// 429 or 503: back off hard, and hold new permits for `retry_after` if the server said.
    Overloaded { retry_after: Option<Duration> },
    /// No answer in time, or the connection dropped (timeout, reset, 502/504): back off gently.
    Dropped,
}

/// One finished request, as the core sees it.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// When its permit was granted.
    pub started: Instant,
    /// Its round trip.
    pub rtt: Duration,
    /// Requests in flight when it started, itself included.
    pub in_flight: usize,
    pub outcome: RequestOutcome,
}

/// Multiplier of the limit on 429/503.
const OVERLOAD_BACKOFF: f64 = 0.5;
/// Multiplier of the limit on a timeout or dropped connection.
const DROP_BACKOFF: f64 = 0.9;

/// The samples of the current window.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    samples: u32,
    rtt_sum: Duration,
    max_in_flight: usize,
}

/// A `min_rtt` probe under way: the cap is halved until enough requests started under it.
#[derive(Clone, Copy, Debug)]
struct Probe {
    cap: usize,
    started: Instant,
    clean: usize,
    lowest: Option<Duration>,
}

/// The pure Vegas limit (see the module header for the rules).
#[derive(Clone, Debug)]
pub struct Vegas {
    opts: AdaptiveOptions,
    limit: f64,
    min_rtt: Option<Duration>,
    window: Window,
    /// A failure of a request that started before this cannot shrink the limit again: one
    /// decrease per round of feedback, not one per request that was already on the wire.
    last_decrease: Option<Instant>,
    hold_until: Option<Instant>,
    /// When the current hold began: pushes by later 429s never take it past this + `max_hold`.
    hold_since: Option<Instant>,
    /// The limit the last overload came at, and until when the limit stays under it.
    ceiling: Option<(usize, Instant)>,
    next_probe: Instant,
    probe: Option<Probe>,
    /// Growing by `beta` per window: until the first queue, overload or drop.
    slow_start: bool,
}

impl Vegas {
    pub fn new(opts: AdaptiveOptions, now: Instant) -> Vegas {
        let (min, max) = bounds(&opts);
        let limit = opts.initial.clamp(min, max) as f64;
        Vegas {
            next_probe: now + opts.probe_every,
            opts,
            limit,
            min_rtt: None,
            window: Window::default(),
            last_decrease: None,
            hold_until: None,
            hold_since: None,
            ceiling: None,
            probe: None,
            slow_start: true,
        }
    }

    /// The limit, rounded down, within its bounds.
    pub fn limit(&self) -> usize {
        let (min, max) = bounds(&self.opts);
        (self.limit.floor() as usize).clamp(min, max)
    }

    /// The cap on permits right now: the limit, or half of it during a probe.
    pub fn cap(&self) -> usize {
        match self.probe {
            Some(p) => p.cap.min(self.limit()),
            None => self.limit(),
        }
    }

    /// No permit is granted before this (a `Retry-After` being honoured).
    pub fn held_until(&self, now: Instant) -> Option<Instant> {
        self.hold_until.filter(|&t| t > now)
    }

    /// The lowest round trip taken as unloaded latency.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// Feed one finished request.
    pub fn on_sample(&mut self, s: Sample, now: Instant) {
        if self.probe.is_none() && self.min_rtt.is_some() && now >= self.next_probe {
            self.probe = Some(Probe {
                cap: (self.limit() / 2).max(bounds(&self.opts).0),
                started: now,
                clean: 0,
                lowest: None,
            });
        }
        match s.outcome {
            RequestOutcome::Ignored => {}
            RequestOutcome::Overloaded { retry_after } => {
                if let Some(wait) = retry_after {
                    // 429s of requests already on the wire keep coming during a hold: each may
                    // push it, but the hold as a whole lasts at most `max_hold`.
                    let active = self.hold_until.filter(|&t| t > now);
                    let since = match active {
                        Some(_) => self.hold_since.unwrap_or(now),
                        None => now,
                    };
                    let until = (now + wait).min(since + self.opts.max_hold);
                    self.hold_until = Some(active.map_or(until, |t| t.max(until)));
                    self.hold_since = Some(since);
                }
                if self.decrease(OVERLOAD_BACKOFF, s.started, now) {
                    self.ceiling = Some((s.in_flight, now + self.opts.ceiling_for));
                }
            }
            RequestOutcome::Dropped => {
                self.decrease(DROP_BACKOFF, s.started, now);
            }
            RequestOutcome::Answered => self.on_answer(s, now),
        }
    }

    fn on_answer(&mut self, s: Sample, now: Instant) {
        if let Some(probe) = &mut self.probe {
            // Only requests that started once the cap was down see the drained queue.
            if s.started >= probe.started && s.in_flight <= probe.cap {
                probe.clean += 1;
                probe.lowest = Some(probe.lowest.map_or(s.rtt, |l| l.min(s.rtt)));
                if probe.clean >= probe.cap.div_ceil(2) {
                    self.min_rtt = probe.lowest;
                    self.probe = None;
                    self.next_probe = now + self.opts.probe_every;
                    self.window = Window::default();
                }
            }
            return;
        }
        self.min_rtt = Some(self.min_rtt.map_or(s.rtt, |m| m.min(s.rtt)));
        if self.last_decrease.is_some_and(|t| s.started < t) {
            // Sent under the limit before the last decrease: it describes that one.
            return;
        }
        let w = &mut self.window;
        w.samples += 1;
        w.rtt_sum += s.rtt;
        w.max_in_flight = w.max_in_flight.max(s.in_flight);
        // About one round trip of samples when the limit is in use.
        if (w.samples as usize) < self.limit() {
            return;
        }
        let window = std::mem::take(&mut self.window);
        self.update(window, now);
    }

    /// The Vegas step at the end of a window.
    fn update(&mut self, w: Window, now: Instant) {
        let Some(min_rtt) = self.min_rtt else {
            return;
        };
        let rtt = w.rtt_sum / w.samples.max(1);
        if rtt.is_zero() {
            return;
        }
        let ratio = min_rtt.as_secs_f64() / rtt.as_secs_f64();
        let queue = self.limit * (1.0 - ratio).max(0.0);
        let step = self.limit.log10().max(1.0);
        let (alpha, beta) = (3.0 * step, 6.0 * step);
        // Growing a limit that is not in use proves nothing (nor does it help).
        let in_use = w.max_in_flight * 2 >= self.limit();
        if queue >= alpha {
            self.slow_start = false;
        }
        let limit = if self.slow_start && queue <= step && in_use {
            self.limit + beta
        } else if queue < alpha && in_use {
            self.limit + step
        } else if queue > beta {
            self.limit - step
        } else {
            self.limit
        };
        let limit = match self.ceiling {
            Some((ceiling, until)) if now < until && limit > self.limit => {
                limit.min((ceiling.saturating_sub(1) as f64).max(self.limit))
            }
            _ => limit,
        };
        self.set_limit(limit);
    }

    /// Shrink by `factor` unless a decrease already answered requests sent before it; says
    /// whether it did.
    fn decrease(&mut self, factor: f64, started: Instant, now: Instant) -> bool {
        if self.last_decrease.is_some_and(|t| started < t) {
            return false;
        }
        self.set_limit(self.limit * factor);
        self.slow_start = false;
        self.last_decrease = Some(now);
        self.window = Window::default();
        true
    }

    fn set_limit(&mut self, limit: f64) {
        let (min, max) = bounds(&self.opts);
        self.limit = limit.clamp(min as f64, max as f64);
    }
}

/// Has shutdown been signalled (a message, or every sender gone)?
fn signalled(shutdown: &Receiver<()>) -> bool {
    matches!(
        shutdown.try_recv(),
        Ok(()) | Err(crossbeam_channel::TryRecvError::Disconnected)
    )
}

fn bounds(opts: &AdaptiveOptions) -> (usize, usize) {
    let min = opts.min.clamp(MIN_LIMIT, MAX_LIMIT);
    (min, opts.max.clamp(min, MAX_LIMIT))
}

/// The wait for a permit ended because shutdown was signalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped;

struct State {
    in_flight: usize,
    /// Threads inside [`Limiter::acquire`]'s wait.
    waiting: usize,
    /// Shutdown seen: waits for a slot end by then, and no permit is granted after it.
    stop_at: Option<Instant>,
    /// `None`: a fixed limit.
    vegas: Option<Vegas>,
    fixed: usize,
}

impl State {
    fn cap(&self) -> usize {
        self.vegas.as_ref().map_or(self.fixed, Vegas::cap)
    }

    fn limit(&self) -> usize {
        self.vegas.as_ref().map_or(self.fixed, Vegas::limit)
    }
}

/// The shared limit of one HarfangLab client: permits, the wait for one, and gauges.
pub struct Limiter {
    state: Mutex<State>,
    /// One message per freed slot with someone waiting: wakes one waiter.
    freed_tx: Sender<()>,
    freed_rx: Receiver<()>,
    /// The published limit and counters, readable without the lock (metrics, the worker pool).
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    overloads: AtomicU64,
    /// How long waits for a slot go on after shutdown (see the module header).
    drain: Duration,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Limiter {
    pub fn new(limit: ConcurrencyLimit) -> Limiter {
        Limiter::built(limit, Instant::now())
    }

    /// [`Limiter::new`] with the clock of the first probe given (tests).
    #[cfg(any(test, feature = "testkit"))]
    pub fn starting_at(limit: ConcurrencyLimit, now: Instant) -> Limiter {
        Limiter::built(limit, now)
    }

    fn built(limit: ConcurrencyLimit, now: Instant) -> Limiter {
        let (vegas, fixed) = match limit {
            ConcurrencyLimit::Fixed(n) => (None, n.clamp(MIN_LIMIT, MAX_LIMIT)),
            ConcurrencyLimit::Adaptive(opts) => (Some(Vegas::new(opts, now)), MAX_LIMIT),
        };
        let state = State {
            in_flight: 0,
            waiting: 0,
            stop_at: None,
            vegas,
            fixed,
        };
        let (freed_tx, freed_rx) = crossbeam_channel::bounded(MAX_LIMIT);
        Limiter {
            limit: AtomicUsize::new(state.limit()),
            state: Mutex::new(state),
            freed_tx,
            freed_rx,
            in_flight: AtomicUsize::new(0),
            overloads: AtomicU64::new(0),
            drain: DEFAULT_DRAIN,
        }
    }

    /// After shutdown, waits for a slot go on for `drain` (the pipeline's shutdown deadline),
    /// then every `acquire` is [`Stopped`] (module header).
    pub fn with_shutdown_drain(mut self, drain: Duration) -> Limiter {
        self.drain = drain;
        self
    }

    /// Is the limit adaptive (`auto`)?
    pub fn is_adaptive(&self) -> bool {
        self.lock().vegas.is_some()
    }

    /// The current limit (what `harfanglab_intel_concurrency_limit` shows).
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Permits out right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Threads waiting for a permit right now (for a free slot or a `Retry-After` hold): they
    /// are throttled, not stuck (the watchdog counts them as progress).
    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }

    /// Is a `Retry-After` hold under way?
    pub fn is_held(&self) -> bool {
        let now = Instant::now();
        self.lock()
            .vegas
            .as_ref()
            .is_some_and(|v| v.held_until(now).is_some())
    }

    /// 429/503 answers seen.
    pub fn overloads(&self) -> u64 {
        self.overloads.load(Ordering::Relaxed)
    }

    /// The lowest round trip the adaptive limit works from (`None`: fixed, or no sample yet).
    pub fn min_rtt(&self) -> Option<Duration> {
        self.lock().vegas.as_ref().and_then(Vegas::min_rtt)
    }

    /// A permit for one request: at once when under the cap and not held by a `Retry-After`,
    /// else after a permit is freed or the hold passes. Shutdown (a message on `shutdown`, or its
    /// disconnection) ends a hold at once with [`Stopped`]; a wait for a slot goes on until a
    /// permit is freed or the drain is over (module header), and a free slot is still granted
    /// until then: in-flight events may finish.
    pub fn acquire(&self, shutdown: &Receiver<()>) -> Result<Permit<'_>, Stopped> {
        let mut registered = false;
        loop {
            let (wait, stopping) = {
                let mut st = self.lock();
                if std::mem::take(&mut registered) {
                    st.waiting -= 1;
                }
                let now = Instant::now();
                if st.stop_at.is_none() && signalled(shutdown) {
                    self.stop(&mut st, now);
                }
                let held = st.vegas.as_ref().and_then(|v| v.held_until(now));
                if let Some(stop_at) = st.stop_at
                    && (held.is_some() || now >= stop_at)
                {
                    return Err(Stopped);
                }
                match held {
                    None if st.in_flight < st.cap() => {
                        st.in_flight += 1;
                        self.in_flight.store(st.in_flight, Ordering::Relaxed);
                        return Ok(Permit {
                            limiter: self,
                            started: Instant::now(),
                            in_flight: st.in_flight,
                            done: false,
                        });
                    }
                    // Registered under the same lock as the check, so a permit freed from
                    // now on sends a message; the timeout is only a backstop (or the drain's end).
                    None => {
                        st.waiting += 1;
                        registered = true;
                        let backstop = Duration::from_secs(1);
                        let wait = st.stop_at.map_or(backstop, |t| backstop.min(t - now));
                        (wait, st.stop_at.is_some())
                    }
                    Some(until) => {
                        st.waiting += 1;
                        registered = true;
                        (until - now, false)
                    }
                }
            };
            // Once stopping, only a freed slot or the drain's end wakes a slot wait (the
            // disconnected shutdown channel would be ready at every turn).
            let signal = if stopping {
                &crossbeam_channel::never()
            } else {
                shutdown
            };
            crossbeam_channel::select! {
                recv(self.freed_rx) -> _ => {}
                recv(signal) -> _ => {
                    let mut st = self.lock();
                    if st.stop_at.is_none() {
                        self.stop(&mut st, Instant::now());
                    }
                }
                default(wait) => {}
            }
        }
    }

    /// Shutdown seen first: start the drain, and wake every waiter so that a hold ends now
    /// (a shutdown message, unlike a disconnection, wakes only one of them).
    fn stop(&self, st: &mut State, now: Instant) {
        st.stop_at = Some(now + self.drain);
        for _ in 0..st.waiting {
            if self.freed_tx.try_send(()).is_err() {
                break;
            }
        }
    }

    fn release(&self, started: Instant, in_flight: usize, outcome: RequestOutcome) {
        let now = Instant::now();
        let mut st = self.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        if matches!(outcome, RequestOutcome::Overloaded { .. }) {
            self.overloads.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(vegas) = &mut st.vegas {
            vegas.on_sample(
                Sample {
                    started,
                    rtt: now.saturating_duration_since(started),
                    in_flight,
                    outcome,
                },
                now,
            );
        }
        self.limit.store(st.limit(), Ordering::Relaxed);
        self.in_flight.store(st.in_flight, Ordering::Relaxed);
        let free = st.cap().saturating_sub(st.in_flight);
        for _ in 0..free.min(st.waiting) {
            if self.freed_tx.try_send(()).is_err() {
                break;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements; a panic elsewhere must not wedge
        // every request.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One request's right to be in flight. Record how it ended with [`Permit::finish`]; dropping it
/// unrecorded (an early return, a panic) frees it without a sample.
#[must_use = "a permit is held until dropped or finished"]
pub struct Permit<'a> {
    limiter: &'a Limiter,
    started: Instant,
    in_flight: usize,
    done: bool,
}

impl Permit<'_> {
    /// Free the permit and feed its round trip (since it was granted) and outcome to the limit.
    pub fn finish(mut self, outcome: RequestOutcome) {
        self.done = true;
        self.limiter.release(self.started, self.in_flight, outcome);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.limiter
                .release(self.started, self.in_flight, RequestOutcome::Ignored);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn opts() -> AdaptiveOptions {
        AdaptiveOptions {
            probe_every: Duration::from_secs(3600),
            ..AdaptiveOptions::default()
        }
    }

    /// Feeds `n` answers of `rtt` with the cap fully in use, one per `rtt / cap`.
    fn answers(v: &mut Vegas, now: &mut Instant, n: usize, rtt: Duration) {
        for _ in 0..n {
            let started = *now;
            *now += rtt / v.cap() as u32;
            let s = Sample {
                started,
                rtt,
                in_flight: v.cap(),
                outcome: RequestOutcome::Answered,
            };
            v.on_sample(s, *now);
        }
    }

    fn overloaded(v: &mut Vegas, now: Instant, started: Instant, retry_after: Option<Duration>) {
        let s = Sample {
            started,
            rtt: MS,
            in_flight: v.limit(),
            outcome: RequestOutcome::Overloaded { retry_after },
        };
        v.on_sample(s, now);
    }

    #[test]
    fn grows_while_latency_stays_flat() {
        let mut now = Instant::now();
        let mut v = Vegas::new(opts(), now);
        assert_eq!(v.limit(), 16);
        answers(&mut v, &mut now, 500, 50 * MS);
        assert!(v.limit() > 64, "{}", v.limit());
        answers(&mut v, &mut now, 5000, 50 * MS);
        assert_eq!(v.limit(), MAX_LIMIT, "bounded above");
    }

    #[test]
    fn does_not_grow_a_limit_it_does_not_use() {
        let mut now = Instant::now();
        let mut v = Vegas::new(opts(), now);
        for _ in 0..500 {
            let started = now;
            now += 10 * MS;
            let s = Sample {
                started,
                rtt: 10 * MS,
                in_flight: 2,
                outcome: RequestOutcome::Answered,
            };
            v.on_sample(s, now);
        }
        assert_eq!(v.limit(), 16);
    }

    #[test]
    fn shrinks_when_latency_rises_and_settles_near_the_server_capacity() {
        let mut now = Instant::now();
        let mut v = Vegas::new(opts(), now);
        answers(&mut v, &mut now, 100, 20 * MS);
        let high = v.limit();
        // A server that serves 24 at once: beyond that, latency grows with the queue.
        for _ in 0..3000 {
            let limit = v.limit();
            let rtt = 20 * MS * (limit.max(24) as u32) / 24;
            answers(&mut v, &mut now, 1, rtt);
        }
        let settled = v.limit();
        assert!(settled < high, "{settled} < {high}");
        assert!((24..=24 + 20).contains(&settled), "settled at {settled}");
    }

    #[test]
    fn halves_on_429_once_per_round_of_feedback() {
        let mut now = Instant::now();
        let mut v = Vegas::new(opts(), now);
        answers(&mut v, &mut now, 100, 20 * MS);
        let before = v.limit();
        let sent = now;
        now += 20 * MS;
        overloaded(&mut v, now, sent, None);
        assert_eq!(v.limit(), before / 2);
        // The other requests that were on the wire with it do not halve it again.
        for _ in 0..10 {
            overloaded(&mut v, now, sent, None);
        }
        assert_eq!(v.limit(), before / 2);
        // A request sent after the decrease and throttled again does.
        let later = now + MS;
        overloaded(&mut v, later + MS, later, None);
        assert_eq!(v.limit(), before / 4);
        for i in 2..30 {
            let t = later + i * MS;
            overloaded(&mut v, t, t, None);
        }
        assert_eq!(v.limit(), MIN_LIMIT, "bounded below");
    }

    #[test]
    fn the_limit_a_429_came_at_is_a_ceiling_for_a_while() {
        let mut now = Instant::now();
        let mut v = Vegas::new(opts(), now);
        // A server that refuses instead of queueing: latency stays flat right up to the 429.
        let s = Sample {
            started: now,
            rtt: 10 * MS,
            in_flight: 10,
            outcome: RequestOutcome::Overloaded { retry_after: None },
        };
        now += 10 * MS;
        v.on_sample(s, now);
        assert_eq!(v.limit(), 8);
        answers(&mut v, &mut now, 500, 10 * MS);
        assert_eq!(v.limit(), 9, "grows back to just under where the 429 came");
        now += Duration::from_secs(30);
        answers(&mut v, &mut now, 100, 10 * MS);
        assert!(v.limit() > 10, "probes past it later: {}", v.limit());
    }

    #[test]
    fn a_timeout_shrinks_gently() {
        let now = Instant::now();
        let mut v = Vegas::new(opts(), now);
        let s = Sample {
            started: now,
            rtt: 30 * MS,
            in_flight: 16,
            outcome: RequestOutcome::Dropped,
        };
        v.on_sample(s, now + 30 * MS);
        assert_eq!(v.limit(), 14);
    }

    #[test]
    fn holds_for_retry_after() {
        let now = Instant::now();
        let mut v = Vegas::new(opts(), now);
        overloaded(&mut v, now, now, Some(Duration::from_secs(2)));
        assert_eq!(v.held_until(now), Some(now + Duration::from_secs(2)));
        assert!(v.held_until(now + Duration::from_secs(2)).is_none());
        // Capped: a day-long Retry-After holds for max_hold.
        overloaded(&mut v, now, now, Some(Duration::from_secs(86_400)));
        assert_eq!(v.held_until(now), Some(now + Duration::from_secs(60)));
    }

    #[test]
    fn later_429s_push_a_hold_at_most_max_hold_past_its_start() {
        let now = Instant::now();
        let mut v = Vegas::new(opts(), now);
        let s = Duration::from_secs;
        overloaded(&mut v, now, now, Some(s(40)));
        // The 429s of requests that were on the wire keep coming during the hold.
        overloaded(&mut v, now + s(30), now, Some(s(40)));
        overloaded(&mut v, now + s(50), now, Some(s(40)));
        assert_eq!(v.held_until(now + s(50)), Some(now + s(60)));
        // Once it is over, a new hold starts from scratch.
        overloaded(&mut v, now + s(61), now + s(61), Some(s(40)));
        assert_eq!(v.held_until(now + s(61)), Some(now + s(101)));
    }

    #[test]
    fn the_probe_finds_a_server_that_became_slower() {
        let mut now = Instant::now();
        let mut v = Vegas::new(
            AdaptiveOptions {
                probe_every: Duration::from_secs(10),
                ..AdaptiveOptions::default()
            },
            now,
        );
        answers(&mut v, &mut now, 100, 10 * MS);
        assert_eq!(v.min_rtt(), Some(10 * MS));
        // From now on the server answers in 100 ms however loaded: without a probe this looks
        // like a queue of 90 % of the limit forever.
        answers(&mut v, &mut now, 2000, 100 * MS);
        assert_eq!(v.min_rtt(), Some(100 * MS), "re-measured by the probe");
        answers(&mut v, &mut now, 3000, 100 * MS);
        assert!(v.limit() > 64, "grows again: {}", v.limit());
    }

    #[test]
    fn limiter_caps_permits_and_a_freed_one_goes_to_a_waiter() {
        let limiter = Limiter::new(ConcurrencyLimit::Fixed(2));
        let (_stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let a = limiter.acquire(&stop_rx).unwrap();
        let _b = limiter.acquire(&stop_rx).unwrap();
        assert_eq!(limiter.in_flight(), 2);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                limiter
                    .acquire(&stop_rx)
                    .map(|p| p.finish(RequestOutcome::Answered))
            });
            // Freed: the waiter gets it.
            a.finish(RequestOutcome::Answered);
            assert_eq!(waiter.join().unwrap(), Ok(()));
        });
        assert_eq!(limiter.in_flight(), 1);
        assert_eq!(limiter.limit(), 2);
    }

    /// Spins (no sleep) until `n` threads wait inside `acquire`.
    fn until_waiting(limiter: &Limiter, n: usize) {
        while limiter.waiting() != n {
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_wait_for_a_slot_goes_on_after_shutdown_until_a_permit_is_freed() {
        let limiter = Limiter::new(ConcurrencyLimit::Fixed(1));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let a = limiter.acquire(&stop_rx).unwrap();
        drop(stop_tx);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                limiter
                    .acquire(&stop_rx)
                    .map(|p| p.finish(RequestOutcome::Answered))
            });
            // Shut down and waiting for the slot: the drain's own work, not abandoned.
            until_waiting(&limiter, 1);
            a.finish(RequestOutcome::Answered);
            assert_eq!(waiter.join().unwrap(), Ok(()));
        });
        assert_eq!(limiter.in_flight(), 0);
    }

    #[test]
    fn after_the_drain_every_acquire_is_stopped() {
        let limiter = Limiter::new(ConcurrencyLimit::Fixed(2)).with_shutdown_drain(Duration::ZERO);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let a = limiter.acquire(&stop_rx).unwrap();
        drop(stop_tx);
        // A slot is free, but the drain (zero here) is over: nothing new goes on the wire.
        assert_eq!(limiter.acquire(&stop_rx).map(drop), Err(Stopped));
        // The limiter remembers it: a caller with another shutdown channel is stopped too.
        assert_eq!(
            limiter.acquire(&crossbeam_channel::never()).map(drop),
            Err(Stopped)
        );
        a.finish(RequestOutcome::Answered);
        assert_eq!(limiter.in_flight(), 0);
    }

    #[test]
    fn a_slot_wait_ends_when_the_drain_does() {
        let limiter =
            Limiter::new(ConcurrencyLimit::Fixed(1)).with_shutdown_drain(Duration::from_millis(1));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let a = limiter.acquire(&stop_rx).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| limiter.acquire(&stop_rx).map(drop));
            until_waiting(&limiter, 1);
            drop(stop_tx);
            // The slot is never freed: the wait ends with the drain, not with the request.
            assert_eq!(waiter.join().unwrap(), Err(Stopped));
        });
        drop(a);
    }

    #[test]
    fn a_shutdown_message_ends_every_hold() {
        let limiter = Limiter::new(ConcurrencyLimit::Adaptive(opts()));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let p = limiter.acquire(&stop_rx).unwrap();
        p.finish(RequestOutcome::Overloaded {
            retry_after: Some(Duration::from_secs(60)),
        });
        assert!(limiter.is_held());
        std::thread::scope(|s| {
            let waiters: Vec<_> = (0..3)
                .map(|_| s.spawn(|| limiter.acquire(&stop_rx).map(drop)))
                .collect();
            until_waiting(&limiter, 3);
            // One message wakes one waiter; the limiter remembers it for the others.
            stop_tx.send(()).unwrap();
            for w in waiters {
                assert_eq!(w.join().unwrap(), Err(Stopped));
            }
        });
    }

    #[test]
    fn limiter_holds_new_permits_for_retry_after_until_shutdown() {
        let limiter = Limiter::new(ConcurrencyLimit::Adaptive(opts()));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let p = limiter.acquire(&stop_rx).unwrap();
        p.finish(RequestOutcome::Overloaded {
            retry_after: Some(Duration::from_secs(3600)),
        });
        assert_eq!(limiter.limit(), 8);
        assert_eq!(limiter.overloads(), 1);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| limiter.acquire(&stop_rx).map(drop));
            // Held an hour: only shutdown ends the wait.
            drop(stop_tx);
            assert_eq!(waiter.join().unwrap(), Err(Stopped));
        });
        assert_eq!(limiter.in_flight(), 0);
    }

    #[test]
    fn a_dropped_permit_frees_its_slot() {
        let limiter = Limiter::new(ConcurrencyLimit::Fixed(1));
        let (_tx, rx) = crossbeam_channel::bounded::<()>(0);
        drop(limiter.acquire(&rx).unwrap());
        drop(limiter.acquire(&rx).unwrap());
        assert_eq!(limiter.in_flight(), 0);
    }
}
