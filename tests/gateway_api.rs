//! The Gateway API router against `kube-fake-client`.
//!
//! The fake applies merge patches with `json_patch::merge` and enforces the
//! `metadata.resourceVersion` precondition, so these tests exercise the real
//! merge-patch path. It has no field ownership and treats SSA as a merge patch,
//! so nothing here says anything about server-side apply.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::routers::{
    self, CANARY, NS, STABLE, assert_built, backends, counting_patches, reading,
};
use gateway_api::apis::standard::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteSpec,
};
use kube_fake_client::{ClientBuilder, interceptor};
use rollwise::api::{GatewayApiRouting, TrafficRouting};
use rollwise::traffic::gateway_api::{GatewayApiRouter, MAX_RULES, MAX_WRITE_ATTEMPTS};
use rollwise::traffic::{HeaderRoute, Match, TrafficError, TrafficRouter, router_for};
use serde_json::{Value, json};

const ROUTE: &str = "web";

/// A raw HTTPRoute with the given rules.
fn route(rules: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": { "name": ROUTE, "namespace": NS },
        "spec": {
            "parentRefs": [{ "name": "public", "namespace": "infra" }],
            "rules": rules,
        },
    })
}

/// A route whose single rule carries the given stable/canary weights.
fn weighted_route(stable: u32, canary: u32) -> Value {
    route(json!([{
        "backendRefs": [
            { "name": STABLE, "port": 8080, "weight": stable },
            { "name": CANARY, "port": 8080, "weight": canary },
        ],
    }]))
}

// `client_with`, `client_with_interceptor` and `stored` (the HttpRoute `NS/ROUTE`).
routers::fixtures!(HttpRoute, ROUTE);

fn router(client: &kube::Client) -> GatewayApiRouter {
    GatewayApiRouter::new(client.clone(), ROUTE.into(), backends())
}

fn resource_version(route: &Value) -> String {
    route["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .to_owned()
}

/// `(name, port, weight)` of each backendRef of rule `rule`.
fn refs(route: &Value, rule: usize) -> Vec<(String, Option<u64>, Option<u64>)> {
    route["spec"]["rules"][rule]["backendRefs"]
        .as_array()
        .expect("backendRefs")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().expect("name").to_owned(),
                r["port"].as_u64(),
                r["weight"].as_u64(),
            )
        })
        .collect()
}

// 1. One rule: the canary ref is added with the stable's port.
#[tokio::test]
async fn set_weight_adds_canary_ref_with_stable_port_and_reads_back() {
    let mut typed = HttpRoute::new(
        ROUTE,
        HttpRouteSpec {
            rules: Some(vec![HttpRouteRules {
                backend_refs: Some(vec![HttpRouteRulesBackendRefs {
                    name: STABLE.into(),
                    port: Some(8080),
                    ..Default::default()
                }]),
                ..Default::default()
            }]),
            ..Default::default()
        },
    );
    typed.metadata.namespace = Some(NS.into());
    let client = ClientBuilder::new()
        .with_resource::<HttpRoute>()
        .with_object(typed)
        .build()
        .await
        .expect("fake client");

    let got = router(&client).set_weight(33).await.expect("set_weight");

    assert_eq!(got, reading(33));
    let after = stored(&client).await;
    assert_eq!(
        refs(&after, 0),
        vec![
            (STABLE.into(), Some(8080), Some(67)),
            (CANARY.into(), Some(8080), Some(33)),
        ]
    );
    insta::assert_yaml_snapshot!("set_weight_33_one_rule", after["spec"]["rules"]);
    assert_eq!(
        router(&client).current_weight().await.expect("read"),
        reading(33)
    );
}

// 2. Everything that is not a stable/canary weight survives, unknown fields included.
#[tokio::test]
async fn set_weight_preserves_every_other_field() {
    let original = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": ROUTE,
            "namespace": NS,
            "labels": { "app": "web", "team": "checkout" },
            "annotations": { "example.com/owner": "checkout", "note": "hand written" },
        },
        "spec": {
            "hostnames": ["shop.example.com", "www.shop.example.com"],
            "parentRefs": [
                { "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "namespace": "infra", "sectionName": "https" },
            ],
            "futureSpecField": { "keep": true },
            "rules": [
                {
                    "name": "web-main",
                    "matches": [{
                        "path": { "type": "PathPrefix", "value": "/" },
                        "headers": [{ "type": "Exact", "name": "x-env", "value": "prod" }],
                    }],
                    "filters": [{
                        "type": "RequestHeaderModifier",
                        "requestHeaderModifier": { "set": [{ "name": "x-routed-by", "value": "gateway" }] },
                    }],
                    "backendRefs": [
                        {
                            "group": "",
                            "kind": "Service",
                            "name": STABLE,
                            "port": 8080,
                            "weight": 100,
                            "filters": [{
                                "type": "ResponseHeaderModifier",
                                "responseHeaderModifier": { "add": [{ "name": "x-backend", "value": "stable" }] },
                            }],
                        },
                        { "name": "web-shadow", "port": 9090, "weight": 5 },
                    ],
                    "timeouts": { "request": "10s", "backendRequest": "2s" },
                    "sessionPersistence": { "sessionName": "web", "type": "Cookie" },
                    "futureField": { "nested": [1, 2, { "deep": "value" }] },
                },
                {
                    "matches": [{ "path": { "type": "PathPrefix", "value": "/admin" } }],
                    "backendRefs": [{ "name": "admin", "port": 80 }],
                    "futureField": "also kept",
                },
            ],
        },
        "status": { "parents": [{
            "controllerName": "example.com/gateway",
            "parentRef": { "name": "public", "namespace": "infra" },
            "conditions": [],
        }] },
    });
    let client = client_with(vec![original.clone()]).await;

    let got = router(&client).set_weight(20).await.expect("set_weight");
    assert_eq!(got, reading(20));

    let after = stored(&client).await;
    // What we expect: the original with only rule 0's stable weight changed
    // and a canary ref inserted after the stable ref.
    let mut expected = original.clone();
    let refs0 = expected["spec"]["rules"][0]["backendRefs"]
        .as_array_mut()
        .unwrap();
    refs0[0]["weight"] = json!(80);
    refs0.insert(1, json!({ "name": CANARY, "port": 8080, "weight": 20 }));
    assert_eq!(after["spec"], expected["spec"]);
    assert_eq!(after["status"], original["status"]);
    assert_eq!(after["metadata"]["labels"], original["metadata"]["labels"]);
    assert_eq!(
        after["metadata"]["annotations"],
        original["metadata"]["annotations"]
    );
    // Spot checks, so a failure reads well.
    assert_eq!(
        after["spec"]["rules"][0]["futureField"]["nested"][2]["deep"],
        "value"
    );
    assert_eq!(after["spec"]["rules"][1]["futureField"], "also kept");
    assert_eq!(refs(&after, 1), vec![("admin".into(), Some(80), None)]);
}

// 3a. A concurrent edit of the rules between our read and our write is kept.
#[tokio::test]
async fn concurrent_edit_is_not_lost() {
    let patches = Arc::new(AtomicU32::new(0));
    // Someone else edits the route right before our (now stale) patch
    // lands: a new rule and a new hostname.
    let edit = json!({
        "metadata": { "annotations": { "edited-by": "someone-else" } },
        "spec": {
            "hostnames": ["beta.example.com"],
            "rules": [
                { "backendRefs": [{ "name": STABLE, "port": 8080 }] },
                { "matches": [{ "path": { "type": "PathPrefix", "value": "/admin" } }],
                  "backendRefs": [{ "name": "admin", "port": 80 }] },
            ],
        },
    });
    let funcs = routers::concurrent_edit::<HttpRoute>(&patches, edit);
    let client = client_with_interceptor(
        vec![route(
            json!([{ "backendRefs": [{ "name": STABLE, "port": 8080 }] }]),
        )],
        funcs,
    )
    .await;

    let got = router(&client).set_weight(10).await.expect("set_weight");

    assert_eq!(got, reading(10));
    assert_eq!(patches.load(Ordering::SeqCst), 2, "one conflict, one retry");
    let after = stored(&client).await;
    assert_eq!(after["spec"]["hostnames"], json!(["beta.example.com"]));
    assert_eq!(
        after["metadata"]["annotations"]["edited-by"],
        "someone-else"
    );
    assert_eq!(
        refs(&after, 0),
        vec![
            (STABLE.into(), Some(8080), Some(90)),
            (CANARY.into(), Some(8080), Some(10)),
        ]
    );
    assert_eq!(refs(&after, 1), vec![("admin".into(), Some(80), None)]);
    assert_eq!(after["spec"]["rules"].as_array().unwrap().len(), 2);
}

// 3b. Conflicts that never stop: bounded attempts, then Conflict, route untouched.
#[tokio::test]
async fn persistent_conflicts_give_up_with_conflict_error() {
    let patches = Arc::new(AtomicU32::new(0));
    let funcs = routers::conflicting_patches(&patches);
    let client = client_with_interceptor(vec![weighted_route(100, 0)], funcs).await;
    let before = stored(&client).await;

    let started = Instant::now();
    let err = router(&client)
        .set_weight(50)
        .await
        .expect_err("must give up");

    assert!(
        matches!(err, TrafficError::Conflict { attempts, ref name, .. } if attempts == MAX_WRITE_ATTEMPTS && name == ROUTE),
        "{err:?}"
    );
    assert_eq!(err.metric_label(), "route_conflict");
    assert!(!err.is_configuration());
    assert_eq!(patches.load(Ordering::SeqCst), MAX_WRITE_ATTEMPTS);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "backoff must stay short"
    );
    assert_eq!(stored(&client).await, before);
}

// 4. restore_stable: 100/0 keeping the canary ref; a missing route is fine.
#[tokio::test]
async fn restore_stable_sends_everything_to_stable_and_keeps_canary_ref() {
    let client = client_with(vec![weighted_route(67, 33)]).await;
    let router = router(&client);

    router.restore_stable().await.expect("restore");

    let after = stored(&client).await;
    assert_eq!(
        refs(&after, 0),
        vec![
            (STABLE.into(), Some(8080), Some(100)),
            (CANARY.into(), Some(8080), Some(0)),
        ]
    );
    assert_eq!(router.current_weight().await.expect("read"), reading(0));
}

#[tokio::test]
async fn restore_stable_on_missing_route_is_ok() {
    let client = client_with(vec![]).await;
    router(&client)
        .restore_stable()
        .await
        .expect("missing route is not an error");
}

#[tokio::test]
async fn restore_stable_when_route_no_longer_references_stable_is_ok() {
    let client = client_with(vec![route(
        json!([{ "backendRefs": [{ "name": "other", "port": 80 }] }]),
    )])
    .await;
    let before = stored(&client).await;
    router(&client)
        .restore_stable()
        .await
        .expect("nothing to restore");
    assert_eq!(stored(&client).await, before);
}

#[tokio::test]
async fn restore_stable_without_canary_ref_writes_nothing() {
    let client = client_with(vec![route(
        json!([{ "backendRefs": [{ "name": STABLE, "port": 8080 }] }]),
    )])
    .await;
    let before = stored(&client).await;
    router(&client).restore_stable().await.expect("restore");
    assert_eq!(
        stored(&client).await,
        before,
        "no canary ref was added, nothing rewritten"
    );
}

// 5. verify
#[tokio::test]
async fn verify_reports_missing_route() {
    let client = client_with(vec![]).await;
    let err = router(&client).verify().await.expect_err("missing");
    assert!(
        matches!(&err, TrafficError::RouteNotFound { name, namespace, .. } if name == ROUTE && namespace == NS),
        "{err:?}"
    );
    assert!(err.is_configuration());
    // set_weight on a missing route says the same.
    let err = router(&client).set_weight(5).await.expect_err("missing");
    assert!(matches!(err, TrafficError::RouteNotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn verify_reports_route_without_stable_backend() {
    let client = client_with(vec![route(json!([
        { "backendRefs": [{ "name": "other", "port": 80 }] },
        // Same name but not a core Service: does not count.
        { "backendRefs": [{ "group": "multicluster.x-k8s.io", "kind": "ServiceImport", "name": STABLE, "port": 80 }] },
        // Same name in another namespace: a different Service.
        { "backendRefs": [{ "name": STABLE, "namespace": "elsewhere", "port": 80 }] },
        { "matches": [{ "path": { "type": "PathPrefix", "value": "/x" } }] },
    ]))])
    .await;
    let before = stored(&client).await;
    let err = router(&client).verify().await.expect_err("no stable");
    assert!(
        matches!(&err, TrafficError::NoStableBackend { service, name, .. } if service == STABLE && name == ROUTE),
        "{err:?}"
    );
    assert!(err.is_configuration());
    let err = router(&client).set_weight(10).await.expect_err("no stable");
    assert!(
        matches!(err, TrafficError::NoStableBackend { .. }),
        "{err:?}"
    );
    assert_eq!(stored(&client).await, before);
}

#[tokio::test]
async fn verify_accepts_a_drivable_route_and_reads_its_weight() {
    let client = client_with(vec![weighted_route(70, 30)]).await;
    let router = router(&client);
    let reading = router.verify().await.expect("drivable");
    assert_eq!(reading.canary, Some(30));
    assert_eq!(reading, router.current_weight().await.unwrap());
}

#[tokio::test]
async fn verify_reports_crd_missing_when_httproutes_are_not_served() {
    // No `.with_resource::<HttpRoute>()`: the fake answers like an API server
    // without the CRD (404 "the server could not find the requested resource").
    let client = routers::client_without_crds().await;
    let err = router(&client).verify().await.expect_err("no CRD");
    assert!(
        matches!(&err, TrafficError::CrdMissing { crd } if crd == "httproutes.gateway.networking.k8s.io"),
        "{err:?}"
    );
    assert!(err.is_configuration());
    // Restore does not pretend success: a route of another served version
    // could still be sending traffic to the canary.
    let err = router(&client).restore_stable().await.expect_err("no CRD");
    assert!(matches!(err, TrafficError::CrdMissing { .. }), "{err:?}");
}

#[tokio::test]
async fn ambiguous_rule_is_malformed() {
    let client = client_with(vec![route(json!([{ "backendRefs": [
        { "name": STABLE, "port": 8080 },
        { "name": STABLE, "port": 9090 },
    ] }]))])
    .await;
    let err = router(&client).verify().await.expect_err("two stable refs");
    assert!(matches!(err, TrafficError::Malformed { .. }), "{err:?}");
}

// 6. Reading weights.
#[tokio::test]
async fn current_weight_defaults_absent_weights_to_one() {
    let client = client_with(vec![route(json!([{ "backendRefs": [
        { "name": STABLE, "port": 8080 },
        { "name": CANARY, "port": 8080 },
    ] }]))])
    .await;
    assert_eq!(
        router(&client).current_weight().await.expect("read"),
        reading(50)
    );
}

#[tokio::test]
async fn current_weight_reports_highest_canary_share_when_rules_disagree() {
    let client = client_with(vec![route(json!([
        { "backendRefs": [{ "name": STABLE, "weight": 90 }, { "name": CANARY, "weight": 10 }] },
        { "backendRefs": [{ "name": STABLE, "weight": 70 }, { "name": CANARY, "weight": 30 }] },
        { "backendRefs": [{ "name": STABLE, "weight": 1 }] },
        // Canary-only rule without the stable Service: not ours, ignored.
        { "backendRefs": [{ "name": CANARY, "weight": 1 }] },
    ]))])
    .await;
    assert_eq!(
        router(&client).current_weight().await.expect("read"),
        reading(30)
    );
}

#[tokio::test]
async fn current_weight_without_canary_ref_is_zero_and_shares_round() {
    let client = client_with(vec![route(
        json!([{ "backendRefs": [{ "name": STABLE, "port": 8080 }] }]),
    )])
    .await;
    assert_eq!(
        router(&client).current_weight().await.expect("read"),
        reading(0)
    );

    // 1 of 3 is 33.3% -> 33; 2 of 3 would be 67.
    let client = client_with(vec![route(json!([{ "backendRefs": [
        { "name": STABLE, "weight": 2 }, { "name": CANARY, "weight": 1 },
    ] }]))])
    .await;
    assert_eq!(
        router(&client).current_weight().await.expect("read"),
        reading(33)
    );
}

// 7. No write when the route already carries the weights.
#[tokio::test]
async fn set_weight_to_carried_weight_makes_no_write() {
    let patches = Arc::new(AtomicU32::new(0));
    let client =
        client_with_interceptor(vec![weighted_route(67, 33)], counting_patches(&patches)).await;
    let before = stored(&client).await;

    let got = router(&client).set_weight(33).await.expect("set_weight");

    assert_eq!(got, reading(33));
    assert_eq!(patches.load(Ordering::SeqCst), 0, "no PATCH sent");
    let after = stored(&client).await;
    assert_eq!(resource_version(&after), resource_version(&before));
    assert_eq!(after, before);

    // Whereas a different weight is one write, and doing it again is none.
    router(&client).set_weight(50).await.expect("set_weight");
    router(&client).set_weight(50).await.expect("set_weight");
    assert_eq!(patches.load(Ordering::SeqCst), 1);
    assert_ne!(
        resource_version(&stored(&client).await),
        resource_version(&before)
    );
}

// set_weight returns what the API server returned, not what was asked.
#[tokio::test]
async fn set_weight_reads_back_the_servers_answer() {
    // Stand-in for a mutating webhook that caps the canary at 25%.
    let funcs = routers::adjusted_answers::<HttpRoute>(|stored| {
        let refs = stored["spec"]["rules"][0]["backendRefs"]
            .as_array_mut()
            .expect("refs");
        refs[0]["weight"] = json!(75);
        refs[1]["weight"] = json!(25);
    });
    let client = client_with_interceptor(vec![weighted_route(100, 0)], funcs).await;

    let got = router(&client).set_weight(40).await.expect("set_weight");

    assert_eq!(got, reading(25));
}

#[tokio::test]
async fn weights_above_100_are_clamped() {
    let client = client_with(vec![weighted_route(50, 50)]).await;
    assert_eq!(
        router(&client).set_weight(200).await.expect("set_weight"),
        reading(100)
    );
    let after = stored(&client).await;
    assert_eq!(
        refs(&after, 0),
        vec![
            (STABLE.into(), Some(8080), Some(0)),
            (CANARY.into(), Some(8080), Some(100)),
        ]
    );
}

// The public seam: router_for picks this router from the spec.
#[tokio::test]
async fn router_for_builds_the_gateway_api_router() {
    let client = client_with(vec![weighted_route(95, 5)]).await;
    let routing = TrafficRouting {
        gateway_api: Some(GatewayApiRouting {
            http_route: ROUTE.into(),
        }),
        ..Default::default()
    };
    let router = router_for(client.clone(), &routing, backends()).expect("a router");
    assert_built(router.as_ref(), "gatewayAPI", 5).await;
    assert_eq!(
        refs(&stored(&client).await, 0),
        vec![
            (STABLE.into(), Some(8080), Some(40)),
            (CANARY.into(), Some(8080), Some(60)),
        ]
    );
}

// 8. Header routes (A/B).

fn header_route(name: &str, headers: &[(&str, &str)]) -> HeaderRoute {
    HeaderRoute {
        name: name.into(),
        matches: headers
            .iter()
            .map(|(n, v)| Match::Header {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect(),
    }
}

/// Names of the rules of the stored route (`-` for an unnamed rule).
fn rule_names(route: &Value) -> Vec<String> {
    route["spec"]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("-").to_owned())
        .collect()
}

/// A user route with a weighted main rule (two matches, a filter, a
/// timeout) and an unrelated admin rule.
fn ab_route() -> Value {
    route(json!([
        {
            "name": "main",
            "matches": [
                { "path": { "type": "PathPrefix", "value": "/" } },
                {
                    "path": { "type": "PathPrefix", "value": "/api" },
                    "headers": [{ "type": "Exact", "name": "x-env", "value": "prod" }],
                },
            ],
            "filters": [{
                "type": "RequestHeaderModifier",
                "requestHeaderModifier": { "set": [{ "name": "x-routed-by", "value": "gateway" }] },
            }],
            "timeouts": { "request": "10s" },
            "backendRefs": [
                { "name": STABLE, "port": 8080, "weight": 80 },
                { "name": CANARY, "port": 8080, "weight": 20 },
            ],
        },
        {
            "matches": [{ "path": { "type": "PathPrefix", "value": "/admin" } }],
            "backendRefs": [{ "name": "admin", "port": 80 }],
        },
    ]))
}

#[tokio::test]
async fn header_route_rule_is_added_first_then_updated_then_removed() {
    let client = client_with(vec![ab_route()]).await;
    let original = stored(&client).await;
    let router = router(&client);

    router
        .set_header_routes(&[header_route("beta", &[("x-beta", "true")])])
        .await
        .expect("add");

    let after = stored(&client).await;
    assert_eq!(rule_names(&after), ["rollwise-beta", "main", "-"]);
    insta::assert_yaml_snapshot!("header_route_added", after["spec"]["rules"][0]);
    // The user rules are untouched, and so is everything else.
    assert_eq!(after["spec"]["rules"][1], original["spec"]["rules"][0]);
    assert_eq!(after["spec"]["rules"][2], original["spec"]["rules"][1]);
    assert_eq!(after["spec"]["parentRefs"], original["spec"]["parentRefs"]);
    assert_eq!(router.current_weight().await.expect("read"), reading(20));

    // Updated: a new value and a second header; still one rule, same place.
    router
        .set_header_routes(&[header_route(
            "beta",
            &[("x-beta", "yes"), ("x-tenant", "acme")],
        )])
        .await
        .expect("update");
    let after = stored(&client).await;
    assert_eq!(rule_names(&after), ["rollwise-beta", "main", "-"]);
    insta::assert_yaml_snapshot!("header_route_updated", after["spec"]["rules"][0]["matches"]);

    // A second route goes first too, in the order given.
    router
        .set_header_routes(&[
            header_route("alpha", &[("x-alpha", "1")]),
            header_route("beta", &[("x-beta", "yes"), ("x-tenant", "acme")]),
        ])
        .await
        .expect("two routes");
    assert_eq!(
        rule_names(&stored(&client).await),
        ["rollwise-alpha", "rollwise-beta", "main", "-"]
    );

    // Removed: the route is exactly the user's again.
    router.set_header_routes(&[]).await.expect("remove");
    let after = stored(&client).await;
    assert_eq!(after["spec"], original["spec"]);
}

#[tokio::test]
async fn header_routes_unchanged_make_no_write() {
    let patches = Arc::new(AtomicU32::new(0));
    let client = client_with_interceptor(vec![ab_route()], counting_patches(&patches)).await;
    let routes = [header_route("beta", &[("x-beta", "true")])];

    router(&client)
        .set_header_routes(&routes)
        .await
        .expect("add");
    router(&client)
        .set_header_routes(&routes)
        .await
        .expect("again");
    // Weights move without touching the header rule, and back.
    router(&client).set_weight(20).await.expect("same weight");
    assert_eq!(patches.load(Ordering::SeqCst), 1);
    router(&client)
        .set_header_routes(&[])
        .await
        .expect("remove");
    router(&client).set_header_routes(&[]).await.expect("again");
    assert_eq!(patches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn header_route_keeps_weights_and_weights_keep_header_route() {
    let client = client_with(vec![ab_route()]).await;
    let router = router(&client);
    router
        .set_header_routes(&[header_route("beta", &[("x-beta", "true")])])
        .await
        .expect("add");
    let with_route = stored(&client).await;

    assert_eq!(router.set_weight(50).await.expect("set"), reading(50));

    let after = stored(&client).await;
    assert_eq!(after["spec"]["rules"][0], with_route["spec"]["rules"][0]);
    assert_eq!(
        refs(&after, 1),
        vec![
            (STABLE.into(), Some(8080), Some(50)),
            (CANARY.into(), Some(8080), Some(50)),
        ]
    );
}

#[tokio::test]
async fn one_header_rule_per_stable_rule() {
    let client = client_with(vec![route(json!([
        {
            "matches": [{ "path": { "type": "PathPrefix", "value": "/shop" } }],
            "backendRefs": [{ "name": STABLE, "port": 8080 }],
        },
        // No matches: everything else (PathPrefix /).
        { "backendRefs": [{ "name": STABLE, "port": 9090 }] },
        // Already requires x-beta=false: cannot also be x-beta=true.
        {
            "matches": [{ "path": { "type": "Exact", "value": "/old" }, "headers": [{ "name": "X-Beta", "value": "false" }] }],
            "backendRefs": [{ "name": STABLE, "port": 8080 }],
        },
    ]))])
    .await;

    router(&client)
        .set_header_routes(&[header_route("beta", &[("x-beta", "true")])])
        .await
        .expect("add");

    let after = stored(&client).await;
    assert_eq!(
        rule_names(&after),
        ["rollwise-beta-1", "rollwise-beta-2", "-", "-", "-"]
    );
    insta::assert_yaml_snapshot!(
        "header_route_per_stable_rule",
        json!([after["spec"]["rules"][0], after["spec"]["rules"][1]])
    );
}

#[tokio::test]
async fn cookie_and_unexpressible_routes_are_unsupported_and_write_nothing() {
    let patches = Arc::new(AtomicU32::new(0));
    let client = client_with_interceptor(vec![ab_route()], counting_patches(&patches)).await;
    let before = stored(&client).await;

    let cookie = HeaderRoute {
        name: "beta".into(),
        matches: vec![
            Match::Header {
                name: "x-beta".into(),
                value: "true".into(),
            },
            Match::Cookie {
                name: "beta".into(),
                value: "always".into(),
            },
        ],
    };
    let err = router(&client)
        .set_header_routes(&[cookie])
        .await
        .expect_err("cookie");
    assert!(
        matches!(&err, TrafficError::Unsupported { router: "gatewayAPI", what } if what.contains("cookie")),
        "{err:?}"
    );
    assert!(err.is_configuration());
    assert_eq!(err.metric_label(), "router_unsupported");

    for refused in [
        vec![header_route("beta", &[])],
        vec![header_route("beta", &[("x-a", "1"), ("X-A", "2")])],
        vec![
            header_route("beta", &[("x-a", "1")]),
            header_route("beta", &[("x-b", "1")]),
        ],
    ] {
        let err = router(&client)
            .set_header_routes(&refused)
            .await
            .expect_err("refused");
        assert!(matches!(err, TrafficError::Unsupported { .. }), "{err:?}");
    }

    // Too many rules for one HTTPRoute (16 at most).
    let many: Vec<HeaderRoute> = (0..MAX_RULES)
        .map(|i| header_route(&format!("r{i}"), &[("x-r", "1")]))
        .collect();
    let err = router(&client)
        .set_header_routes(&many)
        .await
        .expect_err("too many");
    assert!(matches!(err, TrafficError::Unsupported { .. }), "{err:?}");

    assert_eq!(patches.load(Ordering::SeqCst), 0);
    assert_eq!(stored(&client).await, before);
}

#[tokio::test]
async fn restore_stable_removes_header_rules_and_restores_100_0() {
    let client = client_with(vec![ab_route()]).await;
    let original = stored(&client).await;
    let router = router(&client);
    router
        .set_header_routes(&[header_route("beta", &[("x-beta", "true")])])
        .await
        .expect("add");

    router.restore_stable().await.expect("restore");

    let after = stored(&client).await;
    assert_eq!(rule_names(&after), ["main", "-"]);
    assert_eq!(
        refs(&after, 0),
        vec![
            (STABLE.into(), Some(8080), Some(100)),
            (CANARY.into(), Some(8080), Some(0)),
        ]
    );
    assert_eq!(after["spec"]["rules"][1], original["spec"]["rules"][1]);
    assert_eq!(router.current_weight().await.expect("read"), reading(0));
}

#[tokio::test]
async fn restore_stable_removes_header_rules_even_without_stable_backend() {
    // The user dropped the stable ref; our rule still sends x-beta to the canary.
    let client = client_with(vec![route(json!([
        {
            "name": "rollwise-beta",
            "matches": [{ "headers": [{ "type": "Exact", "name": "x-beta", "value": "true" }] }],
            "backendRefs": [{ "name": CANARY, "port": 8080, "weight": 1 }],
        },
        { "backendRefs": [{ "name": "other", "port": 80 }] },
    ]))])
    .await;

    router(&client).restore_stable().await.expect("restore");

    assert_eq!(rule_names(&stored(&client).await), ["-"]);
}

#[tokio::test]
async fn weight_reading_ignores_rollwise_rules() {
    // Our rule even carries a stable ref here: it must not count.
    let client = client_with(vec![route(json!([
        {
            "name": "rollwise-beta",
            "matches": [{ "headers": [{ "type": "Exact", "name": "x-beta", "value": "true" }] }],
            "backendRefs": [
                { "name": STABLE, "port": 8080, "weight": 0 },
                { "name": CANARY, "port": 8080, "weight": 1 },
            ],
        },
        { "backendRefs": [
            { "name": STABLE, "port": 8080, "weight": 90 },
            { "name": CANARY, "port": 8080, "weight": 10 },
        ] },
    ]))])
    .await;
    let router = router(&client);
    assert_eq!(router.current_weight().await.expect("read"), reading(10));
    // set_weight only weights the user rule.
    assert_eq!(router.set_weight(30).await.expect("set"), reading(30));
    let after = stored(&client).await;
    assert_eq!(
        refs(&after, 0),
        vec![
            (STABLE.into(), Some(8080), Some(0)),
            (CANARY.into(), Some(8080), Some(1)),
        ]
    );
    assert_eq!(
        refs(&after, 1),
        vec![
            (STABLE.into(), Some(8080), Some(70)),
            (CANARY.into(), Some(8080), Some(30)),
        ]
    );
}

#[tokio::test]
async fn concurrent_edit_during_header_route_write_is_not_lost() {
    let patches = Arc::new(AtomicU32::new(0));
    // Someone else adds a rule and a hostname right before our (now stale)
    // patch lands.
    let edit = json!({
        "spec": {
            "hostnames": ["beta.example.com"],
            "rules": [
                { "name": "main", "backendRefs": [{ "name": STABLE, "port": 8080 }] },
                { "name": "docs",
                  "matches": [{ "path": { "type": "PathPrefix", "value": "/docs" } }],
                  "backendRefs": [{ "name": "docs", "port": 80 }] },
            ],
        },
    });
    let funcs = routers::concurrent_edit::<HttpRoute>(&patches, edit);
    let client = client_with_interceptor(
        vec![route(
            json!([{ "name": "main", "backendRefs": [{ "name": STABLE, "port": 8080 }] }]),
        )],
        funcs,
    )
    .await;

    router(&client)
        .set_header_routes(&[header_route("beta", &[("x-beta", "true")])])
        .await
        .expect("add");

    assert_eq!(patches.load(Ordering::SeqCst), 2, "one conflict, one retry");
    let after = stored(&client).await;
    assert_eq!(after["spec"]["hostnames"], json!(["beta.example.com"]));
    assert_eq!(rule_names(&after), ["rollwise-beta", "main", "docs"]);
    assert_eq!(refs(&after, 0), vec![(CANARY.into(), Some(8080), Some(1))]);
    assert_eq!(refs(&after, 2), vec![("docs".into(), Some(80), None)]);
}

#[tokio::test]
async fn pruned_rule_names_are_rolled_back_and_refused() {
    // Stand-in for an API server whose HTTPRoute CRD predates rules[].name:
    // it prunes the field on every write.
    let funcs = interceptor::Funcs::new().patch(|ctx| {
        let mut patch = ctx.patch.clone();
        if let Some(rules) = patch["spec"]["rules"].as_array_mut() {
            for rule in rules {
                if let Some(rule) = rule.as_object_mut() {
                    rule.remove("name");
                }
            }
        }
        let stored = ctx
            .client
            .patch::<HttpRoute>(ctx.namespace, ctx.name, &patch, ctx.params)?;
        Ok(Some(serde_json::to_value(stored).expect("json")))
    });
    let client = client_with_interceptor(
        vec![route(
            json!([{ "backendRefs": [{ "name": STABLE, "port": 8080 }] }]),
        )],
        funcs,
    )
    .await;
    let before = stored(&client).await;

    let err = router(&client)
        .set_header_routes(&[header_route("beta", &[("x-beta", "true")])])
        .await
        .expect_err("names pruned");

    assert!(
        matches!(&err, TrafficError::Unsupported { what, .. } if what.contains("rules[].name")),
        "{err:?}"
    );
    assert_eq!(stored(&client).await["spec"], before["spec"]);
}
