//! `sublet-operator`: runs the sublet controllers and serves `/healthz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use std::time::Duration;
use sublet_operator::admin::HttpAdmin;

use sublet_operator::controller::{self, Context, NetworkProbe};
use sublet_operator::leader::LeaseLock;
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
    /// Run only while holding the Lease `sublet-operator` (in `POD_NAMESPACE`), so several
    /// replicas can run with one active.
    #[arg(long, env = "SUBLET_OPERATOR_LEADER_ELECT")]
    leader_elect: bool,
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
        // Colour codes only for a person at a terminal, never into a pod's log.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (in-cluster config or ~/.kube/config)")?;
    let metrics = Metrics::new().context("cannot set up metrics")?;
    let ctx = Arc::new(Context::new(
        client,
        Images {
            provider: args.provider_image,
            gateway: args.gateway_image,
        },
        metrics.clone(),
        Arc::new(HttpAdmin::default()),
        Arc::new(NetworkProbe::default()),
    ));
    tracing::info!(
        namespace = args.namespace.as_deref().unwrap_or("*"),
        "sublet-operator starting"
    );
    // Health and metrics answer while waiting for the Lease, so the pod is not killed.
    let http = tokio::spawn(sublet_operator::http::serve(args.http_listen, metrics));
    let lease = if args.leader_elect {
        let namespace = std::env::var("POD_NAMESPACE")
            .ok()
            .or_else(|| args.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("sublet-operator-{}", std::process::id()));
        let lock = LeaseLock::new(
            ctx.client.clone(),
            &namespace,
            "sublet-operator",
            &identity,
            Duration::from_secs(15),
        );
        acquire(&lock, &identity).await;
        Some(lock)
    } else {
        None
    };
    let controllers = controller::run(ctx, args.namespace);
    tokio::pin!(controllers);
    tokio::select! {
        () = &mut controllers => {}
        served = http => served?.with_context(|| format!("cannot serve on {}", args.http_listen))?,
        lost = hold(lease.as_ref()) => return Err(lost),
        () = shutdown_requested() => {
            // The controllers stop on the same signal once their reconciles finish; one
            // stuck (e.g. a watch failing over and over) must not keep the pod past its
            // grace period.
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut controllers).await.is_err() {
                tracing::warn!(grace = ?SHUTDOWN_GRACE, "controllers still busy; stopping anyway");
            }
        }
    }
    // Hand the Lease over now rather than make the next leader wait for it to run out.
    if let Some(lock) = &lease {
        match lock.release().await {
            Ok(()) => tracing::info!("lease released"),
            Err(err) => tracing::warn!(%err, "cannot release the lease; it runs out by itself"),
        }
    }
    tracing::info!("sublet-operator stopped");
    Ok(())
}

/// How long the controllers get to finish after SIGTERM; well inside Kubernetes' default
/// grace period of 30 s.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Returns on SIGTERM or ctrl-c.
async fn shutdown_requested() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown requested");
}

/// Waits until this replica holds the Lease.
async fn acquire(lock: &LeaseLock, identity: &str) {
    loop {
        match lock.try_acquire().await {
            Ok(true) => {
                tracing::info!(identity, "leading");
                return;
            }
            Ok(false) => tracing::debug!("another replica leads"),
            Err(err) => tracing::warn!(%err, "cannot read the lease"),
        }
        tokio::time::sleep(lock.renew_every()).await;
    }
}

/// Renews the Lease; returns when it is lost, so the process stops before another replica
/// starts reconciling. Without a Lease it never returns.
async fn hold(lease: Option<&LeaseLock>) -> anyhow::Error {
    let Some(lock) = lease else {
        return std::future::pending().await;
    };
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(lock.renew_every()).await;
        match lock.try_acquire().await {
            Ok(true) => failures = 0,
            Ok(false) => return anyhow::anyhow!("lost the lease to another replica; stopping"),
            Err(err) => {
                failures += 1;
                tracing::warn!(%err, failures, "cannot renew the lease");
                // Two missed renewals leave a third of the lease: stop before it runs out.
                if failures >= 2 {
                    return anyhow::anyhow!("cannot renew the lease: {err}; stopping");
                }
            }
        }
    }
}
