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

use crate::api::{Phase, RolloutStatus};
use crate::traffic::HeaderRoute;

pub mod checks;
pub mod compile;
mod decide;
pub mod depend;
mod gate;
mod reason;
mod record;

pub use compile::{FieldError, Plan, PlanCompare, PlanMetric, PlanStep, validate};
pub use decide::decide;
pub use reason::{Class, Reason};

use crate::analysis::CompareOutcome;
use crate::analysis::MetricOutcome;

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
    /// Results of the webhook and Job checks the controller ran (the open
    /// entries of `status.checks` that were due, see [`checks::due`]).
    pub checks: Vec<checks::CheckResult>,
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

#[cfg(test)]
mod tests;
