//! Which providers get the shards of a new stripe, or the rebuilt shards of a stored one.

use std::collections::{BTreeSet, HashMap};

use crate::{PlacementRule, PoolRule, Site, domain_capacity, domain_name, domain_of};

/// A provider as placement sees it for one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub site: Site,
    /// Free bytes it last reported; `None` when not known yet.
    pub free_bytes: Option<u64>,
    /// False when it failed recently or does not answer.
    pub healthy: bool,
    /// How much to trust it with data, in thousandths ([`MIN_QUALITY`]..=1000): scales its
    /// share of placements. The gateway's health board works it out from audits and market
    /// ratings.
    pub quality: u32,
}

/// The smallest quality a placeable provider is weighted with: a poor record shrinks its
/// share of new shards to a twentieth, it does not starve it (probation and audits decide
/// whether it gets any).
pub const MIN_QUALITY: u32 = 50;

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tests::rule;
    use sublet_crds::SpreadBy;

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
}
