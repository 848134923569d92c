//! CopyObject: re-encodes by streaming the source through a fresh write, so a
//! copy may change bucket, plan (storage class) and metadata; its checksum (the algorithm
//! the request names, else the source's, else S3's default) is computed on the way.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::checksum::{self as sums, set_checksums};
use super::get::Preconditions;
use super::headers::{self, Written};
use super::{Gateway, etag, timestamp};
use super::{sse_c, tagging};
use crate::datapath::checksum::{Kind, ObjectChecksum};
use crate::datapath::codec::CustomerKey;
use crate::meta::{Bucket, ObjectAttrs, ObjectVersion};
use crate::node::now_ms;
use crate::node::write::{new_version_id, reported_version_id};

/// Bucket, key and optional version id of an `x-amz-copy-source`. A source naming no key
/// (`bucket/`) answers S3's `400 InvalidArgument` "Invalid copy source object key", not a
/// lookup of the empty key.
fn copy_source(cs: &CopySource) -> S3Result<(String, String, Option<String>)> {
    match cs {
        CopySource::Bucket { key, .. } if key.is_empty() => Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "Invalid copy source object key",
        )),
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => Ok((
            bucket.to_string(),
            key.to_string(),
            version_id.as_deref().map(str::to_string),
        )),
        _ => Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            "copy sources must be bucket/key; access points are not supported",
        )),
    }
}

/// What a copy (CopyObject, UploadPartCopy) says of its source: `x-amz-copy-source`, its
/// `x-amz-copy-source-if-*` conditions and the `x-amz-copy-source-server-side-encryption-
/// customer-*` key that opens it.
pub(super) struct SourceRequest<'a> {
    pub(super) copy_source: &'a CopySource,
    pub(super) conditions: Preconditions<'a>,
    pub(super) customer_algorithm: Option<&'a str>,
    pub(super) customer_key: Option<&'a str>,
    pub(super) customer_key_md5: Option<&'a str>,
}

/// The [`SourceRequest`] of a CopyObject or UploadPartCopy input: s3s gives the two inputs
/// the same `copy_source*` fields but no trait in common.
macro_rules! source_request {
    ($input:expr) => {
        $crate::s3::copy::SourceRequest {
            copy_source: &$input.copy_source,
            conditions: $crate::s3::get::Preconditions {
                if_match: $input.copy_source_if_match.as_ref(),
                if_none_match: $input.copy_source_if_none_match.as_ref(),
                if_modified_since: $input.copy_source_if_modified_since.as_ref(),
                if_unmodified_since: $input.copy_source_if_unmodified_since.as_ref(),
            },
            customer_algorithm: $input.copy_source_sse_customer_algorithm.as_deref(),
            customer_key: $input.copy_source_sse_customer_key.as_deref(),
            customer_key_md5: $input.copy_source_sse_customer_key_md5.as_deref(),
        }
    };
}
pub(super) use source_request;

/// The version a copy reads: found, its conditions held, the customer key it needs given.
pub(super) struct CopiedSource {
    pub(super) bucket: String,
    pub(super) key: String,
    /// The version id the copy source named, if it named one.
    pub(super) version_id: Option<String>,
    pub(super) bucket_meta: Bucket,
    pub(super) version: ObjectVersion,
    pub(super) customer_key: Option<CustomerKey>,
}

impl Gateway {
    /// The source of a copy, checked as S3 checks it: the named version (404 if none), its
    /// conditions (412), then its customer key (400 missing, 403 another).
    pub(super) async fn copied_source(
        &self,
        extensions: &http::Extensions,
        req: SourceRequest<'_>,
    ) -> S3Result<CopiedSource> {
        let (bucket, key, version_id) = copy_source(req.copy_source)?;
        let (bucket_meta, version) = self.lookup(&bucket, &key, version_id.as_deref()).await?;
        enforce_copy_preconditions(&req.conditions, &version)?;
        let customer_key = sse_c::requested(
            self,
            extensions,
            req.customer_algorithm,
            req.customer_key,
            req.customer_key_md5,
            "x-amz-copy-source-server-side-encryption-customer",
        )?;
        sse_c::check_version(&version, customer_key.as_ref())?;
        Ok(CopiedSource {
            bucket,
            key,
            version_id,
            bucket_meta,
            version,
            customer_key,
        })
    }
}

/// Copy preconditions fail with 412 whichever one failed, as in S3.
fn enforce_copy_preconditions(p: &Preconditions<'_>, v: &ObjectVersion) -> S3Result<()> {
    p.check(v).map_err(|_| {
        S3Error::with_message(
            S3ErrorCode::PreconditionFailed,
            format!(
                "at least one x-amz-copy-source-if precondition on {}/{} did not hold",
                v.bucket, v.key
            ),
        )
    })
}

impl Gateway {
    pub(super) async fn do_copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let bucket = self.require_bucket(&input.bucket).await?;
        let CopiedSource {
            bucket: src_bucket,
            key: src_key,
            version_id: src_version,
            bucket_meta: src_meta,
            version: source,
            customer_key: source_key,
        } = self
            .copied_source(&req.extensions, source_request!(input))
            .await?;
        let target_key = sse_c::customer_key!(self, &req.extensions, input)?;
        let (sse_customer_algorithm, sse_customer_key_md5) = sse_c::echo(target_key.as_ref());
        let replace = match input.metadata_directive.as_ref().map(|d| d.as_str()) {
            None | Some(MetadataDirective::COPY) => false,
            Some(MetadataDirective::REPLACE) => {
                headers::check_user_metadata(input.metadata.as_ref())?;
                true
            }
            Some(other) => {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidArgument,
                    format!("x-amz-metadata-directive must be COPY or REPLACE, not {other:?}"),
                ));
            }
        };
        // The tags: the source's (COPY, the default) or the request's x-amz-tagging (REPLACE),
        // as the tagging directive says, whatever the metadata directive.
        let tags = match input.tagging_directive.as_ref().map(|d| d.as_str()) {
            None | Some(TaggingDirective::COPY) => None,
            Some(TaggingDirective::REPLACE) => {
                Some(tagging::header_tags(input.tagging.as_deref())?)
            }
            Some(other) => {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidArgument,
                    format!("x-amz-tagging-directive must be COPY or REPLACE, not {other:?}"),
                ));
            }
        };
        let storage_class = input.storage_class.as_ref().map(|s| s.as_str());
        if src_bucket == input.bucket
            && src_key == input.key
            && src_version.is_none()
            && !replace
            && tags.is_none()
            && storage_class.is_none()
            && target_key.is_none()
            && source_key.is_none()
        {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                format!(
                    "copying {src_bucket}/{src_key} onto itself changes nothing: replace its metadata or change its storage class"
                ),
            ));
        }
        // The copy's ACL is the request's (private when none is asked), never the source's.
        let acl = self
            .acl_for_new_object(
                &bucket,
                self.requester(req.credentials.as_ref()).as_deref(),
                input.acl.as_ref().map(|a| a.as_str()),
                &req.headers,
            )
            .await?;
        let plan = self.resolve_plan(&bucket, storage_class)?;
        let customer = sse_c::for_new_object(
            target_key,
            &plan.name,
            plan.encrypt,
            input.server_side_encryption.is_some(),
        )?;
        self.check_bucket_encryption(&bucket, &plan).await?;
        headers::check_requested_encryption(
            input.server_side_encryption.as_ref(),
            &plan.name,
            plan.encrypt,
        )?;
        // The copy's lock is the request's or the bucket's default, never the source's.
        let lock = super::lock::requested_lock(
            input.object_lock_mode.as_ref(),
            input.object_lock_retain_until_date.as_ref(),
            input.object_lock_legal_hold_status.as_ref(),
        )?;
        let lock = self.lock_for_new(&input.bucket, lock).await?;
        let algorithm = match &input.checksum_algorithm {
            Some(a) => sums::algorithm_of(a)?,
            None => source
                .attrs
                .checksum
                .as_ref()
                .map_or(sums::DEFAULT.algorithm, |c| c.algorithm),
        };
        self.accounts()
            .check_quota(bucket.owner.as_deref(), source.size, 1)?;
        let stream = self
            .read_range_keyed(&source, 0..source.size, source_key.as_ref())
            .await?;
        let written = self
            .store_body(
                &plan,
                &input.key,
                Some(StreamingBlob::wrap(stream)),
                Some(source.size),
                &[algorithm],
                customer.as_ref(),
            )
            .await?;
        // A copy is written in one piece: its checksum is of the whole object.
        let checksum = written
            .checksums
            .get(&algorithm)
            .map(|value| ObjectChecksum {
                algorithm,
                kind: Kind::FullObject,
                value: value.clone(),
                parts: Vec::new(),
            });
        if written.size != source.size {
            self.free(Some(&written.layout)).await;
            return Err(crate::error::internal(format!(
                "copying {src_bucket}/{src_key}: read {} bytes, expected {}",
                written.size, source.size
            )));
        }
        // REPLACE takes the request's type, metadata and standard headers; COPY the source's.
        let (content_type, user_metadata, mut attrs) = if replace {
            let attrs = Written {
                cache_control: input.cache_control.as_deref(),
                content_disposition: input.content_disposition.as_deref(),
                content_encoding: input.content_encoding.as_deref(),
                content_language: input.content_language.as_deref(),
                expires: input.expires.as_ref(),
            }
            .attrs();
            (
                input.content_type,
                input.metadata.unwrap_or_default().into_iter().collect(),
                attrs,
            )
        } else {
            let attrs = ObjectAttrs {
                upload_id: None,
                ..source.attrs.clone()
            };
            (
                source.content_type.clone(),
                source.user_metadata.clone(),
                attrs,
            )
        };
        attrs.lock = lock;
        attrs.tags = tags.unwrap_or_else(|| source.attrs.tags.clone());
        attrs.checksum = checksum;
        attrs.acl = acl;
        let version_id = new_version_id(&bucket);
        let modified = now_ms();
        let md5 = sse_c::stored_etag(customer.as_ref(), &written.md5);
        let version = ObjectVersion {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            version_id: version_id.clone(),
            delete_marker: false,
            size: written.size,
            etag: md5.clone(),
            content_type,
            user_metadata,
            last_modified: modified,
            plan: plan.name.clone(),
            layout: Some(written.layout),
            attrs,
        };
        let server_side_encryption = headers::server_side_encryption(&version);
        let fields = sums::object_fields(version.attrs.checksum.as_ref());
        self.commit_version_for(bucket.owner.as_deref(), version, None)
            .await?;
        tracing::info!(from = %format!("{src_bucket}/{src_key}"), bucket = %input.bucket, key = %input.key, plan = %plan.name, "object copied");
        let mut result = CopyObjectResult {
            e_tag: Some(etag(&md5)),
            last_modified: Some(timestamp(modified)),
            checksum_type: fields.checksum_type.clone(),
            ..Default::default()
        };
        set_checksums!(result, fields);
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(result),
            copy_source_version_id: reported_version_id(&src_meta, &source.version_id),
            server_side_encryption,
            sse_customer_algorithm,
            sse_customer_key_md5,
            version_id: reported_version_id(&bucket, &version_id),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_source_without_a_key_is_an_invalid_argument() {
        for header in ["photos/", "/photos/", "photos/?versionId=abc"] {
            let cs = CopySource::parse(header).unwrap();
            let e = copy_source(&cs).unwrap_err();
            assert_eq!(e.code(), &S3ErrorCode::InvalidArgument, "{header}");
            assert_eq!(e.message(), Some("Invalid copy source object key"));
        }
        let cs = CopySource::parse("photos/a/b.jpg?versionId=v1").unwrap();
        assert_eq!(
            copy_source(&cs).unwrap(),
            ("photos".into(), "a/b.jpg".into(), Some("v1".into()))
        );
    }
}
