//! Writing: a request body becomes a sealed, erasure-coded layout on the providers
//! placed by the plan's rule (or, for small objects where metadata is kept safely, one
//! sealed inline blob), then a committed version; and what an overwrite or delete frees.

use std::sync::Arc;

use futures::StreamExt;
use md5::{Digest, Md5};
use s3s::dto::StreamingBlob;

use super::budget::BufferBudget;
use super::{Node, Plan, now_ms};
use crate::datapath::checksum::{Algorithm, Hasher, Sums};
use crate::datapath::etag::{EtagError, EtagMd5};
use crate::datapath::stripes::{self, CustomerSealing, ObjectWriter, ShardBackend, WriteSpec};
use crate::error::{Error, Result, body_failed};
use crate::meta::{self, Bucket, NULL_VERSION, ObjectVersion, Versioning, WriteCondition};

pub fn random_uid() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    hex::encode(b)
}

pub struct Written {
    pub layout: crate::datapath::layout::Layout,
    pub size: u64,
    /// Hex MD5 of the bytes written.
    pub md5: String,
    /// The S3 checksums asked for, of the bytes written.
    pub checksums: Sums,
    /// Keeps the shards from garbage collection until the caller has recorded (or freed)
    /// them: dropped with the rest of this value.
    pub in_flight: Option<crate::node::inflight::WriteGuard>,
}

/// The largest object a single PUT or one multipart part may carry: S3's 5 GiB
/// ([`Node::store_upload`]).
pub const MAX_UPLOAD_SIZE: u64 = 5 << 30;

/// The refusal of an upload over `limit` bytes (`EntityTooLarge`, with S3's message).
fn too_large(limit: u64) -> Error {
    Error::EntityTooLarge(format!(
        "Your proposed upload exceeds the maximum allowed size ({limit} bytes in one PUT or \
         part; use a multipart upload for larger objects)"
    ))
}

/// An upload whose MD5 was lost fails (nothing is kept); it never happens but by a bug.
fn etag_lost(e: EtagError) -> Error {
    Error::internal(e.to_string())
}

/// The ETag of an upload whose chunks were all handed to `md5`.
async fn etag_of(md5: EtagMd5) -> Result<String> {
    md5.finalize().await.map(hex::encode).map_err(etag_lost)
}

/// A segment on its way to the providers, with the share of the upload budget it holds.
type BudgetedSegment = (Vec<u8>, tokio::sync::OwnedSemaphorePermit);

/// Cuts the body into segments and hands them over; returns the size, the MD5 (its chunks
/// queued in the shared lanes, the digest not taken yet) and the checksums (computed in the
/// same pass). A body of unknown length (`Transfer-Encoding: chunked`)
/// is cut the same way; one that grows past `limit` bytes fails with `EntityTooLarge`
/// before the segment that would pass it is handed over.
async fn cut_body(
    body: Option<StreamingBlob>,
    segment_size: usize,
    scheme: crate::datapath::layout::Scheme,
    budget: BufferBudget,
    mut sums: Hasher,
    tx: tokio::sync::mpsc::Sender<BudgetedSegment>,
    limit: u64,
) -> Result<(u64, EtagMd5, Sums)> {
    use s3s::stream::ByteStream;
    // The ETag's MD5, in lanes shared with the other uploads in flight.
    let mut md5 = crate::datapath::etag::Md5Lanes::shared().stream();
    let mut size = 0u64;
    let mut buf: Vec<u8> = Vec::new();
    let mut permit = None;
    let stopped = || Error::internal("storing the object failed");
    if let Some(mut body) = body {
        let declared = body.remaining_length().exact();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(body_failed)?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(too_large(limit));
            }
            md5.update(chunk.clone()).await.map_err(etag_lost)?;
            sums.update(&chunk);
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                if buf.capacity() == 0 {
                    // What this segment will hold: the rest of a body of known length.
                    let filled = usize::try_from(size).unwrap_or(usize::MAX) - rest.len();
                    let expected = declared.map_or(segment_size, |total| {
                        total.saturating_sub(filled).clamp(1, segment_size.max(1))
                    });
                    // The budget counts the whole stripe: the parity shards the segment
                    // is coded into are as much its memory as the data.
                    let stripe = crate::datapath::codec::stripe_bytes(scheme, expected);
                    permit = Some(budget.take(stripe).await?);
                    // Room for the tag and the shards' padding too: sealing and striping
                    // then work in this buffer without copying it.
                    buf.reserve_exact(crate::datapath::codec::stripe_capacity(scheme, expected));
                }
                let take = (segment_size - buf.len()).min(rest.len());
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if buf.len() == segment_size {
                    let held = permit.take().ok_or_else(stopped)?;
                    tx.send((std::mem::take(&mut buf), held))
                        .await
                        .map_err(|_| stopped())?;
                }
            }
        }
    }
    if !buf.is_empty() {
        let held = permit.take().ok_or_else(stopped)?;
        tx.send((buf, held)).await.map_err(|_| stopped())?;
    }
    Ok((size, md5, sums.finish()))
}

/// Reads the body and writes it segment by segment, reading the next segment
/// while the previous one is stored (at most three segments in memory);
/// aborts the writer on any error so no shards remain.
///
/// The ETag's digest is taken once the shards are stored: the body's chunks wait in the
/// shared MD5 lanes meanwhile and meet the chunks of the uploads stored at the same time
/// (`datapath::etag`), rather than each upload hashing its body alone as it arrives.
async fn write_body(
    mut writer: ObjectWriter,
    body: Option<StreamingBlob>,
    segment_size: usize,
    scheme: crate::datapath::layout::Scheme,
    budget: BufferBudget,
    sums: Hasher,
    limit: u64,
) -> Result<Written> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<BudgetedSegment>(1);
    let store = async {
        while let Some((segment, held)) = rx.recv().await {
            let written = writer.write_segment(segment).await;
            drop(held);
            if let Err(e) = written {
                rx.close();
                return Err(e);
            }
        }
        Ok(())
    };
    let (cut, stored) = tokio::join!(
        cut_body(body, segment_size, scheme, budget, sums, tx, limit),
        store
    );
    match (cut, stored) {
        (Ok((size, md5, checksums)), Ok(())) => match etag_of(md5).await {
            Ok(md5) => Ok(Written {
                layout: writer.finish(),
                size,
                md5,
                checksums,
                in_flight: None,
            }),
            Err(e) => {
                writer.abort().await;
                Err(e)
            }
        },
        (_, Err(e)) => {
            writer.abort().await;
            Err(Error::internal(format!("storing the object failed: {e}")))
        }
        (Err(e), Ok(())) => {
            writer.abort().await;
            Err(e)
        }
    }
}

/// The version id a new version of a key in `bucket` gets.
pub fn new_version_id(bucket: &Bucket) -> String {
    match bucket.versioning {
        Versioning::Enabled => random_uid(),
        Versioning::Unversioned | Versioning::Suspended => NULL_VERSION.to_string(),
    }
}

/// The version id to report to the client: none while versioning was never enabled.
pub fn reported_version_id(bucket: &Bucket, id: &str) -> Option<String> {
    (bucket.versioning != Versioning::Unversioned).then(|| id.to_string())
}

impl Node {
    /// The plan a storage class (or, without one, the bucket default) names.
    pub fn resolve_plan(&self, bucket: &Bucket, storage_class: Option<&str>) -> Result<Plan> {
        let default = || {
            bucket
                .default_plan
                .clone()
                .unwrap_or_else(|| self.default_plan.clone())
        };
        let plan_name = storage_class.map_or_else(default, str::to_owned);
        // Clients that always send STANDARD get the bucket's default plan.
        match self.plan(&plan_name) {
            Some(p) => Ok(p),
            None if plan_name == "STANDARD" => {
                let name = default();
                self.plan(&name).ok_or_else(|| {
                    Error::InvalidStorageClass(format!(
                        "the bucket's default plan {name:?} no longer exists"
                    ))
                })
            }
            None => Err(Error::InvalidStorageClass(format!(
                "no storage plan named {plan_name:?}"
            ))),
        }
    }

    /// Stores `body` (of `length` bytes when the caller knows it, as a copy does; else
    /// as the request declares) under `plan`, computing the S3 checksums of `algorithms`
    /// on the way. A body the plan keeps in metadata (at most `inlineUpTo`) is sealed
    /// whole into the layout, where metadata is kept as safely as shards; any other is
    /// striped onto providers ([`Node::store_striped`]).
    ///
    /// With `customer` (SSE-C) the data keys are wrapped for the customer's key, so the
    /// version reads back only with it.
    pub async fn store_body(
        &self,
        plan: &Plan,
        key: &str,
        body: Option<StreamingBlob>,
        length: Option<u64>,
        algorithms: &[Algorithm],
        customer: Option<&CustomerSealing>,
    ) -> Result<Written> {
        self.store_limited(plan, key, body, length, algorithms, u64::MAX, customer)
            .await
    }

    /// Stores a client's upload (a PUT's or a part's body) as [`Node::store_body`] does,
    /// refusing with `EntityTooLarge` a body over the upload limit ([`MAX_UPLOAD_SIZE`]):
    /// before anything is stored when its length is declared, else as soon as it grows past
    /// the limit, with nothing kept.
    pub async fn store_upload(
        &self,
        plan: &Plan,
        key: &str,
        body: Option<StreamingBlob>,
        algorithms: &[Algorithm],
        customer: Option<&CustomerSealing>,
    ) -> Result<Written> {
        self.store_limited(plan, key, body, None, algorithms, self.max_upload, customer)
            .await
    }

    #[allow(clippy::too_many_arguments)] // store_body and store_upload in one: each caller names what it limits
    async fn store_limited(
        &self,
        plan: &Plan,
        key: &str,
        body: Option<StreamingBlob>,
        length: Option<u64>,
        algorithms: &[Algorithm],
        limit: u64,
        customer: Option<&CustomerSealing>,
    ) -> Result<Written> {
        let sums = Hasher::new(algorithms.iter().copied());
        let declared = match (&body, length) {
            (_, Some(len)) => usize::try_from(len).ok(),
            (Some(b), None) => s3s::stream::ByteStream::remaining_length(b).exact(),
            (None, None) => Some(0),
        };
        if declared.is_some_and(|len| len as u64 > limit) {
            return Err(too_large(limit));
        }
        if let Some(len) = declared
            && len as u64 <= plan.inline_up_to
            && self.keeps_inline()
        {
            return self.store_inline(plan, body, len, sums, customer).await;
        }
        self.stripe_body(plan, key, body, sums, limit, customer)
            .await
    }

    /// Streams `body` into a fresh layout of shards under `plan`; on any error no shards
    /// remain.
    pub async fn store_striped(
        &self,
        plan: &Plan,
        key: &str,
        body: Option<StreamingBlob>,
    ) -> Result<Written> {
        self.stripe_body(plan, key, body, Hasher::default(), u64::MAX, None)
            .await
    }

    async fn stripe_body(
        &self,
        plan: &Plan,
        key: &str,
        body: Option<StreamingBlob>,
        sums: Hasher,
        limit: u64,
        customer: Option<&CustomerSealing>,
    ) -> Result<Written> {
        let segment_size = usize::try_from(plan.segment_size)
            .map_err(|_| Error::internal(format!("plan {}: segment size too large", plan.name)))?;
        // Shard ids name the installation first, so background garbage collection on a
        // provider shared with another installation only ever considers this one's shards.
        let uid = format!("{}_{}", self.master.installation(), random_uid());
        // Registered (and held in a shared store) before the first shard is stored,
        // released by the caller's `Written`.
        let in_flight = self.start_write(&uid).await?;
        let placement = self.place(plan, key, &uid)?;
        let writer = ObjectWriter::new(
            &self.master,
            WriteSpec {
                scheme: plan.scheme,
                encrypt: plan.encrypt,
                customer: customer.cloned(),
                segment_size: plan.segment_size,
                write_quorum: plan.write_quorum,
                placement,
                shard_prefix: uid,
            },
        )
        .map_err(|e| Error::internal(format!("cannot start the write: {e}")))?;

        // A spawned task runs to completion (or aborts cleanly) even if the
        // client goes away and this handler future is dropped.
        let mut written = tokio::spawn(write_body(
            writer,
            body,
            segment_size,
            plan.scheme,
            self.upload_budget.clone(),
            sums,
            limit,
        ))
        .await
        .map_err(|e| Error::internal(format!("the write task failed: {e}")))??;
        written.in_flight = Some(in_flight);
        Ok(written)
    }

    /// Reads a small body of `declared` bytes whole and seals it into an inline layout.
    async fn store_inline(
        &self,
        plan: &Plan,
        body: Option<StreamingBlob>,
        declared: usize,
        mut sums: Hasher,
        customer: Option<&CustomerSealing>,
    ) -> Result<Written> {
        let _held = self.upload_budget.take(declared).await?;
        let mut plain = Vec::with_capacity(declared);
        if let Some(mut body) = body {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(body_failed)?;
                if plain.len() + chunk.len() > declared {
                    return Err(Error::IncompleteBody(format!(
                        "the body is longer than the {declared} bytes announced"
                    )));
                }
                plain.extend_from_slice(&chunk);
            }
        }
        if plain.len() != declared {
            return Err(Error::IncompleteBody(format!(
                "the body ended after {} of the {declared} bytes announced",
                plain.len()
            )));
        }
        let md5 = hex::encode(Md5::digest(&plain));
        sums.update(&plain);
        let checksums = sums.finish();
        let size = plain.len() as u64;
        let layout = stripes::seal_inline(
            &self.master,
            plan.scheme,
            plan.encrypt,
            customer,
            plan.segment_size,
            plain,
        )
        .map_err(|e| Error::internal(format!("sealing the object failed: {e}")))?;
        Ok(Written {
            layout,
            size,
            md5,
            checksums,
            in_flight: None,
        })
    }

    /// Whether small objects may be kept in metadata now: only where metadata is kept as
    /// safely as shards are — a shared database, a metadata journal that has providers to
    /// hold it, or a store that is meant to be alone (`sublet dev`, one disk anyway).
    fn keeps_inline(&self) -> bool {
        self.metadata_suffices
            || self.meta.shared()
            || self
                .journal
                .as_ref()
                .is_some_and(|j| j.is_active() && j.has_holders())
    }

    /// Commits a version whose shards are written, freeing the shards of the
    /// version it replaces; on failure frees the new version's shards.
    pub async fn commit_version(&self, version: ObjectVersion) -> Result<()> {
        self.commit_version_if(version, None).await
    }

    /// [`commit_version`](Self::commit_version) when the key's latest version meets
    /// `condition` at commit time (If-Match / If-None-Match on PUT); on failure, the new
    /// version's shards are freed as for any failed commit.
    pub async fn commit_version_if(
        &self,
        version: ObjectVersion,
        condition: Option<WriteCondition>,
    ) -> Result<()> {
        let layout = version.layout.clone();
        let outcome = match self
            .meta(move |m| m.put_version_if(&version, condition.as_ref()))
            .await
        {
            Ok(o) => o,
            Err(e) => {
                if let Some(layout) = layout {
                    stripes::delete_shards(&layout, self.backend_for()).await;
                }
                return Err(e);
            }
        };
        for old in &outcome.replaced {
            self.free_removed(Some(old)).await;
        }
        Ok(())
    }

    /// [`commit_version_if`](Self::commit_version_if) for a client's write into a bucket
    /// of `owner` (`None`: the default user): refused with `QuotaExceeded`, its shards
    /// freed, when the owner's quota has no room for it; counted into the owner's usage
    /// once committed. A write counts whole (an overwrite too, until usage is recounted).
    pub async fn commit_version_for(
        &self,
        owner: Option<&str>,
        version: ObjectVersion,
        condition: Option<WriteCondition>,
    ) -> Result<()> {
        let size = version.size;
        if let Err(e) = self.accounts().check_quota(owner, size, 1) {
            if let Some(layout) = &version.layout {
                stripes::delete_shards(layout, self.backend_for()).await;
            }
            return Err(e);
        }
        self.commit_version_if(version, condition).await?;
        self.accounts().record_write(owner, size, 1);
        Ok(())
    }

    /// Frees the shards of `removed`, a version an overwrite or a delete took out of the
    /// metadata: now, or when the last read of it in this process ends. With a store other
    /// gateway replicas share, whose reads this process cannot see, the shards are retired
    /// instead and freed [`super::retire::RETIRE_DELAY_MS`] later.
    ///
    /// With a metadata journal, only once the removal is in it: until then a recovered
    /// store would still name the removed version, whose shards must then still be there
    /// (when the journal cannot be stored, garbage collection frees them later).
    pub async fn free_removed(&self, removed: Option<&ObjectVersion>) {
        let Some((v, layout)) = removed.and_then(|v| v.layout.as_ref().map(|l| (v, l))) else {
            return;
        };
        if let Some(journal) = &self.journal
            && let Err(e) = journal.barrier().await
        {
            tracing::warn!(bucket = %v.bucket, key = %v.key, error = %e, "the removal is not in the metadata journal yet; its shards are left to garbage collection");
            return;
        }
        if self.inflight.defer(v, layout) {
            return;
        }
        if self.meta.shared() {
            self.retire(layout.clone());
        } else {
            self.free(Some(layout)).await;
        }
    }

    /// Deletes a layout's shards (best effort).
    pub async fn free(&self, layout: Option<&crate::datapath::layout::Layout>) {
        if let Some(layout) = layout {
            stripes::delete_shards(layout, self.backend_for()).await;
        }
    }
}

/// What a delete did, as S3 reports it.
pub struct Deleted {
    pub version_id: Option<String>,
    pub delete_marker: bool,
}

impl Node {
    /// Removes one version for good, unless object lock keeps it: the one way any version
    /// leaves the metadata (S3 deletes, lifecycle expiry). `bypass` = the caller may and
    /// asked to bypass GOVERNANCE retention; a legal hold or COMPLIANCE retention keeps the
    /// version from everyone. Returns the version removed (`None`: there was none).
    pub async fn remove_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        bypass: bool,
    ) -> Result<Option<ObjectVersion>> {
        let (b, k, id) = (bucket.to_owned(), key.to_owned(), version_id.to_owned());
        let removed = self
            .meta(move |m| {
                let Some(v) = m.version(&b, &k, Some(&id))? else {
                    return Ok(None);
                };
                if let Err(reason) = v.attrs.lock.check_removal(now_ms(), bypass) {
                    return Err(meta::MetaError::ObjectLocked {
                        bucket: b,
                        key: k,
                        version_id: id,
                        reason,
                    });
                }
                m.delete_version(&b, &k, &id)
            })
            .await?;
        self.free_removed(removed.as_ref()).await;
        Ok(removed)
    }

    /// Deletes a version for good (with `version_id`, subject to object lock: see
    /// [`Node::remove_version`]), or the key: unversioned buckets drop the object,
    /// versioned ones stack a delete marker ("null" while suspended, replacing the null
    /// version). Deleting what is missing succeeds, as in S3.
    pub async fn delete_key(
        &self,
        bucket: &meta::Bucket,
        key: &str,
        version_id: Option<&str>,
        bypass_governance: bool,
    ) -> Result<Deleted> {
        let (b, k) = (bucket.name.clone(), key.to_string());
        let marker_id = match (version_id, bucket.versioning) {
            (Some(id), _) => {
                let removed = self
                    .remove_version(&bucket.name, key, id, bypass_governance)
                    .await?;
                let delete_marker = removed.as_ref().is_some_and(|v| v.delete_marker);
                return Ok(Deleted {
                    version_id: version_id.map(str::to_string),
                    delete_marker,
                });
            }
            (None, Versioning::Unversioned) => {
                let latest = self.meta(move |m| m.version(&b, &k, None)).await?;
                if let Some(latest) = latest {
                    self.remove_version(&bucket.name, key, &latest.version_id, bypass_governance)
                        .await?;
                }
                return Ok(Deleted {
                    version_id: None,
                    delete_marker: false,
                });
            }
            (None, Versioning::Enabled) => random_uid(),
            (None, Versioning::Suspended) => {
                // The marker replaces the null version, which object lock may keep.
                let (b, k) = (bucket.name.clone(), key.to_string());
                let null = self
                    .meta(move |m| m.version(&b, &k, Some(NULL_VERSION)))
                    .await?;
                if let Some(null) = null
                    && let Err(reason) = null.attrs.lock.check_removal(now_ms(), bypass_governance)
                {
                    return Err(meta::MetaError::ObjectLocked {
                        bucket: bucket.name.clone(),
                        key: key.to_string(),
                        version_id: NULL_VERSION.to_string(),
                        reason,
                    }
                    .into());
                }
                NULL_VERSION.to_string()
            }
        };
        let marker = ObjectVersion {
            bucket: bucket.name.clone(),
            key: key.to_string(),
            version_id: marker_id.clone(),
            delete_marker: true,
            size: 0,
            etag: String::new(),
            content_type: None,
            user_metadata: Default::default(),
            last_modified: now_ms(),
            plan: String::new(),
            layout: None,
            attrs: Default::default(),
        };
        self.commit_version(marker).await?;
        Ok(Deleted {
            version_id: reported_version_id(bucket, &marker_id),
            delete_marker: true,
        })
    }
}

impl Node {
    /// The providers for shards 0..width of a new object under `plan`; 503 naming the
    /// unmet rule when the plan cannot be placed on today's healthy providers.
    pub fn place(&self, plan: &Plan, key: &str, uid: &str) -> Result<Vec<Arc<dyn ShardBackend>>> {
        let topology = self.topology();
        let rule = topology.rule(&plan.name);
        let candidates = topology.candidates(self.health());
        // A provider must at least hold its shard of one segment.
        let need = plan.segment_size.div_ceil(plan.scheme.needed() as u64);
        let width = plan.scheme.width();
        let chosen = crate::datapath::placement::choose(
            &plan.name,
            &rule,
            width,
            &candidates,
            need,
            key,
            uid,
        )
        .map_err(|e| Error::Unavailable(e.0))?;
        chosen
            .into_iter()
            .map(|i| {
                let node = &candidates[i].site.node_id;
                self.backend(node)
                    .ok_or_else(|| Error::internal(format!("provider {node} has no client")))
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::datapath::layout::Scheme;

    /// A body of `chunks` chunks of `size` bytes whose length is not known in advance (as
    /// with `Transfer-Encoding: chunked`).
    fn unsized_body(chunks: usize, size: usize) -> StreamingBlob {
        let items = (0..chunks)
            .map(move |i| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![(i % 251) as u8; size])));
        StreamingBlob::wrap(futures::stream::iter(items))
    }

    /// Cuts `body` into 1000-byte segments under `limit`: what it returned, and the sizes
    /// of the segments handed over.
    async fn cut(body: StreamingBlob, limit: u64) -> (Result<(u64, String, Sums)>, Vec<usize>) {
        use s3s::stream::ByteStream;
        assert!(body.remaining_length().exact().is_none());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<BudgetedSegment>(64);
        let scheme = Scheme::Erasure { data: 2, parity: 1 };
        let done = cut_body(
            Some(body),
            1000,
            scheme,
            BufferBudget::new(crate::node::budget::UPLOAD_BUDGET_BYTES),
            Hasher::default(),
            tx,
            limit,
        )
        .await;
        let mut segments = Vec::new();
        while let Some((segment, _held)) = rx.recv().await {
            segments.push(segment.len());
        }
        // The digest is taken after the segments are stored, as `write_body` does.
        let done = match done {
            Ok((size, md5, sums)) => etag_of(md5).await.map(|md5| (size, md5, sums)),
            Err(e) => Err(e),
        };
        (done, segments)
    }

    #[tokio::test]
    async fn a_segment_in_flight_holds_its_parity_in_the_upload_budget() {
        // 128 KiB segments of 4+2 are 192 KiB stripes: a 256 KiB budget holds one of them,
        // though it would hold two segments' data alone.
        let segment = 128 << 10;
        let scheme = Scheme::Erasure { data: 4, parity: 2 };
        assert!(crate::datapath::codec::stripe_bytes(scheme, segment) > 3 * (64 << 10));
        let budget = BufferBudget::new(256 << 10);
        let body = StreamingBlob::from(s3s::Body::from(bytes::Bytes::from(vec![1u8; 2 * segment])));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<BudgetedSegment>(64);
        let cutting = tokio::spawn(cut_body(
            Some(body),
            segment,
            scheme,
            budget.clone(),
            Hasher::default(),
            tx,
            u64::MAX,
        ));
        let (first, held) = rx.recv().await.unwrap();
        assert_eq!(first.len(), segment);
        let wait = std::time::Duration::from_millis(100);
        assert!(
            tokio::time::timeout(wait, rx.recv()).await.is_err(),
            "a second stripe fit in a budget of one"
        );
        // Once the first is stored, the second goes on.
        drop(held);
        let (second, _held) = rx.recv().await.unwrap();
        assert_eq!(second.len(), segment);
        assert_eq!(cutting.await.unwrap().unwrap().0, 2 * segment as u64);
    }

    #[tokio::test]
    async fn bodies_of_unknown_length_are_cut_into_whole_segments() {
        let (done, segments) = cut(unsized_body(7, 300), u64::MAX).await;
        let (size, md5, _) = done.unwrap();
        assert_eq!(size, 2100);
        assert_eq!(segments, [1000, 1000, 100]);
        let whole: Vec<u8> = (0..7).flat_map(|i| vec![i as u8; 300]).collect();
        assert_eq!(md5, hex::encode(Md5::digest(&whole)));
        // Exactly at the limit is fine.
        let (done, _) = cut(unsized_body(7, 300), 2100).await;
        assert_eq!(done.unwrap().0, 2100);
    }

    #[tokio::test]
    async fn a_body_growing_past_the_limit_fails_before_its_last_segment_is_handed_over() {
        let (done, segments) = cut(unsized_body(7, 300), 2099).await;
        let err = done.unwrap_err();
        assert!(matches!(err, Error::EntityTooLarge(_)), "{err:?}");
        assert_eq!(err.s3_code(), s3s::S3ErrorCode::EntityTooLarge);
        assert!(err.message().contains("2099 bytes"), "{}", err.message());
        // The one full segment of the first 1800 bytes went on before the body grew too
        // large (its writer aborts it: no shards remain, as with any failed body); the
        // 800 bytes after it never did.
        assert_eq!(segments, [1000]);
        // Far past the limit: refused at the first chunk over it, the rest never read.
        let (done, segments) = cut(unsized_body(1_000_000, 1000), 5000).await;
        assert!(matches!(done, Err(Error::EntityTooLarge(_))));
        assert_eq!(segments, [1000; 5]);
    }
}
