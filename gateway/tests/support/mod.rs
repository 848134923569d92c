//! What the HTTP-level gateway tests share: a minimal SigV4 S3 client over HTTP/1.1.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal S3 client: SigV4 (path style, region us-east-1) over HTTP/1.1.
pub struct Client {
    pub addr: SocketAddr,
    pub access_key: String,
    pub secret_key: String,
}

impl Client {
    /// The key every gateway file of these tests allows everything.
    pub fn admin(addr: SocketAddr) -> Self {
        Client {
            addr,
            access_key: "admin".into(),
            secret_key: "admin-secret-0123456789".into(),
        }
    }
}

pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

impl Client {
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let (head, body) = self.sign(method, path, headers, body);
        http_exchange(self.addr, head.as_bytes(), &body).await
    }

    /// The request head (SigV4-signed) and body.
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (String, Vec<u8>) {
        let now = chrono::Utc::now();
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let date = now.format("%Y%m%d").to_string();
        let host = self.addr.to_string();
        let payload = hex::encode(Sha256::digest(body));
        // The query (already percent-encoded by the caller), sorted, each with `=`.
        let (bare_path, query) = path.split_once('?').unwrap_or((path, ""));
        let mut pairs: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                if p.contains('=') {
                    p.to_string()
                } else {
                    format!("{p}=")
                }
            })
            .collect();
        pairs.sort();
        let query = pairs.join("&");
        let canonical = format!(
            "{method}\n{bare_path}\n{query}\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n\n\
             host;x-amz-content-sha256;x-amz-date\n{payload}"
        );
        let scope = format!("{date}/us-east-1/s3/aws4_request");
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac(format!("AWS4{}", self.secret_key).as_bytes(), &date);
        for part in ["us-east-1", "s3", "aws4_request"] {
            key = hmac(&key, part);
        }
        let signature = hex::encode(hmac(&key, &to_sign));
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {host}\r\nx-amz-date: {amz_date}\r\n\
             x-amz-content-sha256: {payload}\r\ncontent-length: {}\r\nconnection: close\r\n\
             authorization: AWS4-HMAC-SHA256 Credential={}/{scope}, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}\r\n",
            body.len(),
            self.access_key
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        (head, body.to_vec())
    }
}

/// Sends one request and reads the whole response (Content-Length or chunked).
pub async fn http_exchange(addr: SocketAddr, head: &[u8], body: &[u8]) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange(stream, head, body).await
}

pub async fn exchange(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    head: &[u8],
    body: &[u8],
) -> Reply {
    stream.write_all(head).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut rest = &raw[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16)
                .unwrap();
            rest = &rest[end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        out
    } else {
        rest.to_vec()
    };
    Reply { status, body }
}
