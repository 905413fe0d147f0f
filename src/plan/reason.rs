//! Why the engine decided what it decided: ONE typed list of every reason a
//! [`Decision`](super::Decision) or a [`Transition`](super::Transition)
//! carries.
//!
//! The reasons are written to the status (`lastDecision.reason`, the
//! conditions) and to Events as their PascalCase names, and read back by the
//! CLI. Every consumer (the engine, notifications, metrics, the CLI) matches
//! on [`Reason`] without a catch-all arm, so a reason added here cannot be
//! forgotten by any of them: the compiler names each place to decide about
//! it.

/// Defines [`Reason`], its names and [`Reason::ALL`] from one list.
macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Every reason of the engine. See the module documentation.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])* $name,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// The PascalCase name written to status and Events.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }
        }
    };
}

reasons! {
    // ---- a rollout starts (again)
    /// The first canary of this Rollout: an Event.
    RolloutStarted,
    /// The decision that starts the first canary.
    Started,
    /// `spec.canary` changed: starting over (Event and decision).
    NewCanary,
    /// `retry` after a rollback or an abort (Event and decision).
    Retry,
    // ---- steps
    /// The router is told a new canary weight (Event).
    WeightChanged,
    /// The router must carry the step's weight (decision).
    SetWeight,
    /// A step is done (Event and decision).
    StepAdvanced,
    /// An A/B route is set (Event and decision).
    HeaderRouteSet,
    /// An A/B route is removed (Event and decision).
    HeaderRouteRemoved,
    /// A timed pause ended early: the evidence says the canary is fine.
    EvidenceFine,
    /// A middle step ended while neither harm nor fine is proven: the worst
    /// plausible canary at the raised weight fits the exposure budget left
    /// (Event and decision).
    RiskBoundAllows,
    // ---- pauses
    /// A pause that waits for a person was entered (Event).
    Paused,
    /// Waiting in a pause step without duration for `promote` (decision).
    ManualPause,
    /// `spec.paused` is true (decision).
    PausedBySpec,
    // ---- promotion
    /// A manual `promote` or `promote-full` was carried out (Event).
    Promoted,
    /// The decision of a manual promote.
    PromotedByHand,
    /// 100% canary: the rollout succeeded (Event).
    RolloutCompleted,
    /// The last step is done (decision).
    AllStepsDone,
    /// A succeeded rollout holds 100% (decision).
    Completed,
    // ---- rollback and abort
    /// A threshold metric failed more often than its `failureLimit`.
    AnalysisFailed,
    /// The canary-vs-stable comparison found the canary worse than tolerated.
    CanaryWorse,
    /// The exposure budget (`maxExtraFailures`) would be spent.
    BudgetExhausted,
    /// The metrics could not be read `consecutiveErrorLimit` times in a row.
    MetricsUnavailable,
    /// A webhook or Job check failed more often than its `failureLimit`
    /// (Event and decision).
    CheckFailed,
    /// Aborted by hand (Event and decision).
    Aborted,
    /// A rolled-back rollout holds 0% (decision).
    RolledBack,
    // ---- holding
    /// A timed pause is running.
    PauseInProgress,
    /// The canary Deployment is not available yet.
    WaitingForCanary,
    /// The queries return no data yet.
    WaitingForData,
    /// The first analysis round at this weight is not in yet.
    WaitingForAnalysis,
    /// The latest round failed within its limit.
    WaitingForPass,
    /// The comparison has not seen enough requests to tell.
    NotEnoughEvidence,
    /// Raising the weight could spend the exposure budget.
    BudgetGuard,
    /// Neither harm nor fine is proven, and the worst plausible canary at
    /// the raised weight could cost more than the exposure budget has left.
    RiskBoundHolds,
    /// The queries fail (within `consecutiveErrorLimit`).
    MetricsError,
    /// A check of this point runs (decision).
    CheckRunning,
    /// A confirm webhook has not said yes yet (Event and decision).
    WaitingForConfirm,
    /// A check cannot be run (no Secret, no right to create Jobs, a Job the
    /// API server refuses): holding (Event and decision).
    CheckError,
    // ---- dependencies (spec.dependsOn)
    /// A dependency does not meet its requirement yet: the gated step waits
    /// (Event when the wait starts, and decision).
    WaitingForDependency,
    /// The dependencies waited for are met: the Rollout moves on (Event).
    DependencySatisfied,
    /// A dependency was rolled back or aborted: this Rollout rolls back too
    /// (`onFailure: Rollback`; Event and decision).
    DependencyFailed,
    /// A dependency was rolled back or aborted: this Rollout holds where it
    /// is (`onFailure: Hold`; Event and decision).
    DependencyFailedHolding,
    // ---- other transitions
    /// The old version was scaled down after the promotion (Event).
    StableScaledDown,
    /// A manual action did not apply (Event).
    ActionRefused,
    // ---- checks (Events)
    /// A check started at a point.
    CheckStarted,
    /// A check passed.
    CheckPassed,
    /// A check failed within its `failureLimit`: it is tried again.
    CheckAttemptFailed,
    /// A postRollback check failed: reported only.
    PostRollbackCheckFailed,
}

/// What a reason means for the people watching the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A rollout starts or starts over.
    Start,
    /// A step is taken.
    Step,
    /// The rollout waits for a person.
    Pause,
    /// The canary is promoted.
    Promotion,
    /// All traffic back on stable by the rollout's own analysis.
    Rollback,
    /// All traffic back on stable by hand.
    Abort,
    /// Nothing changes: waiting for time, data, the canary or evidence.
    Hold,
    /// A terminal rollout holds its weight.
    Settled,
    /// Housekeeping after the outcome, or a refused action.
    Other,
}

impl Reason {
    /// Parse a name read from status, a condition or an Event (exact case).
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == s)
    }

    /// What this reason means (see [`Class`]).
    pub fn class(self) -> Class {
        use Reason::*;
        match self {
            RolloutStarted | Started | NewCanary | Retry => Class::Start,
            WeightChanged | SetWeight | StepAdvanced | HeaderRouteSet | HeaderRouteRemoved
            | EvidenceFine | RiskBoundAllows | DependencySatisfied => Class::Step,
            Paused | ManualPause | PausedBySpec => Class::Pause,
            Promoted | PromotedByHand | RolloutCompleted | AllStepsDone => Class::Promotion,
            AnalysisFailed | CanaryWorse | BudgetExhausted | MetricsUnavailable | CheckFailed
            | DependencyFailed => Class::Rollback,
            Aborted => Class::Abort,
            PauseInProgress
            | WaitingForCanary
            | WaitingForData
            | WaitingForAnalysis
            | WaitingForPass
            | NotEnoughEvidence
            | BudgetGuard
            | RiskBoundHolds
            | MetricsError
            | CheckRunning
            | WaitingForConfirm
            | CheckError
            | WaitingForDependency
            | DependencyFailedHolding => Class::Hold,
            Completed | RolledBack => Class::Settled,
            StableScaledDown
            | ActionRefused
            | CheckStarted
            | CheckPassed
            | CheckAttemptFailed
            | PostRollbackCheckFailed => Class::Other,
        }
    }

    /// A rollback decided by the rollout's own analysis (threshold metrics,
    /// comparison, budget, unreadable metrics) or its checks.
    pub fn is_rollback(self) -> bool {
        self.class() == Class::Rollback && self != Reason::DependencyFailed
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for Reason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.as_str()), "{r} twice");
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
        }
        assert_eq!(Reason::parse("canaryworse"), None);
        assert_eq!(Reason::parse(""), None);
    }

    #[test]
    fn the_five_rollbacks_are_rollbacks() {
        let rollbacks: Vec<_> = Reason::ALL.iter().filter(|r| r.is_rollback()).collect();
        assert_eq!(
            rollbacks,
            [
                &Reason::AnalysisFailed,
                &Reason::CanaryWorse,
                &Reason::BudgetExhausted,
                &Reason::MetricsUnavailable,
                &Reason::CheckFailed
            ]
        );
    }
}
