//! `spec.checks` and `status.checks`: webhook and Job checks run at defined
//! points of a rollout (before any traffic moves, at each step, before the
//! final promotion, after a rollback). Types only; the engine's part is in
//! [`crate::plan::checks`], the I/O in `controller::checks`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::SecretKeyRef;

/// Where a check runs.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CheckPoint {
    /// Before any traffic moves to the canary: the weight stays 0 until the
    /// check passes; a failure rolls back with all traffic on stable.
    PreRollout,
    /// At each setWeight and timed pause step, once the step's weight is in
    /// place: the step is not left until the check passes.
    Step,
    /// Before the final promotion to 100%.
    PrePromotion,
    /// After a rollback or an abort: reports only (status and an Event).
    PostRollback,
}

impl CheckPoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreRollout => "preRollout",
            Self::Step => "step",
            Self::PrePromotion => "prePromotion",
            Self::PostRollback => "postRollback",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::PreRollout,
            Self::Step,
            Self::PrePromotion,
            Self::PostRollback,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// A check: a webhook or a Job, run at the points listed in `at`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.webhook) != has(self.job)").message("a check needs exactly one of webhook or job"))]
#[x_kube(validation = Rule::new("!has(self.webhook) || !has(self.webhook.type) || self.webhook.type != 'confirm' || !self.at.exists(p, p == 'postRollback')").message("a confirm webhook cannot run at postRollback (it only reports there)").field_path(".at"))]
pub struct CheckSpec {
    /// Name of the check, unique in the Rollout (shown in status and Events,
    /// part of the Job's name).
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("name must be lowercase letters, digits and '-', starting and ending with a letter or digit"))]
    #[schemars(length(min = 1, max = 40))]
    pub name: String,
    /// Where it runs: `preRollout`, `step`, `prePromotion`, `postRollback`.
    #[schemars(length(min = 1, max = 4))]
    pub at: Vec<CheckPoint>,
    /// Failed attempts tolerated at one point: the check fails (and, except
    /// at postRollback, the rollout rolls back) after more than this many.
    /// Default 0: the first failure counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub failure_limit: Option<i32>,
    /// Wait between attempts after a failure within `failureLimit`, and
    /// between two asks of a confirm webhook. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')").message("interval must look like 10s, 1m or 1h"))]
    pub interval: Option<String>,
    /// Call an HTTP endpoint: passes on a 2xx answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookCheck>,
    /// Run a Kubernetes Job: passes when the Job completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobCheck>,
}

/// An HTTP check: rollwise POSTs a JSON payload (the Rollout, the point, the
/// step, the weight and both versions) and reads only the status code.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.urlFrom)").message("a webhook check needs exactly one of url or urlFrom"))]
pub struct WebhookCheck {
    /// `check` (default): a 2xx passes, anything else is a failed attempt.
    /// `confirm`: a gate for approval systems; it holds (never fails) until
    /// the endpoint answers 2xx.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == 'check' || self == 'confirm'").message("type must be check or confirm"))]
    #[schemars(length(max = 16))]
    pub type_: Option<String>,
    /// The URL, in the spec (e.g. a Service in the cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("url must start with http:// or https://"))]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
    /// The Secret key holding the URL (in the Rollout's namespace). The URL
    /// is never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_from: Option<SecretKeyRef>,
    /// Timeout of one request. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')").message("timeout must look like 10s or 1m"))]
    pub timeout: Option<String>,
    /// Retries of one attempt after a 5xx, a 429, a timeout or a connection
    /// failure, with exponential backoff (1s, 2s, 4s, at most 5s). Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: Option<i32>,
    /// Extra key/values sent in the payload's `metadata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl WebhookCheck {
    pub fn is_confirm(&self) -> bool {
        self.type_.as_deref() == Some("confirm")
    }
}

/// A Job check: rollwise creates a Job from this template, owned by the
/// Rollout; it passes when the Job completes and fails when it fails
/// (backoffLimit, activeDeadlineSeconds).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct JobCheck {
    /// Labels and annotations of the Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JobMetadata>,
    /// A batch/v1 JobSpec (validated by the API server when the Job is
    /// created, and by the operator before).
    #[schemars(schema_with = "job_spec_schema")]
    pub spec: serde_json::Value,
}

/// Labels and annotations put on a check's Job.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct JobMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 64))]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 64))]
    pub annotations: BTreeMap<String, String>,
}

fn job_spec_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "A batch/v1 JobSpec.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Phases of a check at one point.
pub const CHECK_RUNNING: &str = "Running";
pub const CHECK_PASSED: &str = "Passed";
pub const CHECK_FAILED: &str = "Failed";
/// A confirm webhook that has not said yes yet.
pub const CHECK_WAITING: &str = "Waiting";
/// The check could not be run (e.g. the operator may not create Jobs, the
/// Secret is missing): holds, and says why.
pub const CHECK_ERROR: &str = "Error";

/// One check at one point (and step): its latest outcome.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    pub name: String,
    /// preRollout, step, prePromotion or postRollback.
    pub point: String,
    /// The step (1-based) of a `step` check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i32>,
    /// webhook, confirm or job.
    pub kind: String,
    /// Running, Passed, Failed, Waiting or Error.
    pub phase: String,
    /// Attempts started (a confirm webhook: asks made).
    #[serde(default)]
    pub attempts: i32,
    /// Failed attempts.
    #[serde(default)]
    pub failures: i32,
    #[serde(default)]
    pub failure_limit: i32,
    /// The Job of the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The latest HTTP status of a webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    /// The latest result in short: `HTTP 200`, `Complete`,
    /// `Failed: DeadlineExceeded`, `timeout`.
    #[serde(default)]
    pub result: String,
    #[serde(default)]
    pub message: String,
    /// When the phase last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Time>,
    /// The next attempt (or ask) is not made before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<Time>,
}

impl CheckStatus {
    /// Still to be run or looked at.
    pub fn is_open(&self) -> bool {
        matches!(
            self.phase.as_str(),
            CHECK_RUNNING | CHECK_WAITING | CHECK_ERROR
        )
    }
}
