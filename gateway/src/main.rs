//! `sublet`: the gateway binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "sublet",
    version,
    about = "S3-compatible storage over encrypted, erasure-coded shards"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a gateway and 6 providers on loopback, state in one directory.
    Dev {
        /// Where all state lives (metadata, master key, credentials, shards).
        #[arg(long, default_value = "./sublet-dev")]
        dir: PathBuf,
        /// S3 listen address.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Address of `/metrics` and `/healthz`.
        #[arg(long, default_value = "127.0.0.1:9001")]
        admin_listen: SocketAddr,
    },
    /// Run a gateway from a standalone YAML file (ProviderPools, StoragePlans,
    /// StorageSchedules and one StorageGateway).
    Serve {
        /// The multi-document YAML file.
        #[arg(long, short)]
        config: PathBuf,
        /// Directory for metadata, master key and identity; overrides spec.dataDir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    let result = match cli.command {
        Command::Dev {
            dir,
            listen,
            admin_listen,
        } => sublet_gateway::dev::run(dir, listen, admin_listen).await,
        Command::Serve { config, data_dir } => {
            sublet_gateway::serve::run(&config, data_dir.as_deref()).await
        }
    };
    // One line per cause, no backtrace: these are problems with input or the machine.
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
