//! The Helm chart `charts/rollwise`, checked with the real tools: `helm lint
//! --strict`, `helm template` with the default values and the main
//! variations (the rendered YAML parsed and asserted on), the RBAC each
//! `routers.*` / `scaling.enabled` value adds (exactly those rules), the
//! values schema rejecting bad values, and every rendered manifest validated by
//! `kubernetes-validate --strict` against Kubernetes 1.28 (the oldest the
//! chart supports) and the newest version the validator knows.
//!
//! `helm` and `kubernetes-validate` are installed by
//! `bash scripts/install-test-deps.sh`; a missing tool fails the test (with
//! that hint), it never skips it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/rollwise");
const RELEASE: &str = "rollwise";
const RELEASE_NS: &str = "rollwise-system";
const OLDEST_KUBERNETES: &str = "1.28.0";

// ---------------------------------------------------------------- tools

/// Runs a tool; a tool that is not installed fails the test with the way
/// to install it.
fn run_tool(program: &str, args: &[&str]) -> Output {
    match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` is not installed; tests/chart.rs needs it. \
             Run `bash scripts/install-test-deps.sh` (installs helm and kubernetes-validate)."
        ),
        Err(e) => panic!("cannot run `{program}`: {e}"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A values file for `helm -f`.
fn values_file(values: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    f.write_all(values.as_bytes()).unwrap();
    f.flush().unwrap();
    f
}

/// `helm template` of the chart with these values (YAML), CRDs included.
/// Err: helm's message.
fn try_render(values: &str, kube_version: Option<&str>) -> Result<Rendered, String> {
    let file = values_file(values);
    let path = file.path().to_str().unwrap();
    let mut args = vec![
        "template",
        RELEASE,
        CHART,
        "--namespace",
        RELEASE_NS,
        "--include-crds",
        "-f",
        path,
    ];
    if let Some(v) = kube_version {
        args.extend(["--kube-version", v]);
    }
    let out = run_tool("helm", &args);
    if !out.status.success() {
        return Err(text(&out));
    }
    let yaml = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple::<Value>(&yaml)
        .unwrap_or_else(|e| panic!("helm rendered YAML that does not parse: {e}\n{yaml}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    Ok(Rendered { yaml, docs })
}

fn render(values: &str) -> Rendered {
    try_render(values, None).unwrap_or_else(|e| panic!("helm template failed:\n{e}"))
}

/// The newest Kubernetes version kubernetes-validate knows: its default
/// (`--help` says "Defaults to 1.x.y").
fn newest_kubernetes() -> &'static str {
    static NEWEST: OnceLock<String> = OnceLock::new();
    NEWEST.get_or_init(|| {
        let help = text(&run_tool("kubernetes-validate", &["--help"]));
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let after = flat
            .split("Defaults to ")
            .nth(1)
            .unwrap_or_else(|| panic!("no default version in kubernetes-validate --help:\n{help}"));
        let version: String = after
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let version = version.trim_end_matches('.').to_string();
        assert!(
            version.starts_with("1.") && version.split('.').count() == 3,
            "unexpected default version `{version}` in kubernetes-validate --help"
        );
        version
    })
}

/// `kubernetes-validate --strict -k <version>` on a file; (success, output).
fn kubernetes_validate(yaml: &str, version: &str) -> (bool, String) {
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    f.write_all(yaml.as_bytes()).unwrap();
    f.flush().unwrap();
    let out = run_tool(
        "kubernetes-validate",
        &["--strict", "-k", version, f.path().to_str().unwrap()],
    );
    (out.status.success(), text(&out))
}

// ---------------------------------------------------------------- rendered objects

struct Rendered {
    yaml: String,
    docs: Vec<Value>,
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn get(&self, kind: &str, name: &str) -> Option<&Value> {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
    }

    fn one(&self, kind: &str, name: &str) -> &Value {
        self.get(kind, name).unwrap_or_else(|| {
            panic!(
                "no {kind} {name} rendered; got: {:?}",
                self.docs
                    .iter()
                    .map(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]))
                    .collect::<Vec<_>>()
            )
        })
    }

    fn deployment(&self) -> &Value {
        self.one("Deployment", RELEASE)
    }

    fn container(&self) -> &Value {
        let containers = self.deployment()["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1, "one container");
        &containers[0]
    }

    /// The container's environment, by name.
    fn env(&self) -> BTreeMap<String, Value> {
        let mut env = BTreeMap::new();
        for e in self.container()["env"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap().to_string();
            assert!(
                env.insert(name.clone(), e.clone()).is_none(),
                "env {name} set twice"
            );
        }
        env
    }

    fn env_value(&self, name: &str) -> Option<String> {
        self.env()
            .get(name)
            .map(|e| e["value"].as_str().unwrap_or_default().to_string())
    }
}

/// A role's rules as (apiGroup, resource, verb, resourceNames) tuples.
fn permissions(role: &Value) -> BTreeSet<(String, String, String, String)> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let mut set = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let names = strings(&rule["resourceNames"]).join(",");
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    set.insert((group.clone(), resource.clone(), verb, names.clone()));
                }
            }
        }
    }
    set
}

fn perms(list: &[(&str, &str, &[&str])]) -> BTreeSet<(String, String, String, String)> {
    let mut set = BTreeSet::new();
    for (group, resource, verbs) in list {
        for verb in *verbs {
            set.insert((
                group.to_string(),
                resource.to_string(),
                verb.to_string(),
                String::new(),
            ));
        }
    }
    set
}

/// Exactly what the operator needs in the namespaces it watches.
fn operator_permissions() -> BTreeSet<(String, String, String, String)> {
    perms(&[
        (
            "rollwise.io",
            "rollouts",
            &["get", "list", "watch", "patch"],
        ),
        ("rollwise.io", "rollouts/status", &["patch"]),
        ("apps", "deployments", &["get", "list", "watch"]),
        ("", "services", &["get"]),
        (
            "gateway.networking.k8s.io",
            "httproutes",
            &["get", "list", "watch", "patch"],
        ),
        ("events.k8s.io", "events", &["create"]),
        ("", "secrets", &["get"]),
    ])
}

fn lease_permissions(lease: &str) -> BTreeSet<(String, String, String, String)> {
    let mut set = perms(&[("coordination.k8s.io", "leases", &["create"])]);
    for verb in ["get", "update", "watch"] {
        set.insert((
            "coordination.k8s.io".into(),
            "leases".into(),
            verb.into(),
            lease.into(),
        ));
    }
    set
}

/// Whether the boolean value at `path` (e.g. `routers.nginx`) is true in a
/// values file; unset is false (the defaults of the values it is used for).
fn value_on(values: &str, path: &str) -> bool {
    let parsed: Value = if values.trim().is_empty() {
        Value::Null
    } else {
        serde_saphyr::from_str(values).unwrap()
    };
    path.split('.')
        .fold(&parsed, |v, key| &v[key])
        .as_bool()
        .unwrap_or(false)
}

/// No role of the chart grants more than it should, whatever the values.
fn assert_least_privilege(what: &str, values: &str, r: &Rendered) {
    let nginx = value_on(values, "routers.nginx");
    let smi = value_on(values, "routers.smi");
    let writes_deployments =
        value_on(values, "routers.replicas") || value_on(values, "scaling.enabled");
    let jobs = value_on(values, "checks.jobs");
    for role in r.all("Role").into_iter().chain(r.all("ClusterRole")) {
        let name = &role["metadata"]["name"];
        for rule in role["rules"].as_array().unwrap() {
            assert!(
                rule.get("nonResourceURLs").is_none(),
                "{what}: {name}: nonResourceURLs"
            );
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                for item in rule[field].as_array().into_iter().flatten() {
                    assert_ne!(item, "*", "{what}: {name}: `*` in {field}");
                }
            }
        }
        for (group, resource, verb, _) in permissions(role) {
            let what = format!("{what}: {name}: {verb} {group}/{resource}");
            assert!(
                !["escalate", "bind", "impersonate", "deletecollection"].contains(&verb.as_str()),
                "{what}"
            );
            // The one delete: the canary Ingress the nginx router owns. It is
            // written with server-side apply and deleted when it carries
            // nothing (weight 0, no header route), so no idle canary Ingress
            // outlives a rollout. RBAC cannot name an object before it
            // exists, hence the whole resource, and only with routers.nginx.
            // And the Job checks' old Jobs, only with checks.jobs.
            if verb == "delete" {
                assert!(
                    (nginx && group == "networking.k8s.io" && resource == "ingresses")
                        || (jobs && group == "batch" && resource == "jobs"),
                    "{what}: nothing is deleted but the nginx router's canary Ingress \
                     and, with checks.jobs, the Job checks' Jobs"
                );
            }
            if resource == "jobs" {
                assert!(jobs, "{what}: Jobs only with checks.jobs");
                assert_ne!(verb, "watch", "{what}: Jobs are looked at, not watched");
            }
            // Listed and watched: Rollouts, and metadata-only the
            // Deployments and the route objects of the routers turned on
            // (they wake the Rollouts that wait on them); the Lease, by
            // name. Never Secrets, Services or Events.
            if ["list", "watch"].contains(&verb.as_str()) {
                let router_kind = [
                    ("httproutes", "routers.gatewayAPI"),
                    ("ingresses", "routers.nginx"),
                    ("virtualservices", "routers.istio"),
                    ("trafficsplits", "routers.smi"),
                    ("traefikservices", "routers.traefik"),
                ]
                .iter()
                .any(|(kind, value)| {
                    resource == *kind && (value_on(values, value) || gateway_default(values, value))
                });
                assert!(
                    ["rollouts", "deployments"].contains(&resource.as_str())
                        || router_kind
                        || (jobs && resource == "jobs" && verb == "list")
                        || (resource == "leases" && verb == "watch"),
                    "{what}: only Rollouts, Deployments, the routes of the routers \
                     turned on and the Lease are watched"
                );
            }
            if resource == "rollouts/finalizers" {
                assert!(
                    nginx || smi,
                    "{what}: rollouts/finalizers only for the routers that create \
                     objects owned by the Rollout"
                );
            }
            if resource == "secrets" {
                assert_eq!(verb, "get", "{what}: Secrets are only read by name");
            }
            if resource == "services" {
                assert_eq!(verb, "get", "{what}: the operator never writes Services");
            }
            if resource == "deployments" {
                assert!(
                    ["get", "list", "watch"].contains(&verb.as_str())
                        || (verb == "patch" && writes_deployments),
                    "{what}: Deployments are read and watched, and patched only with \
                     routers.replicas or scaling.enabled"
                );
            }
            if verb == "create" {
                assert!(
                    ["events", "leases"].contains(&resource.as_str())
                        || (nginx && resource == "ingresses")
                        || (smi && resource == "trafficsplits")
                        || (jobs && resource == "jobs"),
                    "{what}: creates nothing but Events, its Lease, and the objects \
                     the nginx (canary Ingress) and smi (TrafficSplit) routers own"
                );
            }
        }
    }
}

/// Whether `value` is `routers.gatewayAPI`, on by default unless `values`
/// turn it off.
fn gateway_default(values: &str, value: &str) -> bool {
    if value != "routers.gatewayAPI" {
        return false;
    }
    let parsed: Value = if values.trim().is_empty() {
        Value::Null
    } else {
        serde_saphyr::from_str(values).unwrap()
    };
    parsed["routers"]["gatewayAPI"].as_bool() != Some(false)
}

fn chart_app_version() -> String {
    let chart: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(format!("{CHART}/Chart.yaml")).unwrap())
            .unwrap();
    chart["appVersion"].as_str().unwrap().to_string()
}

/// The variations every structural and validation test runs over.
const VARIATIONS: &[(&str, &str)] = &[
    ("defaults", ""),
    ("one replica", "replicas: 1\n"),
    ("one namespace", "watchNamespaces: [shop]\n"),
    ("service monitor", "serviceMonitor:\n  enabled: true\n"),
    (
        "monitoring stack",
        "serviceMonitor:\n  enabled: true\nprometheusRule:\n  enabled: true\ngrafanaDashboard:\n  enabled: true\n",
    ),
    (
        "everything set",
        r#"
replicas: 3
watchNamespaces: [shop]
logLevel: rollwise=debug,kube=warn
logFormat: text
concurrency: 4
prometheus: {address: "http://prometheus-operated.monitoring:9090"}
notifications:
  webhook: {existingSecret: rollwise-webhook, key: url}
  format: slack
rbac: {readSecrets: false}
serviceAccount: {annotations: {example.com/role: rollwise}}
image: {repository: registry.example.com/rollwise, tag: "0.2.0", pullPolicy: Always}
imagePullSecrets: [{name: regcred}]
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: ops, effect: NoSchedule}]
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector: {matchLabels: {app.kubernetes.io/name: rollwise}}
podAnnotations: {example.com/scrape: "false"}
podLabels: {team: platform}
priorityClassName: system-cluster-critical
service: {port: 9090}
serviceMonitor: {enabled: true, labels: {release: kube-prometheus}, interval: 15s, scrapeTimeout: 10s}
"#,
    ),
];

/// Each router value (and `scaling.enabled`) turned on alone on top of the
/// defaults, and the rules it must add or remove: exactly these, nothing else.
struct RouterCase {
    what: &'static str,
    values: &'static str,
    added: &'static [(&'static str, &'static str, &'static [&'static str])],
    removed: &'static [(&'static str, &'static str, &'static [&'static str])],
}

const ROUTER_CASES: &[RouterCase] = &[
    RouterCase {
        what: "routers.nginx",
        values: "routers: {nginx: true}\n",
        added: &[
            (
                "networking.k8s.io",
                "ingresses",
                &["get", "list", "watch", "create", "patch", "delete"],
            ),
            ("rollwise.io", "rollouts/finalizers", &["update"]),
        ],
        removed: &[],
    },
    RouterCase {
        what: "routers.istio",
        values: "routers: {istio: true}\n",
        added: &[(
            "networking.istio.io",
            "virtualservices",
            &["get", "list", "watch", "patch"],
        )],
        removed: &[],
    },
    RouterCase {
        what: "routers.smi",
        values: "routers: {smi: true}\n",
        added: &[
            (
                "split.smi-spec.io",
                "trafficsplits",
                &["get", "list", "watch", "create", "patch"],
            ),
            ("rollwise.io", "rollouts/finalizers", &["update"]),
        ],
        removed: &[],
    },
    RouterCase {
        what: "routers.traefik",
        values: "routers: {traefik: true}\n",
        added: &[(
            "traefik.io",
            "traefikservices",
            &["get", "list", "watch", "patch"],
        )],
        removed: &[],
    },
    RouterCase {
        what: "routers.replicas",
        values: "routers: {replicas: true}\n",
        added: &[("apps", "deployments", &["patch"])],
        removed: &[],
    },
    RouterCase {
        what: "scaling.enabled",
        values: "scaling: {enabled: true}\n",
        added: &[("apps", "deployments", &["patch"])],
        removed: &[],
    },
    RouterCase {
        what: "checks.jobs",
        values: "checks: {jobs: true}\n",
        added: &[("batch", "jobs", &["get", "list", "create", "delete"])],
        removed: &[],
    },
    RouterCase {
        what: "routers.gatewayAPI off (replicas only)",
        values: "routers: {gatewayAPI: false, replicas: true}\n",
        added: &[("apps", "deployments", &["patch"])],
        removed: &[(
            "gateway.networking.k8s.io",
            "httproutes",
            &["get", "list", "watch", "patch"],
        )],
    },
    RouterCase {
        what: "every router and scaling, one namespace",
        values: "watchNamespaces: [shop]\nrouters: {gatewayAPI: true, nginx: true, istio: true, smi: true, traefik: true, replicas: true}\nscaling: {enabled: true}\n",
        added: &[
            (
                "networking.k8s.io",
                "ingresses",
                &["get", "list", "watch", "create", "patch", "delete"],
            ),
            (
                "networking.istio.io",
                "virtualservices",
                &["get", "list", "watch", "patch"],
            ),
            (
                "split.smi-spec.io",
                "trafficsplits",
                &["get", "list", "watch", "create", "patch"],
            ),
            (
                "traefik.io",
                "traefikservices",
                &["get", "list", "watch", "patch"],
            ),
            ("apps", "deployments", &["patch"]),
            ("rollwise.io", "rollouts/finalizers", &["update"]),
        ],
        removed: &[],
    },
];

/// [`VARIATIONS`] and the [`ROUTER_CASES`]: what helm lint, the
/// least-privilege checks and kubernetes-validate run over.
fn all_variations() -> impl Iterator<Item = (&'static str, &'static str)> {
    VARIATIONS
        .iter()
        .copied()
        .chain(ROUTER_CASES.iter().map(|c| (c.what, c.values)))
}

// ---------------------------------------------------------------- helm lint

#[test]
fn helm_lint_strict_passes_for_every_variation() {
    for (what, values) in all_variations() {
        let file = values_file(values);
        let out = run_tool(
            "helm",
            &[
                "lint",
                "--strict",
                "--namespace",
                RELEASE_NS,
                CHART,
                "-f",
                file.path().to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "helm lint --strict ({what}):\n{}",
            text(&out)
        );
    }
}

// ---------------------------------------------------------------- defaults

#[test]
fn defaults_render_a_working_operator() {
    let r = render("");
    let app_version = chart_app_version();

    // What is rendered, and nothing else.
    let mut kinds: Vec<String> = r
        .docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole/rollwise",
            "ClusterRoleBinding/rollwise",
            "CustomResourceDefinition/rollouts.rollwise.io",
            "Deployment/rollwise",
            "PodDisruptionBudget/rollwise",
            "Role/rollwise-leader-election",
            "RoleBinding/rollwise-leader-election",
            "Service/rollwise-metrics",
            "ServiceAccount/rollwise",
        ]
    );
    for d in &r.docs {
        let kind = d["kind"].as_str().unwrap();
        if ![
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
        ]
        .contains(&kind)
        {
            assert_eq!(d["metadata"]["namespace"], RELEASE_NS, "{kind}");
        }
    }

    // The Deployment: image, replicas, pods selected by stable labels.
    let dep = r.deployment();
    assert_eq!(dep["spec"]["replicas"], 2);
    assert_eq!(dep["spec"]["strategy"]["type"], "RollingUpdate");
    let selector = &dep["spec"]["selector"]["matchLabels"];
    assert_eq!(
        selector,
        &json!({"app.kubernetes.io/name": "rollwise", "app.kubernetes.io/instance": RELEASE})
    );
    let pod = &dep["spec"]["template"];
    for (k, v) in selector.as_object().unwrap() {
        assert_eq!(&pod["metadata"]["labels"][k], v, "pod label {k}");
    }
    assert_eq!(pod["spec"]["serviceAccountName"], "rollwise");
    let c = r.container();
    assert_eq!(
        c["image"],
        format!("ghcr.io/rollwise/rollwise:{app_version}")
    );
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    // The image's entrypoint is `rollwise run`: no command or args override it.
    assert!(c.get("command").is_none() && c.get("args").is_none(), "{c}");

    // Security: non-root 65532, read-only, no privilege, no capability.
    assert_eq!(
        pod["spec"]["securityContext"],
        json!({
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"}
        })
    );
    assert_eq!(
        c["securityContext"],
        json!({
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]}
        })
    );
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}})
    );

    // The HTTP endpoints: the port, the probes.
    assert_eq!(
        c["ports"],
        json!([{"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http-metrics"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "http-metrics"})
    );

    // Configuration through the environment; leader election with 2 replicas.
    let env = r.env();
    assert_eq!(
        env.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "POD_NAME",
            "POD_NAMESPACE",
            "ROLLWISE_CONCURRENCY",
            "ROLLWISE_HTTP_ADDR",
            "ROLLWISE_LEADER_ELECTION",
            "ROLLWISE_LEASE_NAME",
            "ROLLWISE_LOG",
            "ROLLWISE_LOG_FORMAT",
            "ROLLWISE_NOTIFY_FORMAT",
        ]
    );
    assert_eq!(r.env_value("ROLLWISE_HTTP_ADDR").unwrap(), "0.0.0.0:8080");
    assert_eq!(r.env_value("ROLLWISE_LOG").unwrap(), "info");
    assert_eq!(r.env_value("ROLLWISE_LOG_FORMAT").unwrap(), "json");
    assert_eq!(r.env_value("ROLLWISE_CONCURRENCY").unwrap(), "16");
    assert_eq!(r.env_value("ROLLWISE_NOTIFY_FORMAT").unwrap(), "json");
    assert_eq!(r.env_value("ROLLWISE_LEADER_ELECTION").unwrap(), "true");
    assert_eq!(
        r.env_value("ROLLWISE_LEASE_NAME").unwrap(),
        "rollwise-leader"
    );
    assert_eq!(
        env["POD_NAME"]["valueFrom"],
        json!({"fieldRef": {"fieldPath": "metadata.name"}})
    );
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"],
        json!({"fieldRef": {"fieldPath": "metadata.namespace"}})
    );

    // The metrics Service sends its port to the operator's.
    let svc = r.one("Service", "rollwise-metrics");
    assert_eq!(&svc["spec"]["selector"], selector);
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "http-metrics", "port": 8080, "targetPort": "http-metrics", "protocol": "TCP"}])
    );

    // Two replicas: a PodDisruptionBudget keeps one.
    let pdb = r.one("PodDisruptionBudget", "rollwise");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);

    // RBAC: exactly what the operator does, cluster-wide; the Lease in the
    // release namespace.
    assert_eq!(
        permissions(r.one("ClusterRole", "rollwise")),
        operator_permissions()
    );
    let subject = json!([{"kind": "ServiceAccount", "name": "rollwise", "namespace": RELEASE_NS}]);
    let crb = r.one("ClusterRoleBinding", "rollwise");
    assert_eq!(
        crb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "rollwise"})
    );
    assert_eq!(crb["subjects"], subject);
    let lease_role = r.one("Role", "rollwise-leader-election");
    assert_eq!(lease_role["metadata"]["namespace"], RELEASE_NS);
    assert_eq!(
        permissions(lease_role),
        lease_permissions("rollwise-leader")
    );
    let rb = r.one("RoleBinding", "rollwise-leader-election");
    assert_eq!(
        rb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rollwise-leader-election"})
    );
    assert_eq!(rb["subjects"], subject);

    assert!(
        r.all("ServiceMonitor").is_empty(),
        "no ServiceMonitor by default"
    );
}

#[test]
fn no_variation_grants_more_than_least_privilege() {
    for (what, values) in all_variations() {
        let r = render(values);
        assert!(
            !r.all("Role").is_empty() || !r.all("ClusterRole").is_empty(),
            "{what}: no RBAC rendered"
        );
        assert_least_privilege(what, values, &r);
    }
}

#[test]
fn every_env_var_is_one_rollwise_run_reads() {
    let out = Command::new(env!("CARGO_BIN_EXE_rollwise"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let known: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .map(|s| {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    assert!(known.contains("ROLLWISE_NAMESPACE"), "{help}");
    for (what, values) in all_variations() {
        for name in render(values).env().keys() {
            assert!(
                known.contains(name),
                "{what}: the chart sets {name}, which `rollwise run` does not read:\n{help}"
            );
        }
    }
    // The schema's enums are the binary's possible values.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{CHART}/values.schema.json")).unwrap(),
    )
    .unwrap();
    let possible = |flag: &str| -> BTreeSet<String> {
        let line = help
            .split("\n      --")
            .find(|s| s.starts_with(flag))
            .unwrap_or_else(|| panic!("no --{flag} in:\n{help}"));
        let list = line.split("[possible values: ").nth(1).unwrap();
        list[..list.find(']').unwrap()]
            .split(", ")
            .map(String::from)
            .collect()
    };
    let enumerated = |v: &Value| -> BTreeSet<String> {
        v["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        enumerated(&schema["properties"]["logFormat"]),
        possible("log-format")
    );
    assert_eq!(
        enumerated(&schema["properties"]["notifications"]["properties"]["format"]),
        possible("notify-format")
    );
}

// ---------------------------------------------------------------- variations

#[test]
fn one_replica_runs_without_leader_election_or_pdb() {
    let r = render("replicas: 1\n");
    assert_eq!(r.deployment()["spec"]["replicas"], 1);
    let env = r.env();
    for name in [
        "ROLLWISE_LEADER_ELECTION",
        "ROLLWISE_LEASE_NAME",
        "POD_NAMESPACE",
    ] {
        assert!(!env.contains_key(name), "{name} set with one replica");
    }
    assert!(
        env.contains_key("POD_NAME"),
        "POD_NAME names the Events' reporter"
    );
    assert!(
        r.all("PodDisruptionBudget").is_empty(),
        "no PDB with one replica"
    );
    assert!(
        r.get("Role", "rollwise-leader-election").is_none(),
        "no Lease access needed"
    );
    assert!(r.get("RoleBinding", "rollwise-leader-election").is_none());
    // Never two operators at once, even during an upgrade.
    assert_eq!(
        r.deployment()["spec"]["strategy"],
        json!({"type": "Recreate"})
    );
    // pdb.enabled=false drops it with several replicas too.
    let r = render("replicas: 3\npdb:\n  enabled: false\n");
    assert!(r.all("PodDisruptionBudget").is_empty());
    assert_eq!(r.env_value("ROLLWISE_LEADER_ELECTION").unwrap(), "true");
}

#[test]
fn one_watched_namespace_gets_a_role_and_no_cluster_role() {
    let r = render("watchNamespaces: [shop]\n");
    assert!(r.all("ClusterRole").is_empty(), "no ClusterRole");
    assert!(
        r.all("ClusterRoleBinding").is_empty(),
        "no ClusterRoleBinding"
    );
    let role = r.one("Role", "rollwise");
    assert_eq!(role["metadata"]["namespace"], "shop");
    assert_eq!(permissions(role), operator_permissions());
    let rb = r.one("RoleBinding", "rollwise");
    assert_eq!(rb["metadata"]["namespace"], "shop");
    assert_eq!(
        rb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rollwise"})
    );
    assert_eq!(
        rb["subjects"],
        json!([{"kind": "ServiceAccount", "name": "rollwise", "namespace": RELEASE_NS}])
    );
    assert_eq!(r.env_value("ROLLWISE_NAMESPACE").unwrap(), "shop");
    // The Lease stays in the release namespace.
    assert_eq!(
        r.one("Role", "rollwise-leader-election")["metadata"]["namespace"],
        RELEASE_NS
    );
    // All namespaces: no ROLLWISE_NAMESPACE.
    assert!(render("").env_value("ROLLWISE_NAMESPACE").is_none());
}

#[test]
fn each_router_value_adds_exactly_its_rules() {
    // The defaults: Gateway API only, Deployments read-only, no delete.
    let defaults = permissions(render("").one("ClusterRole", "rollwise"));
    assert_eq!(defaults, operator_permissions());
    for case in ROUTER_CASES {
        let r = render(case.values);
        let role = if case.values.contains("watchNamespaces") {
            r.one("Role", "rollwise")
        } else {
            r.one("ClusterRole", "rollwise")
        };
        let got = permissions(role);
        let added = perms(case.added);
        let removed = perms(case.removed);
        let mut expected = operator_permissions();
        expected.retain(|p| !removed.contains(p));
        expected.extend(added.iter().cloned());
        assert_eq!(
            got.difference(&operator_permissions()).collect::<Vec<_>>(),
            added.iter().collect::<Vec<_>>(),
            "{}: the rules it adds",
            case.what
        );
        assert_eq!(got, expected, "{}: exactly these rules", case.what);
    }
    // Turning a router off removes its rules: Gateway API alone is the
    // default, so `routers.gatewayAPI: false` with nginx on grants no
    // HTTPRoute access at all.
    let r = render("routers: {gatewayAPI: false, nginx: true}\n");
    let got = permissions(r.one("ClusterRole", "rollwise"));
    assert!(
        got.iter()
            .all(|(_, resource, _, _)| resource != "httproutes"),
        "{got:?}"
    );
}

#[test]
fn no_router_at_all_is_refused_clearly() {
    let err = try_render("routers: {gatewayAPI: false}\n", None)
        .err()
        .expect("no router must fail");
    assert!(
        err.contains("routers") && err.contains("no router is turned on"),
        "{err}"
    );
}

#[test]
fn more_than_one_watched_namespace_is_refused_clearly() {
    let err = try_render("watchNamespaces: [shop, billing]\n", None)
        .err()
        .expect("two namespaces must fail");
    assert!(
        err.contains("watchNamespaces") && err.contains("one namespace or all"),
        "{err}"
    );
}

#[test]
fn service_monitor_scrapes_the_metrics_service() {
    let r = render("serviceMonitor:\n  enabled: true\n  labels: {release: kube-prometheus}\n");
    let sm = r.one("ServiceMonitor", "rollwise");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["namespace"], RELEASE_NS);
    assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus");
    let svc = r.one("Service", "rollwise-metrics");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v, "Service label {k}");
    }
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"],
        json!([RELEASE_NS])
    );
    assert_eq!(
        sm["spec"]["endpoints"],
        json!([{"port": "http-metrics", "path": "/metrics", "scheme": "http", "interval": "30s"}])
    );
}

#[test]
fn grafana_dashboard_is_a_configmap_the_sidecar_loads() {
    assert!(render("").get("ConfigMap", "rollwise-dashboard").is_none());
    let r = render(
        "grafanaDashboard:\n  enabled: true\n  namespace: monitoring\n  annotations: {grafana_folder: Delivery}\n",
    );
    let cm = r.one("ConfigMap", "rollwise-dashboard");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Delivery");
    let shipped: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{CHART}/dashboards/rollwise.json")).unwrap(),
    )
    .unwrap();
    let inside: Value =
        serde_json::from_str(cm["data"]["rollwise.json"].as_str().expect("the JSON")).unwrap();
    assert_eq!(
        inside, shipped,
        "the ConfigMap holds the dashboard as it is"
    );
    assert_eq!(shipped["uid"], "rollwise-overview");
    // Every panel queries the data source variable, and ids are unique.
    let mut ids = BTreeSet::new();
    for p in shipped["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_i64().unwrap()), "duplicate id: {p}");
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(
                !p["targets"].as_array().unwrap().is_empty(),
                "{}",
                p["title"]
            );
        }
    }
    let other =
        render("grafanaDashboard:\n  enabled: true\n  label: dashboards\n  labelValue: rollwise\n");
    let cm = other.one("ConfigMap", "rollwise-dashboard");
    assert_eq!(cm["metadata"]["labels"]["dashboards"], "rollwise");
    assert_eq!(cm["metadata"]["namespace"], RELEASE_NS);
}

#[test]
fn webhook_url_comes_from_the_secret_and_prometheus_address_is_passed() {
    let r = render(
        r#"
notifications:
  webhook: {existingSecret: rollwise-webhook, key: slack-url}
  format: slack
prometheus: {address: "http://prometheus-operated.monitoring:9090"}
"#,
    );
    let env = r.env();
    assert_eq!(
        env["ROLLWISE_NOTIFY_URL"],
        json!({
            "name": "ROLLWISE_NOTIFY_URL",
            "valueFrom": {"secretKeyRef": {"name": "rollwise-webhook", "key": "slack-url"}}
        }),
        "the URL is never in the pod spec"
    );
    assert_eq!(r.env_value("ROLLWISE_NOTIFY_FORMAT").unwrap(), "slack");
    assert_eq!(
        r.env_value("ROLLWISE_PROMETHEUS_ADDRESS").unwrap(),
        "http://prometheus-operated.monitoring:9090"
    );
    assert!(!r.yaml.contains("hooks.slack.com"));
    // Without a Secret: no URL, no Prometheus address.
    let r = render("");
    assert!(r.env_value("ROLLWISE_NOTIFY_URL").is_none());
    assert!(r.env_value("ROLLWISE_PROMETHEUS_ADDRESS").is_none());
}

#[test]
fn pod_settings_are_passed_through() {
    let r = render(
        VARIATIONS
            .iter()
            .find(|(w, _)| *w == "everything set")
            .unwrap()
            .1,
    );
    let dep = r.deployment();
    let pod = &dep["spec"]["template"];
    let c = r.container();
    assert_eq!(dep["spec"]["replicas"], 3);
    assert_eq!(c["image"], "registry.example.com/rollwise:0.2.0");
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(
        pod["spec"]["imagePullSecrets"],
        json!([{"name": "regcred"}])
    );
    assert_eq!(
        pod["spec"]["nodeSelector"],
        json!({"kubernetes.io/os": "linux"})
    );
    assert_eq!(pod["spec"]["tolerations"][0]["key"], "dedicated");
    assert_eq!(
        pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0]["weight"],
        100
    );
    assert_eq!(pod["spec"]["priorityClassName"], "system-cluster-critical");
    assert_eq!(
        pod["metadata"]["annotations"],
        json!({"example.com/scrape": "false"})
    );
    assert_eq!(pod["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        pod["metadata"]["labels"]["app.kubernetes.io/name"],
        "rollwise"
    );
    assert_eq!(
        r.one("ServiceAccount", "rollwise")["metadata"]["annotations"],
        json!({"example.com/role": "rollwise"})
    );
    assert_eq!(
        r.env_value("ROLLWISE_LOG").unwrap(),
        "rollwise=debug,kube=warn"
    );
    assert_eq!(r.env_value("ROLLWISE_LOG_FORMAT").unwrap(), "text");
    assert_eq!(r.env_value("ROLLWISE_CONCURRENCY").unwrap(), "4");
    assert_eq!(
        r.one("Service", "rollwise-metrics")["spec"]["ports"][0]["port"],
        9090
    );
    // rbac.readSecrets=false: no Secret access at all.
    let role = r.one("Role", "rollwise");
    let mut expected = operator_permissions();
    expected.retain(|(_, resource, _, _)| resource != "secrets");
    assert_eq!(permissions(role), expected);
    // podLabels cannot take over the selector labels.
    let r = render("podLabels: {app.kubernetes.io/name: other}\n");
    assert_eq!(
        r.deployment()["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
        "rollwise"
    );
}

// ---------------------------------------------------------------- NOTES

/// What `helm install` prints after installing (`--dry-run=client`: no
/// cluster needed).
fn notes(values: &str) -> String {
    let file = values_file(values);
    let out = run_tool(
        "helm",
        &[
            "install",
            RELEASE,
            CHART,
            "--dry-run=client",
            "--namespace",
            RELEASE_NS,
            "-f",
            file.path().to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "helm install --dry-run:\n{}",
        text(&out)
    );
    let all = String::from_utf8(out.stdout).unwrap();
    all.split("\nNOTES:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no NOTES in:\n{all}"))
        .to_string()
}

#[test]
fn notes_point_at_an_example_for_a_router_that_is_on() {
    let cases = [
        ("", "gateway-api"),
        ("routers: {gatewayAPI: false, nginx: true}\n", "nginx"),
        ("routers: {gatewayAPI: false, istio: true}\n", "istio"),
        ("routers: {gatewayAPI: false, smi: true}\n", "smi"),
        ("routers: {gatewayAPI: false, traefik: true}\n", "traefik"),
        ("routers: {gatewayAPI: false, replicas: true}\n", "replicas"),
    ];
    for (values, example) in cases {
        let notes = notes(values);
        let path = format!("examples/{example}/checkout.yaml");
        assert!(notes.contains(&path), "{values:?}: {path} in:\n{notes}");
        assert!(
            std::path::Path::new(ROOT).join(&path).is_file(),
            "{path} exists"
        );
        assert!(notes.contains("kubectl create namespace shop"), "{notes}");
    }
    // Watching the release namespace: no namespace to create.
    let notes = notes(&format!("watchNamespaces: [{RELEASE_NS}]\n"));
    assert!(!notes.contains("create namespace"), "{notes}");
    assert!(
        notes.contains(&format!(
            "kubectl apply -n {RELEASE_NS} -f examples/gateway-api/checkout.yaml"
        )),
        "{notes}"
    );
}

// ---------------------------------------------------------------- CRD

#[test]
fn the_chart_installs_the_committed_crd() {
    let committed = std::fs::read_to_string(format!("{ROOT}/crds/rollout.yaml")).unwrap();
    let in_chart = std::fs::read_to_string(format!("{CHART}/crds/rollout.yaml")).unwrap();
    assert_eq!(
        in_chart, committed,
        "charts/rollwise/crds/rollout.yaml must equal crds/rollout.yaml"
    );
    let committed: Value = serde_saphyr::from_str(&committed).unwrap();
    let r = render("");
    let crds = r.all("CustomResourceDefinition");
    assert_eq!(crds.len(), 1);
    assert_eq!(crds[0], &committed, "helm installs crds/rollout.yaml as is");
}

// ---------------------------------------------------------------- schema

#[test]
fn values_schema_rejects_bad_values() {
    let cases = [
        ("logFormat: xml\n", "logFormat"),
        ("notifications:\n  format: teams\n", "format"),
        ("replicas: 0\n", "replicas"),
        ("image:\n  pullPolicy: Sometimes\n", "pullPolicy"),
        ("concurrency: \"16\"\n", "concurrency"),
        ("watchNamespaces: shop\n", "watchNamespaces"),
        ("replica: 3\n", "replica"),
        ("serviceMonitor:\n  enabled: \"yes\"\n", "enabled"),
        ("routers:\n  nginx: \"true\"\n", "nginx"),
        ("routers:\n  linkerd: true\n", "linkerd"),
        ("scaling:\n  enabled: 1\n", "enabled"),
    ];
    for (values, field) in cases {
        let err = try_render(values, None)
            .err()
            .unwrap_or_else(|| panic!("helm template accepted the bad values {values:?}"));
        assert!(
            err.contains("schema") && err.contains(field),
            "the error for {values:?} should name the schema and `{field}`:\n{err}"
        );
    }
    let err = try_render("logFormat: xml\n", None).err().unwrap();
    assert!(
        err.contains("json") && err.contains("text"),
        "names the allowed formats:\n{err}"
    );
}

// ---------------------------------------------------------------- kubernetes-validate

fn assert_validates(what: &str, r: &Rendered, version: &str) {
    let (ok, output) = kubernetes_validate(&r.yaml, version);
    assert!(
        ok,
        "{what}: kubernetes-validate --strict -k {version} failed:\n{output}"
    );
    let mut passed = 0;
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with("INFO") && line.contains(" passed for resource ") {
            passed += 1;
        } else {
            // The only things it may not check: the ServiceMonitor and the
            // PrometheusRule, not core kinds (kubernetes-validate has no
            // option to skip a kind; it warns and goes on).
            assert!(
                line.starts_with("WARN")
                    && (line.contains("Couldn't find schema for kind ServiceMonitor")
                        || line.contains("Couldn't find schema for kind PrometheusRule")),
                "{what} (Kubernetes {version}): unexpected output `{line}`:\n{output}"
            );
        }
    }
    let checkable = r
        .docs
        .iter()
        .filter(|d| d["kind"] != "ServiceMonitor" && d["kind"] != "PrometheusRule")
        .count();
    assert_eq!(
        passed, checkable,
        "{what} (Kubernetes {version}): every manifest but the ServiceMonitor is validated:\n{output}"
    );
}

#[test]
fn rendered_manifests_validate_against_kubernetes_1_28_and_the_newest() {
    let newest = newest_kubernetes();
    for version in [OLDEST_KUBERNETES, newest] {
        for (what, values) in all_variations() {
            let r = try_render(values, Some(version))
                .unwrap_or_else(|e| panic!("{what}: helm template --kube-version {version}:\n{e}"));
            assert_validates(what, &r, version);
        }
    }
}

#[test]
fn kubernetes_validate_catches_a_wrong_field() {
    // The validator is strict for our manifests: the rendered Deployment
    // with one unknown field fails.
    let r = render("");
    let mut dep = r.deployment().clone();
    dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = json!({});
    let (ok, output) =
        kubernetes_validate(&serde_json::to_string(&dep).unwrap(), OLDEST_KUBERNETES);
    assert!(!ok, "an unknown field must fail:\n{output}");
    assert!(output.contains("readinesProbe"), "{output}");
}

#[test]
fn the_chart_refuses_kubernetes_older_than_1_28() {
    let err = try_render("", Some("1.27.0"))
        .err()
        .expect("kubeVersion >=1.28 in Chart.yaml");
    assert!(err.contains("kube") && err.contains("1.27"), "{err}");
}
