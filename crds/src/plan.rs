//! `StoragePlan`: how objects are made redundant and where their shards may go.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::size::ByteSize;
use crate::validate::{Problems, ValidationError};

/// Most shards a stripe may have (the erasure code works over GF(2^8)).
pub const MAX_STRIPE_WIDTH: u32 = 256;
/// Smallest allowed `segmentSize`.
pub const MIN_SEGMENT_SIZE: u64 = 64 << 10;
/// Largest allowed `segmentSize`.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// A storage class: redundancy, placement and encryption for the objects written with it.
/// S3 clients select a plan by name with `x-amz-storage-class`.
// Each printcolumn repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "sublet.dev",
    version = "v1alpha1",
    kind = "StoragePlan",
    doc = "A storage class: redundancy, placement and encryption of objects.",
    namespaced,
    status = "StoragePlanStatus",
    shortname = "sp",
    derive = "PartialEq",
    printcolumn(
        name = "Redundancy",
        type_ = "string",
        json_path = ".status.redundancy"
    ),
    printcolumn(name = "Pools", type_ = "string", json_path = ".status.pools"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Healthy",
        type_ = "string",
        description = "share of shards that are healthy",
        json_path = ".status.healthyPercent"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StoragePlanSpec {
    /// Erasure coding (`erasure: {dataShards: 4, parityShards: 2}`) or whole copies
    /// (`replicas: 3`); exactly one.
    pub redundancy: Redundancy,
    /// Objects are cut into segments of this size, each coded into one stripe. Between 64Ki
    /// and 1Gi; default 16Mi.
    #[serde(default = "default_segment_size")]
    pub segment_size: ByteSize,
    /// Where the shards of a stripe may be placed.
    #[serde(default)]
    pub placement: Placement,
    /// Encryption of object data at rest: `aes-256-gcm` (default) or `none`.
    #[serde(default)]
    pub encryption: Encryption,
    /// The StorageSchedule that audits, repairs and expires objects of this plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Shards that must be stored before a write is acknowledged; default all shards of the
    /// stripe. Between dataShards and the stripe width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_quorum: Option<u32>,
}

fn default_segment_size() -> ByteSize {
    ByteSize::from_bytes(16 << 20)
}

/// How a stripe is made redundant. Set exactly one field.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Redundancy {
    /// Reed-Solomon erasure coding: any `dataShards` of the `dataShards + parityShards` shards
    /// rebuild the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erasure: Option<Erasure>,
    /// Whole copies of the data, each on a different provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
}

/// Erasure code parameters.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Erasure {
    /// Shards holding data; this many are needed to read.
    pub data_shards: u32,
    /// Extra shards; this many providers may be lost without losing data.
    pub parity_shards: u32,
}

/// The failure domain within which at most `maxPerDomain` shards of a stripe may sit.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SpreadBy {
    /// A provider's node (a machine).
    #[default]
    Node,
    /// A provider's zone (a site: a house, a data centre).
    Zone,
    /// The pool's owner.
    Owner,
    /// The pool.
    Pool,
}

/// Where the shards of a stripe may go.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// The failure domain: `node` (default), `zone`, `owner` or `pool`.
    #[serde(default)]
    pub spread_by: SpreadBy,
    /// At most this many shards of one stripe in one domain; default 1.
    #[serde(default = "default_max_per_domain")]
    pub max_per_domain: u32,
    /// The pools shards may be placed on, with per-pool limits. Empty means every pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolLimit>,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            spread_by: SpreadBy::default(),
            max_per_domain: default_max_per_domain(),
            pools: Vec::new(),
        }
    }
}

fn default_max_per_domain() -> u32 {
    1
}

/// A pool a plan may use, and how many shards of each stripe it must or may hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolLimit {
    /// The ProviderPool name.
    pub name: String,
    /// At least this many shards of every stripe go to this pool (e.g. enough to read from
    /// your own hardware); default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_shards: Option<u32>,
    /// At most this many shards of every stripe go to this pool; unlimited when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_shards: Option<u32>,
}

/// Encryption of object data at rest.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Encryption {
    /// AES-256-GCM with a per-object key wrapped by the gateway's master key.
    #[default]
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// Stored as written; providers can read the data.
    #[serde(rename = "none")]
    None,
}

/// What the operator observed about a plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoragePlanStatus {
    /// `Feasible`, `Ready` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The redundancy in short, e.g. `EC 4+2` or `3 replicas`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redundancy: Option<String>,
    /// The pools in use, comma separated, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pools: Option<String>,
    /// Share of shards that are healthy, e.g. `99.8%`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_percent: Option<String>,
    /// Objects stored with this plan.
    #[serde(default)]
    pub objects: u64,
    /// Bytes as written by clients.
    #[serde(default)]
    pub logical_bytes: u64,
    /// Bytes stored on providers, redundancy included.
    #[serde(default)]
    pub stored_bytes: u64,
    /// Shards by health.
    #[serde(default)]
    pub shards: ShardCounts,
}

/// Shards of a plan counted by health.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardCounts {
    /// Present and verified.
    #[serde(default)]
    pub healthy: u64,
    /// Missing or failed, in stripes that are still above minHealthyShards.
    #[serde(default)]
    pub degraded: u64,
    /// Missing or failed, in stripes at or below minHealthyShards.
    #[serde(default)]
    pub at_risk: u64,
    /// In stripes with fewer than dataShards shards left.
    #[serde(default)]
    pub lost: u64,
}

impl ShardCounts {
    /// Healthy shards as a percentage of all, e.g. `99.8%`; `None` when there are none.
    pub fn healthy_percent(&self) -> Option<String> {
        let total = self.healthy + self.degraded + self.at_risk + self.lost;
        if total == 0 {
            return None;
        }
        // Round down so 1 bad shard in a million never shows as 100%.
        let tenths = self.healthy.saturating_mul(1000) / total;
        Some(format!("{}.{}%", tenths / 10, tenths % 10))
    }
}

impl StoragePlanSpec {
    /// Shards per stripe: data + parity, or the number of replicas.
    pub fn stripe_width(&self) -> u32 {
        match (&self.redundancy.erasure, self.redundancy.replicas) {
            (Some(ec), _) => ec.data_shards.saturating_add(ec.parity_shards),
            (None, Some(replicas)) => replicas,
            (None, None) => 0,
        }
    }

    /// Shards needed to read a stripe: dataShards, or 1 for replicas.
    pub fn data_shards(&self) -> u32 {
        match &self.redundancy.erasure {
            Some(ec) => ec.data_shards,
            None => 1,
        }
    }

    /// Shards that must be stored before a write is acknowledged.
    pub fn write_quorum(&self) -> u32 {
        self.write_quorum.unwrap_or_else(|| self.stripe_width())
    }

    /// The redundancy in short: `EC 4+2`, `3 replicas` or `1 replica`.
    pub fn redundancy_label(&self) -> String {
        match (&self.redundancy.erasure, self.redundancy.replicas) {
            (Some(ec), _) => format!("EC {}+{}", ec.data_shards, ec.parity_shards),
            (None, Some(1)) => "1 replica".to_owned(),
            (None, Some(n)) => format!("{n} replicas"),
            (None, None) => "none".to_owned(),
        }
    }

    /// The pool names of the placement, comma separated (`*` when any pool may be used).
    pub fn pools_label(&self) -> String {
        if self.placement.pools.is_empty() {
            return "*".to_owned();
        }
        let names: Vec<&str> = self
            .placement
            .pools
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        names.join(",")
    }

    /// Every problem with this spec, each with its field path and a fix.
    pub fn validate(&self) -> Vec<ValidationError> {
        let mut p = Problems::default();
        self.validate_redundancy(&mut p);
        let segment = self.segment_size.bytes();
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment) {
            p.add(
                "spec.segmentSize",
                format!(
                    "{} is out of range; use a size between 64Ki and 1Gi (e.g. 16Mi)",
                    self.segment_size
                ),
            );
        }
        self.validate_placement(&mut p);
        if let Some(schedule) = &self.schedule {
            p.name("spec.schedule", schedule);
        }
        let width = self.stripe_width();
        if let Some(quorum) = self.write_quorum {
            let data = self.data_shards();
            if width > 0 && !(data..=width).contains(&quorum) {
                p.add(
                    "spec.writeQuorum",
                    format!(
                        "must be between dataShards ({data}) and the stripe width ({width}), got {quorum}; \
                         omit it to wait for all shards"
                    ),
                );
            }
        }
        p.0
    }

    fn validate_redundancy(&self, p: &mut Problems) {
        match (&self.redundancy.erasure, self.redundancy.replicas) {
            (Some(_), Some(_)) => p.add(
                "spec.redundancy",
                "set either erasure or replicas, not both",
            ),
            (None, None) => p.add(
                "spec.redundancy",
                "set erasure (e.g. {dataShards: 4, parityShards: 2}) or replicas (e.g. 3)",
            ),
            _ => {}
        }
        if let Some(ec) = &self.redundancy.erasure {
            p.at_least("spec.redundancy.erasure.dataShards", ec.data_shards, 1);
            if ec.parity_shards < 1 {
                p.add(
                    "spec.redundancy.erasure.parityShards",
                    "must be at least 1; without parity use replicas: 1",
                );
            }
            let width = u64::from(ec.data_shards) + u64::from(ec.parity_shards);
            if width > u64::from(MAX_STRIPE_WIDTH) {
                p.add(
                    "spec.redundancy.erasure",
                    format!(
                        "dataShards + parityShards is {width}; it must be at most {MAX_STRIPE_WIDTH}"
                    ),
                );
            }
        }
        if let Some(replicas) = self.redundancy.replicas {
            p.at_least("spec.redundancy.replicas", replicas, 1);
            if replicas > MAX_STRIPE_WIDTH {
                p.add(
                    "spec.redundancy.replicas",
                    format!("must be at most {MAX_STRIPE_WIDTH} (got {replicas})"),
                );
            }
        }
    }

    fn validate_placement(&self, p: &mut Problems) {
        let placement = &self.placement;
        p.at_least("spec.placement.maxPerDomain", placement.max_per_domain, 1);
        p.unique_names(
            "spec.placement.pools",
            placement.pools.iter().map(|pool| pool.name.as_str()),
        );
        let width = u64::from(self.stripe_width());
        let mut min_sum: u64 = 0;
        let mut max_sum: Option<u64> = Some(0);
        for (i, pool) in placement.pools.iter().enumerate() {
            let field = format!("spec.placement.pools[{i}]");
            p.name(format!("{field}.name"), &pool.name);
            let min = pool.min_shards.unwrap_or(0);
            min_sum += u64::from(min);
            match pool.max_shards {
                Some(max) => {
                    if max < 1 {
                        p.add(
                            format!("{field}.maxShards"),
                            "must be at least 1; remove the pool from the plan to keep shards off it",
                        );
                    }
                    if min > max {
                        p.add(
                            format!("{field}.minShards"),
                            format!("{min} is more than maxShards ({max}); lower minShards or raise maxShards"),
                        );
                    }
                    max_sum = max_sum.map(|sum| sum + u64::from(max));
                }
                None => max_sum = None,
            }
        }
        if width == 0 {
            return;
        }
        if min_sum > width {
            p.add(
                "spec.placement.pools",
                format!(
                    "the minShards add up to {min_sum} but a stripe has only {width} shards; lower them to fit"
                ),
            );
        }
        if let Some(max_sum) = max_sum.filter(|_| !placement.pools.is_empty())
            && max_sum < width
        {
            p.add(
                    "spec.placement.pools",
                    format!(
                        "the maxShards add up to {max_sum} but a stripe has {width} shards; raise them or \
                         leave one pool without maxShards"
                    ),
                );
        }
    }
}
