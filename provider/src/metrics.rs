//! Prometheus metrics of one provider, in a registry of its own so several
//! providers can run in one process.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The outcomes of `sublet_provider_audits_total`, in the order they are exported.
pub const AUDIT_OUTCOMES: [&str; 4] = ["answered", "not_found", "corrupt", "error"];

/// The provider's metrics; names start with `sublet_provider_`.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub shards: IntGauge,
    pub used_bytes: IntGauge,
    pub free_bytes: IntGauge,
    pub capacity_bytes: IntGauge,
    /// Requests by gRPC method and status code.
    pub requests: IntCounterVec,
    /// Shard bytes by method (in for PutShard, out for GetShard and Audit).
    pub bytes: IntCounterVec,
    /// Request latency by method.
    pub latency: HistogramVec,
    /// Corrupt shards detected on read or audit.
    pub corruptions: IntCounter,
    /// Audits answered, by outcome.
    pub audits: IntCounterVec,
    /// Whole-shard reads whose caller asked to skip the hash check (`skip_hash_check`: it
    /// authenticates the bytes itself); shards over 16 MiB are checked anyway.
    pub unchecked_reads: IntCounter,
    /// Shard files handed to a gateway on the Unix socket to read itself (short-circuit
    /// reads, see [`crate::shortcircuit`]).
    pub short_circuit_reads: IntCounter,
    /// Shards stored from a sealed memfd a gateway on the Unix socket handed over
    /// (short-circuit writes, see [`crate::shortcircuit`]).
    pub short_circuit_writes: IntCounter,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(format!("sublet_provider_{name}"), help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let shards = gauge("shards", "Shards stored.")?;
        let used_bytes = gauge("used_bytes", "Bytes used on disk by shards.")?;
        let free_bytes = gauge("free_bytes", "Bytes still available for shards.")?;
        let capacity_bytes = gauge(
            "capacity_bytes",
            "Usable capacity (capacity minus reserve).",
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "sublet_provider_requests_total",
                "gRPC requests by method and code.",
            ),
            &["method", "code"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "sublet_provider_bytes_total",
                "Shard bytes transferred by method.",
            ),
            &["method"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "sublet_provider_request_duration_seconds",
                "gRPC request latency by method.",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.5, 14)?),
            &["method"],
        )?;
        let corruptions = IntCounter::new(
            "sublet_provider_corruptions_total",
            "Corrupt shards detected (never served).",
        )?;
        let audits = IntCounterVec::new(
            Opts::new(
                "sublet_provider_audits_total",
                "Audits answered by outcome.",
            ),
            &["outcome"],
        )?;
        let unchecked_reads = IntCounter::new(
            "sublet_provider_unchecked_reads_total",
            "Whole-shard reads asked to skip the hash check (the caller authenticates the bytes).",
        )?;
        registry.register(Box::new(unchecked_reads.clone()))?;
        let short_circuit_reads = IntCounter::new(
            "sublet_provider_short_circuit_reads_total",
            "Shard files handed to a gateway on the Unix socket to read itself (short-circuit reads).",
        )?;
        registry.register(Box::new(short_circuit_reads.clone()))?;
        let short_circuit_writes = IntCounter::new(
            "sublet_provider_short_circuit_writes_total",
            "Shards stored from a sealed memfd a gateway on the Unix socket handed over (short-circuit writes).",
        )?;
        registry.register(Box::new(short_circuit_writes.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(corruptions.clone()))?;
        registry.register(Box::new(audits.clone()))?;
        // Every outcome is exported from the start, at 0: `increase()` over a series that
        // appears with its first count misses that count, and the first failed audit of a
        // provider would never raise the SubletAuditsFailing alert.
        for outcome in AUDIT_OUTCOMES {
            audits.with_label_values(&[outcome]);
        }
        Ok(Metrics {
            registry,
            shards,
            used_bytes,
            free_bytes,
            capacity_bytes,
            requests,
            bytes,
            latency,
            corruptions,
            audits,
            unchecked_reads,
            short_circuit_reads,
            short_circuit_writes,
        })
    }

    pub fn set_usage(&self, usage: crate::store::Usage) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.shards.set(clamp(usage.shards));
        self.used_bytes.set(clamp(usage.used));
        self.free_bytes.set(clamp(usage.free));
        self.capacity_bytes.set(clamp(usage.capacity));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_audit_outcome_is_exported_at_zero_from_the_start() {
        let text = Metrics::new().unwrap().render();
        for outcome in AUDIT_OUTCOMES {
            let line = format!("sublet_provider_audits_total{{outcome=\"{outcome}\"}} 0");
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(
            text.lines()
                .any(|l| l == "sublet_provider_corruptions_total 0"),
            "{text}"
        );
    }
}
