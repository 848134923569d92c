//! The marketplace end to end, every party a real process: `sublet market serve`, two
//! `sublet-provider --offer` processes lending space, and a `sublet serve` gateway whose plan
//! rents them through a market pool. The gateway contracts both providers by itself, stores
//! and reads objects on them, and both sides meter and sign usage receipts that the market
//! matches and settles from the escrow the gateway keeps prepaid. Then one provider's disk
//! rots: audits fail on both sides' books, the provider is penalised and its rating drops,
//! the demander opens a dispute and the arbiter decides it. Then support: the demander
//! opens a ticket, the provider and support staff answer, the demander escalates it to a
//! dispute the arbiter decides; both sides review each other, the market verifies the
//! demander's e-mail with a code, and the ratings move as their explained inputs say. At
//! every step the ledger balances: what was deposited is exactly what the accounts hold.
//! Credits enter and leave only on a treasurer's signature (a forged deposit is refused, a
//! replayed one too, and a provider withdraws its earnings). Every party reaches the
//! market over HTTPS with a certificate of a private CA, and a plain-HTTP URL is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use sublet_e2e::cluster::{GatewayProcess, TestObject, test_objects, wait_for};
use sublet_e2e::market::{
    MarketProcess, Offer, keygen, lending_provider, rented_gateway, run, signer_of, sublet,
};
use sublet_e2e::tls::PrivateCa;

/// One credit, in the ledger's micro-credits.
const CREDIT: i64 = 1_000_000;
/// What the demander deposits.
const DEPOSIT: i64 = 1_000 * CREDIT;
/// How long one receipt period lasts: short, so periods end while the test watches.
const PERIOD: &str = "4s";
/// Egress price per GiB: high, so that the few MiB the test reads cost something (storage
/// is priced per GiB-hour, and the test stores far less than a GiB for far less than an
/// hour).
const EGRESS_PRICE: i64 = 200 * CREDIT;
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The gateway's plan: one data and one parity shard on the two rented providers.
const RENTED_1_1: &str = r#"apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: rented-1-1}
spec:
  redundancy: {erasure: {dataShards: 1, parityShards: 1}}
  segmentSize: 256Ki
  placement:
    spreadBy: owner
    maxPerDomain: 1
    pools: [{name: rented, minShards: 2}]
"#;

/// The market, and signed calls to it with `sublet market call`.
struct Market(MarketProcess);

impl std::ops::Deref for Market {
    type Target = MarketProcess;

    fn deref(&self) -> &MarketProcess {
        &self.0
    }
}

impl Market {
    /// `sublet market call --key KEY METHOD PATH [BODY]`, the JSON answer; fails the test
    /// on an error answer.
    fn call(&self, key: &Path, method: &str, path: &str, body: Option<&Value>) -> Value {
        let mut cmd = sublet();
        cmd.args(["market", "call", "--url", &self.url, "--ca-file"])
            .arg(&self.ca_file)
            .arg("--key")
            .arg(key)
            .args([method, path]);
        if let Some(body) = body {
            cmd.arg(body.to_string());
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{method} {path}: {text}\n{}\n--- market log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.daemon.log_tail()
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    }

    /// `sublet market call` that must fail: what it printed.
    fn call_err(&self, key: &Path, method: &str, path: &str, body: &Value) -> String {
        let out = sublet()
            .args(["market", "call", "--url", &self.url, "--ca-file"])
            .arg(&self.ca_file)
            .arg("--key")
            .arg(key)
            .args([method, path, &body.to_string()])
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "{method} {path} was not refused: {said}"
        );
        said
    }

    /// Fails the test unless every credit deposited sits in exactly one account.
    fn assert_books(&self, step: &str) -> Value {
        let ledger = self.get("/v1/ledger");
        assert_eq!(ledger["balanced"], true, "{step}: {ledger}");
        assert_eq!(ledger["net_deposits"], ledger["total"], "{step}: {ledger}");
        ledger
    }

    fn balances(&self, key: &Path, party: &str) -> Value {
        self.call(key, "GET", &format!("/v1/parties/{party}/balances"), None)
    }
}

fn party_of(key: &Path) -> String {
    signer_of(key).party_id()
}

fn periods(market: &Market, key: &Path, contract: &str) -> Vec<Value> {
    market
        .call(
            key,
            "GET",
            &format!("/v1/contracts/{contract}/periods"),
            None,
        )
        .as_array()
        .unwrap()
        .clone()
}

/// The settled periods of `contract` whose charge satisfies `want`.
fn settled(
    market: &Market,
    key: &Path,
    contract: &str,
    want: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    periods(market, key, contract)
        .into_iter()
        .filter(|p| p["status"] == "settled" && want(&p["charge"]))
        .collect()
}

fn flip_bytes_of(files: &[PathBuf]) {
    for path in files {
        let mut bytes = std::fs::read(path).unwrap();
        let at = bytes.len() / 2;
        let end = (at + 4096).min(bytes.len());
        for b in &mut bytes[at..end] {
            *b ^= 0x5a;
        }
        std::fs::write(path, bytes).unwrap();
    }
}

fn shard_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.join("shards"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "shard"))
        .collect();
    out.sort();
    out
}

#[test]
fn providers_rented_through_the_market_are_metered_settled_penalised_and_judged() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();

    // The arbiter's key is named when the market starts.
    let judge_key = root.join("judge.key");
    let judge_public = keygen(&judge_key);
    // The market serves HTTPS with a certificate of a private CA every party is given.
    let ca = PrivateCa::create(&root.join("ca"));
    // Credits enter and leave only on the treasurer's signature.
    let treasurer_key = root.join("treasurer.key");
    let treasurer_public = keygen(&treasurer_key);
    // So is the support staff's.
    let help_key = root.join("help.key");
    let help_public = keygen(&help_key);
    let mailbox = root.join("contact-codes.jsonl");

    let market = Market(MarketProcess::start(
        root,
        &ca,
        PERIOD,
        &[
            "--treasurer-key",
            &treasurer_public,
            "--arbiter-key",
            &judge_public,
            "--support-key",
            &help_public,
            "--contact-delivery-file",
            mailbox.to_str().expect("a UTF-8 temporary directory"),
        ],
    ));
    let (addr, url) = (market.addr, market.url.clone());
    for (key, role, name) in [
        (&judge_key, "arbiter", "judge"),
        (&help_key, "support", "help"),
    ] {
        run(sublet()
            .args(["market", "register", "--url", &url, "--ca-file"])
            .arg(&ca.ca_file)
            .arg("--key")
            .arg(key)
            .args(["--role", role, "--name", name]));
    }
    market.assert_books("market started");

    // A plain-HTTP URL is refused by the client before anything is sent, and a client that
    // does not know the private CA does not trust the market.
    let plain = sublet()
        .args([
            "market",
            "call",
            "--url",
            &format!("http://{addr}"),
            "--key",
        ])
        .arg(&judge_key)
        .args(["GET", "/v1/ledger"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&plain.stderr);
    assert!(
        !plain.status.success() && said.contains("plain-HTTP market url"),
        "{said}"
    );
    let unknown_ca = sublet()
        .args(["market", "call", "--url", &url, "--key"])
        .arg(&judge_key)
        .args(["GET", "/v1/ledger"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&unknown_ca.stderr);
    assert!(
        !unknown_ca.status.success() && said.contains("TLS with the market"),
        "{said}"
    );

    // Two providers publish offers.
    let lending = |name, price| {
        let offer = Offer {
            price_per_gib_month: price,
            egress_price_per_gib: EGRESS_PRICE,
        };
        lending_provider(root, name, &market, offer, &[])
    };
    let (a, b) = (lending("a", 3_000), lending("b", 4_000));
    let (a_dir, b_dir) = (a.dir.clone(), b.dir.clone());
    let (a_key, b_key) = (a.key(), b.key());
    market.wait_for_offers(2);

    // A gateway whose plan rents both through a market pool.
    let mut gateway = rented_gateway(root, &market, 2, RENTED_1_1, "rented-1-1");
    let gateway_dir = root.join("gateway");
    gateway.start();
    // The gateway signs on the market with its node key.
    let dee_key = gateway_dir.join("identity").join("identity.key");
    let dee = party_of(&dee_key);
    let (a_party, b_party) = (party_of(&a_key), party_of(&b_key));

    // It contracted both providers, and they accepted.
    let contracts = market.call(&dee_key, "GET", "/v1/contracts", None);
    let contracts = contracts.as_array().unwrap();
    assert_eq!(contracts.len(), 2, "{contracts:?}\n{}", gateway.log_tail());
    assert!(
        contracts.iter().all(|c| c["state"] == "active"),
        "{contracts:?}"
    );
    let contract_of = |party: &str| {
        contracts
            .iter()
            .find(|c| c["provider"] == party)
            .and_then(|c| c["id"].as_str())
            .unwrap_or_else(|| panic!("no contract with {party}: {contracts:?}"))
            .to_owned()
    };
    let (a_contract, b_contract) = (contract_of(&a_party), contract_of(&b_party));

    // A deposit the demander signs for itself is refused: only the treasurer credits.
    let forged = treasurer_sign(&dee_key, "deposit", &dee, DEPOSIT, "bank-1");
    let refused = market.call_err(
        &dee_key,
        "POST",
        "/v1/deposits",
        &json!({"op_id": "dee-forged", "amount": DEPOSIT, "reference": "bank-1", "authorization": forged}),
    );
    assert!(refused.contains("not a treasurer key"), "{refused}");
    let unsigned = market.call_err(
        &dee_key,
        "POST",
        "/v1/deposits",
        &json!({"op_id": "dee-unsigned", "amount": DEPOSIT, "reference": "bank-1"}),
    );
    assert!(
        unsigned.contains("treasurer's signed authorization"),
        "{unsigned}"
    );
    assert_eq!(market.assert_books("forged deposit")["net_deposits"], 0);

    // The treasurer saw the money arrive and signs; the demander's deposit is credited, once.
    let authorization = treasurer_sign(&treasurer_key, "deposit", &dee, DEPOSIT, "bank-1");
    market.call(
        &dee_key,
        "POST",
        "/v1/deposits",
        Some(&json!({"op_id": "dee-deposit-1", "amount": DEPOSIT, "reference": "bank-1", "authorization": authorization})),
    );
    assert_eq!(market.assert_books("deposit")["net_deposits"], DEPOSIT);
    let replayed = market.call_err(
        &dee_key,
        "POST",
        "/v1/deposits",
        &json!({"op_id": "dee-deposit-2", "amount": DEPOSIT, "reference": "bank-1", "authorization": authorization}),
    );
    assert!(replayed.contains("already used"), "{replayed}");
    assert_eq!(
        market.assert_books("replayed deposit")["net_deposits"],
        DEPOSIT
    );
    let trail = market.call(&dee_key, "GET", "/v1/treasury", None);
    assert_eq!(trail.as_array().map(Vec::len), Some(1), "{trail}");
    assert_eq!(trail[0]["kind"], "deposit", "{trail}");
    assert_eq!(trail[0]["reference"], "bank-1", "{trail}");
    assert_eq!(trail[0]["treasurer"], treasurer_public.as_str(), "{trail}");
    // The gateway keeps a period prepaid in each escrow.
    wait_for("both escrows to be prepaid", SETTLE_TIMEOUT, || {
        let escrow = market.balances(&dee_key, &dee)["escrow"].clone();
        let funded = escrow.as_array().map_or(0, |e| {
            e.iter().filter(|x| x["amount"].as_i64() > Some(0)).count()
        });
        (funded == 2).then_some(()).ok_or(escrow.to_string())
    });
    market.assert_books("prepayment");

    // Objects go onto the rented providers and are read back: that is egress to pay for.
    gateway.create_bucket("photos");
    let objects: Vec<TestObject> = test_objects("photo", 8, 1 << 20);
    for o in &objects {
        gateway.put("photos", o);
    }
    let read_all = |g: &GatewayProcess| {
        for o in &objects {
            g.read_back("photos", o).unwrap_or_else(|e| panic!("{e}"));
        }
    };
    read_all(&gateway);
    assert!(!shard_files(&a_dir).is_empty() && !shard_files(&b_dir).is_empty());

    // Both sides report each period; agreeing receipts are paid from escrow.
    for (party, key, contract) in [
        (&a_party, &a_key, &a_contract),
        (&b_party, &b_key, &b_contract),
    ] {
        let paid = wait_for("a paid period", SETTLE_TIMEOUT, || {
            // GETs read data shards (wherever placement put them); a scrub reads every shard.
            read_all(&gateway);
            gateway.admin_post("/admin/v1/scrub?limit=1000");
            let paid = settled(&market, key, contract, |c| c["gross"].as_i64() > Some(0));
            if paid.is_empty() {
                return Err(format!("{:?}", periods(&market, key, contract)));
            }
            Ok(paid)
        });
        let p = &paid[0];
        assert!(
            p["demander_receipt"]["egress_bytes"].as_u64() > Some(0),
            "{p}"
        );
        let charge = &p["charge"];
        assert_eq!(
            charge["gross"].as_i64().unwrap(),
            charge["penalty"].as_i64().unwrap()
                + charge["fee"].as_i64().unwrap()
                + charge["held_back"].as_i64().unwrap()
                + charge["to_provider"].as_i64().unwrap(),
            "{p}"
        );
        let earned = market.balances(key, party);
        assert!(
            earned["available"].as_i64().unwrap() + earned["held_back"].as_i64().unwrap() > 0,
            "{earned}"
        );
        market.assert_books("settlement");
    }

    // Provider b's disk rots under half its shards. Its own checks catch it when audited,
    // so both receipts count the failed audits, and the period's pay is cut by them.
    let rotten: Vec<PathBuf> = shard_files(&b_dir).into_iter().step_by(2).collect();
    flip_bytes_of(&rotten);
    let penalised = wait_for(
        "a period of b's penalised for failed audits",
        SETTLE_TIMEOUT,
        || {
            let audit = gateway.admin_post("/admin/v1/audit?samples=64");
            for o in &objects {
                // Reads of rotten shards fall back to the other provider and still verify.
                gateway
                    .read_back("photos", o)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            let hit = settled(&market, &b_key, &b_contract, |c| {
                c["penalty"].as_i64() > Some(0)
            });
            hit.into_iter().next().ok_or(format!(
                "audit {audit}; {:?}",
                periods(&market, &b_key, &b_contract)
            ))
        },
    );
    assert!(
        penalised["demander_receipt"]["audits_failed"].as_u64() > Some(0),
        "{penalised}"
    );
    assert_eq!(
        penalised["demander_receipt"]["audits_failed"],
        penalised["provider_receipt"]["audits_failed"],
        "{penalised}"
    );
    market.assert_books("penalty");
    // Failed audits lower b's rating below a's, which passed every one.
    let audit_score = |rating: &Value| {
        rating["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "audit_pass_rate")
            .and_then(|i| i["score"].as_u64())
            .unwrap()
    };
    let after = market.get(&format!("/v1/parties/{b_party}/rating"));
    // a's audits count once a period of a's holding them is settled too.
    let a_rating = wait_for(
        "a settled period of a's with audits",
        SETTLE_TIMEOUT,
        || {
            let rating = market.get(&format!("/v1/parties/{a_party}/rating"));
            if rating.to_string().contains("no audits yet") {
                gateway.admin_post("/admin/v1/audit?samples=8");
                return Err(rating.to_string());
            }
            Ok(rating)
        },
    );
    assert!(audit_score(&after) < 1000, "{after}");
    // The gateway reports its probes with its receipts: uptime enters the rating.
    let uptime = a_rating["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "uptime")
        .cloned()
        .unwrap();
    assert!(
        uptime["value"]
            .as_str()
            .unwrap()
            .contains("probes answered"),
        "{a_rating}"
    );
    assert_eq!(audit_score(&a_rating), 1000, "{a_rating}");
    assert!(
        after["score"].as_u64() < a_rating["score"].as_u64(),
        "{after} vs {a_rating}"
    );

    // The gateway stops, so no more usage is metered: once the last periods both sides
    // reported are settled, balances stand still and the decision's effect is exact.
    gateway.kill();
    std::thread::sleep(Duration::from_secs(10));
    market.assert_books("gateway stopped");

    // The demander disputes the period (its objects lost shards), the arbiter decides for it.
    let period_start = penalised["period_start"].as_i64().unwrap();
    let dispute = market.call(
        &dee_key,
        "POST",
        &format!("/v1/contracts/{b_contract}/disputes"),
        Some(&json!({"period_start": period_start, "claim": "provider b lost shards of our photos; the gateway had to repair them"})),
    );
    let dispute_id = dispute["id"].as_str().unwrap().to_owned();
    market.assert_books("dispute opened");
    let dee_before = market.balances(&dee_key, &dee)["available"]
        .as_i64()
        .unwrap();
    let b_before = market.balances(&b_key, &b_party);
    let b_total = |v: &Value| v["available"].as_i64().unwrap() + v["held_back"].as_i64().unwrap();
    let amount = b_total(&b_before).clamp(1, CREDIT / 100);
    let decided = market.call(
        &judge_key,
        "POST",
        &format!("/v1/disputes/{dispute_id}/decide"),
        Some(&json!({"in_favour_of": "demander", "amount": amount, "reason": "audits and the gateway's repair log show lost shards"})),
    );
    assert_eq!(decided["decision"]["in_favour_of"], "demander", "{decided}");
    let moved = decided["decision"]["moved"].as_i64().unwrap();
    assert!(moved > 0, "{decided}");
    market.assert_books("dispute decided");
    let dee_after = market.balances(&dee_key, &dee)["available"]
        .as_i64()
        .unwrap();
    let b_after = market.balances(&b_key, &b_party);
    assert_eq!(dee_after, dee_before + moved);
    assert_eq!(
        b_total(&b_after),
        b_total(&b_before) - moved,
        "{b_before} → {b_after}"
    );
    let judged = market.get(&format!("/v1/parties/{b_party}/rating"));
    let lost = judged["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "disputes_lost")
        .unwrap()
        .clone();
    assert_eq!(lost["value"], "1 lost", "{judged}");
    // Deciding again changes nothing.
    let again = market.call(
        &judge_key,
        "POST",
        &format!("/v1/disputes/{dispute_id}/decide"),
        Some(&json!({"in_favour_of": "demander", "amount": amount, "reason": "audits and the gateway's repair log show lost shards"})),
    );
    assert_eq!(again["decision"], decided["decision"]);
    market.assert_books("dispute decided again");

    support_reviews_and_identity(
        &market,
        &dee_key,
        &a_key,
        &help_key,
        &judge_key,
        &a_contract,
        &mailbox,
    );

    market.assert_books("before withdrawal");

    // Provider a withdraws what it earned, paid out on the treasurer's signature.
    let earned = market.balances(&a_key, &a_party)["available"]
        .as_i64()
        .unwrap();
    assert!(earned > 0, "provider a earned nothing");
    let payout = treasurer_sign(&treasurer_key, "withdrawal", &a_party, earned, "payout-a-1");
    let without = market.call_err(
        &a_key,
        "POST",
        "/v1/withdrawals",
        &json!({"op_id": "a-withdraw-0", "amount": earned, "reference": "payout-a-1"}),
    );
    assert!(
        without.contains("treasurer's signed authorization"),
        "{without}"
    );
    let withdrawn = market.call(
        &a_key,
        "POST",
        "/v1/withdrawals",
        Some(&json!({"op_id": "a-withdraw-1", "amount": earned, "reference": "payout-a-1", "authorization": payout})),
    );
    assert_eq!(withdrawn["amount"], earned, "{withdrawn}");
    let ledger = market.assert_books("end");
    assert_eq!(ledger["net_deposits"], DEPOSIT - earned);
    let trail = market.call(&a_key, "GET", "/v1/treasury", None);
    assert_eq!(trail[0]["kind"], "withdrawal", "{trail}");
    assert_eq!(trail[0]["amount"], earned, "{trail}");
}

/// `sublet market treasurer-sign` with `key`: the authorization, as JSON.
fn treasurer_sign(key: &Path, kind: &str, party: &str, amount: i64, reference: &str) -> Value {
    let out = run(sublet()
        .args(["market", "treasurer-sign", "--key"])
        .arg(key)
        .args(["--kind", kind, "--party", party])
        .args(["--amount", &amount.to_string(), "--reference", reference]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("treasurer-sign printed {out}: {e}"))
}

/// The named rating input of a rating.
fn rating_input(rating: &Value, name: &str) -> Value {
    rating["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no input {name} in {rating}"))
}

/// A ticket opened by the demander on provider a's contract is answered by a and by
/// support, escalated to a dispute and decided; both sides review each other; the market
/// verifies the demander's e-mail by a code. The books balance after every step.
fn support_reviews_and_identity(
    market: &Market,
    dee_key: &Path,
    a_key: &Path,
    help_key: &Path,
    judge_key: &Path,
    a_contract: &str,
    mailbox: &Path,
) {
    let (dee, a_party) = (party_of(dee_key), party_of(a_key));
    let ticket = market.call(
        dee_key,
        "POST",
        "/v1/tickets",
        Some(&json!({"subject": "slow reads", "message": "reads from you took seconds today", "contract": a_contract})),
    );
    let ticket_id = ticket["id"].as_str().unwrap().to_owned();
    assert_eq!(ticket["state"], "open", "{ticket}");
    assert_eq!(ticket["counterpart"], a_party.as_str(), "{ticket}");
    market.assert_books("ticket opened");
    let answered = market.call(
        a_key,
        "POST",
        &format!("/v1/tickets/{ticket_id}/messages"),
        Some(&json!({"message": "a disk was rebuilding; done now"})),
    );
    assert_eq!(answered["state"], "answered", "{answered}");
    assert!(answered["counterpart_response_at"].is_i64(), "{answered}");
    let a_rating = market.get(&format!("/v1/parties/{a_party}/rating"));
    let responsiveness = rating_input(&a_rating, "responsiveness");
    let value = responsiveness["value"].as_str().unwrap();
    assert!(
        value.contains("tickets answered after") && !value.contains("tickets answered after none"),
        "{responsiveness}"
    );
    // Support staff see every ticket and answer it.
    let queue = market.call(help_key, "GET", "/v1/tickets?state=answered", None);
    assert!(
        queue
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == ticket_id.as_str()),
        "{queue}"
    );
    let helped = market.call(
        help_key,
        "POST",
        &format!("/v1/tickets/{ticket_id}/messages"),
        Some(&json!({"message": "support checked the provider's audits: all passed"})),
    );
    assert_eq!(helped["messages"].as_array().unwrap().len(), 3, "{helped}");

    // The demander escalates; the arbiter reads the thread and decides.
    let escalated = market.call(
        dee_key,
        "POST",
        &format!("/v1/tickets/{ticket_id}/escalate"),
        None,
    );
    assert_eq!(escalated["ticket"]["state"], "escalated", "{escalated}");
    let dispute_id = escalated["dispute"]["id"].as_str().unwrap().to_owned();
    assert!(
        escalated["dispute"]["claim"]
            .as_str()
            .unwrap()
            .contains(&format!("ticket {ticket_id}")),
        "{escalated}"
    );
    market.assert_books("ticket escalated");
    let seen = market.call(judge_key, "GET", &format!("/v1/tickets/{ticket_id}"), None);
    assert_eq!(seen["messages"].as_array().unwrap().len(), 3, "{seen}");
    let decided = market.call(
        judge_key,
        "POST",
        &format!("/v1/disputes/{dispute_id}/decide"),
        Some(&json!({"in_favour_of": "provider", "amount": 0, "reason": "the thread shows a rebuild, no fault"})),
    );
    assert_eq!(decided["decision"]["in_favour_of"], "provider", "{decided}");
    market.assert_books("escalated dispute decided");

    // Both sides review: each rating's reviews input moves by its weight.
    let dee_before = market.get(&format!("/v1/parties/{dee}/rating"));
    assert_eq!(
        rating_input(&dee_before, "reviews")["score"],
        500,
        "{dee_before}"
    );
    let by_dee = market.call(
        dee_key,
        "POST",
        &format!("/v1/contracts/{a_contract}/reviews"),
        Some(&json!({"stars": 4, "text": "solid, one slow day"})),
    );
    assert_eq!(by_dee["side"], "demander", "{by_dee}");
    let by_a = market.call(
        a_key,
        "POST",
        &format!("/v1/contracts/{a_contract}/reviews"),
        Some(&json!({"stars": 5, "text": "prepaid on time"})),
    );
    assert_eq!(by_a["subject"], dee.as_str(), "{by_a}");
    let about_a = market.get(&format!("/v1/parties/{a_party}/reviews"));
    assert_eq!(about_a["count"], 1, "{about_a}");
    assert_eq!(about_a["mean_stars_x100"], 400, "{about_a}");
    let a_after = market.get(&format!("/v1/parties/{a_party}/rating"));
    assert_eq!(
        rating_input(&a_after, "feedback")["score"],
        750,
        "{a_after}"
    );
    let dee_after = market.get(&format!("/v1/parties/{dee}/rating"));
    let reviews = rating_input(&dee_after, "reviews");
    assert_eq!(
        (
            reviews["score"].as_u64(),
            reviews["weight_percent"].as_u64()
        ),
        (Some(1000), Some(15))
    );
    assert_eq!(
        dee_after["score"].as_u64().unwrap(),
        dee_before["score"].as_u64().unwrap() + (1000 - 500) * 15 / 100,
        "{dee_before} → {dee_after}"
    );
    market.assert_books("reviews");

    // The market verifies the demander's address by a code it sends.
    let asked = market.call(
        dee_key,
        "POST",
        &format!("/v1/parties/{dee}/contacts"),
        Some(&json!({"email": "ops@dee.example"})),
    );
    assert_eq!(asked["attempts_left"], 5, "{asked}");
    let sent: Value =
        serde_json::from_str(std::fs::read_to_string(mailbox).unwrap().trim()).unwrap();
    assert_eq!(sent["to"], "ops@dee.example");
    market.call(
        dee_key,
        "POST",
        &format!("/v1/parties/{dee}/contacts/verify"),
        Some(&json!({"email": "ops@dee.example", "code": sent["code"]})),
    );
    assert_eq!(
        market.get(&format!("/v1/parties/{dee}"))["trust_level"],
        "verified"
    );
    let verified = market.get(&format!("/v1/parties/{dee}/rating"));
    assert_eq!(
        rating_input(&verified, "attestations")["score"],
        500,
        "{verified}"
    );
    assert_eq!(
        verified["score"].as_u64().unwrap(),
        dee_after["score"].as_u64().unwrap() + 500 * 10 / 100,
        "{dee_after} → {verified}"
    );
}
