//! Every Rollout a user can copy — each example under `examples/` and each
//! Rollout in README.md — promotes a healthy canary and rolls back a
//! clearly bad one in `rollwise simulate`, over 100 seeds each: at most 1%
//! false rollbacks of a canary exactly as good as stable
//! (`examples/simulate/healthy.yaml`), every run of a canary with ten times
//! stable's errors rolled back (`bad-canary.yaml`). Pauses that wait for a
//! person are promoted after 10 minutes (`--auto-promote-after 10m`), and
//! A/B and preview routes match 5% of the requests (`--preview-traffic 5`).
//!
//! The simulations run in parallel threads, the real binary each time.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const SEEDS: &str = "100";
/// False rollbacks of a healthy canary tolerated per 100 seeds.
const MAX_FALSE_ROLLBACKS: usize = 1;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml") {
            out.push(p);
        }
    }
}

/// The example files holding a Rollout, and README's Rollouts written to
/// `tmp` (one file per fenced YAML block with `kind: Rollout`).
fn rollouts(tmp: &Path) -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    yaml_files(&root().join("examples"), &mut files);
    let mut out: Vec<(String, PathBuf)> = files
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .contains("\nkind: Rollout")
        })
        .map(|p| {
            let name = p.strip_prefix(root()).unwrap_or(&p).display().to_string();
            (name, p)
        })
        .collect();
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    for (i, block) in readme.split("```yaml\n").skip(1).enumerate() {
        let block = block.split("```").next().unwrap_or_default();
        if block.contains("kind: Rollout") {
            let path = tmp.join(format!("readme-{i}.yaml"));
            std::fs::write(&path, block).expect("write README's Rollout");
            out.push((format!("README.md yaml block {}", i + 1), path));
        }
    }
    out
}

/// The outcomes of 100 seeds: (promoted, rolled back, undecided), and the
/// first rollback's reason.
type Outcomes = Result<(usize, usize, usize, String), String>;

fn outcomes(rollout: &Path, scenario: &str) -> Outcomes {
    let scenario = root().join("examples/simulate").join(scenario);
    let out = Command::new(env!("CARGO_BIN_EXE_rollwise"))
        .arg("simulate")
        .arg("--rollout")
        .arg(rollout)
        .arg("--scenario")
        .arg(&scenario)
        .args(["--trials", SEEDS, "--auto-promote-after", "10m"])
        .args(["--preview-traffic", "5", "--json"])
        .env_remove("KUBECONFIG")
        .output()
        .map_err(|e| format!("cannot run rollwise: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "exit {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("not JSON: {e}"))?;
    let runs = v["results"][0]["runs"]
        .as_array()
        .ok_or_else(|| format!("no runs in {v}"))?;
    let count = |o: &str| runs.iter().filter(|r| r["outcome"] == o).count();
    let first = runs
        .iter()
        .find(|r| r["outcome"] == "rolledBack")
        .map(|r| {
            format!(
                "seed {}: {} after {}",
                r["seed"], r["reason"], r["decidedAfter"]
            )
        })
        .unwrap_or_default();
    Ok((
        count("promoted"),
        count("rolledBack"),
        count("undecided"),
        first,
    ))
}

#[test]
fn every_example_promotes_a_healthy_canary_and_rolls_back_a_bad_one() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let rollouts = rollouts(tmp.path());
    assert!(
        rollouts.len() >= 12,
        "the examples and README's Rollouts: {rollouts:?}"
    );
    let results: Vec<(String, String, Outcomes)> = std::thread::scope(|s| {
        let handles: Vec<_> = rollouts
            .iter()
            .flat_map(|(name, path)| {
                ["healthy.yaml", "bad-canary.yaml"].map(|scenario| {
                    let (name, path) = (name.clone(), path.clone());
                    s.spawn(move || (name, scenario.to_string(), outcomes(&path, scenario)))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a simulation thread"))
            .collect()
    });
    let mut problems = Vec::new();
    for (name, scenario, result) in &results {
        match result {
            Err(e) => problems.push(format!("{name} with {scenario}: {e}")),
            Ok((promoted, rolled_back, undecided, first)) => {
                eprintln!(
                    "{name:48} {scenario:16} promoted {promoted:3}, rolled back {rolled_back:3}, undecided {undecided:3}"
                );
                let ok = if scenario == "healthy.yaml" {
                    *rolled_back <= MAX_FALSE_ROLLBACKS && *undecided == 0
                } else {
                    *promoted == 0 && *undecided == 0
                };
                if !ok {
                    problems.push(format!(
                        "{name} with {scenario}: promoted {promoted}, rolled back {rolled_back}, undecided {undecided} of {SEEDS} (first rollback: {first})"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
