//! Checks through the engine: the gates hold, a failure rolls back, a
//! confirm gate waits, and nothing ever advances over an open check.

use super::*;
use crate::api::CheckPoint;
use crate::plan::checks::{CheckKind, CheckOutcome, PlanCheck};

fn with_checks(
    steps: Vec<PlanStep>,
    checks: Vec<(&str, Vec<CheckPoint>, CheckKind, u32)>,
) -> World {
    let mut p = plan(steps);
    p.checks = checks
        .into_iter()
        .map(|(name, at, kind, failure_limit)| PlanCheck {
            name: name.into(),
            at,
            failure_limit,
            interval: Duration::from_secs(10),
            kind,
        })
        .collect();
    World::new(p)
}

fn pass(_: u8) -> QueryOutcome {
    QueryOutcome::Value(0.0)
}

fn steps() -> Vec<PlanStep> {
    vec![
        PlanStep::SetWeight(20),
        PlanStep::Pause(Some(Duration::from_secs(60))),
        PlanStep::SetWeight(50),
        PlanStep::Pause(Some(Duration::from_secs(60))),
    ]
}

#[test]
fn a_failing_pre_rollout_check_rolls_back_with_no_traffic_moved() {
    let mut w = with_checks(
        steps(),
        vec![
            ("smoke", vec![CheckPoint::PreRollout], CheckKind::Job, 0),
            (
                "report",
                vec![CheckPoint::PostRollback],
                CheckKind::Webhook,
                0,
            ),
        ],
    );
    w.check_answer = Some(CheckOutcome::Failed);
    w.run(&pass, 50);
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert!(
        w.decisions.iter().all(|d| d.weight == 0),
        "{:?}",
        w.weights()
    );
    let rb = w
        .decisions
        .iter()
        .find(|d| d.kind == DecisionKind::Rollback)
        .unwrap();
    assert_eq!(rb.reason, Reason::CheckFailed);
    assert!(
        rb.message.contains("before any traffic moved") && rb.message.contains("smoke"),
        "{}",
        rb.message
    );
    // The postRollback check was started and ran (it reports only).
    for _ in 0..5 {
        w.step(&pass, None);
    }
    let post = w.status.checks.iter().find(|c| c.name == "report").unwrap();
    assert_eq!(post.phase, "Failed");
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert!(
        w.decisions
            .iter()
            .flat_map(|d| &d.transitions)
            .any(|t| t.reason == Reason::PostRollbackCheckFailed)
    );
}

#[test]
fn a_running_check_holds_and_a_passing_one_lets_the_rollout_complete() {
    let mut w = with_checks(
        steps(),
        vec![
            ("smoke", vec![CheckPoint::PreRollout], CheckKind::Job, 0),
            ("load", vec![CheckPoint::Step], CheckKind::Job, 0),
            (
                "final",
                vec![CheckPoint::PrePromotion],
                CheckKind::Webhook,
                0,
            ),
        ],
    );
    w.check_answer = None;
    for _ in 0..20 {
        w.step(&pass, None);
    }
    assert_eq!(w.weight, 0, "held at 0 while the preRollout check runs");
    assert_eq!(w.decisions.last().unwrap().reason, Reason::CheckRunning);
    assert!(
        !w.decisions.last().unwrap().waits_for_change,
        "comes back for the check"
    );
    w.check_answer = Some(CheckOutcome::Passed);
    w.run(&pass, 500);
    assert_eq!(w.status.phase, Phase::Succeeded, "{:?}", w.status.message);
    assert_eq!(w.weights(), vec![0, 20, 50, 100]);
    let names: Vec<_> = w
        .status
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.point.as_str(), c.step, c.phase.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("smoke", "preRollout", None, "Passed"),
            ("load", "step", Some(2), "Passed"),
            ("load", "step", Some(4), "Passed"),
            ("final", "prePromotion", None, "Passed"),
        ]
    );
}

#[test]
fn a_step_check_that_runs_holds_the_step_past_its_pause() {
    let mut w = with_checks(
        steps(),
        vec![("load", vec![CheckPoint::Step], CheckKind::Job, 0)],
    );
    w.check_answer = None;
    for _ in 0..200 {
        w.step(&pass, None);
    }
    assert_eq!(w.weight, 20, "never advances over a running check");
    assert_eq!(w.status.current_step_index, 1);
    assert_eq!(w.decisions.last().unwrap().reason, Reason::CheckRunning);
}

#[test]
fn a_failing_step_check_rolls_back_after_its_limit() {
    let mut w = with_checks(
        steps(),
        vec![("load", vec![CheckPoint::Step], CheckKind::Webhook, 1)],
    );
    w.check_answer = Some(CheckOutcome::Failed);
    w.run(&pass, 500);
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert_eq!(w.weights(), vec![0, 20, 0]);
    let c = &w.status.checks[0];
    assert_eq!((c.failures, c.attempts, c.phase.as_str()), (2, 2, "Failed"));
    let events: Vec<_> = w
        .decisions
        .iter()
        .flat_map(|d| &d.transitions)
        .map(|t| t.reason)
        .collect();
    assert!(events.contains(&Reason::CheckAttemptFailed));
    assert!(events.contains(&Reason::CheckFailed));
}

#[test]
fn a_confirm_gate_waits_and_never_fails() {
    let mut w = with_checks(
        steps(),
        vec![(
            "approval",
            vec![CheckPoint::PrePromotion],
            CheckKind::Confirm,
            0,
        )],
    );
    w.check_answer = Some(CheckOutcome::Waiting);
    w.run(&pass, 400);
    assert_eq!(w.status.phase, Phase::Progressing);
    assert_eq!(w.weight, 50);
    let last = w.decisions.last().unwrap();
    assert_eq!(last.reason, Reason::WaitingForConfirm);
    assert!(last.message.contains("approval"), "{}", last.message);
    assert_eq!(w.status.checks[0].phase, "Waiting");
    w.check_answer = Some(CheckOutcome::Passed);
    w.run(&pass, 50);
    assert_eq!(w.status.phase, Phase::Succeeded);
}

#[test]
fn a_new_canary_clears_the_checks() {
    let mut w = with_checks(
        steps(),
        vec![("smoke", vec![CheckPoint::PreRollout], CheckKind::Job, 0)],
    );
    w.check_answer = Some(CheckOutcome::Failed);
    w.run(&pass, 50);
    assert_eq!(w.status.checks.len(), 1);
    w.plan.canary_ref = "app-v3".into();
    w.check_answer = None;
    w.step(&pass, None);
    assert!(w.status.checks.is_empty());
    assert_eq!(w.status.phase, Phase::Pending);
}
