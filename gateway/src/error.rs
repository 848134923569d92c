//! The S3 errors the gateway answers with, chosen in one place: what a metadata failure,
//! a missing bucket or upload, a broken request body or an internal failure looks like to
//! a client. Other layers build theirs from these.

use s3s::{S3Error, S3ErrorCode};

use crate::meta::MetaError;

pub fn no_such_bucket(name: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NoSuchBucket,
        format!("bucket {name} does not exist"),
    )
}

pub fn meta_err(e: MetaError) -> S3Error {
    match e {
        MetaError::BucketExists(b) => S3Error::with_message(
            S3ErrorCode::BucketAlreadyOwnedByYou,
            format!("bucket {b} already exists"),
        ),
        MetaError::NoSuchBucket(b) => no_such_bucket(&b),
        MetaError::BucketNotEmpty(b) => S3Error::with_message(
            S3ErrorCode::BucketNotEmpty,
            format!("bucket {b} is not empty"),
        ),
        MetaError::NoSuchUpload {
            bucket,
            key,
            upload_id,
        } => no_such_upload(&bucket, &key, &upload_id),
        MetaError::PartChanged {
            upload_id,
            part_number,
        } => S3Error::with_message(
            S3ErrorCode::InvalidPart,
            format!(
                "part {part_number} of upload {upload_id} was replaced while completing; list the parts and try again"
            ),
        ),
        MetaError::Store(m) => {
            tracing::error!(error = %m, "metadata store failed");
            S3Error::with_message(S3ErrorCode::InternalError, format!("metadata store: {m}"))
        }
    }
}

pub fn internal(msg: impl Into<String>) -> S3Error {
    S3Error::with_message(S3ErrorCode::InternalError, msg.into())
}

/// NoSuchUpload for an upload id that is not (or no longer) in progress.
pub fn no_such_upload(bucket: &str, key: &str, upload_id: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NoSuchUpload,
        format!(
            "upload {upload_id} of key {key} in bucket {bucket} does not exist (completed, aborted or never started)"
        ),
    )
}

/// The error for a request body that broke off.
pub fn body_failed(e: impl std::fmt::Display) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::IncompleteBody,
        format!("reading the request body failed: {e}"),
    )
}
