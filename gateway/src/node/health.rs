//! Object health per plan: healthy-shard counts from the shard index, classified against the
//! plan's schedule (`minHealthyShards`, `gracePeriod`) into what the admin API, the metrics
//! and the repair loop report and act on.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sublet_crds::{Rebuild, RebuildWindow, ShardCounts};

use crate::meta::{HealthGroup, MetadataStore, Result};

/// A plan's rebuild rules, from its StorageSchedule (or the defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildPolicy {
    /// Objects with fewer healthy shards are queued; the stripe width when `None`.
    pub min_healthy_shards: Option<u64>,
    /// How long a provider may be gone before its shards count as lost.
    pub grace_period: Duration,
    /// Objects repaired at once.
    pub max_concurrent: usize,
    /// Bytes per second a repair pass may read plus write; unlimited when `None`.
    pub bandwidth_limit: Option<u64>,
    /// Daily hours repairs run in (local time); objects at risk ignore it.
    pub window: Option<RebuildWindow>,
}

impl Default for RebuildPolicy {
    fn default() -> Self {
        Self::from_schedule(&Rebuild::default())
    }
}

impl RebuildPolicy {
    /// The policy a StorageSchedule's `rebuild` section spells out.
    pub fn from_schedule(rebuild: &Rebuild) -> Self {
        RebuildPolicy {
            min_healthy_shards: rebuild.min_healthy_shards.map(u64::from),
            grace_period: rebuild.grace_period.as_std(),
            max_concurrent: usize::try_from(rebuild.max_concurrent_jobs.max(1)).unwrap_or(1),
            bandwidth_limit: rebuild.bandwidth_limit.as_ref().map(|b| b.bytes()),
            window: rebuild.window.clone(),
        }
    }

    /// The queue threshold for a stripe of `width` shards.
    pub fn min_healthy(&self, width: u64) -> u64 {
        self.min_healthy_shards.map_or(width, |m| m.min(width))
    }

    fn grace_ms(&self) -> i64 {
        i64::try_from(self.grace_period.as_millis()).unwrap_or(i64::MAX)
    }

    /// Whether repairs that are not urgent may run at local minute of day `minute`.
    pub fn in_window(&self, minute: u32) -> bool {
        let Some(w) = &self.window else { return true };
        let parse = |t: &str| -> Option<u32> {
            let (h, m) = t.split_once(':')?;
            Some(h.parse::<u32>().ok()? * 60 + m.parse::<u32>().ok()?)
        };
        let (Some(start), Some(end)) = (parse(&w.start), parse(&w.end)) else {
            return true;
        };
        if start <= end {
            (start..end).contains(&minute)
        } else {
            minute >= start || minute < end
        }
    }
}

pub use crate::clock::now_ms;

/// The cut and grace the store's health queries take: providers down and unseen since
/// before the cut have lost their shards.
pub fn lost_cut(policy: &RebuildPolicy, now: i64) -> (i64, i64) {
    let grace = policy.grace_ms();
    (now.saturating_sub(grace), grace)
}

/// Objects by health class: all shards healthy, some missing, exactly dataShards left
/// (one more loss and they are gone), fewer than dataShards left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthClasses {
    pub healthy: u64,
    pub degraded: u64,
    pub at_risk: u64,
    pub lost: u64,
}

/// A plan's repair queue in objects (the operator's contract, see operator/src/admin.rs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairQueue {
    /// Below minHealthyShards with shards lost past the grace period, still repairable.
    pub due: u64,
    /// Of `due`, those left with exactly dataShards healthy shards.
    pub at_risk: u64,
    /// Below minHealthyShards only because providers are down inside the grace period.
    pub waiting: u64,
}

/// `GET /admin/v1/plans/{plan}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanHealth {
    pub plan: String,
    /// Stored versions (not delete markers), inline ones included.
    pub objects: u64,
    pub logical_bytes: u64,
    /// Bytes of present shards on providers.
    pub stored_bytes: u64,
    pub shards: ShardCounts,
    pub repair: RepairQueue,
    /// Objects by health class.
    pub objects_by_health: HealthClasses,
    /// Age of the oldest loss among due objects, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_queued_seconds: Option<u64>,
}

/// Classifies `groups` (from [`MetadataStore::plan_health`]) under `policy`. `objects` and
/// `logical_bytes` count every stored version of the plan; versions without shards (inline)
/// are healthy.
pub fn classify(
    plan: &str,
    objects: u64,
    logical_bytes: u64,
    groups: &[HealthGroup],
    policy: &RebuildPolicy,
    now: i64,
) -> PlanHealth {
    let mut out = PlanHealth {
        plan: plan.to_owned(),
        objects,
        logical_bytes,
        ..PlanHealth::default()
    };
    let mut with_shards = 0;
    let mut oldest: Option<i64> = None;
    for g in groups {
        with_shards += g.objects;
        out.stored_bytes += g.stored_bytes;
        let min = policy.min_healthy(g.width);
        let class = &mut out.objects_by_health;
        if g.healthy >= g.width {
            class.healthy += g.objects;
        } else if g.healthy > g.needed {
            class.degraded += g.objects;
        } else if g.healthy == g.needed {
            class.at_risk += g.objects;
        } else {
            class.lost += g.objects;
        }
        let missing = (g.segments * g.width).saturating_sub(g.healthy_shards);
        out.shards.healthy += g.healthy_shards;
        if g.healthy < g.needed {
            out.shards.lost += missing;
        } else if g.healthy < min {
            out.shards.at_risk += missing;
        } else {
            out.shards.degraded += missing;
        }
        if g.healthy < g.needed {
            continue;
        }
        if g.healthy < min {
            out.repair.due += g.objects;
            if g.healthy == g.needed {
                out.repair.at_risk += g.objects;
            }
            if let Some(since) = g.lost_since {
                oldest = Some(oldest.map_or(since, |o| o.min(since)));
            }
        } else if g.reachable < min {
            out.repair.waiting += g.objects;
        }
    }
    out.objects_by_health.healthy += objects.saturating_sub(with_shards);
    out.oldest_queued_seconds =
        oldest.map(|since| u64::try_from((now - since) / 1000).unwrap_or(0));
    out
}

/// The health of `plan` now, read from `meta`.
pub fn plan_health(
    meta: &dyn MetadataStore,
    plan: &str,
    policy: &RebuildPolicy,
) -> Result<PlanHealth> {
    let now = now_ms();
    let (cut, grace) = lost_cut(policy, now);
    let groups = meta.plan_health(plan, cut, grace)?;
    let usage = meta
        .plan_usage()?
        .into_iter()
        .find(|u| u.plan == plan)
        .unwrap_or(crate::meta::PlanUsage {
            plan: plan.to_owned(),
            objects: 0,
            bytes: 0,
        });
    Ok(classify(
        plan,
        usage.objects,
        usage.bytes,
        &groups,
        policy,
        now,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn group(healthy: u64, reachable: u64, objects: u64) -> HealthGroup {
        HealthGroup {
            width: 6,
            needed: 4,
            healthy,
            reachable,
            objects,
            healthy_shards: healthy * objects,
            segments: objects,
            stored_bytes: healthy * objects * 10,
            lost_since: (healthy < 6).then_some(1_000),
        }
    }

    fn policy(min: Option<u64>) -> RebuildPolicy {
        RebuildPolicy {
            min_healthy_shards: min,
            ..RebuildPolicy::default()
        }
    }

    #[test]
    fn objects_are_classed_and_queued_by_healthy_shards() {
        let groups = [
            group(6, 6, 10),
            group(6, 4, 2),
            group(5, 5, 3),
            group(4, 4, 1),
            group(3, 3, 1),
        ];
        let h = classify("p", 20, 100, &groups, &policy(None), 11_000);
        assert_eq!(
            h.objects_by_health,
            HealthClasses {
                healthy: 12 + 3,
                degraded: 3,
                at_risk: 1,
                lost: 1
            },
            "3 inline objects are healthy"
        );
        assert_eq!(
            h.repair,
            RepairQueue {
                due: 4,
                at_risk: 1,
                waiting: 2
            }
        );
        assert_eq!(h.shards.healthy, 60 + 12 + 15 + 4 + 3);
        assert_eq!(h.shards.at_risk, 3 + 2);
        assert_eq!(h.shards.lost, 3);
        assert_eq!(h.oldest_queued_seconds, Some(10));
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["repair"]["atRisk"], 1);
        assert_eq!(json["logicalBytes"], 100);
    }

    #[test]
    fn min_healthy_shards_below_width_leaves_degraded_objects_alone() {
        let h = classify("p", 3, 0, &[group(5, 5, 3)], &policy(Some(5)), 0);
        assert_eq!(h.repair, RepairQueue::default());
        assert_eq!(h.shards.degraded, 3);
        assert_eq!(h.objects_by_health.degraded, 3);
        assert_eq!(h.oldest_queued_seconds, None);
    }

    #[test]
    fn windows_wrap_past_midnight() {
        let mut p = policy(None);
        assert!(p.in_window(0));
        p.window = Some(RebuildWindow {
            start: "22:00".into(),
            end: "06:00".into(),
        });
        assert!(p.in_window(23 * 60));
        assert!(p.in_window(60));
        assert!(!p.in_window(12 * 60));
    }
}
