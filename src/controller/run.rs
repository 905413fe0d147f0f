//! The long-running operator: a watch on Rollouts with a trimmed cache, the
//! kube-runtime Controller, and the HTTP endpoints. With `--leader-election`
//! the Controller (and its watch) runs only while this replica holds the
//! Lease (see [`crate::leader`]); a lost Lease drops it at once and the
//! operator exits non-zero.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Resource;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use tokio::sync::watch;

use super::{Context, reconcile};
use crate::api::{ACTION_ANNOTATION, Rollout};
use crate::http::{self, Election, Health};
use crate::leader::{self, Gated, LeaderElector, LeaseConfig};
use crate::metrics::Metrics;

/// How the operator runs (`rollwise run` flags; every flag has an env var).
#[derive(Debug, Clone, clap::Args)]
pub struct RunConfig {
    /// The API server's URL (`https://host:port`), for messages; set by the
    /// binary from the kubeconfig it uses.
    #[arg(skip)]
    pub api_server: Option<String>,
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
    trim_meta_fields(r.meta_mut());
}

/// What the operator caches of each Rollout: its metadata only (the watch
/// is a metadata watch), trimmed to what triggers and keys a reconcile.
/// Every reconcile reads the one Rollout it works on, fresh.
pub fn trim_meta(r: &mut PartialObjectMeta<Rollout>) {
    trim_meta_fields(&mut r.metadata);
    // The reconcile reads the Rollout it works on, with its own version;
    // the watch keeps its place itself. (The uid stays: the trigger filter
    // tells a re-created Rollout from the deleted one by it.)
    r.metadata.resource_version = None;
    r.types = None;
}

fn trim_meta_fields(m: &mut kube::api::ObjectMeta) {
    m.managed_fields = None;
    m.owner_references = None;
    m.labels = None;
    m.creation_timestamp = None;
    if let Some(a) = m.annotations.as_mut() {
        a.retain(|k, _| k == ACTION_ANNOTATION);
        if a.is_empty() {
            m.annotations = None;
        }
    }
}

/// The controller's reconcile on a cached metadata entry: read the Rollout,
/// then run [`reconcile`]. A Rollout gone in the meantime needs nothing.
async fn reconcile_meta(
    meta: Arc<PartialObjectMeta<Rollout>>,
    ctx: Arc<Context>,
) -> super::Result<Action> {
    let (Some(ns), Some(name)) = (meta.metadata.namespace.clone(), meta.metadata.name.clone())
    else {
        return Err(super::Error::MissingObjectKey);
    };
    let api: Api<Rollout> = Api::namespaced(ctx.client.clone(), &ns);
    match super::with_timeout("get rollout", api.get_opt(&name)).await? {
        Some(r) => reconcile(Arc::new(r), ctx).await,
        None => Ok(Action::await_change()),
    }
}

fn error_policy_meta(
    meta: Arc<PartialObjectMeta<Rollout>>,
    error: &super::Error,
    ctx: Arc<Context>,
) -> Action {
    let name = meta.metadata.name.clone().unwrap_or_default();
    super::reconcile::retry_after(&name, meta.metadata.namespace.as_deref(), error, &ctx)
}

/// What makes a change to a Rollout's metadata worth a reconcile: a new
/// spec (`generation`), a manual action (the annotation), deletion. Not the
/// operator's own status writes, which change only the resourceVersion: each
/// decision is carried out by one reconcile, and the next one comes from its
/// timer or from a change to what the Rollout waits on.
fn rollout_trigger(meta: &PartialObjectMeta<Rollout>) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let m = &meta.metadata;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.generation.hash(&mut h);
    m.annotations
        .as_ref()
        .and_then(|a| a.get(ACTION_ANNOTATION))
        .hash(&mut h);
    m.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// What went wrong with the first request, in words: the API server is
/// not reachable, refuses us, or does not serve Rollouts.
pub fn startup_error(e: &kube::Error, server: &str) -> String {
    let at = if server.is_empty() {
        "the API server".to_string()
    } else {
        format!("the API server at {server}")
    };
    match e {
        kube::Error::Api(s) if s.code == 404 => format!(
            "{at} does not serve rollouts.rollwise.io: the CRD is not installed (kubectl apply -f crds/)"
        ),
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => format!(
            "{at} refuses to list rollouts.rollwise.io (HTTP {}): {}; check the identity and its RBAC",
            s.code, s.message
        ),
        kube::Error::Api(s) => format!(
            "{at} answered HTTP {} to listing rollouts.rollwise.io: {}",
            s.code, s.message
        ),
        other => format!("cannot reach {at}: {other}"),
    }
}

/// `rollwise run` with a fresh metrics registry.
pub async fn run(client: kube::Client, config: RunConfig) -> anyhow_like::Result<()> {
    run_with(client, Metrics::new(), config).await
}

/// `rollwise run`, exporting `metrics` (the binary passes the registry its
/// client already counts requests in).
pub async fn run_with(
    client: kube::Client,
    metrics: Metrics,
    config: RunConfig,
) -> anyhow_like::Result<()> {
    let api: Api<Rollout> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // Fail early and clearly: no API server, no permission, no CRD.
    if let Err(e) = api.list(&ListParams::default().limit(1)).await {
        return Err(anyhow_like::Error(startup_error(
            &e,
            config.api_server.as_deref().unwrap_or_default(),
        )));
    }
    let leader_gauge = leader::leader_gauge(&metrics);
    let health = Health::default();
    // Notifications: operator-wide webhook (if any) and per-Rollout ones.
    let global = config.notify_url.clone().map(|url| {
        (
            url,
            crate::notify::Format::parse(&config.notify_format).unwrap_or_default(),
        )
    });
    let notifier = crate::notify::Notifier::new(client.clone(), global, &metrics.registry);
    let (watches, triggers) = super::Watches::new(client.clone(), config.namespace.clone());
    let triggers: Triggers = Box::pin(triggers);
    let ctx = Arc::new(
        Context::new(client.clone(), metrics.clone(), config.instance.clone())
            .with_default_prometheus(config.default_prometheus.clone())
            .with_providers(Arc::new(super::PrometheusProviders::new(
                std::time::Duration::from_secs(config.query_timeout_seconds.max(1)),
            )))
            .with_notifier(notifier)
            .with_watches(watches),
    );

    let http = tokio::spawn(http::serve(
        config.http_addr,
        metrics.clone(),
        health.clone(),
    ));
    let shutdown = Shutdown::on_signals();
    let trim = tokio::spawn(super::memory::keep_releasing());

    tracing::info!(
        namespace = ?config.namespace,
        leader_election = config.leader_election,
        "rollwise operator started"
    );
    let result = if config.leader_election {
        run_elected(
            client,
            &config,
            (api, triggers),
            ctx,
            health,
            leader_gauge,
            shutdown,
        )
        .await
    } else {
        // No election: this replica always reconciles (it counts as leader).
        health.set_election(Election::Disabled);
        leader_gauge.set(1);
        let controller = reconcile_until(
            (api, triggers),
            ctx,
            health,
            config.concurrency,
            shutdown.clone(),
        );
        tokio::select! {
            () = controller => {}
            () = shutdown.clone().forced() => tracing::warn!("forced shutdown"),
        }
        Ok(())
    };
    http.abort();
    trim.abort();
    match &result {
        Ok(()) => tracing::info!("rollwise operator stopped"),
        Err(e) => tracing::error!(error = %e, "rollwise operator stopped"),
    }
    result
}

/// With `--leader-election`: wait as a standby until this replica holds the
/// Lease, then reconcile only while it does. On SIGTERM the Controller drains
/// (in-flight reconciles finish) and the Lease is released so a standby takes
/// over at once. On loss of the Lease the Controller is dropped at once (its
/// reconcile tasks are aborted) and the operator exits non-zero, so that
/// Kubernetes restarts it as a standby with fresh state (as
/// controller-runtime does).
async fn run_elected(
    client: kube::Client,
    config: &RunConfig,
    api: (Api<Rollout>, Triggers),
    ctx: Arc<Context>,
    health: Health,
    leader_gauge: prometheus::IntGauge,
    shutdown: Shutdown,
) -> anyhow_like::Result<()> {
    if config.lease_duration_seconds == 0 {
        return Err(anyhow_like::Error(
            "--lease-duration-seconds must be at least 1".into(),
        ));
    }
    let namespace = config
        .lease_namespace
        .clone()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let identity = config
        .instance
        .clone()
        .filter(|i| !i.is_empty())
        .unwrap_or_else(leader::default_identity);
    let lease = LeaseConfig::new(
        config.lease_name.clone(),
        namespace,
        identity,
        Duration::from_secs(config.lease_duration_seconds),
    );
    tracing::info!(
        lease = %lease.name,
        lease_namespace = %lease.namespace,
        identity = %lease.identity,
        duration = ?lease.lease_duration,
        "leader election on: standby until this replica holds the lease"
    );
    let release_limit = lease.lease_duration;
    health.set_election(Election::Standby { healthy: false });
    let elector = LeaderElector::new(client, lease);
    let handle = elector.handle();
    tokio::spawn(handle.clone().mirror(health.clone(), leader_gauge));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let elector = tokio::spawn(elector.run(async move {
        let _ = stopped.await;
    }));
    // Stop the elector (it releases the Lease if it names this replica)
    // and wait for it, bounded.
    let stop_elector = async move {
        let _ = stop.send(());
        if tokio::time::timeout(release_limit, elector).await.is_err() {
            tracing::warn!("the leader elector did not stop in time");
        }
    };

    let leading = tokio::select! {
        biased;
        () = shutdown.clone().requested() => None,
        led = handle.acquired() => Some(led),
    };
    let result = match leading {
        None => Ok(()),
        Some(false) => Err(anyhow_like::Error(
            "the leader elector stopped unexpectedly".into(),
        )),
        Some(true) => {
            tracing::info!("leading: starting the controller");
            let controller =
                reconcile_until(api, ctx, health, config.concurrency, shutdown.clone());
            let forced = shutdown.forced();
            let gated = handle
                .while_leader(async move {
                    tokio::select! {
                        () = controller => {}
                        () = forced => tracing::warn!("forced shutdown"),
                    }
                })
                .await;
            match gated {
                Gated::Completed(()) => Ok(()),
                Gated::Lost => Err(anyhow_like::Error(
                    "lost the leader lease: stopped reconciling at once; exiting so that \
                     Kubernetes restarts this replica as a standby"
                        .into(),
                )),
            }
        }
    };
    stop_elector.await;
    result
}

/// The reconcile requests of the watches on what Rollouts depend on.
type Triggers = std::pin::Pin<Box<dyn futures::Stream<Item = super::Trigger> + Send>>;

/// Watch Rollouts (trimmed cache) and run the kube-runtime Controller until
/// `shutdown` is requested (graceful: in-flight reconciles finish). Dropping
/// this future stops everything at once, aborting in-flight reconciles.
async fn reconcile_until(
    (api, triggers): (Api<Rollout>, Triggers),
    ctx: Arc<Context>,
    health: Health,
    concurrency: u16,
    shutdown: Shutdown,
) {
    health.set_ready(false);
    let (reader, writer) = reflector::store::<PartialObjectMeta<Rollout>>();
    // A metadata-only watch of the same scope.
    let meta: Api<PartialObjectMeta<Rollout>> = match api.namespace() {
        Some(ns) => Api::namespaced(api.clone().into_client(), ns),
        None => Api::all(api.clone().into_client()),
    };
    // Listed page by page (`watcher::Config::default()`: 500 at a time, from
    // etcd). The faster "any version" listing comes from the API server's
    // cache, which ignores the page size: with 10,000 Rollouts the whole
    // listing would be parsed at once, and the allocator would keep that peak.
    let stream = watcher(meta, watcher::Config::default())
        .default_backoff()
        .modify(trim_meta)
        .reflect(writer)
        .touched_objects()
        .predicate_filter(rollout_trigger, Default::default());
    let synced = {
        let reader = reader.clone();
        let health = health.clone();
        async move {
            if reader.wait_until_ready().await.is_ok() {
                health.set_ready(true);
                tracing::info!(rollouts = reader.len(), "rollout cache synced");
            }
            std::future::pending::<()>().await
        }
    };
    let controller = Controller::for_stream(stream, reader)
        .reconcile_on(triggers)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown.requested())
        .run(reconcile_meta, error_policy_meta, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile did not complete");
            }
        });
    tokio::select! {
        () = controller => {}
        () = synced => {}
    }
}

/// SIGTERM / Ctrl+C: the first asks for a graceful shutdown, the second
/// forces it.
#[derive(Clone)]
struct Shutdown(watch::Receiver<u8>);

impl Shutdown {
    fn on_signals() -> Self {
        let (tx, rx) = watch::channel(0u8);
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for SIGTERM");
                        None
                    }
                };
            loop {
                #[cfg(unix)]
                let term_signal = async {
                    match term.as_mut() {
                        Some(s) => {
                            s.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                #[cfg(not(unix))]
                let term_signal = std::future::pending::<()>();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    () = term_signal => {}
                }
                tx.send_modify(|n| *n = n.saturating_add(1));
                if *tx.borrow() == 1 {
                    tracing::info!("graceful shutdown requested; signal again to force it");
                }
            }
        });
        Shutdown(rx)
    }

    async fn at_least(self, n: u8) {
        let mut rx = self.0;
        if rx.wait_for(|v| *v >= n).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves at the first signal.
    fn requested(self) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
        self.at_least(1)
    }

    /// Resolves at the second signal.
    fn forced(self) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
        self.at_least(2)
    }
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
