//! Argo Rollouts' documented canary steps with background analysis, as
//! the simulator runs them.

use super::*;

/// One step of an Argo Rollouts canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgoStep {
    SetWeight(u8),
    /// Seconds.
    Pause(u64),
}

/// Argo Rollouts' background analysis: an AnalysisRun starts when the
/// rollout reaches `starting_step`, measures at once and then every
/// `interval`; a measurement below `min_success` (or NaN: no requests) is
/// failed; more than `failure_limit` failed measurements fail the run and
/// abort the rollout (weight 0). The steps run on their own timer.
#[derive(Debug, Clone, PartialEq)]
pub struct ArgoConfig {
    pub steps: Vec<ArgoStep>,
    pub starting_step: usize,
    pub interval: u64,
    pub failure_limit: u32,
    /// `successCondition: result >= min_success`.
    pub min_success: f64,
    /// The query's range (`[5m]`).
    pub window: u64,
}

impl Default for ArgoConfig {
    /// Argo Rollouts' documented background-analysis example: setWeight
    /// 20/40/60/80 each followed by `pause: {duration: 10m}`, `startingStep:
    /// 2`, success-rate `interval: 5m`, `successCondition: result >= 0.95`,
    /// `failureLimit: 3`, query range `[5m]`.
    fn default() -> Self {
        ArgoConfig {
            steps: vec![
                ArgoStep::SetWeight(20),
                ArgoStep::Pause(600),
                ArgoStep::SetWeight(40),
                ArgoStep::Pause(600),
                ArgoStep::SetWeight(60),
                ArgoStep::Pause(600),
                ArgoStep::SetWeight(80),
                ArgoStep::Pause(600),
            ],
            starting_step: 2,
            interval: 300,
            failure_limit: 3,
            min_success: 0.95,
            window: 300,
        }
    }
}

pub struct Argo {
    cfg: ArgoConfig,
    weight: u8,
    started: bool,
    index: usize,
    step_started: u64,
    next_measurement: Option<u64>,
    failed: u32,
    measurements: u32,
}

impl Argo {
    pub fn new(cfg: ArgoConfig) -> Self {
        Argo {
            cfg,
            weight: 0,
            started: false,
            index: 0,
            step_started: 0,
            next_measurement: None,
            failed: 0,
            measurements: 0,
        }
    }

    pub fn failed_measurements(&self) -> u32 {
        self.failed
    }

    fn step(&self) -> String {
        format!(
            "{}/{}",
            (self.index + 1).min(self.cfg.steps.len()),
            self.cfg.steps.len()
        )
    }

    fn measure(
        &mut self,
        t: u64,
        traffic: &Traffic,
        events: &mut Vec<Event>,
    ) -> Option<(Verdict, String)> {
        self.measurements += 1;
        self.next_measurement = Some(t + self.cfg.interval);
        let c = traffic.seen_last(t, self.cfg.window);
        let failure = match c.canary_rate() {
            None => Some("result NaN (no canary requests in the window)".to_string()),
            Some(rate) => {
                let success = 1.0 - rate;
                (success < self.cfg.min_success).then(|| {
                    format!(
                        "result {} < {}",
                        fmt_num(success),
                        fmt_num(self.cfg.min_success)
                    )
                })
            }
        };
        let why = failure?;
        self.failed += 1;
        if self.failed > self.cfg.failure_limit {
            self.weight = 0;
            events.push(Event::new(
                t,
                self.step(),
                0,
                "Abort",
                "AnalysisRunFailed",
                format!(
                    "success-rate measurement {} failed: {why}; {} failed > failureLimit {}: AnalysisRun Failed, rollout aborted",
                    self.measurements, self.failed, self.cfg.failure_limit
                ),
                Mark::Rollback,
            ));
            return Some((Verdict::RolledBack, "AnalysisRunFailed".into()));
        }
        events.push(Event::new(
            t,
            self.step(),
            self.weight,
            "Measurement",
            "MeasurementFailed",
            format!(
                "success-rate measurement {} failed: {why} ({} failed, failureLimit {})",
                self.measurements, self.failed, self.cfg.failure_limit
            ),
            Mark::Hold,
        ));
        None
    }
}

impl Policy for Argo {
    fn name(&self) -> &'static str {
        "argo"
    }

    fn describe(&self) -> String {
        let c = &self.cfg;
        let steps = c
            .steps
            .iter()
            .map(|s| match s {
                ArgoStep::SetWeight(w) => format!("{w}%"),
                ArgoStep::Pause(d) => format!("pause {}", human(Duration::from_secs(*d))),
            })
            .collect::<Vec<_>>()
            .join(" → ");
        format!(
            "steps {steps}, startingStep {}, success-rate >= {} over {} every {}, failureLimit {}",
            c.starting_step,
            fmt_num(c.min_success),
            human(Duration::from_secs(c.window)),
            human(Duration::from_secs(c.interval)),
            c.failure_limit
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
        if !self.started {
            if !canary_ready {
                return None;
            }
            self.started = true;
            self.step_started = t;
        }
        loop {
            if self.index >= self.cfg.steps.len() {
                self.weight = 100;
                events.push(Event::new(
                    t,
                    "done",
                    100,
                    "Complete",
                    "AllStepsDone",
                    format!(
                        "all {} steps done: rollout completed, 100% canary",
                        self.cfg.steps.len()
                    ),
                    Mark::Promote,
                ));
                return Some((Verdict::Promoted, "AllStepsDone".into()));
            }
            match self.cfg.steps[self.index] {
                ArgoStep::SetWeight(w) => {
                    self.weight = w;
                    self.index += 1;
                    self.step_started = t;
                    events.push(Event::new(
                        t,
                        self.step(),
                        w,
                        "SetWeight",
                        "StepAdvanced",
                        format!("setWeight {w}"),
                        Mark::Advance,
                    ));
                }
                ArgoStep::Pause(d) if t >= self.step_started + d => {
                    self.index += 1;
                    self.step_started = t;
                }
                ArgoStep::Pause(_) => break,
            }
            if self.index >= self.cfg.starting_step && self.next_measurement.is_none() {
                self.next_measurement = Some(t);
                events.push(Event::new(
                    t,
                    self.step(),
                    self.weight,
                    "Analysis",
                    "AnalysisRunStarted",
                    format!(
                        "background AnalysisRun started at step {} (startingStep {})",
                        self.index + 1,
                        self.cfg.starting_step
                    ),
                    Mark::Hold,
                ));
            }
        }
        if self.next_measurement.is_some_and(|n| n <= t) {
            return self.measure(t, traffic, events);
        }
        None
    }
}
