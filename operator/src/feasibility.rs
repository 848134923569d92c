//! Whether a plan's placement can be met by the providers the pools have today. A plan that
//! cannot is still valid (pools grow); it reports `Feasible=False` naming the unmet rule.
//!
//! The gateway's own rule decides ([`sublet_placement::feasible`]); this file turns the
//! pools' ready members into sites and words the answer for the plan's status.

use std::collections::BTreeMap;

use kube::ResourceExt;
use sublet_crds::{ProviderPool, StoragePlanSpec};
use sublet_placement::{PlacementRule, Shortfall, Site, domain_name};

/// The ready members of `pool` where placement sees them: each its own node, in its zone
/// (its own when it names none), owned by the pool's owner (the pool's name without one).
fn ready_sites(pool: &ProviderPool) -> impl Iterator<Item = Site> + '_ {
    let name = pool.name_any();
    let owner = pool.spec.owner.clone().unwrap_or_else(|| name.clone());
    pool.status
        .iter()
        .flat_map(|s| &s.members)
        .filter(|m| m.ready)
        .map(move |m| {
            let node_id = format!("{name}/{}", m.name);
            Site {
                zone: if m.zone.is_empty() {
                    node_id.clone()
                } else {
                    m.zone.clone()
                },
                node_id,
                pool: name.clone(),
                owner: owner.clone(),
            }
        })
}

/// Checks `plan` against the ready members of `pools` (the namespace's pools). `Err` names
/// the first rule that cannot be met and what would fix it.
pub fn check(plan: &StoragePlanSpec, pools: &[ProviderPool]) -> Result<(), String> {
    let width = usize::try_from(plan.stripe_width()).unwrap_or(usize::MAX);
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
    let mut rule = PlacementRule::from_spec(plan);
    // The gateway reads maxPerDomain 0 as 1, but only a plan validation rejects has it:
    // judge that plan as written.
    rule.max_per_domain = usize::try_from(placement.max_per_domain).unwrap_or(usize::MAX);
    let sites: Vec<Site> = by_name.values().flat_map(|p| ready_sites(p)).collect();
    let per_domain = format!(
        "at most {} per {}",
        placement.max_per_domain,
        domain_name(placement.spread_by)
    );
    match sublet_placement::feasible(&rule, &sites, width) {
        Ok(()) => Ok(()),
        Err(Shortfall::PoolMinimum {
            pool,
            min,
            sites,
            can_hold,
        }) => Err(format!(
            "spec.placement.pools[{pool}].minShards: pool {} must hold {min} shards of every stripe \
             but its {sites} ready providers can hold {can_hold} ({per_domain}); add providers to the pool or lower minShards",
            rule.pools[pool].name
        )),
        Err(Shortfall::Width {
            width,
            sites,
            can_hold,
        }) => {
            // The pools the plan may use: the ones it names, else every pool of the namespace.
            let names: Vec<&str> = if placement.pools.is_empty() {
                by_name.keys().map(String::as_str).collect()
            } else {
                placement.pools.iter().map(|l| l.name.as_str()).collect()
            };
            Err(format!(
                "spec.redundancy: a stripe has {width} shards but the {sites} ready providers of pools {} can hold {can_hold} ({per_domain}); \
                 add providers, relax spec.placement or lower the redundancy",
                if names.is_empty() {
                    "(none)".to_owned()
                } else {
                    names.join(", ")
                }
            ))
        }
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
