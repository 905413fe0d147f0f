//! Table tests of the dependency gate: the engine's decision, then what the
//! dependencies allow, with the router carrying exactly what is asked for.

use std::collections::HashMap;

use jiff::Timestamp;

use super::*;
use crate::analysis::{MetricOutcome, QueryOutcome};
use crate::api::{
    AnalysisSpec, GatewayApiRouting, MetricSpec, PauseStep, PrometheusSpec, Step, TrafficRouting,
    VersionRef,
};
use crate::plan::{AnalysisRound, Observation, Readiness, decide, validate};

fn t0() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

/// setWeight 20, pause 1m, setWeight 50, pause 1m (4 steps), optional analysis.
fn spec(deps: Vec<DependencySpec>, analysis: bool) -> RolloutSpec {
    let w = |w| Step {
        set_weight: Some(w),
        ..Default::default()
    };
    let p = || Step {
        pause: Some(PauseStep {
            duration: Some("1m".into()),
        }),
        ..Default::default()
    };
    RolloutSpec {
        stable: VersionRef {
            service: "checkout-v1".into(),
            ..Default::default()
        },
        canary: VersionRef {
            service: "checkout-v2".into(),
            ..Default::default()
        },
        traffic_routing: TrafficRouting {
            gateway_api: Some(GatewayApiRouting {
                http_route: "checkout".into(),
            }),
            ..Default::default()
        },
        steps: Some(vec![w(20), p(), w(50), p()]),
        analysis: analysis.then(|| AnalysisSpec {
            interval: Some("30s".into()),
            prometheus: Some(PrometheusSpec {
                address: "http://p".into(),
            }),
            metrics: vec![MetricSpec {
                name: "error-rate".into(),
                query: "q".into(),
                max: Some(0.01),
                ..Default::default()
            }],
            ..Default::default()
        }),
        depends_on: Some(deps),
        ..Default::default()
    }
}

fn dep(name: &str) -> DependencySpec {
    DependencySpec {
        name: name.into(),
        ..Default::default()
    }
}

fn found(phase: Phase, weight: u8, canary: &str) -> Observed {
    Observed::Found {
        phase,
        weight,
        canary_service: canary.into(),
        message: if matches!(phase, Phase::RolledBack) {
            "error-rate failed".into()
        } else {
            String::new()
        },
    }
}

/// One Rollout, its dependencies' states, a clock and a router that
/// carries what it is told.
struct World {
    spec: RolloutSpec,
    plan: Plan,
    reqs: Vec<Requirement>,
    status: RolloutStatus,
    now: Timestamp,
}

impl World {
    fn new(deps: Vec<DependencySpec>) -> Self {
        Self::with(spec(deps, false))
    }
    fn with(spec: RolloutSpec) -> Self {
        let plan = validate(&spec).expect("valid spec");
        let reqs = requirements(&spec, "shop");
        World {
            spec,
            plan,
            reqs,
            status: RolloutStatus::default(),
            now: t0(),
        }
    }

    fn step_with(
        &mut self,
        observed: &[Observed],
        action: Option<ManualAction>,
        analysis: Option<AnalysisRound>,
    ) -> Gated {
        let obs = Observation {
            generation: 1,
            canary: Readiness::Ready,
            actual_weight: Some(self.status.canary_weight as u8),
            analysis,
            action,
            checks: vec![],
        };
        let d = decide(&self.plan, &self.status, &obs, self.now);
        let g = gate(&self.plan, &self.status, &self.reqs, observed, d, self.now);
        self.status = g.decision.status.clone();
        self.status.canary_weight = g.decision.weight as i32;
        g
    }

    fn step(&mut self, observed: &[Observed]) -> Gated {
        self.step_with(observed, None, None)
    }

    /// Steps (and a minute each) until the decision's reason is `reason`.
    fn until(&mut self, observed: &[Observed], reason: Reason) -> Gated {
        for _ in 0..40 {
            let g = self.step(observed);
            if g.decision.reason == reason {
                return g;
            }
            self.now += jiff::SignedDuration::from_secs(61);
        }
        panic!("never reached {reason}: {:?}", self.status.last_decision);
    }
}

#[test]
fn waits_at_zero_naming_the_dependency_then_moves_when_it_succeeds() {
    let mut w = World::new(vec![DependencySpec {
        canary_service: Some("payments-v2".into()),
        ..dep("payments")
    }]);
    let going = [found(Phase::Progressing, 33, "payments-v2")];
    assert_eq!(w.step(&going).decision.kind, DecisionKind::Restart);
    let g = w.step(&going);
    let d = &g.decision;
    assert_eq!(d.kind, DecisionKind::Hold);
    assert_eq!(d.reason, Reason::WaitingForDependency);
    assert_eq!(d.weight, 0);
    assert_eq!(d.status.phase, Phase::Pending);
    assert_eq!(d.status.waiting_for, "shop/payments");
    assert!(
        d.message.contains("spec.dependsOn[0] shop/payments"),
        "{}",
        d.message
    );
    assert!(
        d.message
            .contains("Progressing at 33% with canary payments-v2"),
        "{}",
        d.message
    );
    assert!(
        d.waits_for_change,
        "no timer: the dependency's change wakes it"
    );
    assert_eq!(d.transitions.len(), 1, "an Event when the wait starts");
    assert!(g.problem.is_none());
    let entry = &d.status.dependencies[0];
    assert_eq!(
        (
            entry.phase.as_str(),
            entry.weight,
            entry.canary.as_str(),
            entry.satisfied
        ),
        ("Progressing", 33, "payments-v2", false)
    );
    assert_eq!(
        entry.required,
        "Succeeded with canary payments-v2 before step 1"
    );
    // Still waiting: no second Event, and the same status.
    let again = w.step(&going);
    assert!(again.decision.transitions.is_empty());
    assert_eq!(again.decision.weight, 0);
    // The dependency succeeds: the first step is taken, and said so.
    let done = [found(Phase::Succeeded, 100, "payments-v2")];
    let g = w.step(&done);
    assert_eq!(g.decision.kind, DecisionKind::SetWeight);
    assert_eq!(g.decision.weight, 20);
    assert!(g.decision.status.waiting_for.is_empty());
    assert!(g.decision.status.dependencies[0].satisfied);
    assert_eq!(
        g.decision.transitions[0].reason,
        Reason::DependencySatisfied
    );
}

#[test]
fn what_satisfies_a_requirement() {
    let succeeded = Requirement::from_spec(0, &dep("p"), "shop");
    let with_canary = Requirement::from_spec(
        0,
        &DependencySpec {
            canary_service: Some("p-v2".into()),
            ..dep("p")
        },
        "shop",
    );
    let half = Requirement::from_spec(
        0,
        &DependencySpec {
            min_weight: Some(50),
            ..dep("p")
        },
        "shop",
    );
    use Phase::*;
    let table: &[(&Requirement, Observed, bool)] = &[
        (&succeeded, found(Succeeded, 100, "p-v2"), true),
        (&succeeded, found(Progressing, 100, "p-v2"), false),
        (&succeeded, found(Paused, 50, "p-v2"), false),
        (&succeeded, found(RolledBack, 0, "p-v2"), false),
        (&succeeded, found(Invalid, 0, "p-v2"), false),
        (&with_canary, found(Succeeded, 100, "p-v2"), true),
        (&with_canary, found(Succeeded, 100, "p-v3"), false),
        (&half, found(Progressing, 50, "p-v3"), true),
        (&half, found(Paused, 60, "p-v3"), true),
        (&half, found(Progressing, 49, "p-v3"), false),
        (&half, found(Succeeded, 100, "p-v3"), true),
        (&half, found(Aborted, 0, "p-v3"), false),
        (&half, found(Pending, 0, "p-v3"), false),
        (&succeeded, Observed::NotFound, false),
        (&succeeded, Observed::Forbidden("no".into()), false),
        (
            &succeeded,
            Observed::NotWatched("namespace a".into()),
            false,
        ),
        (&succeeded, Observed::Cycle("a -> b -> a".into()), false),
    ];
    for (r, o, want) in table {
        assert_eq!(satisfied(r, o), *want, "{} / {o:?}", r.describe());
    }
}

#[test]
fn a_requirement_before_a_later_step_holds_at_the_current_weight() {
    let mut w = World::new(vec![DependencySpec {
        min_weight: Some(50),
        before_step: Some(2),
        ..dep("payments")
    }]);
    let low = [found(Phase::Progressing, 20, "payments-v2")];
    // Steps 1 and 2 (20%, pause) are not gated.
    let g = w.until(&low, Reason::WaitingForDependency);
    assert_eq!(g.decision.weight, 20);
    assert_eq!(g.decision.status.canary_weight, 20);
    assert_eq!(
        g.decision.status.current_step_index, 1,
        "stays on the pause before step 3"
    );
    assert_eq!(g.decision.status.phase, Phase::Progressing);
    assert!(
        g.decision.message.contains("at >= 50% before step 3"),
        "{}",
        g.decision.message
    );
    // The dependency reaches 50%: step 3 (50%) starts.
    let g = w.step(&[found(Phase::Progressing, 50, "payments-v2")]);
    assert_eq!(
        (g.decision.kind, g.decision.weight),
        (DecisionKind::SetWeight, 50)
    );
    assert_eq!(g.decision.status.current_step_index, 2);
    // Once past the gated step, the dependency falling back (a new canary
    // of its own) does not hold this Rollout.
    let g = w.step(&[found(Phase::Pending, 0, "payments-v3")]);
    assert_ne!(g.decision.reason, Reason::WaitingForDependency);
    assert_eq!(
        w.until(
            &[found(Phase::Pending, 0, "payments-v3")],
            Reason::AllStepsDone
        )
        .decision
        .weight,
        100
    );
}

#[test]
fn a_dependency_rolled_back_while_this_one_is_in_progress_rolls_it_back() {
    let mut w = World::new(vec![DependencySpec {
        min_weight: Some(20),
        ..dep("payments")
    }]);
    let going = [found(Phase::Progressing, 20, "payments-v2")];
    w.step(&going);
    assert_eq!(w.step(&going).decision.weight, 20);
    let g = w.step(&[found(Phase::RolledBack, 0, "payments-v2")]);
    let d = &g.decision;
    assert_eq!(d.kind, DecisionKind::Rollback);
    assert_eq!(d.reason, Reason::DependencyFailed);
    assert_eq!(d.weight, 0);
    assert_eq!(d.status.phase, Phase::RolledBack);
    assert!(
        d.message
            .contains("spec.dependsOn[0] shop/payments was RolledBack"),
        "{}",
        d.message
    );
    assert!(
        d.message.contains("error-rate failed"),
        "the dependency's own cause: {}",
        d.message
    );
    assert!(
        d.transitions
            .iter()
            .any(|t| t.warning && t.reason == Reason::DependencyFailed)
    );
    // And it stays rolled back (a retry starts it again).
    let g = w.step(&[found(Phase::RolledBack, 0, "payments-v2")]);
    assert_eq!(
        (g.decision.weight, g.decision.status.phase),
        (0, Phase::RolledBack)
    );
}

#[test]
fn a_dependency_aborted_while_this_one_waits_at_zero_rolls_it_back_too() {
    let mut w = World::new(vec![dep("payments")]);
    let going = [found(Phase::Paused, 50, "payments-v2")];
    w.step(&going);
    assert_eq!(w.step(&going).decision.reason, Reason::WaitingForDependency);
    let g = w.step(&[found(Phase::Aborted, 0, "payments-v2")]);
    assert_eq!(g.decision.kind, DecisionKind::Rollback);
    assert!(
        g.decision.message.contains("was Aborted"),
        "{}",
        g.decision.message
    );
}

#[test]
fn a_dependency_already_failed_when_first_seen_is_waited_for_not_followed() {
    let mut w = World::new(vec![dep("payments")]);
    let failed = [found(Phase::RolledBack, 0, "payments-v2")];
    w.step(&failed);
    let g = w.step(&failed);
    assert_eq!(g.decision.kind, DecisionKind::Hold);
    assert_eq!(g.decision.reason, Reason::WaitingForDependency);
    assert!(
        g.decision.message.contains("RolledBack at 0%"),
        "{}",
        g.decision.message
    );
}

#[test]
fn a_failure_of_another_canary_than_the_one_required_is_not_followed() {
    let mut w = World::new(vec![DependencySpec {
        canary_service: Some("payments-v2".into()),
        ..dep("payments")
    }]);
    w.step(&[found(Phase::Succeeded, 100, "payments-v2")]);
    assert_eq!(
        w.step(&[found(Phase::Succeeded, 100, "payments-v2")])
            .decision
            .weight,
        20
    );
    w.step(&[found(Phase::Progressing, 5, "payments-v3")]);
    let g = w.step(&[found(Phase::RolledBack, 0, "payments-v3")]);
    assert_ne!(g.decision.kind, DecisionKind::Rollback);
}

#[test]
fn on_failure_hold_keeps_the_current_weight() {
    let mut w = World::new(vec![DependencySpec {
        min_weight: Some(20),
        on_failure: Some(OnDependencyFailure::Hold),
        ..dep("payments")
    }]);
    let going = [found(Phase::Progressing, 20, "payments-v2")];
    w.step(&going);
    assert_eq!(w.step(&going).decision.weight, 20);
    let failed = [found(Phase::RolledBack, 0, "payments-v2")];
    for _ in 0..3 {
        let g = w.step(&failed);
        assert_eq!(g.decision.kind, DecisionKind::Hold);
        assert_eq!(g.decision.reason, Reason::DependencyFailedHolding);
        assert_eq!(g.decision.weight, 20);
        assert_eq!(g.decision.status.phase, Phase::Progressing);
        w.now += jiff::SignedDuration::from_secs(120);
    }
    // Retried and meeting the requirement again: it moves on.
    let g = w.until(&going, Reason::StepAdvanced);
    assert!(g.decision.status.current_step_index >= 1);
}

#[test]
fn harm_found_by_its_own_analysis_rolls_back_while_it_waits() {
    let mut w = World::with(spec(
        vec![DependencySpec {
            min_weight: Some(50),
            before_step: Some(2),
            ..dep("payments")
        }],
        true,
    ));
    let low = [found(Phase::Progressing, 20, "payments-v2")];
    let bad = |at| AnalysisRound {
        at,
        outcomes: vec![MetricOutcome {
            name: "error-rate".into(),
            outcome: QueryOutcome::Value(0.5),
        }],
        comparisons: vec![],
    };
    w.step(&low);
    assert_eq!(w.step(&low).decision.weight, 20);
    let mut rolled = None;
    for _ in 0..4 {
        w.now += jiff::SignedDuration::from_secs(31);
        let now = w.now;
        let g = w.step_with(&low, None, Some(bad(now)));
        if g.decision.kind == DecisionKind::Rollback {
            rolled = Some(g);
            break;
        }
    }
    let g = rolled.expect("the failing analysis rolls back");
    assert_eq!(g.decision.weight, 0);
    assert_eq!(g.decision.reason, Reason::AnalysisFailed);
}

#[test]
fn an_abort_goes_through_and_a_promote_waits_for_the_dependency() {
    let mut w = World::new(vec![dep("payments")]);
    let going = [found(Phase::Progressing, 5, "payments-v2")];
    w.step(&going);
    let g = w.step_with(&going, Some(ManualAction::PromoteFull), None);
    assert_eq!(
        (g.decision.kind, g.decision.weight),
        (DecisionKind::Hold, 0)
    );
    assert!(
        g.decision.action.is_none(),
        "the annotation stays for later"
    );
    assert!(
        g.decision.message.contains("the promote waits"),
        "{}",
        g.decision.message
    );
    let g = w.step_with(&going, Some(ManualAction::Abort), None);
    assert_eq!(g.decision.kind, DecisionKind::Abort);
    assert_eq!(g.decision.status.phase, Phase::Aborted);
}

#[test]
fn a_promote_full_past_a_later_gate_is_held_at_the_gate() {
    let mut w = World::new(vec![DependencySpec {
        before_step: Some(2),
        ..dep("payments")
    }]);
    let going = [found(Phase::Progressing, 5, "payments-v2")];
    w.step(&going);
    assert_eq!(w.step(&going).decision.weight, 20);
    let g = w.step_with(&going, Some(ManualAction::PromoteFull), None);
    assert_eq!(g.decision.kind, DecisionKind::Hold);
    assert_eq!(g.decision.weight, 20);
    assert_ne!(g.decision.status.phase, Phase::Succeeded);
    assert!(g.decision.status.current_step_index <= 2);
}

#[test]
fn problems_are_named_by_field_and_hold_traffic() {
    let table = [
        (
            Observed::NotFound,
            "DependencyNotFound",
            "Rollout shop/payments not found",
        ),
        (
            Observed::Forbidden("rollouts is forbidden".into()),
            "DependencyForbidden",
            "may not read Rollouts in namespace shop",
        ),
        (
            Observed::NotWatched("only namespace other".into()),
            "DependencyNotWatched",
            "not watched by the operator",
        ),
        (
            Observed::Cycle("shop/checkout -> shop/payments -> shop/checkout".into()),
            "DependencyCycle",
            "dependency cycle: shop/checkout -> shop/payments",
        ),
    ];
    for (o, reason, words) in table {
        let mut w = World::new(vec![dep("payments")]);
        w.step(std::slice::from_ref(&o));
        let g = w.step(std::slice::from_ref(&o));
        let (r, m) = g.problem.clone().expect("a problem");
        assert_eq!(r, reason);
        assert!(m.starts_with("spec.dependsOn[0]: "), "{m}");
        assert!(m.contains(words), "{m}");
        assert_eq!(g.decision.weight, 0);
        assert_eq!(g.decision.reason, Reason::WaitingForDependency);
    }
}

#[test]
fn a_dependency_gone_after_its_gate_or_the_end_is_no_problem() {
    let mut w = World::new(vec![dep("payments")]);
    let done = [found(Phase::Succeeded, 100, "payments-v2")];
    w.step(&done);
    assert_eq!(w.step(&done).decision.weight, 20, "the gate is passed");
    let g = w.step(&[Observed::NotFound]);
    assert!(g.problem.is_none(), "{:?}", g.problem);
    assert_ne!(g.decision.reason, Reason::WaitingForDependency);
    w.until(&[Observed::NotFound], Reason::AllStepsDone);
    let g = w.step(&[Observed::NotFound]);
    assert_eq!(g.decision.status.phase, Phase::Succeeded);
    assert!(g.problem.is_none(), "a finished release stays Ready");
    assert_eq!(
        g.decision.status.dependencies[0].phase, "NotFound",
        "still shown"
    );
}

#[test]
fn a_terminal_rollout_and_a_restart_are_left_alone() {
    let mut w = World::new(vec![dep("payments")]);
    let done = [found(Phase::Succeeded, 100, "payments-v2")];
    w.until(&done, Reason::AllStepsDone);
    let g = w.step(&[found(Phase::RolledBack, 0, "payments-v2")]);
    assert_eq!(
        (g.decision.weight, g.decision.status.phase),
        (100, Phase::Succeeded)
    );
    // A new canary restarts (weight 0) even while a dependency is missing.
    w.spec.canary.service = "checkout-v3".into();
    w.plan = validate(&w.spec).unwrap();
    let g = w.step(&[Observed::NotFound]);
    assert_eq!(g.decision.kind, DecisionKind::Restart);
}

#[test]
fn validation_catches_what_cel_cannot() {
    let s = spec(
        vec![
            DependencySpec {
                before_step: Some(4),
                ..dep("payments")
            },
            DependencySpec {
                namespace: Some("shop".into()),
                ..dep("checkout")
            },
            DependencySpec {
                namespace: Some("other".into()),
                before_step: Some(3),
                ..dep("checkout")
            },
        ],
        false,
    );
    let plan = validate(&s).unwrap();
    let errors = super::validate(&s, &plan, "shop", "checkout");
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["spec.dependsOn[0].beforeStep", "spec.dependsOn[1]"]
    );
    assert!(errors[0].message.contains("past the last step"));
}

#[test]
fn cycles_are_found_through_the_chain() {
    let edges = |pairs: &[(&str, &[&str])]| -> HashMap<Key, Vec<Key>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    };
    type Edges<'a> = &'a [(&'a str, &'a [&'a str])];
    let table: &[(Edges, Option<&str>)] = &[
        (&[("a", &["b"]), ("b", &[])], None),
        (&[("a", &["b"]), ("b", &["a"])], Some("a -> b -> a")),
        (
            &[("a", &["b"]), ("b", &["c"]), ("c", &["a"])],
            Some("a -> b -> c -> a"),
        ),
        (&[("a", &["a"])], Some("a -> a")),
        // A cycle that does not pass through `a` is not a's problem here.
        (&[("a", &["b"]), ("b", &["c"]), ("c", &["b"])], None),
        (
            &[("a", &["b", "c"]), ("b", &["d"]), ("c", &["d"]), ("d", &[])],
            None,
        ),
        (
            &[("a", &["b", "c"]), ("b", &["d"]), ("c", &["a"])],
            Some("a -> c -> a"),
        ),
    ];
    for (e, want) in table {
        let path = cycle_through("a", &edges(e)).map(|p| p.join(" -> "));
        assert_eq!(path.as_deref(), *want, "{e:?}");
    }
    // The requirement the way back starts with is the one marked.
    let reqs = [
        Requirement::from_spec(0, &dep("b"), "shop"),
        Requirement::from_spec(1, &dep("c"), "shop"),
    ];
    let mut observed = vec![
        found(Phase::Progressing, 5, "b-v2"),
        found(Phase::Progressing, 5, "c-v2"),
    ];
    let e = edges(&[
        ("shop/a", &["shop/b", "shop/c"]),
        ("shop/b", &[]),
        ("shop/c", &["shop/a"]),
    ]);
    mark_cycle("shop/a", &reqs, &e, &mut observed);
    assert!(!matches!(observed[0], Observed::Cycle(_)), "{observed:?}");
    assert!(
        matches!(&observed[1], Observed::Cycle(p) if p == "shop/a -> shop/c -> shop/a"),
        "{observed:?}"
    );
}

#[test]
fn requirements_default_to_succeeded_before_any_traffic_and_rollback() {
    let r = Requirement::from_spec(2, &dep("payments"), "shop");
    assert_eq!(
        (
            r.index,
            r.namespace.as_str(),
            r.min_weight,
            r.before_step,
            r.on_failure
        ),
        (2, "shop", None, 0, OnDependencyFailure::Rollback)
    );
    assert_eq!(r.field(), "spec.dependsOn[2]");
}

#[test]
fn a_pre_rollout_check_waits_for_the_dependency_before_it_runs() {
    use crate::api::CheckPoint;
    use crate::plan::checks::{CheckKind, PlanCheck};
    let mut w = World::new(vec![dep("payments")]);
    w.plan.checks = vec![PlanCheck {
        name: "acceptance".into(),
        at: vec![CheckPoint::PreRollout],
        failure_limit: 0,
        interval: Duration::from_secs(10),
        kind: CheckKind::Job,
    }];
    let going = [found(Phase::Progressing, 33, "payments-v2")];
    w.step(&going);
    for _ in 0..3 {
        let g = w.step(&going);
        assert_eq!(g.decision.reason, Reason::WaitingForDependency);
        // An acceptance test of the new checkout would run against the old
        // payments: it is not started while the dependency is not met.
        assert!(
            g.decision.status.checks.is_empty(),
            "{:?}",
            g.decision.status.checks
        );
        w.now += jiff::SignedDuration::from_secs(30);
    }
    let done = [found(Phase::Succeeded, 100, "payments-v2")];
    let g = w.step(&done);
    assert_eq!(g.decision.weight, 0, "the check runs before any traffic");
    assert_eq!(
        g.decision
            .status
            .checks
            .iter()
            .map(|c| (c.name.as_str(), c.point.as_str()))
            .collect::<Vec<_>>(),
        [("acceptance", "preRollout")],
        "{:?}",
        g.decision
    );
}

#[test]
fn following_a_dependency_back_runs_the_post_rollback_checks() {
    use crate::api::CheckPoint;
    use crate::plan::checks::{CheckKind, PlanCheck};
    let mut w = World::new(vec![DependencySpec {
        min_weight: Some(20),
        ..dep("payments")
    }]);
    w.plan.checks = vec![PlanCheck {
        name: "page-oncall".into(),
        at: vec![CheckPoint::PostRollback],
        failure_limit: 0,
        interval: Duration::from_secs(10),
        kind: CheckKind::Webhook,
    }];
    let going = [found(Phase::Progressing, 20, "payments-v2")];
    w.step(&going);
    assert_eq!(w.step(&going).decision.weight, 20);
    let g = w.step(&[found(Phase::RolledBack, 0, "payments-v2")]);
    let d = &g.decision;
    assert_eq!(d.reason, Reason::DependencyFailed);
    // As after any rollback: the check is in status and started, and the
    // operator comes back to run it.
    assert_eq!(
        d.status
            .checks
            .iter()
            .map(|c| (c.name.as_str(), c.point.as_str()))
            .collect::<Vec<_>>(),
        [("page-oncall", "postRollback")]
    );
    assert!(
        d.transitions
            .iter()
            .any(|t| t.reason == Reason::CheckStarted),
        "{:?}",
        d.transitions
    );
    assert!(!d.waits_for_change && d.requeue_after < IDLE_REQUEUE);
}
