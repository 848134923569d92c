//! A large shard streamed both ways over loopback TLS with bounded memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use sublet_provider::CHUNK_SIZE;
use sublet_provider::client::{ClientConfig, ProviderClient};
use sublet_provider::identity::NodeIdentity;
use sublet_provider::server::{self, ProviderConfig};

fn chunk(i: u64) -> Bytes {
    let mut buf = vec![0u8; CHUNK_SIZE];
    blake3::Hasher::new()
        .update(&i.to_le_bytes())
        .finalize_xof()
        .fill(&mut buf);
    Bytes::from(buf)
}

/// Peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

async fn stream_both_ways(mib: u64) {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Arc::new(NodeIdentity::generate());
    let mut config = ProviderConfig::new(dir.path());
    config.allowed_clients = vec![gateway.node_id()];
    config.capacity = (2 * mib) << 20;
    let provider = server::start(config).await.unwrap();
    let cfg = ClientConfig {
        identity: gateway,
        token: None,
    };
    let client =
        ProviderClient::new(&provider.grpc_addr.to_string(), provider.node_id, &cfg).unwrap();

    let mut expected = blake3::Hasher::new();
    for i in 0..mib {
        expected.update(&chunk(i));
    }
    let expected = *expected.finalize().as_bytes();

    let length = mib * CHUNK_SIZE as u64;
    let chunks = futures::stream::iter(0..mib).map(chunk);
    let put = client
        .put_shard_stream("large", length, Some(expected), chunks)
        .await
        .unwrap();
    assert_eq!(put.hash, expected);
    assert_eq!(put.length, length);

    let mut stream = std::pin::pin!(client.get_shard_stream("large", None).await.unwrap());
    let mut got = blake3::Hasher::new();
    let mut received = 0u64;
    while let Some(data) = stream.next().await {
        let data = data.unwrap();
        received += data.len() as u64;
        got.update(&data);
    }
    assert_eq!(received, length);
    assert_eq!(*got.finalize().as_bytes(), expected);

    let peak = peak_rss();
    assert!(
        peak < 192 << 20,
        "peak RSS {} MiB while streaming {mib} MiB both ways",
        peak >> 20
    );
    provider.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_256_mib_shard_streams_both_ways_in_bounded_memory() {
    stream_both_ways(256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: 1 GiB"]
async fn a_1_gib_shard_streams_both_ways_in_bounded_memory() {
    stream_both_ways(1024).await;
}
