//! `decide`: one decision from the plan, the previous status and what was
//! observed, by the rules listed in the module docs of [`crate::plan`].

use std::time::Duration;

use jiff::Timestamp;

use super::checks;
use super::gate::{analysis_gate, budget_guard, evidence_fine, full_weight, risk_bound};
use super::record::record_analysis;
use super::*;
use crate::api::{CheckPoint, DecisionRecord, Phase, RolloutStatus, Verdict};
use crate::traffic::Match;

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
        // Open checks are run by the controller: come back for them.
        let requeue = match checks::requeue(&self.st, self.now) {
            Some(r) => {
                self.timer = true;
                requeue.min(r)
            }
            None => requeue,
        };
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
        st.checks.clear();
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
        let started = checks::start(
            &self.plan.checks,
            &mut self.st,
            CheckPoint::PostRollback,
            None,
            self.now,
        );
        self.transitions.extend(started);
        self.finish(kind, reason, message, 0, IDLE_REQUEUE)
    }

    /// The checks of a point: started if not yet, and why they hold.
    fn checks_hold(&mut self, point: CheckPoint, step: Option<i32>) -> Option<(Reason, String)> {
        if !self.plan.checks.iter().any(|c| c.at.contains(&point)) {
            return None;
        }
        let (started, hold) = checks::gate(&self.plan.checks, &mut self.st, point, step, self.now);
        self.transitions.extend(started);
        hold
    }

    /// Before step `index` is left (not by hand): its step checks, and
    /// before the promotion the prePromotion checks.
    fn leave_hold(&mut self, index: usize) -> Option<(Reason, String)> {
        let step = checks::step_runs_checks(&self.plan.steps, index)
            .then(|| self.checks_hold(CheckPoint::Step, Some(index as i32 + 1)))
            .flatten();
        step.or_else(|| {
            (index + 1 >= self.plan.steps.len())
                .then(|| self.checks_hold(CheckPoint::PrePromotion, None))
                .flatten()
        })
    }

    /// Hold on the checks of step `index` at `weight`.
    fn hold_for_checks(self, index: usize, weight: u8, reason: Reason, why: String) -> Decision {
        let steps = self.plan.steps.len();
        let msg = format!("step {}/{steps}: {weight}% on the canary; {why}", index + 1);
        self.finish(DecisionKind::Hold, reason, msg, weight, IDLE_REQUEUE)
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

    // 3. Checks: their results; one failed beyond its limit rolls back like
    // failed analysis.
    if !obs.checks.is_empty() {
        let (events, failed) = checks::record(&plan.checks, &mut b.st, &obs.checks, now);
        b.transitions.extend(events);
        if let Some((reason, msg)) = failed
            && !b.st.phase.is_terminal()
        {
            let msg = if actual == 0 {
                format!("rolled back before any traffic moved: {msg}; all traffic stays on stable")
            } else {
                format!(
                    "rolled back at step {} ({}%): {msg}",
                    b.st.current_step_index + 1,
                    actual
                )
            };
            return b.rollback(Phase::RolledBack, DecisionKind::Rollback, reason, msg);
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
    // Before any traffic moves: the preRollout checks (once the canary is
    // available, so that they can test it).
    if index == 0
        && actual == 0
        && not_ready.is_none()
        && let Some((reason, why)) = b.checks_hold(CheckPoint::PreRollout, None)
    {
        b.st.phase = Phase::Pending;
        let msg = format!("all traffic on stable; {why}");
        return b.finish(DecisionKind::Hold, reason, msg, 0, IDLE_REQUEUE);
    }
    match plan.steps[index] {
        PlanStep::SetWeight(w) => {
            if actual == w {
                // Step done (the router carries the weight) once its checks
                // passed: next one.
                if let Some((reason, why)) = b.leave_hold(index) {
                    b.st.phase = Phase::Progressing;
                    return b.hold_for_checks(index, actual, reason, why);
                }
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
            // The step's checks run during the pause (a load generator gives
            // the analysis traffic), once its weight is in place.
            if weight == actual && checks::step_runs_checks(&plan.steps, index) {
                let started = checks::start(
                    &plan.checks,
                    &mut b.st,
                    CheckPoint::Step,
                    Some(index as i32 + 1),
                    now,
                );
                b.transitions.extend(started);
            }
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
                    let next_weight = plan.target_weight(index + 1);
                    let fine = evidence_fine(plan, &b.st);
                    // Neither harm nor fine proven: a middle step may raise
                    // the weight within the risk bound.
                    let risk = (!fine)
                        .then(|| risk_bound(plan, &b.st, weight, next_weight))
                        .flatten();
                    let ramp = risk.as_ref().filter(|r| r.allows);
                    let early = elapsed < d && (fine || ramp.is_some());
                    if let Some(r) = risk.as_ref().filter(|r| !r.allows) {
                        let left = d.saturating_sub(elapsed);
                        let pause = if left.is_zero() {
                            "pause over".to_string()
                        } else {
                            format!("pause {} left", human(left))
                        };
                        let evidence =
                            b.st.comparisons
                                .iter()
                                .map(|c| format!("; {}: {}", c.name, c.message))
                                .collect::<String>();
                        let msg = format!(
                            "step {}/{steps}: {weight}% on the canary, {pause}; {}{evidence}",
                            index + 1,
                            r.message
                        );
                        // Told once as an Event, when the hold begins.
                        if b.st.last_decision.as_ref().is_none_or(|d| {
                            d.reason != Reason::RiskBoundHolds.as_str()
                                || b.st.current_step_index != index as i32
                        }) {
                            b.event(
                                false,
                                Reason::RiskBoundHolds,
                                format!("step {}/{steps}: {}", index + 1, r.message),
                            );
                        }
                        let requeue = if left.is_zero() { plan.interval } else { left };
                        return b.finish(
                            DecisionKind::Hold,
                            Reason::RiskBoundHolds,
                            msg,
                            weight,
                            requeue,
                        );
                    }
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
                    if let Some((reason, why)) = gate.filter(|_| ramp.is_none()) {
                        let msg = format!(
                            "step {}/{steps}: {weight}% on the canary, pause over; {why}",
                            index + 1
                        );
                        return b.finish(DecisionKind::Hold, reason, msg, weight, plan.interval);
                    }
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
                    if let Some((reason, why)) = b.leave_hold(index) {
                        return b.hold_for_checks(index, weight, reason, why);
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
                        } else if b.st.verdict == Verdict::Inconclusive.as_str()
                            && full_weight(plan, weight)
                        {
                            (
                                Reason::AllStepsDone,
                                format!(
                                    "all {steps} steps done: 100% canary (the evidence said the canary was fine when it went to 100%; at 100% stable serves no requests to compare with, and no harm was found)"
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
                    let msg = if let Some(r) = ramp {
                        format!(
                            "step {}/{steps} done after {}, neither harm nor fine proven yet: {}; moving to step {}",
                            index,
                            human(elapsed),
                            r.message,
                            index + 1
                        )
                    } else if early {
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
                    let event = if ramp.is_some() {
                        Reason::RiskBoundAllows
                    } else {
                        Reason::StepAdvanced
                    };
                    b.event(false, event, msg.clone());
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
                    let reason = if ramp.is_some() {
                        Reason::RiskBoundAllows
                    } else if early {
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
