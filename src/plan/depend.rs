//! Dependencies between Rollouts (`spec.dependsOn`), pure.
//!
//! The engine ([`super::decide`]) decides as if the Rollout were alone;
//! [`gate`] then applies what its dependencies allow:
//! - a step whose requirement is not met is not entered: the Rollout holds
//!   at 0% (a requirement before step 0, the default) or at its current
//!   weight before a later step (reason `WaitingForDependency`);
//! - a dependency that is rolled back or aborted while this Rollout is in
//!   progress makes it roll back too (`onFailure: Rollback`, the default,
//!   reason `DependencyFailed`) or hold where it is (`onFailure: Hold`);
//! - a dependency that cannot be read (missing, forbidden, in a namespace
//!   the operator does not watch) or a cycle is reported as a problem
//!   naming the field (`spec.dependsOn[0]`), and the Rollout holds;
//! - rollbacks and aborts decided by the engine (harm found by the
//!   Rollout's own analysis, a manual abort) and restarts always go through.
//!
//! No I/O: the controller reads each dependency and hands its state in.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;

use super::{
    Decision, DecisionKind, FieldError, IDLE_REQUEUE, ManualAction, Plan, Reason, ScaleActions,
    Transition, analysis_due_at, time, to_std,
};
use crate::api::{
    DecisionRecord, DependencySpec, DependencyStatus, OnDependencyFailure, Phase, RolloutSpec,
    RolloutStatus,
};

/// One `spec.dependsOn` entry, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Index in `spec.dependsOn` (for the field path).
    pub index: usize,
    pub namespace: String,
    pub name: String,
    /// `None`: phase Succeeded. `Some(w)`: at least `w`% (or Succeeded).
    pub min_weight: Option<u8>,
    pub canary_service: Option<String>,
    /// The step that may not start before the requirement is met.
    pub before_step: usize,
    pub on_failure: OnDependencyFailure,
}

impl Requirement {
    pub fn from_spec(index: usize, d: &DependencySpec, own_namespace: &str) -> Self {
        Requirement {
            index,
            namespace: d.namespace_or(own_namespace).to_string(),
            name: d.name.clone(),
            min_weight: d.min_weight.map(|w| w.clamp(1, 100) as u8),
            canary_service: d.canary_service.clone(),
            before_step: d.before_step.unwrap_or(0).max(0) as usize,
            on_failure: d.on_failure.unwrap_or_default(),
        }
    }

    /// `spec.dependsOn[0]`.
    pub fn field(&self) -> String {
        format!("spec.dependsOn[{}]", self.index)
    }

    /// `shop/payments`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The requirement in words: `Succeeded with canary payments-v2 before step 1`.
    pub fn describe(&self) -> String {
        let state = match self.min_weight {
            None | Some(100) => "Succeeded".to_string(),
            Some(w) => format!("at >= {w}%"),
        };
        let canary = self
            .canary_service
            .as_deref()
            .map(|c| format!(" with canary {c}"))
            .unwrap_or_default();
        format!("{state}{canary} before step {}", self.before_step + 1)
    }
}

/// The requirements of a spec, in order.
pub fn requirements(spec: &RolloutSpec, own_namespace: &str) -> Vec<Requirement> {
    spec.depends_on
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, d)| Requirement::from_spec(i, d, own_namespace))
        .collect()
}

/// What the CEL rules cannot check: a `beforeStep` past the last step, and
/// a dependency on the Rollout itself by an explicit namespace.
pub fn validate(
    spec: &RolloutSpec,
    plan: &Plan,
    own_namespace: &str,
    own_name: &str,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let steps = plan.steps.len();
    for r in requirements(spec, own_namespace) {
        if r.before_step >= steps.max(1) {
            errors.push(FieldError {
                field: format!("{}.beforeStep", r.field()),
                message: format!(
                    "{} is past the last step (the plan has {steps} steps, indexes 0-{})",
                    r.before_step,
                    steps.saturating_sub(1)
                ),
            });
        }
        if r.namespace == own_namespace && r.name == own_name {
            errors.push(FieldError {
                field: r.field(),
                message: "a Rollout cannot depend on itself".into(),
            });
        }
    }
    errors
}

/// What the controller saw of one dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Found {
        phase: Phase,
        /// The canary weight its router carries.
        weight: u8,
        /// Its `spec.canary.service`.
        canary_service: String,
        /// Its status message.
        message: String,
    },
    /// No such Rollout.
    NotFound,
    /// The operator may not read Rollouts there (the API server's words).
    Forbidden(String),
    /// The namespace is outside the operator's scope (the scope it has).
    NotWatched(String),
    /// Part of a cycle: the path, `a/x -> b/y -> a/x`.
    Cycle(String),
}

impl Observed {
    /// The condition reason when the dependency is a configuration problem.
    pub fn problem_reason(&self) -> Option<&'static str> {
        match self {
            Observed::Found { .. } => None,
            Observed::NotFound => Some("DependencyNotFound"),
            Observed::Forbidden(_) => Some("DependencyForbidden"),
            Observed::NotWatched(_) => Some("DependencyNotWatched"),
            Observed::Cycle(_) => Some("DependencyCycle"),
        }
    }

    fn phase_str(&self) -> &str {
        match self {
            Observed::Found { phase, .. } => phase.as_str(),
            Observed::NotFound => "NotFound",
            Observed::Forbidden(_) => "Forbidden",
            Observed::NotWatched(_) => "NotWatched",
            Observed::Cycle(_) => "Cycle",
        }
    }
}

fn is_failed(phase: Phase) -> bool {
    matches!(phase, Phase::RolledBack | Phase::Aborted)
}

/// The canary named by the requirement (if any) is the dependency's canary.
fn canary_matches(r: &Requirement, canary: &str) -> bool {
    r.canary_service.as_deref().is_none_or(|c| c == canary)
}

/// Is the requirement met?
pub fn satisfied(r: &Requirement, o: &Observed) -> bool {
    let Observed::Found {
        phase,
        weight,
        canary_service,
        ..
    } = o
    else {
        return false;
    };
    if !canary_matches(r, canary_service) {
        return false;
    }
    match r.min_weight {
        None | Some(100) => *phase == Phase::Succeeded,
        Some(w) => {
            *phase == Phase::Succeeded
                || (matches!(phase, Phase::Pending | Phase::Progressing | Phase::Paused)
                    && *weight >= w)
        }
    }
}

/// What the dependency is doing, in words (`Progressing at 33% with canary payments-v2`).
pub fn describe_observed(r: &Requirement, o: &Observed) -> String {
    match o {
        Observed::Found {
            phase,
            weight,
            canary_service,
            message,
        } => {
            let mut s = format!(
                "{} at {weight}% with canary {canary_service}",
                phase.as_str()
            );
            if is_failed(*phase) && !message.is_empty() {
                s.push_str(&format!(" ({message})"));
            }
            s
        }
        Observed::NotFound => format!("Rollout {} not found", r.key()),
        Observed::Forbidden(why) => format!(
            "the operator may not read Rollouts in namespace {}: {why}",
            r.namespace
        ),
        Observed::NotWatched(scope) => format!(
            "namespace {} is not watched by the operator (it watches {scope})",
            r.namespace
        ),
        Observed::Cycle(path) => format!("dependency cycle: {path}"),
    }
}

/// The status entry of one dependency.
pub fn entry(r: &Requirement, o: &Observed) -> DependencyStatus {
    let (weight, canary) = match o {
        Observed::Found {
            weight,
            canary_service,
            ..
        } => (i32::from(*weight), canary_service.clone()),
        _ => (0, String::new()),
    };
    DependencyStatus {
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        required: r.describe(),
        phase: o.phase_str().to_string(),
        weight,
        canary,
        satisfied: satisfied(r, o),
        passed: false,
        message: describe_observed(r, o),
    }
}

/// The gate of `r` was passed earlier in this rollout.
fn passed_before(r: &Requirement, prev: &RolloutStatus, plan: &Plan) -> bool {
    prev.canary_ref == plan.canary_ref
        && prev.dependencies.iter().any(|e| {
            e.passed && e.name == r.name && e.namespace == r.namespace && e.required == r.describe()
        })
}

/// Record which gates are passed once the decision is final.
fn mark_passed(plan: &Plan, prev: &RolloutStatus, reqs: &[Requirement], d: &mut Decision) {
    let restart = d.kind == DecisionKind::Restart;
    let held = matches!(
        d.reason,
        Reason::WaitingForDependency | Reason::DependencyFailedHolding
    );
    let index = d.status.current_step_index.max(0) as usize;
    for (r, e) in reqs.iter().zip(d.status.dependencies.iter_mut()) {
        e.passed = (!restart && passed_before(r, prev, plan))
            || (e.satisfied && !held && index >= r.before_step);
    }
}

/// A dependency the Rollout followed was just rolled back or aborted: the
/// previous status saw it in another phase, in this same release.
fn fresh_failure(r: &Requirement, o: &Observed, prev: &RolloutStatus, plan: &Plan) -> bool {
    let Observed::Found {
        phase,
        canary_service,
        ..
    } = o
    else {
        return false;
    };
    if !is_failed(*phase)
        || !canary_matches(r, canary_service)
        || prev.canary_ref != plan.canary_ref
    {
        return false;
    }
    prev.dependencies
        .iter()
        .find(|e| e.name == r.name && e.namespace == r.namespace)
        .is_some_and(|e| {
            !matches!(e.phase.as_str(), "RolledBack" | "Aborted")
                && Phase::ALL.iter().any(|p| p.as_str() == e.phase)
        })
}

fn failed_now(r: &Requirement, o: &Observed) -> bool {
    matches!(o, Observed::Found { phase, canary_service, .. } if is_failed(*phase) && canary_matches(r, canary_service))
}

/// The outcome of [`gate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Gated {
    pub decision: Decision,
    /// A dependency that cannot be used: the condition reason
    /// (`DependencyNotFound`, `DependencyCycle`, ...) and a message naming
    /// the field.
    pub problem: Option<(&'static str, String)>,
}

/// Apply the dependencies to the engine's decision. `observed[i]` is what
/// was seen of `reqs[i]`; `prev` the status the decision was taken from.
pub fn gate(
    plan: &Plan,
    prev: &RolloutStatus,
    reqs: &[Requirement],
    observed: &[Observed],
    decision: Decision,
    now: Timestamp,
) -> Gated {
    let mut g = gate_inner(plan, prev, reqs, observed, decision, now);
    mark_passed(plan, prev, reqs, &mut g.decision);
    g
}

fn gate_inner(
    plan: &Plan,
    prev: &RolloutStatus,
    reqs: &[Requirement],
    observed: &[Observed],
    mut decision: Decision,
    now: Timestamp,
) -> Gated {
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let pairs: Vec<(&Requirement, &Observed)> = reqs.iter().zip(observed).collect();
    decision.status.dependencies = pairs.iter().map(|(r, o)| entry(r, o)).collect();
    decision.status.waiting_for = String::new();
    // A dependency that cannot be used matters while this Rollout may
    // still wait for it: not once the rollout is over (a finished release
    // does not turn Stalled because a dependency was deleted since), nor
    // for a gate already passed.
    let over = prev.phase.is_terminal() || decision.status.phase.is_terminal();
    let problem = pairs
        .iter()
        .filter(|(r, _)| !over && !passed_before(r, prev, plan))
        .find_map(|(r, o)| {
            o.problem_reason().map(|reason| {
                (
                    reason,
                    format!("{}: {}", r.field(), describe_observed(r, o)),
                )
            })
        });
    if pairs.is_empty()
        || prev.phase.is_terminal()
        || matches!(
            decision.kind,
            DecisionKind::Rollback | DecisionKind::Abort | DecisionKind::Restart
        )
    {
        return Gated { decision, problem };
    }
    let actual = decision.status.canary_weight.clamp(0, 100) as u8;
    let prev_index = prev.current_step_index.max(0) as usize;

    // A dependency rolled back or aborted while this Rollout is in progress.
    if let Some((r, o)) = pairs.iter().find(|(r, o)| {
        r.on_failure == OnDependencyFailure::Rollback && fresh_failure(r, o, prev, plan)
    }) {
        return Gated {
            decision: follow_rollback(plan, prev, decision, r, o, now),
            problem,
        };
    }
    let failed_hold = pairs
        .iter()
        .find(|(r, o)| r.on_failure == OnDependencyFailure::Hold && failed_now(r, o));

    // The first requirement not met, of the earliest step.
    let blocking = pairs
        .iter()
        .filter(|(r, o)| {
            !satisfied(r, o) && prev_index <= r.before_step && !passed_before(r, prev, plan)
        })
        .min_by_key(|(r, _)| r.before_step);
    let blocked = match (failed_hold, blocking) {
        (Some((r, o)), _) => Some((
            *r,
            *o,
            true,
            prev_index.max(decision.status.current_step_index.max(0) as usize),
        )),
        (None, Some((r, o))) => Some((*r, *o, false, r.before_step)),
        (None, None) => None,
    };
    let Some((r, o, failed, step)) = blocked else {
        if !prev.waiting_for.is_empty() {
            let msg = format!(
                "dependencies met ({}): moving on",
                pairs
                    .iter()
                    .map(|(r, o)| format!("{} {}", r.key(), describe_observed(r, o)))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            decision.transitions.insert(
                0,
                Transition {
                    warning: false,
                    reason: Reason::DependencySatisfied,
                    message: msg,
                },
            );
        }
        return Gated { decision, problem };
    };
    let cap = if step == 0 {
        0
    } else {
        plan.target_weight(step - 1)
    };
    let moves = decision.status.current_step_index.max(0) as usize >= step
        || decision.status.phase == Phase::Succeeded
        || decision.weight > cap.max(actual);
    if !failed && !moves {
        // The engine stays before the gated step: nothing to hold yet, but
        // say what comes.
        return Gated { decision, problem };
    }
    Gated {
        decision: hold(plan, prev, decision, r, o, step, failed, now),
        problem,
    }
}

/// Hold before `step` (or where the Rollout is, after a failure with
/// `onFailure: Hold`), never above the current weight.
#[allow(clippy::too_many_arguments)]
fn hold(
    plan: &Plan,
    prev: &RolloutStatus,
    decision: Decision,
    r: &Requirement,
    o: &Observed,
    step: usize,
    failed: bool,
    now: Timestamp,
) -> Decision {
    let mut st = decision.status;
    let actual = st.canary_weight.clamp(0, 100) as u8;
    let prev_index = prev.current_step_index.max(0) as usize;
    let cap = if step == 0 {
        0
    } else {
        plan.target_weight(step - 1)
    };
    let weight = if failed {
        actual.min(decision.weight)
    } else {
        decision.weight.min(cap)
    };
    // Undo the step transition the engine made.
    if st.current_step_index != prev.current_step_index || st.phase == Phase::Succeeded {
        st.current_step_index = prev_index.min(step) as i32;
        st.step_started_at = prev.step_started_at.clone();
        st.passes_in_step = prev.passes_in_step;
        st.completed_at = prev.completed_at.clone();
    }
    if weight == 0 {
        st.canary_traffic_since = prev.canary_traffic_since.clone();
    }
    // Checks this decision would start belong to the step it held back (a
    // preRollout acceptance test would run against the dependency's old
    // version): they start once the dependency is met.
    st.checks.retain(|c| {
        prev.checks
            .iter()
            .any(|p| p.name == c.name && p.point == c.point && p.step == c.step)
    });
    st.phase = if weight == 0 {
        Phase::Pending
    } else {
        Phase::Progressing
    };
    let steps = plan.steps.len() as i32;
    st.desired_weight = weight as i32;
    st.step = format!("{}/{}", (st.current_step_index + 1).min(steps), steps);
    st.waiting_for = r.key();
    let (reason, msg) = if failed {
        (
            Reason::DependencyFailedHolding,
            format!(
                "holding at {weight}% (onFailure: Hold): {} {} was {}; waiting for it to be retried, or abort this Rollout",
                r.field(),
                r.key(),
                describe_observed(r, o)
            ),
        )
    } else {
        (
            Reason::WaitingForDependency,
            format!(
                "step {}/{steps}: holding at {weight}%, waiting for {} {} to be {}: it is {}",
                step.min(steps.max(1) as usize - 1) + 1,
                r.field(),
                r.key(),
                r.describe(),
                describe_observed(r, o)
            ),
        )
    };
    let mut msg = msg;
    // A promote by hand waits for the dependency: the annotation stays.
    let mut action = decision.action;
    if action.as_ref().is_some_and(|a| {
        a.accepted && matches!(a.action, ManualAction::Promote | ManualAction::PromoteFull)
    }) {
        msg.push_str(" (the promote waits for the dependency)");
        action = None;
    }
    let mut transitions: Vec<Transition> = decision
        .transitions
        .into_iter()
        .filter(outlives_the_gate)
        .collect();
    let waiting_before = prev
        .last_decision
        .as_ref()
        .is_some_and(|d| d.reason == reason.as_str());
    if !waiting_before || prev.waiting_for != st.waiting_for {
        transitions.push(Transition {
            warning: failed,
            reason,
            message: msg.clone(),
        });
    }
    st.message = msg.clone();
    let same = st
        .last_decision
        .as_ref()
        .filter(|d| d.kind == "Hold" && d.reason == reason.as_str() && d.message == msg)
        .or(prev
            .last_decision
            .as_ref()
            .filter(|d| d.kind == "Hold" && d.reason == reason.as_str() && d.message == msg));
    let at = match same {
        Some(d) if d.at.is_some() => d.at.clone(),
        _ => Some(time(now)),
    };
    st.last_decision = Some(DecisionRecord {
        kind: DecisionKind::Hold.as_str().into(),
        reason: reason.as_str().into(),
        message: msg.clone(),
        at,
    });
    // Checks still open (a step's Job running while a later step waits)
    // are polled as `decide` would.
    let checks_due = super::checks::requeue(&st, now);
    let (requeue_after, waits_for_change) = match (analysis_due_at(plan, &st, weight), checks_due) {
        (Some(due), c) => (
            to_std(now.duration_until(due))
                .max(Duration::from_millis(100))
                .min(c.unwrap_or(IDLE_REQUEUE)),
            false,
        ),
        (None, Some(c)) => (c, false),
        (None, None) => (IDLE_REQUEUE, true),
    };
    let header_routes = plan.header_routes(st.current_step_index.max(0) as usize);
    Decision {
        kind: DecisionKind::Hold,
        reason,
        message: msg,
        weight,
        status: st,
        requeue_after,
        waits_for_change,
        transitions,
        action,
        header_routes,
        scale: ScaleActions::default(),
    }
}

/// What the decision the dependency gate replaces told that still holds:
/// a refused action, and the results of checks recorded in this round
/// (their status entries stay). Its step events do not, and neither do
/// the checks it started (their entries are dropped with the step).
fn outlives_the_gate(t: &Transition) -> bool {
    matches!(
        t.reason,
        Reason::ActionRefused
            | Reason::CheckPassed
            | Reason::CheckAttemptFailed
            | Reason::WaitingForConfirm
            | Reason::CheckError
            | Reason::PostRollbackCheckFailed
    )
}

/// Roll back because a dependency was rolled back or aborted.
fn follow_rollback(
    plan: &Plan,
    prev: &RolloutStatus,
    decision: Decision,
    r: &Requirement,
    o: &Observed,
    now: Timestamp,
) -> Decision {
    let mut st = decision.status;
    let actual = st.canary_weight.clamp(0, 100) as u8;
    st.current_step_index = prev.current_step_index;
    st.step_started_at = prev.step_started_at.clone();
    st.phase = Phase::RolledBack;
    st.desired_weight = 0;
    st.waiting_for = String::new();
    let steps = plan.steps.len() as i32;
    st.step = format!("{}/{}", (st.current_step_index + 1).min(steps), steps);
    let msg = format!(
        "rolled back at step {} ({actual}%): {} {} was {} (onFailure: Rollback)",
        st.current_step_index + 1,
        r.field(),
        r.key(),
        describe_observed(r, o)
    );
    st.message = msg.clone();
    st.last_decision = Some(DecisionRecord {
        kind: DecisionKind::Rollback.as_str().into(),
        reason: Reason::DependencyFailed.as_str().into(),
        message: msg.clone(),
        at: Some(time(now)),
    });
    let mut transitions: Vec<Transition> = decision
        .transitions
        .into_iter()
        .filter(outlives_the_gate)
        .collect();
    transitions.push(Transition {
        warning: true,
        reason: Reason::DependencyFailed,
        message: msg.clone(),
    });
    // Like any rollback: the postRollback checks run.
    transitions.extend(super::checks::start(
        &plan.checks,
        &mut st,
        crate::api::CheckPoint::PostRollback,
        None,
        now,
    ));
    let requeue_after =
        super::checks::requeue(&st, now).map_or(IDLE_REQUEUE, |r| r.min(IDLE_REQUEUE));
    let scale = ScaleActions {
        scale_down_canary: plan.canary_scale_down_on_rollback && !st.canary_scaled_down,
        ..ScaleActions::default()
    };
    let mut action = decision.action;
    if action.as_ref().is_some_and(|a| {
        a.accepted && matches!(a.action, ManualAction::Promote | ManualAction::PromoteFull)
    }) {
        action = None;
    }
    Decision {
        kind: DecisionKind::Rollback,
        reason: Reason::DependencyFailed,
        message: msg,
        weight: 0,
        status: st,
        requeue_after,
        waits_for_change: requeue_after == IDLE_REQUEUE,
        transitions,
        action,
        header_routes: Vec::new(),
        scale,
    }
}

/// A Rollout, by `namespace/name`.
pub type Key = String;

/// Mark the requirement of `me` through which its dependencies (as far as
/// `edges` knows them) lead back to it as [`Observed::Cycle`], naming the
/// whole way round.
pub fn mark_cycle(
    me: &str,
    reqs: &[Requirement],
    edges: &HashMap<Key, Vec<Key>>,
    observed: &mut [Observed],
) {
    let Some(path) = cycle_through(me, edges) else {
        return;
    };
    let text = path.join(" -> ");
    for (r, o) in reqs.iter().zip(observed.iter_mut()) {
        if path.get(1) == Some(&r.key()) {
            *o = Observed::Cycle(text.clone());
        }
    }
}

/// The cycle through `start`, if its dependencies (as far as `edges` knows
/// them) lead back to it: `[a/x, b/y, a/x]`. Depth-first, each Rollout
/// visited once.
pub fn cycle_through(start: &str, edges: &HashMap<Key, Vec<Key>>) -> Option<Vec<Key>> {
    fn walk(
        node: &str,
        start: &str,
        edges: &HashMap<Key, Vec<Key>>,
        path: &mut Vec<String>,
        seen: &mut std::collections::HashSet<String>,
    ) -> bool {
        for next in edges.get(node).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(next, start, edges, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = std::collections::HashSet::new();
    seen.insert(start.to_string());
    walk(start, start, edges, &mut path, &mut seen).then_some(path)
}

#[cfg(test)]
#[path = "tests/depend.rs"]
mod tests;
