//! Where a gateway keeps its state: command-line overrides of the StorageGateway spec,
//! the state paths, and opening the metadata store (SQLite or PostgreSQL).

use super::*;

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
                // Bypassing governance retention is granted in the spec only.
                bypass_governance: false,
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
        let options = crate::meta::PgPoolOptions {
            size: postgres.pool_size() as usize,
            wait: postgres.pool_wait(),
        };
        let store = tokio::task::spawn_blocking(move || PostgresStore::open_with(&url, options))
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
