//! A small client for the market's REST API: HTTP/1.1 over TLS (rustls with ring, the
//! system's roots or a named CA file), signing requests with a [`Signer`]. Plain `http://`
//! is refused unless [`ClientTls::insecure_http`] says otherwise (loopback and tests). Every
//! exchange is bounded: [`EXCHANGE_TIMEOUT`] for the whole of it, [`MAX_RESPONSE`] bytes
//! read. The `sublet-market` CLI, providers, gateways and the tests use it.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::identity::{Role, Signer};
use crate::receipts::UsageReceipt;
use crate::{Error, Result};

/// The longest a request may take, from connecting to the last byte of the answer.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer read, headers included; a longer one is an error.
pub const MAX_RESPONSE: usize = 16 << 20;

/// How the client reaches the market.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM CA certificates trusted for `https://` instead of the system's roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Allow plain `http://` URLs: anyone on the path reads and rewrites every answer, so
    /// this is for a market on loopback and for tests only.
    pub insecure_http: bool,
}

impl ClientTls {
    /// Plain HTTP allowed, the system's roots for HTTPS: loopback markets and tests.
    pub fn insecure_http() -> Self {
        ClientTls {
            ca_file: None,
            insecure_http: true,
        }
    }
}

#[derive(Clone)]
enum Transport {
    Plain,
    Tls {
        connector: tokio_rustls::TlsConnector,
        server_name: ServerName<'static>,
    },
}

#[derive(Clone)]
pub struct Client {
    /// `host:port`.
    authority: String,
    transport: Transport,
    /// Unix seconds used to sign requests.
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    timeout: Duration,
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

/// The system's CA roots, read once per process.
fn system_roots() -> Result<Arc<rustls::RootCertStore>> {
    static ROOTS: OnceLock<std::result::Result<Arc<rustls::RootCertStore>, String>> =
        OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no system CA certificates found ({} errors); name a CA file for the market",
                    found.errors.len()
                ));
            }
            Ok(Arc::new(roots))
        })
        .clone()
        .map_err(Error::BadRequest)
}

fn ca_roots(path: &std::path::Path) -> Result<Arc<rustls::RootCertStore>> {
    use rustls::pki_types::pem::PemObject;
    let bad = |e: String| Error::BadRequest(format!("market CA file {}: {e}", path.display()));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(Arc::new(roots))
}

/// The host of `host:port` or `[v6]:port`, without brackets.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, _)) => host,
        None => authority,
    }
}

fn has_port(authority: &str) -> bool {
    match authority.rsplit_once(':') {
        Some((host, port)) => {
            (!host.contains(':') || host.ends_with(']'))
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

impl Client {
    /// `url` is `https://host[:port]`, checked against the system's roots; `http://` is
    /// refused (see [`Client::with_tls`]).
    pub fn new(url: &str) -> Result<Self> {
        Self::with_tls(url, &ClientTls::default())
    }

    /// `url` is `https://host[:port]` (or `http://host[:port]` when `tls.insecure_http`).
    pub fn with_tls(url: &str, tls: &ClientTls) -> Result<Self> {
        let (rest, secure) = if let Some(rest) = url.strip_prefix("https://") {
            (rest, true)
        } else if let Some(rest) = url.strip_prefix("http://") {
            if !tls.insecure_http {
                return Err(Error::BadRequest(format!(
                    "plain-HTTP market url {url:?} refused: anyone on the path could rewrite the \
                     market's answers; use https://, or allow plain HTTP explicitly \
                     (--insecure-http, insecureHttp: true) for a market on loopback or in tests"
                )));
            }
            (rest, false)
        } else {
            return Err(Error::BadRequest(format!(
                "market url must start with https:// (or http:// with --insecure-http), got {url:?}"
            )));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || authority.contains('@') {
            return Err(Error::BadRequest(format!(
                "market url must be https://host:port without a path, got {url:?}"
            )));
        }
        let authority = if has_port(authority) {
            authority.to_owned()
        } else {
            format!("{authority}:{}", if secure { 443 } else { 80 })
        };
        let transport = if secure {
            let roots = match &tls.ca_file {
                Some(path) => ca_roots(path)?,
                None => system_roots()?,
            };
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Internal(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let host = host_of(&authority).to_owned();
            let server_name = ServerName::try_from(host.clone()).map_err(|_| {
                Error::BadRequest(format!("market url {url:?}: {host:?} is not a host name"))
            })?;
            Transport::Tls {
                connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
                server_name,
            }
        } else {
            Transport::Plain
        };
        Ok(Self {
            authority,
            transport,
            clock: Arc::new(crate::unix_now),
            timeout: EXCHANGE_TIMEOUT,
        })
    }

    /// Gives each exchange `timeout` instead of [`EXCHANGE_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
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
        let talk = async {
            let stream = TcpStream::connect(&self.authority).await.map_err(io)?;
            match &self.transport {
                Transport::Plain => exchange(stream, &head, body).await.map_err(io),
                Transport::Tls {
                    connector,
                    server_name,
                } => {
                    let stream = connector
                        .connect(server_name.clone(), stream)
                        .await
                        .map_err(|e| {
                            Error::BadRequest(format!(
                                "TLS with the market at {} failed: {e}",
                                self.authority
                            ))
                        })?;
                    exchange(stream, &head, body).await.map_err(io)
                }
            }
        };
        let raw = tokio::time::timeout(self.timeout, talk)
            .await
            .map_err(|_| {
                Error::BadRequest(format!(
                    "the market at {} did not answer within {} s",
                    self.authority,
                    self.timeout.as_secs()
                ))
            })??;
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

/// Sends `head` and `body` on `stream` and reads the answer to its end, at most
/// [`MAX_RESPONSE`] bytes.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    head: &str,
    body: &[u8],
) -> std::io::Result<Vec<u8>> {
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    let read = (&mut stream)
        .take(MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut raw)
        .await;
    match read {
        Ok(_) => {}
        // A TLS peer that closes without close_notify after a `connection: close` answer
        // sent the whole of it; the parse below catches a truncated one.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    if raw.len() > MAX_RESPONSE {
        return Err(std::io::Error::other(format!(
            "the answer is larger than {MAX_RESPONSE} bytes"
        )));
    }
    Ok(raw)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A private CA and a certificate it signed for `127.0.0.1`, as PEM files in `dir`:
    /// (CA file, server certificate and key).
    fn private_ca(dir: &std::path::Path) -> (PathBuf, rustls::ServerConfig) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
        (ca_file, config)
    }

    /// Answers every connection with `answer` after reading the request head.
    async fn https_server(config: rustls::ServerConfig, answer: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, answer) = (acceptor.clone(), answer.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls.write_all(&answer).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        url
    }

    fn ok_answer(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn https_with_a_private_ca_works_and_an_unknown_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (ca_file, config) = private_ca(dir.path());
        let url = https_server(config, ok_answer(r#"{"ok":true}"#)).await;
        let tls = ClientTls {
            ca_file: Some(ca_file),
            insecure_http: false,
        };
        let reply = Client::with_tls(&url, &tls)
            .unwrap()
            .json(None, "GET", "/healthz", &Value::Null)
            .await
            .unwrap();
        assert_eq!(
            (reply.status, reply.body["ok"].clone()),
            (200, Value::Bool(true))
        );

        // Another CA (or the system's roots) does not vouch for this server.
        let other = tempfile::tempdir().unwrap();
        let (other_ca, _) = private_ca(other.path());
        let tls = ClientTls {
            ca_file: Some(other_ca),
            insecure_http: false,
        };
        let err = Client::with_tls(&url, &tls)
            .unwrap()
            .json(None, "GET", "/healthz", &Value::Null)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("TLS with the market"), "{err}");
    }

    #[test]
    fn plain_http_needs_the_switch() {
        let err = Client::new("http://127.0.0.1:7490").err().unwrap();
        assert!(err.to_string().contains("plain-HTTP market url"), "{err}");
        assert!(err.to_string().contains("--insecure-http"), "{err}");
        assert!(Client::with_tls("http://127.0.0.1:7490", &ClientTls::insecure_http()).is_ok());
        for bad in [
            "ftp://m:1",
            "https://m:1/path",
            "https://user@m:1",
            "https://",
        ] {
            assert!(Client::new(bad).is_err(), "{bad}");
        }
        let err = Client::with_tls(
            "https://m:1",
            &ClientTls {
                ca_file: Some("/nonexistent/ca.pem".into()),
                insecure_http: false,
            },
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn hosts_and_ports() {
        assert_eq!(host_of("m.example:443"), "m.example");
        assert_eq!(host_of("[::1]:8080"), "::1");
        assert!(has_port("m:1") && has_port("[::1]:1"));
        assert!(!has_port("m") && !has_port("[::1]"));
    }

    /// A server that sends more than [`MAX_RESPONSE`], or nothing at all: the client stops.
    #[tokio::test]
    async fn answers_are_bounded_in_size_and_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut stream, _)) = listener.accept().await {
                n += 1;
                let huge = n == 1;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    if huge {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
                        let chunk = vec![b'x'; 1 << 20];
                        for _ in 0..(MAX_RESPONSE >> 20) + 2 {
                            if stream.write_all(&chunk).await.is_err() {
                                return;
                            }
                        }
                    } else {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                });
            }
        });
        let client = Client::with_tls(&url, &ClientTls::insecure_http()).unwrap();
        let err = client.send(None, "GET", "/", b"").await.unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        let started = std::time::Instant::now();
        let err = client
            .with_timeout(Duration::from_millis(300))
            .send(None, "GET", "/", b"")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("did not answer within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
