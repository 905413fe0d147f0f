//! rollwise: a Kubernetes operator for progressive delivery.
//!
//! Where to look:
//! - what the operator decides: [`plan`] (the step engine) and [`analysis`]
//!   (metric verdicts) — pure, no I/O;
//! - how it talks to the cluster: [`controller`] and [`traffic`];
//! - the resource users write: [`api`].

pub mod analysis;
pub mod api;
pub mod cli;
pub mod clock;
pub mod controller;
#[cfg(feature = "demo")]
pub mod demo;
pub mod events;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod simulate;
pub mod status;
pub mod telemetry;
pub mod traffic;

pub use controller::{Error, Result};

/// FNV-1a, 64 bits: stable across runs and builds (unlike `RandomState`),
/// for names and fingerprints that must not change between releases.
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Choose the process-wide TLS crypto provider (ring). The build contains
/// two rustls backends (kube uses ring, the Prometheus client's reqwest
/// brings aws-lc-rs); without an explicit choice, the first HTTPS connection
/// to the API server panics. Idempotent; call it before any client is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
