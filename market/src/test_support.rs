//! What the tests of the crates that talk to the market (the provider's, the gateway's)
//! need to play a market that lies: a man in the middle of plain-HTTP market traffic that
//! rewrites the market's answers. Built only with the `test-support` feature, which only
//! those crates' dev-dependencies turn on: no binary carries it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The largest request the proxy forwards (market requests are small JSON bodies).
const MAX_REQUEST: usize = 1 << 20;
/// The largest answer the proxy reads from the market.
const MAX_ANSWER: u64 = 16 << 20;
/// How long one exchange (request in, answer out) may take before the proxy drops it.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A plain-HTTP proxy on a free loopback port in front of a market: it forwards each
/// request (one per connection, as the market client sends them) and, while rewriting,
/// replaces every `from` of its rewrites by its `to` in the body of the market's answer.
/// It stops when dropped.
pub struct RewritingProxy {
    url: String,
    rewriting: Arc<AtomicBool>,
    accepting: JoinHandle<()>,
}

impl RewritingProxy {
    /// Starts a proxy to the market at `market` (`http://host:port`) that rewrites from
    /// the start when `rewriting` is set; [`set_rewriting`](Self::set_rewriting) turns it
    /// on and off.
    pub async fn start(
        market: &str,
        rewrites: Vec<(String, String)>,
        rewriting: bool,
    ) -> std::io::Result<RewritingProxy> {
        let upstream = market
            .strip_prefix("http://")
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("the rewriting proxy takes a plain-HTTP market url, not {market:?}"),
                )
            })?
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let rewriting = Arc::new(AtomicBool::new(rewriting));
        let rewrites = Arc::new(rewrites);
        let on = Arc::clone(&rewriting);
        let accepting = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let (upstream, rewrites, on) =
                    (upstream.clone(), Arc::clone(&rewrites), Arc::clone(&on));
                tokio::spawn(async move {
                    let exchange = relay(down, &upstream, &rewrites, &on);
                    // A stalled side ends the exchange; the client sees its connection close.
                    let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await;
                });
            }
        });
        Ok(RewritingProxy {
            url,
            rewriting,
            accepting,
        })
    }

    /// The URL to give the party whose market traffic it rewrites.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Rewrites the answers from now on (`true`) or passes them on unchanged (`false`).
    pub fn set_rewriting(&self, on: bool) {
        self.rewriting.store(on, Ordering::SeqCst);
    }
}

impl Drop for RewritingProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// One exchange: reads the whole request from `down` (the client sends it all, then reads
/// to the end: `connection: close`), forwards it to `upstream`, and answers with the
/// market's answer, rewritten while `on` is set. Gives up on a request or answer over its
/// bound.
async fn relay(
    mut down: TcpStream,
    upstream: &str,
    rewrites: &[(String, String)],
    on: &AtomicBool,
) -> std::io::Result<()> {
    let request = read_request(&mut down).await?;
    let mut up = TcpStream::connect(upstream).await?;
    up.write_all(&request).await?;
    let mut answer = Vec::new();
    (&mut up).take(MAX_ANSWER).read_to_end(&mut answer).await?;
    if on.load(Ordering::SeqCst) {
        answer = rewrite(&answer, rewrites);
    }
    down.write_all(&answer).await?;
    down.shutdown().await
}

/// The request's head and its `content-length` bytes of body, at most [`MAX_REQUEST`].
async fn read_request(down: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut request = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = down.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        request.extend_from_slice(&buf[..n]);
        if request.len() > MAX_REQUEST {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a request of more than {MAX_REQUEST} bytes"),
            ));
        }
        let Some(end) = head_end(&request) else {
            continue;
        };
        let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if request.len() >= end + 4 + length {
            return Ok(request);
        }
    }
}

/// Where an HTTP message's head ends (the `\r\n\r\n`), if it has.
fn head_end(message: &[u8]) -> Option<usize> {
    message.windows(4).position(|w| w == b"\r\n\r\n")
}

/// `answer` with each `(from, to)` replaced in its body and its `content-length` set to the
/// new body's; an answer without a whole head is passed on as it is.
fn rewrite(answer: &[u8], rewrites: &[(String, String)]) -> Vec<u8> {
    let Some(end) = head_end(answer) else {
        return answer.to_vec();
    };
    let mut body = String::from_utf8_lossy(&answer[end + 4..]).into_owned();
    for (from, to) in rewrites {
        body = body.replace(from, to);
    }
    let head: Vec<String> = String::from_utf8_lossy(&answer[..end])
        .lines()
        .filter(|l| !l.to_lowercase().starts_with("content-length:"))
        .map(str::to_owned)
        .collect();
    format!(
        "{}\r\ncontent-length: {}\r\n\r\n{body}",
        head.join("\r\n"),
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_rewritten_answer_carries_the_new_bodys_length() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 13\r\n\r\n{\"p\":\"alice\"}";
        let out = rewrite(answer, &[("alice".into(), "mallory".into())]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"p\":\"mallory\"}"
        );
    }

    #[tokio::test]
    async fn a_request_over_its_bound_is_refused_not_buffered() {
        let huge = format!(
            "POST / HTTP/1.1\r\ncontent-length: {}\r\n\r\n{}",
            MAX_REQUEST + 1,
            "x".repeat(MAX_REQUEST + 1)
        );
        let err = read_request(&mut huge.as_bytes()).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        let whole = "GET /v1/offers HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(
            read_request(&mut whole.as_bytes()).await.unwrap(),
            whole.as_bytes()
        );
    }

    #[tokio::test]
    async fn only_a_plain_http_market_is_proxied() {
        let err = RewritingProxy::start("https://127.0.0.1:1", Vec::new(), true)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("plain-HTTP market url"), "{err}");
    }
}
