//! A dependency in another namespace, on the real API server: `checkout`
//! in one namespace waits for `payments` in another, with an operator that
//! watches every namespace (the chart's default). Its own test binary:
//! an operator for all namespaces would also reconcile the Rollouts of
//! tests running beside it in the same binary.

mod common;

use std::time::Duration;

use ::gateway_api::apis::standard::httproutes::HttpRoute;
use common::cluster::{OperatorOptions, TestNs, in_namespace, in_namespace_of};
use kube::api::ApiResource;
use rollwise::api::{Phase, Rollout};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);

/// `service`'s two versions, its route and its Rollout (v1 -> v2) in `ns`.
async fn service(ns: &TestNs, service: &str, steps: Value, depends_on: Value) {
    let (v1, v2) = (format!("{service}-v1"), format!("{service}-v2"));
    ns.versions(&[&v1, &v2], 1).await;
    ns.create_dynamic(
        &ApiResource::erase::<HttpRoute>(&()),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": service},
            "spec": {
                "parentRefs": [{"name": "e2e"}],
                "rules": [{"backendRefs": [{"name": v1, "port": 80}]}]
            }
        }),
    )
    .await;
    let mut spec = json!({
        "stable": {"service": v1, "deployment": v1},
        "canary": {"service": v2, "deployment": v2},
        "trafficRouting": {"gatewayAPI": {"httpRoute": service}},
        "steps": steps,
    });
    if !depends_on.is_null() {
        spec["dependsOn"] = depends_on;
    }
    let r: Rollout = serde_json::from_value(json!({
        "apiVersion": "rollwise.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": service, "namespace": ns.name},
        "spec": spec,
    }))
    .expect("a valid Rollout");
    ns.create(&r).await;
}

/// payments (namespace A) stops at 40% for a person; checkout (namespace
/// B) needs it Succeeded with canary payments-v2: it waits at 0%, naming
/// `A/payments` and what it is doing; promoted by hand, payments succeeds
/// and checkout, woken by the watch, goes to 100%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_in_another_namespace_is_waited_for_and_followed() {
    in_namespace("xns-payments", async |pay: &TestNs| {
        in_namespace_of(&pay.cluster, "xns-shop", async |shop: &TestNs| {
            pay.start_operator(OperatorOptions::new(&pay.cluster.kubeconfig))
                .await;
            service(
                pay,
                "payments",
                json!([{"setWeight": 40}, {"pause": {}}, {"setWeight": 100}]),
                Value::Null,
            )
            .await;
            service(
                shop,
                "checkout",
                json!([{"setWeight": 50}, {"setWeight": 100}]),
                json!([{"name": "payments", "namespace": pay.name,
                        "phase": "Succeeded", "canaryService": "payments-v2"}]),
            )
            .await;
            pay.wait_phase("payments", Phase::Paused, 40, TIMEOUT).await;
            let key = format!("{}/payments", pay.name);
            let r = shop
                .wait_rollout("checkout", "waiting for payments at 40%", TIMEOUT, |r| {
                    r.status.as_ref().is_some_and(|s| {
                        s.waiting_for == key
                            && s.dependencies
                                .first()
                                .is_some_and(|d| d.phase == "Paused" && d.weight == 40)
                    })
                })
                .await;
            let s = r.status.as_ref().unwrap();
            assert_eq!(s.canary_weight, 0, "checkout waits with no traffic");
            assert_eq!(
                s.dependencies[0].namespace, pay.name,
                "{:?}",
                s.dependencies
            );
            let d = s.last_decision.as_ref().unwrap();
            assert_eq!(d.reason, "WaitingForDependency", "{d:?}");
            assert!(d.message.contains(&key), "{}", d.message);

            pay.act("payments", "promote").await;
            pay.wait_phase("payments", Phase::Succeeded, 100, TIMEOUT)
                .await;
            let r = shop
                .wait_phase("checkout", Phase::Succeeded, 100, TIMEOUT)
                .await;
            let s = r.status.as_ref().unwrap();
            assert!(s.waiting_for.is_empty(), "{s:?}");
            assert!(s.dependencies[0].satisfied, "{:?}", s.dependencies);
        })
        .await;
    })
    .await;
}
