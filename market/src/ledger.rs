//! The double-entry ledger: every movement of credits is one operation made of
//! postings that sum to zero, in integer micro-credits, applied inside the
//! caller's SQLite transaction. Operation ids make every operation idempotent.

use crate::db::Db;
use crate::params;
use serde::Serialize;
use sublet_market_api::contracts::Contract;
use sublet_market_api::{Error, Result};

/// Amounts are integer micro-credits (`sublet_market_api::credits`).
pub use sublet_market_api::credits::{CREDIT, MAX_AMOUNT, Micros};

/// Basis points: 10 000 is 100 %.
pub const BPS: i64 = 10_000;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    account TEXT PRIMARY KEY,
    balance INTEGER NOT NULL,
    CHECK (account = 'external' OR balance >= 0)
);
CREATE TABLE IF NOT EXISTS operations (
    op_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS postings (
    op_id TEXT NOT NULL REFERENCES operations(op_id),
    account TEXT NOT NULL,
    amount INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS postings_account ON postings(account);
CREATE TABLE IF NOT EXISTS settled_periods (
    contract TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    op_id TEXT NOT NULL,
    gross INTEGER NOT NULL,
    penalty INTEGER NOT NULL,
    fee INTEGER NOT NULL,
    held_back INTEGER NOT NULL,
    to_provider INTEGER NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (contract, period_start)
);
";

/// Where credits sit. `External` is the world outside the market: deposits come
/// from it and withdrawals go to it, so it is the only account that may be negative.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    External,
    Platform,
    /// A party's spendable credits.
    Available(String),
    /// A contract's prepayment, spent by settlements and refunded on termination.
    Escrow(String),
    /// A new provider's withheld share of its earnings, released after vetting.
    HeldBack(String),
}

impl Account {
    pub fn key(&self) -> String {
        match self {
            Account::External => "external".into(),
            Account::Platform => "platform".into(),
            Account::Available(p) => format!("available:{p}"),
            Account::Escrow(c) => format!("escrow:{c}"),
            Account::HeldBack(p) => format!("held:{p}"),
        }
    }

    pub fn parse(key: &str) -> Option<Self> {
        match key.split_once(':') {
            None if key == "external" => Some(Account::External),
            None if key == "platform" => Some(Account::Platform),
            Some(("available", p)) => Some(Account::Available(p.into())),
            Some(("escrow", c)) => Some(Account::Escrow(c.into())),
            Some(("held", p)) => Some(Account::HeldBack(p.into())),
            _ => None,
        }
    }
}

/// Whether an operation moved credits now or had been applied before under the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    New,
    Replayed,
}

/// Checks a caller-supplied amount.
pub fn check_amount(field: &str, amount: Micros) -> Result<()> {
    if amount <= 0 || amount > MAX_AMOUNT {
        return Err(Error::BadRequest(format!(
            "{field} must be between 1 and {MAX_AMOUNT} micro-credits, got {amount}"
        )));
    }
    Ok(())
}

fn check_op_id(op_id: &str) -> Result<()> {
    if op_id.is_empty()
        || op_id.len() > 128
        || !op_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
    {
        return Err(Error::BadRequest(format!(
            "op_id must be 1 to 128 characters of letters, digits, '-', '_', ':' or '.', got {op_id:?}"
        )));
    }
    Ok(())
}

/// The one place balances change. Either every posting is written or the
/// caller's transaction is rolled back by the error.
fn apply(
    conn: &dyn Db,
    op_id: &str,
    kind: &str,
    fingerprint: &str,
    postings: &[(Account, Micros)],
    at: i64,
) -> Result<Applied> {
    check_op_id(op_id)?;
    let existing: Option<String> = conn.query_opt(
        "SELECT fingerprint FROM operations WHERE op_id = ?1",
        [op_id],
        |r| r.get(0),
    )?;
    if let Some(existing) = existing {
        return if existing == fingerprint {
            Ok(Applied::Replayed)
        } else {
            Err(Error::OperationIdReused {
                op_id: op_id.into(),
            })
        };
    }
    let sum: i128 = postings.iter().map(|(_, a)| i128::from(*a)).sum();
    if sum != 0 {
        return Err(Error::Internal(format!(
            "operation {kind} {op_id} is unbalanced: its postings sum to {sum}"
        )));
    }
    conn.execute(
        "INSERT INTO operations (op_id, kind, fingerprint, at) VALUES (?1, ?2, ?3, ?4)",
        params![op_id, kind, fingerprint, at],
    )?;
    for (account, amount) in postings.iter().filter(|(_, a)| *a != 0) {
        let key = account.key();
        let balance = balance(conn, account)?;
        let new = balance
            .checked_add(*amount)
            .ok_or_else(|| Error::Internal(format!("balance of {key} overflows")))?;
        if new < 0 && *account != Account::External {
            return Err(Error::InsufficientFunds {
                account: key,
                balance,
                needed: -amount,
            });
        }
        conn.execute(
            "INSERT INTO accounts (account, balance) VALUES (?1, ?2)
             ON CONFLICT (account) DO UPDATE SET balance = excluded.balance",
            params![key, new],
        )?;
        conn.execute(
            "INSERT INTO postings (op_id, account, amount) VALUES (?1, ?2, ?3)",
            params![op_id, key, amount],
        )?;
    }
    Ok(Applied::New)
}

/// The credits an earlier operation moved (the sum of its credit postings).
fn moved_by(conn: &dyn Db, op_id: &str) -> Result<Micros> {
    conn.query_row(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM postings WHERE op_id = ?1 AND amount > 0",
        [op_id],
        |r| r.get(0),
    )
}

pub fn balance(conn: &dyn Db, account: &Account) -> Result<Micros> {
    Ok(conn
        .query_opt(
            "SELECT balance FROM accounts WHERE account = ?1",
            [account.key()],
            |r| r.get(0),
        )?
        .unwrap_or(0))
}

/// Every account with its balance, ordered by key.
pub fn balances(conn: &dyn Db) -> Result<Vec<(String, Micros)>> {
    conn.query_map(
        "SELECT account, balance FROM accounts ORDER BY account",
        params![],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Credits that entered from outside: deposits minus withdrawals.
pub fn net_inflow(conn: &dyn Db) -> Result<Micros> {
    Ok(-balance(conn, &Account::External)?)
}

/// Totals over the whole ledger; `balanced` is the market's solvency check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerSummary {
    /// Deposits minus withdrawals: the credits that should be inside the market.
    pub net_deposits: Micros,
    pub available: Micros,
    pub escrow: Micros,
    pub held_back: Micros,
    pub platform: Micros,
    /// available + escrow + held_back + platform.
    pub total: Micros,
    /// Whether total equals net_deposits.
    pub balanced: bool,
}

/// Sums every account by kind and checks the total against net deposits.
pub fn summary(conn: &dyn Db) -> Result<LedgerSummary> {
    let mut s = LedgerSummary {
        net_deposits: net_inflow(conn)?,
        available: 0,
        escrow: 0,
        held_back: 0,
        platform: 0,
        total: 0,
        balanced: false,
    };
    for (key, balance) in balances(conn)? {
        match Account::parse(&key) {
            Some(Account::Available(_)) => s.available += balance,
            Some(Account::Escrow(_)) => s.escrow += balance,
            Some(Account::HeldBack(_)) => s.held_back += balance,
            Some(Account::Platform) => s.platform += balance,
            Some(Account::External) => {}
            None => return Err(Error::Internal(format!("unknown account {key}"))),
        }
    }
    s.total = s.available + s.escrow + s.held_back + s.platform;
    s.balanced = s.total == s.net_deposits;
    Ok(s)
}

pub fn deposit(
    conn: &dyn Db,
    op_id: &str,
    party: &str,
    amount: Micros,
    reference: &str,
    at: i64,
) -> Result<Applied> {
    check_amount("amount", amount)?;
    apply(
        conn,
        op_id,
        "deposit",
        &format!("deposit|{party}|{amount}|{reference}"),
        &[
            (Account::External, -amount),
            (Account::Available(party.into()), amount),
        ],
        at,
    )
}

pub fn withdraw(
    conn: &dyn Db,
    op_id: &str,
    party: &str,
    amount: Micros,
    reference: &str,
    at: i64,
) -> Result<Applied> {
    check_amount("amount", amount)?;
    apply(
        conn,
        op_id,
        "withdraw",
        &format!("withdraw|{party}|{amount}|{reference}"),
        &[
            (Account::Available(party.into()), -amount),
            (Account::External, amount),
        ],
        at,
    )
}

/// Moves a demander's available credits into a contract's escrow.
pub fn prepay(
    conn: &dyn Db,
    op_id: &str,
    contract: &str,
    demander: &str,
    amount: Micros,
    at: i64,
) -> Result<Applied> {
    check_amount("amount", amount)?;
    apply(
        conn,
        op_id,
        "prepay",
        &format!("prepay|{contract}|{demander}|{amount}"),
        &[
            (Account::Available(demander.into()), -amount),
            (Account::Escrow(contract.into()), amount),
        ],
        at,
    )
}

/// How one period's charge is divided. All parts are non-negative and
/// `penalty + fee + held_back + to_provider == gross`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Payout {
    /// What the period costs at the contract's prices, taken from escrow.
    pub gross: Micros,
    /// Returned to the demander for failed audits.
    pub penalty: Micros,
    /// The platform's share.
    pub fee: Micros,
    /// Withheld from a new provider until its vetting period ends.
    pub held_back: Micros,
    /// Paid to the provider's available balance now.
    pub to_provider: Micros,
}

/// `amount * num / den`, rounded down, without overflow.
pub fn proportion(amount: Micros, num: u64, den: u64) -> Micros {
    if den == 0 || amount <= 0 {
        return 0;
    }
    let num = num.min(den);
    // amount <= i64::MAX and num/den <= 1, so the result fits.
    i64::try_from(i128::from(amount) * i128::from(num) / i128::from(den)).unwrap_or(amount)
}

/// Splits a period's gross charge. Every share rounds down, so rounding always
/// leaves the remainder with the provider.
pub fn split_payout(gross: Micros, penalty: Micros, fee_bps: i64, held_back_bps: i64) -> Payout {
    let gross = gross.max(0);
    let penalty = penalty.clamp(0, gross);
    let earned = gross - penalty;
    let fee = proportion(earned, fee_bps.clamp(0, BPS) as u64, BPS as u64);
    let after_fee = earned - fee;
    let held_back = proportion(after_fee, held_back_bps.clamp(0, BPS) as u64, BPS as u64);
    Payout {
        gross,
        penalty,
        fee,
        held_back,
        to_provider: after_fee - held_back,
    }
}

/// A settled receipt period as the ledger recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettledPeriod {
    pub op_id: String,
    pub payout: Payout,
    pub at: i64,
}

pub fn settled_period(
    conn: &dyn Db,
    contract: &str,
    period_start: i64,
) -> Result<Option<SettledPeriod>> {
    conn.query_opt(
        "SELECT op_id, gross, penalty, fee, held_back, to_provider, at FROM settled_periods
             WHERE contract = ?1 AND period_start = ?2",
        params![contract, period_start],
        |r| {
            Ok(SettledPeriod {
                op_id: r.get(0)?,
                payout: Payout {
                    gross: r.get(1)?,
                    penalty: r.get(2)?,
                    fee: r.get(3)?,
                    held_back: r.get(4)?,
                    to_provider: r.get(5)?,
                },
                at: r.get(6)?,
            })
        },
    )
}

/// The parties of a contract, as the ledger needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parties<'a> {
    pub contract: &'a str,
    pub demander: &'a str,
    pub provider: &'a str,
}

impl<'a> Parties<'a> {
    pub fn of(c: &'a Contract) -> Self {
        Parties {
            contract: &c.id,
            demander: &c.demander,
            provider: &c.provider,
        }
    }
}

/// Pays one receipt period out of escrow. A period is paid at most once: the
/// same `op_id` again is a no-op, another `op_id` for a settled period is refused.
pub fn settle(
    conn: &dyn Db,
    op_id: &str,
    parties: &Parties<'_>,
    period_start: i64,
    payout: &Payout,
    at: i64,
) -> Result<Applied> {
    let Payout {
        gross,
        penalty,
        fee,
        held_back,
        to_provider,
    } = *payout;
    if [gross, penalty, fee, held_back, to_provider]
        .iter()
        .any(|a| *a < 0 || *a > MAX_AMOUNT)
        || penalty + fee + held_back + to_provider != gross
    {
        return Err(Error::Internal(format!("inconsistent payout {payout:?}")));
    }
    if let Some(done) = settled_period(conn, parties.contract, period_start)?
        && done.op_id != op_id
    {
        return Err(Error::AlreadySettled {
            contract: parties.contract.into(),
            period_start,
            op_id: done.op_id,
        });
    }
    let applied = apply(
        conn,
        op_id,
        "settle",
        &format!(
            "settle|{}|{}|{}|{period_start}|{gross}|{penalty}|{fee}|{held_back}|{to_provider}",
            parties.contract, parties.demander, parties.provider
        ),
        &[
            (Account::Escrow(parties.contract.into()), -gross),
            (Account::Available(parties.demander.into()), penalty),
            (Account::Platform, fee),
            (Account::HeldBack(parties.provider.into()), held_back),
            (Account::Available(parties.provider.into()), to_provider),
        ],
        at,
    )?;
    if applied == Applied::New {
        conn.execute(
            "INSERT INTO settled_periods
             (contract, period_start, op_id, gross, penalty, fee, held_back, to_provider, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                parties.contract,
                period_start,
                op_id,
                gross,
                penalty,
                fee,
                held_back,
                to_provider,
                at
            ],
        )?;
    }
    Ok(applied)
}

/// Releases everything held back from a provider. Returns the amount released
/// (by the first application, when replayed).
pub fn release_held_back(
    conn: &dyn Db,
    op_id: &str,
    provider: &str,
    at: i64,
) -> Result<(Applied, Micros)> {
    let amount = balance(conn, &Account::HeldBack(provider.into()))?;
    let applied = apply(
        conn,
        op_id,
        "release_held_back",
        &format!("release_held_back|{provider}"),
        &[
            (Account::HeldBack(provider.into()), -amount),
            (Account::Available(provider.into()), amount),
        ],
        at,
    )?;
    Ok((applied, moved_by(conn, op_id)?))
}

/// Refunds what is left in a contract's escrow to its demander (termination).
pub fn refund_escrow(
    conn: &dyn Db,
    op_id: &str,
    contract: &str,
    demander: &str,
    at: i64,
) -> Result<(Applied, Micros)> {
    let amount = balance(conn, &Account::Escrow(contract.into()))?;
    let applied = apply(
        conn,
        op_id,
        "refund_escrow",
        &format!("refund_escrow|{contract}|{demander}"),
        &[
            (Account::Escrow(contract.into()), -amount),
            (Account::Available(demander.into()), amount),
        ],
        at,
    )?;
    Ok((applied, moved_by(conn, op_id)?))
}

/// Charges a provider (lost shards, a decided dispute) in favour of a demander:
/// first from its held-back credits, then from its available ones, never below
/// zero. Returns the amount actually charged.
pub fn penalize(
    conn: &dyn Db,
    op_id: &str,
    provider: &str,
    demander: &str,
    amount: Micros,
    reason: &str,
    at: i64,
) -> Result<(Applied, Micros)> {
    check_amount("amount", amount)?;
    let held = balance(conn, &Account::HeldBack(provider.into()))?;
    let from_held = amount.min(held);
    let available = balance(conn, &Account::Available(provider.into()))?;
    let from_available = (amount - from_held).min(available);
    let applied = apply(
        conn,
        op_id,
        "penalize",
        &format!("penalize|{provider}|{demander}|{amount}|{reason}"),
        &[
            (Account::HeldBack(provider.into()), -from_held),
            (Account::Available(provider.into()), -from_available),
            (
                Account::Available(demander.into()),
                from_held + from_available,
            ),
        ],
        at,
    )?;
    Ok((applied, moved_by(conn, op_id)?))
}

/// A dispute decision moving credits between two accounts inside the market.
pub fn adjust(
    conn: &dyn Db,
    op_id: &str,
    from: &Account,
    to: &Account,
    amount: Micros,
    reason: &str,
    at: i64,
) -> Result<Applied> {
    check_amount("amount", amount)?;
    if *from == Account::External || *to == Account::External || from == to {
        return Err(Error::BadRequest(
            "an adjustment moves credits between two different accounts inside the market".into(),
        ));
    }
    apply(
        conn,
        op_id,
        "adjust",
        &format!("adjust|{}|{}|{amount}|{reason}", from.key(), to.key()),
        &[(from.clone(), -amount), (to.clone(), amount)],
        at,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::sqlite_error;
    use proptest::prelude::*;
    use rusqlite::Connection;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().expect("in-memory sqlite");
        conn.execute_batch(SCHEMA).expect("schema");
        conn
    }

    /// Runs `f` in a transaction that commits only on success, as the service does.
    fn tx<T>(conn: &mut Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let tx = conn.transaction().map_err(sqlite_error)?;
        let out = f(&tx)?;
        tx.commit().map_err(sqlite_error)?;
        Ok(out)
    }

    const C: Parties<'static> = Parties {
        contract: "c1",
        demander: "d1",
        provider: "p1",
    };

    #[test]
    fn settlement_run_twice_pays_once() -> Result<()> {
        let mut conn = db();
        tx(&mut conn, |c| {
            deposit(c, "dep", "d1", 100 * CREDIT, "ref", 0)
        })?;
        tx(&mut conn, |c| prepay(c, "pre", "c1", "d1", 50 * CREDIT, 0))?;
        let payout = split_payout(10 * CREDIT, 0, 100, 2500);
        assert_eq!(
            tx(&mut conn, |c| settle(c, "s1", &C, 0, &payout, 1))?,
            Applied::New
        );
        assert_eq!(
            tx(&mut conn, |c| settle(c, "s1", &C, 0, &payout, 2))?,
            Applied::Replayed
        );
        let again = tx(&mut conn, |c| settle(c, "s1-again", &C, 0, &payout, 2));
        assert!(
            matches!(again, Err(Error::AlreadySettled { ref op_id, .. }) if op_id == "s1"),
            "{again:?}"
        );
        assert_eq!(balance(&conn, &Account::Escrow("c1".into()))?, 40 * CREDIT);
        assert_eq!(
            balance(&conn, &Account::Available("p1".into()))?,
            payout.to_provider
        );
        Ok(())
    }

    #[test]
    fn reused_operation_id_with_other_terms_is_refused() -> Result<()> {
        let mut conn = db();
        tx(&mut conn, |c| deposit(c, "dep", "d1", 5, "ref", 0))?;
        let err = tx(&mut conn, |c| deposit(c, "dep", "d1", 6, "ref", 0));
        assert!(
            matches!(err, Err(Error::OperationIdReused { .. })),
            "{err:?}"
        );
        assert_eq!(balance(&conn, &Account::Available("d1".into()))?, 5);
        Ok(())
    }

    #[test]
    fn prepay_beyond_balance_moves_nothing() -> Result<()> {
        let mut conn = db();
        tx(&mut conn, |c| deposit(c, "dep", "d1", 5, "ref", 0))?;
        let err = tx(&mut conn, |c| prepay(c, "pre", "c1", "d1", 6, 0));
        assert!(
            matches!(
                err,
                Err(Error::InsufficientFunds {
                    balance: 5,
                    needed: 6,
                    ..
                })
            ),
            "{err:?}"
        );
        assert_eq!(balance(&conn, &Account::Available("d1".into()))?, 5);
        assert_eq!(balance(&conn, &Account::Escrow("c1".into()))?, 0);
        // The failed operation left no trace, so its id is still free.
        tx(&mut conn, |c| prepay(c, "pre", "c1", "d1", 5, 0))?;
        Ok(())
    }

    #[test]
    fn settlement_beyond_escrow_is_refused() -> Result<()> {
        let mut conn = db();
        tx(&mut conn, |c| deposit(c, "dep", "d1", 10, "ref", 0))?;
        tx(&mut conn, |c| prepay(c, "pre", "c1", "d1", 10, 0))?;
        let payout = split_payout(11, 0, 0, 0);
        let err = tx(&mut conn, |c| settle(c, "s", &C, 0, &payout, 0));
        assert!(
            matches!(err, Err(Error::InsufficientFunds { .. })),
            "{err:?}"
        );
        assert!(settled_period(&conn, "c1", 0)?.is_none());
        Ok(())
    }

    #[test]
    fn split_payout_rounds_in_the_providers_favour_and_adds_up() {
        let p = split_payout(1_000_003, 333_334, 100, 2500);
        assert_eq!(p.penalty, 333_334);
        assert_eq!(p.fee, 6_666); // 1 % of 666 669, rounded down
        assert_eq!(p.held_back, 165_000); // 25 % of 660 003, rounded down
        assert_eq!(p.to_provider, 495_003);
        assert_eq!(p.penalty + p.fee + p.held_back + p.to_provider, p.gross);
    }

    #[test]
    fn penalty_takes_held_back_first_and_never_overdraws() -> Result<()> {
        let mut conn = db();
        tx(&mut conn, |c| deposit(c, "dep", "d1", 100, "ref", 0))?;
        tx(&mut conn, |c| prepay(c, "pre", "c1", "d1", 100, 0))?;
        let payout = split_payout(100, 0, 0, 5000);
        tx(&mut conn, |c| settle(c, "s", &C, 0, &payout, 0))?;
        let (_, charged) = tx(&mut conn, |c| penalize(c, "pen", "p1", "d1", 70, "lost", 0))?;
        assert_eq!(charged, 70);
        assert_eq!(balance(&conn, &Account::HeldBack("p1".into()))?, 0);
        assert_eq!(balance(&conn, &Account::Available("p1".into()))?, 30);
        let (_, charged) = tx(&mut conn, |c| {
            penalize(c, "pen2", "p1", "d1", 70, "lost", 0)
        })?;
        assert_eq!(charged, 30);
        assert_eq!(balance(&conn, &Account::Available("d1".into()))?, 100);
        Ok(())
    }

    /// One step of a random ledger history over a few parties and contracts.
    #[derive(Debug, Clone)]
    enum Step {
        Deposit(usize, Micros),
        Withdraw(usize, Micros),
        Prepay(usize, Micros),
        Settle(usize, i64, Micros, u64, u64),
        SettleAgain(usize, i64),
        Release(usize),
        Refund(usize),
        Penalize(usize, Micros),
        Adjust(usize, usize, Micros),
        Replay(usize),
    }

    const DEMANDERS: [&str; 2] = ["d1", "d2"];
    const PROVIDERS: [&str; 2] = ["p1", "p2"];
    /// Contract i binds demander i % 2 to provider i / 2.
    fn parties(i: usize) -> Parties<'static> {
        const CONTRACTS: [&str; 4] = ["c0", "c1", "c2", "c3"];
        Parties {
            contract: CONTRACTS[i % 4],
            demander: DEMANDERS[i % 2],
            provider: PROVIDERS[(i % 4) / 2],
        }
    }

    fn step() -> impl Strategy<Value = Step> {
        let amount = 1..2_000i64;
        prop_oneof![
            (0..4usize, amount.clone()).prop_map(|(p, a)| Step::Deposit(p, a)),
            (0..4usize, amount.clone()).prop_map(|(p, a)| Step::Withdraw(p, a)),
            (0..4usize, amount.clone()).prop_map(|(c, a)| Step::Prepay(c, a)),
            (0..4usize, 0..4i64, amount.clone(), 0..10u64, 0..10u64)
                .prop_map(|(c, per, a, f, t)| Step::Settle(c, per, a, f, t)),
            (0..4usize, 0..4i64).prop_map(|(c, per)| Step::SettleAgain(c, per)),
            (0..2usize).prop_map(Step::Release),
            (0..4usize).prop_map(Step::Refund),
            (0..4usize, amount.clone()).prop_map(|(c, a)| Step::Penalize(c, a)),
            (0..8usize, 0..8usize, amount).prop_map(|(f, t, a)| Step::Adjust(f, t, a)),
            any::<usize>().prop_map(Step::Replay),
        ]
    }

    fn party(i: usize) -> &'static str {
        [DEMANDERS[0], DEMANDERS[1], PROVIDERS[0], PROVIDERS[1]][i % 4]
    }

    fn account(i: usize) -> Account {
        match i % 8 {
            0..4 => Account::Available(party(i).into()),
            4 => Account::Platform,
            5 => Account::HeldBack("p1".into()),
            6 => Account::Escrow("c0".into()),
            _ => Account::Escrow("c1".into()),
        }
    }

    /// Applies one step with operation id `op`.
    fn run(conn: &Connection, op: &str, step: &Step) -> Result<Applied> {
        match *step {
            Step::Deposit(p, a) => deposit(conn, op, party(p), a, "test", 0),
            Step::Withdraw(p, a) => withdraw(conn, op, party(p), a, "test", 0),
            Step::Prepay(c, a) => {
                let c = parties(c);
                prepay(conn, op, c.contract, c.demander, a, 0)
            }
            Step::Settle(c, period, gross, failed, total) => {
                let penalty = proportion(gross, failed, total.max(failed));
                let payout = split_payout(gross, penalty, 100, 2500);
                settle(conn, op, &parties(c), period, &payout, 0)
            }
            Step::SettleAgain(c, period) => {
                let payout = split_payout(1, 0, 0, 0);
                settle(conn, op, &parties(c), period, &payout, 0)
            }
            Step::Release(p) => release_held_back(conn, op, PROVIDERS[p % 2], 0).map(|r| r.0),
            Step::Refund(c) => {
                let c = parties(c);
                refund_escrow(conn, op, c.contract, c.demander, 0).map(|r| r.0)
            }
            Step::Penalize(c, a) => {
                let c = parties(c);
                penalize(conn, op, c.provider, c.demander, a, "test", 0).map(|r| r.0)
            }
            Step::Adjust(f, t, a) => adjust(conn, op, &account(f), &account(t), a, "test", 0),
            Step::Replay(_) => unreachable!("replays are resolved by the caller"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever happens: postings balance, credits are only created by
        /// deposits and destroyed by withdrawals, no balance or escrow goes
        /// negative, and replaying an applied operation changes nothing.
        #[test]
        fn ledger_invariants_hold(steps in proptest::collection::vec(step(), 1..60)) {
            let mut conn = db();
            let mut inflow: i64 = 0;
            let mut applied_steps: Vec<(String, Step)> = Vec::new();
            for (i, step) in steps.iter().enumerate() {
                let before = balances(&conn).expect("balances");
                let (op, step) = match step {
                    Step::Replay(n) if !applied_steps.is_empty() => {
                        applied_steps[n % applied_steps.len()].clone()
                    }
                    Step::Replay(_) => continue,
                    s => (format!("op{i}"), s.clone()),
                };
                let result = tx(&mut conn, |c| run(c, &op, &step));
                let after = balances(&conn).expect("balances");
                match result {
                    Ok(Applied::New) => {
                        match step {
                            Step::Deposit(_, a) => inflow += a,
                            Step::Withdraw(_, a) => inflow -= a,
                            _ => {}
                        }
                        applied_steps.push((op, step));
                    }
                    Ok(Applied::Replayed) => prop_assert_eq!(&before, &after, "replay of {} changed balances", op),
                    Err(Error::Internal(e)) => prop_assert!(false, "internal error: {}", e),
                    Err(_) => prop_assert_eq!(&before, &after, "failed {:?} changed balances", step),
                }
                let total: i64 = after.iter().map(|(_, b)| b).sum();
                prop_assert_eq!(total, 0, "postings must balance");
                let internal: i64 = after.iter().filter(|(k, _)| k != "external").map(|(_, b)| b).sum();
                prop_assert_eq!(internal, inflow, "credits created or destroyed");
                prop_assert_eq!(net_inflow(&conn).expect("inflow"), inflow);
                for (k, b) in &after {
                    prop_assert!(k == "external" || *b >= 0, "{} is negative: {}", k, b);
                }
                for c in 0..4 {
                    let p = parties(c);
                    for period in 0..4 {
                        if let Some(s) = settled_period(&conn, p.contract, period).expect("period") {
                            let pay = s.payout;
                            prop_assert_eq!(pay.penalty + pay.fee + pay.held_back + pay.to_provider, pay.gross);
                        }
                    }
                }
            }
        }
    }
}
