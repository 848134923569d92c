//! The S3 listener against hostile clients, over real sockets: slow request heads, TLS
//! handshakes that never finish, more connections than it serves, Signature Version 2, and
//! big bodies from clients that are not who they claim to be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{Client, Reply, http_exchange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A gateway over one unreachable provider (nothing here stores objects) with `limits` as
/// its `clientLimits` and, with `tls`, a certificate for `localhost`.
async fn gateway(dir: &Path, limits: &str, tls: bool) -> sublet_gateway::runtime::Running {
    let tls_line = if tls {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.join("s3.crt"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("s3.key"), cert.signing_key.serialize_pem()).unwrap();
        format!(
            "  tls: {{certFile: \"{d}/s3.crt\", keyFile: \"{d}/s3.key\"}}\n",
            d = dir.display()
        )
    } else {
        String::new()
    };
    let spec = format!("  clientLimits: {limits}\n{tls_line}");
    gateway_with(dir, "127.0.0.1:0", &spec).await
}

/// A gateway over one unreachable provider listening on `listen`, with `spec` (indented
/// StorageGateway spec lines) added to its spec.
async fn gateway_with(dir: &Path, listen: &str, spec: &str) -> sublet_gateway::runtime::Running {
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
  listen: "{listen}"
  dataDir: "{dir}"
  credentials: [{{accessKey: admin, secretKey: admin-secret-0123456789}}]
{spec}"#,
        dir = dir.display()
    );
    let config = sublet_crds::load_str("sublet.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
    sublet_gateway::runtime::start(&config, &Default::default())
        .await
        .unwrap()
}

/// Reads until the peer closes (or resets) the connection; how long that took, or `None`
/// if it was still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_and_idle_connections_are_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let running = gateway(tmp.path(), "{headerTimeout: 1s}", false).await;
    let addr = running.s3_addr;

    // A slowloris client: a byte of its request head every 100 ms, forever.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let drip = async {
        for b in b"GET / HTTP/1.1\r\nhost: localhost\r\nx-padding: "
            .iter()
            .cycle()
        {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let dripped = tokio::time::timeout(Duration::from_secs(5), drip).await;
    assert!(
        dripped.is_ok(),
        "a request head dripping a byte every 100 ms was still read after 5s"
    );
    let after_close = closed_within(&mut slow, Duration::from_secs(1)).await;
    assert!(after_close.is_some(), "the slow connection stayed open");

    // A connection that never says anything, and one idle after its request.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(5)).await;
    let took = took.expect("a silent connection was still open after 5s");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    idle.read_exact(&mut answer).await.unwrap();
    assert_eq!(
        &answer, b"HTTP/1.1 403",
        "an anonymous ListBuckets is refused"
    );
    let took = closed_within(&mut idle, Duration::from_secs(5)).await;
    assert!(
        took.is_some(),
        "an idle keep-alive connection was still open after 5s"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_that_do_not_finish_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let running = gateway(
        tmp.path(),
        "{tlsHandshakeTimeout: 1s, headerTimeout: 30s}",
        true,
    )
    .await;
    // A TCP connection that starts no handshake, and one that sends half a ClientHello.
    let mut silent = TcpStream::connect(running.s3_addr).await.unwrap();
    let mut half = TcpStream::connect(running.s3_addr).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    let opened = Instant::now();
    for (name, stream) in [("silent", &mut silent), ("half a hello", &mut half)] {
        let closed = closed_within(stream, Duration::from_secs(5)).await;
        assert!(closed.is_some(), "{name}: still open after 5s");
        let took = opened.elapsed();
        assert!(
            took >= Duration::from_millis(500),
            "{name}: closed after {took:?}"
        );
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let tmp = tempfile::tempdir().unwrap();
    let running = gateway(tmp.path(), "{maxConnections: 2, headerTimeout: 30s}", false).await;
    let addr = running.s3_addr;
    let first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    // The kernel completes the third connection; the gateway does not serve it yet.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(700), third.read_to_end(&mut answer)).await;
    assert!(
        early.is_err(),
        "a third connection was served with 2 allowed: {:?}",
        String::from_utf8_lossy(&answer)
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut answer))
        .await
        .expect("the third connection was not served once a slot was free")
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 403"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    running.shutdown().await;
}

/// `Authorization: AWS key:signature` over `string_to_sign`, as SigV2 clients send it.
fn sig_v2(secret: &str, string_to_sign: &str) -> String {
    use base64::Engine;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_version_2_is_refused_even_when_correct() {
    let tmp = tempfile::tempdir().unwrap();
    let running = gateway(tmp.path(), "{}", false).await;
    let addr = running.s3_addr;
    let secret = "admin-secret-0123456789";
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let signature = sig_v2(secret, &format!("GET\n\n\n{date}\n/"));
    let head = format!(
        "GET / HTTP/1.1\r\nhost: localhost\r\ndate: {date}\r\n\
         authorization: AWS admin:{signature}\r\nconnection: close\r\n\r\n"
    );
    let header = http_exchange(addr, head.as_bytes(), b"").await;
    let expires = chrono::Utc::now().timestamp() + 600;
    let signature = sig_v2(secret, &format!("GET\n\n\n{expires}\n/"));
    let encoded: String = signature
        .bytes()
        .map(|b| match b {
            b'+' => "%2B".to_owned(),
            b'/' => "%2F".to_owned(),
            b'=' => "%3D".to_owned(),
            b => (b as char).to_string(),
        })
        .collect();
    let head = format!(
        "GET /?AWSAccessKeyId=admin&Expires={expires}&Signature={encoded} HTTP/1.1\r\n\
         host: localhost\r\nconnection: close\r\n\r\n"
    );
    let query = http_exchange(addr, head.as_bytes(), b"").await;
    for (name, reply) in [("header", header), ("query", query)] {
        assert_eq!(reply.status, 400, "{name}: {}", reply.text());
        assert!(
            reply.text().contains("<Code>InvalidRequest</Code>")
                && reply.text().contains("Signature Version 2 is not accepted"),
            "{name}: {}",
            reply.text()
        );
    }
    // The same key signing with SigV4 is served.
    let reply = Client::admin(addr).send("GET", "/", &[], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    running.shutdown().await;
}

/// Sends `head`, then up to `body_len` bytes of body as fast as the gateway takes them,
/// while reading its answer: (the answer, body bytes the gateway took before answering).
async fn flood(addr: SocketAddr, head: String, body_len: u64) -> (Reply, u64) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = std::sync::Arc::clone(&sent);
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'x'; 64 << 10];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(chunk.len() as u64);
            #[allow(clippy::cast_possible_truncation)]
            if write.write_all(&chunk[..n as usize]).await.is_err() {
                break;
            }
            counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            left -= n;
        }
        write
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer is complete when the gateway closes or it has a whole XML document.
    let read_answer = async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
            if raw.ends_with(b"</Error>") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_answer)
        .await
        .expect("no answer within 30s");
    let taken = sent.load(std::sync::atomic::Ordering::Relaxed);
    writer.abort();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.as_bytes().to_vec())
        .unwrap_or_default();
    (Reply { status, body }, taken)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_bodies_of_strangers_are_refused_unread() {
    let tmp = tempfile::tempdir().unwrap();
    let running = gateway(tmp.path(), "{}", false).await;
    let addr = running.s3_addr;
    // Strangers send 200 MB each to a bucket (whether it exists is no business of theirs).
    const BIG: u64 = 200 << 20;
    // What the loopback socket buffers hold, at most, beyond what the gateway read.
    const SMALL: u64 = 24 << 20;

    // An anonymous browser-form upload: its fields are read (at most 20 KiB), its file
    // never is.
    let boundary = "----sublet";
    let form_head = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"key\"\r\n\r\nbig.bin\r\n\
         --{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\
         content-type: application/octet-stream\r\n\r\n"
    );
    let head = format!(
        "POST /open HTTP/1.1\r\nhost: localhost\r\ncontent-type: multipart/form-data; \
         boundary={boundary}\r\ncontent-length: {}\r\n\r\n{form_head}",
        BIG + form_head.len() as u64
    );
    let (reply, taken) = flood(addr, head, BIG).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(reply.text().contains("AccessDenied"), "{}", reply.text());
    assert!(
        taken < SMALL,
        "the gateway took {taken} bytes of a form upload"
    );
    // A form signed with a forged signature: refused once its fields are read.
    use base64::Engine;
    let date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let credential = format!("admin/{}/us-east-1/s3/aws4_request", &date[..8]);
    let policy = base64::engine::general_purpose::STANDARD.encode(format!(
        r#"{{"expiration":"2099-01-01T00:00:00.000Z","conditions":[{{"bucket":"open"}},["eq","$key","big.bin"],{{"x-amz-algorithm":"AWS4-HMAC-SHA256"}},{{"x-amz-credential":"{credential}"}},{{"x-amz-date":"{date}"}}]}}"#
    ));
    let field = |name: &str, value: &str| {
        format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        )
    };
    let form_head = [
        field("key", "big.bin"),
        field("policy", &policy),
        field("x-amz-algorithm", "AWS4-HMAC-SHA256"),
        field("x-amz-credential", &credential),
        field("x-amz-date", &date),
        field("x-amz-signature", &"0".repeat(64)),
        format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n"
        ),
    ]
    .concat();
    let head = format!(
        "POST /open HTTP/1.1\r\nhost: localhost\r\ncontent-type: multipart/form-data; \
         boundary={boundary}\r\ncontent-length: {}\r\n\r\n{form_head}",
        BIG + form_head.len() as u64
    );
    let (reply, taken) = flood(addr, head, BIG).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(
        reply.text().contains("SignatureDoesNotMatch"),
        "{}",
        reply.text()
    );
    assert!(
        taken < SMALL,
        "the gateway took {taken} bytes of a badly signed form upload"
    );

    // An anonymous PUT, and one signed with a key the gateway does not know the secret of.
    let head =
        format!("PUT /open/big.bin HTTP/1.1\r\nhost: localhost\r\ncontent-length: {BIG}\r\n\r\n");
    let (reply, taken) = flood(addr, head, BIG).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(
        taken < SMALL,
        "the gateway took {taken} bytes of an anonymous PUT"
    );
    let forger = Client {
        addr,
        access_key: "admin".into(),
        secret_key: "not-the-secret".into(),
    };
    let (head, _) = forger.sign("PUT", "/open/big.bin", &[], b"");
    let head = head.replace("content-length: 0", &format!("content-length: {BIG}"));
    let (reply, taken) = flood(addr, head, BIG).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(
        reply.text().contains("SignatureDoesNotMatch"),
        "{}",
        reply.text()
    );
    assert!(
        taken < SMALL,
        "the gateway took {taken} bytes of a forged PUT"
    );
    running.shutdown().await;
}

/// SSE-C behind a TLS-terminating proxy: on a listener that is neither TLS nor loopback-only,
/// a request carrying a customer's key passes only from a peer in `spec.s3.trustedProxies`
/// saying `X-Forwarded-Proto: https`; the same header from anyone else changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_keys_pass_only_from_trusted_proxies_that_terminated_tls() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use md5::Digest;
    let raw = [9u8; 32];
    let key = STANDARD.encode(raw);
    let key_md5 = STANDARD.encode(md5::Md5::digest(raw));
    let sse_c = |forwarded: Option<&'static str>| {
        let mut headers = vec![
            (
                "x-amz-server-side-encryption-customer-algorithm",
                "AES256".to_owned(),
            ),
            ("x-amz-server-side-encryption-customer-key", key.clone()),
            (
                "x-amz-server-side-encryption-customer-key-md5",
                key_md5.clone(),
            ),
        ];
        if let Some(proto) = forwarded {
            headers.push(("x-forwarded-proto", proto.to_owned()));
        }
        headers
    };
    let refused = |reply: &Reply| {
        reply.status == 400
            && reply
                .text()
                .contains("must be made over a secure connection")
    };
    for (trusted, peer_trusted) in [("127.0.0.1", true), ("10.0.0.0/8", false)] {
        let tmp = tempfile::tempdir().unwrap();
        let spec = format!("  s3: {{trustedProxies: [\"{trusted}\"]}}\n");
        let running = gateway_with(tmp.path(), "0.0.0.0:0", &spec).await;
        let addr = SocketAddr::from(([127, 0, 0, 1], running.s3_addr.port()));
        let client = Client::admin(addr);
        // The bucket is made (its journal entry waits for the unreachable provider: 503).
        let made = client.send("PUT", "/vault", &[], b"").await;
        assert!([200, 503].contains(&made.status), "{}", made.text());
        for forwarded in [None, Some("http"), Some("https")] {
            let headers = sse_c(forwarded);
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let reply = client
                .send("PUT", "/vault/secret.txt", &headers, b"data")
                .await;
            let passes = peer_trusted && forwarded == Some("https");
            assert_eq!(
                refused(&reply),
                !passes,
                "trusted {trusted}, X-Forwarded-Proto {forwarded:?}: {} {}",
                reply.status,
                reply.text()
            );
        }
        running.shutdown().await;
    }
}
