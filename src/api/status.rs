//! The Rollout's status: what the operator observed and decided, and
//! everything the engine needs to resume.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::{Deserialize, Serialize};

/// Where the rollout is.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum Phase {
    /// Not started yet (first reconcile, or waiting for the canary to be available).
    #[default]
    Pending,
    /// Moving through the steps.
    Progressing,
    /// Held by `spec.paused` or by a pause step without duration.
    Paused,
    /// All steps done, canary at 100%.
    Succeeded,
    /// The analysis found the canary unhealthy (or metrics were unavailable
    /// too long): all traffic is back on stable.
    RolledBack,
    /// Aborted by hand: all traffic is back on stable.
    Aborted,
    /// The spec is invalid or a referenced object is missing (see the Ready condition).
    Invalid,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Succeeded => "Succeeded",
            Phase::RolledBack => "RolledBack",
            Phase::Aborted => "Aborted",
            Phase::Invalid => "Invalid",
        }
    }
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Progressing,
        Phase::Paused,
        Phase::Succeeded,
        Phase::RolledBack,
        Phase::Aborted,
        Phase::Invalid,
    ];
    /// Succeeded, RolledBack and Aborted wait for a new canary (or `retry`).
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::RolledBack | Phase::Aborted)
    }
}

/// The verdict of one metric evaluation.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Verdict {
    /// Within bounds.
    Pass,
    /// Outside bounds.
    Fail,
    /// The query returned nothing (or NaN): not a failure, not a pass.
    NoData,
    /// The query could not be run (backend down, query rejected).
    Error,
    /// A comparison has data but not yet enough evidence either way.
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "Pass",
            Verdict::Fail => "Fail",
            Verdict::NoData => "NoData",
            Verdict::Error => "Error",
            Verdict::Inconclusive => "Inconclusive",
        }
    }

    /// The verdict a status string names (None for "" or anything else).
    pub fn parse(s: &str) -> Option<Verdict> {
        [
            Verdict::Pass,
            Verdict::Fail,
            Verdict::NoData,
            Verdict::Error,
            Verdict::Inconclusive,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// How a comparison shows this verdict: a passing comparison is `Fine`,
    /// a failing one `Harm`.
    pub fn comparison_str(self) -> &'static str {
        match self {
            Verdict::Pass => COMPARISON_FINE,
            Verdict::Fail => COMPARISON_HARM,
            v => v.as_str(),
        }
    }
}

/// A comparison's verdict when the evidence says the canary is within
/// tolerance / worse than tolerated.
pub const COMPARISON_FINE: &str = "Fine";
pub const COMPARISON_HARM: &str = "Harm";

impl ComparisonStatus {
    pub fn is_fine(&self) -> bool {
        self.verdict == COMPARISON_FINE
    }
    pub fn is_harm(&self) -> bool {
        self.verdict == COMPARISON_HARM
    }
    /// The bar `harmEvidence` must reach: `harmEvidenceBar`, or for a
    /// status written before it had one, `evidenceBar` (both conclusions
    /// had the same bar then).
    pub fn harm_bar(&self) -> f64 {
        if self.harm_evidence_bar > 0.0 {
            self.harm_evidence_bar
        } else {
            self.evidence_bar
        }
    }
}

/// Observed state. Everything the engine needs to resume lives here.
///
/// The schema's `default: {}` makes the API server show a Rollout the
/// operator has not written yet with `status.observedGeneration: 0` (the
/// defaults of its fields), so kstatus readers (Helm's `--wait`, Flux) see
/// "generation not observed yet", in progress, instead of a status-less
/// object they would count as current.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {}))]
pub struct RolloutStatus {
    #[serde(default)]
    pub phase: Phase,
    /// Index of the current step (0-based).
    #[serde(default)]
    pub current_step_index: i32,
    /// Number of steps in the plan.
    #[serde(default)]
    pub step_count: i32,
    /// "current/total" for `kubectl get` (1-based; "-" before the start).
    #[serde(default)]
    pub step: String,
    /// The canary weight the router carries, as read back from it.
    #[serde(default)]
    pub canary_weight: i32,
    /// The canary weight the operator wants now.
    #[serde(default)]
    pub desired_weight: i32,
    /// When the current step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// `service[/deployment]` of the canary this state belongs to; a change
    /// of `spec.canary` restarts the rollout.
    #[serde(default)]
    pub canary_ref: String,
    /// The generation of the spec this status was computed from.
    #[serde(default)]
    pub observed_generation: i64,
    /// A one-line summary for people.
    #[serde(default)]
    pub message: String,
    /// The verdict of the latest analysis round ("-" before the first).
    #[serde(default)]
    pub verdict: String,
    /// When the latest analysis round ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis_at: Option<Time>,
    /// Passing analysis rounds since the current step began.
    #[serde(default)]
    pub passes_in_step: i32,
    /// Analysis rounds in a row with at least one query error.
    #[serde(default)]
    pub consecutive_errors: i32,
    /// The latest evaluation of each metric.
    #[serde(default)]
    pub analysis: Vec<MetricStatus>,
    /// The latest canary-vs-stable comparisons, with their evidence.
    #[serde(default)]
    pub comparisons: Vec<ComparisonStatus>,
    /// The exposure budget: extra failed requests caused by the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetStatus>,
    /// When the rollout completed (phase Succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// The old version's Deployment was scaled down (`stable.scaleDownAfter`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stable_scaled_down: bool,
    /// The canary's Deployment was scaled down (`canary.scaleDownOnRollback`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary_scaled_down: bool,
    /// When the canary first received traffic in this rollout: the start of
    /// the comparison window (`{{window}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_traffic_since: Option<Time>,
    /// The latest decision with its reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<DecisionRecord>,
    /// The latest manual action carried out or refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<ActionRecord>,
    /// The webhook and Job checks of this rollout, one entry per check and
    /// point (and step).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<super::CheckStatus>,
    /// What each `spec.dependsOn` entry is doing, as last seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<super::depend::DependencyStatus>,
    /// `namespace/name` of the dependency this Rollout waits for now
    /// (empty when it waits for none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub waiting_for: String,
    /// Ready, Progressing, Paused, Completed, RolledBack.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// The latest evaluation of one metric.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricStatus {
    pub name: String,
    /// The measured value (absent when there was no data or an error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Pass, Fail, NoData or Error.
    pub verdict: String,
    /// Failed evaluations so far in this rollout.
    #[serde(default)]
    pub failures: i32,
    /// The failures tolerated before rollback.
    #[serde(default)]
    pub failure_limit: i32,
    /// What happened, in words (e.g. the backend error).
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<Time>,
}

/// The evidence of one canary-vs-stable comparison.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComparisonStatus {
    pub name: String,
    /// Harm, Fine, Inconclusive, NoData or Error.
    pub verdict: String,
    #[serde(default)]
    pub canary_requests: f64,
    #[serde(default)]
    pub canary_failures: f64,
    #[serde(default)]
    pub canary_rate: f64,
    #[serde(default)]
    pub stable_requests: f64,
    #[serde(default)]
    pub stable_failures: f64,
    #[serde(default)]
    pub stable_rate: f64,
    /// The tolerance, e.g. `+0.005` or `+20%`.
    #[serde(default)]
    pub tolerance: String,
    /// How far the canary's error rate is above what is tolerated
    /// (`canary - (stable + tolerance)`), at the point estimates.
    #[serde(default)]
    pub excess: f64,
    /// An interval for the excess, valid at every look at `confidence` (from
    /// each side's confidence sequence; wider than what the test uses, so a
    /// conclusion may come while it still contains 0).
    #[serde(default)]
    pub excess_lower: f64,
    #[serde(default)]
    pub excess_upper: f64,
    /// Evidence that the canary is worse than tolerated: how many times more
    /// likely the counts are if it is than if it is not (an e-value). Harm
    /// when it reaches `harmEvidenceBar`.
    #[serde(default)]
    pub harm_evidence: f64,
    /// Evidence that the canary is within tolerance, read the same way.
    /// Fine when it reaches `evidenceBar`.
    #[serde(default)]
    pub fine_evidence: f64,
    /// The bar `fineEvidence` must reach, `1 / (1 - confidence)`: e.g. 100
    /// for confidence 0.99.
    #[serde(default)]
    pub evidence_bar: f64,
    #[serde(default)]
    pub confidence: f64,
    /// The bar `harmEvidence` must reach, `1 / (1 - rollbackConfidence)`:
    /// e.g. 20 for 0.95.
    #[serde(default)]
    pub harm_evidence_bar: f64,
    #[serde(default)]
    pub rollback_confidence: f64,
    /// Rough number of further canary requests needed for a conclusion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more_requests_needed: Option<i64>,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<Time>,
    /// The running evidence carried from one look to the next (written by
    /// rollwise; editing it voids the test's guarantee).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<EvidenceState>,
}

/// What the sequential test carries between looks: the cumulative counts
/// already taken into account and the natural log of each mixture
/// component's running likelihood ratio (see docs/analysis.md).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceState {
    /// What the evidence was gathered for: the tolerance and a digest of the
    /// two queries. When the comparison changes, the evidence starts over.
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub basis: String,
    pub canary_requests: f64,
    pub canary_failures: f64,
    pub stable_requests: f64,
    pub stable_failures: f64,
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub harm: Vec<f64>,
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub fine: Vec<f64>,
}

/// Failed requests the canary caused beyond the stable rate.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStatus {
    /// Point estimate.
    pub used: f64,
    /// Upper bound at the analysis confidence.
    pub upper: f64,
    /// `spec.analysis.maxExtraFailures`.
    pub max: f64,
}

/// A decision of the engine, as recorded in status.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionRecord {
    /// SetWeight, Advance, Hold, Pause, Promote, Rollback, Abort, Restart, Complete.
    pub kind: String,
    /// PascalCase reason (the rule that fired).
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}

/// A manual action (from the `rollwise.io/action` annotation).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    pub action: String,
    /// Done or Refused.
    pub result: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}

fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("x-kubernetes-list-type".into(), "map".into());
        obj.insert(
            "x-kubernetes-list-map-keys".into(),
            serde_json::json!(["type"]),
        );
    }
    schema
}
