//! Put/Get/Delete/GetBucketPolicyStatus and Put/Get/DeletePublicAccessBlock: a bucket's
//! policy (checked by [`super::policy::Policy::parse`], stored as given) and its block on
//! public access. Who may call them is the access check's (the owner, whatever the policy).

use s3s::dto;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::Gateway;
use super::policy::{Policy, PublicAccessBlock};
use crate::error::internal;

fn no_policy(bucket: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NoSuchBucketPolicy,
        format!("bucket {bucket} has no policy"),
    )
}

fn no_block(bucket: &str) -> S3Error {
    let mut e = S3Error::with_message(
        S3ErrorCode::Custom("NoSuchPublicAccessBlockConfiguration".into()),
        format!("bucket {bucket} has no PublicAccessBlock configuration"),
    );
    e.set_status_code(http::StatusCode::NOT_FOUND);
    e
}

impl Gateway {
    /// The bucket's PublicAccessBlock as stored (all off when none is).
    pub(super) async fn stored_block(&self, bucket: &str) -> S3Result<Option<PublicAccessBlock>> {
        let name = bucket.to_owned();
        let text = self.meta(move |m| m.public_access_block(&name)).await?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| {
                internal(format!(
                    "the stored PublicAccessBlock of bucket {bucket} does not parse: {e}"
                ))
            })
        })
        .transpose()
    }

    pub(super) async fn do_put_bucket_policy(
        &self,
        req: S3Request<dto::PutBucketPolicyInput>,
    ) -> S3Result<S3Response<dto::PutBucketPolicyOutput>> {
        let input = req.input;
        let bucket = input.bucket;
        self.require_bucket(&bucket).await?;
        let policy = Policy::parse(&input.policy, &bucket)
            .map_err(|m| S3Error::with_message(S3ErrorCode::MalformedPolicy, m))?;
        if policy.is_public()
            && self
                .stored_block(&bucket)
                .await?
                .is_some_and(|b| b.block_public_policy)
        {
            return Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                format!(
                    "the policy would make bucket {bucket} public (it allows everyone without \
                     pinning addresses or users), and its PublicAccessBlock sets \
                     BlockPublicPolicy"
                ),
            ));
        }
        let (name, text) = (bucket.clone(), input.policy);
        self.meta(move |m| m.set_bucket_policy(&name, Some(&text)))
            .await?;
        self.bucket_access_changed(&bucket);
        tracing::info!(bucket, public = policy.is_public(), "bucket policy set");
        Ok(S3Response::new(dto::PutBucketPolicyOutput {}))
    }

    pub(super) async fn do_get_bucket_policy(
        &self,
        req: S3Request<dto::GetBucketPolicyInput>,
    ) -> S3Result<S3Response<dto::GetBucketPolicyOutput>> {
        let bucket = req.input.bucket;
        self.require_bucket(&bucket).await?;
        let name = bucket.clone();
        match self.meta(move |m| m.bucket_policy(&name)).await? {
            Some(policy) => Ok(S3Response::new(dto::GetBucketPolicyOutput {
                policy: Some(policy),
            })),
            None => Err(no_policy(&bucket)),
        }
    }

    pub(super) async fn do_delete_bucket_policy(
        &self,
        req: S3Request<dto::DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketPolicyOutput>> {
        let bucket = req.input.bucket;
        let name = bucket.clone();
        self.meta(move |m| m.set_bucket_policy(&name, None)).await?;
        self.bucket_access_changed(&bucket);
        tracing::info!(bucket, "bucket policy deleted");
        Ok(S3Response::new(dto::DeleteBucketPolicyOutput {}))
    }

    pub(super) async fn do_get_bucket_policy_status(
        &self,
        req: S3Request<dto::GetBucketPolicyStatusInput>,
    ) -> S3Result<S3Response<dto::GetBucketPolicyStatusOutput>> {
        let bucket = req.input.bucket;
        self.require_bucket(&bucket).await?;
        let name = bucket.clone();
        let Some(text) = self.meta(move |m| m.bucket_policy(&name)).await? else {
            return Err(no_policy(&bucket));
        };
        let public = Policy::parse(&text, &bucket)
            .map_err(|e| {
                internal(format!(
                    "the stored policy of bucket {bucket} does not parse: {e}"
                ))
            })?
            .is_public();
        Ok(S3Response::new(dto::GetBucketPolicyStatusOutput {
            policy_status: Some(dto::PolicyStatus {
                is_public: Some(public),
            }),
        }))
    }

    pub(super) async fn do_put_public_access_block(
        &self,
        req: S3Request<dto::PutPublicAccessBlockInput>,
    ) -> S3Result<S3Response<dto::PutPublicAccessBlockOutput>> {
        let input = req.input;
        let bucket = input.bucket;
        self.require_bucket(&bucket).await?;
        let c = input.public_access_block_configuration;
        let block = PublicAccessBlock {
            block_public_acls: c.block_public_acls.unwrap_or(false),
            ignore_public_acls: c.ignore_public_acls.unwrap_or(false),
            block_public_policy: c.block_public_policy.unwrap_or(false),
            restrict_public_buckets: c.restrict_public_buckets.unwrap_or(false),
        };
        let text = serde_json::to_string(&block)
            .map_err(|e| internal(format!("PublicAccessBlock does not serialize: {e}")))?;
        let name = bucket.clone();
        self.meta(move |m| m.set_public_access_block(&name, Some(&text)))
            .await?;
        self.bucket_access_changed(&bucket);
        tracing::info!(bucket, ?block, "public access block set");
        Ok(S3Response::new(dto::PutPublicAccessBlockOutput {}))
    }

    pub(super) async fn do_get_public_access_block(
        &self,
        req: S3Request<dto::GetPublicAccessBlockInput>,
    ) -> S3Result<S3Response<dto::GetPublicAccessBlockOutput>> {
        let bucket = req.input.bucket;
        self.require_bucket(&bucket).await?;
        let Some(b) = self.stored_block(&bucket).await? else {
            return Err(no_block(&bucket));
        };
        Ok(S3Response::new(dto::GetPublicAccessBlockOutput {
            public_access_block_configuration: Some(dto::PublicAccessBlockConfiguration {
                block_public_acls: Some(b.block_public_acls),
                ignore_public_acls: Some(b.ignore_public_acls),
                block_public_policy: Some(b.block_public_policy),
                restrict_public_buckets: Some(b.restrict_public_buckets),
            }),
        }))
    }

    pub(super) async fn do_delete_public_access_block(
        &self,
        req: S3Request<dto::DeletePublicAccessBlockInput>,
    ) -> S3Result<S3Response<dto::DeletePublicAccessBlockOutput>> {
        let bucket = req.input.bucket;
        let name = bucket.clone();
        self.meta(move |m| m.set_public_access_block(&name, None))
            .await?;
        self.bucket_access_changed(&bucket);
        Ok(S3Response::new(dto::DeletePublicAccessBlockOutput {}))
    }
}
