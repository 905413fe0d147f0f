//! The `Rollout` custom resource (`rollwise.io/v1alpha1`): spec, status and
//! the admission-time validation rules (CEL + schema bounds). No I/O here.
//!
//! Durations are kept as strings in the spec (`"30s"`, `"2m"`): a typo must
//! never make the object undeserializable for the operator, it must become a
//! status condition naming the field (see [`validate`]).

mod spec_status;
pub mod validate;

pub use spec_status::*;
pub use validate::{FieldError, Plan, PlanMetric, PlanStep, validate};

/// Annotation carrying a one-shot manual action (`promote`, `promote-full`,
/// `abort`, `retry`). The operator carries it out once and removes it.
pub const ACTION_ANNOTATION: &str = "rollwise.io/action";

/// The finalizer that returns all traffic to stable before a Rollout goes.
pub const FINALIZER: &str = "rollwise.io/restore-stable";

/// The field manager name used for every write the operator makes.
pub const FIELD_MANAGER: &str = "rollwise";
