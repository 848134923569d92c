//! What a failed call to a provider means to its caller: the error every client path (gRPC
//! in [`crate::client`], short-circuit reads in [`crate::shortcircuit`]) returns.

use tonic::{Code, Status};

/// What a failed call means to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    DataLoss,
    Unavailable,
    ResourceExhausted,
    Unauthenticated,
    /// The provider's audit answer did not verify against the recorded hash.
    AuditFailed,
    InvalidArgument,
    Other,
}

/// A failed provider call.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ClientError {
    kind: ErrorKind,
    message: String,
}

impl ClientError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ClientError {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<Status> for ClientError {
    fn from(s: Status) -> Self {
        let kind = match s.code() {
            Code::NotFound => ErrorKind::NotFound,
            Code::DataLoss => ErrorKind::DataLoss,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => {
                ErrorKind::Unavailable
            }
            Code::ResourceExhausted => ErrorKind::ResourceExhausted,
            Code::Unauthenticated | Code::PermissionDenied => ErrorKind::Unauthenticated,
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
            _ => ErrorKind::Other,
        };
        let mut message = s.message().to_string();
        // Connection failures (TLS pinning included) carry their cause in the source.
        let mut source = std::error::Error::source(&s);
        while let Some(e) = source {
            message.push_str(": ");
            message.push_str(&e.to_string());
            source = e.source();
        }
        ClientError::new(kind, message)
    }
}
