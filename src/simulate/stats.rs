//! Distributions over many seeded runs.

use serde::Serialize;

use super::world::{Summary, Verdict, human};

/// A quantile that may lie beyond the simulated duration (undecided runs
/// count as "later than the end").
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "value")]
pub enum Quantile {
    Value(f64),
    /// More than this many seconds (the scenario's duration).
    Beyond(f64),
    /// No run to take it from.
    None,
}

impl Quantile {
    pub fn value(self) -> Option<f64> {
        match self {
            Quantile::Value(v) => Some(v),
            _ => None,
        }
    }

    /// As a duration for people.
    pub fn time(self) -> String {
        match self {
            Quantile::Value(v) => human(v.round() as u64),
            Quantile::Beyond(v) => format!("> {}", human(v.round() as u64)),
            Quantile::None => "-".into(),
        }
    }

    /// As a count for people.
    pub fn count(self) -> String {
        match self {
            Quantile::Value(v) => crate::analysis::fmt_num(v.round()),
            Quantile::Beyond(_) => "undecided".into(),
            Quantile::None => "-".into(),
        }
    }
}

/// Nearest-rank quantile of `values` where `censored` more values lie
/// beyond `limit`.
pub fn quantile(values: &[f64], censored: usize, limit: f64, q: f64) -> Quantile {
    let n = values.len() + censored;
    if n == 0 {
        return Quantile::None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    if rank <= v.len() {
        Quantile::Value(v[rank - 1])
    } else {
        Quantile::Beyond(limit)
    }
}

/// The distribution of many runs of one policy on one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Distribution {
    pub policy: String,
    pub trials: usize,
    pub promoted: usize,
    pub rolled_back: usize,
    pub undecided: usize,
    /// Seconds to a decision (promotion or rollback).
    pub median_time_to_decision: Quantile,
    pub p90_time_to_decision: Quantile,
    /// Seconds to a promotion, over the promoted runs only.
    pub median_time_to_promote: Quantile,
    /// Every promoted run's time to promote, in seconds.
    pub promote_times: Vec<f64>,
    /// Failed requests served by the canary until the decision.
    pub median_failed_canary_requests: Quantile,
    pub p90_failed_canary_requests: Quantile,
    /// Requests served by the canary until the decision.
    pub median_canary_requests: Quantile,
    /// Requests served by the canary until the statistics concluded (rollwise).
    pub median_canary_requests_to_evidence: Quantile,
    pub median_extra_failures: Quantile,
    /// Share of runs rolled back.
    pub rollback_rate: f64,
    /// 95% upper bound of the rollback rate (Wilson score interval).
    pub rollback_rate_upper95: f64,
}

/// Wilson score upper bound for `k` successes in `n` trials at z.
pub fn wilson_upper(k: usize, n: usize, z: f64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = p + z * z / (2.0 * n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    ((centre + half) / denom).min(1.0)
}

impl Distribution {
    /// `duration`: the scenario's, for undecided runs.
    pub fn of(policy: &str, runs: &[Summary], duration: u64) -> Distribution {
        let limit = duration as f64;
        let n = runs.len();
        let count = |v: Verdict| runs.iter().filter(|r| r.outcome == v).count();
        let (promoted, rolled_back, undecided) = (
            count(Verdict::Promoted),
            count(Verdict::RolledBack),
            count(Verdict::Undecided),
        );
        let decided: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.decided_after_seconds.map(|s| s as f64))
            .collect();
        let promote_times: Vec<f64> = runs
            .iter()
            .filter(|r| r.outcome == Verdict::Promoted)
            .filter_map(|r| r.decided_after_seconds.map(|s| s as f64))
            .collect();
        let all = |f: &dyn Fn(&Summary) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        let failed = all(&|r| r.canary_failures as f64);
        let requests = all(&|r| r.canary_requests as f64);
        let extra = all(&|r| r.extra_failures);
        let to_evidence: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.canary_requests_to_evidence.map(|n| n as f64))
            .collect();
        let inconclusive = n - to_evidence.len();
        Distribution {
            policy: policy.to_string(),
            trials: n,
            promoted,
            rolled_back,
            undecided,
            median_time_to_decision: quantile(&decided, undecided, limit, 0.5),
            p90_time_to_decision: quantile(&decided, undecided, limit, 0.9),
            median_time_to_promote: quantile(&promote_times, 0, limit, 0.5),
            promote_times: promote_times.clone(),
            median_failed_canary_requests: quantile(&failed, 0, limit, 0.5),
            p90_failed_canary_requests: quantile(&failed, 0, limit, 0.9),
            median_canary_requests: quantile(&requests, 0, limit, 0.5),
            median_canary_requests_to_evidence: if to_evidence.is_empty() {
                Quantile::None
            } else {
                quantile(&to_evidence, inconclusive, limit, 0.5)
            },
            median_extra_failures: quantile(&extra, 0, limit, 0.5),
            rollback_rate: if n == 0 {
                0.0
            } else {
                rolled_back as f64 / n as f64
            },
            rollback_rate_upper95: wilson_upper(rolled_back, n, 1.96),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles_with_censoring() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&v, 0, 99.0, 0.5), Quantile::Value(3.0));
        assert_eq!(quantile(&v, 0, 99.0, 0.9), Quantile::Value(5.0));
        assert_eq!(quantile(&v, 5, 99.0, 0.5), Quantile::Value(5.0));
        assert_eq!(quantile(&v, 6, 99.0, 0.5), Quantile::Beyond(99.0));
        assert_eq!(quantile(&[], 0, 99.0, 0.5), Quantile::None);
    }

    #[test]
    fn wilson_bound() {
        assert!((wilson_upper(0, 500, 1.96) - 0.00762).abs() < 1e-4);
        assert!(wilson_upper(5, 500, 1.96) > 0.01);
        assert_eq!(wilson_upper(0, 0, 1.96), 1.0);
    }
}
