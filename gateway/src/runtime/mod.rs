//! The composition root of a gateway process. `sublet serve --config sublet.yaml` runs a
//! gateway from the standalone YAML (the same kinds as the custom resources): providers
//! from ProviderPool endpoints, plans from StoragePlans, keys, addresses and state paths
//! from the StorageGateway. [`build`] turns the configuration into a node, [`start`] serves
//! it, [`listen`] holds the one accept loop; `sublet dev` ([`dev`]), `sublet recover`
//! ([`recover`]) and `sublet repair` ([`repair`]) compose the same parts.

pub mod build;
pub mod dev;
pub mod listen;
pub mod market;
pub mod probes;
pub mod recover;
pub mod repair;
pub mod start;
pub mod state;

pub use build::{Built, POLICY_SYNC_INTERVAL, build, scrub_policy};
pub use listen::{DEFAULT_LISTEN, serve_s3, stop_signal};
pub use probes::{
    Dialer, ProbeList, probe, probe_and_record, probe_and_record_all, probe_clouds, spawn_probes,
};
pub use recover::recover;
pub use start::start;
pub use state::{Overrides, StatePaths, open_metadata, state_paths};

use build::MARKET_WAIT;
use listen::tls_acceptor;
use probes::{connect, connect_clouds};
use recover::recover_lost_metadata;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
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

    /// Issue 28: a fresh install whose master key cannot be read said "the providers hold
    /// snapshots or a journal of this installation, but recovering from them failed".
    #[tokio::test]
    async fn an_unreadable_master_key_is_named_not_blamed_on_a_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("master.key");
        std::fs::write(&key, "not a key").unwrap();
        let c = config(&format!(
            "  dataDir: {}\n  masterKeyFile: {}",
            dir.path().display(),
            key.display()
        ));
        let err = recover_lost_metadata(&c, &Overrides::default())
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains(&format!("master key file {}: not hex", key.display())),
            "{text}"
        );
        assert!(
            text.contains("could not be asked whether they hold a copy"),
            "{text}"
        );
        assert!(!text.contains("recovering from them failed"), "{text}");
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
