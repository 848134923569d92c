//! `sublet dev`: a gateway and 6 providers on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DevArgs {
    /// Where all state lives (metadata, master key, credentials, shards).
    #[arg(long, default_value = "./sublet-dev")]
    dir: PathBuf,
    /// S3 listen address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, default_value = "127.0.0.1:9001")]
    admin_listen: SocketAddr,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let DevArgs {
        dir,
        listen,
        admin_listen,
    } = args;
    sublet_gateway::runtime::dev::run(dir, listen, admin_listen).await
}
