//! Serving the API on a socket with every wait and buffer bounded: a client gets so long to
//! send a request's headers (and, between requests, to start the next), so long and so many
//! bytes for its body, and no answer waits for more. `axum::serve` sets none of these.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;

/// How long a connection may take over what a request sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// To send a request's headers; an idle kept-alive connection is closed after as long.
    pub header_read: Duration,
    /// To send a request's body, once its headers are in.
    pub body_read: Duration,
    /// The largest body taken, in bytes; larger ones are answered 413.
    pub max_body: usize,
    /// How long a stop waits for requests in progress.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
            max_body: 1 << 20,
            drain: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` resolves, then lets the
/// requests in progress finish (for at most `limits.drain`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    serve_tls(listener, router, limits, None, shutdown).await;
}

/// [`serve`], over TLS when `tls` is given: a client gets `limits.header_read` for its
/// handshake too.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let router = router.layer(axum::middleware::from_fn(move |req, next| {
        bounded_body(limits, req, next)
    }));
    let (stop, stopping) = tokio::sync::watch::channel(());
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Finished connections are forgotten as they end, so the set holds live ones only.
        while connections.try_join_next().is_some() {}
        let service = TowerToHyperService::new(router.clone());
        let mut stopping = stopping.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let stream = match tls {
                None => Connection::Plain(stream),
                Some(tls) => {
                    match tokio::time::timeout(limits.header_read, tls.accept(stream)).await {
                        Ok(Ok(stream)) => Connection::Tls(Box::new(stream)),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "tls handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "tls handshake timed out");
                            return;
                        }
                    }
                }
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(stop);
    if tokio::time::timeout(limits.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "requests still in progress at stop are cut"
        );
    }
}

/// A connection as accepted: plain TCP or TLS over it.
enum Connection {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

impl tokio::io::AsyncRead for Connection {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Connection::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Connection {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Connection::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Connection::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Connection::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Reads the whole body, within the time and size `limits` allow, before the handler runs.
async fn bounded_body(limits: Limits, req: Request, next: axum::middleware::Next) -> Response {
    let (parts, body) = req.into_parts();
    let refused = |status: StatusCode, code: &str, message: String| {
        (
            status,
            axum::Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response()
    };
    match tokio::time::timeout(
        limits.body_read,
        axum::body::to_bytes(body, limits.max_body),
    )
    .await
    {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request body could not be read within {} bytes: {e}",
                limits.max_body
            ),
        ),
        Err(_) => refused(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} s",
                limits.body_read.as_secs()
            ),
        ),
    }
}
