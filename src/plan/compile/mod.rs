//! Pure validation: turns a `RolloutSpec` into a [`Plan`] the engine can run,
//! or into field errors that name the offending field. This repeats the CEL
//! rules (an API server without them, or an object stored before a CRD
//! upgrade, must still get a clear condition) and checks what CEL cannot.

use std::time::Duration;

use crate::api::{RolloutSpec, Step};
use crate::traffic::{HeaderRoute, Match, capabilities};

/// Default analysis interval when there are threshold metrics: each look is
/// a measurement that counts against `failureLimit`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Default analysis interval when the analysis only compares canary with
/// stable: the sequential test is valid at every look, so looking often costs
/// queries, not false rollbacks, and a bad canary is caught after fewer
/// requests.
pub const DEFAULT_COMPARE_INTERVAL: Duration = Duration::from_secs(5);
/// Default time metrics may keep erroring before a rollback: the default
/// `consecutiveErrorLimit` is the number of looks in it (4 at 30s).
pub const DEFAULT_ERROR_WINDOW: Duration = Duration::from_secs(120);
/// Default pause after each default weight step.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(300);
/// Default weight schedule.
pub const DEFAULT_WEIGHTS: [u8; 4] = [5, 33, 50, 100];

/// A field that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.steps[2].setWeight`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A validated step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanStep {
    SetWeight(u8),
    /// `None`: wait for a manual promote.
    Pause(Option<Duration>),
    /// Set (or, with no matches, remove) the A/B route `Plan::routes[i]`.
    HeaderRoute(u16),
}

/// A validated threshold metric.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanMetric {
    pub name: String,
    pub query: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub failure_limit: u32,
}

/// A validated canary-vs-stable comparison (`spec.analysis.compare[]`), or
/// a counted threshold metric (`spec.analysis.metrics[]` with `requests`
/// and `failures`): the canary's counts against a fixed limit
/// (`tolerance.fixed`), stable not queried.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanCompare {
    pub name: String,
    pub requests: String,
    pub failures: String,
    pub tolerance: crate::analysis::sequential::Tolerance,
}

/// Default confidence of a promotion on the comparisons' evidence (Fine).
pub const DEFAULT_CONFIDENCE: f64 = 0.99;

/// Default confidence of a rollback on the comparisons' evidence (Harm),
/// or `confidence` when that is lower: a wrong rollback leaves all traffic
/// on the version that was serving it (see `sequential::Confidence`).
pub const DEFAULT_ROLLBACK_CONFIDENCE: f64 = 0.95;

/// A validated rollout plan: what the pure engine runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
    pub interval: Duration,
    pub metrics: Vec<PlanMetric>,
    pub compare: Vec<PlanCompare>,
    /// Confidence a promotion on the comparisons' evidence needs (Fine;
    /// e.g. 0.99); also that of the bounds the ramp and the budget use.
    pub confidence: f64,
    /// Confidence a rollback on the comparisons' evidence needs (Harm; e.g.
    /// 0.95).
    pub rollback_confidence: f64,
    /// Exposure budget: extra failed requests the canary may cost.
    pub max_extra_failures: Option<f64>,
    pub consecutive_error_limit: u32,
    pub prometheus: Option<String>,
    pub paused: bool,
    /// `service[/deployment]` of the canary.
    pub canary_ref: String,
    /// The A/B routes the steps refer to.
    pub routes: Vec<HeaderRoute>,
    /// Blue/green instead of a weighted canary.
    pub blue_green: Option<PlanBlueGreen>,
    /// Drain the old version this long after a promotion.
    pub stable_scale_down_after: Option<Duration>,
    /// Scale the canary to zero after a rollback or abort.
    pub canary_scale_down_on_rollback: bool,
    /// How long a pause that waits for a person may last before the
    /// Rollout reports `Stalled=True` (`spec.pauseDeadline`).
    pub pause_deadline: Option<Duration>,
    /// The router's spec name (`gatewayAPI`, `nginx`, ...).
    pub router: &'static str,
    /// Webhook and Job checks (`spec.checks`).
    pub checks: Vec<super::checks::PlanCheck>,
}

impl Plan {
    /// The canary weight the plan asks for at step `index`: the latest
    /// setWeight at or before it (0 before the first).
    pub fn target_weight(&self, index: usize) -> u8 {
        self.steps
            .iter()
            .take(index.saturating_add(1))
            .filter_map(|s| match s {
                PlanStep::SetWeight(w) => Some(*w),
                _ => None,
            })
            .next_back()
            .unwrap_or(0)
    }

    /// The A/B routes active at step `index`: replay the setHeaderRoute
    /// steps up to it (a route without matches removes its name).
    pub fn header_routes(&self, index: usize) -> Vec<HeaderRoute> {
        let mut active: Vec<HeaderRoute> = Vec::new();
        for s in self.steps.iter().take(index.saturating_add(1)) {
            if let PlanStep::HeaderRoute(i) = s
                && let Some(r) = self.routes.get(*i as usize)
            {
                active.retain(|a| a.name != r.name);
                if !r.matches.is_empty() {
                    active.push(r.clone());
                }
            }
        }
        active
    }

    pub fn has_analysis(&self) -> bool {
        !self.metrics.is_empty() || !self.compare.is_empty()
    }

    /// Does the plan wait for a person's promote somewhere (a pause step
    /// without duration)? Blue/green without autoPromote is such a step.
    pub fn waits_for_promote(&self) -> bool {
        self.steps.contains(&PlanStep::Pause(None))
    }
}

/// Blue/green settings of a plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanBlueGreen {
    pub auto_promote: bool,
    pub preview: Duration,
    pub scale_down_delay: Duration,
}

/// Check an A/B route against what the router can express.
fn header_route(
    h: &crate::api::HeaderRouteStep,
    field: &str,
    router: &'static str,
) -> Result<HeaderRoute, FieldError> {
    let caps = capabilities(router);
    let fail = |message: String| FieldError {
        field: field.to_string(),
        message,
    };
    if !is_dns_label(&h.name) {
        return Err(fail(format!("name {:?} must be a DNS label", h.name)));
    }
    let mut matches = Vec::with_capacity(h.matches.len());
    for (j, m) in h.matches.iter().enumerate() {
        match (&m.header, &m.cookie) {
            (Some(nv), None) => {
                if !caps.header {
                    return Err(fail(format!("the {router} router cannot route by header")));
                }
                if nv.name.is_empty() {
                    return Err(fail(format!("match[{j}].header.name must not be empty")));
                }
                matches.push(Match::Header {
                    name: nv.name.clone(),
                    value: nv.value.clone(),
                });
            }
            (None, Some(nv)) => {
                if !caps.cookie {
                    return Err(fail(format!("the {router} router cannot route by cookie")));
                }
                if nv.name.is_empty() {
                    return Err(fail(format!("match[{j}].cookie.name must not be empty")));
                }
                matches.push(Match::Cookie {
                    name: nv.name.clone(),
                    value: nv.value.clone(),
                });
            }
            _ => {
                return Err(fail(format!(
                    "match[{j}] must be either a header or a cookie"
                )));
            }
        }
    }
    if matches.is_empty() {
        // No match: the step removes the route (nothing to check).
        return Ok(HeaderRoute {
            name: h.name.clone(),
            matches,
        });
    }
    if router == "nginx" {
        // ingress-nginx: one canary-by-header and/or canary-by-cookie, ORed
        // by nginx; a cookie can only be matched with the value "always".
        if matches.len() > 1 {
            return Err(fail("the nginx router can express only one match per route (ingress-nginx ORs header and cookie)".into()));
        }
        if let Some(Match::Cookie { value, .. }) = matches.first()
            && value != "always"
        {
            return Err(fail(format!(
                "the nginx router can match a cookie only with the value \"always\" (ingress-nginx canary-by-cookie), not {value:?}"
            )));
        }
    }
    if let Some(Match::Header { name, .. }) = matches
        .iter()
        .find(|m| matches!(m, Match::Header { value, .. } if value.is_empty()))
    {
        return Err(fail(format!("header {name:?} needs a value")));
    }
    Ok(HeaderRoute {
        name: h.name.clone(),
        matches,
    })
}

/// Parse a Go-style duration (`30s`, `2m`, `1h30m`, `1.5h`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.trim().is_empty() {
        return Err("an empty string is not a duration (use e.g. 30s)".into());
    }
    let d: kube::core::Duration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration like 30s, 2m or 1h30m ({e})"))?;
    if d.is_negative() {
        return Err(format!("{s:?} is negative"));
    }
    Ok(d.into())
}

/// `service[/deployment]`: the identity of a version.
pub fn version_ref_key(r: &crate::api::VersionRef) -> String {
    match &r.deployment {
        Some(d) => format!("{}/{}", r.service, d),
        None => r.service.clone(),
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// A threshold metric in counted form (`requests` and `failures`), judged
/// by the sequential evidence against its fixed limit.
fn counted(m: &crate::api::MetricSpec) -> bool {
    m.requests.is_some() && m.failures.is_some()
}

/// The comparison a counted metric runs: the canary's counts against the
/// fixed limit `max`.
fn counted_metric(
    m: &crate::api::MetricSpec,
    field: &str,
    err: &mut impl FnMut(&str, String),
) -> Option<PlanCompare> {
    let mut ok = true;
    if !m.query.is_empty() {
        err(
            &format!("{field}.query"),
            "a metric has either query, or requests and failures".into(),
        );
        ok = false;
    }
    for (what, q) in [("requests", &m.requests), ("failures", &m.failures)] {
        if q.as_deref().is_none_or(|q| q.trim().is_empty()) {
            err(&format!("{field}.{what}"), "must not be empty".into());
            ok = false;
        }
    }
    if m.min.is_some() {
        err(
            &format!("{field}.min"),
            "a counted metric has only max, the highest tolerated error rate".into(),
        );
        ok = false;
    }
    if m.failure_limit.is_some() {
        err(
            &format!("{field}.failureLimit"),
            "does not apply to a counted metric: its evidence decides".into(),
        );
        ok = false;
    }
    let max = match m.max {
        Some(max) if (0.0..1.0).contains(&max) => max,
        Some(max) => {
            err(
                &format!("{field}.max"),
                format!("{max} is not an error rate in [0, 1)"),
            );
            return None;
        }
        None => {
            err(
                &format!("{field}.max"),
                "a counted metric needs max, the highest tolerated error rate".into(),
            );
            return None;
        }
    };
    ok.then(|| PlanCompare {
        name: m.name.clone(),
        requests: m.requests.clone().unwrap_or_default(),
        failures: m.failures.clone().unwrap_or_default(),
        tolerance: crate::analysis::sequential::Tolerance::limit(max),
    })
}

/// Validate a spec and build its plan. Every error names its field.
pub fn validate(spec: &RolloutSpec) -> Result<Plan, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut err = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.to_string(),
            message,
        })
    };

    for (side, r) in [("stable", &spec.stable), ("canary", &spec.canary)] {
        if !is_dns_label(&r.service) {
            err(
                &format!("spec.{side}.service"),
                format!("{:?} is not a valid Service name", r.service),
            );
        }
        if let Some(d) = &r.deployment
            && !is_dns_subdomain(d)
        {
            err(
                &format!("spec.{side}.deployment"),
                format!("{d:?} is not a valid Deployment name"),
            );
        }
    }
    if spec.stable.service == spec.canary.service {
        err(
            "spec.canary.service",
            format!(
                "stable and canary must be different Services (both are {:?})",
                spec.canary.service
            ),
        );
    }
    if spec.stable.deployment.is_some() && spec.stable.deployment == spec.canary.deployment {
        err(
            "spec.canary.deployment",
            "stable and canary must be different Deployments".to_string(),
        );
    }

    match &spec.traffic_routing.gateway_api {
        Some(g) if g.http_route.is_empty() => err(
            "spec.trafficRouting.gatewayAPI.httpRoute",
            "must name an HTTPRoute".into(),
        ),
        Some(_) => {}
        None if spec.traffic_routing.count() > 0 => {}
        None => err(
            "spec.trafficRouting",
            "exactly one traffic router must be set (gatewayAPI, nginx, istio, smi, traefik or replicas)".into(),
        ),
    }

    let router = spec.traffic_routing.kind().unwrap_or("none");
    let mut routes: Vec<HeaderRoute> = Vec::new();
    let mut errors_from_routes: Vec<FieldError> = Vec::new();
    let mut blue_green = None;
    let steps = match &spec.steps {
        None if spec.blue_green.is_some() => {
            let bg = spec.blue_green.as_ref().expect("checked");
            let mut out = Vec::new();
            if let Some(h) = &bg.preview_route {
                match header_route(h, "spec.blueGreen.previewRoute", router) {
                    Ok(route) => {
                        out.push(PlanStep::HeaderRoute(routes.len() as u16));
                        routes.push(route);
                    }
                    Err(e) => errors_from_routes.push(e),
                }
            }
            let preview = match bg.preview_duration.as_deref().map(parse_duration) {
                None => Duration::from_secs(60),
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    err("spec.blueGreen.previewDuration", e);
                    Duration::ZERO
                }
            };
            let scale_down_delay = match bg.scale_down_delay.as_deref().map(parse_duration) {
                None => Duration::from_secs(30),
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    err("spec.blueGreen.scaleDownDelay", e);
                    Duration::ZERO
                }
            };
            let auto = bg.auto_promote.unwrap_or(true);
            out.push(PlanStep::Pause(auto.then_some(preview)));
            out.push(PlanStep::SetWeight(100));
            blue_green = Some(PlanBlueGreen {
                auto_promote: auto,
                preview,
                scale_down_delay,
            });
            out
        }
        None => default_steps(),
        Some(steps) if steps.is_empty() => {
            err(
                "spec.steps",
                "must not be empty (omit it for the default)".into(),
            );
            Vec::new()
        }
        Some(_) if spec.blue_green.is_some() => {
            err(
                "spec.steps",
                "blueGreen has its own flow: omit steps".into(),
            );
            Vec::new()
        }
        Some(steps) => {
            let mut out = Vec::with_capacity(steps.len());
            let mut last_weight: Option<i32> = None;
            for (i, step) in steps.iter().enumerate() {
                let Step {
                    set_weight,
                    pause,
                    set_header_route,
                } = step;
                match (set_weight, pause, set_header_route) {
                    (Some(w), None, None) => {
                        if !(0..=100).contains(w) {
                            err(
                                &format!("spec.steps[{i}].setWeight"),
                                format!("{w} is outside 0-100"),
                            );
                        } else if let Some(prev) = last_weight.filter(|p| w < p) {
                            err(
                                &format!("spec.steps[{i}].setWeight"),
                                format!("{w} is lower than the previous setWeight {prev}"),
                            );
                        } else {
                            out.push(PlanStep::SetWeight(*w as u8));
                        }
                        last_weight = Some(*w);
                    }
                    (None, Some(p), None) => match p.duration.as_deref().map(parse_duration) {
                        None => out.push(PlanStep::Pause(None)),
                        Some(Ok(d)) => out.push(PlanStep::Pause(Some(d))),
                        Some(Err(e)) => err(&format!("spec.steps[{i}].pause.duration"), e),
                    },
                    (None, None, Some(h)) => {
                        let field = format!("spec.steps[{i}].setHeaderRoute");
                        match header_route(h, &field, router) {
                            Ok(route) => {
                                out.push(PlanStep::HeaderRoute(routes.len() as u16));
                                routes.push(route);
                            }
                            Err(e) => errors_from_routes.push(e),
                        }
                    }
                    _ => err(
                        &format!("spec.steps[{i}]"),
                        "a step sets exactly one of setWeight, pause or setHeaderRoute".into(),
                    ),
                }
            }
            out
        }
    };

    let compare_only = spec.analysis.as_ref().is_some_and(|a| {
        a.metrics.iter().all(counted) && (!a.compare.is_empty() || !a.metrics.is_empty())
    });
    let mut interval = if compare_only {
        DEFAULT_COMPARE_INTERVAL
    } else {
        DEFAULT_INTERVAL
    };
    let mut metrics = Vec::new();
    let mut consecutive_error_limit = None;
    let mut prometheus = None;
    let mut compare = Vec::new();
    let mut confidence = DEFAULT_CONFIDENCE;
    let mut rollback_confidence = None;
    let mut max_extra_failures = None;
    if let Some(a) = &spec.analysis {
        if let Some(i) = &a.interval {
            match parse_duration(i) {
                Ok(d) if d >= Duration::from_secs(1) => interval = d,
                Ok(_) => err("spec.analysis.interval", format!("{i:?} is below 1s")),
                Err(e) => err("spec.analysis.interval", e),
            }
        }
        if let Some(n) = a.consecutive_error_limit {
            if n < 1 {
                err(
                    "spec.analysis.consecutiveErrorLimit",
                    format!("{n} must be at least 1"),
                );
            } else {
                consecutive_error_limit = Some(n as u32);
            }
        }
        if let Some(p) = &a.prometheus {
            if p.address.starts_with("http://") || p.address.starts_with("https://") {
                prometheus = Some(p.address.clone());
            } else {
                err(
                    "spec.analysis.prometheus.address",
                    format!("{:?} must be an http:// or https:// URL", p.address),
                );
            }
        }
        for (i, m) in a.compare.iter().enumerate() {
            let field = format!("spec.analysis.compare[{i}]");
            if m.name.is_empty() {
                err(&format!("{field}.name"), "must not be empty".into());
            }
            if a.compare[..i].iter().any(|o| o.name == m.name) {
                err(
                    &format!("{field}.name"),
                    format!("{:?} is used twice", m.name),
                );
            }
            for (what, q) in [("requests", &m.requests), ("failures", &m.failures)] {
                if !q.contains("{{service}}") && !q.contains("{{ service }}") {
                    err(
                        &format!("{field}.{what}"),
                        "must use {{service}} (it is run for the canary and the stable Service)"
                            .into(),
                    );
                }
            }
            match crate::analysis::sequential::Tolerance::parse(m.tolerance.as_ref()) {
                Ok(tolerance) => compare.push(PlanCompare {
                    name: m.name.clone(),
                    requests: m.requests.clone(),
                    failures: m.failures.clone(),
                    tolerance,
                }),
                Err(e) => err(&format!("{field}.tolerance"), e),
            }
        }
        if let Some(c) = a.confidence {
            if (0.5..1.0).contains(&c) {
                confidence = c;
            } else {
                err(
                    "spec.analysis.confidence",
                    format!("{c} must be in [0.5, 1)"),
                );
            }
        }
        if let Some(c) = a.rollback_confidence {
            if (0.5..1.0).contains(&c) {
                rollback_confidence = Some(c);
            } else {
                err(
                    "spec.analysis.rollbackConfidence",
                    format!("{c} must be in [0.5, 1)"),
                );
            }
        }
        if let Some(b) = a.max_extra_failures {
            if b >= 1 {
                max_extra_failures = Some(b as f64);
            } else {
                err(
                    "spec.analysis.maxExtraFailures",
                    format!("{b} must be at least 1"),
                );
            }
        }
        for (i, m) in a.metrics.iter().enumerate() {
            let field = format!("spec.analysis.metrics[{i}]");
            if m.name.is_empty() {
                err(&format!("{field}.name"), "must not be empty".into());
            }
            if a.metrics[..i].iter().any(|o| o.name == m.name) {
                err(
                    &format!("{field}.name"),
                    format!("{:?} is used twice", m.name),
                );
            }
            if a.compare.iter().any(|o| o.name == m.name) {
                err(
                    &format!("{field}.name"),
                    format!("{:?} is also a compare entry's name", m.name),
                );
            }
            if counted(m) {
                if let Some(c) = counted_metric(m, &field, &mut err) {
                    compare.push(c);
                }
                continue;
            }
            if m.requests.is_some() || m.failures.is_some() {
                err(&field, "requests and failures go together".into());
                continue;
            }
            if m.query.trim().is_empty() {
                err(&format!("{field}.query"), "must not be empty".into());
            }
            if m.min.is_none() && m.max.is_none() {
                err(&field, "needs max or min".into());
            }
            if let (Some(lo), Some(hi)) = (m.min, m.max)
                && lo > hi
            {
                err(&format!("{field}.min"), format!("{lo} is above max {hi}"));
            }
            for (name, v) in [("min", m.min), ("max", m.max)] {
                if v.is_some_and(|v| !v.is_finite()) {
                    err(&format!("{field}.{name}"), "must be a finite number".into());
                }
            }
            let failure_limit = match m.failure_limit {
                Some(n) if n < 0 => {
                    err(
                        &format!("{field}.failureLimit"),
                        format!("{n} must not be negative"),
                    );
                    0
                }
                Some(n) => n as u32,
                None => 0,
            };
            metrics.push(PlanMetric {
                name: m.name.clone(),
                query: m.query.clone(),
                min: m.min,
                max: m.max,
                failure_limit,
            });
        }
    }

    // Router-specific checks.
    let caps = capabilities(router);
    if let Some(max) = caps.max_header_routes {
        let most = (0..steps.len())
            .map(|i| {
                let mut names: Vec<&str> = Vec::new();
                for s in steps.iter().take(i + 1) {
                    if let PlanStep::HeaderRoute(r) = s {
                        let r = &routes[*r as usize];
                        names.retain(|n| *n != r.name);
                        if !r.matches.is_empty() {
                            names.push(&r.name);
                        }
                    }
                }
                names.len()
            })
            .max()
            .unwrap_or(0);
        if most > max && errors_from_routes.is_empty() {
            err(
                "spec.steps",
                format!(
                    "the {router} router can hold at most {max} header route(s) at once ({most} requested)"
                ),
            );
        }
    }
    if router == "replicas"
        && (spec.stable.deployment.is_none() || spec.canary.deployment.is_none())
    {
        err(
            "spec.trafficRouting.replicas",
            "the replicas router needs spec.stable.deployment and spec.canary.deployment".into(),
        );
    }
    if spec.traffic_routing.count() > 1 {
        err(
            "spec.trafficRouting",
            "exactly one traffic router must be set".into(),
        );
    }
    let stable_scale_down_after = match spec.stable.scale_down_after.as_deref().map(parse_duration)
    {
        None => None,
        Some(Ok(d)) => {
            if spec.stable.deployment.is_none() {
                err(
                    "spec.stable.scaleDownAfter",
                    "needs spec.stable.deployment".into(),
                );
            }
            Some(d)
        }
        Some(Err(e)) => {
            err("spec.stable.scaleDownAfter", e);
            None
        }
    };
    let pause_deadline = match spec.pause_deadline.as_deref().map(parse_duration) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            err("spec.pauseDeadline", e);
            None
        }
    };
    if spec.canary.scale_down_on_rollback && spec.canary.deployment.is_none() {
        err(
            "spec.canary.scaleDownOnRollback",
            "needs spec.canary.deployment".into(),
        );
    }
    if spec.canary.scale_down_after.is_some() {
        err(
            "spec.canary.scaleDownAfter",
            "applies to spec.stable only".into(),
        );
    }
    if spec.stable.scale_down_on_rollback {
        err(
            "spec.stable.scaleDownOnRollback",
            "applies to spec.canary only".into(),
        );
    }
    errors.extend(errors_from_routes);
    let checks = super::checks::compile(&spec.checks).unwrap_or_else(|e| {
        errors.extend(e);
        Vec::new()
    });
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Plan {
        steps,
        interval,
        metrics,
        compare,
        confidence,
        rollback_confidence: rollback_confidence
            .unwrap_or(DEFAULT_ROLLBACK_CONFIDENCE.min(confidence)),
        max_extra_failures,
        consecutive_error_limit: consecutive_error_limit.unwrap_or_else(|| {
            DEFAULT_ERROR_WINDOW
                .as_millis()
                .div_ceil(interval.as_millis().max(1))
                .clamp(1, 1000) as u32
        }),
        prometheus,
        paused: spec.paused,
        canary_ref: version_ref_key(&spec.canary),
        routes,
        blue_green,
        stable_scale_down_after,
        canary_scale_down_on_rollback: spec.canary.scale_down_on_rollback,
        pause_deadline,
        router,
        checks,
    })
}

/// 5, 33, 50, 100 with a pause after each.
pub fn default_steps() -> Vec<PlanStep> {
    DEFAULT_WEIGHTS
        .iter()
        .flat_map(|w| {
            [
                PlanStep::SetWeight(*w),
                PlanStep::Pause(Some(DEFAULT_PAUSE)),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests;
