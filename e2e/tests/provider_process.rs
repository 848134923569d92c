//! The real `sublet-provider` binary: start-up, health and metrics, a crash in
//! the middle of a write, and a clean stop on SIGTERM.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sublet_e2e::{
    files_under, free_addr, http_get, provider_node_id, wait_http_ok, workspace_binary,
};
use sublet_provider::client::{ClientConfig, ErrorKind, ProviderClient};
use sublet_provider::identity::{NodeId, NodeIdentity};

const TOKEN: &str = "e2e-cluster-token";

struct Provider {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
}

/// Killed when dropped: a test that fails mid-way leaves no provider running.
impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Provider {
    let (grpc, http) = (free_addr(), free_addr());
    let child = Command::new(workspace_binary("sublet-provider", "sublet-provider"))
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--listen",
            &grpc.to_string(),
            "--http-listen",
            &http.to_string(),
        ])
        .args(["--capacity", "1Gi", "--token", TOKEN])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_http_ok(http, "/healthz", Duration::from_secs(20));
    Provider { child, grpc, http }
}

fn client(p: &Provider, id: NodeId) -> ProviderClient {
    let cfg = ClientConfig {
        identity: Arc::new(NodeIdentity::generate()),
        token: Some(TOKEN.into()),
    };
    ProviderClient::new(&p.grpc.to_string(), id, &cfg).unwrap()
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < timeout,
            "provider did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_metrics_survives_kill_mid_write_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let id = provider_node_id(dir.path());
    let mut provider = start(dir.path());

    let (status, metrics) = http_get(provider.http, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("sublet_provider_"), "{metrics}");

    // A shard written before the crash must survive it.
    let c = client(&provider, id);
    let kept = Bytes::from(vec![7u8; 300_000]);
    c.put_shard("kept.0.0", kept.clone()).await.unwrap();

    // Start a 64 MiB shard, send 2 MiB, then never finish.
    let stalled = client(&provider, id);
    let writer = tokio::spawn(async move {
        let head = futures::stream::iter(vec![Bytes::from(vec![1u8; 1 << 20]); 2]);
        let chunks = futures::StreamExt::chain(head, futures::stream::pending());
        stalled
            .put_shard_stream("partial.0.0", 64 << 20, None, chunks)
            .await
    });
    let temp_seen = {
        let start = Instant::now();
        loop {
            let temps = files_under(dir.path())
                .into_iter()
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(".tmp-")
                })
                .count();
            if temps > 0 || start.elapsed() > Duration::from_secs(10) {
                break temps > 0;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert!(temp_seen, "the partial write never reached the disk");
    signal(&provider.child, "-KILL");
    wait_exit(&mut provider.child, Duration::from_secs(10));
    assert!(
        writer.await.unwrap().is_err(),
        "a cut write must not be acknowledged"
    );

    // Restart on the same data dir: same identity, old shard intact, no partial shard, no temp file.
    let mut provider = start(dir.path());
    let c = client(&provider, id);
    assert_eq!(c.get_shard("kept.0.0", None).await.unwrap(), kept);
    let err = c.stat_shard("partial.0.0").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    let leftovers: Vec<_> = files_under(dir.path())
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .collect();
    assert!(leftovers.is_empty(), "stale temp files: {leftovers:?}");

    signal(&provider.child, "-TERM");
    let status = wait_exit(&mut provider.child, Duration::from_secs(20));
    assert!(
        status.success(),
        "SIGTERM should stop the provider cleanly: {status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_pinning_another_node_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut provider = start(dir.path());
    let wrong = NodeIdentity::generate().node_id();
    let err = client(&provider, wrong).info().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    signal(&provider.child, "-TERM");
    wait_exit(&mut provider.child, Duration::from_secs(20));
}
