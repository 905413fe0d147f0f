//! Running the webhook and Job checks the engine opened in
//! `status.checks` (I/O). Which checks run when, and what a result means, is
//! decided in [`crate::plan::checks`]; this module only carries them out,
//! behind [`CheckRunner`] so that reconcile tests can fake it.

mod job;
mod webhook;

use std::sync::Arc;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::{Value, json};

use super::Context;
use crate::api::{CheckSpec, Rollout, RolloutStatus, VersionRef};
use crate::plan::checks::{CheckOutcome, CheckResult, DueCheck, due};

pub use job::{JOB_CHECK_LABEL, JOB_ROLLOUT_LABEL, job_name};

/// Runs one check once. The operator's is [`ClusterChecks`].
#[async_trait::async_trait]
pub trait CheckRunner: Send + Sync {
    async fn run(&self, req: &CheckRequest<'_>) -> CheckResult;
}

/// One due check, with what it needs.
pub struct CheckRequest<'a> {
    pub rollout: &'a Rollout,
    pub spec: &'a CheckSpec,
    pub due: &'a DueCheck,
    /// The webhook payload.
    pub payload: &'a Value,
}

/// Webhooks over HTTP, Jobs through the API server.
pub struct ClusterChecks {
    client: kube::Client,
    http: Option<prometheus_http_query::reqwest::Client>,
}

impl ClusterChecks {
    pub fn new(client: kube::Client) -> Self {
        ClusterChecks {
            client,
            http: webhook::client(),
        }
    }
}

#[async_trait::async_trait]
impl CheckRunner for ClusterChecks {
    async fn run(&self, req: &CheckRequest<'_>) -> CheckResult {
        if let Some(w) = &req.spec.webhook {
            webhook::run(&self.client, self.http.as_ref(), req, w).await
        } else if let Some(j) = &req.spec.job {
            job::run(&self.client, req, j).await
        } else {
            result(
                req.due,
                CheckOutcome::Error,
                "",
                "the check has neither webhook nor job",
            )
        }
    }
}

/// A result for `due`.
pub(crate) fn result(
    due: &DueCheck,
    outcome: CheckOutcome,
    short: &str,
    message: &str,
) -> CheckResult {
    CheckResult {
        name: due.name.clone(),
        point: due.point,
        step: due.step,
        outcome,
        job_name: due.job_name.clone(),
        http_status: None,
        result: short.into(),
        message: message.into(),
    }
}

/// Run the checks of `prev.checks` that are due now, all at once.
pub async fn run_due(
    ctx: &Context,
    r: &Rollout,
    prev: &RolloutStatus,
    weight: u8,
    now: Timestamp,
) -> Vec<CheckResult> {
    let due = due(prev, now);
    if due.is_empty() {
        return Vec::new();
    }
    let (stable_images, canary_images) = futures::join!(
        images(ctx, r, &r.spec.stable),
        images(ctx, r, &r.spec.canary)
    );
    let runs = due.iter().filter_map(|d| {
        let spec = r.spec.checks.iter().find(|c| c.name == d.name)?;
        let payload = payload(r, prev, d, weight, spec, &stable_images, &canary_images);
        Some(async move {
            let req = CheckRequest {
                rollout: r,
                spec,
                due: d,
                payload: &payload,
            };
            let res = ctx.checks.run(&req).await;
            tracing::info!(
                rollout = %r.name_any(), namespace = ?r.namespace(), check = %d.name,
                point = d.point.as_str(), step = ?d.step, outcome = ?res.outcome, result = %res.result,
                "check ran"
            );
            res
        })
    });
    join_all(runs).await
}

/// The images of a version's Deployment, when it names one (empty when it
/// cannot be read: the payload says what is known).
async fn images(ctx: &Context, r: &Rollout, v: &VersionRef) -> Vec<String> {
    let (Some(ns), Some(d)) = (r.namespace(), v.deployment.as_ref()) else {
        return Vec::new();
    };
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    match super::with_timeout("read deployment", api.get_opt(d)).await {
        Ok(Some(dep)) => dep
            .spec
            .and_then(|s| s.template.spec)
            .map(|p| p.containers.into_iter().filter_map(|c| c.image).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The JSON a webhook check is POSTed.
fn payload(
    r: &Rollout,
    prev: &RolloutStatus,
    d: &DueCheck,
    weight: u8,
    spec: &CheckSpec,
    stable_images: &[String],
    canary_images: &[String],
) -> Value {
    let version = |v: &VersionRef, images: &[String]| json!({"service": v.service, "deployment": v.deployment, "images": images});
    json!({
        "rollout": r.name_any(),
        "namespace": r.namespace(),
        "uid": r.uid(),
        "check": d.name,
        "point": d.point.as_str(),
        "step": d.step,
        "stepCount": prev.step_count,
        "attempt": d.attempt,
        "weight": weight,
        "phase": prev.phase.as_str(),
        "stable": version(&r.spec.stable, stable_images),
        "canary": version(&r.spec.canary, canary_images),
        "metadata": spec.webhook.as_ref().and_then(|w| w.metadata.clone()).unwrap_or_default(),
    })
}

/// The default runner of a [`Context`].
pub fn cluster(client: kube::Client) -> Arc<dyn CheckRunner> {
    Arc::new(ClusterChecks::new(client))
}
