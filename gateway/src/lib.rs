//! sublet-gateway: the S3 API over encrypted, erasure-coded shards.

pub mod admin;
pub mod clock;
pub mod datapath;
pub mod error;
pub mod meta;
pub mod metrics;
pub mod node;
pub mod runtime;
pub mod s3;
pub mod upkeep;
