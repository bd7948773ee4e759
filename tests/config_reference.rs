//! `config.yml.sample` and the README's configuration reference are generated from the settings
//! table and must stay in sync with it. Run with `HLI_BLESS=1` to rewrite both after changing
//! the table.

use harfanglab_intel::{RawConfig, SETTINGS, Section, Setting, reference_markdown};
use std::path::{Path, PathBuf};

const README_BEGIN: &str = "<!-- config-reference:begin (generated from src/config.rs, see tests/config_reference.rs) -->\n";
const README_END: &str = "<!-- config-reference:end -->";

fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn bless() -> bool {
    std::env::var_os("HLI_BLESS").is_some()
}

/// Example values for settings without a default (the sample must show something to replace).
fn example(s: &Setting) -> Option<&'static str> {
    match s.env {
        "OPENCTI_URL" => Some("http://localhost:8080"),
        "HARFANGLAB_INTEL_URL" => Some("https://my-manager.hurukai.io:8443"),
        "OPENCTI_TOKEN"
        | "HARFANGLAB_INTEL_TOKEN"
        | "CONNECTOR_ID"
        | "CONNECTOR_LIVE_STREAM_ID" => Some("ChangeMe"),
        "OPENCTI_CA_FILE" | "HARFANGLAB_INTEL_CA_FILE" => Some("/etc/harfanglab-intel/ca.pem"),
        "CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE" => Some("2024-06-15T00:00:00Z"),
        "CONNECTOR_LIVE_STREAM_START_TIMESTAMP" => Some("1718409600000"),
        _ => None,
    }
}

fn render_sample() -> String {
    let mut out = String::from(
        "# harfanglab-intel configuration (generated from the settings table in src/config.rs).\n\
         #\n\
         # Every key can also be set with the environment variable named above it. The environment\n\
         # wins over this file, even when the variable is set to an empty string (which means \"use\n\
         # the default\"), like pycti. Required keys are uncommented; the others show their default.\n\
         # Booleans: true/false, yes/no, on/off, 1/0. Durations: seconds, or like `1m30s`.\n\
         # Proxies: HTTPS_PROXY / HTTP_PROXY / NO_PROXY environment variables.\n",
    );
    for section in [
        Section::Opencti,
        Section::Connector,
        Section::HarfangLabIntel,
    ] {
        out.push_str(&format!("\n{}:\n", section.name()));
        for s in SETTINGS.iter().filter(|s| s.section == section) {
            out.push_str(&format!("  # {}\n", s.doc));
            match (s.required, s.default) {
                (true, _) => {
                    out.push_str(&format!("  # env {}, required\n", s.env));
                    out.push_str(&format!(
                        "  {}: {}\n",
                        s.key,
                        example(s).unwrap_or("ChangeMe")
                    ));
                }
                (false, Some(d)) => {
                    out.push_str(&format!("  # env {}, default {d}\n", s.env));
                    out.push_str(&format!("  # {}: {d}\n", s.key));
                }
                (false, None) => {
                    out.push_str(&format!("  # env {}, unset by default\n", s.env));
                    out.push_str(&format!("  # {}: {}\n", s.key, example(s).unwrap_or("")));
                }
            }
        }
    }
    out
}

#[test]
fn sample_is_generated_from_the_settings_table() {
    let path = repo_file("config.yml.sample");
    let expected = render_sample();
    if bless() {
        std::fs::write(&path, &expected).unwrap();
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "config.yml.sample is stale: rerun with HLI_BLESS=1\n---\n{expected}"
    );
    for s in SETTINGS {
        let key_line = actual.contains(&format!("\n  {}: ", s.key))
            || actual.contains(&format!("\n  # {}: ", s.key));
        assert!(
            actual.contains(&format!("# env {}", s.env)) && key_line,
            "{} missing",
            s.env
        );
    }
}

#[test]
fn sample_parses_without_warnings_and_only_asks_for_the_placeholders() {
    let text = std::fs::read_to_string(repo_file("config.yml.sample")).unwrap();
    let raw =
        RawConfig::from_yaml(Some((Path::new("config.yml.sample"), &text)), &|_| None).unwrap();
    assert!(raw.warnings().is_empty(), "{:?}", raw.warnings());
    let err = harfanglab_intel::Config::from_raw(&raw)
        .unwrap_err()
        .to_string();
    // Exactly the ChangeMe placeholders are left to fill in.
    for line in err.lines().skip(1) {
        assert!(line.contains("`ChangeMe` placeholder"), "{line}");
    }
    assert_eq!(err.lines().count() - 1, 4, "{err}");
}

#[test]
fn readme_reference_is_generated_from_the_settings_table() {
    let path = repo_file("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let table = reference_markdown();
    let (Some(b), Some(e)) = (readme.find(README_BEGIN), readme.find(README_END)) else {
        panic!("README.md lacks the config-reference markers");
    };
    let current = &readme[b + README_BEGIN.len()..e];
    if bless() && current != table {
        let updated = format!("{}{README_BEGIN}{table}{}", &readme[..b], &readme[e..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert!(
        current == table,
        "README configuration reference is stale: rerun with HLI_BLESS=1\n---\n{table}"
    );
}
