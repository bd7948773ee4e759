//! `harfanglab-intel check` end to end: the built binary, configured only through environment
//! variables, probing the OpenCTI and HarfangLab simulators on loopback. Every item is OK/FAIL
//! with an actionable message; exit 0 only when nothing failed, 1 otherwise; check never writes.

use crate::support::scratch::scratch_dir;
use harfanglab_intel::SourceKind;
use harfanglab_intel::sim::harfanglab::{self as hl, HarfangLabSim, SimConfig};
use harfanglab_intel::sim::opencti::{self as octi, ConnFault, OpenCtiSim, OpenCtiSimConfig};
use std::path::Path;
use std::process::Command;

use crate::support::BIN;
const OCTI_TOKEN: &str = "octi-secret-token-4242";
const HL_TOKEN: &str = "hl-secret-token-4242";
const LIST: &str = "OpenCTI Intel";

struct Ends {
    octi: OpenCtiSim,
    hl: HarfangLabSim,
}

fn ends() -> Ends {
    let octi = octi::serve(
        "127.0.0.1:0",
        OpenCtiSimConfig {
            token: OCTI_TOKEN.into(),
            stream_id: "stream-1".into(),
            ..OpenCtiSimConfig::default()
        },
    )
    .expect("OpenCTI simulator");
    let hl = hl::serve(
        "127.0.0.1:0",
        SimConfig {
            token: HL_TOKEN.into(),
            max_connections: 16,
            ..SimConfig::default()
        },
    )
    .expect("HarfangLab simulator");
    Ends { octi, hl }
}

impl Ends {
    /// `check` against both simulators, with `overrides` on top of the working environment.
    fn check(&self, dir: &Path, overrides: &[(&str, &str)]) -> Outcome {
        check(dir, &self.octi.base_url(), self.hl.base_url(), overrides)
    }

    /// `check` as above, which must exit 1 (something failed).
    fn check_fails(&self, dir: &Path, overrides: &[(&str, &str)]) -> Outcome {
        let r = self.check(dir, overrides);
        assert_eq!(r.code, 1, "{}", r.out);
        r
    }
}

/// A loopback URL where nothing listens (the port was just freed).
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

struct Outcome {
    code: i32,
    out: String,
    err: String,
}

impl Outcome {
    /// The report line of `item`, e.g. `[FAIL] harfanglab: ...`.
    fn line(&self, item: &str) -> &str {
        self.out
            .lines()
            .find(|l| {
                l.get(7..)
                    .is_some_and(|rest| rest.starts_with(&format!("{item}: ")))
            })
            .unwrap_or_else(|| panic!("no `{item}` line in:\n{}", self.out))
    }

    fn ok(&self, item: &str) -> &str {
        let line = self.line(item);
        assert!(line.starts_with("[ok  ]"), "{line}\n{}", self.out);
        line
    }

    fn fail(&self, item: &str) -> &str {
        let line = self.line(item);
        assert!(line.starts_with("[FAIL]"), "{line}\n{}", self.out);
        line
    }

    /// The `[FAIL]` line of `item`, which must say `needle`.
    fn fail_saying(&self, item: &str, needle: &str) -> &str {
        let line = self.fail(item);
        assert!(line.contains(needle), "{line}");
        line
    }
}

/// Run `check` with the environment pointing at `octi_url` / `hl_url`; `overrides` replace or
/// add variables. Nothing from the machine's environment leaks in (no proxies).
fn check(dir: &Path, octi_url: &str, hl_url: &str, overrides: &[(&str, &str)]) -> Outcome {
    let mut env: Vec<(&str, &str)> = vec![
        ("OPENCTI_URL", octi_url),
        ("OPENCTI_TOKEN", OCTI_TOKEN),
        ("CONNECTOR_ID", "0b8a3c1e-5f2d-4e6a-9b7c-1d2e3f4a5b6c"),
        ("CONNECTOR_LIVE_STREAM_ID", "stream-1"),
        ("HARFANGLAB_INTEL_URL", hl_url),
        ("HARFANGLAB_INTEL_TOKEN", HL_TOKEN),
        ("HARFANGLAB_INTEL_SOURCE_LIST_NAME", LIST),
        ("HARFANGLAB_INTEL_STATE_DIR", dir.to_str().unwrap()),
    ];
    for (k, v) in overrides {
        env.retain(|(name, _)| name != k);
        env.push((k, v));
    }
    let out = Command::new(BIN)
        .arg("check")
        .env_clear()
        .envs(env)
        .current_dir(dir)
        .output()
        .unwrap();
    let outcome = Outcome {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    for secret in [OCTI_TOKEN, HL_TOKEN, "wrong-hl-token"] {
        assert!(
            !outcome.out.contains(secret) && !outcome.err.contains(secret),
            "a token leaked:\n{}\n{}",
            outcome.out,
            outcome.err
        );
    }
    outcome
}

#[test]
fn everything_reachable_passes_and_nothing_is_written() {
    let e = ends();
    let dir = scratch_dir("check");
    let r = e.check(&dir.0, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.out, r.err);
    assert!(!r.out.contains("[FAIL]"), "{}", r.out);
    assert!(r.out.contains("OPENCTI_TOKEN") && r.out.contains("[REDACTED]  (environment)"));
    r.ok("configuration");
    r.ok("state directory");
    assert!(r.ok("opencti").contains("OPENCTI_TOKEN accepted"));
    assert!(r.ok("opencti version").ends_with("6.8.10"));
    assert!(
        r.ok("opencti live stream")
            .contains("/stream/stream-1 open")
    );
    let hl_line = r.ok("harfanglab");
    assert!(
        hl_line.contains("version 9.11.0") && hl_line.contains("HARFANGLAB_INTEL_TOKEN accepted"),
        "{hl_line}"
    );
    for kind in ["IOCSource", "SigmaSource", "YaraSource"] {
        assert!(
            r.ok(&format!("harfanglab {kind}"))
                .contains("not found: it will be created on first run")
        );
    }
    assert_eq!(e.hl.writes(), 0, "check must not create the source lists");
    assert!(e.hl.sources().is_empty());
    assert!(e.octi.registered().is_empty(), "check must not register");

    // Once the lists exist, their ids are reported.
    let ids: Vec<String> = [SourceKind::Ioc, SourceKind::Sigma, SourceKind::Yara]
        .into_iter()
        .map(|k| e.hl.add_source(k, LIST))
        .collect();
    let r = e.check(&dir.0, &[]);
    assert_eq!(r.code, 0, "{}", r.out);
    for (kind, id) in ["IOCSource", "SigmaSource", "YaraSource"].iter().zip(&ids) {
        assert!(r.ok(&format!("harfanglab {kind}")).contains(id.as_str()));
    }
}

#[test]
fn harfanglab_token_problems_name_the_variable() {
    let e = ends();
    let dir = scratch_dir("check");
    let r = e.check_fails(&dir.0, &[("HARFANGLAB_INTEL_TOKEN", "wrong-hl-token")]);
    r.fail_saying("harfanglab", "refused HARFANGLAB_INTEL_TOKEN (HTTP 401)");
    r.ok("opencti");
    r.ok("opencti live stream");

    // A known token without the threat-intel roles: 403, a permission problem.
    let r = e.check_fails(&dir.0, &[("HARFANGLAB_INTEL_TOKEN", "sim-forbidden-token")]);
    assert!(r.fail("harfanglab").contains("lacks permission (403"));
}

#[test]
fn stream_problems_name_the_stream_id() {
    let e = ends();
    let dir = scratch_dir("check");
    let r = e.check_fails(&dir.0, &[("CONNECTOR_LIVE_STREAM_ID", "no-such-stream")]);
    r.ok("opencti");
    let line = r.fail("opencti live stream");
    assert!(
        line.contains("\"no-such-stream\"") && line.contains("check CONNECTOR_LIVE_STREAM_ID"),
        "{line}"
    );
    r.ok("harfanglab");

    // A stopped stream (410) says how to start it.
    e.octi.push_faults([ConnFault::Status(410)]);
    let r = e.check_fails(&dir.0, &[]);
    assert!(r.fail("opencti live stream").contains("is stopped"));
}

#[test]
fn unreachable_ends_fail_with_the_url_variable() {
    let e = ends();
    let dir = scratch_dir("check");
    let down = dead_url();
    let r = check(&dir.0, &down, e.hl.base_url(), &[]);
    assert_eq!(r.code, 1, "{}", r.out);
    let line = r.fail("opencti");
    assert!(
        line.contains(&format!("cannot reach {down}/graphql")) && line.contains("OPENCTI_URL"),
        "{line}"
    );
    assert!(r.fail("opencti live stream").contains("not checked"));
    r.ok("harfanglab");

    let r = check(&dir.0, &e.octi.base_url(), &down, &[]);
    assert_eq!(r.code, 1, "{}", r.out);
    r.ok("opencti live stream");
    assert!(r.fail("harfanglab").contains("HARFANGLAB_INTEL_URL"));
}

#[test]
fn bad_opencti_token_fails_and_skips_the_stream() {
    let e = ends();
    let dir = scratch_dir("check");
    let r = e.check_fails(&dir.0, &[("OPENCTI_TOKEN", "wrong-octi-token")]);
    // The platform answers a bad token with HTTP 200 and a GraphQL AUTH_REQUIRED error: the
    // message says that, not an "HTTP 200" that reads like success.
    let line = r.fail_saying(
        "opencti",
        "refused OPENCTI_TOKEN (GraphQL authentication error, HTTP 200)",
    );
    assert!(!line.contains(" or AUTH_REQUIRED"), "{line}");
    assert!(r.fail("opencti live stream").contains("not checked"));
    assert!(e.octi.stream_requests().is_empty());
}

#[test]
fn configuration_errors_exit_2_before_any_probe() {
    let e = ends();
    let dir = scratch_dir("check");
    let r = e.check(
        &dir.0,
        &[("HARFANGLAB_INTEL_RULE_MATURITY", "experimental")],
    );
    assert_eq!(r.code, 2, "{}\n{}", r.out, r.err);
    assert_eq!(e.hl.total_requests(), 0);
    assert!(e.octi.graphql_requests().is_empty());
}
