//! Metadata survival: the gateway stores encrypted snapshots of its metadata store through
//! the data path (default plan: erasure-coded, encrypted with the master key) and a small
//! manifest on every provider, sealed with the master key under an id naming the
//! installation; `sublet recover` finds the newest manifest that authenticates and rebuilds
//! the metadata file from it. Losing the gateway's disk then loses at most the changes
//! since the last snapshot — the master key must be backed up separately. Manifests that
//! fail authentication (forged, replayed under another id, another installation's) are
//! ignored, logged and counted, and never decide what is newest, deleted or restored.
//! A timer ([`spawn_snapshots`]) takes one every interval; the admin API on demand.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sublet_provider::client::ProviderClient;

use bytes::Bytes;
use futures::StreamExt;
use s3s::dto::StreamingBlob;
use serde::{Deserialize, Serialize};

use crate::datapath::codec::MasterKey;
use crate::datapath::layout::Layout;
use crate::datapath::stripes::put_shard;
use crate::error::{Error, Result};
use crate::meta::{MetadataStore, ObjectVersion};
use crate::node::{Node, now_ms};

/// Shard ids of manifests start with this. Sealed manifests (today's) continue with the
/// installation tag, `-` and the snapshot's creation time (ms, zero-padded so ids sort by
/// age): `sublet-meta-manifest-<installation>-<ms>`. Unsealed ones of older gateways have
/// the time alone.
pub const MANIFEST_PREFIX: &str = "sublet-meta-manifest-";

/// Snapshots kept; older ones are deleted after a new one is stored.
pub const KEEP_SNAPSHOTS: usize = 3;

/// Copies that fail authentication one provider may serve before the rest of what only it
/// lists is rejected unread: a provider listing thousands of forged manifests costs a few
/// fetches, not thousands.
const FORGERIES_PER_PROVIDER: usize = 3;

/// What a manifest records: where the snapshot's bytes are and how to check them. Stored
/// sealed with the master key under its id ([`MasterKey::seal_record`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The installation that took it (empty in an unsealed manifest of an older gateway).
    #[serde(default)]
    pub installation: String,
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
        if self.installation.is_empty() {
            format!("{MANIFEST_PREFIX}{:015}", self.created)
        } else {
            manifest_id(&self.installation, self.created)
        }
    }
}

/// The id of `installation`'s manifest of a snapshot taken at `created` (Unix ms).
pub fn manifest_id(installation: &str, created: i64) -> String {
    format!("{}{created:015}", manifest_prefix(installation))
}

/// The id prefix of `installation`'s (sealed) manifests.
pub fn manifest_prefix(installation: &str) -> String {
    format!("{MANIFEST_PREFIX}{installation}-")
}

/// Seals `manifest` for the providers: only the master key opens it, and only under its id.
pub fn seal_manifest(master: &MasterKey, manifest: &Manifest) -> Result<Bytes> {
    let json =
        serde_json::to_vec(manifest).map_err(|e| Error::internal(format!("manifest: {e}")))?;
    master
        .seal_record(&manifest.shard_id(), &json)
        .map(Bytes::from)
        .map_err(|e| Error::internal(format!("sealing the manifest: {e}")))
}

/// Opens a manifest read back from a provider under `id`: it must be sealed by this
/// installation's master key under this very id, and say so itself.
pub fn open_manifest(
    master: &MasterKey,
    id: &str,
    blob: &[u8],
) -> std::result::Result<Manifest, String> {
    let json = master.open_record(id, blob).map_err(|e| e.to_string())?;
    let m: Manifest =
        serde_json::from_slice(&json).map_err(|e| format!("unreadable manifest: {e}"))?;
    if m.installation != master.installation() || m.shard_id() != id {
        return Err(format!("it describes {} instead", m.shard_id()));
    }
    Ok(m)
}

/// Manifests on the providers, sorted by what they may be trusted with.
#[derive(Debug, Default)]
pub struct Manifests {
    /// This installation's sealed manifests that opened, newest first: the only ones that
    /// decide which snapshot is newest, which are deleted and where the journal is trimmed.
    pub sealed: Vec<Manifest>,
    /// Manifests in the unsealed format of older gateways (id → providers listing it),
    /// newest first: anyone could have written them, so nothing is deleted or decided by
    /// them; garbage collection keeps the shards they name, and `sublet recover` restores
    /// from them only when told to (`--trust-unsealed-manifests`).
    pub unsealed: Vec<(String, Vec<String>)>,
    /// Ids in this installation's format that failed authentication, with why: ignored,
    /// logged and counted (`sublet_gateway_forged_metadata_total{kind="manifest"}`).
    pub forged: Vec<String>,
    /// Ids in this installation's format of which no copy came back because providers
    /// listing them did not answer (one that did may hold a real snapshot's manifest).
    pub unanswered: Vec<String>,
}

/// Manifest ids any provider lists (id → providers), unauthenticated: only for
/// [`open_manifests`] and tests.
pub async fn list_manifest_ids(
    clients: &[(String, ProviderClient)],
) -> BTreeMap<String, Vec<String>> {
    let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (node, client) in clients {
        let (shards, listed) = client.list_all(MANIFEST_PREFIX).await;
        for s in shards {
            ids.entry(s.shard_id).or_default().push(node.clone());
        }
        if let Err(e) = listed {
            tracing::warn!(provider = %node, error = %e, "listing snapshot manifests failed");
        }
    }
    ids
}

/// Manifest ids any provider lists, newest first, unauthenticated (what a provider claims;
/// see [`list_manifests`] for what may be trusted).
pub async fn manifest_ids(clients: &[(String, ProviderClient)]) -> Vec<String> {
    list_manifest_ids(clients).await.into_keys().rev().collect()
}

/// The manifests on the providers, authenticated: see [`Manifests`].
pub async fn list_manifests(node: &Node, clients: &[(String, ProviderClient)]) -> Manifests {
    open_manifests(node, list_manifest_ids(clients).await).await
}

/// Sorts listed manifest ids (id → providers listing it) into [`Manifests`], reading and
/// authenticating each of this installation's. Another installation's manifests (a provider
/// both use) are left alone unread.
pub async fn open_manifests(node: &Node, listed: BTreeMap<String, Vec<String>>) -> Manifests {
    let ours = manifest_prefix(node.installation());
    let mut out = Manifests::default();
    let mut forgeries: BTreeMap<String, usize> = BTreeMap::new();
    for (id, holders) in listed.into_iter().rev() {
        let Some(rest) = id.strip_prefix(MANIFEST_PREFIX) else {
            continue;
        };
        if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
            out.unsealed.push((id, holders));
            continue;
        }
        if !id.starts_with(&ours) {
            continue;
        }
        let mut problems = Vec::new();
        let mut opened = None;
        // A copy came back (and failed), or a provider could not be asked at all.
        let (mut answered, mut unreachable) = (false, false);
        for holder in &holders {
            if forgeries.get(holder).copied().unwrap_or(0) >= FORGERIES_PER_PROVIDER {
                problems.push(format!("{holder}: skipped, it served forged manifests"));
                answered = true;
                continue;
            }
            let Some(backend) = node.backend(holder) else {
                continue;
            };
            match backend.get(&id).await {
                Ok(blob) => {
                    answered = true;
                    match open_manifest(node.master_key(), &id, &blob) {
                        Ok(m) => {
                            opened = Some(m);
                            break;
                        }
                        Err(e) => {
                            *forgeries.entry(holder.clone()).or_default() += 1;
                            problems.push(format!("{holder}: {e}"));
                        }
                    }
                }
                Err(e) => {
                    // Gone since it was listed (a snapshot pass deleting it) is no answer
                    // to wait for; a provider that did not answer may hold the real one.
                    unreachable |= !e.shard_gone();
                    problems.push(format!("{holder}: {e}"));
                }
            }
        }
        match opened {
            Some(m) => out.sealed.push(m),
            None if answered => {
                crate::metrics::count_forged_metadata("manifest");
                let why = problems.join("; ");
                tracing::warn!(manifest = %id, problems = %why, "a snapshot manifest failed authentication; ignored");
                out.forged.push(format!("{id} ({why})"));
            }
            None if unreachable => out
                .unanswered
                .push(format!("{id} ({})", problems.join("; "))),
            None => tracing::debug!(manifest = %id, "a snapshot manifest was deleted while listed"),
        }
    }
    out
}

/// Reads an unsealed manifest of an older gateway from the first of `holders` with a
/// readable copy. Nothing authenticates it: see [`Manifests::unsealed`].
pub async fn fetch_unsealed(node: &Node, id: &str, holders: &[String]) -> Option<Manifest> {
    for holder in holders {
        let Some(backend) = node.backend(holder) else {
            continue;
        };
        if let Ok(bytes) = backend.get(id).await
            && let Ok(m) = serde_json::from_slice::<Manifest>(&bytes)
            && m.installation.is_empty()
            && m.shard_id() == id
        {
            return Some(m);
        }
    }
    None
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
            &manifest_id(node.installation(), created),
            Some(StreamingBlob::wrap(body)),
        )
        .await?;
    let manifest = Manifest {
        installation: node.installation().to_owned(),
        created,
        size,
        blake3,
        plan: plan.name.clone(),
        layout: written.layout,
        journal_cut,
    };
    let json = match seal_manifest(node.master_key(), &manifest) {
        Ok(sealed) => sealed,
        Err(e) => {
            node.free(Some(&manifest.layout)).await;
            return Err(e);
        }
    };
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

/// Deletes the manifests `older` name, and their snapshots' shards. Only ever called with
/// manifests that passed authentication: nothing a provider forged steers a deletion.
pub async fn drop_snapshots(node: &Node, older: &[Manifest]) {
    for m in older {
        node.free(Some(&m.layout)).await;
        let id = m.shard_id();
        for b in node.providers().values() {
            let _ = b.delete(&id).await;
        }
    }
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
    // Only authenticated manifests decide what goes: a provider listing forged ones dated
    // in the future cannot push the real snapshots out.
    let listed = list_manifests(gateway, clients).await;
    let kept = &listed.sealed[..listed.sealed.len().min(KEEP_SNAPSHOTS)];
    drop_snapshots(gateway, &listed.sealed[kept.len()..]).await;
    // Journal segments every kept snapshot contains are no longer needed: up to the oldest
    // kept snapshot's cut (and none while a kept one has no cut).
    if gateway.journal().is_some() {
        let oldest_cut = kept
            .iter()
            .map(|m| m.journal_cut.as_deref())
            .collect::<Option<Vec<_>>>()
            .and_then(|cuts| cuts.last().map(|c| (*c).to_owned()));
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
        let mut wait = match newest_snapshot(&gateway, &clients).await {
            None => every,
            newest => until_due(newest, crate::node::health::now_ms(), every),
        };
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            let newest = newest_snapshot(&gateway, &clients).await;
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

/// Unix ms of the newest snapshot of this installation on the providers (authenticated: a
/// forged manifest dated in the future would otherwise stop every snapshot).
async fn newest_snapshot(gateway: &Node, clients: &[(String, ProviderClient)]) -> Option<i64> {
    list_manifests(gateway, clients)
        .await
        .sealed
        .first()
        .map(|m| m.created)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::datapath::layout::Scheme;
    use crate::node::Plan;

    fn master(byte: u8) -> MasterKey {
        MasterKey::from_bytes(&[byte; 32])
    }

    fn manifest(m: &MasterKey, created: i64) -> Manifest {
        Manifest {
            installation: m.installation().to_owned(),
            created,
            size: 1,
            blake3: "00".into(),
            plan: "standard".into(),
            layout: Layout {
                scheme: Scheme::Erasure { data: 2, parity: 1 },
                encryption: crate::datapath::layout::Encryption::None,
                segment_size: 16,
                segments: vec![],
                inline: None,
                parts: vec![],
            },
            journal_cut: Some("000000000000001-0000000001".into()),
        }
    }

    #[test]
    fn a_manifest_opens_only_whole_under_its_own_id_and_installation() {
        let ours = master(1);
        let m = manifest(&ours, 1_700_000_000_000);
        let id = m.shard_id();
        assert!(
            id.starts_with(&manifest_prefix(ours.installation())),
            "{id}"
        );
        let sealed = seal_manifest(&ours, &m).unwrap();
        assert_eq!(open_manifest(&ours, &id, &sealed).unwrap(), m);
        // Tampered: any byte changed.
        for at in [0, 10, sealed.len() / 2, sealed.len() - 1] {
            let mut bad = sealed.to_vec();
            bad[at] ^= 1;
            assert!(open_manifest(&ours, &id, &bad).is_err(), "byte {at}");
        }
        // Replayed under a later id (a real manifest "dated in the future").
        let later = manifest_id(ours.installation(), m.created + 86_400_000);
        assert!(open_manifest(&ours, &later, &sealed).is_err());
        // Another installation's, under its own id and under ours.
        let theirs = master(2);
        let foreign = manifest(&theirs, m.created);
        let foreign_sealed = seal_manifest(&theirs, &foreign).unwrap();
        assert!(open_manifest(&ours, &foreign.shard_id(), &foreign_sealed).is_err());
        assert!(open_manifest(&ours, &id, &foreign_sealed).is_err());
        // The unsealed JSON of older gateways, and junk.
        let json = serde_json::to_vec(&m).unwrap();
        assert!(open_manifest(&ours, &id, &json).is_err());
        assert!(open_manifest(&ours, &id, b"").is_err());
    }

    fn small_plan() -> Plan {
        Plan {
            name: "standard".into(),
            scheme: Scheme::Erasure { data: 2, parity: 1 },
            encrypt: true,
            segment_size: 64 << 10,
            write_quorum: 3,
            inline_up_to: 0,
        }
    }

    /// Forged manifests dated in the future on one provider, a tampered copy, and another
    /// installation's: the snapshot pass keeps the real snapshots (dropping only the real
    /// oldest), the timer counts from the real newest, and recovery restores it.
    #[tokio::test]
    async fn forged_manifests_steer_neither_deletion_nor_the_timer_nor_restore() {
        let tmp = tempfile::tempdir().unwrap();
        let cluster = crate::runtime::dev::start_cluster(tmp.path(), 3, vec![small_plan()])
            .await
            .unwrap();
        let gateway = Arc::clone(&cluster.gateway);
        let clients = cluster.probes.clone();
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let take = || snapshot_once(&gateway, gateway.metadata(), &clients, &work);
        let first = take().await.unwrap();

        let ours = gateway.master_key();
        let future = now_ms() + 30 * 86_400_000;
        let real_blob = seal_manifest(ours, &first).unwrap();
        let stranger = master(9);
        let mut planted = Vec::new();
        for (i, blob) in [
            // A copy of the real manifest's JSON, dated in the future, unsealed.
            Bytes::from(serde_json::to_vec(&manifest(ours, future)).unwrap()),
            // The real sealed manifest replayed under a future id.
            real_blob.clone(),
            // A sealed manifest of another installation under this one's id.
            seal_manifest(&stranger, &manifest(&stranger, future + 2)).unwrap(),
            // Junk.
            Bytes::from_static(b"{}"),
        ]
        .into_iter()
        .enumerate()
        {
            let id = manifest_id(ours.installation(), future + i as i64);
            clients[0].1.put_shard(&id, blob).await.unwrap();
            planted.push(id);
        }
        // A tampered copy of the real manifest on another provider, and another
        // installation's own manifest (a provider both use).
        let mut tampered = real_blob.to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        clients[1]
            .1
            .put_shard(&first.shard_id(), Bytes::from(tampered))
            .await
            .unwrap();
        let theirs = manifest(&stranger, future);
        clients[2]
            .1
            .put_shard(
                &theirs.shard_id(),
                seal_manifest(&stranger, &theirs).unwrap(),
            )
            .await
            .unwrap();
        let forged_before = crate::metrics::forged_metadata("manifest");

        let listed = list_manifests(&gateway, &clients).await;
        assert_eq!(listed.sealed, vec![first.clone()], "{listed:?}");
        assert_eq!(listed.forged.len(), planted.len(), "{listed:?}");
        assert_eq!(
            newest_snapshot(&gateway, &clients).await,
            Some(first.created)
        );
        assert!(crate::metrics::forged_metadata("manifest") >= forged_before + 4);

        // Three more real snapshots: the first (the real oldest) goes, nothing else does.
        let mut real = vec![first.clone()];
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            real.push(take().await.unwrap());
        }
        let listed = list_manifests(&gateway, &clients).await;
        let kept: Vec<_> = real[1..].iter().rev().cloned().collect();
        assert_eq!(listed.sealed, kept, "{listed:?}");
        for m in &kept {
            for s in m.layout.shards() {
                let b = gateway.backend(&s.provider).unwrap();
                assert!(
                    b.get(&s.shard_id).await.is_ok(),
                    "kept snapshot's shard gone"
                );
            }
        }
        let ids = manifest_ids(&clients).await;
        for id in &planted {
            assert!(
                ids.contains(id),
                "planted {id} deleted: nothing unauthenticated steers deletion"
            );
        }
        assert!(
            ids.contains(&theirs.shard_id()),
            "another installation's manifest deleted"
        );

        // Recovery restores the real newest, not a forgery.
        let target = tmp.path().join("restored").join("metadata.db");
        let done = crate::runtime::recover::restore_newest(
            &gateway,
            &clients,
            &target,
            &tmp.path().join("restored").join("policies.yaml"),
            false,
            false,
        )
        .await
        .unwrap();
        assert_eq!(done.manifest.as_ref(), kept.first());
    }
}
