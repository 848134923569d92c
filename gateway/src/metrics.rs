//! Gateway metrics (names start with `sublet_gateway_`) and the admin HTTP server with
//! `/metrics` and `/healthz`: S3 requests by operation and status, bytes in and out, latency,
//! shard calls per provider, and objects and bytes per plan read from metadata on scrape.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use s3s::service::S3Service;
use s3s::{HttpError, HttpRequest, HttpResponse};

use crate::dataplane::{BackendError, ShardBackend};
use crate::meta::MetadataStore;
use crate::placement::HealthBoard;
use crate::s3::Gateway;

/// The gateway's metrics, in a registry of their own so several gateways can run in one
/// process (tests).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// S3 requests by operation and HTTP status.
    pub requests: IntCounterVec,
    /// Time to response headers by operation.
    pub latency: HistogramVec,
    /// Request body bytes by operation (as declared by the client).
    pub received_bytes: IntCounterVec,
    /// Response body bytes by operation (as declared by Content-Length).
    pub sent_bytes: IntCounterVec,
    /// Shards stored per provider.
    pub shard_writes: IntCounterVec,
    /// Shards read per provider.
    pub shard_reads: IntCounterVec,
    /// Failed shard calls per provider and call (`put`, `get`, `delete`).
    pub shard_failures: IntCounterVec,
    /// Stored versions per plan.
    pub plan_objects: IntGaugeVec,
    /// Logical bytes of stored versions per plan.
    pub plan_bytes: IntGaugeVec,
    /// Stored versions per plan and health class.
    pub plan_health_objects: IntGaugeVec,
    /// Objects per plan due for repair (`state` due, or waiting inside the grace period).
    pub repair_queue: IntGaugeVec,
    /// Age of the oldest loss among a plan's due objects.
    pub repair_oldest_seconds: IntGaugeVec,
    /// Objects repaired per plan.
    pub repaired_objects: IntCounterVec,
    /// Shards rebuilt and written per plan.
    pub rebuilt_shards: IntCounterVec,
    /// Bytes of rebuilt shards written per plan.
    pub rebuilt_bytes: IntCounterVec,
    /// Repairs that failed or lost a race, per plan and reason.
    pub repair_failures: IntCounterVec,
    /// Shard audits per provider and result (`pass`, `fail`).
    pub audits: IntCounterVec,
    /// Percent of a provider's audits passed since the gateway started.
    pub provider_score: IntGaugeVec,
    /// Unreferenced shards removed from providers.
    pub gc_deleted: IntCounterVec,
    /// Shards a scrub read whole, by provider and outcome.
    pub scrubbed_shards: IntCounterVec,
    /// Shard bytes a scrub read, by provider.
    pub scrubbed_bytes: IntCounterVec,
    /// Objects rewritten under their plan's changed settings, by plan.
    pub reencoded_objects: IntCounterVec,
    /// Objects of a plan still stored under its old settings (as of the last pass).
    pub reencode_pending: IntGaugeVec,
    /// Metadata journal segments, by result (`stored`, `failed`).
    pub journal_segments: IntCounterVec,
    /// Metadata changes in stored journal segments.
    pub journal_entries: IntCounterVec,
    /// Journal segment copies stored, by provider (also counted in `shard_writes`).
    pub journal_copies: IntCounterVec,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(format!("sublet_gateway_{name}"), help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(format!("sublet_gateway_{name}"), help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let requests = counter(
            "requests_total",
            "S3 requests by operation and HTTP status.",
            &["op", "status"],
        )?;
        let received_bytes = counter(
            "received_bytes_total",
            "Request body bytes by S3 operation.",
            &["op"],
        )?;
        let sent_bytes = counter(
            "sent_bytes_total",
            "Response body bytes by S3 operation.",
            &["op"],
        )?;
        let shard_writes = counter(
            "shard_writes_total",
            "Shards stored, by provider node id.",
            &["provider"],
        )?;
        let shard_reads = counter(
            "shard_reads_total",
            "Shards read, by provider node id.",
            &["provider"],
        )?;
        let shard_failures = counter(
            "shard_failures_total",
            "Failed shard calls by provider node id and call.",
            &["provider", "call"],
        )?;
        let plan_objects = gauge("plan_objects", "Stored object versions by plan.", &["plan"])?;
        let plan_bytes = gauge(
            "plan_bytes",
            "Logical bytes of stored object versions by plan.",
            &["plan"],
        )?;
        let plan_health_objects = gauge(
            "plan_health_objects",
            "Stored object versions by plan and health class (healthy, degraded, at_risk = exactly dataShards left, lost).",
            &["plan", "class"],
        )?;
        let repair_queue = gauge(
            "repair_queue_objects",
            "Objects below minHealthyShards by plan: state due (past the grace period), at_risk (due with only dataShards left) or waiting (inside the grace period).",
            &["plan", "state"],
        )?;
        let repair_oldest_seconds = gauge(
            "repair_oldest_queued_seconds",
            "Age of the oldest shard loss among a plan's objects due for repair.",
            &["plan"],
        )?;
        let repaired_objects = counter(
            "repaired_objects_total",
            "Objects whose lost shards were rebuilt, by plan.",
            &["plan"],
        )?;
        let rebuilt_shards = counter(
            "rebuilt_shards_total",
            "Shards rebuilt and written to new providers, by plan.",
            &["plan"],
        )?;
        let rebuilt_bytes = counter(
            "rebuilt_bytes_total",
            "Bytes of rebuilt shards written, by plan.",
            &["plan"],
        )?;
        let repair_failures = counter(
            "repair_failures_total",
            "Repairs that failed (unreadable, unplaceable, write failed) or lost a race to a change of the object, by plan and reason.",
            &["plan", "reason"],
        )?;
        let audits = counter(
            "audits_total",
            "Shard audits (a random slice verified against the hash recorded at write time) by provider and result.",
            &["provider", "result"],
        )?;
        let provider_score = gauge(
            "provider_score",
            "Percent of a provider's audits passed since the gateway started.",
            &["provider"],
        )?;
        let gc_deleted = counter(
            "gc_deleted_shards_total",
            "Shards no metadata referenced, removed from providers after the safety delay.",
            &["provider"],
        )?;
        let scrubbed_shards = counter(
            "scrubbed_shards_total",
            "Shards a scrub read whole and checked against the hash recorded at write time, by provider and outcome (intact, bad, unanswered).",
            &["provider", "outcome"],
        )?;
        let scrubbed_bytes = counter(
            "scrubbed_bytes_total",
            "Shard bytes read by scrubs, by provider.",
            &["provider"],
        )?;
        let reencoded_objects = counter(
            "reencoded_objects_total",
            "Objects rewritten under their plan's changed redundancy or encryption, by plan.",
            &["plan"],
        )?;
        let reencode_pending = gauge(
            "reencode_pending_objects",
            "Objects of a plan still stored under its old redundancy or encryption, after the last re-encode pass.",
            &["plan"],
        )?;
        let journal_segments = counter(
            "journal_segments_total",
            "Metadata journal segments (each a group of metadata changes), by result (stored, failed).",
            &["result"],
        )?;
        let journal_entries = counter(
            "journal_entries_total",
            "Metadata changes in journal segments stored on providers.",
            &[],
        )?;
        let journal_copies = counter(
            "journal_copies_total",
            "Copies of metadata journal segments stored, by provider node id (also counted in shard_writes_total).",
            &["provider"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "sublet_gateway_request_duration_seconds",
                "Time from request to response headers by S3 operation.",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.5, 14)?),
            &["op"],
        )?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            received_bytes,
            sent_bytes,
            shard_writes,
            shard_reads,
            shard_failures,
            plan_objects,
            plan_bytes,
            plan_health_objects,
            repair_queue,
            repair_oldest_seconds,
            repaired_objects,
            rebuilt_shards,
            rebuilt_bytes,
            repair_failures,
            audits,
            provider_score,
            gc_deleted,
            scrubbed_shards,
            scrubbed_bytes,
            reencoded_objects,
            reencode_pending,
            journal_segments,
            journal_entries,
            journal_copies,
        })
    }

    /// Reads every plan's health (from the shard index) into the gauges.
    pub fn refresh_health(&self, gateway: &Gateway) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.plan_health_objects.reset();
        self.repair_queue.reset();
        self.repair_oldest_seconds.reset();
        for plan in gateway.plans() {
            let policy = gateway.rebuild_policy(&plan.name);
            let h = match crate::health::plan_health(
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
                self.plan_health_objects
                    .with_label_values(&[name, class])
                    .set(clamp(n));
            }
            for (state, n) in [
                ("due", h.repair.due),
                ("at_risk", h.repair.at_risk),
                ("waiting", h.repair.waiting),
            ] {
                self.repair_queue
                    .with_label_values(&[name, state])
                    .set(clamp(n));
            }
            self.repair_oldest_seconds
                .with_label_values(&[name])
                .set(clamp(h.oldest_queued_seconds.unwrap_or(0)));
        }
    }

    /// Reads objects and bytes per plan from metadata into the gauges.
    pub fn refresh_plans(&self, meta: &dyn MetadataStore) {
        match meta.plan_usage() {
            Ok(usage) => {
                self.plan_objects.reset();
                self.plan_bytes.reset();
                let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                for u in usage {
                    self.plan_objects
                        .with_label_values(&[u.plan.as_str()])
                        .set(clamp(u.objects));
                    self.plan_bytes
                        .with_label_values(&[u.plan.as_str()])
                        .set(clamp(u.bytes));
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading plan usage failed"),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The S3 operation of a request, filled in by the access check (which s3s runs with the
/// resolved operation) and read by [`MeteredService`] once the response is ready.
#[derive(Clone, Default)]
pub struct OperationSlot(Arc<Mutex<Option<String>>>);

impl OperationSlot {
    pub fn set(&self, op: &str) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(op.to_owned());
    }

    fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The S3 service with request metrics around it.
#[derive(Clone)]
pub struct MeteredService {
    inner: S3Service,
    metrics: Metrics,
    journal: Option<Arc<crate::journal::Journal>>,
}

impl MeteredService {
    pub fn new(inner: S3Service, metrics: Metrics) -> Self {
        MeteredService {
            inner,
            metrics,
            journal: None,
        }
    }

    /// Answers a request that may have changed metadata only once the change is in the
    /// metadata journal (503 when it cannot be stored).
    pub fn with_journal(mut self, journal: Option<Arc<crate::journal::Journal>>) -> Self {
        self.journal = journal;
        self
    }

    pub async fn call(&self, mut req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let started = Instant::now();
        let slot = OperationSlot::default();
        req.extensions_mut().insert(slot.clone());
        let received = declared_length(req.headers(), true);
        let changes = !matches!(*req.method(), http::Method::GET | http::Method::HEAD);
        let mut result = self.inner.call(req).await;
        if changes
            && let Some(journal) = &self.journal
            && let Ok(response) = &result
            && response.status().is_success()
            && let Err(e) = journal.barrier().await
        {
            tracing::warn!(error = %e, "a change could not be made durable; answering 503");
            result = Ok(journal_unavailable(&e));
        }
        if let Ok(response) = &mut result
            && let Some(StatusOverride(status)) = response.extensions_mut().remove()
        {
            *response.status_mut() = status;
        }
        // Requests refused before s3s resolved an operation (bad signature, bad path).
        let op = slot.get().unwrap_or_else(|| "unknown".to_owned());
        let m = &self.metrics;
        m.latency
            .with_label_values(&[op.as_str()])
            .observe(started.elapsed().as_secs_f64());
        m.received_bytes
            .with_label_values(&[op.as_str()])
            .inc_by(received);
        match &result {
            Ok(resp) => {
                m.requests
                    .with_label_values(&[op.as_str(), resp.status().as_str()])
                    .inc();
                m.sent_bytes
                    .with_label_values(&[op.as_str()])
                    .inc_by(declared_length(resp.headers(), false));
            }
            Err(_) => m.requests.with_label_values(&[op.as_str(), "500"]).inc(),
        }
        result
    }
}

/// The answer to a request whose change did not reach the metadata journal: the client
/// retries it, as after any 503.
fn journal_unavailable(message: &str) -> HttpResponse {
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>ServiceUnavailable</Code>\
         <Message>{escaped}</Message></Error>"
    );
    let mut response = HttpResponse::new(s3s::Body::from(body));
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    response
}

/// Body length from the headers; `x-amz-decoded-content-length` for aws-chunked uploads.
fn declared_length(headers: &http::HeaderMap, request: bool) -> u64 {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let decoded = if request {
        get("x-amz-decoded-content-length")
    } else {
        None
    };
    decoded.or_else(|| get("content-length")).unwrap_or(0)
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for MeteredService {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let service = self.clone();
        let close = expects_continue_without_body(&req);
        Box::pin(async move {
            let mut response = service.call(req.map(s3s::Body::from)).await?;
            if close {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok(response)
        })
    }
}

/// A status an S3 handler wants on its answer where s3s would always send 200 (a HEAD of
/// one part is 206 in S3), carried in the response extensions.
#[derive(Clone, Copy, Debug)]
pub struct StatusOverride(pub http::StatusCode);

/// An `Expect: 100-continue` request with an empty body gets its final answer without a
/// `100 Continue` (hyper sends one only when a body is read). botocore (awscli, boto3) then
/// keeps that answer's status line for the next request on the connection and misreads its
/// response, so such a connection is closed after the answer.
fn expects_continue_without_body<B>(req: &http::Request<B>) -> bool {
    let headers = req.headers();
    let expects = headers
        .get(http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let empty = !headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.trim() == "0");
    expects && empty
}

/// A shard backend that counts calls per provider and tells placement which providers fail.
pub struct ObservedBackend {
    inner: Arc<dyn ShardBackend>,
    metrics: Metrics,
    health: Arc<HealthBoard>,
}

impl ObservedBackend {
    pub fn wrap(
        inner: Arc<dyn ShardBackend>,
        metrics: &Metrics,
        health: &Arc<HealthBoard>,
    ) -> Arc<dyn ShardBackend> {
        Arc::new(ObservedBackend {
            inner,
            metrics: metrics.clone(),
            health: Arc::clone(health),
        })
    }

    fn outcome<T>(&self, call: &str, result: &Result<T, BackendError>) {
        let node = self.inner.node_id();
        match result {
            Ok(_) => self.health.record_success(node),
            Err(e) => {
                self.metrics
                    .shard_failures
                    .with_label_values(&[node, call])
                    .inc();
                // A missing shard is an answer, not a sick provider.
                if !e.0.contains("NotFound") {
                    self.health.record_failure(node);
                }
            }
        }
    }
}

#[async_trait]
impl ShardBackend for ObservedBackend {
    fn node_id(&self) -> &str {
        self.inner.node_id()
    }

    async fn put(&self, shard_id: &str, data: Bytes) -> Result<[u8; 32], BackendError> {
        let result = self.inner.put(shard_id, data).await;
        self.outcome("put", &result);
        if result.is_ok() {
            self.metrics
                .shard_writes
                .with_label_values(&[self.node_id()])
                .inc();
        }
        result
    }

    async fn get(&self, shard_id: &str) -> Result<Bytes, BackendError> {
        let result = self.inner.get(shard_id).await;
        self.outcome("get", &result);
        if result.is_ok() {
            self.metrics
                .shard_reads
                .with_label_values(&[self.node_id()])
                .inc();
        }
        result
    }

    async fn delete(&self, shard_id: &str) -> Result<(), BackendError> {
        let result = self.inner.delete(shard_id).await;
        self.outcome("delete", &result);
        result
    }

    async fn audit(
        &self,
        shard_id: &str,
        offset: u64,
        len: u64,
        hash: &[u8; 32],
    ) -> Result<(), BackendError> {
        // Audit outcomes count in the provider's audit record, not its reachability.
        self.inner.audit(shard_id, offset, len, hash).await
    }

    async fn list(&self) -> Result<Option<Vec<(String, i64)>>, BackendError> {
        self.inner.list().await
    }
}

/// Serves `/metrics` (refreshing plan and health gauges from metadata first), `/healthz` and
/// the admin API ([`crate::admin`], its actions behind `token`) on `listener` until `shutdown`
/// resolves.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    gateway: Arc<Gateway>,
    standalone: crate::admin::Standalone,
    token: crate::admin::AdminToken,
    policy: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let scrape = {
        let gateway = Arc::clone(&gateway);
        let metrics = metrics.clone();
        move || {
            let metrics = metrics.clone();
            let gateway = Arc::clone(&gateway);
            async move {
                let m = metrics.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || {
                    m.refresh_plans(gateway.metadata().as_ref());
                    m.refresh_health(&gateway);
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
        .merge(crate::admin::router(
            gateway,
            Some(metrics),
            standalone,
            token,
        ))
        .merge(policy);
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %e, "admin server failed");
    }
}

/// Binds the admin address and serves it in the background, its actions behind `token`;
/// returns the bound address.
pub async fn spawn_admin(
    addr: SocketAddr,
    metrics: Metrics,
    gateway: Arc<Gateway>,
    token: crate::admin::AdminToken,
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
        crate::admin::Standalone::default(),
        token,
        axum::Router::new(),
        std::future::pending(),
    ));
    Ok(bound)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_empty_expect_continue_requests_close_the_connection() {
        let req = |headers: &[(&str, &str)]| {
            let mut b = http::Request::builder().method("PUT").uri("/b/k");
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap()
        };
        let expect = ("expect", "100-Continue");
        assert!(expects_continue_without_body(&req(&[
            expect,
            ("content-length", "0")
        ])));
        assert!(expects_continue_without_body(&req(&[expect])));
        assert!(!expects_continue_without_body(&req(&[
            expect,
            ("content-length", "5")
        ])));
        assert!(!expects_continue_without_body(&req(&[
            expect,
            ("transfer-encoding", "chunked")
        ])));
        assert!(!expects_continue_without_body(&req(&[(
            "content-length",
            "0"
        )])));
    }

    /// A provider that stores nothing and fails as told.
    struct Fake {
        fail: Option<&'static str>,
    }

    #[async_trait]
    impl ShardBackend for Fake {
        fn node_id(&self) -> &str {
            "n1"
        }
        async fn put(&self, _: &str, _: Bytes) -> Result<[u8; 32], BackendError> {
            match self.fail {
                Some(e) => Err(BackendError(e.into())),
                None => Ok([0; 32]),
            }
        }
        async fn get(&self, _: &str) -> Result<Bytes, BackendError> {
            match self.fail {
                Some(e) => Err(BackendError(e.into())),
                None => Ok(Bytes::new()),
            }
        }
        async fn delete(&self, _: &str) -> Result<(), BackendError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn shard_calls_are_counted_per_provider_and_failures_mark_it_unhealthy() {
        let metrics = Metrics::new().unwrap();
        let health = Arc::new(HealthBoard::default());
        let ok = ObservedBackend::wrap(Arc::new(Fake { fail: None }), &metrics, &health);
        ok.put("s", Bytes::new()).await.unwrap();
        ok.put("s", Bytes::new()).await.unwrap();
        ok.get("s").await.unwrap();
        assert_eq!(metrics.shard_writes.with_label_values(&["n1"]).get(), 2);
        assert_eq!(metrics.shard_reads.with_label_values(&["n1"]).get(), 1);
        assert!(health.healthy("n1"));

        let missing = Fake {
            fail: Some("provider n1: get: NotFound: no such shard"),
        };
        let missing = ObservedBackend::wrap(Arc::new(missing), &metrics, &health);
        assert!(missing.get("s").await.is_err());
        assert!(
            health.healthy("n1"),
            "a missing shard is not a sick provider"
        );

        let down = Fake {
            fail: Some("provider n1: put: Unavailable: connection refused"),
        };
        let down = ObservedBackend::wrap(Arc::new(down), &metrics, &health);
        assert!(down.put("s", Bytes::new()).await.is_err());
        assert!(!health.healthy("n1"));
        assert_eq!(
            metrics
                .shard_failures
                .with_label_values(&["n1", "put"])
                .get(),
            1
        );
        assert_eq!(metrics.shard_writes.with_label_values(&["n1"]).get(), 2);
        let text = metrics.render();
        assert!(
            text.contains("sublet_gateway_shard_failures_total{call=\"put\",provider=\"n1\"} 1"),
            "{text}"
        );
    }
}
