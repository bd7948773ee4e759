//! Validation: every problem is reported at once, each naming its environment variable and YAML
//! key; YAML errors carry the file and line; tokens never show in Debug, summaries or messages.

use crate::support::lookup;
use harfanglab_intel::app::settings_report;
use harfanglab_intel::{Config, ConfigError, RawConfig};
use std::path::Path;

const GOOD: &[(&str, &str)] = &[
    ("OPENCTI_URL", "https://opencti.example"),
    ("OPENCTI_TOKEN", "octi-secret-token-4242"),
    ("CONNECTOR_ID", "0b8a3c1e-5f2d-4e6a-9b7c-1d2e3f4a5b6c"),
    ("CONNECTOR_LIVE_STREAM_ID", "stream-1"),
    ("HARFANGLAB_INTEL_URL", "https://hl.example:8443"),
    ("HARFANGLAB_INTEL_TOKEN", "hl-secret-token-4242"),
];

#[test]
fn every_problem_is_reported_at_once_with_env_and_yaml_names() {
    let env = [
        ("OPENCTI_URL", "ftp://opencti.example"),
        // OPENCTI_TOKEN missing
        ("CONNECTOR_ID", "not-a-uuid"),
        ("CONNECTOR_LIVE_STREAM_ID", "ChangeMe"),
        ("CONNECTOR_LOG_LEVEL", "verbose"),
        ("CONNECTOR_LIVE_STREAM_LISTEN_DELETE", "maybe"),
        ("CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE", "yesterday"),
        ("CONNECTOR_METRICS_PORT", "70000"),
        ("CONNECTOR_TYPE", "EXTERNAL_IMPORT"),
        ("HARFANGLAB_INTEL_URL", "hl.example"),
        ("HARFANGLAB_INTEL_TOKEN", "CHANGEME"),
        ("HARFANGLAB_INTEL_RULE_MATURITY", "experimental"),
        ("HARFANGLAB_INTEL_WORKERS", "many"),
        ("HARFANGLAB_INTEL_REQUEST_TIMEOUT", "soon"),
    ];
    let yaml = "connector:\n  ping_interval: -5\n";
    let err = Config::from_sources(Some(yaml), lookup(&env)).unwrap_err();
    let ConfigError::Invalid(problems) = &err else {
        panic!("expected Invalid, got {err}");
    };
    let expected = [
        (
            "OPENCTI_URL",
            "opencti.url",
            "must be an http:// or https:// URL",
        ),
        ("OPENCTI_TOKEN", "opencti.token", "required, but not set"),
        ("CONNECTOR_ID", "connector.id", "must be a UUID"),
        (
            "CONNECTOR_LIVE_STREAM_ID",
            "connector.live_stream_id",
            "ChangeMe",
        ),
        (
            "CONNECTOR_LOG_LEVEL",
            "connector.log_level",
            "unknown log level \"verbose\"",
        ),
        (
            "CONNECTOR_LIVE_STREAM_LISTEN_DELETE",
            "connector.live_stream_listen_delete",
            "must be a boolean",
        ),
        (
            "CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE",
            "connector.live_stream_recover_iso_date",
            "ISO 8601",
        ),
        (
            "CONNECTOR_METRICS_PORT",
            "connector.metrics_port",
            "port number",
        ),
        ("CONNECTOR_TYPE", "connector.type", "must be STREAM"),
        (
            "CONNECTOR_PING_INTERVAL",
            "connector.ping_interval",
            "number of seconds",
        ),
        (
            "HARFANGLAB_INTEL_URL",
            "harfanglab_intel.url",
            "must be an http:// or https:// URL",
        ),
        (
            "HARFANGLAB_INTEL_TOKEN",
            "harfanglab_intel.token",
            "ChangeMe",
        ),
        (
            "HARFANGLAB_INTEL_RULE_MATURITY",
            "harfanglab_intel.rule_maturity",
            "stable or testing",
        ),
        (
            "HARFANGLAB_INTEL_WORKERS",
            "harfanglab_intel.workers",
            "whole number",
        ),
        (
            "HARFANGLAB_INTEL_REQUEST_TIMEOUT",
            "harfanglab_intel.request_timeout",
            "number of seconds",
        ),
    ];
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "invalid configuration ({} problems):",
            expected.len()
        )),
        "{text}"
    );
    assert_eq!(problems.len(), expected.len(), "{text}");
    for (env, yaml, fragment) in expected {
        let p = problems
            .iter()
            .find(|p| p.env == env)
            .unwrap_or_else(|| panic!("no problem for {env}:\n{text}"));
        assert_eq!(p.yaml_path, yaml);
        assert!(p.message.contains(fragment), "{env}: {}", p.message);
        assert!(text.contains(&format!("{env} (YAML {yaml}")), "{text}");
    }
}

#[test]
fn connector_id_must_be_a_hyphenated_uuid() {
    for bad in [
        "0b8a3c1e5f2d4e6a9b7c1d2e3f4a5b6c",
        "{0b8a3c1e-5f2d-4e6a-9b7c-1d2e3f4a5b6c}",
        "0b8a3c1e-5f2d-4e6a-9b7c-1d2e3f4a5b6",
    ] {
        let mut env = GOOD.to_vec();
        env.retain(|(k, _)| *k != "CONNECTOR_ID");
        env.push(("CONNECTOR_ID", bad));
        let err = Config::from_sources(None, lookup(&env))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "CONNECTOR_ID (YAML connector.id, set in the environment): must be a UUID"
            ),
            "{bad}: {err}"
        );
    }
    let c = Config::from_sources(None, lookup(GOOD)).unwrap();
    assert_eq!(
        c.connector.id.to_string(),
        "0b8a3c1e-5f2d-4e6a-9b7c-1d2e3f4a5b6c"
    );
}

#[test]
fn the_nil_uuid_is_refused_as_nil_not_as_malformed() {
    let mut env = GOOD.to_vec();
    env.retain(|(k, _)| *k != "CONNECTOR_ID");
    env.push(("CONNECTOR_ID", "00000000-0000-0000-0000-000000000000"));
    let err = Config::from_sources(None, lookup(&env))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "CONNECTOR_ID (YAML connector.id, set in the environment): is the nil UUID \
             00000000-0000-0000-0000-000000000000, which cannot identify a connector"
        ),
        "{err}"
    );
    assert!(!err.contains("must be a UUID"), "{err}");
}

#[test]
fn summary_says_there_is_no_tls_on_a_plain_http_url() {
    let mut env = GOOD.to_vec();
    env.retain(|(k, _)| !k.ends_with("_URL"));
    env.push(("OPENCTI_URL", "http://opencti.example"));
    env.push(("HARFANGLAB_INTEL_URL", "http://hl.example:8080"));
    let summary = Config::from_sources(None, lookup(&env)).unwrap().summary();
    assert!(
        summary.contains("opencti=http://opencti.example tls=none (http) "),
        "{summary}"
    );
    assert!(
        summary.contains("harfanglab=http://hl.example:8080 tls=none (http) "),
        "{summary}"
    );
    let summary = Config::from_sources(None, lookup(GOOD)).unwrap().summary();
    assert!(
        summary.contains("opencti=https://opencti.example tls=off ")
            && summary.contains("harfanglab=https://hl.example:8443 tls=on "),
        "{summary}"
    );
}

#[test]
fn changeme_is_refused_in_any_case_and_from_yaml() {
    let yaml = "opencti:\n  token: cHaNgEmE\n";
    let env: Vec<_> = GOOD
        .iter()
        .copied()
        .filter(|(k, _)| *k != "OPENCTI_TOKEN")
        .collect();
    let err = Config::from_sources(Some(yaml), lookup(&env))
        .unwrap_err()
        .to_string();
    assert!(err.contains("OPENCTI_TOKEN (YAML opencti.token, set in the config file): still the `ChangeMe` placeholder"), "{err}");
}

#[test]
fn invalid_yaml_names_the_file_and_line() {
    let yaml = "opencti:\n  url: http://x\n connector: [\n";
    let err = RawConfig::from_yaml(
        Some((Path::new("/etc/hli/config.yml"), yaml)),
        &lookup(GOOD),
    )
    .unwrap_err();
    let ConfigError::Yaml { line, .. } = &err else {
        panic!("expected a YAML error, got {err}");
    };
    assert_eq!(*line, Some(3), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("invalid config file /etc/hli/config.yml at line 3"),
        "{text}"
    );
    assert_eq!(
        text.matches("line 3").count(),
        1,
        "position given once: {text}"
    );
    let err =
        RawConfig::from_yaml(Some((Path::new("c.yml"), "- a\n- b\n")), &lookup(GOOD)).unwrap_err();
    assert!(
        err.to_string().contains("top level must be a mapping"),
        "{err}"
    );
    let err = RawConfig::from_yaml(Some((Path::new("c.yml"), "opencti: 3\n")), &lookup(GOOD))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("section `opencti` must be a mapping"),
        "{err}"
    );
}

#[test]
fn yaml_lists_for_single_values_are_problems_not_crashes() {
    let yaml = "harfanglab_intel:\n  url: [a, b]\n";
    let env: Vec<_> = GOOD
        .iter()
        .copied()
        .filter(|(k, _)| *k != "HARFANGLAB_INTEL_URL")
        .collect();
    let err = Config::from_sources(Some(yaml), lookup(&env))
        .unwrap_err()
        .to_string();
    assert!(err.contains("HARFANGLAB_INTEL_URL (YAML harfanglab_intel.url, set in the config file): expected a single value"), "{err}");
}

#[test]
fn missing_explicit_config_file_is_a_warning_but_unreadable_is_an_error() {
    let raw = RawConfig::load(Some(Path::new("/nonexistent/hli.yml")), &lookup(GOOD)).unwrap();
    assert_eq!(raw.file(), None);
    assert_eq!(
        raw.warnings(),
        [
            "config file /nonexistent/hli.yml does not exist: using the environment and defaults only"
        ]
    );
    assert!(Config::from_raw(&raw).is_ok());
    // A directory cannot be read as a file.
    let err = RawConfig::load(Some(&std::env::temp_dir()), &lookup(GOOD)).unwrap_err();
    assert!(
        err.to_string().starts_with("cannot read config file "),
        "{err}"
    );
}

#[test]
fn tokens_never_appear_in_debug_summary_report_or_errors() {
    let secrets = ["octi-secret-token-4242", "hl-secret-token-4242"];
    let config = Config::from_sources(None, lookup(GOOD)).unwrap();
    let raw = RawConfig::from_yaml(None, &lookup(GOOD)).unwrap();
    let texts = [
        format!("{config:?}"),
        format!("{config:#?}"),
        config.summary(),
        settings_report(&raw),
        format!("{raw:?}"),
        // check_local: no network probe (tests/cli_check.rs covers the probes' output).
        harfanglab_intel::app::check_local(&config).to_string(),
    ];
    for text in &texts {
        for s in secrets {
            assert!(!text.contains(s), "token leaked in: {text}");
        }
    }
    assert!(settings_report(&raw).contains("OPENCTI_TOKEN"));
    assert_eq!(config.opencti.token.expose(), secrets[0]);
    // A wrong token is not echoed either.
    let mut env = GOOD.to_vec();
    env.push(("HARFANGLAB_INTEL_TOKEN", "hl secret with spaces"));
    env.retain(|(k, v)| *k != "HARFANGLAB_INTEL_TOKEN" || v.contains(' '));
    let err = Config::from_sources(None, lookup(&env))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HARFANGLAB_INTEL_TOKEN") && !err.contains("secret with"),
        "{err}"
    );
}

#[test]
fn summary_is_one_line_with_the_essentials() {
    let c = Config::from_sources(None, lookup(GOOD)).unwrap();
    let s = c.summary();
    assert!(!s.contains('\n'));
    for part in [
        "opencti=https://opencti.example",
        "stream=stream-1",
        "harfanglab=https://hl.example:8443",
        "list=\"from_OpenCTI\"",
        "workers=auto",
        "dry_run=false",
    ] {
        assert!(s.contains(part), "{part} missing in {s}");
    }
    // pycti's default leaves OpenCTI TLS unverified: say so.
    assert!(
        c.warnings()
            .iter()
            .any(|w| w.contains("OPENCTI_SSL_VERIFY"))
    );
}

#[test]
fn summary_redacts_credentials_embedded_in_urls() {
    let mut env = GOOD.to_vec();
    env.retain(|(k, _)| *k != "OPENCTI_URL" && *k != "HARFANGLAB_INTEL_URL");
    env.push(("OPENCTI_URL", "https://admin:hunter2@opencti.example"));
    env.push(("HARFANGLAB_INTEL_URL", "https://apikey@hl.example:8443"));
    let s = Config::from_sources(None, lookup(&env)).unwrap().summary();
    assert!(
        !s.contains("hunter2") && !s.contains("admin") && !s.contains("apikey"),
        "{s}"
    );
    assert!(s.contains("opencti=https://***@opencti.example"), "{s}");
    assert!(s.contains("harfanglab=https://***@hl.example:8443"), "{s}");
}
