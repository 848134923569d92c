//! Object deletion, single and batch: versions, delete markers and their shards.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::Gateway;

impl Gateway {
    pub(super) async fn do_delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let bypass = super::lock::bypasses_governance(
            &req.extensions,
            req.input.bypass_governance_retention,
        );
        let input = req.input;
        let bucket = self.require_bucket(&input.bucket).await?;
        let done = self
            .delete_key(&bucket, &input.key, input.version_id.as_deref(), bypass)
            .await?;
        Ok(S3Response::new(DeleteObjectOutput {
            delete_marker: done.delete_marker.then_some(true),
            version_id: done.version_id,
            request_charged: None,
        }))
    }

    pub(super) async fn do_delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let bypass = super::lock::bypasses_governance(
            &req.extensions,
            req.input.bypass_governance_retention,
        );
        let input = req.input;
        let bucket = self.require_bucket(&input.bucket).await?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for obj in input.delete.objects {
            match self
                .delete_key(&bucket, &obj.key, obj.version_id.as_deref(), bypass)
                .await
            {
                Ok(done) => {
                    if !quiet {
                        let marker_id = done
                            .delete_marker
                            .then(|| done.version_id.clone())
                            .flatten();
                        deleted.push(DeletedObject {
                            key: Some(obj.key),
                            delete_marker: done.delete_marker.then_some(true),
                            delete_marker_version_id: marker_id,
                            version_id: obj.version_id,
                        });
                    }
                }
                Err(e) => errors.push(Error {
                    code: Some(e.s3_code().as_str().to_string()),
                    key: Some(obj.key),
                    message: Some(e.message()),
                    version_id: obj.version_id,
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
