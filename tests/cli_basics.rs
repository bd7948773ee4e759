//! The built binary: `--version`, `--help`, exit code 2 with every configuration problem, config
//! file discovery, `check`, and logging to stderr. Each run has an empty environment and its own
//! empty working directory, so nothing from the machine leaks in.

use crate::support::scratch::scratch_dir;
use std::path::Path;
use std::process::{Command, Output};

use crate::support::{BIN, GOOD_ENV};

fn run(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out: Output = Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let dir = scratch_dir("cli");
    let (code, out, _) = run(&dir, &[], &["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("harfanglab-intel {}", env!("CARGO_PKG_VERSION"))
    );
    let (code, out, _) = run(&dir, &[], &["--help"]);
    assert_eq!(code, 0);
    for word in [
        "run",
        "check",
        "translate",
        "demo",
        "healthcheck",
        "--config",
        "--dry-run",
        "--version",
    ] {
        assert!(out.contains(word), "{word} missing from help:\n{out}");
    }
}

#[test]
fn unknown_argument_is_a_usage_error() {
    let (code, _, err) = run(&scratch_dir("cli"), &[], &["--frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("--frobnicate"), "{err}");
}

#[test]
fn dry_run_is_a_usage_error_where_it_means_nothing() {
    let dir = scratch_dir("cli");
    for args in [
        &["--dry-run", "demo"][..],
        &["demo", "--dry-run"],
        &["--dry-run", "translate", "-"],
        &["translate", "--dry-run"],
        &["--dry-run", "healthcheck"],
    ] {
        let (code, out, err) = run(&dir, &[], args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(out.is_empty(), "{args:?} did something: {out}");
        assert!(
            err.contains("--dry-run applies to `run`, `check` and `reconcile` only"),
            "{args:?}: {err}"
        );
    }
    // Where it means something it is accepted (here the configuration is what is missing).
    for args in [
        &["--dry-run"][..],
        &["--dry-run", "run"],
        &["run", "--dry-run"],
    ] {
        let (code, _, err) = run(&dir, &[], args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("OPENCTI_URL"), "{args:?}: {err}");
        assert!(!err.contains("--dry-run applies"), "{args:?}: {err}");
    }
    let (code, out, err) = run(&dir, &[], &["--dry-run", "check"]);
    assert_eq!(code, 2, "{err}");
    assert!(out.contains("HARFANGLAB_INTEL_DRY_RUN"), "{out}");
}

#[test]
fn bad_config_exits_2_and_lists_every_problem() {
    let env = [
        ("OPENCTI_URL", "opencti:8080"),
        ("CONNECTOR_ID", "abc"),
        ("HARFANGLAB_INTEL_TOKEN", "ChangeMe"),
        ("HARFANGLAB_INTEL_WORKERS", "0"),
    ];
    for args in [&[][..], &["run"], &["check"]] {
        let (code, _, err) = run(&scratch_dir("cli"), &env, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("invalid configuration (7 problems)"), "{err}");
        for name in [
            "OPENCTI_URL (YAML opencti.url",
            "OPENCTI_TOKEN (YAML opencti.token",
            "CONNECTOR_ID (YAML connector.id",
            "CONNECTOR_LIVE_STREAM_ID (YAML connector.live_stream_id",
            "HARFANGLAB_INTEL_URL (YAML harfanglab_intel.url",
            "HARFANGLAB_INTEL_TOKEN (YAML harfanglab_intel.token",
            "HARFANGLAB_INTEL_WORKERS (YAML harfanglab_intel.workers",
        ] {
            assert!(err.contains(name), "{name} missing:\n{err}");
        }
    }
}

#[test]
fn config_file_in_the_working_directory_is_used_and_named_in_messages() {
    let dir = scratch_dir("cli");
    std::fs::write(
        dir.join("config.yml"),
        "harfanglab_intel:\n  rule_maturity: experimental\n",
    )
    .unwrap();
    let (code, _, err) = run(&dir, GOOD_ENV, &["check"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("HARFANGLAB_INTEL_RULE_MATURITY (YAML harfanglab_intel.rule_maturity, set in the config file): must be stable or testing"),
        "{err}"
    );
}

#[test]
fn explicit_config_file_may_be_missing_but_must_be_valid_yaml() {
    let dir = scratch_dir("cli");
    // The systemd unit always passes --config; the environment alone must still work.
    let mut env = GOOD_ENV.to_vec();
    env.push(("HARFANGLAB_INTEL_STATE_DIR", dir.to_str().unwrap()));
    let (code, out, err) = run(&dir, &env, &["--config", "missing.yml", "check"]);
    // 1, not 2: the configuration is fine, only the (absent) servers fail the probes.
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("[ok  ] configuration"), "{out}");
    assert!(
        out.contains("[WARN] config file: config file missing.yml does not exist"),
        "{out}"
    );
    std::fs::write(dir.join("bad.yml"), "opencti:\n  url: x\n  token: [\n").unwrap();
    let mut env = GOOD_ENV.to_vec();
    env.push(("HARFANGLAB_INTEL_CONFIG", "bad.yml"));
    let (code, _, err) = run(&dir, &env, &["check"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid config file bad.yml at line"), "{err}");
}

#[test]
fn check_prints_settings_and_report_without_tokens() {
    // Probes against live simulators (exit 0) are in tests/cli_check.rs.
    let dir = scratch_dir("cli");
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    let mut env = GOOD_ENV.to_vec();
    env.push(("HARFANGLAB_INTEL_STATE_DIR", state.to_str().unwrap()));
    let (code, out, err) = run(&dir, &env, &["--dry-run", "check"]);
    assert_eq!(
        code, 1,
        "nothing listens on the configured ports:\n{out}\n{err}"
    );
    assert!(out.contains("config file: none"), "{out}");
    assert!(
        out.contains("OPENCTI_TOKEN") && out.contains("[REDACTED]  (environment)"),
        "{out}"
    );
    assert!(
        out.contains("HARFANGLAB_INTEL_WORKERS") && out.contains("auto  (default)"),
        "{out}"
    );
    assert!(
        out.contains("[ok  ] configuration: opencti=https://127.0.0.1:1 "),
        "{out}"
    );
    assert!(out.contains("dry_run=true"), "{out}");
    assert!(
        out.contains("[WARN] tls:"),
        "pycti's unverified default is flagged:\n{out}"
    );
    assert!(out.contains("[ok  ] state directory:"), "{out}");
    assert!(out.contains("[FAIL] opencti: cannot reach"), "{out}");
    for secret in ["octi-secret-token-4242", "hl-secret-token-4242"] {
        assert!(!out.contains(secret) && !err.contains(secret));
    }
}

#[test]
fn check_never_prints_the_userinfo_of_a_server_or_proxy_url() {
    let dir = scratch_dir("cli");
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    let mut env: Vec<(&str, &str)> = GOOD_ENV
        .iter()
        .copied()
        .filter(|(k, _)| !k.ends_with("_URL"))
        .collect();
    env.extend([
        ("OPENCTI_URL", "http://octi-user:OctiPass1@127.0.0.1:1"),
        (
            "HARFANGLAB_INTEL_URL",
            "http://hl-user:HlPass2@127.0.0.1:1/",
        ),
        ("HTTPS_PROXY", "http://proxy-user:ProxyPass3@127.0.0.1:1"),
        ("http_proxy", "proxy-user:ProxyPass4@127.0.0.1:1"),
        ("NO_PROXY", "localhost,.internal"),
        ("HARFANGLAB_INTEL_STATE_DIR", state.to_str().unwrap()),
    ]);
    let (code, out, err) = run(&dir, &env, &["check"]);
    assert_eq!(code, 1, "nothing listens:\n{out}\n{err}");
    for secret in ["OctiPass1", "HlPass2", "ProxyPass3", "ProxyPass4"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} printed:\n{out}\n{err}"
        );
    }
    // The settings table shows the redacted URLs, and which proxies the HTTP clients will use.
    assert!(
        out.contains("http://***@127.0.0.1:1  (environment)"),
        "{out}"
    );
    assert!(out.contains("HTTPS_PROXY"), "{out}");
    assert!(out.contains("http://***@127.0.0.1:1"), "{out}");
    assert!(out.contains("***@127.0.0.1:1"), "{out}");
    assert!(out.contains("localhost,.internal"), "{out}");
}

#[test]
fn check_fails_with_exit_1_when_the_state_dir_is_unusable() {
    let dir = scratch_dir("cli");
    let file = dir.join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let mut env = GOOD_ENV.to_vec();
    env.push(("HARFANGLAB_INTEL_STATE_DIR", file.to_str().unwrap()));
    let (code, out, _) = run(&dir, &env, &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[FAIL] state directory"), "{out}");
}

#[test]
fn logs_go_to_stderr_with_utc_timestamps_and_no_colours_when_piped() {
    let dir = scratch_dir("cli");
    std::fs::write(dir.join("in.jsonl"), "{\"type\":\"relationship\"}\n").unwrap();
    let (code, out, err) = run(
        &dir,
        &[("CONNECTOR_LOG_LEVEL", "INFO")],
        &["translate", "in.jsonl"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1);
    let line = err
        .lines()
        .find(|l| l.contains("translated 1 item(s), 1 with an error"))
        .unwrap_or_else(|| panic!("{err}"));
    // RFC 3339 in UTC: 2026-01-02T03:04:05.123456789Z (simplelog prints `Z` for UTC).
    let ts = line.split_whitespace().next().unwrap();
    assert!(
        ts.len() > 20 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'),
        "{line}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no ANSI colours on a pipe: {err:?}"
    );
    // A quieter level hides it.
    let (_, _, err) = run(
        &dir,
        &[("CONNECTOR_LOG_LEVEL", "warn")],
        &["translate", "in.jsonl"],
    );
    assert!(!err.contains("translated"), "{err}");
}

#[test]
fn ctrl_c_stops_the_demo() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = scratch_dir("cli");
    let mut child = Command::new(BIN)
        .arg("demo")
        .env_clear()
        .env("CONNECTOR_LOG_LEVEL", "info")
        .current_dir(&dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt as soon as the connector inside the demo has its stream open.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.contains("live stream: connected") {
            break;
        }
        line.clear();
    }
    assert!(seen.contains("live stream: connected"), "{seen}");
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{rest}");
    assert!(rest.contains("demo interrupted"), "{rest}");
    assert!(stdout.is_empty(), "a report after Ctrl-C: {stdout}");
}
