//! Money that cannot be forged and contracts that cannot be rewritten, over the real API:
//! the treasurer rail credits only what a treasurer key signed, once; the evidence of a
//! contract proves to each party what the other signed; and the market serves HTTPS whose
//! certificate is replaced without a restart.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sublet_market::client::{Client, ClientTls};
use sublet_market::identity::{Role, Signer};
use sublet_market::rail::treasurer::{Authorization, Kind};
use sublet_market::rail::{PaymentRail, TreasurerRail};
use sublet_market::{Market, Policy, api};
use sublet_market_api::contracts::{Contract, ContractEvidence};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const CREDIT: i64 = 1_000_000;
const GIB: u64 = 1 << 30;

/// A market on the treasurer rail with `treasurer`'s key (and `judge` as arbiter).
async fn start(treasurer: &Signer, judge: &Signer) -> Result<Client, Box<dyn std::error::Error>> {
    let rail: Arc<dyn PaymentRail> = Arc::new(TreasurerRail::new(&[treasurer.public_key_hex()])?);
    let policy = Policy {
        arbiter_keys: vec![judge.public_key_hex()],
        ..Policy::default()
    };
    let market = Market::in_memory(policy, Some(rail))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, api::router(Arc::new(market))).await });
    Ok(Client::with_tls(
        &format!("http://{addr}"),
        &ClientTls::insecure_http(),
    )?)
}

async fn books(client: &Client) -> Result<Value, Box<dyn std::error::Error>> {
    let ledger = client
        .json(None, "GET", "/v1/ledger", &Value::Null)
        .await?
        .ok()?;
    assert_eq!(ledger["balanced"], true, "{ledger}");
    assert_eq!(ledger["net_deposits"], ledger["total"], "{ledger}");
    Ok(ledger)
}

fn now() -> i64 {
    sublet_market_api::unix_now()
}

#[tokio::test]
async fn only_treasurer_signed_deposits_and_withdrawals_move_credits() -> TestResult {
    let (treasurer, _) = Signer::generate()?;
    let (judge, _) = Signer::generate()?;
    let client = start(&treasurer, &judge).await?;
    let (dee, _) = Signer::generate()?;
    let (eve, _) = Signer::generate()?;
    client.register(&dee, Role::Demander, "dee").await?;
    client.register(&eve, Role::Demander, "eve").await?;
    client.register(&judge, Role::Arbiter, "judge").await?;
    let deposit = |who: &Signer, op: &str, amount: i64, auth: Option<&Authorization>| {
        let body =
            json!({"op_id": op, "amount": amount, "reference": "wire-7", "authorization": auth});
        let signed = who.sign_request("POST", "/v1/deposits", body.to_string().as_bytes(), now());
        let client = client.clone();
        async move {
            client
                .send_with_headers(
                    "POST",
                    "/v1/deposits",
                    body.to_string().as_bytes(),
                    &signed?,
                )
                .await
        }
    };

    // No authorization, or one dee signed itself: nothing is credited.
    let r = deposit(&dee, "d0", 100 * CREDIT, None).await?;
    assert_eq!((r.status, r.code()), (401, "unauthorized"), "{}", r.text);
    let forged = Authorization::sign(
        &dee,
        Kind::Deposit,
        &dee.party_id(),
        100 * CREDIT,
        "wire-7",
        now(),
    )?;
    let r = deposit(&dee, "d1", 100 * CREDIT, Some(&forged)).await?;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.text.contains("not a treasurer key"), "{}", r.text);
    assert_eq!(books(&client).await?["net_deposits"], 0);

    // The treasurer's authorization credits dee, once.
    let auth = Authorization::sign(
        &treasurer,
        Kind::Deposit,
        &dee.party_id(),
        100 * CREDIT,
        "wire-7",
        now(),
    )?;
    // Another party cannot spend it, nor dee for another amount.
    let r = deposit(&eve, "e1", 100 * CREDIT, Some(&auth)).await?;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = deposit(&dee, "d2", 1000 * CREDIT, Some(&auth)).await?;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = deposit(&dee, "d3", 100 * CREDIT, Some(&auth)).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["balances"]["available"], 100 * CREDIT);
    // The same operation again changes nothing; another operation with it is refused.
    let r = deposit(&dee, "d3", 100 * CREDIT, Some(&auth)).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["balances"]["available"], 100 * CREDIT);
    let r = deposit(&dee, "d4", 100 * CREDIT, Some(&auth)).await?;
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.text);
    assert!(
        r.text.contains("already used by operation d3"),
        "{}",
        r.text
    );
    assert_eq!(books(&client).await?["net_deposits"], 100 * CREDIT);

    // Withdrawals too: dee's word alone moves nothing, the treasurer's pays out.
    let withdraw = |op: &str, amount: i64, auth: Option<&Authorization>| {
        let body =
            json!({"op_id": op, "amount": amount, "reference": "payout-1", "authorization": auth});
        let signed = dee.sign_request(
            "POST",
            "/v1/withdrawals",
            body.to_string().as_bytes(),
            now(),
        );
        let client = client.clone();
        async move {
            client
                .send_with_headers(
                    "POST",
                    "/v1/withdrawals",
                    body.to_string().as_bytes(),
                    &signed?,
                )
                .await
        }
    };
    let r = withdraw("w1", 40 * CREDIT, None).await?;
    assert_eq!(r.status, 401, "{}", r.text);
    let as_deposit = Authorization::sign(
        &treasurer,
        Kind::Deposit,
        &dee.party_id(),
        40 * CREDIT,
        "payout-1",
        now(),
    )?;
    let r = withdraw("w2", 40 * CREDIT, Some(&as_deposit)).await?;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(books(&client).await?["net_deposits"], 100 * CREDIT);
    let payout = Authorization::sign(
        &treasurer,
        Kind::Withdrawal,
        &dee.party_id(),
        40 * CREDIT,
        "payout-1",
        now(),
    )?;
    let r = withdraw("w3", 40 * CREDIT, Some(&payout)).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["balances"]["available"], 60 * CREDIT);
    assert_eq!(books(&client).await?["net_deposits"], 60 * CREDIT);

    // The audit trail: dee sees its own two entries, eve none of them, the arbiter all.
    let trail = client
        .json(Some(&dee), "GET", "/v1/treasury", &Value::Null)
        .await?
        .ok()?;
    let kinds: Vec<&str> = trail
        .as_array()
        .ok_or("trail")?
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds.len(), 2, "{trail}");
    assert!(
        kinds.contains(&"deposit") && kinds.contains(&"withdrawal"),
        "{trail}"
    );
    assert!(
        trail
            .as_array()
            .ok_or("trail")?
            .iter()
            .all(|e| e["treasurer"] == treasurer.public_key_hex().as_str())
    );
    let r = client
        .json(
            Some(&eve),
            "GET",
            &format!("/v1/treasury?party={}", dee.party_id()),
            &Value::Null,
        )
        .await?;
    assert_eq!(r.status, 403, "{}", r.text);
    let mine = client
        .json(Some(&eve), "GET", "/v1/treasury", &Value::Null)
        .await?
        .ok()?;
    assert_eq!(mine, json!([]));
    let all = client
        .json(Some(&judge), "GET", "/v1/treasury", &Value::Null)
        .await?
        .ok()?;
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    Ok(())
}

#[tokio::test]
async fn contract_evidence_proves_who_signed_what() -> TestResult {
    let (treasurer, _) = Signer::generate()?;
    let (judge, _) = Signer::generate()?;
    let client = start(&treasurer, &judge).await?;
    let (alpha, _) = Signer::generate()?;
    let (dee, _) = Signer::generate()?;
    let (eve, _) = Signer::generate()?;
    client.register(&alpha, Role::Provider, "alpha").await?;
    client.register(&dee, Role::Demander, "dee").await?;
    client.register(&eve, Role::Demander, "eve").await?;
    let offer = client
        .json(
            Some(&alpha),
            "POST",
            "/v1/offers",
            &json!({
            "capacity_bytes": 10 * GIB, "price_per_gib_month": 4000, "egress_price_per_gib": 0,
            "region": "eu-west", "min_term_days": 1, "promised_uptime_bps": 9900,
            "endpoint": "https://nas.example:7480"}),
        )
        .await?
        .ok()?;
    let proposed = client
        .json(
            Some(&dee),
            "POST",
            "/v1/contracts",
            &json!({"offer_id": offer["id"], "reserved_bytes": GIB, "term_days": 30}),
        )
        .await?
        .ok()?;
    let id = proposed["id"].as_str().ok_or("id")?.to_owned();
    client
        .json(
            Some(&alpha),
            "POST",
            &format!("/v1/contracts/{id}/accept"),
            &json!({}),
        )
        .await?
        .ok()?;
    let contract: Contract = serde_json::from_value(
        client
            .json(
                Some(&dee),
                "GET",
                &format!("/v1/contracts/{id}"),
                &Value::Null,
            )
            .await?
            .ok()?,
    )?;
    let evidence: ContractEvidence = serde_json::from_value(
        client
            .json(
                Some(&alpha),
                "GET",
                &format!("/v1/contracts/{id}/evidence"),
                &Value::Null,
            )
            .await?
            .ok()?,
    )?;
    let key = evidence.verify_proposal(&contract)?;
    assert_eq!(hex::encode(key), dee.public_key_hex());
    let key = evidence.verify_acceptance(&contract)?;
    assert_eq!(hex::encode(key), alpha.public_key_hex());

    // Only the parties read it.
    let r = client
        .json(
            Some(&eve),
            "GET",
            &format!("/v1/contracts/{id}/evidence"),
            &Value::Null,
        )
        .await?;
    assert_eq!(r.status, 403, "{}", r.text);

    // A market that shows the contract otherwise is caught by either party.
    let mut other_tenant = contract.clone();
    other_tenant.demander = eve.party_id();
    let err = evidence
        .verify_proposal(&other_tenant)
        .expect_err("another tenant");
    assert!(err.to_string().contains("not by party"), "{err}");
    let mut bigger = contract.clone();
    bigger.reserved_bytes = 100 * GIB;
    let err = evidence
        .verify_proposal(&bigger)
        .expect_err("a bigger reservation");
    assert!(err.to_string().contains("the demander signed"), "{err}");
    // Evidence with eve's key in place of dee's: the party id does not derive from it.
    let mut swapped = evidence.clone();
    swapped.proposal.public_key = eve.public_key_hex();
    assert!(swapped.verify_proposal(&contract).is_err());
    // Another provider key named for alpha's acceptance.
    let mut swapped = evidence.clone();
    if let Some(a) = swapped.acceptance.as_mut() {
        a.public_key = eve.public_key_hex();
    }
    assert!(swapped.verify_acceptance(&contract).is_err());
    // A body the signature does not cover.
    let mut edited = evidence.clone();
    edited.proposal.body = edited.proposal.body.replace("1073741824", "107374182400");
    assert!(edited.verify_proposal(&bigger).is_err());
    Ok(())
}

/// A private CA and a certificate for 127.0.0.1 it signed: (CA PEM, cert PEM, key PEM).
fn issue() -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca =
        rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("key"))
            .expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn https_with_a_renewed_certificate_needs_no_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (ca1, cert1, key1) = issue();
    let (ca2, cert2, key2) = issue();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (ca1_path, ca2_path) = (dir.path().join("ca1.pem"), dir.path().join("ca2.pem"));
    std::fs::write(&cert_path, cert1)?;
    std::fs::write(&key_path, key1)?;
    std::fs::write(&ca1_path, ca1)?;
    std::fs::write(&ca2_path, ca2)?;

    let reloading = sublet_market::tls::ReloadingCert::open(&cert_path, &key_path)?;
    reloading.watch(Duration::from_millis(100));
    let market = Market::in_memory(Policy::default(), None)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://{}", listener.local_addr()?);
    tokio::spawn(sublet_market::server::serve_tls(
        listener,
        api::router(Arc::new(market)),
        sublet_market::server::Limits::default(),
        Some(reloading.acceptor()?),
        std::future::pending(),
    ));
    let trusting = |ca: &std::path::Path| {
        Client::with_tls(
            &url,
            &ClientTls {
                ca_file: Some(ca.to_owned()),
                insecure_http: false,
            },
        )
    };
    let healthz = |c: Client| async move { c.send(None, "GET", "/healthz", b"").await };
    assert_eq!(healthz(trusting(&ca1_path)?).await?.status, 200);
    assert!(healthz(trusting(&ca2_path)?).await.is_err());
    // Plain HTTP to the TLS port gets no answer it could take for the market's.
    let plain = Client::with_tls(
        &url.replace("https://", "http://"),
        &ClientTls::insecure_http(),
    )?;
    assert!(
        healthz(plain)
            .await
            .map(|r| r.status != 200)
            .unwrap_or(true)
    );

    // The certificate is renewed (by another CA here, to tell them apart).
    std::fs::write(&key_path, key2)?;
    std::fs::write(&cert_path, cert2)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if healthz(trusting(&ca2_path)?)
            .await
            .is_ok_and(|r| r.status == 200)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthz(trusting(&ca1_path)?).await.is_err());
    Ok(())
}
