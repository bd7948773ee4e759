//! The attempt budget: which failed attempts of an event count against `RetryPolicy::max_retries`
//! (`HARFANGLAB_INTEL_MAX_RETRIES`), so an outage does not send every event of its duration to the
//! dead-letter file.
//!
//! The rule, by [`FailureKind`]:
//! - `Permanent`: no retry at all (the owner dead-letters it at once).
//! - `Transient` (a 500, a GraphQL error): always counts.
//! - `Unavailable` (unreachable, timeout, 429, 502-504): counts only when the far end demonstrably
//!   works for others, that is when, since this event's previous failure (or its admission), some
//!   other event was applied **and** no other event failed for availability. During an outage
//!   every event fails that way and none applies, so nothing counts: the events wait in the
//!   owner's timer heap (the backoff still grows to its cap, and the owner stops reading the
//!   source once its in-flight window is full) and all apply when the outage ends. A payload
//!   that times out on its own while the rest of the stream flows does count, and is
//!   dead-lettered once the budget is spent.
//!
//! The owner is the only writer (no locks): [`Budget`] holds its running totals, each job its
//! [`Attempts`].

use crate::retry::FailureKind;

/// The owner's running totals, as of some moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Events applied.
    applied: u64,
    /// Failures for availability reported (any event).
    unavailable: u64,
}

/// What one event's attempts have been so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Attempts {
    /// Failed attempts of every kind (drives the backoff, which grows during an outage too).
    pub failures: u32,
    /// Failed attempts that count against the budget.
    pub counted: u32,
    /// The owner's totals at this event's previous failure (or its admission).
    since: Seen,
}

/// The owner's side of the rule.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    seen: Seen,
}

impl Budget {
    /// A fresh event's attempts, starting its window now.
    pub fn admit(&self) -> Attempts {
        Attempts {
            since: self.seen,
            ..Attempts::default()
        }
    }

    /// An event was applied.
    pub fn applied(&mut self) {
        self.seen.applied += 1;
    }

    /// An attempt of `job` failed with `kind`: update its attempts and the totals, and say
    /// whether this failure counts against the budget.
    pub fn failed(&mut self, job: &mut Attempts, kind: FailureKind) -> bool {
        let counts = match kind {
            FailureKind::Permanent | FailureKind::Transient => true,
            FailureKind::Unavailable { .. } => {
                let others_applied = self.seen.applied > job.since.applied;
                let others_unavailable = self.seen.unavailable > job.since.unavailable;
                self.seen.unavailable += 1;
                others_applied && !others_unavailable
            }
        };
        job.failures += 1;
        if counts {
            job.counted += 1;
        }
        job.since = self.seen;
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOWN: FailureKind = FailureKind::UNAVAILABLE;

    #[test]
    fn transient_failures_always_count() {
        let mut b = Budget::default();
        let mut a = b.admit();
        assert!(b.failed(&mut a, FailureKind::Transient));
        assert!(b.failed(&mut a, FailureKind::Transient));
        assert_eq!((a.failures, a.counted), (2, 2));
    }

    #[test]
    fn an_outage_spends_no_budget() {
        let mut b = Budget::default();
        let mut jobs: Vec<Attempts> = (0..5).map(|_| b.admit()).collect();
        // Every event fails for availability, round after round; nothing applies.
        for _ in 0..50 {
            for a in &mut jobs {
                assert!(!b.failed(a, DOWN));
            }
        }
        assert!(jobs.iter().all(|a| a.failures == 50 && a.counted == 0));
    }

    #[test]
    fn a_lone_event_failing_while_others_apply_counts() {
        let mut b = Budget::default();
        let mut stuck = b.admit();
        // Its first failure: nothing else happened yet, it may be the start of an outage.
        assert!(!b.failed(&mut stuck, DOWN));
        for _ in 0..3 {
            b.applied();
            b.applied();
            assert!(b.failed(&mut stuck, DOWN), "others get through: counts");
        }
        assert_eq!((stuck.failures, stuck.counted), (4, 3));
    }

    #[test]
    fn failures_of_others_in_the_window_mean_an_outage_even_if_some_apply() {
        // A partial outage: events that need the failing end fail, others apply.
        let mut b = Budget::default();
        let mut a = b.admit();
        let mut c = b.admit();
        assert!(!b.failed(&mut a, DOWN));
        assert!(!b.failed(&mut c, DOWN));
        for _ in 0..10 {
            b.applied();
            assert!(!b.failed(&mut a, DOWN), "c failed in a's window");
            assert!(!b.failed(&mut c, DOWN), "a failed in c's window");
        }
        // Once only `a` keeps failing while others apply, its failures count.
        b.applied();
        assert!(
            !b.failed(&mut a, DOWN),
            "c's last failure is still in a's window"
        );
        b.applied();
        assert!(b.failed(&mut a, DOWN));
    }

    #[test]
    fn the_window_starts_at_admission() {
        let mut b = Budget::default();
        b.applied();
        let mut late = b.admit();
        // Applied before it was admitted: not evidence that the end works for others now.
        assert!(!b.failed(&mut late, DOWN));
    }
}
