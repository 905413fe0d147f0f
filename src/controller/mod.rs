//! kube-runtime wiring: observe → decide → act → status.
//!
//! [`reconcile`] is the whole loop for one Rollout; it can be called directly
//! (tests, the demo) or from the kube-runtime `Controller` ([`run`]).

pub mod checks;
mod client;
mod context;
pub mod dependencies;
pub mod memory;
mod observe;
mod reconcile;
mod run;
mod watches;

pub use client::{classify, counted_client};
pub use context::{Context, PrometheusProviders, ProviderFactory};
pub use reconcile::{error_policy, reconcile};
pub use run::{RunConfig, run, run_with, trim, trim_meta};
pub use watches::{Trigger, Watches};

/// Errors of the operator's own machinery (a failed canary is not an error:
/// it is a decision recorded in status).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Traffic(#[from] crate::traffic::TrafficError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("the Rollout has no namespace or name")]
    MissingObjectKey,
    #[error("Kubernetes API call timed out after {0:?}: {1}")]
    Timeout(std::time::Duration, &'static str),
}

impl Error {
    /// A fixed label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 403 => "forbidden",
            Error::Kube(_) => "kube_api",
            Error::Traffic(t) => t.metric_label(),
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.metric_label(),
                _ => "finalizer",
            },
            Error::MissingObjectKey => "missing_key",
            Error::Timeout(..) => "timeout",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Bound every API call the controller makes itself.
pub(crate) const API_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) async fn with_timeout<T>(
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T> {
    match tokio::time::timeout(API_TIMEOUT, fut).await {
        Ok(r) => r.map_err(Error::from),
        Err(_) => Err(Error::Timeout(API_TIMEOUT, what)),
    }
}
