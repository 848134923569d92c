//! `sublet repair`: rebuild the lost shards of a plan's objects, here or through a gateway's
//! admin API.

use std::path::PathBuf;

use sublet_gateway::runtime::repair::RepairCommand;

#[derive(clap::Args)]
pub struct RepairArgs {
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
}

pub async fn run(args: RepairArgs) -> anyhow::Result<()> {
    let bandwidth_limit = args
        .bandwidth_limit
        .map(|b| {
            sublet_crds::ByteSize::parse(&b)
                .map(|s| s.bytes())
                .map_err(|e| {
                    anyhow::anyhow!("--bandwidth-limit (SUBLET_REPAIR_BANDWIDTH_LIMIT) {b}: {e}")
                })
        })
        .transpose()?;
    let cmd = RepairCommand {
        plan: args.plan,
        once: args.once,
        admin_url: args.admin_url,
        admin_token: args.token,
        bandwidth_limit,
    };
    let file = sublet_crds::load_file(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let overrides = sublet_gateway::runtime::Overrides {
        data_dir: args.data_dir,
        provider_token: args.provider_token,
        ..Default::default()
    };
    sublet_gateway::runtime::repair::run_command(&cmd, &file, &overrides).await
}
