//! The CRD: the committed YAML matches the Rust types, and what kubectl
//! shows. Every admission rule is proven on a real API server by
//! `tests/admission.rs`; the one client-side check left here is what a
//! server cannot do quickly: the setWeight rule (CEL, evaluated by kube's
//! client-side interpreter) agrees with the operator's own validation on
//! thousands of random step lists.

use std::sync::OnceLock;

use kube::CustomResourceExt;
use proptest::prelude::*;
use rollwise::api::Rollout;
use serde_json::{Value, json};

/// The schema of `spec.steps` alone (the setWeight rule and the rules of
/// each step), compiled once.
fn steps_schema() -> &'static kube::core::cel::CompiledSchema {
    static COMPILED: OnceLock<kube::core::cel::CompiledSchema> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let crd = serde_json::to_value(Rollout::crd()).unwrap();
        kube::core::cel::compile_schema(
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
                ["properties"]["steps"],
        )
    })
}

const NON_DECREASING: &str = "setWeight steps must not decrease";

/// A step: a weight from a small set (so that weights repeat), a pause, or a
/// header route.
fn step() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(vec![0, 5, 20, 50, 51, 100]).prop_map(|w| json!({"setWeight": w})),
        1 => Just(json!({"pause": {"duration": "1m"}})),
        1 => Just(json!({"setHeaderRoute": {"name": "beta", "match": [{"header": {"name": "x-beta", "value": "1"}}]}})),
    ]
}

#[test]
fn committed_crd_matches_the_rust_types() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/rollout.yaml")).unwrap();
    assert!(
        committed == rollwise::api::crd_yaml(),
        "crds/rollout.yaml is stale: regenerate it with `cargo run -- crd > crds/rollout.yaml`"
    );
}

#[test]
fn printer_columns_and_short_name_are_what_kubectl_shows() {
    let crd = Rollout::crd();
    assert_eq!(
        crd.spec.names.short_names,
        Some(vec!["rw".to_string()]),
        "must not clash with Argo's `ro`"
    );
    let cols: Vec<String> = crd.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(
        cols,
        [
            "Phase",
            "Step",
            "Weight",
            "Verdict",
            "Message",
            "Waiting-For",
            "Age"
        ]
    );
    assert!(
        crd.spec.versions[0]
            .subresources
            .as_ref()
            .unwrap()
            .status
            .is_some()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The CEL rule rejects exactly the step lists in which the operator
    /// finds a setWeight lower than an earlier one.
    #[test]
    fn the_set_weight_rule_agrees_with_the_operator(steps in prop::collection::vec(step(), 1..=64)) {
        let cel_rejects = match kube::core::cel::validate_compiled(steps_schema(), &json!(steps), None) {
            Ok(()) => false,
            Err(errors) => {
                let messages: Vec<String> = errors.into_vec().into_iter().map(|e| e.message).collect();
                prop_assert!(
                    messages.iter().all(|m| m.contains(NON_DECREASING)),
                    "unexpected errors: {messages:?}"
                );
                true
            }
        };
        let mut spec = serde_json::to_value(rollwise::api::RolloutSpec::default()).unwrap();
        spec["stable"] = json!({"service": "checkout-v1"});
        spec["canary"] = json!({"service": "checkout-v2"});
        spec["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "checkout"}});
        spec["steps"] = json!(steps);
        let spec: rollwise::api::RolloutSpec = serde_json::from_value(spec).unwrap();
        let operator_rejects = match rollwise::plan::validate(&spec) {
            Ok(_) => false,
            Err(errors) => {
                prop_assert!(
                    errors.iter().all(|e| e.field.ends_with(".setWeight") && e.message.contains("lower than")),
                    "unexpected errors: {errors:?}"
                );
                true
            }
        };
        prop_assert_eq!(cel_rejects, operator_rejects, "steps: {}", json!(steps));
    }
}

/// What `kubectl explain rollout.spec.steps` says a step is names every
/// kind of step the schema (and its CEL rule) accepts.
#[test]
fn the_step_description_names_every_kind_of_step() {
    let crd = serde_json::to_value(Rollout::crd()).expect("the CRD serializes");
    let step = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["steps"]["items"];
    let description = step["description"].as_str().unwrap_or_default();
    let kinds: Vec<&String> = step["properties"]
        .as_object()
        .expect("a step has properties")
        .keys()
        .collect();
    assert!(kinds.len() >= 3, "{kinds:?}");
    for kind in kinds {
        assert!(
            description.contains(&format!("`{kind}`")),
            "the step description {description:?} does not name {kind}"
        );
    }
}
