//! The per-Rollout series (canary weight, alerted conditions, analysis
//! errors in a row, the latest analysis values, the comparisons' rates,
//! bounds and evidence, the budget), kept as plain numbers in one table and
//! turned into metric families only when `/metrics` is scraped.
//!
//! The prometheus crate's metric vectors keep, for every series, its own
//! copy of the family's description, its label pairs as strings and an
//! atomic cell: about 650 bytes a series (measured: 4 series for each of
//! 10,000 Rollouts cost 33 MiB). A Rollout with one comparison has 11
//! series; 10,000 of them would hold 70 MiB for numbers a scrape reads once
//! a minute. Here a Rollout costs one table entry (its name, its
//! namespace shared with the other Rollouts of that namespace, the numbers),
//! and a scrape writes their text directly (no intermediate metric objects:
//! building 10,000 of them for every scrape cost 4 MiB for a moment).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use std::fmt::Write as _;

use crate::api::RolloutStatus;

/// The conditions exported per Rollout by `rollwise_rollout_condition`.
pub const ALERTED_CONDITIONS: [&str; 3] = ["Stalled", "Paused", "RolledBack"];

/// The families, as (name without the registry's prefix, help, labels
/// besides `namespace` and `rollout`).
const FAMILIES: [(&str, &str, &[&str]); 8] = [
    (
        "canary_weight_percent",
        "Canary weight carried by the router",
        &[],
    ),
    (
        "rollout_condition",
        "Per Rollout: 1 while the condition (Stalled, Paused, RolledBack) is True (no series otherwise)",
        &["condition"],
    ),
    (
        "analysis_consecutive_errors",
        "Per Rollout: metric queries that failed in a row, while there are any (rolled back at consecutiveErrorLimit)",
        &[],
    ),
    (
        "analysis_value",
        "Latest value of each threshold metric",
        &["metric"],
    ),
    (
        "comparison_error_rate",
        "Latest error rate of each comparison, per side",
        &["comparison", "side"],
    ),
    (
        "comparison_excess",
        "Interval (valid at every look) for the canary's error rate above stable + tolerance",
        &["comparison", "bound"],
    ),
    (
        "comparison_evidence",
        "Evidence (e-value) that the canary is worse than tolerated (harm) or within tolerance (fine); conclusive at its bar (kind=harm_bar, 1/(1-rollbackConfidence); kind=bar, 1/(1-confidence))",
        &["comparison", "kind"],
    ),
    (
        "budget_extra_failures",
        "Extra failed requests caused by the canary, and the budget",
        &["estimate"],
    ),
];

/// One comparison's latest figures.
#[derive(Debug, Clone, PartialEq)]
struct ComparisonSeries {
    name: Box<str>,
    /// canary, stable
    rate: [f64; 2],
    /// lower, upper
    excess: [f64; 2],
    /// harm, fine, bar (fine's), harm_bar
    evidence: [f64; 4],
}

/// What only a Rollout with analysis has (boxed: most entries have none).
#[derive(Debug, Default, Clone, PartialEq)]
struct AnalysisSeries {
    values: Vec<(Box<str>, f64)>,
    comparisons: Vec<ComparisonSeries>,
    /// point, upper, max
    budget: Option<[f64; 3]>,
}

/// One Rollout's numbers.
#[derive(Debug, Default, Clone, PartialEq)]
struct Entry {
    canary_weight: Option<i64>,
    /// One bit per [`ALERTED_CONDITIONS`].
    conditions: u8,
    consecutive_errors: u32,
    analysis: Option<Box<AnalysisSeries>>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        *self == Entry::default()
    }
}

#[derive(Default)]
struct Table {
    /// Namespace names, shared by the entries of a namespace.
    namespaces: HashSet<Arc<str>>,
    entries: HashMap<(Arc<str>, Box<str>), Entry>,
}

impl Table {
    fn entry(&mut self, namespace: &str, name: &str) -> &mut Entry {
        let ns = match self.namespaces.get(namespace) {
            Some(ns) => ns.clone(),
            None => {
                let ns: Arc<str> = Arc::from(namespace);
                self.namespaces.insert(ns.clone());
                ns
            }
        };
        self.entries.entry((ns, Box::from(name))).or_default()
    }

    /// Drop an entry left with nothing (and its namespace when no entry
    /// uses it any more).
    fn tidy(&mut self, namespace: &str, name: &str) {
        let Some(ns) = self.namespaces.get(namespace).cloned() else {
            return;
        };
        let key = (ns, Box::from(name));
        if self.entries.get(&key).is_some_and(Entry::is_empty) {
            self.entries.remove(&key);
        }
        // Two references: the set's and `key`'s.
        if Arc::strong_count(&key.0) == 2 {
            self.namespaces.remove(namespace);
        }
    }
}

/// The per-Rollout series, written into `/metrics` by
/// [`PerRollout::encode`]. Cheap to clone (shared table).
#[derive(Clone, Default)]
pub struct PerRollout {
    table: Arc<Mutex<Table>>,
}

impl PerRollout {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Table) -> T) -> T {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut table)
    }

    /// The canary weight the router carries.
    pub fn set_canary_weight(&self, namespace: &str, name: &str, weight: i64) {
        self.with(|t| t.entry(namespace, name).canary_weight = Some(weight));
    }

    /// The alerted conditions and the analysis errors in a row, from a
    /// status. Sparse: a condition that is not True and an error streak of
    /// 0 have no series (alerts compare with `== 1` / `>= N`, which an
    /// absent series satisfies the same way as a 0).
    pub fn set_status(&self, namespace: &str, name: &str, status: &RolloutStatus) {
        let mut bits = 0u8;
        for (i, condition) in ALERTED_CONDITIONS.iter().enumerate() {
            if status
                .conditions
                .iter()
                .any(|c| c.type_ == *condition && c.status == "True")
            {
                bits |= 1 << i;
            }
        }
        self.with(|t| {
            let e = t.entry(namespace, name);
            e.conditions = bits;
            e.consecutive_errors = u32::try_from(status.consecutive_errors).unwrap_or(0);
            t.tidy(namespace, name);
        });
    }

    /// The latest analysis figures of a status: each threshold metric's
    /// value (no series while it has none), each comparison that has seen
    /// canary requests, the budget when there is one.
    pub fn set_analysis(&self, namespace: &str, name: &str, status: &RolloutStatus) {
        self.with(|t| {
            let e = t.entry(namespace, name);
            let a = e.analysis.get_or_insert_with(Box::default);
            for m in &status.analysis {
                let at = a.values.iter().position(|(n, _)| **n == *m.name);
                match (m.value, at) {
                    (Some(v), Some(i)) => a.values[i].1 = v,
                    (Some(v), None) => a.values.push((Box::from(m.name.as_str()), v)),
                    (None, Some(i)) => {
                        a.values.remove(i);
                    }
                    (None, None) => {}
                }
            }
            for c in status
                .comparisons
                .iter()
                .filter(|c| c.canary_requests > 0.0)
            {
                let series = ComparisonSeries {
                    name: Box::from(c.name.as_str()),
                    rate: [c.canary_rate, c.stable_rate],
                    excess: [c.excess_lower, c.excess_upper],
                    evidence: [
                        c.harm_evidence,
                        c.fine_evidence,
                        c.evidence_bar,
                        c.harm_bar(),
                    ],
                };
                match a.comparisons.iter_mut().find(|s| s.name == series.name) {
                    Some(s) => *s = series,
                    None => a.comparisons.push(series),
                }
            }
            if let Some(b) = &status.budget {
                a.budget = Some([b.used, b.upper, b.max]);
            }
            if **a == AnalysisSeries::default() {
                e.analysis = None;
            }
            t.tidy(namespace, name);
        });
    }

    /// Forget a Rollout's series.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.with(|t| {
            if let Some(e) = t
                .namespaces
                .get(namespace)
                .cloned()
                .and_then(|ns| t.entries.get_mut(&(ns, Box::from(name))))
            {
                *e = Entry::default();
            }
            t.tidy(namespace, name);
        });
    }

    /// Rollouts with at least one series.
    pub fn len(&self) -> usize {
        self.with(|t| t.entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A label value as the text format wants it.
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        v.into()
    }
}

/// One sample line: `{prefix}_{family}{labels} value`, labels sorted by
/// name (as the client library's own vectors write them), the value as the
/// library writes it.
fn sample(
    out: &mut String,
    name: &str,
    namespace: &str,
    rollout: &str,
    extra: &[(&str, &str)],
    value: f64,
) {
    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(2 + extra.len());
    labels.push(("namespace", namespace));
    labels.push(("rollout", rollout));
    labels.extend_from_slice(extra);
    labels.sort_by(|a, b| a.0.cmp(b.0));
    out.push_str(name);
    for (i, (label, v)) in labels.into_iter().enumerate() {
        out.push(if i == 0 { '{' } else { ',' });
        let _ = write!(out, "{label}=\"{}\"", escape(v));
    }
    let _ = writeln!(out, "}} {value}");
}

impl PerRollout {
    /// Append the families that have a series, in the text exposition
    /// format, their names prefixed with `prefix_`. Rollouts in order of
    /// namespace and name.
    pub fn encode(&self, prefix: &str, out: &mut String) {
        let mut families: [String; FAMILIES.len()] = Default::default();
        let names: Vec<String> = FAMILIES
            .iter()
            .map(|(name, _, _)| format!("{prefix}_{name}"))
            .collect();
        self.with(|t| {
            let mut keys: Vec<&(Arc<str>, Box<str>)> = t.entries.keys().collect();
            keys.sort_unstable();
            for key in keys {
                let (ns, name) = (&*key.0, &*key.1);
                let e = &t.entries[key];
                if let Some(w) = e.canary_weight {
                    sample(&mut families[0], &names[0], ns, name, &[], w as f64);
                }
                for (i, condition) in ALERTED_CONDITIONS.iter().enumerate() {
                    if e.conditions & (1 << i) != 0 {
                        let extra = [("condition", *condition)];
                        sample(&mut families[1], &names[1], ns, name, &extra, 1.0);
                    }
                }
                if e.consecutive_errors > 0 {
                    let v = f64::from(e.consecutive_errors);
                    sample(&mut families[2], &names[2], ns, name, &[], v);
                }
                let Some(a) = &e.analysis else { continue };
                for (metric, v) in &a.values {
                    let extra = [("metric", &**metric)];
                    sample(&mut families[3], &names[3], ns, name, &extra, *v);
                }
                for c in &a.comparisons {
                    let cmp = ("comparison", &*c.name);
                    for (side, v) in ["canary", "stable"].into_iter().zip(c.rate) {
                        let extra = [cmp, ("side", side)];
                        sample(&mut families[4], &names[4], ns, name, &extra, v);
                    }
                    for (bound, v) in ["lower", "upper"].into_iter().zip(c.excess) {
                        let extra = [cmp, ("bound", bound)];
                        sample(&mut families[5], &names[5], ns, name, &extra, v);
                    }
                    for (kind, v) in ["harm", "fine", "bar", "harm_bar"]
                        .into_iter()
                        .zip(c.evidence)
                    {
                        let extra = [cmp, ("kind", kind)];
                        sample(&mut families[6], &names[6], ns, name, &extra, v);
                    }
                }
                if let Some(b) = a.budget {
                    for (estimate, v) in ["point", "upper", "max"].into_iter().zip(b) {
                        let extra = [("estimate", estimate)];
                        sample(&mut families[7], &names[7], ns, name, &extra, v);
                    }
                }
            }
        });
        for ((name, (_, help, _)), lines) in names.iter().zip(FAMILIES).zip(families) {
            if lines.is_empty() {
                continue;
            }
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            out.push_str(&lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BudgetStatus, ComparisonStatus, MetricStatus};

    fn render(p: &PerRollout) -> String {
        let mut out = String::new();
        p.encode("rollwise", &mut out);
        out
    }

    fn analysed() -> RolloutStatus {
        RolloutStatus {
            analysis: vec![
                MetricStatus {
                    name: "latency".into(),
                    value: Some(0.25),
                    ..Default::default()
                },
                MetricStatus {
                    name: "saturation".into(),
                    value: None,
                    ..Default::default()
                },
            ],
            comparisons: vec![
                ComparisonStatus {
                    name: "errors".into(),
                    canary_requests: 10.0,
                    canary_rate: 0.1,
                    stable_rate: 0.01,
                    excess_lower: 0.02,
                    excess_upper: 0.3,
                    harm_evidence: 40.0,
                    fine_evidence: 0.5,
                    evidence_bar: 20.0,
                    ..Default::default()
                },
                ComparisonStatus {
                    name: "unseen".into(),
                    canary_requests: 0.0,
                    ..Default::default()
                },
            ],
            budget: Some(BudgetStatus {
                used: 3.0,
                upper: 7.5,
                max: 50.0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn every_figure_of_an_analysed_rollout_is_a_series_with_sorted_labels() {
        let p = PerRollout::new();
        p.set_canary_weight("shop", "checkout", 33);
        p.set_analysis("shop", "checkout", &analysed());
        let text = render(&p);
        for series in [
            r#"rollwise_canary_weight_percent{namespace="shop",rollout="checkout"} 33"#,
            r#"rollwise_analysis_value{metric="latency",namespace="shop",rollout="checkout"} 0.25"#,
            r#"rollwise_comparison_error_rate{comparison="errors",namespace="shop",rollout="checkout",side="canary"} 0.1"#,
            r#"rollwise_comparison_error_rate{comparison="errors",namespace="shop",rollout="checkout",side="stable"} 0.01"#,
            r#"rollwise_comparison_excess{bound="lower",comparison="errors",namespace="shop",rollout="checkout"} 0.02"#,
            r#"rollwise_comparison_excess{bound="upper",comparison="errors",namespace="shop",rollout="checkout"} 0.3"#,
            r#"rollwise_comparison_evidence{comparison="errors",kind="harm",namespace="shop",rollout="checkout"} 40"#,
            r#"rollwise_comparison_evidence{comparison="errors",kind="fine",namespace="shop",rollout="checkout"} 0.5"#,
            r#"rollwise_comparison_evidence{comparison="errors",kind="bar",namespace="shop",rollout="checkout"} 20"#,
            r#"rollwise_budget_extra_failures{estimate="point",namespace="shop",rollout="checkout"} 3"#,
            r#"rollwise_budget_extra_failures{estimate="upper",namespace="shop",rollout="checkout"} 7.5"#,
            r#"rollwise_budget_extra_failures{estimate="max",namespace="shop",rollout="checkout"} 50"#,
            "# TYPE rollwise_comparison_evidence gauge",
            "# HELP rollwise_canary_weight_percent Canary weight carried by the router",
        ] {
            assert!(text.contains(series), "{series} missing in\n{text}");
        }
        // No value, no series; a comparison with no canary request yet has none.
        assert!(!text.contains("saturation"), "{text}");
        assert!(!text.contains("unseen"), "{text}");
    }

    #[test]
    fn a_value_that_goes_away_loses_its_series_and_later_rounds_update_in_place() {
        let p = PerRollout::new();
        p.set_analysis("shop", "checkout", &analysed());
        let mut later = analysed();
        later.analysis[0].value = None;
        later.comparisons[0].canary_rate = 0.2;
        later.budget = None;
        p.set_analysis("shop", "checkout", &later);
        let text = render(&p);
        assert!(!text.contains("latency"), "{text}");
        assert_eq!(text.matches(r#"side="canary""#).count(), 1, "{text}");
        assert!(text.contains(r#"side="canary"} 0.2"#), "{text}");
        // The budget of an earlier round stays until a newer one (as status keeps it).
        assert!(text.contains(r#"estimate="max""#), "{text}");
    }

    #[test]
    fn conditions_and_error_streaks_are_sparse() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        let p = PerRollout::new();
        let condition = |type_: &str, status: &str| Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        };
        let status = RolloutStatus {
            consecutive_errors: 3,
            conditions: vec![
                condition("Paused", "True"),
                condition("Stalled", "False"),
                condition("Ready", "True"),
            ],
            ..Default::default()
        };
        p.set_status("shop", "checkout", &status);
        let text = render(&p);
        assert!(text.contains(
            r#"rollwise_rollout_condition{condition="Paused",namespace="shop",rollout="checkout"} 1"#
        ));
        assert_eq!(
            text.matches("rollwise_rollout_condition{").count(),
            1,
            "{text}"
        );
        assert!(text.contains(
            r#"rollwise_analysis_consecutive_errors{namespace="shop",rollout="checkout"} 3"#
        ));
        p.set_status("shop", "checkout", &RolloutStatus::default());
        assert_eq!(render(&p), "");
        // Nothing left: no entry and no namespace kept for it.
        assert!(p.is_empty());
        assert!(p.with(|t| t.namespaces.is_empty()));
    }

    #[test]
    fn label_values_are_escaped_and_rollouts_come_in_order() {
        let p = PerRollout::new();
        p.set_canary_weight("shop", "b", 1);
        p.set_canary_weight("shop", "a", 2);
        p.set_canary_weight("ns\"x\\y\nz", "a", 3);
        let text = render(&p);
        assert!(
            text.contains(
                r#"rollwise_canary_weight_percent{namespace="ns\"x\\y\nz",rollout="a"} 3"#
            ),
            "{text}"
        );
        let a = text.find(r#"namespace="shop",rollout="a""#).unwrap();
        let b = text.find(r#"namespace="shop",rollout="b""#).unwrap();
        assert!(a < b, "{text}");
        // One HELP and one TYPE line per family, before its samples.
        assert_eq!(
            text.matches("# TYPE rollwise_canary_weight_percent gauge\n")
                .count(),
            1
        );
        assert!(
            text.starts_with("# HELP rollwise_canary_weight_percent "),
            "{text}"
        );
    }

    #[test]
    fn forgetting_one_rollout_keeps_the_others_and_their_shared_namespace() {
        let p = PerRollout::new();
        for name in ["a", "b"] {
            p.set_canary_weight("shop", name, 5);
        }
        p.set_canary_weight("other", "a", 50);
        p.forget("shop", "a");
        p.forget("shop", "missing");
        p.forget("nowhere", "a");
        let text = render(&p);
        assert!(!text.contains(r#"namespace="shop",rollout="a""#), "{text}");
        assert!(
            text.contains(r#"namespace="shop",rollout="b"} 5"#),
            "{text}"
        );
        assert!(
            text.contains(r#"namespace="other",rollout="a"} 50"#),
            "{text}"
        );
        assert_eq!(p.len(), 2);
        p.forget("shop", "b");
        assert!(p.with(|t| t.namespaces.len() == 1 && t.namespaces.contains("other")));
    }
}
