//! Pure builders of status conditions, and the single status write.
//!
//! Conditions follow the Kubernetes convention (type, status, reason in
//! PascalCase, message, lastTransitionTime, observedGeneration); the
//! transition time only moves when the condition's status changes, so
//! `kubectl wait --for=condition=Completed` behaves.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::api::{FIELD_MANAGER, Phase, Rollout, RolloutStatus};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const PAUSED: &str = "Paused";
pub const COMPLETED: &str = "Completed";
pub const ROLLED_BACK: &str = "RolledBack";

/// Whether the spec and its references are usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Reason (PascalCase, e.g. `InvalidSpec`, `ReferenceNotFound`) and a
    /// message that names the field.
    NotReady {
        reason: &'static str,
        message: String,
    },
}

/// Set (or replace) a condition, keeping its transition time when its
/// status does not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: i64,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let now = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(now);
    let cond = Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: truncate(message, 1024),
        observed_generation: Some(generation),
        last_transition_time,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => *c = cond,
        None => conditions.push(cond),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Fill the five conditions from the status the engine produced.
/// `reason`/`message` are those of the latest decision.
pub fn build_conditions(
    status: &mut RolloutStatus,
    readiness: &Readiness,
    reason: &str,
    message: &str,
    generation: i64,
    now: Timestamp,
) {
    let mut c = std::mem::take(&mut status.conditions);
    match readiness {
        Readiness::Ready => set_condition(
            &mut c,
            READY,
            true,
            "Valid",
            "spec is valid and its references exist",
            generation,
            now,
        ),
        Readiness::NotReady { reason, message } => {
            set_condition(&mut c, READY, false, reason, message, generation, now)
        }
    }
    let phase = status.phase;
    let (progressing, p_reason) = match phase {
        Phase::Pending | Phase::Progressing | Phase::Paused => (true, reason),
        Phase::Succeeded => (false, "Succeeded"),
        Phase::RolledBack => (false, "RolledBack"),
        Phase::Aborted => (false, "Aborted"),
        Phase::Invalid => (false, "Invalid"),
    };
    set_condition(
        &mut c,
        PROGRESSING,
        progressing,
        p_reason,
        message,
        generation,
        now,
    );
    let paused_reason = if phase == Phase::Paused {
        reason
    } else {
        "NotPaused"
    };
    set_condition(
        &mut c,
        PAUSED,
        phase == Phase::Paused,
        paused_reason,
        if phase == Phase::Paused { message } else { "" },
        generation,
        now,
    );
    let (completed_reason, completed_msg) = match phase {
        Phase::Succeeded => (
            status
                .last_decision
                .as_ref()
                .map(|d| d.reason.as_str())
                .unwrap_or("AllStepsDone")
                .to_string(),
            message.to_string(),
        ),
        _ => ("NotCompleted".to_string(), String::new()),
    };
    set_condition(
        &mut c,
        COMPLETED,
        phase == Phase::Succeeded,
        &completed_reason,
        &completed_msg,
        generation,
        now,
    );
    let rolled_back = matches!(phase, Phase::RolledBack | Phase::Aborted);
    let (rb_reason, rb_msg) = if rolled_back {
        (
            status
                .last_decision
                .as_ref()
                .map(|d| d.reason.clone())
                .unwrap_or_else(|| phase.as_str().to_string()),
            message.to_string(),
        )
    } else {
        ("NotRolledBack".to_string(), String::new())
    };
    set_condition(
        &mut c,
        ROLLED_BACK,
        rolled_back,
        &rb_reason,
        &rb_msg,
        generation,
        now,
    );
    status.conditions = c;
}

/// The single status write: server-side apply on the status subresource
/// with our field manager, with the resourceVersion we read as a
/// precondition, so a status computed from a stale read is rejected (409)
/// instead of winding the rollout back.
pub async fn write_status(
    api: &Api<Rollout>,
    name: &str,
    resource_version: Option<&str>,
    status: &RolloutStatus,
) -> Result<Rollout, kube::Error> {
    let mut metadata = json!({ "name": name });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    let patch = json!({
        "apiVersion": "rollwise.io/v1alpha1",
        "kind": "Rollout",
        "metadata": metadata,
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &Patch::Apply(&patch)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut c = Vec::new();
        set_condition(
            &mut c,
            READY,
            true,
            "Valid",
            "ok",
            1,
            t("2026-01-01T00:00:00Z"),
        );
        set_condition(
            &mut c,
            READY,
            true,
            "Valid",
            "still ok",
            2,
            t("2026-01-01T01:00:00Z"),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time.0, t("2026-01-01T00:00:00Z"));
        assert_eq!(c[0].message, "still ok");
        assert_eq!(c[0].observed_generation, Some(2));
        set_condition(
            &mut c,
            READY,
            false,
            "InvalidSpec",
            "spec.steps[1]: bad",
            3,
            t("2026-01-01T02:00:00Z"),
        );
        assert_eq!(c[0].last_transition_time.0, t("2026-01-01T02:00:00Z"));
        assert_eq!(c[0].status, "False");
    }

    #[test]
    fn succeeded_sets_completed_and_clears_progressing() {
        let mut st = RolloutStatus {
            phase: Phase::Succeeded,
            ..Default::default()
        };
        build_conditions(
            &mut st,
            &Readiness::Ready,
            "AllStepsDone",
            "done",
            1,
            t("2026-01-01T00:00:00Z"),
        );
        let get = |ty: &str| {
            st.conditions
                .iter()
                .find(|c| c.type_ == ty)
                .unwrap()
                .clone()
        };
        assert_eq!(get(COMPLETED).status, "True");
        assert_eq!(get(PROGRESSING).status, "False");
        assert_eq!(get(ROLLED_BACK).status, "False");
        assert_eq!(get(READY).status, "True");
        assert_eq!(st.conditions.len(), 5);
    }

    #[test]
    fn rolled_back_condition_carries_the_reason() {
        let mut st = RolloutStatus {
            phase: Phase::RolledBack,
            last_decision: Some(crate::api::DecisionRecord {
                kind: "Rollback".into(),
                reason: "AnalysisFailed".into(),
                message: "m".into(),
                at: None,
            }),
            ..Default::default()
        };
        build_conditions(
            &mut st,
            &Readiness::Ready,
            "RolledBack",
            "error-rate = 0.2",
            1,
            t("2026-01-01T00:00:00Z"),
        );
        let rb = st
            .conditions
            .iter()
            .find(|c| c.type_ == ROLLED_BACK)
            .unwrap();
        assert_eq!(
            (rb.status.as_str(), rb.reason.as_str()),
            ("True", "AnalysisFailed")
        );
        assert!(rb.message.contains("0.2"));
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let s = "é".repeat(1000);
        let out = truncate(&s, 1024);
        assert!(out.len() <= 1024 + '…'.len_utf8());
    }
}
