//! An in-memory cluster (kube-fake-client, which speaks the real HTTP API)
//! with the objects a Rollout needs: two Deployments, two Services, an
//! HTTPRoute and the Rollout. Used by `rollwise demo` and the reconcile tests.

use ::gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube_fake_client::ClientBuilder;
use serde_json::{Value, json};

use crate::api::Rollout;

pub const NAMESPACE: &str = "shop";

/// A Deployment of `replicas` pods; `available` of them ready.
pub fn deployment(name: &str, replicas: i32, available: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "generation": 1, "labels": {"app": "checkout"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "checkout", "version": name}},
            "template": {"metadata": {"labels": {"app": "checkout", "version": name}},
                         "spec": {"containers": [{"name": "http", "image": format!("example/{name}")}]}}
        },
        "status": {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
                   "readyReplicas": available, "availableReplicas": available}
    }))
    .expect("static deployment")
}

pub fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"selector": {"app": "checkout", "version": name}, "ports": [{"name": "http", "port": 80}]}
    }))
    .expect("static service")
}

/// An HTTPRoute sending everything to `stable`, with a second rule for an
/// unrelated service and fields the operator must not touch.
pub fn http_route(name: &str, stable: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"team": "shop"}},
        "spec": {
            "parentRefs": [{"name": "web"}],
            "hostnames": ["shop.example.com"],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/checkout"}}],
                 "backendRefs": [{"name": stable, "port": 80}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                 "backendRefs": [{"name": "static-files", "port": 80}]}
            ]
        }
    })
}

/// The demo's Rollout: 5% → 33% → 50% → 100% with short pauses, an
/// error-rate threshold and a canary-vs-stable comparison every 15 s.
pub fn rollout(name: &str, stable: &str, canary: &str, route: &str) -> Rollout {
    serde_json::from_value(json!({
        "apiVersion": "rollwise.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name, "namespace": NAMESPACE, "generation": 1},
        "spec": {
            "stable": {"service": stable, "deployment": stable},
            "canary": {"service": canary, "deployment": canary},
            "trafficRouting": {"gatewayAPI": {"httpRoute": route}},
            "steps": [
                {"setWeight": 5}, {"pause": {"duration": "1m"}},
                {"setWeight": 33}, {"pause": {"duration": "1m"}},
                {"setWeight": 50}, {"pause": {"duration": "1m"}},
                {"setWeight": 100}
            ],
            "analysis": {
                "interval": "15s",
                "prometheus": {"address": "http://prometheus.demo:9090"},
                "compare": [{
                    "name": "http-errors",
                    "requests": "sum(increase(http_requests_total{service=\"{{service}}\"}[{{window}}]))",
                    "failures": "sum(increase(http_requests_total{service=\"{{service}}\",code=~\"5..\"}[{{window}}]))",
                    "tolerance": 0.01
                }],
                "maxExtraFailures": 200,
                "metrics": [{
                    "name": "error-rate",
                    "query": "sum(rate(http_requests_total{service=\"{{service}}\",code=~\"5..\"}[1m])) / sum(rate(http_requests_total{service=\"{{service}}\"}[1m]))",
                    "max": 0.02,
                    "failureLimit": 1
                }]
            }
        }
    }))
    .expect("static rollout")
}

/// A fresh in-memory API server with the kinds rollwise uses registered.
pub async fn client(extra: Vec<Value>) -> Result<kube::Client, kube_fake_client::Error> {
    ClientBuilder::new()
        .with_resource::<Rollout>()
        .with_status_subresource::<Rollout>()
        .with_resource::<HttpRoute>()
        .with_status_subresource::<Deployment>()
        .with_runtime_objects(extra)
        .build()
        .await
}

/// The standard demo cluster: v1 (stable) and v2 (canary), both available,
/// their Services, the route and a Rollout named `checkout`.
pub async fn standard() -> Result<kube::Client, kube_fake_client::Error> {
    let objects = vec![
        serde_json::to_value(deployment("checkout-v1", 3, 3)).expect("serializes"),
        serde_json::to_value(deployment("checkout-v2", 3, 3)).expect("serializes"),
        serde_json::to_value(service("checkout-v1")).expect("serializes"),
        serde_json::to_value(service("checkout-v2")).expect("serializes"),
        http_route("checkout", "checkout-v1"),
        serde_json::to_value(rollout(
            "checkout",
            "checkout-v1",
            "checkout-v2",
            "checkout",
        ))
        .expect("serializes"),
    ];
    client(objects).await
}

/// Set a Deployment's available replicas and keep them there (pods that do
/// not come up) until they reach the desired count again.
pub async fn set_available(
    client: &kube::Client,
    name: &str,
    available: i32,
) -> Result<(), kube::Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let want = api
        .get(name)
        .await?
        .spec
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let stuck = if available < want {
        json!("true")
    } else {
        serde_json::Value::Null
    };
    let marked = api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"rollwise.io/demo-stuck": stuck}}})),
        )
        .await?;
    let patch = json!({"status": {"observedGeneration": marked.metadata.generation, "updatedReplicas": want,
        "availableReplicas": available, "readyReplicas": available}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Weights of the route's backendRefs by Service name (absent weight = 1),
/// in the first rule.
pub async fn route_weights(
    client: &kube::Client,
    route: &str,
) -> Result<Vec<(String, i64)>, kube::Error> {
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &kube::api::ApiResource::erase::<HttpRoute>(&()),
    );
    let obj = api.get(route).await?;
    Ok(obj.data["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or_default().to_string(),
                        r["weight"].as_i64().unwrap_or(1),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// What the Deployment controller and the kubelet would do: every
/// Deployment's pods become available at its desired replica count. Skips
/// Deployments marked `rollwise.io/demo-stuck: "true"` (a canary that never
/// comes up).
pub async fn settle_deployments(client: &kube::Client) -> Result<(), kube::Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    for d in api.list(&Default::default()).await?.items {
        let name = d.metadata.name.clone().unwrap_or_default();
        let stuck = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("rollwise.io/demo-stuck"))
            .is_some_and(|v| v == "true");
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let generation = d.metadata.generation.unwrap_or(0);
        let st = d.status.clone().unwrap_or_default();
        if stuck
            || (st.observed_generation == Some(generation)
                && st.available_replicas == Some(want)
                && st.updated_replicas == Some(want))
        {
            continue;
        }
        let patch = serde_json::json!({"status": {"observedGeneration": generation, "replicas": want,
            "updatedReplicas": want, "readyReplicas": want, "availableReplicas": want}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}
