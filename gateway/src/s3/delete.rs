//! Object deletion, single and batch: versions, delete markers and their shards.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::put::{random_uid, reported_version_id};
use super::{Gateway, now_ms};
use crate::meta::{self, NULL_VERSION, ObjectVersion, Versioning};

/// What a delete did, as S3 reports it.
pub(super) struct Deleted {
    version_id: Option<String>,
    delete_marker: bool,
}

impl Gateway {
    /// Deletes a version for good (with `version_id`), or the key: unversioned
    /// buckets drop the object, versioned ones stack a delete marker ("null"
    /// while suspended, replacing the null version). Deleting what is missing
    /// succeeds, as in S3.
    pub(super) async fn delete_key(
        &self,
        bucket: &meta::Bucket,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<Deleted> {
        let (b, k) = (bucket.name.clone(), key.to_string());
        let marker_id = match (version_id, bucket.versioning) {
            (Some(id), _) => {
                let id = id.to_string();
                let removed = self.meta(move |m| m.delete_version(&b, &k, &id)).await?;
                let delete_marker = removed.as_ref().is_some_and(|v| v.delete_marker);
                self.free_removed(removed.as_ref()).await;
                return Ok(Deleted {
                    version_id: version_id.map(str::to_string),
                    delete_marker,
                });
            }
            (None, Versioning::Unversioned) => {
                let removed = self
                    .meta(move |m| match m.version(&b, &k, None)? {
                        Some(latest) => m.delete_version(&b, &k, &latest.version_id),
                        None => Ok(None),
                    })
                    .await?;
                self.free_removed(removed.as_ref()).await;
                return Ok(Deleted {
                    version_id: None,
                    delete_marker: false,
                });
            }
            (None, Versioning::Enabled) => random_uid(),
            (None, Versioning::Suspended) => NULL_VERSION.to_string(),
        };
        let marker = ObjectVersion {
            bucket: bucket.name.clone(),
            key: key.to_string(),
            version_id: marker_id.clone(),
            delete_marker: true,
            size: 0,
            etag: String::new(),
            content_type: None,
            user_metadata: Default::default(),
            last_modified: now_ms(),
            plan: String::new(),
            layout: None,
        };
        self.commit_version(marker).await?;
        Ok(Deleted {
            version_id: reported_version_id(bucket, &marker_id),
            delete_marker: true,
        })
    }

    pub(super) async fn do_delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        let bucket = self.require_bucket(&input.bucket).await?;
        let done = self
            .delete_key(&bucket, &input.key, input.version_id.as_deref())
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
        let input = req.input;
        let bucket = self.require_bucket(&input.bucket).await?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for obj in input.delete.objects {
            match self
                .delete_key(&bucket, &obj.key, obj.version_id.as_deref())
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
                    code: Some(e.code().as_str().to_string()),
                    key: Some(obj.key),
                    message: e.message().map(str::to_string),
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
