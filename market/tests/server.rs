//! The market's HTTP server against clients that hold it up or send too much, and the
//! headers every answer carries. Raw sockets, so each test says exactly what is sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sublet_market::server::{Limits, serve};
use sublet_market::{Market, Policy, api};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Limits short enough for a test to see them act.
const SHORT: Limits = Limits {
    header_read: Duration::from_millis(300),
    body_read: Duration::from_millis(300),
    max_body: 4096,
    drain: Duration::from_secs(1),
};

/// Far longer than any limit above: a server that has not acted by then never will.
const PATIENCE: Duration = Duration::from_secs(10);

async fn market(limits: Limits) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let market = Market::in_memory(Policy::default(), None)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(
        listener,
        api::router(Arc::new(market)),
        limits,
        std::future::pending(),
    ));
    Ok(addr)
}

/// Everything the server sends until it closes the connection, or an error if it is
/// still open after [`PATIENCE`].
async fn until_closed(stream: &mut TcpStream) -> Result<String, Box<dyn std::error::Error>> {
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got))
        .await
        .map_err(|_| "the server kept the connection open")??;
    Ok(String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() -> TestResult {
    let addr = market(SHORT).await?;
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: m\r\n")
        .await?;
    let answer = until_closed(&mut stream).await?;
    assert!(!answer.contains("200 OK"), "{answer}");
    Ok(())
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() -> TestResult {
    let addr = market(SHORT).await?;
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: m\r\n\r\n")
        .await?;
    let answer = until_closed(&mut stream).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    Ok(())
}

#[tokio::test]
async fn a_body_that_trickles_in_is_refused_in_time() -> TestResult {
    let addr = market(SHORT).await?;
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            b"POST /v1/challenges HTTP/1.1\r\nHost: m\r\nContent-Length: 100\r\n\r\n{\"public_key\"",
        )
        .await?;
    let answer = until_closed(&mut stream).await?;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    Ok(())
}

#[tokio::test]
async fn an_oversized_body_is_refused() -> TestResult {
    let addr = market(SHORT).await?;
    let mut stream = TcpStream::connect(addr).await?;
    let body = vec![b' '; SHORT.max_body + 1];
    let head = format!(
        "POST /v1/challenges HTTP/1.1\r\nHost: m\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    let answer = until_closed(&mut stream).await?;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    Ok(())
}

async fn get(addr: SocketAddr, path: &str) -> Result<String, Box<dyn std::error::Error>> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    until_closed(&mut stream).await
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    answer.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

#[tokio::test]
async fn answers_may_not_be_sniffed_or_framed_and_the_console_runs_only_its_own_code() -> TestResult
{
    let addr = market(Limits::default()).await?;
    for path in ["/", "/healthz", "/openapi.json", "/v1/offers", "/nowhere"] {
        let answer = get(addr, path).await?;
        assert_eq!(
            header(&answer, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(header(&answer, "x-frame-options"), Some("DENY"), "{path}");
        let csp = header(&answer, "content-security-policy").ok_or("no CSP")?;
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        if path != "/" {
            assert!(!csp.contains("script-src"), "{path}: {csp}");
        }
    }
    let console = get(addr, "/").await?;
    let csp = header(&console, "content-security-policy").ok_or("no CSP")?;
    assert_eq!(csp, api::console_csp(include_str!("../src/console.html")));
    // One hash for the page's one inline script, one for its one inline style.
    assert_eq!(csp.matches("'sha256-").count(), 2, "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    // A hash of anything else (an injected script) is not in it.
    assert!(
        !api::console_csp("<script>window.__pwned=1</script>")
            .split(';')
            .any(|d| csp.contains(d.trim()) && d.contains("sha256")),
        "{csp}"
    );
    Ok(())
}
