//! `sublet serve` from a YAML file over real in-process providers, driven over HTTP with
//! SigV4-signed requests: keys and grants, placement refusals and metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;

use sublet_provider::server::{self, ProviderConfig, RunningProvider};
use support::{Client, Reply, exchange, http_exchange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "serve-test-token-0123456789";

async fn plain_get(addr: SocketAddr, path: &str) -> Reply {
    let head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    http_exchange(addr, head.as_bytes(), b"").await
}

async fn start_provider(dir: &Path) -> RunningProvider {
    let mut cfg = ProviderConfig::new(dir);
    cfg.token = Some(TOKEN.into());
    server::start(cfg).await.unwrap()
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 253) as u8).collect()
}

/// The value of a sample line such as `name{labels} 3`.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_runs_a_gateway_from_yaml() {
    let tmp = tempfile::tempdir().unwrap();
    // Four providers in pool home (two zones), two in pool far.
    let mut providers = Vec::new();
    for i in 0..6 {
        providers.push(start_provider(&tmp.path().join(format!("provider-{i}"))).await);
    }
    let endpoint = |i: usize, zone: &str| {
        format!(
            "    - {{name: p{i}, address: \"{}\", nodeId: \"{}\", zone: {zone}}}\n",
            providers[i].grpc_addr, providers[i].node_id
        )
    };
    let secret_file = tmp.path().join("reader.secret");
    std::fs::write(&secret_file, "reader-secret-0123456789\n").unwrap();
    let yaml = format!(
        r#"apiVersion: sublet.dev/v1alpha1
kind: ProviderPool
metadata: {{name: home}}
spec:
  class: owned
  endpoints:
{}{}{}{}---
apiVersion: sublet.dev/v1alpha1
kind: ProviderPool
metadata: {{name: far}}
spec:
  class: rented
  endpoints:
{}{}---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {{name: standard}}
spec:
  redundancy: {{erasure: {{dataShards: 2, parityShards: 1}}}}
  segmentSize: 64Ki
  placement:
    spreadBy: zone
    maxPerDomain: 1
    pools: [{{name: home, minShards: 2}}, {{name: far}}]
---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {{name: copies}}
spec:
  redundancy: {{replicas: 2}}
  segmentSize: 64Ki
  encryption: none
---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {{name: far-only}}
spec:
  redundancy: {{erasure: {{dataShards: 2, parityShards: 1}}}}
  segmentSize: 64Ki
  placement:
    pools: [{{name: far, minShards: 3}}]
---
apiVersion: sublet.dev/v1alpha1
kind: StorageGateway
metadata: {{name: s3}}
spec:
  defaultPlan: standard
  listen: "127.0.0.1:0"
  adminListen: "127.0.0.1:0"
  dataDir: "{}"
  providerToken: {TOKEN}
  credentials:
    - {{accessKey: admin, secretKey: admin-secret-0123456789}}
    - accessKey: reader
      secretKeyFile: "{}"
      buckets: [{{bucket: photos, access: read}}]
"#,
        endpoint(0, "h0"),
        endpoint(1, "h1"),
        endpoint(2, "h2"),
        endpoint(3, "h3"),
        endpoint(4, "f0"),
        endpoint(5, "f1"),
        tmp.path().join("gateway").display(),
        secret_file.display(),
    );
    let config_path = tmp.path().join("sublet.yaml");
    std::fs::write(&config_path, &yaml).unwrap();
    let config = sublet_crds::load_file(&config_path).unwrap_or_else(|e| panic!("{e}"));
    let running = sublet_gateway::runtime::start(&config, &Default::default())
        .await
        .unwrap();
    assert!(
        tmp.path().join("gateway/metadata.db").exists()
            && tmp.path().join("gateway/master.key").exists()
    );
    let admin = Client::admin(running.s3_addr);
    let reader = Client {
        addr: running.s3_addr,
        access_key: "reader".into(),
        secret_key: "reader-secret-0123456789".into(),
    };

    for bucket in ["/photos", "/private"] {
        let r = admin.send("PUT", bucket, &[], b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let body = data(150_000);
    let r = admin.send("PUT", "/photos/cat.jpg", &[], &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin.send("GET", "/photos/cat.jpg", &[], b"").await;
    assert_eq!(r.status, 200);
    assert!(r.body == body, "the object read back differs");
    let r = admin
        .send(
            "PUT",
            "/photos/notes.txt",
            &[("x-amz-storage-class", "copies")],
            b"hello",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A wrong secret is refused whatever the grants.
    let intruder = Client {
        addr: running.s3_addr,
        access_key: "admin".into(),
        secret_key: "not-the-secret-000000".into(),
    };
    assert_eq!(
        intruder
            .send("GET", "/photos/cat.jpg", &[], b"")
            .await
            .status,
        403
    );

    // The reader may read photos, nothing else.
    let r = reader.send("GET", "/photos/cat.jpg", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == body);
    let r = reader.send("PUT", "/photos/dog.jpg", &[], b"woof").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("<Code>AccessDenied</Code>"),
        "{}",
        r.text()
    );
    assert!(
        r.text().contains("may not write bucket photos"),
        "{}",
        r.text()
    );
    let r = reader.send("DELETE", "/photos/cat.jpg", &[], b"").await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = reader.send("GET", "/private?list-type=2", &[], b"").await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = reader.send("GET", "/", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("<Name>photos</Name>"), "{}", r.text());
    assert!(!r.text().contains("private"), "{}", r.text());
    let r = admin.send("GET", "/", &[], b"").await;
    assert!(r.text().contains("<Name>private</Name>"), "{}", r.text());
    let r = admin.send("HEAD", "/photos/dog.jpg", &[], b"").await;
    assert_eq!(r.status, 404, "the refused PUT must not store anything");

    // Pool far has 2 providers; a plan wanting 3 shards there is refused by name.
    let r = admin
        .send(
            "PUT",
            "/photos/big.raw",
            &[("x-amz-storage-class", "far-only")],
            b"xyz",
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains(
            "plan far-only: pool far needs at least 3 shards but only 2 healthy providers are available"
        ),
        "{}",
        r.text()
    );

    // Shards of the standard plan: at least 2 in home, one per zone.
    let home: Vec<String> = providers[..4]
        .iter()
        .map(|p| p.node_id.to_string())
        .collect();

    // Metrics moved.
    let admin_addr = running.admin_addr.unwrap();
    let health = plain_get(admin_addr, "/healthz").await;
    assert_eq!(health.status, 200);
    let scrape = plain_get(admin_addr, "/metrics").await;
    assert_eq!(scrape.status, 200);
    let m = scrape.text();
    assert_eq!(
        sample(
            &m,
            "sublet_gateway_requests_total{op=\"PutObject\",status=\"200\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            "sublet_gateway_requests_total{op=\"PutObject\",status=\"403\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "sublet_gateway_requests_total{op=\"PutObject\",status=\"503\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "sublet_gateway_requests_total{op=\"GetObject\",status=\"200\"}"
        ),
        2.0
    );
    assert!(sample(&m, "sublet_gateway_received_bytes_total{op=\"PutObject\"}") >= 150_005.0);
    assert!(sample(&m, "sublet_gateway_sent_bytes_total{op=\"GetObject\"}") >= 300_000.0);
    assert_eq!(
        sample(
            &m,
            "sublet_gateway_request_duration_seconds_count{op=\"GetObject\"}"
        ),
        2.0
    );
    // 150 000 bytes in 64 KiB segments: 3 segments of 3 shards, plus 2 replicas of notes;
    // besides, copies of metadata journal segments (one per change or group of changes).
    let total = |series: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with(series))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let writes = total("sublet_gateway_shard_writes_total{");
    let journal_copies = total("sublet_gateway_journal_copies_total{");
    assert!(journal_copies >= 3.0, "{m}");
    assert_eq!(writes - journal_copies, 11.0, "{m}");
    assert_eq!(
        total("sublet_gateway_journal_segments_total{result=\"failed\"}"),
        0.0,
        "{m}"
    );
    assert!(total("sublet_gateway_journal_entries_total") >= 4.0, "{m}");
    let home_writes: f64 = home
        .iter()
        .filter_map(|id| {
            m.lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "sublet_gateway_shard_writes_total{{provider=\"{id}\"}}"
                    ))
                })
                .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        })
        .sum();
    assert!(
        home_writes >= 6.0,
        "pool home holds at least 2 of 3 shards of each segment: {m}"
    );
    assert_eq!(
        sample(&m, "sublet_gateway_plan_objects{plan=\"standard\"}"),
        1.0
    );
    assert_eq!(
        sample(&m, "sublet_gateway_plan_bytes{plan=\"standard\"}"),
        150_000.0
    );
    assert_eq!(
        sample(&m, "sublet_gateway_plan_objects{plan=\"copies\"}"),
        1.0
    );

    // Two home providers go away: once probed, new objects avoid them; a third leaves
    // pool home short of its minimum and PUTs are refused by name.
    let mut gone = Vec::new();
    for _ in 0..2 {
        let p = providers.remove(0);
        gone.push(p.node_id.to_string());
        p.shutdown().await;
    }
    running.probe_now().await;
    for n in 0..4 {
        let r = admin
            .send("PUT", &format!("/photos/after-{n}"), &[], &data(1000))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let m = plain_get(admin_addr, "/metrics").await.text();
    for id in &gone {
        let series = format!("sublet_gateway_shard_writes_total{{provider=\"{id}\"}}");
        let before = value_or_zero(&scrape.text(), &series);
        assert_eq!(
            value_or_zero(&m, &series),
            before,
            "{id} got shards after it went away"
        );
    }
    providers.remove(0).shutdown().await;
    running.probe_now().await;
    let r = admin.send("PUT", "/photos/refused", &[], b"abc").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains(
            "plan standard: pool home needs at least 2 shards but only 1 healthy provider is available (3 unhealthy skipped)"
        ),
        "{}",
        r.text()
    );

    running.shutdown().await;
    for p in providers {
        p.shutdown().await;
    }
}

/// A sample's value, 0 when the series is absent.
fn value_or_zero(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map_or(0.0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_endpoints_without_a_pinned_node_id() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"apiVersion: sublet.dev/v1alpha1
kind: ProviderPool
metadata: {{name: home}}
spec:
  class: owned
  endpoints: [{{name: nas, address: "127.0.0.1:7480"}}]
---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {{name: one}}
spec:
  redundancy: {{replicas: 1}}
---
apiVersion: sublet.dev/v1alpha1
kind: StorageGateway
metadata: {{name: s3}}
spec:
  defaultPlan: one
  listen: "127.0.0.1:0"
  dataDir: "{}"
  credentials: [{{accessKey: admin, secretKey: admin-secret-0123456789}}]
"#,
        tmp.path().display()
    );
    let config = sublet_crds::load_str("sublet.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
    let err = sublet_gateway::runtime::start(&config, &Default::default())
        .await
        .err()
        .expect("serve must refuse an unpinned provider")
        .to_string();
    assert!(
        err.starts_with("ProviderPool home: endpoint nas: nodeId is missing"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_speaks_https_when_tls_is_set() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(tmp.path().join("s3.crt"), cert.cert.pem()).unwrap();
    std::fs::write(tmp.path().join("s3.key"), cert.signing_key.serialize_pem()).unwrap();
    let yaml = format!(
        r#"apiVersion: sublet.dev/v1alpha1
kind: ProviderPool
metadata: {{name: home}}
spec:
  class: owned
  endpoints: [{{name: nas, address: "127.0.0.1:9", nodeId: "00000000000000000000000000000001"}}]
---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {{name: one}}
spec:
  redundancy: {{replicas: 1}}
---
apiVersion: sublet.dev/v1alpha1
kind: StorageGateway
metadata: {{name: s3}}
spec:
  defaultPlan: one
  listen: "127.0.0.1:0"
  dataDir: "{dir}"
  tls: {{certFile: "{dir}/s3.crt", keyFile: "{dir}/s3.key"}}
  credentials: [{{accessKey: admin, secretKey: admin-secret-0123456789}}]
"#,
        dir = tmp.path().display()
    );
    let config = sublet_crds::load_str("sublet.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
    let running = sublet_gateway::runtime::start(&config, &Default::default())
        .await
        .unwrap();
    assert!(running.tls);
    let admin = Client::admin(running.s3_addr);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(running.s3_addr)
        .await
        .unwrap();
    let stream = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (head, body) = admin.sign("GET", "/", &[], b"");
    let r = exchange(stream, head.as_bytes(), &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("ListAllMyBucketsResult"), "{}", r.text());

    // Plain HTTP on the TLS port gets no S3 answer.
    let mut tcp = tokio::net::TcpStream::connect(running.s3_addr)
        .await
        .unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut raw)).await;
    assert!(
        !raw.starts_with(b"HTTP/"),
        "plain HTTP was answered on the HTTPS port"
    );
    running.shutdown().await;
}

/// The seam between the operator and the gateway: the config the operator renders into a
/// gateway's ConfigMap (in-cluster pool members pinned by node id, keys from the
/// environment) is what `sublet serve` runs. Only the pod's paths and the listen address
/// are swapped for the test's; everything else is used as rendered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_runs_the_config_the_operator_renders() {
    use sublet_crds::{PoolMember, ProviderPool, ProviderPoolStatus, StorageGateway, StoragePlan};
    use sublet_operator::render::config::{self as rendered, Inventory};

    let tmp = tempfile::tempdir().unwrap();
    let mut providers = Vec::new();
    for i in 0..3 {
        providers.push(start_provider(&tmp.path().join(format!("provider-{i}"))).await);
    }
    let mut pool: ProviderPool = serde_yaml::from_str(
        "apiVersion: sublet.dev/v1alpha1\nkind: ProviderPool\nmetadata: {name: home-lab, namespace: storage}\n\
         spec:\n  class: owned\n  nodes:\n    selector: {matchLabels: {sublet.dev/provider: \"true\"}}\n    \
         storage: {hostPath: /var/lib/sublet, capacity: 10Gi}\n",
    )
    .unwrap();
    // What the pool controller collects from the provider pods.
    pool.status = Some(ProviderPoolStatus {
        members: providers
            .iter()
            .enumerate()
            .map(|(i, p)| PoolMember {
                name: format!("node-{i}"),
                node_id: p.node_id.to_string(),
                address: format!("https://{}", p.grpc_addr),
                zone: format!("zone-{i}"),
                ready: true,
                ..PoolMember::default()
            })
            .collect(),
        ..ProviderPoolStatus::default()
    });
    let plan: StoragePlan = serde_yaml::from_str(
        "apiVersion: sublet.dev/v1alpha1\nkind: StoragePlan\nmetadata: {name: scratch, namespace: storage}\n\
         spec:\n  redundancy: {erasure: {dataShards: 2, parityShards: 1}}\n  segmentSize: 64Ki\n  \
         placement: {spreadBy: zone, maxPerDomain: 1, pools: [{name: home-lab}]}\n",
    )
    .unwrap();
    let gateway: StorageGateway = serde_yaml::from_str(
        "apiVersion: sublet.dev/v1alpha1\nkind: StorageGateway\nmetadata: {name: s3, namespace: storage}\n\
         spec: {defaultPlan: scratch}\n",
    )
    .unwrap();
    let pools = [pool];
    let plans = [plan];
    let out = rendered::render_config(
        &gateway,
        Inventory {
            pools: &pools,
            plans: &plans,
            schedules: &[],
        },
    )
    .unwrap();
    assert!(out.excluded.is_empty(), "{:?}", out.excluded);
    assert!(out.yaml.contains(GATEWAY_ADMIN_LISTEN), "{}", out.yaml);

    let master_key = tmp.path().join("master.key");
    let yaml = out
        .yaml
        .replace(
            &format!("{}/{}", rendered::KEYS_DIR, rendered::MASTER_KEY_FILE),
            &master_key.display().to_string(),
        )
        .replace("0.0.0.0:9000", "127.0.0.1:0");
    let config = sublet_crds::load_str("rendered.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
    // The pod's environment: keys and the provider token from Secrets.
    let overrides = sublet_gateway::runtime::Overrides {
        data_dir: Some(tmp.path().join("gateway")),
        provider_token: Some(TOKEN.into()),
        full_access_key: Some(("operator-key".into(), "operator-secret-0123456789".into())),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    let running = sublet_gateway::runtime::start(&config, &overrides)
        .await
        .unwrap();
    assert_eq!(running.providers.len(), 3);
    let client = Client {
        addr: running.s3_addr,
        access_key: "operator-key".into(),
        secret_key: "operator-secret-0123456789".into(),
    };
    let r = client.send("PUT", "/from-k8s", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = data(200_000);
    let r = client.send("PUT", "/from-k8s/obj", &[], &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = client.send("GET", "/from-k8s/obj", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == body, "the object read back differs");
    // EC 2+1 over exactly three providers: every provider holds a shard, so every
    // rendered address and pinned node id was usable.
    let used: Vec<String> = running.providers.clone();
    for p in &providers {
        assert!(
            used.contains(&p.node_id.to_string()),
            "{} not configured",
            p.node_id
        );
    }
    let admin = running
        .admin_addr
        .expect("the rendered config asks for the admin listener");
    let r = plain_get(admin, "/healthz").await;
    assert_eq!(r.status, 200);
    // The operator's admin client understands what this gateway answers: plan status and
    // the pool finalizer depend on it.
    use sublet_operator::admin::{AdminApi, HttpAdmin};
    let url = format!("http://{admin}");
    let health = HttpAdmin::default()
        .plan_health(&url, "scratch")
        .await
        .unwrap();
    assert_eq!(health.plan, "scratch");
    assert_eq!(health.objects, 1, "{health:?}");
    assert_eq!(health.logical_bytes, body.len() as u64, "{health:?}");
    assert_eq!(
        health.shards.healthy,
        3 * 4,
        "EC 2+1, four 64 KiB segments: {health:?}"
    );
    assert_eq!(health.shards.lost + health.shards.degraded, 0, "{health:?}");
    assert_eq!(health.repair.due, 0, "{health:?}");
    let usage = HttpAdmin::default()
        .pool_usage(&url, "home-lab")
        .await
        .unwrap();
    assert_eq!(usage.shards, 12, "{usage:?}");
    assert!(usage.bytes >= body.len() as u64, "{usage:?}");
    running.shutdown().await;
    for p in providers {
        p.shutdown().await;
    }
}

/// Where the operator's gateway pods serve `/healthz` and `/metrics`.
const GATEWAY_ADMIN_LISTEN: &str = "0.0.0.0:9001";

/// Three providers and the file of a gateway on them (EC 2+1, SQLite metadata in
/// `<dir>/gateway`): what the recovery tests lose the disk of.
async fn recoverable_gateway(
    dir: &Path,
) -> (
    Vec<RunningProvider>,
    sublet_crds::Config,
    std::path::PathBuf,
) {
    let mut providers = Vec::new();
    for i in 0..3 {
        providers.push(start_provider(&dir.join(format!("provider-{i}"))).await);
    }
    let endpoints: String = providers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "    - {{name: p{i}, address: \"{}\", nodeId: \"{}\"}}\n",
                p.grpc_addr, p.node_id
            )
        })
        .collect();
    let data_dir = dir.join("gateway");
    let yaml = format!(
        "apiVersion: sublet.dev/v1alpha1\nkind: ProviderPool\nmetadata: {{name: home}}\n\
         spec:\n  class: owned\n  endpoints:\n{endpoints}---\n\
         apiVersion: sublet.dev/v1alpha1\nkind: StoragePlan\nmetadata: {{name: standard}}\n\
         spec:\n  redundancy: {{erasure: {{dataShards: 2, parityShards: 1}}}}\n  segmentSize: 64Ki\n---\n\
         apiVersion: sublet.dev/v1alpha1\nkind: StoragePlan\nmetadata: {{name: tiny}}\n\
         spec:\n  redundancy: {{erasure: {{dataShards: 2, parityShards: 1}}}}\n  inlineUpTo: 4Ki\n---\n\
         apiVersion: sublet.dev/v1alpha1\nkind: StorageGateway\nmetadata: {{name: s3}}\n\
         spec:\n  defaultPlan: standard\n  listen: \"127.0.0.1:0\"\n  adminListen: \"127.0.0.1:0\"\n  \
         dataDir: \"{}\"\n  providerToken: {TOKEN}\n  credentials:\n    - {{accessKey: admin, secretKey: admin-secret-0123456789}}\n",
        data_dir.display()
    );
    let config = sublet_crds::load_str("sublet.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
    (providers, config, data_dir)
}

/// Deletes the gateway's SQLite metadata (and its WAL), as a lost disk would.
fn lose_metadata(data_dir: &Path) {
    for f in ["metadata.db", "metadata.db-wal", "metadata.db-shm"] {
        let _ = std::fs::remove_file(data_dir.join(f));
    }
}

/// Losing the gateway's disk (all but the master key) loses no acknowledged write:
/// `sublet recover` rebuilds the metadata from the newest snapshot on the providers and
/// replays the metadata journal written after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metadata_is_recovered_from_snapshots_on_providers() {
    let tmp = tempfile::tempdir().unwrap();
    let (providers, config, data_dir) = recoverable_gateway(tmp.path()).await;
    let overrides = sublet_gateway::runtime::Overrides::default();

    // Nothing to recover from yet: a clear error, and nothing written.
    let err = sublet_gateway::runtime::recover(&config, &overrides, false, false)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("master key") && err.to_string().contains("missing"),
        "{err:#}"
    );

    let running = sublet_gateway::runtime::start(&config, &overrides)
        .await
        .unwrap();
    let client = Client::admin(running.s3_addr);
    assert_eq!(client.send("PUT", "/photos", &[], b"").await.status, 200);
    let body = data(150_000);
    assert_eq!(
        client.send("PUT", "/photos/a.jpg", &[], &body).await.status,
        200
    );
    for key in ["b.jpg", "gone.jpg"] {
        let path = format!("/photos/{key}");
        assert_eq!(client.send("PUT", &path, &[], b"old").await.status, 200);
    }
    // Small objects of a plan that keeps them in metadata: in the snapshot, and after it
    // only in the journal.
    let tiny = [("x-amz-storage-class", "tiny")];
    let note = data(4096);
    let r = client.send("PUT", "/photos/note.txt", &tiny, &note).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Four snapshots; the three newest are kept.
    for _ in 0..4 {
        running.snapshot_now().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let manifests =
        sublet_gateway::upkeep::snapshot::manifest_ids(&running_clients(&providers)).await;
    assert_eq!(manifests.len(), 3, "{manifests:?}");
    // Every kept snapshot contains the changes so far: their journal segments are gone.
    let installation = running.gateway.installation().to_owned();
    let journal = || async {
        sublet_gateway::meta::journal::list_segments(&installation, &running_clients(&providers))
            .await
    };
    let (segments, _) = journal().await;
    assert!(segments.is_empty(), "not trimmed: {segments:?}");
    // Changed after the last snapshot: written, overwritten, deleted, a new bucket with a
    // striped object. Each answer came after its change was in the journal.
    let striped = data(200_000);
    for (method, path, body, status) in [
        ("PUT", "/photos/late.jpg", &b"late"[..], 200),
        ("PUT", "/photos/b.jpg", b"new", 200),
        ("DELETE", "/photos/gone.jpg", b"", 204),
        ("PUT", "/later", b"", 200),
        ("PUT", "/later/striped.bin", &striped, 200),
    ] {
        let r = client.send(method, path, &[], body).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
    }
    let late_note = data(3000);
    let r = client
        .send("PUT", "/later/note.txt", &tiny, &late_note)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let node_before = running.identity;
    let (segments, _) = journal().await;
    assert!(!segments.is_empty());
    for (id, holders) in &segments {
        assert_eq!(
            holders.len(),
            3,
            "{id} is not on every provider: {holders:?}"
        );
    }
    running.shutdown().await;

    // The disk is lost, the master key was backed up.
    let metadata = data_dir.join("metadata.db");
    assert!(metadata.exists());
    let err = sublet_gateway::runtime::recover(&config, &overrides, false, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exists"), "{err:#}");
    lose_metadata(&data_dir);
    // The node key went with the disk: the master key makes the same node again.
    std::fs::remove_dir_all(data_dir.join("identity")).unwrap();
    let done = sublet_gateway::runtime::recover(&config, &overrides, false, false)
        .await
        .unwrap();
    assert_eq!(done.path, metadata);
    // The journal brought back every change after the snapshot: nothing is left unnamed.
    let replayed = &done.replayed;
    assert!(replayed.segments >= 1, "{replayed:?}");
    assert_eq!(replayed.applied, 6, "{replayed:?}");
    assert!(
        replayed.unreadable.is_empty()
            && replayed.failed.is_empty()
            && replayed.unlisted.is_empty(),
        "{replayed:?}"
    );
    assert_eq!(done.after.writes, 0, "{:?}", done.after);
    assert!(done.after.unlisted.is_empty(), "{:?}", done.after);

    let running = sublet_gateway::runtime::start(&config, &overrides)
        .await
        .unwrap();
    let client = Client::admin(running.s3_addr);
    let r = client.send("GET", "/photos/a.jpg", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == body, "the recovered object differs");
    for (path, want) in [
        ("/photos/late.jpg", &b"late"[..]),
        ("/photos/b.jpg", b"new"),
        ("/later/striped.bin", &striped),
        ("/photos/note.txt", &note),
        ("/later/note.txt", &late_note),
    ] {
        let r = client.send("GET", path, &[], b"").await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(r.body == want, "{path} differs after recovery");
    }
    let r = client.send("GET", "/photos/gone.jpg", &[], b"").await;
    assert_eq!(r.status, 404, "deleted after the snapshot: {}", r.text());
    assert_eq!(
        running.identity, node_before,
        "the recovered gateway is another node"
    );
    running.shutdown().await;

    // Started on an empty disk again (a volume lost with its node), the gateway does not
    // serve empty buckets: it recovers first, by itself.
    lose_metadata(&data_dir);
    let running = sublet_gateway::runtime::start(&config, &overrides)
        .await
        .unwrap();
    let client = Client {
        addr: running.s3_addr,
        ..client
    };
    for (path, want) in [
        ("/photos/a.jpg", &body[..]),
        ("/photos/late.jpg", b"late"),
        ("/later/striped.bin", &striped),
    ] {
        let r = client.send("GET", path, &[], b"").await;
        assert!(r.status == 200 && r.body == want, "{path}: {}", r.status);
    }
    running.shutdown().await;
    for p in providers {
        p.shutdown().await;
    }
}

/// A request to the admin API with the test's token.
async fn admin(addr: SocketAddr, method: &str, path: &str, body: &str) -> Reply {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         authorization: Bearer {ADMIN_TOKEN}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    http_exchange(addr, head.as_bytes(), body.as_bytes()).await
}

const ADMIN_TOKEN: &str = "recover-admin-token-0123456789";

/// An installation younger than its first snapshot keeps its whole history in the
/// journal: losing the disk then still loses no acknowledged write, nor the plans applied
/// through the admin API.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disk_lost_before_the_first_snapshot_is_rebuilt_from_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let (providers, config, data_dir) = recoverable_gateway(tmp.path()).await;
    let overrides = sublet_gateway::runtime::Overrides {
        admin_token: Some(ADMIN_TOKEN.into()),
        ..Default::default()
    };
    let running = sublet_gateway::runtime::start(&config, &overrides)
        .await
        .unwrap();
    let client = Client::admin(running.s3_addr);
    let a = running.admin_addr.unwrap();
    let r = admin(
        a,
        "PUT",
        "/admin/v1/policy/plans/mirror",
        "spec: {redundancy: {replicas: 2}}",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(client.send("PUT", "/young", &[], b"").await.status, 200);
    let r = client
        .send(
            "PUT",
            "/young/mirrored.txt",
            &[("x-amz-storage-class", "mirror")],
            b"two copies",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = data(150_000);
    for key in ["kept.bin", "gone.bin"] {
        let path = format!("/young/{key}");
        assert_eq!(client.send("PUT", &path, &[], &body).await.status, 200);
    }
    assert_eq!(
        client
            .send("DELETE", "/young/gone.bin", &[], b"")
            .await
            .status,
        204
    );
    running.shutdown().await;
    assert!(
        sublet_gateway::upkeep::snapshot::manifest_ids(&running_clients(&providers))
            .await
            .is_empty(),
        "no snapshot is due in the first interval"
    );

    lose_metadata(&data_dir);
    std::fs::remove_file(data_dir.join("policies.yaml")).unwrap();
    let done = sublet_gateway::runtime::recover(&config, &overrides, false, false)
        .await
        .unwrap();
    assert!(done.manifest.is_none());
    // The plan, the bucket, three writes and a delete.
    assert_eq!(done.replayed.applied, 6, "{:?}", done.replayed);
    assert_eq!(done.overlay, Some(data_dir.join("policies.yaml")));
    assert_eq!(done.after.writes, 0, "{:?}", done.after);

    let running = sublet_gateway::runtime::start(&config, &overrides)
        .await
        .unwrap();
    let client = Client {
        addr: running.s3_addr,
        ..client
    };
    let r = client.send("GET", "/young/kept.bin", &[], b"").await;
    assert!(r.status == 200 && r.body == body, "{}", r.status);
    let r = client.send("GET", "/young/gone.bin", &[], b"").await;
    assert_eq!(r.status, 404);
    let r = client.send("GET", "/young/mirrored.txt", &[], b"").await;
    assert!(r.status == 200 && r.body == b"two copies", "{}", r.text());
    let r = admin(
        running.admin_addr.unwrap(),
        "GET",
        "/admin/v1/policy/plans/mirror",
        "",
    )
    .await;
    assert_eq!(r.status, 200, "the applied plan came back: {}", r.text());
    running.shutdown().await;
    for p in providers {
        p.shutdown().await;
    }
}

/// Clients of the test's providers, as the gateway connects to them.
fn running_clients(
    providers: &[RunningProvider],
) -> Vec<(String, sublet_provider::client::ProviderClient)> {
    let identity = std::sync::Arc::new(sublet_provider::identity::NodeIdentity::generate());
    let cfg = sublet_provider::client::ClientConfig {
        identity,
        token: Some(TOKEN.into()),
    };
    providers
        .iter()
        .map(|p| {
            (
                p.node_id.to_string(),
                sublet_provider::client::ProviderClient::new(
                    &p.grpc_addr.to_string(),
                    p.node_id,
                    &cfg,
                )
                .unwrap(),
            )
        })
        .collect()
}

/// An S3 bucket as a provider: another S3 server (here a second sublet) stands in for a
/// cloud account. One plan spreads each stripe over two own providers and the bucket;
/// the bucket holds only ciphertext shards under its prefix, and reads survive losing a
/// provider by using the bucket's shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buckets_on_another_s3_server_hold_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let mut providers = Vec::new();
    for i in 0..5 {
        providers.push(start_provider(&tmp.path().join(format!("provider-{i}"))).await);
    }
    let endpoint = |i: usize, zone: &str| {
        format!(
            "    - {{name: p{i}, address: \"{}\", nodeId: \"{}\", zone: {zone}}}\n",
            providers[i].grpc_addr, providers[i].node_id
        )
    };
    // The "cloud": its own gateway over providers 2..5.
    let cloud_yaml = format!(
        "apiVersion: sublet.dev/v1alpha1\nkind: ProviderPool\nmetadata: {{name: dc}}\n\
         spec:\n  class: owned\n  endpoints:\n{}{}{}---\n\
         apiVersion: sublet.dev/v1alpha1\nkind: StoragePlan\nmetadata: {{name: standard}}\n\
         spec:\n  redundancy: {{erasure: {{dataShards: 2, parityShards: 1}}}}\n  segmentSize: 64Ki\n---\n\
         apiVersion: sublet.dev/v1alpha1\nkind: StorageGateway\nmetadata: {{name: cloud}}\n\
         spec:\n  defaultPlan: standard\n  listen: \"127.0.0.1:0\"\n  dataDir: \"{}\"\n  \
         providerToken: {TOKEN}\n  credentials:\n    - {{accessKey: CLOUDKEY, secretKey: cloud-secret-0123456789}}\n",
        endpoint(2, "c0"),
        endpoint(3, "c1"),
        endpoint(4, "c2"),
        tmp.path().join("cloud").display()
    );
    let cloud_config =
        sublet_crds::load_str("cloud.yaml", &cloud_yaml).unwrap_or_else(|e| panic!("{e}"));
    let cloud = sublet_gateway::runtime::start(&cloud_config, &Default::default())
        .await
        .unwrap();
    let cloud_client = Client {
        addr: cloud.s3_addr,
        access_key: "CLOUDKEY".into(),
        secret_key: "cloud-secret-0123456789".into(),
    };
    assert_eq!(
        cloud_client.send("PUT", "/spare", &[], b"").await.status,
        200
    );

    let secret_file = tmp.path().join("cloud.secret");
    std::fs::write(&secret_file, "cloud-secret-0123456789\n").unwrap();
    let yaml = format!(
        "apiVersion: sublet.dev/v1alpha1\nkind: ProviderPool\nmetadata: {{name: home}}\n\
         spec:\n  class: owned\n  endpoints:\n{}{}---\n\
         apiVersion: sublet.dev/v1alpha1\nkind: ProviderPool\nmetadata: {{name: cloud}}\n\
         spec:\n  class: cloud\n  buckets:\n    - {{name: spare, endpoint: \"http://{}\", bucket: spare, \
         accessKey: CLOUDKEY, secretKeyFile: \"{}\", zone: cloud-a}}\n---\n\
         apiVersion: sublet.dev/v1alpha1\nkind: StoragePlan\nmetadata: {{name: standard}}\n\
         spec:\n  redundancy: {{erasure: {{dataShards: 2, parityShards: 1}}}}\n  segmentSize: 64Ki\n  \
         placement: {{spreadBy: zone, maxPerDomain: 1, pools: [{{name: home}}, {{name: cloud, maxShards: 1}}]}}\n---\n\
         apiVersion: sublet.dev/v1alpha1\nkind: StorageGateway\nmetadata: {{name: s3}}\n\
         spec:\n  defaultPlan: standard\n  listen: \"127.0.0.1:0\"\n  dataDir: \"{}\"\n  \
         providerToken: {TOKEN}\n  credentials:\n    - {{accessKey: admin, secretKey: admin-secret-0123456789}}\n",
        endpoint(0, "h0"),
        endpoint(1, "h1"),
        cloud.s3_addr,
        secret_file.display(),
        tmp.path().join("gateway").display()
    );
    let config = sublet_crds::load_str("sublet.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
    let running = sublet_gateway::runtime::start(&config, &Default::default())
        .await
        .unwrap();
    let client = Client::admin(running.s3_addr);
    assert_eq!(client.send("PUT", "/photos", &[], b"").await.status, 200);
    let body = data(200_000);
    let r = client.send("PUT", "/photos/cat.jpg", &[], &body).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // One shard per segment (4 segments) went to the bucket, as objects under the prefix.
    let listed = cloud_client
        .send(
            "GET",
            "/spare?list-type=2&prefix=sublet-shards%2F",
            &[],
            b"",
        )
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(
        listed.text().matches("<Key>sublet-shards/").count(),
        4,
        "{}",
        listed.text()
    );
    assert!(
        !listed.text().contains("cat.jpg"),
        "shard names must not reveal object names"
    );

    // A home provider dies: the bucket's shards make up for it.
    let dead = providers.remove(0);
    dead.shutdown().await;
    let r = client.send("GET", "/photos/cat.jpg", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == body, "the object read back differs");

    // Deleting the object deletes its shards in the bucket.
    assert_eq!(
        client
            .send("DELETE", "/photos/cat.jpg", &[], b"")
            .await
            .status,
        204
    );
    let listed = cloud_client
        .send(
            "GET",
            "/spare?list-type=2&prefix=sublet-shards%2F",
            &[],
            b"",
        )
        .await;
    assert!(!listed.text().contains("<Key>"), "{}", listed.text());

    running.shutdown().await;
    cloud.shutdown().await;
    for p in providers {
        p.shutdown().await;
    }
}

/// Users and keys made through the admin API live in the metadata store: a disk lost
/// before the first snapshot gives them back from the journal, the key's state (disabled)
/// and the bucket's owner with them; the configuration file's key works throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_and_keys_survive_a_lost_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let (providers, config, data_dir) = recoverable_gateway(tmp.path()).await;
    let overrides = sublet_gateway::runtime::Overrides {
        admin_token: Some(ADMIN_TOKEN.into()),
        ..Default::default()
    };
    let running = sublet_gateway::runtime::start(&config, &overrides)
        .await
        .unwrap();
    let a = running.admin_addr.unwrap();
    let r = admin(a, "PUT", "/admin/v1/users/alice", r#"{"maxObjects": 5}"#).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = admin(
        a,
        "POST",
        "/admin/v1/keys",
        r#"{"user": "alice", "accessKey": "ALICEKEY", "secretKey": "alice-secret-0123456789", "grants": ["alices:rw"]}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = admin(
        a,
        "POST",
        "/admin/v1/keys",
        r#"{"user": "alice", "accessKey": "ALICEOLD", "secretKey": "alice-old-secret-0123", "grants": ["*:r"]}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        admin(a, "POST", "/admin/v1/keys/ALICEOLD/disable", "")
            .await
            .status,
        200
    );
    let alice = Client {
        addr: running.s3_addr,
        access_key: "ALICEKEY".into(),
        secret_key: "alice-secret-0123456789".into(),
    };
    assert_eq!(alice.send("PUT", "/alices", &[], b"").await.status, 200);
    assert_eq!(
        alice
            .send("PUT", "/alices/a.txt", &[], b"hello")
            .await
            .status,
        200
    );
    running.shutdown().await;

    lose_metadata(&data_dir);
    let _ = std::fs::remove_file(data_dir.join("policies.yaml"));
    let done = sublet_gateway::runtime::recover(&config, &overrides, false, false)
        .await
        .unwrap();
    assert!(done.replayed.failed.is_empty(), "{:?}", done.replayed);

    let running = sublet_gateway::runtime::start(&config, &overrides)
        .await
        .unwrap();
    let alice = Client {
        addr: running.s3_addr,
        ..alice
    };
    let r = alice.send("GET", "/alices/a.txt", &[], b"").await;
    assert!(r.status == 200 && r.body == b"hello", "{}", r.text());
    let old = Client {
        addr: running.s3_addr,
        access_key: "ALICEOLD".into(),
        secret_key: "alice-old-secret-0123".into(),
    };
    let r = old.send("GET", "/alices/a.txt", &[], b"").await;
    assert_eq!(
        r.status,
        403,
        "the disabled key stays disabled: {}",
        r.text()
    );
    let r = admin(
        running.admin_addr.unwrap(),
        "GET",
        "/admin/v1/users/alice",
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let user: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(user["maxObjects"], 5, "{user}");
    assert_eq!(user["objects"], 1, "the bucket is still alice's: {user}");
    let admin_key = Client::admin(running.s3_addr);
    assert_eq!(
        admin_key
            .send("GET", "/alices/a.txt", &[], b"")
            .await
            .status,
        200
    );
    running.shutdown().await;
    for p in providers {
        p.shutdown().await;
    }
}
