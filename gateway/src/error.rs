//! The gateway's errors and what a client sees of them, in one place.
//!
//! [`Error`] is what the node and the background jobs fail with: a metadata failure, a
//! request body that broke off, a plan that does not exist, no placement on today's
//! providers, or an internal failure. Each variant knows its S3 error code and message
//! ([`Error::s3_code`], [`Error::message`]); `impl From<Error> for S3Error` is the one
//! mapping the S3 layer answers with. The constructors below are the S3 layer's own
//! answers (missing buckets and uploads, internal failures).

use s3s::{S3Error, S3ErrorCode};

use crate::meta::MetaError;

/// What the node and the background jobs fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The metadata store refused the change or failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The request body broke off, or held more or less than it announced.
    #[error("{0}")]
    IncompleteBody(String),
    /// An upload larger than one PUT or part may be (`EntityTooLarge`).
    #[error("{0}")]
    EntityTooLarge(String),
    /// No storage plan of that name (a storage class the gateway does not know).
    #[error("{0}")]
    InvalidStorageClass(String),
    /// Not possible now: the plan cannot be placed on today's healthy providers.
    #[error("{0}")]
    Unavailable(String),
    /// The write would take the bucket owner past a quota (403 `QuotaExceeded`, as Ceph
    /// answers).
    #[error("{0}")]
    QuotaExceeded(String),
    /// Something failed inside the gateway or on its providers.
    #[error("{0}")]
    Internal(String),
}

/// A result of the node and the background jobs.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }

    /// The message a client gets.
    pub fn message(&self) -> String {
        match self {
            Error::Meta(e) => meta_message(e),
            other => other.to_string(),
        }
    }

    /// The S3 error code a client gets.
    pub fn s3_code(&self) -> S3ErrorCode {
        match self {
            Error::Meta(e) => meta_err_code(e),
            Error::IncompleteBody(_) => S3ErrorCode::IncompleteBody,
            Error::EntityTooLarge(_) => S3ErrorCode::EntityTooLarge,
            Error::InvalidStorageClass(_) => S3ErrorCode::InvalidStorageClass,
            Error::Unavailable(_) => S3ErrorCode::ServiceUnavailable,
            Error::QuotaExceeded(_) => S3ErrorCode::Custom("QuotaExceeded".into()),
            Error::Internal(_) => S3ErrorCode::InternalError,
        }
    }
}

impl From<Error> for S3Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Meta(e) => meta_err(e),
            Error::Unavailable(message) => {
                let mut err = S3Error::with_message(S3ErrorCode::ServiceUnavailable, message);
                err.set_status_code(http::StatusCode::SERVICE_UNAVAILABLE);
                err
            }
            Error::QuotaExceeded(message) => {
                let mut err =
                    S3Error::with_message(S3ErrorCode::Custom("QuotaExceeded".into()), message);
                err.set_status_code(http::StatusCode::FORBIDDEN);
                err
            }
            other => S3Error::with_message(other.s3_code(), other.message()),
        }
    }
}

fn meta_err_code(e: &MetaError) -> S3ErrorCode {
    match e {
        MetaError::BucketExists(_) => S3ErrorCode::BucketAlreadyOwnedByYou,
        MetaError::NoSuchBucket(_) => S3ErrorCode::NoSuchBucket,
        MetaError::BucketNotEmpty(_) => S3ErrorCode::BucketNotEmpty,
        MetaError::NoSuchUpload { .. } => S3ErrorCode::NoSuchUpload,
        MetaError::PartChanged { .. } => S3ErrorCode::InvalidPart,
        MetaError::PreconditionFailed { .. } => S3ErrorCode::PreconditionFailed,
        MetaError::NoSuchKey { .. } => S3ErrorCode::NoSuchKey,
        MetaError::ObjectLocked { .. } => S3ErrorCode::AccessDenied,
        MetaError::Store(_) => S3ErrorCode::InternalError,
        MetaError::Busy(_) => S3ErrorCode::SlowDown,
    }
}

pub fn no_such_bucket(name: &str) -> S3Error {
    meta_err(MetaError::NoSuchBucket(name.to_owned()))
}

/// What a client sees of a metadata failure.
pub fn meta_err(e: MetaError) -> S3Error {
    match &e {
        MetaError::Store(m) => tracing::error!(error = %m, "metadata store failed"),
        MetaError::Busy(m) => tracing::warn!(error = %m, "metadata store busy"),
        _ => {}
    }
    let mut err = S3Error::with_message(meta_err_code(&e), meta_message(&e));
    if matches!(e, MetaError::Busy(_)) {
        // SlowDown is a 503: the client backs off and tries again.
        err.set_status_code(http::StatusCode::SERVICE_UNAVAILABLE);
    }
    err
}

/// The message a client gets for a metadata failure.
fn meta_message(e: &MetaError) -> String {
    match e {
        MetaError::PartChanged {
            upload_id,
            part_number,
        } => format!(
            "part {part_number} of upload {upload_id} was replaced while completing; list the parts and try again"
        ),
        other => other.to_string(),
    }
}

pub fn internal(msg: impl Into<String>) -> S3Error {
    S3Error::with_message(S3ErrorCode::InternalError, msg.into())
}

/// NoSuchUpload for an upload id that is not (or no longer) in progress.
pub fn no_such_upload(bucket: &str, key: &str, upload_id: &str) -> S3Error {
    meta_err(MetaError::NoSuchUpload {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        upload_id: upload_id.to_owned(),
    })
}

/// The error for a request body that broke off.
pub fn body_failed(e: impl std::fmt::Display) -> Error {
    Error::IncompleteBody(format!("reading the request body failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_metadata_store_is_a_503_slow_down_not_a_500() {
        let e = S3Error::from(Error::Meta(MetaError::Busy(
            "PostgreSQL: all 16 connections stayed busy".into(),
        )));
        assert_eq!(e.code(), &S3ErrorCode::SlowDown);
        assert_eq!(e.status_code(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
        assert!(
            e.message().is_some_and(|m| m.contains("stayed busy")),
            "{e:?}"
        );
        let e = S3Error::from(Error::Meta(MetaError::Store("broken".into())));
        assert_eq!(e.code(), &S3ErrorCode::InternalError);
    }
}
