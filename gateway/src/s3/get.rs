//! GetObject and HeadObject: ranges read only the segments they touch; with
//! `x-amz-checksum-mode: ENABLED` the version's checksum is answered.

use std::ops::Range as ByteRange;

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::checksum::{self as sums, set_checksums};
use super::{Gateway, etag, timestamp};
use super::{headers, sse_c};
use crate::datapath::checksum::Kind;
use crate::error::internal;
use crate::meta::{Bucket, ObjectVersion};
use crate::node::write::reported_version_id;

/// Seconds since the epoch of an HTTP date (conditional headers have second precision).
fn epoch_seconds(t: &Timestamp) -> Option<i64> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::EpochSeconds, &mut buf).ok()?;
    let secs: f64 = std::str::from_utf8(&buf).ok()?.parse().ok()?;
    #[allow(clippy::cast_possible_truncation)]
    Some(secs.floor() as i64)
}

fn etag_matches(cond: &ETagCondition, v: &ObjectVersion) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == v.etag,
    }
}

/// The four HTTP preconditions of GET, HEAD and (as x-amz-copy-source-if-*) copies.
#[derive(Default)]
pub(super) struct Preconditions<'a> {
    pub if_match: Option<&'a ETagCondition>,
    pub if_none_match: Option<&'a ETagCondition>,
    pub if_modified_since: Option<&'a Timestamp>,
    pub if_unmodified_since: Option<&'a Timestamp>,
}

/// Why a precondition stopped a request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unmet {
    /// 412: If-Match or If-Unmodified-Since failed.
    Failed,
    /// 304: If-None-Match or If-Modified-Since failed.
    NotModified,
}

impl Preconditions<'_> {
    /// Evaluates them as S3 does: a passing If-Match overrides If-Unmodified-Since,
    /// and If-None-Match, when given, overrides If-Modified-Since.
    pub(super) fn check(&self, v: &ObjectVersion) -> Result<(), Unmet> {
        let modified = v.last_modified.div_euclid(1000);
        match self.if_match {
            Some(c) if !etag_matches(c, v) => return Err(Unmet::Failed),
            Some(_) => {}
            None => {
                if let Some(t) = self.if_unmodified_since.and_then(epoch_seconds)
                    && modified > t
                {
                    return Err(Unmet::Failed);
                }
            }
        }
        match self.if_none_match {
            Some(c) if etag_matches(c, v) => return Err(Unmet::NotModified),
            Some(_) => {}
            None => {
                if let Some(t) = self.if_modified_since.and_then(epoch_seconds)
                    && modified <= t
                {
                    return Err(Unmet::NotModified);
                }
            }
        }
        Ok(())
    }

    /// As an S3 error naming the object.
    pub(super) fn enforce(&self, v: &ObjectVersion) -> S3Result<()> {
        let name = format!("{}/{}", v.bucket, v.key);
        match self.check(v) {
            Ok(()) => Ok(()),
            Err(Unmet::Failed) => Err(S3Error::with_message(
                S3ErrorCode::PreconditionFailed,
                format!("at least one precondition on object {name} did not hold"),
            )),
            Err(Unmet::NotModified) => {
                let mut e = S3Error::with_message(
                    S3ErrorCode::NotModified,
                    format!("object {name} was not modified"),
                );
                let mut headers = http::HeaderMap::new();
                if let Ok(value) = http::HeaderValue::from_str(&format!("\"{}\"", v.etag)) {
                    headers.insert(http::header::ETAG, value);
                }
                if let Some(value) = chrono::DateTime::from_timestamp_millis(v.last_modified)
                    .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
                    .and_then(|t| http::HeaderValue::from_str(&t).ok())
                {
                    headers.insert(http::header::LAST_MODIFIED, value);
                }
                e.set_headers(headers);
                Err(e)
            }
        }
    }
}

impl Gateway {
    /// The version a request names: the latest (NoSuchKey if it is a delete
    /// marker, with `x-amz-delete-marker`) or a given version id.
    pub(super) async fn lookup(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<(Bucket, ObjectVersion)> {
        if let Err(e) = check_version_id(version_id) {
            // A missing bucket is the first thing a client hears of.
            self.require_bucket(bucket).await?;
            return Err(e);
        }
        let (b, k, id) = (
            bucket.to_string(),
            key.to_string(),
            version_id.map(str::to_string),
        );
        // The bucket and the version in one trip to the blocking pool (a hand-off between
        // threads each): every GET and HEAD starts here.
        let (found_bucket, found) = self
            .meta(move |m| match m.bucket(&b)? {
                Some(found) => Ok((Some(found), m.version(&b, &k, id.as_deref())?)),
                None => Ok((None, None)),
            })
            .await?;
        let Some(found_bucket) = found_bucket else {
            return Err(
                crate::error::Error::from(crate::meta::MetaError::NoSuchBucket(bucket.to_string()))
                    .into(),
            );
        };
        match (found, version_id) {
            (Some(v), _) if !v.delete_marker => Ok((found_bucket, v)),
            (Some(v), Some(id)) => {
                let mut e = S3Error::with_message(
                    S3ErrorCode::MethodNotAllowed,
                    format!("version {id} of object {key} in bucket {bucket} is a delete marker"),
                );
                e.set_headers(delete_marker_headers(&v.version_id));
                Err(e)
            }
            (Some(v), None) => {
                let mut e = S3Error::with_message(
                    S3ErrorCode::NoSuchKey,
                    format!(
                        "object {key} in bucket {bucket} is deleted (its latest version is a delete marker)"
                    ),
                );
                e.set_headers(delete_marker_headers(&v.version_id));
                Err(e)
            }
            (None, Some(id)) => Err(S3Error::with_message(
                S3ErrorCode::NoSuchVersion,
                format!("object {key} in bucket {bucket} has no version {id}"),
            )),
            (None, None) => Err(S3Error::with_message(
                S3ErrorCode::NoSuchKey,
                format!("no object {key} in bucket {bucket}"),
            )),
        }
    }

    pub(super) async fn do_head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let (bucket, v) = self
            .lookup(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        let customer_key = sse_c::customer_key!(self, &req.extensions, input)?;
        sse_c::check_version(&v, customer_key.as_ref())?;
        let (sse_customer_algorithm, sse_customer_key_md5) = sse_c::echo(customer_key.as_ref());
        Preconditions {
            if_match: input.if_match.as_ref(),
            if_none_match: input.if_none_match.as_ref(),
            if_modified_since: input.if_modified_since.as_ref(),
            if_unmodified_since: input.if_unmodified_since.as_ref(),
        }
        .enforce(&v)?;
        let part = requested_part(&v, None, input.part_number)?;
        let length = part
            .as_ref()
            .map_or(v.size, |p| p.range.end - p.range.start);
        // S3 answers a HEAD of one part like a ranged GET: 206 with the part's range.
        let content_range = part.as_ref().map(|p| {
            format!(
                "bytes {}-{}/{}",
                p.range.start,
                p.range.end.saturating_sub(1),
                v.size
            )
        });
        let server_side_encryption = headers::server_side_encryption(&v);
        let expires = input.response_expires.or_else(|| headers::expires(&v));
        let (object_lock_mode, object_lock_retain_until_date, object_lock_legal_hold_status) =
            super::lock::lock_headers(&v);
        let tag_count = super::tagging::tag_count(&v);
        let checksum = answered_checksum(
            &v,
            input.checksum_mode.as_ref(),
            part.as_ref().map(|p| p.index),
            false,
        );
        let mut out = HeadObjectOutput {
            content_length: Some(i64::try_from(length).unwrap_or(i64::MAX)),
            parts_count: part.and_then(|p| p.count),
            version_id: reported_version_id(&bucket, &v.version_id),
            content_type: input.response_content_type.or(v.content_type),
            cache_control: input.response_cache_control.or(v.attrs.cache_control),
            content_disposition: input
                .response_content_disposition
                .or(v.attrs.content_disposition),
            content_encoding: input.response_content_encoding.or(v.attrs.content_encoding),
            content_language: input.response_content_language.or(v.attrs.content_language),
            expires,
            server_side_encryption,
            sse_customer_algorithm,
            sse_customer_key_md5,
            e_tag: Some(etag(&v.etag)),
            last_modified: Some(timestamp(v.last_modified)),
            metadata: Some(v.user_metadata.into_iter().collect()),
            storage_class: Some(StorageClass::from(v.plan)),
            accept_ranges: Some("bytes".into()),
            object_lock_mode,
            object_lock_retain_until_date,
            object_lock_legal_hold_status,
            checksum_type: checksum.checksum_type.clone(),
            ..Default::default()
        };
        set_checksums!(out, checksum);
        let mut response = S3Response::new(out);
        if content_range.is_some() {
            // s3s drops a HEAD's status; the HTTP layer (metrics.rs) applies this marker.
            response.extensions.insert(crate::s3::http::StatusOverride(
                http::StatusCode::PARTIAL_CONTENT,
            ));
        }
        if let Some(value) = content_range
            .as_deref()
            .and_then(|r| http::HeaderValue::from_str(r).ok())
        {
            response.headers.insert(http::header::CONTENT_RANGE, value);
        }
        // s3s's HeadObjectOutput has no tag count; S3 answers it as on a GET.
        if let Some(n) = tag_count {
            response
                .headers
                .insert("x-amz-tagging-count", http::HeaderValue::from(n));
        }
        Ok(response)
    }

    pub(super) async fn do_get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let (bucket, v) = self
            .lookup(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        let customer_key = sse_c::customer_key!(self, &req.extensions, input)?;
        sse_c::check_version(&v, customer_key.as_ref())?;
        let (sse_customer_algorithm, sse_customer_key_md5) = sse_c::echo(customer_key.as_ref());
        Preconditions {
            if_match: input.if_match.as_ref(),
            if_none_match: input.if_none_match.as_ref(),
            if_modified_since: input.if_modified_since.as_ref(),
            if_unmodified_since: input.if_unmodified_since.as_ref(),
        }
        .enforce(&v)?;
        let size = v.size;
        let part = requested_part(&v, input.range.as_ref(), input.part_number)?;
        let range = match (&part, &input.range) {
            (Some(p), _) => p.range.clone(),
            (None, None) => 0..size,
            (None, Some(r)) => r.check(size).map_err(|_| {
                S3Error::with_message(
                    S3ErrorCode::InvalidRange,
                    format!("the range is not satisfiable for an object of {size} bytes"),
                )
            })?,
        };
        let content_range = (input.range.is_some() || part.is_some()).then(|| {
            format!(
                "bytes {}-{}/{size}",
                range.start,
                range.end.saturating_sub(1)
            )
        });
        let length = range.end - range.start;
        let checksum = answered_checksum(
            &v,
            input.checksum_mode.as_ref(),
            part.as_ref().map(|p| p.index),
            input.range.is_some() && length != size,
        );
        let body = self
            .read_range_keyed(&v, range, customer_key.as_ref())
            .await?;
        let tag_count = super::tagging::tag_count(&v);
        let server_side_encryption = headers::server_side_encryption(&v);
        let expires = input.response_expires.or_else(|| headers::expires(&v));
        let (object_lock_mode, object_lock_retain_until_date, object_lock_legal_hold_status) =
            super::lock::lock_headers(&v);
        let mut out = GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_length: Some(i64::try_from(length).unwrap_or(i64::MAX)),
            content_range,
            parts_count: part.and_then(|p| p.count),
            version_id: reported_version_id(&bucket, &v.version_id),
            content_type: input.response_content_type.or(v.content_type),
            cache_control: input.response_cache_control.or(v.attrs.cache_control),
            content_disposition: input
                .response_content_disposition
                .or(v.attrs.content_disposition),
            content_encoding: input.response_content_encoding.or(v.attrs.content_encoding),
            content_language: input.response_content_language.or(v.attrs.content_language),
            expires,
            server_side_encryption,
            sse_customer_algorithm,
            sse_customer_key_md5,
            e_tag: Some(etag(&v.etag)),
            last_modified: Some(timestamp(v.last_modified)),
            metadata: Some(v.user_metadata.into_iter().collect()),
            storage_class: Some(StorageClass::from(v.plan)),
            accept_ranges: Some("bytes".into()),
            object_lock_mode,
            object_lock_retain_until_date,
            object_lock_legal_hold_status,
            tag_count,
            checksum_type: checksum.checksum_type.clone(),
            ..Default::default()
        };
        set_checksums!(out, checksum);
        Ok(S3Response::new(out))
    }
}

/// The checksum a GET or HEAD answers: only with `x-amz-checksum-mode: ENABLED`; the
/// version's own for the whole object, a part's for `partNumber` of a composite multipart
/// object, none for a byte range (a whole-object checksum says nothing about it).
fn answered_checksum(
    v: &ObjectVersion,
    mode: Option<&ChecksumMode>,
    part_index: Option<usize>,
    partial_range: bool,
) -> Checksum {
    let enabled = mode.is_some_and(|m| m.as_str().eq_ignore_ascii_case(ChecksumMode::ENABLED));
    let Some(c) = v
        .attrs
        .checksum
        .as_ref()
        .filter(|_| enabled && !partial_range)
    else {
        return Checksum::default();
    };
    match part_index {
        None => sums::object_fields(Some(c)),
        // A single-piece version's one part is the whole object.
        Some(_) if c.parts.is_empty() => sums::object_fields(Some(c)),
        Some(i) if c.kind == Kind::Composite => c
            .parts
            .get(i)
            .map(|p| sums::fields([(c.algorithm, p.value.as_str())], None))
            .unwrap_or_default(),
        Some(_) => Checksum::default(),
    }
}

/// The part a GET or HEAD asked for with `partNumber`.
struct RequestedPart {
    range: ByteRange<u64>,
    /// 0-based position among the version's parts.
    index: usize,
    /// Parts of a multipart version; `None` for a version written in one piece.
    count: Option<i32>,
}

/// S3's answer to a `versionId` no version could have: `400 InvalidArgument` "Invalid
/// version id specified" (a well-formed id of no version is `404 NoSuchVersion`). This
/// gateway's version ids are `null` or 32 hex digits (`node::write::random_uid`).
pub(super) fn check_version_id(id: Option<&str>) -> S3Result<()> {
    let Some(id) = id else {
        return Ok(());
    };
    let well_formed = id == crate::meta::NULL_VERSION
        || (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    if well_formed {
        Ok(())
    } else {
        Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("Invalid version id specified: {id:?}"),
        ))
    }
}

/// Resolves `partNumber` (1-based) to the part's bytes; a version written in
/// one piece has exactly one part.
fn requested_part(
    v: &ObjectVersion,
    range: Option<&Range>,
    part_number: Option<i32>,
) -> S3Result<Option<RequestedPart>> {
    let Some(n) = part_number else {
        return Ok(None);
    };
    super::multipart::check_part_number(n)?;
    if range.is_some() {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "a request may name a Range or a partNumber, not both",
        ));
    }
    let name = format!("{}/{}", v.bucket, v.key);
    let layout = v
        .layout
        .as_ref()
        .ok_or_else(|| internal(format!("object {name} has no data layout")))?;
    let lengths: Vec<u64> = layout
        .pieces()
        .map(|p| p.segments.iter().map(|s| s.plain_length).sum())
        .collect();
    let index = usize::try_from(n).ok().and_then(|n| n.checked_sub(1));
    let Some(index) = index.filter(|&i| i < lengths.len()) else {
        let mut e = S3Error::with_message(
            S3ErrorCode::Custom("InvalidPartNumber".into()),
            format!(
                "object {name} has {} part(s), not a part {n}",
                lengths.len()
            ),
        );
        e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
        return Err(e);
    };
    let start: u64 = lengths[..index].iter().sum();
    Ok(Some(RequestedPart {
        index,
        range: start..start + lengths[index],
        count: (!layout.parts.is_empty()).then(|| i32::try_from(lengths.len()).unwrap_or(i32::MAX)),
    }))
}

fn delete_marker_headers(version_id: &str) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-amz-delete-marker",
        http::HeaderValue::from_static("true"),
    );
    if let Ok(v) = http::HeaderValue::from_str(version_id) {
        headers.insert("x-amz-version-id", v);
    }
    headers
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::check_version_id;

    #[test]
    fn version_ids_no_version_could_have_are_invalid_arguments() {
        for ok in [None, Some("null"), Some("0123456789abcdef0123456789abcdef")] {
            assert!(check_version_id(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "nonsense",
            "",
            "NULL ",
            "0123456789abcdef0123456789abcdeg",
            "0123",
        ] {
            let e = check_version_id(Some(bad)).unwrap_err();
            assert_eq!(e.code(), &s3s::S3ErrorCode::InvalidArgument, "{bad:?}");
        }
    }
}
