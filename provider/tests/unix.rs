//! The provider over its Unix socket (no TLS), driven by the client the gateway uses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use sublet_provider::client::{ClientConfig, ErrorKind, ProviderClient};
use sublet_provider::identity::NodeIdentity;
use sublet_provider::server::{self, ProviderConfig, RunningProvider};

const TOKEN: &str = "cluster-secret-0123";

async fn start(
    dir: &std::path::Path,
    allowed: Vec<sublet_provider::identity::NodeId>,
) -> RunningProvider {
    let mut config = ProviderConfig::new(dir.join("data"));
    config.listen_unix = Some(dir.join("provider.sock"));
    config.allowed_clients = allowed;
    config.token = Some(TOKEN.into());
    server::start(config).await.unwrap()
}

fn client(
    provider: &RunningProvider,
    identity: &Arc<NodeIdentity>,
    token: Option<&str>,
) -> ProviderClient {
    let socket = provider.unix_socket.as_ref().unwrap();
    let cfg = ClientConfig {
        identity: Arc::clone(identity),
        token: token.map(str::to_string),
    };
    ProviderClient::new(
        &format!("unix:{}", socket.display()),
        provider.node_id,
        &cfg,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stores_and_reads_a_shard_over_the_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Arc::new(NodeIdentity::generate());
    let provider = start(dir.path(), vec![gateway.node_id()]).await;
    let socket = provider.unix_socket.clone().unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let c = client(&provider, &gateway, None);
    let data: Bytes = (0..3 * 1024 * 1024 + 17)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 13) as u8)
        .collect::<Vec<_>>()
        .into();
    let hash = *blake3::hash(&data).as_bytes();
    let put = c
        .put_shard_expecting("s-1", data.clone(), hash)
        .await
        .unwrap();
    assert_eq!((put.hash, put.length), (hash, data.len() as u64));
    assert_eq!(c.get_shard("s-1", None).await.unwrap(), data);
    assert_eq!(
        c.get_shard("s-1", Some((1 << 20, 100))).await.unwrap(),
        data.slice(1 << 20..(1 << 20) + 100)
    );
    c.audit("s-1", 4096, 8192, &hash).await.unwrap();
    assert!(c.delete_shard("s-1").await.unwrap());

    // The TCP listener still serves TLS beside the socket.
    let tls = ProviderClient::new(
        &provider.grpc_addr.to_string(),
        provider.node_id,
        &ClientConfig {
            identity: Arc::clone(&gateway),
            token: None,
        },
    )
    .unwrap();
    tls.info().await.unwrap();

    provider.shutdown().await;
    assert!(!socket.exists(), "the socket file is removed on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_socket_a_caller_still_needs_an_allowed_node_id_or_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Arc::new(NodeIdentity::generate());
    let provider = start(dir.path(), vec![gateway.node_id()]).await;
    // Same uid (the kernel lets it in), but neither an allowed node nor the token.
    let stranger = Arc::new(NodeIdentity::generate());
    let err = client(&provider, &stranger, None).info().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    let err = client(&provider, &stranger, Some("wrong-token-0123456"))
        .info()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    client(&provider, &stranger, Some(TOKEN))
        .info()
        .await
        .unwrap();
    client(&provider, &gateway, None).info().await.unwrap();
    provider.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_refuses_another_node_on_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Arc::new(NodeIdentity::generate());
    let provider = start(dir.path(), vec![gateway.node_id()]).await;
    let socket = provider.unix_socket.clone().unwrap();
    let expected = NodeIdentity::generate().node_id();
    let c = ProviderClient::new(
        &format!("unix://{}", socket.display()),
        expected,
        &ClientConfig {
            identity: Arc::clone(&gateway),
            token: Some(TOKEN.into()),
        },
    )
    .unwrap();
    let err = c.info().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.message().contains(&format!("expected {expected}")),
        "the error names the pinned node: {err}"
    );
    provider.shutdown().await;

    // Nothing listens any more: a bounded, clear failure.
    let err = client_at(&socket, &gateway).info().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

fn client_at(socket: &std::path::Path, identity: &Arc<NodeIdentity>) -> ProviderClient {
    ProviderClient::new(
        &format!("unix:{}", socket.display()),
        NodeIdentity::generate().node_id(),
        &ClientConfig {
            identity: Arc::clone(identity),
            token: None,
        },
    )
    .unwrap()
}

#[test]
fn bad_unix_addresses_are_refused_naming_them() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let cfg = ClientConfig {
        identity: Arc::new(NodeIdentity::generate()),
        token: None,
    };
    let id = NodeIdentity::generate().node_id();
    for bad in ["unix:", "unix:p.sock", "unix://nas/p.sock"] {
        let err = ProviderClient::new(bad, id, &cfg).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains(bad), "{bad}: {err}");
    }
}

fn short_circuit_reads(provider: &RunningProvider) -> u64 {
    provider.metrics.short_circuit_reads.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_authenticated_whole_shard_reads_short_circuit_and_an_off_provider_serves_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Arc::new(NodeIdentity::generate());
    let provider = start(dir.path(), vec![gateway.node_id()]).await;
    let c = client(&provider, &gateway, None).with_short_circuit_reads(true);
    assert!(c.short_circuits());
    let data: Bytes = (0..1_500_000u32)
        .map(|i| (i as u8) ^ (i >> 9) as u8)
        .collect::<Vec<_>>()
        .into();
    let hash = *blake3::hash(&data).as_bytes();
    c.put_shard_expecting("s-1", data.clone(), hash)
        .await
        .unwrap();

    // Checked reads (whole, ranged) never take the short cut.
    assert_eq!(c.get_shard("s-1", None).await.unwrap(), data);
    assert_eq!(
        c.get_shard("s-1", Some((10, 100))).await.unwrap(),
        data.slice(10..110)
    );
    assert_eq!(
        c.get_shard_authenticated_within("s-1", data.len() as u64)
            .await
            .unwrap(),
        data
    );
    assert_eq!(short_circuit_reads(&provider), 0);
    // A whole shard the caller authenticates, of a known length: from its file.
    for _ in 0..3 {
        let got = c
            .get_shard_authenticated_exact("s-1", data.len() as u64)
            .await
            .unwrap();
        assert_eq!(got, data);
    }
    assert_eq!(short_circuit_reads(&provider), 3);
    // A length other than the shard's is DataLoss, as rot would be.
    let err = c
        .get_shard_authenticated_exact("s-1", data.len() as u64 - 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    let err = c
        .get_shard_authenticated_exact("nope", 10)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    // Not turned on in the client: gRPC.
    let plain = client(&provider, &gateway, None);
    assert!(!plain.short_circuits());
    plain
        .get_shard_authenticated_exact("s-1", data.len() as u64)
        .await
        .unwrap();
    // (The provider handed the file for the read of the wrong length too.)
    assert_eq!(short_circuit_reads(&provider), 4);
    provider.shutdown().await;

    // A provider with them turned off: the same reads come over gRPC.
    let dir = tempfile::tempdir().unwrap();
    let mut config = ProviderConfig::new(dir.path().join("data"));
    config.listen_unix = Some(dir.path().join("provider.sock"));
    config.allowed_clients = vec![gateway.node_id()];
    config.short_circuit = false;
    let off = server::start(config).await.unwrap();
    let c = client(&off, &gateway, None).with_short_circuit_reads(true);
    c.put_shard_expecting("s-1", data.clone(), hash)
        .await
        .unwrap();
    for _ in 0..2 {
        let got = c
            .get_shard_authenticated_exact("s-1", data.len() as u64)
            .await
            .unwrap();
        assert_eq!(got, data);
    }
    assert_eq!(short_circuit_reads(&off), 0);
    assert!(
        off.metrics.render().contains("GetShard"),
        "read over gRPC instead"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_circuit_connection_the_provider_closed_is_not_used_again() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Arc::new(NodeIdentity::generate());
    let mut config = ProviderConfig::new(dir.path().join("data"));
    config.listen_unix = Some(dir.path().join("provider.sock"));
    config.allowed_clients = vec![gateway.node_id()];
    // The provider closes a connection idle this long: the gateway keeps its end.
    config.idle_timeout = std::time::Duration::from_millis(300);
    let provider = server::start(config).await.unwrap();
    let c = client(&provider, &gateway, None).with_short_circuit_reads(true);
    let data = Bytes::from(vec![7u8; 100_000]);
    let hash = *blake3::hash(&data).as_bytes();
    c.put_shard_expecting("s-1", data.clone(), hash)
        .await
        .unwrap();
    let len = data.len() as u64;
    assert_eq!(
        c.get_shard_authenticated_exact("s-1", len).await.unwrap(),
        data
    );
    // The kept connection goes idle past the provider's timeout and is closed on its side:
    // the next read must not fail on it (a failed read counts the provider down).
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    assert_eq!(
        c.get_shard_authenticated_exact("s-1", len).await.unwrap(),
        data,
        "a read on a connection the provider closed failed"
    );
    assert_eq!(short_circuit_reads(&provider), 2, "not by short-circuit");
    provider.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_written_by_short_circuit_reads_back_over_grpc_and_an_off_provider_takes_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Arc::new(NodeIdentity::generate());
    let provider = start(dir.path(), vec![gateway.node_id()]).await;
    let c = client(&provider, &gateway, None).with_short_circuit_writes(true);
    let data: Bytes = (0..2_500_001u32)
        .map(|i| (i as u8).wrapping_mul(7) ^ (i >> 11) as u8)
        .collect::<Vec<_>>()
        .into();
    let hash = *blake3::hash(&data).as_bytes();
    let put = c
        .put_shard_expecting("w-1", data.clone(), hash)
        .await
        .unwrap();
    assert_eq!((put.hash, put.length), (hash, data.len() as u64));
    let writes = || provider.metrics.short_circuit_writes.get();
    assert_eq!(writes(), 1);
    let metrics = provider.metrics.render();
    assert!(
        !metrics.contains("method=\"PutShard\""),
        "went over gRPC: {metrics}"
    );
    // Read back over the checked gRPC path (the provider's hash check), and its stat.
    let plain = client(&provider, &gateway, None);
    assert_eq!(plain.get_shard("w-1", None).await.unwrap(), data);
    let stat = plain.stat_shard("w-1").await.unwrap();
    assert_eq!((stat.hash, stat.length), (hash, data.len() as u64));
    // A hash other than the bytes' is refused, and nothing is stored under the id.
    let mut wrong = hash;
    wrong[31] ^= 0x80;
    let err = c
        .put_shard_expecting("w-2", data.clone(), wrong)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert_eq!(
        plain.stat_shard("w-2").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // Not turned on in the client: gRPC.
    plain
        .put_shard_expecting("w-3", data.clone(), hash)
        .await
        .unwrap();
    assert_eq!(writes(), 1);
    provider.shutdown().await;

    // A provider with short-circuit off: the same write goes over gRPC and lands.
    let dir = tempfile::tempdir().unwrap();
    let mut config = ProviderConfig::new(dir.path().join("data"));
    config.listen_unix = Some(dir.path().join("provider.sock"));
    config.allowed_clients = vec![gateway.node_id()];
    config.short_circuit = false;
    let off = server::start(config).await.unwrap();
    let c = client(&off, &gateway, None).with_short_circuit_writes(true);
    for id in ["w-1", "w-2"] {
        let put = c.put_shard_expecting(id, data.clone(), hash).await.unwrap();
        assert_eq!(put.hash, hash);
    }
    assert_eq!(off.metrics.short_circuit_writes.get(), 0);
    assert!(
        off.metrics.render().contains("PutShard"),
        "written over gRPC"
    );
    assert_eq!(c.get_shard("w-2", None).await.unwrap(), data);
    off.shutdown().await;
}
