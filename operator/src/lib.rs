//! The sublet operator: reconciles sublet custom resources into workloads (skeleton until its issue lands).

/// The field manager used for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "sublet-operator";
