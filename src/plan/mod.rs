//! The pure step engine: `decide(plan, status, observation, now) -> Decision`.
//!
//! No I/O and no clock: everything the engine knows comes in as arguments,
//! everything it wants done goes out in the [`Decision`]. All state needed to
//! resume is in the `RolloutStatus` it returns, so a restarted operator that
//! reads the persisted status back decides exactly as an uninterrupted one.
//!
//! Rules, in order of precedence:
//! 1. a new canary (`spec.canary` changed) restarts from step 0 with all
//!    traffic on stable;
//! 2. a manual action (`abort`, `retry`, `promote`, `promote-full`);
//! 3. analysis: more than `failureLimit` failed evaluations of a metric, or
//!    `consecutiveErrorLimit` rounds in a row with query errors, roll back at
//!    once (weight 0), whatever step the rollout is on;
//! 4. terminal phases hold their weight (Succeeded 100, RolledBack/Aborted 0);
//! 5. `spec.paused` holds the current weight;
//! 6. steps: a setWeight step is done when the router carries its weight; a
//!    pause step is done when its duration has passed *and* the latest
//!    analysis round passed (no data is never a pass); a pause without a
//!    duration waits for `promote`. The weight is never raised to a canary
//!    that is not available.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::analysis::sequential::{self, Outcome};
use crate::analysis::{
    CompareOutcome, CountsOutcome, MetricOutcome, QueryOutcome, describe_bound, fmt_num, fmt_pct,
    judge,
};
use crate::api::{
    BudgetStatus, ComparisonStatus, DecisionRecord, EvidenceState, MetricStatus, Phase, Plan,
    PlanStep, RolloutStatus, Verdict,
};
use crate::traffic::{HeaderRoute, Match};

mod reason;
pub use reason::{Class, Reason};

/// Requeue when nothing is pending: the Rollout waits for a change (to
/// itself, its route or its Deployments). The operator watches those and
/// then sets no timer at all; a driver that does not watch (the demo, tests)
/// looks again after this long.
pub const IDLE_REQUEUE: Duration = Duration::from_secs(300);
/// Requeue while waiting for the canary Deployment to become available
/// (the operator also watches the Deployment, so this is a safety net).
pub const READINESS_REQUEUE: Duration = Duration::from_secs(10);
/// The reason of a decision that waits for the canary to become available.
pub const WAITING_FOR_CANARY: Reason = Reason::WaitingForCanary;
/// Requeue right after a transition (the next step is carried out at once).
pub const TRANSITION_REQUEUE: Duration = Duration::from_millis(200);
/// Requeue after a weight change, to read it back.
pub const WEIGHT_REQUEUE: Duration = Duration::from_secs(2);

/// Is the canary able to take traffic?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Why not, for people (e.g. "deployment checkout-v2: 1/3 replicas available").
    NotReady(String),
}

/// A manual action from the `rollwise.io/action` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManualAction {
    /// Skip the current step.
    Promote,
    /// Skip all remaining steps: 100% canary now.
    PromoteFull,
    /// All traffic back to stable, phase Aborted.
    Abort,
    /// After a rollback or abort: start again from step 0.
    Retry,
}

impl ManualAction {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "promote" => Some(Self::Promote),
            "promote-full" => Some(Self::PromoteFull),
            "abort" => Some(Self::Abort),
            "retry" => Some(Self::Retry),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::PromoteFull => "promote-full",
            Self::Abort => "abort",
            Self::Retry => "retry",
        }
    }
}

/// One analysis round, run by the controller when [`analysis_due`] said so.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisRound {
    pub at: Timestamp,
    /// One outcome per plan metric, by name.
    pub outcomes: Vec<MetricOutcome>,
    /// One outcome per plan comparison, by name.
    pub comparisons: Vec<CompareOutcome>,
}

/// What the controller observed this reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// `metadata.generation` of the Rollout.
    pub generation: i64,
    pub canary: Readiness,
    /// The canary weight the router carries; `None` when it cannot tell
    /// (then the last weight written is assumed).
    pub actual_weight: Option<u8>,
    pub analysis: Option<AnalysisRound>,
    pub action: Option<ManualAction>,
}

/// What kind of decision was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    /// A new canary (or a retry): back to step 0, all traffic on stable.
    Restart,
    /// Entered a setWeight step: the router must carry the new weight.
    SetWeight,
    /// Moved to the next step (no weight change).
    Advance,
    /// Nothing changes now; `reason` says what it waits for.
    Hold,
    /// Entered a pause that waits for a person.
    Pause,
    /// A manual promote was carried out.
    Promote,
    /// The analysis failed: all traffic to stable.
    Rollback,
    /// Aborted by hand: all traffic to stable.
    Abort,
    /// The last step is done: 100% canary.
    Complete,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restart => "Restart",
            Self::SetWeight => "SetWeight",
            Self::Advance => "Advance",
            Self::Hold => "Hold",
            Self::Pause => "Pause",
            Self::Promote => "Promote",
            Self::Rollback => "Rollback",
            Self::Abort => "Abort",
            Self::Complete => "Complete",
        }
    }
    pub const ALL: [DecisionKind; 9] = [
        Self::Restart,
        Self::SetWeight,
        Self::Advance,
        Self::Hold,
        Self::Pause,
        Self::Promote,
        Self::Rollback,
        Self::Abort,
        Self::Complete,
    ];
}

/// Something worth an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub warning: bool,
    /// PascalCase.
    pub reason: Reason,
    pub message: String,
}

/// The outcome of a manual action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionOutcome {
    pub action: ManualAction,
    pub accepted: bool,
    pub message: String,
}

/// What the engine decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub kind: DecisionKind,
    /// PascalCase: the rule that fired.
    pub reason: Reason,
    pub message: String,
    /// The canary weight the router must carry after this decision.
    pub weight: u8,
    /// The next status (conditions are added by `status::build`).
    pub status: RolloutStatus,
    pub requeue_after: Duration,
    /// Nothing is due at a time: the Rollout waits for a change (to itself,
    /// its route or its Deployments) or a person. A driver that watches
    /// those sets no timer; `requeue_after` is then [`IDLE_REQUEUE`].
    pub waits_for_change: bool,
    pub transitions: Vec<Transition>,
    /// Set when a manual action was carried out or refused: the controller
    /// then removes the annotation.
    pub action: Option<ActionOutcome>,
    /// The A/B routes the router must carry (none once the rollout is over).
    pub header_routes: Vec<HeaderRoute>,
    /// Deployments to scale (opt-in draining; never deletes anything).
    pub scale: ScaleActions,
}

/// Opt-in scaling the controller carries out with the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScaleActions {
    /// Scale the old (stable) Deployment to zero, recording its replicas.
    pub scale_down_stable: bool,
    /// Scale the canary Deployment to zero, recording its replicas.
    pub scale_down_canary: bool,
    /// Restore any Deployment of this Rollout that rollwise scaled down.
    pub restore: bool,
}

/// Status times are whole seconds (that is how they are persisted).
fn time(t: Timestamp) -> Time {
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

fn to_std(d: SignedDuration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// Human form of a duration: `1m20s`, `3h`, `2d4h`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 if s.is_multiple_of(60) => format!("{}m", s / 60),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// The canary weight the rollout should carry in its current state, before
/// any gating (readiness, pause).
pub fn planned_weight(plan: &Plan, status: &RolloutStatus) -> u8 {
    match status.phase {
        Phase::Succeeded => 100,
        Phase::RolledBack | Phase::Aborted => 0,
        _ => plan.target_weight(status.current_step_index.max(0) as usize),
    }
}

/// The canary weight the route carries, and the weight the engine should
/// see as in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    /// What the router read back (or, when it cannot tell, what was last
    /// recorded).
    pub carried: u8,
    /// What the engine decides on.
    pub actual: u8,
}

/// A router that can only approximate a weight (the replicas router works
/// in whole pods: 33% of 10 pods reads back as 40%) carries, for the desired
/// weight, what it read back right after setting it. While the route still
/// carries exactly that, the desired weight is in place; any other reading
/// (someone edited the route) is taken as it is.
pub fn weights(prev: &RolloutStatus, reading: Option<u8>) -> Weights {
    let recorded = prev.canary_weight.clamp(0, 100) as u8;
    let carried = reading.unwrap_or(recorded).min(100);
    let approximated = prev.desired_weight != prev.canary_weight && reading == Some(recorded);
    let actual = if approximated {
        prev.desired_weight.clamp(0, 100) as u8
    } else {
        carried
    };
    Weights { carried, actual }
}

/// The weight someone else set on the route: `Some(found)` when the router
/// reads a canary weight that is not the one rollwise left there (what the
/// status records, or its approximation), once the rollout has started.
/// A `kubectl apply` or a GitOps sync of the route's manifest does this.
pub fn moved_by_others(prev: &RolloutStatus, reading: Option<u8>) -> Option<u8> {
    let found = reading?.min(100);
    let recorded = prev.canary_weight.clamp(0, 100) as u8;
    (!prev.canary_ref.is_empty() && found != recorded).then_some(found)
}

/// The opt-in drain of the old version after a promotion, when it is still
/// to be done: its delay and when it is due.
fn drain_due(plan: &Plan, st: &RolloutStatus, now: Timestamp) -> Option<(Duration, Timestamp)> {
    let after = plan.stable_scale_down_after?;
    if st.phase != Phase::Succeeded || st.stable_scaled_down {
        return None;
    }
    let delay = after
        + plan
            .blue_green
            .map(|g| g.scale_down_delay)
            .unwrap_or_default();
    let done = st.completed_at.as_ref().map(|t| t.0).unwrap_or(now);
    Some((delay, done.checked_add(signed(delay)).unwrap_or(done)))
}

/// Whether deleting the Rollout should return all traffic to stable: not
/// after a promotion that drained the old version (it has no pods left).
pub fn restore_stable_on_delete(status: &RolloutStatus) -> bool {
    !(status.phase == Phase::Succeeded && status.stable_scaled_down)
}

/// When the next analysis round is due, if one is due at all: only while the
/// canary takes traffic and the rollout is not finished. The first round of a
/// step waits one interval so that the data reflects the step's weight.
pub fn analysis_due_at(
    plan: &Plan,
    status: &RolloutStatus,
    actual_weight: u8,
) -> Option<Timestamp> {
    if !plan.has_analysis()
        || status.phase.is_terminal()
        || (actual_weight == 0 && plan.blue_green.is_none())
    {
        return None;
    }
    if status.canary_ref != plan.canary_ref {
        return None;
    }
    let base = [
        status.last_analysis_at.as_ref().map(|t| t.0),
        status.step_started_at.as_ref().map(|t| t.0),
    ]
    .into_iter()
    .flatten()
    .max()?;
    base.checked_add(signed(plan.interval)).ok()
}

/// Should the controller run an analysis round now?
pub fn analysis_due(
    plan: &Plan,
    status: &RolloutStatus,
    actual_weight: u8,
    now: Timestamp,
) -> bool {
    analysis_due_at(plan, status, actual_weight).is_some_and(|t| t <= now)
}

struct Builder<'a> {
    plan: &'a Plan,
    st: RolloutStatus,
    now: Timestamp,
    transitions: Vec<Transition>,
    action: Option<ActionOutcome>,
    scale: ScaleActions,
    /// Something is due at a time although the step itself waits for a
    /// change (a drain after the promotion).
    timer: bool,
}

impl Builder<'_> {
    fn finish(
        mut self,
        kind: DecisionKind,
        reason: Reason,
        message: String,
        weight: u8,
        requeue: Duration,
    ) -> Decision {
        let steps = self.plan.steps.len() as i32;
        self.st.step_count = steps;
        self.st.desired_weight = weight as i32;
        self.st.step = match self.st.phase {
            Phase::Succeeded => format!("{steps}/{steps}"),
            _ => format!("{}/{}", (self.st.current_step_index + 1).min(steps), steps),
        };
        if self.st.verdict.is_empty() {
            self.st.verdict = "-".into();
        }
        // The comparison window starts when the canary first gets traffic
        // (preview traffic from the start for blue/green).
        if (weight > 0 || self.plan.blue_green.is_some()) && self.st.canary_traffic_since.is_none()
        {
            self.st.canary_traffic_since = Some(time(self.now));
        }
        self.st.message = message.clone();
        // `at` is when this decision was first taken: looking again and
        // deciding the same (a Rollout waiting for its canary) changes
        // nothing in status, so costs no status write.
        let same = self.st.last_decision.as_ref().filter(|d| {
            d.kind == kind.as_str() && d.reason == reason.as_str() && d.message == message
        });
        let at = match same {
            Some(d) if d.at.is_some() => d.at.clone(),
            _ => Some(time(self.now)),
        };
        self.st.last_decision = Some(DecisionRecord {
            kind: kind.as_str().into(),
            reason: reason.as_str().into(),
            message: message.clone(),
            at,
        });
        let idle = requeue == IDLE_REQUEUE && !self.timer;
        let (requeue, waits_for_change) = match analysis_due_at(self.plan, &self.st, weight) {
            Some(due) if !matches!(kind, DecisionKind::Rollback | DecisionKind::Abort) => (
                requeue.min(to_std(self.now.duration_until(due)).max(Duration::from_millis(100))),
                false,
            ),
            _ => (requeue, idle),
        };
        let header_routes = if self.st.phase.is_terminal() {
            Vec::new()
        } else {
            self.plan
                .header_routes(self.st.current_step_index.max(0) as usize)
        };
        Decision {
            kind,
            reason,
            message,
            weight,
            status: self.st,
            requeue_after: requeue,
            waits_for_change,
            transitions: self.transitions,
            action: self.action,
            header_routes,
            scale: self.scale,
        }
    }

    fn event(&mut self, warning: bool, reason: Reason, message: String) {
        self.transitions.push(Transition {
            warning,
            reason,
            message,
        });
    }

    fn refuse(&mut self, action: ManualAction, why: String) {
        self.event(
            true,
            Reason::ActionRefused,
            format!("{} refused: {why}", action.as_str()),
        );
        self.action = Some(ActionOutcome {
            action,
            accepted: false,
            message: why,
        });
    }

    fn accept(&mut self, action: ManualAction, what: String) {
        self.action = Some(ActionOutcome {
            action,
            accepted: true,
            message: what,
        });
    }

    /// Back to step 0 with all traffic on stable and clean counters.
    fn reset(&mut self) {
        let st = &mut self.st;
        st.phase = Phase::Pending;
        st.current_step_index = 0;
        st.step_started_at = Some(time(self.now));
        st.canary_ref = self.plan.canary_ref.clone();
        st.passes_in_step = 0;
        st.consecutive_errors = 0;
        st.last_analysis_at = None;
        st.analysis.clear();
        st.comparisons.clear();
        st.budget = None;
        st.canary_traffic_since = None;
        st.completed_at = None;
        st.stable_scaled_down = false;
        st.canary_scaled_down = false;
        st.verdict = "-".into();
        self.scale.restore = true;
    }

    fn enter_step(&mut self, index: usize) {
        self.st.current_step_index = index as i32;
        self.st.step_started_at = Some(time(self.now));
        self.st.passes_in_step = 0;
    }

    fn complete(mut self, reason: Reason, message: String) -> Decision {
        self.st.phase = Phase::Succeeded;
        self.st.completed_at = Some(time(self.now));
        self.st.current_step_index = self.plan.steps.len() as i32;
        self.event(false, Reason::RolloutCompleted, message.clone());
        // Come back for the drain of the old version, if one is asked for.
        let requeue = match drain_due(self.plan, &self.st, self.now) {
            Some((_, due)) => {
                self.timer = true;
                to_std(self.now.duration_until(due))
            }
            None => IDLE_REQUEUE,
        };
        self.finish(DecisionKind::Complete, reason, message, 100, requeue)
    }

    fn rollback(
        mut self,
        phase: Phase,
        kind: DecisionKind,
        reason: Reason,
        message: String,
    ) -> Decision {
        self.st.phase = phase;
        // The controller sets `canaryScaledDown` once it is done.
        if self.plan.canary_scale_down_on_rollback && !self.st.canary_scaled_down {
            self.scale.scale_down_canary = true;
        }
        self.event(true, reason, message.clone());
        self.finish(kind, reason, message, 0, IDLE_REQUEUE)
    }
}

/// Record an analysis round in the status. Returns the rollback message when
/// the round (with the earlier ones) calls for a rollback.
fn record_analysis(
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
                match sequential::evaluate(&prev_state, *c, *s, cmp.tolerance, plan.confidence) {
                    Err(e) => {
                        cs.message = format!("bad counts: {e}");
                        Verdict::Error
                    }
                    Ok(ev) => {
                        fill_comparison(&mut cs, &ev, basis);
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
fn fill_comparison(cs: &mut ComparisonStatus, ev: &sequential::Evidence, basis: String) {
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
    let needs = format!(
        "needs {}× for {}% confidence",
        fmt_num(cs.evidence_bar),
        fmt_num(cs.confidence * 100.0)
    );
    let conclusion = match ev.outcome {
        Outcome::Harm => format!(
            "worse than tolerated: the evidence that the canary is worse is {}× ({needs})",
            fmt_num(cs.harm_evidence),
        ),
        Outcome::Fine => format!(
            "within tolerance: the evidence that the canary is fine is {}× ({needs})",
            fmt_num(cs.fine_evidence),
        ),
        Outcome::Inconclusive => {
            let more = match ev.more_requests_needed {
                Some(n) => format!("; roughly {n} more canary requests to tell"),
                None => String::new(),
            };
            format!(
                "not enough evidence yet: that the canary is worse {}×, that it is fine {}× (either {needs}){more}",
                fmt_num(cs.harm_evidence),
                fmt_num(cs.fine_evidence),
            )
        }
    };
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
fn round_evidence(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(2 - v.log10().floor() as i32);
    (v * scale).round() / scale
}

/// The tolerance and a digest (FNV-1a, 64 bits) of the two queries.
fn evidence_basis(cmp: &crate::api::PlanCompare) -> String {
    let queries = format!("{}\0{}", cmp.requests, cmp.failures);
    format!(
        "{} {:016x}",
        cmp.tolerance.describe(),
        crate::fnv1a(&queries)
    )
}

/// Extra failed requests the canary could cause in the next interval at
/// `weight` percent, from the latest comparisons: twice the point estimate
/// (the excess rate is noisy while failures are few, and the next look may
/// come a little late) plus three standard deviations of the interval's own
/// canary failures (one unlucky interval). The traffic rate is that of both
/// sides together, so a weight just raised is accounted for.
fn projected_extra(plan: &Plan, st: &RolloutStatus, now: Timestamp, weight: u8) -> Option<f64> {
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

/// Why the analysis gate is closed, or `None` when it is open.
fn analysis_gate(plan: &Plan, st: &RolloutStatus, weight: u8) -> Option<(Reason, String)> {
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

/// `header x-beta=true and cookie tester=1`.
fn describe_matches(matches: &[Match]) -> String {
    matches
        .iter()
        .map(|m| match m {
            Match::Header { name, value } => format!("header {name}={value}"),
            Match::Cookie { name, value } => format!("cookie {name}={value}"),
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Early promotion: the comparisons say the canary is within tolerance with
/// confidence (and every threshold metric passes) in this step.
fn evidence_fine(plan: &Plan, st: &RolloutStatus) -> bool {
    !plan.compare.is_empty()
        && st.passes_in_step > 0
        && st.verdict == Verdict::Pass.as_str()
        && st.comparisons.len() == plan.compare.len()
        && st.comparisons.iter().all(ComparisonStatus::is_fine)
}

/// Why raising the weight from `from` to `to` would likely exhaust the
/// exposure budget within one interval, if it would.
fn budget_guard(
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

/// The engine. Pure: same inputs, same decision.
pub fn decide(plan: &Plan, prev: &RolloutStatus, obs: &Observation, now: Timestamp) -> Decision {
    // Status timestamps are persisted with whole seconds: decide on the same
    // precision, so a decision from read-back status equals the original.
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let mut st = prev.clone();
    st.observed_generation = obs.generation;
    let actual = obs
        .actual_weight
        .unwrap_or(prev.canary_weight.clamp(0, 100) as u8)
        .min(100);
    st.canary_weight = actual as i32;
    let mut b = Builder {
        plan,
        st,
        now,
        transitions: Vec::new(),
        action: None,
        scale: ScaleActions::default(),
        timer: false,
    };
    let ready = obs.canary == Readiness::Ready;

    // 1. A new canary starts over, all traffic first on stable.
    if b.st.canary_ref != plan.canary_ref {
        let first = b.st.canary_ref.is_empty();
        let msg = if first {
            format!(
                "rollout started: canary {}, all traffic on stable first",
                plan.canary_ref
            )
        } else {
            format!(
                "new canary {} (was {}): starting over from step 1, all traffic on stable",
                plan.canary_ref, b.st.canary_ref
            )
        };
        b.reset();
        b.event(
            false,
            if first {
                Reason::RolloutStarted
            } else {
                Reason::NewCanary
            },
            msg.clone(),
        );
        return b.finish(
            DecisionKind::Restart,
            if first {
                Reason::Started
            } else {
                Reason::NewCanary
            },
            msg,
            0,
            TRANSITION_REQUEUE,
        );
    }

    // 2. Manual actions.
    if let Some(action) = obs.action {
        let phase = b.st.phase;
        match action {
            ManualAction::Abort if phase.is_terminal() => b.refuse(
                action,
                format!("nothing to abort: the rollout is {}", phase.as_str()),
            ),
            ManualAction::Abort => {
                let msg = format!(
                    "aborted by hand at step {}: all traffic back on stable",
                    b.st.current_step_index + 1
                );
                b.accept(action, msg.clone());
                return b.rollback(Phase::Aborted, DecisionKind::Abort, Reason::Aborted, msg);
            }
            ManualAction::Retry if matches!(phase, Phase::RolledBack | Phase::Aborted) => {
                let msg = format!("retry: starting {} again from step 1", plan.canary_ref);
                b.accept(action, msg.clone());
                b.reset();
                b.event(false, Reason::Retry, msg.clone());
                return b.finish(
                    DecisionKind::Restart,
                    Reason::Retry,
                    msg,
                    0,
                    TRANSITION_REQUEUE,
                );
            }
            ManualAction::Retry => b.refuse(
                action,
                format!(
                    "retry applies after a rollback or abort; the rollout is {}",
                    phase.as_str()
                ),
            ),
            ManualAction::Promote | ManualAction::PromoteFull if phase.is_terminal() => {
                b.refuse(action, format!("the rollout is {}", phase.as_str()))
            }
            ManualAction::Promote | ManualAction::PromoteFull if plan.paused => {
                b.refuse(action, "spec.paused is true: set it to false first".into())
            }
            ManualAction::Promote | ManualAction::PromoteFull if !ready => {
                let why = match &obs.canary {
                    Readiness::NotReady(w) => w.clone(),
                    Readiness::Ready => String::new(),
                };
                b.refuse(action, format!("the canary is not available: {why}"))
            }
            ManualAction::PromoteFull => {
                let msg = "promoted fully by hand: 100% canary".to_string();
                b.accept(action, msg.clone());
                b.event(false, Reason::Promoted, msg.clone());
                return b.complete(Reason::PromotedByHand, msg);
            }
            ManualAction::Promote => {
                let from = b.st.current_step_index.max(0) as usize;
                let msg = format!("promoted by hand: skipped step {}", from + 1);
                b.accept(action, msg.clone());
                b.event(false, Reason::Promoted, msg.clone());
                if from + 1 >= plan.steps.len() {
                    return b.complete(Reason::PromotedByHand, msg);
                }
                b.enter_step(from + 1);
                b.st.phase = Phase::Progressing;
                let weight = plan.target_weight(from + 1);
                return b.finish(
                    DecisionKind::Promote,
                    Reason::PromotedByHand,
                    msg,
                    weight,
                    TRANSITION_REQUEUE,
                );
            }
        }
    }

    // 3. Analysis.
    if let Some(round) = &obs.analysis
        && !b.st.phase.is_terminal()
        && let Some((reason, msg)) = record_analysis(plan, &mut b.st, round)
    {
        let msg = format!(
            "rolled back at step {} ({}%): {msg}",
            b.st.current_step_index + 1,
            actual
        );
        return b.rollback(Phase::RolledBack, DecisionKind::Rollback, reason, msg);
    }

    // 4. Terminal phases hold their weight.
    if b.st.phase.is_terminal() {
        let weight = planned_weight(plan, &b.st);
        let msg =
            b.st.last_decision
                .as_ref()
                .filter(|d| d.kind != "Hold")
                .map(|d| d.message.clone())
                .unwrap_or_else(|| b.st.message.clone());
        let reason = match b.st.phase {
            Phase::Succeeded => Reason::Completed,
            Phase::Aborted => Reason::Aborted,
            _ => Reason::RolledBack,
        };
        // Opt-in: a canary scale-down after a rollback that did not happen
        // yet (or failed) is asked for again.
        if matches!(b.st.phase, Phase::RolledBack | Phase::Aborted)
            && plan.canary_scale_down_on_rollback
            && !b.st.canary_scaled_down
        {
            b.scale.scale_down_canary = true;
        }
        // Opt-in draining of the old version after a promotion.
        let mut requeue = IDLE_REQUEUE;
        if let Some((delay, due)) = drain_due(plan, &b.st, now) {
            if now >= due {
                // The controller sets `stableScaledDown` once it is done.
                b.scale.scale_down_stable = true;
                b.event(false, Reason::StableScaledDown, format!("the old version was drained {} after the promotion: scaled to 0 (its replica count is kept in the rollwise.io/scaled-down-from annotation)", human(delay)));
            } else {
                requeue = to_std(now.duration_until(due));
                b.timer = true;
            }
        }
        // Keep the record of the decision that ended the rollout.
        let keep = b.st.last_decision.clone();
        let mut d = b.finish(DecisionKind::Hold, reason, msg, weight, requeue);
        if keep.is_some() {
            d.status.last_decision = keep;
        }
        return d;
    }

    let steps = plan.steps.len();
    let mut index = b.st.current_step_index.max(0) as usize;
    if index >= steps {
        return b.complete(Reason::AllStepsDone, "all steps done: 100% canary".into());
    }

    // 5. Paused by hand: hold the current weight (never above the plan).
    if plan.paused {
        let weight = actual.min(plan.target_weight(index));
        if b.st.phase != Phase::Paused {
            b.event(
                false,
                Reason::Paused,
                format!("paused by spec.paused at step {} ({weight}%)", index + 1),
            );
        }
        b.st.phase = Phase::Paused;
        let msg = format!(
            "paused by spec.paused at step {}/{steps} with {weight}% on the canary",
            index + 1
        );
        return b.finish(
            DecisionKind::Hold,
            Reason::PausedBySpec,
            msg,
            weight,
            IDLE_REQUEUE,
        );
    }

    // 6. Steps. At most one step transition per call; the controller comes
    // back at once after a transition.
    let not_ready = match &obs.canary {
        Readiness::NotReady(why) => Some(why.clone()),
        Readiness::Ready => None,
    };
    match plan.steps[index] {
        PlanStep::SetWeight(w) => {
            if actual == w {
                // Step done (the router carries the weight): next one.
                index += 1;
                if index >= steps {
                    return b.complete(
                        Reason::AllStepsDone,
                        format!("all {steps} steps done: 100% canary"),
                    );
                }
                b.enter_step(index);
                b.st.phase = Phase::Progressing;
                return match plan.steps[index] {
                    PlanStep::SetWeight(next) if next > actual && not_ready.is_some() => {
                        let msg = format!(
                            "step {}/{steps}: waiting for the canary before {next}%: {}",
                            index + 1,
                            not_ready.unwrap_or_default()
                        );
                        b.finish(
                            DecisionKind::Hold,
                            WAITING_FOR_CANARY,
                            msg,
                            actual,
                            READINESS_REQUEUE,
                        )
                    }
                    PlanStep::SetWeight(next) => {
                        let msg = format!(
                            "step {}/{steps}: canary weight {actual}% -> {next}%",
                            index + 1
                        );
                        b.event(false, Reason::WeightChanged, msg.clone());
                        b.finish(
                            DecisionKind::SetWeight,
                            Reason::StepAdvanced,
                            msg,
                            next,
                            WEIGHT_REQUEUE,
                        )
                    }
                    PlanStep::Pause(None) => {
                        let msg = format!(
                            "step {}/{steps}: paused at {actual}% until promoted (rollwise.io/action: promote)",
                            index + 1
                        );
                        b.st.phase = Phase::Paused;
                        b.event(false, Reason::Paused, msg.clone());
                        b.finish(
                            DecisionKind::Pause,
                            Reason::ManualPause,
                            msg,
                            actual,
                            IDLE_REQUEUE,
                        )
                    }
                    PlanStep::HeaderRoute(_) => {
                        let msg = format!("step {}/{steps}: A/B route next", index + 1);
                        b.finish(
                            DecisionKind::Advance,
                            Reason::StepAdvanced,
                            msg,
                            actual,
                            TRANSITION_REQUEUE,
                        )
                    }
                    PlanStep::Pause(Some(d)) => {
                        let msg = format!(
                            "step {}/{steps}: pausing {} at {actual}%",
                            index + 1,
                            human(d)
                        );
                        b.event(false, Reason::StepAdvanced, msg.clone());
                        b.finish(DecisionKind::Advance, Reason::StepAdvanced, msg, actual, d)
                    }
                };
            }
            if w > actual
                && let Some(why) = not_ready
            {
                b.st.phase = if actual == 0 {
                    Phase::Pending
                } else {
                    Phase::Progressing
                };
                let msg = format!(
                    "step {}/{steps}: waiting for the canary before {w}%: {why}",
                    index + 1
                );
                return b.finish(
                    DecisionKind::Hold,
                    WAITING_FOR_CANARY,
                    msg,
                    actual,
                    READINESS_REQUEUE,
                );
            }
            b.st.phase = Phase::Progressing;
            let msg = format!(
                "step {}/{steps}: canary weight {actual}% -> {w}%",
                index + 1
            );
            if b.st
                .last_decision
                .as_ref()
                .is_none_or(|d| d.kind != "SetWeight" || b.st.desired_weight != w as i32)
            {
                b.event(false, Reason::WeightChanged, msg.clone());
            }
            b.finish(
                DecisionKind::SetWeight,
                Reason::SetWeight,
                msg,
                w,
                WEIGHT_REQUEUE,
            )
        }
        PlanStep::HeaderRoute(r) => {
            let route = plan.routes.get(r as usize);
            let (reason, msg) = match route {
                Some(route) if route.matches.is_empty() => (
                    Reason::HeaderRouteRemoved,
                    format!(
                        "step {}/{steps}: A/B route {} removed",
                        index + 1,
                        route.name
                    ),
                ),
                Some(route) => (
                    Reason::HeaderRouteSet,
                    format!(
                        "step {}/{steps}: requests matching {} go to the canary (A/B route {})",
                        index + 1,
                        describe_matches(&route.matches),
                        route.name
                    ),
                ),
                None => (
                    Reason::StepAdvanced,
                    format!("step {}/{steps} done", index + 1),
                ),
            };
            b.event(false, reason, msg.clone());
            let weight = actual.min(plan.target_weight(index));
            if index + 1 >= steps {
                return b.complete(
                    Reason::AllStepsDone,
                    format!("all {steps} steps done: 100% canary"),
                );
            }
            b.enter_step(index + 1);
            b.st.phase = Phase::Progressing;
            b.finish(
                DecisionKind::Advance,
                reason,
                msg,
                weight,
                TRANSITION_REQUEUE,
            )
        }
        PlanStep::Pause(duration) => {
            let target = plan.target_weight(index);
            // Re-assert the planned weight if someone moved it (drift), but
            // never raise it to a canary that is not available.
            let weight = if target > actual && not_ready.is_some() {
                actual
            } else {
                target
            };
            let gate = analysis_gate(plan, &b.st, weight);
            let started = b.st.step_started_at.as_ref().map(|t| t.0).unwrap_or(now);
            match duration {
                None => {
                    let entering = b.st.phase != Phase::Paused;
                    b.st.phase = Phase::Paused;
                    let evidence = gate
                        .as_ref()
                        .map(|(_, m)| format!(" ({m})"))
                        .unwrap_or_default();
                    let msg = format!(
                        "step {}/{steps}: paused at {weight}% until promoted (rollwise.io/action: promote){evidence}",
                        index + 1
                    );
                    // Told once, however the pause was reached (first step,
                    // after an A/B route step, blue/green without
                    // autoPromote, after a resume).
                    if entering {
                        b.event(
                            false,
                            Reason::Paused,
                            format!(
                                "step {}/{steps}: paused at {weight}% until promoted (rollwise.io/action: promote)",
                                index + 1
                            ),
                        );
                    }
                    b.finish(
                        DecisionKind::Hold,
                        Reason::ManualPause,
                        msg,
                        weight,
                        IDLE_REQUEUE,
                    )
                }
                Some(d) => {
                    b.st.phase = Phase::Progressing;
                    let elapsed = to_std(started.duration_until(now));
                    let early = elapsed < d && evidence_fine(plan, &b.st);
                    if elapsed < d && !early {
                        let left = d - elapsed;
                        let msg = format!(
                            "step {}/{steps}: {weight}% on the canary, pause {} left{}",
                            index + 1,
                            human(left),
                            b.st.analysis
                                .iter()
                                .map(|m| format!("; {}", m.message))
                                .collect::<String>()
                        );
                        return b.finish(
                            DecisionKind::Hold,
                            Reason::PauseInProgress,
                            msg,
                            weight,
                            left,
                        );
                    }
                    if let Some((reason, why)) = gate {
                        let msg = format!(
                            "step {}/{steps}: {weight}% on the canary, pause over; {why}",
                            index + 1
                        );
                        return b.finish(DecisionKind::Hold, reason, msg, weight, plan.interval);
                    }
                    let next_weight = plan.target_weight(index + 1);
                    if let Some(why) = budget_guard(plan, &b.st, now, weight, next_weight) {
                        let msg = format!("step {}/{steps}: {why}", index + 1);
                        return b.finish(
                            DecisionKind::Hold,
                            Reason::BudgetGuard,
                            msg,
                            weight,
                            plan.interval,
                        );
                    }
                    index += 1;
                    if index >= steps {
                        let (reason, msg) = if early {
                            (
                                Reason::EvidenceFine,
                                format!(
                                    "evidence says the canary is fine: all {steps} steps done early, 100% canary"
                                ),
                            )
                        } else {
                            (
                                Reason::AllStepsDone,
                                format!("all {steps} steps done and analysis passed: 100% canary"),
                            )
                        };
                        return b.complete(reason, msg);
                    }
                    b.enter_step(index);
                    let msg = if early {
                        format!(
                            "step {}/{steps} done early after {} because the evidence says the canary is fine: moving to step {}",
                            index,
                            human(elapsed),
                            index + 1
                        )
                    } else {
                        format!(
                            "step {}/{steps} done after {}: moving to step {}",
                            index,
                            human(elapsed),
                            index + 1
                        )
                    };
                    b.event(false, Reason::StepAdvanced, msg.clone());
                    let next_weight = plan.target_weight(index);
                    let weight = if next_weight > actual && not_ready.is_some() {
                        actual
                    } else {
                        next_weight
                    };
                    let kind = if weight != actual {
                        DecisionKind::SetWeight
                    } else {
                        DecisionKind::Advance
                    };
                    let reason = if early {
                        Reason::EvidenceFine
                    } else {
                        Reason::StepAdvanced
                    };
                    b.finish(kind, reason, msg, weight, TRANSITION_REQUEUE)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
