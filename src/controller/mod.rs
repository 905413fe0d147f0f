//! kube-runtime wiring: observe → decide → act → status.

/// Errors of the operator's own machinery (a failed canary is not an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Traffic(#[from] crate::traffic::TrafficError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
