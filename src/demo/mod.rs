//! `rollwise demo`: the real reconcile code against an in-memory API server
//! (kube-fake-client) with simulated traffic feeding the analysis. First a
//! healthy new version is promoted step by step, then a faulty one is rolled
//! back. It prints a timeline and fails if an outcome is not the expected one.

pub mod cluster;
pub mod traffic;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use crate::api::{Phase, Rollout};
use crate::clock::{Clock, ManualClock};
use crate::controller::{Context, reconcile};
use crate::metrics::Metrics;
use cluster::NAMESPACE;
use traffic::Traffic;

/// A simulated world: an in-memory cluster, a virtual clock, simulated
/// traffic, and the operator's real reconcile.
pub struct Sim {
    pub client: kube::Client,
    pub ctx: Arc<Context>,
    pub clock: ManualClock,
    pub traffic: Traffic,
    pub name: String,
    pub route: String,
    pub start: Timestamp,
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub at: Duration,
    pub phase: Phase,
    pub step: String,
    pub weight: i32,
    pub analysis: String,
    pub decision: String,
    /// What makes a line new: the decision's kind and reason, not its text
    /// (which counts pause time down).
    pub key: String,
}

impl Sim {
    /// The standard cluster (see [`cluster::standard`]) at a fixed start time.
    pub async fn standard(seed: u64) -> Result<Sim, String> {
        let client = cluster::standard().await.map_err(|e| e.to_string())?;
        Ok(Self::with_client(client, seed))
    }

    pub fn with_client(client: kube::Client, seed: u64) -> Sim {
        let start: Timestamp = "2026-03-02T09:00:00Z".parse().expect("static timestamp");
        let clock = ManualClock::new(start);
        let traffic = Traffic::new(seed, 200.0, start);
        traffic.set_error_rate("checkout-v1", 0.005);
        let ctx = Context::new(client.clone(), Metrics::new(), Some("demo".into()))
            .with_clock(Arc::new(clock.clone()))
            .with_providers(traffic.providers());
        Sim {
            client,
            ctx: Arc::new(ctx),
            clock,
            traffic,
            name: "checkout".into(),
            route: "checkout".into(),
            start,
        }
    }

    pub fn api(&self) -> Api<Rollout> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    pub async fn rollout(&self) -> Result<Rollout, kube::Error> {
        self.api().get(&self.name).await
    }

    /// One reconcile, as the controller would run it on a fresh read.
    pub async fn reconcile(&self) -> crate::Result<Action> {
        let r = self.rollout().await?;
        reconcile(Arc::new(r), self.ctx.clone()).await
    }

    /// Move the clock by `dt`, serving traffic by the route's weights.
    pub async fn tick(&self, dt: Duration) -> Result<(), kube::Error> {
        self.clock.advance(dt);
        cluster::settle_deployments(&self.client).await?;
        let weights = cluster::route_weights(&self.client, &self.route).await?;
        self.traffic.serve(self.clock.now(), dt, &weights);
        Ok(())
    }

    pub fn elapsed(&self) -> Duration {
        Duration::try_from(self.start.duration_until(self.clock.now())).unwrap_or_default()
    }

    /// Reconcile every `every` of virtual time (and at once again after a
    /// transition, as the status watch would) until the rollout reaches a
    /// terminal phase or `max` has passed. `on_line` sees each new line.
    pub async fn run_until_terminal(
        &self,
        every: Duration,
        max: Duration,
        mut on_line: impl FnMut(&Line),
    ) -> crate::Result<Rollout> {
        let deadline = self.elapsed() + max;
        let mut last: Option<Line> = None;
        loop {
            for _ in 0..4 {
                let before = self.rollout().await?.status.and_then(|s| s.last_decision);
                self.reconcile().await?;
                let r = self.rollout().await?;
                let line = line_of(&r, self.elapsed());
                if last.as_ref().is_none_or(|l| {
                    l.key != line.key || l.analysis != line.analysis || l.weight != line.weight
                }) {
                    on_line(&line);
                    last = Some(line);
                }
                let after = r.status.as_ref().and_then(|s| s.last_decision.clone());
                let transitioned =
                    after.as_ref().is_some_and(|d| d.kind != "Hold") && after != before;
                if r.status.as_ref().is_some_and(|s| s.phase.is_terminal()) {
                    return Ok(r);
                }
                if !transitioned && r.metadata.finalizers.is_some() {
                    break;
                }
            }
            if self.elapsed() >= deadline {
                return Ok(self.rollout().await?);
            }
            self.tick(every).await?;
        }
    }

    /// Point the Rollout at a new canary (and stable), as a user would with
    /// `kubectl apply`.
    pub async fn set_versions(&self, stable: &str, canary: &str) -> Result<(), kube::Error> {
        let patch = json!({"spec": {
            "stable": {"service": stable, "deployment": stable},
            "canary": {"service": canary, "deployment": canary}
        }});
        self.api()
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }
}

fn line_of(r: &Rollout, at: Duration) -> Line {
    let st = r.status.clone().unwrap_or_default();
    let analysis = st
        .analysis
        .iter()
        .map(|m| match m.value {
            Some(v) => format!("{} {:.4} ({})", m.name, v, m.verdict),
            None => format!("{} - ({})", m.name, m.verdict),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let decision = st
        .last_decision
        .as_ref()
        .map(|d| format!("{} {}: {}", d.kind, d.reason, d.message))
        .unwrap_or_default();
    let key = st
        .last_decision
        .as_ref()
        .map(|d| format!("{}/{}/{}", d.kind, d.reason, st.step))
        .unwrap_or_default();
    Line {
        at,
        phase: st.phase,
        step: st.step.clone(),
        weight: st.canary_weight,
        analysis,
        decision,
        key,
    }
}

fn print_line(l: &Line) {
    let s = l.at.as_secs();
    println!(
        "  {:02}:{:02}  {:<11} step {:<5} weight {:>3}%  {:<28}  {}",
        s / 60,
        s % 60,
        l.phase.as_str(),
        l.step,
        l.weight,
        if l.analysis.is_empty() {
            "-".to_string()
        } else {
            l.analysis.clone()
        },
        l.decision
    );
}

/// Run both scenarios; exit non-zero if an outcome is not the expected one.
pub async fn main(seed: u64, quiet: bool) -> ExitCode {
    match run(seed, quiet).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo failed to run: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(seed: u64, quiet: bool) -> Result<bool, String> {
    let sim = Sim::standard(seed).await?;
    let show = |l: &Line| {
        if !quiet {
            print_line(l)
        }
    };
    println!(
        "rollwise demo: an in-memory cluster (Deployments checkout-v1/v2, their Services, HTTPRoute `checkout`),"
    );
    println!(
        "simulated traffic of 200 req/s and the operator's real reconcile loop on a virtual clock."
    );
    if let Some(r) = sim.rollout().await.ok()
        && let Ok(plan) = crate::plan::validate(&r.spec)
    {
        println!("plan: {}", crate::simulate::policies::describe_plan(&plan));
    }
    println!();

    // 1. A healthy version: promoted step by step.
    sim.traffic.set_error_rate("checkout-v2", 0.005);
    println!("1) checkout-v2 is healthy (0.5% errors, like v1): expect it promoted to 100%");
    let t0 = sim.elapsed();
    let r = sim
        .run_until_terminal(Duration::from_secs(5), Duration::from_secs(1800), show)
        .await
        .map_err(|e| e.to_string())?;
    let weights = cluster::route_weights(&sim.client, &sim.route)
        .await
        .map_err(|e| e.to_string())?;
    let phase1 = r.status.as_ref().map(|s| s.phase);
    let ok1 = phase1 == Some(Phase::Succeeded)
        && weights.iter().any(|(n, w)| n == "checkout-v2" && *w == 100);
    let (req2, fail2) = sim.traffic.totals("checkout-v2");
    println!(
        "   => {:?} after {}s; route: {}; canary served {req2} requests, {fail2} failed\n",
        phase1.unwrap_or_default(),
        (sim.elapsed() - t0).as_secs(),
        fmt_weights(&weights)
    );

    // 2. A faulty version: rolled back.
    let objects = [
        serde_json::to_value(cluster::deployment("checkout-v3", 3, 3))
            .map_err(|e| e.to_string())?,
        serde_json::to_value(cluster::service("checkout-v3")).map_err(|e| e.to_string())?,
    ];
    for o in objects {
        create(&sim.client, o).await?;
    }
    sim.traffic.set_error_rate("checkout-v3", 0.08);
    sim.set_versions("checkout-v2", "checkout-v3")
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "2) checkout-v3 is faulty (8% errors): expect it rolled back, all traffic on checkout-v2"
    );
    let t1 = sim.elapsed();
    let r = sim
        .run_until_terminal(Duration::from_secs(5), Duration::from_secs(1800), show)
        .await
        .map_err(|e| e.to_string())?;
    let weights = cluster::route_weights(&sim.client, &sim.route)
        .await
        .map_err(|e| e.to_string())?;
    let st = r.status.clone().unwrap_or_default();
    let ok2 =
        st.phase == Phase::RolledBack && weights.iter().any(|(n, w)| n == "checkout-v3" && *w == 0);
    let (req3, fail3) = sim.traffic.totals("checkout-v3");
    println!(
        "   => {} after {}s; route: {}; canary served {req3} requests, {fail3} failed",
        st.phase.as_str(),
        (sim.elapsed() - t1).as_secs(),
        fmt_weights(&weights)
    );
    if let Some(c) = st.conditions.iter().find(|c| c.type_ == "RolledBack") {
        println!(
            "   condition RolledBack={} reason={}: {}",
            c.status, c.reason, c.message
        );
    }
    println!();
    println!(
        "{}",
        if ok1 && ok2 {
            "demo: OK (healthy version promoted, faulty version rolled back)"
        } else {
            "demo: UNEXPECTED OUTCOME"
        }
    );
    Ok(ok1 && ok2)
}

fn fmt_weights(w: &[(String, i64)]) -> String {
    w.iter()
        .map(|(n, w)| format!("{n}={w}"))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn create(client: &kube::Client, obj: serde_json::Value) -> Result<(), String> {
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    match kind.as_str() {
        "Deployment" => {
            let api: Api<k8s_openapi::api::apps::v1::Deployment> =
                Api::namespaced(client.clone(), NAMESPACE);
            let d = serde_json::from_value(obj).map_err(|e| e.to_string())?;
            api.create(&Default::default(), &d)
                .await
                .map_err(|e| e.to_string())?;
        }
        "Service" => {
            let api: Api<k8s_openapi::api::core::v1::Service> =
                Api::namespaced(client.clone(), NAMESPACE);
            let s = serde_json::from_value(obj).map_err(|e| e.to_string())?;
            api.create(&Default::default(), &s)
                .await
                .map_err(|e| e.to_string())?;
        }
        other => return Err(format!("demo cannot create {other}")),
    }
    Ok(())
}
