//! `StorageSchedule`: when and how hard sublet audits, repairs, scrubs and expires objects.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::duration::Duration;
use crate::size::ByteSize;
use crate::validate::{Problems, ValidationError, is_clock_time};

/// Care for the objects of the plans that name this schedule: rebuild of lost shards, audits
/// of providers, scrubs of stored data and lifecycle rules.
// Each printcolumn repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "sublet.dev",
    version = "v1alpha1",
    kind = "StorageSchedule",
    doc = "Audits, repairs, scrubs and lifecycle rules for the plans naming it.",
    namespaced,
    status = "StorageScheduleStatus",
    shortname = "ss",
    derive = "PartialEq",
    printcolumn(
        name = "Grace",
        type_ = "string",
        json_path = ".spec.rebuild.gracePeriod"
    ),
    printcolumn(
        name = "Queued",
        type_ = "integer",
        description = "objects waiting for repair",
        json_path = ".status.queuedRepairs"
    ),
    printcolumn(name = "Last Audit", type_ = "date", json_path = ".status.lastAudit"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StorageScheduleSpec {
    /// When objects that lost shards are repaired.
    #[serde(default)]
    pub rebuild: Rebuild,
    /// How often providers are challenged to prove they still hold their shards.
    #[serde(default)]
    pub audit: Audit,
    /// How often stored data is read back in full and checked.
    #[serde(default)]
    pub scrub: Scrub,
    /// Rules that move objects to another plan, expire them or abort stale uploads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lifecycle: Vec<LifecycleRule>,
}

/// Repair of objects that lost shards.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rebuild {
    /// An object with fewer healthy shards than this is queued for repair. Between dataShards
    /// and the stripe width of every plan using this schedule; default the stripe width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_healthy_shards: Option<u32>,
    /// How long a provider may be gone before its shards count as lost; default 15m.
    #[serde(default = "default_grace_period")]
    pub grace_period: Duration,
    /// Repairs running at once; default 2.
    #[serde(default = "default_max_concurrent_jobs")]
    #[schemars(range(min = 1))]
    pub max_concurrent_jobs: u32,
    /// Bandwidth per second per repair job, e.g. `50Mi`; unlimited when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_limit: Option<ByteSize>,
    /// Hours in which repairs run; any time when omitted. Objects at risk ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<RebuildWindow>,
}

impl Default for Rebuild {
    fn default() -> Self {
        Rebuild {
            min_healthy_shards: None,
            grace_period: default_grace_period(),
            max_concurrent_jobs: default_max_concurrent_jobs(),
            bandwidth_limit: None,
            window: None,
        }
    }
}

fn default_grace_period() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_max_concurrent_jobs() -> u32 {
    2
}

/// Daily hours, `HH:MM` on a 24-hour clock in the gateway's local time. An end before the
/// start wraps past midnight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebuildWindow {
    /// Start, e.g. `01:00`.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// End, e.g. `06:00`.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub end: String,
}

/// Provider audits.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    /// Time between audits of each provider; default 6h.
    #[serde(default = "default_audit_interval")]
    pub interval: Duration,
    /// Shards challenged per provider per audit; default 64.
    #[serde(default = "default_samples_per_provider")]
    #[schemars(range(min = 1))]
    pub samples_per_provider: u32,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            interval: default_audit_interval(),
            samples_per_provider: default_samples_per_provider(),
        }
    }
}

fn default_audit_interval() -> Duration {
    Duration::from_secs(6 * 3600)
}

fn default_samples_per_provider() -> u32 {
    64
}

/// Full reads of stored data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scrub {
    /// Time between scrubs of each object; default 720h (30 days).
    #[serde(default = "default_scrub_interval")]
    pub interval: Duration,
    /// Shard bytes read per second while scrubbing, e.g. `8Mi` (the default).
    #[serde(default = "default_scrub_bandwidth")]
    pub bandwidth_limit: ByteSize,
}

impl Default for Scrub {
    fn default() -> Self {
        Scrub {
            interval: default_scrub_interval(),
            bandwidth_limit: default_scrub_bandwidth(),
        }
    }
}

fn default_scrub_bandwidth() -> ByteSize {
    ByteSize::from_bytes(8 << 20)
}

fn default_scrub_interval() -> Duration {
    Duration::from_secs(720 * 3600)
}

/// One lifecycle rule, as in S3 bucket lifecycle: pick objects by prefix and age and do one
/// thing with them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleRule {
    /// A name unique in the schedule, e.g. `cool-down`.
    pub name: String,
    /// Which objects the rule applies to; every object when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<LifecycleFilter>,
    /// Age in days at which `transitionTo` or `expire` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub after_days: Option<u32>,
    /// Move matching objects to this StoragePlan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition_to: Option<String>,
    /// Delete matching objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire: Option<bool>,
    /// Abort multipart uploads left incomplete for this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub abort_incomplete_multipart_after_days: Option<u32>,
}

/// Which objects a lifecycle rule applies to: those meeting every condition given.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleFilter {
    /// Keys starting with this, e.g. `photos/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Objects carrying every one of these S3 object tags (key: value), e.g.
    /// `{retention: short}`; at most 10.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 10))]
    pub tags: BTreeMap<String, String>,
    /// Objects larger than this, e.g. `1Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_size_greater_than: Option<ByteSize>,
    /// Objects smaller than this, e.g. `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_size_less_than: Option<ByteSize>,
}

/// S3's limits on the tags of one object.
const MAX_FILTER_TAGS: usize = 10;
const MAX_TAG_KEY_CHARS: usize = 128;
const MAX_TAG_VALUE_CHARS: usize = 256;

/// What the operator observed about a schedule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageScheduleStatus {
    /// `Ready` and other conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Objects waiting for repair.
    #[serde(default)]
    pub queued_repairs: u64,
    /// Repairs running now.
    #[serde(default)]
    pub running_repairs: u64,
    /// When the last audit round finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_audit: Option<String>,
    /// When the last scrub round finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scrub: Option<String>,
}

impl StorageScheduleSpec {
    /// Every problem with this spec, each with its field path and a fix. Whether
    /// `minHealthyShards` suits the plans using the schedule is checked where the plans are
    /// known: see [`StorageScheduleSpec::validate_for_plan`].
    pub fn validate(&self) -> Vec<ValidationError> {
        let mut p = Problems::default();
        let rebuild = &self.rebuild;
        if let Some(min) = rebuild.min_healthy_shards {
            p.at_least("spec.rebuild.minHealthyShards", min, 1);
        }
        p.at_least(
            "spec.rebuild.maxConcurrentJobs",
            rebuild.max_concurrent_jobs,
            1,
        );
        if rebuild.grace_period.as_secs() == 0 {
            p.add(
                "spec.rebuild.gracePeriod",
                "must be longer than 0s, or a provider restart loses its shards (e.g. 15m)",
            );
        }
        if rebuild
            .bandwidth_limit
            .as_ref()
            .is_some_and(|b| b.bytes() == 0)
        {
            p.add(
                "spec.rebuild.bandwidthLimit",
                "must be more than 0 (e.g. 50Mi); omit it for no limit",
            );
        }
        if self.scrub.bandwidth_limit.bytes() == 0 {
            p.add(
                "spec.scrub.bandwidthLimit",
                "must be more than 0 (e.g. 8Mi); scrubbing reads every stored shard",
            );
        }
        if let Some(window) = &rebuild.window {
            for (field, value) in [("start", &window.start), ("end", &window.end)] {
                if !is_clock_time(value) {
                    p.add(
                        format!("spec.rebuild.window.{field}"),
                        format!(
                            "\"{value}\" is not a time; use HH:MM on a 24-hour clock (e.g. 01:00)"
                        ),
                    );
                }
            }
            if window.start == window.end {
                p.add(
                    "spec.rebuild.window",
                    "start and end are equal, which leaves no time to repair; omit the window to repair at any time",
                );
            }
        }
        if self.audit.interval.as_secs() == 0 {
            p.add("spec.audit.interval", "must be longer than 0s (e.g. 6h)");
        }
        p.at_least(
            "spec.audit.samplesPerProvider",
            self.audit.samples_per_provider,
            1,
        );
        if self.scrub.interval.as_secs() == 0 {
            p.add("spec.scrub.interval", "must be longer than 0s (e.g. 720h)");
        }
        p.unique_names(
            "spec.lifecycle",
            self.lifecycle.iter().map(|r| r.name.as_str()),
        );
        for (i, rule) in self.lifecycle.iter().enumerate() {
            validate_rule(&mut p, &format!("spec.lifecycle[{i}]"), rule);
        }
        p.0
    }

    /// Problems using this schedule for a plan of `data_shards` out of `stripe_width` shards.
    pub fn validate_for_plan(
        &self,
        plan: &str,
        data_shards: u32,
        stripe_width: u32,
    ) -> Vec<ValidationError> {
        let mut p = Problems::default();
        if let Some(min) = self.rebuild.min_healthy_shards
            && (min < data_shards || min > stripe_width)
        {
            p.add(
                    "spec.rebuild.minHealthyShards",
                    format!(
                        "{min} does not suit plan {plan} ({data_shards} data shards of {stripe_width}); \
                         use a number from {data_shards} to {stripe_width}"
                    ),
                );
        }
        p.0
    }
}

fn validate_rule(p: &mut Problems, field: &str, rule: &LifecycleRule) {
    p.name(format!("{field}.name"), &rule.name);
    let expire = rule.expire == Some(true);
    let actions = [
        rule.transition_to.is_some(),
        expire,
        rule.abort_incomplete_multipart_after_days.is_some(),
    ]
    .iter()
    .filter(|set| **set)
    .count();
    match actions {
        0 => p.add(
            field.to_owned(),
            "the rule does nothing; set one of transitionTo (a plan), expire: true or \
             abortIncompleteMultipartAfterDays",
        ),
        1 => {}
        _ => p.add(
            field.to_owned(),
            "set only one of transitionTo, expire and abortIncompleteMultipartAfterDays; \
             split the rule in two",
        ),
    }
    if rule.expire == Some(false) {
        p.add(
            format!("{field}.expire"),
            "false does nothing; write expire: true or remove it",
        );
    }
    if let Some(plan) = &rule.transition_to {
        p.name(format!("{field}.transitionTo"), plan);
    }
    match rule.after_days {
        Some(days) => {
            p.at_least(format!("{field}.afterDays"), days, 1);
            if rule.transition_to.is_none() && !expire {
                p.add(
                    format!("{field}.afterDays"),
                    "applies to transitionTo and expire only; remove it",
                );
            }
        }
        None if rule.transition_to.is_some() || expire => p.add(
            format!("{field}.afterDays"),
            "is required with transitionTo and expire; say after how many days (e.g. 30)",
        ),
        None => {}
    }
    if let Some(days) = rule.abort_incomplete_multipart_after_days {
        p.at_least(
            format!("{field}.abortIncompleteMultipartAfterDays"),
            days,
            1,
        );
    }
    if let Some(filter) = &rule.filter {
        validate_filter(p, &format!("{field}.filter"), filter);
        let on_objects = !filter.tags.is_empty()
            || filter.object_size_greater_than.is_some()
            || filter.object_size_less_than.is_some();
        if on_objects && rule.abort_incomplete_multipart_after_days.is_some() {
            p.add(
                format!("{field}.filter"),
                "abortIncompleteMultipartAfterDays applies to uploads in progress, which have \
                 no tags or size yet; filter that rule by prefix only",
            );
        }
    }
}

fn validate_filter(p: &mut Problems, field: &str, filter: &LifecycleFilter) {
    if filter.prefix.as_ref().is_some_and(String::is_empty) {
        p.add(
            format!("{field}.prefix"),
            "must not be empty; omit the filter to match every object",
        );
    }
    if filter.tags.len() > MAX_FILTER_TAGS {
        p.add(
            format!("{field}.tags"),
            format!(
                "{} tags given; an object carries at most {MAX_FILTER_TAGS}",
                filter.tags.len()
            ),
        );
    }
    for (key, value) in &filter.tags {
        let at = format!("{field}.tags.{key}");
        let chars = key.chars().count();
        if chars == 0 || chars > MAX_TAG_KEY_CHARS {
            p.add(
                at.clone(),
                format!("a tag key has 1 to {MAX_TAG_KEY_CHARS} characters (got {chars})"),
            );
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            p.add(at.clone(), "tag keys starting with aws: are reserved");
        }
        let chars = value.chars().count();
        if chars > MAX_TAG_VALUE_CHARS {
            p.add(
                at,
                format!("a tag value has at most {MAX_TAG_VALUE_CHARS} characters (got {chars})"),
            );
        }
    }
    if let (Some(min), Some(max)) = (
        &filter.object_size_greater_than,
        &filter.object_size_less_than,
    ) && max.bytes() <= min.bytes().saturating_add(1)
    {
        p.add(
            format!("{field}.objectSizeLessThan"),
            format!("{max} selects nothing above objectSizeGreaterThan {min}; make it larger"),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> StorageScheduleSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn problems(yaml: &str) -> Vec<String> {
        spec(yaml)
            .validate()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn rule(yaml: &str) -> Vec<String> {
        problems(&format!("lifecycle: [{yaml}]"))
    }

    #[test]
    fn empty_schedule_takes_defaults() {
        let s = spec("{}");
        assert!(s.validate().is_empty());
        assert_eq!(s.rebuild.grace_period.as_secs(), 900);
        assert_eq!(s.rebuild.max_concurrent_jobs, 2);
        assert_eq!(s.audit.interval.as_secs(), 6 * 3600);
        assert_eq!(s.audit.samples_per_provider, 64);
        assert_eq!(s.scrub.interval.as_secs(), 720 * 3600);
        assert_eq!(s.rebuild.min_healthy_shards, None);
    }

    #[test]
    fn counts_must_be_positive() {
        assert_eq!(
            problems(
                "rebuild: {minHealthyShards: 0, maxConcurrentJobs: 0}\naudit: {samplesPerProvider: 0}"
            ),
            [
                "spec.rebuild.minHealthyShards: must be at least 1 (got 0)",
                "spec.rebuild.maxConcurrentJobs: must be at least 1 (got 0)",
                "spec.audit.samplesPerProvider: must be at least 1 (got 0)",
            ]
        );
    }

    #[test]
    fn durations_must_be_positive() {
        assert_eq!(
            problems("rebuild: {gracePeriod: 0s}\naudit: {interval: 0m}\nscrub: {interval: 0h}"),
            [
                "spec.rebuild.gracePeriod: must be longer than 0s, or a provider restart loses its shards (e.g. 15m)",
                "spec.audit.interval: must be longer than 0s (e.g. 6h)",
                "spec.scrub.interval: must be longer than 0s (e.g. 720h)",
            ]
        );
    }

    #[test]
    fn durations_that_do_not_parse_name_the_field() {
        let err =
            serde_yaml::from_str::<StorageScheduleSpec>("audit: {interval: 6 hours}").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("audit.interval: \"6 hours\" is not a duration"),
            "{err}"
        );
    }

    #[test]
    fn bandwidth_limit_is_a_size() {
        let s = spec("rebuild: {bandwidthLimit: 50Mi}");
        assert_eq!(s.rebuild.bandwidth_limit.unwrap().bytes(), 50 << 20);
        assert_eq!(
            problems("rebuild: {bandwidthLimit: 0}"),
            ["spec.rebuild.bandwidthLimit: must be more than 0 (e.g. 50Mi); omit it for no limit"]
        );
    }

    #[test]
    fn scrubs_are_throttled_by_default() {
        let s = spec("scrub: {interval: 24h}");
        assert_eq!(s.scrub.bandwidth_limit.bytes(), 8 << 20);
        assert_eq!(
            spec("scrub: {bandwidthLimit: 1Gi}")
                .scrub
                .bandwidth_limit
                .bytes(),
            1 << 30
        );
        assert_eq!(
            problems("scrub: {bandwidthLimit: 0}"),
            [
                "spec.scrub.bandwidthLimit: must be more than 0 (e.g. 8Mi); scrubbing reads every stored shard"
            ]
        );
    }

    #[test]
    fn window_times_are_hh_mm() {
        assert!(problems("rebuild: {window: {start: \"22:00\", end: \"06:00\"}}").is_empty());
        assert_eq!(
            problems("rebuild: {window: {start: \"1am\", end: \"24:00\"}}"),
            [
                "spec.rebuild.window.start: \"1am\" is not a time; use HH:MM on a 24-hour clock (e.g. 01:00)",
                "spec.rebuild.window.end: \"24:00\" is not a time; use HH:MM on a 24-hour clock (e.g. 01:00)",
            ]
        );
        assert_eq!(
            problems("rebuild: {window: {start: \"01:00\", end: \"01:00\"}}"),
            [
                "spec.rebuild.window: start and end are equal, which leaves no time to repair; omit the window to repair at any time"
            ]
        );
    }

    #[test]
    fn lifecycle_rule_needs_an_action() {
        assert_eq!(
            rule("{name: r, filter: {prefix: a/}}"),
            [
                "spec.lifecycle[0]: the rule does nothing; set one of transitionTo (a plan), expire: true or abortIncompleteMultipartAfterDays"
            ]
        );
    }

    #[test]
    fn lifecycle_filters_by_tags_and_size() {
        let s = spec(
            "lifecycle: [{name: r, afterDays: 3, expire: true, filter: {prefix: logs/, \
             tags: {retention: short}, objectSizeGreaterThan: 1Mi, objectSizeLessThan: 1Gi}}]",
        );
        assert!(s.validate().is_empty());
        let f = s.lifecycle[0].filter.clone().unwrap();
        assert_eq!(f.tags["retention"], "short");
        assert_eq!(f.object_size_greater_than.unwrap().bytes(), 1 << 20);
        assert_eq!(f.object_size_less_than.unwrap().bytes(), 1 << 30);
    }

    #[test]
    fn lifecycle_filter_problems_name_their_field() {
        let eleven: Vec<String> = (0..11).map(|i| format!("k{i}: v")).collect();
        assert_eq!(
            rule(&format!(
                "{{name: r, afterDays: 3, expire: true, filter: {{tags: {{{}}}}}}}",
                eleven.join(", ")
            )),
            ["spec.lifecycle[0].filter.tags: 11 tags given; an object carries at most 10"]
        );
        assert_eq!(
            rule("{name: r, afterDays: 3, expire: true, filter: {tags: {\"aws:x\": v}}}"),
            ["spec.lifecycle[0].filter.tags.aws:x: tag keys starting with aws: are reserved"]
        );
        assert_eq!(
            rule(
                "{name: r, afterDays: 3, expire: true, \
                 filter: {objectSizeGreaterThan: 1Mi, objectSizeLessThan: 1Ki}}"
            ),
            [
                "spec.lifecycle[0].filter.objectSizeLessThan: 1Ki selects nothing above objectSizeGreaterThan 1Mi; make it larger"
            ]
        );
        assert_eq!(
            rule("{name: r, abortIncompleteMultipartAfterDays: 3, filter: {tags: {a: b}}}"),
            [
                "spec.lifecycle[0].filter: abortIncompleteMultipartAfterDays applies to uploads in progress, which have no tags or size yet; filter that rule by prefix only"
            ]
        );
    }

    #[test]
    fn lifecycle_rule_has_one_action() {
        assert_eq!(
            rule("{name: r, afterDays: 3, expire: true, transitionTo: archive}"),
            [
                "spec.lifecycle[0]: set only one of transitionTo, expire and abortIncompleteMultipartAfterDays; split the rule in two"
            ]
        );
    }

    #[test]
    fn expire_false_is_no_action() {
        assert_eq!(
            rule("{name: r, afterDays: 3, expire: false}"),
            [
                "spec.lifecycle[0]: the rule does nothing; set one of transitionTo (a plan), expire: true or abortIncompleteMultipartAfterDays",
                "spec.lifecycle[0].expire: false does nothing; write expire: true or remove it",
                "spec.lifecycle[0].afterDays: applies to transitionTo and expire only; remove it",
            ]
        );
    }

    #[test]
    fn after_days_rules() {
        assert_eq!(
            rule("{name: r, afterDays: 0, expire: true}"),
            ["spec.lifecycle[0].afterDays: must be at least 1 (got 0)"]
        );
        assert_eq!(
            rule("{name: r, transitionTo: archive}"),
            [
                "spec.lifecycle[0].afterDays: is required with transitionTo and expire; say after how many days (e.g. 30)"
            ]
        );
        assert_eq!(
            rule("{name: r, afterDays: 3, abortIncompleteMultipartAfterDays: 2}"),
            ["spec.lifecycle[0].afterDays: applies to transitionTo and expire only; remove it"]
        );
        assert_eq!(
            rule("{name: r, abortIncompleteMultipartAfterDays: 0}"),
            ["spec.lifecycle[0].abortIncompleteMultipartAfterDays: must be at least 1 (got 0)"]
        );
    }

    #[test]
    fn lifecycle_names_and_targets() {
        assert_eq!(
            problems(
                "lifecycle: [{name: r, abortIncompleteMultipartAfterDays: 1}, {name: r, afterDays: 1, expire: true}]"
            ),
            ["spec.lifecycle[1].name: \"r\" is used twice; give each entry its own name"]
        );
        assert_eq!(
            rule("{name: r, afterDays: 1, transitionTo: Archive}"),
            [
                "spec.lifecycle[0].transitionTo: \"Archive\" is not a valid name; use lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. home-lab)"
            ]
        );
        assert_eq!(
            rule("{name: r, filter: {prefix: \"\"}, afterDays: 1, expire: true}"),
            [
                "spec.lifecycle[0].filter.prefix: must not be empty; omit the filter to match every object"
            ]
        );
    }

    #[test]
    fn min_healthy_shards_suits_each_plan() {
        let s = spec("rebuild: {minHealthyShards: 5}");
        assert!(s.validate_for_plan("photos", 4, 6).is_empty());
        assert!(s.validate_for_plan("exact", 5, 5).is_empty());
        assert_eq!(
            s.validate_for_plan("scratch", 2, 3)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "spec.rebuild.minHealthyShards: 5 does not suit plan scratch (2 data shards of 3); use a number from 2 to 3"
            ]
        );
        assert_eq!(s.validate_for_plan("archive", 10, 14).len(), 1);
        assert!(spec("{}").validate_for_plan("any", 10, 14).is_empty());
    }

    #[test]
    fn yaml_round_trip_keeps_what_was_written() {
        let text = "rebuild:\n  minHealthyShards: 5\n  gracePeriod: 1h30m\n  maxConcurrentJobs: 2\n  bandwidthLimit: 50Mi\n  window:\n    start: 01:00\n    end: 06:00\naudit:\n  interval: 6h\n  samplesPerProvider: 64\nscrub:\n  interval: 720h\n  bandwidthLimit: 8Mi\nlifecycle:\n- name: cool-down\n  filter:\n    prefix: photos/\n  afterDays: 30\n  transitionTo: archive\n- name: uploads\n  abortIncompleteMultipartAfterDays: 2\n";
        let s = spec(text);
        assert_eq!(serde_yaml::to_string(&s).unwrap(), text);
    }
}
