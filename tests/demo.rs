//! The embedded demo, run the way a user runs it: the real binary, the real
//! reconcile loop against the in-memory cluster. It must promote the healthy
//! version and roll back the faulty one, and say so.

use std::process::Command;

#[test]
fn demo_promotes_the_healthy_version_and_rolls_back_the_faulty_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_rollwise"))
        .args(["demo", "--seed", "11"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("=> Succeeded"), "{stdout}");
    assert!(stdout.contains("checkout-v2=100"), "{stdout}");
    assert!(stdout.contains("=> RolledBack"), "{stdout}");
    assert!(stdout.contains("checkout-v3=0"), "{stdout}");
    // The comparison (canary vs stable) or the threshold metric caught it.
    assert!(
        stdout.contains("reason=CanaryWorse") || stdout.contains("reason=AnalysisFailed"),
        "{stdout}"
    );
    assert!(stdout.contains("demo: OK"), "{stdout}");
    // The plan is shown first: steps, bounds, tolerance.
    let plan = stdout
        .lines()
        .find(|l| l.starts_with("plan: "))
        .unwrap_or_else(|| panic!("no plan line:\n{stdout}"));
    assert!(
        plan.contains("5% → pause 1m → 33%")
            && plan.contains("error-rate <= 0.02")
            && plan.contains("tolerance +0.01"),
        "{plan}"
    );
    assert!(stdout.find("plan: ") < stdout.find("1) "), "{stdout}");
    // The timeline shows each weight step.
    for w in ["weight   5%", "weight  33%", "weight  50%", "weight 100%"] {
        assert!(stdout.contains(w), "no `{w}` in the timeline:\n{stdout}");
    }
}

#[test]
fn crd_subcommand_prints_the_committed_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_rollwise"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/rollout.yaml")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
    let chart = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/rollwise/crds/rollout.yaml"
    ))
    .unwrap();
    assert_eq!(
        chart, committed,
        "charts/rollwise/crds/rollout.yaml must equal crds/rollout.yaml"
    );
}

#[test]
fn run_without_a_cluster_says_how_to_get_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_rollwise"))
        .args(["run", "--http-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rollwise demo"), "{stderr}");
}
