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

/// The rows of the JSON-lines corpus file at `relative` (to [`corpora_dir`]), blank lines
/// skipped. Panics, failing the test, when the file is missing or a row does not decode.
#[allow(dead_code)] // not every includer reads JSON lines
pub fn read_jsonl<T: serde::de::DeserializeOwned>(relative: &str) -> Vec<T> {
    let path = corpora_dir().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}
