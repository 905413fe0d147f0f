//! `rollwise simulate`: the real binary on the example files, and the
//! documented timings of the Flagger and Argo Rollouts policies.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example(name: &str) -> String {
    root()
        .join("examples/simulate")
        .join(name)
        .display()
        .to_string()
}

fn rollwise(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rollwise"))
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("the rollwise binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = rollwise(args);
    assert!(
        out.status.success(),
        "rollwise {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn simulate(scenario: &str, extra: &[&str]) -> String {
    let rollout = example("rollout.yaml");
    let mut args = vec!["simulate", "--rollout", &rollout, "--scenario", scenario];
    args.extend_from_slice(extra);
    ok(&args)
}

fn json(scenario: &str, extra: &[&str]) -> Value {
    let mut args = extra.to_vec();
    args.push("--json");
    let out = simulate(scenario, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

fn summary(v: &Value) -> &Value {
    &v["results"][0]["summary"]
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count"))
}

#[test]
fn a_ten_times_worse_canary_is_rolled_back_within_seconds_with_its_numbers() {
    let v = json(&example("bad-canary.yaml"), &["--seed", "1"]);
    assert_eq!(v["scenario"], "canary with 10x errors");
    assert_eq!(v["results"][0]["policy"], "rollwise");
    let s = summary(&v);
    assert_eq!(s["outcome"], "rolledBack", "{s}");
    assert_eq!(s["reason"], "CanaryWorse");
    let t = u(&s["decidedAfterSeconds"]);
    // Seed 1: 7 failed of 76 canary requests after 17s (looks every 5s).
    assert!((5..=60).contains(&t), "decided after {t}s");
    let failed = u(&s["canaryFailures"]);
    assert!(
        (3..=15).contains(&failed),
        "{failed} failed canary requests"
    );
    assert_eq!(u(&s["canaryRequestsToEvidence"]), u(&s["canaryRequests"]));
    assert!(u(&s["canaryRequests"]) > 20 * failed / 10);
    assert_eq!(u(&s["maxWeightBeforeDecision"]), 5);
    let extra = s["extraFailures"].as_f64().unwrap();
    assert!(extra > 0.0 && extra < failed as f64, "{extra}");
    let timeline = v["results"][0]["timeline"].as_array().unwrap();
    assert_eq!(timeline[0]["kind"], "Restart");
    let last = timeline.last().unwrap();
    assert_eq!(last["mark"], "rollback");
    assert_eq!(last["weight"], 0);
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("worse than tolerated"),
        "{last}"
    );
}

#[test]
fn a_healthy_canary_is_promoted_through_every_step() {
    let v = json(&example("healthy.yaml"), &["--seed", "2"]);
    let s = summary(&v);
    assert_eq!(s["outcome"], "promoted", "{s}");
    let t = u(&s["decidedAfterSeconds"]);
    // Seed 2: evidence after 3879 canary requests (12m47s), promoted at
    // 13m2s after one look at each of 33%, 50% and 100%.
    assert!((5 * 60..=3600).contains(&t), "promoted after {t}s");
    assert_eq!(u(&s["maxWeightBeforeDecision"]), 100);
    let to_evidence = u(&s["canaryRequestsToEvidence"]);
    assert!((1_000..=10_000).contains(&to_evidence), "{to_evidence}");
    assert!(u(&s["evidenceAfterSeconds"]) < t);
    let timeline = v["results"][0]["timeline"].as_array().unwrap();
    let weights: Vec<u64> = timeline.iter().map(|e| u(&e["weight"])).collect();
    for w in [5, 33, 50, 100] {
        assert!(weights.contains(&w), "{weights:?}");
    }
    assert!(timeline.iter().all(|e| e["mark"] != "rollback"));
    assert_eq!(timeline.last().unwrap()["kind"], "Complete");
}

#[test]
fn same_seed_same_output_other_seeds_other_numbers() {
    let bad = example("bad-canary.yaml");
    let a = simulate(&bad, &["--seed", "3"]);
    let b = simulate(&bad, &["--seed", "3"]);
    assert_eq!(a, b, "the same seed must give the same run");
    let c = simulate(&bad, &["--seed", "4"]);
    assert_ne!(a, c);
    let counts = |seed: &str| {
        let v = json(&bad, &["--seed", seed]);
        let s = summary(&v).clone();
        (
            u(&s["canaryRequests"]),
            u(&s["stableRequests"]),
            u(&s["canaryFailures"]),
        )
    };
    let (x, y, z) = (counts("3"), counts("4"), counts("5"));
    assert!(x != y && y != z && x != z, "{x:?} {y:?} {z:?}");
    // Text and JSON tell the same story.
    assert!(
        a.contains("outcome             rolled back (CanaryWorse)"),
        "{a}"
    );
    assert!(
        a.contains(&format!("canary requests     {} served", x.0)),
        "{a}"
    );
}

#[test]
fn trials_print_the_distribution() {
    let bad = example("bad-canary.yaml");
    let v = json(&bad, &["--trials", "6", "--seed", "10"]);
    assert_eq!(v["trials"], 6);
    let r = &v["results"][0];
    let d = &r["distribution"];
    assert_eq!(d["trials"], 6);
    assert_eq!(d["rolledBack"], 6, "{d}");
    assert_eq!(d["medianTimeToDecision"]["kind"], "value");
    let median = d["medianTimeToDecision"]["value"].as_f64().unwrap();
    // A rollback needs a few dozen canary requests: at 5 req/s on the
    // canary, more than 10s.
    assert!((10.0..=150.0).contains(&median), "{median}");
    let runs = r["runs"].as_array().unwrap();
    let seeds: Vec<u64> = runs.iter().map(|s| u(&s["seed"])).collect();
    assert_eq!(seeds, vec![10, 11, 12, 13, 14, 15]);
    let text = simulate(&bad, &["--trials", "6", "--seed", "10"]);
    assert!(
        text.contains("promoted 0, rolled back 6, undecided 0 (of 6)"),
        "{text}"
    );
    assert!(text.contains("time to decision         median"), "{text}");
    assert!(text.contains("failed canary requests   median"), "{text}");
}

#[test]
fn the_svg_chart_is_well_formed_and_marks_the_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.svg");
    let path = file.display().to_string();
    simulate(
        &example("bad-canary.yaml"),
        &["--seed", "1", "--svg", &path],
    );
    let svg = std::fs::read_to_string(&file).unwrap();
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{}",
        &svg[..80]
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    for needle in [
        "<path class=\"weight\"",
        "<path class=\"weight-area\"",
        "<polyline class=\"canary-rate\"",
        "<polyline class=\"stable-rate\"",
        "class=\"marker advance\"",
        "class=\"marker hold\"",
        "class=\"marker rollback\"",
        "class=\"label rollback\"",
        "canary weight",
        "error rate",
        "<title>",
    ] {
        assert!(svg.contains(needle), "no {needle} in the chart");
    }
    for tag in ["g", "text", "title", "svg", "defs", "clipPath"] {
        let open =
            svg.matches(&format!("<{tag}>")).count() + svg.matches(&format!("<{tag} ")).count();
        let close = svg.matches(&format!("</{tag}>")).count();
        assert_eq!(open, close, "<{tag}> opened {open} times, closed {close}");
    }
    assert!(
        !svg.contains("NaN") && !svg.contains("inf"),
        "a number went wrong"
    );
    // Text outside tags is escaped.
    assert!(!svg.contains("& "), "unescaped ampersand");

    let healthy = dir.path().join("healthy.svg");
    let path = healthy.display().to_string();
    simulate(&example("healthy.yaml"), &["--seed", "1", "--svg", &path]);
    let svg = std::fs::read_to_string(&healthy).unwrap();
    assert!(svg.contains("class=\"marker promote\""));
    assert!(svg.contains("class=\"label promote\""));
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn decided(v: &Value, i: usize) -> (String, u64) {
    let s = &v["results"][i]["summary"];
    (
        s["outcome"].as_str().unwrap().to_string(),
        u(&s["decidedAfterSeconds"]),
    )
}

#[test]
fn flagger_and_argo_run_their_documented_examples() {
    let dir = tempfile::tempdir().unwrap();
    let failing = write(
        dir.path(),
        "failing.yaml",
        "duration: 2h\ntraffic: deterministic\nrequestRate: 100\nstable: {errorRate: 0.001}\ncanary: {errorRate: 1.0}\n",
    );
    let healthy = write(
        dir.path(),
        "healthy.yaml",
        "duration: 2h\ntraffic: deterministic\nrequestRate: 100\nstable: {errorRate: 0.0}\ncanary: {errorRate: 0.0}\n",
    );
    let v = json(&failing, &["--policy", "all"]);
    let policies: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["policy"].as_str().unwrap())
        .collect();
    assert_eq!(policies, ["rollwise", "flagger", "argo"]);
    // rollwise: at the first or second look.
    let (outcome, t) = decided(&v, 0);
    assert_eq!(outcome, "rolledBack");
    assert!(t <= 62, "{t}");
    // Flagger: interval 1m, threshold 10: ten failed checks (1..10 min),
    // rollback at the next tick.
    assert_eq!(decided(&v, 1), ("rolledBack".into(), 11 * 60));
    assert_eq!(
        v["results"][1]["summary"]["reason"],
        "FailedChecksThreshold"
    );
    assert_eq!(v["results"][1]["summary"]["maxWeightBeforeDecision"], 2);
    // Argo: analysis from step 2 (10 min), 4 failed measurements 5 min
    // apart (failureLimit 3).
    assert_eq!(decided(&v, 2), ("rolledBack".into(), 25 * 60));
    assert_eq!(v["results"][2]["summary"]["reason"], "AnalysisRunFailed");

    let v = json(&healthy, &["--policy", "all"]);
    assert_eq!(decided(&v, 1), ("promoted".into(), 25 * 60));
    assert_eq!(decided(&v, 2), ("promoted".into(), 40 * 60));
    let flagger_configuration = v["results"][1]["configuration"].as_str().unwrap();
    assert!(
        flagger_configuration.contains("interval 1m, threshold 10, stepWeight 2, maxWeight 50"),
        "{flagger_configuration}"
    );
}

#[test]
fn threshold_metrics_get_the_canary_error_rate_over_the_last_minute() {
    let dir = tempfile::tempdir().unwrap();
    let rollout = write(
        dir.path(),
        "rollout.yaml",
        r#"# a whole manifest: the Rollout is found among other documents
apiVersion: v1
kind: Service
metadata: {name: checkout-v1}
---
apiVersion: rollwise.io/v1alpha1
kind: Rollout
metadata: {name: thresholds}
spec:
  stable: {service: checkout-v1}
  canary: {service: checkout-v2}
  trafficRouting: {gatewayAPI: {httpRoute: checkout}}
  steps:
    - setWeight: 10
    - pause: {duration: 2m}
    - setWeight: 100
  analysis:
    interval: 30s
    metrics:
      - name: error-rate
        query: anything
        max: 0.02
        failureLimit: 1
"#,
    );
    let bad = example("bad-canary.yaml");
    let out = ok(&[
        "simulate",
        "--rollout",
        &rollout,
        "--scenario",
        &bad,
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let s = summary(&v);
    assert_eq!(s["outcome"], "rolledBack", "{s}");
    assert_eq!(s["reason"], "AnalysisFailed");
    // Two failed evaluations (failureLimit 1), 30s apart, the first one
    // interval after the step began.
    assert_eq!(u(&s["decidedAfterSeconds"]), 62);
    let healthy = example("healthy.yaml");
    let out = ok(&[
        "simulate",
        "--rollout",
        &rollout,
        "--scenario",
        &healthy,
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary(&v)["outcome"], "promoted");
}

#[test]
fn recorded_and_shaped_traffic_scenarios_run() {
    let v = json(&example("recorded.yaml"), &["--policy", "all"]);
    assert_eq!(v["scenario"], "recorded incident");
    assert!(
        v["traffic"]
            .as_str()
            .unwrap()
            .contains("recorded, 60 intervals")
    );
    // The recorded canary went bad after 10 minutes: rollwise rolls it back.
    assert_eq!(v["results"][0]["summary"]["outcome"], "rolledBack");
    for file in [
        "diurnal.yaml",
        "ramp.yaml",
        "bursty-bad.yaml",
        "low-traffic-bad.yaml",
    ] {
        let v = json(&example(file), &[]);
        assert!(summary(&v)["outcome"].is_string(), "{file}");
    }
}

#[test]
fn expect_sets_the_exit_status_and_bad_input_is_explained() {
    let rollout = example("rollout.yaml");
    let bad = example("bad-canary.yaml");
    let base = ["simulate", "--rollout", &rollout, "--scenario", &bad];
    let mut args = base.to_vec();
    args.extend(["--expect", "rolled-back", "--trials", "3"]);
    assert!(rollwise(&args).status.success());
    let mut args = base.to_vec();
    args.extend(["--expect", "promoted"]);
    let out = rollwise(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected promoted"));

    let dir = tempfile::tempdir().unwrap();
    let broken = write(
        dir.path(),
        "broken.yaml",
        "duration: 1h\nrequestRate: 10\nstable: {errorRate: 0.01}\ncanary: {errorRate: 2}\n",
    );
    let out = rollwise(&["simulate", "--rollout", &rollout, "--scenario", &broken]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.yaml") && err.contains("canary.errorRate"),
        "{err}"
    );

    let invalid = write(
        dir.path(),
        "invalid-rollout.yaml",
        "kind: Rollout\nmetadata: {name: x}\nspec:\n  stable: {service: a}\n  canary: {service: a}\n  trafficRouting: {gatewayAPI: {httpRoute: r}}\n",
    );
    let out = rollwise(&["simulate", "--rollout", &invalid, "--scenario", &bad]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.canary.service"), "{err}");

    let out = rollwise(&["simulate", "--scenario", &bad]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rollout"));
}

/// A misspelled Rollout field is an error naming it (as `kubectl apply`
/// with strict field validation says), not a default silently used:
/// `tolerence` would leave the tolerance at 0, `scaleDownOnRolback` the
/// canary running.
#[test]
fn misspelled_rollout_fields_are_refused_naming_the_field() {
    let healthy = example("healthy.yaml");
    let text = std::fs::read_to_string(example("rollout.yaml")).unwrap();
    assert!(
        text.contains("tolerance: 0.005"),
        "the example has a tolerance"
    );
    let dir = tempfile::tempdir().unwrap();
    for (typo, field) in [
        (
            text.replace("tolerance: 0.005", "tolerence: 0.005"),
            r#""spec.analysis.compare[0].tolerence" (did you mean "tolerance"?)"#,
        ),
        (
            text.replace(
                "canary: {service: checkout-v2}",
                "canary: {service: checkout-v2, scaleDownOnRolback: true}",
            ),
            r#""spec.canary.scaleDownOnRolback" (did you mean "scaleDownOnRollback"?)"#,
        ),
    ] {
        assert_ne!(typo, text, "the typo was made");
        let path = write(dir.path(), "typo.yaml", &typo);
        let out = rollwise(&["simulate", "--rollout", &path, "--scenario", &healthy]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(field) && err.contains("typo.yaml"), "{err}");
    }
}

/// A simulation of many trials shows its progress (trials done, time
/// elapsed) on a terminal — here a pseudo-terminal from `script(1)` — and
/// nothing of it in a pipe.
#[test]
fn many_trials_show_progress_on_a_terminal_only() {
    let rollout = example("rollout.yaml");
    let healthy = example("healthy.yaml");
    let args = [
        "simulate",
        "--rollout",
        &rollout,
        "--scenario",
        &healthy,
        "--trials",
        "20",
    ];
    let out = rollwise(&args);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("trials 20/20"), "progress in a pipe: {err}");
    let mut forced = args.to_vec();
    forced.extend(["--progress", "always"]);
    let err = String::from_utf8_lossy(&rollwise(&forced).stderr).into_owned();
    assert!(err.contains("rollwise: trials 20/20 (100%), "), "{err}");
    assert!(err.contains("s elapsed"), "{err}");
    // On a real terminal, as people run it (where script(1) exists).
    let command = std::iter::once(env!("CARGO_BIN_EXE_rollwise").to_string())
        .chain(args.iter().map(|a| format!("'{a}'")))
        .collect::<Vec<_>>()
        .join(" ");
    if let Ok(out) = Command::new("script")
        .args(["-qc", &format!("{command} >/dev/null"), "/dev/null"])
        .output()
    {
        let tty = String::from_utf8_lossy(&out.stdout);
        assert!(tty.contains("rollwise: trials 20/20 (100%)"), "{tty}");
    }
}

#[test]
fn the_benchmark_command_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.md");
    let path = out.display().to_string();
    let stdout = ok(&["simulate", "benchmark", "--trials", "2", "--out", &path]);
    assert!(stdout.contains("wrote"), "{stdout}");
    let report = std::fs::read_to_string(&out).unwrap();
    for needle in [
        "# Decision quality",
        "--trials 2",
        "| healthy canary | rollwise |",
        "| canary with 10x errors | rollwise |",
        "## Targets",
        "## Wald's bound",
        "KL(p1‖p0)",
        "interval 1m, threshold 10, stepWeight 2, maxWeight 50",
        "![time to promote, per scenario and policy](time-to-promote.svg)",
    ] {
        assert!(report.contains(needle), "no {needle:?} in the report");
    }
    // The time-to-promote chart beside it: a row for each scenario a canary
    // should pass, none for those it should fail; a box per policy.
    assert!(stdout.contains("time-to-promote.svg"), "{stdout}");
    let chart = std::fs::read_to_string(dir.path().join("time-to-promote.svg")).unwrap();
    assert!(chart.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(chart.trim_end().ends_with("</svg>"));
    for name in [
        "healthy canary",
        "within tolerance, 20 req/s",
        "daily cycle, within tolerance",
    ] {
        assert!(
            chart.contains(&format!(">{name}</text>")),
            "no row for {name}"
        );
    }
    for name in ["canary with 10x errors", "moderately worse than tolerated"] {
        assert!(
            !chart.contains(name),
            "a row for {name}, which should not be promoted"
        );
    }
    assert!(chart.matches("<title>rollwise: ").count() >= 5, "{chart}");
    // Deterministic: the same seeds give the same report, whatever the threads.
    let again = dir.path().join("again.md");
    let path = again.display().to_string();
    ok(&[
        "simulate",
        "benchmark",
        "--trials",
        "2",
        "--threads",
        "1",
        "--out",
        &path,
    ]);
    assert_eq!(report, std::fs::read_to_string(&again).unwrap());
}

/// A canary that went to 100% on the evidence that it is fine is promoted
/// when the last pause ends, even when a later look pulls the evidence back
/// under the bar: at 100% stable serves nothing to compare with, so holding
/// for the evidence would hold forever (with `interval: 30s` and a 15s
/// scrape, 7 of these 50 seeds sat at 100% for the scenario's whole day).
#[test]
fn a_canary_at_100_percent_is_not_held_for_evidence_that_cannot_come() {
    let dir = tempfile::tempdir().unwrap();
    let rollout = std::fs::read_to_string(example("rollout.yaml")).unwrap();
    let line =
        "    # interval: omitted, 5s; confidence: omitted, 0.99; rollbackConfidence: omitted, 0.95";
    assert!(rollout.contains(line));
    let rollout = write(
        dir.path(),
        "rollout-30s.yaml",
        &rollout.replace(line, "    interval: 30s"),
    );
    let scenario = std::fs::read_to_string(example("within-tolerance.yaml")).unwrap();
    let scenario = write(
        dir.path(),
        "within-tolerance-15s.yaml",
        &format!("{scenario}\nscrapeInterval: 15s\n"),
    );
    let out = rollwise(&[
        "simulate",
        "--rollout",
        &rollout,
        "--scenario",
        &scenario,
        "--trials",
        "50",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let runs = v["results"][0]["runs"].as_array().expect("runs");
    let stuck: Vec<&Value> = runs
        .iter()
        .filter(|r| r["outcome"] != "promoted")
        .map(|r| &r["seed"])
        .collect();
    assert_eq!(runs.len(), 50);
    assert!(stuck.is_empty(), "not promoted: seeds {stuck:?}");
    // The last decision says why it did not wait for the evidence again.
    let one = ok(&[
        "simulate",
        "--rollout",
        &rollout,
        "--scenario",
        &scenario,
        "--seed",
        "7",
    ]);
    assert!(
        one.contains("at 100% stable serves no requests to compare with"),
        "{one}"
    );
}
