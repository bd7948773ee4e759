//! Where the test corpora live, for the conformance tests and the benchmarks that read them
//! (`#[path]`-included by the benches).
//!
//! Two sets with the same layout: the **sample** shipped in `tests/corpora/sample` (a few dozen
//! cases of each corpus with their oracle rows; see its README for origins and licences), which
//! every conformance test runs on, and the **full** shared corpora, found through `HLI_CORPORA`
//! or a `shared/corpora` beside an ancestor of the checkout and never copied here. A test over
//! the full corpora that cannot find them prints one line saying it skipped and how to run it,
//! unless `HLI_CORPORA_REQUIRED=1` (set by `.ci/run`), which turns the skip into a failure.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The sample shipped in the repository.
#[allow(dead_code)] // benches read only the full corpora
pub fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpora/sample")
}

/// `$HLI_CORPORA` (which must then exist), else the first `shared/corpora` found walking up
/// from the crate root (CI clones the repository next to `shared/`), else why not.
fn locate() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("HLI_CORPORA") {
        let dir = PathBuf::from(dir);
        return if dir.is_dir() {
            Ok(dir)
        } else {
            Err(format!("HLI_CORPORA={} is not a directory", dir.display()))
        };
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|a| a.join("shared").join("corpora"))
        .find(|p| p.is_dir())
        .ok_or_else(|| {
            format!(
                "full corpora not found: no HLI_CORPORA and no shared/corpora beside an ancestor \
                 of {}",
                manifest.display()
            )
        })
}

/// Whether a missing full corpus must fail the test (`HLI_CORPORA_REQUIRED` set, not `0`).
fn required() -> bool {
    std::env::var("HLI_CORPORA_REQUIRED").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The full corpora for the test `test`, or `None` after printing one line saying that it was
/// skipped and how to run it. Panics instead when `HLI_CORPORA_REQUIRED=1` or when
/// `HLI_CORPORA` names something that is not a directory.
#[allow(dead_code)] // benches use `corpora_dir`
pub fn full_corpora(test: &str) -> Option<PathBuf> {
    match locate() {
        Ok(dir) => Some(dir),
        Err(why) if std::env::var_os("HLI_CORPORA").is_some() => panic!("{test}: {why}"),
        Err(why) if required() => panic!(
            "{test}: {why}; HLI_CORPORA_REQUIRED is set, so the full corpora must be found \
             (set HLI_CORPORA=/path/to/corpora)"
        ),
        Err(why) => {
            // Written to the stderr handle, not through `eprintln!`: the test harness captures
            // the macros' output of passing tests, and this line must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {why}; run it with HLI_CORPORA=/path/to/corpora cargo test \
                 (the shipped sample in tests/corpora/sample was still checked)"
            );
            None
        }
    }
}

/// The full corpora, for the benchmarks: panics with the way to provide them when absent.
#[allow(dead_code)] // not every includer is a benchmark
pub fn corpora_dir() -> PathBuf {
    locate().unwrap_or_else(|why| panic!("{why}: set HLI_CORPORA=/path/to/corpora"))
}

/// The rows of the JSON-lines file at `relative` inside the corpus `dir`, blank lines skipped.
/// Panics, failing the test, when the file is missing or a row does not decode.
#[allow(dead_code)] // not every includer reads JSON lines
pub fn read_jsonl<T: serde::de::DeserializeOwned>(dir: &Path, relative: &str) -> Vec<T> {
    let path = dir.join(relative);
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
