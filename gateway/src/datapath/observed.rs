//! A shard backend that counts calls per provider and tells placement which providers fail.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::placement::HealthBoard;
use super::stripes::{BackendError, ShardBackend, check_acknowledged};
use crate::metrics::Metrics;

/// A shard backend that counts calls per provider and tells placement which providers fail.
pub struct ObservedBackend {
    inner: Arc<dyn ShardBackend>,
    metrics: Metrics,
    health: Arc<HealthBoard>,
}

impl ObservedBackend {
    pub fn wrap(
        inner: Arc<dyn ShardBackend>,
        metrics: &Metrics,
        health: &Arc<HealthBoard>,
    ) -> Arc<dyn ShardBackend> {
        Arc::new(ObservedBackend {
            inner,
            metrics: metrics.clone(),
            health: Arc::clone(health),
        })
    }

    fn outcome<T>(&self, call: &str, result: &Result<T, BackendError>) {
        let node = self.inner.node_id();
        match result {
            Ok(_) => self.health.record_success(node),
            Err(e) => {
                self.metrics
                    .shard_failures
                    .with_label_values(&[node, call])
                    .inc();
                // A missing shard is an answer, not a sick provider.
                if !e.0.contains("NotFound") {
                    self.health.record_failure(node);
                }
                // Out of space, whatever its free space said: believe it no more for now.
                if call == "put" && e.0.contains("ResourceExhausted") {
                    self.health.record_out_of_space(node);
                }
            }
        }
    }
}

#[async_trait]
impl ShardBackend for ObservedBackend {
    fn node_id(&self) -> &str {
        self.inner.node_id()
    }

    async fn put(
        &self,
        shard_id: &str,
        data: Bytes,
        hash: &[u8; 32],
    ) -> Result<[u8; 32], BackendError> {
        // An acknowledgement of another hash is a failed write, and a mark against the
        // provider's health like any other.
        let result = self
            .inner
            .put(shard_id, data, hash)
            .await
            .and_then(|acked| {
                check_acknowledged(self.node_id(), shard_id, hash, &acked).map(|()| acked)
            });
        self.outcome("put", &result);
        // It claims to hold bytes other than those it was sent: a lie, counted like a
        // failed audit (3 in a row and it gets no new shards).
        if let Err(e) = &result
            && e.hash_mismatch()
        {
            self.health.record_bad_shard(self.node_id());
        }
        if result.is_ok() {
            self.metrics
                .shard_writes
                .with_label_values(&[self.node_id()])
                .inc();
        }
        result
    }

    async fn get(&self, shard_id: &str) -> Result<Bytes, BackendError> {
        let result = self.inner.get(shard_id).await;
        self.outcome("get", &result);
        if result.is_ok() {
            self.metrics
                .shard_reads
                .with_label_values(&[self.node_id()])
                .inc();
        }
        result
    }

    async fn delete(&self, shard_id: &str) -> Result<(), BackendError> {
        let result = self.inner.delete(shard_id).await;
        self.outcome("delete", &result);
        result
    }

    async fn audit(
        &self,
        shard_id: &str,
        offset: u64,
        len: u64,
        hash: &[u8; 32],
    ) -> Result<(), BackendError> {
        // Audit outcomes count in the provider's audit record, not its reachability.
        self.inner.audit(shard_id, offset, len, hash).await
    }

    async fn list(&self) -> Result<Option<Vec<(String, i64)>>, BackendError> {
        self.inner.list().await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::datapath::stripes::put_shard;

    /// A provider that stores nothing and fails as told.
    #[derive(Default)]
    struct Fake {
        fail: Option<&'static str>,
        /// Acknowledges every write with a hash of its own.
        lies: bool,
    }

    #[async_trait]
    impl ShardBackend for Fake {
        fn node_id(&self) -> &str {
            "n1"
        }
        async fn put(&self, _: &str, _: Bytes, hash: &[u8; 32]) -> Result<[u8; 32], BackendError> {
            match self.fail {
                Some(e) => Err(BackendError(e.into())),
                None if self.lies => Ok([0; 32]),
                None => Ok(*hash),
            }
        }
        async fn get(&self, _: &str) -> Result<Bytes, BackendError> {
            match self.fail {
                Some(e) => Err(BackendError(e.into())),
                None => Ok(Bytes::new()),
            }
        }
        async fn delete(&self, _: &str) -> Result<(), BackendError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn shard_calls_are_counted_per_provider_and_failures_mark_it_unhealthy() {
        let metrics = Metrics::new().unwrap();
        let health = Arc::new(HealthBoard::default());
        let ok = ObservedBackend::wrap(Arc::new(Fake::default()), &metrics, &health);
        put_shard(ok.as_ref(), "s", Bytes::new()).await.unwrap();
        put_shard(ok.as_ref(), "s", Bytes::new()).await.unwrap();
        ok.get("s").await.unwrap();
        assert_eq!(metrics.shard_writes.with_label_values(&["n1"]).get(), 2);
        assert_eq!(metrics.shard_reads.with_label_values(&["n1"]).get(), 1);
        assert!(health.healthy("n1"));

        let missing = Fake {
            fail: Some("provider n1: get: NotFound: no such shard"),
            ..Fake::default()
        };
        let missing = ObservedBackend::wrap(Arc::new(missing), &metrics, &health);
        assert!(missing.get("s").await.is_err());
        assert!(
            health.healthy("n1"),
            "a missing shard is not a sick provider"
        );

        let down = Fake {
            fail: Some("provider n1: put: Unavailable: connection refused"),
            ..Fake::default()
        };
        let down = ObservedBackend::wrap(Arc::new(down), &metrics, &health);
        assert!(put_shard(down.as_ref(), "s", Bytes::new()).await.is_err());
        assert!(!health.healthy("n1"));
        assert_eq!(
            metrics
                .shard_failures
                .with_label_values(&["n1", "put"])
                .get(),
            1
        );
        assert_eq!(metrics.shard_writes.with_label_values(&["n1"]).get(), 2);
        let text = metrics.render();
        assert!(
            text.contains("sublet_gateway_shard_failures_total{call=\"put\",provider=\"n1\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_write_refused_for_space_zeroes_the_free_space_it_claimed() {
        let metrics = Metrics::new().unwrap();
        let health = Arc::new(HealthBoard::default());
        health.record_free("n1", 1 << 50);
        let full = Fake {
            fail: Some("provider n1: put: ResourceExhausted: capacity exhausted"),
            ..Fake::default()
        };
        let full = ObservedBackend::wrap(Arc::new(full), &metrics, &health);
        assert!(put_shard(full.as_ref(), "s", Bytes::new()).await.is_err());
        assert_eq!(health.free_bytes("n1"), Some(0));
    }

    #[tokio::test]
    async fn an_acknowledgement_of_another_hash_is_a_failed_write() {
        let metrics = Metrics::new().unwrap();
        let health = Arc::new(HealthBoard::default());
        let liar = Fake {
            lies: true,
            ..Fake::default()
        };
        let liar = ObservedBackend::wrap(Arc::new(liar), &metrics, &health);
        let err = put_shard(liar.as_ref(), "v.0.3", Bytes::from_static(b"shard"))
            .await
            .unwrap_err();
        assert!(err.hash_mismatch(), "{err}");
        assert!(
            err.0.contains("provider n1") && err.0.contains("shard v.0.3"),
            "{err}"
        );
        assert!(!health.healthy("n1"), "a liar is marked, like a failed put");
        assert_eq!(
            health.score("n1"),
            Some(0),
            "and its lie counts as a failed audit"
        );
        assert_eq!(
            metrics
                .shard_failures
                .with_label_values(&["n1", "put"])
                .get(),
            1
        );
        assert_eq!(metrics.shard_writes.with_label_values(&["n1"]).get(), 0);
    }
}
