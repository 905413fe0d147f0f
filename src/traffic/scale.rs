//! Scaling a user's Deployment: opt-in draining helpers the controller calls
//! (not tied to a router), and the guarded write both they and the
//! [replicas router](super::replicas) use.
//!
//! # Draining
//!
//! [`scale_down`] records the Deployment's current `spec.replicas` in the
//! annotation [`SCALED_DOWN_FROM_ANNOTATION`] and sets `spec.replicas: 0`;
//! [`restore`] puts the recorded count back and removes the annotation. The
//! record lives on the Deployment itself, so an operator restart (or another
//! replica taking the lease) restores exactly what was drained. Nothing is
//! ever deleted: a drained Deployment keeps its pod template, history and
//! everything else; only `spec.replicas` and the one annotation change.
//!
//! | state found                                   | `scale_down`                      | `restore`                                 |
//! |-----------------------------------------------|-----------------------------------|-------------------------------------------|
//! | Deployment missing                            | `Ok(None)`, no write              | `Ok(None)`, no write                      |
//! | `replicas: n > 0`, no annotation              | record `n`, set 0 → `Some(n)`     | `Ok(None)`, no write (nothing recorded)   |
//! | `replicas: 0`, no annotation                  | `Ok(None)`, no write (nothing to drain, nothing to restore later) | `Ok(None)`, no write |
//! | `replicas: 0`, annotation `n`                 | `Some(n)`, no write (already done)| set `n`, drop annotation → `Some(n)`      |
//! | `replicas: m > 0`, annotation `n` (someone scaled it back up) | record `m`, set 0 → `Some(m)` | set `n`, drop annotation → `Some(n)` |
//!
//! An absent `spec.replicas` counts as 1 (the API server's default). An
//! annotation that is not a non-negative integer is
//! [`TrafficError::Malformed`] (fix or remove it by hand).
//!
//! # Write strategy
//!
//! One JSON merge patch per write, carrying `metadata.resourceVersion` (the
//! version read) together with `spec.replicas` and, where needed, the
//! annotation (JSON `null` removes it). The count and its record therefore
//! change atomically: there is no state where replicas are 0 and the record is
//! missing. A concurrent change makes the API server answer 409 Conflict; the
//! object is re-read and the change re-derived from it, up to
//! [`MAX_WRITE_ATTEMPTS`] times with a short jittered backoff, then
//! [`TrafficError::Conflict`]. No write is made when the Deployment is already
//! in the wanted state.
//!
//! The `scale` subresource is deliberately not used: it carries only
//! `spec.replicas`, so the record could not be written in the same request.
//!
//! RBAC: `get` and `patch` on `apps/deployments` (no `deployments/scale`,
//! no `update`, no `delete`).
//!
//! Every API call is bounded by [`CALL_TIMEOUT`].

// `TrafficError` holds a `kube::Error` inline; every caller returns it anyway.
#![allow(clippy::result_large_err)]

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::TrafficError;
use super::raw::{backoff, bounded_on};

/// The annotation [`scale_down`] records the drained Deployment's replica
/// count in.
pub const SCALED_DOWN_FROM_ANNOTATION: &str = "rollwise.io/scaled-down-from";

pub use super::raw::{CALL_TIMEOUT, MAX_WRITE_ATTEMPTS};

pub(crate) const KIND: &str = "Deployment";

/// What a timed-out call was on, as its error says.
const ON: &str = " of a Deployment";

/// Drain `deployment`: record its `spec.replicas` in
/// [`SCALED_DOWN_FROM_ANNOTATION`] and set it to 0, in one write. Returns the
/// recorded count; `None` when the Deployment is missing or was already at 0
/// without a record (nothing to restore later). See the module docs.
pub async fn scale_down(
    client: kube::Client,
    namespace: &str,
    deployment: &str,
) -> Result<Option<i32>, TrafficError> {
    let api: Api<Deployment> = Api::namespaced(client, namespace);
    let result = guarded_patch(&api, namespace, deployment, |current| {
        // Already at 0: drained by us earlier (the record is kept) or by
        // someone else (nothing to record).
        Ok(match desired_replicas(current) {
            0 => None,
            n => Some(json!({
                "metadata": { "annotations": { SCALED_DOWN_FROM_ANNOTATION: n.to_string() } },
                "spec": { "replicas": 0 },
            })),
        })
    })
    .await;
    match result {
        Ok(after) => {
            let recorded = recorded(&after, deployment)?;
            if let Some(n) = recorded {
                tracing::info!(
                    namespace,
                    deployment,
                    from = n,
                    "Deployment scaled down to 0"
                );
            }
            Ok(recorded)
        }
        Err(TrafficError::RouteNotFound { .. }) => {
            tracing::info!(
                namespace,
                deployment,
                "Deployment is gone; nothing to scale down"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Undo [`scale_down`]: set `spec.replicas` back to the count recorded in
/// [`SCALED_DOWN_FROM_ANNOTATION`] and remove the annotation, in one write.
/// Returns the restored count; `None` (no write) when the Deployment is
/// missing or carries no record.
pub async fn restore(
    client: kube::Client,
    namespace: &str,
    deployment: &str,
) -> Result<Option<i32>, TrafficError> {
    let api: Api<Deployment> = Api::namespaced(client, namespace);
    let mut restored = None;
    let result = guarded_patch(&api, namespace, deployment, |current| {
        restored = recorded(current, deployment)?;
        Ok(restored.map(|n| {
            json!({
                "metadata": { "annotations": { SCALED_DOWN_FROM_ANNOTATION: null } },
                "spec": { "replicas": n },
            })
        }))
    })
    .await;
    match result {
        Ok(_) => {
            if let Some(n) = restored {
                tracing::info!(
                    namespace,
                    deployment,
                    replicas = n,
                    "Deployment scaled back up"
                );
            }
            Ok(restored)
        }
        Err(TrafficError::RouteNotFound { .. }) => {
            tracing::info!(
                namespace,
                deployment,
                "Deployment is gone; nothing to restore"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The count recorded by [`scale_down`], if any.
fn recorded(deployment: &Deployment, name: &str) -> Result<Option<i32>, TrafficError> {
    annotation_count(deployment, name, SCALED_DOWN_FROM_ANNOTATION)
}

/// `spec.replicas`, with the API server's default (1) when absent.
pub(crate) fn desired_replicas(deployment: &Deployment) -> i32 {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
}

/// A replica count stored in annotation `key`: `None` when absent,
/// [`TrafficError::Malformed`] when not a non-negative integer.
pub(crate) fn annotation_count(
    deployment: &Deployment,
    name: &str,
    key: &str,
) -> Result<Option<i32>, TrafficError> {
    let Some(raw) = deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
    else {
        return Ok(None);
    };
    match raw.trim().parse::<i32>() {
        Ok(n) if n >= 0 => Ok(Some(n)),
        _ => Err(TrafficError::Malformed {
            kind: KIND,
            name: name.to_owned(),
            message: format!(
                "annotation {key} is {raw:?}, not a non-negative replica count; fix or remove it"
            ),
        }),
    }
}

/// Read `name`, let `edit` derive a merge patch from it (`None`: already as
/// wanted, no write), and send it with the read `resourceVersion` as a
/// precondition; on 409 re-read and re-derive (see the module docs). Returns
/// the Deployment as the API server holds it afterwards (the write's answer,
/// or the object read when no write was needed). A missing Deployment is
/// [`TrafficError::RouteNotFound`].
pub(crate) async fn guarded_patch(
    api: &Api<Deployment>,
    namespace: &str,
    name: &str,
    mut edit: impl FnMut(&Deployment) -> Result<Option<Value>, TrafficError>,
) -> Result<Deployment, TrafficError> {
    let params = PatchParams {
        field_manager: Some(crate::api::FIELD_MANAGER.into()),
        ..Default::default()
    };
    for attempt in 1..=MAX_WRITE_ATTEMPTS {
        let current = get(api, namespace, name).await?;
        let Some(mut patch) = edit(&current)? else {
            tracing::debug!(
                namespace,
                deployment = name,
                "Deployment already as wanted; no write"
            );
            return Ok(current);
        };
        let Some(resource_version) = current.metadata.resource_version.clone() else {
            return Err(TrafficError::Malformed {
                kind: KIND,
                name: name.to_owned(),
                message: "the object has no metadata.resourceVersion".into(),
            });
        };
        patch["metadata"]["resourceVersion"] = json!(resource_version);
        match bounded_on(ON, "patch", api.patch(name, &params, &Patch::Merge(&patch))).await {
            Ok(written) => return Ok(written),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(
                    namespace,
                    deployment = name,
                    attempt,
                    "Deployment changed under us; re-reading"
                );
                if attempt < MAX_WRITE_ATTEMPTS {
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
            Err(e) => return Err(map_api_error(e, namespace, name)),
        }
    }
    Err(TrafficError::Conflict {
        kind: KIND,
        name: name.to_owned(),
        attempts: MAX_WRITE_ATTEMPTS,
    })
}

/// Read a Deployment; a 404 is [`TrafficError::RouteNotFound`].
pub(crate) async fn get(
    api: &Api<Deployment>,
    namespace: &str,
    name: &str,
) -> Result<Deployment, TrafficError> {
    bounded_on(ON, "get", api.get(name))
        .await
        .map_err(|e| map_api_error(e, namespace, name))
}

/// Deployments are a built-in type: a 404 always means the object (or its
/// namespace) is missing.
fn map_api_error(error: kube::Error, namespace: &str, name: &str) -> TrafficError {
    match &error {
        kube::Error::Api(status) if status.code == 404 => TrafficError::RouteNotFound {
            kind: KIND,
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        },
        _ => TrafficError::Api {
            kind: KIND,
            name: name.to_owned(),
            source: error,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_counts_parse_strictly() {
        let with = |v: &str| -> Deployment {
            serde_json::from_value(json!({
                "metadata": { "name": "web", "annotations": { SCALED_DOWN_FROM_ANNOTATION: v } },
            }))
            .expect("deployment")
        };
        assert_eq!(recorded(&with("3"), "web").unwrap(), Some(3));
        assert_eq!(recorded(&with(" 0 "), "web").unwrap(), Some(0));
        assert!(matches!(
            recorded(&with("-1"), "web"),
            Err(TrafficError::Malformed { .. })
        ));
        assert!(matches!(
            recorded(&with("three"), "web"),
            Err(TrafficError::Malformed { .. })
        ));
        assert_eq!(recorded(&Deployment::default(), "web").unwrap(), None);
        assert_eq!(desired_replicas(&Deployment::default()), 1);
    }
}
