//! The provider over real TLS on loopback, driven by the client the gateway uses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sublet_provider::client::{ClientConfig, ErrorKind, ProviderClient};
use sublet_provider::identity::NodeIdentity;
use sublet_provider::server::{self, ProviderConfig, RunningProvider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Fixture {
    dir: tempfile::TempDir,
    provider: RunningProvider,
    client: ProviderClient,
    gateway: Arc<NodeIdentity>,
}

async fn start_with(dir: tempfile::TempDir, tweak: impl FnOnce(&mut ProviderConfig)) -> Fixture {
    let gateway = Arc::new(NodeIdentity::generate());
    let mut config = ProviderConfig::new(dir.path());
    config.allowed_clients = vec![gateway.node_id()];
    config.token = Some("cluster-secret-0123".into());
    config.zone = "attic".into();
    tweak(&mut config);
    let provider = server::start(config).await.unwrap();
    let client = client_for(&provider, &gateway, None);
    Fixture {
        dir,
        provider,
        client,
        gateway,
    }
}

async fn start() -> Fixture {
    start_with(tempfile::tempdir().unwrap(), |_| {}).await
}

fn client_for(
    provider: &RunningProvider,
    identity: &Arc<NodeIdentity>,
    token: Option<&str>,
) -> ProviderClient {
    let cfg = ClientConfig {
        identity: Arc::clone(identity),
        token: token.map(str::to_string),
    };
    ProviderClient::new(&provider.grpc_addr.to_string(), provider.node_id, &cfg).unwrap()
}

fn data(n: usize, seed: u8) -> Bytes {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 11) as u8)
        .collect::<Vec<_>>()
        .into()
}

fn shard_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("shards"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn roundtrip_of_every_method() {
    let f = start().await;
    let c = &f.client;
    let d = data(3 * 1024 * 1024 + 17, 1);
    let put = c.put_shard("obj-1.s0", d.clone()).await.unwrap();
    assert_eq!(put.hash, *blake3::hash(&d).as_bytes());
    assert_eq!(put.length, d.len() as u64);

    assert_eq!(c.get_shard("obj-1.s0", None).await.unwrap(), d);
    let range = c
        .get_shard("obj-1.s0", Some((1_000_000, 2_000_000)))
        .await
        .unwrap();
    assert_eq!(range, d.slice(1_000_000..3_000_000));
    let tail = c
        .get_shard("obj-1.s0", Some((d.len() as u64 - 5, 100)))
        .await
        .unwrap();
    assert_eq!(tail, d.slice(d.len() - 5..));

    let stat = c.stat_shard("obj-1.s0").await.unwrap();
    assert_eq!((stat.length, stat.hash), (put.length, put.hash));
    assert!(stat.stored_at > 1_700_000_000);

    for i in 0..5 {
        c.put_shard(&format!("obj-2.s{i}"), data(10, i))
            .await
            .unwrap();
    }
    let (page, next) = c.list_shards("obj-2", "", 3).await.unwrap();
    let ids: Vec<_> = page.iter().map(|s| s.shard_id.as_str()).collect();
    assert_eq!(ids, ["obj-2.s0", "obj-2.s1", "obj-2.s2"]);
    let (page, next) = c.list_shards("obj-2", &next.unwrap(), 3).await.unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(next, None);

    let info = c.info().await.unwrap();
    assert_eq!(info.node_id, f.provider.node_id.to_string());
    assert_eq!(info.shard_count, 6);
    assert_eq!(info.zone, "attic");
    assert_eq!(info.capacity_bytes, 10 << 30);
    assert!(info.used_bytes > d.len() as u64);
    assert_eq!(info.free_bytes, info.capacity_bytes - info.used_bytes);

    let proof = c.audit("obj-1.s0", 123_456, 4096, &put.hash).await.unwrap();
    assert_eq!(proof, d.slice(123_456..123_456 + 4096));
    let err = c.audit("obj-1.s0", 0, 4096, &[7; 32]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuditFailed);

    assert!(c.delete_shard("obj-1.s0").await.unwrap());
    assert!(!c.delete_shard("obj-1.s0").await.unwrap());
    assert_eq!(
        c.get_shard("obj-1.s0", None).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        c.stat_shard("obj-1.s0").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        c.put_shard(".hidden", data(1, 0)).await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        c.get_shard("a/b", None).await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );

    let metrics = http_get(f.provider.http_addr, "/metrics").await;
    assert!(metrics.contains("sublet_provider_shards 5"), "{metrics}");
    assert!(metrics.contains("sublet_provider_requests_total{code=\"Ok\",method=\"PutShard\"} 6"));
    assert!(metrics.contains("sublet_provider_audits_total{outcome=\"answered\"} 2"));
    assert!(
        http_get(f.provider.http_addr, "/healthz")
            .await
            .ends_with("ok\n")
    );
    f.provider.shutdown().await;
}

#[tokio::test]
async fn a_provider_with_another_node_id_is_refused() {
    let f = start().await;
    let impostor = NodeIdentity::generate().node_id();
    let cfg = ClientConfig {
        identity: Arc::clone(&f.gateway),
        token: None,
    };
    let client =
        ProviderClient::new(&format!("https://{}", f.provider.grpc_addr), impostor, &cfg).unwrap();
    let err = client.info().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains("node id"), "{err}");
    // The pinned id still works.
    f.client.info().await.unwrap();
}

#[tokio::test]
async fn only_allowed_clients_or_token_holders_may_call() {
    let f = start().await;
    let stranger = Arc::new(NodeIdentity::generate());
    let err = client_for(&f.provider, &stranger, None)
        .info()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    let err = client_for(&f.provider, &stranger, Some("guess"))
        .put_shard("x", data(10, 0))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(
        client_for(&f.provider, &stranger, None)
            .stat_shard("x")
            .await
            .is_err()
    );
    client_for(&f.provider, &stranger, Some("cluster-secret-0123"))
        .info()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_caller_that_authenticates_a_whole_shard_itself_gets_it_as_stored_unchecked() {
    let f = start().await;
    let d = data(2 * 1024 * 1024 + 7, 10);
    f.client.put_shard("sealed", d.clone()).await.unwrap();
    assert_eq!(
        f.client
            .get_shard_authenticated_within("sealed", d.len() as u64)
            .await
            .unwrap(),
        d
    );
    let path = f.dir.path().join("shards/sealed.shard");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    // Rot comes back as stored (the caller's tag and hashes find it), within the bound.
    let got = f
        .client
        .get_shard_authenticated_within("sealed", d.len() as u64)
        .await
        .unwrap();
    assert_eq!(got.len(), d.len());
    let differ: Vec<usize> = (0..d.len()).filter(|&i| got[i] != d[i]).collect();
    assert_eq!(differ.len(), 1, "one flipped byte, as on disk");
    let err = f
        .client
        .get_shard_authenticated_within("sealed", d.len() as u64 - 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    // Every other read still checks: a whole shard as before, and ranges.
    for range in [None, Some((0, d.len() as u64)), Some((0, 1 << 20))] {
        let err = f.client.get_shard("sealed", range).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DataLoss, "{range:?}: {err}");
    }
    let metrics = http_get(f.provider.http_addr, "/metrics").await;
    assert!(
        metrics.contains("sublet_provider_unchecked_reads_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sublet_provider_corruptions_total 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_corrupt_shard_is_never_served() {
    let f = start().await;
    let d = data(2 * 1024 * 1024, 9);
    let put = f.client.put_shard("victim", d.clone()).await.unwrap();
    let path = f.dir.path().join("shards/victim.shard");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    let err = f.client.get_shard("victim", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    let err = f
        .client
        .audit("victim", 512 * 1024, 1 << 20, &put.hash)
        .await
        .unwrap_err();
    // The provider checks its slice before answering: it says the shard is corrupt.
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    let metrics = http_get(f.provider.http_addr, "/metrics").await;
    assert!(
        metrics.contains("sublet_provider_corruptions_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn writes_past_capacity_are_refused() {
    let f = start_with(tempfile::tempdir().unwrap(), |c| {
        c.capacity = 3 << 20;
        c.reserve = 1 << 20;
    })
    .await;
    f.client.put_shard("fits", data(1 << 20, 0)).await.unwrap();
    let err = f
        .client
        .put_shard("too-much", data(1 << 20, 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    assert!(err.message().contains("capacity"), "{err}");
    assert_eq!(shard_files(f.dir.path()), ["fits.shard"]);
}

#[tokio::test]
async fn a_refused_write_is_answered_while_the_client_still_holds_its_stream() {
    let f = start_with(tempfile::tempdir().unwrap(), |c| {
        c.capacity = 3 << 20;
        c.reserve = 1 << 20;
    })
    .await;
    // The store refuses the shard when it begins (past capacity); the client has sent the
    // header and stalls: the answer must not wait for a message that does not come.
    let chunks = futures::stream::pending();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        f.client.put_shard_stream("too-much", 4 << 20, None, chunks),
    )
    .await
    .expect("the refusal waited for the stalled client")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    assert!(err.message().contains("capacity"), "{err}");
    assert!(shard_files(f.dir.path()).is_empty());
}

#[tokio::test]
async fn a_cut_stream_stores_nothing() {
    let f = start().await;
    // Ends short of the announced length.
    let err = f
        .client
        .put_shard_stream(
            "short",
            10 << 20,
            None,
            futures::stream::iter(vec![data(1 << 20, 0)]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

    // The client goes away mid-stream.
    let client = f.client.clone();
    let task = tokio::spawn(async move {
        let chunks = futures::stream::iter(vec![data(1 << 20, 1), data(1 << 20, 2)])
            .chain(futures::stream::pending());
        client.put_shard_stream("cut", 10 << 20, None, chunks).await
    });
    use futures::StreamExt;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        shard_files(f.dir.path()).len(),
        1,
        "temp file while writing"
    );
    task.abort();
    let mut files = shard_files(f.dir.path());
    for _ in 0..100 {
        if files.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        files = shard_files(f.dir.path());
    }
    assert!(files.is_empty(), "{files:?}");
    assert_eq!(
        f.client.stat_shard("cut").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(f.client.info().await.unwrap().used_bytes, 0);
}

#[tokio::test]
async fn restart_keeps_identity_and_shards_and_shutdown_finishes_writes() {
    let f = start().await;
    let d = data(100_000, 3);
    f.client.put_shard("kept", d.clone()).await.unwrap();

    // A write in flight when shutdown starts still completes.
    let client = f.client.clone();
    let slow = tokio::spawn(async move {
        use futures::StreamExt;
        let chunks = futures::stream::iter(0..4u8).then(|i| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            data(1 << 20, i)
        });
        client
            .put_shard_stream("in-flight", 4 << 20, None, chunks)
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let node_id = f.provider.node_id;
    f.provider.shutdown().await;
    assert_eq!(slow.await.unwrap().unwrap().length, 4 << 20);

    let again = start_with(f.dir, |_| {}).await;
    assert_eq!(again.provider.node_id, node_id);
    let client = client_for(&again.provider, &f.gateway, Some("cluster-secret-0123"));
    assert_eq!(client.get_shard("kept", None).await.unwrap(), d);
    assert_eq!(
        client.stat_shard("in-flight").await.unwrap().length,
        4 << 20
    );
}

#[tokio::test]
async fn a_shard_that_does_not_hash_to_the_expected_hash_is_refused() {
    let f = start().await;
    let d = data(2 * 1024 * 1024 + 3, 4);
    let want = *blake3::hash(&d).as_bytes();
    let put = f
        .client
        .put_shard_expecting("checked", d.clone(), want)
        .await
        .unwrap();
    assert_eq!(put.hash, want);
    assert_eq!(f.client.get_shard("checked", None).await.unwrap(), d);
    // Bytes damaged on the way (or a caller's wrong idea of them): nothing is stored.
    let err = f
        .client
        .put_shard_expecting("damaged", d.clone(), [7; 32])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert_eq!(
        f.client
            .get_shard("damaged", None)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn a_reader_stops_at_the_length_it_expects() {
    let f = start().await;
    let d = data(2 * 1024 * 1024 + 3, 5);
    f.client.put_shard("long", d.clone()).await.unwrap();
    assert_eq!(
        f.client
            .get_shard_within("long", None, d.len() as u64)
            .await
            .unwrap(),
        d
    );
    // A provider answering more than the caller knows the shard holds (here: the caller
    // expects a tenth of it) is cut off with DataLoss, before the rest is buffered.
    let err = f
        .client
        .get_shard_within("long", None, d.len() as u64 / 10)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    assert!(err.to_string().contains("more than"), "{err}");
    // One byte more than expected, in the second of two messages (which the one-message
    // shortcut used not to count), is cut off too.
    let err = f
        .client
        .get_shard_within("long", None, d.len() as u64 - 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
}
