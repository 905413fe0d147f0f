//! Admission of Rollouts by a real Kubernetes API server (the realk8s kit of
//! `scripts/test.sh`, or the cluster of `ROLLWISE_E2E_KUBECONFIG`): what a
//! user meets at `kubectl apply` is proven there, not by a client-side
//! imitation of it.
//!
//! - Every CEL rule (`x-kubernetes-validations`) of `crds/rollout.yaml` has
//!   rows in [`cel_rules`]: an edit of the baseline Rollout the server
//!   accepts and one it rejects, with the exact error the user sees
//!   (`spec.steps: Invalid value: "array": setWeight steps must not
//!   decrease`). [`every_cel_rule_of_the_crd_has_a_row`] fails when the CRD
//!   holds a rule (by its place and message, or its text when it has no
//!   message) that no row covers, or a row names a rule the CRD no longer has.
//! - The schema's limits that users hit ([`structural_limits`]): maxItems,
//!   maxLength, required fields, types, and unknown fields, which the server
//!   refuses with `fieldValidation=Strict` as `kubectl apply` asks by default.
//! - The setWeight rule in depth, and the largest objects the schema allows
//!   (64 steps with the longest header routes, 16 metrics, 8 comparisons):
//!   accepted, or rejected for the right reason, never "cost limit exceeded".
//! - The CRD itself (`crds/` and the chart's copy) applies to the server with
//!   every rule kept; every Rollout of `examples/` is admitted.
//!
//! The baseline is the README's example (`examples/gateway-api/checkout.yaml`),
//! so the example is proven admissible too. Every request is a server-side
//! dry run (`dryRun=All`): nothing is stored. Without a cluster the cluster
//! tests print one `SKIPPED` line and pass; the coverage test always runs.
//!
//! ```text
//! ROLLWISE_E2E_KUBECONFIG=/tmp/k8s/main/kubeconfig cargo test --test admission
//! ```

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use common::cluster::{Cluster, FIELD_MANAGER, ROLLOUT_CRD_FILE, TestNs, in_namespace};
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use rollwise::api::Rollout;
use serde_json::{Value, json};

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/gateway-api/checkout.yaml"
);
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
const CHART_CRD_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/rollwise/crds/rollout.yaml"
);
/// How long after a change of the CRD the tests wait before they judge the
/// server by it.
const CRD_SETTLE: std::time::Duration = std::time::Duration::from_secs(5);
/// How many dry runs are in flight at once.
const PARALLEL: usize = 8;

// ---------------------------------------------------------------------------
// The baseline and edits of it
// ---------------------------------------------------------------------------

/// An edit of the baseline Rollout.
type Edit = fn(&mut Value);

/// The README's example Rollout (`examples/gateway-api/checkout.yaml`).
fn baseline() -> Value {
    let text =
        std::fs::read_to_string(EXAMPLE).unwrap_or_else(|e| panic!("cannot read {EXAMPLE}: {e}"));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{EXAMPLE} is not valid YAML: {e}"));
    docs.into_iter()
        .find(|d| d["kind"] == "Rollout")
        .unwrap_or_else(|| panic!("{EXAMPLE} holds no Rollout"))
}

fn spec(o: &mut Value) -> &mut Value {
    &mut o["spec"]
}

fn analysis(o: &mut Value) -> &mut Value {
    &mut o["spec"]["analysis"]
}

/// The baseline's first metric in query form (the example's is counted):
/// the rows of the query form's rules edit this one.
fn metric0(o: &mut Value) -> &mut Value {
    let m = &mut o["spec"]["analysis"]["metrics"][0];
    if m.get("requests").is_some() {
        *m = json!({
            "name": "error-rate",
            "query": "sum(rate(http_requests_total{service=\"{{service}}\",code=~\"5..\"}[1m])) / sum(rate(http_requests_total{service=\"{{service}}\"}[1m]))",
            "max": 0.05,
            "failureLimit": 2,
        });
    }
    m
}

/// The baseline's first metric as the example has it: counted.
fn counted0(o: &mut Value) -> &mut Value {
    let m = &mut o["spec"]["analysis"]["metrics"][0];
    assert!(
        m.get("requests").is_some(),
        "the example's first metric is counted: {m}"
    );
    m
}

fn remove(v: &mut Value, key: &str) {
    match v.as_object_mut() {
        Some(map) => map.remove(key),
        None => panic!("not an object: {v}"),
    };
}

/// A canary-vs-stable comparison that passes every rule.
fn comparison(name: &str) -> Value {
    json!({
        "name": name,
        "requests": "sum(increase(http_requests_total{service=\"{{service}}\"}[{{window}}]))",
        "failures": "sum(increase(http_requests_total{service=\"{{service}}\",code=~\"5..\"}[{{window}}]))",
        "tolerance": 0.005
    })
}

fn with_comparisons(o: &mut Value, names: &[&str]) {
    o["spec"]["analysis"]["compare"] = names.iter().map(|n| comparison(n)).collect();
}

/// Blue/green instead of steps (the operator refuses both together).
fn blue_green(o: &mut Value, blue_green: Value) {
    remove(spec(o), "steps");
    o["spec"]["blueGreen"] = blue_green;
}

fn header_route_step(name: &str, matches: Value) -> Value {
    json!({"setHeaderRoute": {"name": name, "match": matches}})
}

fn webhook(format: &str) -> Value {
    json!([{"name": "team", "urlFrom": {"name": "hooks", "key": "url"}, "format": format}])
}

// ---------------------------------------------------------------------------
// The CEL rules
// ---------------------------------------------------------------------------

/// The line the server adds when a schema error kept the CEL rules from
/// running.
const NOT_CHECKED: &str = r#"<nil>: Invalid value: "null": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"#;

/// One row for a CEL rule of the CRD: an edit the API server accepts, one
/// it rejects, and what it says about the rejected one.
struct CelCase {
    /// Where the rule sits in the schema, e.g. `spec.steps[].pause.duration`.
    at: &'static str,
    /// The rule's message (its text when it has none).
    message: &'static str,
    accept: Edit,
    reject: Edit,
    /// Field and type the server names before the message, e.g.
    /// `spec.steps[1]: Invalid value: "object"`.
    shown: &'static str,
    /// The accepted object is also valid for the operator, unless this says
    /// which field the operator refuses (a rule that only CEL cannot check).
    operator_refuses: Option<&'static str>,
}

impl CelCase {
    fn expected(&self) -> String {
        format!("{}: {}", self.shown, self.message)
    }
}

fn rule(
    at: &'static str,
    message: &'static str,
    shown: &'static str,
    accept: Edit,
    reject: Edit,
) -> CelCase {
    CelCase {
        at,
        message,
        accept,
        reject,
        shown,
        operator_refuses: None,
    }
}

const STEPS_NON_DECREASING: &str = "setWeight steps must not decrease";
const STEP_KIND: &str = "a step sets exactly one of setWeight, pause or setHeaderRoute (a pause until promoted is `pause: {}`)";
const SERVICE_NAME: &str = "must be a Service name: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit (a DNS-1035 label)";
const DEPLOYMENT_NAME: &str = "must be a Deployment name: dot-separated parts of lowercase letters, digits and '-', each starting and ending with a letter or digit (a DNS-1123 subdomain)";
const ROUTE_NAME: &str = "route name must be lowercase letters, digits and '-', starting with a letter and ending with a letter or digit (a DNS-1035 label)";
const MATCH_KIND: &str = "a match is either a header or a cookie";
const ONE_ROUTER: &str =
    "exactly one traffic router must be set (gatewayAPI, nginx, istio, smi, traefik or replicas)";
const SCALE_DOWN_AFTER: &str = "scaleDownAfter must look like 30s, 10m or 1h";

/// Every CEL rule of the CRD, with at least one row each.
fn cel_rules() -> Vec<CelCase> {
    vec![
        // spec
        rule(
            "spec",
            "spec.stable.service and spec.canary.service must differ",
            r#"spec.canary.service: Invalid value: "object""#,
            |o| o["spec"]["canary"]["service"] = json!("checkout-v3"),
            |o| o["spec"]["canary"]["service"] = json!("checkout-v1"),
        ),
        rule(
            "spec.pauseDeadline",
            "pauseDeadline must look like 30s, 10m or 1h",
            r#"spec.pauseDeadline: Invalid value: "string""#,
            |o| o["spec"]["pauseDeadline"] = json!("2h"),
            |o| o["spec"]["pauseDeadline"] = json!("2 hours"),
        ),
        // spec.stable / spec.canary
        rule(
            "spec.stable.service",
            SERVICE_NAME,
            r#"spec.stable.service: Invalid value: "string""#,
            |o| o["spec"]["stable"]["service"] = json!("checkout-1"),
            |o| o["spec"]["stable"]["service"] = json!("Checkout_V1"),
        ),
        rule(
            "spec.canary.service",
            SERVICE_NAME,
            r#"spec.canary.service: Invalid value: "string""#,
            |o| o["spec"]["canary"]["service"] = json!("c"),
            // A Service name starts with a letter (the operator says so too).
            |o| o["spec"]["canary"]["service"] = json!("2checkout"),
        ),
        rule(
            "spec.stable.deployment",
            DEPLOYMENT_NAME,
            r#"spec.stable.deployment: Invalid value: "string""#,
            |o| o["spec"]["stable"]["deployment"] = json!("checkout.v1"),
            |o| o["spec"]["stable"]["deployment"] = json!("-checkout-v1"),
        ),
        rule(
            "spec.canary.deployment",
            DEPLOYMENT_NAME,
            r#"spec.canary.deployment: Invalid value: "string""#,
            |o| o["spec"]["canary"]["deployment"] = json!("2.checkout-v2"),
            |o| o["spec"]["canary"]["deployment"] = json!("checkout..v2"),
        ),
        rule(
            "spec.stable.scaleDownAfter",
            SCALE_DOWN_AFTER,
            r#"spec.stable.scaleDownAfter: Invalid value: "string""#,
            |o| o["spec"]["stable"]["scaleDownAfter"] = json!("1h30m"),
            |o| o["spec"]["stable"]["scaleDownAfter"] = json!("30 minutes"),
        ),
        CelCase {
            operator_refuses: Some("spec.canary.scaleDownAfter"),
            ..rule(
                "spec.canary.scaleDownAfter",
                SCALE_DOWN_AFTER,
                r#"spec.canary.scaleDownAfter: Invalid value: "string""#,
                |o| o["spec"]["canary"]["scaleDownAfter"] = json!("10m"),
                |o| o["spec"]["canary"]["scaleDownAfter"] = json!("10"),
            )
        },
        // spec.trafficRouting
        rule(
            "spec.trafficRouting",
            ONE_ROUTER,
            r#"spec.trafficRouting: Invalid value: "object""#,
            |o| o["spec"]["trafficRouting"] = json!({"istio": {"virtualService": "checkout"}}),
            |o| {
                o["spec"]["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "checkout"}, "nginx": {"ingress": "checkout"}})
            },
        ),
        rule(
            "spec.trafficRouting",
            ONE_ROUTER,
            r#"spec.trafficRouting: Invalid value: "object""#,
            |o| o["spec"]["trafficRouting"] = json!({"replicas": {}}),
            |o| o["spec"]["trafficRouting"] = json!({}),
        ),
        rule(
            "spec.trafficRouting.gatewayAPI.httpRoute",
            "must be an HTTPRoute name",
            r#"spec.trafficRouting.gatewayAPI.httpRoute: Invalid value: "string""#,
            |o| o["spec"]["trafficRouting"]["gatewayAPI"]["httpRoute"] = json!("r"),
            |o| o["spec"]["trafficRouting"]["gatewayAPI"]["httpRoute"] = json!(""),
        ),
        // spec.steps
        rule(
            "spec.steps",
            STEPS_NON_DECREASING,
            r#"spec.steps: Invalid value: "array""#,
            |o| {
                o["spec"]["steps"] =
                    json!([{"setWeight": 5}, {"pause": {}}, {"setWeight": 5}, {"setWeight": 100}])
            },
            |o| {
                o["spec"]["steps"] =
                    json!([{"setWeight": 50}, {"pause": {"duration": "1m"}}, {"setWeight": 20}])
            },
        ),
        rule(
            "spec.steps[]",
            STEP_KIND,
            r#"spec.steps[1]: Invalid value: "object""#,
            |o| o["spec"]["steps"] = json!([{"setWeight": 5}, {"pause": {}}]),
            |o| o["spec"]["steps"] = json!([{"setWeight": 5}, {"setWeight": 10, "pause": {}}]),
        ),
        rule(
            "spec.steps[]",
            STEP_KIND,
            r#"spec.steps[1]: Invalid value: "object""#,
            |o| o["spec"]["steps"] = json!([{"setWeight": 5}, {"pause": {}}]),
            // `- pause:` in YAML is a null pause: no step at all.
            |o| o["spec"]["steps"] = json!([{"setWeight": 5}, {"pause": null}]),
        ),
        rule(
            "spec.steps[].setWeight",
            "setWeight must be between 0 and 100",
            r#"spec.steps[1].setWeight: Invalid value: "integer""#,
            |o| o["spec"]["steps"] = json!([{"setWeight": 0}, {"setWeight": 100}]),
            |o| o["spec"]["steps"] = json!([{"setWeight": 0}, {"setWeight": 101}]),
        ),
        rule(
            "spec.steps[].setWeight",
            "setWeight must be between 0 and 100",
            r#"spec.steps[0].setWeight: Invalid value: "integer""#,
            |o| o["spec"]["steps"] = json!([{"setWeight": 0}]),
            |o| o["spec"]["steps"] = json!([{"setWeight": -1}]),
        ),
        rule(
            "spec.steps[].pause.duration",
            "duration must look like 30s, 2m or 1h30m",
            r#"spec.steps[1].pause.duration: Invalid value: "string""#,
            |o| o["spec"]["steps"] = json!([{"setWeight": 5}, {"pause": {"duration": "1.5h"}}]),
            |o| {
                o["spec"]["steps"] = json!([{"setWeight": 5}, {"pause": {"duration": "2 minutes"}}])
            },
        ),
        rule(
            "spec.steps[].setHeaderRoute.name",
            ROUTE_NAME,
            r#"spec.steps[0].setHeaderRoute.name: Invalid value: "string""#,
            |o| {
                o["spec"]["steps"][0] = header_route_step(
                    "beta-2",
                    json!([{"header": {"name": "x-beta", "value": "1"}}]),
                )
            },
            |o| {
                o["spec"]["steps"][0] = header_route_step(
                    "2beta",
                    json!([{"header": {"name": "x-beta", "value": "1"}}]),
                )
            },
        ),
        rule(
            "spec.steps[].setHeaderRoute.match[]",
            MATCH_KIND,
            r#"spec.steps[0].setHeaderRoute.match[1]: Invalid value: "object""#,
            |o| {
                o["spec"]["steps"][0] = header_route_step(
                    "beta",
                    json!([{"header": {"name": "x-beta", "value": "1"}}, {"header": {"name": "x-team", "value": "a"}}]),
                )
            },
            |o| {
                o["spec"]["steps"][0] = header_route_step(
                    "beta",
                    json!([{"header": {"name": "x-beta", "value": "1"}}, {"header": {"name": "x", "value": "1"}, "cookie": {"name": "beta", "value": "yes"}}]),
                )
            },
        ),
        rule(
            "spec.steps[].setHeaderRoute.match[]",
            MATCH_KIND,
            r#"spec.steps[0].setHeaderRoute.match[0]: Invalid value: "object""#,
            // No match at all removes the route.
            |o| o["spec"]["steps"][0] = json!({"setHeaderRoute": {"name": "beta"}}),
            |o| o["spec"]["steps"][0] = header_route_step("beta", json!([{}])),
        ),
        // spec.blueGreen
        rule(
            "spec.blueGreen.previewDuration",
            "previewDuration must look like 30s, 10m or 1h",
            r#"spec.blueGreen.previewDuration: Invalid value: "string""#,
            |o| blue_green(o, json!({"previewDuration": "90s"})),
            |o| blue_green(o, json!({"previewDuration": "1 minute"})),
        ),
        rule(
            "spec.blueGreen.scaleDownDelay",
            "scaleDownDelay must look like 30s, 10m or 1h",
            r#"spec.blueGreen.scaleDownDelay: Invalid value: "string""#,
            |o| blue_green(o, json!({"scaleDownDelay": "0s"})),
            |o| blue_green(o, json!({"scaleDownDelay": "30"})),
        ),
        rule(
            "spec.blueGreen.previewRoute.name",
            ROUTE_NAME,
            r#"spec.blueGreen.previewRoute.name: Invalid value: "string""#,
            |o| blue_green(o, json!({"previewRoute": {"name": "preview"}})),
            |o| blue_green(o, json!({"previewRoute": {"name": "Preview"}})),
        ),
        rule(
            "spec.blueGreen.previewRoute.match[]",
            MATCH_KIND,
            r#"spec.blueGreen.previewRoute.match[0]: Invalid value: "object""#,
            |o| {
                blue_green(
                    o,
                    json!({"previewRoute": {"name": "preview", "match": [{"header": {"name": "x-preview", "value": "1"}}]}}),
                )
            },
            |o| {
                blue_green(
                    o,
                    json!({"previewRoute": {"name": "preview", "match": [{"cookie": {"name": "preview", "value": "1"}, "header": {"name": "x-preview", "value": "1"}}]}}),
                )
            },
        ),
        // spec.analysis
        rule(
            "spec.analysis.interval",
            "interval must be a duration of at least 1s, like 30s, 2m or 1h30m",
            r#"spec.analysis.interval: Invalid value: "string""#,
            |o| analysis(o)["interval"] = json!("1s"),
            |o| analysis(o)["interval"] = json!("soon"),
        ),
        rule(
            "spec.analysis.interval",
            "interval must be a duration of at least 1s, like 30s, 2m or 1h30m",
            r#"spec.analysis.interval: Invalid value: "string""#,
            |o| analysis(o)["interval"] = json!("1m0.5s"),
            // The operator refuses intervals below 1s: so does admission.
            |o| analysis(o)["interval"] = json!("500ms"),
        ),
        rule(
            "spec.analysis.prometheus.address",
            "address must be an http:// or https:// URL",
            r#"spec.analysis.prometheus.address: Invalid value: "string""#,
            |o| analysis(o)["prometheus"]["address"] = json!("https://prometheus.example:9090"),
            |o| analysis(o)["prometheus"]["address"] = json!("prometheus.monitoring:9090"),
        ),
        rule(
            "spec.analysis.consecutiveErrorLimit",
            "consecutiveErrorLimit must be between 1 and 1000",
            r#"spec.analysis.consecutiveErrorLimit: Invalid value: "integer""#,
            |o| analysis(o)["consecutiveErrorLimit"] = json!(1),
            |o| analysis(o)["consecutiveErrorLimit"] = json!(0),
        ),
        rule(
            "spec.analysis.confidence",
            "confidence must be in [0.5, 1)",
            r#"spec.analysis.confidence: Invalid value: "number""#,
            |o| analysis(o)["confidence"] = json!(0.5),
            |o| analysis(o)["confidence"] = json!(1.0),
        ),
        rule(
            "spec.analysis.rollbackConfidence",
            "rollbackConfidence must be in [0.5, 1)",
            r#"spec.analysis.rollbackConfidence: Invalid value: "number""#,
            |o| analysis(o)["rollbackConfidence"] = json!(0.95),
            |o| analysis(o)["rollbackConfidence"] = json!(1.0),
        ),
        rule(
            "spec.analysis.maxExtraFailures",
            "maxExtraFailures must be at least 1",
            r#"spec.analysis.maxExtraFailures: Invalid value: "integer""#,
            |o| analysis(o)["maxExtraFailures"] = json!(1),
            |o| analysis(o)["maxExtraFailures"] = json!(0),
        ),
        rule(
            "spec.analysis.metrics",
            "metric names must be unique",
            r#"spec.analysis.metrics: Invalid value: "array""#,
            |o| {
                let mut m = metric0(o).clone();
                m["name"] = json!("latency");
                analysis(o)["metrics"].as_array_mut().unwrap().push(m);
            },
            |o| {
                let m = metric0(o).clone();
                analysis(o)["metrics"].as_array_mut().unwrap().push(m);
            },
        ),
        rule(
            "spec.analysis.metrics[]",
            "a metric needs max or min",
            r#"spec.analysis.metrics[0]: Invalid value: "object""#,
            |o| {
                remove(metric0(o), "max");
                metric0(o)["min"] = json!(0.5);
            },
            |o| remove(metric0(o), "max"),
        ),
        rule(
            "spec.analysis.metrics[]",
            "min must not exceed max",
            r#"spec.analysis.metrics[0]: Invalid value: "object""#,
            |o| {
                metric0(o)["max"] = json!(0.02);
                metric0(o)["min"] = json!(0.02);
            },
            |o| {
                metric0(o)["max"] = json!(0.01);
                metric0(o)["min"] = json!(0.02);
            },
        ),
        rule(
            "spec.analysis.metrics[].name",
            "metric name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            r#"spec.analysis.metrics[0].name: Invalid value: "string""#,
            |o| metric0(o)["name"] = json!("Error_rate.5xx"),
            |o| metric0(o)["name"] = json!("error rate"),
        ),
        rule(
            "spec.analysis.metrics[].query",
            "query must not be empty",
            r#"spec.analysis.metrics[0].query: Invalid value: "string""#,
            |o| metric0(o)["query"] = json!("up"),
            |o| metric0(o)["query"] = json!(""),
        ),
        rule(
            "spec.analysis.metrics[].query",
            "query must not be empty",
            r#"spec.analysis.metrics[0].query: Invalid value: "string""#,
            |o| metric0(o)["query"] = json!(" up\n"),
            // Blank is empty for the operator: so for admission.
            |o| metric0(o)["query"] = json!(" \n\t"),
        ),
        rule(
            "spec.analysis.metrics[]",
            "a metric has either query, or requests and failures",
            r#"spec.analysis.metrics[0]: Invalid value: "object""#,
            |o| {
                counted0(o);
            },
            |o| counted0(o)["query"] = json!("up"),
        ),
        rule(
            "spec.analysis.metrics[]",
            "requests and failures go together",
            r#"spec.analysis.metrics[0]: Invalid value: "object""#,
            |o| counted0(o)["failures"] = json!("sum(increase(errors_total[{{window}}]))"),
            |o| remove(counted0(o), "failures"),
        ),
        rule(
            "spec.analysis.metrics[]",
            "a counted metric (requests and failures) needs max, an error rate in [0, 1), and no min",
            r#"spec.analysis.metrics[0]: Invalid value: "object""#,
            |o| counted0(o)["max"] = json!(0),
            |o| counted0(o)["max"] = json!(1.5),
        ),
        rule(
            "spec.analysis.metrics[]",
            "failureLimit does not apply to a counted metric: its evidence decides",
            r#"spec.analysis.metrics[0]: Invalid value: "object""#,
            |o| counted0(o)["max"] = json!(0.01),
            |o| counted0(o)["failureLimit"] = json!(1),
        ),
        rule(
            "spec.analysis.metrics[].requests",
            "requests must not be empty",
            r#"spec.analysis.metrics[0].requests: Invalid value: "string""#,
            |o| counted0(o)["requests"] = json!("sum(increase(requests_total[{{window}}]))"),
            |o| counted0(o)["requests"] = json!(" "),
        ),
        rule(
            "spec.analysis.metrics[].failures",
            "failures must not be empty",
            r#"spec.analysis.metrics[0].failures: Invalid value: "string""#,
            |o| counted0(o)["failures"] = json!("sum(increase(errors_total[{{window}}]))"),
            |o| counted0(o)["failures"] = json!("\n"),
        ),
        rule(
            "spec.analysis.metrics[].failureLimit",
            "failureLimit must be between 0 and 1000",
            r#"spec.analysis.metrics[0].failureLimit: Invalid value: "integer""#,
            |o| metric0(o)["failureLimit"] = json!(1000),
            |o| metric0(o)["failureLimit"] = json!(-1),
        ),
        rule(
            "spec.analysis.compare",
            "compare names must be unique",
            r#"spec.analysis.compare: Invalid value: "array""#,
            |o| with_comparisons(o, &["errors", "errors-5xx"]),
            |o| with_comparisons(o, &["errors", "errors"]),
        ),
        rule(
            "spec.analysis.compare[].name",
            "compare name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            r#"spec.analysis.compare[0].name: Invalid value: "string""#,
            |o| with_comparisons(o, &["http_errors.v2"]),
            |o| with_comparisons(o, &["errors-"]),
        ),
        rule(
            "spec.analysis.compare[].requests",
            "the requests query must use {{service}} (it runs once for the canary and once for the stable Service)",
            r#"spec.analysis.compare[0].requests: Invalid value: "string""#,
            |o| {
                with_comparisons(o, &["errors"]);
                analysis(o)["compare"][0]["requests"] =
                    json!("sum(increase(requests{service=\"{{ service }}\"}[{{window}}]))");
            },
            |o| {
                with_comparisons(o, &["errors"]);
                analysis(o)["compare"][0]["requests"] =
                    json!("sum(increase(requests{service=\"checkout-v2\"}[{{window}}]))");
            },
        ),
        rule(
            "spec.analysis.compare[].failures",
            "the failures query must use {{service}} (it runs once for the canary and once for the stable Service)",
            r#"spec.analysis.compare[0].failures: Invalid value: "string""#,
            |o| {
                with_comparisons(o, &["errors"]);
                analysis(o)["compare"][0]["failures"] =
                    json!("sum(increase(failures{service=\"{{ service }}\"}[{{window}}]))");
            },
            |o| {
                with_comparisons(o, &["errors"]);
                analysis(o)["compare"][0]["failures"] =
                    json!("sum(increase(failures{service=\"{{service\"}[{{window}}]))");
            },
        ),
        // spec.dependsOn
        rule(
            "",
            "a Rollout cannot depend on itself (spec.dependsOn names this Rollout)",
            r#"spec.dependsOn: Invalid value: "object""#,
            // The same name in another namespace is another Rollout (the
            // rows' Rollout is named `admission`, see `edited`).
            |o| o["spec"]["dependsOn"] = json!([{"name": "admission", "namespace": "other"}]),
            |o| o["spec"]["dependsOn"] = json!([{"name": "payments"}, {"name": "admission"}]),
        ),
        rule(
            "spec.dependsOn",
            "each Rollout may appear only once per beforeStep in dependsOn",
            r#"spec.dependsOn: Invalid value: "array""#,
            |o| {
                o["spec"]["dependsOn"] = json!([
                    {"name": "payments", "minWeight": 50},
                    {"name": "payments", "beforeStep": 2},
                    {"name": "payments", "namespace": "other"}
                ])
            },
            |o| {
                o["spec"]["dependsOn"] = json!([
                    {"name": "payments", "minWeight": 50},
                    {"name": "payments", "beforeStep": 0}
                ])
            },
        ),
        rule(
            "spec.dependsOn[]",
            "set either phase or minWeight, not both (phase Succeeded already means 100%)",
            r#"spec.dependsOn[0]: Invalid value: "object""#,
            |o| o["spec"]["dependsOn"] = json!([{"name": "payments", "phase": "Succeeded"}]),
            |o| {
                o["spec"]["dependsOn"] =
                    json!([{"name": "payments", "phase": "Succeeded", "minWeight": 50}])
            },
        ),
        rule(
            "spec.dependsOn[].beforeStep",
            "beforeStep must be a step index (0-63)",
            r#"spec.dependsOn[0].beforeStep: Invalid value: "integer""#,
            |o| o["spec"]["dependsOn"] = json!([{"name": "payments", "beforeStep": 2}]),
            |o| o["spec"]["dependsOn"] = json!([{"name": "payments", "beforeStep": -1}]),
        ),
        rule(
            "spec.dependsOn[].canaryService",
            "canaryService must be a Service name (a DNS-1035 label)",
            r#"spec.dependsOn[0].canaryService: Invalid value: "string""#,
            |o| {
                o["spec"]["dependsOn"] =
                    json!([{"name": "payments", "canaryService": "payments-v2"}])
            },
            |o| {
                o["spec"]["dependsOn"] =
                    json!([{"name": "payments", "canaryService": "Payments_V2"}])
            },
        ),
        rule(
            "spec.dependsOn[].minWeight",
            "minWeight must be between 1 and 100",
            r#"spec.dependsOn[0].minWeight: Invalid value: "integer""#,
            |o| o["spec"]["dependsOn"] = json!([{"name": "payments", "minWeight": 100}]),
            |o| o["spec"]["dependsOn"] = json!([{"name": "payments", "minWeight": 0}]),
        ),
        rule(
            "spec.dependsOn[].name",
            "must be a Rollout name (a DNS-1123 subdomain)",
            r#"spec.dependsOn[0].name: Invalid value: "string""#,
            |o| o["spec"]["dependsOn"] = json!([{"name": "payments.v2"}]),
            |o| o["spec"]["dependsOn"] = json!([{"name": "Payments"}]),
        ),
        rule(
            "spec.dependsOn[].namespace",
            "must be a namespace name (a DNS-1123 label)",
            r#"spec.dependsOn[0].namespace: Invalid value: "string""#,
            |o| {
                o["spec"]["dependsOn"] = json!([{"name": "payments", "namespace": "payments-prod"}])
            },
            |o| {
                o["spec"]["dependsOn"] = json!([{"name": "payments", "namespace": "payments.prod"}])
            },
        ),
        rule(
            "spec.dependsOn[].phase",
            "phase must be Succeeded (use minWeight for a dependency part-way through)",
            r#"spec.dependsOn[0].phase: Invalid value: "string""#,
            |o| o["spec"]["dependsOn"] = json!([{"name": "payments", "phase": "Succeeded"}]),
            |o| o["spec"]["dependsOn"] = json!([{"name": "payments", "phase": "Progressing"}]),
        ),
        // spec.notifications
        rule(
            "spec.notifications.webhooks[].format",
            "format must be json or slack",
            r#"spec.notifications.webhooks[0].format: Invalid value: "string""#,
            |o| o["spec"]["notifications"] = json!({"webhooks": webhook("slack")}),
            |o| o["spec"]["notifications"] = json!({"webhooks": webhook("teams")}),
        ),
        // spec.checks
        rule(
            "spec.checks",
            "check names must be unique",
            r#"spec.checks: Invalid value: "array""#,
            |o| o["spec"]["checks"] = json!([hook_check("a"), hook_check("b")]),
            |o| o["spec"]["checks"] = json!([hook_check("a"), hook_check("a")]),
        ),
        rule(
            "spec.checks[]",
            "a check needs exactly one of webhook or job",
            r#"spec.checks[0]: Invalid value: "object""#,
            |o| o["spec"]["checks"] = json!([job_check()]),
            |o| {
                let mut c = job_check();
                c["webhook"] = json!({"url": "http://acceptance.qa/run"});
                o["spec"]["checks"] = json!([c]);
            },
        ),
        rule(
            "spec.checks[]",
            "a confirm webhook cannot run at postRollback (it only reports there)",
            r#"spec.checks[0].at: Invalid value: "object""#,
            |o| {
                let mut c = hook_check("a");
                c["webhook"]["type"] = json!("confirm");
                o["spec"]["checks"] = json!([c]);
            },
            |o| {
                let mut c = hook_check("a");
                c["webhook"]["type"] = json!("confirm");
                c["at"] = json!(["postRollback"]);
                o["spec"]["checks"] = json!([c]);
            },
        ),
        rule(
            "spec.checks[].name",
            "name must be lowercase letters, digits and '-', starting and ending with a letter or digit",
            r#"spec.checks[0].name: Invalid value: "string""#,
            |o| o["spec"]["checks"] = json!([hook_check("smoke-1")]),
            |o| o["spec"]["checks"] = json!([hook_check("Smoke")]),
        ),
        rule(
            "spec.checks[].interval",
            "interval must look like 10s, 1m or 1h",
            r#"spec.checks[0].interval: Invalid value: "string""#,
            |o| {
                let mut c = hook_check("a");
                c["interval"] = json!("30s");
                o["spec"]["checks"] = json!([c]);
            },
            |o| {
                let mut c = hook_check("a");
                c["interval"] = json!("soon");
                o["spec"]["checks"] = json!([c]);
            },
        ),
        rule(
            "spec.checks[].webhook",
            "a webhook check needs exactly one of url or urlFrom",
            r#"spec.checks[0].webhook: Invalid value: "object""#,
            |o| {
                let mut c = hook_check("a");
                c["webhook"] = json!({"urlFrom": {"name": "hooks", "key": "url"}});
                o["spec"]["checks"] = json!([c]);
            },
            |o| {
                let mut c = hook_check("a");
                c["webhook"]["urlFrom"] = json!({"name": "hooks", "key": "url"});
                o["spec"]["checks"] = json!([c]);
            },
        ),
        rule(
            "spec.checks[].webhook.type",
            "type must be check or confirm",
            r#"spec.checks[0].webhook.type: Invalid value: "string""#,
            |o| {
                let mut c = hook_check("a");
                c["webhook"]["type"] = json!("confirm");
                o["spec"]["checks"] = json!([c]);
            },
            |o| {
                let mut c = hook_check("a");
                c["webhook"]["type"] = json!("approve");
                o["spec"]["checks"] = json!([c]);
            },
        ),
        rule(
            "spec.checks[].webhook.url",
            "url must start with http:// or https://",
            r#"spec.checks[0].webhook.url: Invalid value: "string""#,
            |o| {
                let mut c = hook_check("a");
                c["webhook"]["url"] = json!("https://acceptance.qa/run");
                o["spec"]["checks"] = json!([c]);
            },
            |o| {
                let mut c = hook_check("a");
                c["webhook"]["url"] = json!("acceptance.qa/run");
                o["spec"]["checks"] = json!([c]);
            },
        ),
        rule(
            "spec.checks[].webhook.timeout",
            "timeout must look like 10s or 1m",
            r#"spec.checks[0].webhook.timeout: Invalid value: "string""#,
            |o| {
                let mut c = hook_check("a");
                c["webhook"]["timeout"] = json!("5s");
                o["spec"]["checks"] = json!([c]);
            },
            |o| {
                let mut c = hook_check("a");
                c["webhook"]["timeout"] = json!("5");
                o["spec"]["checks"] = json!([c]);
            },
        ),
    ]
}

/// A webhook check at preRollout.
fn hook_check(name: &str) -> Value {
    json!({"name": name, "at": ["preRollout"], "webhook": {"url": "http://acceptance.qa/run"}})
}

/// A Job check at each step.
fn job_check() -> Value {
    json!({"name": "smoke", "at": ["step"], "job": {"spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "t", "image": "busybox"}]}}}}})
}

// ---------------------------------------------------------------------------
// The schema's limits
// ---------------------------------------------------------------------------

/// An edit the server rejects for a reason of the schema itself, and every
/// line the user sees.
struct LimitCase {
    what: &'static str,
    reject: Edit,
    shown: &'static [&'static str],
}

fn limit(what: &'static str, shown: &'static [&'static str], reject: Edit) -> LimitCase {
    LimitCase {
        what,
        reject,
        shown,
    }
}

fn structural_limits() -> Vec<LimitCase> {
    vec![
        limit(
            "more than 64 steps",
            &[
                "spec.steps: Too many: 65: must have at most 64 items",
                NOT_CHECKED,
            ],
            |o| o["spec"]["steps"] = (0..65).map(|_| json!({"setWeight": 50})).collect(),
        ),
        limit(
            "an empty step list",
            &["spec.steps: Invalid value: 0: spec.steps in body should have at least 1 items"],
            |o| o["spec"]["steps"] = json!([]),
        ),
        limit(
            "more than 16 metrics",
            &[
                "spec.analysis.metrics: Too many: 17: must have at most 16 items",
                NOT_CHECKED,
            ],
            |o| {
                let m = metric0(o).clone();
                analysis(o)["metrics"] = (0..17)
                    .map(|i| {
                        let mut m = m.clone();
                        m["name"] = json!(format!("m{i}"));
                        m
                    })
                    .collect();
            },
        ),
        limit(
            "more than 8 comparisons",
            &[
                "spec.analysis.compare: Too many: 9: must have at most 8 items",
                NOT_CHECKED,
            ],
            |o| {
                analysis(o)["compare"] = (0..9).map(|i| comparison(&format!("c{i}"))).collect();
            },
        ),
        limit(
            "more than 4 matches in a header route",
            &[
                "spec.steps[0].setHeaderRoute.match: Too many: 5: must have at most 4 items",
                NOT_CHECKED,
            ],
            |o| {
                let m: Vec<Value> = (0..5)
                    .map(|i| json!({"header": {"name": format!("x-{i}"), "value": "1"}}))
                    .collect();
                o["spec"]["steps"][0] = header_route_step("beta", json!(m));
            },
        ),
        limit(
            "more than 8 webhooks",
            &[
                "spec.notifications.webhooks: Too many: 9: must have at most 8 items",
                NOT_CHECKED,
            ],
            |o| {
                let hook = webhook("json")[0].clone();
                o["spec"]["notifications"] = json!({"webhooks": vec![hook; 9]});
            },
        ),
        limit(
            "a Service name longer than 63 characters",
            &[
                "spec.stable.service: Too long: may not be longer than 63",
                NOT_CHECKED,
            ],
            |o| o["spec"]["stable"]["service"] = json!("a".repeat(64)),
        ),
        limit(
            "a query longer than 8192 characters",
            &[
                "spec.analysis.metrics[0].query: Too long: may not be longer than 8192",
                NOT_CHECKED,
            ],
            |o| metric0(o)["query"] = json!("u".repeat(8193)),
        ),
        limit(
            "a header value longer than 4096 characters",
            &[
                "spec.steps[0].setHeaderRoute.match[0].header.value: Too long: may not be longer than 4096",
                NOT_CHECKED,
            ],
            |o| {
                o["spec"]["steps"][0] = header_route_step(
                    "beta",
                    json!([{"header": {"name": "x-beta", "value": "v".repeat(4097)}}]),
                )
            },
        ),
        limit(
            "a field under the replicas router",
            &[
                "spec.trafficRouting.replicas: Too many: 1: must have at most 0 items",
                NOT_CHECKED,
            ],
            |o| o["spec"]["trafficRouting"] = json!({"replicas": {"service": "checkout"}}),
        ),
        limit("no spec", &["spec: Required value", NOT_CHECKED], |o| {
            remove(o, "spec")
        }),
        limit(
            "no stable version",
            &["spec.stable: Required value", NOT_CHECKED],
            |o| remove(spec(o), "stable"),
        ),
        limit(
            "no traffic routing",
            &["spec.trafficRouting: Required value", NOT_CHECKED],
            |o| remove(spec(o), "trafficRouting"),
        ),
        limit(
            "a webhook without urlFrom",
            &[
                "spec.notifications.webhooks[0].urlFrom: Required value",
                NOT_CHECKED,
            ],
            |o| o["spec"]["notifications"] = json!({"webhooks": [{"name": "team"}]}),
        ),
        limit(
            "a weight as a string",
            &[
                r#"spec.steps[0].setWeight: Invalid value: "string": spec.steps[0].setWeight in body must be of type integer: "string""#,
                NOT_CHECKED,
            ],
            |o| o["spec"]["steps"][0] = json!({"setWeight": "5"}),
        ),
        limit(
            "a bound as a string",
            &[
                r#"spec.analysis.metrics[0].max: Invalid value: "string": spec.analysis.metrics[0].max in body must be of type number: "string""#,
                NOT_CHECKED,
            ],
            |o| metric0(o)["max"] = json!("1%"),
        ),
        limit(
            "paused as a string",
            &[
                r#"spec.paused: Invalid value: "string": spec.paused in body must be of type boolean: "string""#,
                NOT_CHECKED,
            ],
            |o| o["spec"]["paused"] = json!("yes"),
        ),
        limit(
            "an unknown field",
            &[
                r#"Rollout in version "v1alpha1" cannot be handled as a Rollout: strict decoding error: unknown field "spec.rollbackWindow""#,
            ],
            |o| o["spec"]["rollbackWindow"] = json!(3),
        ),
        limit(
            "a misspelt step (setweight)",
            &[
                r#"Rollout in version "v1alpha1" cannot be handled as a Rollout: strict decoding error: unknown field "spec.steps[0].setweight""#,
            ],
            |o| o["spec"]["steps"][0] = json!({"setweight": 5}),
        ),
    ]
}

// ---------------------------------------------------------------------------
// Talking to the API server
// ---------------------------------------------------------------------------

/// What the API server said about an object it refused.
#[derive(Debug)]
struct Refusal {
    /// One line per cause, as kubectl prints them (`field: message`); the
    /// status message when there are no causes.
    lines: Vec<String>,
    /// The whole status message.
    message: String,
}

impl Refusal {
    fn sorted_lines(&self) -> Vec<String> {
        let mut lines = self.lines.clone();
        lines.sort();
        lines
    }
}

/// Server-side dry-run create of `obj` as a Rollout in `ns`, with
/// `fieldValidation=Strict` (what `kubectl apply` and `kubectl create` ask
/// for by default). `Ok` with what the server would store, or the refusal.
async fn dry_run_create(ns: &TestNs, mut obj: Value) -> Result<Value, Refusal> {
    obj["metadata"]["namespace"] = json!(ns.name);
    let url = format!(
        "/apis/rollwise.io/v1alpha1/namespaces/{}/rollouts?dryRun=All&fieldValidation=Strict&fieldManager={FIELD_MANAGER}",
        ns.name
    );
    let request = axum::http::Request::post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&obj).expect("a JSON object"))
        .expect("a valid request");
    match ns.client.request::<Value>(request).await {
        Ok(stored) => Ok(stored),
        Err(kube::Error::Api(status)) => {
            let causes = status
                .details
                .as_ref()
                .map(|d| d.causes.clone())
                .unwrap_or_default();
            let lines = if causes.is_empty() {
                vec![status.message.clone()]
            } else {
                causes
                    .iter()
                    .map(|c| {
                        if c.field.is_empty() {
                            c.message.clone()
                        } else {
                            format!("{}: {}", c.field, c.message)
                        }
                    })
                    .collect()
            };
            Err(Refusal {
                lines,
                message: status.message.clone(),
            })
        }
        Err(e) => panic!("dry-run create of a Rollout in {}: {e}", ns.name),
    }
}

/// The API server judges by a changed CRD a moment after the change (its
/// CRD handler follows a watch), and other tests apply the CRD too: wait
/// until the latest write to the CRD is [`CRD_SETTLE`] old, then until the
/// server reports a rule's message as the file has it. So no test judges
/// the rules of a previous version of the CRD.
async fn wait_for_current_rules(ns: &TestNs) {
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    let crd = crds
        .get("rollouts.rollwise.io")
        .await
        .unwrap_or_else(|e| panic!("cannot read the Rollout CRD: {e}"));
    let latest = crd
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.time.as_ref().map(|t| t.0))
        .max();
    if let Some(latest) = latest {
        let age = jiff::Timestamp::now().duration_since(latest);
        if let Ok(age) = std::time::Duration::try_from(age)
            && age < CRD_SETTLE
        {
            tokio::time::sleep(CRD_SETTLE - age).await;
        }
    }
    let (_, message, _) = crd_rules(&read_crd(ROLLOUT_CRD_FILE))
        .into_iter()
        .find(|(at, _, _)| at == "spec.trafficRouting")
        .expect("the CRD has a rule on spec.trafficRouting");
    let want = vec![format!(
        r#"spec.trafficRouting: Invalid value: "object": {message}"#
    )];
    common::cluster::eventually(
        "the API server to judge by the rules of crds/rollout.yaml",
        std::time::Duration::from_secs(30),
        || {
            let want = want.clone();
            async move {
                match dry_run_create(ns, edited(|o| o["spec"]["trafficRouting"] = json!({}))).await
                {
                    Err(r) if r.lines == want => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
}

/// Run `check` on every item, `PARALLEL` at a time; the problems found.
async fn check_all<T, F, Fut>(items: Vec<T>, check: F) -> Vec<String>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    futures::stream::iter(items.into_iter().map(check))
        .buffer_unordered(PARALLEL)
        .flat_map(futures::stream::iter)
        .collect()
        .await
}

fn edited(edit: Edit) -> Value {
    let mut obj = baseline();
    obj["metadata"]["name"] = json!("admission");
    edit(&mut obj);
    obj
}

/// The operator's own verdict on an object the server accepted: `Ok`, or
/// the fields it names.
fn operator_verdict(obj: &Value) -> Result<(), Vec<String>> {
    let rollout: Rollout = serde_json::from_value(obj.clone())
        .map_err(|e| vec![format!("does not deserialize: {e}")])?;
    rollwise::plan::validate(&rollout.spec)
        .map(|_| ())
        .map_err(|errors| errors.into_iter().map(|e| e.field).collect())
}

fn no_cost_trouble(refusal: &Refusal) -> Option<String> {
    let m = refusal.message.to_lowercase();
    (m.contains("cost") || m.contains("budget"))
        .then(|| format!("the server ran out of CEL cost budget: {}", refusal.message))
}

// ---------------------------------------------------------------------------
// Every rule accepts and rejects
// ---------------------------------------------------------------------------

/// Every CEL rule of the CRD accepts its row's good edit and rejects its
/// bad one with exactly the message in the table, on the real API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cel_rule_accepts_and_rejects_on_the_real_api_server() {
    in_namespace("admission-cel", async |ns: &TestNs| {
        wait_for_current_rules(ns).await;
        let started = Instant::now();
        let cases = cel_rules();
        let count = cases.len();
        let problems = check_all(cases, |case| async move {
            let mut problems = Vec::new();
            let name = format!("{} ({})", case.at, case.message);
            let good = edited(case.accept);
            match dry_run_create(ns, good.clone()).await {
                Ok(_) => match (operator_verdict(&good), case.operator_refuses) {
                    (Ok(()), None) => {}
                    (Err(fields), Some(field)) if fields == [field] => {}
                    (verdict, expected) => problems.push(format!(
                        "{name}: the accepted edit should be refused by the operator at {expected:?}, it says {verdict:?}"
                    )),
                },
                Err(refusal) => problems.push(format!(
                    "{name}: the server rejects the edit it should accept: {:?}",
                    refusal.lines
                )),
            }
            match dry_run_create(ns, edited(case.reject)).await {
                Ok(_) => problems.push(format!(
                    "{name}: the server accepts the edit it should reject"
                )),
                Err(refusal) => {
                    if refusal.sorted_lines() != [case.expected()] {
                        problems.push(format!(
                            "{name}: the server says\n    {}\n  expected exactly\n    {}",
                            refusal.lines.join("\n    "),
                            case.expected()
                        ));
                    }
                }
            }
            problems
        })
        .await;
        eprintln!(
            "[admission] {count} CEL rows checked in {:?}",
            started.elapsed()
        );
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    })
    .await;
}

/// The schema's own limits (sizes, required fields, types, unknown fields)
/// say what the user did wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structural_limits_are_enforced_with_clear_messages() {
    in_namespace("admission-schema", async |ns: &TestNs| {
        wait_for_current_rules(ns).await;
        let problems = check_all(structural_limits(), |case| async move {
            match dry_run_create(ns, edited(case.reject)).await {
                Ok(_) => vec![format!("{}: accepted", case.what)],
                Err(refusal) => {
                    let mut want: Vec<String> = case.shown.iter().map(|s| s.to_string()).collect();
                    want.sort();
                    if refusal.sorted_lines() == want {
                        vec![]
                    } else {
                        vec![format!(
                            "{}: the server says\n    {}\n  expected exactly\n    {}",
                            case.what,
                            refusal.lines.join("\n    "),
                            want.join("\n    ")
                        )]
                    }
                }
            }
        })
        .await;
        assert!(problems.is_empty(), "{}", problems.join("\n"));

        // Without strict field validation the server drops an unknown field
        // (and warns): strictness is what makes the typo visible.
        let obj = edited(|o| o["spec"]["rollbackWindow"] = json!(3));
        let api: Api<kube::api::DynamicObject> = ns.raw_rollouts();
        let mut obj_ns = obj.clone();
        obj_ns["metadata"]["namespace"] = json!(ns.name);
        let stored = api
            .create(
                &kube::api::PostParams {
                    dry_run: true,
                    field_manager: Some(FIELD_MANAGER.into()),
                },
                &serde_json::from_value(obj_ns).expect("an object"),
            )
            .await
            .expect("without fieldValidation=Strict an unknown field is dropped, not refused");
        assert!(
            stored.data["spec"].get("rollbackWindow").is_none(),
            "the unknown field was kept: {}",
            stored.data["spec"]
        );
    })
    .await;
}

/// `tolerance` is a number or a string, so the schema leaves it untyped and
/// no CEL rule reads it: the server admits any value, and the operator
/// judges it, naming the field (what a user then sees in the Ready
/// condition).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untyped_tolerance_is_admitted_and_judged_by_the_operator() {
    in_namespace("admission-tolerance", async |ns: &TestNs| {
        wait_for_current_rules(ns).await;
        for (tolerance, operator) in [
            (json!(0.005), Ok(())),
            (json!("20%"), Ok(())),
            (
                json!("fast"),
                Err(vec!["spec.analysis.compare[0].tolerance".to_string()]),
            ),
        ] {
            let mut obj = edited(|o| with_comparisons(o, &["errors"]));
            obj["spec"]["analysis"]["compare"][0]["tolerance"] = tolerance.clone();
            if let Err(r) = dry_run_create(ns, obj.clone()).await {
                panic!("tolerance {tolerance}: rejected: {:?}", r.lines);
            }
            assert_eq!(operator_verdict(&obj), operator, "tolerance {tolerance}");
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// The setWeight rule in depth
// ---------------------------------------------------------------------------

fn weights(steps: Value) -> Value {
    let mut obj = edited(|_| {});
    obj["spec"]["steps"] = steps;
    obj
}

fn beta_route() -> Value {
    header_route_step(
        "beta",
        json!([{"header": {"name": "x-beta", "value": "1"}}]),
    )
}

/// Non-decreasing setWeight steps, whatever lies between them: the rule
/// the Kubernetes 1.28 cost estimator made us rewrite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_weight_steps_must_not_decrease_whatever_lies_between_them() {
    in_namespace("admission-weights", async |ns: &TestNs| {
        wait_for_current_rules(ns).await;
        let up_64: Vec<Value> = (0..64).map(|i| json!({"setWeight": 36 + i})).collect();
        let mut down_at_end = up_64.clone();
        down_at_end[63] = json!({"setWeight": 97});
        let mut down_at_start = up_64.clone();
        down_at_start[0] = json!({"setWeight": 37});
        down_at_start[1] = json!({"setWeight": 36});
        let accepted: Vec<(&str, Value)> = vec![
            ("one step", json!([{"setWeight": 100}])),
            ("equal weights", json!([{"setWeight": 20}, {"setWeight": 20}, {"pause": {}}, {"setWeight": 20}])),
            ("pauses and header routes between rising weights", json!([
                {"setWeight": 0}, beta_route(), {"pause": {"duration": "1m"}}, {"setWeight": 10},
                {"setHeaderRoute": {"name": "beta"}}, {"pause": {}}, {"setWeight": 100}
            ])),
            ("no setWeight at all", json!([beta_route(), {"pause": {}}])),
            ("64 rising steps", json!(up_64)),
            ("64 equal steps", json!(vec![json!({"setWeight": 50}); 64])),
        ];
        let rejected: Vec<(&str, Value)> = vec![
            ("two steps down", json!([{"setWeight": 50}, {"setWeight": 20}])),
            ("down across a pause", json!([{"setWeight": 50}, {"pause": {"duration": "1m"}}, {"setWeight": 49}])),
            ("down across header routes", json!([
                {"setWeight": 30}, beta_route(), {"setHeaderRoute": {"name": "beta"}}, {"setWeight": 10}
            ])),
            // A repeated step (20 twice) must not hide the fall from 50.
            ("up then back to a repeated weight", json!([{"setWeight": 20}, {"setWeight": 50}, {"setWeight": 20}])),
            ("to 0 at the end", json!([{"setWeight": 10}, {"setWeight": 100}, {"pause": {}}, {"setWeight": 0}])),
            ("64 steps, the last one lower", json!(down_at_end)),
            ("64 steps, the first two falling", json!(down_at_start)),
            ("64 falling steps", json!((0..64).map(|i| json!({"setWeight": 100 - i})).collect::<Vec<_>>())),
        ];
        let mut problems = Vec::new();
        for (what, steps) in accepted {
            let obj = weights(steps);
            if let Err(r) = dry_run_create(ns, obj.clone()).await {
                problems.push(format!("{what}: rejected: {:?}", r.lines));
            }
            if let Err(fields) = operator_verdict(&obj) {
                problems.push(format!("{what}: the operator refuses {fields:?}"));
            }
        }
        let expected = format!(r#"spec.steps: Invalid value: "array": {STEPS_NON_DECREASING}"#);
        for (what, steps) in rejected {
            let obj = weights(steps);
            match dry_run_create(ns, obj.clone()).await {
                Ok(_) => problems.push(format!("{what}: accepted")),
                Err(r) if r.lines == [expected.clone()] => {}
                Err(r) => problems.push(format!("{what}: the server says {:?}", r.lines)),
            }
            // The operator agrees, naming the step.
            match operator_verdict(&obj) {
                Err(fields) if fields.iter().all(|f| f.ends_with(".setWeight")) => {}
                other => problems.push(format!("{what}: the operator says {other:?}")),
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    })
    .await;
}

// ---------------------------------------------------------------------------
// The largest objects under the runtime cost limit
// ---------------------------------------------------------------------------

/// A header route with 4 matches of the longest names and values.
fn longest_route(i: usize, cookie: bool) -> Value {
    let matches: Vec<Value> = (0..4)
        .map(|k| {
            let nv = json!({"name": format!("x-{i}-{k}-{}", "n".repeat(240)), "value": "v".repeat(4096)});
            if cookie && k % 2 == 1 {
                json!({"cookie": nv})
            } else {
                json!({"header": nv})
            }
        })
        .collect();
    json!({"name": format!("r{i}-{}", "a".repeat(50)), "match": matches})
}

/// `text` padded with spaces to `len` bytes.
fn longest(text: &str, len: usize) -> String {
    format!("{text}{}", " ".repeat(len - text.len()))
}

/// The most of everything the schema allows: 64 steps (rising weights
/// between header routes with 4 of the longest matches), 16 metrics and 8
/// comparisons with the longest queries, 8 webhooks.
fn largest(o: &mut Value) {
    o["spec"]["steps"] = (0..64)
        .map(|i| {
            if i % 2 == 0 {
                json!({"setWeight": i + 1})
            } else {
                json!({"setHeaderRoute": longest_route(i, false)})
            }
        })
        .collect();
    let metrics: Vec<Value> = (0..16)
        .map(|i| {
            json!({
                "name": format!("metric-{i:02}-{}", "m".repeat(53)),
                "query": longest("sum(rate(x{service=\"{{service}}\"}[1m]))", 8192),
                "min": 0, "max": 1, "failureLimit": 1000
            })
        })
        .collect();
    let compare: Vec<Value> = (0..8)
        .map(|i| {
            let mut c = comparison(&format!("compare-{i}-{}", "c".repeat(53)));
            for q in ["requests", "failures"] {
                c[q] = json!(longest(c[q].as_str().unwrap(), 8192));
            }
            c
        })
        .collect();
    o["spec"]["analysis"]["metrics"] = json!(metrics);
    o["spec"]["analysis"]["compare"] = json!(compare);
    o["spec"]["notifications"] = json!({"webhooks": (0..8).map(|i| json!({
        "name": format!("hook-{i}-{}", "h".repeat(50)),
        "urlFrom": {"name": "s".repeat(253), "key": "k".repeat(253)},
        "format": "slack",
        "events": ["Started", "StepAdvanced", "Paused", "AnalysisFailed", "RolledBack", "Promoted", "Aborted", "Started"]
    })).collect::<Vec<_>>()});
}

/// The largest objects the schema allows stay within the API server's
/// runtime CEL cost limit: accepted, or rejected for the right reasons only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_rollouts_are_judged_within_the_cost_limit() {
    in_namespace("admission-cost", async |ns: &TestNs| {
        wait_for_current_rules(ns).await;
        let mut problems = Vec::new();

        let obj = edited(largest);
        let size = serde_json::to_vec(&obj).unwrap().len();
        match dry_run_create(ns, obj.clone()).await {
            Ok(_) => {}
            Err(r) => problems.push(format!(
                "the largest valid Rollout ({size} bytes) is rejected: {}",
                no_cost_trouble(&r).unwrap_or_else(|| format!("{:?}", r.lines))
            )),
        }
        if let Err(fields) = operator_verdict(&obj) {
            problems.push(format!(
                "the operator refuses the largest valid Rollout: {fields:?}"
            ));
        }

        // Every step breaks two rules (it sets a weight and a route; the
        // weights fall); metric and comparison names repeat.
        let obj = edited(|o| {
            largest(o);
            o["spec"]["steps"] = (0..64)
                .map(|i| json!({"setWeight": 100 - i, "setHeaderRoute": longest_route(i, true)}))
                .collect();
            for m in o["spec"]["analysis"]["metrics"].as_array_mut().unwrap() {
                m["name"] = json!("error-rate");
            }
            for c in o["spec"]["analysis"]["compare"].as_array_mut().unwrap() {
                c["name"] = json!("errors");
            }
        });
        let mut want: Vec<String> = (0..64)
            .map(|i| format!(r#"spec.steps[{i}]: Invalid value: "object": {STEP_KIND}"#))
            .chain([
                format!(r#"spec.steps: Invalid value: "array": {STEPS_NON_DECREASING}"#),
                r#"spec.analysis.metrics: Invalid value: "array": metric names must be unique"#
                    .to_string(),
                r#"spec.analysis.compare: Invalid value: "array": compare names must be unique"#
                    .to_string(),
            ])
            .collect();
        want.sort();
        match dry_run_create(ns, obj).await {
            Ok(_) => problems.push("the largest invalid Rollout is accepted".into()),
            Err(r) => {
                if let Some(trouble) = no_cost_trouble(&r) {
                    problems.push(trouble);
                } else if r.sorted_lines() != want {
                    problems.push(format!(
                        "the largest invalid Rollout: the server says\n    {}\n  expected\n    {}",
                        r.lines.join("\n    "),
                        want.join("\n    ")
                    ));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    })
    .await;
}

// ---------------------------------------------------------------------------
// The examples and the CRD itself
// ---------------------------------------------------------------------------

fn yaml_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Every Rollout under `examples/`, with the file it is in.
fn example_rollouts() -> Vec<(String, Value)> {
    let mut files = Vec::new();
    yaml_files(std::path::Path::new(EXAMPLES), &mut files);
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", file.display()));
        let rel = file.strip_prefix(EXAMPLES).unwrap().display().to_string();
        out.extend(
            docs.into_iter()
                .filter(|d| d["kind"] == "Rollout")
                .map(|d| (format!("examples/{rel}"), d)),
        );
    }
    out
}

/// Every Rollout of `examples/` is admitted by the real API server as the
/// user applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_rollout_is_admitted() {
    in_namespace("admission-examples", async |ns: &TestNs| {
        wait_for_current_rules(ns).await;
        let rollouts = example_rollouts();
        assert!(
            rollouts.len() >= 11,
            "only {} Rollouts under examples/",
            rollouts.len()
        );
        let problems = check_all(rollouts, |(file, obj)| async move {
            match dry_run_create(ns, obj).await {
                Ok(_) => vec![],
                Err(r) => vec![format!("{file}: rejected: {:?}", r.lines)],
            }
        })
        .await;
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    })
    .await;
}

fn read_crd(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"))
}

/// The rules of a CRD's schema: (where, message or rule text, rule text).
fn crd_rules(crd: &Value) -> Vec<(String, String, String)> {
    fn walk(node: &Value, at: &str, out: &mut Vec<(String, String, String)>) {
        for v in node["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let text = v["rule"].as_str().unwrap_or_default().to_string();
            let key = v["message"].as_str().unwrap_or(&text).to_string();
            out.push((at.to_string(), key, text));
        }
        if let Some(props) = node["properties"].as_object() {
            for (name, child) in props {
                let child_at = if at.is_empty() {
                    name.clone()
                } else {
                    format!("{at}.{name}")
                };
                walk(child, &child_at, out);
            }
        }
        if node.get("items").is_some() {
            walk(&node["items"], &format!("{at}[]"), out);
        }
    }
    let mut out = Vec::new();
    for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
        walk(&version["schema"]["openAPIV3Schema"], "", &mut out);
    }
    out
}

/// Server-side apply dry run of a CRD file as `kubectl apply --server-side
/// --dry-run=server -f` does; the CRD as the server would store it.
async fn apply_crd_dry_run(
    cluster: &Cluster,
    crd: &Value,
) -> Result<CustomResourceDefinition, String> {
    let name = crd["metadata"]["name"].as_str().expect("a CRD name");
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    crds.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force().dry_run(),
        &Patch::Apply(crd),
    )
    .await
    .map_err(|e| e.to_string())
}

/// `crds/rollout.yaml` and the chart's copy apply to the real API server
/// (its CEL cost estimator included) with every rule kept; the rule form
/// that the 1.28 estimator refused is refused, so this test can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crd_applies_to_the_real_api_server_with_every_rule() {
    let Some(cluster) = Cluster::connect().await else {
        return;
    };
    for path in [ROLLOUT_CRD_FILE, CHART_CRD_FILE] {
        let crd = read_crd(path);
        let stored = apply_crd_dry_run(&cluster, &crd)
            .await
            .unwrap_or_else(|e| panic!("the API server refuses {path}: {e}"));
        let stored = serde_json::to_value(&stored).expect("a CRD serializes");
        let (mine, theirs) = (crd_rules(&crd), crd_rules(&stored));
        assert!(
            mine.len() >= 35 && mine == theirs,
            "{path}: the server keeps {} of its {} rules",
            theirs.len(),
            mine.len()
        );
    }

    // The form of the setWeight rule that Kubernetes 1.28 refused.
    let mut crd = read_crd(ROLLOUT_CRD_FILE);
    let steps = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["steps"]["x-kubernetes-validations"][0];
    assert_eq!(steps["message"], STEPS_NON_DECREASING);
    steps["rule"] = json!("self.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()");
    let refused = apply_crd_dry_run(&cluster, &crd)
        .await
        .expect_err("the API server should refuse the isSorted() form of the setWeight rule");
    assert!(
        refused.contains("estimated rule cost exceeds budget"),
        "refused for another reason: {refused}"
    );
}

/// What keeps the table from covering the rules of `crd`: rules without a
/// row, rows without a rule, two rules that cannot be told apart.
fn coverage_problems(crd: &Value) -> Vec<String> {
    let rules = crd_rules(crd);
    let mut problems = Vec::new();
    let in_crd: BTreeSet<(String, String)> = rules
        .iter()
        .map(|(at, key, _)| (at.clone(), key.clone()))
        .collect();
    if in_crd.len() != rules.len() {
        problems.push("two rules share a place and a message: give each its own message".into());
    }
    let in_table: BTreeSet<(String, String)> = cel_rules()
        .iter()
        .map(|c| (c.at.to_string(), c.message.to_string()))
        .collect();
    for (at, key, text) in &rules {
        if !in_table.contains(&(at.clone(), key.clone())) {
            problems.push(format!(
                "no row in cel_rules() for the rule at {at}: {key:?} (rule: {text}); add an accepted and a rejected edit"
            ));
        }
    }
    for (at, key) in in_table.difference(&in_crd) {
        problems.push(format!(
            "a row in cel_rules() for a rule the CRD does not have: {at}: {key:?}"
        ));
    }
    problems
}

/// Every CEL rule in `crds/rollout.yaml` has a row in [`cel_rules`], and
/// every row names a rule the CRD has: a new or changed rule cannot land
/// untested. (No cluster needed.)
#[test]
fn every_cel_rule_of_the_crd_has_a_row() {
    let crd = read_crd(ROLLOUT_CRD_FILE);
    let count = crd_rules(&crd).len();
    assert!(count >= 35, "only {count} rules found");
    let problems = coverage_problems(&crd);
    assert!(
        problems.is_empty(),
        "{ROLLOUT_CRD_FILE}:\n  {}",
        problems.join("\n  ")
    );
}

/// The coverage check sees a rule added anywhere in the schema, with or
/// without a message, and a message changed under a row.
#[test]
fn the_coverage_check_sees_new_and_changed_rules() {
    let mut crd = read_crd(ROLLOUT_CRD_FILE);
    let spec = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    spec["properties"]["paused"]["x-kubernetes-validations"] =
        json!([{"rule": "self == false || has(oldSelf)"}]);
    spec["properties"]["analysis"]["properties"]["metrics"]["items"]["x-kubernetes-validations"]
        .as_array_mut()
        .expect("the metric rules")
        .push(json!({"rule": "self.query != 'up'", "message": "up is not a metric"}));
    spec["x-kubernetes-validations"][0]["message"] = json!("stable and canary must differ");
    let problems = coverage_problems(&crd);
    let seen = |what: &str| problems.iter().any(|p| p.contains(what));
    assert!(
        seen("spec.paused: \"self == false || has(oldSelf)\"")
            && seen("spec.analysis.metrics[]: \"up is not a metric\"")
            && seen("at spec: \"stable and canary must differ\"")
            && seen(
                "does not have: spec: \"spec.stable.service and spec.canary.service must differ\""
            ),
        "{problems:#?}"
    );
}
