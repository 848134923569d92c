//! ListObjects (v1) and ListObjectsV2.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::{Gateway, etag, timestamp};

use crate::meta::{ListPage, ListQuery, VersionPage, VersionQuery};

const MAX_KEYS: i32 = 1000;

/// A page size asked for with query argument `argument` (`max-keys`, `max-parts`,
/// `max-uploads`), at most `most`; a negative one answers `400 InvalidArgument` as S3 does.
pub(super) fn page_size(value: Option<i32>, most: i32, argument: &str) -> S3Result<i32> {
    match value {
        Some(n) if n < 0 => Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("Argument {argument} must be an integer between 0 and 2147483647"),
        )),
        Some(n) => Ok(n.min(most)),
        None => Ok(most),
    }
}

impl Gateway {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: &str,
        max_keys: Option<i32>,
    ) -> S3Result<(ListPage, i32)> {
        self.require_bucket(bucket).await?;
        let max = page_size(max_keys, MAX_KEYS, "max-keys")?;
        if max == 0 {
            return Ok((ListPage::default(), 0));
        }
        let (b, p, s) = (
            bucket.to_string(),
            prefix.to_string(),
            start_after.to_string(),
        );
        let d = effective_delimiter(delimiter).map(str::to_string);
        let max_keys = usize::try_from(max).unwrap_or(1000);
        let page = self
            .meta(move |m| {
                let query = ListQuery {
                    prefix: &p,
                    delimiter: d.as_deref(),
                    start_after: &s,
                    max_keys,
                };
                m.list(&b, &query)
            })
            .await?;
        Ok((page, max))
    }
}

/// Percent-encodes a key for `encoding-type=url` (all but unreserved characters and `/`).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The key encoder a listing asked for.
fn encoder(encoding: Option<&EncodingType>) -> fn(&str) -> String {
    match encoding {
        Some(e) if e.as_str().eq_ignore_ascii_case(EncodingType::URL) => url_encode,
        _ => str::to_string,
    }
}

/// The delimiter a listing groups by and echoes: an empty `delimiter=` is none (S3 groups
/// nothing by it and leaves it out of the answer).
fn effective_delimiter(delimiter: Option<&str>) -> Option<&str> {
    delimiter.filter(|d| !d.is_empty())
}

fn contents(page: &ListPage, enc: fn(&str) -> String) -> (Vec<Object>, Vec<CommonPrefix>) {
    let objects = page
        .objects
        .iter()
        .map(|v| Object {
            e_tag: Some(etag(&v.etag)),
            key: Some(enc(&v.key)),
            last_modified: Some(timestamp(v.last_modified)),
            size: Some(i64::try_from(v.size).unwrap_or(i64::MAX)),
            storage_class: Some(ObjectStorageClass::from(v.plan.clone())),
            ..Default::default()
        })
        .collect();
    let prefixes = page
        .common_prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(enc(p)),
        })
        .collect();
    (objects, prefixes)
}

impl Gateway {
    pub(super) async fn do_list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let marker = input.marker.clone().unwrap_or_default();
        let (page, max) = self
            .list_page(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                &marker,
                input.max_keys,
            )
            .await?;
        let enc = encoder(input.encoding_type.as_ref());
        let (objects, prefixes) = contents(&page, enc);
        let truncated = page.next_marker.is_some();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(&prefix)),
            marker: Some(enc(&marker)),
            max_keys: Some(max),
            is_truncated: Some(truncated),
            contents: Some(objects),
            common_prefixes: Some(prefixes),
            delimiter: effective_delimiter(input.delimiter.as_deref()).map(enc),
            next_marker: page.next_marker.as_deref().map(enc),
            encoding_type: input.encoding_type,
            request_charged: None,
        }))
    }

    pub(super) async fn do_list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        // The continuation token is the last key or prefix of the previous page, hex-encoded.
        let after = match &input.continuation_token {
            Some(token) => {
                let raw = hex::decode(token).map_err(|_| {
                    s3s::S3Error::with_message(
                        s3s::S3ErrorCode::InvalidArgument,
                        "the continuation token is invalid",
                    )
                })?;
                String::from_utf8(raw).map_err(|_| {
                    s3s::S3Error::with_message(
                        s3s::S3ErrorCode::InvalidArgument,
                        "the continuation token is invalid",
                    )
                })?
            }
            None => input.start_after.clone().unwrap_or_default(),
        };
        let (page, max) = self
            .list_page(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                &after,
                input.max_keys,
            )
            .await?;
        let enc = encoder(input.encoding_type.as_ref());
        let (objects, prefixes) = contents(&page, enc);
        let key_count = i32::try_from(objects.len() + prefixes.len()).unwrap_or(i32::MAX);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(&prefix)),
            max_keys: Some(max),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            is_truncated: Some(page.next_marker.is_some()),
            next_continuation_token: page.next_marker.map(hex::encode),
            contents: Some(objects),
            common_prefixes: Some(prefixes),
            delimiter: effective_delimiter(input.delimiter.as_deref()).map(enc),
            encoding_type: input.encoding_type,
            start_after: input.start_after.as_deref().map(enc),
            request_charged: None,
        }))
    }
}

impl Gateway {
    pub(super) async fn do_list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let max = page_size(input.max_keys, MAX_KEYS, "max-keys")?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let version_id_marker = input.version_id_marker.clone().unwrap_or_default();
        let page = if max == 0 {
            VersionPage::default()
        } else {
            let (b, p, km, vm) = (
                input.bucket.clone(),
                prefix.clone(),
                key_marker.clone(),
                version_id_marker.clone(),
            );
            let d = effective_delimiter(input.delimiter.as_deref()).map(str::to_string);
            let max_keys = usize::try_from(max).unwrap_or(1000);
            self.meta(move |m| {
                m.list_versions(
                    &b,
                    &VersionQuery {
                        prefix: &p,
                        delimiter: d.as_deref(),
                        key_marker: &km,
                        version_id_marker: &vm,
                        max_keys,
                    },
                )
            })
            .await?
        };
        let enc = encoder(input.encoding_type.as_ref());
        let mut versions = Vec::new();
        let mut markers = Vec::new();
        for entry in page.versions {
            let v = entry.version;
            if v.delete_marker {
                markers.push(DeleteMarkerEntry {
                    is_latest: Some(entry.is_latest),
                    key: Some(enc(&v.key)),
                    last_modified: Some(timestamp(v.last_modified)),
                    owner: None,
                    version_id: Some(v.version_id),
                });
            } else {
                versions.push(ObjectVersion {
                    e_tag: Some(etag(&v.etag)),
                    is_latest: Some(entry.is_latest),
                    key: Some(enc(&v.key)),
                    last_modified: Some(timestamp(v.last_modified)),
                    size: Some(i64::try_from(v.size).unwrap_or(i64::MAX)),
                    storage_class: Some(ObjectVersionStorageClass::from(v.plan)),
                    version_id: Some(v.version_id),
                    ..Default::default()
                });
            }
        }
        let prefixes = page
            .common_prefixes
            .iter()
            .map(|p| CommonPrefix {
                prefix: Some(enc(p)),
            })
            .collect();
        let (next_key, next_version) = match page.next {
            Some((k, v)) => (Some(enc(&k)), (!v.is_empty()).then_some(v)),
            None => (None, None),
        };
        Ok(S3Response::new(ListObjectVersionsOutput {
            common_prefixes: Some(prefixes),
            delete_markers: Some(markers),
            delimiter: effective_delimiter(input.delimiter.as_deref()).map(enc),
            encoding_type: input.encoding_type,
            is_truncated: Some(next_key.is_some()),
            key_marker: Some(enc(&key_marker)),
            max_keys: Some(max),
            name: Some(input.bucket),
            next_key_marker: next_key,
            next_version_id_marker: next_version,
            prefix: Some(enc(&prefix)),
            request_charged: None,
            version_id_marker: Some(version_id_marker),
            versions: Some(versions),
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn an_empty_delimiter_is_not_echoed() {
        assert_eq!(super::effective_delimiter(Some("")), None);
        assert_eq!(super::effective_delimiter(None), None);
        assert_eq!(super::effective_delimiter(Some("/")), Some("/"));
    }

    #[test]
    fn negative_page_sizes_are_invalid_arguments() {
        assert_eq!(super::page_size(None, 1000, "max-keys").unwrap(), 1000);
        assert_eq!(super::page_size(Some(0), 1000, "max-keys").unwrap(), 0);
        assert_eq!(
            super::page_size(Some(5000), 1000, "max-keys").unwrap(),
            1000
        );
        let e = super::page_size(Some(-1), 1000, "max-parts").unwrap_err();
        assert_eq!(e.code(), &s3s::S3ErrorCode::InvalidArgument);
        assert_eq!(
            e.message(),
            Some("Argument max-parts must be an integer between 0 and 2147483647")
        );
    }

    #[test]
    fn url_encoding_keeps_slashes_and_unreserved() {
        assert_eq!(super::url_encode("a b/c+d%é~"), "a%20b/c%2Bd%25%C3%A9~");
    }
}
