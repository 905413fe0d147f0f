//! Pure text rendering of the plugin's views: the `list` table and the
//! `status` view (also the frames of `status --watch`). No I/O, no clock:
//! everything, including "now" and the terminal width, comes in as arguments,
//! so a frame can be tested as plain text.

use std::fmt::Write as _;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;

use crate::api::{MetricStatus, Phase, Rollout};
use crate::plan::{PlanStep, validate};
use crate::plan::{Reason, human};

/// Events shown by the status view (the newest ones).
pub const MAX_EVENTS: usize = 10;

/// The symbol shown next to a phase.
pub fn phase_symbol(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "◌",
        Phase::Progressing => "▶",
        Phase::Paused => "‖",
        Phase::Succeeded => "✔",
        Phase::RolledBack => "↺",
        Phase::Aborted => "✖",
        Phase::Invalid => "⚠",
    }
}

/// `[#######-------------] 33%`: the canary weight as a bar of `cells` cells.
pub fn progress_bar(weight: i32, cells: usize) -> String {
    let w = weight.clamp(0, 100) as usize;
    let filled = (w * cells + 50) / 100;
    format!(
        "[{}{}] {}%",
        "#".repeat(filled),
        "-".repeat(cells - filled),
        weight
    )
}

/// Cut `s` to at most `max` characters, ending with `…` when cut.
pub fn shorten(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// How long ago `then` was, seen from `now` (`"15s ago"`; never negative).
pub fn ago(then: Timestamp, now: Timestamp) -> String {
    let d = Duration::try_from(then.duration_until(now)).unwrap_or_default();
    format!("{} ago", human(d))
}

/// One step of a plan in words.
pub fn describe_step(step: &PlanStep) -> String {
    match step {
        PlanStep::SetWeight(w) => format!("setWeight {w}%"),
        PlanStep::Pause(Some(d)) => format!("pause {}", human(*d)),
        PlanStep::Pause(None) => "pause until promoted".to_string(),
        PlanStep::HeaderRoute(_) => "setHeaderRoute".to_string(),
    }
}

/// A number as the status shows it: up to 4 significant decimals, no
/// trailing zeros.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v != 0.0 && v.abs() < 0.0001 {
        return format!("{v:.2e}");
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// The indentation of the values of the status view.
const INDENT: &str = "             ";

/// `text` wrapped at spaces to lines of at most `width` characters, the
/// first starting with `first`, the others with `rest`. A word longer than
/// a line is cut.
pub fn wrap(text: &str, first: &str, rest: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        let len = line.chars().count();
        if !empty && len + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = rest.to_string();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// A rate as a percentage: `0.004651` → `0.47%`.
pub fn percent(rate: f64) -> String {
    format!("{}%", number((rate * 10000.0).round() / 100.0))
}

/// The healthy range of a metric: `<= 0.02`, `>= 10`, `[1, 5]`.
pub fn bound(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(lo), Some(hi)) => format!("[{}, {}]", number(lo), number(hi)),
        (None, Some(hi)) => format!("<= {}", number(hi)),
        (Some(lo), None) => format!(">= {}", number(lo)),
        (None, None) => "-".into(),
    }
}

/// Left-aligned columns separated by three spaces; the last column is not
/// padded. `rows[0]` is the header.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The `list` table. `rollouts` are shown in the order given.
pub fn render_list(rollouts: &[Rollout], all_namespaces: bool, width: usize) -> String {
    let mut rows = Vec::with_capacity(rollouts.len() + 1);
    let mut header: Vec<String> = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE".into());
    }
    header.extend(["NAME", "PHASE", "STEP", "WEIGHT", "VERDICT", "MESSAGE"].map(String::from));
    rows.push(header);
    for r in rollouts {
        let st = r.status.clone().unwrap_or_default();
        let mut row = Vec::new();
        if all_namespaces {
            row.push(r.metadata.namespace.clone().unwrap_or_default());
        }
        row.push(r.metadata.name.clone().unwrap_or_default());
        row.push(if r.status.is_some() {
            st.phase.as_str().to_string()
        } else {
            "-".into()
        });
        row.push(if st.step.is_empty() {
            "-".into()
        } else {
            st.step.clone()
        });
        row.push(if r.status.is_some() {
            format!("{}%", st.canary_weight)
        } else {
            "-".into()
        });
        row.push(if st.verdict.is_empty() {
            "-".into()
        } else {
            st.verdict.clone()
        });
        row.push(st.message.clone());
        rows.push(row);
    }
    // The message gets what is left of the width (at least 20 characters).
    let used: usize = {
        let cols = rows[0].len() - 1;
        (0..cols)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0) + 3)
            .sum()
    };
    let room = width.saturating_sub(used).max(20);
    for row in rows.iter_mut().skip(1) {
        if let Some(m) = row.last_mut() {
            *m = shorten(m, room);
        }
    }
    table(&rows)
}

/// The time an Event happened (latest occurrence of a series).
pub fn event_time(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Whether `e` is about the Rollout `r` (kind, namespace, name and, when both
/// are known, uid).
pub fn is_about(e: &Event, r: &Rollout) -> bool {
    let Some(reg) = &e.regarding else {
        return false;
    };
    let uid_matches = match (&reg.uid, &r.metadata.uid) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    reg.kind.as_deref() == Some("Rollout")
        && reg.name == r.metadata.name
        && (reg.namespace.is_none() || reg.namespace == r.metadata.namespace)
        && uid_matches
}

/// What the rollout waits for, from the Progressing condition (or the
/// latest decision), in words.
fn waiting_for(r: &Rollout, plan_step: Option<&PlanStep>, now: Timestamp) -> Option<String> {
    let st = r.status.as_ref()?;
    let name = r.metadata.name.as_deref().unwrap_or("NAME");
    if st.phase.is_terminal() {
        return None;
    }
    if st.phase == Phase::Invalid {
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready");
        return Some(match ready {
            Some(c) => format!("a valid spec ({}: {})", c.reason, c.message),
            None => "a valid spec".into(),
        });
    }
    let (reason, message) = match st.conditions.iter().find(|c| c.type_ == "Progressing") {
        Some(c) => (c.reason.clone(), c.message.clone()),
        None => match &st.last_decision {
            Some(d) => (d.reason.clone(), d.message.clone()),
            None => return Some("the operator's first reconcile".into()),
        },
    };
    let Some(parsed) = Reason::parse(&reason) else {
        // Not the engine's (e.g. an operator newer than this plugin).
        return Some(if message.is_empty() { reason } else { message });
    };
    use Reason::*;
    let what = match parsed {
        PauseInProgress => {
            let left = match (plan_step, &st.step_started_at) {
                (Some(PlanStep::Pause(Some(d))), Some(t)) => {
                    let elapsed = Duration::try_from(t.0.duration_until(now)).unwrap_or_default();
                    Some(d.saturating_sub(elapsed))
                }
                _ => None,
            };
            match left {
                Some(left) => format!("the pause to end ({} left)", human(left)),
                None => "the pause to end".into(),
            }
        }
        ManualPause | Paused => format!("a promote (kubectl rollwise promote {name})"),
        PausedBySpec => format!("spec.paused to be false (kubectl rollwise resume {name})"),
        WaitingForCanary => "the canary Deployment to be available".into(),
        WaitingForData => "metric data (the queries return nothing yet)".into(),
        WaitingForAnalysis => "the first analysis round at this weight".into(),
        WaitingForPass => "a passing analysis round (the latest failed, within its limit)".into(),
        MetricsError => "the metrics backend (its queries fail)".into(),
        WaitingForDependency | DependencyFailedHolding => {
            let who = if st.waiting_for.is_empty() {
                "a dependency".to_string()
            } else {
                format!("its dependency {}", st.waiting_for)
            };
            format!("{who} (spec.dependsOn): {message}")
        }
        SetWeight | WeightChanged => format!("the route to carry {}%", st.desired_weight),
        NotEnoughEvidence => {
            let more = st
                .comparisons
                .iter()
                .filter_map(|c| c.more_requests_needed)
                .max()
                .map(|n| format!(" (roughly {n} more canary requests)"))
                .unwrap_or_default();
            format!("enough evidence from the canary-vs-stable comparison{more}")
        }
        BudgetGuard => format!("room in the exposure budget to go on: {message}"),
        CheckRunning => format!("its checks to finish: {message}"),
        WaitingForConfirm => format!("a confirm webhook to say yes: {message}"),
        CheckError => format!("a check that cannot run to be fixed: {message}"),
        RiskBoundHolds => format!(
            "evidence, or a smaller worst plausible canary, before the weight is raised: {message}"
        ),
        // A transition just happened; the operator comes back at once.
        RolloutStarted | Started | NewCanary | Retry | StepAdvanced | HeaderRouteSet
        | HeaderRouteRemoved | EvidenceFine | RiskBoundAllows | Promoted | PromotedByHand
        | DependencySatisfied => {
            format!("the operator's next reconcile (just now: {message})")
        }
        // Outcomes (the phase is terminal and was answered above) and
        // Events that are no decision: the message says it.
        RolloutCompleted
        | AllStepsDone
        | Completed
        | AnalysisFailed
        | CanaryWorse
        | BudgetExhausted
        | MetricsUnavailable
        | Aborted
        | RolledBack
        | StableScaledDown
        | ActionRefused
        | CheckFailed
        | CheckStarted
        | CheckPassed
        | CheckAttemptFailed
        | PostRollbackCheckFailed
        | DependencyFailed => {
            if message.is_empty() {
                reason
            } else {
                message
            }
        }
    };
    Some(what)
}

/// The `status` view of one Rollout: phase, steps, weight, analysis, the
/// latest decision and action, and the newest Events about it (the caller
/// passes the Rollout's Events in any order; the newest [`MAX_EVENTS`] are
/// shown, newest last).
pub fn render_status(r: &Rollout, events: &[Event], now: Timestamp, width: usize) -> String {
    let width = width.max(40);
    let mut o = String::new();
    let name = r.metadata.name.as_deref().unwrap_or("?");
    let namespace = r.metadata.namespace.as_deref().unwrap_or("?");
    let st = r.status.clone().unwrap_or_default();
    let has_status = r.status.is_some();
    let plan = validate(&r.spec);
    let cells = if width >= 60 { 20 } else { 10 };
    let text = width.saturating_sub(14);

    let _ = writeln!(o, "Rollout      {namespace}/{name}");
    if has_status {
        let step = if st.step.is_empty() || st.step == "-" {
            String::new()
        } else {
            format!(" — step {}", st.step)
        };
        let _ = writeln!(
            o,
            "Phase        {} {}{step}",
            phase_symbol(st.phase),
            st.phase.as_str()
        );
    } else {
        let _ = writeln!(
            o,
            "Phase        ◌ (no status yet: is the operator running?)"
        );
    }
    if r.spec.paused {
        let _ = writeln!(
            o,
            "Paused       yes, by spec.paused (kubectl rollwise resume {name})"
        );
    }
    let version = |v: &crate::api::VersionRef| match &v.deployment {
        Some(d) => format!("{} (Deployment {d})", v.service),
        None => v.service.clone(),
    };
    let _ = writeln!(o, "Stable       {}", version(&r.spec.stable));
    let _ = writeln!(o, "Canary       {}", version(&r.spec.canary));
    if let Ok(p) = &plan {
        let _ = write!(
            o,
            "{}",
            wrap(
                &crate::simulate::policies::describe_plan(p),
                "Plan         ",
                "             ",
                width
            )
        );
    }
    let desired = if st.desired_weight != st.canary_weight {
        format!(
            "   desired {}% (the route is not there yet)",
            st.desired_weight
        )
    } else {
        format!("   desired {}%", st.desired_weight)
    };
    let _ = writeln!(
        o,
        "Weight       {} on the canary{desired}",
        progress_bar(st.canary_weight, cells)
    );
    if !st.message.is_empty() {
        let _ = writeln!(o, "Message      {}", shorten(&st.message, text));
    }

    // Steps.
    let current_step = match &plan {
        Ok(plan) => {
            let _ = writeln!(o, "\nSteps");
            let current = st.current_step_index.max(0) as usize;
            let started = has_status && !st.step.is_empty() && st.step != "-";
            for (i, step) in plan.steps.iter().enumerate() {
                let (mark, note) = if !started {
                    (" ", String::new())
                } else if st.phase == Phase::Succeeded || i < current {
                    ("✔", String::new())
                } else if i == current {
                    let since = st
                        .step_started_at
                        .as_ref()
                        .map(|t| format!(" for {}", human(duration_between(t.0, now))))
                        .unwrap_or_default();
                    let mark = match st.phase {
                        Phase::RolledBack | Phase::Aborted => "✖",
                        Phase::Paused => "‖",
                        _ => "▶",
                    };
                    (mark, format!("   ← current{since}"))
                } else {
                    (" ", String::new())
                };
                let line = format!(
                    "  {mark} {:>2}/{}  {:<22}{note}",
                    i + 1,
                    plan.steps.len(),
                    describe_step(step)
                );
                let _ = writeln!(o, "{}", line.trim_end());
            }
            plan.steps.get(current).copied()
        }
        Err(errors) => {
            let _ = writeln!(o, "\nSteps        the spec is invalid:");
            for e in errors {
                let _ = writeln!(o, "  - {}", shorten(&e.to_string(), width - 4));
            }
            None
        }
    };

    // Analysis.
    if let Ok(plan) = &plan
        && plan.has_analysis()
    {
        let latest = match (&st.last_analysis_at, st.verdict.as_str()) {
            (Some(t), v) if !v.is_empty() && v != "-" => {
                format!(", latest round {v} ({})", ago(t.0, now))
            }
            _ => ", no round yet".into(),
        };
        let _ = writeln!(o, "\nAnalysis     every {}{latest}", human(plan.interval));
        if st.consecutive_errors > 0 {
            let _ = writeln!(
                o,
                "             {} round(s) in a row with query errors (limit {})",
                st.consecutive_errors, plan.consecutive_error_limit
            );
        }
        let mut rows = vec![
            [
                "METRIC", "VALUE", "BOUND", "VERDICT", "FAILURES", "MEASURED",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for m in &plan.metrics {
            let seen: Option<&MetricStatus> = st.analysis.iter().find(|s| s.name == m.name);
            rows.push(match seen {
                Some(s) => vec![
                    s.name.clone(),
                    s.value.map(number).unwrap_or_else(|| "-".into()),
                    bound(s.min.or(m.min), s.max.or(m.max)),
                    s.verdict.clone(),
                    format!("{}/{}", s.failures, s.failure_limit),
                    s.measured_at
                        .as_ref()
                        .map(|t| ago(t.0, now))
                        .unwrap_or_else(|| "-".into()),
                ],
                None => vec![
                    m.name.clone(),
                    "-".into(),
                    bound(m.min, m.max),
                    "-".into(),
                    format!("0/{}", m.failure_limit),
                    "-".into(),
                ],
            });
        }
        for line in table(&rows).lines() {
            let _ = writeln!(o, "  {}", shorten(line, width - 2));
        }
        if !plan.compare.is_empty() {
            let mut rows = vec![
                [
                    "COMPARE",
                    "CANARY",
                    "STABLE",
                    "TOLERANCE",
                    "VERDICT",
                    "MEASURED",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for c in &plan.compare {
                rows.push(match st.comparisons.iter().find(|s| s.name == c.name) {
                    Some(s) => vec![
                        s.name.clone(),
                        format!(
                            "{}/{} {}",
                            number(s.canary_failures),
                            number(s.canary_requests),
                            percent(s.canary_rate)
                        ),
                        // A counted metric's limit does not involve stable.
                        if c.tolerance.fixed {
                            "-".into()
                        } else {
                            format!(
                                "{}/{} {}",
                                number(s.stable_failures),
                                number(s.stable_requests),
                                percent(s.stable_rate)
                            )
                        },
                        if s.tolerance.is_empty() {
                            "-".into()
                        } else {
                            s.tolerance.clone()
                        },
                        s.verdict.clone(),
                        s.measured_at
                            .as_ref()
                            .map(|t| ago(t.0, now))
                            .unwrap_or_else(|| "-".into()),
                    ],
                    None => {
                        let mut row = vec![c.name.clone()];
                        row.extend(std::iter::repeat_n("-".to_string(), 5));
                        row
                    }
                });
            }
            for line in table(&rows).lines() {
                let _ = writeln!(o, "  {}", shorten(line, width - 2));
            }
            // The excess and the evidence, in words, one line each.
            for s in &st.comparisons {
                let line = format!(
                    "{}: canary's excess {} [{}, {}]; evidence worse {}x (needs {}x), fine {}x (needs {}x)",
                    s.name,
                    percent(s.excess),
                    percent(s.excess_lower),
                    percent(s.excess_upper),
                    number(s.harm_evidence),
                    number(s.harm_bar()),
                    number(s.fine_evidence),
                    number(s.evidence_bar)
                );
                let _ = writeln!(o, "  {}", shorten(&line, width - 2));
            }
        }
        if let Some(b) = &st.budget {
            let _ = writeln!(
                o,
                "  exposure budget: {} extra failed requests so far (at most {} at {}% confidence) of {}",
                number(b.used),
                number(b.upper),
                number(plan.confidence * 100.0),
                number(b.max)
            );
        }
        for s in &st.analysis {
            if s.verdict != "Pass" && !s.message.is_empty() {
                o.push_str(&wrap(
                    &format!("{}: {}", s.name, s.message),
                    "  ",
                    "    ",
                    width,
                ));
            }
        }
        for c in &st.comparisons {
            if !c.is_fine() && !c.message.is_empty() {
                o.push_str(&wrap(
                    &format!("{}: {}", c.name, c.message),
                    "  ",
                    "    ",
                    width,
                ));
            }
        }
    }

    // Webhook and Job checks, one line per check and point.
    if !st.checks.is_empty() {
        o.push('\n');
        let _ = writeln!(o, "Checks");
        o.push_str(&checks_table(&st));
    }

    // Decision, what it waits for, last action.
    o.push('\n');
    match &st.last_decision {
        Some(d) => {
            let at =
                d.at.as_ref()
                    .map(|t| format!(" ({})", ago(t.0, now)))
                    .unwrap_or_default();
            let _ = writeln!(o, "Decision     {} {}{at}", d.kind, d.reason);
            o.push_str(&wrap(&d.message, INDENT, INDENT, width));
        }
        None => {
            let _ = writeln!(o, "Decision     none yet");
        }
    }
    if let Some(w) = waiting_for(r, current_step.as_ref(), now) {
        o.push_str(&wrap(&w, "Waiting for  ", INDENT, width));
    } else if st.phase == Phase::Succeeded {
        let _ = writeln!(o, "Done         all steps done: 100% on the canary");
    } else if matches!(st.phase, Phase::RolledBack | Phase::Aborted) {
        let _ = writeln!(
            o,
            "Done         all traffic on stable; start again with `kubectl rollwise retry {name}`"
        );
    }
    if let Some(pending) = r
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::api::ACTION_ANNOTATION))
    {
        let _ = writeln!(
            o,
            "Pending      {pending} (requested, not yet carried out by the operator)"
        );
    }
    match &st.last_action {
        Some(a) => {
            let at =
                a.at.as_ref()
                    .map(|t| format!(" ({})", ago(t.0, now)))
                    .unwrap_or_default();
            let _ = writeln!(
                o,
                "Last action  {} {}{at}: {}",
                a.action, a.result, a.message
            );
        }
        None => {
            let _ = writeln!(o, "Last action  none");
        }
    }

    // Events.
    let mut evs: Vec<&Event> = events.iter().collect();
    evs.sort_by_key(|e| event_time(e));
    let skip = evs.len().saturating_sub(MAX_EVENTS);
    let evs = &evs[skip..];
    if evs.is_empty() {
        let _ = writeln!(o, "\nEvents       none");
    } else {
        let _ = writeln!(o, "\nEvents (newest last)");
        let mut rows = vec![
            ["AGE", "TYPE", "REASON", "MESSAGE"]
                .map(String::from)
                .to_vec(),
        ];
        for e in evs {
            let age = event_time(e)
                .map(|t| human(duration_between(t, now)))
                .unwrap_or_else(|| "?".into());
            let count = e.series.as_ref().map(|s| s.count).unwrap_or(1);
            let note = e.note.clone().unwrap_or_default();
            let note = if count > 1 {
                format!("{note} (x{count})")
            } else {
                note
            };
            rows.push(vec![
                age,
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                note,
            ]);
        }
        for line in table(&rows).lines() {
            let _ = writeln!(o, "  {}", shorten(line, width - 2));
        }
    }
    // Nothing wider than the terminal.
    o.lines().map(|l| shorten_line(l, width) + "\n").collect()
}

/// Like [`shorten`], keeping the line's indentation.
/// `status.checks` as a table (indented by two): check, point, kind, phase,
/// attempts and failures, the Job, the latest result.
fn checks_table(st: &crate::api::RolloutStatus) -> String {
    let mut rows = vec![vec![
        "CHECK".to_string(),
        "AT".into(),
        "KIND".into(),
        "PHASE".into(),
        "FAILURES".into(),
        "JOB".into(),
        "RESULT".into(),
    ]];
    for c in &st.checks {
        rows.push(vec![
            c.name.clone(),
            match c.step {
                Some(s) => format!("{} {s}", c.point),
                None => c.point.clone(),
            },
            c.kind.clone(),
            c.phase.clone(),
            format!("{}/{}", c.failures, c.failure_limit),
            c.job_name.clone().unwrap_or_else(|| "-".into()),
            if c.result.is_empty() {
                "-".into()
            } else {
                c.result.clone()
            },
        ]);
    }
    table(&rows).lines().map(|l| format!("  {l}\n")).collect()
}

fn shorten_line(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_string();
    }
    let mut out: String = line.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn duration_between(then: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(then.duration_until(now)).unwrap_or_default()
}
