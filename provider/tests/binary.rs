//! The real `sublet-provider` binary: kill -9 mid-write leaves no partial
//! shard, and SIGTERM stops it cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use sublet_provider::client::{ClientConfig, ErrorKind, ProviderClient};
use sublet_provider::identity::{NodeId, NodeIdentity};

const TOKEN: &str = "binary-test-token";

/// Start the binary and wait for its "provider started" line.
fn spawn(dir: &Path) -> (Child, SocketAddr, NodeId) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sublet-provider"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--capacity",
            "1Gi",
        ])
        .arg("--data-dir")
        .arg(dir)
        .env("SUBLET_PROVIDER_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let line = loop {
        let line = lines
            .next()
            .expect("provider exited before starting")
            .unwrap();
        if line.contains("provider started") {
            break line;
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let field = |name: &str| {
        let at = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        line[at..].split_whitespace().next().unwrap().to_string()
    };
    (
        child,
        field("grpc_addr").parse().unwrap(),
        field("node_id").parse().unwrap(),
    )
}

fn client(addr: SocketAddr, node_id: NodeId) -> ProviderClient {
    let cfg = ClientConfig {
        identity: Arc::new(NodeIdentity::generate()),
        token: Some(TOKEN.into()),
    };
    ProviderClient::new(&addr.to_string(), node_id, &cfg).unwrap()
}

fn shard_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("shards"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn kill_9_mid_write_then_restart_shows_no_partial_shard() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, node_id) = spawn(dir.path());
    let c = client(addr, node_id);
    c.put_shard("whole", Bytes::from_static(b"complete shard"))
        .await
        .unwrap();

    let writer = c.clone();
    let put = tokio::spawn(async move {
        let chunks = futures::stream::iter(vec![Bytes::from(vec![1u8; 1 << 20])])
            .chain(futures::stream::pending());
        writer
            .put_shard_stream("partial", 8 << 20, None, chunks)
            .await
    });
    for _ in 0..100 {
        if shard_files(dir.path()).len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        shard_files(dir.path()).len(),
        2,
        "a temp file exists mid-write"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(put.await.unwrap().is_err());

    let (mut child, addr, again) = spawn(dir.path());
    assert_eq!(again, node_id, "identity survives restart");
    assert_eq!(shard_files(dir.path()), ["whole.shard"]);
    let c = client(addr, node_id);
    assert_eq!(
        c.stat_shard("partial").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        &c.get_shard("whole", None).await.unwrap()[..],
        b"complete shard"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Keep the runtime free so the client can close its connection on GOAWAY.
    drop(c);
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "SIGTERM exits cleanly: {exit:?}");
}
