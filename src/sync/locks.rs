//! Striped locks: serialise the find → create/update sequence per object identity (IOC key,
//! Sigma id, Yara name) without one mutex per object.
//!
//! HarfangLab has no transactions or ETags, so two workers upserting the same IOC at once would
//! both see "absent" and race to create it, or both read the holder list and one would overwrite
//! the other's reference. A key hashes to one of N stripes; unrelated keys sharing a stripe only
//! wait a little. Several keys are locked in stripe order, which rules out lock-order deadlocks.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Default stripe count: plenty for a handful of workers, 1024 small mutexes.
pub const DEFAULT_STRIPES: usize = 1024;

/// A fixed table of mutexes indexed by key hash.
pub struct StripedLocks {
    stripes: Box<[Mutex<()>]>,
}

/// Guards held for one critical section; the stripes unlock when this drops.
#[must_use = "the stripes unlock as soon as the guard is dropped"]
pub struct StripeGuard<'a> {
    _guards: Vec<MutexGuard<'a, ()>>,
}

impl StripedLocks {
    /// A table of `stripes` mutexes (at least one).
    pub fn new(stripes: usize) -> StripedLocks {
        StripedLocks {
            stripes: (0..stripes.max(1)).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Which stripe `key` maps to.
    pub fn stripe_of<K: Hash + ?Sized>(&self, key: &K) -> usize {
        // `DefaultHasher::new()` uses fixed keys: the mapping is stable for the process.
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        (hasher.finish() % self.stripes.len() as u64) as usize
    }

    /// Lock the stripes of every key, in stripe order (each stripe once).
    pub fn lock<K: Hash>(&self, keys: &[K]) -> StripeGuard<'_> {
        let mut indices: Vec<usize> = keys.iter().map(|k| self.stripe_of(k)).collect();
        indices.sort_unstable();
        indices.dedup();
        let guards = indices
            .into_iter()
            // The mutex guards `()`: a panic in another holder leaves nothing inconsistent.
            .map(|i| {
                self.stripes[i]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
            })
            .collect();
        StripeGuard { _guards: guards }
    }
}

impl Default for StripedLocks {
    fn default() -> Self {
        StripedLocks::new(DEFAULT_STRIPES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn same_key_same_stripe() {
        let locks = StripedLocks::new(64);
        assert_eq!(locks.stripe_of("a"), locks.stripe_of("a"));
        assert!(locks.stripe_of("anything") < 64);
        assert_eq!(StripedLocks::new(0).stripe_of("x"), 0);
    }

    #[test]
    fn locking_keys_that_share_a_stripe_does_not_self_deadlock() {
        let locks = StripedLocks::new(1);
        let _g = locks.lock(&["a", "b", "a"]);
    }

    #[test]
    fn lock_excludes_concurrent_holders_of_the_same_key() {
        let locks = StripedLocks::new(8);
        let inside = AtomicUsize::new(0);
        let max_seen = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (locks, inside, max_seen) = (&locks, &inside, &max_seen);
                s.spawn(move || {
                    for _ in 0..200 {
                        // Opposite key orders from different threads must not deadlock.
                        let keys = if t % 2 == 0 {
                            ["k1", "k2"]
                        } else {
                            ["k2", "k1"]
                        };
                        let _g = locks.lock(&keys);
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        max_seen.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(max_seen.load(Ordering::SeqCst), 1);
    }
}
