//! Answers real S3 clients expect where s3s alone would answer otherwise: a Range that does
//! not parse is ignored, GetObjectAttributes' ETag is unquoted, a copy source without a key
//! is an invalid argument. A dev-like cluster in one process, driven through the HTTP
//! service as `sublet dev` serves it (no signatures).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod in_process;

use http::{Method, StatusCode};
use sublet_gateway::datapath::layout::Scheme;
use sublet_gateway::node::Plan;
use sublet_gateway::runtime::dev::Cluster;
use sublet_gateway::s3::http::MeteredService as S3Service;

async fn call(
    svc: &S3Service,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, http::HeaderMap, String) {
    let (status, headers, body) = in_process::call(svc, method, uri, headers, body).await;
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// A cluster of six in-process providers with one 4+2 plan, a bucket `answers` and an object
/// `answers/obj` of `data` in it.
async fn start(dir: &std::path::Path, data: &[u8]) -> (Cluster, S3Service) {
    let plan = Plan {
        name: "standard".into(),
        scheme: Scheme::Erasure { data: 4, parity: 2 },
        encrypt: true,
        segment_size: 64 << 10,
        write_quorum: 6,
        inline_up_to: 0,
    };
    let (cluster, svc) = in_process::start(dir, 6, vec![plan]).await;
    let (s, _, b) = call(&svc, Method::PUT, "/answers", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _, b) = call(&svc, Method::PUT, "/answers/obj", &[], data.to_vec()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    (cluster, svc)
}

fn tag(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no {name} in {xml}"))
        + open.len();
    let end = start + xml[start..].find('<').unwrap();
    xml[start..end].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_s3_cannot_parse_are_ignored_and_unsatisfiable_ones_are_416() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..100u8).collect();
    let (_cluster, svc) = start(tmp.path(), &data).await;
    // Not a range S3 parses: the whole object, 200, no Content-Range (RFC 9110 lets a
    // server ignore it; S3 does).
    for range in [
        "bytes=abc",
        "bytes=5-2",
        "bytes=0-1,3-4",
        "items=0-9",
        "bytes=",
        "bytes 0-9",
        "bytes=--5",
    ] {
        for method in [Method::GET, Method::HEAD] {
            let (s, h, b) = call(
                &svc,
                method.clone(),
                "/answers/obj",
                &[("range", range)],
                vec![],
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{method} {range}: {b}");
            assert!(h.get("content-range").is_none(), "{method} {range}");
            assert_eq!(h["content-length"], "100", "{method} {range}");
            if method == Method::GET {
                assert_eq!(b.as_bytes(), &data[..], "{range}");
            }
        }
    }
    // Well formed, within the object: 206.
    let (s, h, b) = call(
        &svc,
        Method::GET,
        "/answers/obj",
        &[("range", "bytes=90-")],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(h["content-range"], "bytes 90-99/100");
    assert_eq!(b.as_bytes(), &data[90..]);
    // Well formed, outside the object: 416 InvalidRange.
    for range in ["bytes=100-", "bytes=200-300", "bytes=-0"] {
        let (s, _, b) = call(
            &svc,
            Method::GET,
            "/answers/obj",
            &[("range", range)],
            vec![],
        )
        .await;
        assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE, "{range}: {b}");
        assert_eq!(tag(&b, "Code"), "InvalidRange", "{range}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_object_attributes_answers_the_etag_unquoted() {
    let tmp = tempfile::tempdir().unwrap();
    let (_cluster, svc) = start(tmp.path(), b"hello").await;
    let (s, h, _) = call(&svc, Method::HEAD, "/answers/obj", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let quoted = h["etag"].to_str().unwrap().to_owned();
    assert_eq!(quoted, "\"5d41402abc4b2a76b9719d911017c592\"");
    let (s, _, b) = call(
        &svc,
        Method::GET,
        "/answers/obj?attributes",
        &[("x-amz-object-attributes", "ETag,ObjectSize")],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(tag(&b, "ETag"), quoted.trim_matches('"'), "{b}");
    assert_eq!(tag(&b, "ObjectSize"), "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_source_without_a_key_is_an_invalid_argument() {
    let tmp = tempfile::tempdir().unwrap();
    let (_cluster, svc) = start(tmp.path(), b"hello").await;
    for source in ["answers/", "/answers/", "answers/?versionId=null"] {
        let (s, _, b) = call(
            &svc,
            Method::PUT,
            "/answers/copy",
            &[("x-amz-copy-source", source)],
            vec![],
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{source}: {b}");
        assert_eq!(tag(&b, "Code"), "InvalidArgument", "{source}");
        assert_eq!(tag(&b, "Message"), "Invalid copy source object key");
    }
    // The same for UploadPartCopy.
    let (s, _, b) = call(&svc, Method::POST, "/answers/mp?uploads", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let upload = tag(&b, "UploadId");
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        &format!("/answers/mp?partNumber=1&uploadId={upload}"),
        &[("x-amz-copy-source", "answers/")],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(tag(&b, "Code"), "InvalidArgument");
    // A copy source with a key still copies.
    let (s, _, b) = call(
        &svc,
        Method::PUT,
        "/answers/copy",
        &[("x-amz-copy-source", "answers/obj")],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}
