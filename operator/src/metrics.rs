//! The operator's own metrics, served on `/metrics`: reconciles, failures and their duration
//! per kind.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Counters and histograms of the controllers.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles started, by kind.
    pub reconciles: IntCounterVec,
    /// Reconciles that failed, by kind and error label.
    pub failures: IntCounterVec,
    /// Reconcile duration in seconds, by kind.
    pub duration: HistogramVec,
    /// Rebuild Jobs created, by namespace and plan.
    pub repair_jobs: IntCounterVec,
}

impl Metrics {
    /// Fresh metrics in their own registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("sublet_operator_reconciles_total", "Reconciles started"),
            &["kind"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "sublet_operator_reconcile_failures_total",
                "Reconciles that failed",
            ),
            &["kind", "error"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "sublet_operator_reconcile_duration_seconds",
                "Time spent in one reconcile",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["kind"],
        )?;
        let repair_jobs = IntCounterVec::new(
            Opts::new("sublet_operator_repair_jobs_total", "Rebuild Jobs created"),
            &["namespace", "plan"],
        )?;
        for collector in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(duration.clone()),
            Box::new(repair_jobs.clone()),
        ] {
            registry.register(collector)?;
        }
        Ok(Metrics {
            registry,
            reconciles,
            failures,
            duration,
            repair_jobs,
        })
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn failures_show_up_by_kind() {
        let m = Metrics::new().unwrap();
        m.failures
            .with_label_values(&["ProviderPool", "kube"])
            .inc();
        m.reconciles.with_label_values(&["ProviderPool"]).inc();
        let text = m.render();
        assert!(
            text.contains(
                "sublet_operator_reconcile_failures_total{error=\"kube\",kind=\"ProviderPool\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("sublet_operator_reconciles_total{kind=\"ProviderPool\"} 1"),
            "{text}"
        );
    }
}
