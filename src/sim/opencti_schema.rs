//! The simulated OpenCTI platform's GraphQL schema, release by release, and how a real platform
//! (graphql-js through Apollo) rejects a request that names what its schema lacks: validation
//! errors for unknown argument or variable types in the document (`GRAPHQL_VALIDATION_FAILED`),
//! then coercion errors for unknown input-object fields in the variables (`BAD_USER_INPUT`),
//! one error per unknown name, with graphql-js 16's wording.
//!
//! Only the members the connector's calls touch are modelled (`registerConnector`,
//! `pingConnector` and their input types). This table is the simulator's own knowledge, read from
//! `opencti-graphql/config/schema/opencti.graphql` at each release tag; it is deliberately not
//! the connector's `opencti::api::FIELD_GATES`, so a test of the connector against the simulator
//! does not agree with the connector by construction. `lacks` removes more names on top of the
//! release (a platform the connector's table is wrong about).

use serde_json::Value;

/// A release `major.minor.patch`, compared field by field.
type Release = (u32, u32, u32);

/// In every release the simulator models (5.0 on).
const ALWAYS: Release = (0, 0, 0);

/// A schema member the connector's calls can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Member {
    /// A field of an input object type: (type, field).
    InputField(&'static str, &'static str),
    /// An argument of a `Mutation` field: (field, argument).
    MutationArgument(&'static str, &'static str),
    /// An input type usable as a variable type.
    InputType(&'static str),
}

use Member::{InputField, InputType, MutationArgument};

const REGISTER_INPUT: &str = "RegisterConnectorInput";
const CONNECTOR_INFO: &str = "ConnectorInfoInput";

/// Each member and the first release whose schema has it.
const HISTORY: &[(Member, Release)] = &[
    (InputType(REGISTER_INPUT), ALWAYS),
    (MutationArgument("registerConnector", "input"), ALWAYS),
    (InputField(REGISTER_INPUT, "id"), ALWAYS),
    (InputField(REGISTER_INPUT, "name"), ALWAYS),
    (InputField(REGISTER_INPUT, "type"), ALWAYS),
    (InputField(REGISTER_INPUT, "scope"), ALWAYS),
    (InputField(REGISTER_INPUT, "auto"), ALWAYS),
    (InputField(REGISTER_INPUT, "only_contextual"), ALWAYS),
    (
        InputField(REGISTER_INPUT, "playbook_compatible"),
        (5, 11, 0),
    ),
    (InputField(REGISTER_INPUT, "listen_callback_uri"), (6, 5, 7)),
    (InputField(REGISTER_INPUT, "auto_update"), (6, 8, 9)),
    (
        InputField(REGISTER_INPUT, "enrichment_resolution"),
        (6, 8, 9),
    ),
    (MutationArgument("pingConnector", "id"), ALWAYS),
    (MutationArgument("pingConnector", "state"), ALWAYS),
    (
        MutationArgument("pingConnector", "connectorInfo"),
        (6, 2, 12),
    ),
    (InputType(CONNECTOR_INFO), (6, 2, 12)),
    (InputField(CONNECTOR_INFO, "run_and_terminate"), (6, 2, 12)),
    (InputField(CONNECTOR_INFO, "buffering"), (6, 2, 12)),
    (InputField(CONNECTOR_INFO, "queue_threshold"), (6, 2, 12)),
    (
        InputField(CONNECTOR_INFO, "queue_messages_size"),
        (6, 2, 12),
    ),
    (InputField(CONNECTOR_INFO, "next_run_datetime"), (6, 2, 12)),
    (InputField(CONNECTOR_INFO, "last_run_datetime"), (6, 2, 12)),
];

/// Built-in scalars: always known as variable types.
const SCALARS: &[&str] = &["ID", "String", "Boolean", "Int", "Float"];

/// A release's schema, less the names in `lacks`.
#[derive(Clone, Debug)]
pub(crate) struct Schema {
    release: Release,
    lacks: Vec<String>,
}

/// One GraphQL error as the platform sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub message: String,
    /// `extensions.code`.
    pub code: &'static str,
}

impl Schema {
    /// `version` as `about` reports it (`7.260817.0` too); an unparsable one (a development
    /// build) has every member.
    pub(crate) fn new(version: &str, lacks: &[String]) -> Schema {
        Schema {
            release: release(version),
            lacks: lacks.to_vec(),
        }
    }

    fn has(&self, m: Member) -> bool {
        let name = match m {
            InputField(_, n) | MutationArgument(_, n) | InputType(n) => n,
        };
        !self.lacks.iter().any(|l| l == name)
            && HISTORY
                .iter()
                .any(|(member, since)| *member == m && self.release >= *since)
    }

    /// Whether `name` is a known input field of `ty`, by the names the table spells.
    fn has_input_field(&self, ty: &str, name: &str) -> bool {
        HISTORY.iter().any(|(m, _)| match *m {
            InputField(t, f) if t == ty && f == name => self.has(*m),
            _ => false,
        })
    }

    fn has_type(&self, ty: &str) -> bool {
        SCALARS.contains(&ty)
            || HISTORY.iter().any(|(m, _)| match *m {
                InputType(t) if t == ty => self.has(*m),
                _ => false,
            })
    }

    fn has_argument(&self, field: &str, arg: &str) -> bool {
        HISTORY.iter().any(|(m, _)| match *m {
            MutationArgument(f, a) if f == field && a == arg => self.has(*m),
            _ => false,
        })
    }

    /// Why the platform refuses the mutation `query` calling `field` with `variables` (empty:
    /// it accepts it). Validation comes first, and coercion only runs on a valid document, as
    /// in graphql-js.
    pub(crate) fn reject(&self, query: &str, field: &str, variables: &Value) -> Vec<Rejection> {
        let definitions = variable_definitions(query);
        let mut errors = Vec::new();
        for (_, ty) in &definitions {
            if !self.has_type(ty) {
                errors.push(Rejection {
                    message: format!("Unknown type \"{ty}\"."),
                    code: "GRAPHQL_VALIDATION_FAILED",
                });
            }
        }
        for arg in arguments(query, field) {
            if !self.has_argument(field, &arg) {
                errors.push(Rejection {
                    message: format!("Unknown argument \"{arg}\" on field \"Mutation.{field}\"."),
                    code: "GRAPHQL_VALIDATION_FAILED",
                });
            }
        }
        if !errors.is_empty() {
            return errors;
        }
        for (var, ty) in &definitions {
            let Some(object) = variables.get(var).and_then(Value::as_object) else {
                continue;
            };
            for key in object.keys() {
                if HISTORY
                    .iter()
                    .any(|(m, _)| matches!(m, InputType(t) if t == ty))
                    && !self.has_input_field(ty, key)
                {
                    errors.push(Rejection {
                        message: format!(
                            "Variable \"${var}\" got invalid value {}; Field \"{key}\" is not \
                             defined by type \"{ty}\".",
                            inspect(&variables[var])
                        ),
                        code: "BAD_USER_INPUT",
                    });
                }
            }
        }
        errors
    }
}

/// `6.8.10` → (6, 8, 10); missing parts are 0; no leading number → the newest release.
fn release(version: &str) -> Release {
    let mut parts = version.trim().split(['.', '-', '+']).map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    });
    match parts.next().flatten() {
        None => (u32::MAX, u32::MAX, u32::MAX),
        Some(major) => (
            major,
            parts.next().flatten().unwrap_or(0),
            parts.next().flatten().unwrap_or(0),
        ),
    }
}

/// `($id: ID!, $state: String)` of the operation header → [("id", "ID"), ("state", "String")]
/// (list and non-null wrappers removed).
fn variable_definitions(query: &str) -> Vec<(String, String)> {
    let header = query.split('{').next().unwrap_or("");
    let Some(inner) = header.split_once('(').and_then(|(_, r)| r.split_once(')')) else {
        return Vec::new();
    };
    inner
        .0
        .split(',')
        .filter_map(|def| {
            let (name, ty) = def.split_once(':')?;
            let name = name.trim().trim_start_matches('$').to_owned();
            let ty = ty.trim().trim_matches(['[', ']', '!', ' ']).to_owned();
            (!name.is_empty()).then_some((name, ty))
        })
        .collect()
}

/// The argument names of the first `field(...)` in the selection.
fn arguments(query: &str, field: &str) -> Vec<String> {
    let Some((_, body)) = query.split_once('{') else {
        return Vec::new();
    };
    let Some(at) = body.find(&format!("{field}(")) else {
        return Vec::new();
    };
    let after = &body[at + field.len() + 1..];
    let inner = after.split(')').next().unwrap_or("");
    inner
        .split(',')
        .filter_map(|a| a.split_once(':').map(|(n, _)| n.trim().to_owned()))
        .filter(|n| !n.is_empty())
        .collect()
}

/// A value as graphql-js `inspect` prints it in error messages: `{ id: "c1", scope: ["x"] }`.
fn inspect(v: &Value) -> String {
    match v {
        Value::Object(o) if o.is_empty() => "{}".to_owned(),
        Value::Object(o) => {
            let fields: Vec<String> = o
                .iter()
                .map(|(k, v)| format!("{k}: {}", inspect(v)))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(inspect).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Number(n) => {
            let s = n.to_string();
            s.strip_suffix(".0").map_or(s.clone(), str::to_owned)
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PING_INFO: &str = "mutation PingConnector($id: ID!, $state: String, $connectorInfo: ConnectorInfoInput) { pingConnector(id: $id, state: $state, connectorInfo: $connectorInfo) { id connector_state } }";
    const REGISTER: &str = "mutation RegisterConnector($input: RegisterConnectorInput) { registerConnector(input: $input) { id connector_state } }";

    fn messages(r: &[Rejection]) -> Vec<(&str, &str)> {
        r.iter().map(|r| (r.message.as_str(), r.code)).collect()
    }

    #[test]
    fn releases_parse_and_order() {
        assert_eq!(release("6.8.10"), (6, 8, 10));
        assert_eq!(release("7.260817.0-rc1"), (7, 260817, 0));
        assert!(release("7.250101.1") > release("6.99.99"));
        assert_eq!(release("dev"), (u32::MAX, u32::MAX, u32::MAX));
    }

    #[test]
    fn ping_document_with_connector_info_fails_validation_before_6_2_12() {
        let vars = json!({"id": "c1", "state": "null", "connectorInfo": {"buffering": false}});
        let old = Schema::new("6.2.11", &[]);
        assert_eq!(
            messages(&old.reject(PING_INFO, "pingConnector", &vars)),
            [
                (
                    "Unknown type \"ConnectorInfoInput\".",
                    "GRAPHQL_VALIDATION_FAILED"
                ),
                (
                    "Unknown argument \"connectorInfo\" on field \"Mutation.pingConnector\".",
                    "GRAPHQL_VALIDATION_FAILED"
                ),
            ]
        );
        assert!(
            Schema::new("6.2.12", &[])
                .reject(PING_INFO, "pingConnector", &vars)
                .is_empty()
        );
    }

    #[test]
    fn register_input_fields_are_coerced_against_the_release() {
        let input = json!({"id": "c1", "name": "HL", "type": "STREAM", "scope": ["x"],
            "listen_callback_uri": null, "auto_update": false});
        let vars = json!({ "input": input });
        let r = Schema::new("6.5.0", &[]).reject(REGISTER, "registerConnector", &vars);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(
            r[0].message,
            "Variable \"$input\" got invalid value { auto_update: false, id: \"c1\", \
             listen_callback_uri: null, name: \"HL\", scope: [\"x\"], type: \"STREAM\" }; Field \
             \"auto_update\" is not defined by type \"RegisterConnectorInput\"."
        );
        assert!(r.iter().all(|r| r.code == "BAD_USER_INPUT"));
        assert!(r[1].message.contains("Field \"listen_callback_uri\""));
        let r = Schema::new("6.8.9", &[]).reject(REGISTER, "registerConnector", &vars);
        assert!(r.is_empty(), "{r:?}");
        // A name the release has but this platform lacks anyway.
        let r = Schema::new("6.8.9", &["auto_update".into()]).reject(
            REGISTER,
            "registerConnector",
            &vars,
        );
        assert_eq!(r.len(), 1);
        assert!(r[0].message.contains("Field \"auto_update\""));
    }
}
