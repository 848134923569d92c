//! Bucket operations.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::{Gateway, now_ms, timestamp};
use crate::meta::{self, Versioning};

impl Gateway {
    pub(super) async fn do_create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let name = req.input.bucket;
        let bucket = meta::Bucket {
            name: name.clone(),
            created: now_ms(),
            default_plan: None,
            versioning: Versioning::Unversioned,
        };
        self.meta(move |m| m.create_bucket(&bucket)).await?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{name}")),
        }))
    }

    pub(super) async fn do_delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let name = req.input.bucket;
        self.meta(move |m| m.delete_bucket(&name)).await?;
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
        let grants = req.extensions.get::<crate::auth::Grants>();
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
