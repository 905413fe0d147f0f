//! The Istio VirtualService router against `kube-fake-client`.
//!
//! The fake applies merge patches with `json_patch::merge` and enforces the
//! `metadata.resourceVersion` precondition, so the merge-patch path, the
//! conflict retry and field preservation are exercised for real. It does not
//! run Istio's validation webhook.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::routers::{
    self, CANARY, NS, STABLE, VirtualService, assert_built, assert_crd_missing, backends,
    counting_patches, reading,
};
use rollwise::api::{IstioRouting, IstioSubsets, TrafficRouting};
use rollwise::traffic::gateway_api::MAX_WRITE_ATTEMPTS;
use rollwise::traffic::istio::IstioRouter;
use rollwise::traffic::{HeaderRoute, Match, TrafficError, TrafficRouter, router_for};
use serde_json::{Value, json};

const VS: &str = "web";

fn config() -> IstioRouting {
    IstioRouting {
        virtual_service: VS.into(),
        ..Default::default()
    }
}

fn router(client: &kube::Client) -> IstioRouter {
    IstioRouter::new(client.clone(), config(), backends())
}

fn router_with(client: &kube::Client, config: IstioRouting) -> IstioRouter {
    IstioRouter::new(client.clone(), config, backends())
}

/// A VirtualService with the given `spec.http`.
fn vs(http: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": { "name": VS, "namespace": NS },
        "spec": {
            "hosts": ["web.example.com"],
            "gateways": ["infra/public"],
            "http": http,
        },
    })
}

/// One route `primary` with the stable (and canary) destination weights.
fn weighted_vs(stable: u32, canary: u32) -> Value {
    vs(json!([{
        "name": "primary",
        "route": [
            { "destination": { "host": STABLE, "port": { "number": 8080 } }, "weight": stable },
            { "destination": { "host": CANARY, "port": { "number": 8080 } }, "weight": canary },
        ],
    }]))
}

// `client_with`, `client_with_interceptor` and `stored` (the VirtualService `NS/VS`).
routers::fixtures!(VirtualService, VS);

/// `(host, subset, weight)` of each destination of `spec.http[route]`.
fn dests(vs: &Value, route: usize) -> Vec<(String, Option<String>, Option<u64>)> {
    vs["spec"]["http"][route]["route"]
        .as_array()
        .expect("route")
        .iter()
        .map(|d| {
            (
                d["destination"]["host"].as_str().expect("host").to_owned(),
                d["destination"]["subset"].as_str().map(str::to_owned),
                d["weight"].as_u64(),
            )
        })
        .collect()
}

#[tokio::test]
async fn set_weight_adds_canary_destination_with_stable_port_and_reads_back() {
    let client = client_with(vec![vs(json!([
        {
            "name": "primary",
            "match": [{ "uri": { "prefix": "/" } }],
            "route": [{ "destination": { "host": STABLE, "port": { "number": 8080 } } }],
        },
        {
            "name": "other",
            "route": [{ "destination": { "host": "admin", "port": { "number": 80 } } }],
        },
    ]))])
    .await;

    let got = router(&client).set_weight(20).await.expect("set_weight");

    assert_eq!(got, reading(20));
    let after = stored(&client).await;
    insta::assert_yaml_snapshot!("set_weight_20_host_based", after["spec"]["http"]);
    assert_eq!(
        router(&client).current_weight().await.expect("read"),
        reading(20)
    );
}

#[tokio::test]
async fn host_forms_are_one_service_and_canary_is_written_in_the_same_form() {
    let fqdn = format!("{STABLE}.{NS}.svc.cluster.local");
    let client = client_with(vec![vs(json!([
        { "name": "a", "route": [{ "destination": { "host": fqdn } }] },
        { "name": "b", "route": [{ "destination": { "host": format!("{STABLE}.{NS}") } }] },
        { "name": "c", "route": [{ "destination": { "host": format!("{STABLE}.{NS}.svc") } }] },
        // Same Service name in another namespace: a different host.
        { "name": "d", "route": [{ "destination": { "host": format!("{STABLE}.elsewhere.svc.cluster.local") } }] },
    ]))])
    .await;

    router(&client).set_weight(10).await.expect("set_weight");

    let after = stored(&client).await;
    assert_eq!(
        dests(&after, 0),
        vec![
            (fqdn.clone(), None, Some(90)),
            (format!("{CANARY}.{NS}.svc.cluster.local"), None, Some(10)),
        ]
    );
    assert_eq!(
        dests(&after, 1),
        vec![
            (format!("{STABLE}.{NS}"), None, Some(90)),
            (format!("{CANARY}.{NS}"), None, Some(10)),
        ]
    );
    assert_eq!(
        dests(&after, 2),
        vec![
            (format!("{STABLE}.{NS}.svc"), None, Some(90)),
            (format!("{CANARY}.{NS}.svc"), None, Some(10)),
        ]
    );
    assert_eq!(
        dests(&after, 3),
        vec![(format!("{STABLE}.elsewhere.svc.cluster.local"), None, None)]
    );
}

#[tokio::test]
async fn set_weight_preserves_every_other_field() {
    let original = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {
            "name": VS,
            "namespace": NS,
            "labels": { "app": "web" },
            "annotations": { "note": "hand written" },
        },
        "spec": {
            "hosts": ["web.example.com"],
            "gateways": ["infra/public", "mesh"],
            "exportTo": ["."],
            "futureSpecField": { "keep": true },
            "http": [
                {
                    "name": "primary",
                    "match": [{ "uri": { "prefix": "/" }, "headers": { "x-env": { "exact": "prod" } } }],
                    "retries": { "attempts": 3, "perTryTimeout": "2s" },
                    "timeout": "10s",
                    "mirror": { "host": "shadow" },
                    "headers": { "request": { "set": { "x-routed-by": "istio" } } },
                    "route": [
                        {
                            "destination": { "host": STABLE, "port": { "number": 8080 } },
                            "weight": 95,
                            "headers": { "response": { "add": { "x-backend": "stable" } } },
                        },
                        { "destination": { "host": "web-shadow", "port": { "number": 9090 } }, "weight": 5 },
                    ],
                    "futureField": { "nested": [1, 2, { "deep": "value" }] },
                },
                { "name": "redirect", "redirect": { "uri": "/new" } },
            ],
            "tcp": [{ "route": [{ "destination": { "host": STABLE, "port": { "number": 9000 } } }] }],
        },
        "status": { "observedGeneration": 3, "validationMessages": [] },
    });
    let client = client_with(vec![original.clone()]).await;

    let got = router(&client).set_weight(30).await.expect("set_weight");
    assert_eq!(got, reading(30));

    let after = stored(&client).await;
    let mut expected = original.clone();
    let route = expected["spec"]["http"][0]["route"].as_array_mut().unwrap();
    route[0]["weight"] = json!(70);
    route.insert(
        1,
        json!({ "destination": { "host": CANARY, "port": { "number": 8080 } }, "weight": 30 }),
    );
    assert_eq!(after["spec"], expected["spec"]);
    assert_eq!(after["status"], original["status"]);
    assert_eq!(after["metadata"]["labels"], original["metadata"]["labels"]);
    assert_eq!(
        after["metadata"]["annotations"],
        original["metadata"]["annotations"]
    );
}

#[tokio::test]
async fn concurrent_edit_is_not_lost() {
    let patches = Arc::new(AtomicU32::new(0));
    // Someone else adds a route and a host right before our (now stale)
    // patch lands.
    let edit = json!({
        "metadata": { "annotations": { "edited-by": "someone-else" } },
        "spec": {
            "hosts": ["beta.example.com"],
            "http": [
                { "name": "admin", "match": [{ "uri": { "prefix": "/admin" } }],
                  "route": [{ "destination": { "host": "admin" } }] },
                { "name": "primary", "route": [{ "destination": { "host": STABLE } }] },
            ],
        },
    });
    let funcs = routers::concurrent_edit::<VirtualService>(&patches, edit);
    let client = client_with_interceptor(
        vec![vs(json!([
            { "name": "primary", "route": [{ "destination": { "host": STABLE } }] },
        ]))],
        funcs,
    )
    .await;

    let got = router(&client).set_weight(10).await.expect("set_weight");

    assert_eq!(got, reading(10));
    assert_eq!(patches.load(Ordering::SeqCst), 2, "one conflict, one retry");
    let after = stored(&client).await;
    assert_eq!(after["spec"]["hosts"], json!(["beta.example.com"]));
    assert_eq!(
        after["metadata"]["annotations"]["edited-by"],
        "someone-else"
    );
    assert_eq!(dests(&after, 0), vec![("admin".into(), None, None)]);
    assert_eq!(
        dests(&after, 1),
        vec![
            (STABLE.into(), None, Some(90)),
            (CANARY.into(), None, Some(10)),
        ]
    );
}

#[tokio::test]
async fn persistent_conflicts_give_up_with_conflict_error() {
    let patches = Arc::new(AtomicU32::new(0));
    let funcs = routers::conflicting_patches(&patches);
    let client = client_with_interceptor(vec![weighted_vs(100, 0)], funcs).await;
    let before = stored(&client).await;

    let err = router(&client).set_weight(50).await.expect_err("gives up");

    assert!(
        matches!(err, TrafficError::Conflict { attempts, ref name, .. } if attempts == MAX_WRITE_ATTEMPTS && name == VS),
        "{err:?}"
    );
    assert_eq!(stored(&client).await, before);
}

#[tokio::test]
async fn set_weight_to_carried_weight_makes_no_write() {
    let patches = Arc::new(AtomicU32::new(0));
    let client =
        client_with_interceptor(vec![weighted_vs(67, 33)], counting_patches(&patches)).await;
    let before = stored(&client).await;

    assert_eq!(
        router(&client).set_weight(33).await.expect("set"),
        reading(33)
    );
    assert_eq!(patches.load(Ordering::SeqCst), 0);
    assert_eq!(stored(&client).await, before);

    router(&client).set_weight(50).await.expect("set");
    router(&client).set_weight(50).await.expect("set");
    assert_eq!(patches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn set_weight_reads_back_the_servers_answer() {
    // Stand-in for a mutating webhook that caps the canary at 25%.
    let funcs = routers::adjusted_answers::<VirtualService>(|stored| {
        let route = stored["spec"]["http"][0]["route"].as_array_mut().unwrap();
        route[0]["weight"] = json!(75);
        route[1]["weight"] = json!(25);
    });
    let client = client_with_interceptor(vec![weighted_vs(100, 0)], funcs).await;

    assert_eq!(
        router(&client).set_weight(40).await.expect("set"),
        reading(25)
    );
}

#[tokio::test]
async fn current_weight_reports_highest_share_and_istio_defaults() {
    let client = client_with(vec![vs(json!([
        { "route": [
            { "destination": { "host": STABLE }, "weight": 90 },
            { "destination": { "host": CANARY }, "weight": 10 },
        ] },
        { "route": [
            { "destination": { "host": STABLE }, "weight": 70 },
            { "destination": { "host": CANARY }, "weight": 30 },
        ] },
        // A lone destination without weight gets everything.
        { "route": [{ "destination": { "host": STABLE } }] },
    ]))])
    .await;
    assert_eq!(
        router(&client).current_weight().await.expect("read"),
        reading(30)
    );

    // Two destinations without weights: both 0, the canary share is 0.
    let client = client_with(vec![vs(json!([{ "route": [
        { "destination": { "host": STABLE } },
        { "destination": { "host": CANARY } },
    ] }]))])
    .await;
    assert_eq!(
        router(&client).current_weight().await.expect("read"),
        reading(0)
    );
}

#[tokio::test]
async fn named_routes_are_the_only_ones_driven() {
    let client = client_with(vec![vs(json!([
        { "name": "api", "route": [{ "destination": { "host": STABLE } }] },
        { "name": "web", "route": [{ "destination": { "host": STABLE } }] },
    ]))])
    .await;
    let config = IstioRouting {
        routes: Some(vec!["web".into()]),
        ..config()
    };

    router_with(&client, config.clone())
        .set_weight(40)
        .await
        .expect("set");

    let after = stored(&client).await;
    assert_eq!(dests(&after, 0), vec![(STABLE.into(), None, None)]);
    assert_eq!(
        dests(&after, 1),
        vec![
            (STABLE.into(), None, Some(60)),
            (CANARY.into(), None, Some(40))
        ]
    );

    let missing = IstioRouting {
        routes: Some(vec!["nope".into()]),
        ..config
    };
    let err = router_with(&client, missing)
        .verify()
        .await
        .expect_err("no such route");
    assert!(matches!(err, TrafficError::Malformed { .. }), "{err:?}");
    assert!(err.is_configuration());
}

#[tokio::test]
async fn subset_mode_weights_subsets_of_one_host() {
    let client = client_with(vec![vs(json!([
        {
            "name": "primary",
            "route": [{ "destination": { "host": "web", "subset": "stable", "port": { "number": 80 } } }],
        },
        // Another subset of the same host is not ours.
        { "name": "legacy", "route": [{ "destination": { "host": "web", "subset": "v1" } }] },
    ]))])
    .await;
    let config = IstioRouting {
        subsets: Some(IstioSubsets {
            host: Some("web".into()),
            stable: "stable".into(),
            canary: "canary".into(),
        }),
        ..config()
    };
    let router = router_with(&client, config);

    assert_eq!(router.set_weight(25).await.expect("set"), reading(25));
    router
        .set_header_routes(&[HeaderRoute {
            name: "beta".into(),
            matches: vec![Match::Header {
                name: "x-beta".into(),
                value: "1".into(),
            }],
        }])
        .await
        .expect("header route");

    let after = stored(&client).await;
    insta::assert_yaml_snapshot!("subset_mode_25_with_header_route", after["spec"]["http"]);
    assert_eq!(router.current_weight().await.expect("read"), reading(25));

    router.restore_stable().await.expect("restore");
    let after = stored(&client).await;
    assert_eq!(after["spec"]["http"].as_array().unwrap().len(), 2);
    assert_eq!(
        dests(&after, 0),
        vec![
            ("web".into(), Some("stable".into()), Some(100)),
            ("web".into(), Some("canary".into()), Some(0)),
        ]
    );
}

#[tokio::test]
async fn header_and_cookie_routes_are_added_replaced_and_removed() {
    let original = vs(json!([
        { "name": "health", "match": [{ "uri": { "exact": "/healthz" } }],
          "route": [{ "destination": { "host": "health" } }] },
        { "name": "primary", "route": [{ "destination": { "host": STABLE, "port": { "number": 8080 } } }] },
    ]));
    let patches = Arc::new(AtomicU32::new(0));
    let client = client_with_interceptor(vec![original.clone()], counting_patches(&patches)).await;
    let router = router(&client);
    let routes = [
        HeaderRoute {
            name: "testers".into(),
            matches: vec![
                Match::Header {
                    name: "X-Canary".into(),
                    value: "always".into(),
                },
                Match::Header {
                    name: "x-region".into(),
                    value: "eu".into(),
                },
            ],
        },
        HeaderRoute {
            name: "beta-cookie".into(),
            matches: vec![Match::Cookie {
                name: "beta.user".into(),
                value: "yes+1".into(),
            }],
        },
    ];

    router.set_header_routes(&routes).await.expect("add");
    let added = stored(&client).await;
    insta::assert_yaml_snapshot!("header_and_cookie_routes", added["spec"]["http"]);
    assert_eq!(patches.load(Ordering::SeqCst), 1);

    // Idempotent.
    router.set_header_routes(&routes).await.expect("again");
    assert_eq!(patches.load(Ordering::SeqCst), 1, "no write when unchanged");

    // Weights still read from the driven route only.
    router.set_weight(10).await.expect("set");
    assert_eq!(router.current_weight().await.expect("read"), reading(10));
    let with_weight = stored(&client).await;
    // The header routes now reuse the existing canary destination.
    assert_eq!(
        with_weight["spec"]["http"][1]["route"][0]["destination"]["host"],
        CANARY
    );

    // Keep only the second.
    router
        .set_header_routes(&routes[1..])
        .await
        .expect("replace");
    let names: Vec<_> = stored(&client).await["spec"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["health", "rollwise-beta-cookie", "primary"]);

    // None: back to the user's routes.
    router.set_header_routes(&[]).await.expect("remove");
    let removed = stored(&client).await;
    assert_eq!(removed["spec"]["http"].as_array().unwrap().len(), 2);
    assert_eq!(removed["spec"]["http"][0], original["spec"]["http"][0]);
}

#[tokio::test]
async fn header_routes_that_cannot_be_expressed_are_refused() {
    let client = client_with(vec![weighted_vs(100, 0)]).await;
    let before = stored(&client).await;
    for matches in [
        vec![],
        vec![
            Match::Cookie {
                name: "a".into(),
                value: "1".into(),
            },
            Match::Cookie {
                name: "b".into(),
                value: "2".into(),
            },
        ],
    ] {
        let err = router(&client)
            .set_header_routes(&[HeaderRoute {
                name: "x".into(),
                matches,
            }])
            .await
            .expect_err("refused");
        assert!(
            matches!(
                err,
                TrafficError::Unsupported {
                    router: "istio",
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert_eq!(stored(&client).await, before);
}

#[tokio::test]
async fn restore_stable_sends_everything_to_stable_and_removes_header_routes() {
    let client = client_with(vec![vs(json!([
        { "name": "rollwise-beta", "match": [{ "headers": { "x-beta": { "exact": "1" } } }],
          "route": [{ "destination": { "host": CANARY }, "weight": 100 }] },
        { "name": "primary", "route": [
            { "destination": { "host": STABLE }, "weight": 40 },
            { "destination": { "host": CANARY }, "weight": 60 },
        ] },
    ]))])
    .await;
    let router = router(&client);

    router.restore_stable().await.expect("restore");

    let after = stored(&client).await;
    assert_eq!(after["spec"]["http"].as_array().unwrap().len(), 1);
    assert_eq!(
        dests(&after, 0),
        vec![
            (STABLE.into(), None, Some(100)),
            (CANARY.into(), None, Some(0))
        ]
    );
    assert_eq!(router.current_weight().await.expect("read"), reading(0));
}

#[tokio::test]
async fn restore_stable_on_missing_virtual_service_is_ok() {
    let client = client_with(vec![]).await;
    router(&client)
        .restore_stable()
        .await
        .expect("nothing to restore");
}

#[tokio::test]
async fn missing_virtual_service_is_route_not_found() {
    let client = client_with(vec![]).await;
    let err = router(&client).verify().await.expect_err("missing");
    assert!(
        matches!(&err, TrafficError::RouteNotFound { kind: "VirtualService", name, namespace } if name == VS && namespace == NS),
        "{err:?}"
    );
    let err = router(&client).set_weight(5).await.expect_err("missing");
    assert!(matches!(err, TrafficError::RouteNotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn virtual_service_without_stable_destination_is_no_stable_backend() {
    let client = client_with(vec![vs(json!([
        { "route": [{ "destination": { "host": "other" } }] },
    ]))])
    .await;
    let err = router(&client).verify().await.expect_err("no stable");
    assert!(
        matches!(&err, TrafficError::NoStableBackend { service, .. } if service == STABLE),
        "{err:?}"
    );
    router(&client)
        .restore_stable()
        .await
        .expect("nothing to restore");
}

#[tokio::test]
async fn crd_not_installed_is_crd_missing() {
    let client = routers::client_without_crds().await;
    assert_crd_missing(&router(&client), "virtualservices.networking.istio.io").await;
}

#[tokio::test]
async fn router_for_builds_the_istio_router() {
    let client = client_with(vec![weighted_vs(95, 5)]).await;
    let routing = TrafficRouting {
        istio: Some(config()),
        ..Default::default()
    };
    let router = router_for(client.clone(), &routing, backends()).expect("a router");
    assert_built(router.as_ref(), "istio", 5).await;
}
