//! sublet-gateway: the S3 API over encrypted, erasure-coded shards.

pub mod admin;
pub mod admin_cli;
pub mod audit;
pub mod auth;
pub mod cloud_backend;
pub mod codec;
pub mod dataplane;
pub mod dev;
pub mod health;
pub mod journal;
pub mod layout;
pub mod market;
pub mod meta;
pub mod metrics;
pub mod placement;
pub mod policy;
pub mod provider_backend;
pub mod recover;
pub mod repair;
pub mod s3;
pub mod scrub;
pub mod serve;
