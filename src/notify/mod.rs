//! Notifications on rollout transitions (being written).
