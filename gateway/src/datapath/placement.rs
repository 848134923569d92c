//! Placement: which providers hold the shards of a new object, honouring the plan's pool
//! limits and failure domains, the providers' free space and their recent health.
//!
//! [`choose`] is a pure function over a list of [`Candidate`]s; [`Topology`] keeps where each
//! provider sits and [`HealthBoard`] what was last seen of it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sublet_crds::{SpreadBy, StoragePlanSpec};

/// A provider failed within this long is skipped for new objects, unless it answered since.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Where a provider sits: its pool and failure domains. Fixed by the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub node_id: String,
    /// The ProviderPool it belongs to.
    pub pool: String,
    /// Its zone (a site: a house, a data centre).
    pub zone: String,
    /// The owner of its pool.
    pub owner: String,
}

/// A provider as placement sees it for one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub site: Site,
    /// Free bytes it last reported; `None` when not known yet.
    pub free_bytes: Option<u64>,
    /// False when it failed recently or does not answer.
    pub healthy: bool,
    /// How much to trust it with data, in thousandths ([`MIN_QUALITY`]..=1000): scales its
    /// share of placements. See [`HealthBoard::quality`].
    pub quality: u32,
}

/// How many shards of a stripe one pool must or may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRule {
    pub name: String,
    pub min_shards: usize,
    pub max_shards: Option<usize>,
}

/// A plan's placement rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementRule {
    pub spread_by: SpreadBy,
    pub max_per_domain: usize,
    /// The pools shards may go to; every pool, without limits, when empty.
    pub pools: Vec<PoolRule>,
}

impl PlacementRule {
    /// One shard per provider, any pool: what a plan without placement gets.
    pub fn any() -> Self {
        PlacementRule {
            spread_by: SpreadBy::Node,
            max_per_domain: 1,
            pools: Vec::new(),
        }
    }

    /// The rule a StoragePlan spells out.
    pub fn from_spec(spec: &StoragePlanSpec) -> Self {
        let count = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        PlacementRule {
            spread_by: spec.placement.spread_by,
            max_per_domain: count(spec.placement.max_per_domain.max(1)),
            pools: spec
                .placement
                .pools
                .iter()
                .map(|p| PoolRule {
                    name: p.name.clone(),
                    min_shards: p.min_shards.map_or(0, count),
                    max_shards: p.max_shards.map(count),
                })
                .collect(),
        }
    }

    /// Positions (in stripe order) of the shards of one stripe, stored on `providers`, that
    /// break this rule as it stands now: in a pool the plan no longer names, past a pool's
    /// `maxShards`, or past `maxPerDomain` in one failure domain. Earlier shards keep their
    /// place; providers not in `sites` (no longer configured) are left to health and repair.
    pub fn misplaced(&self, sites: &[Site], providers: &[Option<&str>]) -> Vec<usize> {
        let mut per_domain: HashMap<&str, usize> = HashMap::new();
        let mut per_pool: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, provider) in providers.iter().enumerate() {
            let Some(site) = provider.and_then(|p| sites.iter().find(|s| s.node_id == p)) else {
                continue;
            };
            let domain = domain_of(self.spread_by, site);
            let in_pool = per_pool.get(site.pool.as_str()).copied().unwrap_or(0);
            let in_domain = per_domain.get(domain).copied().unwrap_or(0);
            let over_pool = self
                .max_in_pool(&site.pool)
                .is_some_and(|max| in_pool >= max);
            if !self.allows_pool(&site.pool) || over_pool || in_domain >= self.max_per_domain {
                out.push(i);
                continue;
            }
            per_pool.insert(site.pool.as_str(), in_pool + 1);
            per_domain.insert(domain, in_domain + 1);
        }
        out
    }

    fn allows_pool(&self, pool: &str) -> bool {
        self.pools.is_empty() || self.pools.iter().any(|p| p.name == pool)
    }

    fn max_in_pool(&self, pool: &str) -> Option<usize> {
        self.pools
            .iter()
            .find(|p| p.name == pool)
            .and_then(|p| p.max_shards)
    }
}

fn domain_name(spread_by: SpreadBy) -> &'static str {
    match spread_by {
        SpreadBy::Node => "node",
        SpreadBy::Zone => "zone",
        SpreadBy::Owner => "owner",
        SpreadBy::Pool => "pool",
    }
}

fn domain_of(spread_by: SpreadBy, site: &Site) -> &str {
    match spread_by {
        SpreadBy::Node => &site.node_id,
        SpreadBy::Zone => &site.zone,
        SpreadBy::Owner => &site.owner,
        SpreadBy::Pool => &site.pool,
    }
}

/// Why a plan cannot be placed; the message names the rule that is not met.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unplaceable(pub String);

/// Picks `width` candidates (indices into `candidates`, in shard order) for the object
/// `key` with version uid `uid`.
///
/// Healthy candidates in the plan's pools with at least `need_bytes` free (or unknown free
/// space) are ranked by weighted rendezvous hashing of (key, uid, node): the same object
/// always ranks providers the same way, objects spread evenly, and a provider with more free
/// space is proportionally more likely to rank high. Pools with `minShards` are filled first
/// (scarcest pool first), then the rest in rank order, never more than `maxPerDomain` shards
/// in one failure domain or `maxShards` in one pool. Fails rather than placing fewer shards.
pub fn choose(
    plan: &str,
    rule: &PlacementRule,
    width: usize,
    candidates: &[Candidate],
    need_bytes: u64,
    key: &str,
    uid: &str,
) -> Result<Vec<usize>, Unplaceable> {
    choose_more(plan, rule, &[], width, candidates, need_bytes, key, uid)
}

/// Like [`choose`], for a stripe that already has shards on `kept` (indices into
/// `candidates`): picks `count` more providers, none of them in `kept`, so that kept and new
/// shards together honour the plan's pool limits and failure domains. What repair places
/// rebuilt shards with.
#[allow(clippy::too_many_arguments)]
pub fn choose_more(
    plan: &str,
    rule: &PlacementRule,
    kept: &[usize],
    count: usize,
    candidates: &[Candidate],
    need_bytes: u64,
    key: &str,
    uid: &str,
) -> Result<Vec<usize>, Unplaceable> {
    let width = kept.len() + count;
    let usable = |c: &Candidate| c.healthy && c.free_bytes.is_none_or(|free| free >= need_bytes);
    let mut ranked: Vec<(f64, usize)> = candidates
        .iter()
        .enumerate()
        .filter(|(i, c)| !kept.contains(i) && rule.allows_pool(&c.site.pool) && usable(c))
        .map(|(i, c)| (rank(key, uid, c), i))
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let ranked: Vec<usize> = ranked.into_iter().map(|(_, i)| i).collect();

    let mut pick = Picker {
        rule,
        candidates,
        chosen: Vec::with_capacity(width),
        per_domain: HashMap::new(),
        per_pool: HashMap::new(),
    };
    // Kept shards stay where they are, whatever the limits say now.
    for &i in kept {
        if i < candidates.len() && !pick.chosen.contains(&i) {
            let site = &candidates[i].site;
            *pick
                .per_domain
                .entry(domain_of(rule.spread_by, site))
                .or_default() += 1;
            *pick.per_pool.entry(site.pool.as_str()).or_default() += 1;
            pick.chosen.push(i);
        }
    }
    let kept_len = pick.chosen.len();
    let width = kept_len + count;

    let mut minimums: Vec<&PoolRule> = rule.pools.iter().filter(|p| p.min_shards > 0).collect();
    minimums.sort_by_key(|p| {
        ranked
            .iter()
            .filter(|&&i| candidates[i].site.pool == p.name)
            .count()
    });
    for pool in minimums {
        for &i in &ranked {
            if pick.count_in_pool(&pool.name) >= pool.min_shards || pick.chosen.len() >= width {
                break;
            }
            if candidates[i].site.pool == pool.name {
                pick.try_take(i);
            }
        }
        let placed = pick.count_in_pool(&pool.name);
        if placed < pool.min_shards {
            return Err(pool_short(plan, rule, pool, placed, candidates, need_bytes));
        }
    }
    for &i in &ranked {
        if pick.chosen.len() >= width {
            break;
        }
        pick.try_take(i);
    }
    if pick.chosen.len() < width {
        return Err(width_short(
            plan,
            rule,
            width,
            pick.chosen.len(),
            candidates,
            need_bytes,
        ));
    }
    Ok(pick.chosen.split_off(kept_len))
}

struct Picker<'a> {
    rule: &'a PlacementRule,
    candidates: &'a [Candidate],
    chosen: Vec<usize>,
    per_domain: HashMap<&'a str, usize>,
    per_pool: HashMap<&'a str, usize>,
}

impl<'a> Picker<'a> {
    fn count_in_pool(&self, pool: &str) -> usize {
        self.per_pool.get(pool).copied().unwrap_or(0)
    }

    fn try_take(&mut self, i: usize) -> bool {
        if self.chosen.contains(&i) {
            return false;
        }
        let site = &self.candidates[i].site;
        let domain = domain_of(self.rule.spread_by, site);
        if self.per_domain.get(domain).copied().unwrap_or(0) >= self.rule.max_per_domain {
            return false;
        }
        if let Some(max) = self.rule.max_in_pool(&site.pool)
            && self.count_in_pool(&site.pool) >= max
        {
            return false;
        }
        *self.per_domain.entry(domain).or_default() += 1;
        *self.per_pool.entry(site.pool.as_str()).or_default() += 1;
        self.chosen.push(i);
        true
    }
}

/// Weighted rendezvous score: lower ranks first. `-ln(u) / weight` with `u` uniform in (0, 1]
/// from the hash makes a provider's chance to rank first proportional to its weight.
fn rank(key: &str, uid: &str, candidate: &Candidate) -> f64 {
    let mut h = blake3::Hasher::new();
    h.update(key.as_bytes());
    h.update(&[0]);
    h.update(uid.as_bytes());
    h.update(&[0]);
    h.update(candidate.site.node_id.as_bytes());
    let mut word = [0u8; 8];
    word.copy_from_slice(&h.finalize().as_bytes()[..8]);
    // 53 random bits, shifted into (0, 1].
    let u = ((u64::from_le_bytes(word) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    // Weigh by free GiB; unknown free space counts as 1 GiB so new providers still get data.
    // Scaled by quality, so a provider with a poor record gets a proportionally smaller share.
    let weight = candidate
        .free_bytes
        .map_or(1.0, |free| ((free >> 30) as f64).max(1.0))
        * f64::from(candidate.quality.clamp(MIN_QUALITY, 1000))
        / 1000.0;
    -u.ln() / weight
}

/// " (2 unhealthy, 1 with less than 64 KiB free)" for the candidates `filter` keeps.
fn excluded(
    candidates: &[Candidate],
    need_bytes: u64,
    filter: impl Fn(&Candidate) -> bool,
) -> String {
    let unhealthy = candidates
        .iter()
        .filter(|c| filter(c) && !c.healthy)
        .count();
    let full = candidates
        .iter()
        .filter(|c| filter(c) && c.healthy && c.free_bytes.is_some_and(|f| f < need_bytes))
        .count();
    let mut parts = Vec::new();
    if unhealthy > 0 {
        parts.push(format!("{unhealthy} unhealthy"));
    }
    if full > 0 {
        parts.push(format!("{full} with less than {need_bytes} bytes free"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({} skipped)", parts.join(", "))
    }
}

fn providers(n: usize) -> &'static str {
    if n == 1 {
        "provider is"
    } else {
        "providers are"
    }
}

/// Shards the failure-domain rule allows over `sites`: `maxPerDomain` per distinct domain.
fn domain_capacity<'a>(
    rule: &PlacementRule,
    sites: impl Iterator<Item = &'a Site>,
) -> (usize, usize) {
    let mut per_domain: HashMap<&str, usize> = HashMap::new();
    for site in sites {
        *per_domain
            .entry(domain_of(rule.spread_by, site))
            .or_default() += 1;
    }
    let capacity = per_domain
        .values()
        .map(|&n| n.min(rule.max_per_domain))
        .sum();
    (capacity, per_domain.len())
}

fn pool_short(
    plan: &str,
    rule: &PlacementRule,
    pool: &PoolRule,
    placed: usize,
    candidates: &[Candidate],
    need_bytes: u64,
) -> Unplaceable {
    let in_pool = |c: &Candidate| c.site.pool == pool.name;
    let usable: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| in_pool(c) && c.healthy && c.free_bytes.is_none_or(|f| f >= need_bytes))
        .collect();
    let min = pool.min_shards;
    let name = &pool.name;
    let skipped = excluded(candidates, need_bytes, in_pool);
    if usable.len() < min {
        let n = usable.len();
        return Unplaceable(format!(
            "plan {plan}: pool {name} needs at least {min} shards but only {n} healthy {} available{skipped}",
            providers(n)
        ));
    }
    let (capacity, domains) = domain_capacity(rule, usable.iter().map(|c| &c.site));
    let domain = domain_name(rule.spread_by);
    if capacity < min {
        return Unplaceable(format!(
            "plan {plan}: pool {name} needs at least {min} shards but its healthy providers span only {domains} {domain}s \
             and spreadBy {domain} allows {} per {domain}",
            rule.max_per_domain
        ));
    }
    Unplaceable(format!(
        "plan {plan}: pool {name} needs at least {min} shards but only {placed} fit beside the other pools' \
         shards (spreadBy {domain} allows {} per {domain})",
        rule.max_per_domain
    ))
}

fn width_short(
    plan: &str,
    rule: &PlacementRule,
    width: usize,
    placed: usize,
    candidates: &[Candidate],
    need_bytes: u64,
) -> Unplaceable {
    let allowed = |c: &Candidate| rule.allows_pool(&c.site.pool);
    let usable: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| allowed(c) && c.healthy && c.free_bytes.is_none_or(|f| f >= need_bytes))
        .collect();
    let pools = if rule.pools.is_empty() {
        "any pool".to_owned()
    } else {
        let names: BTreeSet<&str> = rule.pools.iter().map(|p| p.name.as_str()).collect();
        format!(
            "pool{} {}",
            if names.len() == 1 { "" } else { "s" },
            names.into_iter().collect::<Vec<_>>().join(", ")
        )
    };
    let n = usable.len();
    if n < width {
        let skipped = excluded(candidates, need_bytes, allowed);
        return Unplaceable(format!(
            "plan {plan} needs {width} providers (one per shard) but only {n} healthy {} available in {pools}{skipped}",
            providers(n)
        ));
    }
    let (capacity, domains) = domain_capacity(rule, usable.iter().map(|c| &c.site));
    let domain = domain_name(rule.spread_by);
    if capacity < width {
        return Unplaceable(format!(
            "plan {plan} needs {width} shards but its {n} healthy providers span only {domains} {domain}s \
             and spreadBy {domain} allows {} per {domain}",
            rule.max_per_domain
        ));
    }
    let caps: Vec<String> = rule
        .pools
        .iter()
        .filter_map(|p| p.max_shards.map(|m| format!("{} at most {m}", p.name)))
        .collect();
    Unplaceable(format!(
        "plan {plan} needs {width} shards but only {placed} can be placed within the pools' maxShards ({})",
        caps.join(", ")
    ))
}

/// What was last seen of each provider: free space from its info answers and when it last
/// failed or answered.
#[derive(Debug, Default)]
pub struct HealthBoard {
    states: Mutex<HashMap<String, ProviderState>>,
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

/// The smallest quality a placeable provider is weighted with: a poor record shrinks its
/// share of new shards to a twentieth, it does not starve it (probation and audits decide
/// whether it gets any).
pub const MIN_QUALITY: u32 = 50;

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

    /// Free bytes last reported, if any.
    pub fn free_bytes(&self, node: &str) -> Option<u64> {
        self.with(node, |s| s.free_bytes)
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
        }
    }

    /// The rule of `plan`.
    pub fn rule(&self, plan: &str) -> PlacementRule {
        self.rules
            .get(plan)
            .cloned()
            .unwrap_or_else(PlacementRule::any)
    }

    /// Every provider with its current free space and health.
    pub fn candidates(&self, health: &HealthBoard) -> Vec<Candidate> {
        self.sites
            .iter()
            .map(|site| Candidate {
                site: site.clone(),
                free_bytes: health.free_bytes(&site.node_id),
                healthy: health.healthy(&site.node_id),
                quality: health.quality(&site.node_id),
            })
            .collect()
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (pool {}, zone {})",
            self.node_id, self.pool, self.zone
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn misplaced_shards_are_the_ones_past_the_rules() {
        let site = |n: &str, pool: &str, zone: &str| Site {
            node_id: n.into(),
            pool: pool.into(),
            zone: zone.into(),
            owner: "me".into(),
        };
        let sites = vec![
            site("a", "home", "z1"),
            site("b", "home", "z1"),
            site("c", "home", "z2"),
            site("d", "rented", "z3"),
            site("e", "rented", "z4"),
            site("f", "old", "z5"),
        ];
        let rule = PlacementRule {
            spread_by: SpreadBy::Zone,
            max_per_domain: 1,
            pools: vec![
                PoolRule {
                    name: "home".into(),
                    min_shards: 0,
                    max_shards: None,
                },
                PoolRule {
                    name: "rented".into(),
                    min_shards: 0,
                    max_shards: Some(1),
                },
            ],
        };
        let stripe = [
            Some("a"),
            Some("b"), // a second shard in zone z1
            Some("c"),
            Some("d"),
            Some("e"),    // a second shard in the rented pool
            Some("f"),    // a pool the plan no longer names
            None,         // a missing shard
            Some("gone"), // a provider no longer configured
        ];
        assert_eq!(rule.misplaced(&sites, &stripe), [1, 4, 5]);
        assert!(
            PlacementRule::any()
                .misplaced(&sites, &stripe[..4])
                .is_empty()
        );
    }

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

    fn rule(
        spread_by: SpreadBy,
        max_per_domain: usize,
        pools: &[(&str, usize, Option<usize>)],
    ) -> PlacementRule {
        PlacementRule {
            spread_by,
            max_per_domain,
            pools: pools
                .iter()
                .map(|&(name, min, max)| PoolRule {
                    name: name.to_owned(),
                    min_shards: min,
                    max_shards: max,
                })
                .collect(),
        }
    }

    fn pools_of(candidates: &[Candidate], chosen: &[usize]) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for &i in chosen {
            *out.entry(candidates[i].site.pool.clone()).or_default() += 1;
        }
        out
    }

    #[test]
    fn picks_distinct_providers_deterministically() {
        let cands = pool("p", 10, 10);
        let r = PlacementRule::any();
        let a = choose("x", &r, 6, &cands, 0, "key", "uid1").unwrap();
        let b = choose("x", &r, 6, &cands, 0, "key", "uid1").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), 6);
        let c = choose("x", &r, 6, &cands, 0, "key", "uid2").unwrap();
        assert_ne!(a, c, "another uid should rank providers differently");
    }

    #[test]
    fn spreads_objects_over_all_providers() {
        let cands = pool("p", 8, 8);
        let mut hits = vec![0usize; 8];
        for n in 0..400 {
            for i in choose(
                "x",
                &PlacementRule::any(),
                2,
                &cands,
                0,
                "k",
                &n.to_string(),
            )
            .unwrap()
            {
                hits[i] += 1;
            }
        }
        // 800 shards over 8 providers: about 100 each.
        assert!(hits.iter().all(|&h| (50..=150).contains(&h)), "{hits:?}");
    }

    #[test]
    fn more_free_space_gets_more_shards() {
        let mut cands = pool("p", 4, 4);
        cands[0].free_bytes = Some(1000 << 30);
        for c in &mut cands[1..] {
            c.free_bytes = Some(10 << 30);
        }
        let mut first = 0;
        for n in 0..300 {
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
                first += 1;
            }
        }
        // Weight 1000 against 3 x 10: about 97% of single-shard objects land on it.
        assert!(first > 250, "{first}");
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
    fn skips_unhealthy_and_full_providers() {
        let mut cands = pool("p", 6, 6);
        cands[1].healthy = false;
        cands[4].free_bytes = Some(10);
        for n in 0..50 {
            let chosen = choose(
                "x",
                &PlacementRule::any(),
                4,
                &cands,
                1000,
                "k",
                &n.to_string(),
            )
            .unwrap();
            assert!(!chosen.contains(&1) && !chosen.contains(&4), "{chosen:?}");
        }
        let err = choose("photos", &PlacementRule::any(), 5, &cands, 1000, "k", "u").unwrap_err();
        assert_eq!(
            err.0,
            "plan photos needs 5 providers (one per shard) but only 4 healthy providers are available in any pool (1 unhealthy, 1 with less than 1000 bytes free skipped)"
        );
    }

    #[test]
    fn unknown_free_space_is_usable() {
        let mut cands = pool("p", 3, 3);
        for c in &mut cands {
            c.free_bytes = None;
        }
        assert_eq!(
            choose("x", &PlacementRule::any(), 3, &cands, 1 << 40, "k", "u")
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn honours_pool_minimums_and_maximums() {
        let mut cands = pool("home-lab", 5, 5);
        cands.extend(pool("friends", 2, 2));
        cands.extend(pool("rented", 6, 6));
        let r = rule(
            SpreadBy::Node,
            1,
            &[
                ("home-lab", 4, None),
                ("friends", 0, None),
                ("rented", 0, Some(2)),
            ],
        );
        for n in 0..100 {
            let chosen = choose("photos", &r, 6, &cands, 0, "k", &n.to_string()).unwrap();
            let by_pool = pools_of(&cands, &chosen);
            assert!(by_pool["home-lab"] >= 4, "{by_pool:?}");
            assert!(
                by_pool.get("rented").copied().unwrap_or(0) <= 2,
                "{by_pool:?}"
            );
            assert_eq!(chosen.len(), 6);
        }
    }

    #[test]
    fn ignores_pools_the_plan_does_not_name() {
        let mut cands = pool("a", 3, 3);
        cands.extend(pool("b", 10, 10));
        let r = rule(SpreadBy::Node, 1, &[("a", 0, None)]);
        let chosen = choose("x", &r, 3, &cands, 0, "k", "u").unwrap();
        assert_eq!(pools_of(&cands, &chosen)["a"], 3);
        let err = choose("x", &r, 4, &cands, 0, "k", "u").unwrap_err();
        assert_eq!(
            err.0,
            "plan x needs 4 providers (one per shard) but only 3 healthy providers are available in pool a"
        );
    }

    #[test]
    fn names_the_pool_whose_minimum_cannot_be_met() {
        let mut cands = pool("home-lab", 4, 4);
        cands[2].healthy = false;
        cands.extend(pool("rented", 6, 6));
        let r = rule(
            SpreadBy::Node,
            1,
            &[("home-lab", 4, None), ("rented", 0, Some(2))],
        );
        let err = choose("family-photos", &r, 6, &cands, 0, "k", "u").unwrap_err();
        assert_eq!(
            err.0,
            "plan family-photos: pool home-lab needs at least 4 shards but only 3 healthy providers are available (1 unhealthy skipped)"
        );
    }

    #[test]
    fn spreads_by_zone() {
        // 6 providers in 3 zones, at most 2 per zone: every zone gets exactly 2.
        let cands = pool("p", 6, 3);
        let r = rule(SpreadBy::Zone, 2, &[]);
        for n in 0..30 {
            let chosen = choose("x", &r, 6, &cands, 0, "k", &n.to_string()).unwrap();
            let mut zones: HashMap<&str, usize> = HashMap::new();
            for &i in &chosen {
                *zones.entry(cands[i].site.zone.as_str()).or_default() += 1;
            }
            assert!(zones.values().all(|&z| z == 2), "{zones:?}");
        }
        // One per zone over 3 zones cannot hold 4 shards.
        let err = choose("x", &rule(SpreadBy::Zone, 1, &[]), 4, &cands, 0, "k", "u").unwrap_err();
        assert_eq!(
            err.0,
            "plan x needs 4 shards but its 6 healthy providers span only 3 zones and spreadBy zone allows 1 per zone"
        );
    }

    #[test]
    fn zone_limit_inside_a_pool_minimum() {
        let mut cands = pool("home", 4, 2);
        cands.extend(pool("far", 4, 4));
        let r = rule(SpreadBy::Zone, 1, &[("home", 3, None), ("far", 0, None)]);
        let err = choose("x", &r, 5, &cands, 0, "k", "u").unwrap_err();
        assert_eq!(
            err.0,
            "plan x: pool home needs at least 3 shards but its healthy providers span only 2 zones and spreadBy zone allows 1 per zone"
        );
    }

    #[test]
    fn spreads_by_owner_and_pool() {
        let mut cands = pool("a", 3, 3);
        cands.extend(pool("b", 3, 3));
        cands.extend(pool("c", 3, 3));
        for spread in [SpreadBy::Owner, SpreadBy::Pool] {
            let chosen = choose("x", &rule(spread, 1, &[]), 3, &cands, 0, "k", "u").unwrap();
            let by_pool = pools_of(&cands, &chosen);
            assert_eq!(by_pool.len(), 3, "{spread:?}: {by_pool:?}");
        }
    }

    #[test]
    fn pool_maximums_that_leave_too_few_shards() {
        let mut cands = pool("a", 5, 5);
        cands.extend(pool("b", 5, 5));
        let r = rule(SpreadBy::Node, 1, &[("a", 0, Some(2)), ("b", 0, Some(2))]);
        let err = choose("x", &r, 5, &cands, 0, "k", "u").unwrap_err();
        assert_eq!(
            err.0,
            "plan x needs 5 shards but only 4 can be placed within the pools' maxShards (a at most 2, b at most 2)"
        );
    }

    #[test]
    fn never_places_fewer_shards() {
        let cands = pool("p", 3, 3);
        assert!(choose("x", &PlacementRule::any(), 4, &cands, 0, "k", "u").is_err());
        assert!(
            choose("x", &PlacementRule::any(), 0, &cands, 0, "k", "u")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn rule_from_a_plan_spec() {
        let spec: StoragePlanSpec = serde_yaml::from_str(
            "redundancy: {erasure: {dataShards: 4, parityShards: 2}}\nplacement: {spreadBy: zone, maxPerDomain: 2, pools: [{name: home, minShards: 4}, {name: rented, maxShards: 2}]}",
        )
        .unwrap();
        assert_eq!(
            PlacementRule::from_spec(&spec),
            rule(
                SpreadBy::Zone,
                2,
                &[("home", 4, None), ("rented", 0, Some(2))]
            )
        );
    }

    #[test]
    fn more_shards_avoid_kept_providers_and_their_domains() {
        let candidates = pool("p", 8, 4);
        let r = rule(SpreadBy::Zone, 2, &[]);
        // Zones p-z0 and p-z1 already hold two shards each.
        let kept = [0, 4, 1, 5];
        let more = choose_more("x", &r, &kept, 4, &candidates, 1, "k", "u").unwrap();
        assert_eq!(more.len(), 4);
        for i in &more {
            assert!(!kept.contains(i));
            assert!(["p-z2", "p-z3"].contains(&candidates[*i].site.zone.as_str()));
        }
        let err = choose_more("x", &r, &kept, 5, &candidates, 1, "k", "u").unwrap_err();
        assert!(err.0.contains("needs 9 providers"), "{err}");
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
