//! The simulated world: a virtual clock that ticks once per second, traffic
//! served between ticks and split by the weight the policy under test asked
//! for, and the loop that lets the policy look at the traffic and decide —
//! as the controller does with a real router and Prometheus.

use serde::Serialize;

use super::rng::Rng;
use super::scenario::{Arrivals, Scenario};

/// Served requests and failures of both versions over a span of seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub stable_requests: u64,
    pub stable_failures: u64,
    pub canary_requests: u64,
    pub canary_failures: u64,
}

impl Counts {
    pub fn canary_rate(&self) -> Option<f64> {
        (self.canary_requests > 0)
            .then(|| self.canary_failures as f64 / self.canary_requests as f64)
    }
    pub fn stable_rate(&self) -> Option<f64> {
        (self.stable_requests > 0)
            .then(|| self.stable_failures as f64 / self.stable_requests as f64)
    }
}

/// Traffic served so far, second by second (prefix sums: any window is O(1)).
#[derive(Debug, Clone)]
pub struct Traffic {
    seed: u64,
    arrivals: Arrivals,
    /// `cum[i]`: totals over seconds `[0, i)`.
    cum: Vec<[u64; 4]>,
    /// Failures the stable version would be expected to have had on the
    /// requests the canary served (its configured rate at the time).
    pub stable_expected_on_canary: f64,
    carry_total: f64,
    carry_canary: f64,
    /// Prometheus' scrape interval in seconds (0: every look sees fresh
    /// counts) and the second of the first scrape.
    scrape: u64,
    phase: u64,
}

impl Traffic {
    pub fn new(seed: u64, arrivals: Arrivals) -> Self {
        Traffic {
            seed,
            arrivals,
            cum: vec![[0; 4]],
            stable_expected_on_canary: 0.0,
            carry_total: 0.0,
            carry_canary: 0.0,
            scrape: 0,
            phase: 0,
        }
    }

    /// Counts as a Prometheus that scrapes every `seconds` sees them: a
    /// query at `t` sees the counters of the latest scrape at or before
    /// `t`. Each seed scrapes at its own phase, as real targets do.
    pub fn with_scrape_interval(mut self, seconds: u64) -> Self {
        self.scrape = seconds;
        self.phase = if seconds > 0 { self.seed % seconds } else { 0 };
        self
    }

    /// The second of the latest scrape at or before `t` (`t` itself when
    /// counts are fresh).
    pub fn scraped(&self, t: u64) -> u64 {
        if self.scrape == 0 {
            return t;
        }
        if t < self.phase {
            return 0;
        }
        self.phase + (t - self.phase) / self.scrape * self.scrape
    }

    /// What a query at `t` over `[from, t)` sees: the counts up to the
    /// latest scrape.
    pub fn seen_window(&self, from: u64, t: u64) -> Counts {
        self.window(from, self.scraped(t))
    }

    /// What a query at `t` over the last `seconds` (`increase(x[1m])`)
    /// sees: the `seconds` before the latest scrape.
    pub fn seen_last(&self, t: u64, seconds: u64) -> Counts {
        self.last(self.scraped(t), seconds)
    }

    /// Seconds served so far.
    pub fn served(&self) -> u64 {
        (self.cum.len() - 1) as u64
    }

    /// Serve the next second with `weight`% of the requests on the canary.
    pub fn serve(&mut self, scenario: &Scenario, weight: u8) {
        let t = self.served();
        let mut rng = Rng::for_tick(self.seed, t);
        let rps = scenario.rps(t);
        let share = weight.min(100) as f64 / 100.0;
        let (total, canary) = match self.arrivals {
            Arrivals::Poisson => {
                let total = rng.poisson(rps);
                (total, rng.binomial(total, share))
            }
            Arrivals::Deterministic => {
                self.carry_total += rps;
                let total = self.carry_total.floor();
                self.carry_total -= total;
                self.carry_canary += total * share;
                let canary = self.carry_canary.floor().min(total);
                self.carry_canary -= canary;
                (total as u64, canary as u64)
            }
        };
        let stable = total - canary;
        let ps = scenario.stable_error_rate(t);
        let pc = scenario.canary_error_rate(t);
        let cf = rng.binomial(canary, pc);
        let sf = rng.binomial(stable, ps);
        self.stable_expected_on_canary += canary as f64 * ps;
        let last = *self.cum.last().expect("never empty");
        self.cum.push([
            last[0] + stable,
            last[1] + sf,
            last[2] + canary,
            last[3] + cf,
        ]);
    }

    /// Counts over the seconds `[from, to)` (clamped to what was served).
    pub fn window(&self, from: u64, to: u64) -> Counts {
        let n = self.served();
        let (from, to) = (from.min(n) as usize, to.min(n) as usize);
        if to <= from {
            return Counts::default();
        }
        let (a, b) = (self.cum[from], self.cum[to]);
        Counts {
            stable_requests: b[0] - a[0],
            stable_failures: b[1] - a[1],
            canary_requests: b[2] - a[2],
            canary_failures: b[3] - a[3],
        }
    }

    /// Counts over the last `seconds` before `t`.
    pub fn last(&self, t: u64, seconds: u64) -> Counts {
        self.window(t.saturating_sub(seconds), t)
    }

    pub fn total(&self) -> Counts {
        self.window(0, self.served())
    }
}

/// What a decision looks like on the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Mark {
    Start,
    Advance,
    Hold,
    Rollback,
    Promote,
}

/// One line of the timeline: a decision that changed something.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Seconds since the start.
    pub t: u64,
    pub step: String,
    /// The canary weight after the decision.
    pub weight: u8,
    /// The policy's own name for the decision (rollwise: the engine's
    /// DecisionKind).
    pub kind: String,
    pub reason: String,
    pub message: String,
    pub mark: Mark,
    /// Error rates over the minute before the decision (`None`: no requests).
    pub canary_error_rate: Option<f64>,
    pub stable_error_rate: Option<f64>,
}

impl Event {
    pub fn new(
        t: u64,
        step: impl Into<String>,
        weight: u8,
        kind: &str,
        reason: &str,
        message: String,
        mark: Mark,
    ) -> Self {
        Event {
            t,
            step: step.into(),
            weight,
            kind: kind.to_string(),
            reason: reason.to_string(),
            message,
            mark,
            canary_error_rate: None,
            stable_error_rate: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    Promoted,
    RolledBack,
    /// The scenario's duration ran out first.
    Undecided,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Promoted => "promoted",
            Verdict::RolledBack => "rolled back",
            Verdict::Undecided => "undecided",
        }
    }
}

/// A decision procedure under test: the rollwise engine, or one of the
/// documented rules of the products it is compared with.
pub trait Policy {
    fn name(&self) -> &'static str;
    /// Its configuration in one line.
    fn describe(&self) -> String;
    /// The canary weight the router carries now.
    fn weight(&self) -> u8;
    /// The share (percent) of requests the canary serves now: the weight,
    /// or more while an A/B or preview route sends it chosen requests.
    fn traffic_share(&self) -> u8 {
        self.weight()
    }
    /// Second `t`: the traffic of `[0, t)` has been served. Push what
    /// changed to `events`; return the verdict and its reason when decided.
    fn tick(
        &mut self,
        t: u64,
        traffic: &Traffic,
        canary_ready: bool,
        events: &mut Vec<Event>,
    ) -> Option<(Verdict, String)>;
    /// Whether the policy's statistics have reached a conclusion (harm or
    /// fine) by now, whatever its steps still do. Only sequential tests
    /// know this; threshold rules never conclude before they decide.
    fn conclusive(&self) -> bool {
        false
    }
}

/// The numbers of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub policy: String,
    pub seed: u64,
    pub outcome: Verdict,
    /// The rule that decided (e.g. CanaryWorse, EvidenceFine).
    pub reason: String,
    /// Seconds from the start to the decision (`None`: undecided).
    pub decided_after_seconds: Option<u64>,
    pub decided_after: String,
    /// Served by the canary until the decision.
    pub canary_requests: u64,
    pub canary_failures: u64,
    /// Canary failures minus what the stable version would be expected to
    /// have failed on the same requests.
    pub extra_failures: f64,
    pub stable_requests: u64,
    pub stable_failures: u64,
    /// The highest weight the canary had before the decision.
    pub max_weight_before_decision: u8,
    /// When the policy's statistics first reached a conclusion (rollwise:
    /// every comparison Fine, or one Harm), and the canary requests served
    /// by then; `None` for threshold rules and while inconclusive.
    pub evidence_after_seconds: Option<u64>,
    pub canary_requests_to_evidence: Option<u64>,
}

/// A whole run: the summary, the timeline, the weight over time and the
/// traffic (for charts).
#[derive(Debug, Clone)]
pub struct Run {
    pub summary: Summary,
    pub timeline: Vec<Event>,
    /// `(t, weight)` at every change, starting at `(0, initial)`.
    pub weights: Vec<(u64, u8)>,
    /// The last simulated second.
    pub end: u64,
    pub traffic: Traffic,
}

/// Window of the error rates shown next to decisions.
pub const RATE_WINDOW: u64 = 60;

/// Run `policy` through `scenario` with `seed`.
pub fn run(scenario: &Scenario, policy: &mut dyn Policy, seed: u64) -> Run {
    let mut traffic =
        Traffic::new(seed, scenario.arrivals).with_scrape_interval(scenario.scrape_interval);
    let mut timeline = Vec::new();
    let mut weights = vec![(0, policy.weight())];
    let mut decided = None;
    let mut max_weight = 0u8;
    let mut evidence: Option<(u64, u64)> = None;
    let mut end = scenario.duration;
    for t in 0..=scenario.duration {
        if t > 0 {
            max_weight = max_weight.max(policy.weight());
            traffic.serve(scenario, policy.traffic_share());
        }
        let before = timeline.len();
        let verdict = policy.tick(t, &traffic, scenario.canary_ready(t), &mut timeline);
        if timeline.len() > before {
            let c = traffic.last(t, RATE_WINDOW);
            for e in &mut timeline[before..] {
                e.canary_error_rate = c.canary_rate();
                e.stable_error_rate = c.stable_rate();
            }
        }
        if evidence.is_none() && policy.conclusive() {
            evidence = Some((t, traffic.total().canary_requests));
        }
        let w = policy.weight();
        if weights.last().is_some_and(|(_, last)| *last != w) {
            weights.push((t, w));
        }
        if let Some(v) = verdict {
            decided = Some((t, v));
            end = t;
            break;
        }
    }
    let total = traffic.total();
    let (outcome, reason, at) = match decided {
        Some((t, (v, r))) => (v, r, Some(t)),
        None => (
            Verdict::Undecided,
            format!("no decision within {}", human(scenario.duration)),
            None,
        ),
    };
    let summary = Summary {
        policy: policy.name().to_string(),
        seed,
        outcome,
        reason,
        decided_after_seconds: at,
        decided_after: at.map(human).unwrap_or_else(|| "-".into()),
        canary_requests: total.canary_requests,
        canary_failures: total.canary_failures,
        extra_failures: round2(total.canary_failures as f64 - traffic.stable_expected_on_canary),
        stable_requests: total.stable_requests,
        stable_failures: total.stable_failures,
        max_weight_before_decision: max_weight,
        evidence_after_seconds: evidence.map(|e| e.0),
        canary_requests_to_evidence: evidence.map(|e| e.1),
    };
    Run {
        summary,
        timeline,
        weights,
        end,
        traffic,
    }
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `1m20s`, `2h`, `1d3h`.
pub fn human(seconds: u64) -> String {
    crate::plan::human(std::time::Duration::from_secs(seconds))
}

/// `0:01:20`: fixed width for tables.
pub fn clock(seconds: u64) -> String {
    format!(
        "{}:{:02}:{:02}",
        seconds / 3600,
        (seconds % 3600) / 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::scenario::{Base, Scenario};

    fn scenario(traffic: &str) -> Scenario {
        Scenario::parse(
            &format!(
                "duration: 10m\ntraffic: {traffic}\nrequestRate: 100\nstable: {{errorRate: 0.01}}\ncanary: {{errorRate: 0.1}}"
            ),
            Base::None,
        )
        .unwrap()
    }

    #[test]
    fn deterministic_traffic_is_split_exactly() {
        let s = scenario("deterministic");
        let mut t = Traffic::new(1, s.arrivals);
        for _ in 0..100 {
            t.serve(&s, 5);
        }
        let c = t.total();
        assert_eq!(c.canary_requests + c.stable_requests, 10_000);
        assert_eq!(c.canary_requests, 500);
        assert!(c.canary_failures > 20 && c.canary_failures < 85, "{c:?}");
        assert_eq!(t.window(10, 20).canary_requests, 50);
        assert_eq!(t.last(100, 60).stable_requests, 5_700);
        assert!((t.stable_expected_on_canary - 5.0).abs() < 1e-9);
    }

    #[test]
    fn poisson_totals_do_not_depend_on_the_weight() {
        let s = scenario("poisson");
        let (mut a, mut b) = (Traffic::new(3, s.arrivals), Traffic::new(3, s.arrivals));
        for i in 0..300 {
            a.serve(&s, 5);
            b.serve(&s, if i < 100 { 0 } else { 50 });
        }
        let (ca, cb) = (a.total(), b.total());
        assert_eq!(
            ca.canary_requests + ca.stable_requests,
            cb.canary_requests + cb.stable_requests
        );
        assert!(cb.canary_requests > ca.canary_requests);
        let n = ca.canary_requests + ca.stable_requests;
        assert!((29_000..31_000).contains(&n), "{n}");
    }

    #[test]
    fn a_scrape_interval_shows_counts_up_to_the_latest_scrape() {
        let s = scenario("deterministic");
        // Seed 20, every 15 s: scrapes at 5, 20, 35, ...
        let mut t = Traffic::new(20, s.arrivals).with_scrape_interval(15);
        for _ in 0..40 {
            t.serve(&s, 50);
        }
        assert_eq!(
            (t.scraped(4), t.scraped(5), t.scraped(19), t.scraped(20)),
            (0, 5, 5, 20)
        );
        // A look at 34 s sees the counts up to 20 s; at 35 s, up to 35 s.
        assert_eq!(t.seen_window(0, 34), t.window(0, 20));
        assert_eq!(t.seen_window(0, 35), t.window(0, 35));
        assert_eq!(t.seen_last(34, 10), t.window(10, 20));
        // Looks between two scrapes see the same counts: no new traffic
        // is not no traffic.
        assert_eq!(t.seen_window(0, 21), t.seen_window(0, 34));
        assert!(t.seen_window(0, 21).canary_requests > 0);
        // Without a scrape interval, counts are fresh.
        let fresh = Traffic::new(20, s.arrivals);
        assert_eq!(fresh.scraped(34), 34);
    }
}
