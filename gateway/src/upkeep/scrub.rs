//! Scrub: whole-shard reads of every stored version at a limited rate.
//!
//! Audits check random slices of random shards; a scrub reads every shard of every version
//! in turn, once per the schedules' `scrub.interval`, and checks it against the BLAKE3 hash
//! recorded at write time. A shard whose provider answers with other bytes or no shard is
//! flagged (the same flag a failed read or audit sets), so the repair queue picks its version
//! up, and counts against the provider's audit score. Shards on providers that are down are
//! left to the grace period; a provider that does not answer is tried again next cycle.
//!
//! The position in the cycle is kept in `scrub.json` in the data directory after every
//! batch: a restarted gateway goes on where it stopped, and waits out the interval of a cycle
//! it finished, instead of reading every shard again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::meta::ShardPos;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::node::health::now_ms;

/// Versions read from metadata at a time.
const BATCH: usize = 100;

/// How often and how fast to scrub: the tightest of the plans' schedules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrubPolicy {
    /// A new cycle starts this long after the previous one started (or right after it ends,
    /// when it took longer).
    pub interval: Duration,
    /// Shard bytes read per second; `None` reads as fast as providers answer.
    pub bandwidth_limit: Option<u64>,
}

impl Default for ScrubPolicy {
    fn default() -> Self {
        let scrub = sublet_crds::Scrub::default();
        ScrubPolicy {
            interval: scrub.interval.as_std(),
            bandwidth_limit: Some(scrub.bandwidth_limit.bytes()),
        }
    }
}

impl ScrubPolicy {
    /// The shortest interval and the highest bandwidth among `scrubs`; the defaults when none.
    pub fn tightest<'a>(scrubs: impl IntoIterator<Item = &'a sublet_crds::Scrub>) -> Self {
        let mut out: Option<ScrubPolicy> = None;
        for s in scrubs {
            let interval = s.interval.as_std().max(Duration::from_secs(1));
            let limit = Some(s.bandwidth_limit.bytes());
            out = Some(match out {
                None => ScrubPolicy {
                    interval,
                    bandwidth_limit: limit,
                },
                Some(o) => ScrubPolicy {
                    interval: o.interval.min(interval),
                    bandwidth_limit: o.bandwidth_limit.max(limit),
                },
            });
        }
        out.unwrap_or_default()
    }
}

/// What one scrub pass found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScrubReport {
    /// Versions whose shards were read.
    pub versions: u64,
    /// Shards read and found intact.
    pub intact: u64,
    /// Shards found corrupt or gone, flagged for repair.
    pub bad: u64,
    /// Shards not checked: their provider is down or did not answer.
    pub unchecked: u64,
    /// Shard bytes read.
    pub bytes: u64,
    /// Where the next pass continues (the last version's row id), `None` at the end.
    pub next: Option<i64>,
}

/// Reads at most `bandwidth` bytes per second since `started`.
struct Pace {
    limit: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Pace {
    async fn take(&mut self, bytes: u64) {
        self.bytes += bytes;
        let Some(limit) = self.limit.filter(|l| *l > 0) else {
            return;
        };
        let due = Duration::from_secs_f64(self.bytes as f64 / limit as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// Scrubs up to `limit` versions after row id `after`, reading at most `bandwidth_limit`
/// bytes per second.
pub async fn scrub_pass(
    gateway: &Node,
    metrics: Option<&Metrics>,
    after: i64,
    limit: usize,
    bandwidth_limit: Option<u64>,
) -> anyhow::Result<ScrubReport> {
    let meta = Arc::clone(gateway.metadata());
    let seen = {
        let meta = Arc::clone(&meta);
        tokio::task::spawn_blocking(move || meta.providers_seen()).await??
    };
    let up = |node: &str| seen.get(node).is_some_and(|s| s.down_since.is_none());
    let mut report = ScrubReport::default();
    let mut pace = Pace {
        limit: bandwidth_limit,
        started: Instant::now(),
        bytes: 0,
    };
    let mut cursor = after;
    while (report.versions as usize) < limit {
        let want = BATCH.min(limit - report.versions as usize);
        let batch = {
            let meta = Arc::clone(&meta);
            tokio::task::spawn_blocking(move || meta.versions_after(cursor, want)).await??
        };
        let Some(&(last, _)) = batch.last() else {
            report.next = None;
            return Ok(report);
        };
        for (seq, version) in batch {
            cursor = seq;
            report.versions += 1;
            let Some(layout) = &version.layout else {
                continue;
            };
            let mut bad: Vec<(ShardPos, String)> = Vec::new();
            for (p, piece) in layout.pieces().enumerate() {
                for (g, segment) in piece.segments.iter().enumerate() {
                    for (i, shard) in segment.shards.iter().enumerate() {
                        if shard.is_missing() {
                            continue;
                        }
                        let backend = gateway
                            .backend(&shard.provider)
                            .filter(|_| up(&shard.provider));
                        let Some(backend) = backend else {
                            report.unchecked += 1;
                            continue;
                        };
                        // The whole shard, its outboard checked too (a plain read does not).
                        let get = backend.get(&shard.shard_id);
                        let (result, read) = match crate::datapath::provider::CHECK_OUTBOARD
                            .scope(true, get)
                            .await
                        {
                            Ok(bytes) => {
                                let n = bytes.len() as u64;
                                let intact = n == shard.length
                                    && blake3::hash(&bytes).to_hex().as_str() == shard.hash;
                                (Some(intact), n)
                            }
                            Err(e) if e.shard_gone() => (Some(false), 0),
                            Err(e) => {
                                tracing::debug!(provider = %shard.provider, error = %e, "scrub read unanswered");
                                (None, 0)
                            }
                        };
                        report.bytes += read;
                        pace.take(read).await;
                        let outcome = match result {
                            Some(true) => {
                                report.intact += 1;
                                gateway.health().record_audit(&shard.provider, true);
                                "intact"
                            }
                            Some(false) => {
                                report.bad += 1;
                                gateway.health().record_bad_shard(&shard.provider);
                                tracing::warn!(provider = %shard.provider, bucket = version.bucket, key = version.key, shard_id = shard.shard_id, "scrub found a corrupt or missing shard; queued for repair");
                                bad.push(((p, g, i), shard.shard_id.clone()));
                                "bad"
                            }
                            None => {
                                report.unchecked += 1;
                                "unanswered"
                            }
                        };
                        if let Some(m) = metrics {
                            m.scrubbed_shards
                                .with_label_values(&[&shard.provider, outcome])
                                .inc();
                            m.scrubbed_bytes
                                .with_label_values(&[&shard.provider])
                                .inc_by(read);
                        }
                    }
                }
            }
            if !bad.is_empty() {
                let meta = Arc::clone(&meta);
                let (bucket, key, version_id) = (
                    version.bucket.clone(),
                    version.key.clone(),
                    version.version_id.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    meta.mark_bad_shards(&bucket, &key, &version_id, &bad, now_ms())
                })
                .await??;
            }
        }
        report.next = Some(last);
    }
    Ok(report)
}

/// The position file's name inside the data directory.
pub const POSITION_FILE: &str = "scrub.json";

/// Where the scrub cycle stands, as kept in [`POSITION_FILE`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScrubPosition {
    /// Unix ms the cycle started.
    pub cycle_started: i64,
    /// Row id the next batch goes on after; `None` once the cycle is done.
    pub after: Option<i64>,
}

impl ScrubPosition {
    /// The position kept at `path`; `None` when there is none or it is unreadable (a new
    /// cycle starts then: reading everything again is safe, only slow).
    pub fn load(path: &std::path::Path) -> Option<Self> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "scrub position unreadable; a new cycle starts");
                return None;
            }
        };
        serde_json::from_slice(&text)
            .map_err(|e| tracing::warn!(path = %path.display(), error = %e, "scrub position unreadable; a new cycle starts"))
            .ok()
    }

    /// Keeps the position at `path`, replacing the old one whole.
    async fn store(&self, path: &std::path::Path) {
        let tmp = path.with_extension("json.tmp");
        let written = async {
            tokio::fs::write(&tmp, serde_json::to_vec(self)?).await?;
            tokio::fs::rename(&tmp, path).await?;
            anyhow::Ok(())
        };
        if let Err(e) = written.await {
            tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "scrub position not kept; a restart starts the cycle over");
        }
    }
}

/// Scrubs every stored version once per `policy.interval` until `stop` changes, keeping its
/// position at `position` (when given) so a restart goes on where it stopped.
pub fn spawn_loop(
    gateway: Arc<Node>,
    metrics: Option<Metrics>,
    policy: ScrubPolicy,
    position: Option<std::path::PathBuf>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut kept = position.as_deref().and_then(ScrubPosition::load);
        loop {
            let interval_ms = i64::try_from(policy.interval.as_millis()).unwrap_or(i64::MAX);
            let (started, mut after) = match kept.take() {
                Some(ScrubPosition {
                    cycle_started,
                    after: Some(after),
                }) => {
                    tracing::info!(after, "scrub cycle goes on where it stopped");
                    (cycle_started, after)
                }
                Some(ScrubPosition {
                    cycle_started,
                    after: None,
                }) => {
                    // The last cycle is done: the next one is due an interval after it began.
                    let rest = cycle_started.saturating_add(interval_ms) - now_ms();
                    let rest = Duration::from_millis(u64::try_from(rest).unwrap_or(0));
                    tokio::select! {
                        () = tokio::time::sleep(rest) => {}
                        _ = stop.changed() => return,
                    }
                    (now_ms(), 0)
                }
                None => (now_ms(), 0),
            };
            let cycle = async {
                let mut total = ScrubReport::default();
                loop {
                    match scrub_pass(
                        &gateway,
                        metrics.as_ref(),
                        after,
                        BATCH,
                        policy.bandwidth_limit,
                    )
                    .await
                    {
                        Ok(r) => {
                            total.versions += r.versions;
                            total.intact += r.intact;
                            total.bad += r.bad;
                            total.unchecked += r.unchecked;
                            total.bytes += r.bytes;
                            if let Some(path) = &position {
                                let at = ScrubPosition {
                                    cycle_started: started,
                                    after: r.next,
                                };
                                at.store(path).await;
                            }
                            match r.next {
                                Some(next) => after = next,
                                None => break,
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "scrub pass failed; the cycle goes on after a pause");
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                    }
                }
                tracing::info!(
                    versions = total.versions,
                    intact = total.intact,
                    bad = total.bad,
                    unchecked = total.unchecked,
                    bytes = total.bytes,
                    "scrub cycle done"
                );
            };
            tokio::select! {
                () = cycle => {}
                _ = stop.changed() => return,
            }
            kept = Some(ScrubPosition {
                cycle_started: started,
                after: None,
            });
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn scrub(yaml: &str) -> sublet_crds::Scrub {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn the_tightest_schedule_sets_the_pace() {
        let a = scrub("{interval: 720h, bandwidthLimit: 4Mi}");
        let b = scrub("{interval: 24h, bandwidthLimit: 16Mi}");
        let p = ScrubPolicy::tightest([&a, &b]);
        assert_eq!(p.interval, Duration::from_secs(24 * 3600));
        assert_eq!(p.bandwidth_limit, Some(16 << 20));
        // The default limit is 8 MiB/s.
        let c = scrub("{interval: 48h}");
        assert_eq!(ScrubPolicy::tightest([&c]).bandwidth_limit, Some(8 << 20));
        assert_eq!(ScrubPolicy::tightest([]), ScrubPolicy::default());
    }

    #[tokio::test]
    async fn pace_holds_the_rate() {
        let mut pace = Pace {
            limit: Some(1 << 20),
            started: Instant::now(),
            bytes: 0,
        };
        let t = Instant::now();
        pace.take(256 << 10).await;
        assert!(
            t.elapsed() >= Duration::from_millis(240),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(pace.bytes, 256 << 10);
    }
}
