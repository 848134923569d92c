//! Multipart uploads: every part is its own erasure-coded layout written like
//! a PutObject, with its checksums; completing composes the version from the parts'
//! layouts and its checksum from theirs.

use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::checksum::{self as sums, set_checksums};
use super::copy::{CopiedSource, source_request};
use super::headers::{self, Written};
use super::put::content_md5_matches;
use super::{Gateway, etag, timestamp};
use super::{sse_c, tagging};
use crate::datapath::checksum::{self, Algorithm, ChecksumSpec, ObjectChecksum, PartChecksum};
use crate::datapath::layout::{Encryption, Layout};
use crate::error::{internal, no_such_upload};
use crate::meta::{ObjectAttrs, ObjectVersion, Upload, UploadPart, UploadQuery};
use crate::node::Plan;
use crate::node::now_ms;
use crate::node::write::{new_version_id, random_uid, reported_version_id};

/// Parts other than the last must hold at least this many bytes (as in S3).
pub const MIN_PART_SIZE: u64 = 5 << 20;
const MAX_PART_NUMBER: i32 = 10_000;
const MAX_LISTED: i32 = 1000;

/// A part number as S3 takes it, in uploads and in GET/HEAD `partNumber` alike: 1 to
/// 10000, else `400 InvalidArgument` (a number in range that the object does not have is
/// another answer: `416 InvalidPartNumber` on GET and HEAD).
pub(super) fn check_part_number(n: i32) -> S3Result<()> {
    if (1..=MAX_PART_NUMBER).contains(&n) {
        Ok(())
    } else {
        Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!(
                "Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive (not {n})"
            ),
        ))
    }
}

/// The bytes `x-amz-copy-source-range` names of a source of `size` bytes, if satisfiable.
/// Unlike a GET range, a copy range must name both ends inside the object. (Also the
/// `s3_headers` fuzz target's entry.)
pub fn copy_source_range(text: &str, size: u64) -> Option<std::ops::Range<u64>> {
    match Range::parse(text) {
        Ok(Range::Int {
            first,
            last: Some(last),
        }) if first <= last && last < size => Some(first..last + 1),
        _ => None,
    }
}

/// S3's multipart ETag: MD5 of the parts' binary MD5s, then "-" and the part count.
pub fn multipart_etag(part_md5s: &[&str]) -> Option<String> {
    let mut md5 = Md5::new();
    for p in part_md5s {
        md5.update(hex::decode(p).ok()?);
    }
    Some(format!(
        "{}-{}",
        hex::encode(md5.finalize()),
        part_md5s.len()
    ))
}

/// The checksum an upload's object gets: the one it was started with, else S3's default.
fn upload_checksum(upload: &Upload) -> ChecksumSpec {
    upload.attrs.upload_checksum.unwrap_or(sums::DEFAULT)
}

/// The answer fields of a part's checksums: the upload's algorithm (when it was started
/// with one) and `also` (what the part's request sent).
fn part_fields(
    upload: &Upload,
    part: &checksum::Sums,
    also: Option<Algorithm>,
) -> s3s::dto::Checksum {
    named_fields(upload.attrs.upload_checksum, part, also)
}

fn named_fields(
    spec: Option<ChecksumSpec>,
    part: &checksum::Sums,
    also: Option<Algorithm>,
) -> s3s::dto::Checksum {
    let named = spec.map(|s| s.algorithm);
    sums::fields(
        part.iter()
            .filter(|(a, _)| Some(**a) == named || Some(**a) == also)
            .map(|(a, v)| (*a, v.as_str())),
        None,
    )
}

impl Gateway {
    async fn require_upload(&self, bucket: &str, key: &str, upload_id: &str) -> S3Result<Upload> {
        self.require_bucket(bucket).await?;
        let (b, k, u) = (bucket.to_string(), key.to_string(), upload_id.to_string());
        self.meta(move |m| m.upload(&b, &k, &u))
            .await?
            .ok_or_else(|| no_such_upload(bucket, key, upload_id))
    }

    fn upload_plan(&self, upload: &Upload) -> S3Result<Plan> {
        self.plan(&upload.plan).ok_or_else(|| {
            internal(format!(
                "upload {} was started under plan {} which no longer exists",
                upload.upload_id, upload.plan
            ))
        })
    }

    /// Records a written part, freeing the part it replaces; frees the new part's
    /// shards if the upload has ended meanwhile.
    async fn store_part(&self, upload: &Upload, part: UploadPart) -> S3Result<()> {
        let (b, k, u) = (
            upload.bucket.clone(),
            upload.key.clone(),
            upload.upload_id.clone(),
        );
        let layout = part.layout.clone();
        match self.meta(move |m| m.put_part(&b, &k, &u, &part)).await {
            Ok(old) => {
                self.free(old.as_ref().map(|p| &p.layout)).await;
                Ok(())
            }
            Err(e) => {
                self.free(Some(&layout)).await;
                Err(e.into())
            }
        }
    }

    pub(super) async fn do_create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        super::headers::check_user_metadata(input.metadata.as_ref())?;
        let bucket = self.require_bucket(&input.bucket).await?;
        let plan = self.resolve_plan(&bucket, input.storage_class.as_ref().map(|s| s.as_str()))?;
        let customer_key = sse_c::customer_key!(self, &req.extensions, input)?;
        let (sse_customer_algorithm, sse_customer_key_md5) = sse_c::echo(customer_key.as_ref());
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
        let server_side_encryption = (plan.encrypt && customer.is_none())
            .then(|| ServerSideEncryption::from_static(ServerSideEncryption::AES256));
        // Checked now; the bucket's default retention applies when the upload completes.
        let lock = super::lock::requested_lock(
            input.object_lock_mode.as_ref(),
            input.object_lock_retain_until_date.as_ref(),
            input.object_lock_legal_hold_status.as_ref(),
        )?;
        self.lock_for_new(&input.bucket, lock).await?;
        let spec = sums::upload_spec(
            input.checksum_algorithm.as_ref(),
            input.checksum_type.as_ref(),
        )?;
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
        // Kept with the upload; the completed version takes it.
        attrs.acl = self
            .acl_for_new_object(
                &bucket,
                self.requester(req.credentials.as_ref()).as_deref(),
                input.acl.as_ref().map(|a| a.as_str()),
                &req.headers,
            )
            .await?;
        let upload = Upload {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            upload_id: random_uid(),
            plan: plan.name,
            content_type: input.content_type,
            user_metadata: input.metadata.unwrap_or_default().into_iter().collect(),
            initiated: now_ms(),
            attrs: ObjectAttrs {
                upload_checksum: spec,
                upload_customer_key: customer.map(|c| c.seal),
                ..attrs
            },
        };
        let upload_id = upload.upload_id.clone();
        self.meta(move |m| m.create_upload(&upload)).await?;
        tracing::info!(bucket = %input.bucket, key = %input.key, upload_id, "multipart upload started");
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            server_side_encryption,
            sse_customer_algorithm,
            sse_customer_key_md5,
            checksum_algorithm: spec
                .map(|s| ChecksumAlgorithm::from(s.algorithm.name().to_owned())),
            checksum_type: spec.map(|s| ChecksumType::from(s.kind.name().to_owned())),
            ..Default::default()
        }))
    }

    pub(super) async fn do_upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        check_part_number(input.part_number)?;
        super::put::check_content_md5(input.content_md5.as_deref())?;
        let upload = self
            .require_upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let plan = self.upload_plan(&upload)?;
        let customer_key = sse_c::customer_key!(self, &req.extensions, input)?;
        let (sse_customer_algorithm, sse_customer_key_md5) = sse_c::echo(customer_key.as_ref());
        let customer = sse_c::for_part(&upload, customer_key)?;
        let requested = sums::requested(&req.headers)?;
        let mut algorithms = vec![upload_checksum(&upload).algorithm];
        algorithms.extend(requested.algorithm);
        let written = self
            .store_upload(
                &plan,
                &input.key,
                input.body,
                &algorithms,
                customer.as_ref(),
            )
            .await?;
        let what = format!("part {} of upload {}", input.part_number, input.upload_id);
        if let Err(e) = sums::verify(
            &requested,
            req.trailing_headers.as_ref(),
            &written.checksums,
            &what,
        ) {
            self.free(Some(&written.layout)).await;
            return Err(e);
        }
        if !content_md5_matches(input.content_md5.as_deref(), &written.md5) {
            self.free(Some(&written.layout)).await;
            return Err(S3Error::with_message(
                S3ErrorCode::BadDigest,
                format!(
                    "part {} of upload {}: the Content-MD5 you specified did not match what was received",
                    input.part_number, input.upload_id
                ),
            ));
        }
        let md5 = sse_c::stored_etag(customer.as_ref(), &written.md5);
        let fields = part_fields(&upload, &written.checksums, requested.algorithm);
        self.store_part(
            &upload,
            UploadPart {
                part_number: input.part_number,
                size: written.size,
                etag: md5.clone(),
                last_modified: now_ms(),
                layout: written.layout,
                checksums: written.checksums,
            },
        )
        .await?;
        let mut out = UploadPartOutput {
            e_tag: Some(etag(&md5)),
            sse_customer_algorithm,
            sse_customer_key_md5,
            ..Default::default()
        };
        set_checksums!(out, fields);
        Ok(S3Response::new(out))
    }

    pub(super) async fn do_upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        check_part_number(input.part_number)?;
        let upload = self
            .require_upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let plan = self.upload_plan(&upload)?;
        let CopiedSource {
            bucket: src_bucket,
            key: src_key,
            bucket_meta: src_meta,
            version: source,
            customer_key: source_key,
            ..
        } = self
            .copied_source(&req.extensions, source_request!(input))
            .await?;
        let customer_key = sse_c::customer_key!(self, &req.extensions, input)?;
        let (sse_customer_algorithm, sse_customer_key_md5) = sse_c::echo(customer_key.as_ref());
        let customer = sse_c::for_part(&upload, customer_key)?;
        let range = match &input.copy_source_range {
            None => 0..source.size,
            Some(text) => copy_source_range(text, source.size).ok_or_else(|| {
                    S3Error::with_message(
                        S3ErrorCode::InvalidRange,
                        format!(
                            "x-amz-copy-source-range {text:?} is not a satisfiable bytes=first-last range of {src_bucket}/{src_key} ({} bytes)",
                            source.size
                        ),
                    )
                })?,
        };
        let length = range.end - range.start;
        let stream = self
            .read_range_keyed(&source, range, source_key.as_ref())
            .await?;
        let written = self
            .store_body(
                &plan,
                &input.key,
                Some(StreamingBlob::wrap(stream)),
                Some(length),
                &[upload_checksum(&upload).algorithm],
                customer.as_ref(),
            )
            .await?;
        let md5 = sse_c::stored_etag(customer.as_ref(), &written.md5);
        let modified = now_ms();
        let fields = part_fields(&upload, &written.checksums, None);
        self.store_part(
            &upload,
            UploadPart {
                part_number: input.part_number,
                size: written.size,
                etag: md5.clone(),
                last_modified: modified,
                layout: written.layout,
                checksums: written.checksums,
            },
        )
        .await?;
        let mut result = CopyPartResult {
            e_tag: Some(etag(&md5)),
            last_modified: Some(timestamp(modified)),
            ..Default::default()
        };
        set_checksums!(result, fields);
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(result),
            copy_source_version_id: reported_version_id(&src_meta, &source.version_id),
            sse_customer_algorithm,
            sse_customer_key_md5,
            ..Default::default()
        }))
    }

    pub(super) async fn do_complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let mut input = req.input;
        let bucket = self.require_bucket(&input.bucket).await?;
        let listed = input
            .multipart_upload
            .take()
            .and_then(|m| m.parts)
            .unwrap_or_default();
        let upload = match self
            .require_upload(&input.bucket, &input.key, &input.upload_id)
            .await
        {
            Ok(upload) => upload,
            Err(e) => {
                // A client retrying after a lost answer: the upload completed into the
                // key's latest version, with the parts this retry lists.
                return match self.completed_before(&bucket, &input, &listed).await? {
                    Some(done) => Ok(S3Response::new(done)),
                    None => Err(e),
                };
            }
        };
        let condition =
            headers::write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let name = format!(
            "upload {} of {}/{}",
            input.upload_id, input.bucket, input.key
        );
        if listed.is_empty() {
            return Err(S3Error::with_message(
                S3ErrorCode::MalformedXML,
                format!("{name}: the completion must list at least one part"),
            ));
        }
        let (b, k, u) = (
            input.bucket.clone(),
            input.key.clone(),
            input.upload_id.clone(),
        );
        let stored = self
            .meta(move |m| m.parts(&b, &k, &u, 0, usize::MAX))
            .await?;
        let numbers: Vec<i32> = listed.iter().map(|p| p.part_number.unwrap_or(0)).collect();
        if let Some(w) = numbers.windows(2).find(|w| w[1] <= w[0]) {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidPartOrder,
                format!(
                    "{name}: parts must be listed in ascending order of part number (part {} follows part {})",
                    w[1], w[0]
                ),
            ));
        }
        let mut chosen: Vec<&UploadPart> = Vec::with_capacity(listed.len());
        for (i, (p, &number)) in listed.iter().zip(&numbers).enumerate() {
            let sent = p.e_tag.as_ref().map(|e| e.value().trim_matches('"'));
            let part = stored
                .iter()
                .find(|s| s.part_number == number && Some(s.etag.as_str()) == sent)
                .ok_or_else(|| {
                    S3Error::with_message(
                        S3ErrorCode::InvalidPart,
                        format!(
                            "{name}: part {number} with ETag {:?} was not uploaded (or has been replaced)",
                            sent.unwrap_or("")
                        ),
                    )
                })?;
            if i + 1 < listed.len() && part.size < MIN_PART_SIZE {
                return Err(S3Error::with_message(
                    S3ErrorCode::EntityTooSmall,
                    format!(
                        "{name}: part {number} holds {} bytes; every part but the last needs at least {MIN_PART_SIZE}",
                        part.size
                    ),
                ));
            }
            chosen.push(part);
        }
        let object_checksum = completed_checksum(&upload, &chosen, &listed, &name)?;
        let size = chosen.iter().map(|p| p.size).sum();
        check_whole_object(&input, object_checksum.as_ref(), size, &name)?;
        let md5s: Vec<&str> = chosen.iter().map(|p| p.etag.as_str()).collect();
        let object_etag = multipart_etag(&md5s)
            .ok_or_else(|| internal(format!("{name}: a stored part has a malformed MD5")))?;
        let first = chosen
            .first()
            .map(|p| &p.layout)
            .ok_or_else(|| internal(format!("{name}: no parts")))?;
        let layout = Layout {
            scheme: first.scheme,
            encryption: Encryption::None,
            segment_size: first.segment_size,
            segments: Vec::new(),
            inline: None,
            parts: chosen.iter().map(|p| p.layout.clone()).collect(),
        };
        // Refused before completing: the upload stays open (to abort, or to complete once
        // there is room).
        self.accounts()
            .check_quota(bucket.owner.as_deref(), size, 1)?;
        let used: Vec<(i32, String)> = chosen
            .iter()
            .map(|p| (p.part_number, p.etag.clone()))
            .collect();
        let lock = self.lock_for_new(&input.bucket, upload.attrs.lock).await?;
        let version_id = new_version_id(&bucket);
        let version = ObjectVersion {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            version_id: version_id.clone(),
            delete_marker: false,
            size,
            etag: object_etag.clone(),
            content_type: upload.content_type,
            user_metadata: upload.user_metadata,
            last_modified: now_ms(),
            plan: upload.plan,
            layout: Some(layout),
            attrs: ObjectAttrs {
                upload_id: Some(input.upload_id.clone()),
                lock,
                checksum: object_checksum,
                upload_checksum: None,
                upload_customer_key: None,
                ..upload.attrs
            },
        };
        let fields = sums::object_fields(version.attrs.checksum.as_ref());
        let server_side_encryption = headers::server_side_encryption(&version);
        let upload_id = input.upload_id.clone();
        let outcome = self
            .meta(move |m| m.complete_upload_if(&upload_id, &used, &version, condition.as_ref()))
            .await?;
        self.accounts()
            .record_write(bucket.owner.as_deref(), size, 1);
        for old in &outcome.replaced {
            self.free_removed(Some(old)).await;
        }
        for part in &outcome.unused {
            self.free(Some(&part.layout)).await;
        }
        tracing::info!(bucket = %input.bucket, key = %input.key, upload_id = %input.upload_id, parts = md5s.len(), "multipart upload completed");
        let mut out = CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(etag(&object_etag)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            version_id: reported_version_id(&bucket, &version_id),
            server_side_encryption,
            checksum_type: fields.checksum_type.clone(),
            ..Default::default()
        };
        set_checksums!(out, fields);
        Ok(S3Response::new(out))
    }

    /// The answer of an earlier completion of this upload, when it made the key's latest
    /// version from exactly the parts `listed` names (same numbers and ETags, so the same
    /// multipart ETag): what S3 answers a retried CompleteMultipartUpload.
    async fn completed_before(
        &self,
        bucket: &crate::meta::Bucket,
        input: &CompleteMultipartUploadInput,
        listed: &[CompletedPart],
    ) -> S3Result<Option<CompleteMultipartUploadOutput>> {
        let (b, k) = (input.bucket.clone(), input.key.clone());
        let Some(latest) = self.meta(move |m| m.version(&b, &k, None)).await? else {
            return Ok(None);
        };
        if latest.delete_marker
            || latest.attrs.upload_id.as_deref() != Some(input.upload_id.as_str())
        {
            return Ok(None);
        }
        let sent: Vec<&str> = listed
            .iter()
            .filter_map(|p| p.e_tag.as_ref().map(|e| e.value().trim_matches('"')))
            .collect();
        if sent.len() != listed.len() || multipart_etag(&sent).as_deref() != Some(&latest.etag) {
            return Ok(None);
        }
        tracing::info!(bucket = %input.bucket, key = %input.key, upload_id = %input.upload_id, "multipart upload completed before; answering the retry as then");
        let fields = sums::object_fields(latest.attrs.checksum.as_ref());
        let mut out = CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(etag(&latest.etag)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            version_id: reported_version_id(bucket, &latest.version_id),
            server_side_encryption: headers::server_side_encryption(&latest),
            checksum_type: fields.checksum_type.clone(),
            ..Default::default()
        };
        set_checksums!(out, fields);
        Ok(Some(out))
    }

    pub(super) async fn do_abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let (b, k, u) = (
            input.bucket.clone(),
            input.key.clone(),
            input.upload_id.clone(),
        );
        let parts = self.meta(move |m| m.abort_upload(&b, &k, &u)).await?;
        for part in &parts {
            self.free(Some(&part.layout)).await;
        }
        tracing::info!(bucket = %input.bucket, key = %input.key, upload_id = %input.upload_id, parts = parts.len(), "multipart upload aborted");
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    pub(super) async fn do_list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let upload = self
            .require_upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let max = super::list::page_size(input.max_parts, MAX_LISTED, "max-parts")?;
        let after = input.part_number_marker.unwrap_or(0).max(0);
        let (b, k, u) = (
            input.bucket.clone(),
            input.key.clone(),
            input.upload_id.clone(),
        );
        let fetch = usize::try_from(max).unwrap_or(0) + 1;
        let mut parts = self
            .meta(move |m| m.parts(&b, &k, &u, after, fetch))
            .await?;
        let truncated = parts.len() == fetch;
        parts.truncate(fetch - 1);
        let next = parts.last().map(|p| p.part_number);
        let spec = upload.attrs.upload_checksum;
        Ok(S3Response::new(ListPartsOutput {
            checksum_algorithm: spec
                .map(|s| ChecksumAlgorithm::from(s.algorithm.name().to_owned())),
            checksum_type: spec.map(|s| ChecksumType::from(s.kind.name().to_owned())),
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            is_truncated: Some(truncated),
            max_parts: Some(max),
            part_number_marker: Some(after),
            next_part_number_marker: if truncated { next } else { None },
            storage_class: Some(StorageClass::from(upload.plan)),
            parts: Some(
                parts
                    .into_iter()
                    .map(|p| {
                        let mut listed = Part {
                            e_tag: Some(etag(&p.etag)),
                            last_modified: Some(timestamp(p.last_modified)),
                            part_number: Some(p.part_number),
                            size: Some(i64::try_from(p.size).unwrap_or(i64::MAX)),
                            ..Default::default()
                        };
                        set_checksums!(listed, named_fields(spec, &p.checksums, None));
                        listed
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    pub(super) async fn do_list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let max = super::list::page_size(input.max_uploads, MAX_LISTED, "max-uploads")?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let upload_id_marker = input.upload_id_marker.clone().unwrap_or_default();
        let (b, p, km, um) = (
            input.bucket.clone(),
            prefix.clone(),
            key_marker.clone(),
            upload_id_marker.clone(),
        );
        let d = input.delimiter.clone().filter(|d| !d.is_empty());
        let max_uploads = usize::try_from(max).unwrap_or(0);
        let page = self
            .meta(move |m| {
                m.uploads(
                    &b,
                    &UploadQuery {
                        prefix: &p,
                        delimiter: d.as_deref(),
                        key_marker: &km,
                        upload_id_marker: &um,
                        max_uploads,
                    },
                )
            })
            .await?;
        let (next_key, next_id) = match page.next {
            Some((k, u)) => (Some(k), (!u.is_empty()).then_some(u)),
            None => (None, None),
        };
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            is_truncated: Some(next_key.is_some()),
            key_marker: Some(key_marker),
            delimiter: input.delimiter,
            common_prefixes: Some(
                page.common_prefixes
                    .into_iter()
                    .map(|p| CommonPrefix { prefix: Some(p) })
                    .collect(),
            ),
            upload_id_marker: Some(upload_id_marker),
            max_uploads: Some(max),
            next_key_marker: next_key,
            next_upload_id_marker: next_id,
            prefix: Some(prefix),
            uploads: Some(
                page.uploads
                    .into_iter()
                    .map(|u| MultipartUpload {
                        initiated: Some(timestamp(u.initiated)),
                        key: Some(u.key),
                        storage_class: Some(StorageClass::from(u.plan)),
                        upload_id: Some(u.upload_id),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }
}

/// The checksum a completed upload's object gets from its parts' (see
/// [`checksum::multipart`]), after checking the part checksums the completion lists against
/// the stored ones. `None` when the upload named no algorithm and a part was stored before
/// the gateway kept checksums.
fn completed_checksum(
    upload: &Upload,
    chosen: &[&UploadPart],
    listed: &[CompletedPart],
    name: &str,
) -> S3Result<Option<ObjectChecksum>> {
    let spec = upload_checksum(upload);
    let explicit = upload.attrs.upload_checksum.is_some();
    for (p, part) in listed.iter().zip(chosen) {
        let n = part.part_number;
        let sent = sums::listed(p);
        for (a, v) in &sent {
            match part.checksums.get(a) {
                Some(ours) if sums::same(*a, v, ours) => {}
                Some(ours) => {
                    return Err(S3Error::with_message(
                        S3ErrorCode::InvalidPart,
                        format!("{name}: part {n} has {} checksum {ours}, not {v}", a.name()),
                    ));
                }
                None => {
                    return Err(S3Error::with_message(
                        S3ErrorCode::InvalidPart,
                        format!(
                            "{name}: part {n} was uploaded without a {} checksum",
                            a.name()
                        ),
                    ));
                }
            }
        }
        if explicit
            && spec.kind == checksum::Kind::Composite
            && !sent.iter().any(|(a, _)| *a == spec.algorithm)
        {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                format!(
                    "{name}: the upload was created with a {} checksum, so the completion must list each part's; it is missing for part {n}",
                    spec.algorithm.name()
                ),
            ));
        }
    }
    let mut values = Vec::with_capacity(chosen.len());
    for part in chosen {
        match part.checksums.get(&spec.algorithm) {
            Some(v) => values.push((v.as_str(), part.size)),
            None if explicit => {
                return Err(internal(format!(
                    "{name}: part {} has no {} checksum recorded",
                    part.part_number,
                    spec.algorithm.name()
                )));
            }
            None => return Ok(None),
        }
    }
    let value = checksum::multipart(spec.algorithm, spec.kind, &values)
        .map_err(|e| internal(format!("{name}: {e}")))?;
    Ok(Some(ObjectChecksum {
        algorithm: spec.algorithm,
        kind: spec.kind,
        value,
        parts: chosen
            .iter()
            .zip(&values)
            .map(|(p, (v, _))| PartChecksum {
                number: p.part_number,
                value: (*v).to_owned(),
            })
            .collect(),
    }))
}

/// Checks what a CompleteMultipartUpload says of the whole object (its checksum, checksum
/// type and `x-amz-mp-object-size`) against what the parts make.
fn check_whole_object(
    input: &CompleteMultipartUploadInput,
    ours: Option<&ObjectChecksum>,
    size: u64,
    name: &str,
) -> S3Result<()> {
    let invalid = |m: String| S3Error::with_message(S3ErrorCode::InvalidRequest, m);
    let sent = [
        (Algorithm::Crc32, input.checksum_crc32.as_deref()),
        (Algorithm::Crc32c, input.checksum_crc32c.as_deref()),
        (Algorithm::Crc64nvme, input.checksum_crc64nvme.as_deref()),
        (Algorithm::Sha1, input.checksum_sha1.as_deref()),
        (Algorithm::Sha256, input.checksum_sha256.as_deref()),
    ];
    for (a, v) in sent.into_iter().filter_map(|(a, v)| v.map(|v| (a, v))) {
        match ours {
            Some(c) if c.algorithm == a => {
                if !sums::same(a, v, &c.value) {
                    return Err(S3Error::with_message(
                        S3ErrorCode::BadDigest,
                        format!(
                            "{name}: the {} you specified ({v}) did not match the calculated checksum ({})",
                            a.name(),
                            c.header_value()
                        ),
                    ));
                }
            }
            _ => {
                return Err(invalid(format!(
                    "{name}: the completion sends a {} checksum of the object, but the object's checksum is {}",
                    a.name(),
                    ours.map_or("none", |c| c.algorithm.name())
                )));
            }
        }
    }
    if let Some(t) = &input.checksum_type
        && ours.is_none_or(|c| !c.kind.name().eq_ignore_ascii_case(t.as_str()))
    {
        return Err(invalid(format!(
            "{name}: x-amz-checksum-type {} is not the upload's ({})",
            t.as_str(),
            ours.map_or("none", |c| c.kind.name())
        )));
    }
    if let Some(declared) = input.mpu_object_size
        && u64::try_from(declared).ok() != Some(size)
    {
        return Err(invalid(format!(
            "{name}: x-amz-mp-object-size is {declared} but the parts listed hold {size} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{check_part_number, multipart_etag};

    #[test]
    fn part_numbers_outside_1_to_10000_are_invalid_arguments() {
        for n in [1, 5000, 10_000] {
            assert!(check_part_number(n).is_ok(), "{n}");
        }
        for n in [0, -1, 10_001, i32::MAX] {
            let e = check_part_number(n).unwrap_err();
            assert_eq!(e.code(), &s3s::S3ErrorCode::InvalidArgument, "{n}");
            assert!(
                e.message()
                    .unwrap_or_default()
                    .contains("between 1 and 10000")
            );
        }
    }

    #[test]
    fn multipart_etag_is_md5_of_binary_md5s_with_count() {
        // Known answer: two parts whose MD5s are those of "a" and "b".
        let a = "0cc175b9c0f1b6a831c399e269772661";
        let b = "92eb5ffee6ae2fec3ad71c777531578f";
        let mut raw = hex::decode(a).unwrap_or_default();
        raw.extend(hex::decode(b).unwrap_or_default());
        let expected = {
            use md5::Digest;
            hex::encode(md5::Md5::digest(&raw))
        };
        assert_eq!(multipart_etag(&[a, b]), Some(format!("{expected}-2")));
        assert_eq!(multipart_etag(&["zz"]), None);
    }
}
