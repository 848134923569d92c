//! The market over HTTP: two providers publish offers, a demander prepays and
//! contracts both, receipts are exchanged and settled, one provider fails
//! audits and is penalised — and the books balance after every step.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::{Value, json};
use sublet_market::client::{Client, ClientTls, Reply};
use sublet_market::identity::{Role, Signer};
use sublet_market::rail::{ManualRail, PaymentRail};
use sublet_market::receipts::UsageReceipt;
use sublet_market::{Market, Policy, api};

#[path = "../../e2e/src/postgres.rs"]
mod pg;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const GIB: u64 = 1 << 30;
const CREDIT: i64 = 1_000_000;
const VETTING: i64 = 7 * 24 * 3600;

struct World {
    client: Client,
    /// Added to the system clock by both the market and the client.
    offset: Arc<AtomicI64>,
    alpha: Signer,
    bravo: Signer,
    dee: Signer,
    /// An arbiter.
    judge: Signer,
}

fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn start(
    rail: bool,
    arbiters: Vec<String>,
) -> Result<(Client, Arc<AtomicI64>), Box<dyn std::error::Error>> {
    start_on(None, rail, arbiters).await
}

/// A market on PostgreSQL at `pg`, or on an in-memory SQLite database.
async fn start_on(
    pg: Option<&str>,
    rail: bool,
    arbiters: Vec<String>,
) -> Result<(Client, Arc<AtomicI64>), Box<dyn std::error::Error>> {
    let offset = Arc::new(AtomicI64::new(0));
    let clock = {
        let offset = offset.clone();
        move || system_now() + offset.load(Ordering::SeqCst)
    };
    let policy = Policy {
        platform_fee_bps: 100,
        held_back_bps: 2_500,
        vetting_period_secs: VETTING,
        signature_window_secs: 300,
        arbiter_keys: arbiters,
        ..Policy::default()
    };
    let rail: Option<Arc<dyn PaymentRail>> = rail.then(|| Arc::new(ManualRail) as _);
    let market = match pg {
        Some(url) => Market::open_postgres(url, policy, rail)?,
        None => Market::in_memory(policy, rail)?,
    }
    .with_clock(clock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, api::router(Arc::new(market))).await });
    Ok((
        Client::with_tls(&format!("http://{addr}"), &ClientTls::insecure_http())?.with_clock(clock),
        offset,
    ))
}

async fn world() -> Result<World, Box<dyn std::error::Error>> {
    world_on(None).await
}

async fn world_on(pg: Option<&str>) -> Result<World, Box<dyn std::error::Error>> {
    let (judge, _) = Signer::generate()?;
    let (client, offset) = start_on(pg, true, vec![judge.public_key_hex()]).await?;
    let (alpha, _) = Signer::generate()?;
    let (bravo, _) = Signer::generate()?;
    let (dee, _) = Signer::generate()?;
    client.register(&alpha, Role::Provider, "alpha").await?;
    client.register(&bravo, Role::Provider, "bravo").await?;
    client.register(&dee, Role::Demander, "dee").await?;
    client.register(&judge, Role::Arbiter, "judge").await?;
    Ok(World {
        judge,
        client,
        offset,
        alpha,
        bravo,
        dee,
    })
}

impl World {
    async fn call(
        &self,
        who: &Signer,
        method: &str,
        path: &str,
        body: Value,
    ) -> Result<Reply, Box<dyn std::error::Error>> {
        Ok(self.client.json(Some(who), method, path, &body).await?)
    }

    async fn ok(
        &self,
        who: &Signer,
        method: &str,
        path: &str,
        body: Value,
    ) -> Result<Value, Box<dyn std::error::Error>> {
        Ok(self.call(who, method, path, body).await?.ok()?)
    }

    async fn available(&self, who: &Signer) -> Result<i64, Box<dyn std::error::Error>> {
        let b = self
            .ok(
                who,
                "GET",
                &format!("/v1/parties/{}/balances", who.party_id()),
                Value::Null,
            )
            .await?;
        Ok(b["available"].as_i64().ok_or("no available balance")?)
    }

    async fn held_back(&self, who: &Signer) -> Result<i64, Box<dyn std::error::Error>> {
        let b = self
            .ok(
                who,
                "GET",
                &format!("/v1/parties/{}/balances", who.party_id()),
                Value::Null,
            )
            .await?;
        Ok(b["held_back"].as_i64().ok_or("no held_back balance")?)
    }

    /// The market's totals balance, and the parties' own balances plus the
    /// platform's share account for every deposited credit.
    async fn assert_books(&self, expected_deposits: i64) -> TestResult {
        let ledger = self
            .client
            .json(None, "GET", "/v1/ledger", &Value::Null)
            .await?
            .ok()?;
        assert_eq!(ledger["balanced"], json!(true), "{ledger}");
        assert_eq!(
            ledger["net_deposits"].as_i64(),
            Some(expected_deposits),
            "{ledger}"
        );
        let mut sum = ledger["platform"].as_i64().ok_or("platform")?;
        for who in [&self.alpha, &self.bravo, &self.dee] {
            let b = self
                .ok(
                    who,
                    "GET",
                    &format!("/v1/parties/{}/balances", who.party_id()),
                    Value::Null,
                )
                .await?;
            sum += b["available"].as_i64().ok_or("available")?
                + b["held_back"].as_i64().ok_or("held")?;
            for e in b["escrow"].as_array().ok_or("escrow")? {
                sum += e["amount"].as_i64().ok_or("escrow amount")?;
            }
        }
        assert_eq!(
            sum, expected_deposits,
            "party balances don't add up to deposits: {ledger}"
        );
        Ok(())
    }
}

/// A rating's score recomputed from its inputs: each score times its weight, over 100.
fn weighted(r: &Value) -> u64 {
    r["inputs"]
        .as_array()
        .map(|inputs| {
            inputs
                .iter()
                .map(|i| {
                    i["score"].as_u64().unwrap_or(0) * i["weight_percent"].as_u64().unwrap_or(0)
                })
                .sum::<u64>()
                / 100
        })
        .unwrap_or(0)
}

fn receipt(start: i64, gib_hours: u64, egress_bytes: u64, passed: u32, failed: u32) -> Value {
    json!({
        "period_start": start, "period_end": start + 3600, "gib_hours": gib_hours,
        "egress_bytes": egress_bytes, "audits_passed": passed, "audits_failed": failed,
    })
}

#[tokio::test]
async fn two_providers_contracted_settled_and_one_penalised() -> TestResult {
    two_providers_contracted_settled_and_one_penalised_on(None).await
}

#[tokio::test]
async fn two_providers_contracted_settled_and_one_penalised_on_postgres() -> TestResult {
    match pg::database() {
        Some(url) => two_providers_contracted_settled_and_one_penalised_on(Some(&url)).await,
        None => Ok(()),
    }
}

async fn two_providers_contracted_settled_and_one_penalised_on(pg: Option<&str>) -> TestResult {
    let w = world_on(pg).await?;
    w.assert_books(0).await?;

    // Two providers publish offers.
    let offer = |price: i64, region: &str| {
        json!({
            "capacity_bytes": 100 * GIB, "price_per_gib_month": price,
            "egress_price_per_gib": CREDIT, "region": region, "min_term_days": 30,
            "promised_uptime_bps": 9950,
        })
    };
    let offer_a = w
        .ok(&w.alpha, "POST", "/v1/offers", offer(7_300_000, "eu-west"))
        .await?;
    let offer_b = w
        .ok(&w.bravo, "POST", "/v1/offers", offer(7_300_000, "us-east"))
        .await?;
    assert_eq!(offer_a["free_bytes"].as_u64(), Some(100 * GIB));
    // A demander can't publish offers.
    let r = w
        .call(&w.dee, "POST", "/v1/offers", offer(1, "eu-west"))
        .await?;
    assert_eq!((r.status, r.code()), (403, "forbidden"));

    // Search filters: region, price, free space.
    let found = w
        .client
        .json(
            None,
            "GET",
            "/v1/offers?region=eu-west&max_price_per_gib_month=8000000",
            &Value::Null,
        )
        .await?
        .ok()?;
    let ids: Vec<&str> = found
        .as_array()
        .ok_or("array")?
        .iter()
        .filter_map(|o| o["id"].as_str())
        .collect();
    assert_eq!(ids, vec![offer_a["id"].as_str().ok_or("id")?]);
    let found = w
        .client
        .json(
            None,
            "GET",
            "/v1/offers?max_price_per_gib_month=7000000",
            &Value::Null,
        )
        .await?
        .ok()?;
    assert_eq!(found, json!([]));
    let found = w
        .client
        .json(
            None,
            "GET",
            &format!("/v1/offers?min_free_bytes={}", 101 * GIB),
            &Value::Null,
        )
        .await?
        .ok()?;
    assert_eq!(found, json!([]));
    let r = w
        .client
        .json(
            None,
            "GET",
            "/v1/offers?max_price_per_gib_month=cheap",
            &Value::Null,
        )
        .await?;
    assert_eq!((r.status, r.code()), (400, "bad_request"));

    // The demander deposits (manual rail) and contracts both providers.
    let dep = w
        .ok(
            &w.dee,
            "POST",
            "/v1/deposits",
            json!({"op_id": "dep-1", "amount": 100 * CREDIT, "reference": "test"}),
        )
        .await?;
    assert_eq!(dep["applied"], "new");
    let again = w
        .ok(
            &w.dee,
            "POST",
            "/v1/deposits",
            json!({"op_id": "dep-1", "amount": 100 * CREDIT, "reference": "test"}),
        )
        .await?;
    assert_eq!(again["applied"], "replayed");
    w.assert_books(100 * CREDIT).await?;

    let mut contracts = Vec::new();
    for (offer, provider) in [(&offer_a, &w.alpha), (&offer_b, &w.bravo)] {
        let body = json!({"offer_id": offer["id"], "reserved_bytes": 10 * GIB, "term_days": 30});
        let short = json!({"offer_id": offer["id"], "reserved_bytes": 10 * GIB, "term_days": 1});
        let r = w.call(&w.dee, "POST", "/v1/contracts", short).await?;
        assert_eq!(r.status, 400, "shorter than min_term_days: {:?}", r.body);
        let c = w.ok(&w.dee, "POST", "/v1/contracts", body).await?;
        assert_eq!(c["state"], "proposed");
        let id = c["id"].as_str().ok_or("contract id")?.to_owned();
        // Nobody but the contract's provider may accept it.
        let other = if std::ptr::eq(provider, &w.alpha) {
            &w.bravo
        } else {
            &w.alpha
        };
        let r = w
            .call(
                other,
                "POST",
                &format!("/v1/contracts/{id}/accept"),
                json!({}),
            )
            .await?;
        assert_eq!((r.status, r.code()), (403, "forbidden"), "{:?}", r.body);
        let r = w
            .call(
                &w.dee,
                "POST",
                &format!("/v1/contracts/{id}/accept"),
                json!({}),
            )
            .await?;
        assert_eq!(r.status, 403);
        let c = w
            .ok(
                provider,
                "POST",
                &format!("/v1/contracts/{id}/accept"),
                json!({}),
            )
            .await?;
        assert_eq!(c["state"], "active");
        contracts.push((id, c["accepted_at"].as_i64().ok_or("accepted_at")?));
    }
    let offer_a_now = w
        .client
        .json(
            None,
            "GET",
            &format!("/v1/offers/{}", offer_a["id"].as_str().ok_or("id")?),
            &Value::Null,
        )
        .await?
        .ok()?;
    assert_eq!(offer_a_now["free_bytes"].as_u64(), Some(90 * GIB));
    let (ct_a, start_a) = contracts[0].clone();
    let (ct_b, start_b) = contracts[1].clone();

    // Prepay: more than the balance is refused and moves nothing.
    let r = w
        .call(
            &w.dee,
            "POST",
            &format!("/v1/contracts/{ct_a}/prepay"),
            json!({"op_id": "pre-x", "amount": 101 * CREDIT}),
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (409, "insufficient_funds"),
        "{:?}",
        r.body
    );
    let r = w
        .call(
            &w.alpha,
            "POST",
            &format!("/v1/contracts/{ct_a}/prepay"),
            json!({"op_id": "pre-y", "amount": CREDIT}),
        )
        .await?;
    assert_eq!(r.status, 403, "only the demander prepays");
    for (ct, op) in [(&ct_a, "pre-a"), (&ct_b, "pre-b")] {
        w.ok(
            &w.dee,
            "POST",
            &format!("/v1/contracts/{ct}/prepay"),
            json!({"op_id": op, "amount": 5 * CREDIT}),
        )
        .await?;
    }
    assert_eq!(w.available(&w.dee).await?, 90 * CREDIT);
    w.assert_books(100 * CREDIT).await?;

    // Period 1: 10 GiB for an hour at 7.3 credits/GiB-month is 0.1 credit, plus
    // 1 GiB egress at 1 credit/GiB: 1.1 credits gross.
    let gross = 1_100_000;
    // Alpha passes every audit.
    // Through the typed client, as gateways and providers submit them.
    let usage_a = UsageReceipt {
        period_start: start_a,
        period_end: start_a + 3600,
        gib_hours: 10,
        egress_bytes: GIB,
        audits_passed: 10,
        audits_failed: 0,
        shards_failed: 0,
    };
    let r = w.client.submit_receipt(&w.alpha, &ct_a, &usage_a).await?;
    assert_eq!(r["status"], "awaiting_demander");
    let r = w.client.submit_receipt(&w.dee, &ct_a, &usage_a).await?;
    assert_eq!(r["status"], "settled", "{r}");
    // 1 % fee, then 25 % of the rest held back while alpha is new.
    assert_eq!(
        r["settlement"]["payout"],
        json!({"gross": gross, "penalty": 0, "fee": 11_000, "held_back": 272_250, "to_provider": 816_750})
    );
    assert_eq!(w.available(&w.alpha).await?, 816_750);
    assert_eq!(w.held_back(&w.alpha).await?, 272_250);
    w.assert_books(100 * CREDIT).await?;

    // Bravo fails 3 of 10 audits: both sides report it and bravo loses 30 % of the period.
    w.ok(
        &w.bravo,
        "POST",
        &format!("/v1/contracts/{ct_b}/receipts"),
        receipt(start_b, 10, GIB, 7, 3),
    )
    .await?;
    let r = w
        .ok(
            &w.dee,
            "POST",
            &format!("/v1/contracts/{ct_b}/receipts"),
            receipt(start_b, 10, GIB, 7, 3),
        )
        .await?;
    assert_eq!(r["status"], "settled", "{r}");
    assert_eq!(
        r["settlement"]["payout"],
        json!({"gross": gross, "penalty": 330_000, "fee": 7_700, "held_back": 190_575, "to_provider": 571_725})
    );
    assert_eq!(w.available(&w.bravo).await?, 571_725);
    assert_eq!(
        w.available(&w.dee).await?,
        90 * CREDIT + 330_000,
        "the penalty goes back to the demander"
    );
    w.assert_books(100 * CREDIT).await?;

    // Settling a settled period again pays nothing.
    let before = w.available(&w.alpha).await?;
    let r = w
        .ok(
            &w.alpha,
            "POST",
            &format!("/v1/contracts/{ct_a}/periods/{start_a}/settle"),
            json!({}),
        )
        .await?;
    assert_eq!(r["status"], "settled");
    assert_eq!(w.available(&w.alpha).await?, before);
    // ... nor does submitting the same receipt again; a different one for a settled period is refused.
    w.ok(
        &w.alpha,
        "POST",
        &format!("/v1/contracts/{ct_a}/receipts"),
        receipt(start_a, 10, GIB, 10, 0),
    )
    .await?;
    let r = w
        .call(
            &w.alpha,
            "POST",
            &format!("/v1/contracts/{ct_a}/receipts"),
            receipt(start_a, 10, 2 * GIB, 10, 0),
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (409, "already_settled"),
        "{:?}",
        r.body
    );
    assert_eq!(w.available(&w.alpha).await?, before);

    // Period 2 of alpha: alpha claims more storage than the gateway measured.
    let p2 = start_a + 3600;
    w.ok(
        &w.alpha,
        "POST",
        &format!("/v1/contracts/{ct_a}/receipts"),
        receipt(p2, 10, 0, 5, 0),
    )
    .await?;
    let r = w
        .ok(
            &w.dee,
            "POST",
            &format!("/v1/contracts/{ct_a}/receipts"),
            receipt(p2, 4, 0, 5, 0),
        )
        .await?;
    assert_eq!(r["status"], "mismatch");
    assert_eq!(r["mismatched_fields"], json!(["gib_hours"]));
    let periods = w
        .ok(
            &w.dee,
            "GET",
            &format!("/v1/contracts/{ct_a}/periods"),
            Value::Null,
        )
        .await?;
    let statuses: Vec<&str> = periods
        .as_array()
        .ok_or("periods")?
        .iter()
        .filter_map(|p| p["status"].as_str())
        .collect();
    assert_eq!(statuses, vec!["settled", "mismatch"]);
    assert_eq!(
        w.available(&w.alpha).await?,
        before,
        "a mismatched period pays nothing"
    );
    // A claim beyond the reserved space is refused outright.
    let r = w
        .call(
            &w.alpha,
            "POST",
            &format!("/v1/contracts/{ct_a}/receipts"),
            receipt(p2, 11, 0, 5, 0),
        )
        .await?;
    assert_eq!(r.status, 400, "{:?}", r.body);
    // Nor can a period run past the contract's 30-day term.
    let r = w
        .call(
            &w.alpha,
            "POST",
            &format!("/v1/contracts/{ct_a}/receipts"),
            receipt(start_a + 30 * 24 * 3600, 1, 0, 0, 0),
        )
        .await?;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = w
        .call(
            &w.alpha,
            "POST",
            &format!("/v1/contracts/{ct_a}/periods/yesterday/settle"),
            json!({}),
        )
        .await?;
    assert_eq!((r.status, r.code()), (400, "bad_request"), "{:?}", r.body);
    // Overlapping periods can't bill the same hours twice.
    let r = w
        .call(
            &w.alpha,
            "POST",
            &format!("/v1/contracts/{ct_a}/receipts"),
            receipt(p2 - 1800, 4, 0, 5, 0),
        )
        .await?;
    assert_eq!((r.status, r.code()), (409, "conflict"), "{:?}", r.body);
    // Alpha corrects its receipt: 4 GiB-hours is 40 000 micro-credits.
    let r = w
        .ok(
            &w.alpha,
            "POST",
            &format!("/v1/contracts/{ct_a}/receipts"),
            receipt(p2, 4, 0, 5, 0),
        )
        .await?;
    assert_eq!(r["status"], "settled", "{r}");
    assert_eq!(r["settlement"]["payout"]["gross"], 40_000);
    w.assert_books(100 * CREDIT).await?;

    // Held-back credits stay until vetting ends.
    let r = w
        .call(
            &w.alpha,
            "POST",
            "/v1/held-back/release",
            json!({"op_id": "rel-a"}),
        )
        .await?;
    assert_eq!((r.status, r.code()), (409, "conflict"), "{:?}", r.body);
    w.offset.store(VETTING + 60, Ordering::SeqCst);
    let held = w.held_back(&w.alpha).await?;
    let r = w
        .ok(
            &w.alpha,
            "POST",
            "/v1/held-back/release",
            json!({"op_id": "rel-a"}),
        )
        .await?;
    assert_eq!(r["amount"].as_i64(), Some(held));
    assert_eq!(r["balances"]["held_back"], 0);
    let r = w
        .ok(
            &w.alpha,
            "POST",
            "/v1/held-back/release",
            json!({"op_id": "rel-a"}),
        )
        .await?;
    assert_eq!(r["applied"], "replayed");
    w.assert_books(100 * CREDIT).await?;

    // The demander ends bravo's contract early: the unused prepayment comes back.
    let dee_before = w.available(&w.dee).await?;
    let r = w
        .ok(
            &w.dee,
            "POST",
            &format!("/v1/contracts/{ct_b}/terminate"),
            json!({}),
        )
        .await?;
    assert_eq!(r["refunded"].as_i64(), Some(5 * CREDIT - gross));
    assert_eq!(r["contract"]["state"], "terminated");
    assert_eq!(w.available(&w.dee).await?, dee_before + 5 * CREDIT - gross);
    let r = w
        .call(
            &w.dee,
            "POST",
            &format!("/v1/contracts/{ct_b}/prepay"),
            json!({"op_id": "pre-late", "amount": CREDIT}),
        )
        .await?;
    assert_eq!(r.status, 409, "no prepayment into a terminated contract");
    w.assert_books(100 * CREDIT).await?;

    // Alpha withdraws its earnings.
    let earned = w.available(&w.alpha).await?;
    w.ok(
        &w.alpha,
        "POST",
        "/v1/withdrawals",
        json!({"op_id": "wd-a", "amount": earned}),
    )
    .await?;
    assert_eq!(w.available(&w.alpha).await?, 0);
    w.assert_books(100 * CREDIT - earned).await?;
    let metrics = w.client.send(None, "GET", "/metrics", b"").await?.text;
    for line in [
        "sublet_market_ledger_balanced 1",
        "sublet_market_settled_periods 3",
        "sublet_market_contracts{state=\"terminated\"} 1",
        "sublet_market_parties{role=\"provider\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "/metrics lacks {line}:\n{metrics}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn forged_replayed_and_stale_requests_are_refused() -> TestResult {
    let w = world().await?;
    let path = "/v1/deposits";
    let body = br#"{"op_id":"d1","amount":1000000}"#;
    let signed = w.dee.sign_request("POST", path, body, system_now())?;
    let r = w
        .client
        .send_with_headers("POST", path, body, &signed)
        .await?;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The same request again: nonce already spent.
    let r = w
        .client
        .send_with_headers("POST", path, body, &signed)
        .await?;
    assert_eq!((r.status, r.code()), (401, "replayed_request"));
    // The same signature over another body.
    let signed = w.dee.sign_request("POST", path, body, system_now())?;
    let r = w
        .client
        .send_with_headers("POST", path, br#"{"op_id":"d2","amount":9000000}"#, &signed)
        .await?;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    // Bravo signing as dee.
    let mut forged = w.bravo.sign_request("POST", path, body, system_now())?;
    forged[0].1 = w.dee.party_id();
    let r = w
        .client
        .send_with_headers("POST", path, body, &forged)
        .await?;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    // Signed ten minutes ago.
    let stale = w.dee.sign_request("POST", path, body, system_now() - 600)?;
    let r = w
        .client
        .send_with_headers("POST", path, body, &stale)
        .await?;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    // Unsigned.
    let r = w.client.send(None, "POST", path, body).await?;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    // Reading someone else's balances.
    let r = w
        .call(
            &w.bravo,
            "GET",
            &format!("/v1/parties/{}/balances", w.dee.party_id()),
            Value::Null,
        )
        .await?;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    // Only the first deposit went through.
    assert_eq!(w.available(&w.dee).await?, CREDIT);
    w.assert_books(CREDIT).await?;
    Ok(())
}

#[tokio::test]
async fn deposits_need_a_payment_rail() -> TestResult {
    let (client, _) = start(false, Vec::new()).await?;
    let (dee, _) = Signer::generate()?;
    client.register(&dee, Role::Demander, "dee").await?;
    let r = client
        .json(
            Some(&dee),
            "POST",
            "/v1/deposits",
            &json!({"op_id": "d", "amount": 5}),
        )
        .await?;
    assert_eq!((r.status, r.code()), (501, "no_payment_rail"));
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_json_errors_naming_the_problem() -> TestResult {
    let w = world().await?;
    let r = w
        .call(&w.alpha, "POST", "/v1/offers", json!({"capacity_bytes": 1}))
        .await?;
    assert_eq!(r.status, 400);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("missing field"),
        "{:?}",
        r.body
    );
    let r = w
        .call(
            &w.alpha,
            "POST",
            "/v1/offers",
            json!({
                "capacity_bytes": GIB, "price_per_gib_month": 1, "egress_price_per_gib": 1,
                "region": "EU West", "min_term_days": 1, "promised_uptime_bps": 9000,
            }),
        )
        .await?;
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("region"),
        "{:?}",
        r.body
    );
    let r = w
        .client
        .json(None, "GET", "/v1/nowhere", &Value::Null)
        .await?;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = w
        .call(&w.dee, "GET", "/v1/contracts/ct_missing", Value::Null)
        .await?;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    Ok(())
}

#[tokio::test]
async fn offers_carry_where_the_provider_listens() -> TestResult {
    let w = world().await?;
    let offer = |endpoint: &str| {
        json!({
            "capacity_bytes": GIB, "price_per_gib_month": 1, "egress_price_per_gib": 1,
            "region": "eu-west", "min_term_days": 0, "promised_uptime_bps": 9000,
            "endpoint": endpoint,
        })
    };
    let published = w
        .ok(
            &w.alpha,
            "POST",
            "/v1/offers",
            offer("https://alpha.example:7480"),
        )
        .await?;
    let found = w
        .client
        .json(None, "GET", "/v1/offers?region=eu-west", &Value::Null)
        .await?
        .ok()?;
    assert_eq!(found[0]["id"], published["id"]);
    assert_eq!(found[0]["endpoint"], "https://alpha.example:7480");
    for bad in [
        "alpha.example:7480",
        "https://alpha.example",
        "https://a b:1",
    ] {
        let r = w.call(&w.alpha, "POST", "/v1/offers", offer(bad)).await?;
        assert_eq!(
            (r.status, r.code()),
            (400, "bad_request"),
            "{bad}: {:?}",
            r.body
        );
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("endpoint must be https://host:port"),
            "{:?}",
            r.body
        );
    }
    // An offer without an endpoint is still accepted (a demander learns it another way).
    let bare = w.ok(&w.bravo, "POST", "/v1/offers", offer("")).await?;
    assert_eq!(bare["endpoint"], "");
    Ok(())
}

/// Issue 27: a provider that serves bytes failing their hash (or nothing where it
/// acknowledged a shard) does not count that on its own receipt; the demander's gateway
/// does, and the market shows it in the period and the provider's rating, without holding
/// the period up (only the demander can see it).
#[tokio::test]
async fn shards_a_demander_found_bad_show_in_its_receipt_and_the_providers_rating() -> TestResult {
    let w = world().await?;
    let offer = w
        .ok(
            &w.alpha,
            "POST",
            "/v1/offers",
            json!({
                "capacity_bytes": 100 * GIB, "price_per_gib_month": 7_300_000,
                "egress_price_per_gib": CREDIT, "region": "eu-west", "min_term_days": 0,
                "promised_uptime_bps": 9900,
            }),
        )
        .await?;
    w.ok(
        &w.dee,
        "POST",
        "/v1/deposits",
        json!({"op_id": "dep", "amount": 10 * CREDIT}),
    )
    .await?;
    let c = w
        .ok(
            &w.dee,
            "POST",
            "/v1/contracts",
            json!({"offer_id": offer["id"], "reserved_bytes": 10 * GIB, "term_days": 30}),
        )
        .await?;
    let ct = c["id"].as_str().ok_or("id")?.to_owned();
    let c = w
        .ok(
            &w.alpha,
            "POST",
            &format!("/v1/contracts/{ct}/accept"),
            json!({}),
        )
        .await?;
    let start = c["accepted_at"].as_i64().ok_or("accepted_at")?;
    w.ok(
        &w.dee,
        "POST",
        &format!("/v1/contracts/{ct}/prepay"),
        json!({"op_id": "pre", "amount": 5 * CREDIT}),
    )
    .await?;
    // Every audit passed on both sides; the demander's gateway also found 4 shards bad.
    let mut found = receipt(start, 10, 0, 10, 0);
    found["shards_failed"] = json!(4);
    w.ok(
        &w.dee,
        "POST",
        &format!("/v1/contracts/{ct}/receipts"),
        found,
    )
    .await?;
    let period = w
        .ok(
            &w.alpha,
            "POST",
            &format!("/v1/contracts/{ct}/receipts"),
            receipt(start, 10, 0, 10, 0),
        )
        .await?;
    assert_eq!(period["status"], "settled", "{period}");
    assert_eq!(period["demander_receipt"]["shards_failed"], 4, "{period}");
    assert!(
        period["provider_receipt"].get("shards_failed").is_none(),
        "{period}"
    );
    let r = w
        .client
        .json(
            None,
            "GET",
            &format!("/v1/parties/{}/rating", w.alpha.party_id()),
            &Value::Null,
        )
        .await?
        .ok()?;
    assert_eq!(r["inputs"][0]["name"], "audit_pass_rate", "{r}");
    assert_eq!(
        r["inputs"][0]["value"], "10/10 audits passed, 4 shards found bad by demanders",
        "{r}"
    );
    assert_eq!(r["inputs"][0]["score"], 10 * 1000 / 14, "{r}");
    assert_eq!(r["score"], weighted(&r), "{r}");
    Ok(())
}

#[test]
fn a_database_from_before_shard_failures_opens_and_keeps_its_receipts() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("market.db");
    {
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch(
            "CREATE TABLE receipts (contract TEXT NOT NULL, period_start INTEGER NOT NULL,
                period_end INTEGER NOT NULL, role TEXT NOT NULL, gib_hours INTEGER NOT NULL,
                egress_bytes INTEGER NOT NULL, audits_passed INTEGER NOT NULL,
                audits_failed INTEGER NOT NULL, evidence INTEGER NOT NULL,
                submitted_at INTEGER NOT NULL, PRIMARY KEY (contract, period_start, role));
             INSERT INTO receipts VALUES ('ct_old', 0, 3600, 'demander', 1, 0, 2, 0, 1, 5);",
        )?;
    }
    Market::open(&path, Policy::default(), None)?;
    let conn = rusqlite::Connection::open(&path)?;
    let kept: (i64, i64) = conn.query_row(
        "SELECT audits_passed, shards_failed FROM receipts WHERE contract = 'ct_old'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    assert_eq!(kept, (2, 0));
    Ok(())
}

#[test]
fn a_database_from_before_offer_endpoints_opens_and_keeps_its_offers() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("market.db");
    {
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch(
            "CREATE TABLE offers (id TEXT PRIMARY KEY, provider TEXT NOT NULL,
                capacity_bytes INTEGER NOT NULL, price_per_gib_month INTEGER NOT NULL,
                egress_price_per_gib INTEGER NOT NULL, region TEXT NOT NULL,
                min_term_days INTEGER NOT NULL, promised_uptime_bps INTEGER NOT NULL,
                created_at INTEGER NOT NULL, withdrawn INTEGER NOT NULL DEFAULT 0);
             INSERT INTO offers VALUES ('of_old', 'p', 1024, 5, 0, 'eu', 0, 9000, 1, 0);",
        )?;
    }
    let market = Market::open(&path, Policy::default(), None)?;
    let old = market.offer("of_old")?;
    assert_eq!((old.capacity_bytes, old.endpoint.as_str()), (1024, ""));
    Ok(())
}

#[tokio::test]
async fn openapi_document_describes_every_route() -> TestResult {
    let (client, _) = start(false, Vec::new()).await?;
    let metrics = client.send(None, "GET", "/metrics", b"").await?;
    assert_eq!(metrics.status, 200);
    let doc = client
        .json(None, "GET", "/openapi.json", &Value::Null)
        .await?
        .ok()?;
    assert_eq!(
        doc["openapi"].as_str().map(|v| v.starts_with("3.")),
        Some(true)
    );
    let paths = doc["paths"].as_object().ok_or("paths")?;
    for path in [
        "/",
        "/healthz",
        "/openapi.json",
        "/metrics",
        "/v1/challenges",
        "/v1/parties",
        "/v1/parties/{id}",
        "/v1/parties/{id}/balances",
        "/v1/parties/{id}/attestations",
        "/v1/parties/{id}/attestations/{attestation}/revoke",
        "/v1/deposits",
        "/v1/withdrawals",
        "/v1/held-back/release",
        "/v1/ledger",
        "/v1/offers",
        "/v1/offers/{id}",
        "/v1/contracts",
        "/v1/contracts/{id}",
        "/v1/contracts/{id}/accept",
        "/v1/contracts/{id}/reject",
        "/v1/contracts/{id}/prepay",
        "/v1/contracts/{id}/terminate",
        "/v1/contracts/{id}/receipts",
        "/v1/contracts/{id}/periods",
        "/v1/contracts/{id}/periods/{start}/settle",
        "/v1/parties/{id}/rating",
        "/v1/contracts/{id}/disputes",
        "/v1/disputes",
        "/v1/disputes/{id}",
        "/v1/disputes/{id}/decide",
        "/v1/contracts/{id}/observations",
        "/v1/contracts/{id}/feedback",
        "/v1/contracts/{id}/evidence",
        "/v1/treasury",
        "/v1/contracts/{id}/reviews",
        "/v1/parties/{id}/reviews",
        "/v1/tickets",
        "/v1/tickets/{id}",
        "/v1/tickets/{id}/messages",
        "/v1/tickets/{id}/close",
        "/v1/tickets/{id}/escalate",
        "/v1/parties/{id}/contacts",
        "/v1/parties/{id}/contacts/verify",
    ] {
        assert!(paths.contains_key(path), "openapi.json lacks {path}");
    }
    assert_eq!(
        paths.len(),
        43,
        "openapi.json lists routes the server doesn't have"
    );
    Ok(())
}

#[tokio::test]
async fn arbiter_decides_disputes_and_ratings_explain_themselves() -> TestResult {
    arbiter_decides_disputes_and_ratings_explain_themselves_on(None).await
}

#[tokio::test]
async fn arbiter_decides_disputes_and_ratings_explain_themselves_on_postgres() -> TestResult {
    match pg::database() {
        Some(url) => arbiter_decides_disputes_and_ratings_explain_themselves_on(Some(&url)).await,
        None => Ok(()),
    }
}

async fn arbiter_decides_disputes_and_ratings_explain_themselves_on(
    pg: Option<&str>,
) -> TestResult {
    let w = world_on(pg).await?;
    let offer = w
        .ok(
            &w.alpha,
            "POST",
            "/v1/offers",
            json!({
                "capacity_bytes": 100 * GIB, "price_per_gib_month": 7_300_000,
                "egress_price_per_gib": CREDIT, "region": "eu-west", "min_term_days": 0,
                "promised_uptime_bps": 9900,
            }),
        )
        .await?;
    w.ok(
        &w.dee,
        "POST",
        "/v1/deposits",
        json!({"op_id": "dep", "amount": 10 * CREDIT}),
    )
    .await?;
    let c = w
        .ok(
            &w.dee,
            "POST",
            "/v1/contracts",
            json!({"offer_id": offer["id"], "reserved_bytes": 10 * GIB, "term_days": 30}),
        )
        .await?;
    let ct = c["id"].as_str().ok_or("id")?.to_owned();
    let c = w
        .ok(
            &w.alpha,
            "POST",
            &format!("/v1/contracts/{ct}/accept"),
            json!({}),
        )
        .await?;
    let start = c["accepted_at"].as_i64().ok_or("accepted_at")?;
    w.ok(
        &w.dee,
        "POST",
        &format!("/v1/contracts/{ct}/prepay"),
        json!({"op_id": "pre", "amount": 5 * CREDIT}),
    )
    .await?;

    // Before any service, ratings are neutral and say so.
    let r = w
        .client
        .json(
            None,
            "GET",
            &format!("/v1/parties/{}/rating", w.alpha.party_id()),
            &Value::Null,
        )
        .await?
        .ok()?;
    assert_eq!(r["score"], weighted(&r), "{r}");
    assert_eq!(
        (
            r["inputs"][0]["score"].as_u64(),
            r["inputs"][1]["score"].as_u64()
        ),
        (Some(500), Some(500)),
        "{r}"
    );
    assert_eq!(r["trust_level"], "unverified", "{r}");
    assert_eq!(r["inputs"][3]["name"], "attestations", "{r}");
    assert_eq!(r["inputs"][3]["score"], 0, "{r}");
    assert_eq!(r["inputs"][0]["value"], "no audits yet");

    // Alpha fails 2 of 10 audits in a settled period.
    for who in [&w.alpha, &w.dee] {
        w.ok(
            who,
            "POST",
            &format!("/v1/contracts/{ct}/receipts"),
            receipt(start, 10, GIB, 8, 2),
        )
        .await?;
    }
    let r = w
        .client
        .json(
            None,
            "GET",
            &format!("/v1/parties/{}/rating", w.alpha.party_id()),
            &Value::Null,
        )
        .await?
        .ok()?;
    assert_eq!(r["inputs"][0]["value"], "8/10 audits passed", "{r}");
    assert_eq!(r["inputs"][0]["score"], 800, "{r}");
    assert_eq!(r["inputs"][1]["score"], 1000, "{r}");
    assert_eq!(r["score"], weighted(&r), "{r}");
    w.assert_books(10 * CREDIT).await?;

    // The demander disputes the period (lost shards); only the contract's parties may.
    let claim = json!({"period_start": start, "claim": "alpha lost shards of 3 objects; the gateway repaired them"});
    let r = w
        .call(
            &w.bravo,
            "POST",
            &format!("/v1/contracts/{ct}/disputes"),
            claim.clone(),
        )
        .await?;
    assert_eq!(r.status, 403);
    let r = w
        .call(
            &w.dee,
            "POST",
            &format!("/v1/contracts/{ct}/disputes"),
            json!({"period_start": start + 1, "claim": "x"}),
        )
        .await?;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let d = w
        .ok(
            &w.dee,
            "POST",
            &format!("/v1/contracts/{ct}/disputes"),
            claim,
        )
        .await?;
    let dp = d["id"].as_str().ok_or("dispute id")?.to_owned();
    assert_eq!(d["decision"], Value::Null);

    // Only an arbiter decides.
    let decision = json!({"in_favour_of": "demander", "amount": 300_000, "reason": "audit log shows 3 lost objects"});
    let r = w
        .call(
            &w.alpha,
            "POST",
            &format!("/v1/disputes/{dp}/decide"),
            decision.clone(),
        )
        .await?;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    // The arbiter reads the evidence: the contract's periods.
    let periods = w
        .ok(
            &w.judge,
            "GET",
            &format!("/v1/contracts/{ct}/periods"),
            Value::Null,
        )
        .await?;
    assert_eq!(periods[0]["status"], "settled");
    let (dee_before, alpha_before) = (
        w.available(&w.dee).await?,
        w.available(&w.alpha).await? + w.held_back(&w.alpha).await?,
    );
    let d = w
        .ok(
            &w.judge,
            "POST",
            &format!("/v1/disputes/{dp}/decide"),
            decision.clone(),
        )
        .await?;
    assert_eq!(d["decision"]["moved"], 300_000, "{d}");
    assert_eq!(
        d["decision"]["ledger_operations"],
        json!([format!("dispute:{dp}")])
    );
    assert_eq!(w.available(&w.dee).await?, dee_before + 300_000);
    assert_eq!(
        w.available(&w.alpha).await? + w.held_back(&w.alpha).await?,
        alpha_before - 300_000
    );
    w.assert_books(10 * CREDIT).await?;
    // Deciding again: the same decision changes nothing, another is refused.
    w.ok(
        &w.judge,
        "POST",
        &format!("/v1/disputes/{dp}/decide"),
        decision,
    )
    .await?;
    let r = w
        .call(
            &w.judge,
            "POST",
            &format!("/v1/disputes/{dp}/decide"),
            json!({"in_favour_of": "provider", "amount": 0, "reason": "changed my mind"}),
        )
        .await?;
    assert_eq!((r.status, r.code()), (409, "conflict"));
    assert_eq!(w.available(&w.dee).await?, dee_before + 300_000);

    // The lost dispute shows in alpha's rating, with its reason.
    let r = w
        .client
        .json(
            None,
            "GET",
            &format!("/v1/parties/{}/rating", w.alpha.party_id()),
            &Value::Null,
        )
        .await?
        .ok()?;
    assert_eq!(r["score"], weighted(&r), "{r}");
    assert_eq!(r["inputs"][2]["score"], 750, "{r}");
    assert_eq!(r["inputs"][2]["value"], "1 lost");
    let r = w
        .client
        .json(
            None,
            "GET",
            &format!("/v1/parties/{}/rating", w.dee.party_id()),
            &Value::Null,
        )
        .await?
        .ok()?;
    // The demander paid every agreed period and lost no dispute: its credit says so.
    assert_eq!(r["score"], weighted(&r), "{r}");
    assert_eq!(r["inputs"][0]["name"], "payment_record", "{r}");
    assert_eq!(r["inputs"][0]["score"], 1000, "{r}");
    assert_eq!(r["inputs"][2]["value"], "0 lost", "{r}");

    // A dispute the provider wins is paid from the contract's escrow.
    let d = w
        .ok(
            &w.alpha,
            "POST",
            &format!("/v1/contracts/{ct}/disputes"),
            json!({"claim": "extra egress the gateway didn't report"}),
        )
        .await?;
    let dp2 = d["id"].as_str().ok_or("dispute id")?.to_owned();
    let alpha_before = w.available(&w.alpha).await?;
    w.ok(&w.judge, "POST", &format!("/v1/disputes/{dp2}/decide"), json!({"in_favour_of": "provider", "amount": 100_000, "reason": "provider logs are convincing"})).await?;
    assert_eq!(w.available(&w.alpha).await?, alpha_before + 100_000);
    let c = w
        .ok(&w.dee, "GET", &format!("/v1/contracts/{ct}"), Value::Null)
        .await?;
    assert_eq!(c["escrow"].as_i64(), Some(5 * CREDIT - 1_100_000 - 100_000));
    w.assert_books(10 * CREDIT).await?;
    let all = w
        .ok(
            &w.dee,
            "GET",
            &format!("/v1/contracts/{ct}/disputes"),
            Value::Null,
        )
        .await?;
    assert_eq!(all.as_array().map(Vec::len), Some(2));
    let r = w
        .call(&w.bravo, "GET", &format!("/v1/disputes/{dp}"), Value::Null)
        .await?;
    assert_eq!(r.status, 403, "outsiders can't read disputes");
    let r = w
        .client
        .json(
            None,
            "GET",
            &format!("/v1/parties/{}/rating", w.dee.party_id()),
            &Value::Null,
        )
        .await?
        .ok()?;
    // Lost, but paid from the escrow: a dispute lost, no chargeback.
    assert_eq!(r["score"], weighted(&r), "{r}");
    assert_eq!(r["inputs"][2]["value"], "1 lost", "{r}");
    assert_eq!(r["inputs"][2]["score"], 750, "{r}");
    assert_eq!(r["inputs"][3]["value"], "0 charged back", "{r}");
    Ok(())
}

#[tokio::test]
async fn only_configured_keys_register_as_arbiters() -> TestResult {
    let (client, _) = start(false, Vec::new()).await?;
    let (judge, _) = Signer::generate()?;
    let r = client.register(&judge, Role::Arbiter, "judge").await;
    assert!(r.is_err(), "{r:?}");
    Ok(())
}

#[tokio::test]
async fn agreed_period_waits_for_funds_and_settles_on_prepay() -> TestResult {
    agreed_period_waits_for_funds_and_settles_on_prepay_on(None).await
}

#[tokio::test]
async fn agreed_period_waits_for_funds_and_settles_on_prepay_on_postgres() -> TestResult {
    match pg::database() {
        Some(url) => agreed_period_waits_for_funds_and_settles_on_prepay_on(Some(&url)).await,
        None => Ok(()),
    }
}

async fn agreed_period_waits_for_funds_and_settles_on_prepay_on(pg: Option<&str>) -> TestResult {
    let w = world_on(pg).await?;
    let offer = w
        .ok(
            &w.bravo,
            "POST",
            "/v1/offers",
            json!({
                "capacity_bytes": 10 * GIB, "price_per_gib_month": 7_300_000,
                "egress_price_per_gib": 0, "region": "us-east", "min_term_days": 0,
                "promised_uptime_bps": 9000,
            }),
        )
        .await?;
    let offer_id = offer["id"].as_str().ok_or("id")?.to_owned();
    let found = w
        .client
        .json(
            None,
            "GET",
            &format!("/v1/offers?min_free_bytes={}", 10 * GIB),
            &Value::Null,
        )
        .await?
        .ok()?;
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    w.ok(
        &w.dee,
        "POST",
        "/v1/deposits",
        json!({"op_id": "dep", "amount": CREDIT}),
    )
    .await?;

    // A proposal the provider rejects gives back its prepayment and its space.
    let c = w
        .ok(
            &w.dee,
            "POST",
            "/v1/contracts",
            json!({"offer_id": offer_id, "reserved_bytes": 10 * GIB, "term_days": 1}),
        )
        .await?;
    let rejected = c["id"].as_str().ok_or("id")?.to_owned();
    let r = w
        .call(
            &w.dee,
            "POST",
            "/v1/contracts",
            json!({"offer_id": offer_id, "reserved_bytes": GIB, "term_days": 1}),
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (409, "conflict"),
        "the offer is fully reserved: {:?}",
        r.body
    );
    w.ok(
        &w.dee,
        "POST",
        &format!("/v1/contracts/{rejected}/prepay"),
        json!({"op_id": "pre-r", "amount": 400_000}),
    )
    .await?;
    let c = w
        .ok(
            &w.bravo,
            "POST",
            &format!("/v1/contracts/{rejected}/reject"),
            json!({}),
        )
        .await?;
    assert_eq!(c["state"], "rejected");
    assert_eq!(w.available(&w.dee).await?, CREDIT);
    w.assert_books(CREDIT).await?;

    // Agreed receipts with too little escrow: the period waits, then settles on prepay.
    let c = w
        .ok(
            &w.dee,
            "POST",
            "/v1/contracts",
            json!({"offer_id": offer_id, "reserved_bytes": 10 * GIB, "term_days": 1}),
        )
        .await?;
    let ct = c["id"].as_str().ok_or("id")?.to_owned();
    let c = w
        .ok(
            &w.bravo,
            "POST",
            &format!("/v1/contracts/{ct}/accept"),
            json!({}),
        )
        .await?;
    let start = c["accepted_at"].as_i64().ok_or("accepted_at")?;
    w.ok(
        &w.bravo,
        "POST",
        &format!("/v1/contracts/{ct}/receipts"),
        receipt(start, 10, 0, 1, 0),
    )
    .await?;
    let p = w
        .ok(
            &w.dee,
            "POST",
            &format!("/v1/contracts/{ct}/receipts"),
            receipt(start, 10, 0, 1, 0),
        )
        .await?;
    assert_eq!(p["status"], "awaiting_funds", "{p}");
    assert_eq!(p["charge"]["gross"], 100_000);
    w.ok(
        &w.dee,
        "POST",
        &format!("/v1/contracts/{ct}/prepay"),
        json!({"op_id": "pre-1", "amount": 50_000}),
    )
    .await?;
    let periods = w
        .ok(
            &w.bravo,
            "GET",
            &format!("/v1/contracts/{ct}/periods"),
            Value::Null,
        )
        .await?;
    assert_eq!(periods[0]["status"], "awaiting_funds");
    w.ok(
        &w.dee,
        "POST",
        &format!("/v1/contracts/{ct}/prepay"),
        json!({"op_id": "pre-2", "amount": 50_000}),
    )
    .await?;
    let periods = w
        .ok(
            &w.bravo,
            "GET",
            &format!("/v1/contracts/{ct}/periods"),
            Value::Null,
        )
        .await?;
    assert_eq!(periods[0]["status"], "settled", "{periods}");
    assert_eq!(
        w.available(&w.bravo).await? + w.held_back(&w.bravo).await?,
        99_000,
        "gross less the 1 % fee"
    );
    w.assert_books(CREDIT).await?;

    // The provider withdraws its offer: it disappears from search, the contract runs on.
    let r = w
        .call(
            &w.alpha,
            "DELETE",
            &format!("/v1/offers/{offer_id}"),
            Value::Null,
        )
        .await?;
    assert_eq!(r.status, 403, "not alpha's offer");
    let o = w
        .ok(
            &w.bravo,
            "DELETE",
            &format!("/v1/offers/{offer_id}"),
            Value::Null,
        )
        .await?;
    assert_eq!(o["withdrawn"], true);
    let found = w
        .client
        .json(None, "GET", "/v1/offers", &Value::Null)
        .await?
        .ok()?;
    assert_eq!(found, json!([]));
    let c = w
        .ok(&w.dee, "GET", &format!("/v1/contracts/{ct}"), Value::Null)
        .await?;
    assert_eq!(c["state"], "active");
    Ok(())
}

#[tokio::test]
async fn unanswered_proposals_lapse_and_free_the_offer() -> TestResult {
    unanswered_proposals_lapse_and_free_the_offer_on(None).await
}

#[tokio::test]
async fn unanswered_proposals_lapse_and_free_the_offer_on_postgres() -> TestResult {
    match pg::database() {
        Some(url) => unanswered_proposals_lapse_and_free_the_offer_on(Some(&url)).await,
        None => Ok(()),
    }
}

async fn unanswered_proposals_lapse_and_free_the_offer_on(pg: Option<&str>) -> TestResult {
    let w = world_on(pg).await?;
    let offer = w
        .ok(
            &w.alpha,
            "POST",
            "/v1/offers",
            json!({
                "capacity_bytes": 10 * GIB, "price_per_gib_month": 1, "egress_price_per_gib": 0,
                "region": "eu-west", "min_term_days": 0, "promised_uptime_bps": 9000,
            }),
        )
        .await?;
    let offer_id = offer["id"].as_str().ok_or("id")?.to_owned();
    w.ok(
        &w.dee,
        "POST",
        "/v1/deposits",
        json!({"op_id": "dep", "amount": CREDIT}),
    )
    .await?;
    let c = w
        .ok(
            &w.dee,
            "POST",
            "/v1/contracts",
            json!({"offer_id": offer_id, "reserved_bytes": 10 * GIB, "term_days": 1}),
        )
        .await?;
    let ct = c["id"].as_str().ok_or("id")?.to_owned();
    w.ok(
        &w.dee,
        "POST",
        &format!("/v1/contracts/{ct}/prepay"),
        json!({"op_id": "pre", "amount": CREDIT}),
    )
    .await?;
    let o = w
        .client
        .json(None, "GET", &format!("/v1/offers/{offer_id}"), &Value::Null)
        .await?
        .ok()?;
    assert_eq!(o["free_bytes"], 0);

    w.offset.store(8 * 24 * 3600, Ordering::SeqCst);
    let r = w
        .call(
            &w.alpha,
            "POST",
            &format!("/v1/contracts/{ct}/accept"),
            json!({}),
        )
        .await?;
    assert_eq!((r.status, r.code()), (409, "conflict"), "{:?}", r.body);
    let o = w
        .client
        .json(None, "GET", &format!("/v1/offers/{offer_id}"), &Value::Null)
        .await?
        .ok()?;
    assert_eq!(
        o["free_bytes"].as_u64(),
        Some(10 * GIB),
        "the lapsed proposal no longer holds space"
    );
    let c = w
        .ok(&w.dee, "GET", &format!("/v1/contracts/{ct}"), Value::Null)
        .await?;
    assert_eq!(c["state"], "rejected");
    assert_eq!(
        w.available(&w.dee).await?,
        CREDIT,
        "its prepayment came back"
    );
    w.assert_books(CREDIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_prepayments_never_overspend() -> TestResult {
    concurrent_prepayments_never_overspend_on(None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_prepayments_never_overspend_on_postgres() -> TestResult {
    match pg::database() {
        Some(url) => concurrent_prepayments_never_overspend_on(Some(&url)).await,
        None => Ok(()),
    }
}

async fn concurrent_prepayments_never_overspend_on(pg: Option<&str>) -> TestResult {
    let w = Arc::new(world_on(pg).await?);
    let offer = w
        .ok(
            &w.alpha,
            "POST",
            "/v1/offers",
            json!({
                "capacity_bytes": GIB, "price_per_gib_month": 1, "egress_price_per_gib": 0,
                "region": "eu-west", "min_term_days": 0, "promised_uptime_bps": 9000,
            }),
        )
        .await?;
    let c = w
        .ok(
            &w.dee,
            "POST",
            "/v1/contracts",
            json!({"offer_id": offer["id"], "reserved_bytes": GIB, "term_days": 1}),
        )
        .await?;
    let ct = c["id"].as_str().ok_or("id")?.to_owned();
    w.ok(
        &w.dee,
        "POST",
        "/v1/deposits",
        json!({"op_id": "dep", "amount": 10 * CREDIT}),
    )
    .await?;
    // 25 different prepayments of 1 credit race for 10 credits.
    let mut tasks = Vec::new();
    for i in 0..25 {
        let (w, ct) = (w.clone(), ct.clone());
        tasks.push(tokio::spawn(async move {
            w.call(
                &w.dee,
                "POST",
                &format!("/v1/contracts/{ct}/prepay"),
                json!({"op_id": format!("race-{i}"), "amount": CREDIT}),
            )
            .await
            .map(|r| r.status)
            .map_err(|e| e.to_string())
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await?? {
            200 => ok += 1,
            409 => {}
            other => return Err(format!("unexpected status {other}").into()),
        }
    }
    assert_eq!(ok, 10);
    assert_eq!(w.available(&w.dee).await?, 0);
    let c = w
        .ok(&w.dee, "GET", &format!("/v1/contracts/{ct}"), Value::Null)
        .await?;
    assert_eq!(c["escrow"].as_i64(), Some(10 * CREDIT));
    w.assert_books(10 * CREDIT).await?;
    Ok(())
}

/// The web console is served at `/`, and every API path its script calls is a route that
/// answers JSON (with a real party and offer, so each answers 200).
#[tokio::test]
async fn console_calls_only_public_routes_that_exist() -> TestResult {
    let w = world().await?;
    w.ok(
        &w.alpha,
        "POST",
        "/v1/offers",
        json!({"capacity_bytes": 100 * GIB, "price_per_gib_month": 2_000, "egress_price_per_gib": 1_000,
               "region": "eu-home", "min_term_days": 30, "promised_uptime_bps": 9_900}),
    )
    .await?;
    let page = w.client.send(None, "GET", "/", b"").await?;
    assert_eq!(page.status, 200);
    let html = page.text;
    assert!(html.contains("<title>sublet market</title>"), "{html}");
    // Each `api("/v1/...")` or `` api(`/v1/...`) `` call of the script.
    let mut calls = Vec::new();
    for (at, _) in html.match_indices("api(") {
        let rest = &html[at + 4..];
        let quote = rest.chars().next().ok_or("empty call")?;
        if quote != '"' && quote != '`' {
            continue;
        }
        let end = rest[1..].find(quote).ok_or("unterminated path")?;
        calls.push(rest[1..=end].to_string());
    }
    assert!(calls.len() >= 4, "{calls:?}");
    let alpha = w.alpha.party_id();
    for call in &calls {
        let path = call
            .replace("${encodeURIComponent(party)}", &alpha)
            .replace("${encodeURIComponent(id)}", &alpha);
        assert!(!path.contains('$'), "a call the test does not know: {call}");
        let reply = w.client.send(None, "GET", &path, b"").await?;
        assert_eq!(
            reply.status, 200,
            "GET {path} (from {call}): {}",
            reply.text
        );
        assert!(!reply.body.is_null(), "GET {path} answered no JSON");
    }
    // The offers search with the console's query parameter names.
    let reply = w
        .client
        .send(
            None,
            "GET",
            "/v1/offers?region=eu-home&max_price_per_gib_month=2000&min_free_bytes=1",
            b"",
        )
        .await?;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        reply.text
    );
    Ok(())
}

#[tokio::test]
async fn uptime_latency_and_feedback_from_the_demander_enter_the_provider_rating() -> TestResult {
    service_quality_on(None).await
}

#[tokio::test]
async fn uptime_latency_and_feedback_enter_the_rating_on_postgres() -> TestResult {
    match pg::database() {
        Some(url) => service_quality_on(Some(&url)).await,
        None => Ok(()),
    }
}

async fn service_quality_on(pg: Option<&str>) -> TestResult {
    let w = world_on(pg).await?;
    let offer = w
        .ok(
            &w.alpha,
            "POST",
            "/v1/offers",
            json!({
                "capacity_bytes": 100 * GIB, "price_per_gib_month": 7_300_000,
                "egress_price_per_gib": CREDIT, "region": "eu-west", "min_term_days": 0,
                "promised_uptime_bps": 9900,
            }),
        )
        .await?;
    let c = w
        .ok(
            &w.dee,
            "POST",
            "/v1/contracts",
            json!({"offer_id": offer["id"], "reserved_bytes": 10 * GIB, "term_days": 30}),
        )
        .await?;
    let ct = c["id"].as_str().ok_or("id")?.to_owned();
    // Nothing to report on before the provider accepts.
    let early = w
        .call(
            &w.dee,
            "POST",
            &format!("/v1/contracts/{ct}/feedback"),
            json!({"stars": 5}),
        )
        .await?;
    assert_eq!(early.status, 409, "{}", early.text);
    let c = w
        .ok(
            &w.alpha,
            "POST",
            &format!("/v1/contracts/{ct}/accept"),
            json!({}),
        )
        .await?;
    let start = c["accepted_at"].as_i64().ok_or("accepted_at")?;
    let party = w_party(&offer);
    let rating_path = format!("/v1/parties/{party}/rating");
    let input = |r: &Value, name: &str| -> Value {
        r["inputs"]
            .as_array()
            .and_then(|i| i.iter().find(|i| i["name"] == name).cloned())
            .unwrap_or(Value::Null)
    };
    let before: Value = w
        .client
        .json(None, "GET", &rating_path, &Value::Null)
        .await?
        .ok()?;
    assert_eq!(input(&before, "uptime")["score"], 500, "{before}");
    assert_eq!(input(&before, "feedback")["value"], "no feedback yet");

    // The demander's gateway reports what it measured; bad reports are refused by name.
    let path = format!("/v1/contracts/{ct}/observations");
    for (bad, why) in [
        (
            json!({"period_start": start, "probes": 10, "probes_answered": 11, "latency_ms": 5}),
            "probes_answered",
        ),
        (
            json!({"period_start": start, "probes": 0, "probes_answered": 0, "latency_ms": 5}),
            "probes must be",
        ),
        (
            json!({"period_start": start - 10, "probes": 10, "probes_answered": 9, "latency_ms": 5}),
            "before the contract was accepted",
        ),
        (
            json!({"period_start": start, "probes": 10, "probes_answered": 9, "latency_ms": 900_000}),
            "latency_ms",
        ),
    ] {
        let r = w.call(&w.dee, "POST", &path, bad).await?;
        assert_eq!(r.status, 400, "{}", r.text);
        assert!(r.text.contains(why), "{why}: {}", r.text);
    }
    let r = w
        .call(
            &w.alpha,
            "POST",
            &path,
            json!({"period_start": start, "probes": 10, "probes_answered": 10, "latency_ms": 5}),
        )
        .await?;
    assert_eq!(
        r.status, 403,
        "the provider cannot report on itself: {}",
        r.text
    );
    let r = w
        .call(
            &w.dee,
            "POST",
            &path,
            json!({"period_start": start, "probes": 1000, "probes_answered": 990, "latency_ms": 500}),
        )
        .await?;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = w
        .call(
            &w.dee,
            "POST",
            &format!("/v1/contracts/{ct}/feedback"),
            json!({"stars": 2, "comment": "slow on Sundays"}),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = w
        .call(
            &w.dee,
            "POST",
            &format!("/v1/contracts/{ct}/feedback"),
            json!({"stars": 9}),
        )
        .await?;
    assert_eq!(r.status, 400, "{}", r.text);

    let after: Value = w
        .client
        .json(None, "GET", &rating_path, &Value::Null)
        .await?
        .ok()?;
    assert_eq!(input(&after, "uptime")["score"], 990, "{after}");
    assert_eq!(
        input(&after, "uptime")["value"],
        "99.00% of 1000 probes answered"
    );
    assert_eq!(input(&after, "latency")["score"], 500, "{after}");
    assert_eq!(input(&after, "feedback")["score"], 250, "{after}");
    assert_eq!(
        input(&after, "feedback")["value"],
        "2.00 stars from 1 demanders"
    );
    assert_eq!(after["score"], weighted(&after), "{after}");
    // Offer search can ask for a minimum score.
    let score = after["score"].as_u64().ok_or("score")?;
    for (min, found) in [(score, 1), (score + 1, 0)] {
        let offers = w
            .client
            .json(
                None,
                "GET",
                &format!("/v1/offers?min_score={min}"),
                &Value::Null,
            )
            .await?
            .ok()?;
        assert_eq!(
            offers.as_array().map(Vec::len),
            Some(found),
            "min_score={min}: {offers}"
        );
    }
    // The parties can read the feedback; others cannot.
    let fb = w
        .ok(
            &w.alpha,
            "GET",
            &format!("/v1/contracts/{ct}/feedback"),
            Value::Null,
        )
        .await?;
    assert_eq!(fb["comment"], "slow on Sundays");
    let r = w
        .call(
            &w.bravo,
            "GET",
            &format!("/v1/contracts/{ct}/feedback"),
            Value::Null,
        )
        .await?;
    assert_eq!(r.status, 403, "{}", r.text);
    Ok(())
}

fn w_party(offer: &Value) -> String {
    offer["provider"].as_str().unwrap_or_default().to_owned()
}
