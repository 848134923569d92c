//! The rules a [`super::PolicySet`] carries besides plans and placement: how providers are
//! audited and the lifecycle rules of each plan's StorageSchedule.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Node, Plan};
use crate::datapath::layout::{Encryption, Layout};
#[cfg(doc)]
use crate::datapath::placement::PlacementRule;
use crate::datapath::placement::Topology;
use crate::error::{Error, Result};
use crate::meta::{ObjectVersion, ShardPos};

/// How often and how hard providers are audited: the tightest of the plans' schedules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditPolicy {
    pub interval: Duration,
    pub samples_per_provider: usize,
}

impl Default for AuditPolicy {
    fn default() -> Self {
        let audit = sublet_crds::Audit::default();
        AuditPolicy {
            interval: audit.interval.as_std(),
            samples_per_provider: usize::try_from(audit.samples_per_provider).unwrap_or(64),
        }
    }
}

impl AuditPolicy {
    /// The shortest interval and the most samples among `audits`; the defaults when none.
    pub fn tightest<'a>(audits: impl IntoIterator<Item = &'a sublet_crds::Audit>) -> Self {
        let mut out: Option<AuditPolicy> = None;
        for a in audits {
            let interval = a.interval.as_std().max(Duration::from_secs(1));
            let samples = usize::try_from(a.samples_per_provider).unwrap_or(64);
            out = Some(match out {
                None => AuditPolicy {
                    interval,
                    samples_per_provider: samples,
                },
                Some(o) => AuditPolicy {
                    interval: o.interval.min(interval),
                    samples_per_provider: o.samples_per_provider.max(samples),
                },
            });
        }
        out.unwrap_or_default()
    }
}

/// One lifecycle rule as the engine applies it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub id: String,
    pub enabled: bool,
    /// Keys starting with this; every key when empty.
    #[serde(default)]
    pub prefix: String,
    /// Versions carrying every one of these tags (key and value); any when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Versions larger than this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_greater_than: Option<u64>,
    /// Versions smaller than this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_less_than: Option<u64>,
    /// Current versions older than this many days expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_days: Option<u32>,
    /// A delete marker that is all that is left of a key is removed.
    #[serde(default)]
    pub expired_object_delete_marker: bool,
    /// Versions noncurrent for this many days are deleted for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noncurrent_days: Option<u32>,
    /// Multipart uploads started this many days ago are aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_incomplete_days: Option<u32>,
    /// Current versions older than `.0` days move to plan `.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<(u32, String)>,
}

impl Rule {
    /// Whether the rule's filter selects `v` (prefix, tags and size bounds all hold).
    pub fn selects(&self, v: &ObjectVersion) -> bool {
        self.selects_key(&v.key)
            && self
                .tags
                .iter()
                .all(|(k, value)| v.attrs.tags.get(k) == Some(value))
            && self.size_greater_than.is_none_or(|min| v.size > min)
            && self.size_less_than.is_none_or(|max| v.size < max)
    }

    /// Whether the rule's filter selects a key by its prefix alone.
    pub fn selects_key(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
    }

    /// Whether the rule filters on more than the key (tags or size), which multipart
    /// uploads in progress do not have.
    pub fn filters_objects(&self) -> bool {
        !self.tags.is_empty() || self.size_greater_than.is_some() || self.size_less_than.is_some()
    }

    /// A StorageSchedule's rule, for the objects of the plans naming the schedule.
    pub fn from_schedule(rule: &sublet_crds::LifecycleRule) -> Self {
        let days = rule.after_days;
        let filter = rule.filter.clone().unwrap_or_default();
        Rule {
            id: rule.name.clone(),
            enabled: true,
            prefix: filter.prefix.unwrap_or_default(),
            tags: filter.tags,
            size_greater_than: filter.object_size_greater_than.map(|b| b.bytes()),
            size_less_than: filter.object_size_less_than.map(|b| b.bytes()),
            expiration_days: days.filter(|_| rule.expire == Some(true)),
            expired_object_delete_marker: false,
            noncurrent_days: None,
            abort_incomplete_days: rule.abort_incomplete_multipart_after_days,
            transition: days.zip(rule.transition_to.clone()),
        }
    }
}

/// Rules of the schedule of each plan: (plan name, rules).
pub type PlanRules = Vec<(String, Vec<Rule>)>;

impl Node {
    /// A bucket's stored rules; `None` without a configuration.
    pub async fn bucket_rules(&self, bucket: &str) -> Result<Option<Vec<Rule>>> {
        let b = bucket.to_string();
        let Some(json) = self.meta(move |m| m.lifecycle(&b)).await? else {
            return Ok(None);
        };
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| Error::internal(format!("bucket {bucket}: stored lifecycle rules: {e}")))
    }
}

/// Whether `layout` was written with `plan`'s current redundancy and encryption.
pub fn conforms(layout: &Layout, plan: &Plan) -> bool {
    if layout.inline.is_some() {
        // Kept in metadata: only its size and sealing matter (a plan that no longer
        // inlines objects this large moves them onto providers).
        return layout.plain_length() <= plan.inline_up_to
            && matches!(layout.encryption, Encryption::Aes256Gcm { .. }) == plan.encrypt;
    }
    layout.pieces().all(|piece| {
        piece.scheme == plan.scheme
            && matches!(piece.encryption, Encryption::Aes256Gcm { .. }) == plan.encrypt
    })
}

/// Shards of `layout` that must move, by position and id: those that break `plan`'s
/// placement rule as it stands now (see [`PlacementRule::misplaced`]), and every shard on a
/// provider of a draining pool (which the rule is then judged without). Shards on a
/// draining pool stay where they are when the rule cannot place a stripe without the
/// draining pools (the drain is blocked for this plan): moving them would fail, and with
/// them the repair of the stripe's lost shards.
pub fn misplaced_shards(
    layout: &Layout,
    topology: &Topology,
    plan: &str,
) -> Vec<(ShardPos, String)> {
    let rule = topology.rule(plan);
    let placeable: Vec<_> = if topology.draining.is_empty() {
        Vec::new()
    } else {
        topology.placeable_sites().cloned().collect()
    };
    let mut out = Vec::new();
    for (p, piece) in layout.pieces().enumerate() {
        let drain = !topology.draining.is_empty()
            && sublet_placement::feasible(&rule, &placeable, piece.scheme.width()).is_ok();
        for (g, segment) in piece.segments.iter().enumerate() {
            let mut draining = Vec::new();
            let providers: Vec<Option<&str>> = segment
                .shards
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    if s.is_missing() {
                        None
                    } else if drain && topology.is_draining(&s.provider) {
                        draining.push(i);
                        None
                    } else {
                        Some(s.provider.as_str())
                    }
                })
                .collect();
            let mut wrong = rule.misplaced(&topology.sites, &providers);
            wrong.extend(draining);
            wrong.sort_unstable();
            for i in wrong {
                out.push(((p, g, i), segment.shards[i].shard_id.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::datapath::layout::{Scheme, Segment, ShardLocation};
    use crate::datapath::placement::{PlacementRule, Site};

    fn layout(providers: &[&str]) -> Layout {
        Layout {
            scheme: Scheme::Erasure { data: 2, parity: 2 },
            encryption: Encryption::None,
            segment_size: 1 << 16,
            segments: vec![Segment {
                plain_length: 10,
                sealed_length: 10,
                shards: providers
                    .iter()
                    .enumerate()
                    .map(|(i, p)| ShardLocation {
                        provider: (*p).into(),
                        shard_id: format!("s{i}"),
                        hash: String::new(),
                        length: 5,
                    })
                    .collect(),
            }],
            inline: None,
            parts: Vec::new(),
        }
    }

    fn topology(draining: &[&str]) -> Topology {
        let site = |node: &str, pool: &str, zone: &str| Site {
            node_id: node.into(),
            pool: pool.into(),
            zone: zone.into(),
            owner: "me".into(),
        };
        Topology {
            sites: vec![
                site("a", "home", "z1"),
                site("b", "home", "z2"),
                site("c", "friends", "z1"),
                site("d", "friends", "z3"),
                site("e", "home", "z4"),
                site("f", "home", "z5"),
            ],
            rules: HashMap::from([(
                "photos".to_owned(),
                PlacementRule {
                    spread_by: sublet_crds::SpreadBy::Zone,
                    ..PlacementRule::any()
                },
            )]),
            draining: draining.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn every_shard_on_a_draining_pool_must_move() {
        // c shares zone z1 with a: misplaced by the rule alone.
        let stripe = layout(&["a", "b", "c", "d"]);
        let ids = |t: &Topology| -> Vec<String> {
            misplaced_shards(&stripe, t, "photos")
                .into_iter()
                .map(|(_, id)| id)
                .collect()
        };
        assert_eq!(ids(&topology(&[])), ["s2"]);
        assert_eq!(ids(&topology(&["friends"])), ["s2", "s3"]);
        // Without "home" the stripe of 4 has 2 zones left: the drain is blocked for this
        // plan, and its shards are judged by the rule alone (so a repair can still go on).
        assert_eq!(ids(&topology(&["home"])), ["s2"]);
        // A missing shard is repair's business, not a move.
        assert!(
            misplaced_shards(&layout(&["", "b"]), &topology(&["friends"]), "photos").is_empty()
        );
    }

    fn object(key: &str, size: u64, tags: &[(&str, &str)]) -> ObjectVersion {
        ObjectVersion {
            bucket: "b".into(),
            key: key.into(),
            version_id: "v".into(),
            delete_marker: false,
            size,
            etag: String::new(),
            content_type: None,
            user_metadata: BTreeMap::new(),
            last_modified: 0,
            plan: "standard".into(),
            layout: None,
            attrs: crate::meta::ObjectAttrs {
                tags: tags
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_filter_selects_versions_meeting_every_condition() {
        let rule = Rule {
            prefix: "logs/".into(),
            tags: BTreeMap::from([("class".into(), "temp".into()), ("team".into(), "a".into())]),
            size_greater_than: Some(100),
            size_less_than: Some(1000),
            ..Rule::default()
        };
        let both = [("class", "temp"), ("team", "a")];
        assert!(rule.selects(&object("logs/x", 500, &both)));
        assert!(rule.selects(&object(
            "logs/x",
            500,
            &[("class", "temp"), ("team", "a"), ("more", "")]
        )));
        assert!(!rule.selects(&object("other/x", 500, &both)), "prefix");
        assert!(
            !rule.selects(&object("logs/x", 500, &[("class", "temp")])),
            "a tag missing"
        );
        assert!(
            !rule.selects(&object("logs/x", 500, &[("class", "keep"), ("team", "a")])),
            "a tag's value differs"
        );
        // The bounds are exclusive, as in S3.
        assert!(!rule.selects(&object("logs/x", 100, &both)));
        assert!(rule.selects(&object("logs/x", 101, &both)));
        assert!(rule.selects(&object("logs/x", 999, &both)));
        assert!(!rule.selects(&object("logs/x", 1000, &both)));
        assert!(rule.filters_objects());
        assert!(Rule::default().selects(&object("any", 0, &[])));
        assert!(!Rule::default().filters_objects());
    }

    #[test]
    fn schedule_filters_carry_tags_and_sizes() {
        let rule: sublet_crds::LifecycleRule = serde_yaml::from_str(
            "{name: r, afterDays: 3, expire: true, filter: {prefix: a/, tags: {class: temp}, \
             objectSizeGreaterThan: 1Ki, objectSizeLessThan: 1Mi}}",
        )
        .unwrap();
        let r = Rule::from_schedule(&rule);
        assert_eq!(r.prefix, "a/");
        assert_eq!(r.tags["class"], "temp");
        assert_eq!(
            (r.size_greater_than, r.size_less_than),
            (Some(1024), Some(1 << 20))
        );
    }
}
