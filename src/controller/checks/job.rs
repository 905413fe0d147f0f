//! Job checks: rollwise creates one Job per attempt from the Rollout's
//! template, owned by the Rollout (so garbage collection removes it with
//! the Rollout), looks at its conditions (Complete passes; Failed, including
//! `activeDeadlineSeconds` exceeded, fails), and keeps the last
//! [`KEEP_JOBS`] finished Jobs of each check for debugging.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::{Resource, ResourceExt};

use super::{CheckRequest, result};
use crate::api::{CheckPoint, JobCheck, Rollout};
use crate::plan::checks::{CheckOutcome, CheckResult, job_spec};

/// The label naming the Rollout a check Job belongs to.
pub const JOB_ROLLOUT_LABEL: &str = "rollwise.io/rollout";
/// The label naming the check.
pub const JOB_CHECK_LABEL: &str = "rollwise.io/check";
/// The label naming the point.
pub const JOB_POINT_LABEL: &str = "rollwise.io/point";
/// Finished Jobs kept per check (the newest), for their logs.
pub const KEEP_JOBS: usize = 2;

/// The Job's name: `<rollout>-<check>-<point>-<hash>`, at most 63
/// characters (a Job's name becomes a label value of its Pods). The hash
/// covers the Rollout's uid, the canary, the point, the step and the
/// attempt, so each attempt of each rollout gets its own Job.
pub fn job_name(
    rollout: &str,
    uid: &str,
    canary: &str,
    check: &str,
    point: CheckPoint,
    step: Option<i32>,
    attempt: i32,
) -> String {
    let pt = match (point, step) {
        (CheckPoint::PreRollout, _) => "pre".to_string(),
        (CheckPoint::Step, Some(s)) => format!("s{s}"),
        (CheckPoint::Step, None) => "step".to_string(),
        (CheckPoint::PrePromotion, _) => "promo".to_string(),
        (CheckPoint::PostRollback, _) => "post".to_string(),
    };
    // Each part ends in a NUL, so no two lists of parts hash the same text.
    let parts = [
        uid,
        canary,
        check,
        point.as_str(),
        &step.unwrap_or(0).to_string(),
        &attempt.to_string(),
    ];
    let hash = crate::fnv1a(&parts.map(|p| format!("{p}\0")).concat());
    let mut prefix = format!("{rollout}-{check}-{pt}");
    prefix.truncate(54);
    let prefix = prefix.trim_end_matches(['-', '.']);
    format!("{prefix}-{:08x}", hash as u32)
}

pub(super) async fn run(
    client: &kube::Client,
    req: &CheckRequest<'_>,
    j: &JobCheck,
) -> CheckResult {
    let r = req.rollout;
    let due = req.due;
    let ns = r.namespace().unwrap_or_default();
    let name = job_name(
        &r.name_any(),
        r.uid().as_deref().unwrap_or(""),
        &crate::plan::compile::version_ref_key(&r.spec.canary),
        &due.name,
        due.point,
        due.step,
        due.attempt,
    );
    let with_name = |mut res: CheckResult| {
        res.job_name = Some(name.clone());
        res
    };
    let api: Api<Job> = Api::namespaced(client.clone(), &ns);
    let job = match super::super::with_timeout("read job", api.get_opt(&name)).await {
        Ok(Some(job)) => job,
        Ok(None) => match create(&api, r, req, j, &name).await {
            Ok(job) => job,
            Err(res) => return with_name(res),
        },
        Err(e) => return with_name(api_error(due, "read", &ns, e)),
    };
    let res = with_name(outcome(due, &name, &job));
    if matches!(res.outcome, CheckOutcome::Passed | CheckOutcome::Failed) {
        cleanup(&api, r, &due.name, &name).await;
    }
    res
}

async fn create(
    api: &Api<Job>,
    r: &Rollout,
    req: &CheckRequest<'_>,
    j: &JobCheck,
    name: &str,
) -> Result<Job, CheckResult> {
    let due = req.due;
    let mut spec = job_spec(&j.spec).map_err(|e| {
        result(
            due,
            CheckOutcome::Error,
            "invalid template",
            &format!("spec.checks[{}].job.spec: {e}", due.name),
        )
    })?;
    let mut labels = j
        .metadata
        .as_ref()
        .map(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(JOB_ROLLOUT_LABEL.into(), truncate_label(&r.name_any()));
    labels.insert(JOB_CHECK_LABEL.into(), due.name.clone());
    labels.insert(JOB_POINT_LABEL.into(), due.point.as_str().into());
    let mut annotations = j
        .metadata
        .as_ref()
        .map(|m| m.annotations.clone())
        .unwrap_or_default();
    annotations.insert(
        "rollwise.io/canary".into(),
        crate::plan::compile::version_ref_key(&r.spec.canary),
    );
    if let Some(s) = due.step {
        annotations.insert("rollwise.io/step".into(), s.to_string());
    }
    annotations.insert("rollwise.io/attempt".into(), due.attempt.to_string());
    // The Pods carry the same labels, to find their logs.
    let pod_labels = spec
        .template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default);
    pod_labels.insert(JOB_ROLLOUT_LABEL.into(), truncate_label(&r.name_any()));
    pod_labels.insert(JOB_CHECK_LABEL.into(), due.name.clone());
    let owner = OwnerReference {
        api_version: Rollout::api_version(&()).into_owned(),
        kind: Rollout::kind(&()).into_owned(),
        name: r.name_any(),
        uid: r.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    let job = Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: r.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    };
    let pp = PostParams {
        field_manager: Some(crate::api::FIELD_MANAGER.into()),
        ..Default::default()
    };
    let ns = r.namespace().unwrap_or_default();
    match super::super::with_timeout("create job", api.create(&pp, &job)).await {
        Ok(j) => {
            tracing::info!(rollout = %r.name_any(), namespace = %ns, check = %due.name, job = %name, "check job created");
            Ok(j)
        }
        Err(crate::controller::Error::Kube(kube::Error::Api(s))) if s.code == 409 => {
            match super::super::with_timeout("read job", api.get(name)).await {
                Ok(j) => Ok(j),
                Err(e) => Err(api_error(due, "read", &ns, e)),
            }
        }
        Err(e) => Err(api_error(due, "create", &ns, e)),
    }
}

fn truncate_label(s: &str) -> String {
    let mut s = s.to_string();
    s.truncate(63);
    s.trim_end_matches(['-', '.', '_']).to_string()
}

/// A refused or failed API call as a check that cannot run (it holds).
fn api_error(
    due: &crate::plan::checks::DueCheck,
    verb: &str,
    ns: &str,
    e: crate::controller::Error,
) -> CheckResult {
    let (message, code) = match e {
        crate::controller::Error::Kube(kube::Error::Api(s)) => (s.message.clone(), Some(s.code)),
        other => (other.to_string(), None),
    };
    let message = message.as_str();
    let (short, why) = match code {
        Some(403) => (
            "forbidden".to_string(),
            format!(
                "the operator may not {verb} Jobs in namespace {ns} (install the chart with checks.jobs=true): {message}"
            ),
        ),
        Some(422) => (
            "invalid Job".to_string(),
            format!(
                "the API server refused the Job of spec.checks {}: {message}",
                due.name
            ),
        ),
        Some(c) => (
            format!("API error {c}"),
            format!("cannot {verb} the Job: {message}"),
        ),
        None => (
            "API error".to_string(),
            format!("cannot {verb} the Job: {message}"),
        ),
    };
    result(due, CheckOutcome::Error, &short, &why)
}

/// Complete passes, Failed fails (with the Job's reason: BackoffLimitExceeded,
/// DeadlineExceeded), anything else runs.
fn outcome(due: &crate::plan::checks::DueCheck, name: &str, job: &Job) -> CheckResult {
    let conds = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .cloned()
        .unwrap_or_default();
    let find = |t: &str| conds.iter().find(|c| c.type_ == t && c.status == "True");
    if find("Complete").is_some() {
        return result(
            due,
            CheckOutcome::Passed,
            "Complete",
            &format!("job {name} completed"),
        );
    }
    if let Some(c) = find("Failed") {
        let reason = c.reason.clone().unwrap_or_else(|| "Failed".into());
        let msg = c.message.clone().unwrap_or_default();
        return result(
            due,
            CheckOutcome::Failed,
            &format!("Failed: {reason}"),
            &format!(
                "job {name} failed: {reason}{}",
                if msg.is_empty() {
                    String::new()
                } else {
                    format!(" ({msg})")
                }
            ),
        );
    }
    let active = job.status.as_ref().and_then(|s| s.active).unwrap_or(0);
    let failed = job.status.as_ref().and_then(|s| s.failed).unwrap_or(0);
    result(
        due,
        CheckOutcome::Running,
        "Running",
        &format!("job {name} running ({active} active, {failed} failed pods)"),
    )
}

/// Delete the older finished Jobs of a check, keeping the newest
/// [`KEEP_JOBS`] (and `current`). Best effort: a failure is logged.
async fn cleanup(api: &Api<Job>, r: &Rollout, check: &str, current: &str) {
    let selector = format!(
        "{JOB_ROLLOUT_LABEL}={},{JOB_CHECK_LABEL}={check}",
        truncate_label(&r.name_any())
    );
    let list = match super::super::with_timeout(
        "list jobs",
        api.list(&ListParams::default().labels(&selector)),
    )
    .await
    {
        Ok(l) => l.items,
        Err(e) => {
            tracing::debug!(rollout = %r.name_any(), check, error = %e, "old check jobs not listed");
            return;
        }
    };
    let uid = r.uid();
    let mut ours: Vec<Job> = list
        .into_iter()
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .collect();
    ours.sort_by_key(|j| std::cmp::Reverse(j.creation_timestamp().map(|t| t.0)));
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    for j in ours.iter().skip(KEEP_JOBS) {
        let n = j.name_any();
        if n == current {
            continue;
        }
        if let Err(e) = super::super::with_timeout("delete job", api.delete(&n, &dp)).await {
            tracing::debug!(rollout = %r.name_any(), check, job = %n, error = %e, "old check job not deleted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_stable_and_distinct() {
        let a = job_name(
            "checkout",
            "u1",
            "c-v2",
            "smoke",
            CheckPoint::PreRollout,
            None,
            1,
        );
        assert_eq!(
            a,
            job_name(
                "checkout",
                "u1",
                "c-v2",
                "smoke",
                CheckPoint::PreRollout,
                None,
                1
            )
        );
        assert!(a.starts_with("checkout-smoke-pre-"), "{a}");
        for other in [
            job_name(
                "checkout",
                "u1",
                "c-v2",
                "smoke",
                CheckPoint::PreRollout,
                None,
                2,
            ),
            job_name(
                "checkout",
                "u1",
                "c-v3",
                "smoke",
                CheckPoint::PreRollout,
                None,
                1,
            ),
            job_name(
                "checkout",
                "u1",
                "c-v2",
                "smoke",
                CheckPoint::Step,
                Some(1),
                1,
            ),
            job_name(
                "checkout",
                "u2",
                "c-v2",
                "smoke",
                CheckPoint::PreRollout,
                None,
                1,
            ),
        ] {
            assert_ne!(a, other);
        }
        let long = job_name(
            &"r".repeat(253),
            "u",
            "c",
            &"c".repeat(40),
            CheckPoint::Step,
            Some(12),
            3,
        );
        assert!(long.len() <= 63, "{long}");
        assert!(
            long.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }
}
