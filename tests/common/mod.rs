//! Support code shared by the integration tests (`mod common;` in a test file).

pub mod cluster;
pub mod gitops;
pub mod install;
pub mod prometheus;
pub mod receiver;
pub mod routers;
