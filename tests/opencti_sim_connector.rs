//! The connector's OpenCTI lifecycle against the simulator: register (version-checked input),
//! ping stores the pycti state, a reset from the UI is detected, and startup reconciliation picks
//! up a state left by the Python connector.

use harfanglab_intel::opencti::api::{
    ApiError, ApiOptions, OpenCtiApi, PingOutcome, PlatformVersion, Registration,
};
use harfanglab_intel::secret::Secret;
use harfanglab_intel::sim::opencti::{OpenCtiSim, OpenCtiSimConfig, serve};
use harfanglab_intel::state::{Checkpoint, FirstRun, Origin, reconcile};
use std::time::SystemTime;

const ID: &str = "c0ffee00-0000-4000-8000-000000000001";

fn sim(version: &str) -> OpenCtiSim {
    serve(
        "127.0.0.1:0",
        OpenCtiSimConfig {
            version: version.into(),
            ..OpenCtiSimConfig::default()
        },
    )
    .unwrap()
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
    for version in ["5.12.0", "6.4.0", "6.8.10"] {
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
    }
}

#[test]
fn newer_fields_are_rejected_by_an_older_platform() {
    // Sending the 6.8 input to a 6.4 platform fails like real GraphQL (unknown input field).
    let sim = sim("6.4.0");
    let e = api(&sim)
        .register_connector(&reg(), PlatformVersion::parse("6.8.0"))
        .unwrap_err();
    assert!(matches!(e, ApiError::Graphql { .. }), "{e}");
    assert!(e.to_string().contains("auto_update") || e.to_string().contains("listen_callback_uri"));
}

#[test]
fn state_left_by_the_python_connector_is_picked_up() {
    let sim = sim("6.8.10");
    sim.set_connector_state(ID, r#"{"connectorLastEventId": "1718000000000-3", "connectorStartTime": "2024-06-01T00:00:00Z"}"#);
    let api = api(&sim);
    let r = api
        .register_connector(&reg(), PlatformVersion::parse("6.8.10"))
        .unwrap();
    let rec = reconcile(
        None,
        r.connector_state.as_deref(),
        &FirstRun::default(),
        SystemTime::now(),
    );
    assert_eq!(rec.origin, Origin::Platform);
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
