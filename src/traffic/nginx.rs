//! ingress-nginx router: a canary Ingress (`networking.k8s.io/v1`), created
//! and owned by rollwise, next to the user's Ingress.
//!
//! # The canary Ingress
//!
//! ingress-nginx sends part of the traffic of a host/path to another backend
//! when a second Ingress for the same host/path carries the annotation
//! `nginx.ingress.kubernetes.io/canary: "true"`. rollwise creates that second
//! Ingress, named [`canary_ingress_name`] (`<ingress>-<canary service>-canary`,
//! shortened with a hash when longer than 253 characters), in the Rollout's
//! namespace. It is derived from the user's Ingress on every write:
//!
//! - `spec`: a copy of the user's `spec` (`ingressClassName`, `tls`, hosts,
//!   paths, `pathType`, and fields this crate does not know), except that
//!   every backend pointing at the stable Service now points at the canary
//!   Service (same port, by number or by name: the canary Service must expose
//!   the same ports), and every path (and `defaultBackend`) pointing
//!   elsewhere is dropped, as is a rule left without paths: the canary
//!   Ingress carries only the canary;
//! - annotations: the user's, without `kubectl.kubernetes.io/last-applied-configuration`,
//!   Argo CD's `argocd.argoproj.io/tracking-id` (it names the user's Ingress)
//!   and any `nginx.ingress.kubernetes.io/canary*` or rollwise
//!   annotation of the user's, plus `canary: "true"`, `canary-weight: "<w>"`,
//!   `canary-weight-total: "100"` and, for a header route, the `canary-by-*`
//!   annotations (below). Only the default annotation prefix
//!   (`nginx.ingress.kubernetes.io`) is supported;
//! - labels `app.kubernetes.io/managed-by: rollwise` and
//!   `rollwise.io/rollout: <Rollout>`, and the Rollout as owner reference
//!   (when [`Backends::owner`] is set), so it is garbage-collected with it.
//!
//! The user's Ingress is only ever read, never written. An Ingress with the
//! canary Ingress's name that rollwise did not create (no managed-by label,
//! or another Rollout's label) is never written or deleted: `verify`,
//! `set_weight`, `set_header_routes` and `current_weight` report it as
//! [`TrafficError::Malformed`]; `restore_stable` leaves it alone.
//!
//! `set_weight` and `set_header_routes` both re-derive the canary Ingress
//! from the user's Ingress as it is now, so a change there (a new host, a new
//! path, a new annotation) shows up in the canary copy at the next call. Each
//! keeps the other's state, which lives in the canary Ingress itself: the
//! weight in `canary-weight`, the header route in the `canary-by-*`
//! annotations (and the route's name in `rollwise.io/header-route`, without
//! which `canary-by-*` annotations are not taken as state). When the
//! canary Ingress would carry nothing (weight 0 and no header route) it is
//! deleted instead; `restore_stable` deletes it (already gone is fine).
//!
//! # Write strategy: server-side apply
//!
//! The canary Ingress is rollwise's own object, so it is written with
//! server-side apply (field manager [`crate::api::FIELD_MANAGER`], forced),
//! and only when the stored object differs from the derived one (spec and
//! annotations equal, our labels and owner reference present). Apply removes
//! what rollwise applied before and no longer applies. When the applied
//! object still differs afterwards (another field manager also set a field
//! or annotation rollwise dropped, e.g. a stale `canary-by-header`), the
//! router replaces `spec` and `metadata.annotations` with a JSON patch that
//! carries the resourceVersion just returned (a concurrent write gives a 409
//! and the whole cycle is redone, up to [`MAX_WRITE_ATTEMPTS`]). Annotations
//! others add to the canary Ingress are therefore removed: annotate the
//! user's Ingress instead. Deletion carries a resourceVersion precondition
//! too.
//!
//! # Header routes (A/B) and the ingress-nginx limits
//!
//! ingress-nginx decides per request, in this order: `canary-by-header` (with
//! `canary-by-header-value`: canary when the header has exactly that value),
//! then `canary-by-cookie`, then `canary-weight`. So:
//!
//! - at most **one** header route (one canary Ingress per Ingress, one set of
//!   `canary-by-*` annotations);
//! - inside it, **either one header or one cookie**: ingress-nginx checks the
//!   header and the cookie one after the other and sends a request to the
//!   canary when *either* matches, whereas a header route means "all matches"
//!   (AND). Writing both would send more users to the canary than asked, so
//!   a route with a header and a cookie is refused;
//! - a header value must not be empty (an empty `canary-by-header-value` is
//!   ignored by ingress-nginx, which then falls back to the `always`/`never`
//!   values of the header);
//! - a cookie can only be matched as `NAME=always`: `canary-by-cookie: NAME`
//!   sends a request to the canary when cookie `NAME` is `always` (and to
//!   stable when it is `never`); ingress-nginx has no way to match a cookie
//!   against another value. A cookie match whose value is not `always` is
//!   refused.
//!
//! Everything refused comes back as [`TrafficError::Unsupported`] before any
//! API call.
//!
//! # Reading the weight
//!
//! `canary-weight` of the canary Ingress, as a share of `canary-weight-total`
//! (default 100), rounded; no canary Ingress means 0. `set_weight` and
//! `set_header_routes` read the object the API server returned.
//!
//! # Test double limits
//!
//! `kube-fake-client` treats server-side apply as a JSON merge patch with no
//! field ownership: it never removes what rollwise stopped applying, so the
//! tests go through the JSON-patch repair whenever something is removed (a
//! real API server removes it with the apply itself). It ignores delete
//! preconditions and does not garbage-collect by owner reference.

// `TrafficError` (shared, in `super`) is large because `TrafficError::Api`
// holds a `kube::Error` inline; see `gateway_api.rs`.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};

use super::raw::{MAX_WRITE_ATTEMPTS, backoff, bounded};
use super::{Backends, HeaderRoute, Match, TrafficError, TrafficRouter, WeightReading};
use crate::api::{FIELD_MANAGER, NginxRouting};

/// `"true"` on the canary Ingress.
pub const CANARY: &str = "nginx.ingress.kubernetes.io/canary";
/// The canary's share, out of [`CANARY_WEIGHT_TOTAL`].
pub const CANARY_WEIGHT: &str = "nginx.ingress.kubernetes.io/canary-weight";
/// Always `"100"` when rollwise writes it.
pub const CANARY_WEIGHT_TOTAL: &str = "nginx.ingress.kubernetes.io/canary-weight-total";
/// Name of the header that routes to the canary.
pub const CANARY_BY_HEADER: &str = "nginx.ingress.kubernetes.io/canary-by-header";
/// The exact value of [`CANARY_BY_HEADER`] that routes to the canary.
pub const CANARY_BY_HEADER_VALUE: &str = "nginx.ingress.kubernetes.io/canary-by-header-value";
/// Name of the cookie whose value `always` routes to the canary.
pub const CANARY_BY_COOKIE: &str = "nginx.ingress.kubernetes.io/canary-by-cookie";
/// The name of the active header route (for people and for rollwise).
pub const HEADER_ROUTE: &str = "rollwise.io/header-route";
/// Label on the canary Ingress.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Label on the canary Ingress: the Rollout's name.
pub const ROLLOUT_LABEL: &str = "rollwise.io/rollout";
/// The only cookie value ingress-nginx can match.
pub const COOKIE_ALWAYS: &str = "always";

const MANAGED_BY: &str = "rollwise";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Argo CD's resource-tracking annotation names the object it is on (the
/// user's Ingress): a copy on the canary Ingress would claim that Argo CD
/// manages it (and may prune it). Not copied.
const ARGOCD_TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";
/// Annotations of the user's Ingress that are not copied as they are.
const CANARY_PREFIX: &str = "nginx.ingress.kubernetes.io/canary";
/// The annotations that hold the header-route state.
const HEADER_STATE: [&str; 4] = [
    CANARY_BY_HEADER,
    CANARY_BY_HEADER_VALUE,
    CANARY_BY_COOKIE,
    HEADER_ROUTE,
];

const KIND: &str = "Ingress";
const ROUTER: &str = "nginx";
const MAX_NAME: usize = 253;
const MAX_LABEL_VALUE: usize = 63;

/// Drives one canary Ingress. See the module docs.
pub struct NginxRouter {
    api: Api<DynamicObject>,
    /// The user's Ingress.
    ingress: String,
    /// The canary Ingress.
    canary: String,
    backends: Backends,
}

/// The name of the canary Ingress for `ingress` and `canary_service`:
/// `<ingress>-<canary_service>-canary`; when that is longer than 253
/// characters, `<prefix>-<hash>-canary` (a stable hash of the full name, so
/// two long names do not collide).
pub fn canary_ingress_name(ingress: &str, canary_service: &str) -> String {
    let full = format!("{ingress}-{canary_service}-canary");
    if full.len() <= MAX_NAME {
        return full;
    }
    let suffix = format!("-{:08x}-canary", crate::fnv1a(&full) as u32);
    let base = format!("{ingress}-{canary_service}");
    format!("{}{suffix}", shorten(&base, MAX_NAME - suffix.len()))
}

/// `value` fit for a label value (at most 63 characters), shortened with a
/// hash when longer.
fn label_value(value: &str) -> String {
    if value.len() <= MAX_LABEL_VALUE {
        return value.to_owned();
    }
    let suffix = format!("-{:08x}", crate::fnv1a(value) as u32);
    format!("{}{suffix}", shorten(value, MAX_LABEL_VALUE - suffix.len()))
}

/// The longest prefix of `s` of at most `max` bytes on a character boundary,
/// without trailing `-`, `.` or `_` (a name must end alphanumeric).
fn shorten(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].trim_end_matches(['-', '.', '_'])
}

impl NginxRouter {
    /// A router for the Ingress `config.ingress` in `backends.namespace`.
    pub fn new(client: kube::Client, config: NginxRouting, backends: Backends) -> Self {
        let resource = ApiResource::erase::<Ingress>(&());
        let api = Api::namespaced_with(client, &backends.namespace, &resource);
        let canary = canary_ingress_name(&config.ingress, &backends.canary_service);
        Self {
            api,
            ingress: config.ingress,
            canary,
            backends,
        }
    }

    /// The canary Ingress's name.
    pub fn canary_ingress(&self) -> &str {
        &self.canary
    }

    /// The user's Ingress.
    async fn fetch_user(&self) -> Result<DynamicObject, TrafficError> {
        match bounded("get", self.api.get(&self.ingress)).await {
            Ok(obj) => {
                super::seen::note(KIND, &obj);
                Ok(obj)
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Err(TrafficError::RouteNotFound {
                    kind: KIND,
                    name: self.ingress.clone(),
                    namespace: self.backends.namespace.clone(),
                })
            }
            Err(e) => Err(self.api_error(&self.ingress, e)),
        }
    }

    /// The canary Ingress, when there is one; `Malformed` when an Ingress of
    /// that name exists that rollwise did not create.
    async fn fetch_canary(&self) -> Result<Option<DynamicObject>, TrafficError> {
        let canary = match bounded("get", self.api.get_opt(&self.canary)).await {
            Ok(canary) => {
                if let Some(obj) = &canary {
                    super::seen::note(KIND, obj);
                }
                canary
            }
            Err(e) => return Err(self.api_error(&self.canary, e)),
        };
        match canary {
            Some(obj) if !self.is_ours(&obj) => Err(TrafficError::Malformed {
                kind: KIND,
                name: self.canary.clone(),
                message: format!(
                    "an Ingress of this name exists that this Rollout did not create (labels {MANAGED_BY_LABEL}={MANAGED_BY} \
                     and {ROLLOUT_LABEL}={}); rollwise will neither change nor delete it",
                    self.rollout_label().unwrap_or_default()
                ),
            }),
            other => Ok(other),
        }
    }

    /// Whether `obj` is the canary Ingress this router manages.
    fn is_ours(&self, obj: &DynamicObject) -> bool {
        let labels = obj.metadata.labels.as_ref();
        let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
        label(MANAGED_BY_LABEL) == Some(MANAGED_BY)
            && match (self.rollout_label(), label(ROLLOUT_LABEL)) {
                (Some(ours), Some(theirs)) => ours == theirs,
                _ => true,
            }
    }

    fn rollout_label(&self) -> Option<String> {
        self.backends.owner.as_ref().map(|o| label_value(&o.name))
    }

    /// Read the user's Ingress and build the canary Ingress for `weight` and
    /// the header-route annotations `header`.
    fn desired(
        &self,
        user: &DynamicObject,
        weight: u8,
        header: &BTreeMap<String, String>,
    ) -> Result<Desired, TrafficError> {
        let spec = self.canary_spec(user)?;
        let mut annotations: BTreeMap<String, String> = user
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| {
                k.as_str() != LAST_APPLIED
                    && k.as_str() != ARGOCD_TRACKING_ID
                    && !k.starts_with(CANARY_PREFIX)
                    && k.as_str() != HEADER_ROUTE
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        annotations.insert(CANARY.into(), "true".into());
        annotations.insert(CANARY_WEIGHT.into(), weight.to_string());
        annotations.insert(CANARY_WEIGHT_TOTAL.into(), "100".into());
        annotations.extend(header.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut labels = BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned())]);
        if let Some(rollout) = self.rollout_label() {
            labels.insert(ROLLOUT_LABEL.into(), rollout);
        }
        Ok(Desired {
            spec,
            annotations,
            labels,
            owner: self.backends.owner.clone(),
        })
    }

    /// The user's `spec` with only the stable backends, switched to the
    /// canary Service (see the module docs).
    fn canary_spec(&self, user: &DynamicObject) -> Result<Value, TrafficError> {
        let spec = match user.data.get("spec") {
            None | Some(Value::Null) => return Err(self.no_stable()),
            Some(Value::Object(spec)) => spec,
            Some(_) => return Err(self.malformed(&self.ingress, "spec is not an object")),
        };
        let mut out = spec.clone();
        out.remove("rules");
        out.remove("defaultBackend");
        let mut found = false;
        if let Some(backend) = spec.get("defaultBackend").and_then(|b| self.switched(b)) {
            out.insert("defaultBackend".into(), backend);
            found = true;
        }
        let rules = match spec.get("rules") {
            None | Some(Value::Null) => &Vec::new(),
            Some(Value::Array(rules)) => rules,
            Some(_) => return Err(self.malformed(&self.ingress, "spec.rules is not a list")),
        };
        let mut kept = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let paths = match rule.get("http").and_then(|h| h.get("paths")) {
                None | Some(Value::Null) => continue,
                Some(Value::Array(paths)) => paths,
                Some(_) => {
                    return Err(self.malformed(
                        &self.ingress,
                        &format!("spec.rules[{index}].http.paths is not a list"),
                    ));
                }
            };
            let switched: Vec<Value> = paths
                .iter()
                .filter_map(|path| {
                    let backend = self.switched(path.get("backend")?)?;
                    let mut path = path.clone();
                    path["backend"] = backend;
                    Some(path)
                })
                .collect();
            if switched.is_empty() {
                continue;
            }
            let mut rule = rule.clone();
            rule["http"]["paths"] = Value::Array(switched);
            kept.push(rule);
        }
        if !kept.is_empty() {
            out.insert("rules".into(), Value::Array(kept));
            found = true;
        }
        if !found {
            return Err(self.no_stable());
        }
        Ok(Value::Object(out))
    }

    /// `backend` pointed at the canary Service when it points at the stable
    /// Service; `None` otherwise.
    fn switched(&self, backend: &Value) -> Option<Value> {
        let service = backend.get("service")?;
        if service.get("name").and_then(Value::as_str)
            != Some(self.backends.stable_service.as_str())
        {
            return None;
        }
        let mut backend = backend.clone();
        backend["service"]["name"] = json!(self.backends.canary_service);
        Some(backend)
    }

    /// Make the canary Ingress what `want` asks, keeping the other half of
    /// the state from the current canary Ingress; returns the read-back.
    async fn reconcile(&self, want: Want) -> Result<WeightReading, TrafficError> {
        for attempt in 1..=MAX_WRITE_ATTEMPTS {
            let user = self.fetch_user().await?;
            let current = self.fetch_canary().await?;
            let (weight, header) = match &want {
                Want::Weight(w) => (*w, current.as_ref().map(header_state).unwrap_or_default()),
                Want::Header(h) => {
                    let weight = match &current {
                        Some(c) => self.weight_of(c)?,
                        None => 0,
                    };
                    (weight, h.clone())
                }
            };
            let desired = self.desired(&user, weight, &header)?;
            if weight == 0 && header.is_empty() {
                let Some(current) = current else {
                    return Ok(WeightReading { canary: Some(0) });
                };
                match self.delete(&current).await {
                    Ok(()) => return Ok(WeightReading { canary: Some(0) }),
                    Err(Retry::Conflict) => {}
                    Err(Retry::Fail(e)) => return Err(e),
                }
            } else {
                if let Some(current) = &current
                    && desired.is_met_by(current)
                {
                    tracing::debug!(ingress = %self.canary, weight, "canary Ingress already as wanted; no write");
                    return self.reading_of(current);
                }
                match self.write(&desired, attempt).await {
                    Ok(written) => return self.reading_of(&written),
                    Err(Retry::Conflict) => {}
                    Err(Retry::Fail(e)) => return Err(e),
                }
            }
            tracing::debug!(ingress = %self.canary, attempt, "canary Ingress changed under us; re-reading");
            if attempt < MAX_WRITE_ATTEMPTS {
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        Err(TrafficError::Conflict {
            kind: KIND,
            name: self.canary.clone(),
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }

    /// Apply `desired`; repair what the apply left behind (see the module
    /// docs). Returns the object the API server holds.
    async fn write(&self, desired: &Desired, attempt: u32) -> Result<DynamicObject, Retry> {
        let _writing = super::seen::writing(KIND, &self.backends.namespace, &self.canary);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let body = desired.object(&self.canary, &self.backends.namespace);
        let written = bounded(
            "apply",
            self.api.patch(&self.canary, &params, &Patch::Apply(&body)),
        )
        .await
        .map_err(|e| self.retry_or_fail(e))?;
        super::seen::note(KIND, &written);
        if desired.is_met_by(&written) {
            tracing::info!(ingress = %self.canary, attempt, "canary Ingress applied");
            return Ok(written);
        }
        let Some(resource_version) = written.metadata.resource_version.as_deref() else {
            return Err(Retry::Fail(self.malformed(
                &self.canary,
                "the object has no metadata.resourceVersion",
            )));
        };
        let ops = json!([
            { "op": "replace", "path": "/metadata/resourceVersion", "value": resource_version },
            { "op": "add", "path": "/metadata/annotations", "value": desired.annotations },
            { "op": "add", "path": "/spec", "value": desired.spec },
        ]);
        let patch: json_patch::Patch =
            serde_json::from_value(ops).expect("a well-formed JSON patch");
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let repaired = bounded(
            "patch",
            self.api
                .patch(&self.canary, &params, &Patch::Json::<()>(patch)),
        )
        .await
        .map_err(|e| self.retry_or_fail(e))?;
        super::seen::note(KIND, &repaired);
        tracing::info!(ingress = %self.canary, attempt, "canary Ingress applied; leftovers removed");
        Ok(repaired)
    }

    /// Delete the canary Ingress `current` (already gone is fine).
    async fn delete(&self, current: &DynamicObject) -> Result<(), Retry> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: current.metadata.resource_version.clone(),
                uid: None,
            }),
            ..Default::default()
        };
        let _writing = super::seen::writing(KIND, &self.backends.namespace, &self.canary);
        match bounded("delete", self.api.delete(&self.canary, &params)).await {
            Ok(_) => {
                super::seen::note_deleted(KIND, &self.backends.namespace, &self.canary);
                tracing::info!(ingress = %self.canary, "canary Ingress deleted");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(self.retry_or_fail(e)),
        }
    }

    /// The weight the canary Ingress carries (see the module docs).
    fn weight_of(&self, canary: &DynamicObject) -> Result<u8, TrafficError> {
        let annotation = |key: &str| {
            canary
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
        };
        let number = |key: &str, default: u64| -> Result<u64, TrafficError> {
            match annotation(key) {
                None => Ok(default),
                Some(v) => v.trim().parse::<u64>().map_err(|_| {
                    self.malformed(
                        &self.canary,
                        &format!("annotation {key} = {v:?} is not a non-negative integer"),
                    )
                }),
            }
        };
        Ok(share(
            number(CANARY_WEIGHT, 0)?,
            number(CANARY_WEIGHT_TOTAL, 100)?,
        ))
    }

    fn reading_of(&self, canary: &DynamicObject) -> Result<WeightReading, TrafficError> {
        self.weight_of(canary)
            .map(|w| WeightReading { canary: Some(w) })
    }

    fn retry_or_fail(&self, error: kube::Error) -> Retry {
        match error {
            kube::Error::Api(status) if status.code == 409 => Retry::Conflict,
            e => Retry::Fail(self.api_error(&self.canary, e)),
        }
    }

    fn no_stable(&self) -> TrafficError {
        TrafficError::NoStableBackend {
            kind: KIND,
            name: self.ingress.clone(),
            service: self.backends.stable_service.clone(),
        }
    }

    fn malformed(&self, name: &str, message: &str) -> TrafficError {
        TrafficError::Malformed {
            kind: KIND,
            name: name.to_owned(),
            message: message.to_owned(),
        }
    }

    fn api_error(&self, name: &str, source: kube::Error) -> TrafficError {
        TrafficError::Api {
            kind: KIND,
            name: name.to_owned(),
            source,
        }
    }
}

#[async_trait]
impl TrafficRouter for NginxRouter {
    fn name(&self) -> &'static str {
        ROUTER
    }

    /// The user's Ingress exists and has a backend on the stable Service,
    /// and no foreign Ingress holds the canary Ingress's name.
    async fn verify(&self) -> Result<WeightReading, TrafficError> {
        let user = self.fetch_user().await?;
        self.canary_spec(&user)?;
        match self.fetch_canary().await? {
            Some(canary) => self.reading_of(&canary),
            None => Ok(WeightReading { canary: Some(0) }),
        }
    }

    async fn current_weight(&self) -> Result<WeightReading, TrafficError> {
        match self.fetch_canary().await? {
            Some(canary) => self.reading_of(&canary),
            None => Ok(WeightReading { canary: Some(0) }),
        }
    }

    async fn set_weight(&self, canary_weight: u8) -> Result<WeightReading, TrafficError> {
        let weight = if canary_weight > 100 {
            tracing::warn!(ingress = %self.ingress, requested = canary_weight, "canary weight above 100 clamped to 100");
            100
        } else {
            canary_weight
        };
        self.reconcile(Want::Weight(weight)).await
    }

    /// Delete the canary Ingress; nothing there (or an Ingress of that name
    /// that rollwise did not create) is `Ok`.
    async fn restore_stable(&self) -> Result<(), TrafficError> {
        for attempt in 1..=MAX_WRITE_ATTEMPTS {
            let current = match self.fetch_canary().await {
                Ok(Some(current)) => current,
                Ok(None) => return Ok(()),
                Err(TrafficError::Malformed { message, .. }) => {
                    tracing::warn!(ingress = %self.canary, %message, "not rollwise's; nothing to restore");
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            match self.delete(&current).await {
                Ok(()) => return Ok(()),
                Err(Retry::Conflict) if attempt < MAX_WRITE_ATTEMPTS => {
                    tokio::time::sleep(backoff(attempt)).await
                }
                Err(Retry::Conflict) => {}
                Err(Retry::Fail(e)) => return Err(e),
            }
        }
        Err(TrafficError::Conflict {
            kind: KIND,
            name: self.canary.clone(),
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }

    /// See the module docs (# Header routes).
    async fn set_header_routes(&self, routes: &[HeaderRoute]) -> Result<(), TrafficError> {
        let header = header_annotations(routes)?;
        self.reconcile(Want::Header(header)).await.map(|_| ())
    }
}

/// What a call changes; the other half is kept from the canary Ingress.
enum Want {
    Weight(u8),
    Header(BTreeMap<String, String>),
}

/// Why a write did not happen.
enum Retry {
    /// 409: re-read and try again.
    Conflict,
    Fail(TrafficError),
}

/// The canary Ingress as derived.
#[derive(Debug)]
struct Desired {
    spec: Value,
    annotations: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    owner: Option<OwnerReference>,
}

impl Desired {
    /// The apply body.
    fn object(&self, name: &str, namespace: &str) -> Value {
        let mut metadata = json!({
            "name": name,
            "namespace": namespace,
            "labels": self.labels,
            "annotations": self.annotations,
        });
        if let Some(owner) = &self.owner {
            metadata["ownerReferences"] = json!([owner]);
        }
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": metadata,
            "spec": self.spec,
        })
    }

    /// Whether `obj` already is this: same spec and annotations, our labels
    /// and owner reference present (others' labels and owners are left).
    fn is_met_by(&self, obj: &DynamicObject) -> bool {
        let empty = BTreeMap::new();
        let annotations = obj.metadata.annotations.as_ref().unwrap_or(&empty);
        let labels = obj.metadata.labels.as_ref().unwrap_or(&empty);
        obj.data.get("spec") == Some(&self.spec)
            && *annotations == self.annotations
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.owner.as_ref().is_none_or(|owner| {
                obj.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.uid == owner.uid && o.name == owner.name)
            })
    }
}

/// `weight` out of `total` in percent, rounded half up (a weight above the
/// total counts as all); 0 when the total is 0.
fn share(weight: u64, total: u64) -> u8 {
    if total == 0 {
        return 0;
    }
    let percent =
        (u128::from(weight.min(total)) * 200 + u128::from(total)) / (2 * u128::from(total));
    u8::try_from(percent).unwrap_or(100)
}

/// The header-route state a canary Ingress carries: its `canary-by-*`
/// annotations, when rollwise wrote them (it always writes
/// [`HEADER_ROUTE`] with them; `canary-by-*` added by hand are not state and
/// are removed at the next write).
fn header_state(canary: &DynamicObject) -> BTreeMap<String, String> {
    let annotations = canary.metadata.annotations.as_ref();
    if annotations.is_none_or(|a| !a.contains_key(HEADER_ROUTE)) {
        return BTreeMap::new();
    }
    annotations
        .into_iter()
        .flatten()
        .filter(|(k, _)| HEADER_STATE.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The `canary-by-*` annotations for `routes`; `Unsupported` for what
/// ingress-nginx cannot express (see the module docs).
fn header_annotations(routes: &[HeaderRoute]) -> Result<BTreeMap<String, String>, TrafficError> {
    let unsupported = |what: String| TrafficError::Unsupported {
        router: ROUTER,
        what,
    };
    let mut annotations = BTreeMap::new();
    let [route] = routes else {
        if routes.is_empty() {
            return Ok(annotations);
        }
        return Err(unsupported(format!(
            "hold {} header routes at once (one canary Ingress has one canary-by-header/canary-by-cookie)",
            routes.len()
        )));
    };
    let mut header: Option<(&str, &str)> = None;
    let mut cookie: Option<&str> = None;
    for m in &route.matches {
        match m {
            Match::Header { name, value } => {
                if header.is_some_and(|(n, v)| !(n.eq_ignore_ascii_case(name) && v == value)) {
                    return Err(unsupported(format!(
                        "match more than one header in header route {:?} (one canary-by-header per canary Ingress)",
                        route.name
                    )));
                }
                if value.is_empty() {
                    return Err(unsupported(format!(
                        "match header {name:?} to an empty value (ingress-nginx ignores an empty canary-by-header-value)"
                    )));
                }
                header = Some((name, value));
            }
            Match::Cookie { name, value } => {
                if value != COOKIE_ALWAYS {
                    return Err(unsupported(format!(
                        "match cookie {name:?} to {value:?}: ingress-nginx's canary-by-cookie only matches the value \"always\""
                    )));
                }
                if cookie.is_some_and(|c| c != name) {
                    return Err(unsupported(format!(
                        "match more than one cookie in header route {:?} (one canary-by-cookie per canary Ingress)",
                        route.name
                    )));
                }
                cookie = Some(name);
            }
        }
    }
    match (header, cookie) {
        (Some(_), Some(_)) => {
            return Err(unsupported(format!(
                "match a header and a cookie together in header route {:?}: ingress-nginx sends a request to the canary when \
                 either matches, not only when both do",
                route.name
            )));
        }
        (None, None) => {
            return Err(unsupported(format!(
                "add header route {:?} without any match (it would send every request to the canary)",
                route.name
            )));
        }
        (Some((name, value)), None) => {
            annotations.insert(CANARY_BY_HEADER.to_owned(), name.to_owned());
            annotations.insert(CANARY_BY_HEADER_VALUE.to_owned(), value.to_owned());
        }
        (None, Some(name)) => {
            annotations.insert(CANARY_BY_COOKIE.to_owned(), name.to_owned());
        }
    }
    annotations.insert(HEADER_ROUTE.to_owned(), route.name.clone());
    Ok(annotations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept() {
        assert_eq!(
            canary_ingress_name("web", "web-canary"),
            "web-web-canary-canary"
        );
    }

    #[test]
    fn long_names_are_shortened_with_a_stable_hash() {
        let ingress = "a".repeat(253);
        let one = canary_ingress_name(&ingress, "web-canary");
        let two = canary_ingress_name(&ingress, "web-canary2");
        assert_eq!(one.len(), MAX_NAME);
        assert!(one.ends_with("-canary"));
        assert_ne!(one, two);
        assert_eq!(one, canary_ingress_name(&ingress, "web-canary"));
        // A cut that would end on '-' is trimmed.
        let dashes = format!("{}-{}", "b".repeat(236), "c".repeat(40));
        let name = canary_ingress_name(&dashes, "svc");
        assert!(!name.contains("--"), "{name}");
        assert!(name.len() <= MAX_NAME);
    }

    #[test]
    fn label_values_fit() {
        assert_eq!(label_value("shop"), "shop");
        let long = label_value(&"r".repeat(200));
        assert!(long.len() <= MAX_LABEL_VALUE);
        assert!(
            long.chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric())
        );
    }

    fn route(matches: Vec<Match>) -> HeaderRoute {
        HeaderRoute {
            name: "beta".into(),
            matches,
        }
    }

    fn header(name: &str, value: &str) -> Match {
        Match::Header {
            name: name.into(),
            value: value.into(),
        }
    }

    fn cookie(name: &str, value: &str) -> Match {
        Match::Cookie {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn header_annotations_follow_ingress_nginx() {
        let a = header_annotations(&[route(vec![header("x-beta", "true")])]).expect("header");
        assert_eq!(a.get(CANARY_BY_HEADER).map(String::as_str), Some("x-beta"));
        assert_eq!(
            a.get(CANARY_BY_HEADER_VALUE).map(String::as_str),
            Some("true")
        );
        assert_eq!(a.get(HEADER_ROUTE).map(String::as_str), Some("beta"));
        let a = header_annotations(&[route(vec![cookie("beta", "always")])]).expect("cookie");
        assert_eq!(a.get(CANARY_BY_COOKIE).map(String::as_str), Some("beta"));
        assert!(header_annotations(&[]).expect("none").is_empty());
        for refused in [
            vec![route(vec![cookie("beta", "1")])],
            vec![route(vec![header("x-a", "1"), header("x-b", "1")])],
            vec![route(vec![header("x-a", "1"), cookie("beta", "always")])],
            vec![route(vec![header("x-a", "")])],
            vec![route(vec![])],
            vec![
                route(vec![header("x-a", "1")]),
                route(vec![header("x-b", "1")]),
            ],
        ] {
            let err = header_annotations(&refused).expect_err("refused");
            assert!(
                matches!(
                    err,
                    TrafficError::Unsupported {
                        router: "nginx",
                        ..
                    }
                ),
                "{err:?}"
            );
        }
    }

    #[test]
    fn weight_reading_uses_the_total() {
        assert_eq!(share(20, 100), 20);
        assert_eq!(share(1, 3), 33);
        assert_eq!(share(1, 2), 50);
        assert_eq!(share(150, 100), 100);
        assert_eq!(share(5, 0), 0);
        assert_eq!(share(u64::MAX, u64::MAX), 100);
    }
}
