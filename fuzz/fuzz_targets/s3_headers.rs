//! The request headers the gateway reads a range or a source from: `Range` (a GET's,
//! checked against the object's size as `get.rs` does), `x-amz-copy-source-range`
//! (`copy_source_range`), `x-amz-copy-source` and the `If-Match` family. Input: the
//! object's size (8 bytes, little-endian), then the header's text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3s::dto::{CopySource, ETagCondition, Range};
use sublet_gateway::s3::copy_source_range;

fuzz_target!(|input: &[u8]| {
    let Some((size, text)) = input.split_first_chunk::<8>() else {
        return;
    };
    let size = u64::from_le_bytes(*size);
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    if let Ok(range) = Range::parse(text)
        && let Ok(r) = range.check(size)
    {
        assert!(
            r.start <= r.end && r.end <= size,
            "{text:?} of {size}: {r:?}"
        );
        if size > 0 {
            assert!(r.start < r.end, "{text:?} of {size}: empty {r:?}");
        }
    }
    if let Some(r) = copy_source_range(text, size) {
        assert!(
            r.start < r.end && r.end <= size,
            "{text:?} of {size}: {r:?}"
        );
    }
    if let Ok(CopySource::Bucket { bucket, key, .. }) = CopySource::parse(text) {
        let _ = (bucket.len(), key.len());
    }
    let _ = ETagCondition::parse_http_header(text.as_bytes());
});
