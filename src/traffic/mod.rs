//! The traffic-router seam. One implementation per router; [`router_for`]
//! picks it from the spec. Routers only move weights on objects the user
//! owns: they never delete a user's object.

use async_trait::async_trait;

use crate::api::TrafficRouting;

pub mod gateway_api;
pub mod istio;
pub mod nginx;
mod raw;
pub mod replicas;
pub mod scale;
pub mod seen;
pub mod smi;
pub mod traefik;

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
    /// The router cannot do what the Rollout asks (e.g. a cookie match).
    #[error("the {router} router cannot {what}")]
    Unsupported { router: &'static str, what: String },
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
            TrafficError::Api { .. } if self.is_forbidden() => "forbidden",
            TrafficError::Api { .. } => "route_api",
            TrafficError::Malformed { .. } => "route_malformed",
            TrafficError::Unsupported { .. } => "router_unsupported",
        }
    }

    /// Whether this is the user's configuration (wait for a change) rather
    /// than a passing failure (retry soon). A 403 is: the operator's RBAC
    /// does not cover this router (e.g. its `routers.*` chart value is off),
    /// and only an install change fixes it.
    pub fn is_configuration(&self) -> bool {
        self.is_forbidden()
            || matches!(
                self,
                TrafficError::RouteNotFound { .. }
                    | TrafficError::NoStableBackend { .. }
                    | TrafficError::CrdMissing { .. }
                    | TrafficError::Malformed { .. }
                    | TrafficError::Unsupported { .. }
            )
    }

    /// The API server refused the call (403 Forbidden).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, TrafficError::Api { source: kube::Error::Api(s), .. } if s.code == 403)
    }
}

/// What the route carries, as read back from the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightReading {
    /// Canary weight in percent; `None` when the router cannot tell.
    pub canary: Option<u8>,
}

/// The stable and canary versions a router moves traffic between.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Backends {
    pub namespace: String,
    pub stable_service: String,
    pub canary_service: String,
    /// The Deployments, when the spec names them (the replicas router needs both).
    pub stable_deployment: Option<String>,
    pub canary_deployment: Option<String>,
    /// The Rollout, as owner of objects a router creates (canary Ingress,
    /// TrafficSplit), so they are garbage-collected with it.
    pub owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
}

/// One A/B match: a header or a cookie with an exact value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Header { name: String, value: String },
    Cookie { name: String, value: String },
}

/// Requests matching all of `matches` go to the canary, whatever the weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRoute {
    /// DNS label; routers name the objects/rules they add after it.
    pub name: String,
    pub matches: Vec<Match>,
}

/// What a router can express (the README's router table comes from this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub header: bool,
    pub cookie: bool,
    /// At most this many header routes at once (`None`: no limit).
    pub max_header_routes: Option<usize>,
    pub mirroring: bool,
}

/// The capabilities of each router kind (as named in the spec).
pub fn capabilities(kind: &str) -> Capabilities {
    let none = Capabilities {
        header: false,
        cookie: false,
        max_header_routes: Some(0),
        mirroring: false,
    };
    match kind {
        "gatewayAPI" => Capabilities {
            header: true,
            cookie: false,
            max_header_routes: None,
            mirroring: false,
        },
        "nginx" => Capabilities {
            header: true,
            cookie: true,
            max_header_routes: Some(1),
            mirroring: false,
        },
        "istio" => Capabilities {
            header: true,
            cookie: true,
            max_header_routes: None,
            mirroring: false,
        },
        _ => none,
    }
}

#[async_trait]
pub trait TrafficRouter: Send + Sync {
    /// Short name for logs and metrics (e.g. `gatewayAPI`).
    fn name(&self) -> &'static str;
    /// Check the route exists and can be driven (references the stable
    /// Service), and read the weight it carries (what
    /// [`TrafficRouter::current_weight`] reads, from the same read: one
    /// reconcile reads the route once). Configuration problems come back as
    /// errors for which [`TrafficError::is_configuration`] is true.
    async fn verify(&self) -> Result<WeightReading, TrafficError>;
    /// Read the canary weight the route carries now.
    async fn current_weight(&self) -> Result<WeightReading, TrafficError>;
    /// Set the canary weight (stable gets `100 - weight`), preserving every
    /// other field of the route, then read it back.
    async fn set_weight(&self, canary_weight: u8) -> Result<WeightReading, TrafficError>;
    /// Return all traffic to stable (finalizer, abort, rollback) and remove
    /// every header route this router added. A route that is already gone
    /// is not an error.
    async fn restore_stable(&self) -> Result<(), TrafficError>;
    /// Make the router's A/B routes exactly `routes` (add, update, remove
    /// the ones rollwise manages; never touch others). Idempotent: no write
    /// when nothing changes.
    async fn set_header_routes(&self, routes: &[HeaderRoute]) -> Result<(), TrafficError> {
        if routes.is_empty() {
            Ok(())
        } else {
            Err(TrafficError::Unsupported {
                router: self.name(),
                what: "route requests by header or cookie".into(),
            })
        }
    }
}

/// An object a router reads and writes, by kind and name (in the Rollout's
/// namespace): the operator watches it (metadata only) so that a change made
/// by someone else is noticed at once, not at the next timed look.
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    pub resource: kube::api::ApiResource,
    pub name: String,
}

/// The routing objects of the router the spec names (none for `replicas`:
/// its "route" is the two Deployments, which the controller watches anyway
/// while it waits on them).
pub fn watched_objects(routing: &TrafficRouting, backends: &Backends) -> Vec<Watched> {
    use kube::api::ApiResource;
    let one = |resource: ApiResource, name: &str| Watched {
        resource,
        name: name.to_owned(),
    };
    if let Some(g) = &routing.gateway_api {
        return vec![one(
            ApiResource::erase::<::gateway_api::apis::standard::httproutes::HttpRoute>(&()),
            &g.http_route,
        )];
    }
    if let Some(n) = &routing.nginx {
        let ingress = ApiResource::erase::<k8s_openapi::api::networking::v1::Ingress>(&());
        return vec![
            one(ingress.clone(), &n.ingress),
            one(
                ingress,
                &nginx::canary_ingress_name(&n.ingress, &backends.canary_service),
            ),
        ];
    }
    if let Some(i) = &routing.istio {
        return vec![one(istio::resource(), &i.virtual_service)];
    }
    if let Some(s) = &routing.smi {
        return vec![one(smi::resource(), &s.traffic_split)];
    }
    if let Some(t) = &routing.traefik {
        return vec![one(traefik::resource(), &t.weighted_service)];
    }
    Vec::new()
}

/// Build the router the spec names.
pub fn router_for(
    client: kube::Client,
    routing: &TrafficRouting,
    backends: Backends,
) -> Option<Box<dyn TrafficRouter>> {
    if let Some(g) = &routing.gateway_api {
        return Some(Box::new(gateway_api::GatewayApiRouter::new(
            client,
            g.http_route.clone(),
            backends,
        )));
    }
    if let Some(n) = &routing.nginx {
        return Some(Box::new(nginx::NginxRouter::new(
            client,
            n.clone(),
            backends,
        )));
    }
    if let Some(i) = &routing.istio {
        return Some(Box::new(istio::IstioRouter::new(
            client,
            i.clone(),
            backends,
        )));
    }
    if let Some(s) = &routing.smi {
        return Some(Box::new(smi::SmiRouter::new(client, s.clone(), backends)));
    }
    if let Some(t) = &routing.traefik {
        return Some(Box::new(traefik::TraefikRouter::new(
            client,
            t.clone(),
            backends,
        )));
    }
    if routing.replicas.is_some() {
        return Some(Box::new(replicas::ReplicasRouter::new(client, backends)));
    }
    None
}
