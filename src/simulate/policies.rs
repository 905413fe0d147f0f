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

/// Flagger's canary analysis: every `interval` the canary's request success
/// rate over `window` is checked against a minimum; a failed check (or "no
/// values found") increments the failed checks and holds the weight; at
/// the next tick after the count reached `threshold` the canary is rolled
/// back; a passing check raises the weight by `step_weight`, and a passing
/// check at `max_weight` promotes.
#[derive(Debug, Clone, PartialEq)]
pub struct FlaggerConfig {
    pub interval: u64,
    pub threshold: u32,
    pub step_weight: u8,
    pub max_weight: u8,
    /// `request-success-rate` `thresholdRange.min`, in percent.
    pub min_success_percent: f64,
    /// The metric's query window (`interval` of the metric).
    pub window: u64,
}

impl Default for FlaggerConfig {
    /// Flagger's documented example: `interval: 1m`, `threshold: 10`,
    /// `stepWeight: 2`, `maxWeight: 50`, request-success-rate min 99 over 1m.
    fn default() -> Self {
        FlaggerConfig {
            interval: 60,
            threshold: 10,
            step_weight: 2,
            max_weight: 50,
            min_success_percent: 99.0,
            window: 60,
        }
    }
}

pub struct Flagger {
    cfg: FlaggerConfig,
    weight: u8,
    failed: u32,
    started: bool,
    waiting: bool,
    next: u64,
}

impl Flagger {
    pub fn new(cfg: FlaggerConfig) -> Self {
        Flagger {
            cfg,
            weight: 0,
            failed: 0,
            started: false,
            waiting: false,
            next: 0,
        }
    }

    pub fn failed_checks(&self) -> u32 {
        self.failed
    }

    fn step(&self) -> String {
        format!("{}/{}%", self.weight, self.cfg.max_weight)
    }
}

impl Policy for Flagger {
    fn name(&self) -> &'static str {
        "flagger"
    }

    fn describe(&self) -> String {
        let c = &self.cfg;
        format!(
            "interval {}, threshold {}, stepWeight {}, maxWeight {}, request-success-rate min {}% over {}",
            human(Duration::from_secs(c.interval)),
            c.threshold,
            c.step_weight,
            c.max_weight,
            fmt_num(c.min_success_percent),
            human(Duration::from_secs(c.window))
        )
    }

    fn weight(&self) -> u8 {
        self.weight
    }

    fn tick(
        &mut self,
        t: u64,
        traffic: &Traffic,
        canary_ready: bool,
        events: &mut Vec<Event>,
    ) -> Option<(Verdict, String)> {
        if t < self.next {
            return None;
        }
        self.next = t + self.cfg.interval;
        if !self.started {
            if !canary_ready {
                if !self.waiting {
                    self.waiting = true;
                    events.push(Event::new(
                        t,
                        "0%",
                        0,
                        "Waiting",
                        "CanaryNotReady",
                        "canary deployment not ready: waiting for rollout to finish".into(),
                        Mark::Hold,
                    ));
                }
                return None;
            }
            self.started = true;
            self.weight = self.cfg.step_weight.min(100);
            events.push(Event::new(
                t,
                self.step(),
                self.weight,
                "Advance",
                "Started",
                format!(
                    "Starting canary analysis; advance canary weight {}",
                    self.weight
                ),
                Mark::Start,
            ));
            return None;
        }
        if self.failed >= self.cfg.threshold {
            self.weight = 0;
            events.push(Event::new(
                t,
                self.step(),
                0,
                "Rollback",
                "FailedChecksThreshold",
                format!(
                    "Rolling back: failed checks threshold reached {}",
                    self.failed
                ),
                Mark::Rollback,
            ));
            return Some((Verdict::RolledBack, "FailedChecksThreshold".into()));
        }
        let c = traffic.seen_last(t, self.cfg.window);
        let failure = match c.canary_rate() {
            None => Some(format!(
                "Halt advancement no values found for metric request-success-rate (no canary requests in the last {})",
                human(Duration::from_secs(self.cfg.window))
            )),
            Some(rate) => {
                let success = 100.0 * (1.0 - rate);
                (success < self.cfg.min_success_percent).then(|| {
                    format!(
                        "Halt advancement success rate {:.2}% < {}%",
                        success,
                        fmt_num(self.cfg.min_success_percent)
                    )
                })
            }
        };
        if let Some(why) = failure {
            self.failed += 1;
            events.push(Event::new(
                t,
                self.step(),
                self.weight,
                "Halt",
                "CheckFailed",
                format!(
                    "{why} (failed checks {}/{})",
                    self.failed, self.cfg.threshold
                ),
                Mark::Hold,
            ));
            return None;
        }
        if self.weight >= self.cfg.max_weight {
            self.weight = 100;
            events.push(Event::new(
                t,
                "promoted",
                100,
                "Promote",
                "MaxWeightReached",
                "Copying canary template spec to primary: promotion".into(),
                Mark::Promote,
            ));
            return Some((Verdict::Promoted, "MaxWeightReached".into()));
        }
        self.weight = self.weight.saturating_add(self.cfg.step_weight).min(100);
        events.push(Event::new(
            t,
            self.step(),
            self.weight,
            "Advance",
            "CheckPassed",
            format!("Advance canary weight {}", self.weight),
            Mark::Advance,
        ));
        None
    }
}

/// One step of an Argo Rollouts canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgoStep {
    SetWeight(u8),
    /// Seconds.
    Pause(u64),
}

/// Argo Rollouts' background analysis: an AnalysisRun starts when the
/// rollout reaches `starting_step`, measures at once and then every
/// `interval`; a measurement below `min_success` (or NaN: no requests) is
/// failed; more than `failure_limit` failed measurements fail the run and
/// abort the rollout (weight 0). The steps run on their own timer.
#[derive(Debug, Clone, PartialEq)]
pub struct ArgoConfig {
    pub steps: Vec<ArgoStep>,
    pub starting_step: usize,
    pub interval: u64,
    pub failure_limit: u32,
    /// `successCondition: result >= min_success`.
    pub min_success: f64,
    /// The query's range (`[5m]`).
    pub window: u64,
}

impl Default for ArgoConfig {
    /// Argo Rollouts' documented background-analysis example: setWeight
    /// 20/40/60/80 each followed by `pause: {duration: 10m}`, `startingStep:
    /// 2`, success-rate `interval: 5m`, `successCondition: result >= 0.95`,
    /// `failureLimit: 3`, query range `[5m]`.
    fn default() -> Self {
        ArgoConfig {
            steps: vec![
                ArgoStep::SetWeight(20),
                ArgoStep::Pause(600),
                ArgoStep::SetWeight(40),
                ArgoStep::Pause(600),
                ArgoStep::SetWeight(60),
                ArgoStep::Pause(600),
                ArgoStep::SetWeight(80),
                ArgoStep::Pause(600),
            ],
            starting_step: 2,
            interval: 300,
            failure_limit: 3,
            min_success: 0.95,
            window: 300,
        }
    }
}

pub struct Argo {
    cfg: ArgoConfig,
    weight: u8,
    started: bool,
    index: usize,
    step_started: u64,
    next_measurement: Option<u64>,
    failed: u32,
    measurements: u32,
}

impl Argo {
    pub fn new(cfg: ArgoConfig) -> Self {
        Argo {
            cfg,
            weight: 0,
            started: false,
            index: 0,
            step_started: 0,
            next_measurement: None,
            failed: 0,
            measurements: 0,
        }
    }

    pub fn failed_measurements(&self) -> u32 {
        self.failed
    }

    fn step(&self) -> String {
        format!(
            "{}/{}",
            (self.index + 1).min(self.cfg.steps.len()),
            self.cfg.steps.len()
        )
    }

    fn measure(
        &mut self,
        t: u64,
        traffic: &Traffic,
        events: &mut Vec<Event>,
    ) -> Option<(Verdict, String)> {
        self.measurements += 1;
        self.next_measurement = Some(t + self.cfg.interval);
        let c = traffic.seen_last(t, self.cfg.window);
        let failure = match c.canary_rate() {
            None => Some("result NaN (no canary requests in the window)".to_string()),
            Some(rate) => {
                let success = 1.0 - rate;
                (success < self.cfg.min_success).then(|| {
                    format!(
                        "result {} < {}",
                        fmt_num(success),
                        fmt_num(self.cfg.min_success)
                    )
                })
            }
        };
        let why = failure?;
        self.failed += 1;
        if self.failed > self.cfg.failure_limit {
            self.weight = 0;
            events.push(Event::new(
                t,
                self.step(),
                0,
                "Abort",
                "AnalysisRunFailed",
                format!(
                    "success-rate measurement {} failed: {why}; {} failed > failureLimit {}: AnalysisRun Failed, rollout aborted",
                    self.measurements, self.failed, self.cfg.failure_limit
                ),
                Mark::Rollback,
            ));
            return Some((Verdict::RolledBack, "AnalysisRunFailed".into()));
        }
        events.push(Event::new(
            t,
            self.step(),
            self.weight,
            "Measurement",
            "MeasurementFailed",
            format!(
                "success-rate measurement {} failed: {why} ({} failed, failureLimit {})",
                self.measurements, self.failed, self.cfg.failure_limit
            ),
            Mark::Hold,
        ));
        None
    }
}

impl Policy for Argo {
    fn name(&self) -> &'static str {
        "argo"
    }

    fn describe(&self) -> String {
        let c = &self.cfg;
        let steps = c
            .steps
            .iter()
            .map(|s| match s {
                ArgoStep::SetWeight(w) => format!("{w}%"),
                ArgoStep::Pause(d) => format!("pause {}", human(Duration::from_secs(*d))),
            })
            .collect::<Vec<_>>()
            .join(" → ");
        format!(
            "steps {steps}, startingStep {}, success-rate >= {} over {} every {}, failureLimit {}",
            c.starting_step,
            fmt_num(c.min_success),
            human(Duration::from_secs(c.window)),
            human(Duration::from_secs(c.interval)),
            c.failure_limit
        )
    }

    fn weight(&self) -> u8 {
        self.weight
    }

    fn tick(
        &mut self,
        t: u64,
        traffic: &Traffic,
        canary_ready: bool,
        events: &mut Vec<Event>,
    ) -> Option<(Verdict, String)> {
        if !self.started {
            if !canary_ready {
                return None;
            }
            self.started = true;
            self.step_started = t;
        }
        loop {
            if self.index >= self.cfg.steps.len() {
                self.weight = 100;
                events.push(Event::new(
                    t,
                    "done",
                    100,
                    "Complete",
                    "AllStepsDone",
                    format!(
                        "all {} steps done: rollout completed, 100% canary",
                        self.cfg.steps.len()
                    ),
                    Mark::Promote,
                ));
                return Some((Verdict::Promoted, "AllStepsDone".into()));
            }
            match self.cfg.steps[self.index] {
                ArgoStep::SetWeight(w) => {
                    self.weight = w;
                    self.index += 1;
                    self.step_started = t;
                    events.push(Event::new(
                        t,
                        self.step(),
                        w,
                        "SetWeight",
                        "StepAdvanced",
                        format!("setWeight {w}"),
                        Mark::Advance,
                    ));
                }
                ArgoStep::Pause(d) if t >= self.step_started + d => {
                    self.index += 1;
                    self.step_started = t;
                }
                ArgoStep::Pause(_) => break,
            }
            if self.index >= self.cfg.starting_step && self.next_measurement.is_none() {
                self.next_measurement = Some(t);
                events.push(Event::new(
                    t,
                    self.step(),
                    self.weight,
                    "Analysis",
                    "AnalysisRunStarted",
                    format!(
                        "background AnalysisRun started at step {} (startingStep {})",
                        self.index + 1,
                        self.cfg.starting_step
                    ),
                    Mark::Hold,
                ));
            }
        }
        if self.next_measurement.is_some_and(|n| n <= t) {
            return self.measure(t, traffic, events);
        }
        None
    }
}

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
