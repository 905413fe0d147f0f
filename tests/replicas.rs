//! The replica-ratio router and the draining helpers against
//! `kube-fake-client` (real merge patches, resourceVersion preconditions),
//! plus property tests of the split rule.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::routers::{self, counting_patches, reading};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube_fake_client::{ClientBuilder, interceptor};
use proptest::prelude::*;
use rollwise::api::TrafficRouting;
use rollwise::demo::cluster::{self, NAMESPACE};
use rollwise::traffic::replicas::{ORIGINAL_REPLICAS_ANNOTATION, ReplicasRouter, split};
use rollwise::traffic::scale::{self, MAX_WRITE_ATTEMPTS, SCALED_DOWN_FROM_ANNOTATION};
use rollwise::traffic::{Backends, TrafficError, TrafficRouter, router_for};
use serde_json::{Value, json};

const STABLE: &str = "checkout-v1";
const CANARY: &str = "checkout-v2";

// ---------------------------------------------------------------- split

proptest! {
    #[test]
    fn split_preserves_capacity(total in 0i32..=10_000, w in 0u8..=100) {
        let (s, c) = split(total, w);
        prop_assert_eq!(s + c, total);
        prop_assert!(s >= 0 && c >= 0);
    }

    #[test]
    fn split_is_monotone_in_weight(total in 0i32..=10_000, a in 0u8..=100, b in 0u8..=100) {
        let (lo, hi) = (a.min(b), a.max(b));
        let (s_lo, c_lo) = split(total, lo);
        let (s_hi, c_hi) = split(total, hi);
        prop_assert!(c_lo <= c_hi, "canary {c_lo} at {lo}% > {c_hi} at {hi}%");
        prop_assert!(s_lo >= s_hi, "stable {s_lo} at {lo}% < {s_hi} at {hi}%");
    }

    #[test]
    fn split_gives_the_canary_a_pod_for_any_weight(total in 1i32..=10_000, w in 1u8..=100) {
        prop_assert!(split(total, w).1 >= 1);
    }

    #[test]
    fn split_keeps_a_stable_pod_below_100(total in 2i32..=10_000, w in 0u8..100) {
        prop_assert!(split(total, w).0 >= 1);
    }

    #[test]
    fn split_ends(total in 0i32..=i32::MAX) {
        prop_assert_eq!(split(total, 0), (total, 0));
        prop_assert_eq!(split(total, 100), (0, total));
    }

    #[test]
    fn split_rounds_the_canary_up(total in 2i32..=10_000, w in 1u8..100) {
        // Never less canary than asked (up to the one stable pod kept).
        let c = split(total, w).1;
        prop_assert!(i64::from(c) * 100 >= i64::from(total) * i64::from(w) || c == total - 1);
    }
}

// ---------------------------------------------------------------- helpers

fn backends() -> Backends {
    Backends {
        namespace: NAMESPACE.into(),
        stable_service: "checkout".into(),
        canary_service: "checkout".into(),
        stable_deployment: Some(STABLE.into()),
        canary_deployment: Some(CANARY.into()),
        owner: None,
    }
}

fn router(client: &kube::Client) -> ReplicasRouter {
    ReplicasRouter::new(client.clone(), backends())
}

fn deployment(name: &str, replicas: i32) -> Value {
    serde_json::to_value(cluster::deployment(name, replicas, replicas)).expect("json")
}

/// stable=10, canary=0.
async fn ten() -> kube::Client {
    cluster::client(vec![deployment(STABLE, 10), deployment(CANARY, 0)])
        .await
        .expect("fake client")
}

async fn with_interceptor(objects: Vec<Value>, funcs: interceptor::Funcs) -> kube::Client {
    let builder = ClientBuilder::new().with_status_subresource::<Deployment>();
    routers::client_from(builder, objects, funcs).await
}

async fn stored(client: &kube::Client, name: &str) -> Deployment {
    Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .get(name)
        .await
        .expect("deployment")
}

async fn replicas(client: &kube::Client, name: &str) -> i32 {
    stored(client, name)
        .await
        .spec
        .and_then(|s| s.replicas)
        .expect("spec.replicas")
}

/// `(stable, canary)` spec.replicas.
async fn pair(client: &kube::Client) -> (i32, i32) {
    (
        replicas(client, STABLE).await,
        replicas(client, CANARY).await,
    )
}

async fn annotation(client: &kube::Client, name: &str, key: &str) -> Option<String> {
    stored(client, name)
        .await
        .metadata
        .annotations
        .and_then(|a| a.get(key).cloned())
}

/// What `kubectl scale` does.
async fn user_scales(client: &kube::Client, name: &str, replicas: i32) {
    Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "replicas": replicas } })),
        )
        .await
        .expect("scale");
}

// ---------------------------------------------------------------- router

#[tokio::test]
async fn set_weight_scales_exactly_and_preserves_capacity() {
    let client = ten().await;
    let r = router(&client);
    r.verify().await.expect("verify");
    for (w, stable, canary, read) in [
        (5, 9, 1, 10),
        (33, 6, 4, 40),
        (50, 5, 5, 50),
        (100, 0, 10, 100),
        (50, 5, 5, 50),
        (0, 10, 0, 0),
    ] {
        let got = r.set_weight(w).await.expect("set_weight");
        assert_eq!(pair(&client).await, (stable, canary), "weight {w}");
        assert_eq!(got, reading(read), "weight {w}");
        assert_eq!(r.current_weight().await.expect("read"), reading(read));
    }
    assert_eq!(
        annotation(&client, STABLE, ORIGINAL_REPLICAS_ANNOTATION)
            .await
            .as_deref(),
        Some("10")
    );
    assert_eq!(
        annotation(&client, CANARY, ORIGINAL_REPLICAS_ANNOTATION).await,
        None,
        "only the stable carries the record"
    );
}

#[tokio::test]
async fn set_weight_keeps_the_rest_of_the_deployment() {
    let client = ten().await;
    let before = serde_json::to_value(stored(&client, STABLE).await).unwrap();
    router(&client).set_weight(50).await.expect("set_weight");
    let after = serde_json::to_value(stored(&client, STABLE).await).unwrap();
    assert_eq!(after["spec"]["template"], before["spec"]["template"]);
    assert_eq!(after["spec"]["selector"], before["spec"]["selector"]);
    assert_eq!(after["metadata"]["labels"], before["metadata"]["labels"]);
    assert_eq!(after["status"], before["status"]);
}

#[tokio::test]
async fn a_new_router_keeps_the_recorded_total() {
    let client = ten().await;
    router(&client).set_weight(33).await.expect("set_weight");
    assert_eq!(pair(&client).await, (6, 4));

    // Operator restart: a fresh instance, the stable now at 6.
    let restarted = router(&client);
    assert_eq!(restarted.current_weight().await.expect("read"), reading(40));
    restarted.set_weight(50).await.expect("set_weight");
    assert_eq!(
        pair(&client).await,
        (5, 5),
        "total 10 from the annotation, not 6"
    );
    restarted.set_weight(100).await.expect("set_weight");
    assert_eq!(pair(&client).await, (0, 10));
    router(&client).set_weight(5).await.expect("set_weight");
    assert_eq!(pair(&client).await, (9, 1));
}

#[tokio::test]
async fn resize_between_rollouts_refreshes_the_record() {
    let client = ten().await;
    let r = router(&client);
    r.set_weight(50).await.expect("set_weight");
    r.set_weight(0).await.expect("set_weight");
    assert_eq!(pair(&client).await, (10, 0));

    // Idle (canary 0): the user resizes the stable; the next rollout uses it.
    user_scales(&client, STABLE, 12).await;
    r.set_weight(5).await.expect("set_weight");
    assert_eq!(pair(&client).await, (11, 1));
    assert_eq!(
        annotation(&client, STABLE, ORIGINAL_REPLICAS_ANNOTATION)
            .await
            .as_deref(),
        Some("12")
    );

    // During a rollout a manual scale does not change the capacity.
    user_scales(&client, STABLE, 3).await;
    r.set_weight(50).await.expect("set_weight");
    assert_eq!(pair(&client).await, (6, 6));
}

#[tokio::test]
async fn restore_stable_returns_every_pod_to_stable() {
    let client = ten().await;
    let r = router(&client);
    r.set_weight(50).await.expect("set_weight");
    assert_eq!(pair(&client).await, (5, 5));

    router(&client).restore_stable().await.expect("restore");
    assert_eq!(pair(&client).await, (10, 0));
    assert_eq!(r.current_weight().await.expect("read"), reading(0));
    assert_eq!(
        annotation(&client, STABLE, ORIGINAL_REPLICAS_ANNOTATION)
            .await
            .as_deref(),
        Some("10"),
        "the record stays"
    );

    // From 100% too.
    r.set_weight(100).await.expect("set_weight");
    r.restore_stable().await.expect("restore");
    assert_eq!(pair(&client).await, (10, 0));
}

#[tokio::test]
async fn restore_stable_while_idle_keeps_a_resize() {
    let client = ten().await;
    router(&client).set_weight(50).await.expect("set_weight");
    router(&client).set_weight(0).await.expect("set_weight");
    user_scales(&client, STABLE, 7).await;
    // Rollout deleted while idle: the user's new size is not undone.
    router(&client).restore_stable().await.expect("restore");
    assert_eq!(pair(&client).await, (7, 0));
}

#[tokio::test]
async fn a_drained_canary_does_not_shrink_the_capacity() {
    let client = ten().await;
    router(&client).set_weight(50).await.expect("set_weight");
    // The controller drains the canary mid-rollout (e.g. on abort).
    assert_eq!(
        scale::scale_down(client.clone(), NAMESPACE, CANARY)
            .await
            .expect("drain"),
        Some(5)
    );
    assert_eq!(pair(&client).await, (5, 0));
    router(&client).restore_stable().await.expect("restore");
    assert_eq!(pair(&client).await, (10, 0), "total 10, not the stable's 5");
}

#[tokio::test]
async fn restore_stable_with_missing_deployments_is_ok() {
    // Nothing at all.
    let client = cluster::client(vec![]).await.expect("fake client");
    router(&client)
        .restore_stable()
        .await
        .expect("nothing to restore");

    // Canary gone: the stable still gets its capacity back.
    let client = ten().await;
    router(&client).set_weight(50).await.expect("set_weight");
    Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .delete(CANARY, &Default::default())
        .await
        .expect("delete");
    router(&client).restore_stable().await.expect("restore");
    assert_eq!(replicas(&client, STABLE).await, 10);

    // Stable gone: the canary is left alone (0 would leave no pods at all).
    let client = cluster::client(vec![deployment(CANARY, 4)])
        .await
        .expect("fake client");
    router(&client).restore_stable().await.expect("restore");
    assert_eq!(replicas(&client, CANARY).await, 4);
}

#[tokio::test]
async fn missing_deployments_are_reported() {
    let client = cluster::client(vec![deployment(STABLE, 10)])
        .await
        .expect("fake client");
    let r = router(&client);
    let err = r.verify().await.expect_err("canary missing");
    assert!(
        matches!(&err, TrafficError::RouteNotFound { kind: "Deployment", name, namespace }
            if name == CANARY && namespace == NAMESPACE),
        "{err:?}"
    );
    assert!(err.is_configuration());
    let err = r.set_weight(5).await.expect_err("canary missing");
    assert!(matches!(err, TrafficError::RouteNotFound { .. }), "{err:?}");
    let err = r.current_weight().await.expect_err("canary missing");
    assert!(matches!(err, TrafficError::RouteNotFound { .. }), "{err:?}");
    assert_eq!(replicas(&client, STABLE).await, 10, "nothing scaled");

    let client = cluster::client(vec![deployment(CANARY, 0)])
        .await
        .expect("fake client");
    let err = router(&client).verify().await.expect_err("stable missing");
    assert!(
        matches!(&err, TrafficError::RouteNotFound { kind: "Deployment", name, .. } if name == STABLE),
        "{err:?}"
    );
}

#[tokio::test]
async fn deployments_must_be_named_in_the_spec() {
    let client = ten().await;
    for (b, field) in [
        (
            Backends {
                stable_deployment: None,
                ..backends()
            },
            "spec.stable.deployment",
        ),
        (
            Backends {
                canary_deployment: None,
                ..backends()
            },
            "spec.canary.deployment",
        ),
    ] {
        let r = ReplicasRouter::new(client.clone(), b);
        for err in [
            r.verify().await.expect_err("malformed"),
            r.set_weight(5).await.expect_err("malformed"),
            r.restore_stable().await.expect_err("malformed"),
        ] {
            assert!(
                matches!(&err, TrafficError::Malformed { message, .. } if message.contains(field)),
                "{err:?}"
            );
            assert!(err.is_configuration());
        }
    }
    assert_eq!(pair(&client).await, (10, 0));
}

#[tokio::test]
async fn a_bad_record_is_malformed() {
    let mut stable = deployment(STABLE, 10);
    stable["metadata"]["annotations"] = json!({ ORIGINAL_REPLICAS_ANNOTATION: "ten" });
    let client = cluster::client(vec![stable, deployment(CANARY, 0)])
        .await
        .expect("fake client");
    let err = router(&client).verify().await.expect_err("bad annotation");
    assert!(
        matches!(&err, TrafficError::Malformed { kind: "Deployment", message, .. }
            if message.contains(ORIGINAL_REPLICAS_ANNOTATION)),
        "{err:?}"
    );
    assert!(router(&client).set_weight(5).await.is_err());
    assert_eq!(pair(&client).await, (10, 0));
}

#[tokio::test]
async fn same_weight_again_makes_no_write() {
    let patches = Arc::new(AtomicU32::new(0));
    let client = with_interceptor(
        vec![deployment(STABLE, 10), deployment(CANARY, 0)],
        counting_patches(&patches),
    )
    .await;
    let r = router(&client);
    r.set_weight(50).await.expect("set_weight");
    assert_eq!(patches.load(Ordering::SeqCst), 2, "one per Deployment");
    let rv = stored(&client, STABLE).await.metadata.resource_version;
    assert_eq!(r.set_weight(50).await.expect("set_weight"), reading(50));
    // 45% of 10 is also 5 pods: nothing to change either.
    assert_eq!(r.set_weight(45).await.expect("set_weight"), reading(50));
    assert_eq!(patches.load(Ordering::SeqCst), 2);
    assert_eq!(stored(&client, STABLE).await.metadata.resource_version, rv);
}

#[tokio::test]
async fn the_growing_deployment_is_written_first() {
    let order = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = order.clone();
    let funcs = interceptor::Funcs::new().patch(move |ctx| {
        seen.lock().unwrap().push(ctx.name.to_owned());
        Ok(None)
    });
    let client = with_interceptor(vec![deployment(STABLE, 10), deployment(CANARY, 0)], funcs).await;
    let r = router(&client);
    r.set_weight(50).await.expect("up");
    r.set_weight(5).await.expect("down");
    assert_eq!(*order.lock().unwrap(), vec![CANARY, STABLE, STABLE, CANARY]);
}

#[tokio::test]
async fn a_concurrent_change_is_retried_and_kept() {
    let patches = Arc::new(AtomicU32::new(0));
    // Someone else edits the Deployment right before our (now stale) patch
    // lands.
    let edit = json!({ "metadata": { "labels": { "edited-by": "someone-else" } } });
    let funcs = routers::concurrent_edit::<Deployment>(&patches, edit);
    let client = with_interceptor(vec![deployment(STABLE, 10), deployment(CANARY, 0)], funcs).await;

    let got = router(&client).set_weight(33).await.expect("set_weight");

    assert_eq!(got, reading(40));
    assert_eq!(
        patches.load(Ordering::SeqCst),
        3,
        "one conflict, one retry, one more Deployment"
    );
    assert_eq!(pair(&client).await, (6, 4));
    let canary = stored(&client, CANARY).await;
    assert_eq!(
        canary
            .metadata
            .labels
            .unwrap()
            .get("edited-by")
            .map(String::as_str),
        Some("someone-else"),
        "the concurrent edit survives"
    );
}

#[tokio::test]
async fn persistent_conflicts_give_up() {
    let patches = Arc::new(AtomicU32::new(0));
    let funcs = routers::conflicting_patches(&patches);
    let client = with_interceptor(vec![deployment(STABLE, 10), deployment(CANARY, 0)], funcs).await;
    let err = router(&client).set_weight(50).await.expect_err("gives up");
    assert!(
        matches!(&err, TrafficError::Conflict { kind: "Deployment", attempts, .. } if *attempts == MAX_WRITE_ATTEMPTS),
        "{err:?}"
    );
    assert!(!err.is_configuration());
    assert_eq!(patches.load(Ordering::SeqCst), MAX_WRITE_ATTEMPTS);
    assert_eq!(pair(&client).await, (10, 0));
}

#[tokio::test]
async fn router_for_builds_the_replicas_router() {
    let client = ten().await;
    let routing: TrafficRouting =
        serde_json::from_value(json!({ "replicas": {} })).expect("routing");
    let r = router_for(client.clone(), &routing, backends()).expect("a router");
    assert_eq!(r.name(), "replicas");
    assert_eq!(r.set_weight(5).await.expect("set"), reading(10));
    assert_eq!(pair(&client).await, (9, 1));
    // No A/B routes with replicas.
    assert!(r.set_header_routes(&[]).await.is_ok());
}

// ---------------------------------------------------------------- scale

#[tokio::test]
async fn scale_down_then_restore_round_trips() {
    let client = cluster::client(vec![deployment(CANARY, 4)])
        .await
        .expect("fake client");

    let recorded = scale::scale_down(client.clone(), NAMESPACE, CANARY)
        .await
        .expect("scale down");
    assert_eq!(recorded, Some(4));
    assert_eq!(replicas(&client, CANARY).await, 0);
    assert_eq!(
        annotation(&client, CANARY, SCALED_DOWN_FROM_ANNOTATION)
            .await
            .as_deref(),
        Some("4")
    );
    let rv = stored(&client, CANARY).await.metadata.resource_version;

    // Again: already done, no write, same record.
    let again = scale::scale_down(client.clone(), NAMESPACE, CANARY)
        .await
        .expect("again");
    assert_eq!(again, Some(4));
    assert_eq!(stored(&client, CANARY).await.metadata.resource_version, rv);

    let restored = scale::restore(client.clone(), NAMESPACE, CANARY)
        .await
        .expect("restore");
    assert_eq!(restored, Some(4));
    assert_eq!(replicas(&client, CANARY).await, 4);
    assert_eq!(
        annotation(&client, CANARY, SCALED_DOWN_FROM_ANNOTATION).await,
        None
    );
    // The Deployment's other annotations (none here) and labels are untouched.
    assert_eq!(
        stored(&client, CANARY).await.metadata.labels,
        cluster::deployment(CANARY, 4, 4).metadata.labels
    );

    // Nothing recorded any more: restore is a no-op.
    let rv = stored(&client, CANARY).await.metadata.resource_version;
    assert_eq!(
        scale::restore(client.clone(), NAMESPACE, CANARY)
            .await
            .expect("noop"),
        None
    );
    assert_eq!(stored(&client, CANARY).await.metadata.resource_version, rv);
}

#[tokio::test]
async fn scale_helpers_handle_missing_and_idle_deployments() {
    let client = cluster::client(vec![deployment(CANARY, 0)])
        .await
        .expect("fake client");
    assert_eq!(
        scale::scale_down(client.clone(), NAMESPACE, "gone")
            .await
            .expect("missing"),
        None
    );
    assert_eq!(
        scale::restore(client.clone(), NAMESPACE, "gone")
            .await
            .expect("missing"),
        None
    );
    // Already at 0 without our record: nothing to drain, nothing recorded.
    assert_eq!(
        scale::scale_down(client.clone(), NAMESPACE, CANARY)
            .await
            .expect("idle"),
        None
    );
    assert_eq!(
        annotation(&client, CANARY, SCALED_DOWN_FROM_ANNOTATION).await,
        None
    );
    assert_eq!(
        scale::restore(client.clone(), NAMESPACE, CANARY)
            .await
            .expect("idle"),
        None
    );
    assert_eq!(replicas(&client, CANARY).await, 0);
}

#[tokio::test]
async fn scale_down_retries_a_concurrent_change() {
    let patches = Arc::new(AtomicU32::new(0));
    // Someone scales it up between our read and our write.
    let edit = json!({ "spec": { "replicas": 6 } });
    let funcs = routers::concurrent_edit::<Deployment>(&patches, edit);
    let client = with_interceptor(vec![deployment(CANARY, 4)], funcs).await;

    let recorded = scale::scale_down(client.clone(), NAMESPACE, CANARY)
        .await
        .expect("scale down");

    assert_eq!(patches.load(Ordering::SeqCst), 2, "one conflict, one retry");
    assert_eq!(recorded, Some(6), "the fresh count is the one recorded");
    assert_eq!(replicas(&client, CANARY).await, 0);
    assert_eq!(
        scale::restore(client.clone(), NAMESPACE, CANARY)
            .await
            .expect("restore"),
        Some(6)
    );
    assert_eq!(replicas(&client, CANARY).await, 6);
}
