//! Every way the engine rolls back, aborts, promotes or pauses a rollout
//! reaches a webhook: each scenario runs the engine, the transitions it
//! reported go through `notify::notifications_for`, and the notification
//! must pass the `events` filter users write for it (and no unrelated
//! one). A reason of those classes without a scenario here fails the test.

use std::collections::HashSet;

use super::*;
use crate::api::Rollout;
use crate::notify::{Notification, NotificationKind, notifications_for};

fn rollout() -> Rollout {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rollwise.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": base_spec(),
    }))
    .unwrap()
}

/// The notifications of every decision the world took, in order.
fn notifications(w: &World) -> Vec<Notification> {
    let r = rollout();
    w.decisions
        .iter()
        .flat_map(|d| notifications_for(&r, &d.status, &d.transitions, t0()))
        .collect()
}

/// The reasons (of decisions and transitions) the world saw.
fn reasons(w: &World) -> HashSet<Reason> {
    w.decisions
        .iter()
        .flat_map(|d| std::iter::once(d.reason).chain(d.transitions.iter().map(|t| t.reason)))
        .collect()
}

/// Checks that `reason` was decided, that a notification of `kind` came of
/// it, that each name of `filter` alone passes it and that a filter of
/// every other name does not.
fn assert_notified(w: &World, reason: Reason, filter: &[&str], kind: NotificationKind) {
    assert!(
        reasons(w).contains(&reason),
        "the scenario for {reason} never decided it: {:?}",
        w.decisions
            .iter()
            .map(|d| (d.reason, d.message.clone()))
            .collect::<Vec<_>>()
    );
    let filter: Vec<String> = filter.iter().map(|s| s.to_string()).collect();
    let others: Vec<String> = NotificationKind::ALL
        .iter()
        .map(|k| k.as_str().to_string())
        .filter(|k| !filter.contains(k))
        .collect();
    let all = notifications(w);
    let found: Vec<_> = all.iter().filter(|n| n.kind == kind).collect();
    assert!(
        !found.is_empty(),
        "{reason}: no {kind} notification; got {:?}",
        all.iter()
            .map(|n| (n.kind, n.reason, n.message.clone()))
            .collect::<Vec<_>>()
    );
    for n in found {
        for f in &filter {
            let one = std::slice::from_ref(f);
            assert!(n.matches(Some(one)), "{reason}: {f:?} misses {n:?}");
        }
        assert!(n.matches(None), "{reason}: no filter misses it");
        assert!(
            !n.matches(Some(&others)),
            "{reason}: {others:?} also wants it"
        );
    }
}

const ROLLBACK: &[&str] = &["RolledBack", "AnalysisFailed"];

#[test]
fn every_rollback_abort_promotion_and_pause_reason_notifies() {
    let mut covered: HashSet<Reason> = HashSet::new();
    let mut check = |w: &World, reason: Reason, filter: &[&str], kind: NotificationKind| {
        assert_notified(w, reason, filter, kind);
        covered.extend(reasons(w));
    };

    // Rollbacks: a threshold metric, the comparison, the budget, no metrics.
    let mut w = World::new(default_plan());
    w.run(&failing, 200);
    check(
        &w,
        Reason::AnalysisFailed,
        ROLLBACK,
        NotificationKind::RolledBack,
    );
    let mut w = with_traffic(compare_plan(0.005, None), 50.0, 0.005, 0.05, 3);
    w.run(&healthy, 500);
    check(
        &w,
        Reason::CanaryWorse,
        ROLLBACK,
        NotificationKind::RolledBack,
    );
    let mut w = with_traffic(compare_plan(0.01, Some(30.0)), 400.0, 0.02, 0.04, 11);
    w.run(&healthy, 3000);
    check(
        &w,
        Reason::BudgetExhausted,
        ROLLBACK,
        NotificationKind::RolledBack,
    );
    let mut w = World::new(default_plan());
    w.run(&down, 200);
    check(
        &w,
        Reason::MetricsUnavailable,
        ROLLBACK,
        NotificationKind::RolledBack,
    );

    // A failed check.
    let mut p = default_plan();
    p.checks = vec![crate::plan::checks::PlanCheck {
        name: "smoke".into(),
        at: vec![crate::api::CheckPoint::PreRollout],
        failure_limit: 0,
        interval: Duration::from_secs(10),
        kind: crate::plan::checks::CheckKind::Job,
    }];
    let mut w = World::new(p);
    w.check_answer = Some(crate::plan::checks::CheckOutcome::Failed);
    w.run(&healthy, 50);
    check(
        &w,
        Reason::CheckFailed,
        ROLLBACK,
        NotificationKind::RolledBack,
    );

    // Abort by hand.
    let mut w = World::new(default_plan());
    for _ in 0..5 {
        w.step(&healthy, None);
    }
    w.step(&healthy, Some(ManualAction::Abort));
    check(&w, Reason::Aborted, &["Aborted"], NotificationKind::Aborted);

    // Promotions: all steps, early on evidence, by hand, fully by hand.
    let mut w = World::new(default_plan());
    w.run(&healthy, 200);
    check(
        &w,
        Reason::AllStepsDone,
        &["Promoted"],
        NotificationKind::Promoted,
    );
    check(
        &w,
        Reason::RolloutCompleted,
        &["Promoted"],
        NotificationKind::Promoted,
    );
    let mut w = with_traffic(compare_plan(0.005, None), 200.0, 0.002, 0.002, 5);
    w.run(&healthy, 2000);
    check(
        &w,
        Reason::EvidenceFine,
        &["StepAdvanced"],
        NotificationKind::StepAdvanced,
    );
    check(
        &w,
        Reason::RolloutCompleted,
        &["Promoted"],
        NotificationKind::Promoted,
    );
    let mut spec = base_spec();
    spec["steps"] = serde_json::json!([{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}]);
    let mut w = World::new(plan_from(spec.clone()));
    for _ in 0..10 {
        w.step(&healthy, None);
    }
    // Pauses: a pause step without duration, and spec.paused.
    check(
        &w,
        Reason::ManualPause,
        &["Paused"],
        NotificationKind::Paused,
    );
    check(&w, Reason::Paused, &["Paused"], NotificationKind::Paused);
    w.step(&healthy, Some(ManualAction::Promote));
    check(
        &w,
        Reason::PromotedByHand,
        &["Promoted"],
        NotificationKind::Promoted,
    );
    check(
        &w,
        Reason::Promoted,
        &["Promoted"],
        NotificationKind::Promoted,
    );
    let mut w = World::new(plan_from(spec));
    for _ in 0..3 {
        w.step(&healthy, None);
    }
    w.step(&healthy, Some(ManualAction::PromoteFull));
    check(
        &w,
        Reason::PromotedByHand,
        &["Promoted"],
        NotificationKind::Promoted,
    );
    let mut w = World::new(default_plan());
    for _ in 0..4 {
        w.step(&healthy, None);
    }
    w.plan.paused = true;
    w.step(&healthy, None);
    check(
        &w,
        Reason::PausedBySpec,
        &["Paused"],
        NotificationKind::Paused,
    );

    // A dependency (spec.dependsOn) rolled back while this one is in
    // progress: it follows (onFailure: Rollback). A rollback, but not by
    // its own analysis: only `RolledBack` wants it.
    let mut w = World::new(default_plan());
    for _ in 0..3 {
        w.step(&healthy, None);
    }
    let reqs = [crate::plan::depend::Requirement::from_spec(
        0,
        &crate::api::DependencySpec {
            name: "payments".into(),
            ..Default::default()
        },
        "shop",
    )];
    let seen = |phase: Phase| crate::plan::depend::Observed::Found {
        phase,
        weight: 20,
        canary_service: "payments-v2".into(),
        message: String::new(),
    };
    let last = w.decisions.last().cloned().expect("decisions");
    let mut prev = last.status.clone();
    prev.dependencies = vec![crate::plan::depend::entry(
        &reqs[0],
        &seen(Phase::Progressing),
    )];
    let g = crate::plan::depend::gate(
        &w.plan,
        &prev,
        &reqs,
        &[seen(Phase::RolledBack)],
        last,
        w.now,
    );
    w.decisions.push(g.decision);
    check(
        &w,
        Reason::DependencyFailed,
        &["RolledBack"],
        NotificationKind::RolledBack,
    );

    let missing: Vec<_> = Reason::ALL
        .iter()
        .filter(|r| {
            matches!(
                r.class(),
                Class::Rollback | Class::Abort | Class::Promotion | Class::Pause
            )
        })
        .filter(|r| !covered.contains(r))
        .collect();
    assert!(
        missing.is_empty(),
        "reasons without a notification scenario: {missing:?}"
    );
}
