//! The container files agree with each other: the runtime stage of the multi-stage `Dockerfile`
//! is the same image as `scripts/Containerfile` (the one `scripts/build-image.sh` builds and CI
//! runs), both create the same user, and `docker-compose.yml` keeps the image's health check,
//! the advertised log level, secrets in an env file and a restart policy that gives up.

use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The instructions of the last stage (`FROM` included), comments dropped and continuation
/// lines joined.
fn last_stage(text: &str) -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part.trim_end()),
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
        current.push_str(if current.is_empty() { "" } else { " " });
    }
    let from = instructions
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .expect("a FROM instruction");
    instructions.split_off(from)
}

#[test]
fn the_dockerfile_runtime_stage_is_the_containerfile() {
    let containerfile = last_stage(&read("scripts/Containerfile"));
    // The Dockerfile takes the same files from its builder's /out/ctx.
    let dockerfile: Vec<String> = last_stage(&read("Dockerfile"))
        .into_iter()
        .map(|i| {
            i.replacen("COPY --from=builder ", "COPY ", 1)
                .replacen(" /out/ctx/", " ", 1)
        })
        .collect();
    assert_eq!(dockerfile, containerfile);
    assert_eq!(containerfile[0], "FROM scratch");
    for expected in [
        "USER 65532:65532",
        "STOPSIGNAL SIGTERM",
        "VOLUME /var/lib/harfanglab-intel",
        r#"ENTRYPOINT ["/harfanglab-intel"]"#,
    ] {
        assert!(
            containerfile.iter().any(|i| i == expected),
            "{expected} missing: {containerfile:#?}"
        );
    }
}

#[test]
fn both_builds_create_the_same_user() {
    let dockerfile = read("Dockerfile");
    let script = read("scripts/build-image.sh");
    for line in [
        "nonroot:x:65532:65532:harfanglab-intel:/var/lib/harfanglab-intel:/sbin/nologin",
        "nonroot:x:65532:",
    ] {
        let quoted = format!("'{line}'");
        assert!(dockerfile.contains(&quoted), "Dockerfile lacks {quoted}");
        assert!(script.contains(&quoted), "build-image.sh lacks {quoted}");
    }
}

#[test]
fn compose_keeps_secrets_out_the_log_level_and_a_restart_policy_that_gives_up() {
    let compose: serde_yaml::Value = serde_yaml::from_str(&read("docker-compose.yml")).unwrap();
    let service = &compose["services"]["harfanglab-intel"];
    let env: Vec<&str> = service["environment"]
        .as_sequence()
        .expect("environment as a list")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(env.contains(&"CONNECTOR_LOG_LEVEL=info"), "{env:?}");
    // An `environment:` entry would override the env file.
    for e in &env {
        assert!(!e.contains("TOKEN"), "a token inline: {e}");
    }
    assert_eq!(service["env_file"].as_str(), Some("./harfanglab-intel.env"));
    let sample = read("harfanglab-intel.env.sample");
    for key in ["OPENCTI_TOKEN=", "HARFANGLAB_INTEL_TOKEN="] {
        assert!(
            sample.lines().any(|l| l.starts_with(key)),
            "sample lacks {key}"
        );
    }
    assert!(read(".gitignore").contains("/harfanglab-intel.env"));

    // `always` / `unless-stopped` would restart a configuration error (exit 2) forever.
    let restart = service["restart"].as_str().unwrap_or_default();
    let retries = restart
        .strip_prefix("on-failure:")
        .and_then(|n| n.parse::<u32>().ok());
    assert!(
        retries.is_some_and(|n| (1..=10).contains(&n)),
        "restart: {restart}"
    );

    // The image's HEALTHCHECK, and a stop grace period longer than the 30 s drain.
    let test: Vec<&str> = service["healthcheck"]["test"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let image_check = last_stage(&read("scripts/Containerfile"))
        .into_iter()
        .find(|i| i.starts_with("HEALTHCHECK"))
        .unwrap();
    let quoted: Vec<String> = test[1..].iter().map(|a| format!("\"{a}\"")).collect();
    assert!(
        test[0] == "CMD" && image_check.ends_with(&format!("CMD [{}]", quoted.join(", "))),
        "{test:?} vs {image_check}"
    );
    let grace = service["stop_grace_period"].as_str().unwrap();
    let grace = humantime::parse_duration(grace).unwrap();
    assert!(grace.as_secs() > 30, "{grace:?}");
}
