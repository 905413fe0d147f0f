//! Prometheus HTTP API provider (being written).
