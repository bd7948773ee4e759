//! A physical capacity for the HarfangLab simulator: it serves at most `concurrent` requests at
//! once (each for the injected latency); the next ones wait in a first-come queue, so their
//! latency grows with it, and once `concurrent + queue` requests are there (served or waiting)
//! a newcomer is refused at once (the simulator answers 429 with `Retry-After`). Counted that
//! way, not as "`queue` waiting", because the hand-over of a freed slot to the head of the queue
//! takes a thread wake-up: on a loaded machine the queue can fill while most slots are already
//! free, and the simulator then refused requests that a server with free workers would serve
//! (`cargo bench --bench adaptive` saw 429s with 71 requests in flight against 64 + 64). That is how a real manager behind a worker
//! pool behaves, and what an adaptive concurrency limit has to find: throughput is
//! `concurrent / latency` whatever is sent beyond it.
//!
//! Waits are on a condition variable woken by every freed slot and by [`Capacity::close`]
//! (simulator shutdown), never a sleep.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// The capacity settings of [`super::harfanglab::SimConfig::capacity`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapacityLimit {
    /// Requests served at once.
    pub concurrent: usize,
    /// Requests that may wait for a slot; one more is refused.
    pub queue: usize,
    /// `Retry-After` seconds of a refusal (`None`: no header).
    pub retry_after_secs: Option<u64>,
}

impl CapacityLimit {
    /// `concurrent` at once, as many again waiting, `Retry-After: 1`.
    pub fn new(concurrent: usize) -> CapacityLimit {
        CapacityLimit {
            concurrent,
            queue: concurrent,
            retry_after_secs: Some(1),
        }
    }
}

/// Why [`Capacity::enter`] gave no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full: answer 429.
    Overloaded,
    /// The simulator is shutting down.
    Closed,
}

#[derive(Default)]
struct Slots {
    busy: usize,
    waiting: usize,
    /// Tickets of waiting requests are served in order: `next_ticket` is handed to the next
    /// one to queue, `serving` is the next to get a slot.
    next_ticket: u64,
    serving: u64,
    closed: bool,
    peak_waiting: usize,
}

/// Are `concurrent + queue` requests there already (a newcomer is refused)?
fn full(s: &Slots, limit: &CapacityLimit) -> bool {
    s.busy + s.waiting >= limit.concurrent + limit.queue
}

/// The shared state of one simulator's capacity.
pub struct Capacity {
    limit: CapacityLimit,
    slots: Mutex<Slots>,
    freed: Condvar,
    refused: AtomicU64,
}

impl Capacity {
    pub fn new(limit: CapacityLimit) -> Capacity {
        Capacity {
            limit: CapacityLimit {
                concurrent: limit.concurrent.max(1),
                ..limit
            },
            slots: Mutex::new(Slots::default()),
            freed: Condvar::new(),
            refused: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> &CapacityLimit {
        &self.limit
    }

    /// A slot: at once if one is free and nobody waits, else after the requests ahead of this
    /// one; refused when the queue is full or the simulator closes.
    pub fn enter(&self) -> Result<Slot<'_>, Refused> {
        let mut s = self.lock();
        if s.closed {
            return Err(Refused::Closed);
        }
        if s.waiting == 0 && s.busy < self.limit.concurrent {
            s.busy += 1;
            return Ok(Slot { capacity: self });
        }
        if full(&s, &self.limit) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Overloaded);
        }
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        s.waiting += 1;
        s.peak_waiting = s.peak_waiting.max(s.waiting);
        let my_turn = |s: &Slots| s.serving == ticket && s.busy < self.limit.concurrent;
        while !s.closed && !my_turn(&s) {
            s = self
                .freed
                .wait(s)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        s.waiting -= 1;
        if s.closed {
            return Err(Refused::Closed);
        }
        s.serving += 1;
        s.busy += 1;
        // The next in line may fit too (several slots freed at once).
        self.freed.notify_all();
        Ok(Slot { capacity: self })
    }

    /// End every wait (shutdown); later requests are refused as [`Refused::Closed`].
    pub fn close(&self) {
        self.lock().closed = true;
        self.freed.notify_all();
    }

    /// Requests refused because the queue was full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The longest queue seen.
    pub fn peak_waiting(&self) -> usize {
        self.lock().peak_waiting
    }

    /// Requests being served right now.
    pub fn busy(&self) -> usize {
        self.lock().busy
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A request being served; the slot frees on drop.
pub struct Slot<'a> {
    capacity: &'a Capacity,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.capacity.lock().busy -= 1;
        self.capacity.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(concurrent: usize, queue: usize) -> CapacityLimit {
        CapacityLimit {
            concurrent,
            queue,
            retry_after_secs: Some(1),
        }
    }

    #[test]
    fn serves_up_to_its_capacity_then_refuses_past_the_queue() {
        let c = Capacity::new(limit(2, 0));
        let a = c.enter().unwrap();
        let _b = c.enter().unwrap();
        assert_eq!(c.busy(), 2);
        assert_eq!(c.enter().err(), Some(Refused::Overloaded));
        assert_eq!(c.refused(), 1);
        drop(a);
        let _c = c.enter().unwrap();
        assert_eq!(c.busy(), 2);
    }

    #[test]
    fn queued_requests_get_slots_in_order_as_they_free() {
        let c = Capacity::new(limit(1, 2));
        let first = c.enter().unwrap();
        let order = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            let waiters: Vec<_> = (0..2)
                .map(|i| {
                    let (c, order) = (&c, &order);
                    // Queue them one after the other, so their tickets are 0 then 1.
                    while c.lock().waiting < i {
                        std::thread::yield_now();
                    }
                    let h = s.spawn(move || {
                        let slot = c.enter().unwrap();
                        order.lock().unwrap().push(i);
                        drop(slot);
                    });
                    while c.lock().waiting < i + 1 {
                        std::thread::yield_now();
                    }
                    h
                })
                .collect();
            assert_eq!(c.peak_waiting(), 2);
            // The queue is full: a third is refused rather than queued.
            assert_eq!(c.enter().err(), Some(Refused::Overloaded));
            drop(first);
            for w in waiters {
                w.join().unwrap();
            }
        });
        assert_eq!(*order.lock().unwrap(), vec![0, 1]);
        assert_eq!(c.busy(), 0);
    }

    #[test]
    fn refuses_only_once_capacity_and_queue_are_taken() {
        let l = limit(2, 2);
        let slots = |busy, waiting| Slots {
            busy,
            waiting,
            ..Slots::default()
        };
        assert!(full(&slots(2, 2), &l));
        assert!(!full(&slots(2, 1), &l));
        // A slot freed, its hand-over to the head of the queue not done yet: room, not a 429.
        assert!(!full(&slots(1, 2), &l));
    }

    #[test]
    fn close_ends_the_waits() {
        let c = Capacity::new(limit(1, 4));
        let _held = c.enter().unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| c.enter().map(drop));
            while c.lock().waiting < 1 {
                std::thread::yield_now();
            }
            c.close();
            assert_eq!(waiter.join().unwrap(), Err(Refused::Closed));
        });
        assert_eq!(c.enter().err(), Some(Refused::Closed));
    }
}
