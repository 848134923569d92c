//! A provider lending its space on an in-process market: it registers its node key,
//! publishes its offer, keeps it current across restarts and term changes, and accepts
//! the contracts demanders propose on it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sublet_crds::MarketOffer;
use sublet_market::client::Client;
use sublet_market::identity::{Role, Signer, party_id};
use sublet_market::{Market, Policy, api};
use sublet_provider::client::{ClientConfig, ErrorKind, ProviderClient};
use sublet_provider::identity::NodeIdentity;
use sublet_provider::market::MarketSettings;
use sublet_provider::server::{self, ProviderConfig, RunningProvider};

async fn market() -> (String, Client) {
    let market = Market::in_memory(Policy::default(), None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, api::router(Arc::new(market))).await });
    let client = Client::new(&url).unwrap();
    (url, client)
}

fn offer(price: i64) -> MarketOffer {
    serde_yaml::from_str(&format!(
        "pricePerGibMonth: {price}\nregion: eu-west\nminTermDays: 7\npromisedUptime: \"99.5%\"\nendpoint: \"https://nas.example:7480\""
    ))
    .unwrap()
}

async fn start(dir: &std::path::Path, url: &str, offer: MarketOffer) -> RunningProvider {
    let mut config = ProviderConfig::new(dir);
    config.capacity = 3 << 30;
    config.reserve = 1 << 30;
    config.token = Some("t".into());
    config.market = Some(MarketSettings {
        url: url.into(),
        offer,
        interval: Duration::from_millis(100),
    });
    server::start(config).await.unwrap()
}

async fn open_offers(client: &Client, provider: &str) -> Vec<Value> {
    let all = client
        .json(None, "GET", "/v1/offers", &Value::Null)
        .await
        .unwrap()
        .ok()
        .unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .filter(|o| o["provider"] == provider)
        .cloned()
        .collect()
}

/// Waits until `f` returns something, polling the market.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(mut f: impl FnMut() -> F) -> T {
    for _ in 0..100 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the market never reached the expected state");
}

#[tokio::test]
async fn provider_publishes_its_offer_keeps_it_current_and_accepts_contracts() {
    let (url, client) = market().await;
    let dir = tempfile::tempdir().unwrap();
    let provider = start(dir.path(), &url, offer(4000)).await;
    let identity = NodeIdentity::load_or_create(dir.path()).unwrap();
    let party = party_id(identity.public_key());

    // The offer is signed by the node key: the market's party is that key.
    let published = eventually(|| {
        let client = client.clone();
        let party = party.clone();
        async move { open_offers(&client, &party).await.pop() }
    })
    .await;
    let registered = client
        .json(None, "GET", &format!("/v1/parties/{party}"), &Value::Null)
        .await
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(registered["role"], "provider");
    assert_eq!(registered["public_key"], hex::encode(identity.public_key()));
    // Capacity defaults to what the provider may fill: capacity minus reserve.
    assert_eq!(published["capacity_bytes"], 2u64 << 30);
    assert_eq!(published["price_per_gib_month"], 4000);
    assert_eq!(published["promised_uptime_bps"], 9950);
    assert_eq!(published["min_term_days"], 7);
    assert_eq!(published["endpoint"], "https://nas.example:7480");

    // A demander's proposal is accepted without anyone at the provider's keyboard. The
    // demander signs with its gateway's node key, and that gateway may then call.
    let gateway = Arc::new(NodeIdentity::generate());
    let demander = Signer::from_pkcs8(gateway.pkcs8_der()).unwrap();
    let shards = ProviderClient::new(
        &provider.grpc_addr.to_string(),
        provider.node_id,
        &ClientConfig {
            identity: Arc::clone(&gateway),
            token: None,
        },
    )
    .unwrap();
    let refused = shards.info().await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unauthenticated, "{refused}");
    client
        .register(&demander, Role::Demander, "dee")
        .await
        .unwrap();
    let proposed = client
        .json(
            Some(&demander),
            "POST",
            "/v1/contracts",
            &json!({"offer_id": published["id"], "reserved_bytes": 1u64 << 30, "term_days": 30}),
        )
        .await
        .unwrap()
        .ok()
        .unwrap();
    let contract_path = format!("/v1/contracts/{}", proposed["id"].as_str().unwrap());
    eventually(|| {
        let client = client.clone();
        let path = contract_path.clone();
        let demander = &demander;
        async move {
            let c = client
                .json(Some(demander), "GET", &path, &Value::Null)
                .await
                .ok()?
                .ok()
                .ok()?;
            (c["state"] == "active").then_some(())
        }
    })
    .await;
    eventually(|| {
        let shards = shards.clone();
        async move { shards.info().await.ok() }
    })
    .await;
    provider.shutdown().await;

    // Restarted with the same terms: the same offer stays open.
    let provider = start(dir.path(), &url, offer(4000)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let open = open_offers(&client, &party).await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["id"], published["id"]);
    provider.shutdown().await;

    // New terms replace the offer: the old one is withdrawn, the running contract stays.
    let provider = start(dir.path(), &url, offer(3000)).await;
    let replaced = eventually(|| {
        let client = client.clone();
        let party = party.clone();
        let old = published["id"].clone();
        async move {
            let open = open_offers(&client, &party).await;
            (open.len() == 1 && open[0]["id"] != old).then(|| open[0].clone())
        }
    })
    .await;
    assert_eq!(replaced["price_per_gib_month"], 3000);
    let old = client
        .json(
            None,
            "GET",
            &format!("/v1/offers/{}", published["id"].as_str().unwrap()),
            &Value::Null,
        )
        .await
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(old["withdrawn"], true);
    let contract = client
        .json(Some(&demander), "GET", &contract_path, &Value::Null)
        .await
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(contract["state"], "active");
    provider.shutdown().await;
}

#[tokio::test]
async fn a_node_key_registered_as_a_demander_does_not_publish() {
    let (url, client) = market().await;
    let dir = tempfile::tempdir().unwrap();
    let identity = NodeIdentity::load_or_create(dir.path()).unwrap();
    let signer = Signer::from_pkcs8(identity.pkcs8_der()).unwrap();
    client
        .register(&signer, Role::Demander, "not-a-provider")
        .await
        .unwrap();
    let settings = MarketSettings {
        url: url.clone(),
        offer: offer(4000),
        interval: Duration::from_secs(60),
    };
    let publisher = sublet_provider::market::OfferPublisher::new(
        &identity,
        &url,
        settings.new_offer(1 << 30).unwrap(),
        dir.path().to_path_buf(),
    )
    .unwrap();
    let err = publisher.sync().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("registered on the market as a \"demander\""),
        "{err}"
    );
    assert!(open_offers(&client, &signer.party_id()).await.is_empty());
}
