//! Market pools: for every ProviderPool with `market` criteria the gateway rents providers
//! on the sublet market, signing as its node key (which is what lets those providers admit
//! it), and turns the active contracts into pinned endpoints placement uses.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sublet_crds::{Config, Endpoint, MarketPool};
use sublet_market_api::client::Client;
use sublet_market_api::contracts::{Contract, ContractState};
use sublet_market_api::identity::{Role, Signer};
use sublet_market_api::meter::Meter;
use sublet_market_api::offers::Offer;
use sublet_market_api::receipts::{GIB, HOURS_PER_MONTH};
use sublet_provider::client::METERED_AT;
use sublet_provider::identity::{NodeId, NodeIdentity};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::datapath::placement::HealthBoard;
use crate::datapath::stripes::{BackendError, ShardBackend};
use crate::meta::MetadataStore;

/// File in the data dir naming the contracts signed for each market pool.
pub const CONTRACTS_FILE: &str = "market-contracts.json";
/// File in the data dir holding the usage meter of the gateway's market contracts.
pub const METER_FILE: &str = "market-meter.json";

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    /// Pool name → contract ids, oldest first.
    pools: BTreeMap<String, Vec<String>>,
}

impl Saved {
    /// The contracts every pool but `pool` names.
    fn claimed_by_others(&self, pool: &str) -> HashSet<String> {
        self.pools
            .iter()
            .filter(|(other, _)| other.as_str() != pool)
            .flat_map(|(_, ids)| ids.iter().cloned())
            .collect()
    }
}

/// A provider contracted for a market pool.
#[derive(Clone, Debug, PartialEq)]
pub struct Contracted {
    pub contract: String,
    /// The provider's market party id (its owner for `spreadBy: owner`).
    pub provider: String,
    /// The provider's market score when it was chosen or last checked, 0 to 1000.
    pub score: u32,
    pub endpoint: Endpoint,
}

fn signer_of(identity: &NodeIdentity) -> anyhow::Result<Signer> {
    Signer::from_pkcs8(identity.pkcs8_der())
        .map_err(|e| anyhow!("the gateway's node key cannot sign for the market: {e}"))
}

async fn get(client: &Client, signer: Option<&Signer>, path: &str) -> anyhow::Result<Value> {
    Ok(client.json(signer, "GET", path, &Value::Null).await?.ok()?)
}

async fn ensure_demander(client: &Client, signer: &Signer, name: &str) -> anyhow::Result<()> {
    let reply = client
        .json(
            None,
            "GET",
            &format!("/v1/parties/{}", signer.party_id()),
            &Value::Null,
        )
        .await?;
    match reply.status {
        200 if reply.body["role"] == "demander" => Ok(()),
        200 => Err(anyhow!(
            "the gateway's key is registered on the market as a {}, not a demander",
            reply.body["role"]
        )),
        404 => {
            client.register(signer, Role::Demander, name).await?;
            info!(party = %signer.party_id(), "gateway registered on the market");
            Ok(())
        }
        status => Err(anyhow!("market answered {status}: {}", reply.body)),
    }
}

async fn score_of(client: &Client, party: &str) -> anyhow::Result<u32> {
    let rating = get(client, None, &format!("/v1/parties/{party}/rating")).await?;
    rating["score"]
        .as_u64()
        .map(|s| s as u32)
        .ok_or_else(|| anyhow!("the market's rating of {party} has no score"))
}

/// Offers matching `m` from providers not in `used`, best first: higher score, then lower
/// price. One offer per provider (its cheapest), so each provider is one owner.
async fn candidates(
    client: &Client,
    m: &MarketPool,
    used: &HashSet<String>,
) -> anyhow::Result<Vec<(Offer, u32)>> {
    let mut query = format!("/v1/offers?min_free_bytes={}", m.reserve.bytes());
    if let Some(max) = m.max_price_per_gib_month {
        query.push_str(&format!("&max_price_per_gib_month={max}"));
    }
    let offers: Vec<Offer> = serde_json::from_value(get(client, None, &query).await?)?;
    let mut seen = used.clone();
    let mut out = Vec::new();
    // The market lists offers cheapest first, so the first per provider is its cheapest.
    for offer in offers {
        if offer.endpoint.is_empty()
            || offer.min_term_days > m.term_days()
            || (!m.regions.is_empty() && !m.regions.contains(&offer.region))
            || !seen.insert(offer.provider.clone())
        {
            continue;
        }
        let score = score_of(client, &offer.provider).await?;
        if m.min_score.is_some_and(|min| score < min) {
            continue;
        }
        out.push((offer, score));
    }
    out.sort_by(|(a, sa), (b, sb)| {
        sb.cmp(sa)
            .then(a.price_per_gib_month.cmp(&b.price_per_gib_month))
    });
    Ok(out)
}

/// How [`contract_pool`] may go about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contracting {
    /// Propose contracts until the pool has as many providers as it asks for.
    Propose,
    /// Only find the contracts there are (`sublet recover`: reading back, not renting).
    Existing,
}

/// Contracts providers for one market pool until `m.providers` are active (or proposed and
/// not yet answered after `wait`), reusing the contracts in `ids`. Returns the active ones.
///
/// A pool that knows no contract (its data directory is new: a gateway recovered onto a
/// new disk, or a pod on an empty volume) first takes over this demander's live contracts on
/// that market that no pool in `claimed` names: its shards are in its namespace on those
/// providers, and renting others instead would leave them unreachable.
pub async fn contract_pool(
    pool: &str,
    m: &MarketPool,
    identity: &NodeIdentity,
    ids: &mut Vec<String>,
    claimed: &HashSet<String>,
    wait: Duration,
    how: Contracting,
) -> anyhow::Result<Vec<Contracted>> {
    let client = Client::new(&m.url).map_err(|e| anyhow!("spec.market.url: {e}"))?;
    let signer = signer_of(identity)?;
    ensure_demander(&client, &signer, &format!("gateway-{}", identity.node_id())).await?;

    let mine = |v: Value| -> anyhow::Result<BTreeMap<String, Contract>> {
        let list: Vec<Contract> = serde_json::from_value(v)?;
        Ok(list.into_iter().map(|c| (c.id.clone(), c)).collect())
    };
    let contracts = mine(get(&client, Some(&signer), "/v1/contracts").await?)?;
    let live = |c: &Contract| {
        matches!(
            c.state,
            sublet_market_api::contracts::ContractState::Active
                | sublet_market_api::contracts::ContractState::Proposed
        )
    };
    if ids.is_empty() {
        let party = signer.party_id();
        ids.extend(
            contracts
                .values()
                .filter(|c| c.demander == party && live(c) && !claimed.contains(&c.id))
                .map(|c| c.id.clone()),
        );
        if !ids.is_empty() {
            info!(pool, contracts = ?ids, "taking over this gateway's live contracts on the market");
        }
    }
    // A proposal left unanswered too long is withdrawn: a provider that went away must not
    // hold the pool's place until the market lapses it days later.
    let now = sublet_market_api::unix_now();
    for id in ids.iter() {
        if let Some(c) = contracts.get(id)
            && c.state == ContractState::Proposed
            && now - c.created_at > PROPOSAL_PATIENCE_SECS
        {
            match client
                .json(
                    Some(&signer),
                    "POST",
                    &format!("/v1/contracts/{id}/reject"),
                    &json!({}),
                )
                .await?
                .ok()
            {
                Ok(_) => {
                    warn!(pool, contract = %id, provider = %c.provider, "proposal unanswered for {PROPOSAL_PATIENCE_SECS} s; withdrawn")
                }
                Err(e) => {
                    warn!(pool, contract = %id, error = %e, "could not withdraw an unanswered proposal")
                }
            }
        }
    }
    ids.retain(|id| {
        contracts.get(id).is_some_and(|c| {
            live(c)
                && !(c.state == ContractState::Proposed
                    && now - c.created_at > PROPOSAL_PATIENCE_SECS)
        })
    });
    let wanted = m.providers as usize;
    if ids.len() < wanted && how == Contracting::Propose {
        // Providers in the pool already, and ones this gateway parted with (a contract that
        // ended or a proposal refused or withdrawn), are not asked again.
        let used: HashSet<String> =
            ids.iter()
                .filter_map(|id| contracts.get(id))
                .chain(contracts.values().filter(|c| {
                    matches!(c.state, ContractState::Terminated | ContractState::Rejected)
                }))
                .map(|c| c.provider.clone())
                .collect();
        for (offer, score) in candidates(&client, m, &used).await? {
            if ids.len() >= wanted {
                break;
            }
            let body = json!({
                "offer_id": offer.id,
                "reserved_bytes": m.reserve.bytes(),
                "term_days": m.term_days(),
            });
            match client
                .json(Some(&signer), "POST", "/v1/contracts", &body)
                .await?
                .ok()
            {
                Ok(c) => {
                    let id = c["id"].as_str().unwrap_or_default().to_owned();
                    info!(pool, contract = %id, provider = %offer.provider, score, price_per_gib_month = offer.price_per_gib_month, "contract proposed on the market");
                    ids.push(id);
                }
                Err(e) => warn!(pool, offer = %offer.id, error = %e, "market refused the proposal"),
            }
        }
    }

    // Providers accept on their next pass; wait for them, within reason.
    let deadline = tokio::time::Instant::now() + wait;
    let active = loop {
        let contracts = mine(get(&client, Some(&signer), "/v1/contracts").await?)?;
        let states: Vec<&Contract> = ids.iter().filter_map(|id| contracts.get(id)).collect();
        let pending = states
            .iter()
            .any(|c| c.state == sublet_market_api::contracts::ContractState::Proposed);
        if !pending || tokio::time::Instant::now() >= deadline {
            break states
                .into_iter()
                .filter(|c| c.state == sublet_market_api::contracts::ContractState::Active)
                .cloned()
                .collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let mut out = Vec::new();
    for c in active {
        let offer: Offer = serde_json::from_value(
            get(&client, None, &format!("/v1/offers/{}", c.offer_id)).await?,
        )?;
        let party = get(&client, None, &format!("/v1/parties/{}", c.provider)).await?;
        let key: [u8; 32] = party["public_key"]
            .as_str()
            .and_then(|k| hex::decode(k).ok())
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| anyhow!("market party {} has no ed25519 key", c.provider))?;
        // The node id is derived from the key the provider signed its offer with, so the
        // gateway pins the machine the market vouches for, not whoever answers the address.
        let node_id = NodeId::from_public_key(&key);
        let score = score_of(&client, &c.provider).await?;
        out.push(Contracted {
            contract: c.id.clone(),
            provider: c.provider.clone(),
            score,
            endpoint: Endpoint {
                name: format!("market-{}", &c.provider[..c.provider.len().min(12)]),
                address: offer.endpoint.clone(),
                node_id: Some(node_id.to_string()),
                zone: Some(offer.region.clone()),
                owner: Some(c.provider.clone()),
            },
        });
    }
    // Best rated first, so the pool's endpoints read in the market's order of preference.
    out.sort_by_key(|c| std::cmp::Reverse(c.score));
    if out.len() < wanted {
        warn!(
            pool,
            active = out.len(),
            wanted,
            "the market has fewer matching providers than the pool asks for"
        );
    }
    Ok(out)
}

/// A copy of `config` in which every market pool also lists its contracted providers as
/// endpoints, and those providers with the market URL they were contracted on. A pool
/// whose market can't be reached gets none (and logs why); the rest of the gateway starts
/// anyway.
pub async fn with_contracts(
    config: &Config,
    identity: &NodeIdentity,
    data_dir: &Path,
    wait: Duration,
    how: Contracting,
) -> anyhow::Result<(Config, Vec<(String, Contracted)>)> {
    let mut config = config.clone();
    let mut all = Vec::new();
    if config.pools.values().all(|p| p.spec.market.is_none()) {
        return Ok((config, all));
    }
    let path = data_dir.join(CONTRACTS_FILE);
    let mut saved = load_saved(&path)?;
    for (name, pool) in config.pools.iter_mut() {
        let Some(m) = pool.spec.market.clone() else {
            continue;
        };
        let claimed = saved.claimed_by_others(name);
        let ids = saved.pools.entry(name.clone()).or_default();
        match contract_pool(name, &m, identity, ids, &claimed, wait, how).await {
            Ok(contracted) => {
                let listed: HashSet<String> =
                    pool.spec.endpoints.iter().map(|e| e.name.clone()).collect();
                pool.spec.endpoints.extend(
                    contracted
                        .iter()
                        .map(|c| c.endpoint.clone())
                        .filter(|e| !listed.contains(&e.name)),
                );
                all.extend(contracted.into_iter().map(|c| (m.url.clone(), c)));
            }
            Err(e) => {
                warn!(pool = %name, error = %format!("{e:#}"), "contracting on the market failed")
            }
        }
    }
    save_saved(&path, &saved)?;
    Ok((config, all))
}

/// What the gateway uses of each contracted provider, metered for its usage receipts: the
/// bytes its metadata places there (sampled), the bytes read back and the audits.
pub struct MarketUsage {
    meter: Mutex<Meter>,
    /// Contract → what its latest receipt costs, the estimate of what the next period will.
    latest_charge: Mutex<HashMap<String, i64>>,
    /// Provider node id → the contract its usage is reported on.
    contracts: RwLock<HashMap<String, String>>,
    path: PathBuf,
}

impl MarketUsage {
    /// The meter saved in `data_dir`, for the providers `contracted`.
    pub fn load(data_dir: &Path, contracted: &[(String, Contracted)]) -> anyhow::Result<Self> {
        let path = data_dir.join(METER_FILE);
        let meter = Meter::load_or_start_afresh(&path);
        let mut contracts = HashMap::new();
        for (_, c) in contracted {
            if let Some(node) = &c.endpoint.node_id {
                // A provider contracted twice reports on its oldest contract, as it does.
                contracts.entry(node.clone()).or_insert(c.contract.clone());
            }
        }
        Ok(Self {
            meter: Mutex::new(meter),
            latest_charge: Mutex::new(HashMap::new()),
            contracts: RwLock::new(contracts),
            path,
        })
    }

    fn meter(&self) -> std::sync::MutexGuard<'_, Meter> {
        self.meter.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn contract_of(&self, node: &str) -> Option<String> {
        self.contracts.read().ok()?.get(node).cloned()
    }

    /// Whether `node` is a contracted provider whose use is metered.
    pub fn meters(&self, node: &str) -> bool {
        self.contract_of(node).is_some()
    }

    /// Counts `bytes` read from `node` under the unix second `at`.
    pub fn egress(&self, node: &str, at: i64, bytes: u64) {
        if let Some(c) = self.contract_of(node) {
            self.meter().add_egress(&c, at, bytes);
        }
    }

    /// Counts an audit of `node` under `at`.
    pub fn audit(&self, node: &str, at: i64, passed: bool) {
        if let Some(c) = self.contract_of(node) {
            self.meter().add_audit(&c, at, passed);
        }
    }
}

/// A contracted provider's backend whose reads and audits are metered.
pub struct MeteredBackend {
    inner: Arc<dyn ShardBackend>,
    usage: Arc<MarketUsage>,
}

impl MeteredBackend {
    pub fn wrap(inner: Arc<dyn ShardBackend>, usage: &Arc<MarketUsage>) -> Arc<dyn ShardBackend> {
        if usage.meters(inner.node_id()) {
            Arc::new(Self {
                inner,
                usage: Arc::clone(usage),
            })
        } else {
            inner
        }
    }
}

#[async_trait]
impl ShardBackend for MeteredBackend {
    fn node_id(&self) -> &str {
        self.inner.node_id()
    }

    async fn put(&self, shard_id: &str, data: Bytes) -> Result<[u8; 32], BackendError> {
        self.inner.put(shard_id, data).await
    }

    async fn get(&self, shard_id: &str) -> Result<Bytes, BackendError> {
        // The provider is told the second the read counts under, so both receipts put it in
        // the same period even when it straddles a period's end.
        let at = sublet_market_api::unix_now();
        let result = METERED_AT.scope(at, self.inner.get(shard_id)).await;
        if let Ok(data) = &result {
            self.usage.egress(self.node_id(), at, data.len() as u64);
        }
        result
    }

    async fn delete(&self, shard_id: &str) -> Result<(), BackendError> {
        self.inner.delete(shard_id).await
    }

    async fn audit(
        &self,
        shard_id: &str,
        offset: u64,
        len: u64,
        hash: &[u8; 32],
    ) -> Result<(), BackendError> {
        let at = sublet_market_api::unix_now();
        let result = METERED_AT
            .scope(at, self.inner.audit(shard_id, offset, len, hash))
            .await;
        // Counted as the audit loop counts them: an unanswered audit is neither.
        match &result {
            Ok(()) => self.usage.audit(self.node_id(), at, true),
            Err(e) if e.audit_failed() || e.shard_gone() => {
                self.usage.audit(self.node_id(), at, false);
            }
            Err(_) => {}
        }
        result
    }

    async fn list(&self) -> Result<Option<Vec<(String, i64)>>, BackendError> {
        self.inner.list().await
    }
}

/// Credits one receipt period of storage costs at the contract's full reservation.
pub fn period_prepayment(c: &Contract) -> i64 {
    let gib = c.reserved_bytes.div_ceil(GIB);
    let hours = (c.period_secs.max(1) as u64).div_ceil(3600);
    let storage = u128::from(gib) * u128::from(hours) * c.price_per_gib_month.max(0) as u128
        / u128::from(HOURS_PER_MONTH);
    i64::try_from(storage).unwrap_or(i64::MAX).max(1)
}

/// How long a proposal may stay unanswered before the gateway withdraws it and asks another
/// provider.
const PROPOSAL_PATIENCE_SECS: i64 = 600;

/// How long a pass that contracts more providers waits for them to accept.
const RECONTRACT_WAIT: Duration = Duration::from_secs(5);

/// What contracting while running needs: the key to sign with, and the gateway to connect
/// new providers to.
struct Recontracting {
    identity: Arc<NodeIdentity>,
    dialer: Arc<crate::runtime::Dialer>,
    gateway: Arc<crate::node::Node>,
}

fn load_saved(path: &Path) -> anyhow::Result<Saved> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a contracts file", path.display())),
        Err(_) => Ok(Saved::default()),
    }
}

fn save_saved(path: &Path, saved: &Saved) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(saved)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
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
            let client = Client::new(url).map_err(|e| anyhow!("market {url}: {e}"))?;
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
            let client = Client::new(&m.url).map_err(|e| anyhow!("spec.market.url: {e}"))?;
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
