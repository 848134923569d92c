//! GetObjectAttributes: a version's ETag, checksum, parts, storage class and size, each
//! only when `x-amz-object-attributes` asks for it.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::checksum as sums;
use super::{Gateway, timestamp};
use crate::datapath::checksum::ObjectChecksum;
use crate::meta::ObjectVersion;
use crate::node::write::reported_version_id;

/// Parts a page lists at most (as ListParts).
const MAX_PARTS: i32 = 1000;

impl Gateway {
    pub(super) async fn do_get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let input = req.input;
        let (bucket, v) = self
            .lookup(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        // As S3: a version written with a customer's key (SSE-C) shows its attributes only
        // to a request carrying that key.
        let customer_key = super::sse_c::customer_key!(self, &req.extensions, input)?;
        super::sse_c::check_version(&v, customer_key.as_ref())?;
        // One `x-amz-object-attributes` header lists them comma-separated (s3s hands it
        // over as one item).
        let wants = |name: &str| {
            input
                .object_attributes
                .iter()
                .flat_map(|a| a.as_str().split(','))
                .any(|a| a.trim().eq_ignore_ascii_case(name))
        };
        let max = input.max_parts.unwrap_or(MAX_PARTS).clamp(0, MAX_PARTS);
        let after = input.part_number_marker.unwrap_or(0).max(0);
        Ok(S3Response::new(GetObjectAttributesOutput {
            // GetObjectAttributes answers the ETag unquoted.
            e_tag: wants(ObjectAttributes::ETAG).then(|| ETag::Strong(v.etag.clone())),
            checksum: wants(ObjectAttributes::CHECKSUM)
                .then(|| checksum(v.attrs.checksum.as_ref()))
                .flatten(),
            object_parts: wants(ObjectAttributes::OBJECT_PARTS)
                .then(|| parts(&v, after, max))
                .flatten(),
            storage_class: wants(ObjectAttributes::STORAGE_CLASS)
                .then(|| StorageClass::from(v.plan.clone())),
            object_size: wants(ObjectAttributes::OBJECT_SIZE)
                .then(|| i64::try_from(v.size).unwrap_or(i64::MAX)),
            last_modified: Some(timestamp(v.last_modified)),
            version_id: reported_version_id(&bucket, &v.version_id),
            ..Default::default()
        }))
    }
}

/// The object's checksum as GetObjectAttributes shows it: a composite one without `-N`
/// (the part count is in ObjectParts).
fn checksum(c: Option<&ObjectChecksum>) -> Option<Checksum> {
    let c = c?;
    Some(sums::fields(
        [(c.algorithm, c.value.as_str())],
        Some(c.kind),
    ))
}

/// A page of a multipart version's parts, numbered as uploaded, after part `after`; `None`
/// for a version written in one piece.
fn parts(v: &ObjectVersion, after: i32, max: i32) -> Option<GetObjectAttributesParts> {
    let layout = v.layout.as_ref().filter(|l| !l.parts.is_empty())?;
    let total = i32::try_from(layout.parts.len()).unwrap_or(i32::MAX);
    let checksum = v.attrs.checksum.as_ref();
    // Part numbers as uploaded, when recorded with the checksum; else positions.
    let numbered: Vec<(i32, u64, Option<&str>)> = layout
        .parts
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let recorded = checksum.and_then(|c| c.parts.get(i));
            let number = recorded.map_or(i32::try_from(i + 1).unwrap_or(i32::MAX), |p| p.number);
            (
                number,
                piece.plain_length(),
                recorded.map(|p| p.value.as_str()),
            )
        })
        .collect();
    let rest: Vec<_> = numbered
        .into_iter()
        .filter(|(n, _, _)| *n > after)
        .collect();
    let page = usize::try_from(max).unwrap_or(0);
    let truncated = rest.len() > page;
    let listed: Vec<ObjectPart> = rest
        .into_iter()
        .take(page)
        .map(|(number, size, value)| {
            let mut part = ObjectPart {
                part_number: Some(number),
                size: Some(i64::try_from(size).unwrap_or(i64::MAX)),
                ..Default::default()
            };
            if let (Some(c), Some(value)) = (checksum, value) {
                sums::set_checksums!(part, sums::fields([(c.algorithm, value)], None));
            }
            part
        })
        .collect();
    Some(GetObjectAttributesParts {
        total_parts_count: Some(total),
        part_number_marker: Some(after),
        next_part_number_marker: listed.last().and_then(|p| p.part_number),
        max_parts: Some(max),
        is_truncated: Some(truncated),
        parts: Some(listed),
    })
}
