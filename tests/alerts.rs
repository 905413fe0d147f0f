//! The chart's PrometheusRule, checked with Prometheus' own tool: rendered
//! by `helm template --set prometheusRule.enabled=true`, its groups written
//! as a rules file, then `promtool check rules` and `promtool test rules`
//! with `tests/fixtures/alerts/rollwise.test.yaml` (series where each alert
//! fires and where it does not). Off by default: no PrometheusRule then.
//!
//! `helm` and `promtool` come from `bash scripts/install-test-deps.sh`; a
//! missing tool fails the test with that hint.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(program: &str, args: &[&str], dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run `{program}` ({e}); run `bash scripts/install-test-deps.sh`")
    })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The chart rendered with these `--set` values; every document.
fn render(sets: &[&str]) -> Vec<Value> {
    let chart = format!("{ROOT}/charts/rollwise");
    let mut args = vec![
        "template",
        "rollwise",
        chart.as_str(),
        "-n",
        "rollwise-system",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = run("helm", &args, None);
    assert!(out.status.success(), "helm template: {}", text(&out));
    serde_saphyr::from_multiple::<Value>(&String::from_utf8_lossy(&out.stdout))
        .expect("helm renders YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn prometheus_rule(docs: &[Value]) -> Option<&Value> {
    docs.iter().find(|d| d["kind"] == "PrometheusRule")
}

/// Write the PrometheusRule's groups as a rules file next to the unit
/// tests, in a temporary directory.
fn rules_dir(rule: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = serde_json::json!({"groups": rule["spec"]["groups"]});
    // JSON is YAML: promtool reads it as it is.
    std::fs::write(dir.path().join("rules.yaml"), rules.to_string()).expect("rules.yaml");
    std::fs::copy(
        Path::new(ROOT).join("tests/fixtures/alerts/rollwise.test.yaml"),
        dir.path().join("rollwise.test.yaml"),
    )
    .expect("copy the unit tests");
    dir
}

#[test]
fn alerts_are_off_by_default() {
    assert!(prometheus_rule(&render(&[])).is_none());
}

#[test]
fn promtool_checks_and_unit_tests_every_alert() {
    let docs = render(&["prometheusRule.enabled=true"]);
    let rule = prometheus_rule(&docs).expect("a PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let alerts: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    let dir = rules_dir(rule);
    let out = run(
        "promtool",
        &["check", "rules", "rules.yaml"],
        Some(dir.path()),
    );
    assert!(
        out.status.success(),
        "promtool check rules:\n{}",
        text(&out)
    );
    assert!(
        text(&out).contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{}",
        text(&out)
    );
    let out = run(
        "promtool",
        &["test", "rules", "rollwise.test.yaml"],
        Some(dir.path()),
    );
    assert!(out.status.success(), "promtool test rules:\n{}", text(&out));
    // Every alert is tested, firing at least once.
    let tests =
        std::fs::read_to_string(dir.path().join("rollwise.test.yaml")).expect("the unit tests");
    for alert in &alerts {
        let firing = tests
            .split("alertname: ")
            .skip(1)
            .any(|case| case.starts_with(alert) && case.contains("exp_labels"));
        assert!(firing, "{alert}: no unit test where it fires");
    }
    assert_eq!(alerts.len(), 7, "{alerts:?}");
}

#[test]
fn promtool_test_rules_fails_when_an_alert_is_wrong() {
    // The same unit tests against rules with one threshold changed: promtool
    // must notice (the tests can fail).
    let docs = render(&[
        "prometheusRule.enabled=true",
        "prometheusRule.analysisErrorsInARow=4",
    ]);
    let dir = rules_dir(prometheus_rule(&docs).expect("a PrometheusRule"));
    let out = run(
        "promtool",
        &["test", "rules", "rollwise.test.yaml"],
        Some(dir.path()),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("RollwiseAnalysisErrors"),
        "{}",
        text(&out)
    );
}

#[test]
fn selector_and_labels_are_values() {
    let docs = render(&[
        "prometheusRule.enabled=true",
        "prometheusRule.selector=namespace=\"ops\"\\,service=\"rw\"",
        "prometheusRule.labels.release=kube-prometheus-stack",
    ]);
    let rule = prometheus_rule(&docs).expect("a PrometheusRule");
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let exprs: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["expr"].as_str())
        .collect();
    for e in &exprs {
        assert!(
            e.contains(r#"namespace="ops",service="rw""#) && !e.contains("job="),
            "{e}"
        );
    }
    let dir = rules_dir(rule);
    let out = run(
        "promtool",
        &["check", "rules", "rules.yaml"],
        Some(dir.path()),
    );
    assert!(
        out.status.success(),
        "promtool check rules:\n{}",
        text(&out)
    );
}
