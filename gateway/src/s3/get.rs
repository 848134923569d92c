//! GetObject and HeadObject: ranges read only the segments they touch.

use std::ops::Range as ByteRange;
use std::sync::Arc;

use bytes::Bytes;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use tokio_stream::wrappers::ReceiverStream;

use super::{Gateway, etag, internal, timestamp};
use crate::dataplane::ObjectReader;
use crate::meta::ObjectVersion;

/// Segment indices and the byte range within each that a plaintext range touches.
fn segment_slices(segments: &[u64], range: &ByteRange<u64>) -> Vec<(usize, ByteRange<usize>)> {
    let mut out = Vec::new();
    let mut start = 0u64;
    for (i, &len) in segments.iter().enumerate() {
        let end = start + len;
        if end > range.start && start < range.end {
            let from = range.start.max(start) - start;
            let to = range.end.min(end) - start;
            let from = usize::try_from(from).unwrap_or(usize::MAX);
            let to = usize::try_from(to).unwrap_or(usize::MAX);
            out.push((i, from..to));
        }
        start = end;
        if start >= range.end {
            break;
        }
    }
    out
}

impl Gateway {
    async fn latest(&self, bucket: &str, key: &str) -> S3Result<ObjectVersion> {
        self.require_bucket(bucket).await?;
        let (b, k) = (bucket.to_string(), key.to_string());
        match self.meta(move |m| m.version(&b, &k, None)).await? {
            Some(v) if !v.delete_marker => Ok(v),
            _ => Err(S3Error::with_message(
                S3ErrorCode::NoSuchKey,
                format!("no object {key} in bucket {bucket}"),
            )),
        }
    }

    pub(super) async fn do_head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let v = self.latest(&req.input.bucket, &req.input.key).await?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(i64::try_from(v.size).unwrap_or(i64::MAX)),
            content_type: v.content_type,
            e_tag: Some(etag(&v.etag)),
            last_modified: Some(timestamp(v.last_modified)),
            metadata: Some(v.user_metadata.into_iter().collect()),
            storage_class: Some(StorageClass::from(v.plan)),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    pub(super) async fn do_get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let v = self.latest(&input.bucket, &input.key).await?;
        let name = format!("{}/{}", input.bucket, input.key);
        let size = v.size;
        let range = match &input.range {
            None => 0..size,
            Some(r) => r.check(size).map_err(|_| {
                S3Error::with_message(
                    S3ErrorCode::InvalidRange,
                    format!("the range is not satisfiable for an object of {size} bytes"),
                )
            })?,
        };
        let content_range = input.range.as_ref().map(|_| {
            format!(
                "bytes {}-{}/{size}",
                range.start,
                range.end.saturating_sub(1)
            )
        });
        let layout = v
            .layout
            .clone()
            .ok_or_else(|| internal(format!("object {name} has no data layout")))?;
        let lengths: Vec<u64> = layout.segments.iter().map(|s| s.plain_length).collect();
        if layout.plain_length() != size {
            return Err(internal(format!(
                "object {name} is unreadable: its layout holds {} bytes, not {size}",
                layout.plain_length()
            )));
        }
        let reader = Arc::new(
            ObjectReader::new(&self.master, layout)
                .map_err(|e| internal(format!("object {name} is unreadable: {e}")))?,
        );
        let slices = segment_slices(&lengths, &range);
        let backend_for = self.backend_for();

        // Read the first segment before answering, so a dead object gets a
        // proper error status instead of a truncated body.
        let mut pending = slices.into_iter();
        let first = match pending.next() {
            Some((i, r)) => {
                let seg = reader
                    .read_segment(i, &backend_for)
                    .await
                    .map_err(|e| internal(format!("object {name} is unreadable: {e}")))?;
                Some(slice(seg, r).ok_or_else(|| {
                    internal(format!("object {name} is unreadable: short segment {i}"))
                })?)
            }
            None => None,
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let rest: Vec<_> = pending.collect();
        tokio::spawn(async move {
            if let Some(first) = first
                && tx.send(Ok(first)).await.is_err()
            {
                return;
            }
            for (i, r) in rest {
                let item = match reader.read_segment(i, &backend_for).await {
                    Ok(seg) => slice(seg, r).ok_or_else(|| {
                        std::io::Error::other(format!(
                            "object {name} is unreadable: short segment {i}"
                        ))
                    }),
                    Err(e) => {
                        tracing::error!(object = %name, error = %e, "object read failed mid-stream");
                        Err(std::io::Error::other(format!(
                            "object {name} is unreadable: {e}"
                        )))
                    }
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        let length = range.end - range.start;
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(ReceiverStream::new(rx))),
            content_length: Some(i64::try_from(length).unwrap_or(i64::MAX)),
            content_range,
            content_type: v.content_type,
            e_tag: Some(etag(&v.etag)),
            last_modified: Some(timestamp(v.last_modified)),
            metadata: Some(v.user_metadata.into_iter().collect()),
            storage_class: Some(StorageClass::from(v.plan)),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }
}

fn slice(seg: Vec<u8>, r: ByteRange<usize>) -> Option<Bytes> {
    if r.end > seg.len() || r.start > r.end {
        return None;
    }
    Some(Bytes::from(seg).slice(r))
}

#[cfg(test)]
mod tests {
    use super::segment_slices;

    #[test]
    fn slices_touch_only_needed_segments() {
        let segs = [10, 10, 5];
        assert_eq!(
            segment_slices(&segs, &(0..25)),
            vec![(0, 0..10), (1, 0..10), (2, 0..5)]
        );
        assert_eq!(segment_slices(&segs, &(12..14)), vec![(1, 2..4)]);
        assert_eq!(segment_slices(&segs, &(9..11)), vec![(0, 9..10), (1, 0..1)]);
        assert_eq!(segment_slices(&segs, &(24..25)), vec![(2, 4..5)]);
        assert!(segment_slices(&segs, &(0..0)).is_empty());
    }
}
