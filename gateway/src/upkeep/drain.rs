//! Draining: moving every shard off the pools marked `drain: true`, and what is left.
//!
//! A draining pool gets no new shards (its providers are not placement candidates), and
//! each of its shards counts as misplaced (`node::rules::misplaced_shards`). The drain pass
//! walks the shard index of the pool's providers and moves each version's shards the way a
//! repair does ([`Repairer::relocate`]): rebuilt from the stripe, written and hash-checked on
//! providers the plan allows, switched in by compare-and-swap, the old shards retired (kept
//! for reads in flight, then freed). Nothing is forgotten before its replacement is stored.
//!
//! A plan whose placement rule cannot be met without the draining pools (it needs more
//! failure domains than the other pools have, or a `minShards` in the draining pool) blocks
//! the drain of its shards; the status names the plan and the rule.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sublet_placement::{Shortfall, domain_name};

use crate::datapath::placement::{Site, Topology};
use crate::metrics::Metrics;
use crate::node::Node;
use crate::upkeep::repair::Repairer;

/// How often the background loop moves shards off draining pools.
pub const DRAIN_INTERVAL: Duration = Duration::from_secs(30);
/// How long after the gateway starts the first pass runs: a gateway started with a pool
/// marked `drain: true` (on Kubernetes, marking it rolls the gateway) starts moving shards
/// once its providers were probed, not a whole [`DRAIN_INTERVAL`] later.
pub const FIRST_PASS_AFTER: Duration = Duration::from_secs(5);
/// Versions one pass moves off each draining pool (each at the plan's repair bandwidth).
pub const DRAIN_PER_PASS: usize = 64;
/// Versions read from the shard index at a time.
const BATCH: usize = 256;

/// Where a draining pool stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DrainState {
    /// Shards are being moved off.
    Draining,
    /// No shard of this gateway is left on the pool: its providers may go.
    Drained,
    /// Some shards cannot move: a plan's placement rule needs the pool (see `blocked`).
    Blocked,
}

/// A draining pool's progress, as `GET /admin/v1/pools/{pool}` reports it under `drain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainStatus {
    pub state: DrainState,
    /// Why shards cannot move, one line per plan (empty unless `Blocked`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<String>,
    /// Shards left on the pool by plan.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plans: BTreeMap<String, u64>,
}

/// What one drain pass of one pool did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainReport {
    pub pool: String,
    /// Versions with shards on the pool looked at.
    pub examined: u64,
    /// Versions whose shards on the pool were moved.
    pub moved_versions: u64,
    /// Shards written elsewhere in their place.
    pub moved_shards: u64,
    /// Versions left where they are because their plan blocks the drain.
    pub blocked: u64,
    /// Versions that could not move now (unreadable, no room, writes failed); tried again
    /// next pass.
    pub failed: u64,
}

/// Why `plan` (with `rule` from `topology`) cannot place a stripe of `width` shards without
/// the draining pools, worded for the pool's status; `None` when it can.
pub fn blocked_reason(topology: &Topology, plan: &str, width: usize) -> Option<String> {
    let rule = topology.rule(plan);
    let sites: Vec<Site> = topology.placeable_sites().cloned().collect();
    let per_domain = format!(
        "at most {} per {}",
        rule.max_per_domain,
        domain_name(rule.spread_by)
    );
    match sublet_placement::feasible(&rule, &sites, width).err()? {
        Shortfall::PoolMinimum {
            pool,
            min,
            sites,
            can_hold,
        } => {
            let name = rule.pools.get(pool).map_or("?", |p| p.name.as_str());
            let draining = if topology.draining.contains(name) {
                ", and it is draining,"
            } else {
                ","
            };
            Some(format!(
                "plan {plan} needs {min} shards of every stripe in pool {name}{draining} but its \
                 {sites} placeable providers can hold {can_hold} ({per_domain}); lower the \
                 plan's minShards for pool {name} or drop the pool from its placement"
            ))
        }
        Shortfall::Width {
            width,
            sites,
            can_hold,
        } => Some(format!(
            "plan {plan} places {width} shards per stripe, but the {sites} providers of the \
             pools it allows outside draining pools can hold {can_hold} ({per_domain}); add \
             providers to another pool the plan allows, or lower its redundancy"
        )),
    }
}

/// The drain status of `pool` holding `shards` shards, or `None` when it is not draining.
pub fn drain_status(node: &Node, pool: &str, shards: u64) -> anyhow::Result<Option<DrainStatus>> {
    let topology = node.topology();
    if !topology.draining.contains(pool) {
        return Ok(None);
    }
    let mut plans: BTreeMap<String, u64> = BTreeMap::new();
    for site in topology.sites.iter().filter(|s| s.pool == pool) {
        for (plan, (n, _)) in node.metadata().provider_plans(&site.node_id)? {
            *plans.entry(plan).or_default() += n;
        }
    }
    let blocked: Vec<String> = plans
        .iter()
        .filter(|(_, n)| **n > 0)
        .filter_map(|(plan, _)| {
            let width = node.plan(plan)?.scheme.width();
            blocked_reason(&topology, plan, width)
        })
        .collect();
    let state = if shards == 0 {
        DrainState::Drained
    } else if blocked.is_empty() {
        DrainState::Draining
    } else {
        DrainState::Blocked
    };
    Ok(Some(DrainStatus {
        state,
        blocked,
        plans,
    }))
}

/// Moves the shards of up to `limit` versions off draining pool `pool`, one version at a
/// time at its plan's repair bandwidth. Versions of plans that block the drain are skipped.
pub async fn drain_pass(
    repairer: &Repairer,
    pool: &str,
    limit: usize,
) -> anyhow::Result<DrainReport> {
    let node = Arc::clone(repairer.node());
    let topology = node.topology();
    if !topology.draining.contains(pool) {
        anyhow::bail!("pool {pool} is not draining; set drain: true on it first");
    }
    let mut report = DrainReport {
        pool: pool.to_owned(),
        ..DrainReport::default()
    };
    let mut verdicts: BTreeMap<String, bool> = BTreeMap::new();
    let providers: Vec<String> = topology
        .sites
        .iter()
        .filter(|s| s.pool == pool)
        .map(|s| s.node_id.clone())
        .collect();
    'providers: for provider in providers {
        let mut after = 0;
        loop {
            let meta = Arc::clone(node.metadata());
            let on = provider.clone();
            let batch =
                tokio::task::spawn_blocking(move || meta.versions_on(&on, after, BATCH)).await??;
            let Some(&(last, _)) = batch.last() else {
                break;
            };
            after = last;
            for (seq, plan) in batch {
                if report.examined >= limit as u64 {
                    break 'providers;
                }
                report.examined += 1;
                let blocked = *verdicts.entry(plan.clone()).or_insert_with(|| {
                    node.plan(&plan).is_some_and(|p| {
                        blocked_reason(&topology, &plan, p.scheme.width()).is_some()
                    })
                });
                if blocked {
                    report.blocked += 1;
                    continue;
                }
                match repairer.relocate(&plan, seq).await {
                    Ok(0) => {}
                    Ok(n) => {
                        report.moved_versions += 1;
                        report.moved_shards += n;
                    }
                    Err(e) => {
                        report.failed += 1;
                        tracing::warn!(pool, plan, seq, error = %format!("{e:#}"), "moving shards off a draining pool failed; tried again next pass");
                    }
                }
            }
        }
    }
    Ok(report)
}

/// Runs a drain pass of every draining pool every `every` until `stop` changes.
pub fn spawn_loop(
    gateway: Arc<Node>,
    metrics: Option<Metrics>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let repairer = Repairer::new(gateway, metrics);
    tokio::spawn(async move {
        let mut wait = FIRST_PASS_AFTER.min(every);
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            wait = every;
            let pools = repairer.node().topology().draining.clone();
            for pool in pools {
                match drain_pass(&repairer, &pool, DRAIN_PER_PASS).await {
                    Ok(r) if r.examined > 0 => tracing::info!(
                        pool,
                        moved = r.moved_versions,
                        shards = r.moved_shards,
                        blocked = r.blocked,
                        failed = r.failed,
                        "drain pass done"
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(pool, error = %format!("{e:#}"), "drain pass failed");
                    }
                }
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::datapath::placement::{PlacementRule, PoolRule};

    /// `n` providers of `pool`, zones `{pool}-z{i}`.
    fn sites(pool: &str, n: usize) -> Vec<Site> {
        (0..n)
            .map(|i| Site {
                node_id: format!("{pool}-{i}"),
                pool: pool.into(),
                zone: format!("{pool}-z{i}"),
                owner: pool.into(),
            })
            .collect()
    }

    fn topology(rule: PlacementRule, draining: &[&str]) -> Topology {
        Topology {
            sites: [sites("home", 4), sites("friends", 3)].concat(),
            rules: HashMap::from([("photos".to_owned(), rule)]),
            draining: draining.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn a_drain_the_other_pools_can_take_is_not_blocked() {
        let t = topology(PlacementRule::any(), &["friends"]);
        assert_eq!(blocked_reason(&t, "photos", 4), None);
    }

    #[test]
    fn a_plan_wider_than_what_is_left_blocks_the_drain_and_says_why() {
        let t = topology(PlacementRule::any(), &["friends"]);
        assert_eq!(
            blocked_reason(&t, "photos", 6).unwrap(),
            "plan photos places 6 shards per stripe, but the 4 providers of the pools it \
             allows outside draining pools can hold 4 (at most 1 per node); add providers to \
             another pool the plan allows, or lower its redundancy"
        );
        // With the other pool back, the same plan fits.
        assert_eq!(
            blocked_reason(&topology(PlacementRule::any(), &[]), "photos", 6),
            None
        );
    }

    #[test]
    fn a_plan_that_needs_shards_in_the_draining_pool_blocks_it() {
        let rule = PlacementRule {
            pools: vec![
                PoolRule {
                    name: "home".into(),
                    min_shards: 0,
                    max_shards: None,
                },
                PoolRule {
                    name: "friends".into(),
                    min_shards: 2,
                    max_shards: None,
                },
            ],
            ..PlacementRule::any()
        };
        assert_eq!(
            blocked_reason(&topology(rule.clone(), &[]), "photos", 5),
            None
        );
        assert_eq!(
            blocked_reason(&topology(rule, &["friends"]), "photos", 5).unwrap(),
            "plan photos needs 2 shards of every stripe in pool friends, and it is draining, \
             but its 0 placeable providers can hold 0 (at most 1 per node); lower the plan's \
             minShards for pool friends or drop the pool from its placement"
        );
    }
}
