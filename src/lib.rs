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
pub mod status;
pub mod telemetry;
pub mod traffic;

pub use controller::{Error, Result};
