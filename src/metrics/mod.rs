//! The operator's own Prometheus metrics. Label sets are bounded: fixed
//! categories, phases and decision kinds; per-rollout series carry only
//! namespace and name (one series per Rollout, removed when it is deleted).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

mod per_rollout;

pub use per_rollout::{ALERTED_CONDITIONS, PerRollout};

use crate::api::Phase;
use crate::plan::{Class, Reason};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Reconciles by result (`ok`, `error`).
    pub reconciles: IntCounterVec,
    /// Reconcile errors by fixed category.
    pub errors: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    /// Rollouts per phase.
    pub phase: IntGaugeVec,
    /// Decisions by kind.
    pub decisions: IntCounterVec,
    /// Transitions (what Events and notifications tell) by reason and class.
    pub transitions: IntCounterVec,
    /// Analysis verdicts by verdict (Pass, Fail, NoData, Error, Inconclusive).
    pub verdicts: IntCounterVec,
    /// The operator's Kubernetes API requests by verb, resource and status
    /// code (counted by the client, see `controller::counted_client`).
    pub kube_requests: IntCounterVec,
    /// The per-Rollout series (weight, alerted conditions, analysis
    /// figures): see [`per_rollout`].
    pub per_rollout: PerRollout,
}

/// The prefix of every family's name.
const PREFIX: &str = "rollwise";

/// Families with a series only while its value is not 0 (absent from
/// `/metrics` when no Rollout has one): see [`PerRollout::set_status`].
pub const SPARSE_FAMILIES: [&str; 2] = [
    "rollwise_rollout_condition",
    "rollwise_analysis_consecutive_errors",
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some(PREFIX.into()), None).expect("static prefix is valid");
        let reconciles = IntCounterVec::new(
            Opts::new("reconciles_total", "Reconciles by result"),
            &["result"],
        )
        .expect("static");
        let errors = IntCounterVec::new(
            Opts::new("reconcile_errors_total", "Reconcile errors by category"),
            &["category"],
        )
        .expect("static");
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new("reconcile_duration_seconds", "Time spent in one reconcile")
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            &[],
        )
        .expect("static");
        let phase = IntGaugeVec::new(Opts::new("rollouts", "Rollouts by phase"), &["phase"])
            .expect("static");
        let decisions = IntCounterVec::new(
            Opts::new(
                "decisions_total",
                "Engine decisions by kind and reason (the rule that fired; a fixed set)",
            ),
            &["kind", "reason"],
        )
        .expect("static");
        let transitions = IntCounterVec::new(
            Opts::new(
                "transitions_total",
                "Rollout transitions by reason and class (start, step, pause, promotion, rollback, abort, other)",
            ),
            &["reason", "class"],
        )
        .expect("static");
        let verdicts = IntCounterVec::new(
            Opts::new("analysis_verdicts_total", "Metric evaluations by verdict"),
            &["verdict"],
        )
        .expect("static");
        let kube_requests = IntCounterVec::new(
            Opts::new(
                "kube_requests_total",
                "The operator's Kubernetes API requests by verb, resource and status code",
            ),
            &["verb", "resource", "code"],
        )
        .expect("static");
        let per_rollout = PerRollout::new();
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(kube_requests.clone()),
            Box::new(errors.clone()),
            Box::new(reconcile_duration.clone()),
            Box::new(phase.clone()),
            Box::new(decisions.clone()),
            Box::new(transitions.clone()),
            Box::new(verdicts.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        for p in Phase::ALL {
            phase.with_label_values(&[p.as_str()]).set(0);
        }
        for r in ["ok", "error"] {
            reconciles.with_label_values(&[r]);
        }
        // The controller's own categories start at 0 (dashboards and alerts
        // see the family before the first error; the router's categories
        // appear when they happen).
        for category in ["conflict", "forbidden", "kube_api", "timeout"] {
            errors.with_label_values(&[category]);
        }
        reconcile_duration.with_label_values::<&str>(&[]);
        // Every reason that ends a rollout starts at 0, so that a rate or
        // an alert on rollbacks by reason has a series before the first one.
        for r in Reason::ALL {
            if matches!(r.class(), Class::Rollback | Class::Abort | Class::Promotion) {
                transitions.with_label_values(&[r.as_str(), class_label(r.class())]);
            }
        }
        Metrics {
            registry,
            reconciles,
            errors,
            reconcile_duration,
            phase,
            decisions,
            transitions,
            verdicts,
            kube_requests,
            per_rollout,
        }
    }

    /// Count the transitions of one decision.
    pub fn record_transitions(&self, transitions: &[crate::plan::Transition]) {
        for t in transitions {
            self.transitions
                .with_label_values(&[t.reason.as_str(), class_label(t.reason.class())])
                .inc();
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        let mut text = String::from_utf8(buf).unwrap_or_default();
        self.per_rollout.encode(PREFIX, &mut text);
        text
    }

    /// Forget a deleted Rollout's series.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.per_rollout.forget(namespace, name);
    }
}

/// The `class` label of a transition.
fn class_label(c: Class) -> &'static str {
    match c {
        Class::Start => "start",
        Class::Step => "step",
        Class::Pause => "pause",
        Class::Promotion => "promotion",
        Class::Rollback => "rollback",
        Class::Abort => "abort",
        Class::Hold | Class::Settled | Class::Other => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_with_bounded_labels() {
        let m = Metrics::new();
        m.errors.with_label_values(&["route_not_found"]).inc();
        m.decisions
            .with_label_values(&["Advance", "StepAdvanced"])
            .inc();
        m.per_rollout.set_canary_weight("shop", "checkout", 33);
        let text = m.render();
        for family in [
            "rollwise_reconciles_total",
            "rollwise_reconcile_errors_total",
            "rollwise_rollouts",
            "rollwise_canary_weight_percent",
            "rollwise_decisions_total",
        ] {
            assert!(text.contains(family), "{family} missing");
        }
        assert!(
            text.contains(
                r#"rollwise_canary_weight_percent{namespace="shop",rollout="checkout"} 33"#
            )
        );
        assert!(text.contains(r#"rollwise_rollouts{phase="RolledBack"} 0"#));
        for reason in [
            "AnalysisFailed",
            "CanaryWorse",
            "BudgetExhausted",
            "MetricsUnavailable",
        ] {
            let series =
                format!(r#"rollwise_transitions_total{{class="rollback",reason="{reason}"}} 0"#);
            assert!(text.contains(&series), "{series} missing");
        }
        let status = crate::api::RolloutStatus {
            consecutive_errors: 2,
            conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: "Stalled".into(),
                status: "True".into(),
                reason: "Aborted".into(),
                message: String::new(),
                observed_generation: Some(1),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::UNIX_EPOCH,
                ),
            }],
            ..Default::default()
        };
        m.per_rollout.set_status("shop", "checkout", &status);
        let text = m.render();
        assert!(text.contains(
            r#"rollwise_rollout_condition{condition="Stalled",namespace="shop",rollout="checkout"} 1"#
        ));
        assert!(!text.contains(
            r#"rollwise_rollout_condition{condition="Paused",namespace="shop",rollout="checkout"}"#
        ));
        assert!(text.contains(
            r#"rollwise_analysis_consecutive_errors{namespace="shop",rollout="checkout"} 2"#
        ));
        // Back to no errors and no Stalled: the series go (sparse).
        m.per_rollout
            .set_status("shop", "checkout", &crate::api::RolloutStatus::default());
        let text = m.render();
        assert!(!text.contains("rollwise_rollout_condition{"), "{text}");
        assert!(
            !text.contains("rollwise_analysis_consecutive_errors{"),
            "{text}"
        );
        m.forget("shop", "checkout");
        assert!(m.per_rollout.is_empty());
        assert!(!m.render().contains(r#"rollout="checkout""#));
    }
}
