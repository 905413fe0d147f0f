//! The traffic-router seam. One implementation per router; [`router_for`]
//! picks it from the spec. Routers only move weights on objects the user
//! owns: they never delete a user's object.

use async_trait::async_trait;

use crate::api::TrafficRouting;

pub mod gateway_api;

/// Errors of the routing layer. A `metric_label` per variant, never a Debug
/// string in a metric label.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// The route object named in the spec does not exist.
    #[error("{kind} {name:?} not found in namespace {namespace:?}")]
    RouteNotFound {
        kind: &'static str,
        name: String,
        namespace: String,
    },
    /// The route exists but no rule sends traffic to the stable Service.
    #[error("{kind} {name:?} has no rule with a backendRef to the stable Service {service:?}")]
    NoStableBackend {
        kind: &'static str,
        name: String,
        service: String,
    },
    /// The routing CRD is not installed in the cluster.
    #[error("the {crd} CRD is not installed")]
    CrdMissing { crd: String },
    /// Someone else kept changing the route; we gave up for this round.
    #[error("{kind} {name:?} kept changing under us ({attempts} conflicting writes); will retry")]
    Conflict {
        kind: &'static str,
        name: String,
        attempts: u32,
    },
    /// The API call failed.
    #[error("API call on {kind} {name:?} failed: {source}")]
    Api {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// The route object has a shape we cannot work with.
    #[error("{kind} {name:?} is malformed: {message}")]
    Malformed {
        kind: &'static str,
        name: String,
        message: String,
    },
}

impl TrafficError {
    /// A fixed label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            TrafficError::RouteNotFound { .. } => "route_not_found",
            TrafficError::NoStableBackend { .. } => "no_stable_backend",
            TrafficError::CrdMissing { .. } => "crd_missing",
            TrafficError::Conflict { .. } => "route_conflict",
            TrafficError::Api { .. } => "route_api",
            TrafficError::Malformed { .. } => "route_malformed",
        }
    }

    /// Whether this is the user's configuration (wait for a change) rather
    /// than a passing failure (retry soon).
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            TrafficError::RouteNotFound { .. }
                | TrafficError::NoStableBackend { .. }
                | TrafficError::CrdMissing { .. }
                | TrafficError::Malformed { .. }
        )
    }
}

/// What the route carries, as read back from the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightReading {
    /// Canary weight in percent; `None` when the router cannot tell.
    pub canary: Option<u8>,
}

/// The stable and canary Services a router moves traffic between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backends {
    pub namespace: String,
    pub stable_service: String,
    pub canary_service: String,
}

#[async_trait]
pub trait TrafficRouter: Send + Sync {
    /// Short name for logs and metrics (e.g. `gatewayAPI`).
    fn name(&self) -> &'static str;
    /// Check the route exists and can be driven (references the stable
    /// Service). Configuration problems come back as errors for which
    /// [`TrafficError::is_configuration`] is true.
    async fn verify(&self) -> Result<(), TrafficError>;
    /// Read the canary weight the route carries now.
    async fn current_weight(&self) -> Result<WeightReading, TrafficError>;
    /// Set the canary weight (stable gets `100 - weight`), preserving every
    /// other field of the route, then read it back.
    async fn set_weight(&self, canary_weight: u8) -> Result<WeightReading, TrafficError>;
    /// Return all traffic to stable (finalizer, abort, rollback). A route
    /// that is already gone is not an error.
    async fn restore_stable(&self) -> Result<(), TrafficError>;
}

/// Build the router the spec names.
pub fn router_for(
    client: kube::Client,
    routing: &TrafficRouting,
    backends: Backends,
) -> Option<Box<dyn TrafficRouter>> {
    routing.gateway_api.as_ref().map(|g| {
        Box::new(gateway_api::GatewayApiRouter::new(
            client,
            g.http_route.clone(),
            backends,
        )) as Box<dyn TrafficRouter>
    })
}
