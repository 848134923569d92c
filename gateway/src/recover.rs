//! Metadata snapshots on a timer and `sublet recover`: rebuilding a lost metadata store
//! from the newest snapshot the providers hold.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sublet_provider::client::ProviderClient;

use crate::meta::MetadataStore;
use crate::s3::Gateway;
use crate::s3::snapshot::{KEEP_SNAPSHOTS, MANIFEST_PREFIX, Manifest};

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
    gateway: &Gateway,
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
    let stored = gateway.store_snapshot(&copy, journal_cut).await;
    let _ = std::fs::remove_file(&copy);
    let manifest = stored.map_err(|e| {
        anyhow::anyhow!(
            "storing the metadata snapshot: {}",
            e.message().unwrap_or("failed")
        )
    })?;
    let ids = manifest_ids(clients).await;
    let mut older = Vec::new();
    for id in ids.iter().skip(KEEP_SNAPSHOTS) {
        if let Some(m) = gateway.fetch_manifest(id).await {
            older.push(m);
        }
    }
    gateway.drop_snapshots(&older).await;
    // Journal segments every kept snapshot contains are no longer needed: up to the oldest
    // kept snapshot's cut (and none while a kept one has no cut or cannot be read).
    if gateway.journal().is_some() {
        let mut oldest_cut = None;
        for id in ids.iter().take(KEEP_SNAPSHOTS) {
            match gateway.fetch_manifest(id).await.and_then(|m| m.journal_cut) {
                Some(cut) => oldest_cut = Some(cut),
                None => {
                    oldest_cut = None;
                    break;
                }
            }
        }
        if let Some(cut) = oldest_cut {
            let deleted = crate::journal::trim(gateway, clients, &cut).await;
            tracing::debug!(deleted, upto = %cut, "metadata journal trimmed");
        }
    }
    Ok(manifest)
}

/// What a snapshot taken on demand (`POST /admin/v1/snapshot`) needs: the timer's inputs.
#[derive(Clone)]
pub struct SnapshotSource {
    pub gateway: Arc<Gateway>,
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
    gateway: Arc<Gateway>,
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
            newest => until_due(newest, crate::health::now_ms(), every),
        };
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            let newest = newest_snapshot(&clients).await;
            wait = until_due(newest, crate::health::now_ms(), every);
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

/// What `sublet recover` restored.
#[derive(Debug)]
pub struct Recovered {
    /// The snapshot restored; `None` when there was none yet and the whole journal was
    /// replayed onto an empty store.
    pub manifest: Option<Manifest>,
    pub path: PathBuf,
    /// The metadata journal written after the snapshot, replayed onto it.
    pub replayed: crate::journal::Replayed,
    /// Shards this installation wrote after the snapshot that the restored metadata (with
    /// the journal replayed) does not name: what the lost disk took (see [`after_snapshot`]).
    pub after: AfterSnapshot,
    /// Where the policy overlay (plans, schedules and pools applied through the admin API)
    /// was written back from the restored metadata, if it held one and no file was there.
    pub overlay: Option<PathBuf>,
}

/// Writes the policy overlay the restored `store` keeps a copy of to `overlay`, unless a
/// file is there already (the disk was not lost after all, or it was put back by hand).
fn restore_overlay(store: &dyn MetadataStore, overlay: &Path) -> anyhow::Result<Option<PathBuf>> {
    if overlay.exists() {
        return Ok(None);
    }
    let Some((_, yaml)) = store
        .shared_policies()
        .map_err(|e| anyhow::anyhow!("reading the policy overlay's copy: {e}"))?
    else {
        return Ok(None);
    };
    let parsed: crate::policy::Overlay = serde_yaml::from_str(&yaml)
        .context("the restored metadata's copy of the policy overlay is unreadable")?;
    parsed.write(overlay)?;
    Ok(Some(overlay.to_path_buf()))
}

/// What providers hold that was written after a snapshot and that the restored metadata
/// does not describe: object writes (or parts) whose metadata was only on the lost disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AfterSnapshot {
    /// Distinct writes (object versions or parts), by the shard ids' write id.
    pub writes: u64,
    pub shards: u64,
    pub bytes: u64,
    /// Unix seconds of the newest of those shards.
    pub newest: Option<i64>,
    /// Providers that could not be listed (their shards are not counted).
    pub unlisted: Vec<String>,
}

/// Lists the shards of this installation (`<tag>_...`) stored after `since_ms` that the
/// restored `store` does not reference, so recovery can say what was lost instead of
/// leaving it unsaid. They stay on the providers (garbage collection takes them a day
/// later); without their metadata nothing can decrypt them.
pub async fn after_snapshot(
    installation: &str,
    clients: &[(String, ProviderClient)],
    store: &dyn MetadataStore,
    since_ms: i64,
    snapshot_shards: &std::collections::HashSet<String>,
) -> anyhow::Result<AfterSnapshot> {
    let prefix = format!("{installation}_");
    let mut out = AfterSnapshot::default();
    let mut writes = BTreeSet::new();
    for (node, client) in clients {
        let referenced = store
            .referenced_shards(node)
            .map_err(|e| anyhow::anyhow!("reading the restored metadata: {e}"))?;
        let (shards, listed) = client.list_all(&prefix).await;
        for s in shards {
            // Seconds against milliseconds: the snapshot's own second counts as after.
            if s.stored_at < since_ms.div_euclid(1000)
                || referenced.contains(&s.shard_id)
                || snapshot_shards.contains(&s.shard_id)
            {
                continue;
            }
            out.shards += 1;
            out.bytes += s.length;
            out.newest = out.newest.max(Some(s.stored_at));
            // `<tag>_<uid>.<segment>.<index>`: the write is the part before the dot.
            let write = s.shard_id.split('.').next().unwrap_or_default().to_owned();
            writes.insert(write);
        }
        if let Err(e) = listed {
            tracing::warn!(provider = %node, error = %e, "listing shards after the snapshot failed");
            out.unlisted.push(node.clone());
        }
    }
    out.writes = writes.len() as u64;
    Ok(out)
}

/// Writes the newest readable snapshot any provider holds to `target` (refusing to
/// overwrite an existing file unless `force`). `gateway` only reads (its own metadata
/// store is not used).
pub async fn restore_newest(
    gateway: &Gateway,
    clients: &[(String, ProviderClient)],
    target: &Path,
    overlay: &Path,
    force: bool,
) -> anyhow::Result<Recovered> {
    if target.exists() && !force {
        bail!(
            "{} exists; move it away (or pass --force) so recovery does not overwrite a live store",
            target.display()
        );
    }
    let ids = manifest_ids(clients).await;
    if ids.is_empty() {
        // A young installation (no snapshot is due in its first interval) has its whole
        // history in the journal: nothing was trimmed without a snapshot.
        let (segments, _) = crate::journal::list_segments(gateway.installation(), clients).await;
        if !segments.is_empty() {
            return replay_onto_empty(gateway, clients, target, overlay).await;
        }
        bail!(
            "no provider holds a metadata snapshot (shards named {MANIFEST_PREFIX}*); `sublet serve` takes one every StorageGateway spec.snapshotInterval (default {} min)",
            SNAPSHOT_INTERVAL.as_secs() / 60
        );
    }
    // Each manifest is fetched once: the newest readable snapshot is restored, and the
    // shards of all of them are snapshots, not lost writes.
    let mut manifests = Vec::with_capacity(ids.len());
    for id in ids {
        let manifest = gateway.fetch_manifest(&id).await;
        manifests.push((id, manifest));
    }
    let snapshot_shards: std::collections::HashSet<String> = manifests
        .iter()
        .filter_map(|(_, m)| m.as_ref())
        .flat_map(|m| m.layout.shards().map(|s| s.shard_id.clone()))
        .collect();
    let mut problems = Vec::new();
    for (id, manifest) in manifests {
        let Some(manifest) = manifest else {
            problems.push(format!("{id}: no readable manifest"));
            continue;
        };
        match gateway.read_snapshot(&manifest).await {
            Ok(bytes) => {
                if let Some(dir) = target.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                let tmp = target.with_extension("recovering");
                std::fs::write(&tmp, &bytes)
                    .with_context(|| format!("writing {}", tmp.display()))?;
                // A stale WAL of a lost store must not be replayed over the snapshot.
                for ext in ["db-wal", "db-shm"] {
                    let _ = std::fs::remove_file(target.with_extension(ext));
                }
                std::fs::rename(&tmp, target)
                    .with_context(|| format!("moving the snapshot to {}", target.display()))?;
                // Then every change journaled after the snapshot.
                let store = open_restored(target)?;
                let replayed = crate::journal::replay(
                    gateway,
                    gateway.master_key(),
                    clients,
                    &store,
                    manifest.journal_cut.as_deref(),
                )
                .await;
                let after = after_snapshot(
                    gateway.installation(),
                    clients,
                    &store,
                    manifest.created,
                    &snapshot_shards,
                )
                .await?;
                return Ok(Recovered {
                    manifest: Some(manifest),
                    path: target.to_path_buf(),
                    replayed,
                    after,
                    overlay: restore_overlay(&store, overlay)?,
                });
            }
            Err(e) => problems.push(format!("{id}: {}", e.message().unwrap_or("unreadable"))),
        }
    }
    bail!(
        "no snapshot could be read back:\n  {}",
        problems.join("\n  ")
    )
}

/// Builds the store at `target` from the journal alone, for an installation that has no
/// snapshot yet.
async fn replay_onto_empty(
    gateway: &Gateway,
    clients: &[(String, ProviderClient)],
    target: &Path,
    overlay: &Path,
) -> anyhow::Result<Recovered> {
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = target.with_extension("recovering");
    for path in [
        tmp.clone(),
        tmp.with_extension("recovering-wal"),
        tmp.with_extension("recovering-shm"),
    ] {
        let _ = std::fs::remove_file(path);
    }
    for ext in ["db-wal", "db-shm"] {
        let _ = std::fs::remove_file(target.with_extension(ext));
    }
    // Built aside and moved in whole: a recovery cut short leaves no half-built store for
    // `sublet serve` to start on.
    let replayed = {
        let store = crate::meta::SqliteStore::open(&tmp)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", tmp.display()))?;
        crate::journal::replay(gateway, gateway.master_key(), clients, &store, None).await
    };
    std::fs::rename(&tmp, target)
        .with_context(|| format!("moving the rebuilt store to {}", target.display()))?;
    let store = open_restored(target)?;
    let after = after_snapshot(
        gateway.installation(),
        clients,
        &store,
        0,
        &std::collections::HashSet::new(),
    )
    .await?;
    Ok(Recovered {
        manifest: None,
        path: target.to_path_buf(),
        replayed,
        after,
        overlay: restore_overlay(&store, overlay)?,
    })
}

fn open_restored(path: &Path) -> anyhow::Result<crate::meta::SqliteStore> {
    crate::meta::SqliteStore::open(path)
        .map_err(|e| anyhow::anyhow!("opening the restored {}: {e}", path.display()))
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
