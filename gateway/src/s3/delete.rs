//! Object deletion, single and batch: versions, delete markers and their shards.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

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
        super::get::check_version_id(input.version_id.as_deref())?;
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
        // Who may delete which key (the access check leaves it here: S3 decides per key).
        let access = req
            .extensions
            .get::<crate::s3::access::DeleteCheck>()
            .cloned();
        let input = req.input;
        let bucket = self.require_bucket(&input.bucket).await?;
        check_delete_count(input.delete.objects.len())?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for obj in input.delete.objects {
            if let Some(Err(message)) = access
                .as_ref()
                .map(|a| a.allows(&bucket.name, &obj.key, obj.version_id.as_deref()))
            {
                errors.push(Error {
                    code: Some(S3ErrorCode::AccessDenied.as_str().to_string()),
                    key: Some(obj.key),
                    message: Some(message),
                    version_id: obj.version_id,
                });
                continue;
            }
            if let Err(e) = super::get::check_version_id(obj.version_id.as_deref()) {
                errors.push(Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(obj.key),
                    message: e.message().map(str::to_owned),
                    version_id: obj.version_id,
                });
                continue;
            }
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

/// The most keys one DeleteObjects request may name, as in S3.
const MAX_DELETE_KEYS: usize = 1000;

/// S3 answers `400 MalformedXML` to a DeleteObjects request naming no key or more than
/// [`MAX_DELETE_KEYS`].
fn check_delete_count(n: usize) -> S3Result<()> {
    if n == 0 || n > MAX_DELETE_KEYS {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedXML,
            format!("a DeleteObjects request names 1 to {MAX_DELETE_KEYS} keys, not {n}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_delete_names_one_to_a_thousand_keys() {
        for (n, ok) in [(0, false), (1, true), (1000, true), (1001, false)] {
            let got = super::check_delete_count(n);
            assert_eq!(got.is_ok(), ok, "{n} keys");
            if let Err(e) = got {
                assert_eq!(*e.code(), s3s::S3ErrorCode::MalformedXML);
                assert!(e.message().unwrap_or_default().contains(&n.to_string()));
            }
        }
    }
}
