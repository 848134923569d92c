//! `sublet`: the gateway binary. The command line is defined here; each subcommand (or
//! family of them) runs from its own module.

mod admin;
mod admin_client;
mod dev;
mod migrate;
mod recover;
mod repair;
mod serve;
mod users;

use clap::{Parser, Subcommand};
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
    Dev(dev::DevArgs),
    /// Run a gateway from a standalone YAML file (ProviderPools, StoragePlans,
    /// StorageSchedules and one StorageGateway).
    Serve(serve::ServeArgs),
    /// List, view, apply and delete StoragePlans on a running gateway.
    Plan(admin::ResourceArgs),
    /// List, view, apply and delete StorageSchedules on a running gateway.
    Schedule(admin::ResourceArgs),
    /// List, view, apply and delete ProviderPools on a running gateway: an applied pool's
    /// providers are dialled at once.
    Pool(admin::ResourceArgs),
    /// Show the providers of a running gateway.
    Provider(admin::ProviderArgs),
    /// List a running gateway's buckets with their plans, or set the plan a bucket's new
    /// objects use when a request names no storage class.
    Bucket(admin::BucketArgs),
    /// Users of a running gateway (owners of buckets and keys) with quotas and usage:
    /// create (or change), list, get, delete.
    User(users::UserArgs),
    /// S3 access keys of a running gateway's users: create (prints the secret once),
    /// list, rotate, disable, enable, delete. The configuration file's keys are listed but
    /// change only with the file.
    Key(users::KeyArgs),
    /// Plans of a running gateway with object health and repair queue.
    Status(admin::StatusArgs),
    /// Rebuild the lost shards of a plan's objects (what the operator's rebuild Jobs run),
    /// most at risk first, until none is due.
    Repair(repair::RepairArgs),
    /// Rebuild a lost metadata store from the newest snapshot on the providers
    /// (`sublet serve` stores one every hour). Needs the gateway's config and master key.
    Recover(recover::RecoverArgs),
    /// Copy all metadata (buckets, versions with their layouts, uploads and parts, lifecycle
    /// rules, providers) from one store into another, e.g. from SQLite to PostgreSQL. Stop the
    /// gateway first: writes made during the copy may be missed.
    MigrateMetadata(migrate::MigrateArgs),
    /// The sublet market: `sublet market serve` runs the daemon; `keygen`, `register` and
    /// `call` are a small signing client (the same as `sublet-market`).
    Market {
        #[command(subcommand)]
        command: sublet_market::cli::Command,
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
        Command::Dev(args) => dev::run(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Plan(args) => admin::resource(Kind::StoragePlan, args).await,
        Command::Schedule(args) => admin::resource(Kind::StorageSchedule, args).await,
        Command::Pool(args) => admin::resource(Kind::ProviderPool, args).await,
        Command::Provider(args) => admin::provider(args).await,
        Command::Bucket(args) => admin::bucket(args).await,
        Command::Status(args) => admin::status(args).await,
        Command::User(args) => users::user(args).await,
        Command::Key(args) => users::key(args).await,
        Command::Repair(args) => repair::run(args).await,
        Command::Recover(args) => recover::run(args).await,
        Command::MigrateMetadata(args) => migrate::run(args).await,
        Command::Market { command } => sublet_market::cli::run(command).await,
    };
    // One line per cause, no backtrace: these are problems with input or the machine.
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
