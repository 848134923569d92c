//! Audits and garbage collection of provider shards.
//!
//! An audit asks a provider for a random slice of a random shard it holds and verifies the
//! answer against the BLAKE3 hash recorded at write time (the provider sends a BLAKE3 tree proof,
//! so it cannot pass by claiming). A failed audit flags the shard for repair and lowers the
//! provider's record; [`crate::datapath::placement::AUDIT_STRIKES`] failures in a row stop new placements
//! there until an audit passes. Garbage collection removes shards no metadata references
//! (aborted uploads, deleted objects, crashed writes, repaired-away copies) once they are
//! older than a safety delay.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;
use crate::node::Node;
use crate::node::health::now_ms;
pub use crate::node::rules::AuditPolicy;
use crate::upkeep::snapshot::{MANIFEST_PREFIX, fetch_unsealed, open_manifests};

/// Longest slice an audit asks for.
pub const MAX_AUDIT_SLICE: u64 = 64 << 10;

/// What one audit round found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    pub providers: u64,
    pub passed: u64,
    pub failed: u64,
    /// Samples not checked because the provider did not answer.
    pub unanswered: u64,
}

/// Audits `samples` random shards on every provider that answers probes.
pub async fn audit_round(
    gateway: &Node,
    metrics: Option<&Metrics>,
    samples: usize,
) -> anyhow::Result<AuditReport> {
    let mut report = AuditReport::default();
    let meta = Arc::clone(gateway.metadata());
    let seen = {
        let meta = Arc::clone(&meta);
        tokio::task::spawn_blocking(move || meta.providers_seen()).await??
    };
    for site in &gateway.topology().sites {
        let node = site.node_id.clone();
        let up = seen.get(&node).is_some_and(|s| s.down_since.is_none());
        let Some(backend) = gateway.backend(&node).filter(|_| up) else {
            continue;
        };
        report.providers += 1;
        let picked = {
            let (meta, node) = (Arc::clone(&meta), node.clone());
            tokio::task::spawn_blocking(move || meta.audit_samples(&node, samples)).await??
        };
        for sample in picked {
            let Ok(hash) = <[u8; 32]>::try_from(hex::decode(&sample.hash).unwrap_or_default())
            else {
                continue;
            };
            let (offset, len) = if sample.length == 0 {
                (0, 0)
            } else {
                let mut rng = rand::rng();
                let offset = rng.random_range(0..sample.length);
                let len = rng.random_range(1..=MAX_AUDIT_SLICE.min(sample.length - offset));
                (offset, len)
            };
            let result = backend.audit(&sample.shard_id, offset, len, &hash).await;
            let passed = match &result {
                Ok(()) => true,
                Err(e) if e.audit_failed() || e.shard_gone() => false,
                Err(e) => {
                    tracing::warn!(provider = %node, error = %e, "audit unanswered; the provider's probes decide its health");
                    report.unanswered += 1;
                    break;
                }
            };
            gateway.health().record_audit(&node, passed);
            if let Some(m) = metrics {
                let result = if passed { "pass" } else { "fail" };
                m.audits.with_label_values(&[&node, result]).inc();
            }
            if passed {
                report.passed += 1;
                continue;
            }
            report.failed += 1;
            tracing::warn!(provider = %node, bucket = sample.bucket, key = sample.key, shard_id = sample.shard_id, "audit failed; shard queued for repair");
            let meta = Arc::clone(&meta);
            tokio::task::spawn_blocking(move || {
                meta.mark_bad_shards(
                    &sample.bucket,
                    &sample.key,
                    &sample.version_id,
                    &[(sample.pos, sample.shard_id.clone())],
                    now_ms(),
                )
            })
            .await??;
        }
        if let (Some(m), Some(score)) = (metrics, gateway.health().score(&node)) {
            m.provider_score
                .with_label_values(&[&node])
                .set(i64::try_from(score).unwrap_or(0));
        }
    }
    Ok(report)
}

/// What one garbage collection did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// Providers listed.
    pub providers: u64,
    /// Shards found on them.
    pub listed: u64,
    /// Unreferenced shards old enough, removed.
    pub deleted: u64,
    /// Unreferenced shards younger than the safety delay or of a write in flight.
    pub young: u64,
    /// Shards left alone because their ids name another installation (or none: written
    /// before ids named one), snapshot manifests and journal segments.
    #[serde(default)]
    pub foreign: u64,
}

/// How often the background garbage collection runs.
pub const GC_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// How old an unreferenced shard must be before the background collection removes it.
pub const GC_MIN_AGE: Duration = Duration::from_secs(24 * 3600);

/// Removes from every answering provider the shards of this installation (ids starting
/// with its tag and `_`) that no metadata references, no write in flight in this process
/// holds ([`crate::node::inflight::Writes`]) and that were stored more than `min_age` ago.
/// Every other shard is left alone: another installation's (a provider both use), one
/// written before ids named their installation, snapshot manifests and journal segments,
/// the shards of snapshots, and shards retired for reads in flight. A provider lending
/// space on the market shows each demander's gateway only its own namespace.
pub async fn collect_garbage(
    gateway: &Node,
    metrics: Option<&Metrics>,
    min_age: Duration,
) -> anyhow::Result<GcReport> {
    let prefix = format!("{}_", gateway.installation());
    let mut report = GcReport::default();
    let meta = Arc::clone(gateway.metadata());
    let cutoff = now_ms() / 1000 - i64::try_from(min_age.as_secs()).unwrap_or(i64::MAX);
    let mut listings = Vec::new();
    let topology = gateway.topology();
    for site in &topology.sites {
        let node = site.node_id.clone();
        let Some(backend) = gateway.backend(&node) else {
            continue;
        };
        match backend.list().await {
            Ok(Some(stored)) => listings.push((node, backend, stored)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(provider = %node, error = %e, "listing shards for garbage collection failed");
            }
        }
    }
    // Metadata snapshots live outside the store they copy: the shards their manifests name
    // are never garbage. Manifests that fail authentication name nothing.
    let mut listed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (node, _, stored) in &listings {
        for (id, _) in stored {
            if id.starts_with(MANIFEST_PREFIX) {
                listed.entry(id.clone()).or_default().push(node.clone());
            }
        }
    }
    let manifests = open_manifests(gateway, listed).await;
    if let Some(id) = manifests.unanswered.first() {
        anyhow::bail!(
            "snapshot manifest {id} could not be read from any provider listing it; garbage \
             collection stopped so it cannot take that snapshot's shards"
        );
    }
    // Shards a lifecycle transition replaced serve reads in flight for a while yet.
    let mut kept_shards = gateway.retired_shards();
    for m in &manifests.sealed {
        kept_shards.extend(m.layout.shards().map(|s| s.shard_id.clone()));
    }
    // Unsealed manifests of older gateways cannot be trusted, but keeping what they name is
    // harmless: `sublet recover --trust-unsealed-manifests` may still need it.
    for (id, holders) in &manifests.unsealed {
        match fetch_unsealed(gateway, id, holders).await {
            Some(m) => kept_shards.extend(m.layout.shards().map(|s| s.shard_id.clone())),
            None => {
                crate::metrics::count_forged_metadata("unsealed_manifest");
                tracing::warn!(manifest = %id, "an unsealed snapshot manifest is unreadable; ignored");
            }
        }
    }
    for (node, backend, stored) in listings {
        report.providers += 1;
        report.listed += stored.len() as u64;
        // Listed first, writes in flight second, referenced third: a write that ends in
        // between is held in the frozen set or committed (and referenced) by the read.
        // Other gateways sharing the store hold theirs there before storing a shard, so
        // whatever of theirs was listed is held by now.
        let writes = if meta.shared() {
            let held = {
                let meta = Arc::clone(&meta);
                tokio::task::spawn_blocking(move || meta.held_writes(now_ms())).await??
            };
            gateway.writes().frozen_with(held)
        } else {
            gateway.writes().frozen()
        };
        let referenced = {
            let (meta, node) = (Arc::clone(&meta), node.clone());
            tokio::task::spawn_blocking(move || meta.referenced_shards(&node)).await??
        };
        for (id, stored_at) in stored {
            if !id.starts_with(&prefix) {
                report.foreign += 1;
                continue;
            }
            if referenced.contains(&id) || kept_shards.contains(&id) {
                continue;
            }
            if stored_at > cutoff || writes.holds(&id) {
                report.young += 1;
                continue;
            }
            match backend.delete(&id).await {
                Ok(()) => {
                    report.deleted += 1;
                    if let Some(m) = metrics {
                        m.gc_deleted.with_label_values(&[&node]).inc();
                    }
                    tracing::info!(provider = %node, shard_id = id, "unreferenced shard removed");
                }
                Err(e) => {
                    tracing::warn!(provider = %node, shard_id = id, error = %e, "removing an unreferenced shard failed");
                }
            }
        }
    }
    Ok(report)
}

/// Renews, every `every` ([`crate::node::WRITE_HOLD_RENEW`] in a running gateway), the holds
/// of this node's writes in flight in a metadata store other gateways share, and ends those
/// of writes that ended, until `stop` changes. Whatever holds writes runs it: a serving
/// gateway (its PUTs, copies, repairs) and `sublet repair` run here (its rebuilt shards).
/// Nothing to do on a store of one gateway.
pub fn hold_writes_in_flight(
    gateway: Arc<Node>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !gateway.metadata().shared() {
            return;
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = renew_write_holds(&gateway).await {
                tracing::warn!(error = %format!("{e:#}"), "renewing the holds of writes in flight failed; retrying");
            }
        }
    })
}

/// One renewal of [`hold_writes_in_flight`].
pub async fn renew_write_holds(gateway: &Node) -> anyhow::Result<()> {
    let writes = gateway.writes();
    let (holder, ids) = (writes.holder().to_owned(), writes.ids());
    let now = now_ms();
    let until = now.saturating_add(crate::node::WRITE_HOLD_MS);
    let meta = Arc::clone(gateway.metadata());
    tokio::task::spawn_blocking(move || {
        meta.hold_writes(&holder, &ids, until)?;
        meta.end_writes(&holder, &ids, now)
    })
    .await??;
    Ok(())
}

/// Collects this installation's garbage every `interval` (the first one `interval` after
/// the start), removing unreferenced shards older than `min_age`, until `stop` changes.
pub fn spawn_gc_loop(
    gateway: Arc<Node>,
    metrics: Option<Metrics>,
    interval: Duration,
    min_age: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            match collect_garbage(&gateway, metrics.as_ref(), min_age).await {
                Ok(r) => tracing::info!(
                    providers = r.providers,
                    listed = r.listed,
                    deleted = r.deleted,
                    young = r.young,
                    foreign = r.foreign,
                    "garbage collection done"
                ),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "garbage collection failed"),
            }
        }
    })
}

/// Audits by the gateway's audit policy until `stop` changes. A round is due one interval
/// after the last (or the start); a schedule changed through the policy API moves the next
/// round at once, without a restart: from 6h to 1m, a round 10 minutes after the last runs
/// right away.
pub fn spawn_loop(
    gateway: Arc<Node>,
    metrics: Option<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = gateway.policy_changes();
        let mut last = tokio::time::Instant::now();
        loop {
            let policy = gateway.policy().audit.clone();
            // An interval of centuries must not overflow the clock: it means never.
            let due = last
                .checked_add(policy.interval)
                .unwrap_or_else(|| last + Duration::from_secs(100 * 365 * 24 * 3600));
            tokio::select! {
                () = tokio::time::sleep_until(due) => {
                    match audit_round(&gateway, metrics.as_ref(), policy.samples_per_provider).await {
                        Ok(r) => tracing::info!(providers = r.providers, passed = r.passed, failed = r.failed, "audit round done"),
                        Err(e) => tracing::warn!(error = %format!("{e:#}"), "audit round failed"),
                    }
                    last = tokio::time::Instant::now();
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let next = gateway.policy().audit.clone();
                    if next != policy {
                        tracing::info!(interval = ?next.interval, samples = next.samples_per_provider, "audit schedule changed");
                    }
                }
                _ = stop.changed() => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tightest_schedule_sets_the_pace() {
        let a = sublet_crds::Audit {
            interval: sublet_crds::Duration::from_secs(3600),
            samples_per_provider: 10,
        };
        let b = sublet_crds::Audit {
            interval: sublet_crds::Duration::from_secs(600),
            samples_per_provider: 5,
        };
        let p = AuditPolicy::tightest([&a, &b]);
        assert_eq!(p.interval, Duration::from_secs(600));
        assert_eq!(p.samples_per_provider, 10);
        assert_eq!(AuditPolicy::tightest([]), AuditPolicy::default());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod gc_tests {
    use super::*;
    use crate::datapath::layout::Scheme;
    use crate::node::Plan;
    use bytes::Bytes;

    /// Shards of this installation on the providers, by provider.
    async fn ours(gateway: &Node) -> Vec<(String, String)> {
        let prefix = format!("{}_", gateway.installation());
        let mut out = Vec::new();
        for site in &gateway.topology().sites {
            let b = gateway.backend(&site.node_id).unwrap();
            for (id, _) in b.list().await.unwrap().unwrap_or_default() {
                if id.starts_with(&prefix) {
                    out.push((site.node_id.clone(), id));
                }
            }
        }
        out
    }

    /// `POST /admin/v1/gc?minAgeSeconds=0` while a PUT is still streaming: its shards stay
    /// (they are garbage only once the write ends without committing), and no collection
    /// ever takes another installation's shards or shards whose ids name none.
    #[tokio::test]
    async fn gc_keeps_writes_in_flight_and_never_takes_other_installations_shards() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = Plan {
            name: "standard".into(),
            scheme: Scheme::Erasure { data: 2, parity: 1 },
            encrypt: true,
            segment_size: 64 << 10,
            write_quorum: 3,
            inline_up_to: 0,
        };
        let cluster = crate::runtime::dev::start_cluster(tmp.path(), 3, vec![plan.clone()])
            .await
            .unwrap();
        let gateway = Arc::clone(&cluster.gateway);
        let foreign = ["0123456789ab_0f0f.0.0", "legacy0123.0.1"];
        assert!(!gateway.installation().starts_with("0123456789ab"));
        for id in foreign {
            cluster.probes[0]
                .1
                .put_shard(id, Bytes::from_static(b"not ours"))
                .await
                .unwrap();
        }

        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let body = s3s::dto::StreamingBlob::wrap(tokio_stream::wrappers::ReceiverStream::new(rx));
        let writer = {
            let (gateway, plan) = (Arc::clone(&gateway), plan.clone());
            tokio::spawn(async move { gateway.store_striped(&plan, "slow", Some(body)).await })
        };
        for _ in 0..3 {
            tx.send(Ok(Bytes::from(vec![7u8; 64 << 10]))).await.unwrap();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while ours(&gateway).await.len() < 6 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the write stored nothing"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Older than any age the admin may ask for (stored_at counts in seconds).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let in_flight = ours(&gateway).await;
        let gc = collect_garbage(&gateway, None, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(gc.deleted, 0, "{gc:?}");
        assert!(gc.young >= in_flight.len() as u64, "{gc:?}");
        assert_eq!(gc.foreign, foreign.len() as u64, "{gc:?}");
        for (node, id) in &in_flight {
            let b = gateway.backend(node).unwrap();
            assert!(
                b.get(id).await.is_ok(),
                "{id} of the write in flight was taken"
            );
        }

        // The write ends and nothing records it: now its shards are garbage.
        tx.send(Ok(Bytes::from_static(b"tail"))).await.unwrap();
        drop(tx);
        let written = writer.await.unwrap().unwrap();
        let shards = written.layout.shards().count() as u64;
        drop(written);
        assert_eq!(gateway.writes().count(), 0);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let gc = collect_garbage(&gateway, None, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(gc.deleted, shards, "{gc:?}");
        assert!(ours(&gateway).await.is_empty());
        for id in foreign {
            cluster.probes[0].1.stat_shard(id).await.unwrap();
        }
    }
}
