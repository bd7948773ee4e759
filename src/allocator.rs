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

use std::ffi::OsString;

/// What the re-executed process runs with.
pub const TUNABLES: &str = "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0:\
                            glibc.malloc.trim_threshold=65536:glibc.malloc.top_pad=16384";

/// Set in the re-executed process's environment: the tuning happened (never loop).
pub const MARKER: &str = "HARFANGLAB_INTEL_MALLOC_TUNED";

/// What [`tune`] did, for a debug line once logging is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tuning {
    /// This process is the re-executed one: it runs with [`TUNABLES`].
    Tuned,
    /// `GLIBC_TUNABLES` was set by the user: left as it is.
    UserSet,
    /// Not a glibc build: the tunables would mean nothing.
    NotGlibc,
    /// The re-execution failed (no `/proc/self/exe`, ...): running with glibc's defaults.
    Failed(String),
}

/// What to do, from the two environment variables: `None` means re-execute.
fn decide(tunables: Option<&OsString>, marker: Option<&OsString>) -> Option<Tuning> {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return Some(Tuning::NotGlibc);
    }
    match (marker, tunables) {
        (Some(_), _) => Some(Tuning::Tuned),
        (None, Some(_)) => Some(Tuning::UserSet),
        (None, None) => None,
    }
}

/// Re-execute this binary with [`TUNABLES`] unless [`decide`] says otherwise. Returns only when
/// no re-execution happened (a successful `exec` never returns). Call it first thing in `main`,
/// before any thread exists.
pub fn tune() -> Tuning {
    let tunables = std::env::var_os("GLIBC_TUNABLES");
    let marker = std::env::var_os(MARKER);
    if let Some(done) = decide(tunables.as_ref(), marker.as_ref()) {
        return done;
    }
    reexec()
}

#[cfg(unix)]
fn reexec() -> Tuning {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return Tuning::Failed(format!("cannot find the running binary: {e}")),
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(&exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    let e = command
        .args(args)
        .env("GLIBC_TUNABLES", TUNABLES)
        .env(MARKER, "1")
        .exec();
    Tuning::Failed(format!("cannot re-execute {}: {e}", exe.display()))
}

#[cfg(not(unix))]
fn reexec() -> Tuning {
    Tuning::NotGlibc
}

/// The debug line for what [`tune`] did.
pub fn log(tuning: &Tuning) {
    match tuning {
        Tuning::Tuned => log::debug!("malloc: re-executed with GLIBC_TUNABLES={TUNABLES}"),
        Tuning::UserSet => log::debug!("malloc: GLIBC_TUNABLES set by the user; left as it is"),
        Tuning::NotGlibc => log::debug!("malloc: not glibc; no tuning"),
        Tuning::Failed(why) => log::debug!("malloc: glibc defaults kept: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reexecutes_only_when_neither_the_user_nor_a_former_run_set_it() {
        if !cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert_eq!(decide(None, None), Some(Tuning::NotGlibc));
            return;
        }
        let user = OsString::from("glibc.malloc.arena_max=4");
        let empty = OsString::new();
        let ours = OsString::from(TUNABLES);
        let marker = OsString::from("1");
        assert_eq!(decide(None, None), None, "first start: re-execute");
        assert_eq!(decide(Some(&user), None), Some(Tuning::UserSet));
        assert_eq!(
            decide(Some(&empty), None),
            Some(Tuning::UserSet),
            "an empty GLIBC_TUNABLES is the user's way to opt out"
        );
        assert_eq!(decide(Some(&ours), Some(&marker)), Some(Tuning::Tuned));
        // The marker alone (a user's own GLIBC_TUNABLES removed by a wrapper) never loops.
        assert_eq!(decide(None, Some(&marker)), Some(Tuning::Tuned));
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
