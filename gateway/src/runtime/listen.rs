//! Listening: the one accept loop every S3 listener runs (TLS or not), the TLS acceptor,
//! and the signals that stop a gateway.

use std::io;
use std::pin::Pin;
use std::task::{self, Poll};

use sublet_crds::ClientLimits;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::*;

/// The S3 address when the gateway spec names none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";

pub(super) fn tls_acceptor(cert: &str, key: &str) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("StorageGateway spec.tls.certFile: reading {cert}"))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("StorageGateway spec.tls.keyFile: reading {key}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("StorageGateway spec.tls: the certificate and key do not fit together")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// TCP keepalive on S3 connections: a peer that vanished (a phone out of coverage, a
/// crashed host) is noticed after `KEEPALIVE_IDLE` of silence and the system's number of
/// unanswered probes (9 on Linux) `KEEPALIVE_INTERVAL` apart, about 3 minutes, rather than
/// never.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// Serves S3 over HTTP/1.1 on `listener` (over TLS when `tls` is set) until `shutdown`
/// resolves, within `limits`: at most `maxConnections` at once (more wait in the backlog),
/// each with a deadline for its TLS handshake, for every request head (which also closes
/// idle keep-alive connections), for every wait on the request body, and for every answer
/// the client leaves unread.
pub async fn serve_s3(
    listener: TcpListener,
    service: MeteredService,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ClientLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let service = service.with_body_timeout(limits.body_timeout());
    let slots = Arc::new(tokio::sync::Semaphore::new(
        limits.max_connections() as usize
    ));
    let (header_timeout, handshake_timeout, send_timeout) = (
        limits.header_timeout(),
        limits.tls_handshake_timeout(),
        limits.send_timeout(),
    );
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A connection is accepted only with a slot free; the others wait in the backlog.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            () = &mut shutdown => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        // Small answers must not wait for Nagle's algorithm (about 40 ms per GET otherwise).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "TCP_NODELAY not set");
        }
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL);
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!(%peer, error = %e, "TCP keepalive not set");
        }
        let service = service
            .clone()
            .with_connection(crate::s3::access::Connection {
                peer,
                tls: tls.is_some(),
            });
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            let result = match tls {
                Some(tls) => {
                    match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let io = TokioIo::new(SendDeadline::new(stream, send_timeout));
                            http.serve_connection(io, service).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "tls handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, ?handshake_timeout, "tls handshake timed out");
                            return;
                        }
                    }
                }
                None => {
                    let io = TokioIo::new(SendDeadline::new(stream, send_timeout));
                    http.serve_connection(io, service).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// A connection whose writes fail once the peer has left them waiting (its receive window
/// full) for `timeout`: a client that stops reading an answer does not hold the segments
/// being sent to it forever. Reads pass through; their deadlines are hyper's and
/// [`crate::s3::http::TimedBody`]'s.
struct SendDeadline<S> {
    inner: S,
    timeout: Duration,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> SendDeadline<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        SendDeadline {
            inner,
            timeout,
            waiting: None,
        }
    }

    /// `Pending` from a write becomes an error once it has lasted `timeout`.
    fn deadline<T>(
        &mut self,
        cx: &mut task::Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.waiting = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let waiting = self
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if waiting.as_mut().poll(cx).is_ready() {
                    self.waiting = None;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client read nothing of the answer for {timeout:?}"),
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.deadline(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.deadline(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.deadline(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.deadline(cx, polled)
    }
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn an_answer_left_unread_fails_its_write_after_the_send_timeout() {
        let timeout = Duration::from_millis(300);
        let (server, mut client) = tokio::io::duplex(1024);
        let mut server = SendDeadline::new(server, timeout);
        // Read as it comes: a slow reader is no stalled one.
        server.write_all(&[7u8; 1024]).await.unwrap();
        let reading = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            client.read_exact(&mut buf[..1024]).await.unwrap();
            client
        });
        server.write_all(&[7u8; 1024]).await.unwrap();
        let mut client = reading.await.unwrap();
        // Now nobody reads: the buffer fills and the write waits until the deadline.
        let started = Instant::now();
        let err = server.write_all(&[7u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
        assert!(started.elapsed() < timeout * 5, "{:?}", started.elapsed());
        let mut rest = vec![0u8; 1024];
        client.read_exact(&mut rest).await.unwrap();
    }
}
