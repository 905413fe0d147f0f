//! Manners shared by the routers and the draining helpers: every API call
//! bounded by [`CALL_TIMEOUT`], conflicts retried with a jittered
//! [`backoff`] up to [`MAX_WRITE_ATTEMPTS`] times, 404s told apart (the
//! object, or its resource type), and raw-JSON object access
//! ([`RawObject`]) for the Istio, SMI and Traefik routers: merge patches
//! carrying `metadata.resourceVersion`, retried on 409.

// `TrafficError` holds a `kube::Error` inline; every caller returns it anyway.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::hash::BuildHasher;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::Status;
use serde_json::{Value, json};

use super::{TrafficError, WeightReading};

/// Upper bound of every API call the routers make.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How many conflicting writes are tried before giving up with
/// [`TrafficError::Conflict`].
pub const MAX_WRITE_ATTEMPTS: u32 = 5;

/// First backoff after a conflict; doubled per attempt, plus up to as much
/// again of jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(20);

/// One named object of one kind, handled as raw JSON.
pub(super) struct RawObject {
    api: Api<DynamicObject>,
    pub(super) kind: &'static str,
    crd: &'static str,
    pub(super) name: String,
    pub(super) namespace: String,
}

impl RawObject {
    pub(super) fn new(
        client: kube::Client,
        resource: &ApiResource,
        kind: &'static str,
        crd: &'static str,
        namespace: &str,
        name: &str,
    ) -> Self {
        Self {
            api: Api::namespaced_with(client, namespace, resource),
            kind,
            crd,
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }
    }

    pub(super) async fn get(&self) -> Result<DynamicObject, TrafficError> {
        let obj = bounded("get", self.api.get(&self.name))
            .await
            .map_err(|e| self.map_api_error(e))?;
        super::seen::note(self.kind, &obj);
        Ok(obj)
    }

    /// `None` when the object does not exist (the resource type does).
    pub(super) async fn get_opt(&self) -> Result<Option<DynamicObject>, TrafficError> {
        match self.get().await {
            Ok(obj) => Ok(Some(obj)),
            Err(TrafficError::RouteNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Read, let `change` compute a merge patch from the object (`None`:
    /// nothing to change), write it with the read resourceVersion; on a
    /// conflict start over. Returns the object the server holds after
    /// the write (or the one read, when nothing changed).
    pub(super) async fn modify<F>(&self, change: F) -> Result<DynamicObject, TrafficError>
    where
        F: Fn(&DynamicObject) -> Result<Option<Value>, TrafficError> + Send + Sync,
    {
        for attempt in 1..=MAX_WRITE_ATTEMPTS {
            let current = self.get().await?;
            let Some(patch) = change(&current)? else {
                tracing::debug!(kind = self.kind, name = %self.name, "already as wanted; no write");
                return Ok(current);
            };
            if let Some(written) = self.patch_at_version(&current, patch).await? {
                tracing::info!(kind = self.kind, name = %self.name, attempt, "route updated");
                return Ok(written);
            }
            self.pause_after_conflict(attempt).await;
        }
        Err(self.conflict())
    }

    /// Merge-patch `patch` on top of `current`, precondition
    /// `current`'s resourceVersion. `None` on a 409.
    pub(super) async fn patch_at_version(
        &self,
        current: &DynamicObject,
        mut patch: Value,
    ) -> Result<Option<DynamicObject>, TrafficError> {
        let Some(resource_version) = current.metadata.resource_version.as_deref() else {
            return Err(self.malformed("the object has no metadata.resourceVersion"));
        };
        patch["metadata"]["resourceVersion"] = Value::from(resource_version);
        let params = PatchParams {
            field_manager: Some(crate::api::FIELD_MANAGER.into()),
            ..Default::default()
        };
        let _writing = super::seen::writing(self.kind, &self.namespace, &self.name);
        self.outcome(
            bounded(
                "patch",
                self.api.patch(&self.name, &params, &Patch::Merge(&patch)),
            )
            .await,
        )
    }

    /// Server-side apply of `body` (a whole object) with the field
    /// manager `rollwise`. `None` on a 409.
    pub(super) async fn apply(
        &self,
        body: &Value,
        force: bool,
    ) -> Result<Option<DynamicObject>, TrafficError> {
        let mut params = PatchParams::apply(crate::api::FIELD_MANAGER);
        params.force = force;
        let _writing = super::seen::writing(self.kind, &self.namespace, &self.name);
        self.outcome(
            bounded(
                "apply",
                self.api.patch(&self.name, &params, &Patch::Apply(body)),
            )
            .await,
        )
    }

    fn outcome(
        &self,
        result: Result<DynamicObject, kube::Error>,
    ) -> Result<Option<DynamicObject>, TrafficError> {
        match result {
            Ok(written) => {
                super::seen::note(self.kind, &written);
                Ok(Some(written))
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(kind = self.kind, name = %self.name, message = %status.message, "changed under us");
                Ok(None)
            }
            Err(e) => Err(self.map_api_error(e)),
        }
    }

    /// Sleep before the next attempt (none after the last one).
    pub(super) async fn pause_after_conflict(&self, attempt: u32) {
        if attempt < MAX_WRITE_ATTEMPTS {
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    pub(super) fn conflict(&self) -> TrafficError {
        TrafficError::Conflict {
            kind: self.kind,
            name: self.name.clone(),
            attempts: MAX_WRITE_ATTEMPTS,
        }
    }

    pub(super) fn malformed(&self, message: impl Into<String>) -> TrafficError {
        TrafficError::Malformed {
            kind: self.kind,
            name: self.name.clone(),
            message: message.into(),
        }
    }

    fn map_api_error(&self, error: kube::Error) -> TrafficError {
        api_error(error, self.kind, self.crd, &self.namespace, &self.name)
    }
}

/// What a failed call on the `kind` `namespace/name` (served by the CRD
/// `crd`) is: a 404 naming the object is [`TrafficError::RouteNotFound`],
/// any other 404 [`TrafficError::CrdMissing`] (the resource type is not
/// served), the rest [`TrafficError::Api`].
pub(super) fn api_error(
    error: kube::Error,
    kind: &'static str,
    crd: &str,
    namespace: &str,
    name: &str,
) -> TrafficError {
    if let kube::Error::Api(status) = &error
        && status.code == 404
    {
        return if names_object(status, name) {
            TrafficError::RouteNotFound {
                kind,
                name: name.to_owned(),
                namespace: namespace.to_owned(),
            }
        } else {
            TrafficError::CrdMissing {
                crd: crd.to_owned(),
            }
        };
    }
    TrafficError::Api {
        kind,
        name: name.to_owned(),
        source: error,
    }
}

/// Whether a 404 is about the object (rather than its resource type): a
/// real API server names the object in `details`, the fake and old servers
/// only in the message; see the Gateway API router's module docs.
fn names_object(status: &Status, name: &str) -> bool {
    status.details.as_ref().is_some_and(|d| !d.name.is_empty())
        || status.message.contains(&format!("\"{name}\" not found"))
}

/// Positions of the stable and canary entries in a list of weighted
/// entries (SMI backends, Traefik services).
#[derive(Debug, Clone, Copy)]
pub(super) struct Positions {
    pub(super) stable: usize,
    pub(super) canary: Option<usize>,
}

impl Positions {
    /// The canary share between the two entries, each weighted by `weight_of`.
    pub(super) fn reading(
        self,
        entries: &[Value],
        weight_of: impl Fn(&Value) -> Result<u64, TrafficError>,
    ) -> Result<WeightReading, TrafficError> {
        let stable = weight_of(&entries[self.stable])?;
        let canary = match self.canary {
            Some(c) => weight_of(&entries[c])?,
            None => 0,
        };
        Ok(WeightReading {
            canary: Some(share(stable, canary)),
        })
    }
}

/// The index of the only entry `is` holds for (`None`: no such entry);
/// [`RawObject::malformed`] with the message `twice` when several are.
pub(super) fn only_position(
    object: &RawObject,
    entries: &[Value],
    is: impl Fn(&Value) -> bool,
    twice: impl FnOnce() -> String,
) -> Result<Option<usize>, TrafficError> {
    let mut hits = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| is(e))
        .map(|(i, _)| i);
    let first = hits.next();
    if hits.next().is_some() {
        return Err(object.malformed(twice()));
    }
    Ok(first)
}

/// Give the stable entry `entries[stable]` the weight `100 - canary` and
/// the canary entry `canary_at` the weight `canary`. Without a canary entry
/// and with `canary > 0`, `added(stable entry)` is inserted right after the
/// stable one; with neither, nothing changes.
pub(super) fn set_weights(
    entries: &mut Vec<Value>,
    stable: usize,
    canary_at: Option<usize>,
    canary: u8,
    added: impl FnOnce(&Value) -> Value,
) {
    match canary_at {
        Some(c) => {
            entries[stable]["weight"] = json!(100 - canary);
            entries[c]["weight"] = json!(canary);
        }
        None if canary > 0 => {
            entries[stable]["weight"] = json!(100 - canary);
            let entry = added(&entries[stable]);
            entries.insert(stable + 1, entry);
        }
        None => {}
    }
}

/// A new entry `{name: service, weight: canary}` with the `port` of
/// `stable` (Gateway API backendRefs, Traefik services).
pub(super) fn named_like(stable: &Value, service: &str, canary: u8) -> Value {
    let mut added = json!({ "name": service, "weight": canary });
    if let Some(port) = stable.get("port").filter(|p| !p.is_null()) {
        added["port"] = port.clone();
    }
    added
}

/// A requested weight, clamped to 100 (with a warning).
pub(super) fn clamp(weight: u8, name: &str) -> u8 {
    if weight > 100 {
        tracing::warn!(%name, requested = weight, "canary weight above 100 clamped to 100");
        100
    } else {
        weight
    }
}

/// Canary share in percent, rounded half up; 0 when neither gets traffic.
pub(super) fn share(stable: u64, canary: u64) -> u8 {
    let total = u128::from(stable) + u128::from(canary);
    if total == 0 {
        return 0;
    }
    let percent = (u128::from(canary) * 200 + total) / (2 * total);
    u8::try_from(percent).unwrap_or(100)
}

/// Backoff before conflict retry `attempt + 1`: `BACKOFF_BASE * 2^(attempt-1)`
/// plus a random jitter of up to the same amount.
pub(super) fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_BASE * 2u32.saturating_pow(attempt.saturating_sub(1)).min(64);
    let base_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX).max(1);
    let jitter = std::collections::hash_map::RandomState::new().hash_one(attempt) % base_ms;
    base + Duration::from_millis(jitter)
}

/// Run an API call under [`CALL_TIMEOUT`].
pub(super) async fn bounded<T>(
    operation: &'static str,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    bounded_on("", operation, call).await
}

/// Run an API call on `subject` (`" of a Deployment"`, or `""`), as told
/// in the timeout error, under [`CALL_TIMEOUT`].
pub(super) async fn bounded_on<T>(
    subject: &'static str,
    operation: &'static str,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(kube::Error::Service(Box::new(TimedOut {
                operation,
                subject,
                after: CALL_TIMEOUT,
            })))
        })
}

/// An API call that did not answer within [`CALL_TIMEOUT`].
#[derive(Debug, thiserror::Error)]
#[error("{operation}{subject} timed out after {after:?}")]
struct TimedOut {
    operation: &'static str,
    subject: &'static str,
    after: Duration,
}

#[cfg(test)]
mod tests {
    use kube::core::response::StatusDetails;

    use super::*;

    fn status(message: &str, details: Option<StatusDetails>) -> Status {
        Status {
            code: 404,
            message: message.into(),
            reason: "NotFound".into(),
            details,
            ..Status::default()
        }
    }

    #[test]
    fn real_server_object_404_names_the_object_in_details() {
        let s = status(
            "httproutes.gateway.networking.k8s.io \"web\" not found",
            Some(StatusDetails {
                name: "web".into(),
                group: "gateway.networking.k8s.io".into(),
                kind: "httproutes".into(),
                uid: String::new(),
                causes: vec![],
                retry_after_seconds: 0,
            }),
        );
        assert!(names_object(&s, "web"));
    }

    #[test]
    fn real_server_unserved_resource_404_is_the_resource_type() {
        let empty = StatusDetails {
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            causes: vec![],
            retry_after_seconds: 0,
        };
        let s = status(
            "the server could not find the requested resource",
            Some(empty),
        );
        assert!(!names_object(&s, "web"));
        // Old API servers answer in plain text; kube keeps the text as message.
        let plain = Status {
            reason: "Failed to parse error data".into(),
            ..status("404 page not found\n", None)
        };
        assert!(!names_object(&plain, "web"));
    }

    #[test]
    fn share_rounds_half_up_and_handles_zero_total() {
        assert_eq!(share(67, 33), 33);
        assert_eq!(share(1, 1), 50);
        assert_eq!(share(2, 1), 33);
        assert_eq!(share(1, 2), 67);
        assert_eq!(share(199, 1), 1); // 0.5 -> 1
        assert_eq!(share(0, 0), 0);
        assert_eq!(share(0, 5), 100);
        assert_eq!(share(u64::MAX, u64::MAX), 50);
    }

    #[test]
    fn backoff_grows_and_stays_short() {
        for attempt in 1..=MAX_WRITE_ATTEMPTS {
            let b = backoff(attempt);
            let base = BACKOFF_BASE * 2u32.pow(attempt - 1);
            assert!(b >= base && b < base * 2, "attempt {attempt}: {b:?}");
        }
    }

    #[test]
    fn share_rounds_half_up() {
        assert_eq!(share(67, 33), 33);
        assert_eq!(share(199, 1), 1);
        assert_eq!(share(0, 0), 0);
        assert_eq!(share(0, 5), 100);
    }

    #[test]
    fn not_found_names_object_by_details_or_message() {
        let status = |message: &str| Status {
            code: 404,
            message: message.into(),
            ..Status::default()
        };
        assert!(names_object(
            &status("virtualservices.networking.istio.io \"web\" not found"),
            "web"
        ));
        assert!(!names_object(
            &status("the server could not find the requested resource"),
            "web"
        ));
        assert!(!names_object(&status("404 page not found\n"), "web"));
    }
}
