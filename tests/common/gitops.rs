//! The GitOps checks shared by `tests/gitops.rs` (on the real API server)
//! and `tests/argocd.rs` (on the committed fixtures): the Argo CD health
//! check run in Lua 5.1, Argo CD's `ignoreDifferences` applied with `jq`,
//! the captured fixtures, and the Grafana dashboard's expressions.

#![allow(dead_code)] // each test crate uses part of this module

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
pub const HEALTH_LUA: &str = "charts/rollwise/argocd/health.lua";
pub const FIXTURES: &str = "tests/fixtures/gitops";

// ---------------------------------------------------------------------------
// Argo CD: the health check and ignoreDifferences
// ---------------------------------------------------------------------------

/// Run the Argo CD health check on `obj` as Argo CD does: the object in the
/// global `obj` (JSON null as nil), the script returns `{status, message}`.
pub fn argocd_health(obj: &Value) -> (String, String) {
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
pub fn documented_jq_paths(kind: &str) -> Vec<String> {
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
pub fn normalized_spec(route: &Value, paths: &[String]) -> Value {
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
pub const EXPECTED_HEALTH: &[(&str, &str, &str)] = &[
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

pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(ROOT).join(FIXTURES).join(format!("{name}.json"))
}

pub fn read_fixture(name: &str) -> Value {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (ROLLWISE_UPDATE_FIXTURES=1 cargo test --test gitops writes it, on a cluster)",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("a fixture is JSON")
}

pub fn check_health(name: &str, obj: &Value) {
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

/// What must stay the same between runs: the phase, the conditions' type,
/// status and reason, and whether the status observed the generation.
pub fn shape(obj: &Value) -> Value {
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

// ---------------------------------------------------------------------------
// The Grafana dashboard
// ---------------------------------------------------------------------------

pub fn dashboard() -> Value {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("charts/rollwise/dashboards/rollwise.json"))
            .expect("the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard (panel targets and the
/// selectors of the variables' `label_values`), with the variables as the
/// test's Prometheus needs them (`$job` is its job `test`).
pub fn dashboard_exprs() -> Vec<String> {
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
pub fn dashboard_metrics() -> std::collections::BTreeSet<String> {
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
pub fn exported(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

pub fn eventually_blocking(mut f: impl FnMut() -> bool) -> bool {
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
pub fn prometheus_query(address: &str, expr: &str) -> Result<String, String> {
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
    match super::cluster::http_get(addr, &format!("/api/v1/query?query={encoded}")) {
        Ok((200, body)) => Ok(body),
        Ok((code, body)) => Err(format!("{code}: {body}")),
        Err(e) => Err(e),
    }
}
