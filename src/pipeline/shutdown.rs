//! `Shutdown`: the one process-wide stop signal, shared by every thread (reader, pipeline owner,
//! workers, HTTP clients' retry loops).
//!
//! It owns the *signal* only; installing the OS handler (ctrlc) is `main.rs`'s job, and so is the
//! exit on a second signal (the library never ends the process). The signal is
//! a crossbeam channel whose only `Sender` is dropped on [`Shutdown::trigger`]: every clone of the
//! receiver then sees `Disconnected` at once, so a wait (`wait_timeout`, or a `select!` arm on
//! [`Shutdown::receiver`]) ends promptly instead of sleeping out its timeout. A second signal sets
//! a separate "hard" flag so `main` can exit 130 at once (fd's `interrupt_flag`).
//!
//! "Promptly" is for waits that are not the drain's own work: a resend or retry backoff, a
//! `Retry-After` hold. A worker waiting for a free HarfangLab request slot is draining, so that
//! wait goes on for up to the shutdown deadline (`crate::concurrency`, "Shutdown"); the owner
//! abandons what is not finished by then, as before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

/// A cheap-to-clone stop signal. All clones share one state.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    triggered: AtomicBool,
    hard: AtomicBool,
    /// Dropped (set to `None`) on trigger; that disconnects `rx` for every waiter.
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        // Nothing is ever sent: the channel only carries "disconnected".
        let (tx, rx) = crossbeam_channel::bounded(0);
        Shutdown {
            inner: Arc::new(Inner {
                triggered: AtomicBool::new(false),
                hard: AtomicBool::new(false),
                tx: Mutex::new(Some(tx)),
                rx,
            }),
        }
    }

    /// Ask everything to stop gracefully. Idempotent; safe from a signal-handler thread.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::SeqCst);
        // A poisoned lock only means another thread panicked mid-trigger; the Option is still
        // valid, and shutting down is exactly what we want then.
        let tx = self
            .inner
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(tx);
    }

    /// What a ctrlc handler calls on each signal: the first triggers a graceful shutdown, a
    /// later one also sets the hard flag. Returns `true` when shutdown was already triggered
    /// (a second signal, or a signal during an internal shutdown), so `main` can exit 130.
    pub fn on_signal(&self) -> bool {
        let again = self.inner.triggered.swap(true, Ordering::SeqCst);
        if again {
            self.inner.hard.store(true, Ordering::SeqCst);
        }
        self.trigger();
        again
    }

    /// Has a graceful shutdown been asked for?
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Has a second signal asked to stop without draining?
    pub fn is_hard(&self) -> bool {
        self.inner.hard.load(Ordering::SeqCst)
    }

    /// Wait up to `timeout`; returns `true` as soon as shutdown is triggered (possibly before
    /// the timeout), `false` if the timeout elapsed first. The replacement for `thread::sleep`.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        if self.is_triggered() {
            return true;
        }
        crate::retry::wait(&self.inner.rx, timeout).is_err() || self.is_triggered()
    }

    /// A receiver that becomes ready (with `Err(RecvError)`) once shutdown is triggered; for use
    /// as a `crossbeam_channel::select!` arm. It never yields a message.
    pub fn receiver(&self) -> &Receiver<()> {
        &self.inner.rx
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .field("hard", &self.is_hard())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn wait_times_out_when_not_triggered() {
        let s = Shutdown::new();
        assert!(!s.wait_timeout(Duration::from_millis(20)));
        assert!(!s.is_triggered());
    }

    #[test]
    fn trigger_from_another_thread_ends_a_long_wait_early() {
        let s = Shutdown::new();
        let s2 = s.clone();
        let started = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                // The waiter is already blocked or about to be; either way it must wake.
                s2.trigger();
            });
            assert!(s.wait_timeout(Duration::from_secs(30)));
        });
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(s.is_triggered());
        assert!(!s.is_hard());
    }

    #[test]
    fn receiver_is_ready_in_select_after_trigger() {
        let s = Shutdown::new();
        let never = crossbeam_channel::never::<u8>();
        s.trigger();
        let fired = crossbeam_channel::select! {
            recv(s.receiver()) -> _ => true,
            recv(never) -> _ => false,
            default(Duration::from_secs(5)) => false,
        };
        assert!(fired);
    }

    #[test]
    fn second_signal_is_hard() {
        let s = Shutdown::new();
        assert!(!s.on_signal());
        assert!(s.is_triggered() && !s.is_hard());
        assert!(s.on_signal());
        assert!(s.is_hard());
    }
}
