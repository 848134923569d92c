//! This provider on the sublet market: registers the node key as a provider party,
//! publishes the offer, keeps it current (re-publishes when the terms change or the
//! market no longer lists it) and accepts contracts demanders propose on it.
//!
//! The market's word is not enough to let a gateway in: a proposal is accepted, and a
//! tenant admitted with its quota, only when the contract's evidence carries the
//! demander's own signature over exactly that offer (one this provider published) and
//! reservation, and (for admission) this provider's own signed acceptance. A compromised
//! market, or anyone rewriting its answers, cannot grant tenancy to another key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sublet_crds::MarketOffer;
use sublet_market_api::client::{Client, ClientTls};
use sublet_market_api::contracts::{Contract, ContractEvidence, ContractState};
use sublet_market_api::identity::{Role, Signer};
use sublet_market_api::meter::Meter;
use sublet_market_api::offers::{NewOffer, Offer};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::identity::{NodeId, NodeIdentity};
use crate::store::Store;

/// File in the data dir remembering the offer this provider published.
pub const OFFER_STATE_FILE: &str = "market-offer.json";
/// File in the data dir holding the usage meter of the provider's contracts.
pub const METER_FILE: &str = "market-meter.json";

/// How this provider takes part in the market.
#[derive(Clone, Debug)]
pub struct MarketSettings {
    /// `https://host:port` (`http://` with `tls.insecure_http`).
    pub url: String,
    /// How the market is reached.
    pub tls: ClientTls,
    /// The terms as written in the offer file (or `ProviderPool.spec.offer`).
    pub offer: MarketOffer,
    /// How often the offer is checked and proposals are answered.
    pub interval: Duration,
}

impl MarketSettings {
    /// The offer as the market's API takes it; `capacity` is the provider's usable space,
    /// offered when the terms don't name a capacity.
    pub fn new_offer(&self, capacity: u64) -> anyhow::Result<NewOffer> {
        let problems = self.offer.validate("offer");
        if let Some(first) = problems.first() {
            return Err(anyhow!("{first}"));
        }
        Ok(NewOffer {
            capacity_bytes: self.offer.capacity.as_ref().map_or(capacity, |c| c.bytes()),
            price_per_gib_month: self.offer.price_per_gib_month,
            egress_price_per_gib: self.offer.egress_price_per_gib,
            region: self.offer.region.clone(),
            min_term_days: self.offer.min_term_days,
            promised_uptime_bps: self
                .offer
                .promised_uptime_bps()
                .ok_or_else(|| anyhow!("offer.promisedUptime is not a percentage"))?,
            endpoint: self.offer.endpoint.clone().unwrap_or_default(),
        })
    }
}

/// The shard-id namespace of a demander's gateway on this provider: a tenant sees, lists,
/// deletes and is billed for the shards in its namespace only.
pub fn tenant_namespace(gateway: &NodeId) -> String {
    let hex = gateway.to_string();
    format!(
        "{}{}.",
        crate::store::TENANT_PREFIX,
        &hex[..hex.len().min(32)]
    )
}

/// What a demander's gateway may do here, from its active contracts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenancy {
    /// The demander's oldest active contract with this provider: usage is reported on it.
    pub contract: String,
    /// Bytes on disk the demander's active contracts here reserve, together.
    pub quota: u64,
}

/// The gateways whose demanders hold an active contract with this provider (a demander's
/// gateway signs on the market with its node key, so the party's public key names the
/// gateway that may call), and the usage meter of those contracts.
#[derive(Clone, Debug, Default)]
pub struct ContractedClients {
    tenants: Arc<RwLock<HashMap<NodeId, Tenancy>>>,
    meter: Arc<Mutex<Meter>>,
}

impl ContractedClients {
    pub fn contains(&self, id: &NodeId) -> bool {
        self.get(id).is_some()
    }

    pub fn get(&self, id: &NodeId) -> Option<Tenancy> {
        self.tenants.read().ok()?.get(id).cloned()
    }

    fn replace(&self, tenants: HashMap<NodeId, Tenancy>) {
        if let Ok(mut map) = self.tenants.write() {
            *map = tenants;
        }
    }

    fn meter(&self) -> std::sync::MutexGuard<'_, Meter> {
        self.meter.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts bytes of shards sent to a tenant, under the unix second `at`.
    pub fn egress(&self, contract: &str, at: i64, bytes: u64) {
        self.meter().add_egress(contract, at, bytes);
    }

    /// Counts an audit of a tenant's shard under `at`: answered, or failed for a missing or
    /// corrupt shard.
    pub fn audit(&self, contract: &str, at: i64, passed: bool) {
        self.meter().add_audit(contract, at, passed);
    }
}

/// How far the time a caller meters a request under may be from this provider's clock.
pub const METERED_SKEW_SECS: i64 = 300;

/// The second to meter a request under: the caller's `metered_at` when it is set and
/// within [`METERED_SKEW_SECS`] of now (so both sides count it in the same period), else now.
pub fn metered_second(metered_at: i64) -> i64 {
    let now = sublet_market_api::unix_now();
    // `abs_diff` cannot overflow, as `metered_at - now` does for a caller's i64::MIN.
    if metered_at != 0 && metered_at.abs_diff(now) <= METERED_SKEW_SECS.unsigned_abs() {
        metered_at
    } else {
        now
    }
}

/// What one pass changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The offer open on the market after the pass.
    pub offer_id: String,
    /// Whether the pass had to publish it (first start, changed terms, lost offer).
    pub published: bool,
    /// Contracts accepted in this pass.
    pub accepted: Vec<String>,
    /// Gateways allowed to call because their demander holds an active contract.
    pub contracted_clients: usize,
    /// Usage receipts the market took in this pass: (contract, period start, status).
    pub receipts: Vec<(String, i64, String)>,
}

#[derive(Serialize, Deserialize, Default)]
struct SavedOffer {
    offer_id: String,
    /// Offers this provider published before the current one (newest last, at most
    /// [`OFFER_HISTORY`]): contracts on them are still its own.
    #[serde(default)]
    earlier: Vec<String>,
}

/// How many earlier offer ids the provider remembers.
const OFFER_HISTORY: usize = 64;

/// A contract whose evidence checked out: what was verified, and the demander's gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
struct VerifiedTenant {
    demander: String,
    offer_id: String,
    reserved_bytes: u64,
    gateway: NodeId,
}

/// Publishes one provider's offer with its node key.
pub struct OfferPublisher {
    client: Client,
    signer: Signer,
    name: String,
    offer: NewOffer,
    state_path: PathBuf,
    meter_path: PathBuf,
    contracted: ContractedClients,
    store: Option<Arc<Store>>,
    /// Contracts whose evidence was checked, by id (the evidence never changes; a contract
    /// the market later shows differently is checked again).
    verified: Mutex<HashMap<String, VerifiedTenant>>,
}

fn same_terms(open: &Offer, wanted: &NewOffer) -> bool {
    !open.withdrawn
        && open.capacity_bytes == wanted.capacity_bytes
        && open.price_per_gib_month == wanted.price_per_gib_month
        && open.egress_price_per_gib == wanted.egress_price_per_gib
        && open.region == wanted.region
        && open.min_term_days == wanted.min_term_days
        && open.promised_uptime_bps == wanted.promised_uptime_bps
        && open.endpoint == wanted.endpoint
}

impl OfferPublisher {
    pub fn new(
        identity: &NodeIdentity,
        url: &str,
        tls: &ClientTls,
        offer: NewOffer,
        data_dir: PathBuf,
    ) -> anyhow::Result<Self> {
        let signer = Signer::from_pkcs8(identity.pkcs8_der())
            .map_err(|e| anyhow!("the node key cannot sign for the market: {e}"))?;
        Ok(Self {
            client: Client::with_tls(url, tls).map_err(|e| anyhow!("--market-url: {e}"))?,
            signer,
            name: format!("provider-{}", identity.node_id()),
            offer,
            state_path: data_dir.join(OFFER_STATE_FILE),
            meter_path: data_dir.join(METER_FILE),
            contracted: ContractedClients::default(),
            store: None,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Keeps `clients` equal to the gateways of demanders with an active contract, meters
    /// what their namespaces in `store` hold and reports it to the market each period.
    pub fn allowing(
        mut self,
        clients: ContractedClients,
        store: Arc<Store>,
    ) -> anyhow::Result<Self> {
        *clients.meter() = Meter::load_or_start_afresh(&self.meter_path);
        self.contracted = clients;
        self.store = Some(store);
        Ok(self)
    }

    /// The market party id of this provider.
    pub fn party_id(&self) -> String {
        self.signer.party_id()
    }

    async fn call(&self, method: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
        Ok(self
            .client
            .json(Some(&self.signer), method, path, body)
            .await?
            .ok()?)
    }

    async fn ensure_registered(&self) -> anyhow::Result<()> {
        let path = format!("/v1/parties/{}", self.party_id());
        let reply = self.client.json(None, "GET", &path, &Value::Null).await?;
        match reply.status {
            200 if reply.body["role"] == "provider" => Ok(()),
            200 => Err(anyhow!(
                "this node key is registered on the market as a {}, not a provider",
                reply.body["role"]
            )),
            404 => {
                self.client
                    .register(&self.signer, Role::Provider, &self.name)
                    .await?;
                info!(party = %self.party_id(), "registered on the market");
                Ok(())
            }
            status => Err(anyhow!("market answered {status}: {}", reply.body)),
        }
    }

    fn saved(&self) -> Option<SavedOffer> {
        let text = std::fs::read(&self.state_path).ok()?;
        serde_json::from_slice::<SavedOffer>(&text).ok()
    }

    fn saved_offer(&self) -> Option<String> {
        self.saved().map(|s| s.offer_id)
    }

    /// Every offer id this provider published that it still remembers.
    fn own_offers(&self) -> Vec<String> {
        self.saved()
            .map(|s| {
                let mut all = s.earlier;
                all.push(s.offer_id);
                all
            })
            .unwrap_or_default()
    }

    fn save_offer(&self, offer_id: &str) -> anyhow::Result<()> {
        let tmp = self.state_path.with_extension("tmp");
        let mut earlier = match self.saved() {
            Some(s) if !s.offer_id.is_empty() && s.offer_id != offer_id => {
                let mut e = s.earlier;
                e.push(s.offer_id);
                e
            }
            Some(s) => s.earlier,
            None => Vec::new(),
        };
        let excess = earlier.len().saturating_sub(OFFER_HISTORY);
        earlier.drain(..excess);
        std::fs::write(
            &tmp,
            serde_json::to_vec(&SavedOffer {
                offer_id: offer_id.into(),
                earlier,
            })?,
        )
        .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.state_path)
            .with_context(|| format!("writing {}", self.state_path.display()))
    }

    /// Makes sure the offer is open with the current terms and accepts proposed contracts.
    pub async fn sync(&self) -> anyhow::Result<SyncReport> {
        self.ensure_registered().await?;
        let mut report = SyncReport::default();
        let open = match self.saved_offer() {
            Some(id) => {
                let reply = self
                    .client
                    .json(None, "GET", &format!("/v1/offers/{id}"), &Value::Null)
                    .await?;
                match reply.status {
                    200 => Some(serde_json::from_value::<Offer>(reply.body)?),
                    404 => None,
                    status => return Err(anyhow!("market answered {status}: {}", reply.body)),
                }
            }
            None => None,
        };
        match open {
            Some(open) if open.provider == self.party_id() && same_terms(&open, &self.offer) => {
                report.offer_id = open.id;
            }
            stale => {
                if let Some(old) = stale.filter(|o| !o.withdrawn && o.provider == self.party_id()) {
                    self.call("DELETE", &format!("/v1/offers/{}", old.id), &Value::Null)
                        .await
                        .context("withdrawing the offer with the old terms")?;
                    info!(offer = %old.id, "withdrew the offer with the old terms");
                }
                let body = serde_json::to_value(&self.offer)?;
                let published = self.call("POST", "/v1/offers", &body).await?;
                let id = published["id"]
                    .as_str()
                    .ok_or_else(|| anyhow!("the market published the offer without an id"))?
                    .to_owned();
                self.save_offer(&id)?;
                info!(
                    offer = %id,
                    capacity_bytes = self.offer.capacity_bytes,
                    price_per_gib_month = self.offer.price_per_gib_month,
                    region = %self.offer.region,
                    "offer published on the market"
                );
                report.offer_id = id;
                report.published = true;
            }
        }
        let contracts = self.call("GET", "/v1/contracts", &Value::Null).await?;
        for contract in contracts.as_array().into_iter().flatten() {
            if contract["state"] != "proposed" || contract["provider"] != self.party_id().as_str() {
                continue;
            }
            let Some(id) = contract["id"].as_str() else {
                continue;
            };
            // The market checked the proposal against the offer's free capacity and terms;
            // the demander's signature is checked here.
            let proposed: Contract = match serde_json::from_value(contract.clone()) {
                Ok(c) => c,
                Err(e) => {
                    warn!(contract = %id, error = %e, "the market listed a contract that does not parse");
                    continue;
                }
            };
            if let Err(e) = self.verify_proposal(&proposed).await {
                warn!(contract = %id, error = %format!("{e:#}"), "not accepting a proposal the demander did not sign as the market shows it");
                continue;
            }
            match self
                .call("POST", &format!("/v1/contracts/{id}/accept"), &json!({}))
                .await
            {
                Ok(_) => {
                    info!(contract = %id, demander = %contract["demander"], reserved_bytes = %contract["reserved_bytes"], "contract accepted");
                    report.accepted.push(id.to_owned());
                }
                Err(e) => warn!(contract = %id, error = %e, "could not accept contract"),
            }
        }
        let contracts: Vec<Contract> =
            serde_json::from_value(self.call("GET", "/v1/contracts", &Value::Null).await?)?;
        let mut active: Vec<&Contract> = contracts
            .iter()
            .filter(|c| c.state == ContractState::Active && c.provider == self.party_id())
            .collect();
        active.sort_by_key(|c| (c.accepted_at, c.id.clone()));
        let mut tenants: HashMap<NodeId, Tenancy> = HashMap::new();
        let mut refused = Vec::new();
        for (i, c) in active.iter().enumerate() {
            let gateway = match self.verify_tenant(c).await {
                Ok(gateway) => gateway,
                Err(e) => {
                    warn!(contract = %c.id, demander = %c.demander, error = %format!("{e:#}"), "refusing a tenant whose contract the parties did not sign as the market shows it");
                    refused.push(i);
                    continue;
                }
            };
            // The oldest contract carries the demander's usage; later ones add to its quota.
            tenants
                .entry(gateway)
                .and_modify(|t| t.quota = t.quota.saturating_add(c.reserved_bytes))
                .or_insert_with(|| Tenancy {
                    contract: c.id.clone(),
                    quota: c.reserved_bytes,
                });
        }
        for i in refused.into_iter().rev() {
            active.remove(i);
        }
        report.contracted_clients = tenants.len();
        report.receipts = self.report_usage(&active, &tenants).await?;
        self.contracted.replace(tenants);
        Ok(report)
    }

    async fn evidence(&self, contract: &str) -> anyhow::Result<ContractEvidence> {
        let v = self
            .call(
                "GET",
                &format!("/v1/contracts/{contract}/evidence"),
                &Value::Null,
            )
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// The demander's key, once its signed proposal is checked to be for `c` as shown, on
    /// an offer this provider published.
    async fn verify_proposal(&self, c: &Contract) -> anyhow::Result<[u8; 32]> {
        if c.provider != self.party_id() {
            return Err(anyhow!("contract {} is not with this provider", c.id));
        }
        if !self.own_offers().contains(&c.offer_id) {
            return Err(anyhow!(
                "contract {} is on offer {}, which this provider did not publish",
                c.id,
                c.offer_id
            ));
        }
        Ok(self.evidence(&c.id).await?.verify_proposal(c)?)
    }

    /// The gateway of `c`'s demander, once the contract is checked to be what the demander
    /// proposed and this provider accepted.
    async fn verify_tenant(&self, c: &Contract) -> anyhow::Result<NodeId> {
        let known = self
            .verified
            .lock()
            .map_err(|_| anyhow!("the verified contracts lock is poisoned"))?
            .get(&c.id)
            .cloned();
        if let Some(v) = known
            && v.demander == c.demander
            && v.offer_id == c.offer_id
            && v.reserved_bytes == c.reserved_bytes
        {
            return Ok(v.gateway);
        }
        if c.provider != self.party_id() {
            return Err(anyhow!("contract {} is not with this provider", c.id));
        }
        if !self.own_offers().contains(&c.offer_id) {
            return Err(anyhow!(
                "contract {} is on offer {}, which this provider did not publish",
                c.id,
                c.offer_id
            ));
        }
        let evidence = self.evidence(&c.id).await?;
        let demander_key = evidence.verify_proposal(c)?;
        let own = evidence.verify_acceptance(c)?;
        if hex::encode(own) != self.signer.public_key_hex() {
            return Err(anyhow!(
                "contract {} was not accepted by this provider's key",
                c.id
            ));
        }
        let gateway = NodeId::from_public_key(&demander_key);
        if let Ok(mut verified) = self.verified.lock() {
            verified.insert(
                c.id.clone(),
                VerifiedTenant {
                    demander: c.demander.clone(),
                    offer_id: c.offer_id.clone(),
                    reserved_bytes: c.reserved_bytes,
                    gateway,
                },
            );
        }
        Ok(gateway)
    }

    /// Samples what each tenant stores, then signs and submits the receipts of the periods
    /// that are over. A receipt the market refuses is logged and retried next pass.
    async fn report_usage(
        &self,
        active: &[&Contract],
        tenants: &HashMap<NodeId, Tenancy>,
    ) -> anyhow::Result<Vec<(String, i64, String)>> {
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        let now = sublet_market_api::unix_now();
        let due = {
            let mut meter = self.contracted.meter();
            let ids: Vec<&str> = active.iter().map(|c| c.id.as_str()).collect();
            meter.retain(&ids);
            for c in active {
                if let Some(accepted) = c.accepted_at {
                    meter.track(&c.id, accepted, c.period_secs, c.term_days);
                }
            }
            for (gateway, t) in tenants {
                let bytes = store.tenant_usage(&tenant_namespace(gateway)).bytes;
                meter.sample(&t.contract, now, bytes);
            }
            meter
                .save(&self.meter_path)
                .with_context(|| format!("saving the usage meter {}", self.meter_path.display()))?;
            meter.due(sublet_market_api::meter::REPORT_GRACE_SECS)
        };
        let mut out = Vec::new();
        for (contract, receipt) in due {
            match self
                .client
                .submit_receipt(&self.signer, &contract, &receipt)
                .await
            {
                Ok(period) => {
                    let status = period["status"].as_str().unwrap_or_default().to_owned();
                    info!(%contract, period_start = receipt.period_start, gib_hours = receipt.gib_hours, egress_bytes = receipt.egress_bytes, audits_failed = receipt.audits_failed, %status, "usage receipt submitted");
                    self.contracted
                        .meter()
                        .reported(&contract, receipt.period_end);
                    out.push((contract, receipt.period_start, status));
                }
                Err(e) if Client::already_settled(&e) => {
                    self.contracted
                        .meter()
                        .reported(&contract, receipt.period_end);
                }
                Err(e) => {
                    warn!(%contract, period_start = receipt.period_start, error = %e, "the market refused the usage receipt; retrying next pass")
                }
            }
        }
        if !out.is_empty() {
            self.contracted.meter().save(&self.meter_path)?;
        }
        Ok(out)
    }

    /// Syncs every `interval` until `shutdown` turns true; failures are logged and retried.
    pub async fn run(self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                result = self.sync() => if let Err(e) = result {
                    warn!(error = %format!("{e:#}"), "market sync failed; retrying");
                },
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metered_time_far_from_now_is_metered_now_without_overflow() {
        let now = sublet_market_api::unix_now();
        assert_eq!(metered_second(now - 10), now - 10);
        for far in [i64::MIN, i64::MIN + 1, i64::MAX, 1] {
            let got = metered_second(far);
            assert!(got.abs_diff(now) <= 2, "{far} metered under {got}");
        }
    }
}
