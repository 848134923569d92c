//! PutObject: the body is stored under the plan the request or the bucket names, checked
//! against Content-MD5 and the S3 checksum sent (header or trailer), and committed as a
//! new version with its checksum.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::checksum::{self as sums, set_checksums};
use super::headers::{self, Written};
use super::{Gateway, etag};
use super::{sse_c, tagging};

use crate::datapath::checksum::{Kind, ObjectChecksum};
use crate::meta::ObjectVersion;
use crate::node::now_ms;
use crate::node::write::{new_version_id, reported_version_id};

/// Checks a Content-MD5 header against the MD5 of what was received.
pub(super) fn content_md5_matches(header: Option<&str>, md5_hex: &str) -> bool {
    use base64::Engine;
    let Some(expected) = header else {
        return true;
    };
    base64::engine::general_purpose::STANDARD
        .decode(expected.trim())
        .ok()
        .map(hex::encode)
        .as_deref()
        == Some(md5_hex)
}

/// Refuses a Content-MD5 header that is not the base64 of 16 bytes (`400 InvalidDigest`,
/// as S3 answers), before the body is read.
pub(super) fn check_content_md5(header: Option<&str>) -> S3Result<()> {
    use base64::Engine;
    let Some(value) = header else {
        return Ok(());
    };
    match base64::engine::general_purpose::STANDARD.decode(value.trim()) {
        Ok(digest) if digest.len() == 16 => Ok(()),
        _ => Err(S3Error::with_message(
            S3ErrorCode::InvalidDigest,
            "The Content-MD5 you specified is not valid.",
        )),
    }
}

fn bad_digest() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::BadDigest,
        "the Content-MD5 you specified did not match what was received",
    )
}

impl Gateway {
    pub(super) async fn do_put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let bucket = self.require_bucket(&input.bucket).await?;
        check_content_md5(input.content_md5.as_deref())?;
        headers::check_user_metadata(input.metadata.as_ref())?;
        let requested = sums::requested(&req.headers)?;
        let algorithm = requested.algorithm.unwrap_or(sums::DEFAULT.algorithm);
        let plan = self.resolve_plan(&bucket, input.storage_class.as_ref().map(|s| s.as_str()))?;
        let customer_key = sse_c::customer_key!(self, &req.extensions, input)?;
        let (echo_algorithm, echo_md5) = sse_c::echo(customer_key.as_ref());
        let customer = sse_c::for_new_object(
            customer_key,
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
        let condition =
            headers::write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
        // Checked again at commit with the size received; this spares storing a body
        // announced too large.
        let announced = input
            .content_length
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        self.accounts()
            .check_quota(bucket.owner.as_deref(), announced, 1)?;
        if let Some(condition) = &condition {
            // Checked again when the version is committed; this only spares storing a body
            // that could never be committed.
            let (b, k) = (input.bucket.clone(), input.key.clone());
            let latest = self.meta(move |m| m.version(&b, &k, None)).await?;
            condition
                .check(&input.bucket, &input.key, latest.as_ref())
                .map_err(crate::error::meta_err)?;
        }
        let lock = super::lock::requested_lock(
            input.object_lock_mode.as_ref(),
            input.object_lock_retain_until_date.as_ref(),
            input.object_lock_legal_hold_status.as_ref(),
        )?;
        let lock = self.lock_for_new(&input.bucket, lock).await?;
        let mut attrs = Written {
            cache_control: input.cache_control.as_deref(),
            content_disposition: input.content_disposition.as_deref(),
            content_encoding: input.content_encoding.as_deref(),
            content_language: input.content_language.as_deref(),
            expires: input.expires.as_ref(),
        }
        .attrs();
        attrs.lock = lock;
        attrs.tags = tagging::header_tags(input.tagging.as_deref())?;
        attrs.acl = self
            .acl_for_new_object(
                &bucket,
                self.requester(req.credentials.as_ref()).as_deref(),
                input.acl.as_ref().map(|a| a.as_str()),
                &req.headers,
            )
            .await?;
        let written = self
            .store_upload(
                &plan,
                &input.key,
                input.body,
                &[algorithm],
                customer.as_ref(),
            )
            .await?;
        if !content_md5_matches(input.content_md5.as_deref(), &written.md5) {
            self.free(Some(&written.layout)).await;
            return Err(bad_digest());
        }
        let what = format!("object {}/{}", input.bucket, input.key);
        if let Err(e) = sums::verify(
            &requested,
            req.trailing_headers.as_ref(),
            &written.checksums,
            &what,
        ) {
            self.free(Some(&written.layout)).await;
            return Err(e);
        }
        let checksum = written
            .checksums
            .get(&algorithm)
            .map(|value| ObjectChecksum {
                algorithm,
                kind: Kind::FullObject,
                value: value.clone(),
                parts: Vec::new(),
            });
        let attrs = crate::meta::ObjectAttrs { checksum, ..attrs };
        let stored_etag = sse_c::stored_etag(customer.as_ref(), &written.md5);
        let version_id = new_version_id(&bucket);
        let version = ObjectVersion {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            version_id: version_id.clone(),
            delete_marker: false,
            size: written.size,
            etag: stored_etag.clone(),
            content_type: input.content_type.clone(),
            user_metadata: input.metadata.unwrap_or_default().into_iter().collect(),
            last_modified: now_ms(),
            plan: plan.name.clone(),
            layout: Some(written.layout),
            attrs,
        };
        let encryption = headers::server_side_encryption(&version);
        let fields = sums::object_fields(version.attrs.checksum.as_ref());
        self.commit_version_for(bucket.owner.as_deref(), version, condition)
            .await?;
        let mut out = PutObjectOutput {
            e_tag: Some(etag(&stored_etag)),
            server_side_encryption: encryption,
            sse_customer_algorithm: echo_algorithm,
            sse_customer_key_md5: echo_md5,
            size: Some(i64::try_from(written.size).unwrap_or(i64::MAX)),
            version_id: reported_version_id(&bucket, &version_id),
            checksum_type: fields.checksum_type.clone(),
            ..Default::default()
        };
        set_checksums!(out, fields);
        Ok(S3Response::new(out))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_content_md5_that_is_not_16_bytes_of_base64_is_an_invalid_digest() {
        assert!(check_content_md5(None).is_ok());
        assert!(check_content_md5(Some("XUFAKrxLKna5cZ2REBfFkg==")).is_ok());
        for bad in ["notbase64!!", "", "AAAA", "XUFAKrxLKna5cZ2REBfFkgAA"] {
            let e = check_content_md5(Some(bad)).unwrap_err();
            assert_eq!(e.code(), &S3ErrorCode::InvalidDigest, "{bad}");
        }
        // Well formed but not the body's: BadDigest once the body is read.
        assert!(!content_md5_matches(
            Some("AAAAAAAAAAAAAAAAAAAAAA=="),
            "5d41402abc4b2a76b9719d911017c592"
        ));
    }
}
