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
//! A fifth Rollout compares two versions against a real Prometheus that
//! scrapes the operator: every expression of the Grafana dashboard must run
//! there and name only metrics of the operator's `/metrics`.
//!
//! Without a cluster, `tests/argocd.rs` runs the same checks on the
//! committed fixtures.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{OperatorOptions, TestNs, eventually, in_namespace};
use common::gitops::*;
use common::prometheus::PrometheusServer;
use kube::api::{ApiResource, DynamicObject};
use kube::api::{Patch, PatchParams};
use rollwise::api::{Phase, Rollout};
use rollwise::metrics::SPARSE_FAMILIES;
use serde_json::{Value, json};

/// `helm --timeout`: a bound, not what the test takes (Helm fails as soon as
/// a Rollout is Stalled).
const HELM_TIMEOUT: &str = "90s";
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);
/// The success release's pause: Helm must not return before it is over.
const PAUSE_SECONDS: u64 = 6;

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
        let route_created = normalize(&route_created, &ok, &ns.name);
        captured("httproute-created", route_created.clone());
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
        let route_progressing = normalize(&raw_route(ns, &ok).await, &ok, &ns.name);
        captured("httproute-progressing", route_progressing.clone());
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
        let route_succeeded = normalize(&raw_route(ns, &ok).await, &ok, &ns.name);
        captured("httproute-succeeded", route_succeeded.clone());
        // Argo CD with the documented ignoreDifferences sees no change.
        let paths = documented_jq_paths("HTTPRoute");
        let base = normalized_spec(&route_created, &paths);
        for (what, live) in [("mid-rollout", &route_progressing), ("promoted", &route_succeeded)] {
            assert_ne!(live["spec"], route_created["spec"], "{what}: no weight moved?");
            assert_eq!(normalized_spec(live, &paths), base, "{what}: Argo CD would see a difference");
        }

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
                // A sparse family has no series while every value is 0
                // (src/metrics/per_rollout.rs proves it appears once one is not).
                let missing: Vec<String> = dashboard_metrics()
                    .into_iter()
                    .filter(|m| !have.contains(m) && !SPARSE_FAMILIES.contains(&m.as_str()))
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
            assert!(
                families.contains(&m) || SPARSE_FAMILIES.contains(&m.as_str()),
                "{m} is not in /metrics"
            );
        }
        drop(prometheus);
    })
    .await;
}
