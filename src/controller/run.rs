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

#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Watch one namespace, or all when `None`.
    pub namespace: Option<String>,
    /// Where `/metrics`, `/healthz`, `/readyz` are served.
    pub http_addr: SocketAddr,
    /// How many Rollouts are reconciled at once.
    pub concurrency: u16,
    /// This replica's name (for Events).
    pub instance: Option<String>,
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
