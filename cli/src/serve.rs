//! `sublet serve`: a gateway from a standalone YAML file.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The multi-document YAML file.
    #[arg(long, short)]
    config: PathBuf,
    /// Directory for metadata, master key and identity; overrides spec.dataDir.
    #[arg(long, env = "SUBLET_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Token presented to providers; overrides spec.providerToken.
    #[arg(long, env = "SUBLET_PROVIDER_TOKEN", hide_env_values = true)]
    provider_token: Option<String>,
    /// An access key allowed everything, besides spec.credentials (with --secret-key).
    #[arg(long, env = "SUBLET_ACCESS_KEY", requires = "secret_key")]
    access_key: Option<String>,
    /// The secret of --access-key.
    #[arg(
        long,
        env = "SUBLET_SECRET_KEY",
        hide_env_values = true,
        requires = "access_key"
    )]
    secret_key: Option<String>,
    /// Address of `/metrics`, `/healthz` and the admin API; overrides spec.adminListen.
    #[arg(long, env = "SUBLET_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Bearer token of the admin API (at least 16 characters); without it the gateway
    /// uses `admin.token` in the data directory, created when missing.
    #[arg(long, env = "SUBLET_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The policies belong to the Kubernetes operator: refuse changes through the API.
    #[arg(long, env = "SUBLET_READ_ONLY_POLICIES")]
    read_only_policies: bool,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = sublet_gateway::runtime::Overrides {
        data_dir: args.data_dir,
        provider_token: args.provider_token,
        full_access_key: args.access_key.zip(args.secret_key),
        admin_listen: args.admin_listen,
        admin_token: args.admin_token,
        read_only_policies: args.read_only_policies,
    };
    sublet_gateway::runtime::run(&args.config, &overrides).await
}
