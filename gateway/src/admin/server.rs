//! The admin HTTP server: `/metrics` (plan and health gauges refreshed from metadata at most
//! every [`REFRESH_EVERY`]), `/healthz`, the admin API and the policy API, served with
//! every wait and body bounded ([`Limits`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

use crate::meta::MetadataStore;
use crate::metrics::Metrics;
use crate::node::Node;

/// How often a scrape reads plan usage and health from metadata at most; scrapes between
/// (and scrapes while another reads) answer the gauges as last read. `/metrics` needs no
/// token, so this is what bounds the metadata work anyone can ask for.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// Whether a scrape is the one to refresh the gauges: one at a time, at most once per
/// `every`.
#[derive(Debug)]
struct RefreshGate {
    every: Duration,
    last: Mutex<Option<Instant>>,
    running: std::sync::atomic::AtomicBool,
}

impl RefreshGate {
    fn new(every: Duration) -> Self {
        RefreshGate {
            every,
            last: Mutex::new(None),
            running: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A pass to refresh now, if one is due and none runs; the refresh counts from `now`.
    fn enter(&self, now: Instant) -> Option<RefreshPass<'_>> {
        use std::sync::atomic::Ordering;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < self.every) {
            return None;
        }
        if self.running.swap(true, Ordering::AcqRel) {
            return None;
        }
        *last = Some(now);
        Some(RefreshPass(self))
    }
}

/// Held while a scrape refreshes the gauges.
struct RefreshPass<'a>(&'a RefreshGate);

impl Drop for RefreshPass<'_> {
    fn drop(&mut self) {
        self.0
            .running
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Serves `/metrics` (refreshing plan and health gauges from metadata first, see
/// [`REFRESH_EVERY`]), `/healthz` and the admin API ([`crate::admin`], its actions behind
/// `token`) on `listener` until `shutdown` resolves.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    gateway: Arc<Node>,
    standalone: super::Standalone,
    token: super::AdminToken,
    policy: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let gate = Arc::new(RefreshGate::new(REFRESH_EVERY));
    let scrape = {
        let gateway = Arc::clone(&gateway);
        let metrics = metrics.clone();
        move || {
            let metrics = metrics.clone();
            let gateway = Arc::clone(&gateway);
            let gate = Arc::clone(&gate);
            async move {
                let m = metrics.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || {
                    if let Some(_pass) = gate.enter(Instant::now()) {
                        refresh_plans(&m, gateway.metadata().as_ref());
                        refresh_users(&m, &gateway);
                        refresh_health(&m, &gateway);
                    }
                })
                .await
                {
                    tracing::warn!(error = %e, "plan usage task failed");
                }
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics.render(),
                )
            }
        }
    };
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .merge(super::router(gateway, Some(metrics), standalone, token))
        .merge(policy);
    serve_bounded(listener, router, Limits::default(), shutdown).await;
}

/// How long an admin connection may take over what a request sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// To send a request's headers; an idle kept-alive connection is closed after as long.
    pub header_read: Duration,
    /// To send a request's body, once its headers are in.
    pub body_read: Duration,
    /// The largest body taken (a policy document is the largest), in bytes.
    pub max_body: usize,
    /// How long a stop waits for requests in progress.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
            max_body: 4 << 20,
            drain: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` resolves, then lets the
/// requests in progress finish (for at most `limits.drain`). Unlike `axum::serve`, a client
/// gets so long to send headers and body, and an idle connection is closed.
pub async fn serve_bounded(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: Limits,
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
                    tracing::warn!(error = %e, "admin accept failed");
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
        connections.spawn(async move {
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
                tracing::debug!(%peer, error = %e, "admin connection ended with an error");
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
            "admin requests still in progress at stop are cut"
        );
    }
}

/// An answer in the admin API's error shape.
fn refused(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// Reads the whole body, within the time and size `limits` allow, before the handler runs.
async fn bounded_body(limits: Limits, req: Request, next: axum::middleware::Next) -> Response {
    let (parts, body) = req.into_parts();
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
            format!(
                "the request body could not be read within {} bytes: {e}",
                limits.max_body
            ),
        ),
        Err(_) => refused(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                limits.body_read.as_secs()
            ),
        ),
    }
}

/// Binds the admin address and serves it in the background, its actions behind `token`;
/// returns the bound address.
pub async fn spawn_admin(
    addr: SocketAddr,
    metrics: Metrics,
    gateway: Arc<Node>,
    token: super::AdminToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding admin address {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    // `sublet dev` runs from built-in plans, not a file: no policy API there.
    tokio::spawn(serve_admin(
        listener,
        metrics,
        gateway,
        super::Standalone::default(),
        token,
        axum::Router::new(),
        std::future::pending(),
    ));
    Ok(bound)
}

/// Reads every plan's health (from the shard index) into the gauges.
fn refresh_health(metrics: &Metrics, gateway: &Node) {
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    metrics.plan_health_objects.reset();
    metrics.repair_queue.reset();
    metrics.repair_oldest_seconds.reset();
    for plan in gateway.plans() {
        let policy = gateway.rebuild_policy(&plan.name);
        let h = match crate::node::health::plan_health(
            gateway.metadata().as_ref(),
            &plan.name,
            &policy,
        ) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(plan = plan.name, error = %e, "reading plan health failed");
                continue;
            }
        };
        let name = plan.name.as_str();
        let c = h.objects_by_health;
        for (class, n) in [
            ("healthy", c.healthy),
            ("degraded", c.degraded),
            ("at_risk", c.at_risk),
            ("lost", c.lost),
        ] {
            metrics
                .plan_health_objects
                .with_label_values(&[name, class])
                .set(clamp(n));
        }
        for (state, n) in [
            ("due", h.repair.due),
            ("at_risk", h.repair.at_risk),
            ("waiting", h.repair.waiting),
        ] {
            metrics
                .repair_queue
                .with_label_values(&[name, state])
                .set(clamp(n));
        }
        metrics
            .repair_oldest_seconds
            .with_label_values(&[name])
            .set(clamp(h.oldest_queued_seconds.unwrap_or(0)));
    }
}

/// Objects and bytes per user (bucket owner), as the accounts last counted them.
fn refresh_users(metrics: &Metrics, gateway: &Node) {
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    metrics.user_objects.reset();
    metrics.user_bytes.reset();
    for (user, u) in gateway.accounts().usage() {
        metrics
            .user_objects
            .with_label_values(&[user.as_str()])
            .set(clamp(u.objects));
        metrics
            .user_bytes
            .with_label_values(&[user.as_str()])
            .set(clamp(u.bytes));
    }
}

/// Reads objects and bytes per plan from metadata into the gauges.
fn refresh_plans(metrics: &Metrics, meta: &dyn MetadataStore) {
    match meta.plan_usage() {
        Ok(usage) => {
            metrics.plan_objects.reset();
            metrics.plan_bytes.reset();
            let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            for u in usage {
                metrics
                    .plan_objects
                    .with_label_values(&[u.plan.as_str()])
                    .set(clamp(u.objects));
                metrics
                    .plan_bytes
                    .with_label_values(&[u.plan.as_str()])
                    .set(clamp(u.bytes));
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading plan usage failed"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn a_scrape_refreshes_at_most_once_per_interval_and_one_at_a_time() {
        let gate = RefreshGate::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let pass = gate.enter(t0).expect("the first scrape refreshes");
        assert!(
            gate.enter(t0 + Duration::from_secs(60)).is_none(),
            "a second scrape while one refreshes answers the gauges as they are"
        );
        drop(pass);
        assert!(
            gate.enter(t0 + Duration::from_secs(4)).is_none(),
            "too soon"
        );
        assert!(gate.enter(t0 + Duration::from_secs(5)).is_some());
    }

    const SHORT: Limits = Limits {
        header_read: Duration::from_millis(300),
        body_read: Duration::from_millis(300),
        max_body: 1024,
        drain: Duration::from_secs(1),
    };

    async fn server() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route(
            "/echo",
            axum::routing::post(|body: axum::body::Bytes| async move { body }),
        );
        tokio::spawn(serve_bounded(
            listener,
            router,
            SHORT,
            std::future::pending(),
        ));
        addr
    }

    /// What the server sends until it closes the connection; fails if it is still open
    /// long after every limit.
    async fn exchange(addr: SocketAddr, send: &[u8]) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(send).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
            .await
            .expect("the server kept the connection open")
            .unwrap();
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn admin_clients_that_hold_a_connection_up_are_cut_off() {
        let addr = server().await;
        // Headers never finished.
        let answer = exchange(addr, b"POST /echo HTTP/1.1\r\nHost: a\r\n").await;
        assert!(!answer.contains(" 200 "), "{answer}");
        // A body that trickles: answered 408, then the connection closes.
        let answer = exchange(
            addr,
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        // A whole request, then idle: answered, then closed.
        let answer = exchange(
            addr,
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("abc"), "{answer}");
    }

    #[tokio::test]
    async fn an_oversized_admin_body_is_refused() {
        let addr = server().await;
        let mut request =
            b"POST /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 1025\r\n\r\n"
                .to_vec();
        request.extend(vec![b'x'; 1025]);
        let answer = exchange(addr, &request).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
}
