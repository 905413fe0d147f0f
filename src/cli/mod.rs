//! The `kubectl rollwise` plugin (being written).
