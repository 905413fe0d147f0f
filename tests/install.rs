//! The chart installed as users install it, on the real API server: `helm
//! install` of `charts/rollwise` (CRD included), then `rollwise run` out of
//! cluster with nothing but a token of the chart's ServiceAccount, leader
//! election on the chart's Lease, and the environment of the chart's
//! Deployment (see `tests/common/install.rs`). Any 403 the operator meets
//! fails the test: the chart's RBAC is proven to be enough.
//!
//! - one complete canary per router whose kinds the server has (Gateway API,
//!   ingress-nginx, Istio, SMI, Traefik) and the `replicas` router, each with
//!   only its own `routers.*` value on: the weights on the router's object as
//!   `docs/routers.md` says at each step, the status and conditions, the
//!   Events, the Lease, and stable traffic restored when the Rollout is
//!   deleted; Gateway API and nginx with an analysis against a real
//!   Prometheus; Istio with a per-Rollout webhook whose URL is in a Secret
//!   and the chart's operator-wide webhook; Traefik with the release in a
//!   namespace of its own, watching the test's. Every rule the chart grants
//!   is used by the run (the operator's `rollwise_kube_requests_total`), so
//!   none is there for nothing;
//! - the chart's defaults (all namespaces: a ClusterRole);
//! - a router the chart leaves off is refused by the API server (and the
//!   403 check sees it);
//! - `helm upgrade` mid-rollout, the CRD upgrade the README gives, and
//!   `helm uninstall` (what stays, what cannot be deleted, how to finish).
//!
//! ```text
//! ROLLWISE_E2E_KUBECONFIG=/path/to/kubeconfig cargo test --test install -- --nocapture
//! ```
//!
//! Needs `helm` (scripts/install-test-deps.sh) and the router CRDs of the
//! kit (`scripts/test.sh` applies them). Without a cluster every test prints
//! one `SKIPPED:` line and passes.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::{
    Cluster, Operator, TestNs, deployment, eventually, in_namespace, pretty, service, unique_suffix,
};
use common::install::{Install, assert_no_forbidden, forbidden_lines, forbidden_report};
use common::prometheus::{Backfill, PrometheusServer};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::events::v1::Event as NewEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use rollwise::api::{FINALIZER, Phase, Rollout};
use serde_json::{Value, json};

const STABLE: &str = "checkout-v1";
const CANARY: &str = "checkout-v2";
const ROLLOUT: &str = "checkout";
/// The name of every router object (HTTPRoute, Ingress, ...).
const ROUTE: &str = "checkout";
const HOST: &str = "shop.example.com";
/// The nginx router's canary Ingress: `<ingress>-<canary Service>-canary`.
const CANARY_INGRESS: &str = "checkout-checkout-v2-canary";
/// Pods of the stable Deployment for the replicas router: 25% steps.
const REPLICAS_TOTAL: i64 = 4;

const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(90);

/// The steps of every test Rollout: 25%, held until promoted by hand (so
/// the route can be checked mid-way), 50% for 2 s, 100%. Weights that 4
/// pods express exactly (the replicas router).
fn steps() -> Value {
    json!([
        {"setWeight": 25},
        {"pause": {}},
        {"setWeight": 50},
        {"pause": {"duration": "2s"}},
        {"setWeight": 100}
    ])
}

const ERROR_RATE_QUERY: &str = concat!(
    r#"sum(rate(http_requests_total{service="{{service}}",namespace="{{namespace}}",code=~"5.."}[1m]))"#,
    " / ",
    r#"sum(rate(http_requests_total{service="{{service}}",namespace="{{namespace}}"}[1m]))"#,
);
const MAX_ERROR_RATE: f64 = 0.05;
const CANARY_ERROR_RATE: f64 = 0.01;

// ---------------------------------------------------------------------------
// One complete canary per router, each with only its own chart value on
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_canary_runs_under_the_chart_rbac() {
    in_namespace("inst-gw", async |ns: &TestNs| {
        complete_canary(
            ns,
            Router::GatewayApi,
            Checks {
                analysis: true,
                ..Checks::default()
            },
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_canary_runs_under_the_chart_rbac() {
    in_namespace("inst-nginx", async |ns: &TestNs| {
        complete_canary(
            ns,
            Router::Nginx,
            Checks {
                analysis: true,
                ..Checks::default()
            },
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_canary_runs_under_the_chart_rbac() {
    in_namespace("inst-istio", async |ns: &TestNs| {
        complete_canary(
            ns,
            Router::Istio,
            Checks {
                webhooks: true,
                ..Checks::default()
            },
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smi_canary_runs_under_the_chart_rbac() {
    in_namespace("inst-smi", async |ns: &TestNs| {
        complete_canary(ns, Router::Smi, Checks::default()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_canary_runs_under_the_chart_rbac() {
    in_namespace("inst-traefik", async |ns: &TestNs| {
        complete_canary(
            ns,
            Router::Traefik,
            Checks {
                release_namespace: true,
                ..Checks::default()
            },
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_canary_runs_under_the_chart_rbac() {
    in_namespace("inst-replicas", async |ns: &TestNs| {
        complete_canary(ns, Router::Replicas, Checks::default()).await;
    })
    .await;
}

/// `helm install` with the chart's defaults (all namespaces: a ClusterRole
/// and ClusterRoleBinding, Gateway API): the operator, still started with
/// `--namespace` to stay out of the other tests' way, runs a canary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_defaults_grant_a_cluster_role_that_is_enough() {
    in_namespace("inst-cluster", async |ns: &TestNs| {
        complete_canary(
            ns,
            Router::GatewayApi,
            Checks {
                values: &[("watchNamespaces", "[]")],
                ..Checks::default()
            },
        )
        .await;
    })
    .await;
}

/// The steps every router goes through: install with only that router on,
/// the two versions and the router's object, the operator under the
/// chart's identity, a Rollout held at 25% (checked), promoted by hand to
/// 100% (checked), then deleted (stable restored, checked).
/// What a [`complete_canary`] adds to the router's own checks.
#[derive(Default)]
struct Checks {
    /// More chart values.
    values: &'static [(&'static str, &'static str)],
    /// An analysis against a real Prometheus (1% errors, limit 5%).
    analysis: bool,
    /// A per-Rollout webhook whose URL is in a Secret (read by the operator
    /// under the chart's `secrets: get`) and the chart's operator-wide
    /// webhook (`notifications.webhook.existingSecret`): both are called.
    webhooks: bool,
    /// The release in a namespace of its own (ServiceAccount, Deployment,
    /// Lease there), watching the test's namespace (the Role there).
    release_namespace: bool,
}

/// A namespace besides the test's, deleted on drop.
struct OtherNamespace {
    cluster: Cluster,
    name: String,
}

impl OtherNamespace {
    async fn create(cluster: &Cluster, label: &str) -> OtherNamespace {
        OtherNamespace {
            cluster: cluster.clone(),
            name: cluster.create_namespace(label).await,
        }
    }
}

impl Drop for OtherNamespace {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl()
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}

async fn complete_canary(ns: &TestNs, router: Router, checks: Checks) {
    let Checks {
        values,
        analysis,
        webhooks,
        release_namespace,
    } = checks;
    router.show(ns);
    let mut all_values = router.chart_values();
    all_values.extend_from_slice(values);
    // Dropped after the release (declared before it): deleted last.
    let other_ns = if release_namespace {
        Some(OtherNamespace::create(&ns.cluster, "inst-rel").await)
    } else {
        None
    };
    let install_ns = other_ns
        .as_ref()
        .map_or(ns.name.clone(), |o| o.name.clone());
    let watch = format!("[{:?}]", ns.name);
    if other_ns.is_some() {
        all_values.push(("watchNamespaces", &watch));
    }
    let hooks = if webhooks {
        assert!(other_ns.is_none(), "webhooks: one namespace");
        let hooks = Webhooks::start().await;
        ns.create(&hooks.secret(&ns.name)).await;
        all_values.push(("notifications.webhook.existingSecret", HOOKS_SECRET));
        all_values.push(("notifications.webhook.key", OPERATOR_HOOK_KEY));
        Some(hooks)
    } else {
        None
    };
    let install = Install::helm(&ns.cluster, &install_ns, &all_values).await;
    ns.note(format!("helm release {} ({all_values:?})", install.release));
    if values.contains(&("watchNamespaces", "[]")) {
        assert_cluster_role(&install).await;
    } else {
        assert_role_in(&install, &ns.name).await;
    }
    let created = router.setup(ns).await;
    let prometheus = if analysis {
        Some(start_prometheus(ns).await)
    } else {
        None
    };
    let op = ns
        .start_operator(install.operator_options(&ns.name).await)
        .await;
    let mut r = rollout(
        &ns.name,
        router.traffic_routing(),
        prometheus.as_ref().map(|p| p.address()),
    );
    if webhooks {
        r.spec.notifications = Some(
            serde_json::from_value(json!({"webhooks": [{
                "name": "team",
                "urlFrom": {"name": HOOKS_SECRET, "key": ROLLOUT_HOOK_KEY}
            }]}))
            .expect("a notification spec"),
        );
    }
    ns.create(&r).await;

    let r = ns
        .wait_phase(ROLLOUT, Phase::Paused, 25, ROLLOUT_TIMEOUT)
        .await;
    assert!(
        r.finalizers().iter().any(|f| f == FINALIZER),
        "the operator adds its finalizer: {:?}",
        r.finalizers()
    );
    assert_condition(&r, "Paused", "True");
    router.expect(ns, 25, &created).await;
    assert_lease_held_by(&install, &op).await;

    // A promote is refused (Warning ActionRefused) while the canary is not
    // available: the replicas router has just scaled it up.
    ns.wait_deployments_available(&[STABLE, CANARY]).await;
    promote(ns);
    let r = ns
        .wait_phase(ROLLOUT, Phase::Succeeded, 100, ROLLOUT_TIMEOUT)
        .await;
    assert_succeeded(&r, analysis);
    router.expect(ns, 100, &created).await;
    assert_events_published(ns).await;
    if let Some(hooks) = &hooks {
        for path in ["/rollout", "/operator"] {
            hooks.wait_promoted(ns, path).await;
        }
    }

    // Deleting the Rollout: the finalizer restores stable traffic under the
    // chart's RBAC; then no 403 anywhere, and `helm uninstall`.
    let granted = install.granted();
    let made = install.finish(ns, &[&op]).await;
    assert_every_rule_used(&granted, &made[0], webhooks);
    router.expect_restored(ns, &created).await;
    drop(prometheus);
}

// ---------------------------------------------------------------------------
// RBAC: a router that is off is refused, and the 403 check sees it
// ---------------------------------------------------------------------------

/// With `routers.gatewayAPI=false` the chart grants nothing on HTTPRoutes:
/// a Gateway API Rollout does not move any traffic (the API server refuses
/// the operator) and says why (Ready=False, RouteNotUsable, the refusal),
/// as the chart's README says; the check every test ends with catches the
/// 403; `helm upgrade --set routers.gatewayAPI=true` lets it go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_turned_off_in_the_chart_is_refused() {
    in_namespace("inst-off", async |ns: &TestNs| {
        let router = Router::GatewayApi;
        router.show(ns);
        let install = Install::helm(
            &ns.cluster,
            &ns.name,
            &[
                ("routers.gatewayAPI", "false"),
                ("routers.replicas", "true"),
            ],
        )
        .await;
        let created = router.setup(ns).await;
        let op = ns
            .start_operator(install.operator_options(&ns.name).await)
            .await;
        ns.create(&rollout(&ns.name, router.traffic_routing(), None))
            .await;
        let log = eventually(
            "the operator's log to report the refused HTTPRoute call",
            ROLLOUT_TIMEOUT,
            || async {
                ns.check_operators();
                let log = op.log();
                let refused = forbidden_lines(&log)
                    .iter()
                    .any(|l| l.contains("httproutes"));
                if refused {
                    Ok(log)
                } else {
                    Err(format!("{} log lines", log.lines().count()))
                }
            },
        )
        .await;
        // The user sees why: Ready=False, the refusal in the message; no
        // traffic moved.
        let r = ns
            .wait_rollout(
                ROLLOUT,
                "Ready=False naming the refusal",
                ROLLOUT_TIMEOUT,
                |r| {
                    r.status.as_ref().is_some_and(|s| {
                        s.conditions.iter().any(|c| {
                            c.type_ == "Ready"
                                && c.status == "False"
                                && c.message.contains("forbidden")
                        })
                    })
                },
            )
            .await;
        let ready = condition(&r, "Ready");
        assert_eq!(ready.reason, "RouteNotUsable", "{ready:?}");
        assert!(ready.message.contains("httproutes"), "{ready:?}");
        let status = r.status.clone().unwrap_or_default();
        assert_eq!(status.canary_weight, 0, "{}", pretty(&status));
        router.expect(ns, 0, &created).await;
        // The check every other test ends with fails here.
        assert!(
            forbidden_report(&op).await.is_some(),
            "the 403 check passed although the log has:\n{}",
            forbidden_lines(&log).join("\n")
        );
        // Turning the router on with `helm upgrade` is enough: the same
        // operator goes on.
        install
            .upgrade(&[("routers.gatewayAPI", "true")])
            .unwrap_or_else(|e| panic!("{e}"));
        ns.wait_phase(ROLLOUT, Phase::Paused, 25, ROLLOUT_TIMEOUT)
            .await;
        router.expect(ns, 25, &created).await;
        op.kill();
        install.uninstall().unwrap_or_else(|e| panic!("{e}"));
    })
    .await;
}

// ---------------------------------------------------------------------------
// helm upgrade, the CRD upgrade, helm uninstall: as the chart's README says
// ---------------------------------------------------------------------------

/// `helm upgrade --reuse-values` mid-rollout with new values (one more
/// router, other settings): the Deployment's rolling update starts a replica
/// from the new manifest, then stops the old one (SIGTERM: it releases the
/// Lease); the new one takes the Lease at once and the Rollout goes on from
/// where it was, and the router the upgrade added works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_upgrade_mid_rollout_keeps_the_rollout_going() {
    in_namespace("inst-upgrade", async |ns: &TestNs| {
        Router::GatewayApi.show(ns);
        Router::Nginx.show(ns);
        let install = Install::helm(&ns.cluster, &ns.name, &[]).await;
        let created = Router::GatewayApi.setup(ns).await;
        let old = ns
            .start_operator(install.operator_options(&ns.name).await)
            .await;
        ns.create(&rollout(
            &ns.name,
            Router::GatewayApi.traffic_routing(),
            None,
        ))
        .await;
        ns.wait_phase(ROLLOUT, Phase::Paused, 25, ROLLOUT_TIMEOUT)
            .await;
        assert_lease_held_by(&install, &old).await;

        let out = install
            .upgrade(&[
                ("routers.nginx", "true"),
                ("concurrency", "4"),
                ("logLevel", "debug"),
            ])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.contains("REVISION: 2"), "{out}");
        let options = install.operator_options(&ns.name).await;
        assert!(
            options
                .env
                .contains(&("ROLLWISE_CONCURRENCY".to_string(), "4".to_string())),
            "the new replica runs with the upgraded values: {:?}",
            options.env
        );
        let new = ns.start_operator(options).await;
        old.signal("TERM");
        let status = old.wait_exit(Duration::from_secs(30)).await;
        assert!(
            status.success(),
            "the old replica exits 0 on SIGTERM: {status}"
        );
        // Released on SIGTERM: taken well before the 15 s the Lease lasts.
        eventually(
            "the new replica to take the released Lease",
            Duration::from_secs(8),
            || async {
                ns.check_operators();
                let leases: Api<Lease> = ns.api();
                let holder = leases
                    .get(&install.lease_name())
                    .await
                    .map_err(|e| e.to_string())?
                    .spec
                    .and_then(|s| s.holder_identity);
                let want = new.options.leader_election.as_ref().map(|l| l.1.clone());
                if holder == want {
                    Ok(())
                } else {
                    Err(format!("holder {holder:?}"))
                }
            },
        )
        .await;
        // Nothing moved back: still at 25%, then on to 100%.
        let r = ns.rollout(ROLLOUT).await;
        let status = r.status.clone().unwrap_or_default();
        assert_eq!(
            (
                status.phase,
                status.canary_weight,
                status.current_step_index
            ),
            (Phase::Paused, 25, 1),
            "{}",
            pretty(&status)
        );
        Router::GatewayApi.expect(ns, 25, &created).await;
        promote(ns);
        let r = ns
            .wait_phase(ROLLOUT, Phase::Succeeded, 100, ROLLOUT_TIMEOUT)
            .await;
        assert_succeeded(&r, false);
        Router::GatewayApi.expect(ns, 100, &created).await;

        // The upgrade granted the nginx router its rules: an nginx Rollout
        // runs (the Gateway API one deleted first: its finalizer restores
        // the HTTPRoute).
        delete_rollouts(ns, &[ROLLOUT]).await;
        Router::GatewayApi.expect_restored(ns, &created).await;
        let ingress = Router::Nginx.create_objects(ns).await;
        ns.create(&rollout(&ns.name, Router::Nginx.traffic_routing(), None))
            .await;
        ns.wait_phase(ROLLOUT, Phase::Paused, 25, ROLLOUT_TIMEOUT)
            .await;
        Router::Nginx.expect(ns, 25, &ingress).await;
        install.finish(ns, &[&old, &new]).await;
        Router::Nginx.expect_restored(ns, &ingress).await;
    })
    .await;
}

/// Helm installs `crds/` on the first install and never upgrades it; the
/// README's `kubectl apply --server-side --force-conflicts -f crds/` does
/// (without `--force-conflicts` the API server refuses: Helm 4 applied the
/// CRD server-side, so its fields belong to the manager `helm`). `helm
/// uninstall` leaves the CRD. Shown on a copy of the chart whose CRD is
/// renamed (a group of its own, deleted at the end): the CRD every other
/// test uses stays as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_upgrades_need_kubectl_apply_as_the_readme_says() {
    in_namespace("inst-crd", async |ns: &TestNs| {
        let chart = ProbeChart::new(&ns.cluster);
        let install = Install::helm_chart(&ns.cluster, &ns.name, chart.path(), &[]).await;
        assert_eq!(
            chart.served_description(),
            "version 1",
            "installed with the chart"
        );

        chart.next_version("version 2");
        install.upgrade(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            chart.served_description(),
            "version 1",
            "helm upgrade does not upgrade the CRD"
        );
        let crds = chart.path().join("crds");
        let crds = crds.to_str().expect("a UTF-8 path");
        let out = ns
            .cluster
            .kubectl()
            .args(["apply", "--server-side", "-f", crds])
            .output()
            .expect("run kubectl");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && text.contains("conflict with \"helm\""),
            "without --force-conflicts the apply conflicts with Helm's fields ({}): {text}",
            out.status
        );
        assert_eq!(chart.served_description(), "version 1");
        ns.cluster
            .kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", crds]);
        assert_eq!(
            chart.served_description(),
            "version 2",
            "the README's command upgrades the CRD"
        );

        // Another release of a chart whose CRD is older than the one
        // served (say, one release per namespace, installed from an older
        // checkout): Helm 4 applies crds/ without forcing, so the install
        // fails; with --skip-crds it installs and leaves the CRD alone.
        chart.write_crd("version 1");
        let err = Install::try_helm(&ns.cluster, &ns.name, chart.path(), &[], &[])
            .await
            .err()
            .expect("installing over a newer CRD fails");
        assert!(
            err.contains("conflict") && err.contains(".spec.versions"),
            "{err}"
        );
        let other = Install::try_helm(&ns.cluster, &ns.name, chart.path(), &[], &["--skip-crds"])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(chart.served_description(), "version 2");
        other.uninstall().unwrap_or_else(|e| panic!("{e}"));

        install.uninstall().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            chart.served_description(),
            "version 2",
            "helm uninstall leaves the CRD"
        );
    })
    .await;
}

/// `helm uninstall` mid-rollout, as the chart's README says: the operator
/// is gone, the CRD and the Rollouts stay, traffic stays where it was, a
/// deleted Rollout stays Terminating; removing the finalizer by hand lets
/// it go (its route untouched), installing the operator again finishes the
/// deletion (stable traffic restored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_uninstall_keeps_traffic_and_blocks_deletion_until_the_operator_is_back() {
    in_namespace("inst-uninstall", async |ns: &TestNs| {
        const BY_HAND: &str = "checkout-b";
        ns.show("HTTPRoutes", http_routes());
        let install = Install::helm(&ns.cluster, &ns.name, &[]).await;
        ns.versions(&[STABLE, CANARY], 1).await;
        for name in [ROLLOUT, BY_HAND] {
            ns.create_dynamic(&http_routes(), http_route(name)).await;
        }
        let op = ns
            .start_operator(install.operator_options(&ns.name).await)
            .await;
        for name in [ROLLOUT, BY_HAND] {
            ns.create(&rollout_named(
                &ns.name,
                name,
                json!({"gatewayAPI": {"httpRoute": name}}),
                None,
            ))
            .await;
        }
        for name in [ROLLOUT, BY_HAND] {
            ns.wait_phase(name, Phase::Paused, 25, ROLLOUT_TIMEOUT)
                .await;
        }
        assert_no_forbidden(&op).await;

        // The chart's Deployment goes, and with it the operator.
        op.kill();
        install.uninstall().unwrap_or_else(|e| panic!("{e}"));
        // Its pods go with the Deployment (garbage collection).
        let selector = format!("app.kubernetes.io/instance={}", install.release);
        eventually(
            "the release's objects and pods to be gone",
            Duration::from_secs(60),
            || async {
                let left = ns.cluster.kubectl_ok(&[
                    "get",
                    "deployment,pod,serviceaccount,role,rolebinding,service,poddisruptionbudget",
                    "-n",
                    &ns.name,
                    "-l",
                    &selector,
                    "-o",
                    "name",
                ]);
                if left.trim().is_empty() {
                    Ok(())
                } else {
                    Err(left)
                }
            },
        )
        .await;
        ns.cluster
            .kubectl_ok(&["get", "crd", "rollouts.rollwise.io", "-o", "name"]);
        // The Lease is the operator's, not the release's: it stays.
        ns.cluster
            .kubectl_ok(&["get", "lease", &install.lease_name(), "-n", &ns.name]);
        for name in [ROLLOUT, BY_HAND] {
            let r = ns.rollout(name).await;
            let status = r.status.clone().unwrap_or_default();
            assert_eq!((status.phase, status.canary_weight), (Phase::Paused, 25));
            assert_eq!(
                gateway_weights(ns, name).await,
                (Some(75), Some(25)),
                "traffic stays where it is"
            );
        }

        ns.cluster.kubectl_ok(&[
            "delete",
            "rollouts.rollwise.io",
            ROLLOUT,
            BY_HAND,
            "-n",
            &ns.name,
            "--wait=false",
        ]);
        tokio::time::sleep(Duration::from_secs(3)).await;
        for name in [ROLLOUT, BY_HAND] {
            let r = ns.rollout(name).await;
            assert!(
                r.metadata.deletion_timestamp.is_some() && r.finalizers() == [FINALIZER],
                "{name} stays Terminating, held by {FINALIZER}: {:?}",
                r.metadata
            );
            assert_eq!(gateway_weights(ns, name).await, (Some(75), Some(25)));
        }

        // The finalizer removed by hand, with the README's command.
        ns.cluster.kubectl_ok(&[
            "patch",
            "rollouts.rollwise.io",
            BY_HAND,
            "-n",
            &ns.name,
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ]);
        wait_gone(ns, BY_HAND, None).await;
        assert_eq!(
            gateway_weights(ns, BY_HAND).await,
            (Some(75), Some(25)),
            "nobody restored this route"
        );

        // The operator installed again finishes the other deletion.
        let again = Install::helm(&ns.cluster, &ns.name, &[]).await;
        let op = ns
            .start_operator(again.operator_options(&ns.name).await)
            .await;
        wait_gone(ns, ROLLOUT, Some(&op)).await;
        assert_eq!(
            gateway_weights(ns, ROLLOUT).await,
            (Some(100), Some(0)),
            "stable traffic restored by the finalizer"
        );
        again.finish(ns, &[&op]).await;
    })
    .await;
}

/// Delete the Rollouts `names` and wait until the operator let them go.
async fn delete_rollouts(ns: &TestNs, names: &[&str]) {
    let rollouts: Api<Rollout> = ns.api();
    for name in names {
        rollouts
            .delete(name, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("cannot delete Rollout {name}: {e}"));
    }
    for name in names {
        wait_gone(ns, name, None).await;
    }
}

async fn wait_gone(ns: &TestNs, name: &str, op: Option<&Operator>) {
    let rollouts = ns.raw_rollouts();
    eventually(
        &format!("Rollout {name} to be gone"),
        Duration::from_secs(60),
        || {
            let rollouts = rollouts.clone();
            async move {
                ns.check_operators();
                if let Some(op) = op {
                    op.check_alive();
                }
                match rollouts.get_opt(name).await {
                    Ok(None) => Ok(()),
                    Ok(Some(r)) => Err(format!("finalizers {:?}", r.finalizers())),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await;
}

/// A copy of `charts/rollwise` whose CRD is renamed (group
/// `u<hex>.crd-upgrade.rollwise.test`, kind `RolloutUpgradeProbe`, no short
/// names or categories) and carries a version marker in its description.
/// The CRD is deleted on drop.
struct ProbeChart {
    cluster: Cluster,
    dir: tempfile::TempDir,
    crd_name: String,
    crd: Value,
}

impl ProbeChart {
    fn new(cluster: &Cluster) -> ProbeChart {
        let dir = tempfile::Builder::new()
            .prefix("rollwise-e2e-chart-")
            .tempdir()
            .expect("a temporary directory");
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(format!("{}/.", common::install::CHART_DIR))
            .arg(dir.path())
            .status()
            .expect("run cp");
        assert!(status.success(), "copy the chart");
        let group = format!("u{}.crd-upgrade.rollwise.test", unique_suffix());
        let mut crd = common::cluster::rollout_crd();
        let crd_name = format!("rolloutupgradeprobes.{group}");
        crd["metadata"] = json!({"name": crd_name});
        crd["spec"]["group"] = json!(group);
        crd["spec"]["names"] = json!({
            "kind": "RolloutUpgradeProbe",
            "listKind": "RolloutUpgradeProbeList",
            "plural": "rolloutupgradeprobes",
            "singular": "rolloutupgradeprobe"
        });
        let chart = ProbeChart {
            cluster: cluster.clone(),
            dir,
            crd_name,
            crd,
        };
        chart.write_crd("version 1");
        chart
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn write_crd(&self, description: &str) {
        let mut crd = self.crd.clone();
        for v in crd["spec"]["versions"].as_array_mut().expect("versions") {
            v["schema"]["openAPIV3Schema"]["description"] = json!(description);
        }
        // JSON is YAML: Helm and kubectl read it as the chart's crds/.
        std::fs::write(
            self.path().join("crds/rollout.yaml"),
            serde_json::to_string_pretty(&crd).expect("JSON"),
        )
        .expect("write the CRD");
    }

    /// A new chart version with this CRD.
    fn next_version(&self, description: &str) {
        self.write_crd(description);
        let path = self.path().join("Chart.yaml");
        let chart = std::fs::read_to_string(&path).expect("read Chart.yaml");
        let chart = chart
            .lines()
            .map(|l| {
                if l.starts_with("version:") {
                    "version: 0.99.0-e2e".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&path, chart).expect("write Chart.yaml");
    }

    /// The description of the CRD the API server has.
    fn served_description(&self) -> String {
        self.cluster.kubectl_ok(&[
            "get",
            "crd",
            &self.crd_name,
            "-o",
            "jsonpath={.spec.versions[0].schema.openAPIV3Schema.description}",
        ])
    }
}

impl Drop for ProbeChart {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl()
            .args([
                "delete",
                "crd",
                &self.crd_name,
                "--ignore-not-found",
                "--wait=false",
            ])
            .output();
    }
}

// ---------------------------------------------------------------------------
// The routers
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Router {
    GatewayApi,
    Nginx,
    Istio,
    Smi,
    Traefik,
    Replicas,
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn http_routes() -> ApiResource {
    resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
}
fn ingresses() -> ApiResource {
    resource("networking.k8s.io", "v1", "Ingress", "ingresses")
}
fn virtual_services() -> ApiResource {
    resource(
        "networking.istio.io",
        "v1",
        "VirtualService",
        "virtualservices",
    )
}
fn traffic_splits() -> ApiResource {
    resource(
        "split.smi-spec.io",
        "v1alpha2",
        "TrafficSplit",
        "trafficsplits",
    )
}
fn traefik_services() -> ApiResource {
    resource(
        "traefik.io",
        "v1alpha1",
        "TraefikService",
        "traefikservices",
    )
}
fn ingress_routes() -> ApiResource {
    resource("traefik.io", "v1alpha1", "IngressRoute", "ingressroutes")
}

impl Router {
    /// Only this router on in the chart.
    fn chart_values(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Router::GatewayApi => vec![],
            Router::Nginx => vec![("routers.gatewayAPI", "false"), ("routers.nginx", "true")],
            Router::Istio => vec![("routers.gatewayAPI", "false"), ("routers.istio", "true")],
            Router::Smi => vec![("routers.gatewayAPI", "false"), ("routers.smi", "true")],
            Router::Traefik => vec![("routers.gatewayAPI", "false"), ("routers.traefik", "true")],
            Router::Replicas => vec![
                ("routers.gatewayAPI", "false"),
                ("routers.replicas", "true"),
            ],
        }
    }

    fn traffic_routing(self) -> Value {
        match self {
            Router::GatewayApi => json!({"gatewayAPI": {"httpRoute": ROUTE}}),
            Router::Nginx => json!({"nginx": {"ingress": ROUTE}}),
            Router::Istio => json!({"istio": {"virtualService": ROUTE, "routes": ["primary"]}}),
            Router::Smi => json!({"smi": {"trafficSplit": ROUTE, "rootService": "checkout"}}),
            Router::Traefik => json!({"traefik": {"weightedService": ROUTE}}),
            Router::Replicas => json!({"replicas": {}}),
        }
    }

    fn show(self, ns: &TestNs) {
        match self {
            Router::GatewayApi => ns.show("HTTPRoutes", http_routes()),
            Router::Nginx => ns.show("Ingresses", ingresses()),
            Router::Istio => ns.show("VirtualServices", virtual_services()),
            Router::Smi => ns.show("TrafficSplits", traffic_splits()),
            Router::Traefik => ns.show("TraefikServices", traefik_services()),
            Router::Replicas => {}
        }
    }

    /// The two versions, their Services and the router's object as a user
    /// writes them (`examples/<router>/checkout.yaml`); the objects as the
    /// API server returned them from the create.
    async fn setup(self, ns: &TestNs) -> Vec<DynamicObject> {
        self.versions(ns).await;
        self.create_objects(ns).await
    }

    /// The two versions: Deployments and their Services.
    async fn versions(self, ns: &TestNs) {
        if self == Router::Replicas {
            // All pods on v1; rollwise scales v2 up as the weight rises.
            ns.create(&deployment(&ns.name, STABLE, REPLICAS_TOTAL as i32))
                .await;
            ns.create(&deployment(&ns.name, CANARY, 0)).await;
            for name in [STABLE, CANARY] {
                ns.create(&service(&ns.name, name)).await;
            }
            ns.create(&root_service(&ns.name, json!({"app": "checkout"})))
                .await;
            ns.wait_deployments_available(&[STABLE, CANARY]).await;
        } else {
            ns.versions(&[STABLE, CANARY], 1).await;
        }
    }

    /// The router's objects (nothing for the replicas router).
    async fn create_objects(self, ns: &TestNs) -> Vec<DynamicObject> {
        let mut created = Vec::new();
        match self {
            Router::GatewayApi => {
                created.push(ns.create_dynamic(&http_routes(), http_route(ROUTE)).await);
            }
            Router::Nginx => {
                created.push(
                    ns.create_dynamic(
                        &ingresses(),
                        json!({
                            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                            "metadata": {"name": ROUTE, "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "8m"}},
                            "spec": {
                                "ingressClassName": "nginx",
                                "rules": [{
                                    "host": HOST,
                                    "http": {"paths": [{
                                        "path": "/checkout", "pathType": "Prefix",
                                        "backend": {"service": {"name": STABLE, "port": {"number": 80}}}
                                    }]}
                                }]
                            }
                        }),
                    )
                    .await,
                );
            }
            Router::Istio => {
                created.push(
                    ns.create_dynamic(
                        &virtual_services(),
                        json!({
                            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                            "metadata": {"name": ROUTE},
                            "spec": {
                                "hosts": [HOST],
                                "gateways": ["web"],
                                "http": [{
                                    "name": "primary",
                                    "match": [{"uri": {"prefix": "/checkout"}}],
                                    "route": [
                                        {"destination": {"host": STABLE, "port": {"number": 80}}, "weight": 100},
                                        {"destination": {"host": CANARY, "port": {"number": 80}}, "weight": 0}
                                    ]
                                }]
                            }
                        }),
                    )
                    .await,
                );
            }
            Router::Smi => {
                // No TrafficSplit: rollwise creates it. The root Service
                // clients call sends to v1 until then.
                ns.create(&root_service(
                    &ns.name,
                    json!({"app": "checkout", "version": STABLE}),
                ))
                .await;
            }
            Router::Traefik => {
                created.push(
                    ns.create_dynamic(
                        &traefik_services(),
                        json!({
                            "apiVersion": "traefik.io/v1alpha1", "kind": "TraefikService",
                            "metadata": {"name": ROUTE},
                            "spec": {"weighted": {"services": [
                                {"name": STABLE, "port": 80, "weight": 100},
                                {"name": CANARY, "port": 80, "weight": 0}
                            ]}}
                        }),
                    )
                    .await,
                );
                created.push(
                    ns.create_dynamic(
                        &ingress_routes(),
                        json!({
                            "apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
                            "metadata": {"name": ROUTE},
                            "spec": {
                                "entryPoints": ["web"],
                                "routes": [{
                                    "match": format!("Host(`{HOST}`) && PathPrefix(`/checkout`)"),
                                    "kind": "Rule",
                                    "services": [{"name": ROUTE, "kind": "TraefikService"}]
                                }]
                            }
                        }),
                    )
                    .await,
                );
            }
            Router::Replicas => {}
        }
        created
    }

    /// The router's objects carry canary weight `w` exactly as
    /// `docs/routers.md` describes, and nothing else of the user's changed.
    async fn expect(self, ns: &TestNs, w: i64, created: &[DynamicObject]) {
        match self {
            Router::GatewayApi => {
                let route = get(ns, &http_routes(), ROUTE).await;
                let refs = &route.data["spec"]["rules"][0]["backendRefs"];
                let want = if w == 0 {
                    json!([{"group": "", "kind": "Service", "name": STABLE, "port": 80, "weight": 1}])
                } else {
                    json!([
                        {"group": "", "kind": "Service", "name": STABLE, "port": 80, "weight": 100 - w},
                        {"group": "", "kind": "Service", "name": CANARY, "port": 80, "weight": w}
                    ])
                };
                assert_eq!(
                    refs,
                    &want,
                    "HTTPRoute backendRefs: {}",
                    pretty(&route.data)
                );
                assert_spec_unchanged(&created[0], &route, &["/spec/rules/0/backendRefs"]);
            }
            Router::Nginx => {
                let ours = get(ns, &ingresses(), ROUTE).await;
                assert_eq!(
                    ours.metadata.resource_version,
                    created[0].metadata.resource_version,
                    "the user's Ingress is never written: {}",
                    pretty(&ours)
                );
                let canary = ns
                    .dynamic(&ingresses())
                    .get_opt(CANARY_INGRESS)
                    .await
                    .unwrap_or_else(|e| panic!("get Ingress {CANARY_INGRESS}: {e}"));
                if w == 0 {
                    assert!(
                        canary.is_none(),
                        "no canary Ingress at weight 0: {}",
                        pretty(&canary)
                    );
                    return;
                }
                let canary = canary
                    .unwrap_or_else(|| panic!("no canary Ingress {CANARY_INGRESS} at weight {w}"));
                let a = canary.annotations();
                let annotation =
                    |k: &str| a.get(&format!("nginx.ingress.kubernetes.io/{k}")).cloned();
                assert_eq!(
                    annotation("canary").as_deref(),
                    Some("true"),
                    "{}",
                    pretty(&canary)
                );
                assert_eq!(
                    annotation("canary-weight"),
                    Some(w.to_string()),
                    "{}",
                    pretty(&canary)
                );
                assert_eq!(
                    annotation("canary-weight-total").as_deref(),
                    Some("100"),
                    "{}",
                    pretty(&canary)
                );
                assert_eq!(
                    annotation("proxy-body-size").as_deref(),
                    Some("8m"),
                    "the user's annotations are copied: {}",
                    pretty(&canary)
                );
                assert_eq!(
                    canary
                        .labels()
                        .get("app.kubernetes.io/managed-by")
                        .map(String::as_str),
                    Some("rollwise")
                );
                assert_eq!(
                    canary
                        .labels()
                        .get("rollwise.io/rollout")
                        .map(String::as_str),
                    Some(ROLLOUT)
                );
                assert_owned_by_rollout(&canary);
                let mut want = ours.data["spec"].clone();
                want["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = json!(CANARY);
                assert_eq!(
                    canary.data["spec"], want,
                    "the canary Ingress is the user's with the canary backend"
                );
            }
            Router::Istio => {
                let vs = get(ns, &virtual_services(), ROUTE).await;
                let route = &vs.data["spec"]["http"][0]["route"];
                let want = json!([
                    {"destination": {"host": STABLE, "port": {"number": 80}}, "weight": 100 - w},
                    {"destination": {"host": CANARY, "port": {"number": 80}}, "weight": w}
                ]);
                assert_eq!(route, &want, "VirtualService route: {}", pretty(&vs.data));
                assert_spec_unchanged(&created[0], &vs, &["/spec/http/0/route"]);
            }
            Router::Smi => {
                let split = ns
                    .dynamic(&traffic_splits())
                    .get_opt(ROUTE)
                    .await
                    .unwrap_or_else(|e| panic!("get TrafficSplit {ROUTE}: {e}"));
                if w == 0 {
                    // Before the first weight, no TrafficSplit: the root
                    // Service sends everything to the stable version.
                    assert!(split.is_none(), "{}", pretty(&split));
                    return;
                }
                let split = split.unwrap_or_else(|| panic!("no TrafficSplit {ROUTE} at {w}%"));
                assert_eq!(
                    split.data["spec"],
                    json!({
                        "service": "checkout",
                        "backends": [
                            {"service": STABLE, "weight": 100 - w},
                            {"service": CANARY, "weight": w}
                        ]
                    }),
                    "{}",
                    pretty(&split.data)
                );
                assert_eq!(
                    split
                        .labels()
                        .get("app.kubernetes.io/managed-by")
                        .map(String::as_str),
                    Some("rollwise")
                );
                assert_owned_by_rollout(&split);
            }
            Router::Traefik => {
                let ts = get(ns, &traefik_services(), ROUTE).await;
                assert_eq!(
                    ts.data["spec"]["weighted"]["services"],
                    json!([
                        {"name": STABLE, "port": 80, "weight": 100 - w},
                        {"name": CANARY, "port": 80, "weight": w}
                    ]),
                    "{}",
                    pretty(&ts.data)
                );
                assert_spec_unchanged(&created[0], &ts, &["/spec/weighted/services"]);
                let ir = get(ns, &ingress_routes(), ROUTE).await;
                assert_eq!(
                    ir.metadata.resource_version, created[1].metadata.resource_version,
                    "the IngressRoute is never written"
                );
            }
            Router::Replicas => {
                let deployments: Api<Deployment> = ns.api();
                let replicas = |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas);
                let stable = deployments.get(STABLE).await.expect("stable Deployment");
                let canary = deployments.get(CANARY).await.expect("canary Deployment");
                let want_canary = (REPLICAS_TOTAL * w + 99) / 100;
                assert_eq!(
                    (replicas(&stable), replicas(&canary)),
                    (
                        Some((REPLICAS_TOTAL - want_canary) as i32),
                        Some(want_canary as i32)
                    ),
                    "(stable, canary) replicas at {w}%"
                );
                if w > 0 {
                    assert_eq!(
                        stable
                            .annotations()
                            .get("rollwise.io/original-replicas")
                            .map(String::as_str),
                        Some(REPLICAS_TOTAL.to_string().as_str()),
                        "the stable's original count is recorded"
                    );
                }
            }
        }
    }

    /// After the Rollout was deleted: all traffic back on the stable version.
    async fn expect_restored(self, ns: &TestNs, created: &[DynamicObject]) {
        match self {
            Router::GatewayApi => {
                let route = get(ns, &http_routes(), ROUTE).await;
                assert_eq!(
                    route.data["spec"]["rules"][0]["backendRefs"],
                    json!([
                        {"group": "", "kind": "Service", "name": STABLE, "port": 80, "weight": 100},
                        {"group": "", "kind": "Service", "name": CANARY, "port": 80, "weight": 0}
                    ]),
                    "{}",
                    pretty(&route.data)
                );
            }
            Router::Smi => {
                // Owned by the Rollout: garbage-collected with it.
                let splits = ns.dynamic(&traffic_splits());
                eventually(
                    "the TrafficSplit to be garbage-collected",
                    Duration::from_secs(60),
                    || {
                        let splits = splits.clone();
                        async move {
                            match splits.get_opt(ROUTE).await {
                                Ok(None) => Ok(()),
                                Ok(Some(s)) => Err(pretty(&s.data)),
                                Err(e) => Err(e.to_string()),
                            }
                        }
                    },
                )
                .await;
            }
            _ => self.expect(ns, 0, created).await,
        }
    }
}

/// All `/checkout` traffic to the stable Service.
fn http_route(name: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "web"}],
            "hostnames": [HOST],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/checkout"}}],
                "backendRefs": [{"name": STABLE, "port": 80}]
            }]
        }
    })
}

/// `(stable, canary)` weights of the HTTPRoute's rule (an absent weight is
/// 1; `None`: no backendRef to that Service).
async fn gateway_weights(ns: &TestNs, route: &str) -> (Option<i64>, Option<i64>) {
    let route = get(ns, &http_routes(), route).await;
    let refs = route.data["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let weight = |service: &str| {
        refs.iter()
            .find(|r| r["name"] == service)
            .map(|r| r["weight"].as_i64().unwrap_or(1))
    };
    (weight(STABLE), weight(CANARY))
}

fn root_service(ns: &str, selector: Value) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "checkout", "namespace": ns},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .expect("static service")
}

async fn get(ns: &TestNs, ar: &ApiResource, name: &str) -> DynamicObject {
    ns.dynamic(ar)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("cannot read {} {name}: {e}", ar.kind))
}

/// `now`'s spec equals `before`'s except at the JSON pointers `changed`.
fn assert_spec_unchanged(before: &DynamicObject, now: &DynamicObject, changed: &[&str]) {
    let mask = |o: &DynamicObject| {
        let mut v = json!({"spec": o.data["spec"].clone(), "labels": o.metadata.labels});
        for p in changed {
            if let Some(x) = v.pointer_mut(p) {
                *x = Value::Null;
            }
        }
        v
    };
    assert_eq!(
        mask(now),
        mask(before),
        "{} {} changed beyond {changed:?}",
        now.types
            .as_ref()
            .map(|t| t.kind.as_str())
            .unwrap_or("object"),
        now.name_any()
    );
}

fn assert_owned_by_rollout(o: &DynamicObject) {
    let owners = o.owner_references();
    assert!(
        owners
            .iter()
            .any(|r| r.kind == "Rollout" && r.name == ROLLOUT && r.controller == Some(true)),
        "{} is owned by the Rollout: {owners:?}",
        o.name_any()
    );
}

// ---------------------------------------------------------------------------
// The Rollout and what the user sees
// ---------------------------------------------------------------------------

fn rollout(ns: &str, traffic_routing: Value, prometheus: Option<String>) -> Rollout {
    rollout_named(ns, ROLLOUT, traffic_routing, prometheus)
}

fn rollout_named(
    ns: &str,
    name: &str,
    traffic_routing: Value,
    prometheus: Option<String>,
) -> Rollout {
    let mut spec = json!({
        "stable": {"service": STABLE, "deployment": STABLE},
        "canary": {"service": CANARY, "deployment": CANARY},
        "trafficRouting": traffic_routing,
        "steps": steps(),
    });
    if let Some(address) = prometheus {
        spec["analysis"] = json!({
            "interval": "2s",
            "prometheus": {"address": address},
            "metrics": [{"name": "error-rate", "query": ERROR_RATE_QUERY, "max": MAX_ERROR_RATE}]
        });
    }
    serde_json::from_value(json!({
        "apiVersion": "rollwise.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))
    .expect("a valid Rollout")
}

/// A Prometheus holding 10 requests/s for each version, 1% errors on the
/// canary.
async fn start_prometheus(ns: &TestNs) -> PrometheusServer {
    let errors = 10.0 * CANARY_ERROR_RATE;
    let data = Backfill::new()
        .counter(
            "http_requests_total",
            &[
                ("namespace", &ns.name),
                ("service", CANARY),
                ("code", "200"),
            ],
            10.0 - errors,
        )
        .counter(
            "http_requests_total",
            &[
                ("namespace", &ns.name),
                ("service", CANARY),
                ("code", "500"),
            ],
            errors,
        )
        .counter(
            "http_requests_total",
            &[
                ("namespace", &ns.name),
                ("service", STABLE),
                ("code", "200"),
            ],
            10.0,
        )
        .to_openmetrics();
    let server =
        tokio::task::spawn_blocking(move || PrometheusServer::start_with_openmetrics(&data))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    ns.note(format!("Prometheus at {}", server.address()));
    server
}

/// `kubectl annotate rollout checkout rollwise.io/action=promote`, as the
/// README says.
fn promote(ns: &TestNs) {
    ns.cluster.kubectl_ok(&[
        "annotate",
        "rollouts.rollwise.io",
        ROLLOUT,
        "-n",
        &ns.name,
        "rollwise.io/action=promote",
        "--overwrite",
    ]);
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

fn assert_condition(r: &Rollout, type_: &str, status: &str) {
    let c = condition(r, type_);
    assert_eq!(c.status, status, "{type_}: {c:?}");
    assert_eq!(
        c.observed_generation, r.metadata.generation,
        "{type_} observed the latest generation: {c:?}"
    );
}

fn assert_succeeded(r: &Rollout, analysis: bool) {
    assert_condition(r, "Ready", "True");
    assert_condition(r, "Completed", "True");
    assert_condition(r, "RolledBack", "False");
    assert_condition(r, "Paused", "False");
    let progressing = condition(r, "Progressing");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("False", "Succeeded"),
        "{progressing:?}"
    );
    assert!(
        !r.annotations().contains_key("rollwise.io/action"),
        "the operator clears the promote annotation: {:?}",
        r.annotations()
    );
    let status = r.status.clone().unwrap_or_default();
    if analysis {
        let m = status
            .analysis
            .iter()
            .find(|m| m.name == "error-rate")
            .unwrap_or_else(|| panic!("no error-rate in status.analysis: {:?}", status.analysis));
        assert_eq!(m.verdict, "Pass", "{m:?}");
        assert!(
            m.value
                .is_some_and(|v| (v - CANARY_ERROR_RATE).abs() < 0.005),
            "the measured error rate is the backfilled 1%: {m:?}"
        );
    }
}

/// The operator published Events on the Rollout (events.k8s.io, reported by
/// `rollwise` as the replica's identity).
async fn assert_events_published(ns: &TestNs) {
    let events: Api<NewEvent> = ns.api();
    eventually("Events on the Rollout", Duration::from_secs(30), || {
        let events = events.clone();
        async move {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let ours: Vec<String> = list
                .items
                .iter()
                .filter(|e| {
                    e.reporting_controller.as_deref() == Some("rollwise")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(ROLLOUT)
                })
                .map(|e| e.reason.clone().unwrap_or_default())
                .collect();
            if ours.iter().any(|r| r == "Promoted") {
                Ok(())
            } else {
                Err(format!("reasons so far: {ours:?}"))
            }
        }
    })
    .await;
}

const HOOKS_SECRET: &str = "hooks";
const ROLLOUT_HOOK_KEY: &str = "rollout-url";
const OPERATOR_HOOK_KEY: &str = "operator-url";

/// A webhook receiver on 127.0.0.1 recording (path, JSON body) of every
/// call; `/rollout` is the Rollout's webhook, `/operator` the chart's
/// operator-wide one.
struct Webhooks {
    addr: std::net::SocketAddr,
    calls: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Webhooks {
    async fn start() -> Webhooks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a webhook receiver");
        let addr = listener.local_addr().expect("its address");
        let calls: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let app = axum::Router::new().fallback({
            let calls = calls.clone();
            move |uri: axum::http::Uri, body: axum::body::Bytes| {
                let calls = calls.clone();
                async move {
                    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    calls
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((uri.path().to_string(), body));
                    axum::http::StatusCode::OK
                }
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Webhooks { addr, calls }
    }

    /// The Secret holding both URLs.
    fn secret(&self, ns: &str) -> Secret {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": HOOKS_SECRET, "namespace": ns},
            "stringData": {
                ROLLOUT_HOOK_KEY: format!("http://{}/rollout", self.addr),
                OPERATOR_HOOK_KEY: format!("http://{}/operator", self.addr),
            }
        }))
        .expect("a Secret")
    }

    /// `path` was called with the Rollout's promotion.
    async fn wait_promoted(&self, ns: &TestNs, path: &str) {
        eventually(
            &format!("the webhook {path} to be told of the promotion"),
            Duration::from_secs(30),
            || async {
                let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let kinds: Vec<&Value> = calls
                    .iter()
                    .filter(|(p, _)| p == path)
                    .map(|(_, b)| &b["kind"])
                    .collect();
                let promoted = calls.iter().any(|(p, b)| {
                    p == path
                        && b["kind"] == "Promoted"
                        && b["rollout"] == ROLLOUT
                        && b["namespace"] == ns.name.as_str()
                        && b["canaryWeight"] == 100
                });
                if promoted {
                    Ok(())
                } else {
                    Err(format!("calls of {path} so far: {kinds:?}"))
                }
            },
        )
        .await;
    }
}

/// Every rule the chart granted this install was used by the operator's
/// run (`rollwise_kube_requests_total`, answered 2xx), but for:
/// - `rollouts/finalizers` `update`: only checked by the
///   OwnerReferencesPermissionEnforcement admission plugin (not enabled on
///   the test cluster) when the nginx and smi routers create objects owned
///   by the Rollout;
/// - `create` on the canary Ingress and the TrafficSplit: they are created
///   by a server-side apply, a PATCH, which the API server also authorizes
///   as `create` when the object does not exist yet (so that PATCH must have
///   been made);
/// - Secrets `get` unless a Rollout had a webhook.
fn assert_every_rule_used(
    granted: &BTreeSet<(String, String)>,
    made: &BTreeSet<(String, String)>,
    webhooks: bool,
) {
    let unused: Vec<&(String, String)> = granted
        .iter()
        .filter(|rule| !made.contains(*rule))
        .filter(
            |(resource, verb)| match (resource.as_str(), verb.as_str()) {
                ("rollouts/finalizers", "update") => false,
                ("ingresses" | "trafficsplits", "create") => {
                    !made.contains(&(resource.clone(), "patch".to_string()))
                }
                ("secrets", "get") => webhooks,
                _ => true,
            },
        )
        .collect();
    assert!(
        unused.is_empty(),
        "the chart grants rules this run never used: {unused:?}\ngranted: {granted:?}\nused: {made:?}"
    );
}

/// The chart's Lease names the operator the test started as its holder.
async fn assert_lease_held_by(install: &Install, op: &Operator) {
    let (lease_ns, identity, _) = op
        .options
        .leader_election
        .clone()
        .expect("the chart turns leader election on");
    assert_eq!(
        lease_ns, install.namespace,
        "the Lease is in the release namespace"
    );
    let leases: Api<Lease> = Api::namespaced(install.cluster.client.clone(), &lease_ns);
    let lease = leases
        .get(&install.lease_name())
        .await
        .unwrap_or_else(|e| panic!("Lease {}: {e}", install.lease_name()));
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        Some(identity),
        "the holder of the chart's Lease"
    );
}

// ---------------------------------------------------------------------------
// The chart's RBAC objects
// ---------------------------------------------------------------------------

async fn assert_role_in(install: &Install, watched: &str) {
    let out = install.cluster.kubectl_ok(&[
        "get",
        "role,rolebinding",
        "-n",
        watched,
        "-l",
        &format!("app.kubernetes.io/instance={}", install.release),
        "-o",
        "name",
    ]);
    for want in [
        format!("role.rbac.authorization.k8s.io/{}", install.release),
        format!("rolebinding.rbac.authorization.k8s.io/{}", install.release),
    ] {
        assert!(out.lines().any(|l| l == want), "{want} in:\n{out}");
    }
    let cluster = install.cluster.kubectl_ok(&[
        "get",
        "clusterrole,clusterrolebinding",
        "-l",
        &format!("app.kubernetes.io/instance={}", install.release),
        "-o",
        "name",
    ]);
    assert!(cluster.trim().is_empty(), "no cluster-wide RBAC: {cluster}");
}

async fn assert_cluster_role(install: &Install) {
    let out = install.cluster.kubectl_ok(&[
        "get",
        "clusterrole,clusterrolebinding",
        "-l",
        &format!("app.kubernetes.io/instance={}", install.release),
        "-o",
        "name",
    ]);
    for want in [
        format!("clusterrole.rbac.authorization.k8s.io/{}", install.release),
        format!(
            "clusterrolebinding.rbac.authorization.k8s.io/{}",
            install.release
        ),
    ] {
        assert!(out.lines().any(|l| l == want), "{want} in:\n{out}");
    }
}
