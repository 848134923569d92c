//! `sublet-operator`: runs the sublet controllers and serves `/healthz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use sublet_operator::admin::HttpAdmin;
use sublet_operator::controller::{self, Context, TcpReachability};
use sublet_operator::metrics::Metrics;
use sublet_operator::render::Images;
use tracing_subscriber::EnvFilter;

/// Reconciles sublet custom resources into provider and gateway pods, config, status and
/// rebuild Jobs.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Watch only this namespace; every namespace when omitted.
    #[arg(long, env = "SUBLET_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// Image of gateway pods and rebuild Jobs (runs `sublet`).
    #[arg(long, env = "SUBLET_OPERATOR_GATEWAY_IMAGE", default_value_t = sublet_operator::default_image())]
    gateway_image: String,
    /// Image of provider pods (runs `sublet-provider`).
    #[arg(long, env = "SUBLET_OPERATOR_PROVIDER_IMAGE", default_value_t = sublet_operator::default_image())]
    provider_image: String,
    /// Address for `/healthz` and `/metrics`.
    #[arg(
        long,
        env = "SUBLET_OPERATOR_HTTP_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    http_listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (in-cluster config or ~/.kube/config)")?;
    let metrics = Metrics::new();
    let ctx = Arc::new(Context::new(
        client,
        Images {
            provider: args.provider_image,
            gateway: args.gateway_image,
        },
        metrics.clone(),
        Arc::new(HttpAdmin::default()),
        Arc::new(TcpReachability),
    ));
    tracing::info!(
        namespace = args.namespace.as_deref().unwrap_or("*"),
        "sublet-operator starting"
    );
    let http = sublet_operator::http::serve(args.http_listen, metrics);
    tokio::select! {
        () = controller::run(ctx, args.namespace) => {}
        served = http => served.with_context(|| format!("cannot serve on {}", args.http_listen))?,
    }
    tracing::info!("sublet-operator stopped");
    Ok(())
}
