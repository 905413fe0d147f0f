//! The ingress-nginx router against `kube-fake-client`.
//!
//! The fake treats server-side apply as a JSON merge patch without field
//! ownership, so removals go through the router's JSON-patch repair here (a
//! real API server removes them with the apply itself); nothing here says
//! anything about SSA field ownership.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::routers::{self, CANARY, NS, STABLE, assert_built, cookie, header, reading};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams};
use kube_fake_client::{ClientBuilder, interceptor};
use rollwise::api::{NginxRouting, TrafficRouting};
use rollwise::traffic::nginx::{
    CANARY_BY_COOKIE, CANARY_BY_HEADER, CANARY_BY_HEADER_VALUE, CANARY_WEIGHT, HEADER_ROUTE,
    NginxRouter, canary_ingress_name,
};
use rollwise::traffic::{Backends, HeaderRoute, Match, TrafficError, TrafficRouter, router_for};
use serde_json::{Value, json};

const INGRESS: &str = "web";
const CANARY_INGRESS: &str = "web-web-canary-canary";

fn backends() -> Backends {
    Backends {
        owner: Some(routers::rollout_owner(
            "6b1f3c2e-0000-4000-8000-000000000001",
        )),
        ..routers::backends()
    }
}

fn route(matches: Vec<Match>) -> HeaderRoute {
    HeaderRoute {
        name: "beta".into(),
        matches,
    }
}

/// The user's Ingress: a stable path, an unrelated path on the same host, a
/// host without the stable Service, TLS, a class, and annotations.
fn user_ingress() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": INGRESS,
            "namespace": NS,
            "labels": { "app": "web" },
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Ingress\"}",
                "nginx.ingress.kubernetes.io/proxy-body-size": "8m",
                "cert-manager.io/cluster-issuer": "letsencrypt",
            },
        },
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{ "hosts": ["shop.example.com"], "secretName": "shop-tls" }],
            "rules": [
                {
                    "host": "shop.example.com",
                    "http": { "paths": [
                        { "path": "/", "pathType": "Prefix",
                          "backend": { "service": { "name": STABLE, "port": { "number": 8080 } } } },
                        { "path": "/admin", "pathType": "Prefix",
                          "backend": { "service": { "name": "admin", "port": { "number": 80 } } } },
                    ] },
                },
                {
                    "host": "static.example.com",
                    "http": { "paths": [
                        { "path": "/", "pathType": "Prefix",
                          "backend": { "service": { "name": "cdn", "port": { "name": "http" } } } },
                    ] },
                },
            ],
        },
    })
}

async fn client_with(objects: Vec<Value>) -> kube::Client {
    client_with_interceptor(objects, interceptor::Funcs::new()).await
}

async fn client_with_interceptor(objects: Vec<Value>, funcs: interceptor::Funcs) -> kube::Client {
    routers::client_from(ClientBuilder::new(), objects, funcs).await
}

fn router(client: &kube::Client) -> NginxRouter {
    NginxRouter::new(
        client.clone(),
        NginxRouting {
            ingress: INGRESS.into(),
        },
        backends(),
    )
}

/// A stored Ingress as raw JSON.
async fn stored(client: &kube::Client, name: &str) -> Option<Value> {
    routers::stored_opt::<Ingress>(client, NS, name).await
}

async fn user(client: &kube::Client) -> Value {
    stored(client, INGRESS).await.expect("user Ingress")
}

async fn canary(client: &kube::Client) -> Value {
    stored(client, CANARY_INGRESS)
        .await
        .expect("canary Ingress")
}

/// What the snapshots show of the canary Ingress.
fn shape(canary: &Value) -> Value {
    json!({
        "labels": canary["metadata"]["labels"],
        "annotations": canary["metadata"]["annotations"],
        "ownerReferences": canary["metadata"]["ownerReferences"],
        "spec": canary["spec"],
    })
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["annotations"][key].as_str()
}

fn counting_writes(counter: &Arc<AtomicU32>) -> interceptor::Funcs {
    let patches = counter.clone();
    let deletes = counter.clone();
    interceptor::Funcs::new()
        .patch(move |_| {
            patches.fetch_add(1, Ordering::SeqCst);
            Ok(None)
        })
        .delete(move |_| {
            deletes.fetch_add(1, Ordering::SeqCst);
            Ok(None)
        })
}

#[test]
fn canary_ingress_is_named_after_ingress_and_canary_service() {
    assert_eq!(canary_ingress_name(INGRESS, CANARY), CANARY_INGRESS);
    let long = canary_ingress_name(&"i".repeat(253), CANARY);
    assert!(long.len() <= 253 && long.ends_with("-canary"), "{long}");
}

#[tokio::test]
async fn set_weight_creates_the_canary_ingress_and_reads_back() {
    let client = client_with(vec![user_ingress()]).await;
    let before = user(&client).await;
    let router = router(&client);

    assert_eq!(
        router.set_weight(20).await.expect("set_weight"),
        reading(20)
    );

    let canary = canary(&client).await;
    insta::assert_yaml_snapshot!("canary_ingress_weight_20", shape(&canary));
    assert_eq!(router.current_weight().await.expect("read"), reading(20));
    assert_eq!(
        user(&client).await,
        before,
        "the user's Ingress is never written"
    );
    router.verify().await.expect("verify");
}

#[tokio::test]
async fn user_ingress_changes_show_up_in_the_copy_at_the_next_set_weight() {
    let client = client_with(vec![user_ingress()]).await;
    let router = router(&client);
    router.set_weight(20).await.expect("set_weight");

    // The user adds a host, drops an annotation and the TLS section.
    let mut edited = user(&client).await;
    edited["spec"]["rules"].as_array_mut().unwrap().push(json!({
        "host": "beta.example.com",
        "http": { "paths": [
            { "path": "/", "pathType": "Prefix",
              "backend": { "service": { "name": STABLE, "port": { "name": "http" } } } },
        ] },
    }));
    edited["spec"].as_object_mut().unwrap().remove("tls");
    edited["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("cert-manager.io/cluster-issuer");
    let api: Api<Ingress> = Api::namespaced(client.clone(), NS);
    api.replace(
        INGRESS,
        &Default::default(),
        &serde_json::from_value(edited.clone()).expect("ingress"),
    )
    .await
    .expect("user edit");
    let edited = user(&client).await;

    assert_eq!(
        router.set_weight(20).await.expect("same weight"),
        reading(20)
    );

    let canary = canary(&client).await;
    insta::assert_yaml_snapshot!("canary_ingress_after_user_edit", shape(&canary));
    assert_eq!(
        canary["spec"]["rules"][1]["host"], "beta.example.com",
        "the new host is in the copy"
    );
    assert_eq!(
        canary["spec"]["rules"][1]["http"]["paths"][0]["backend"]["service"]["name"],
        CANARY
    );
    assert!(canary["spec"].get("tls").is_none());
    assert_eq!(annotation(&canary, "cert-manager.io/cluster-issuer"), None);
    assert_eq!(
        user(&client).await,
        edited,
        "the user's Ingress is never written"
    );
}

#[tokio::test]
async fn header_route_sets_and_removes_by_header_annotations_keeping_the_weight() {
    let client = client_with(vec![user_ingress()]).await;
    let before = user(&client).await;
    let router = router(&client);
    router.set_weight(10).await.expect("set_weight");

    router
        .set_header_routes(&[route(vec![header("x-beta", "true")])])
        .await
        .expect("header route");

    let canary_ing = canary(&client).await;
    assert_eq!(annotation(&canary_ing, CANARY_BY_HEADER), Some("x-beta"));
    assert_eq!(
        annotation(&canary_ing, CANARY_BY_HEADER_VALUE),
        Some("true")
    );
    assert_eq!(annotation(&canary_ing, HEADER_ROUTE), Some("beta"));
    assert_eq!(
        annotation(&canary_ing, CANARY_WEIGHT),
        Some("10"),
        "weight kept"
    );
    insta::assert_yaml_snapshot!(
        "canary_ingress_header_route_annotations",
        canary_ing["metadata"]["annotations"]
    );

    // A weight change keeps the header route.
    assert_eq!(
        router.set_weight(30).await.expect("set_weight"),
        reading(30)
    );
    let canary_ing = canary(&client).await;
    assert_eq!(annotation(&canary_ing, CANARY_BY_HEADER), Some("x-beta"));
    assert_eq!(
        annotation(&canary_ing, CANARY_BY_HEADER_VALUE),
        Some("true")
    );

    // Removed: the by-header annotations are gone, the weight stays.
    router.set_header_routes(&[]).await.expect("remove");
    let canary_ing = canary(&client).await;
    for key in [CANARY_BY_HEADER, CANARY_BY_HEADER_VALUE, HEADER_ROUTE] {
        assert_eq!(annotation(&canary_ing, key), None, "{key}");
    }
    assert_eq!(annotation(&canary_ing, CANARY_WEIGHT), Some("30"));
    assert_eq!(router.current_weight().await.expect("read"), reading(30));
    assert_eq!(user(&client).await, before);
}

#[tokio::test]
async fn header_route_alone_creates_the_canary_ingress_at_weight_0() {
    let client = client_with(vec![user_ingress()]).await;
    let router = router(&client);

    router
        .set_header_routes(&[route(vec![header("x-beta", "true")])])
        .await
        .expect("header route");
    let canary_ing = canary(&client).await;
    assert_eq!(annotation(&canary_ing, CANARY_WEIGHT), Some("0"));
    assert_eq!(annotation(&canary_ing, CANARY_BY_HEADER), Some("x-beta"));

    // Weight 0 with a header route active keeps the canary Ingress...
    assert_eq!(router.set_weight(0).await.expect("set_weight"), reading(0));
    assert!(stored(&client, CANARY_INGRESS).await.is_some());
    // ...removing the route as well leaves nothing to carry.
    router.set_header_routes(&[]).await.expect("remove");
    assert_eq!(stored(&client, CANARY_INGRESS).await, None);
}

#[tokio::test]
async fn cookie_always_becomes_canary_by_cookie() {
    let client = client_with(vec![user_ingress()]).await;
    let router = router(&client);
    router.set_weight(5).await.expect("set_weight");

    router
        .set_header_routes(&[route(vec![cookie("beta-tester", "always")])])
        .await
        .expect("cookie route");

    let canary_ing = canary(&client).await;
    assert_eq!(
        annotation(&canary_ing, CANARY_BY_COOKIE),
        Some("beta-tester")
    );
    assert_eq!(annotation(&canary_ing, CANARY_BY_HEADER), None);
    assert_eq!(annotation(&canary_ing, CANARY_WEIGHT), Some("5"));

    // Switching to a header route replaces the cookie.
    router
        .set_header_routes(&[route(vec![header("x-beta", "true")])])
        .await
        .expect("header route");
    let canary_ing = canary(&client).await;
    assert_eq!(annotation(&canary_ing, CANARY_BY_COOKIE), None);
    assert_eq!(annotation(&canary_ing, CANARY_BY_HEADER), Some("x-beta"));
}

#[tokio::test]
async fn what_ingress_nginx_cannot_express_is_unsupported_and_writes_nothing() {
    let writes = Arc::new(AtomicU32::new(0));
    let client = client_with_interceptor(vec![user_ingress()], counting_writes(&writes)).await;
    let router = router(&client);

    let err = router
        .set_header_routes(&[route(vec![cookie("beta", "1")])])
        .await
        .expect_err("cookie value other than always");
    assert!(
        matches!(&err, TrafficError::Unsupported { router: "nginx", what } if what.contains("always")),
        "{err:?}"
    );
    assert!(err.is_configuration());

    for refused in [
        // Header AND cookie: ingress-nginx would route on either.
        vec![route(vec![
            header("x-beta", "true"),
            cookie("beta", "always"),
        ])],
        vec![route(vec![header("x-a", "1"), header("x-b", "1")])],
        vec![
            route(vec![header("x-a", "1")]),
            HeaderRoute {
                name: "gamma".into(),
                matches: vec![header("x-b", "1")],
            },
        ],
        vec![route(vec![header("x-a", "")])],
    ] {
        let err = router
            .set_header_routes(&refused)
            .await
            .expect_err("refused");
        assert!(
            matches!(
                err,
                TrafficError::Unsupported {
                    router: "nginx",
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert_eq!(writes.load(Ordering::SeqCst), 0);
    assert_eq!(stored(&client, CANARY_INGRESS).await, None);
}

#[tokio::test]
async fn set_weight_0_deletes_the_canary_ingress() {
    let client = client_with(vec![user_ingress()]).await;
    let router = router(&client);
    router.set_weight(50).await.expect("set_weight");
    assert!(stored(&client, CANARY_INGRESS).await.is_some());

    assert_eq!(router.set_weight(0).await.expect("set_weight"), reading(0));

    assert_eq!(stored(&client, CANARY_INGRESS).await, None);
    assert_eq!(router.current_weight().await.expect("read"), reading(0));
    // And again: nothing to delete, no error.
    assert_eq!(router.set_weight(0).await.expect("set_weight"), reading(0));
}

#[tokio::test]
async fn unchanged_canary_ingress_is_not_written() {
    let writes = Arc::new(AtomicU32::new(0));
    let client = client_with_interceptor(vec![user_ingress()], counting_writes(&writes)).await;
    let router = router(&client);

    router.set_weight(20).await.expect("set_weight");
    let first = canary(&client).await;
    router.set_weight(20).await.expect("same weight");
    router
        .set_header_routes(&[])
        .await
        .expect("no route, as before");

    assert_eq!(writes.load(Ordering::SeqCst), 1);
    assert_eq!(canary(&client).await, first);
}

#[tokio::test]
async fn restore_stable_deletes_the_canary_ingress_and_nothing_there_is_ok() {
    let client = client_with(vec![user_ingress()]).await;
    let router = router(&client);

    router.restore_stable().await.expect("nothing there");

    router.set_weight(40).await.expect("set_weight");
    router
        .set_header_routes(&[route(vec![header("x-beta", "true")])])
        .await
        .expect("header route");
    router.restore_stable().await.expect("restore");
    assert_eq!(stored(&client, CANARY_INGRESS).await, None);
    assert_eq!(router.current_weight().await.expect("read"), reading(0));

    // Without the user's Ingress (or anything else) it is fine too.
    let empty = client_with(vec![]).await;
    NginxRouter::new(
        empty,
        NginxRouting {
            ingress: INGRESS.into(),
        },
        backends(),
    )
    .restore_stable()
    .await
    .expect("nothing anywhere");
}

#[tokio::test]
async fn missing_user_ingress_is_route_not_found() {
    let client = client_with(vec![]).await;
    let err = router(&client).verify().await.expect_err("missing");
    assert!(
        matches!(&err, TrafficError::RouteNotFound { kind: "Ingress", name, namespace } if name == INGRESS && namespace == NS),
        "{err:?}"
    );
    assert!(err.is_configuration());
    let err = router(&client).set_weight(10).await.expect_err("missing");
    assert!(matches!(err, TrafficError::RouteNotFound { .. }), "{err:?}");
    assert_eq!(stored(&client, CANARY_INGRESS).await, None);
}

#[tokio::test]
async fn user_ingress_without_stable_backend_is_no_stable_backend() {
    let mut ingress = user_ingress();
    ingress["spec"]["rules"] = json!([
        { "host": "shop.example.com", "http": { "paths": [
            { "path": "/", "pathType": "Prefix",
              "backend": { "service": { "name": "other", "port": { "number": 80 } } } },
            { "path": "/files", "pathType": "Prefix",
              "backend": { "resource": { "apiGroup": "k8s.example.com", "kind": "StorageBucket", "name": STABLE } } },
        ] } },
        { "host": "empty.example.com" },
    ]);
    ingress["spec"]["defaultBackend"] =
        json!({ "service": { "name": "other", "port": { "number": 80 } } });
    let client = client_with(vec![ingress]).await;
    let before = user(&client).await;

    let err = router(&client).verify().await.expect_err("no stable");
    assert!(
        matches!(&err, TrafficError::NoStableBackend { service, name, .. } if service == STABLE && name == INGRESS),
        "{err:?}"
    );
    assert!(err.is_configuration());
    let err = router(&client).set_weight(10).await.expect_err("no stable");
    assert!(
        matches!(err, TrafficError::NoStableBackend { .. }),
        "{err:?}"
    );
    assert_eq!(stored(&client, CANARY_INGRESS).await, None);
    assert_eq!(user(&client).await, before);
}

#[tokio::test]
async fn stable_default_backend_is_switched_too() {
    let ingress = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": { "name": INGRESS, "namespace": NS },
        "spec": {
            "ingressClassName": "nginx",
            "defaultBackend": { "service": { "name": STABLE, "port": { "number": 8080 } } },
        },
    });
    let client = client_with(vec![ingress]).await;

    router(&client).set_weight(25).await.expect("set_weight");

    assert_eq!(
        canary(&client).await["spec"],
        json!({
            "ingressClassName": "nginx",
            "defaultBackend": { "service": { "name": CANARY, "port": { "number": 8080 } } },
        })
    );
}

#[tokio::test]
async fn an_ingress_rollwise_did_not_create_is_never_touched() {
    let foreign = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": CANARY_INGRESS,
            "namespace": NS,
            "annotations": { "nginx.ingress.kubernetes.io/canary": "true", "nginx.ingress.kubernetes.io/canary-weight": "7" },
        },
        "spec": { "rules": [{ "host": "shop.example.com" }] },
    });
    let client = client_with(vec![user_ingress(), foreign]).await;
    let before = canary(&client).await;
    let router = router(&client);

    let err = router.verify().await.expect_err("foreign");
    assert!(
        matches!(&err, TrafficError::Malformed { name, .. } if name == CANARY_INGRESS),
        "{err:?}"
    );
    let err = router.set_weight(30).await.expect_err("foreign");
    assert!(matches!(err, TrafficError::Malformed { .. }), "{err:?}");
    router.restore_stable().await.expect("not ours: left alone");
    assert_eq!(canary(&client).await, before);
}

#[tokio::test]
async fn stale_annotations_someone_else_added_are_removed() {
    let client = client_with(vec![user_ingress()]).await;
    let router = router(&client);
    router.set_weight(20).await.expect("set_weight");
    // Someone adds a by-cookie route and another annotation by hand to our
    // canary Ingress: it is derived from the user's Ingress, so both go.
    let api: Api<Ingress> = Api::namespaced(client.clone(), NS);
    api.patch(
        CANARY_INGRESS,
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "annotations": { CANARY_BY_COOKIE: "sneaky", "example.com/note": "by hand" } } })),
    )
    .await
    .expect("hand edit");

    assert_eq!(
        router.set_weight(20).await.expect("set_weight"),
        reading(20)
    );

    let after = canary(&client).await;
    assert_eq!(annotation(&after, CANARY_BY_COOKIE), None);
    assert_eq!(annotation(&after, "example.com/note"), None);
    assert_eq!(annotation(&after, CANARY_WEIGHT), Some("20"));
}

#[tokio::test]
async fn router_for_builds_the_nginx_router() {
    let client = client_with(vec![user_ingress()]).await;
    let routing = TrafficRouting {
        nginx: Some(NginxRouting {
            ingress: INGRESS.into(),
        }),
        ..Default::default()
    };
    let router = router_for(client.clone(), &routing, backends()).expect("a router");
    assert_built(router.as_ref(), "nginx", 0).await;
    assert_eq!(
        annotation(&canary(&client).await, CANARY_WEIGHT),
        Some("60")
    );
}
