//! One reconcile of one Rollout: observe → decide → act → one status write.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::observe::{self, MissingRef};
use super::{Context, Error, Result, with_timeout};
use crate::api::{
    ACTION_ANNOTATION, ActionRecord, FINALIZER, Phase, Rollout, RolloutStatus, Verdict,
};
use crate::plan::{self, AnalysisRound, ManualAction, Observation, validate};
use crate::status::{self, Readiness as SpecReadiness};
use crate::traffic::{Backends, TrafficError, router_for, watched_objects};

/// Requeue for a configuration problem we do not watch (a missing Service,
/// Deployment or route): look again now and then.
const MISSING_REF_REQUEUE: Duration = Duration::from_secs(30);

/// With the canary's Deployment watched, the timed look while waiting for it
/// is only a safety net.
const WATCHED_WAIT_FALLBACK: Duration = Duration::from_secs(300);

/// Reconcile one Rollout. Adds the finalizer first; on deletion returns all
/// traffic to stable before letting the object go.
pub async fn reconcile(rollout: Arc<Rollout>, ctx: Arc<Context>) -> Result<Action> {
    let started = std::time::Instant::now();
    let ns = rollout.namespace().ok_or(Error::MissingObjectKey)?;
    let api: Api<Rollout> = Api::namespaced(ctx.client.clone(), &ns);
    let rollout = ensure_finalizer(&api, rollout).await?;
    let result = finalizer(&api, FINALIZER, rollout, |event| async {
        match event {
            FinalizerEvent::Apply(r) => apply(r, &ctx).await,
            FinalizerEvent::Cleanup(r) => cleanup(r, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .reconcile_duration
        .with_label_values::<&str>(&[])
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics
        .reconciles
        .with_label_values(&[if result.is_ok() { "ok" } else { "error" }])
        .inc();
    result
}

/// Add our finalizer (before anything else is done to traffic) with a merge
/// patch guarded by the resourceVersion we read: the whole finalizers list is
/// sent, so the precondition makes sure no one else's finalizer is lost.
async fn ensure_finalizer(api: &Api<Rollout>, r: Arc<Rollout>) -> Result<Arc<Rollout>> {
    if r.meta().deletion_timestamp.is_some() || r.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(r);
    }
    let mut finalizers = r.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": r.resource_version()}});
    let patched = with_timeout(
        "add finalizer",
        api.patch(
            &r.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        ),
    )
    .await?;
    Ok(Arc::new(patched))
}

/// Transient errors requeue within seconds, with jitter.
pub fn error_policy(rollout: Arc<Rollout>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_after(
        &rollout.name_any(),
        rollout.namespace().as_deref(),
        error,
        &ctx,
    )
}

/// Count and log a failed reconcile; when to try again.
pub(crate) fn retry_after(
    name: &str,
    namespace: Option<&str>,
    error: &Error,
    ctx: &Context,
) -> Action {
    ctx.metrics
        .errors
        .with_label_values(&[error.metric_label()])
        .inc();
    tracing::warn!(rollout = %name, namespace = ?namespace, category = error.metric_label(), error = %error, "reconcile failed");
    let base = match error.metric_label() {
        "conflict" => Duration::from_millis(500),
        _ => Duration::from_secs(5),
    };
    Action::requeue(base + jitter(name, base / 2))
}

fn jitter(seed: &str, max: Duration) -> Duration {
    use std::hash::{BuildHasher, RandomState};
    let h = RandomState::new().hash_one(seed);
    let max_ms = max.as_millis().max(1) as u64;
    Duration::from_millis(h % max_ms)
}

fn backends(ns: &str, r: &Rollout) -> Backends {
    Backends {
        namespace: ns.to_string(),
        stable_service: r.spec.stable.service.clone(),
        canary_service: r.spec.canary.service.clone(),
        stable_deployment: r.spec.stable.deployment.clone(),
        canary_deployment: r.spec.canary.deployment.clone(),
        owner: r.controller_owner_ref(&()),
    }
}

async fn cleanup(r: Arc<Rollout>, ctx: &Context) -> Result<Action> {
    let ns = r.namespace().ok_or(Error::MissingObjectKey)?;
    let reference = r.object_ref(&());
    // After a promotion that drained the old version, "all traffic back to
    // stable" would send it to a Deployment with no pods: keep it where it is.
    let drained = !plan::restore_stable_on_delete(&previous(&r));
    if drained {
        ctx.events
            .publish(
                &reference,
                false,
                "TrafficKept",
                "Finalize",
                "Rollout deleted after a promotion that drained the old version: traffic stays on the new version (the old Deployment's replica count is in its rollwise.io/scaled-down-from annotation)",
            )
            .await;
    } else if let Some(router) = router_for(
        ctx.client.clone(),
        &r.spec.traffic_routing,
        backends(&ns, &r),
    ) {
        match router.restore_stable().await {
            Ok(()) => {}
            // Nothing left to restore: the route or its CRD is gone.
            Err(TrafficError::RouteNotFound { .. } | TrafficError::CrdMissing { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        ctx.events
            .publish(
                &reference,
                false,
                "TrafficRestored",
                "Finalize",
                "Rollout deleted: all traffic returned to the stable version",
            )
            .await;
    }
    ctx.metrics.forget(&ns, &r.name_any());
    if let Some(w) = &ctx.watches {
        w.remove(&ns, &r.name_any());
        w.dependents().remove(&ns, &r.name_any());
        // Its dependents now wait for a Rollout that is gone.
        w.dependents().notify(&ns, &r.name_any());
    }
    Ok(Action::await_change())
}

/// The previous status, or an empty one.
fn previous(r: &Rollout) -> RolloutStatus {
    r.status.clone().unwrap_or_default()
}

async fn apply(r: Arc<Rollout>, ctx: &Context) -> Result<Action> {
    let ns = r.namespace().ok_or(Error::MissingObjectKey)?;
    let name = r.name_any();
    let api: Api<Rollout> = Api::namespaced(ctx.client.clone(), &ns);
    let now = ctx.clock.now();
    let generation = r.metadata.generation.unwrap_or(0);
    let reference = r.object_ref(&());
    let prev = previous(&r);

    // Validate: an invalid spec gets a condition naming the field, and no
    // traffic change; we wait for the spec to change.
    // Dependencies add what CEL cannot check about them.
    let checked = validate(&r.spec).and_then(|plan| {
        let errors = plan::depend::validate(&r.spec, &plan, &ns, &name);
        if errors.is_empty() {
            Ok(plan)
        } else {
            Err(errors)
        }
    });
    let plan = match checked {
        Ok(plan) => plan,
        Err(errors) => {
            let message = errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            return invalid(
                ctx,
                &api,
                &r,
                prev,
                "InvalidSpec",
                &message,
                now,
                Action::await_change(),
            )
            .await;
        }
    };

    // What each dependency is doing.
    let reqs = plan::depend::requirements(&r.spec, &ns);
    // Registered before reading them, so a change after the read wakes us.
    if let Some(w) = &ctx.watches {
        w.dependents()
            .set(&ns, &name, super::dependencies::refs(&reqs));
    }
    let observed_deps = if reqs.is_empty() {
        Vec::new()
    } else {
        let scope = ctx
            .watches
            .as_ref()
            .and_then(|w| w.dependents().scope().map(str::to_string));
        super::dependencies::observe(&ctx.client, scope.as_deref(), &ns, &name, &reqs).await?
    };

    if plan.has_analysis() && plan.prometheus.is_none() && ctx.default_prometheus.is_none() {
        let message = "spec.analysis.prometheus: the analysis needs a Prometheus address (the Rollout names none and the operator has no --default-prometheus)";
        return invalid(
            ctx,
            &api,
            &r,
            prev,
            "InvalidSpec",
            message,
            now,
            Action::await_change(),
        )
        .await;
    }

    let router = router_for(
        ctx.client.clone(),
        &r.spec.traffic_routing,
        backends(&ns, &r),
    )
    .ok_or_else(|| {
        Error::Traffic(TrafficError::Malformed {
            kind: "Rollout",
            name: name.clone(),
            message: "no traffic router".into(),
        })
    })?;

    // References: Services, Deployments, the route.
    let refs = observe::references(&ctx.client, &ns, &r.spec).await?;
    // The route is read once: checked, and its weight read.
    let (route_problem, verified) = match router.verify().await {
        Ok(reading) => (None, Some(reading)),
        Err(e) if e.is_configuration() => (Some(e), None),
        Err(e) => return Err(e.into()),
    };
    if !refs.missing.is_empty() || route_problem.is_some() {
        let mut parts: Vec<String> = refs
            .missing
            .iter()
            .map(|MissingRef { field, message }| format!("{field}: {message}"))
            .collect();
        let mut reason = "ReferenceNotFound";
        if let Some(e) = &route_problem {
            parts.push(format!("spec.trafficRouting.{}: {e}", router.name()));
            if matches!(e, TrafficError::CrdMissing { .. }) {
                reason = "RouterCrdMissing";
            } else if refs.missing.is_empty() {
                reason = "RouteNotUsable";
            }
        }
        // When in doubt, traffic goes to stable: a canary whose Service or
        // Deployment is gone must not keep receiving requests.
        let canary_gone = refs
            .missing
            .iter()
            .any(|m| m.field.starts_with("spec.canary"));
        if canary_gone && route_problem.is_none() {
            let reading = router.current_weight().await?;
            if reading.canary.is_none_or(|w| w > 0) {
                router.set_weight(0).await?;
                parts.push("all traffic moved to stable".into());
            }
        }
        return invalid(
            ctx,
            &api,
            &r,
            prev,
            reason,
            &parts.join("; "),
            now,
            Action::requeue(MISSING_REF_REQUEUE),
        )
        .await;
    }

    // What the route carries now.
    let reading = match verified {
        Some(reading) => reading,
        None => router.current_weight().await?,
    };
    let plan::Weights { carried, actual } = plan::weights(&prev, reading.canary);
    let moved = plan::moved_by_others(&prev, reading.canary);

    // A manual action, if any.
    let raw_action = r.annotations().get(ACTION_ANNOTATION).cloned();
    let action = raw_action.as_deref().and_then(ManualAction::parse);
    if let Some(raw) = raw_action.as_deref()
        && action.is_none()
    {
        return unknown_action(ctx, &api, &r, raw, now).await;
    }

    // Analysis, when due.
    let mut analysis = None;
    if prev.canary_ref == plan.canary_ref && plan::analysis_due(&plan, &prev, actual, now) {
        let address = plan
            .prometheus
            .clone()
            .or_else(|| ctx.default_prometheus.clone());
        // The comparison window: since the canary first got traffic in this
        // rollout (cumulative evidence for the sequential test), at least
        // one interval.
        let window = prev
            .canary_traffic_since
            .as_ref()
            .map(|t| std::time::Duration::try_from(t.0.duration_until(now)).unwrap_or_default())
            .unwrap_or(plan.interval)
            .max(plan.interval);
        let round = match address.as_deref().map(|a| ctx.providers.provider(a)) {
            Some(Ok(p)) => {
                let sides = observe::Sides {
                    canary: &r.spec.canary.service,
                    stable: &r.spec.stable.service,
                    namespace: &ns,
                    rollout: &name,
                };
                let (outcomes, comparisons) = futures::join!(
                    observe::run_analysis(&plan, p.as_ref(), sides.canary, &ns, &name),
                    observe::run_comparisons(&plan, p.as_ref(), &sides, window)
                );
                (outcomes, comparisons)
            }
            Some(Err(e)) => observe::all_errors(&plan, &e.to_string()),
            None => observe::all_errors(
                &plan,
                "no Prometheus address: set spec.analysis.prometheus.address or the operator's --default-prometheus",
            ),
        };
        analysis = Some(AnalysisRound {
            at: now,
            outcomes: round.0,
            comparisons: round.1,
        });
    }

    // The checks that are due (started by an earlier decision).
    let check_results = super::checks::run_due(ctx, &r, &prev, actual, now).await;
    let obs = Observation {
        generation,
        canary: refs.canary,
        actual_weight: reading.canary.map(|_| actual),
        analysis,
        action,
        checks: check_results,
    };
    let decision = plan::decide(&plan, &prev, &obs, now);
    let gated = plan::depend::gate(&plan, &prev, &reqs, &observed_deps, decision, now);
    let decision = gated.decision;
    let readiness = match &gated.problem {
        Some((reason, message)) => SpecReadiness::NotReady {
            reason,
            message: message.clone(),
        },
        None => SpecReadiness::Ready,
    };
    let mut next = decision.status.clone();
    if let Some(a) = &decision.action {
        next.last_action = Some(ActionRecord {
            action: a.action.as_str().into(),
            result: if a.accepted { "Done" } else { "Refused" }.into(),
            message: a.message.clone(),
            at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
        });
    }
    status::build_conditions(
        &mut next,
        &readiness,
        decision.reason.as_str(),
        &decision.message,
        generation,
        plan.pause_deadline,
        now,
    );

    // Act. Lowering the weight is recorded first (so a crash in between
    // cannot raise it again); raising is done first and recorded after the
    // read-back (so status never claims more than the route carries).
    // A/B routes and opt-in scaling are carried out before the final status
    // write, which records that they were done.
    let rv = r.resource_version();
    let mut rv_now = rv.clone();
    if decision.weight < actual {
        let mut first = next.clone();
        first.canary_weight = carried as i32;
        let written = write_status(ctx, &api, &ns, &name, rv.as_deref(), &first).await?;
        rv_now = written.resource_version();
    }
    if decision.weight != actual {
        let read_back = router.set_weight(decision.weight).await?;
        next.canary_weight = read_back.canary.unwrap_or(decision.weight) as i32;
    } else {
        next.canary_weight = carried as i32;
    }
    router.set_header_routes(&decision.header_routes).await?;
    scale(ctx, &ns, &r, &decision.scale, &mut next).await?;
    if decision.weight != actual || next != prev {
        write_status(ctx, &api, &ns, &name, rv_now.as_deref(), &next).await?;
    }
    if let Some((reason, message)) = &gated.problem {
        let was = prev
            .conditions
            .iter()
            .find(|c| c.type_ == status::READY)
            .map(|c| (c.reason.as_str(), c.message.as_str()));
        if was != Some((reason, message.as_str())) {
            ctx.events
                .publish(&reference, true, reason, "Dependencies", message)
                .await;
        }
    }

    // The one-shot action is done: remove the annotation (only if it still
    // holds the value we acted on).
    if let (Some(_), Some(raw)) = (&decision.action, raw_action.as_deref()) {
        remove_action(&api, &name, raw).await?;
    }

    // Tell people, and the metrics.
    if let Some(found) = moved
        && decision.weight != found
    {
        let message = format!(
            "the {} route carried {found}% to the canary, not the {}% rollwise had set: someone else changed it (a kubectl apply or a GitOps sync of the route?); put back to {}%",
            router.name(),
            prev.canary_weight,
            next.canary_weight
        );
        ctx.events
            .publish(&reference, true, "RouteChanged", "Reconcile", &message)
            .await;
        tracing::warn!(rollout = %name, namespace = %ns, "{message}");
    }
    ctx.events
        .transitions(&reference, &decision.transitions)
        .await;
    if let Some(notifier) = &ctx.notifier {
        for n in crate::notify::notifications_for(&r, &next, &decision.transitions, now) {
            notifier.send(&r, n);
        }
    }
    record_metrics(
        ctx,
        &ns,
        &name,
        &prev,
        &next,
        &decision,
        obs.analysis.as_ref(),
    );
    tracing::info!(
        rollout = %name, namespace = %ns, kind = decision.kind.as_str(), reason = decision.reason.as_str(),
        weight = next.canary_weight, step = %next.step, "{}", decision.message
    );
    depend_on(ctx, &ns, &r, !next.phase.is_terminal());
    let look = next_look(ctx, &decision);
    // A Rollout waiting for a person sets no timer, except to report
    // Stalled when it passes spec.pauseDeadline.
    Ok(
        match status::pause_deadline_left(&next, plan.pause_deadline, now) {
            Some(left) => {
                let at_deadline = left + Duration::from_secs(1);
                if decision.waits_for_change || at_deadline < decision.requeue_after {
                    Action::requeue(at_deadline)
                } else {
                    look
                }
            }
            None => look,
        },
    )
}

/// Tell the watches what the Rollout depends on now: its routing objects
/// always (a change made by someone else is put right at once); its
/// Deployments while the rollout is in progress (it may wait on the canary's
/// availability) or when the replicas router splits traffic by them.
/// Write the status (see [`status::write_status`]) and wake the Rollouts
/// that depend on this one: they decide on it.
async fn write_status(
    ctx: &Context,
    api: &Api<Rollout>,
    ns: &str,
    name: &str,
    resource_version: Option<&str>,
    next: &RolloutStatus,
) -> Result<Rollout> {
    let written = status::write_status(api, name, resource_version, next).await?;
    if let Some(w) = &ctx.watches {
        w.dependents().notify(ns, name);
    }
    Ok(written)
}

fn depend_on(ctx: &Context, ns: &str, r: &Rollout, in_progress: bool) {
    let Some(w) = &ctx.watches else {
        return;
    };
    let mut deps: super::watches::Dependencies =
        watched_objects(&r.spec.traffic_routing, &backends(ns, r))
            .into_iter()
            .map(|o| (o.resource, o.name))
            .collect();
    if in_progress || r.spec.traffic_routing.replicas.is_some() {
        deps.extend(super::watches::deployments(
            [&r.spec.stable.deployment, &r.spec.canary.deployment]
                .into_iter()
                .flatten(),
        ));
    }
    w.set(ns, &r.name_any(), deps);
}

/// When to look at the Rollout again. The operator watches what a Rollout
/// waits on (the Rollout itself, its route, its Deployments): a Rollout with
/// nothing pending gets no timer at all, and one waiting for its canary only
/// a long safety net. Without watches (tests, the demo) the engine's timer
/// is used as it is.
fn next_look(ctx: &Context, decision: &plan::Decision) -> Action {
    let after = decision.requeue_after;
    match &ctx.watches {
        None => Action::requeue(after),
        Some(_) if decision.waits_for_change => Action::await_change(),
        Some(_) if decision.reason == plan::WAITING_FOR_CANARY => {
            Action::requeue(after.max(WATCHED_WAIT_FALLBACK))
        }
        Some(_) => Action::requeue(after),
    }
}

fn record_metrics(
    ctx: &Context,
    ns: &str,
    name: &str,
    prev: &RolloutStatus,
    next: &RolloutStatus,
    decision: &crate::plan::Decision,
    analysis: Option<&AnalysisRound>,
) {
    let m = &ctx.metrics;
    m.per_rollout
        .set_canary_weight(ns, name, i64::from(next.canary_weight));
    m.decisions
        .with_label_values(&[decision.kind.as_str(), decision.reason.as_str()])
        .inc();
    m.per_rollout.set_status(ns, name, next);
    m.record_transitions(&decision.transitions);
    if prev.phase != next.phase || prev.canary_ref.is_empty() {
        if !prev.canary_ref.is_empty() {
            m.phase.with_label_values(&[prev.phase.as_str()]).dec();
        }
        m.phase.with_label_values(&[next.phase.as_str()]).inc();
    }
    if analysis.is_some() {
        m.per_rollout.set_analysis(ns, name, next);
        for s in &next.analysis {
            let v = Verdict::parse(&s.verdict).unwrap_or(Verdict::Error);
            m.verdicts.with_label_values(&[v.as_str()]).inc();
        }
    }
}

/// Opt-in scaling (draining the old version, scaling down a rolled-back
/// canary, restoring what rollwise scaled down). Never deletes anything.
async fn scale(
    ctx: &Context,
    ns: &str,
    r: &Rollout,
    actions: &crate::plan::ScaleActions,
    next: &mut RolloutStatus,
) -> Result<()> {
    use crate::traffic::scale;
    if actions.restore {
        for d in [&r.spec.stable.deployment, &r.spec.canary.deployment]
            .into_iter()
            .flatten()
        {
            scale::restore(ctx.client.clone(), ns, d).await?;
        }
    }
    if actions.scale_down_canary
        && let Some(d) = &r.spec.canary.deployment
    {
        scale::scale_down(ctx.client.clone(), ns, d).await?;
        next.canary_scaled_down = true;
    }
    if actions.scale_down_stable
        && let Some(d) = &r.spec.stable.deployment
    {
        scale::scale_down(ctx.client.clone(), ns, d).await?;
        next.stable_scaled_down = true;
    }
    Ok(())
}

/// Record an unusable spec or missing reference: phase Invalid, Ready=False
/// naming the field, a Warning event when the problem is new.
#[allow(clippy::too_many_arguments)]
async fn invalid(
    ctx: &Context,
    api: &Api<Rollout>,
    r: &Rollout,
    prev: RolloutStatus,
    reason: &'static str,
    message: &str,
    now: Timestamp,
    action: Action,
) -> Result<Action> {
    let generation = r.metadata.generation.unwrap_or(0);
    let mut next = prev.clone();
    let was = prev
        .conditions
        .iter()
        .find(|c| c.type_ == status::READY)
        .map(|c| (c.reason.clone(), c.message.clone()));
    next.phase = Phase::Invalid;
    next.observed_generation = generation;
    next.message = format!("{reason}: {message}");
    if next.verdict.is_empty() {
        next.verdict = "-".into();
    }
    if next.step.is_empty() {
        next.step = "-".into();
    }
    status::build_conditions(
        &mut next,
        &SpecReadiness::NotReady {
            reason,
            message: message.to_string(),
        },
        reason,
        message,
        generation,
        None,
        now,
    );
    if next != prev {
        let ns = r.namespace().unwrap_or_default();
        let rv = r.resource_version();
        write_status(ctx, api, &ns, &r.name_any(), rv.as_deref(), &next).await?;
    }
    if was != Some((reason.to_string(), message.to_string())) {
        ctx.events
            .publish(&r.object_ref(&()), true, reason, "Validate", message)
            .await;
    }
    if prev.phase != Phase::Invalid {
        if !prev.canary_ref.is_empty() {
            ctx.metrics
                .phase
                .with_label_values(&[prev.phase.as_str()])
                .dec();
        }
        ctx.metrics
            .phase
            .with_label_values(&[Phase::Invalid.as_str()])
            .inc();
    }
    tracing::warn!(rollout = %r.name_any(), namespace = ?r.namespace(), reason, "{message}");
    if let Some(ns) = r.namespace() {
        ctx.metrics
            .per_rollout
            .set_status(&ns, &r.name_any(), &next);
        depend_on(ctx, &ns, r, true);
    }
    Ok(action)
}

/// An annotation value we do not know: refuse it, say so, remove it.
async fn unknown_action(
    ctx: &Context,
    api: &Api<Rollout>,
    r: &Rollout,
    raw: &str,
    now: Timestamp,
) -> Result<Action> {
    let name = r.name_any();
    let message = format!(
        "unknown {ACTION_ANNOTATION} value {raw:?}: use promote, promote-full, abort or retry"
    );
    let mut next = previous(r);
    next.last_action = Some(ActionRecord {
        action: raw.chars().take(64).collect(),
        result: "Refused".into(),
        message: message.clone(),
        at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
    });
    status::write_status(api, &name, r.resource_version().as_deref(), &next).await?;
    remove_action(api, &name, raw).await?;
    ctx.events
        .publish(
            &r.object_ref(&()),
            true,
            "ActionRefused",
            "Action",
            &message,
        )
        .await;
    Ok(Action::requeue(Duration::from_millis(200)))
}

/// Remove the action annotation with a JSON patch that first tests its
/// value: a newer action set in the meantime is not lost.
async fn remove_action(api: &Api<Rollout>, name: &str, value: &str) -> Result<()> {
    let path = format!(
        "/metadata/annotations/{}",
        ACTION_ANNOTATION.replace('~', "~0").replace('/', "~1")
    );
    let patch: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": path, "value": value },
        { "op": "remove", "path": path },
    ]))
    .expect("static JSON patch");
    match with_timeout(
        "remove action annotation",
        api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch)),
    )
    .await
    {
        Ok(_) => Ok(()),
        // The annotation changed under us (422 from a failed test): the new
        // value is handled on the next reconcile.
        Err(Error::Kube(kube::Error::Api(s))) if s.code == 422 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
