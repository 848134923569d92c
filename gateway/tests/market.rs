//! Market pools: providers publish offers on an in-process market, a gateway with a
//! `market` pool contracts the matching ones by itself and stores objects on them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sublet_market::identity::Signer;
use sublet_market::test_support::RewritingProxy;
use sublet_market::{Market, Policy, api};
use sublet_provider::market::MarketSettings;
use sublet_provider::server::{self, ProviderConfig, RunningProvider};
use support::Client;

/// A market in this process (with `policy`), its URL and a client.
async fn start_market(policy: Policy) -> (String, sublet_market::client::Client) {
    let market = Market::in_memory(policy, None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, api::router(Arc::new(market))).await });
    let client = sublet_market::client::Client::with_tls(
        &url,
        &sublet_market::client::ClientTls::insecure_http(),
    )
    .unwrap();
    (url, client)
}

/// A provider lending its space on the market at `price`, reachable only by gateways of
/// demanders that contract it (no token, no allowed clients).
async fn lending_provider(dir: &std::path::Path, market: &str, price: i64) -> RunningProvider {
    // The offer names the address, so the port must be known first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = ProviderConfig::new(dir);
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], port));
    cfg.market = Some(MarketSettings {
        url: market.into(),
        tls: sublet_market::client::ClientTls::insecure_http(),
        offer: serde_yaml::from_str(&format!(
            "pricePerGibMonth: {price}\nregion: eu-west\npromisedUptime: \"99%\"\nendpoint: \"https://127.0.0.1:{port}\""
        ))
        .unwrap(),
        interval: Duration::from_millis(100),
    });
    server::start(cfg).await.unwrap()
}

/// The file of a gateway whose one pool rents 2 providers (1 GiB each, plus `criteria`)
/// on the market at `url`, and whose default plan needs both (EC 1+1, one shard per owner).
fn rented_pool_gateway(
    url: &str,
    criteria: &str,
    data_dir: &std::path::Path,
) -> sublet_crds::Config {
    let yaml = format!(
        r#"apiVersion: sublet.dev/v1alpha1
kind: ProviderPool
metadata: {{name: rented}}
spec:
  class: rented
  market: {{url: "{url}", insecureHttp: true, providers: 2, reserve: 1Gi{criteria}}}
---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {{name: rented-1-1}}
spec:
  redundancy: {{erasure: {{dataShards: 1, parityShards: 1}}}}
  segmentSize: 64Ki
  placement: {{spreadBy: owner, maxPerDomain: 1, pools: [{{name: rented, minShards: 2}}]}}
---
apiVersion: sublet.dev/v1alpha1
kind: StorageGateway
metadata: {{name: s3}}
spec:
  defaultPlan: rented-1-1
  listen: "127.0.0.1:0"
  dataDir: "{}"
  credentials: [{{accessKey: admin, secretKey: admin-secret-0123456789}}]
"#,
        data_dir.display()
    );
    sublet_crds::load_str("sublet.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"))
}

/// Waits (up to 5 s) until the market lists `n` open offers.
async fn wait_for_offers(market: &sublet_market::client::Client, n: usize) {
    for _ in 0..100 {
        if open_offers(market).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn open_offers(market: &sublet_market::client::Client) -> usize {
    let offers = market
        .json(None, "GET", "/v1/offers", &Value::Null)
        .await
        .unwrap()
        .ok()
        .unwrap();
    offers.as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn market_pool_contracts_matching_providers_and_stores_on_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, market) = start_market(Policy::default()).await;
    let cheap_a = lending_provider(&tmp.path().join("a"), &url, 3_000).await;
    let cheap_b = lending_provider(&tmp.path().join("b"), &url, 4_000).await;
    let dear = lending_provider(&tmp.path().join("c"), &url, 90_000).await;
    wait_for_offers(&market, 3).await;
    assert_eq!(open_offers(&market).await, 3);

    let config = rented_pool_gateway(
        &url,
        ", maxPricePerGibMonth: 5000, regions: [eu-west]",
        &tmp.path().join("gateway"),
    );
    let running = sublet_gateway::runtime::start(&config, &Default::default())
        .await
        .unwrap();
    // The two providers within the price limit, pinned by the key they signed offers with.
    let mut contracted = running.providers.clone();
    contracted.sort();
    let mut expected = vec![cheap_a.node_id.to_string(), cheap_b.node_id.to_string()];
    expected.sort();
    assert_eq!(contracted, expected);
    assert!(!running.providers.contains(&dear.node_id.to_string()));

    // The gateway's market key is its node key.
    let identity =
        sublet_provider::identity::NodeIdentity::load_or_create(&running.paths.identity_dir)
            .unwrap();
    let demander = Signer::from_pkcs8(identity.pkcs8_der()).unwrap();
    let contracts = market
        .json(Some(&demander), "GET", "/v1/contracts", &Value::Null)
        .await
        .unwrap()
        .ok()
        .unwrap();
    let contracts = contracts.as_array().unwrap().clone();
    assert_eq!(contracts.len(), 2);
    assert!(contracts.iter().all(|c| c["state"] == "active"));

    // Objects are stored on the contracted providers: a 1+1 stripe needs both.
    let s3 = Client {
        addr: running.s3_addr,
        access_key: "admin".into(),
        secret_key: "admin-secret-0123456789".into(),
    };
    let r = s3.send("PUT", "/rented", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body: Vec<u8> = (0..200_000).map(|i| (i * 13 % 251) as u8).collect();
    let r = s3.send("PUT", "/rented/blob.bin", &[], &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s3.send("GET", "/rented/blob.bin", &[], b"").await;
    assert_eq!(r.status, 200);
    assert!(r.body == body, "the object read back differs");
    running.shutdown().await;

    // A restarted gateway keeps its contracts instead of signing new ones.
    let running = sublet_gateway::runtime::start(&config, &Default::default())
        .await
        .unwrap();
    let again = market
        .json(Some(&demander), "GET", "/v1/contracts", &Value::Null)
        .await
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(again.as_array().unwrap().len(), 2, "{again}");
    let s3 = Client {
        addr: running.s3_addr,
        ..s3
    };
    let r = s3.send("GET", "/rented/blob.bin", &[], b"").await;
    assert_eq!(r.status, 200);
    assert!(r.body == body, "the object read back after restart differs");

    // The gateway's disk is lost, all but the backed-up master key, with an object written
    // after the last snapshot. Recovery finds the rented providers through the contracts
    // the master key's node holds, and the gateway takes those contracts over.
    running.snapshot_now().await.unwrap();
    let r = s3
        .send("PUT", "/rented/late.txt", &[], b"after the snapshot")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let paths = running.paths.clone();
    running.shutdown().await;
    let kept = tmp.path().join("master.key.backup");
    std::fs::rename(&paths.master_key, &kept).unwrap();
    std::fs::remove_dir_all(&paths.data_dir).unwrap();
    std::fs::create_dir_all(paths.master_key.parent().unwrap()).unwrap();
    std::fs::rename(&kept, &paths.master_key).unwrap();
    let done = sublet_gateway::runtime::recover(&config, &Default::default(), false, false)
        .await
        .unwrap();
    assert_eq!(done.replayed.applied, 1, "{:?}", done.replayed);
    assert!(done.replayed.unlisted.is_empty(), "{:?}", done.replayed);
    assert_eq!(done.after.writes, 0, "{:?}", done.after);
    let running = sublet_gateway::runtime::start(&config, &Default::default())
        .await
        .unwrap();
    let after = market
        .json(Some(&demander), "GET", "/v1/contracts", &Value::Null)
        .await
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(
        after, again,
        "the recovered gateway signed new contracts instead of taking over its own"
    );
    let s3 = Client {
        addr: running.s3_addr,
        ..s3
    };
    let r = s3.send("GET", "/rented/blob.bin", &[], b"").await;
    assert!(r.status == 200 && r.body == body, "{}", r.status);
    let r = s3.send("GET", "/rented/late.txt", &[], b"").await;
    assert!(
        r.status == 200 && r.body == b"after the snapshot",
        "{}",
        r.text()
    );
    running.shutdown().await;
    for p in [cheap_a, cheap_b, dear] {
        p.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_market_pool_contracts_a_new_provider_when_a_contract_ends() {
    let tmp = tempfile::tempdir().unwrap();
    // Short receipt periods make the gateway's market passes frequent (a quarter period).
    let (url, market) = start_market(Policy {
        receipt_period_secs: 4,
        ..Policy::default()
    })
    .await;
    let a = lending_provider(&tmp.path().join("a"), &url, 3_000).await;
    let b = lending_provider(&tmp.path().join("b"), &url, 4_000).await;
    wait_for_offers(&market, 2).await;
    let config = rented_pool_gateway(&url, "", &tmp.path().join("gateway"));
    let running = sublet_gateway::runtime::start(&config, &Default::default())
        .await
        .unwrap();
    let identity =
        sublet_provider::identity::NodeIdentity::load_or_create(&running.paths.identity_dir)
            .unwrap();
    let demander = Signer::from_pkcs8(identity.pkcs8_der()).unwrap();
    let contracts = market
        .json(Some(&demander), "GET", "/v1/contracts", &Value::Null)
        .await
        .unwrap()
        .ok()
        .unwrap();
    let with_b = contracts
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["provider"]
                == sublet_market::identity::party_id(
                    sublet_provider::identity::NodeIdentity::load_or_create(&tmp.path().join("b"))
                        .unwrap()
                        .public_key(),
                )
        })
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A third provider offers space, and the contract with b ends.
    let c = lending_provider(&tmp.path().join("c"), &url, 3_500).await;
    let ended = market
        .json(
            Some(&demander),
            "POST",
            &format!("/v1/contracts/{with_b}/terminate"),
            &Value::Null,
        )
        .await
        .unwrap();
    assert_eq!(ended.status, 200, "{}", ended.body);

    // The gateway notices on its next pass, contracts c and places on it without a restart.
    let c_node = c.node_id.to_string();
    let mut connected = false;
    for _ in 0..200 {
        if running.gateway.providers().contains_key(&c_node)
            && running
                .gateway
                .topology()
                .sites
                .iter()
                .any(|s| s.node_id == c_node)
        {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !connected {
        let now = market
            .json(Some(&demander), "GET", "/v1/contracts", &Value::Null)
            .await
            .unwrap();
        panic!(
            "the gateway never contracted the new provider {c_node}; it has {:?}; contracts: {}",
            running.gateway.providers().keys().collect::<Vec<_>>(),
            now.body
        );
    }
    let again = market
        .json(Some(&demander), "GET", "/v1/contracts", &Value::Null)
        .await
        .unwrap()
        .ok()
        .unwrap();
    let active = again
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "active")
        .count();
    assert_eq!(active, 2, "{again}");
    running.probe_now().await;
    let s3 = Client {
        addr: running.s3_addr,
        access_key: "admin".into(),
        secret_key: "admin-secret-0123456789".into(),
    };
    assert_eq!(s3.send("PUT", "/rented", &[], b"").await.status, 200);
    let body: Vec<u8> = (0..100_000).map(|i| (i * 7 % 251) as u8).collect();
    let r = s3.send("PUT", "/rented/after.bin", &[], &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s3.send("GET", "/rented/after.bin", &[], b"").await;
    assert!(r.status == 200 && r.body == body);
    running.shutdown().await;
    for p in [a, b, c] {
        p.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_forging_audits_gets_its_periods_flagged_not_paid() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, market) = start_market(Policy {
        receipt_period_secs: 4,
        ..Policy::default()
    })
    .await;
    let honest = lending_provider(&tmp.path().join("honest"), &url, 3_000).await;
    let liar = lending_provider(&tmp.path().join("liar"), &url, 3_000).await;
    wait_for_offers(&market, 2).await;
    let config = rented_pool_gateway(&url, "", &tmp.path().join("gateway"));
    let running = sublet_gateway::runtime::start(&config, &Default::default())
        .await
        .unwrap();
    let s3 = Client {
        addr: running.s3_addr,
        access_key: "admin".into(),
        secret_key: "admin-secret-0123456789".into(),
    };
    assert_eq!(s3.send("PUT", "/rented", &[], b"").await.status, 200);
    for i in 0..4 {
        let body = vec![i as u8; 50_000];
        let r = s3.send("PUT", &format!("/rented/o{i}"), &[], &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let identity =
        sublet_provider::identity::NodeIdentity::load_or_create(&running.paths.identity_dir)
            .unwrap();
    let demander = Signer::from_pkcs8(identity.pkcs8_der()).unwrap();
    let liar_party = sublet_market::identity::party_id(
        sublet_provider::identity::NodeIdentity::load_or_create(&tmp.path().join("liar"))
            .unwrap()
            .public_key(),
    );
    let contracts = market
        .json(Some(&demander), "GET", "/v1/contracts", &Value::Null)
        .await
        .unwrap()
        .ok()
        .unwrap();
    let liar_contract = contracts
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == liar_party.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The provider answers audits with made-up bytes and counts them as passed; the
    // gateway's checks fail them. The two receipts disagree, and the market says so.
    liar.forge_audits(true);
    let mut flagged = None;
    for _ in 0..150 {
        sublet_gateway::upkeep::audit::audit_round(&running.gateway, None, 8)
            .await
            .unwrap();
        let periods = market
            .json(
                Some(&demander),
                "GET",
                &format!("/v1/contracts/{liar_contract}/periods"),
                &Value::Null,
            )
            .await
            .unwrap()
            .ok()
            .unwrap();
        if let Some(p) = periods
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["status"] == "mismatch")
        {
            flagged = Some(p.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let flagged = flagged.expect("no period of the forging provider was flagged");
    let fields = flagged["mismatched_fields"].to_string();
    assert!(fields.contains("audits_failed"), "{flagged}");
    assert!(
        flagged["demander_receipt"]["audits_failed"].as_u64() > Some(0),
        "{flagged}"
    );
    assert_eq!(flagged["provider_receipt"]["audits_failed"], 0, "{flagged}");
    assert!(
        flagged["settlement"].is_null(),
        "a flagged period is not paid: {flagged}"
    );
    running.shutdown().await;
    honest.shutdown().await;
    liar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_market_that_swaps_a_providers_key_gets_no_provider_pinned() {
    use sublet_gateway::runtime::market::{Contracting, with_contracts};
    use sublet_provider::identity::{NodeId, NodeIdentity};
    let tmp = tempfile::tempdir().unwrap();
    let (url, market) = start_market(Policy::default()).await;
    let a = lending_provider(&tmp.path().join("a"), &url, 3_000).await;
    let b = lending_provider(&tmp.path().join("b"), &url, 4_000).await;
    wait_for_offers(&market, 2).await;
    // Mallory, a provider of the market too, wants the gateway to pin her key in b's place.
    let (mallory, _) = Signer::generate().unwrap();
    market
        .register(&mallory, sublet_market::identity::Role::Provider, "mallory")
        .await
        .unwrap();
    let b_key = Signer::from_pkcs8(
        NodeIdentity::load_or_create(&tmp.path().join("b"))
            .unwrap()
            .pkcs8_der(),
    )
    .unwrap();
    // Whatever the market says of b (its offer, the contract, the evidence of its
    // acceptance), the man in the middle says of mallory.
    let proxied = RewritingProxy::start(
        &url,
        vec![
            (b_key.party_id(), mallory.party_id()),
            (b_key.public_key_hex(), mallory.public_key_hex()),
        ],
        true,
    )
    .await
    .unwrap();
    let config = rented_pool_gateway(proxied.url(), "", &tmp.path().join("gateway"));
    std::fs::create_dir_all(tmp.path().join("gateway")).unwrap();
    let gateway = NodeIdentity::generate();
    let terminated_before = sublet_gateway::metrics::refused_contracts("terminated");
    let (_, contracted) = with_contracts(
        &config,
        &gateway,
        &tmp.path().join("gateway"),
        Duration::from_secs(10),
        Contracting::Propose,
    )
    .await
    .unwrap();
    // Both providers accepted (they talk to the market directly), but b's acceptance does
    // not verify as mallory's: the gateway ended that contract at the market rather than
    // leave it drawing on its prepayment and holding the pool's place.
    let demander = Signer::from_pkcs8(gateway.pkcs8_der()).unwrap();
    let contracts = market
        .json(Some(&demander), "GET", "/v1/contracts", &Value::Null)
        .await
        .unwrap()
        .ok()
        .unwrap();
    let contracts = contracts.as_array().unwrap();
    assert_eq!(contracts.len(), 2, "{contracts:?}");
    let state_of = |party: &str| {
        contracts
            .iter()
            .find(|c| c["provider"] == party)
            .map(|c| c["state"].clone())
    };
    assert_eq!(state_of(&b_key.party_id()), Some(Value::from("terminated")));
    assert!(
        sublet_gateway::metrics::refused_contracts("terminated") > terminated_before,
        "the refusal is counted"
    );
    // Only a is pinned: mallory's key (or b's, unverified) is not.
    let mallory_node = NodeId::from_public_key(
        &hex::decode(mallory.public_key_hex())
            .unwrap()
            .try_into()
            .unwrap(),
    )
    .to_string();
    let pinned: Vec<(String, Option<String>)> = contracted
        .iter()
        .map(|(_, c)| (c.provider.clone(), c.endpoint.node_id.clone()))
        .collect();
    let a_party = Signer::from_pkcs8(
        NodeIdentity::load_or_create(&tmp.path().join("a"))
            .unwrap()
            .pkcs8_der(),
    )
    .unwrap()
    .party_id();
    assert!(
        !pinned
            .iter()
            .any(|(_, node)| node.as_deref() == Some(mallory_node.as_str())),
        "mallory's key was pinned: {pinned:?}"
    );
    assert_eq!(pinned, vec![(a_party.clone(), Some(a.node_id.to_string()))]);
    assert_eq!(state_of(&a_party), Some(Value::from("active")));
    // The next pass neither counts the ended contract nor asks b again.
    let (_, again) = with_contracts(
        &config,
        &gateway,
        &tmp.path().join("gateway"),
        Duration::from_secs(2),
        Contracting::Propose,
    )
    .await
    .unwrap();
    assert_eq!(again.len(), 1, "{again:?}");
    let saved = std::fs::read_to_string(
        tmp.path()
            .join("gateway")
            .join(sublet_gateway::runtime::market::CONTRACTS_FILE),
    )
    .unwrap_or_default();
    let b_contract = contracts
        .iter()
        .find(|c| c["provider"] == b_key.party_id().as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!saved.contains(&b_contract), "{saved}");
    a.shutdown().await;
    b.shutdown().await;
}
