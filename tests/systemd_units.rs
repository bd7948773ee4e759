//! The shipped systemd units pass `systemd-analyze verify` and rate 2.0 or better with
//! `systemd-analyze security --offline=yes`.
//!
//! `verify` insists that `ExecStart=` exists, so each unit is checked as a temp copy whose
//! `ExecStart=/usr/local/bin/harfanglab-intel` points at the binary cargo just built; nothing
//! else in the file changes. The template is checked through an instance name (a
//! `harfanglab-intel@ci.service` symlink next to the copy), so `%i` specifiers are resolved.
//! `systemd-analyze` missing is a failure, not a skip: `.ci/run` installs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const INSTALLED_BINARY: &str = "/usr/local/bin/harfanglab-intel";

/// Highest acceptable overall exposure, in systemd's tenths (2.0 on its printed 0–10 scale).
const THRESHOLD_TENTHS: u32 = 20;

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

fn systemd_analyze(args: &[&str]) -> Output {
    match Command::new("systemd-analyze").args(args).output() {
        Ok(output) => output,
        Err(err) => panic!(
            "cannot run systemd-analyze ({err}); install it: apt-get install -y systemd \
             (.ci/run does this)"
        ),
    }
}

/// A temp directory with a verifiable copy of `unit` (and an instance symlink for a template).
struct Staged {
    dir: PathBuf,
    /// The path handed to systemd-analyze.
    unit_path: PathBuf,
}

impl Staged {
    fn new(unit: &str, instance: Option<&str>) -> Staged {
        let text = std::fs::read_to_string(units_dir().join(unit))
            .unwrap_or_else(|err| panic!("read systemd/{unit}: {err}"));
        let exec_prefix = format!("ExecStart={INSTALLED_BINARY} ");
        assert_eq!(
            text.lines().filter(|l| l.starts_with(&exec_prefix)).count(),
            1,
            "{unit} must have exactly one `{exec_prefix}…` line"
        );
        let staged_text = text.replace(
            &exec_prefix,
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_harfanglab-intel")),
        );
        let dir = std::env::temp_dir().join(format!(
            "hli-systemd-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(unit), staged_text).unwrap();
        let unit_path = match instance {
            None => dir.join(unit),
            Some(instance) => {
                let name = unit.replace("@.", &format!("@{instance}."));
                std::os::unix::fs::symlink(unit, dir.join(&name)).unwrap();
                dir.join(name)
            }
        };
        Staged { dir, unit_path }
    }

    fn path(&self) -> &str {
        self.unit_path.to_str().unwrap()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn check_verify(staged: &Staged) {
    let out = systemd_analyze(&["verify", "--man=no", staged.path()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "verify {} failed:\n{stderr}",
        staged.path()
    );
    // verify exits 0 on warnings such as "Unknown key …, ignoring"; any line about our file
    // is a defect too.
    let dir = staged.dir.to_str().unwrap();
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(dir) || l.contains("harfanglab-intel"))
        .collect();
    assert!(
        complaints.is_empty(),
        "verify warnings:\n{}",
        complaints.join("\n")
    );
}

fn check_security(staged: &Staged) {
    let threshold = format!("--threshold={THRESHOLD_TENTHS}");
    let out = systemd_analyze(&["security", "--offline=yes", &threshold, staged.path()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let overall = stdout
        .lines()
        .find_map(|l| {
            l.split_once("Overall exposure level for ")
                .map(|(_, r)| r.to_owned())
        })
        .unwrap_or_else(|| panic!("no overall rating in:\n{stdout}\n{stderr}"));
    let score: f64 = overall
        .split_once(": ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the rating from `{overall}`"));
    assert!(
        out.status.success() && score <= f64::from(THRESHOLD_TENTHS) / 10.0,
        "{} rated {score} (limit {}):\n{stdout}\n{stderr}",
        staged.path(),
        f64::from(THRESHOLD_TENTHS) / 10.0
    );
}

#[test]
fn main_unit_verifies() {
    check_verify(&Staged::new("harfanglab-intel.service", None));
}

#[test]
fn main_unit_is_hardened_to_2_or_better() {
    check_security(&Staged::new("harfanglab-intel.service", None));
}

#[test]
fn template_instance_verifies() {
    check_verify(&Staged::new("harfanglab-intel@.service", Some("ci")));
}

#[test]
fn template_instance_is_hardened_to_2_or_better() {
    check_security(&Staged::new("harfanglab-intel@.service", Some("ci")));
}

/// The settings the deployment guide promises, present in both units (so an edit that drops
/// one is caught even if the overall rating stays under the threshold).
#[test]
fn units_keep_the_documented_contract() {
    for (unit, config, env_file, state) in [
        (
            "harfanglab-intel.service",
            "--config /etc/harfanglab-intel/config.yml",
            "EnvironmentFile=-/etc/harfanglab-intel/harfanglab-intel.env",
            "StateDirectory=harfanglab-intel",
        ),
        (
            "harfanglab-intel@.service",
            "--config /etc/harfanglab-intel/%i.yml",
            "EnvironmentFile=-/etc/harfanglab-intel/%i.env",
            "StateDirectory=harfanglab-intel/%i",
        ),
    ] {
        let text = std::fs::read_to_string(units_dir().join(unit)).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for wanted in [
            "Type=notify",
            "NotifyAccess=main",
            "WatchdogSec=60",
            "Restart=on-failure",
            "KillSignal=SIGTERM",
            "TimeoutStopSec=45",
            "DynamicUser=yes",
            "CapabilityBoundingSet=",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            env_file,
            state,
        ] {
            assert!(lines.contains(&wanted), "{unit}: missing `{wanted}`");
        }
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("ExecStart=") && l.ends_with(config)),
            "{unit}: ExecStart must end with `{config}`"
        );
    }
}
