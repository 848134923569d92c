//! Providers on the gateway's machine, reached over Unix sockets without TLS: objects
//! round-trip through `sublet serve` and separate `sublet-provider` processes, and another
//! process put on a provider's socket path (a provider with another node key, holding the
//! cluster token) gets nothing: the gateway's handshake pins the node id before it sends
//! the token or a byte of data.

use sublet_e2e::cluster::{Cluster, ClusterSpec, ProviderProcess, ProviderTransport, test_objects};

const PLAN: &str = "local";
const BUCKET: &str = "local";

/// 4+2 in 64 KiB segments, one shard per provider; a write commits with 5 shards of 6.
const POLICIES: &str = r#"
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: local}
spec:
  redundancy: {erasure: {dataShards: 4, parityShards: 2}}
  segmentSize: 64Ki
  writeQuorum: 5
  placement: {spreadBy: node, maxPerDomain: 1}
"#;

/// `providers` providers, each reached over its Unix socket, under one gateway.
fn over_unix_sockets(dir: &std::path::Path, providers: usize) -> Cluster {
    Cluster::start_with(
        dir,
        &ClusterSpec {
            transport: ProviderTransport::UnixSockets,
            ..ClusterSpec::one_gateway(providers, POLICIES, PLAN)
        },
    )
}

#[test]
fn sublet_serve_stores_and_reads_over_unix_sockets() {
    let tmp = tempfile::tempdir().unwrap();
    let c = over_unix_sockets(tmp.path(), 6);
    let config = std::fs::read_to_string(&c.gateways[0].config).unwrap();
    assert!(config.contains("address: \"unix:"), "{config}");
    c.create_bucket(BUCKET);
    let objects = test_objects("uds", 5, 300 << 10);
    for o in &objects {
        c.put(BUCKET, o);
    }
    c.assert_all_read_back(BUCKET, &objects);
    for i in 0..6 {
        assert!(c.shards_on(i) > 0, "provider {i} holds no shard");
        assert!(
            c.providers[i].socket.as_ref().unwrap().exists(),
            "provider {i}'s socket"
        );
    }
}

#[test]
fn another_process_on_a_providers_socket_gets_no_shard_and_no_token() {
    let tmp = tempfile::tempdir().unwrap();
    // One provider more than the stripe is wide: writes still place 6 shards once the
    // gateway counts provider 0 down.
    let mut c = over_unix_sockets(tmp.path(), 7);
    c.create_bucket(BUCKET);
    let before = test_objects("before", 3, 200 << 10);
    for o in &before {
        c.put(BUCKET, o);
    }
    // Provider 0 dies (its socket file stays behind); a real provider with another node
    // key, which would accept the cluster token, takes its socket path.
    c.providers[0].kill();
    let mut impostor = ProviderProcess::new(tmp.path(), 90);
    impostor.socket = c.providers[0].socket.clone();
    impostor.start();
    assert_ne!(impostor.node_id, c.providers[0].node_id);
    // Two probe intervals (2s): a gateway that believed the impostor would count provider 0
    // healthy again by now and place shards on it.
    std::thread::sleep(std::time::Duration::from_secs(5));

    let after = test_objects("after", 3, 200 << 10);
    for o in &after {
        c.put(BUCKET, o);
    }
    c.assert_all_read_back(BUCKET, &before);
    c.assert_all_read_back(BUCKET, &after);
    assert!(
        impostor.shard_files().is_empty(),
        "the impostor on the socket was given shards: {:?}",
        impostor.shard_files()
    );
}
