//! `sublet recover`: rebuilding a lost metadata store from the newest snapshot the
//! providers hold and the journal written after it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sublet_provider::client::ProviderClient;

#[allow(unused_imports)]
use super::*;
use crate::meta::MetadataStore;
use crate::node::Node;
use crate::upkeep::snapshot::{self, Manifest};

/// What `sublet recover` restored.
#[derive(Debug)]
pub struct Recovered {
    /// The snapshot restored; `None` when there was none yet and the whole journal was
    /// replayed onto an empty store.
    pub manifest: Option<Manifest>,
    pub path: PathBuf,
    /// The metadata journal written after the snapshot, replayed onto it.
    pub replayed: crate::meta::journal::Replayed,
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
    let parsed: crate::admin::policy::Overlay = serde_yaml::from_str(&yaml)
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

/// Writes the newest readable snapshot of this installation the providers hold to `target`
/// (refusing to overwrite an existing file unless `force`). Only manifests sealed by this
/// installation's master key count; those in the unsealed format of older gateways are
/// tried after them, and only with `trust_unsealed` (anyone could have written them).
/// `gateway` only reads (its own metadata store is not used).
pub async fn restore_newest(
    gateway: &Node,
    clients: &[(String, ProviderClient)],
    target: &Path,
    overlay: &Path,
    force: bool,
    trust_unsealed: bool,
) -> anyhow::Result<Recovered> {
    if target.exists() && !force {
        bail!(
            "{} exists; move it away (or pass --force) so recovery does not overwrite a live store",
            target.display()
        );
    }
    let listed = snapshot::list_manifests(gateway, clients).await;
    for forged in &listed.forged {
        tracing::error!(manifest = %forged, "a snapshot manifest failed authentication; not restored");
    }
    let mut manifests: Vec<(String, Option<Manifest>)> = listed
        .sealed
        .iter()
        .map(|m| (m.shard_id(), Some(m.clone())))
        .collect();
    if trust_unsealed {
        for (id, holders) in &listed.unsealed {
            let m = snapshot::fetch_unsealed(gateway, id, holders).await;
            manifests.push((id.clone(), m));
        }
    }
    if manifests.is_empty() {
        if !listed.unsealed.is_empty() {
            bail!(
                "the providers hold no sealed metadata snapshot of this installation, only {} \
                 unsealed manifests in the format of gateways before sealing (newest {}): \
                 anyone able to write to a provider could have planted them. If they are \
                 yours, run `sublet recover --trust-unsealed-manifests`",
                listed.unsealed.len(),
                listed.unsealed[0].0
            );
        }
        // A young installation (no snapshot is due in its first interval) has its whole
        // history in the journal: nothing was trimmed without a snapshot.
        let (segments, _) =
            crate::meta::journal::list_segments(gateway.installation(), clients).await;
        if !segments.is_empty() {
            return replay_onto_empty(gateway, clients, target, overlay).await;
        }
        bail!(
            "no provider holds a metadata snapshot of this installation (shards named {}*{}); `sublet serve` takes one every StorageGateway spec.snapshotInterval (default {} min)",
            snapshot::manifest_prefix(gateway.installation()),
            if listed.forged.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} manifests failed authentication and were ignored",
                    listed.forged.len()
                )
            },
            snapshot::SNAPSHOT_INTERVAL.as_secs() / 60
        );
    }
    // The shards of every snapshot are snapshots, not lost writes.
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
        match crate::upkeep::snapshot::read_snapshot(gateway, &manifest).await {
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
                let replayed = crate::meta::journal::replay(
                    gateway.fleet(),
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
            Err(e) => problems.push(format!("{id}: {}", e.message())),
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
    gateway: &Node,
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
        crate::meta::journal::replay(gateway.fleet(), gateway.master_key(), clients, &store, None)
            .await
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

/// `sublet recover`: rebuilds the gateway's metadata file from the newest snapshot on its
/// providers and the journal after it. Needs the same config and the original master key
/// (never created here).
pub async fn recover(
    config: &Config,
    overrides: &Overrides,
    force: bool,
    trust_unsealed: bool,
) -> anyhow::Result<crate::runtime::recover::Recovered> {
    recover_from_providers(config, overrides, force, trust_unsealed, false)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the providers hold nothing to recover from"))
}

/// [`recover`]; with `only_if_any`, `None` (and nothing written) when the providers hold
/// no (authenticated) snapshot and no journal of this installation.
async fn recover_from_providers(
    config: &Config,
    overrides: &Overrides,
    force: bool,
    trust_unsealed: bool,
    only_if_any: bool,
) -> anyhow::Result<Option<crate::runtime::recover::Recovered>> {
    match recover_in_steps(config, overrides, force, trust_unsealed, only_if_any).await {
        Ok(done) => Ok(done),
        Err(RecoveryFailed::Asking(e) | RecoveryFailed::Restoring(e)) => Err(e),
    }
}

/// Where a recovery from the providers failed: before they could be asked whether they
/// hold anything of this installation (the master key, the config, connecting), or while
/// restoring what they hold.
enum RecoveryFailed {
    Asking(anyhow::Error),
    Restoring(anyhow::Error),
}

async fn recover_in_steps(
    config: &Config,
    overrides: &Overrides,
    force: bool,
    trust_unsealed: bool,
    only_if_any: bool,
) -> Result<Option<crate::runtime::recover::Recovered>, RecoveryFailed> {
    let (gateway, clients, paths) = ask_providers(config, overrides)
        .await
        .map_err(RecoveryFailed::Asking)?;
    if only_if_any
        && crate::upkeep::snapshot::list_manifests(&gateway, &clients)
            .await
            .sealed
            .is_empty()
        && crate::meta::journal::list_segments(gateway.installation(), &clients)
            .await
            .0
            .is_empty()
    {
        return Ok(None);
    }
    crate::runtime::recover::restore_newest(
        &gateway,
        &clients,
        &paths.metadata,
        &paths.data_dir.join(crate::admin::policy::OVERLAY_FILE),
        force,
        trust_unsealed,
    )
    .await
    .map(Some)
    .map_err(RecoveryFailed::Restoring)
}

/// A node that can read what the providers hold (no metadata of its own) and its clients.
async fn ask_providers(
    config: &Config,
    overrides: &Overrides,
) -> anyhow::Result<(Node, Vec<(String, ProviderClient)>, StatePaths)> {
    let Some(gateway_resource) = config.gateway() else {
        bail!("the file must hold exactly one StorageGateway");
    };
    let spec = &overrides.apply(&gateway_resource.spec)?;
    let paths = state_paths(spec, overrides.data_dir.as_deref())?;
    if !paths.master_key.exists() {
        bail!(
            "master key {} is missing: restore it from your backup first — without it no snapshot or object can be decrypted",
            paths.master_key.display()
        );
    }
    let master = Arc::new(MasterKey::load_or_create(&paths.master_key)?);
    let identity = Arc::new(NodeIdentity::load_or_derive(
        &paths.identity_dir,
        Some(master.node_seed()),
    )?);
    let plans = plans(config, &spec.default_plan)?;
    // Rented providers hold snapshots and journal too: the contracts this gateway (the node
    // the master key derives) holds name them. Nothing new is rented here.
    let (with_market, _) = crate::runtime::market::with_contracts(
        config,
        &identity,
        &paths.data_dir,
        MARKET_WAIT,
        crate::runtime::market::Contracting::Existing,
    )
    .await?;
    let endpoints = endpoints(&with_market)?;
    let metrics = Metrics::new()?;
    let health = Arc::new(HealthBoard::default());
    let (mut backends, clients) = connect(spec, &identity, &endpoints, &metrics, &health)?;
    let clouds = connect_clouds(config)?;
    backends.extend(
        clouds.iter().map(|c| {
            ObservedBackend::wrap(Arc::clone(c) as Arc<dyn ShardBackend>, &metrics, &health)
        }),
    );
    // Reading needs no metadata: a throwaway in-memory store.
    let scratch: Arc<dyn MetadataStore> =
        Arc::new(SqliteStore::open_in_memory().map_err(|e| anyhow::anyhow!("scratch store: {e}"))?);
    let gateway = Node::new(scratch, master, plans, backends)?;
    Ok((gateway, clients, paths))
}

/// A gateway on SQLite whose metadata file is gone but whose master key is there (a disk
/// replaced, a Kubernetes volume lost with its node) recovers before serving: started on
/// an empty store, it would serve empty buckets and its next snapshots would push the good
/// ones out. A store the providers know nothing of is new, and starts empty.
pub(super) async fn recover_lost_metadata(
    file: &Config,
    overrides: &Overrides,
) -> anyhow::Result<()> {
    let Some(g) = file.gateway() else {
        return Ok(());
    };
    let spec = overrides.apply(&g.spec)?;
    let paths = state_paths(&spec, overrides.data_dir.as_deref())?;
    if spec.metadata.postgres.is_some() || paths.metadata.exists() || !paths.master_key.exists() {
        return Ok(());
    }
    match recover_in_steps(file, overrides, false, false, true).await {
        Ok(None) => {
            tracing::info!(metadata = %paths.metadata.display(), "new metadata store: the providers hold no snapshot or journal of this installation");
            Ok(())
        }
        Ok(Some(done)) => {
            tracing::warn!(
                metadata = %paths.metadata.display(),
                snapshot = ?done.manifest.as_ref().map(|m| m.created),
                journal_segments = done.replayed.segments,
                changes = done.replayed.applied,
                "the metadata file was missing: recovered it from the providers before serving"
            );
            for problem in done.replayed.unreadable.iter().chain(&done.replayed.failed) {
                tracing::error!(%problem, "a journal segment was not replayed");
            }
            if done.after.writes > 0 {
                tracing::error!(
                    writes = done.after.writes,
                    shards = done.after.shards,
                    "writes whose shards the recovered metadata does not name were not recovered"
                );
            }
            Ok(())
        }
        // Nothing was asked yet: say what failed, not that a recovery did.
        Err(RecoveryFailed::Asking(e)) => bail!(
            "the metadata file {} is missing (a new installation, or a lost disk), and the \
             providers could not be asked whether they hold a copy: {e:#}",
            paths.metadata.display()
        ),
        Err(RecoveryFailed::Restoring(e)) => bail!(
            "the metadata file {} is missing and the providers hold snapshots or a journal of \
             this installation, but recovering from them failed: {e:#}\n\
             (starting empty would hide every object; run `sublet recover` once the providers \
             answer)",
            paths.metadata.display()
        ),
    }
}
