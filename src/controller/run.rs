//! The long-running operator: a watch on Rollouts with a trimmed cache, the
//! kube-runtime Controller, and the HTTP endpoints.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};

use super::{Context, error_policy, reconcile};
use crate::api::{ACTION_ANNOTATION, Rollout};
use crate::http::{self, Health};
use crate::metrics::Metrics;

/// How the operator runs (`rollwise run` flags; every flag has an env var).
#[derive(Debug, Clone, clap::Args)]
pub struct RunConfig {
    /// Only watch Rollouts in this namespace (default: all namespaces).
    #[arg(long, short = 'n', env = "ROLLWISE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "ROLLWISE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Rollouts reconciled at once.
    #[arg(long, env = "ROLLWISE_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// This replica's name (for Events and the Lease holder identity).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    /// Run with leader election: only the holder of the Lease reconciles.
    #[arg(long, env = "ROLLWISE_LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "ROLLWISE_LEASE_NAME", default_value = "rollwise-leader")]
    pub lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Lease duration in seconds: a standby takes over this long after the
    /// leader stops renewing.
    #[arg(long, env = "ROLLWISE_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Webhook URL notified on rollout transitions (operator-wide; keep it in
    /// a Secret and pass it through the environment).
    #[arg(long, env = "ROLLWISE_NOTIFY_URL", hide_env_values = true)]
    pub notify_url: Option<String>,
    /// Payload format of the operator-wide webhook: `json` or `slack`.
    #[arg(long, env = "ROLLWISE_NOTIFY_FORMAT", default_value = "json", value_parser = ["json", "slack"])]
    pub notify_format: String,
    /// Prometheus address used by Rollouts whose analysis names none.
    #[arg(long, env = "ROLLWISE_PROMETHEUS_ADDRESS")]
    pub default_prometheus: Option<String>,
    /// Timeout of one metric query, in seconds.
    #[arg(long, env = "ROLLWISE_QUERY_TIMEOUT_SECONDS", default_value_t = 10)]
    pub query_timeout_seconds: u64,
}

impl RunConfig {
    /// The defaults (plus whatever the environment sets), as `rollwise run`
    /// with no flags.
    pub fn from_env() -> Self {
        use clap::{Args, FromArgMatches};
        let cmd = Self::augment_args(clap::Command::new("run"));
        let matches = cmd.get_matches_from(["run"]);
        Self::from_arg_matches(&matches).expect("defaults parse")
    }
}

/// Drop from a cached Rollout everything the engine never reads: managed
/// fields and foreign annotations (notably `last-applied-configuration`,
/// often larger than the rest of the object).
pub fn trim(r: &mut Rollout) {
    r.managed_fields_mut().clear();
    let annotations = r.annotations_mut();
    annotations.retain(|k, _| k == ACTION_ANNOTATION);
    r.meta_mut().owner_references = None;
}

pub async fn run(client: kube::Client, config: RunConfig) -> anyhow_like::Result<()> {
    let api: Api<Rollout> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // Fail early and clearly when the CRD is missing.
    if let Err(e) = api.list(&ListParams::default().limit(1)).await {
        return Err(anyhow_like::Error(format!(
            "cannot list rollouts.rollwise.io ({e}); is the CRD installed? kubectl apply -f crds/"
        )));
    }
    let metrics = Metrics::new();
    let health = Health::default();
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        config.instance.clone(),
    ));

    let http = tokio::spawn(http::serve(
        config.http_addr,
        metrics.clone(),
        health.clone(),
    ));

    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .touched_objects();
    {
        let reader = reader.clone();
        let health = health.clone();
        tokio::spawn(async move {
            if reader.wait_until_ready().await.is_ok() {
                health.set_ready(true);
                tracing::info!(rollouts = reader.len(), "rollout cache synced");
            }
        });
    }
    tracing::info!(namespace = ?config.namespace, "rollwise operator started");
    Controller::for_stream(stream, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile did not complete");
            }
        })
        .await;
    http.abort();
    tracing::info!("rollwise operator stopped");
    Ok(())
}

/// A tiny error type for the binary's top level (no anyhow dependency).
pub mod anyhow_like {
    #[derive(Debug)]
    pub struct Error(pub String);
    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Error {}
    pub type Result<T> = std::result::Result<T, Error>;
}

#[allow(dead_code)]
fn _uses(r: &Rollout) -> String {
    r.object_ref(&()).name.unwrap_or_default()
}
