//! Object deletion: single and batch.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::Gateway;
use crate::dataplane;

impl Gateway {
    /// Removes the latest version of a key (buckets are unversioned for now)
    /// and its shards. Deleting a missing key succeeds, as in S3.
    async fn delete_key(&self, bucket: &str, key: &str) -> S3Result<()> {
        let (b, k) = (bucket.to_string(), key.to_string());
        let removed = self
            .meta(move |m| match m.version(&b, &k, None)? {
                Some(latest) => m.delete_version(&b, &k, &latest.version_id),
                None => Ok(None),
            })
            .await?;
        if let Some(layout) = removed.and_then(|v| v.layout) {
            dataplane::delete_shards(&layout, self.backend_for()).await;
        }
        Ok(())
    }

    pub(super) async fn do_delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        self.delete_key(&input.bucket, &input.key).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    pub(super) async fn do_delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for obj in input.delete.objects {
            match self.delete_key(&input.bucket, &obj.key).await {
                Ok(()) => {
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(obj.key),
                            ..Default::default()
                        });
                    }
                }
                Err(e) => errors.push(Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(obj.key),
                    message: e.message().map(str::to_string),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            request_charged: None,
        }))
    }
}
