//! A dev-like cluster in one process, driven through the s3s HTTP service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod in_process;

use http::{Method, Request, StatusCode};
use in_process::call;
use s3s::Body;
use sublet_gateway::datapath::layout::Scheme;
use sublet_gateway::node::Plan;
use sublet_gateway::runtime::dev::Cluster;
use sublet_gateway::s3::http::MeteredService as S3Service;

fn plans() -> Vec<Plan> {
    vec![
        Plan {
            name: "standard".into(),
            scheme: Scheme::Erasure { data: 4, parity: 2 },
            encrypt: true,
            segment_size: 64 << 10,
            write_quorum: 6,
            inline_up_to: 0,
        },
        Plan {
            name: "wide".into(),
            scheme: Scheme::Erasure { data: 6, parity: 2 },
            encrypt: true,
            segment_size: 64 << 10,
            write_quorum: 8,
            inline_up_to: 0,
        },
        // Large segments keep the multipart tests' shard counts small.
        Plan {
            name: "large".into(),
            scheme: Scheme::Erasure { data: 4, parity: 2 },
            encrypt: true,
            segment_size: 1 << 20,
            write_quorum: 6,
            inline_up_to: 0,
        },
        Plan {
            name: "replicated".into(),
            scheme: Scheme::Replicas { copies: 3 },
            encrypt: true,
            segment_size: 256 << 10,
            write_quorum: 3,
            inline_up_to: 0,
        },
        // Objects up to 4 KiB are kept in metadata.
        Plan {
            name: "inline".into(),
            scheme: Scheme::Erasure { data: 4, parity: 2 },
            encrypt: true,
            segment_size: 64 << 10,
            write_quorum: 6,
            inline_up_to: 4 << 10,
        },
    ]
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

async fn start(dir: &std::path::Path) -> (Cluster, S3Service) {
    in_process::start(dir, 6, plans()).await
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
    // So is a part's (its digest is taken after its shards are stored: they are freed),
    // and the upload has no part to complete with.
    let id = create_upload(&svc, "/bkt/md5part", &[]).await;
    let part = data(300_000);
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        &format!("/bkt/md5part?partNumber=1&uploadId={id}"),
        &[("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==")],
        part.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("BadDigest"));
    assert_eq!(shard_files(tmp.path()), before);
    let right = {
        use md5::Digest;
        format!("\"{}\"", hex::encode(md5::Md5::digest(&part)))
    };
    let (s, _, b) = complete(&svc, "/bkt/md5part", &id, &[(1, &right)]).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert!(String::from_utf8_lossy(&b).contains("InvalidPart"));
    let path = format!("/bkt/md5part?uploadId={id}");
    let (s, _, _) = call(&svc, Method::DELETE, &path, &[], vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
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
async fn small_objects_of_an_inline_plan_live_in_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut cluster, svc) = start(tmp.path()).await;
    let (s, _, _) = call(&svc, Method::PUT, "/bkt", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let class = [("x-amz-storage-class", "inline")];
    let small = data(4096);
    let (s, h, b) = call(&svc, Method::PUT, "/bkt/small", &class, small.clone()).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(header(&h, "etag"), format!("\"{}\"", md5_hex(&small)));
    let (s, _, _) = call(&svc, Method::PUT, "/bkt/empty", &class, vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(shard_files(tmp.path()), 0, "inline objects wrote shards");
    // One byte more is striped as usual.
    let (s, _, _) = call(&svc, Method::PUT, "/bkt/bigger", &class, data(4097)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(shard_files(tmp.path()), 6);

    let (s, h, b) = call(&svc, Method::GET, "/bkt/small", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b == small, "inline read differs");
    assert_eq!(header(&h, "x-amz-storage-class"), "inline");
    let (s, _, b) = call(
        &svc,
        Method::GET,
        "/bkt/small",
        &[("range", "bytes=100-199")],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert!(b == small[100..200], "inline range differs");
    let (s, h, _) = call(&svc, Method::HEAD, "/bkt/small", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(header(&h, "content-length"), "4096");
    let (s, _, b) = call(&svc, Method::GET, "/bkt/empty", &[], vec![]).await;
    assert_eq!((s, b.len()), (StatusCode::OK, 0));
    // A wrong Content-MD5 stores nothing.
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        "/bkt/digest",
        &[class[0], ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==")],
        small.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("BadDigest"));
    let (s, _, _) = call(&svc, Method::HEAD, "/bkt/digest", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A multipart upload whose last part is small: that part alone is kept in metadata.
    let before = shard_files(tmp.path());
    let id = create_upload(&svc, "/bkt/parts", &class).await;
    let (first, last) = (data(5 << 20), data(1000));
    let e1 = upload_part(&svc, "/bkt/parts", &id, 1, first.clone()).await;
    let e2 = upload_part(&svc, "/bkt/parts", &id, 2, last.clone()).await;
    let (s, _, b) = complete(&svc, "/bkt/parts", &id, &[(1, &e1), (2, &e2)]).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        shard_files(tmp.path()) - before,
        80 * 6,
        "5 MiB in 64 KiB segments"
    );
    let (s, _, b) = call(&svc, Method::GET, "/bkt/parts", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        b == [first, last.clone()].concat(),
        "multipart read differs"
    );
    let range = format!("bytes={}-{}", (5 << 20) - 10, (5 << 20) + 9);
    let (s, _, b) = call(
        &svc,
        Method::GET,
        "/bkt/parts",
        &[("range", &range)],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(b[10..], last[..10], "a range across the parts");
    let (s, _, _) = call(&svc, Method::DELETE, "/bkt/parts", &[], vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(shard_files(tmp.path()), before);

    // Copies: out of metadata onto providers, and back in.
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        "/bkt/striped-copy",
        &[
            ("x-amz-copy-source", "/bkt/small"),
            ("x-amz-storage-class", "standard"),
        ],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(shard_files(tmp.path()), 12);
    let (s, _, _) = call(
        &svc,
        Method::PUT,
        "/bkt/inline-copy",
        &[
            ("x-amz-copy-source", "/bkt/striped-copy"),
            ("x-amz-storage-class", "inline"),
        ],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(shard_files(tmp.path()), 12);
    for key in ["striped-copy", "inline-copy"] {
        let (s, _, b) = call(&svc, Method::GET, &format!("/bkt/{key}"), &[], vec![]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(b == small, "{key} differs");
    }

    // Every provider gone, and a restart: inline objects are still read from metadata.
    for p in cluster.providers.drain(..) {
        p.shutdown().await;
    }
    drop(svc);
    drop(cluster);
    let (mut cluster, svc) = start(tmp.path()).await;
    for p in cluster.providers.drain(..) {
        p.shutdown().await;
    }
    for key in ["small", "inline-copy"] {
        let (s, _, b) = call(&svc, Method::GET, &format!("/bkt/{key}"), &[], vec![]).await;
        assert_eq!(s, StatusCode::OK, "{key}: {}", String::from_utf8_lossy(&b));
        assert!(b == small, "{key} differs after restart");
    }
    let (s, _, _) = call(&svc, Method::GET, "/bkt/bigger", &[], vec![]).await;
    assert_eq!(
        s,
        StatusCode::INTERNAL_SERVER_ERROR,
        "striped data needs providers"
    );
    // Overwrite and delete need no provider either.
    let (s, _, _) = call(&svc, Method::PUT, "/bkt/small", &class, b"new".to_vec()).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, b) = call(&svc, Method::GET, "/bkt/small", &[], vec![]).await;
    assert_eq!((s, b), (StatusCode::OK, b"new".to_vec()));
    let (s, _, _) = call(&svc, Method::DELETE, "/bkt/small", &[], vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = call(&svc, Method::GET, "/bkt/small", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
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
    let server = tokio::spawn(sublet_gateway::runtime::serve_s3(
        listener,
        svc.clone(),
        None,
        sublet_crds::ClientLimits::default(),
        async {
            let _ = stop_rx.await;
        },
    ));

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

/// Every `<name>...</name>` value in an XML answer, in order.
fn tags(xml: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(xml);
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    text.split(&open)
        .skip(1)
        .filter_map(|t| t.split(&close).next().map(str::to_string))
        .collect()
}

fn tag(xml: &[u8], name: &str) -> String {
    tags(xml, name)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no <{name}> in {}", String::from_utf8_lossy(xml)))
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

fn header(h: &http::HeaderMap, name: &str) -> String {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name} header in {h:?}"))
        .to_str()
        .unwrap()
        .to_string()
}

async fn create_upload(svc: &S3Service, path: &str, headers: &[(&str, &str)]) -> String {
    let (s, _, b) = call(
        svc,
        Method::POST,
        &format!("{path}?uploads"),
        headers,
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    tag(&b, "UploadId")
}

/// Uploads a part and returns its ETag header (quoted).
async fn upload_part(svc: &S3Service, path: &str, id: &str, n: u32, body: Vec<u8>) -> String {
    let (s, h, b) = call(
        svc,
        Method::PUT,
        &format!("{path}?partNumber={n}&uploadId={id}"),
        &[],
        body,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    header(&h, "etag")
}

fn completion(parts: &[(u32, &str)]) -> Vec<u8> {
    let mut xml = String::from("<CompleteMultipartUpload>");
    for (n, etag) in parts {
        xml.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
        ));
    }
    xml.push_str("</CompleteMultipartUpload>");
    xml.into_bytes()
}

async fn complete(
    svc: &S3Service,
    path: &str,
    id: &str,
    parts: &[(u32, &str)],
) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    call(
        svc,
        Method::POST,
        &format!("{path}?uploadId={id}"),
        &[],
        completion(parts),
    )
    .await
}

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multipart_upload_composes_parts_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (cluster, svc) = start(tmp.path()).await;
    let (s, _, _) = call(&svc, Method::PUT, "/bkt", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);

    let id = create_upload(
        &svc,
        "/bkt/big.bin",
        &[
            ("x-amz-storage-class", "large"),
            ("content-type", "application/x-parts"),
            ("x-amz-meta-color", "green"),
        ],
    )
    .await;
    let body = data(11 * MIB);
    let (p1, p2, p3) = (
        &body[..5 * MIB],
        &body[5 * MIB..10 * MIB],
        &body[10 * MIB..],
    );

    // A part re-uploaded under the same number replaces the first one and frees its shards.
    let e1 = upload_part(&svc, "/bkt/big.bin", &id, 1, p1.to_vec()).await;
    assert_eq!(e1, format!("\"{}\"", md5_hex(p1)));
    assert_eq!(shard_files(tmp.path()), 5 * 6, "5 segments of 1 MiB, 4+2");
    let junk = upload_part(&svc, "/bkt/big.bin", &id, 2, data(1000)).await;
    assert_eq!(shard_files(tmp.path()), 6 * 6);
    let e2 = upload_part(&svc, "/bkt/big.bin", &id, 2, p2.to_vec()).await;
    assert_eq!(
        shard_files(tmp.path()),
        10 * 6,
        "the replaced part's shards remain"
    );
    let e3 = upload_part(&svc, "/bkt/big.bin", &id, 3, p3.to_vec()).await;
    let extra = upload_part(&svc, "/bkt/big.bin", &id, 4, data(10)).await;
    assert_eq!(shard_files(tmp.path()), 12 * 6);

    // ListParts, in pages.
    let (s, _, b) = call(
        &svc,
        Method::GET,
        &format!("/bkt/big.bin?uploadId={id}&max-parts=2"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(tags(&b, "PartNumber"), ["1", "2"]);
    assert_eq!(tag(&b, "IsTruncated"), "true");
    assert_eq!(tag(&b, "NextPartNumberMarker"), "2");
    assert_eq!(tags(&b, "ETag"), [e1.clone(), e2.clone()]);
    assert_eq!(
        tags(&b, "Size"),
        [(5 * MIB).to_string(), (5 * MIB).to_string()]
    );
    let (s, _, b) = call(
        &svc,
        Method::GET,
        &format!("/bkt/big.bin?uploadId={id}&part-number-marker=2"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(tags(&b, "PartNumber"), ["3", "4"]);
    assert_eq!(tag(&b, "IsTruncated"), "false");

    // ListMultipartUploads, in pages.
    let other = create_upload(&svc, "/bkt/other", &[]).await;
    let (s, _, b) = call(&svc, Method::GET, "/bkt?uploads&max-uploads=1", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(tags(&b, "UploadId"), [id.as_str()]);
    assert_eq!(tag(&b, "IsTruncated"), "true");
    let (s, _, b) = call(
        &svc,
        Method::GET,
        &format!(
            "/bkt?uploads&key-marker={}&upload-id-marker={}",
            tag(&b, "NextKeyMarker"),
            tag(&b, "NextUploadIdMarker")
        ),
        &[],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(tags(&b, "UploadId"), [other.as_str()]);
    assert_eq!(tags(&b, "Key"), ["other"]);

    // Completions the parts do not support.
    let (s, _, b) = complete(&svc, "/bkt/big.bin", &id, &[(1, &e1), (2, &junk), (3, &e3)]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let text = String::from_utf8_lossy(&b);
    assert!(text.contains("InvalidPart") && text.contains(&id), "{text}");
    let (s, _, b) = complete(&svc, "/bkt/big.bin", &id, &[(2, &e2), (1, &e1)]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("InvalidPartOrder"));
    let (s, _, b) = complete(
        &svc,
        "/bkt/big.bin",
        &id,
        &[(1, &e1), (4, &extra), (3, &e3)],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("InvalidPartOrder"));
    let (s, _, b) = complete(&svc, "/bkt/big.bin", &id, &[(3, &e3), (4, &extra)]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("EntityTooSmall"));
    let (s, _, b) = complete(&svc, "/bkt/big.bin", "no-such-upload", &[(1, &e1)]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&b).contains("NoSuchUpload"));

    // The real completion: part 4 is left out and its shards go.
    let (s, _, b) = complete(&svc, "/bkt/big.bin", &id, &[(1, &e1), (2, &e2), (3, &e3)]).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let expected = {
        let mut raw = Vec::new();
        for p in [p1, p2, p3] {
            raw.extend(hex::decode(md5_hex(p)).unwrap());
        }
        format!("\"{}-3\"", md5_hex(&raw))
    };
    assert_eq!(tag(&b, "ETag"), expected);
    assert_eq!(shard_files(tmp.path()), 11 * 6);

    let (s, h, b) = call(&svc, Method::GET, "/bkt/big.bin", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b == body, "the assembled object differs");
    assert_eq!(header(&h, "etag"), expected);
    assert_eq!(header(&h, "content-type"), "application/x-parts");
    assert_eq!(header(&h, "x-amz-meta-color"), "green");
    assert_eq!(header(&h, "x-amz-storage-class"), "large");
    for (from, to) in [
        (5 * MIB - 10, 5 * MIB + 9),
        (3 * MIB, 10 * MIB + 5),
        (11 * MIB - 1, 11 * MIB - 1),
    ] {
        let (s, h, b) = call(
            &svc,
            Method::GET,
            "/bkt/big.bin",
            &[("range", &format!("bytes={from}-{to}"))],
            vec![],
        )
        .await;
        assert_eq!(s, StatusCode::PARTIAL_CONTENT);
        assert!(b == body[from..=to], "range {from}-{to} differs");
        assert_eq!(
            header(&h, "content-range"),
            format!("bytes {from}-{to}/{}", 11 * MIB)
        );
    }
    let (s, h, _) = call(&svc, Method::HEAD, "/bkt/big.bin", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(header(&h, "content-length"), (11 * MIB).to_string());
    // Parts are addressable by number, as SDK downloaders use them.
    let (s, h, b) = call(&svc, Method::GET, "/bkt/big.bin?partNumber=2", &[], vec![]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert!(b == p2, "part 2 differs");
    assert_eq!(header(&h, "x-amz-mp-parts-count"), "3");
    assert_eq!(
        header(&h, "content-range"),
        format!("bytes {}-{}/{}", 5 * MIB, 10 * MIB - 1, 11 * MIB)
    );
    let (s, h, _) = call(&svc, Method::HEAD, "/bkt/big.bin?partNumber=3", &[], vec![]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&h, "content-length"), MIB.to_string());
    assert_eq!(header(&h, "x-amz-mp-parts-count"), "3");
    assert_eq!(
        header(&h, "content-range"),
        format!("bytes {}-{}/{}", 10 * MIB, 11 * MIB - 1, 11 * MIB)
    );
    let (s, _, b) = call(&svc, Method::GET, "/bkt/big.bin?partNumber=4", &[], vec![]).await;
    assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
    assert!(String::from_utf8_lossy(&b).contains("InvalidPartNumber"));

    // The upload is gone once completed.
    let (s, _, b) = call(
        &svc,
        Method::GET,
        &format!("/bkt/big.bin?uploadId={id}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&b).contains("NoSuchUpload"));

    // Abort removes every part's shards.
    let before = shard_files(tmp.path());
    upload_part(&svc, "/bkt/other", &other, 1, data(3000)).await;
    upload_part(&svc, "/bkt/other", &other, 2, data(2000)).await;
    assert_eq!(shard_files(tmp.path()), before + 2 * 6);
    let (s, _, _) = call(
        &svc,
        Method::DELETE,
        &format!("/bkt/other?uploadId={other}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(shard_files(tmp.path()), before);
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        &format!("/bkt/other?partNumber=3&uploadId={other}"),
        &[],
        data(10),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&b).contains("NoSuchUpload"));
    assert_eq!(
        shard_files(tmp.path()),
        before,
        "a part for an ended upload left shards"
    );
    let (s, _, b) = call(&svc, Method::GET, "/bkt?uploads", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(tags(&b, "UploadId").is_empty());

    let (s, _, _) = call(&svc, Method::DELETE, "/bkt/big.bin", &[], vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(shard_files(tmp.path()), 0);
    for p in cluster.providers {
        p.shutdown().await;
    }
}

async fn set_versioning(svc: &S3Service, bucket: &str, status: &str) {
    let body = format!(
        "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>{status}</Status></VersioningConfiguration>"
    );
    let (s, _, b) = call(
        svc,
        Method::PUT,
        &format!("/{bucket}?versioning"),
        &[],
        body.into_bytes(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
}

/// Every version id of a versions listing, walking its pages one entry at a time.
async fn all_version_ids(svc: &S3Service, bucket: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut markers: Option<(String, String)> = None;
    for _ in 0..20 {
        let uri = match &markers {
            Some((k, v)) => {
                format!("/{bucket}?versions&max-keys=1&key-marker={k}&version-id-marker={v}")
            }
            None => format!("/{bucket}?versions&max-keys=1"),
        };
        let (s, _, b) = call(svc, Method::GET, &uri, &[], vec![]).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        ids.extend(tags(&b, "VersionId"));
        if tag(&b, "IsTruncated") == "false" {
            return ids;
        }
        markers = Some((tag(&b, "NextKeyMarker"), tag(&b, "NextVersionIdMarker")));
    }
    panic!("the versions listing never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versioning_keeps_versions_and_delete_markers() {
    let tmp = tempfile::tempdir().unwrap();
    let (cluster, svc) = start(tmp.path()).await;
    let (s, _, _) = call(&svc, Method::PUT, "/vbkt", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, b) = call(&svc, Method::GET, "/vbkt?versioning", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        tags(&b, "Status").is_empty(),
        "{}",
        String::from_utf8_lossy(&b)
    );
    let (s, h, _) = call(&svc, Method::PUT, "/vbkt/plain", &[], data(10)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.get("x-amz-version-id").is_none());

    set_versioning(&svc, "vbkt", "Enabled").await;
    let (s, _, b) = call(&svc, Method::GET, "/vbkt?versioning", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(tag(&b, "Status"), "Enabled");

    let (s, h, _) = call(&svc, Method::PUT, "/vbkt/k", &[], data(1000)).await;
    assert_eq!(s, StatusCode::OK);
    let v1 = header(&h, "x-amz-version-id");
    let (s, h, _) = call(&svc, Method::PUT, "/vbkt/k", &[], data(2000)).await;
    assert_eq!(s, StatusCode::OK);
    let v2 = header(&h, "x-amz-version-id");
    assert_ne!(v1, v2);
    assert_eq!(
        shard_files(tmp.path()),
        3 * 6,
        "both versions keep their shards"
    );

    let (s, h, b) = call(&svc, Method::GET, "/vbkt/k", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, data(2000));
    assert_eq!(header(&h, "x-amz-version-id"), v2);
    let (s, h, b) = call(
        &svc,
        Method::GET,
        &format!("/vbkt/k?versionId={v1}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, data(1000));
    assert_eq!(header(&h, "x-amz-version-id"), v1);
    let (s, h, _) = call(
        &svc,
        Method::HEAD,
        &format!("/vbkt/k?versionId={v1}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(header(&h, "content-length"), "1000");
    // A well-formed id of no version is NoSuchVersion; one no version could have is an
    // invalid argument, as S3 answers.
    let missing = format!("/vbkt/k?versionId={}", "0".repeat(32));
    let (s, _, b) = call(&svc, Method::GET, &missing, &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&b).contains("NoSuchVersion"));
    let (s, _, b) = call(&svc, Method::GET, "/vbkt/k?versionId=nope", &[], vec![]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("Invalid version id specified"));
    let (s, _, b) = call(&svc, Method::DELETE, "/vbkt/k?versionId=nope", &[], vec![]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("InvalidArgument"));

    // DELETE without a version id stacks a delete marker; nothing is lost.
    let (s, h, _) = call(&svc, Method::DELETE, "/vbkt/k", &[], vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(header(&h, "x-amz-delete-marker"), "true");
    let marker = header(&h, "x-amz-version-id");
    assert_eq!(shard_files(tmp.path()), 3 * 6);
    let (s, h, b) = call(&svc, Method::GET, "/vbkt/k", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&b).contains("NoSuchKey"));
    assert_eq!(header(&h, "x-amz-delete-marker"), "true");
    let (s, h, _) = call(&svc, Method::HEAD, "/vbkt/k", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(header(&h, "x-amz-delete-marker"), "true");
    let (s, _, _) = call(
        &svc,
        Method::GET,
        &format!("/vbkt/k?versionId={marker}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (s, _, b) = call(
        &svc,
        Method::GET,
        &format!("/vbkt/k?versionId={v1}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, data(1000));
    let (s, _, b) = call(&svc, Method::GET, "/vbkt?list-type=2", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(tags(&b, "Key"), ["plain"]);

    // Completed uploads and copies are versions too.
    let id = create_upload(&svc, "/vbkt/mp", &[]).await;
    let e1 = upload_part(&svc, "/vbkt/mp", &id, 1, data(10)).await;
    let (s, h, b) = complete(&svc, "/vbkt/mp", &id, &[(1, &e1)]).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let mp_version = header(&h, "x-amz-version-id");
    let (s, h, _) = call(
        &svc,
        Method::PUT,
        "/vbkt/mp",
        &[
            ("x-amz-copy-source", &format!("/vbkt/k?versionId={v1}")),
            ("x-amz-metadata-directive", "REPLACE"),
        ],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(header(&h, "x-amz-copy-source-version-id"), v1);
    let copy_version = header(&h, "x-amz-version-id");
    let (s, _, b) = call(&svc, Method::GET, "/vbkt/mp", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, data(1000));
    let (s, _, b) = call(
        &svc,
        Method::GET,
        &format!("/vbkt/mp?versionId={mp_version}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, data(10));
    for v in [&mp_version, &copy_version] {
        let (s, _, _) = call(
            &svc,
            Method::DELETE,
            &format!("/vbkt/mp?versionId={v}"),
            &[],
            vec![],
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
    assert_eq!(shard_files(tmp.path()), 3 * 6);

    let (s, _, b) = call(&svc, Method::GET, "/vbkt?versions", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8_lossy(&b).to_string();
    let markers = text.split("<DeleteMarker>").skip(1).collect::<Vec<_>>();
    assert_eq!(markers.len(), 1, "{text}");
    assert!(
        markers[0].contains(&marker) && markers[0].contains("<IsLatest>true</IsLatest>"),
        "{text}"
    );
    assert_eq!(tags(&b, "Version").len(), 3, "{text}");
    assert_eq!(
        all_version_ids(&svc, "vbkt").await,
        [marker.clone(), v2.clone(), v1.clone(), "null".to_string()]
    );

    // Removing the marker brings the object back; removing a version frees its shards.
    let (s, h, _) = call(
        &svc,
        Method::DELETE,
        &format!("/vbkt/k?versionId={marker}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(header(&h, "x-amz-delete-marker"), "true");
    let (s, _, b) = call(&svc, Method::GET, "/vbkt/k", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, data(2000));
    let (s, _, _) = call(
        &svc,
        Method::DELETE,
        &format!("/vbkt/k?versionId={v2}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(shard_files(tmp.path()), 2 * 6);
    let (s, h, b) = call(&svc, Method::GET, "/vbkt/k", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, data(1000));
    assert_eq!(header(&h, "x-amz-version-id"), v1);

    // Suspended: new writes are the "null" version, replacing each other.
    set_versioning(&svc, "vbkt", "Suspended").await;
    let (s, _, b) = call(&svc, Method::GET, "/vbkt?versioning", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(tag(&b, "Status"), "Suspended");
    let (s, h, _) = call(&svc, Method::PUT, "/vbkt/k", &[], data(500)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(header(&h, "x-amz-version-id"), "null");
    let (s, _, _) = call(&svc, Method::PUT, "/vbkt/k", &[], data(700)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        shard_files(tmp.path()),
        3 * 6,
        "the null version replaced its predecessor"
    );
    let (s, _, b) = call(&svc, Method::GET, "/vbkt/k?versionId=null", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, data(700));
    let (s, h, _) = call(&svc, Method::DELETE, "/vbkt/k", &[], vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(header(&h, "x-amz-version-id"), "null");
    assert_eq!(header(&h, "x-amz-delete-marker"), "true");
    assert_eq!(
        shard_files(tmp.path()),
        2 * 6,
        "the null marker replaced the null version"
    );
    let (s, _, _) = call(&svc, Method::GET, "/vbkt/k", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        all_version_ids(&svc, "vbkt").await,
        ["null", v1.as_str(), "null"]
    );

    let (s, _, b) = call(
        &svc,
        Method::PUT,
        "/vbkt?versioning",
        &[],
        b"<VersioningConfiguration><Status>Sometimes</Status></VersioningConfiguration>".to_vec(),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );
    for p in cluster.providers {
        p.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_reencode_across_buckets_and_plans() {
    let tmp = tempfile::tempdir().unwrap();
    let (cluster, svc) = start(tmp.path()).await;
    for b in ["/src", "/dst"] {
        let (s, _, _) = call(&svc, Method::PUT, b, &[], vec![]).await;
        assert_eq!(s, StatusCode::OK);
    }
    let body = data(300_000);
    let (s, _, _) = call(
        &svc,
        Method::PUT,
        "/src/a",
        &[("content-type", "text/plain"), ("x-amz-meta-color", "blue")],
        body.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(shard_files(tmp.path()), 5 * 6);

    // Into another bucket and another plan, with new metadata.
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        "/dst/b",
        &[
            ("x-amz-copy-source", "/src/a"),
            ("x-amz-metadata-directive", "REPLACE"),
            ("x-amz-storage-class", "replicated"),
            ("content-type", "application/json"),
            ("x-amz-meta-shape", "round"),
        ],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(tag(&b, "ETag"), format!("\"{}\"", md5_hex(&body)));
    assert_eq!(
        shard_files(tmp.path()),
        5 * 6 + 2 * 3,
        "two 256 KiB segments, three copies each"
    );
    let (s, h, b) = call(&svc, Method::GET, "/dst/b", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b == body, "the copy differs");
    assert_eq!(header(&h, "x-amz-storage-class"), "replicated");
    assert_eq!(header(&h, "content-type"), "application/json");
    assert_eq!(header(&h, "x-amz-meta-shape"), "round");
    assert!(h.get("x-amz-meta-color").is_none());

    // COPY keeps the source's metadata; the default plan applies.
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        "/dst/c",
        &[("x-amz-copy-source", "src/a")],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let (s, h, b) = call(&svc, Method::GET, "/dst/c", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b == body, "the copy differs");
    assert_eq!(header(&h, "x-amz-meta-color"), "blue");
    assert_eq!(header(&h, "content-type"), "text/plain");
    assert_eq!(header(&h, "x-amz-storage-class"), "standard");

    // Refusals.
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        "/src/a",
        &[("x-amz-copy-source", "/src/a")],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("InvalidRequest"));
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        "/dst/d",
        &[("x-amz-copy-source", "/src/missing")],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let text = String::from_utf8_lossy(&b);
    assert!(
        text.contains("NoSuchKey") && text.contains("missing"),
        "{text}"
    );
    let src_etag = format!("\"{}\"", md5_hex(&body));
    for cond in [
        ("x-amz-copy-source-if-match", "\"0123\""),
        ("x-amz-copy-source-if-none-match", src_etag.as_str()),
        (
            "x-amz-copy-source-if-unmodified-since",
            "Sun, 06 Nov 1994 08:49:37 GMT",
        ),
    ] {
        let (s, _, b) = call(
            &svc,
            Method::PUT,
            "/dst/d",
            &[("x-amz-copy-source", "/src/a"), cond],
            vec![],
        )
        .await;
        assert_eq!(
            s,
            StatusCode::PRECONDITION_FAILED,
            "{cond:?}: {}",
            String::from_utf8_lossy(&b)
        );
    }
    let (s, _, _) = call(
        &svc,
        Method::PUT,
        "/dst/d",
        &[
            ("x-amz-copy-source", "/src/a"),
            ("x-amz-copy-source-if-match", &src_etag),
        ],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // UploadPartCopy with a range as the last part of an upload.
    let id = create_upload(&svc, "/dst/mp", &[("x-amz-storage-class", "large")]).await;
    let first = data(5 * MIB + 3);
    let e1 = upload_part(&svc, "/dst/mp", &id, 1, first.clone()).await;
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        &format!("/dst/mp?partNumber=2&uploadId={id}"),
        &[
            ("x-amz-copy-source", "/src/a"),
            ("x-amz-copy-source-range", "bytes=1000-99999"),
        ],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let e2 = tag(&b, "ETag");
    assert_eq!(e2, format!("\"{}\"", md5_hex(&body[1000..100_000])));
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        &format!("/dst/mp?partNumber=3&uploadId={id}"),
        &[
            ("x-amz-copy-source", "/src/a"),
            ("x-amz-copy-source-range", "bytes=299000-400000"),
        ],
        vec![],
    )
    .await;
    assert_eq!(
        s,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "{}",
        String::from_utf8_lossy(&b)
    );
    let (s, _, b) = complete(&svc, "/dst/mp", &id, &[(1, &e1), (2, &e2)]).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let (s, _, b) = call(&svc, Method::GET, "/dst/mp", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let mut expected = first;
    expected.extend_from_slice(&body[1000..100_000]);
    assert!(b == expected, "the assembled copy differs");

    for key in ["/src/a", "/dst/b", "/dst/c", "/dst/d", "/dst/mp"] {
        let (s, _, _) = call(&svc, Method::DELETE, key, &[], vec![]).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
    assert_eq!(shard_files(tmp.path()), 0);
    for p in cluster.providers {
        p.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conditional_reads_answer_304_and_412() {
    let tmp = tempfile::tempdir().unwrap();
    let (cluster, svc) = start(tmp.path()).await;
    let (s, _, _) = call(&svc, Method::PUT, "/cond", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, h, _) = call(&svc, Method::PUT, "/cond/k", &[], data(100)).await;
    assert_eq!(s, StatusCode::OK);
    let etag = header(&h, "etag");
    let past = "Sun, 06 Nov 1994 08:49:37 GMT";
    let future = "Fri, 01 Jan 2100 00:00:00 GMT";
    let cases: Vec<(Vec<(&str, &str)>, StatusCode)> = vec![
        (vec![("if-match", etag.as_str())], StatusCode::OK),
        (vec![("if-match", "*")], StatusCode::OK),
        (
            vec![("if-match", "\"0123\"")],
            StatusCode::PRECONDITION_FAILED,
        ),
        (
            vec![("if-none-match", etag.as_str())],
            StatusCode::NOT_MODIFIED,
        ),
        (vec![("if-none-match", "*")], StatusCode::NOT_MODIFIED),
        (vec![("if-none-match", "\"0123\"")], StatusCode::OK),
        (
            vec![("if-modified-since", future)],
            StatusCode::NOT_MODIFIED,
        ),
        (vec![("if-modified-since", past)], StatusCode::OK),
        (
            vec![("if-unmodified-since", past)],
            StatusCode::PRECONDITION_FAILED,
        ),
        (vec![("if-unmodified-since", future)], StatusCode::OK),
        // As in S3: a matching If-Match wins over a failing If-Unmodified-Since,
        // and a failing If-None-Match decides over If-Modified-Since.
        (
            vec![("if-match", etag.as_str()), ("if-unmodified-since", past)],
            StatusCode::OK,
        ),
        (
            vec![("if-none-match", "\"0123\""), ("if-modified-since", future)],
            StatusCode::OK,
        ),
    ];
    for (headers, want) in cases {
        for method in [Method::GET, Method::HEAD] {
            let (s, h, b) = call(&svc, method.clone(), "/cond/k", &headers, vec![]).await;
            assert_eq!(
                s,
                want,
                "{method} {headers:?}: {}",
                String::from_utf8_lossy(&b)
            );
            if want == StatusCode::OK && method == Method::GET {
                assert_eq!(b, data(100));
            }
            if want == StatusCode::NOT_MODIFIED {
                assert_eq!(header(&h, "etag"), etag);
                assert!(
                    header(&h, "last-modified").ends_with(" GMT"),
                    "{method} 304 without Last-Modified: {h:?}"
                );
            }
        }
    }
    for p in cluster.providers {
        p.shutdown().await;
    }
}

const DAY_MS: i64 = 24 * 3600 * 1000;

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

async fn put_lifecycle(svc: &S3Service, bucket: &str, rules: &str) -> (StatusCode, String) {
    let xml = format!("<LifecycleConfiguration>{rules}</LifecycleConfiguration>");
    let md5 = {
        use base64::Engine;
        use md5::Digest;
        base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(xml.as_bytes()))
    };
    let (s, _, b) = call(
        svc,
        Method::PUT,
        &format!("/{bucket}?lifecycle"),
        &[("content-md5", md5.as_str())],
        xml.into_bytes(),
    )
    .await;
    (s, String::from_utf8_lossy(&b).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_rules_expire_transition_and_abort() {
    let tmp = tempfile::tempdir().unwrap();
    let (cluster, svc) = start(tmp.path()).await;
    let (s, _, _) = call(&svc, Method::PUT, "/life", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);

    // What sublet cannot honour is refused by name, not silently ignored.
    let (s, b) = put_lifecycle(
        &svc,
        "life",
        "<Rule><ID>x</ID><Status>Enabled</Status><Filter><Prefix></Prefix></Filter>\
         <Transition><Days>3</Days><StorageClass>GLACIER</StorageClass></Transition></Rule>",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b.contains("InvalidStorageClass") && b.contains("GLACIER"),
        "{b}"
    );
    let (s, b) = put_lifecycle(
        &svc,
        "life",
        "<Rule><ID>x</ID><Status>Enabled</Status><Filter><Prefix></Prefix></Filter>\
         <Expiration><Date>2030-01-01T00:00:00Z</Date></Expiration></Rule>",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_IMPLEMENTED, "{b}");
    let (s, _, b) = call(&svc, Method::GET, "/life?lifecycle", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&b).contains("NoSuchLifecycleConfiguration"));

    let (s, b) = put_lifecycle(
        &svc,
        "life",
        "<Rule><ID>tmp</ID><Status>Enabled</Status><Filter><Prefix>tmp/</Prefix></Filter>\
           <Expiration><Days>1</Days></Expiration></Rule>\
         <Rule><ID>cold</ID><Status>Enabled</Status><Filter><Prefix>cold/</Prefix></Filter>\
           <Transition><Days>2</Days><StorageClass>replicated</StorageClass></Transition></Rule>\
         <Rule><ID>off</ID><Status>Disabled</Status><Filter><Prefix>keep/</Prefix></Filter>\
           <Expiration><Days>1</Days></Expiration></Rule>\
         <Rule><ID>uploads</ID><Status>Enabled</Status><Filter><Prefix></Prefix></Filter>\
           <AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation>\
           </AbortIncompleteMultipartUpload></Rule>",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _, b) = call(&svc, Method::GET, "/life?lifecycle", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(tags(&b, "ID"), ["tmp", "cold", "off", "uploads"]);
    assert_eq!(tags(&b, "StorageClass"), ["replicated"]);

    let cold = data(300_000);
    for (key, body) in [
        ("tmp/a", data(1000)),
        ("cold/b", cold.clone()),
        ("keep/c", data(10)),
    ] {
        let (s, _, b) = call(&svc, Method::PUT, &format!("/life/{key}"), &[], body).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    }
    let upload = create_upload(&svc, "/life/big", &[]).await;
    upload_part(&svc, "/life/big", &upload, 1, data(1000)).await;
    let shards_before = shard_files(tmp.path());

    // Today nothing is due.
    let report =
        sublet_gateway::upkeep::lifecycle::lifecycle_pass(&cluster.gateway, &Vec::new(), now_ms())
            .await
            .unwrap();
    assert_eq!(report, Default::default());

    // Three days on: tmp/ expired, cold/ moved to the replicated plan, the upload aborted.
    let report = sublet_gateway::upkeep::lifecycle::lifecycle_pass(
        &cluster.gateway,
        &Vec::new(),
        now_ms() + 3 * DAY_MS,
    )
    .await
    .unwrap();
    assert_eq!(
        (
            report.expired,
            report.transitioned,
            report.uploads_aborted,
            report.failed
        ),
        (1, 1, 1, 0),
        "{report:?}"
    );
    let (s, _, _) = call(&svc, Method::HEAD, "/life/tmp/a", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(&svc, Method::HEAD, "/life/keep/c", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK, "a disabled rule does nothing");
    let (s, h, b) = call(&svc, Method::GET, "/life/cold/b", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b == cold, "the moved object reads back differently");
    assert_eq!(header(&h, "x-amz-storage-class"), "replicated");
    let (s, _, b) = call(&svc, Method::GET, "/life?uploads", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        tags(&b, "UploadId").is_empty(),
        "{}",
        String::from_utf8_lossy(&b)
    );
    // tmp/a and the part are gone; cold/b's old shards stay a while for reads in flight.
    let shards_after = shard_files(tmp.path());
    assert!(
        shards_after < shards_before,
        "{shards_before} shards before, {shards_after} after"
    );
    // A second pass finds nothing more to do.
    let report = sublet_gateway::upkeep::lifecycle::lifecycle_pass(
        &cluster.gateway,
        &Vec::new(),
        now_ms() + 3 * DAY_MS,
    )
    .await
    .unwrap();
    assert_eq!(report, Default::default());

    // The shard index follows the moved layout: garbage collection keeps every shard
    // cold/b and keep/c use now, and a metadata snapshot's shards, and takes nothing else.
    let snapshot = tmp.path().join("snapshot.bin");
    std::fs::write(&snapshot, data(50_000)).unwrap();
    let manifest =
        sublet_gateway::upkeep::snapshot::store_snapshot(&cluster.gateway, &snapshot, None)
            .await
            .unwrap();
    let gc = sublet_gateway::upkeep::audit::collect_garbage(
        &cluster.gateway,
        None,
        std::time::Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(gc.deleted, 0, "{gc:?}");
    let (s, _, b) = call(&svc, Method::GET, "/life/cold/b", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        b == cold,
        "the moved object reads back differently after gc"
    );
    let back = sublet_gateway::upkeep::snapshot::read_snapshot(&cluster.gateway, &manifest)
        .await
        .unwrap();
    assert!(
        back == data(50_000),
        "the snapshot reads back differently after gc"
    );

    let (s, _, _) = call(&svc, Method::DELETE, "/life?lifecycle", &[], vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = call(&svc, Method::GET, "/life?lifecycle", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_on_versioned_buckets_keeps_noncurrent_versions_until_due() {
    let tmp = tempfile::tempdir().unwrap();
    let (cluster, svc) = start(tmp.path()).await;
    let (s, _, _) = call(&svc, Method::PUT, "/vlife", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    set_versioning(&svc, "vlife", "Enabled").await;
    let (s, b) = put_lifecycle(
        &svc,
        "vlife",
        "<Rule><ID>all</ID><Status>Enabled</Status><Filter><Prefix></Prefix></Filter>\
           <Expiration><Days>5</Days><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker>\
           </Expiration>\
           <NoncurrentVersionExpiration><NoncurrentDays>2</NoncurrentDays>\
           </NoncurrentVersionExpiration></Rule>",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for body in [data(100), data(200)] {
        let (s, _, _) = call(&svc, Method::PUT, "/vlife/k", &[], body).await;
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(all_version_ids(&svc, "vlife").await.len(), 2);
    let now = now_ms();
    // One day on, the overwritten version is noncurrent for 1 day only: kept.
    let report = sublet_gateway::upkeep::lifecycle::lifecycle_pass(
        &cluster.gateway,
        &Vec::new(),
        now + DAY_MS,
    )
    .await
    .unwrap();
    assert_eq!(report, Default::default());
    // Three days on: it goes; the current one stays.
    let report = sublet_gateway::upkeep::lifecycle::lifecycle_pass(
        &cluster.gateway,
        &Vec::new(),
        now + 3 * DAY_MS,
    )
    .await
    .unwrap();
    assert_eq!(report.noncurrent_deleted, 1, "{report:?}");
    assert_eq!(all_version_ids(&svc, "vlife").await.len(), 1);
    let (s, _, b) = call(&svc, Method::GET, "/vlife/k", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b == data(200));
    // Six days on: the current version expires behind a delete marker (the data stays,
    // noncurrent); eight days on that version is noncurrent past 2 days and goes, and
    // the lone delete marker is removed on the pass after.
    let report = sublet_gateway::upkeep::lifecycle::lifecycle_pass(
        &cluster.gateway,
        &Vec::new(),
        now + 6 * DAY_MS,
    )
    .await
    .unwrap();
    assert_eq!(report.expired, 1, "{report:?}");
    let (s, _, _) = call(&svc, Method::GET, "/vlife/k", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(all_version_ids(&svc, "vlife").await.len(), 2);
    let mut later = now + 9 * DAY_MS;
    let mut removed = 0;
    for _ in 0..2 {
        let report =
            sublet_gateway::upkeep::lifecycle::lifecycle_pass(&cluster.gateway, &Vec::new(), later)
                .await
                .unwrap();
        removed += report.noncurrent_deleted + report.markers_removed;
        later += DAY_MS;
    }
    assert_eq!(removed, 2);
    assert!(all_version_ids(&svc, "vlife").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn objects_in_metadata_keep_versions_and_move_by_lifecycle() {
    let tmp = tempfile::tempdir().unwrap();
    let (cluster, svc) = start(tmp.path()).await;
    let class = [("x-amz-storage-class", "inline")];

    // Versions of a key kept in metadata, a delete marker on top, one version removed.
    let (s, _, _) = call(&svc, Method::PUT, "/vin", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    set_versioning(&svc, "vin", "Enabled").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (s, h, b) = call(&svc, Method::PUT, "/vin/k", &class, data(100 + i)).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        ids.push(header(&h, "x-amz-version-id"));
    }
    assert_eq!(shard_files(tmp.path()), 0, "inline versions wrote shards");
    for (i, id) in ids.iter().enumerate() {
        let uri = format!("/vin/k?versionId={id}");
        let (s, h, b) = call(&svc, Method::GET, &uri, &[], vec![]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(b == data(100 + i), "version {i} reads back differently");
        assert_eq!(header(&h, "x-amz-version-id"), *id);
    }
    let (s, h, _) = call(&svc, Method::DELETE, "/vin/k", &[], vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(header(&h, "x-amz-delete-marker"), "true");
    let (s, _, _) = call(&svc, Method::GET, "/vin/k", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let uri = format!("/vin/k?versionId={}", ids[0]);
    let (s, _, _) = call(&svc, Method::DELETE, &uri, &[], vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = call(&svc, Method::GET, &uri, &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let uri = format!("/vin/k?versionId={}", ids[1]);
    let (s, _, b) = call(&svc, Method::GET, &uri, &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b == data(101), "a kept version reads back differently");
    assert_eq!(
        all_version_ids(&svc, "vin").await.len(),
        3,
        "two versions and a marker"
    );

    // Lifecycle transitions into metadata and out of it.
    let (s, _, _) = call(&svc, Method::PUT, "/lcy", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(&svc, Method::PUT, "/lcy/in/a", &[], data(1000)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(&svc, Method::PUT, "/lcy/out/b", &class, data(2000)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(shard_files(tmp.path()), 6, "only in/a is striped");
    let (s, b) = put_lifecycle(
        &svc,
        "lcy",
        "<Rule><ID>in</ID><Status>Enabled</Status><Filter><Prefix>in/</Prefix></Filter>\
           <Transition><Days>1</Days><StorageClass>inline</StorageClass></Transition></Rule>\
         <Rule><ID>out</ID><Status>Enabled</Status><Filter><Prefix>out/</Prefix></Filter>\
           <Transition><Days>1</Days><StorageClass>replicated</StorageClass></Transition></Rule>",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let report = sublet_gateway::upkeep::lifecycle::lifecycle_pass(
        &cluster.gateway,
        &Vec::new(),
        now_ms() + 2 * DAY_MS,
    )
    .await
    .unwrap();
    assert_eq!((report.transitioned, report.failed), (2, 0), "{report:?}");
    for (key, body, plan) in [
        ("in/a", data(1000), "inline"),
        ("out/b", data(2000), "replicated"),
    ] {
        let (s, h, b) = call(&svc, Method::GET, &format!("/lcy/{key}"), &[], vec![]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(b == body, "{key} reads back differently after its move");
        assert_eq!(header(&h, "x-amz-storage-class"), plan);
    }
    // out/b now has its three copies; in/a's old shards stay a while for reads in flight
    // (out/b's metadata copy needs none), and garbage collection leaves them alone.
    assert_eq!(shard_files(tmp.path()), 6 + 3);
    let gc = sublet_gateway::upkeep::audit::collect_garbage(
        &cluster.gateway,
        None,
        std::time::Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(gc.deleted, 0, "{gc:?}");
    let (s, _, b) = call(&svc, Method::GET, "/lcy/in/a", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b == data(1000), "in/a reads back differently after gc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standard_headers_and_encryption_come_back_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (cluster, svc) = start(tmp.path()).await;
    let (s, _, _) = call(&svc, Method::PUT, "/hdr", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let written = [
        ("cache-control", "max-age=3600"),
        ("content-disposition", "attachment; filename=\"a.txt\""),
        ("content-encoding", "gzip"),
        ("content-language", "de-CH"),
        ("expires", "Wed, 21 Oct 2026 07:28:00 GMT"),
    ];
    let (s, h, b) = call(&svc, Method::PUT, "/hdr/k", &written, data(100)).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(header(&h, "x-amz-server-side-encryption"), "AES256");
    for method in [Method::GET, Method::HEAD] {
        let (s, h, _) = call(&svc, method.clone(), "/hdr/k", &[], vec![]).await;
        assert_eq!(s, StatusCode::OK);
        for (name, value) in written {
            assert_eq!(header(&h, name), value, "{method} {name}");
        }
        assert_eq!(header(&h, "x-amz-server-side-encryption"), "AES256");
    }
    // response-* overrides win over what was stored.
    let (s, h, body) = call(
        &svc,
        Method::GET,
        "/hdr/k?response-cache-control=no-store&response-content-type=text%2Fplain&response-content-language=fr",
        &[],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, data(100));
    assert_eq!(header(&h, "cache-control"), "no-store");
    assert_eq!(header(&h, "content-type"), "text/plain");
    assert_eq!(header(&h, "content-language"), "fr");
    assert_eq!(header(&h, "content-disposition"), written[1].1);
    // A copy keeps them (COPY directive) or takes the request's (REPLACE).
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        "/hdr/copied",
        &[("x-amz-copy-source", "/hdr/k")],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let (_, h, _) = call(&svc, Method::HEAD, "/hdr/copied", &[], vec![]).await;
    assert_eq!(header(&h, "cache-control"), "max-age=3600");
    assert_eq!(header(&h, "expires"), written[4].1);
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        "/hdr/replaced",
        &[
            ("x-amz-copy-source", "/hdr/k"),
            ("x-amz-metadata-directive", "REPLACE"),
            ("cache-control", "no-cache"),
        ],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let (_, h, _) = call(&svc, Method::HEAD, "/hdr/replaced", &[], vec![]).await;
    assert_eq!(header(&h, "cache-control"), "no-cache");
    assert!(h.get("content-disposition").is_none(), "{h:?}");
    // Multipart uploads carry the headers given at creation to the object.
    let id = create_upload(&svc, "/hdr/mp", &[("content-language", "it")]).await;
    let e1 = upload_part(&svc, "/hdr/mp", &id, 1, data(1000)).await;
    let (s, h, b) = complete(&svc, "/hdr/mp", &id, &[(1, &e1)]).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(header(&h, "x-amz-server-side-encryption"), "AES256");
    let (_, h, _) = call(&svc, Method::HEAD, "/hdr/mp", &[], vec![]).await;
    assert_eq!(header(&h, "content-language"), "it");
    // Encryption sublet cannot give is refused, naming it.
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        "/hdr/kms",
        &[("x-amz-server-side-encryption", "aws:kms")],
        data(10),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_IMPLEMENTED);
    assert!(String::from_utf8_lossy(&b).contains("aws:kms"));
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conditional_writes_let_exactly_one_writer_create_a_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (cluster, svc) = start(tmp.path()).await;
    let (s, _, _) = call(&svc, Method::PUT, "/cwrite", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let absent = [("if-none-match", "*")];
    let (s, h, _) = call(&svc, Method::PUT, "/cwrite/k", &absent, data(10)).await;
    assert_eq!(s, StatusCode::OK);
    let first = header(&h, "etag");
    let (s, _, b) = call(&svc, Method::PUT, "/cwrite/k", &absent, data(20)).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    assert!(String::from_utf8_lossy(&b).contains("PreconditionFailed"));
    let (s, _, _) = call(
        &svc,
        Method::PUT,
        "/cwrite/k",
        &[("if-match", "\"0123\"")],
        data(30),
    )
    .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        "/cwrite/missing",
        &[("if-match", "\"0123\"")],
        data(30),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{}", String::from_utf8_lossy(&b));
    let (s, _, _) = call(
        &svc,
        Method::PUT,
        "/cwrite/k",
        &[("if-match", first.as_str())],
        data(40),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, body) = call(&svc, Method::GET, "/cwrite/k", &[], vec![]).await;
    assert_eq!(body, data(40));

    // Writers racing to create one key: exactly one wins, every time.
    for round in 0..5 {
        let path = format!("/cwrite/race{round}");
        let racers = (0..6u8).map(|i| {
            let (svc, path) = (svc.clone(), path.clone());
            async move {
                let body = vec![i; 5000];
                let (s, _, _) =
                    call(&svc, Method::PUT, &path, &[("if-none-match", "*")], body).await;
                (s, i)
            }
        });
        let outcomes = futures::future::join_all(racers).await;
        let winners: Vec<u8> = outcomes
            .iter()
            .filter(|(s, _)| *s == StatusCode::OK)
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .all(|(s, _)| *s == StatusCode::OK || *s == StatusCode::PRECONDITION_FAILED),
            "{outcomes:?}"
        );
        let (_, _, body) = call(&svc, Method::GET, &path, &[], vec![]).await;
        assert_eq!(body, vec![winners[0]; 5000]);
    }

    // CompleteMultipartUpload with If-None-Match: * onto an existing key: 412, and the upload
    // stays open for a completion without the condition.
    let id = create_upload(&svc, "/cwrite/k", &[]).await;
    let e1 = upload_part(&svc, "/cwrite/k", &id, 1, data(1000)).await;
    let (s, _, b) = call(
        &svc,
        Method::POST,
        &format!("/cwrite/k?uploadId={id}"),
        &absent,
        completion(&[(1, &e1)]),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        String::from_utf8_lossy(&b)
    );
    let (s, _, b) = complete(&svc, "/cwrite/k", &id, &[(1, &e1)]).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_completion_gets_the_first_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let (cluster, svc) = start(tmp.path()).await;
    let (s, _, _) = call(&svc, Method::PUT, "/retry", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let id = create_upload(&svc, "/retry/k", &[]).await;
    let e1 = upload_part(&svc, "/retry/k", &id, 1, data(MIB * 5)).await;
    let e2 = upload_part(&svc, "/retry/k", &id, 2, data(1000)).await;
    let parts = [(1, e1.as_str()), (2, e2.as_str())];
    let (s, _, first) = complete(&svc, "/retry/k", &id, &parts).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&first));
    // The answer was lost; the client sends the same completion again.
    let (s, _, again) = complete(&svc, "/retry/k", &id, &parts).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&again));
    assert_eq!(tag(&again, "ETag"), tag(&first, "ETag"));
    // A completion listing other parts is not a retry of this one.
    let (s, _, b) = complete(&svc, "/retry/k", &id, &[(1, e1.as_str())]).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("NoSuchUpload"));
    // Once the key is overwritten, the old upload is gone for good.
    let (s, _, _) = call(&svc, Method::PUT, "/retry/k", &[], data(10)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = complete(&svc, "/retry/k", &id, &parts).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    drop(cluster);
}

fn tagging_xml(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut xml = String::from("<Tagging><TagSet>");
    for (k, v) in pairs {
        xml.push_str(&format!("<Tag><Key>{k}</Key><Value>{v}</Value></Tag>"));
    }
    xml.push_str("</TagSet></Tagging>");
    xml.into_bytes()
}

/// (key, value) pairs of a `<Tagging>` answer.
fn tag_pairs(xml: &[u8]) -> Vec<(String, String)> {
    tags(xml, "Key")
        .into_iter()
        .zip(tags(xml, "Value"))
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tags_follow_versions_copies_and_uploads() {
    let tmp = tempfile::tempdir().unwrap();
    let (_cluster, svc) = start(tmp.path()).await;
    let (s, _, _) = call(&svc, Method::PUT, "/tagged", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    set_versioning(&svc, "tagged", "Enabled").await;

    // x-amz-tagging is URL-query encoded; GET and HEAD count the tags.
    let (s, h, b) = call(
        &svc,
        Method::PUT,
        "/tagged/a",
        &[("x-amz-tagging", "class=temp&owner=J%C3%BCrgen+K")],
        data(1000),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let v1 = header(&h, "x-amz-version-id");
    let (_, h, _) = call(&svc, Method::GET, "/tagged/a", &[], vec![]).await;
    assert_eq!(header(&h, "x-amz-tagging-count"), "2");
    let (_, h, _) = call(&svc, Method::HEAD, "/tagged/a", &[], vec![]).await;
    assert_eq!(header(&h, "x-amz-tagging-count"), "2");
    let (s, _, b) = call(&svc, Method::GET, "/tagged/a?tagging", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        tag_pairs(&b),
        pairs(&[("class", "temp"), ("owner", "Jürgen K")])
    );

    // Bad tags are refused before anything is stored, naming the problem.
    let eleven: Vec<String> = (0..11).map(|i| format!("k{i}=v")).collect();
    for (bad, why) in [
        ("aws:created=x", "reserved"),
        ("a=1&a=2", "given twice"),
        (eleven.join("&").as_str(), "at most 10"),
        ("a=%zz", "URL-query encoded"),
    ] {
        let (s, _, b) = call(
            &svc,
            Method::PUT,
            "/tagged/bad",
            &[("x-amz-tagging", bad)],
            data(10),
        )
        .await;
        let b = String::from_utf8_lossy(&b);
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert!(b.contains("InvalidTag") && b.contains(why), "{bad}: {b}");
    }
    let (s, _, _) = call(&svc, Method::HEAD, "/tagged/bad", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A newer version starts untagged; the tagging API reaches either by versionId.
    let (_, h, _) = call(&svc, Method::PUT, "/tagged/a", &[], data(10)).await;
    let v2 = header(&h, "x-amz-version-id");
    let (_, h, _) = call(&svc, Method::GET, "/tagged/a", &[], vec![]).await;
    assert!(h.get("x-amz-tagging-count").is_none(), "{h:?}");
    let (s, h, b) = call(
        &svc,
        Method::PUT,
        &format!("/tagged/a?tagging&versionId={v1}"),
        &[],
        tagging_xml(&[("class", "keep")]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(header(&h, "x-amz-version-id"), v1);
    let (_, _, b) = call(
        &svc,
        Method::GET,
        &format!("/tagged/a?tagging&versionId={v1}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(tag_pairs(&b), pairs(&[("class", "keep")]));
    let (_, h, b) = call(&svc, Method::GET, "/tagged/a?tagging", &[], vec![]).await;
    assert!(tag_pairs(&b).is_empty());
    assert_eq!(header(&h, "x-amz-version-id"), v2);
    let (s, _, _) = call(
        &svc,
        Method::DELETE,
        &format!("/tagged/a?tagging&versionId={v1}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, _, b) = call(
        &svc,
        Method::GET,
        &format!("/tagged/a?tagging&versionId={v1}"),
        &[],
        vec![],
    )
    .await;
    assert!(tag_pairs(&b).is_empty(), "{}", String::from_utf8_lossy(&b));
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        "/tagged/a?tagging",
        &[],
        tagging_xml(&[("aws:x", "1")]),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("InvalidTag"));

    // A delete marker has no tags to read or write.
    let (_, h, _) = call(&svc, Method::DELETE, "/tagged/a", &[], vec![]).await;
    let marker = header(&h, "x-amz-version-id");
    for method in [Method::GET, Method::PUT] {
        let (s, _, _) = call(
            &svc,
            method.clone(),
            &format!("/tagged/a?tagging&versionId={marker}"),
            &[],
            if method == Method::PUT {
                tagging_xml(&[("k", "v")])
            } else {
                vec![]
            },
        )
        .await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }

    // Copies keep the source's tags unless the tagging directive says REPLACE.
    call(
        &svc,
        Method::PUT,
        "/tagged/src",
        &[("x-amz-tagging", "from=source")],
        data(100),
    )
    .await;
    let copy = |dest: &'static str, extra: Vec<(&'static str, &'static str)>| {
        let svc = &svc;
        async move {
            let mut headers = vec![("x-amz-copy-source", "/tagged/src")];
            headers.extend(extra);
            let (s, _, b) = call(svc, Method::PUT, dest, &headers, vec![]).await;
            assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
            let (_, _, b) = call(svc, Method::GET, &format!("{dest}?tagging"), &[], vec![]).await;
            tag_pairs(&b)
        }
    };
    assert_eq!(
        copy("/tagged/c1", vec![]).await,
        pairs(&[("from", "source")])
    );
    assert_eq!(
        copy(
            "/tagged/c2",
            vec![
                ("x-amz-tagging", "new=1"),
                ("x-amz-tagging-directive", "COPY")
            ]
        )
        .await,
        pairs(&[("from", "source")])
    );
    assert_eq!(
        copy(
            "/tagged/c3",
            vec![
                ("x-amz-tagging", "new=1"),
                ("x-amz-tagging-directive", "REPLACE")
            ]
        )
        .await,
        pairs(&[("new", "1")])
    );
    assert!(
        copy("/tagged/c4", vec![("x-amz-tagging-directive", "REPLACE")])
            .await
            .is_empty()
    );

    // A multipart upload's tags, given at its start, are the completed object's.
    let id = create_upload(&svc, "/tagged/big", &[("x-amz-tagging", "kind=multi")]).await;
    let etag = upload_part(&svc, "/tagged/big", &id, 1, data(1000)).await;
    let (s, _, b) = complete(&svc, "/tagged/big", &id, &[(1, &etag)]).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let (_, _, b) = call(&svc, Method::GET, "/tagged/big?tagging", &[], vec![]).await;
    assert_eq!(tag_pairs(&b), pairs(&[("kind", "multi")]));

    // Bucket tags: none until put, then what was put, until deleted.
    let (s, _, b) = call(&svc, Method::GET, "/tagged?tagging", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&b).contains("NoSuchTagSet"));
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        "/tagged?tagging",
        &[],
        tagging_xml(&[("team", "ops"), ("cost-centre", "42")]),
    )
    .await;
    assert!(s.is_success(), "{s}: {}", String::from_utf8_lossy(&b));
    let (s, _, b) = call(&svc, Method::GET, "/tagged?tagging", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        tag_pairs(&b),
        pairs(&[("cost-centre", "42"), ("team", "ops")])
    );
    let (s, _, _) = call(&svc, Method::DELETE, "/tagged?tagging", &[], vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = call(&svc, Method::GET, "/tagged?tagging", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_rules_filtered_by_tag_and_size_expire_only_what_they_select() {
    let tmp = tempfile::tempdir().unwrap();
    let (cluster, svc) = start(tmp.path()).await;
    let (s, _, _) = call(&svc, Method::PUT, "/sel", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = put_lifecycle(
        &svc,
        "sel",
        "<Rule><ID>temp</ID><Status>Enabled</Status>\
           <Filter><Tag><Key>class</Key><Value>temp</Value></Tag></Filter>\
           <Expiration><Days>1</Days></Expiration></Rule>\
         <Rule><ID>big-logs</ID><Status>Enabled</Status>\
           <Filter><And><Prefix>logs/</Prefix><ObjectSizeGreaterThan>500</ObjectSizeGreaterThan>\
           </And></Filter>\
           <Expiration><Days>1</Days></Expiration></Rule>",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _, b) = call(&svc, Method::GET, "/sel?lifecycle", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(tags(&b, "Key"), ["class"]);
    assert_eq!(tags(&b, "ObjectSizeGreaterThan"), ["500"]);
    assert_eq!(tags(&b, "Prefix"), ["logs/"]);
    assert_eq!(tags(&b, "And").len(), 1);

    for (key, tagging, len) in [
        ("t/tagged", Some("class=temp"), 10),
        ("t/other-value", Some("class=keep"), 10),
        ("t/untagged", None, 10),
        ("logs/big", None, 1000),
        ("logs/small", None, 10),
        ("big-elsewhere", None, 1000),
    ] {
        let headers: Vec<(&str, &str)> =
            tagging.map(|t| ("x-amz-tagging", t)).into_iter().collect();
        let (s, _, b) = call(
            &svc,
            Method::PUT,
            &format!("/sel/{key}"),
            &headers,
            data(len),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    }
    // Tagged after the write: the in-place change is what the rule sees.
    call(&svc, Method::PUT, "/sel/t/later", &[], data(10)).await;
    let (s, _, _) = call(
        &svc,
        Method::PUT,
        "/sel/t/later?tagging",
        &[],
        tagging_xml(&[("class", "temp")]),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    let report = sublet_gateway::upkeep::lifecycle::lifecycle_pass(
        &cluster.gateway,
        &Vec::new(),
        now_ms() + 3 * DAY_MS,
    )
    .await
    .unwrap();
    assert_eq!((report.expired, report.failed), (3, 0), "{report:?}");
    for (key, kept) in [
        ("t/tagged", false),
        ("t/later", false),
        ("logs/big", false),
        ("t/other-value", true),
        ("t/untagged", true),
        ("logs/small", true),
        ("big-elsewhere", true),
    ] {
        let (s, _, _) = call(&svc, Method::HEAD, &format!("/sel/{key}"), &[], vec![]).await;
        assert_eq!(s.is_success(), kept, "{key}: {s}");
    }

    // What sublet's engine cannot apply is refused by name.
    let (s, b) = put_lifecycle(
        &svc,
        "sel",
        "<Rule><ID>x</ID><Status>Enabled</Status>\
           <Filter><Tag><Key>class</Key><Value>temp</Value></Tag></Filter>\
           <AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation>\
           </AbortIncompleteMultipartUpload></Rule>",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.contains("uploads in progress"), "{b}");
}

/// Put/Get/DeleteBucketEncryption: AES256 kept and answered, aws:kms not implemented, a
/// bucket without a configuration answering its default plan's encryption, and writes
/// under an unencrypted plan refused while the bucket has a default encryption; SSE-C
/// refused under an unencrypted plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bucket_encryption_is_kept_answered_and_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let standard = plans().remove(0);
    let public = Plan {
        name: "public".into(),
        encrypt: false,
        ..standard.clone()
    };
    let (cluster, svc) = in_process::start(tmp.path(), 6, vec![standard, public]).await;
    let rule = |algorithm: &str| {
        format!(
            "<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>{algorithm}</SSEAlgorithm></ApplyServerSideEncryptionByDefault><BucketKeyEnabled>true</BucketKeyEnabled></Rule></ServerSideEncryptionConfiguration>"
        )
        .into_bytes()
    };
    for b in ["/bkt", "/open"] {
        assert_eq!(
            call(&svc, Method::PUT, b, &[], vec![]).await.0,
            StatusCode::OK
        );
    }
    cluster
        .gateway
        .metadata()
        .set_bucket_plan("open", Some("public"))
        .unwrap();

    // Without a configuration: what the default plan gives.
    let (s, _, b) = call(&svc, Method::GET, "/bkt?encryption", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("<SSEAlgorithm>AES256</SSEAlgorithm>"));
    let (s, _, b) = call(&svc, Method::GET, "/open?encryption", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("ServerSideEncryptionConfigurationNotFoundError"));
    let (s, _, b) = call(&svc, Method::PUT, "/open?encryption", &[], rule("AES256")).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert!(String::from_utf8_lossy(&b).contains("public"));

    let (s, _, b) = call(&svc, Method::PUT, "/bkt?encryption", &[], rule("aws:kms")).await;
    assert_eq!(
        s,
        StatusCode::NOT_IMPLEMENTED,
        "{}",
        String::from_utf8_lossy(&b)
    );
    let (s, _, b) = call(&svc, Method::PUT, "/bkt?encryption", &[], rule("AES256")).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let (s, _, b) = call(&svc, Method::GET, "/bkt?encryption", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8_lossy(&b);
    assert!(
        text.contains("<BucketKeyEnabled>true</BucketKeyEnabled>"),
        "{text}"
    );

    // While set, an unencrypted storage class is refused; after the delete it is not.
    let class = [("x-amz-storage-class", "public")];
    let (s, _, b) = call(&svc, Method::PUT, "/bkt/k", &class, b"x".to_vec()).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert!(String::from_utf8_lossy(&b).contains("default encryption"));
    let (s, _, _) = call(&svc, Method::DELETE, "/bkt?encryption", &[], vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, b) = call(&svc, Method::PUT, "/bkt/k", &class, b"x".to_vec()).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));

    // SSE-C under an unencrypted plan: refused, naming it.
    cluster.gateway.allow_customer_keys(true);
    let (key, key_md5) = {
        use base64::Engine;
        use md5::Digest;
        let b64 = base64::engine::general_purpose::STANDARD;
        (
            b64.encode([5u8; 32]),
            b64.encode(md5::Md5::digest([5u8; 32])),
        )
    };
    let sse_c = [
        ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
        ("x-amz-server-side-encryption-customer-key", key.as_str()),
        (
            "x-amz-server-side-encryption-customer-key-md5",
            key_md5.as_str(),
        ),
    ];
    let (s, _, b) = call(&svc, Method::PUT, "/open/k", &sse_c, b"x".to_vec()).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert!(String::from_utf8_lossy(&b).contains("public"));
    let (s, _, b) = call(&svc, Method::PUT, "/bkt/k2", &sse_c, b"x".to_vec()).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
}

/// One HTTP/1.1 exchange over a fresh connection: `head` (ending in the blank line), then
/// `body`; the status line and the body of the answer (read to the connection's end).
async fn raw_exchange(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    // The gateway may answer (and close) before it reads all of a body it refuses.
    let _ = conn.write_all(body).await;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        conn.read_to_end(&mut raw),
    )
    .await
    .expect("an answer within 30s");
    if let Err(e) = read {
        assert!(!raw.is_empty(), "no answer: {e}");
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// `data` in HTTP/1.1 chunked framing, in chunks of `size` bytes.
fn chunked(data: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn puts_without_content_length_stream_and_oversized_ones_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (cluster, svc) = start(tmp.path()).await;
    let (s, _, _) = call(&svc, Method::PUT, "/bkt", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sublet_gateway::runtime::serve_s3(
        listener,
        svc.clone(),
        None,
        sublet_crds::ClientLimits::default(),
        async {
            let _ = stop_rx.await;
        },
    ));

    // Chunked transfer encoding, no Content-Length: several segments and a short last one.
    let body = data(300_001);
    for (key, plan) in [("chunky", "standard"), ("small", "inline")] {
        let body = if key == "small" {
            &body[..100]
        } else {
            &body[..]
        };
        let head = format!(
            "PUT /bkt/{key} HTTP/1.1\r\nhost: {addr}\r\ntransfer-encoding: chunked\r\n\
             x-amz-storage-class: {plan}\r\nconnection: close\r\n\r\n"
        );
        let (status, answer) = raw_exchange(addr, &head, &chunked(body, 7000)).await;
        assert!(status.contains(" 200 "), "{status}\n{answer}");
        let (s, h, got) = call(&svc, Method::GET, &format!("/bkt/{key}"), &[], vec![]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            got == body,
            "{key}: {} bytes back of {}",
            got.len(),
            body.len()
        );
        assert_eq!(header(&h, "etag"), format!("\"{}\"", md5_hex(body)));
    }

    // A Content-Length over 5 GiB: refused before a byte is stored.
    let head = format!(
        "PUT /bkt/huge HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        (5u64 << 30) + 1
    );
    let (status, answer) = raw_exchange(addr, &head, &data(1000)).await;
    assert!(status.contains(" 400 "), "{status}\n{answer}");
    assert!(answer.contains("<Code>EntityTooLarge</Code>"), "{answer}");
    let (s, _, _) = call(&svc, Method::HEAD, "/bkt/huge", &[], vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let _ = stop_tx.send(());
    server.await.unwrap();
    for p in cluster.providers {
        p.shutdown().await;
    }
}
