//! ListObjects (v1) and ListObjectsV2.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::{Gateway, etag, meta_err, timestamp};
use crate::meta::{ListPage, ListQuery};

const MAX_KEYS: i32 = 1000;

impl Gateway {
    fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: &str,
        max_keys: Option<i32>,
    ) -> S3Result<(ListPage, i32)> {
        self.require_bucket(bucket)?;
        let max = max_keys.unwrap_or(MAX_KEYS).clamp(0, MAX_KEYS);
        if max == 0 {
            return Ok((ListPage::default(), 0));
        }
        let query = ListQuery {
            prefix,
            delimiter: delimiter.filter(|d| !d.is_empty()),
            start_after,
            max_keys: usize::try_from(max).unwrap_or(1000),
        };
        let page = self.meta.list(bucket, &query).map_err(meta_err)?;
        Ok((page, max))
    }
}

fn contents(page: &ListPage) -> (Vec<Object>, Vec<CommonPrefix>) {
    let objects = page
        .objects
        .iter()
        .map(|v| Object {
            e_tag: Some(etag(&v.etag)),
            key: Some(v.key.clone()),
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
            prefix: Some(p.clone()),
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
        let (page, max) = self.list_page(
            &input.bucket,
            &prefix,
            input.delimiter.as_deref(),
            &marker,
            input.max_keys,
        )?;
        let (objects, prefixes) = contents(&page);
        let truncated = page.next_marker.is_some();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(prefix),
            marker: Some(marker),
            max_keys: Some(max),
            is_truncated: Some(truncated),
            contents: Some(objects),
            common_prefixes: Some(prefixes),
            delimiter: input.delimiter,
            next_marker: page.next_marker,
            encoding_type: None,
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
        let (page, max) = self.list_page(
            &input.bucket,
            &prefix,
            input.delimiter.as_deref(),
            &after,
            input.max_keys,
        )?;
        let (objects, prefixes) = contents(&page);
        let key_count = i32::try_from(objects.len() + prefixes.len()).unwrap_or(i32::MAX);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(prefix),
            max_keys: Some(max),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            is_truncated: Some(page.next_marker.is_some()),
            next_continuation_token: page.next_marker.map(hex::encode),
            contents: Some(objects),
            common_prefixes: Some(prefixes),
            delimiter: input.delimiter,
            encoding_type: None,
            start_after: input.start_after,
            request_charged: None,
        }))
    }
}
