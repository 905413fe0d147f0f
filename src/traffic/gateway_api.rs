//! Gateway API router: moves traffic by setting `weight` on the
//! `backendRefs` of an `HTTPRoute` (`gateway.networking.k8s.io/v1`).
//!
//! # What is changed
//!
//! The route is `backends.namespace/<httpRoute>`. Only the rules that send
//! traffic to the stable Service are touched: a rule "references the stable
//! Service" when one of its `backendRefs` has `name == stable_service`, a
//! `group` that is absent or `""`, a `kind` that is absent or `"Service"`, and
//! a `namespace` that is absent or the route's own namespace (a ref to a
//! same-named Service of another namespace is a different Service). The canary
//! ref is recognised by the same test with `canary_service`.
//!
//! In each such rule, for canary weight `w`:
//! - the stable ref gets `weight: 100 - w`;
//! - the canary ref gets `weight: w`; when the rule has no canary ref and
//!   `w > 0`, one is inserted right after the stable ref with only `name`,
//!   the stable ref's `port` (when it has one) and `weight` (group and kind
//!   left to their `Service` defaults; backendRef-level filters are *not*
//!   copied);
//! - when `w == 0` and the rule has no canary ref, the rule is left exactly as
//!   it is: it already sends nothing to the canary.
//!
//! Everything else (matches, filters, other backendRefs, timeouts, hostnames,
//! parentRefs, metadata, status, and fields that the `gateway-api` crate's
//! typed structs do not know, e.g. newer or experimental fields) is never
//! rewritten: the route is read as raw JSON ([`DynamicObject`]) and the
//! modification is done on that JSON; the typed `HttpRoute` struct is never
//! round-tripped (it would silently drop unknown fields). A rule with more
//! than one stable (or more than one canary) ref is ambiguous and reported as
//! [`TrafficError::Malformed`].
//!
//! Other backendRefs of a rule keep their weight, so in a rule that also sends
//! traffic to a third backend the canary's share of the *whole* rule is
//! `w / (100 + others)`; the weight this router reports is always the share
//! between stable and canary only.
//!
//! # Write strategy: merge patch with optimistic concurrency, not SSA
//!
//! The write is a JSON merge patch (`application/merge-patch+json`) with the
//! field manager [`crate::api::FIELD_MANAGER`], containing
//! `metadata.resourceVersion` (the version that was read) and the complete,
//! modified `spec.rules` array. A merge patch replaces lists whole, which is
//! what we want here: the array sent is exactly the one read at that
//! resourceVersion, with only the weights changed. If anyone changed the route
//! in between, the API server answers 409 Conflict (resourceVersion
//! precondition), and the router re-reads and re-applies its change to the
//! fresh object, up to [`MAX_WRITE_ATTEMPTS`] times with a short jittered
//! backoff, then gives up with [`TrafficError::Conflict`] (the caller retries
//! later). A concurrent edit is therefore never overwritten.
//!
//! Server-side apply is deliberately not used: `spec.rules` is an atomic list
//! in the HTTPRoute schema, so applying it would make the operator the owner
//! of the user's whole rules list and replace it on every apply (and fight
//! with the user's own `kubectl apply`/GitOps tool over it).
//!
//! No write is made when the route already carries the requested weights
//! (and header-route rules), so an idempotent reconcile causes no
//! resourceVersion churn and no API request beyond the read. "Already" is
//! judged after the API server's defaulting: a rule rollwise built leaves
//! `group`, `kind` and `weight` of its backendRef and `type` of its header
//! matches to their defaults, which the stored copy spells out.
//!
//! # Reading the weight
//!
//! The canary weight is `round(canary / (stable + canary) * 100)` per rule
//! that references the stable Service, with the Gateway API defaulting (an
//! absent `weight` means 1); a rule without a canary ref, or whose stable and
//! canary weights are both 0, gives 0. When rules disagree, the *highest*
//! canary share is reported: that is the conservative reading (the most
//! traffic the canary may be receiving). [`TrafficRouter::set_weight`]
//! returns the reading of the object the API server returned from the write,
//! not the value that was asked for.
//!
//! # Weights
//!
//! The requested weight is clamped to `0..=100` (with a warning). The Rollout
//! spec is validated to `0..=100` at admission, so a larger value can only be
//! a caller bug; it is clamped rather than refused because there is no better
//! option than "all to canary" for a caller asking for more than all.
//!
//! # Errors and timeouts
//!
//! Every API call is bounded by [`CALL_TIMEOUT`]; a timeout becomes
//! [`TrafficError::Api`] whose source is `kube::Error::Service` wrapping a
//! "timed out" error (transient: retried by the caller).
//!
//! A 404 is either "this route does not exist" ([`TrafficError::RouteNotFound`])
//! or "the API server does not serve `httproutes` in `gateway.networking.k8s.io/v1`"
//! ([`TrafficError::CrdMissing`]). A real API server puts the object name in
//! `details.name` for the former; for the latter it answers "the server could
//! not find the requested resource" with empty details (or, on old servers, a
//! plain-text `404 page not found`). So a 404 is `RouteNotFound` when
//! `details.name` is set or the message names the route (`"<name>" not
//! found`), and `CrdMissing` otherwise. `CrdMissing` also covers a cluster
//! whose Gateway API CRDs predate `v1`.
//!
//! # Header routes (A/B)
//!
//! [`TrafficRouter::set_header_routes`] adds one rule per header route and
//! per rule that references the stable Service, named `rollwise-<route>`
//! (`rollwise-<route>-<n>`, n = 1.., when several rules reference the stable
//! Service). The rule name is the only marker: a rule whose `name` starts
//! with [`HEADER_RULE_PREFIX`] is rollwise's, every other rule is the user's
//! and is never changed by this (the prefix is reserved). Such a rule has:
//! - `matches`: each match of the stable rule (a rule without matches matches
//!   `PathPrefix /`) with the route's headers appended to its `headers`, as
//!   `type: Exact`. A header already constrained by that match (names compare
//!   case-insensitively) is not added twice when the condition is the same
//!   exact value; when it differs, that match could never be satisfied by
//!   both and is left out (a rule left with no match is not added);
//! - `filters` and `timeouts`: copied from the stable rule, so a request
//!   routed by header is processed like the same request without it (only
//!   the backend differs);
//! - `backendRefs`: only the canary Service, with the stable ref's `port` and
//!   `weight: 1`.
//!
//! rollwise's rules are placed before all user rules (Gateway API gives
//! precedence to the match with more header matches anyway; first in the
//! list breaks remaining ties). Each call rebuilds the complete set of
//! rollwise rules, so routes are added, updated and removed in one write, with
//! the same write manners as the weights (merge patch with the read
//! resourceVersion, retried on conflict, no write when nothing changes). The
//! weights only ever look at user rules: rollwise's rules are skipped when
//! finding the rules that reference the stable Service and when reading the
//! weight. [`TrafficRouter::restore_stable`] removes them.
//!
//! Refused with [`TrafficError::Unsupported`], before any API call: a cookie
//! match (an HTTPRoute cannot match a cookie), a route without matches, two
//! routes with the same name, a route that needs one header to have two
//! values, and more rules in total than an HTTPRoute allows
//! ([`MAX_RULES`]). `rules[].name` exists from Gateway API v1.2; an API server
//! with older CRDs prunes it, which would make the added rules unrecognisable:
//! when the written route comes back without them, the router removes the
//! rules it just added (they are the first ones) and answers `Unsupported`.
//!
//! # Test double limits
//!
//! The tests run against `kube-fake-client`. It applies merge patches with
//! `json_patch::merge` and enforces the resourceVersion precondition, so the
//! merge-patch path, the conflict retry and field preservation are tested
//! for real. It treats server-side apply as a plain merge patch and has no
//! field ownership and no list-type (atomic) semantics, so the tests cannot
//! prove anything about SSA, and they do not exercise admission defaulting
//! (a real server stores `weight: 1` where the user omitted it). Its 404s carry
//! no `details`, which is why the 404 classification also looks at the message.

// `TrafficError` (shared, in `super`) is large because `TrafficError::Api`
// holds a `kube::Error` inline; every trait method returns it anyway, so the
// private helpers returning it too costs nothing extra.
#![allow(clippy::result_large_err)]

use ::gateway_api::apis::standard::httproutes::HttpRoute;
use async_trait::async_trait;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::raw::{api_error, backoff, bounded, named_like, set_weights, share};
use super::{Backends, HeaderRoute, Match, TrafficError, TrafficRouter, WeightReading};

pub use super::raw::{CALL_TIMEOUT, MAX_WRITE_ATTEMPTS};

/// The CRD that serves HTTPRoute, as reported in [`TrafficError::CrdMissing`].
pub const HTTPROUTE_CRD: &str = "httproutes.gateway.networking.k8s.io";

const KIND: &str = "HTTPRoute";

/// Names of the rules this router adds for header routes start with this;
/// rules named so are rollwise's (the prefix is reserved).
pub const HEADER_RULE_PREFIX: &str = "rollwise-";

/// Most rules an HTTPRoute may hold (`maxItems` of `spec.rules`).
pub const MAX_RULES: usize = 16;

/// Drives the weights of one HTTPRoute. See the module docs.
pub struct GatewayApiRouter {
    api: Api<DynamicObject>,
    route: String,
    backends: Backends,
}

impl GatewayApiRouter {
    /// A router for the HTTPRoute `http_route` in `backends.namespace`.
    pub fn new(client: kube::Client, http_route: String, backends: Backends) -> Self {
        let resource = ApiResource::erase::<HttpRoute>(&());
        let api = Api::namespaced_with(client, &backends.namespace, &resource);
        Self {
            api,
            route: http_route,
            backends,
        }
    }

    /// Read the route as raw JSON.
    async fn fetch(&self) -> Result<DynamicObject, TrafficError> {
        let obj = bounded("get", self.api.get(&self.route))
            .await
            .map_err(|e| self.map_api_error(e))?;
        super::seen::note(KIND, &obj);
        Ok(obj)
    }

    /// Set the stable/canary weights, retrying on conflicts; returns the
    /// read-back of the object the API server holds afterwards.
    async fn write_weight(&self, canary: u8) -> Result<WeightReading, TrafficError> {
        let canary_service = &self.backends.canary_service;
        let outcome = self
            .modify("weights", |original| {
                let targets = self.stable_rules(original)?;
                let mut rules = original.to_vec();
                apply_weight(&mut rules, &targets, canary, canary_service);
                Ok(rules)
            })
            .await?;
        self.reading_of(&outcome.object)
    }

    /// Read the route, compute new `spec.rules` from the current ones with
    /// `change`, and write them with a merge patch carrying the
    /// resourceVersion that was read; on a conflict, re-read and recompute,
    /// up to [`MAX_WRITE_ATTEMPTS`] times. No write when `change` returns the
    /// rules unchanged (Gateway API defaults aside: [`same_after_defaulting`]).
    /// Returns the object the API server holds afterwards.
    async fn modify<F>(&self, what: &'static str, mut change: F) -> Result<Modified, TrafficError>
    where
        F: FnMut(&[Value]) -> Result<Vec<Value>, TrafficError> + Send,
    {
        let params = PatchParams {
            field_manager: Some(crate::api::FIELD_MANAGER.into()),
            ..Default::default()
        };
        for attempt in 1..=MAX_WRITE_ATTEMPTS {
            let current = self.fetch().await?;
            let original = self.rules_of(&current)?;
            let rules = change(original)?;
            if same_after_defaulting(&rules, original) {
                tracing::debug!(route = %self.route, what, "HTTPRoute already as wanted; no write");
                return Ok(Modified {
                    object: current,
                    wrote: false,
                });
            }
            let Some(resource_version) = current.metadata.resource_version.as_deref() else {
                return Err(self.malformed("the object has no metadata.resourceVersion"));
            };
            let patch = json!({
                "metadata": { "resourceVersion": resource_version },
                "spec": { "rules": rules },
            });
            let _writing = super::seen::writing(KIND, &self.backends.namespace, &self.route);
            match bounded(
                "patch",
                self.api.patch(&self.route, &params, &Patch::Merge(&patch)),
            )
            .await
            {
                Ok(written) => {
                    super::seen::note(KIND, &written);
                    tracing::info!(route = %self.route, what, attempt, "HTTPRoute updated");
                    return Ok(Modified {
                        object: written,
                        wrote: true,
                    });
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::debug!(route = %self.route, attempt, "HTTPRoute changed under us; re-reading");
                    if attempt < MAX_WRITE_ATTEMPTS {
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                }
                Err(e) => return Err(self.map_api_error(e)),
            }
        }
        Err(TrafficError::Conflict {
            kind: KIND,
            name: self.route.clone(),
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }

    /// The rules for `routes` (rollwise's, in order) followed by the user
    /// rules of `original` (see the module docs).
    fn with_header_rules(
        &self,
        original: &[Value],
        routes: &[ValidRoute],
    ) -> Result<Vec<Value>, TrafficError> {
        let user: Vec<Value> = original.iter().filter(|r| !is_ours(r)).cloned().collect();
        if routes.is_empty() {
            return Ok(user);
        }
        let targets = self.stable_rules(&user)?;
        let mut rules = Vec::with_capacity(routes.len() * targets.len() + user.len());
        for route in routes {
            for (n, target) in targets.iter().enumerate() {
                let name = if targets.len() == 1 {
                    format!("{HEADER_RULE_PREFIX}{}", route.name)
                } else {
                    format!("{HEADER_RULE_PREFIX}{}-{}", route.name, n + 1)
                };
                match header_rule(
                    &user[target.index],
                    target.stable,
                    &route.headers,
                    name,
                    &self.backends.canary_service,
                ) {
                    Some(rule) => rules.push(rule),
                    None => tracing::warn!(
                        route = %self.route,
                        header_route = %route.name,
                        rule = target.index,
                        "every match of this rule already requires other values of the route's headers; no header-route rule for it"
                    ),
                }
            }
        }
        if rules.len() + user.len() > MAX_RULES {
            return Err(TrafficError::Unsupported {
                router: "gatewayAPI",
                what: format!(
                    "add {} header-route rule(s) to HTTPRoute {:?}: it has {} rule(s) and an HTTPRoute holds at most {MAX_RULES}",
                    rules.len(),
                    self.route,
                    user.len()
                ),
            });
        }
        rules.extend(user);
        Ok(rules)
    }

    /// After a write that should have left `expected` rollwise rules at the
    /// head of `spec.rules`: when the server dropped their names (CRDs older
    /// than Gateway API v1.2 prune `rules[].name`), remove those rules again
    /// and refuse.
    async fn check_names_kept(
        &self,
        written: &DynamicObject,
        expected: usize,
    ) -> Result<(), TrafficError> {
        let rules = self.rules_of(written)?;
        let kept = rules.iter().filter(|r| is_ours(r)).count();
        if kept >= expected {
            return Ok(());
        }
        tracing::error!(
            route = %self.route,
            expected,
            kept,
            "the API server dropped spec.rules[].name; removing the header-route rules just added"
        );
        let rollback = json!({
            "metadata": { "resourceVersion": written.metadata.resource_version },
            "spec": { "rules": rules.get(expected..).unwrap_or_default() },
        });
        let params = PatchParams {
            field_manager: Some(crate::api::FIELD_MANAGER.into()),
            ..Default::default()
        };
        if let Err(e) = bounded(
            "patch",
            self.api
                .patch(&self.route, &params, &Patch::Merge(&rollback)),
        )
        .await
        {
            tracing::error!(route = %self.route, error = %e, "could not remove the unnamed header-route rules; remove the first {expected} rule(s) by hand");
        }
        Err(TrafficError::Unsupported {
            router: "gatewayAPI",
            what: format!(
                "route by header on HTTPRoute {:?}: the API server drops spec.rules[].name (Gateway API CRDs older than v1.2), which rollwise needs to recognise its rules",
                self.route
            ),
        })
    }

    /// `spec.rules` of the object (empty when absent).
    fn rules_of<'a>(&self, obj: &'a DynamicObject) -> Result<&'a [Value], TrafficError> {
        match obj.data.get("spec").and_then(|s| s.get("rules")) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(rules)) => Ok(rules),
            Some(_) => Err(self.malformed("spec.rules is not a list")),
        }
    }

    /// The rules that reference the stable Service, with the positions of
    /// the stable and canary refs. Errors when there is none.
    fn stable_rules(&self, rules: &[Value]) -> Result<Vec<StableRule>, TrafficError> {
        let namespace = &self.backends.namespace;
        let mut found = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            if is_ours(rule) {
                continue;
            }
            let refs = match rule.get("backendRefs") {
                None | Some(Value::Null) => continue,
                Some(Value::Array(refs)) => refs,
                Some(_) => {
                    return Err(
                        self.malformed(&format!("spec.rules[{index}].backendRefs is not a list"))
                    );
                }
            };
            let position = |service: &str| -> Result<Option<usize>, TrafficError> {
                let mut hits = refs
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| is_service_ref(r, service, namespace))
                    .map(|(i, _)| i);
                let first = hits.next();
                if hits.next().is_some() {
                    return Err(self.malformed(&format!(
                        "spec.rules[{index}] has more than one backendRef to Service {service:?}; \
                         cannot tell which one to weight"
                    )));
                }
                Ok(first)
            };
            if let Some(stable) = position(&self.backends.stable_service)? {
                let canary = position(&self.backends.canary_service)?;
                found.push(StableRule {
                    index,
                    stable,
                    canary,
                });
            }
        }
        if found.is_empty() {
            return Err(TrafficError::NoStableBackend {
                kind: KIND,
                name: self.route.clone(),
                service: self.backends.stable_service.clone(),
            });
        }
        Ok(found)
    }

    /// The canary weight the object carries (see the module docs).
    fn reading_of(&self, obj: &DynamicObject) -> Result<WeightReading, TrafficError> {
        let rules = self.rules_of(obj)?;
        let mut highest = 0u8;
        for target in self.stable_rules(rules)? {
            let refs = &rules[target.index]["backendRefs"];
            let stable = self.weight_of(&refs[target.stable], target.index)?;
            let canary = match target.canary {
                Some(c) => self.weight_of(&refs[c], target.index)?,
                None => 0,
            };
            highest = highest.max(share(stable, canary));
        }
        Ok(WeightReading {
            canary: Some(highest),
        })
    }

    /// A backendRef's weight with the Gateway API default (absent = 1).
    fn weight_of(&self, backend_ref: &Value, rule: usize) -> Result<u64, TrafficError> {
        match backend_ref.get("weight") {
            None | Some(Value::Null) => Ok(1),
            Some(w) => w.as_u64().ok_or_else(|| {
                self.malformed(&format!(
                    "spec.rules[{rule}] has a backendRef weight {w} that is not a non-negative integer"
                ))
            }),
        }
    }

    fn malformed(&self, message: &str) -> TrafficError {
        TrafficError::Malformed {
            kind: KIND,
            name: self.route.clone(),
            message: message.to_owned(),
        }
    }

    fn map_api_error(&self, error: kube::Error) -> TrafficError {
        api_error(
            error,
            KIND,
            HTTPROUTE_CRD,
            &self.backends.namespace,
            &self.route,
        )
    }
}

#[async_trait]
impl TrafficRouter for GatewayApiRouter {
    fn name(&self) -> &'static str {
        "gatewayAPI"
    }

    async fn verify(&self) -> Result<WeightReading, TrafficError> {
        let route = self.fetch().await?;
        // Checks the stable ref exists and every weight is readable.
        self.reading_of(&route)
    }

    async fn current_weight(&self) -> Result<WeightReading, TrafficError> {
        let route = self.fetch().await?;
        self.reading_of(&route)
    }

    async fn set_weight(&self, canary_weight: u8) -> Result<WeightReading, TrafficError> {
        let weight = if canary_weight > 100 {
            tracing::warn!(route = %self.route, requested = canary_weight, "canary weight above 100 clamped to 100");
            100
        } else {
            canary_weight
        };
        self.write_weight(weight).await
    }

    /// Stable 100, canary 0 in every rule that references the stable
    /// Service, and rollwise's header-route rules removed, in one write; a
    /// canary ref is kept (weight 0), never removed. A route (or namespace)
    /// that is gone has nothing to restore: `Ok`; one that no longer
    /// references the stable Service only loses rollwise's rules. A
    /// `CrdMissing` is still an error: `httproutes` not being served at `v1`
    /// does not prove that no older-version route still sends traffic to the
    /// canary.
    async fn restore_stable(&self) -> Result<(), TrafficError> {
        let canary_service = &self.backends.canary_service;
        let mut no_stable = false;
        let result = self
            .modify("restore", |original| {
                no_stable = false;
                let mut rules: Vec<Value> =
                    original.iter().filter(|r| !is_ours(r)).cloned().collect();
                match self.stable_rules(&rules) {
                    Ok(targets) => apply_weight(&mut rules, &targets, 0, canary_service),
                    Err(TrafficError::NoStableBackend { .. }) => no_stable = true,
                    Err(e) => return Err(e),
                }
                Ok(rules)
            })
            .await;
        match result {
            Ok(_) => {
                if no_stable {
                    tracing::warn!(route = %self.route, "HTTPRoute no longer references the stable Service; nothing to restore but rollwise's rules");
                }
                Ok(())
            }
            Err(TrafficError::RouteNotFound { .. }) => {
                tracing::info!(route = %self.route, "HTTPRoute is gone; nothing to restore");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// See the module docs (# Header routes).
    async fn set_header_routes(&self, routes: &[HeaderRoute]) -> Result<(), TrafficError> {
        let routes = validate_routes(routes)?;
        let mut expected = 0;
        let outcome = self
            .modify("header routes", |original| {
                let rules = self.with_header_rules(original, &routes)?;
                expected = rules.iter().filter(|r| is_ours(r)).count();
                Ok(rules)
            })
            .await?;
        if outcome.wrote {
            self.check_names_kept(&outcome.object, expected).await?;
        }
        Ok(())
    }
}

/// What [`GatewayApiRouter::modify`] leaves behind.
struct Modified {
    /// The object as the API server holds it afterwards.
    object: DynamicObject,
    /// Whether a write was made.
    wrote: bool,
}

/// A header route reduced to what an HTTPRoute can express.
#[derive(Debug, Clone)]
struct ValidRoute {
    name: String,
    /// `(name, value)` exact header matches, without duplicates.
    headers: Vec<(String, String)>,
}

/// Check `routes` against what an HTTPRoute can express (see the module docs).
fn validate_routes(routes: &[HeaderRoute]) -> Result<Vec<ValidRoute>, TrafficError> {
    let unsupported = |what: String| TrafficError::Unsupported {
        router: "gatewayAPI",
        what,
    };
    let mut valid: Vec<ValidRoute> = Vec::with_capacity(routes.len());
    for route in routes {
        if valid.iter().any(|v| v.name == route.name) {
            return Err(unsupported(format!(
                "hold two header routes with the same name {:?}",
                route.name
            )));
        }
        if route.matches.is_empty() {
            return Err(unsupported(format!(
                "add header route {:?} without any match (it would send every request to the canary)",
                route.name
            )));
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for m in &route.matches {
            match m {
                Match::Cookie { name, .. } => {
                    return Err(unsupported(format!(
                        "route by cookie ({name:?} in header route {:?}): an HTTPRoute has no cookie match",
                        route.name
                    )));
                }
                Match::Header { name, value } => {
                    match headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                        Some((_, v)) if v == value => {}
                        Some((_, v)) => {
                            return Err(unsupported(format!(
                                "match header {name:?} to both {v:?} and {value:?} (header route {:?})",
                                route.name
                            )));
                        }
                        None => headers.push((name.clone(), value.clone())),
                    }
                }
            }
        }
        valid.push(ValidRoute {
            name: route.name.clone(),
            headers,
        });
    }
    Ok(valid)
}

/// Whether a rule is one rollwise added for a header route.
/// Whether `wanted` says what `stored` says once the API server has filled
/// in the Gateway API defaults the router leaves out when it builds a rule
/// or a backendRef (`group: ""`, `kind: Service`, `weight: 1` on a
/// backendRef; `type: Exact` on a header match). Without this a header-route
/// rule rollwise built would never compare equal to its stored copy, and
/// every reconcile would rewrite the route.
fn same_after_defaulting(wanted: &[Value], stored: &[Value]) -> bool {
    fn defaulted(rules: &[Value]) -> Vec<Value> {
        let mut rules = rules.to_vec();
        for rule in &mut rules {
            for r in rule
                .get_mut("backendRefs")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(r) = r.as_object_mut() {
                    r.entry("group").or_insert_with(|| json!(""));
                    r.entry("kind").or_insert_with(|| json!("Service"));
                    r.entry("weight").or_insert_with(|| json!(1));
                }
            }
            for m in rule
                .get_mut("matches")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                for h in m
                    .get_mut("headers")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(h) = h.as_object_mut() {
                        h.entry("type").or_insert_with(|| json!("Exact"));
                    }
                }
            }
        }
        rules
    }
    wanted == stored || defaulted(wanted) == defaulted(stored)
}

fn is_ours(rule: &Value) -> bool {
    rule.get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| n.starts_with(HEADER_RULE_PREFIX))
}

/// The header-route rule for `stable_rule` (see the module docs); `None` when
/// none of its matches can be combined with `headers`.
fn header_rule(
    stable_rule: &Value,
    stable_ref: usize,
    headers: &[(String, String)],
    name: String,
    canary_service: &str,
) -> Option<Value> {
    let base = match stable_rule.get("matches").and_then(Value::as_array) {
        Some(matches) if !matches.is_empty() => matches.clone(),
        _ => vec![json!({ "path": { "type": "PathPrefix", "value": "/" } })],
    };
    let matches: Vec<Value> = base
        .into_iter()
        .filter_map(|m| with_headers(m, headers))
        .collect();
    if matches.is_empty() {
        return None;
    }
    let mut backend = json!({ "name": canary_service, "weight": 1 });
    if let Some(port) = stable_rule["backendRefs"][stable_ref]
        .get("port")
        .filter(|p| !p.is_null())
    {
        backend["port"] = port.clone();
    }
    let mut rule = serde_json::Map::new();
    rule.insert("name".into(), Value::String(name));
    rule.insert("matches".into(), Value::Array(matches));
    for key in ["filters", "timeouts"] {
        if let Some(v) = stable_rule.get(key).filter(|v| !v.is_null()) {
            rule.insert(key.into(), v.clone());
        }
    }
    rule.insert("backendRefs".into(), json!([backend]));
    Some(Value::Object(rule))
}

/// `m` with the exact header matches `headers` added; `None` when `m`
/// already puts another condition on one of those headers.
fn with_headers(mut m: Value, headers: &[(String, String)]) -> Option<Value> {
    let obj = m.as_object_mut()?;
    let mut list = match obj.get("headers") {
        Some(Value::Array(list)) => list.clone(),
        _ => Vec::new(),
    };
    for (name, value) in headers {
        let existing = list.iter().find(|h| {
            h.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        });
        match existing {
            Some(h) => {
                let exact = h
                    .get("type")
                    .and_then(Value::as_str)
                    .is_none_or(|t| t == "Exact");
                if !(exact && h.get("value").and_then(Value::as_str) == Some(value)) {
                    return None;
                }
            }
            None => list.push(json!({ "type": "Exact", "name": name, "value": value })),
        }
    }
    obj.insert("headers".into(), Value::Array(list));
    Some(m)
}

/// A rule that references the stable Service.
#[derive(Debug, Clone, Copy)]
struct StableRule {
    /// Index in `spec.rules`.
    index: usize,
    /// Index of the stable ref in the rule's `backendRefs`.
    stable: usize,
    /// Index of the canary ref, when the rule has one.
    canary: Option<usize>,
}

/// Set the weights in `rules` (see the module docs).
fn apply_weight(rules: &mut [Value], targets: &[StableRule], canary: u8, canary_service: &str) {
    for target in targets {
        let Some(refs) = rules[target.index]
            .get_mut("backendRefs")
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        set_weights(refs, target.stable, target.canary, canary, |stable| {
            named_like(stable, canary_service, canary)
        });
    }
}

/// Whether a backendRef points at the core Service `service` of `namespace`.
fn is_service_ref(backend_ref: &Value, service: &str, namespace: &str) -> bool {
    let field = |name: &str| backend_ref.get(name).and_then(Value::as_str);
    field("name") == Some(service)
        && field("group").is_none_or(str::is_empty)
        && field("kind").is_none_or(|k| k == "Service")
        && field("namespace").is_none_or(|ns| ns == namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ref_matching_respects_group_kind_namespace() {
        let ns = "shop";
        assert!(is_service_ref(&json!({"name": "web"}), "web", ns));
        assert!(is_service_ref(
            &json!({"name": "web", "group": "", "kind": "Service", "namespace": "shop"}),
            "web",
            ns
        ));
        assert!(!is_service_ref(
            &json!({"name": "web", "kind": "ServiceImport", "group": "multicluster.x-k8s.io"}),
            "web",
            ns
        ));
        assert!(!is_service_ref(
            &json!({"name": "web", "namespace": "other"}),
            "web",
            ns
        ));
        assert!(!is_service_ref(&json!({"name": "web-canary"}), "web", ns));
    }

    /// A header-route rule as built, and as a real API server stores it.
    #[test]
    fn a_rule_as_built_equals_its_stored_copy_after_defaulting() {
        let built = header_rule(
            &json!({"matches": [{"path": {"type": "PathPrefix", "value": "/a"}}],
                    "backendRefs": [{"name": "web", "port": 80}]}),
            0,
            &[("x-beta".into(), "1".into())],
            "rollwise-beta".into(),
            "web-canary",
        )
        .expect("a rule");
        let stored = json!({
            "name": "rollwise-beta",
            "matches": [{"path": {"type": "PathPrefix", "value": "/a"},
                         "headers": [{"type": "Exact", "name": "x-beta", "value": "1"}]}],
            "backendRefs": [{"group": "", "kind": "Service", "name": "web-canary", "port": 80, "weight": 1}]
        });
        assert_ne!(built, stored, "the built rule leaves the defaults out");
        assert!(same_after_defaulting(
            std::slice::from_ref(&built),
            std::slice::from_ref(&stored)
        ));
        let mut other = stored.clone();
        other["backendRefs"][0]["weight"] = json!(2);
        assert!(!same_after_defaulting(
            std::slice::from_ref(&built),
            &[other]
        ));
        let mut other = stored;
        other["matches"][0]["headers"][0]["type"] = json!("RegularExpression");
        assert!(!same_after_defaulting(&[built], &[other]));
    }
}
