//! The coalescing checkpoint writer under concurrent updates: bounded write rate, last value wins,
//! final save on finish, and a restart reads back what was saved.

use harfanglab_intel::{Checkpoint, CheckpointStore, CheckpointWriter, LocalCheckpoint};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn cp(s: String) -> Checkpoint {
    Checkpoint {
        start_from: s,
        recover_until: Some("2024-06-15T09:00:00Z".into()),
    }
}

#[test]
fn concurrent_updates_are_coalesced_and_the_last_one_is_saved() {
    let dir = std::env::temp_dir().join(format!("hli-state-writer-{}", std::process::id()));
    let store = CheckpointStore::new(&dir, "connector-1");
    let init = LocalCheckpoint {
        checkpoint: cp("0-0".into()),
        platform_acked: false,
    };
    let interval = Duration::from_millis(100);
    let w = Arc::new(CheckpointWriter::spawn(store.clone(), init, interval).unwrap());
    let t0 = Instant::now();
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..2000u64 {
                    w.update(cp(format!("{}-{t}", i)));
                }
            })
        })
        .collect();
    for h in workers {
        h.join().unwrap();
    }
    w.update(cp("99999-0".into()));
    let elapsed = t0.elapsed();
    let saves = w.saves();
    // At most one write per interval (plus the first, immediate one).
    let bound = 2 + (elapsed.as_millis() / interval.as_millis()) as u64;
    assert!(saves <= bound, "{saves} saves in {elapsed:?}");
    let w = Arc::try_unwrap(w).ok().unwrap();
    w.finish().unwrap();
    let got = store.load().unwrap().unwrap();
    assert_eq!(got.checkpoint.start_from, "99999-0");
    assert!(!store.tmp_path().exists());
    let _ = std::fs::remove_dir_all(dir);
}
