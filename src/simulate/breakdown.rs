//! Where the time of one run went: the seconds at each weight, and what held
//! the rollout there (the reason of each decision, from one to the next),
//! with the setting that would change it.

use std::fmt::Write;

use super::world::{Run, human};

/// Seconds at one weight, split by the reason that held it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtWeight {
    pub weight: u8,
    pub seconds: u64,
    /// `(reason, seconds)`, longest first.
    pub reasons: Vec<(String, u64)>,
}

/// The run's time, weight by weight in the order they were first reached.
pub fn breakdown(run: &Run) -> Vec<AtWeight> {
    let mut out: Vec<AtWeight> = Vec::new();
    let events = &run.timeline;
    for (i, e) in events.iter().enumerate() {
        let until = events.get(i + 1).map(|n| n.t).unwrap_or(run.end);
        let seconds = until.saturating_sub(e.t);
        if seconds == 0 {
            continue;
        }
        let at = match out.iter_mut().position(|a| a.weight == e.weight) {
            Some(i) => &mut out[i],
            None => {
                out.push(AtWeight {
                    weight: e.weight,
                    seconds: 0,
                    reasons: Vec::new(),
                });
                out.last_mut().expect("just pushed")
            }
        };
        at.seconds += seconds;
        match at.reasons.iter_mut().find(|(r, _)| *r == e.reason) {
            Some((_, s)) => *s += seconds,
            None => at.reasons.push((e.reason.clone(), seconds)),
        }
    }
    for a in &mut out {
        a.reasons
            .sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    }
    out
}

/// What a person could change to shorten time spent for `reason`.
fn setting(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "PauseInProgress" => "the step's pause duration",
        "RiskBoundHolds" => {
            "analysis.maxExtraFailures (a larger budget raises sooner) or a longer first pause (a larger default budget)"
        }
        "NotEnoughEvidence" => {
            "more traffic at this weight, a wider tolerance or a lower analysis.confidence"
        }
        "BudgetGuard" => "analysis.maxExtraFailures",
        "WaitingForData" | "WaitingForAnalysis" => "analysis.interval",
        "WaitingForCanary" => "the canary Deployment's readiness",
        "ManualPause" => "a person's promote, or a pause with a duration",
        "WaitingForPass" => "the threshold metric's bound",
        _ => return None,
    })
}

/// The breakdown as text (for `rollwise simulate`).
pub fn breakdown_text(run: &Run) -> String {
    let mut o = String::from("  where the time went\n");
    for a in breakdown(run) {
        let reasons = a
            .reasons
            .iter()
            .map(|(r, s)| format!("{r} {}", human(*s)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(o, "  {:>4}%  {:>8}  {reasons}", a.weight, human(a.seconds));
    }
    // The reason that cost most overall, and what would change it.
    let mut total: Vec<(String, u64)> = Vec::new();
    for a in breakdown(run) {
        for (r, s) in a.reasons {
            match total.iter_mut().find(|(x, _)| *x == r) {
                Some((_, t)) => *t += s,
                None => total.push((r, s)),
            }
        }
    }
    total.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    if let Some((r, s)) = total.first()
        && let Some(what) = setting(r)
    {
        let _ = writeln!(
            o,
            "  most of it: {r} ({}); what would change it: {what}",
            human(*s)
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::benchmark::ROLLOUT;
    use crate::simulate::policies::Rollwise;
    use crate::simulate::scenario::{Base, Scenario};
    use crate::simulate::world::run;

    fn plan() -> crate::plan::Plan {
        let r: crate::api::Rollout = serde_saphyr::from_str(ROLLOUT).unwrap();
        crate::plan::validate(&r.spec).unwrap()
    }

    #[test]
    fn the_seconds_at_each_weight_add_up_to_the_run_and_name_what_held_it() {
        let s = Scenario::parse(
            "duration: 2h\nrequestRate: 2\nstable: {errorRate: 0.006}\ncanary: {errorRate: 0.006}",
            Base::None,
        )
        .unwrap();
        let r = run(&s, &mut Rollwise::new(plan()), 1);
        let b = breakdown(&r);
        let first = r.timeline.first().unwrap().t;
        assert_eq!(
            b.iter().map(|a| a.seconds).sum::<u64>(),
            r.end - first,
            "{b:?}"
        );
        for a in &b {
            assert_eq!(a.reasons.iter().map(|(_, s)| s).sum::<u64>(), a.seconds);
            assert!(a.reasons.windows(2).all(|w| w[0].1 >= w[1].1));
        }
        // 2 req/s: the risk bound holds at 5% for a while, then most of the
        // time goes to waiting at 50% for the evidence that the canary is
        // fine, which the step to 100% needs.
        let at5 = b.iter().find(|a| a.weight == 5).unwrap();
        assert_eq!(at5.reasons[0].0, "RiskBoundHolds", "{b:?}");
        let at50 = b.iter().find(|a| a.weight == 50).unwrap();
        assert_eq!(at50.reasons[0].0, "NotEnoughEvidence", "{b:?}");
        assert!(at50.seconds * 2 > r.end - first, "{b:?}");
        let text = breakdown_text(&r);
        assert!(text.starts_with("  where the time went\n"), "{text}");
        assert!(text.contains("     5%  "), "{text}");
        assert!(
            text.contains("most of it: NotEnoughEvidence (")
                && text.contains("what would change it: more traffic at this weight"),
            "{text}"
        );
    }
}
