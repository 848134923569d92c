//! Bucket operations.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::{Gateway, timestamp};
use crate::meta::{self, Versioning};
use crate::node::now_ms;

impl Gateway {
    pub(super) async fn do_create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        // The bucket belongs to the user of the key that creates it; buckets created with
        // the configuration file's keys to the default user (no owner).
        let owner = req
            .credentials
            .as_ref()
            .and_then(|c| self.accounts().lookup(&c.access_key))
            .map(|k| k.user);
        let (asked_acl, ownership) = self.create_bucket_asks(
            &req.input,
            &req.headers,
            owner.as_deref().unwrap_or(crate::node::users::DEFAULT_USER),
        )?;
        let name = req.input.bucket;
        // Object lock needs versioning, and keeps it enabled.
        let lock = req.input.object_lock_enabled_for_bucket == Some(true);
        let bucket = meta::Bucket {
            name: name.clone(),
            created: now_ms(),
            default_plan: None,
            versioning: if lock {
                Versioning::Enabled
            } else {
                Versioning::Unversioned
            },
            owner,
        };
        let created = bucket.clone();
        self.meta(move |m| m.create_bucket(&bucket)).await?;
        self.bucket_access_changed(&name);
        if let Err(e) = self
            .apply_create_bucket_acl(&created, &asked_acl, ownership)
            .await
        {
            // Not left behind without the access controls it was asked for.
            let n = name.clone();
            if let Err(cleanup) = self.meta(move |m| m.delete_bucket(&n)).await {
                tracing::warn!(bucket = %name, error = %cleanup, "bucket created without its ACL could not be removed again");
            }
            return Err(e);
        }
        if lock && let Err(e) = self.enable_lock(&name).await {
            // Not left behind without the lock it was asked for.
            let n = name.clone();
            if let Err(cleanup) = self.meta(move |m| m.delete_bucket(&n)).await {
                tracing::warn!(bucket = %name, error = %cleanup, "bucket created without its object lock could not be removed again");
            }
            return Err(e);
        }
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{name}")),
        }))
    }

    pub(super) async fn do_delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let name = req.input.bucket;
        let n = name.clone();
        self.meta(move |m| m.delete_bucket(&n)).await?;
        self.bucket_access_changed(&name);
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    pub(super) async fn do_head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    pub(super) async fn do_list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        // A key with per-bucket grants sees only the buckets it may use.
        let grants = req.extensions.get::<crate::s3::auth::Grants>();
        let buckets = self
            .meta(|m| m.buckets())
            .await?
            .into_iter()
            .filter(|b| grants.is_none_or(|g| g.sees(&b.name)))
            .map(|b| Bucket {
                bucket_region: None,
                creation_date: Some(timestamp(b.created)),
                name: Some(b.name),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some("sublet".into()),
                id: Some("sublet".into()),
            }),
            ..Default::default()
        }))
    }

    pub(super) async fn do_get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: None,
        }))
    }
}

impl Gateway {
    pub(super) async fn do_put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let input = req.input;
        let status = input.versioning_configuration.status;
        let versioning = match status.as_ref().map(|s| s.as_str()) {
            Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
            Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
            other => {
                return Err(S3Error::with_message(
                    S3ErrorCode::MalformedXML,
                    format!(
                        "bucket {}: versioning status must be Enabled or Suspended, not {other:?}",
                        input.bucket
                    ),
                ));
            }
        };
        let locked = self.bucket_lock(&input.bucket).await?.is_some();
        super::lock::versioning_change_allowed(
            &input.bucket,
            locked,
            versioning == Versioning::Enabled,
        )?;
        let name = input.bucket;
        self.meta(move |m| m.set_versioning(&name, versioning))
            .await?;
        Ok(S3Response::new(PutBucketVersioningOutput {}))
    }

    pub(super) async fn do_get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let bucket = self.require_bucket(&req.input.bucket).await?;
        let status = match bucket.versioning {
            Versioning::Unversioned => None,
            Versioning::Enabled => Some(BucketVersioningStatus::from_static(
                BucketVersioningStatus::ENABLED,
            )),
            Versioning::Suspended => Some(BucketVersioningStatus::from_static(
                BucketVersioningStatus::SUSPENDED,
            )),
        };
        Ok(S3Response::new(GetBucketVersioningOutput {
            mfa_delete: None,
            status,
        }))
    }
}
