//! The decision procedures the simulator can run on the same traffic:
//!
//! - [`Rollwise`]: the real engine — [`crate::plan::decide`] and
//!   [`crate::plan::analysis_due`] on the validated plan, fed with the same
//!   analysis a controller would run against Prometheus;
//! - [`Flagger`] and [`Argo`]: the rules those products document,
//!   configured by default with their documentation's examples (see
//!   `docs/simulate.md` for the sources and the exact values).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::world::{Event, Mark, Policy, Traffic, Verdict};
use crate::analysis::{
    CompareOutcome, CountsOutcome, MetricOutcome, QueryOutcome, fmt_num, fmt_pct,
};
use crate::api::{ComparisonStatus, Phase, RolloutStatus};
use crate::plan::Plan;
use crate::plan::{
    AnalysisRound, DecisionKind, Observation, Readiness, analysis_due, decide, human,
};

/// The wall-clock time of simulated second 0.
pub fn epoch() -> Timestamp {
    Timestamp::from_second(1_767_225_600).expect("2026-01-01T00:00:00Z")
}

fn secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The rollwise engine, exactly as the controller runs it: `decide` is
/// called when its requeue time has come, analysis runs when
/// `analysis_due` says so, the router carries what the decision asked for.
pub struct Rollwise {
    plan: Plan,
    status: RolloutStatus,
    weight: u8,
    next_due: u64,
    last: Option<(DecisionKind, crate::plan::Reason, u8, String)>,
    people: People,
    /// Since when (second) the rollout waits for a promote.
    waiting_since: Option<u64>,
    /// An A/B route with a match is on the router.
    header_route: bool,
    /// `spec.dependsOn` and what the scenario says the dependencies do.
    dependencies: Option<(
        Vec<crate::plan::depend::Requirement>,
        crate::simulate::dependencies::Timelines,
    )>,
}

/// What the people and the clients around a rollout do in the simulation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct People {
    /// A pause that waits for a promote (`pause: {}`, blue/green without
    /// `autoPromote`) is promoted after this many seconds; `None`: never.
    pub promote_after: Option<u64>,
    /// The share (percent) of all requests that an A/B route's match, or a
    /// blue/green preview route, sends to the canary while the weight is
    /// lower (beta testers, smoke tests).
    pub preview_percent: u8,
}

impl Rollwise {
    pub fn new(plan: Plan) -> Self {
        Self::with_people(plan, People::default())
    }

    pub fn with_people(plan: Plan, people: People) -> Self {
        Rollwise {
            plan,
            status: RolloutStatus::default(),
            weight: 0,
            next_due: 0,
            last: None,
            people,
            waiting_since: None,
            header_route: false,
            dependencies: None,
        }
    }

    /// Follow the dependencies the scenario describes (`spec.dependsOn`).
    pub fn with_dependencies(
        mut self,
        reqs: Vec<crate::plan::depend::Requirement>,
        timelines: crate::simulate::dependencies::Timelines,
    ) -> Self {
        self.dependencies = Some((reqs, timelines));
        self
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn status(&self) -> &RolloutStatus {
        &self.status
    }

    /// What Prometheus would answer now: every threshold metric gets the
    /// canary's error rate over the last minute (NaN without requests),
    /// every comparison the cumulative counts of both versions since the
    /// canary first got traffic.
    fn analysis(&self, t: u64, now: Timestamp, traffic: &Traffic) -> AnalysisRound {
        let minute = traffic.seen_last(t, 60);
        let rate = minute.canary_rate().unwrap_or(f64::NAN);
        let since = self
            .status
            .canary_traffic_since
            .as_ref()
            .map(|s| epoch().duration_until(s.0).as_secs().max(0) as u64)
            .unwrap_or(t);
        let c = traffic.seen_window(since, t);
        let count = |x: u64| QueryOutcome::Value(x as f64);
        AnalysisRound {
            at: now,
            outcomes: self
                .plan
                .metrics
                .iter()
                .map(|m| MetricOutcome {
                    name: m.name.clone(),
                    outcome: QueryOutcome::Value(rate),
                })
                .collect(),
            comparisons: self
                .plan
                .compare
                .iter()
                .map(|cmp| CompareOutcome {
                    name: cmp.name.clone(),
                    canary: CountsOutcome::from_queries(
                        count(c.canary_requests),
                        count(c.canary_failures),
                    ),
                    stable: CountsOutcome::from_queries(
                        count(c.stable_requests),
                        count(c.stable_failures),
                    ),
                })
                .collect(),
        }
    }
}

impl Rollwise {
    /// The promote someone sends at second `t`, if they do.
    fn promote_now(&self, t: u64) -> Option<crate::plan::ManualAction> {
        let (since, after) = (self.waiting_since?, self.people.promote_after?);
        (t >= since + after).then_some(crate::plan::ManualAction::Promote)
    }
}

fn mark(kind: DecisionKind) -> Mark {
    match kind {
        DecisionKind::Restart => Mark::Start,
        DecisionKind::SetWeight | DecisionKind::Advance | DecisionKind::Promote => Mark::Advance,
        DecisionKind::Hold | DecisionKind::Pause => Mark::Hold,
        DecisionKind::Rollback | DecisionKind::Abort => Mark::Rollback,
        DecisionKind::Complete => Mark::Promote,
    }
}

impl Policy for Rollwise {
    fn name(&self) -> &'static str {
        "rollwise"
    }

    fn describe(&self) -> String {
        describe_plan(&self.plan)
    }

    fn weight(&self) -> u8 {
        self.weight
    }

    fn traffic_share(&self) -> u8 {
        let preview = self.header_route
            || (self.plan.blue_green.is_some() && !self.status.phase.is_terminal());
        if preview {
            self.weight.max(self.people.preview_percent)
        } else {
            self.weight
        }
    }

    fn tick(
        &mut self,
        t: u64,
        traffic: &Traffic,
        canary_ready: bool,
        events: &mut Vec<Event>,
    ) -> Option<(Verdict, String)> {
        if t < self.next_due {
            return None;
        }
        let now = epoch()
            .checked_add(SignedDuration::from_secs(t as i64))
            .expect("simulated time fits");
        // Requeues below a second (right after a transition) come back
        // within the same simulated second, as a controller would.
        for _ in 0..16 {
            let analysis = analysis_due(&self.plan, &self.status, self.weight, now)
                .then(|| self.analysis(t, now, traffic));
            let obs = Observation {
                generation: 1,
                canary: if canary_ready {
                    Readiness::Ready
                } else {
                    Readiness::NotReady("the canary is not available (scenario canaryReady)".into())
                },
                actual_weight: Some(self.weight),
                analysis,
                action: self.promote_now(t),
                // Webhook and Job checks are external yes/no answers with
                // nothing to simulate: every check passes at once, so the
                // simulation studies the analysis alone (docs/checks.md).
                checks: crate::plan::checks::due(&self.status, now)
                    .into_iter()
                    .map(|d| crate::plan::checks::CheckResult {
                        name: d.name,
                        point: d.point,
                        step: d.step,
                        outcome: crate::plan::checks::CheckOutcome::Passed,
                        job_name: None,
                        http_status: None,
                        result: "simulated pass".into(),
                        message: "checks pass in a simulation".into(),
                    })
                    .collect(),
            };
            let mut d = decide(&self.plan, &self.status, &obs, now);
            if let Some((reqs, timelines)) = &self.dependencies {
                let seen = crate::simulate::dependencies::observed_at(reqs, timelines, t);
                d = crate::plan::depend::gate(&self.plan, &self.status, reqs, &seen, d, now)
                    .decision;
            }
            self.weight = d.weight;
            self.header_route = d.header_routes.iter().any(|r| !r.matches.is_empty());
            self.status = d.status;
            self.waiting_since = match (d.reason, self.waiting_since) {
                (crate::plan::Reason::ManualPause, Some(since)) => Some(since),
                (crate::plan::Reason::ManualPause, None) => Some(t),
                _ => None,
            };
            self.status.canary_weight = i32::from(self.weight);
            let key = (d.kind, d.reason, d.weight, self.status.step.clone());
            if self.last.as_ref() != Some(&key) {
                events.push(Event::new(
                    t,
                    self.status.step.clone(),
                    d.weight,
                    d.kind.as_str(),
                    d.reason.as_str(),
                    d.message,
                    mark(d.kind),
                ));
                self.last = Some(key);
            }
            match self.status.phase {
                Phase::Succeeded => {
                    return Some((Verdict::Promoted, d.reason.as_str().to_string()));
                }
                Phase::RolledBack | Phase::Aborted => {
                    return Some((Verdict::RolledBack, d.reason.as_str().to_string()));
                }
                _ => {}
            }
            if d.requeue_after >= Duration::from_secs(1) {
                self.next_due = t + secs(d.requeue_after).max(1);
                // A dependency's change wakes it, as the operator's index does.
                if let Some(next) = self
                    .dependencies
                    .as_ref()
                    .and_then(|(_, tl)| crate::simulate::dependencies::next_change(tl, t))
                {
                    self.next_due = self.next_due.min(next);
                }
                // Someone promotes at their time, not the operator's.
                if let (Some(since), Some(after)) = (self.waiting_since, self.people.promote_after)
                {
                    self.next_due = self.next_due.min((since + after).max(t + 1));
                }
                return None;
            }
        }
        self.next_due = t + 1;
        None
    }

    fn conclusive(&self) -> bool {
        let c = &self.status.comparisons;
        !c.is_empty()
            && (c.iter().all(ComparisonStatus::is_fine) || c.iter().any(ComparisonStatus::is_harm))
    }
}

/// A plan in one line: steps, interval, analysis.
pub fn describe_plan(plan: &Plan) -> String {
    use crate::plan::PlanStep;
    let steps = if plan.steps == crate::plan::compile::default_steps() {
        "default steps 5/33/50/100% with 5m pauses".to_string()
    } else {
        plan.steps
            .iter()
            .map(|s| match s {
                PlanStep::SetWeight(w) => format!("{w}%"),
                PlanStep::Pause(Some(d)) => format!("pause {}", human(*d)),
                PlanStep::Pause(None) => "pause until promoted".into(),
                PlanStep::HeaderRoute(i) => format!(
                    "header route {}",
                    plan.routes
                        .get(*i as usize)
                        .map(|r| r.name.as_str())
                        .unwrap_or("?")
                ),
            })
            .collect::<Vec<_>>()
            .join(" → ")
    };
    let mut parts = vec![steps, format!("interval {}", human(plan.interval))];
    for m in &plan.metrics {
        parts.push(format!(
            "metric {} {} (failureLimit {})",
            m.name,
            crate::analysis::describe_bound(m),
            m.failure_limit
        ));
    }
    for c in &plan.compare {
        parts.push(format!(
            "compare {} tolerance {}",
            c.name,
            c.tolerance.describe()
        ));
    }
    if !plan.compare.is_empty() {
        parts.push(format!(
            "confidence {} (rollback {})",
            fmt_num(plan.confidence),
            fmt_num(plan.rollback_confidence)
        ));
    }
    if let Some(b) = plan.max_extra_failures {
        parts.push(format!("maxExtraFailures {}", fmt_num(b)));
    }
    parts.join(", ")
}

mod argo;
mod flagger;

pub use argo::*;
pub use flagger::*;

/// Percentages for tables.
pub fn pct(x: f64) -> String {
    fmt_pct(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::scenario::{Base, Scenario};
    use crate::simulate::world::run;

    fn scenario(rps: f64, stable: f64, canary: &str, duration: &str) -> Scenario {
        Scenario::parse(
            &format!(
                "duration: {duration}\ntraffic: deterministic\nrequestRate: {rps}\nstable: {{errorRate: {stable}}}\ncanary: {{errorRate: {canary}}}"
            ),
            Base::None,
        )
        .unwrap()
    }

    #[test]
    fn flagger_documented_example_rolls_back_a_failing_canary_after_ten_failed_checks() {
        // interval 1m, threshold 10: checks at 1..10 min all fail; the
        // scheduler rolls back on its next tick (the threshold is checked
        // before the analysis), at 11 min.
        let s = scenario(100.0, 0.001, "1.0", "1h");
        let mut f = Flagger::new(FlaggerConfig::default());
        let r = run(&s, &mut f, 1);
        assert_eq!(r.summary.outcome, Verdict::RolledBack);
        assert_eq!(f.failed_checks(), 10);
        assert_eq!(r.summary.decided_after_seconds, Some(11 * 60));
        // The canary stayed at the first step (2%) the whole time.
        assert_eq!(r.summary.max_weight_before_decision, 2);
        assert_eq!(r.summary.canary_requests, 2 * 11 * 60);
        let holds = r.timeline.iter().filter(|e| e.mark == Mark::Hold).count();
        assert_eq!(holds, 10);
    }

    #[test]
    fn flagger_documented_example_promotes_a_healthy_canary_after_25_minutes() {
        // step 2%, max 50%: 25 passing checks (1..25 min), promotion at the
        // 25th (weight already 50%).
        let s = scenario(100.0, 0.001, "0.001", "2h");
        let r = run(&s, &mut Flagger::new(FlaggerConfig::default()), 1);
        assert_eq!(r.summary.outcome, Verdict::Promoted);
        assert_eq!(r.summary.decided_after_seconds, Some(25 * 60));
        assert_eq!(r.summary.max_weight_before_decision, 50);
        assert_eq!(r.weights.last(), Some(&(25 * 60, 100)));
    }

    #[test]
    fn flagger_counts_no_data_as_a_failed_check() {
        let s = scenario(0.0, 0.0, "0.0", "1h");
        let mut f = Flagger::new(FlaggerConfig::default());
        let r = run(&s, &mut f, 1);
        assert_eq!(r.summary.outcome, Verdict::RolledBack);
        assert!(
            r.timeline
                .iter()
                .any(|e| e.message.contains("no values found"))
        );
    }

    #[test]
    fn argo_documented_example_aborts_after_failure_limit_plus_one_measurements() {
        // startingStep 2: the AnalysisRun starts with setWeight 40 at 10 min
        // and measures at once, then every 5 min: failures at 10, 15, 20,
        // 25 min; the 4th (> failureLimit 3) aborts. 15 min after the
        // analysis started, 25 min after the rollout started.
        let s = scenario(100.0, 0.001, "1.0", "2h");
        let mut a = Argo::new(ArgoConfig::default());
        let r = run(&s, &mut a, 1);
        assert_eq!(r.summary.outcome, Verdict::RolledBack);
        assert_eq!(a.failed_measurements(), 4);
        assert_eq!(r.summary.decided_after_seconds, Some(25 * 60));
        assert_eq!(r.summary.max_weight_before_decision, 60);
        // Analysis from the first step: 15 min.
        let mut a = Argo::new(ArgoConfig {
            starting_step: 0,
            ..Default::default()
        });
        let r = run(&s, &mut a, 1);
        assert_eq!(r.summary.decided_after_seconds, Some(15 * 60));
    }

    #[test]
    fn argo_documented_example_promotes_a_healthy_canary_after_40_minutes() {
        let s = scenario(100.0, 0.001, "0.001", "2h");
        let r = run(&s, &mut Argo::new(ArgoConfig::default()), 1);
        assert_eq!(r.summary.outcome, Verdict::Promoted);
        assert_eq!(r.summary.decided_after_seconds, Some(40 * 60));
        let w: Vec<u8> = r.weights.iter().map(|(_, w)| *w).collect();
        assert_eq!(w, vec![0, 20, 40, 60, 80, 100]);
    }
}
