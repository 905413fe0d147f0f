//! The `kubectl rollwise` plugin against the in-memory API server of
//! `rollwise::demo::cluster` (kube-fake-client), with statuses produced by
//! the operator's real reconcile (`rollwise::demo::Sim`). The status view is
//! a pure function, so frames are checked as text. The last tests run the
//! real `kubectl-rollwise` binary.

use std::process::Command;
use std::time::Duration;

use clap::Parser;
use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use rollwise::api::{ACTION_ANNOTATION, Phase, Rollout};
use rollwise::cli::render::{number, percent};
use rollwise::cli::{
    CLEAR, Cli, EXIT_FAILED, EXIT_FORBIDDEN, EXIT_OK, EXIT_USAGE, KubeArgs, Settings,
    render_status, rollout_events,
};
use rollwise::clock::Clock;
use rollwise::demo::{Sim, cluster};

const STEP: Duration = Duration::from_secs(5);
const WIDTH: usize = 120;

/// Run the plugin with `args` (without the program name) against `client`.
async fn exec(client: &kube::Client, now: Timestamp, args: &[&str]) -> (u8, String, String) {
    let cli = Cli::try_parse_from(std::iter::once("kubectl-rollwise").chain(args.iter().copied()))
        .expect("valid arguments");
    let settings = Settings {
        width: WIDTH,
        now: Some(now),
        interval: Duration::from_millis(5),
        clear: true,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = rollwise::cli::run(client.clone(), &cli, &settings, &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// Reconcile (with ticks of virtual time) until `pred` holds.
async fn run_until(sim: &Sim, pred: impl Fn(&Rollout) -> bool) -> Rollout {
    let deadline = sim.elapsed() + Duration::from_secs(3600);
    loop {
        sim.reconcile().await.unwrap();
        let r = sim.rollout().await.unwrap();
        if pred(&r) {
            return r;
        }
        assert!(sim.elapsed() < deadline, "condition never reached: {r:#?}");
        sim.tick(STEP).await.unwrap();
    }
}

fn phase(r: &Rollout) -> Phase {
    r.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn step_index(r: &Rollout) -> i32 {
    r.status
        .as_ref()
        .map(|s| s.current_step_index)
        .unwrap_or(-1)
}

/// In the 33% pause (step 4/7) with a measured value at that weight.
async fn mid_rollout(seed: u64) -> (Sim, Rollout) {
    let sim = Sim::standard(seed).await.unwrap();
    sim.traffic.set_error_rate("checkout-v2", 0.005);
    let r = run_until(&sim, |r| {
        step_index(r) == 3
            && r.status.as_ref().is_some_and(|s| {
                s.canary_weight == 33
                    && s.last_decision.as_ref().is_some_and(|d| d.kind == "Hold")
                    && s.analysis
                        .iter()
                        .any(|m| m.name == "error-rate" && m.value.is_some())
            })
    })
    .await;
    (sim, r)
}

async fn rolled_back(seed: u64) -> (Sim, Rollout) {
    let sim = Sim::standard(seed).await.unwrap();
    sim.traffic.set_error_rate("checkout-v2", 0.08);
    let r = run_until(&sim, |r| phase(r) == Phase::RolledBack).await;
    (sim, r)
}

async fn annotation(sim: &Sim) -> Option<String> {
    sim.rollout()
        .await
        .unwrap()
        .metadata
        .annotations
        .and_then(|a| a.get(ACTION_ANNOTATION).cloned())
}

#[tokio::test]
async fn list_shows_the_rollouts() {
    let mut other = cluster::rollout("payments", "pay-v1", "pay-v2", "payments");
    other.metadata.namespace = Some("billing".into());
    let client = cluster::client(vec![
        serde_json::to_value(cluster::deployment("checkout-v1", 3, 3)).unwrap(),
        serde_json::to_value(cluster::deployment("checkout-v2", 3, 3)).unwrap(),
        serde_json::to_value(cluster::service("checkout-v1")).unwrap(),
        serde_json::to_value(cluster::service("checkout-v2")).unwrap(),
        cluster::http_route("checkout", "checkout-v1"),
        serde_json::to_value(cluster::rollout(
            "checkout",
            "checkout-v1",
            "checkout-v2",
            "checkout",
        ))
        .unwrap(),
        serde_json::to_value(other).unwrap(),
    ])
    .await
    .unwrap();
    let sim = Sim::with_client(client.clone(), 3);
    sim.traffic.set_error_rate("checkout-v2", 0.005);
    run_until(&sim, |r| step_index(r) >= 1).await;
    let now = sim.clock.now();

    let (code, out, err) = exec(&client, now, &["list", "-n", "shop"]).await;
    assert_eq!(code, EXIT_OK, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for col in ["NAME", "PHASE", "STEP", "WEIGHT", "VERDICT", "MESSAGE"] {
        assert!(lines[0].contains(col), "{out}");
    }
    assert!(!lines[0].contains("NAMESPACE"), "{out}");
    assert!(lines[1].starts_with("checkout "), "{out}");
    assert!(lines[1].contains("Progressing"), "{out}");
    assert!(lines[1].contains("2/7"), "{out}");
    assert!(lines[1].contains("5%"), "{out}");

    let (code, out, _) = exec(&client, now, &["list", "-A"]).await;
    assert_eq!(code, EXIT_OK);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("NAMESPACE"), "{out}");
    // Sorted by namespace; the unreconciled one shows dashes.
    assert!(
        lines[1].starts_with("billing ") && lines[1].contains("payments"),
        "{out}"
    );
    assert!(lines[1].contains(" -"), "{out}");
    assert!(
        lines[2].starts_with("shop ") && lines[2].contains("checkout"),
        "{out}"
    );
    // Every line fits the width.
    assert!(out.lines().all(|l| l.chars().count() <= WIDTH), "{out}");

    let (code, out, err) = exec(&client, now, &["list", "-n", "empty"]).await;
    assert_eq!(code, EXIT_OK);
    assert_eq!(out, "");
    assert!(
        err.contains("No rollouts found in namespace empty"),
        "{err}"
    );
}

#[tokio::test]
async fn status_of_a_mid_rollout_rollout() {
    let (sim, r) = mid_rollout(5).await;
    let now = sim.clock.now();
    let st = r.status.clone().unwrap();
    let metric = &st.analysis[0];
    let value = number(metric.value.unwrap());

    let (code, out, err) = exec(
        &sim.client,
        now,
        &["get", "rollout", "checkout", "-n", "shop"],
    )
    .await;
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(out.contains("Rollout      shop/checkout"), "{out}");
    assert!(out.contains("▶ Progressing — step 4/7"), "{out}");
    // The plan: steps, bounds, tolerance.
    assert!(
        out.contains("Plan         5% → pause 1m → 33% → pause 1m → 50%"),
        "{out}"
    );
    assert!(out.contains("tolerance +0.01"), "{out}");
    assert!(
        out.contains("[#######-------------] 33% on the canary   desired 33%"),
        "{out}"
    );
    // The plan, with the current step marked and the ones before done.
    assert!(out.contains("✔  3/7  setWeight 33%"), "{out}");
    assert!(out.contains("▶  4/7  pause 1m"), "{out}");
    assert!(out.contains("← current for"), "{out}");
    assert!(out.contains("    7/7  setWeight 100%"), "{out}");
    // The metric: value, bound, verdict and failures/limit on one row.
    let row = out
        .lines()
        .find(|l| l.trim_start().starts_with("error-rate"))
        .unwrap_or_else(|| panic!("no metric row:\n{out}"));
    for cell in [value.as_str(), "<= 0.02", &metric.verdict, "0/1"] {
        assert!(row.contains(cell), "`{cell}` not in `{row}`");
    }
    assert_eq!(metric.verdict, "Pass");
    // The canary-vs-stable comparison: counts, rates, excess and verdict.
    let cmp = &st.comparisons[0];
    let row = out
        .lines()
        .find(|l| l.trim_start().starts_with("http-errors"))
        .unwrap_or_else(|| panic!("no comparison row:\n{out}"));
    let canary = format!(
        "{}/{}",
        number(cmp.canary_failures),
        number(cmp.canary_requests)
    );
    // The evidence in words: how strongly worse, how strongly fine, and
    // the bar either must reach.
    for cell in [canary.as_str(), "+0.01", &cmp.verdict] {
        assert!(row.contains(cell), "`{cell}` not in `{row}`");
    }
    let evidence = format!(
        "http-errors: canary's excess {} [{}, {}]; evidence worse {}x (needs {}x), fine {}x (needs {}x)",
        percent(cmp.excess),
        percent(cmp.excess_lower),
        percent(cmp.excess_upper),
        number(cmp.harm_evidence),
        number(cmp.harm_bar()),
        number(cmp.fine_evidence),
        number(cmp.evidence_bar)
    );
    assert!(out.contains(&evidence), "`{evidence}` not in:\n{out}");
    assert!(out.contains("exposure budget: "), "{out}");
    assert!(out.contains(" of 200"), "{out}");
    // The ramp raised the weight to 33% before the evidence was in: the
    // latest round is still inconclusive.
    assert_eq!(st.verdict, "Inconclusive");
    assert!(
        out.contains("Analysis     every 15s, latest round Inconclusive"),
        "{out}"
    );
    // The latest decision and what it waits for.
    let d = st.last_decision.as_ref().unwrap();
    assert!(
        out.contains(&format!("Decision     {} {}", d.kind, d.reason)),
        "{out}"
    );
    assert!(out.contains("Waiting for  the pause to end ("), "{out}");
    assert!(out.contains("Last action  none"), "{out}");
    // The operator's Events about this Rollout, newest last, at most 10.
    assert!(out.contains("Events (newest last)"), "{out}");
    assert!(out.contains("WeightChanged"), "{out}");
    let events_section = out.split("Events (newest last)").nth(1).unwrap();
    assert!(events_section.lines().count() <= 1 + 1 + 10, "{out}");
    assert!(out.lines().all(|l| l.chars().count() <= WIDTH), "{out}");

    // The Events come from the API, filtered to this Rollout.
    let api: Api<Event> = Api::namespaced(sim.client.clone(), cluster::NAMESPACE);
    let all = api.list(&ListParams::default()).await.unwrap().items;
    let mine = rollout_events(&sim.client, &r).await.unwrap();
    assert!(!mine.is_empty());
    assert!(mine.len() <= all.len());
}

#[tokio::test]
async fn watch_frames_follow_the_rollout() {
    let sim = Sim::standard(8).await.unwrap();
    sim.traffic.set_error_rate("checkout-v2", 0.005);
    let early = run_until(&sim, |r| step_index(r) == 1).await;
    let early_frame = render_status(&early, &[], sim.clock.now(), WIDTH);
    let later = run_until(&sim, |r| step_index(r) == 3).await;
    let later_frame = render_status(&later, &[], sim.clock.now(), WIDTH);

    assert_ne!(early_frame, later_frame);
    assert!(
        early_frame.contains("[#-------------------] 5%"),
        "{early_frame}"
    );
    assert!(early_frame.contains("▶  2/7  pause 1m"), "{early_frame}");
    assert!(
        early_frame.contains("   3/7  setWeight 33%"),
        "{early_frame}"
    );
    assert!(
        later_frame.contains("[#######-------------] 33%"),
        "{later_frame}"
    );
    assert!(later_frame.contains("✔  2/7  pause 1m"), "{later_frame}");
    assert!(later_frame.contains("▶  4/7  pause 1m"), "{later_frame}");
    // A frame is a function of its inputs: same state, same text.
    assert_eq!(
        later_frame,
        render_status(&later, &[], sim.clock.now(), WIDTH)
    );
    // Narrow terminals get a shorter bar and no line wider than asked.
    let narrow = render_status(&later, &[], sim.clock.now(), 50);
    assert!(narrow.contains("[###-------] 33%"), "{narrow}");
    assert!(narrow.lines().all(|l| l.chars().count() <= 50), "{narrow}");

    // The live view: redraws while the operator works, stops when done.
    let client = sim.client.clone();
    let now = sim.clock.now();
    let watch = exec(
        &client,
        now,
        &[
            "status",
            "checkout",
            "-n",
            "shop",
            "--watch",
            "--until-done",
        ],
    );
    let operator = sim.run_until_terminal(STEP, Duration::from_secs(3600), |_| {});
    let ((code, out, err), done) = tokio::join!(watch, operator);
    assert_eq!(phase(&done.unwrap()), Phase::Succeeded);
    assert_eq!(code, EXIT_OK, "{err}");
    let frames: Vec<&str> = out.split(CLEAR).filter(|f| !f.is_empty()).collect();
    assert!(!frames.is_empty());
    let last = frames.last().unwrap();
    assert!(
        last.starts_with("Every 5ms: kubectl rollwise status checkout"),
        "{last}"
    );
    assert!(last.contains("✔ Succeeded"), "{last}");
    assert!(last.contains("[####################] 100%"), "{last}");
    assert!(last.contains("Done         all steps done"), "{last}");
}

#[tokio::test]
async fn watch_until_done_fails_for_a_rolled_back_rollout() {
    let (sim, r) = rolled_back(2).await;
    // Long decisions are wrapped, not cut.
    let decision = r.status.as_ref().unwrap().last_decision.clone().unwrap();
    let view = render_status(&r, &[], sim.clock.now(), 60);
    assert!(view.lines().all(|l| l.chars().count() <= 60), "{view}");
    let joined = view.lines().map(str::trim).collect::<Vec<_>>().join(" ");
    let words = decision
        .message
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(joined.contains(&words), "{view}");
    let (code, out, _) = exec(
        &sim.client,
        sim.clock.now(),
        &["status", "checkout", "-n", "shop", "-w", "--until-done"],
    )
    .await;
    assert_eq!(code, EXIT_FAILED);
    assert_eq!(out.matches(CLEAR).count(), 1, "{out}");
    assert!(out.contains("↺ RolledBack"), "{out}");
    assert!(out.contains("kubectl rollwise retry checkout"), "{out}");
}

/// The forms of `kubectl argo rollouts`: `get rollout NAME` (and `get
/// rollouts`, `list rollouts`), and `status NAME`, which waits until the
/// rollout is done and exits by its outcome.
#[tokio::test]
async fn argo_forms_get_list_and_status_that_waits() {
    let (sim, _) = mid_rollout(5).await;
    let now = sim.clock.now();
    let (code, out, err) = exec(
        &sim.client,
        now,
        &["get", "rollout", "checkout", "-n", "shop"],
    )
    .await;
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(out.contains("Rollout      shop/checkout"), "{out}");
    for args in [
        &["get", "rollouts", "-n", "shop"][..],
        &["list", "rollouts", "-n", "shop"],
        &["get", "ro", "-A"],
    ] {
        let (code, out, err) = exec(&sim.client, now, args).await;
        assert_eq!(code, EXIT_OK, "{args:?}: {err}");
        assert!(
            out.contains("checkout") && out.contains("PHASE"),
            "{args:?}: {out}"
        );
    }
    // status NAME waits while the operator works, one line per change,
    // and exits 0 when the rollout succeeded.
    let client = sim.client.clone();
    let wait = exec(&client, now, &["status", "checkout", "-n", "shop"]);
    let operator = sim.run_until_terminal(STEP, Duration::from_secs(3600), |_| {});
    let ((code, out, err), done) = tokio::join!(wait, operator);
    assert_eq!(phase(&done.unwrap()), Phase::Succeeded);
    assert_eq!(code, EXIT_OK, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 2, "{out}");
    assert!(
        lines[0].starts_with("Progressing step 4/7 weight 33%"),
        "{out}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("Succeeded step 7/7 weight 100% (AllStepsDone)"),
        "{out}"
    );
    assert!(
        !out.contains(CLEAR),
        "no screen control in the waiting form"
    );

    // ...and 1 when it was rolled back, saying so.
    let (sim, _) = rolled_back(2).await;
    let (code, out, err) = exec(
        &sim.client,
        sim.clock.now(),
        &["status", "checkout", "-n", "shop"],
    )
    .await;
    assert_eq!(code, EXIT_FAILED, "{out}");
    assert!(out.starts_with("RolledBack step"), "{out}");
    assert!(err.contains("rollout \"checkout\" is RolledBack"), "{err}");
    // `retry rollout NAME` is `retry NAME`.
    let (code, out, err) = exec(
        &sim.client,
        sim.clock.now(),
        &["retry", "rollout", "checkout", "-n", "shop"],
    )
    .await;
    assert_eq!(code, EXIT_OK, "{out}{err}");
}

/// Every positional argument of every verb is described in its help.
#[test]
fn every_positional_argument_is_described() {
    use clap::CommandFactory;
    let cmd = Cli::command();
    for sub in cmd.get_subcommands() {
        for arg in sub.get_positionals() {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                help.len() > 5,
                "{} {}: no description",
                sub.get_name(),
                arg.get_id()
            );
        }
    }
}

#[tokio::test]
async fn promote_sets_the_annotation_and_the_operator_carries_it_out() {
    let (sim, _) = mid_rollout(6).await;
    let (client, seen) = proxy(sim.client.clone(), |_, _| false);
    let (code, out, err) = exec(
        &client,
        sim.clock.now(),
        &["promote", "checkout", "-n", "shop"],
    )
    .await;
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(
        out.contains(
            "promote requested: the operator will skip step 4/7 (pause 1m) and go on with step 5/7 (setWeight 50%)"
        ),
        "{out}"
    );
    assert_eq!(annotation(&sim).await.as_deref(), Some("promote"));
    // One JSON merge patch, by field manager kubectl-rollwise.
    let patches: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, _, _)| m == "PATCH")
        .cloned()
        .collect();
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert!(
        patches[0].1.contains("fieldManager=kubectl-rollwise"),
        "{patches:?}"
    );
    assert_eq!(patches[0].2, "application/merge-patch+json");

    // The operator carries it out and removes the annotation.
    sim.reconcile().await.unwrap();
    let r = sim.rollout().await.unwrap();
    let action = r.status.as_ref().unwrap().last_action.clone().unwrap();
    assert_eq!(
        (action.action.as_str(), action.result.as_str()),
        ("promote", "Done")
    );
    assert_eq!(step_index(&r), 4);
    assert_eq!(annotation(&sim).await, None);
    let view = render_status(&r, &[], sim.clock.now(), WIDTH);
    assert!(view.contains("Last action  promote Done"), "{view}");

    // promote --full says what it skips.
    let (code, out, _) = exec(
        &sim.client,
        sim.clock.now(),
        &["promote", "--full", "checkout", "-n", "shop"],
    )
    .await;
    assert_eq!(code, EXIT_OK);
    assert!(
        out.contains("promote-full requested: the operator will skip the remaining steps (5-7)"),
        "{out}"
    );
    assert_eq!(annotation(&sim).await.as_deref(), Some("promote-full"));
}

#[tokio::test]
async fn actions_not_valid_in_the_phase_are_refused() {
    let (sim, r) = rolled_back(2).await;
    assert_eq!(phase(&r), Phase::RolledBack);
    let now = sim.clock.now();

    let (code, out, err) = exec(&sim.client, now, &["abort", "checkout", "-n", "shop"]).await;
    assert_eq!(code, EXIT_FAILED);
    assert_eq!(out, "");
    assert!(
        err.contains("error: abort is not valid in phase RolledBack: nothing to abort"),
        "{err}"
    );
    assert!(!err.contains("not found"), "{err}");
    assert_eq!(annotation(&sim).await, None);

    let (code, _, err) = exec(&sim.client, now, &["promote", "checkout", "-n", "shop"]).await;
    assert_eq!(code, EXIT_FAILED);
    assert!(err.contains("use `retry`"), "{err}");
    assert_eq!(annotation(&sim).await, None);

    // retry is what applies here.
    let (code, out, err) = exec(&sim.client, now, &["retry", "checkout", "-n", "shop"]).await;
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(
        out.contains("retry requested: the operator will start checkout-v2 again from step 1/7"),
        "{out}"
    );
    assert_eq!(annotation(&sim).await.as_deref(), Some("retry"));

    // ...and not while progressing.
    let (sim, _) = mid_rollout(4).await;
    let (code, _, err) = exec(
        &sim.client,
        sim.clock.now(),
        &["retry", "checkout", "-n", "shop"],
    )
    .await;
    assert_eq!(code, EXIT_FAILED);
    assert!(
        err.contains("retry is not valid in phase Progressing"),
        "{err}"
    );
    assert_eq!(annotation(&sim).await, None);
}

#[tokio::test]
async fn not_found_exits_1() {
    let client = cluster::standard().await.unwrap();
    let now = Timestamp::now();
    for args in [
        &["status", "nope", "-n", "shop"][..],
        &["promote", "nope", "-n", "shop"],
        &["abort", "nope", "-n", "shop"],
        &["pause", "nope", "-n", "shop"],
        &["status", "checkout", "-n", "elsewhere", "--watch"],
    ] {
        let (code, out, err) = exec(&client, now, args).await;
        assert_eq!(code, EXIT_FAILED, "{args:?}");
        assert!(err.contains("not found in namespace"), "{args:?}: {err}");
        assert!(!err.contains("not valid"), "{err}");
        assert!(!out.contains("requested"), "{out}");
    }
    // The default namespace is the client's (here `default`).
    let (code, _, err) = exec(&client, now, &["status", "checkout"]).await;
    assert_eq!(code, EXIT_FAILED);
    assert!(
        err.contains("rollout \"checkout\" not found in namespace \"default\""),
        "{err}"
    );
}

#[tokio::test]
async fn pause_and_resume_flip_spec_paused() {
    let (sim, _) = mid_rollout(9).await;
    let now = sim.clock.now();
    let paused = async || sim.rollout().await.unwrap().spec.paused;

    let (code, out, _) = exec(&sim.client, now, &["pause", "checkout", "-n", "shop"]).await;
    assert_eq!(code, EXIT_OK);
    assert!(
        out.contains("rollout shop/checkout paused (spec.paused=true)"),
        "{out}"
    );
    assert!(paused().await);
    // Promote is refused while paused (same rule as the operator).
    let (code, _, err) = exec(&sim.client, now, &["promote", "checkout", "-n", "shop"]).await;
    assert_eq!(code, EXIT_FAILED);
    assert!(err.contains("spec.paused is true"), "{err}");
    // The operator holds; the view says so.
    sim.reconcile().await.unwrap();
    let r = sim.rollout().await.unwrap();
    assert_eq!(phase(&r), Phase::Paused);
    let view = render_status(&r, &[], now, WIDTH);
    assert!(view.contains("‖ Paused"), "{view}");
    assert!(
        view.contains("Waiting for  spec.paused to be false (kubectl rollwise resume checkout)"),
        "{view}"
    );

    let (code, out, _) = exec(&sim.client, now, &["pause", "checkout", "-n", "shop"]).await;
    assert_eq!(code, EXIT_OK);
    assert!(out.contains("already paused"), "{out}");

    let (code, out, _) = exec(&sim.client, now, &["resume", "checkout", "-n", "shop"]).await;
    assert_eq!(code, EXIT_OK);
    assert!(out.contains("resumed (spec.paused=false)"), "{out}");
    assert!(!paused().await);
}

/// The requests a [`proxy`] saw: method, path?query, content type.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

/// kube-fake-client's interceptors can only inject its own error variants,
/// none of which is a 403 (see its error.rs: 400, 404, 405, 409, 422, 500).
/// So the in-memory API server is fronted by a proxy that answers 403 to
/// what `deny` matches, as RBAC would, forwards everything else, and
/// records every request.
fn proxy(inner: kube::Client, deny: fn(&axum::http::Method, &str) -> bool) -> (kube::Client, Seen) {
    use axum::http::{Request, Response};
    use kube::client::Body;
    let seen = Seen::default();
    let log = seen.clone();
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((req, reply)) = handle.next_request().await {
            let path = req.uri().path().to_string();
            log.lock().unwrap().push((
                req.method().to_string(),
                req.uri().to_string(),
                req.headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
            ));
            if deny(req.method(), &path) {
                let status = serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": format!("rollouts.rollwise.io is forbidden: User \"dev\" cannot {} resource at {path}", req.method()),
                    "reason": "Forbidden", "code": 403
                });
                let resp = Response::builder()
                    .status(403)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&status).unwrap()))
                    .unwrap();
                reply.send_response(resp);
            } else {
                match inner.send(req).await {
                    Ok(resp) => reply.send_response(resp),
                    Err(e) => reply.send_error(e),
                }
            }
        }
    });
    (kube::Client::new(service, "default"), seen)
}

fn forbidding(inner: kube::Client, deny: fn(&axum::http::Method, &str) -> bool) -> kube::Client {
    proxy(inner, deny).0
}

#[tokio::test]
async fn forbidden_exits_3_and_says_which_verb_and_resource() {
    let (sim, _) = mid_rollout(7).await;
    let now = sim.clock.now();
    let client = forbidding(sim.client.clone(), |m, _| m == axum::http::Method::PATCH);

    // Reading is allowed...
    let (code, out, err) = exec(&client, now, &["get", "rollout", "checkout", "-n", "shop"]).await;
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(out.contains("33%"), "{out}");
    // ...writing is not.
    for args in [
        &["promote", "checkout", "-n", "shop"][..],
        &["pause", "checkout", "-n", "shop"],
    ] {
        let (code, out, err) = exec(&client, now, args).await;
        assert_eq!(code, EXIT_FORBIDDEN, "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert!(err.contains("permission denied (HTTP 403)"), "{err}");
        assert!(
            err.contains(
                "you may not patch rollouts.rollwise.io \"checkout\" in namespace \"shop\""
            ),
            "{err}"
        );
        assert!(err.contains("Ask for RBAC verb \"patch\""), "{err}");
    }
    assert_eq!(annotation(&sim).await, None);
    assert!(!sim.rollout().await.unwrap().spec.paused);

    // Listing forbidden cluster-wide names the list verb and the scope.
    let client = forbidding(sim.client.clone(), |m, _| m == axum::http::Method::GET);
    let (code, _, err) = exec(&client, now, &["list", "-A"]).await;
    assert_eq!(code, EXIT_FORBIDDEN);
    assert!(
        err.contains("you may not list rollouts.rollwise.io in all namespaces"),
        "{err}"
    );
    assert!(err.contains("cluster-wide"), "{err}");

    // Events that may not be read do not fail the status view.
    let client = forbidding(sim.client.clone(), |_, p| p.contains("/events"));
    let (code, out, err) = exec(&client, now, &["get", "rollout", "checkout", "-n", "shop"]).await;
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(
        out.contains("(events not shown: permission denied"),
        "{out}"
    );
}

fn kubeconfig(dir: &std::path::Path, namespace: Option<&str>) -> std::path::PathBuf {
    let ns = namespace
        .map(|n| format!("\n    namespace: {n}"))
        .unwrap_or_default();
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:1
contexts:
- name: dev
  context:
    cluster: local
    user: me{ns}
- name: other
  context:
    cluster: local
    user: me
    namespace: elsewhere
current-context: dev
users:
- name: me
  user:
    token: abc
"
    );
    let path = dir.join("config");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn the_namespace_defaults_to_the_contexts() {
    let dir = tempfile::tempdir().unwrap();
    let args = |path: &std::path::Path, context: Option<&str>| KubeArgs {
        kubeconfig: Some(path.to_path_buf()),
        context: context.map(String::from),
        namespace: None,
    };
    let with_ns = kubeconfig(dir.path(), Some("shop"));
    let c = rollwise::cli::config::client(&args(&with_ns, None))
        .await
        .unwrap();
    assert_eq!(c.default_namespace(), "shop");
    let c = rollwise::cli::config::client(&args(&with_ns, Some("other")))
        .await
        .unwrap();
    assert_eq!(c.default_namespace(), "elsewhere");
    let without = kubeconfig(dir.path(), None);
    let c = rollwise::cli::config::client(&args(&without, None))
        .await
        .unwrap();
    assert_eq!(c.default_namespace(), "default");
    let Err(e) = rollwise::cli::config::client(&args(&without, Some("prod"))).await else {
        panic!("an unknown context must fail");
    };
    assert_eq!(e.code, EXIT_USAGE);
    assert!(
        e.message.contains("no context named \"prod\""),
        "{}",
        e.message
    );
    assert!(e.message.contains("dev, other"), "{}", e.message);
}

fn plugin(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-rollwise"));
    cmd.args(args).env_remove("KUBECONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn binary_help() {
    let (code, out, _) = plugin(&["--help"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Usage: kubectl rollwise [OPTIONS] <COMMAND>"),
        "{out}"
    );
    for cmd in [
        "list", "status", "promote", "abort", "retry", "pause", "resume",
    ] {
        assert!(out.contains(&format!("  {cmd} ")), "no {cmd} in:\n{out}");
    }
    for flag in ["--kubeconfig", "--context", "--namespace"] {
        assert!(out.contains(flag), "{out}");
    }
    let (code, out, _) = plugin(&["status", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("--watch") && out.contains("--until-done"),
        "{out}"
    );
    // A usage error is exit 2.
    let (code, _, err) = plugin(&["promote"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("<NAME>"), "{err}");
}

#[test]
fn binary_without_a_usable_kubeconfig_exits_2() {
    let (code, out, err) = plugin(&["--kubeconfig", "/nonexistent/kubeconfig", "list"], &[]);
    assert_eq!(code, 2);
    assert_eq!(out, "");
    assert!(
        err.contains(
            "error: cannot read kubeconfig /nonexistent/kubeconfig: No such file or directory"
        ),
        "{err}"
    );
    let (code, _, err) = plugin(
        &["status", "checkout"],
        &[("KUBECONFIG", "/nonexistent/kc")],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/kc") && err.contains("(from KUBECONFIG)"),
        "{err}"
    );
    let home = tempfile::tempdir().unwrap();
    let (code, _, err) = plugin(&["list"], &[("HOME", home.path().to_str().unwrap())]);
    assert_eq!(code, 2);
    assert!(err.contains("error: no kubeconfig"), "{err}");
}

#[test]
fn binary_with_an_unreachable_cluster_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(dir.path(), Some("shop"));
    let (code, _, err) = plugin(&["--kubeconfig", path.to_str().unwrap(), "list"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("error: cannot list rollouts.rollwise.io in namespace \"shop\""),
        "{err}"
    );
}

#[tokio::test]
async fn status_shows_the_checks() {
    let (sim, mut r) = mid_rollout(1).await;
    let frame = render_status(&r, &[], sim.clock.now(), WIDTH);
    assert!(!frame.contains("Checks"), "no checks, no section:\n{frame}");
    let st = r.status.as_mut().unwrap();
    st.checks = vec![
        rollwise::api::CheckStatus {
            name: "acceptance".into(),
            point: "preRollout".into(),
            kind: "job".into(),
            phase: "Passed".into(),
            attempts: 1,
            job_name: Some("checkout-acceptance-pre-1c9e2f4a".into()),
            result: "Complete".into(),
            ..Default::default()
        },
        rollwise::api::CheckStatus {
            name: "approval".into(),
            point: "step".into(),
            step: Some(2),
            kind: "confirm".into(),
            phase: "Waiting".into(),
            attempts: 3,
            result: "HTTP 403".into(),
            ..Default::default()
        },
    ];
    let frame = render_status(&r, &[], sim.clock.now(), WIDTH);
    let section: Vec<&str> = frame
        .lines()
        .skip_while(|l| *l != "Checks")
        .take(4)
        .collect();
    assert_eq!(
        section,
        [
            "Checks",
            "  CHECK        AT           KIND      PHASE     FAILURES   JOB                                RESULT",
            "  acceptance   preRollout   job       Passed    0/0        checkout-acceptance-pre-1c9e2f4a   Complete",
            "  approval     step 2       confirm   Waiting   0/0        -                                  HTTP 403",
        ],
        "{frame}"
    );
}
