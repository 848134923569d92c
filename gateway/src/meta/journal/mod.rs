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

mod replay;
mod segment;
mod store;

pub use replay::{Replayed, apply, replay};
pub use segment::{list_segments, open_segment, seal_segment, segment_prefix, trim};
pub use store::JournaledStore;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use sublet_provider::client::ProviderClient;

use self::segment::position;
use crate::datapath::codec::MasterKey;
use crate::datapath::fleet::Fleet;
use crate::datapath::layout::Layout;
use crate::datapath::stripes::put_shard;
use crate::meta::{Bucket, ObjectVersion, StoredKey, Upload, UploadPart, User, Versioning};

/// Shard ids of journal segments start with this, then the installation tag.
pub const JOURNAL_PREFIX: &str = "sublet-meta-journal-";

/// Providers each segment is stored on (fewer when fewer are configured): the journal
/// outlives the loss of two of them, as a 4+2 plan's objects do.
pub const JOURNAL_COPIES: usize = 3;

/// How long a request waits for its change to reach the journal before it fails.
pub const BARRIER_TIMEOUT: Duration = Duration::from_secs(30);

/// Segments dated after this machine's clock [`Journal::follow`] reads at most before it
/// numbers from the clock: a provider listing many forged ids costs that many fetches.
pub const FOLLOW_CHECKS: usize = 16;

/// How long one provider may take to store a segment.
const PUT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Object lock enabled on a bucket, or its configuration changed.
    SetBucketLock {
        bucket: String,
        config: String,
    },
    /// A version's retention or legal hold changed in place.
    SetVersionLock {
        bucket: String,
        key: String,
        version_id: String,
        lock: crate::meta::lock::ObjectLock,
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
    SetBucketTags {
        bucket: String,
        tags: Option<String>,
    },
    /// Put/DeleteBucketCors: a bucket's CORS rules (JSON) replaced or removed.
    SetBucketCors {
        bucket: String,
        rules: Option<String>,
    },
    /// Put/DeleteBucketPolicy.
    SetBucketPolicy {
        bucket: String,
        policy: Option<String>,
    },
    /// Put/DeletePublicAccessBlock.
    SetPublicAccessBlock {
        bucket: String,
        config: Option<String>,
    },
    /// Put/DeleteBucketEncryption: a bucket's default encryption set or removed.
    SetBucketEncryption {
        bucket: String,
        config: Option<String>,
    },
    /// Put/DeleteBucketAcl (and CreateBucket with an ACL): a bucket's ACL (JSON).
    SetBucketAcl {
        bucket: String,
        acl: Option<String>,
    },
    /// Put/DeleteBucketOwnershipControls.
    SetBucketOwnership {
        bucket: String,
        ownership: Option<String>,
    },
    /// PutObjectAcl: one version's ACL replaced in place.
    SetObjectAcl {
        bucket: String,
        key: String,
        version_id: String,
        acl: Option<crate::meta::acl::Acl>,
    },
    /// Put/DeleteObjectTagging: one version's tags replaced in place.
    SetObjectTags {
        bucket: String,
        key: String,
        version_id: String,
        tags: std::collections::BTreeMap<String, String>,
    },
    /// The policy overlay applied through the admin API (a copy; the file is what runs).
    Policies {
        yaml: String,
    },
    /// A user created or changed through the admin API.
    PutUser {
        user: User,
    },
    DeleteUser {
        id: String,
    },
    /// An access key created, rotated, enabled or disabled (its secret sealed).
    PutKey {
        key: StoredKey,
    },
    DeleteKey {
        access_key: String,
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

    /// Makes this run's positions sort after every segment of this installation on the
    /// providers, so a clock that went back since the last run (a board without a real-time
    /// clock, before NTP) cannot order its segments before older ones. Only a segment that
    /// authenticates counts: a provider listing a forged id dated in the future must not
    /// move the journal. Call before [`Journal::spawn`].
    pub async fn follow(&self, fleet: &Fleet, clients: &[(String, ProviderClient)]) {
        let (segments, _) = list_segments(self.master.installation(), clients).await;
        self.follow_segments(fleet, &segments).await;
    }

    /// [`Journal::follow`] for the listed `segments` (id → providers listing it): checks
    /// those ahead of this run's clock, newest first, until one opens; each that does not
    /// is ignored and reported (at most [`FOLLOW_CHECKS`] of them are fetched).
    async fn follow_segments(&self, fleet: &Fleet, segments: &BTreeMap<String, Vec<String>>) {
        let epoch = self.state().epoch;
        let ahead = segments.iter().rev().filter_map(|(id, nodes)| {
            let ms = id
                .strip_prefix(&self.prefix)?
                .split('-')
                .next()?
                .parse::<i64>()
                .ok()?;
            (ms >= epoch).then_some((id, nodes, ms))
        });
        for (checked, (id, nodes, ms)) in ahead.enumerate() {
            if checked == FOLLOW_CHECKS {
                tracing::warn!(
                    checked,
                    "the providers list more journal segments dated after this machine's clock than are checked; numbering from the clock"
                );
                return;
            }
            let mut problems = Vec::new();
            let mut genuine = false;
            for node in nodes {
                let Some(b) = fleet.backend(node) else {
                    continue;
                };
                match b.get(id).await {
                    Ok(blob) => match open_segment(&self.master, id, &blob) {
                        Ok(_) => {
                            genuine = true;
                            break;
                        }
                        Err(e) => {
                            crate::metrics::count_forged_metadata("journal_segment");
                            problems.push(format!("{node}: {e}"));
                        }
                    },
                    Err(e) => problems.push(format!("{node}: {e}")),
                }
            }
            if !genuine {
                tracing::warn!(segment = %id, problems = %problems.join("; "), "a journal segment dated after this machine's clock cannot be read or failed authentication; ignored");
                continue;
            }
            let mut state = self.state();
            if let Some(next) = ms.checked_add(1)
                && !state.active
            {
                tracing::warn!(
                    newest_segment_ms = ms,
                    now_ms = state.epoch,
                    "the metadata journal on the providers is newer than this machine's clock; \
                     numbering after it"
                );
                state.epoch = next;
                state.cut = position(state.epoch, 0);
            }
            return;
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
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
