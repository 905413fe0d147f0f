//! The ramp bounded by risk: middle steps are raised while neither harm nor
//! fine is proven, within the exposure budget; the final step needs fine.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::api::{BudgetStatus, ComparisonStatus};
use crate::plan::compile::PlanBlueGreen;
use crate::plan::gate::{default_budget, risk_bound, worst_excess_rate};

/// A status at step 2/8 (5%) right after an inconclusive round, with the
/// given cumulative counts over the 100 s since the canary got traffic.
fn inconclusive_at_5(canary: (f64, f64), stable: (f64, f64)) -> RolloutStatus {
    let at = |s: i64| {
        Some(Time(
            t0().checked_add(SignedDuration::from_secs(s)).unwrap(),
        ))
    };
    RolloutStatus {
        current_step_index: 1,
        canary_weight: 5,
        canary_traffic_since: at(0),
        step_started_at: at(0),
        last_analysis_at: at(100),
        verdict: Verdict::Inconclusive.as_str().into(),
        comparisons: vec![ComparisonStatus {
            name: "http-errors".into(),
            verdict: Verdict::Inconclusive.comparison_str().into(),
            canary_requests: canary.0,
            canary_failures: canary.1,
            canary_rate: canary.1 / canary.0,
            stable_requests: stable.0,
            stable_failures: stable.1,
            stable_rate: stable.1 / stable.0,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn the_default_budget_is_what_a_canary_at_the_edge_of_the_tolerance_costs_at_the_first_step() {
    // 5% for 5m at 100 req/s is 1500 canary requests; 0.5 points over
    // stable on each is 7.5 extra failed requests.
    let p = compare_plan(0.005, None);
    let b = default_budget(&p, 100.0, 0.006, 0.0).unwrap();
    assert!((b - 7.5).abs() < 1e-9, "{b}");
    // It follows the traffic.
    let b = default_budget(&p, 20.0, 0.006, 0.0).unwrap();
    assert!((b - 1.5).abs() < 1e-9, "{b}");
    // And grows by what a canary at the edge costs on the requests served:
    // a canary within tolerance never spends it.
    let b = default_budget(&p, 20.0, 0.006, 1000.0).unwrap();
    assert!((b - 6.5).abs() < 1e-9, "{b}");
    // A relative tolerance (20% of stable's 1%) allows 0.2 points.
    let mut p = compare_plan(0.0, None);
    p.compare[0].tolerance.relative = 0.2;
    let b = default_budget(&p, 100.0, 0.01, 0.0).unwrap();
    assert!((b - 3.0).abs() < 1e-9, "{b}");
    // A longer first pause gives more.
    let mut p = compare_plan(0.005, None);
    p.steps[1] = PlanStep::Pause(Some(Duration::from_secs(600)));
    let b = default_budget(&p, 100.0, 0.006, 0.0).unwrap();
    assert!((b - 15.0).abs() < 1e-9, "{b}");
    // No comparison, no default.
    assert_eq!(default_budget(&plan(vec![]), 100.0, 0.006, 0.0), None);
}

#[test]
fn the_risk_bound_allows_a_raise_exactly_while_the_worst_canary_fits_what_is_left() {
    let mut p = compare_plan(0.005, None);
    p.interval = Duration::from_secs(5);
    // 100 s at 100 req/s: 500 canary requests, 9500 stable.
    let st = inconclusive_at_5((500.0, 3.0), (9500.0, 57.0));
    let worst = worst_excess_rate(&st.comparisons[0], 0.99);
    assert!(worst > 0.0 && worst < 0.05, "{worst}");
    // At 33% for 5s: 165 requests, each worst-case `worst` more likely to fail.
    let cost = worst * 100.0 * 5.0 * 0.33;
    // The canary failed 3 of 500 where stable's rate predicts 3: used 0.
    let at = |max: f64| {
        let mut p = p.clone();
        p.max_extra_failures = Some(max);
        risk_bound(&p, &st, 5, 33).unwrap()
    };
    assert!(at(cost * 1.01).allows);
    assert!(!at(cost * 0.99).allows);
    // What is used counts against it.
    let mut used = st.clone();
    used.budget = Some(BudgetStatus {
        used: 2.0,
        upper: 4.0,
        max: cost * 1.01 + 2.0,
    });
    let mut p2 = p.clone();
    p2.max_extra_failures = Some(cost * 1.01 + 2.0);
    assert!(risk_bound(&p2, &used, 5, 33).unwrap().allows);
    p2.max_extra_failures = Some(cost * 1.01 + 1.0);
    assert!(!risk_bound(&p2, &used, 5, 33).unwrap().allows);
    // A higher weight costs more: 50% does not fit where 33% just did.
    assert!(
        !at(cost * 1.01).allows
            || !{
                let mut p = p.clone();
                p.max_extra_failures = Some(cost * 1.01);
                risk_bound(&p, &st, 5, 50).unwrap().allows
            }
    );
    // A canary that so far looks worse than tolerated is not raised.
    let mut worse = st.clone();
    worse.comparisons[0].excess = 0.001;
    let r = risk_bound(&p2, &worse, 5, 33).unwrap();
    assert!(!r.allows);
    assert!(
        r.message
            .contains("so far the canary fails more often than tolerated (by 0.1%)"),
        "{}",
        r.message
    );
    p2.max_extra_failures = Some(1e6);
    assert!(!risk_bound(&p2, &worse, 5, 33).unwrap().allows);
    // The numbers are said.
    let r = at(cost * 0.99);
    assert!(
        r.message
            .starts_with("holding at 5%: at 33% the worst plausible canary")
            && r.message.contains(&fmt_num(cost))
            && r.message.contains("in the next 5s")
            && r.message.contains("maxExtraFailures"),
        "{}",
        r.message
    );
}

#[test]
fn the_risk_bound_does_not_apply_to_the_final_step_blue_green_or_a_round_that_is_not_inconclusive()
{
    let p = compare_plan(0.005, Some(1e6));
    let st = inconclusive_at_5((500.0, 3.0), (9500.0, 57.0));
    assert!(risk_bound(&p, &st, 5, 33).is_some_and(|r| r.allows));
    // The final step to 100% needs fine.
    assert_eq!(risk_bound(&p, &st, 50, 100), None);
    // Not a raise.
    assert_eq!(risk_bound(&p, &st, 33, 33), None);
    // Blue/green's switch.
    let mut bg = p.clone();
    bg.blue_green = Some(PlanBlueGreen {
        auto_promote: true,
        preview: Duration::from_secs(60),
        scale_down_delay: Duration::ZERO,
    });
    assert_eq!(risk_bound(&bg, &st, 5, 33), None);
    // Harm, no data, an error, a failing metric, fine: the gate decides.
    for v in [
        Verdict::Fail,
        Verdict::NoData,
        Verdict::Error,
        Verdict::Pass,
    ] {
        let mut s = st.clone();
        s.verdict = v.as_str().into();
        assert_eq!(risk_bound(&p, &s, 5, 33), None, "{v:?}");
    }
    // No round at this step yet: the latest ended the step before.
    let mut s = st.clone();
    s.step_started_at = s.last_analysis_at.clone();
    assert_eq!(risk_bound(&p, &s, 5, 33), None);
    let mut s = st.clone();
    s.step_started_at = Some(Time(
        t0().checked_add(SignedDuration::from_secs(101)).unwrap(),
    ));
    assert_eq!(risk_bound(&p, &s, 5, 33), None);
}

#[test]
fn a_healthy_canary_is_raised_through_the_middle_steps_before_fine_is_proven() {
    let mut p = compare_plan(0.005, None);
    p.interval = Duration::from_secs(5);
    let mut w = with_traffic(p, 50.0, 0.01, 0.01, 21);
    w.run(&healthy, 5000);
    assert_eq!(w.status.phase, Phase::Succeeded, "{}", w.status.message);
    let raised: Vec<&Decision> = w
        .decisions
        .iter()
        .filter(|d| d.reason == Reason::RiskBoundAllows)
        .collect();
    assert!(!raised.is_empty(), "never raised within the risk bound");
    for d in &raised {
        // Neither harm nor fine was proven when it was raised, and the
        // weight stayed below 100%.
        assert_eq!(d.status.comparisons[0].verdict, "Inconclusive");
        assert!(d.weight < 100);
        assert!(
            d.message.contains("neither harm nor fine proven yet")
                && d.message.contains("worst plausible canary"),
            "{}",
            d.message
        );
        assert!(
            d.transitions
                .iter()
                .any(|t| t.reason == Reason::RiskBoundAllows && t.message == d.message),
            "an Event says it"
        );
    }
    // The final step needs fine.
    let full = w.decisions.iter().find(|d| d.weight == 100).unwrap();
    assert_eq!(full.status.comparisons[0].verdict, "Fine");
    // At 50% before the 10 minutes the two pauses before it ask for.
    let at_50 = w.decisions.iter().find(|d| d.weight == 50).unwrap();
    let when = at_50.status.step_started_at.as_ref().unwrap().0;
    assert!(
        when.duration_since(t0()) < SignedDuration::from_mins(10),
        "50% after {:?}",
        when.duration_since(t0())
    );
}

#[test]
fn a_ten_times_worse_canary_is_never_raised_by_the_risk_bound() {
    for seed in 0..10 {
        let mut p = compare_plan(0.005, None);
        p.interval = Duration::from_secs(5);
        let mut w = with_traffic(p, 100.0, 0.006, 0.06, 100 + seed);
        w.run(&healthy, 5000);
        assert_eq!(w.status.phase, Phase::RolledBack, "seed {seed}");
        assert_eq!(w.weights(), vec![0, 5, 0], "seed {seed}");
    }
}

#[test]
fn thin_evidence_holds_on_the_risk_bound_and_says_so_once() {
    // 1 request/s: the worst plausible canary at 33% costs more than the
    // default budget (0.001 × (1 req/s × 5% × 5m + the few canary requests
    // served), well under 1).
    let mut w = with_traffic(compare_plan(0.001, None), 1.0, 0.01, 0.01, 9);
    for _ in 0..60 {
        w.step(&healthy, None);
    }
    assert_eq!(w.weight, 5);
    let holds: Vec<&Decision> = w
        .decisions
        .iter()
        .filter(|d| d.reason == Reason::RiskBoundHolds)
        .collect();
    assert!(holds.len() > 1);
    let events = w
        .decisions
        .iter()
        .flat_map(|d| &d.transitions)
        .filter(|t| t.reason == Reason::RiskBoundHolds)
        .count();
    assert_eq!(events, 1, "one Event when the hold begins");
    let last = holds.last().unwrap();
    assert!(
        last.message
            .contains("holding at 5%: at 33% the worst plausible canary")
            && last
                .message
                .contains("the default: a canary at the edge of the tolerance")
            && last.message.contains("not enough evidence yet"),
        "{}",
        last.message
    );
}
