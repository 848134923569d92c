//! What S3 keeps and answers beside an object's bytes: the standard headers given on
//! write (Cache-Control, Content-Disposition, Content-Encoding, Content-Language, Expires)
//! and their `response-*` overrides on GET, the server-side encryption an object's plan
//! gives it, and the conditions of conditional writes (If-Match / If-None-Match on PUT and
//! CompleteMultipartUpload).

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Result};

use crate::datapath::layout::Encryption;
use crate::meta::{ObjectAttrs, ObjectVersion, WriteCondition};

/// The standard headers of a write, as stored.
pub(super) struct Written<'a> {
    pub cache_control: Option<&'a str>,
    pub content_disposition: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    pub content_language: Option<&'a str>,
    pub expires: Option<&'a Timestamp>,
}

impl Written<'_> {
    pub(super) fn attrs(&self) -> ObjectAttrs {
        ObjectAttrs {
            cache_control: self.cache_control.map(str::to_owned),
            content_disposition: self.content_disposition.map(str::to_owned),
            content_encoding: self.content_encoding.and_then(stored_encoding),
            content_language: self.content_language.map(str::to_owned),
            expires: self.expires.and_then(http_date),
            upload_id: None,
            lock: Default::default(),
            ..ObjectAttrs::default()
        }
    }
}

/// The Content-Encoding S3 stores: without `aws-chunked`, which only framed the upload
/// (`aws-chunked,gzip` is stored as `gzip`; `aws-chunked` alone as nothing).
fn stored_encoding(header: &str) -> Option<String> {
    let kept: Vec<&str> = header
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(","))
}

fn http_date(t: &Timestamp) -> Option<String> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
    String::from_utf8(buf).ok()
}

/// A version's stored Expires, for an answer (`None` when it was not a date we can read).
pub(super) fn expires(v: &ObjectVersion) -> Option<Timestamp> {
    let stored = v.attrs.expires.as_deref()?;
    Timestamp::parse(TimestampFormat::HttpDate, stored).ok()
}

/// `AES256` when the version's data is sealed with AES-256-GCM (every piece of it is, under
/// an encrypted plan), as S3 reports server-side encryption with S3-managed keys. None for
/// a version encrypted with a customer's key (SSE-C), which S3 reports by echoing the
/// customer algorithm and key MD5 instead.
pub(super) fn server_side_encryption(v: &ObjectVersion) -> Option<ServerSideEncryption> {
    let layout = v.layout.as_ref()?;
    if layout.customer_seal().is_some() {
        return None;
    }
    let encrypted = if layout.inline.is_some() || layout.parts.is_empty() {
        !matches!(layout.encryption, Encryption::None)
    } else {
        layout
            .pieces()
            .all(|p| !matches!(p.encryption, Encryption::None))
    };
    encrypted.then(|| ServerSideEncryption::from_static(ServerSideEncryption::AES256))
}

/// Refuses a write that demands encryption the object will not get: `aws:kms` (sublet
/// keeps no KMS), or `AES256` under a plan with `encryption: none`.
pub(super) fn check_requested_encryption(
    requested: Option<&ServerSideEncryption>,
    plan: &str,
    plan_encrypts: bool,
) -> S3Result<()> {
    let Some(requested) = requested else {
        return Ok(());
    };
    if requested.as_str() != ServerSideEncryption::AES256 {
        return Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            format!(
                "server-side encryption {} is not supported: objects are encrypted with AES256 under their plan's keys",
                requested.as_str()
            ),
        ));
    }
    if !plan_encrypts {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!(
                "the request asks for server-side encryption AES256, but storage class {plan} stores objects unencrypted (encryption: none)"
            ),
        ));
    }
    Ok(())
}

/// The condition of a conditional write from its If-Match / If-None-Match headers.
pub(super) fn write_condition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<Option<WriteCondition>> {
    match (if_match, if_none_match) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            "a write may carry If-Match or If-None-Match, not both",
        )),
        (None, Some(ETagCondition::Any)) => Ok(Some(WriteCondition::Absent)),
        (None, Some(ETagCondition::ETag(_))) => Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            "If-None-Match on a write takes only * (write only if no object exists)",
        )),
        (Some(ETagCondition::Any), None) => Ok(Some(WriteCondition::ETag("*".to_owned()))),
        (Some(ETagCondition::ETag(e)), None) => Ok(Some(WriteCondition::ETag(
            e.value().trim_matches('"').to_owned(),
        ))),
    }
}

/// S3's limit on an object's user-defined metadata (`x-amz-meta-*`): the UTF-8 bytes of
/// every name and value together.
pub(super) const MAX_USER_METADATA: usize = 2 << 10;

/// `400 MetadataTooLarge` when `metadata` is past [`MAX_USER_METADATA`], as S3 answers.
pub(super) fn check_user_metadata(metadata: Option<&Metadata>) -> S3Result<()> {
    let size: usize = metadata
        .into_iter()
        .flatten()
        .map(|(name, value)| name.len() + value.len())
        .sum();
    if size > MAX_USER_METADATA {
        return Err(S3Error::with_message(
            S3ErrorCode::MetadataTooLarge,
            format!(
                "Your metadata headers exceed the maximum allowed metadata size: the x-amz-meta-* names and values hold {size} bytes, at most {MAX_USER_METADATA} are allowed"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn user_metadata_past_2_kib_is_too_large() {
        let meta = |value_len: usize| {
            let mut m = Metadata::new();
            m.insert("name".to_owned(), "v".repeat(value_len));
            m
        };
        assert!(check_user_metadata(None).is_ok());
        assert!(check_user_metadata(Some(&meta(MAX_USER_METADATA - 4))).is_ok());
        let e = check_user_metadata(Some(&meta(MAX_USER_METADATA - 3))).unwrap_err();
        assert_eq!(e.code(), &S3ErrorCode::MetadataTooLarge);
        assert_eq!(e.status_code(), Some(http::StatusCode::BAD_REQUEST));
    }

    #[test]
    fn aws_chunked_is_not_stored_as_the_objects_encoding() {
        assert_eq!(stored_encoding("aws-chunked"), None);
        assert_eq!(stored_encoding("aws-chunked,gzip").as_deref(), Some("gzip"));
        assert_eq!(
            stored_encoding("gzip, aws-chunked").as_deref(),
            Some("gzip")
        );
        assert_eq!(stored_encoding("br").as_deref(), Some("br"));
    }

    #[test]
    fn expires_round_trips_as_an_http_date() {
        let t =
            Timestamp::parse(TimestampFormat::HttpDate, "Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        let attrs = Written {
            cache_control: None,
            content_disposition: None,
            content_encoding: None,
            content_language: None,
            expires: Some(&t),
        }
        .attrs();
        assert_eq!(
            attrs.expires.as_deref(),
            Some("Wed, 21 Oct 2026 07:28:00 GMT")
        );
    }

    #[test]
    fn conditions_map_as_s3_defines_them() {
        let any = ETagCondition::Any;
        let tag = ETagCondition::ETag(ETag::Strong("abc".into()));
        assert_eq!(
            write_condition(None, Some(&any)).unwrap(),
            Some(WriteCondition::Absent)
        );
        assert_eq!(
            write_condition(Some(&tag), None).unwrap(),
            Some(WriteCondition::ETag("abc".into()))
        );
        assert!(write_condition(None, Some(&tag)).is_err());
        assert!(write_condition(Some(&tag), Some(&any)).is_err());
        assert_eq!(write_condition(None, None).unwrap(), None);
    }
}
