//! The Traefik TraefikService router against `kube-fake-client`.
//!
//! The fake applies merge patches with `json_patch::merge` and enforces the
//! `metadata.resourceVersion` precondition, so the merge-patch path, the
//! conflict retry and field preservation are exercised for real.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::routers::{
    self, CANARY, NS, STABLE, TraefikService, assert_built, assert_crd_missing,
    assert_header_routes_unsupported, backends, cookie, counting_patches, reading,
};
use rollwise::api::{TraefikRouting, TrafficRouting};
use rollwise::traffic::gateway_api::MAX_WRITE_ATTEMPTS;
use rollwise::traffic::traefik::TraefikRouter;
use rollwise::traffic::{TrafficError, TrafficRouter, router_for};
use serde_json::{Value, json};

const NAME: &str = "web-weighted";

fn config() -> TraefikRouting {
    TraefikRouting {
        weighted_service: NAME.into(),
    }
}

fn router(client: &kube::Client) -> TraefikRouter {
    TraefikRouter::new(client.clone(), config(), backends())
}

/// A TraefikService with the given weighted services.
fn service(services: Value) -> Value {
    json!({
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "TraefikService",
        "metadata": { "name": NAME, "namespace": NS },
        "spec": { "weighted": { "services": services } },
    })
}

fn weighted(stable: u32, canary: u32) -> Value {
    service(json!([
        { "name": STABLE, "port": 80, "weight": stable },
        { "name": CANARY, "port": 80, "weight": canary },
    ]))
}

// `client_with`, `client_with_interceptor` and `stored` (the TraefikService `NS/NAME`).
routers::fixtures!(TraefikService, NAME);

#[tokio::test]
async fn set_weight_adds_canary_with_stable_port_and_reads_back() {
    let client = client_with(vec![service(json!([{ "name": STABLE, "port": 8080 }]))]).await;

    assert_eq!(
        router(&client).set_weight(33).await.expect("set"),
        reading(33)
    );

    let after = stored(&client).await;
    insta::assert_yaml_snapshot!("set_weight_33", after["spec"]);
    assert_eq!(
        router(&client).current_weight().await.expect("read"),
        reading(33)
    );
}

#[tokio::test]
async fn set_weight_preserves_every_other_field() {
    let original = json!({
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "TraefikService",
        "metadata": {
            "name": NAME,
            "namespace": NS,
            "labels": { "app": "web" },
            "annotations": { "note": "hand written" },
        },
        "spec": {
            "weighted": {
                "sticky": { "cookie": { "name": "lvl", "secure": true } },
                "services": [
                    { "name": "web-legacy", "port": 80, "weight": 2 },
                    // Same name, but a nested TraefikService: not the stable Service.
                    { "name": STABLE, "kind": "TraefikService" },
                    {
                        "name": STABLE,
                        "namespace": NS,
                        "port": "http",
                        "weight": 3,
                        "passHostHeader": true,
                        "responseForwarding": { "flushInterval": "1ms" },
                        "futureField": { "nested": [1, { "deep": "value" }] },
                    },
                ],
                "futureWeightedField": "kept",
            },
            "futureSpecField": { "keep": true },
        },
    });
    let client = client_with(vec![original.clone()]).await;

    assert_eq!(
        router(&client).set_weight(25).await.expect("set"),
        reading(25)
    );

    let after = stored(&client).await;
    let mut expected = original.clone();
    let services = expected["spec"]["weighted"]["services"]
        .as_array_mut()
        .unwrap();
    services[2]["weight"] = json!(75);
    services.insert(3, json!({ "name": CANARY, "port": "http", "weight": 25 }));
    assert_eq!(after["spec"], expected["spec"]);
    assert_eq!(after["metadata"]["labels"], original["metadata"]["labels"]);
    assert_eq!(
        after["metadata"]["annotations"],
        original["metadata"]["annotations"]
    );
}

#[tokio::test]
async fn concurrent_edit_is_not_lost() {
    let patches = Arc::new(AtomicU32::new(0));
    let edit = json!({
        "metadata": { "annotations": { "edited-by": "someone-else" } },
        "spec": { "weighted": {
            "sticky": { "cookie": {} },
            "services": [
                { "name": "web-legacy", "port": 80, "weight": 1 },
                { "name": STABLE, "port": 80 },
            ],
        } },
    });
    let funcs = routers::concurrent_edit::<TraefikService>(&patches, edit);
    let client = client_with_interceptor(
        vec![service(json!([{ "name": STABLE, "port": 80 }]))],
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
    assert_eq!(after["spec"]["weighted"]["sticky"], json!({ "cookie": {} }));
    assert_eq!(
        after["spec"]["weighted"]["services"],
        json!([
            { "name": "web-legacy", "port": 80, "weight": 1 },
            { "name": STABLE, "port": 80, "weight": 90 },
            { "name": CANARY, "port": 80, "weight": 10 },
        ])
    );
}

#[tokio::test]
async fn persistent_conflicts_give_up_with_conflict_error() {
    let patches = Arc::new(AtomicU32::new(0));
    let funcs = routers::conflicting_patches(&patches);
    let client = client_with_interceptor(vec![weighted(100, 0)], funcs).await;
    let before = stored(&client).await;
    let err = router(&client).set_weight(10).await.expect_err("gives up");
    assert!(
        matches!(err, TrafficError::Conflict { attempts, kind: "TraefikService", .. } if attempts == MAX_WRITE_ATTEMPTS),
        "{err:?}"
    );
    assert_eq!(stored(&client).await, before);
}

#[tokio::test]
async fn set_weight_to_carried_weight_makes_no_write() {
    let patches = Arc::new(AtomicU32::new(0));
    let client = client_with_interceptor(vec![weighted(80, 20)], counting_patches(&patches)).await;
    let before = stored(&client).await;
    assert_eq!(
        router(&client).set_weight(20).await.expect("set"),
        reading(20)
    );
    assert_eq!(patches.load(Ordering::SeqCst), 0);
    assert_eq!(stored(&client).await, before);
}

#[tokio::test]
async fn set_weight_reads_back_the_servers_answer() {
    // Stand-in for a mutating webhook that caps the canary at 25%.
    let funcs = routers::adjusted_answers::<TraefikService>(|stored| {
        let services = stored["spec"]["weighted"]["services"]
            .as_array_mut()
            .unwrap();
        services[0]["weight"] = json!(75);
        services[1]["weight"] = json!(25);
    });
    let client = client_with_interceptor(vec![weighted(100, 0)], funcs).await;
    assert_eq!(
        router(&client).set_weight(40).await.expect("set"),
        reading(25)
    );
}

#[tokio::test]
async fn absent_weights_default_to_one() {
    let client = client_with(vec![service(
        json!([{ "name": STABLE }, { "name": CANARY }]),
    )])
    .await;
    assert_eq!(
        router(&client).current_weight().await.expect("read"),
        reading(50)
    );
}

#[tokio::test]
async fn restore_stable_sends_everything_to_stable_and_keeps_canary_entry() {
    let client = client_with(vec![weighted(40, 60)]).await;
    router(&client).restore_stable().await.expect("restore");
    assert_eq!(
        stored(&client).await["spec"]["weighted"]["services"],
        json!([
            { "name": STABLE, "port": 80, "weight": 100 },
            { "name": CANARY, "port": 80, "weight": 0 },
        ])
    );
    assert_eq!(
        router(&client).current_weight().await.expect("read"),
        reading(0)
    );
}

#[tokio::test]
async fn restore_stable_on_missing_or_unrelated_service_is_ok() {
    let client = client_with(vec![]).await;
    router(&client).restore_stable().await.expect("gone");
    let client = client_with(vec![service(json!([{ "name": "other", "port": 80 }]))]).await;
    router(&client)
        .restore_stable()
        .await
        .expect("no stable entry");
}

#[tokio::test]
async fn missing_traefik_service_is_route_not_found() {
    let client = client_with(vec![]).await;
    for err in [
        router(&client).verify().await.expect_err("missing"),
        router(&client).set_weight(10).await.expect_err("missing"),
    ] {
        assert!(
            matches!(&err, TrafficError::RouteNotFound { kind: "TraefikService", name, namespace } if name == NAME && namespace == NS),
            "{err:?}"
        );
        assert!(err.is_configuration());
    }
}

#[tokio::test]
async fn no_stable_entry_is_no_stable_backend() {
    let mirroring = json!({
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "TraefikService",
        "metadata": { "name": NAME, "namespace": NS },
        "spec": { "mirroring": { "name": STABLE, "port": 80 } },
    });
    let other_namespace =
        service(json!([{ "name": STABLE, "namespace": "elsewhere", "port": 80 }]));
    for object in [mirroring, other_namespace] {
        let client = client_with(vec![object]).await;
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
        assert_eq!(stored(&client).await, before);
    }
}

#[tokio::test]
async fn ambiguous_stable_entries_are_malformed() {
    let client = client_with(vec![service(json!([
        { "name": STABLE, "port": 80 },
        { "name": STABLE, "port": 81 },
    ]))])
    .await;
    let err = router(&client).verify().await.expect_err("ambiguous");
    assert!(matches!(err, TrafficError::Malformed { .. }), "{err:?}");
}

#[tokio::test]
async fn crd_not_installed_is_crd_missing() {
    let client = routers::client_without_crds().await;
    assert_crd_missing(&router(&client), "traefikservices.traefik.io").await;
}

#[tokio::test]
async fn header_routes_are_unsupported() {
    let client = client_with(vec![weighted(100, 0)]).await;
    assert_header_routes_unsupported(&router(&client), "traefik", vec![cookie("beta", "1")]).await;
}

#[tokio::test]
async fn router_for_builds_the_traefik_router() {
    let client = client_with(vec![weighted(95, 5)]).await;
    let routing = TrafficRouting {
        traefik: Some(config()),
        ..Default::default()
    };
    let router = router_for(client.clone(), &routing, backends()).expect("a router");
    assert_built(router.as_ref(), "traefik", 5).await;
}
