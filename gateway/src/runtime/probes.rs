//! Providers: dialling them (pinned node ids, TLS, tokens), probing their free space and
//! health, and connecting the members of pools applied while running.

use super::*;

/// Longest a provider may take to answer a probe before it counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks every bucket member for a listing once; a bucket that answers counts as seen.
pub async fn probe_clouds(
    clouds: &[Arc<CloudBackend>],
    health: &HealthBoard,
) -> Vec<(String, bool)> {
    let calls = clouds.iter().map(|c| async move {
        let ok = match tokio::time::timeout(PROBE_TIMEOUT, c.probe()).await {
            Ok(Ok(())) => {
                health.record_success(c.node_id());
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(bucket = %c.target().bucket, error = %e.0, "bucket probe failed");
                health.record_failure(c.node_id());
                false
            }
            Err(_) => {
                tracing::warn!(bucket = %c.target().bucket, "bucket probe timed out");
                health.record_failure(c.node_id());
                false
            }
        };
        (c.node_id().to_owned(), ok)
    });
    futures::future::join_all(calls).await
}

/// Asks every provider for its free space once; unreachable ones count as failed. Returns
/// who answered.
pub async fn probe(
    providers: &[(String, ProviderClient)],
    health: &HealthBoard,
) -> Vec<(String, bool)> {
    let calls = providers.iter().map(|(node, client)| async move {
        let started = std::time::Instant::now();
        let ok = match tokio::time::timeout(PROBE_TIMEOUT, client.info()).await {
            Ok(Ok(info)) => {
                health.record_free(node, info.free_bytes);
                health.record_probe(node, Some(started.elapsed()));
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(provider = %node, error = %e, "provider probe failed");
                health.record_failure(node);
                health.record_probe(node, None);
                false
            }
            Err(_) => {
                tracing::warn!(provider = %node, "provider probe timed out");
                health.record_failure(node);
                health.record_probe(node, None);
                false
            }
        };
        (node.clone(), ok)
    });
    futures::future::join_all(calls).await
}

/// Probes every provider once and persists who answered, so shard health (and the grace
/// period) survives restarts.
pub async fn probe_and_record(
    providers: &[(String, ProviderClient)],
    health: &HealthBoard,
    meta: &Arc<dyn MetadataStore>,
) {
    probe_and_record_all(providers, &[], health, meta).await;
}

/// [`probe_and_record`] over providers and bucket members alike.
pub async fn probe_and_record_all(
    providers: &[(String, ProviderClient)],
    clouds: &[Arc<CloudBackend>],
    health: &HealthBoard,
    meta: &Arc<dyn MetadataStore>,
) {
    let (mut outcomes, buckets) =
        futures::future::join(probe(providers, health), probe_clouds(clouds, health)).await;
    outcomes.extend(buckets);
    let meta = Arc::clone(meta);
    let recorded = tokio::task::spawn_blocking(move || {
        // A provider no longer configured is never probed again: it counts as down from
        // now, so its shards are repaired elsewhere after the grace period.
        for node in meta.providers_seen()?.into_keys() {
            if !outcomes.iter().any(|(n, _)| *n == node) {
                outcomes.push((node, false));
            }
        }
        meta.record_probes(&outcomes, crate::node::health::now_ms())
    })
    .await;
    match recorded {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "recording provider probes failed"),
        Err(e) => tracing::warn!(error = %e, "recording provider probes failed"),
    }
}

/// Probes providers every `interval` (StorageGateway `spec.probeInterval`) until `stop`
/// changes.
pub fn spawn_probes(
    interval: Duration,
    providers: ProbeList,
    clouds: Vec<Arc<CloudBackend>>,
    health: Arc<HealthBoard>,
    meta: Arc<dyn MetadataStore>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {
                    let now = providers.read().map(|p| p.clone()).unwrap_or_default();
                    probe_and_record_all(&now, &clouds, &health, &meta).await;
                }
                _ = stop.changed() => return,
            }
        }
    })
}

/// The provider clients the probe loop asks, shared with the [`Dialer`] that adds to it.
pub type ProbeList = Arc<std::sync::RwLock<Vec<(String, ProviderClient)>>>;

/// Connects the providers of ProviderPools applied through the policy API while the gateway
/// runs: dials them as at start (pinned node ids, the provider token), adds them to the
/// gateway and the probe loop, records their pools and probes them once.
pub struct Dialer {
    pub(super) spec: StorageGatewaySpec,
    pub(super) identity: Arc<NodeIdentity>,
    pub(super) metrics: Metrics,
    pub(super) health: Arc<HealthBoard>,
    pub(super) meta: Arc<dyn MetadataStore>,
    pub(super) probes: ProbeList,
    /// Meters the providers of market contracts signed while running.
    pub(super) market_usage: Option<Arc<crate::runtime::market::MarketUsage>>,
}

impl Dialer {
    /// Connects every endpoint of `config` the gateway has no backend for yet; answers
    /// their node ids.
    pub async fn connect_new(
        &self,
        gateway: &Node,
        config: &Config,
    ) -> anyhow::Result<Vec<String>> {
        let new: Vec<ProviderEndpoint> = endpoints(config)?
            .into_iter()
            .filter(|e| gateway.backend(&e.site.node_id).is_none())
            .collect();
        self.connect_endpoints(gateway, new).await
    }

    /// Connects `new` providers (ones the gateway knows already are skipped); answers their
    /// node ids.
    pub async fn connect_endpoints(
        &self,
        gateway: &Node,
        new: Vec<ProviderEndpoint>,
    ) -> anyhow::Result<Vec<String>> {
        let new: Vec<ProviderEndpoint> = new
            .into_iter()
            .filter(|e| gateway.backend(&e.site.node_id).is_none())
            .collect();
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let (mut backends, clients) = connect(
            &self.spec,
            &self.identity,
            &new,
            &self.metrics,
            &self.health,
        )?;
        if let Some(usage) = &self.market_usage {
            backends = backends
                .into_iter()
                .map(|b| crate::runtime::market::MeteredBackend::wrap(b, usage))
                .collect();
        }
        let pools: Vec<(String, String)> = new
            .iter()
            .map(|e| (e.site.node_id.clone(), e.site.pool.clone()))
            .collect();
        let meta = Arc::clone(&self.meta);
        tokio::task::spawn_blocking(move || {
            meta.record_pools(&pools, crate::node::health::now_ms())
        })
        .await?
        .map_err(|e| anyhow::anyhow!("recording provider pools: {e}"))?;
        gateway.add_providers(backends);
        if let Ok(mut list) = self.probes.write() {
            list.extend(clients.iter().cloned());
        }
        let outcomes = probe(&clients, &self.health).await;
        let meta = Arc::clone(&self.meta);
        tokio::task::spawn_blocking(move || {
            meta.record_probes(&outcomes, crate::node::health::now_ms())
        })
        .await?
        .map_err(|e| anyhow::anyhow!("recording provider probes: {e}"))?;
        let ids: Vec<String> = new.iter().map(|e| e.site.node_id.clone()).collect();
        tracing::info!(providers = ?ids, "new providers connected");
        Ok(ids)
    }
}

#[async_trait::async_trait]
impl crate::admin::policy::ProviderDialer for Dialer {
    async fn connect_new(&self, node: &Node, config: &Config) -> anyhow::Result<Vec<String>> {
        Dialer::connect_new(self, node, config).await
    }
}

/// Backends for the bucket members of every pool.
pub(super) fn connect_clouds(config: &Config) -> anyhow::Result<Vec<Arc<CloudBackend>>> {
    cloud_members(config)?
        .into_iter()
        .map(|(site, target)| {
            CloudBackend::new(target)
                .map(Arc::new)
                .map_err(|e| anyhow::anyhow!("ProviderPool {}: {e}", site.pool))
        })
        .collect()
}

/// Provider clients for `endpoints`, and the shard backends over them.
#[allow(clippy::type_complexity)]
pub(super) fn connect(
    spec: &StorageGatewaySpec,
    identity: &Arc<NodeIdentity>,
    endpoints: &[ProviderEndpoint],
    metrics: &Metrics,
    health: &Arc<HealthBoard>,
) -> anyhow::Result<(Vec<Arc<dyn ShardBackend>>, Vec<(String, ProviderClient)>)> {
    let client_config = ClientConfig {
        identity: Arc::clone(identity),
        token: spec.provider_token.clone(),
    };
    let mut backends: Vec<Arc<dyn ShardBackend>> = Vec::with_capacity(endpoints.len());
    let mut clients = Vec::with_capacity(endpoints.len());
    for e in endpoints {
        let client = ProviderClient::new(&e.address, e.node_id, &client_config)
            .map_err(|err| {
                anyhow::anyhow!(
                    "ProviderPool {}: endpoint {}: {}",
                    e.site.pool,
                    e.name,
                    err.message()
                )
            })?
            // A provider on a Unix socket hands over the files of shards the gateway
            // authenticates itself (short-circuit reads) and takes whole shards as sealed
            // memfds (short-circuit writes), unless it has them turned off.
            .with_short_circuit_reads(true)
            .with_short_circuit_writes(true);
        clients.push((e.site.node_id.clone(), client.clone()));
        let backend: Arc<dyn ShardBackend> = Arc::new(ProviderBackend::new(client));
        backends.push(ObservedBackend::wrap(backend, metrics, health));
    }
    Ok((backends, clients))
}
