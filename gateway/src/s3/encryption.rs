//! A bucket's default encryption (Put/Get/DeleteBucketEncryption): `AES256`, i.e. every
//! object sealed under its plan's data keys. Stored as JSON beside the bucket; a bucket
//! without one reports `AES256` when its default plan encrypts (as S3 reports a default
//! for every bucket). While a bucket has one, writes under a plan that stores objects
//! unencrypted are refused, so the configuration is never a promise the data breaks.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use serde::{Deserialize, Serialize};

use super::Gateway;
use crate::error::internal;
use crate::meta::Bucket;
use crate::node::Plan;

/// A bucket's default encryption as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DefaultEncryption {
    /// Always `AES256`: the only algorithm sublet has.
    pub algorithm: String,
    /// S3's bucket key switch, kept and answered; sublet has no KMS calls to save.
    #[serde(default)]
    pub bucket_key: bool,
}

/// The stored form of a PutBucketEncryption body: one rule of `AES256` (no KMS key).
pub(super) fn from_request(
    config: &ServerSideEncryptionConfiguration,
) -> S3Result<DefaultEncryption> {
    let [rule] = config.rules.as_slice() else {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedXML,
            format!(
                "a server-side encryption configuration holds exactly one rule, not {}",
                config.rules.len()
            ),
        ));
    };
    let Some(default) = &rule.apply_server_side_encryption_by_default else {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedXML,
            "the encryption rule needs ApplyServerSideEncryptionByDefault with SSEAlgorithm AES256",
        ));
    };
    let algorithm = default.sse_algorithm.as_str();
    if algorithm != ServerSideEncryption::AES256 {
        return Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            format!(
                "default encryption {algorithm} is not supported: sublet keeps no KMS; use AES256 (objects sealed under their plan's keys)"
            ),
        ));
    }
    if default.kms_master_key_id.is_some() {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "KMSMasterKeyID applies only to aws:kms, which sublet does not support",
        ));
    }
    Ok(DefaultEncryption {
        algorithm: algorithm.to_owned(),
        bucket_key: rule.bucket_key_enabled.unwrap_or(false),
    })
}

fn to_answer(config: &DefaultEncryption) -> ServerSideEncryptionConfiguration {
    ServerSideEncryptionConfiguration {
        rules: vec![ServerSideEncryptionRule {
            apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                sse_algorithm: ServerSideEncryption::from(config.algorithm.clone()),
                kms_master_key_id: None,
            }),
            bucket_key_enabled: Some(config.bucket_key),
        }],
    }
}

impl Gateway {
    async fn stored_encryption(&self, bucket: &str) -> S3Result<Option<DefaultEncryption>> {
        let b = bucket.to_owned();
        let Some(json) = self.meta(move |m| m.bucket_encryption(&b)).await? else {
            return Ok(None);
        };
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| internal(format!("bucket {bucket}: stored default encryption: {e}")))
    }

    /// Refuses a write under `plan` into `bucket` when the bucket has a default encryption
    /// and the plan stores objects unencrypted (`encryption: none`).
    pub(super) async fn check_bucket_encryption(
        &self,
        bucket: &Bucket,
        plan: &Plan,
    ) -> S3Result<()> {
        if plan.encrypt {
            return Ok(());
        }
        if self.stored_encryption(&bucket.name).await?.is_some() {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                format!(
                    "bucket {} has default encryption AES256, but storage class {} stores objects unencrypted (encryption: none); use a storage class that encrypts or delete the bucket's encryption configuration",
                    bucket.name, plan.name
                ),
            ));
        }
        Ok(())
    }

    pub(super) async fn do_put_bucket_encryption(
        &self,
        req: S3Request<PutBucketEncryptionInput>,
    ) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
        let input = req.input;
        let bucket = self.require_bucket(&input.bucket).await?;
        let config = from_request(&input.server_side_encryption_configuration)?;
        let plan = self.resolve_plan(&bucket, None)?;
        if !plan.encrypt {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                format!(
                    "bucket {}'s default storage class {} stores objects unencrypted (encryption: none): default encryption AES256 would not hold; give the bucket an encrypting plan first",
                    bucket.name, plan.name
                ),
            ));
        }
        let json = serde_json::to_string(&config).map_err(|e| internal(e.to_string()))?;
        let name = input.bucket.clone();
        self.meta(move |m| m.set_bucket_encryption(&name, Some(&json)))
            .await?;
        tracing::info!(bucket = %input.bucket, algorithm = %config.algorithm, "bucket default encryption set");
        Ok(S3Response::new(PutBucketEncryptionOutput::default()))
    }

    pub(super) async fn do_get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        let bucket = self.require_bucket(&req.input.bucket).await?;
        let config = match self.stored_encryption(&bucket.name).await? {
            Some(c) => c,
            // What the bucket's objects get anyway: S3 reports a default for every bucket.
            None if self.resolve_plan(&bucket, None)?.encrypt => DefaultEncryption {
                algorithm: ServerSideEncryption::AES256.to_owned(),
                bucket_key: false,
            },
            None => {
                let mut err = S3Error::with_message(
                    S3ErrorCode::ServerSideEncryptionConfigurationNotFoundError,
                    format!(
                        "bucket {} has no default encryption: its default storage class stores objects unencrypted",
                        bucket.name
                    ),
                );
                err.set_status_code(http::StatusCode::NOT_FOUND);
                return Err(err);
            }
        };
        Ok(S3Response::new(GetBucketEncryptionOutput {
            server_side_encryption_configuration: Some(to_answer(&config)),
        }))
    }

    pub(super) async fn do_delete_bucket_encryption(
        &self,
        req: S3Request<DeleteBucketEncryptionInput>,
    ) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
        let bucket = req.input.bucket;
        self.meta(move |m| m.set_bucket_encryption(&bucket, None))
            .await?;
        Ok(S3Response::new(DeleteBucketEncryptionOutput::default()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(
        algorithm: &str,
        kms: Option<&str>,
        rules: usize,
    ) -> ServerSideEncryptionConfiguration {
        let rule = ServerSideEncryptionRule {
            apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                sse_algorithm: ServerSideEncryption::from(algorithm.to_owned()),
                kms_master_key_id: kms.map(str::to_owned),
            }),
            bucket_key_enabled: Some(true),
        };
        ServerSideEncryptionConfiguration {
            rules: vec![rule; rules],
        }
    }

    #[test]
    fn aes256_is_kept_and_kms_is_not_implemented() {
        let stored = from_request(&config("AES256", None, 1)).unwrap();
        assert_eq!(
            stored,
            DefaultEncryption {
                algorithm: "AES256".into(),
                bucket_key: true
            }
        );
        assert_eq!(to_answer(&stored), config("AES256", None, 1));
        let e = from_request(&config("aws:kms", Some("k"), 1)).unwrap_err();
        assert_eq!(e.code(), &S3ErrorCode::NotImplemented);
        assert!(e.message().unwrap().contains("aws:kms"));
        let e = from_request(&config("AES256", Some("k"), 1)).unwrap_err();
        assert_eq!(e.code(), &S3ErrorCode::InvalidArgument);
        let e = from_request(&config("AES256", None, 2)).unwrap_err();
        assert_eq!(e.code(), &S3ErrorCode::MalformedXML);
    }
}
