//! Istio router: moves traffic by setting destination `weight`s in the HTTP
//! routes of a `VirtualService` (`networking.istio.io/v1`, served by Istio
//! 1.22 and later; older releases only serve `v1beta1`/`v1alpha3`, which this
//! router reports as [`TrafficError::CrdMissing`]).
//!
//! # Which routes are driven
//!
//! The VirtualService is `backends.namespace/<virtualService>`. When the spec
//! names `routes`, exactly the `spec.http[]` entries with those names are
//! driven (a name with no such entry is [`TrafficError::Malformed`], a named
//! entry without a stable destination is [`TrafficError::NoStableBackend`]).
//! Otherwise every `spec.http[]` entry with a stable destination is driven,
//! except the header routes this router added (named `rollwise-*`).
//!
//! A destination is *stable* or *canary*:
//! - host-based (default): its `host` is the stable (canary) Service. Hosts
//!   are compared in their fully qualified form, with Istio's short-name rule
//!   (relative to the VirtualService's namespace): `svc`, `svc.ns`,
//!   `svc.ns.svc` and `svc.ns.svc.cluster.local` are one host;
//! - subset-based (`subsets` set): its `host` is `subsets.host` (default: the
//!   stable Service, same comparison) and its `subset` is `subsets.stable`
//!   (`subsets.canary`).
//!
//! # What is changed
//!
//! In each driven route, for canary weight `w`: the stable destination gets
//! `weight: 100 - w` and the canary destination `weight: w`. When the route
//! has no canary destination and `w > 0`, one is inserted right after the
//! stable one: `destination` = the canary host (written in the same form as
//! the stable's host, e.g. `web-canary.shop.svc.cluster.local` next to
//! `web-stable.shop.svc.cluster.local`) or the stable's host with the canary
//! subset, plus the stable destination's `port`; destination-level `headers`
//! are not copied. With `w == 0` and no canary destination the route is left
//! as it is. Other destinations keep their weight (Istio weights are
//! relative: a destination gets `weight / sum`), so the reported weight is
//! the share between stable and canary only.
//!
//! Everything else (matches, retries, rewrites, mirrors, `tcp`/`tls`
//! routes, other routes, metadata, fields unknown to any Rust type) is kept
//! byte for byte: the object is handled as raw JSON ([`DynamicObject`]).
//!
//! # Header routes
//!
//! [`TrafficRouter::set_header_routes`] makes the `rollwise-<name>` entries of
//! `spec.http` exactly the requested ones, inserted (in the requested order)
//! right before the first driven route, so they are evaluated first:
//!
//! ```yaml
//! - name: rollwise-<name>
//!   match:
//!     - headers:
//!         x-canary: { exact: "yes" }                        # Match::Header
//!         cookie: { regex: "^(.*?;\\s*)?(beta=1)(;.*)?$" }  # Match::Cookie
//!   route:
//!     - destination: <the canary destination>
//!       weight: 100
//! ```
//!
//! All matches of one [`HeaderRoute`] are ANDed in a single match block, so a
//! route can hold at most one cookie match (they share the `cookie` header);
//! header names are lower-cased (Istio requires it); regex metacharacters of
//! cookie names and values are escaped. A route with no match at all is
//! refused: it would send every request to the canary. Entries named
//! `rollwise-*` that are not requested are removed; nothing else is touched.
//!
//! # Writes, reads, errors
//!
//! As for the Gateway API router (see [`super::gateway_api`]): a JSON merge
//! patch carrying `metadata.resourceVersion` and the whole modified
//! `spec.http` list, retried on 409 with a jittered backoff up to
//! [`MAX_WRITE_ATTEMPTS`](super::gateway_api::MAX_WRITE_ATTEMPTS) times,
//! then [`TrafficError::Conflict`]; no write
//! when nothing changes; every call bounded by [`CALL_TIMEOUT`](super::gateway_api::CALL_TIMEOUT); a 404 is
//! [`TrafficError::RouteNotFound`] when it names the object and
//! [`TrafficError::CrdMissing`] (`virtualservices.networking.istio.io`)
//! otherwise. The weight read back is the highest canary share over the
//! driven routes (an absent weight is 100 for a route's only destination and
//! 0 otherwise, as Istio reads it). [`TrafficRouter::restore_stable`] sets
//! 100/0 and removes the header routes in one write; a VirtualService that is
//! gone, or no longer has a stable destination, is not an error.
//!
//! RBAC: `get` and `patch` on `virtualservices.networking.istio.io`.

// See gateway_api.rs: `TrafficError` is large, every method returns it anyway.
#![allow(clippy::result_large_err)]

use async_trait::async_trait;
use kube::api::{ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use serde_json::{Map, Value, json};

use super::raw::{RawObject, clamp, set_weights, share};
use super::{Backends, HeaderRoute, Match, TrafficError, TrafficRouter, WeightReading};
use crate::api::IstioRouting;

/// The CRD that serves VirtualService, as reported in [`TrafficError::CrdMissing`].
pub const VIRTUALSERVICE_CRD: &str = "virtualservices.networking.istio.io";

/// Name prefix of the `spec.http` entries this router adds.
pub const HEADER_ROUTE_PREFIX: &str = "rollwise-";

const KIND: &str = "VirtualService";

pub(crate) fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", KIND),
        "virtualservices",
    )
}

/// How destinations are told apart.
enum Mode {
    /// The stable and canary Services are the hosts.
    Host,
    /// One host, two subsets.
    Subset {
        host: String,
        stable: String,
        canary: String,
    },
}

/// Drives the weights of one VirtualService. See the module docs.
pub struct IstioRouter {
    object: RawObject,
    routes: Option<Vec<String>>,
    mode: Mode,
    backends: Backends,
}

/// A driven route.
#[derive(Debug, Clone, Copy)]
struct Driven {
    /// Index in `spec.http`.
    index: usize,
    /// Index of the stable destination in the route's `route`.
    stable: usize,
    /// Index of the canary destination, when the route has one.
    canary: Option<usize>,
}

impl IstioRouter {
    /// A router for the VirtualService `config.virtual_service` in `backends.namespace`.
    pub fn new(client: kube::Client, config: IstioRouting, backends: Backends) -> Self {
        let object = RawObject::new(
            client,
            &resource(),
            KIND,
            VIRTUALSERVICE_CRD,
            &backends.namespace,
            &config.virtual_service,
        );
        let mode = match config.subsets {
            None => Mode::Host,
            Some(s) => Mode::Subset {
                host: s.host.unwrap_or_else(|| backends.stable_service.clone()),
                stable: s.stable,
                canary: s.canary,
            },
        };
        let routes = config.routes.filter(|r| !r.is_empty());
        Self {
            object,
            routes,
            mode,
            backends,
        }
    }

    /// `host` in Istio's fully qualified form (see the module docs).
    fn fqdn(&self, host: &str) -> String {
        let host = host.to_ascii_lowercase();
        let namespace = &self.backends.namespace;
        match host.matches('.').count() {
            0 => format!("{host}.{namespace}.svc.cluster.local"),
            1 => format!("{host}.svc.cluster.local"),
            _ if host.ends_with(".svc") => format!("{host}.cluster.local"),
            _ => host,
        }
    }

    fn same_host(&self, destination: &Value, host: &str) -> bool {
        destination
            .get("host")
            .and_then(Value::as_str)
            .is_some_and(|h| self.fqdn(h) == self.fqdn(host))
    }

    fn subset_is(destination: &Value, subset: &str) -> bool {
        destination.get("subset").and_then(Value::as_str) == Some(subset)
    }

    /// Whether a `route[]` entry's destination is the stable (or canary) one.
    fn is_side(&self, entry: &Value, canary: bool) -> bool {
        let Some(destination) = entry.get("destination") else {
            return false;
        };
        match &self.mode {
            Mode::Host => {
                let service = if canary {
                    &self.backends.canary_service
                } else {
                    &self.backends.stable_service
                };
                self.same_host(destination, service)
            }
            Mode::Subset {
                host,
                stable,
                canary: canary_subset,
            } => {
                let subset = if canary { canary_subset } else { stable };
                self.same_host(destination, host) && Self::subset_is(destination, subset)
            }
        }
    }

    /// The canary destination to add next to `stable` (a `destination` object).
    fn canary_destination(&self, stable: &Value) -> Value {
        let stable_host = stable
            .get("host")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut destination = match &self.mode {
            Mode::Host => {
                let service = &self.backends.stable_service;
                let canary = &self.backends.canary_service;
                let lower = stable_host.to_ascii_lowercase();
                let host = if lower == *service {
                    canary.clone()
                } else if let Some(rest) = lower.strip_prefix(&format!("{service}.")) {
                    format!("{canary}.{rest}")
                } else {
                    format!("{canary}.{}.svc.cluster.local", self.backends.namespace)
                };
                json!({ "host": host })
            }
            Mode::Subset { canary, .. } => json!({ "host": stable_host, "subset": canary }),
        };
        if let Some(port) = stable.get("port").filter(|p| !p.is_null()) {
            destination["port"] = port.clone();
        }
        destination
    }

    /// `spec.http` of the object (empty when absent).
    fn http_of<'a>(&self, obj: &'a DynamicObject) -> Result<&'a [Value], TrafficError> {
        match obj.data.get("spec").and_then(|s| s.get("http")) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(http)) => Ok(http),
            Some(_) => Err(self.object.malformed("spec.http is not a list")),
        }
    }

    /// The `route` list of `spec.http[index]` (`None`: redirect, delegate...).
    fn destinations<'a>(
        &self,
        route: &'a Value,
        index: usize,
    ) -> Result<Option<&'a Vec<Value>>, TrafficError> {
        match route.get("route") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(d)) => Ok(Some(d)),
            Some(_) => Err(self
                .object
                .malformed(format!("spec.http[{index}].route is not a list"))),
        }
    }

    /// Positions of the stable and canary destinations of `spec.http[index]`.
    fn locate(&self, route: &Value, index: usize) -> Result<Option<Driven>, TrafficError> {
        let Some(destinations) = self.destinations(route, index)? else {
            return Ok(None);
        };
        let position = |canary: bool| -> Result<Option<usize>, TrafficError> {
            let mut hits = destinations
                .iter()
                .enumerate()
                .filter(|(_, d)| self.is_side(d, canary))
                .map(|(i, _)| i);
            let first = hits.next();
            if hits.next().is_some() {
                let side = if canary { "canary" } else { "stable" };
                return Err(self.object.malformed(format!(
                    "spec.http[{index}] has more than one {side} destination; cannot tell which one to weight"
                )));
            }
            Ok(first)
        };
        Ok(match position(false)? {
            Some(stable) => Some(Driven {
                index,
                stable,
                canary: position(true)?,
            }),
            None => None,
        })
    }

    fn no_stable(&self) -> TrafficError {
        let service = match &self.mode {
            Mode::Host => self.backends.stable_service.clone(),
            Mode::Subset { host, stable, .. } => format!("{host} (subset {stable})"),
        };
        TrafficError::NoStableBackend {
            kind: KIND,
            name: self.object.name.clone(),
            service,
        }
    }

    /// The driven routes of `http` (see the module docs); never empty.
    fn driven(&self, http: &[Value]) -> Result<Vec<Driven>, TrafficError> {
        let mut found = Vec::new();
        match &self.routes {
            Some(names) => {
                for name in names {
                    let Some(index) = http
                        .iter()
                        .position(|r| r.get("name").and_then(Value::as_str) == Some(name))
                    else {
                        return Err(self.object.malformed(format!(
                            "spec.http has no route named {name:?} (listed in the Rollout's istio.routes)"
                        )));
                    };
                    found.push(
                        self.locate(&http[index], index)?
                            .ok_or_else(|| self.no_stable())?,
                    );
                }
            }
            None => {
                for (index, route) in http.iter().enumerate() {
                    if is_header_route(route) {
                        continue;
                    }
                    if let Some(driven) = self.locate(route, index)? {
                        found.push(driven);
                    }
                }
            }
        }
        if found.is_empty() {
            return Err(self.no_stable());
        }
        Ok(found)
    }

    /// A destination weight as Istio reads it.
    fn weight_of(&self, entry: &Value, count: usize, index: usize) -> Result<u64, TrafficError> {
        match entry.get("weight") {
            None | Some(Value::Null) => Ok(if count == 1 { 100 } else { 0 }),
            Some(w) => w.as_u64().ok_or_else(|| {
                self.object.malformed(format!(
                    "spec.http[{index}] has a destination weight {w} that is not a non-negative integer"
                ))
            }),
        }
    }

    /// The highest canary share over the driven routes.
    fn reading_of(&self, obj: &DynamicObject) -> Result<WeightReading, TrafficError> {
        let http = self.http_of(obj)?;
        let mut highest = 0u8;
        for driven in self.driven(http)? {
            let destinations = &http[driven.index]["route"];
            let count = destinations.as_array().map_or(0, Vec::len);
            let stable = self.weight_of(&destinations[driven.stable], count, driven.index)?;
            let canary = match driven.canary {
                Some(c) => self.weight_of(&destinations[c], count, driven.index)?,
                None => 0,
            };
            highest = highest.max(share(stable, canary));
        }
        Ok(WeightReading {
            canary: Some(highest),
        })
    }

    /// Set the weights of the driven routes in `http`.
    fn apply_weight(&self, http: &mut [Value], driven: &[Driven], canary: u8) {
        for target in driven {
            let Some(destinations) = http[target.index]
                .get_mut("route")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            set_weights(
                destinations,
                target.stable,
                target.canary,
                canary,
                |stable| {
                    json!({
                        "destination": self.canary_destination(&stable["destination"]),
                        "weight": canary,
                    })
                },
            );
        }
    }

    /// The merge patch replacing `spec.http`, or `None` when unchanged.
    fn http_patch(old: &[Value], new: Vec<Value>) -> Option<Value> {
        (new.as_slice() != old).then(|| json!({ "spec": { "http": new } }))
    }

    async fn write_weight(&self, canary: u8) -> Result<WeightReading, TrafficError> {
        let written = self
            .object
            .modify(|current| {
                let http = self.http_of(current)?;
                let driven = self.driven(http)?;
                let mut new = http.to_vec();
                self.apply_weight(&mut new, &driven, canary);
                Ok(Self::http_patch(http, new))
            })
            .await?;
        self.reading_of(&written)
    }
}

/// Whether a `spec.http` entry is one of the header routes this router adds.
fn is_header_route(route: &Value) -> bool {
    route
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| n.starts_with(HEADER_ROUTE_PREFIX))
}

/// Escape RE2 metacharacters.
fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The `match[0].headers` map of a header route, or why it cannot be built.
fn header_matches(route: &HeaderRoute) -> Result<Map<String, Value>, String> {
    if route.matches.is_empty() {
        return Err(format!(
            "add header route {:?} without any match (it would send every request to the canary)",
            route.name
        ));
    }
    let mut headers = Map::new();
    for m in &route.matches {
        let (key, condition) = match m {
            Match::Header { name, value } => (name.to_ascii_lowercase(), json!({ "exact": value })),
            Match::Cookie { name, value } => {
                let pattern = format!(
                    "^(.*?;\\s*)?({}={})(;.*)?$",
                    regex_escape(name),
                    regex_escape(value)
                );
                ("cookie".to_owned(), json!({ "regex": pattern }))
            }
        };
        if headers.insert(key.clone(), condition).is_some() {
            return Err(format!(
                "match the {key:?} header twice in header route {:?} (one condition per header; \
                 a route holds at most one cookie match)",
                route.name
            ));
        }
    }
    Ok(headers)
}

#[async_trait]
impl TrafficRouter for IstioRouter {
    fn name(&self) -> &'static str {
        "istio"
    }

    async fn verify(&self) -> Result<WeightReading, TrafficError> {
        let vs = self.object.get().await?;
        self.reading_of(&vs)
    }

    async fn current_weight(&self) -> Result<WeightReading, TrafficError> {
        let vs = self.object.get().await?;
        self.reading_of(&vs)
    }

    async fn set_weight(&self, canary_weight: u8) -> Result<WeightReading, TrafficError> {
        self.write_weight(clamp(canary_weight, &self.object.name))
            .await
    }

    /// Stable 100, canary 0 in every driven route, header routes removed,
    /// in one write. A canary destination is kept (weight 0), never removed.
    async fn restore_stable(&self) -> Result<(), TrafficError> {
        let result = self
            .object
            .modify(|current| {
                let http = self.http_of(current)?;
                let mut new: Vec<Value> = http.iter().filter(|r| !is_header_route(r)).cloned().collect();
                match self.driven(&new) {
                    Ok(driven) => self.apply_weight(&mut new, &driven, 0),
                    Err(TrafficError::NoStableBackend { .. }) => {
                        tracing::warn!(virtual_service = %self.object.name, "VirtualService no longer has a stable destination; only header routes removed");
                    }
                    Err(e) => return Err(e),
                }
                Ok(Self::http_patch(http, new))
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(TrafficError::RouteNotFound { .. }) => {
                tracing::info!(virtual_service = %self.object.name, "VirtualService is gone; nothing to restore");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn set_header_routes(&self, routes: &[HeaderRoute]) -> Result<(), TrafficError> {
        let mut wanted = Vec::with_capacity(routes.len());
        for route in routes {
            let headers = header_matches(route).map_err(|what| TrafficError::Unsupported {
                router: "istio",
                what,
            })?;
            wanted.push((format!("{HEADER_ROUTE_PREFIX}{}", route.name), headers));
        }
        self.object
            .modify(|current| {
                let http = self.http_of(current)?;
                let mut new: Vec<Value> = http
                    .iter()
                    .filter(|r| !is_header_route(r))
                    .cloned()
                    .collect();
                if !wanted.is_empty() {
                    let first = self.driven(&new)?[0];
                    let destinations = &new[first.index]["route"];
                    let canary = match first.canary {
                        Some(c) => destinations[c]["destination"].clone(),
                        None => self.canary_destination(&destinations[first.stable]["destination"]),
                    };
                    let added = wanted.iter().map(|(name, headers)| {
                        json!({
                            "name": name,
                            "match": [{ "headers": headers }],
                            "route": [{ "destination": canary, "weight": 100 }],
                        })
                    });
                    new.splice(first.index..first.index, added.collect::<Vec<_>>());
                }
                Ok(Self::http_patch(http, new))
            })
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_escape_escapes_re2_metacharacters() {
        assert_eq!(regex_escape("a.b+c"), "a\\.b\\+c");
        assert_eq!(
            regex_escape("(x)|[y]{z}^$*?\\"),
            "\\(x\\)\\|\\[y\\]\\{z\\}\\^\\$\\*\\?\\\\"
        );
        assert_eq!(regex_escape("plain-name_1"), "plain-name_1");
    }

    #[test]
    fn header_matches_refuse_empty_and_double_cookie() {
        let route = |matches| HeaderRoute {
            name: "beta".into(),
            matches,
        };
        assert!(header_matches(&route(vec![])).is_err());
        let two_cookies = vec![
            Match::Cookie {
                name: "a".into(),
                value: "1".into(),
            },
            Match::Cookie {
                name: "b".into(),
                value: "2".into(),
            },
        ];
        assert!(header_matches(&route(two_cookies)).is_err());
        let ok = header_matches(&route(vec![Match::Header {
            name: "X-Canary".into(),
            value: "yes".into(),
        }]))
        .expect("one header");
        assert_eq!(Value::Object(ok), json!({ "x-canary": { "exact": "yes" } }));
    }
}
