//! Hostile clients against a real `sublet serve`: a slowloris client dripping request heads
//! one byte at a time over many connections, and key holders whose PUTs stall mid-body
//! while holding upload budget. Another client's PUT and GET must go through meanwhile.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sublet_e2e::bench::content::Content;
use sublet_e2e::cluster::{Cluster, TestObject};

const PLAN: &str = "big-segments";
const BUCKET: &str = "hostile";
/// The `clientLimits` the test gives the gateway: short, so the test stays short.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const BODY_TIMEOUT: Duration = Duration::from_secs(2);

/// A 4+2 plan in 16 MiB segments: each stalled PUT takes a whole segment of the 64 MiB
/// upload budget as soon as its first bytes arrive.
const POLICIES: &str = r#"
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: big-segments}
spec:
  redundancy: {erasure: {dataShards: 4, parityShards: 2}}
  segmentSize: 16Mi
  placement: {spreadBy: node, maxPerDomain: 1}
"#;

/// A cluster of 6 providers whose gateway runs with short client timeouts.
fn cluster(dir: &std::path::Path) -> Cluster {
    let mut cluster = Cluster::start(dir, 6, POLICIES, PLAN);
    cluster.kill_gateway();
    let mut yaml = std::fs::read_to_string(&cluster.config).unwrap();
    yaml.push_str(&format!(
        "  clientLimits: {{headerTimeout: {}s, bodyTimeout: {}s}}\n",
        HEADER_TIMEOUT.as_secs(),
        BODY_TIMEOUT.as_secs()
    ));
    std::fs::write(&cluster.config, yaml).unwrap();
    cluster.start_gateway();
    cluster.create_bucket(BUCKET);
    cluster
}

/// Reads what the gateway says on `stream` until it closes it, for at most `limit`:
/// (the text, whether it closed).
fn answer_and_close(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let deadline = Instant::now() + limit;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&raw).into_owned(), false);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&raw).into_owned(), true),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&raw).into_owned(), true),
        }
    }
}

#[test]
fn slowloris_and_stalled_uploads_do_not_stop_other_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = cluster(tmp.path());
    let earlier = TestObject {
        key: "earlier".into(),
        len: 3 << 20,
    };
    cluster.put(BUCKET, &earlier);

    // Slowloris: 64 connections, each sending its request head a byte every 100 ms.
    let slowloris = std::thread::spawn({
        let addr = cluster.s3;
        move || {
            let head = b"GET /hostile/earlier HTTP/1.1\r\nhost: localhost\r\nx-slow: ";
            let mut open: Vec<TcpStream> =
                (0..64).map(|_| TcpStream::connect(addr).unwrap()).collect();
            let started = Instant::now();
            let mut sent = 0;
            while !open.is_empty() && started.elapsed() < Duration::from_secs(15) {
                let byte = head[sent % head.len()];
                open.retain_mut(|s| s.write_all(&[byte]).is_ok());
                sent += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            (open.len(), started.elapsed())
        }
    });

    // Six key holders each start a 100 MiB PUT, send 64 KiB and stall: four whole
    // segments fill the upload budget, two more wait for it.
    let mut stalled: Vec<TcpStream> = (0..6)
        .map(|i| {
            let head =
                cluster.signed_head("PUT", BUCKET, &format!("stalled-{i}"), &[], Some(100 << 20));
            let mut s = TcpStream::connect(cluster.s3).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&vec![b's'; 64 << 10]).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    // Another client meanwhile: a 5 MiB PUT and two GETs, all within a few seconds. The
    // PUT needs upload budget the first four stalled uploads hold until their body timeout
    // gives it back.
    let started = Instant::now();
    let content = Content::for_key("meanwhile", 5 << 20);
    cluster
        .put_content(BUCKET, "meanwhile", content)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tail()));
    cluster.verify(BUCKET, "meanwhile", &[], content).unwrap();
    cluster.read_back(BUCKET, &earlier).unwrap();
    let took = started.elapsed();
    assert!(
        took < BODY_TIMEOUT * 2 + Duration::from_secs(4),
        "another client's PUT and GETs took {took:?} beside stalled uploads"
    );

    // Each stalled upload is told RequestTimeout and its connection closed.
    for (i, s) in stalled.iter_mut().enumerate() {
        let (text, closed) = answer_and_close(s, BODY_TIMEOUT * 3 + Duration::from_secs(5));
        assert!(
            text.starts_with("HTTP/1.1 400") && text.contains("<Code>RequestTimeout</Code>"),
            "stalled PUT {i} was answered: {text}"
        );
        assert!(closed, "stalled PUT {i}: the connection stayed open");
    }
    // Nothing of them was stored.
    let listing = cluster
        .request(
            http::Method::GET,
            BUCKET,
            None,
            &[],
            sublet_e2e::bench::client::BenchBody::empty(),
        )
        .unwrap();
    assert!(!listing.contains("stalled-"), "{listing}");

    let (still_open, dripped) = slowloris.join().unwrap();
    assert_eq!(
        still_open, 0,
        "{still_open} slowloris connections were still open after {dripped:?}"
    );
    assert!(
        dripped < HEADER_TIMEOUT + Duration::from_secs(5),
        "slowloris connections lasted {dripped:?}"
    );
}
