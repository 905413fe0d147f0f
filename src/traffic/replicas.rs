//! Replica-ratio router (`trafficRouting: { replicas: {} }`): for clusters
//! without a traffic router. One Service selects the pods of both versions,
//! so each version's share of the requests follows its share of the pods.
//! The canary weight is therefore set by scaling the two Deployments; this is
//! the only router that changes the user's Deployments.
//!
//! # Capacity and the split
//!
//! The total capacity is the stable Deployment's *original* `spec.replicas`,
//! recorded on first use in the annotation [`ORIGINAL_REPLICAS_ANNOTATION`] on
//! the stable Deployment (in the same write that first scales it), so an
//! operator restart mid-rollout, when the stable is already scaled down, still
//! knows the full size. For weight `w` the pods are [`split`] as
//!
//! - `w == 0`: stable `total`, canary 0;
//! - `w >= 100`: stable 0, canary `total`;
//! - otherwise canary `ceil(total * w / 100)`, at least 1, and at most
//!   `total - 1` when `total >= 2` (the stable keeps a pod until 100%); stable
//!   gets the rest.
//!
//! So `stable + canary == total` at every weight (capacity is preserved), any
//! weight above 0 gets the canary at least one pod, and a canary of a rollout
//! in progress never takes all pods before 100%. With `total == 1` there is no
//! split to make: any weight above 0 moves the one pod to the canary. Replica
//! granularity rounds the weight *up* to the next pod: 33% of 10 pods is 4
//! canary pods, which reads back as 40%.
//!
//! **Changing the size.** The record is refreshed from the stable's
//! `spec.replicas` when no rollout is in progress — the canary Deployment
//! exists with 0 replicas (weight 0) and was not drained by
//! [`super::scale::scale_down`] (no [`SCALED_DOWN_FROM_ANNOTATION`]), and the
//! stable has a positive count different from the record — so `kubectl scale`
//! of the stable between rollouts is honoured (by the next write, and by
//! [`TrafficRouter::restore_stable`], which then leaves the stable as it is).
//! While the canary has pods, or is missing, the record wins and a manual
//! scale of either Deployment is overwritten by the next weight change. A
//! stable scaled to 0 while idle is not taken as a new size (that is a drained
//! Deployment, not a capacity; the next write brings back the recorded size).
//!
//! # Writes
//!
//! Each Deployment is changed with a JSON merge patch of `spec.replicas` (and,
//! on the stable, the annotation) carrying `metadata.resourceVersion` as a
//! precondition; on 409 Conflict the Deployment is re-read and the change
//! re-derived, a bounded number of times (see [`super::scale`]). The `scale`
//! subresource is not used because the record must be written together with
//! the stable's count. No write is made when a Deployment already has the
//! wanted count. The Deployment that grows is written first, then the one that
//! shrinks, so between the two writes the version pods add up to *at least*
//! `total` (momentarily more, never fewer).
//!
//! **No HPA.** A HorizontalPodAutoscaler on either Deployment would keep
//! rewriting `spec.replicas` and fight this router (and the split would stop
//! meaning anything); the replicas router expects no HPA on these
//! Deployments, and no GitOps tool enforcing their `spec.replicas` (leave
//! `replicas` out of the manifests, or ignore the field).
//!
//! # Reading the weight
//!
//! [`TrafficRouter::current_weight`] is `round(canary / (stable + canary) *
//! 100)` over the Deployments' `spec.replicas` (0 when both are 0). The
//! *desired* counts are read, not the ready ones: the weight is what the
//! router has set, and whether the canary's pods are ready is a separate
//! check the controller makes (canary readiness) before it raises the
//! weight. Reading ready pods would make the weight drift with every pod
//! restart and make the controller re-issue writes for a transient state.
//!
//! # Restore
//!
//! [`TrafficRouter::restore_stable`] sets the stable back to `total` and the
//! canary to 0; the annotation is left in place. A missing canary is not an
//! error (the stable is still restored). A missing stable is not an error
//! either, and then the canary is left alone: scaling it to 0 would leave the
//! Service with no pods at all.
//!
//! RBAC: `get` and `patch` on `apps/deployments`.

// `TrafficError` holds a `kube::Error` inline; every trait method returns it.
#![allow(clippy::result_large_err)]

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use serde_json::{Map, Value, json};

use super::scale::{
    SCALED_DOWN_FROM_ANNOTATION, annotation_count, desired_replicas, get, guarded_patch,
};
use super::{Backends, TrafficError, TrafficRouter, WeightReading};

/// The annotation on the stable Deployment holding the total capacity.
pub const ORIGINAL_REPLICAS_ANNOTATION: &str = "rollwise.io/original-replicas";

/// `(stable, canary)` replicas for canary weight `weight` (percent, clamped
/// to 100) out of `total` pods (negative counts as 0). See the module docs;
/// `stable + canary == max(total, 0)` always.
pub fn split(total: i32, weight: u8) -> (i32, i32) {
    let total = total.max(0);
    let weight = weight.min(100);
    let canary = match weight {
        0 => 0,
        100 => total,
        w => {
            // ceil(total * w / 100) in i64: no overflow for any i32 total.
            let up = (i64::from(total) * i64::from(w) + 99) / 100;
            let up = i32::try_from(up).unwrap_or(total).max(1);
            if total >= 2 {
                up.min(total - 1)
            } else {
                up.min(total)
            }
        }
    };
    (total - canary, canary)
}

/// Drives the canary weight by scaling the stable and canary Deployments.
/// See the module docs.
pub struct ReplicasRouter {
    api: Api<Deployment>,
    backends: Backends,
}

/// The total capacity, and whether the record on the stable must be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Capacity {
    total: i32,
    record: bool,
}

impl ReplicasRouter {
    /// A router for `backends.stable_deployment` and
    /// `backends.canary_deployment` in `backends.namespace`.
    pub fn new(client: kube::Client, backends: Backends) -> Self {
        let api = Api::namespaced(client, &backends.namespace);
        Self { api, backends }
    }

    /// The two Deployment names; [`TrafficError::Malformed`] naming the
    /// missing field otherwise.
    fn names(&self) -> Result<(&str, &str), TrafficError> {
        let field = |value: &Option<String>, field: &str| -> Result<(), TrafficError> {
            match value.as_deref() {
                Some(name) if !name.is_empty() => Ok(()),
                _ => Err(TrafficError::Malformed {
                    kind: "Rollout",
                    name: self.rollout_name(),
                    message: format!("the replicas router needs {field}"),
                }),
            }
        };
        field(&self.backends.stable_deployment, "spec.stable.deployment")?;
        field(&self.backends.canary_deployment, "spec.canary.deployment")?;
        Ok((
            self.backends
                .stable_deployment
                .as_deref()
                .unwrap_or_default(),
            self.backends
                .canary_deployment
                .as_deref()
                .unwrap_or_default(),
        ))
    }

    fn rollout_name(&self) -> String {
        self.backends
            .owner
            .as_ref()
            .map(|o| o.name.clone())
            .unwrap_or_default()
    }

    async fn fetch(&self, name: &str) -> Result<Deployment, TrafficError> {
        get(&self.api, &self.backends.namespace, name).await
    }

    /// Set `name` to `replicas` (and, with `record`, the capacity annotation).
    async fn scale(
        &self,
        name: &str,
        replicas: i32,
        record: Option<i32>,
    ) -> Result<Deployment, TrafficError> {
        guarded_patch(&self.api, &self.backends.namespace, name, |current| {
            let mut patch = Map::new();
            if desired_replicas(current) != replicas {
                patch.insert("spec".into(), json!({ "replicas": replicas }));
            }
            if let Some(total) = record
                && annotation_count(current, name, ORIGINAL_REPLICAS_ANNOTATION)? != Some(total)
            {
                patch.insert(
                    "metadata".into(),
                    json!({ "annotations": { ORIGINAL_REPLICAS_ANNOTATION: total.to_string() } }),
                );
            }
            Ok((!patch.is_empty()).then_some(Value::Object(patch)))
        })
        .await
    }

    /// Write both counts, the growing Deployment first (see the module docs).
    async fn apply(
        &self,
        (stable_name, canary_name): (&str, &str),
        (stable, canary): (i32, i32),
        canary_now: i32,
        record: Option<i32>,
    ) -> Result<(Deployment, Deployment), TrafficError> {
        if canary > canary_now {
            let c = self.scale(canary_name, canary, None).await?;
            let s = self.scale(stable_name, stable, record).await?;
            Ok((s, c))
        } else {
            let s = self.scale(stable_name, stable, record).await?;
            let c = self.scale(canary_name, canary, None).await?;
            Ok((s, c))
        }
    }
}

/// The total capacity (see the module docs): the record, refreshed from the
/// stable's count when no rollout is in progress, or the stable's count when
/// there is no record yet. `canary` is `None` when the canary Deployment is
/// missing (then nothing proves the rollout idle: the record wins).
fn capacity(
    stable: &Deployment,
    name: &str,
    canary: Option<&Deployment>,
) -> Result<Capacity, TrafficError> {
    let current = desired_replicas(stable);
    let idle = canary.is_some_and(|c| {
        desired_replicas(c) == 0
            && c.metadata
                .annotations
                .as_ref()
                .is_none_or(|a| !a.contains_key(SCALED_DOWN_FROM_ANNOTATION))
    });
    Ok(
        match annotation_count(stable, name, ORIGINAL_REPLICAS_ANNOTATION)? {
            None => Capacity {
                total: current,
                record: true,
            },
            Some(recorded) if idle && current > 0 && current != recorded => {
                tracing::info!(
                    deployment = name,
                    from = recorded,
                    to = current,
                    "stable Deployment resized while idle; capacity record refreshed"
                );
                Capacity {
                    total: current,
                    record: true,
                }
            }
            Some(recorded) => Capacity {
                total: recorded,
                record: false,
            },
        },
    )
}

/// The canary's share of the desired pods, in percent, rounded half up.
fn reading(stable: &Deployment, canary: &Deployment) -> WeightReading {
    let s = i64::from(desired_replicas(stable).max(0));
    let c = i64::from(desired_replicas(canary).max(0));
    let total = s + c;
    let percent = if total == 0 {
        0
    } else {
        (c * 200 + total) / (2 * total)
    };
    WeightReading {
        canary: Some(u8::try_from(percent).unwrap_or(100)),
    }
}

#[async_trait]
impl TrafficRouter for ReplicasRouter {
    fn name(&self) -> &'static str {
        "replicas"
    }

    /// Both Deployments exist (else [`TrafficError::RouteNotFound`] with kind
    /// `Deployment`) and the capacity record, if any, is readable.
    async fn verify(&self) -> Result<WeightReading, TrafficError> {
        let (stable_name, canary_name) = self.names()?;
        let stable = self.fetch(stable_name).await?;
        let canary = self.fetch(canary_name).await?;
        capacity(&stable, stable_name, Some(&canary))?;
        Ok(reading(&stable, &canary))
    }

    async fn current_weight(&self) -> Result<WeightReading, TrafficError> {
        let (stable_name, canary_name) = self.names()?;
        let stable = self.fetch(stable_name).await?;
        let canary = self.fetch(canary_name).await?;
        Ok(reading(&stable, &canary))
    }

    async fn set_weight(&self, canary_weight: u8) -> Result<WeightReading, TrafficError> {
        let weight = if canary_weight > 100 {
            tracing::warn!(
                requested = canary_weight,
                "canary weight above 100 clamped to 100"
            );
            100
        } else {
            canary_weight
        };
        let names = self.names()?;
        let stable = self.fetch(names.0).await?;
        let canary = self.fetch(names.1).await?;
        let canary_now = desired_replicas(&canary);
        let cap = capacity(&stable, names.0, Some(&canary))?;
        let counts = split(cap.total, weight);
        if weight > 0 && cap.total == 0 {
            tracing::warn!(
                deployment = names.0,
                "stable Deployment has 0 replicas: no pods to give the canary"
            );
        }
        let (stable, canary) = self
            .apply(names, counts, canary_now, cap.record.then_some(cap.total))
            .await?;
        let read = reading(&stable, &canary);
        tracing::info!(
            stable = counts.0,
            canary = counts.1,
            weight,
            reading = ?read.canary,
            "replicas set for the canary weight"
        );
        Ok(read)
    }

    async fn restore_stable(&self) -> Result<(), TrafficError> {
        let names = self.names()?;
        let stable = match self.fetch(names.0).await {
            Ok(d) => d,
            Err(TrafficError::RouteNotFound { .. }) => {
                tracing::warn!(
                    deployment = names.0,
                    "stable Deployment is gone; canary left as it is"
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let canary = match self.fetch(names.1).await {
            Ok(d) => Some(d),
            Err(TrafficError::RouteNotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let total = capacity(&stable, names.0, canary.as_ref())?.total;
        self.scale(names.0, total, None).await?;
        if canary.is_some() {
            match self.scale(names.1, 0, None).await {
                Ok(_) | Err(TrafficError::RouteNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        tracing::info!(stable = total, "all pods back on the stable Deployment");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        assert_eq!(split(10, 0), (10, 0));
        assert_eq!(split(10, 5), (9, 1));
        assert_eq!(split(10, 33), (6, 4));
        assert_eq!(split(10, 50), (5, 5));
        assert_eq!(split(10, 99), (1, 9));
        assert_eq!(split(10, 100), (0, 10));
        assert_eq!(split(1, 5), (0, 1));
        assert_eq!(split(2, 99), (1, 1));
        assert_eq!(split(0, 50), (0, 0));
        assert_eq!(split(-3, 50), (0, 0));
        assert_eq!(split(10, 200), (0, 10));
        assert_eq!(split(i32::MAX, 99).0 + split(i32::MAX, 99).1, i32::MAX);
    }
}
