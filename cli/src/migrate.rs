//! `sublet migrate-metadata`: copy all metadata from one store into another.

use sublet_gateway::meta::StoreLocation;

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The store to read: sqlite:PATH or postgres:URL.
    #[arg(long)]
    from: StoreLocation,
    /// The store to fill: sqlite:PATH or postgres:URL (postgres://user:password@host/db).
    #[arg(long, env = "SUBLET_MIGRATE_TO", hide_env_values = true)]
    to: StoreLocation,
    /// Copy into a target that already holds buckets (versions with the same id are
    /// overwritten).
    #[arg(long)]
    force: bool,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let MigrateArgs { from, to, force } = args;
    let counts = tokio::task::spawn_blocking(move || {
        let source = from
            .open(true)
            .map_err(|e| anyhow::anyhow!("--from: {e}"))?;
        let target = to.open(false).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
        sublet_gateway::meta::copy_store(source.as_ref(), target.as_ref(), force)
            .map_err(|e| anyhow::anyhow!("{e}"))
    })
    .await??;
    println!("copied {counts}");
    Ok(())
}
