//! The crate's error type and its one mapping to gRPC status codes.

use tonic::{Code, Status};

/// Everything that can go wrong inside a provider.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid shard id {0:?}: use 1..=200 characters of [A-Za-z0-9._-], not starting with '.'"
    )]
    InvalidShardId(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("shard {0} not found")]
    NotFound(String),
    #[error("shard {id} is corrupt: {reason}")]
    DataLoss { id: String, reason: String },
    #[error(
        "capacity exhausted: storing {needed} bytes would exceed the usable capacity \
         ({used} of {usable} bytes used; capacity minus reserve); free space or raise `capacity`"
    )]
    CapacityExhausted { needed: u64, used: u64, usable: u64 },
    #[error(
        "contract quota exceeded: storing {needed} bytes would exceed the {quota} bytes your \
         market contract reserves here ({used} used); contract more space"
    )]
    QuotaExceeded { needed: u64, used: u64, quota: u64 },
    #[error("disk full while writing shard {0}; nothing was stored")]
    DiskFull(String),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The gRPC code this error is reported with.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidShardId(_) | Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::DataLoss { .. } => Code::DataLoss,
            Error::CapacityExhausted { .. } | Error::QuotaExceeded { .. } | Error::DiskFull(_) => {
                Code::ResourceExhausted
            }
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::Io(_) | Error::Other(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::new(e.code(), e.to_string())
    }
}
