//! Metering: what the gateway uses of each contracted provider, for its usage receipts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use sublet_market_api::contracts::Contract;
use sublet_market_api::meter::Meter;
use sublet_market_api::receipts::{GIB, HOURS_PER_MONTH};
use sublet_provider::client::METERED_AT;

use super::*;
use crate::datapath::stripes::{BackendError, ShardBackend};

/// What the gateway uses of each contracted provider, metered for its usage receipts: the
/// bytes its metadata places there (sampled), the bytes read back and the audits.
pub struct MarketUsage {
    pub(super) meter: Mutex<Meter>,
    /// Contract → what its latest receipt costs, the estimate of what the next period will.
    pub(super) latest_charge: Mutex<HashMap<String, i64>>,
    /// Provider node id → the contract its usage is reported on.
    pub(super) contracts: RwLock<HashMap<String, String>>,
    pub(super) path: PathBuf,
}

impl MarketUsage {
    /// The meter saved in `data_dir`, for the providers `contracted`.
    pub fn load(data_dir: &Path, contracted: &[(String, Contracted)]) -> anyhow::Result<Self> {
        let path = data_dir.join(METER_FILE);
        let meter = Meter::load_or_start_afresh(&path);
        let mut contracts = HashMap::new();
        for (_, c) in contracted {
            if let Some(node) = &c.endpoint.node_id {
                // A provider contracted twice reports on its oldest contract, as it does.
                contracts.entry(node.clone()).or_insert(c.contract.clone());
            }
        }
        Ok(Self {
            meter: Mutex::new(meter),
            latest_charge: Mutex::new(HashMap::new()),
            contracts: RwLock::new(contracts),
            path,
        })
    }

    pub(super) fn meter(&self) -> std::sync::MutexGuard<'_, Meter> {
        self.meter.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn contract_of(&self, node: &str) -> Option<String> {
        self.contracts.read().ok()?.get(node).cloned()
    }

    /// Whether `node` is a contracted provider whose use is metered.
    pub fn meters(&self, node: &str) -> bool {
        self.contract_of(node).is_some()
    }

    /// Counts `bytes` read from `node` under the unix second `at`.
    pub fn egress(&self, node: &str, at: i64, bytes: u64) {
        if let Some(c) = self.contract_of(node) {
            self.meter().add_egress(&c, at, bytes);
        }
    }

    /// Counts a shard of `node` found bad outside an audit (a read, a write's
    /// acknowledgement, a scrub) under `at`: the demander's receipt shows it.
    pub fn bad_shard(&self, node: &str, at: i64) {
        if let Some(c) = self.contract_of(node) {
            self.meter().add_failed_shard(&c, at);
        }
    }

    /// Counts an audit of `node` under `at`.
    pub fn audit(&self, node: &str, at: i64, passed: bool) {
        if let Some(c) = self.contract_of(node) {
            self.meter().add_audit(&c, at, passed);
        }
    }
}

/// A contracted provider's backend whose reads and audits are metered.
pub struct MeteredBackend {
    inner: Arc<dyn ShardBackend>,
    usage: Arc<MarketUsage>,
}

impl MeteredBackend {
    pub fn wrap(inner: Arc<dyn ShardBackend>, usage: &Arc<MarketUsage>) -> Arc<dyn ShardBackend> {
        if usage.meters(inner.node_id()) {
            Arc::new(Self {
                inner,
                usage: Arc::clone(usage),
            })
        } else {
            inner
        }
    }
}

#[async_trait]
impl ShardBackend for MeteredBackend {
    fn node_id(&self) -> &str {
        self.inner.node_id()
    }

    async fn put(
        &self,
        shard_id: &str,
        data: Bytes,
        hash: &[u8; 32],
    ) -> Result<[u8; 32], BackendError> {
        self.inner.put(shard_id, data, hash).await
    }

    async fn get(&self, shard_id: &str) -> Result<Bytes, BackendError> {
        // The provider is told the second the read counts under, so both receipts put it in
        // the same period even when it straddles a period's end.
        let at = sublet_market_api::unix_now();
        let result = METERED_AT.scope(at, self.inner.get(shard_id)).await;
        if let Ok(data) = &result {
            self.usage.egress(self.node_id(), at, data.len() as u64);
        }
        result
    }

    async fn delete(&self, shard_id: &str) -> Result<(), BackendError> {
        self.inner.delete(shard_id).await
    }

    async fn audit(
        &self,
        shard_id: &str,
        offset: u64,
        len: u64,
        hash: &[u8; 32],
    ) -> Result<(), BackendError> {
        let at = sublet_market_api::unix_now();
        let result = METERED_AT
            .scope(at, self.inner.audit(shard_id, offset, len, hash))
            .await;
        // Counted as the audit loop counts them: an unanswered audit is neither.
        match &result {
            Ok(()) => self.usage.audit(self.node_id(), at, true),
            Err(e) if e.audit_failed() || e.shard_gone() => {
                self.usage.audit(self.node_id(), at, false);
            }
            Err(_) => {}
        }
        result
    }

    async fn list(&self) -> Result<Option<Vec<(String, i64)>>, BackendError> {
        self.inner.list().await
    }
}

/// Credits one receipt period of storage costs at the contract's full reservation.
pub fn period_prepayment(c: &Contract) -> i64 {
    let gib = c.reserved_bytes.div_ceil(GIB);
    let hours = (c.period_secs.max(1) as u64).div_ceil(3600);
    let storage = u128::from(gib) * u128::from(hours) * c.price_per_gib_month.max(0) as u128
        / u128::from(HOURS_PER_MONTH);
    i64::try_from(storage).unwrap_or(i64::MAX).max(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::datapath::placement::{BadShardSink, HealthBoard};

    /// Issue 27: a rented provider's shards found bad by reads, scrubs or write
    /// acknowledgements reach the receipt the gateway signs for its contract.
    #[test]
    fn shards_found_bad_reach_the_receipt_of_the_providers_contract() {
        let dir = tempfile::tempdir().unwrap();
        let usage = Arc::new(MarketUsage {
            meter: Mutex::new(Meter::default()),
            latest_charge: Mutex::new(HashMap::new()),
            contracts: RwLock::new(HashMap::from([("liar".to_owned(), "ct_1".to_owned())])),
            path: dir.path().join(METER_FILE),
        });
        let now = sublet_market_api::unix_now();
        usage.meter().track("ct_1", now - 100, 10, 1);
        let health = HealthBoard::default();
        let meter = Arc::clone(&usage);
        health
            .on_bad_shard(BadShardSink(Box::new(move |node| {
                meter.bad_shard(node, now - 95)
            })))
            .unwrap();
        health.record_bad_shard("liar");
        health.record_bad_shard("liar");
        // An honest provider outside the market, and a failed audit (metered as an audit
        // by the backend, not here), add nothing.
        health.record_bad_shard("own-disk");
        health.record_audit("liar", false);
        usage.meter().sample("ct_1", now, 0);
        let due = usage.meter().due(0);
        assert_eq!(
            due.iter()
                .map(|(c, r)| (c.as_str(), r.period_start, r.shards_failed, r.audits_failed))
                .collect::<Vec<_>>(),
            vec![("ct_1", now - 100, 2, 0)]
        );
        assert!(
            health.score("liar").unwrap() < 50,
            "its health counts them too"
        );
    }
}
