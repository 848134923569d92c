//! Reporting: signed usage receipts, prepaid escrows, and contracting more providers while
//! running.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde_json::json;
use sublet_crds::MarketPool;
use sublet_market_api::client::Client;
use sublet_market_api::contracts::{Contract, ContractState};
use sublet_market_api::identity::Signer;
use sublet_provider::identity::{NodeId, NodeIdentity};
use tokio::sync::watch;
use tracing::{info, warn};

use super::*;
use crate::datapath::placement::HealthBoard;
use crate::meta::MetadataStore;

/// How long a proposal may stay unanswered before the gateway withdraws it and asks another
/// provider.
pub(super) const PROPOSAL_PATIENCE_SECS: i64 = 600;

/// How long a pass that contracts more providers waits for them to accept.
const RECONTRACT_WAIT: Duration = Duration::from_secs(5);

/// What contracting while running needs: the key to sign with, and the gateway to connect
/// new providers to.
struct Recontracting {
    identity: Arc<NodeIdentity>,
    dialer: Arc<crate::runtime::Dialer>,
    gateway: Arc<crate::node::Node>,
}

/// Signs and submits the gateway's usage receipts, and keeps each contract's escrow
/// prepaid for a period ahead.
pub struct UsageReporter {
    signer: Signer,
    /// Market URL → the contract ids signed there.
    markets: Mutex<BTreeMap<String, Vec<String>>>,
    /// The market pools of the config, kept contracted while the gateway runs.
    pools: BTreeMap<String, MarketPool>,
    data_dir: PathBuf,
    recontract: Option<Recontracting>,
    usage: Arc<MarketUsage>,
    meta: Arc<dyn MetadataStore>,
    health: Arc<HealthBoard>,
}

/// What one reporting pass did.
#[derive(Debug, Default)]
pub struct ReportPass {
    /// (contract, period start, status the market answered).
    pub receipts: Vec<(String, i64, String)>,
    /// (contract, credits prepaid).
    pub prepaid: Vec<(String, i64)>,
    /// The shortest receipt period of the active contracts.
    pub shortest_period: Option<i64>,
}

impl UsageReporter {
    pub fn new(
        identity: &NodeIdentity,
        contracted: &[(String, Contracted)],
        usage: Arc<MarketUsage>,
        meta: Arc<dyn MetadataStore>,
        health: Arc<HealthBoard>,
    ) -> anyhow::Result<Self> {
        let mut markets: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (url, c) in contracted {
            markets
                .entry(url.clone())
                .or_default()
                .push(c.contract.clone());
        }
        Ok(Self {
            signer: signer_of(identity)?,
            markets: Mutex::new(markets),
            pools: BTreeMap::new(),
            data_dir: PathBuf::new(),
            recontract: None,
            usage,
            meta,
            health,
        })
    }

    /// One pass: samples stored bytes per provider, submits the receipts of the periods
    /// that are over, tops up escrows.
    pub async fn pass(&self) -> anyhow::Result<ReportPass> {
        let mut out = ReportPass::default();
        let stored = {
            let meta = Arc::clone(&self.meta);
            tokio::task::spawn_blocking(move || meta.provider_usage())
                .await?
                .map_err(|e| anyhow!("reading stored bytes per provider: {e}"))?
        };
        let node_of: HashMap<String, String> = self
            .usage
            .contracts
            .read()
            .map(|m| m.iter().map(|(n, c)| (c.clone(), n.clone())).collect())
            .unwrap_or_default();
        let mut active_all = Vec::new();
        if let Some(r) = &self.recontract
            && let Err(e) = self.recontract(r).await
        {
            warn!(error = %format!("{e:#}"), "keeping the market pools contracted failed; retrying next pass");
        }
        let markets = self.markets.lock().map(|m| m.clone()).unwrap_or_default();
        for (url, ids) in &markets {
            let client = self.client_for(url)?;
            let mine: Vec<Contract> =
                serde_json::from_value(get(&client, Some(&self.signer), "/v1/contracts").await?)?;
            let active: Vec<Contract> = mine
                .into_iter()
                .filter(|c| c.state == ContractState::Active && ids.contains(&c.id))
                .collect();
            let now = sublet_market_api::unix_now();
            let due = {
                let mut meter = self.usage.meter();
                for c in &active {
                    if let Some(accepted) = c.accepted_at {
                        meter.track(&c.id, accepted, c.period_secs, c.term_days);
                    }
                    let bytes = node_of
                        .get(&c.id)
                        .and_then(|node| stored.get(node))
                        .map_or(0, |(_, bytes)| *bytes);
                    meter.sample(&c.id, now, bytes);
                }
                meter.due(sublet_market_api::meter::REPORT_GRACE_SECS)
            };
            for (contract, receipt) in due {
                let Some(c) = active.iter().find(|c| c.id == contract) else {
                    continue;
                };
                let cost = sublet_market_api::receipts::gross_charge(c, &receipt);
                if let Ok(mut latest) = self.usage.latest_charge.lock() {
                    latest.insert(contract.clone(), cost);
                }
                match client
                    .submit_receipt(&self.signer, &contract, &receipt)
                    .await
                {
                    Ok(period) => {
                        let status = period["status"].as_str().unwrap_or_default().to_owned();
                        info!(%contract, period_start = receipt.period_start, gib_hours = receipt.gib_hours, egress_bytes = receipt.egress_bytes, audits_passed = receipt.audits_passed, audits_failed = receipt.audits_failed, %status, "usage receipt submitted");
                        if status == "mismatch" {
                            warn!(%contract, period_start = receipt.period_start, fields = %period["mismatched_fields"], "the provider's receipt disagrees with ours; the period is not paid until one side corrects it or a dispute decides");
                        }
                        self.usage.meter().reported(&contract, receipt.period_end);
                        // With the receipt, what the probes saw of the provider: its uptime
                        // and latency enter its market rating.
                        if let Some(node) = node_of.get(&contract)
                            && let Some(w) = self.health.take_probe_window(node)
                        {
                            let body = json!({
                                "period_start": receipt.period_start,
                                "probes": w.probes,
                                "probes_answered": w.answered,
                                "latency_ms": w.median_ms,
                            });
                            let path = format!("/v1/contracts/{contract}/observations");
                            if let Err(e) = client
                                .json(Some(&self.signer), "POST", &path, &body)
                                .await
                                .and_then(|r| r.ok())
                            {
                                warn!(%contract, error = %e, "the market refused the uptime report");
                            }
                        }
                        out.receipts.push((contract, receipt.period_start, status));
                    }
                    Err(e) if Client::already_settled(&e) => {
                        self.usage.meter().reported(&contract, receipt.period_end);
                    }
                    Err(e) => {
                        warn!(%contract, period_start = receipt.period_start, error = %e, "the market refused the usage receipt; retrying next pass");
                    }
                }
            }
            // Keep the escrow ahead of usage: a period of storage at the full reservation
            // plus twice what the latest period cost, so settlement never waits for funds.
            let latest = self
                .usage
                .latest_charge
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default();
            for c in &active {
                let recent = latest.get(&c.id).copied().unwrap_or(0);
                let want = period_prepayment(c).saturating_add(recent.saturating_mul(2));
                if c.escrow >= want {
                    continue;
                }
                let amount = want - c.escrow;
                // The escrow is read again before every top-up, so a retried one that had
                // gone through is not paid twice; the id only has to be new.
                let op_id = format!("topup-{}-{}", c.id, crate::node::health::now_ms());
                let body = json!({"op_id": op_id, "amount": amount});
                match client
                    .json(
                        Some(&self.signer),
                        "POST",
                        &format!("/v1/contracts/{}/prepay", c.id),
                        &body,
                    )
                    .await?
                    .ok()
                {
                    Ok(_) => {
                        info!(contract = %c.id, amount, "escrow topped up");
                        out.prepaid.push((c.id.clone(), amount));
                    }
                    Err(e) => {
                        warn!(contract = %c.id, amount, party = %self.signer.party_id(), error = %e, "could not prepay the contract's escrow; deposit credits to the gateway's market party")
                    }
                }
            }
            // Placement follows the providers' market ratings as they change.
            for c in &active {
                let Some(node) = node_of.get(&c.id) else {
                    continue;
                };
                match score_of(&client, &c.provider).await {
                    Ok(score) => self.health.record_market_score(node, score),
                    Err(e) => {
                        warn!(provider = %c.provider, error = %e, "could not read the provider's market rating")
                    }
                }
            }
            active_all.extend(active);
        }
        let ids: Vec<&str> = active_all.iter().map(|c| c.id.as_str()).collect();
        let mut meter = self.usage.meter();
        meter.retain(&ids);
        meter
            .save(&self.usage.path)
            .with_context(|| format!("saving {}", self.usage.path.display()))?;
        out.shortest_period = active_all.iter().map(|c| c.period_secs).min();
        Ok(out)
    }

    /// A client for the market at `url`, reached as the pool naming it says.
    fn client_for(&self, url: &str) -> anyhow::Result<Client> {
        match self.pools.values().find(|m| m.url == url) {
            Some(m) => super::market_client(m),
            None => Client::new(url).map_err(|e| anyhow!("market {url}: {e}")),
        }
    }

    /// Keeps the market pools of `pools` contracted (their state in `data_dir`).
    pub fn for_pools(mut self, pools: BTreeMap<String, MarketPool>, data_dir: PathBuf) -> Self {
        self.pools = pools;
        self.data_dir = data_dir;
        self
    }

    /// Lets each pass contract more providers for a market pool that has fewer active
    /// contracts than it asks for (a contract ended, a provider left, the market had too few
    /// offers at start), and connect them at once.
    pub fn recontracting(
        mut self,
        identity: Arc<NodeIdentity>,
        dialer: Arc<crate::runtime::Dialer>,
        gateway: Arc<crate::node::Node>,
    ) -> Self {
        self.recontract = Some(Recontracting {
            identity,
            dialer,
            gateway,
        });
        self
    }

    async fn recontract(&self, r: &Recontracting) -> anyhow::Result<()> {
        if self.pools.is_empty() {
            return Ok(());
        }
        let path = self.data_dir.join(CONTRACTS_FILE);
        let mut saved = load_saved(&path)?;
        let mut changed = false;
        for (pool, m) in &self.pools {
            let client = super::market_client(m)?;
            let mine: Vec<Contract> =
                serde_json::from_value(get(&client, Some(&self.signer), "/v1/contracts").await?)?;
            let claimed = saved.claimed_by_others(pool);
            let ids = saved.pools.entry(pool.clone()).or_default();
            let active = ids
                .iter()
                .filter(|id| {
                    mine.iter()
                        .any(|c| &c.id == *id && c.state == ContractState::Active)
                })
                .count();
            if active >= m.providers as usize {
                continue;
            }
            let before = ids.clone();
            let contracted = contract_pool(
                pool,
                m,
                &r.identity,
                ids,
                &claimed,
                RECONTRACT_WAIT,
                Contracting::Propose,
            )
            .await?;
            changed |= *ids != before;
            let known = r.gateway.providers();
            let mut endpoints = Vec::new();
            for c in contracted {
                let Some(node) = c.endpoint.node_id.clone() else {
                    continue;
                };
                if known.contains_key(&node) {
                    continue;
                }
                let node_id: NodeId = node
                    .parse()
                    .map_err(|e| anyhow!("market provider {}: node id: {e}", c.provider))?;
                if let Ok(mut contracts) = self.usage.contracts.write() {
                    contracts.entry(node.clone()).or_insert(c.contract.clone());
                }
                if let Ok(mut markets) = self.markets.lock() {
                    let list = markets.entry(m.url.clone()).or_default();
                    if !list.contains(&c.contract) {
                        list.push(c.contract.clone());
                    }
                }
                self.health.record_market_score(&node, c.score);
                endpoints.push(crate::node::config::ProviderEndpoint {
                    name: c.endpoint.name.clone(),
                    address: c.endpoint.address.clone(),
                    node_id,
                    site: crate::datapath::placement::Site {
                        node_id: node.clone(),
                        pool: pool.clone(),
                        zone: c
                            .endpoint
                            .zone
                            .clone()
                            .unwrap_or_else(|| c.endpoint.name.clone()),
                        owner: c.provider.clone(),
                    },
                });
            }
            if endpoints.is_empty() {
                continue;
            }
            let sites: Vec<crate::datapath::placement::Site> =
                endpoints.iter().map(|e| e.site.clone()).collect();
            r.dialer.connect_endpoints(&r.gateway, endpoints).await?;
            let mut set = (*r.gateway.policy()).clone();
            let mut topology = (*set.topology).clone();
            topology.sites.extend(sites.iter().cloned());
            set.topology = Arc::new(topology);
            r.gateway.swap_policy(set)?;
            info!(
                pool,
                providers = sites.len(),
                "contracted and connected more market providers"
            );
        }
        if changed {
            save_saved(&path, &saved)?;
        }
        Ok(())
    }

    /// Reports every quarter of the shortest receipt period (between 1 s and a minute)
    /// until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            let wait = match self.pass().await {
                Ok(pass) => pass.shortest_period.map_or(60, |p| (p / 4).clamp(1, 60)),
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "market usage report failed; retrying");
                    10
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(wait as u64)) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}
