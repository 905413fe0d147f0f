//! Notifications on the real API server: `rollwise run` with `--notify-url`
//! pointing at a local webhook receiver and a per-Rollout webhook (URL in a
//! Secret, `events: [RolledBack]`), through a real rollback by the
//! canary-vs-stable comparison (`CanaryWorse`) decided on a real Prometheus
//! serving backfilled traffic.
//!
//! ```text
//! ROLLWISE_E2E_KUBECONFIG=/path/to/kubeconfig cargo test --test e2e_notify -- --nocapture
//! ```
//! Without a cluster the test prints one `SKIPPED` line and passes.

mod common;

use std::time::Duration;

use ::gateway_api::apis::standard::httproutes::HttpRoute;
use common::cluster::{OperatorOptions, TestNs, eventually, in_namespace};
use common::prometheus::{Backfill, PrometheusServer};
use common::receiver::Receiver;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ApiResource;
use rollwise::api::{Phase, Rollout};
use serde_json::{Value, json};

const STABLE: &str = "checkout-v1";
const CANARY: &str = "checkout-v2";
const ROLLOUT: &str = "checkout";
const TIMEOUT: Duration = Duration::from_secs(120);

/// 10 requests/s on each side; the canary fails 20% of them, stable none.
fn traffic(ns: &str) -> String {
    Backfill::new()
        .counter(
            "http_requests_total",
            &[("namespace", ns), ("service", CANARY), ("code", "200")],
            8.0,
        )
        .counter(
            "http_requests_total",
            &[("namespace", ns), ("service", CANARY), ("code", "500")],
            2.0,
        )
        .counter(
            "http_requests_total",
            &[("namespace", ns), ("service", STABLE), ("code", "200")],
            10.0,
        )
        .to_openmetrics()
}

fn rollout(ns: &str, prometheus: &str) -> Rollout {
    let sel = r#"service="{{service}}",namespace="{{namespace}}""#;
    serde_json::from_value(json!({
        "apiVersion": "rollwise.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": ROLLOUT, "namespace": ns},
        "spec": {
            "stable": {"service": STABLE, "deployment": STABLE},
            "canary": {"service": CANARY, "deployment": CANARY},
            "trafficRouting": {"gatewayAPI": {"httpRoute": "checkout"}},
            "steps": [{"setWeight": 20}, {"pause": {"duration": "10m"}}, {"setWeight": 100}],
            "analysis": {
                "interval": "5s",
                "prometheus": {"address": prometheus},
                "compare": [{
                    "name": "http-errors",
                    "requests": format!("sum(increase(http_requests_total{{{sel}}}[{{{{window}}}}]))"),
                    "failures": format!("sum(increase(http_requests_total{{{sel},code=~\"5..\"}}[{{{{window}}}}]))"),
                    "tolerance": 0.01
                }]
            },
            "notifications": {"webhooks": [
                {"name": "on-call", "urlFrom": {"name": "on-call-hook", "key": "url"},
                 "events": ["RolledBack"]}
            ]}
        }
    }))
    .expect("a valid Rollout")
}

fn route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "checkout"},
        "spec": {
            "parentRefs": [{"name": "e2e"}],
            "rules": [{"backendRefs": [{"name": STABLE, "port": 80}]}]
        }
    })
}

/// A canary twenty times worse than stable is rolled back by the
/// comparison (`CanaryWorse`), and both webhooks hear of it: the
/// operator-wide one (every notification: Started, StepAdvanced, then
/// RolledBack with the comparison's numbers) and the Rollout's own, whose
/// `events: [RolledBack]` lets only the rollback through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_by_the_comparison_notifies_every_webhook_that_wants_it() {
    in_namespace("notify", async |ns: &TestNs| {
        let everything = Receiver::start("/operator", 200).await;
        let on_call = Receiver::start("/on-call", 200).await;
        ns.versions(&[STABLE, CANARY], 1).await;
        ns.create_dynamic(&ApiResource::erase::<HttpRoute>(&()), route())
            .await;
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "on-call-hook"},
            "stringData": {"url": on_call.url}
        }))
        .expect("a Secret");
        ns.create(&secret).await;
        let data = traffic(&ns.name);
        let prometheus =
            tokio::task::spawn_blocking(move || PrometheusServer::start_with_openmetrics(&data))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        ns.note(format!("Prometheus at {}", prometheus.address()));
        ns.start_operator(
            OperatorOptions::new(&ns.cluster.kubeconfig)
                .namespace(&ns.name)
                .arg("--notify-url")
                .arg(&everything.url),
        )
        .await;
        ns.create(&rollout(&ns.name, &prometheus.address())).await;

        let r = ns.wait_phase(ROLLOUT, Phase::RolledBack, 0, TIMEOUT).await;
        let decision = r
            .status
            .as_ref()
            .and_then(|s| s.last_decision.clone())
            .expect("a last decision");
        assert_eq!(decision.reason, "CanaryWorse", "{decision:?}");

        eventually(
            "the rollback notification at both webhooks",
            Duration::from_secs(30),
            || {
                let (everything, on_call) = (everything.clone(), on_call.clone());
                async move {
                    let rolled_back =
                        |r: &Receiver| r.received().iter().any(|k| k == "RolledBack CanaryWorse");
                    if rolled_back(&everything) && rolled_back(&on_call) {
                        Ok(())
                    } else {
                        Err(format!(
                            "operator-wide: {:?}; on-call: {:?}",
                            everything.received(),
                            on_call.received()
                        ))
                    }
                }
            },
        )
        .await;
        let all = everything.received();
        assert_eq!(
            all.first().map(String::as_str),
            Some("Started RolloutStarted"),
            "{all:?}"
        );
        assert!(all.iter().any(|k| k.starts_with("StepAdvanced")), "{all:?}");
        assert_eq!(
            on_call.received(),
            ["RolledBack CanaryWorse"],
            "the Rollout's webhook wants only RolledBack"
        );
        let body = on_call.bodies().remove(0);
        assert_eq!(
            body["events"],
            json!(["RolledBack", "AnalysisFailed"]),
            "{body}"
        );
        let cmp = &body["comparisons"][0];
        assert_eq!(cmp["name"], "http-errors", "{body}");
        assert_eq!(cmp["verdict"], "Harm", "{body}");
        assert!(
            cmp["canaryFailures"].as_f64().unwrap_or(0.0) > 0.0,
            "the numbers travel with it: {body}"
        );
        tokio::task::spawn_blocking(move || drop(prometheus))
            .await
            .expect("Prometheus stops");
    })
    .await;
}
