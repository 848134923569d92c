//! Object and bucket tagging: the `x-amz-tagging` header of writes, Put/Get/DeleteObjectTagging
//! (per version) and Put/Get/DeleteBucketTagging, with S3's limits on tags.

use std::collections::BTreeMap;

use s3s::dto;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::Gateway;
use crate::error::internal;
use crate::meta::ObjectVersion;
use crate::node::write::reported_version_id;

/// Tags an object may carry.
pub const MAX_OBJECT_TAGS: usize = 10;
/// Tags a bucket may carry.
pub const MAX_BUCKET_TAGS: usize = 50;
/// Unicode characters in a tag key.
const MAX_KEY_CHARS: usize = 128;
/// Unicode characters in a tag value.
const MAX_VALUE_CHARS: usize = 256;

/// Tags as stored: key → value, keys unique.
pub type Tags = BTreeMap<String, String>;

fn invalid_tag(message: String) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidTag, message)
}

/// Checks `pairs` against S3's rules (at most `max` tags, keys 1–128 and values at most
/// 256 Unicode characters, keys unique and not starting with `aws:`) and keys them.
pub fn checked_tags(pairs: Vec<(String, String)>, max: usize) -> S3Result<Tags> {
    if pairs.len() > max {
        return Err(invalid_tag(format!(
            "{} tags given; at most {max} are allowed",
            pairs.len()
        )));
    }
    let mut tags = Tags::new();
    for (key, value) in pairs {
        let key_chars = key.chars().count();
        if key_chars == 0 {
            return Err(invalid_tag("a tag key is empty".to_owned()));
        }
        if key_chars > MAX_KEY_CHARS {
            return Err(invalid_tag(format!(
                "tag key {key:?} has {key_chars} characters; at most {MAX_KEY_CHARS} are allowed"
            )));
        }
        let value_chars = value.chars().count();
        if value_chars > MAX_VALUE_CHARS {
            return Err(invalid_tag(format!(
                "the value of tag {key:?} has {value_chars} characters; at most {MAX_VALUE_CHARS} are allowed"
            )));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(invalid_tag(format!(
                "tag key {key:?} starts with aws:, which is reserved"
            )));
        }
        if tags.insert(key.clone(), value).is_some() {
            return Err(invalid_tag(format!("tag key {key:?} is given twice")));
        }
    }
    Ok(tags)
}

/// The tags of an `x-amz-tagging` header: URL-query encoded (`a=1&b=x%20y`).
pub fn tags_from_header(header: &str) -> S3Result<Tags> {
    let mut pairs = Vec::new();
    for pair in header.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        pairs.push((query_decoded(key)?, query_decoded(value)?));
        if pairs.len() > MAX_OBJECT_TAGS {
            break; // checked_tags names the problem; no need to decode the rest
        }
    }
    checked_tags(pairs, MAX_OBJECT_TAGS)
}

/// The tags a write asks for with `x-amz-tagging` (none without the header).
pub(super) fn header_tags(header: Option<&str>) -> S3Result<Tags> {
    header.map_or_else(|| Ok(Tags::new()), tags_from_header)
}

/// Decodes one part of a URL query: `+` is a space, `%XX` a byte; the bytes must be UTF-8.
fn query_decoded(text: &str) -> S3Result<String> {
    let bad = |why: &str| {
        invalid_tag(format!(
            "x-amz-tagging must be URL-query encoded (key=value&...): {text:?} {why}"
        ))
    };
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let byte = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad("has a % not followed by two hex digits"))?;
                out.push(byte);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad("does not decode to UTF-8"))
}

/// The tags of a `<Tagging>` body.
fn tags_from_set(set: dto::TagSet, max: usize) -> S3Result<Tags> {
    let pairs = set
        .into_iter()
        .map(|t| match t.key {
            Some(key) => Ok((key, t.value.unwrap_or_default())),
            None => Err(invalid_tag("a Tag has no Key".to_owned())),
        })
        .collect::<S3Result<Vec<_>>>()?;
    checked_tags(pairs, max)
}

/// Tags in S3's form.
pub fn tag_set(tags: &Tags) -> dto::TagSet {
    tags.iter()
        .map(|(k, v)| dto::Tag {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

/// The `x-amz-tagging-count` of an answer: `None` for an untagged version.
pub(super) fn tag_count(v: &ObjectVersion) -> Option<i32> {
    (!v.attrs.tags.is_empty()).then(|| i32::try_from(v.attrs.tags.len()).unwrap_or(i32::MAX))
}

impl Gateway {
    /// Replaces the tags of a version (the latest when `version_id` is `None`) and answers
    /// the version id changed.
    async fn retag(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        tags: Tags,
    ) -> S3Result<Option<String>> {
        let (found_bucket, v) = self.lookup(bucket, key, version_id).await?;
        let (b, k, id) = (v.bucket.clone(), v.key.clone(), v.version_id.clone());
        let changed = self
            .meta(move |m| m.set_object_tags(&b, &k, &id, &tags))
            .await?;
        if !changed {
            return Err(S3Error::with_message(
                S3ErrorCode::NoSuchKey,
                format!(
                    "object {key} in bucket {bucket} was deleted or replaced while its tags were set"
                ),
            ));
        }
        Ok(reported_version_id(&found_bucket, &v.version_id))
    }

    pub(super) async fn do_put_object_tagging(
        &self,
        req: S3Request<dto::PutObjectTaggingInput>,
    ) -> S3Result<S3Response<dto::PutObjectTaggingOutput>> {
        let input = req.input;
        let tags = tags_from_set(input.tagging.tag_set, MAX_OBJECT_TAGS)?;
        let version_id = self
            .retag(&input.bucket, &input.key, input.version_id.as_deref(), tags)
            .await?;
        Ok(S3Response::new(dto::PutObjectTaggingOutput { version_id }))
    }

    pub(super) async fn do_get_object_tagging(
        &self,
        req: S3Request<dto::GetObjectTaggingInput>,
    ) -> S3Result<S3Response<dto::GetObjectTaggingOutput>> {
        let input = req.input;
        let (bucket, v) = self
            .lookup(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        Ok(S3Response::new(dto::GetObjectTaggingOutput {
            tag_set: tag_set(&v.attrs.tags),
            version_id: reported_version_id(&bucket, &v.version_id),
        }))
    }

    pub(super) async fn do_delete_object_tagging(
        &self,
        req: S3Request<dto::DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectTaggingOutput>> {
        let input = req.input;
        let version_id = self
            .retag(
                &input.bucket,
                &input.key,
                input.version_id.as_deref(),
                Tags::new(),
            )
            .await?;
        Ok(S3Response::new(dto::DeleteObjectTaggingOutput {
            version_id,
        }))
    }

    pub(super) async fn do_put_bucket_tagging(
        &self,
        req: S3Request<dto::PutBucketTaggingInput>,
    ) -> S3Result<S3Response<dto::PutBucketTaggingOutput>> {
        let input = req.input;
        let tags = tags_from_set(input.tagging.tag_set, MAX_BUCKET_TAGS)?;
        let json = serde_json::to_string(&tags).map_err(|e| internal(e.to_string()))?;
        let bucket = input.bucket.clone();
        self.meta(move |m| m.set_bucket_tags(&bucket, Some(&json)))
            .await?;
        tracing::info!(bucket = %input.bucket, tags = tags.len(), "bucket tags set");
        Ok(S3Response::new(dto::PutBucketTaggingOutput::default()))
    }

    pub(super) async fn do_get_bucket_tagging(
        &self,
        req: S3Request<dto::GetBucketTaggingInput>,
    ) -> S3Result<S3Response<dto::GetBucketTaggingOutput>> {
        let bucket = req.input.bucket;
        self.require_bucket(&bucket).await?;
        let b = bucket.clone();
        let stored = self.meta(move |m| m.bucket_tags(&b)).await?;
        let Some(json) = stored else {
            return Err(S3Error::with_message(
                S3ErrorCode::NoSuchTagSet,
                format!("bucket {bucket} has no tags"),
            ));
        };
        let tags: Tags = serde_json::from_str(&json)
            .map_err(|e| internal(format!("bucket {bucket}: stored tags: {e}")))?;
        Ok(S3Response::new(dto::GetBucketTaggingOutput {
            tag_set: tag_set(&tags),
        }))
    }

    pub(super) async fn do_delete_bucket_tagging(
        &self,
        req: S3Request<dto::DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketTaggingOutput>> {
        let bucket = req.input.bucket;
        self.meta(move |m| m.set_bucket_tags(&bucket, None)).await?;
        Ok(S3Response::new(dto::DeleteBucketTaggingOutput::default()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn code(e: &S3Error) -> S3ErrorCode {
        e.code().clone()
    }

    #[test]
    fn the_tagging_header_is_url_query_decoded() {
        let tags = tags_from_header("project=blue+sky&owner=J%C3%BCrgen&empty=&flag").unwrap();
        assert_eq!(tags.len(), 4);
        assert_eq!(tags["project"], "blue sky");
        assert_eq!(tags["owner"], "Jürgen");
        assert_eq!(tags["empty"], "");
        assert_eq!(tags["flag"], "");
        assert_eq!(
            tags_from_header("a%3Db=c%26d").unwrap()["a=b"],
            "c&d",
            "encoded separators belong to the key and value"
        );
        assert!(tags_from_header("").unwrap().is_empty());
    }

    #[test]
    fn a_badly_encoded_header_is_an_invalid_tag_naming_the_part() {
        for bad in ["a=%zz", "a=%4", "a=%ff%fe"] {
            let e = tags_from_header(bad).unwrap_err();
            assert_eq!(code(&e), S3ErrorCode::InvalidTag, "{bad}");
            assert!(e.message().unwrap().contains("URL-query encoded"), "{bad}");
        }
    }

    #[test]
    fn s3_limits_on_tags_are_enforced() {
        let many: String = (0..11).map(|i| format!("k{i}=v&")).collect();
        let e = tags_from_header(&many).unwrap_err();
        assert!(e.message().unwrap().contains("at most 10"), "{e:?}");
        let ten: String = (0..10).map(|i| format!("k{i}=v&")).collect();
        assert_eq!(tags_from_header(&ten).unwrap().len(), 10);

        let pairs = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        // Limits count Unicode characters, not bytes.
        assert!(checked_tags(pairs(&"é".repeat(128), &"ü".repeat(256)), 10).is_ok());
        let long_key = checked_tags(pairs(&"k".repeat(129), "v"), 10).unwrap_err();
        assert!(long_key.message().unwrap().contains("129 characters"));
        let long_value = checked_tags(pairs("k", &"v".repeat(257)), 10).unwrap_err();
        assert!(long_value.message().unwrap().contains("257 characters"));
        let reserved = checked_tags(pairs("AWS:created", "x"), 10).unwrap_err();
        assert!(reserved.message().unwrap().contains("reserved"));
        assert!(checked_tags(pairs("", "x"), 10).is_err());
        let twice = tags_from_header("a=1&a=2").unwrap_err();
        assert_eq!(code(&twice), S3ErrorCode::InvalidTag);
        assert!(twice.message().unwrap().contains("given twice"));

        let fifty: Vec<_> = (0..50).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(checked_tags(fifty.clone(), MAX_BUCKET_TAGS).is_ok());
        assert!(checked_tags(fifty, MAX_OBJECT_TAGS).is_err());
    }

    #[test]
    fn a_tag_without_a_key_is_refused() {
        let set = vec![dto::Tag {
            key: None,
            value: Some("v".into()),
        }];
        assert_eq!(
            code(&tags_from_set(set, 10).unwrap_err()),
            S3ErrorCode::InvalidTag
        );
    }
}
