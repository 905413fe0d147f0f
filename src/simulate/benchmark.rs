//! `rollwise simulate benchmark`: the decision-quality benchmark. Every
//! scenario of the matrix runs `--trials` seeds under rollwise (the engine
//! on `examples/simulate/rollout.yaml`), Flagger's and Argo Rollouts'
//! documented examples — the same seeds for every policy — and the results
//! are written as `docs/benchmarks/decision-quality.md`, with Wald's
//! expected sample size as the statistical limit and the targets marked met
//! or missed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::scenario::{Base, Scenario};
use super::stats::Distribution;
use super::world::{Summary, run};
use super::{PolicyName, parse_rollout};
use crate::plan::Plan;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchmarkArgs {
    /// Seeds per scenario and policy.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub trials: u32,
    /// Where to write the report (`-`: standard output).
    #[arg(
        long,
        default_value = "docs/benchmarks/decision-quality.md",
        value_name = "FILE"
    )]
    pub out: PathBuf,
    /// The first seed (trial i uses seed + i, for every policy).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker threads (default: the available cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// What a scenario tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The canary is as good as stable: any rollback is a false one.
    Healthy,
    /// Worse than stable but within the tolerance: a rollback is a false one.
    WithinTolerance,
    /// Clearly worse from the start: it should be rolled back, fast.
    Bad,
    /// Fine at first, bad later.
    TurnsBad,
    /// Worse than tolerated, but not by much: it should be rolled back, at
    /// no more failed requests than a threshold policy serves.
    Moderate,
}

/// The scenario matrix: (file under examples/simulate, what it tests, text).
pub const SCENARIOS: [(&str, Kind, &str); 12] = [
    (
        "healthy.yaml",
        Kind::Healthy,
        include_str!("../../examples/simulate/healthy.yaml"),
    ),
    (
        "bad-canary.yaml",
        Kind::Bad,
        include_str!("../../examples/simulate/bad-canary.yaml"),
    ),
    (
        "within-tolerance.yaml",
        Kind::WithinTolerance,
        include_str!("../../examples/simulate/within-tolerance.yaml"),
    ),
    (
        "low-traffic.yaml",
        Kind::Healthy,
        include_str!("../../examples/simulate/low-traffic.yaml"),
    ),
    (
        "low-traffic-bad.yaml",
        Kind::Bad,
        include_str!("../../examples/simulate/low-traffic-bad.yaml"),
    ),
    (
        "bursty.yaml",
        Kind::Healthy,
        include_str!("../../examples/simulate/bursty.yaml"),
    ),
    (
        "bursty-bad.yaml",
        Kind::Bad,
        include_str!("../../examples/simulate/bursty-bad.yaml"),
    ),
    (
        "turns-bad.yaml",
        Kind::TurnsBad,
        include_str!("../../examples/simulate/turns-bad.yaml"),
    ),
    (
        "healthy-50.yaml",
        Kind::Healthy,
        include_str!("../../examples/simulate/healthy-50.yaml"),
    ),
    (
        "within-tolerance-20.yaml",
        Kind::WithinTolerance,
        include_str!("../../examples/simulate/within-tolerance-20.yaml"),
    ),
    (
        "daily-cycle.yaml",
        Kind::WithinTolerance,
        include_str!("../../examples/simulate/daily-cycle.yaml"),
    ),
    (
        "moderately-worse.yaml",
        Kind::Moderate,
        include_str!("../../examples/simulate/moderately-worse.yaml"),
    ),
];

/// The time-to-promote chart's file name, beside the report.
pub const CHART: &str = "time-to-promote.svg";

/// The Rollout rollwise runs in the benchmark.
pub const ROLLOUT: &str = include_str!("../../examples/simulate/rollout.yaml");

/// Wald's β for the bound.
pub const WALD_BETA: f64 = 0.1;

/// Wald's approximation of the expected number of observations an SPRT of
/// `H0: p = p0` against `H1: p = p1` needs when the true rate is `p1`, with
/// error probabilities `α` (deciding H1 under H0) and `β` (deciding H0
/// under H1):
///
/// `E[N] = ((1−β)·ln((1−β)/α) + β·ln(β/(1−α))) / KL(p1‖p0)`,
/// `KL(p1‖p0) = p1·ln(p1/p0) + (1−p1)·ln((1−p1)/(1−p0))`.
pub fn wald_expected_n(p1: f64, p0: f64, alpha: f64, beta: f64) -> f64 {
    let numerator = (1.0 - beta) * ((1.0 - beta) / alpha).ln() + beta * (beta / (1.0 - alpha)).ln();
    numerator / crate::analysis::sequential::kl(p1, p0)
}

/// One scenario's results: a distribution per policy.
pub struct ScenarioResult {
    pub file: &'static str,
    pub kind: Kind,
    pub scenario: Scenario,
    pub by_policy: Vec<Distribution>,
    /// Wald's `E[N]` for the canary's constant rate against stable + tolerance.
    pub wald: Option<f64>,
}

impl ScenarioResult {
    pub fn get(&self, p: PolicyName) -> &Distribution {
        self.by_policy
            .iter()
            .find(|d| d.policy == p.as_str())
            .expect("every policy ran")
    }
}

/// The policy of one cell: a named one, or rollwise on another plan.
#[derive(Clone, Copy)]
enum CellPolicy<'a> {
    Named(PolicyName),
    Rollwise(&'a Plan),
}

/// Run `trials` seeds of every cell on `threads` workers; the summaries of
/// each cell, in seed order. Each run depends only on its cell and seed, so
/// the result does not depend on the number of threads.
fn run_cells(
    cells: &[(&Scenario, CellPolicy<'_>)],
    plan: &Plan,
    trials: u32,
    seed: u64,
    threads: usize,
    progress: bool,
) -> Vec<Vec<Summary>> {
    let per_cell = trials as usize;
    let jobs = cells.len() * per_cell;
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let threads = threads.clamp(1, 64);
    let mut results: Vec<(usize, Summary)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        // Jobs are handed out one by one: long cells (low
                        // traffic) are spread over all workers.
                        let job = next.fetch_add(1, Ordering::Relaxed);
                        if job >= jobs {
                            break;
                        }
                        let (scenario, policy) = cells[job / per_cell];
                        let trial = job % per_cell;
                        let mut p = match policy {
                            CellPolicy::Named(name) => name.make(plan, Default::default()),
                            CellPolicy::Rollwise(other) => {
                                PolicyName::Rollwise.make(other, Default::default())
                            }
                        };
                        let r = run(scenario, p.as_mut(), seed.wrapping_add(trial as u64));
                        out.push((job, r.summary));
                        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if progress && d.is_multiple_of((jobs / 20).max(1)) {
                            eprintln!("  {}% ({d}/{jobs} runs)", d * 100 / jobs);
                        }
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("benchmark worker panicked"))
            .collect()
    });
    results.sort_by_key(|(job, _)| *job);
    let mut summaries = results.into_iter().map(|(_, s)| s);
    (0..cells.len())
        .map(|_| summaries.by_ref().take(per_cell).collect())
        .collect()
}

/// Prometheus' scrape interval the benchmark assumes where a scenario sets
/// none: a query sees counts up to 15 s old.
pub const SCRAPE_INTERVAL: u64 = 15;

fn scenarios() -> Result<Vec<(&'static str, Kind, Scenario)>, String> {
    SCENARIOS
        .iter()
        .map(|(file, kind, text)| {
            Scenario::parse(text, Base::None)
                .map(|mut s| {
                    if s.scrape_interval == 0 {
                        s.scrape_interval = SCRAPE_INTERVAL;
                    }
                    (*file, *kind, s)
                })
                .map_err(|e| format!("{file}: {e}"))
        })
        .collect()
}

/// Run the matrix: `trials` seeds per scenario and policy on `threads`.
pub fn run_matrix(
    plan: &Plan,
    trials: u32,
    seed: u64,
    threads: usize,
    progress: bool,
) -> Result<Vec<ScenarioResult>, String> {
    let scenarios = scenarios()?;
    let policies = PolicyName::ALL;
    let cells: Vec<(&Scenario, CellPolicy<'_>)> = scenarios
        .iter()
        .flat_map(|(_, _, s)| policies.iter().map(move |p| (s, CellPolicy::Named(*p))))
        .collect();
    let summaries = run_cells(&cells, plan, trials, seed, threads, progress);
    let tolerance = plan.compare.first().map(|c| c.tolerance);
    Ok(scenarios
        .into_iter()
        .enumerate()
        .map(|(i, (file, kind, scenario))| {
            let by_policy = policies
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    let runs = &summaries[i * policies.len() + j];
                    Distribution::of(p.as_str(), runs, scenario.duration)
                })
                .collect();
            let wald = match (scenario.constant_rates(), tolerance) {
                (Some((ps, pc)), Some(tol)) => {
                    let p0 = tol.allowed(ps);
                    // The error the decision guards against: a wrong
                    // rollback for a canary worse than tolerated, a wrong
                    // promotion for one within tolerance.
                    let alpha = if pc > p0 {
                        1.0 - plan.rollback_confidence
                    } else {
                        1.0 - plan.confidence
                    };
                    (pc > 0.0 && pc != p0).then(|| wald_expected_n(pc, p0, alpha, WALD_BETA))
                }
                _ => None,
            };
            ScenarioResult {
                file,
                kind,
                scenario,
                by_policy,
                wald,
            }
        })
        .collect())
}

/// What the Rollout's own settings change: rollwise with one setting
/// changed from the benchmark's Rollout, on a few scenarios.
/// (label, what changes, the line that replaces the Rollout's comment line).
pub const VARIANTS: [(&str, &str, &str); 2] = [
    (
        "interval 30s",
        "`analysis.interval: 30s`: looks a sixth as often (the default when there are threshold metrics; about what a 30s Prometheus scrape interval allows)",
        "    interval: 30s\n",
    ),
    (
        "rollbackConfidence 0.99",
        "`analysis.rollbackConfidence: 0.99`: a rollback needs the confidence a promotion needs, as before 0.95 became its default (false rollbacks up to 1% instead of 5%)",
        "    rollbackConfidence: 0.99\n",
    ),
];

/// The scenarios the variants run on.
pub const VARIANT_SCENARIOS: [&str; 4] = [
    "healthy.yaml",
    "bad-canary.yaml",
    "within-tolerance.yaml",
    "turns-bad.yaml",
];

/// One variant's results: (scenario file, scenario name, distribution).
pub struct VariantResult {
    pub label: &'static str,
    pub change: &'static str,
    pub by_scenario: Vec<(&'static str, String, Distribution)>,
}

fn variant_plan(replacement: &str) -> Result<Plan, String> {
    let line = "    # interval: omitted, 5s; confidence: omitted, 0.99; rollbackConfidence: omitted, 0.95\n";
    if !ROLLOUT.contains(line) {
        return Err(
            "examples/simulate/rollout.yaml no longer has the line the variants replace".into(),
        );
    }
    parse_rollout(&ROLLOUT.replace(line, replacement)).map(|(_, p)| p)
}

/// Run the variants.
pub fn run_variants(
    plan: &Plan,
    trials: u32,
    seed: u64,
    threads: usize,
    progress: bool,
) -> Result<Vec<VariantResult>, String> {
    let scenarios: Vec<(&'static str, Kind, Scenario)> = scenarios()?
        .into_iter()
        .filter(|(f, _, _)| VARIANT_SCENARIOS.contains(f))
        .collect();
    let plans: Vec<Plan> = VARIANTS
        .iter()
        .map(|(_, _, replacement)| variant_plan(replacement))
        .collect::<Result<_, _>>()?;
    let cells: Vec<(&Scenario, CellPolicy<'_>)> = plans
        .iter()
        .flat_map(|p| {
            scenarios
                .iter()
                .map(move |(_, _, s)| (s, CellPolicy::Rollwise(p)))
        })
        .collect();
    let summaries = run_cells(&cells, plan, trials, seed, threads, progress);
    Ok(VARIANTS
        .iter()
        .enumerate()
        .map(|(i, (label, change, _))| VariantResult {
            label,
            change,
            by_scenario: scenarios
                .iter()
                .enumerate()
                .map(|(j, (file, _, s))| {
                    (
                        *file,
                        s.name.clone(),
                        Distribution::of(
                            "rollwise",
                            &summaries[i * scenarios.len() + j],
                            s.duration,
                        ),
                    )
                })
                .collect(),
        })
        .collect())
}

/// `rollwise simulate benchmark`
pub fn main(args: BenchmarkArgs) -> ExitCode {
    let (_, plan) = match parse_rollout(ROLLOUT) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rollwise simulate benchmark: examples/simulate/rollout.yaml: {e}");
            return ExitCode::from(2);
        }
    };
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    eprintln!(
        "rollwise simulate benchmark: {} scenarios × 3 policies × {} trials on {threads} thread(s)",
        SCENARIOS.len(),
        args.trials
    );
    let started = Instant::now();
    let results = match run_matrix(&plan, args.trials, args.seed, threads, true) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rollwise simulate benchmark: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "rollwise alone with one setting changed, on {} scenarios:",
        VARIANT_SCENARIOS.len()
    );
    let variants = match run_variants(&plan, args.trials, args.seed, threads, true) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("rollwise simulate benchmark: {e}");
            return ExitCode::from(2);
        }
    };
    let report = super::report::render(&plan, &results, &variants, args.trials, args.seed);
    let took = started.elapsed();
    if args.out.as_os_str() == "-" {
        print!("{report}");
    } else {
        if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty())
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            eprintln!(
                "rollwise simulate benchmark: cannot create {}: {e}",
                dir.display()
            );
            return ExitCode::from(2);
        }
        if let Err(e) = std::fs::write(&args.out, &report) {
            eprintln!(
                "rollwise simulate benchmark: cannot write {}: {e}",
                args.out.display()
            );
            return ExitCode::from(2);
        }
        println!("wrote {}", args.out.display());
        if let Some(chart) = super::promote_chart::render(&results) {
            let path = args.out.with_file_name(CHART);
            if let Err(e) = std::fs::write(&path, chart) {
                eprintln!(
                    "rollwise simulate benchmark: cannot write {}: {e}",
                    path.display()
                );
                return ExitCode::from(2);
            }
            println!("wrote {}", path.display());
        }
    }
    for t in super::report::targets(&plan, &results) {
        println!(
            "  {} {}: {}",
            if t.met { "met   " } else { "MISSED" },
            t.name,
            t.measured
        );
    }
    eprintln!("took {:.1}s", took.as_secs_f64());
    ExitCode::SUCCESS
}

/// One target of the benchmark and whether it is met.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wald_expected_sample_sizes() {
        // 6% against 1.1%, α = 0.01, β = 0.1: about 71 requests.
        let n = wald_expected_n(0.06, 0.011, 0.01, 0.1);
        assert!((n - 71.0).abs() < 2.0, "{n}");
        // A healthy canary (0.6%) against 1.1%: thousands.
        let n = wald_expected_n(0.006, 0.011, 0.01, 0.1);
        assert!(n > 2_000.0 && n < 4_000.0, "{n}");
    }

    #[test]
    fn the_benchmark_rollout_and_scenarios_parse() {
        let (_, plan) = parse_rollout(ROLLOUT).unwrap();
        assert_eq!(plan.compare.len(), 1);
        assert_eq!((plan.confidence, plan.rollback_confidence), (0.99, 0.95));
        assert_eq!(plan.steps, crate::plan::compile::default_steps());
        for (file, _, text) in SCENARIOS {
            Scenario::parse(text, Base::None).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
}
