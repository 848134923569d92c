//! A small S3 client for the benchmark: path-style requests signed with SigV4 on one
//! HTTP/1.1 keep-alive connection per stream, bodies generated while they are sent and
//! checked while they arrive, so memory stays flat whatever the object size.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::content::{Content, Mismatch, Verifier};
use super::sigv4::{self, AmzDate, Signer};

/// Size of the pieces a generated body is sent in.
const SEND_CHUNK: usize = 256 << 10;

/// Why an operation failed.
#[derive(Debug)]
pub enum Error {
    /// Connecting, sending or receiving failed.
    Transport(String),
    /// The server answered with an error status.
    Status {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// The server answered success but the body was not what was written.
    Verify(Mismatch),
    /// The server answered something this client does not understand.
    Protocol(String),
}

impl Error {
    pub fn is_verify(&self) -> bool {
        matches!(self, Error::Verify(_))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Transport(m) => write!(f, "transport: {m}"),
            Error::Status {
                status,
                code,
                message,
            } => write!(f, "{} {code}: {message}", status.as_u16()),
            Error::Verify(m) => write!(f, "verification failed: {m}"),
            Error::Protocol(m) => write!(f, "unexpected answer: {m}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where requests go and how they are signed.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`, dialled and sent as `Host`.
    pub authority: String,
    pub signer: Signer,
    pub bucket: String,
    /// Sign the SHA-256 of every body instead of `UNSIGNED-PAYLOAD` (costs the client a hash).
    pub sign_payload: bool,
}

impl Target {
    /// Parses `http://host:port`; only plain HTTP is spoken.
    pub fn new(endpoint: &str, signer: Signer, bucket: &str, sign_payload: bool) -> Result<Self> {
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e| Error::Protocol(format!("endpoint {endpoint}: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(Error::Protocol(format!(
                "endpoint {endpoint}: only http:// endpoints are supported"
            )));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| Error::Protocol(format!("endpoint {endpoint} has no host")))?;
        let authority = match authority.port() {
            Some(_) => authority.to_string(),
            None => format!("{}:80", authority.host()),
        };
        Ok(Target {
            authority,
            signer,
            bucket: bucket.to_string(),
            sign_payload,
        })
    }
}

/// A request body: nothing, bytes in memory, or an object's content made as it is sent.
pub enum BenchBody {
    Bytes(Option<Bytes>),
    Generated {
        content: Content,
        pos: u64,
        end: u64,
    },
}

impl BenchBody {
    pub fn empty() -> Self {
        BenchBody::Bytes(None)
    }

    /// Bytes `[start, end)` of `content`.
    pub fn generated(content: Content, start: u64, end: u64) -> Self {
        BenchBody::Generated {
            content,
            pos: start,
            end,
        }
    }

    fn len(&self) -> u64 {
        match self {
            BenchBody::Bytes(b) => b.as_ref().map_or(0, |b| b.len() as u64),
            BenchBody::Generated { pos, end, .. } => end - pos,
        }
    }

    /// Hex SHA-256 of the body (reads generated content once more).
    fn sha256(&self) -> String {
        use sha2::Digest;
        match self {
            BenchBody::Bytes(b) => sigv4::hex_sha256(b.as_deref().unwrap_or_default()),
            BenchBody::Generated { content, pos, end } => {
                let mut hasher = sha2::Sha256::new();
                let mut at = *pos;
                while at < *end {
                    let n = (*end - at).min(SEND_CHUNK as u64) as usize;
                    hasher.update(content.chunk(at, n));
                    at += n as u64;
                }
                hex::encode(hasher.finalize())
            }
        }
    }
}

impl Body for BenchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let chunk = match this {
            BenchBody::Bytes(b) => b.take(),
            BenchBody::Generated { content, pos, end } => {
                if *pos >= *end {
                    None
                } else {
                    let n = (*end - *pos).min(SEND_CHUNK as u64) as usize;
                    let chunk = content.chunk(*pos, n);
                    *pos += n as u64;
                    Some(chunk)
                }
            }
        };
        Poll::Ready(chunk.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.len() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len())
    }
}

/// One stream's connection; reconnects after errors and `Connection: close`.
pub struct Connection {
    target: Arc<Target>,
    sender: Option<SendRequest<BenchBody>>,
}

/// What a caller expects back from a request.
pub enum Expect {
    /// Any success; the body is read and dropped.
    Discard,
    /// Success, with the body kept (XML answers).
    Text,
    /// Success, with the body checked against this.
    Verify(Verifier),
}

/// A successful answer.
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    /// Body bytes received.
    pub received: u64,
    /// The body, for [`Expect::Text`].
    pub text: String,
}

impl Connection {
    pub fn new(target: Arc<Target>) -> Self {
        Connection {
            target,
            sender: None,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    async fn connect(&self) -> Result<SendRequest<BenchBody>> {
        let stream = tokio::net::TcpStream::connect(&self.target.authority)
            .await
            .map_err(|e| Error::Transport(format!("connect {}: {e}", self.target.authority)))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Transport(format!("handshake: {e}")))?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes; errors show on requests.
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends a signed request for `key` (the bucket itself when `None`) and reads the answer.
    pub async fn request(
        &mut self,
        method: Method,
        key: Option<&str>,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: BenchBody,
        expect: Expect,
    ) -> Result<Answer> {
        let target = Arc::clone(&self.target);
        let raw_path = match key {
            Some(key) => format!("/{}/{key}", target.bucket),
            None => format!("/{}", target.bucket),
        };
        let path = sigv4::encode_path(&raw_path);
        let query = sigv4::canonical_query(query);
        let payload_hash = if target.sign_payload {
            body.sha256()
        } else {
            sigv4::UNSIGNED_PAYLOAD.to_string()
        };
        let date = AmzDate::now();
        let len = body.len().to_string();
        let mut signed: Vec<(&str, &str)> = vec![
            ("host", &target.authority),
            ("x-amz-date", &date.timestamp),
            ("x-amz-content-sha256", &payload_hash),
        ];
        signed.extend_from_slice(headers);
        let authorization = target.signer.authorization(
            &sigv4::Request {
                method: method.as_str(),
                path: &path,
                query: &query,
                headers: &signed,
                payload_hash: &payload_hash,
            },
            &date,
        );
        let uri = if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        };
        let mut builder = Request::builder().method(method).uri(uri);
        for (k, v) in &signed {
            builder = builder.header(*k, *v);
        }
        let request = builder
            .header("authorization", authorization)
            .header("content-length", len)
            .body(body)
            .map_err(|e| Error::Protocol(format!("building the request: {e}")))?;

        let mut sender = match self.sender.take() {
            Some(mut s) => match s.ready().await {
                Ok(()) => s,
                Err(_) => self.connect().await?,
            },
            None => self.connect().await?,
        };
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Error::Transport(format!("request: {e}")))?;
        let keep = !closes(&response);
        let answer = read_answer(response, expect).await?;
        if keep {
            self.sender = Some(sender);
        }
        Ok(answer)
    }
}

fn closes(response: &Response<Incoming>) -> bool {
    response
        .headers()
        .get(http::header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
}

async fn read_answer(response: Response<Incoming>, expect: Expect) -> Result<Answer> {
    let (parts, mut body) = response.into_parts();
    if !parts.status.is_success() {
        let text = collect_text(&mut body, 64 << 10).await.unwrap_or_default();
        return Err(Error::Status {
            status: parts.status,
            code: xml_value(&text, "Code").unwrap_or_default(),
            message: xml_value(&text, "Message").unwrap_or_default(),
        });
    }
    let mut received = 0u64;
    let mut text = String::new();
    match expect {
        Expect::Discard => {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| Error::Transport(format!("body: {e}")))?;
                if let Some(data) = frame.data_ref() {
                    received += data.len() as u64;
                }
            }
        }
        Expect::Text => {
            text = collect_text(&mut body, 64 << 20).await?;
            received = text.len() as u64;
        }
        Expect::Verify(mut verifier) => {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| Error::Transport(format!("body: {e}")))?;
                if let Some(data) = frame.data_ref() {
                    verifier.update(data);
                }
            }
            received = verifier.received();
            verifier.finish().map_err(Error::Verify)?;
        }
    }
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        received,
        text,
    })
}

async fn collect_text(body: &mut Incoming, limit: usize) -> Result<String> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::Transport(format!("body: {e}")))?;
        if let Some(data) = frame.data_ref() {
            if buf.len() + data.len() > limit {
                return Err(Error::Protocol(format!("answer longer than {limit} bytes")));
            }
            buf.extend_from_slice(data);
        }
    }
    String::from_utf8(buf).map_err(|_| Error::Protocol("answer is not UTF-8".into()))
}

/// Unescapes the five XML entities and numeric character references.
pub fn xml_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else {
            break;
        };
        let entity = &rest[1..end];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every text of `<tag>...</tag>` in `xml`, unescaped. Good enough for the flat answers
/// S3 gives (no nested elements of the same name, no attributes on these tags).
pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else {
            break;
        };
        out.push(xml_unescape(&rest[..j]));
        rest = &rest[j + close.len()..];
    }
    out
}

/// The first text of `<tag>...</tag>` in `xml`.
pub fn xml_value(xml: &str, tag: &str) -> Option<String> {
    xml_values(xml, tag).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_answers_are_read() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>
<IsTruncated>true</IsTruncated><NextContinuationToken>tok/en+1=</NextContinuationToken>
<Contents><Key>a &amp; b&#x2F;c</Key><Size>1</Size></Contents>
<Contents><Key>d&lt;e&gt;&#233;</Key><Size>2</Size></Contents></ListBucketResult>"#;
        assert_eq!(xml_values(xml, "Key"), vec!["a & b/c", "d<e>é"]);
        assert_eq!(xml_value(xml, "IsTruncated").as_deref(), Some("true"));
        assert_eq!(
            xml_value(xml, "NextContinuationToken").as_deref(),
            Some("tok/en+1=")
        );
        assert_eq!(xml_value(xml, "UploadId"), None);
        assert_eq!(xml_unescape("5 & 6 &bogus; &amp"), "5 & 6 &bogus; &amp");
    }

    #[test]
    fn endpoints_are_dialled_by_host_and_port() {
        let signer = Signer {
            access_key: "a".into(),
            secret_key: "s".into(),
            region: "us-east-1".into(),
            service: "s3".into(),
        };
        let t = Target::new("http://127.0.0.1:9000", signer.clone(), "b", false).expect("ok");
        assert_eq!(t.authority, "127.0.0.1:9000");
        let t = Target::new("http://localhost/", signer.clone(), "b", false).expect("ok");
        assert_eq!(t.authority, "localhost:80");
        assert!(Target::new("https://s3.example.com", signer, "b", false).is_err());
    }

    #[test]
    fn generated_bodies_hash_as_their_bytes() {
        let c = Content::for_key("hash", 600_000);
        let body = BenchBody::generated(c, 1000, 600_000);
        assert_eq!(body.len(), 599_000);
        assert_eq!(body.sha256(), sigv4::hex_sha256(&c.bytes()[1000..]));
    }
}
