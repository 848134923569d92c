//! `sublet`: the gateway binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sublet_gateway::admin::client::{AdminClient, Output};
use sublet_gateway::admin::policy::Kind;
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
    },
    /// List, view, apply and delete StoragePlans on a running gateway.
    Plan {
        #[command(subcommand)]
        action: ResourceAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List, view, apply and delete StorageSchedules on a running gateway.
    Schedule {
        #[command(subcommand)]
        action: ResourceAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List, view, apply and delete ProviderPools on a running gateway: an applied pool's
    /// providers are dialled at once.
    Pool {
        #[command(subcommand)]
        action: ResourceAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show the providers of a running gateway.
    Provider {
        #[command(subcommand)]
        action: ProviderAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List a running gateway's buckets with their plans, or set the plan a bucket's new
    /// objects use when a request names no storage class.
    Bucket {
        #[command(subcommand)]
        action: BucketAction,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Plans of a running gateway with object health and repair queue.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Rebuild the lost shards of a plan's objects (what the operator's rebuild Jobs run),
    /// most at risk first, until none is due.
    Repair {
        /// The StoragePlan whose objects to repair.
        #[arg(long)]
        plan: String,
        /// The multi-document YAML file the gateway runs from.
        #[arg(long, short)]
        config: PathBuf,
        /// One pass over the queue, then exit.
        #[arg(long)]
        once: bool,
        /// Ask the gateway at this admin URL to do the repairs (a Job beside a gateway pod)
        /// instead of opening the gateway's state here.
        #[arg(long, env = "SUBLET_ADMIN_URL")]
        admin_url: Option<String>,
        /// The admin token of the gateway at --admin-url (its DATA_DIR/admin.token).
        #[arg(long, env = "SUBLET_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Bytes per second to read plus write, e.g. `50Mi`; overrides the schedule's.
        #[arg(long, env = "SUBLET_REPAIR_BANDWIDTH_LIMIT")]
        bandwidth_limit: Option<String>,
        /// Directory of the gateway's metadata and identity; overrides spec.dataDir.
        #[arg(long, env = "SUBLET_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Token presented to providers; overrides spec.providerToken.
        #[arg(long, env = "SUBLET_PROVIDER_TOKEN", hide_env_values = true)]
        provider_token: Option<String>,
    },
    /// Rebuild a lost metadata store from the newest snapshot on the providers
    /// (`sublet serve` stores one every hour). Needs the gateway's config and master key.
    Recover {
        /// The same YAML file `sublet serve` runs.
        #[arg(long, short)]
        config: PathBuf,
        /// Directory for metadata, master key and identity; overrides spec.dataDir.
        #[arg(long, env = "SUBLET_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Token presented to providers; overrides spec.providerToken.
        #[arg(long, env = "SUBLET_PROVIDER_TOKEN", hide_env_values = true)]
        provider_token: Option<String>,
        /// Replace an existing metadata file.
        #[arg(long)]
        force: bool,
    },
    /// Copy all metadata (buckets, versions with their layouts, uploads and parts, lifecycle
    /// rules, providers) from one store into another, e.g. from SQLite to PostgreSQL. Stop the
    /// gateway first: writes made during the copy may be missed.
    MigrateMetadata {
        /// The store to read: sqlite:PATH or postgres:URL.
        #[arg(long)]
        from: sublet_gateway::meta::StoreLocation,
        /// The store to fill: sqlite:PATH or postgres:URL (postgres://user:password@host/db).
        #[arg(long, env = "SUBLET_MIGRATE_TO", hide_env_values = true)]
        to: sublet_gateway::meta::StoreLocation,
        /// Copy into a target that already holds buckets (versions with the same id are
        /// overwritten).
        #[arg(long)]
        force: bool,
    },
    /// The sublet market: `sublet market serve` runs the daemon; `keygen`, `register` and
    /// `call` are a small signing client (the same as `sublet-market`).
    Market {
        #[command(subcommand)]
        command: sublet_market::cli::Command,
    },
}

/// Where the admin API is and how to print its answers.
#[derive(clap::Args)]
struct AdminArgs {
    /// The gateway's admin address (spec.adminListen).
    #[arg(long, global = true, env = "SUBLET_ADMIN_URL", default_value = sublet_gateway::admin::client::DEFAULT_ADMIN_URL)]
    admin_url: String,
    /// The admin token (what the gateway keeps in DATA_DIR/admin.token).
    #[arg(
        long,
        global = true,
        env = "SUBLET_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t)]
    output: Output,
}

#[derive(Subcommand)]
enum ResourceAction {
    /// Every resource of the kind.
    List,
    /// One resource.
    Get { name: String },
    /// Create or change the resources of a YAML file (`-` reads stdin).
    Apply {
        #[arg(long, short)]
        file: PathBuf,
    },
    /// Delete a resource; refused while anything uses it.
    Delete { name: String },
}

#[derive(Subcommand)]
enum BucketAction {
    /// Buckets with their own plan (if set), the plan new objects get, and versioning.
    List,
    /// Set the default plan of a bucket; `--clear` falls back to the gateway's defaultPlan.
    SetPlan {
        bucket: String,
        #[arg(required_unless_present = "clear")]
        plan: Option<String>,
        #[arg(long, conflicts_with = "plan")]
        clear: bool,
    },
}

#[derive(Subcommand)]
enum ProviderAction {
    /// Providers with pool, status, last probe, free space, audit score and stored shards.
    List,
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
        } => sublet_gateway::runtime::dev::run(dir, listen, admin_listen).await,
        Command::Serve {
            config,
            data_dir,
            provider_token,
            access_key,
            secret_key,
            admin_listen,
            admin_token,
            read_only_policies,
        } => {
            let overrides = sublet_gateway::runtime::Overrides {
                data_dir,
                provider_token,
                full_access_key: access_key.zip(secret_key),
                admin_listen,
                admin_token,
                read_only_policies,
            };
            sublet_gateway::runtime::run(&config, &overrides).await
        }
        Command::Plan { action, admin } => resource(Kind::StoragePlan, action, admin).await,
        Command::Schedule { action, admin } => resource(Kind::StorageSchedule, action, admin).await,
        Command::Pool { action, admin } => resource(Kind::ProviderPool, action, admin).await,
        Command::Provider {
            action: ProviderAction::List,
            admin,
        } => {
            let client = AdminClient::new(&admin.admin_url, admin.token);
            print(sublet_gateway::admin::client::providers(&client, admin.output).await)
        }
        Command::Bucket { action, admin } => {
            let client = AdminClient::new(&admin.admin_url, admin.token);
            match action {
                BucketAction::List => {
                    print(sublet_gateway::admin::client::buckets(&client, admin.output).await)
                }
                BucketAction::SetPlan { bucket, plan, .. } => print(
                    sublet_gateway::admin::client::set_bucket_plan(
                        &client,
                        &bucket,
                        plan.as_deref(),
                    )
                    .await,
                ),
            }
        }
        Command::Status { admin } => {
            let client = AdminClient::new(&admin.admin_url, admin.token);
            print(sublet_gateway::admin::client::status(&client, admin.output).await)
        }
        Command::Repair {
            plan,
            config,
            once,
            admin_url,
            token,
            bandwidth_limit,
            data_dir,
            provider_token,
        } => {
            let cmd = sublet_gateway::runtime::repair::RepairCommand {
                plan,
                once,
                admin_url,
                admin_token: token,
                bandwidth_limit: None,
            };
            repair(cmd, config, bandwidth_limit, data_dir, provider_token).await
        }
        Command::Recover {
            config,
            data_dir,
            provider_token,
            force,
        } => recover(&config, data_dir, provider_token, force).await,
        Command::MigrateMetadata { from, to, force } => migrate_metadata(from, to, force).await,
        Command::Market { command } => sublet_market::cli::run(command).await,
    };
    // One line per cause, no backtrace: these are problems with input or the machine.
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn print(text: anyhow::Result<String>) -> anyhow::Result<()> {
    print!("{}", text?);
    Ok(())
}

async fn resource(kind: Kind, action: ResourceAction, admin: AdminArgs) -> anyhow::Result<()> {
    use sublet_gateway::admin::client as cli;
    let client = AdminClient::new(&admin.admin_url, admin.token);
    print(match action {
        ResourceAction::List => cli::list(&client, kind, admin.output).await,
        ResourceAction::Get { name } => cli::get(&client, kind, &name, admin.output).await,
        ResourceAction::Apply { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| anyhow::anyhow!("stdin: {e}"))?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
            };
            cli::apply(&client, &text, &file.display().to_string()).await
        }
        ResourceAction::Delete { name } => cli::delete(&client, kind, &name).await,
    })
}

async fn repair(
    mut cmd: sublet_gateway::runtime::repair::RepairCommand,
    config: PathBuf,
    bandwidth_limit: Option<String>,
    data_dir: Option<PathBuf>,
    provider_token: Option<String>,
) -> anyhow::Result<()> {
    cmd.bandwidth_limit = bandwidth_limit
        .map(|b| {
            sublet_crds::ByteSize::parse(&b)
                .map(|s| s.bytes())
                .map_err(|e| {
                    anyhow::anyhow!("--bandwidth-limit (SUBLET_REPAIR_BANDWIDTH_LIMIT) {b}: {e}")
                })
        })
        .transpose()?;
    let file = sublet_crds::load_file(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let overrides = sublet_gateway::runtime::Overrides {
        data_dir,
        provider_token,
        ..Default::default()
    };
    sublet_gateway::runtime::repair::run_command(&cmd, &file, &overrides).await
}

async fn recover(
    config_path: &std::path::Path,
    data_dir: Option<PathBuf>,
    provider_token: Option<String>,
    force: bool,
) -> anyhow::Result<()> {
    let config = match sublet_crds::load_file(config_path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            std::process::exit(2);
        }
    };
    let overrides = sublet_gateway::runtime::Overrides {
        data_dir,
        provider_token,
        ..Default::default()
    };
    let done = sublet_gateway::runtime::recover(&config, &overrides, force).await?;
    let replayed = &done.replayed;
    match &done.manifest {
        Some(manifest) => {
            println!(
                "restored the metadata snapshot of {} ({} bytes) to {}",
                chrono::DateTime::from_timestamp_millis(manifest.created)
                    .map_or_else(|| manifest.created.to_string(), |t| t.to_rfc3339()),
                manifest.size,
                done.path.display()
            );
            println!(
                "replayed the metadata journal written after it: {} segments, {} changes applied, {} already in the snapshot",
                replayed.segments, replayed.applied, replayed.skipped
            );
        }
        None => println!(
            "no metadata snapshot yet: rebuilt {} from the whole metadata journal: {} segments, {} changes applied, {} skipped",
            done.path.display(),
            replayed.segments,
            replayed.applied,
            replayed.skipped
        ),
    }
    for problem in &replayed.unreadable {
        println!("NOT REPLAYED: journal segment {problem} has no readable copy");
    }
    for problem in &replayed.failed {
        println!("NOT REPLAYED: {problem}");
    }
    if !replayed.unlisted.is_empty() {
        println!(
            "could not list the journal on {} providers: {}",
            replayed.unlisted.len(),
            replayed.unlisted.join(", ")
        );
    }
    if let Some(path) = &done.overlay {
        println!(
            "wrote back the policies applied through the admin API to {}",
            path.display()
        );
    }
    let after = &done.after;
    if after.shards == 0 {
        println!(
            "nothing is missing: the restored metadata names every shard this installation stored after the snapshot (or, without one, at all)"
        );
    } else {
        println!(
            "NOT RECOVERED: {} writes ({} shards, {} bytes, the newest at {}) were stored after \
             that snapshot and neither it nor the journal describes them (writes never \
             acknowledged, or journal segments lost); those objects must be uploaded again",
            after.writes,
            after.shards,
            after.bytes,
            after
                .newest
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .map_or_else(|| "?".to_owned(), |t| t.to_rfc3339())
        );
    }
    if !after.unlisted.is_empty() {
        println!(
            "could not list {} providers, so that count may be short: {}",
            after.unlisted.len(),
            after.unlisted.join(", ")
        );
    }
    println!("start the gateway with `sublet serve`");
    Ok(())
}

async fn migrate_metadata(
    from: sublet_gateway::meta::StoreLocation,
    to: sublet_gateway::meta::StoreLocation,
    force: bool,
) -> anyhow::Result<()> {
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
