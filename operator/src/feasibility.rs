//! Whether a plan's placement can be met by the providers the pools have today. A plan that
//! cannot is still valid (pools grow); it reports `Feasible=False` naming the unmet rule.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use kube::ResourceExt;
use sublet_crds::{ProviderPool, SpreadBy, StoragePlanSpec};

/// One ready provider and the failure domains it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Provider {
    pool: String,
    node: String,
    zone: String,
    owner: String,
}

fn ready_providers(pool: &ProviderPool) -> Vec<Provider> {
    let name = pool.name_any();
    let owner = pool.spec.owner.clone().unwrap_or_else(|| name.clone());
    pool.status
        .iter()
        .flat_map(|s| &s.members)
        .filter(|m| m.ready)
        .map(|m| Provider {
            pool: name.clone(),
            node: format!("{name}/{}", m.name),
            zone: if m.zone.is_empty() {
                format!("{name}/{}", m.name)
            } else {
                m.zone.clone()
            },
            owner: owner.clone(),
        })
        .collect()
}

fn domain(provider: &Provider, spread: SpreadBy) -> &str {
    match spread {
        SpreadBy::Node => &provider.node,
        SpreadBy::Zone => &provider.zone,
        SpreadBy::Owner => &provider.owner,
        SpreadBy::Pool => &provider.pool,
    }
}

fn spread_name(spread: SpreadBy) -> &'static str {
    match spread {
        SpreadBy::Node => "node",
        SpreadBy::Zone => "zone",
        SpreadBy::Owner => "owner",
        SpreadBy::Pool => "pool",
    }
}

/// Checks `plan` against the ready members of `pools` (the namespace's pools). `Err` names
/// the first rule that cannot be met and what would fix it.
pub fn check(plan: &StoragePlanSpec, pools: &[ProviderPool]) -> Result<(), String> {
    let width = u64::from(plan.stripe_width());
    if width == 0 {
        return Ok(());
    }
    let placement = &plan.placement;
    let by_name: BTreeMap<String, &ProviderPool> =
        pools.iter().map(|p| (p.name_any(), p)).collect();
    for (i, limit) in placement.pools.iter().enumerate() {
        if !by_name.contains_key(&limit.name) {
            return Err(format!(
                "spec.placement.pools[{i}].name: there is no ProviderPool \"{}\" in this namespace",
                limit.name
            ));
        }
    }
    // (pool, max shards) for every pool the plan may use.
    let usable: Vec<(String, Option<u32>)> = if placement.pools.is_empty() {
        by_name.keys().map(|n| (n.clone(), None)).collect()
    } else {
        placement
            .pools
            .iter()
            .map(|l| (l.name.clone(), l.max_shards))
            .collect()
    };
    let per_domain = u64::from(placement.max_per_domain);
    let spread = placement.spread_by;
    let rule = format!(
        "at most {} per {}",
        placement.max_per_domain,
        spread_name(spread)
    );

    // Providers per (pool, domain).
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (pool, _) in &usable {
        if let Some(p) = by_name.get(pool) {
            for provider in ready_providers(p) {
                *counts
                    .entry((pool.clone(), domain(&provider, spread).to_owned()))
                    .or_default() += 1;
            }
        }
    }
    let pool_capacity = |pool: &str| -> (u64, u64) {
        let providers: u64 = counts
            .iter()
            .filter(|((p, _), _)| p == pool)
            .map(|(_, n)| *n)
            .sum();
        let spread_cap: u64 = counts
            .iter()
            .filter(|((p, _), _)| p == pool)
            .map(|(_, n)| (*n).min(per_domain))
            .sum();
        (providers, spread_cap)
    };
    for (i, limit) in placement.pools.iter().enumerate() {
        let min = u64::from(limit.min_shards.unwrap_or(0));
        if min == 0 {
            continue;
        }
        let (providers, cap) = pool_capacity(&limit.name);
        let cap = limit.max_shards.map_or(cap, |m| cap.min(u64::from(m)));
        if cap < min {
            return Err(format!(
                "spec.placement.pools[{i}].minShards: pool {} must hold {min} shards of every stripe \
                 but its {providers} ready providers can hold {cap} ({rule}); add providers to the pool or lower minShards",
                limit.name
            ));
        }
    }
    let total = max_shards(&usable, &counts, per_domain);
    if total < width {
        let providers: u64 = counts.values().sum();
        let names: Vec<&str> = usable.iter().map(|(n, _)| n.as_str()).collect();
        return Err(format!(
            "spec.redundancy: a stripe has {width} shards but the {providers} ready providers of pools {} can hold {total} ({rule}); \
             add providers, relax spec.placement or lower the redundancy",
            if names.is_empty() {
                "(none)".to_owned()
            } else {
                names.join(", ")
            }
        ));
    }
    Ok(())
}

/// Most shards of one stripe the providers can hold: a max flow from pools (capped by
/// maxShards) through failure domains (capped by maxPerDomain), one shard per provider.
fn max_shards(
    usable: &[(String, Option<u32>)],
    counts: &BTreeMap<(String, String), u64>,
    per_domain: u64,
) -> u64 {
    let domains: BTreeSet<&String> = counts.keys().map(|(_, d)| d).collect();
    let domain_index: BTreeMap<&String, usize> = domains
        .iter()
        .enumerate()
        .map(|(i, d)| (*d, 2 + usable.len() + i))
        .collect();
    let n = 2 + usable.len() + domains.len();
    let (source, sink) = (0, 1);
    let mut cap = vec![vec![0u64; n]; n];
    for (i, (pool, max)) in usable.iter().enumerate() {
        cap[source][2 + i] = max.map_or(u64::MAX / 4, u64::from);
        for ((p, d), count) in counts {
            if p == pool
                && let Some(&j) = domain_index.get(d)
            {
                cap[2 + i][j] += count;
            }
        }
    }
    for &j in domain_index.values() {
        cap[j][sink] = per_domain;
    }
    let mut flow = 0;
    loop {
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
        let mut push = u64::MAX;
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
    use crate::testing::{plan, pool, pool_member};
    use sublet_crds::ProviderPoolStatus;

    fn pool_with(name: &str, owner: &str, members: &[(&str, &str, bool)]) -> ProviderPool {
        let mut p = pool(
            name,
            &format!("class: owned\nowner: {owner}\nendpoints: [{{name: x, address: \"x:1\"}}]"),
        );
        p.status = Some(ProviderPoolStatus {
            members: members
                .iter()
                .map(|(n, zone, ready)| pool_member(n, "", "", zone, *ready))
                .collect(),
            ..Default::default()
        });
        p
    }

    fn home() -> ProviderPool {
        pool_with(
            "home-lab",
            "alice",
            &[
                ("a", "kitchen", true),
                ("b", "kitchen", true),
                ("c", "attic", true),
                ("d", "attic", false),
            ],
        )
    }

    fn rented() -> ProviderPool {
        pool_with(
            "rented",
            "hetzner",
            &[
                ("r1", "fsn1", true),
                ("r2", "nbg1", true),
                ("r3", "hel1", true),
            ],
        )
    }

    fn check_plan(spec: &str, pools: &[ProviderPool]) -> Result<(), String> {
        check(&plan("p", spec).spec, pools)
    }

    #[test]
    fn enough_ready_providers_is_feasible() {
        assert_eq!(
            check_plan(
                "redundancy: {erasure: {dataShards: 4, parityShards: 2}}",
                &[home(), rented()]
            ),
            Ok(())
        );
        assert_eq!(
            check_plan(
                "redundancy: {erasure: {dataShards: 2, parityShards: 1}}\nplacement: {pools: [{name: home-lab, minShards: 2}, {name: rented, maxShards: 1}]}",
                &[home(), rented()]
            ),
            Ok(())
        );
    }

    #[test]
    fn not_ready_members_do_not_count() {
        let err = check_plan(
            "redundancy: {erasure: {dataShards: 3, parityShards: 1}}\nplacement: {pools: [{name: home-lab}]}",
            &[home(), rented()],
        )
        .unwrap_err();
        assert_eq!(
            err,
            "spec.redundancy: a stripe has 4 shards but the 3 ready providers of pools home-lab can hold 3 (at most 1 per node); add providers, relax spec.placement or lower the redundancy"
        );
    }

    #[test]
    fn min_shards_names_the_pool() {
        let err = check_plan(
            "redundancy: {erasure: {dataShards: 4, parityShards: 2}}\nplacement: {spreadBy: zone, pools: [{name: home-lab, minShards: 4}, {name: rented}]}",
            &[home(), rented()],
        )
        .unwrap_err();
        assert_eq!(
            err,
            "spec.placement.pools[0].minShards: pool home-lab must hold 4 shards of every stripe but its 3 ready providers can hold 2 (at most 1 per zone); add providers to the pool or lower minShards"
        );
    }

    #[test]
    fn domains_shared_across_pools_are_counted_once() {
        // Both pools belong to alice: spread by owner with 2 per owner caps the stripe at 2.
        let other = pool_with("spare", "alice", &[("s1", "z", true), ("s2", "z", true)]);
        let err = check_plan(
            "redundancy: {replicas: 3}\nplacement: {spreadBy: owner, maxPerDomain: 2, pools: [{name: home-lab}, {name: spare}]}",
            &[home(), other],
        )
        .unwrap_err();
        assert!(err.starts_with("spec.redundancy: a stripe has 3 shards but the 5 ready providers of pools home-lab, spare can hold 2 (at most 2 per owner)"), "{err}");
    }

    #[test]
    fn max_shards_caps_a_pool() {
        let err = check_plan(
            "redundancy: {erasure: {dataShards: 4, parityShards: 1}}\nplacement: {pools: [{name: home-lab}, {name: rented, maxShards: 1}]}",
            &[home(), rented()],
        )
        .unwrap_err();
        assert!(err.contains("can hold 4 (at most 1 per node)"), "{err}");
    }

    #[test]
    fn missing_pool_is_named() {
        assert_eq!(
            check_plan("redundancy: {replicas: 1}\nplacement: {pools: [{name: cloud}]}", &[home()]),
            Err("spec.placement.pools[0].name: there is no ProviderPool \"cloud\" in this namespace".into())
        );
    }
}
