//! The connector's OpenCTI lifecycle against the simulator: register (version-checked input,
//! accepted as is by every release the simulator models; fields a platform lacks against the
//! connector's table are dropped on its word, once per process), ping stores the pycti state, a
//! reset from the UI is detected, and startup reconciliation picks up a state left by the Python
//! connector.

use harfanglab_intel::sim::opencti::{OpenCtiSim, OpenCtiSimConfig, serve};
use harfanglab_intel::{
    ApiError, ApiOptions, Checkpoint, CheckpointOrigin, FirstRun, OpenCtiApi, PingOutcome,
    PlatformVersion, Registration, Secret, reconcile_start,
};
use std::time::SystemTime;

const ID: &str = "c0ffee00-0000-4000-8000-000000000001";

fn sim(version: &str) -> OpenCtiSim {
    sim_lacking(version, &[])
}

fn sim_lacking(version: &str, lacks: &[&str]) -> OpenCtiSim {
    serve(
        "127.0.0.1:0",
        OpenCtiSimConfig {
            version: version.into(),
            lacks: lacks.iter().map(|s| (*s).to_owned()).collect(),
            ..OpenCtiSimConfig::default()
        },
    )
    .unwrap()
}

fn codes(sim: &OpenCtiSim) -> Vec<String> {
    sim.rejections()
        .iter()
        .map(|r| r["extensions"]["code"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn api(sim: &OpenCtiSim) -> OpenCtiApi {
    OpenCtiApi::new(ApiOptions::new(sim.base_url(), Secret::new("sim-token"))).unwrap()
}

fn reg() -> Registration {
    Registration {
        id: ID.into(),
        name: "HarfangLab Intel".into(),
        scope: vec!["harfanglab".into()],
    }
}

#[test]
fn register_ping_and_reset_from_the_ui() {
    for version in [
        "5.10.0",
        "5.12.0",
        "6.2.11",
        "6.2.12",
        "6.4.0",
        "6.5.6",
        "6.5.7",
        "6.8.8",
        "6.8.10",
        "7.260615.1",
    ] {
        let sim = sim(version);
        let api = api(&sim);
        let v = PlatformVersion::parse(&api.about().unwrap());
        let r = api.register_connector(&reg(), v).unwrap();
        assert_eq!(r.connector_state, None, "{version}");
        assert_eq!(sim.registered().len(), 1);

        let cp = Checkpoint {
            start_from: "1718445600123-0".into(),
            recover_until: Some("2024-06-15T09:00:00Z".into()),
        };
        assert_eq!(
            api.ping_connector(ID, Some(&cp), v).unwrap(),
            PingOutcome::Stored
        );
        assert_eq!(sim.connector_state(ID), Some(cp.to_state_json()));

        sim.reset_state_from_ui(ID);
        assert_eq!(
            api.ping_connector(ID, Some(&cp), v).unwrap(),
            PingOutcome::Reset
        );
        // The reset discarded the pushed state.
        assert_eq!(sim.connector_state(ID).as_deref(), Some(""));
        assert_eq!(sim.ping_count(), 2);
        // The version table agrees with every release: nothing was refused.
        assert_eq!(
            sim.rejections(),
            Vec::<serde_json::Value>::new(),
            "{version}"
        );
    }
}

#[test]
fn fields_an_older_platform_refuses_are_dropped_on_its_word() {
    // Told the wrong version (6.9.0 for a 6.4.0 platform), the connector sends three fields the
    // platform lacks; it refuses them in one answer (an error each, like graphql-js), and
    // registration goes through on the second attempt.
    let sim = sim("6.4.0");
    let api = api(&sim);
    api.register_connector(&reg(), PlatformVersion::parse("6.9.0"))
        .unwrap();
    assert_eq!(codes(&sim), ["BAD_USER_INPUT"; 3]);
    assert_eq!(sim.graphql_requests().len(), 2);
    let input = &sim.registered()[0];
    assert!(input.get("listen_callback_uri").is_none(), "{input}");
    assert!(input.get("auto_update").is_none(), "{input}");
    assert!(input.get("playbook_compatible").is_some(), "{input}");
}

#[test]
fn a_platform_the_version_table_is_wrong_about_still_registers_and_pings() {
    // The simulator lacks fields its 7.x release has, which the connector's table cannot know.
    let sim = sim_lacking(
        "7.260615.1",
        &[
            "enrichment_resolution",
            "connectorInfo",
            "ConnectorInfoInput",
        ],
    );
    let api = api(&sim);
    let v = PlatformVersion::parse(&api.about().unwrap());
    api.register_connector(&reg(), v).unwrap();
    let cp = Checkpoint {
        start_from: "5-0".into(),
        recover_until: None,
    };
    assert_eq!(
        api.ping_connector(ID, Some(&cp), v).unwrap(),
        PingOutcome::Stored
    );
    assert_eq!(
        codes(&sim),
        [
            "BAD_USER_INPUT",
            "GRAPHQL_VALIDATION_FAILED",
            "GRAPHQL_VALIDATION_FAILED"
        ]
    );
    // Remembered for the process, by every clone: no second refusal.
    let clone = api.clone();
    clone.register_connector(&reg(), v).unwrap();
    clone.ping_connector(ID, Some(&cp), v).unwrap();
    api.ping_connector(ID, Some(&cp), v).unwrap();
    assert_eq!(sim.rejections().len(), 3);
    assert_eq!(sim.registered().len(), 2);
    assert_eq!(sim.ping_count(), 3);
    for input in sim.registered() {
        assert!(input.get("enrichment_resolution").is_none(), "{input}");
        assert!(input.get("auto_update").is_some(), "{input}");
    }
    assert_eq!(sim.connector_state(ID), Some(cp.to_state_json()));
}

#[test]
fn a_platform_refusing_a_required_field_is_unsupported_with_its_message() {
    let sim = sim_lacking("6.1.0", &["type"]);
    let e = api(&sim)
        .register_connector(&reg(), PlatformVersion::parse("6.1.0"))
        .unwrap_err();
    assert!(matches!(e, ApiError::Unsupported { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(r#"Field "type" is not defined by type "RegisterConnectorInput"."#),
        "{text}"
    );
    assert!(text.contains("OpenCTI 6.1.0"), "{text}");
    assert!(sim.registered().is_empty());
}

#[test]
fn state_left_by_the_python_connector_is_picked_up() {
    let sim = sim("6.8.10");
    sim.set_connector_state(ID, r#"{"connectorLastEventId": "1718000000000-3", "connectorStartTime": "2024-06-01T00:00:00Z"}"#);
    let api = api(&sim);
    let r = api
        .register_connector(&reg(), PlatformVersion::parse("6.8.10"))
        .unwrap();
    let rec = reconcile_start(
        None,
        r.connector_state.as_deref(),
        &FirstRun::default(),
        SystemTime::now(),
    );
    assert_eq!(rec.origin, CheckpointOrigin::Platform);
    assert_eq!(rec.checkpoint.start_from, "1718000000000-3");
    assert_eq!(
        rec.checkpoint.recover_until.as_deref(),
        Some("2024-06-01T00:00:00Z")
    );
}

#[test]
fn bad_token_is_an_auth_error() {
    let sim = sim("6.8.10");
    let api = OpenCtiApi::new(ApiOptions::new(sim.base_url(), Secret::new("nope"))).unwrap();
    assert!(api.about().unwrap_err().is_fatal());
}
