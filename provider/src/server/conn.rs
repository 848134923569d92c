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
pub(super) enum Transport {
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

/// Counts one kind of refusal and says which to log: the first and every 1000th, so a flood
/// (connections past the cap, a local user the socket does not allow) costs a line per
/// thousand rather than a line each.
#[derive(Default)]
struct RefusalCount(AtomicU64);

impl RefusalCount {
    /// Counts a refusal; the total so far when this one is to be logged.
    fn count(&self) -> Option<u64> {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        (n == 1 || n.is_multiple_of(1000)).then_some(n)
    }
}

/// What the listener handed over: a connection to serve, or one closed on arrival and why.
pub(super) enum Arrival<S, P> {
    Open(S, P),
    Refused(String),
}

/// One way connections arrive (TCP then TLS, or the Unix socket): what [`accept_loop`] needs
/// of it.
pub(super) trait Arrivals: Send + Sync + 'static {
    type Stream: Send + 'static;
    /// Who connected, as far as is known before the handshake, for the logs.
    type Peer: Copy + std::fmt::Display + Send + 'static;
    /// Names the transport in log lines.
    const TRANSPORT: &'static str;

    /// The next connection; an error is the listener's own (a full file table, say).
    fn accept(&self) -> impl Future<Output = io::Result<Arrival<Self::Stream, Self::Peer>>> + Send;

    /// The handshake on a connection that holds a slot: what it runs over and who it is, or
    /// why it failed. Bounded by [`HANDSHAKE_TIMEOUT`] by the caller.
    fn handshake(
        self: Arc<Self>,
        stream: Self::Stream,
        peer: Self::Peer,
    ) -> impl Future<Output = io::Result<Handshaken>> + Send;
}

/// What a connection is once its handshake is done.
pub(super) enum Handshaken {
    /// A gRPC connection, for the server.
    Grpc(Transport, PeerInfo),
    /// A connection that asked for another protocol (short-circuit reads on the Unix
    /// socket), served by this future while the connection holds its slot.
    Served(Pin<Box<dyn Future<Output = ()> + Send>>),
}

/// TCP connections, each to be a TLS one.
pub(super) struct TlsArrivals {
    pub(super) listener: TcpListener,
    pub(super) acceptor: TlsAcceptor,
}

impl Arrivals for TlsArrivals {
    type Stream = TcpStream;
    type Peer = SocketAddr;
    const TRANSPORT: &'static str = "tcp";

    async fn accept(&self) -> io::Result<Arrival<TcpStream, SocketAddr>> {
        let (tcp, remote) = self.listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        Ok(Arrival::Open(tcp, remote))
    }

    async fn handshake(
        self: Arc<Self>,
        tcp: TcpStream,
        remote: SocketAddr,
    ) -> io::Result<Handshaken> {
        let tls = self.acceptor.accept(tcp).await?;
        let node_id = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| NodeId::from_certificate(cert).ok());
        let info = PeerInfo {
            node_id,
            remote_addr: Some(remote),
            unix_uid: None,
        };
        Ok(Handshaken::Grpc(Transport::Tls(Box::new(tls)), info))
    }
}

/// Who the Unix socket lets in: the provider's own uid and `allowed_uids` (by
/// `SO_PEERCRED`), each proving a node key in the handshake.
pub(super) struct UnixPeers {
    pub(super) identity: Arc<NodeIdentity>,
    pub(super) own_uid: u32,
    pub(super) allowed_uids: Vec<u32>,
    /// Serves the connections that ask for short-circuit reads; `None` refuses them.
    pub(super) short_circuit: Option<Arc<crate::shortcircuit::Server>>,
}

/// Connections on the Unix socket: no TLS; the kernel names the peer's uid, which must be
/// allowed, and the handshake its node id.
pub(super) struct UnixArrivals {
    pub(super) socket: crate::unix::UnixSocket,
    pub(super) peers: UnixPeers,
}

/// A uid, in log lines.
#[derive(Clone, Copy)]
pub(super) struct Uid(u32);

impl std::fmt::Display for Uid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uid {}", self.0)
    }
}

impl Arrivals for UnixArrivals {
    type Stream = UnixStream;
    type Peer = Uid;
    const TRANSPORT: &'static str = "unix";

    async fn accept(&self) -> io::Result<Arrival<UnixStream, Uid>> {
        let (stream, _) = self.socket.listener.accept().await?;
        let uid = match stream.peer_cred() {
            Ok(cred) => cred.uid(),
            Err(e) => {
                return Ok(Arrival::Refused(format!(
                    "the kernel did not name the peer ({e})"
                )));
            }
        };
        if !crate::unix::peer_allowed(uid, self.peers.own_uid, &self.peers.allowed_uids) {
            return Ok(Arrival::Refused(format!(
                "a process of uid {uid} is not allowed (the provider runs as uid {}; see --unix-allow-uid)",
                self.peers.own_uid
            )));
        }
        Ok(Arrival::Open(stream, Uid(uid)))
    }

    async fn handshake(
        self: Arc<Self>,
        mut stream: UnixStream,
        uid: Uid,
    ) -> io::Result<Handshaken> {
        let (node_id, mode) =
            crate::unix::server_handshake(&mut stream, &self.peers.identity).await?;
        if mode == crate::unix::Mode::ShortCircuit {
            // When the mode is off, the gateway is told so and reads over gRPC.
            let serve: Pin<Box<dyn Future<Output = ()> + Send>> = match &self.peers.short_circuit {
                Some(server) => Box::pin(Arc::clone(server).serve(stream, node_id)),
                None => Box::pin(crate::shortcircuit::refuse(stream)),
            };
            return Ok(Handshaken::Served(serve));
        }
        let info = PeerInfo {
            node_id: Some(node_id),
            remote_addr: None,
            unix_uid: Some(uid.0),
        };
        Ok(Handshaken::Grpc(Transport::Unix(stream), info))
    }
}

/// The accept loop of every transport: a connection is refused on arrival when its
/// transport says so or when every slot (shared by all transports) is taken — each kind of
/// refusal logged throttled — and otherwise takes a slot for its life and is handed to the
/// gRPC server once its handshake is done within [`HANDSHAKE_TIMEOUT`].
pub(super) async fn accept_loop<A: Arrivals>(
    arrivals: A,
    conns: mpsc::Sender<Result<Connection, io::Error>>,
    shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
    slots: Arc<Semaphore>,
) {
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    let arrivals = Arc::new(arrivals);
    let transport = A::TRANSPORT;
    let (refused, past_cap) = (RefusalCount::default(), RefusalCount::default());
    loop {
        let arrival = tokio::select! {
            _ = &mut stop => break,
            accepted = arrivals.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(transport, error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (stream, peer) = match arrival {
            Arrival::Open(stream, peer) => (stream, peer),
            Arrival::Refused(reason) => {
                if let Some(n) = refused.count() {
                    warn!(transport, refused = n, %reason, "connection refused; closing");
                }
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Closed at once: holding it until a slot frees would let the flood queue up.
            if let Some(n) = past_cap.count() {
                warn!(transport, %peer, refused = n, max = limits.max_connections, "connection limit reached; closing new connections");
            }
            continue;
        };
        let arrivals = Arc::clone(&arrivals);
        let conns = conns.clone();
        tokio::spawn(async move {
            let handshake = arrivals.handshake(stream, peer);
            let done = match tokio::time::timeout(crate::HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => {
                    debug!(transport, %peer, error = %e, "handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(transport, %peer, "handshake timed out");
                    return;
                }
            };
            let (inner, info) = match done {
                Handshaken::Grpc(inner, info) => (inner, info),
                Handshaken::Served(serve) => {
                    // Served outside the handshake's bound, holding its slot while it runs.
                    serve.await;
                    drop(slot);
                    return;
                }
            };
            let conn = Connection {
                inner: Idle::new(inner, limits.idle_timeout),
                info,
                _slot: slot,
            };
            let _ = conns.send(Ok(conn)).await;
        });
    }
    // A Unix socket's file goes with `arrivals`, dropped here: nothing listens on it any more.
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

    /// A log the test's subscriber writes into.
    #[derive(Clone, Default)]
    struct Log(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
        type Writer = Log;
        fn make_writer(&'a self) -> Log {
            self.clone()
        }
    }

    #[tokio::test]
    async fn a_local_user_refused_a_thousand_times_costs_one_log_line_per_thousand() {
        let log = Log::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_ansi(false)
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);
        let dir = tempfile::tempdir().unwrap();
        let socket = crate::unix::bind(&dir.path().join("provider.sock"), false).unwrap();
        let path = socket.path.clone();
        let ours = socket.own_uid;
        // A provider that runs as another uid and lets nobody else in: this test's process is
        // the local user it refuses.
        let peers = UnixPeers {
            identity: Arc::new(NodeIdentity::generate()),
            own_uid: ours.wrapping_add(1),
            allowed_uids: Vec::new(),
            short_circuit: None,
        };
        let (conns, _served) = mpsc::channel(1);
        let (stop, stopping) = watch::channel(false);
        let limits = ConnectionLimits {
            max_connections: 4,
            idle_timeout: Duration::from_secs(5),
        };
        let looping = tokio::spawn(accept_loop(
            UnixArrivals { socket, peers },
            conns,
            stopping,
            limits,
            Arc::new(Semaphore::new(4)),
        ));
        for _ in 0..1500 {
            let mut conn = UnixStream::connect(&path).await.unwrap();
            let got = conn.read(&mut [0u8; 1]).await.unwrap_or(0);
            assert_eq!(got, 0, "a refused uid's connection was not closed");
        }
        stop.send(true).unwrap();
        looping.await.unwrap();
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("connection refused"))
            .collect();
        assert_eq!(
            lines.len(),
            2,
            "1500 refusals should log the 1st and 1000th:\n{text}"
        );
        assert!(lines[0].contains("refused=1 "), "{}", lines[0]);
        assert!(lines[1].contains("refused=1000 "), "{}", lines[1]);
        assert!(
            lines[0].contains(&format!("uid {ours} is not allowed")),
            "the line names the uid: {}",
            lines[0]
        );
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
