//! The subcommands that talk to a running gateway's admin API: `sublet plan`, `schedule`,
//! `pool` (list, get, apply, delete), `provider list`, `bucket list|set-plan` and `status`.

use std::path::PathBuf;

use clap::Subcommand;
use sublet_gateway::admin::policy::Kind;

use crate::admin_client::{self as client, AdminClient, DEFAULT_ADMIN_URL, Output};

/// Where the admin API is and how to print its answers.
#[derive(clap::Args)]
pub struct AdminArgs {
    /// The gateway's admin address (spec.adminListen).
    #[arg(long, global = true, env = "SUBLET_ADMIN_URL", default_value = DEFAULT_ADMIN_URL)]
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
    pub(crate) output: Output,
}

impl AdminArgs {
    pub(crate) fn client(&self) -> AdminClient {
        AdminClient::new(&self.admin_url, self.token.clone())
    }
}

// `sublet plan|schedule|pool`: the variant's doc comment in main.rs is the help.
#[derive(clap::Args)]
pub struct ResourceArgs {
    #[command(subcommand)]
    action: ResourceAction,
    #[command(flatten)]
    admin: AdminArgs,
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

// `sublet provider`.
#[derive(clap::Args)]
pub struct ProviderArgs {
    #[command(subcommand)]
    action: ProviderAction,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Subcommand)]
enum ProviderAction {
    /// Providers with pool, status, last probe, free space, audit score and stored shards.
    List,
}

// `sublet bucket`.
#[derive(clap::Args)]
pub struct BucketArgs {
    #[command(subcommand)]
    action: BucketAction,
    #[command(flatten)]
    admin: AdminArgs,
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

// `sublet status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    admin: AdminArgs,
}

/// `sublet plan|schedule|pool ...` for the resources of `kind`.
pub async fn resource(kind: Kind, args: ResourceArgs) -> anyhow::Result<()> {
    let ResourceArgs { action, admin } = args;
    let client = admin.client();
    print(match action {
        ResourceAction::List => client::list(&client, kind, admin.output).await,
        ResourceAction::Get { name } => client::get(&client, kind, &name, admin.output).await,
        ResourceAction::Apply { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| anyhow::anyhow!("stdin: {e}"))?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
            };
            client::apply(&client, &text, &file.display().to_string()).await
        }
        ResourceAction::Delete { name } => client::delete(&client, kind, &name).await,
    })
}

/// `sublet provider list`.
pub async fn provider(args: ProviderArgs) -> anyhow::Result<()> {
    let ProviderAction::List = args.action;
    print(client::providers(&args.admin.client(), args.admin.output).await)
}

/// `sublet bucket list|set-plan`.
pub async fn bucket(args: BucketArgs) -> anyhow::Result<()> {
    let client = args.admin.client();
    print(match args.action {
        BucketAction::List => client::buckets(&client, args.admin.output).await,
        BucketAction::SetPlan { bucket, plan, .. } => {
            client::set_bucket_plan(&client, &bucket, plan.as_deref()).await
        }
    })
}

/// `sublet status`.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    print(client::status(&args.admin.client(), args.admin.output).await)
}

fn print(text: anyhow::Result<String>) -> anyhow::Result<()> {
    print!("{}", text?);
    Ok(())
}
