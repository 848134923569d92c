//! sublet-provider: the shard store daemon, its gRPC protocol and the client the gateway uses.

pub mod client;
pub mod client_error;
pub mod config;
pub mod identity;
pub mod market;
pub mod metrics;
pub mod put_body;
pub mod server;
pub mod shortcircuit;
pub mod store;
pub mod tls;
pub mod tree;
pub mod unix;

mod error;

pub use error::{Error, Result};

pub mod proto {
    //! Generated gRPC code for `proto/provider.proto`.
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("sublet.provider.v1");
}

/// The version this provider reports in `Info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Metadata key carrying the cluster token (the client sends it, the server checks it: here,
/// below both).
pub const TOKEN_METADATA: &str = "x-sublet-token";

/// Connecting and a handshake — TLS over TCP, or the node-key handshake on the Unix
/// socket — take at most this long, on either side (here, below the client, the server
/// and the Unix socket's code).
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest data message a client sends in `PutShard` and a provider sends in `GetShard`.
pub const CHUNK_SIZE: usize = 1024 * 1024;
