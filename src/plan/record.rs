//! Recording an analysis round in status: each threshold metric's verdict
//! and failure count, each comparison's evidence and its explanation, the
//! exposure budget, and the rollback a round calls for.

use super::Plan;
use super::gate::projected_extra;
use super::{AnalysisRound, Reason, human, time};
use crate::analysis::sequential::{self, Outcome};
use crate::analysis::{CountsOutcome, QueryOutcome, describe_bound, fmt_num, fmt_pct, judge};
use crate::api::{
    BudgetStatus, ComparisonStatus, EvidenceState, MetricStatus, RolloutStatus, Verdict,
};

/// Record an analysis round in the status. Returns the rollback message when
/// the round (with the earlier ones) calls for a rollback.
pub(super) fn record_analysis(
    plan: &Plan,
    st: &mut RolloutStatus,
    round: &AnalysisRound,
) -> Option<(Reason, String)> {
    let mut statuses = Vec::with_capacity(plan.metrics.len());
    let mut any_error = false;
    let mut round_verdict = Verdict::Pass;
    let mut rollback = None;
    for metric in &plan.metrics {
        let outcome = round
            .outcomes
            .iter()
            .find(|o| o.name == metric.name)
            .map(|o| o.outcome.clone())
            .unwrap_or_else(|| QueryOutcome::Error("not evaluated".into()));
        let verdict = judge(metric, &outcome);
        let prev_failures = st
            .analysis
            .iter()
            .find(|m| m.name == metric.name)
            .map(|m| m.failures)
            .unwrap_or(0);
        let failures = prev_failures + i32::from(verdict == Verdict::Fail);
        let (value, message) = match &outcome {
            QueryOutcome::Value(v) if v.is_nan() => {
                (None, "no data: the query returned NaN".to_string())
            }
            QueryOutcome::Value(v) => (
                Some(*v),
                format!(
                    "{} = {} ({} {})",
                    metric.name,
                    fmt_num(*v),
                    if verdict == Verdict::Pass {
                        "within"
                    } else {
                        "outside"
                    },
                    describe_bound(metric)
                ),
            ),
            QueryOutcome::NoData(m) => (None, format!("no data: {m}")),
            QueryOutcome::Error(m) => (None, format!("query error: {m}")),
        };
        if verdict == Verdict::Fail && failures > metric.failure_limit as i32 && rollback.is_none()
        {
            rollback = Some((
                Reason::AnalysisFailed,
                format!(
                    "metric {} = {} is outside its bound ({}): {} failed evaluation(s), more than the {} its failureLimit tolerates",
                    metric.name,
                    value.map(fmt_num).unwrap_or_default(),
                    describe_bound(metric),
                    failures,
                    metric.failure_limit
                ),
            ));
        }
        any_error |= verdict == Verdict::Error;
        round_verdict = worst(round_verdict, verdict);
        statuses.push(MetricStatus {
            name: metric.name.clone(),
            value: value.filter(|v| v.is_finite()),
            min: metric.min,
            max: metric.max,
            verdict: verdict.as_str().into(),
            failures,
            failure_limit: metric.failure_limit as i32,
            message,
            measured_at: Some(time(round.at)),
        });
    }
    // Canary-vs-stable comparisons.
    let confidence = sequential::Confidence {
        fine: plan.confidence,
        harm: plan.rollback_confidence,
    };
    let mut comparisons = Vec::with_capacity(plan.compare.len());
    let mut budget: Option<(f64, f64, f64)> = None; // (used, upper, canary requests)
    for cmp in &plan.compare {
        let outcome = round.comparisons.iter().find(|o| o.name == cmp.name);
        // The previous look of this comparison: its counts, evidence and
        // running state carry over (a look without counts keeps them); what
        // belongs to this look is set here or below.
        let prev = st.comparisons.iter().find(|c| c.name == cmp.name);
        let mut cs = ComparisonStatus {
            name: cmp.name.clone(),
            tolerance: cmp.tolerance.describe(),
            confidence: plan.confidence,
            evidence_bar: round_evidence(1.0 / (1.0 - plan.confidence)),
            rollback_confidence: plan.rollback_confidence,
            harm_evidence_bar: round_evidence(1.0 / (1.0 - plan.rollback_confidence)),
            measured_at: Some(time(round.at)),
            verdict: String::new(),
            message: String::new(),
            more_requests_needed: None,
            ..prev.cloned().unwrap_or_default()
        };
        // Evidence gathered for another tolerance or other queries is no
        // evidence for this comparison: it starts over.
        let basis = evidence_basis(cmp);
        let prev_state = prev
            .and_then(|p| p.state.as_ref())
            .filter(|s| s.basis == basis)
            .cloned()
            .unwrap_or_default();
        let verdict = match outcome.map(|o| (&o.canary, &o.stable)) {
            None => {
                cs.message = "not evaluated".into();
                Verdict::Error
            }
            Some((CountsOutcome::Error(e), _)) | Some((_, CountsOutcome::Error(e))) => {
                cs.message = format!("query error: {e}");
                Verdict::Error
            }
            Some((CountsOutcome::NoData(m), _)) => {
                cs.message = format!("no data for the canary: {m}");
                Verdict::NoData
            }
            Some((_, CountsOutcome::NoData(m))) => {
                cs.message = format!("no data for stable: {m}");
                Verdict::NoData
            }
            Some((CountsOutcome::Counts(c), CountsOutcome::Counts(s))) => {
                match sequential::evaluate(&prev_state, *c, *s, cmp.tolerance, confidence) {
                    Err(e) => {
                        cs.message = format!("bad counts: {e}");
                        Verdict::Error
                    }
                    Ok(ev) => {
                        fill_comparison(&mut cs, &ev, basis, cmp.tolerance);
                        let (used, upper, n) = budget.unwrap_or((0.0, 0.0, 0.0));
                        budget = Some((
                            used.max(ev.extra_failures),
                            upper.max(ev.extra_failures_upper),
                            n.max(ev.canary.requests),
                        ));
                        match ev.outcome {
                            Outcome::Harm => {
                                if rollback.is_none() {
                                    rollback = Some((
                                        Reason::CanaryWorse,
                                        format!("{}: {}", cmp.name, cs.message),
                                    ));
                                }
                                Verdict::Fail
                            }
                            Outcome::Fine => Verdict::Pass,
                            Outcome::Inconclusive => Verdict::Inconclusive,
                        }
                    }
                }
            }
        };
        cs.verdict = verdict.comparison_str().into();
        any_error |= verdict == Verdict::Error;
        round_verdict = worst(round_verdict, verdict);
        comparisons.push(cs);
    }
    st.comparisons = comparisons;
    st.last_analysis_at = Some(time(round.at));
    if let Some(max) = plan.max_extra_failures {
        let (used, upper, _) = budget.unwrap_or_else(|| {
            st.budget
                .as_ref()
                .map(|b| (b.used, b.upper, 0.0))
                .unwrap_or((0.0, 0.0, 0.0))
        });
        st.budget = Some(BudgetStatus {
            used: round2(used),
            upper: round2(upper),
            max,
        });
        // Roll back *before* the budget is spent: when what is used plus
        // what the next interval could cost at this weight reaches it.
        let next = projected_extra(plan, st, round.at, st.canary_weight.clamp(0, 100) as u8)
            .unwrap_or(0.0);
        if rollback.is_none() && used + next >= max {
            rollback = Some((
                Reason::BudgetExhausted,
                format!(
                    "the canary has caused about {} extra failed requests (upper bound {}) and could cause up to {} more in the next {}; budget {}",
                    fmt_num(used),
                    fmt_num(upper),
                    fmt_num(next),
                    human(plan.interval),
                    fmt_num(max)
                ),
            ));
        }
    }
    st.analysis = statuses;
    st.last_analysis_at = Some(time(round.at));
    st.verdict = round_verdict.as_str().into();
    st.consecutive_errors = if any_error {
        st.consecutive_errors + 1
    } else {
        0
    };
    if round_verdict == Verdict::Pass {
        st.passes_in_step += 1;
    }
    if rollback.is_none() && st.consecutive_errors >= plan.consecutive_error_limit as i32 {
        let errors: Vec<String> = st
            .analysis
            .iter()
            .filter(|m| m.verdict == Verdict::Error.as_str())
            .map(|m| format!("{}: {}", m.name, m.message))
            .chain(
                st.comparisons
                    .iter()
                    .filter(|c| c.verdict == Verdict::Error.as_str())
                    .map(|c| format!("{}: {}", c.name, c.message)),
            )
            .collect();
        rollback = Some((
            Reason::MetricsUnavailable,
            format!(
                "metrics could not be read {} times in a row (limit {}): {}",
                st.consecutive_errors,
                plan.consecutive_error_limit,
                errors.join("; ")
            ),
        ));
    }
    rollback
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The comparison's numbers, and a sentence that explains them.
fn fill_comparison(
    cs: &mut ComparisonStatus,
    ev: &sequential::Evidence,
    basis: String,
    tolerance: sequential::Tolerance,
) {
    cs.canary_requests = ev.canary.requests;
    cs.canary_failures = ev.canary.failures;
    cs.canary_rate = ev.canary.rate();
    cs.stable_requests = ev.stable.requests;
    cs.stable_failures = ev.stable.failures;
    cs.stable_rate = ev.stable.rate();
    cs.excess = ev.excess;
    cs.excess_lower = ev.excess_lower;
    cs.excess_upper = ev.excess_upper;
    cs.harm_evidence = round_evidence(ev.harm);
    cs.fine_evidence = round_evidence(ev.fine);
    cs.state = Some(EvidenceState {
        basis,
        ..ev.state.clone()
    });
    cs.more_requests_needed = ev
        .more_requests_needed
        .map(|n| n.min(i64::MAX as u64) as i64);
    let needs = |bar: f64, confidence: f64| {
        format!(
            "needs {}× for {}% confidence",
            fmt_num(bar),
            fmt_num(confidence * 100.0)
        )
    };
    let harm_needs = needs(cs.harm_evidence_bar, cs.rollback_confidence);
    let fine_needs = needs(cs.evidence_bar, cs.confidence);
    let conclusion = match ev.outcome {
        Outcome::Harm if tolerance.fixed => format!(
            "above the limit: the evidence that the canary fails more often than {} is {}× ({harm_needs})",
            fmt_pct(tolerance.absolute),
            fmt_num(cs.harm_evidence),
        ),
        Outcome::Fine if tolerance.fixed => format!(
            "within the limit: the evidence that the canary fails at most {} is {}× ({fine_needs})",
            fmt_pct(tolerance.absolute),
            fmt_num(cs.fine_evidence),
        ),
        Outcome::Harm => format!(
            "worse than tolerated: the evidence that the canary is worse is {}× ({harm_needs})",
            fmt_num(cs.harm_evidence),
        ),
        Outcome::Fine => format!(
            "within tolerance: the evidence that the canary is fine is {}× ({fine_needs})",
            fmt_num(cs.fine_evidence),
        ),
        Outcome::Inconclusive => {
            let more = match ev.more_requests_needed {
                Some(n) => format!("; roughly {n} more canary requests to tell"),
                None => String::new(),
            };
            format!(
                "not enough evidence yet: that the canary is worse {}× ({harm_needs}), that it is fine {}× ({fine_needs}){more}",
                fmt_num(cs.harm_evidence),
                fmt_num(cs.fine_evidence),
            )
        }
    };
    if tolerance.fixed {
        let beyond = if ev.excess >= 0.0 {
            format!("above it by {}", fmt_pct(ev.excess))
        } else {
            format!("{} under it", fmt_pct(-ev.excess))
        };
        cs.message = format!(
            "canary {}/{} failed ({}), limit {}: {beyond} (range valid at every look: {} to {}); {conclusion}",
            fmt_num(ev.canary.failures),
            fmt_num(ev.canary.requests),
            fmt_pct(ev.canary.rate()),
            fmt_pct(tolerance.absolute),
            fmt_pct(ev.excess_lower),
            fmt_pct(ev.excess_upper),
        );
        return;
    }
    let diff = ev.canary.rate() - ev.stable.rate();
    let side = if diff >= 0.0 { "more" } else { "fewer" };
    let beyond = if ev.excess >= 0.0 {
        format!("beyond it by {}", fmt_pct(ev.excess))
    } else {
        format!("{} inside it", fmt_pct(-ev.excess))
    };
    cs.message = format!(
        "canary {}/{} failed ({}) vs stable {}/{} ({}): {} {side} of the canary's requests fail, tolerance {}, {beyond} (range valid at every look: {} to {}); {conclusion}",
        fmt_num(ev.canary.failures),
        fmt_num(ev.canary.requests),
        fmt_pct(ev.canary.rate()),
        fmt_num(ev.stable.failures),
        fmt_num(ev.stable.requests),
        fmt_pct(ev.stable.rate()),
        fmt_pct(diff.abs()),
        cs.tolerance,
        fmt_pct(ev.excess_lower),
        fmt_pct(ev.excess_upper),
    );
}

/// E-values for people: 3 significant digits (they span many decades).
pub(super) fn round_evidence(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(2 - v.log10().floor() as i32);
    (v * scale).round() / scale
}

/// The tolerance and a digest (FNV-1a, 64 bits) of the two queries.
fn evidence_basis(cmp: &crate::plan::PlanCompare) -> String {
    let queries = format!("{}\0{}", cmp.requests, cmp.failures);
    format!(
        "{} {:016x}",
        cmp.tolerance.describe(),
        crate::fnv1a(&queries)
    )
}

/// Fail > Error > NoData > Inconclusive > Pass.
fn worst(a: Verdict, b: Verdict) -> Verdict {
    fn rank(v: Verdict) -> u8 {
        match v {
            Verdict::Pass => 0,
            Verdict::Inconclusive => 1,
            Verdict::NoData => 2,
            Verdict::Error => 3,
            Verdict::Fail => 4,
        }
    }
    if rank(b) > rank(a) { b } else { a }
}
