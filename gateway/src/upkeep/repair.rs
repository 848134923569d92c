//! Repair: rebuilds the lost shards of queued object versions from `dataShards` healthy ones
//! and places them on new providers, then swaps the version's layout by compare-and-swap.
//!
//! Repair works on ciphertext (Reed–Solomon reconstruct, or a copy for replicas) and never
//! needs the master key. It is safe to run twice at once and to kill at any point: shards are
//! written under fresh ids before the metadata switch, a switch that finds the layout changed
//! (overwrite, delete, another repairer) deletes what it wrote, and shards written by a
//! killed repair are unreferenced garbage, never a second placement.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::datapath::codec;
use crate::datapath::layout::{Encryption, Layout, ShardLocation};
use crate::datapath::placement::choose_more;
use crate::datapath::stripes::{delete_shards, put_shard};
use crate::meta::{MetadataStore, ProviderSeen, QueuedVersion, ShardPos};
use crate::metrics::Metrics;
use crate::node::Node;
use crate::node::health::{RebuildPolicy, lost_cut, now_ms};

/// How often the background loop looks at the queues.
pub const LOOP_INTERVAL: Duration = Duration::from_secs(30);
/// Versions one pass takes from a plan's queue.
pub const PASS_LIMIT: usize = 256;

/// What one repair pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairReport {
    pub plan: String,
    /// Versions taken from the queue.
    pub examined: u64,
    /// Versions whose lost shards were rebuilt and switched in.
    pub repaired: u64,
    pub shards_rebuilt: u64,
    pub bytes_written: u64,
    /// Versions changed or removed by someone else meanwhile (their new shards were removed).
    pub conflicts: u64,
    /// Versions that could not be repaired now (unreadable, no place for shards, writes
    /// failed); they stay queued.
    pub failed: u64,
    /// Not due any more when looked at closely (e.g. a provider came back).
    pub skipped: u64,
    /// Only objects at risk were taken: outside the rebuild window.
    pub urgent_only: bool,
}

enum Outcome {
    Repaired { shards: u64, bytes: u64 },
    Conflict,
    Skipped,
}

/// Runs repairs through a gateway's providers, placement and metadata.
#[derive(Clone)]
pub struct Repairer {
    gateway: Arc<Node>,
    metrics: Option<Metrics>,
    /// Wins over the schedule's bandwidth limit (a Job's `SUBLET_REPAIR_BANDWIDTH_LIMIT`).
    bandwidth_limit: Option<u64>,
}

/// Paces reads and writes of one pass to a number of bytes per second.
struct Pace {
    limit: Option<u64>,
    started: Instant,
    bytes: std::sync::atomic::AtomicU64,
}

impl Pace {
    async fn spend(&self, bytes: u64) {
        let Some(limit) = self.limit.filter(|l| *l > 0) else {
            return;
        };
        let total = self
            .bytes
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed)
            + bytes;
        let due = Duration::from_secs_f64(total as f64 / limit as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

impl Repairer {
    /// The node it repairs.
    pub fn node(&self) -> &Arc<Node> {
        &self.gateway
    }

    pub fn new(gateway: Arc<Node>, metrics: Option<Metrics>) -> Self {
        Repairer {
            gateway,
            metrics,
            bandwidth_limit: None,
        }
    }

    /// Paces passes to `bytes_per_second` (read plus written), whatever the schedule says.
    pub fn with_bandwidth_limit(mut self, bytes_per_second: Option<u64>) -> Self {
        self.bandwidth_limit = bytes_per_second;
        self
    }

    fn meta(&self) -> &Arc<dyn MetadataStore> {
        self.gateway.metadata()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn MetadataStore) -> crate::meta::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let meta = Arc::clone(self.meta());
        Ok(tokio::task::spawn_blocking(move || f(meta.as_ref())).await??)
    }

    /// Repairs up to `limit` of `plan`'s due versions, most at risk first, `maxConcurrent` at
    /// a time. With `urgent_only` only those left with exactly dataShards healthy shards.
    pub async fn run_pass(
        &self,
        plan: &str,
        urgent_only: bool,
        limit: usize,
    ) -> anyhow::Result<RepairReport> {
        let mut policy = self.gateway.rebuild_policy(plan);
        if self.bandwidth_limit.is_some() {
            policy.bandwidth_limit = self.bandwidth_limit;
        }
        let (cut, grace) = lost_cut(&policy, now_ms());
        let owned = plan.to_owned();
        let min = policy.min_healthy_shards;
        let mut queue = self
            .blocking(move |m| m.queued_versions(&owned, cut, grace, min, false, limit))
            .await?;
        if urgent_only {
            queue.retain(|q| q.healthy <= q.needed);
        }
        // Versions another pass of this process holds are its business.
        let claims = Arc::clone(self.gateway.repair_claims());
        {
            let mut held = claims
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.retain(|q| held.insert(q.seq));
        }
        let _release = Release {
            claims: Arc::clone(&claims),
            seqs: queue.iter().map(|q| q.seq).collect(),
        };
        let mut report = RepairReport {
            plan: plan.to_owned(),
            examined: queue.len() as u64,
            urgent_only,
            ..RepairReport::default()
        };
        let pace = Arc::new(Pace {
            limit: policy.bandwidth_limit,
            started: Instant::now(),
            bytes: Default::default(),
        });
        let outcomes: Vec<(QueuedVersion, anyhow::Result<Outcome>)> =
            futures::stream::iter(queue.into_iter().map(|q| {
                let pace = Arc::clone(&pace);
                let policy = policy.clone();
                async move {
                    let out = self.repair_claimed(plan, &q, &policy, &pace).await;
                    (q, out)
                }
            }))
            .buffer_unordered(policy.max_concurrent.max(1))
            .collect()
            .await;
        for (q, outcome) in outcomes {
            match outcome {
                Ok(Outcome::Repaired { shards, bytes }) => {
                    report.repaired += 1;
                    report.shards_rebuilt += shards;
                    report.bytes_written += bytes;
                    if let Some(m) = &self.metrics {
                        m.repaired_objects.with_label_values(&[plan]).inc();
                        m.rebuilt_shards.with_label_values(&[plan]).inc_by(shards);
                        m.rebuilt_bytes.with_label_values(&[plan]).inc_by(bytes);
                    }
                    tracing::info!(
                        plan,
                        bucket = q.bucket,
                        key = q.key,
                        version = q.version_id,
                        shards,
                        "object repaired"
                    );
                }
                Ok(Outcome::Conflict) => {
                    report.conflicts += 1;
                    self.count_failure(plan, "conflict");
                    tracing::info!(
                        plan,
                        bucket = q.bucket,
                        key = q.key,
                        "object changed during repair; its new shards were removed"
                    );
                }
                Ok(Outcome::Skipped) => report.skipped += 1,
                Err(e) => {
                    report.failed += 1;
                    self.count_failure(plan, "failed");
                    tracing::warn!(plan, bucket = q.bucket, key = q.key, version = q.version_id, error = %format!("{e:#}"), "repair failed");
                }
            }
        }
        Ok(report)
    }

    fn count_failure(&self, plan: &str, reason: &str) {
        if let Some(m) = &self.metrics {
            m.repair_failures.with_label_values(&[plan, reason]).inc();
        }
    }

    /// One repair pass of every plan: urgent objects always, the rest inside the window.
    pub async fn run_all(&self) -> Vec<RepairReport> {
        let minute = local_minute_of_day();
        let mut out = Vec::new();
        let plans: Vec<String> = self
            .gateway
            .plans()
            .iter()
            .map(|p| p.name.clone())
            .collect();
        for plan in plans {
            let policy = self.gateway.rebuild_policy(&plan);
            let urgent_only = !policy.in_window(minute);
            match self.run_pass(&plan, urgent_only, PASS_LIMIT).await {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(plan, error = %format!("{e:#}"), "repair pass failed"),
            }
        }
        out
    }

    /// Moves the shards of version `seq` (of `plan`) that break the plan's placement rules
    /// to providers the rules allow, like a repair: rebuilt elsewhere, switched by
    /// compare-and-swap, the old ones deleted. Returns how many shards moved (0 when the
    /// version changed meanwhile or another pass of this process holds it).
    pub async fn relocate(&self, plan: &str, seq: i64) -> anyhow::Result<u64> {
        let claims = Arc::clone(self.gateway.repair_claims());
        if !claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(seq)
        {
            return Ok(0);
        }
        let _release = Release {
            claims,
            seqs: vec![seq],
        };
        let Some(v) = self.blocking(move |m| m.version_by_seq(seq)).await? else {
            return Ok(0);
        };
        let q = QueuedVersion {
            seq,
            bucket: v.bucket,
            key: v.key,
            version_id: v.version_id,
            healthy: 0,
            needed: 0,
            width: 0,
            lost_since: None,
        };
        let policy = self.gateway.rebuild_policy(plan);
        let pace = Pace {
            limit: self.bandwidth_limit.or(policy.bandwidth_limit),
            started: Instant::now(),
            bytes: Default::default(),
        };
        match self.repair_claimed(plan, &q, &policy, &pace).await? {
            Outcome::Repaired { shards, bytes } => {
                if let Some(m) = &self.metrics {
                    m.rebuilt_shards.with_label_values(&[plan]).inc_by(shards);
                    m.rebuilt_bytes.with_label_values(&[plan]).inc_by(bytes);
                }
                Ok(shards)
            }
            Outcome::Conflict | Outcome::Skipped => Ok(0),
        }
    }

    /// Repairs `q` under a claim in the metadata store, so a repairer in another process
    /// sharing the store (several gateways on PostgreSQL, a `sublet repair` Job) skips it.
    async fn repair_claimed(
        &self,
        plan: &str,
        q: &QueuedVersion,
        policy: &RebuildPolicy,
        pace: &Pace,
    ) -> anyhow::Result<Outcome> {
        let seq = q.seq;
        let holder = claim_holder();
        let claimed = self
            .blocking(move |m| m.claim_repair(seq, holder, now_ms(), CLAIM_LEASE_MS))
            .await?;
        if !claimed {
            return Ok(Outcome::Skipped);
        }
        let out = self.repair_version(plan, q, policy, pace).await;
        if let Err(e) = self.blocking(move |m| m.release_repair(seq, holder)).await {
            // The lease runs out by itself.
            tracing::warn!(seq, error = %format!("{e:#}"), "releasing a repair claim failed");
        }
        out
    }

    async fn repair_version(
        &self,
        plan: &str,
        q: &QueuedVersion,
        policy: &RebuildPolicy,
        pace: &Pace,
    ) -> anyhow::Result<Outcome> {
        let seq = q.seq;
        let (version, bad, seen) = self
            .blocking(move |m| {
                Ok((
                    m.version_by_seq(seq)?,
                    m.bad_shards(seq)?,
                    m.providers_seen()?,
                ))
            })
            .await?;
        let Some(layout) = version.and_then(|v| v.layout) else {
            return Ok(Outcome::Skipped);
        };
        let bad: HashSet<ShardPos> = bad.into_iter().collect();
        // Shards the plan's placement rules no longer allow where they are: moved too.
        let misplaced: HashSet<ShardPos> =
            crate::node::rules::misplaced_shards(&layout, &self.gateway.topology(), plan)
                .into_iter()
                .map(|(pos, _)| pos)
                .collect();
        let (cut, _) = lost_cut(policy, now_ms());
        let state = |p: usize, g: usize, i: usize, loc: &ShardLocation| -> ShardState {
            if loc.is_missing() || bad.contains(&(p, g, i)) {
                return ShardState::Lost;
            }
            if misplaced.contains(&(p, g, i)) {
                return ShardState::Misplaced;
            }
            match seen.get(&loc.provider) {
                None => ShardState::Lost,
                Some(ProviderSeen {
                    down_since: Some(_),
                    last_seen,
                }) if *last_seen <= cut => ShardState::Lost,
                Some(ProviderSeen {
                    down_since: Some(_),
                    ..
                }) => ShardState::Away,
                Some(_) if self.gateway.backend(&loc.provider).is_none() => ShardState::Lost,
                Some(_) => ShardState::Readable,
            }
        };

        let mut new_layout = layout.clone();
        let mut written: Vec<ShardLocation> = Vec::new();
        let mut replaced: Vec<ShardLocation> = Vec::new();
        // Intact shards moved off (misplaced, or on a draining pool): reads that started
        // before the switch may still stream them, so they are retired, not deleted.
        let mut moved: Vec<ShardLocation> = Vec::new();
        // Kept until the swap below is done: garbage collection leaves the rebuilt shards.
        let mut in_flight = Vec::new();
        let result = self
            .rebuild_pieces(
                plan,
                q,
                &layout,
                &mut new_layout,
                &state,
                pace,
                &mut written,
                &mut replaced,
                &mut moved,
                &mut in_flight,
            )
            .await;
        let backend_for = |node: &str| self.gateway.backend(node);
        if let Err(e) = result {
            delete_shards(&only(&written), backend_for).await;
            return Err(e);
        }
        if written.is_empty() {
            return Ok(Outcome::Skipped);
        }
        let (expected, new) = (layout.clone(), new_layout.clone());
        let swapped = self
            .blocking(move |m| m.replace_layout(seq, &expected, &new))
            .await;
        match swapped {
            Ok(true) => {
                // Best effort: corrupt copies on live providers go now, copies on lost
                // providers are garbage once they come back.
                delete_shards(&only(&replaced), backend_for).await;
                if !moved.is_empty() {
                    self.gateway.retire(only(&moved));
                }
                let bytes = written.iter().map(|s| s.length).sum();
                Ok(Outcome::Repaired {
                    shards: written.len() as u64,
                    bytes,
                })
            }
            Ok(false) => {
                delete_shards(&only(&written), backend_for).await;
                Ok(Outcome::Conflict)
            }
            Err(e) => {
                // Unknown whether the switch happened: leave the new shards (at worst garbage).
                Err(e.context("switching the layout"))
            }
        }
    }

    /// Rebuilds every lost shard of every piece of `layout` into `new_layout`.
    #[allow(clippy::too_many_arguments)]
    async fn rebuild_pieces(
        &self,
        plan: &str,
        q: &QueuedVersion,
        layout: &Layout,
        new_layout: &mut Layout,
        state: &(dyn Fn(usize, usize, usize, &ShardLocation) -> ShardState + Sync),
        pace: &Pace,
        written: &mut Vec<ShardLocation>,
        replaced: &mut Vec<ShardLocation>,
        moved: &mut Vec<ShardLocation>,
        in_flight: &mut Vec<crate::node::inflight::WriteGuard>,
    ) -> anyhow::Result<()> {
        let topology = self.gateway.topology();
        let rule = topology.rule(plan);
        let candidates = topology.candidates(self.gateway.health());
        let object = format!("{}/{}", q.bucket, q.key);
        let pieces: Vec<&Layout> = layout.pieces().collect();
        for (p, piece) in pieces.iter().enumerate() {
            for (g, segment) in piece.segments.iter().enumerate() {
                let states: Vec<ShardState> = segment
                    .shards
                    .iter()
                    .enumerate()
                    .map(|(i, loc)| state(p, g, i, loc))
                    .collect();
                if !states
                    .iter()
                    .any(|s| matches!(s, ShardState::Lost | ShardState::Misplaced))
                {
                    continue;
                }
                let needed = piece.scheme.needed();
                let width = segment.shards.len();
                // Read dataShards verified shards, data shards first.
                let mut got: Vec<Option<Vec<u8>>> = vec![None; width];
                let mut lost: BTreeSet<usize> = states
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| matches!(s, ShardState::Lost | ShardState::Misplaced))
                    .map(|(i, _)| i)
                    .collect();
                // Ask for exactly the shards still missing, in parallel, in stripe order;
                // misplaced shards are read like the others (they are intact, only moving).
                let readable: Vec<usize> = (0..width)
                    .filter(|&i| matches!(states[i], ShardState::Readable | ShardState::Misplaced))
                    .collect();
                let mut next = 0;
                while got.iter().filter(|s| s.is_some()).count() < needed && next < readable.len() {
                    let missing = needed - got.iter().filter(|s| s.is_some()).count();
                    let batch: Vec<usize> =
                        readable[next..].iter().copied().take(missing).collect();
                    next += batch.len();
                    let fetches = batch.iter().map(|&i| {
                        let loc = &segment.shards[i];
                        let backend = self.gateway.backend(&loc.provider);
                        async move {
                            match backend {
                                Some(b) => b.get(&loc.shard_id).await,
                                None => Err(crate::datapath::stripes::BackendError(format!(
                                    "provider {} is not configured",
                                    loc.provider
                                ))),
                            }
                        }
                    });
                    let fetched = futures::future::join_all(fetches).await;
                    for (&i, result) in batch.iter().zip(fetched) {
                        let loc = &segment.shards[i];
                        match result {
                            Ok(bytes) if blake3::hash(&bytes).to_hex().as_str() == loc.hash => {
                                pace.spend(bytes.len() as u64).await;
                                got[i] = Some(bytes.to_vec());
                            }
                            Ok(_) => {
                                tracing::warn!(provider = %loc.provider, shard_id = %loc.shard_id, "shard failed its hash check during repair");
                                lost.insert(i);
                            }
                            Err(e) => {
                                tracing::warn!(provider = %loc.provider, shard_id = %loc.shard_id, error = %e, "shard read failed during repair");
                                if e.shard_gone() {
                                    lost.insert(i);
                                }
                            }
                        }
                    }
                }
                let sealed_len = usize::try_from(segment.sealed_length).unwrap_or(usize::MAX);
                let sealed = codec::decode_stripe(piece.scheme, &got, sealed_len).map_err(|e| {
                    anyhow::anyhow!("object {object}: segment {g} cannot be rebuilt: {e}")
                })?;
                let shards = codec::encode_stripe(piece.scheme, &sealed)?;
                // The re-encoded stripe must reproduce the shards it was read from.
                for (i, shard) in got.iter().enumerate() {
                    if let Some(shard) = shard
                        && shards.get(i) != Some(shard)
                    {
                        anyhow::bail!(
                            "object {object}: segment {g}: re-encoding does not reproduce shard {i}; left untouched"
                        );
                    }
                }
                // New homes: never beside a shard kept in this stripe.
                let kept: Vec<usize> = segment
                    .shards
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !lost.contains(i))
                    .filter_map(|(_, loc)| {
                        candidates
                            .iter()
                            .position(|c| c.site.node_id == loc.provider)
                    })
                    .collect();
                let need_bytes = shards.first().map_or(0, |s| s.len() as u64);
                let uid = format!("{}.{p}.{g}", q.version_id);
                // The providers that lost or spoiled these shards get them back only when no
                // other home is left: the ranking is the same on every pass, and would hand a
                // provider that drops or garbles what it is given the same shard again.
                let losers: Vec<&str> = lost
                    .iter()
                    .map(|&i| segment.shards[i].provider.as_str())
                    .filter(|p| !p.is_empty())
                    .collect();
                let elsewhere: Vec<_> = candidates
                    .iter()
                    .map(|c| {
                        let mut c = c.clone();
                        c.healthy &= !losers.contains(&c.site.node_id.as_str());
                        c
                    })
                    .collect();
                let homes = choose_more(
                    plan,
                    &rule,
                    &kept,
                    lost.len(),
                    &elsewhere,
                    need_bytes,
                    &object,
                    &uid,
                )
                .or_else(|_| {
                    choose_more(
                        plan,
                        &rule,
                        &kept,
                        lost.len(),
                        &candidates,
                        need_bytes,
                        &object,
                        &uid,
                    )
                })
                .map_err(|e| anyhow::anyhow!("object {object}: segment {g}: {e}"))?;
                let suffix = random_suffix();
                in_flight.push(
                    self.gateway
                        .start_write(&format!("-r{suffix}"))
                        .await
                        .map_err(|e| anyhow::anyhow!("object {object}: {e}"))?,
                );
                // The stripe's rebuilt shards are written in parallel (each is an fsync on
                // its provider); every one that landed is recorded before any error
                // returns, so a failed repair removes what it wrote.
                let mut puts = Vec::with_capacity(lost.len());
                for (&i, home) in lost.iter().zip(homes) {
                    let node = candidates[home].site.node_id.clone();
                    let backend = self.gateway.backend(&node).ok_or_else(|| {
                        anyhow::anyhow!("placement chose unknown provider {node}")
                    })?;
                    let shard_id = format!("{}-r{suffix}", base_id(&segment.shards[i].shard_id));
                    let data = Bytes::from(shards[i].clone());
                    puts.push(async move {
                        let length = data.len() as u64;
                        let put = put_shard(backend.as_ref(), &shard_id, data).await;
                        (i, node, shard_id, length, put)
                    });
                }
                let mut failure = None;
                for (i, node, shard_id, length, put) in futures::future::join_all(puts).await {
                    // `put_shard` records the hash of what was sent, never the provider's.
                    let hash = match put {
                        Ok(hash) => hash,
                        Err(e) => {
                            if e.hash_mismatch() {
                                // Whatever the liar keeps under the id is removed with the
                                // rest of what this failed repair wrote (by id: no hash).
                                written.push(ShardLocation {
                                    provider: node.clone(),
                                    shard_id,
                                    hash: String::new(),
                                    length,
                                });
                            }
                            failure.get_or_insert_with(|| {
                                anyhow::anyhow!("object {object}: writing a rebuilt shard: {e}")
                            });
                            continue;
                        }
                    };
                    pace.spend(length).await;
                    let loc = ShardLocation {
                        provider: node.clone(),
                        shard_id,
                        hash: hex::encode(hash),
                        length,
                    };
                    written.push(loc.clone());
                    let old = &segment.shards[i];
                    if states[i] == ShardState::Misplaced {
                        moved.push(old.clone());
                    } else if !old.is_missing() {
                        replaced.push(old.clone());
                    }
                    set_shard(new_layout, p, g, i, loc);
                }
                if let Some(e) = failure {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// Gives a pass's claimed versions back when it ends, however it ends.
struct Release {
    claims: Arc<std::sync::Mutex<HashSet<i64>>>,
    seqs: Vec<i64>,
}

impl Drop for Release {
    fn drop(&mut self) {
        let mut held = self
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for seq in &self.seqs {
            held.remove(seq);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShardState {
    /// Present on a provider that answers probes.
    Readable,
    /// On a provider down inside the grace period: kept, not read.
    Away,
    /// Missing, found bad, or on a provider lost past the grace period: rebuilt.
    Lost,
    /// Intact where the plan's placement rules no longer allow it: read, and rebuilt
    /// elsewhere.
    Misplaced,
}

/// A throwaway layout holding `shards`, for [`delete_shards`].
fn only(shards: &[ShardLocation]) -> Layout {
    Layout {
        scheme: crate::datapath::layout::Scheme::Replicas { copies: 1 },
        encryption: Encryption::None,
        segment_size: 0,
        segments: vec![crate::datapath::layout::Segment {
            plain_length: 0,
            sealed_length: 0,
            shards: shards.to_vec(),
        }],
        inline: None,
        parts: Vec::new(),
    }
}

fn set_shard(layout: &mut Layout, piece: usize, segment: usize, idx: usize, loc: ShardLocation) {
    let target = if layout.parts.is_empty() {
        Some(layout)
    } else {
        layout.parts.get_mut(piece)
    };
    if let Some(slot) = target
        .and_then(|l| l.segments.get_mut(segment))
        .and_then(|s| s.shards.get_mut(idx))
    {
        *slot = loc;
    }
}

/// A shard id without an earlier repair's suffix, so ids do not grow with every repair.
fn base_id(id: &str) -> &str {
    match id.rsplit_once("-r") {
        Some((base, suffix))
            if suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            base
        }
        _ => id,
    }
}

/// How long a claim on a version keeps other processes' repairers away; a repair that
/// takes longer may be duplicated, which the layout compare-and-swap still resolves.
const CLAIM_LEASE_MS: i64 = 30 * 60 * 1000;

/// This process's name on its repair claims.
fn claim_holder() -> &'static str {
    static HOLDER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOLDER.get_or_init(|| format!("{}-{}", std::process::id(), random_suffix()))
}

fn random_suffix() -> String {
    use rand::Rng;
    format!("{:08x}", rand::rng().random::<u32>())
}

/// Minutes since local midnight (UTC when the local offset is unknown).
pub(crate) fn local_minute_of_day() -> u32 {
    use chrono::Timelike;
    let now = chrono::Local::now();
    now.hour() * 60 + now.minute()
}

/// Runs [`Repairer::run_all`] every `interval` until `stop` changes.
pub fn spawn_loop(
    gateway: Arc<Node>,
    metrics: Option<Metrics>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let repairer = Repairer::new(gateway, metrics);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {
                    let reports = repairer.run_all().await;
                    for r in reports.iter().filter(|r| r.examined > 0) {
                        tracing::info!(plan = r.plan, repaired = r.repaired, failed = r.failed, conflicts = r.conflicts, "repair pass done");
                    }
                }
                _ = stop.changed() => return,
            }
        }
    })
}

/// Lost versions of a plan, for `GET /admin/v1/plans/{plan}/lost`.
pub fn lost_versions(
    meta: &dyn MetadataStore,
    plan: &str,
    policy: &RebuildPolicy,
    limit: usize,
) -> crate::meta::Result<Vec<QueuedVersion>> {
    let (cut, grace) = lost_cut(policy, now_ms());
    meta.queued_versions(plan, cut, grace, policy.min_healthy_shards, true, limit)
}

/// Shards and bytes per pool, from the shard index and the pool each provider was last
/// configured in: a pool taken out of the configuration keeps counting what is still stored
/// on its providers (the operator holds a deleted pool until that is 0). Configured pools
/// are listed even when empty.
pub fn pool_usage(gateway: &Node) -> crate::meta::Result<BTreeMap<String, (u64, u64)>> {
    let meta = gateway.metadata();
    let usage = meta.provider_usage()?;
    let mut pools = meta.provider_pools()?;
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for site in &gateway.topology().sites {
        pools.insert(site.node_id.clone(), site.pool.clone());
        out.entry(site.pool.clone()).or_default();
    }
    for (node, (shards, bytes)) in usage {
        if let Some(pool) = pools.get(&node) {
            let entry = out.entry(pool.clone()).or_default();
            entry.0 += shards;
            entry.1 += bytes;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repaired_ids_do_not_grow() {
        assert_eq!(base_id("abc.0.1"), "abc.0.1");
        assert_eq!(base_id("abc.0.1-r0a1b2c3d"), "abc.0.1");
        assert_eq!(base_id("abc-rx"), "abc-rx");
    }
}
