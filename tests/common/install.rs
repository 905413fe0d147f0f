//! The operator installed as users install it: the real `helm install` of
//! `charts/rollwise` (CRD included), then `rollwise run` out of cluster with
//! the identity that install gives the operator, and nothing more.
//!
//! ```ignore
//! in_namespace("gw", async |ns: &TestNs| {
//!     // A release of its own (unique name) in the test's namespace, watching
//!     // only that namespace (a Role, not a ClusterRole), with these values.
//!     let install = Install::helm(&ns.cluster, &ns.name, &[("routers.nginx", "true")]).await;
//!     // `rollwise run` with a kubeconfig holding only a token of the chart's
//!     // ServiceAccount, leader election on the release's Lease, and the
//!     // environment of the chart's Deployment (read from the release).
//!     let op = ns.start_operator(install.operator_options(&ns.name).await).await;
//!     // ... create Deployments, Services, the route, a Rollout; wait ...
//!     // Delete the Rollouts (the operator finalizes them under the chart's
//!     // RBAC), fail on any 403 the operator met, stop it, `helm uninstall`.
//!     install.finish(ns, &[&op]).await;
//! })
//! .await;
//! ```
//!
//! - [`Install::helm`] runs `helm install --wait` of a release named
//!   `rollwise-e2e-<10 hex digits>` (unique per test and run; it contains
//!   "rollwise", so every object of the release, the ServiceAccount and the
//!   ClusterRole included, has exactly that name) in the given namespace.
//!   `watchNamespaces` is that namespace unless the values set it (a value
//!   that starts with `[` or `{` is JSON: `("watchNamespaces", "[]")` installs
//!   the ClusterRole mode). Helm applies `crds/` as well (Helm 4 applies it
//!   server-side when it is already there).
//! - [`Install::operator_options`] is what the chart's Deployment would run:
//!   its container's environment, taken from the installed release's
//!   manifest (`helm get manifest`), with the downward-API values filled in as
//!   the kubelet would (`POD_NAME`: a new identity per call, `POD_NAMESPACE`:
//!   the release namespace). So leader election is on (the chart's default of
//!   2 replicas) on the Lease `<release>-leader` in the release namespace.
//!   `--namespace` is always given, so an operator of a cluster-wide release
//!   still only acts in the test's namespace. The kubeconfig holds only a
//!   token of the chart's ServiceAccount (`kubectl create token`).
//! - The chart's own Deployment is installed too, and its pods become
//!   Running in the kit, but the fake kubelet runs no container: nothing
//!   competes for the Lease with the operator the test starts. (On a real
//!   cluster the image would run; use `("replicas", "1")` there if needed.)
//! - [`assert_no_forbidden`] fails the test when the operator met a 403: its
//!   log mentions `forbidden` (every refused API call is logged: reconcile
//!   errors, Events that could not be published, the Lease), or its metrics
//!   `rollwise_reconcile_errors_total{category="forbidden"}` or
//!   `rollwise_kube_requests_total{code="403"}` are not 0.
//! - [`Install::granted`] and [`requests_made`] (what `finish` returns)
//!   compare what the chart grants with what the operator used.
//! - [`Install::finish`] ends a test that went well; [`Install::uninstall`]
//!   is `helm uninstall --wait`. When the `Install` is dropped without either
//!   (a failed test), it runs `helm uninstall` and deletes any ClusterRole or
//!   ClusterRoleBinding of the release that is left. After a killed run:
//!   `kubectl get clusterrole,clusterrolebinding -o name | grep rollwise-e2e-`
//!   (the namespaced objects go with the test namespace).

#![allow(dead_code)] // each test crate uses part of this module

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::Value;

use super::cluster::{Cluster, Operator, OperatorOptions, TestNs, eventually, tail, unique_suffix};
use rollwise::api::Rollout;

/// The chart, as users install it from a checkout.
pub const CHART_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/rollwise");
/// Prefix of the test releases' names (and so of their ClusterRoles).
pub const RELEASE_PREFIX: &str = "rollwise-e2e-";
/// `helm --wait --timeout`.
pub const HELM_TIMEOUT: &str = "120s";
/// How long [`Install::finish`] waits for the operator to finalize the
/// Rollouts.
pub const FINALIZE_TIMEOUT: Duration = Duration::from_secs(60);
/// The operator's metric of reconcile errors, by category.
pub const ERRORS_METRIC: &str = "rollwise_reconcile_errors_total";

/// One Helm release of the chart.
pub struct Install {
    pub cluster: Cluster,
    /// The release name; also the name of its ServiceAccount, Roles,
    /// ClusterRole and Deployment (`rollwise.fullname`).
    pub release: String,
    /// The release namespace (ServiceAccount, Deployment, Lease).
    pub namespace: String,
    /// The `--set`/`--set-json` values of the install.
    pub values: Vec<(String, String)>,
    /// The chart installed (and upgraded to): [`CHART_DIR`] unless
    /// [`Install::helm_chart`] named another.
    pub chart: PathBuf,
    dir: tempfile::TempDir,
    identities: AtomicU32,
    uninstalled: AtomicBool,
}

impl Install {
    /// `helm install --wait` of the chart into `namespace` (which must
    /// exist), watching that namespace unless `values` set
    /// `watchNamespaces`. Panics with Helm's output when it fails.
    pub async fn helm(cluster: &Cluster, namespace: &str, values: &[(&str, &str)]) -> Install {
        Self::helm_chart(cluster, namespace, Path::new(CHART_DIR), values).await
    }

    /// [`Install::helm`] of the chart in the directory `chart` (e.g. a
    /// modified copy of `charts/rollwise`).
    pub async fn helm_chart(
        cluster: &Cluster,
        namespace: &str,
        chart: &Path,
        values: &[(&str, &str)],
    ) -> Install {
        Self::try_helm(cluster, namespace, chart, values, &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `helm install` of `chart` with more arguments (e.g. `--skip-crds`);
    /// Err: Helm's message (what the Drop of the failed release cleaned up
    /// is printed).
    pub async fn try_helm(
        cluster: &Cluster,
        namespace: &str,
        chart: &Path,
        values: &[(&str, &str)],
        extra_args: &[&str],
    ) -> Result<Install, String> {
        let release = format!("{RELEASE_PREFIX}{}", unique_suffix());
        let mut all: Vec<(String, String)> = Vec::new();
        if !values.iter().any(|(k, _)| *k == "watchNamespaces") {
            all.push(("watchNamespaces".into(), format!("[{namespace:?}]")));
        }
        all.extend(values.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let install = Install {
            cluster: cluster.clone(),
            release,
            namespace: namespace.to_string(),
            values: all,
            chart: chart.to_path_buf(),
            dir: tempfile::Builder::new()
                .prefix("rollwise-e2e-install-")
                .tempdir()
                .expect("create a temporary directory"),
            identities: AtomicU32::new(0),
            uninstalled: AtomicBool::new(false),
        };
        let mut args = vec![
            "install".to_string(),
            install.release.clone(),
            install.chart.display().to_string(),
            "--wait".into(),
            "--timeout".into(),
            HELM_TIMEOUT.into(),
        ];
        args.extend(set_args(&install.values));
        args.extend(extra_args.iter().map(|a| a.to_string()));
        install.helm_cmd(&args)?;
        eprintln!(
            "[e2e] helm release {} installed in {namespace} ({:?})",
            install.release, install.values
        );
        Ok(install)
    }

    /// The ServiceAccount the chart gives the operator.
    pub fn service_account(&self) -> &str {
        &self.release
    }

    /// The Lease of the chart's leader election (`rollwise.leaseName`).
    pub fn lease_name(&self) -> String {
        format!("{}-leader", self.release)
    }

    /// Run `helm ARGS -n <release namespace>` against the test cluster; its
    /// output, or an error naming the command and what it printed.
    pub fn helm_cmd(&self, args: &[String]) -> Result<String, String> {
        let out = Command::new("helm")
            .args(args)
            .args(["--namespace", &self.namespace])
            .arg("--kubeconfig")
            .arg(&self.cluster.kubeconfig)
            .output()
            .map_err(|e| {
                format!("cannot run helm (is it installed? scripts/install-test-deps.sh): {e}")
            })?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "helm {} failed ({}):\n{text}",
                args.join(" "),
                out.status
            ))
        }
    }

    /// `helm upgrade --reuse-values --wait` with more values; Err: Helm's
    /// message.
    pub fn upgrade(&self, values: &[(&str, &str)]) -> Result<String, String> {
        let mut args = vec![
            "upgrade".to_string(),
            self.release.clone(),
            self.chart.display().to_string(),
            "--reuse-values".into(),
            "--wait".into(),
            "--timeout".into(),
            HELM_TIMEOUT.into(),
        ];
        let values: Vec<(String, String)> = values
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        args.extend(set_args(&values));
        self.helm_cmd(&args)
    }

    /// The release's objects as installed (`helm get manifest`).
    pub fn manifest(&self) -> Vec<Value> {
        let text = self
            .helm_cmd(&["get".into(), "manifest".into(), self.release.clone()])
            .unwrap_or_else(|e| panic!("{e}"));
        serde_saphyr::from_multiple::<Value>(&text)
            .unwrap_or_else(|e| panic!("helm get manifest is not YAML: {e}\n{text}"))
            .into_iter()
            .filter(|d| !d.is_null())
            .collect()
    }

    /// The release's object of this kind and name.
    pub fn object(&self, kind: &str, name: &str) -> Value {
        let manifest = self.manifest();
        manifest
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "release {} has no {kind} {name}: {:?}",
                    self.release,
                    manifest
                        .iter()
                        .map(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]))
                        .collect::<Vec<_>>()
                )
            })
    }

    /// The environment of the chart's operator container, values resolved
    /// as the kubelet would for a pod named `pod_name`.
    pub async fn operator_env(&self, pod_name: &str) -> Vec<(String, String)> {
        let deployment = self.object("Deployment", &self.release);
        let containers = deployment["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("the Deployment has containers");
        assert_eq!(containers.len(), 1, "one operator container");
        let mut env = Vec::new();
        for e in containers[0]["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().expect("env name").to_string();
            let value = if let Some(v) = e.get("value") {
                v.as_str().unwrap_or_default().to_string()
            } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                match path {
                    "metadata.name" => pod_name.to_string(),
                    "metadata.namespace" => self.namespace.clone(),
                    other => panic!("{name}: fieldRef {other} is not handled by the test"),
                }
            } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
                let (secret, key) = (
                    r["name"].as_str().expect("secret name"),
                    r["key"].as_str().expect("secret key"),
                );
                let secrets: Api<Secret> =
                    Api::namespaced(self.cluster.client.clone(), &self.namespace);
                let s = secrets
                    .get(secret)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: Secret {secret}: {e}"));
                let bytes = s
                    .data
                    .and_then(|d| d.get(key).cloned())
                    .unwrap_or_else(|| panic!("{name}: Secret {secret} has no key {key}"));
                String::from_utf8(bytes.0).expect("a UTF-8 secret value")
            } else {
                panic!("{name}: an env entry the test does not handle: {e}")
            };
            env.push((name, value));
        }
        env
    }

    /// `rollwise run` as one replica of the chart's Deployment would run it
    /// (see the module docs), out of cluster, confined to `watch_ns`. Each
    /// call is a new replica: a new identity and a new token.
    pub async fn operator_options(&self, watch_ns: &str) -> OperatorOptions {
        let n = self.identities.fetch_add(1, Ordering::SeqCst);
        let identity = format!("{}-local-{n}", self.release);
        let path: PathBuf = self.dir.path().join(format!("{identity}.kubeconfig"));
        let kubeconfig = self
            .cluster
            .token_kubeconfig(&self.namespace, self.service_account(), &path)
            .await;
        let env = self.operator_env(&identity).await;
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut options = OperatorOptions::new(&kubeconfig).namespace(watch_ns);
        if get("ROLLWISE_LEADER_ELECTION").as_deref() == Some("true") {
            let lease_ns = get("POD_NAMESPACE").expect("POD_NAMESPACE with leader election");
            assert_eq!(
                get("ROLLWISE_LEASE_NAME").as_deref(),
                Some(self.lease_name().as_str()),
                "the chart's Lease name"
            );
            // The chart leaves the lease duration at the default (15s).
            options = options.leader_election(&lease_ns, &identity, 15);
        }
        for (k, v) in &env {
            options = options.env(k, v);
        }
        options
    }

    /// The end of a test that went well: delete the Rollouts in `ns` while
    /// the operators run (the finalizer restores stable traffic under the
    /// chart's RBAC) and wait until they are gone, fail on any 403 the
    /// operators met, stop them, `helm uninstall`. Returns what the
    /// operators that were still running had done: [`requests_made`] of
    /// each, read just before they were stopped.
    pub async fn finish(
        self,
        ns: &TestNs,
        operators: &[&Operator],
    ) -> Vec<BTreeSet<(String, String)>> {
        let rollouts: Api<Rollout> = ns.api();
        rollouts
            .delete_collection(&DeleteParams::background(), &ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("cannot delete the Rollouts of {}: {e}", ns.name));
        eventually(
            "the operator to finalize the deleted Rollouts",
            FINALIZE_TIMEOUT,
            || {
                let rollouts = rollouts.clone();
                async move {
                    ns.check_operators();
                    let left = rollouts
                        .list(&ListParams::default())
                        .await
                        .map_err(|e| format!("list: {e}"))?;
                    if left.items.is_empty() {
                        Ok(())
                    } else {
                        Err(format!(
                            "left: {:?}",
                            left.items.iter().map(|r| r.name_any()).collect::<Vec<_>>()
                        ))
                    }
                }
            },
        )
        .await;
        let mut made = Vec::new();
        for op in operators {
            assert_no_forbidden(op).await;
            if op.is_alive() {
                made.push(requests_made(&op.metrics().await));
            }
        }
        for op in operators {
            op.kill();
        }
        self.uninstall().unwrap_or_else(|e| panic!("{e}"));
        made
    }

    /// `(resource, verb)` of every rule of the release's Roles and
    /// ClusterRoles (the API group left out, as in [`requests_made`]).
    pub fn granted(&self) -> BTreeSet<(String, String)> {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        };
        let mut granted = BTreeSet::new();
        for role in self
            .manifest()
            .iter()
            .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
        {
            for rule in role["rules"].as_array().into_iter().flatten() {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        granted.insert((resource.clone(), verb));
                    }
                }
            }
        }
        granted
    }

    /// `helm uninstall --wait`; Err: Helm's message.
    pub fn uninstall(&self) -> Result<String, String> {
        self.uninstalled.store(true, Ordering::SeqCst);
        let out = self.helm_cmd(&[
            "uninstall".into(),
            self.release.clone(),
            "--wait".into(),
            "--timeout".into(),
            HELM_TIMEOUT.into(),
        ]);
        if out.is_ok() {
            eprintln!("[e2e] helm release {} uninstalled", self.release);
        }
        out
    }

    /// Delete what Helm may have left of the release cluster-wide. Never
    /// panics.
    fn delete_cluster_objects(&self) {
        let selector = format!("app.kubernetes.io/instance={}", self.release);
        let out = self
            .cluster
            .kubectl()
            .args([
                "delete",
                "clusterrole,clusterrolebinding",
                "-l",
                &selector,
                "--ignore-not-found",
                "--wait=false",
            ])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "[e2e] cannot delete the ClusterRoles of {}: {}",
                self.release,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("[e2e] cannot run kubectl: {e}"),
        }
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        if !self.uninstalled.load(Ordering::SeqCst)
            && let Err(e) = self.uninstall()
        {
            eprintln!("[e2e] {e}");
        }
        self.delete_cluster_objects();
    }
}

/// `--set k=v` each, or `--set-json k=v` for a value that starts with `[`
/// or `{`.
fn set_args(values: &[(String, String)]) -> Vec<String> {
    values
        .iter()
        .flat_map(|(k, v)| {
            let flag = if v.starts_with('[') || v.starts_with('{') {
                "--set-json"
            } else {
                "--set"
            };
            [flag.to_string(), format!("{k}={v}")]
        })
        .collect()
}

/// The operator's count of its API requests, by verb, resource and code.
pub const REQUESTS_METRIC: &str = "rollwise_kube_requests_total";

/// `(resource, verb)` of the API requests the operator made that the API
/// server granted (2xx), from its [`REQUESTS_METRIC`] (`/metrics` text).
pub fn requests_made(metrics: &str) -> BTreeSet<(String, String)> {
    let mut made = BTreeSet::new();
    for line in metrics.lines().filter(|l| l.starts_with(REQUESTS_METRIC)) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(String::from)
        };
        let count: f64 = value.parse().unwrap_or(0.0);
        if let (Some(verb), Some(resource), Some(code)) =
            (label("verb"), label("resource"), label("code"))
            && code.starts_with('2')
            && count > 0.0
        {
            made.insert((resource, verb));
        }
    }
    made
}

/// The lines of `log` that report a refused API call (403 Forbidden).
pub fn forbidden_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("forbidden") || l.contains("code: 403") || l.contains("403 forbidden")
        })
        .collect()
}

/// Why the operator is known to have met a 403, or `None`: its log reports
/// a refused call, or `rollwise_reconcile_errors_total{category=
/// "forbidden"}` is not 0 (read while it runs).
pub async fn forbidden_report(op: &Operator) -> Option<String> {
    let log = op.log();
    let lines = forbidden_lines(&log);
    if !lines.is_empty() {
        return Some(format!(
            "the operator ({}) was refused API calls (403) under the chart's RBAC:\n{}\n\nits log:\n{}",
            op.describe(),
            lines.join("\n"),
            tail(&log, 200)
        ));
    }
    if op.is_alive() {
        let metrics = op.metrics().await;
        for (family, label) in [
            (ERRORS_METRIC, ("category", "forbidden")),
            (REQUESTS_METRIC, ("code", "403")),
        ] {
            let n = super::cluster::metric_sum(&metrics, family, &[label]);
            if n != 0.0 {
                return Some(format!(
                    "{family}{{{}=\"{}\"}} is {n} for the operator ({})",
                    label.0,
                    label.1,
                    op.describe()
                ));
            }
        }
    }
    None
}

/// Fails (with the lines and the log's tail) when the operator met a 403
/// (see [`forbidden_report`]).
pub async fn assert_no_forbidden(op: &Operator) {
    if let Some(report) = forbidden_report(op).await {
        panic!("{report}");
    }
}
