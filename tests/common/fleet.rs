//! The fleet driver: N Rollouts on a real API server, `rollwise run` as a
//! child process, and what the operator costs while it rolls them out, once
//! they are done, and while they are deleted: memory (RSS from `/proc`), CPU
//! seconds, API requests by verb and resource, reconciles per status
//! transition.
//!
//! Two users: `benches/fleet.rs` (by hand, 1,000 to 10,000 Rollouts on a
//! kit of its own; writes `docs/benchmarks/fleet.md`) and `tests/fleet.rs`
//! (a 200-Rollout smoke run on the CI kit). Include it with
//! `#[path = ".../tests/common/fleet.rs"] mod fleet;` next to `mod common;`.
//!
//! What is measured, and where it comes from:
//! - RSS and CPU: `/proc/PID/status` (VmRSS, VmHWM) and `/proc/PID/stat`
//!   (utime + stime) of the operator, sampled every few seconds.
//! - API requests: the operator's own client counter
//!   (`rollwise_kube_requests_total{verb,resource,...}`) when its `/metrics`
//!   has it; otherwise the operator runs with `kube_client=debug` and every
//!   request is counted from its log (one `requesting` line per request, with
//!   the method and URL; a `stream closed` line with the status code). Both
//!   are the operator's requests only, whoever else uses the API server.
//! - Reconciles: `rollwise_reconciles_total`. Status transitions: a watch of
//!   the fleet's Rollouts counts the changes of (phase, step, canary weight),
//!   and, apart, every change of `.status` (a message or a timestamp too).
//! - Optionally the API server's own `apiserver_request_total`, as a
//!   cross-check (it counts every client: only meaningful on a cluster of
//!   one's own).

#![allow(dead_code)] // the bench and the smoke test use different parts

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use rollwise::api::{Phase, Rollout};
use serde_json::{Value, json};

use crate::common::cluster::{
    Cluster, deployment, deployment_not_available, http_get, post_params, tail,
};
use crate::common::prometheus::free_port;

/// Label on every Rollout of a fleet run (value: the run's id).
pub const FLEET_LABEL: &str = "rollwise.io/fleet";
/// The operator's counter of its own Kubernetes API requests (read when
/// present; see the module docs).
pub const REQUEST_METRIC: &str = "rollwise_kube_requests_total";

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/// What the Rollouts do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Every canary is available: each Rollout goes through its steps to
    /// `Succeeded`; then the fleet idles (the soak).
    Complete,
    /// Every canary Deployment is scaled to 0 (never available): each
    /// Rollout waits (its last decision: `WaitingForCanary`); the soak
    /// measures what the waiting costs.
    Waiting,
}

impl Scenario {
    pub fn parse(s: &str) -> Option<Scenario> {
        match s {
            "complete" => Some(Scenario::Complete),
            "waiting" => Some(Scenario::Waiting),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Complete => "complete",
            Scenario::Waiting => "waiting",
        }
    }
}

/// How to run the fleet.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    pub rollouts: usize,
    pub scenario: Scenario,
    /// The namespaces the Rollouts are spread over (round robin). They must
    /// exist; [`run_fleet`] does not delete them.
    pub namespaces: Vec<String>,
    /// `rollwise run --namespace` (needed when the cluster is shared); else
    /// the operator watches all namespaces.
    pub operator_namespace: Option<String>,
    /// The `rollwise` binary.
    pub operator_bin: PathBuf,
    /// Admin kubeconfig for the operator.
    pub kubeconfig: PathBuf,
    /// Rollouts sharing one pair of Deployments (1: each Rollout has its own
    /// two Deployments). Services and HTTPRoutes are always per Rollout.
    pub rollouts_per_deployment: usize,
    pub stable_replicas: i32,
    /// Replicas of each canary Deployment (the `Waiting` scenario always
    /// uses 0).
    pub canary_replicas: i32,
    /// The Rollouts' `spec.steps`.
    pub steps: Value,
    /// How long the fleet is watched once every Rollout is done (Complete)
    /// or has its first status (Waiting).
    pub soak: Duration,
    /// Operator RSS/CPU sampling period.
    pub sample_every: Duration,
    /// Time with the operator running and no Rollouts, before the first
    /// create (the empty baseline).
    pub empty_baseline: Duration,
    /// Creates in flight at once.
    pub create_concurrency: usize,
    pub setup_timeout: Duration,
    /// Until every Rollout is done (Complete) / has a status (Waiting).
    pub settle_timeout: Duration,
    pub delete_timeout: Duration,
    /// Also scrape the API server's `/metrics` at each phase boundary.
    pub apiserver_metrics: bool,
    /// Print progress lines (to stderr) every so often.
    pub progress_every: Duration,
    /// Bind and start the fleet's pods from here (on the kit's Node, see
    /// [`FastKubelet`]) instead of waiting for the kit's fake kubelet, which
    /// starts about one pod a second.
    pub fast_kubelet: Option<String>,
}

impl FleetOptions {
    /// The steps of the reference measurement in issue 9: 50% → pause 5s → 100%.
    pub fn reference_steps() -> Value {
        json!([{"setWeight": 50}, {"pause": {"duration": "5s"}}, {"setWeight": 100}])
    }

    pub fn steps_text(&self) -> String {
        let steps = self.steps.as_array().cloned().unwrap_or_default();
        steps
            .iter()
            .map(|s| {
                if let Some(w) = s.get("setWeight") {
                    format!("{w}%")
                } else if let Some(p) = s.get("pause") {
                    match p.get("duration").and_then(Value::as_str) {
                        Some(d) => format!("pause {d}"),
                        None => "pause".into(),
                    }
                } else {
                    s.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" → ")
    }

    fn canary_replicas(&self) -> i32 {
        match self.scenario {
            Scenario::Complete => self.canary_replicas,
            Scenario::Waiting => 0,
        }
    }

    fn groups(&self) -> usize {
        self.rollouts.div_ceil(self.rollouts_per_deployment.max(1))
    }
}

// ---------------------------------------------------------------------------
// The fleet's objects
// ---------------------------------------------------------------------------

/// Where Rollout `i` lives and what it refers to.
#[derive(Clone, Debug)]
pub struct Member {
    pub ns: String,
    pub name: String,
    pub route: String,
    pub stable_service: String,
    pub canary_service: String,
    pub stable_deployment: String,
    pub canary_deployment: String,
}

fn members(options: &FleetOptions) -> Vec<Member> {
    let per = options.rollouts_per_deployment.max(1);
    let spread = options.namespaces.len().max(1);
    (0..options.rollouts)
        .map(|i| {
            // Rollouts sharing Deployments must share a namespace: group by
            // group index, not by Rollout index.
            let group = i / per;
            let ns = options.namespaces[group % spread].clone();
            let name = format!("r-{i:05}");
            Member {
                route: name.clone(),
                stable_service: format!("{name}-stable"),
                canary_service: format!("{name}-canary"),
                stable_deployment: format!("stable-{group:05}"),
                canary_deployment: format!("canary-{group:05}"),
                ns,
                name,
            }
        })
        .collect()
}

/// A Service selecting the pods of the Deployment `deployment` (labels as
/// [`deployment`] sets them). Headless: the kit's service range
/// (10.0.0.0/24) holds only 254 cluster IPs, and the operator only reads
/// that the Service exists.
fn service(ns: &str, name: &str, deployment: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "clusterIP": "None",
            "selector": {"app": "checkout", "version": deployment},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]
        }
    }))
    .expect("static service")
}

/// All traffic of the route to the stable Service (the parent Gateway need
/// not exist).
fn http_route(m: &Member) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": m.route, "namespace": m.ns},
        "spec": {
            "parentRefs": [{"name": "fleet"}],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": format!("/{}", m.name)}}],
                "backendRefs": [{"name": m.stable_service, "port": 80}]
            }]
        }
    })
}

fn rollout(m: &Member, run_id: &str, steps: &Value) -> Rollout {
    serde_json::from_value(json!({
        "apiVersion": "rollwise.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": m.name, "namespace": m.ns, "labels": {FLEET_LABEL: run_id}},
        "spec": {
            "stable": {"service": m.stable_service, "deployment": m.stable_deployment},
            "canary": {"service": m.canary_service, "deployment": m.canary_deployment},
            "trafficRouting": {"gatewayAPI": {"httpRoute": m.route}},
            "steps": steps,
        }
    }))
    .expect("a valid Rollout")
}

fn route_resource() -> ApiResource {
    ApiResource::erase::<::gateway_api::apis::standard::httproutes::HttpRoute>(&())
}

/// Run `f` up to 8 times while it fails with something that may pass
/// (throttling, a timeout, a server error); an AlreadyExists counts as done.
async fn create_retrying<F, Fut, T>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    for attempt in 1..=8u32 {
        match f().await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => return,
            Err(kube::Error::Api(s)) if s.code < 429 => panic!("cannot create {what}: {s}"),
            Err(e) if attempt == 8 => panic!("cannot create {what} (8 attempts): {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await,
        }
    }
}

/// Create the Deployments, Services and HTTPRoutes of the fleet (not the
/// Rollouts); wait until every canary is available (Complete) or every
/// Deployment is observed (Waiting).
async fn create_backends(client: &Client, options: &FleetOptions, members: &[Member]) -> usize {
    let mut jobs: Vec<(String, String, i32)> = Vec::new(); // (ns, deployment, replicas)
    let mut seen = std::collections::HashSet::new();
    for m in members {
        if seen.insert((m.ns.clone(), m.stable_deployment.clone())) {
            jobs.push((
                m.ns.clone(),
                m.stable_deployment.clone(),
                options.stable_replicas,
            ));
            jobs.push((
                m.ns.clone(),
                m.canary_deployment.clone(),
                options.canary_replicas(),
            ));
        }
    }
    let deployments = jobs.len();
    futures::stream::iter(jobs)
        .for_each_concurrent(options.create_concurrency, |(ns, name, replicas)| {
            let client = client.clone();
            async move {
                let api: Api<Deployment> = Api::namespaced(client, &ns);
                let d = deployment(&ns, &name, replicas);
                let pp = post_params();
                create_retrying(&format!("Deployment {ns}/{name}"), || api.create(&pp, &d)).await;
            }
        })
        .await;
    futures::stream::iter(members.iter())
        .for_each_concurrent(options.create_concurrency, |m| {
            let client = client.clone();
            async move {
                let pp = post_params();
                let services: Api<Service> = Api::namespaced(client.clone(), &m.ns);
                for (name, target) in [
                    (&m.stable_service, &m.stable_deployment),
                    (&m.canary_service, &m.canary_deployment),
                ] {
                    let s = service(&m.ns, name, target);
                    create_retrying(&format!("Service {}/{name}", m.ns), || {
                        services.create(&pp, &s)
                    })
                    .await;
                }
                let routes: Api<DynamicObject> =
                    Api::namespaced_with(client, &m.ns, &route_resource());
                let route: DynamicObject =
                    serde_json::from_value(http_route(m)).expect("a valid HTTPRoute");
                create_retrying(&format!("HTTPRoute {}/{}", m.ns, m.route), || {
                    routes.create(&pp, &route)
                })
                .await;
            }
        })
        .await;
    deployments
}

/// Until every canary Deployment of the fleet is available (Complete) or
/// observed (Waiting); prints progress.
async fn wait_backends(client: &Client, options: &FleetOptions, members: &[Member]) {
    let namespaces: Vec<String> = {
        let mut v: Vec<String> = members.iter().map(|m| m.ns.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    let want = options.groups();
    let started = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let mut ready = 0usize;
        let mut waiting = Vec::new();
        for ns in &namespaces {
            let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
            let list = match api.list(&ListParams::default()).await {
                Ok(l) => l,
                Err(e) => {
                    waiting.push(format!("list in {ns}: {e}"));
                    continue;
                }
            };
            for d in list
                .items
                .iter()
                .filter(|d| d.name_any().starts_with("canary-"))
            {
                let ok = match options.scenario {
                    Scenario::Complete => deployment_not_available(d).is_none(),
                    Scenario::Waiting => {
                        d.status.as_ref().and_then(|s| s.observed_generation)
                            >= d.metadata.generation
                    }
                };
                if ok {
                    ready += 1;
                } else if waiting.len() < 3 {
                    waiting.push(format!(
                        "{ns}/{}: {}",
                        d.name_any(),
                        deployment_not_available(d).unwrap_or_default()
                    ));
                }
            }
        }
        if ready >= want {
            return;
        }
        if last_print.elapsed() >= options.progress_every {
            eprintln!(
                "[fleet] {:.0}s: {ready}/{want} canary Deployments ready; e.g. {waiting:?}",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        assert!(
            started.elapsed() < options.setup_timeout,
            "timed out after {:?}: {ready}/{want} canary Deployments ready; e.g. {waiting:?}",
            options.setup_timeout
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Does for the fleet's pods what the kit's `fake_kubelet.py` does (bind
/// each to the Node, then set it Running and Ready, with the same status),
/// many at a time: the kit's kubelet runs one `kubectl` per pod, about one
/// pod a second, which would make a 10,000-pod setup take hours. The kit's
/// kubelet then finds these pods as it would have left them and leaves
/// them alone. Pod IPs come from 10.245.0.0/16 (the kit's: 10.244.0.0/16).
pub struct FastKubelet {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FastKubelet {
    pub fn start(client: &Client, namespaces: Vec<String>, node: String) -> FastKubelet {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (client, stop) = (client.clone(), stop.clone());
            async move {
                let next_ip = Arc::new(std::sync::atomic::AtomicU32::new(1));
                while !stop.load(Ordering::SeqCst) {
                    for ns in &namespaces {
                        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
                        let Ok(list) = pods.list(&ListParams::default()).await else {
                            continue;
                        };
                        let todo: Vec<Pod> = list
                            .items
                            .into_iter()
                            .filter(|p| p.metadata.deletion_timestamp.is_none())
                            .filter(|p| !pod_running(p))
                            .collect();
                        futures::stream::iter(todo)
                            .for_each_concurrent(16, |p| {
                                let (pods, node, next_ip) =
                                    (pods.clone(), node.clone(), next_ip.clone());
                                async move {
                                    let name = p.name_any();
                                    let bound =
                                        p.spec.as_ref().and_then(|s| s.node_name.clone());
                                    if bound.is_none() {
                                        let binding = json!({
                                            "apiVersion": "v1", "kind": "Binding",
                                            "metadata": {"name": name},
                                            "target": {"apiVersion": "v1", "kind": "Node", "name": node}
                                        });
                                        if pods
                                            .create_subresource::<_, Value>(
                                                "binding",
                                                &name,
                                                &post_params(),
                                                &binding,
                                            )
                                            .await
                                            .is_err()
                                        {
                                            return;
                                        }
                                    } else if bound.as_deref() != Some(node.as_str()) {
                                        return;
                                    }
                                    let n = next_ip.fetch_add(1, Ordering::Relaxed);
                                    let ip = format!("10.245.{}.{}", (n >> 8) & 0xff, n & 0xff);
                                    let status = running_status(&p, &ip);
                                    let _ = pods
                                        .patch_status(
                                            &name,
                                            &PatchParams::default(),
                                            &Patch::Merge(&status),
                                        )
                                        .await;
                                }
                            })
                            .await;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
        FastKubelet { stop, task }
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

/// Running and Ready as `fake_kubelet.py` sees it (`pod_ok`).
fn pod_running(p: &Pod) -> bool {
    let Some(st) = &p.status else {
        return false;
    };
    if st.phase.as_deref() != Some("Running") || st.pod_ip.is_none() {
        return false;
    }
    let conditions = st.conditions.clone().unwrap_or_default();
    let all_true = ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
        .iter()
        .all(|t| {
            conditions
                .iter()
                .any(|c| c.type_ == *t && c.status == "True")
        });
    let containers = p.spec.as_ref().map_or(0, |s| s.containers.len());
    let ready = st
        .container_statuses
        .as_ref()
        .map_or(0, |cs| cs.iter().filter(|c| c.ready).count());
    all_true && ready >= containers
}

/// The status `fake_kubelet.py` gives a running, ready pod.
fn running_status(p: &Pod, ip: &str) -> Value {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let containers: Vec<Value> = p
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            json!({
                "name": c.name, "image": image, "imageID": format!("fake://{image}"),
                "containerID": format!("fake://{}-{}", uid.chars().take(8).collect::<String>(), c.name),
                "restartCount": 0, "ready": true, "started": true,
                "state": {"running": {"startedAt": now}}
            })
        })
        .collect();
    let conditions: Vec<Value> = ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
        .iter()
        .map(|t| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now}))
        .collect();
    json!({"status": {
        "phase": "Running", "hostIP": "127.0.0.1", "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": now, "conditions": conditions, "containerStatuses": containers
    }})
}

// ---------------------------------------------------------------------------
// The operator process and its /proc figures
// ---------------------------------------------------------------------------

/// Where the request counts come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestSource {
    /// The operator's own counter ([`REQUEST_METRIC`]).
    Metric,
    /// The operator's `kube_client=debug` log lines.
    Log,
}

impl RequestSource {
    pub fn describe(&self) -> String {
        match self {
            RequestSource::Metric => format!("the operator's own `{REQUEST_METRIC}`"),
            RequestSource::Log => format!(
                "the operator's client log (`kube_client=debug`: one `requesting` line per request, method and URL); the operator has no `{REQUEST_METRIC}` yet"
            ),
        }
    }
}

/// `rollwise run` as a child process (log in a temporary directory).
pub struct FleetOperator {
    child: Mutex<Child>,
    pub pid: u32,
    pub addr: SocketAddr,
    pub log_path: PathBuf,
    pub args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl FleetOperator {
    pub fn start(options: &FleetOptions, log_requests: bool) -> FleetOperator {
        let dir = tempfile::Builder::new()
            .prefix("rollwise-fleet-operator-")
            .tempdir()
            .expect("create a temporary directory");
        let log_path = dir.path().join("operator.log");
        let log = File::create(&log_path).expect("create the operator log");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let filter = if log_requests {
            "info,kube_client=debug"
        } else {
            "info"
        };
        let mut args: Vec<String> = ["--log-format", "text", "--log", filter, "run"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--http-addr".to_string(), addr.to_string()]);
        if let Some(ns) = &options.operator_namespace {
            args.extend(["--namespace".to_string(), ns.clone()]);
        }
        let mut command = Command::new(&options.operator_bin);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("ROLLWISE_")
                || ["POD_NAME", "POD_NAMESPACE", "RUST_LOG"].contains(&k.as_ref())
            {
                command.env_remove(&key);
            }
        }
        let child = command
            .args(&args)
            .env("KUBECONFIG", &options.kubeconfig)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", options.operator_bin.display()));
        let pid = child.id();
        eprintln!(
            "[fleet] operator started: pid {pid}, {} {}, log {}",
            options.operator_bin.display(),
            args.join(" "),
            log_path.display()
        );
        FleetOperator {
            child: Mutex::new(child),
            pid,
            addr,
            log_path,
            args,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Panics with the end of the log when the process has exited.
    pub fn check_alive(&self) {
        let status = self
            .child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_wait()
            .expect("poll the operator");
        if let Some(status) = status {
            panic!(
                "the operator (pid {}) exited ({status}); its log:\n{}",
                self.pid,
                tail(&self.log(), 100)
            );
        }
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        let end = Instant::now() + timeout;
        let addr = self.addr;
        loop {
            self.check_alive();
            let got = tokio::task::spawn_blocking(move || http_get(addr, "/readyz"))
                .await
                .expect("the probe does not panic");
            if matches!(got, Ok((200, _))) {
                return;
            }
            assert!(
                Instant::now() < end,
                "the operator's /readyz: {got:?} after {timeout:?}; log:\n{}",
                tail(&self.log(), 50)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

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

    /// SIGTERM, up to 15 s for a graceful stop, then SIGKILL. Idempotent.
    pub async fn stop(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let done = {
                let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
                matches!(child.try_wait(), Ok(Some(_)) | Err(_))
            };
            if done || Instant::now() >= end {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for FleetOperator {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Memory and CPU of a process, from `/proc`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub cpu_seconds: f64,
}

impl ProcStats {
    pub fn read(pid: u32, clock_ticks: f64) -> Option<ProcStats> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces): state is
        // field 3, utime 14, stime 15.
        let after = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some(ProcStats {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
            cpu_seconds: (utime + stime) / clock_ticks,
        })
    }
}

/// `getconf CLK_TCK` (100 on Linux almost everywhere).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// One sample of the operator's RSS and CPU.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Seconds since the operator started.
    pub t: f64,
    pub phase: &'static str,
    pub stats: ProcStats,
}

/// Samples `/proc` of the operator every `every` until dropped.
struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    phase: Arc<Mutex<&'static str>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32, every: Duration, clock_ticks: f64, t0: Instant) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let phase = Arc::new(Mutex::new("empty"));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (samples, phase, stop) = (samples.clone(), phase.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::SeqCst) {
                    if let Some(stats) = ProcStats::read(pid, clock_ticks) {
                        let phase = *phase.lock().unwrap_or_else(|p| p.into_inner());
                        samples
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Sample {
                                t: t0.elapsed().as_secs_f64(),
                                phase,
                                stats,
                            });
                    }
                    tokio::time::sleep(every).await;
                }
            }
        });
        Sampler {
            samples,
            phase,
            stop,
            task,
        }
    }

    fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.abort();
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

// ---------------------------------------------------------------------------
// Counting requests
// ---------------------------------------------------------------------------

/// Counts by (verb, resource), e.g. ("get", "deployments"),
/// ("patch", "rollouts/status").
pub type Counts = BTreeMap<(String, String), f64>;

pub fn counts_total(c: &Counts) -> f64 {
    c.values().sum()
}

/// `later - earlier`, per key (zeros dropped).
pub fn counts_delta(later: &Counts, earlier: &Counts) -> Counts {
    later
        .iter()
        .map(|(k, v)| (k.clone(), v - earlier.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// Requests other than watches (a watch is one long request; it is
/// re-opened every few minutes whatever the fleet does).
pub fn counts_without_watches(c: &Counts) -> Counts {
    c.iter()
        .filter(|((verb, _), _)| verb != "watch")
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// The samples of the metric `family` in a Prometheus text exposition,
/// with their labels.
pub fn samples_of(text: &str, family: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(family) else {
            continue;
        };
        let (labels, value) = if let Some(inner) = rest.strip_prefix('{') {
            let Some(close) = inner.rfind('}') else {
                continue;
            };
            (&inner[..close], inner[close + 1..].trim())
        } else if rest.starts_with(' ') {
            ("", rest.trim())
        } else {
            continue; // another family with this prefix
        };
        let Ok(value) = value.split_whitespace().next().unwrap_or("").parse::<f64>() else {
            continue;
        };
        out.push((parse_labels(labels), value));
    }
    out
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',').trim().to_string();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = eq + 2 + i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key, value);
        rest = &rest[end.min(rest.len())..];
    }
    labels
}

/// `resource[/subresource]`, as the operator's own counter names it (the
/// group left out: the operator uses one resource of each name).
fn resource_key(resource: &str, subresource: &str) -> String {
    if subresource.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}/{subresource}")
    }
}

/// The operator's counter of its own requests, by verb and resource, and
/// by status code (when it has a code label).
pub fn counts_from_metric(text: &str) -> Option<(Counts, BTreeMap<String, f64>)> {
    let samples = samples_of(text, REQUEST_METRIC);
    if samples.is_empty() {
        return None;
    }
    let mut counts = Counts::new();
    let mut codes = BTreeMap::new();
    for (labels, value) in samples {
        let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
        let verb = get("verb").to_lowercase();
        let resource = resource_key(get("resource"), get("subresource"));
        *counts.entry((verb, resource)).or_insert(0.0) += value;
        let code = [get("code"), get("status"), get("status_code")]
            .into_iter()
            .find(|c| !c.is_empty())
            .unwrap_or("")
            .to_string();
        if !code.is_empty() {
            *codes.entry(code).or_insert(0.0) += value;
        }
    }
    Some((counts, codes))
}

/// Kubernetes verb and `resource[/subresource]` of a request, from
/// its method and URL (`https://host/apis/apps/v1/namespaces/ns/deployments/x?...`).
pub fn classify(method: &str, url: &str) -> (String, String) {
    let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let path_query = after_scheme
        .find('/')
        .map(|i| &after_scheme[i..])
        .unwrap_or("/");
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return (method.to_lowercase(), format!("(non-resource) {path}")),
    };
    let rest = match rest {
        ["namespaces", _ns, more @ ..] if !more.is_empty() => more,
        other => other,
    };
    let resource = rest.first().copied().unwrap_or("");
    let name = rest.get(1).copied();
    let subresource = rest.get(2).copied().unwrap_or("");
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match method {
        "GET" if watch => "watch",
        "GET" if name.is_none() => "list",
        "GET" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if name.is_none() => "deletecollection",
        "DELETE" => "delete",
        other => return (other.to_lowercase(), resource_key(resource, subresource)),
    };
    (verb.to_string(), resource_key(resource, subresource))
}

/// Counts the operator's requests from its log (`kube_client=debug`).
struct LogCounter {
    path: PathBuf,
    offset: u64,
    partial: String,
    counts: Counts,
    codes: BTreeMap<String, f64>,
}

impl LogCounter {
    fn new(path: &Path) -> LogCounter {
        LogCounter {
            path: path.to_path_buf(),
            offset: 0,
            partial: String::new(),
            counts: Counts::new(),
            codes: BTreeMap::new(),
        }
    }

    /// Read what the log gained since the last call; the totals so far.
    fn update(&mut self) -> (Counts, BTreeMap<String, f64>) {
        if let Ok(mut f) = File::open(&self.path)
            && f.seek(SeekFrom::Start(self.offset)).is_ok()
        {
            let mut bytes = Vec::new();
            if f.read_to_end(&mut bytes).is_ok() {
                self.offset += bytes.len() as u64;
                self.partial.push_str(&String::from_utf8_lossy(&bytes));
                let complete = match self.partial.rfind('\n') {
                    Some(i) => i + 1,
                    None => 0,
                };
                let text: String = self.partial.drain(..complete).collect();
                for line in text.lines() {
                    self.line(line);
                }
            }
        }
        (self.counts.clone(), self.codes.clone())
    }

    fn line(&mut self, line: &str) {
        let Some(method) = field(line, "http.method=") else {
            return;
        };
        if line.ends_with(": requesting") {
            let url = field(line, "http.url=").unwrap_or("");
            *self.counts.entry(classify(method, url)).or_insert(0.0) += 1.0;
        } else if line.ends_with(": stream closed")
            && let Some(code) = field(line, "http.status_code=")
        {
            *self.codes.entry(code.to_string()).or_insert(0.0) += 1.0;
        }
    }
}

/// Up to `max` lines of the log at `path` from byte `offset` on (request
/// lines of the client log left out), each cut at 400 characters.
fn log_lines_from(path: &Path, offset: u64, max: usize) -> Vec<String> {
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| !l.contains("kube_client::client::builder"))
        .take(max)
        .map(|l| l.chars().take(400).collect())
        .collect()
}

/// The value of `key` (up to the next blank or `}`) in a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    let end = rest.find([' ', '}']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The API server's `apiserver_request_total`, by verb and resource (its
/// verbs mapped to the operator's: POST → create, PUT → update, APPLY →
/// patch).
async fn apiserver_counts(client: &Client) -> Option<Counts> {
    // kube's request builder only makes `/metrics?`: a plain GET.
    let request = kube::core::Request::new("")
        .get("metrics", &Default::default())
        .ok()?;
    let text = client.request_text(request).await.ok()?;
    let mut counts = Counts::new();
    for (labels, value) in samples_of(&text, "apiserver_request_total") {
        let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
        let verb = match get("verb") {
            "POST" => "create".to_string(),
            "PUT" => "update".to_string(),
            "APPLY" => "patch".to_string(),
            v => v.to_lowercase(),
        };
        let resource = resource_key(get("resource"), get("subresource"));
        *counts.entry((verb, resource)).or_insert(0.0) += value;
    }
    Some(counts)
}

// ---------------------------------------------------------------------------
// Watching the fleet
// ---------------------------------------------------------------------------

#[derive(Default, Clone, Debug)]
pub struct Track {
    status: Option<String>,
    /// Changes of `.status` seen (each is a status write of the operator
    /// that changed something, if only a message or a timestamp).
    pub writes: u32,
    /// (phase, step, canary weight) last seen.
    key: Option<(Phase, String, i32)>,
    /// Changes of (phase, step, canary weight): the Rollout's transitions.
    pub changes: u32,
    pub phase: Option<Phase>,
    pub message: String,
    /// `status.lastDecision.reason`.
    pub reason: String,
    pub generation: i64,
    pub observed_generation: i64,
    pub gone: bool,
    /// Has a deletionTimestamp.
    pub terminating: bool,
}

#[derive(Default)]
struct Tracker {
    rollouts: HashMap<String, Track>,
    /// Watch (re)starts: more than one means some changes may have been
    /// missed (a relist shows only the latest state).
    inits: u32,
}

impl Tracker {
    fn apply(&mut self, r: &Rollout) {
        let key = format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any());
        let t = self.rollouts.entry(key).or_default();
        let status = r
            .status
            .as_ref()
            .map(|s| serde_json::to_string(s).unwrap_or_else(|e| format!("(unserializable: {e})")));
        if status.is_some() && status != t.status {
            t.writes += 1;
        }
        let key = r
            .status
            .as_ref()
            .map(|s| (s.phase, s.step.clone(), s.canary_weight));
        if key.is_some() && key != t.key {
            t.changes += 1;
            t.key = key;
        }
        t.status = status;
        t.phase = r.status.as_ref().map(|s| s.phase);
        t.message = r
            .status
            .as_ref()
            .map(|s| s.message.clone())
            .unwrap_or_default();
        t.reason = r
            .status
            .as_ref()
            .and_then(|s| s.last_decision.as_ref())
            .map(|d| d.reason.clone())
            .unwrap_or_default();
        t.generation = r.metadata.generation.unwrap_or(0);
        t.observed_generation = r.status.as_ref().map_or(0, |s| s.observed_generation);
        t.terminating = r.metadata.deletion_timestamp.is_some();
        t.gone = false;
    }

    fn delete(&mut self, r: &Rollout) {
        let key = format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any());
        self.rollouts.entry(key).or_default().gone = true;
    }
}

fn watch_fleet(
    client: &Client,
    run_id: &str,
) -> (Arc<Mutex<Tracker>>, tokio::task::JoinHandle<()>) {
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let api: Api<Rollout> = Api::all(client.clone());
    let config = watcher::Config::default().labels(&format!("{FLEET_LABEL}={run_id}"));
    let task = tokio::spawn({
        let tracker = tracker.clone();
        async move {
            let mut stream = watcher(api, config).default_backoff().boxed();
            loop {
                match stream.try_next().await {
                    Ok(Some(event)) => {
                        let mut t = tracker.lock().unwrap_or_else(|p| p.into_inner());
                        match event {
                            watcher::Event::Init => t.inits += 1,
                            watcher::Event::InitApply(r) | watcher::Event::Apply(r) => t.apply(&r),
                            watcher::Event::Delete(r) => t.delete(&r),
                            watcher::Event::InitDone => {}
                        }
                    }
                    Ok(None) => return,
                    Err(e) => eprintln!("[fleet] watch of the fleet: {e} (retrying)"),
                }
            }
        }
    });
    (tracker, task)
}

/// Whether Rollout `t` is where the scenario wants it.
fn settled(scenario: Scenario, t: &Track) -> bool {
    match scenario {
        Scenario::Complete => t.phase == Some(Phase::Succeeded),
        // The status says it waits for the canary (the first status,
        // "rollout started", comes one decision before).
        Scenario::Waiting => {
            t.reason == "WaitingForCanary" && t.observed_generation >= t.generation
        }
    }
}

/// Ended somewhere the scenario does not want (no use waiting longer).
fn failed(scenario: Scenario, t: &Track) -> bool {
    match scenario {
        Scenario::Complete => t
            .phase
            .is_some_and(|p| p.is_terminal() && p != Phase::Succeeded),
        Scenario::Waiting => t.phase.is_some_and(Phase::is_terminal),
    }
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// The operator's figures at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Seconds since the operator started.
    pub t: f64,
    pub stats: ProcStats,
    pub reconciles: f64,
    pub errors: BTreeMap<String, f64>,
    pub requests: Counts,
    pub codes: BTreeMap<String, f64>,
    pub apiserver: Option<Counts>,
}

/// What happened between two snapshots.
#[derive(Clone, Debug)]
pub struct Window {
    pub name: &'static str,
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub reconciles: f64,
    pub errors: BTreeMap<String, f64>,
    pub requests: Counts,
    pub codes: BTreeMap<String, f64>,
    pub apiserver: Option<Counts>,
    /// RSS over the window's samples (min, max, last), KiB.
    pub rss: Option<(u64, u64, u64)>,
}

impl Window {
    pub fn per_minute(&self, v: f64) -> f64 {
        if self.seconds > 0.0 {
            v * 60.0 / self.seconds
        } else {
            0.0
        }
    }
}

/// Everything a fleet run measured.
#[derive(Clone, Debug)]
pub struct FleetReport {
    pub options: FleetOptions,
    pub request_source: RequestSource,
    pub operator_args: Vec<String>,
    pub deployments: usize,
    /// Creating the Deployments, Services and routes, and waiting for the
    /// canaries.
    pub setup_seconds: f64,
    /// First to last Rollout create.
    pub creation_seconds: f64,
    /// First create until every Rollout was settled (None: timed out).
    pub settle_seconds: Option<f64>,
    pub settled: usize,
    /// Rollouts that did not settle: `ns/name: phase: message` (up to 10),
    /// and how many by phase.
    pub unsettled_examples: Vec<String>,
    pub phases: BTreeMap<String, usize>,
    /// Changes of (phase, step, canary weight) seen by the watch, from the
    /// first create until settled.
    pub transitions: u64,
    /// Changes of `.status` (anything) seen by the watch, same period.
    pub status_writes: u64,
    pub transitions_by_count: BTreeMap<u32, usize>,
    pub watch_inits: u32,
    /// All Rollouts gone after the delete (None: timed out).
    pub delete_seconds: Option<f64>,
    pub left_after_delete: usize,
    /// Delete requests the API server failed (then sent again).
    pub delete_failures: Vec<String>,
    /// When the last delete request was answered (seconds after the first).
    pub deletes_sent: Option<f64>,
    pub windows: Vec<Window>,
    pub samples: Vec<Sample>,
    pub peak_kib: u64,
    pub warnings_in_log: Vec<String>,
    /// The first lines the operator logged during the soak (info level:
    /// one per reconcile, with what triggered it).
    pub soak_log: Vec<String>,
}

impl FleetReport {
    pub fn window(&self, name: &str) -> Option<&Window> {
        self.windows.iter().find(|w| w.name == name)
    }

    /// The creation and progress windows together (first create until
    /// every Rollout settled).
    pub fn active(&self) -> Window {
        let parts: Vec<&Window> = ["creation", "progress"]
            .iter()
            .filter_map(|n| self.window(n))
            .collect();
        let mut sum = Window {
            name: "active",
            seconds: 0.0,
            cpu_seconds: 0.0,
            reconciles: 0.0,
            errors: BTreeMap::new(),
            requests: Counts::new(),
            codes: BTreeMap::new(),
            apiserver: None,
            rss: None,
        };
        for w in parts {
            sum.seconds += w.seconds;
            sum.cpu_seconds += w.cpu_seconds;
            sum.reconciles += w.reconciles;
            for (k, v) in &w.errors {
                *sum.errors.entry(k.clone()).or_insert(0.0) += v;
            }
            for (k, v) in &w.requests {
                *sum.requests.entry(k.clone()).or_insert(0.0) += v;
            }
            for (k, v) in &w.codes {
                *sum.codes.entry(k.clone()).or_insert(0.0) += v;
            }
            if let Some(a) = &w.apiserver {
                let s = sum.apiserver.get_or_insert_with(Counts::new);
                for (k, v) in a {
                    *s.entry(k.clone()).or_insert(0.0) += v;
                }
            }
            sum.rss = match (sum.rss, w.rss) {
                (None, r) => r,
                (r, None) => r,
                (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1), b.2)),
            };
        }
        sum
    }

    /// Reconcile errors over the whole run, by category.
    pub fn errors(&self) -> BTreeMap<String, f64> {
        let mut all = BTreeMap::new();
        for w in &self.windows {
            for (k, v) in &w.errors {
                *all.entry(k.clone()).or_insert(0.0) += v;
            }
        }
        all
    }

    /// Requests answered with a 5xx code (the API server's own failures),
    /// over the whole run.
    pub fn server_errors(&self) -> f64 {
        self.windows
            .iter()
            .flat_map(|w| w.codes.iter())
            .filter(|(code, _)| code.starts_with('5'))
            .map(|(_, v)| v)
            .sum()
    }

    /// Requests answered with `code`, over the whole run.
    pub fn responses_with(&self, code: &str) -> f64 {
        self.windows.iter().filter_map(|w| w.codes.get(code)).sum()
    }
}

/// Run the fleet (see the module docs). Panics when the setup fails or the
/// operator dies; a fleet that does not settle in time is reported, not a
/// panic (the caller decides). Always stops the operator; never deletes the
/// namespaces.
pub async fn run_fleet(cluster: &Cluster, options: &FleetOptions) -> FleetReport {
    let client = cluster.client.clone();
    let run_id = crate::common::cluster::unique_suffix();
    let members = members(options);
    let n = members.len();
    eprintln!(
        "[fleet] run {run_id}: {n} Rollouts ({}) in {} namespace(s), steps {}",
        options.scenario.as_str(),
        options.namespaces.len(),
        options.steps_text()
    );

    // The Deployments, Services and routes, before the operator runs.
    let setup_start = Instant::now();
    let kubelet = options.fast_kubelet.as_ref().map(|node| {
        let mut namespaces: Vec<String> = members.iter().map(|m| m.ns.clone()).collect();
        namespaces.sort();
        namespaces.dedup();
        FastKubelet::start(&client, namespaces, node.clone())
    });
    let deployments = create_backends(&client, options, &members).await;
    eprintln!(
        "[fleet] {deployments} Deployments, {} Services, {n} HTTPRoutes created in {:.1}s",
        2 * n,
        setup_start.elapsed().as_secs_f64()
    );
    wait_backends(&client, options, &members).await;
    if let Some(k) = kubelet {
        k.stop();
    }
    let setup_seconds = setup_start.elapsed().as_secs_f64();
    eprintln!("[fleet] backends ready after {setup_seconds:.1}s");

    // The operator: with its own request counter if it has one, else with
    // its client's debug log.
    let ticks = clock_ticks();
    let mut operator = FleetOperator::start(options, false);
    operator.wait_ready(Duration::from_secs(60)).await;
    let request_source = if counts_from_metric(&operator.metrics().await).is_some() {
        RequestSource::Metric
    } else {
        operator.stop().await;
        operator = FleetOperator::start(options, true);
        operator.wait_ready(Duration::from_secs(60)).await;
        RequestSource::Log
    };
    let t0 = Instant::now();
    let sampler = Sampler::start(operator.pid, options.sample_every, ticks, t0);
    let mut log_counter = LogCounter::new(&operator.log_path);
    let (tracker, watch_task) = watch_fleet(&client, &run_id);

    let mut snapshots: Vec<(&'static str, Snapshot)> = Vec::new();
    let take = async |log_counter: &mut LogCounter| -> Snapshot {
        operator.check_alive();
        let text = operator.metrics().await;
        let (requests, codes) = match request_source {
            RequestSource::Metric => counts_from_metric(&text).unwrap_or_default(),
            RequestSource::Log => log_counter.update(),
        };
        let errors = samples_of(&text, "rollwise_reconcile_errors_total")
            .into_iter()
            .map(|(l, v)| (l.get("category").cloned().unwrap_or_default(), v))
            .collect();
        Snapshot {
            t: t0.elapsed().as_secs_f64(),
            stats: ProcStats::read(operator.pid, ticks).unwrap_or_default(),
            reconciles: samples_of(&text, "rollwise_reconciles_total")
                .iter()
                .map(|(_, v)| v)
                .sum(),
            errors,
            requests,
            codes,
            apiserver: if options.apiserver_metrics {
                apiserver_counts(&client).await
            } else {
                None
            },
        }
    };

    // Empty: the operator with no Rollouts.
    snapshots.push(("start", take(&mut log_counter).await));
    tokio::time::sleep(options.empty_baseline).await;
    snapshots.push(("empty", take(&mut log_counter).await));

    // Creation.
    sampler.set_phase("creation");
    let creation_start = Instant::now();
    futures::stream::iter(members.iter())
        .for_each_concurrent(options.create_concurrency, |m| {
            let client = client.clone();
            let r = rollout(m, &run_id, &options.steps);
            async move {
                let api: Api<Rollout> = Api::namespaced(client, &m.ns);
                let pp = post_params();
                create_retrying(&format!("Rollout {}/{}", m.ns, m.name), || {
                    api.create(&pp, &r)
                })
                .await;
            }
        })
        .await;
    let creation_seconds = creation_start.elapsed().as_secs_f64();
    eprintln!("[fleet] {n} Rollouts created in {creation_seconds:.1}s");
    snapshots.push(("creation", take(&mut log_counter).await));

    // Progress: until every Rollout is settled (or failed, or time is up).
    sampler.set_phase("progress");
    let mut last_print = Instant::now();
    let settle_seconds = loop {
        let (settled_now, failed_now, seen) = {
            let t = tracker.lock().unwrap_or_else(|p| p.into_inner());
            let settled_now = t
                .rollouts
                .values()
                .filter(|r| settled(options.scenario, r))
                .count();
            let failed_now = t
                .rollouts
                .values()
                .filter(|r| failed(options.scenario, r))
                .count();
            (settled_now, failed_now, t.rollouts.len())
        };
        if settled_now == n {
            break Some(creation_start.elapsed().as_secs_f64());
        }
        if settled_now + failed_now == n {
            break None;
        }
        operator.check_alive();
        if last_print.elapsed() >= options.progress_every {
            let rss = ProcStats::read(operator.pid, ticks).unwrap_or_default();
            eprintln!(
                "[fleet] {:.0}s: {settled_now}/{n} settled, {failed_now} failed, {seen} seen; RSS {:.1} MiB, CPU {:.1}s",
                creation_start.elapsed().as_secs_f64(),
                rss.rss_kib as f64 / 1024.0,
                rss.cpu_seconds
            );
            last_print = Instant::now();
        }
        if creation_start.elapsed() >= options.settle_timeout {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // The last reconciles may still be finishing (an Event after the status
    // write the watch saw): they belong to the progress, not to the soak.
    // Wait until the operator's reconciles and requests (watches aside)
    // stay the same for 2 s, 30 s at most.
    let activity = async || {
        let text = operator.metrics().await;
        let reconciles: f64 = samples_of(&text, "rollwise_reconciles_total")
            .iter()
            .map(|(_, v)| v)
            .sum();
        let requests = counts_from_metric(&text)
            .map(|(c, _)| counts_total(&counts_without_watches(&c)))
            .unwrap_or(0.0);
        (reconciles, requests)
    };
    let quiet_since = Instant::now();
    let mut last = activity().await;
    let mut still = 0;
    while still < 2 && quiet_since.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = activity().await;
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    snapshots.push(("progress", take(&mut log_counter).await));
    let (
        settled_count,
        unsettled_examples,
        phases,
        transitions,
        status_writes,
        transitions_by_count,
    ) = {
        let t = tracker.lock().unwrap_or_else(|p| p.into_inner());
        let settled_count = t
            .rollouts
            .values()
            .filter(|r| settled(options.scenario, r))
            .count();
        let mut unsettled: Vec<String> = t
            .rollouts
            .iter()
            .filter(|(_, r)| !settled(options.scenario, r))
            .map(|(k, r)| {
                format!(
                    "{k}: {}: {}",
                    r.phase.map_or("no status", |p| p.as_str()),
                    r.message
                )
            })
            .collect();
        unsettled.sort();
        unsettled.truncate(10);
        let mut phases = BTreeMap::new();
        let mut by_count = BTreeMap::new();
        for r in t.rollouts.values() {
            *phases
                .entry(r.phase.map_or("no status", |p| p.as_str()).to_string())
                .or_insert(0) += 1;
            *by_count.entry(r.changes).or_insert(0) += 1;
        }
        let missing = n.saturating_sub(t.rollouts.len());
        if missing > 0 {
            phases.insert("not seen".into(), missing);
        }
        let transitions = t.rollouts.values().map(|r| u64::from(r.changes)).sum();
        let writes = t.rollouts.values().map(|r| u64::from(r.writes)).sum();
        (
            settled_count,
            unsettled,
            phases,
            transitions,
            writes,
            by_count,
        )
    };
    match settle_seconds {
        Some(s) => eprintln!("[fleet] all {n} settled after {s:.1}s"),
        None => eprintln!(
            "[fleet] {settled_count}/{n} settled after {:.1}s; phases {phases:?}; e.g. {unsettled_examples:?}",
            creation_start.elapsed().as_secs_f64()
        ),
    }

    // Soak: nothing changes; what does the operator do?
    sampler.set_phase("soak");
    let soak_log_start = std::fs::metadata(&operator.log_path).map_or(0, |m| m.len());
    tokio::time::sleep(options.soak).await;
    snapshots.push(("soak", take(&mut log_counter).await));
    let soak_log = log_lines_from(&operator.log_path, soak_log_start, 30);
    eprintln!("[fleet] soak of {:?} done", options.soak);

    // Deletion: every Rollout deleted at once; the finalizer returns the
    // traffic to stable first.
    sampler.set_phase("deletion");
    let delete_start = Instant::now();
    // Every Rollout deleted by name, 16 at a time (as `kubectl delete
    // rollouts --all` does; a deletecollection of thousands can time out on a
    // loaded API server and delete part of them). A failed delete is sent
    // again.
    let delete_failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let deleter = tokio::spawn({
        let (client, failures) = (client.clone(), delete_failures.clone());
        let targets: Vec<(String, String)> = members
            .iter()
            .map(|m| (m.ns.clone(), m.name.clone()))
            .collect();
        async move {
            futures::stream::iter(targets)
                .for_each_concurrent(16, |(ns, name)| {
                    let (client, failures) = (client.clone(), failures.clone());
                    async move {
                        let api: Api<Rollout> = Api::namespaced(client, &ns);
                        for attempt in 1..=10u64 {
                            match api.delete(&name, &DeleteParams::background()).await {
                                Ok(_) => return,
                                Err(kube::Error::Api(s)) if s.code == 404 => return,
                                Err(e) => {
                                    failures
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .push(format!("{ns}/{name}: {e}"));
                                    tokio::time::sleep(Duration::from_secs(attempt)).await;
                                }
                            }
                        }
                    }
                })
                .await;
        }
    });
    let mut deletes_sent: Option<f64> = None;
    let (delete_seconds, left_after_delete) = loop {
        let left = {
            let t = tracker.lock().unwrap_or_else(|p| p.into_inner());
            t.rollouts.values().filter(|r| !r.gone).count()
        };
        if deletes_sent.is_none() && deleter.is_finished() {
            deletes_sent = Some(delete_start.elapsed().as_secs_f64());
        }
        if left == 0 {
            break (Some(delete_start.elapsed().as_secs_f64()), 0);
        }
        if delete_start.elapsed() >= options.delete_timeout {
            break (None, left);
        }
        if last_print.elapsed() >= options.progress_every {
            eprintln!(
                "[fleet] deleting: {left} left after {:.0}s",
                delete_start.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        operator.check_alive();
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    deleter.abort();
    let delete_failures = delete_failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    snapshots.push(("deletion", take(&mut log_counter).await));
    match delete_seconds {
        Some(s) => eprintln!("[fleet] all {n} Rollouts gone after {s:.1}s"),
        None => eprintln!(
            "[fleet] {left_after_delete} Rollouts left after {:?}",
            options.delete_timeout
        ),
    }

    let watch_inits = tracker.lock().unwrap_or_else(|p| p.into_inner()).inits;
    watch_task.abort();
    let samples = sampler.finish();
    let peak_kib = ProcStats::read(operator.pid, ticks)
        .map(|s| s.hwm_kib)
        .or_else(|| samples.iter().map(|s| s.stats.hwm_kib).max())
        .unwrap_or(0);
    operator.stop().await;
    let warnings_in_log: Vec<String> = operator
        .log()
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .take(20)
        .map(|l| l.chars().take(400).collect())
        .collect();
    if left_after_delete > 0 {
        let mut namespaces: Vec<&String> = members.iter().map(|m| &m.ns).collect();
        namespaces.sort();
        namespaces.dedup();
        strip_finalizers(&client, &namespaces, &run_id).await;
    }

    let windows = snapshots
        .windows(2)
        .map(|pair| {
            let ((_, a), (name, b)) = (&pair[0], &pair[1]);
            let in_window: Vec<u64> = samples
                .iter()
                .filter(|s| s.t >= a.t && s.t <= b.t)
                .map(|s| s.stats.rss_kib)
                .collect();
            let rss = match (
                in_window.iter().min(),
                in_window.iter().max(),
                in_window.last(),
            ) {
                (Some(lo), Some(hi), Some(last)) => Some((*lo, *hi, *last)),
                _ => None,
            };
            Window {
                name,
                seconds: b.t - a.t,
                cpu_seconds: b.stats.cpu_seconds - a.stats.cpu_seconds,
                reconciles: b.reconciles - a.reconciles,
                errors: b
                    .errors
                    .iter()
                    .map(|(k, v)| (k.clone(), v - a.errors.get(k).copied().unwrap_or(0.0)))
                    .filter(|(_, v)| *v != 0.0)
                    .collect(),
                requests: counts_delta(&b.requests, &a.requests),
                codes: b
                    .codes
                    .iter()
                    .map(|(k, v)| (k.clone(), v - a.codes.get(k).copied().unwrap_or(0.0)))
                    .filter(|(_, v)| *v != 0.0)
                    .collect(),
                apiserver: match (&b.apiserver, &a.apiserver) {
                    (Some(b), Some(a)) => Some(counts_delta(b, a)),
                    _ => None,
                },
                rss,
            }
        })
        .collect();

    FleetReport {
        options: options.clone(),
        request_source,
        operator_args: operator.args.clone(),
        deployments,
        setup_seconds,
        creation_seconds,
        settle_seconds,
        settled: settled_count,
        unsettled_examples,
        phases,
        transitions,
        status_writes,
        transitions_by_count,
        watch_inits,
        delete_seconds,
        left_after_delete,
        delete_failures,
        deletes_sent,
        windows,
        samples,
        peak_kib,
        warnings_in_log,
        soak_log,
    }
}

/// Remove the finalizers of the run's Rollouts that are still there (the
/// operator is stopped): the namespaces can then be deleted.
pub async fn strip_finalizers(client: &Client, namespaces: &[&String], run_id: &str) {
    for ns in namespaces {
        let api: Api<Rollout> = Api::namespaced(client.clone(), ns);
        let Ok(list) = api
            .list(&ListParams::default().labels(&format!("{FLEET_LABEL}={run_id}")))
            .await
        else {
            continue;
        };
        for r in list.items {
            let patch = json!({"metadata": {"finalizers": null}});
            let _ = api
                .patch(
                    &r.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await;
        }
    }
}

/// Remove the finalizers of every Rollout in `ns` (cleanup after a failed
/// run), then delete the namespace (background).
pub async fn delete_namespace_forcefully(cluster: &Cluster, ns: &str) {
    let api: Api<Rollout> = Api::namespaced(cluster.client.clone(), ns);
    if let Ok(list) = api.list(&ListParams::default()).await {
        for r in list.items {
            let patch = json!({"metadata": {"finalizers": null}});
            let _ = api
                .patch(
                    &r.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await;
        }
    }
    cluster.delete_namespace(ns).await;
}

// ---------------------------------------------------------------------------
// The report as Markdown
// ---------------------------------------------------------------------------

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn num(v: f64) -> String {
    let v = v + 0.0; // no "-0"
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn secs(v: Option<f64>, what_else: &str) -> String {
    match v {
        Some(s) => format!("{s:.1} s"),
        None => what_else.to_string(),
    }
}

impl FleetReport {
    /// The section for this run: heading, facts, tables. `command` is the
    /// command line that produced it; `context` lines (date, machine, load)
    /// go under it.
    pub fn markdown(&self, heading: &str, command: &str, context: &[String]) -> String {
        let o = &self.options;
        let n = o.rollouts as f64;
        let active = self.active();
        let soak = self.window("soak");
        let mut md = String::new();
        let push = |md: &mut String, line: &str| {
            md.push_str(line);
            md.push('\n');
        };
        push(&mut md, &format!("## {heading}\n"));
        push(&mut md, &format!("Command: `{command}`\n"));
        for c in context {
            push(&mut md, &format!("- {c}"));
        }
        push(
            &mut md,
            &format!(
                "- Fleet: {} Rollouts ({}) in {} namespace(s), steps {}; each with its own HTTPRoute and two (headless) Services; {} Deployments ({} Rollout(s) per stable/canary pair; stable {} replica(s), canary {} replica(s)). Setup (backends created, canaries {}) took {:.0} s{}.",
                o.rollouts,
                o.scenario.as_str(),
                o.namespaces.len(),
                o.steps_text(),
                self.deployments,
                o.rollouts_per_deployment,
                o.stable_replicas,
                o.canary_replicas(),
                match o.scenario {
                    Scenario::Complete => "available",
                    Scenario::Waiting => "observed",
                },
                self.setup_seconds,
                if o.stable_replicas == 0 && o.canary_replicas() == 0 {
                    " (no pods)"
                } else if o.fast_kubelet.is_some() {
                    " (pods bound and started by the bench itself, as the kit's fake kubelet would, many at a time)"
                } else {
                    " (pods started by the kit's fake kubelet)"
                }
            ),
        );
        push(
            &mut md,
            &format!(
                "- Operator: `rollwise {}` ({}), admin kubeconfig; API requests counted from {}.",
                self.operator_args.join(" "),
                o.operator_bin.display(),
                self.request_source.describe()
            ),
        );
        push(&mut md, "");

        let active_requests = counts_total(&active.requests);
        let (settle_label, settle_value) = match o.scenario {
            Scenario::Complete => (
                "Time until every Rollout completed (phase Succeeded), from the first create",
                secs(
                    self.settle_seconds,
                    &format!(
                        "not all: {}/{} after {:?}",
                        self.settled, o.rollouts, o.settle_timeout
                    ),
                ),
            ),
            Scenario::Waiting => (
                "Time until every Rollout said it waits for its canary (last decision WaitingForCanary), from the first create",
                secs(
                    self.settle_seconds,
                    &format!(
                        "not all: {}/{} after {:?}",
                        self.settled, o.rollouts, o.settle_timeout
                    ),
                ),
            ),
        };
        push(&mut md, "| Measure | Value |");
        push(&mut md, "|---|---:|");
        push(&mut md, &format!("| {settle_label} | {settle_value} |"));
        push(
            &mut md,
            &format!(
                "| Creating the Rollouts (first to last create) | {:.1} s |",
                self.creation_seconds
            ),
        );
        push(
            &mut md,
            &format!("| Operator RSS peak (VmHWM) | {} |", mib(self.peak_kib)),
        );
        if let Some(w) = self.window("empty")
            && let Some((_, _, last)) = w.rss
        {
            push(
                &mut md,
                &format!("| RSS with no Rollouts | {} |", mib(last)),
            );
        }
        if let Some((lo, hi, last)) = active.rss {
            push(
                &mut md,
                &format!(
                    "| RSS from the first create until all settled (min / max / last) | {} / {} / {} |",
                    mib(lo),
                    mib(hi),
                    mib(last)
                ),
            );
        }
        if let Some(w) = soak
            && let Some((lo, hi, last)) = w.rss
        {
            let flat = if hi - lo <= 1024 {
                "flat (within 1 MiB)"
            } else {
                "not flat"
            };
            push(
                &mut md,
                &format!(
                    "| RSS over the {:.0} s soak (min / max / last) | {} / {} / {}: {flat} |",
                    w.seconds,
                    mib(lo),
                    mib(hi),
                    mib(last)
                ),
            );
        }
        push(
            &mut md,
            &format!(
                "| Operator CPU from the first create until all settled | {:.1} s ({:.1} ms per Rollout) |",
                active.cpu_seconds,
                active.cpu_seconds * 1000.0 / n
            ),
        );
        push(
            &mut md,
            &format!(
                "| API requests from the first create until all settled | {} ({} per Rollout; {} without watches) |",
                num(active_requests),
                num(active_requests / n),
                num(counts_total(&counts_without_watches(&active.requests)) / n)
            ),
        );
        push(
            &mut md,
            &format!(
                "| Reconciles from the first create until all settled | {} ({} per Rollout) |",
                num(active.reconciles),
                num(active.reconciles / n)
            ),
        );
        push(
            &mut md,
            &format!(
                "| Status transitions (changes of phase, step or canary weight seen by a watch) | {} ({} per Rollout; Rollouts by count: {}) |",
                self.transitions,
                num(self.transitions as f64 / n),
                self.transitions_by_count
                    .iter()
                    .map(|(k, v)| format!("{v}× {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        push(
            &mut md,
            &format!(
                "| Status writes (any change of `.status` seen by the watch) | {} ({} per Rollout) |",
                self.status_writes,
                num(self.status_writes as f64 / n)
            ),
        );
        if self.transitions > 0 {
            push(
                &mut md,
                &format!(
                    "| Reconciles per transition | {:.2} |",
                    active.reconciles / self.transitions as f64
                ),
            );
        }
        if let Some(w) = soak {
            let idle = counts_without_watches(&w.requests);
            push(
                &mut md,
                &format!(
                    "| {} API requests per minute (soak of {:.0} s; watches excluded) | {} ({} in all; {} watch requests) |",
                    match o.scenario {
                        Scenario::Complete => "Idle",
                        Scenario::Waiting => "Waiting",
                    },
                    w.seconds,
                    num(w.per_minute(counts_total(&idle))),
                    num(counts_total(&idle)),
                    num(counts_total(&w.requests) - counts_total(&idle))
                ),
            );
            push(
                &mut md,
                &format!(
                    "| {} CPU seconds per minute (soak) | {:.2} s |",
                    match o.scenario {
                        Scenario::Complete => "Idle",
                        Scenario::Waiting => "Waiting",
                    },
                    w.per_minute(w.cpu_seconds)
                ),
            );
            push(
                &mut md,
                &format!(
                    "| Reconciles during the soak | {} ({:.1} per minute) |",
                    num(w.reconciles),
                    w.per_minute(w.reconciles)
                ),
            );
        }
        push(
            &mut md,
            &format!(
                "| Time to delete the whole fleet (all Rollouts gone; the finalizer restores stable traffic first) | {} (the bench's deletes, 16 at a time, all answered after {}) |",
                secs(
                    self.delete_seconds,
                    &format!(
                        "{} left after {:?}",
                        self.left_after_delete, o.delete_timeout
                    )
                ),
                secs(self.deletes_sent, "(still sending)")
            ),
        );
        if !self.delete_failures.is_empty() {
            push(
                &mut md,
                &format!(
                    "| Delete requests the API server failed (sent again; included in the time above) | {}: {} |",
                    self.delete_failures.len(),
                    self.delete_failures
                        .iter()
                        .take(3)
                        .map(|f| f.chars().take(160).collect::<String>().replace('|', "/"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            );
        }
        if let Some(w) = self.window("deletion") {
            push(
                &mut md,
                &format!(
                    "| Operator CPU while deleting | {:.1} s ({} API requests, {} per Rollout) |",
                    w.cpu_seconds,
                    num(counts_total(&w.requests)),
                    num(counts_total(&w.requests) / n)
                ),
            );
        }
        let errors = self.errors();
        push(
            &mut md,
            &format!(
                "| Reconcile errors | {} |",
                if errors.is_empty() {
                    "0".to_string()
                } else {
                    errors
                        .iter()
                        .map(|(k, v)| format!("{k}: {}", num(*v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        );
        let codes: Vec<String> = {
            let mut all: BTreeMap<String, f64> = BTreeMap::new();
            for w in &self.windows {
                for (k, v) in &w.codes {
                    *all.entry(k.clone()).or_insert(0.0) += v;
                }
            }
            all.iter()
                .map(|(k, v)| format!("{k}: {}", num(*v)))
                .collect()
        };
        if !codes.is_empty() {
            push(
                &mut md,
                &format!("| Responses by status code | {} |", codes.join(", ")),
            );
        }
        push(&mut md, "");
        if self.settle_seconds.is_none() {
            push(
                &mut md,
                &format!(
                    "Not settled: {}/{} by phase {:?}; for example:\n",
                    o.rollouts - self.settled,
                    o.rollouts,
                    self.phases
                ),
            );
            for e in &self.unsettled_examples {
                push(&mut md, &format!("- `{e}`"));
            }
            push(&mut md, "");
        }
        if self.watch_inits > 1 {
            push(
                &mut md,
                &format!(
                    "The bench's watch restarted {} times: some status changes may not have been seen (transitions are a lower bound).\n",
                    self.watch_inits - 1
                ),
            );
        }

        // Requests by verb and resource, per window.
        let names = ["creation", "progress", "soak", "deletion"];
        let windows: Vec<&Window> = names.iter().filter_map(|n| self.window(n)).collect();
        let mut keys: Vec<(String, String)> = windows
            .iter()
            .flat_map(|w| w.requests.keys().cloned())
            .chain(active.requests.keys().cloned())
            .collect();
        keys.sort();
        keys.dedup();
        push(
            &mut md,
            "API requests of the operator by verb and resource:\n",
        );
        let mut header =
            "| verb | resource | first create → all settled | per Rollout |".to_string();
        let mut rule = "|---|---|---:|---:|".to_string();
        for w in &windows {
            if w.name == "soak" {
                header.push_str(&format!(" soak ({:.0} s) | soak per minute |", w.seconds));
                rule.push_str("---:|---:|");
            } else if w.name == "deletion" {
                header.push_str(" deletion | deletion per Rollout |");
                rule.push_str("---:|---:|");
            }
        }
        push(&mut md, &header);
        push(&mut md, &rule);
        for k in &keys {
            let a = active.requests.get(k).copied().unwrap_or(0.0);
            let mut row = format!("| {} | {} | {} | {} |", k.0, k.1, num(a), num(a / n));
            for w in &windows {
                let v = w.requests.get(k).copied().unwrap_or(0.0);
                if w.name == "soak" {
                    row.push_str(&format!(" {} | {} |", num(v), num(w.per_minute(v))));
                } else if w.name == "deletion" {
                    row.push_str(&format!(" {} | {} |", num(v), num(v / n)));
                }
            }
            push(&mut md, &row);
        }
        push(&mut md, "");

        // The API server's view, when scraped.
        if let Some(api) = &active.apiserver {
            let operator_resources: std::collections::BTreeSet<&String> =
                keys.iter().map(|(_, r)| r).collect();
            let soak_api = soak.and_then(|w| w.apiserver.clone()).unwrap_or_default();
            let mut rows: Vec<(&(String, String), f64)> = api
                .iter()
                .filter(|((_, r), _)| operator_resources.contains(r))
                .map(|(k, v)| (k, *v))
                .collect();
            rows.sort_by(|a, b| a.0.cmp(b.0));
            push(
                &mut md,
                "The API server's own count (`apiserver_request_total`, every client: the bench's creates and watch and the controller-manager are included) for the resources the operator uses:\n",
            );
            push(
                &mut md,
                "| verb | resource | first create → all settled | soak |",
            );
            push(&mut md, "|---|---|---:|---:|");
            for (k, v) in rows {
                push(
                    &mut md,
                    &format!(
                        "| {} | {} | {} | {} |",
                        k.0,
                        k.1,
                        num(v),
                        num(soak_api.get(k).copied().unwrap_or(0.0))
                    ),
                );
            }
            push(&mut md, "");
        }

        // RSS and CPU over time (at most ~40 rows).
        if !self.samples.is_empty() {
            push(
                &mut md,
                "Operator RSS and CPU over time (seconds since it started; sampled every few seconds, shown at most 40 rows):\n",
            );
            push(&mut md, "| t (s) | phase | RSS | CPU (s) |");
            push(&mut md, "|---:|---|---:|---:|");
            let step = self.samples.len().div_ceil(40).max(1);
            let mut shown: Vec<&Sample> = self.samples.iter().step_by(step).collect();
            // Always show the last sample of every phase.
            for pair in self.samples.windows(2) {
                if pair[0].phase != pair[1].phase {
                    shown.push(&pair[0]);
                }
            }
            if let Some(last) = self.samples.last() {
                shown.push(last);
            }
            shown.sort_by(|a, b| a.t.total_cmp(&b.t));
            shown.dedup_by(|a, b| a.t == b.t);
            for s in shown {
                push(
                    &mut md,
                    &format!(
                        "| {:.0} | {} | {} | {:.1} |",
                        s.t,
                        s.phase,
                        mib(s.stats.rss_kib),
                        s.stats.cpu_seconds
                    ),
                );
            }
            push(&mut md, "");
        }
        if !self.soak_log.is_empty() {
            push(
                &mut md,
                "The operator's log during the soak (first lines):\n",
            );
            push(&mut md, "```");
            for l in &self.soak_log {
                push(&mut md, l);
            }
            push(&mut md, "```\n");
        }
        if !self.warnings_in_log.is_empty() {
            push(&mut md, "First warnings in the operator's log:\n");
            push(&mut md, "```");
            for l in &self.warnings_in_log {
                push(&mut md, l);
            }
            push(&mut md, "```\n");
        }
        md
    }
}

/// Replace the section whose heading is `## {heading}` in the Markdown file
/// at `path` (or append it); whatever comes before the first section is
/// replaced by `preamble`.
pub fn write_section(path: &Path, preamble: &str, heading: &str, section: &str) {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let old = match old.find("\n## ") {
        Some(i) => format!("{preamble}{}", &old[i + 1..]),
        None => preamble.to_string(),
    };
    let marker = format!("## {heading}\n");
    let new = match old.find(&marker) {
        Some(start) => {
            let after = &old[start + marker.len()..];
            let end = after
                .find("\n## ")
                .map(|i| start + marker.len() + i + 1)
                .unwrap_or(old.len());
            format!("{}{}{}", &old[..start], section, &old[end..])
        }
        None => {
            let mut s = old;
            if !s.ends_with("\n\n") {
                s.push('\n');
            }
            s.push_str(section);
            s
        }
    };
    std::fs::write(path, new).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
