//! Reconcile tests against an in-memory API server (kube-fake-client: real
//! HTTP API, server-side apply treated as merge, status subresource,
//! resourceVersion conflicts; no watch, so reconcile is called directly).
//! Traffic and metrics come from the same simulation the demo uses.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use rollwise::api::{ACTION_ANNOTATION, FINALIZER, Phase, Rollout};
use rollwise::demo::{Sim, cluster};
use serde_json::json;

const STEP: Duration = Duration::from_secs(5);
const MAX: Duration = Duration::from_secs(3600);

fn condition(r: &Rollout, ty: &str) -> (String, String, String) {
    let c = r
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == ty)
        .unwrap_or_else(|| panic!("no {ty} condition"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

async fn weights(sim: &Sim) -> Vec<(String, i64)> {
    cluster::route_weights(&sim.client, &sim.route)
        .await
        .unwrap()
}

async fn weight_of(sim: &Sim, service: &str) -> i64 {
    weights(sim)
        .await
        .into_iter()
        .find(|(n, _)| n == service)
        .map(|(_, w)| w)
        .unwrap_or(0)
}

async fn event_reasons(sim: &Sim) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(sim.client.clone(), cluster::NAMESPACE);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

/// Reconcile (with ticks) until `pred` holds or `max` virtual time passed.
async fn run_until(sim: &Sim, max: Duration, pred: impl Fn(&Rollout) -> bool) -> Rollout {
    let deadline = sim.elapsed() + max;
    loop {
        sim.reconcile().await.unwrap();
        let r = sim.rollout().await.unwrap();
        if pred(&r) || sim.elapsed() >= deadline {
            return r;
        }
        sim.tick(STEP).await.unwrap();
    }
}

fn phase(r: &Rollout) -> Phase {
    r.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

#[tokio::test]
async fn healthy_canary_is_promoted_through_every_step() {
    let sim = Sim::standard(1).await.unwrap();
    sim.traffic.set_error_rate("checkout-v2", 0.005);
    let mut seen = Vec::new();
    let r = sim
        .run_until_terminal(STEP, MAX, |l| {
            if seen.last() != Some(&l.weight) {
                seen.push(l.weight)
            }
        })
        .await
        .unwrap();
    assert_eq!(phase(&r), Phase::Succeeded);
    assert_eq!(seen, vec![0, 5, 33, 50, 100]);
    assert_eq!(
        (
            weight_of(&sim, "checkout-v1").await,
            weight_of(&sim, "checkout-v2").await
        ),
        (0, 100)
    );
    let st = r.status.as_ref().unwrap();
    assert_eq!((st.canary_weight, st.step.as_str()), (100, "7/7"));
    assert_eq!(condition(&r, "Completed").0, "True");
    assert_eq!(condition(&r, "Progressing").0, "False");
    assert_eq!(condition(&r, "Ready").0, "True");
    assert!(
        r.metadata
            .finalizers
            .as_ref()
            .unwrap()
            .contains(&FINALIZER.to_string())
    );
    let reasons = event_reasons(&sim).await;
    for reason in [
        "RolloutStarted",
        "WeightChanged",
        "StepAdvanced",
        "RolloutCompleted",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} event in {reasons:?}"
        );
    }
    // The user's second rule is untouched.
    let route: Api<kube::api::DynamicObject> = Api::namespaced_with(
        sim.client.clone(),
        cluster::NAMESPACE,
        &kube::api::ApiResource::erase::<gateway_api::apis::standard::httproutes::HttpRoute>(&()),
    );
    let obj = route.get("checkout").await.unwrap();
    assert_eq!(
        obj.data["spec"]["rules"][1],
        cluster::http_route("checkout", "checkout-v1")["spec"]["rules"][1]
    );
}

#[tokio::test]
async fn failing_canary_is_rolled_back_with_the_metric_value_and_bound() {
    let sim = Sim::standard(2).await.unwrap();
    // The threshold metric alone (the comparison has its own tests).
    let patch = json!({"spec": {"analysis": {"compare": null, "maxExtraFailures": null}}});
    sim.api()
        .patch("checkout", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    sim.traffic.set_error_rate("checkout-v2", 0.2);
    let r = sim.run_until_terminal(STEP, MAX, |_| {}).await.unwrap();
    assert_eq!(phase(&r), Phase::RolledBack);
    assert_eq!(
        (
            weight_of(&sim, "checkout-v1").await,
            weight_of(&sim, "checkout-v2").await
        ),
        (100, 0)
    );
    let (status, reason, message) = condition(&r, "RolledBack");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "AnalysisFailed")
    );
    assert!(
        message.contains("error-rate = 0.") && message.contains("<= 0.02"),
        "{message}"
    );
    assert_eq!(condition(&r, "Completed").0, "False");
    assert_eq!(r.status.as_ref().unwrap().canary_weight, 0);
    assert!(
        event_reasons(&sim)
            .await
            .iter()
            .any(|r| r == "AnalysisFailed")
    );
    // Rolled back at the first step: a handful of bad requests, not hundreds.
    let (_, failed) = sim.traffic.totals("checkout-v2");
    assert!(failed < 100, "{failed} failed canary requests");
}

#[tokio::test]
async fn no_data_holds_the_weight_and_says_why() {
    let sim = Sim::standard(3).await.unwrap();
    sim.traffic.set_rps(0.0); // nobody is calling the service
    let r = run_until(&sim, Duration::from_secs(600), |_| false).await;
    let st = r.status.as_ref().unwrap();
    assert_eq!(phase(&r), Phase::Progressing);
    assert_eq!((st.canary_weight, st.current_step_index), (5, 1));
    assert_eq!(st.verdict, "NoData");
    assert!(st.message.contains("waiting for data"), "{}", st.message);
    assert_eq!(st.analysis[0].failures, 0, "no data is not a failure");
    // Traffic returns: the rollout proceeds.
    sim.traffic.set_rps(50.0);
    let r = run_until(&sim, Duration::from_secs(600), |r| {
        r.status.as_ref().unwrap().current_step_index >= 2
    })
    .await;
    assert!(r.status.as_ref().unwrap().canary_weight >= 33);
}

#[tokio::test]
async fn prometheus_outage_holds_then_rolls_back_after_the_error_limit() {
    let sim = Sim::standard(4).await.unwrap();
    sim.traffic.set_error_rate("checkout-v2", 0.005);
    run_until(&sim, MAX, |r| {
        r.status.as_ref().is_some_and(|s| s.canary_weight == 5)
    })
    .await;
    sim.traffic.set_down(true);
    // Three consecutive errors: still holding at 5%.
    let r = run_until(&sim, MAX, |r| {
        r.status.as_ref().unwrap().consecutive_errors >= 3
    })
    .await;
    assert_eq!(phase(&r), Phase::Progressing);
    assert_eq!(weight_of(&sim, "checkout-v2").await, 5);
    assert!(
        r.status
            .as_ref()
            .unwrap()
            .message
            .contains("connection refused"),
        "{}",
        r.status.as_ref().unwrap().message
    );
    // The fourth rolls back.
    let r = run_until(&sim, MAX, |r| phase(r).is_terminal()).await;
    assert_eq!(phase(&r), Phase::RolledBack);
    assert_eq!(condition(&r, "RolledBack").1, "MetricsUnavailable");
    assert_eq!(weight_of(&sim, "checkout-v2").await, 0);
}

#[tokio::test]
async fn canary_that_is_not_available_gets_no_traffic() {
    let sim = Sim::standard(5).await.unwrap();
    cluster::set_available(&sim.client, "checkout-v2", 1)
        .await
        .unwrap();
    let r = run_until(&sim, Duration::from_secs(120), |_| false).await;
    assert_eq!(phase(&r), Phase::Pending);
    assert_eq!(weight_of(&sim, "checkout-v2").await, 0);
    assert!(
        r.status
            .as_ref()
            .unwrap()
            .message
            .contains("1/3 replicas available")
    );
    cluster::set_available(&sim.client, "checkout-v2", 3)
        .await
        .unwrap();
    run_until(&sim, Duration::from_secs(30), |r| {
        r.status.as_ref().unwrap().canary_weight == 5
    })
    .await;
    assert_eq!(weight_of(&sim, "checkout-v2").await, 5);
}

#[tokio::test]
async fn deletion_returns_all_traffic_to_stable_before_the_finalizer_goes() {
    let sim = Sim::standard(6).await.unwrap();
    sim.traffic.set_error_rate("checkout-v2", 0.005);
    let r = run_until(&sim, MAX, |r| {
        r.status.as_ref().is_some_and(|s| s.canary_weight == 33)
    })
    .await;
    assert_eq!(weight_of(&sim, "checkout-v2").await, 33);

    // The fake deletes at once, ignoring finalizers; a real API server sets
    // deletionTimestamp and waits. Build that state: same cluster contents,
    // the Rollout marked for deletion.
    let route_now = Api::<kube::api::DynamicObject>::namespaced_with(
        sim.client.clone(),
        cluster::NAMESPACE,
        &kube::api::ApiResource::erase::<gateway_api::apis::standard::httproutes::HttpRoute>(&()),
    )
    .get("checkout")
    .await
    .unwrap();
    let mut deleting = serde_json::to_value(&r).unwrap();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-03-02T10:00:00Z");
    deleting["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let mut route = serde_json::to_value(&route_now).unwrap();
    route["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let client = cluster::client(vec![
        serde_json::to_value(cluster::deployment("checkout-v1", 3, 3)).unwrap(),
        serde_json::to_value(cluster::deployment("checkout-v2", 3, 3)).unwrap(),
        serde_json::to_value(cluster::service("checkout-v1")).unwrap(),
        serde_json::to_value(cluster::service("checkout-v2")).unwrap(),
        route,
        deleting,
    ])
    .await
    .unwrap();
    let sim2 = Sim::with_client(client, 6);
    assert_eq!(weight_of(&sim2, "checkout-v2").await, 33);
    sim2.reconcile().await.unwrap();
    assert_eq!(
        (
            weight_of(&sim2, "checkout-v1").await,
            weight_of(&sim2, "checkout-v2").await
        ),
        (100, 0)
    );
    assert!(
        sim2.rollout().await.is_err(),
        "the Rollout is gone once its finalizer is removed"
    );
    // Deployments and Services are never deleted.
    let deps: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(sim2.client.clone(), cluster::NAMESPACE);
    assert_eq!(
        deps.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
}

#[tokio::test]
async fn deletion_copes_with_a_route_that_is_already_gone() {
    let mut deleting = serde_json::to_value(cluster::rollout(
        "checkout",
        "checkout-v1",
        "checkout-v2",
        "checkout",
    ))
    .unwrap();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-03-02T10:00:00Z");
    deleting["metadata"]["finalizers"] = json!([FINALIZER]);
    let client = cluster::client(vec![deleting]).await.unwrap();
    let sim = Sim::with_client(client, 7);
    sim.reconcile().await.unwrap();
    assert!(sim.rollout().await.is_err());
}

#[tokio::test]
async fn a_route_edit_made_by_someone_else_survives_the_next_weight_change() {
    let sim = Sim::standard(8).await.unwrap();
    sim.traffic.set_error_rate("checkout-v2", 0.005);
    run_until(&sim, MAX, |r| {
        r.status.as_ref().is_some_and(|s| s.canary_weight == 5)
    })
    .await;
    // A person adds a hostname and a timeout to the rule we manage.
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        sim.client.clone(),
        cluster::NAMESPACE,
        &kube::api::ApiResource::erase::<gateway_api::apis::standard::httproutes::HttpRoute>(&()),
    );
    let mut obj = api.get("checkout").await.unwrap();
    obj.data["spec"]["hostnames"] = json!(["shop.example.com", "www.shop.example.com"]);
    obj.data["spec"]["rules"][0]["timeouts"] = json!({"request": "10s"});
    api.replace("checkout", &Default::default(), &obj)
        .await
        .unwrap();
    run_until(&sim, MAX, |r| {
        r.status.as_ref().is_some_and(|s| s.canary_weight == 33)
    })
    .await;
    let obj = api.get("checkout").await.unwrap();
    assert_eq!(obj.data["spec"]["hostnames"][1], "www.shop.example.com");
    assert_eq!(obj.data["spec"]["rules"][0]["timeouts"]["request"], "10s");
    assert_eq!(weight_of(&sim, "checkout-v2").await, 33);
}

#[tokio::test]
async fn an_invalid_spec_gets_ready_false_naming_the_field_and_no_traffic_change() {
    let mut bad = cluster::rollout("checkout", "checkout-v1", "checkout-v2", "checkout");
    // What CEL rejects at admission can still reach us (CRD without the
    // rules, object stored before an upgrade): it must not crash-loop.
    bad.spec.steps =
        Some(serde_json::from_value(json!([{"setWeight": 50}, {"setWeight": 20}])).unwrap());
    let client = cluster::client(vec![
        serde_json::to_value(cluster::deployment("checkout-v1", 3, 3)).unwrap(),
        serde_json::to_value(cluster::deployment("checkout-v2", 3, 3)).unwrap(),
        serde_json::to_value(cluster::service("checkout-v1")).unwrap(),
        serde_json::to_value(cluster::service("checkout-v2")).unwrap(),
        cluster::http_route("checkout", "checkout-v1"),
        serde_json::to_value(&bad).unwrap(),
    ])
    .await
    .unwrap();
    let sim = Sim::with_client(client, 9);
    let action = sim.reconcile().await.unwrap();
    assert_eq!(action, Action::await_change());
    let r = sim.rollout().await.unwrap();
    assert_eq!(phase(&r), Phase::Invalid);
    let (status, reason, message) = condition(&r, "Ready");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(message.contains("spec.steps[1].setWeight"), "{message}");
    assert_eq!(
        weights(&sim).await,
        vec![("checkout-v1".to_string(), 1)],
        "route untouched"
    );
    assert!(event_reasons(&sim).await.iter().any(|r| r == "InvalidSpec"));
}

#[tokio::test]
async fn a_missing_canary_deployment_is_named_in_the_ready_condition() {
    let client = cluster::client(vec![
        serde_json::to_value(cluster::deployment("checkout-v1", 3, 3)).unwrap(),
        serde_json::to_value(cluster::service("checkout-v1")).unwrap(),
        serde_json::to_value(cluster::service("checkout-v2")).unwrap(),
        cluster::http_route("checkout", "checkout-v1"),
        serde_json::to_value(cluster::rollout(
            "checkout",
            "checkout-v1",
            "checkout-v2",
            "checkout",
        ))
        .unwrap(),
    ])
    .await
    .unwrap();
    let sim = Sim::with_client(client, 10);
    sim.reconcile().await.unwrap();
    let r = sim.rollout().await.unwrap();
    let (status, reason, message) = condition(&r, "Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ReferenceNotFound")
    );
    assert!(
        message.contains("spec.canary.deployment") && message.contains("checkout-v2"),
        "{message}"
    );
    assert_eq!(weight_of(&sim, "checkout-v2").await, 0);
}

#[tokio::test]
async fn a_missing_route_is_named_in_the_ready_condition() {
    let client = cluster::client(vec![
        serde_json::to_value(cluster::deployment("checkout-v1", 3, 3)).unwrap(),
        serde_json::to_value(cluster::deployment("checkout-v2", 3, 3)).unwrap(),
        serde_json::to_value(cluster::service("checkout-v1")).unwrap(),
        serde_json::to_value(cluster::service("checkout-v2")).unwrap(),
        serde_json::to_value(cluster::rollout(
            "checkout",
            "checkout-v1",
            "checkout-v2",
            "checkout",
        ))
        .unwrap(),
    ])
    .await
    .unwrap();
    let sim = Sim::with_client(client, 11);
    sim.reconcile().await.unwrap();
    let (status, reason, message) = condition(&sim.rollout().await.unwrap(), "Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RouteNotUsable")
    );
    assert!(
        message.contains("spec.trafficRouting.gatewayAPI"),
        "{message}"
    );
}

async fn annotate(sim: &Sim, action: &str) {
    let patch = json!({"metadata": {"annotations": {ACTION_ANNOTATION: action}}});
    sim.api()
        .patch(&sim.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn abort_and_retry_by_annotation_are_carried_out_once_and_recorded() {
    let sim = Sim::standard(12).await.unwrap();
    sim.traffic.set_error_rate("checkout-v2", 0.005);
    run_until(&sim, MAX, |r| {
        r.status.as_ref().is_some_and(|s| s.canary_weight == 33)
    })
    .await;
    annotate(&sim, "abort").await;
    sim.reconcile().await.unwrap();
    let r = sim.rollout().await.unwrap();
    assert_eq!(phase(&r), Phase::Aborted);
    assert_eq!(weight_of(&sim, "checkout-v2").await, 0);
    assert!(
        !r.annotations().contains_key(ACTION_ANNOTATION),
        "the one-shot annotation is removed"
    );
    let last = r.status.as_ref().unwrap().last_action.clone().unwrap();
    assert_eq!(
        (last.action.as_str(), last.result.as_str()),
        ("abort", "Done")
    );
    assert_eq!(condition(&r, "RolledBack").1, "Aborted");
    // Reconciling again changes nothing (carried out once).
    sim.reconcile().await.unwrap();
    assert_eq!(phase(&sim.rollout().await.unwrap()), Phase::Aborted);

    annotate(&sim, "retry").await;
    let r = sim.run_until_terminal(STEP, MAX, |_| {}).await.unwrap();
    assert_eq!(phase(&r), Phase::Succeeded);
    assert_eq!(weight_of(&sim, "checkout-v2").await, 100);
}

#[tokio::test]
async fn an_unknown_action_is_refused_and_removed() {
    let sim = Sim::standard(13).await.unwrap();
    sim.reconcile().await.unwrap();
    annotate(&sim, "rollback-please").await;
    sim.reconcile().await.unwrap();
    let r = sim.rollout().await.unwrap();
    assert!(!r.annotations().contains_key(ACTION_ANNOTATION));
    let last = r.status.as_ref().unwrap().last_action.clone().unwrap();
    assert_eq!(last.result, "Refused");
    assert!(
        last.message
            .contains("promote, promote-full, abort or retry")
    );
}

#[tokio::test]
async fn manual_pause_step_waits_for_promote() {
    let sim = Sim::standard(14).await.unwrap();
    sim.traffic.set_error_rate("checkout-v2", 0.005);
    let patch = json!({"spec": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}]}});
    sim.api()
        .patch("checkout", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let r = run_until(&sim, Duration::from_secs(900), |_| false).await;
    assert_eq!(phase(&r), Phase::Paused);
    assert_eq!(condition(&r, "Paused").0, "True");
    assert_eq!(weight_of(&sim, "checkout-v2").await, 10);
    annotate(&sim, "promote").await;
    let r = run_until(&sim, MAX, |r| phase(r).is_terminal()).await;
    assert_eq!(phase(&r), Phase::Succeeded);
}

#[tokio::test]
async fn spec_paused_holds_the_weight() {
    let sim = Sim::standard(15).await.unwrap();
    sim.traffic.set_error_rate("checkout-v2", 0.005);
    run_until(&sim, MAX, |r| {
        r.status.as_ref().is_some_and(|s| s.canary_weight == 5)
    })
    .await;
    sim.api()
        .patch(
            "checkout",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    let r = run_until(&sim, Duration::from_secs(1800), |_| false).await;
    assert_eq!(phase(&r), Phase::Paused);
    assert_eq!(weight_of(&sim, "checkout-v2").await, 5);
    assert_eq!(condition(&r, "Paused").1, "PausedBySpec");
    sim.api()
        .patch(
            "checkout",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"paused": false}})),
        )
        .await
        .unwrap();
    let r = run_until(&sim, MAX, |r| phase(r).is_terminal()).await;
    assert_eq!(phase(&r), Phase::Succeeded);
}

#[tokio::test]
async fn a_restarted_operator_continues_the_same_rollout() {
    let sim = Sim::standard(16).await.unwrap();
    sim.traffic.set_error_rate("checkout-v2", 0.005);
    // Stop in the middle of the pause at 33%.
    let before = run_until(&sim, MAX, |r| {
        r.status.as_ref().is_some_and(|s| {
            s.current_step_index == 3
                && s.last_decision
                    .as_ref()
                    .is_some_and(|d| d.reason == "PauseInProgress")
        })
    })
    .await;
    let step_before = before.status.as_ref().unwrap().current_step_index;
    // A new operator process: fresh context, nothing in memory, same cluster.
    let restarted = Sim::with_client(sim.client.clone(), 16);
    restarted.clock.set(
        sim.clock
            .now()
            .checked_add(jiff::SignedDuration::from_secs(1))
            .unwrap(),
    );
    restarted.reconcile().await.unwrap();
    let after = restarted.rollout().await.unwrap();
    let st = after.status.as_ref().unwrap();
    assert_eq!(
        st.current_step_index, step_before,
        "no step repeated or skipped"
    );
    assert_eq!(
        st.canary_weight, 33,
        "the weight is neither reset nor skipped ahead"
    );
    assert_eq!(
        st.step_started_at,
        before.status.as_ref().unwrap().step_started_at,
        "the pause is not restarted"
    );
    let r = restarted
        .run_until_terminal(STEP, MAX, |_| {})
        .await
        .unwrap();
    assert_eq!(phase(&r), Phase::Succeeded);
}

#[tokio::test]
async fn a_status_computed_from_a_stale_read_is_rejected_not_written() {
    let sim = Sim::standard(17).await.unwrap();
    sim.reconcile().await.unwrap(); // adds the finalizer
    let stale = sim.rollout().await.unwrap();
    rollwise::controller::reconcile(Arc::new(stale.clone()), sim.ctx.clone())
        .await
        .unwrap();
    let fresh = sim.rollout().await.unwrap();
    // Same stale object again: its resourceVersion is outdated.
    let err = rollwise::controller::reconcile(Arc::new(stale), sim.ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(err.metric_label(), "conflict", "{err}");
    assert_eq!(sim.rollout().await.unwrap().status, fresh.status);
}

use kube::ResourceExt;
use rollwise::clock::Clock;

// ------------------------------------------------ evidence-based decisions

#[tokio::test]
async fn evidence_promotes_a_healthy_canary_before_its_pauses_end() {
    let sim = Sim::standard(21).await.unwrap();
    sim.traffic.set_rps(400.0);
    sim.traffic.set_error_rate("checkout-v2", 0.005);
    // Long pauses: only evidence can make this quick.
    let patch = json!({"spec": {"steps": [
        {"setWeight": 10}, {"pause": {"duration": "30m"}},
        {"setWeight": 50}, {"pause": {"duration": "30m"}},
        {"setWeight": 100}
    ]}});
    sim.api()
        .patch("checkout", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let r = run_until(&sim, Duration::from_secs(3600), |r| phase(r).is_terminal()).await;
    assert_eq!(phase(&r), Phase::Succeeded);
    assert!(
        sim.elapsed() < Duration::from_secs(30 * 60),
        "took {:?}",
        sim.elapsed()
    );
    let st = r.status.as_ref().unwrap();
    let c = &st.comparisons[0];
    assert_eq!(c.verdict, "Fine");
    assert!(
        c.fine_evidence >= c.evidence_bar
            && c.evidence_bar == 100.0
            && c.canary_requests > 0.0
            && c.stable_requests > 0.0,
        "{c:?}"
    );
    let reasons = event_reasons(&sim).await;
    assert!(reasons.iter().any(|r| r == "StepAdvanced"));
}

#[tokio::test]
async fn thin_evidence_holds_and_status_says_how_many_requests_each_side_served() {
    let sim = Sim::standard(22).await.unwrap();
    sim.traffic.set_rps(4.0); // 2 requests/s on the canary at 50%
    sim.traffic.set_error_rate("checkout-v2", 0.005);
    // Only the comparison: the standard Rollout's threshold metric (2% over
    // one minute, about 12 canary requests here) fails on any single error,
    // which is the weakness comparisons fix, not what this test is about.
    // And the default exposure budget: the ramp raises the weight to 50%
    // while neither harm nor fine is proven; the step to 100% needs fine.
    let patch = json!({"spec": {"analysis": {"metrics": [], "maxExtraFailures": null}}});
    sim.api()
        .patch("checkout", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let r = run_until(&sim, Duration::from_secs(900), |_| false).await;
    let st = r.status.as_ref().unwrap();
    assert_eq!((phase(&r), st.canary_weight), (Phase::Progressing, 50));
    assert_eq!(
        st.last_decision.as_ref().unwrap().reason,
        "NotEnoughEvidence"
    );
    let c = &st.comparisons[0];
    assert_eq!(c.verdict, "Inconclusive");
    assert!(
        c.canary_requests > 50.0 && c.stable_requests > 1000.0,
        "{c:?}"
    );
    assert!(c.more_requests_needed.is_some_and(|n| n > 0), "{c:?}");
    assert!(
        st.message.contains("more canary requests"),
        "{}",
        st.message
    );
    assert_eq!(condition(&r, "Progressing").1, "NotEnoughEvidence");
}

#[tokio::test]
async fn the_exposure_budget_rolls_back_and_is_shown_in_status() {
    let sim = Sim::standard(23).await.unwrap();
    sim.traffic.set_rps(400.0);
    // Worse than stable but within a loose tolerance: only the budget stops
    // it. (Without the standard threshold metric: 1.5% against its 2% over
    // one minute fails now and then by chance, which is not this test.)
    sim.traffic.set_error_rate("checkout-v1", 0.002);
    sim.traffic.set_error_rate("checkout-v2", 0.015);
    let patch = json!({"spec": {"analysis": {"metrics": [], "maxExtraFailures": 40, "compare": [{
        "name": "http-errors",
        "requests": "sum(increase(http_requests_total{service=\"{{service}}\"}[{{window}}]))",
        "failures": "sum(increase(http_requests_total{service=\"{{service}}\",code=~\"5..\"}[{{window}}]))",
        "tolerance": 0.05
    }]}}});
    sim.api()
        .patch("checkout", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let r = run_until(&sim, Duration::from_secs(3600), |r| phase(r).is_terminal()).await;
    assert_eq!(
        phase(&r),
        Phase::RolledBack,
        "{}",
        r.status.as_ref().unwrap().message
    );
    assert_eq!(condition(&r, "RolledBack").1, "BudgetExhausted");
    let b = r.status.as_ref().unwrap().budget.clone().unwrap();
    assert_eq!(b.max, 40.0);
    assert!(b.used < b.max && b.upper >= b.used, "{b:?}");
    assert_eq!(weight_of(&sim, "checkout-v2").await, 0);
}

// ------------------------------------------- routers, draining, scaling

async fn replicas_of(sim: &Sim, name: &str) -> (i32, Option<String>) {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(sim.client.clone(), cluster::NAMESPACE);
    let d = api.get(name).await.unwrap();
    (
        d.spec.and_then(|s| s.replicas).unwrap_or(0),
        d.metadata
            .annotations
            .and_then(|a| a.get("rollwise.io/scaled-down-from").cloned()),
    )
}

#[tokio::test]
async fn the_replicas_router_promotes_in_whole_pods_keeping_capacity() {
    let sim = Sim::standard(31).await.unwrap();
    let patch = json!({"spec": {
        "trafficRouting": {"gatewayAPI": null, "replicas": {}},
        "analysis": null,
        "steps": [{"setWeight": 33}, {"pause": {"duration": "1m"}}, {"setWeight": 50}, {"pause": {"duration": "1m"}}, {"setWeight": 100}]
    }});
    sim.api()
        .patch("checkout", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..200 {
        sim.reconcile().await.unwrap();
        let (s, _) = replicas_of(&sim, "checkout-v1").await;
        let (c, _) = replicas_of(&sim, "checkout-v2").await;
        assert_eq!(s + c, 3, "capacity kept at the stable's original 3 pods");
        if seen.last() != Some(&c) {
            seen.push(c);
        }
        if phase(&sim.rollout().await.unwrap()).is_terminal() {
            break;
        }
        sim.tick(STEP).await.unwrap();
    }
    let r = sim.rollout().await.unwrap();
    assert_eq!(
        phase(&r),
        Phase::Succeeded,
        "{}",
        r.status.as_ref().unwrap().message
    );
    // 33% of 3 pods is 1 pod (reads back as 33%), 50% is 2 (67%), 100% is 3.
    assert_eq!(seen, vec![0, 1, 2, 3]);
}

#[tokio::test]
async fn the_canary_is_scaled_down_after_a_rollback_and_restored_on_retry() {
    let sim = Sim::standard(32).await.unwrap();
    sim.traffic.set_error_rate("checkout-v2", 0.3);
    let patch = json!({"spec": {"canary": {"scaleDownOnRollback": true}}});
    sim.api()
        .patch("checkout", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let r = run_until(&sim, MAX, |r| phase(r).is_terminal()).await;
    assert_eq!(phase(&r), Phase::RolledBack);
    assert!(r.status.as_ref().unwrap().canary_scaled_down);
    assert_eq!(
        replicas_of(&sim, "checkout-v2").await,
        (0, Some("3".to_string()))
    );
    assert_eq!(
        replicas_of(&sim, "checkout-v1").await.0,
        3,
        "stable untouched"
    );
    annotate(&sim, "retry").await;
    sim.reconcile().await.unwrap();
    assert_eq!(replicas_of(&sim, "checkout-v2").await, (3, None));
}

#[tokio::test]
async fn the_old_version_is_drained_after_promotion_and_the_delay() {
    let sim = Sim::standard(33).await.unwrap();
    sim.traffic.set_error_rate("checkout-v2", 0.005);
    let patch = json!({"spec": {"stable": {"scaleDownAfter": "10m"}}});
    sim.api()
        .patch("checkout", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let r = run_until(&sim, MAX, |r| phase(r).is_terminal()).await;
    assert_eq!(phase(&r), Phase::Succeeded);
    assert_eq!(
        replicas_of(&sim, "checkout-v1").await.0,
        3,
        "not before the delay"
    );
    let r = run_until(&sim, Duration::from_secs(900), |r| {
        r.status.as_ref().unwrap().stable_scaled_down
    })
    .await;
    assert!(r.status.as_ref().unwrap().stable_scaled_down);
    assert_eq!(
        replicas_of(&sim, "checkout-v1").await,
        (0, Some("3".to_string()))
    );
    assert!(
        event_reasons(&sim)
            .await
            .iter()
            .any(|r| r == "StableScaledDown")
    );
    // Deleting the Rollout now keeps traffic on the new version (the old
    // one has no pods) and deletes nothing.
    assert_eq!(weight_of(&sim, "checkout-v2").await, 100);
}

/// A fake check runner: answers every check with `outcome` and records
/// `(name, point, weight)` of each call.
struct FakeChecks {
    outcome: rollwise::plan::checks::CheckOutcome,
    calls: std::sync::Mutex<Vec<(String, String, i64)>>,
}

#[async_trait::async_trait]
impl rollwise::controller::checks::CheckRunner for FakeChecks {
    async fn run(
        &self,
        req: &rollwise::controller::checks::CheckRequest<'_>,
    ) -> rollwise::plan::checks::CheckResult {
        self.calls.lock().unwrap().push((
            req.due.name.clone(),
            req.due.point.as_str().to_string(),
            req.payload["weight"].as_i64().unwrap_or(-1),
        ));
        rollwise::plan::checks::CheckResult {
            name: req.due.name.clone(),
            point: req.due.point,
            step: req.due.step,
            outcome: self.outcome.clone(),
            job_name: None,
            http_status: Some(200),
            result: "fake".into(),
            message: "fake".into(),
        }
    }
}

async fn sim_with_checks(
    outcome: rollwise::plan::checks::CheckOutcome,
    checks: serde_json::Value,
) -> (Sim, Arc<FakeChecks>) {
    let mut sim = Sim::standard(1).await.unwrap();
    sim.traffic.set_error_rate("checkout-v2", 0.005);
    let fake = Arc::new(FakeChecks {
        outcome,
        calls: Default::default(),
    });
    sim.ctx = Arc::new((*sim.ctx).clone().with_checks(fake.clone()));
    sim.api()
        .patch(
            "checkout",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"checks": checks}})),
        )
        .await
        .unwrap();
    (sim, fake)
}

#[tokio::test]
async fn a_failing_pre_rollout_check_rolls_back_before_any_traffic_moves() {
    let (sim, fake) = sim_with_checks(
        rollwise::plan::checks::CheckOutcome::Failed,
        json!([{"name": "smoke", "at": ["preRollout"], "webhook": {"url": "http://x/"}}]),
    )
    .await;
    let mut seen = Vec::new();
    let r = sim
        .run_until_terminal(STEP, MAX, |l| seen.push(l.weight))
        .await
        .unwrap();
    assert_eq!(phase(&r), Phase::RolledBack);
    assert!(seen.iter().all(|w| *w == 0), "{seen:?}");
    assert_eq!(weight_of(&sim, "checkout-v2").await, 0);
    let st = r.status.as_ref().unwrap();
    assert_eq!(st.last_decision.as_ref().unwrap().reason, "CheckFailed");
    assert_eq!(st.checks[0].phase, "Failed");
    assert_eq!(
        fake.calls.lock().unwrap().clone(),
        [("smoke".to_string(), "preRollout".to_string(), 0)]
    );
    let reasons = event_reasons(&sim).await;
    for reason in ["CheckStarted", "CheckFailed"] {
        assert!(reasons.iter().any(|r| r == reason), "{reason}: {reasons:?}");
    }
}

#[tokio::test]
async fn passing_checks_are_run_at_every_point_and_the_rollout_completes() {
    let (sim, fake) = sim_with_checks(
        rollwise::plan::checks::CheckOutcome::Passed,
        json!([{"name": "gate", "at": ["preRollout", "step", "prePromotion"], "webhook": {"url": "http://x/"}}]),
    )
    .await;
    let r = sim.run_until_terminal(STEP, MAX, |_| {}).await.unwrap();
    assert_eq!(phase(&r), Phase::Succeeded);
    let calls = fake.calls.lock().unwrap().clone();
    let points: Vec<(&str, i64)> = calls.iter().map(|(_, p, w)| (p.as_str(), *w)).collect();
    // The standard plan: 5, 33, 50 and 100, each followed by a pause.
    assert_eq!(
        points,
        [
            ("preRollout", 0),
            ("step", 5),
            ("step", 33),
            ("step", 50),
            ("step", 100),
            ("prePromotion", 100)
        ]
    );
    // What status shows: every run, each passed.
    let status: Vec<(&str, &str)> = r
        .status
        .as_ref()
        .unwrap()
        .checks
        .iter()
        .map(|c| (c.point.as_str(), c.phase.as_str()))
        .collect();
    assert_eq!(status.len(), points.len(), "{status:?}");
    assert!(
        status.iter().all(|(_, phase)| *phase == "Passed"),
        "{status:?}"
    );
}
