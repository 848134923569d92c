//! The metadata journal: every change to a gateway's own (SQLite) metadata store is also
//! written, encrypted, to several providers before the S3 request that made it is
//! answered. `sublet recover` restores the newest snapshot and replays the journal written
//! after it, so losing the gateway's disk loses no acknowledged write.
//!
//! How it fits together:
//! - [`JournaledStore`] wraps the store: a change is committed to the store first and then
//!   appended to the journal, in commit order (one lock around both). On SQLite, object
//!   writes and deletes commit in groups instead; each group is committed and appended
//!   under the store's own lock ([`MetadataStore::commit_order`]), so they keep commit order
//!   without waiting for one another.
//! - A flusher task ([`Journal::spawn`]) takes everything appended so far and stores it as
//!   one segment (group commit) on [`JOURNAL_COPIES`] providers. Segment ids are
//!   `sublet-meta-journal-<installation>-<run start ms>-<seq>`, so they sort in write order
//!   across restarts.
//! - The S3 service waits for the journal ([`Journal::barrier`]) before answering a request
//!   that may have changed metadata; a journal that cannot be stored answers 503.
//! - A snapshot records the journal position it contains ([`Journal::cut`], read before the
//!   copy is taken: every entry at or before it was committed before). Recovery replays the
//!   segments after it; replaying is idempotent, so an entry also in the copy does no harm.
//! - Segments every kept snapshot contains are deleted after a snapshot.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use sublet_provider::client::ProviderClient;

use crate::datapath::codec::{DataKey, MasterKey, NONCE_PREFIX_LEN};
use crate::datapath::fleet::Fleet;
use crate::datapath::layout::Layout;
use crate::datapath::stripes::put_shard;
use crate::meta::{
    AuditSample, Bucket, CompleteOutcome, HealthGroup, ListPage, ListQuery, MetaError,
    MetadataStore, ObjectVersion, PlanUsage, ProviderSeen, PutOutcome, QueuedVersion, Result,
    ShardPos, Upload, UploadPage, UploadPart, UploadQuery, VersionPage, VersionQuery, Versioning,
};

/// Shard ids of journal segments start with this, then the installation tag.
pub const JOURNAL_PREFIX: &str = "sublet-meta-journal-";

/// Providers each segment is stored on (fewer when fewer are configured): the journal
/// outlives the loss of two of them, as a 4+2 plan's objects do.
pub const JOURNAL_COPIES: usize = 3;

/// How long a request waits for its change to reach the journal before it fails.
pub const BARRIER_TIMEOUT: Duration = Duration::from_secs(30);

/// Segments recovery fetches at once.
const REPLAY_FETCHES: usize = 16;

/// How long one provider may take to store a segment.
const PUT_TIMEOUT: Duration = Duration::from_secs(10);

/// First bytes of a segment: format version 1.
const MAGIC: &[u8; 4] = b"SJL1";

/// One change to the metadata store, as replayed by recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Entry {
    CreateBucket {
        bucket: Bucket,
    },
    DeleteBucket {
        name: String,
    },
    SetVersioning {
        name: String,
        versioning: Versioning,
    },
    SetBucketPlan {
        name: String,
        plan: Option<String>,
    },
    SetLifecycle {
        bucket: String,
        rules: Option<String>,
    },
    PutVersion {
        version: ObjectVersion,
    },
    DeleteVersion {
        bucket: String,
        key: String,
        version_id: String,
    },
    CreateUpload {
        upload: Upload,
    },
    PutPart {
        bucket: String,
        key: String,
        upload_id: String,
        part: UploadPart,
    },
    CompleteUpload {
        upload_id: String,
        used: Vec<(i32, String)>,
        version: ObjectVersion,
    },
    AbortUpload {
        bucket: String,
        key: String,
        upload_id: String,
    },
    /// The policy overlay applied through the admin API (a copy; the file is what runs).
    Policies {
        yaml: String,
    },
    /// A repair, re-encode or transition: the version's layout (and plan) changed.
    SwapLayout {
        bucket: String,
        key: String,
        version_id: String,
        expected: Layout,
        plan: String,
        layout: Layout,
    },
}

/// What a segment holds once opened: its own id (so a provider cannot pass one segment off
/// as another) and its entries.
#[derive(Deserialize)]
struct SegmentBody {
    id: String,
    entries: Vec<Entry>,
}

/// The flusher's progress, watched by requests waiting for their entries.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Entries (counted from the journal's start) stored on providers.
    flushed: u64,
    /// Entries up to here were in a batch that failed last time it was tried.
    failed_through: u64,
    error: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct State {
    /// Nothing is journaled until a flusher runs (`sublet repair` and tests without one).
    active: bool,
    /// Serialized entries not stored yet, in order.
    pending: Vec<Vec<u8>>,
    /// Entries appended since the start.
    appended: u64,
    /// Sequence number of the next segment.
    next_seq: u64,
    /// Position of the last stored segment; every entry at or before it is durable.
    cut: String,
    /// Unix ms this journal started (or later, see [`Journal::follow`]): the first half of
    /// its positions.
    epoch: i64,
}

/// A gateway's metadata journal. See the module documentation.
pub struct Journal {
    master: Arc<MasterKey>,
    /// `JOURNAL_PREFIX` + installation + `-`.
    prefix: String,
    state: Mutex<State>,
    progress: tokio::sync::watch::Sender<Progress>,
    wake: tokio::sync::Notify,
    /// The flusher last found providers to store segments on.
    holders: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// `<run start ms>-<seq>`, zero-padded so positions sort in write order.
fn position(epoch: i64, seq: u64) -> String {
    format!("{epoch:015}-{seq:010}")
}

/// The id prefix of an installation's journal segments.
pub fn segment_prefix(installation: &str) -> String {
    format!("{JOURNAL_PREFIX}{installation}-")
}

impl Journal {
    pub fn new(master: Arc<MasterKey>) -> Arc<Self> {
        let epoch = crate::clock::now_ms();
        let prefix = segment_prefix(master.installation());
        Arc::new(Self {
            master,
            prefix,
            state: Mutex::new(State {
                next_seq: 1,
                cut: position(epoch, 0),
                epoch,
                ..State::default()
            }),
            progress: tokio::sync::watch::channel(Progress::default()).0,
            wake: tokio::sync::Notify::new(),
            holders: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes this run's positions sort after every segment `clients` list, so a clock that
    /// went back since the last run (a board without a real-time clock, before NTP) cannot
    /// order its segments before older ones. Call before [`Journal::spawn`].
    pub async fn follow(&self, clients: &[(String, ProviderClient)]) {
        let (segments, _) = list_segments(self.master.installation(), clients).await;
        self.follow_ids(segments.keys().map(String::as_str));
    }

    /// [`Journal::follow`] for segments named `ids`.
    fn follow_ids<'a>(&self, ids: impl Iterator<Item = &'a str>) {
        let newest = ids
            .filter_map(|id| id.strip_prefix(&self.prefix))
            .filter_map(|pos| pos.split('-').next()?.parse::<i64>().ok())
            .max();
        let mut state = self.state();
        if let Some(newest) = newest
            && newest >= state.epoch
            && !state.active
        {
            tracing::warn!(
                newest_segment_ms = newest,
                now_ms = state.epoch,
                "the metadata journal on the providers is newer than this machine's clock; \
                 numbering after it"
            );
            state.epoch = newest + 1;
            state.cut = position(state.epoch, 0);
        }
    }

    /// Whether a flusher runs (entries are being journaled).
    pub fn is_active(&self) -> bool {
        self.state().active
    }

    /// Whether the flusher has sublet providers to store segments on (a gateway whose
    /// pools are all S3 buckets has none): only then is a change as safe as a shard once
    /// [`Journal::barrier`] returns.
    pub fn has_holders(&self) -> bool {
        self.holders.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues `entry` for the next segment (nothing while no flusher runs).
    pub fn append(&self, entry: &Entry) {
        let json = match serde_json::to_vec(entry) {
            Ok(json) => json,
            Err(e) => {
                // Every field is a string, number or map of strings: this cannot happen.
                tracing::error!(error = %e, "a metadata journal entry could not be serialized");
                return;
            }
        };
        {
            let mut state = self.state();
            if !state.active {
                return;
            }
            state.pending.push(json);
            state.appended += 1;
        }
        self.wake.notify_one();
    }

    /// The position of the last segment stored: a copy of the store taken after this call
    /// contains every entry at or before it.
    pub fn cut(&self) -> String {
        self.state().cut.clone()
    }

    /// Waits until everything appended before this call is stored on providers; fails when
    /// the flusher could not store it (or did not within [`BARRIER_TIMEOUT`]).
    pub async fn barrier(&self) -> std::result::Result<(), String> {
        let target = {
            let state = self.state();
            if !state.active {
                return Ok(());
            }
            state.appended
        };
        let mut rx = self.progress.subscribe();
        let waited = tokio::time::timeout(
            BARRIER_TIMEOUT,
            rx.wait_for(|p| p.flushed >= target || p.failed_through >= target),
        )
        .await;
        let progress = match waited {
            Ok(Ok(p)) => p.clone(),
            Ok(Err(_)) => return Err("the metadata journal stopped".into()),
            Err(_) => {
                return Err(format!(
                    "the metadata journal was not stored on providers within {} s",
                    BARRIER_TIMEOUT.as_secs()
                ));
            }
        };
        if progress.flushed >= target {
            return Ok(());
        }
        Err(format!(
            "the metadata journal could not be stored on providers (the change is kept and \
             retried): {}",
            progress.error.as_deref().unwrap_or("unknown error")
        ))
    }

    /// Seals entries (JSON each) into a segment named `id`.
    fn seal(&self, id: &str, entries: &[Vec<u8>]) -> std::result::Result<Bytes, String> {
        let mut body = Vec::with_capacity(entries.iter().map(|e| e.len() + 1).sum::<usize>() + 64);
        body.extend_from_slice(b"{\"id\":");
        body.extend_from_slice(&serde_json::to_vec(id).map_err(|e| e.to_string())?);
        body.extend_from_slice(b",\"entries\":[");
        for (i, e) in entries.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(e);
        }
        body.extend_from_slice(b"]}");
        let (key, wrapped) = self.master.new_data_key().map_err(|e| e.to_string())?;
        let nonce_prefix = DataKey::new_nonce_prefix().map_err(|e| e.to_string())?;
        key.seal(&nonce_prefix, 0, &mut body)
            .map_err(|e| e.to_string())?;
        let wrapped_len = u16::try_from(wrapped.len()).map_err(|e| e.to_string())?;
        let mut out =
            Vec::with_capacity(MAGIC.len() + 2 + wrapped.len() + NONCE_PREFIX_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&wrapped_len.to_be_bytes());
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&nonce_prefix);
        out.extend_from_slice(&body);
        Ok(Bytes::from(out))
    }

    /// Starts storing appended entries on the providers `providers` names at each segment
    /// (the probe list, which providers connected while running join; each looked up in
    /// `gateway`, so health and metering wrappers apply) until `stop` changes; from now on
    /// changes are journaled.
    pub fn spawn(
        self: &Arc<Self>,
        fleet: Arc<Fleet>,
        providers: impl Fn() -> Vec<String> + Send + 'static,
        metrics: Option<crate::metrics::Metrics>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        self.state().active = true;
        self.holders.store(
            !providers().is_empty(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let journal = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let mut stopping = false;
            let mut warned_unjournaled = false;
            loop {
                let batch = {
                    let mut state = journal.state();
                    if state.pending.is_empty() {
                        None
                    } else {
                        let seq = state.next_seq;
                        state.next_seq += 1;
                        let cut = position(state.epoch, seq);
                        Some((std::mem::take(&mut state.pending), state.appended, seq, cut))
                    }
                };
                let Some((entries, upto, seq, cut)) = batch else {
                    if stopping {
                        return;
                    }
                    tokio::select! {
                        () = journal.wake.notified() => {}
                        _ = stop.changed() => stopping = true,
                    }
                    continue;
                };
                let id = format!("{}{cut}", journal.prefix);
                let nodes = providers();
                journal
                    .holders
                    .store(!nodes.is_empty(), std::sync::atomic::Ordering::Relaxed);
                if nodes.is_empty() {
                    // Only bucket pools (no provider to list it back from at recovery):
                    // nothing can hold a journal, and writes must not stop for it. The
                    // changes reach the providers' copy with the next snapshot only.
                    if !warned_unjournaled {
                        warned_unjournaled = true;
                        tracing::warn!(
                            "no sublet provider is configured to hold the metadata journal: changes since the last snapshot are lost with the gateway's disk"
                        );
                    }
                    journal.progress.send_modify(|p| p.flushed = upto);
                    continue;
                }
                let stored = match journal.seal(&id, &entries) {
                    Ok(blob) => journal.store(&fleet, &nodes, seq, &id, blob).await,
                    Err(e) => Err(format!("sealing the segment: {e}")),
                };
                if let Some(m) = &metrics {
                    let result = if stored.is_ok() { "stored" } else { "failed" };
                    m.journal_segments.with_label_values(&[result]).inc();
                    if let Ok(nodes) = &stored {
                        m.journal_entries
                            .with_label_values(&[] as &[&str])
                            .inc_by(entries.len() as u64);
                        for node in nodes {
                            m.journal_copies.with_label_values(&[node]).inc();
                        }
                    }
                }
                match stored {
                    Ok(_) => {
                        backoff = Duration::from_millis(100);
                        journal.state().cut = cut;
                        journal.progress.send_modify(|p| {
                            p.flushed = upto;
                            p.error = None;
                        });
                    }
                    Err(e) => {
                        tracing::warn!(segment = %id, entries = entries.len(), error = %e, "storing the metadata journal failed; retrying");
                        {
                            // Back in front of what came meanwhile, in order.
                            let mut state = journal.state();
                            let newer = std::mem::replace(&mut state.pending, entries);
                            state.pending.extend(newer);
                        }
                        journal.progress.send_modify(|p| {
                            p.failed_through = upto;
                            p.error = Some(e.into());
                        });
                        if stopping {
                            return;
                        }
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            _ = stop.changed() => stopping = true,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
    }

    /// Stores one segment on [`JOURNAL_COPIES`] of `nodes` (healthy ones first, starting at
    /// a different one each segment), replacing providers that fail by the next ones. While
    /// fewer than that are healthy, as many copies as there are healthy providers do (at
    /// least one): object writes need more of them anyway, and a provider that was taken
    /// out (a contract that ended) must not stop every write.
    async fn store(
        &self,
        fleet: &Fleet,
        nodes: &[String],
        seq: u64,
        id: &str,
        blob: Bytes,
    ) -> std::result::Result<Vec<String>, String> {
        let mut candidates: Vec<_> = nodes.iter().filter_map(|n| fleet.backend(n)).collect();
        if candidates.is_empty() {
            return Err("no provider is configured to hold it".into());
        }
        let n = candidates.len();
        candidates.rotate_left(usize::try_from(seq).unwrap_or(0) % n);
        candidates.sort_by_key(|b| !fleet.health().healthy(b.node_id()));
        let health = fleet.health();
        let healthy = |candidates: &[Arc<dyn crate::datapath::stripes::ShardBackend>]| {
            candidates
                .iter()
                .filter(|b| health.healthy(b.node_id()))
                .count()
        };
        let mut need = JOURNAL_COPIES.min(healthy(&candidates).max(1));
        let all = candidates.clone();
        let mut rest = candidates.into_iter();
        let mut wave: Vec<_> = rest.by_ref().take(need).collect();
        let (mut stored, mut errors) = (Vec::new(), Vec::new());
        while !wave.is_empty() {
            let puts =
                wave.iter().map(|b| {
                    let blob = blob.clone();
                    // `put_shard` refuses an acknowledgement of another hash than the blob's.
                    async move {
                        tokio::time::timeout(PUT_TIMEOUT, put_shard(b.as_ref(), id, blob)).await
                    }
                });
            let mut failed = 0;
            for (b, outcome) in wave.iter().zip(join_all(puts).await) {
                if matches!(&outcome, Ok(Ok(_))) {
                    health.record_success(b.node_id());
                } else {
                    health.record_failure(b.node_id());
                }
                match outcome {
                    Ok(Ok(_)) => stored.push(b.node_id().to_owned()),
                    Ok(Err(e)) => {
                        failed += 1;
                        errors.push(format!("{}: {e}", b.node_id()));
                    }
                    Err(_) => {
                        failed += 1;
                        errors.push(format!(
                            "{}: no answer within {} s",
                            b.node_id(),
                            PUT_TIMEOUT.as_secs()
                        ));
                    }
                }
            }
            if stored.len() >= need {
                return Ok(stored);
            }
            wave = rest.by_ref().take(failed).collect();
            if wave.is_empty() {
                // Every provider was asked: the ones that failed just now count as down.
                need = need.min(healthy(&all).max(1));
                if stored.len() >= need {
                    tracing::warn!(segment = id, copies = stored.len(), failed = %errors.join("; "), "metadata journal segment stored on fewer providers than usual: the others are down");
                    return Ok(stored);
                }
            }
        }
        Err(format!(
            "stored on {} of the {need} providers needed: {}",
            stored.len(),
            errors.join("; ")
        ))
    }
}

/// Opens a segment read back from a provider: checks its format, decrypts it with the
/// master key and checks it names itself `id`.
pub fn open_segment(
    master: &MasterKey,
    id: &str,
    blob: &[u8],
) -> std::result::Result<Vec<Entry>, String> {
    let rest = blob
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not a journal segment (bad magic)")?;
    let (len, rest) = rest.split_at_checked(2).ok_or("truncated")?;
    let wrapped_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let (wrapped, rest) = rest.split_at_checked(wrapped_len).ok_or("truncated")?;
    let (nonce_prefix, sealed) = rest.split_at_checked(NONCE_PREFIX_LEN).ok_or("truncated")?;
    let key = master.unwrap_data_key(wrapped).map_err(|e| e.to_string())?;
    let mut body = sealed.to_vec();
    key.open(nonce_prefix, 0, &mut body)
        .map_err(|e| e.to_string())?;
    let body: SegmentBody =
        serde_json::from_slice(&body).map_err(|e| format!("unreadable entries: {e}"))?;
    if body.id != id {
        return Err(format!("it holds segment {} instead", body.id));
    }
    Ok(body.entries)
}

/// The journal segments of `installation` the providers list: id → providers holding it,
/// in write order; and the providers that could not be listed.
pub async fn list_segments(
    installation: &str,
    clients: &[(String, ProviderClient)],
) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let prefix = segment_prefix(installation);
    let mut segments: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut unlisted = Vec::new();
    for (node, client) in clients {
        let (shards, listed) = client.list_all(&prefix).await;
        for s in shards {
            segments.entry(s.shard_id).or_default().push(node.clone());
        }
        if let Err(e) = listed {
            tracing::warn!(provider = %node, error = %e, "listing the metadata journal failed");
            unlisted.push(node.clone());
        }
    }
    (segments, unlisted)
}

/// Deletes the segments at or before position `upto` (which every kept snapshot contains).
pub async fn trim(fleet: &Fleet, clients: &[(String, ProviderClient)], upto: &str) -> u64 {
    let (segments, _) = list_segments(fleet.installation(), clients).await;
    let prefix = segment_prefix(fleet.installation());
    let mut deleted = 0;
    for (id, nodes) in segments {
        if id.strip_prefix(&prefix).is_none_or(|pos| pos > upto) {
            continue;
        }
        for node in nodes {
            if let Some(b) = fleet.backend(&node)
                && b.delete(&id).await.is_ok()
            {
                deleted += 1;
            }
        }
    }
    deleted
}

/// What replaying the journal did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Segments after the snapshot that were read and replayed.
    pub segments: u64,
    /// Entries applied.
    pub applied: u64,
    /// Entries the store already reflected (or that no longer applied).
    pub skipped: u64,
    /// Segments no provider had a readable copy of, with why.
    pub unreadable: Vec<String>,
    /// Entries the store refused, with why.
    pub failed: Vec<String>,
    /// Providers that could not be listed.
    pub unlisted: Vec<String>,
}

/// Replays onto `store` the journal segments written after position `cut` (all of them when
/// the snapshot predates the journal and has none), in write order.
pub async fn replay(
    fleet: &Fleet,
    master: &MasterKey,
    clients: &[(String, ProviderClient)],
    store: &dyn MetadataStore,
    cut: Option<&str>,
) -> Replayed {
    let (segments, unlisted) = list_segments(fleet.installation(), clients).await;
    let prefix = segment_prefix(fleet.installation());
    let mut out = Replayed {
        unlisted,
        ..Replayed::default()
    };
    let wanted: Vec<(String, Vec<String>)> = segments
        .into_iter()
        .filter(|(id, _)| {
            id.strip_prefix(&prefix)
                .is_some_and(|pos| cut.is_none_or(|cut| pos > cut))
        })
        .collect();
    // Fetched several at a time, applied in write order.
    let mut fetched = futures::stream::iter(wanted)
        .map(|(id, nodes)| async move {
            let mut problems = Vec::new();
            for node in &nodes {
                let Some(b) = fleet.backend(node) else {
                    continue;
                };
                match b.get(&id).await {
                    Ok(blob) => match open_segment(master, &id, &blob) {
                        Ok(entries) => return (id, Ok(entries)),
                        Err(e) => problems.push(format!("{node}: {e}")),
                    },
                    Err(e) => problems.push(format!("{node}: {e}")),
                }
            }
            (id, Err(problems.join("; ")))
        })
        .buffered(REPLAY_FETCHES);
    while let Some((id, fetched)) = fetched.next().await {
        let entries = match fetched {
            Ok(entries) => entries,
            Err(problems) => {
                out.unreadable.push(format!("{id} ({problems})"));
                continue;
            }
        };
        out.segments += 1;
        for entry in &entries {
            match apply(store, entry) {
                Ok(true) => out.applied += 1,
                Ok(false) => out.skipped += 1,
                Err(e) => out.failed.push(format!("{id}: {e}")),
            }
        }
    }
    out
}

/// Applies one entry to `store`; `false` when the store already reflects it or it no longer
/// applies (what it changed is gone again). Safe to apply an entry twice.
pub fn apply(store: &dyn MetadataStore, entry: &Entry) -> Result<bool> {
    let skip_gone = |r: Result<()>| match r {
        Ok(()) => Ok(true),
        Err(MetaError::NoSuchBucket(_) | MetaError::NoSuchUpload { .. }) => Ok(false),
        Err(e) => Err(e),
    };
    match entry {
        Entry::CreateBucket { bucket } => match store.create_bucket(bucket) {
            Ok(()) => Ok(true),
            Err(MetaError::BucketExists(_)) => Ok(false),
            Err(e) => Err(e),
        },
        Entry::DeleteBucket { name } => skip_gone(store.delete_bucket(name)),
        Entry::SetVersioning { name, versioning } => {
            skip_gone(store.set_versioning(name, *versioning))
        }
        Entry::SetBucketPlan { name, plan } => {
            skip_gone(store.set_bucket_plan(name, plan.as_deref()))
        }
        Entry::SetLifecycle { bucket, rules } => {
            skip_gone(store.set_lifecycle(bucket, rules.as_deref()))
        }
        Entry::PutVersion { version } => {
            if store.bucket(&version.bucket)?.is_none() {
                return Ok(false);
            }
            if store
                .version(&version.bucket, &version.key, Some(&version.version_id))?
                .as_ref()
                == Some(version)
                && store.version(&version.bucket, &version.key, None)?.as_ref() == Some(version)
            {
                return Ok(false);
            }
            store.put_version(version).map(|_| true)
        }
        Entry::DeleteVersion {
            bucket,
            key,
            version_id,
        } => Ok(store.delete_version(bucket, key, version_id)?.is_some()),
        Entry::CreateUpload { upload } => {
            if store
                .upload(&upload.bucket, &upload.key, &upload.upload_id)?
                .is_some()
            {
                return Ok(false);
            }
            skip_gone(store.create_upload(upload))
        }
        Entry::PutPart {
            bucket,
            key,
            upload_id,
            part,
        } => match store.put_part(bucket, key, upload_id, part) {
            Ok(_) => Ok(true),
            Err(MetaError::NoSuchUpload { .. }) => Ok(false),
            Err(e) => Err(e),
        },
        Entry::CompleteUpload {
            upload_id,
            used,
            version,
        } => match store.complete_upload(upload_id, used, version) {
            Ok(_) => Ok(true),
            Err(MetaError::NoSuchUpload { .. } | MetaError::PartChanged { .. }) => Ok(false),
            Err(e) => Err(e),
        },
        Entry::AbortUpload {
            bucket,
            key,
            upload_id,
        } => match store.abort_upload(bucket, key, upload_id) {
            Ok(_) => Ok(true),
            Err(MetaError::NoSuchUpload { .. }) => Ok(false),
            Err(e) => Err(e),
        },
        Entry::Policies { yaml } => {
            let current = store.shared_policies()?;
            if current.as_ref().is_some_and(|(_, y)| y == yaml) {
                return Ok(false);
            }
            let expected = current.map_or(0, |(revision, _)| revision);
            Ok(store.put_shared_policies(expected, yaml)?.is_some())
        }
        Entry::SwapLayout {
            bucket,
            key,
            version_id,
            expected,
            plan,
            layout,
        } => {
            let Some(current) = store.version(bucket, key, Some(version_id))? else {
                return Ok(false);
            };
            if current.layout.as_ref() != Some(expected) {
                return Ok(false);
            }
            store.swap_layout(&current, plan, layout)
        }
    }
}

/// A metadata store whose changes are journaled: see the module documentation.
pub struct JournaledStore {
    inner: Arc<dyn MetadataStore>,
    journal: Arc<Journal>,
    /// Held across a change and its append, so the journal's order is the commit order
    /// (the store's own lock instead, when it has one: [`MetadataStore::commit_order`]).
    order: Mutex<()>,
}

impl JournaledStore {
    pub fn new(inner: Arc<dyn MetadataStore>, journal: Arc<Journal>) -> Self {
        Self {
            inner,
            journal,
            order: Mutex::new(()),
        }
    }

    /// Runs `change` on the store and journals what `entry` makes of its outcome.
    fn logged<T>(
        &self,
        change: impl FnOnce(&dyn MetadataStore) -> Result<T>,
        entry: impl FnOnce(&T) -> Option<Entry>,
    ) -> Result<T> {
        let order = self.inner.commit_order().unwrap_or(&self.order);
        let _order = order.lock().unwrap_or_else(PoisonError::into_inner);
        let out = change(self.inner.as_ref())?;
        if let Some(e) = entry(&out) {
            self.journal.append(&e);
        }
        Ok(out)
    }

    /// [`JournaledStore::logged`] for an object write or delete. On a store with a commit
    /// order of its own the append is the change's commit hook, made right after the
    /// group commit holding it, in commit order; no lock is held around the change, so
    /// concurrent ones commit together (one fsync).
    fn grouped<T: 'static>(
        &self,
        change: impl FnOnce(&dyn MetadataStore) -> Result<T>,
        entry: impl FnOnce(&T) -> Option<Entry> + Send + 'static,
    ) -> Result<T> {
        if self.inner.commit_order().is_none() {
            return self.logged(change, entry);
        }
        let journal = Arc::clone(&self.journal);
        crate::meta::set_commit_hook(Box::new(move |out: &dyn std::any::Any| {
            if let Some(e) = out.downcast_ref::<T>().and_then(entry) {
                journal.append(&e);
            }
        }));
        let out = change(self.inner.as_ref());
        // Not left for this thread's next change if this one failed before queueing.
        crate::meta::take_commit_hook();
        out
    }
}

impl MetadataStore for JournaledStore {
    fn create_bucket(&self, bucket: &Bucket) -> Result<()> {
        self.logged(
            |s| s.create_bucket(bucket),
            |()| {
                Some(Entry::CreateBucket {
                    bucket: bucket.clone(),
                })
            },
        )
    }
    fn bucket(&self, name: &str) -> Result<Option<Bucket>> {
        self.inner.bucket(name)
    }
    fn buckets(&self) -> Result<Vec<Bucket>> {
        self.inner.buckets()
    }
    fn plan_usage(&self) -> Result<Vec<PlanUsage>> {
        self.inner.plan_usage()
    }
    fn shares_policies(&self) -> bool {
        self.inner.shares_policies()
    }
    fn shared_policies(&self) -> Result<Option<(i64, String)>> {
        self.inner.shared_policies()
    }
    fn put_shared_policies(&self, expected: i64, yaml: &str) -> Result<Option<i64>> {
        self.logged(
            |s| s.put_shared_policies(expected, yaml),
            |stored| {
                stored.map(|_| Entry::Policies {
                    yaml: yaml.to_owned(),
                })
            },
        )
    }
    fn record_probes(&self, outcomes: &[(String, bool)], now: i64) -> Result<()> {
        self.inner.record_probes(outcomes, now)
    }
    fn record_pools(&self, pools: &[(String, String)], now: i64) -> Result<()> {
        self.inner.record_pools(pools, now)
    }
    fn provider_pools(&self) -> Result<BTreeMap<String, String>> {
        self.inner.provider_pools()
    }
    fn providers_seen(&self) -> Result<BTreeMap<String, ProviderSeen>> {
        self.inner.providers_seen()
    }
    fn plan_health(&self, plan: &str, lost_cut: i64, grace_ms: i64) -> Result<Vec<HealthGroup>> {
        self.inner.plan_health(plan, lost_cut, grace_ms)
    }
    fn queued_versions(
        &self,
        plan: &str,
        lost_cut: i64,
        grace_ms: i64,
        min_healthy: Option<u64>,
        lost: bool,
        limit: usize,
    ) -> Result<Vec<QueuedVersion>> {
        self.inner
            .queued_versions(plan, lost_cut, grace_ms, min_healthy, lost, limit)
    }
    fn version_by_seq(&self, seq: i64) -> Result<Option<ObjectVersion>> {
        self.inner.version_by_seq(seq)
    }
    fn versions_after(&self, after: i64, limit: usize) -> Result<Vec<(i64, ObjectVersion)>> {
        self.inner.versions_after(after, limit)
    }
    fn bad_shards(&self, seq: i64) -> Result<Vec<ShardPos>> {
        self.inner.bad_shards(seq)
    }
    fn mark_bad_shards(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        shards: &[(ShardPos, String)],
        now: i64,
    ) -> Result<()> {
        // Health, not content: scrub and audits find bad shards again.
        self.inner
            .mark_bad_shards(bucket, key, version_id, shards, now)
    }
    fn replace_layout(&self, seq: i64, expected: &Layout, new: &Layout) -> Result<bool> {
        self.logged(
            |s| {
                let version = s.version_by_seq(seq)?;
                let swapped = s.replace_layout(seq, expected, new)?;
                Ok(version.filter(|_| swapped))
            },
            |version| {
                version.as_ref().map(|v| Entry::SwapLayout {
                    bucket: v.bucket.clone(),
                    key: v.key.clone(),
                    version_id: v.version_id.clone(),
                    expected: expected.clone(),
                    plan: v.plan.clone(),
                    layout: new.clone(),
                })
            },
        )
        .map(|version| version.is_some())
    }
    fn audit_samples(&self, provider: &str, count: usize) -> Result<Vec<AuditSample>> {
        self.inner.audit_samples(provider, count)
    }
    fn referenced_shards(&self, provider: &str) -> Result<std::collections::HashSet<String>> {
        self.inner.referenced_shards(provider)
    }
    fn provider_usage(&self) -> Result<BTreeMap<String, (u64, u64)>> {
        self.inner.provider_usage()
    }
    fn delete_bucket(&self, name: &str) -> Result<()> {
        self.logged(
            |s| s.delete_bucket(name),
            |()| {
                Some(Entry::DeleteBucket {
                    name: name.to_owned(),
                })
            },
        )
    }
    fn set_versioning(&self, name: &str, versioning: Versioning) -> Result<()> {
        self.logged(
            |s| s.set_versioning(name, versioning),
            |()| {
                Some(Entry::SetVersioning {
                    name: name.to_owned(),
                    versioning,
                })
            },
        )
    }
    fn set_bucket_plan(&self, name: &str, plan: Option<&str>) -> Result<()> {
        self.logged(
            |s| s.set_bucket_plan(name, plan),
            |()| {
                Some(Entry::SetBucketPlan {
                    name: name.to_owned(),
                    plan: plan.map(str::to_owned),
                })
            },
        )
    }
    fn put_version(&self, version: &ObjectVersion) -> Result<PutOutcome> {
        let entry = Entry::PutVersion {
            version: version.clone(),
        };
        self.grouped(|s| s.put_version(version), |_| Some(entry))
    }
    fn version(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectVersion>> {
        self.inner.version(bucket, key, version_id)
    }
    fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<ObjectVersion>> {
        let entry = Entry::DeleteVersion {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            version_id: version_id.to_owned(),
        };
        self.grouped(
            |s| s.delete_version(bucket, key, version_id),
            |deleted: &Option<ObjectVersion>| deleted.as_ref().map(|_| entry),
        )
    }
    fn list(&self, bucket: &str, query: &ListQuery<'_>) -> Result<ListPage> {
        self.inner.list(bucket, query)
    }
    fn list_versions(&self, bucket: &str, query: &VersionQuery<'_>) -> Result<VersionPage> {
        self.inner.list_versions(bucket, query)
    }
    fn create_upload(&self, upload: &Upload) -> Result<()> {
        self.logged(
            |s| s.create_upload(upload),
            |()| {
                Some(Entry::CreateUpload {
                    upload: upload.clone(),
                })
            },
        )
    }
    fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Option<Upload>> {
        self.inner.upload(bucket, key, upload_id)
    }
    fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part: &UploadPart,
    ) -> Result<Option<UploadPart>> {
        self.logged(
            |s| s.put_part(bucket, key, upload_id, part),
            |_| {
                Some(Entry::PutPart {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    upload_id: upload_id.to_owned(),
                    part: part.clone(),
                })
            },
        )
    }
    fn parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        after: i32,
        max: usize,
    ) -> Result<Vec<UploadPart>> {
        self.inner.parts(bucket, key, upload_id, after, max)
    }
    fn uploads(&self, bucket: &str, query: &UploadQuery<'_>) -> Result<UploadPage> {
        self.inner.uploads(bucket, query)
    }
    fn complete_upload(
        &self,
        upload_id: &str,
        used: &[(i32, String)],
        version: &ObjectVersion,
    ) -> Result<CompleteOutcome> {
        self.logged(
            |s| s.complete_upload(upload_id, used, version),
            |_| {
                Some(Entry::CompleteUpload {
                    upload_id: upload_id.to_owned(),
                    used: used.to_vec(),
                    version: version.clone(),
                })
            },
        )
    }
    fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Vec<UploadPart>> {
        self.logged(
            |s| s.abort_upload(bucket, key, upload_id),
            |_| {
                Some(Entry::AbortUpload {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    upload_id: upload_id.to_owned(),
                })
            },
        )
    }
    fn set_lifecycle(&self, bucket: &str, rules: Option<&str>) -> Result<()> {
        self.logged(
            |s| s.set_lifecycle(bucket, rules),
            |()| {
                Some(Entry::SetLifecycle {
                    bucket: bucket.to_owned(),
                    rules: rules.map(str::to_owned),
                })
            },
        )
    }
    fn lifecycle(&self, bucket: &str) -> Result<Option<String>> {
        self.inner.lifecycle(bucket)
    }
    fn swap_layout(&self, current: &ObjectVersion, plan: &str, layout: &Layout) -> Result<bool> {
        self.logged(
            |s| s.swap_layout(current, plan, layout),
            |swapped| {
                let expected = current.layout.clone().filter(|_| *swapped)?;
                Some(Entry::SwapLayout {
                    bucket: current.bucket.clone(),
                    key: current.key.clone(),
                    version_id: current.version_id.clone(),
                    expected,
                    plan: plan.to_owned(),
                    layout: layout.clone(),
                })
            },
        )
    }
    fn snapshot_into(&self, path: &std::path::Path) -> Result<()> {
        self.inner.snapshot_into(path)
    }
    fn shared(&self) -> bool {
        self.inner.shared()
    }
    fn claim_repair(&self, seq: i64, holder: &str, now: i64, lease_ms: i64) -> Result<bool> {
        self.inner.claim_repair(seq, holder, now, lease_ms)
    }
    fn release_repair(&self, seq: i64, holder: &str) -> Result<()> {
        self.inner.release_repair(seq, holder)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::datapath::layout::{Encryption, Scheme};
    use crate::meta::{NULL_VERSION, SqliteStore};

    impl Journal {
        /// Journals without a flusher, so a test can read the entries back.
        fn activate(&self) {
            self.state().active = true;
        }

        fn take(&self) -> Vec<Entry> {
            std::mem::take(&mut self.state().pending)
                .iter()
                .map(|json| serde_json::from_slice(json).unwrap())
                .collect()
        }
    }

    fn master() -> Arc<MasterKey> {
        Arc::new(MasterKey::from_bytes(&[7; 32]))
    }

    fn layout(tag: u8) -> Layout {
        Layout {
            scheme: Scheme::Erasure { data: 2, parity: 1 },
            encryption: Encryption::None,
            segment_size: 16,
            segments: vec![],
            inline: Some(vec![tag; 3]),
            parts: vec![],
        }
    }

    fn version(bucket: &str, key: &str, id: &str, tag: u8) -> ObjectVersion {
        ObjectVersion {
            bucket: bucket.into(),
            key: key.into(),
            version_id: id.into(),
            delete_marker: false,
            size: 3,
            etag: format!("etag-{tag}"),
            content_type: Some("image/jpeg".into()),
            user_metadata: BTreeMap::from([("owner".to_string(), "ana".to_string())]),
            last_modified: i64::from(tag),
            plan: "standard".into(),
            layout: Some(layout(tag)),
        }
    }

    /// Everything a client could observe of a store, for comparing two of them.
    fn observe(s: &dyn MetadataStore) -> Vec<String> {
        let mut out = Vec::new();
        for b in s.buckets().unwrap() {
            out.push(format!(
                "{b:?} lifecycle={:?}",
                s.lifecycle(&b.name).unwrap()
            ));
            let page = s
                .list_versions(
                    &b.name,
                    &VersionQuery {
                        max_keys: 1000,
                        ..VersionQuery::default()
                    },
                )
                .unwrap();
            out.extend(page.versions.iter().map(|v| format!("{v:?}")));
            let uploads = s
                .uploads(
                    &b.name,
                    &UploadQuery {
                        max_uploads: 1000,
                        ..UploadQuery::default()
                    },
                )
                .unwrap();
            for u in uploads.uploads {
                out.push(format!("{u:?}"));
                let parts = s.parts(&b.name, &u.key, &u.upload_id, 0, 1000).unwrap();
                out.extend(parts.iter().map(|p| format!("{p:?}")));
            }
        }
        out
    }

    /// A history touching every kind of change, through a journaled store.
    fn history(s: &dyn MetadataStore) {
        let bucket = |name: &str, versioning| Bucket {
            name: name.into(),
            created: 1,
            default_plan: None,
            versioning,
        };
        s.create_bucket(&bucket("photos", Versioning::Unversioned))
            .unwrap();
        s.put_version(&version("photos", "a.jpg", NULL_VERSION, 1))
            .unwrap();
        s.put_version(&version("photos", "b.jpg", NULL_VERSION, 2))
            .unwrap();
        // Overwritten, deleted, moved to another plan.
        s.put_version(&version("photos", "a.jpg", NULL_VERSION, 3))
            .unwrap();
        s.delete_version("photos", "b.jpg", NULL_VERSION).unwrap();
        let a = s.version("photos", "a.jpg", None).unwrap().unwrap();
        assert!(s.swap_layout(&a, "archive", &layout(4)).unwrap());
        s.set_bucket_plan("photos", Some("archive")).unwrap();
        s.set_lifecycle("photos", Some("[{\"id\":\"r\"}]")).unwrap();
        // Versions and a delete marker.
        s.create_bucket(&bucket("docs", Versioning::Unversioned))
            .unwrap();
        s.set_versioning("docs", Versioning::Enabled).unwrap();
        s.put_version(&version("docs", "d", "v1", 5)).unwrap();
        s.put_version(&version("docs", "d", "v2", 6)).unwrap();
        let mut marker = version("docs", "d", "v3", 7);
        marker.delete_marker = true;
        marker.layout = None;
        s.put_version(&marker).unwrap();
        s.delete_version("docs", "d", "v1").unwrap();
        // Multipart: one completed, one aborted, one left open.
        for id in ["u1", "u2", "u3"] {
            s.create_upload(&Upload {
                bucket: "docs".into(),
                key: format!("big-{id}"),
                upload_id: id.into(),
                plan: "standard".into(),
                content_type: None,
                user_metadata: BTreeMap::new(),
                initiated: 9,
            })
            .unwrap();
            for n in 1..=2 {
                s.put_part(
                    "docs",
                    &format!("big-{id}"),
                    id,
                    &UploadPart {
                        part_number: n,
                        size: 3,
                        etag: format!("p{n}"),
                        last_modified: 9,
                        layout: layout(10 + u8::try_from(n).unwrap()),
                    },
                )
                .unwrap();
            }
        }
        let mut big = version("docs", "big-u1", "v9", 12);
        big.layout = Some(Layout {
            parts: vec![layout(11), layout(12)],
            inline: None,
            ..layout(0)
        });
        s.complete_upload("u1", &[(1, "p1".into()), (2, "p2".into())], &big)
            .unwrap();
        s.abort_upload("docs", "big-u2", "u2").unwrap();
        // A repair swaps a layout by row id.
        let (seq, v) = s
            .versions_after(0, 100)
            .unwrap()
            .into_iter()
            .find(|(_, v)| v.key == "d" && v.version_id == "v2")
            .unwrap();
        assert!(
            s.replace_layout(seq, v.layout.as_ref().unwrap(), &layout(13))
                .unwrap()
        );
        // A bucket created and removed again.
        s.create_bucket(&bucket("tmp", Versioning::Unversioned))
            .unwrap();
        s.delete_bucket("tmp").unwrap();
        // Failed changes journal nothing.
        assert!(s.delete_bucket("photos").is_err());
        assert!(
            s.delete_version("photos", "nope", NULL_VERSION)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn concurrent_object_writes_commit_together_and_replay_in_commit_order() {
        let journal = Journal::new(master());
        journal.activate();
        let live = JournaledStore::new(
            Arc::new(SqliteStore::open_in_memory().unwrap()),
            Arc::clone(&journal),
        );
        live.create_bucket(&Bucket {
            name: "b".into(),
            created: 1,
            default_plan: None,
            versioning: Versioning::Enabled,
        })
        .unwrap();
        // Eight writers on five shared keys, with deletes and other kinds of change between:
        // the replayed journal must give the same versions in the same order.
        std::thread::scope(|scope| {
            for t in 0..8u8 {
                let live = &live;
                scope.spawn(move || {
                    for i in 0..60u8 {
                        let key = format!("k{}", i % 5);
                        let id = format!("v{t}-{i}");
                        let tag = t.wrapping_mul(60).wrapping_add(i);
                        live.put_version(&version("b", &key, &id, tag)).unwrap();
                        if i % 3 == 0 {
                            assert!(live.delete_version("b", &key, &id).unwrap().is_some());
                        }
                        if i % 10 == 0 {
                            let rules = format!("[{{\"id\":\"{t}-{i}\"}}]");
                            live.set_lifecycle("b", Some(&rules)).unwrap();
                        }
                    }
                });
            }
        });
        // A failed change journals nothing and leaves no hook behind.
        assert!(live.put_version(&version("nope", "k", "v", 1)).is_err());
        assert!(crate::meta::take_commit_hook().is_none());
        let entries = journal.take();
        assert_eq!(entries.len(), 1 + 8 * (60 + 20 + 6));
        let restored = SqliteStore::open_in_memory().unwrap();
        for e in &entries {
            apply(&restored, e).unwrap();
        }
        assert_eq!(observe(&restored), observe(&live));
    }

    #[test]
    fn replaying_from_any_snapshot_rebuilds_the_store() {
        let journal = Journal::new(master());
        journal.activate();
        let live = JournaledStore::new(
            Arc::new(SqliteStore::open_in_memory().unwrap()),
            Arc::clone(&journal),
        );
        history(&live);
        let entries = journal.take();
        assert_eq!(entries.len(), 28, "{entries:#?}");
        let want = observe(&live);
        // A snapshot holds the first `copied` changes; its cut may lag behind (`cut` ≤
        // `copied`), so replay starts there and meets changes the copy already has.
        for copied in 0..=entries.len() {
            for cut in [0, copied / 2, copied] {
                let restored = SqliteStore::open_in_memory().unwrap();
                for e in &entries[..copied] {
                    apply(&restored, e).unwrap();
                }
                for e in &entries[cut..] {
                    apply(&restored, e).unwrap();
                }
                assert_eq!(
                    observe(&restored),
                    want,
                    "snapshot after {copied} changes, replayed from {cut}"
                );
            }
        }
    }

    #[test]
    fn segments_open_only_with_their_key_and_name() {
        let journal = Journal::new(master());
        let entry = Entry::DeleteBucket { name: "x".into() };
        let json = vec![serde_json::to_vec(&entry).unwrap()];
        let blob = journal.seal("seg-1", &json).unwrap();
        assert_eq!(
            open_segment(&master(), "seg-1", &blob).unwrap(),
            vec![entry]
        );
        let err = open_segment(&master(), "seg-2", &blob).unwrap_err();
        assert!(err.contains("seg-1 instead"), "{err}");
        let other = MasterKey::from_bytes(&[8; 32]);
        assert!(open_segment(&other, "seg-1", &blob).is_err());
        let mut flipped = blob.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(open_segment(&master(), "seg-1", &flipped).is_err());
        assert!(
            open_segment(&master(), "seg-1", b"PK\x03\x04")
                .unwrap_err()
                .contains("magic")
        );
        assert!(open_segment(&master(), "seg-1", &blob[..20]).is_err());
    }

    /// A provider in memory that can be down or lie about what it stored.
    struct Fake {
        id: String,
        shards: Mutex<BTreeMap<String, Bytes>>,
        down: std::sync::atomic::AtomicBool,
        lies: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl crate::datapath::stripes::ShardBackend for Fake {
        fn node_id(&self) -> &str {
            &self.id
        }
        async fn put(
            &self,
            id: &str,
            data: Bytes,
            _: &[u8; 32],
        ) -> std::result::Result<[u8; 32], crate::datapath::stripes::BackendError> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(crate::datapath::stripes::BackendError("unavailable".into()));
            }
            if self.lies.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok([0; 32]);
            }
            let hash = *blake3::hash(&data).as_bytes();
            self.shards.lock().unwrap().insert(id.into(), data);
            Ok(hash)
        }
        async fn get(
            &self,
            id: &str,
        ) -> std::result::Result<Bytes, crate::datapath::stripes::BackendError> {
            let found = self.shards.lock().unwrap().get(id).cloned();
            found.ok_or_else(|| crate::datapath::stripes::BackendError("NotFound".into()))
        }
        async fn delete(
            &self,
            id: &str,
        ) -> std::result::Result<(), crate::datapath::stripes::BackendError> {
            self.shards.lock().unwrap().remove(id);
            Ok(())
        }
    }

    /// The providers `backends` and an in-memory store journaled to them, as `serve`
    /// builds it (no flusher runs yet).
    fn journaled_gateway(
        backends: Vec<Arc<dyn crate::datapath::stripes::ShardBackend>>,
    ) -> (Arc<Journal>, Arc<dyn MetadataStore>, Arc<Fleet>) {
        let journal = Journal::new(master());
        let store: Arc<dyn MetadataStore> = Arc::new(JournaledStore::new(
            Arc::new(SqliteStore::open_in_memory().unwrap()),
            Arc::clone(&journal),
        ));
        let fleet = Fleet::new(master().installation(), &backends, Arc::default());
        (journal, store, Arc::new(fleet))
    }

    fn set(flag: &std::sync::atomic::AtomicBool, on: bool) {
        flag.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    #[tokio::test]
    async fn requests_wait_for_three_copies_and_fail_while_none_can_be_stored() {
        let fakes: Vec<Arc<Fake>> = (0..4)
            .map(|i| {
                Arc::new(Fake {
                    id: format!("p{i}"),
                    shards: Mutex::default(),
                    down: false.into(),
                    lies: false.into(),
                })
            })
            .collect();
        let backends = fakes
            .iter()
            .map(|f| Arc::clone(f) as Arc<dyn crate::datapath::stripes::ShardBackend>)
            .collect();
        let (journal, store, gateway) = journaled_gateway(backends);
        let nodes: Vec<String> = fakes.iter().map(|f| f.id.clone()).collect();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        assert!(!journal.has_holders(), "no flusher yet");
        let task = journal.spawn(Arc::clone(&gateway), move || nodes.clone(), None, stopped);
        assert!(
            journal.has_holders(),
            "small objects may be kept in metadata"
        );
        let copies = |fakes: &[Arc<Fake>]| -> Vec<(String, Vec<Entry>)> {
            fakes
                .iter()
                .flat_map(|f| {
                    let shards = f.shards.lock().unwrap().clone();
                    shards.into_iter().map(|(id, blob)| {
                        let entries = open_segment(&master(), &id, &blob).unwrap();
                        (id, entries)
                    })
                })
                .collect()
        };
        let bucket = |name: &str| Bucket {
            name: name.into(),
            created: 1,
            default_plan: None,
            versioning: Versioning::Unversioned,
        };

        store.create_bucket(&bucket("a")).unwrap();
        journal.barrier().await.unwrap();
        let stored = copies(&fakes);
        assert_eq!(stored.len(), JOURNAL_COPIES, "{stored:?}");
        assert!(stored.iter().all(|(id, e)| {
            id.starts_with(&segment_prefix(master().installation()))
                && e == &[Entry::CreateBucket {
                    bucket: bucket("a"),
                }]
        }));
        assert_eq!(
            journal.cut(),
            stored[0]
                .0
                .strip_prefix(&segment_prefix(master().installation()))
                .unwrap()
        );

        // One provider refuses and one acknowledges bytes it did not store: the others
        // stand in, so the change still gets its copies.
        set(&fakes[0].down, true);
        set(&fakes[1].lies, true);
        store.create_bucket(&bucket("b")).unwrap();
        journal.barrier().await.unwrap();
        let with_b = copies(&fakes)
            .into_iter()
            .filter(|(_, e)| {
                e.contains(&Entry::CreateBucket {
                    bucket: bucket("b"),
                })
            })
            .count();
        assert_eq!(with_b, 2, "only two providers could take it");

        // None can: the request fails, naming why; the change is kept and stored once a
        // provider is back.
        for f in &fakes {
            set(&f.down, true);
        }
        store.create_bucket(&bucket("c")).unwrap();
        let err = journal.barrier().await.unwrap_err();
        assert!(
            err.contains("stored on 0 of") && err.contains("unavailable"),
            "{err}"
        );
        set(&fakes[3].down, false);
        store.create_bucket(&bucket("d")).unwrap();
        tokio::time::timeout(BARRIER_TIMEOUT, async {
            while journal.barrier().await.is_err() {}
        })
        .await
        .unwrap();
        let on_3: Vec<Entry> = copies(&fakes[3..])
            .into_iter()
            .flat_map(|(_, e)| e)
            .collect();
        for name in ["c", "d"] {
            assert!(
                on_3.contains(&Entry::CreateBucket {
                    bucket: bucket(name)
                }),
                "{name} missing from {on_3:?}"
            );
        }
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn without_providers_writes_go_on_unjournaled() {
        let (journal, store, gateway) = journaled_gateway(Vec::new());
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let _task = journal.spawn(gateway, Vec::new, None, stopped);
        // Nothing would hold small objects beyond this disk: they are striped as usual.
        assert!(!journal.has_holders());
        let cut = journal.cut();
        store
            .create_bucket(&Bucket {
                name: "clouds-only".into(),
                created: 1,
                default_plan: None,
                versioning: Versioning::Unversioned,
            })
            .unwrap();
        journal.barrier().await.unwrap();
        assert_eq!(journal.cut(), cut, "nothing was stored, so the cut stays");
    }

    #[test]
    fn a_clock_behind_the_journal_numbers_after_it() {
        let journal = Journal::new(master());
        let prefix = segment_prefix(master().installation());
        let ahead = crate::clock::now_ms() + 3_600_000;
        let ids = [
            format!("{prefix}{}", position(ahead - 5, 7)),
            format!("{prefix}{}", position(ahead, 2)),
            format!("{JOURNAL_PREFIX}otherinstall-{}", position(ahead + 99, 1)),
        ];
        journal.follow_ids(ids.iter().map(String::as_str));
        assert_eq!(journal.cut(), position(ahead + 1, 0));
        assert!(format!("{prefix}{}", journal.cut()) > ids[1]);
        // A journal already behind nobody stays where it is.
        let fresh = Journal::new(master());
        let before = fresh.cut();
        fresh.follow_ids(ids[..1].iter().map(|_| "garbage"));
        assert_eq!(fresh.cut(), before);
    }

    #[test]
    fn positions_sort_in_write_order_across_runs() {
        let a = position(1_700_000_000_000, 9);
        let b = position(1_700_000_000_000, 10);
        let c = position(1_700_000_000_001, 1);
        assert!(a < b && b < c, "{a} {b} {c}");
    }
}
