//! `sublet-market`: runs the market daemon, and is a small signing client for it.

use clap::Parser;
use sublet_market::cli::Command;

#[derive(Parser)]
#[command(
    name = "sublet-market",
    version,
    about = "sublet market: offers, contracts, receipts and the escrow ledger"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    sublet_market::cli::run(Cli::parse().command).await
}
