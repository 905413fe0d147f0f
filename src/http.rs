//! `/metrics`, `/healthz`, `/readyz`.
//!
//! - `/healthz` (liveness): the process is up and serving; always 200.
//! - `/readyz` (readiness), by [`Election`] role:
//!   - no leader election: 200 once the Rollout cache has synced;
//!   - leader: 200 once the Rollout cache has synced (503 while it syncs,
//!     e.g. just after taking over);
//!   - standby: 200 while its lease loop runs and its last call to the API
//!     server succeeded, 503 otherwise (e.g. the Lease cannot be read: API
//!     server unreachable or RBAC missing).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use axum::{Router, extract::State, http::StatusCode, routing::get};

use crate::metrics::Metrics;

/// This replica's part in leader election, as far as readiness goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Election {
    /// Leader election is off: the replica always reconciles.
    #[default]
    Disabled,
    /// This replica holds the Lease and reconciles.
    Leader,
    /// Another replica (or nobody yet) holds the Lease; this one waits.
    /// `healthy`: its lease loop runs and its last API call succeeded.
    Standby { healthy: bool },
}

impl Election {
    fn to_u8(self) -> u8 {
        match self {
            Election::Disabled => 0,
            Election::Leader => 1,
            Election::Standby { healthy: true } => 2,
            Election::Standby { healthy: false } => 3,
        }
    }
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Election::Leader,
            2 => Election::Standby { healthy: true },
            3 => Election::Standby { healthy: false },
            _ => Election::Disabled,
        }
    }
}

/// Shared health state: whether the Rollout cache has synced, and this
/// replica's election role.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The Rollout watch has synced (the reflector store is ready).
    synced: AtomicBool,
    election: AtomicU8,
}

impl Health {
    /// Record whether the Rollout cache has synced.
    pub fn set_ready(&self, ready: bool) {
        self.inner.synced.store(ready, Ordering::Relaxed);
    }
    /// Record this replica's election role.
    pub fn set_election(&self, election: Election) {
        self.inner
            .election
            .store(election.to_u8(), Ordering::Relaxed);
    }
    pub fn election(&self) -> Election {
        Election::from_u8(self.inner.election.load(Ordering::Relaxed))
    }
    /// Whether the Rollout cache has synced.
    pub fn is_synced(&self) -> bool {
        self.inner.synced.load(Ordering::Relaxed)
    }
    /// What `/readyz` answers: `Ok(body)` for 200, `Err(body)` for 503.
    pub fn readiness(&self) -> Result<&'static str, &'static str> {
        let synced = self.is_synced();
        match self.election() {
            Election::Disabled if synced => Ok("ready"),
            Election::Disabled => Err("not ready: waiting for the Rollout cache to sync"),
            Election::Leader if synced => Ok("ready: leader"),
            Election::Leader => Err("not ready: leader, waiting for the Rollout cache to sync"),
            Election::Standby { healthy: true } => Ok("ready: standby"),
            Election::Standby { healthy: false } => {
                Err("not ready: standby, the lease loop cannot reach the API server")
            }
        }
    }
    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Health,
}

pub fn router(metrics: Metrics, health: Health) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move { s.metrics.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AppState>| async move {
                match s.health.readiness() {
                    Ok(body) => (StatusCode::OK, body),
                    Err(body) => (StatusCode::SERVICE_UNAVAILABLE, body),
                }
            }),
        )
        .with_state(AppState { metrics, health })
}

/// Serve until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Metrics, health: Health) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics /healthz /readyz");
    axum::serve(listener, router(metrics, health)).await
}
