//! `sublet serve --config sublet.yaml`: a gateway run from the standalone YAML (the same kinds
//! as the custom resources): providers from ProviderPool endpoints, plans from StoragePlans,
//! keys, addresses and state paths from the StorageGateway.

pub mod dev;
pub mod market;
pub mod recover;
pub mod repair;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sublet_crds::{Config, StorageGatewaySpec};
use sublet_provider::client::{ClientConfig, ProviderClient};
use sublet_provider::identity::{NodeId, NodeIdentity};
use tokio::net::TcpListener;

use crate::datapath::cloud::CloudBackend;
use crate::datapath::codec::MasterKey;
use crate::datapath::observed::ObservedBackend;
use crate::datapath::placement::HealthBoard;
use crate::datapath::provider::ProviderBackend;
use crate::datapath::stripes::ShardBackend;
use crate::meta::{MetadataStore, PostgresStore, SqliteStore};
use crate::metrics::Metrics;
use crate::node::Node;
use crate::node::config::{
    ProviderEndpoint, audit_policy, cloud_members, endpoints, lifecycle_rules, plans,
    rebuild_policies, topology,
};
use crate::s3::auth::KeyRing;
use crate::s3::http::MeteredService;

/// The S3 address when the gateway spec names none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
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

/// What the command line and environment add to the file: how a Kubernetes pod passes
/// secrets the operator keeps out of the rendered config.
#[derive(Clone, Default)]
pub struct Overrides {
    /// Wins over `spec.dataDir`.
    pub data_dir: Option<PathBuf>,
    /// Wins over `spec.providerToken`.
    pub provider_token: Option<String>,
    /// One more key, allowed everything: (access key, secret key).
    pub full_access_key: Option<(String, String)>,
    /// Wins over `spec.adminListen`.
    pub admin_listen: Option<SocketAddr>,
    /// The bearer token of the admin API (actions and policies); when `None`, the data
    /// directory's `admin.token` (created when missing).
    pub admin_token: Option<String>,
    /// The policies belong to the Kubernetes operator: the policy API refuses writes.
    pub read_only_policies: bool,
}

impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overrides")
            .field("data_dir", &self.data_dir)
            .field("admin_listen", &self.admin_listen)
            .finish_non_exhaustive()
    }
}

impl Overrides {
    /// The gateway spec with the overrides applied.
    pub fn apply(&self, spec: &StorageGatewaySpec) -> anyhow::Result<StorageGatewaySpec> {
        let mut spec = spec.clone();
        if let Some(token) = &self.provider_token {
            spec.provider_token = Some(token.clone());
        }
        if let Some(addr) = self.admin_listen {
            spec.admin_listen = Some(addr.to_string());
        }
        if let Some((access_key, secret_key)) = &self.full_access_key {
            if spec.credentials.iter().any(|c| &c.access_key == access_key) {
                bail!(
                    "access key {access_key} is both in spec.credentials and given on the command line or environment"
                );
            }
            if secret_key.is_empty() {
                bail!(
                    "access key {access_key}: the secret key given on the command line or environment is empty"
                );
            }
            spec.credentials.push(sublet_crds::GatewayCredential {
                access_key: access_key.clone(),
                secret_key: secret_key.clone(),
                secret_key_file: None,
                secret_key_env: None,
                buckets: Vec::new(),
            });
        }
        Ok(spec)
    }
}

/// Opens the store `spec.metadata` names: PostgreSQL at the URL in `postgres.urlEnv`, or the
/// SQLite file at `sqlite_path`.
pub async fn open_metadata(
    spec: &StorageGatewaySpec,
    sqlite_path: &Path,
) -> anyhow::Result<Arc<dyn MetadataStore>> {
    if let Some(postgres) = &spec.metadata.postgres {
        let var = postgres.url_env().to_owned();
        let url = std::env::var(&var).map_err(|_| {
            anyhow::anyhow!(
                "StorageGateway spec.metadata.postgres: environment variable {var} (spec.metadata.postgres.urlEnv) is not set; set it to postgres://user:password@host:5432/dbname"
            )
        })?;
        let store = tokio::task::spawn_blocking(move || PostgresStore::open(&url))
            .await
            .context("opening the PostgreSQL metadata store")?
            .map_err(|e| anyhow::anyhow!("spec.metadata.postgres (URL from {var}): {e}"))?;
        tracing::info!(store = ?store, "metadata in postgresql");
        return Ok(Arc::new(store));
    }
    if let Some(parent) = sqlite_path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let path = sqlite_path.to_owned();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
        .await
        .context("opening the SQLite metadata store")?
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", sqlite_path.display()))?;
    Ok(Arc::new(store))
}

/// Files and directories of a standalone gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatePaths {
    pub data_dir: PathBuf,
    pub metadata: PathBuf,
    pub master_key: PathBuf,
    /// The gateway's ed25519 identity, presented to providers.
    pub identity_dir: PathBuf,
}

/// State paths from the gateway spec; `data_dir` (the `--data-dir` flag) wins over
/// `spec.dataDir`.
pub fn state_paths(
    spec: &StorageGatewaySpec,
    data_dir: Option<&Path>,
) -> anyhow::Result<StatePaths> {
    let Some(data_dir) = data_dir
        .map(Path::to_path_buf)
        .or_else(|| spec.data_dir.as_ref().map(PathBuf::from))
    else {
        bail!("no data directory: set spec.dataDir in the StorageGateway or pass --data-dir");
    };
    let metadata = spec
        .metadata
        .sqlite
        .as_ref()
        .and_then(|s| s.path.as_ref())
        .map_or_else(|| data_dir.join("metadata.db"), PathBuf::from);
    let master_key = spec
        .master_key_file
        .as_ref()
        .map_or_else(|| data_dir.join("master.key"), PathBuf::from);
    Ok(StatePaths {
        identity_dir: data_dir.join("identity"),
        data_dir,
        metadata,
        master_key,
    })
}

/// A running gateway.
pub struct Running {
    pub gateway: Arc<Node>,
    pub metrics: Metrics,
    pub health: Arc<HealthBoard>,
    pub s3_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    /// Node ids of the configured providers.
    pub providers: Vec<String>,
    pub paths: StatePaths,
    pub identity: NodeId,
    pub tls: bool,
    /// The bearer token of the admin API.
    pub admin_token: String,
    clients: Vec<(String, ProviderClient)>,
    probes: ProbeList,
    clouds: Vec<Arc<CloudBackend>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Stops the metadata journal once everything else has.
    journal_stop: tokio::sync::watch::Sender<bool>,
    journal_task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Asks every provider for its free space now rather than at the next interval.
    pub async fn probe_now(&self) {
        let providers = self.probes.read().map(|p| p.clone()).unwrap_or_default();
        probe_and_record_all(
            &providers,
            &self.clouds,
            &self.health,
            self.gateway.metadata(),
        )
        .await;
    }

    /// Takes a metadata snapshot now rather than at the next interval.
    pub async fn snapshot_now(&self) -> anyhow::Result<crate::upkeep::snapshot::Manifest> {
        crate::upkeep::snapshot::snapshot_once(
            &self.gateway,
            self.gateway.metadata(),
            &self.clients,
            &self.paths.data_dir,
        )
        .await
    }

    /// Stops accepting S3 requests and probing providers.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let _ = self.journal_stop.send(true);
        if let Some(task) = self.journal_task {
            let _ = task.await;
        }
    }
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
    spec: StorageGatewaySpec,
    identity: Arc<NodeIdentity>,
    metrics: Metrics,
    health: Arc<HealthBoard>,
    meta: Arc<dyn MetadataStore>,
    probes: ProbeList,
    /// Meters the providers of market contracts signed while running.
    market_usage: Option<Arc<crate::runtime::market::MarketUsage>>,
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

fn tls_acceptor(cert: &str, key: &str) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("StorageGateway spec.tls.certFile: reading {cert}"))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("StorageGateway spec.tls.keyFile: reading {key}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("StorageGateway spec.tls: the certificate and key do not fit together")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

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
const MARKET_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

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

/// Starts the gateway `config` describes, with the policies applied through the admin API
/// (the data directory's overlay) layered over it: dials nothing yet but probes every
/// provider once, then listens for S3 (and admin) requests and repairs in the background.
pub async fn start(file: &Config, overrides: &Overrides) -> anyhow::Result<Running> {
    recover_lost_metadata(file, overrides).await?;
    let mut layered = None;
    if let Some(g) = file.gateway() {
        let spec = overrides.apply(&g.spec)?;
        if spec.credentials.is_empty() {
            bail!(
                "StorageGateway spec.credentials is empty; add at least one access key \
                 (or set SUBLET_ACCESS_KEY and SUBLET_SECRET_KEY)"
            );
        }
        let paths = state_paths(&spec, overrides.data_dir.as_deref())?;
        layered = Some(crate::admin::policy::load_layered(file, &paths.data_dir)?);
    }
    let config = layered.as_ref().unwrap_or(file);
    let Built {
        gateway,
        metrics,
        health,
        spec,
        endpoints,
        paths,
        identity,
        node_key,
        clients,
        clouds,
        market_reporter,
        market_usage,
    } = build(config, overrides).await?;
    let (shutdown, stop) = tokio::sync::watch::channel(false);
    // Journaling starts before anything may change metadata, and stops after the rest (the
    // requests drained at shutdown still journal their changes).
    let (journal_stop, journal_stopped) = tokio::sync::watch::channel(false);
    let probes: ProbeList = Arc::new(std::sync::RwLock::new(clients.clone()));
    if let Some(j) = gateway.journal() {
        j.follow(&clients).await;
    }
    let journal_task = gateway.journal().map(|j| {
        let probes = Arc::clone(&probes);
        j.spawn(
            Arc::clone(gateway.fleet()),
            move || {
                probes
                    .read()
                    .map(|list| list.iter().map(|(node, _)| node.clone()).collect())
                    .unwrap_or_default()
            },
            Some(metrics.clone()),
            journal_stopped,
        )
    });
    let node_key_for_market = Arc::clone(&node_key);
    let dialer = Arc::new(Dialer {
        spec: spec.clone(),
        identity: node_key,
        metrics: metrics.clone(),
        health: Arc::clone(&health),
        meta: Arc::clone(gateway.metadata()),
        probes: Arc::clone(&probes),
        market_usage,
    });
    let spec = &spec;
    let keys = KeyRing::from_credentials(&spec.credentials)?;
    let tls = match &spec.tls {
        Some(t) => Some(tls_acceptor(&t.cert_file, &t.key_file)?),
        None => None,
    };
    let meta = Arc::clone(gateway.metadata());
    let admin_token =
        crate::admin::policy::admin_token(overrides.admin_token.as_deref(), &paths.data_dir)?;

    let listen: SocketAddr = spec
        .listen
        .as_deref()
        .unwrap_or(DEFAULT_LISTEN)
        .parse()
        .context("StorageGateway spec.listen")?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the S3 address {listen} (spec.listen)"))?;
    let s3_addr = listener.local_addr()?;
    let mut tasks = vec![
        spawn_probes(
            spec.probe_interval(),
            Arc::clone(&probes),
            clouds.clone(),
            Arc::clone(&health),
            Arc::clone(&meta),
            stop.clone(),
        ),
        crate::upkeep::repair::spawn_loop(
            Arc::clone(&gateway),
            Some(metrics.clone()),
            crate::upkeep::repair::LOOP_INTERVAL,
            stop.clone(),
        ),
        crate::upkeep::audit::spawn_loop(Arc::clone(&gateway), Some(metrics.clone()), stop.clone()),
        crate::upkeep::scrub::spawn_loop(
            Arc::clone(&gateway),
            Some(metrics.clone()),
            scrub_policy(config),
            Some(paths.data_dir.join(crate::upkeep::scrub::POSITION_FILE)),
            stop.clone(),
        ),
        crate::upkeep::reencode::spawn_reencode(
            Arc::clone(&gateway),
            Some(metrics.clone()),
            crate::upkeep::reencode::REENCODE_INTERVAL,
            stop.clone(),
        ),
        crate::upkeep::lifecycle::spawn_lifecycle(
            Arc::clone(&gateway),
            crate::upkeep::lifecycle::LIFECYCLE_INTERVAL,
            stop.clone(),
        ),
        crate::upkeep::snapshot::spawn_snapshots(
            Arc::clone(&gateway),
            Arc::clone(&meta),
            clients.clone(),
            paths.data_dir.clone(),
            spec.snapshot_interval(),
            stop.clone(),
        ),
    ];
    tasks.push(crate::upkeep::audit::spawn_gc_loop(
        Arc::clone(&gateway),
        Some(metrics.clone()),
        crate::upkeep::audit::GC_INTERVAL,
        crate::upkeep::audit::GC_MIN_AGE,
        stop.clone(),
    ));
    if let Some(reporter) = market_reporter {
        let reporter = reporter.recontracting(
            Arc::clone(&node_key_for_market),
            Arc::clone(&dialer),
            Arc::clone(&gateway),
        );
        tasks.push(tokio::spawn(reporter.run(stop.clone())));
    }
    let admin_addr = match &spec.admin_listen {
        Some(admin) => {
            let addr: SocketAddr = admin.parse().context("StorageGateway spec.adminListen")?;
            let admin_listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the admin address {addr} (spec.adminListen)"))?;
            let bound = admin_listener.local_addr()?;
            let read_only = overrides.read_only_policies.then(|| {
                "the policies of this gateway are managed by the Kubernetes operator: change \
                 the StoragePlan and StorageSchedule resources with kubectl apply"
                    .to_owned()
            });
            let policy = Arc::new(
                crate::admin::policy::PolicyApi::new(
                    Arc::clone(&gateway),
                    file.clone(),
                    &paths.data_dir,
                    admin_token.clone(),
                    read_only,
                )?
                .with_dialer(Arc::clone(&dialer) as Arc<dyn crate::admin::policy::ProviderDialer>),
            );
            policy.copy_overlay().await;
            // Replicas on one database run the policies any of them applied.
            if gateway.metadata().shares_policies() {
                if let Err(e) = policy.sync_shared().await {
                    tracing::warn!(error = %format!("{e:#}"), "taking over shared policies failed");
                }
                tasks.push(Arc::clone(&policy).spawn_sync(POLICY_SYNC_INTERVAL, stop.clone()));
            }
            let mut stop = stop.clone();
            tasks.push(tokio::spawn(crate::admin::server::serve_admin(
                admin_listener,
                metrics.clone(),
                Arc::clone(&gateway),
                crate::admin::Standalone {
                    snapshots: Some(crate::upkeep::snapshot::SnapshotSource {
                        gateway: Arc::clone(&gateway),
                        meta: Arc::clone(&meta),
                        clients: clients.clone(),
                        work_dir: paths.data_dir.clone(),
                    }),
                },
                crate::admin::AdminToken::new(admin_token.clone()),
                policy.router(),
                async move {
                    let _ = stop.changed().await;
                },
            )));
            Some(bound)
        }
        None => None,
    };
    let service = MeteredService::new(
        crate::runtime::dev::service_with_keys(Arc::clone(&gateway), Some(keys)),
        metrics.clone(),
    )
    .with_journal(gateway.journal().cloned());
    let has_tls = tls.is_some();
    let mut stop_s3 = stop;
    tasks.push(tokio::spawn(serve_s3(listener, service, tls, async move {
        let _ = stop_s3.changed().await;
    })));
    Ok(Running {
        gateway,
        metrics,
        health,
        s3_addr,
        admin_addr,
        providers: endpoints.iter().map(|e| e.site.node_id.clone()).collect(),
        paths,
        identity,
        tls: has_tls,
        admin_token,
        clients,
        probes,
        clouds,
        shutdown,
        tasks,
        journal_stop,
        journal_task,
    })
}

/// Backends for the bucket members of every pool.
fn connect_clouds(config: &Config) -> anyhow::Result<Vec<Arc<CloudBackend>>> {
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
fn connect(
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
        let client = ProviderClient::new(&e.address, e.node_id, &client_config).map_err(|err| {
            anyhow::anyhow!(
                "ProviderPool {}: endpoint {}: {}",
                e.site.pool,
                e.name,
                err.message()
            )
        })?;
        clients.push((e.site.node_id.clone(), client.clone()));
        let backend: Arc<dyn ShardBackend> = Arc::new(ProviderBackend::new(client));
        backends.push(ObservedBackend::wrap(backend, metrics, health));
    }
    Ok((backends, clients))
}

/// `sublet recover`: rebuilds the gateway's metadata file from the newest snapshot on its
/// providers and the journal after it. Needs the same config and the original master key
/// (never created here).
pub async fn recover(
    config: &Config,
    overrides: &Overrides,
    force: bool,
) -> anyhow::Result<crate::runtime::recover::Recovered> {
    recover_from_providers(config, overrides, force, false)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the providers hold nothing to recover from"))
}

/// [`recover`]; with `only_if_any`, `None` (and nothing written) when the providers hold
/// no snapshot and no journal of this installation.
async fn recover_from_providers(
    config: &Config,
    overrides: &Overrides,
    force: bool,
    only_if_any: bool,
) -> anyhow::Result<Option<crate::runtime::recover::Recovered>> {
    let Some(gateway_resource) = config.gateway() else {
        bail!("the file must hold exactly one StorageGateway");
    };
    let spec = &overrides.apply(&gateway_resource.spec)?;
    let paths = state_paths(spec, overrides.data_dir.as_deref())?;
    if !paths.master_key.exists() {
        bail!(
            "master key {} is missing: restore it from your backup first — without it no snapshot or object can be decrypted",
            paths.master_key.display()
        );
    }
    let master = Arc::new(MasterKey::load_or_create(&paths.master_key)?);
    let identity = Arc::new(NodeIdentity::load_or_derive(
        &paths.identity_dir,
        Some(master.node_seed()),
    )?);
    let plans = plans(config, &spec.default_plan)?;
    // Rented providers hold snapshots and journal too: the contracts this gateway (the node
    // the master key derives) holds name them. Nothing new is rented here.
    let (with_market, _) = crate::runtime::market::with_contracts(
        config,
        &identity,
        &paths.data_dir,
        MARKET_WAIT,
        crate::runtime::market::Contracting::Existing,
    )
    .await?;
    let endpoints = endpoints(&with_market)?;
    let metrics = Metrics::new()?;
    let health = Arc::new(HealthBoard::default());
    let (mut backends, clients) = connect(spec, &identity, &endpoints, &metrics, &health)?;
    let clouds = connect_clouds(config)?;
    backends.extend(
        clouds.iter().map(|c| {
            ObservedBackend::wrap(Arc::clone(c) as Arc<dyn ShardBackend>, &metrics, &health)
        }),
    );
    // Reading needs no metadata: a throwaway in-memory store.
    let scratch: Arc<dyn MetadataStore> =
        Arc::new(SqliteStore::open_in_memory().map_err(|e| anyhow::anyhow!("scratch store: {e}"))?);
    let gateway = Node::new(scratch, master, plans, backends)?;
    if only_if_any
        && crate::upkeep::snapshot::manifest_ids(&clients)
            .await
            .is_empty()
        && crate::meta::journal::list_segments(gateway.installation(), &clients)
            .await
            .0
            .is_empty()
    {
        return Ok(None);
    }
    crate::runtime::recover::restore_newest(
        &gateway,
        &clients,
        &paths.metadata,
        &paths.data_dir.join(crate::admin::policy::OVERLAY_FILE),
        force,
    )
    .await
    .map(Some)
}

/// A gateway on SQLite whose metadata file is gone but whose master key is there (a disk
/// replaced, a Kubernetes volume lost with its node) recovers before serving: started on
/// an empty store, it would serve empty buckets and its next snapshots would push the good
/// ones out. A store the providers know nothing of is new, and starts empty.
async fn recover_lost_metadata(file: &Config, overrides: &Overrides) -> anyhow::Result<()> {
    let Some(g) = file.gateway() else {
        return Ok(());
    };
    let spec = overrides.apply(&g.spec)?;
    let paths = state_paths(&spec, overrides.data_dir.as_deref())?;
    if spec.metadata.postgres.is_some() || paths.metadata.exists() || !paths.master_key.exists() {
        return Ok(());
    }
    match recover_from_providers(file, overrides, false, true).await {
        Ok(None) => {
            tracing::info!(metadata = %paths.metadata.display(), "new metadata store: the providers hold no snapshot or journal of this installation");
            Ok(())
        }
        Ok(Some(done)) => {
            tracing::warn!(
                metadata = %paths.metadata.display(),
                snapshot = ?done.manifest.as_ref().map(|m| m.created),
                journal_segments = done.replayed.segments,
                changes = done.replayed.applied,
                "the metadata file was missing: recovered it from the providers before serving"
            );
            for problem in done.replayed.unreadable.iter().chain(&done.replayed.failed) {
                tracing::error!(%problem, "a journal segment was not replayed");
            }
            if done.after.writes > 0 {
                tracing::error!(
                    writes = done.after.writes,
                    shards = done.after.shards,
                    "writes whose shards the recovered metadata does not name were not recovered"
                );
            }
            Ok(())
        }
        Err(e) => bail!(
            "the metadata file {} is missing and the providers hold snapshots or a journal of \
             this installation, but recovering from them failed: {e:#}\n\
             (starting empty would hide every object; run `sublet recover` once the providers \
             answer)",
            paths.metadata.display()
        ),
    }
}

/// Serves S3 on `listener` (over TLS when `tls` is set) until `shutdown` resolves.
pub async fn serve_s3(
    listener: TcpListener,
    service: MeteredService,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        // Small answers must not wait for Nagle's algorithm (about 40 ms per GET otherwise).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "TCP_NODELAY not set");
        }
        let service = service.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match tls {
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "tls handshake failed");
                        return;
                    }
                },
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `sublet serve`: load the file (printing every problem the loader finds), run until
/// ctrl-c or SIGTERM.
pub async fn run(config_path: &Path, overrides: &Overrides) -> anyhow::Result<()> {
    let config = match sublet_crds::load_file(config_path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            std::process::exit(2);
        }
    };
    let running = start(&config, overrides).await?;
    let healthy = running
        .providers
        .iter()
        .filter(|node| running.health.healthy(node))
        .count();
    let scheme = if running.tls { "https" } else { "http" };
    println!("sublet serve: S3 endpoint {scheme}://{}", running.s3_addr);
    if let Some(admin) = running.admin_addr {
        println!("  metrics:     http://{admin}/metrics (and /healthz)");
        let token = match &overrides.admin_token {
            Some(_) => "SUBLET_ADMIN_TOKEN".to_owned(),
            None => running
                .paths
                .data_dir
                .join(crate::admin::policy::TOKEN_FILE)
                .display()
                .to_string(),
        };
        println!(
            "  admin API:   http://{admin}/admin/v1 (sublet plan|schedule|provider|status|repair; token: {token})"
        );
    }
    println!(
        "  providers:   {healthy} of {} answered",
        running.providers.len()
    );
    let metadata = match config
        .gateway()
        .and_then(|g| g.spec.metadata.postgres.as_ref())
    {
        Some(postgres) => format!("PostgreSQL (URL from ${})", postgres.url_env()),
        None => running.paths.metadata.display().to_string(),
    };
    println!("  metadata:    {metadata}");
    println!(
        "  gateway id:  {} (allow it on providers with --allowed-client)",
        running.identity
    );
    println!(
        "  master key:  {}  <- BACK THIS FILE UP: without it no object can ever be read again",
        running.paths.master_key.display()
    );
    stop_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::datapath::layout::Scheme;
    use crate::datapath::placement::{PlacementRule, Site};
    use crate::node::Plan;

    fn config(extra: &str) -> Config {
        let text = format!(
            r#"
apiVersion: sublet.dev/v1alpha1
kind: ProviderPool
metadata: {{name: home}}
spec:
  class: owned
  owner: alice
  endpoints:
    - {{name: a, address: "127.0.0.1:1", nodeId: "00000000000000000000000000000001", zone: desk}}
    - {{name: b, address: "127.0.0.1:2", nodeId: "00000000000000000000000000000002"}}
---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {{name: photos}}
spec:
  redundancy: {{erasure: {{dataShards: 4, parityShards: 2}}}}
  segmentSize: 1Mi
  writeQuorum: 5
  placement: {{spreadBy: zone, maxPerDomain: 2, pools: [{{name: home, minShards: 2}}]}}
---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {{name: configs}}
spec:
  redundancy: {{replicas: 3}}
  encryption: none
---
apiVersion: sublet.dev/v1alpha1
kind: StorageGateway
metadata: {{name: s3}}
spec:
  defaultPlan: photos
{extra}
"#
        );
        sublet_crds::load_str("test.yaml", &text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_storage_plan_becomes_a_plan_default_first() {
        let c = config("");
        let built = plans(&c, "photos").unwrap();
        assert_eq!(
            built,
            vec![
                Plan {
                    name: "photos".into(),
                    scheme: Scheme::Erasure { data: 4, parity: 2 },
                    encrypt: true,
                    segment_size: 1 << 20,
                    write_quorum: 5,
                    inline_up_to: 0,
                },
                Plan {
                    name: "configs".into(),
                    scheme: Scheme::Replicas { copies: 3 },
                    encrypt: false,
                    segment_size: 16 << 20,
                    write_quorum: 3,
                    inline_up_to: 0,
                },
            ]
        );
        assert_eq!(plans(&c, "configs").unwrap()[0].name, "configs");
    }

    #[test]
    fn endpoints_become_pinned_providers_with_sites() {
        let c = config("");
        let e = endpoints(&c).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].node_id.to_string(), "00000000000000000000000000000001");
        assert_eq!(
            e[0].site,
            Site {
                node_id: "00000000000000000000000000000001".into(),
                pool: "home".into(),
                zone: "desk".into(),
                owner: "alice".into(),
            }
        );
        // The zone defaults to the endpoint name.
        assert_eq!(e[1].site.zone, "b");
        let t = topology(&c, &e);
        assert_eq!(t.sites.len(), 2);
        assert_eq!(t.rule("photos").max_per_domain, 2);
        assert_eq!(t.rule("photos").pools[0].min_shards, 2);
        assert_eq!(
            t.rule("configs"),
            PlacementRule::from_spec(&c.plans["configs"].spec)
        );
    }

    #[test]
    fn endpoints_must_pin_a_valid_unique_node_id() {
        let mut c = config("");
        let pool = c.pools.get_mut("home").unwrap();
        pool.spec.endpoints[0].node_id = None;
        pool.spec.endpoints[1].node_id = Some("xyz".into());
        let err = endpoints(&c).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "ProviderPool home: endpoint a: nodeId is missing; sublet serve pins every provider"
            ),
            "{err}"
        );
        assert!(
            err.contains("ProviderPool home: endpoint b: nodeId: invalid node id \"xyz\""),
            "{err}"
        );
        let mut c = config("");
        let pool = c.pools.get_mut("home").unwrap();
        pool.spec.endpoints[1].node_id = pool.spec.endpoints[0].node_id.clone();
        assert!(
            endpoints(&c)
                .unwrap_err()
                .to_string()
                .contains("is listed twice")
        );
    }

    #[test]
    fn overrides_add_a_key_a_token_and_an_admin_address() {
        let c = config(
            "  providerToken: from-file\n  credentials: [{accessKey: alice, secretKey: alice-secret-1}]",
        );
        let spec = &c.gateway().unwrap().spec;
        let o = Overrides {
            provider_token: Some("from-env".into()),
            full_access_key: Some(("ops".into(), "ops-secret-123".into())),
            admin_listen: Some("0.0.0.0:9001".parse().unwrap()),
            ..Overrides::default()
        };
        let applied = o.apply(spec).unwrap();
        assert_eq!(applied.provider_token.as_deref(), Some("from-env"));
        assert_eq!(applied.admin_listen.as_deref(), Some("0.0.0.0:9001"));
        assert_eq!(applied.credentials.len(), 2);
        assert_eq!(applied.credentials[1].access_key, "ops");
        assert!(applied.credentials[1].buckets.is_empty());
        let clash = Overrides {
            full_access_key: Some(("alice".into(), "x-secret-123".into())),
            ..Overrides::default()
        };
        assert!(
            clash
                .apply(spec)
                .unwrap_err()
                .to_string()
                .contains("alice is both")
        );
        assert_eq!(Overrides::default().apply(spec).unwrap(), *spec);
    }

    #[test]
    fn state_paths_from_the_spec_or_the_flag() {
        let c = config("  dataDir: /srv/sublet\n  masterKeyFile: /etc/sublet/master.key");
        let spec = &c.gateway().unwrap().spec;
        let p = state_paths(spec, None).unwrap();
        assert_eq!(p.metadata, PathBuf::from("/srv/sublet/metadata.db"));
        assert_eq!(p.master_key, PathBuf::from("/etc/sublet/master.key"));
        assert_eq!(p.identity_dir, PathBuf::from("/srv/sublet/identity"));
        let p = state_paths(spec, Some(Path::new("/tmp/x"))).unwrap();
        assert_eq!(p.metadata, PathBuf::from("/tmp/x/metadata.db"));

        let c = config("  metadata: {sqlite: {path: /db/meta.db}}");
        let spec = &c.gateway().unwrap().spec;
        assert_eq!(
            state_paths(spec, None).unwrap_err().to_string(),
            "no data directory: set spec.dataDir in the StorageGateway or pass --data-dir"
        );
        let p = state_paths(spec, Some(Path::new("/d"))).unwrap();
        assert_eq!(p.metadata, PathBuf::from("/db/meta.db"));
        assert_eq!(p.master_key, PathBuf::from("/d/master.key"));
    }

    #[tokio::test]
    async fn metadata_opens_sqlite_or_names_the_missing_postgres_url() {
        let dir = tempfile::tempdir().unwrap();
        let c = config("  dataDir: /srv/sublet");
        let file = dir.path().join("sub/metadata.db");
        let store = open_metadata(&c.gateway().unwrap().spec, &file)
            .await
            .unwrap();
        assert!(store.buckets().unwrap().is_empty());
        assert!(file.exists());

        let c = config("  metadata: {postgres: {urlEnv: SUBLET_TEST_NEVER_SET_URL}}");
        let spec = &c.gateway().unwrap().spec;
        assert_eq!(
            state_paths(spec, Some(dir.path())).unwrap().metadata,
            dir.path().join("metadata.db"),
            "postgres needs a data directory too (master key, identity)"
        );
        let err = open_metadata(spec, &file).await.err().unwrap().to_string();
        assert_eq!(
            err,
            "StorageGateway spec.metadata.postgres: environment variable SUBLET_TEST_NEVER_SET_URL (spec.metadata.postgres.urlEnv) is not set; set it to postgres://user:password@host:5432/dbname"
        );
    }
}
