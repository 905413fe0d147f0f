//! Webhook and Job checks, the engine's part (pure): which checks a point
//! needs, recording their results in `status.checks`, and the gate that
//! holds a point until its checks pass.
//!
//! How a check runs:
//! 1. the engine reaches a point (no traffic moved yet: `preRollout`; a
//!    step whose weight is in place, about to be left: `step`; the last
//!    step done, about to promote: `prePromotion`; a rollback or abort:
//!    `postRollback`) and [`gate`] opens one `Running` entry per check of
//!    that point in `status.checks`, and holds;
//! 2. the controller runs the open entries ([`due`]) and hands their
//!    results back in [`Observation::checks`](super::Observation);
//! 3. [`record`] writes each result: `Passed`; a failed attempt within
//!    `failureLimit` is tried again after `interval`; beyond it the check is
//!    `Failed` and the rollout rolls back (at `postRollback` it only
//!    reports); a confirm webhook that does not say yes is `Waiting` and is
//!    asked again after `interval`; a check that cannot be run (no Secret,
//!    no right to create Jobs) is `Error` and holds, with the reason.
//!
//! Manual actions (`promote`, `promote-full`, `abort`) are a person's
//! decision and are not gated by checks.

use std::time::Duration;

use jiff::Timestamp;

use super::{Reason, Transition, human, signed, time};
use k8s_openapi::api::batch::v1::JobSpec;

use super::{FieldError, PlanStep};
use crate::api::{
    CHECK_ERROR, CHECK_FAILED, CHECK_PASSED, CHECK_RUNNING, CHECK_WAITING, CheckPoint, CheckSpec,
    CheckStatus, RolloutStatus,
};

/// Default wait between attempts and between asks of a confirm webhook.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// How soon the controller looks again at a check that runs (a Job): Jobs
/// are not watched (the operator may not be allowed to), so they are looked
/// at on this timer.
pub const CHECK_POLL: Duration = Duration::from_secs(2);

/// What a check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    Webhook,
    /// A webhook that holds until it says yes.
    Confirm,
    Job,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Confirm => "confirm",
            Self::Job => "job",
        }
    }
}

/// A validated check.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanCheck {
    pub name: String,
    pub at: Vec<CheckPoint>,
    pub failure_limit: u32,
    pub interval: Duration,
    pub kind: CheckKind,
}

/// The outcome of one run of a check, as the controller observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Still running (a Job): look again.
    Running,
    Passed,
    /// A failed attempt.
    Failed,
    /// Not yet: ask again (a confirm gate's "no" is recorded as this).
    Waiting,
    /// The check could not be run at all; holds.
    Error,
}

/// One check run, identified like its status entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub name: String,
    pub point: CheckPoint,
    /// 1-based step of a `step` check.
    pub step: Option<i32>,
    pub outcome: CheckOutcome,
    pub job_name: Option<String>,
    pub http_status: Option<u16>,
    /// In short: `HTTP 200`, `Complete`, `Failed: DeadlineExceeded`.
    pub result: String,
    /// For people; never a URL.
    pub message: String,
}

/// A check entry the controller should run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueCheck {
    pub name: String,
    pub point: CheckPoint,
    pub step: Option<i32>,
    /// The attempt to run (1-based): a Job check creates one Job per
    /// attempt.
    pub attempt: i32,
    pub job_name: Option<String>,
}

fn same(e: &CheckStatus, name: &str, point: CheckPoint, step: Option<i32>) -> bool {
    e.name == name && e.point == point.as_str() && e.step == step
}

fn at_point(p: CheckPoint, step: Option<i32>) -> String {
    match step {
        Some(s) => format!("{} {s}", p.as_str()),
        None => p.as_str().to_string(),
    }
}

/// The open entries due now: the controller runs these and hands their
/// results back.
pub fn due(st: &RolloutStatus, now: Timestamp) -> Vec<DueCheck> {
    st.checks
        .iter()
        .filter(|e| e.is_open())
        .filter(|e| e.next_run_at.as_ref().is_none_or(|t| t.0 <= now))
        .filter_map(|e| {
            Some(DueCheck {
                name: e.name.clone(),
                point: CheckPoint::parse(&e.point)?,
                step: e.step,
                attempt: e.attempts.max(1),
                job_name: e.job_name.clone(),
            })
        })
        .collect()
}

/// When the engine should look again while checks are open: at once for a
/// new entry, on [`CHECK_POLL`] while one runs, at `nextRunAt` for a retry.
pub fn requeue(st: &RolloutStatus, now: Timestamp) -> Option<Duration> {
    st.checks
        .iter()
        .filter(|e| e.is_open())
        .map(|e| match &e.next_run_at {
            Some(t) if t.0 > now => {
                Duration::try_from(now.duration_until(t.0)).unwrap_or(CHECK_POLL)
            }
            _ if e.job_name.is_none() && e.attempts <= 1 && e.phase == CHECK_RUNNING => {
                Duration::from_millis(200)
            }
            _ => CHECK_POLL,
        })
        .min()
}

fn event(warning: bool, reason: Reason, message: String) -> Transition {
    Transition {
        warning,
        reason,
        message,
    }
}

/// Record the results in `status.checks`. Returns the Events, and the
/// rollback a check calls for (a `preRollout`, `step` or `prePromotion`
/// check failed more than its `failureLimit` times).
pub fn record(
    checks: &[PlanCheck],
    st: &mut RolloutStatus,
    results: &[CheckResult],
    now: Timestamp,
) -> (Vec<Transition>, Option<(Reason, String)>) {
    let mut events = Vec::new();
    let mut rollback = None;
    for r in results {
        let Some(e) = st
            .checks
            .iter_mut()
            .find(|e| same(e, &r.name, r.point, r.step) && e.is_open())
        else {
            continue;
        };
        let spec = checks.iter().find(|c| c.name == r.name);
        let interval = spec.map(|c| c.interval).unwrap_or(DEFAULT_CHECK_INTERVAL);
        // A confirm gate never fails: its "no" (or no answer) means ask
        // again later.
        let outcome = match (&r.outcome, spec.map(|c| c.kind)) {
            (CheckOutcome::Failed, Some(CheckKind::Confirm)) => CheckOutcome::Waiting,
            (o, _) => o.clone(),
        };
        let was = e.phase.clone();
        if r.job_name.is_some() {
            e.job_name = r.job_name.clone();
        }
        if let Some(s) = r.http_status {
            e.http_status = Some(s as i32);
        }
        e.result = r.result.clone();
        e.message = r.message.clone();
        let place = at_point(r.point, r.step);
        let retry_at = Some(time(now.checked_add(signed(interval)).unwrap_or(now)));
        match outcome {
            CheckOutcome::Running => {
                e.phase = CHECK_RUNNING.into();
                e.next_run_at = None;
            }
            CheckOutcome::Passed => {
                e.phase = CHECK_PASSED.into();
                e.next_run_at = None;
                events.push(event(
                    false,
                    Reason::CheckPassed,
                    format!(
                        "check {} passed at {place}{}: {}",
                        r.name,
                        job_of(e),
                        r.result
                    ),
                ));
            }
            CheckOutcome::Failed => {
                e.failures += 1;
                if e.failures > e.failure_limit {
                    e.phase = CHECK_FAILED.into();
                    e.next_run_at = None;
                    let msg = format!(
                        "check {} failed at {place}{} ({} of {} failures tolerated): {}",
                        r.name,
                        job_of(e),
                        e.failures,
                        e.failure_limit,
                        r.message
                    );
                    if r.point == CheckPoint::PostRollback {
                        events.push(event(true, Reason::PostRollbackCheckFailed, msg));
                    } else if rollback.is_none() {
                        rollback = Some((Reason::CheckFailed, msg));
                    }
                } else {
                    e.phase = CHECK_RUNNING.into();
                    e.attempts += 1;
                    e.next_run_at = retry_at;
                    events.push(event(
                        true,
                        Reason::CheckAttemptFailed,
                        format!(
                            "check {} failed at {place}{} ({} of {} failures tolerated), trying again in {}: {}",
                            r.name,
                            job_of(e),
                            e.failures,
                            e.failure_limit,
                            human(interval),
                            r.message
                        ),
                    ));
                }
            }
            CheckOutcome::Waiting => {
                e.phase = CHECK_WAITING.into();
                e.attempts += 1;
                e.next_run_at = retry_at;
                if was != CHECK_WAITING {
                    events.push(event(
                        false,
                        Reason::WaitingForConfirm,
                        format!(
                            "check {} at {place} waits for confirmation ({}); asking again every {}",
                            r.name,
                            r.result,
                            human(interval)
                        ),
                    ));
                }
            }
            CheckOutcome::Error => {
                e.phase = CHECK_ERROR.into();
                e.next_run_at = retry_at;
                if was != CHECK_ERROR {
                    events.push(event(
                        true,
                        Reason::CheckError,
                        format!("check {} at {place} cannot run: {}", r.name, r.message),
                    ));
                }
            }
        }
        if e.phase != was {
            e.updated_at = Some(time(now));
        }
    }
    (events, rollback)
}

fn job_of(e: &CheckStatus) -> String {
    e.job_name
        .as_ref()
        .map(|j| format!(" (job {j})"))
        .unwrap_or_default()
}

/// Open an entry for every check of `point` (and `step`) that has none.
/// Returns the Events of the checks started.
pub fn start(
    checks: &[PlanCheck],
    st: &mut RolloutStatus,
    point: CheckPoint,
    step: Option<i32>,
    now: Timestamp,
) -> Vec<Transition> {
    let mut events = Vec::new();
    for c in checks.iter().filter(|c| c.at.contains(&point)) {
        if st.checks.iter().any(|e| same(e, &c.name, point, step)) {
            continue;
        }
        st.checks.push(CheckStatus {
            name: c.name.clone(),
            point: point.as_str().into(),
            step,
            kind: c.kind.as_str().into(),
            phase: CHECK_RUNNING.into(),
            attempts: 1,
            failures: 0,
            failure_limit: c.failure_limit as i32,
            message: "started".into(),
            updated_at: Some(time(now)),
            ..Default::default()
        });
        events.push(event(
            false,
            Reason::CheckStarted,
            format!(
                "check {} ({}) started at {}",
                c.name,
                c.kind.as_str(),
                at_point(point, step)
            ),
        ));
    }
    events
}

/// The gate of a point: starts its checks (see [`start`]) and says why it
/// holds while any of them has not passed; `None` when all passed (or the
/// point has no checks).
pub fn gate(
    checks: &[PlanCheck],
    st: &mut RolloutStatus,
    point: CheckPoint,
    step: Option<i32>,
    now: Timestamp,
) -> (Vec<Transition>, Option<(Reason, String)>) {
    let events = start(checks, st, point, step, now);
    let open: Vec<&CheckStatus> = st
        .checks
        .iter()
        .filter(|e| {
            e.point == point.as_str()
                && e.step == step
                && e.phase != CHECK_PASSED
                && checks
                    .iter()
                    .any(|c| c.name == e.name && c.at.contains(&point))
        })
        .collect();
    if open.is_empty() {
        return (events, None);
    }
    let reason = if open.iter().any(|e| e.phase == CHECK_ERROR) {
        Reason::CheckError
    } else if open.iter().any(|e| e.phase == CHECK_WAITING) {
        Reason::WaitingForConfirm
    } else {
        Reason::CheckRunning
    };
    let what = open
        .iter()
        .map(|e| {
            let detail = match e.phase.as_str() {
                CHECK_WAITING => format!("waiting for confirmation, {}", e.result),
                CHECK_ERROR => format!("cannot run: {}", e.message),
                _ if e.failures > 0 => format!(
                    "attempt {} after {} failure(s): {}",
                    e.attempts, e.failures, e.message
                ),
                _ => "running".to_string(),
            };
            format!("{}{} {detail}", e.name, job_of(e))
        })
        .collect::<Vec<_>>()
        .join("; ");
    (
        events,
        Some((
            reason,
            format!("waiting for checks at {}: {what}", at_point(point, step)),
        )),
    )
}

/// Whether step `index` runs the `step` checks: once per weight, at the
/// step that holds it (a pause; a setWeight that no pause follows).
/// A/B route steps run none.
pub fn step_runs_checks(steps: &[PlanStep], index: usize) -> bool {
    match steps.get(index) {
        Some(PlanStep::Pause(_)) => true,
        Some(PlanStep::SetWeight(_)) => !matches!(steps.get(index + 1), Some(PlanStep::Pause(_))),
        _ => false,
    }
}

/// Validate `spec.checks` (what CEL says, again, for an API server without
/// the rules, and what CEL cannot: durations, the Job template).
pub fn compile(specs: &[CheckSpec]) -> Result<Vec<PlanCheck>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, c) in specs.iter().enumerate() {
        let field = |f: &str| format!("spec.checks[{i}]{f}");
        let mut err = |f: &str, message: String| {
            errors.push(FieldError {
                field: field(f),
                message,
            })
        };
        let name_ok = !c.name.is_empty()
            && c.name.len() <= 40
            && c.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !c.name.starts_with('-')
            && !c.name.ends_with('-');
        if !name_ok {
            err(
                ".name",
                format!(
                    "{:?} is not a valid check name (lowercase letters, digits and '-', at most 40)",
                    c.name
                ),
            );
        }
        if specs[..i].iter().any(|d| d.name == c.name) {
            err(".name", format!("{:?} is used by another check", c.name));
        }
        if c.at.is_empty() {
            err(
                ".at",
                "needs at least one of preRollout, step, prePromotion, postRollback".into(),
            );
        }
        let failure_limit = match c.failure_limit {
            None => 0,
            Some(n) if (0..=100).contains(&n) => n as u32,
            Some(n) => {
                err(".failureLimit", format!("{n} is not between 0 and 100"));
                0
            }
        };
        let interval = match c.interval.as_deref().map(super::compile::parse_duration) {
            None => DEFAULT_CHECK_INTERVAL,
            Some(Ok(d)) if d >= Duration::from_secs(1) => d,
            Some(Ok(_)) => {
                err(".interval", "must be at least 1s".into());
                DEFAULT_CHECK_INTERVAL
            }
            Some(Err(e)) => {
                err(".interval", e);
                DEFAULT_CHECK_INTERVAL
            }
        };
        let kind = match (&c.webhook, &c.job) {
            (Some(w), None) => {
                if w.url.is_some() == w.url_from.is_some() {
                    err(".webhook", "needs exactly one of url or urlFrom".into());
                }
                if let Some(u) = &w.url
                    && !(u.starts_with("http://") || u.starts_with("https://"))
                {
                    // Never echo the URL: it may carry a token.
                    err(".webhook.url", "must start with http:// or https://".into());
                }
                if let Some(t) = w.timeout.as_deref()
                    && let Err(e) = super::compile::parse_duration(t)
                {
                    err(".webhook.timeout", e);
                }
                if let Some(r) = w.retries
                    && !(0..=10).contains(&r)
                {
                    err(".webhook.retries", format!("{r} is not between 0 and 10"));
                }
                match w.type_.as_deref() {
                    None | Some("check") => CheckKind::Webhook,
                    Some("confirm") => {
                        if c.at.contains(&CheckPoint::PostRollback) {
                            err(".at", "a confirm webhook cannot run at postRollback (it only reports there)".into());
                        }
                        CheckKind::Confirm
                    }
                    Some(other) => {
                        err(
                            ".webhook.type",
                            format!("{other:?} is not check or confirm"),
                        );
                        CheckKind::Webhook
                    }
                }
            }
            (None, Some(j)) => {
                if let Err(e) = job_spec(&j.spec) {
                    err(".job.spec", e);
                }
                CheckKind::Job
            }
            _ => {
                err("", "needs exactly one of webhook or job".into());
                CheckKind::Webhook
            }
        };
        out.push(PlanCheck {
            name: c.name.clone(),
            at: c.at.clone(),
            failure_limit,
            interval,
            kind,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The Job template as a batch/v1 JobSpec, or why not.
pub fn job_spec(v: &serde_json::Value) -> Result<JobSpec, String> {
    if !v.is_object() {
        return Err("must be a JobSpec (an object with a template)".into());
    }
    let spec: JobSpec = serde_json::from_value(v.clone())
        .map_err(|e| format!("not a valid batch/v1 JobSpec: {e}"))?;
    if spec
        .template
        .spec
        .as_ref()
        .is_none_or(|p| p.containers.is_empty())
    {
        return Err("template.spec.containers must list at least one container".into());
    }
    match spec.template.spec.as_ref().and_then(|p| p.restart_policy.as_deref()) {
        Some("Never") | Some("OnFailure") => {}
        _ => return Err("template.spec.restartPolicy must be Never or OnFailure (a Job's Pods cannot restart Always)".into()),
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn check(name: &str, at: &[CheckPoint], kind: CheckKind, limit: u32) -> PlanCheck {
        PlanCheck {
            name: name.into(),
            at: at.to_vec(),
            failure_limit: limit,
            interval: Duration::from_secs(10),
            kind,
        }
    }

    fn result(name: &str, point: CheckPoint, step: Option<i32>, o: CheckOutcome) -> CheckResult {
        CheckResult {
            name: name.into(),
            point,
            step,
            outcome: o,
            job_name: None,
            http_status: None,
            result: "r".into(),
            message: "m".into(),
        }
    }

    #[test]
    fn gate_starts_holds_and_opens() {
        let checks = [
            check("smoke", &[CheckPoint::PreRollout], CheckKind::Job, 0),
            check("load", &[CheckPoint::Step], CheckKind::Webhook, 0),
        ];
        let mut st = RolloutStatus::default();
        let (ev, hold) = gate(&checks, &mut st, CheckPoint::PreRollout, None, t0());
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].reason, Reason::CheckStarted);
        assert_eq!(hold.unwrap().0, Reason::CheckRunning);
        assert_eq!(st.checks.len(), 1, "only the preRollout check starts");
        assert_eq!(due(&st, t0()).len(), 1);
        // Asking again does not start it twice.
        let (ev, _) = gate(&checks, &mut st, CheckPoint::PreRollout, None, t0());
        assert!(ev.is_empty());
        let (ev, rb) = record(
            &checks,
            &mut st,
            &[result(
                "smoke",
                CheckPoint::PreRollout,
                None,
                CheckOutcome::Passed,
            )],
            t0(),
        );
        assert_eq!(ev[0].reason, Reason::CheckPassed);
        assert!(rb.is_none());
        let (_, hold) = gate(&checks, &mut st, CheckPoint::PreRollout, None, t0());
        assert!(hold.is_none());
        assert!(due(&st, t0()).is_empty());
        // A point without checks never holds.
        let (_, hold) = gate(&checks, &mut st, CheckPoint::PrePromotion, None, t0());
        assert!(hold.is_none());
    }

    #[test]
    fn outcomes_table() {
        // (failure limit, outcomes in order, final phase, rollback?)
        use CheckOutcome::*;
        let table: &[(u32, &[CheckOutcome], &str, bool)] = &[
            (0, &[Passed], CHECK_PASSED, false),
            (0, &[Failed], CHECK_FAILED, true),
            (1, &[Failed], CHECK_RUNNING, false),
            (1, &[Failed, Passed], CHECK_PASSED, false),
            (1, &[Failed, Failed], CHECK_FAILED, true),
            (0, &[Running, Running], CHECK_RUNNING, false),
            (0, &[Waiting, Waiting], CHECK_WAITING, false),
            (0, &[Waiting, Passed], CHECK_PASSED, false),
            (0, &[Error], CHECK_ERROR, false),
            (0, &[Error, Passed], CHECK_PASSED, false),
        ];
        for (limit, outcomes, phase, rolls_back) in table {
            let checks = [check("c", &[CheckPoint::Step], CheckKind::Webhook, *limit)];
            let mut st = RolloutStatus::default();
            gate(&checks, &mut st, CheckPoint::Step, Some(2), t0());
            let mut any_rollback = false;
            for o in outcomes.iter() {
                let (_, rb) = record(
                    &checks,
                    &mut st,
                    &[result("c", CheckPoint::Step, Some(2), o.clone())],
                    t0(),
                );
                if let Some((reason, _)) = rb {
                    assert_eq!(reason, Reason::CheckFailed);
                    any_rollback = true;
                }
            }
            assert_eq!(st.checks[0].phase, *phase, "{limit} {outcomes:?}");
            assert_eq!(any_rollback, *rolls_back, "{limit} {outcomes:?}");
        }
    }

    #[test]
    fn a_retry_waits_for_its_interval() {
        let checks = [check("c", &[CheckPoint::Step], CheckKind::Job, 2)];
        let mut st = RolloutStatus::default();
        gate(&checks, &mut st, CheckPoint::Step, Some(1), t0());
        record(
            &checks,
            &mut st,
            &[result("c", CheckPoint::Step, Some(1), CheckOutcome::Failed)],
            t0(),
        );
        assert_eq!(st.checks[0].attempts, 2);
        assert!(due(&st, t0()).is_empty(), "not before the interval");
        assert_eq!(requeue(&st, t0()), Some(Duration::from_secs(10)));
        let later = t0().checked_add(signed(Duration::from_secs(10))).unwrap();
        assert_eq!(due(&st, later)[0].attempt, 2);
    }

    #[test]
    fn post_rollback_only_reports() {
        let checks = [check(
            "notify",
            &[CheckPoint::PostRollback],
            CheckKind::Webhook,
            0,
        )];
        let mut st = RolloutStatus::default();
        start(&checks, &mut st, CheckPoint::PostRollback, None, t0());
        let (ev, rb) = record(
            &checks,
            &mut st,
            &[result(
                "notify",
                CheckPoint::PostRollback,
                None,
                CheckOutcome::Failed,
            )],
            t0(),
        );
        assert!(rb.is_none());
        assert_eq!(ev[0].reason, Reason::PostRollbackCheckFailed);
        assert!(ev[0].warning);
    }

    #[test]
    fn results_for_other_steps_or_closed_entries_are_ignored() {
        let checks = [check("c", &[CheckPoint::Step], CheckKind::Webhook, 0)];
        let mut st = RolloutStatus::default();
        gate(&checks, &mut st, CheckPoint::Step, Some(1), t0());
        let (ev, rb) = record(
            &checks,
            &mut st,
            &[result("c", CheckPoint::Step, Some(2), CheckOutcome::Failed)],
            t0(),
        );
        assert!(ev.is_empty() && rb.is_none());
        assert_eq!(st.checks[0].phase, CHECK_RUNNING);
    }

    #[test]
    fn a_confirm_gate_that_says_no_waits_and_never_fails() {
        let checks = [check(
            "approve",
            &[CheckPoint::PrePromotion],
            CheckKind::Confirm,
            0,
        )];
        let mut st = RolloutStatus::default();
        gate(&checks, &mut st, CheckPoint::PrePromotion, None, t0());
        for _ in 0..3 {
            let (ev, rb) = record(
                &checks,
                &mut st,
                &[result(
                    "approve",
                    CheckPoint::PrePromotion,
                    None,
                    CheckOutcome::Failed,
                )],
                t0(),
            );
            assert!(rb.is_none(), "{ev:?}");
            assert_eq!(st.checks[0].phase, CHECK_WAITING);
        }
    }

    #[test]
    fn hold_reason_prefers_error_then_waiting() {
        let checks = [
            check("a", &[CheckPoint::PrePromotion], CheckKind::Confirm, 0),
            check("b", &[CheckPoint::PrePromotion], CheckKind::Job, 0),
        ];
        let mut st = RolloutStatus::default();
        gate(&checks, &mut st, CheckPoint::PrePromotion, None, t0());
        record(
            &checks,
            &mut st,
            &[result(
                "a",
                CheckPoint::PrePromotion,
                None,
                CheckOutcome::Waiting,
            )],
            t0(),
        );
        let (_, hold) = gate(&checks, &mut st, CheckPoint::PrePromotion, None, t0());
        assert_eq!(hold.unwrap().0, Reason::WaitingForConfirm);
        record(
            &checks,
            &mut st,
            &[result(
                "b",
                CheckPoint::PrePromotion,
                None,
                CheckOutcome::Error,
            )],
            t0(),
        );
        let (_, hold) = gate(&checks, &mut st, CheckPoint::PrePromotion, None, t0());
        let (reason, msg) = hold.unwrap();
        assert_eq!(reason, Reason::CheckError);
        assert!(msg.contains("b cannot run: m"), "{msg}");
    }
}
