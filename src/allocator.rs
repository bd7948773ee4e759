//! glibc malloc tuning for `run`: the process re-executes itself once with `GLIBC_TUNABLES` set,
//! because glibc reads tunables only at startup and the library forbids the `unsafe` a
//! `mallopt` call would need.
//!
//! Why: with many threads, glibc's per-thread caches dominate the heap. Every thread that
//! allocates gets a thread cache (`tcache`: up to 7 freed chunks of each of 64 sizes, kept from
//! the arenas) and, up to 8 × cores, an arena of its own; at 32 workers that was about 2.5 MiB
//! of peak RSS for a connector whose live data is a few MiB (`cargo bench --bench end_to_end`
//! prints the breakdown; README "Performance", Memory). [`TUNABLES`] turns the thread caches
//! off, caps the arenas at 2 and returns freed memory sooner; CPU per event is unchanged within
//! the noise of that benchmark (the handlers mostly wait for HTTP answers, not for malloc).
//!
//! Rules: only `run` re-executes (short commands keep their one process); a user who sets
//! `GLIBC_TUNABLES` (even empty) keeps it and no re-execution happens; [`MARKER`] makes it
//! happen at most once. `exec` keeps the pid, the open descriptors and the environment
//! (`NOTIFY_SOCKET`, `WATCHDOG_PID` stay valid for systemd), and it happens before any thread,
//! signal handler or log exists. A static glibc build (the container image) reads
//! `GLIBC_TUNABLES` the same way; a non-glibc build never re-executes.
//!
//! What is executed is `/proc/self/exe`, the running binary's own inode (with the original
//! `argv[0]`): a path looked up again (`current_exe`) names nothing once an upgrade deleted the
//! binary, or names the new binary under the old process's pid. Without `/proc` (where
//! `current_exe` would fail too) nothing is re-executed: glibc's defaults, a warning.
//!
//! The marker's value is the pid of the process that re-executed, which `exec` keeps: a marker
//! copied into another process's environment names another pid and is ignored (overwritten by
//! the re-execution), so it cannot silently turn the tuning off. The same pid with a
//! `GLIBC_TUNABLES` that is not ours (glibc dropped it, or a copied marker in a container where
//! every main process is pid 1) is reported at `warn`, never re-executed again (no loop).
//!
//! A failed `exec` stops the process with a startup error (exit 2, like a configuration error:
//! a restart cannot help) that names the way out, `GLIBC_TUNABLES=` (empty: glibc's defaults,
//! no re-execution). Continuing is not safe: before `execvp`, std's `exec` resets the signal
//! mask and puts SIGPIPE back to its default, which the Rust runtime had set to "ignore", and
//! nothing restores them when `execvp` fails. With SIGPIPE at its default, one write to a
//! closed pipe (a restarted journald, a log collector gone) kills the connector without a word.
//! Restoring "ignore" needs a `signal` call, `unsafe` (forbidden in the library; the binary
//! stays thin), and a loud, deterministic failure at the first start, the moment someone is
//! watching, serves an unattended service better than a process that dies on a closed pipe
//! days later.

use std::ffi::OsString;
use std::fmt;
use std::io;

/// What the re-executed process runs with.
pub const TUNABLES: &str = "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0:\
                            glibc.malloc.trim_threshold=65536:glibc.malloc.top_pad=16384";

/// Set in the re-executed process's environment to the pid that re-executed (the same
/// process: `exec` keeps it): the tuning happened (never loop).
pub const MARKER: &str = "HARFANGLAB_INTEL_MALLOC_TUNED";

/// The running binary, whatever happened to its path since it started.
const SELF_EXE: &str = "/proc/self/exe";

/// What [`tune`] did, for a log line once logging is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tuning {
    /// This process is the re-executed one: it runs with [`TUNABLES`].
    Tuned,
    /// `GLIBC_TUNABLES` was set by the user: left as it is.
    UserSet,
    /// Not a glibc build: the tunables would mean nothing.
    NotGlibc,
    /// [`MARKER`] names this process but `GLIBC_TUNABLES` is not set: glibc dropped it after
    /// the re-execution, or the marker came with a copied environment into a process with the
    /// same pid (pid 1 in containers). Running with glibc's defaults; not re-executed again.
    MarkerWithoutTunables,
    /// The re-execution was not attempted (no `/proc/self/exe`): running with glibc's defaults,
    /// the process unchanged.
    NotReexecuted(String),
}

/// `exec` failed: the process's signal setup is no longer what it was (see the module doc),
/// so it must not go on. Names the way out.
#[derive(Debug)]
pub struct ReexecError(io::Error);

impl fmt::Display for ReexecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot re-execute {SELF_EXE} with GLIBC_TUNABLES (malloc tuning): {}; a failed \
             re-execution leaves SIGPIPE no longer ignored, so the connector stops here. Set \
             GLIBC_TUNABLES= (empty) in its environment to run with glibc's malloc defaults and \
             no re-execution",
            self.0
        )
    }
}

impl std::error::Error for ReexecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// What to do, from the two environment variables and this process's pid: `None` means
/// re-execute.
fn decide(tunables: Option<&OsString>, marker: Option<&OsString>, pid: u32) -> Option<Tuning> {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return Some(Tuning::NotGlibc);
    }
    let ours = marker.is_some_and(|m| *m == *pid.to_string());
    match tunables {
        Some(t) if ours && *t == *TUNABLES => Some(Tuning::Tuned),
        Some(_) => Some(Tuning::UserSet),
        None if ours => Some(Tuning::MarkerWithoutTunables),
        // No marker, or another process's (a copied environment): re-execute, overwriting it.
        None => None,
    }
}

/// Re-execute this binary with [`TUNABLES`] unless [`decide`] says otherwise. Returns only when
/// no re-execution happened (a successful `exec` never returns); an error when `exec` failed,
/// after which the process must stop. Call it first thing in `main`, before any thread exists.
pub fn tune() -> Result<Tuning, ReexecError> {
    let tunables = std::env::var_os("GLIBC_TUNABLES");
    let marker = std::env::var_os(MARKER);
    if let Some(done) = decide(tunables.as_ref(), marker.as_ref(), std::process::id()) {
        return Ok(done);
    }
    reexec()
}

#[cfg(unix)]
fn reexec() -> Result<Tuning, ReexecError> {
    use std::os::unix::process::CommandExt;
    if !std::path::Path::new(SELF_EXE).exists() {
        return Ok(Tuning::NotReexecuted(format!(
            "no {SELF_EXE} (is /proc mounted?)"
        )));
    }
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(SELF_EXE);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    let e = command
        .args(args)
        .env("GLIBC_TUNABLES", TUNABLES)
        .env(MARKER, std::process::id().to_string())
        .exec();
    Err(ReexecError(e))
}

#[cfg(not(unix))]
fn reexec() -> Result<Tuning, ReexecError> {
    Ok(Tuning::NotGlibc)
}

/// The log line for what [`tune`] did: debug when the process runs as intended, warn when it
/// runs with glibc's defaults though tuning was wanted.
pub fn log(tuning: &Tuning) {
    match tuning {
        Tuning::Tuned => log::debug!("malloc: re-executed with GLIBC_TUNABLES={TUNABLES}"),
        Tuning::UserSet => log::debug!("malloc: GLIBC_TUNABLES set by the user; left as it is"),
        Tuning::NotGlibc => log::debug!("malloc: not glibc; no tuning"),
        Tuning::MarkerWithoutTunables => log::warn!(
            "malloc: {MARKER} names this process but GLIBC_TUNABLES is not set (dropped after \
             the re-execution, or a marker copied from another environment): glibc's defaults \
             kept; remove {MARKER} from the environment if it was copied"
        ),
        Tuning::NotReexecuted(why) => {
            log::warn!("malloc: not re-executed with GLIBC_TUNABLES: {why}; glibc's defaults kept")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reexecutes_only_when_neither_the_user_nor_this_process_set_it() {
        let pid = 4242;
        if !cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert_eq!(decide(None, None, pid), Some(Tuning::NotGlibc));
            return;
        }
        let user = OsString::from("glibc.malloc.arena_max=4");
        let empty = OsString::new();
        let ours = OsString::from(TUNABLES);
        let marker = OsString::from("4242");
        assert_eq!(decide(None, None, pid), None, "first start: re-execute");
        assert_eq!(decide(Some(&user), None, pid), Some(Tuning::UserSet));
        assert_eq!(
            decide(Some(&empty), None, pid),
            Some(Tuning::UserSet),
            "an empty GLIBC_TUNABLES is the user's way to opt out"
        );
        assert_eq!(decide(Some(&ours), Some(&marker), pid), Some(Tuning::Tuned));
        // The marker alone (GLIBC_TUNABLES dropped after the re-execution) never loops, and
        // is not reported as tuned.
        assert_eq!(
            decide(None, Some(&marker), pid),
            Some(Tuning::MarkerWithoutTunables)
        );
        // The user's own tunables win whatever the marker says.
        assert_eq!(
            decide(Some(&user), Some(&marker), pid),
            Some(Tuning::UserSet)
        );
    }

    #[test]
    fn a_marker_copied_from_another_process_does_not_turn_the_tuning_off() {
        if !cfg!(all(target_os = "linux", target_env = "gnu")) {
            return;
        }
        let old = OsString::from("1");
        let ours = OsString::from(TUNABLES);
        assert_eq!(decide(None, Some(&old), 4242), None, "re-executed");
        // Copied together with our tunables: glibc read them, but not as our re-execution.
        assert_eq!(decide(Some(&ours), Some(&old), 4242), Some(Tuning::UserSet));
    }

    #[test]
    fn a_failed_reexecution_names_the_way_out() {
        let e = ReexecError(io::Error::from(io::ErrorKind::PermissionDenied));
        let text = e.to_string();
        assert!(text.contains("/proc/self/exe"), "{text}");
        assert!(text.contains("GLIBC_TUNABLES= (empty)"), "{text}");
    }

    #[test]
    fn the_tunables_are_well_formed() {
        for item in TUNABLES.split(':') {
            let (name, value) = item.split_once('=').expect("name=value");
            assert!(name.starts_with("glibc.malloc."), "{item}");
            assert!(value.parse::<u64>().is_ok(), "{item}");
        }
    }
}
