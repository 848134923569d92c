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
    #[schemars(range(min = 1))]
    pub write_quorum: Option<u32>,
    /// Objects of at most this size are kept (sealed) in the gateway's metadata instead of
    /// being striped onto providers: far quicker small writes and reads. Their copies are
    /// then the metadata's: the gateway's disk, its metadata journal on three providers and
    /// its snapshots (or the PostgreSQL database), whatever the placement says, and they
    /// make snapshots larger. At most 1Mi; default 0 (off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_up_to: Option<ByteSize>,
}

/// Largest allowed `inlineUpTo`.
pub const MAX_INLINE_UP_TO: u64 = 1 << 20;

fn default_segment_size() -> ByteSize {
    ByteSize::from_bytes(16 << 20)
}

/// How a stripe is made redundant. Set exactly one field.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.erasure) != has(self.replicas)",
    "message": "set either erasure (e.g. {dataShards: 4, parityShards: 2}) or replicas (e.g. 3)"
}]))]
pub struct Redundancy {
    /// Reed-Solomon erasure coding: any `dataShards` of the `dataShards + parityShards` shards
    /// rebuild the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erasure: Option<Erasure>,
    /// Whole copies of the data, each on a different provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub replicas: Option<u32>,
}

/// Erasure code parameters.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Erasure {
    /// Shards holding data; this many are needed to read.
    #[schemars(range(min = 1, max = 255))]
    pub data_shards: u32,
    /// Extra shards; this many providers may be lost without losing data.
    #[schemars(range(min = 1, max = 255))]
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
    #[schemars(range(min = 1))]
    pub max_per_domain: u32,
    /// The pools shards may be placed on, with per-pool limits. Empty means every pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
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
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.minShards) || !has(self.maxShards) || self.minShards <= self.maxShards",
    "message": "minShards is more than maxShards; lower minShards or raise maxShards"
}]))]
pub struct PoolLimit {
    /// The ProviderPool name.
    pub name: String,
    /// At least this many shards of every stripe go to this pool (e.g. enough to read from
    /// your own hardware); default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_shards: Option<u32>,
    /// At most this many shards of every stripe go to this pool; unlimited when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
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

    /// Largest object kept in metadata instead of on providers; 0 when off.
    pub fn inline_up_to(&self) -> u64 {
        self.inline_up_to.as_ref().map_or(0, ByteSize::bytes)
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
        if let Some(inline) = &self.inline_up_to
            && inline.bytes() > MAX_INLINE_UP_TO
        {
            p.add(
                "spec.inlineUpTo",
                format!("{inline} is too large; use at most 1Mi (e.g. 4Ki), or 0 to turn it off"),
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> StoragePlanSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn problems(yaml: &str) -> Vec<String> {
        spec(yaml)
            .validate()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const EC42: &str = "redundancy: {erasure: {dataShards: 4, parityShards: 2}}\n";

    #[test]
    fn minimal_plan_takes_defaults() {
        let plan = spec(EC42);
        assert!(plan.validate().is_empty());
        assert_eq!(plan.segment_size.bytes(), 16 << 20);
        assert_eq!(plan.segment_size.to_string(), "16Mi");
        assert_eq!(plan.encryption, Encryption::Aes256Gcm);
        assert_eq!(plan.placement.spread_by, SpreadBy::Node);
        assert_eq!(plan.placement.max_per_domain, 1);
        assert_eq!(plan.schedule, None);
        assert_eq!(plan.write_quorum(), 6);
    }

    #[test]
    fn helpers_describe_the_redundancy() {
        let ec = spec(EC42);
        assert_eq!(ec.stripe_width(), 6);
        assert_eq!(ec.data_shards(), 4);
        assert_eq!(ec.redundancy_label(), "EC 4+2");
        assert_eq!(ec.pools_label(), "*");
        let replicas =
            spec("redundancy: {replicas: 3}\nplacement: {pools: [{name: a}, {name: b}]}");
        assert_eq!(replicas.stripe_width(), 3);
        assert_eq!(replicas.data_shards(), 1);
        assert_eq!(replicas.redundancy_label(), "3 replicas");
        assert_eq!(replicas.pools_label(), "a,b");
        assert_eq!(
            spec("redundancy: {replicas: 1}").redundancy_label(),
            "1 replica"
        );
        assert_eq!(spec(&format!("{EC42}writeQuorum: 5")).write_quorum(), 5);
    }

    #[test]
    fn parity_must_be_at_least_one() {
        assert_eq!(
            problems("redundancy: {erasure: {dataShards: 4, parityShards: 0}}"),
            [
                "spec.redundancy.erasure.parityShards: must be at least 1; without parity use replicas: 1"
            ]
        );
    }

    #[test]
    fn data_shards_must_be_at_least_one() {
        assert_eq!(
            problems("redundancy: {erasure: {dataShards: 0, parityShards: 2}}"),
            ["spec.redundancy.erasure.dataShards: must be at least 1 (got 0)"]
        );
    }

    #[test]
    fn stripe_is_at_most_256_shards() {
        assert!(problems("redundancy: {erasure: {dataShards: 200, parityShards: 56}}").is_empty());
        assert_eq!(
            problems("redundancy: {erasure: {dataShards: 200, parityShards: 57}}"),
            ["spec.redundancy.erasure: dataShards + parityShards is 257; it must be at most 256"]
        );
        assert_eq!(
            problems("redundancy: {replicas: 300}"),
            ["spec.redundancy.replicas: must be at most 256 (got 300)"]
        );
    }

    #[test]
    fn replicas_must_be_at_least_one() {
        assert_eq!(
            problems("redundancy: {replicas: 0}"),
            ["spec.redundancy.replicas: must be at least 1 (got 0)"]
        );
    }

    #[test]
    fn exactly_one_redundancy() {
        assert_eq!(
            problems("redundancy: {replicas: 3, erasure: {dataShards: 4, parityShards: 2}}"),
            ["spec.redundancy: set either erasure or replicas, not both"]
        );
        assert_eq!(
            problems("redundancy: {}"),
            [
                "spec.redundancy: set erasure (e.g. {dataShards: 4, parityShards: 2}) or replicas (e.g. 3)"
            ]
        );
    }

    #[test]
    fn segment_size_between_64ki_and_1gi() {
        for ok in ["64Ki", "1Gi", "16Mi", "65536"] {
            assert!(
                problems(&format!("{EC42}segmentSize: {ok}")).is_empty(),
                "{ok}"
            );
        }
        assert_eq!(
            problems(&format!("{EC42}segmentSize: 32Ki")),
            ["spec.segmentSize: 32Ki is out of range; use a size between 64Ki and 1Gi (e.g. 16Mi)"]
        );
        assert_eq!(
            problems(&format!("{EC42}segmentSize: 2Gi")),
            ["spec.segmentSize: 2Gi is out of range; use a size between 64Ki and 1Gi (e.g. 16Mi)"]
        );
    }

    #[test]
    fn segment_size_that_does_not_parse_names_the_field() {
        let err = serde_yaml::from_str::<StoragePlanSpec>(&format!("{EC42}segmentSize: 16Mx"))
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "segmentSize: \"16Mx\" is not a size; use a number with an optional unit Ki, Mi, Gi, Ti (e.g. 16Mi)"
            ),
            "{err}"
        );
    }

    #[test]
    fn max_per_domain_at_least_one() {
        assert_eq!(
            problems(&format!("{EC42}placement: {{maxPerDomain: 0}}")),
            ["spec.placement.maxPerDomain: must be at least 1 (got 0)"]
        );
    }

    #[test]
    fn pool_min_not_above_max() {
        assert_eq!(
            problems(&format!(
                "{EC42}placement: {{pools: [{{name: a, minShards: 3, maxShards: 2}}, {{name: b}}]}}"
            )),
            [
                "spec.placement.pools[0].minShards: 3 is more than maxShards (2); lower minShards or raise maxShards"
            ]
        );
    }

    #[test]
    fn pool_max_at_least_one() {
        assert_eq!(
            problems(&format!(
                "{EC42}placement: {{pools: [{{name: a, maxShards: 0}}, {{name: b}}]}}"
            )),
            [
                "spec.placement.pools[0].maxShards: must be at least 1; remove the pool from the plan to keep shards off it"
            ]
        );
    }

    #[test]
    fn min_shards_fit_in_the_stripe() {
        assert!(
            problems(&format!(
                "{EC42}placement: {{pools: [{{name: a, minShards: 4}}, {{name: b, minShards: 2}}]}}"
            ))
            .is_empty()
        );
        assert_eq!(
            problems(&format!(
                "{EC42}placement: {{pools: [{{name: a, minShards: 4}}, {{name: b, minShards: 3}}]}}"
            )),
            [
                "spec.placement.pools: the minShards add up to 7 but a stripe has only 6 shards; lower them to fit"
            ]
        );
    }

    #[test]
    fn max_shards_leave_room_for_the_stripe() {
        assert_eq!(
            problems(&format!(
                "{EC42}placement: {{pools: [{{name: a, maxShards: 2}}, {{name: b, maxShards: 3}}]}}"
            )),
            [
                "spec.placement.pools: the maxShards add up to 5 but a stripe has 6 shards; raise them or leave one pool without maxShards"
            ]
        );
    }

    #[test]
    fn pool_names_unique_and_valid() {
        assert_eq!(
            problems(&format!(
                "{EC42}placement: {{pools: [{{name: a}}, {{name: b}}, {{name: a}}]}}"
            )),
            ["spec.placement.pools[2].name: \"a\" is used twice; give each entry its own name"]
        );
        assert_eq!(
            problems(&format!("{EC42}placement: {{pools: [{{name: Home_Lab}}]}}")),
            [
                "spec.placement.pools[0].name: \"Home_Lab\" is not a valid name; use lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. home-lab)"
            ]
        );
    }

    #[test]
    fn inline_up_to_at_most_one_mebibyte() {
        for ok in ["0", "4Ki", "1Mi"] {
            assert!(
                problems(&format!("{EC42}inlineUpTo: {ok}")).is_empty(),
                "{ok}"
            );
        }
        assert_eq!(
            problems(&format!("{EC42}inlineUpTo: 2Mi")),
            ["spec.inlineUpTo: 2Mi is too large; use at most 1Mi (e.g. 4Ki), or 0 to turn it off"]
        );
    }

    #[test]
    fn write_quorum_between_data_shards_and_width() {
        assert!(problems(&format!("{EC42}writeQuorum: 4")).is_empty());
        assert!(problems(&format!("{EC42}writeQuorum: 6")).is_empty());
        for bad in [3, 7] {
            assert_eq!(
                problems(&format!("{EC42}writeQuorum: {bad}")),
                [format!(
                    "spec.writeQuorum: must be between dataShards (4) and the stripe width (6), got {bad}; omit it to wait for all shards"
                )]
            );
        }
    }

    #[test]
    fn encryption_and_spread_by_are_enums() {
        let plan = spec(&format!(
            "{EC42}encryption: none\nplacement: {{spreadBy: owner}}"
        ));
        assert_eq!(plan.encryption, Encryption::None);
        assert_eq!(plan.placement.spread_by, SpreadBy::Owner);
        let err = serde_yaml::from_str::<StoragePlanSpec>(&format!("{EC42}encryption: rot13"))
            .unwrap_err();
        assert!(err.to_string().contains("aes-256-gcm"), "{err}");
    }

    #[test]
    fn every_problem_is_reported() {
        let found = problems(
            "redundancy: {erasure: {dataShards: 0, parityShards: 0}}\nsegmentSize: 1Ki\nplacement: {maxPerDomain: 0}",
        );
        assert_eq!(found.len(), 4, "{found:?}");
    }

    #[test]
    fn yaml_round_trip_keeps_what_was_written() {
        let text = "redundancy:\n  erasure:\n    dataShards: 4\n    parityShards: 2\nsegmentSize: 16Mi\nplacement:\n  spreadBy: zone\n  maxPerDomain: 2\n  pools:\n  - name: home-lab\n    minShards: 4\n  - name: rented\n    maxShards: 2\nencryption: aes-256-gcm\nschedule: nightly-care\nwriteQuorum: 5\n";
        let plan = spec(text);
        assert_eq!(serde_yaml::to_string(&plan).unwrap(), text);
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(
            serde_json::from_str::<StoragePlanSpec>(&json).unwrap(),
            plan
        );
    }

    proptest::proptest! {
        #[test]
        fn every_stripe_up_to_256_shards_is_valid(data in 1u32..=255, parity in 1u32..=255) {
            let plan = spec(&format!(
                "redundancy: {{erasure: {{dataShards: {data}, parityShards: {parity}}}}}"
            ));
            let problems = plan.validate();
            if data + parity <= MAX_STRIPE_WIDTH {
                proptest::prop_assert!(problems.is_empty(), "{:?}", problems);
            } else {
                proptest::prop_assert_eq!(problems.len(), 1);
                proptest::prop_assert_eq!(&problems[0].field, "spec.redundancy.erasure");
            }
            proptest::prop_assert_eq!(plan.stripe_width(), data + parity);
            proptest::prop_assert_eq!(plan.data_shards(), data);
            proptest::prop_assert_eq!(plan.redundancy_label(), format!("EC {data}+{parity}"));
        }
    }

    #[test]
    fn healthy_percent_rounds_down() {
        let counts = |healthy, degraded| ShardCounts {
            healthy,
            degraded,
            ..ShardCounts::default()
        };
        assert_eq!(counts(0, 0).healthy_percent(), None);
        assert_eq!(counts(10, 0).healthy_percent().unwrap(), "100.0%");
        assert_eq!(counts(999_999, 1).healthy_percent().unwrap(), "99.9%");
        assert_eq!(counts(1, 2).healthy_percent().unwrap(), "33.3%");
    }
}
