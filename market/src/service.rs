//! [`Market`]: the database (SQLite, or PostgreSQL), the policy, the payment rail and the
//! clock, with one method per thing a party can do. Each method is one transaction.
//!
//! Transactions never overlap: on SQLite one connection behind a mutex runs them in
//! IMMEDIATE transactions; on PostgreSQL each takes one transaction-scoped advisory lock
//! first, so markets sharing a database (replicas) also run them one at a time, and every
//! statement after the lock sees all that earlier transactions committed (READ COMMITTED).
//! That keeps the ledger's read-check-write steps (no overdraft, no double spend) as safe
//! as on SQLite, and needs no retries: a rail payout inside a transaction runs once.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, TransactionBehavior};

use crate::db::{Db, PgTx, pg_error, sqlite_error};
use serde::Serialize;
use tracing::info;

use sublet_market_api::contracts::{Contract, NewContract};
use sublet_market_api::credits::Micros;
use sublet_market_api::identity::{Party, Registration, RequestSignature, Role, Verified};
use sublet_market_api::offers::{NewOffer, Offer};
use sublet_market_api::receipts::UsageReceipt;
use sublet_market_api::{Error, Result};

use crate::Policy;
use crate::attestations::{self, Attestation, SignedAttestation, TrustLevel};
use crate::contracts;
use crate::disputes::{self, Decision, Dispute, DisputeState, NewDispute};
use crate::identity;
use crate::ledger::{self, Account, Applied, LedgerSummary};
use crate::metrics::Metrics;
use crate::offers::{self, OfferFilter};
use crate::rail::PaymentRail;
use crate::ratings::{self, Rating};
use crate::receipts::{self, Period};

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The key of the advisory lock every PostgreSQL transaction of the market holds.
const PG_MARKET_LOCK: i64 = 0x7375_626c_6574_6d6b; // "subletmk"

enum Store {
    Sqlite(Mutex<Connection>),
    Postgres(Box<PgStore>),
}

/// One PostgreSQL connection, reconnected when it breaks.
struct PgStore {
    config: postgres::Config,
    client: Mutex<Option<postgres::Client>>,
}

impl Drop for PgStore {
    /// The client's drop blocks on its own runtime, which panics on a tokio thread: there
    /// it is dropped on a plain thread (or leaked, should none start).
    fn drop(&mut self) {
        let client = self
            .client
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(client) = client
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let client = std::mem::ManuallyDrop::new(client);
            let _ = std::thread::Builder::new()
                .name("sublet-market-pg-close".into())
                .spawn(move || drop(std::mem::ManuallyDrop::into_inner(client)));
        }
    }
}

impl PgStore {
    fn connect(url: &str) -> Result<Self> {
        let mut config: postgres::Config = url.parse().map_err(|e| {
            Error::BadRequest(format!(
                "PostgreSQL URL does not parse ({e}); expected postgres://user:password@host:5432/dbname"
            ))
        })?;
        // Without one, an unreachable host holds a request for the OS's TCP timeout.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        Ok(Self {
            config,
            client: Mutex::new(None),
        })
    }

    /// Runs `f` in one transaction holding the market lock, off any tokio runtime.
    fn tx<T: Send>(&self, f: impl FnOnce(&dyn Db) -> Result<T> + Send) -> Result<T> {
        let work = || {
            let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
            if guard.as_ref().is_none_or(postgres::Client::is_closed) {
                let client = self.config.connect(postgres::NoTls).map_err(|e| {
                    Error::Database(format!(
                        "connecting to PostgreSQL: {}",
                        crate::db::pg_message(&e)
                    ))
                })?;
                *guard = Some(client);
            }
            let Some(client) = guard.as_mut() else {
                return Err(Error::Internal("no PostgreSQL connection".into()));
            };
            let mut tx = client.transaction().map_err(pg_error)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_MARKET_LOCK])
                .map_err(pg_error)?;
            let db = PgTx::new(tx);
            let out = f(&db)?;
            db.commit()?;
            Ok(out)
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return work();
        }
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("sublet-market-pg".into())
                .spawn_scoped(s, work)
                .map_err(|e| Error::Internal(format!("starting a database thread: {e}")))?
                .join()
                .unwrap_or_else(|_| Err(Error::Internal("database work panicked".into())))
        })
    }
}

/// Creates the tables if needed and brings older ones up to date.
fn init_schema(db: &dyn Db) -> Result<()> {
    for schema in [
        ledger::SCHEMA,
        identity::SCHEMA,
        offers::SCHEMA,
        contracts::SCHEMA,
        receipts::SCHEMA,
        disputes::SCHEMA,
        crate::quality::SCHEMA,
        attestations::SCHEMA,
    ] {
        db.schema(schema)?;
    }
    offers::migrate(db)?;
    contracts::migrate(db)
}

pub struct Market {
    db: Store,
    policy: Policy,
    rail: Option<Arc<dyn PaymentRail>>,
    clock: Clock,
    metrics: Metrics,
}

/// A party's credits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balances {
    pub party: String,
    /// Spendable: may be prepaid into contracts or withdrawn.
    pub available: Micros,
    /// Earnings withheld while a provider is in vetting.
    pub held_back: Micros,
    /// When the held-back credits may be released (providers only).
    pub held_back_release_at: Option<i64>,
    /// Escrow of each contract the party is demander of.
    pub escrow: Vec<ContractEscrow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContractEscrow {
    pub contract: String,
    pub amount: Micros,
}

/// The outcome of a ledger operation together with the resulting balances.
#[derive(Debug, Clone, Serialize)]
pub struct OperationResult {
    pub op_id: String,
    pub applied: Applied,
    pub amount: Micros,
    pub balances: Balances,
}

/// A party as `GET /v1/parties/{id}` shows it: with its trust level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartyView {
    #[serde(flatten)]
    pub party: Party,
    pub trust_level: TrustLevel,
}

#[derive(Debug, Clone, Serialize)]
pub struct Termination {
    pub contract: Contract,
    pub refunded: Micros,
}

impl Market {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path, policy: Policy, rail: Option<Arc<dyn PaymentRail>>) -> Result<Self> {
        let conn = Connection::open(path).map_err(sqlite_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite_error)?;
        Self::with_connection(conn, policy, rail)
    }

    pub fn in_memory(policy: Policy, rail: Option<Arc<dyn PaymentRail>>) -> Result<Self> {
        Self::with_connection(
            Connection::open_in_memory().map_err(sqlite_error)?,
            policy,
            rail,
        )
    }

    fn with_connection(
        conn: Connection,
        policy: Policy,
        rail: Option<Arc<dyn PaymentRail>>,
    ) -> Result<Self> {
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite_error)?;
        init_schema(&conn)?;
        Self::with_store(Store::Sqlite(Mutex::new(conn)), policy, rail)
    }

    /// Connects to PostgreSQL at `url` (`postgres://user:password@host:5432/dbname` or the
    /// key=value form) and creates the tables if needed. Markets may share one database.
    pub fn open_postgres(
        url: &str,
        policy: Policy,
        rail: Option<Arc<dyn PaymentRail>>,
    ) -> Result<Self> {
        let store = PgStore::connect(url)?;
        store.tx(init_schema)?;
        Self::with_store(Store::Postgres(Box::new(store)), policy, rail)
    }

    fn with_store(db: Store, policy: Policy, rail: Option<Arc<dyn PaymentRail>>) -> Result<Self> {
        Ok(Self {
            db,
            policy,
            rail,
            clock: Arc::new(sublet_market_api::unix_now),
            metrics: Metrics::new()?,
        })
    }

    /// Replaces the clock (unix seconds); tests use it to pass vetting periods.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Which database the market keeps its books in.
    pub fn backend(&self) -> crate::db::Backend {
        match self.db {
            Store::Sqlite(_) => crate::db::Backend::Sqlite,
            Store::Postgres(_) => crate::db::Backend::Postgres,
        }
    }

    /// Runs `f` in one transaction (see the module comment), committed only if `f` succeeds.
    pub fn tx<T: Send>(&self, f: impl FnOnce(&dyn Db) -> Result<T> + Send) -> Result<T> {
        match &self.db {
            Store::Sqlite(db) => {
                let mut conn = db.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sqlite_error)?;
                let out = f(&*tx as &Connection)?;
                tx.commit().map_err(sqlite_error)?;
                Ok(out)
            }
            Store::Postgres(pg) => pg.tx(f),
        }
    }

    /// Verifies a signed request and spends its nonce (committed even if the
    /// request then fails, so a captured request can never be replayed).
    pub fn authenticate(
        &self,
        method: &str,
        path_and_query: &str,
        sig: &RequestSignature,
        body: &[u8],
    ) -> Result<Verified> {
        let now = self.now();
        let window = self.policy.signature_window_secs;
        self.tx(|c| identity::verify_request(c, method, path_and_query, sig, body, now, window))
    }

    pub fn challenge(&self, public_key: &str) -> Result<(String, i64)> {
        let now = self.now();
        self.tx(|c| identity::new_challenge(c, public_key, now))
    }

    pub fn register(&self, reg: &Registration) -> Result<Party> {
        let now = self.now();
        let party = self.tx(|c| identity::register(c, reg, &self.policy.arbiter_keys, now))?;
        info!(party = %party.id, role = party.role.as_str(), "party registered");
        Ok(party)
    }

    pub fn party(&self, id: &str) -> Result<Party> {
        self.tx(|c| identity::party(c, id))
    }

    /// A party with its trust level.
    pub fn party_view(&self, id: &str) -> Result<PartyView> {
        let now = self.now();
        self.tx(|c| {
            Ok(PartyView {
                party: identity::party(c, id)?,
                trust_level: attestations::trust(c, id, &self.policy.attestor_keys, now)?.level,
            })
        })
    }

    /// Checks and stores an attestation about `party`, signed by one of the attestor keys.
    pub fn submit_attestation(&self, party: &str, att: &SignedAttestation) -> Result<Attestation> {
        let now = self.now();
        let a = self.tx(|c| {
            attestations::submit(
                c,
                party,
                att,
                &self.policy.attestor_keys,
                now,
                self.policy.signature_window_secs,
            )
        })?;
        info!(attestation = %a.id, party, kind = a.kind.as_str(), attestor = %a.attestor_id, "attestation submitted");
        Ok(a)
    }

    pub fn attestations(&self, party: &str) -> Result<Vec<Attestation>> {
        let now = self.now();
        self.tx(|c| attestations::list(c, party, &self.policy.attestor_keys, now))
    }

    /// Revokes an attestation; the request must be signed by the attestation's own
    /// attestor key (its nonce is spent even if the revocation then fails).
    #[allow(clippy::too_many_arguments)]
    pub fn revoke_attestation(
        &self,
        method: &str,
        path_and_query: &str,
        sig: &RequestSignature,
        body: &[u8],
        party: &str,
        id: &str,
        reason: &str,
    ) -> Result<Attestation> {
        let now = self.now();
        let keys = &self.policy.attestor_keys;
        let window = self.policy.signature_window_secs;
        self.tx(|c| {
            let a = attestations::get(c, party, id, keys, now)?;
            identity::verify_request_by_key(
                c,
                method,
                path_and_query,
                sig,
                body,
                now,
                window,
                &a.attestor,
            )
            .map_err(|e| match e {
                Error::Forbidden(m) => Error::Forbidden(format!(
                    "only the attestor that signed attestation {id} may revoke it: {m}"
                )),
                e => e,
            })
        })?;
        let a = self.tx(|c| attestations::revoke(c, party, id, reason, keys, now))?;
        info!(attestation = %id, party, "attestation revoked");
        Ok(a)
    }

    fn balances_in(&self, c: &dyn Db, party: &Party) -> Result<Balances> {
        let escrow = contracts::list_for(c, &party.id)?
            .into_iter()
            .filter(|ct| ct.demander == party.id)
            .map(|ct| ContractEscrow {
                contract: ct.id,
                amount: ct.escrow,
            })
            .collect();
        Ok(Balances {
            party: party.id.clone(),
            available: ledger::balance(c, &Account::Available(party.id.clone()))?,
            held_back: ledger::balance(c, &Account::HeldBack(party.id.clone()))?,
            held_back_release_at: (party.role == Role::Provider)
                .then(|| receipts::vetting_ends(&self.policy, party)),
            escrow,
        })
    }

    /// A party's balances; only the party itself may read them.
    pub fn balances(&self, who: &Party, party_id: &str) -> Result<Balances> {
        if who.id != party_id {
            return Err(Error::Forbidden(format!(
                "party {} may read only its own balances, not those of {party_id}",
                who.id
            )));
        }
        self.tx(|c| self.balances_in(c, who))
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The metrics, with totals freshly read from the database.
    pub fn render_metrics(&self) -> Result<String> {
        let summary = self.ledger_summary()?;
        self.tx(|c| self.metrics.observe(c, &summary))?;
        Ok(self.metrics.render())
    }

    pub fn ledger_summary(&self) -> Result<LedgerSummary> {
        self.tx(ledger::summary)
    }

    fn rail(&self) -> Result<&Arc<dyn PaymentRail>> {
        self.rail.as_ref().ok_or(Error::NoPaymentRail)
    }

    pub fn deposit(
        &self,
        who: &Party,
        op_id: &str,
        amount: Micros,
        reference: &str,
    ) -> Result<OperationResult> {
        let rail = self.rail()?;
        ledger::check_amount("amount", amount)?;
        let confirmed = rail.confirm_deposit(&who.id, amount, reference)?;
        let now = self.now();
        self.tx(|c| {
            let applied = ledger::deposit(c, op_id, &who.id, amount, &confirmed, now)?;
            info!(party = %who.id, op_id, amount, ?applied, "deposit");
            Ok(OperationResult {
                op_id: op_id.into(),
                applied,
                amount,
                balances: self.balances_in(c, who)?,
            })
        })
    }

    pub fn withdraw(
        &self,
        who: &Party,
        op_id: &str,
        amount: Micros,
        reference: &str,
    ) -> Result<OperationResult> {
        let rail = self.rail()?;
        let now = self.now();
        self.tx(|c| {
            let applied = ledger::withdraw(
                c,
                op_id,
                &who.id,
                amount,
                &format!("{}:{reference}", rail.name()),
                now,
            )?;
            // Paid out inside the transaction: if the rail refuses, the debit rolls back.
            if applied == Applied::New {
                rail.pay_out(&who.id, amount, reference)?;
            }
            info!(party = %who.id, op_id, amount, ?applied, "withdrawal");
            Ok(OperationResult {
                op_id: op_id.into(),
                applied,
                amount,
                balances: self.balances_in(c, who)?,
            })
        })
    }

    /// Releases a provider's held-back credits once its vetting period is over.
    pub fn release_held_back(&self, who: &Party, op_id: &str) -> Result<OperationResult> {
        let now = self.now();
        if who.role != Role::Provider {
            return Err(Error::Forbidden(
                "only providers have held-back credits".into(),
            ));
        }
        let ends = receipts::vetting_ends(&self.policy, who);
        if now < ends {
            return Err(Error::Conflict(format!(
                "provider {} is in vetting until {ends}; held-back credits are released after that",
                who.id
            )));
        }
        self.tx(|c| {
            let (applied, amount) = ledger::release_held_back(c, op_id, &who.id, now)?;
            info!(provider = %who.id, op_id, amount, ?applied, "held-back credits released");
            Ok(OperationResult {
                op_id: op_id.into(),
                applied,
                amount,
                balances: self.balances_in(c, who)?,
            })
        })
    }

    pub fn publish_offer(&self, who: &Party, offer: &NewOffer) -> Result<Offer> {
        let now = self.now();
        self.tx(|c| offers::publish(c, who, offer, now))
    }

    pub fn withdraw_offer(&self, who: &Party, id: &str) -> Result<Offer> {
        self.tx(|c| offers::withdraw(c, who, id))
    }

    pub fn offer(&self, id: &str) -> Result<Offer> {
        let now = self.now();
        self.tx(|c| {
            contracts::expire_proposals(c, now)?;
            offers::get(c, id)
        })
    }

    pub fn search_offers(&self, filter: &OfferFilter) -> Result<Vec<Offer>> {
        let now = self.now();
        self.tx(|c| {
            contracts::expire_proposals(c, now)?;
            let found = offers::search(c, filter)?;
            if filter.min_trust.is_none() && filter.min_score.is_none() {
                return Ok(found);
            }
            // Each provider's trust level and score, looked up once.
            let mut seen: std::collections::HashMap<String, (attestations::TrustLevel, u32)> =
                std::collections::HashMap::new();
            let mut kept = Vec::with_capacity(found.len());
            for offer in found {
                let (level, score) = match seen.get(&offer.provider) {
                    Some(&v) => v,
                    None => {
                        let trust = attestations::trust(
                            c,
                            &offer.provider,
                            &self.policy.attestor_keys,
                            now,
                        )?;
                        let score = match filter.min_score {
                            Some(_) => {
                                let party = identity::party(c, &offer.provider)?;
                                ratings::rating(
                                    c,
                                    &party,
                                    self.policy.receipt_tolerance_bps,
                                    &trust,
                                )?
                                .score
                            }
                            None => 0,
                        };
                        seen.insert(offer.provider.clone(), (trust.level, score));
                        (trust.level, score)
                    }
                };
                if filter.min_trust.is_some_and(|min| level < min)
                    || filter.min_score.is_some_and(|min| score < min)
                {
                    continue;
                }
                kept.push(offer);
            }
            Ok(kept)
        })
    }

    /// Proposes a contract; the signed request is kept as the demander's signature.
    pub fn propose_contract(
        &self,
        who: &Verified,
        body: &[u8],
        new: &NewContract,
    ) -> Result<Contract> {
        let now = self.now();
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            let ct = contracts::propose(
                c,
                &who.party,
                new,
                self.policy.receipt_period_secs,
                evidence,
                now,
            )?;
            info!(contract = %ct.id, demander = %ct.demander, provider = %ct.provider, reserved_bytes = ct.reserved_bytes, "contract proposed");
            Ok(ct)
        })
    }

    pub fn accept_contract(&self, who: &Verified, body: &[u8], id: &str) -> Result<Contract> {
        let now = self.now();
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            let ct = contracts::accept(c, &who.party, id, evidence, now)?;
            info!(contract = %ct.id, "contract accepted");
            Ok(ct)
        })
    }

    pub fn reject_contract(&self, who: &Party, id: &str) -> Result<Contract> {
        let now = self.now();
        self.tx(|c| contracts::reject(c, who, id, now))
    }

    pub fn contract(&self, who: &Party, id: &str) -> Result<Contract> {
        self.tx(|c| {
            let ct = contracts::get(c, id)?;
            ct.check_viewer(who)?;
            Ok(ct)
        })
    }

    pub fn contracts_of(&self, who: &Party) -> Result<Vec<Contract>> {
        self.tx(|c| contracts::list_for(c, &who.id))
    }

    /// Prepays into escrow, then settles periods that were waiting for funds.
    pub fn prepay(
        &self,
        who: &Party,
        id: &str,
        op_id: &str,
        amount: Micros,
    ) -> Result<OperationResult> {
        let now = self.now();
        self.tx(|c| {
            let (applied, ct) = contracts::prepay(c, who, id, op_id, amount, now)?;
            receipts::settle_waiting(c, &self.policy, &ct, now)?;
            Ok(OperationResult {
                op_id: op_id.into(),
                applied,
                amount,
                balances: self.balances_in(c, who)?,
            })
        })
    }

    pub fn terminate_contract(&self, who: &Party, id: &str) -> Result<Termination> {
        let now = self.now();
        self.tx(|c| {
            let (contract, refunded) = contracts::terminate(c, who, id, now)?;
            info!(contract = %contract.id, by = %who.id, refunded, "contract terminated");
            Ok(Termination { contract, refunded })
        })
    }

    pub fn submit_receipt(
        &self,
        who: &Verified,
        body: &[u8],
        id: &str,
        r: &UsageReceipt,
    ) -> Result<Period> {
        let now = self.now();
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            let period = receipts::submit(c, &self.policy, &who.party, id, r, evidence, now)?;
            info!(contract = %id, party = %who.party.id, period_start = r.period_start, status = ?period.status, "receipt received");
            Ok(period)
        })
    }

    pub fn periods(&self, who: &Party, id: &str) -> Result<Vec<Period>> {
        let now = self.now();
        self.tx(|c| {
            let ct = contracts::get(c, id)?;
            ct.check_viewer(who)?;
            receipts::periods(c, &self.policy, &ct, now)
        })
    }

    pub fn settle_period(&self, who: &Party, id: &str, period_start: i64) -> Result<Period> {
        let now = self.now();
        self.tx(|c| {
            let ct = contracts::get(c, id)?;
            ct.check_party(who)?;
            receipts::try_settle(c, &self.policy, &ct, period_start, now)
        })
    }

    pub fn rating(&self, party_id: &str) -> Result<Rating> {
        let now = self.now();
        self.tx(|c| {
            let party = identity::party(c, party_id)?;
            let trust = attestations::trust(c, party_id, &self.policy.attestor_keys, now)?;
            ratings::rating(c, &party, self.policy.receipt_tolerance_bps, &trust)
        })
    }

    /// The demander's gateway reports the provider's uptime and latency for a period.
    pub fn observe(
        &self,
        who: &Verified,
        body: &[u8],
        contract: &str,
        o: &crate::quality::Observation,
    ) -> Result<()> {
        let now = self.now();
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            crate::quality::observe(c, &who.party, contract, o, evidence, now)
        })
    }

    /// The demander rates the contract's provider (1 to 5 stars).
    pub fn give_feedback(
        &self,
        who: &Verified,
        body: &[u8],
        contract: &str,
        f: &crate::quality::Feedback,
    ) -> Result<crate::quality::Feedback> {
        let now = self.now();
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            let given = crate::quality::give_feedback(c, &who.party, contract, f, evidence, now)?;
            info!(contract, stars = given.stars, "feedback given");
            Ok(given)
        })
    }

    /// The feedback on a contract, for its parties and arbiters.
    pub fn feedback(
        &self,
        who: &Party,
        contract: &str,
    ) -> Result<Option<crate::quality::Feedback>> {
        self.tx(|c| {
            contracts::get(c, contract)?.check_viewer(who)?;
            crate::quality::feedback_of(c, contract)
        })
    }

    pub fn open_dispute(
        &self,
        who: &Verified,
        body: &[u8],
        contract: &str,
        new: &NewDispute,
    ) -> Result<Dispute> {
        let now = self.now();
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            let d = disputes::open(c, &who.party, contract, new, evidence, now)?;
            info!(dispute = %d.id, contract, by = %who.party.id, "dispute opened");
            Ok(d)
        })
    }

    pub fn decide_dispute(
        &self,
        who: &Verified,
        body: &[u8],
        id: &str,
        decision: &Decision,
    ) -> Result<Dispute> {
        let now = self.now();
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            let d = disputes::decide(c, &who.party, id, decision, evidence, now)?;
            info!(dispute = %id, in_favour_of = decision.in_favour_of.as_str(), amount = decision.amount, "dispute decided");
            Ok(d)
        })
    }

    pub fn dispute(&self, who: &Party, id: &str) -> Result<Dispute> {
        self.tx(|c| {
            let d = disputes::get(c, id)?;
            contracts::get(c, &d.contract)?.check_viewer(who)?;
            Ok(d)
        })
    }

    /// The disputes `who` may read: an arbiter's are all of the market's.
    pub fn disputes_of(&self, who: &Party, state: DisputeState) -> Result<Vec<Dispute>> {
        self.tx(|c| disputes::list_visible(c, who, state))
    }

    pub fn disputes_of_contract(&self, who: &Party, contract: &str) -> Result<Vec<Dispute>> {
        self.tx(|c| {
            contracts::get(c, contract)?.check_viewer(who)?;
            disputes::list_for_contract(c, contract)
        })
    }
}
