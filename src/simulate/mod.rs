//! `rollwise simulate`: replay a Rollout's plan against synthetic or
//! recorded traffic with a virtual clock, with the very same engine the
//! operator runs ([`crate::plan::validate()`], [`crate::plan::decide`], the
//! sequential comparison), and show when it would promote or roll back —
//! as a timeline, a summary, JSON or an SVG chart. The decision rules that
//! Flagger and Argo Rollouts document run on the same traffic for
//! comparison; `rollwise simulate benchmark` regenerates
//! `docs/benchmarks/decision-quality.md`. See `docs/simulate.md`.

pub mod benchmark;
pub mod breakdown;
pub mod dependencies;
pub mod policies;
pub mod progress;
pub mod promote_chart;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod stats;
pub mod svg;
pub mod world;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::plan::Plan;
use policies::{Argo, ArgoConfig, Flagger, FlaggerConfig, People, Rollwise};
use scenario::Scenario;
use stats::Distribution;
use world::{Policy, Run, Summary, Verdict, clock, run};

/// Arguments of `rollwise simulate`.
#[derive(clap::Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SimulateArgs {
    #[command(subcommand)]
    pub command: Option<SimulateCommand>,
    /// The Rollout to simulate: a YAML file (its first `kind: Rollout` document).
    #[arg(long, required = true, value_name = "FILE")]
    pub rollout: Option<PathBuf>,
    /// The traffic scenario (YAML; see docs/simulate.md).
    #[arg(long, required = true, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Seed of the simulated traffic (same seed, same run).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run this many seeds (seed, seed+1, ...) and print the distribution.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub trials: u32,
    /// Print JSON (summary and timeline, or the distribution) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write a chart of the run (the first seed's) to this SVG file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Which decision rules to run: rollwise (the engine on the Rollout),
    /// flagger or argo (their documented examples), or all three.
    #[arg(long, value_enum, default_value_t = PolicyChoice::Rollwise)]
    pub policy: PolicyChoice,
    /// Exit with status 1 unless every run of the first policy ends so.
    #[arg(long, value_enum, value_name = "OUTCOME")]
    pub expect: Option<Expect>,
    /// Promote a pause that waits for a person (`pause: {}`, blue/green
    /// without autoPromote) this long after it began, as someone would
    /// (e.g. 10m). Without it such a pause is never promoted.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub auto_promote_after: Option<u64>,
    /// The share of all requests, in percent, that an A/B route's match or a
    /// blue/green preview route sends to the canary (beta testers, smoke
    /// tests). Default 0: such routes get no traffic, and analysis waits.
    #[arg(long, value_name = "PERCENT", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub preview_traffic: u8,
    /// Show the trials done and the time elapsed on standard error: auto
    /// (when it is a terminal), always or never.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = progress::When::Auto)]
    pub progress: progress::When,
}

fn parse_duration_arg(s: &str) -> Result<u64, String> {
    crate::plan::compile::parse_duration(s).map(|d| d.as_secs())
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum SimulateCommand {
    /// Regenerate docs/benchmarks/decision-quality.md: rollwise, Flagger and
    /// Argo Rollouts on the same seeded traffic, against Wald's bound.
    Benchmark(benchmark::BenchmarkArgs),
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyChoice {
    Rollwise,
    Flagger,
    Argo,
    All,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Promoted,
    RolledBack,
    Undecided,
}

impl Expect {
    fn verdict(self) -> Verdict {
        match self {
            Expect::Promoted => Verdict::Promoted,
            Expect::RolledBack => Verdict::RolledBack,
            Expect::Undecided => Verdict::Undecided,
        }
    }
}

/// One of the policies the simulator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyName {
    Rollwise,
    Flagger,
    Argo,
}

impl PolicyName {
    pub const ALL: [PolicyName; 3] = [PolicyName::Rollwise, PolicyName::Flagger, PolicyName::Argo];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyName::Rollwise => "rollwise",
            PolicyName::Flagger => "flagger",
            PolicyName::Argo => "argo",
        }
    }

    /// A fresh policy as [`PolicyName::make`]; the engine also follows the
    /// scenario's dependencies for `reqs` (the Rollout's `spec.dependsOn`).
    pub fn make_with_dependencies(
        self,
        plan: &Plan,
        people: People,
        reqs: &[crate::plan::depend::Requirement],
        timelines: &dependencies::Timelines,
    ) -> Box<dyn Policy + Send> {
        match self {
            PolicyName::Rollwise if !reqs.is_empty() => Box::new(
                Rollwise::with_people(plan.clone(), people)
                    .with_dependencies(reqs.to_vec(), timelines.clone()),
            ),
            other => other.make(plan, people),
        }
    }

    /// A fresh policy: the engine on `plan`, or the documented example of
    /// Flagger or Argo Rollouts (which do not read the plan).
    pub fn make(self, plan: &Plan, people: People) -> Box<dyn Policy + Send> {
        match self {
            PolicyName::Rollwise => Box::new(Rollwise::with_people(plan.clone(), people)),
            PolicyName::Flagger => Box::new(Flagger::new(FlaggerConfig::default())),
            PolicyName::Argo => Box::new(Argo::new(ArgoConfig::default())),
        }
    }
}

/// Parse a Rollout (the first `kind: Rollout` document of a YAML stream)
/// and validate it: its name and plan.
pub fn parse_rollout(text: &str) -> Result<(String, Plan), String> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let doc = docs
        .into_iter()
        .find(|d| d.get("kind").and_then(Value::as_str) == Some("Rollout"))
        .ok_or_else(|| "no document with `kind: Rollout`".to_string())?;
    // As strict as `kubectl apply` against an API server: a misspelled field
    // is an error naming it, not a default silently used.
    let unknown = crate::api::strict::unknown_fields(&doc);
    if !unknown.is_empty() {
        return Err(format!("not a valid Rollout: {}", unknown.join("; ")));
    }
    let rollout: crate::api::Rollout =
        serde_json::from_value(doc).map_err(|e| format!("not a valid Rollout: {e}"))?;
    let name = rollout
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "rollout".into());
    let plan = crate::plan::validate(&rollout.spec).map_err(|errors| {
        format!(
            "invalid Rollout: {}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    Ok((name, plan))
}

fn load_rollout(path: &Path) -> Result<(String, Plan), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_rollout(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `rollwise simulate ...`
pub fn main(args: SimulateArgs) -> ExitCode {
    if let Some(SimulateCommand::Benchmark(b)) = args.command {
        return benchmark::main(b);
    }
    match simulate(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rollwise simulate: {e}");
            ExitCode::from(2)
        }
    }
}

fn simulate(args: &SimulateArgs) -> Result<ExitCode, String> {
    let (rollout_path, scenario_path) = match (&args.rollout, &args.scenario) {
        (Some(r), Some(s)) => (r, s),
        _ => return Err("--rollout and --scenario are required".into()),
    };
    let (name, plan) = load_rollout(rollout_path)?;
    let scenario = Scenario::load(scenario_path)?;
    // spec.dependsOn: what the dependencies do is the scenario's.
    let reqs = std::fs::read_to_string(rollout_path)
        .map(|t| dependencies::requirements_in(&t))
        .unwrap_or_default();
    if !scenario.dependencies.is_empty() && reqs.is_empty() {
        eprintln!(
            "rollwise simulate: note: the scenario describes dependencies, but the Rollout has no spec.dependsOn"
        );
    }
    for r in &reqs {
        if !scenario.dependencies.iter().any(|(n, _)| *n == r.name) {
            eprintln!(
                "rollwise simulate: note: the scenario does not describe dependency {} (spec.dependsOn[{}]): taken as Succeeded",
                r.name, r.index
            );
        }
    }
    let people = People {
        promote_after: args.auto_promote_after,
        preview_percent: args.preview_traffic,
    };
    if (!plan.routes.is_empty() || plan.blue_green.is_some()) && args.preview_traffic == 0 {
        eprintln!(
            "rollwise simulate: note: A/B and preview routes get no traffic unless --preview-traffic \
             PERCENT says how much they match, so steps that wait for analysis on them hold \
             (see docs/simulate.md)"
        );
    }
    if plan.waits_for_promote() && args.auto_promote_after.is_none() {
        eprintln!(
            "rollwise simulate: note: the plan waits for a promote (pause {{}} or blue/green without \
             autoPromote); nobody promotes in the simulation unless --auto-promote-after DURATION"
        );
    }
    let policies: Vec<PolicyName> = match args.policy {
        PolicyChoice::Rollwise => vec![PolicyName::Rollwise],
        PolicyChoice::Flagger => vec![PolicyName::Flagger],
        PolicyChoice::Argo => vec![PolicyName::Argo],
        PolicyChoice::All => PolicyName::ALL.to_vec(),
    };
    let seeds: Vec<u64> = (0..u64::from(args.trials))
        .map(|i| args.seed.wrapping_add(i))
        .collect();

    let mut results = Vec::new(); // (policy, description, runs)
    for p in &policies {
        let description = p.make(&plan, people).describe();
        let mut first: Option<Run> = None;
        let mut summaries = Vec::with_capacity(seeds.len());
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut progress = progress::Progress::new(args.progress.enabled(terminal), seeds.len());
        for (i, seed) in seeds.iter().enumerate() {
            let mut policy = p.make_with_dependencies(&plan, people, &reqs, &scenario.dependencies);
            let r = run(&scenario, policy.as_mut(), *seed);
            summaries.push(r.summary.clone());
            if i == 0 {
                first = Some(r);
            }
            progress.tick(p.as_str(), i + 1);
        }
        progress.finish();
        results.push((
            *p,
            description,
            first.expect("at least one trial"),
            summaries,
        ));
    }

    if let Some(svg_path) = &args.svg {
        let (p, description, first, _) = &results[0];
        let chart = svg::render(&svg::Chart {
            run: first,
            scenario: &scenario,
            policy: p.as_str(),
            configuration: description,
            rollout: &name,
        });
        std::fs::write(svg_path, chart)
            .map_err(|e| format!("cannot write {}: {e}", svg_path.display()))?;
    }

    let header = Header {
        rollout: &name,
        rollout_file: rollout_path,
        scenario: &scenario,
        scenario_file: scenario_path,
        seed: args.seed,
        trials: args.trials,
    };
    if args.json {
        let out = json_output(&header, &results, &scenario);
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("JSON serializes")
        );
    } else {
        print!("{}", text_output(&header, &results, &scenario));
    }

    if let Some(expect) = args.expect {
        let (p, _, _, summaries) = &results[0];
        let bad: Vec<&Summary> = summaries
            .iter()
            .filter(|s| s.outcome != expect.verdict())
            .collect();
        if !bad.is_empty() {
            eprintln!(
                "rollwise simulate: expected {} but {} of {} {} run(s) ended otherwise (first: seed {}, {})",
                expect.verdict().as_str(),
                bad.len(),
                summaries.len(),
                p.as_str(),
                bad[0].seed,
                bad[0].outcome.as_str()
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

struct Header<'a> {
    rollout: &'a str,
    rollout_file: &'a Path,
    scenario: &'a Scenario,
    scenario_file: &'a Path,
    seed: u64,
    trials: u32,
}

type PolicyRuns = (PolicyName, String, Run, Vec<Summary>);

fn json_output(h: &Header<'_>, results: &[PolicyRuns], scenario: &Scenario) -> Value {
    let results: Vec<Value> = results
        .iter()
        .map(|(p, description, first, summaries)| {
            if h.trials == 1 {
                json!({
                    "policy": p.as_str(),
                    "configuration": description,
                    "summary": first.summary,
                    "timeline": first.timeline,
                })
            } else {
                json!({
                    "policy": p.as_str(),
                    "configuration": description,
                    "distribution": Distribution::of(p.as_str(), summaries, scenario.duration),
                    "runs": summaries,
                })
            }
        })
        .collect();
    json!({
        "rollout": h.rollout,
        "rolloutFile": h.rollout_file.display().to_string(),
        "scenario": h.scenario.name,
        "scenarioFile": h.scenario_file.display().to_string(),
        "traffic": h.scenario.describe_traffic(),
        "seed": h.seed,
        "trials": h.trials,
        "results": results,
    })
}

fn rate_cell(r: Option<f64>) -> String {
    match r {
        Some(r) => format!("{:.2}%", r * 100.0),
        None => "-".into(),
    }
}

fn text_output(h: &Header<'_>, results: &[PolicyRuns], scenario: &Scenario) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "rollwise simulate: rollout {} ({}), scenario \"{}\" ({})",
        h.rollout,
        h.rollout_file.display(),
        h.scenario.name,
        h.scenario_file.display()
    );
    let _ = writeln!(o, "traffic   {}", h.scenario.describe_traffic());
    if h.trials == 1 {
        let _ = writeln!(o, "seed      {}", h.seed);
    } else {
        let _ = writeln!(
            o,
            "seeds     {}..{} ({} trials)",
            h.seed,
            h.seed.wrapping_add(u64::from(h.trials) - 1),
            h.trials
        );
    }
    for (p, description, first, summaries) in results {
        let _ = writeln!(o);
        let _ = writeln!(o, "== {}: {}", p.as_str(), description);
        if h.trials == 1 {
            let _ = writeln!(o);
            let _ = writeln!(
                o,
                "  {:>8}  {:>5}  {:>6}  {:>7}  {:>7}  decision",
                "time", "step", "weight", "canary", "stable"
            );
            for e in &first.timeline {
                let _ = writeln!(
                    o,
                    "  {:>8}  {:>5}  {:>5}%  {:>7}  {:>7}  {} {}: {}",
                    clock(e.t),
                    e.step,
                    e.weight,
                    rate_cell(e.canary_error_rate),
                    rate_cell(e.stable_error_rate),
                    e.kind,
                    e.reason,
                    e.message
                );
            }
            let _ = writeln!(o, "  (error rates over the minute before each decision)");
            let _ = writeln!(o);
            o.push_str(&summary_text(&first.summary));
            let _ = writeln!(o);
            o.push_str(&breakdown::breakdown_text(first));
        } else {
            let d = Distribution::of(p.as_str(), summaries, scenario.duration);
            o.push_str(&distribution_text(&d));
        }
    }
    o
}

/// The summary block of one run.
pub fn summary_text(s: &Summary) -> String {
    let outcome = match s.outcome {
        Verdict::Undecided => format!("undecided ({})", s.reason),
        v => format!("{} ({}) after {}", v.as_str(), s.reason, s.decided_after),
    };
    let rate = |f: u64, n: u64| {
        if n == 0 {
            "-".to_string()
        } else {
            format!("{:.2}%", f as f64 * 100.0 / n as f64)
        }
    };
    let evidence = match (s.evidence_after_seconds, s.canary_requests_to_evidence) {
        (Some(t), Some(n)) => format!(
            "  evidence            the comparison concluded after {} ({n} canary requests)\n",
            world::human(t)
        ),
        _ => String::new(),
    };
    format!(
        "  outcome             {outcome}\n{evidence}  canary requests     {} served, {} failed ({}) until the decision\n  extra failures      {}\n  stable requests     {} served, {} failed ({})\n  highest weight      {}%\n",
        s.canary_requests,
        s.canary_failures,
        rate(s.canary_failures, s.canary_requests),
        extra_failures_text(s.extra_failures),
        s.stable_requests,
        s.stable_failures,
        rate(s.stable_failures, s.stable_requests),
        s.max_weight_before_decision,
    )
}

/// `6.54 more than the stable version would have failed on the same
/// requests`, or `3.47 fewer ...` (never "-3.47 more").
pub fn extra_failures_text(extra: f64) -> String {
    let side = if extra < 0.0 { "fewer" } else { "more" };
    format!(
        "{} {side} than the stable version would have failed on the same requests",
        crate::analysis::fmt_num(extra.abs())
    )
}

/// The distribution block of many runs.
pub fn distribution_text(d: &Distribution) -> String {
    format!(
        "  outcomes                 promoted {}, rolled back {}, undecided {} (of {})\n  time to decision         median {}, p90 {}\n  time to promote          median {} (promoted runs)\n  failed canary requests   median {}, p90 {}\n  canary requests          median {}\n  extra failures           median {}\n",
        d.promoted,
        d.rolled_back,
        d.undecided,
        d.trials,
        d.median_time_to_decision.time(),
        d.p90_time_to_decision.time(),
        d.median_time_to_promote.time(),
        d.median_failed_canary_requests.count(),
        d.p90_failed_canary_requests.count(),
        d.median_canary_requests.count(),
        d.median_extra_failures
            .value()
            .map(crate::analysis::fmt_num)
            .unwrap_or_else(|| "-".into()),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn fewer_extra_failures_read_as_fewer() {
        assert_eq!(
            super::extra_failures_text(-3.47),
            "3.47 fewer than the stable version would have failed on the same requests"
        );
        assert!(super::extra_failures_text(6.54).starts_with("6.54 more than"));
    }
}
