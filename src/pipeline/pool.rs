//! The size of the worker pool, as the owner sees it: a fixed count spawned at start
//! (`HARFANGLAB_INTEL_WORKERS=<n>`), or a pool that grows with a concurrency limit (`auto`).
//!
//! Why it grows: each worker runs one event at a time, so the requests in flight can never
//! exceed the workers; an adaptive limit of 80 needs about 80 workers. Threads are spawned one by
//! one, only while jobs wait for a worker, up to [`target`] of the limit. Past that, only while
//! the workers and not the limit are what jobs wait for: HarfangLab requests in flight below the
//! limit and nobody waiting for a permit (the workers spend their time elsewhere, e.g. on slow
//! OpenCTI reads; the limit, which grows only while it is in use, cannot show that). Then one
//! worker more per call, up to [`MAX_LIMIT`]; while the limit is the bottleneck the pool stays at
//! its target, however many jobs wait. It never shrinks: an idle worker costs only its stack, and a limit that went
//! down (a 429) usually comes back up. The owner calls [`Pool::grow`]; the spawning itself is the
//! caller's closure (a scoped thread in `pipeline::run`), so this stays testable without threads.
//!
//! Which workers are alive is counted apart from how many were spawned: each worker thread
//! carries an [`Alive`] guard that leaves the count when the thread ends (returns or unwinds), so
//! the owner sees "every worker gone" with a growing pool as with a fixed one (a growing pool
//! keeps ends of the channels for the workers it adds, so their disconnection never shows it).
//! A guard that leaves also sends on [`Live::ended`], so an owner blocked in its `select!`
//! wakes to see it: the last worker's report comes before its thread ends, and without that
//! message nothing else might wake the owner until its next timer (an hour-long deadline).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender};

use crate::concurrency::{Limiter, MAX_LIMIT};

/// Spawns worker number `n` (0-based).
pub(crate) type Spawn<'a> = Box<dyn FnMut(usize) -> std::io::Result<()> + 'a>;

/// The count of worker threads not ended, and a message each time one ends.
pub(crate) struct Live {
    count: AtomicUsize,
    ended_tx: Sender<()>,
    ended_rx: Receiver<()>,
}

impl Live {
    pub(crate) fn new() -> Live {
        Live::starting_at(0)
    }

    /// A count that starts at `n` (tests stand in for threads).
    pub(crate) fn starting_at(n: usize) -> Live {
        // Unbounded: one message per ended thread (at most 256 workers), never blocking a
        // thread that is ending.
        let (ended_tx, ended_rx) = crossbeam_channel::unbounded();
        Live {
            count: AtomicUsize::new(n),
            ended_tx,
            ended_rx,
        }
    }

    /// A message per worker thread ended (for the owner's `select!`).
    pub(crate) fn ended(&self) -> &Receiver<()> {
        &self.ended_rx
    }
}

/// One live worker in the count: made by the spawning thread (so the count is right before the
/// thread runs), moved into the worker, dropped when it ends, or with the closure if the spawn
/// failed.
pub(crate) struct Alive<'a>(&'a Live);

impl<'a> Alive<'a> {
    pub(crate) fn new(live: &'a Live) -> Alive<'a> {
        live.count.fetch_add(1, Ordering::SeqCst);
        Alive(live)
    }
}

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
        let _ = self.0.ended_tx.send(());
    }
}

pub(crate) struct Pool<'a> {
    /// Workers started (the next one's number); dead ones included.
    spawned: usize,
    /// Workers whose thread has not ended ([`Alive`] guards).
    live: &'a Live,
    /// `None`: a fixed pool (or one that failed to grow and stays as it is).
    growth: Option<(Arc<Limiter>, Spawn<'a>)>,
}

impl<'a> Pool<'a> {
    /// `workers` spawned at start, never more.
    pub(crate) fn fixed(workers: usize, live: &'a Live) -> Pool<'a> {
        Pool {
            spawned: workers,
            live,
            growth: None,
        }
    }

    /// `started` workers spawned already; more from `spawn` as `limit` allows.
    pub(crate) fn growing(
        started: usize,
        live: &'a Live,
        limit: Arc<Limiter>,
        spawn: Spawn<'a>,
    ) -> Pool<'a> {
        Pool {
            spawned: started,
            live,
            growth: Some((limit, spawn)),
        }
    }

    /// Worker threads running (a worker that panicked is not).
    pub(crate) fn workers(&self) -> usize {
        self.live.count.load(Ordering::SeqCst)
    }

    /// A message each time a worker thread ends: wakes the owner to look at [`Pool::workers`].
    pub(crate) fn ended(&self) -> &'a Receiver<()> {
        self.live.ended()
    }

    /// Spawn workers while some of the `outstanding` jobs (sent to workers, not reported) find
    /// none free: up to [`target`] for the current limit, one more per call while the limit has
    /// room (module header). A spawn failure is logged and ends growth; the workers already
    /// running carry on.
    pub(crate) fn grow(&mut self, outstanding: usize) {
        let Some((limit, spawn)) = &mut self.growth else {
            return;
        };
        let (cap, in_flight) = (limit.limit(), limit.in_flight());
        let mut want = outstanding.min(target(cap));
        if outstanding > self.spawned && in_flight < cap && limit.waiting() == 0 {
            want = want.max((self.spawned + 1).min(MAX_LIMIT));
        }
        while self.spawned < want {
            match spawn(self.spawned) {
                Ok(()) => self.spawned += 1,
                Err(e) => {
                    log::warn!(
                        "pipeline: could not start worker {}: {e}; staying at {} workers",
                        self.spawned,
                        self.spawned
                    );
                    self.growth = None;
                    return;
                }
            }
        }
    }
}

/// Workers for a limit of `limit` requests in flight: a quarter more than the limit, since a
/// worker also spends time outside HarfangLab requests (the OpenCTI read, translation).
pub(crate) fn target(limit: usize) -> usize {
    limit.saturating_add(limit / 4 + 1).min(MAX_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::concurrency::{AdaptiveOptions, ConcurrencyLimit};
    use std::cell::Cell;

    #[test]
    fn grows_only_while_jobs_wait_and_up_to_the_limit() {
        let limiter = Arc::new(Limiter::new(ConcurrencyLimit::Adaptive(
            AdaptiveOptions::default(),
        )));
        assert_eq!(limiter.limit(), 16);
        // The limit is the bottleneck: every permit out.
        let (_tx, rx) = crossbeam_channel::bounded::<()>(0);
        let permits: Vec<_> = (0..16).map(|_| limiter.acquire(&rx).unwrap()).collect();
        let spawned = Cell::new(0);
        let live = Live::starting_at(4);
        let mut pool = Pool::growing(
            4,
            &live,
            Arc::clone(&limiter),
            Box::new(|n| {
                assert_eq!(n, spawned.get() + 4, "numbered in order");
                spawned.set(spawned.get() + 1);
                std::mem::forget(Alive::new(&live));
                Ok(())
            }),
        );
        pool.grow(3);
        assert_eq!(pool.workers(), 4, "a free worker is waiting");
        pool.grow(10);
        assert_eq!(pool.workers(), 10);
        for _ in 0..1000 {
            pool.grow(1000);
        }
        assert_eq!(
            pool.workers(),
            target(16),
            "the limit, not the pool, holds jobs back"
        );
        pool.grow(0);
        assert_eq!(pool.workers(), target(16), "never shrinks");
        assert_eq!(spawned.get(), target(16) - 4);
        drop(permits);
    }

    /// A growing pool of `started` workers whose spawns always succeed (a live count each).
    fn always_spawning<'a>(started: usize, live: &'a Live, limiter: &Arc<Limiter>) -> Pool<'a> {
        Pool::growing(
            started,
            live,
            Arc::clone(limiter),
            Box::new(move |_| {
                std::mem::forget(Alive::new(live));
                Ok(())
            }),
        )
    }

    #[test]
    fn grows_past_the_target_while_workers_and_not_the_limit_are_short() {
        let limiter = Arc::new(Limiter::new(ConcurrencyLimit::Adaptive(
            AdaptiveOptions::default(),
        )));
        let live = Live::starting_at(21);
        let mut pool = always_spawning(21, &live, &limiter);
        // Jobs wait for workers while 4 of 16 HarfangLab slots are used (the workers are on
        // slow OpenCTI reads): one more worker per call.
        let (_tx, rx) = crossbeam_channel::bounded::<()>(0);
        let mut permits: Vec<_> = (0..4).map(|_| limiter.acquire(&rx).unwrap()).collect();
        pool.grow(1000);
        assert_eq!(pool.workers(), target(16) + 1);
        for _ in 0..10 {
            pool.grow(40);
        }
        assert_eq!(pool.workers(), target(16) + 11, "one per call");
        for _ in 0..100 {
            pool.grow(40);
        }
        assert_eq!(pool.workers(), 40, "only while jobs wait for a worker");
        for _ in 0..1000 {
            pool.grow(1000);
        }
        assert_eq!(pool.workers(), MAX_LIMIT, "bounded");

        // Once the limit is the bottleneck, no more.
        let live = Live::starting_at(21);
        let mut pool = always_spawning(21, &live, &limiter);
        permits.extend((4..16).map(|_| limiter.acquire(&rx).unwrap()));
        for _ in 0..100 {
            pool.grow(1000);
        }
        assert_eq!(pool.workers(), target(16));
        drop(permits);
    }

    #[test]
    fn a_fixed_pool_and_a_failed_spawn_stay_put() {
        let live = Live::starting_at(8);
        let mut pool = Pool::fixed(8, &live);
        pool.grow(1000);
        assert_eq!(pool.workers(), 8);

        let limiter = Arc::new(Limiter::new(ConcurrencyLimit::Adaptive(
            AdaptiveOptions::default(),
        )));
        let live = Live::starting_at(2);
        let mut pool = Pool::growing(
            2,
            &live,
            limiter,
            Box::new(|n| {
                if n < 3 {
                    std::mem::forget(Alive::new(&live));
                    Ok(())
                } else {
                    Err(std::io::Error::other("no more threads"))
                }
            }),
        );
        pool.grow(100);
        assert_eq!(pool.workers(), 3);
        pool.grow(100);
        assert_eq!(pool.workers(), 3);
    }

    #[test]
    fn workers_are_the_live_ones() {
        let live = Live::starting_at(0);
        let guards: Vec<_> = (0..3).map(|_| Alive::new(&live)).collect();
        let pool = Pool::fixed(3, &live);
        assert_eq!(pool.workers(), 3);
        // Threads ending (a panic unwinds through the guard too) leave the count.
        drop(guards);
        assert_eq!(pool.workers(), 0);
    }

    #[test]
    fn target_is_bounded() {
        assert_eq!(target(1), 2);
        assert_eq!(target(16), 21);
        assert_eq!(target(256), MAX_LIMIT);
    }
}
