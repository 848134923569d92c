//! `sublet dev`: providers and a gateway in one process on loopback, state in one directory.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rand::Rng;
use s3s::service::{S3Service, S3ServiceBuilder};
use sublet_provider::client::{ClientConfig, ProviderClient};
use sublet_provider::identity::NodeIdentity;
use sublet_provider::server::{self, ProviderConfig, RunningProvider};
use tokio::net::TcpListener;

use crate::datapath::codec::MasterKey;
use crate::datapath::layout::Scheme;
use crate::datapath::observed::ObservedBackend;
use crate::datapath::placement::{HealthBoard, Topology};
use crate::datapath::provider::ProviderBackend;
use crate::datapath::stripes::ShardBackend;
use crate::meta::SqliteStore;
use crate::metrics::Metrics;
use crate::node::health::RebuildPolicy;
use crate::node::{Node, Plan};
use crate::s3::auth::KeyRing;
use crate::s3::http::MeteredService;

/// Providers `sublet dev` runs.
pub const DEV_PROVIDERS: usize = 6;

/// Names a YAML file holding one StoragePlan that `sublet dev` uses instead of its built-in
/// `standard` plan, so benchmarks can run the same cluster with another redundancy or
/// without encryption. An environment variable rather than a flag: it is a tool for
/// measurements, not part of the everyday command line.
pub const PLAN_FILE_ENV: &str = "SUBLET_DEV_PLAN_FILE";

/// `file` or `batch`: how the dev cluster's providers make shard bytes durable, as
/// `sublet-provider --sync-mode` (the same variable sets both); `file` when unset. For
/// measurements, like [`PLAN_FILE_ENV`].
pub const SYNC_MODE_ENV: &str = "SUBLET_PROVIDER_SYNC_MODE";

/// `unix` or `tls`: how the dev cluster's gateway reaches its providers, all in one process
/// on one machine: over a Unix socket in each provider's directory without TLS (`unix`, the
/// default), or over TLS on loopback TCP as remote providers are (`tls`). For measurements,
/// like [`PLAN_FILE_ENV`].
pub const PROVIDER_TRANSPORT_ENV: &str = "SUBLET_DEV_PROVIDER_TRANSPORT";

/// How `sublet dev` reaches its providers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevTransport {
    /// A Unix socket per provider, no TLS.
    Unix,
    /// TLS over loopback TCP.
    Tls,
}

impl DevTransport {
    fn parse(text: &str) -> anyhow::Result<Self> {
        match text.trim() {
            "unix" | "" => Ok(DevTransport::Unix),
            "tls" => Ok(DevTransport::Tls),
            other => anyhow::bail!(
                "{PROVIDER_TRANSPORT_ENV}={other:?}: use `unix` (the default) or `tls`"
            ),
        }
    }

    /// The transport [`PROVIDER_TRANSPORT_ENV`] asks for.
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var(PROVIDER_TRANSPORT_ENV) {
            Ok(text) => Self::parse(&text),
            Err(_) => Ok(DevTransport::Unix),
        }
    }
}

/// Where a dev provider's socket goes, if the kernel takes that path (a state directory
/// deep enough makes it too long: that provider is then reached over TLS).
fn dev_socket(provider_dir: &Path) -> Option<PathBuf> {
    let path = std::path::absolute(provider_dir.join("provider.sock")).ok()?;
    sublet_provider::unix::check_socket_path(&path).ok()?;
    Some(path)
}

fn dev_sync_mode() -> anyhow::Result<sublet_provider::store::SyncMode> {
    match std::env::var(SYNC_MODE_ENV) {
        Ok(text) => text
            .parse()
            .map_err(|e: String| anyhow::anyhow!("{SYNC_MODE_ENV}: {e}")),
        Err(_) => Ok(sublet_provider::store::SyncMode::File),
    }
}

/// The plan of a dev cluster: `standard`, or the one of the file [`PLAN_FILE_ENV`] names.
pub fn dev_plan() -> anyhow::Result<Plan> {
    match std::env::var_os(PLAN_FILE_ENV) {
        Some(path) => plan_from_file(Path::new(&path))
            .with_context(|| format!("{PLAN_FILE_ENV}={}", Path::new(&path).display())),
        None => Ok(Plan::standard()),
    }
}

/// The one StoragePlan of a YAML file.
fn plan_from_file(path: &Path) -> anyhow::Result<Plan> {
    let config = sublet_crds::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut plans = config.plans.iter();
    match (plans.next(), plans.next()) {
        (Some((name, plan)), None) => crate::node::config::plan_from_spec(name, &plan.spec),
        _ => anyhow::bail!(
            "the file must hold exactly one StoragePlan, it holds {}",
            config.plans.len()
        ),
    }
}

/// How a plan stores data, in words, for the start-up banner.
fn describe(plan: &Plan) -> String {
    let scheme = match plan.scheme {
        Scheme::Erasure { data, parity } => format!("erasure {data}+{parity}"),
        Scheme::Replicas { copies: 1 } => "1 copy".to_string(),
        Scheme::Replicas { copies } => format!("{copies} copies"),
    };
    let sealing = if plan.encrypt {
        "encrypted"
    } else {
        "not encrypted"
    };
    let inline = match plan.inline_up_to {
        0 => String::new(),
        n if n % 1024 == 0 => format!(", objects up to {} KiB in metadata", n / 1024),
        n => format!(", objects up to {n} bytes in metadata"),
    };
    format!(
        "plan `{}` ({scheme}, {} MiB segments, {sealing}{inline})",
        plan.name,
        plan.segment_size >> 20
    )
}

/// S3 credentials of a dev cluster.
#[derive(Clone)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// Everything a dev cluster runs, minus the HTTP listener.
pub struct Cluster {
    pub dir: PathBuf,
    /// Running providers; tests may take some out and shut them down.
    pub providers: Vec<RunningProvider>,
    pub gateway: Arc<Node>,
    pub credentials: Credentials,
    pub master_key_path: PathBuf,
    /// Request, shard and plan metrics of the gateway.
    pub metrics: Metrics,
    /// Clients to ask providers for free space, by node id.
    pub probes: Vec<(String, ProviderClient)>,
}

fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

/// Writes a secret file readable only by its owner.
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// The cluster token, made on first use.
fn load_or_create_token(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        Ok(_) => anyhow::bail!("{} is empty; delete it to make a new token", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = random_string(48, b"abcdefghijklmnopqrstuvwxyz0123456789");
            write_secret(path, &format!("{token}\n"))?;
            Ok(token)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The S3 credentials, made on first use (`access_key=...` / `secret_key=...` lines).
pub fn load_or_create_credentials(path: &Path) -> anyhow::Result<Credentials> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut access_key = None;
            let mut secret_key = None;
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    match k.trim() {
                        "access_key" => access_key = Some(v.trim().to_string()),
                        "secret_key" => secret_key = Some(v.trim().to_string()),
                        _ => {}
                    }
                }
            }
            match (access_key, secret_key) {
                (Some(access_key), Some(secret_key))
                    if !access_key.is_empty() && !secret_key.is_empty() =>
                {
                    Ok(Credentials {
                        access_key,
                        secret_key,
                    })
                }
                _ => anyhow::bail!(
                    "{} must hold access_key=... and secret_key=... lines",
                    path.display()
                ),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let creds = Credentials {
                access_key: random_string(20, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
                secret_key: random_string(
                    40,
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                ),
            };
            write_secret(
                path,
                &format!(
                    "access_key={}\nsecret_key={}\n",
                    creds.access_key, creds.secret_key
                ),
            )?;
            Ok(creds)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Starts `providers` providers and a gateway with `plans` on state in `dir`.
pub async fn start_cluster(
    dir: &Path,
    providers: usize,
    plans: Vec<Plan>,
) -> anyhow::Result<Cluster> {
    start_cluster_with(dir, providers, plans, HashMap::new()).await
}

/// [`start_cluster`] with rebuild rules per plan (the defaults for plans not named).
pub async fn start_cluster_with(
    dir: &Path,
    providers: usize,
    plans: Vec<Plan>,
    rebuild: HashMap<String, RebuildPolicy>,
) -> anyhow::Result<Cluster> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let token = load_or_create_token(&dir.join("cluster.token"))?;
    let credentials = load_or_create_credentials(&dir.join("credentials"))?;
    let master_key_path = dir.join("master.key");
    let master = Arc::new(MasterKey::load_or_create(&master_key_path)?);
    let identity = Arc::new(NodeIdentity::load_or_create(&dir.join("gateway"))?);
    let client_cfg = ClientConfig {
        identity: Arc::clone(&identity),
        token: Some(token.clone()),
    };

    let metrics = Metrics::new()?;
    let health = Arc::new(HealthBoard::default());
    let mut running = Vec::with_capacity(providers);
    let mut probes = Vec::with_capacity(providers);
    let mut backends: Vec<Arc<dyn ShardBackend>> = Vec::with_capacity(providers);
    let sync_mode = dev_sync_mode()?;
    let transport = DevTransport::from_env()?;
    for n in 0..providers {
        let provider_dir = dir.join("providers").join(n.to_string());
        let mut cfg = ProviderConfig::new(&provider_dir);
        cfg.sync_mode = sync_mode;
        cfg.token = Some(token.clone());
        cfg.allowed_clients = vec![identity.node_id()];
        cfg.zone = format!("dev-{n}");
        if transport == DevTransport::Unix {
            std::fs::create_dir_all(&provider_dir)
                .with_context(|| format!("creating {}", provider_dir.display()))?;
            cfg.listen_unix = dev_socket(&provider_dir);
            if cfg.listen_unix.is_none() {
                tracing::warn!(dir = %provider_dir.display(), "the socket path would be too long for the kernel; this provider is reached over TLS");
            }
        }
        let p = server::start(cfg)
            .await
            .with_context(|| format!("starting provider {n}"))?;
        let address = match &p.unix_socket {
            Some(socket) => format!("unix:{}", socket.display()),
            None => p.grpc_addr.to_string(),
        };
        // On its socket, a provider hands over the files of shards the gateway
        // authenticates itself (short-circuit reads; off with the provider's switch).
        let client = ProviderClient::new(&address, p.node_id, &client_cfg)
            .map_err(|e| anyhow::anyhow!("provider {n} client: {e}"))?
            .with_short_circuit_reads(true);
        probes.push((p.node_id.to_string(), client.clone()));
        let backend: Arc<dyn ShardBackend> = Arc::new(ProviderBackend::new(client));
        backends.push(ObservedBackend::wrap(backend, &metrics, &health));
        running.push(p);
    }

    let meta_path = dir.join("meta.db");
    let meta = SqliteStore::open(&meta_path)
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", meta_path.display()))?;
    let topology = Topology::flat(backends.iter().map(|b| b.node_id()));
    let gateway = Arc::new(
        Node::new(Arc::new(meta), master, plans, backends)?
            .with_metadata_alone()
            .with_placement(topology, Arc::clone(&health))?
            .with_rebuild(rebuild),
    );
    let pools: Vec<(String, String)> = gateway
        .topology()
        .sites
        .iter()
        .map(|s| (s.node_id.clone(), s.pool.clone()))
        .collect();
    gateway
        .metadata()
        .record_pools(&pools, crate::node::health::now_ms())
        .map_err(|e| anyhow::anyhow!("recording provider pools: {e}"))?;
    crate::runtime::probe_and_record(&probes, &health, gateway.metadata()).await;
    Ok(Cluster {
        dir: dir.to_path_buf(),
        providers: running,
        gateway,
        credentials,
        master_key_path,
        metrics,
        probes,
    })
}

/// The S3 HTTP service over a gateway; SigV4 with the given credentials (full access) if any.
pub fn service(gateway: Arc<Node>, credentials: Option<&Credentials>) -> S3Service {
    let keys = credentials.map(|c| {
        KeyRing::single(&c.access_key, &c.secret_key).with_accounts(Arc::clone(gateway.accounts()))
    });
    service_with_keys(gateway, keys, None)
}

/// The S3 HTTP service over a gateway; SigV4 and per-bucket grants of `keys` if any;
/// virtual-host-style addressing under `domains` if any (else path style only).
pub fn service_with_keys(
    gateway: Arc<Node>,
    keys: Option<KeyRing>,
    domains: Option<crate::s3::host::VirtualHostDomains>,
) -> S3Service {
    let buckets = Arc::new(crate::s3::access::BucketAccess::new(Arc::clone(&gateway)));
    let front = crate::s3::Gateway::new(gateway).with_bucket_access(Arc::clone(&buckets));
    let mut builder = S3ServiceBuilder::new(front);
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
        crate::s3::http::s3s_config(),
    ))));
    if let Some(domains) = domains {
        builder.set_host(domains);
    }
    if let Some(keys) = keys {
        let keys = keys.with_bucket_access(buckets);
        builder.set_auth(keys.clone());
        builder.set_access(keys);
    }
    builder.build()
}

/// Where the providers serve their own metrics (`sublet_provider_*`: shards stored, short-circuit
/// reads, ...): one URL, ports in curl's `{a,b}` glob, when they share an address.
fn provider_metrics_urls(addrs: &[SocketAddr]) -> String {
    let Some(first) = addrs.first() else {
        return "none".to_string();
    };
    if addrs.len() > 1 && addrs.iter().all(|a| a.ip() == first.ip()) {
        let ports: Vec<String> = addrs.iter().map(|a| a.port().to_string()).collect();
        let host = match first.ip() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        return format!(
            "http://{host}:{{{}}}/metrics (their metrics; curl expands the braces)",
            ports.join(",")
        );
    }
    let urls: Vec<String> = addrs
        .iter()
        .map(|a| format!("http://{a}/metrics"))
        .collect();
    format!("{} (their metrics)", urls.join(" "))
}

/// `sublet dev`: run until ctrl-c.
pub async fn run(dir: PathBuf, listen: SocketAddr, admin_listen: SocketAddr) -> anyhow::Result<()> {
    let plan = dev_plan()?;
    let banner = describe(&plan);
    let cluster = start_cluster(&dir, DEV_PROVIDERS, vec![plan]).await?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    // The admin API's actions want a token, as with `sublet serve`: the state directory's
    // `admin.token`, made on first start.
    let token = crate::admin::policy::admin_token(None, &cluster.dir)?;
    let token_path = cluster.dir.join(crate::admin::policy::TOKEN_FILE);
    // Metrics are a convenience here: several dev clusters (tests) may run at once, so a
    // busy admin address must not stop the cluster.
    let admin = match crate::admin::server::spawn_admin(
        admin_listen,
        cluster.metrics.clone(),
        Arc::clone(&cluster.gateway),
        crate::admin::AdminToken::new(token),
    )
    .await
    {
        Ok(addr) => format!("http://{addr}/metrics (and /healthz, the admin API /admin/v1)"),
        Err(e) => {
            tracing::warn!(error = %e, "metrics are not served");
            format!("not served ({e:#}); pick another --admin-listen")
        }
    };
    let (_stop_probes, stop) = tokio::sync::watch::channel(false);
    let probing = crate::runtime::spawn_probes(
        sublet_crds::StorageGatewaySpec::DEFAULT_PROBE_INTERVAL,
        Arc::new(std::sync::RwLock::new(cluster.probes.clone())),
        Vec::new(),
        Arc::clone(cluster.gateway.health()),
        Arc::clone(cluster.gateway.metadata()),
        stop.clone(),
    );
    let repairing = crate::upkeep::repair::spawn_loop(
        Arc::clone(&cluster.gateway),
        Some(cluster.metrics.clone()),
        crate::upkeep::repair::LOOP_INTERVAL,
        stop.clone(),
    );
    let auditing = crate::upkeep::audit::spawn_loop(
        Arc::clone(&cluster.gateway),
        Some(cluster.metrics.clone()),
        stop.clone(),
    );
    let scrubbing = crate::upkeep::scrub::spawn_loop(
        Arc::clone(&cluster.gateway),
        Some(cluster.metrics.clone()),
        crate::upkeep::scrub::ScrubPolicy::default(),
        Some(cluster.dir.join(crate::upkeep::scrub::POSITION_FILE)),
        stop.clone(),
    );
    let reencoding = crate::upkeep::reencode::spawn_reencode(
        Arc::clone(&cluster.gateway),
        Some(cluster.metrics.clone()),
        crate::upkeep::reencode::REENCODE_INTERVAL,
        stop.clone(),
    );
    let collecting = crate::upkeep::audit::spawn_gc_loop(
        Arc::clone(&cluster.gateway),
        Some(cluster.metrics.clone()),
        crate::upkeep::audit::GC_INTERVAL,
        crate::upkeep::audit::GC_MIN_AGE,
        stop.clone(),
    );
    // Users and keys made through the admin API.
    let accounts =
        crate::upkeep::users::spawn_refresh(Arc::clone(&cluster.gateway), stop.clone()).await;
    // Bucket lifecycle rules (PutBucketLifecycleConfiguration); dev has no schedules.
    let lifecycle = crate::upkeep::lifecycle::spawn_lifecycle(
        Arc::clone(&cluster.gateway),
        crate::upkeep::lifecycle::LIFECYCLE_INTERVAL,
        stop,
    );
    let endpoint = format!("http://{addr}");
    let c = &cluster.credentials;
    // A config of its own gives the CLI a region without touching the user's ~/.aws.
    let aws_config = cluster.dir.join("aws-config");
    std::fs::write(&aws_config, "[default]\nregion = us-east-1\n")
        .with_context(|| format!("writing {}", aws_config.display()))?;
    let aws_config = std::path::absolute(&aws_config).unwrap_or(aws_config);
    let env = format!(
        "AWS_CONFIG_FILE={} AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={}",
        aws_config.display(),
        c.access_key,
        c.secret_key
    );
    println!("sublet dev is running with {DEV_PROVIDERS} providers, {banner}");
    println!();
    println!("  S3 endpoint:   {endpoint}");
    println!("  access key:    {}", c.access_key);
    println!("  secret key:    {}", c.secret_key);
    println!("  state:         {}", cluster.dir.display());
    println!("  metrics:       {admin}");
    let provider_metrics: Vec<SocketAddr> = cluster.providers.iter().map(|p| p.http_addr).collect();
    println!(
        "  providers:     {}",
        provider_metrics_urls(&provider_metrics)
    );
    println!(
        "  admin token:   {} (SUBLET_ADMIN_TOKEN for sublet status, sublet repair, ...)",
        token_path.display()
    );
    println!();
    println!(
        "  master key:    {}  <- BACK THIS FILE UP: without it no object can ever be read again",
        cluster.master_key_path.display()
    );
    println!();
    println!("Try:");
    println!("  {env} aws --endpoint-url {endpoint} s3 mb s3://bucket");
    println!("  {env} aws --endpoint-url {endpoint} s3 cp ./file s3://bucket/");
    // Customers' keys (SSE-C) travel in the clear here: only on loopback.
    cluster
        .gateway
        .allow_customer_keys(listen.ip().is_loopback());
    let svc = service(Arc::clone(&cluster.gateway), Some(&cluster.credentials));
    let svc =
        MeteredService::new(svc, cluster.metrics.clone()).with_cors(Arc::clone(&cluster.gateway));
    crate::runtime::serve_s3(
        listener,
        svc,
        None,
        sublet_crds::ClientLimits::default(),
        crate::runtime::stop_signal(),
    )
    .await;
    tracing::info!("shutting down");
    probing.abort();
    accounts.abort();
    lifecycle.abort();
    repairing.abort();
    auditing.abort();
    scrubbing.abort();
    reencoding.abort();
    collecting.abort();
    for p in cluster.providers {
        p.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINGLE: &str = "apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: single}
spec:
  redundancy: {replicas: 1}
  encryption: none
";

    #[test]
    fn the_providers_metrics_urls_name_every_port() {
        let a = |s: &str| s.parse::<SocketAddr>().expect("address");
        assert_eq!(
            provider_metrics_urls(&[a("127.0.0.1:4001"), a("127.0.0.1:4002")]),
            "http://127.0.0.1:{4001,4002}/metrics (their metrics; curl expands the braces)"
        );
        assert_eq!(
            provider_metrics_urls(&[a("[::1]:4001"), a("[::1]:4002")]),
            "http://[::1]:{4001,4002}/metrics (their metrics; curl expands the braces)"
        );
        assert_eq!(
            provider_metrics_urls(&[a("127.0.0.1:4001"), a("127.0.0.2:4002")]),
            "http://127.0.0.1:4001/metrics http://127.0.0.2:4002/metrics (their metrics)"
        );
        assert_eq!(
            provider_metrics_urls(&[a("127.0.0.1:4001")]),
            "http://127.0.0.1:4001/metrics (their metrics)"
        );
        assert_eq!(provider_metrics_urls(&[]), "none");
    }

    #[test]
    fn a_plan_file_replaces_the_standard_plan() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("plan.yaml");
        std::fs::write(&path, SINGLE).expect("write plan");
        let plan = plan_from_file(&path).expect("plan");
        assert_eq!(plan.name, "single");
        assert_eq!(plan.scheme, Scheme::Replicas { copies: 1 });
        assert!(!plan.encrypt);
        assert_eq!(
            describe(&plan),
            "plan `single` (1 copy, 16 MiB segments, not encrypted)"
        );
        assert_eq!(
            describe(&Plan::standard()),
            "plan `standard` (erasure 4+2, 16 MiB segments, encrypted, objects up to 4 KiB in metadata)"
        );
    }

    #[test]
    fn the_provider_transport_is_unix_unless_tls_is_asked_for() {
        assert_eq!(DevTransport::parse("").expect("empty"), DevTransport::Unix);
        assert_eq!(
            DevTransport::parse("unix").expect("unix"),
            DevTransport::Unix
        );
        assert_eq!(DevTransport::parse("tls").expect("tls"), DevTransport::Tls);
        let err = DevTransport::parse("tcp").expect_err("tcp").to_string();
        assert!(
            err.contains(PROVIDER_TRANSPORT_ENV) && err.contains("`tls`"),
            "{err}"
        );
        let deep = Path::new("/").join("d".repeat(120));
        assert_eq!(dev_socket(&deep), None, "too long for sun_path");
        assert_eq!(
            dev_socket(Path::new("/srv/dev/providers/0")),
            Some(PathBuf::from("/srv/dev/providers/0/provider.sock"))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dev_providers_are_reached_over_their_unix_sockets() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = start_cluster(dir.path(), DEV_PROVIDERS, vec![Plan::standard()])
            .await
            .expect("cluster");
        for p in &cluster.providers {
            let socket = p.unix_socket.as_ref().expect("a socket per provider");
            assert!(socket.starts_with(dir.path()), "{}", socket.display());
        }
        for (_, probe) in &cluster.probes {
            probe
                .info()
                .await
                .expect("a provider answers over its socket");
        }
        for p in cluster.providers {
            p.shutdown().await;
        }
    }

    #[test]
    fn a_plan_file_with_two_plans_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("plans.yaml");
        let second = SINGLE.replace("name: single", "name: other");
        std::fs::write(&path, format!("{SINGLE}---\n{second}")).expect("write plans");
        let err = plan_from_file(&path).expect_err("two plans");
        assert!(err.to_string().contains("exactly one StoragePlan"), "{err}");
    }
}
