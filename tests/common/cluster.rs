//! Support for the tests that run against a real Kubernetes API server:
//! the realk8s kit that `scripts/test.sh` starts (kube-apiserver and
//! kube-controller-manager v1.28.7, see `../shared/realk8s/README.md`), or
//! any cluster named by `ROLLWISE_E2E_KUBECONFIG`.
//!
//! - [`Cluster::connect`] returns `None` (after one `SKIPPED:` line) when no
//!   cluster is configured, so a laptop without the kit still runs the rest
//!   of the suite; `scripts/test.sh` sets the variable whenever the kit is
//!   there, and fails when the kit does not come up.
//! - [`in_namespace`] runs a test body in a fresh namespace and always tears
//!   it down; on a panic it prints diagnostics first (Rollouts with status,
//!   Events, Deployments, any other kinds the test registered, the logs of
//!   the operators it started).
//! - [`Operator`] is `rollwise run` as a child process with the identity the
//!   test gives it (the admin kubeconfig, or a ServiceAccount token from
//!   [`Cluster::token_kubeconfig`]).
//!
//! Every test uses its own namespace (labelled `rollwise.io/e2e=true`), so
//! tests share one cluster and run in parallel. After a killed run:
//! `kubectl delete ns -l rollwise.io/e2e=true`.

#![allow(dead_code)] // each test crate uses part of this module

use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Service, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use rollwise::api::{Phase, Rollout};
use serde_json::{Value, json};

use super::prometheus::free_port;

/// Names the kubeconfig of the cluster to test against.
pub const KUBECONFIG_ENV: &str = "ROLLWISE_E2E_KUBECONFIG";
/// Field manager of every write the tests make.
pub const FIELD_MANAGER: &str = "rollwise-e2e";
/// Label on the test namespaces (value `true`).
pub const E2E_LABEL: &str = "rollwise.io/e2e";
/// The CRD as users install it (`kubectl apply -f crds/`).
pub const ROLLOUT_CRD_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/rollout.yaml");
/// The kit's folder of router CRDs (Istio, Traefik, SMI), applied by
/// `scripts/test.sh` after the kit is up.
pub const ROUTER_CRDS_HINT: &str = "kubectl apply --server-side -f ../shared/realk8s/router-crds/";
/// The container image of test Deployments (never pulled by the kit's fake
/// kubelet; a real cluster can run it).
pub const IMAGE: &str = "registry.k8s.io/pause:3.10";

pub const POLL: Duration = Duration::from_millis(500);
pub const CRD_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEPLOYMENT_TIMEOUT: Duration = Duration::from_secs(120);
pub const OPERATOR_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a Rollout may stay in a terminal phase a wait does not accept
/// before the wait fails (the operator records a rollback in two writes).
const TERMINAL_SETTLE: Duration = Duration::from_secs(5);
/// How long a teardown waits for a running operator to finalize Rollouts
/// before it strips the finalizer itself.
const TEARDOWN_FINALIZE_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------

/// The cluster of `ROLLWISE_E2E_KUBECONFIG`, as its admin.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    /// Absolute path of the admin kubeconfig.
    pub kubeconfig: PathBuf,
}

impl Cluster {
    /// `None` (after printing one line saying why) when no cluster is
    /// configured.
    pub async fn connect() -> Option<Cluster> {
        let Some(path) = std::env::var_os(KUBECONFIG_ENV).filter(|p| !p.is_empty()) else {
            eprintln!(
                "SKIPPED: no real API server ({KUBECONFIG_ENV} is not set; `bash scripts/test.sh` sets it when ../shared/realk8s is there)"
            );
            return None;
        };
        let path = std::path::absolute(PathBuf::from(&path))
            .unwrap_or_else(|e| panic!("{KUBECONFIG_ENV}={path:?}: {e}"));
        assert!(
            path.is_file(),
            "{KUBECONFIG_ENV}={} is not a file (unset it to skip the cluster tests)",
            path.display()
        );
        let client = client_for(&path).await;
        Some(Cluster {
            client,
            kubeconfig: path,
        })
    }

    /// Server-side apply `crds/rollout.yaml` (forced, as `kubectl apply
    /// --server-side --force-conflicts`) and wait until Rollouts are served.
    /// Panics with the API server's message when it refuses the CRD: nobody
    /// could install rollwise on this Kubernetes version.
    pub async fn install_rollout_crd(&self) {
        let crd = rollout_crd();
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{ROLLOUT_CRD_FILE} has no metadata.name"))
            .to_string();
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        crds.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("the API server refuses {ROLLOUT_CRD_FILE} (CRD {name}): {e}"));
        self.wait_crds_established(&[&name]).await;
        let rollouts: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &ApiResource::erase::<Rollout>(&()));
        eventually("rollouts.rollwise.io to be served", CRD_TIMEOUT, || {
            let rollouts = rollouts.clone();
            async move {
                rollouts
                    .list(&ListParams::default().limit(1))
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("list rollouts: {e}"))
            }
        })
        .await;
    }

    /// Panics naming the missing CRD (and how to install it) unless every
    /// one of `names` exists and is Established.
    pub async fn require_crds(&self, names: &[&str], how_to_install: &str) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for name in names {
            match crds.get_opt(name).await {
                Ok(Some(_)) => {}
                Ok(None) => panic!(
                    "the CRD {name} is not installed in the cluster of {KUBECONFIG_ENV}; install it first:\n    {how_to_install}"
                ),
                Err(e) => panic!("cannot read the CRD {name}: {e}"),
            }
        }
        self.wait_crds_established(names).await;
    }

    pub async fn wait_crds_established(&self, names: &[&str]) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for name in names {
            let name = name.to_string();
            eventually(
                &format!("CRD {name} to be Established"),
                CRD_TIMEOUT,
                || {
                    let (crds, name) = (crds.clone(), name.clone());
                    async move {
                        let crd = crds.get(&name).await.map_err(|e| format!("get: {e}"))?;
                        let conditions = crd
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.clone())
                            .unwrap_or_default();
                        if let Some(c) = conditions
                            .iter()
                            .find(|c| c.type_ == "NamesAccepted" && c.status == "False")
                        {
                            panic!("CRD {name}: names not accepted: {:?}", c.message);
                        }
                        if conditions
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                        {
                            Ok(())
                        } else {
                            Err(format!("conditions: {conditions:?}"))
                        }
                    }
                },
            )
            .await;
        }
    }

    /// A fresh, uniquely named namespace labelled `rollwise.io/e2e=true`,
    /// once its `default` ServiceAccount exists (Pods are refused before).
    pub async fn create_namespace(&self, label: &str) -> String {
        let name = unique_namespace(label);
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {E2E_LABEL: "true"}}
        }))
        .expect("static namespace");
        namespaces
            .create(&post_params(), &ns)
            .await
            .unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &name);
        eventually(
            &format!("ServiceAccount {name}/default"),
            Duration::from_secs(60),
            || {
                let accounts = accounts.clone();
                async move {
                    match accounts.get_opt("default").await {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err("not yet created".to_string()),
                        Err(e) => Err(format!("get: {e}")),
                    }
                }
            },
        )
        .await;
        eprintln!("[e2e] namespace {name} created");
        name
    }

    /// Delete a namespace (background); never panics.
    pub async fn delete_namespace(&self, ns: &str) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces.delete(ns, &DeleteParams::background()).await {
            Ok(_) => eprintln!("[e2e] namespace {ns} deleted"),
            Err(e) => eprintln!(
                "[e2e] cannot delete namespace {ns} ({e}): delete it by hand (kubectl delete ns -l {E2E_LABEL}=true)"
            ),
        }
    }

    /// `kubectl` (the kit's, first on `PATH` under `scripts/test.sh`) as
    /// this cluster's admin.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new("kubectl");
        c.env("KUBECONFIG", &self.kubeconfig);
        c
    }

    /// Run `kubectl ARGS` as admin; panics with its output unless it exits 0.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        run_ok(self.kubectl().args(args))
    }

    /// A kubeconfig at `path` that authenticates with nothing but a token of
    /// the ServiceAccount `ns/name` (`kubectl create token`, through the real
    /// TokenRequest API and token authenticator), against this cluster's
    /// server and CA.
    pub async fn token_kubeconfig(&self, ns: &str, name: &str, path: &Path) -> PathBuf {
        let token = self.kubectl_ok(&["-n", ns, "create", "token", name, "--duration=2h"]);
        let token = token.trim();
        assert!(!token.is_empty(), "kubectl create token printed nothing");
        let admin = Kubeconfig::read_from(&self.kubeconfig).expect("read the admin kubeconfig");
        let cluster = admin
            .clusters
            .first()
            .and_then(|c| c.cluster.clone())
            .expect("the admin kubeconfig names a cluster");
        let server = cluster.server.expect("a server address");
        let ca = cluster
            .certificate_authority_data
            .expect("the admin kubeconfig embeds the CA");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: {name}@e2e\n  context:\n    cluster: e2e\n    user: {name}\n    namespace: {ns}\ncurrent-context: {name}@e2e\n"
        );
        std::fs::write(path, text).expect("write the token kubeconfig");
        path.to_path_buf()
    }
}

/// A client for the kubeconfig at `path` (its current context), with the
/// same TLS set-up as the `rollwise` binary.
pub async fn client_for(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("cannot read the kubeconfig {}: {e}", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot use the kubeconfig {}: {e}", path.display()));
    rollwise::install_crypto_provider();
    Client::try_from(config)
        .unwrap_or_else(|e| panic!("cannot build a client for {}: {e}", path.display()))
}

/// `crds/rollout.yaml` as JSON.
pub fn rollout_crd() -> Value {
    let text = std::fs::read_to_string(ROLLOUT_CRD_FILE)
        .unwrap_or_else(|e| panic!("cannot read {ROLLOUT_CRD_FILE}: {e}"));
    serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{ROLLOUT_CRD_FILE} is not valid YAML: {e}"))
}

/// `rollwise-e2e-<label>-<10 hex digits>`: unique across runs and tests.
pub fn unique_namespace(label: &str) -> String {
    format!("rollwise-e2e-{label}-{}", unique_suffix())
}

/// 10 hex digits, different at every call (also across processes).
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64;
    let mixed =
        (nanos ^ (u64::from(std::process::id()) << 40) ^ COUNTER.fetch_add(1, Ordering::Relaxed))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{:010x}", mixed >> 24)
}

pub fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// A test's namespace: set up, diagnose on failure, always torn down
// ---------------------------------------------------------------------------

/// One test's namespace, the operators it started and the kinds worth
/// showing when it fails.
pub struct TestNs {
    pub cluster: Cluster,
    pub client: Client,
    pub name: String,
    operators: Mutex<Vec<Arc<Operator>>>,
    shown: Mutex<Vec<(String, ApiResource)>>,
    notes: Mutex<Vec<String>>,
}

/// Run `body` in a fresh namespace; skips (returns) when no cluster is
/// configured. The Rollout CRD is applied first. The namespace is torn down
/// whatever happens; on a panic the diagnostics are printed first, then the
/// panic goes on.
pub async fn in_namespace(label: &str, body: impl AsyncFnOnce(&TestNs)) {
    let Some(cluster) = Cluster::connect().await else {
        return;
    };
    cluster.install_rollout_crd().await;
    in_namespace_of(&cluster, label, body).await;
}

/// [`in_namespace`] on a cluster already connected.
pub async fn in_namespace_of(cluster: &Cluster, label: &str, body: impl AsyncFnOnce(&TestNs)) {
    let name = cluster.create_namespace(label).await;
    let ns = TestNs {
        cluster: cluster.clone(),
        client: cluster.client.clone(),
        name,
        operators: Mutex::new(Vec::new()),
        shown: Mutex::new(Vec::new()),
        notes: Mutex::new(Vec::new()),
    };
    let outcome = AssertUnwindSafe(body(&ns)).catch_unwind().await;
    if outcome.is_err() {
        eprintln!("{}", ns.diagnostics().await);
    }
    ns.teardown().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

impl TestNs {
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn dynamic(&self, ar: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.name, ar)
    }

    /// Rollouts as raw objects: a status this build cannot parse still shows.
    pub fn raw_rollouts(&self) -> Api<DynamicObject> {
        self.dynamic(&ApiResource::erase::<Rollout>(&()))
    }

    /// Start `rollwise run` for this namespace (see [`OperatorOptions`]); it
    /// is killed at teardown and its log shown on failure.
    pub async fn start_operator(&self, options: OperatorOptions) -> Arc<Operator> {
        let op = Arc::new(Operator::start(options));
        self.operators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(op.clone());
        op.wait_ready().await;
        op
    }

    /// Start `rollwise run` as admin, watching only this namespace.
    pub async fn start_admin_operator(&self) -> Arc<Operator> {
        self.start_operator(OperatorOptions::new(&self.cluster.kubeconfig).namespace(&self.name))
            .await
    }

    /// Show the objects of this kind in the diagnostics.
    pub fn show(&self, title: &str, ar: ApiResource) {
        self.shown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((title.to_string(), ar));
    }

    /// A line printed with the diagnostics (e.g. the address of a server the
    /// test started).
    pub fn note(&self, line: String) {
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }

    fn operators(&self) -> Vec<Arc<Operator>> {
        self.operators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Panics (with its log) when an operator this test started has exited
    /// unexpectedly. Operators the test stopped on purpose are skipped.
    pub fn check_operators(&self) {
        for op in self.operators() {
            op.check_alive();
        }
    }

    /// Create `obj` (any namespaced kind) in this namespace.
    pub async fn create<K>(&self, obj: &K) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let api: Api<K> = self.api();
        api.create(&post_params(), obj).await.unwrap_or_else(|e| {
            panic!(
                "cannot create {} {}: {e}",
                K::kind(&Default::default()),
                obj.name_any()
            )
        })
    }

    /// Create a raw object of kind `ar` in this namespace.
    pub async fn create_dynamic(&self, ar: &ApiResource, data: Value) -> DynamicObject {
        let name = data["metadata"]["name"]
            .as_str()
            .expect("the object has a name")
            .to_string();
        let mut obj: DynamicObject = serde_json::from_value(data).unwrap_or_else(|e| {
            panic!("{} {name} is not an object: {e}", ar.kind);
        });
        obj.metadata.namespace = Some(self.name.clone());
        obj.types = Some(kube::core::TypeMeta {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
        });
        self.dynamic(ar)
            .create(&post_params(), &obj)
            .await
            .unwrap_or_else(|e| panic!("cannot create {} {name}: {e}", ar.kind))
    }

    /// Deployments `names` (`replicas` each) and a Service of the same name
    /// selecting each, then wait until every Deployment is available.
    pub async fn versions(&self, names: &[&str], replicas: i32) {
        for name in names {
            self.create(&deployment(&self.name, name, replicas)).await;
            self.create(&service(&self.name, name)).await;
        }
        self.wait_deployments_available(names).await;
    }

    /// Every named Deployment has observed its spec and has every replica
    /// updated and available (what the operator checks).
    pub async fn wait_deployments_available(&self, names: &[&str]) {
        let deployments: Api<Deployment> = self.api();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        eventually(
            &format!("Deployments {names:?} to be available"),
            DEPLOYMENT_TIMEOUT,
            || {
                let (deployments, names) = (deployments.clone(), names.clone());
                async move {
                    let mut waiting = Vec::new();
                    for name in &names {
                        match deployments.get(name).await {
                            Ok(d) => {
                                if let Some(why) = deployment_not_available(&d) {
                                    waiting.push(format!("{name}: {why}"));
                                }
                            }
                            Err(e) => waiting.push(format!("{name}: get: {e}")),
                        }
                    }
                    if waiting.is_empty() {
                        Ok(())
                    } else {
                        Err(waiting.join("; "))
                    }
                }
            },
        )
        .await;
    }

    pub async fn rollout(&self, name: &str) -> Rollout {
        self.api::<Rollout>()
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("cannot read Rollout {name}: {e}"))
    }

    /// Poll the Rollout until `done` says yes; prints each new state; fails
    /// at once when an operator exits or the Rollout reaches a terminal phase
    /// `done` does not accept.
    pub async fn wait_rollout(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Rollout) -> bool,
    ) -> Rollout {
        let deadline = Deadline::new(format!("Rollout {name}: {what}"), timeout);
        let mut last_seen = String::new();
        let mut terminal_since: Option<Instant> = None;
        loop {
            self.check_operators();
            let r = self.rollout(name).await;
            let summary = summary(&r);
            if summary != last_seen {
                eprintln!("[e2e] {}/{name}: {summary}", self.name);
                last_seen = summary.clone();
            }
            if done(&r) {
                return r;
            }
            // A terminal phase that is not what we wait for fails the wait
            // once it has settled (a rollback records the phase before it
            // moves the traffic, and the weight after).
            let ended = r.status.as_ref().is_some_and(|s| {
                s.phase.is_terminal() && r.metadata.generation.unwrap_or(0) <= s.observed_generation
            });
            match (ended, terminal_since) {
                (false, _) => terminal_since = None,
                (true, None) => terminal_since = Some(Instant::now()),
                (true, Some(t)) => assert!(
                    t.elapsed() < TERMINAL_SETTLE,
                    "Rollout {name} ended while waiting for {what}: {summary}"
                ),
            }
            deadline.wait(summary).await;
        }
    }

    /// Wait for phase `want` with `status.canaryWeight == weight` (when the
    /// weight goes down, the operator records the phase before it moves the
    /// traffic and the weight after: the phase alone does not mean the route
    /// is done).
    pub async fn wait_phase(
        &self,
        name: &str,
        want: Phase,
        weight: i32,
        timeout: Duration,
    ) -> Rollout {
        self.wait_rollout(
            name,
            &format!("phase {} with canary weight {weight}", want.as_str()),
            timeout,
            |r| {
                r.status
                    .as_ref()
                    .is_some_and(|s| s.phase == want && s.canary_weight == weight)
            },
        )
        .await
    }

    /// The namespace's Events contain `needle`, eventually (an Event is
    /// published after the status it tells of, so it is waited for).
    pub async fn wait_event(&self, needle: &str) {
        eventually(
            &format!("an Event with {needle:?}"),
            Duration::from_secs(30),
            || {
                let (client, name) = (self.client.clone(), self.name.clone());
                let needle = needle.to_string();
                async move {
                    let text = events_text(&client, &name).await;
                    if text.contains(&needle) {
                        Ok(())
                    } else {
                        Err(text)
                    }
                }
            },
        )
        .await;
    }

    /// The weight the HTTPRoute `route` gives the backend `canary`, over
    /// all its rules (0 when it has no such backend).
    pub async fn route_canary_weight(&self, route: &str, canary: &str) -> i64 {
        let ar = ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
            "httproutes",
        );
        let route = self
            .dynamic(&ar)
            .get(route)
            .await
            .unwrap_or_else(|e| panic!("the HTTPRoute {route}: {e}"));
        route.data["spec"]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["backendRefs"].as_array().cloned().unwrap_or_default())
            .filter(|b| b["name"] == canary)
            .map(|b| b["weight"].as_i64().unwrap_or(1))
            .sum()
    }

    /// Ask for a manual action on a Rollout, as `kubectl rollwise` does: the
    /// `rollwise.io/action` annotation.
    pub async fn act(&self, name: &str, action: &str) {
        self.api::<Rollout>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"annotations": {
                    rollwise::api::ACTION_ANNOTATION: action
                }}})),
            )
            .await
            .unwrap_or_else(|e| panic!("cannot {action} {name}: {e}"));
    }

    /// Everything that helps to understand a failure. Never panics.
    pub async fn diagnostics(&self) -> String {
        let mut out = format!(
            "\n===== rollwise e2e diagnostics: namespace {} =====\n",
            self.name
        );
        for line in self.notes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("\n--- Rollouts ---\n");
        match self.raw_rollouts().list(&ListParams::default()).await {
            Ok(list) if list.items.is_empty() => out.push_str("(none)\n"),
            Ok(list) => {
                for r in list.items {
                    let shown = json!({
                        "name": r.name_any(),
                        "annotations": r.metadata.annotations,
                        "finalizers": r.finalizers(),
                        "deletionTimestamp": r.metadata.deletion_timestamp,
                        "generation": r.metadata.generation,
                        "spec": r.data.get("spec"),
                        "status": r.data.get("status"),
                    });
                    out.push_str(&pretty(&shown));
                    out.push('\n');
                }
            }
            Err(e) => out.push_str(&format!("cannot list Rollouts: {e}\n")),
        }
        let shown = self.shown.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (title, ar) in shown {
            out.push_str(&format!("\n--- {title} ---\n"));
            match self.dynamic(&ar).list(&ListParams::default()).await {
                Ok(list) if list.items.is_empty() => out.push_str("(none)\n"),
                Ok(list) => {
                    for o in list.items {
                        out.push_str(&format!(
                            "{} (resourceVersion {:?}):\n{}\n",
                            o.name_any(),
                            o.metadata.resource_version,
                            pretty(
                                &json!({"spec": o.data.get("spec"), "status": o.data.get("status")})
                            )
                        ));
                    }
                }
                Err(e) => out.push_str(&format!("cannot list: {e}\n")),
            }
        }
        out.push_str("\n--- Deployments ---\n");
        let deployments: Api<Deployment> = self.api();
        match deployments.list(&ListParams::default()).await {
            Ok(list) => {
                for d in list.items {
                    let why = deployment_not_available(&d).unwrap_or_else(|| "available".into());
                    let replicas = d.spec.as_ref().and_then(|s| s.replicas);
                    out.push_str(&format!(
                        "{} (replicas {replicas:?}): {why}\n",
                        d.name_any()
                    ));
                }
            }
            Err(e) => out.push_str(&format!("cannot list Deployments: {e}\n")),
        }
        out.push_str("\n--- Events ---\n");
        out.push_str(&events_text(&self.client, &self.name).await);
        for (i, op) in self.operators().iter().enumerate() {
            out.push_str(&format!(
                "\n--- operator {i} ({}; log {}) ---\n",
                op.describe(),
                op.log_path.display()
            ));
            out.push_str(&tail(&op.log(), 300));
        }
        out.push_str("\n===== end of diagnostics =====\n");
        out
    }

    /// Delete the Rollouts while an operator still runs (it restores traffic
    /// and removes its finalizer; after a while the finalizer is stripped
    /// here so the namespace cannot hang in Terminating), stop the operators,
    /// delete the namespace. Never panics.
    async fn teardown(self) {
        let rollouts = self.raw_rollouts();
        if let Err(e) = rollouts
            .delete_collection(&DeleteParams::background(), &ListParams::default())
            .await
        {
            eprintln!(
                "[e2e] {}: teardown: cannot delete the Rollouts: {e}",
                self.name
            );
        }
        let operator_alive = self.operators().iter().any(|o| o.is_alive());
        let deadline = Instant::now()
            + if operator_alive {
                TEARDOWN_FINALIZE_TIMEOUT
            } else {
                Duration::ZERO
            };
        loop {
            let left = match rollouts.list(&ListParams::default()).await {
                Ok(list) => list.items,
                Err(e) => {
                    eprintln!(
                        "[e2e] {}: teardown: cannot list the Rollouts: {e}",
                        self.name
                    );
                    break;
                }
            };
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for r in left {
                    let name = r.name_any();
                    let patch = json!({"metadata": {"finalizers": null}});
                    if let Err(e) = rollouts
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        eprintln!(
                            "[e2e] {}: teardown: cannot remove the finalizers of {name}: {e}",
                            self.name
                        );
                    }
                }
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        for op in self.operators() {
            op.kill();
        }
        self.cluster.delete_namespace(&self.name).await;
    }
}

/// One line: phase, step, weight, verdict, message.
pub fn summary(r: &Rollout) -> String {
    match &r.status {
        None => "no status yet".to_string(),
        Some(s) => format!(
            "phase={} step={} weight={} verdict={} observedGeneration={}/{}: {}",
            s.phase.as_str(),
            s.step,
            s.canary_weight,
            s.verdict,
            s.observed_generation,
            r.metadata.generation.unwrap_or(0),
            s.message
        ),
    }
}

/// The namespace's Events, oldest first, one per line.
pub async fn events_text(client: &Client, ns: &str) -> String {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut out = String::new();
    match events.list(&ListParams::default()).await {
        Ok(list) => {
            let mut items = list.items;
            items.sort_by_key(|e| {
                e.last_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .or(e.event_time.as_ref().map(|t| t.0))
                    .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
            });
            for e in items {
                out.push_str(&format!(
                    "{} {} {}/{} (x{}): {}\n",
                    e.type_.as_deref().unwrap_or("-"),
                    e.reason.as_deref().unwrap_or("-"),
                    e.involved_object.kind.as_deref().unwrap_or("-"),
                    e.involved_object.name.as_deref().unwrap_or("-"),
                    e.count.unwrap_or(1),
                    e.message.as_deref().unwrap_or(""),
                ));
            }
        }
        Err(e) => out.push_str(&format!("cannot list Events: {e}\n")),
    }
    out
}

/// Why a Deployment is not fully available (the operator's test: the
/// controller saw the latest spec, every replica updated and available).
pub fn deployment_not_available(d: &Deployment) -> Option<String> {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        return Some("the latest spec is not observed yet".into());
    }
    let available = status.available_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    if available >= want && updated >= want {
        return None;
    }
    let conditions: Vec<String> = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| format!("{}={} {}", c.type_, c.status, c.message.unwrap_or_default()))
        .collect();
    Some(format!(
        "{available}/{want} available, {updated}/{want} updated [{}]",
        conditions.join("; ")
    ))
}

// ---------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------

/// `replicas` of a container that does nothing, allowed by the `restricted`
/// Pod Security Standard; labels `app: checkout, version: NAME`.
pub fn deployment(ns: &str, name: &str, replicas: i32) -> Deployment {
    let labels = json!({"app": "checkout", "version": name});
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 1,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65535,
                        "runAsGroup": 65535,
                        "seccompProfile": {"type": "RuntimeDefault"}
                    },
                    "containers": [{
                        "name": "app",
                        "image": IMAGE,
                        "resources": {
                            "requests": {"cpu": "5m", "memory": "8Mi"},
                            "limits": {"memory": "32Mi"}
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}
                        }
                    }]
                }
            }
        }
    }))
    .expect("static deployment")
}

/// A Service selecting the pods of the Deployment `name`.
pub fn service(ns: &str, name: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "checkout"}},
        "spec": {
            "selector": {"app": "checkout", "version": name},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]
        }
    }))
    .expect("static service")
}

// ---------------------------------------------------------------------------
// The operator process
// ---------------------------------------------------------------------------

/// How to start `rollwise run`.
#[derive(Clone, Debug)]
pub struct OperatorOptions {
    pub kubeconfig: PathBuf,
    pub namespace: Option<String>,
    /// `(lease namespace, identity, lease duration seconds)`.
    pub leader_election: Option<(String, String, u64)>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl OperatorOptions {
    pub fn new(kubeconfig: &Path) -> Self {
        OperatorOptions {
            kubeconfig: kubeconfig.to_path_buf(),
            namespace: None,
            leader_election: None,
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Watch only this namespace (`--namespace`).
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.to_string());
        self
    }

    /// `--leader-election` on the Lease `rollwise-leader` in `lease_ns`, as
    /// `identity`.
    pub fn leader_election(mut self, lease_ns: &str, identity: &str, seconds: u64) -> Self {
        self.leader_election = Some((lease_ns.to_string(), identity.to_string(), seconds));
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// `rollwise run` as a child process, its stdout and stderr in a log file;
/// killed on drop.
pub struct Operator {
    child: Mutex<Child>,
    pub addr: SocketAddr,
    pub log_path: PathBuf,
    pub options: OperatorOptions,
    /// Set when the test stops it on purpose: no longer "unexpectedly dead".
    stopped: std::sync::atomic::AtomicBool,
    _dir: tempfile::TempDir,
}

impl Operator {
    pub fn start(options: OperatorOptions) -> Operator {
        let dir = tempfile::Builder::new()
            .prefix("rollwise-e2e-operator-")
            .tempdir()
            .expect("create a temporary directory");
        let log_path = dir.path().join("operator.log");
        let log = File::create(&log_path).expect("create the operator log file");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        // Prometheus and webhooks are on 127.0.0.1: never through a proxy.
        let no_proxy = ["NO_PROXY", "no_proxy"]
            .iter()
            .filter_map(|k| std::env::var(k).ok())
            .filter(|v| !v.is_empty())
            .chain(["127.0.0.1,localhost".to_string()])
            .collect::<Vec<_>>()
            .join(",");
        let mut command = Command::new(env!("CARGO_BIN_EXE_rollwise"));
        // The operator's settings come from the options only: none of the
        // developer's ROLLWISE_* or in-cluster identity variables.
        for (key, _) in std::env::vars_os() {
            let key_str = key.to_string_lossy();
            if key_str.starts_with("ROLLWISE_")
                || ["POD_NAME", "POD_NAMESPACE", "RUST_LOG"].contains(&key_str.as_ref())
            {
                command.env_remove(&key);
            }
        }
        command
            .args(["--log-format", "text", "--log", "info,rollwise=debug"])
            .arg("run")
            .args(["--http-addr", &addr.to_string()]);
        if let Some(ns) = &options.namespace {
            command.args(["--namespace", ns]);
        }
        if let Some((lease_ns, identity, seconds)) = &options.leader_election {
            command
                .arg("--leader-election")
                .args(["--lease-namespace", lease_ns])
                .args(["--instance", identity])
                .args(["--lease-duration-seconds", &seconds.to_string()]);
        }
        command.args(&options.args);
        for (k, v) in &options.env {
            command.env(k, v);
        }
        let child = command
            .env("KUBECONFIG", &options.kubeconfig)
            .env("NO_COLOR", "1")
            .env("NO_PROXY", &no_proxy)
            .env("no_proxy", &no_proxy)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", env!("CARGO_BIN_EXE_rollwise")));
        let op = Operator {
            child: Mutex::new(child),
            addr,
            log_path,
            options,
            stopped: std::sync::atomic::AtomicBool::new(false),
            _dir: dir,
        };
        eprintln!("[e2e] operator started: {}", op.describe());
        op
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|p| p.into_inner()).id()
    }

    pub fn describe(&self) -> String {
        format!(
            "pid {}, http {}, namespace {:?}, leader election {:?}, kubeconfig {}",
            self.pid(),
            self.addr,
            self.options.namespace,
            self.options.leader_election,
            self.options.kubeconfig.display()
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn is_alive(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        matches!(child.try_wait(), Ok(None))
    }

    /// Panics (with the log) when the operator has exited and the test did
    /// not stop it.
    pub fn check_alive(&self) {
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        let status = {
            let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
            child.try_wait().expect("poll the operator process")
        };
        if let Some(status) = status {
            panic!(
                "the operator ({}) exited ({status}); its log:\n{}",
                self.describe(),
                tail(&self.log(), 300)
            );
        }
    }

    /// Send a signal (`"TERM"`, `"KILL"`, ...) and mark the operator as
    /// stopped on purpose.
    pub fn signal(&self, signal: &str) {
        self.stopped.store(true, Ordering::SeqCst);
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Wait (bounded) for the process to exit; its exit status.
    pub async fn wait_exit(&self, timeout: Duration) -> ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            {
                let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(status) = child.try_wait().expect("poll the operator process") {
                    return status;
                }
            }
            assert!(
                Instant::now() < end,
                "the operator ({}) did not exit within {timeout:?}",
                self.describe()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kill it (SIGKILL) and reap it. Idempotent.
    pub fn kill(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Wait until `/readyz` answers 200 (the Rollout watch has synced; a
    /// standby under leader election answers 200 too).
    pub async fn wait_ready(&self) {
        let addr = self.addr;
        eventually(
            &format!("the operator's http://{addr}/readyz"),
            OPERATOR_READY_TIMEOUT,
            || async move {
                self.check_alive();
                match tokio::task::spawn_blocking(move || http_get(addr, "/readyz"))
                    .await
                    .expect("the probe does not panic")
                {
                    Ok((200, _)) => Ok(()),
                    Ok((code, body)) => Err(format!("status {code}: {body}")),
                    Err(e) => Err(e),
                }
            },
        )
        .await;
    }

    /// The operator's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let addr = self.addr;
        match tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
            .await
            .expect("the probe does not panic")
        {
            Ok((200, body)) => body,
            other => panic!("GET http://{addr}/metrics: {other:?}"),
        }
    }

    /// Sum of the samples of `family` whose labels include every one of
    /// `labels` (`name="value"` pairs).
    pub async fn metric_sum(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics().await, family, labels)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Sum of the samples of `family` in a Prometheus text exposition whose
/// labels include every one of `labels`.
pub fn metric_sum(text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name_labels, value) = l.rsplit_once(' ')?;
            let (name, rest) = match name_labels.find('{') {
                Some(i) => (&name_labels[..i], &name_labels[i..]),
                None => (name_labels, ""),
            };
            if name != family {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Status code and body of a plain HTTP/1.0 GET on 127.0.0.1.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {:?}", &text[..text.len().min(40)]))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// Poll `f` until it returns `Ok`; panics with the last `Err` (the state seen)
/// after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Deadline::new(what.to_string(), timeout);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(state) => deadline.wait(state).await,
        }
    }
}

/// A bounded wait: `wait` sleeps one poll interval, or panics with the last
/// observed state once the time is up.
pub struct Deadline {
    what: String,
    timeout: Duration,
    end: Instant,
}

impl Deadline {
    pub fn new(what: String, timeout: Duration) -> Self {
        Deadline {
            what,
            timeout,
            end: Instant::now() + timeout,
        }
    }

    pub async fn wait(&self, last_state: String) {
        if Instant::now() >= self.end {
            panic!(
                "timed out after {:?} waiting for {}; last state: {last_state}",
                self.timeout, self.what
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Run a command; panics with its output unless it exits 0; its stdout.
pub fn run_ok(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("(not serializable: {e})"))
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("[... {start} earlier lines ...]\n"));
    }
    for line in &all[start..] {
        out.push_str(line);
        out.push('\n');
    }
    out
}
