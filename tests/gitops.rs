//! At home in GitOps: what Helm 4's `--wait` (kstatus), Argo CD's health
//! check and Argo CD's `ignoreDifferences` make of a Rollout.
//!
//! On the real API server (`helm_wait_follows_the_canary`): four releases of
//! a small chart holding two Deployments, their Services, an HTTPRoute and a
//! Rollout are installed with `helm install --wait` (Helm 4, kstatus), all
//! before the operator starts (so Helm first sees a Rollout nobody has
//! written a status for). The one whose canary succeeds makes Helm wait for
//! the promotion and succeed; the one rolled back (its Prometheus is down),
//! the one waiting for a person past `spec.pauseDeadline` and the invalid
//! one make Helm fail. On the way the Rollouts are captured once per phase
//! and the route as created, mid-rollout and promoted: each captured
//! Rollout goes through the Argo CD health check (`charts/rollwise/argocd/
//! health.lua`, run in Lua 5.1 as Argo CD does) and must match the fixture
//! committed under `tests/fixtures/gitops/` (phase and conditions; run with
//! `ROLLWISE_UPDATE_FIXTURES=1` to rewrite them), and the routes must be
//! equal once the `ignoreDifferences` of docs/routers.md are applied with
//! `jq`.
//!
//! Without a cluster: the committed fixtures go through the health check
//! and the `ignoreDifferences` (so the script and the docs are checked on
//! every run), and docs/gitops.md must show the script as it is.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{OperatorOptions, TestNs, eventually, in_namespace};
use common::prometheus::PrometheusServer;
use kube::api::{ApiResource, DynamicObject};
use kube::api::{Patch, PatchParams};
use rollwise::api::{Phase, Rollout};
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const HEALTH_LUA: &str = "charts/rollwise/argocd/health.lua";
const FIXTURES: &str = "tests/fixtures/gitops";
/// `helm --timeout`: a bound, not what the test takes (Helm fails as soon as
/// a Rollout is Stalled).
const HELM_TIMEOUT: &str = "90s";
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);
/// The success release's pause: Helm must not return before it is over.
const PAUSE_SECONDS: u64 = 6;

// ---------------------------------------------------------------------------
// Argo CD: the health check and ignoreDifferences
// ---------------------------------------------------------------------------

/// Run the Argo CD health check on `obj` as Argo CD does: the object in the
/// global `obj` (JSON null as nil), the script returns `{status, message}`.
fn argocd_health(obj: &Value) -> (String, String) {
    use mlua::{Lua, LuaSerdeExt, SerializeOptions, Table};
    let script = std::fs::read_to_string(Path::new(ROOT).join(HEALTH_LUA)).expect("health.lua");
    let lua = Lua::new();
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let value = lua
        .to_value_with(obj, options)
        .expect("the object converts to Lua");
    lua.globals().set("obj", value).expect("set obj");
    let hs: Table = lua
        .load(&script)
        .set_name("health.lua")
        .eval()
        .unwrap_or_else(|e| panic!("health.lua failed on {obj}: {e}"));
    let status: String = hs.get("status").expect("hs.status is a string");
    let message: String = hs.get("message").unwrap_or_default();
    (status, message)
}

/// The `jqPathExpressions` docs/routers.md gives Argo CD for `kind`, with
/// the example's Service names.
fn documented_jq_paths(kind: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/routers.md")).expect("routers.md");
    let at = doc
        .find("  ignoreDifferences:")
        .expect("docs/routers.md has an ignoreDifferences example");
    let start = doc[..at].rfind("```yaml\n").expect("in a yaml block") + "```yaml\n".len();
    let block = &doc[start..start + doc[start..].find("```").expect("end of the block")];
    let parsed: Value =
        serde_saphyr::from_str(block).expect("the ignoreDifferences example is YAML");
    let entries = parsed["spec"]["ignoreDifferences"]
        .as_array()
        .expect("a list")
        .clone();
    let entry = entries
        .iter()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the documented ignoreDifferences"));
    entry["jqPathExpressions"]
        .as_array()
        .expect("jqPathExpressions")
        .iter()
        .map(|e| e.as_str().expect("a string").to_string())
        .collect()
}

/// What Argo CD compares after `ignoreDifferences`: `.spec` with every
/// documented path deleted (`del(path)`, one expression after the other, as
/// Argo CD's normalizer does), computed by `jq`.
fn normalized_spec(route: &Value, paths: &[String]) -> Value {
    let program = paths
        .iter()
        .map(|p| format!("del({p})"))
        .chain(std::iter::once(".spec".to_string()))
        .collect::<Vec<_>>()
        .join(" | ");
    let mut child = Command::new("jq")
        .args(["-S", "-c", &program])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run jq (scripts/install-test-deps.sh installs it)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(route.to_string().as_bytes())
            .expect("write to jq");
    }
    let out = child.wait_with_output().expect("jq runs");
    assert!(
        out.status.success(),
        "jq {program:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("jq prints JSON")
}

/// The health each captured phase must get.
const EXPECTED_HEALTH: &[(&str, &str, &str)] = &[
    // (fixture, Argo CD health, a word of the message)
    ("pending", "Progressing", "observe generation"),
    ("progressing", "Progressing", "pausing"),
    ("paused", "Suspended", "ManualPause"),
    (
        "pause-deadline-exceeded",
        "Degraded",
        "PauseDeadlineExceeded",
    ),
    ("succeeded", "Healthy", "AllStepsDone"),
    ("rolled-back", "Degraded", "MetricsUnavailable"),
    ("aborted", "Degraded", "Aborted"),
    ("invalid", "Degraded", "ReferenceNotFound"),
];

fn fixture_path(name: &str) -> PathBuf {
    Path::new(ROOT).join(FIXTURES).join(format!("{name}.json"))
}

fn read_fixture(name: &str) -> Value {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (ROLLWISE_UPDATE_FIXTURES=1 cargo test --test gitops writes it, on a cluster)",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("a fixture is JSON")
}

fn check_health(name: &str, obj: &Value) {
    let (_, want, word) = EXPECTED_HEALTH
        .iter()
        .find(|(n, _, _)| *n == name)
        .unwrap_or_else(|| panic!("no expected health for {name}"));
    let (status, message) = argocd_health(obj);
    assert_eq!(
        (status.as_str(), message.contains(word)),
        (*want, true),
        "{name}: health {status:?} {message:?}, expected {want} mentioning {word:?}"
    );
}

#[test]
fn argo_cd_health_of_every_captured_phase() {
    for (name, _, _) in EXPECTED_HEALTH {
        check_health(name, &read_fixture(name));
    }
}

#[test]
fn argo_cd_health_of_odd_objects_never_fails() {
    let odd = [
        json!({}),
        json!({"metadata": {}}),
        json!({"metadata": {"generation": 3}, "status": null}),
        json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1}}),
        json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [{"type": "Ready"}]}}),
        json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": []}}),
    ];
    for obj in odd {
        let (status, _) = argocd_health(&obj);
        assert_eq!(status, "Progressing", "{obj}");
    }
    // A newer generation than the status: Progressing, whatever the
    // conditions of the older one say.
    let mut stale = read_fixture("succeeded");
    stale["metadata"]["generation"] = json!(7);
    assert_eq!(argocd_health(&stale).0, "Progressing");
}

#[test]
fn documented_ignore_differences_hide_exactly_the_weights_rollwise_writes() {
    let paths = documented_jq_paths("HTTPRoute");
    let created = read_fixture("httproute-created");
    let base = normalized_spec(&created, &paths);
    for moved in ["httproute-progressing", "httproute-succeeded"] {
        let live = read_fixture(moved);
        assert_ne!(
            created["spec"], live["spec"],
            "{moved}: rollwise moved no weight?"
        );
        assert_eq!(
            normalized_spec(&live, &paths),
            base,
            "{moved}: Argo CD would report a difference"
        );
    }
    // And nothing else is hidden: a change of anything else still shows.
    let mut edited = read_fixture("httproute-progressing");
    edited["spec"]["rules"][0]["matches"][0]["path"]["value"] = json!("/other");
    assert_ne!(normalized_spec(&edited, &paths), base);
    let mut edited = read_fixture("httproute-progressing");
    edited["spec"]["hostnames"] = json!(["other.test"]);
    assert_ne!(normalized_spec(&edited, &paths), base);
}

#[test]
fn docs_show_the_health_check_as_it_is() {
    let script = std::fs::read_to_string(Path::new(ROOT).join(HEALTH_LUA)).expect("health.lua");
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/gitops.md")).expect("gitops.md");
    let indented: String = script
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("    {l}\n")
            }
        })
        .collect();
    assert!(
        doc.contains(&indented),
        "docs/gitops.md must show {HEALTH_LUA} verbatim (indented by 4 under the argocd-cm key)"
    );
}

// ---------------------------------------------------------------------------
// The real thing: Helm 4 --wait on the real API server
// ---------------------------------------------------------------------------

/// The chart a service team would write: two Deployments, their Services,
/// an HTTPRoute and the Rollout (its steps, analysis and pauseDeadline from
/// the values).
fn write_chart(dir: &Path) {
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates).expect("chart dir");
    std::fs::write(
        dir.join("Chart.yaml"),
        "apiVersion: v2\nname: checkout\nversion: 0.1.0\n",
    )
    .expect("Chart.yaml");
    std::fs::write(dir.join("values.yaml"), "steps: []\n").expect("values.yaml");
    let app = r#"{{- $name := .Release.Name }}
{{- range $v := list "stable" "canary" }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}-{{ $v }}
  labels: {app: {{ $name }}, version: {{ $v }}}
spec:
  replicas: 1
  selector:
    matchLabels: {app: {{ $name }}, version: {{ $v }}}
  template:
    metadata:
      labels: {app: {{ $name }}, version: {{ $v }}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      securityContext: {runAsNonRoot: true, runAsUser: 65535, runAsGroup: 65535, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: app
          image: registry.k8s.io/pause:3.10
          resources: {requests: {cpu: 5m, memory: 8Mi}, limits: {memory: 32Mi}}
          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}-{{ $v }}
spec:
  selector: {app: {{ $name }}, version: {{ $v }}}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
{{- end }}
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {{ $name }}
spec:
  parentRefs: [{name: gitops}]
  hostnames: [checkout.test]
  rules:
    - matches: [{path: {type: PathPrefix, value: /checkout}}]
      backendRefs: [{name: {{ $name }}-stable, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /static}}]
      backendRefs: [{name: static, port: 80}]
---
apiVersion: rollwise.io/v1alpha1
kind: Rollout
metadata:
  name: {{ $name }}
spec:
  stable: {service: {{ $name }}-stable, deployment: {{ $name }}-stable}
  canary: {service: {{ $name }}-canary, deployment: {{ .Values.canaryDeployment | default (printf "%s-canary" $name) }}}
  trafficRouting:
    gatewayAPI: {httpRoute: {{ $name }}}
  steps: {{ toJson .Values.steps }}
  {{- with .Values.analysis }}
  analysis: {{ toJson . }}
  {{- end }}
  {{- with .Values.pauseDeadline }}
  pauseDeadline: {{ . }}
  {{- end }}
"#;
    std::fs::write(templates.join("app.yaml"), app).expect("app.yaml");
}

/// One `helm install --wait` running in a thread.
struct HelmRun {
    release: String,
    handle: std::thread::JoinHandle<(Result<String, String>, Duration, jiff::Timestamp)>,
}

fn helm_install(
    kubeconfig: &Path,
    ns: &str,
    chart: &Path,
    release: &str,
    values: Value,
) -> HelmRun {
    helm_install_with(kubeconfig, ns, chart, release, values, true)
}

fn helm_install_with(
    kubeconfig: &Path,
    ns: &str,
    chart: &Path,
    release: &str,
    values: Value,
    wait: bool,
) -> HelmRun {
    let mut cmd = Command::new("helm");
    cmd.args(["install", release])
        .arg(chart)
        .args(["-n", ns, "--kubeconfig"])
        .arg(kubeconfig)
        .args(["--timeout", HELM_TIMEOUT]);
    if wait {
        cmd.arg("--wait");
    }
    if let Some(map) = values.as_object() {
        for (k, v) in map {
            cmd.arg("--set-json").arg(format!("{k}={v}"));
        }
    }
    let release_name = release.to_string();
    let handle = std::thread::spawn(move || {
        let started = Instant::now();
        let out = cmd.output();
        let took = started.elapsed();
        let at = jiff::Timestamp::now();
        let result = match out {
            Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
            Ok(o) => Err(format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => Err(format!(
                "cannot run helm (scripts/install-test-deps.sh): {e}"
            )),
        };
        (result, took, at)
    });
    HelmRun {
        release: release_name,
        handle,
    }
}

impl HelmRun {
    /// Helm's output (Err: it failed), how long it took, when it returned.
    fn finish(self) -> (Result<String, String>, Duration, jiff::Timestamp) {
        let (result, took, at) = self.handle.join().expect("the helm thread does not panic");
        eprintln!(
            "[e2e] helm install --wait {} took {:.1}s: {}",
            self.release,
            took.as_secs_f64(),
            match &result {
                Ok(_) => "succeeded".to_string(),
                Err(e) => format!("failed: {}", e.trim()),
            }
        );
        (result, took, at)
    }
}

/// The Rollout as the API server gives it, made comparable: the release
/// and namespace names replaced by those of the docs' example
/// (`checkout`, `shop`, Services `checkout-v1`/`checkout-v2`), times fixed,
/// managedFields and uids dropped.
fn normalize(obj: &Value, release: &str, ns: &str) -> Value {
    let text = obj
        .to_string()
        .replace(&format!("{release}-stable"), "checkout-v1")
        .replace(&format!("{release}-canary"), "checkout-v2")
        .replace(&format!("{release}-missing"), "checkout-v9")
        .replace(release, "checkout")
        .replace(ns, "shop");
    let mut v: Value = serde_json::from_str(&text).expect("still JSON");
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "annotations",
            "labels",
            "finalizers",
        ] {
            meta.remove(k);
        }
    }
    fix_times(&mut v);
    v
}

fn fix_times(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                let is_time = k.ends_with("At") || k.ends_with("Time") || k == "at";
                if is_time && x.is_string() {
                    *x = json!("2026-01-01T00:00:00Z");
                } else {
                    fix_times(x);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(fix_times),
        _ => {}
    }
}

/// What must stay the same between runs: the phase, the conditions' type,
/// status and reason, and whether the status observed the generation.
fn shape(obj: &Value) -> Value {
    let conditions: Vec<Value> = obj["status"]["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| json!([c["type"], c["status"], c["reason"]]))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "phase": obj["status"]["phase"],
        "observed": obj["status"]["observedGeneration"] == obj["metadata"]["generation"],
        "conditions": conditions,
    })
}

/// Check a capture against its fixture (or write it, with
/// `ROLLWISE_UPDATE_FIXTURES=1`).
fn captured(name: &str, obj: Value) {
    let path = fixture_path(name);
    if std::env::var_os("ROLLWISE_UPDATE_FIXTURES").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("fixtures dir");
        let text = serde_json::to_string_pretty(&obj).expect("JSON") + "\n";
        std::fs::write(&path, text).expect("write the fixture");
        eprintln!("[e2e] wrote {}", path.display());
    } else if !name.starts_with("httproute") {
        assert_eq!(
            shape(&obj),
            shape(&read_fixture(name)),
            "{name}: the live object differs from the committed fixture {} (if deliberate: ROLLWISE_UPDATE_FIXTURES=1)",
            path.display()
        );
    }
    if !name.starts_with("httproute") {
        check_health(name, &obj);
    }
}

async fn raw_rollout(ns: &TestNs, name: &str) -> Value {
    let r = ns
        .raw_rollouts()
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get Rollout {name}: {e}"));
    serde_json::to_value(r).expect("JSON")
}

async fn raw_route(ns: &TestNs, name: &str) -> Value {
    let ar = ApiResource::erase::<::gateway_api::apis::standard::httproutes::HttpRoute>(&());
    let r: DynamicObject = ns
        .dynamic(&ar)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get HTTPRoute {name}: {e}"));
    serde_json::to_value(r).expect("JSON")
}

fn condition(r: &Rollout, type_: &str) -> Option<(String, String)> {
    r.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_wait_follows_the_canary() {
    in_namespace("gitops", async |ns: &TestNs| {
        ns.cluster
            .require_crds(
                &["httproutes.gateway.networking.k8s.io"],
                common::cluster::ROUTER_CRDS_HINT,
            )
            .await;
        let chart_dir = tempfile::tempdir().expect("tempdir");
        write_chart(chart_dir.path());
        let kubeconfig = ns.cluster.kubeconfig.clone();
        let suffix = &ns.name[ns.name.len().saturating_sub(5)..];
        let name = |what: &str| format!("{what}-{suffix}");
        let (ok, bad, waiting, invalid) = (name("ok"), name("bad"), name("wait"), name("invalid"));

        // All four installed before the operator runs: Helm first sees
        // Rollouts without a status written by rollwise.
        let ok_run = helm_install(
            &kubeconfig,
            &ns.name,
            chart_dir.path(),
            &ok,
            json!({"steps": [{"setWeight": 20}, {"pause": {"duration": format!("{PAUSE_SECONDS}s")}}, {"setWeight": 100}]}),
        );
        let bad_run = helm_install(
            &kubeconfig,
            &ns.name,
            chart_dir.path(),
            &bad,
            json!({
                "steps": [{"setWeight": 20}, {"pause": {"duration": "1m"}}, {"setWeight": 100}],
                // Nothing listens there: every query fails, and the second
                // error in a row rolls back.
                "analysis": {
                    "interval": "1s",
                    "prometheus": {"address": "http://127.0.0.1:9"},
                    "consecutiveErrorLimit": 2,
                    "metrics": [{"name": "error-rate", "query": "vector(0)", "max": 0.05}]
                }
            }),
        );
        let wait_run = helm_install(
            &kubeconfig,
            &ns.name,
            chart_dir.path(),
            &waiting,
            json!({"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}], "pauseDeadline": "4s"}),
        );
        let invalid_run = helm_install(
            &kubeconfig,
            &ns.name,
            chart_dir.path(),
            &invalid,
            json!({"steps": [{"setWeight": 10}], "canaryDeployment": format!("{invalid}-missing")}),
        );

        // Pending: created, no status written (the CRD's status default
        // shows observedGeneration 0).
        let pending = eventually(
            "Helm created the Rollout and the route",
            Duration::from_secs(60),
            || async {
                let r = ns.raw_rollouts().get_opt(&ok).await.map_err(|e| e.to_string())?;
                let route = ns
                    .dynamic(&ApiResource::erase::<::gateway_api::apis::standard::httproutes::HttpRoute>(&()))
                    .get_opt(&ok)
                    .await
                    .map_err(|e| e.to_string())?;
                match (r, route) {
                    (Some(r), Some(route)) => Ok((r, route)),
                    other => Err(format!("{:?}", (other.0.is_some(), other.1.is_some()))),
                }
            },
        )
        .await;
        let route_created = serde_json::to_value(&pending.1).expect("JSON");
        let pending = serde_json::to_value(&pending.0).expect("JSON");
        assert_eq!(
            pending["status"]["observedGeneration"],
            json!(0),
            "the API server shows the CRD's status default: {pending}"
        );
        captured("pending", normalize(&pending, &ok, &ns.name));
        captured("httproute-created", normalize(&route_created, &ok, &ns.name));
        tokio::time::sleep(Duration::from_secs(3)).await;
        for run in [&ok_run, &bad_run, &wait_run, &invalid_run] {
            assert!(
                !run.handle.is_finished(),
                "helm install --wait {} returned before the operator ran",
                run.release
            );
        }

        // The operator, with an operator-wide webhook nobody answers (so the
        // notification metrics exist), scraped by a real Prometheus that
        // also serves the analysis of a fifth Rollout (for the comparison
        // and budget metrics): the dashboard is checked against both.
        let op = ns
            .start_operator(
                OperatorOptions::new(&ns.cluster.kubeconfig)
                    .namespace(&ns.name)
                    .arg("--notify-url")
                    .arg("http://127.0.0.1:9/hook"),
            )
            .await;
        let operator_started = Instant::now();
        let target = op.addr.to_string();
        let prometheus = tokio::task::spawn_blocking(move || PrometheusServer::start_scraping(&target))
            .await
            .expect("Prometheus starts");
        let observed = name("observed");
        helm_install_with(
            &kubeconfig,
            &ns.name,
            chart_dir.path(),
            &observed,
            json!({
                "steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}],
                "analysis": {
                    "interval": "1s",
                    "prometheus": {"address": prometheus.address()},
                    "maxExtraFailures": 500,
                    "metrics": [{"name": "error-rate", "query": "vector(0.001)", "max": 0.05}],
                    "compare": [{
                        "name": "http-errors",
                        // Constant counts, as the rule wants them per Service.
                        "requests": "label_replace(vector(10000), \"service\", \"{{service}}\", \"\", \"\")",
                        "failures": "label_replace(vector(10), \"service\", \"{{service}}\", \"\", \"\")",
                        "tolerance": 0.01
                    }]
                }
            }),
            false,
        )
        .finish()
        .0
        .unwrap_or_else(|e| panic!("helm install {observed}: {e}"));

        // In progress: holding 20% during the pause.
        let r = ns
            .wait_rollout(&ok, "the pause at 20%", PHASE_TIMEOUT, |r| {
                r.status.as_ref().is_some_and(|s| {
                    s.canary_weight == 20 && s.step == "2/3" && s.phase == Phase::Progressing
                })
            })
            .await;
        assert_eq!(condition(&r, "Reconciling").map(|c| c.0), Some("True".into()));
        captured("progressing", normalize(&raw_rollout(ns, &ok).await, &ok, &ns.name));
        captured(
            "httproute-progressing",
            normalize(&raw_route(ns, &ok).await, &ok, &ns.name),
        );
        assert!(!ok_run.handle.is_finished(), "helm returned mid-rollout");

        // Waiting for a person, then past the deadline, then aborted.
        ns.wait_rollout(&waiting, "paused for promote", PHASE_TIMEOUT, |r| {
            r.status.as_ref().is_some_and(|s| s.phase == Phase::Paused)
        })
        .await;
        let paused = raw_rollout(ns, &waiting).await;
        if shape(&paused)["conditions"]
            .to_string()
            .contains(rollwise::status::PAUSE_DEADLINE_EXCEEDED)
        {
            panic!("the deadline (4s) passed before the test looked: {paused}");
        }
        captured("paused", normalize(&paused, &waiting, &ns.name));
        let r = ns
            .wait_rollout(&waiting, "Stalled past pauseDeadline", PHASE_TIMEOUT, |r| {
                condition(r, "Stalled")
                    == Some(("True".into(), rollwise::status::PAUSE_DEADLINE_EXCEEDED.into()))
            })
            .await;
        assert_eq!(r.status.as_ref().map(|s| s.phase), Some(Phase::Paused));
        captured(
            "pause-deadline-exceeded",
            normalize(&raw_rollout(ns, &waiting).await, &waiting, &ns.name),
        );
        let (wait_result, _, _) = wait_run.finish();
        let err = wait_result.expect_err("helm --wait must fail on a Rollout past its pauseDeadline");
        assert!(
            err.contains(&format!("Rollout/{}/{waiting}", ns.name)) && err.contains("Failed"),
            "{err}"
        );
        assert!(err.contains("spec.pauseDeadline"), "Helm says why: {err}");
        ns.api::<Rollout>()
            .patch(
                &waiting,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"rollwise.io/action": "abort"}}})),
            )
            .await
            .expect("annotate abort");
        ns.wait_phase(&waiting, Phase::Aborted, 0, PHASE_TIMEOUT).await;
        captured(
            "aborted",
            normalize(&raw_rollout(ns, &waiting).await, &waiting, &ns.name),
        );

        // Rolled back: Helm fails, without waiting for its timeout.
        ns.wait_phase(&bad, Phase::RolledBack, 0, PHASE_TIMEOUT).await;
        captured("rolled-back", normalize(&raw_rollout(ns, &bad).await, &bad, &ns.name));
        let (bad_result, bad_took, _) = bad_run.finish();
        let err = bad_result.expect_err("helm --wait must fail on a rolled-back Rollout");
        assert!(
            err.contains(&format!("Rollout/{}/{bad}", ns.name)) && err.contains("Failed"),
            "{err}"
        );
        assert!(
            bad_took < Duration::from_secs(60),
            "Helm failed only at its timeout ({bad_took:?}): it should see Stalled at once"
        );

        // Invalid: Helm fails, naming the field.
        ns.wait_phase(&invalid, Phase::Invalid, 0, PHASE_TIMEOUT).await;
        captured(
            "invalid",
            normalize(&raw_rollout(ns, &invalid).await, &invalid, &ns.name),
        );
        let (invalid_result, _, _) = invalid_run.finish();
        let err = invalid_result.expect_err("helm --wait must fail on an invalid Rollout");
        assert!(err.contains("spec.canary.deployment"), "{err}");

        // Succeeded: Helm returns once the canary is promoted, not before.
        let (ok_result, _, ok_returned) = ok_run.finish();
        ok_result.unwrap_or_else(|e| panic!("helm install --wait of a healthy canary failed: {e}"));
        let r = ns.rollout(&ok).await;
        let status = r.status.clone().unwrap_or_default();
        assert_eq!(
            (status.phase, status.canary_weight),
            (Phase::Succeeded, 100),
            "Helm returned before the promotion"
        );
        assert!(
            operator_started.elapsed() >= Duration::from_secs(PAUSE_SECONDS),
            "Helm returned before the {PAUSE_SECONDS}s pause was over"
        );
        assert_eq!(condition(&r, "Ready"), Some(("True".into(), "AllStepsDone".into())));
        let completed_at = r
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Completed"))
            .map(|c| c.last_transition_time.0)
            .expect("a Completed condition");
        assert!(
            completed_at <= ok_returned,
            "Helm returned at {ok_returned}, before the Rollout completed at {completed_at}"
        );
        captured("succeeded", normalize(&raw_rollout(ns, &ok).await, &ok, &ns.name));
        captured(
            "httproute-succeeded",
            normalize(&raw_route(ns, &ok).await, &ok, &ns.name),
        );

        // The dashboard: every expression parses in Prometheus and names
        // only metrics this operator's /metrics has.
        ns.wait_rollout(&observed, "comparisons and a budget", PHASE_TIMEOUT, |r| {
            r.status
                .as_ref()
                .is_some_and(|s| !s.comparisons.is_empty() && s.budget.is_some())
        })
        .await;
        let metrics = eventually(
            "the operator's /metrics with every family the dashboard shows",
            Duration::from_secs(30),
            || async {
                let text = op.metrics().await;
                let have = exported(&text);
                let missing: Vec<String> = dashboard_metrics()
                    .into_iter()
                    .filter(|m| !have.contains(m))
                    .collect();
                if missing.is_empty() { Ok(text) } else { Err(format!("missing {missing:?}")) }
            },
        )
        .await;
        let families = exported(&metrics);
        let address = prometheus.address();
        let exprs = dashboard_exprs();
        assert!(exprs.len() >= 15, "{exprs:?}");
        let weight_has_data = tokio::task::spawn_blocking(move || {
            for e in &exprs {
                let body = prometheus_query(&address, e)
                    .unwrap_or_else(|err| panic!("the dashboard's {e:?} does not work in Prometheus: {err}"));
                assert!(body.contains(r#""status":"success""#), "{e}: {body}");
            }
            // And the scraped data reaches a panel: the canary weight of
            // every Rollout of the test.
            let q = dashboard_exprs()
                .into_iter()
                .find(|e| e.contains("rollwise_canary_weight_percent"))
                .expect("a canary weight panel");
            eventually_blocking(|| {
                let body = prometheus_query(&address, &q).unwrap_or_default();
                body.contains(r#""rollout":"#)
            })
        })
        .await
        .expect("the queries do not panic");
        assert!(weight_has_data, "the canary weight panel shows no data from the scraped operator");
        for m in dashboard_metrics() {
            assert!(families.contains(&m), "{m} is not in /metrics");
        }
        drop(prometheus);
    })
    .await;
}

// ---------------------------------------------------------------------------
// The Grafana dashboard
// ---------------------------------------------------------------------------

fn dashboard() -> Value {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("charts/rollwise/dashboards/rollwise.json"))
            .expect("the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard (panel targets and the
/// selectors of the variables' `label_values`), with the variables as the
/// test's Prometheus needs them (`$job` is its job `test`).
fn dashboard_exprs() -> Vec<String> {
    let d = dashboard();
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().expect("an expr").to_string());
        }
    }
    for v in d["templating"]["list"].as_array().expect("variables") {
        if let Some(q) = v["query"]["query"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(sel, _)| sel.to_string())
                .unwrap_or_else(|| panic!("variable query {q}"));
            out.push(inner);
        }
    }
    out.into_iter()
        .map(|e| {
            e.replace("$job", "test")
                .replace("$namespace", ".*")
                .replace("$rollout", ".*")
                .replace("$__rate_interval", "1m")
        })
        .collect()
}

/// The metric names the dashboard uses (histogram series by their family).
fn dashboard_metrics() -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for e in dashboard_exprs() {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("rollwise_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

/// The sample names of an exposition (`name{...} value`).
fn exported(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

fn eventually_blocking(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

/// `GET /api/v1/query?query=...` on the test's Prometheus: Err with the
/// answer when it is not 200 (a parse error is a 400).
fn prometheus_query(address: &str, expr: &str) -> Result<String, String> {
    let addr: std::net::SocketAddr = address
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("host:port");
    let encoded: String = expr
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    match common::cluster::http_get(addr, &format!("/api/v1/query?query={encoded}")) {
        Ok((200, body)) => Ok(body),
        Ok((code, body)) => Err(format!("{code}: {body}")),
        Err(e) => Err(e),
    }
}
