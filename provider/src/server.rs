//! The provider daemon: the gRPC `ShardStore` service over TLS, the
//! `/metrics` and `/healthz` HTTP endpoints, and graceful shutdown.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

pub use crate::config::ProviderConfig;
use crate::identity::{NodeId, NodeIdentity};
use crate::metrics::Metrics;
use crate::proto::shard_store_server::{ShardStore, ShardStoreServer};
use crate::proto::{self, put_shard_request::Part};
use crate::store::{ShardMeta, Store};
use crate::{CHUNK_SIZE, Error, VERSION};

/// Metadata key carrying the cluster token.
pub const TOKEN_METADATA: &str = "x-sublet-token";
/// How long shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_MESSAGE: usize = CHUNK_SIZE + 256 * 1024;
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;

/// Who is on the other end of a gRPC connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Node id of the client's certificate, when it presented one.
    pub node_id: Option<NodeId>,
    pub remote_addr: Option<SocketAddr>,
}

/// A server-side TLS connection that tells tonic who the peer is.
pub struct TlsConnection {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
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

/// A provider running in this process.
pub struct RunningProvider {
    pub node_id: NodeId,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub metrics: Metrics,
    forge_audits: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningProvider")
            .field("node_id", &self.node_id)
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

impl RunningProvider {
    /// Fault injection for tests: from now on answer audits with forged proofs (`true`) or
    /// honestly again (`false`); shards and reads are untouched either way.
    pub fn forge_audits(&self, on: bool) {
        self.forge_audits.store(on, Ordering::Relaxed);
        warn!(node_id = %self.node_id, on, "fault injection: forged audit answers");
    }

    /// Stop accepting connections and wait for in-flight requests (writes
    /// included) to finish.
    /// Requests still running after [`SHUTDOWN_GRACE`] are cut off.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for mut task in self.tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "provider task failed during shutdown"),
                Err(_) => {
                    warn!(
                        "in-flight requests outlived the shutdown grace period; cutting them off"
                    );
                    task.abort();
                }
            }
        }
        info!(node_id = %self.node_id, "provider stopped");
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Start a provider: load or create its identity, open the store, listen.
pub async fn start(config: ProviderConfig) -> anyhow::Result<RunningProvider> {
    let data_dir = config.data_dir.clone();
    let (identity, store) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let identity = NodeIdentity::load_or_create(&data_dir)?;
        let store = Store::open(&data_dir, config.capacity, config.reserve)
            .with_context(|| format!("opening shard store in {}", data_dir.display()))?;
        Ok((identity, store))
    })
    .await??;
    let identity = Arc::new(identity);
    let store = Arc::new(store);
    let node_id = identity.node_id();
    // Shards written before format 2 are rewritten in it, one at a time, in the background.
    let upgrading = Arc::clone(&store);
    tokio::task::spawn_blocking(move || {
        let report = upgrading.upgrade_shards();
        if report != Default::default() {
            info!(
                upgraded = report.upgraded,
                reclaimed_bytes = report.reclaimed,
                skipped = report.skipped,
                "format-1 shards rewritten in format 2"
            );
        }
    });
    let metrics = Metrics::new()?;
    metrics.set_usage(store.usage());

    let acceptor = TlsAcceptor::from(Arc::new(crate::tls::server_config(&identity)?));
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding gRPC address {}", config.listen))?;
    let grpc_addr = listener.local_addr()?;
    let http_listener = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("binding HTTP address {}", config.http_listen))?;
    let http_addr = http_listener.local_addr()?;

    let forge_audits = Arc::new(AtomicBool::new(config.forge_audits));
    if config.forge_audits {
        warn!(%node_id, "fault injection: audit answers are forged");
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (conn_tx, conn_rx) = mpsc::channel::<Result<TlsConnection, io::Error>>(64);

    let accept_task = tokio::spawn(accept_loop(
        listener,
        acceptor,
        conn_tx,
        shutdown_rx.clone(),
    ));

    let contracted = crate::market::ContractedClients::default();
    let service = ShardService {
        store: Arc::clone(&store),
        metrics: metrics.clone(),
        node_id,
        allowed: config.allowed_clients.iter().copied().collect(),
        contracted: contracted.clone(),
        token_hash: config.token.as_deref().map(|t| blake3::hash(t.as_bytes())),
        zone: config.zone.clone(),
        started: Instant::now(),
        forge_audits: Arc::clone(&forge_audits),
    };
    let grpc = tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .add_service(
            ShardStoreServer::new(service)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), stopped(shutdown_rx.clone()));
    let grpc_task = tokio::spawn(async move {
        if let Err(e) = grpc.await {
            warn!(error = %e, "gRPC server failed");
        }
    });

    let mut tasks_market = Vec::new();
    if let Some(market) = &config.market {
        let offer = market.new_offer(config.capacity.saturating_sub(config.reserve))?;
        let publisher = crate::market::OfferPublisher::new(
            &identity,
            &market.url,
            offer,
            config.data_dir.clone(),
        )?
        .allowing(contracted, Arc::clone(&store))?;
        info!(market = %market.url, party = %publisher.party_id(), "lending space on the market");
        tasks_market.push(tokio::spawn(
            publisher.run(market.interval, shutdown_rx.clone()),
        ));
    }

    let http_state = (metrics.clone(), Arc::clone(&store));
    let router = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let (metrics, store) = http_state.clone();
                async move {
                    metrics.set_usage(store.usage());
                    metrics.render()
                }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    let http_shutdown = stopped(shutdown_rx);
    let http_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(http_listener, router)
            .with_graceful_shutdown(http_shutdown)
            .await
        {
            warn!(error = %e, "HTTP server failed");
        }
    });

    if config.allowed_clients.is_empty() && config.token.is_none() && config.market.is_none() {
        warn!("no allowed clients and no token configured: every call will be refused");
    }
    info!(%node_id, %grpc_addr, %http_addr, zone = %config.zone, "provider started");
    Ok(RunningProvider {
        node_id,
        grpc_addr,
        http_addr,
        metrics,
        forge_audits,
        shutdown: shutdown_tx,
        tasks: [accept_task, grpc_task, http_task]
            .into_iter()
            .chain(tasks_market)
            .collect(),
    })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    conns: mpsc::Sender<Result<TlsConnection, io::Error>>,
    shutdown: watch::Receiver<bool>,
) {
    let stop = stopped(shutdown);
    tokio::pin!(stop);
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
            let conn = TlsConnection {
                inner: tls,
                info: PeerInfo {
                    node_id,
                    remote_addr: Some(remote),
                },
            };
            let _ = conns.send(Ok(conn)).await;
        });
    }
}

struct ShardService {
    store: Arc<Store>,
    metrics: Metrics,
    node_id: NodeId,
    allowed: HashSet<NodeId>,
    /// Gateways of demanders with an active market contract, kept by the market task.
    contracted: crate::market::ContractedClients,
    token_hash: Option<blake3::Hash>,
    zone: String,
    started: Instant,
    /// Fault injection: audit answers are forged while this is set.
    forge_audits: Arc<AtomicBool>,
}

/// Who is calling, and so which shards it may see.
#[derive(Clone, Debug)]
enum Caller {
    /// This provider's own gateways (an allowed node id or the cluster token): every shard.
    Owner,
    /// A demander's gateway admitted by a market contract: the shards of its namespace only,
    /// up to its contracts' reservation.
    Tenant {
        namespace: String,
        tenancy: crate::market::Tenancy,
    },
}

impl Caller {
    /// The id under which the caller's shard `id` is stored.
    fn scope(&self, id: &str) -> Result<String, Status> {
        match self {
            Caller::Owner => Ok(id.to_owned()),
            Caller::Tenant { namespace, .. } => {
                crate::store::validate_shard_id(id)?;
                let full = format!("{namespace}{id}");
                if full.len() > crate::store::MAX_ID_LEN {
                    return Err(Status::invalid_argument(format!(
                        "shard id {:?} is too long: a market tenant's shard ids are at most {} characters",
                        id.chars().take(64).collect::<String>(),
                        crate::store::MAX_ID_LEN - namespace.len()
                    )));
                }
                Ok(full)
            }
        }
    }

    /// The caller's name for the stored shard `id`.
    fn unscope(&self, id: String) -> String {
        match self {
            Caller::Owner => id,
            Caller::Tenant { namespace, .. } => id
                .strip_prefix(namespace.as_str())
                .map_or(id.clone(), str::to_owned),
        }
    }

    fn contract(&self) -> Option<&str> {
        match self {
            Caller::Owner => None,
            Caller::Tenant { tenancy, .. } => Some(&tenancy.contract),
        }
    }
}

fn stat_of(id: String, meta: &ShardMeta) -> proto::ShardStat {
    proto::ShardStat {
        shard_id: id,
        length: meta.length,
        hash: Bytes::copy_from_slice(&meta.hash),
        stored_at: meta.stored_at,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Status::from),
        Err(e) => Err(Status::internal(format!("storage task failed: {e}"))),
    }
}

impl ShardService {
    fn authorize<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.node_id);
        if let Some(id) = peer
            && self.allowed.contains(&id)
        {
            return Ok(Caller::Owner);
        }
        if let (Some(expected), Some(token)) =
            (self.token_hash, request.metadata().get(TOKEN_METADATA))
            && blake3::hash(token.as_bytes()) == expected
        {
            return Ok(Caller::Owner);
        }
        if let Some(id) = peer
            && let Some(tenancy) = self.contracted.get(&id)
        {
            return Ok(Caller::Tenant {
                namespace: crate::market::tenant_namespace(&id),
                tenancy,
            });
        }
        let who = peer.map_or_else(
            || "a client without certificate".to_string(),
            |id| format!("client {id}"),
        );
        Err(Error::Unauthenticated(format!(
            "{who} is not an allowed client and presented no valid {TOKEN_METADATA}"
        ))
        .into())
    }

    /// Count a finished request and, for corruption, the corruption.
    fn record(&self, method: &str, started: Instant, code: Code) {
        self.metrics
            .requests
            .with_label_values(&[method, &format!("{code:?}")])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());
        if code == Code::DataLoss {
            self.metrics.corruptions.inc();
        }
    }

    fn finish<T>(
        &self,
        method: &str,
        started: Instant,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let code = result.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
        self.record(method, started, code);
        if let Err(status) = &result
            && !matches!(status.code(), Code::NotFound | Code::Unauthenticated)
        {
            debug!(method, code = ?status.code(), message = status.message(), "request failed");
        }
        result
    }

    async fn put(
        &self,
        caller: &Caller,
        mut stream: Streaming<proto::PutShardRequest>,
    ) -> Result<proto::PutShardResponse, Status> {
        let header = match stream.message().await? {
            Some(proto::PutShardRequest {
                part: Some(Part::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first PutShard message must carry the header",
                ));
            }
        };
        let expected = match header.expected_hash.len() {
            0 => None,
            32 => {
                let mut h = [0u8; 32];
                h.copy_from_slice(&header.expected_hash);
                Some(h)
            }
            n => {
                return Err(Status::invalid_argument(format!(
                    "expected_hash must be 32 bytes (BLAKE3), got {n}"
                )));
            }
        };
        let store = Arc::clone(&self.store);
        let id = caller.scope(&header.shard_id)?;
        let length = header.length;
        let quota = match caller {
            Caller::Owner => None,
            Caller::Tenant { tenancy, .. } => Some(tenancy.quota),
        };
        let writer = blocking(move || store.begin_put_within(&id, length, expected, quota)).await?;

        // The writer runs on a blocking thread; a small queue bounds memory.
        let (tx, mut rx) = mpsc::channel::<Bytes>(4);
        let write_task = tokio::task::spawn_blocking(move || {
            let mut writer = writer;
            while let Some(data) = rx.blocking_recv() {
                writer.write(&data)?;
            }
            Ok::<_, Error>(writer)
        });
        let mut stream_error = None;
        let mut received = 0u64;
        loop {
            match stream.message().await {
                Ok(Some(proto::PutShardRequest {
                    part: Some(Part::Data(data)),
                })) => {
                    received += data.len() as u64;
                    if tx.send(data).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Ok(Some(_)) => {
                    stream_error = Some(Status::invalid_argument(
                        "only data may follow the PutShard header",
                    ));
                    break;
                }
                Ok(None) => break,
                Err(status) => {
                    stream_error = Some(status);
                    break;
                }
            }
        }
        drop(tx);
        let writer = match write_task.await {
            Ok(Ok(writer)) => writer,
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(Status::internal(format!("storage task failed: {e}"))),
        };
        self.metrics
            .bytes
            .with_label_values(&["PutShard"])
            .inc_by(received);
        if let Some(status) = stream_error {
            // Dropping the writer removes the temp file.
            tokio::task::spawn_blocking(move || drop(writer));
            return Err(status);
        }
        let meta = blocking(move || writer.commit()).await?;
        info!(shard = %header.shard_id, length = meta.length, "shard stored");
        Ok(proto::PutShardResponse {
            hash: Bytes::copy_from_slice(&meta.hash),
            length: meta.length,
        })
    }
}

type ChunkStream = ReceiverStream<Result<proto::ShardChunk, Status>>;

#[tonic::async_trait]
impl ShardStore for ShardService {
    async fn put_shard(
        &self,
        request: Request<Streaming<proto::PutShardRequest>>,
    ) -> Result<Response<proto::PutShardResponse>, Status> {
        let started = Instant::now();
        let result = match self.authorize(&request) {
            Ok(caller) => self.put(&caller, request.into_inner()).await,
            Err(e) => Err(e),
        };
        self.finish("PutShard", started, result).map(Response::new)
    }

    type GetShardStream = ChunkStream;

    async fn get_shard(
        &self,
        request: Request<proto::GetShardRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let started = Instant::now();
        let caller = match self.authorize(&request) {
            Ok(c) => c,
            Err(e) => return self.finish("GetShard", started, Err(e)),
        };
        let req = request.into_inner();
        let at = crate::market::metered_second(req.metered_at);
        let id = match caller.scope(&req.shard_id) {
            Ok(id) => id,
            Err(e) => return self.finish("GetShard", started, Err(e)),
        };
        let store = Arc::clone(&self.store);
        // Open and verify the first chunk before answering, so a missing or
        // corrupt shard is a status rather than a broken stream.
        let opened = blocking(move || {
            let mut reader = store.read_range(&id, req.offset, req.length)?;
            let first = reader.next_chunk(CHUNK_SIZE)?;
            Ok((reader, first))
        })
        .await;
        let (mut reader, first) = match opened {
            Ok(v) => v,
            Err(e) => return self.finish("GetShard", started, Err(e)),
        };
        let mut total = first.len() as u64 + reader.remaining();
        let (tx, rx) = mpsc::channel(2);
        let metrics = self.metrics.clone();
        let recorder = self.clone_for_recording();
        // A tenant's egress is metered for its receipts: what was handed to the connection.
        let meter = caller
            .contract()
            .map(|c| (self.contracted.clone(), c.to_owned(), at));
        tokio::task::spawn_blocking(move || {
            let bytes = metrics.bytes.with_label_values(&["GetShard"]);
            let mut egress = EgressOnDrop { meter, sent: 0 };
            let mut chunk = first;
            loop {
                if chunk.is_empty() {
                    break;
                }
                bytes.inc_by(chunk.len() as u64);
                egress.sent += chunk.len() as u64;
                let message = proto::ShardChunk {
                    data: chunk,
                    total: std::mem::take(&mut total),
                };
                if tx.blocking_send(Ok(message)).is_err() {
                    recorder.record("GetShard", started, Code::Cancelled);
                    return;
                }
                if reader.remaining() == 0 {
                    break;
                }
                chunk = match reader.next_chunk(CHUNK_SIZE) {
                    Ok(c) => c,
                    Err(e) => {
                        let status = Status::from(e);
                        recorder.record("GetShard", started, status.code());
                        let _ = tx.blocking_send(Err(status));
                        return;
                    }
                };
            }
            recorder.record("GetShard", started, Code::Ok);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delete_shard(
        &self,
        request: Request<proto::DeleteShardRequest>,
    ) -> Result<Response<proto::DeleteShardResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let caller = self.authorize(&request)?;
            let id = caller.scope(&request.into_inner().shard_id)?;
            let store = Arc::clone(&self.store);
            let existed = blocking(move || store.delete(&id)).await?;
            Ok(proto::DeleteShardResponse { existed })
        }
        .await;
        self.finish("DeleteShard", started, result)
            .map(Response::new)
    }

    async fn stat_shard(
        &self,
        request: Request<proto::StatShardRequest>,
    ) -> Result<Response<proto::ShardStat>, Status> {
        let started = Instant::now();
        let result = self.authorize(&request).and_then(|caller| {
            let id = request.into_inner().shard_id;
            let meta = self.store.stat(&caller.scope(&id)?)?;
            Ok(stat_of(id, &meta))
        });
        self.finish("StatShard", started, result).map(Response::new)
    }

    async fn list_shards(
        &self,
        request: Request<proto::ListShardsRequest>,
    ) -> Result<Response<proto::ListShardsResponse>, Status> {
        let started = Instant::now();
        let result = self.authorize(&request).map(|caller| {
            let req = request.into_inner();
            let limit = match req.limit {
                0 => 1000,
                n => n.min(10_000),
            } as usize;
            // A tenant lists inside its namespace; its own ids can't escape it.
            let (prefix, start_after) = match &caller {
                Caller::Owner => (req.prefix, req.start_after),
                Caller::Tenant { namespace, .. } => (
                    format!("{namespace}{}", req.prefix),
                    if req.start_after.is_empty() {
                        String::new()
                    } else {
                        format!("{namespace}{}", req.start_after)
                    },
                ),
            };
            let (page, next) = self.store.list(&prefix, &start_after, limit);
            proto::ListShardsResponse {
                shards: page
                    .into_iter()
                    .map(|(id, meta)| stat_of(caller.unscope(id), &meta))
                    .collect(),
                next_start_after: next.map(|n| caller.unscope(n)).unwrap_or_default(),
            }
        });
        self.finish("ListShards", started, result)
            .map(Response::new)
    }

    async fn info(
        &self,
        request: Request<proto::InfoRequest>,
    ) -> Result<Response<proto::InfoResponse>, Status> {
        let started = Instant::now();
        let result = self.authorize(&request).map(|caller| {
            let mut usage = self.store.usage();
            self.metrics.set_usage(usage);
            // A tenant sees its reservation as the capacity, and its own shards.
            if let Caller::Tenant { namespace, tenancy } = &caller {
                let mine = self.store.tenant_usage(namespace);
                usage = crate::store::Usage {
                    capacity: tenancy.quota,
                    used: mine.file_bytes,
                    free: tenancy
                        .quota
                        .saturating_sub(mine.file_bytes + mine.reserved)
                        .min(usage.free),
                    shards: mine.shards,
                };
            }
            proto::InfoResponse {
                node_id: self.node_id.to_string(),
                capacity_bytes: usage.capacity,
                used_bytes: usage.used,
                free_bytes: usage.free,
                version: VERSION.to_string(),
                uptime_seconds: self.started.elapsed().as_secs(),
                shard_count: usage.shards,
                zone: self.zone.clone(),
            }
        });
        self.finish("Info", started, result).map(Response::new)
    }

    async fn audit(
        &self,
        request: Request<proto::AuditRequest>,
    ) -> Result<Response<proto::AuditResponse>, Status> {
        let started = Instant::now();
        let mut contract = None;
        let result: Result<proto::AuditResponse, Status> = async {
            let caller = self.authorize(&request)?;
            let req = request.into_inner();
            contract = caller
                .contract()
                .map(|c| (c.to_owned(), crate::market::metered_second(req.metered_at)));
            let id = caller.scope(&req.shard_id)?;
            let store = Arc::clone(&self.store);
            let takes_tree = req.accepts().any(|f| f == proto::ProofFormat::Groups);
            let mut answer =
                blocking(move || store.audit(&id, req.offset, req.length, takes_tree)).await?;
            // A cheat that does not read the shard: the proof's content bytes are made up.
            if self.forge_audits.load(Ordering::Relaxed)
                && let Some(last) = answer.proof.last_mut()
            {
                *last ^= 0x5a;
            }
            self.metrics
                .bytes
                .with_label_values(&["Audit"])
                .inc_by(answer.proof.len() as u64);
            let format = if answer.bao {
                proto::ProofFormat::Bao
            } else {
                proto::ProofFormat::Groups
            };
            Ok(proto::AuditResponse {
                slice: Bytes::from(answer.proof),
                shard_length: answer.shard_length,
                proof_format: format.into(),
            })
        }
        .await;
        let outcome = match &result {
            Ok(_) => "answered",
            Err(s) if s.code() == Code::NotFound => "not_found",
            Err(s) if s.code() == Code::DataLoss => "corrupt",
            Err(_) => "error",
        };
        // A tenant's receipts count its audits as this provider saw them: answered is
        // passed (the provider checked the slice), a missing or corrupt shard is failed.
        if let Some((contract, at)) = &contract {
            match outcome {
                "answered" => self.contracted.audit(contract, *at, true),
                "not_found" | "corrupt" => self.contracted.audit(contract, *at, false),
                _ => {}
            }
        }
        self.metrics.audits.with_label_values(&[outcome]).inc();
        self.finish("Audit", started, result).map(Response::new)
    }
}

impl ShardService {
    fn clone_for_recording(&self) -> Recorder {
        Recorder {
            metrics: self.metrics.clone(),
        }
    }
}

/// Adds a tenant's streamed bytes to its meter when the stream ends, however it ends.
struct EgressOnDrop {
    /// The tenant's contract and the second the read is metered under.
    meter: Option<(crate::market::ContractedClients, String, i64)>,
    sent: u64,
}

impl Drop for EgressOnDrop {
    fn drop(&mut self) {
        if let Some((clients, contract, at)) = &self.meter
            && self.sent > 0
        {
            clients.egress(contract, *at, self.sent);
        }
    }
}

/// The part of the service a background stream task needs to record metrics.
struct Recorder {
    metrics: Metrics,
}

impl Recorder {
    fn record(&self, method: &str, started: Instant, code: Code) {
        self.metrics
            .requests
            .with_label_values(&[method, &format!("{code:?}")])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());
        if code == Code::DataLoss {
            self.metrics.corruptions.inc();
        }
    }
}
