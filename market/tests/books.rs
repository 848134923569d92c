//! Property test over the whole service (not just the ledger): random
//! deposits, prepayments, receipts from either side, terminations, disputes,
//! releases and withdrawals. Whatever happens, the books balance, nothing is
//! negative and every settled period rests on two agreeing receipts.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use proptest::prelude::*;
use sublet_market::contracts::NewContract;
use sublet_market::disputes::{Decision, NewDispute};
use sublet_market::identity::{Party, Role, Signer, Verified};
use sublet_market::offers::NewOffer;
use sublet_market::rail::ManualRail;
use sublet_market::receipts::{PeriodStatus, UsageReceipt};
use sublet_market::{Error, Market, Policy, Result};

#[path = "../../e2e/src/postgres.rs"]
mod pg;

const GIB: u64 = 1 << 30;
const T0: i64 = 1_800_000_000;
/// Deposited and prepaid into each of the four contracts before the steps run.
const PREFUND: i64 = 3_000_000;

#[derive(Debug, Clone)]
enum Step {
    Deposit(usize, i64),
    Withdraw(usize, i64),
    Prepay(usize, i64),
    Receipt {
        contract: usize,
        provider_side: bool,
        period: i64,
        gib_hours: u64,
        egress: u64,
        passed: u32,
        failed: u32,
    },
    /// Both sides report the same usage for a period.
    Agreed {
        contract: usize,
        period: i64,
        gib_hours: u64,
        passed: u32,
        failed: u32,
    },
    Terminate(usize, bool),
    Dispute(usize, bool, i64),
    Release(usize),
    Wait(i64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (0..2usize, 1..5_000_000i64).prop_map(|(d, a)| Step::Deposit(d, a)),
        1 => (0..4usize, 1..3_000_000i64).prop_map(|(p, a)| Step::Withdraw(p, a)),
        1 => (0..4usize, 1..3_000_000i64).prop_map(|(c, a)| Step::Prepay(c, a)),
        4 => (0..4usize, any::<bool>(), 0..4i64, 0..12u64, 0..2 * GIB, 0..6u32, 0..3u32).prop_map(
            |(contract, provider_side, period, gib_hours, egress, passed, failed)| Step::Receipt {
                contract, provider_side, period, gib_hours, egress, passed, failed,
            }
        ),
        4 => (0..4usize, 0..4i64, 0..12u64, 0..6u32, 0..3u32).prop_map(
            |(contract, period, gib_hours, passed, failed)| Step::Agreed {
                contract, period, gib_hours, passed, failed,
            }
        ),
        1 => (0..4usize, any::<bool>()).prop_map(|(c, by_provider)| Step::Terminate(c, by_provider)),
        1 => (0..4usize, any::<bool>(), 0..2_000_000i64).prop_map(|(c, f, a)| Step::Dispute(c, f, a)),
        1 => (0..2usize).prop_map(Step::Release),
        1 => (0..(3 * 24 * 3600i64)).prop_map(Step::Wait),
    ]
}

struct World {
    market: Market,
    clock: Arc<AtomicI64>,
    demanders: Vec<Party>,
    providers: Vec<Party>,
    judge: Party,
    /// (contract id, demander index, provider index)
    contracts: Vec<(String, usize, usize)>,
}

fn party(m: &Market, role: Role, name: &str) -> Result<(Signer, Party)> {
    let (s, _) = Signer::generate()?;
    let (challenge, _) = m.challenge(&s.public_key_hex())?;
    let p = m.register(&s.registration(&challenge, role, name))?;
    Ok((s, p))
}

fn verified(p: &Party) -> Verified {
    Verified {
        party: p.clone(),
        canonical: "property test".into(),
        signature: "-".into(),
    }
}

fn world() -> Result<World> {
    world_on(None)
}

/// The world on PostgreSQL at `pg`, or on an in-memory SQLite database.
fn world_on(pg: Option<&str>) -> Result<World> {
    let clock = Arc::new(AtomicI64::new(T0));
    let (judge_key, _) = Signer::generate()?;
    let policy = Policy {
        vetting_period_secs: 2 * 24 * 3600,
        arbiter_keys: vec![judge_key.public_key_hex()],
        ..Policy::default()
    };
    let c = clock.clone();
    let market = match pg {
        Some(url) => Market::open_postgres(url, policy, Some(Arc::new(ManualRail)))?,
        None => Market::in_memory(policy, Some(Arc::new(ManualRail)))?,
    }
    .with_clock(move || c.load(Ordering::SeqCst));
    let (challenge, _) = market.challenge(&judge_key.public_key_hex())?;
    let judge = market.register(&judge_key.registration(&challenge, Role::Arbiter, "judge"))?;
    let demanders = vec![
        party(&market, Role::Demander, "d0")?.1,
        party(&market, Role::Demander, "d1")?.1,
    ];
    let providers = vec![
        party(&market, Role::Provider, "p0")?.1,
        party(&market, Role::Provider, "p1")?.1,
    ];
    let mut contracts = Vec::new();
    for (pi, p) in providers.iter().enumerate() {
        let offer = market.publish_offer(
            p,
            &NewOffer {
                capacity_bytes: 100 * GIB,
                price_per_gib_month: 7_300_000 * (pi as i64 + 1),
                egress_price_per_gib: 1_000_000,
                region: "eu".into(),
                min_term_days: 0,
                promised_uptime_bps: 9900,
                endpoint: String::new(),
            },
        )?;
        for (di, d) in demanders.iter().enumerate() {
            let new = NewContract {
                offer_id: offer.id.clone(),
                reserved_bytes: 10 * GIB,
                term_days: 30,
            };
            let c = market.propose_contract(&verified(d), b"{}", &new)?;
            market.accept_contract(&verified(p), b"{}", &c.id)?;
            // Start funded so that most histories reach settlements.
            market.deposit(d, &format!("seed-dep-{}", c.id), PREFUND, "seed", None)?;
            market.prepay(d, &c.id, &format!("seed-pre-{}", c.id), PREFUND)?;
            contracts.push((c.id, di, pi));
        }
    }
    Ok(World {
        market,
        clock,
        demanders,
        providers,
        judge,
        contracts,
    })
}

impl World {
    fn everyone(&self) -> Vec<&Party> {
        self.demanders.iter().chain(&self.providers).collect()
    }

    fn run(&self, i: usize, step: &Step) -> Result<()> {
        let m = &self.market;
        match *step {
            Step::Deposit(d, a) => m
                .deposit(&self.demanders[d], &format!("dep-{i}"), a, "t", None)
                .map(drop),
            Step::Withdraw(p, a) => m
                .withdraw(self.everyone()[p], &format!("wd-{i}"), a, "t", None)
                .map(drop),
            Step::Prepay(c, a) => {
                let (id, d, _) = &self.contracts[c];
                m.prepay(&self.demanders[*d], id, &format!("pre-{i}"), a)
                    .map(drop)
            }
            Step::Receipt {
                contract,
                provider_side,
                period,
                gib_hours,
                egress,
                passed,
                failed,
            } => {
                let (id, d, p) = &self.contracts[contract];
                let who = if provider_side {
                    &self.providers[*p]
                } else {
                    &self.demanders[*d]
                };
                let start = m.contract(who, id)?.accepted_at.unwrap_or(T0) + period * 3600;
                let r = UsageReceipt {
                    period_start: start,
                    period_end: start + 3600,
                    gib_hours,
                    egress_bytes: egress,
                    audits_passed: passed,
                    audits_failed: failed,
                    shards_failed: 0,
                };
                m.submit_receipt(&verified(who), b"{}", id, &r).map(drop)
            }
            Step::Agreed {
                contract,
                period,
                gib_hours,
                passed,
                failed,
            } => {
                for provider_side in [false, true] {
                    let r = self.run(
                        i,
                        &Step::Receipt {
                            contract,
                            provider_side,
                            period,
                            gib_hours,
                            egress: GIB / 2,
                            passed,
                            failed,
                        },
                    );
                    // Two separate submissions: the first may settle even if
                    // the second is refused, so only failures inside count.
                    if let Err(e @ (Error::Internal(_) | Error::Database(_))) = r {
                        return Err(e);
                    }
                }
                Ok(())
            }
            Step::Terminate(c, by_provider) => {
                let (id, d, p) = &self.contracts[c];
                let who = if by_provider {
                    &self.providers[*p]
                } else {
                    &self.demanders[*d]
                };
                m.terminate_contract(who, id).map(drop)
            }
            Step::Dispute(c, for_provider, amount) => {
                let (id, d, _) = &self.contracts[c];
                let new = NewDispute {
                    period_start: None,
                    claim: "claim".into(),
                };
                let dispute = m.open_dispute(&verified(&self.demanders[*d]), b"{}", id, &new)?;
                let decision = Decision {
                    in_favour_of: if for_provider {
                        Role::Provider
                    } else {
                        Role::Demander
                    },
                    amount,
                    reason: "because".into(),
                };
                m.decide_dispute(&verified(&self.judge), b"{}", &dispute.id, &decision)
                    .map(drop)
            }
            Step::Release(p) => m
                .release_held_back(&self.providers[p], &format!("rel-{i}"))
                .map(drop),
            Step::Wait(secs) => {
                self.clock.fetch_add(secs, Ordering::SeqCst);
                Ok(())
            }
        }
    }

    fn check(&self, deposits: i64) -> std::result::Result<(), TestCaseError> {
        let m = &self.market;
        let s = m
            .ledger_summary()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(s.balanced, "{:?}", s);
        prop_assert_eq!(s.net_deposits, deposits);
        let mut sum = s.platform;
        let mut settled = 0;
        for p in self.everyone() {
            let b = m
                .balances(p, &p.id)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(b.available >= 0 && b.held_back >= 0, "{:?}", b);
            sum += b.available + b.held_back;
        }
        for (id, d, _) in &self.contracts {
            let c = m
                .contract(&self.demanders[*d], id)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(c.escrow >= 0);
            sum += c.escrow;
            for p in m
                .periods(&self.demanders[*d], id)
                .map_err(|e| TestCaseError::fail(e.to_string()))?
            {
                if p.status == PeriodStatus::Settled {
                    settled += 1;
                    // Both sides reported and agreed: equal, or within the market's
                    // tolerance (then paid on the lower figure).
                    prop_assert!(
                        p.demander_receipt.is_some()
                            && p.provider_receipt.is_some()
                            && p.mismatched_fields.is_empty(),
                        "{:?}",
                        p
                    );
                    let pay = p
                        .settlement
                        .as_ref()
                        .map(|s| s.payout)
                        .ok_or_else(|| TestCaseError::fail("no payout"))?;
                    prop_assert_eq!(
                        pay.penalty + pay.fee + pay.held_back + pay.to_provider,
                        pay.gross
                    );
                }
            }
        }
        prop_assert_eq!(sum, deposits, "balances don't add up to deposits");
        if std::env::var_os("BOOKS_DEBUG").is_some() {
            eprintln!("settled={settled} sum={sum}");
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn books_balance_whatever_the_parties_do(steps in proptest::collection::vec(step(), 1..40)) {
        let w = world().map_err(|e| TestCaseError::fail(e.to_string()))?;
        run_steps(&w, &steps)?;
    }
}

proptest! {
    // Fewer cases: each gets a fresh PostgreSQL database.
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn books_balance_on_postgres(steps in proptest::collection::vec(step(), 1..40)) {
        let Some(url) = pg::database() else {
            return Ok(());
        };
        let w = world_on(Some(&url)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        run_steps(&w, &steps)?;
    }
}

fn run_steps(w: &World, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut deposits = 4 * PREFUND;
    w.check(deposits)?;
    for (i, step) in steps.iter().enumerate() {
        let before = w
            .market
            .ledger_summary()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        match w.run(i, step) {
            Ok(()) => match step {
                Step::Deposit(_, a) => deposits += a,
                Step::Withdraw(_, a) => deposits -= a,
                _ => {}
            },
            Err(e @ (Error::Internal(_) | Error::Database(_))) => {
                prop_assert!(false, "{:?} failed inside: {}", step, e)
            }
            Err(_) => {
                let after = w
                    .market
                    .ledger_summary()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(before, after, "refused {:?} moved credits", step);
            }
        }
        w.check(deposits)?;
    }
    Ok(())
}
