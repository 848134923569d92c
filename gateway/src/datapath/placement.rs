//! Placement state: what the gateway last saw of each provider ([`HealthBoard`]) and where
//! each sits under which plan's rule ([`Topology`]). The rule itself ([`choose`],
//! [`PlacementRule`] and the rest) lives in the `sublet-placement` crate, shared with the
//! operator's feasibility check, and is re-exported here.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use sublet_placement::{
    Candidate, MIN_QUALITY, PlacementRule, PoolRule, Site, Unplaceable, choose, choose_more,
};

/// A provider failed within this long is skipped for new objects, unless it answered since.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// What was last seen of each provider: free space from its info answers and when it last
/// failed or answered.
#[derive(Debug, Default)]
pub struct HealthBoard {
    states: Mutex<HashMap<String, ProviderState>>,
    /// Told of every shard found bad outside an audit (the market meter of rented providers).
    bad_shard_sink: std::sync::OnceLock<BadShardSink>,
}

/// Called with the provider's node id for each of its shards found bad outside an audit.
pub struct BadShardSink(pub Box<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for BadShardSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BadShardSink")
    }
}

/// Audits failed in a row after which a provider gets no new shards until it passes one.
pub const AUDIT_STRIKES: u32 = 3;
/// How long a struck provider gets no new shards without passing an audit. After that it is
/// placeable on probation: a provider whose every shard was flagged or repaired away has
/// nothing left to be audited on, and would otherwise stay shut out until a restart. Its
/// next failed audit shuts it out again for as long.
pub const AUDIT_PROBATION: Duration = Duration::from_secs(3600);

#[derive(Debug, Default, Clone)]
struct ProviderState {
    free_bytes: Option<u64>,
    /// When it last refused a write for want of space (see [`HealthBoard::free_bytes`]).
    refused_space: Option<Instant>,
    last_success: Option<Instant>,
    last_failure: Option<Instant>,
    audits_passed: u64,
    audits_failed: u64,
    /// Audits failed since the last one passed.
    audit_strikes: u32,
    last_audit_failure: Option<Instant>,
    /// Its rating on the market (0 to 1000), for providers rented there.
    market_score: Option<u32>,
    /// Probes since the window was last taken: sent, answered, and the answers' latencies
    /// in milliseconds (at most [`PROBE_WINDOW`] kept).
    probes: u64,
    probes_answered: u64,
    probe_latencies: Vec<u32>,
}

/// Latencies a probe window keeps for its median.
const PROBE_WINDOW: usize = 4096;

/// Probes of one provider over a window: sent, answered, median latency of the answers (ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeWindow {
    pub probes: u64,
    pub answered: u64,
    pub median_ms: u64,
}

impl HealthBoard {
    fn with<T>(&self, node: &str, f: impl FnOnce(&mut ProviderState) -> T) -> T {
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(states.entry(node.to_owned()).or_default())
    }

    /// The provider answered a call.
    pub fn record_success(&self, node: &str) {
        self.with(node, |s| s.last_success = Some(Instant::now()));
    }

    /// A call to the provider failed or timed out.
    pub fn record_failure(&self, node: &str) {
        self.with(node, |s| s.last_failure = Some(Instant::now()));
    }

    /// The provider reported its free space.
    pub fn record_free(&self, node: &str, free_bytes: u64) {
        self.with(node, |s| {
            s.free_bytes = Some(free_bytes);
            s.last_success = Some(Instant::now());
        });
    }

    /// The provider refused a write for want of space, whatever free space it reports.
    pub fn record_out_of_space(&self, node: &str) {
        self.with(node, |s| s.refused_space = Some(Instant::now()));
    }

    /// Free bytes last reported, if any; none (`Some(0)`) for [`FAILURE_WINDOW`] after the
    /// provider refused a write for want of space, what it reports meanwhile
    /// notwithstanding: a provider that overstates its free space gets no new shards.
    pub fn free_bytes(&self, node: &str) -> Option<u64> {
        self.with(node, |s| {
            if s.refused_space
                .is_some_and(|at| at.elapsed() < FAILURE_WINDOW)
            {
                Some(0)
            } else {
                s.free_bytes
            }
        })
    }

    /// Records an audit of one of its shards.
    pub fn record_audit(&self, node: &str, passed: bool) {
        self.with(node, |s| {
            if passed {
                s.audits_passed += 1;
                s.audit_strikes = 0;
            } else {
                s.audits_failed += 1;
                s.audit_strikes += 1;
                s.last_audit_failure = Some(Instant::now());
            }
        });
    }

    /// A read, a scrub or a write's acknowledgement found one of the provider's shards
    /// corrupt, gone, or not part of the segment it belongs to. It counts as a failed audit
    /// (a read checks the whole shard), so the provider's score and placement quality drop,
    /// and [`AUDIT_STRIKES`] of them in a row keep new shards off it; the sink (the market
    /// meter, for a rented provider) is told, so the demander's receipt shows it.
    pub fn record_bad_shard(&self, node: &str) {
        self.record_audit(node, false);
        if let Some(sink) = self.bad_shard_sink.get() {
            (sink.0)(node);
        }
    }

    /// Tells `sink` of every bad shard recorded from now on. Set once; a second sink is
    /// refused (returned).
    pub fn on_bad_shard(&self, sink: BadShardSink) -> Result<(), BadShardSink> {
        self.bad_shard_sink.set(sink)
    }

    /// Records a health probe: answered in `latency`, or not answered.
    pub fn record_probe(&self, node: &str, answered: Option<Duration>) {
        self.with(node, |s| {
            s.probes += 1;
            if let Some(latency) = answered {
                s.probes_answered += 1;
                if s.probe_latencies.len() < PROBE_WINDOW {
                    s.probe_latencies
                        .push(latency.as_millis().min(u128::from(u32::MAX)) as u32);
                }
            }
        });
    }

    /// The probes since the last call (what a demander reports to the market each period),
    /// starting a new window; `None` without any.
    pub fn take_probe_window(&self, node: &str) -> Option<ProbeWindow> {
        self.with(node, |s| {
            if s.probes == 0 {
                return None;
            }
            let mut latencies = std::mem::take(&mut s.probe_latencies);
            latencies.sort_unstable();
            let window = ProbeWindow {
                probes: s.probes,
                answered: s.probes_answered,
                median_ms: latencies
                    .get(latencies.len() / 2)
                    .copied()
                    .map_or(0, u64::from),
            };
            s.probes = 0;
            s.probes_answered = 0;
            Some(window)
        })
    }

    /// Records the provider's market rating (0 to 1000).
    pub fn record_market_score(&self, node: &str, score: u32) {
        self.with(node, |s| s.market_score = Some(score.min(1000)));
    }

    /// How much placement trusts the provider, in thousandths ([`MIN_QUALITY`]..=1000): its
    /// share of audits passed since the gateway started, times its market rating for rented
    /// providers (a provider rated 500 gets half the new shards one rated 1000 gets, free
    /// space alike). 1000 without either.
    pub fn quality(&self, node: &str) -> u32 {
        self.with(node, |s| {
            let total = s.audits_passed + s.audits_failed;
            let audits = (s.audits_passed * 1000).checked_div(total).unwrap_or(1000);
            let market = u64::from(s.market_score.unwrap_or(1000));
            ((audits * market / 1000) as u32).clamp(MIN_QUALITY, 1000)
        })
    }

    /// Percent of its audits passed since the gateway started; `None` before the first.
    pub fn score(&self, node: &str) -> Option<u64> {
        self.with(node, |s| {
            let total = s.audits_passed + s.audits_failed;
            (total > 0).then(|| s.audits_passed * 100 / total)
        })
    }

    /// Healthy unless it failed within [`FAILURE_WINDOW`] and has not answered since, or
    /// failed [`AUDIT_STRIKES`] audits in a row, the last within [`AUDIT_PROBATION`].
    pub fn healthy(&self, node: &str) -> bool {
        self.healthy_at(node, Instant::now())
    }

    fn healthy_at(&self, node: &str, now: Instant) -> bool {
        self.with(node, |s| {
            let struck = s.audit_strikes >= AUDIT_STRIKES
                && s.last_audit_failure
                    .is_some_and(|at| now.saturating_duration_since(at) < AUDIT_PROBATION);
            if struck {
                return false;
            }
            match s.last_failure {
                None => true,
                Some(failed) => {
                    s.last_success.is_some_and(|ok| ok > failed)
                        || failed.elapsed() > FAILURE_WINDOW
                }
            }
        })
    }
}

/// Where every provider sits and each plan's rule: what the gateway places objects with.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    pub sites: Vec<Site>,
    /// Placement rules by plan name; plans without one use [`PlacementRule::any`].
    pub rules: HashMap<String, PlacementRule>,
    /// Pools being drained (`drain: true`): no new shards go there, and the shards stored
    /// there count as misplaced until the drain pass (`upkeep/drain.rs`) moves them.
    pub draining: BTreeSet<String>,
}

impl Topology {
    /// Every provider in one pool, each its own zone: what `sublet dev` runs.
    pub fn flat<'a>(node_ids: impl IntoIterator<Item = &'a str>) -> Self {
        Topology {
            sites: node_ids
                .into_iter()
                .map(|id| Site {
                    node_id: id.to_owned(),
                    pool: "default".to_owned(),
                    zone: id.to_owned(),
                    owner: "default".to_owned(),
                })
                .collect(),
            rules: HashMap::new(),
            draining: BTreeSet::new(),
        }
    }

    /// The rule of `plan`.
    pub fn rule(&self, plan: &str) -> PlacementRule {
        self.rules
            .get(plan)
            .cloned()
            .unwrap_or_else(PlacementRule::any)
    }

    /// Whether `node` is a provider of a draining pool.
    pub fn is_draining(&self, node: &str) -> bool {
        !self.draining.is_empty()
            && self
                .sites
                .iter()
                .any(|s| s.node_id == node && self.draining.contains(&s.pool))
    }

    /// The sites of pools not draining: where shards may go.
    pub fn placeable_sites(&self) -> impl Iterator<Item = &Site> {
        self.sites
            .iter()
            .filter(|s| !self.draining.contains(&s.pool))
    }

    /// Every provider new shards may go to (draining pools left out) with its current free
    /// space and health.
    pub fn candidates(&self, health: &HealthBoard) -> Vec<Candidate> {
        self.placeable_sites()
            .map(|site| Candidate {
                site: site.clone(),
                free_bytes: health.free_bytes(&site.node_id),
                healthy: health.healthy(&site.node_id),
                quality: health.quality(&site.node_id),
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn site(node: &str, pool: &str, zone: &str) -> Candidate {
        Candidate {
            site: Site {
                node_id: node.to_owned(),
                pool: pool.to_owned(),
                zone: zone.to_owned(),
                owner: format!("{pool}-owner"),
            },
            free_bytes: Some(100 << 30),
            healthy: true,
            quality: 1000,
        }
    }

    /// `n` providers named `{pool}-{i}` in pool `pool`, zone `{pool}-z{i % zones}`.
    fn pool(pool: &str, n: usize, zones: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| {
                site(
                    &format!("{pool}-{i}"),
                    pool,
                    &format!("{pool}-z{}", i % zones),
                )
            })
            .collect()
    }

    #[test]
    fn a_draining_pool_is_no_candidate() {
        let mut topology = Topology::flat(["a", "b"]);
        topology.sites[1].pool = "old".into();
        let board = HealthBoard::default();
        assert_eq!(topology.candidates(&board).len(), 2);
        topology.draining.insert("old".into());
        let names: Vec<String> = topology
            .candidates(&board)
            .into_iter()
            .map(|c| c.site.node_id)
            .collect();
        assert_eq!(names, ["a"]);
        assert!(topology.is_draining("b"));
        assert!(!topology.is_draining("a"));
        assert!(!topology.is_draining("unknown"));
    }

    #[test]
    fn probe_windows_count_and_take_the_median() {
        let board = HealthBoard::default();
        assert_eq!(board.take_probe_window("n"), None);
        for ms in [30, 10, 20] {
            board.record_probe("n", Some(Duration::from_millis(ms)));
        }
        board.record_probe("n", None);
        assert_eq!(
            board.take_probe_window("n"),
            Some(ProbeWindow {
                probes: 4,
                answered: 3,
                median_ms: 20
            })
        );
        // Taken: the next window starts empty.
        assert_eq!(board.take_probe_window("n"), None);
    }

    #[test]
    fn a_poor_record_shrinks_a_providers_share() {
        let board = HealthBoard::default();
        assert_eq!(board.quality("a"), 1000);
        board.record_market_score("a", 250);
        for _ in 0..3 {
            board.record_audit("a", true);
        }
        board.record_audit("a", false);
        // 3 of 4 audits passed, rated 250 of 1000.
        assert_eq!(board.quality("a"), 187);
        board.record_market_score("b", 0);
        assert_eq!(board.quality("b"), MIN_QUALITY);

        let mut cands = pool("p", 2, 2);
        cands[0].quality = 250;
        let mut low = 0;
        for n in 0..1000 {
            let chosen = choose(
                "x",
                &PlacementRule::any(),
                1,
                &cands,
                0,
                "k",
                &n.to_string(),
            )
            .unwrap();
            if chosen[0] == 0 {
                low += 1;
            }
        }
        // Weight 0.25 against 1: a fifth of single-shard objects, about 200 of 1000.
        assert!((120..300).contains(&low), "{low}");
    }

    #[test]
    fn repeated_audit_failures_stop_placement_until_an_audit_passes() {
        let board = HealthBoard::default();
        for _ in 0..AUDIT_STRIKES - 1 {
            board.record_audit("n", false);
        }
        assert!(board.healthy("n"));
        board.record_audit("n", false);
        assert!(!board.healthy("n"));
        board.record_free("n", 10);
        assert!(!board.healthy("n"), "answering probes is not enough");
        board.record_audit("n", true);
        assert!(board.healthy("n"));
        assert_eq!(board.score("n"), Some(25));
        assert_eq!(board.score("other"), None);
    }

    #[test]
    fn a_struck_provider_with_nothing_left_to_audit_is_placeable_again_on_probation() {
        let board = HealthBoard::default();
        for _ in 0..AUDIT_STRIKES {
            board.record_audit("n", false);
        }
        let now = Instant::now();
        assert!(!board.healthy_at("n", now));
        assert!(!board.healthy_at("n", now + AUDIT_PROBATION - Duration::from_secs(60)));
        assert!(board.healthy_at("n", now + AUDIT_PROBATION + Duration::from_secs(1)));
        // One more failure on probation shuts it out again at once.
        board.record_audit("n", false);
        assert!(!board.healthy_at("n", Instant::now()));
    }

    #[test]
    fn a_provider_that_refused_a_write_for_space_has_none_whatever_it_reports() {
        let board = HealthBoard::default();
        board.record_free("n", 1 << 50);
        assert_eq!(board.free_bytes("n"), Some(1 << 50));
        board.record_out_of_space("n");
        assert_eq!(board.free_bytes("n"), Some(0));
        board.record_free("n", 1 << 50);
        assert_eq!(
            board.free_bytes("n"),
            Some(0),
            "the next report is not believed"
        );
        assert_eq!(board.free_bytes("m"), None);
    }

    #[test]
    fn a_bad_shard_found_by_a_read_costs_the_provider_like_a_failed_audit() {
        let board = HealthBoard::default();
        board.record_audit("n", true);
        board.record_bad_shard("n");
        assert_eq!(board.score("n"), Some(50));
        board.record_bad_shard("n");
        board.record_bad_shard("n");
        assert!(!board.healthy("n"), "three in a row keep new shards off it");
    }

    #[test]
    fn health_board_forgets_failures_after_an_answer() {
        let board = HealthBoard::default();
        assert!(board.healthy("n"));
        board.record_failure("n");
        assert!(!board.healthy("n"));
        std::thread::sleep(Duration::from_millis(2));
        board.record_success("n");
        assert!(board.healthy("n"));
        board.record_free("n", 42);
        assert_eq!(board.free_bytes("n"), Some(42));
    }
}
