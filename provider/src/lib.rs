//! sublet-provider: the shard store daemon, its gRPC protocol and the client the gateway uses.

pub mod proto {
    //! Generated gRPC code for `proto/provider.proto`.
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("sublet.provider.v1");
}
