//! End-to-end tests: the real `rollwise run` binary against a real
//! Kubernetes API server (the realk8s kit that `scripts/test.sh` starts, or
//! the cluster of `ROLLWISE_E2E_KUBECONFIG`), with a real Prometheus serving
//! backfilled metrics. See `tests/common/cluster.rs` for what is shared.
//!
//! Scenarios: a promotion, a rollback by the analysis, a deletion mid-way;
//! an operator killed (SIGKILL) at 50% and restarted (it carries on from the
//! same step, no weight regression); input that passes admission but not the
//! operator (phase Invalid, Ready=False and a Warning Event naming the field,
//! the route untouched); a query without data (the weight holds, the status
//! says it waits for data); a user's edit of the HTTPRoute while the rollout
//! moves it (kept; the weights are the operator's).
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

/// The same faulty canary judged by a counted metric (`requests` and
/// `failures` with `max: 0.05`): rolled back on the evidence (`CanaryWorse`),
/// its numbers in `status.comparisons` against the fixed limit, stable never
/// asked; all traffic back on stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counted_metric_rolls_back_a_faulty_canary_on_evidence() {
    in_namespace("counted", async |ns: &TestNs| {
        let env = Env::setup(ns, Some(FAULTY_ERROR_RATE)).await;
        let prometheus = env.prometheus.as_ref().expect("a Prometheus");
        let sel = r#"service="{{service}}",namespace="{{namespace}}""#;
        let r = rollout(
            &ns.name,
            json!([{"setWeight": 20}, {"pause": {"duration": "10m"}}, {"setWeight": 100}]),
            Some(json!({
                "prometheus": {"address": prometheus.address()},
                "metrics": [{
                    "name": "error-rate",
                    "requests": format!("sum(increase(http_requests_total{{{sel}}}[{{{{window}}}}]))"),
                    "failures": format!("sum(increase(http_requests_total{{{sel},code=~\"5..\"}}[{{{{window}}}}]))"),
                    "max": MAX_ERROR_RATE
                }]
            })),
        );
        env.create_rollout(r).await;
        let r = ns
            .wait_phase(ROLLOUT, Phase::RolledBack, 0, ROLLOUT_TIMEOUT)
            .await;
        let status = r.status.clone().unwrap_or_default();
        let decision = status.last_decision.clone().expect("a last decision");
        assert_eq!(decision.reason, "CanaryWorse", "{decision:?}");
        assert!(
            status.analysis.is_empty(),
            "a counted metric is not a query metric: {:?}",
            status.analysis
        );
        let c = status
            .comparisons
            .iter()
            .find(|c| c.name == "error-rate")
            .unwrap_or_else(|| panic!("no error-rate in status.comparisons: {:?}", status.comparisons));
        assert_eq!(c.verdict, "Harm", "{c:?}");
        assert_eq!(c.tolerance, "at most 0.05", "{c:?}");
        assert_eq!(c.stable_requests, 0.0, "stable is not part of a limit: {c:?}");
        assert!(c.canary_rate > MAX_ERROR_RATE, "{c:?}");
        assert!(c.harm_evidence >= c.harm_evidence_bar, "{c:?}");
        assert!(c.message.contains("limit 5%"), "{}", c.message);
        assert_eq!(status.canary_weight, 0, "status.canaryWeight");
        let route = env.route().await;
        assert_eq!(
            rule_weights(&route),
            (Some(100), Some(0)),
            "(stable, canary) weights after the rollback; route: {}",
            pretty(&route.data)
        );
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

/// An operator killed (SIGKILL) while the Rollout is paused at 50%, and a
/// new process started 5 s later: the new one carries on from the same step
/// (the pause keeps its start time, so it ends when it would have), and
/// neither the route nor the status ever goes back below 50%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_carries_on_from_the_same_step() {
    in_namespace("restart", async |ns: &TestNs| {
        const PAUSE: Duration = Duration::from_secs(20);
        let env = Env::setup(ns, None).await;
        env.create_rollout(rollout(
            &ns.name,
            json!([{"setWeight": 20}, {"setWeight": 50}, {"pause": {"duration": "20s"}}, {"setWeight": 100}]),
            None,
        ))
        .await;
        let before = ns
            .wait_rollout(ROLLOUT, "the 20s pause at 50%", ROLLOUT_TIMEOUT, |r| {
                r.status.as_ref().is_some_and(|s| {
                    s.current_step_index == 2 && s.canary_weight == 50 && s.step_started_at.is_some()
                })
            })
            .await;
        let before = before.status.unwrap_or_default();
        let pause_started = before.step_started_at.clone().expect("checked").0;
        let sampler = Sampler::start(ns);

        env.operator.signal("KILL");
        let exit = env.operator.wait_exit(Duration::from_secs(10)).await;
        assert!(!exit.success(), "the killed operator exited with {exit}");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            rule_weights(&env.route().await),
            (Some(50), Some(50)),
            "(stable, canary) weights while no operator runs"
        );
        let restarted_at = jiff::Timestamp::now();
        ns.start_admin_operator().await;

        let done = ns
            .wait_phase(ROLLOUT, Phase::Succeeded, 100, ROLLOUT_TIMEOUT)
            .await;
        let samples = sampler.stop().await;
        let completed = done
            .status
            .as_ref()
            .and_then(|s| s.completed_at.as_ref())
            .expect("a Succeeded Rollout has completedAt")
            .0;
        let pause = jiff::SignedDuration::try_from(PAUSE).expect("a short pause");
        assert!(
            completed >= pause_started + pause,
            "completed at {completed}, before the pause that began at {pause_started} was over"
        );
        // Started over after the restart, it would end 20s after it.
        assert!(
            completed < restarted_at + pause,
            "completed at {completed}: the pause began at {pause_started} and the operator restarted at {restarted_at}; it started the pause over"
        );
        assert_no_regression(&samples, 50);
        // Until it moved on, the step kept the start it had before the kill.
        for s in samples.iter().filter(|s| s.step_index == 2) {
            assert_eq!(s.step_started_at, Some(pause_started), "{s:?}");
        }
        assert_eq!(rule_weights(&env.route().await), (Some(0), Some(100)));
        assert_route_otherwise_unchanged(env.route_as_created(), &env.route().await);
    })
    .await;
}

/// Input that passes admission but not the operator (a tolerance that is no
/// number, a canary Service or an HTTPRoute that does not exist): phase
/// Invalid, Ready=False naming the field, a Warning Event saying the same,
/// and the user's route untouched. Once the spec is fixed, it proceeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_says_which_field_and_moves_no_traffic() {
    in_namespace("invalid", async |ns: &TestNs| {
        let env = Env::setup(ns, None).await;
        let held = json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]);
        let cases = [
            (
                "bad-tolerance",
                "InvalidSpec",
                "spec.analysis.compare[0].tolerance",
                named(
                    rollout(
                        &ns.name,
                        held.clone(),
                        Some(json!({
                            "interval": "1s",
                            "prometheus": {"address": "http://127.0.0.1:9"},
                            "compare": [{
                                "name": "errors",
                                "requests": "sum(increase(r{service=\"{{service}}\"}[{{window}}]))",
                                "failures": "sum(increase(f{service=\"{{service}}\"}[{{window}}]))",
                                "tolerance": "fast"
                            }]
                        })),
                    ),
                    "bad-tolerance",
                ),
            ),
            (
                "missing-canary",
                "ReferenceNotFound",
                "spec.canary.service",
                {
                    let mut r = named(rollout(&ns.name, held.clone(), None), "missing-canary");
                    r.spec.canary.service = "checkout-v3".into();
                    r.spec.canary.deployment = None;
                    r
                },
            ),
            (
                "missing-route",
                "RouteNotUsable",
                "spec.trafficRouting.gatewayAPI",
                {
                    let mut r = named(rollout(&ns.name, held.clone(), None), "missing-route");
                    r.spec.traffic_routing.gateway_api = Some(rollwise::api::GatewayApiRouting {
                        http_route: "no-such-route".into(),
                    });
                    r
                },
            ),
        ];
        for (_, _, _, r) in &cases {
            ns.create(r).await;
        }
        for (name, reason, field, _) in &cases {
            let r = ns
                .wait_rollout(name, "phase Invalid", ROLLOUT_TIMEOUT, |r| {
                    r.status.as_ref().is_some_and(|s| s.phase == Phase::Invalid)
                })
                .await;
            let status = r.status.clone().unwrap_or_default();
            assert_eq!(status.canary_weight, 0, "{name}: {status:?}");
            let ready = condition(&r, "Ready");
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_str()),
                ("False", *reason),
                "{name}: Ready condition {ready:?}"
            );
            assert!(
                ready.message.contains(field),
                "{name}: the Ready condition should name {field}: {ready:?}"
            );
            let progressing = condition(&r, "Progressing");
            assert_eq!(progressing.status, "False", "{name}: {progressing:?}");
            let stalled = condition(&r, "Stalled");
            assert_eq!(
                (stalled.status.as_str(), stalled.reason.as_str()),
                ("True", *reason),
                "{name}: Stalled condition {stalled:?}"
            );
            let events = eventually(
                &format!("a Warning Event {reason} about Rollout {name}"),
                Duration::from_secs(30),
                || async move {
                    let events = warnings_about(ns, name).await;
                    if events.iter().any(|(r, _)| r == reason) {
                        Ok(events)
                    } else {
                        Err(format!("{events:?}"))
                    }
                },
            )
            .await;
            assert!(
                events
                    .iter()
                    .any(|(r, note)| r == reason && note.contains(field)),
                "{name}: the Warning Event should name {field}: {events:?}"
            );
        }

        // Nothing moved: the route is exactly as created (not even rewritten
        // with the same content), and stays so.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let route = env.route().await;
        assert_eq!(
            route.metadata.resource_version,
            env.route_as_created().metadata.resource_version,
            "the operator wrote the HTTPRoute for Rollouts it refused: {}",
            pretty(&route.data)
        );

        // Deleting a refused Rollout does not touch the route either.
        ns.api::<Rollout>()
            .delete("missing-canary", &DeleteParams::default())
            .await
            .expect("delete Rollout missing-canary");
        env.wait_for_gone("missing-canary", DELETE_TIMEOUT).await;
        let route = env.route().await;
        assert_eq!(
            route.metadata.resource_version,
            env.route_as_created().metadata.resource_version,
            "deleting a Rollout that never moved traffic rewrote the HTTPRoute: {}",
            pretty(&route.data)
        );

        // Fixed, it proceeds: the spec change is the signal.
        let fix = json!({"spec": {"analysis": null}});
        ns.api::<Rollout>()
            .patch(
                "bad-tolerance",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&fix),
            )
            .await
            .expect("fix Rollout bad-tolerance");
        let r = ns
            .wait_phase("bad-tolerance", Phase::Paused, 20, Duration::from_secs(30))
            .await;
        // After the fix it is in progress again (kstatus): Reconciling, no
        // longer Stalled, and not Ready before it succeeds.
        let reconciling = condition(&r, "Reconciling");
        assert_eq!(reconciling.status, "True", "after the fix: {reconciling:?}");
        assert_eq!(condition(&r, "Stalled").status, "False");
        assert_eq!(condition(&r, "Ready").status, "False");
        assert_eq!(rule_weights(&env.route().await), (Some(80), Some(20)));
    })
    .await;
}

/// A metric whose query returns no series: the canary holds its weight and
/// the status says it waits for data. No evaluation passes or fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_without_data_holds_the_weight_and_says_so() {
    in_namespace("nodata", async |ns: &TestNs| {
        let env = Env::setup(ns, Some(HEALTHY_ERROR_RATE)).await;
        let prometheus = env.prometheus.as_ref().expect("started").address();
        env.create_rollout(rollout(
            &ns.name,
            json!([{"setWeight": 20}, {"pause": {"duration": "2s"}}, {"setWeight": 100}]),
            Some(json!({
                "interval": "1s",
                "prometheus": {"address": prometheus},
                "metrics": [{"name": "teapots", "max": 0.05, "query": NO_DATA_QUERY}]
            })),
        ))
        .await;
        ns.wait_rollout(ROLLOUT, "waiting for data at 20%", ROLLOUT_TIMEOUT, |r| {
            r.status.as_ref().is_some_and(|s| {
                s.canary_weight == 20
                    && s.last_decision
                        .as_ref()
                        .is_some_and(|d| d.reason == "WaitingForData")
            })
        })
        .await;

        // Twelve intervals (six times the pause): it holds, and says why.
        let sampler = Sampler::start(ns);
        tokio::time::sleep(Duration::from_secs(12)).await;
        let samples = sampler.stop().await;
        assert!(samples.len() >= 10, "only {} samples", samples.len());
        for s in &samples {
            assert_eq!(
                (s.phase, s.status_weight, s.route),
                (Phase::Progressing, 20, (Some(80), Some(20))),
                "a sample while the query has no data: {s:?}"
            );
        }
        let r = ns.rollout(ROLLOUT).await;
        let status = r.status.clone().unwrap_or_default();
        assert_eq!(status.verdict, "NoData", "{status:?}");
        let metric = status
            .analysis
            .iter()
            .find(|m| m.name == "teapots")
            .unwrap_or_else(|| panic!("no teapots in status.analysis: {:?}", status.analysis));
        assert_eq!(
            (metric.verdict.as_str(), metric.failures, metric.value),
            ("NoData", 0, None),
            "{metric:?}"
        );
        assert!(
            status.message.contains("waiting for data"),
            "status.message: {}",
            status.message
        );
        let decision = status.last_decision.clone().expect("a decision");
        assert_eq!(
            (decision.kind.as_str(), decision.reason.as_str()),
            ("Hold", "WaitingForData")
        );
        let progressing = condition(&r, "Progressing");
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("True", "WaitingForData"),
            "{progressing:?}"
        );
        let warnings = warnings_about(ns, ROLLOUT).await;
        assert!(warnings.is_empty(), "Warning Events: {warnings:?}");
    })
    .await;
}

/// The user edits the HTTPRoute while the rollout moves it (another rule's
/// path, as `kubectl edit` does it, and a label, as `kubectl label`): both
/// edits are kept to the end, the weights are always those the operator
/// set, and they never go back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_edit_of_the_route_during_the_rollout_is_kept() {
    in_namespace("useredit", async |ns: &TestNs| {
        let env = Env::setup(ns, None).await;
        env.create_rollout(rollout(
            &ns.name,
            json!([
                {"setWeight": 20}, {"pause": {"duration": "3s"}},
                {"setWeight": 40}, {"pause": {"duration": "3s"}},
                {"setWeight": 60}, {"pause": {"duration": "3s"}},
                {"setWeight": 100}
            ]),
            None,
        ))
        .await;
        ns.wait_phase(ROLLOUT, Phase::Progressing, 20, ROLLOUT_TIMEOUT)
            .await;
        let sampler = Sampler::start(ns);
        ns.wait_rollout(ROLLOUT, "40%", ROLLOUT_TIMEOUT, |r| {
            r.status.as_ref().is_some_and(|s| s.canary_weight >= 40)
        })
        .await;

        // `kubectl edit`: read, change the second rule, write it all back
        // with the resourceVersion read (again on a conflict).
        let routes = ns.dynamic(&route_resource());
        let edited = eventually("the user's edit of the route", Duration::from_secs(30), || {
            let routes = routes.clone();
            async move {
                let mut route = routes.get(ROUTE).await.map_err(|e| format!("get: {e}"))?;
                route.data["spec"]["rules"][1]["matches"][0]["path"]["value"] = json!("/assets");
                routes
                    .replace(ROUTE, &kube::api::PostParams {
                        field_manager: Some("kubectl-edit".into()),
                        ..Default::default()
                    }, &route)
                    .await
                    .map_err(|e| format!("replace: {e}"))
            }
        })
        .await;
        // `kubectl label`: a merge patch of the labels.
        routes
            .patch(
                ROUTE,
                &kube::api::PatchParams {
                    field_manager: Some("kubectl-label".into()),
                    ..Default::default()
                },
                &kube::api::Patch::Merge(&json!({"metadata": {"labels": {"owner": "web-team"}}})),
            )
            .await
            .expect("label the route");
        let weights_at_edit = rule_weights(&edited);

        let done = ns
            .wait_phase(ROLLOUT, Phase::Succeeded, 100, ROLLOUT_TIMEOUT)
            .await;
        let samples = sampler.stop().await;
        let route = env.route().await;
        assert_eq!(
            route.data["spec"]["rules"][1]["matches"][0]["path"]["value"],
            json!("/assets"),
            "the user's change of the second rule is gone: {}",
            pretty(&route.data)
        );
        let labels = route.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            (labels.get("owner").map(String::as_str), labels.get("team").map(String::as_str)),
            (Some("web-team"), Some("checkout")),
            "the route's labels: {labels:?}"
        );
        assert_eq!(rule_weights(&route), (Some(0), Some(100)));
        assert_eq!(done.status.as_ref().map(|s| s.canary_weight), Some(100));
        assert_no_regression(&samples, 20);
        // Every weight the route carried is one of the plan's.
        for s in &samples {
            assert!(
                matches!(s.route, (Some(80), Some(20)) | (Some(60), Some(40)) | (Some(40), Some(60)) | (Some(0), Some(100))),
                "the route carried weights the operator never set: {s:?} (the user's edit carried {weights_at_edit:?})"
            );
        }
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
        if let Err(errors) = rollwise::plan::validate(&r.spec) {
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
        self.wait_for_gone(ROLLOUT, timeout).await
    }

    /// Poll until the Rollout `name` is gone.
    async fn wait_for_gone(&self, name: &str, timeout: Duration) {
        let rollouts = self.ns.raw_rollouts();
        eventually(
            &format!(
                "Rollout {name} to disappear (the operator removes its finalizer {FINALIZER})"
            ),
            timeout,
            || {
                let rollouts = rollouts.clone();
                async move {
                    self.ns.check_operators();
                    match rollouts.get_opt(name).await {
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

/// A query on a series the test's Prometheus never has (no request is
/// answered with 418): no data, whatever the window.
const NO_DATA_QUERY: &str = r#"sum(rate(http_requests_total{service="{{service}}",namespace="{{namespace}}",code="418"}[1m]))"#;

fn named(mut r: Rollout, name: &str) -> Rollout {
    r.metadata.name = Some(name.to_string());
    r
}

// ---------------------------------------------------------------------------
// Watching a scenario as it goes
// ---------------------------------------------------------------------------

/// What the route and the Rollout said at one moment.
#[derive(Clone, Debug)]
struct Sample {
    /// `(stable, canary)` weights of the route's first rule.
    route: (Option<i64>, Option<i64>),
    phase: Phase,
    status_weight: i32,
    step_index: i32,
    step_started_at: Option<jiff::Timestamp>,
}

/// Reads the HTTPRoute and the Rollout every 200 ms in the background.
struct Sampler {
    samples: Arc<std::sync::Mutex<Vec<Sample>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(ns: &TestNs) -> Sampler {
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let routes = ns.dynamic(&route_resource());
        let rollouts = ns.api::<Rollout>();
        let task = tokio::spawn({
            let (samples, stop) = (samples.clone(), stop.clone());
            async move {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    if let (Ok(route), Ok(r)) =
                        (routes.get(ROUTE).await, rollouts.get(ROLLOUT).await)
                    {
                        let status = r.status.unwrap_or_default();
                        samples.lock().unwrap().push(Sample {
                            route: rule_weights(&route),
                            phase: status.phase,
                            status_weight: status.canary_weight,
                            step_index: status.current_step_index,
                            step_started_at: status.step_started_at.map(|t| t.0),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        Sampler {
            samples,
            stop,
            task,
        }
    }

    async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.expect("the sampler does not panic");
        self.samples.lock().unwrap().clone()
    }
}

/// Neither the route's canary weight nor the status's ever goes down, nor
/// below `floor`; the step index never goes back.
fn assert_no_regression(samples: &[Sample], floor: i64) {
    assert!(!samples.is_empty(), "no samples");
    for pair in samples.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            b.route.1 >= a.route.1
                && b.status_weight >= a.status_weight
                && b.step_index >= a.step_index,
            "went back: {a:?} then {b:?}"
        );
    }
    for s in samples {
        assert!(
            s.route.1.is_some_and(|w| w >= floor) && i64::from(s.status_weight) >= floor,
            "below {floor}%: {s:?}"
        );
    }
}

/// `(reason, message)` of the Warning Events about the Rollout `name`.
async fn warnings_about(ns: &TestNs, name: &str) -> Vec<(String, String)> {
    let events = ns
        .api::<k8s_openapi::api::core::v1::Event>()
        .list(&kube::api::ListParams::default())
        .await
        .expect("list Events");
    events
        .items
        .into_iter()
        .filter(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.involved_object.kind.as_deref() == Some("Rollout")
                && e.involved_object.name.as_deref() == Some(name)
        })
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
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
