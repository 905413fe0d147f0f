//! Metric providers: the I/O edge of the analysis.

use async_trait::async_trait;

use super::QueryOutcome;

pub mod prometheus;

/// Errors of a provider's machinery (not of a query: a failed query is a
/// [`QueryOutcome::Error`], which the engine counts).
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("invalid provider address {address:?}: {message}")]
    InvalidAddress { address: String, message: String },
}

impl ProviderError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            ProviderError::InvalidAddress { .. } => "provider_address",
        }
    }
}

#[async_trait]
pub trait MetricsProvider: Send + Sync {
    /// Run one instant query and return a value, no data, or an error.
    /// Every call is bounded by a timeout.
    async fn query(&self, query: &str) -> QueryOutcome;
}
