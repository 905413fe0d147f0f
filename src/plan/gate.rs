//! The gates a step passes before the weight is raised: the analysis
//! verdict, the evidence that the canary is fine, the risk bound of the
//! ramp and the exposure budget.

use std::time::Duration;

use jiff::Timestamp;

use super::{Plan, PlanStep, Reason, human};
use crate::analysis::sequential::{Counts, confidence_sequence};
use crate::analysis::{fmt_num, fmt_pct};
use crate::api::{ComparisonStatus, RolloutStatus, Verdict};

/// Extra failed requests the canary could cause in the next interval at
/// `weight` percent, from the latest comparisons: twice the point estimate
/// (the excess rate is noisy while failures are few, and the next look may
/// come a little late) plus three standard deviations of the interval's own
/// canary failures (one unlucky interval). The traffic rate is that of both
/// sides together, so a weight just raised is accounted for.
pub(super) fn projected_extra(
    plan: &Plan,
    st: &RolloutStatus,
    now: Timestamp,
    weight: u8,
) -> Option<f64> {
    let since = st.canary_traffic_since.as_ref()?.0;
    // The counts cover the window up to the latest analysis round.
    let end = st.last_analysis_at.as_ref().map(|t| t.0).unwrap_or(now);
    let window = since.duration_until(end).as_secs_f64().max(1.0);
    st.comparisons
        .iter()
        .filter(|c| c.canary_requests > 0.0)
        .map(|c| {
            let total_rate = rate_over(plan, c, window);
            let per_interval = total_rate * plan.interval.as_secs_f64() * weight as f64 / 100.0;
            let excess = (c.canary_rate - c.stable_rate).max(0.0);
            if excess > 0.0 {
                2.0 * per_interval * excess + 3.0 * (per_interval * c.canary_rate).sqrt()
            } else {
                0.0
            }
        })
        .reduce(f64::max)
}

/// Why the analysis gate is closed, or `None` when it is open.
pub(super) fn analysis_gate(
    plan: &Plan,
    st: &RolloutStatus,
    weight: u8,
) -> Option<(Reason, String)> {
    if !plan.has_analysis() || (weight == 0 && plan.blue_green.is_none()) {
        return None;
    }
    let summary = || {
        st.analysis
            .iter()
            .filter(|m| m.verdict != Verdict::Pass.as_str())
            .map(|m| m.message.clone())
            .chain(
                st.comparisons
                    .iter()
                    .filter(|c| !c.is_fine())
                    .map(|c| format!("{}: {}", c.name, c.message)),
            )
            .collect::<Vec<_>>()
            .join("; ")
    };
    match Verdict::parse(&st.verdict) {
        Some(Verdict::Pass) if st.passes_in_step > 0 => None,
        // At 100% the canary already serves everyone (the step there
        // needed the evidence that it is fine) and stable serves no
        // requests to compare with, so the evidence cannot change: holding
        // for it would hold forever. Harm still rolls back.
        Some(Verdict::Inconclusive) if full_weight(plan, weight) => None,
        Some(Verdict::Inconclusive) => {
            Some((Reason::NotEnoughEvidence, format!("holding: {}", summary())))
        }
        Some(Verdict::NoData) => Some((
            Reason::WaitingForData,
            format!("waiting for data: {}", summary()),
        )),
        Some(Verdict::Error) => Some((Reason::MetricsError, format!("holding: {}", summary()))),
        Some(Verdict::Fail) => Some((
            Reason::WaitingForPass,
            format!(
                "holding after a failed evaluation (within its limit): {}",
                summary()
            ),
        )),
        _ => Some((
            Reason::WaitingForAnalysis,
            format!("waiting for the first analysis at {weight}%"),
        )),
    }
}

/// The canary serves all traffic: stable serves nothing to compare with.
/// (Blue/green keeps its own rules: its switch needs the evidence.)
pub(super) fn full_weight(plan: &Plan, weight: u8) -> bool {
    weight >= 100 && plan.blue_green.is_none()
}

/// Early promotion: the comparisons say the canary is within tolerance with
/// confidence (and every threshold metric passes) in this step.
pub(super) fn evidence_fine(plan: &Plan, st: &RolloutStatus) -> bool {
    !plan.compare.is_empty()
        && st.passes_in_step > 0
        && st.verdict == Verdict::Pass.as_str()
        && st.comparisons.len() == plan.compare.len()
        && st.comparisons.iter().all(ComparisonStatus::is_fine)
}

/// Why raising the weight from `from` to `to` would likely exhaust the
/// exposure budget within one interval, if it would.
pub(super) fn budget_guard(
    plan: &Plan,
    st: &RolloutStatus,
    now: Timestamp,
    from: u8,
    to: u8,
) -> Option<String> {
    let max = plan.max_extra_failures?;
    if to <= from || from == 0 {
        return None;
    }
    let used = st.budget.as_ref().map(|b| b.used).unwrap_or(0.0);
    // The same projection as the rollback rule's, at the raised weight.
    let next = projected_extra(plan, st, now, to)?;
    (used + next >= max).then(|| {
        format!(
            "holding at {from}%: at {to}% the canary could cause up to {} more extra failed requests in the next {} (used {} of {})",
            fmt_num(next),
            human(plan.interval),
            fmt_num(used),
            fmt_num(max)
        )
    })
}

/// What the risk bound of the ramp says about raising the weight: while
/// neither harm nor fine is proven, a middle step may raise the weight when
/// the worst plausible canary, at the raised weight, for the next interval,
/// costs no more extra failed requests than the exposure budget has left.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RiskBound {
    /// The raise fits the budget.
    pub allows: bool,
    /// The bound with its numbers, for status and Events.
    pub message: String,
}

/// The exposure budget the ramp works within when `maxExtraFailures` is not
/// set: the extra failed requests a canary exactly at the edge of the
/// tolerance would cost over the first step's pause at the plan's first
/// weight (at the traffic seen so far, both versions together), plus over
/// the requests the canary has served so far. The user accepted that cost by
/// choosing the tolerance and the first step. With the defaults (5% for 5m,
/// tolerance +0.005) it starts at 7.5 at 100 req/s, and a canary within
/// tolerance never spends it. It only bounds the ramp: without
/// `maxExtraFailures` nothing is rolled back for the budget's sake.
pub fn default_budget(
    plan: &Plan,
    total_rate: f64,
    stable_rate: f64,
    canary_requests: f64,
) -> Option<f64> {
    let (index, weight) = plan.steps.iter().enumerate().find_map(|(i, s)| match s {
        PlanStep::SetWeight(w) if *w > 0 => Some((i, *w)),
        _ => None,
    })?;
    let pause = plan.steps[index + 1..]
        .iter()
        .take_while(|s| !matches!(s, PlanStep::SetWeight(_)))
        .find_map(|s| match s {
            PlanStep::Pause(Some(d)) => Some(*d),
            _ => None,
        })
        .unwrap_or(super::compile::DEFAULT_PAUSE);
    plan.compare
        .iter()
        .map(|c| (c.tolerance.allowed(stable_rate) - stable_rate).max(0.0))
        .reduce(f64::min)
        .map(|edge| {
            edge * (total_rate * weight as f64 / 100.0 * pause.as_secs_f64()
                + canary_requests.max(0.0))
        })
}

/// The requests per second of both versions together over the window the
/// latest comparison counts cover. A counted metric (a fixed limit) has no
/// stable counts: the canary's requests are scaled up from the first
/// step's weight, which overstates the total once the weight has risen
/// (so the risk bound errs on the side of holding).
fn total_rate(plan: &Plan, st: &RolloutStatus, c: &ComparisonStatus) -> Option<f64> {
    let since = st.canary_traffic_since.as_ref()?.0;
    let end = st.last_analysis_at.as_ref()?.0;
    let window = since.duration_until(end).as_secs_f64().max(1.0);
    Some(rate_over(plan, c, window))
}

/// Both versions' requests per second over `window` seconds (see
/// [`total_rate`] for a counted metric).
fn rate_over(plan: &Plan, c: &ComparisonStatus, window: f64) -> f64 {
    let fixed = is_limit(plan, c);
    let first = plan.steps.iter().find_map(|s| match s {
        PlanStep::SetWeight(w) if *w > 0 => Some(*w),
        _ => None,
    });
    match first {
        Some(first) if fixed => c.canary_requests / window * 100.0 / first as f64,
        _ => (c.canary_requests + c.stable_requests) / window,
    }
}

/// The comparison is a counted metric against a fixed limit (stable plays
/// no part).
fn is_limit(plan: &Plan, c: &ComparisonStatus) -> bool {
    plan.compare
        .iter()
        .any(|p| p.name == c.name && p.tolerance.fixed)
}

/// The worst plausible excess of the canary's failure rate over stable's:
/// the upper end of the canary's confidence sequence minus the lower end of
/// stable's, each at `α/2` (the bounds behind `excessUpper`, valid at every
/// look). 1 when the canary has no requests yet.
pub fn worst_excess_rate(c: &ComparisonStatus, confidence: f64) -> f64 {
    let delta = ((1.0 - confidence) / 2.0).clamp(1e-12, 0.5);
    let counts = |requests: f64, failures: f64| Counts {
        requests: requests.max(0.0),
        failures: failures.clamp(0.0, requests.max(0.0)),
    };
    let (_, uc) = confidence_sequence(counts(c.canary_requests, c.canary_failures), delta);
    let (ls, _) = confidence_sequence(counts(c.stable_requests, c.stable_failures), delta);
    (uc - ls).clamp(0.0, 1.0)
}

/// The risk bound for raising the weight from `from` to `to` (never while
/// a comparison's point estimate is beyond the tolerance), or `None`
/// when it does not apply: the final step to 100% (and blue/green's
/// switch) needs the evidence that the canary is fine; a step that does
/// not raise the weight, a plan without comparisons, a round that is not
/// inconclusive (harm, an error, no data, a failing metric) or no round yet
/// at this step keep the rules of the analysis gate.
pub(super) fn risk_bound(plan: &Plan, st: &RolloutStatus, from: u8, to: u8) -> Option<RiskBound> {
    if plan.compare.is_empty()
        || plan.blue_green.is_some()
        || to >= 100
        || to <= from
        || from == 0
        || Verdict::parse(&st.verdict) != Some(Verdict::Inconclusive)
        || st.comparisons.len() != plan.compare.len()
    {
        return None;
    }
    // A round at this step's weight: the step started before it (a round
    // in the same second is the one that ended the step before).
    let round = st.last_analysis_at.as_ref()?.0;
    if st.step_started_at.as_ref().is_some_and(|t| t.0 >= round) {
        return None;
    }
    let interval = plan.interval.as_secs_f64();
    // The comparison whose worst plausible canary costs most.
    let (worst, cost, rate, stable_rate, served, fixed) = st
        .comparisons
        .iter()
        .map(|c| {
            let worst = worst_excess_rate(c, plan.confidence);
            let rate = total_rate(plan, st, c).unwrap_or(0.0);
            let cost = worst * rate * interval * to as f64 / 100.0;
            let fixed = is_limit(plan, c);
            (worst, cost, rate, c.stable_rate, c.canary_requests, fixed)
        })
        .reduce(|a, b| if b.1 > a.1 { b } else { a })?;
    let used = st.budget.as_ref().map(|b| b.used).unwrap_or_else(|| {
        st.comparisons
            .iter()
            .map(|c| (c.canary_failures - c.canary_requests * c.stable_rate).max(0.0))
            .fold(0.0, f64::max)
    });
    let (budget, whose) = match plan.max_extra_failures {
        Some(max) => (max, "maxExtraFailures".to_string()),
        None => {
            let b = default_budget(plan, rate, stable_rate, served).unwrap_or(0.0);
            (
                b,
                format!(
                    "the default: a canary at the edge of the tolerance over the first step at {} req/s and the {} requests the canary served",
                    fmt_num(rate),
                    fmt_num(served)
                ),
            )
        }
    };
    let left = (budget - used).max(0.0);
    // A canary that so far fails more often than tolerated is not raised
    // before the evidence is in, however little it could cost.
    let leaning_worse = st
        .comparisons
        .iter()
        .filter(|c| c.excess > 0.0)
        .map(|c| c.excess)
        .reduce(f64::max);
    let allows = cost <= left && rate > 0.0 && leaning_worse.is_none();
    let worst = if fixed {
        format!("failing up to {} of its requests", fmt_pct(worst))
    } else {
        format!(
            "failing up to {} more of its requests than stable",
            fmt_pct(worst)
        )
    };
    let failed = if fixed {
        "failed requests"
    } else {
        "extra failed requests"
    };
    let numbers = format!(
        "at {to}% the worst plausible canary ({worst}, a bound valid at every look) could cost {} {failed} in the next {}; the exposure budget has {} of {} left (used {}; {whose})",
        fmt_num(cost),
        human(Duration::from_secs_f64(interval)),
        fmt_num(left),
        fmt_num(budget),
        fmt_num(used),
    );
    let message = if let Some(excess) = leaning_worse {
        format!(
            "holding at {from}%: so far the canary fails more often than tolerated (by {}), so it is not raised before the evidence is in; {numbers}",
            fmt_pct(excess)
        )
    } else if allows {
        format!("{numbers}: raising while the evidence is still out")
    } else {
        format!("holding at {from}%: {numbers}, not enough to raise before the evidence is in")
    };
    Some(RiskBound { allows, message })
}
