//! `spec.dependsOn` and `status.dependencies`: a Rollout that waits for
//! other Rollouts (see docs/dependencies.md). Types only; the decision is in
//! [`crate::plan::depend`].

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The most dependencies a Rollout may declare (`maxItems`).
pub const MAX_DEPENDENCIES: usize = 16;

/// What a dependent does when a dependency it follows is rolled back or
/// aborted while the dependent is still in progress.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum OnDependencyFailure {
    /// Roll back too: all traffic to stable, phase RolledBack (the default:
    /// a canary that needs the dependency's new version cannot work without
    /// it).
    #[default]
    Rollback,
    /// Stay where it is (never above its current weight) until the
    /// dependency is retried and meets the requirement again, or a person
    /// aborts.
    Hold,
}

impl OnDependencyFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rollback => "Rollback",
            Self::Hold => "Hold",
        }
    }
}

/// One dependency: another Rollout that must be in a given state before
/// this one moves traffic (or before a given step).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.phase) && has(self.minWeight))").message("set either phase or minWeight, not both (phase Succeeded already means 100%)"))]
pub struct DependencySpec {
    /// The other Rollout's name.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("must be a Rollout name (a DNS-1123 subdomain)"))]
    pub name: String,
    /// Its namespace (default: this Rollout's namespace). The operator must
    /// watch it and be allowed to read Rollouts there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("must be a namespace name (a DNS-1123 label)"))]
    pub namespace: Option<String>,
    /// The state required: `Succeeded` (the default when neither `phase`
    /// nor `minWeight` is set): the dependency completed, 100% on its canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self == 'Succeeded'").message("phase must be Succeeded (use minWeight for a dependency part-way through)"))]
    pub phase: Option<String>,
    /// The state required: the dependency's router carries at least this
    /// canary weight (1-100), or it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("minWeight must be between 1 and 100"))]
    pub min_weight: Option<i32>,
    /// Also required: the dependency's `spec.canary.service` is this one
    /// (the state must be reached by *that* canary, e.g. `payments-v2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("canaryService must be a Service name (a DNS-1035 label)"))]
    pub canary_service: Option<String>,
    /// When the requirement applies: before the step with this index
    /// (0-based) starts. Default 0: before any traffic moves. Once the
    /// Rollout is past that step, the requirement no longer holds it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self < 64").message("beforeStep must be a step index (0-63)"))]
    pub before_step: Option<i32>,
    /// What to do when the dependency is rolled back or aborted while this
    /// Rollout is in progress: `Rollback` (default) or `Hold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnDependencyFailure>,
}

impl DependencySpec {
    /// The dependency's namespace, given the dependent's.
    pub fn namespace_or<'a>(&'a self, own: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(own)
    }
}

/// What one dependency is doing, as this Rollout last saw it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DependencyStatus {
    pub name: String,
    pub namespace: String,
    /// The requirement in words (`Succeeded with canary payments-v2
    /// before step 1`).
    pub required: String,
    /// Its phase (`NotFound`, `Forbidden`, `NotWatched` or `Cycle` when it
    /// cannot be read or is part of a cycle).
    #[serde(default)]
    pub phase: String,
    /// The canary weight its router carries.
    #[serde(default)]
    pub weight: i32,
    /// Its `spec.canary.service`.
    #[serde(default)]
    pub canary: String,
    /// Whether the requirement is met now.
    #[serde(default)]
    pub satisfied: bool,
    /// The gated step was reached with the requirement met: in this
    /// rollout it no longer holds this Rollout back (a failure of the
    /// dependency still counts, see `onFailure`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub passed: bool,
    #[serde(default)]
    pub message: String,
}
