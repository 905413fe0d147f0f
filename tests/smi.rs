//! The SMI TrafficSplit router against `kube-fake-client`.
//!
//! The fake applies merge patches with `json_patch::merge` and enforces the
//! `metadata.resourceVersion` precondition. It treats server-side apply as a
//! merge patch (creating the object when missing) and has no list-type
//! semantics, so nothing here proves how a real API server merges the apply.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::routers::{
    self, CANARY, NS, STABLE, TrafficSplit, assert_built, assert_crd_missing,
    assert_header_routes_unsupported, counting_patches, header, reading,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use rollwise::api::{SmiRouting, TrafficRouting};
use rollwise::traffic::gateway_api::MAX_WRITE_ATTEMPTS;
use rollwise::traffic::smi::SmiRouter;
use rollwise::traffic::{Backends, TrafficError, TrafficRouter, WeightReading, router_for};
use serde_json::{Value, json};

const SPLIT: &str = "web-split";
const OWNER_UID: &str = "0b1c7e44-8d2a-4a55-9a53-2f7e4f8e4b11";

fn owner() -> OwnerReference {
    routers::rollout_owner(OWNER_UID)
}

fn backends() -> Backends {
    Backends {
        owner: Some(owner()),
        ..routers::backends()
    }
}

fn config() -> SmiRouting {
    SmiRouting {
        traffic_split: SPLIT.into(),
        root_service: Some("web".into()),
    }
}

fn router(client: &kube::Client) -> SmiRouter {
    SmiRouter::new(client.clone(), config(), backends())
}

/// A TrafficSplit someone else wrote, with the given backends.
fn split(backends: Value) -> Value {
    json!({
        "apiVersion": "split.smi-spec.io/v1alpha2",
        "kind": "TrafficSplit",
        "metadata": { "name": SPLIT, "namespace": NS },
        "spec": { "service": "web", "backends": backends },
    })
}

/// A TrafficSplit rollwise created earlier.
fn our_split(stable: u32, canary: u32) -> Value {
    let mut s = split(json!([
        { "service": STABLE, "weight": stable },
        { "service": CANARY, "weight": canary },
    ]));
    s["metadata"]["labels"] = json!({ "app.kubernetes.io/managed-by": "rollwise" });
    s["metadata"]["ownerReferences"] = json!([owner()]);
    s
}

// `client_with`, `client_with_interceptor` and `stored` (the TrafficSplit `NS/SPLIT`).
routers::fixtures!(TrafficSplit, SPLIT);

async fn exists(client: &kube::Client) -> bool {
    routers::stored_opt::<TrafficSplit>(client, NS, SPLIT)
        .await
        .is_some()
}

/// The parts of a TrafficSplit rollwise decides, for snapshots.
fn ours_view(split: &Value) -> Value {
    json!({
        "apiVersion": split["apiVersion"],
        "kind": split["kind"],
        "metadata": {
            "name": split["metadata"]["name"],
            "namespace": split["metadata"]["namespace"],
            "labels": split["metadata"]["labels"],
            "ownerReferences": split["metadata"]["ownerReferences"],
        },
        "spec": split["spec"],
    })
}

#[tokio::test]
async fn set_weight_creates_an_owned_traffic_split_when_missing() {
    let client = client_with(vec![]).await;
    let router = router(&client);
    router
        .verify()
        .await
        .expect("a missing TrafficSplit will be created");
    assert_eq!(
        router.current_weight().await.expect("read"),
        WeightReading { canary: None }
    );

    assert_eq!(router.set_weight(10).await.expect("set"), reading(10));

    let created = stored(&client).await;
    insta::assert_yaml_snapshot!("created_traffic_split", ours_view(&created));
    assert_eq!(router.current_weight().await.expect("read"), reading(10));
}

#[tokio::test]
async fn root_service_defaults_to_the_stable_service() {
    let client = client_with(vec![]).await;
    let config = SmiRouting {
        traffic_split: SPLIT.into(),
        root_service: None,
    };
    let router = SmiRouter::new(client.clone(), config, backends());
    // No split: everything goes to the root, which is the stable Service.
    assert_eq!(router.current_weight().await.expect("read"), reading(0));
    router.set_weight(5).await.expect("set");
    assert_eq!(stored(&client).await["spec"]["service"], STABLE);
}

#[tokio::test]
async fn our_traffic_split_is_updated_keeping_what_others_added() {
    let mut ours = our_split(90, 10);
    ours["metadata"]["labels"]["team"] = json!("checkout");
    ours["metadata"]["annotations"] = json!({ "linkerd.io/note": "kept" });
    let patches = Arc::new(AtomicU32::new(0));
    let client = client_with_interceptor(vec![ours], counting_patches(&patches)).await;
    let router = router(&client);

    assert_eq!(router.set_weight(10).await.expect("set"), reading(10));
    assert_eq!(patches.load(Ordering::SeqCst), 0, "no write when unchanged");

    assert_eq!(router.set_weight(50).await.expect("set"), reading(50));
    assert_eq!(patches.load(Ordering::SeqCst), 1);
    let after = stored(&client).await;
    assert_eq!(
        after["spec"]["backends"],
        json!([{ "service": STABLE, "weight": 50 }, { "service": CANARY, "weight": 50 }])
    );
    assert_eq!(after["metadata"]["labels"]["team"], "checkout");
    assert_eq!(after["metadata"]["annotations"]["linkerd.io/note"], "kept");
}

#[tokio::test]
async fn someone_elses_traffic_split_only_gets_its_weights_changed() {
    let original = json!({
        "apiVersion": "split.smi-spec.io/v1alpha2",
        "kind": "TrafficSplit",
        "metadata": {
            "name": SPLIT,
            "namespace": NS,
            "labels": { "app": "web" },
            "annotations": { "note": "hand written" },
        },
        "spec": {
            "service": "web-apex",
            "matches": [{ "kind": "HTTPRouteGroup", "name": "web-routes" }],
            "backends": [
                { "service": "web-legacy", "weight": 5 },
                { "service": STABLE, "weight": 95, "futureField": "kept" },
            ],
            "futureSpecField": { "keep": true },
        },
    });
    let client = client_with(vec![original.clone()]).await;

    assert_eq!(
        router(&client).set_weight(20).await.expect("set"),
        reading(20)
    );

    let after = stored(&client).await;
    insta::assert_yaml_snapshot!("someone_elses_split_weighted", after["spec"]);
    let mut expected = original.clone();
    let backends = expected["spec"]["backends"].as_array_mut().unwrap();
    backends[1]["weight"] = json!(80);
    backends.insert(2, json!({ "service": CANARY, "weight": 20 }));
    assert_eq!(after["spec"], expected["spec"]);
    assert_eq!(after["metadata"]["labels"], original["metadata"]["labels"]);
    assert_eq!(
        after["metadata"]["annotations"],
        original["metadata"]["annotations"]
    );
    assert!(
        after["metadata"].get("ownerReferences").is_none(),
        "never adopted"
    );
}

#[tokio::test]
async fn a_split_labelled_for_another_rollout_is_not_ours() {
    let mut other = our_split(100, 0);
    other["metadata"]["ownerReferences"][0]["uid"] = json!("another-uid");
    other["spec"]["backends"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "service": "third", "weight": 1 }));
    let client = client_with(vec![other]).await;

    router(&client).set_weight(30).await.expect("set");

    let after = stored(&client).await;
    assert_eq!(
        after["spec"]["backends"],
        json!([
            { "service": STABLE, "weight": 70 },
            { "service": CANARY, "weight": 30 },
            { "service": "third", "weight": 1 },
        ]),
        "patched as someone else's: the third backend stays"
    );
    assert_eq!(
        after["metadata"]["ownerReferences"][0]["uid"],
        "another-uid"
    );
}

#[tokio::test]
async fn concurrent_edit_is_not_lost() {
    let patches = Arc::new(AtomicU32::new(0));
    let edit = json!({
        "metadata": { "annotations": { "edited-by": "someone-else" } },
        "spec": { "backends": [
            { "service": STABLE, "weight": 100 },
            { "service": "web-mirror", "weight": 3 },
        ] },
    });
    let funcs = routers::concurrent_edit::<TrafficSplit>(&patches, edit);
    let client = client_with_interceptor(
        vec![split(json!([{ "service": STABLE, "weight": 100 }]))],
        funcs,
    )
    .await;

    assert_eq!(
        router(&client).set_weight(10).await.expect("set"),
        reading(10)
    );

    assert_eq!(patches.load(Ordering::SeqCst), 2, "one conflict, one retry");
    let after = stored(&client).await;
    assert_eq!(
        after["metadata"]["annotations"]["edited-by"],
        "someone-else"
    );
    assert_eq!(
        after["spec"]["backends"],
        json!([
            { "service": STABLE, "weight": 90 },
            { "service": CANARY, "weight": 10 },
            { "service": "web-mirror", "weight": 3 },
        ])
    );
}

#[tokio::test]
async fn persistent_conflicts_give_up_with_conflict_error() {
    let patches = Arc::new(AtomicU32::new(0));
    let funcs = routers::conflicting_patches(&patches);
    let client = client_with_interceptor(
        vec![split(json!([{ "service": STABLE, "weight": 100 }]))],
        funcs,
    )
    .await;
    let err = router(&client).set_weight(10).await.expect_err("gives up");
    assert!(
        matches!(err, TrafficError::Conflict { attempts, kind: "TrafficSplit", .. } if attempts == MAX_WRITE_ATTEMPTS),
        "{err:?}"
    );
}

#[tokio::test]
async fn set_weight_reads_back_the_servers_answer() {
    // Stand-in for a mutating webhook that caps the canary at 25%.
    let funcs = routers::adjusted_answers::<TrafficSplit>(|stored| {
        stored["spec"]["backends"] = json!([
            { "service": STABLE, "weight": 75 },
            { "service": CANARY, "weight": 25 },
        ]);
    });
    let client = client_with_interceptor(vec![our_split(100, 0)], funcs).await;
    assert_eq!(
        router(&client).set_weight(40).await.expect("set"),
        reading(25)
    );
}

#[tokio::test]
async fn restore_stable_sends_everything_to_stable() {
    let client = client_with(vec![our_split(40, 60)]).await;
    router(&client).restore_stable().await.expect("restore");
    assert_eq!(
        stored(&client).await["spec"]["backends"],
        json!([{ "service": STABLE, "weight": 100 }, { "service": CANARY, "weight": 0 }])
    );

    let client = client_with(vec![split(json!([
        { "service": STABLE, "weight": 1 },
        { "service": CANARY, "weight": 1 },
    ]))])
    .await;
    router(&client).restore_stable().await.expect("restore");
    assert_eq!(
        router(&client).current_weight().await.expect("read"),
        reading(0)
    );
}

#[tokio::test]
async fn restore_stable_never_creates_a_traffic_split() {
    let client = client_with(vec![]).await;
    router(&client)
        .restore_stable()
        .await
        .expect("nothing to restore");
    assert!(!exists(&client).await);
}

#[tokio::test]
async fn someone_elses_split_without_stable_backend_is_no_stable_backend() {
    let client = client_with(vec![split(json!([{ "service": "other", "weight": 100 }]))]).await;
    let before = stored(&client).await;
    for err in [
        router(&client).verify().await.expect_err("no stable"),
        router(&client).set_weight(10).await.expect_err("no stable"),
    ] {
        assert!(
            matches!(&err, TrafficError::NoStableBackend { service, .. } if service == STABLE),
            "{err:?}"
        );
    }
    router(&client)
        .restore_stable()
        .await
        .expect("nothing to restore");
    assert_eq!(stored(&client).await, before);
}

#[tokio::test]
async fn v1alpha1_quantity_weights_are_read_and_garbage_is_malformed() {
    // linkerd-smi stores v1alpha1 (int-or-string weights) and serves
    // v1alpha2 without conversion: quantities come back as written.
    let client = client_with(vec![split(json!([
        { "service": STABLE, "weight": "900m" },
        { "service": CANARY, "weight": "100m" },
    ]))])
    .await;
    assert_eq!(
        router(&client).current_weight().await.expect("read"),
        reading(10)
    );
    let client = client_with(vec![split(json!([
        { "service": STABLE, "weight": "3" },
        { "service": CANARY, "weight": 1.0 },
    ]))])
    .await;
    assert_eq!(
        router(&client).current_weight().await.expect("read"),
        reading(25)
    );
    // Written back as integers.
    assert_eq!(
        router(&client).set_weight(40).await.expect("set"),
        reading(40)
    );
    assert_eq!(
        stored(&client).await["spec"]["backends"],
        json!([{ "service": STABLE, "weight": 60 }, { "service": CANARY, "weight": 40 }])
    );

    for garbage in [json!("lots"), json!(-5), json!({ "value": 1 })] {
        let client = client_with(vec![split(json!([
            { "service": STABLE, "weight": garbage },
            { "service": CANARY, "weight": 1 },
        ]))])
        .await;
        let err = router(&client)
            .current_weight()
            .await
            .expect_err("malformed");
        assert!(matches!(err, TrafficError::Malformed { .. }), "{err:?}");
    }
}

#[tokio::test]
async fn crd_not_installed_is_crd_missing() {
    let client = routers::client_without_crds().await;
    assert_crd_missing(&router(&client), "trafficsplits.split.smi-spec.io").await;
}

#[tokio::test]
async fn header_routes_are_unsupported() {
    let client = client_with(vec![our_split(100, 0)]).await;
    assert_header_routes_unsupported(&router(&client), "smi", vec![header("x-beta", "1")]).await;
}

#[tokio::test]
async fn router_for_builds_the_smi_router() {
    let client = client_with(vec![our_split(95, 5)]).await;
    let routing = TrafficRouting {
        smi: Some(config()),
        ..Default::default()
    };
    let router = router_for(client.clone(), &routing, backends()).expect("a router");
    assert_built(router.as_ref(), "smi", 5).await;
}
