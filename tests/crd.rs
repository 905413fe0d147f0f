//! The CRD: committed YAML matches the Rust types, and the admission rules
//! (CEL + schema) accept good Rollouts and reject bad ones with the message a
//! user would see from `kubectl apply`.

use kube::CustomResourceExt;
use rollwise::api::Rollout;
use serde_json::{Value, json};

fn schema() -> Value {
    let crd = Rollout::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

fn example_rollout() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/gateway-api/checkout.yaml"
    ))
    .unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter()
        .find(|d| d["kind"] == "Rollout")
        .expect("the example has a Rollout")
}

fn errors(obj: &Value) -> Vec<String> {
    match kube::core::cel::Validator::new().validate(&schema(), obj, None) {
        Ok(()) => vec![],
        Err(e) => e.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

fn with(mutate: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut obj = example_rollout();
    mutate(&mut obj);
    errors(&obj)
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
fn the_example_rollout_passes_admission_and_deserializes() {
    let obj = example_rollout();
    assert_eq!(errors(&obj), Vec::<String>::new());
    let r: Rollout = serde_json::from_value(obj).unwrap();
    assert!(rollwise::api::validate(&r.spec).is_ok());
}

#[test]
fn decreasing_weights_are_rejected_at_admission() {
    let e = with(|o| o["spec"]["steps"] = json!([{"setWeight": 50}, {"setWeight": 20}]));
    assert!(e.iter().any(|m| m.contains("must not decrease")), "{e:?}");
}

#[test]
fn a_step_with_both_kinds_is_rejected() {
    let e = with(|o| o["spec"]["steps"] = json!([{"setWeight": 5, "pause": {}}]));
    assert!(
        e.iter()
            .any(|m| m.contains("exactly one of setWeight, pause or setHeaderRoute")),
        "{e:?}"
    );
}

#[test]
fn weights_outside_0_100_are_rejected() {
    let e = with(|o| o["spec"]["steps"] = json!([{"setWeight": 150}]));
    assert!(e.iter().any(|m| m.contains("between 0 and 100")), "{e:?}");
}

#[test]
fn bad_durations_are_rejected() {
    let e = with(|o| o["spec"]["steps"] = json!([{"pause": {"duration": "2 minutes"}}]));
    assert!(
        e.iter().any(|m| m.contains("duration must look like")),
        "{e:?}"
    );
    let e = with(|o| o["spec"]["analysis"]["interval"] = json!("soon"));
    assert!(
        e.iter().any(|m| m.contains("interval must look like")),
        "{e:?}"
    );
    assert!(with(|o| o["spec"]["steps"] = json!([{"pause": {"duration": "1h30m"}}])).is_empty());
}

#[test]
fn same_service_for_stable_and_canary_is_rejected() {
    let e = with(|o| o["spec"]["canary"]["service"] = json!("checkout-v1"));
    assert!(e.iter().any(|m| m.contains("must differ")), "{e:?}");
}

#[test]
fn a_metric_needs_a_bound() {
    let e = with(|o| {
        o["spec"]["analysis"]["metrics"][0]
            .as_object_mut()
            .unwrap()
            .remove("max");
    });
    assert!(e.iter().any(|m| m.contains("needs max or min")), "{e:?}");
}

#[test]
fn exactly_one_router_is_required() {
    let e = with(|o| o["spec"]["trafficRouting"] = json!({}));
    assert!(
        e.iter().any(|m| m.contains("exactly one traffic router")),
        "{e:?}"
    );
}

#[test]
fn service_names_must_be_dns_labels() {
    let e = with(|o| o["spec"]["stable"]["service"] = json!("Checkout_V1"));
    assert!(e.iter().any(|m| m.contains("DNS-1035")), "{e:?}");
}

#[test]
fn duplicate_metric_names_are_rejected() {
    let e = with(|o| {
        let m = o["spec"]["analysis"]["metrics"][0].clone();
        o["spec"]["analysis"]["metrics"]
            .as_array_mut()
            .unwrap()
            .push(m);
    });
    assert!(e.iter().any(|m| m.contains("unique")), "{e:?}");
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
        ["Phase", "Step", "Weight", "Verdict", "Message", "Age"]
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

#[test]
fn tolerance_accepts_a_rate_or_a_percentage_only() {
    let compare = |t: Value| {
        with(|o| {
            o["spec"]["analysis"]["compare"] = json!([{
                "name": "errors",
                "requests": "sum(increase(r{service=\"{{service}}\"}[{{window}}]))",
                "failures": "sum(increase(f{service=\"{{service}}\"}[{{window}}]))",
                "tolerance": t
            }]);
        })
    };
    assert_eq!(compare(json!(0.005)), Vec::<String>::new());
    assert_eq!(compare(json!("20%")), Vec::<String>::new());
    // A bad tolerance passes admission (untyped field) but the operator
    // names it in the Ready condition.
    let mut obj = example_rollout();
    obj["spec"]["analysis"]["compare"] = json!([{
        "name": "errors",
        "requests": "sum(increase(r{service=\"{{service}}\"}[{{window}}]))",
        "failures": "sum(increase(f{service=\"{{service}}\"}[{{window}}]))",
        "tolerance": "fast"
    }]);
    let r: Rollout = serde_json::from_value(obj).unwrap();
    let e = rollwise::api::validate(&r.spec).unwrap_err();
    assert_eq!(e[0].field, "spec.analysis.compare[0].tolerance", "{e:?}");
}

#[test]
fn header_route_steps_and_routers_are_checked_at_admission() {
    let e = with(
        |o| o["spec"]["steps"] = json!([{"setHeaderRoute": {"name": "beta", "match": [{"header": {"name": "x", "value": "1"}, "cookie": {"name": "c", "value": "1"}}]}}]),
    );
    assert!(
        e.iter().any(|m| m.contains("either a header or a cookie")),
        "{e:?}"
    );
    let e = with(|o| {
        o["spec"]["trafficRouting"] =
            json!({"gatewayAPI": {"httpRoute": "a"}, "nginx": {"ingress": "b"}})
    });
    assert!(
        e.iter().any(|m| m.contains("exactly one traffic router")),
        "{e:?}"
    );
    let ok =
        with(|o| o["spec"]["trafficRouting"] = json!({"istio": {"virtualService": "checkout"}}));
    assert_eq!(ok, Vec::<String>::new());
}
