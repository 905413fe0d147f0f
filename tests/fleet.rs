//! Fleet smoke runs on the real API server (the CI kit): a few hundred
//! Rollouts, the operator as a child process (`rollwise run --namespace`,
//! admin kubeconfig), and what it costs, counted from the operator's own
//! API requests and reconciles. The full measurement (1,000 and 10,000
//! Rollouts, RSS over a soak) is `cargo bench --bench fleet`; both use
//! `tests/common/fleet.rs`.
//!
//! Without a cluster the cluster tests print one `SKIPPED` line and pass.
//!
//! ```text
//! ROLLWISE_E2E_KUBECONFIG=/path/to/kubeconfig cargo test --test fleet -- --nocapture
//! ```

mod common;
#[path = "common/fleet.rs"]
mod fleet;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use common::cluster::Cluster;
use fleet::{
    FleetOptions, FleetReport, Scenario, classify, counts_total, counts_without_watches, run_fleet,
    samples_of,
};
use futures::FutureExt;
use serde_json::json;

/// Run `body` with a fresh namespace; the namespace is deleted afterwards
/// whatever happens (finalizers stripped first: the operator may be gone).
async fn with_namespace<F, Fut>(cluster: &Cluster, label: &str, body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let ns = cluster.create_namespace(label).await;
    let outcome = AssertUnwindSafe(body(ns.clone())).catch_unwind().await;
    fleet::delete_namespace_forcefully(cluster, &ns).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn options(cluster: &Cluster, ns: &str, rollouts: usize, scenario: Scenario) -> FleetOptions {
    FleetOptions {
        rollouts,
        scenario,
        namespaces: vec![ns.to_string()],
        // The CI kit is shared by the other tests: watch only our namespace.
        operator_namespace: Some(ns.to_string()),
        // ROLLWISE_FLEET_OPERATOR: another build to measure (e.g. the
        // release binary of an older commit); by default this crate's.
        operator_bin: std::env::var_os("ROLLWISE_FLEET_OPERATOR")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rollwise"))),
        kubeconfig: cluster.kubeconfig.clone(),
        // Ten Rollouts per pair of Deployments: 20 pods for 200 Rollouts,
        // so the fake kubelet is not what the test waits for. The operator
        // reads each Rollout's Deployments all the same.
        rollouts_per_deployment: 10,
        stable_replicas: 0,
        canary_replicas: 1,
        steps: json!([{"setWeight": 50}, {"pause": {"duration": "2s"}}, {"setWeight": 100}]),
        soak: Duration::from_secs(15),
        sample_every: Duration::from_secs(1),
        empty_baseline: Duration::from_secs(1),
        create_concurrency: 16,
        setup_timeout: Duration::from_secs(120),
        // Far more than a quiet 2-core machine needs (the test goes on as
        // soon as all are done); a machine loaded by parallel builds is slow.
        settle_timeout: Duration::from_secs(180),
        delete_timeout: Duration::from_secs(90),
        apiserver_metrics: false,
        progress_every: Duration::from_secs(10),
        // 20 pods: the kit's own fake kubelet starts them in time.
        fast_kubelet: None,
    }
}

fn show(report: &FleetReport, heading: &str) {
    eprintln!(
        "{}",
        report.markdown(heading, "cargo test --test fleet", &[])
    );
}

/// 200 Rollouts (50% → pause 2s → 100%) all complete, with no 403 and no
/// failed reconcile other than a retried 5xx of the API server; about one
/// reconcile per status transition; and once all are done, the operator
/// makes no API request for 15 s.
///
/// A transition is a change of the Rollout's phase, step or canary weight
/// (5 for these steps: Pending, 50% at step 1, the pause at step 2, 100% at
/// step 3, Succeeded). Bound on reconciles per transition: 1.25. Each
/// transition needs one reconcile; the slack covers a timer that fires a
/// little before a pause ends and a rare conflict retry. Reconciles caused
/// by the operator's own status writes (the watch echoing them back) make
/// it about 1.5 (measured before issue 9).
///
/// "No request" leaves out watches (one long request each, re-opened every
/// few minutes whatever the fleet does). A periodic resync of completed
/// Rollouts would come minutes after they completed, not within 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_200_completes_with_one_reconcile_per_transition_then_goes_quiet() {
    let Some(cluster) = Cluster::connect().await else {
        return;
    };
    let cluster = &cluster;
    cluster.install_rollout_crd().await;
    with_namespace(cluster, "fleet", |ns| async move {
        let options = options(cluster, &ns, 200, Scenario::Complete);
        let report = run_fleet(cluster, &options).await;
        show(&report, "200 Rollouts: complete (smoke)");
        let n = options.rollouts;

        assert!(
            report.settle_seconds.is_some() && report.settled == n,
            "{}/{n} Rollouts completed within {:?}; by phase {:?}; e.g. {:?}",
            report.settled,
            options.settle_timeout,
            report.phases,
            report.unsettled_examples
        );
        assert_eq!(
            report.responses_with("403"),
            0.0,
            "the operator got 403 answers; log: {:?}",
            report.warnings_in_log
        );
        // A loaded API server sometimes answers 5xx (e.g. "etcdserver:
        // request timed out"); the operator retries. Any other failed
        // reconcile (a conflict with itself, a refused write) is a bug.
        let errors: f64 = report.errors().values().sum();
        let server_errors = report.server_errors();
        assert!(
            errors <= server_errors,
            "{errors} failed reconciles ({:?}) for {server_errors} server errors (5xx) from the API server; log: {:?}",
            report.errors(),
            report.warnings_in_log
        );
        assert!(
            report.delete_seconds.is_some(),
            "{} Rollouts were still there {:?} after the delete",
            report.left_after_delete,
            options.delete_timeout
        );

        let active = report.active();
        assert!(
            report.transitions >= n as u64,
            "the watch saw only {} status changes for {n} Rollouts",
            report.transitions
        );
        let per_transition = active.reconciles / report.transitions as f64;
        assert!(
            per_transition <= 1.25,
            "{} reconciles for {} status transitions: {per_transition:.2} per transition (at most 1.25: a reconcile per transition, not one more for the watch event of our own status write)",
            active.reconciles,
            report.transitions
        );

        let soak = report.window("soak").expect("a soak window");
        let idle = counts_without_watches(&soak.requests);
        assert_eq!(
            counts_total(&idle),
            0.0,
            "once every Rollout had completed, the operator still made API requests in {:.0} s (by verb and resource: {idle:?}; {} reconciles)",
            soak.seconds,
            soak.reconciles
        );
    })
    .await;
}

/// 50 Rollouts whose canary Deployments are scaled to 0 (never available)
/// each get a status saying so; then, while they wait, the operator does
/// not poll the API server for them.
///
/// Bound: at most one API request (watches left out) per two waiting
/// Rollouts over the 15 s window, about 2 per Rollout per minute. Polling
/// every few seconds costs far more (a reconcile reads the Rollout, its
/// Services, its Deployments and its route: 6 requests); a resync every
/// few minutes stays under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_rollouts_do_not_poll_the_api_server() {
    let Some(cluster) = Cluster::connect().await else {
        return;
    };
    let cluster = &cluster;
    cluster.install_rollout_crd().await;
    with_namespace(cluster, "fleet-waiting", |ns| async move {
        let mut options = options(cluster, &ns, 50, Scenario::Waiting);
        options.rollouts_per_deployment = 5;
        let report = run_fleet(cluster, &options).await;
        show(&report, "50 Rollouts: waiting (smoke)");
        let n = options.rollouts;

        assert!(
            report.settle_seconds.is_some() && report.settled == n,
            "{}/{n} waiting Rollouts had a status within {:?}; by phase {:?}; e.g. {:?}",
            report.settled,
            options.settle_timeout,
            report.phases,
            report.unsettled_examples
        );
        let soak = report.window("soak").expect("a soak window");
        let waiting = counts_without_watches(&soak.requests);
        let bound = n as f64 / 2.0;
        assert!(
            counts_total(&waiting) <= bound,
            "while {n} Rollouts waited for their canary, the operator made {} API requests in {:.0} s (at most {bound}): {waiting:?}; {} reconciles",
            counts_total(&waiting),
            soak.seconds,
            soak.reconciles
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// The driver's own parsing (no cluster needed)
// ---------------------------------------------------------------------------

#[test]
fn requests_are_classified_by_verb_and_resource() {
    let base = "https://127.0.0.1:6443";
    let cases = [
        (
            "GET",
            "/apis/rollwise.io/v1alpha1/namespaces/shop/rollouts/checkout",
            "get",
            "rollouts",
        ),
        (
            "GET",
            "/apis/rollwise.io/v1alpha1/rollouts?&limit=500",
            "list",
            "rollouts",
        ),
        (
            "GET",
            "/apis/rollwise.io/v1alpha1/rollouts?&watch=true&timeoutSeconds=290",
            "watch",
            "rollouts",
        ),
        (
            "PATCH",
            "/apis/rollwise.io/v1alpha1/namespaces/shop/rollouts/checkout/status?&fieldManager=rollwise",
            "patch",
            "rollouts/status",
        ),
        (
            "GET",
            "/apis/apps/v1/namespaces/shop/deployments/checkout-v2",
            "get",
            "deployments",
        ),
        (
            "GET",
            "/api/v1/namespaces/shop/services/checkout",
            "get",
            "services",
        ),
        (
            "POST",
            "/apis/events.k8s.io/v1/namespaces/shop/events?",
            "create",
            "events",
        ),
        ("GET", "/api/v1/namespaces/shop", "get", "namespaces"),
        (
            "DELETE",
            "/apis/rollwise.io/v1alpha1/namespaces/shop/rollouts",
            "deletecollection",
            "rollouts",
        ),
        (
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/x/leases/l",
            "update",
            "leases",
        ),
    ];
    for (method, path, verb, resource) in cases {
        assert_eq!(
            classify(method, &format!("{base}{path}")),
            (verb.to_string(), resource.to_string()),
            "{method} {path}"
        );
    }
}

#[test]
fn metric_samples_are_read_with_their_labels() {
    let text = "# HELP rollwise_kube_requests_total x\n\
        # TYPE rollwise_kube_requests_total counter\n\
        rollwise_kube_requests_total{code=\"200\",resource=\"rollouts/status\",verb=\"patch\"} 7\n\
        rollwise_kube_requests_total{code=\"404\",resource=\"deployments\",verb=\"get\"} 2\n\
        rollwise_kube_requests_total_other 9\n\
        rollwise_reconciles_total{result=\"ok\"} 3\n";
    let samples = samples_of(text, "rollwise_kube_requests_total");
    assert_eq!(samples.len(), 2, "{samples:?}");
    assert_eq!(
        samples[0].0.get("resource").map(String::as_str),
        Some("rollouts/status")
    );
    assert_eq!(samples[0].1, 7.0);
    let (counts, codes) = fleet::counts_from_metric(text).expect("the family is there");
    assert_eq!(
        counts.get(&("patch".into(), "rollouts/status".into())),
        Some(&7.0)
    );
    assert_eq!(
        counts.get(&("get".into(), "deployments".into())),
        Some(&2.0)
    );
    assert_eq!(codes.get("404"), Some(&2.0));
    assert!(fleet::counts_from_metric("rollwise_reconciles_total 3\n").is_none());
}
