//! PutShard and GetShard throughput of 4 MiB shards, 4 concurrent streams over
//! loopback TLS, next to a plain sequential write-with-fsync of the same bytes
//! to the same disk.
//!
//! `cargo run --release -p sublet-provider --example bench -- [shards] [dir]`
//! (default: 128 shards in a temp dir under the current directory).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sublet_provider::client::{ClientConfig, ProviderClient};
use sublet_provider::identity::NodeIdentity;
use sublet_provider::server::{self, ProviderConfig};

const SHARD: usize = 4 << 20;
const STREAMS: usize = 4;

fn shard(i: usize) -> Bytes {
    let mut buf = vec![0u8; SHARD];
    blake3::Hasher::new()
        .update(&(i as u64).to_le_bytes())
        .finalize_xof()
        .fill(&mut buf);
    Bytes::from(buf)
}

struct Row {
    name: &'static str,
    shards: usize,
    elapsed: Duration,
}

async fn concurrently<F, Fut>(
    shards: &Arc<Vec<Bytes>>,
    client: &ProviderClient,
    op: F,
) -> anyhow::Result<Duration>
where
    F: Fn(ProviderClient, usize, Bytes) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for stream in 0..STREAMS {
        let (client, shards, op) = (client.clone(), Arc::clone(shards), op.clone());
        tasks.push(tokio::spawn(async move {
            for i in (stream..shards.len()).step_by(STREAMS) {
                op(client.clone(), i, shards[i].clone()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(128);
    let base = args.next().unwrap_or_else(|| ".".into());
    let dir = tempfile::tempdir_in(&base)?;
    let shards: Arc<Vec<Bytes>> = Arc::new((0..count).map(shard).collect());

    let gateway = Arc::new(NodeIdentity::generate());
    let mut config = ProviderConfig::new(dir.path().join("provider"));
    config.allowed_clients = vec![gateway.node_id()];
    config.capacity = 2 * (count * SHARD) as u64 + (1 << 30);
    let provider = server::start(config).await?;
    let cfg = ClientConfig {
        identity: gateway,
        token: None,
    };
    let client = ProviderClient::new(&provider.grpc_addr.to_string(), provider.node_id, &cfg)?;
    client.info().await?; // connect and handshake outside the measurement

    let mut rows = Vec::new();

    // Baseline: the same bytes written sequentially, one file each, fsync'd.
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(&plain)?;
    let started = Instant::now();
    for (i, data) in shards.iter().enumerate() {
        let mut file = std::fs::File::create(plain.join(format!("{i}")))?;
        file.write_all(data)?;
        file.sync_all()?;
    }
    std::fs::File::open(&plain)?.sync_all()?;
    rows.push(Row {
        name: "plain write+fsync (sequential)",
        shards: count,
        elapsed: started.elapsed(),
    });

    let elapsed = concurrently(&shards, &client, |client, i, data| async move {
        client.put_shard(&format!("bench-{i}"), data).await?;
        Ok(())
    })
    .await?;
    rows.push(Row {
        name: "PutShard (4 streams, TLS)",
        shards: count,
        elapsed,
    });

    let elapsed = concurrently(&shards, &client, |client, i, data| async move {
        let got = client.get_shard(&format!("bench-{i}"), None).await?;
        anyhow::ensure!(got == data, "shard bench-{i} came back different");
        Ok(())
    })
    .await?;
    rows.push(Row {
        name: "GetShard (4 streams, TLS)",
        shards: count,
        elapsed,
    });

    println!(
        "{:<32} {:>7} {:>9} {:>9} {:>10}",
        "operation", "shards", "MiB", "seconds", "MiB/s"
    );
    for row in &rows {
        let mib = (row.shards * SHARD) as f64 / (1 << 20) as f64;
        let secs = row.elapsed.as_secs_f64();
        println!(
            "{:<32} {:>7} {:>9.0} {:>9.2} {:>10.1}",
            row.name,
            row.shards,
            mib,
            secs,
            mib / secs
        );
    }
    provider.shutdown().await;
    Ok(())
}
