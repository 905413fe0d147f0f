//! The features users rely on beyond a plain canary, on a real API server
//! (the realk8s kit of `scripts/test.sh`, or the cluster of
//! `ROLLWISE_E2E_KUBECONFIG`), with the operator running as the Helm chart
//! installs it: only the chart ServiceAccount's token, leader election on,
//! the chart's `routers.*` / `scaling.enabled` values turned on for what each
//! scenario needs, and any 403 from the API server failing the test.
//!
//! - blue/green (`spec.blueGreen`): the analysis runs on preview traffic at
//!   weight 0, then one switch to 100%; with `autoPromote: false` it waits
//!   for `kubectl rollwise promote`;
//! - header routes (`setHeaderRoute`): A/B routing of chosen users by header
//!   or cookie, on Gateway API, ingress-nginx and Istio, written into the
//!   objects as `docs/routers.md` says;
//! - draining: `stable.scaleDownAfter` (the old version scaled to 0 after the
//!   promotion, its count kept in `rollwise.io/scaled-down-from`),
//!   `canary.scaleDownOnRollback`, and the restore on `retry`;
//! - manual actions through the real `kubectl rollwise` plugin (found by
//!   `kubectl` on `PATH`, run with the admin kubeconfig as a user would):
//!   promote past a `pause: {}`, promote `--full`, abort, retry, pause and
//!   resume; exit codes, output, and what the operator does about it
//!   (status, route weights, Events).
//!
//! ```text
//! ROLLWISE_E2E_KUBECONFIG=/tmp/k8s/main/kubeconfig PATH=/tmp/k8s/main/bin:$PATH \
//!     cargo test --test install_features -- --nocapture
//! ```

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ::gateway_api::apis::standard::httproutes::HttpRoute;
use common::cluster::{Operator, TestNs, eventually, in_namespace, pretty, summary};
use common::install::Install;
use common::prometheus::{Backfill, PrometheusServer};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams};
use rollwise::api::{Phase, Rollout};
use serde_json::{Value, json};

const STABLE: &str = "checkout-v1";
const CANARY: &str = "checkout-v2";
const ROLLOUT: &str = "checkout";
/// The HTTPRoute, Ingress or VirtualService of each scenario.
const ROUTE: &str = "checkout";
const HOSTNAME: &str = "checkout.e2e.rollwise.test";
/// A backend of a second rule/path/route the operator must leave alone.
const OTHER_BACKEND: &str = "static-files";
/// Replicas of each version: a recorded count of 2 is not the API server's
/// default of 1.
const REPLICAS: i32 = 2;
/// The annotation the draining records the replica count in.
const SCALED_DOWN_FROM: &str = "rollwise.io/scaled-down-from";

/// The canary's error rate as the analysis queries it (a gauge).
const ERROR_RATE_QUERY: &str =
    r#"checkout_error_rate{namespace="{{namespace}}",service="{{service}}"}"#;
const MAX_ERROR_RATE: f64 = 0.05;
const HEALTHY_ERROR_RATE: f64 = 0.01;
const FAULTY_ERROR_RATE: f64 = 0.30;

const TIMEOUT: Duration = Duration::from_secs(90);
/// Events are published right after the status write that records the
/// transition.
const EVENTS_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Blue/green
// ---------------------------------------------------------------------------

/// Blue/green on Gateway API with a preview header route, analysis and
/// draining (`examples/blue-green/`): during the preview the canary weight
/// stays 0 while the analysis passes on the preview traffic and requests
/// with `x-preview: true` go to the new version; then one switch 0 → 100%
/// (no weight in between, the preview rule gone); after `scaleDownDelay` +
/// `scaleDownAfter` the old Deployment is scaled to 0 with its count in
/// `rollwise.io/scaled-down-from` (not before); `kubectl rollwise status
/// --watch --until-done` exits 0; a finished rollout cannot be aborted;
/// deleting the Rollout keeps the traffic on the new version (Event
/// `TrafficKept`); a new Rollout that names the drained version as its
/// canary restores its replica count first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switches_once_after_the_preview_analysis_and_drains_the_old_version() {
    in_namespace("bluegreen", async |ns: &TestNs| {
        ns.show("HTTPRoutes", http_route_resource());
        ns.versions(&[STABLE, CANARY], REPLICAS).await;
        let created = ns.create_dynamic(&http_route_resource(), http_route()).await;
        let prometheus = prometheus(ns, HEALTHY_ERROR_RATE).await;
        let (install, operator) = start_operator(
            ns,
            Needs {
                gateway_api: true,
                scaling: true,
                ..Needs::default()
            },
        )
        .await;
        let plugin = Plugin::new(ns);

        let preview = Duration::from_secs(6);
        let (scale_down_delay, scale_down_after) = (3, 2);
        ns.create(&rollout(json!({
            "stable": {"service": STABLE, "deployment": STABLE, "scaleDownAfter": format!("{scale_down_after}s")},
            "canary": {"service": CANARY, "deployment": CANARY},
            "trafficRouting": {"gatewayAPI": {"httpRoute": ROUTE}},
            "blueGreen": {
                "autoPromote": true,
                "previewDuration": format!("{}s", preview.as_secs()),
                "previewRoute": {"name": "preview", "match": [{"header": {"name": "x-preview", "value": "true"}}]},
                "scaleDownDelay": format!("{scale_down_delay}s"),
            },
            "analysis": analysis(&prometheus.address()),
        })))
        .await;
        // What a pipeline waits on: exit 0 once the rollout has succeeded.
        let watch = plugin.spawn(&["status", ROLLOUT, "--watch", "--until-done"]);

        // The preview: weight 0, the analysis passing on it, the header rule.
        let mut seen = Seen::default();
        until(ns, "the preview at weight 0 with a passing analysis", |r| {
            seen.record(r);
            let s = r.status.as_ref()?;
            (s.phase == Phase::Progressing
                && s.canary_weight == 0
                && metric_verdict(r, "error-rate") == Some("Pass"))
            .then_some(())
        })
        .await;
        let route = ns.dynamic(&http_route_resource()).get(ROUTE).await.unwrap();
        let rule = rule_named(&route, "rollwise-preview").unwrap_or_else(|| {
            panic!(
                "no rule rollwise-preview during the preview: {}",
                pretty(&route.data)
            )
        });
        assert_eq!(
            rule["matches"],
            json!([{
                "path": {"type": "PathPrefix", "value": "/checkout"},
                "headers": [{"type": "Exact", "name": "x-preview", "value": "true"}]
            }]),
            "the preview rule: the stable rule's match with the header added"
        );
        assert_eq!(
            backend_names(rule),
            vec![CANARY],
            "the preview rule sends only to the new version: {rule}"
        );
        assert_eq!(
            stable_rule_weights(&route),
            (Some(1), None),
            "(stable, canary) of the user's rule during the preview (as created: weight 1, no canary ref): {}",
            pretty(&route.data)
        );
        // From here on the route carries the preview rule: the only writes
        // left are the switch and the removal of the preview rule (no write
        // when the route already says what is wanted, however often the
        // analysis reconciles meanwhile).
        let patched = patches(&operator, "httproutes").await;
        // The switch.
        let (r, _) = until(ns, "phase Succeeded with 100% on the new version", |r| {
            seen.record(r);
            let s = r.status.as_ref()?;
            (s.phase == Phase::Succeeded && s.canary_weight == 100).then_some(())
        })
        .await;
        let completed = condition(&r, "Completed");
        assert_eq!(
            (completed.status.as_str(), completed.reason.as_str()),
            ("True", "AllStepsDone"),
            "{completed:?}"
        );
        let writes = patches(&operator, "httproutes").await - patched;
        assert!(
            writes <= 2.0,
            "{writes} PATCHes of the HTTPRoute from the first passing analysis to the end; at most 2 (the switch, the removal of the preview rule)"
        );
        assert_eq!(
            seen.weights,
            BTreeSet::from([0, 100]),
            "blue/green is one switch: the canary weights seen in status ({:?})",
            seen.weights
        );
        let s = r.status.as_ref().unwrap();
        let (since, done) = (
            s.canary_traffic_since.clone().expect("status.canaryTrafficSince").0,
            s.completed_at.clone().expect("status.completedAt").0,
        );
        assert!(
            since.duration_until(done) >= jiff::SignedDuration::try_from(preview).unwrap(),
            "the switch ({done}) came before previewDuration {preview:?} from the preview's start ({since})"
        );
        let route = ns.dynamic(&http_route_resource()).get(ROUTE).await.unwrap();
        assert_eq!(
            stable_rule_weights(&route),
            (Some(0), Some(100)),
            "(stable, canary) after the switch: {}",
            pretty(&route.data)
        );
        assert_user_rules_unchanged(&created, &route);
        let events =
            wait_events(ns, &["RolloutStarted", "HeaderRouteSet", "RolloutCompleted"]).await;
        let intermediate: Vec<&(String, String)> = events
            .iter()
            .filter(|(reason, note)| reason == "WeightChanged" && !note.ends_with("-> 100%"))
            .collect();
        assert!(
            intermediate.is_empty(),
            "blue/green moves no traffic but the one switch: {intermediate:?}"
        );

        // A finished rollout cannot be aborted (docs/plugin.md): going back
        // is a new rollout that names the old version as the canary.
        let err = plugin.fails(1, &["abort", ROLLOUT]).await;
        assert!(
            err.contains(
                "error: abort is not valid in phase Succeeded: nothing to abort: the rollout is Succeeded"
            ),
            "{err}"
        );
        assert_no_pending_action(ns).await;

        // The old version keeps its pods for scaleDownDelay + scaleDownAfter
        // after the promotion (status times are whole seconds: one second
        // of margin), then is drained.
        let completed_at = r.status.as_ref().unwrap().completed_at.clone().unwrap().0;
        let due = completed_at + jiff::SignedDuration::from_secs(scale_down_delay + scale_down_after);
        let before_due = due - jiff::SignedDuration::from_secs(1);
        if let Ok(wait) = Duration::try_from(jiff::Timestamp::now().duration_until(before_due)) {
            tokio::time::sleep(wait).await;
        }
        assert_eq!(
            replicas_and_record(&deployment(ns, STABLE).await),
            (REPLICAS, None),
            "the old version 1s before the drain is due ({scale_down_delay}s + {scale_down_after}s after the promotion at {completed_at})"
        );
        until(ns, "the old version drained", |r| {
            r.status
                .as_ref()
                .is_some_and(|s| s.stable_scaled_down)
                .then_some(())
        })
        .await;
        let stable = deployment(ns, STABLE).await;
        assert_eq!(
            replicas_and_record(&stable),
            (0, Some(REPLICAS.to_string())),
            "the old version after draining: spec.replicas 0, its count in {SCALED_DOWN_FROM}"
        );
        assert_eq!(
            replicas_and_record(&deployment(ns, CANARY).await),
            (REPLICAS, None),
            "the new version is not touched"
        );
        wait_events(ns, &["StableScaledDown"]).await;
        let watched = watch.wait().await;
        assert_eq!(
            watched.code,
            Some(0),
            "{} ends with 0 when the rollout succeeded:\n{}{}",
            watched.command,
            tail_of(&watched.stdout),
            watched.stderr
        );
        assert!(
            tail_of(&watched.stdout).contains("Succeeded"),
            "the last frame of {}:\n{}",
            watched.command,
            tail_of(&watched.stdout)
        );

        // Deleting the Rollout keeps the traffic where it is.
        delete_rollout(ns).await;
        wait_gone(ns, &operator).await;
        let route = ns.dynamic(&http_route_resource()).get(ROUTE).await.unwrap();
        assert_eq!(
            stable_rule_weights(&route),
            (Some(0), Some(100)),
            "a deleted Rollout whose promotion drained the old version keeps traffic on the new one: {}",
            pretty(&route.data)
        );
        wait_events(ns, &["TrafficKept"]).await;

        // Going back to the drained version: a new Rollout naming it as the
        // canary first restores its recorded replica count.
        ns.create(&rollout(json!({
            "stable": {"service": CANARY, "deployment": CANARY},
            "canary": {"service": STABLE, "deployment": STABLE},
            "trafficRouting": {"gatewayAPI": {"httpRoute": ROUTE}},
            "steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}],
        })))
        .await;
        let r = wait_paused_at(ns, 1, 50).await;
        assert_eq!(
            replicas_and_record(&deployment(ns, STABLE).await),
            (REPLICAS, None),
            "the drained version named as the canary again: its count restored, the record removed"
        );
        assert!(
            !r.status.as_ref().unwrap().stable_scaled_down,
            "{}",
            summary(&r)
        );
        let route = ns.dynamic(&http_route_resource()).get(ROUTE).await.unwrap();
        assert_eq!(
            stable_rule_weights(&route),
            (Some(50), Some(50)),
            "(checkout-v1, checkout-v2) with checkout-v1 as the canary at 50%: {}",
            pretty(&route.data)
        );
        install.finish(ns, &[&operator]).await;
    })
    .await;
}

/// Blue/green with `autoPromote: false` on ingress-nginx, the preview route
/// (cookie `preview=always`, the only cookie value ingress-nginx matches) in
/// the canary Ingress at weight 0: the analysis passes, the preview duration
/// passes, and it still waits (phase Paused) until `kubectl rollwise
/// promote`; then one switch to 100% and the preview route is gone.
/// A second promote or an abort of the finished rollout is refused (exit 1)
/// and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_without_auto_promote_waits_for_kubectl_rollwise_promote() {
    in_namespace("bluegreen-manual", async |ns: &TestNs| {
        ns.show("Ingresses", ingress_resource());
        ns.versions(&[STABLE, CANARY], 1).await;
        let user_ingress = ns.create_dynamic(&ingress_resource(), ingress()).await;
        let prometheus = prometheus(ns, HEALTHY_ERROR_RATE).await;
        let (install, operator) = start_operator(
            ns,
            Needs {
                nginx: true,
                ..Needs::default()
            },
        )
        .await;
        let plugin = Plugin::new(ns);

        ns.create(&rollout(json!({
            "stable": {"service": STABLE, "deployment": STABLE},
            "canary": {"service": CANARY, "deployment": CANARY},
            "trafficRouting": {"nginx": {"ingress": ROUTE}},
            "blueGreen": {
                "autoPromote": false,
                "previewDuration": "2s",
                "previewRoute": {"name": "preview", "match": [{"cookie": {"name": "preview", "value": "always"}}]},
            },
            "analysis": analysis(&prometheus.address()),
        })))
        .await;

        // Two passing analysis rounds at weight 0, well past previewDuration:
        // still waiting for a person.
        let first = until(ns, "a passing analysis during the preview", |r| {
            let s = r.status.as_ref()?;
            (metric_verdict(r, "error-rate") == Some("Pass"))
                .then(|| s.last_analysis_at.clone())
                .flatten()
        })
        .await
        .1;
        let patched = patches(&operator, "ingresses").await;
        let (r, _) = until(ns, "a second passing analysis round", |r| {
            let s = r.status.as_ref()?;
            (metric_verdict(r, "error-rate") == Some("Pass")
                && s.last_analysis_at.as_ref().is_some_and(|t| t.0 > first.0))
            .then_some(())
        })
        .await;
        let s = r.status.clone().unwrap();
        assert_eq!(
            (s.phase, s.canary_weight),
            (Phase::Paused, 0),
            "autoPromote false: waiting for promote at weight 0: {}",
            summary(&r)
        );
        assert_eq!(
            s.last_decision.as_ref().map(|d| d.reason.as_str()),
            Some("ManualPause"),
            "{}",
            summary(&r)
        );
        // Waiting for a person is a transition people are told about (an
        // Event, and the `paused` notification that follows it).
        wait_events(ns, &["Paused"]).await;
        assert_eq!(
            patches(&operator, "ingresses").await,
            patched,
            "PATCHes of Ingresses between two analysis rounds: the canary Ingress already said what was wanted"
        );
        let canary = canary_ingress(ns).await.unwrap_or_else(|| {
            panic!("no canary Ingress {} during the preview", canary_ingress_name())
        });
        assert_eq!(
            nginx_annotations(&canary),
            json!({
                "nginx.ingress.kubernetes.io/canary": "true",
                "nginx.ingress.kubernetes.io/canary-weight": "0",
                "nginx.ingress.kubernetes.io/canary-weight-total": "100",
                "nginx.ingress.kubernetes.io/canary-by-cookie": "preview",
            }),
            "the canary Ingress during the preview: {}",
            pretty(&canary.data)
        );
        assert_eq!(
            canary_backend(&canary),
            Some(CANARY.to_string()),
            "the canary Ingress's backend: {}",
            pretty(&canary.data)
        );

        let out = plugin.ok(&["promote", ROLLOUT]).await;
        assert!(
            out.contains(
                "promote requested: the operator will skip step 2/3 (pause until promoted) and go on with step 3/3 (setWeight 100%)"
            ),
            "promote's output:\n{out}"
        );
        let (r, _) = until(ns, "Succeeded at 100% after the promote", |r| {
            let s = r.status.as_ref()?;
            (s.phase == Phase::Succeeded && s.canary_weight == 100).then_some(())
        })
        .await;
        let action = r.status.as_ref().unwrap().last_action.clone().unwrap();
        assert_eq!(
            (action.action.as_str(), action.result.as_str()),
            ("promote", "Done"),
            "{action:?}"
        );
        assert!(
            !r.annotations().contains_key("rollwise.io/action"),
            "the operator removes the one-shot annotation: {:?}",
            r.annotations()
        );
        let canary = canary_ingress(ns).await.expect("the canary Ingress at 100%");
        assert_eq!(
            nginx_annotations(&canary),
            json!({
                "nginx.ingress.kubernetes.io/canary": "true",
                "nginx.ingress.kubernetes.io/canary-weight": "100",
                "nginx.ingress.kubernetes.io/canary-weight-total": "100",
            }),
            "the canary Ingress after the switch: all traffic, no header route: {}",
            pretty(&canary.data)
        );
        wait_events(ns, &["Promoted", "RolloutCompleted"]).await;
        assert_eq!(
            ns.dynamic(&ingress_resource())
                .get(ROUTE)
                .await
                .unwrap()
                .data["spec"],
            user_ingress.data["spec"],
            "the user's Ingress is only read"
        );

        // Finished: nothing left to promote or abort.
        let err = plugin.fails(1, &["promote", ROLLOUT]).await;
        assert!(
            err.contains(
                "error: promote is not valid in phase Succeeded: the rollout is Succeeded (nothing left to promote)"
            ),
            "{err}"
        );
        let err = plugin.fails(1, &["abort", ROLLOUT]).await;
        assert!(
            err.contains(
                "error: abort is not valid in phase Succeeded: nothing to abort: the rollout is Succeeded"
            ),
            "{err}"
        );
        assert_no_pending_action(ns).await;
        install.finish(ns, &[&operator]).await;
    })
    .await;
}

/// Blue/green on Istio with a cookie preview route and a canary that fails
/// its analysis during the preview: rolled back before any switch (the
/// driven route never carried the new version), the preview entry removed,
/// `kubectl rollwise status --watch --until-done` exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_preview_that_fails_its_analysis_is_rolled_back_before_any_switch() {
    in_namespace("bluegreen-fail", async |ns: &TestNs| {
        ns.cluster
            .require_crds(
                &["virtualservices.networking.istio.io"],
                common::cluster::ROUTER_CRDS_HINT,
            )
            .await;
        ns.show("VirtualServices", virtual_service_resource());
        ns.versions(&[STABLE, CANARY], 1).await;
        let vs_api = ns.dynamic(&virtual_service_resource());
        let created = ns
            .create_dynamic(&virtual_service_resource(), virtual_service())
            .await;
        let prometheus = prometheus(ns, FAULTY_ERROR_RATE).await;
        let (install, operator) = start_operator(
            ns,
            Needs {
                istio: true,
                ..Needs::default()
            },
        )
        .await;
        let plugin = Plugin::new(ns);

        let mut analysis = analysis(&prometheus.address());
        // Room to see the preview entry before the first look.
        analysis["interval"] = json!("4s");
        ns.create(&rollout(json!({
            "stable": {"service": STABLE, "deployment": STABLE},
            "canary": {"service": CANARY, "deployment": CANARY},
            "trafficRouting": {"istio": {"virtualService": ROUTE, "routes": ["primary"]}},
            "blueGreen": {
                "previewDuration": "1m",
                "previewRoute": {"name": "preview", "match": [{"cookie": {"name": "preview", "value": "1"}}]},
            },
            "analysis": analysis,
        })))
        .await;
        let watch = plugin.spawn(&["status", ROLLOUT, "--watch", "--until-done"]);

        let entry = eventually("the preview entry in the VirtualService", TIMEOUT, || async {
            let vs = vs_api.get(ROUTE).await.map_err(|e| format!("get: {e}"))?;
            let http = vs.data["spec"]["http"].as_array().cloned().unwrap_or_default();
            http.first()
                .filter(|h| h["name"] == "rollwise-preview")
                .cloned()
                .ok_or_else(|| format!("http: {}", pretty(&http)))
        })
        .await;
        assert_eq!(
            entry["match"],
            json!([{"headers": {"cookie": {"regex": r"^(.*?;\s*)?(preview=1)(;.*)?$"}}}]),
            "{}",
            pretty(&entry)
        );
        assert_eq!(
            entry["route"],
            json!([{"destination": {"host": CANARY, "port": {"number": 80}}, "weight": 100}]),
            "{}",
            pretty(&entry)
        );

        let patched = patches(&operator, "virtualservices").await;
        let (r, _) = until(ns, "rolled back during the preview", |r| {
            let s = r.status.as_ref()?;
            (s.phase == Phase::RolledBack).then_some(())
        })
        .await;
        let s = r.status.clone().unwrap();
        assert_eq!(s.canary_weight, 0, "{}", summary(&r));
        assert_eq!(s.current_step_index, 1, "rolled back in the preview step: {}", summary(&r));
        let rolled_back = condition(&r, "RolledBack");
        assert_eq!(
            (rolled_back.status.as_str(), rolled_back.reason.as_str()),
            ("True", "AnalysisFailed"),
            "{rolled_back:?}"
        );
        assert_eq!(metric_verdict(&r, "error-rate"), Some("Fail"));
        let vs = eventually("the preview entry removed", TIMEOUT, || async {
            let vs = vs_api.get(ROUTE).await.map_err(|e| format!("get: {e}"))?;
            if vs.data["spec"]["http"] == created.data["spec"]["http"] {
                Ok(vs)
            } else {
                Err(pretty(&vs.data["spec"]["http"]))
            }
        })
        .await;
        assert_eq!(
            vs.data["spec"], created.data["spec"],
            "after the rollback the VirtualService is as created: the new version never had regular traffic"
        );
        let writes = patches(&operator, "virtualservices").await - patched;
        assert_eq!(
            writes, 1.0,
            "PATCHes of the VirtualService from the preview to the rollback: only the removal of the preview entry"
        );
        let watched = watch.wait().await;
        assert_eq!(
            watched.code,
            Some(1),
            "{} ends with 1 when the rollout was rolled back:\n{}{}",
            watched.command,
            tail_of(&watched.stdout),
            watched.stderr
        );
        assert!(
            tail_of(&watched.stdout).contains("RolledBack"),
            "{}",
            tail_of(&watched.stdout)
        );
        wait_events(ns, &["HeaderRouteSet", "AnalysisFailed"]).await;
        install.finish(ns, &[&operator]).await;
    })
    .await;
}

/// `stable.scaleDownAfter` after a plain canary (no blue/green): once the
/// last step is done the old version is drained that long after the
/// promotion, with nothing else happening in the namespace meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_promotion_drains_the_old_version_after_scale_down_after() {
    in_namespace("drain", async |ns: &TestNs| {
        ns.show("HTTPRoutes", http_route_resource());
        ns.versions(&[STABLE, CANARY], REPLICAS).await;
        ns.create_dynamic(&http_route_resource(), http_route())
            .await;
        let (install, operator) = start_operator(
            ns,
            Needs {
                gateway_api: true,
                scaling: true,
                ..Needs::default()
            },
        )
        .await;
        ns.create(&rollout(json!({
            "stable": {"service": STABLE, "deployment": STABLE, "scaleDownAfter": "3s"},
            "canary": {"service": CANARY, "deployment": CANARY},
            "trafficRouting": {"gatewayAPI": {"httpRoute": ROUTE}},
            "steps": [{"setWeight": 50}, {"setWeight": 100}],
        })))
        .await;
        let (r, _) = until(ns, "Succeeded at 100%", |r| {
            let s = r.status.as_ref()?;
            (s.phase == Phase::Succeeded && s.canary_weight == 100).then_some(())
        })
        .await;
        assert_eq!(
            replicas_and_record(&deployment(ns, STABLE).await),
            (REPLICAS, None),
            "the old version right after the promotion: {}",
            summary(&r)
        );
        until(ns, "the old version drained 3s after the promotion", |r| {
            r.status
                .as_ref()
                .is_some_and(|s| s.stable_scaled_down)
                .then_some(())
        })
        .await;
        assert_eq!(
            replicas_and_record(&deployment(ns, STABLE).await),
            (0, Some(REPLICAS.to_string()))
        );
        wait_events(ns, &["RolloutCompleted", "StableScaledDown"]).await;
        install.finish(ns, &[&operator]).await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// Header routes and manual actions
// ---------------------------------------------------------------------------

/// A/B routing on Gateway API driven by hand with `kubectl rollwise`:
/// beta users (two headers, ANDed) reach the canary at weight 0 and wait
/// (`pause: {}`) for `promote`; then 20% for everyone besides; `pause` holds
/// it (a promote is refused meanwhile), `resume` lets it go on; the beta
/// route is removed by its step; `promote --full` ends at 100% with the user's
/// rules exactly as they were. `retry` while progressing is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_route_on_gateway_api_with_promote_pause_resume_and_promote_full() {
    in_namespace("ab-gateway", async |ns: &TestNs| {
        ns.show("HTTPRoutes", http_route_resource());
        ns.versions(&[STABLE, CANARY], 1).await;
        let created = ns.create_dynamic(&http_route_resource(), http_route()).await;
        let (install, operator) = start_operator(
            ns,
            Needs {
                gateway_api: true,
                ..Needs::default()
            },
        )
        .await;
        let plugin = Plugin::new(ns);
        let route_api = ns.dynamic(&http_route_resource());

        ns.create(&rollout(json!({
            "stable": {"service": STABLE, "deployment": STABLE},
            "canary": {"service": CANARY, "deployment": CANARY},
            "trafficRouting": {"gatewayAPI": {"httpRoute": ROUTE}},
            "steps": [
                {"setHeaderRoute": {"name": "beta", "match": [
                    {"header": {"name": "x-beta", "value": "true"}},
                    {"header": {"name": "x-team", "value": "qa"}},
                ]}},
                {"pause": {}},
                {"setWeight": 20},
                {"pause": {}},
                {"setHeaderRoute": {"name": "beta"}},
                {"setWeight": 50},
                {"pause": {}},
                {"setWeight": 100},
            ],
        })))
        .await;

        // Beta users only, until promoted.
        wait_paused_at(ns, 1, 0).await;
        let route = route_api.get(ROUTE).await.unwrap();
        let rule_names: Vec<Value> = rules(&route).iter().map(|r| r["name"].clone()).collect();
        assert_eq!(
            rule_names,
            vec![json!("rollwise-beta"), Value::Null, Value::Null],
            "the A/B rule comes first, then the user's two rules: {}",
            pretty(&route.data)
        );
        let beta = &rules(&route)[0];
        assert_eq!(
            beta["matches"],
            json!([{
                "path": {"type": "PathPrefix", "value": "/checkout"},
                "headers": [
                    {"type": "Exact", "name": "x-beta", "value": "true"},
                    {"type": "Exact", "name": "x-team", "value": "qa"},
                ]
            }]),
            "the A/B rule: the stable rule's match with both headers (AND)"
        );
        assert_eq!(backend_names(beta), vec![CANARY], "{beta}");
        assert_eq!(stable_rule_weights(&route), (Some(1), None));

        // `retry` makes no sense while the rollout runs.
        let err = plugin.fails(1, &["retry", ROLLOUT]).await;
        assert!(
            err.contains("error: retry is not valid in phase Paused: retry applies after a rollback or abort; the rollout is Paused"),
            "{err}"
        );
        assert_no_pending_action(ns).await;

        let out = plugin.ok(&["promote", ROLLOUT]).await;
        assert!(
            out.contains("promote requested: the operator will skip step 2/8 (pause until promoted) and go on with step 3/8 (setWeight 20%)"),
            "{out}"
        );
        wait_paused_at(ns, 3, 20).await;
        let route = route_api.get(ROUTE).await.unwrap();
        assert_eq!(stable_rule_weights(&route), (Some(80), Some(20)));
        assert!(
            rule_named(&route, "rollwise-beta").is_some(),
            "the A/B rule stays while its route is active: {}",
            pretty(&route.data)
        );

        // pause / resume.
        let out = plugin.ok(&["pause", ROLLOUT]).await;
        assert!(
            out.contains(&format!(
                "rollout {}/{ROLLOUT} paused (spec.paused=true)",
                ns.name
            )),
            "{out}"
        );
        let (r, _) = until(ns, "paused by spec.paused", |r| {
            let s = r.status.as_ref()?;
            (r.spec.paused
                && s.last_decision.as_ref().is_some_and(|d| d.reason == "PausedBySpec"))
            .then_some(())
        })
        .await;
        let paused = condition(&r, "Paused");
        assert_eq!(
            (paused.status.as_str(), paused.reason.as_str()),
            ("True", "PausedBySpec"),
            "{paused:?}"
        );
        let err = plugin.fails(1, &["promote", ROLLOUT]).await;
        assert!(
            err.contains(&format!(
                "error: promote is not valid in phase Paused: spec.paused is true: resume it first (kubectl rollwise resume {ROLLOUT})"
            )),
            "{err}"
        );
        assert_no_pending_action(ns).await;
        let out = plugin.ok(&["pause", ROLLOUT]).await;
        assert!(out.contains("is already paused"), "{out}");
        let out = plugin.ok(&["resume", ROLLOUT]).await;
        assert!(
            out.contains(&format!(
                "rollout {}/{ROLLOUT} resumed (spec.paused=false)",
                ns.name
            )),
            "{out}"
        );
        until(ns, "back at the manual pause after resume", |r| {
            let s = r.status.as_ref()?;
            (!r.spec.paused
                && s.phase == Phase::Paused
                && s.current_step_index == 3
                && s.last_decision.as_ref().is_some_and(|d| d.reason == "ManualPause"))
            .then_some(())
        })
        .await;
        assert_eq!(
            stable_rule_weights(&route_api.get(ROUTE).await.unwrap()),
            (Some(80), Some(20)),
            "pause and resume do not move traffic"
        );

        // On past the removal of the A/B route to 50%, then everything.
        plugin.ok(&["promote", ROLLOUT]).await;
        wait_paused_at(ns, 6, 50).await;
        let route = route_api.get(ROUTE).await.unwrap();
        assert!(
            rule_named(&route, "rollwise-beta").is_none(),
            "setHeaderRoute without match removes the A/B rule: {}",
            pretty(&route.data)
        );
        assert_eq!(stable_rule_weights(&route), (Some(50), Some(50)));

        let out = plugin.ok(&["promote", "--full", ROLLOUT]).await;
        assert!(
            out.contains("promote-full requested: the operator will skip the remaining steps (7-8) and send 100% of traffic to the canary (checkout-v2)"),
            "{out}"
        );
        let (r, _) = until(ns, "Succeeded at 100% after promote --full", |r| {
            let s = r.status.as_ref()?;
            (s.phase == Phase::Succeeded && s.canary_weight == 100).then_some(())
        })
        .await;
        let completed = condition(&r, "Completed");
        assert_eq!(
            (completed.status.as_str(), completed.reason.as_str()),
            ("True", "PromotedByHand"),
            "{completed:?}"
        );
        let action = r.status.as_ref().unwrap().last_action.clone().unwrap();
        assert_eq!(
            (action.action.as_str(), action.result.as_str()),
            ("promote-full", "Done"),
            "{action:?}"
        );
        let route = route_api.get(ROUTE).await.unwrap();
        assert_eq!(stable_rule_weights(&route), (Some(0), Some(100)));
        assert_user_rules_unchanged(&created, &route);
        wait_events(ns, &[
                "HeaderRouteSet",
                "Paused",
                "Promoted",
                "WeightChanged",
                "HeaderRouteRemoved",
                "RolloutCompleted",
            ]).await;
        let status = plugin.ok(&["get", "rollout", ROLLOUT]).await;
        assert!(
            status.contains("Succeeded") && status.contains("Last action  promote-full Done"),
            "kubectl rollwise status:\n{status}"
        );
        install.finish(ns, &[&operator]).await;
    })
    .await;
}

/// A/B routing on ingress-nginx with `canary.scaleDownOnRollback`, aborted
/// and retried with `kubectl rollwise`: the canary Ingress carries the header
/// route and the weight; `abort` sends all traffic back (the canary Ingress
/// is deleted), the phase is Aborted and the canary Deployment is drained
/// with its count recorded; `retry` restores the count, removes the record
/// and starts again from step 1; a second abort of the aborted rollout is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_route_on_nginx_abort_drains_the_canary_and_retry_restores_it() {
    in_namespace("ab-nginx", async |ns: &TestNs| {
        ns.show("Ingresses", ingress_resource());
        ns.versions(&[STABLE, CANARY], REPLICAS).await;
        let user_ingress = ns.create_dynamic(&ingress_resource(), ingress()).await;
        let (install, operator) = start_operator(
            ns,
            Needs {
                nginx: true,
                scaling: true,
                ..Needs::default()
            },
        )
        .await;
        let plugin = Plugin::new(ns);

        ns.create(&rollout(json!({
            "stable": {"service": STABLE, "deployment": STABLE},
            "canary": {"service": CANARY, "deployment": CANARY, "scaleDownOnRollback": true},
            "trafficRouting": {"nginx": {"ingress": ROUTE}},
            "steps": [
                {"setHeaderRoute": {"name": "beta", "match": [{"header": {"name": "x-beta", "value": "1"}}]}},
                {"setWeight": 20},
                {"pause": {}},
                {"setWeight": 100},
            ],
        })))
        .await;

        wait_paused_at(ns, 2, 20).await;
        let beta_at_20 = json!({
            "nginx.ingress.kubernetes.io/canary": "true",
            "nginx.ingress.kubernetes.io/canary-weight": "20",
            "nginx.ingress.kubernetes.io/canary-weight-total": "100",
            "nginx.ingress.kubernetes.io/canary-by-header": "x-beta",
            "nginx.ingress.kubernetes.io/canary-by-header-value": "1",
        });
        let canary = canary_ingress(ns).await.expect("the canary Ingress at 20%");
        assert_eq!(
            nginx_annotations(&canary),
            beta_at_20,
            "{}",
            pretty(&canary.data)
        );
        assert_eq!(
            canary.labels().get("app.kubernetes.io/managed-by").map(String::as_str),
            Some("rollwise"),
            "{:?}",
            canary.labels()
        );

        // Abort: everything back on stable, the canary drained.
        let out = plugin.ok(&["abort", ROLLOUT]).await;
        assert!(
            out.contains("abort requested: the operator will send all traffic back to stable (checkout-v1) and set the phase to Aborted"),
            "{out}"
        );
        let (r, _) = until(ns, "Aborted, weight 0, the canary scaled down", |r| {
            let s = r.status.as_ref()?;
            (s.phase == Phase::Aborted && s.canary_weight == 0 && s.canary_scaled_down)
                .then_some(())
        })
        .await;
        let rolled_back = condition(&r, "RolledBack");
        assert_eq!(
            (rolled_back.status.as_str(), rolled_back.reason.as_str()),
            ("True", "Aborted"),
            "{rolled_back:?}"
        );
        assert!(
            canary_ingress(ns).await.is_none(),
            "abort deletes the canary Ingress (no weight, no header route)"
        );
        assert_eq!(
            replicas_and_record(&deployment(ns, CANARY).await),
            (0, Some(REPLICAS.to_string())),
            "canary.scaleDownOnRollback: the aborted canary at 0, its count recorded"
        );
        assert_eq!(
            replicas_and_record(&deployment(ns, STABLE).await),
            (REPLICAS, None),
            "the stable version is not touched"
        );
        let err = plugin.fails(1, &["abort", ROLLOUT]).await;
        assert!(
            err.contains("error: abort is not valid in phase Aborted: nothing to abort: the rollout is Aborted"),
            "{err}"
        );
        let err = plugin.fails(1, &["promote", ROLLOUT]).await;
        assert!(
            err.contains("error: promote is not valid in phase Aborted: the rollout is Aborted (use `retry` to start it again)"),
            "{err}"
        );
        assert_no_pending_action(ns).await;
        let list = plugin.ok(&["list"]).await;
        assert!(
            list.lines().any(|l| l.starts_with(ROLLOUT) && l.contains("Aborted")),
            "kubectl rollwise list:\n{list}"
        );

        // Retry: the canary comes back and the rollout starts over.
        let out = plugin.ok(&["retry", ROLLOUT]).await;
        assert!(
            out.contains("retry requested: the operator will start checkout-v2 again from step 1/4 (setHeaderRoute) with all traffic on stable first"),
            "{out}"
        );
        let canary_deployment = eventually(
            "the canary's replicas restored",
            TIMEOUT,
            || async {
                let d = deployment(ns, CANARY).await;
                match replicas_and_record(&d) {
                    (REPLICAS, None) => Ok(d),
                    other => Err(format!("(replicas, record) = {other:?}")),
                }
            },
        )
        .await;
        assert_eq!(replicas_and_record(&canary_deployment), (REPLICAS, None));
        let r = wait_paused_at(ns, 2, 20).await;
        let s = r.status.as_ref().unwrap();
        assert!(
            !s.canary_scaled_down,
            "status.canaryScaledDown is cleared on retry"
        );
        let action = s.last_action.clone().unwrap();
        assert_eq!(
            (action.action.as_str(), action.result.as_str()),
            ("retry", "Done"),
            "{action:?}"
        );
        let canary = canary_ingress(ns).await.expect("the canary Ingress again");
        assert_eq!(nginx_annotations(&canary), beta_at_20);
        wait_events(ns, &["HeaderRouteSet", "WeightChanged", "Paused", "Aborted", "Retry"]).await;
        assert_eq!(
            ns.dynamic(&ingress_resource())
                .get(ROUTE)
                .await
                .unwrap()
                .data["spec"],
            user_ingress.data["spec"],
            "the user's Ingress is only read"
        );
        install.finish(ns, &[&operator]).await;
    })
    .await;
}

/// A/B routing on Istio by a header and a cookie: an `http` entry
/// `rollwise-beta` ahead of the driven route (Istio takes the first match),
/// header names lower-cased, the cookie as a regex on the `cookie` header,
/// the canary at weight 100; `promote` moves the driven route to 70/30 (the
/// A/B entry stays); `abort` returns it to 100/0 and removes the entry;
/// `retry` starts over with the entry; deleting the Rollout mid-way removes
/// it again and leaves all traffic on stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_cookie_route_on_istio_removed_on_abort_and_on_delete() {
    in_namespace("ab-istio", async |ns: &TestNs| {
        ns.cluster
            .require_crds(
                &["virtualservices.networking.istio.io"],
                common::cluster::ROUTER_CRDS_HINT,
            )
            .await;
        ns.show("VirtualServices", virtual_service_resource());
        ns.versions(&[STABLE, CANARY], 1).await;
        let vs_api = ns.dynamic(&virtual_service_resource());
        let created = ns
            .create_dynamic(&virtual_service_resource(), virtual_service())
            .await;
        let (install, operator) = start_operator(
            ns,
            Needs {
                istio: true,
                ..Needs::default()
            },
        )
        .await;
        let plugin = Plugin::new(ns);

        ns.create(&rollout(json!({
            "stable": {"service": STABLE, "deployment": STABLE},
            "canary": {"service": CANARY, "deployment": CANARY},
            "trafficRouting": {"istio": {"virtualService": ROUTE, "routes": ["primary"]}},
            "steps": [
                {"setHeaderRoute": {"name": "beta", "match": [
                    {"header": {"name": "X-Beta", "value": "true"}},
                    {"cookie": {"name": "beta", "value": "1"}},
                ]}},
                {"pause": {}},
                {"setWeight": 30},
                {"pause": {}},
                {"setWeight": 100},
            ],
        })))
        .await;

        wait_paused_at(ns, 1, 0).await;
        let vs = vs_api.get(ROUTE).await.unwrap();
        let http = vs.data["spec"]["http"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let names: Vec<&Value> = http.iter().map(|h| &h["name"]).collect();
        assert_eq!(
            names,
            vec!["rollwise-beta", "primary", "static"],
            "the A/B entry first: {}",
            pretty(&vs.data)
        );
        assert_eq!(
            http[0]["match"],
            json!([{"headers": {
                "x-beta": {"exact": "true"},
                "cookie": {"regex": r"^(.*?;\s*)?(beta=1)(;.*)?$"},
            }}]),
            "one match block, header lower-cased, cookie as a regex: {}",
            pretty(&http[0])
        );
        assert_eq!(
            http[0]["route"],
            json!([{"destination": {"host": CANARY, "port": {"number": 80}}, "weight": 100}]),
            "{}",
            pretty(&http[0])
        );
        assert_eq!(
            http[1], created.data["spec"]["http"][0],
            "the driven route at weight 0 is as created"
        );
        assert_eq!(http[2], created.data["spec"]["http"][1], "the other route");

        plugin.ok(&["promote", ROLLOUT]).await;
        wait_paused_at(ns, 3, 30).await;
        let vs = vs_api.get(ROUTE).await.unwrap();
        assert_eq!(
            istio_weights(&vs, "primary"),
            (Some(70), Some(30)),
            "{}",
            pretty(&vs.data)
        );
        assert_eq!(vs.data["spec"]["http"][0]["name"], "rollwise-beta");

        plugin.ok(&["abort", ROLLOUT]).await;
        until(ns, "Aborted at 0%", |r| {
            let s = r.status.as_ref()?;
            (s.phase == Phase::Aborted && s.canary_weight == 0).then_some(())
        })
        .await;
        let vs = vs_api.get(ROUTE).await.unwrap();
        let (stable, canary) = istio_weights(&vs, "primary");
        assert!(
            stable == Some(100) && canary.unwrap_or(0) == 0,
            "abort sends all traffic back to stable: {}",
            pretty(&vs.data)
        );
        assert_eq!(
            http_names(&vs),
            vec!["primary", "static"],
            "abort removes the A/B entry: {}",
            pretty(&vs.data)
        );
        assert_eq!(vs.data["spec"]["http"][1], created.data["spec"]["http"][1]);
        assert_eq!(vs.data["spec"]["hosts"], created.data["spec"]["hosts"]);

        plugin.ok(&["retry", ROLLOUT]).await;
        wait_paused_at(ns, 1, 0).await;
        let vs = vs_api.get(ROUTE).await.unwrap();
        assert_eq!(
            http_names(&vs),
            vec!["rollwise-beta", "primary", "static"],
            "retry starts over with the A/B entry: {}",
            pretty(&vs.data)
        );

        delete_rollout(ns).await;
        wait_gone(ns, &operator).await;
        let vs = vs_api.get(ROUTE).await.unwrap();
        let (stable, canary) = istio_weights(&vs, "primary");
        assert!(
            stable == Some(100) && canary.unwrap_or(0) == 0,
            "deleting the Rollout returns all traffic to stable: {}",
            pretty(&vs.data)
        );
        assert_eq!(
            http_names(&vs),
            vec!["primary", "static"],
            "deleting the Rollout removes the A/B entry: {}",
            pretty(&vs.data)
        );
        wait_events(
            ns,
            &[
                "HeaderRouteSet",
                "Promoted",
                "Aborted",
                "Retry",
                "TrafficRestored",
            ],
        )
        .await;
        install.finish(ns, &[&operator]).await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// The operator, and the plugin
// ---------------------------------------------------------------------------

/// What a scenario needs turned on in the chart.
#[derive(Debug, Clone, Copy, Default)]
struct Needs {
    gateway_api: bool,
    nginx: bool,
    istio: bool,
    scaling: bool,
}

/// The chart installed with Helm in the test's namespace (watching only
/// it), each router and the draining turned on only when the scenario needs
/// them, and `rollwise run` as one of its replicas would run: only the chart
/// ServiceAccount's token, leader election on the release's Lease.
async fn start_operator(ns: &TestNs, needs: Needs) -> (Install, Arc<Operator>) {
    let on = |b: bool| if b { "true" } else { "false" };
    let install = Install::helm(
        &ns.cluster,
        &ns.name,
        &[
            ("routers.gatewayAPI", on(needs.gateway_api)),
            ("routers.nginx", on(needs.nginx)),
            ("routers.istio", on(needs.istio)),
            ("scaling.enabled", on(needs.scaling)),
        ],
    )
    .await;
    ns.note(format!(
        "helm release {} with {:?}",
        install.release, install.values
    ));
    let operator = ns
        .start_operator(install.operator_options(&ns.name).await)
        .await;
    (install, operator)
}

/// `kubectl rollwise ...` as a user runs it: kubectl finds the plugin binary
/// of this build on `PATH`; the admin kubeconfig; the test's namespace.
struct Plugin {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    namespace: String,
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    command: String,
}

impl Plugin {
    fn new(ns: &TestNs) -> Plugin {
        let dir = tempfile::Builder::new()
            .prefix("rollwise-e2e-plugin-")
            .tempdir()
            .expect("create a temporary directory");
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_kubectl-rollwise"),
            dir.path().join("kubectl-rollwise"),
        )
        .expect("link the plugin into the PATH directory");
        Plugin {
            dir,
            kubeconfig: ns.cluster.kubeconfig.clone(),
            namespace: ns.name.clone(),
        }
    }

    /// The command, and how it is shown.
    fn command(&self, args: &[&str]) -> (Command, String) {
        let path = std::env::join_paths(std::iter::once(self.dir.path().to_path_buf()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .expect("a PATH");
        let mut command = Command::new("kubectl");
        command
            .arg("rollwise")
            .args(args)
            .args(["-n", &self.namespace])
            .env("PATH", path)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("COLUMNS", "200")
            .env("NO_COLOR", "1");
        let shown = format!("kubectl rollwise {} -n {}", args.join(" "), self.namespace);
        (command, shown)
    }

    async fn run(&self, args: &[&str]) -> Run {
        let (mut command, shown) = self.command(args);
        let out = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("the command runs")
            .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
        let run = Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            command: shown,
        };
        eprintln!(
            "[e2e] $ {} -> exit {:?}\n{}{}",
            run.command, run.code, run.stdout, run.stderr
        );
        run
    }

    /// Exit 0; its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert_eq!(
            run.code,
            Some(0),
            "{} failed:\nstdout:\n{}\nstderr:\n{}",
            run.command,
            run.stdout,
            run.stderr
        );
        run.stdout
    }

    /// Exit `code` and nothing on stdout; its stderr.
    async fn fails(&self, code: i32, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert_eq!(
            run.code,
            Some(code),
            "{}: expected exit {code}:\nstdout:\n{}\nstderr:\n{}",
            run.command,
            run.stdout,
            run.stderr
        );
        assert!(
            run.stdout.is_empty(),
            "{} printed a result: {}",
            run.command,
            run.stdout
        );
        run.stderr
    }

    /// Start a command that runs on its own (`status --watch`); its output
    /// goes to files of this plugin's directory.
    fn spawn(&self, args: &[&str]) -> Watching {
        let (mut command, shown) = self.command(args);
        static SPAWNED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let base = self.dir.path().join(format!(
            "spawned-{}",
            SPAWNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let (out, err) = (base.with_extension("out"), base.with_extension("err"));
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("create the output file"))
            .stderr(std::fs::File::create(&err).expect("create the error file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
        eprintln!("[e2e] $ {shown} &");
        Watching {
            child,
            command: shown,
            out,
            err,
        }
    }
}

/// A plugin command running on its own; killed when dropped.
struct Watching {
    child: std::process::Child,
    command: String,
    out: PathBuf,
    err: PathBuf,
}

impl Watching {
    /// Wait (bounded) for it to exit.
    async fn wait(mut self) -> Run {
        let deadline = std::time::Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll the plugin") {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not exit within {TIMEOUT:?}; its last frame:\n{}",
                self.command,
                tail_of(&std::fs::read_to_string(&self.out).unwrap_or_default())
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let run = Run {
            code: status.code(),
            stdout: std::fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.err).unwrap_or_default(),
            command: self.command.clone(),
        };
        eprintln!(
            "[e2e] {} -> exit {:?}; last frame:\n{}{}",
            run.command,
            run.code,
            tail_of(&run.stdout),
            run.stderr
        );
        run
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last frame of a `status --watch` output (after the last screen
/// clear).
fn tail_of(output: &str) -> &str {
    output
        .rsplit_once(rollwise::cli::CLEAR)
        .map_or(output, |(_, last)| last)
}

// ---------------------------------------------------------------------------
// Waiting and reading
// ---------------------------------------------------------------------------

/// Poll the Rollout until `check` returns `Some`, failing at once when an
/// operator died; any phase may pass by (unlike `TestNs::wait_rollout`, a
/// terminal phase is not an error here: a retry leaves one).
async fn until<T>(
    ns: &TestNs,
    what: &str,
    mut check: impl FnMut(&Rollout) -> Option<T>,
) -> (Rollout, T) {
    let deadline = common::cluster::Deadline::new(format!("Rollout {ROLLOUT}: {what}"), TIMEOUT);
    let mut last = String::new();
    loop {
        ns.check_operators();
        let r = ns.rollout(ROLLOUT).await;
        let line = summary(&r);
        if line != last {
            eprintln!("[e2e] {}/{ROLLOUT}: {line}", ns.name);
            last = line.clone();
        }
        if let Some(v) = check(&r) {
            return (r, v);
        }
        deadline.wait(line).await;
    }
}

/// Phase Paused (a `pause: {}` step) at step index `index` with `weight`.
async fn wait_paused_at(ns: &TestNs, index: i32, weight: i32) -> Rollout {
    until(
        ns,
        &format!("paused at step {} with {weight}%", index + 1),
        |r| {
            let s = r.status.as_ref()?;
            (s.phase == Phase::Paused && s.current_step_index == index && s.canary_weight == weight)
                .then_some(())
        },
    )
    .await
    .0
}

/// The canary weights (carried and desired) seen in status.
#[derive(Default)]
struct Seen {
    weights: BTreeSet<i32>,
}

impl Seen {
    fn record(&mut self, r: &Rollout) {
        if let Some(s) = &r.status {
            self.weights.insert(s.canary_weight);
            self.weights.insert(s.desired_weight);
        }
    }
}

/// A refused `kubectl rollwise` action leaves no `rollwise.io/action`
/// annotation for the operator.
async fn assert_no_pending_action(ns: &TestNs) {
    let r = ns.rollout(ROLLOUT).await;
    assert!(
        !r.annotations()
            .contains_key(rollwise::api::ACTION_ANNOTATION),
        "a refused action wrote the annotation: {:?}",
        r.annotations()
    );
}

/// The operator's successful PATCH requests on `resource` so far (its
/// `rollwise_kube_requests_total`).
async fn patches(operator: &Operator, resource: &str) -> f64 {
    operator
        .metric_sum(
            "rollwise_kube_requests_total",
            &[("verb", "patch"), ("resource", resource), ("code", "200")],
        )
        .await
}

async fn delete_rollout(ns: &TestNs) {
    ns.api::<Rollout>()
        .delete(ROLLOUT, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("cannot delete Rollout {ROLLOUT}: {e}"));
}

/// The operator's finalizer lets the deleted Rollout go.
async fn wait_gone(ns: &TestNs, operator: &Operator) {
    let rollouts = ns.raw_rollouts();
    eventually("the deleted Rollout to go", TIMEOUT, || {
        let rollouts = rollouts.clone();
        async move {
            operator.check_alive();
            match rollouts.get_opt(ROLLOUT).await {
                Ok(None) => Ok(()),
                Ok(Some(r)) => Err(format!("still there: finalizers {:?}", r.finalizers())),
                Err(e) => Err(format!("get: {e}")),
            }
        }
    })
    .await;
}

/// `(reason, note)` of the Events about the Rollout, oldest first.
async fn rollout_events(ns: &TestNs) -> Vec<(String, String)> {
    let mut events: Vec<Event> = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("cannot list Events: {e}"))
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|o| {
                o.kind.as_deref() == Some("Rollout") && o.name.as_deref() == Some(ROLLOUT)
            })
        })
        .collect();
    events.sort_by_key(|e| {
        e.event_time
            .as_ref()
            .map(|t| t.0)
            .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    });
    events
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// The Rollout's Events once every one of `reasons` is among them (the
/// operator publishes them after its status write).
async fn wait_events(ns: &TestNs, reasons: &[&str]) -> Vec<(String, String)> {
    eventually(&format!("Events {reasons:?}"), EVENTS_TIMEOUT, || async {
        let events = rollout_events(ns).await;
        let missing: Vec<&&str> = reasons
            .iter()
            .filter(|r| !events.iter().any(|(reason, _)| reason == *r))
            .collect();
        if missing.is_empty() {
            Ok(events)
        } else {
            Err(format!(
                "{missing:?} missing; the Rollout's Events: {events:#?}"
            ))
        }
    })
    .await
}

fn condition<'a>(r: &'a Rollout, type_: &str) -> &'a Condition {
    let conditions = r
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:?}"))
}

fn metric_verdict<'a>(r: &'a Rollout, name: &str) -> Option<&'a str> {
    r.status
        .as_ref()?
        .analysis
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.verdict.as_str())
}

async fn deployment(ns: &TestNs, name: &str) -> Deployment {
    ns.api::<Deployment>()
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("cannot read Deployment {name}: {e}"))
}

/// `spec.replicas` and the `rollwise.io/scaled-down-from` annotation.
fn replicas_and_record(d: &Deployment) -> (i32, Option<String>) {
    (
        d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        d.annotations().get(SCALED_DOWN_FROM).cloned(),
    )
}

// ---------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------

fn rollout(spec: Value) -> Rollout {
    serde_json::from_value(json!({
        "apiVersion": "rollwise.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": ROLLOUT},
        "spec": spec,
    }))
    .expect("a valid Rollout")
}

/// The canary's error rate every 2 s, against the test's Prometheus.
fn analysis(prometheus: &str) -> Value {
    json!({
        "interval": "2s",
        "prometheus": {"address": prometheus},
        "metrics": [{"name": "error-rate", "query": ERROR_RATE_QUERY, "max": MAX_ERROR_RATE}],
    })
}

/// A Prometheus serving `checkout_error_rate` = `rate` for the canary.
async fn prometheus(ns: &TestNs, rate: f64) -> PrometheusServer {
    let data = Backfill::new()
        .gauge(
            "checkout_error_rate",
            &[("namespace", &ns.name), ("service", CANARY)],
            rate,
        )
        .gauge(
            "checkout_error_rate",
            &[("namespace", &ns.name), ("service", STABLE)],
            rate,
        )
        .to_openmetrics();
    let server =
        tokio::task::spawn_blocking(move || PrometheusServer::start_with_openmetrics(&data))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    ns.note(format!(
        "Prometheus at {} (canary error rate {rate})",
        server.address()
    ));
    server
}

fn http_route_resource() -> ApiResource {
    ApiResource::erase::<HttpRoute>(&())
}

fn ingress_resource() -> ApiResource {
    ApiResource::erase::<Ingress>(&())
}

fn virtual_service_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    )
}

/// `/checkout` to the stable Service, and a second rule the operator must
/// leave alone.
fn http_route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "labels": {"team": "checkout"}},
        "spec": {
            "parentRefs": [{"name": "e2e"}],
            "hostnames": [HOSTNAME],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/checkout"}}],
                    "backendRefs": [{"name": STABLE, "port": 80}]
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                    "backendRefs": [{"name": OTHER_BACKEND, "port": 80}]
                }
            ]
        }
    })
}

/// The user's Ingress: `/checkout` to the stable Service, `/static`
/// elsewhere.
fn ingress() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {
            "name": ROUTE,
            "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "8m"}
        },
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{
                "host": HOSTNAME,
                "http": {"paths": [
                    {"path": "/checkout", "pathType": "Prefix",
                     "backend": {"service": {"name": STABLE, "port": {"number": 80}}}},
                    {"path": "/static", "pathType": "Prefix",
                     "backend": {"service": {"name": OTHER_BACKEND, "port": {"number": 80}}}}
                ]}
            }]
        }
    })
}

fn virtual_service() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": ROUTE},
        "spec": {
            "hosts": [HOSTNAME],
            "http": [
                {
                    "name": "primary",
                    "match": [{"uri": {"prefix": "/checkout"}}],
                    "route": [{"destination": {"host": STABLE, "port": {"number": 80}}, "weight": 100}]
                },
                {
                    "name": "static",
                    "route": [{"destination": {"host": OTHER_BACKEND, "port": {"number": 80}}}]
                }
            ]
        }
    })
}

// ---------------------------------------------------------------------------
// Route checks
// ---------------------------------------------------------------------------

fn rules(route: &DynamicObject) -> Vec<Value> {
    route.data["spec"]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn rule_named<'a>(route: &'a DynamicObject, name: &str) -> Option<&'a Value> {
    route.data["spec"]["rules"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == name)
}

fn backend_names(rule: &Value) -> Vec<&str> {
    rule["backendRefs"]
        .as_array()
        .map(|refs| refs.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default()
}

/// `(stable, canary)` weights of the user's `/checkout` rule (the unnamed
/// rule with the stable Service); an absent weight is 1.
fn stable_rule_weights(route: &DynamicObject) -> (Option<i64>, Option<i64>) {
    let rule = rules(route)
        .into_iter()
        .find(|r| r["name"].is_null() && backend_names(r).contains(&STABLE))
        .unwrap_or_else(|| {
            panic!(
                "no user rule with the stable Service: {}",
                pretty(&route.data)
            )
        });
    let weight = |service: &str| {
        rule["backendRefs"]
            .as_array()
            .and_then(|refs| refs.iter().find(|r| r["name"] == service))
            .map(|r| r.get("weight").and_then(Value::as_i64).unwrap_or(1))
    };
    (weight(STABLE), weight(CANARY))
}

/// The user's rules (not `rollwise-*`) are as created, but for the weights
/// and the canary ref of the stable rule.
fn assert_user_rules_unchanged(created: &DynamicObject, now: &DynamicObject) {
    fn masked(route: &DynamicObject) -> Vec<Value> {
        rules(route)
            .into_iter()
            .filter(|r| {
                !r["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("rollwise-"))
            })
            .map(|mut r| {
                if let Some(refs) = r["backendRefs"].as_array_mut() {
                    refs.retain(|b| b["name"] != CANARY);
                    for b in refs.iter_mut().filter(|b| b["name"] == STABLE) {
                        b.as_object_mut().map(|o| o.remove("weight"));
                    }
                }
                r
            })
            .collect()
    }
    assert_eq!(
        masked(now),
        masked(created),
        "the user's rules changed beyond the weights"
    );
    assert!(
        !rules(now).iter().any(|r| r["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("rollwise-"))),
        "no rollwise rule is left: {}",
        pretty(&now.data)
    );
    assert_eq!(
        now.data["spec"]["hostnames"],
        created.data["spec"]["hostnames"]
    );
    assert_eq!(
        now.data["spec"]["parentRefs"],
        created.data["spec"]["parentRefs"]
    );
    assert_eq!(now.metadata.labels, created.metadata.labels);
}

fn canary_ingress_name() -> String {
    rollwise::traffic::nginx::canary_ingress_name(ROUTE, CANARY)
}

async fn canary_ingress(ns: &TestNs) -> Option<DynamicObject> {
    ns.dynamic(&ingress_resource())
        .get_opt(&canary_ingress_name())
        .await
        .unwrap_or_else(|e| panic!("cannot read the canary Ingress: {e}"))
}

/// The `nginx.ingress.kubernetes.io/canary*` annotations, as a JSON object.
fn nginx_annotations(ingress: &DynamicObject) -> Value {
    let map: serde_json::Map<String, Value> = ingress
        .annotations()
        .iter()
        .filter(|(k, _)| k.starts_with("nginx.ingress.kubernetes.io/canary"))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Value::Object(map)
}

/// The Service of the canary Ingress's only path.
fn canary_backend(ingress: &DynamicObject) -> Option<String> {
    let paths = ingress.data["spec"]["rules"][0]["http"]["paths"].as_array()?;
    (paths.len() == 1).then(|| {
        paths[0]["backend"]["service"]["name"]
            .as_str()
            .map(String::from)
    })?
}

/// The names of the VirtualService's `http` routes, in order.
fn http_names(vs: &DynamicObject) -> Vec<&str> {
    vs.data["spec"]["http"]
        .as_array()
        .map(|h| h.iter().filter_map(|e| e["name"].as_str()).collect())
        .unwrap_or_default()
}

/// `(stable, canary)` destination weights of the named http route.
fn istio_weights(vs: &DynamicObject, route: &str) -> (Option<i64>, Option<i64>) {
    let entry = vs.data["spec"]["http"]
        .as_array()
        .and_then(|h| h.iter().find(|e| e["name"] == route))
        .unwrap_or_else(|| panic!("no http route {route}: {}", pretty(&vs.data)));
    let weight = |host: &str| {
        entry["route"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["destination"]["host"] == host))
            .map(|d| d["weight"].as_i64().unwrap_or(0))
    };
    (weight(STABLE), weight(CANARY))
}
