//! Table and property tests of the pure engine. A small simulated world
//! carries out each decision (the router carries exactly the weight asked
//! for) and moves a virtual clock, so whole rollouts run in microseconds.

use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;

use super::record::round_evidence;
use super::*;
use crate::analysis::sequential::Tolerance;
use crate::analysis::{CompareOutcome, CountsOutcome, QueryOutcome, fmt_num};
use crate::api::Verdict;
use crate::plan::{PlanCompare, PlanMetric, PlanStep};

mod checks;
mod ramp;

fn t0() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn plan(steps: Vec<PlanStep>) -> Plan {
    Plan {
        steps,
        interval: Duration::from_secs(30),
        metrics: vec![PlanMetric {
            name: "error-rate".into(),
            query: "q".into(),
            min: None,
            max: Some(0.01),
            failure_limit: 1,
        }],
        consecutive_error_limit: 4,
        prometheus: Some("http://p".into()),
        paused: false,
        canary_ref: "app-v2".into(),
        compare: vec![],
        confidence: 0.99,
        rollback_confidence: 0.95,
        max_extra_failures: None,
        routes: vec![],
        blue_green: None,
        stable_scale_down_after: None,
        pause_deadline: None,
        canary_scale_down_on_rollback: false,
        router: "gatewayAPI",
        checks: vec![],
    }
}

fn default_plan() -> Plan {
    plan(crate::plan::compile::default_steps())
}

/// A simulated cluster: a router that carries what it is told, a canary
/// whose readiness and metric outcomes the test chooses.
struct World {
    plan: Plan,
    status: RolloutStatus,
    weight: u8,
    now: Timestamp,
    ready: bool,
    decisions: Vec<Decision>,
    /// Simulated traffic for comparisons: requests/s, stable and canary
    /// error rates, and cumulative (canary n, f, stable n, f).
    traffic: Traffic,
    /// What every due check answers (`None`: no answer yet, e.g. a Job
    /// still running).
    check_answer: Option<super::checks::CheckOutcome>,
}

struct Traffic {
    rps: f64,
    ps: f64,
    pc: f64,
    counts: (f64, f64, f64, f64),
    rng: crate::simulate::rng::Rng,
    last: Option<Timestamp>,
    /// The canary's queries return no series (Prometheus lost them).
    blackout: bool,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            rps: 0.0,
            ps: 0.0,
            pc: 0.0,
            counts: (0.0, 0.0, 0.0, 0.0),
            rng: crate::simulate::rng::Rng::new(0),
            last: None,
            blackout: false,
        }
    }
}

impl Traffic {
    fn failures(&mut self, n: f64, p: f64) -> f64 {
        self.rng.binomial(n as u64, p) as f64
    }
    /// Serve the traffic between the last call and `now` at `weight`.
    fn serve(&mut self, now: Timestamp, weight: u8) {
        let dt = self
            .last
            .map(|l| l.duration_until(now).as_secs_f64())
            .unwrap_or(0.0);
        self.last = Some(now);
        let total = (self.rps * dt).round();
        let canary = (total * weight as f64 / 100.0).round();
        let stable = total - canary;
        let (cf, sf) = (
            self.failures(canary, self.pc),
            self.failures(stable, self.ps),
        );
        self.counts.0 += canary;
        self.counts.1 += cf;
        self.counts.2 += stable;
        self.counts.3 += sf;
    }
}

impl World {
    fn new(plan: Plan) -> Self {
        World {
            plan,
            status: RolloutStatus::default(),
            weight: 0,
            now: t0(),
            ready: true,
            decisions: Vec::new(),
            traffic: Traffic::default(),
            check_answer: Some(super::checks::CheckOutcome::Passed),
        }
    }

    /// The answers of the checks due now.
    fn check_results(&self) -> Vec<super::checks::CheckResult> {
        let Some(answer) = &self.check_answer else {
            return vec![];
        };
        super::checks::due(&self.status, self.now)
            .into_iter()
            .map(|d| super::checks::CheckResult {
                name: d.name,
                point: d.point,
                step: d.step,
                outcome: answer.clone(),
                job_name: Some(format!("job-{}", d.attempt)),
                http_status: None,
                result: format!("{answer:?}"),
                message: "answer".into(),
            })
            .collect()
    }

    /// One reconcile: run analysis when due with `metric`, decide, carry out.
    fn step(
        &mut self,
        metric: &dyn Fn(u8) -> QueryOutcome,
        action: Option<ManualAction>,
    ) -> &Decision {
        if !self.plan.compare.is_empty() {
            let (now, weight) = (self.now, self.weight);
            self.traffic.serve(now, weight);
        }
        let analysis =
            analysis_due(&self.plan, &self.status, self.weight, self.now).then(|| AnalysisRound {
                at: self.now,
                outcomes: vec![MetricOutcome {
                    name: "error-rate".into(),
                    outcome: metric(self.weight),
                }],
                comparisons: self.comparisons(),
            });
        let obs = Observation {
            generation: 1,
            canary: if self.ready {
                Readiness::Ready
            } else {
                Readiness::NotReady("0/1 available".into())
            },
            actual_weight: Some(self.weight),
            analysis,
            action,
            checks: self.check_results(),
        };
        let d = decide(&self.plan, &self.status, &obs, self.now);
        self.weight = d.weight;
        self.status = d.status.clone();
        // What the controller records after carrying out the scaling.
        self.status.stable_scaled_down |= d.scale.scale_down_stable;
        self.status.canary_scaled_down |= d.scale.scale_down_canary;
        self.status.canary_weight = d.weight as i32;
        self.now = self
            .now
            .checked_add(
                SignedDuration::try_from(d.requeue_after.max(Duration::from_millis(100))).unwrap(),
            )
            .unwrap();
        self.decisions.push(d);
        self.decisions.last().unwrap()
    }

    fn comparisons(&self) -> Vec<CompareOutcome> {
        let (cn, cf, sn, sf) = self.traffic.counts;
        self.plan
            .compare
            .iter()
            .map(|c| CompareOutcome {
                name: c.name.clone(),
                canary: if self.traffic.blackout {
                    CountsOutcome::NoData("requests: no series".into())
                } else {
                    CountsOutcome::from_queries(QueryOutcome::Value(cn), QueryOutcome::Value(cf))
                },
                stable: CountsOutcome::from_queries(
                    QueryOutcome::Value(sn),
                    QueryOutcome::Value(sf),
                ),
            })
            .collect()
    }

    /// Reconcile until a terminal phase or `max` reconciles.
    fn run(&mut self, metric: &dyn Fn(u8) -> QueryOutcome, max: usize) {
        for _ in 0..max {
            self.step(metric, None);
            if self.status.phase.is_terminal() {
                return;
            }
        }
    }

    fn weights(&self) -> Vec<u8> {
        let mut out: Vec<u8> = Vec::new();
        for d in &self.decisions {
            if out.last() != Some(&d.weight) {
                out.push(d.weight);
            }
        }
        out
    }
}

fn healthy(_: u8) -> QueryOutcome {
    QueryOutcome::Value(0.001)
}
fn failing(_: u8) -> QueryOutcome {
    QueryOutcome::Value(0.2)
}
fn no_data(_: u8) -> QueryOutcome {
    QueryOutcome::NoData("query returned no series".into())
}
fn down(_: u8) -> QueryOutcome {
    QueryOutcome::Error("connection refused".into())
}

#[test]
fn healthy_canary_is_promoted_through_every_default_step() {
    let mut w = World::new(default_plan());
    w.run(&healthy, 200);
    assert_eq!(w.status.phase, Phase::Succeeded);
    assert_eq!(w.weights(), vec![0, 5, 33, 50, 100]);
    assert_eq!(w.status.step, "8/8");
    // Four 5-minute pauses, each needing a passing analysis.
    let done_at = w
        .status
        .last_decision
        .as_ref()
        .unwrap()
        .at
        .as_ref()
        .unwrap()
        .0;
    let took = done_at.duration_since(t0());
    assert!(
        took >= SignedDuration::from_mins(20) && took < SignedDuration::from_mins(21),
        "took {took:?}"
    );
    let kinds: Vec<_> = w.decisions.iter().map(|d| d.kind).collect();
    assert_eq!(kinds.first(), Some(&DecisionKind::Restart));
    assert_eq!(kinds.last(), Some(&DecisionKind::Complete));
}

#[test]
fn failing_canary_is_rolled_back_after_more_than_failure_limit_failures() {
    let mut w = World::new(default_plan());
    w.run(&failing, 100);
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert_eq!(w.weight, 0);
    let last = w.decisions.last().unwrap();
    assert_eq!(last.kind, DecisionKind::Rollback);
    assert_eq!(last.reason, "AnalysisFailed");
    assert!(
        last.message.contains("error-rate = 0.2"),
        "{}",
        last.message
    );
    assert!(last.message.contains("<= 0.01"), "{}", last.message);
    // failureLimit 1: exactly two failed evaluations.
    assert_eq!(w.status.analysis[0].failures, 2);
    assert_eq!(w.weights(), vec![0, 5, 0]);
    assert!(
        last.transitions
            .iter()
            .any(|t| t.warning && t.reason == "AnalysisFailed")
    );
}

#[test]
fn no_data_holds_the_weight_and_says_so_then_proceeds_on_data() {
    let mut w = World::new(default_plan());
    for _ in 0..60 {
        w.step(&no_data, None);
    }
    assert_eq!(w.weight, 5);
    assert_eq!(w.status.phase, Phase::Progressing);
    let last = w.decisions.last().unwrap();
    assert_eq!(
        (last.kind, last.reason),
        (DecisionKind::Hold, Reason::WaitingForData)
    );
    assert!(
        last.message.contains("waiting for data"),
        "{}",
        last.message
    );
    assert_eq!(w.status.verdict, "NoData");
    w.run(&healthy, 200);
    assert_eq!(w.status.phase, Phase::Succeeded);
}

#[test]
fn backend_errors_hold_then_roll_back_at_the_consecutive_limit() {
    let mut w = World::new(default_plan());
    let mut rounds = 0;
    for _ in 0..200 {
        let had = w.status.consecutive_errors;
        w.step(&down, None);
        if w.status.consecutive_errors > had {
            rounds += 1;
        }
        if w.status.phase.is_terminal() {
            break;
        }
        if w.status.current_step_index > 0 {
            assert_eq!(w.weight, 5, "holds at its weight while the backend is down");
        }
    }
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert_eq!(w.decisions.last().unwrap().reason, "MetricsUnavailable");
    assert_eq!(rounds, 4, "the 4th consecutive error rolls back");
    assert_eq!(w.status.consecutive_errors, 4);
}

#[test]
fn one_good_round_resets_the_consecutive_error_count() {
    let mut w = World::new(default_plan());
    let calls = std::cell::Cell::new(0);
    let flaky = |_w: u8| {
        calls.set(calls.get() + 1);
        if calls.get() % 3 == 0 {
            QueryOutcome::Value(0.0)
        } else {
            QueryOutcome::Error("timeout".into())
        }
    };
    w.run(&flaky, 400);
    assert_eq!(w.status.phase, Phase::Succeeded, "{}", w.status.message);
}

#[test]
fn weight_is_not_raised_to_an_unavailable_canary() {
    let mut w = World::new(default_plan());
    w.ready = false;
    for _ in 0..10 {
        w.step(&healthy, None);
    }
    assert_eq!(w.weight, 0);
    assert_eq!(w.status.phase, Phase::Pending);
    assert!(w.status.message.contains("waiting for the canary"));
    w.ready = true;
    w.step(&healthy, None);
    assert_eq!(w.weight, 5);
}

#[test]
fn manual_pause_waits_for_promote() {
    let p = plan(vec![
        PlanStep::SetWeight(10),
        PlanStep::Pause(None),
        PlanStep::SetWeight(100),
    ]);
    let mut w = World::new(p);
    for _ in 0..50 {
        w.step(&healthy, None);
    }
    assert_eq!((w.weight, w.status.phase), (10, Phase::Paused));
    let d = w.step(&healthy, Some(ManualAction::Promote)).clone();
    assert_eq!(d.kind, DecisionKind::Promote);
    assert!(d.action.as_ref().unwrap().accepted);
    w.run(&healthy, 10);
    assert_eq!((w.weight, w.status.phase), (100, Phase::Succeeded));
}

#[test]
fn promote_is_refused_while_paused_by_spec_and_weight_holds() {
    let mut p = default_plan();
    let mut w = World::new(p.clone());
    for _ in 0..3 {
        w.step(&healthy, None);
    }
    assert_eq!(w.weight, 5);
    p.paused = true;
    w.plan = p;
    let d = w.step(&healthy, Some(ManualAction::Promote)).clone();
    assert!(!d.action.unwrap().accepted);
    for _ in 0..100 {
        w.step(&healthy, None);
    }
    assert_eq!((w.weight, w.status.phase), (5, Phase::Paused));
    assert_eq!(w.decisions.last().unwrap().reason, "PausedBySpec");
}

#[test]
fn analysis_keeps_running_while_paused_and_still_rolls_back() {
    let mut p = default_plan();
    p.paused = true;
    let mut w = World::new(default_plan());
    for _ in 0..3 {
        w.step(&healthy, None);
    }
    w.plan = p;
    w.run(&failing, 100);
    assert_eq!(w.status.phase, Phase::RolledBack);
}

#[test]
fn abort_returns_all_traffic_to_stable_and_retry_starts_over() {
    let mut w = World::new(default_plan());
    for _ in 0..30 {
        w.step(&healthy, None);
    }
    assert!(w.weight > 0);
    let d = w.step(&healthy, Some(ManualAction::Abort)).clone();
    assert_eq!(
        (d.kind, d.weight, d.status.phase),
        (DecisionKind::Abort, 0, Phase::Aborted)
    );
    // A second abort is refused, nothing changes.
    let d = w.step(&healthy, Some(ManualAction::Abort)).clone();
    assert!(!d.action.unwrap().accepted);
    assert_eq!(d.weight, 0);
    let d = w.step(&healthy, Some(ManualAction::Retry)).clone();
    assert_eq!(
        (d.kind, d.weight, d.status.current_step_index),
        (DecisionKind::Restart, 0, 0)
    );
    assert!(d.status.analysis.is_empty());
    w.run(&healthy, 200);
    assert_eq!(w.status.phase, Phase::Succeeded);
}

#[test]
fn retry_is_refused_while_progressing() {
    let mut w = World::new(default_plan());
    w.step(&healthy, None);
    w.step(&healthy, None);
    let d = w.step(&healthy, Some(ManualAction::Retry)).clone();
    let a = d.action.unwrap();
    assert!(!a.accepted);
    assert!(a.message.contains("after a rollback or abort"));
}

#[test]
fn promote_full_goes_to_100_at_once() {
    let mut w = World::new(default_plan());
    w.step(&healthy, None);
    w.step(&healthy, None);
    let d = w.step(&healthy, Some(ManualAction::PromoteFull)).clone();
    assert_eq!(
        (d.kind, d.weight, d.status.phase),
        (DecisionKind::Complete, 100, Phase::Succeeded)
    );
}

#[test]
fn a_new_canary_starts_over_with_all_traffic_on_stable() {
    let mut w = World::new(default_plan());
    w.run(&healthy, 200);
    assert_eq!(w.weight, 100);
    w.plan.canary_ref = "app-v3".into();
    let d = w.step(&healthy, None).clone();
    assert_eq!(
        (d.kind, d.reason, d.weight),
        (DecisionKind::Restart, Reason::NewCanary, 0)
    );
    assert_eq!(d.status.current_step_index, 0);
    w.run(&healthy, 200);
    assert_eq!(w.weights(), vec![0, 5, 33, 50, 100, 0, 5, 33, 50, 100]);
}

#[test]
fn drifted_route_weight_is_put_back_to_the_plan() {
    let mut w = World::new(default_plan());
    for _ in 0..3 {
        w.step(&healthy, None);
    }
    assert_eq!(w.weight, 5);
    w.weight = 60; // someone edited the route by hand
    let d = w.step(&healthy, None);
    assert_eq!(d.weight, 5);
}

#[test]
fn a_failed_round_within_the_limit_blocks_the_step_until_a_pass() {
    // The pause is as long as one interval, so the failed round is the
    // latest one when the pause ends.
    let mut w = World::new(plan(vec![
        PlanStep::SetWeight(20),
        PlanStep::Pause(Some(Duration::from_secs(30))),
        PlanStep::SetWeight(100),
    ]));
    let calls = std::cell::Cell::new(0);
    // First evaluation fails (limit 1 tolerates it), later ones pass.
    let once_bad = |_w: u8| {
        calls.set(calls.get() + 1);
        if calls.get() == 1 {
            QueryOutcome::Value(0.5)
        } else {
            QueryOutcome::Value(0.0)
        }
    };
    w.run(&once_bad, 400);
    assert_eq!(w.status.phase, Phase::Succeeded);
    assert_eq!(w.status.analysis[0].failures, 1);
    assert!(w.decisions.iter().any(|d| d.reason == "WaitingForPass"));
}

#[test]
fn terminal_rollout_keeps_its_deciding_record() {
    let mut w = World::new(default_plan());
    w.run(&failing, 100);
    let record = w.status.last_decision.clone().unwrap();
    for _ in 0..3 {
        w.step(&failing, None);
    }
    assert_eq!(
        w.status.last_decision.as_ref().unwrap().reason,
        record.reason
    );
    assert_eq!(w.weight, 0);
}

#[test]
fn human_durations() {
    assert_eq!(human(Duration::from_secs(45)), "45s");
    assert_eq!(human(Duration::from_secs(120)), "2m");
    assert_eq!(human(Duration::from_secs(80)), "1m20s");
    assert_eq!(human(Duration::from_secs(5400)), "1h30m");
    assert_eq!(human(Duration::from_secs(3 * 86400)), "3d0h");
}

// ------------------------------------------------------------- comparisons

fn compare_plan(tolerance: f64, budget: Option<f64>) -> Plan {
    let mut p = default_plan();
    p.metrics.clear();
    p.compare = vec![PlanCompare {
        name: "http-errors".into(),
        requests: "r".into(),
        failures: "f".into(),
        tolerance: Tolerance {
            absolute: tolerance,
            relative: 0.0,
            fixed: false,
        },
    }];
    p.max_extra_failures = budget;
    p
}

fn with_traffic(plan: Plan, rps: f64, ps: f64, pc: f64, seed: u64) -> World {
    let mut w = World::new(plan);
    w.traffic = Traffic {
        rps,
        ps,
        pc,
        rng: crate::simulate::rng::Rng::new(seed),
        ..Default::default()
    };
    w
}

/// A counted threshold metric: the canary's error rate against a fixed
/// limit, stable not part of it.
fn limit_plan(max: f64) -> Plan {
    let mut p = compare_plan(0.0, None);
    p.compare[0].name = "error-rate".into();
    p.compare[0].tolerance = Tolerance::limit(max);
    p
}

#[test]
fn a_counted_metric_rolls_back_a_30_percent_canary_at_the_first_step_naming_its_limit() {
    let mut w = with_traffic(limit_plan(0.05), 50.0, 0.01, 0.3, 5);
    w.run(&healthy, 500);
    assert_eq!(w.status.phase, Phase::RolledBack);
    let last = w.decisions.last().unwrap();
    assert_eq!(last.reason, "CanaryWorse");
    assert_eq!(w.weights(), vec![0, 5, 0], "rolled back at the 5% step");
    let c = &w.status.comparisons[0];
    assert_eq!(c.verdict, "Harm");
    assert_eq!(
        (c.stable_requests, c.tolerance.as_str()),
        (0.0, "at most 0.05")
    );
    for needle in ["limit 5%", "above the limit", "fails more often than 5%"] {
        assert!(last.message.contains(needle), "{needle}: {}", last.message);
    }
    assert!(!last.message.contains("stable"), "{}", last.message);
    // At its first look with counts, not after failureLimit bad looks.
    let reasons: Vec<&str> = w.decisions.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["Started", "SetWeight", "StepAdvanced", "CanaryWorse"]
    );
}

#[test]
fn a_counted_metric_promotes_a_canary_under_its_limit_whatever_stable_does() {
    // Stable fails 20% of its requests: it does not matter to a limit.
    let mut w = with_traffic(limit_plan(0.05), 50.0, 0.2, 0.01, 6);
    w.run(&healthy, 5000);
    assert_eq!(w.status.phase, Phase::Succeeded, "{:?}", w.decisions.last());
    let c = &w.status.comparisons[0];
    assert_eq!(c.verdict, "Fine");
    assert!(c.message.contains("within the limit"), "{}", c.message);
    // With a flawless stable the limit says the same...
    let mut w = with_traffic(limit_plan(0.05), 50.0, 0.0, 0.01, 6);
    w.run(&healthy, 5000);
    assert_eq!(w.status.phase, Phase::Succeeded, "{:?}", w.decisions.last());
    // ...while the same canary compared with that stable (no tolerance)
    // is worse.
    let mut w = with_traffic(compare_plan(0.0, None), 50.0, 0.0, 0.01, 6);
    w.run(&healthy, 5000);
    assert_eq!(w.status.phase, Phase::RolledBack);
}

#[test]
fn ten_times_worse_canary_is_rolled_back_at_the_first_step_with_its_numbers() {
    let mut w = with_traffic(compare_plan(0.005, None), 50.0, 0.005, 0.05, 3);
    w.run(&healthy, 500);
    assert_eq!(w.status.phase, Phase::RolledBack);
    let last = w.decisions.last().unwrap();
    assert_eq!(last.reason, "CanaryWorse");
    assert_eq!(w.weights(), vec![0, 5, 0], "rolled back at the 5% step");
    let c = &w.status.comparisons[0];
    assert_eq!(c.verdict, "Harm");
    assert!(c.harm_evidence >= c.harm_evidence_bar && c.canary_rate > c.stable_rate);
    // A rollback needs 95% confidence, a promotion 99%.
    assert_eq!((c.harm_evidence_bar, c.evidence_bar), (20.0, 100.0));
    assert!(
        last.message.contains("canary") && last.message.contains("vs stable"),
        "{}",
        last.message
    );
    // Readable on its own: what the evidence says, against what it needs.
    let needs = format!(
        "(needs {}× for 95% confidence)",
        fmt_num(c.harm_evidence_bar)
    );
    let says = format!(
        "the evidence that the canary is worse is {}× {needs}",
        fmt_num(c.harm_evidence)
    );
    assert!(last.message.contains(&says), "{}", last.message);
    assert!(
        last.message.contains("more of the canary's requests fail"),
        "{}",
        last.message
    );
    assert!(
        w.traffic.counts.1 < 40.0,
        "{} failed canary requests",
        w.traffic.counts.1
    );
}

#[test]
fn a_healthy_canary_is_promoted_early_on_evidence() {
    // Equal rates, a tolerance of 0.5 points: the evidence says "fine"
    // before the 5-minute pauses end.
    let mut w = with_traffic(compare_plan(0.005, None), 200.0, 0.002, 0.002, 5);
    w.run(&healthy, 2000);
    assert_eq!(w.status.phase, Phase::Succeeded);
    assert!(
        w.decisions.iter().any(|d| d.reason == "EvidenceFine"),
        "never advanced early"
    );
    let done = w
        .status
        .last_decision
        .as_ref()
        .unwrap()
        .at
        .as_ref()
        .unwrap()
        .0;
    assert!(
        done.duration_since(t0()) < SignedDuration::from_mins(20),
        "took {:?}",
        done.duration_since(t0())
    );
}

#[test]
fn thin_evidence_holds_and_says_how_much_more_is_needed() {
    // 1 request/s, and the last step: after the pause at 50%, not enough
    // evidence yet (the step to 100% needs fine).
    let mut p = compare_plan(0.001, None);
    p.steps = vec![
        PlanStep::SetWeight(50),
        PlanStep::Pause(Some(Duration::from_secs(300))),
        PlanStep::SetWeight(100),
    ];
    let mut w = with_traffic(p, 1.0, 0.01, 0.01, 9);
    for _ in 0..40 {
        w.step(&healthy, None);
    }
    let last = w.decisions.last().unwrap();
    assert_eq!(w.weight, 50);
    assert_eq!(last.reason, "NotEnoughEvidence", "{}", last.message);
    assert!(
        last.message.contains("more canary requests"),
        "{}",
        last.message
    );
    assert!(
        last.message
            .contains("not enough evidence yet: that the canary is worse ")
            && last
                .message
                .contains("× (needs 20× for 95% confidence), that it is fine ")
            && last.message.contains("× (needs 100× for 99% confidence)"),
        "{}",
        last.message
    );
    assert_eq!(w.status.comparisons[0].verdict, "Inconclusive");
}

#[test]
fn the_exposure_budget_rolls_back_before_it_is_spent() {
    // 2x the stable rate: not quickly provable as harm with a 1-point
    // tolerance, but it costs extra failures; a budget of 30 stops it.
    let mut w = with_traffic(compare_plan(0.01, Some(30.0)), 400.0, 0.02, 0.04, 11);
    w.run(&healthy, 3000);
    assert_eq!(w.status.phase, Phase::RolledBack, "{}", w.status.message);
    assert_eq!(w.decisions.last().unwrap().reason, "BudgetExhausted");
    let b = w.status.budget.clone().unwrap();
    assert!(
        b.used < b.max,
        "rolled back before the budget was spent: {b:?}"
    );
    assert!(b.upper >= b.used);
}

#[test]
fn the_budget_guard_holds_a_raise_that_would_likely_exhaust_it() {
    let plan = compare_plan(0.05, Some(60.0));
    let mut w = with_traffic(plan, 400.0, 0.01, 0.03, 13);
    w.run(&healthy, 3000);
    assert!(
        w.decisions.iter().any(|d| d.reason == "BudgetGuard")
            || w.status.phase == Phase::RolledBack,
        "{:?}",
        w.decisions.iter().map(|d| d.reason).collect::<Vec<_>>()
    );
    // Never promoted: a 2-point excess over hours would spend far more than 60.
    assert_ne!(w.status.phase, Phase::Succeeded);
}

/// Reconcile until the next analysis round has run.
fn until_next_round(w: &mut World) {
    let before = w.status.last_analysis_at.clone();
    for _ in 0..1000 {
        w.step(&healthy, None);
        if w.status.last_analysis_at != before {
            return;
        }
    }
    panic!("no analysis round");
}

#[test]
fn the_running_evidence_survives_a_look_without_data_and_starts_over_on_retry() {
    let mut w = with_traffic(compare_plan(0.005, None), 100.0, 0.006, 0.006, 17);
    for _ in 0..5 {
        until_next_round(&mut w);
    }
    let before = w.status.comparisons[0].clone();
    assert!(before.canary_requests > 0.0 && before.fine_evidence > 1.0);
    assert!(before.state.is_some(), "the evidence is kept in status");

    // A look without data: NoData, and the evidence and last counts a
    // person sees are kept.
    w.traffic.blackout = true;
    until_next_round(&mut w);
    let c = w.status.comparisons[0].clone();
    assert_eq!(c.verdict, "NoData");
    assert_eq!(c.state, before.state);
    assert_eq!(
        (c.canary_requests, c.fine_evidence, c.harm_evidence),
        (
            before.canary_requests,
            before.fine_evidence,
            before.harm_evidence
        )
    );

    // Data again: the requests since the last counted look are weighed.
    w.traffic.blackout = false;
    until_next_round(&mut w);
    let after = w.status.comparisons[0].clone();
    assert!(after.canary_requests > before.canary_requests);
    assert_ne!(after.fine_evidence, before.fine_evidence, "{after:?}");

    // A new tolerance: evidence gathered against the old one is no evidence
    // for the new one, so it starts over from this look's totals — what a
    // single look at those totals shows.
    w.plan.compare[0].tolerance.absolute = 0.01;
    until_next_round(&mut w);
    let fresh = w.status.comparisons[0].clone();
    let single = crate::analysis::sequential::evaluate(
        &Default::default(),
        crate::analysis::sequential::Counts {
            requests: fresh.canary_requests,
            failures: fresh.canary_failures,
        },
        crate::analysis::sequential::Counts {
            requests: fresh.stable_requests,
            failures: fresh.stable_failures,
        },
        w.plan.compare[0].tolerance,
        w.plan.confidence,
    )
    .unwrap();
    assert_eq!(
        (fresh.harm_evidence, fresh.fine_evidence),
        (round_evidence(single.harm), round_evidence(single.fine)),
        "one batch from scratch"
    );

    // Abort and retry: a new window, and the evidence starts over.
    w.step(&healthy, Some(ManualAction::Abort));
    w.step(&healthy, Some(ManualAction::Retry));
    assert!(
        w.status.comparisons.is_empty(),
        "{:?}",
        w.status.comparisons
    );
}

#[test]
fn comparison_query_errors_count_toward_the_error_limit() {
    let mut p = compare_plan(0.005, None);
    p.consecutive_error_limit = 2;
    let mut w = World::new(p);
    for _ in 0..200 {
        // No traffic simulated: the World's comparisons report errors
        // instead, through a plan whose counts are broken.
        w.traffic.counts = (10.0, 50.0, 100.0, 1.0); // more failures than requests
        w.step(&healthy, None);
        if w.status.phase.is_terminal() {
            break;
        }
    }
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert_eq!(w.decisions.last().unwrap().reason, "MetricsUnavailable");
    assert!(w.status.comparisons[0].message.contains("bad counts"));
}

// ------------------------------------------- A/B routes, blue/green, drain

fn plan_from(spec: serde_json::Value) -> Plan {
    let spec: crate::api::RolloutSpec = serde_json::from_value(spec).unwrap();
    crate::plan::validate(&spec).unwrap()
}

fn base_spec() -> serde_json::Value {
    serde_json::json!({
        "stable": {"service": "app-v1", "deployment": "app-v1"},
        "canary": {"service": "app-v2", "deployment": "app-v2"},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "app"}},
        "analysis": {"interval": "30s", "prometheus": {"address": "http://p"},
                     "metrics": [{"name": "error-rate", "query": "q", "max": 0.01, "failureLimit": 1}]}
    })
}

#[test]
fn header_routes_are_carried_while_progressing_and_removed_at_the_end() {
    let mut spec = base_spec();
    spec["steps"] = serde_json::json!([
        {"setHeaderRoute": {"name": "beta", "match": [{"header": {"name": "x-beta", "value": "true"}}]}},
        {"setWeight": 20}, {"pause": {"duration": "1m"}}, {"setWeight": 100}
    ]);
    let mut w = World::new(plan_from(spec));
    let mut saw_route = false;
    for _ in 0..200 {
        let d = w.step(&healthy, None).clone();
        if !d.status.phase.is_terminal() && d.status.current_step_index >= 1 {
            assert_eq!(d.header_routes.len(), 1, "{:?}", d.reason);
            assert_eq!(d.header_routes[0].name, "beta");
            saw_route = true;
        }
        if d.status.phase.is_terminal() {
            assert!(d.header_routes.is_empty(), "removed at promotion");
            break;
        }
    }
    assert!(saw_route);
    assert_eq!(w.status.phase, Phase::Succeeded);
    assert!(w.decisions.iter().any(|d| d.reason == "HeaderRouteSet"));
}

#[test]
fn a_rollback_removes_the_header_routes() {
    let mut spec = base_spec();
    spec["steps"] = serde_json::json!([
        {"setHeaderRoute": {"name": "beta", "match": [{"header": {"name": "x-beta", "value": "true"}}]}},
        {"setWeight": 20}, {"pause": {"duration": "10m"}}, {"setWeight": 100}
    ]);
    let mut w = World::new(plan_from(spec));
    w.run(&failing, 200);
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert!(w.decisions.last().unwrap().header_routes.is_empty());
}

#[test]
fn blue_green_previews_without_weight_then_switches_at_once() {
    let mut spec = base_spec();
    spec["blueGreen"] = serde_json::json!({"previewDuration": "2m"});
    let mut w = World::new(plan_from(spec));
    w.run(&healthy, 200);
    assert_eq!(w.status.phase, Phase::Succeeded);
    assert_eq!(w.weights(), vec![0, 100], "one switch from 0 to 100");
    // The analysis ran on preview traffic before the switch.
    let switch = w.decisions.iter().position(|d| d.weight == 100).unwrap();
    assert!(
        w.decisions[..switch]
            .iter()
            .any(|d| d.status.verdict == "Pass")
    );
}

#[test]
fn blue_green_with_a_failing_preview_never_gets_traffic() {
    let mut spec = base_spec();
    spec["blueGreen"] = serde_json::json!({"previewDuration": "2m"});
    let mut w = World::new(plan_from(spec));
    w.run(&failing, 200);
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert_eq!(w.weights(), vec![0]);
}

#[test]
fn blue_green_without_auto_promote_waits_for_promote() {
    let mut spec = base_spec();
    spec["blueGreen"] = serde_json::json!({"autoPromote": false});
    let mut w = World::new(plan_from(spec));
    for _ in 0..100 {
        w.step(&healthy, None);
    }
    assert_eq!((w.weight, w.status.phase), (0, Phase::Paused));
    // People are told once that it waits for them.
    let paused: Vec<_> = w
        .decisions
        .iter()
        .flat_map(|d| &d.transitions)
        .filter(|t| t.reason == "Paused")
        .collect();
    assert_eq!(paused.len(), 1, "{paused:?}");
    assert!(paused[0].message.contains("until promoted"), "{paused:?}");
    w.step(&healthy, Some(ManualAction::Promote));
    w.run(&healthy, 20);
    assert_eq!((w.weight, w.status.phase), (100, Phase::Succeeded));
}

#[test]
fn a_pause_until_promoted_after_an_ab_route_step_is_told() {
    let mut spec = base_spec();
    spec["trafficRouting"] = serde_json::json!({"gatewayAPI": {"httpRoute": "r"}});
    spec["steps"] = serde_json::json!([
        {"setWeight": 10},
        {"setHeaderRoute": {"name": "beta", "match": [{"header": {"name": "x-beta", "value": "1"}}]}},
        {"pause": {}},
        {"setWeight": 100}
    ]);
    let mut w = World::new(plan_from(spec));
    for _ in 0..30 {
        w.step(&healthy, None);
    }
    assert_eq!(w.status.phase, Phase::Paused);
    let told = w
        .decisions
        .iter()
        .flat_map(|d| &d.transitions)
        .filter(|t| t.reason == "Paused")
        .count();
    assert_eq!(told, 1);
}

#[test]
fn the_old_version_is_drained_once_after_the_delay() {
    let mut spec = base_spec();
    spec["steps"] = serde_json::json!([{"setWeight": 50}, {"setWeight": 100}]);
    spec["stable"]["scaleDownAfter"] = serde_json::json!("10m");
    let mut w = World::new(plan_from(spec));
    w.run(&healthy, 50);
    assert_eq!(w.status.phase, Phase::Succeeded);
    let completing = w.decisions.last().unwrap();
    assert!(
        !completing.waits_for_change && completing.requeue_after == Duration::from_secs(600),
        "the promotion comes back for the drain: {completing:?}"
    );
    let done = w.status.completed_at.clone().unwrap().0;
    let mut drained_at = None;
    for _ in 0..20 {
        let d = w.step(&healthy, None).clone();
        // A watching operator sets no timer only once nothing is due: until
        // the drain it must come back at the drain's time.
        assert_eq!(
            d.waits_for_change, w.status.stable_scaled_down,
            "waits for a change only after the drain: {d:?}"
        );
        if d.scale.scale_down_stable {
            assert!(drained_at.is_none(), "drained twice");
            drained_at = Some(w.decisions.last().unwrap().status.last_analysis_at.clone());
            let since = w.now.duration_since(done);
            assert!(
                since >= SignedDuration::from_mins(10),
                "drained after {since:?}"
            );
        }
    }
    assert!(w.status.stable_scaled_down);
    assert!(
        w.decisions
            .iter()
            .any(|d| d.transitions.iter().any(|t| t.reason == "StableScaledDown"))
    );
}

#[test]
fn the_canary_is_scaled_down_on_rollback_and_restored_on_retry() {
    let mut spec = base_spec();
    spec["canary"]["scaleDownOnRollback"] = serde_json::json!(true);
    let mut w = World::new(plan_from(spec));
    w.run(&failing, 100);
    let rollback = w.decisions.last().unwrap();
    assert!(rollback.scale.scale_down_canary);
    assert!(w.status.canary_scaled_down);
    // Asked once: the next reconciles do not ask again.
    assert!(!w.step(&failing, None).scale.scale_down_canary);
    let d = w.step(&healthy, Some(ManualAction::Retry)).clone();
    assert!(d.scale.restore);
    assert!(!d.status.canary_scaled_down);
}

#[test]
fn routers_that_cannot_express_a_route_are_rejected_by_name() {
    let mut spec = base_spec();
    spec["steps"] = serde_json::json!([
        {"setHeaderRoute": {"name": "beta", "match": [{"cookie": {"name": "beta", "value": "1"}}]}},
        {"setWeight": 100}
    ]);
    let s: crate::api::RolloutSpec = serde_json::from_value(spec.clone()).unwrap();
    let e = crate::plan::validate(&s).unwrap_err();
    assert_eq!(e[0].field, "spec.steps[0].setHeaderRoute");
    assert!(
        e[0].message
            .contains("gatewayAPI router cannot route by cookie"),
        "{e:?}"
    );
    spec["trafficRouting"] = serde_json::json!({"traefik": {"weightedService": "app"}});
    spec["steps"][0]["setHeaderRoute"]["match"] =
        serde_json::json!([{"header": {"name": "x", "value": "1"}}]);
    let s: crate::api::RolloutSpec = serde_json::from_value(spec.clone()).unwrap();
    let e = crate::plan::validate(&s).unwrap_err();
    assert!(
        e[0].message
            .contains("traefik router cannot route by header"),
        "{e:?}"
    );
    spec["trafficRouting"] = serde_json::json!({"nginx": {"ingress": "app"}});
    spec["steps"][0]["setHeaderRoute"]["match"] =
        serde_json::json!([{"cookie": {"name": "beta", "value": "1"}}]);
    let s: crate::api::RolloutSpec = serde_json::from_value(spec.clone()).unwrap();
    let e = crate::plan::validate(&s).unwrap_err();
    assert!(
        e[0].message.contains("only with the value \"always\""),
        "{e:?}"
    );
    spec["steps"][0]["setHeaderRoute"]["match"] =
        serde_json::json!([{"cookie": {"name": "beta", "value": "always"}}]);
    let s: crate::api::RolloutSpec = serde_json::from_value(spec.clone()).unwrap();
    assert!(crate::plan::validate(&s).is_ok());
    spec["trafficRouting"] = serde_json::json!({"replicas": {}});
    spec["steps"] = serde_json::json!([{"setWeight": 100}]);
    spec["canary"].as_object_mut().unwrap().remove("deployment");
    let s: crate::api::RolloutSpec = serde_json::from_value(spec).unwrap();
    let e = crate::plan::validate(&s).unwrap_err();
    assert!(
        e.iter().any(|e| e.field == "spec.trafficRouting.replicas"),
        "{e:?}"
    );
}

#[test]
fn an_approximated_weight_counts_as_the_desired_one_until_the_route_changes() {
    let st = RolloutStatus {
        desired_weight: 33,
        canary_weight: 40,
        ..Default::default()
    };
    assert_eq!(
        weights(&st, Some(40)),
        Weights {
            carried: 40,
            actual: 33
        }
    );
    // Someone moved the route: taken as it is.
    assert_eq!(
        weights(&st, Some(60)),
        Weights {
            carried: 60,
            actual: 60
        }
    );
    // A router that cannot tell: the recorded weight.
    let exact = RolloutStatus {
        desired_weight: 20,
        canary_weight: 20,
        ..Default::default()
    };
    assert_eq!(
        weights(&exact, None),
        Weights {
            carried: 20,
            actual: 20
        }
    );
}

#[test]
fn deleting_after_a_drained_promotion_keeps_traffic_on_the_new_version() {
    let drained = RolloutStatus {
        phase: Phase::Succeeded,
        stable_scaled_down: true,
        ..Default::default()
    };
    assert!(!restore_stable_on_delete(&drained));
    let promoted = RolloutStatus {
        phase: Phase::Succeeded,
        ..Default::default()
    };
    assert!(restore_stable_on_delete(&promoted));
    let progressing = RolloutStatus {
        phase: Phase::Progressing,
        ..Default::default()
    };
    assert!(restore_stable_on_delete(&progressing));
}

// ---------------------------------------------------------------- properties

fn arb_steps() -> impl Strategy<Value = Vec<PlanStep>> {
    prop::collection::vec(
        prop_oneof![
            (0u8..=100).prop_map(PlanStep::SetWeight),
            prop_oneof![
                Just(None),
                (1u64..600).prop_map(|s| Some(Duration::from_secs(s)))
            ]
            .prop_map(PlanStep::Pause),
        ],
        1..10,
    )
    .prop_map(|mut steps| {
        // setWeight steps are non-decreasing (validation guarantees it).
        let mut last = 0;
        for s in &mut steps {
            if let PlanStep::SetWeight(w) = s {
                *w = (*w).max(last);
                last = *w;
            }
        }
        steps
    })
}

#[derive(Debug, Clone)]
enum Ev {
    Tick(u8),
    Action(u8),
    Ready(bool),
}

fn arb_events() -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec(
        prop_oneof![
            8 => (0u8..4).prop_map(Ev::Tick),
            1 => (0u8..4).prop_map(Ev::Action),
            1 => any::<bool>().prop_map(Ev::Ready),
        ],
        1..120,
    )
}

fn outcome(kind: u8) -> QueryOutcome {
    match kind {
        0 => QueryOutcome::Value(0.0),
        1 => QueryOutcome::Value(0.5),
        2 => QueryOutcome::NoData("none".into()),
        _ => QueryOutcome::Error("down".into()),
    }
}

fn action(kind: u8) -> ManualAction {
    [
        ManualAction::Promote,
        ManualAction::PromoteFull,
        ManualAction::Abort,
        ManualAction::Retry,
    ][kind as usize % 4]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The weight asked for never exceeds the current step's target (except
    /// at Succeeded, which is 100 by definition); a rollback or abort always
    /// yields 0; a canary that is not available never gets more weight.
    #[test]
    fn weight_invariants_hold(steps in arb_steps(), events in arb_events()) {
        let mut w = World::new(plan(steps));
        for ev in events {
            let before = w.weight;
            let d = match ev {
                Ev::Tick(k) => w.step(&move |_| outcome(k), None).clone(),
                Ev::Action(k) => w.step(&healthy, Some(action(k))).clone(),
                Ev::Ready(r) => { w.ready = r; continue; }
            };
            if matches!(d.kind, DecisionKind::Rollback | DecisionKind::Abort) {
                prop_assert_eq!(d.weight, 0);
            }
            match d.status.phase {
                Phase::Succeeded => prop_assert_eq!(d.weight, 100),
                Phase::RolledBack | Phase::Aborted => prop_assert_eq!(d.weight, 0),
                _ => {
                    let target = w.plan.target_weight(d.status.current_step_index as usize);
                    prop_assert!(d.weight <= target, "weight {} above target {} ({:?})", d.weight, target, d);
                }
            }
            if !w.ready && d.status.phase != Phase::Succeeded {
                prop_assert!(d.weight <= before, "raised {} -> {} while not ready", before, d.weight);
            }
        }
    }

    /// A decision taken from status persisted to JSON and read back (an
    /// operator restart) equals the decision of the uninterrupted engine.
    #[test]
    fn restarted_decision_equals_uninterrupted_one(steps in arb_steps(), events in arb_events()) {
        let mut w = World::new(plan(steps));
        for ev in events {
            let (metric, act) = match ev {
                Ev::Tick(k) => (k, None),
                Ev::Action(k) => (0, Some(action(k))),
                Ev::Ready(r) => { w.ready = r; continue; }
            };
            let obs = Observation {
                generation: 1,
                canary: if w.ready { Readiness::Ready } else { Readiness::NotReady("no".into()) },
                actual_weight: Some(w.weight),
                analysis: analysis_due(&w.plan, &w.status, w.weight, w.now).then(|| AnalysisRound {
                    at: w.now,
                    outcomes: vec![MetricOutcome { name: "error-rate".into(), outcome: outcome(metric) }],
                    comparisons: vec![],
                }),
                action: act,
                checks: vec![],
            };
            let persisted: RolloutStatus = serde_json::from_str(&serde_json::to_string(&w.status).unwrap()).unwrap();
            let a = decide(&w.plan, &w.status, &obs, w.now);
            let b = decide(&w.plan, &persisted, &obs, w.now);
            prop_assert_eq!(&a, &b);
            w.step(&move |_| outcome(metric), act);
        }
    }

    /// Every healthy rollout with timed pauses finishes, visiting the
    /// setWeight targets in order.
    #[test]
    fn healthy_rollouts_with_timed_pauses_complete(steps in arb_steps()) {
        let steps: Vec<PlanStep> = steps.into_iter().map(|s| match s {
            PlanStep::Pause(None) => PlanStep::Pause(Some(Duration::from_secs(60))),
            s => s,
        }).collect();
        let targets: Vec<u8> = steps.iter().filter_map(|s| match s { PlanStep::SetWeight(w) => Some(*w), _ => None }).collect();
        let mut w = World::new(plan(steps));
        w.run(&healthy, 2000);
        prop_assert_eq!(w.status.phase, Phase::Succeeded);
        let seen = w.weights();
        let mut expected = vec![0u8];
        for t in targets.into_iter().chain([100]) {
            if expected.last() != Some(&t) { expected.push(t); }
        }
        prop_assert_eq!(seen, expected);
    }
}

#[test]
fn verdicts_round_trip_through_their_status_strings() {
    for v in [
        Verdict::Pass,
        Verdict::Fail,
        Verdict::NoData,
        Verdict::Error,
        Verdict::Inconclusive,
    ] {
        assert_eq!(Verdict::parse(v.as_str()), Some(v));
    }
    assert_eq!(Verdict::parse(""), None);
    assert_eq!(
        Verdict::parse("Fine"),
        None,
        "a comparison's word, not a verdict"
    );
    assert_eq!(Verdict::Pass.comparison_str(), "Fine");
    assert_eq!(Verdict::Fail.comparison_str(), "Harm");
    assert_eq!(Verdict::NoData.comparison_str(), "NoData");
}

#[test]
fn a_weight_moved_by_someone_else_is_recognised() {
    let mut prev = RolloutStatus {
        canary_ref: "checkout-v2/checkout-v2".into(),
        canary_weight: 30,
        desired_weight: 30,
        ..Default::default()
    };
    assert_eq!(moved_by_others(&prev, Some(30)), None);
    assert_eq!(
        moved_by_others(&prev, None),
        None,
        "a router that cannot tell"
    );
    assert_eq!(moved_by_others(&prev, Some(0)), Some(0));
    assert_eq!(moved_by_others(&prev, Some(100)), Some(100));
    prev.canary_ref.clear();
    assert_eq!(
        moved_by_others(&prev, Some(0)),
        None,
        "before the rollout started nothing of rollwise's is on the route"
    );
}

#[test]
fn a_rollout_with_nothing_due_waits_for_a_change_and_one_with_a_timer_does_not() {
    // Completed, nothing to drain: no timer.
    let mut w = World::new(plan(vec![
        PlanStep::SetWeight(50),
        PlanStep::SetWeight(100),
    ]));
    w.run(&healthy, 50);
    assert_eq!(w.status.phase, Phase::Succeeded);
    assert!(w.step(&healthy, None).waits_for_change);

    // A pause until promoted waits for a person, but its analysis keeps a
    // timer.
    let mut w = World::new(plan(vec![PlanStep::SetWeight(20), PlanStep::Pause(None)]));
    w.run(&healthy, 10);
    let d = w.step(&healthy, None);
    assert_eq!(d.reason, "ManualPause");
    assert!(!d.waits_for_change, "analysis is still due: {d:?}");
    let mut p = plan(vec![PlanStep::SetWeight(20), PlanStep::Pause(None)]);
    p.metrics.clear();
    let mut w = World::new(p);
    w.run(&healthy, 10);
    let d = w.step(&healthy, None);
    assert_eq!(d.reason, "ManualPause");
    assert!(
        d.waits_for_change,
        "no analysis: only a promote moves it: {d:?}"
    );

    // A timed pause and a weight change are on timers.
    let mut w = World::new(plan(vec![
        PlanStep::SetWeight(20),
        PlanStep::Pause(Some(Duration::from_secs(600))),
        PlanStep::SetWeight(100),
    ]));
    for _ in 0..5 {
        let d = w.step(&healthy, None);
        if d.status.phase.is_terminal() {
            break;
        }
        assert!(!d.waits_for_change, "{d:?}");
    }
}

mod notify;

#[test]
fn looking_again_at_a_rollout_waiting_for_its_canary_changes_nothing_in_status() {
    // The controller writes status only when it changed: a Rollout that
    // waits (canary not available) and is looked at again must produce the
    // very same status, else every look is a status write (10,000 waiting
    // Rollouts: 10,000 writes per look).
    let mut w = World::new(plan(vec![
        PlanStep::SetWeight(50),
        PlanStep::SetWeight(100),
    ]));
    w.ready = false;
    w.step(&healthy, None);
    let first = w.step(&healthy, None).clone();
    assert_eq!(first.reason, WAITING_FOR_CANARY, "{first:?}");
    let again = w.step(&healthy, None).clone();
    assert_eq!(again.reason, WAITING_FOR_CANARY);
    assert_eq!(first.status, again.status, "a second look rewrote status");
    // A different decision records its own time.
    w.ready = true;
    let moved = w.step(&healthy, None).clone();
    assert_ne!(
        moved
            .status
            .last_decision
            .as_ref()
            .and_then(|d| d.at.clone()),
        first
            .status
            .last_decision
            .as_ref()
            .and_then(|d| d.at.clone())
    );
}
