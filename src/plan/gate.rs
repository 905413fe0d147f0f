//! The gates a step passes before the weight is raised: the analysis
//! verdict, the evidence that the canary is fine, and the exposure budget.

use jiff::Timestamp;

use super::{Plan, Reason, human};
use crate::analysis::fmt_num;
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
            let total_rate = (c.canary_requests + c.stable_requests) / window;
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
