//! Where each setting's value comes from: environment over YAML over default (pycti semantics,
//! an empty environment variable means "default", not "ask the YAML"), the `harfanglab` section
//! alias, the state directory chain and the `recover` forms.

use crate::support::lookup;
use harfanglab_intel::{
    CONNECTOR_NAME, Config, ConfigError, HARFANGLAB_INTEL_SOURCE_LIST_NAME, RawConfig, Recover,
    RuleMaturity, SettingOrigin, TlsVerify,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BASE: &[(&str, &str)] = &[
    ("OPENCTI_URL", "https://opencti.example"),
    ("OPENCTI_TOKEN", "octi-secret-token"),
    ("CONNECTOR_ID", "0b8a3c1e-5f2d-4e6a-9b7c-1d2e3f4a5b6c"),
    ("CONNECTOR_LIVE_STREAM_ID", "stream-1"),
    ("HARFANGLAB_INTEL_URL", "https://hl.example:8443/"),
    ("HARFANGLAB_INTEL_TOKEN", "hl-secret-token"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut v = BASE.to_vec();
    v.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    v.extend_from_slice(extra);
    v
}

fn config(yaml: Option<&str>, env: &[(&str, &str)]) -> Config {
    match Config::from_sources(yaml, lookup(env)) {
        Ok(c) => c,
        Err(e) => panic!("unexpected config error: {e}"),
    }
}

#[test]
fn env_wins_over_yaml_which_wins_over_default() {
    let yaml = "harfanglab_intel:\n  source_list_name: from_yaml\n  workers: 4\nconnector:\n  name: Yaml Name\n";
    let c = config(Some(yaml), &with(&[("HARFANGLAB_INTEL_WORKERS", "8")]));
    assert_eq!(c.service.workers, 8, "env beats YAML");
    assert_eq!(
        c.harfanglab.source_list_name, "from_yaml",
        "YAML beats default"
    );
    assert_eq!(c.connector.name, "Yaml Name");
    assert_eq!(c.harfanglab.rule_maturity, RuleMaturity::Stable, "default");
}

#[test]
fn empty_env_variable_means_default_even_when_yaml_has_a_value() {
    let yaml = "harfanglab_intel:\n  source_list_name: from_yaml\nconnector:\n  name: Yaml Name\n";
    let env = with(&[
        ("HARFANGLAB_INTEL_SOURCE_LIST_NAME", ""),
        ("CONNECTOR_NAME", "  "),
    ]);
    let raw = RawConfig::from_yaml(Some((Path::new("c.yml"), yaml)), &lookup(&env)).unwrap();
    let entry = raw.entry(&HARFANGLAB_INTEL_SOURCE_LIST_NAME).unwrap();
    assert_eq!(entry.origin, SettingOrigin::Env);
    assert_eq!(entry.effective(), Some("from_OpenCTI"));
    assert_eq!(
        raw.entry(&CONNECTOR_NAME).unwrap().effective(),
        Some("HarfangLab Intel")
    );
    let c = Config::from_raw(&raw).unwrap();
    assert_eq!(c.harfanglab.source_list_name, "from_OpenCTI");
}

#[test]
fn empty_env_for_a_required_setting_is_reported_as_empty() {
    let yaml = "opencti:\n  url: https://from-yaml\n";
    let err = Config::from_sources(Some(yaml), lookup(&with(&[("OPENCTI_URL", "")]))).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("OPENCTI_URL (YAML opencti.url, set in the environment): required, but set to an empty string"),
        "{text}"
    );
}

#[test]
fn yaml_types_and_urls_are_normalised() {
    let yaml = "connector:\n  live_stream_listen_delete: false\n  metrics_port: 9200\n  expose_metrics: yes\n  scope: [harfanglab, edr]\nopencti:\n  ssl_verify: true\n";
    let c = config(Some(yaml), BASE);
    assert!(!c.connector.listen_delete);
    assert_eq!(
        c.connector.metrics_addr,
        Some("0.0.0.0:9200".parse().unwrap())
    );
    assert_eq!(c.connector.scope, vec!["harfanglab", "edr"]);
    assert_eq!(c.opencti.tls, TlsVerify::SystemRoots);
    assert_eq!(
        c.harfanglab.url, "https://hl.example:8443",
        "trailing slash removed"
    );
}

#[test]
fn booleans_in_env_accept_any_case_and_common_words() {
    for (value, expected) in [
        ("TRUE", true),
        ("Yes", true),
        ("on", true),
        ("1", true),
        ("FALSE", false),
        ("no", false),
        ("Off", false),
        ("0", false),
    ] {
        let c = config(None, &with(&[("HARFANGLAB_INTEL_REMOVE_INDICATOR", value)]));
        assert_eq!(c.harfanglab.remove_indicator, expected, "{value}");
    }
}

#[test]
fn harfanglab_section_is_an_alias_with_a_warning_and_loses_to_the_real_name() {
    let yaml = "harfanglab:\n  source_list_name: old_name\n  rule_maturity: testing\nharfanglab_intel:\n  source_list_name: new_name\n";
    let raw = RawConfig::from_yaml(Some((Path::new("/etc/x.yml"), yaml)), &lookup(BASE)).unwrap();
    assert!(
        raw.warnings()
            .iter()
            .any(|w| w.contains("section `harfanglab` is read as `harfanglab_intel`")),
        "{:?}",
        raw.warnings()
    );
    let c = Config::from_raw(&raw).unwrap();
    assert_eq!(c.harfanglab.source_list_name, "new_name");
    assert_eq!(c.harfanglab.rule_maturity, RuleMaturity::Testing);
}

#[test]
fn unknown_yaml_keys_and_sections_are_warned_about() {
    let yaml = "connector:\n  live_stream_idd: x\nmystery:\n  a: 1\n";
    let raw = RawConfig::from_yaml(Some((Path::new("c.yml"), yaml)), &lookup(BASE)).unwrap();
    let w = raw.warnings().join("\n");
    assert!(w.contains("unknown key `connector.live_stream_idd`"), "{w}");
    assert!(w.contains("unknown section `mystery`"), "{w}");
}

#[test]
fn state_dir_precedence() {
    let sd = ("STATE_DIRECTORY", "/run/state/a:/run/state/b");
    let c = config(
        None,
        &with(&[("HARFANGLAB_INTEL_STATE_DIR", "/srv/hli"), sd]),
    );
    assert_eq!(c.service.state_dir, PathBuf::from("/srv/hli"));
    let c = config(
        Some("harfanglab_intel:\n  state_dir: /yaml/dir\n"),
        &with(&[sd]),
    );
    assert_eq!(c.service.state_dir, PathBuf::from("/yaml/dir"));
    let c = config(None, &with(&[sd]));
    assert_eq!(
        c.service.state_dir,
        PathBuf::from("/run/state/a"),
        "systemd's first entry"
    );
    let c = config(None, &with(&[("HARFANGLAB_INTEL_STATE_DIR", ""), sd]));
    assert_eq!(
        c.service.state_dir,
        PathBuf::from("/run/state/a"),
        "empty env = default chain"
    );
    let c = config(None, BASE);
    assert_eq!(
        c.service.state_dir,
        PathBuf::from("/var/lib/harfanglab-intel")
    );
}

#[test]
fn recover_forms() {
    assert_eq!(config(None, BASE).connector.recover, Recover::UntilNow);
    for off in ["false", "FALSE", "no", "None", "NONE"] {
        let c = config(
            None,
            &with(&[("CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE", off)]),
        );
        assert_eq!(c.connector.recover, Recover::Disabled, "{off}");
    }
    // A YAML boolean `false` is the same as the string.
    let c = config(
        Some("connector:\n  live_stream_recover_iso_date: false\n"),
        BASE,
    );
    assert_eq!(c.connector.recover, Recover::Disabled);
    let c = config(
        None,
        &with(&[(
            "CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE",
            "2024-06-15T10:00:00+02:00",
        )]),
    );
    assert_eq!(
        c.connector.recover,
        Recover::Until("2024-06-15T10:00:00+02:00".into())
    );
    let c = config(
        None,
        &with(&[("CONNECTOR_LIVE_STREAM_START_TIMESTAMP", "1718445600123")]),
    );
    assert_eq!(c.connector.start_timestamp_ms, Some(1_718_445_600_123));
}

#[test]
fn durations_and_dry_run() {
    let c = config(
        None,
        &with(&[
            ("CONNECTOR_LIVE_STREAM_IDLE_TIMEOUT", "20"),
            ("HARFANGLAB_INTEL_DRY_RUN", "yes"),
        ]),
    );
    assert_eq!(c.connector.stream_idle_timeout, Duration::from_secs(20));
    assert!(c.harfanglab.dry_run);
}

#[test]
fn ca_files_turn_verification_on() {
    let dir = temp_dir("ca");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let ca_s = ca.to_str().unwrap();
    // OpenCTI's pycti default (false) gives way to an explicit CA file.
    let c = config(None, &with_owned(&[("OPENCTI_CA_FILE", ca_s)]));
    assert_eq!(c.opencti.tls, TlsVerify::CaFile(ca.clone()));
    // requests semantics: ssl_verify may itself be the bundle path.
    let c = config(None, &with_owned(&[("HARFANGLAB_INTEL_SSL_VERIFY", ca_s)]));
    assert_eq!(c.harfanglab.tls, TlsVerify::CaFile(ca.clone()));
    // Explicitly off plus a CA file is contradictory.
    let err = Config::from_sources(
        None,
        lookup(&with_owned(&[
            ("OPENCTI_SSL_VERIFY", "false"),
            ("OPENCTI_CA_FILE", ca_s),
        ])),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("OPENCTI_CA_FILE") && err.contains("turns verification off"),
        "{err}"
    );
    let err = Config::from_sources(
        None,
        lookup(&with(&[(
            "HARFANGLAB_INTEL_CA_FILE",
            "/nonexistent/ca.pem",
        )])),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid(p) if p.len() == 1),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn with_owned<'a>(extra: &[(&'static str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v: Vec<(&str, &str)> = BASE.to_vec();
    v.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    v.extend_from_slice(extra);
    v
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hli-config-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_python_connector_style_file_is_accepted_as_is() {
    // Same layout as the Python connector's sample: `harfanglab` section, quoted strings,
    // YAML booleans, `connector.type`.
    let yaml = "\
opencti:
  url: 'http://localhost:8080'
  token: 'tok-python'
connector:
  id: '0b8a3c1e-5f2d-4e6a-9b7c-1d2e3f4a5b6c'
  type: 'STREAM'
  name: 'HarfangLab'
  scope: 'harfanglab'
  log_level: 'info'
  live_stream_id: 'stream-python'
  live_stream_listen_delete: true
  live_stream_no_dependencies: true
harfanglab:
  url: 'https://hl.example:8443'
  ssl_verify: true
  token: 'hl-python'
  source_list_name: 'from_OpenCTI'
  remove_indicator: true
  rule_maturity: 'testing'
";
    let raw = RawConfig::from_yaml(Some((Path::new("config.yml"), yaml)), &|_| None).unwrap();
    assert_eq!(
        raw.warnings().len(),
        1,
        "only the section alias: {:?}",
        raw.warnings()
    );
    let c = Config::from_raw(&raw).unwrap();
    assert_eq!(c.connector.name, "HarfangLab");
    assert_eq!(c.connector.live_stream_id, "stream-python");
    assert_eq!(c.harfanglab.url, "https://hl.example:8443");
    assert_eq!(c.harfanglab.token.expose(), "hl-python");
    assert!(c.harfanglab.remove_indicator);
    assert_eq!(c.harfanglab.rule_maturity, RuleMaturity::Testing);
}
