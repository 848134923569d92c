//! Whether a plan could be placed at all on some providers, all of them healthy and with
//! room: what the operator's `Feasible` condition reports.

use std::collections::{BTreeMap, VecDeque};

use crate::{PlacementRule, Site, domain_capacity, domain_of};

/// Why no stripe of a plan fits on the providers, however they rank. Each caller words it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shortfall {
    /// `rule.pools[pool]` must hold `min` shards of every stripe, but its `sites` providers
    /// can hold only `can_hold` (`maxPerDomain` per failure domain, at most its `maxShards`).
    PoolMinimum {
        pool: usize,
        min: usize,
        sites: usize,
        can_hold: usize,
    },
    /// A stripe has `width` shards, but the `sites` providers of the pools the rule allows
    /// can hold only `can_hold` of them (each provider one, `maxPerDomain` per failure
    /// domain, each pool at most its `maxShards`).
    Width {
        width: usize,
        sites: usize,
        can_hold: usize,
    },
}

/// Checks that `sites` can hold a stripe of `width` shards under `rule`, every site taken
/// as healthy and with room. `Err` names the first rule that cannot be met: a pool whose
/// providers cannot hold its `minShards` alone, else the stripe as a whole.
///
/// The whole-stripe count is exact (a max flow from pools, capped by `maxShards`, through
/// failure domains, capped by `maxPerDomain`), so a plan is reported unplaceable only when
/// no arrangement fits: [`choose`](crate::choose) succeeds only on rules and sites this
/// accepts. `choose` is greedy, though: where pool limits and shared failure domains
/// interact it can miss, for some objects, an arrangement that exists. Minimums are checked
/// pool by pool, not jointly.
pub fn feasible(rule: &PlacementRule, sites: &[Site], width: usize) -> Result<(), Shortfall> {
    if width == 0 {
        return Ok(());
    }
    let allowed: Vec<&Site> = sites.iter().filter(|s| rule.allows_pool(&s.pool)).collect();
    for (i, pool) in rule.pools.iter().enumerate() {
        if pool.min_shards == 0 {
            continue;
        }
        let in_pool = || allowed.iter().copied().filter(|s| s.pool == pool.name);
        let (spread, _) = domain_capacity(rule, in_pool());
        let can_hold = pool.max_shards.map_or(spread, |max| spread.min(max));
        if can_hold < pool.min_shards {
            return Err(Shortfall::PoolMinimum {
                pool: i,
                min: pool.min_shards,
                sites: in_pool().count(),
                can_hold,
            });
        }
    }
    let can_hold = most_shards(rule, &allowed);
    if can_hold < width {
        return Err(Shortfall::Width {
            width,
            sites: allowed.len(),
            can_hold,
        });
    }
    Ok(())
}

/// Most shards of one stripe `sites` can hold: a max flow from pools (capped by
/// `maxShards`) through failure domains (capped by `maxPerDomain`), one shard per site.
fn most_shards(rule: &PlacementRule, sites: &[&Site]) -> usize {
    // Sites per pool and domain; a domain may span pools (an owner's two pools).
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for site in sites {
        *counts
            .entry((site.pool.as_str(), domain_of(rule.spread_by, site)))
            .or_default() += 1;
    }
    let mut pools: BTreeMap<&str, usize> = BTreeMap::new();
    let mut domains: BTreeMap<&str, usize> = BTreeMap::new();
    for &(pool, domain) in counts.keys() {
        let next = pools.len();
        pools.entry(pool).or_insert(next);
        let next = domains.len();
        domains.entry(domain).or_insert(next);
    }
    let (source, sink) = (0, 1);
    let pool_node = |i: usize| 2 + i;
    let domain_node = |i: usize| 2 + pools.len() + i;
    let n = 2 + pools.len() + domains.len();
    let mut cap = vec![vec![0usize; n]; n];
    for (&pool, &i) in &pools {
        cap[source][pool_node(i)] = rule.max_in_pool(pool).unwrap_or(sites.len());
    }
    for (&(pool, domain), &count) in &counts {
        cap[pool_node(pools[pool])][domain_node(domains[domain])] += count;
    }
    for &j in domains.values() {
        cap[domain_node(j)][sink] = rule.max_per_domain;
    }
    let mut flow = 0;
    loop {
        // Shortest augmenting path (Edmonds-Karp); the graph is a few dozen nodes.
        let mut parent = vec![usize::MAX; n];
        parent[source] = source;
        let mut queue = VecDeque::from([source]);
        while let Some(u) = queue.pop_front() {
            for v in 0..n {
                if parent[v] == usize::MAX && cap[u][v] > 0 {
                    parent[v] = u;
                    queue.push_back(v);
                }
            }
        }
        if parent[sink] == usize::MAX {
            return flow;
        }
        let mut push = usize::MAX;
        let mut v = sink;
        while v != source {
            push = push.min(cap[parent[v]][v]);
            v = parent[v];
        }
        let mut v = sink;
        while v != source {
            let u = parent[v];
            cap[u][v] -= push;
            cap[v][u] += push;
            v = u;
        }
        flow += push;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tests::rule;
    use crate::{Candidate, choose};
    use sublet_crds::SpreadBy;

    fn site(node: &str, pool: &str, zone: &str, owner: &str) -> Site {
        Site {
            node_id: node.to_owned(),
            pool: pool.to_owned(),
            zone: zone.to_owned(),
            owner: owner.to_owned(),
        }
    }

    /// A home lab with two zones (two providers in the kitchen, one in the attic) and three
    /// rented providers each in its own zone.
    fn sites() -> Vec<Site> {
        vec![
            site("a", "home", "kitchen", "alice"),
            site("b", "home", "kitchen", "alice"),
            site("c", "home", "attic", "alice"),
            site("r1", "rented", "fsn1", "hetzner"),
            site("r2", "rented", "nbg1", "hetzner"),
            site("r3", "rented", "hel1", "hetzner"),
        ]
    }

    #[test]
    fn one_shard_per_provider_by_default() {
        assert_eq!(feasible(&PlacementRule::any(), &sites(), 6), Ok(()));
        assert_eq!(
            feasible(&PlacementRule::any(), &sites(), 7),
            Err(Shortfall::Width {
                width: 7,
                sites: 6,
                can_hold: 6
            })
        );
        assert_eq!(feasible(&PlacementRule::any(), &[], 0), Ok(()));
    }

    #[test]
    fn a_pool_minimum_its_domains_cannot_hold() {
        let r = rule(SpreadBy::Zone, 1, &[("home", 3, None), ("rented", 0, None)]);
        assert_eq!(
            feasible(&r, &sites(), 4),
            Err(Shortfall::PoolMinimum {
                pool: 0,
                min: 3,
                sites: 3,
                can_hold: 2
            })
        );
        let r = rule(
            SpreadBy::Zone,
            2,
            &[("home", 3, Some(2)), ("rented", 0, None)],
        );
        assert!(matches!(
            feasible(&r, &sites(), 4),
            Err(Shortfall::PoolMinimum { can_hold: 2, .. })
        ));
    }

    #[test]
    fn only_the_pools_the_rule_names_count() {
        let r = rule(SpreadBy::Node, 1, &[("rented", 0, None)]);
        assert_eq!(
            feasible(&r, &sites(), 4),
            Err(Shortfall::Width {
                width: 4,
                sites: 3,
                can_hold: 3
            })
        );
    }

    #[test]
    fn max_shards_and_domains_shared_across_pools() {
        // Both pools are alice's: two per owner caps the stripe at 2, whatever the pools hold.
        let mut s = sites();
        s.push(site("s1", "spare", "z", "alice"));
        let r = rule(SpreadBy::Owner, 2, &[("home", 0, None), ("spare", 0, None)]);
        assert!(matches!(
            feasible(&r, &s, 3),
            Err(Shortfall::Width { can_hold: 2, .. })
        ));
        let r = rule(
            SpreadBy::Node,
            1,
            &[("home", 0, None), ("rented", 0, Some(1))],
        );
        assert!(matches!(
            feasible(&r, &sites(), 5),
            Err(Shortfall::Width { can_hold: 4, .. })
        ));
    }

    #[test]
    fn counts_the_best_arrangement() {
        // Pool a may hold one shard, in zone z1 or z2; pool b's only provider is in z1. Two
        // shards fit (a in z2, b in z1) though a greedy pick that puts a's shard in z1 first
        // finds no room for the second.
        let s = [
            site("a1", "a", "z1", "o"),
            site("a2", "a", "z2", "o"),
            site("b1", "b", "z1", "o"),
        ];
        let r = rule(SpreadBy::Zone, 1, &[("a", 0, Some(1)), ("b", 0, None)]);
        assert_eq!(feasible(&r, &s, 2), Ok(()));
        assert!(feasible(&r, &s, 3).is_err());
    }

    /// Whatever `choose` places, `feasible` accepts: the operator never calls a plan
    /// unplaceable that the gateway places. Small random topologies and rules.
    #[test]
    fn accepts_whatever_choose_places() {
        let mut seed: u64 = 0x5eed;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from((seed >> 33) % n).unwrap()
        };
        let spreads = [
            SpreadBy::Node,
            SpreadBy::Zone,
            SpreadBy::Owner,
            SpreadBy::Pool,
        ];
        let mut placed = 0;
        for round in 0..2000 {
            let sites: Vec<Site> = (0..1 + next(9))
                .map(|i| {
                    site(
                        &format!("n{i}"),
                        &format!("p{}", next(3)),
                        &format!("z{}", next(4)),
                        &format!("o{}", next(3)),
                    )
                })
                .collect();
            let pools: Vec<(String, usize, Option<usize>)> = (0..next(4))
                .map(|p| {
                    let min = next(3);
                    let max = [None, Some(min.max(1)), Some(min + 1)][next(3)];
                    (format!("p{p}"), min, max)
                })
                .collect();
            let named: Vec<(&str, usize, Option<usize>)> = pools
                .iter()
                .map(|(n, min, max)| (n.as_str(), *min, *max))
                .collect();
            let r = rule(spreads[next(4)], 1 + next(2), &named);
            let width = next(8);
            let candidates: Vec<Candidate> = sites
                .iter()
                .map(|s| Candidate {
                    site: s.clone(),
                    free_bytes: None,
                    healthy: true,
                    quality: 1000,
                })
                .collect();
            for key in 0..4 {
                let uid = format!("{round}-{key}");
                if choose("x", &r, width, &candidates, 0, "k", &uid).is_ok() {
                    placed += 1;
                    assert_eq!(
                        feasible(&r, &sites, width),
                        Ok(()),
                        "{r:?} {sites:?} {width}"
                    );
                }
            }
        }
        assert!(placed > 1000, "{placed}");
    }
}
