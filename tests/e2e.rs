//! End-to-end tests: the real `rollwise run` binary against a real
//! Kubernetes API server (the realk8s kit that `scripts/test.sh` starts, or
//! the cluster of `ROLLWISE_E2E_KUBECONFIG`), with a real Prometheus serving
//! backfilled metrics. See `tests/common/cluster.rs` for what is shared.
//!
//! Without a cluster every cluster test prints one `SKIPPED: ...` line and
//! passes. The `offline_*` tests check the fixtures (the Rollouts pass the
//! operator's validation, the backfilled metrics give the intended verdicts,
//! the route comparison) and always run.
//!
//! ```text
//! ROLLWISE_E2E_KUBECONFIG=/path/to/kubeconfig cargo test --test e2e -- --nocapture
//! ```
//!
//! What the cluster needs: the Gateway API standard CRDs (the kit applies
//! them; no Gateway controller is needed: the HTTPRoute refers to a Gateway
//! `e2e` that does not exist, and nothing here sends traffic), and rights to
//! create CRDs and namespaces (the tests server-side apply
//! `crds/rollout.yaml` as field manager `rollwise-e2e`).
//!
//! Every test has its own namespace, its own operator process (watching only
//! that namespace) and its own Prometheus, so the tests run in parallel. On
//! failure the test prints the operator's log, the Rollouts (status
//! included), the HTTPRoute, the Deployments and the namespace's Events.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ::gateway_api::apis::standard::httproutes::HttpRoute;
use common::cluster::{Operator, TestNs, eventually, http_get, in_namespace, pretty};
use common::prometheus::{Backfill, PrometheusServer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{ApiResource, DeleteParams, DynamicObject};
use rollwise::analysis::provider::prometheus::PrometheusProvider;
use rollwise::analysis::{MetricsProvider, QueryOutcome, render_query};
use rollwise::api::{FINALIZER, Phase, Rollout};
use serde_json::{Value, json};

const STABLE: &str = "checkout-v1";
const CANARY: &str = "checkout-v2";
const ROUTE: &str = "checkout";
const ROLLOUT: &str = "checkout";
/// The route's parent: a Gateway that need not exist.
const GATEWAY: &str = "e2e";
const HOSTNAME: &str = "checkout.e2e.rollwise.test";
/// The backend of the route's second rule (no such Service: the route is
/// accepted anyway, and the operator must leave this rule alone).
const OTHER_BACKEND: &str = "static-files";

const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);
const DELETE_TIMEOUT: Duration = Duration::from_secs(60);

/// The canary's error rate, as the operator queries it.
const ERROR_RATE_QUERY: &str = concat!(
    r#"sum(rate(http_requests_total{service="{{service}}",namespace="{{namespace}}",code=~"5.."}[1m]))"#,
    " / ",
    r#"sum(rate(http_requests_total{service="{{service}}",namespace="{{namespace}}"}[1m]))"#,
);
const MAX_ERROR_RATE: f64 = 0.05;
/// Backfilled error rates of the canary.
const HEALTHY_ERROR_RATE: f64 = 0.01;
const FAULTY_ERROR_RATE: f64 = 0.30;

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/// A healthy canary (1% errors, limit 5%) goes 20% -> pause 10s -> 100%:
/// phase Succeeded, Completed=True, the route sends everything to the canary
/// and is otherwise exactly as created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_is_promoted_to_100_percent() {
    in_namespace("promote", async |ns: &TestNs| {
        let env = Env::setup(ns, Some(HEALTHY_ERROR_RATE)).await;
        env.create_rollout(rollout_with_analysis(&env)).await;
        let r = ns
            .wait_phase(ROLLOUT, Phase::Succeeded, 100, ROLLOUT_TIMEOUT)
            .await;
        let status = r.status.clone().unwrap_or_default();

        let completed = condition(&r, "Completed");
        assert_eq!(
            completed.status, "True",
            "Completed condition: {completed:?}"
        );
        let rolled_back = condition(&r, "RolledBack");
        assert_eq!(
            rolled_back.status, "False",
            "RolledBack condition: {rolled_back:?}"
        );
        assert_eq!(
            status.canary_weight, 100,
            "status.canaryWeight (read back from the route)"
        );
        let metric = status
            .analysis
            .iter()
            .find(|m| m.name == "error-rate")
            .unwrap_or_else(|| panic!("no error-rate in status.analysis: {:?}", status.analysis));
        assert_eq!(
            metric.verdict, "Pass",
            "latest error-rate evaluation: {metric:?}"
        );
        assert!(
            metric.value.is_some_and(|v| v <= MAX_ERROR_RATE),
            "the measured error rate should be about {HEALTHY_ERROR_RATE}: {metric:?}"
        );

        let route = env.route().await;
        assert_eq!(
            rule_weights(&route),
            (Some(0), Some(100)),
            "(stable, canary) weights of the first rule after the promotion; route: {}",
            pretty(&route.data)
        );
        assert_route_otherwise_unchanged(env.route_as_created(), &route);
    })
    .await;
}

/// A faulty canary (30% errors, limit 5%, failureLimit 0) is rolled back
/// at its first evaluation: phase RolledBack, RolledBack=True with reason
/// AnalysisFailed, all traffic back on stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_canary_is_rolled_back_by_the_analysis() {
    in_namespace("rollback", async |ns: &TestNs| {
        let env = Env::setup(ns, Some(FAULTY_ERROR_RATE)).await;
        env.create_rollout(rollout_with_analysis(&env)).await;
        let r = ns
            .wait_phase(ROLLOUT, Phase::RolledBack, 0, ROLLOUT_TIMEOUT)
            .await;
        let status = r.status.clone().unwrap_or_default();

        let rolled_back = condition(&r, "RolledBack");
        assert_eq!(
            rolled_back.status, "True",
            "RolledBack condition: {rolled_back:?}"
        );
        assert_eq!(
            rolled_back.reason, "AnalysisFailed",
            "RolledBack condition: {rolled_back:?}"
        );
        let completed = condition(&r, "Completed");
        assert_eq!(
            completed.status, "False",
            "Completed condition: {completed:?}"
        );
        assert_eq!(
            status.canary_weight, 0,
            "status.canaryWeight (read back from the route)"
        );
        let metric = status
            .analysis
            .iter()
            .find(|m| m.name == "error-rate")
            .unwrap_or_else(|| panic!("no error-rate in status.analysis: {:?}", status.analysis));
        assert_eq!(
            metric.verdict, "Fail",
            "latest error-rate evaluation: {metric:?}"
        );
        assert!(
            metric.value.is_some_and(|v| v > MAX_ERROR_RATE),
            "the measured error rate should be about {FAULTY_ERROR_RATE}: {metric:?}"
        );

        let route = env.route().await;
        assert_eq!(
            rule_weights(&route),
            (Some(100), Some(0)),
            "(stable, canary) weights of the first rule after the rollback; route: {}",
            pretty(&route.data)
        );
        assert_route_otherwise_unchanged(env.route_as_created(), &route);
    })
    .await;
}

/// A Rollout deleted mid-way (held at 20% by a pause without duration):
/// the operator's finalizer returns all traffic to stable, then lets the
/// object go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_rollout_mid_way_returns_traffic_to_stable() {
    in_namespace("delete", async |ns: &TestNs| {
        let env = Env::setup(ns, None).await;
        env.create_rollout(held_rollout(&ns.name)).await;
        let r = ns
            .wait_phase(ROLLOUT, Phase::Paused, 20, ROLLOUT_TIMEOUT)
            .await;
        assert!(
            r.finalizers().iter().any(|f| f == FINALIZER),
            "the operator should have added its finalizer {FINALIZER:?}: {:?}",
            r.finalizers()
        );
        let route = env.route().await;
        assert_eq!(
            rule_weights(&route),
            (Some(80), Some(20)),
            "(stable, canary) weights of the first rule while paused; route: {}",
            pretty(&route.data)
        );

        env.delete_rollout().await;
        env.wait_for_rollout_gone(DELETE_TIMEOUT).await;

        let route = env.route().await;
        assert_eq!(
            rule_weights(&route),
            (Some(100), Some(0)),
            "(stable, canary) weights of the first rule after the Rollout was deleted; route: {}",
            pretty(&route.data)
        );
        assert_route_otherwise_unchanged(env.route_as_created(), &route);
    })
    .await;
}

// ---------------------------------------------------------------------------
// Offline checks of the fixtures: no cluster needed, they always run
// ---------------------------------------------------------------------------

/// The Rollouts the cluster tests create pass the admission rules of
/// `crds/rollout.yaml` (OpenAPI schema and CEL, what the API server checks)
/// and the operator's own validation.
#[test]
fn offline_test_rollouts_pass_admission_and_validation() {
    let crd = common::cluster::rollout_crd();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    assert!(
        schema.is_object(),
        "{} has no openAPIV3Schema",
        common::cluster::ROLLOUT_CRD_FILE
    );
    let ns = common::cluster::unique_namespace("rollback");
    for r in [
        analysed_rollout(&ns, "http://127.0.0.1:9090"),
        held_rollout(&ns),
    ] {
        let obj = serde_json::to_value(&r).expect("a Rollout serializes");
        if let Err(e) = kube::core::cel::Validator::new().validate(schema, &obj, None) {
            let messages: Vec<String> = e.into_vec().into_iter().map(|e| e.message).collect();
            panic!("the API server would reject {}: {messages:?}", pretty(&obj));
        }
        if let Err(errors) = rollwise::api::validate(&r.spec) {
            let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            panic!(
                "the operator would mark {} Invalid: {messages:?}",
                pretty(&obj)
            );
        }
    }
}

/// Namespace names are DNS labels, and differ from call to call.
#[test]
fn offline_namespace_names_are_unique_dns_labels() {
    let names: std::collections::HashSet<String> = (0..1000)
        .map(|_| common::cluster::unique_namespace("rollback"))
        .collect();
    assert_eq!(names.len(), 1000, "namespace names repeat");
    for name in names {
        assert!(
            name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.ends_with('-'),
            "{name:?} is not a DNS label"
        );
    }
}

/// The route checks accept the operator's change on a route as a real API
/// server returns it (defaults filled in), and catch any other change.
#[test]
fn offline_route_checks_see_only_the_weights() {
    let mut created: DynamicObject = serde_json::from_value(http_route()).unwrap();
    created.metadata.resource_version = Some("1".into());
    for parent in created.data["spec"]["parentRefs"].as_array_mut().unwrap() {
        parent["group"] = json!("gateway.networking.k8s.io");
        parent["kind"] = json!("Gateway");
    }
    for rule in created.data["spec"]["rules"].as_array_mut().unwrap() {
        for r in rule["backendRefs"].as_array_mut().unwrap() {
            r["group"] = json!("");
            r["kind"] = json!("Service");
            r["weight"] = json!(1);
        }
    }
    assert_eq!(rule_weights(&created), (Some(1), None));

    let promoted = {
        let mut route = created.clone();
        route.metadata.resource_version = Some("2".into());
        let refs = route.data["spec"]["rules"][0]["backendRefs"]
            .as_array_mut()
            .unwrap();
        refs[0]["weight"] = json!(0);
        refs.insert(
            1,
            json!({"name": CANARY, "port": 80, "weight": 100, "group": "", "kind": "Service"}),
        );
        route
    };
    assert_eq!(rule_weights(&promoted), (Some(0), Some(100)));
    assert_route_otherwise_unchanged(&created, &promoted);

    type Tamper = fn(&mut DynamicObject);
    let tampered: [(&str, Tamper); 4] = [
        ("second rule weight", |r| {
            r.data["spec"]["rules"][1]["backendRefs"][0]["weight"] = json!(5)
        }),
        ("hostnames", |r| {
            r.data["spec"]["hostnames"] = json!(["other.test"])
        }),
        ("first rule matches", |r| {
            r.data["spec"]["rules"][0]["matches"][0]["path"]["value"] = json!("/")
        }),
        ("labels", |r| r.metadata.labels = None),
    ];
    for (what, tamper) in tampered {
        let mut route = promoted.clone();
        tamper(&mut route);
        let caught =
            std::panic::catch_unwind(|| assert_route_otherwise_unchanged(&created, &route));
        assert!(caught.is_err(), "a change of the {what} went unnoticed");
    }
}

/// The backfilled data gives the canary the intended error rate through the
/// operator's query and provider: within the bound for the promoted
/// scenario, outside it for the rolled-back one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_backfilled_error_rates_give_the_intended_verdicts() {
    let ns = common::cluster::unique_namespace("promote");
    for (rate, healthy) in [(HEALTHY_ERROR_RATE, true), (FAULTY_ERROR_RATE, false)] {
        let data = metrics(&ns, rate);
        let server =
            tokio::task::spawn_blocking(move || PrometheusServer::start_with_openmetrics(&data))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let provider = PrometheusProvider::new(&server.address(), Duration::from_secs(10))
            .expect("a valid address");
        // The probe that waits for the operator's /readyz, on a server we have.
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port()));
        let ready =
            tokio::task::spawn_blocking(move || http_get(addr, "/-/ready").map(|(code, _)| code))
                .await
                .expect("the probe does not panic");
        assert_eq!(ready, Ok(200), "GET /-/ready on Prometheus");
        let query = render_query(ERROR_RATE_QUERY, CANARY, &ns, ROLLOUT);
        let outcome = provider.query(&query).await;
        tokio::task::spawn_blocking(move || drop(server))
            .await
            .expect("Prometheus stops");
        match outcome {
            QueryOutcome::Value(v) => {
                assert!((v - rate).abs() < 1e-3, "error rate {v}, expected {rate}");
                assert_eq!(
                    v <= MAX_ERROR_RATE,
                    healthy,
                    "error rate {v} vs max {MAX_ERROR_RATE}"
                );
            }
            other => panic!("{query}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// A scenario's set-up: two versions, the route, Prometheus, the operator
// ---------------------------------------------------------------------------

/// One test's objects: the two Deployments and Services, the HTTPRoute, a
/// Prometheus (when the scenario has metrics) and the operator.
struct Env<'a> {
    ns: &'a TestNs,
    /// The HTTPRoute as the API server returned it from the create
    /// (defaults filled in).
    route_as_created: DynamicObject,
    prometheus: Option<PrometheusServer>,
    operator: Arc<Operator>,
}

impl<'a> Env<'a> {
    /// `error_rate`: the canary's backfilled error rate (a Prometheus is
    /// started only when it is given).
    async fn setup(ns: &'a TestNs, error_rate: Option<f64>) -> Env<'a> {
        ns.show("HTTPRoutes", route_resource());
        ns.versions(&[STABLE, CANARY], 1).await;
        let created = ns.create_dynamic(&route_resource(), http_route()).await;
        assert_eq!(
            rule_weights(&created).1,
            None,
            "the route starts without a canary backendRef"
        );
        let prometheus = match error_rate {
            Some(rate) => {
                let data = metrics(&ns.name, rate);
                let server = tokio::task::spawn_blocking(move || {
                    PrometheusServer::start_with_openmetrics(&data)
                })
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                ns.note(format!(
                    "Prometheus at {} (canary error rate {rate})",
                    server.address()
                ));
                Some(server)
            }
            None => None,
        };
        let operator = ns.start_admin_operator().await;
        Env {
            ns,
            route_as_created: created,
            prometheus,
            operator,
        }
    }

    fn route_as_created(&self) -> &DynamicObject {
        &self.route_as_created
    }

    async fn create_rollout(&self, rollout: Rollout) {
        self.ns.create(&rollout).await;
        eprintln!("[e2e] {}: Rollout {ROLLOUT} created", self.ns.name);
    }

    async fn delete_rollout(&self) {
        self.ns
            .api::<Rollout>()
            .delete(ROLLOUT, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("cannot delete Rollout {ROLLOUT}: {e}"));
    }

    /// Poll until the Rollout is gone: the operator removed its finalizer.
    async fn wait_for_rollout_gone(&self, timeout: Duration) {
        let rollouts = self.ns.raw_rollouts();
        eventually(
            &format!(
                "Rollout {ROLLOUT} to disappear (the operator removes its finalizer {FINALIZER})"
            ),
            timeout,
            || {
                let rollouts = rollouts.clone();
                async move {
                    self.operator.check_alive();
                    match rollouts.get_opt(ROLLOUT).await {
                        Ok(None) => Ok(()),
                        Ok(Some(r)) => Err(format!(
                            "still there: deletionTimestamp={:?} finalizers={:?}",
                            r.metadata.deletion_timestamp,
                            r.finalizers()
                        )),
                        Err(e) => Err(format!("get: {e}")),
                    }
                }
            },
        )
        .await;
    }

    async fn route(&self) -> DynamicObject {
        self.ns
            .dynamic(&route_resource())
            .get(ROUTE)
            .await
            .unwrap_or_else(|e| panic!("cannot read HTTPRoute {ROUTE}: {e}"))
    }
}

impl Drop for Env<'_> {
    fn drop(&mut self) {
        // Prometheus's Drop waits for the server to stop.
        if let Some(p) = self.prometheus.take() {
            std::thread::spawn(move || drop(p));
        }
    }
}

fn route_resource() -> ApiResource {
    ApiResource::erase::<HttpRoute>(&())
}

// ---------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------

/// All `/checkout` traffic to the stable Service, plus a second rule the
/// operator must leave alone.
fn http_route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "labels": {"team": "checkout"}},
        "spec": {
            "parentRefs": [{"name": GATEWAY}],
            "hostnames": [HOSTNAME],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/checkout"}}],
                    "backendRefs": [{"name": STABLE, "port": 80}]
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                    "backendRefs": [{"name": OTHER_BACKEND, "port": 80}]
                }
            ]
        }
    })
}

/// 20% -> pause 10s -> 100%, with the error rate checked every 5 s against
/// the test's Prometheus.
fn rollout_with_analysis(env: &Env) -> Rollout {
    let prometheus = env
        .prometheus
        .as_ref()
        .expect("this scenario starts a Prometheus");
    analysed_rollout(&env.ns.name, &prometheus.address())
}

fn analysed_rollout(ns: &str, prometheus: &str) -> Rollout {
    rollout(
        ns,
        json!([{"setWeight": 20}, {"pause": {"duration": "10s"}}, {"setWeight": 100}]),
        Some(json!({
            "interval": "5s",
            "prometheus": {"address": prometheus},
            "metrics": [{"name": "error-rate", "query": ERROR_RATE_QUERY, "max": MAX_ERROR_RATE}]
        })),
    )
}

/// 20% -> pause until promoted -> 100%, no analysis: stays at 20%.
fn held_rollout(ns: &str) -> Rollout {
    rollout(
        ns,
        json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]),
        None,
    )
}

fn rollout(ns: &str, steps: Value, analysis: Option<Value>) -> Rollout {
    let mut spec = json!({
        "stable": {"service": STABLE, "deployment": STABLE},
        "canary": {"service": CANARY, "deployment": CANARY},
        "trafficRouting": {"gatewayAPI": {"httpRoute": ROUTE}},
        "steps": steps,
    });
    if let Some(analysis) = analysis {
        spec["analysis"] = analysis;
    }
    serde_json::from_value(json!({
        "apiVersion": "rollwise.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": ROLLOUT, "namespace": ns},
        "spec": spec,
    }))
    .expect("a valid Rollout")
}

/// `http_requests_total` of both Services in `ns`: 10 requests/s each, a
/// share `canary_error_rate` of the canary's with code 500; the stable's
/// all 200.
fn metrics(ns: &str, canary_error_rate: f64) -> String {
    const RATE: f64 = 10.0;
    let errors = RATE * canary_error_rate;
    Backfill::new()
        .counter(
            "http_requests_total",
            &[("namespace", ns), ("service", CANARY), ("code", "200")],
            RATE - errors,
        )
        .counter(
            "http_requests_total",
            &[("namespace", ns), ("service", CANARY), ("code", "500")],
            errors,
        )
        .counter(
            "http_requests_total",
            &[("namespace", ns), ("service", STABLE), ("code", "200")],
            RATE,
        )
        .to_openmetrics()
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

fn condition<'a>(r: &'a Rollout, type_: &str) -> &'a Condition {
    let conditions = r
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:?}"))
}

/// `(stable, canary)` weights of the route's first rule; `None` when the
/// rule has no backendRef to that Service; an absent weight is 1 (the
/// Gateway API default).
fn rule_weights(route: &DynamicObject) -> (Option<i64>, Option<i64>) {
    let refs = route.data["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .unwrap_or_else(|| {
            panic!(
                "the route has no spec.rules[0].backendRefs: {}",
                pretty(&route.data)
            )
        });
    let weight = |service: &str| {
        refs.iter().find(|r| r["name"] == service).map(|r| {
            r.get("weight")
                .map_or(1, |w| w.as_i64().expect("an integer weight"))
        })
    };
    (weight(STABLE), weight(CANARY))
}

/// Everything but the weights of the first rule's stable and canary
/// backendRefs is as created: metadata labels, parentRefs, hostnames, the
/// first rule's matches (and the stable ref's other fields), the second rule.
fn assert_route_otherwise_unchanged(before: &DynamicObject, after: &DynamicObject) {
    fn masked(spec: &Value) -> Value {
        let mut spec = spec.clone();
        if let Some(refs) = spec["rules"][0]["backendRefs"].as_array_mut() {
            refs.retain(|r| r["name"] != CANARY);
            for r in refs.iter_mut().filter(|r| r["name"] == STABLE) {
                if let Some(obj) = r.as_object_mut() {
                    obj.remove("weight");
                }
            }
        }
        spec
    }
    assert_eq!(
        after.metadata.labels, before.metadata.labels,
        "the operator changed the HTTPRoute's labels"
    );
    let (before_spec, after_spec) = (masked(&before.data["spec"]), masked(&after.data["spec"]));
    assert!(
        before_spec == after_spec,
        "the HTTPRoute changed beyond the stable/canary weights of its first rule.\nas created (weights masked):\n{}\nnow (weights masked):\n{}",
        pretty(&before_spec),
        pretty(&after_spec)
    );
}
