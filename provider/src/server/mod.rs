//! The provider daemon: the gRPC `ShardStore` service over TLS (and, for gateways on the
//! same machine, over a Unix socket), the `/metrics` and `/healthz` HTTP endpoints, and
//! graceful shutdown.
//!
//! Start-up and shutdown live here; `conn` accepts connections, `auth` decides who the
//! caller is, `service` answers the gRPC calls.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{info, warn};

mod auth;
mod conn;
mod service;

pub use crate::config::ProviderConfig;
pub use crate::config::{IDLE_TIMEOUT, MAX_CONNECTIONS};
pub use auth::TOKEN_METADATA;
pub use conn::{Connection, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, PeerInfo};

use crate::CHUNK_SIZE;
use crate::identity::{NodeId, NodeIdentity};
use crate::metrics::Metrics;
use crate::proto::shard_store_server::ShardStoreServer;
use crate::store::Store;
use conn::{ConnectionLimits, TlsArrivals, UnixArrivals, UnixPeers, accept_loop, stopped};
use service::ShardService;

/// How long shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const MAX_MESSAGE: usize = CHUNK_SIZE + 256 * 1024;
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;

/// A provider running in this process.
pub struct RunningProvider {
    pub node_id: NodeId,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The Unix socket gateways on this machine reach it by (`unix:` + this path), if any.
    pub unix_socket: Option<PathBuf>,
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
            .field("unix_socket", &self.unix_socket)
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

/// Start a provider: load or create its identity, open the store, listen.
pub async fn start(config: ProviderConfig) -> anyhow::Result<RunningProvider> {
    config.check()?;
    let data_dir = config.data_dir.clone();
    let (identity, store) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let identity = NodeIdentity::load_or_create(&data_dir)?;
        let store = Store::open_with(&data_dir, config.capacity, config.reserve, config.sync_mode)
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
    let unix_socket = match &config.listen_unix {
        Some(path) => Some(crate::unix::bind(path, !config.unix_allow_uids.is_empty())?),
        None => None,
    };
    let unix_path = unix_socket.as_ref().map(|s| s.path.clone());

    let forge_audits = Arc::new(AtomicBool::new(config.forge_audits));
    if config.forge_audits {
        warn!(%node_id, "fault injection: audit answers are forged");
    }
    if config.faults.any() {
        warn!(%node_id, faults = ?config.faults, "fault injection: this provider lies");
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (conn_tx, conn_rx) = mpsc::channel::<Result<Connection, io::Error>>(64);

    let limits = ConnectionLimits {
        max_connections: config.max_connections,
        idle_timeout: config.idle_timeout,
    };
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let mut accept_tasks = Vec::new();
    if let Some(socket) = unix_socket {
        let short_circuit = config.short_circuit.then(|| {
            Arc::new(crate::shortcircuit::Server::new(
                Arc::clone(&store),
                metrics.clone(),
                config.allowed_clients.iter().copied().collect(),
                config.token.as_deref().map(|t| blake3::hash(t.as_bytes())),
                config.faults,
                config.idle_timeout,
            ))
        });
        let peers = UnixPeers {
            identity: Arc::clone(&identity),
            own_uid: socket.own_uid,
            allowed_uids: config.unix_allow_uids.clone(),
            short_circuit,
        };
        accept_tasks.push(tokio::spawn(accept_loop(
            UnixArrivals { socket, peers },
            conn_tx.clone(),
            shutdown_rx.clone(),
            limits,
            Arc::clone(&slots),
        )));
    }
    accept_tasks.push(tokio::spawn(accept_loop(
        TlsArrivals { listener, acceptor },
        conn_tx,
        shutdown_rx.clone(),
        limits,
        slots,
    )));

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
        faults: config.faults,
    };
    let grpc = tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
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
            &market.tls,
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
    let unix = unix_path.as_ref().map(|p| p.display().to_string());
    info!(%node_id, %grpc_addr, ?unix, %http_addr, zone = %config.zone, "provider started");
    Ok(RunningProvider {
        node_id,
        grpc_addr,
        http_addr,
        unix_socket: unix_path,
        metrics,
        forge_audits,
        shutdown: shutdown_tx,
        tasks: accept_tasks
            .into_iter()
            .chain([grpc_task, http_task])
            .chain(tasks_market)
            .collect(),
    })
}
