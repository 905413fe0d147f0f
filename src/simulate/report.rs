//! The decision-quality report: the targets, met or missed, and the
//! markdown of `docs/benchmarks/decision-quality.md` from the results of
//! [`super::benchmark`]'s runs. Pure: no simulation runs here.

use std::fmt::Write;

use super::PolicyName;
use super::benchmark::{
    CHART, Kind, SCRAPE_INTERVAL, ScenarioResult, VARIANT_SCENARIOS, VariantResult, WALD_BETA,
};
use super::scenario::Scenario;
use super::stats::{Distribution, Quantile};
use super::world::human;
use crate::analysis::fmt_num;
use crate::plan::Plan;

pub struct Target {
    pub name: String,
    pub measured: String,
    pub met: bool,
}

fn q(x: Quantile) -> Option<f64> {
    x.value()
}

fn ratio_text(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{}×", fmt_num(a / b)),
        (Some(_), Some(_)) => "∞".into(),
        _ => "n/a".into(),
    }
}

/// The most healthy or within-tolerance canaries a policy may roll back.
const FALSE_ROLLBACK_TARGET: f64 = 0.01;

/// Flagger's documented time to promote: maxWeight / stepWeight intervals.
const FLAGGER_DOCUMENTED_PROMOTION: u64 = 25 * 60;

/// The targets, measured.
pub fn targets(plan: &Plan, results: &[ScenarioResult]) -> Vec<Target> {
    let mut out = Vec::new();
    let by_file = |f: &str| results.iter().find(|r| r.file == f);
    if let Some(bad) = by_file("bad-canary.yaml") {
        let rw = q(bad.get(PolicyName::Rollwise).median_failed_canary_requests);
        let fl = q(bad.get(PolicyName::Flagger).median_failed_canary_requests);
        let ar = q(bad.get(PolicyName::Argo).median_failed_canary_requests);
        let met = match (rw, fl, ar) {
            (Some(r), Some(f), Some(a)) => r * 10.0 <= f.min(a),
            _ => false,
        };
        out.push(Target {
            name: "10× errors: at least 10× fewer failed requests served by the canary than Flagger's and Argo's documented examples".into(),
            measured: format!(
                "median failed canary requests: rollwise {}, Flagger {} ({} as many), Argo {} ({} as many)",
                bad.get(PolicyName::Rollwise).median_failed_canary_requests.count(),
                bad.get(PolicyName::Flagger).median_failed_canary_requests.count(),
                ratio_text(fl, rw),
                bad.get(PolicyName::Argo).median_failed_canary_requests.count(),
                ratio_text(ar, rw),
            ),
            met,
        });
    }
    for r in results
        .iter()
        .filter(|r| matches!(r.kind, Kind::Healthy | Kind::WithinTolerance))
    {
        let d = r.get(PolicyName::Rollwise);
        out.push(Target {
            name: format!(
                "{}: false rollbacks ≤ {} (the bound rollwise guarantees at the edge of the tolerance is 1 − rollbackConfidence = {})",
                r.scenario.name,
                fmt_pct(FALSE_ROLLBACK_TARGET),
                fmt_pct(1.0 - plan.rollback_confidence)
            ),
            measured: format!(
                "rollwise rolled back {} of {} ({}; 95% upper bound {}); Flagger {}, Argo {}",
                d.rolled_back,
                d.trials,
                fmt_pct(d.rollback_rate),
                fmt_pct(d.rollback_rate_upper95),
                fmt_pct(r.get(PolicyName::Flagger).rollback_rate),
                fmt_pct(r.get(PolicyName::Argo).rollback_rate),
            ),
            met: d.rollback_rate <= FALSE_ROLLBACK_TARGET,
        });
    }
    if let Some(h) = by_file("healthy.yaml") {
        let d = h.get(PolicyName::Rollwise);
        let promoted_median = if d.promoted * 2 > d.trials {
            q(d.median_time_to_decision)
        } else {
            None
        };
        out.push(Target {
            name: format!(
                "healthy canary: promoted no slower than Flagger's documented example ({})",
                human(FLAGGER_DOCUMENTED_PROMOTION)
            ),
            measured: format!(
                "rollwise median time to promote {} (p90 {}); Flagger simulated {}, Argo {}",
                d.median_time_to_promote.time(),
                d.p90_time_to_decision.time(),
                h.get(PolicyName::Flagger).median_time_to_promote.time(),
                h.get(PolicyName::Argo).median_time_to_promote.time(),
            ),
            met: promoted_median.is_some_and(|t| t <= FLAGGER_DOCUMENTED_PROMOTION as f64),
        });
    }
    // Promotion within a time limit (with the benchmark's scrape lag).
    for (file, limit) in [
        ("healthy-50.yaml", 10 * 60),
        ("within-tolerance-20.yaml", 30 * 60),
        ("bursty.yaml", 30 * 60),
        ("daily-cycle.yaml", 30 * 60),
    ] {
        let Some(r) = by_file(file) else { continue };
        let d = r.get(PolicyName::Rollwise);
        let median = if d.promoted * 2 > d.trials {
            q(d.median_time_to_decision)
        } else {
            None
        };
        out.push(Target {
            name: format!(
                "{}: promoted in a median ≤ {}",
                r.scenario.name,
                human(limit)
            ),
            measured: format!(
                "rollwise median time to promote {} (p90 {}); Flagger {}, Argo {}",
                d.median_time_to_promote.time(),
                d.p90_time_to_decision.time(),
                r.get(PolicyName::Flagger).median_time_to_promote.time(),
                r.get(PolicyName::Argo).median_time_to_promote.time(),
            ),
            met: median.is_some_and(|t| t <= limit as f64),
        });
    }
    for r in results.iter().filter(|r| r.kind == Kind::Moderate) {
        let rw = q(r.get(PolicyName::Rollwise).median_failed_canary_requests);
        let fl = q(r.get(PolicyName::Flagger).median_failed_canary_requests);
        out.push(Target {
            name: format!(
                "{}: no more failed canary requests than Flagger's documented example",
                r.scenario.name
            ),
            measured: format!(
                "median failed canary requests: rollwise {}, Flagger {}, Argo {}; rollwise rolled back {} of {}",
                r.get(PolicyName::Rollwise).median_failed_canary_requests.count(),
                r.get(PolicyName::Flagger).median_failed_canary_requests.count(),
                r.get(PolicyName::Argo).median_failed_canary_requests.count(),
                r.get(PolicyName::Rollwise).rolled_back,
                r.get(PolicyName::Rollwise).trials,
            ),
            met: matches!((rw, fl), (Some(a), Some(b)) if a <= b),
        });
    }
    for r in results.iter().filter(|r| r.wald.is_some()) {
        let wald = r.wald.unwrap_or(f64::NAN);
        let d = r.get(PolicyName::Rollwise);
        // Wald's E[N] is a test's sample size: compared with the canary
        // requests rollwise's test needed to conclude. After a Fine
        // conclusion a healthy canary still walks through its remaining
        // steps; those requests are shown too, but they measure the steps
        // the Rollout asked for, not the test.
        let n = q(d.median_canary_requests_to_evidence);
        let decided = d.undecided * 2 < d.trials;
        let ratio = n.map(|n| n / wald);
        let to_decision = q(d.median_canary_requests).map(|n| n / wald);
        out.push(Target {
            name: format!("{}: within 2× of Wald's bound", r.scenario.name),
            measured: format!(
                "rollwise's test concluded after a median {} canary requests vs Wald E[N] {}: {}{} (until the decision, steps included: {} = {})",
                d.median_canary_requests_to_evidence.count(),
                fmt_num(wald.round()),
                ratio
                    .map(|x| format!("{}×", fmt_num(x)))
                    .unwrap_or_else(|| "n/a".into()),
                if decided {
                    ""
                } else {
                    " (most runs undecided)"
                },
                d.median_canary_requests.count(),
                to_decision
                    .map(|x| format!("{}×", fmt_num(x)))
                    .unwrap_or_else(|| "n/a".into()),
            ),
            met: decided && ratio.is_some_and(|x| x <= 2.0),
        });
    }
    out
}

fn fmt_pct(x: f64) -> String {
    crate::analysis::fmt_pct(x)
}

fn outcome_cell(d: &Distribution) -> String {
    format!("{} / {} / {}", d.promoted, d.rolled_back, d.undecided)
}

/// The report.
pub fn render(
    plan: &Plan,
    results: &[ScenarioResult],
    variants: &[VariantResult],
    trials: u32,
    seed: u64,
) -> String {
    let mut o = String::new();
    let tolerance = plan
        .compare
        .first()
        .map(|c| c.tolerance.describe())
        .unwrap_or_else(|| "-".into());
    let alpha = 1.0 - plan.confidence;
    let flagger = PolicyName::Flagger
        .make(plan, Default::default())
        .describe();
    let argo = PolicyName::Argo.make(plan, Default::default()).describe();
    let rollwise = PolicyName::Rollwise
        .make(plan, Default::default())
        .describe();
    let _ = writeln!(
        o,
        "# Decision quality: rollwise, Flagger and Argo Rollouts on the same traffic\n"
    );
    let _ = writeln!(
        o,
        "Generated by `rollwise simulate benchmark --trials {trials} --seed {seed}` \
         (`cargo run --release -- simulate benchmark`); do not edit by hand. \
         Every number comes from `rollwise simulate`'s virtual clock: each simulated \
         second serves Poisson-distributed requests, split between stable and canary \
         by the weight the policy under test set, each request failing with its \
         version's error rate; the policy looks at that traffic when its rules say, \
         through a Prometheus that scrapes every {scrape}s (scenarios that set no \
         `scrapeInterval`): a query sees the counts of the latest scrape, up to \
         {scrape}s old, for every policy alike. Trial *i* uses seed {seed}+*i* in \
         every cell, so all three policies see the same request arrivals.\n",
        scrape = SCRAPE_INTERVAL
    );
    let _ = writeln!(o, "## Policies\n");
    let _ = writeln!(o, "| policy | configuration | source |");
    let _ = writeln!(o, "|---|---|---|");
    let _ = writeln!(
        o,
        "| **rollwise** | {rollwise} | `examples/simulate/rollout.yaml`: the defaults (steps 5/33/50/100% with 5m pauses, interval 5s as the analysis only compares, confidence 0.99 for a promotion and 0.95 for a rollback) plus one `compare` entry with tolerance {tolerance} (absolute: the canary may fail up to 0.5 percentage points more often than stable). The real engine: `validate` + `decide` + the sequential comparison, fed with the cumulative counts of both versions since the canary first got traffic. |"
    );
    let _ = writeln!(
        o,
        "| **Flagger** | {flagger} | Flagger's documented example (\"1 min interval, threshold 10, step 2%, max 50% → at least 25 min to promote, 10 min to roll back\"); the minimum success rate 99% over 1m is its builtin `request-success-rate` example. Rules as in Flagger's scheduler: a failed check (or \"no values found\") increments the failed checks and holds; the threshold is checked at the start of the next tick (so 10 failed checks at 1…10 min roll back at 11 min); a passing check raises the weight by stepWeight, and a passing check at maxWeight promotes. |"
    );
    let _ = writeln!(
        o,
        "| **Argo Rollouts** | {argo} | Argo Rollouts' documented background-analysis example (\"5 min interval, limit 3 → 20 min to detect\"): steps setWeight 20/40/60/80 each followed by `pause: {{duration: 10m}}`, `startingStep: 2`, `successCondition: result >= 0.95`, `failureLimit: 3`, query range `[5m]`. The AnalysisRun measures when it starts and every 5m after; a NaN result (no requests) fails the condition; the 4th failed measurement (> failureLimit) aborts: 15 min after the analysis starts, 25 min after the rollout starts. |"
    );
    let _ = writeln!(
        o,
        "\nThe anchors use their documentation's example thresholds (error rate above 1% for Flagger, above 5% for Argo) rather than a comparison with stable: that is what they document. rollwise's tolerance ({tolerance} over stable's 0.6%, i.e. 1.1%) is close to Flagger's 1% threshold.\n"
    );

    let _ = writeln!(o, "## Scenarios\n");
    let _ = writeln!(
        o,
        "| scenario | file | traffic and error rates | what a good policy does |"
    );
    let _ = writeln!(o, "|---|---|---|---|");
    for r in results {
        let _ = writeln!(
            o,
            "| {} | `examples/simulate/{}` | {} | {} |",
            r.scenario.name,
            r.file,
            r.scenario.describe_traffic(),
            match r.kind {
                Kind::Healthy => "promote, never roll back",
                Kind::WithinTolerance => "promote (it is within the tolerance), never roll back",
                Kind::Bad => "roll back after as few failed requests as possible",
                Kind::TurnsBad => "promote nothing bad: roll back soon after it turns",
                Kind::Moderate => {
                    "roll back, serving no more failed requests than Flagger's documented example"
                }
            }
        );
    }

    let _ = writeln!(o, "\n## Results ({trials} trials per cell)\n");
    let _ = writeln!(
        o,
        "Outcomes are promoted / rolled back / undecided (the scenario's duration ran out). \
         Times are from the start of the rollout; \"> d\" means more than half (or 10%) of the runs \
         were still undecided at the scenario's end. *Failed canary requests* are failed requests \
         served by the canary until the decision (the users who got an error from the new version); \
         *canary requests* all requests it served until then. The Wald column is the statistical \
         limit (below) and each policy's median canary requests divided by it; for rollwise, \
         *to evidence* also gives the canary requests served until its comparison first \
         concluded (Fine or Harm) — after that, a healthy canary still walks through the remaining \
         steps, one analysis interval each, at higher weights.\n"
    );
    let _ = writeln!(
        o,
        "| scenario | policy | promoted / rolled back / undecided | time to decision, median (p90) | time to promote, median | failed canary requests, median (p90) | canary requests, median | rollback rate (95% upper) | vs Wald E[N] |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
    for r in results {
        for (i, p) in PolicyName::ALL.iter().enumerate() {
            let d = r.get(*p);
            let mut wald = match (r.wald, q(d.median_canary_requests)) {
                (Some(w), Some(n)) => format!(
                    "{} / {} = {}×",
                    fmt_num(n.round()),
                    fmt_num(w.round()),
                    fmt_num(n / w)
                ),
                _ => "n/a".into(),
            };
            if let (Some(w), Some(n)) = (r.wald, q(d.median_canary_requests_to_evidence))
                && Some(n) != q(d.median_canary_requests)
            {
                let _ = write!(
                    wald,
                    "; to evidence {} = {}×",
                    fmt_num(n.round()),
                    fmt_num(n / w)
                );
            }
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} ({}) | {} | {} ({}) | {} | {} ({}) | {} |",
                if i == 0 { r.scenario.name.as_str() } else { "" },
                p.as_str(),
                outcome_cell(d),
                d.median_time_to_decision.time(),
                d.p90_time_to_decision.time(),
                d.median_time_to_promote.time(),
                d.median_failed_canary_requests.count(),
                d.p90_failed_canary_requests.count(),
                d.median_canary_requests.count(),
                fmt_pct(d.rollback_rate),
                fmt_pct(d.rollback_rate_upper95),
                wald
            );
        }
    }

    let _ = writeln!(o, "\n### Time to promote\n");
    let _ = writeln!(
        o,
        "How long each policy took to promote a canary that should pass, over the runs it promoted (`{CHART}`, written beside this report):\n\n![time to promote, per scenario and policy]({CHART})"
    );

    let _ = writeln!(o, "\n## Targets\n");
    let _ = writeln!(o, "| target | measured | met |");
    let _ = writeln!(o, "|---|---|---|");
    for t in targets(plan, results) {
        let _ = writeln!(
            o,
            "| {} | {} | {} |",
            t.name,
            t.measured,
            if t.met { "**met**" } else { "**missed**" }
        );
    }

    if !variants.is_empty() {
        let _ = writeln!(o, "\n## What the Rollout's own settings change\n");
        let _ = writeln!(
            o,
            "rollwise alone, with one setting of `examples/simulate/rollout.yaml` changed (everything \
             else as above, same seeds, {trials} trials). These are not the defaults the targets are \
             measured on; they show what a user can trade today.\n"
        );
        let _ = writeln!(
            o,
            "| setting | scenario | promoted / rolled back / undecided | time to decision, median (p90) | failed canary requests, median (p90) | canary requests, median | rollback rate (95% upper) |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|");
        let base: Vec<(&str, String, &Distribution)> = results
            .iter()
            .filter(|r| VARIANT_SCENARIOS.contains(&r.file))
            .map(|r| (r.file, r.scenario.name.clone(), r.get(PolicyName::Rollwise)))
            .collect();
        let rows = std::iter::once(("defaults (as above)", &base))
            .map(|(l, b)| {
                (
                    l.to_string(),
                    b.iter()
                        .map(|(f, n, d)| (*f, n.clone(), (*d).clone()))
                        .collect::<Vec<_>>(),
                )
            })
            .chain(
                variants
                    .iter()
                    .map(|v| (v.change.to_string(), v.by_scenario.clone())),
            );
        for (label, by_scenario) in rows {
            for (i, (_, name, d)) in by_scenario.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} ({}) | {} ({}) | {} | {} ({}) |",
                    if i == 0 { label.as_str() } else { "" },
                    name,
                    outcome_cell(d),
                    d.median_time_to_decision.time(),
                    d.p90_time_to_decision.time(),
                    d.median_failed_canary_requests.count(),
                    d.p90_failed_canary_requests.count(),
                    d.median_canary_requests.count(),
                    fmt_pct(d.rollback_rate),
                    fmt_pct(d.rollback_rate_upper95),
                );
            }
        }
    }

    let _ = writeln!(o, "\n## Wald's bound\n");
    let _ = writeln!(
        o,
        "For a canary whose error rate is a constant `p1`, the statistical limit is the expected \
         number of canary requests of Wald's sequential probability ratio test (SPRT) — the test \
         with the smallest expected sample size among all tests with the same error probabilities — \
         of `H0: p = p0` against `H1: p = p1`, where `p0 = stable rate + tolerance` \
         (the edge of what the Rollout tolerates) and `p1` is the canary's true rate. With \
         `α = 1 − confidence = {}` for a canary that should be promoted, `α = 1 − rollbackConfidence = {}` \
         for one that should be rolled back (the error each decision guards against), and `β = {WALD_BETA}` \
         (Wald's approximation):\n",
        fmt_num(alpha),
        fmt_num(1.0 - plan.rollback_confidence)
    );
    let _ = writeln!(
        o,
        "```text\nE[N | p1] = ((1−β)·ln((1−β)/α) + β·ln(β/(1−α))) / KL(p1‖p0)\nKL(p1‖p0) = p1·ln(p1/p0) + (1−p1)·ln((1−p1)/(1−p0))\n```\n"
    );
    let _ = writeln!(
        o,
        "It is a lower bound that no real policy reaches: the SPRT knows the stable rate exactly \
         and looks after every request, while rollwise learns stable's rate from stable's own \
         traffic, does not know the canary's rate (it mixes 16 alternatives, which costs about \
         1.5–2 nats of evidence), and looks once per interval. The target compares Wald's E[N] \
         with the canary requests rollwise's test needed to conclude (*to evidence*); for a \
         rollback that is the decision, for a promotion the remaining steps follow.\n"
    );
    let _ = writeln!(
        o,
        "| scenario | p0 (stable + tolerance) | p1 (canary) | Wald E[N] |"
    );
    let _ = writeln!(o, "|---|---|---|---|");
    for r in results {
        if let (Some(w), Some((ps, pc)), Some(c)) =
            (r.wald, r.scenario.constant_rates(), plan.compare.first())
        {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                r.scenario.name,
                fmt_pct(c.tolerance.allowed(ps)),
                fmt_pct(pc),
                fmt_num(w.round())
            );
        }
    }

    let _ = writeln!(o, "\n## How to read this\n");
    let _ = writeln!(o, "{}", reading(results));
    let _ = writeln!(
        o,
        "Regenerate with `cargo run --release -- simulate benchmark` (see `docs/simulate.md`). \
         Reproduce one cell with e.g. `rollwise simulate --rollout examples/simulate/rollout.yaml \
         --scenario examples/simulate/bad-canary.yaml --policy all --trials {trials} --seed {seed}`."
    );
    o
}

/// Observations, with the numbers of this run of the benchmark.
fn reading(results: &[ScenarioResult]) -> String {
    let by_file = |f: &str| results.iter().find(|r| r.file == f);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "- **Failed requests are requests needed × error rate.** A bad canary's cost is set by \
         how many canary requests a policy needs before it decides. Flagger's example holds its \
         first step (2%) while checks fail, so a 10× canary serves 11 minutes at 2%; Argo's example \
         serves 10 minutes at 20% before its analysis even starts, then 15 more; rollwise decides \
         at the first analysis (every 5s) at which the comparison is conclusive."
    );
    if let Some(bad) = by_file("bad-canary.yaml") {
        let d = bad.get(PolicyName::Rollwise);
        let _ = writeln!(
            o,
            "  Here rollwise needed a median {} canary requests ({} after the start); Wald's bound \
             is {} — the remaining gap is the price of not knowing the canary's rate (a mixture \
             over alternatives), of learning stable's, and the 5s granularity of its looks.",
            d.median_canary_requests.count(),
            d.median_time_to_decision.time(),
            bad.wald
                .map(|w| fmt_num(w.round()))
                .unwrap_or_else(|| "n/a".into()),
        );
    }
    if let Some(tol) = by_file("within-tolerance.yaml") {
        let _ = writeln!(
            o,
            "- **Thresholds are not comparisons.** Flagger's 1% threshold rolled back {} of the canaries \
             that fail 0.9% of the time against stable's 0.6% (within rollwise's tolerance); \
             rollwise rolled back {}.",
            fmt_pct(tol.get(PolicyName::Flagger).rollback_rate),
            fmt_pct(tol.get(PolicyName::Rollwise).rollback_rate),
        );
    }
    if let Some(b) = by_file("bursty.yaml") {
        let _ = writeln!(
            o,
            "  With bursty traffic, one-minute windows at 2% are noisy: Flagger rolled back {} of \
             the healthy canaries.",
            fmt_pct(b.get(PolicyName::Flagger).rollback_rate)
        );
    }
    if let Some(lb) = by_file("low-traffic-bad.yaml") {
        let a = lb.get(PolicyName::Argo);
        let _ = writeln!(
            o,
            "  At 1 request/s, Argo's 95% success condition over 5-minute windows promoted {} of {} \
             canaries with 10× errors.",
            a.promoted, a.trials
        );
    }
    if let (Some(l), Some(h)) = (by_file("low-traffic.yaml"), by_file("healthy.yaml")) {
        let _ = writeln!(
            o,
            "- **Evidence takes requests, and rollwise does not advance without it.** A healthy \
             canary is promoted only once the comparison shows it within the tolerance with 99% \
             confidence, which takes thousands of canary requests (median {} to evidence at 100 req/s); \
             the steps after the first then pass one analysis interval each. At 100 req/s that made \
             the median time to promote {} (Flagger's example: {}); at 1 request/s with 5% on \
             the canary, {} — Flagger and Argo promote on their timers there ({} and {}), having \
             seen a few hundred canary requests, and Flagger counts every minute without a canary \
             request as a failed check (\"no values found\").",
            h.get(PolicyName::Rollwise)
                .median_canary_requests_to_evidence
                .count(),
            h.get(PolicyName::Rollwise).median_time_to_promote.time(),
            h.get(PolicyName::Flagger).median_time_to_promote.time(),
            l.get(PolicyName::Rollwise).median_time_to_promote.time(),
            l.get(PolicyName::Flagger).median_time_to_promote.time(),
            l.get(PolicyName::Argo).median_time_to_promote.time(),
        );
    }
    // When the canary of the turns-bad scenario turns: the first second its
    // error rate differs from its first.
    let turned = |sc: &Scenario| {
        (1..sc.duration).find(|&t| sc.canary_error_rate(t) != sc.canary_error_rate(0))
    };
    if let Some((t, turn)) =
        by_file("turns-bad.yaml").and_then(|t| turned(&t.scenario).map(|turn| (t, turn)))
    {
        let d = t.get(PolicyName::Rollwise);
        let latest = d.promote_times.iter().cloned().reduce(f64::max);
        let after = d.promote_times.iter().filter(|s| **s > turn as f64).count();
        let _ = writeln!(
            o,
            "- **A canary that turns bad** is judged by rollwise on all its requests since it \
             first got traffic, so the good first minutes weigh against the later errors: it rolled \
             back {} of them after a median {} (the canary turned at {}). It promoted {} (median \
             time to promote {}, the latest at {}){} Flagger took {}, Argo {}.",
            fmt_pct(d.rollback_rate),
            d.median_time_to_decision.time(),
            human(turn),
            d.promoted,
            d.median_time_to_promote.time(),
            latest
                .map(|s| human(s.round() as u64))
                .unwrap_or_else(|| "-".into()),
            match (latest, after) {
                (None, _) => ".".into(),
                (Some(_), 0) => ": all before the canary turned, while it was still healthy — no \
                     policy can see a fault that starts after the rollout ended."
                    .into(),
                (Some(_), n) => format!(
                    ": {n} of them after the canary turned, on evidence gathered while it was \
                     healthy that the first bad seconds had not yet outweighed."
                ),
            },
            t.get(PolicyName::Flagger).median_time_to_decision.time(),
            t.get(PolicyName::Argo).median_time_to_decision.time(),
        );
    }
    o
}
