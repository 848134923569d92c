//! Two gateways on one PostgreSQL database and one set of providers, as two replicas behind
//! one Service: concurrent writers on the same keys lose no acknowledged version and both
//! gateways agree on every object; a gateway that dies mid-upload commits nothing.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use http::{Method, Request, StatusCode};
use s3s::Body;

use crate::datapath::layout::Scheme;
use crate::meta::{MetadataStore, PostgresStore};
use crate::node::{Node, Plan};
use crate::runtime::dev;

type Svc = s3s::service::S3Service;

async fn call(svc: &Svc, method: Method, uri: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1{uri}"))
        .header("host", "127.0.0.1")
        .header("content-length", body.len().to_string())
        .body(Body::from(body))
        .unwrap();
    let resp: http::Response<Body> = svc.call(req).await.expect("service call");
    let (parts, mut body) = resp.into_parts();
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("body chunk"));
    }
    (parts.status, out)
}

fn data(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed * 7) % 251) as u8)
        .collect()
}

fn tag(xml: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(xml);
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    text.split(&open)
        .skip(1)
        .filter_map(|s| s.split(&close).next())
        .map(str::to_owned)
        .collect()
}

/// A gateway node on `store` over `cluster`'s providers `ids`, as another gateway process
/// sharing the database would be.
fn gateway_on(
    cluster: &dev::Cluster,
    ids: &[String],
    plan: &Plan,
    store: PostgresStore,
) -> Arc<Node> {
    let master =
        crate::datapath::codec::MasterKey::load_or_create(&cluster.master_key_path).unwrap();
    Arc::new(
        Node::new(
            Arc::new(store) as Arc<dyn MetadataStore>,
            Arc::new(master),
            vec![plan.clone()],
            ids.iter()
                .map(|id| cluster.gateway.backend(id).unwrap())
                .collect(),
        )
        .unwrap()
        .with_placement(
            crate::datapath::placement::Topology::flat(ids.iter().map(String::as_str)),
            Arc::clone(cluster.gateway.health()),
        )
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_on_one_database_lose_nothing() {
    // The test server's helpers use the blocking client: off the runtime's threads.
    let Some(url) = tokio::task::spawn_blocking(super::test_postgres::database)
        .await
        .unwrap()
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let plan = Plan {
        name: "standard".into(),
        scheme: Scheme::Erasure { data: 2, parity: 1 },
        encrypt: true,
        segment_size: 64 << 10,
        write_quorum: 3,
        inline_up_to: 0,
    };
    let mut cluster = dev::start_cluster_with(tmp.path(), 4, vec![plan.clone()], HashMap::new())
        .await
        .unwrap();
    let ids: Vec<String> = cluster.probes.iter().map(|(id, _)| id.clone()).collect();
    let gateway = |store: PostgresStore| gateway_on(&cluster, &ids, &plan, store);
    // Two stores, two connection pools: what two gateway processes hold.
    let a = gateway(PostgresStore::open(&url).unwrap());
    let b = gateway(PostgresStore::open(&url).unwrap());
    let (sa, sb) = (
        dev::service(Arc::clone(&a), None),
        dev::service(Arc::clone(&b), None),
    );
    assert_eq!(
        call(&sa, Method::PUT, "/shared", vec![]).await.0,
        StatusCode::OK
    );
    // The bucket made through one gateway exists for the other.
    let (s, _) = call(
        &sb,
        Method::PUT,
        "/shared?versioning",
        br#"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>"#.to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // Both gateways write the same three keys at once, 8 versions each.
    let mut writers = Vec::new();
    for w in 0..2 {
        for key in 0..3 {
            let svc = if w == 0 { sa.clone() } else { sb.clone() };
            writers.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for round in 0..4 {
                    let seed = w * 1000 + key * 100 + round;
                    let body = data(20_000 + seed, seed);
                    let (s, _) =
                        call(&svc, Method::PUT, &format!("/shared/k{key}"), body.clone()).await;
                    assert_eq!(s, StatusCode::OK);
                    acked.push((key, body));
                }
                acked
            }));
        }
    }
    let mut acked: Vec<(usize, Vec<u8>)> = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    for key in 0..3 {
        // Every acknowledged write is a version, readable through either gateway.
        let (s, xml) = call(
            &sa,
            Method::GET,
            &format!("/shared?versions&prefix=k{key}"),
            vec![],
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let ids = tag(&xml, "VersionId");
        let ours: Vec<&Vec<u8>> = acked
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, b)| b)
            .collect();
        assert_eq!(
            ids.len(),
            ours.len(),
            "k{key}: every acknowledged write is a version"
        );
        let mut bodies = Vec::new();
        for id in &ids {
            let (s, body) = call(
                &sb,
                Method::GET,
                &format!("/shared/k{key}?versionId={id}"),
                vec![],
            )
            .await;
            assert_eq!(s, StatusCode::OK, "k{key} version {id}");
            bodies.push(body);
        }
        for body in &ours {
            assert!(
                bodies.contains(body),
                "k{key}: an acknowledged body is missing"
            );
        }
        // Both gateways agree on the latest.
        let (_, la) = call(&sa, Method::GET, &format!("/shared/k{key}"), vec![]).await;
        let (_, lb) = call(&sb, Method::GET, &format!("/shared/k{key}"), vec![]).await;
        assert!(
            la == lb,
            "k{key}: the gateways disagree on the latest version"
        );
        assert!(
            ours.contains(&&la),
            "k{key}: the latest is an acknowledged write"
        );
    }

    // Gateway b dies in the middle of an upload: the task streaming the body is aborted
    // after its first chunks. Nothing is committed; a is unaffected.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let stream = tokio_stream_from(rx);
    let req = Request::builder()
        .method(Method::PUT)
        .uri("http://127.0.0.1/shared/half")
        .header("host", "127.0.0.1")
        .header("content-length", (1usize << 20).to_string())
        .body(Body::from(s3s::dto::StreamingBlob::wrap(stream)))
        .unwrap();
    let upload = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.call(req).await })
    };
    tx.send(Ok(bytes::Bytes::from(data(200_000, 9))))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    upload.abort();
    drop(tx);
    let _ = upload.await;
    let (s, _) = call(&sa, Method::HEAD, "/shared/half", vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a cut upload left a version");
    let (s, body) = call(&sa, Method::GET, "/shared/k0", vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!body.is_empty());
    for p in cluster.providers.drain(..) {
        p.shutdown().await;
    }
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + Sync + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A key made and then disabled through one gateway is accepted, then refused, by another
/// on the same database within the refresh interval of its key view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_disabled_through_another_gateway_is_refused_within_the_refresh_interval() {
    use crate::node::users::{KeyRequest, REFRESH_INTERVAL, UserRequest};
    let Some(url) = tokio::task::spawn_blocking(super::test_postgres::database)
        .await
        .unwrap()
    else {
        return;
    };
    let master = Arc::new(crate::datapath::codec::MasterKey::from_bytes(&[9; 32]));
    let node = |url: String| {
        let master = Arc::clone(&master);
        async move {
            let store = tokio::task::spawn_blocking(move || PostgresStore::open(&url).unwrap())
                .await
                .unwrap();
            Arc::new(
                Node::new(
                    Arc::new(store) as Arc<dyn MetadataStore>,
                    master,
                    vec![Plan::standard()],
                    vec![],
                )
                .unwrap(),
            )
        }
    };
    let a = node(url.clone()).await;
    let b = node(url).await;
    let (_stop, stop) = tokio::sync::watch::channel(false);
    let refreshing = crate::upkeep::users::spawn_refresh(Arc::clone(&b), stop).await;
    let accounts = Arc::clone(a.accounts());
    let access = tokio::task::spawn_blocking(move || {
        accounts
            .put_user("alice", &UserRequest::default(), 1)
            .unwrap();
        let req = KeyRequest {
            user: "alice".into(),
            grants: vec!["*:r".into()],
            ..KeyRequest::default()
        };
        accounts.create_key(&req, 1).unwrap().0.key.access_key
    })
    .await
    .unwrap();
    let bound = REFRESH_INTERVAL + std::time::Duration::from_secs(1);
    let seen = |want: bool| {
        let b = Arc::clone(&b);
        let access = access.clone();
        async move {
            let start = std::time::Instant::now();
            while b.accounts().lookup(&access).is_some() != want {
                assert!(
                    start.elapsed() < bound,
                    "gateway b did not see the change within {bound:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            start.elapsed()
        }
    };
    seen(true).await;
    let accounts = Arc::clone(a.accounts());
    let disabling = access.clone();
    tokio::task::spawn_blocking(move || accounts.set_key_active(&disabling, false).unwrap())
        .await
        .unwrap();
    let took = seen(false).await;
    assert!(took < bound, "{took:?}");
    refreshing.abort();
}

/// Issue 27: `POST /admin/v1/gc?minAgeSeconds=0` on one gateway while another gateway on the
/// same database is mid-write (a slow client's PUT) takes none of that write's shards: the
/// writing gateway holds its write in the database before storing a shard. Once the write
/// ends uncommitted and its hold is ended, its shards are garbage again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_on_one_gateway_keeps_the_shards_of_a_write_in_flight_on_another() {
    use bytes::Bytes;
    use std::time::Duration;
    let Some(url) = tokio::task::spawn_blocking(super::test_postgres::database)
        .await
        .unwrap()
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let plan = Plan {
        name: "standard".into(),
        scheme: Scheme::Erasure { data: 2, parity: 1 },
        encrypt: true,
        segment_size: 64 << 10,
        write_quorum: 3,
        inline_up_to: 0,
    };
    let cluster = dev::start_cluster_with(tmp.path(), 3, vec![plan.clone()], HashMap::new())
        .await
        .unwrap();
    let ids: Vec<String> = cluster.probes.iter().map(|(id, _)| id.clone()).collect();
    let gateway = |store: PostgresStore| gateway_on(&cluster, &ids, &plan, store);
    let (a, b) = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            (
                PostgresStore::open(&url).unwrap(),
                PostgresStore::open(&url).unwrap(),
            )
        })
        .await
        .unwrap()
    };
    let (a, b) = (gateway(a), gateway(b));
    let ours = |g: Arc<Node>| async move {
        let prefix = format!("{}_", g.installation());
        let mut out = Vec::new();
        for site in &g.topology().sites {
            let backend = g.backend(&site.node_id).unwrap();
            for (id, _) in backend.list().await.unwrap().unwrap_or_default() {
                if id.starts_with(&prefix) {
                    out.push((site.node_id.clone(), id));
                }
            }
        }
        out
    };

    // Gateway a takes a PUT from a slow client.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = s3s::dto::StreamingBlob::wrap(tokio_stream_from(rx));
    let writer = {
        let (a, plan) = (Arc::clone(&a), plan.clone());
        tokio::spawn(async move { a.store_striped(&plan, "slow", Some(body)).await })
    };
    for _ in 0..3 {
        tx.send(Ok(Bytes::from(vec![7u8; 64 << 10]))).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ours(Arc::clone(&a)).await.len() < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the write stored nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Older than any age the admin may ask for (stored_at counts in seconds).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let in_flight = ours(Arc::clone(&a)).await;
    assert_eq!(b.writes().count(), 0, "b writes nothing itself");
    let gc = crate::upkeep::audit::collect_garbage(&b, None, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(gc.deleted, 0, "{gc:?}");
    for (node, id) in &in_flight {
        assert!(
            b.backend(node).unwrap().get(id).await.is_ok(),
            "{id} of a's write in flight was taken by b's garbage collection"
        );
    }
    // A hold not renewed runs out (a gateway that died lets its writes go).
    let later = crate::clock::now_ms() + crate::node::WRITE_HOLD_MS + 1_000;
    let held = {
        let meta = Arc::clone(b.metadata());
        tokio::task::spawn_blocking(move || meta.held_writes(later))
            .await
            .unwrap()
            .unwrap()
    };
    assert!(held.is_empty(), "{held:?}");

    // The write ends without committing; a's next renewal ends its hold.
    tx.send(Ok(Bytes::from_static(b"tail"))).await.unwrap();
    drop(tx);
    let written = writer.await.unwrap().unwrap();
    let shards = written.layout.shards().count() as u64;
    drop(written);
    crate::upkeep::audit::renew_write_holds(&a).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let gc = crate::upkeep::audit::collect_garbage(&b, None, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(gc.deleted, shards, "{gc:?}");
    assert!(ours(Arc::clone(&a)).await.is_empty());
}
