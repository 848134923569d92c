//! Metadata survival: the gateway stores encrypted snapshots of its metadata store through
//! the data path (default plan: erasure-coded, encrypted with the master key) and a small
//! manifest on every provider; `sublet recover` finds the newest manifest on the providers
//! and rebuilds the metadata file from it. Losing the gateway's disk then loses at most
//! the changes since the last snapshot — the master key must be backed up separately.
//! A timer ([`spawn_snapshots`]) takes one every interval; the admin API on demand.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sublet_provider::client::ProviderClient;

use bytes::Bytes;
use futures::StreamExt;
use s3s::dto::StreamingBlob;
use serde::{Deserialize, Serialize};

use crate::datapath::layout::Layout;
use crate::datapath::stripes::put_shard;
use crate::error::{Error, Result};
use crate::meta::{MetadataStore, ObjectVersion};
use crate::node::{Node, now_ms};

/// Shard ids of manifests: this prefix and the snapshot's creation time (ms, zero-padded so
/// ids sort by age).
pub const MANIFEST_PREFIX: &str = "sublet-meta-manifest-";

/// Snapshots kept; older ones are deleted after a new one is stored.
pub const KEEP_SNAPSHOTS: usize = 3;

/// What a manifest records: where the snapshot's bytes are and how to check them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Unix ms when the snapshot was taken.
    pub created: i64,
    /// Bytes of the SQLite file.
    pub size: u64,
    /// BLAKE3 of the SQLite file (hex).
    pub blake3: String,
    /// The plan its shards were written under.
    pub plan: String,
    /// Encrypted, erasure-coded like any object (its data key wrapped by the master key).
    pub layout: Layout,
    /// The metadata journal's position when the copy was taken: it contains every change
    /// journaled at or before it, and recovery replays the segments after it. `None` for
    /// a gateway keeping no journal (and for snapshots older than the journal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_cut: Option<String>,
}

impl Manifest {
    pub fn shard_id(&self) -> String {
        manifest_id(self.created)
    }
}

pub fn manifest_id(created: i64) -> String {
    format!("{MANIFEST_PREFIX}{created:015}")
}

fn unavailable(message: String) -> Error {
    Error::Unavailable(message)
}

/// Stores the file at `path` (a consistent copy of the metadata store) under the
/// default plan and its manifest on every provider that takes it (at least one).
/// `journal_cut` is the journal position read before the copy was taken.
pub async fn store_snapshot(
    node: &Node,
    path: &Path,
    journal_cut: Option<String>,
) -> Result<Manifest> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| Error::internal(format!("reading the snapshot {}: {e}", path.display())))?;
    let blake3 = blake3::hash(&bytes).to_hex().to_string();
    let size = bytes.len() as u64;
    let plan = node
        .plan(node.default_plan())
        .ok_or_else(|| Error::internal("the default plan is not configured"))?;
    let created = now_ms();
    let body = futures::stream::iter(
        bytes
            .chunks(1 << 20)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    // Never inline: the snapshot is the copy of the metadata itself.
    let written = node
        .store_striped(
            &plan,
            &manifest_id(created),
            Some(StreamingBlob::wrap(body)),
        )
        .await?;
    let manifest = Manifest {
        created,
        size,
        blake3,
        plan: plan.name.clone(),
        layout: written.layout,
        journal_cut,
    };
    let json = Bytes::from(
        serde_json::to_vec(&manifest).map_err(|e| Error::internal(format!("manifest: {e}")))?,
    );
    let id = manifest.shard_id();
    let providers = node.providers();
    let puts = providers.values().map(|b| {
        let json = json.clone();
        let id = id.clone();
        async move { put_shard(b.as_ref(), &id, json).await }
    });
    let stored = futures::future::join_all(puts)
        .await
        .into_iter()
        .filter(std::result::Result::is_ok)
        .count();
    if stored == 0 {
        node.free(Some(&manifest.layout)).await;
        return Err(unavailable(
            "no provider took the metadata snapshot's manifest".into(),
        ));
    }
    tracing::info!(bytes = size, providers = stored, "metadata snapshot stored");
    Ok(manifest)
}

/// Deletes the manifests `older` name, and their snapshots' shards.
pub async fn drop_snapshots(node: &Node, older: &[Manifest]) {
    for m in older {
        node.free(Some(&m.layout)).await;
        let id = m.shard_id();
        for b in node.providers().values() {
            let _ = b.delete(&id).await;
        }
    }
}

/// Parses a manifest read from a provider.
pub fn parse_manifest(bytes: &[u8]) -> std::result::Result<Manifest, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("unreadable manifest: {e}"))
}

/// The manifest named `id` from the first provider that has a readable copy.
pub async fn fetch_manifest(node: &Node, id: &str) -> Option<Manifest> {
    for b in node.providers().values() {
        if let Ok(bytes) = b.get(id).await
            && let Ok(m) = parse_manifest(&bytes)
            && m.shard_id() == id
        {
            return Some(m);
        }
    }
    None
}

/// Reads a snapshot back, checking its size and BLAKE3 hash.
pub async fn read_snapshot(node: &Node, manifest: &Manifest) -> Result<Vec<u8>> {
    let v = ObjectVersion {
        bucket: "(metadata snapshot)".into(),
        key: manifest.shard_id(),
        version_id: String::new(),
        delete_marker: false,
        size: manifest.size,
        etag: String::new(),
        content_type: None,
        user_metadata: Default::default(),
        last_modified: manifest.created,
        plan: manifest.plan.clone(),
        layout: Some(manifest.layout.clone()),
        attrs: Default::default(),
    };
    let mut stream = node.read_range(&v, 0..manifest.size).await?;
    let mut out = Vec::with_capacity(usize::try_from(manifest.size).unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.map_err(|e| Error::internal(e.to_string()))?);
    }
    let hash = blake3::hash(&out).to_hex().to_string();
    if hash != manifest.blake3 {
        return Err(Error::internal(format!(
            "snapshot {}: BLAKE3 {hash} differs from the manifest's {}",
            manifest.shard_id(),
            manifest.blake3
        )));
    }
    Ok(out)
}

/// How often a standalone gateway snapshots its metadata unless StorageGateway
/// `spec.snapshotInterval` says otherwise.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(3600);

/// Manifest ids any provider lists, newest first.
pub async fn manifest_ids(clients: &[(String, ProviderClient)]) -> Vec<String> {
    let mut ids = BTreeSet::new();
    for (node, client) in clients {
        let (shards, listed) = client.list_all(MANIFEST_PREFIX).await;
        ids.extend(shards.into_iter().map(|s| s.shard_id));
        if let Err(e) = listed {
            tracing::warn!(provider = %node, error = %e, "listing snapshot manifests failed");
        }
    }
    ids.into_iter().rev().collect()
}

/// Takes one snapshot: a consistent copy of the store (written next to it, then removed),
/// stored through the data path; then drops all but the newest [`KEEP_SNAPSHOTS`].
pub async fn snapshot_once(
    gateway: &Node,
    meta: &Arc<dyn MetadataStore>,
    clients: &[(String, ProviderClient)],
    work_dir: &Path,
) -> anyhow::Result<Manifest> {
    // The copy's path is fixed: the timer and `POST /admin/v1/snapshot` take turns.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let copy = work_dir.join("metadata.snapshot.tmp");
    let _ = std::fs::remove_file(&copy);
    // Read before the copy: every change journaled up to here was committed before.
    let journal_cut = gateway.journal().map(|j| j.cut());
    let store = Arc::clone(meta);
    let target = copy.clone();
    tokio::task::spawn_blocking(move || store.snapshot_into(&target))
        .await
        .context("snapshot task")?
        .map_err(|e| anyhow::anyhow!("copying the metadata store: {e}"))?;
    let stored = store_snapshot(gateway, &copy, journal_cut).await;
    let _ = std::fs::remove_file(&copy);
    let manifest =
        stored.map_err(|e| anyhow::anyhow!("storing the metadata snapshot: {}", e.message()))?;
    let ids = manifest_ids(clients).await;
    let mut older = Vec::new();
    for id in ids.iter().skip(KEEP_SNAPSHOTS) {
        if let Some(m) = fetch_manifest(gateway, id).await {
            older.push(m);
        }
    }
    drop_snapshots(gateway, &older).await;
    // Journal segments every kept snapshot contains are no longer needed: up to the oldest
    // kept snapshot's cut (and none while a kept one has no cut or cannot be read).
    if gateway.journal().is_some() {
        let mut oldest_cut = None;
        for id in ids.iter().take(KEEP_SNAPSHOTS) {
            match fetch_manifest(gateway, id)
                .await
                .and_then(|m| m.journal_cut)
            {
                Some(cut) => oldest_cut = Some(cut),
                None => {
                    oldest_cut = None;
                    break;
                }
            }
        }
        if let Some(cut) = oldest_cut {
            let deleted = crate::meta::journal::trim(gateway.fleet(), clients, &cut).await;
            tracing::debug!(deleted, upto = %cut, "metadata journal trimmed");
        }
    }
    Ok(manifest)
}

/// What a snapshot taken on demand (`POST /admin/v1/snapshot`) needs: the timer's inputs.
#[derive(Clone)]
pub struct SnapshotSource {
    pub gateway: Arc<Node>,
    pub meta: Arc<dyn MetadataStore>,
    pub clients: Vec<(String, ProviderClient)>,
    pub work_dir: PathBuf,
}

impl SnapshotSource {
    /// Takes one snapshot now, as the timer does.
    pub async fn take(&self) -> anyhow::Result<Manifest> {
        snapshot_once(&self.gateway, &self.meta, &self.clients, &self.work_dir).await
    }
}

/// Snapshots every `every` until `stop` changes, counting from the newest snapshot any
/// provider holds: a restarted gateway does not wait a full interval again, and gateway
/// replicas sharing one PostgreSQL database (which snapshot the same store) skip their turn
/// while another replica's snapshot is recent.
pub fn spawn_snapshots(
    gateway: Arc<Node>,
    meta: Arc<dyn MetadataStore>,
    clients: Vec<(String, ProviderClient)>,
    work_dir: PathBuf,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // A store never snapshotted waits a whole interval: a fresh gateway has nothing
        // worth a snapshot yet (and its providers may not answer yet).
        let mut wait = match newest_snapshot(&clients).await {
            None => every,
            newest => until_due(newest, crate::node::health::now_ms(), every),
        };
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            let newest = newest_snapshot(&clients).await;
            wait = until_due(newest, crate::node::health::now_ms(), every);
            if !wait.is_zero() {
                tracing::debug!(
                    ?wait,
                    "a recent metadata snapshot exists; waiting for the next turn"
                );
                continue;
            }
            wait = every;
            if let Err(e) = snapshot_once(&gateway, &meta, &clients, &work_dir).await {
                tracing::warn!(error = %format!("{e:#}"), "metadata snapshot failed; tried again next interval");
            }
        }
    })
}

/// Unix ms of the newest snapshot any provider lists.
async fn newest_snapshot(clients: &[(String, ProviderClient)]) -> Option<i64> {
    manifest_ids(clients)
        .await
        .first()
        .and_then(|id| id.strip_prefix(MANIFEST_PREFIX))
        .and_then(|ms| ms.parse().ok())
}

/// How long until the next snapshot is due, `every` after the newest (`None`: none yet, so
/// now). A snapshot counts as recent up to a tenth of `every` early, so replicas whose
/// timers drifted apart do not take one each.
fn until_due(newest: Option<i64>, now_ms: i64, every: Duration) -> Duration {
    let Some(newest) = newest else {
        return Duration::ZERO;
    };
    let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
    let due = newest.saturating_add(every_ms - every_ms / 10);
    if now_ms >= due {
        return Duration::ZERO;
    }
    // Wake at the full interval, not at the early edge of the window.
    let wake = newest
        .saturating_add(every_ms)
        .min(now_ms.saturating_add(every_ms));
    Duration::from_millis(u64::try_from(wake - now_ms).unwrap_or(0))
}

#[cfg(test)]
mod schedule_tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const HOUR_MS: i64 = 3_600_000;

    #[test]
    fn snapshots_are_due_an_interval_after_the_newest() {
        assert_eq!(until_due(None, 5, HOUR), Duration::ZERO);
        // Another replica (or this gateway before a restart) took one 10 minutes ago.
        let now = 100 * HOUR_MS;
        assert_eq!(
            until_due(Some(now - 600_000), now, HOUR),
            Duration::from_secs(50 * 60)
        );
        // Due, or overdue after a long outage.
        assert_eq!(until_due(Some(now - HOUR_MS), now, HOUR), Duration::ZERO);
        assert_eq!(
            until_due(Some(now - 30 * HOUR_MS), now, HOUR),
            Duration::ZERO
        );
        // Up to a tenth early still counts: drifted timers do not double the work.
        assert_eq!(
            until_due(Some(now - 55 * 60_000), now, HOUR),
            Duration::ZERO
        );
        // A snapshot stamped in the future (a skewed clock) waits one interval at most.
        assert_eq!(until_due(Some(now + 5 * HOUR_MS), now, HOUR), HOUR);
    }
}
