//! Metric analysis. The verdict logic here is pure; the I/O lives in
//! [`provider`] behind the [`MetricsProvider`] trait.

pub mod provider;
pub mod sequential;

use crate::api::Verdict;
use crate::plan::PlanMetric;

pub use provider::{MetricsProvider, ProviderError};

/// What one query returned: a value, no data, or an error. Three different
/// outcomes, never folded into one.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryOutcome {
    Value(f64),
    /// Empty result or NaN: the backend answered but has nothing to say.
    NoData(String),
    /// The backend could not answer (unreachable, timeout, rejected query).
    Error(String),
}

/// One metric's outcome in an analysis round.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricOutcome {
    pub name: String,
    pub outcome: QueryOutcome,
}

/// The counts of one side of a comparison, or why there are none.
#[derive(Debug, Clone, PartialEq)]
pub enum CountsOutcome {
    Counts(sequential::Counts),
    NoData(String),
    Error(String),
}

impl CountsOutcome {
    /// Combine the requests and failures queries of one side. No requests
    /// (no series, NaN or 0) is no data; requests but *no failure series*
    /// is zero failures (a `code=~"5.."` selector has no series until the
    /// first error).
    pub fn from_queries(requests: QueryOutcome, failures: QueryOutcome) -> Self {
        match (requests, failures) {
            (QueryOutcome::Error(e), _) | (_, QueryOutcome::Error(e)) => CountsOutcome::Error(e),
            (QueryOutcome::NoData(m), _) => CountsOutcome::NoData(format!("requests: {m}")),
            (QueryOutcome::Value(r), _) if r.is_nan() || r <= 0.0 => {
                CountsOutcome::NoData("no requests in the window yet".into())
            }
            (QueryOutcome::Value(r), QueryOutcome::NoData(_)) => {
                CountsOutcome::Counts(sequential::Counts {
                    requests: r,
                    failures: 0.0,
                })
            }
            (QueryOutcome::Value(r), QueryOutcome::Value(f)) => {
                CountsOutcome::Counts(sequential::Counts {
                    requests: r,
                    failures: if f.is_nan() { 0.0 } else { f },
                })
            }
        }
    }
}

/// One comparison's outcome in an analysis round.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareOutcome {
    pub name: String,
    pub canary: CountsOutcome,
    pub stable: CountsOutcome,
}

/// Fill the template variables of a query.
pub fn render_query(query: &str, service: &str, namespace: &str, rollout: &str) -> String {
    query
        .replace("{{service}}", service)
        .replace("{{ service }}", service)
        .replace("{{namespace}}", namespace)
        .replace("{{ namespace }}", namespace)
        .replace("{{rollout}}", rollout)
        .replace("{{ rollout }}", rollout)
}

/// Fill `{{window}}` (a Prometheus duration in whole seconds) as well.
pub fn render_window(query: &str, window: std::time::Duration) -> String {
    let w = format!("{}s", window.as_secs().max(1));
    query.replace("{{window}}", &w).replace("{{ window }}", &w)
}

/// A percentage for people: `0.73%`.
pub fn fmt_pct(rate: f64) -> String {
    format!("{}%", fmt_num(rate * 100.0))
}

/// Judge a threshold metric's outcome. Bounds are inclusive. Infinity is a
/// value (it fails a max bound); NaN is no data.
pub fn judge(metric: &PlanMetric, outcome: &QueryOutcome) -> Verdict {
    match outcome {
        QueryOutcome::Value(v) if v.is_nan() => Verdict::NoData,
        QueryOutcome::Value(v) => {
            let too_high = metric.max.is_some_and(|max| *v > max);
            let too_low = metric.min.is_some_and(|min| *v < min);
            if too_high || too_low {
                Verdict::Fail
            } else {
                Verdict::Pass
            }
        }
        QueryOutcome::NoData(_) => Verdict::NoData,
        QueryOutcome::Error(_) => Verdict::Error,
    }
}

/// A number for people: 4 significant digits, no float noise.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == 0.0 {
        return "0".into();
    }
    let digits = (4 - 1 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Describe the bound of a metric, e.g. `<= 0.01` or `within [0.9, 1]`.
pub fn describe_bound(metric: &PlanMetric) -> String {
    match (metric.min, metric.max) {
        (Some(lo), Some(hi)) => format!("within [{lo}, {hi}]"),
        (None, Some(hi)) => format!("<= {hi}"),
        (Some(lo), None) => format!(">= {lo}"),
        (None, None) => "unbounded".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(min: Option<f64>, max: Option<f64>) -> PlanMetric {
        PlanMetric {
            name: "m".into(),
            query: "q".into(),
            min,
            max,
            failure_limit: 0,
        }
    }

    #[test]
    fn bounds_are_inclusive_and_nan_is_no_data() {
        let m = metric(Some(0.5), Some(1.0));
        assert_eq!(judge(&m, &QueryOutcome::Value(1.0)), Verdict::Pass);
        assert_eq!(judge(&m, &QueryOutcome::Value(0.5)), Verdict::Pass);
        assert_eq!(judge(&m, &QueryOutcome::Value(1.0001)), Verdict::Fail);
        assert_eq!(judge(&m, &QueryOutcome::Value(0.4)), Verdict::Fail);
        assert_eq!(judge(&m, &QueryOutcome::Value(f64::NAN)), Verdict::NoData);
        assert_eq!(
            judge(&m, &QueryOutcome::Value(f64::INFINITY)),
            Verdict::Fail
        );
        assert_eq!(
            judge(&m, &QueryOutcome::NoData("empty".into())),
            Verdict::NoData
        );
        assert_eq!(
            judge(&m, &QueryOutcome::Error("down".into())),
            Verdict::Error
        );
    }

    #[test]
    fn numbers_are_shown_with_four_significant_digits() {
        assert_eq!(fmt_num(0.06666666666666667), "0.06667");
        assert_eq!(fmt_num(0.0017482517482517483), "0.001748");
        assert_eq!(fmt_num(0.02), "0.02");
        assert_eq!(fmt_num(1234.5678), "1235");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(f64::INFINITY), "inf");
    }

    #[test]
    fn template_variables_are_filled() {
        assert_eq!(
            render_query(
                r#"x{service="{{service}}",ns="{{ namespace }}",r="{{rollout}}"}"#,
                "a",
                "b",
                "c"
            ),
            r#"x{service="a",ns="b",r="c"}"#
        );
    }
}
