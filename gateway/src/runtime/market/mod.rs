//! Market pools: for every ProviderPool with `market` criteria the gateway rents providers
//! on the sublet market, signing as its node key (which is what lets those providers admit
//! it), and turns the active contracts into pinned endpoints placement uses ([`with_contracts`]);
//! [`usage`] meters what the gateway uses of each contracted provider and [`reporter`]
//! reports it, keeps escrows prepaid and contracts more providers while running.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sublet_crds::{Config, Endpoint, MarketPool};
use sublet_market_api::client::{Client, ClientTls};
use sublet_market_api::contracts::{Contract, ContractEvidence, ContractState};
use sublet_market_api::identity::{Role, Signer};
use sublet_market_api::offers::Offer;
use sublet_provider::identity::{NodeId, NodeIdentity};
use tracing::{info, warn};

mod reporter;
mod usage;

pub use reporter::{ReportPass, UsageReporter};
pub use usage::{MarketUsage, MeteredBackend, period_prepayment};

use reporter::PROPOSAL_PATIENCE_SECS;

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

/// A client for the market of pool `m`: HTTPS (its `caFile` or the system's roots), plain
/// HTTP only with `insecureHttp`.
pub(crate) fn market_client(m: &MarketPool) -> anyhow::Result<Client> {
    // Trusting the system's roots instead of the CA the pool names would be a silent change.
    if let (Some(secret), None) = (&m.ca_secret_ref, &m.ca_file) {
        anyhow::bail!(
            "spec.market.caSecretRef (Secret {}) is read by the operator only; outside \
             Kubernetes set spec.market.caFile to the market's CA certificates (PEM)",
            secret.name
        );
    }
    let tls = ClientTls {
        ca_file: m.ca_file.as_ref().map(std::path::PathBuf::from),
        insecure_http: m.insecure_http,
    };
    Client::with_tls(&m.url, &tls).map_err(|e| anyhow!("spec.market.url: {e}"))
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
    let client = market_client(m)?;
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
        // The node id is derived from the key that signed this provider's acceptance of the
        // contract (checked here, and bound to the provider's party id), so the gateway pins
        // the machine that agreed to the contract, whatever the market or anyone rewriting
        // its answers says about the provider's key.
        let evidence: ContractEvidence = serde_json::from_value(
            get(
                &client,
                Some(&signer),
                &format!("/v1/contracts/{}/evidence", c.id),
            )
            .await?,
        )?;
        let key = match evidence.verify_acceptance(&c) {
            Ok(key) => key,
            Err(e) => {
                warn!(pool, contract = %c.id, provider = %c.provider, error = %e, "not using a provider whose signed acceptance does not match the contract the market shows");
                // Ended at the market, so it neither keeps drawing on the prepayment nor
                // holds the pool's place: the next pass contracts another provider (this
                // one, having a terminated contract, is not asked again).
                if end_refused(&client, &signer, pool, &c).await {
                    ids.retain(|id| id != &c.id);
                }
                continue;
            }
        };
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

/// Terminates, as the demander, a contract whose acceptance did not verify, and counts it;
/// whether the market ended it (else it stays in the pool's list and the next pass tries
/// again).
async fn end_refused(client: &Client, signer: &Signer, pool: &str, c: &Contract) -> bool {
    let path = format!("/v1/contracts/{}/terminate", c.id);
    let ended = match client.json(Some(signer), "POST", &path, &json!({})).await {
        Ok(answer) => answer.ok().map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match ended {
        Ok(()) => {
            warn!(pool, contract = %c.id, provider = %c.provider, "refused contract terminated at the market");
            crate::metrics::count_refused_contract("terminated");
            true
        }
        Err(e) => {
            warn!(pool, contract = %c.id, provider = %c.provider, error = %e, "could not terminate a refused contract at the market; trying again on the next pass");
            crate::metrics::count_refused_contract("terminate_failed");
            false
        }
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_secret_the_gateway_cannot_read_is_refused_not_replaced_by_the_system_roots() {
        let pool = |extra: &str| -> MarketPool {
            serde_yaml::from_str(&format!(
                "{{url: \"https://market:8480\", providers: 1, reserve: 1Gi{extra}}}"
            ))
            .unwrap()
        };
        let e = market_client(&pool(", caSecretRef: {name: market-ca}"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("caSecretRef (Secret market-ca)") && e.contains("spec.market.caFile"),
            "{e}"
        );
        // The operator's rendering: the Secret mounted and named by caFile.
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["market".into()]).unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, ca.cert.pem()).unwrap();
        let rendered = format!(", caFile: {}", file.display());
        assert!(market_client(&pool(&rendered)).is_ok());
    }
}
