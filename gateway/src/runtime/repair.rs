//! `sublet repair`: passes over a plan's repair queue, on the state a file names or through
//! a running gateway's admin API.

use bytes::Bytes;

use crate::upkeep::repair::{PASS_LIMIT, RepairReport, Repairer};

/// What `sublet repair` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct RepairCommand {
    pub plan: String,
    /// One pass, then exit.
    pub once: bool,
    /// Ask the gateway at this admin URL to repair instead of opening its state here.
    pub admin_url: Option<String>,
    /// The admin token `admin_url` wants.
    pub admin_token: Option<String>,
    /// Bytes per second, overriding the schedule's bandwidth limit.
    pub bandwidth_limit: Option<u64>,
}

/// `sublet repair`: passes over the plan's queue until nothing due is left (or no pass makes
/// progress), through the gateway's admin API when `admin_url` is set (a Kubernetes Job:
/// the metadata lives in the gateway pod), else on the state `config` names (standalone).
/// Fails when the last pass left versions it could not repair.
pub async fn run_command(
    cmd: &RepairCommand,
    config: &sublet_crds::Config,
    overrides: &crate::runtime::Overrides,
) -> anyhow::Result<()> {
    // Standalone, the plans applied through the admin API count too.
    let layered;
    let config = match (config.gateway(), &cmd.admin_url) {
        (Some(g), None) => {
            let spec = overrides.apply(&g.spec)?;
            let paths = crate::runtime::state_paths(&spec, overrides.data_dir.as_deref())?;
            layered = crate::admin::policy::load_layered(config, &paths.data_dir)?;
            &layered
        }
        _ => config,
    };
    if !config.plans.contains_key(&cmd.plan) {
        anyhow::bail!(
            "plan {} is not in the config; it has {}",
            cmd.plan,
            config.plans.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let local = match &cmd.admin_url {
        Some(url) if cmd.admin_token.as_deref().is_none_or(str::is_empty) => anyhow::bail!(
            "repairing through {url} needs the gateway's admin token: pass --token or set \
             SUBLET_ADMIN_TOKEN (the gateway keeps it in admin.token in its data directory; \
             under Kubernetes the Secret <gateway>-admin)"
        ),
        Some(_) => None,
        None => {
            let built = crate::runtime::build(config, overrides).await?;
            Some(LocalRepair::start(
                built.gateway,
                cmd.bandwidth_limit,
                crate::node::WRITE_HOLD_RENEW,
            ))
        }
    };
    let mut total = RepairReport {
        plan: cmd.plan.clone(),
        ..RepairReport::default()
    };
    loop {
        let report = match (&local, &cmd.admin_url) {
            (Some(LocalRepair { repairer: r, .. }), _) => {
                let policy = r.node().rebuild_policy(&cmd.plan);
                let urgent_only = !policy.in_window(crate::upkeep::repair::local_minute_of_day());
                r.run_pass(&cmd.plan, urgent_only, PASS_LIMIT).await?
            }
            (None, Some(url)) => {
                let token = cmd.admin_token.as_deref().unwrap_or_default();
                remote_pass(url, token, &cmd.plan, cmd.bandwidth_limit).await?
            }
            (None, None) => unreachable!("local is set without an admin URL"),
        };
        eprintln!(
            "plan {}: examined {}, repaired {} ({} shards, {} bytes), failed {}, conflicts {}",
            report.plan,
            report.examined,
            report.repaired,
            report.shards_rebuilt,
            report.bytes_written,
            report.failed,
            report.conflicts
        );
        total.examined += report.examined;
        total.repaired += report.repaired;
        total.failed = report.failed;
        if cmd.once || report.examined == 0 || report.repaired == 0 {
            break;
        }
    }
    if total.failed > 0 {
        anyhow::bail!(
            "plan {}: {} versions could not be repaired (see the log); they stay queued",
            cmd.plan,
            total.failed
        );
    }
    Ok(())
}

/// Repairs run in this process on the state the config names: the repairer, and the
/// renewal of the holds its rebuilt shards take in a store other gateways share (as a
/// serving gateway renews its writes'), so their garbage collection keeps the shards of a
/// repair that runs longer than [`crate::node::WRITE_HOLD_MS`]. Dropping it stops the renewal.
struct LocalRepair {
    repairer: Repairer,
    stop: tokio::sync::watch::Sender<bool>,
}

impl LocalRepair {
    /// Must be called inside a tokio runtime (it spawns the renewal).
    fn start(
        node: std::sync::Arc<crate::node::Node>,
        bandwidth_limit: Option<u64>,
        renew_every: std::time::Duration,
    ) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // The task ends when `stop` changes or is dropped.
        drop(crate::upkeep::audit::hold_writes_in_flight(
            std::sync::Arc::clone(&node),
            renew_every,
            stopped,
        ));
        LocalRepair {
            repairer: Repairer::new(node, None).with_bandwidth_limit(bandwidth_limit),
            stop,
        }
    }
}

impl Drop for LocalRepair {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// One pass through `POST {admin}/admin/v1/plans/{plan}/repair`.
async fn remote_pass(
    admin_url: &str,
    token: &str,
    plan: &str,
    bandwidth_limit: Option<u64>,
) -> anyhow::Result<RepairReport> {
    use http_body_util::BodyExt;
    let mut url = format!(
        "{}/admin/v1/plans/{plan}/repair",
        admin_url.trim_end_matches('/')
    );
    if let Some(limit) = bandwidth_limit {
        url.push_str(&format!("?bandwidthLimit={limit}"));
    }
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let request = http::Request::post(&url)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(http_body_util::Empty::new())
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?
        .to_bytes();
    if !status.is_success() {
        anyhow::bail!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    serde_json::from_slice(&body).map_err(|e| anyhow::anyhow!("{url}: unexpected answer: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::LocalRepair;
    use crate::meta::MetadataStore;
    use crate::node::{Node, Plan, WRITE_HOLD_MS};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_local_repair_keeps_renewing_the_holds_of_its_rebuilt_shards() {
        let Some(store) = tokio::task::spawn_blocking(crate::meta::test_postgres::store)
            .await
            .unwrap()
        else {
            return;
        };
        let store: Arc<dyn MetadataStore> = Arc::new(store);
        let master = crate::datapath::codec::MasterKey::from_bytes(&[7; 32]);
        let plan = Plan {
            name: "p".into(),
            scheme: crate::datapath::layout::Scheme::Replicas { copies: 1 },
            encrypt: false,
            segment_size: 1 << 20,
            write_quorum: 1,
            inline_up_to: 0,
        };
        let node =
            Arc::new(Node::new(Arc::clone(&store), Arc::new(master), vec![plan], vec![]).unwrap());
        let repair = LocalRepair::start(Arc::clone(&node), None, Duration::from_millis(100));
        let started = crate::clock::now_ms();
        // What a repair takes before it stores a rebuilt shard (upkeep/repair.rs).
        let hold = node.start_write("-rtest").await.unwrap();
        // Past the first hold's end by 300 ms: only a renewal since keeps it held then.
        let past_first_hold = started + WRITE_HOLD_MS + 300;
        let held = |at: i64| {
            let store = Arc::clone(&store);
            async move {
                tokio::task::spawn_blocking(move || store.held_writes(at))
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(held(past_first_hold).await, vec!["-rtest".to_owned()]);
        // The repair's write ends: the next renewal ends its hold.
        drop(hold);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(held(crate::clock::now_ms()).await.is_empty());
        drop(repair);
    }
}
