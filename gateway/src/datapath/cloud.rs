//! An S3-compatible bucket as a shard provider: each shard is an object
//! `<prefix><shard id>`, written and read with SigV4-signed path-style requests. Shards are
//! sealed before they get here, and reads are checked against the hash recorded at write
//! time by the data path, so the bucket's owner sees only ciphertext and cannot lie.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ring::{digest, hmac};

use crate::datapath::stripes::{BackendError, ShardBackend};

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Where and as whom to store shards.
#[derive(Clone)]
pub struct BucketTarget {
    /// `https://host[:port]` (no trailing slash).
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for BucketTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketTarget")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl BucketTarget {
    /// The provider id placement and layouts use for this bucket: stable for the same
    /// endpoint, bucket and prefix, whatever the member is called.
    pub fn node_id(&self) -> String {
        let mut h = blake3::Hasher::new();
        for part in [&self.endpoint, &self.bucket, &self.prefix] {
            h.update(part.as_bytes());
            h.update(&[0]);
        }
        format!("cloud-{}", &h.finalize().to_hex()[..24])
    }
}

/// Shards as objects in an S3-compatible bucket.
pub struct CloudBackend {
    target: BucketTarget,
    node_id: String,
    host: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

fn hex_sha256(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
        .as_ref()
        .to_vec()
}

/// RFC 3986 percent-encoding as SigV4 wants it (`/` kept in paths).
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The SigV4 `Authorization` header for a request with the given canonical parts.
#[allow(clippy::too_many_arguments)]
fn authorization(
    access_key: &str,
    secret_key: &str,
    region: &str,
    amz_date: &str,
    method: &str,
    path: &str,
    query: &str,
    host: &str,
    payload_hash: &str,
) -> String {
    let date = &amz_date[..8];
    let canonical = format!(
        "{method}\n{path}\n{query}\nhost:{host}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{amz_date}\n\n\
         host;x-amz-content-sha256;x-amz-date\n{payload_hash}"
    );
    let scope = format!("{date}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical.as_bytes())
    );
    let mut key = hmac_sha256(format!("AWS4{secret_key}").as_bytes(), date);
    for part in [region, "s3", "aws4_request"] {
        key = hmac_sha256(&key, part);
    }
    let signature = hex::encode(hmac_sha256(&key, &to_sign));
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, \
         SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}"
    )
}

impl CloudBackend {
    pub fn new(target: BucketTarget) -> Result<Self, String> {
        let endpoint = target.endpoint.trim_end_matches('/').to_string();
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e| format!("endpoint {endpoint:?}: {e}"))?;
        let host = uri
            .authority()
            .map(ToString::to_string)
            .ok_or_else(|| format!("endpoint {endpoint:?} has no host"))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("loading the system's CA certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let target = BucketTarget { endpoint, ..target };
        Ok(Self {
            node_id: target.node_id(),
            target,
            host,
            client,
        })
    }

    pub fn target(&self) -> &BucketTarget {
        &self.target
    }

    /// Sends a signed request for `key` (None = the bucket itself) and returns the status
    /// and body.
    async fn send(
        &self,
        method: Method,
        key: Option<&str>,
        query: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), BackendError> {
        let t = &self.target;
        let path = match key {
            Some(k) => format!("/{}/{}", t.bucket, uri_encode(k, true)),
            None => format!("/{}", t.bucket),
        };
        let payload_hash = hex_sha256(&body);
        let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let auth = authorization(
            &t.access_key,
            &t.secret_key,
            &t.region,
            &amz_date,
            method.as_str(),
            &path,
            query,
            &self.host,
            &payload_hash,
        );
        let url = if query.is_empty() {
            format!("{}{path}", t.endpoint)
        } else {
            format!("{}{path}?{query}", t.endpoint)
        };
        let request = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header(http::header::HOST, &self.host)
            .header("x-amz-date", &amz_date)
            .header("x-amz-content-sha256", &payload_hash)
            .header(http::header::AUTHORIZATION, auth)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(Full::new(body))
            .map_err(|e| BackendError(format!("{method} {url}: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| BackendError(format!("{method} {url}: {e}")))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| BackendError(format!("{method} {url}: reading the answer: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                BackendError(format!("{method} {url}: no answer in {REQUEST_TIMEOUT:?}"))
            })?
    }

    fn failure(&self, call: &str, status: StatusCode, body: &[u8]) -> BackendError {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
        let code = text
            .split("<Code>")
            .nth(1)
            .and_then(|r| r.split("</Code>").next())
            .unwrap_or("");
        BackendError(format!(
            "bucket {} at {}: {call} answered {status} {code}",
            self.target.bucket, self.target.endpoint
        ))
    }

    /// Checks that the bucket answers and the keys are accepted (a one-key listing).
    pub async fn probe(&self) -> Result<(), BackendError> {
        let query = format!(
            "list-type=2&max-keys=1&prefix={}",
            uri_encode(&self.target.prefix, false)
        );
        let (status, body) = self.send(Method::GET, None, &query, Bytes::new()).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(self.failure("ListObjectsV2", status, &body))
        }
    }

    fn key(&self, shard_id: &str) -> String {
        format!("{}{shard_id}", self.target.prefix)
    }
}

#[async_trait]
impl ShardBackend for CloudBackend {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    /// A bucket cannot check BLAKE3: a successful PutObject acknowledges `hash`, the hash
    /// of the bytes sent, and reads check what comes back against it.
    async fn put(
        &self,
        shard_id: &str,
        data: Bytes,
        hash: &[u8; 32],
    ) -> Result<[u8; 32], BackendError> {
        let (status, body) = self
            .send(Method::PUT, Some(&self.key(shard_id)), "", data)
            .await?;
        if status.is_success() {
            Ok(*hash)
        } else {
            Err(self.failure("PutObject", status, &body))
        }
    }

    async fn get(&self, shard_id: &str) -> Result<Bytes, BackendError> {
        let (status, body) = self
            .send(Method::GET, Some(&self.key(shard_id)), "", Bytes::new())
            .await?;
        match status {
            s if s.is_success() => Ok(body),
            StatusCode::NOT_FOUND => Err(BackendError(format!(
                "NotFound: shard {shard_id} is not in bucket {}",
                self.target.bucket
            ))),
            s => Err(self.failure("GetObject", s, &body)),
        }
    }

    async fn delete(&self, shard_id: &str) -> Result<(), BackendError> {
        let (status, body) = self
            .send(Method::DELETE, Some(&self.key(shard_id)), "", Bytes::new())
            .await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(self.failure("DeleteObject", status, &body))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// AWS's published example (GET Object, "Signature Calculations for the Authorization
    /// Header: Transferring Payload in a Single Chunk", range header left out of ours, so
    /// the example without it: GET Bucket Lifecycle is signed with host,
    /// x-amz-content-sha256 and x-amz-date only).
    #[test]
    fn signature_matches_the_aws_example() {
        let auth = authorization(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "us-east-1",
            "20130524T000000Z",
            "GET",
            "/",
            "lifecycle=",
            "examplebucket.s3.amazonaws.com",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
             Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        );
    }

    #[test]
    fn keys_are_encoded_and_ids_are_stable() {
        assert_eq!(uri_encode("a b/c+d", true), "a%20b/c%2Bd");
        assert_eq!(uri_encode("x/", false), "x%2F");
        let t = BucketTarget {
            endpoint: "https://s3.example.com".into(),
            bucket: "b".into(),
            prefix: "p/".into(),
            region: "us-east-1".into(),
            access_key: "k".into(),
            secret_key: "s".into(),
        };
        let other = BucketTarget {
            prefix: "q/".into(),
            ..t.clone()
        };
        assert_eq!(t.node_id(), t.clone().node_id());
        assert_ne!(t.node_id(), other.node_id());
        assert!(t.node_id().starts_with("cloud-"));
        assert!(
            !format!("{t:?}").contains("\"s\""),
            "the secret must not be logged"
        );
    }
}
