//! Pure builders of status conditions, and the single status write.
//!
//! Conditions follow the Kubernetes convention (type, status, reason in
//! PascalCase, message, lastTransitionTime, observedGeneration); the
//! transition time only moves when the condition's status changes, so
//! `kubectl wait --for=condition=Completed` behaves. `Ready`, `Reconciling`
//! and `Stalled` follow the kstatus conventions that Helm 4's `--wait`,
//! Flux and kpt read: Ready=True means the rollout succeeded.

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
/// kstatus: the rollout is in progress (abnormal-true).
pub const RECONCILING: &str = "Reconciling";
/// kstatus: the rollout failed or needs a person (abnormal-true).
pub const STALLED: &str = "Stalled";
/// `Stalled` reason: paused for a person longer than `spec.pauseDeadline`.
pub const PAUSE_DEADLINE_EXCEEDED: &str = "PauseDeadlineExceeded";

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

/// Where a Rollout stands in the terms of the kstatus conventions (Helm 4's
/// `--wait`, Flux, kpt): in progress, failed until a person acts, or done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// `Reconciling=True`: moving or holding; the reason of the latest
    /// decision (`PauseInProgress`, `WaitingForData`, `ManualPause`, …).
    InProgress { reason: String, message: String },
    /// `Stalled=True`: rolled back, aborted, invalid, or waiting for a
    /// person longer than `spec.pauseDeadline`. Nothing more happens
    /// without a person (or a new spec).
    Stalled { reason: String, message: String },
    /// `Ready=True`: all steps done, the canary carries all traffic.
    Done { reason: String, message: String },
}

impl Standing {
    pub fn reason(&self) -> &str {
        match self {
            Standing::InProgress { reason, .. }
            | Standing::Stalled { reason, .. }
            | Standing::Done { reason, .. } => reason,
        }
    }
    pub fn message(&self) -> &str {
        match self {
            Standing::InProgress { message, .. }
            | Standing::Stalled { message, .. }
            | Standing::Done { message, .. } => message,
        }
    }
}

/// When the Rollout began to wait for a person: the transition time of
/// `Paused=True`, if it is paused.
fn paused_since(conditions: &[Condition]) -> Option<Timestamp> {
    conditions
        .iter()
        .find(|c| c.type_ == PAUSED && c.status == "True")
        .map(|c| c.last_transition_time.0)
}

/// How long is left until a Rollout that waits for a person passes
/// `spec.pauseDeadline` (None: not paused, no deadline, or already past).
/// The controller looks at the Rollout again then, to report `Stalled`.
pub fn pause_deadline_left(
    status: &RolloutStatus,
    deadline: Option<std::time::Duration>,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let deadline = deadline?;
    if status.phase != Phase::Paused {
        return None;
    }
    let since = paused_since(&status.conditions)?;
    let waited = waited(since, now);
    deadline.checked_sub(waited).filter(|d| !d.is_zero())
}

fn waited(since: Timestamp, now: Timestamp) -> std::time::Duration {
    let secs = now.as_second().saturating_sub(since.as_second()).max(0);
    std::time::Duration::from_secs(secs as u64)
}

/// `1h2m3s`, for messages.
pub fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

/// Fill the conditions from the status the engine produced.
/// `reason`/`message` are those of the latest decision; `pause_deadline` is
/// `spec.pauseDeadline`.
///
/// - `Ready` (kstatus): True only when the rollout succeeded; False with the
///   reason of the standing otherwise (the spec problem for an invalid one).
/// - `Reconciling` / `Stalled` (kstatus, abnormal-true): see [`Standing`].
/// - `Progressing`, `Paused`, `Completed`, `RolledBack`: as before, for
///   `kubectl wait` and people.
#[allow(clippy::too_many_arguments)]
pub fn build_conditions(
    status: &mut RolloutStatus,
    readiness: &Readiness,
    reason: &str,
    message: &str,
    generation: i64,
    pause_deadline: Option<std::time::Duration>,
    now: Timestamp,
) {
    let mut c = std::mem::take(&mut status.conditions);
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
    let last_reason = status.last_decision.as_ref().map(|d| d.reason.as_str());
    let (completed_reason, completed_msg) = match phase {
        Phase::Succeeded => (
            last_reason.unwrap_or("AllStepsDone").to_string(),
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
            last_reason.unwrap_or(phase.as_str()).to_string(),
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

    let standing = match (readiness, phase) {
        (Readiness::NotReady { reason, message }, _) => Standing::Stalled {
            reason: reason.to_string(),
            message: message.clone(),
        },
        (_, Phase::Invalid) => Standing::Stalled {
            reason: reason.to_string(),
            message: message.to_string(),
        },
        (_, Phase::RolledBack | Phase::Aborted) => Standing::Stalled {
            reason: rb_reason,
            message: message.to_string(),
        },
        (_, Phase::Succeeded) => Standing::Done {
            reason: completed_reason,
            message: message.to_string(),
        },
        (_, Phase::Paused) => match (pause_deadline, paused_since(&c)) {
            (Some(deadline), Some(since)) if waited(since, now) >= deadline => Standing::Stalled {
                reason: PAUSE_DEADLINE_EXCEEDED.to_string(),
                message: format!(
                    "waiting for a person for {} (since {}), longer than spec.pauseDeadline {}: promote, resume or abort it ({reason}: {message})",
                    human_duration(waited(since, now)),
                    Timestamp::from_second(since.as_second()).unwrap_or(since),
                    human_duration(deadline),
                ),
            },
            _ => Standing::InProgress {
                reason: reason.to_string(),
                message: message.to_string(),
            },
        },
        (_, Phase::Pending | Phase::Progressing) => Standing::InProgress {
            reason: reason.to_string(),
            message: message.to_string(),
        },
    };
    let (r, m) = (standing.reason(), standing.message());
    let done = matches!(standing, Standing::Done { .. });
    let stalled = matches!(standing, Standing::Stalled { .. });
    let reconciling = matches!(standing, Standing::InProgress { .. });
    set_condition(&mut c, READY, done, r, m, generation, now);
    set_condition(
        &mut c,
        RECONCILING,
        reconciling,
        if reconciling {
            r
        } else {
            p_reason_or(stalled, r)
        },
        if reconciling { m } else { "" },
        generation,
        now,
    );
    set_condition(
        &mut c,
        STALLED,
        stalled,
        if stalled { r } else { "NotStalled" },
        if stalled { m } else { "" },
        generation,
        now,
    );
    status.conditions = c;
}

/// The reason of `Reconciling=False`: why nothing is in progress.
fn p_reason_or(stalled: bool, stalled_reason: &str) -> &str {
    if stalled { stalled_reason } else { "Succeeded" }
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
            None,
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
        assert_eq!(get(READY).reason, "AllStepsDone");
        assert_eq!(get(RECONCILING).status, "False");
        assert_eq!(get(STALLED).status, "False");
        assert_eq!(st.conditions.len(), 7);
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
            None,
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
        let get = |ty: &str| st.conditions.iter().find(|c| c.type_ == ty).unwrap();
        assert_eq!(
            (get(STALLED).status.as_str(), get(STALLED).reason.as_str()),
            ("True", "AnalysisFailed")
        );
        assert!(get(STALLED).message.contains("0.2"));
        assert_eq!(get(READY).status, "False");
        assert_eq!(get(RECONCILING).status, "False");
    }

    fn cond<'a>(st: &'a RolloutStatus, ty: &str) -> (&'a str, &'a str, &'a str) {
        let c = st
            .conditions
            .iter()
            .find(|c| c.type_ == ty)
            .unwrap_or_else(|| panic!("no {ty}"));
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    #[test]
    fn in_progress_is_reconciling_and_not_ready() {
        for phase in [Phase::Pending, Phase::Progressing, Phase::Paused] {
            let mut st = RolloutStatus {
                phase,
                ..Default::default()
            };
            build_conditions(
                &mut st,
                &Readiness::Ready,
                "WaitingForData",
                "step 1/3: waiting for data",
                4,
                Some(std::time::Duration::from_secs(3600)),
                t("2026-01-01T00:00:00Z"),
            );
            assert_eq!(
                cond(&st, RECONCILING),
                ("True", "WaitingForData", "step 1/3: waiting for data"),
                "{phase:?}"
            );
            assert_eq!(cond(&st, READY).0, "False", "{phase:?}");
            assert_eq!(cond(&st, READY).1, "WaitingForData", "{phase:?}");
            assert_eq!(cond(&st, STALLED).0, "False", "{phase:?}");
            assert_eq!(cond(&st, PROGRESSING).1, "WaitingForData", "{phase:?}");
            assert!(
                st.conditions
                    .iter()
                    .all(|c| c.observed_generation == Some(4)),
                "{:?}",
                st.conditions
            );
        }
    }

    #[test]
    fn invalid_and_aborted_are_stalled_with_their_reason() {
        let mut st = RolloutStatus {
            phase: Phase::Invalid,
            ..Default::default()
        };
        build_conditions(
            &mut st,
            &Readiness::NotReady {
                reason: "ReferenceNotFound",
                message: "spec.canary.service: Service x not found".into(),
            },
            "ReferenceNotFound",
            "spec.canary.service: Service x not found",
            2,
            None,
            t("2026-01-01T00:00:00Z"),
        );
        assert_eq!(cond(&st, STALLED).0, "True");
        assert_eq!(cond(&st, STALLED).1, "ReferenceNotFound");
        assert!(cond(&st, STALLED).2.contains("spec.canary.service"));
        assert_eq!(cond(&st, READY).1, "ReferenceNotFound");
        assert_eq!(cond(&st, READY).0, "False");
        assert_eq!(cond(&st, RECONCILING).0, "False");

        let mut st = RolloutStatus {
            phase: Phase::Aborted,
            ..Default::default()
        };
        build_conditions(
            &mut st,
            &Readiness::Ready,
            "Aborted",
            "aborted by hand",
            2,
            None,
            t("2026-01-01T00:00:00Z"),
        );
        assert_eq!(cond(&st, STALLED), ("True", "Aborted", "aborted by hand"));
        assert_eq!(cond(&st, ROLLED_BACK).0, "True");
    }

    #[test]
    fn a_pause_for_a_person_stalls_after_the_deadline() {
        let hour = std::time::Duration::from_secs(3600);
        let mut st = RolloutStatus {
            phase: Phase::Paused,
            ..Default::default()
        };
        let at = |s: &str, st: &mut RolloutStatus| {
            build_conditions(
                st,
                &Readiness::Ready,
                "ManualPause",
                "step 2/3: waiting for promote",
                1,
                Some(hour),
                t(s),
            )
        };
        at("2026-01-01T00:00:00Z", &mut st);
        assert_eq!(cond(&st, RECONCILING).0, "True");
        assert_eq!(
            pause_deadline_left(&st, Some(hour), t("2026-01-01T00:20:00Z")),
            Some(std::time::Duration::from_secs(2400))
        );
        at("2026-01-01T00:59:59Z", &mut st);
        assert_eq!(cond(&st, RECONCILING).0, "True");
        assert_eq!(cond(&st, STALLED).0, "False");
        at("2026-01-01T01:00:00Z", &mut st);
        let (s, r, m) = cond(&st, STALLED);
        assert_eq!((s, r), ("True", PAUSE_DEADLINE_EXCEEDED));
        assert!(m.contains("1h") && m.contains("ManualPause"), "{m}");
        assert_eq!(cond(&st, RECONCILING).0, "False");
        assert_eq!(cond(&st, PAUSED).0, "True");
        assert_eq!(cond(&st, READY).0, "False");
        assert_eq!(
            pause_deadline_left(&st, Some(hour), t("2026-01-01T01:00:00Z")),
            None
        );
        // Resumed: in progress again, the deadline no longer applies.
        st.phase = Phase::Progressing;
        build_conditions(
            &mut st,
            &Readiness::Ready,
            "PauseInProgress",
            "m",
            2,
            Some(hour),
            t("2026-01-01T02:00:00Z"),
        );
        assert_eq!(cond(&st, STALLED).0, "False");
        assert_eq!(cond(&st, RECONCILING).0, "True");
        assert_eq!(
            pause_deadline_left(&st, Some(hour), t("2026-01-01T09:00:00Z")),
            None
        );
        // Without a deadline a pause never stalls.
        st.phase = Phase::Paused;
        at("2026-01-01T03:00:00Z", &mut st);
        build_conditions(
            &mut st,
            &Readiness::Ready,
            "ManualPause",
            "m",
            2,
            None,
            t("2030-01-01T00:00:00Z"),
        );
        assert_eq!(cond(&st, STALLED).0, "False");
    }

    #[test]
    fn odd_deadlines_and_clocks_do_not_panic() {
        let mut st = RolloutStatus {
            phase: Phase::Paused,
            ..Default::default()
        };
        build_conditions(
            &mut st,
            &Readiness::Ready,
            "ManualPause",
            "m",
            1,
            Some(std::time::Duration::MAX),
            t("2026-01-01T00:00:00Z"),
        );
        // The clock goes back: nothing waited, nothing negative.
        assert!(
            pause_deadline_left(
                &st,
                Some(std::time::Duration::ZERO),
                t("2025-01-01T00:00:00Z")
            )
            .is_none()
        );
        assert!(
            pause_deadline_left(
                &st,
                Some(std::time::Duration::MAX),
                t("2025-01-01T00:00:00Z")
            )
            .is_some()
        );
        assert_eq!(
            human_duration(std::time::Duration::from_secs(3723)),
            "1h2m3s"
        );
        assert_eq!(human_duration(std::time::Duration::ZERO), "0s");
        assert_eq!(cond(&st, STALLED).0, "False");
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let s = "é".repeat(1000);
        let out = truncate(&s, 1024);
        assert!(out.len() <= 1024 + '…'.len_utf8());
    }
}
