//! Connections: the accept loops (TLS over TCP, and a Unix socket for gateways on the same
//! machine), and who is on the other end of each connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use crate::identity::{NodeId, NodeIdentity};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the provider pings a connection over HTTP/2, and how long it waits for the
/// answer before closing it: a peer gone without a word is noticed within a minute.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// What [`accept_loop`] allows each peer.
#[derive(Clone, Copy, Debug)]
pub(super) struct ConnectionLimits {
    pub(super) max_connections: usize,
    pub(super) idle_timeout: Duration,
}

/// Who is on the other end of a gRPC connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Node id of the client's certificate, when it presented one (over a Unix socket: the
    /// node key the client proved in the handshake).
    pub node_id: Option<NodeId>,
    pub remote_addr: Option<SocketAddr>,
    /// The uid of a client on the Unix socket, as the kernel reports it.
    pub unix_uid: Option<u32>,
}

/// What a connection runs over.
enum Transport {
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Transport::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Tls(s) => s.is_write_vectored(),
            Transport::Unix(s) => s.is_write_vectored(),
        }
    }
}

/// A server-side connection (TLS, or a Unix socket) that tells tonic who the peer is. It
/// holds one of the provider's connection slots until dropped, and fails reads once the
/// peer has sent nothing for the idle timeout.
pub struct Connection {
    inner: Idle<Transport>,
    info: PeerInfo,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Connection {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A stream whose reads fail (`TimedOut`) once nothing has arrived for `timeout`.
pub(super) struct Idle<S> {
    inner: S,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<S> Idle<S> {
    pub(super) fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let next = tokio::time::Instant::now() + this.timeout;
                    this.deadline.as_mut().reset(next);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nothing received for {:?}; closing", this.timeout),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Resolves once shutdown is signalled (or its sender is gone).
pub(super) async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

pub(super) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    conns: mpsc::Sender<Result<Connection, io::Error>>,
    shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
    slots: Arc<Semaphore>,
) {
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    let refused = AtomicU64::new(0);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Closed at once: holding it until a slot frees would let the flood queue up.
            let n = refused.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_multiple_of(1000) {
                warn!(%remote, refused = n, max = limits.max_connections, "connection limit reached; closing new connections");
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let conns = conns.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let node_id = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| NodeId::from_certificate(cert).ok());
            let conn = Connection {
                inner: Idle::new(Transport::Tls(Box::new(tls)), limits.idle_timeout),
                info: PeerInfo {
                    node_id,
                    remote_addr: Some(remote),
                    unix_uid: None,
                },
                _slot: slot,
            };
            let _ = conns.send(Ok(conn)).await;
        });
    }
}

/// Who [`accept_unix_loop`] lets in: the provider's own uid and `allowed_uids` (by
/// `SO_PEERCRED`), each proving a node key in the handshake.
pub(super) struct UnixPeers {
    pub(super) identity: Arc<NodeIdentity>,
    pub(super) own_uid: u32,
    pub(super) allowed_uids: Vec<u32>,
    /// Serves the connections that ask for short-circuit reads; `None` refuses them.
    pub(super) short_circuit: Option<Arc<crate::shortcircuit::Server>>,
}

/// The accept loop of the Unix socket: no TLS; the kernel names the peer's uid, which must
/// be allowed, and the handshake its node id. Shares the connection slots with TLS.
pub(super) async fn accept_unix_loop(
    socket: crate::unix::UnixSocket,
    peers: UnixPeers,
    conns: mpsc::Sender<Result<Connection, io::Error>>,
    shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
    slots: Arc<Semaphore>,
) {
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    let peers = Arc::new(peers);
    let refused = AtomicU64::new(0);
    loop {
        let stream = tokio::select! {
            _ = &mut stop => break,
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "accepting a Unix-socket connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let uid = match stream.peer_cred() {
            Ok(cred) => cred.uid(),
            Err(e) => {
                warn!(error = %e, "the kernel did not name a Unix-socket peer; closing");
                continue;
            }
        };
        if !crate::unix::peer_allowed(uid, peers.own_uid, &peers.allowed_uids) {
            warn!(
                uid,
                own_uid = peers.own_uid,
                "a process of a uid not allowed connected to the Unix socket; closing (see --unix-allow-uid)"
            );
            continue;
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            let n = refused.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_multiple_of(1000) {
                warn!(
                    uid,
                    refused = n,
                    max = limits.max_connections,
                    "connection limit reached; closing new Unix-socket connections"
                );
            }
            continue;
        };
        let peers = Arc::clone(&peers);
        let conns = conns.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            let (node_id, mode) = match tokio::time::timeout(
                crate::unix::HANDSHAKE_TIMEOUT,
                crate::unix::server_handshake(&mut stream, &peers.identity),
            )
            .await
            {
                Ok(Ok(named)) => named,
                Ok(Err(e)) => {
                    debug!(uid, error = %e, "Unix-socket handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(uid, "Unix-socket handshake timed out");
                    return;
                }
            };
            if mode == crate::unix::Mode::ShortCircuit {
                // When the mode is off, the gateway is told so and reads over gRPC.
                if let Some(server) = &peers.short_circuit {
                    Arc::clone(server).serve(stream, node_id).await;
                } else {
                    crate::shortcircuit::refuse(stream).await;
                }
                drop(slot);
                return;
            }
            let conn = Connection {
                inner: Idle::new(Transport::Unix(stream), limits.idle_timeout),
                info: PeerInfo {
                    node_id: Some(node_id),
                    remote_addr: None,
                    unix_uid: Some(uid),
                },
                _slot: slot,
            };
            let _ = conns.send(Ok(conn)).await;
        });
    }
    // The socket file goes with `socket`, dropped here: nothing listens on it any more.
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Read;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::server::{ProviderConfig, start};

    #[tokio::test]
    async fn a_quiet_peer_is_cut_off_after_the_idle_timeout_and_a_talking_one_is_not() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut idle = Idle::new(ours, Duration::from_millis(300));
        let talker = tokio::spawn(async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                theirs.write_all(b"x").await.unwrap();
            }
            theirs
        });
        let mut got = [0u8; 1];
        for _ in 0..6 {
            idle.read_exact(&mut got).await.unwrap();
        }
        let _theirs = talker.await.unwrap();
        let started = std::time::Instant::now();
        let err = idle.read(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// Whether the provider closed `conn` within `wait` (a read sees the end or an error).
    fn closed_within(conn: &mut std::net::TcpStream, wait: Duration) -> bool {
        conn.set_read_timeout(Some(wait)).unwrap();
        match conn.read(&mut [0u8; 16]) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_beyond_the_cap_are_closed_on_arrival() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ProviderConfig::new(dir.path());
        config.max_connections = 2;
        let provider = start(config).await.unwrap();
        let addr = provider.grpc_addr;
        let held = tokio::task::spawn_blocking(move || {
            // Two peers that never finish their handshake hold both slots.
            let mut first = std::net::TcpStream::connect(addr).unwrap();
            let second = std::net::TcpStream::connect(addr).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let mut third = std::net::TcpStream::connect(addr).unwrap();
            assert!(
                closed_within(&mut third, Duration::from_secs(5)),
                "a third connection was kept past the cap of 2"
            );
            assert!(!closed_within(&mut first, Duration::from_millis(200)));
            // A slot freed is a slot taken again.
            let _ = second.shutdown(std::net::Shutdown::Both);
            drop(second);
            std::thread::sleep(Duration::from_millis(300));
            let mut fourth = std::net::TcpStream::connect(addr).unwrap();
            assert!(
                !closed_within(&mut fourth, Duration::from_millis(300)),
                "the freed slot was not given to the next connection"
            );
        });
        held.await.unwrap();
        provider.shutdown().await;
    }
}
