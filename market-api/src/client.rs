//! A small client for the market's REST API: plain HTTP/1.1 over TCP (no TLS;
//! put the market behind a TLS proxy), signing requests with a [`Signer`].
//! The `sublet-market` CLI and the tests use it.

use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::identity::{Role, Signer};
use crate::receipts::UsageReceipt;
use crate::{Error, Result};

#[derive(Clone)]
pub struct Client {
    /// `host:port`.
    authority: String,
    /// Unix seconds used to sign requests.
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

/// An answer: the status and the JSON body (`null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// The body as text (for answers that aren't JSON, like `/metrics`).
    pub text: String,
}

impl Reply {
    /// The body of a 2xx answer, or an error carrying the market's message.
    pub fn ok(self) -> Result<Value> {
        if (200..300).contains(&self.status) {
            Ok(self.body)
        } else {
            Err(Error::BadRequest(format!(
                "market answered {}: {}",
                self.status, self.body
            )))
        }
    }

    /// The `error.code` of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Client {
    /// `url` is `http://host:port`.
    pub fn new(url: &str) -> Result<Self> {
        let authority = url
            .strip_prefix("http://")
            .ok_or_else(|| {
                Error::BadRequest(format!("market url must start with http://, got {url:?}"))
            })?
            .trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(Error::BadRequest(format!(
                "market url must be http://host:port without a path, got {url:?}"
            )));
        }
        Ok(Self {
            authority: authority.into(),
            clock: Arc::new(crate::unix_now),
        })
    }

    /// Signs with another clock (tests that move the market's clock).
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Sends a request, signed when `signer` is given. `body` is sent verbatim.
    pub async fn send(
        &self,
        signer: Option<&Signer>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Reply> {
        let headers = match signer {
            Some(signer) => signer.sign_request(method, path, body, (self.clock)())?,
            None => Vec::new(),
        };
        self.send_with_headers(method, path, body, &headers).await
    }

    /// Sends a request with the given extra headers (e.g. a signature made earlier).
    pub async fn send_with_headers(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        headers: &[(&str, String)],
    ) -> Result<Reply> {
        let io = |e: std::io::Error| {
            Error::BadRequest(format!("talking to the market at {}: {e}", self.authority))
        };
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            self.authority,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut stream = TcpStream::connect(&self.authority).await.map_err(io)?;
        stream.write_all(head.as_bytes()).await.map_err(io)?;
        stream.write_all(body).await.map_err(io)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.map_err(io)?;
        parse_response(&raw)
    }

    /// Sends `body` as JSON.
    pub async fn json(
        &self,
        signer: Option<&Signer>,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Result<Reply> {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(body).map_err(|e| Error::Internal(e.to_string()))?
        };
        self.send(signer, method, path, &bytes).await
    }

    /// Registers `signer`'s key: asks for a challenge and answers it.
    pub async fn register(&self, signer: &Signer, role: Role, name: &str) -> Result<Value> {
        let challenge = self
            .json(
                None,
                "POST",
                "/v1/challenges",
                &serde_json::json!({"public_key": signer.public_key_hex()}),
            )
            .await?
            .ok()?;
        let challenge = challenge["challenge"]
            .as_str()
            .ok_or_else(|| Error::Internal("challenge reply without a challenge".into()))?;
        let reg = serde_json::to_value(signer.registration(challenge, role, name))
            .map_err(|e| Error::Internal(e.to_string()))?;
        self.json(None, "POST", "/v1/parties", &reg).await?.ok()
    }

    /// Whether `e`, the error of [`Client::submit_receipt`], says the period was settled
    /// already (the receipt needs no resubmitting).
    pub fn already_settled(e: &Error) -> bool {
        e.to_string().contains("already_settled")
    }

    /// Submits `signer`'s receipt for one period of `contract` and answers the
    /// period as the market now sees it (awaiting the other side, settled,
    /// mismatched, or awaiting funds). Gateways and providers report usage with it.
    pub async fn submit_receipt(
        &self,
        signer: &Signer,
        contract: &str,
        receipt: &UsageReceipt,
    ) -> Result<Value> {
        let body = serde_json::to_value(receipt).map_err(|e| Error::Internal(e.to_string()))?;
        self.json(
            Some(signer),
            "POST",
            &format!("/v1/contracts/{contract}/receipts"),
            &body,
        )
        .await?
        .ok()
    }
}

fn parse_response(raw: &[u8]) -> Result<Reply> {
    let bad = || Error::BadRequest("the market sent a malformed HTTP response".into());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad())?;
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(bad)?;
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok(Reply { status, body, text })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
