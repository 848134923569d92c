//! The sublet operator: reconciles sublet custom resources into provider and gateway
//! workloads, the gateway's configuration, status and rebuild Jobs.
//!
//! Rendering ([`render`]), feasibility ([`feasibility`]) and the rebuild decision
//! ([`repair`]) are pure functions; [`controller`] holds the kube controllers that apply
//! their output.

pub mod admin;
pub mod controller;
pub mod error;
pub mod feasibility;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod render;
pub mod repair;
#[cfg(test)]
pub(crate) mod testing;

pub use error::{Error, Result};

/// The field manager used for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "sublet-operator";

/// The image used for gateway and provider pods unless a flag says otherwise.
pub fn default_image() -> String {
    format!("ghcr.io/sublet-dev/sublet:{}", env!("CARGO_PKG_VERSION"))
}
