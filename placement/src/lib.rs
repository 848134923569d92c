//! The placement rule of a StoragePlan, in one place for the gateway and the operator:
//! which providers may hold the shards of a stripe ([`choose`], [`choose_more`]), which
//! shards of a stored stripe break the rule as it stands now ([`PlacementRule::misplaced`]),
//! and whether a plan could be placed at all on some providers ([`feasible`]).
//!
//! Everything here is pure: the gateway feeds it [`Candidate`]s built from what it last saw
//! of each provider (its health board), the operator [`Site`]s built from the ready members
//! of the plan's ProviderPools.

use std::collections::HashMap;
use std::fmt;

use sublet_crds::{SpreadBy, StoragePlanSpec};

mod choose;
mod feasible;

pub use choose::{Candidate, MIN_QUALITY, Unplaceable, choose, choose_more};
pub use feasible::{Shortfall, feasible};

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

/// The word a rule's failure domain goes by in messages: `node`, `zone`, `owner`, `pool`.
pub fn domain_name(spread_by: SpreadBy) -> &'static str {
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
pub(crate) mod tests {
    use super::*;

    /// A rule spreading by `spread_by`, over `pools` as (name, minShards, maxShards).
    pub(crate) fn rule(
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
}
