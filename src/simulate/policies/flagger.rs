//! Flagger's documented canary analysis, as the simulator runs it.

use super::*;

/// Flagger's canary analysis: every `interval` the canary's request success
/// rate over `window` is checked against a minimum; a failed check (or "no
/// values found") increments the failed checks and holds the weight; at
/// the next tick after the count reached `threshold` the canary is rolled
/// back; a passing check raises the weight by `step_weight`, and a passing
/// check at `max_weight` promotes.
#[derive(Debug, Clone, PartialEq)]
pub struct FlaggerConfig {
    pub interval: u64,
    pub threshold: u32,
    pub step_weight: u8,
    pub max_weight: u8,
    /// `request-success-rate` `thresholdRange.min`, in percent.
    pub min_success_percent: f64,
    /// The metric's query window (`interval` of the metric).
    pub window: u64,
}

impl Default for FlaggerConfig {
    /// Flagger's documented example: `interval: 1m`, `threshold: 10`,
    /// `stepWeight: 2`, `maxWeight: 50`, request-success-rate min 99 over 1m.
    fn default() -> Self {
        FlaggerConfig {
            interval: 60,
            threshold: 10,
            step_weight: 2,
            max_weight: 50,
            min_success_percent: 99.0,
            window: 60,
        }
    }
}

pub struct Flagger {
    cfg: FlaggerConfig,
    weight: u8,
    failed: u32,
    started: bool,
    waiting: bool,
    next: u64,
}

impl Flagger {
    pub fn new(cfg: FlaggerConfig) -> Self {
        Flagger {
            cfg,
            weight: 0,
            failed: 0,
            started: false,
            waiting: false,
            next: 0,
        }
    }

    pub fn failed_checks(&self) -> u32 {
        self.failed
    }

    fn step(&self) -> String {
        format!("{}/{}%", self.weight, self.cfg.max_weight)
    }
}

impl Policy for Flagger {
    fn name(&self) -> &'static str {
        "flagger"
    }

    fn describe(&self) -> String {
        let c = &self.cfg;
        format!(
            "interval {}, threshold {}, stepWeight {}, maxWeight {}, request-success-rate min {}% over {}",
            human(Duration::from_secs(c.interval)),
            c.threshold,
            c.step_weight,
            c.max_weight,
            fmt_num(c.min_success_percent),
            human(Duration::from_secs(c.window))
        )
    }

    fn weight(&self) -> u8 {
        self.weight
    }

    fn tick(
        &mut self,
        t: u64,
        traffic: &Traffic,
        canary_ready: bool,
        events: &mut Vec<Event>,
    ) -> Option<(Verdict, String)> {
        if t < self.next {
            return None;
        }
        self.next = t + self.cfg.interval;
        if !self.started {
            if !canary_ready {
                if !self.waiting {
                    self.waiting = true;
                    events.push(Event::new(
                        t,
                        "0%",
                        0,
                        "Waiting",
                        "CanaryNotReady",
                        "canary deployment not ready: waiting for rollout to finish".into(),
                        Mark::Hold,
                    ));
                }
                return None;
            }
            self.started = true;
            self.weight = self.cfg.step_weight.min(100);
            events.push(Event::new(
                t,
                self.step(),
                self.weight,
                "Advance",
                "Started",
                format!(
                    "Starting canary analysis; advance canary weight {}",
                    self.weight
                ),
                Mark::Start,
            ));
            return None;
        }
        if self.failed >= self.cfg.threshold {
            self.weight = 0;
            events.push(Event::new(
                t,
                self.step(),
                0,
                "Rollback",
                "FailedChecksThreshold",
                format!(
                    "Rolling back: failed checks threshold reached {}",
                    self.failed
                ),
                Mark::Rollback,
            ));
            return Some((Verdict::RolledBack, "FailedChecksThreshold".into()));
        }
        let c = traffic.seen_last(t, self.cfg.window);
        let failure = match c.canary_rate() {
            None => Some(format!(
                "Halt advancement no values found for metric request-success-rate (no canary requests in the last {})",
                human(Duration::from_secs(self.cfg.window))
            )),
            Some(rate) => {
                let success = 100.0 * (1.0 - rate);
                (success < self.cfg.min_success_percent).then(|| {
                    format!(
                        "Halt advancement success rate {:.2}% < {}%",
                        success,
                        fmt_num(self.cfg.min_success_percent)
                    )
                })
            }
        };
        if let Some(why) = failure {
            self.failed += 1;
            events.push(Event::new(
                t,
                self.step(),
                self.weight,
                "Halt",
                "CheckFailed",
                format!(
                    "{why} (failed checks {}/{})",
                    self.failed, self.cfg.threshold
                ),
                Mark::Hold,
            ));
            return None;
        }
        if self.weight >= self.cfg.max_weight {
            self.weight = 100;
            events.push(Event::new(
                t,
                "promoted",
                100,
                "Promote",
                "MaxWeightReached",
                "Copying canary template spec to primary: promotion".into(),
                Mark::Promote,
            ));
            return Some((Verdict::Promoted, "MaxWeightReached".into()));
        }
        self.weight = self.weight.saturating_add(self.cfg.step_weight).min(100);
        events.push(Event::new(
            t,
            self.step(),
            self.weight,
            "Advance",
            "CheckPassed",
            format!("Advance canary weight {}", self.weight),
            Mark::Advance,
        ));
        None
    }
}
