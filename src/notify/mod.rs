//! Notifications on rollout transitions: webhooks told when a rollout
//! starts, advances, pauses, is rolled back, promoted or aborted.
//!
//! Two layers:
//! - this module is pure: which transitions are worth a notification
//!   ([`notifications_for`]), which webhook wants which ([`wants`]) and the
//!   two payload formats ([`Notification::json_payload`],
//!   [`Notification::slack_payload`]);
//! - [`Notifier`] delivers them from one background task fed by a bounded
//!   queue, so reconciliation never waits for a webhook.
//!
//! A rollback caused by the analysis (a threshold metric: `AnalysisFailed`;
//! the canary-vs-stable comparison: `CanaryWorse`; the exposure budget:
//! `BudgetExhausted`; unreadable metrics: `MetricsUnavailable`) is ONE
//! notification of kind [`NotificationKind::RolledBack`] that also
//! counts as [`NotificationKind::AnalysisFailed`]: a webhook filtering on
//! either receives it, once, with the analysis numbers (metrics,
//! comparisons and budget). (The engine rolls
//! back on every analysis failure, so a separate "analysis failed" message
//! would only repeat the rollback.)

mod deliver;

pub(crate) use deliver::{DeliveryError, read_url_from_secret};
pub use deliver::{Notifier, NotifierOptions};

use jiff::Timestamp;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::analysis::fmt_num;
use crate::api::{
    BudgetStatus, ComparisonStatus, MetricStatus, Phase, Rollout, RolloutStatus, WebhookSpec,
};
use crate::plan::{Reason, Transition};

/// What happened, as users name it in `spec.notifications.webhooks[].events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    Started,
    StepAdvanced,
    Paused,
    AnalysisFailed,
    RolledBack,
    Promoted,
    Aborted,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 7] = [
        Self::Started,
        Self::StepAdvanced,
        Self::Paused,
        Self::AnalysisFailed,
        Self::RolledBack,
        Self::Promoted,
        Self::Aborted,
    ];

    /// The PascalCase name used in `events` filters and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "Started",
            Self::StepAdvanced => "StepAdvanced",
            Self::Paused => "Paused",
            Self::AnalysisFailed => "AnalysisFailed",
            Self::RolledBack => "RolledBack",
            Self::Promoted => "Promoted",
            Self::Aborted => "Aborted",
        }
    }

    /// Parse an `events` entry (ASCII case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }

    /// The notification a transition reason gives, if any. Every reason is
    /// named here (no catch-all), so a new reason must be decided on: the
    /// rollbacks by the analysis (threshold metrics, the comparison, the
    /// budget, unreadable metrics) give [`RolledBack`](Self::RolledBack);
    /// see [`kinds_for_reason`](Self::kinds_for_reason) for every kind such
    /// a notification counts as.
    pub fn from_reason(reason: Reason) -> Option<Self> {
        use Reason::*;
        match reason {
            RolloutStarted | NewCanary | Retry => Some(Self::Started),
            WeightChanged | StepAdvanced => Some(Self::StepAdvanced),
            Paused => Some(Self::Paused),
            AnalysisFailed | CanaryWorse | BudgetExhausted | MetricsUnavailable | CheckFailed => {
                Some(Self::RolledBack)
            }
            // Rolled back because a dependency was (not by its own analysis).
            DependencyFailed => Some(Self::RolledBack),
            Promoted | RolloutCompleted => Some(Self::Promoted),
            Aborted => Some(Self::Aborted),
            // Told by the transitions above (a decision's reason, not an
            // Event's), or not worth a message: an A/B route step, a hold,
            // a refused action, the drain after a promotion.
            Started | SetWeight | HeaderRouteSet | HeaderRouteRemoved | EvidenceFine
            | RiskBoundAllows | RiskBoundHolds | ManualPause | PausedBySpec | PromotedByHand
            | AllStepsDone | Completed | RolledBack | PauseInProgress | WaitingForCanary
            | WaitingForData | WaitingForAnalysis | WaitingForPass | NotEnoughEvidence
            | BudgetGuard | MetricsError | StableScaledDown | ActionRefused => None,
            // Checks: their Events say it; a failed check that rolls back
            // is told as RolledBack above.
            CheckRunning
            | WaitingForConfirm
            | CheckError
            | CheckStarted
            | CheckPassed
            | CheckAttemptFailed
            | PostRollbackCheckFailed => None,
            // Dependencies: a dependency's failure that rolls this one back
            // is told as RolledBack above.
            WaitingForDependency | DependencySatisfied | DependencyFailedHolding => None,
        }
    }

    /// Every kind a notification for this reason counts as, for `events`
    /// filters: a rollback by the analysis (any of the four) or by a failed check is both
    /// `AnalysisFailed` and `RolledBack`. Empty when the reason gives no
    /// notification.
    pub fn kinds_for_reason(reason: Reason) -> Vec<Self> {
        match Self::from_reason(reason) {
            // Rolled back for a dependency: not this rollout's analysis.
            Some(Self::RolledBack) if !reason.is_rollback() => vec![Self::RolledBack],
            Some(Self::RolledBack) => vec![Self::AnalysisFailed, Self::RolledBack],
            other => other.into_iter().collect(),
        }
    }

    fn emoji(self) -> &'static str {
        match self {
            Self::Started => "\u{1F680}",               // rocket
            Self::StepAdvanced => "\u{25B6}\u{FE0F}",   // play
            Self::Paused => "\u{23F8}\u{FE0F}",         // pause
            Self::AnalysisFailed => "\u{26A0}\u{FE0F}", // warning
            Self::RolledBack => "\u{23EA}",             // rewind
            Self::Promoted => "\u{2705}",               // check mark
            Self::Aborted => "\u{1F6D1}",               // stop sign
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Started => "rollout started",
            Self::StepAdvanced => "step advanced",
            Self::Paused => "paused",
            Self::AnalysisFailed => "analysis failed",
            Self::RolledBack => "rolled back",
            Self::Promoted => "promoted",
            Self::Aborted => "aborted",
        }
    }
}

impl std::fmt::Display for NotificationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The payload format of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The whole [`Notification`] as JSON (the default).
    #[default]
    Json,
    /// `{"text": "..."}`: Slack incoming webhooks, and the services that
    /// accept the same payload (Mattermost, Rocket.Chat, Teams workflows).
    Slack,
}

impl Format {
    /// `json` or `slack` (ASCII case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Some(Self::Json),
            "slack" => Some(Self::Slack),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Slack => "slack",
        }
    }
}

/// One notification: what happened to which Rollout, with the analysis
/// numbers that led to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub kind: NotificationKind,
    pub rollout: String,
    pub namespace: String,
    /// The phase after the transition.
    pub phase: Phase,
    /// The engine's transition reason (e.g. `CanaryWorse`).
    pub reason: Reason,
    pub message: String,
    /// "current/total".
    pub step: String,
    /// The canary weight the router carries after the transition.
    pub canary_weight: i32,
    /// The latest evaluation of each metric.
    pub analysis: Vec<MetricStatus>,
    /// The latest look of each canary-vs-stable comparison.
    pub comparisons: Vec<ComparisonStatus>,
    /// The exposure budget, when one is set.
    pub budget: Option<BudgetStatus>,
    pub at: Timestamp,
}

impl Notification {
    /// Every kind this notification counts as for `events` filters (its
    /// `kind` first).
    pub fn kinds(&self) -> Vec<NotificationKind> {
        let mut kinds = vec![self.kind];
        for k in NotificationKind::kinds_for_reason(self.reason) {
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        kinds
    }

    /// Does this notification pass an `events` filter? No filter, or an
    /// empty one, passes everything; names are matched ignoring ASCII case.
    pub fn matches(&self, events: Option<&[String]>) -> bool {
        match events {
            None | Some([]) => true,
            Some(events) => {
                let kinds = self.kinds();
                events
                    .iter()
                    .filter_map(|e| NotificationKind::parse(e))
                    .any(|k| kinds.contains(&k))
            }
        }
    }

    /// Title line words: what rolled back, for a rollback by the analysis
    /// ("canary worse than stable, rolled back").
    fn title(&self) -> String {
        let why = match self.reason {
            Reason::AnalysisFailed => NotificationKind::AnalysisFailed.title(),
            Reason::CanaryWorse => "canary worse than stable",
            Reason::BudgetExhausted => "exposure budget spent",
            Reason::MetricsUnavailable => "metrics unavailable",
            _ => return self.kind.title().to_string(),
        };
        format!("{why}, {}", NotificationKind::RolledBack.title())
    }

    /// The `json` format: every field, with the analysis as in the Rollout's
    /// status (`value`, `min`, `max`, `verdict`, `failures`, ...).
    pub fn json_payload(&self) -> Value {
        let analysis: Vec<Value> = self
            .analysis
            .iter()
            .map(|m| serde_json::to_value(m).unwrap_or(Value::Null))
            .collect();
        json!({
            "kind": self.kind.as_str(),
            "events": self.kinds().iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            "rollout": self.rollout,
            "namespace": self.namespace,
            "phase": self.phase.as_str(),
            "reason": self.reason.as_str(),
            "message": self.message,
            "step": self.step,
            "canaryWeight": self.canary_weight,
            "analysis": analysis,
            "comparisons": self.comparisons.iter().map(|c| serde_json::to_value(ComparisonStatus { state: None, ..c.clone() }).unwrap_or(Value::Null)).collect::<Vec<_>>(),
            "budget": self.budget.as_ref().map(|b| serde_json::to_value(b).unwrap_or(Value::Null)),
            "at": self.at.to_string(),
        })
    }

    /// The plain-text form used by the `slack` format (not escaped).
    pub fn text(&self) -> String {
        let mut out = format!(
            "{} {}/{}: {}\n{}\nphase {}, step {}, canary {}%",
            self.kind.emoji(),
            self.namespace,
            self.rollout,
            self.title(),
            self.message,
            self.phase.as_str(),
            if self.step.is_empty() {
                "-"
            } else {
                &self.step
            },
            self.canary_weight,
        );
        for m in &self.analysis {
            out.push_str("\n- ");
            out.push_str(&metric_line(m));
        }
        for c in &self.comparisons {
            out.push_str(&format!("\n- {}: {}", c.name, c.message));
        }
        if let Some(b) = &self.budget {
            out.push_str(&format!(
                "\n- budget: about {} extra failed requests (at most {}) of {}",
                fmt_num(b.used),
                fmt_num(b.upper),
                fmt_num(b.max)
            ));
        }
        out
    }

    /// The `slack` format: `{"text": "..."}` with an emoji per kind, the
    /// rollout, phase, message and each metric's value against its bound.
    pub fn slack_payload(&self) -> Value {
        json!({ "text": slack_escape(&self.text()) })
    }

    /// The payload in the given format.
    pub fn payload(&self, format: Format) -> Value {
        match format {
            Format::Json => self.json_payload(),
            Format::Slack => self.slack_payload(),
        }
    }
}

/// `error-rate = 0.031 vs <= 0.02: Fail (2 failed, limit 1)`.
fn metric_line(m: &MetricStatus) -> String {
    let value = match m.value {
        Some(v) => fmt_num(v),
        None => "no value".to_string(),
    };
    let bound = match (m.min, m.max) {
        (Some(lo), Some(hi)) => format!("within [{}, {}]", fmt_num(lo), fmt_num(hi)),
        (None, Some(hi)) => format!("<= {}", fmt_num(hi)),
        (Some(lo), None) => format!(">= {}", fmt_num(lo)),
        (None, None) => "unbounded".to_string(),
    };
    let mut line = format!(
        "{} = {value} vs {bound}: {} ({} failed, limit {})",
        m.name, m.verdict, m.failures, m.failure_limit
    );
    if m.value.is_none() && !m.message.is_empty() {
        line.push_str(": ");
        line.push_str(&m.message);
    }
    line
}

/// Slack reads `&`, `<` and `>` as control characters.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The notifications a reconcile's transitions give, in order, at most one
/// per kind (a promote on the last step reports `Promoted` and
/// `RolloutCompleted`: one `Promoted` notification). `status` is the status
/// after the decision was carried out (phase, step, read-back weight).
pub fn notifications_for(
    rollout: &Rollout,
    status: &RolloutStatus,
    transitions: &[Transition],
    at: Timestamp,
) -> Vec<Notification> {
    let mut out: Vec<Notification> = Vec::new();
    for t in transitions {
        let Some(kind) = NotificationKind::from_reason(t.reason) else {
            continue;
        };
        if let Some(existing) = out.iter_mut().find(|n| n.kind == kind) {
            if !existing.message.contains(&t.message) {
                existing.message.push_str("; ");
                existing.message.push_str(&t.message);
            }
            continue;
        }
        out.push(Notification {
            kind,
            rollout: rollout.name_any(),
            namespace: rollout.namespace().unwrap_or_default(),
            phase: status.phase,
            reason: t.reason,
            message: t.message.clone(),
            step: status.step.clone(),
            canary_weight: status.canary_weight,
            analysis: status.analysis.clone(),
            comparisons: status.comparisons.clone(),
            budget: status.budget.clone(),
            at,
        });
    }
    out
}

/// The Rollout's webhooks that want this notification.
pub fn wants<'a>(rollout: &'a Rollout, n: &Notification) -> Vec<&'a WebhookSpec> {
    rollout
        .spec
        .notifications
        .iter()
        .flat_map(|s| s.webhooks.iter())
        .filter(|w| n.matches(w.events.as_deref()))
        .collect()
}
