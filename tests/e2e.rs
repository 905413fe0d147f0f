//! End-to-end tests: the real `rollwise run` binary against a real
//! Kubernetes cluster, with a real Prometheus serving backfilled metrics.
//!
//! They run only when `ROLLWISE_E2E_KUBECONFIG` names a kubeconfig file
//! (its current context is used; a relative path is relative to the crate
//! root); otherwise every cluster test prints `SKIPPED: ...` to stderr and
//! passes. The `offline_*` tests check the fixtures (the Rollouts pass the
//! CRD's admission rules, the backfilled metrics give the intended verdicts,
//! the route comparison) and always run.
//!
//! ```text
//! ROLLWISE_E2E_KUBECONFIG=$HOME/.kube/kind-config cargo test --test e2e -- --nocapture
//! ```
//!
//! What the cluster needs:
//! - the Gateway API standard CRDs (`httproutes.gateway.networking.k8s.io`
//!   serving `v1`); no Gateway controller is needed: the HTTPRoute refers to
//!   a Gateway `e2e` that does not exist, and nothing here sends traffic;
//! - rights to create CRDs and namespaces (the tests install or upgrade
//!   `crds/rollout.yaml` by server-side apply, as field manager `rollwise-e2e`);
//! - nodes that can pull `registry.k8s.io/pause:3.10` (override the image with
//!   `ROLLWISE_E2E_IMAGE`, e.g. for a mirror).
//!
//! What this machine needs: `prometheus` and `promtool`
//! (`bash scripts/install-test-deps.sh`). The operator runs here, as a child
//! process with `KUBECONFIG` set to the e2e kubeconfig, so it reaches that
//! Prometheus on 127.0.0.1.
//!
//! Every test has its own namespace `rollwise-e2e-<scenario>-<suffix>`
//! (labelled `rollwise.io/e2e=true`), its own operator process (watching only
//! that namespace) and its own Prometheus, so the tests run in parallel. The
//! namespace is deleted at the end, pass or fail: Rollouts first, while the
//! operator still runs to remove its finalizer (or the test strips it), then
//! the namespace. After a run that was killed, clean up with
//! `kubectl delete ns -l rollwise.io/e2e=true` (a Rollout left with the
//! `rollwise.io/restore-stable` finalizer and no operator keeps its namespace
//! Terminating: remove the finalizer with `kubectl patch rollout ... --type=merge
//! -p '{"metadata":{"finalizers":null}}'`).
//!
//! On failure the test prints the operator's log, the Rollouts (status
//! included), the HTTPRoute, the Deployments and the namespace's Events.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::gateway_api::apis::standard::httproutes::HttpRoute;
use common::prometheus::{Backfill, PrometheusServer, free_port};
use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Service, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use rollwise::analysis::provider::prometheus::PrometheusProvider;
use rollwise::analysis::{MetricsProvider, QueryOutcome, render_query};
use rollwise::api::{FINALIZER, Phase, Rollout};
use serde_json::{Value, json};

/// Names the kubeconfig of the cluster to test against.
const KUBECONFIG_ENV: &str = "ROLLWISE_E2E_KUBECONFIG";
/// Overrides the container image of the two Deployments.
const IMAGE_ENV: &str = "ROLLWISE_E2E_IMAGE";
/// Runs (and does nothing) as a non-root user: enough, no traffic is sent.
const DEFAULT_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// Field manager of every write the tests make.
const FIELD_MANAGER: &str = "rollwise-e2e";
/// Label on the test namespaces (value `true`).
const E2E_LABEL: &str = "rollwise.io/e2e";

const HTTPROUTE_CRD: &str = "httproutes.gateway.networking.k8s.io";
const GATEWAY_API_INSTALL: &str = "kubectl apply --server-side -f \
     https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.5.1/standard-install.yaml";
const ROLLOUT_CRD_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/rollout.yaml");

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

const POLL: Duration = Duration::from_secs(1);
const CRD_TIMEOUT: Duration = Duration::from_secs(60);
const SERVICE_ACCOUNT_TIMEOUT: Duration = Duration::from_secs(60);
const DEPLOYMENT_TIMEOUT: Duration = Duration::from_secs(180);
const OPERATOR_READY_TIMEOUT: Duration = Duration::from_secs(60);
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);
const DELETE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the teardown waits for the operator to finalize Rollouts before
/// stripping the finalizer itself.
const TEARDOWN_FINALIZE_TIMEOUT: Duration = Duration::from_secs(30);

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
    scenario("promote", Some(HEALTHY_ERROR_RATE), async |env: &Env| {
        env.create_rollout(rollout_with_analysis(env)).await;
        let r = env.wait_for(Phase::Succeeded, 100, ROLLOUT_TIMEOUT).await;
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
    scenario("rollback", Some(FAULTY_ERROR_RATE), async |env: &Env| {
        env.create_rollout(rollout_with_analysis(env)).await;
        let r = env.wait_for(Phase::RolledBack, 0, ROLLOUT_TIMEOUT).await;
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
    scenario("delete", None, async |env: &Env| {
        env.create_rollout(held_rollout(&env.ns)).await;
        let r = env.wait_for(Phase::Paused, 20, ROLLOUT_TIMEOUT).await;
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
    let crd = rollout_crd();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    assert!(
        schema.is_object(),
        "{ROLLOUT_CRD_FILE} has no openAPIV3Schema"
    );
    let ns = unique_namespace("rollback");
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
    let names: std::collections::HashSet<String> =
        (0..1000).map(|_| unique_namespace("rollback")).collect();
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
    let mut created = http_route("ns");
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
    let ns = unique_namespace("promote");
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
        let ready = tokio::task::spawn_blocking(move || http_status(addr, "/-/ready"))
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
// Scenario: connect, prepare, set up, run, diagnose, tear down
// ---------------------------------------------------------------------------

/// Run `body` in a fresh namespace holding the two Deployments, their
/// Services, the HTTPRoute, a Prometheus (when `error_rate` is given: the
/// canary's backfilled error rate) and a running operator. Skips (returns)
/// when no cluster is configured. The namespace is torn down whatever
/// happens; on a panic the diagnostics are printed first, then the panic
/// goes on.
async fn scenario(label: &str, error_rate: Option<f64>, body: impl AsyncFnOnce(&Env)) {
    let Some(cluster) = Cluster::connect().await else {
        return;
    };
    cluster.require_gateway_api().await;
    cluster.install_rollout_crd().await;
    let mut env = cluster.create_namespace(label).await;
    let outcome = AssertUnwindSafe(async {
        env.setup(error_rate).await;
        body(&env).await;
    })
    .catch_unwind()
    .await;
    if outcome.is_err() {
        eprintln!("{}", env.diagnostics().await);
    }
    env.teardown().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The cluster of `ROLLWISE_E2E_KUBECONFIG`.
struct Cluster {
    client: Client,
    /// Absolute path of the kubeconfig (handed to the operator).
    kubeconfig: PathBuf,
}

impl Cluster {
    /// `None` (after printing why) when no cluster is configured.
    async fn connect() -> Option<Cluster> {
        let Some(path) = std::env::var_os(KUBECONFIG_ENV).filter(|p| !p.is_empty()) else {
            eprintln!(
                "SKIPPED: set {KUBECONFIG_ENV}=/path/to/kubeconfig to run the end-to-end tests against a real cluster"
            );
            return None;
        };
        let path = std::path::absolute(PathBuf::from(&path))
            .unwrap_or_else(|e| panic!("{KUBECONFIG_ENV}={path:?}: {e}"));
        assert!(
            path.is_file(),
            "{KUBECONFIG_ENV}={} is not a file (unset it to skip the end-to-end tests)",
            path.display()
        );
        let kubeconfig = Kubeconfig::read_from(&path)
            .unwrap_or_else(|e| panic!("cannot read the kubeconfig {}: {e}", path.display()));
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("cannot use the kubeconfig {}: {e}", path.display()));
        // The same TLS set-up as the `rollwise` binary.
        rollwise::install_crypto_provider();
        let client = Client::try_from(config)
            .unwrap_or_else(|e| panic!("cannot build a client for {}: {e}", path.display()));
        Some(Cluster {
            client,
            kubeconfig: path,
        })
    }

    /// Fails clearly when the HTTPRoute CRD is absent or does not serve v1.
    async fn require_gateway_api(&self) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let crd = match crds.get_opt(HTTPROUTE_CRD).await {
            Ok(Some(crd)) => crd,
            Ok(None) => panic!(
                "the Gateway API CRD {HTTPROUTE_CRD} is not installed in the cluster of {KUBECONFIG_ENV}: \
                 install the Gateway API standard CRDs first, e.g.\n    {GATEWAY_API_INSTALL}"
            ),
            Err(e) => panic!(
                "cannot read the CRD {HTTPROUTE_CRD} ({e}); the e2e kubeconfig needs rights to read \
                 and create CustomResourceDefinitions"
            ),
        };
        assert!(
            crd.spec.versions.iter().any(|v| v.name == "v1" && v.served),
            "the Gateway API CRD {HTTPROUTE_CRD} does not serve v1 (too old): upgrade the Gateway API \
             standard CRDs, e.g.\n    {GATEWAY_API_INSTALL}"
        );
    }

    /// Install or upgrade `crds/rollout.yaml` (server-side apply, forced),
    /// then wait until it is Established and Rollouts are served.
    async fn install_rollout_crd(&self) {
        let crd = rollout_crd();
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{ROLLOUT_CRD_FILE} has no metadata.name"))
            .to_string();
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        crds.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot apply {ROLLOUT_CRD_FILE} (CRD {name}): {e}"));

        let deadline = Deadline::new(format!("CRD {name} to be Established"), CRD_TIMEOUT);
        loop {
            let crd = crds
                .get(&name)
                .await
                .unwrap_or_else(|e| panic!("cannot read CRD {name}: {e}"));
            let conditions = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let is = |type_: &str, status: &str| {
                conditions
                    .iter()
                    .any(|c| c.type_ == type_ && c.status == status)
            };
            if let Some(c) = conditions
                .iter()
                .find(|c| c.type_ == "NamesAccepted" && c.status == "False")
            {
                panic!(
                    "CRD {name}: names not accepted: {} ({})",
                    c.message.as_deref().unwrap_or(""),
                    c.reason.as_deref().unwrap_or("")
                );
            }
            if is("Established", "True") {
                break;
            }
            deadline.wait(format!("conditions: {conditions:?}")).await;
        }

        // Established means the API server serves it; still, check with a
        // request (other API servers behind a load balancer may lag).
        let rollouts: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &ApiResource::erase::<Rollout>(&()));
        let deadline = Deadline::new("rollouts.rollwise.io to be served".into(), CRD_TIMEOUT);
        loop {
            match rollouts.list(&ListParams::default().limit(1)).await {
                Ok(_) => break,
                Err(e) => deadline.wait(format!("list rollouts: {e}")).await,
            }
        }
    }

    /// A fresh, uniquely named namespace labelled `rollwise.io/e2e=true`.
    async fn create_namespace(&self, label: &str) -> Env {
        let name = unique_namespace(label);
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {E2E_LABEL: "true"}}
        }))
        .expect("static namespace");
        namespaces
            .create(&post_params(), &ns)
            .await
            .unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
        eprintln!("[e2e] namespace {name} created");
        Env {
            client: self.client.clone(),
            kubeconfig: self.kubeconfig.clone(),
            ns: name,
            route_as_created: None,
            prometheus: None,
            operator: None,
        }
    }
}

/// `crds/rollout.yaml` as JSON.
fn rollout_crd() -> Value {
    let text = std::fs::read_to_string(ROLLOUT_CRD_FILE)
        .unwrap_or_else(|e| panic!("cannot read {ROLLOUT_CRD_FILE}: {e}"));
    serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{ROLLOUT_CRD_FILE} is not valid YAML: {e}"))
}

/// `rollwise-e2e-<label>-<10 hex digits>`: unique across runs and tests.
fn unique_namespace(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64;
    let mixed =
        (nanos ^ (u64::from(std::process::id()) << 40) ^ COUNTER.fetch_add(1, Ordering::Relaxed))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("rollwise-e2e-{label}-{:010x}", mixed >> 24)
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// One test's namespace and what runs for it.
struct Env {
    client: Client,
    kubeconfig: PathBuf,
    ns: String,
    /// The HTTPRoute as the API server returned it from the create
    /// (defaults filled in).
    route_as_created: Option<DynamicObject>,
    prometheus: Option<PrometheusServer>,
    operator: Option<Operator>,
}

impl Env {
    fn rollouts(&self) -> Api<Rollout> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Rollouts as raw objects: a status this build cannot parse still shows.
    fn raw_rollouts(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.ns,
            &ApiResource::erase::<Rollout>(&()),
        )
    }

    fn routes(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.ns,
            &ApiResource::erase::<HttpRoute>(&()),
        )
    }

    fn route_as_created(&self) -> &DynamicObject {
        self.route_as_created
            .as_ref()
            .expect("the route was created in setup")
    }

    async fn setup(&mut self, error_rate: Option<f64>) {
        self.wait_for_default_service_account().await;
        let image = std::env::var(IMAGE_ENV)
            .ok()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| DEFAULT_IMAGE.to_string());
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.ns);
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        for name in [STABLE, CANARY] {
            deployments
                .create(&post_params(), &deployment(&self.ns, name, &image))
                .await
                .unwrap_or_else(|e| panic!("cannot create Deployment {name}: {e}"));
            services
                .create(&post_params(), &service(&self.ns, name))
                .await
                .unwrap_or_else(|e| panic!("cannot create Service {name}: {e}"));
        }
        let route = http_route(&self.ns);
        let created = self
            .routes()
            .create(&post_params(), &route)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot create HTTPRoute {ROUTE}: {e}\n{}",
                    pretty(&route.data)
                )
            });
        assert_eq!(
            rule_weights(&created).1,
            None,
            "the route starts without a canary backendRef"
        );
        self.route_as_created = Some(created);

        self.wait_for_deployments(&image).await;

        if let Some(rate) = error_rate {
            let data = metrics(&self.ns, rate);
            let server = tokio::task::spawn_blocking(move || {
                PrometheusServer::start_with_openmetrics(&data)
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            eprintln!(
                "[e2e] {}: Prometheus at {} (canary error rate {rate})",
                self.ns,
                server.address()
            );
            self.prometheus = Some(server);
        }

        self.operator = Some(Operator::start(&self.kubeconfig, &self.ns));
        self.operator.as_ref().expect("just set").wait_ready().await;
    }

    /// Pods are only admitted once the namespace's `default` ServiceAccount
    /// exists (the ReplicaSet controller would retry, but with backoff).
    async fn wait_for_default_service_account(&self) {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.ns);
        let deadline = Deadline::new(
            format!("ServiceAccount {}/default to be created", self.ns),
            SERVICE_ACCOUNT_TIMEOUT,
        );
        loop {
            match accounts.get_opt("default").await {
                Ok(Some(_)) => return,
                Ok(None) => deadline.wait("not yet created".to_string()).await,
                Err(e) => deadline.wait(format!("get: {e}")).await,
            }
        }
    }

    /// Both Deployments rolled out with every replica available (what the
    /// operator checks before shifting traffic).
    async fn wait_for_deployments(&self, image: &str) {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.ns);
        let deadline = Deadline::new(
            format!("Deployments {STABLE} and {CANARY} (image {image}) to be available"),
            DEPLOYMENT_TIMEOUT,
        );
        loop {
            let mut waiting = Vec::new();
            for name in [STABLE, CANARY] {
                match deployments.get(name).await {
                    Ok(d) => {
                        if let Some(why) = deployment_not_available(&d) {
                            waiting.push(format!("{name}: {why}"));
                        }
                    }
                    Err(e) => waiting.push(format!("{name}: get: {e}")),
                }
            }
            if waiting.is_empty() {
                return;
            }
            deadline.wait(waiting.join("; ")).await;
        }
    }

    async fn create_rollout(&self, rollout: Rollout) {
        self.rollouts()
            .create(&post_params(), &rollout)
            .await
            .unwrap_or_else(|e| panic!("cannot create Rollout {ROLLOUT}: {e}"));
        eprintln!("[e2e] {}: Rollout {ROLLOUT} created", self.ns);
    }

    /// Poll the Rollout until its phase is `want` and `status.canaryWeight`
    /// is `weight` (when the weight goes down, the operator records the new
    /// phase before it moves the traffic and records the weight after: the
    /// phase alone does not mean the route is done). Fails at once on another
    /// terminal phase, or when the operator exits.
    async fn wait_for(&self, want: Phase, weight: i32, timeout: Duration) -> Rollout {
        let deadline = Deadline::new(
            format!(
                "Rollout {ROLLOUT} to reach phase {} with canary weight {weight}",
                want.as_str()
            ),
            timeout,
        );
        let mut last_seen = String::new();
        loop {
            self.operator().check_alive();
            let r = self
                .rollouts()
                .get(ROLLOUT)
                .await
                .unwrap_or_else(|e| panic!("cannot read Rollout {ROLLOUT}: {e}"));
            let summary = match &r.status {
                None => "no status yet".to_string(),
                Some(s) => format!(
                    "phase={} step={} weight={} verdict={}: {}",
                    s.phase.as_str(),
                    s.step,
                    s.canary_weight,
                    s.verdict,
                    s.message
                ),
            };
            if summary != last_seen {
                eprintln!("[e2e] {}: {summary}", self.ns);
                last_seen = summary.clone();
            }
            if let Some(s) = &r.status {
                if s.phase == want && s.canary_weight == weight {
                    return r;
                }
                assert!(
                    s.phase == want || !s.phase.is_terminal(),
                    "Rollout {ROLLOUT} ended in phase {} instead of {}: {summary}",
                    s.phase.as_str(),
                    want.as_str()
                );
            }
            deadline.wait(summary).await;
        }
    }

    async fn delete_rollout(&self) {
        self.rollouts()
            .delete(ROLLOUT, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("cannot delete Rollout {ROLLOUT}: {e}"));
        eprintln!("[e2e] {}: Rollout {ROLLOUT} deleted", self.ns);
    }

    /// Poll until the Rollout is gone: the operator removed its finalizer.
    async fn wait_for_rollout_gone(&self, timeout: Duration) {
        let deadline = Deadline::new(
            format!(
                "Rollout {ROLLOUT} to disappear (the operator removes its finalizer {FINALIZER})"
            ),
            timeout,
        );
        loop {
            self.operator().check_alive();
            match self.raw_rollouts().get_opt(ROLLOUT).await {
                Ok(None) => return,
                Ok(Some(r)) => {
                    deadline
                        .wait(format!(
                            "still there: deletionTimestamp={:?} finalizers={:?}",
                            r.metadata.deletion_timestamp,
                            r.finalizers()
                        ))
                        .await
                }
                Err(e) => deadline.wait(format!("get: {e}")).await,
            }
        }
    }

    async fn route(&self) -> DynamicObject {
        self.routes()
            .get(ROUTE)
            .await
            .unwrap_or_else(|e| panic!("cannot read HTTPRoute {ROUTE}: {e}"))
    }

    fn operator(&self) -> &Operator {
        self.operator
            .as_ref()
            .expect("the operator was started in setup")
    }

    /// Everything that helps to understand a failure. Never panics.
    async fn diagnostics(&self) -> String {
        let mut out = format!(
            "\n===== rollwise e2e diagnostics: namespace {} =====\n",
            self.ns
        );
        out.push_str("\n--- Rollouts ---\n");
        match self.raw_rollouts().list(&ListParams::default()).await {
            Ok(list) if list.items.is_empty() => out.push_str("(none)\n"),
            Ok(list) => {
                for r in list.items {
                    let shown = json!({
                        "name": r.name_any(),
                        "finalizers": r.finalizers(),
                        "deletionTimestamp": r.metadata.deletion_timestamp,
                        "generation": r.metadata.generation,
                        "spec": r.data.get("spec"),
                        "status": r.data.get("status"),
                    });
                    out.push_str(&pretty(&shown));
                    out.push('\n');
                }
            }
            Err(e) => out.push_str(&format!("cannot list Rollouts: {e}\n")),
        }
        out.push_str(&format!("\n--- HTTPRoute {ROUTE} ---\n"));
        match self.routes().get_opt(ROUTE).await {
            Ok(Some(route)) => {
                out.push_str(&pretty(
                    &json!({"spec": route.data.get("spec"), "status": route.data.get("status")}),
                ));
                out.push('\n');
            }
            Ok(None) => out.push_str("(none)\n"),
            Err(e) => out.push_str(&format!("cannot read it: {e}\n")),
        }
        out.push_str("\n--- Deployments ---\n");
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.ns);
        match deployments.list(&ListParams::default()).await {
            Ok(list) => {
                for d in list.items {
                    let why = deployment_not_available(&d).unwrap_or_else(|| "available".into());
                    out.push_str(&format!("{}: {why}\n", d.name_any()));
                }
            }
            Err(e) => out.push_str(&format!("cannot list Deployments: {e}\n")),
        }
        out.push_str("\n--- Events ---\n");
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        match events.list(&ListParams::default()).await {
            Ok(list) => {
                let mut items = list.items;
                items.sort_by_key(|e| {
                    e.last_timestamp
                        .as_ref()
                        .map(|t| t.0)
                        .or(e.event_time.as_ref().map(|t| t.0))
                        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
                });
                for e in items {
                    out.push_str(&format!(
                        "{} {} {}/{}: {}\n",
                        e.type_.as_deref().unwrap_or("-"),
                        e.reason.as_deref().unwrap_or("-"),
                        e.involved_object.kind.as_deref().unwrap_or("-"),
                        e.involved_object.name.as_deref().unwrap_or("-"),
                        e.message.as_deref().unwrap_or(""),
                    ));
                }
            }
            Err(e) => out.push_str(&format!("cannot list Events: {e}\n")),
        }
        match &self.operator {
            Some(op) => {
                out.push_str(&format!(
                    "\n--- operator log ({}) ---\n",
                    op.log_path.display()
                ));
                out.push_str(&tail(&op.log(), 400));
            }
            None => out.push_str("\n--- operator: not started ---\n"),
        }
        if let Some(p) = &self.prometheus {
            out.push_str(&format!("\n--- Prometheus log ({}) ---\n", p.address()));
            out.push_str(&tail(&p.log(), 100));
        }
        out.push_str("\n===== end of diagnostics =====\n");
        out
    }

    /// Delete the Rollouts while the operator still runs (it restores the
    /// route and removes its finalizer; after a while the finalizer is
    /// stripped here so the namespace cannot hang in Terminating), stop the
    /// operator and Prometheus, delete the namespace. Never panics.
    async fn teardown(mut self) {
        let rollouts = self.raw_rollouts();
        if let Err(e) = rollouts
            .delete_collection(&DeleteParams::background(), &ListParams::default())
            .await
        {
            eprintln!(
                "[e2e] {}: teardown: cannot delete the Rollouts: {e}",
                self.ns
            );
        }
        let operator_alive = self.operator.as_ref().is_some_and(Operator::is_alive);
        let deadline = Instant::now()
            + if operator_alive {
                TEARDOWN_FINALIZE_TIMEOUT
            } else {
                Duration::ZERO
            };
        loop {
            let left = match rollouts.list(&ListParams::default()).await {
                Ok(list) => list.items,
                Err(e) => {
                    eprintln!("[e2e] {}: teardown: cannot list the Rollouts: {e}", self.ns);
                    break;
                }
            };
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for r in left {
                    let name = r.name_any();
                    eprintln!(
                        "[e2e] {}: teardown: Rollout {name} still has finalizers {:?}; removing them",
                        self.ns,
                        r.finalizers()
                    );
                    let patch = json!({"metadata": {"finalizers": null}});
                    if let Err(e) = rollouts
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        eprintln!(
                            "[e2e] {}: teardown: cannot remove the finalizers of {name}: {e}",
                            self.ns
                        );
                    }
                }
                break;
            }
            tokio::time::sleep(POLL).await;
        }

        drop(self.operator.take());
        if let Some(prometheus) = self.prometheus.take() {
            // Its Drop waits for the server to stop.
            let _ = tokio::task::spawn_blocking(move || drop(prometheus)).await;
        }

        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces
            .delete(&self.ns, &DeleteParams::background())
            .await
        {
            Ok(_) => eprintln!("[e2e] namespace {} deleted", self.ns),
            Err(e) => eprintln!(
                "[e2e] cannot delete namespace {} ({e}): delete it by hand (kubectl delete ns -l {E2E_LABEL}=true)",
                self.ns
            ),
        }
    }
}

/// Why a Deployment is not fully available (the operator's test: the
/// controller saw the latest spec, every replica updated and available).
fn deployment_not_available(d: &Deployment) -> Option<String> {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        return Some("the latest spec is not observed yet".into());
    }
    let available = status.available_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    if available >= want && updated >= want {
        return None;
    }
    let conditions: Vec<String> = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| format!("{}={} {}", c.type_, c.status, c.message.unwrap_or_default()))
        .collect();
    Some(format!(
        "{available}/{want} available, {updated}/{want} updated [{}]",
        conditions.join("; ")
    ))
}

// ---------------------------------------------------------------------------
// The operator process
// ---------------------------------------------------------------------------

/// `rollwise run` as a child process, its stdout and stderr in a log file;
/// killed on drop.
struct Operator {
    child: Mutex<Child>,
    addr: SocketAddr,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Operator {
    fn start(kubeconfig: &Path, ns: &str) -> Operator {
        let dir = tempfile::Builder::new()
            .prefix("rollwise-e2e-operator-")
            .tempdir()
            .expect("create a temporary directory");
        let log_path = dir.path().join("operator.log");
        let log = File::create(&log_path).expect("create the operator log file");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        // Prometheus is on 127.0.0.1: never through a proxy.
        let no_proxy = ["NO_PROXY", "no_proxy"]
            .iter()
            .filter_map(|k| std::env::var(k).ok())
            .filter(|v| !v.is_empty())
            .chain(["127.0.0.1,localhost".to_string()])
            .collect::<Vec<_>>()
            .join(",");
        let mut command = Command::new(env!("CARGO_BIN_EXE_rollwise"));
        // The operator's settings come from the flags below only: none of
        // the developer's ROLLWISE_* (leader election, notifications, a
        // default Prometheus, ...) or in-cluster identity variables.
        for (key, _) in std::env::vars_os() {
            let key_str = key.to_string_lossy();
            if key_str.starts_with("ROLLWISE_")
                || ["POD_NAME", "POD_NAMESPACE", "RUST_LOG"].contains(&key_str.as_ref())
            {
                command.env_remove(&key);
            }
        }
        let child = command
            .args(["--log-format", "text", "--log", "info,rollwise=debug"])
            .arg("run")
            .args(["--namespace", ns])
            .args(["--http-addr", &addr.to_string()])
            .env("KUBECONFIG", kubeconfig)
            .env("NO_COLOR", "1")
            .env("NO_PROXY", &no_proxy)
            .env("no_proxy", &no_proxy)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", env!("CARGO_BIN_EXE_rollwise")));
        eprintln!(
            "[e2e] {ns}: operator started (pid {}, http {addr}, log {})",
            child.id(),
            log_path.display()
        );
        Operator {
            child: Mutex::new(child),
            addr,
            log_path,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn is_alive(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        matches!(child.try_wait(), Ok(None))
    }

    /// Panics (with the log) when the operator has exited.
    fn check_alive(&self) {
        let status = {
            let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
            child.try_wait().expect("poll the operator process")
        };
        if let Some(status) = status {
            panic!("the operator exited ({status}); its log:\n{}", self.log());
        }
    }

    /// Wait until `/readyz` answers 200 (the Rollout watch has synced).
    async fn wait_ready(&self) {
        let deadline = Deadline::new(
            format!("the operator's http://{}/readyz", self.addr),
            OPERATOR_READY_TIMEOUT,
        );
        loop {
            self.check_alive();
            let addr = self.addr;
            let status = tokio::task::spawn_blocking(move || http_status(addr, "/readyz"))
                .await
                .expect("the readiness probe does not panic");
            match status {
                Ok(200) => return,
                Ok(code) => deadline.wait(format!("status {code}")).await,
                Err(e) => deadline.wait(e).await,
            }
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Status code of a plain HTTP/1.0 GET on 127.0.0.1.
fn http_status(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&head);
    text.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {text:?}"))
}

// ---------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------

/// One replica of `image`, doing nothing, allowed by the `restricted` Pod
/// Security Standard.
fn deployment(ns: &str, name: &str, image: &str) -> Deployment {
    let labels = json!({"app": "checkout", "version": name});
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 1,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65535,
                        "runAsGroup": 65535,
                        "seccompProfile": {"type": "RuntimeDefault"}
                    },
                    "containers": [{
                        "name": "app",
                        "image": image,
                        "resources": {
                            "requests": {"cpu": "5m", "memory": "8Mi"},
                            "limits": {"memory": "32Mi"}
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}
                        }
                    }]
                }
            }
        }
    }))
    .expect("static deployment")
}

fn service(ns: &str, name: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "checkout"}},
        "spec": {
            "selector": {"app": "checkout", "version": name},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]
        }
    }))
    .expect("static service")
}

/// All `/checkout` traffic to the stable Service, plus a second rule the
/// operator must leave alone.
fn http_route(ns: &str) -> DynamicObject {
    let mut route = DynamicObject::new(ROUTE, &ApiResource::erase::<HttpRoute>(&()))
        .within(ns)
        .data(json!({
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
        }));
    route.metadata.labels = Some([("team".to_string(), "checkout".to_string())].into());
    route
}

/// 20% -> pause 10s -> 100%, with the error rate checked every 5 s against
/// the test's Prometheus.
fn rollout_with_analysis(env: &Env) -> Rollout {
    let prometheus = env
        .prometheus
        .as_ref()
        .expect("this scenario starts a Prometheus");
    analysed_rollout(&env.ns, &prometheus.address())
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

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// A bounded wait: `wait` sleeps one poll interval, or panics with the last
/// observed state once the time is up.
struct Deadline {
    what: String,
    timeout: Duration,
    end: Instant,
}

impl Deadline {
    fn new(what: String, timeout: Duration) -> Self {
        Deadline {
            what,
            timeout,
            end: Instant::now() + timeout,
        }
    }

    async fn wait(&self, last_state: String) {
        if Instant::now() >= self.end {
            panic!(
                "timed out after {:?} waiting for {}; last state: {last_state}",
                self.timeout, self.what
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("(not serializable: {e})"))
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("[... {start} earlier lines ...]\n"));
    }
    for line in &all[start..] {
        out.push_str(line);
        out.push('\n');
    }
    out
}
