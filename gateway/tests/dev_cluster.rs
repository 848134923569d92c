//! A dev-like cluster in one process, driven through the s3s HTTP service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use futures::StreamExt;
use http::{Method, Request, StatusCode};
use s3s::Body;
use s3s::service::S3Service;
use sublet_gateway::dev::{self, Cluster};
use sublet_gateway::layout::Scheme;
use sublet_gateway::s3::Plan;

fn plans() -> Vec<Plan> {
    vec![
        Plan {
            name: "standard".into(),
            scheme: Scheme::Erasure { data: 4, parity: 2 },
            encrypt: true,
            segment_size: 64 << 10,
            write_quorum: 6,
        },
        Plan {
            name: "wide".into(),
            scheme: Scheme::Erasure { data: 6, parity: 2 },
            encrypt: true,
            segment_size: 64 << 10,
            write_quorum: 8,
        },
    ]
}

async fn call(
    svc: &S3Service,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1{uri}"))
        .header("host", "127.0.0.1")
        .header("content-length", body.len().to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Body::from(body)).unwrap();
    let resp = svc.call(req).await.expect("service call");
    let resp: http::Response<Body> = resp;
    let (parts, mut body) = resp.into_parts();
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("body chunk"));
    }
    (parts.status, parts.headers, out)
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

async fn start(dir: &std::path::Path) -> (Cluster, S3Service) {
    let cluster = dev::start_cluster(dir, 6, plans()).await.unwrap();
    let svc = dev::service(Arc::clone(&cluster.gateway), None);
    (cluster, svc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trip_survives_two_dead_providers_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut cluster, svc) = start(tmp.path()).await;

    let (s, _, _) = call(&svc, Method::PUT, "/bkt", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, b) = call(&svc, Method::PUT, "/bkt", &[], vec![]).await;
    assert_eq!(s, StatusCode::CONFLICT, "{}", String::from_utf8_lossy(&b));

    // 5 segments, the last one short.
    let body = data(300_000);
    let (s, h, b) = call(
        &svc,
        Method::PUT,
        "/bkt/dir/obj.bin",
        &[
            ("content-type", "application/x-test"),
            ("x-amz-meta-color", "blue"),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let etag = h.get("etag").unwrap().to_str().unwrap().to_string();
    let md5 = {
        use md5::Digest;
        hex::encode(md5::Md5::digest(&body))
    };
    assert_eq!(etag, format!("\"{md5}\""));

    let (s, _, b) = call(
        &svc,
        Method::PUT,
        "/bkt/x",
        &[("x-amz-storage-class", "GLACIER")],
        vec![1, 2, 3],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("InvalidStorageClass"));
    // The 8-wide plan cannot be placed on 6 providers.
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        "/bkt/x",
        &[("x-amz-storage-class", "wide")],
        vec![1, 2, 3],
    )
    .await;
    assert!(s.is_server_error(), "{s}");
    assert!(String::from_utf8_lossy(&b).contains("needs 8 providers"));
    let (s, _, _) = call(&svc, Method::PUT, "/bkt/empty", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);

    // A wrong Content-MD5 is refused and leaves nothing behind.
    let before = shard_files(tmp.path());
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        "/bkt/md5",
        &[("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==")],
        data(1000),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("BadDigest"));
    assert_eq!(shard_files(tmp.path()), before);
    let (s, _, _) = call(
        &svc,
        Method::PUT,
        "/bkt/md5",
        &[("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==")],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // Overwriting a key frees the old version's shards.
    let before = shard_files(tmp.path());
    let (s, _, _) = call(&svc, Method::PUT, "/bkt/twice", &[], data(100_000)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(shard_files(tmp.path()), before + 2 * 6);
    let (s, _, _) = call(&svc, Method::PUT, "/bkt/twice", &[], data(10)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(shard_files(tmp.path()), before + 6);
    let (s, _, b) = call(&svc, Method::GET, "/bkt/twice", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, data(10));

    // Two providers gone: reads fall back to parity.
    for _ in 0..2 {
        cluster.providers.remove(0).shutdown().await;
    }
    let (s, h, b) = call(&svc, Method::GET, "/bkt/dir/obj.bin", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert!(b == body, "full read differs");
    assert_eq!(h.get("content-type").unwrap(), "application/x-test");
    assert_eq!(h.get("x-amz-meta-color").unwrap(), "blue");
    assert_eq!(h.get("x-amz-storage-class").unwrap(), "standard");

    let (s, h, b) = call(
        &svc,
        Method::GET,
        "/bkt/dir/obj.bin",
        &[("range", "bytes=65530-131080")],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(b, body[65530..=131080]);
    assert_eq!(h.get("content-range").unwrap(), "bytes 65530-131080/300000");
    let (s, _, b) = call(
        &svc,
        Method::GET,
        "/bkt/dir/obj.bin",
        &[("range", "bytes=-10")],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(b, body[300_000 - 10..]);
    let (s, _, _) = call(
        &svc,
        Method::GET,
        "/bkt/dir/obj.bin",
        &[("range", "bytes=300000-")],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);

    let (s, _, b) = call(&svc, Method::GET, "/bkt/empty", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b.is_empty());
    let (s, _, _) = call(&svc, Method::GET, "/bkt/nope", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(&svc, Method::GET, "/nobucket/nope", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Writes need all six providers under the standard plan: refused, nothing left behind.
    // Placement refuses up front once reads have seen the providers fail, else the quorum.
    let (s, _, b) = call(&svc, Method::PUT, "/bkt/fails", &[], data(100_000)).await;
    assert!(s.is_server_error(), "{s}");
    let msg = String::from_utf8_lossy(&b);
    assert!(
        msg.contains("nothing was committed") || msg.contains("healthy providers are available"),
        "{msg}"
    );

    let (s, _, b) = call(
        &svc,
        Method::GET,
        "/bkt?list-type=2&delimiter=/",
        &[],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let listing = String::from_utf8(b).unwrap();
    assert!(listing.contains("<Prefix>dir/</Prefix>"), "{listing}");
    assert!(listing.contains("<Key>empty</Key>"), "{listing}");
    assert!(!listing.contains("fails"), "{listing}");
    let (s, _, b) = call(&svc, Method::GET, "/bkt?max-keys=1", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let listing = String::from_utf8(b).unwrap();
    assert!(
        listing.contains("<IsTruncated>true</IsTruncated>"),
        "{listing}"
    );
    assert!(
        listing.contains("<StorageClass>standard</StorageClass>"),
        "{listing}"
    );

    // Restart everything on the same directory: the object is still there.
    for p in cluster.providers.drain(..) {
        p.shutdown().await;
    }
    drop(svc);
    drop(cluster);
    let (cluster, svc) = start(tmp.path()).await;
    let (s, _, b) = call(&svc, Method::GET, "/bkt/dir/obj.bin", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert!(b == body, "read after restart differs");

    let (s, _, _) = call(&svc, Method::DELETE, "/bkt", &[], vec![]).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _, _) = call(&svc, Method::DELETE, "/bkt/dir/obj.bin", &[], vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = call(&svc, Method::DELETE, "/bkt/empty", &[], vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, b) = call(
        &svc,
        Method::POST,
        "/bkt?delete",
        &[],
        b"<Delete><Object><Key>twice</Key></Object><Object><Key>md5</Key></Object><Object><Key>missing</Key></Object></Delete>"
            .to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("<Key>twice</Key>"));
    assert_eq!(shard_files(tmp.path()), 0);
    let (s, _, _) = call(&svc, Method::HEAD, "/bkt/dir/obj.bin", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(&svc, Method::DELETE, "/bkt", &[], vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for p in cluster.providers {
        p.shutdown().await;
    }
}

fn shard_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for p in std::fs::read_dir(dir.join("providers")).unwrap() {
        let shards = p.unwrap().path().join("shards");
        if let Ok(rd) = std::fs::read_dir(shards) {
            n += rd
                .filter(|e| {
                    e.as_ref()
                        .map(|e| e.file_name().to_string_lossy().ends_with(".shard"))
                        .unwrap_or(false)
                })
                .count();
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_uploads_leave_no_shards_and_dead_objects_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut cluster, svc) = start(tmp.path()).await;
    let (s, _, _) = call(&svc, Method::PUT, "/bkt", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);

    // The client goes away after three segments' worth of bytes.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
        Ok(bytes::Bytes::from(data(200_000))),
        Err(std::io::Error::other("client went away")),
    ];
    let blob = s3s::dto::StreamingBlob::wrap(futures::stream::iter(chunks));
    let body = Body::from(Box::pin(blob) as s3s::stream::DynByteStream);
    let req = Request::builder()
        .method(Method::PUT)
        .uri("http://127.0.0.1/bkt/cut")
        .header("host", "127.0.0.1")
        .header("content-length", "400000")
        .body(body)
        .unwrap();
    let resp = svc.call(req).await;
    if let Ok(r) = resp {
        assert!(!r.status().is_success(), "{}", r.status());
    }
    assert_eq!(
        shard_files(tmp.path()),
        0,
        "an aborted upload left shards behind"
    );
    let (s, _, _) = call(&svc, Method::HEAD, "/bkt/cut", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Listing pages.
    for i in 0..5 {
        let (s, _, _) = call(&svc, Method::PUT, &format!("/bkt/k{i}"), &[], vec![i]).await;
        assert_eq!(s, StatusCode::OK);
    }
    let mut token: Option<String> = None;
    let mut keys = Vec::new();
    for _ in 0..10 {
        let uri = match &token {
            Some(t) => format!("/bkt?list-type=2&max-keys=2&continuation-token={t}"),
            None => "/bkt?list-type=2&max-keys=2".to_string(),
        };
        let (s, _, b) = call(&svc, Method::GET, &uri, &[], vec![]).await;
        assert_eq!(s, StatusCode::OK);
        let text = String::from_utf8(b).unwrap();
        for part in text.split("<Key>").skip(1) {
            keys.push(part.split("</Key>").next().unwrap().to_string());
        }
        token = text
            .split("<NextContinuationToken>")
            .nth(1)
            .map(|t| t.split('<').next().unwrap().to_string());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4"]);
    let (s, _, b) = call(&svc, Method::GET, "/bkt?marker=k2", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8(b).unwrap();
    assert!(
        !text.contains("<Key>k2</Key>") && text.contains("<Key>k3</Key>"),
        "{text}"
    );
    let (s, _, b) = call(
        &svc,
        Method::GET,
        "/bkt?list-type=2&start-after=k3",
        &[],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8(b).unwrap();
    assert!(
        !text.contains("<Key>k3</Key>") && text.contains("<Key>k4</Key>"),
        "{text}"
    );

    // Three providers gone: a 4+2 object cannot be read, and the error names it.
    for _ in 0..3 {
        cluster.providers.remove(0).shutdown().await;
    }
    let (s, _, b) = call(&svc, Method::GET, "/bkt/k1", &[], vec![]).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    let text = String::from_utf8_lossy(&b);
    assert!(text.contains("bkt/k1"), "{text}");
    for p in cluster.providers {
        p.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_disconnect_mid_upload_leaves_no_shards() {
    use tokio::io::AsyncWriteExt;
    let tmp = tempfile::tempdir().unwrap();
    let (cluster, svc) = start(tmp.path()).await;
    let (s, _, _) = call(&svc, Method::PUT, "/bkt", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dev::serve(listener, svc.clone(), async {
        let _ = stop_rx.await;
    }));

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("PUT /bkt/cut HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 400000\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&data(200_000)).await.unwrap();
    conn.flush().await.unwrap();
    // Let the gateway store a few segments, then hang up.
    let mut written = 0;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        written = shard_files(tmp.path());
        if written >= 18 {
            break;
        }
    }
    assert!(
        written >= 18,
        "expected three segments on the providers, found {written} shards"
    );
    drop(conn);

    let mut left = usize::MAX;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = shard_files(tmp.path());
        if left == 0 {
            break;
        }
    }
    assert_eq!(left, 0, "a disconnected upload left shards behind");
    let (s, _, _) = call(&svc, Method::HEAD, "/bkt/cut", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let _ = stop_tx.send(());
    server.await.unwrap();
    for p in cluster.providers {
        p.shutdown().await;
    }
}
