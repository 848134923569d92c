//! `sublet migrate-metadata`: copy all metadata from one store into another.

use std::time::Duration;

use sublet_crds::DEFAULT_METADATA_POOL_SIZE;
use sublet_crds::gateway::MAX_METADATA_POOL_SIZE;
use sublet_gateway::meta::{PgPoolOptions, StoreLocation};

/// The gateway's default `poolWait` ([`sublet_crds::DEFAULT_METADATA_POOL_WAIT_SECS`]), as a
/// flag takes it.
const DEFAULT_POOL_WAIT: &str = "10s";

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
    /// The most connections kept open to each PostgreSQL store, 1 to 64: the gateway's
    /// `spec.metadata.postgres.poolSize`.
    #[arg(long, default_value_t = DEFAULT_METADATA_POOL_SIZE, value_parser = parse_pool_size)]
    pool_size: u32,
    /// How long a step of the copy waits for a free PostgreSQL connection before it fails
    /// (`10s`, `2m`): the gateway's `spec.metadata.postgres.poolWait`.
    #[arg(long, default_value = DEFAULT_POOL_WAIT, value_parser = parse_pool_wait)]
    pool_wait: Duration,
}

fn parse_pool_size(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_METADATA_POOL_SIZE).contains(n))
        .ok_or_else(|| {
            format!(
                "{s:?} connections: use 1 to {MAX_METADATA_POOL_SIZE} (default {DEFAULT_METADATA_POOL_SIZE}), as spec.metadata.postgres.poolSize"
            )
        })
}

fn parse_pool_wait(s: &str) -> Result<Duration, String> {
    let wait = sublet_crds::Duration::parse(s).map_err(|e| e.to_string())?;
    if wait.as_secs() == 0 {
        return Err(
            "must be at least 1s (e.g. 10s): a step finding every connection busy waits this long"
                .into(),
        );
    }
    Ok(wait.as_std())
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let MigrateArgs {
        from,
        to,
        force,
        pool_size,
        pool_wait,
    } = args;
    let pool = PgPoolOptions {
        size: pool_size as usize,
        wait: pool_wait,
    };
    let counts = tokio::task::spawn_blocking(move || {
        let source = from
            .open(true, pool)
            .map_err(|e| anyhow::anyhow!("--from: {e}"))?;
        let target = to
            .open(false, pool)
            .map_err(|e| anyhow::anyhow!("--to: {e}"))?;
        sublet_gateway::meta::copy_store(source.as_ref(), target.as_ref(), force)
            .map_err(|e| anyhow::anyhow!("{e}"))
    })
    .await??;
    println!("copied {counts}");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;
    use sublet_crds::DEFAULT_METADATA_POOL_WAIT_SECS;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MigrateArgs,
    }

    fn parse(extra: &[&str]) -> Result<MigrateArgs, String> {
        let base = [
            "sublet",
            "--from",
            "sqlite:/a.db",
            "--to",
            "postgres://db/x",
        ];
        Cli::try_parse_from(base.iter().chain(extra))
            .map(|c| c.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_pool_settings_default_to_the_gateways_and_take_its_forms() {
        let args = parse(&[]).unwrap();
        assert_eq!(
            (args.pool_size, args.pool_wait),
            (
                DEFAULT_METADATA_POOL_SIZE,
                Duration::from_secs(DEFAULT_METADATA_POOL_WAIT_SECS)
            )
        );
        let args = parse(&["--pool-size", "4", "--pool-wait", "1m30s"]).unwrap();
        assert_eq!(
            (args.pool_size, args.pool_wait),
            (4, Duration::from_secs(90))
        );
    }

    #[test]
    fn pool_settings_out_of_range_are_refused_naming_the_limits() {
        for (flags, expected) in [
            (["--pool-size", "0"], "use 1 to 64"),
            (["--pool-size", "65"], "use 1 to 64"),
            (["--pool-size", "many"], "use 1 to 64"),
            (["--pool-wait", "0s"], "must be at least 1s"),
            (["--pool-wait", "soon"], "soon"),
        ] {
            let e = parse(&flags)
                .err()
                .unwrap_or_else(|| panic!("{flags:?} accepted"));
            assert!(e.contains(expected), "{flags:?}: {e}");
        }
    }
}
