//! Dependencies in `rollwise simulate`: what the Rollout's `spec.dependsOn`
//! entries do over time is an input of the scenario, so a user sees the
//! Rollout hold and then follow (or roll back with) them:
//!
//! ```yaml
//! dependencies:
//!   payments:                          # a name in the Rollout's spec.dependsOn
//!     - {at: 0s, phase: Progressing, weight: 20}
//!     - {at: 20m, phase: Succeeded}    # weight 100 when Succeeded
//! ```
//!
//! A dependency the scenario does not describe is taken as Succeeded with
//! the canary the requirement names.

use serde_json::Value;

use crate::api::{Phase, RolloutSpec};
use crate::plan::compile::parse_duration;
use crate::plan::depend::{Observed, Requirement, requirements};

/// One change of a dependency: from second `at` on, this phase and weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub at: u64,
    pub phase: Phase,
    pub weight: u8,
}

/// Each described dependency (by name) and its changes, in time order.
pub type Timelines = Vec<(String, Vec<Point>)>;

/// The `dependencies` field of a scenario.
pub fn parse(v: &Value) -> Result<Timelines, String> {
    let field = "dependencies";
    let map = v.as_object().ok_or_else(|| {
        format!("{field}: expected a map from a dependency's name to its changes")
    })?;
    let mut out = Vec::new();
    for (name, points) in map {
        let f = format!("{field}.{name}");
        let list = points
            .as_array()
            .ok_or_else(|| format!("{f}: expected a list of {{at, phase, weight}}"))?;
        let mut timeline = Vec::new();
        for (i, p) in list.iter().enumerate() {
            let f = format!("{f}[{i}]");
            let o = p
                .as_object()
                .ok_or_else(|| format!("{f}: expected {{at, phase, weight}}"))?;
            if let Some(k) = o
                .keys()
                .find(|k| !["at", "phase", "weight"].contains(&k.as_str()))
            {
                return Err(format!(
                    "{f}.{k}: unknown field (expected one of: at, phase, weight)"
                ));
            }
            let at = match o.get("at") {
                None => 0,
                Some(Value::Number(n)) => n
                    .as_u64()
                    .ok_or_else(|| format!("{f}.at: {n} is not a number of seconds"))?,
                Some(Value::String(s)) => parse_duration(s)
                    .map(|d| d.as_secs())
                    .map_err(|e| format!("{f}.at: {e}"))?,
                Some(other) => return Err(format!("{f}.at: {other} is not a duration")),
            };
            let phase = match o.get("phase").and_then(Value::as_str) {
                Some(s) => Phase::ALL
                    .into_iter()
                    .find(|p| p.as_str() == s)
                    .ok_or_else(|| format!("{f}.phase: {s:?} is not a phase (Pending, Progressing, Paused, Succeeded, RolledBack, Aborted, Invalid)"))?,
                None => return Err(format!("{f}.phase: is required")),
            };
            let weight = match (o.get("weight"), phase) {
                (Some(w), _) => match w.as_u64() {
                    Some(w) if w <= 100 => w as u8,
                    _ => return Err(format!("{f}.weight: {w} is not 0-100")),
                },
                (None, Phase::Succeeded) => 100,
                (None, _) => 0,
            };
            if timeline.last().is_some_and(|l: &Point| l.at > at) {
                return Err(format!("{f}.at: changes must be in time order"));
            }
            timeline.push(Point { at, phase, weight });
        }
        out.push((name.clone(), timeline));
    }
    Ok(out)
}

/// The requirements of the Rollout in `text` (the first `kind: Rollout`).
pub fn requirements_in(text: &str) -> Vec<Requirement> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).unwrap_or_default();
    docs.into_iter()
        .find(|d| d.get("kind").and_then(Value::as_str) == Some("Rollout"))
        .and_then(|d| serde_json::from_value::<RolloutSpec>(d["spec"].clone()).ok())
        .map(|spec| requirements(&spec, "default"))
        .unwrap_or_default()
}

/// What each requirement sees at second `t`.
pub fn observed_at(reqs: &[Requirement], timelines: &Timelines, t: u64) -> Vec<Observed> {
    reqs.iter()
        .map(|r| {
            let canary = r
                .canary_service
                .clone()
                .unwrap_or_else(|| format!("{}-canary", r.name));
            let point = timelines
                .iter()
                .find(|(n, _)| *n == r.name)
                .map(|(_, points)| points.iter().rev().find(|p| p.at <= t));
            let (phase, weight) = match point {
                None => (Phase::Succeeded, 100),
                Some(None) => (Phase::Pending, 0),
                Some(Some(p)) => (p.phase, p.weight),
            };
            Observed::Found {
                phase,
                weight,
                canary_service: canary,
                message: if matches!(phase, Phase::RolledBack | Phase::Aborted) {
                    "in the scenario".into()
                } else {
                    String::new()
                },
            }
        })
        .collect()
}

/// The next second after `t` at which a dependency changes.
pub fn next_change(timelines: &Timelines, t: u64) -> Option<u64> {
    timelines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.at))
        .filter(|at| *at > t)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_timeline_parses_and_is_read_at_each_second() {
        let t = parse(&json!({"payments": [
            {"at": "0s", "phase": "Progressing", "weight": 20},
            {"at": "20m", "phase": "Succeeded"}
        ]}))
        .unwrap();
        let reqs = requirements_in(
            "kind: Rollout\nspec:\n  stable: {service: a}\n  canary: {service: b}\n  trafficRouting: {replicas: {}}\n  dependsOn: [{name: payments, canaryService: payments-v2}, {name: ledger}]\n",
        );
        assert_eq!(reqs.len(), 2);
        let at = |s| observed_at(&reqs, &t, s);
        assert!(
            matches!(&at(60)[0], Observed::Found { phase: Phase::Progressing, weight: 20, canary_service, .. } if canary_service == "payments-v2")
        );
        assert!(matches!(
            &at(1200)[0],
            Observed::Found {
                phase: Phase::Succeeded,
                weight: 100,
                ..
            }
        ));
        assert!(
            matches!(
                &at(0)[1],
                Observed::Found {
                    phase: Phase::Succeeded,
                    ..
                }
            ),
            "not described: done"
        );
        assert_eq!(next_change(&t, 60), Some(1200));
        assert_eq!(next_change(&t, 1200), None);
    }

    #[test]
    fn bad_timelines_name_the_field() {
        for (v, want) in [
            (json!({"p": [{"phase": "Done"}]}), "dependencies.p[0].phase"),
            (
                json!({"p": [{"phase": "Paused", "weight": 120}]}),
                "dependencies.p[0].weight",
            ),
            (
                json!({"p": [{"phase": "Paused", "when": 1}]}),
                "dependencies.p[0].when",
            ),
            (
                json!({"p": [{"at": "1m", "phase": "Paused"}, {"at": "0s", "phase": "Succeeded"}]}),
                "dependencies.p[1].at",
            ),
            (json!(["p"]), "dependencies:"),
        ] {
            let e = parse(&v).unwrap_err();
            assert!(e.starts_with(want), "{e}");
        }
    }
}
