//! Field ownership on a real API server: what a user's `kubectl apply` and a
//! GitOps tool's re-apply do to the weights rollwise writes, who wins, and
//! how fast rollwise puts its weight back (docs/routers.md, "Who owns which
//! fields").
//!
//! Each test runs a Rollout `30% -> pause {} -> 100%` (held at 30% until
//! promoted) on one router, with the real `rollwise run` binary (admin
//! identity, watching only the test's namespace), and applies the user's
//! object with the real `kubectl` the way people and GitOps tools do:
//!
//! - `kubectl apply` (client-side, the `last-applied-configuration`
//!   annotation; Argo CD's default sync);
//! - `kubectl apply --server-side` (field manager `kubectl`), with and without
//!   `--force-conflicts`;
//! - `kubectl apply --server-side --force-conflicts
//!   --field-manager=kustomize-controller` (what Flux does; Argo CD with
//!   `ServerSideApply=true` does the same as `argocd-controller`).
//!
//! What is checked is what a user sees: the weights in the route (or the
//! canary Ingress), the `managedFields` of the objects, kubectl's exit status
//! and message, the user's own edit, and the Rollout's status.
//!
//! The documented promise checked after every change made by someone else:
//! **rollwise puts the weight its status says back within
//! [`RESTORE_WITHIN`]**, and the user's other edits are kept.
//!
//! ```text
//! ROLLWISE_E2E_KUBECONFIG=/path/to/kubeconfig cargo test --test ownership -- --nocapture
//! ```
//!
//! Without a cluster every test prints one `SKIPPED: ...` line and passes.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::cluster::{
    Cluster, ROUTER_CRDS_HINT, TestNs, events_text, eventually, in_namespace, pretty,
};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use rollwise::api::{ACTION_ANNOTATION, FIELD_MANAGER, Phase, Rollout};
use serde_json::{Value, json};

const STABLE: &str = "checkout-v1";
const CANARY: &str = "checkout-v2";
const ROLLOUT: &str = "checkout";
/// The user's routing object (HTTPRoute, VirtualService or Ingress).
const ROUTE: &str = "checkout";
const HOST: &str = "checkout.ownership.test";
/// The host the user's edit adds.
const NEW_HOST: &str = "beta.checkout.ownership.test";
/// The header match the user's edit adds.
const EDIT_HEADER: &str = "x-team";
/// A backend that is neither stable nor canary (no such Service: the API
/// server accepts the object anyway, and rollwise must leave it alone).
const OTHER_BACKEND: &str = "static-files";
/// The weight the Rollout holds at its `pause: {}` step.
const HELD: u8 = 30;
/// How soon rollwise must carry its own weight again after someone else
/// changed the route.
const RESTORE_WITHIN: Duration = Duration::from_secs(15);
/// How long the weight must then stay put (no fight, no flapping).
const STEADY_FOR: Duration = Duration::from_secs(3);
/// Poll interval while timing a restore.
const SAMPLE: Duration = Duration::from_millis(200);
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);

/// An annotation of the user's Ingress that the canary Ingress copies.
const PROXY_BODY_SIZE: &str = "nginx.ingress.kubernetes.io/proxy-body-size";
/// Argo CD's resource-tracking annotation: names the user's Ingress, so the
/// canary Ingress must not copy it.
const ARGOCD_TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";

/// The field manager Flux's kustomize-controller applies with.
const FLUX_MANAGER: &str = "kustomize-controller";

// ---------------------------------------------------------------------------
// Gateway API HTTPRoute
// ---------------------------------------------------------------------------

/// The user edits the route (a header match, a hostname) and applies it with
/// plain `kubectl apply` mid-rollout: the apply succeeds (no conflict: a
/// client-side apply is an Update), takes `.spec.rules` from rollwise and
/// resets the weights to the manifest's (no canary ref: all to stable);
/// rollwise puts its weight back, keeping the user's edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_kubectl_apply_mid_rollout() {
    in_namespace("own-gw-csa", async |ns: &TestNs| {
        user_edit_with_client_side_apply(ns, Router::GatewayApi).await;
    })
    .await;
}

/// `kubectl apply --server-side` of an edited route mid-rollout conflicts
/// with manager `rollwise` on `.spec.rules` and changes nothing; with
/// `--force-conflicts` it takes the rules, resets the weights, and rollwise
/// puts its weight back (keeping the edit) and owns `.spec.rules` again: the
/// next apply conflicts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_server_side_apply_mid_rollout() {
    in_namespace("own-gw-ssa", async |ns: &TestNs| {
        user_edit_with_server_side_apply(ns, Router::GatewayApi).await;
    })
    .await;
}

/// GitOps re-applies the original manifest (client-side as Argo CD by
/// default, server-side forced as Flux) while the rollout runs and after it
/// completed: each re-apply resets the weights; rollwise puts back 30%, then
/// 100% after the promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_gitops_reapply_of_the_original_manifest() {
    in_namespace("own-gw-git", async |ns: &TestNs| {
        gitops_reapply(ns, Router::GatewayApi).await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// Istio VirtualService
// ---------------------------------------------------------------------------

/// As for the HTTPRoute: the client-side apply of an edited VirtualService
/// takes `.spec.http` and resets the weights; rollwise puts them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtualservice_kubectl_apply_mid_rollout() {
    in_namespace("own-vs-csa", async |ns: &TestNs| {
        user_edit_with_client_side_apply(ns, Router::Istio).await;
    })
    .await;
}

/// As for the HTTPRoute: server-side apply conflicts with `rollwise` on
/// `.spec.http`; forced, it resets the weights and rollwise puts them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtualservice_server_side_apply_mid_rollout() {
    in_namespace("own-vs-ssa", async |ns: &TestNs| {
        user_edit_with_server_side_apply(ns, Router::Istio).await;
    })
    .await;
}

/// As for the HTTPRoute: GitOps re-applies reset the weights; rollwise puts
/// them back, during the rollout and after it completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtualservice_gitops_reapply_of_the_original_manifest() {
    in_namespace("own-vs-git", async |ns: &TestNs| {
        gitops_reapply(ns, Router::Istio).await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// ingress-nginx: the user's Ingress and rollwise's canary Ingress
// ---------------------------------------------------------------------------

/// The user's Ingress is only read: the user's client-side and server-side
/// applies of an edited Ingress succeed without conflict and never move the
/// weight, which lives in rollwise's canary Ingress (server-side applied by
/// `rollwise`); the user's new host shows up in the canary Ingress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_user_applies_leave_the_weight_alone() {
    in_namespace("own-ing-user", async |ns: &TestNs| {
        let env = Env::setup(ns, Router::Nginx, Apply::ClientSide).await;
        env.hold_at_30().await;
        let user = env.user_object().await;
        assert!(
            managers_of(&user)
                .iter()
                .all(|m| m.manager != FIELD_MANAGER),
            "rollwise must never write the user's Ingress; its managedFields: {}",
            managed_summary(&user)
        );
        let canary = env.canary_ingress().await.expect("the canary Ingress");
        let rollwise = managers_of(&canary)
            .into_iter()
            .find(|m| m.manager == FIELD_MANAGER)
            .unwrap_or_else(|| {
                panic!(
                    "no rollwise entry in the canary Ingress's managedFields: {}",
                    managed_summary(&canary)
                )
            });
        assert_eq!(
            rollwise.operation,
            "Apply",
            "the canary Ingress is server-side applied by rollwise: {}",
            managed_summary(&canary)
        );
        for key in [
            "nginx.ingress.kubernetes.io/canary-weight",
            "nginx.ingress.kubernetes.io/canary",
        ] {
            assert!(
                rollwise.fields["f:metadata"]["f:annotations"]
                    .get(format!("f:{key}"))
                    .is_some(),
                "rollwise should own the annotation {key} of the canary Ingress: {}",
                managed_summary(&canary)
            );
        }

        let copied = canary.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            copied.get(PROXY_BODY_SIZE).map(String::as_str),
            Some("8m"),
            "the canary Ingress copies the user's nginx annotations: {copied:?}"
        );
        assert!(
            !copied.contains_key(ARGOCD_TRACKING_ID),
            "the canary Ingress must not carry Argo CD's tracking id of the user's Ingress: {copied:?}"
        );

        // Client-side apply of an edited Ingress (a new host).
        let edited = env.router.edited();
        let out = env.kubectl_apply(&edited, Apply::ClientSide);
        assert_success(&out, "kubectl apply of the user's edited Ingress");
        env.assert_weight_stays(HELD, "after the user's client-side apply")
            .await;
        env.wait_canary_follows_user(true, "the user's new host (client-side apply)")
            .await;

        // Server-side apply of the edited Ingress, as manager kubectl.
        let out = env.kubectl_apply(&edited, Apply::ServerSide);
        eprintln!(
            "[ownership] kubectl apply --server-side of the user's Ingress: {}",
            describe_output(&out)
        );
        assert!(
            !stderr(&out).contains(&format!("\"{FIELD_MANAGER}\"")),
            "a server-side apply of the user's Ingress must never conflict with rollwise: {}",
            describe_output(&out)
        );
        assert_success(&out, "kubectl apply --server-side of the user's Ingress");
        env.assert_weight_stays(HELD, "after the user's server-side apply")
            .await;
        let user = env.user_object().await;
        eprintln!(
            "[ownership] user's Ingress managedFields after both applies: {}",
            managed_summary(&user)
        );
        assert!(
            managers_of(&user)
                .iter()
                .all(|m| m.manager != FIELD_MANAGER),
            "rollwise wrote the user's Ingress: {}",
            managed_summary(&user)
        );
        env.assert_status_held().await;
    })
    .await;
}

/// GitOps re-applies the user's original Ingress (client-side and as Flux):
/// the weight never moves and the canary Ingress follows the original hosts
/// again. A hand edit of the canary Ingress's weight and its deletion (what
/// a GitOps prune of it would do) are undone by rollwise. After the
/// promotion a re-apply leaves the canary at 100%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_gitops_reapply_and_changes_to_the_canary_ingress() {
    in_namespace("own-ing-git", async |ns: &TestNs| {
        let env = Env::setup(ns, Router::Nginx, Apply::ClientSide).await;
        env.hold_at_30().await;

        // The user added a host; GitOps re-applies the original.
        let out = env.kubectl_apply(&env.router.edited(), Apply::ClientSide);
        assert_success(&out, "kubectl apply of the user's edited Ingress");
        env.wait_canary_follows_user(true, "the user's new host")
            .await;
        for apply in [Apply::ClientSide, Apply::Flux] {
            let out = env.kubectl_apply(&env.router.original(), apply);
            assert_success(&out, &format!("{apply:?} re-apply of the original Ingress"));
            env.assert_weight_stays(HELD, &format!("after the {apply:?} re-apply"))
                .await;
            env.wait_canary_follows_user(false, &format!("the original hosts again ({apply:?})"))
                .await;
        }

        // Someone changes rollwise's canary Ingress: its weight by hand ...
        env.cluster().kubectl_ok(&[
            "-n",
            &ns.name,
            "annotate",
            "--overwrite",
            "ingress",
            &canary_ingress_name(),
            "nginx.ingress.kubernetes.io/canary-weight=0",
        ]);
        let started = Instant::now();
        env.wait_restored(started, HELD, "a hand edit of the canary Ingress's weight")
            .await;
        // ... or deletes it (a GitOps prune would).
        env.cluster().kubectl_ok(&[
            "-n",
            &ns.name,
            "delete",
            "ingress",
            &canary_ingress_name(),
            "--wait=true",
        ]);
        let started = Instant::now();
        env.wait_restored(started, HELD, "the deletion of the canary Ingress")
            .await;
        env.assert_status_held().await;

        // After the promotion, a re-apply of the original leaves 100%.
        env.promote_to_100().await;
        for apply in [Apply::ClientSide, Apply::Flux] {
            let out = env.kubectl_apply(&env.router.original(), apply);
            assert_success(&out, &format!("{apply:?} re-apply after the promotion"));
            env.assert_weight_stays(100, &format!("after the {apply:?} re-apply (Succeeded)"))
                .await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// Traefik TraefikService, SMI TrafficSplit (the user's own)
// ---------------------------------------------------------------------------

/// The TraefikService's `.spec.weighted.services` behaves as the HTTPRoute's
/// rules: server-side apply conflicts with `rollwise`; Flux's forced apply
/// and a client-side apply reset the weights; rollwise puts them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefikservice_applies_and_gitops_reapply() {
    in_namespace("own-traefik", async |ns: &TestNs| {
        applies_and_reapply(ns, Router::Traefik).await;
    })
    .await;
}

/// A TrafficSplit the user created: `.spec.backends` behaves as the
/// HTTPRoute's rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trafficsplit_applies_and_gitops_reapply() {
    in_namespace("own-smi", async |ns: &TestNs| {
        applies_and_reapply(ns, Router::Smi).await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// The scenarios shared by the HTTPRoute and the VirtualService
// ---------------------------------------------------------------------------

async fn user_edit_with_client_side_apply(ns: &TestNs, router: Router) {
    let env = Env::setup(ns, router, Apply::ClientSide).await;
    env.hold_at_30().await;
    env.assert_rollwise_owns_the_list("after rollwise set 30%")
        .await;

    let out = env.kubectl_apply(&router.edited(), Apply::ClientSide);
    let started = Instant::now();
    assert_success(&out, "kubectl apply of the user's edited route");
    let applied = applied_object(&out);
    eprintln!(
        "[ownership] {}: kubectl apply (client-side) of the edited route -> canary {:?}%, managedFields {}",
        router.kind(),
        router.canary_share(&applied),
        managed_summary(&applied)
    );
    assert_eq!(
        router.canary_share(&applied),
        Some(0),
        "a client-side apply replaces {} whole: the manifest has no canary, so all traffic goes to stable; as applied: {}",
        router.list_path(),
        pretty(&applied.data)
    );
    assert!(
        router.has_edit(&applied),
        "the user's edit is applied: {}",
        pretty(&applied.data)
    );
    assert!(
        list_owners(&applied, router.list_keys())
            .iter()
            .all(|m| m != FIELD_MANAGER),
        "after the client-side apply rollwise no longer owns {}: {}",
        router.list_path(),
        managed_summary(&applied)
    );

    env.wait_restored(started, HELD, "the user's client-side apply")
        .await;
    let route = env.user_object().await;
    assert!(
        router.has_edit(&route),
        "rollwise kept the user's edit when it put its weight back: {}",
        pretty(&route.data)
    );
    env.assert_rollwise_owns_the_list("after rollwise put its weight back")
        .await;
    env.assert_status_held().await;
    eprintln!(
        "[ownership] {}: the namespace's Events after the restore:\n{}",
        router.kind(),
        events_text(&ns.client, &ns.name).await
    );
}

async fn user_edit_with_server_side_apply(ns: &TestNs, router: Router) {
    let env = Env::setup(ns, router, Apply::ServerSide).await;
    env.hold_at_30().await;
    env.assert_rollwise_owns_the_list("after rollwise set 30%")
        .await;
    let before = env.user_object().await;

    // Without --force-conflicts: refused, nothing changes.
    let out = env.kubectl_apply(&router.edited(), Apply::ServerSide);
    eprintln!(
        "[ownership] {}: kubectl apply --server-side of the edited route: {}",
        router.kind(),
        describe_output(&out)
    );
    assert!(
        !out.status.success(),
        "a server-side apply that changes {} while rollwise owns it must conflict: {}",
        router.list_path(),
        describe_output(&out)
    );
    let message = stderr(&out);
    assert!(
        message.contains(&format!("conflict with \"{FIELD_MANAGER}\""))
            && message.contains(router.list_path()),
        "kubectl should name the conflict with manager {FIELD_MANAGER:?} on {}: {}",
        router.list_path(),
        describe_output(&out)
    );
    let after = env.user_object().await;
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "a refused apply changes nothing"
    );
    assert_eq!(router.canary_share(&after), Some(HELD));

    // With --force-conflicts: the user takes the list, the weights reset.
    let out = env.kubectl_apply(&router.edited(), Apply::ServerSideForced);
    let started = Instant::now();
    assert_success(&out, "kubectl apply --server-side --force-conflicts");
    let applied = applied_object(&out);
    eprintln!(
        "[ownership] {}: kubectl apply --server-side --force-conflicts -> canary {:?}%, managedFields {}",
        router.kind(),
        router.canary_share(&applied),
        managed_summary(&applied)
    );
    assert_eq!(
        router.canary_share(&applied),
        Some(0),
        "the forced apply sets {} as in the manifest (no canary): {}",
        router.list_path(),
        pretty(&applied.data)
    );
    assert_eq!(
        list_owners(&applied, router.list_keys()),
        vec!["kubectl".to_string()],
        "after the forced apply only kubectl owns {}: {}",
        router.list_path(),
        managed_summary(&applied)
    );
    env.wait_restored(started, HELD, "the user's forced server-side apply")
        .await;
    let route = env.user_object().await;
    assert!(
        router.has_edit(&route),
        "rollwise kept the user's edit: {}",
        pretty(&route.data)
    );
    env.assert_rollwise_owns_the_list("after rollwise put its weight back")
        .await;

    // rollwise owns the list again: the same apply conflicts again.
    let out = env.kubectl_apply(&router.edited(), Apply::ServerSide);
    assert!(
        !out.status.success() && stderr(&out).contains(&format!("\"{FIELD_MANAGER}\"")),
        "once rollwise has put its weight back, the user's next server-side apply conflicts with it again: {}",
        describe_output(&out)
    );
    env.assert_status_held().await;
}

/// Created by server-side apply; held at 30%: a server-side apply of an
/// edit conflicts; Flux's forced re-apply of the original and a client-side
/// apply of the edit each reset the weights, and rollwise puts them back
/// (keeping the edit).
async fn applies_and_reapply(ns: &TestNs, router: Router) {
    let env = Env::setup(ns, router, Apply::ServerSide).await;
    env.hold_at_30().await;
    env.assert_rollwise_owns_the_list("after rollwise set 30%")
        .await;

    let out = env.kubectl_apply(&router.edited(), Apply::ServerSide);
    eprintln!(
        "[ownership] {}: kubectl apply --server-side of the edited object: {}",
        router.kind(),
        describe_output(&out)
    );
    assert!(
        !out.status.success()
            && stderr(&out).contains(&format!("conflict with \"{FIELD_MANAGER}\""))
            && stderr(&out).contains(router.list_path()),
        "a server-side apply that changes {} while rollwise owns it conflicts with {FIELD_MANAGER:?}: {}",
        router.list_path(),
        describe_output(&out)
    );

    for (manifest, apply, what) in [
        (
            router.original(),
            Apply::Flux,
            "Flux's re-apply of the original",
        ),
        (
            router.edited(),
            Apply::ClientSide,
            "the client-side apply of the edit",
        ),
    ] {
        let out = env.kubectl_apply(&manifest, apply);
        let started = Instant::now();
        assert_success(&out, what);
        let applied = applied_object(&out);
        eprintln!(
            "[ownership] {}: {what} -> canary {:?}%, managedFields {}",
            router.kind(),
            router.canary_share(&applied),
            managed_summary(&applied)
        );
        assert_eq!(
            router.canary_share(&applied),
            Some(0),
            "{what} sets {} as in the manifest (no canary): {}",
            router.list_path(),
            pretty(&applied.data)
        );
        env.wait_restored(started, HELD, what).await;
        env.assert_rollwise_owns_the_list(&format!("after {what}"))
            .await;
    }
    let route = env.user_object().await;
    assert!(
        router.has_edit(&route),
        "rollwise kept the user's edit: {}",
        pretty(&route.data)
    );
    env.assert_status_held().await;
}

async fn gitops_reapply(ns: &TestNs, router: Router) {
    let env = Env::setup(ns, router, Apply::ClientSide).await;
    env.hold_at_30().await;

    for (weight, phase) in [(HELD, "mid-rollout"), (100, "after the promotion")] {
        if weight == 100 {
            env.promote_to_100().await;
        }
        for apply in [Apply::ClientSide, Apply::Flux] {
            let out = env.kubectl_apply(&router.original(), apply);
            let started = Instant::now();
            assert_success(&out, &format!("{apply:?} re-apply of the original {phase}"));
            let applied = applied_object(&out);
            eprintln!(
                "[ownership] {}: {apply:?} re-apply of the original {phase} -> canary {:?}%, managedFields {}",
                router.kind(),
                router.canary_share(&applied),
                managed_summary(&applied)
            );
            assert_eq!(
                router.canary_share(&applied),
                Some(0),
                "the {apply:?} re-apply of the original {phase} sets {} as in Git (no canary): {}",
                router.list_path(),
                pretty(&applied.data)
            );
            let told_before = route_changed_notes(env.ns).await.len();
            env.wait_restored(started, weight, &format!("the {apply:?} re-apply {phase}"))
                .await;
            env.assert_rollwise_owns_the_list(&format!("after the {apply:?} re-apply {phase}"))
                .await;
            // The correction is told, with the numbers (a Warning Event).
            let notes = route_changed_notes(env.ns).await;
            let expected = format!("carried 0% to the canary, not the {weight}% rollwise had set");
            assert!(
                notes.len() > told_before
                    && notes
                        .iter()
                        .skip(told_before)
                        .any(|n| n.contains(&expected)
                            && n.contains(&format!("put back to {weight}%"))),
                "a RouteChanged Warning Event saying {expected:?} after the {apply:?} re-apply {phase}; RouteChanged notes: {notes:?}"
            );
        }
    }
    let r = env.ns.rollout(ROLLOUT).await;
    let status = r.status.clone().unwrap_or_default();
    assert_eq!(
        (status.phase, status.canary_weight),
        (Phase::Succeeded, 100),
        "the Rollout still says Succeeded at 100%: {}",
        common::cluster::summary(&r)
    );
}

// ---------------------------------------------------------------------------
// The routers
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Router {
    GatewayApi,
    Istio,
    Nginx,
    Traefik,
    /// A TrafficSplit the user created (rollwise creates and owns one only
    /// when it is missing).
    Smi,
}

impl Router {
    fn kind(self) -> &'static str {
        match self {
            Router::GatewayApi => "HTTPRoute",
            Router::Istio => "VirtualService",
            Router::Nginx => "Ingress",
            Router::Traefik => "TraefikService",
            Router::Smi => "TrafficSplit",
        }
    }

    fn resource(self) -> ApiResource {
        let (group, version, plural) = match self {
            Router::GatewayApi => ("gateway.networking.k8s.io", "v1", "httproutes"),
            Router::Istio => ("networking.istio.io", "v1", "virtualservices"),
            Router::Nginx => ("networking.k8s.io", "v1", "ingresses"),
            Router::Traefik => ("traefik.io", "v1alpha1", "traefikservices"),
            Router::Smi => ("split.smi-spec.io", "v1alpha2", "trafficsplits"),
        };
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, self.kind()),
            plural,
        )
    }

    fn crd(self) -> Option<&'static str> {
        match self {
            Router::GatewayApi => Some("httproutes.gateway.networking.k8s.io"),
            Router::Istio => Some("virtualservices.networking.istio.io"),
            Router::Nginx => None,
            Router::Traefik => Some("traefikservices.traefik.io"),
            Router::Smi => Some("trafficsplits.split.smi-spec.io"),
        }
    }

    fn traffic_routing(self) -> Value {
        match self {
            Router::GatewayApi => json!({"gatewayAPI": {"httpRoute": ROUTE}}),
            Router::Istio => json!({"istio": {"virtualService": ROUTE}}),
            Router::Nginx => json!({"nginx": {"ingress": ROUTE}}),
            Router::Traefik => json!({"traefik": {"weightedService": ROUTE}}),
            Router::Smi => json!({"smi": {"trafficSplit": ROUTE}}),
        }
    }

    /// The list rollwise writes as a whole (merge patch): its keys under
    /// `spec` (managedFields name them `f:<key>`).
    fn list_keys(self) -> &'static [&'static str] {
        match self {
            Router::GatewayApi => &["rules"],
            Router::Istio => &["http"],
            Router::Traefik => &["weighted", "services"],
            Router::Smi => &["backends"],
            Router::Nginx => unreachable!("rollwise never writes the user's Ingress"),
        }
    }

    /// How the API server and kubectl name that list.
    fn list_path(self) -> &'static str {
        match self {
            Router::GatewayApi => ".spec.rules",
            Router::Istio => ".spec.http",
            Router::Traefik => ".spec.weighted.services",
            Router::Smi => ".spec.backends",
            Router::Nginx => unreachable!("rollwise never writes the user's Ingress"),
        }
    }

    /// The user's object as first applied (and as kept in Git).
    fn original(self) -> Value {
        self.manifest(false)
    }

    /// The user's edit: a new host and a header match on the stable route
    /// (HTTPRoute, VirtualService), a new host (Ingress), a third backend
    /// (TraefikService, TrafficSplit).
    fn edited(self) -> Value {
        self.manifest(true)
    }

    fn manifest(self, edited: bool) -> Value {
        let hosts: Vec<&str> = if edited {
            vec![HOST, NEW_HOST]
        } else {
            vec![HOST]
        };
        match self {
            Router::GatewayApi => {
                let mut checkout_match =
                    json!({"path": {"type": "PathPrefix", "value": "/checkout"}});
                if edited {
                    checkout_match["headers"] =
                        json!([{"type": "Exact", "name": EDIT_HEADER, "value": "checkout"}]);
                }
                json!({
                    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                    "metadata": {"name": ROUTE, "labels": {"team": "checkout"}},
                    "spec": {
                        "parentRefs": [{"name": "e2e"}],
                        "hostnames": hosts,
                        "rules": [
                            {"matches": [checkout_match], "backendRefs": [{"name": STABLE, "port": 80}]},
                            {"matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                             "backendRefs": [{"name": OTHER_BACKEND, "port": 80}]}
                        ]
                    }
                })
            }
            Router::Istio => {
                let mut primary = json!({
                    "name": "primary",
                    "route": [{"destination": {"host": STABLE, "port": {"number": 80}}}]
                });
                if edited {
                    primary["match"] = json!([{"headers": {EDIT_HEADER: {"exact": "checkout"}}}]);
                }
                json!({
                    "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                    "metadata": {"name": ROUTE, "labels": {"team": "checkout"}},
                    "spec": {
                        "hosts": hosts,
                        "gateways": ["e2e"],
                        "http": [
                            primary,
                            {"name": "static",
                             "match": [{"uri": {"prefix": "/static"}}],
                             "route": [{"destination": {"host": OTHER_BACKEND}}]}
                        ]
                    }
                })
            }
            Router::Nginx => {
                let rules: Vec<Value> = hosts
                    .iter()
                    .map(|h| {
                        json!({"host": h, "http": {"paths": [{
                            "path": "/", "pathType": "Prefix",
                            "backend": {"service": {"name": STABLE, "port": {"number": 80}}}
                        }]}})
                    })
                    .collect();
                json!({
                    "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                    "metadata": {
                        "name": ROUTE,
                        "labels": {"team": "checkout"},
                        "annotations": {
                            PROXY_BODY_SIZE: "8m",
                            ARGOCD_TRACKING_ID: format!("shop:networking.k8s.io/Ingress:shop/{ROUTE}")
                        }
                    },
                    "spec": {"ingressClassName": "nginx", "rules": rules}
                })
            }
            Router::Traefik => {
                let mut services = vec![json!({"name": STABLE, "port": 80})];
                if edited {
                    services.push(json!({"name": OTHER_BACKEND, "port": 80, "weight": 0}));
                }
                json!({
                    "apiVersion": "traefik.io/v1alpha1", "kind": "TraefikService",
                    "metadata": {"name": ROUTE, "labels": {"team": "checkout"}},
                    "spec": {"weighted": {"services": services}}
                })
            }
            Router::Smi => {
                let mut backends = vec![json!({"service": STABLE, "weight": 100})];
                if edited {
                    backends.push(json!({"service": OTHER_BACKEND, "weight": 0}));
                }
                json!({
                    "apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
                    "metadata": {"name": ROUTE, "labels": {"team": "checkout"}},
                    "spec": {"service": STABLE, "backends": backends}
                })
            }
        }
    }

    /// The entries of the weighted list and how to read one: (name, weight
    /// with the router's default; `count` is the number of entries).
    #[allow(clippy::type_complexity)]
    fn weighted(
        self,
        route: &DynamicObject,
    ) -> Option<(
        &Vec<Value>,
        fn(&Value) -> Option<&str>,
        fn(&Value, usize) -> u64,
    )> {
        let spec = &route.data["spec"];
        Some(match self {
            // Gateway API: an absent weight is 1.
            Router::GatewayApi => (
                spec["rules"][0]["backendRefs"].as_array()?,
                |e| e["name"].as_str(),
                |e, _| e.get("weight").and_then(Value::as_u64).unwrap_or(1),
            ),
            // Istio: an absent weight is 100 for a route's only destination.
            Router::Istio => (
                spec["http"][0]["route"].as_array()?,
                |e| e["destination"]["host"].as_str(),
                |e, count| {
                    e.get("weight")
                        .and_then(Value::as_u64)
                        .unwrap_or(if count == 1 { 100 } else { 0 })
                },
            ),
            // Traefik: an absent weight is 1.
            Router::Traefik => (
                spec["weighted"]["services"].as_array()?,
                |e| e["name"].as_str(),
                |e, _| e.get("weight").and_then(Value::as_u64).unwrap_or(1),
            ),
            // SMI: the weight is required.
            Router::Smi => (
                spec["backends"].as_array()?,
                |e| e["service"].as_str(),
                |e, _| e.get("weight").and_then(Value::as_u64).unwrap_or(0),
            ),
            Router::Nginx => return None,
        })
    }

    /// The canary's share of the stable/canary pair in the route (HTTPRoute
    /// rule 0, VirtualService `http[0]`, the TraefikService's services, the
    /// TrafficSplit's backends), read as the router reads it.
    fn canary_share(self, route: &DynamicObject) -> Option<u8> {
        let (entries, name, weight_of) = self.weighted(route)?;
        let weight = |service: &str| {
            entries
                .iter()
                .find(|e| name(e) == Some(service))
                .map(|e| weight_of(e, entries.len()))
        };
        let stable = weight(STABLE)?;
        let canary = weight(CANARY).unwrap_or(0);
        if stable + canary == 0 {
            return Some(0);
        }
        Some(((canary * 100 + (stable + canary) / 2) / (stable + canary)) as u8)
    }

    /// Whether the route carries the user's edit.
    fn has_edit(self, route: &DynamicObject) -> bool {
        let spec = &route.data["spec"];
        match self {
            Router::GatewayApi => {
                spec["hostnames"]
                    .as_array()
                    .is_some_and(|h| h.iter().any(|h| h == NEW_HOST))
                    && spec["rules"][0]["matches"][0]["headers"]
                        .as_array()
                        .is_some_and(|h| h.iter().any(|h| h["name"] == EDIT_HEADER))
            }
            Router::Istio => {
                spec["hosts"]
                    .as_array()
                    .is_some_and(|h| h.iter().any(|h| h == NEW_HOST))
                    && spec["http"][0]["match"][0]["headers"]
                        .get(EDIT_HEADER)
                        .is_some()
            }
            Router::Nginx => ingress_hosts(route).iter().any(|h| h == NEW_HOST),
            Router::Traefik | Router::Smi => {
                self.weighted(route).is_some_and(|(entries, name, _)| {
                    entries.iter().any(|e| name(e) == Some(OTHER_BACKEND))
                })
            }
        }
    }
}

/// How the user's object is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Apply {
    /// `kubectl apply` (Argo CD's default sync).
    ClientSide,
    /// `kubectl apply --server-side` (field manager `kubectl`).
    ServerSide,
    /// `kubectl apply --server-side --force-conflicts`.
    ServerSideForced,
    /// As Flux's kustomize-controller: server-side, forced, field manager
    /// `kustomize-controller`.
    Flux,
}

impl Apply {
    fn args(self) -> Vec<String> {
        match self {
            Apply::ClientSide => vec![],
            Apply::ServerSide => vec!["--server-side".into()],
            Apply::ServerSideForced => vec!["--server-side".into(), "--force-conflicts".into()],
            Apply::Flux => vec![
                "--server-side".into(),
                "--force-conflicts".into(),
                format!("--field-manager={FLUX_MANAGER}"),
            ],
        }
    }
}

fn canary_ingress_name() -> String {
    rollwise::traffic::nginx::canary_ingress_name(ROUTE, CANARY)
}

fn ingress_hosts(ingress: &DynamicObject) -> Vec<String> {
    ingress.data["spec"]["rules"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .filter_map(|r| r["host"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// One test's set-up and checks
// ---------------------------------------------------------------------------

struct Env<'a> {
    ns: &'a TestNs,
    router: Router,
    dir: tempfile::TempDir,
}

impl<'a> Env<'a> {
    /// The two versions, the user's object (applied with `apply`), the
    /// operator, and the Rollout.
    async fn setup(ns: &'a TestNs, router: Router, apply: Apply) -> Env<'a> {
        if let Some(crd) = router.crd() {
            ns.cluster.require_crds(&[crd], ROUTER_CRDS_HINT).await;
        }
        ns.show(router.kind(), router.resource());
        ns.versions(&[STABLE, CANARY], 1).await;
        let env = Env {
            ns,
            router,
            dir: tempfile::Builder::new()
                .prefix("rollwise-ownership-")
                .tempdir()
                .expect("a temporary directory"),
        };
        let out = env.kubectl_apply(&router.original(), apply);
        assert_success(&out, &format!("create the {} ({apply:?})", router.kind()));
        ns.start_admin_operator().await;
        let rollout: Rollout = serde_json::from_value(json!({
            "apiVersion": "rollwise.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": ROLLOUT, "namespace": ns.name},
            "spec": {
                "stable": {"service": STABLE, "deployment": STABLE},
                "canary": {"service": CANARY, "deployment": CANARY},
                "trafficRouting": router.traffic_routing(),
                "steps": [{"setWeight": HELD}, {"pause": {}}, {"setWeight": 100}],
            }
        }))
        .expect("a valid Rollout");
        ns.create(&rollout).await;
        env
    }

    fn cluster(&self) -> &Cluster {
        &self.ns.cluster
    }

    async fn hold_at_30(&self) {
        self.ns
            .wait_phase(ROLLOUT, Phase::Paused, i32::from(HELD), ROLLOUT_TIMEOUT)
            .await;
        assert_eq!(self.weight().await, HELD, "the router carries {HELD}%");
    }

    async fn promote_to_100(&self) {
        let patch = json!({"metadata": {"annotations": {ACTION_ANNOTATION: "promote"}}});
        self.ns
            .api::<Rollout>()
            .patch(ROLLOUT, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("cannot annotate the Rollout with promote: {e}"));
        self.ns
            .wait_phase(ROLLOUT, Phase::Succeeded, 100, ROLLOUT_TIMEOUT)
            .await;
        assert_eq!(self.weight().await, 100, "the router carries 100%");
    }

    /// `kubectl apply` of `manifest` in this namespace, printing the object
    /// the API server returned (`-o json`).
    fn kubectl_apply(&self, manifest: &Value, apply: Apply) -> Output {
        let path: PathBuf = self
            .dir
            .path()
            .join(format!("{}.json", common::cluster::unique_suffix()));
        std::fs::write(&path, pretty(manifest)).expect("write the manifest");
        let mut command = self.cluster().kubectl();
        command
            .args([
                "-n",
                &self.ns.name,
                "apply",
                "-o",
                "json",
                "--show-managed-fields",
                "-f",
            ])
            .arg(&path)
            .args(apply.args());
        command
            .output()
            .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
    }

    async fn user_object(&self) -> DynamicObject {
        self.ns
            .dynamic(&self.router.resource())
            .get(ROUTE)
            .await
            .unwrap_or_else(|e| panic!("cannot read {} {ROUTE}: {e}", self.router.kind()))
    }

    async fn canary_ingress(&self) -> Option<DynamicObject> {
        self.ns
            .dynamic(&Router::Nginx.resource())
            .get_opt(&canary_ingress_name())
            .await
            .unwrap_or_else(|e| panic!("cannot read the canary Ingress: {e}"))
    }

    /// The canary weight the router carries now (no canary Ingress is 0).
    async fn weight(&self) -> u8 {
        match self.router {
            Router::Nginx => match self.canary_ingress().await {
                None => 0,
                Some(ingress) => ingress
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("nginx.ingress.kubernetes.io/canary-weight"))
                    .and_then(|w| w.parse().ok())
                    .unwrap_or_else(|| {
                        panic!(
                            "the canary Ingress has no readable canary-weight: {:?}",
                            ingress.metadata.annotations
                        )
                    }),
            },
            router => {
                let route = self.user_object().await;
                router.canary_share(&route).unwrap_or_else(|| {
                    panic!(
                        "no stable/canary pair in the route: {}",
                        pretty(&route.data)
                    )
                })
            }
        }
    }

    /// Sample the weight until it is `want` again; panics when someone
    /// else's value stayed longer than [`RESTORE_WITHIN`] after `started`
    /// (when the kubectl that made the change returned: its write had landed
    /// by then, and kubectl's own start-up, seconds on a loaded machine, is
    /// not rollwise's time). Then the weight must stay at `want` for
    /// [`STEADY_FOR`].
    async fn wait_restored(&self, started: Instant, want: u8, after: &str) {
        let mut seen: Vec<(Duration, u8)> = Vec::new();
        loop {
            self.ns.check_operators();
            let w = self.weight().await;
            let at = started.elapsed();
            if seen.last().is_none_or(|(_, last)| *last != w) {
                seen.push((at, w));
            }
            if w == want {
                eprintln!(
                    "[ownership] {}: {want}% back {:.1}s after {after} (weights seen: {})",
                    self.router.kind(),
                    at.as_secs_f64(),
                    timeline(&seen)
                );
                break;
            }
            if at > RESTORE_WITHIN {
                let r = self.ns.rollout(ROLLOUT).await;
                panic!(
                    "rollwise did not put its weight {want}% back within {RESTORE_WITHIN:?} after {after}: \
                     weights seen (time since the change: canary %): {}; Rollout: {}; Events:\n{}",
                    timeline(&seen),
                    common::cluster::summary(&r),
                    events_text(&self.ns.client, &self.ns.name).await
                );
            }
            tokio::time::sleep(SAMPLE).await;
        }
        self.assert_weight_stays(want, &format!("once restored after {after}"))
            .await;
    }

    /// The weight is `want` at every sample for [`STEADY_FOR`].
    async fn assert_weight_stays(&self, want: u8, when: &str) {
        let end = Instant::now() + STEADY_FOR;
        while Instant::now() < end {
            let w = self.weight().await;
            assert_eq!(w, want, "the canary weight moved {when}");
            tokio::time::sleep(SAMPLE).await;
        }
    }

    /// rollwise's merge patch makes it the owner (operation Update) of the
    /// whole list it writes, and nobody else owns it.
    async fn assert_rollwise_owns_the_list(&self, when: &str) {
        let route = self.user_object().await;
        eprintln!(
            "[ownership] {} managedFields {when}: {}",
            self.router.kind(),
            managed_summary(&route)
        );
        let owners: Vec<(String, String)> = managers_of(&route)
            .into_iter()
            .filter(|m| owns(&m.fields, self.router.list_keys()))
            .map(|m| (m.manager, m.operation))
            .collect();
        assert_eq!(
            owners,
            vec![(FIELD_MANAGER.to_string(), "Update".to_string())],
            "{when}: rollwise (merge patch: operation Update) owns {} and nobody else does",
            self.router.list_path()
        );
    }

    /// The Rollout still holds 30% at its pause, as its status says.
    async fn assert_status_held(&self) {
        let r = self.ns.rollout(ROLLOUT).await;
        let status = r.status.clone().unwrap_or_default();
        assert_eq!(
            (status.phase, status.canary_weight),
            (Phase::Paused, i32::from(HELD)),
            "the Rollout: {}",
            common::cluster::summary(&r)
        );
        assert_eq!(self.weight().await, HELD);
    }

    /// The canary Ingress carries the user's hosts (`edited`: with the new
    /// host; otherwise without it), within [`RESTORE_WITHIN`].
    async fn wait_canary_follows_user(&self, edited: bool, what: &str) {
        let started = Instant::now();
        let want = |ingress: &DynamicObject| {
            ingress_hosts(ingress).iter().any(|h| h == NEW_HOST) == edited
        };
        eventually(
            &format!("the canary Ingress to follow the user's Ingress: {what}"),
            RESTORE_WITHIN,
            || async {
                match self.canary_ingress().await {
                    Some(c) if want(&c) => Ok(()),
                    Some(c) => Err(format!("canary Ingress hosts {:?}", ingress_hosts(&c))),
                    None => Err("no canary Ingress".to_string()),
                }
            },
        )
        .await;
        eprintln!(
            "[ownership] canary Ingress followed the user's Ingress ({what}) after {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
}

// ---------------------------------------------------------------------------
// managedFields, kubectl output
// ---------------------------------------------------------------------------

struct Managed {
    manager: String,
    operation: String,
    fields: Value,
}

fn managers_of(obj: &DynamicObject) -> Vec<Managed> {
    obj.metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| Managed {
            manager: m.manager.clone().unwrap_or_default(),
            operation: m.operation.clone().unwrap_or_default(),
            fields: m
                .fields_v1
                .as_ref()
                .map(|f| f.0.clone())
                .unwrap_or(Value::Null),
        })
        .collect()
}

/// Whether `fields` (a managedFields `fieldsV1`) owns `spec.<keys...>`.
fn owns(fields: &Value, keys: &[&str]) -> bool {
    let mut at = &fields["f:spec"];
    for key in keys {
        match at.get(format!("f:{key}")) {
            Some(next) => at = next,
            None => return false,
        }
    }
    true
}

/// The managers whose entry owns `spec.<keys...>`.
fn list_owners(obj: &DynamicObject, keys: &[&str]) -> Vec<String> {
    managers_of(obj)
        .into_iter()
        .filter(|m| owns(&m.fields, keys))
        .map(|m| m.manager)
        .collect()
}

/// `manager (operation): top-level spec fields` per entry.
fn managed_summary(obj: &DynamicObject) -> String {
    managers_of(obj)
        .iter()
        .map(|m| {
            let spec: Vec<String> = m.fields["f:spec"]
                .as_object()
                .map(|o| o.keys().filter(|k| *k != ".").cloned().collect())
                .unwrap_or_default();
            let annotations = m.fields["f:metadata"]["f:annotations"]
                .as_object()
                .map(|o| o.keys().filter(|k| *k != ".").count())
                .unwrap_or(0);
            format!(
                "[{} ({}): spec {spec:?}, {annotations} annotation(s)]",
                m.manager, m.operation
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn timeline(seen: &[(Duration, u8)]) -> String {
    seen.iter()
        .map(|(at, w)| format!("{:.1}s: {w}%", at.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn describe_output(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    format!(
        "exit {}; stderr: {}; stdout: {} bytes",
        out.status,
        stderr(out).trim(),
        stdout.len()
    )
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        describe_output(out)
    );
}

/// The object kubectl printed (`-o json`).
fn applied_object(out: &Output) -> DynamicObject {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "kubectl printed no object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The notes of the `RouteChanged` Warning Events in the namespace, oldest
/// first.
async fn route_changed_notes(ns: &TestNs) -> Vec<String> {
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let mut list: Vec<_> = events
        .list(&Default::default())
        .await
        .expect("list Events")
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("RouteChanged") && e.type_.as_deref() == Some("Warning")
        })
        .collect();
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    list.into_iter().filter_map(|e| e.note).collect()
}
