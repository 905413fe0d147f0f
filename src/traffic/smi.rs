//! SMI router: moves traffic with a `TrafficSplit`, read and written as
//! `split.smi-spec.io/v1alpha2` (integer `weight`s). Linkerd's SMI extension
//! (`linkerd-smi` 0.2+) serves both `v1alpha1` (the storage version, weights
//! int-or-string) and `v1alpha2` with conversion `None`, so an object written
//! as `v1alpha1` comes back through `v1alpha2` unchanged: besides integers,
//! the reader therefore accepts non-negative numbers and the quantity strings
//! `"<int>"` and `"<int>m"` (milli-units); anything else is
//! [`TrafficError::Malformed`]. Only `v1alpha2` is requested: a cluster that
//! does not serve it reports [`TrafficError::CrdMissing`]
//! (`trafficsplits.split.smi-spec.io`). Linkerd's `v1alpha2` schema prunes
//! unknown fields (including `matches`), so a real API server keeps less than
//! what the router preserves.
//!
//! # Whose TrafficSplit
//!
//! The TrafficSplit is `backends.namespace/<trafficSplit>`.
//!
//! - **Missing**: [`TrafficRouter::set_weight`] creates it by server-side
//!   apply (field manager `rollwise`, not forced) with the label
//!   `app.kubernetes.io/managed-by: rollwise`, the Rollout as owner
//!   (`backends.owner`, so it is garbage-collected with the Rollout) and
//!   `spec: {service: <root>, backends: [{service: <stable>, weight: 100-w},
//!   {service: <canary>, weight: w}]}`, where the root Service is
//!   `rootService` (default: the stable Service).
//! - **Ours** (that label, and the owner's uid among its ownerReferences when
//!   there is an owner): the same apply, forced (rollwise owns these fields
//!   of its own object); labels, annotations and other fields someone added
//!   stay.
//! - **Someone else's**: only the `weight` of the stable and canary backends
//!   change (a canary backend is appended right after the stable one when
//!   missing and `w > 0`); other backends, `spec.service`, `matches` and
//!   unknown fields stay. Written as a JSON merge patch carrying
//!   `metadata.resourceVersion` and the whole `spec.backends` list, retried
//!   on 409 like the Gateway API router. A TrafficSplit of someone else
//!   without the stable backend is [`TrafficError::NoStableBackend`].
//!
//! No write is made when the TrafficSplit already says what is wanted.
//! [`TrafficRouter::restore_stable`] writes 100/0 to an existing TrafficSplit
//! and never creates one (a missing one is `Ok`); deleting the Rollout lets
//! the garbage collector remove a TrafficSplit it created.
//!
//! A narrow race: if someone creates the TrafficSplit between our read (404)
//! and our apply, the apply lands on their object (server-side apply creates
//! or updates) and, unless it conflicts with their field values, adopts it.
//!
//! # Reading the weight
//!
//! `round(canary / (stable + canary) * 100)` over the stable and canary
//! backends (an absent weight is 0; a quantity is compared in milli-units),
//! from the object the API server returned.
//! Without a TrafficSplit, the reading is 0 when the root Service is the
//! stable Service (all traffic goes to it) and unknown (`None`) otherwise.
//! Header routes are not supported (SMI `matches` need HTTPRouteGroups).
//!
//! RBAC: `get`, `create` and `patch` on `trafficsplits.split.smi-spec.io`.

// See gateway_api.rs: `TrafficError` is large, every method returns it anyway.
#![allow(clippy::result_large_err)]

use async_trait::async_trait;
use kube::api::{ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

use super::raw::{MAX_WRITE_ATTEMPTS, Positions, RawObject, clamp, only_position, set_weights};
use super::{Backends, TrafficError, TrafficRouter, WeightReading};
use crate::api::SmiRouting;

/// The CRD that serves TrafficSplit, as reported in [`TrafficError::CrdMissing`].
pub const TRAFFICSPLIT_CRD: &str = "trafficsplits.split.smi-spec.io";

/// The label marking a TrafficSplit rollwise created.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

const KIND: &str = "TrafficSplit";
const API_VERSION: &str = "split.smi-spec.io/v1alpha2";

pub(crate) fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("split.smi-spec.io", "v1alpha2", KIND),
        "trafficsplits",
    )
}

/// Drives the weights of one TrafficSplit. See the module docs.
pub struct SmiRouter {
    object: RawObject,
    root_service: String,
    backends: Backends,
}

impl SmiRouter {
    /// A router for the TrafficSplit `config.traffic_split` in `backends.namespace`.
    pub fn new(client: kube::Client, config: SmiRouting, backends: Backends) -> Self {
        let object = RawObject::new(
            client,
            &resource(),
            KIND,
            TRAFFICSPLIT_CRD,
            &backends.namespace,
            &config.traffic_split,
        );
        let root_service = config
            .root_service
            .unwrap_or_else(|| backends.stable_service.clone());
        Self {
            object,
            root_service,
            backends,
        }
    }

    /// Whether rollwise created this TrafficSplit for this Rollout.
    fn is_ours(&self, obj: &DynamicObject) -> bool {
        let labelled = obj
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .is_some_and(|v| v == crate::api::FIELD_MANAGER);
        let owned = match &self.backends.owner {
            None => true,
            Some(owner) => obj
                .metadata
                .owner_references
                .as_ref()
                .is_some_and(|refs| refs.iter().any(|r| r.uid == owner.uid)),
        };
        labelled && owned
    }

    /// The `spec.backends` rollwise wants on its own TrafficSplit.
    fn desired_backends(&self, canary: u8) -> Value {
        json!([
            { "service": self.backends.stable_service, "weight": 100 - canary },
            { "service": self.backends.canary_service, "weight": canary },
        ])
    }

    /// The whole object rollwise applies for its own TrafficSplit.
    fn desired(&self, canary: u8) -> Value {
        let mut metadata = json!({
            "name": self.object.name,
            "namespace": self.object.namespace,
            "labels": { MANAGED_BY_LABEL: crate::api::FIELD_MANAGER },
        });
        if let Some(owner) = &self.backends.owner {
            metadata["ownerReferences"] = json!([owner]);
        }
        json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": metadata,
            "spec": {
                "service": self.root_service,
                "backends": self.desired_backends(canary),
            },
        })
    }

    /// Whether our own TrafficSplit already says what is wanted.
    fn ours_up_to_date(&self, obj: &DynamicObject, canary: u8) -> bool {
        let spec = obj.data.get("spec");
        spec.and_then(|s| s.get("service")).and_then(Value::as_str)
            == Some(self.root_service.as_str())
            && spec.and_then(|s| s.get("backends")) == Some(&self.desired_backends(canary))
    }

    /// `spec.backends` of the object (empty when absent).
    fn backends_of<'a>(&self, obj: &'a DynamicObject) -> Result<&'a [Value], TrafficError> {
        match obj.data.get("spec").and_then(|s| s.get("backends")) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(b)) => Ok(b),
            Some(_) => Err(self.object.malformed("spec.backends is not a list")),
        }
    }

    fn positions(&self, backends: &[Value]) -> Result<Positions, TrafficError> {
        let position = |service: &str| {
            only_position(
                &self.object,
                backends,
                |b| b.get("service").and_then(Value::as_str) == Some(service),
                || format!("spec.backends lists Service {service:?} more than once"),
            )
        };
        let Some(stable) = position(&self.backends.stable_service)? else {
            return Err(TrafficError::NoStableBackend {
                kind: KIND,
                name: self.object.name.clone(),
                service: self.backends.stable_service.clone(),
            });
        };
        Ok(Positions {
            stable,
            canary: position(&self.backends.canary_service)?,
        })
    }

    /// A backend's weight in milli-units (see the module docs).
    fn weight_of(&self, backend: &Value) -> Result<u64, TrafficError> {
        let weight = match backend.get("weight") {
            None | Some(Value::Null) => return Ok(0),
            Some(w) => w,
        };
        let milli = match weight {
            Value::Number(n) => match n.as_u64() {
                Some(whole) => whole.checked_mul(1000),
                None => n
                    .as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1e15)
                    // In range (checked above), so the cast is exact enough.
                    .map(|f| (f * 1000.0).round() as u64),
            },
            Value::String(q) => match q.strip_suffix('m') {
                Some(m) => m.parse::<u64>().ok(),
                None => q.parse::<u64>().ok().and_then(|w| w.checked_mul(1000)),
            },
            _ => None,
        };
        milli.ok_or_else(|| {
            self.object.malformed(format!(
                "spec.backends has a weight {weight} that is neither a non-negative number \
                 nor a quantity like \"500m\""
            ))
        })
    }

    fn reading_of(&self, obj: &DynamicObject) -> Result<WeightReading, TrafficError> {
        let backends = self.backends_of(obj)?;
        self.positions(backends)?
            .reading(backends, |b| self.weight_of(b))
    }

    /// The reading when there is no TrafficSplit.
    fn reading_without_split(&self) -> WeightReading {
        WeightReading {
            canary: (self.root_service == self.backends.stable_service).then_some(0),
        }
    }

    /// Someone else's `spec.backends` with the weights set; `None` when unchanged.
    fn reweighted(
        &self,
        backends: &[Value],
        canary: u8,
    ) -> Result<Option<Vec<Value>>, TrafficError> {
        let at = self.positions(backends)?;
        let mut new = backends.to_vec();
        set_weights(
            &mut new,
            at.stable,
            at.canary,
            canary,
            |_| json!({ "service": self.backends.canary_service, "weight": canary }),
        );
        Ok((new.as_slice() != backends).then_some(new))
    }

    /// Write the weights (creating the TrafficSplit when `create`); `None`
    /// when there is no TrafficSplit and `create` is false.
    async fn write_weight(
        &self,
        canary: u8,
        create: bool,
    ) -> Result<Option<DynamicObject>, TrafficError> {
        let name = &self.object.name;
        for attempt in 1..=MAX_WRITE_ATTEMPTS {
            let written = match self.object.get_opt().await? {
                None if !create => return Ok(None),
                None => {
                    tracing::info!(traffic_split = %name, canary, "creating TrafficSplit");
                    self.object.apply(&self.desired(canary), false).await?
                }
                Some(current) if self.is_ours(&current) => {
                    if self.ours_up_to_date(&current, canary) {
                        return Ok(Some(current));
                    }
                    self.object.apply(&self.desired(canary), true).await?
                }
                Some(current) => {
                    let Some(new) = self.reweighted(self.backends_of(&current)?, canary)? else {
                        return Ok(Some(current));
                    };
                    let patch = json!({ "spec": { "backends": new } });
                    self.object.patch_at_version(&current, patch).await?
                }
            };
            if let Some(written) = written {
                tracing::info!(traffic_split = %name, canary, attempt, "TrafficSplit weights set");
                return Ok(Some(written));
            }
            self.object.pause_after_conflict(attempt).await;
        }
        Err(self.object.conflict())
    }
}

#[async_trait]
impl TrafficRouter for SmiRouter {
    fn name(&self) -> &'static str {
        "smi"
    }

    /// The resource type is served; an existing TrafficSplit has the stable
    /// backend and readable weights. A missing one is fine: it will be created.
    async fn verify(&self) -> Result<WeightReading, TrafficError> {
        match self.object.get_opt().await? {
            None => Ok(self.reading_without_split()),
            Some(split) => self.reading_of(&split),
        }
    }

    async fn current_weight(&self) -> Result<WeightReading, TrafficError> {
        match self.object.get_opt().await? {
            None => Ok(self.reading_without_split()),
            Some(split) => self.reading_of(&split),
        }
    }

    async fn set_weight(&self, canary_weight: u8) -> Result<WeightReading, TrafficError> {
        let canary = clamp(canary_weight, &self.object.name);
        match self.write_weight(canary, true).await? {
            Some(written) => self.reading_of(&written),
            None => Ok(self.reading_without_split()),
        }
    }

    /// Stable 100, canary 0 on an existing TrafficSplit; never creates one.
    async fn restore_stable(&self) -> Result<(), TrafficError> {
        match self.write_weight(0, false).await {
            Ok(None) | Err(TrafficError::RouteNotFound { .. }) => {
                tracing::info!(traffic_split = %self.object.name, "TrafficSplit is gone; nothing to restore");
                Ok(())
            }
            Ok(Some(_)) => Ok(()),
            Err(TrafficError::NoStableBackend { .. }) => {
                tracing::warn!(traffic_split = %self.object.name, "TrafficSplit no longer lists the stable Service; nothing to restore");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
