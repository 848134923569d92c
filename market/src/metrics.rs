//! Prometheus metrics of the market (`sublet_market_...`): HTTP answers counted
//! as they go out, ledger and market totals read from the database at each scrape.

use crate::db::Db;
use crate::params;
use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use sublet_market_api::{Error, Result};

use crate::ledger::LedgerSummary;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Answers by HTTP method and status code.
    pub http_responses: IntCounterVec,
    /// Micro-credits by kind of account (available, escrow, held_back, platform, net_deposits).
    credits: IntGaugeVec,
    /// 1 while the ledger's total equals net deposits.
    balanced: IntGauge,
    parties: IntGaugeVec,
    contracts: IntGaugeVec,
    settled_periods: IntGauge,
    open_disputes: IntGauge,
}

fn internal(e: prometheus::Error) -> Error {
    Error::Internal(format!("metrics: {e}"))
}

impl Metrics {
    pub fn new() -> Result<Self> {
        let registry = Registry::new();
        let vec = |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec> {
            let g = IntGaugeVec::new(Opts::new(format!("sublet_market_{name}"), help), labels)
                .map_err(internal)?;
            registry.register(Box::new(g.clone())).map_err(internal)?;
            Ok(g)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge> {
            let g = IntGauge::new(format!("sublet_market_{name}"), help).map_err(internal)?;
            registry.register(Box::new(g.clone())).map_err(internal)?;
            Ok(g)
        };
        let http_responses = IntCounterVec::new(
            Opts::new(
                "sublet_market_http_responses_total",
                "HTTP answers by method and status.",
            ),
            &["method", "status"],
        )
        .map_err(internal)?;
        registry
            .register(Box::new(http_responses.clone()))
            .map_err(internal)?;
        Ok(Self {
            http_responses,
            credits: vec("credits", "Micro-credits by kind of account.", &["account"])?,
            balanced: gauge(
                "ledger_balanced",
                "1 while the ledger total equals net deposits.",
            )?,
            parties: vec("parties", "Registered parties by role.", &["role"])?,
            contracts: vec("contracts", "Contracts by state.", &["state"])?,
            settled_periods: gauge("settled_periods", "Receipt periods settled.")?,
            open_disputes: gauge("open_disputes", "Disputes waiting for an arbiter.")?,
            registry,
        })
    }

    /// Reads the totals from the database.
    pub fn observe(&self, conn: &dyn Db, ledger: &LedgerSummary) -> Result<()> {
        for (account, value) in [
            ("available", ledger.available),
            ("escrow", ledger.escrow),
            ("held_back", ledger.held_back),
            ("platform", ledger.platform),
            ("net_deposits", ledger.net_deposits),
        ] {
            self.credits.with_label_values(&[account]).set(value);
        }
        self.balanced.set(i64::from(ledger.balanced));
        for (query, gauge) in [
            (
                "SELECT role, COUNT(*) FROM parties GROUP BY role",
                &self.parties,
            ),
            (
                "SELECT state, COUNT(*) FROM contracts GROUP BY state",
                &self.contracts,
            ),
        ] {
            gauge.reset();
            let rows = conn.query_map(query, params![], |r| {
                Ok((r.get::<String>(0)?, r.get::<i64>(1)?))
            })?;
            for (label, n) in rows {
                gauge.with_label_values(&[label.as_str()]).set(n);
            }
        }
        self.settled_periods.set(conn.query_row(
            "SELECT COUNT(*) FROM settled_periods",
            params![],
            |r| r.get(0),
        )?);
        self.open_disputes.set(conn.query_row(
            "SELECT COUNT(*) FROM disputes WHERE decided_by IS NULL",
            params![],
            |r| r.get(0),
        )?);
        Ok(())
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
