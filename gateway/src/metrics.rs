//! Gateway metrics (names start with `sublet_gateway_`): S3 requests by operation and
//! status, bytes in and out, latency, shard calls per provider, and the gauges the admin
//! server refreshes from metadata on scrape ([`crate::admin::server`]). Everything records
//! here; this module depends on nothing else of the gateway.

use std::sync::{Arc, LazyLock, Mutex};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Metadata objects read from providers (snapshot manifests, journal segments) that failed
/// authentication with the master key, by kind (`manifest`, `unsealed_manifest`,
/// `journal_segment`): forgeries, replays under another id, or another installation's.
/// Process-wide because the code that finds them runs before and beside any one gateway's
/// registry; every [`Metrics`] registry exports it.
static FORGED_METADATA: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "sublet_gateway_forged_metadata_total",
            "Snapshot manifests and journal segments on providers that failed authentication with the master key (ignored), by kind.",
        ),
        &["kind"],
    )
    .unwrap_or_else(|e| unreachable!("a constant metric definition is valid: {e}"))
});

/// Counts one metadata object that failed authentication (see [`FORGED_METADATA`]).
pub fn count_forged_metadata(kind: &str) {
    FORGED_METADATA.with_label_values(&[kind]).inc();
}

/// How many metadata objects of `kind` failed authentication in this process so far.
pub fn forged_metadata(kind: &str) -> u64 {
    FORGED_METADATA.with_label_values(&[kind]).get()
}

/// Market contracts this gateway refused because the provider's signed acceptance does not
/// match the contract the market shows (another key than the one that accepted), by what
/// became of them at the market (`terminated`, `terminate_failed`). Process-wide like
/// [`FORGED_METADATA`]: contracting runs before any one gateway's registry exists.
static REFUSED_CONTRACTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "sublet_gateway_market_contracts_refused_total",
            "Market contracts refused because the provider's signed acceptance does not match the contract the market shows, by outcome of ending them at the market.",
        ),
        &["outcome"],
    )
    .unwrap_or_else(|e| unreachable!("a constant metric definition is valid: {e}"))
});

/// The work of the ETag MD5 lanes uploads share ([`crate::datapath::etag`]), process-wide
/// like [`FORGED_METADATA`]: `calls` (hashing steps of up to 16 KiB a lane), `lanes` (lanes
/// filled, summed over the calls: `lanes / calls` is the mean fill), `bytes` (bytes hashed
/// in them).
static MD5_LANES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "sublet_gateway_etag_md5_lanes_total",
            "Work of the ETag MD5 lanes shared by uploads: hashing steps (calls), lanes filled summed over the steps (lanes; lanes/calls is the mean fill), bytes hashed (bytes).",
        ),
        &["count"],
    )
    .unwrap_or_else(|e| unreachable!("a constant metric definition is valid: {e}"))
});

/// Counts one hashing step of the shared MD5 lanes: `lanes` lanes filled, `bytes` hashed.
pub fn count_md5_lanes(lanes: u64, bytes: u64) {
    MD5_LANES.with_label_values(&["calls"]).inc();
    MD5_LANES.with_label_values(&["lanes"]).inc_by(lanes);
    MD5_LANES.with_label_values(&["bytes"]).inc_by(bytes);
}

/// What [`count_md5_lanes`] counted under `count` in this process so far.
pub fn md5_lanes(count: &str) -> u64 {
    MD5_LANES.with_label_values(&[count]).get()
}

/// Counts one refused contract (see [`REFUSED_CONTRACTS`]).
pub fn count_refused_contract(outcome: &str) {
    REFUSED_CONTRACTS.with_label_values(&[outcome]).inc();
}

/// How many contracts were refused with `outcome` in this process so far.
pub fn refused_contracts(outcome: &str) -> u64 {
    REFUSED_CONTRACTS.with_label_values(&[outcome]).get()
}

/// The gateway's metrics, in a registry of their own so several gateways can run in one
/// process (tests).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// S3 requests by operation and HTTP status.
    pub requests: IntCounterVec,
    /// Time to response headers by operation.
    pub latency: HistogramVec,
    /// Request body bytes by operation (as declared by the client).
    pub received_bytes: IntCounterVec,
    /// Response body bytes by operation (as declared by Content-Length).
    pub sent_bytes: IntCounterVec,
    /// Shards stored per provider.
    pub shard_writes: IntCounterVec,
    /// Shards read per provider.
    pub shard_reads: IntCounterVec,
    /// Failed shard calls per provider and call (`put`, `get`, `delete`).
    pub shard_failures: IntCounterVec,
    /// Stored versions per plan.
    pub plan_objects: IntGaugeVec,
    /// Logical bytes of stored versions per plan.
    pub plan_bytes: IntGaugeVec,
    /// Objects and logical bytes in each user's buckets (users are few: one series each).
    pub user_objects: IntGaugeVec,
    pub user_bytes: IntGaugeVec,
    /// Stored versions per plan and health class.
    pub plan_health_objects: IntGaugeVec,
    /// Objects per plan due for repair (`state` due, or waiting inside the grace period).
    pub repair_queue: IntGaugeVec,
    /// Age of the oldest loss among a plan's due objects.
    pub repair_oldest_seconds: IntGaugeVec,
    /// Objects repaired per plan.
    pub repaired_objects: IntCounterVec,
    /// Shards rebuilt and written per plan.
    pub rebuilt_shards: IntCounterVec,
    /// Bytes of rebuilt shards written per plan.
    pub rebuilt_bytes: IntCounterVec,
    /// Repairs that failed or lost a race, per plan and reason.
    pub repair_failures: IntCounterVec,
    /// Shard audits per provider and result (`pass`, `fail`).
    pub audits: IntCounterVec,
    /// Percent of a provider's audits passed since the gateway started.
    pub provider_score: IntGaugeVec,
    /// Unreferenced shards removed from providers.
    pub gc_deleted: IntCounterVec,
    /// Shards a scrub read whole, by provider and outcome.
    pub scrubbed_shards: IntCounterVec,
    /// Shard bytes a scrub read, by provider.
    pub scrubbed_bytes: IntCounterVec,
    /// Objects rewritten under their plan's changed settings, by plan.
    pub reencoded_objects: IntCounterVec,
    /// Objects of a plan still stored under its old settings (as of the last pass).
    pub reencode_pending: IntGaugeVec,
    /// Metadata journal segments, by result (`stored`, `failed`).
    pub journal_segments: IntCounterVec,
    /// Metadata changes in stored journal segments.
    pub journal_entries: IntCounterVec,
    /// Journal segment copies stored, by provider (also counted in `shard_writes`).
    pub journal_copies: IntCounterVec,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(format!("sublet_gateway_{name}"), help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(format!("sublet_gateway_{name}"), help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let requests = counter(
            "requests_total",
            "S3 requests by operation and HTTP status.",
            &["op", "status"],
        )?;
        let received_bytes = counter(
            "received_bytes_total",
            "Request body bytes by S3 operation.",
            &["op"],
        )?;
        let sent_bytes = counter(
            "sent_bytes_total",
            "Response body bytes by S3 operation.",
            &["op"],
        )?;
        let shard_writes = counter(
            "shard_writes_total",
            "Shards stored, by provider node id.",
            &["provider"],
        )?;
        let shard_reads = counter(
            "shard_reads_total",
            "Shards read, by provider node id.",
            &["provider"],
        )?;
        let shard_failures = counter(
            "shard_failures_total",
            "Failed shard calls by provider node id and call.",
            &["provider", "call"],
        )?;
        let plan_objects = gauge("plan_objects", "Stored object versions by plan.", &["plan"])?;
        let plan_bytes = gauge(
            "plan_bytes",
            "Logical bytes of stored object versions by plan.",
            &["plan"],
        )?;
        let user_objects = gauge(
            "user_objects",
            "Stored object versions in the buckets of each user (bucket owner).",
            &["user"],
        )?;
        let user_bytes = gauge(
            "user_bytes",
            "Logical bytes of stored object versions in the buckets of each user (bucket owner).",
            &["user"],
        )?;
        let plan_health_objects = gauge(
            "plan_health_objects",
            "Stored object versions by plan and health class (healthy, degraded, at_risk = exactly dataShards left, lost).",
            &["plan", "class"],
        )?;
        let repair_queue = gauge(
            "repair_queue_objects",
            "Objects below minHealthyShards by plan: state due (past the grace period), at_risk (due with only dataShards left) or waiting (inside the grace period).",
            &["plan", "state"],
        )?;
        let repair_oldest_seconds = gauge(
            "repair_oldest_queued_seconds",
            "Age of the oldest shard loss among a plan's objects due for repair.",
            &["plan"],
        )?;
        let repaired_objects = counter(
            "repaired_objects_total",
            "Objects whose lost shards were rebuilt, by plan.",
            &["plan"],
        )?;
        let rebuilt_shards = counter(
            "rebuilt_shards_total",
            "Shards rebuilt and written to new providers, by plan.",
            &["plan"],
        )?;
        let rebuilt_bytes = counter(
            "rebuilt_bytes_total",
            "Bytes of rebuilt shards written, by plan.",
            &["plan"],
        )?;
        let repair_failures = counter(
            "repair_failures_total",
            "Repairs that failed (unreadable, unplaceable, write failed) or lost a race to a change of the object, by plan and reason.",
            &["plan", "reason"],
        )?;
        let audits = counter(
            "audits_total",
            "Shard audits (a random slice verified against the hash recorded at write time) by provider and result.",
            &["provider", "result"],
        )?;
        let provider_score = gauge(
            "provider_score",
            "Percent of a provider's audits passed since the gateway started.",
            &["provider"],
        )?;
        let gc_deleted = counter(
            "gc_deleted_shards_total",
            "Shards no metadata referenced, removed from providers after the safety delay.",
            &["provider"],
        )?;
        let scrubbed_shards = counter(
            "scrubbed_shards_total",
            "Shards a scrub read whole and checked against the hash recorded at write time, by provider and outcome (intact, bad, unanswered).",
            &["provider", "outcome"],
        )?;
        let scrubbed_bytes = counter(
            "scrubbed_bytes_total",
            "Shard bytes read by scrubs, by provider.",
            &["provider"],
        )?;
        let reencoded_objects = counter(
            "reencoded_objects_total",
            "Objects rewritten under their plan's changed redundancy or encryption, by plan.",
            &["plan"],
        )?;
        let reencode_pending = gauge(
            "reencode_pending_objects",
            "Objects of a plan still stored under its old redundancy or encryption, after the last re-encode pass.",
            &["plan"],
        )?;
        let journal_segments = counter(
            "journal_segments_total",
            "Metadata journal segments (each a group of metadata changes), by result (stored, failed).",
            &["result"],
        )?;
        let journal_entries = counter(
            "journal_entries_total",
            "Metadata changes in journal segments stored on providers.",
            &[],
        )?;
        let journal_copies = counter(
            "journal_copies_total",
            "Copies of metadata journal segments stored, by provider node id (also counted in shard_writes_total).",
            &["provider"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "sublet_gateway_request_duration_seconds",
                "Time from request to response headers by S3 operation.",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.5, 14)?),
            &["op"],
        )?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(FORGED_METADATA.clone()))?;
        registry.register(Box::new(REFUSED_CONTRACTS.clone()))?;
        registry.register(Box::new(MD5_LANES.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            received_bytes,
            sent_bytes,
            shard_writes,
            shard_reads,
            shard_failures,
            plan_objects,
            plan_bytes,
            user_objects,
            user_bytes,
            plan_health_objects,
            repair_queue,
            repair_oldest_seconds,
            repaired_objects,
            rebuilt_shards,
            rebuilt_bytes,
            repair_failures,
            audits,
            provider_score,
            gc_deleted,
            scrubbed_shards,
            scrubbed_bytes,
            reencoded_objects,
            reencode_pending,
            journal_segments,
            journal_entries,
            journal_copies,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The S3 operation of a request, filled in by the access check (which s3s runs with the
/// resolved operation) and read by [`MeteredService`] once the response is ready.
#[derive(Clone, Default)]
pub struct OperationSlot(Arc<Mutex<Option<String>>>);

impl OperationSlot {
    pub fn set(&self, op: &str) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(op.to_owned());
    }

    pub fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
