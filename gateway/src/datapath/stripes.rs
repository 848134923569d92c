//! Writing and reading object versions as sealed, striped segments on a
//! placement of shard backends (providers), with write quorum and read fallback.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::join_all;
use futures::stream::FuturesUnordered;

use crate::datapath::codec::{self, CodecError, CustomerKey, CustomerSeal, DataKey, MasterKey};

tokio::task_local! {
    /// Set around a read of a shard whose length the metadata records: a backend that
    /// buffers what a provider streams (the provider backend) stops at that many bytes, so
    /// a provider streaming junk without end costs a bounded buffer.
    pub static EXPECTED_LEN: u64;
    /// Set (true) around a read of a whole shard whose bytes the caller authenticates
    /// itself: a shard an encrypted segment is decoded from (the data shards, or a parity
    /// shard a hedge asked for), which AES-GCM's tag covers and which is hashed when the
    /// tag fails. A provider backend then asks the provider to skip its
    /// own hash check (`skip_hash_check`); every other read, audits and scrubs included,
    /// keeps it.
    pub static AUTHENTICATED_READ: bool;
}
use crate::datapath::layout::{Encryption, Layout, Scheme, Segment, ShardLocation};

/// Why a shard backend refused or failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

impl BackendError {
    /// The provider answered that it has no such shard, or that its copy is corrupt: the
    /// shard is gone (as opposed to a provider that did not answer).
    pub fn shard_gone(&self) -> bool {
        self.0.contains("NotFound") || self.0.contains("DataLoss")
    }

    /// The provider answered an audit with bytes that do not verify.
    pub fn audit_failed(&self) -> bool {
        self.0.contains("AuditFailed")
    }

    /// The provider acknowledged a write with a hash other than that of the bytes it was
    /// sent (see [`put_shard`]): it may hold anything under the shard's id.
    pub fn hash_mismatch(&self) -> bool {
        self.0.contains("HashMismatch")
    }
}

/// Told about shards a read found gone or corrupt: (segment, shard index).
pub type BadShardReport = Arc<dyn Fn(usize, usize) + Send + Sync>;

/// One place shards can be written to and read from: a provider, seen from the gateway.
///
/// Every provider is an adversary, so what a backend answers about a write is never the
/// record of it. Shards are written through [`put_shard`], never by calling
/// [`ShardBackend::put`] directly: it hashes the bytes, hands the hash to the backend
/// and refuses an acknowledgement of any other hash, and the hash it returns (the one
/// layouts, journals and manifests record) is the one the gateway computed.
#[async_trait]
pub trait ShardBackend: Send + Sync {
    /// The provider's node id, recorded in layouts.
    fn node_id(&self) -> &str;
    /// Stores a shard durably and returns the BLAKE3 hash the far side acknowledged.
    ///
    /// `hash` is the BLAKE3 of `data`, computed by the caller ([`put_shard`]). A backend
    /// whose far side can check it sends it along (a provider then refuses to store bytes
    /// that hash otherwise, so a shard damaged in transit is never stored); one that cannot
    /// (a cloud bucket) still stores `data` and answers `hash` when the store succeeded. A
    /// wrapper passes `hash` on unchanged and may compare the answer itself
    /// ([`check_acknowledged`]) to count a liar as failed. Call through [`put_shard`].
    async fn put(
        &self,
        shard_id: &str,
        data: Bytes,
        hash: &[u8; 32],
    ) -> Result<[u8; 32], BackendError>;
    async fn get(&self, shard_id: &str) -> Result<Bytes, BackendError>;
    async fn delete(&self, shard_id: &str) -> Result<(), BackendError>;
    /// Proves the provider holds bytes `[offset, offset + len)` of a shard whose BLAKE3 is
    /// `hash`. A provider that answers with bytes that do not verify fails with an error
    /// starting `AuditFailed`. This default reads the whole shard.
    async fn audit(
        &self,
        shard_id: &str,
        offset: u64,
        len: u64,
        hash: &[u8; 32],
    ) -> Result<(), BackendError> {
        let _ = (offset, len);
        let data = self.get(shard_id).await?;
        if blake3::hash(&data).as_bytes() == hash {
            Ok(())
        } else {
            Err(BackendError(format!(
                "AuditFailed: shard {shard_id} on {} does not match its hash",
                self.node_id()
            )))
        }
    }
    /// Every stored shard with when it was stored (Unix seconds), for garbage collection;
    /// `None` when this backend cannot list.
    async fn list(&self) -> Result<Option<Vec<(String, i64)>>, BackendError> {
        Ok(None)
    }
}

/// Writes one shard to `backend`: the one way the gateway writes shards (objects, parts,
/// copies, repair, re-encoding, transitions, snapshots and their manifests, the journal).
///
/// Hashes `data` with BLAKE3, sends the hash along as the expected one, and fails (an
/// error starting `HashMismatch`, naming the provider and the shard) when the backend
/// acknowledges any other hash: the write then counts as failed on that backend, like any
/// failed put. Returns the hash the gateway computed, which is what gets recorded.
pub async fn put_shard(
    backend: &dyn ShardBackend,
    shard_id: &str,
    data: Bytes,
) -> Result<[u8; 32], BackendError> {
    let sent = *blake3::hash(&data).as_bytes();
    let acked = backend.put(shard_id, data, &sent).await?;
    check_acknowledged(backend.node_id(), shard_id, &sent, &acked)?;
    Ok(sent)
}

/// `Ok` when a backend acknowledged writing shard `shard_id` with the hash of the bytes it
/// was sent; otherwise the `HashMismatch` error [`put_shard`] fails with.
pub fn check_acknowledged(
    node_id: &str,
    shard_id: &str,
    sent: &[u8; 32],
    acked: &[u8; 32],
) -> Result<(), BackendError> {
    if sent == acked {
        Ok(())
    } else {
        Err(BackendError(format!(
            "HashMismatch: provider {node_id} acknowledged shard {shard_id} with BLAKE3 {} but the gateway sent bytes hashing to {}; the shard does not count as stored there",
            hex::encode(acked),
            hex::encode(sent)
        )))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "segment {segment}: only {acked} of {width} shards were stored durably, the plan needs {quorum}; nothing was committed"
    )]
    Quorum {
        segment: u64,
        acked: usize,
        width: usize,
        quorum: usize,
    },
    #[error("placement has {got} providers but the scheme needs {width}")]
    Placement { got: usize, width: usize },
    #[error("segment {segment} is unreadable: {source}")]
    Unreadable { segment: u64, source: CodecError },
    #[error(
        "the metadata holds {held} bytes of this small object but records {recorded}; the metadata is corrupt"
    )]
    InlineMismatch { held: u64, recorded: u64 },
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// A customer's key (SSE-C) a new version's data keys are wrapped for, and the seal that
/// will recognise it (one seal for every part of a multipart upload).
#[derive(Clone, Debug)]
pub struct CustomerSealing {
    pub key: CustomerKey,
    pub seal: CustomerSeal,
}

impl CustomerSealing {
    /// `key` with a fresh seal.
    pub fn new(key: CustomerKey) -> Result<Self, CodecError> {
        let seal = key.new_seal()?;
        Ok(Self { key, seal })
    }
}

/// How one object version is written: scheme, placement and policy.
pub struct WriteSpec {
    pub scheme: Scheme,
    pub encrypt: bool,
    /// The customer's key (SSE-C) the data key is wrapped for instead of the master key
    /// alone; implies encryption whatever `encrypt` says.
    pub customer: Option<CustomerSealing>,
    pub segment_size: u64,
    /// Acknowledged shards needed per segment before the version may commit.
    pub write_quorum: usize,
    /// Shard `i` of every segment goes to `placement[i]`.
    pub placement: Vec<Arc<dyn ShardBackend>>,
    /// Unique prefix for this version's shard ids (e.g. a random version uid).
    pub shard_prefix: String,
}

/// Streams segments of one version out to its placement.
pub struct ObjectWriter {
    spec: WriteSpec,
    key: Option<DataKey>,
    nonce_prefix: Vec<u8>,
    layout: Layout,
}

impl ObjectWriter {
    pub fn new(master: &MasterKey, spec: WriteSpec) -> Result<Self, DataError> {
        let width = spec.scheme.width();
        if spec.placement.len() != width {
            return Err(DataError::Placement {
                got: spec.placement.len(),
                width,
            });
        }
        let (key, encryption, nonce_prefix) =
            new_encryption(master, spec.encrypt, spec.customer.as_ref())?;
        let layout = Layout {
            scheme: spec.scheme,
            encryption,
            segment_size: spec.segment_size,
            segments: Vec::new(),
            inline: None,
            parts: Vec::new(),
        };
        Ok(Self {
            spec,
            key,
            nonce_prefix,
            layout,
        })
    }

    /// Seals, stripes and stores one segment (at most `segment_size` bytes).
    /// Shards that fail (including acknowledgements of another hash, see [`put_shard`]) are
    /// recorded as missing, for repair, as long as the quorum holds; a stored shard's
    /// recorded hash is always the one the gateway computed.
    pub async fn write_segment(&mut self, plain: Vec<u8>) -> Result<(), DataError> {
        let index = self.layout.segments.len() as u64;
        let plain_length = plain.len() as u64;
        let mut sealed = plain;
        if let Some(key) = &self.key {
            key.seal(&self.nonce_prefix, index, &mut sealed)?;
        }
        let sealed_length = sealed.len() as u64;
        let shards = codec::encode_stripe_owned(self.spec.scheme, sealed)?;
        let writes = shards.into_iter().enumerate().map(|(i, shard)| {
            let backend = Arc::clone(&self.spec.placement[i]);
            let shard_id = format!("{}.{index}.{i}", self.spec.shard_prefix);
            async move {
                let length = shard.len() as u64;
                match put_shard(backend.as_ref(), &shard_id, shard).await {
                    Ok(hash) => ShardLocation {
                        provider: backend.node_id().to_string(),
                        shard_id,
                        hash: hex::encode(hash),
                        length,
                    },
                    Err(e) => {
                        tracing::warn!(provider = backend.node_id(), shard_id, error = %e, "shard write failed");
                        ShardLocation {
                            provider: String::new(),
                            shard_id,
                            hash: String::new(),
                            length,
                        }
                    }
                }
            }
        });
        let locations = join_all(writes).await;
        let acked = locations.iter().filter(|l| !l.is_missing()).count();
        let segment = Segment {
            plain_length,
            sealed_length,
            shards: locations,
        };
        // Record it either way, so `abort` can clean up what did land.
        self.layout.segments.push(segment);
        if acked < self.spec.write_quorum {
            return Err(DataError::Quorum {
                segment: index,
                acked,
                width: self.spec.scheme.width(),
                quorum: self.spec.write_quorum,
            });
        }
        Ok(())
    }

    /// The finished layout, ready to commit to metadata.
    pub fn finish(self) -> Layout {
        self.layout
    }

    /// Deletes every shard written so far (a failed or abandoned upload).
    pub async fn abort(self) {
        let backends = self.spec.placement;
        delete_shards(&self.layout, |node| {
            backends.iter().find(|b| b.node_id() == node).cloned()
        })
        .await;
    }
}

/// A fresh data key (wrapped by `master`, or for the customer's key) and nonce prefix, or
/// none without encryption.
fn new_encryption(
    master: &MasterKey,
    encrypt: bool,
    customer: Option<&CustomerSealing>,
) -> Result<(Option<DataKey>, Encryption, Vec<u8>), DataError> {
    let (key, wrapped) = match customer {
        Some(c) => master.new_customer_data_key(&c.key)?,
        None if encrypt => master.new_data_key()?,
        None => return Ok((None, Encryption::None, Vec::new())),
    };
    let prefix = DataKey::new_nonce_prefix()?.to_vec();
    let enc = Encryption::Aes256Gcm {
        wrapped_key: wrapped,
        nonce_prefix: prefix.clone(),
        customer: customer.map(|c| c.seal.clone()),
    };
    Ok((Some(key), enc, prefix))
}

/// Seals a whole small object into a layout that keeps it in metadata (`inline`): one
/// segment, no shards, sealed like a striped segment 0 would be under its own data key.
pub fn seal_inline(
    master: &MasterKey,
    scheme: Scheme,
    encrypt: bool,
    customer: Option<&CustomerSealing>,
    segment_size: u64,
    plain: Vec<u8>,
) -> Result<Layout, DataError> {
    let (key, encryption, nonce_prefix) = new_encryption(master, encrypt, customer)?;
    let plain_length = plain.len() as u64;
    let mut sealed = plain;
    if let Some(key) = &key {
        key.seal(&nonce_prefix, 0, &mut sealed)?;
    }
    Ok(Layout {
        scheme,
        encryption,
        segment_size,
        segments: vec![Segment {
            plain_length,
            sealed_length: sealed.len() as u64,
            shards: Vec::new(),
        }],
        inline: Some(sealed),
        parts: Vec::new(),
    })
}

/// Best-effort removal of a layout's shards; what fails is left to garbage collection.
pub async fn delete_shards(
    layout: &Layout,
    backend_for: impl Fn(&str) -> Option<Arc<dyn ShardBackend>>,
) {
    let deletes = layout.shards().filter(|s| !s.is_missing()).map(|s| {
        let backend = backend_for(&s.provider);
        async move {
            if let Some(b) = backend
                && let Err(e) = b.delete(&s.shard_id).await
            {
                tracing::warn!(provider = %s.provider, shard_id = %s.shard_id, error = %e, "shard delete failed");
            }
        }
    });
    join_all(deletes).await;
}

/// Reads segments of a version back, verifying every shard against its recorded hash.
pub struct ObjectReader {
    layout: Layout,
    key: Option<DataKey>,
    hedge_after: std::time::Duration,
    retry_wait: std::time::Duration,
    report: Option<BadShardReport>,
}

/// How long a segment read waits on its outstanding shard requests before it also asks
/// the next provider of the stripe (a parity shard) — a hedge against a slow provider.
pub const HEDGE_AFTER: std::time::Duration = std::time::Duration::from_millis(800);

/// How long a segment read that failed authentication waits for each further shard of the
/// segment it asks for (see [`ObjectReader::read_segment`]).
pub const RETRY_FETCH_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Most combinations of shards one segment read tries when its first decode fails
/// authentication: every combination of a 10+4 stripe missing none is C(14,10) = 1001
/// decodes, so wide stripes with several bad shards give up rather than decode for minutes.
pub const MAX_COMBINATIONS: usize = 1024;

impl ObjectReader {
    /// A reader of a layout whose data key the master key alone unwraps; fails on one
    /// encrypted with a customer's key (SSE-C).
    pub fn new(master: &MasterKey, layout: Layout) -> Result<Self, DataError> {
        Self::with_customer_key(master, layout, None)
    }

    /// A reader of `layout` given the customer's key of the request (SSE-C): required
    /// when the layout's data key is wrapped for one, and then it must be that key.
    pub fn with_customer_key(
        master: &MasterKey,
        layout: Layout,
        customer: Option<&CustomerKey>,
    ) -> Result<Self, DataError> {
        let key = match (&layout.encryption, customer) {
            (Encryption::None, _) => None,
            (
                Encryption::Aes256Gcm {
                    wrapped_key,
                    customer: None,
                    ..
                },
                _,
            ) => Some(master.unwrap_data_key(wrapped_key)?),
            (
                Encryption::Aes256Gcm {
                    customer: Some(_), ..
                },
                None,
            ) => return Err(CodecError::CustomerKeyRequired.into()),
            (
                Encryption::Aes256Gcm {
                    wrapped_key,
                    customer: Some(seal),
                    ..
                },
                Some(given),
            ) => {
                if !given.matches(seal) {
                    return Err(CodecError::WrongCustomerKey.into());
                }
                Some(master.unwrap_customer_data_key(wrapped_key, given)?)
            }
        };
        Ok(Self {
            layout,
            key,
            hedge_after: HEDGE_AFTER,
            retry_wait: RETRY_FETCH_WAIT,
            report: None,
        })
    }

    /// Changes the hedge delay ([`HEDGE_AFTER`] by default).
    pub fn with_hedge_after(mut self, after: std::time::Duration) -> Self {
        self.hedge_after = after;
        self
    }

    /// Changes how long a read that failed authentication waits for each further shard
    /// ([`RETRY_FETCH_WAIT`] by default).
    pub fn with_retry_wait(mut self, wait: std::time::Duration) -> Self {
        self.retry_wait = wait;
        self
    }

    /// Calls `report` for every shard a read finds corrupt or gone, so it gets repaired.
    pub fn with_bad_shard_report(mut self, report: BadShardReport) -> Self {
        self.report = Some(report);
        self
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Fetches, checks, decodes and decrypts segment `index`. Reads the data shards first
    /// and falls back to parity shards for any that fail or lie.
    ///
    /// An encrypted segment's shards are not hashed on the way in: AES-GCM authenticates
    /// the decoded segment as a whole, so a segment that opens is the one written, whatever
    /// the providers sent. Only when it does not open (or the shards do not decode) are the
    /// shards checked against their recorded hashes, the bad ones reported and replaced by
    /// others of the stripe. An unencrypted segment's shards are checked as they arrive.
    ///
    /// When the shards match their hashes but the segment fails authentication anyway, asks
    /// for the rest of the stripe and tries other combinations of shards (any `needed` of
    /// them decode); the shards that disagree with the one that opens are reported as bad.
    /// Fails only when no combination opens.
    pub async fn read_segment(
        &self,
        index: usize,
        backend_for: impl Fn(&str) -> Option<Arc<dyn ShardBackend>>,
    ) -> Result<Vec<u8>, DataError> {
        let segment_no = index as u64;
        let Some(segment) = self.layout.segments.get(index) else {
            return Err(DataError::Unreadable {
                segment: segment_no,
                source: CodecError::NotEnoughShards {
                    needed: self.layout.scheme.needed(),
                    available: 0,
                },
            });
        };
        if let Some(sealed) = &self.layout.inline {
            return self.open_inline(segment_no, segment, sealed);
        }
        let width = segment.shards.len();
        let mut got: Vec<Option<Bytes>> = vec![None; width];
        let mut asked = vec![false; width];
        let sealed_len = usize::try_from(segment.sealed_length).unwrap_or(usize::MAX);
        let unreadable = |source| DataError::Unreadable {
            segment: segment_no,
            source,
        };
        let Some(key) = self.sealing_key() else {
            self.gather(index, segment, &mut got, &mut asked, true, &backend_for)
                .await;
            return codec::decode_stripe(self.layout.scheme, &got, sealed_len).map_err(unreadable);
        };
        // Unchecked shards: the tag is the check.
        self.gather(index, segment, &mut got, &mut asked, false, &backend_for)
            .await;
        let first = match codec::decode_stripe(self.layout.scheme, &got, sealed_len) {
            Ok(mut buf) => match key.0.open(key.1, segment_no, &mut buf) {
                Ok(()) => return Ok(buf),
                Err(e @ CodecError::Authentication { .. }) => e,
                Err(e) => return Err(unreadable(e)),
            },
            // Too few shards arrived at all: checking them cannot help.
            Err(e @ CodecError::NotEnoughShards { .. }) => return Err(unreadable(e)),
            // Shards of the wrong lengths, say: they are checked below like a failed open.
            Err(e) => e,
        };
        // Some shard is not what was written: find it by the recorded hashes, report it,
        // and read around it with checked shards.
        let mut bad = 0usize;
        for (i, slot) in got.iter_mut().enumerate() {
            if let Some(bytes) = slot
                && !matches_recorded(bytes, &segment.shards[i])
            {
                let loc = &segment.shards[i];
                tracing::warn!(provider = %loc.provider, shard_id = %loc.shard_id, segment = segment_no, "shard failed its hash check");
                if let Some(report) = &self.report {
                    report(index, i);
                }
                *slot = None;
                bad += 1;
            }
        }
        if bad > 0 {
            self.gather(index, segment, &mut got, &mut asked, true, &backend_for)
                .await;
            match codec::decode_stripe(self.layout.scheme, &got, sealed_len) {
                Ok(mut buf) => match key.0.open(key.1, segment_no, &mut buf) {
                    Ok(()) => return Ok(buf),
                    Err(CodecError::Authentication { .. }) => {}
                    Err(e) => return Err(unreadable(e)),
                },
                Err(e) => return Err(unreadable(e)),
            }
        }
        // Every shard matched its recorded hash, yet the segment does not open: a recorded
        // hash or a shard is wrong in a way the hash cannot tell. Other shards of the
        // stripe may still open it.
        tracing::warn!(
            segment = segment_no,
            "segment failed authentication although its shards matched their hashes; trying other shards"
        );
        let source = match first {
            e @ CodecError::Authentication { .. } => e,
            _ => CodecError::Authentication {
                segment: segment_no,
            },
        };
        self.open_from_other_shards(index, segment, got, &backend_for)
            .await
            .ok_or(DataError::Unreadable {
                segment: segment_no,
                source,
            })
    }

    /// Fetches shards of segment `index` not yet `asked` for, in stripe order (data shards
    /// first means no decoding work when everything is healthy), until `got` holds
    /// `needed` of them or no provider is left to ask. Asks for exactly as many as are
    /// missing; each failure, and each `hedge_after` without an answer, asks one more
    /// provider. The first good shards win; slower requests are dropped (cancelled).
    /// `check`: a shard that does not match its recorded hash counts as failed (and is
    /// reported); otherwise whatever arrives is taken as it is.
    async fn gather(
        &self,
        index: usize,
        segment: &Segment,
        got: &mut [Option<Bytes>],
        asked: &mut [bool],
        check: bool,
        backend_for: &impl Fn(&str) -> Option<Arc<dyn ShardBackend>>,
    ) {
        let needed = self.layout.scheme.needed();
        let mut good = got.iter().filter(|s| s.is_some()).count();
        if good >= needed {
            return;
        }
        let mut candidates = (0..segment.shards.len())
            .filter(|&i| !asked[i])
            .filter_map(|i| {
                let loc = &segment.shards[i];
                let backend = (!loc.is_missing())
                    .then(|| backend_for(&loc.provider))
                    .flatten()?;
                Some((i, loc, backend))
            })
            .collect::<Vec<_>>()
            .into_iter();
        let report = self.report.as_ref();
        let mut pending = FuturesUnordered::new();
        let mut fetch = |(i, loc, backend)| {
            asked[i] = true;
            fetch_shard(index, i, loc, backend, report, check)
        };
        pending.extend(candidates.by_ref().take(needed - good).map(&mut fetch));
        while good < needed && !pending.is_empty() {
            let hedge = tokio::time::sleep(self.hedge_after);
            tokio::select! {
                Some((i, shard)) = pending.next() => match shard {
                    Some(bytes) => {
                        got[i] = Some(bytes);
                        good += 1;
                    }
                    None => pending.extend(candidates.next().map(&mut fetch)),
                },
                () = hedge => {
                    if let Some(c) = candidates.next() {
                        tracing::debug!(segment = index, shard = c.0, "a shard read is slow; asking one more provider");
                        pending.push(fetch(c));
                    }
                }
            }
        }
    }

    /// The data key and nonce prefix segments are sealed with, when encrypted.
    fn sealing_key(&self) -> Option<(&DataKey, &[u8])> {
        match (&self.key, &self.layout.encryption) {
            (Some(key), Encryption::Aes256Gcm { nonce_prefix, .. }) => {
                Some((key, nonce_prefix.as_slice()))
            }
            _ => None,
        }
    }

    /// Segment `index` once the shards in `got` (each matching its recorded hash) decoded to
    /// a segment that failed authentication: fetches every other shard of the stripe (each
    /// within [`RETRY_FETCH_WAIT`]) and tries the combinations of `needed` shards (at most
    /// [`MAX_COMBINATIONS`]) until one opens. The shards that disagree with the segment it
    /// opened to are reported like corrupt ones, so they are repaired and counted against
    /// their providers. `None` when no combination opens.
    async fn open_from_other_shards(
        &self,
        index: usize,
        segment: &Segment,
        mut got: Vec<Option<Bytes>>,
        backend_for: &impl Fn(&str) -> Option<Arc<dyn ShardBackend>>,
    ) -> Option<Vec<u8>> {
        let (key, prefix) = self.sealing_key()?;
        let segment_no = index as u64;
        let scheme = self.layout.scheme;
        let report = self.report.as_ref();
        let others = (0..segment.shards.len()).filter_map(|i| {
            let loc = &segment.shards[i];
            if got[i].is_some() || loc.is_missing() {
                return None;
            }
            let backend = backend_for(&loc.provider)?;
            Some(async move {
                tokio::time::timeout(
                    self.retry_wait,
                    fetch_shard(index, i, loc, backend, report, true),
                )
                .await
                .unwrap_or((i, None))
            })
        });
        for (i, shard) in join_all(others).await {
            got[i] = shard;
        }
        let present: Vec<usize> = (0..got.len()).filter(|&i| got[i].is_some()).collect();
        let sealed_len = usize::try_from(segment.sealed_length).unwrap_or(usize::MAX);
        for pick in Combinations::new(present.len(), scheme.needed()).take(MAX_COMBINATIONS) {
            let mut subset: Vec<Option<&Bytes>> = vec![None; got.len()];
            for &p in &pick {
                subset[present[p]] = got[present[p]].as_ref();
            }
            let Ok(sealed) = codec::decode_stripe(scheme, &subset, sealed_len) else {
                continue;
            };
            let mut buf = sealed.clone();
            if key.open(prefix, segment_no, &mut buf).is_err() {
                continue;
            }
            // The stripe as it was written: any fetched shard that differs from it is bad.
            let written = codec::encode_stripe(scheme, &sealed).ok()?;
            for (i, shard) in got.iter().enumerate() {
                if let Some(shard) = shard
                    && written.get(i).is_none_or(|w| w.as_slice() != &shard[..])
                {
                    tracing::warn!(
                        segment = segment_no,
                        shard = i,
                        provider = %segment.shards[i].provider,
                        shard_id = %segment.shards[i].shard_id,
                        "shard matched its recorded hash but not the segment; flagged"
                    );
                    if let Some(report) = report {
                        report(index, i);
                    }
                }
            }
            return Some(buf);
        }
        None
    }

    /// The bytes of a version kept in metadata: its only segment, opened like a striped one.
    fn open_inline(
        &self,
        segment_no: u64,
        segment: &Segment,
        sealed: &[u8],
    ) -> Result<Vec<u8>, DataError> {
        let unreadable = |source| DataError::Unreadable {
            segment: segment_no,
            source,
        };
        if segment_no != 0 || sealed.len() as u64 != segment.sealed_length {
            return Err(DataError::InlineMismatch {
                held: sealed.len() as u64,
                recorded: segment.sealed_length,
            });
        }
        let mut buf = sealed.to_vec();
        if let (Some(key), Encryption::Aes256Gcm { nonce_prefix, .. }) =
            (&self.key, &self.layout.encryption)
        {
            key.open(nonce_prefix, segment_no, &mut buf)
                .map_err(unreadable)?;
        }
        Ok(buf)
    }
}

/// The `k`-element subsets of `0..n` as sorted index lists, in lexicographic order.
struct Combinations {
    n: usize,
    next: Option<Vec<usize>>,
}

impl Combinations {
    fn new(n: usize, k: usize) -> Self {
        Self {
            n,
            next: (k <= n).then(|| (0..k).collect()),
        }
    }
}

impl Iterator for Combinations {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        let current = self.next.take()?;
        let k = current.len();
        let mut following = current.clone();
        // The rightmost position that can still move right, moved, and everything after it
        // packed behind it.
        if let Some(i) = (0..k).rev().find(|&i| following[i] < self.n - k + i) {
            following[i] += 1;
            let start = following[i];
            for (offset, slot) in following[i + 1..].iter_mut().enumerate() {
                *slot = start + offset + 1;
            }
            self.next = Some(following);
        }
        Some(current)
    }
}

/// Whether `bytes` hash to the BLAKE3 `loc` records.
fn matches_recorded(bytes: &[u8], loc: &ShardLocation) -> bool {
    let mut recorded = [0u8; 32];
    hex::decode_to_slice(&loc.hash, &mut recorded).is_ok()
        && blake3::hash(bytes) == blake3::Hash::from_bytes(recorded)
}

/// Shard `index` of a stripe from `backend`, if it arrives (and, when `check`, matches its
/// recorded hash). A shard that is corrupt or gone goes to `report` (segment, shard) for
/// repair.
async fn fetch_shard(
    segment: usize,
    index: usize,
    loc: &ShardLocation,
    backend: Arc<dyn ShardBackend>,
    report: Option<&BadShardReport>,
    check: bool,
) -> (usize, Option<Bytes>) {
    let gone = || {
        if let Some(report) = report {
            report(segment, index);
        }
    };
    // Unchecked here means checked by the segment's tag: the provider need not check it.
    let read = AUTHENTICATED_READ.scope(!check, backend.get(&loc.shard_id));
    let shard = match EXPECTED_LEN.scope(loc.length, read).await {
        Ok(bytes) if !check || matches_recorded(&bytes, loc) => Some(bytes),
        Ok(_) => {
            tracing::warn!(provider = %loc.provider, shard_id = %loc.shard_id, "shard failed its hash check");
            gone();
            None
        }
        Err(e) => {
            tracing::warn!(provider = %loc.provider, shard_id = %loc.shard_id, error = %e, "shard read failed");
            if e.shard_gone() {
                gone();
            }
            None
        }
    };
    (index, shard)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    /// How a provider lies about a write.
    #[derive(Clone, Copy, Debug, Default, PartialEq)]
    enum Lie {
        #[default]
        Honest,
        /// Stores the bytes it was sent but answers another hash.
        ForgedHash,
        /// Keeps one junk blob per length and answers the junk's hash.
        JunkWithItsHash,
        /// Keeps junk but answers the hash of the bytes it was sent.
        JunkWithSentHash,
    }

    /// An in-memory provider that can be switched off or made to lie.
    #[derive(Default)]
    struct MemBackend {
        id: String,
        shards: Mutex<HashMap<String, Bytes>>,
        /// What each write sent it, whatever it kept.
        sent: Mutex<HashMap<String, Bytes>>,
        lie: Mutex<Lie>,
        down: std::sync::atomic::AtomicBool,
        corrupt: std::sync::atomic::AtomicBool,
        /// Reads hang (a provider that accepts connections but never answers).
        hang: std::sync::atomic::AtomicBool,
        /// Shard reads asked of it.
        reads: std::sync::atomic::AtomicUsize,
        /// Of those, the reads whose caller said it authenticates the bytes itself
        /// ([`AUTHENTICATED_READ`]): a provider would not check them.
        authenticated: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl ShardBackend for MemBackend {
        fn node_id(&self) -> &str {
            &self.id
        }
        async fn put(&self, id: &str, data: Bytes, _: &[u8; 32]) -> Result<[u8; 32], BackendError> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(BackendError("unavailable".into()));
            }
            self.sent.lock().unwrap().insert(id.into(), data.clone());
            let hash = *blake3::hash(&data).as_bytes();
            let junk = Bytes::from(vec![0x5a; data.len()]);
            let junk_hash = *blake3::hash(&junk).as_bytes();
            let (kept, answer) = match *self.lie.lock().unwrap() {
                Lie::Honest => (data, hash),
                Lie::ForgedHash => (data, [7; 32]),
                Lie::JunkWithItsHash => (junk, junk_hash),
                Lie::JunkWithSentHash => (junk, hash),
            };
            self.shards.lock().unwrap().insert(id.into(), kept);
            Ok(answer)
        }
        async fn get(&self, id: &str) -> Result<Bytes, BackendError> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if AUTHENTICATED_READ.try_with(|a| *a).unwrap_or(false) {
                self.authenticated
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            if self.hang.load(std::sync::atomic::Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(BackendError("unavailable".into()));
            }
            let data = self.shards.lock().unwrap().get(id).cloned();
            let data = data.ok_or_else(|| BackendError("not found".into()))?;
            if self.corrupt.load(std::sync::atomic::Ordering::SeqCst) {
                let mut v = data.to_vec();
                v[0] ^= 0xff;
                return Ok(Bytes::from(v));
            }
            Ok(data)
        }
        async fn delete(&self, id: &str) -> Result<(), BackendError> {
            self.shards.lock().unwrap().remove(id);
            Ok(())
        }
    }

    fn cluster(n: usize) -> Vec<Arc<MemBackend>> {
        (0..n)
            .map(|i| {
                Arc::new(MemBackend {
                    id: format!("node{i}"),
                    ..Default::default()
                })
            })
            .collect()
    }

    fn spec(nodes: &[Arc<MemBackend>], quorum: usize) -> WriteSpec {
        WriteSpec {
            scheme: Scheme::Erasure { data: 4, parity: 2 },
            encrypt: true,
            customer: None,
            segment_size: 1000,
            write_quorum: quorum,
            placement: nodes
                .iter()
                .map(|n| Arc::clone(n) as Arc<dyn ShardBackend>)
                .collect(),
            shard_prefix: "v1".into(),
        }
    }

    fn lookup(nodes: &[Arc<MemBackend>]) -> impl Fn(&str) -> Option<Arc<dyn ShardBackend>> + '_ {
        |id| {
            nodes
                .iter()
                .find(|n| n.id == id)
                .map(|n| Arc::clone(n) as Arc<dyn ShardBackend>)
        }
    }

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 253) as u8).collect()
    }

    async fn write(master: &MasterKey, nodes: &[Arc<MemBackend>], data: &[u8]) -> Layout {
        let mut w = ObjectWriter::new(master, spec(nodes, 6)).unwrap();
        for chunk in data.chunks(1000) {
            w.write_segment(chunk.to_vec()).await.unwrap();
        }
        w.finish()
    }

    async fn read_all(
        master: &MasterKey,
        nodes: &[Arc<MemBackend>],
        layout: Layout,
    ) -> Result<Vec<u8>, DataError> {
        let r = ObjectReader::new(master, layout)
            .unwrap()
            .with_hedge_after(std::time::Duration::from_millis(20));
        let mut out = Vec::new();
        for i in 0..r.layout().segments.len() {
            out.extend(r.read_segment(i, lookup(nodes)).await?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn round_trip_with_two_providers_down_and_shards_are_ciphertext() {
        let master = MasterKey::from_bytes(&[9; 32]);
        let nodes = cluster(6);
        let data = body(3500);
        let layout = write(&master, &nodes, &data).await;
        assert_eq!(layout.segments.len(), 4);
        assert_eq!(layout.plain_length(), 3500);
        // No provider holds a plaintext run of the object.
        for n in &nodes {
            for shard in n.shards.lock().unwrap().values() {
                assert!(!shard.windows(16).any(|w| w == &data[..16]));
            }
        }
        nodes[0]
            .down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        nodes[3]
            .down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(read_all(&master, &nodes, layout).await.unwrap(), data);
    }

    #[tokio::test]
    async fn inline_objects_are_sealed_in_the_layout_and_checked_on_read() {
        let master = MasterKey::from_bytes(&[9; 32]);
        let nodes = cluster(6);
        let data = body(3000);
        let scheme = Scheme::Erasure { data: 4, parity: 2 };
        for encrypt in [true, false] {
            let layout = seal_inline(&master, scheme, encrypt, None, 1000, data.clone()).unwrap();
            assert_eq!(layout.plain_length(), 3000);
            assert_eq!(layout.shards().count(), 0, "no provider holds any of it");
            let sealed = layout.inline.clone().unwrap();
            assert_eq!(sealed.windows(16).any(|w| w == &data[..16]), !encrypt);
            assert_eq!(
                read_all(&master, &nodes, layout.clone()).await.unwrap(),
                data
            );
            // Survives the metadata's JSON form.
            let json = serde_json::to_string(&layout).unwrap();
            let back: Layout = serde_json::from_str(&json).unwrap();
            assert_eq!(read_all(&master, &nodes, back).await.unwrap(), data);
            // A flipped bit (encrypted) or a cut (either) is an error, never wrong bytes.
            let mut cut = layout.clone();
            cut.inline.as_mut().unwrap().pop();
            let err = read_all(&master, &nodes, cut).await.unwrap_err();
            assert!(matches!(err, DataError::InlineMismatch { .. }), "{err}");
            if encrypt {
                let mut flipped = layout;
                flipped.inline.as_mut().unwrap()[5] ^= 1;
                let err = read_all(&master, &nodes, flipped).await.unwrap_err();
                assert!(
                    matches!(err, DataError::Unreadable { segment: 0, .. }),
                    "{err}"
                );
            }
        }
    }

    #[tokio::test]
    async fn corrupt_shards_are_detected_and_worked_around() {
        let master = MasterKey::from_bytes(&[9; 32]);
        let nodes = cluster(6);
        let data = body(2500);
        let layout = write(&master, &nodes, &data).await;
        nodes[1]
            .corrupt
            .store(true, std::sync::atomic::Ordering::SeqCst);
        nodes[2]
            .corrupt
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            read_all(&master, &nodes, layout.clone()).await.unwrap(),
            data
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let reader = ObjectReader::new(&master, layout.clone())
            .unwrap()
            .with_bad_shard_report(Arc::new(move |seg, idx| {
                sink.lock().unwrap().push((seg, idx))
            }));
        reader.read_segment(1, lookup(&nodes)).await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [(1, 1), (1, 2)],
            "lying shards are reported"
        );
        nodes[4]
            .corrupt
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let err = read_all(&master, &nodes, layout).await.unwrap_err();
        assert!(
            matches!(err, DataError::Unreadable { segment: 0, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn hung_providers_are_hedged_with_parity_shards() {
        let master = MasterKey::from_bytes(&[9; 32]);
        let nodes = cluster(6);
        let data = body(3500);
        let layout = write(&master, &nodes, &data).await;
        // Two data-shard providers never answer: without hedging the read waits forever.
        for n in [&nodes[1], &nodes[2]] {
            n.hang.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            read_all(&master, &nodes, layout.clone()),
        )
        .await
        .expect("the read was not hedged");
        assert_eq!(read.unwrap(), data);
        // Another mix: 0 down, 3 hung, 1 and 2 answering again — 1, 2, 4 and 5 serve it.
        nodes[3]
            .hang
            .store(true, std::sync::atomic::Ordering::SeqCst);
        nodes[0]
            .down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        nodes[1]
            .hang
            .store(false, std::sync::atomic::Ordering::SeqCst);
        nodes[2]
            .hang
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            read_all(&master, &nodes, layout),
        )
        .await
        .expect("the read was not hedged");
        assert_eq!(read.unwrap(), data);
    }

    #[tokio::test]
    async fn quorum_failure_is_reported_and_abort_cleans_up() {
        let master = MasterKey::from_bytes(&[9; 32]);
        let nodes = cluster(6);
        nodes[5]
            .down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Quorum 5 of 6: one provider down still commits, with the shard marked missing.
        let mut w = ObjectWriter::new(&master, spec(&nodes, 5)).unwrap();
        w.write_segment(body(100)).await.unwrap();
        let layout = w.finish();
        assert!(layout.segments[0].shards[5].is_missing());
        // Quorum 6 of 6: the same write fails and leaves nothing behind once aborted.
        let mut second = spec(&nodes, 6);
        second.shard_prefix = "v2".into();
        let mut w = ObjectWriter::new(&master, second).unwrap();
        let err = w.write_segment(body(100)).await.unwrap_err();
        assert!(err.to_string().contains("only 5 of 6"), "{err}");
        w.abort().await;
        let stored: usize = nodes.iter().map(|n| n.shards.lock().unwrap().len()).sum();
        assert_eq!(
            stored, 5,
            "only the first (committed) version's shards remain"
        );
    }

    /// Every shard a layout records is one the gateway sent to that provider, under the
    /// hash of the bytes sent.
    fn assert_records_only_what_was_sent(layout: &Layout, nodes: &[Arc<MemBackend>]) {
        for loc in layout.shards().filter(|l| !l.is_missing()) {
            let node = nodes.iter().find(|n| n.id == loc.provider).unwrap();
            let sent = node.sent.lock().unwrap().get(&loc.shard_id).cloned();
            let sent = sent.unwrap_or_else(|| panic!("{} was never sent {loc:?}", node.id));
            assert_eq!(
                loc.hash,
                blake3::hash(&sent).to_hex().as_str(),
                "{loc:?}: the recorded hash is not that of the bytes sent"
            );
        }
    }

    #[tokio::test]
    async fn a_forged_acknowledgement_is_refused_and_never_recorded() {
        let master = MasterKey::from_bytes(&[9; 32]);
        for lie in [Lie::ForgedHash, Lie::JunkWithItsHash] {
            let nodes = cluster(6);
            *nodes[2].lie.lock().unwrap() = lie;
            let err = put_shard(nodes[2].as_ref(), "probe.0.2", Bytes::from_static(b"shard"))
                .await
                .unwrap_err();
            assert!(err.hash_mismatch(), "{lie:?}: {err}");
            assert!(
                err.0.contains("provider node2") && err.0.contains("shard probe.0.2"),
                "{lie:?}: the error names the provider and the shard: {err}"
            );
            // Quorum 5 of 6: the liar counts as a failed put, the write commits without it.
            let data = body(2500);
            let mut w = ObjectWriter::new(&master, spec(&nodes, 5)).unwrap();
            for chunk in data.chunks(1000) {
                w.write_segment(chunk.to_vec()).await.unwrap();
            }
            let layout = w.finish();
            for (g, segment) in layout.segments.iter().enumerate() {
                assert!(
                    segment.shards[2].is_missing() && segment.shards[2].hash.is_empty(),
                    "{lie:?}: segment {g} records the liar's shard: {:?}",
                    segment.shards[2]
                );
                assert_eq!(
                    segment.shards.iter().filter(|l| l.is_missing()).count(),
                    1,
                    "{lie:?}: the honest providers' shards are all recorded"
                );
            }
            assert_records_only_what_was_sent(&layout, &nodes);
            // The object reads back without the liar, even with one more provider down.
            nodes[4]
                .down
                .store(true, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(read_all(&master, &nodes, layout).await.unwrap(), data);
        }
    }

    #[tokio::test]
    async fn providers_lying_on_every_shard_fail_the_write_by_its_quorum() {
        let master = MasterKey::from_bytes(&[9; 32]);
        let nodes = cluster(6);
        for n in &nodes[..2] {
            *n.lie.lock().unwrap() = Lie::JunkWithItsHash;
        }
        // Two liars of six: a quorum of 5 is not met, 4 is (without them).
        let mut w = ObjectWriter::new(&master, spec(&nodes, 5)).unwrap();
        let err = w.write_segment(body(100)).await.unwrap_err();
        assert!(err.to_string().contains("only 4 of 6"), "{err}");
        let layout = w.finish();
        assert!(
            layout.segments[0].shards[..2]
                .iter()
                .all(|l| l.is_missing())
        );
        assert_records_only_what_was_sent(&layout, &nodes);
        let mut second = spec(&nodes, 4);
        second.shard_prefix = "v2".into();
        let mut w = ObjectWriter::new(&master, second).unwrap();
        w.write_segment(body(100)).await.unwrap();
        let layout = w.finish();
        assert!(
            layout.segments[0].shards[..2]
                .iter()
                .all(|l| l.is_missing())
        );
        assert_records_only_what_was_sent(&layout, &nodes);
        assert_eq!(read_all(&master, &nodes, layout).await.unwrap(), body(100));
        // Every provider lies: nothing is acknowledged, nothing forged is recorded.
        for n in &nodes {
            *n.lie.lock().unwrap() = Lie::ForgedHash;
        }
        let mut third = spec(&nodes, 1);
        third.shard_prefix = "v3".into();
        let mut w = ObjectWriter::new(&master, third).unwrap();
        let err = w.write_segment(body(100)).await.unwrap_err();
        assert!(err.to_string().contains("only 0 of 6"), "{err}");
        let layout = w.finish();
        assert!(
            layout.shards().all(|l| l.is_missing() && l.hash.is_empty()),
            "{layout:?}"
        );
    }

    #[tokio::test]
    async fn junk_acknowledged_under_the_sent_hash_is_caught_on_read() {
        let master = MasterKey::from_bytes(&[9; 32]);
        let nodes = cluster(6);
        *nodes[1].lie.lock().unwrap() = Lie::JunkWithSentHash;
        let data = body(2500);
        let layout = write(&master, &nodes, &data).await;
        assert_records_only_what_was_sent(&layout, &nodes);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let reader = ObjectReader::new(&master, layout)
            .unwrap()
            .with_bad_shard_report(Arc::new(move |seg, idx| {
                sink.lock().unwrap().push((seg, idx))
            }));
        let mut out = Vec::new();
        for g in 0..reader.layout().segments.len() {
            out.extend(reader.read_segment(g, lookup(&nodes)).await.unwrap());
        }
        assert_eq!(out, data);
        assert_eq!(*seen.lock().unwrap(), [(0, 1), (1, 1), (2, 1)]);
    }

    /// Replaces shard `i` of every segment with junk on its provider and records the junk's
    /// hash in the layout, as a wrong hash in the metadata would: the shard passes its hash
    /// check, yet the segment does not open with it.
    fn plant_junk_under_its_recorded_hash(
        layout: &mut Layout,
        nodes: &[Arc<MemBackend>],
        i: usize,
    ) {
        for seg in &mut layout.segments {
            let loc = &mut seg.shards[i];
            let node = nodes.iter().find(|n| n.id == loc.provider).unwrap();
            let junk = Bytes::from(vec![0x33 + i as u8; loc.length as usize]);
            loc.hash = blake3::hash(&junk).to_hex().to_string();
            node.shards
                .lock()
                .unwrap()
                .insert(loc.shard_id.clone(), junk);
        }
    }

    /// The (segment, shard) pairs a reader reported bad.
    type Reported = Arc<Mutex<Vec<(usize, usize)>>>;

    fn reporting_reader(master: &MasterKey, layout: Layout) -> (ObjectReader, Reported) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let reader = ObjectReader::new(master, layout)
            .unwrap()
            .with_hedge_after(std::time::Duration::from_millis(20))
            .with_retry_wait(std::time::Duration::from_millis(200))
            .with_bad_shard_report(Arc::new(move |seg, idx| {
                sink.lock().unwrap().push((seg, idx))
            }));
        (reader, seen)
    }

    async fn read_with(
        reader: &ObjectReader,
        nodes: &[Arc<MemBackend>],
    ) -> Result<Vec<u8>, DataError> {
        let mut out = Vec::new();
        for g in 0..reader.layout().segments.len() {
            out.extend(reader.read_segment(g, lookup(nodes)).await?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_shard_that_passes_its_hash_but_fails_authentication_is_read_around_and_flagged() {
        let master = MasterKey::from_bytes(&[9; 32]);
        let nodes = cluster(6);
        let data = body(2500);
        let mut layout = write(&master, &nodes, &data).await;
        plant_junk_under_its_recorded_hash(&mut layout, &nodes, 1);
        let (reader, seen) = reporting_reader(&master, layout.clone());
        assert_eq!(read_with(&reader, &nodes).await.unwrap(), data);
        assert_eq!(
            *seen.lock().unwrap(),
            [(0, 1), (1, 1), (2, 1)],
            "the shard the segments open without is flagged in every segment"
        );

        // Two such shards of six (4+2): only the one combination without both opens.
        plant_junk_under_its_recorded_hash(&mut layout, &nodes, 3);
        let (reader, seen) = reporting_reader(&master, layout.clone());
        assert_eq!(read_with(&reader, &nodes).await.unwrap(), data);
        let mut flagged = seen.lock().unwrap().clone();
        flagged.sort_unstable();
        assert_eq!(flagged, [(0, 1), (0, 3), (1, 1), (1, 3), (2, 1), (2, 3)]);

        // Plus a provider down: four shards are left and two of them are bad. No
        // combination opens; the read fails rather than return wrong bytes.
        nodes[5]
            .down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let (reader, _) = reporting_reader(&master, layout);
        let err = read_with(&reader, &nodes).await.unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Unreadable {
                    segment: 0,
                    source: CodecError::Authentication { segment: 0 }
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_read_that_failed_authentication_waits_a_bounded_time_for_more_shards() {
        let master = MasterKey::from_bytes(&[9; 32]);
        let nodes = cluster(6);
        let data = body(900);
        let mut layout = write(&master, &nodes, &data).await;
        plant_junk_under_its_recorded_hash(&mut layout, &nodes, 0);
        // The parity shards' providers never answer: no other combination can be had, and
        // the read gives up after its retry wait instead of hanging.
        for n in &nodes[4..] {
            n.hang.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let (reader, seen) = reporting_reader(&master, layout);
        let err = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            read_with(&reader, &nodes),
        )
        .await
        .expect("the read hung on providers that never answer")
        .unwrap_err();
        assert!(matches!(err, DataError::Unreadable { .. }), "{err}");
        assert!(seen.lock().unwrap().is_empty(), "nothing could be told bad");
    }

    fn reads_asked(nodes: &[Arc<MemBackend>]) -> Vec<usize> {
        nodes
            .iter()
            .map(|n| n.reads.swap(0, std::sync::atomic::Ordering::SeqCst))
            .collect()
    }

    /// Reads per node since the last call that the reader said it authenticates itself
    /// (so a provider would skip its own hash check of them).
    fn reads_unchecked_by_provider(nodes: &[Arc<MemBackend>]) -> Vec<usize> {
        nodes
            .iter()
            .map(|n| n.authenticated.swap(0, std::sync::atomic::Ordering::SeqCst))
            .collect()
    }

    #[tokio::test]
    async fn a_corrupt_data_shard_of_an_encrypted_segment_is_found_flagged_and_read_around() {
        let master = MasterKey::from_bytes(&[9; 32]);
        let nodes = cluster(6);
        let data = body(2500);
        let layout = write(&master, &nodes, &data).await;
        // Healthy: the data shards alone, one read each, no parity asked for.
        let (reader, seen) = reporting_reader(&master, layout.clone());
        assert_eq!(read_with(&reader, &nodes).await.unwrap(), data);
        assert_eq!(reads_asked(&nodes), [3, 3, 3, 3, 0, 0]);
        // The tag authenticates them: the providers are asked not to hash them.
        assert_eq!(reads_unchecked_by_provider(&nodes), [3, 3, 3, 3, 0, 0]);
        assert!(seen.lock().unwrap().is_empty());
        // Data shard 2 comes back flipped: the tag fails, the hashes name shard 2, it is
        // reported in every segment and a parity shard replaces it.
        nodes[2]
            .corrupt
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let (reader, seen) = reporting_reader(&master, layout.clone());
        assert_eq!(read_with(&reader, &nodes).await.unwrap(), data);
        assert_eq!(*seen.lock().unwrap(), [(0, 2), (1, 2), (2, 2)]);
        assert_eq!(
            reads_asked(&nodes),
            [3, 3, 3, 3, 3, 0],
            "the bad shard is not asked for twice, one parity shard per segment replaces it"
        );
        // The parity shard read once the tag failed is one the gateway hashes on arrival,
        // and the provider is not told to skip its own check of it.
        assert_eq!(reads_unchecked_by_provider(&nodes), [3, 3, 3, 3, 0, 0]);
        // A provider answering another shard's bytes (shard 3's for shard 1) is caught the
        // same way.
        nodes[2]
            .corrupt
            .store(false, std::sync::atomic::Ordering::SeqCst);
        for seg in &layout.segments {
            let other = nodes[3].shards.lock().unwrap()[&seg.shards[3].shard_id].clone();
            nodes[1]
                .shards
                .lock()
                .unwrap()
                .insert(seg.shards[1].shard_id.clone(), other);
        }
        let (reader, seen) = reporting_reader(&master, layout);
        assert_eq!(read_with(&reader, &nodes).await.unwrap(), data);
        assert_eq!(*seen.lock().unwrap(), [(0, 1), (1, 1), (2, 1)]);
    }

    #[tokio::test]
    async fn an_unencrypted_segment_checks_every_shard_as_it_arrives() {
        let master = MasterKey::from_bytes(&[9; 32]);
        let nodes = cluster(6);
        let data = body(2500);
        let mut plain = spec(&nodes, 6);
        plain.encrypt = false;
        let mut w = ObjectWriter::new(&master, plain).unwrap();
        for chunk in data.chunks(1000) {
            w.write_segment(chunk.to_vec()).await.unwrap();
        }
        let layout = w.finish();
        // Nothing but the hashes can tell a flipped byte here.
        nodes[0]
            .corrupt
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let (reader, seen) = reporting_reader(&master, layout);
        assert_eq!(read_with(&reader, &nodes).await.unwrap(), data);
        assert_eq!(*seen.lock().unwrap(), [(0, 0), (1, 0), (2, 0)]);
        // No tag to lean on: every provider checks what it sends.
        assert_eq!(reads_unchecked_by_provider(&nodes), [0; 6]);
    }

    #[test]
    fn combinations_are_every_subset_once() {
        let all: Vec<Vec<usize>> = Combinations::new(6, 4).collect();
        assert_eq!(all.len(), 15);
        assert_eq!(all[0], [0, 1, 2, 3]);
        assert_eq!(all[14], [2, 3, 4, 5]);
        let unique: std::collections::BTreeSet<_> = all.iter().cloned().collect();
        assert_eq!(unique.len(), 15);
        assert_eq!(Combinations::new(3, 3).count(), 1);
        assert_eq!(Combinations::new(2, 3).count(), 0);
        assert_eq!(Combinations::new(14, 10).count(), 1001);
    }

    #[tokio::test]
    async fn placement_must_match_the_stripe() {
        let master = MasterKey::from_bytes(&[9; 32]);
        let nodes = cluster(5);
        let err = ObjectWriter::new(&master, spec(&nodes, 5)).err().unwrap();
        assert!(matches!(err, DataError::Placement { got: 5, width: 6 }));
    }
}
