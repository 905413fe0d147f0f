//! The Rollout's spec: what a person writes, with the admission rules
//! (CEL and schema bounds) the API server checks.

use super::RolloutStatus;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A progressive rollout of one service from its stable (old) version to its
/// canary (new) version.
// clippy reads the repeated `type_ = "string"` of the printcolumn entries
// (one per column, as kube-derive wants them) as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "rollwise.io",
    version = "v1alpha1",
    kind = "Rollout",
    plural = "rollouts",
    singular = "rollout",
    shortname = "rw",
    category = "rollwise",
    namespaced,
    derive = "Default",
    status = "RolloutStatus",
    doc = "A progressive rollout: moves traffic from the stable to the canary version step by step, checking metrics at every step.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Step", type_ = "string", json_path = ".status.step"),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".status.canaryWeight",
        description = "canary weight the router carries (read back)"
    ),
    printcolumn(
        name = "Verdict",
        type_ = "string",
        json_path = ".status.verdict",
        description = "latest analysis verdict"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1
    ),
    printcolumn(
        name = "Waiting-For",
        type_ = "string",
        json_path = ".status.waitingFor",
        description = "the dependency (spec.dependsOn) this Rollout waits for",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[kube(validation = Rule::new("!has(self.spec.dependsOn) || self.spec.dependsOn.all(d, d.name != self.metadata.name || has(d.__namespace__))").message("a Rollout cannot depend on itself (spec.dependsOn names this Rollout)").field_path(".spec.dependsOn"))]
#[x_kube(validation = Rule::new("self.stable.service != self.canary.service").message("spec.stable.service and spec.canary.service must differ").field_path(".canary.service"))]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// The old version: receives all traffic before the rollout starts.
    pub stable: VersionRef,
    /// The new version: receives traffic step by step.
    pub canary: VersionRef,
    /// The traffic router that fronts both versions (exactly one).
    pub traffic_routing: TrafficRouting,
    /// Blue/green instead of a weighted canary (then `steps` must be empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenStrategy>,
    /// The steps. Default: setWeight 5, 33, 50, 100, each followed by a 5m pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_STEPS))]
    #[x_kube(validation = Rule::new(non_decreasing_weights_rule()).message("setWeight steps must not decrease"))]
    pub steps: Option<Vec<Step>>,
    /// Metrics checked while the canary receives traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSpec>,
    /// Pause the rollout by hand: no step advances while true (analysis keeps
    /// running, so a failing canary is still rolled back).
    #[serde(default)]
    pub paused: bool,
    /// How long the rollout may wait for a person (`paused: true`, or a
    /// `pause: {}` step waiting for promote) before it reports
    /// `Stalled=True` (reason `PauseDeadlineExceeded`), so that Helm's
    /// `--wait`, Flux and Argo CD see a failure instead of waiting forever.
    /// Unset: no deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')").message("pauseDeadline must look like 30s, 10m or 1h"))]
    pub pause_deadline: Option<String>,
    /// Where to tell people about this Rollout's transitions (in addition to
    /// the operator-wide webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<NotificationSpec>,
    /// Webhook and Job checks run before any traffic moves, at each step,
    /// before the final promotion or after a rollback (docs/checks.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d.name == c.name))").message("check names must be unique"))]
    pub checks: Vec<super::CheckSpec>,
    /// Other Rollouts this one waits for (see docs/dependencies.md): before
    /// any traffic moves, or before a given step. (`namespace` is a CEL
    /// keyword: the rules read it as `__namespace__`.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = super::depend::MAX_DEPENDENCIES))]
    #[x_kube(validation = Rule::new("self.all(x, self.exists_one(y, y.name == x.name && (has(y.__namespace__) ? y.__namespace__ : '') == (has(x.__namespace__) ? x.__namespace__ : '') && (has(y.beforeStep) ? y.beforeStep : 0) == (has(x.beforeStep) ? x.beforeStep : 0)))").message("each Rollout may appear only once per beforeStep in dependsOn"))]
    pub depends_on: Option<Vec<super::depend::DependencySpec>>,
}

/// The most steps a Rollout may have (`maxItems` of `spec.steps`).
pub const MAX_STEPS: usize = 64;

/// The CEL rule "setWeight steps never decrease": for two setWeight steps at
/// indexes i < j, `steps[i].setWeight <= steps[j].setWeight`.
///
/// CEL on Kubernetes 1.28 has no index range, so the indexes are a literal
/// list `[0, 1, ..., MAX_STEPS - 1]`. The forms that read better do not work:
/// the 1.28 cost estimator puts `filter(..).map(..).isSorted()` over 100x the
/// budget and refuses the whole CRD; and position by `indexOf(step)`
/// compares whole steps (a repeated step such as `[20, 50, 20]` finds the
/// first copy and passes; a 64-step Rollout with long header-route values
/// exceeds the runtime cost limit). This form reads integers by index only:
/// at most 64 x 64 cheap comparisons whatever the steps hold.
fn non_decreasing_weights_rule() -> String {
    let indexes = (0..MAX_STEPS)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[{indexes}].all(i, i >= size(self) || !has(self[i].setWeight) || \
         [{indexes}].all(j, j <= i || j >= size(self) || !has(self[j].setWeight) || \
         self[i].setWeight <= self[j].setWeight))"
    )
}

/// Per-Rollout notification targets.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NotificationSpec {
    /// Webhooks called on transitions.
    #[serde(default)]
    #[schemars(length(max = 8))]
    pub webhooks: Vec<WebhookSpec>,
}

/// A webhook. Its URL is read from a Secret in the Rollout's namespace.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// Name shown in logs and metrics.
    #[schemars(length(max = 63))]
    pub name: String,
    /// The Secret key holding the URL.
    pub url_from: SecretKeyRef,
    /// `json` (default) or `slack` (a Slack-compatible `text` payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == 'json' || self == 'slack'").message("format must be json or slack"))]
    #[schemars(length(max = 8))]
    pub format: Option<String>,
    /// Which transitions to send (default: all): Started, StepAdvanced,
    /// Paused, AnalysisFailed, RolledBack, Promoted, Aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8))]
    pub events: Option<Vec<String>>,
}

/// A key of a Secret in the Rollout's namespace.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(max = 253))]
    pub name: String,
    #[schemars(length(max = 253))]
    pub key: String,
}

/// One version of the service.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VersionRef {
    /// The Service that selects this version's pods.
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("must be a Service name: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit (a DNS-1035 label)"))]
    #[schemars(length(max = 63))]
    pub service: String,
    /// The Deployment that runs this version (optional): when set, traffic is
    /// only shifted to the canary once it is fully available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("must be a Deployment name: dot-separated parts of lowercase letters, digits and '-', each starting and ending with a letter or digit (a DNS-1123 subdomain)"))]
    #[schemars(length(max = 253))]
    pub deployment: Option<String>,
    /// Stable only, opt-in: after a promotion, wait this long (Go duration),
    /// then scale the old version's Deployment to zero. Its replica count is
    /// kept in the annotation `rollwise.io/scaled-down-from` so `retry` or an
    /// undo can restore it. Nothing is ever deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')").message("scaleDownAfter must look like 30s, 10m or 1h"))]
    pub scale_down_after: Option<String>,
    /// Canary only, opt-in: scale the canary's Deployment to zero after a
    /// rollback or abort (restored on `retry`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scale_down_on_rollback: bool,
}

/// Where traffic is shifted. Exactly one router must be set.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.gatewayAPI), has(self.nginx), has(self.istio), has(self.smi), has(self.traefik), has(self.replicas)].filter(x, x).size() == 1").message("exactly one traffic router must be set (gatewayAPI, nginx, istio, smi, traefik or replicas)"))]
pub struct TrafficRouting {
    /// Gateway API: weights on the backendRefs of an HTTPRoute.
    #[serde(
        rename = "gatewayAPI",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApiRouting>,
    /// ingress-nginx: a canary Ingress (created and owned by rollwise) next
    /// to the user's Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx: Option<NginxRouting>,
    /// Istio: destination weights in the HTTP routes of a VirtualService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<IstioRouting>,
    /// SMI TrafficSplit (Linkerd), created and owned when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smi: Option<SmiRouting>,
    /// Traefik: a TraefikService with weighted services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traefik: Option<TraefikRouting>,
    /// No router: one Service selects both versions' pods and the split
    /// follows replica counts (the only router that scales Deployments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "empty_object_schema")]
    pub replicas: Option<ReplicasRouting>,
}

impl TrafficRouting {
    /// The router's name as in the spec (`gatewayAPI`, `nginx`, ...).
    pub fn kind(&self) -> Option<&'static str> {
        if self.gateway_api.is_some() {
            Some("gatewayAPI")
        } else if self.nginx.is_some() {
            Some("nginx")
        } else if self.istio.is_some() {
            Some("istio")
        } else if self.smi.is_some() {
            Some("smi")
        } else if self.traefik.is_some() {
            Some("traefik")
        } else if self.replicas.is_some() {
            Some("replicas")
        } else {
            None
        }
    }

    /// How many routers are set (exactly one is valid).
    pub fn count(&self) -> usize {
        [
            self.gateway_api.is_some(),
            self.nginx.is_some(),
            self.istio.is_some(),
            self.smi.is_some(),
            self.traefik.is_some(),
            self.replicas.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count()
    }
}

/// ingress-nginx canary routing.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NginxRouting {
    /// The user's Ingress that sends traffic to the stable Service.
    #[schemars(length(max = 253))]
    pub ingress: String,
}

/// Istio routing.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IstioRouting {
    /// The VirtualService in the Rollout's namespace.
    #[schemars(length(max = 253))]
    pub virtual_service: String,
    /// Names of its HTTP routes to drive (default: every route with a
    /// destination on the stable host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub routes: Option<Vec<String>>,
    /// Subset-based routing: one host with stable/canary subsets of a
    /// DestinationRule (default: host-based, the two Services as hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsets: Option<IstioSubsets>,
}

/// Subset-based Istio routing.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IstioSubsets {
    /// The destination host (default: the stable Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub host: Option<String>,
    #[schemars(length(max = 63))]
    pub stable: String,
    #[schemars(length(max = 63))]
    pub canary: String,
}

/// SMI routing.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SmiRouting {
    /// The TrafficSplit (created and owned by rollwise when missing).
    #[schemars(length(max = 253))]
    pub traffic_split: String,
    /// The root (apex) Service clients call (default: the stable Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub root_service: Option<String>,
}

/// Traefik routing.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TraefikRouting {
    /// The TraefikService (`traefik.io/v1alpha1`) whose `weighted.services`
    /// list the stable and canary Services.
    #[schemars(length(max = 253))]
    pub weighted_service: String,
}

/// Replica-ratio routing (no router). Needs both Deployments.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReplicasRouting {}

/// Gateway API routing: the rules of `httpRoute` that reference the stable
/// Service get weight `100-w` for stable and `w` for canary.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiRouting {
    /// Name of an HTTPRoute in the Rollout's namespace.
    #[x_kube(validation = Rule::new("size(self) > 0 && size(self) <= 253").message("must be an HTTPRoute name"))]
    #[schemars(length(max = 253))]
    pub http_route: String,
}

/// One step: exactly one of `setWeight`, `pause` or `setHeaderRoute`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.setWeight), has(self.pause), has(self.setHeaderRoute)].filter(x, x).size() == 1").message("a step sets exactly one of setWeight, pause or setHeaderRoute (a pause until promoted is `pause: {}`)"))]
pub struct Step {
    /// Send this percentage (0-100) of traffic to the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("setWeight must be between 0 and 100"))]
    pub set_weight: Option<i32>,
    /// Wait: for `duration` when given, otherwise until a manual promote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseStep>,
    /// Send requests that match (a header or a cookie) to the canary,
    /// whatever the weight. Without `match`, removes the named route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_header_route: Option<HeaderRouteStep>,
}

/// An A/B route for chosen users.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HeaderRouteStep {
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("route name must be lowercase letters, digits and '-', starting with a letter and ending with a letter or digit (a DNS-1035 label)"))]
    pub name: String,
    /// All must match (AND). Empty or absent: remove the route.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub matches: Vec<RouteMatch>,
}

/// One match: a header or a cookie with an exact value.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.header) != has(self.cookie)").message("a match is either a header or a cookie"))]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<NameValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<NameValue>,
}

/// A name and an exact value.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NameValue {
    #[schemars(length(max = 256))]
    pub name: String,
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// Blue/green: the new version gets only preview traffic (its own Service,
/// and header routes if any) while the analysis runs, then one switch moves
/// 100% to it.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenStrategy {
    /// Switch automatically once the analysis passes (default true); when
    /// false, wait for `rollwise.io/action: promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promote: Option<bool>,
    /// How long the preview runs at least before an automatic switch (Go
    /// duration, default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')").message("previewDuration must look like 30s, 10m or 1h"))]
    pub preview_duration: Option<String>,
    /// A header route that sends chosen users to the new version during the
    /// preview (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_route: Option<HeaderRouteStep>,
    /// After the switch, keep the old version's pods this long (so moving
    /// traffic back by hand, e.g. by editing the route or starting a new
    /// rollout to it, finds them ready) before `stable.scaleDownAfter` may
    /// drain it (default 30s). A finished rollout cannot be aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')").message("scaleDownDelay must look like 30s, 10m or 1h"))]
    pub scale_down_delay: Option<String>,
}

/// A pause step. Without `duration` it waits for `rollwise.io/action: promote`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PauseStep {
    /// How long to wait, as a Go duration (`30s`, `2m`, `1h30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')").message("duration must look like 30s, 2m or 1h30m"))]
    #[schemars(length(max = 32))]
    pub duration: Option<String>,
}

/// Metric analysis run every `interval` while the canary receives traffic.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    /// How often metrics are evaluated (Go duration). Default 30s; 5s when
    /// there are only `compare` entries (their test is valid at every look,
    /// so looking often costs queries, not false rollbacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1s')").message("interval must be a duration of at least 1s, like 30s, 2m or 1h30m"))]
    #[schemars(length(max = 32))]
    pub interval: Option<String>,
    /// The Prometheus server to query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSpec>,
    /// Threshold metrics: a value outside [min, max] is a failed evaluation.
    #[serde(default)]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(m, self.exists_one(n, n.name == m.name))").message("metric names must be unique"))]
    pub metrics: Vec<MetricSpec>,
    /// Consecutive query errors (backend down, query rejected) tolerated:
    /// when this many evaluations in a row errored, the canary is rolled
    /// back. Default: the looks in 2 minutes (4 at a 30s interval, 24 at
    /// 5s). Errors alone never count as failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("consecutiveErrorLimit must be between 1 and 1000"))]
    pub consecutive_error_limit: Option<i32>,
    /// Canary-vs-stable comparisons on the same window, decided by a
    /// sequential test that is valid at every look.
    #[serde(default)]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.all(m, self.exists_one(n, n.name == m.name))").message("compare names must be unique"))]
    pub compare: Vec<CompareSpec>,
    /// Confidence a promotion on the comparisons' evidence needs (default
    /// 0.99): the chance of promoting, on the evidence that it is fine, a
    /// canary worse than tolerated is at most `1 - confidence`, however
    /// often it looks. The bounds the ramp and the exposure budget use are
    /// at this confidence too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.5 && self < 1.0").message("confidence must be in [0.5, 1)"))]
    pub confidence: Option<f64>,
    /// Confidence a rollback on the comparisons' evidence needs (default
    /// 0.95, or `confidence` when that is lower): the chance of rolling back
    /// a canary that is within tolerance is at most `1 - rollbackConfidence`.
    /// Lower than `confidence` because a wrong rollback leaves all traffic
    /// on the version that was serving it, while a wrong promotion sends
    /// all traffic to a worse one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.5 && self < 1.0").message("rollbackConfidence must be in [0.5, 1)"))]
    pub rollback_confidence: Option<f64>,
    /// Exposure budget: failed requests the canary may cost beyond what the
    /// stable version would have failed. Rolled back before it is spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("maxExtraFailures must be at least 1"))]
    pub max_extra_failures: Option<i64>,
}

/// A comparison of canary and stable: two counting queries run for both
/// Services on the same window.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CompareSpec {
    /// Name shown in status and events.
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?$')").message("compare name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))]
    pub name: String,
    /// PromQL counting requests in the window, e.g.
    /// `sum(increase(http_requests_total{service="{{service}}"}[{{window}}]))`.
    #[schemars(length(max = 8192))]
    #[x_kube(validation = Rule::new("self.contains('{{service}}') || self.contains('{{ service }}')").message("the requests query must use {{service}} (it runs once for the canary and once for the stable Service)"))]
    pub requests: String,
    /// PromQL counting failed requests in the same window.
    #[schemars(length(max = 8192))]
    #[x_kube(validation = Rule::new("self.contains('{{service}}') || self.contains('{{ service }}')").message("the failures query must use {{service}} (it runs once for the canary and once for the stable Service)"))]
    pub failures: String,
    /// How much worse the canary may be and still count as fine: an absolute
    /// error rate (`0.005`) or relative to stable (`"20%"`). Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "tolerance_schema")]
    pub tolerance: Option<serde_json::Value>,
}

/// Where the Prometheus HTTP API is.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSpec {
    /// Base URL, e.g. `http://prometheus.monitoring:9090`.
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("address must be an http:// or https:// URL"))]
    #[schemars(length(max = 2048))]
    pub address: String,
}

/// A threshold metric, in one of two forms:
/// - counted: `requests` and `failures` queries with `max`, the highest
///   tolerated error rate. The canary's counts are judged by the same
///   sequential evidence as `compare`, against the fixed limit: rolled back
///   as soon as the evidence says it fails more often than `max`, fine
///   once it says it does not. Use it for error rates.
/// - a `query` that yields one number, with `max` and/or `min`, judged at
///   every look; `failureLimit` failed looks are tolerated. Use it for what
///   cannot be counted: latency quantiles, saturation.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.max) || has(self.min)").message("a metric needs max or min"))]
#[x_kube(validation = Rule::new("!has(self.max) || !has(self.min) || self.min <= self.max").message("min must not exceed max"))]
#[x_kube(validation = Rule::new("has(self.query) != has(self.requests)").message("a metric has either query, or requests and failures"))]
#[x_kube(validation = Rule::new("has(self.requests) == has(self.failures)").message("requests and failures go together"))]
#[x_kube(validation = Rule::new("!has(self.requests) || (has(self.max) && !has(self.min) && self.max >= 0.0 && self.max < 1.0)").message("a counted metric (requests and failures) needs max, an error rate in [0, 1), and no min"))]
#[x_kube(validation = Rule::new("!has(self.requests) || !has(self.failureLimit)").message("failureLimit does not apply to a counted metric: its evidence decides"))]
pub struct MetricSpec {
    /// Name shown in status and events.
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?$')").message("metric name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))]
    #[schemars(length(max = 63))]
    pub name: String,
    /// PromQL that yields one number; `{{service}}`, `{{namespace}}` and
    /// `{{rollout}}` are replaced (service = the canary Service).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[x_kube(validation = Rule::new("self.matches('\\\\S')").message("query must not be empty"))]
    #[schemars(length(max = 8192))]
    pub query: String,
    /// Counted form: PromQL for the number of the canary's requests in
    /// `{{window}}` (e.g. `sum(increase(http_requests_total{service="{{service}}"}[{{window}}]))`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('\\\\S')").message("requests must not be empty"))]
    #[schemars(length(max = 8192))]
    pub requests: Option<String>,
    /// Counted form: PromQL for the number of those requests that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('\\\\S')").message("failures must not be empty"))]
    #[schemars(length(max = 8192))]
    pub failures: Option<String>,
    /// Highest healthy value (inclusive); for a counted metric, the highest
    /// tolerated error rate (failures / requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Lowest healthy value (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Failed evaluations tolerated; one more rolls back. Default 0. Not
    /// for a counted metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 1000").message("failureLimit must be between 0 and 1000"))]
    pub failure_limit: Option<i32>,
}

/// `{}` and nothing else. An object schema without properties cannot be
/// read by the API server's CEL (`has(self.replicas)` fails with "invalid
/// object type, expected either Properties or AdditionalProperties"), so it
/// is declared as a map that may hold no entry.
fn empty_object_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "additionalProperties": {"type": "string"},
        "maxProperties": 0
    })
}

fn tolerance_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    // A number or a string: structural schemas allow an untyped node only
    // with x-kubernetes-preserve-unknown-fields. The value is checked by the
    // operator (Ready=False naming the field), not by a CEL rule: CEL's
    // `type()` on an untyped value cannot be verified before a real API
    // server sees it.
    schemars::json_schema!({
        "description": "An absolute error rate (0.005) or a relative one (\"20%\").",
        "x-kubernetes-preserve-unknown-fields": true
    })
}
