//! The examples under `examples/`, checked the way a user would meet them:
//!
//! - every `examples/**/*.yaml` parses (multi-document, with serde-saphyr);
//! - every Rollout in them passes admission (the CRD's schema and CEL rules,
//!   evaluated with kube's CEL validator on the schema generated from the Rust
//!   types, as `tests/crd.rs` does) and `rollwise::plan::validate`;
//! - every example directory but `simulate` is a complete manifest set for
//!   `kubectl apply -n NS -f`: the Deployments, Services and router object
//!   each Rollout names are in the same file, selectors select the right
//!   pods, every Service a route sends to exists;
//! - every router (and blue/green, header and cookie A/B routes) has an
//!   example;
//! - the core kinds (Deployment, Service, Ingress) validate with
//!   `kubernetes-validate --strict` against Kubernetes 1.28 (the oldest
//!   rollwise supports) and the newest version the validator knows.
//!
//! `examples/simulate/` holds inputs of `rollwise simulate` (scenarios and a
//! Rollout), not manifests: only the parsing and the Rollout checks apply.
//!
//! `kubernetes-validate` is installed by `bash scripts/install-test-deps.sh`;
//! a missing tool fails the test (with that hint), it never skips it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use kube::{CustomResourceExt, Resource};
use rollwise::api::Rollout;
use serde_json::Value;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
const OLDEST_KUBERNETES: &str = "1.28.0";
/// The directory of `rollwise simulate` inputs (not manifests).
const SIMULATOR_INPUTS: &str = "simulate";
/// The kinds `kubernetes-validate` knows (built into Kubernetes).
const CORE_KINDS: [&str; 3] = ["Deployment", "Service", "Ingress"];

// ---------------------------------------------------------------- loading

/// One `examples/**/*.yaml` file and its documents.
struct Example {
    /// Path relative to `examples/`, e.g. `nginx/checkout.yaml`.
    path: String,
    /// The directory under `examples/`, e.g. `nginx`.
    dir: String,
    text: String,
    docs: Vec<Value>,
}

impl Example {
    fn is_manifest(&self) -> bool {
        self.dir != SIMULATOR_INPUTS
    }

    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
    }

    fn all(&self, kind: &str) -> impl Iterator<Item = &Value> {
        self.docs.iter().filter(move |d| d["kind"] == kind)
    }

    fn rollouts(&self) -> impl Iterator<Item = &Value> {
        self.all("Rollout")
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Every example file, parsed; a file that does not parse fails here,
/// naming it.
fn examples() -> &'static [Example] {
    static ALL: OnceLock<Vec<Example>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut files = Vec::new();
        yaml_files(Path::new(EXAMPLES), &mut files);
        files.sort();
        files
            .into_iter()
            .map(|file| {
                let path = file
                    .strip_prefix(EXAMPLES)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .trim_start_matches('/')
                    .to_string();
                let dir = path.split('/').next().unwrap().to_string();
                let text = std::fs::read_to_string(&file).unwrap();
                let docs: Vec<Value> = serde_saphyr::from_multiple::<Value>(&text)
                    .unwrap_or_else(|e| panic!("examples/{path} is not valid YAML: {e}"))
                    .into_iter()
                    .filter(|d| !d.is_null())
                    .collect();
                assert!(!docs.is_empty(), "examples/{path} holds no document");
                Example {
                    path,
                    dir,
                    text,
                    docs,
                }
            })
            .collect()
    })
}

fn manifests() -> impl Iterator<Item = &'static Example> {
    examples().iter().filter(|e| e.is_manifest())
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("")
}

fn str_list(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- tools

fn run_tool(program: &str, args: &[&str]) -> Output {
    match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` is not installed; tests/examples.rs needs it. \
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

/// The newest Kubernetes version kubernetes-validate knows: its default
/// (`--help` says "Defaults to 1.x.y").
fn newest_kubernetes() -> String {
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
}

// ---------------------------------------------------------------- admission

fn crd_schema() -> Value {
    let crd = Rollout::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn every_example_file_parses_and_manifests_are_well_formed() {
    let all = examples();
    assert!(
        all.iter().filter(|e| e.is_manifest()).count() >= 10,
        "the router examples are found: {:?}",
        all.iter().map(|e| &e.path).collect::<Vec<_>>()
    );
    // The apiVersion each kind is written with.
    let api_versions: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("Deployment", &["apps/v1"][..]),
        ("Service", &["v1"][..]),
        ("Ingress", &["networking.k8s.io/v1"][..]),
        ("HTTPRoute", &["gateway.networking.k8s.io/v1"][..]),
        (
            "Gateway",
            &["gateway.networking.k8s.io/v1", "networking.istio.io/v1"][..],
        ),
        ("VirtualService", &["networking.istio.io/v1"][..]),
        ("DestinationRule", &["networking.istio.io/v1"][..]),
        ("TrafficSplit", &["split.smi-spec.io/v1alpha2"][..]),
        ("TraefikService", &["traefik.io/v1alpha1"][..]),
        ("IngressRoute", &["traefik.io/v1alpha1"][..]),
        ("Rollout", &["rollwise.io/v1alpha1"][..]),
    ]);
    assert_eq!(Rollout::api_version(&()), "rollwise.io/v1alpha1");
    for e in manifests() {
        let path = &e.path;
        assert!(
            e.text.starts_with('#'),
            "examples/{path}: starts with a comment saying what it shows and what it needs"
        );
        let mut seen = BTreeSet::new();
        for d in &e.docs {
            let kind = d["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("examples/{path}: a document without kind: {d}"));
            let allowed = api_versions
                .get(kind)
                .unwrap_or_else(|| panic!("examples/{path}: unexpected kind {kind}"));
            assert!(
                allowed.contains(&d["apiVersion"].as_str().unwrap_or("")),
                "examples/{path}: {kind} {} has apiVersion {}, expected one of {allowed:?}",
                name(d),
                d["apiVersion"]
            );
            assert!(
                !name(d).is_empty(),
                "examples/{path}: a {kind} without a name"
            );
            assert!(
                d["metadata"].get("namespace").is_none(),
                "examples/{path}: {kind} {}: no namespace (applied with `kubectl apply -n NS`)",
                name(d)
            );
            assert!(
                seen.insert((kind.to_string(), name(d).to_string())),
                "examples/{path}: {kind} {} twice",
                name(d)
            );
        }
    }
    // A directory can be applied whole (`kubectl apply -f examples/DIR/`):
    // no two files in it define the same object.
    let mut by_dir: BTreeMap<(&str, String, String), &str> = BTreeMap::new();
    for e in manifests() {
        for d in &e.docs {
            let key = (
                e.dir.as_str(),
                d["kind"].as_str().unwrap().to_string(),
                name(d).to_string(),
            );
            if let Some(other) = by_dir.insert(key.clone(), &e.path) {
                panic!(
                    "{} {} is in both examples/{other} and examples/{}",
                    key.1, key.2, e.path
                );
            }
        }
    }
}

#[test]
fn every_rollout_passes_admission_and_validation() {
    let schema = crd_schema();
    let validator = kube::core::cel::Validator::new();
    let mut checked = 0;
    let mut failures = Vec::new();
    for e in examples() {
        for obj in e.rollouts() {
            let what = format!("examples/{}: Rollout {}", e.path, name(obj));
            checked += 1;
            if let Err(errs) = validator.validate(&schema, obj, None) {
                let messages: Vec<String> =
                    errs.into_vec().into_iter().map(|e| e.message).collect();
                failures.push(format!("{what}: rejected at admission: {messages:?}"));
                continue;
            }
            let rollout: Rollout = match serde_json::from_value(obj.clone()) {
                Ok(r) => r,
                Err(err) => {
                    failures.push(format!("{what}: does not deserialize: {err}"));
                    continue;
                }
            };
            if let Err(errs) = rollwise::plan::validate(&rollout.spec) {
                let messages: Vec<String> = errs.iter().map(ToString::to_string).collect();
                failures.push(format!("{what}: invalid: {messages:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 11, "only {checked} Rollouts found");
}

#[test]
fn the_admission_check_catches_a_broken_example() {
    // The CEL rules really run: the nginx example with a second router and a
    // decreasing weight is rejected.
    let e = examples()
        .iter()
        .find(|e| e.path == "nginx/checkout.yaml")
        .unwrap();
    let mut obj = e.rollouts().next().unwrap().clone();
    obj["spec"]["trafficRouting"]["replicas"] = serde_json::json!({});
    obj["spec"]["steps"] = serde_json::json!([{"setWeight": 50}, {"setWeight": 10}]);
    let messages: Vec<String> = kube::core::cel::Validator::new()
        .validate(&crd_schema(), &obj, None)
        .unwrap_err()
        .into_vec()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("exactly one traffic router")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("must not decrease")),
        "{messages:?}"
    );
}

#[test]
fn every_router_and_strategy_has_an_example() {
    let mut routers = BTreeSet::new();
    let mut features = BTreeSet::new();
    for e in manifests() {
        for r in e.rollouts() {
            let spec = &r["spec"];
            let rollout: Rollout = serde_json::from_value(r.clone()).unwrap();
            let router = rollout.spec.traffic_routing.kind().unwrap();
            routers.insert(router);
            if spec.get("blueGreen").is_some() {
                features.insert("blueGreen".to_string());
            }
            if spec["trafficRouting"]["istio"].get("subsets").is_some() {
                features.insert("istio subsets".to_string());
            }
            if spec["stable"].get("scaleDownAfter").is_some() {
                features.insert("scaleDownAfter".to_string());
            }
            if spec["canary"].get("scaleDownOnRollback").is_some() {
                features.insert("scaleDownOnRollback".to_string());
            }
            if spec.get("dependsOn").is_some() {
                features.insert("dependsOn".to_string());
            }
            for step in spec["steps"].as_array().into_iter().flatten() {
                let route = &step["setHeaderRoute"];
                for m in route["match"].as_array().into_iter().flatten() {
                    for what in ["header", "cookie"] {
                        if m.get(what).is_some() {
                            features.insert(format!("{what} on {router}"));
                        }
                    }
                }
                if route.is_object() && route.get("match").is_none() {
                    features.insert("remove a header route".to_string());
                }
            }
        }
    }
    assert_eq!(
        routers,
        BTreeSet::from(["gatewayAPI", "nginx", "istio", "smi", "traefik", "replicas"]),
        "one example per router"
    );
    for wanted in [
        "blueGreen",
        "istio subsets",
        "header on gatewayAPI",
        "cookie on istio",
        "remove a header route",
        "scaleDownAfter",
        "scaleDownOnRollback",
        "dependsOn",
    ] {
        assert!(
            features.contains(wanted),
            "no example shows {wanted}: {features:?}"
        );
    }
    for dir in [
        "gateway-api",
        "nginx",
        "istio",
        "smi",
        "traefik",
        "replicas",
        "blue-green",
        "ab-testing",
        "dependencies",
    ] {
        assert!(
            manifests().any(|e| e.dir == dir && e.rollouts().next().is_some()),
            "examples/{dir}/ holds a Rollout"
        );
    }
}

// ---------------------------------------------------------------- completeness

/// Every `key: value` of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &labels[k] == v))
}

fn pod_labels(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["metadata"]["labels"]
}

/// The Services a route object sends traffic to (by name, same namespace).
fn referenced_services(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let spec = &doc["spec"];
    match doc["kind"].as_str().unwrap_or("") {
        "HTTPRoute" => {
            for rule in spec["rules"].as_array().into_iter().flatten() {
                for b in rule["backendRefs"].as_array().into_iter().flatten() {
                    out.push(b["name"].as_str().unwrap().to_string());
                }
            }
        }
        "Ingress" => {
            for rule in spec["rules"].as_array().into_iter().flatten() {
                for p in rule["http"]["paths"].as_array().into_iter().flatten() {
                    out.push(
                        p["backend"]["service"]["name"]
                            .as_str()
                            .unwrap()
                            .to_string(),
                    );
                }
            }
        }
        "VirtualService" => {
            for route in spec["http"].as_array().into_iter().flatten() {
                for r in route["route"].as_array().into_iter().flatten() {
                    out.push(r["destination"]["host"].as_str().unwrap().to_string());
                }
            }
        }
        "DestinationRule" => out.push(spec["host"].as_str().unwrap().to_string()),
        "TraefikService" => {
            for s in spec["weighted"]["services"]
                .as_array()
                .into_iter()
                .flatten()
            {
                out.push(s["name"].as_str().unwrap().to_string());
            }
        }
        _ => {}
    }
    out
}

/// The problems of one Rollout's references within its file.
fn check_rollout(e: &Example, r: &Value, problems: &mut Vec<String>) {
    let mut fail =
        |m: String| problems.push(format!("examples/{}: Rollout {}: {m}", e.path, name(r)));
    let spec = &r["spec"];
    let mut deployments = BTreeMap::new();
    for side in ["stable", "canary"] {
        let service = spec[side]["service"].as_str().unwrap();
        let Some(svc) = e.find("Service", service) else {
            fail(format!("{side}.service {service} is not in the file"));
            continue;
        };
        if let Some(dep) = spec[side]["deployment"].as_str() {
            let Some(d) = e.find("Deployment", dep) else {
                fail(format!("{side}.deployment {dep} is not in the file"));
                continue;
            };
            if !selects(&svc["spec"]["selector"], pod_labels(d)) {
                fail(format!(
                    "Service {service} does not select the pods of {dep}"
                ));
            }
            deployments.insert(side, d);
        }
    }
    // Each version's Service selects only its own version's pods.
    if let (Some(stable), Some(canary)) = (deployments.get("stable"), deployments.get("canary")) {
        for (side, other) in [("stable", canary), ("canary", stable)] {
            let service = spec[side]["service"].as_str().unwrap();
            if let Some(svc) = e.find("Service", service)
                && selects(&svc["spec"]["selector"], pod_labels(other))
            {
                fail(format!(
                    "the {side} Service {service} also selects {}",
                    name(other)
                ));
            }
        }
    }
    // Each dependency (same namespace) is a Rollout of the file, with the
    // canary the entry names.
    for (i, d) in spec["dependsOn"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if d.get("namespace").is_some() {
            continue;
        }
        let dep = d["name"].as_str().unwrap_or_default();
        match e.find("Rollout", dep) {
            None => fail(format!("dependsOn[{i}]: Rollout {dep} is not in the file")),
            Some(other) => {
                if let Some(c) = d["canaryService"].as_str()
                    && other["spec"]["canary"]["service"] != c
                {
                    fail(format!(
                        "dependsOn[{i}].canaryService {c} is not the canary of Rollout {dep}"
                    ));
                }
            }
        }
    }
    let stable = spec["stable"]["service"].as_str().unwrap();
    let canary = spec["canary"]["service"].as_str().unwrap();
    let routing = &spec["trafficRouting"];
    if let Some(route) = routing["gatewayAPI"]["httpRoute"].as_str() {
        match e.find("HTTPRoute", route) {
            None => fail(format!("HTTPRoute {route} is not in the file")),
            Some(hr) => {
                if !referenced_services(hr).iter().any(|s| s == stable) {
                    fail(format!("HTTPRoute {route} has no backendRef to {stable}"));
                }
            }
        }
    }
    if let Some(ingress) = routing["nginx"]["ingress"].as_str() {
        match e.find("Ingress", ingress) {
            None => fail(format!("Ingress {ingress} is not in the file")),
            Some(ing) => {
                if !referenced_services(ing).iter().any(|s| s == stable) {
                    fail(format!("Ingress {ingress} has no backend {stable}"));
                }
                if ing["spec"]["ingressClassName"] != "nginx" {
                    fail(format!("Ingress {ingress} is not of class nginx"));
                }
            }
        }
    }
    if let Some(istio) = routing.get("istio") {
        let vs_name = istio["virtualService"].as_str().unwrap();
        match e.find("VirtualService", vs_name) {
            None => fail(format!("VirtualService {vs_name} is not in the file")),
            Some(vs) => {
                let routes = vs["spec"]["http"].as_array().cloned().unwrap_or_default();
                for wanted in str_list(&istio["routes"]) {
                    if !routes.iter().any(|r| r["name"] == wanted) {
                        fail(format!(
                            "VirtualService {vs_name} has no HTTP route {wanted}"
                        ));
                    }
                }
                let destinations: Vec<&Value> = routes
                    .iter()
                    .flat_map(|r| r["route"].as_array().into_iter().flatten())
                    .map(|r| &r["destination"])
                    .collect();
                if let Some(subsets) = istio.get("subsets") {
                    let host = subsets["host"].as_str().unwrap_or(stable);
                    for side in ["stable", "canary"] {
                        let subset = subsets[side].as_str().unwrap();
                        if !destinations
                            .iter()
                            .any(|d| d["host"] == host && d["subset"] == subset)
                        {
                            fail(format!(
                                "VirtualService {vs_name} has no destination {host} subset {subset}"
                            ));
                        }
                        let Some(dr) = e.all("DestinationRule").find(|d| d["spec"]["host"] == host)
                        else {
                            fail(format!("no DestinationRule for host {host}"));
                            continue;
                        };
                        let Some(def) = dr["spec"]["subsets"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|s| s["name"] == subset)
                        else {
                            fail(format!(
                                "DestinationRule {} has no subset {subset}",
                                name(dr)
                            ));
                            continue;
                        };
                        // The subset selects this version's pods, and the
                        // host's Service selects them too.
                        if let Some(d) = deployments.get(side) {
                            if !selects(&def["labels"], pod_labels(d)) {
                                fail(format!(
                                    "subset {subset} does not select the pods of {}",
                                    name(d)
                                ));
                            }
                            if let Some(svc) = e.find("Service", host)
                                && !selects(&svc["spec"]["selector"], pod_labels(d))
                            {
                                fail(format!(
                                    "the host Service {host} does not select {}",
                                    name(d)
                                ));
                            }
                        }
                    }
                } else if !destinations.iter().any(|d| d["host"] == stable) {
                    fail(format!(
                        "VirtualService {vs_name} has no destination host {stable}"
                    ));
                }
            }
        }
    }
    if let Some(smi) = routing.get("smi") {
        let root = smi["rootService"].as_str().unwrap_or(stable);
        if e.find("Service", root).is_none() {
            fail(format!("the root Service {root} is not in the file"));
        }
        // rollwise creates the TrafficSplit when missing; one in the file
        // must split the same root Service.
        let split = smi["trafficSplit"].as_str().unwrap();
        if let Some(ts) = e.find("TrafficSplit", split)
            && ts["spec"]["service"] != root
        {
            fail(format!("TrafficSplit {split} does not split {root}"));
        }
    }
    if let Some(ts_name) = routing["traefik"]["weightedService"].as_str() {
        match e.find("TraefikService", ts_name) {
            None => fail(format!("TraefikService {ts_name} is not in the file")),
            Some(ts) => {
                let listed = referenced_services(ts);
                for s in [stable, canary] {
                    if !listed.iter().any(|l| l == s) {
                        fail(format!(
                            "TraefikService {ts_name} does not list {s} in weighted.services"
                        ));
                    }
                }
            }
        }
    }
    if routing.get("replicas").is_some() {
        match (deployments.get("stable"), deployments.get("canary")) {
            (Some(s), Some(c)) => {
                let shared = e.all("Service").any(|svc| {
                    name(svc) != stable
                        && name(svc) != canary
                        && selects(&svc["spec"]["selector"], pod_labels(s))
                        && selects(&svc["spec"]["selector"], pod_labels(c))
                });
                if !shared {
                    fail("no Service selects the pods of both versions".into());
                }
            }
            _ => fail("the replicas router needs both Deployments".into()),
        }
    }
}

#[test]
fn every_example_is_complete_and_consistent() {
    let mut problems = Vec::new();
    for e in manifests() {
        assert!(
            e.rollouts().next().is_some(),
            "examples/{}: no Rollout",
            e.path
        );
        for r in e.rollouts() {
            check_rollout(e, r, &mut problems);
        }
        // Deployments: the selector selects the pod template.
        for d in e.all("Deployment") {
            if !selects(&d["spec"]["selector"]["matchLabels"], pod_labels(d)) {
                problems.push(format!(
                    "examples/{}: Deployment {}: selector does not match its pod labels",
                    e.path,
                    name(d)
                ));
            }
        }
        // Services: each selects some pods, and a named targetPort is a
        // port of those pods.
        for svc in e.all("Service") {
            let selected: Vec<&Value> = e
                .all("Deployment")
                .filter(|d| selects(&svc["spec"]["selector"], pod_labels(d)))
                .collect();
            if selected.is_empty() {
                problems.push(format!(
                    "examples/{}: Service {} selects no Deployment's pods",
                    e.path,
                    name(svc)
                ));
            }
            for port in svc["spec"]["ports"].as_array().into_iter().flatten() {
                if let Some(target) = port["targetPort"].as_str() {
                    for d in &selected {
                        let named = d["spec"]["template"]["spec"]["containers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                            .any(|p| p["name"] == target);
                        if !named {
                            problems.push(format!(
                                "examples/{}: Service {}: {} has no port {target}",
                                e.path,
                                name(svc),
                                name(d)
                            ));
                        }
                    }
                }
            }
        }
        // Every Service a route object sends to is in the file (a host with
        // a dot is a name outside the namespace).
        for d in &e.docs {
            for s in referenced_services(d) {
                if !s.contains('.') && e.find("Service", &s).is_none() {
                    problems.push(format!(
                        "examples/{}: {} {} sends to Service {s}, which is not in the file",
                        e.path,
                        d["kind"].as_str().unwrap(),
                        name(d)
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------- kubernetes-validate

#[test]
fn core_kinds_validate_against_kubernetes_1_28_and_the_newest() {
    // One file per example holding its core-kind documents, named after it,
    // so a failure names the example.
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut expected = 0;
    for e in manifests() {
        let core: Vec<&Value> = e
            .docs
            .iter()
            .filter(|d| CORE_KINDS.contains(&d["kind"].as_str().unwrap_or("")))
            .collect();
        if core.is_empty() {
            continue;
        }
        expected += core.len();
        let file = dir.path().join(e.path.replace('/', "--"));
        let mut f = std::fs::File::create(&file).unwrap();
        for d in core {
            writeln!(f, "---\n{}", serde_json::to_string(d).unwrap()).unwrap();
        }
        files.push(file.to_str().unwrap().to_string());
    }
    assert!(expected >= 30, "only {expected} core objects found");
    for version in [OLDEST_KUBERNETES.to_string(), newest_kubernetes()] {
        let mut args = vec!["--strict", "-k", version.as_str()];
        args.extend(files.iter().map(String::as_str));
        let out = run_tool("kubernetes-validate", &args);
        let output = text(&out);
        assert!(
            out.status.success(),
            "kubernetes-validate --strict -k {version} failed (files are named examples' paths with `/` as `--`):\n{output}"
        );
        let mut passed = 0;
        for line in output.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                line.starts_with("INFO") && line.contains(" passed for resource "),
                "Kubernetes {version}: unexpected output `{line}`:\n{output}"
            );
            passed += 1;
        }
        assert_eq!(
            passed, expected,
            "Kubernetes {version}: every Deployment, Service and Ingress is validated:\n{output}"
        );
    }
}

#[test]
fn kubernetes_validate_catches_a_wrong_field_in_an_example() {
    // Strict for our documents: an example's Ingress with one misspelt
    // field fails.
    let e = examples()
        .iter()
        .find(|e| e.path == "nginx/checkout.yaml")
        .unwrap();
    let mut ingress = e.all("Ingress").next().unwrap().clone();
    ingress["spec"]["ingressClass"] = Value::String("nginx".into());
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    f.write_all(serde_json::to_string(&ingress).unwrap().as_bytes())
        .unwrap();
    f.flush().unwrap();
    let out = run_tool(
        "kubernetes-validate",
        &[
            "--strict",
            "-k",
            OLDEST_KUBERNETES,
            f.path().to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ingressClass"), "{}", text(&out));
}
