//! Dependencies between Rollouts (`spec.dependsOn`) on the real API server:
//! `rollwise run` drives two services, `payments` and `checkout`, whose
//! canary needs the new payments API.
//!
//! ```text
//! ROLLWISE_E2E_KUBECONFIG=/path/to/kubeconfig cargo test --test e2e_dependencies -- --nocapture
//! ```
//! Without a cluster each test prints one `SKIPPED` line and passes.

mod common;

use std::time::Duration;

use ::gateway_api::apis::standard::httproutes::HttpRoute;
use common::cluster::{TestNs, in_namespace};
use common::prometheus::{Backfill, PrometheusServer};
use kube::api::{ApiResource, Patch, PatchParams};
use rollwise::api::{Phase, Rollout};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);

fn route(name: &str, stable: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "e2e"}],
            "rules": [{"backendRefs": [{"name": stable, "port": 80}]}]
        }
    })
}

/// A Rollout of `service` (v1 -> v2) through its own HTTPRoute.
fn rollout(ns: &str, service: &str, steps: Value, depends_on: Value) -> Rollout {
    let (v1, v2) = (format!("{service}-v1"), format!("{service}-v2"));
    let mut spec = json!({
        "stable": {"service": v1, "deployment": v1},
        "canary": {"service": v2, "deployment": v2},
        "trafficRouting": {"gatewayAPI": {"httpRoute": service}},
        "steps": steps,
    });
    if !depends_on.is_null() {
        spec["dependsOn"] = depends_on;
    }
    serde_json::from_value(json!({
        "apiVersion": "rollwise.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": service, "namespace": ns},
        "spec": spec,
    }))
    .expect("a valid Rollout")
}

/// Both services' Deployments, Services and routes.
async fn services(ns: &TestNs) {
    ns.versions(
        &["payments-v1", "payments-v2", "checkout-v1", "checkout-v2"],
        1,
    )
    .await;
    let ar = ApiResource::erase::<HttpRoute>(&());
    ns.create_dynamic(&ar, route("payments", "payments-v1"))
        .await;
    ns.create_dynamic(&ar, route("checkout", "checkout-v1"))
        .await;
}

/// payments (20%, manual pause, 100%) and checkout (10%, manual pause,
/// 100%) that needs payments at >= 20%, both created and paused at their
/// first step.
async fn payments_and_checkout_paused(ns: &TestNs) {
    ns.create(&rollout(
        &ns.name,
        "payments",
        json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]),
        Value::Null,
    ))
    .await;
    ns.create(&rollout(
        &ns.name,
        "checkout",
        json!([{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}]),
        json!([{"name": "payments", "minWeight": 20}]),
    ))
    .await;
    ns.wait_phase("payments", Phase::Paused, 20, TIMEOUT).await;
    ns.wait_phase("checkout", Phase::Paused, 10, TIMEOUT).await;
}

/// Run the real `kubectl-rollwise` with `args` in the test's namespace;
/// its stdout (it must exit 0).
fn plugin(ns: &TestNs, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-rollwise"))
        .args(args)
        .args(["-n", &ns.name, "--kubeconfig"])
        .arg(&ns.cluster.kubeconfig)
        .output()
        .expect("kubectl-rollwise runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kubectl-rollwise {args:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn condition<'a>(r: &'a Rollout, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    r.status.as_ref()?.conditions.iter().find_map(|c| {
        (c.type_ == type_).then_some((c.status.as_str(), c.reason.as_str(), c.message.as_str()))
    })
}

/// checkout needs payments to have completed with canary payments-v2.
/// Created first, checkout finds no payments (a clear condition naming the
/// field, not a silent wait); then it holds at 0% naming payments and what
/// payments is doing; once payments succeeds it goes all the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_service_release_goes_in_order() {
    in_namespace("deps-order", async |ns: &TestNs| {
        services(ns).await;
        ns.start_admin_operator().await;
        ns.create(&rollout(
            &ns.name,
            "checkout",
            json!([{"setWeight": 50}, {"setWeight": 100}]),
            json!([{"name": "payments", "phase": "Succeeded", "canaryService": "payments-v2"}]),
        ))
        .await;

        // No payments yet: Stalled, naming the field.
        let r = ns
            .wait_rollout(
                "checkout",
                "the DependencyNotFound condition",
                TIMEOUT,
                |r| {
                    condition(r, "Stalled")
                        .is_some_and(|c| c.0 == "True" && c.1 == "DependencyNotFound")
                },
            )
            .await;
        let (_, _, message) = condition(&r, "Stalled").unwrap();
        assert!(message.contains("spec.dependsOn[0]"), "{message}");
        assert!(message.contains("payments not found"), "{message}");
        assert_eq!(r.status.as_ref().unwrap().canary_weight, 0);
        ns.wait_event("DependencyNotFound Rollout/checkout").await;

        // payments starts and stops at 40% for a person: checkout waits at 0%.
        ns.create(&rollout(
            &ns.name,
            "payments",
            json!([{"setWeight": 40}, {"pause": {}}, {"setWeight": 100}]),
            Value::Null,
        ))
        .await;
        ns.wait_phase("payments", Phase::Paused, 40, TIMEOUT).await;
        let r = ns
            .wait_rollout("checkout", "waiting for payments at 40%", TIMEOUT, |r| {
                r.status.as_ref().is_some_and(|s| {
                    s.dependencies
                        .first()
                        .is_some_and(|d| d.phase == "Paused" && d.weight == 40)
                })
            })
            .await;
        let s = r.status.as_ref().unwrap();
        assert_eq!(
            s.canary_weight, 0,
            "no traffic moves before payments is done"
        );
        assert_eq!(s.phase, Phase::Pending);
        assert_eq!(s.waiting_for, format!("{}/payments", ns.name));
        assert_eq!(
            s.last_decision.as_ref().map(|d| d.reason.as_str()),
            Some("WaitingForDependency")
        );
        assert!(
            s.message.contains("Paused at 40% with canary payments-v2"),
            "{}",
            s.message
        );
        assert!(!s.dependencies[0].satisfied);
        let (ready, reason, _) = condition(&r, "Reconciling").unwrap();
        assert_eq!((ready, reason), ("True", "WaitingForDependency"));
        // `kubectl get rollouts -o wide` names the dependency waited for.
        let wide = ns
            .cluster
            .kubectl_ok(&["get", "rollouts", "-n", &ns.name, "-o", "wide"]);
        assert!(wide.contains("WAITING-FOR"), "{wide}");
        let line = wide.lines().find(|l| l.starts_with("checkout")).unwrap_or_default();
        assert!(line.contains(&format!("{}/payments", ns.name)), "{wide}");
        assert_eq!(condition(&r, "Stalled").unwrap().0, "False");
        ns.wait_event("WaitingForDependency Rollout/checkout").await;

        // The plugin shows the tree, both ways.
        let tree = plugin(ns, &["get", "rollout", "checkout"]);
        assert!(tree.contains("Depends on"), "{tree}");
        assert!(
            tree.contains(&format!("└ {}/payments  Paused 40% canary payments-v2  (needs Succeeded with canary payments-v2 before step 1: WAITING)", ns.name)),
            "{tree}"
        );
        let tree = plugin(ns, &["get", "rollout", "payments"]);
        assert!(
            tree.contains(&format!("Needed by\n  └ {}/checkout  Pending 0% canary checkout-v2  (waiting for this one)", ns.name)),
            "{tree}"
        );

        // The group is promoted (checkout and what it depends on: payments):
        // payments succeeds, checkout follows, to 100%.
        let said = plugin(ns, &["promote", "--group", "checkout"]);
        assert!(
            said.contains(&format!("group of {0}/checkout (it and every Rollout it depends on): {0}/payments, {0}/checkout", ns.name)),
            "{said}"
        );
        let payments = ns
            .wait_phase("payments", Phase::Succeeded, 100, TIMEOUT)
            .await;
        let checkout = ns
            .wait_phase("checkout", Phase::Succeeded, 100, TIMEOUT)
            .await;
        let s = checkout.status.as_ref().unwrap();
        assert!(s.dependencies[0].satisfied);
        assert!(s.waiting_for.is_empty());
        let done = |r: &Rollout| {
            r.status
                .as_ref()
                .and_then(|s| s.completed_at.clone())
                .unwrap()
                .0
        };
        assert!(
            done(&payments) <= done(&checkout),
            "checkout completed after payments"
        );
        ns.wait_event("DependencySatisfied Rollout/checkout").await;
    })
    .await;
}

/// checkout needs payments at >= 20% before any traffic; both get going,
/// then payments is aborted by hand: checkout, still in progress, rolls
/// back too (the default `onFailure: Rollback`), naming payments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_aborted_takes_its_dependent_back_to_stable() {
    in_namespace("deps-abort", async |ns: &TestNs| {
        services(ns).await;
        ns.start_admin_operator().await;
        payments_and_checkout_paused(ns).await;

        ns.act("payments", "abort").await;
        ns.wait_phase("payments", Phase::Aborted, 0, TIMEOUT).await;
        let r = ns
            .wait_phase("checkout", Phase::RolledBack, 0, TIMEOUT)
            .await;
        let s = r.status.as_ref().unwrap();
        let d = s.last_decision.as_ref().unwrap();
        assert_eq!(d.reason, "DependencyFailed");
        assert!(d.message.contains("spec.dependsOn[0]"), "{}", d.message);
        assert!(d.message.contains("payments was Aborted"), "{}", d.message);
        assert_eq!(s.dependencies[0].phase, "Aborted");
        let (stalled, reason, _) = condition(&r, "Stalled").unwrap();
        assert_eq!((stalled, reason), ("True", "DependencyFailed"));
        ns.wait_event("DependencyFailed Rollout/checkout").await;
        // The route carries no canary traffic.
        assert_eq!(ns.route_canary_weight("checkout", "checkout-v2").await, 0);
    })
    .await;
}

/// checkout needs payments at >= 20%; both are paused at their first step.
/// Then payments gets an analysis that finds its canary failing 30% of its
/// requests: payments is rolled back by its own evidence (`CanaryWorse`),
/// and checkout, still in progress, follows (`DependencyFailed`), naming
/// payments and what it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_rolled_back_by_its_analysis_takes_its_dependent_back_to_stable() {
    in_namespace("deps-rollback", async |ns: &TestNs| {
        services(ns).await;
        // payments-v2 fails 30% of its 10 requests a second.
        let data = Backfill::new()
            .counter(
                "http_requests_total",
                &[("namespace", &ns.name), ("service", "payments-v2"), ("code", "200")],
                7.0,
            )
            .counter(
                "http_requests_total",
                &[("namespace", &ns.name), ("service", "payments-v2"), ("code", "500")],
                3.0,
            )
            .to_openmetrics();
        let prometheus =
            tokio::task::spawn_blocking(move || PrometheusServer::start_with_openmetrics(&data))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        ns.start_admin_operator().await;
        payments_and_checkout_paused(ns).await;

        let sel = r#"service="{{service}}",namespace="{{namespace}}""#;
        let analysis = json!({"spec": {"analysis": {
            "prometheus": {"address": prometheus.address()},
            "metrics": [{
                "name": "error-rate",
                "requests": format!("sum(increase(http_requests_total{{{sel}}}[{{{{window}}}}]))"),
                "failures": format!("sum(increase(http_requests_total{{{sel},code=~\"5..\"}}[{{{{window}}}}]))"),
                "max": 0.05
            }]
        }}});
        ns.api::<Rollout>()
            .patch("payments", &PatchParams::default(), &Patch::Merge(&analysis))
            .await
            .expect("add payments' analysis");
        let p = ns
            .wait_phase("payments", Phase::RolledBack, 0, TIMEOUT)
            .await;
        let pd = p.status.as_ref().and_then(|s| s.last_decision.clone()).unwrap();
        assert_eq!(pd.reason, "CanaryWorse", "{pd:?}");
        let r = ns
            .wait_phase("checkout", Phase::RolledBack, 0, TIMEOUT)
            .await;
        let s = r.status.as_ref().unwrap();
        let d = s.last_decision.as_ref().unwrap();
        assert_eq!(d.reason, "DependencyFailed", "{d:?}");
        assert!(d.message.contains("spec.dependsOn[0]"), "{}", d.message);
        assert!(d.message.contains("payments was RolledBack"), "{}", d.message);
        assert_eq!(s.dependencies[0].phase, "RolledBack");
        ns.wait_event("DependencyFailed Rollout/checkout").await;
        tokio::task::spawn_blocking(move || drop(prometheus))
            .await
            .unwrap();
    })
    .await;
}

/// A cycle across two Rollouts is a clear condition on both, as is a
/// dependency in a namespace the operator does not watch; the API
/// server itself refuses a Rollout that names itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_or_an_unwatched_namespace_is_a_condition_and_a_self_dependency_is_refused() {
    in_namespace("deps-cycle", async |ns: &TestNs| {
        services(ns).await;
        let mut own = rollout(
            &ns.name,
            "payments",
            json!([{"setWeight": 50}]),
            json!([{"name": "payments"}]),
        );
        let err = ns
            .api::<Rollout>()
            .create(&common::cluster::post_params(), &own)
            .await
            .expect_err("a Rollout that depends on itself is refused");
        assert!(err.to_string().contains("cannot depend on itself"), "{err}");
        // Two bad entries: the same Rollout twice, and minWeight with phase.
        own.spec.depends_on = serde_json::from_value(json!([
            {"name": "checkout", "phase": "Succeeded", "minWeight": 50},
            {"name": "checkout"}
        ]))
        .unwrap();
        let err = ns
            .api::<Rollout>()
            .create(&common::cluster::post_params(), &own)
            .await
            .expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("not both"), "{text}");
        assert!(text.contains("only once"), "{text}");

        ns.start_admin_operator().await;
        ns.create(&rollout(
            &ns.name,
            "payments",
            json!([{"setWeight": 50}]),
            json!([{"name": "checkout"}]),
        ))
        .await;
        ns.create(&rollout(
            &ns.name,
            "checkout",
            json!([{"setWeight": 50}]),
            json!([{"name": "payments"}]),
        ))
        .await;
        // The operator watches only this namespace: a dependency elsewhere
        // is a condition, not a silent wait.
        ns.versions(&["search-v1", "search-v2"], 1).await;
        ns.create_dynamic(
            &ApiResource::erase::<HttpRoute>(&()),
            route("search", "search-v1"),
        )
        .await;
        ns.create(&rollout(
            &ns.name,
            "search",
            json!([{"setWeight": 50}]),
            json!([{"name": "payments", "namespace": "kube-system"}]),
        ))
        .await;
        let r = ns
            .wait_rollout(
                "search",
                "the DependencyNotWatched condition",
                TIMEOUT,
                |r| condition(r, "Stalled").is_some_and(|c| c.1 == "DependencyNotWatched"),
            )
            .await;
        let (_, _, message) = condition(&r, "Stalled").unwrap();
        assert!(
            message.contains(
                "spec.dependsOn[0]: namespace kube-system is not watched by the operator"
            ),
            "{message}"
        );
        for name in ["payments", "checkout"] {
            let r = ns
                .wait_rollout(name, "the DependencyCycle condition", TIMEOUT, |r| {
                    condition(r, "Stalled").is_some_and(|c| c.1 == "DependencyCycle")
                })
                .await;
            let (_, _, message) = condition(&r, "Stalled").unwrap();
            assert!(
                message.starts_with("spec.dependsOn[0]: dependency cycle"),
                "{message}"
            );
            assert_eq!(r.status.as_ref().unwrap().canary_weight, 0);
        }
    })
    .await;
}

/// checkout may take its first step (10%) at once but needs payments done
/// before its second: it holds at 10%, naming payments. payments is
/// aborted: with `onFailure: Hold` checkout keeps its 10% (no rollback);
/// payments is retried and promoted to the end: checkout follows to 100%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_step_waits_at_the_current_weight_and_hold_keeps_it_through_a_failure() {
    in_namespace("deps-hold", async |ns: &TestNs| {
        services(ns).await;
        ns.start_admin_operator().await;
        ns.create(&rollout(
            &ns.name,
            "payments",
            json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]),
            Value::Null,
        ))
        .await;
        ns.create(&rollout(
            &ns.name,
            "checkout",
            json!([{"setWeight": 10}, {"setWeight": 50}, {"setWeight": 100}]),
            json!([{"name": "payments", "beforeStep": 1, "onFailure": "Hold"}]),
        ))
        .await;
        ns.wait_phase("payments", Phase::Paused, 20, TIMEOUT).await;
        let r = ns
            .wait_rollout(
                "checkout",
                "holding at 10% for payments, Paused",
                TIMEOUT,
                |r| {
                    // payments may still have been Progressing at checkout's
                    // first hold: its Paused status wakes checkout again.
                    r.status.as_ref().is_some_and(|s| {
                        s.canary_weight == 10
                            && !s.waiting_for.is_empty()
                            && s.dependencies.first().is_some_and(|d| d.phase == "Paused")
                    })
                },
            )
            .await;
        let s = r.status.as_ref().unwrap();
        assert_eq!(s.phase, Phase::Progressing);
        assert!(s.message.contains("before step 2"), "{}", s.message);
        assert!(s.message.contains("Paused at 20%"), "{}", s.message);

        ns.act("payments", "abort").await;
        ns.wait_phase("payments", Phase::Aborted, 0, TIMEOUT).await;
        let r = ns
            .wait_rollout("checkout", "holding after payments' abort", TIMEOUT, |r| {
                r.status.as_ref().is_some_and(|s| {
                    s.last_decision
                        .as_ref()
                        .is_some_and(|d| d.reason == "DependencyFailedHolding")
                })
            })
            .await;
        let s = r.status.as_ref().unwrap();
        assert_eq!((s.phase, s.canary_weight), (Phase::Progressing, 10));
        assert!(s.message.contains("payments was Aborted"), "{}", s.message);
        ns.wait_event("DependencyFailedHolding Rollout/checkout")
            .await;

        ns.act("payments", "retry").await;
        ns.wait_phase("payments", Phase::Paused, 20, TIMEOUT).await;
        ns.act("payments", "promote").await;
        ns.wait_phase("payments", Phase::Succeeded, 100, TIMEOUT)
            .await;
        ns.wait_phase("checkout", Phase::Succeeded, 100, TIMEOUT)
            .await;
    })
    .await;
}

/// `kubectl rollwise abort --group payments` aborts payments and what
/// depends on it (checkout), dependents first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_group_takes_the_dependents_with_it() {
    in_namespace("deps-abort-group", async |ns: &TestNs| {
        services(ns).await;
        ns.start_admin_operator().await;
        payments_and_checkout_paused(ns).await;
        let said = plugin(ns, &["abort", "--group", "payments"]);
        assert!(
            said.contains(&format!(
                "group of {0}/payments (it and every Rollout that depends on it): {0}/checkout, {0}/payments",
                ns.name
            )),
            "{said}"
        );
        ns.wait_phase("payments", Phase::Aborted, 0, TIMEOUT).await;
        // Aborted by hand (the group), not rolled back by following payments.
        ns.wait_phase("checkout", Phase::Aborted, 0, TIMEOUT).await;
    })
    .await;
}
