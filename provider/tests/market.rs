//! A provider lending its space on an in-process market: it registers its node key,
//! publishes its offer, keeps it current across restarts and term changes, and accepts
//! the contracts demanders propose on it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sublet_crds::MarketOffer;
use sublet_market::test_support::RewritingProxy;
use sublet_market::{Market, Policy, api};
use sublet_market_api::client::{Client, ClientTls};
use sublet_market_api::identity::{Role, Signer, party_id};
use sublet_provider::client::{ClientConfig, ErrorKind, ProviderClient};
use sublet_provider::identity::NodeIdentity;
use sublet_provider::market::MarketSettings;
use sublet_provider::server::{self, ProviderConfig, RunningProvider};

async fn market() -> (String, Client) {
    market_with(Policy::default()).await
}

async fn market_with(policy: Policy) -> (String, Client) {
    let market = Market::in_memory(policy, None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, api::router(Arc::new(market))).await });
    let client = Client::with_tls(&url, &ClientTls::insecure_http()).unwrap();
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
    config.token = Some("operator-token-0123".into());
    config.market = Some(MarketSettings {
        url: url.into(),
        tls: ClientTls::insecure_http(),
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
    // Up to 20 s: receipts wait for a period to end, and CI machines are busy.
    for _ in 0..400 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the market never reached the expected state");
}

/// A demander whose gateway (`identity`) holds an active contract of `reserved` bytes with
/// the provider publishing `offer_id`; answers the gateway's shard client and the contract.
async fn contracted_gateway(
    client: &Client,
    provider: &RunningProvider,
    offer_id: &Value,
    name: &str,
    reserved: u64,
) -> (ProviderClient, Signer, String) {
    let gateway = Arc::new(NodeIdentity::generate());
    let demander = Signer::from_pkcs8(gateway.pkcs8_der()).unwrap();
    client
        .register(&demander, Role::Demander, name)
        .await
        .unwrap();
    let proposed = client
        .json(
            Some(&demander),
            "POST",
            "/v1/contracts",
            &json!({"offer_id": offer_id, "reserved_bytes": reserved, "term_days": 30}),
        )
        .await
        .unwrap()
        .ok()
        .unwrap();
    let contract = proposed["id"].as_str().unwrap().to_owned();
    let shards = ProviderClient::new(
        &provider.grpc_addr.to_string(),
        provider.node_id,
        &ClientConfig {
            identity: gateway,
            token: None,
        },
    )
    .unwrap();
    eventually(|| {
        let shards = shards.clone();
        async move { shards.info().await.ok() }
    })
    .await;
    (shards, demander, contract)
}

#[tokio::test]
async fn demanders_see_only_their_own_shards_within_their_reservation_and_usage_is_reported() {
    let (url, client) = market_with(Policy {
        receipt_period_secs: 2,
        ..Policy::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let provider = start(dir.path(), &url, offer(4000)).await;
    let identity = NodeIdentity::load_or_create(dir.path()).unwrap();
    let party = party_id(identity.public_key());
    let published = eventually(|| {
        let client = client.clone();
        let party = party.clone();
        async move { open_offers(&client, &party).await.pop() }
    })
    .await;
    let (a, a_signer, a_contract) =
        contracted_gateway(&client, &provider, &published["id"], "a", 8 << 20).await;
    let (b, _, _) = contracted_gateway(&client, &provider, &published["id"], "b", 64 << 20).await;

    // The same shard id names a different shard for each demander.
    let mine = bytes::Bytes::from(vec![1u8; 1 << 20]);
    let theirs = bytes::Bytes::from(vec![2u8; 1 << 20]);
    a.put_shard("s1", mine.clone()).await.unwrap();
    b.put_shard("s1", theirs.clone()).await.unwrap();
    b.put_shard("s2", theirs.clone()).await.unwrap();
    assert_eq!(a.get_shard("s1", None).await.unwrap(), mine);
    assert_eq!(b.get_shard("s1", None).await.unwrap(), theirs);
    let err = a.get_shard("s2", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let (listed, next) = a.list_shards("", "", 100).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|s| s.shard_id.as_str())
            .collect::<Vec<_>>(),
        vec!["s1"]
    );
    assert_eq!(next, None);
    // Deleting what isn't yours deletes nothing of anyone's.
    assert!(!a.delete_shard("s2").await.unwrap());
    assert_eq!(b.get_shard("s2", None).await.unwrap(), theirs);

    // Each sees its reservation as the provider's capacity, and is held to it.
    let info = a.info().await.unwrap();
    assert_eq!(info.capacity_bytes, 8 << 20);
    assert_eq!(info.shard_count, 1);
    assert!(info.used_bytes > 1 << 20);
    let err = a
        .put_shard("big", bytes::Bytes::from(vec![0u8; 8 << 20]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    assert!(err.to_string().contains("contract"), "{err}");

    // The provider's receipts count what it served each demander.
    a.get_shard("s1", None).await.unwrap();
    let periods_path = format!("/v1/contracts/{a_contract}/periods");
    let reported = eventually(|| {
        let client = client.clone();
        let path = periods_path.clone();
        let signer = &a_signer;
        async move {
            let periods = client
                .json(Some(signer), "GET", &path, &Value::Null)
                .await
                .ok()?
                .ok()
                .ok()?;
            let served: u64 = periods
                .as_array()?
                .iter()
                .filter_map(|p| p["provider_receipt"]["egress_bytes"].as_u64())
                .sum();
            (served == 2 << 20).then_some(periods)
        }
    })
    .await;
    assert!(
        reported
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] == "awaiting_demander"),
        "{reported}"
    );
    provider.shutdown().await;

    // The provider's own operator (the cluster token) sees every namespace.
    let config = ProviderConfig::new(dir.path());
    let owner = server::start(ProviderConfig {
        token: Some("operator-token-0123".into()),
        ..config
    })
    .await
    .unwrap();
    let admin = ProviderClient::new(
        &owner.grpc_addr.to_string(),
        owner.node_id,
        &ClientConfig {
            identity: Arc::new(NodeIdentity::generate()),
            token: Some("operator-token-0123".into()),
        },
    )
    .unwrap();
    let (all, _) = admin.list_shards("", "", 100).await.unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.iter().all(|s| s.shard_id.starts_with("t-")), "{all:?}");
    owner.shutdown().await;
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
        tls: ClientTls::insecure_http(),
        offer: offer(4000),
        interval: Duration::from_secs(60),
    };
    let publisher = sublet_provider::market::OfferPublisher::new(
        &identity,
        &url,
        &settings.tls,
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

#[tokio::test]
async fn a_market_that_rewrites_contracts_grants_no_tenancy() {
    let (url, client) = market().await;
    // Eve's gateway would like to store on the provider without a contract of its own.
    let eve_gateway = Arc::new(NodeIdentity::generate());
    let eve = Signer::from_pkcs8(eve_gateway.pkcs8_der()).unwrap();
    client.register(&eve, Role::Demander, "eve").await.unwrap();
    let dee_gateway = Arc::new(NodeIdentity::generate());
    let dee = Signer::from_pkcs8(dee_gateway.pkcs8_der()).unwrap();
    let proxy = RewritingProxy::start(&url, vec![(dee.party_id(), eve.party_id())], false)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let provider = start(dir.path(), proxy.url(), offer(4000)).await;
    let identity = NodeIdentity::load_or_create(dir.path()).unwrap();
    let party = party_id(identity.public_key());
    let published = eventually(|| {
        let client = client.clone();
        let party = party.clone();
        async move { open_offers(&client, &party).await.pop() }
    })
    .await;
    let shards_of = |gateway: &Arc<NodeIdentity>| {
        ProviderClient::new(
            &provider.grpc_addr.to_string(),
            provider.node_id,
            &ClientConfig {
                identity: Arc::clone(gateway),
                token: None,
            },
        )
        .unwrap()
    };

    // Honest answers: dee's contract is accepted and dee's gateway let in.
    client.register(&dee, Role::Demander, "dee").await.unwrap();
    client
        .json(
            Some(&dee),
            "POST",
            "/v1/contracts",
            &json!({"offer_id": published["id"], "reserved_bytes": 1u64 << 30, "term_days": 30}),
        )
        .await
        .unwrap()
        .ok()
        .unwrap();
    let dee_shards = shards_of(&dee_gateway);
    eventually(|| {
        let s = dee_shards.clone();
        async move { s.info().await.ok() }
    })
    .await;
    let eve_shards = shards_of(&eve_gateway);
    assert!(eve_shards.info().await.is_err(), "eve holds no contract");

    // The man in the middle names eve as the contract's demander: the provider finds that
    // dee signed it, lets nobody in on it, and eve never gets in.
    proxy.set_rewriting(true);
    eventually(|| {
        let s = dee_shards.clone();
        async move { s.info().await.err() }
    })
    .await;
    for _ in 0..10 {
        assert!(
            eve_shards.info().await.is_err(),
            "eve was let in on dee's contract"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(provider);
}
