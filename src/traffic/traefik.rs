//! Traefik router: moves traffic by setting `weight` on the services of a
//! weighted `TraefikService` (`traefik.io/v1alpha1`, Traefik v2.10 and v3;
//! the older `traefik.containo.us` group is not used and a cluster serving
//! only that reports [`TrafficError::CrdMissing`] `traefikservices.traefik.io`).
//!
//! # What is changed
//!
//! The TraefikService is `backends.namespace/<weightedService>`; its
//! `spec.weighted.services[]` entry for the stable (canary) Service is the one
//! with `name` = the Service, a `kind` absent or `Service` (not a nested
//! TraefikService) and a `namespace` absent or the TraefikService's own. For
//! canary weight `w` the stable entry gets `weight: 100 - w`, the canary entry
//! `weight: w`; a missing canary entry is inserted right after the stable one
//! with only `name`, the stable entry's `port` and `weight` (when `w > 0`).
//! Everything else (other services, sticky sessions, health checks, unknown
//! fields) is kept: the object is handled as raw JSON.
//!
//! A missing TraefikService is [`TrafficError::RouteNotFound`]; one without
//! `spec.weighted` or without a stable entry is
//! [`TrafficError::NoStableBackend`]; two stable (or canary) entries are
//! [`TrafficError::Malformed`]. The weight read back is
//! `round(canary / (stable + canary) * 100)` with Traefik's default weight 1
//! for an entry without one. Writes, conflicts, timeouts and 404s are handled
//! as by the Gateway API router (merge patch with resourceVersion carrying the
//! whole `spec.weighted.services` list, retry on 409, no write when
//! unchanged). Header routes are not supported (they live in IngressRoutes).
//!
//! RBAC: `get` and `patch` on `traefikservices.traefik.io`.

// See gateway_api.rs: `TrafficError` is large, every method returns it anyway.
#![allow(clippy::result_large_err)]

use async_trait::async_trait;
use kube::api::{ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

use super::raw::{Positions, RawObject, clamp, named_like, only_position, set_weights};
use super::{Backends, TrafficError, TrafficRouter, WeightReading};
use crate::api::TraefikRouting;

/// The CRD that serves TraefikService, as reported in [`TrafficError::CrdMissing`].
pub const TRAEFIKSERVICE_CRD: &str = "traefikservices.traefik.io";

const KIND: &str = "TraefikService";

pub(crate) fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("traefik.io", "v1alpha1", KIND),
        "traefikservices",
    )
}

/// Drives the weights of one TraefikService. See the module docs.
pub struct TraefikRouter {
    object: RawObject,
    backends: Backends,
}

impl TraefikRouter {
    /// A router for the TraefikService `config.weighted_service` in `backends.namespace`.
    pub fn new(client: kube::Client, config: TraefikRouting, backends: Backends) -> Self {
        let object = RawObject::new(
            client,
            &resource(),
            KIND,
            TRAEFIKSERVICE_CRD,
            &backends.namespace,
            &config.weighted_service,
        );
        Self { object, backends }
    }

    fn no_stable(&self) -> TrafficError {
        TrafficError::NoStableBackend {
            kind: KIND,
            name: self.object.name.clone(),
            service: self.backends.stable_service.clone(),
        }
    }

    /// `spec.weighted.services`; `NoStableBackend` without `spec.weighted`.
    fn services_of<'a>(&self, obj: &'a DynamicObject) -> Result<&'a [Value], TrafficError> {
        let weighted = match obj.data.get("spec").and_then(|s| s.get("weighted")) {
            None | Some(Value::Null) => return Err(self.no_stable()),
            Some(w) => w,
        };
        match weighted.get("services") {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(s)) => Ok(s),
            Some(_) => Err(self
                .object
                .malformed("spec.weighted.services is not a list")),
        }
    }

    fn is_service(&self, entry: &Value, service: &str) -> bool {
        let field = |name: &str| entry.get(name).and_then(Value::as_str);
        field("name") == Some(service)
            && field("kind").is_none_or(|k| k.is_empty() || k == "Service")
            && field("namespace").is_none_or(|ns| ns.is_empty() || ns == self.object.namespace)
    }

    fn positions(&self, services: &[Value]) -> Result<Positions, TrafficError> {
        let position = |service: &str| {
            only_position(
                &self.object,
                services,
                |s| self.is_service(s, service),
                || {
                    format!(
                        "spec.weighted.services lists Service {service:?} more than once; \
                         cannot tell which one to weight"
                    )
                },
            )
        };
        let stable = position(&self.backends.stable_service)?.ok_or_else(|| self.no_stable())?;
        Ok(Positions {
            stable,
            canary: position(&self.backends.canary_service)?,
        })
    }

    /// An entry's weight with Traefik's default (absent = 1).
    fn weight_of(&self, entry: &Value) -> Result<u64, TrafficError> {
        match entry.get("weight") {
            None | Some(Value::Null) => Ok(1),
            Some(w) => w.as_u64().ok_or_else(|| {
                self.object.malformed(format!(
                    "spec.weighted.services has a weight {w} that is not a non-negative integer"
                ))
            }),
        }
    }

    fn reading_of(&self, obj: &DynamicObject) -> Result<WeightReading, TrafficError> {
        let services = self.services_of(obj)?;
        self.positions(services)?
            .reading(services, |s| self.weight_of(s))
    }

    async fn write_weight(&self, canary: u8) -> Result<WeightReading, TrafficError> {
        let written = self
            .object
            .modify(|current| {
                let services = self.services_of(current)?;
                let at = self.positions(services)?;
                let mut new = services.to_vec();
                set_weights(&mut new, at.stable, at.canary, canary, |stable| {
                    named_like(stable, &self.backends.canary_service, canary)
                });
                Ok((new.as_slice() != services)
                    .then(|| json!({ "spec": { "weighted": { "services": new } } })))
            })
            .await?;
        self.reading_of(&written)
    }
}

#[async_trait]
impl TrafficRouter for TraefikRouter {
    fn name(&self) -> &'static str {
        "traefik"
    }

    async fn verify(&self) -> Result<WeightReading, TrafficError> {
        let service = self.object.get().await?;
        self.reading_of(&service)
    }

    async fn current_weight(&self) -> Result<WeightReading, TrafficError> {
        let service = self.object.get().await?;
        self.reading_of(&service)
    }

    async fn set_weight(&self, canary_weight: u8) -> Result<WeightReading, TrafficError> {
        self.write_weight(clamp(canary_weight, &self.object.name))
            .await
    }

    /// Stable 100, canary 0; a canary entry is kept (weight 0). A
    /// TraefikService that is gone or no longer lists the stable Service has
    /// nothing to restore.
    async fn restore_stable(&self) -> Result<(), TrafficError> {
        match self.write_weight(0).await {
            Ok(_) => Ok(()),
            Err(TrafficError::RouteNotFound { .. }) => {
                tracing::info!(traefik_service = %self.object.name, "TraefikService is gone; nothing to restore");
                Ok(())
            }
            Err(TrafficError::NoStableBackend { .. }) => {
                tracing::warn!(traefik_service = %self.object.name, "TraefikService no longer lists the stable Service; nothing to restore");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
