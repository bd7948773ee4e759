//! Where the shared test corpora live, for the conformance tests and the benchmarks that read them
//! (`#[path]`-included by the benches). They are never copied into the repository (GPL/DRL).

use std::path::{Path, PathBuf};

/// `$HLI_CORPORA`, else the first `shared/corpora` found walking up from the crate root (CI clones
/// the repository next to `shared/`). Panics, failing the test, when the corpora are absent: a
/// conformance test must never pass by skipping.
pub fn corpora_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HLI_CORPORA") {
        return PathBuf::from(dir);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|a| a.join("shared").join("corpora"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "corpora not found: set HLI_CORPORA or put shared/corpora beside an ancestor of {}",
                manifest.display()
            )
        })
}
