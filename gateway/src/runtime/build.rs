//! Building a gateway node from a configuration: plans, providers, placement, metadata,
//! journal and market contracts, before anything is served.

use super::*;

/// A gateway built from the file but not listening yet: what `sublet serve` runs and
/// `sublet repair` repairs with.
pub struct Built {
    pub gateway: Arc<Node>,
    pub metrics: Metrics,
    pub health: Arc<HealthBoard>,
    /// The gateway spec with the overrides applied.
    pub spec: StorageGatewaySpec,
    pub endpoints: Vec<ProviderEndpoint>,
    pub paths: StatePaths,
    pub identity: NodeId,
    /// The gateway's node key, which it dials providers with.
    pub node_key: Arc<NodeIdentity>,
    /// Clients to probe providers with, by node id.
    pub clients: Vec<(String, ProviderClient)>,
    /// Bucket members of the pools.
    pub clouds: Vec<Arc<CloudBackend>>,
    /// Reports the use of market providers and keeps market pools contracted, when the
    /// config has market pools.
    pub market_reporter: Option<crate::runtime::market::UsageReporter>,
    /// Meters the use of market providers.
    pub market_usage: Option<Arc<crate::runtime::market::MarketUsage>>,
}

/// How often and how fast to scrub: the tightest schedule any plan names.
pub fn scrub_policy(config: &Config) -> crate::upkeep::scrub::ScrubPolicy {
    crate::upkeep::scrub::ScrubPolicy::tightest(
        config
            .plans
            .values()
            .filter_map(|p| p.spec.schedule.as_ref())
            .filter_map(|s| config.schedules.get(s))
            .map(|s| &s.spec.scrub),
    )
}

/// How often replicas on one database look for policies another one applied.
pub const POLICY_SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// Opens the state `config` describes, dials every provider and probes them once.
/// How long a starting gateway waits for market providers to accept its proposals.
pub(super) const MARKET_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn build(config: &Config, overrides: &Overrides) -> anyhow::Result<Built> {
    let Some(gateway_resource) = config.gateway() else {
        bail!(
            "the file must hold exactly one StorageGateway (found {}); sublet serve runs one gateway",
            config.gateways.len()
        );
    };
    let spec = overrides.apply(&gateway_resource.spec)?;
    let paths = state_paths(&spec, overrides.data_dir.as_deref())?;
    std::fs::create_dir_all(&paths.data_dir)
        .with_context(|| format!("creating {}", paths.data_dir.display()))?;
    let plans = plans(config, &spec.default_plan)?;
    let master = Arc::new(MasterKey::load_or_create(&paths.master_key)?);
    // Replicas and rebuild Jobs sharing the master key are one node, even on empty volumes.
    let identity = Arc::new(NodeIdentity::load_or_derive(
        &paths.identity_dir,
        Some(master.node_seed()),
    )?);
    let (with_market, contracted) = crate::runtime::market::with_contracts(
        config,
        &identity,
        &paths.data_dir,
        MARKET_WAIT,
        crate::runtime::market::Contracting::Propose,
    )
    .await?;
    let config = &with_market;
    let endpoints = endpoints(config)?;

    let metrics = Metrics::new()?;
    let health = Arc::new(HealthBoard::default());
    let (mut backends, clients) = connect(&spec, &identity, &endpoints, &metrics, &health)?;
    // Placement weighs rented providers by their market rating, refreshed as usage is reported.
    for (_, c) in &contracted {
        if let Some(node) = &c.endpoint.node_id {
            health.record_market_score(node, c.score);
        }
    }
    let market_pools: std::collections::BTreeMap<String, sublet_crds::MarketPool> = config
        .pools
        .iter()
        .filter_map(|(name, p)| Some((name.clone(), p.spec.market.clone()?)))
        .collect();
    let market_usage = if market_pools.is_empty() {
        None
    } else {
        let usage = Arc::new(crate::runtime::market::MarketUsage::load(
            &paths.data_dir,
            &contracted,
        )?);
        backends = backends
            .into_iter()
            .map(|b| crate::runtime::market::MeteredBackend::wrap(b, &usage))
            .collect();
        // Shards a rented provider is caught lying about show on the demander's receipts.
        let meter = Arc::clone(&usage);
        let _ = health.on_bad_shard(crate::datapath::placement::BadShardSink(Box::new(
            move |node| meter.bad_shard(node, sublet_market_api::unix_now()),
        )));
        Some(usage)
    };
    let clouds = connect_clouds(config)?;
    backends.extend(
        clouds.iter().map(|c| {
            ObservedBackend::wrap(Arc::clone(c) as Arc<dyn ShardBackend>, &metrics, &health)
        }),
    );
    let meta = open_metadata(&spec, &paths.metadata).await?;
    // A store of this gateway's own (SQLite) is journaled to the providers, so losing its
    // disk loses no acknowledged change; a shared database is its own durability.
    let journal = (!meta.shared()).then(|| crate::meta::journal::Journal::new(Arc::clone(&master)));
    let meta: Arc<dyn MetadataStore> = match &journal {
        Some(j) => Arc::new(crate::meta::journal::JournaledStore::new(
            meta,
            Arc::clone(j),
        )),
        None => meta,
    };
    let gateway = Arc::new(
        Node::new(Arc::clone(&meta), master, plans, backends)?
            .with_journal(journal)
            .with_placement(topology(config, &endpoints), Arc::clone(&health))?
            .with_rebuild(rebuild_policies(config))
            .with_lifecycle(lifecycle_rules(config))
            .with_audit(audit_policy(config)),
    );
    let pools: Vec<(String, String)> = endpoints
        .iter()
        .map(|e| (e.site.node_id.clone(), e.site.pool.clone()))
        .chain(
            crate::node::config::cloud_sites(config)
                .into_iter()
                .map(|(site, _)| (site.node_id, site.pool)),
        )
        .collect();
    meta.record_pools(&pools, crate::node::health::now_ms())
        .map_err(|e| anyhow::anyhow!("recording provider pools: {e}"))?;
    probe_and_record_all(&clients, &clouds, &health, &meta).await;
    let market_reporter = match &market_usage {
        Some(usage) => Some(
            crate::runtime::market::UsageReporter::new(
                &identity,
                &contracted,
                Arc::clone(usage),
                Arc::clone(&meta),
                Arc::clone(&health),
            )?
            .for_pools(market_pools, paths.data_dir.clone()),
        ),
        None => None,
    };
    Ok(Built {
        market_reporter,
        market_usage,
        gateway,
        metrics,
        health,
        spec,
        endpoints,
        paths,
        identity: identity.node_id(),
        node_key: identity,
        clients,
        clouds,
    })
}
