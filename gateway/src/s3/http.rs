//! The S3 API over HTTP: the s3s service with request metrics around it, answering only
//! once a request's metadata change is in the journal (503 when it cannot be stored);
//! requests refused before their body is read ([`crate::s3::auth::refuse_unread`], and
//! presigned URLs S3 would refuse: [`crate::s3::presigned`]); request
//! bodies that stall end the request ([`TimedBody`]); the limits s3s parses requests with.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use s3s::config::S3Config;
use s3s::service::S3Service;
use s3s::{HttpError, HttpRequest, HttpResponse};

use crate::meta::journal::Journal;
use crate::metrics::{Metrics, OperationSlot};
use crate::node::Node;
use crate::s3::access::Connection;
use crate::s3::cors::{self, Preflight};
use crate::s3::policy::condition::Cidr;

/// The limits s3s parses requests with, set here rather than left to s3s's defaults.
pub fn s3s_config() -> S3Config {
    let mut config = S3Config::default();
    // XML bodies (DeleteObjects, CompleteMultipartUpload, lifecycle rules) are read whole,
    // after the access check: 1000 keys of 1 KiB, escaped, or 10,000 parts with checksums fit.
    config.xml_max_body_size = 8 << 20;
    // Browser form uploads (`s3/post.rs`): the fields before the file are read whole (S3's
    // 20 KB), the file streams (patched s3s) up to S3's 5 GB for a single upload.
    config.post_object_max_file_size = 5 << 30;
    config.form_max_field_size = crate::s3::post::MAX_FORM_FIELDS;
    config.form_max_fields_size = crate::s3::post::MAX_FORM_FIELDS;
    config.form_max_parts = 64;
    config.presigned_url_max_skew_time_secs = 900;
    config
}

/// The S3 service with request metrics around it.
#[derive(Clone)]
pub struct MeteredService {
    inner: S3Service,
    metrics: Metrics,
    journal: Option<Arc<Journal>>,
    body_timeout: Duration,
    /// Whose buckets' CORS rules answer preflights and mark cross-origin answers.
    node: Option<Arc<Node>>,
    /// The connection this clone serves (the listener makes one clone per connection).
    connection: Option<Connection>,
    /// Proxies whose `X-Forwarded-Proto: https` makes a request count as made over TLS.
    trusted_proxies: Arc<[Cidr]>,
}

impl MeteredService {
    pub fn new(inner: S3Service, metrics: Metrics) -> Self {
        MeteredService {
            inner,
            metrics,
            journal: None,
            body_timeout: sublet_crds::ClientLimits::DEFAULT_BODY_TIMEOUT,
            node: None,
            connection: None,
            trusted_proxies: Arc::from([]),
        }
    }

    /// Believes `X-Forwarded-Proto: https` from these proxies (`spec.s3.trustedProxies`):
    /// their requests count as made over TLS (SSE-C, `aws:SecureTransport`). Entries that
    /// are not addresses or CIDRs are skipped (the spec's validation names them).
    pub fn with_trusted_proxies(mut self, proxies: &[String]) -> Self {
        self.trusted_proxies = proxies.iter().filter_map(|p| Cidr::parse(p)).collect();
        self
    }

    /// Answers CORS preflights (`OPTIONS`) from the rules of `node`'s buckets, before s3s
    /// (they are never signed), and adds CORS headers to cross-origin answers.
    pub fn with_cors(mut self, node: Arc<Node>) -> Self {
        self.node = Some(node);
        self
    }

    /// Tells every request served by this clone which connection it came on (its peer
    /// address and whether it is TLS: `aws:SourceIp` and `aws:SecureTransport` to policies).
    pub fn with_connection(mut self, connection: Connection) -> Self {
        self.connection = Some(connection);
        self
    }

    /// Ends a request whose body sends nothing for `timeout` while the gateway waits for
    /// it: `RequestTimeout`, the connection closed, its upload buffers given back.
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// Answers a request that may have changed metadata only once the change is in the
    /// metadata journal (503 when it cannot be stored).
    pub fn with_journal(mut self, journal: Option<Arc<Journal>>) -> Self {
        self.journal = journal;
        self
    }

    pub async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.serve(req, &FaultSlot::default()).await
    }

    /// Serves `req`, whose body wrappers leave in `fault` why they cut it off, if they do:
    /// the answer is then that, whatever the handler made of its failed body.
    async fn serve(
        &self,
        mut req: HttpRequest,
        fault: &FaultSlot,
    ) -> Result<HttpResponse, HttpError> {
        let started = Instant::now();
        let slot = OperationSlot::default();
        req.extensions_mut().insert(slot.clone());
        if let Some(connection) = self.connection {
            let connection = forwarded(connection, req.headers(), &self.trusted_proxies);
            req.extensions_mut().insert(connection);
        }
        // One id per request: the `x-amz-request-id` header and every error body's
        // `<RequestId>` (s3s puts it there from this extension, vendor/README.md).
        let request_id = new_request_id();
        req.extensions_mut()
            .insert(s3s::RequestId(request_id.clone()));
        let received = declared_length(req.headers(), true);
        let changes = !matches!(
            *req.method(),
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        );
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let origin = req
            .headers()
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut result = match self.answer_before_s3s(&req, &slot, &request_id).await {
            Some(answer) => Ok(answer),
            None => self.inner.call(req).await,
        };
        if let Some(fault) = fault.get() {
            tracing::info!(reason = %fault, "a request body was cut off");
            result = Ok(error_answer(&fault.to_s3(), &request_id));
        }
        if changes
            && let Some(journal) = &self.journal
            && let Ok(response) = &result
            && response.status().is_success()
            && let Err(e) = journal.barrier().await
        {
            tracing::warn!(error = %e, "a change could not be made durable; answering 503");
            result = Ok(journal_unavailable(&e, &request_id));
        }
        if let Ok(response) = &mut result {
            if let Some(StatusOverride(status)) = response.extensions_mut().remove() {
                *response.status_mut() = status;
            }
            if let Ok(id) = http::HeaderValue::from_str(&request_id) {
                response.headers_mut().insert("x-amz-request-id", id);
            }
            if let (Some(node), Some(origin)) = (&self.node, &origin)
                && method != http::Method::OPTIONS
            {
                cors::add_headers(node, &method, &path, origin, response.headers_mut()).await;
            }
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

impl MeteredService {
    /// The answer a request gets before s3s sees it, if any: the first of these checks that
    /// answers, in this order.
    /// 1. CORS preflights (`OPTIONS`), answered from the bucket's rules (never signed).
    /// 2. Requests refused before anything of their body is read
    ///    ([`crate::s3::auth::refuse_unread`]: SigV2, non-form multipart POSTs).
    /// 3. Presigned URLs S3 would refuse before their signature ([`super::presigned`]).
    async fn answer_before_s3s(
        &self,
        req: &HttpRequest,
        slot: &OperationSlot,
        request_id: &str,
    ) -> Option<HttpResponse> {
        if let Some(node) = &self.node
            && req.method() == http::Method::OPTIONS
        {
            slot.set("PreflightCors");
            return Some(preflight_answer(node, req.uri().path(), req.headers(), request_id).await);
        }
        if let Some(refusal) = crate::s3::auth::refuse_unread(req) {
            tracing::info!(method = %req.method(), reason = ?refusal.message(), %request_id, "refused unread");
            return Some(error_answer(&refusal, request_id));
        }
        let presigned = req
            .uri()
            .query()
            .and_then(|q| super::presigned::refusal(q, chrono::Utc::now()));
        if let Some(refusal) = presigned {
            tracing::info!(method = %req.method(), reason = ?refusal.error.message(), %request_id, "presigned url refused");
            return Some(error_document(&refusal.error, &refusal.details, request_id));
        }
        None
    }
}

/// `connection` as a request on it counts: made over TLS also when it comes from one of
/// `proxies` whose last `X-Forwarded-Proto` (the nearest proxy's word) is `https`. The
/// header of any other peer is ignored: a client could write it itself.
fn forwarded(
    mut connection: Connection,
    headers: &http::HeaderMap,
    proxies: &[Cidr],
) -> Connection {
    if connection.tls || !proxies.iter().any(|p| p.contains(connection.peer.ip())) {
        return connection;
    }
    let proto = headers
        .get_all("x-forwarded-proto")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(str::trim);
    connection.tls = proto.is_some_and(|p| p.eq_ignore_ascii_case("https"));
    connection
}

/// The answer to a request whose change did not reach the metadata journal: the client
/// retries it, as after any 503.
fn journal_unavailable(message: &str, request_id: &str) -> HttpResponse {
    error_answer(
        &s3s::S3Error::with_message(s3s::S3ErrorCode::ServiceUnavailable, message.to_owned()),
        request_id,
    )
}

/// The answer to a preflight: the allowing rule's headers, or S3's refusal.
async fn preflight_answer(
    node: &Node,
    path: &str,
    headers: &http::HeaderMap,
    request_id: &str,
) -> HttpResponse {
    let decided = match cors::answer_preflight(node, path, headers).await {
        Ok(decided) => decided,
        Err(e) => {
            tracing::warn!(error = %e, "reading CORS rules failed");
            return error_answer(&s3s::S3Error::from(e), request_id);
        }
    };
    match decided {
        Preflight::Allowed(pairs) => {
            let mut response = HttpResponse::new(s3s::Body::empty());
            for (name, value) in pairs {
                if let Ok(value) = http::HeaderValue::from_str(&value) {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
        Preflight::Refused(status, code, message) => {
            let mut error =
                s3s::S3Error::with_message(s3s::S3ErrorCode::Custom(code.into()), message);
            error.set_status_code(status);
            error_answer(&error, request_id)
        }
    }
}

/// A request id as S3 writes them: 16 upper-case hex digits, random.
fn new_request_id() -> String {
    format!("{:016X}", rand::random::<u64>())
}

/// An S3 error document for `error`, with its status, for request `request_id`.
fn error_answer(error: &s3s::S3Error, request_id: &str) -> HttpResponse {
    error_document(error, &[], request_id)
}

/// An S3 error document for `error` with further elements `details` (name, text) after its
/// message, with its status, for request `request_id`.
fn error_document(
    error: &s3s::S3Error,
    details: &[(&str, String)],
    request_id: &str,
) -> HttpResponse {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let details: String = details
        .iter()
        .map(|(name, text)| format!("<{name}>{}</{name}>", escape(text)))
        .collect();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code>\
         <Message>{}</Message>{details}<RequestId>{}</RequestId></Error>",
        error.code().as_str(),
        escape(error.message().unwrap_or_default()),
        escape(request_id)
    );
    let mut response = HttpResponse::new(s3s::Body::from(body));
    *response.status_mut() = error
        .status_code()
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    response
}

/// Why a request body was cut off by the gateway rather than ended by the client; the
/// request is then answered with this, whatever its handler made of the failed body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyFault {
    #[error("the client sent no byte of the request body for {}s", .0.as_secs_f32())]
    Stalled(Duration),
    #[error(
        "an aws-chunked chunk of {0} bytes is larger than the {max} bytes this gateway takes \
         (chunks are checked whole before they are used); send smaller chunks",
        max = MAX_AWS_CHUNK
    )]
    ChunkTooLarge(u64),
}

impl BodyFault {
    fn to_s3(self) -> s3s::S3Error {
        match self {
            BodyFault::Stalled(timeout) => s3s::S3Error::with_message(
                s3s::S3ErrorCode::RequestTimeout,
                format!(
                    "Your socket connection to the server was not read from or written to \
                     within the timeout period ({}s without a byte of the request body).",
                    timeout.as_secs()
                ),
            ),
            BodyFault::ChunkTooLarge(_) => {
                s3s::S3Error::with_message(s3s::S3ErrorCode::InvalidRequest, self.to_string())
            }
        }
    }
}

/// Where a body wrapper leaves its [`BodyFault`] for the service to answer with.
pub type FaultSlot = Arc<std::sync::OnceLock<BodyFault>>;

/// A request body that fails once it has sent nothing for `timeout` while its reader waits
/// on it (time the reader spends elsewhere, e.g. waiting for upload budget, does not count).
pub struct TimedBody<B> {
    inner: B,
    timeout: Duration,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
    fault: FaultSlot,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, timeout: Duration, fault: FaultSlot) -> Self {
        TimedBody {
            inner,
            timeout,
            waiting: None,
            fault,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<B> HttpBody for TimedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(fault) = this.fault.get() {
            return Poll::Ready(Some(Err((*fault).into())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let waiting = this
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if waiting.as_mut().poll(cx).is_ready() {
                    this.waiting = None;
                    let fault = *this.fault.get_or_init(|| BodyFault::Stalled(timeout));
                    return Poll::Ready(Some(Err(fault.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The largest `aws-chunked` chunk taken. s3s holds a whole chunk in memory (outside the
/// upload budget) before it checks the chunk's signature; clients send 64 KiB (AWS SDKs)
/// to 1 MiB (botocore).
pub const MAX_AWS_CHUNK: u64 = 16 << 20;

/// Where a [`ChunkBound`] is in the `aws-chunked` framing:
/// `hex-size[;chunk-signature=…]\r\n data \r\n`, repeated, a 0-size chunk, trailers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Size(u64),
    Extension(u64),
    Data(u64),
    DataEnd(u8),
    /// Past the last chunk, or framing s3s will refuse itself: nothing more to watch.
    Done,
}

/// An `aws-chunked` request body that fails as soon as a chunk header announces more than
/// [`MAX_AWS_CHUNK`], before s3s starts gathering that chunk.
pub struct ChunkBound<B> {
    inner: B,
    framing: Framing,
    fault: FaultSlot,
}

impl<B> ChunkBound<B> {
    pub fn new(inner: B, fault: FaultSlot) -> Self {
        ChunkBound {
            inner,
            framing: Framing::Size(0),
            fault,
        }
    }

    /// Follows the framing through `bytes`; the announced size when it is too large.
    fn follow(&mut self, mut bytes: &[u8]) -> Option<u64> {
        while let Some((&b, rest)) = bytes.split_first() {
            self.framing = match self.framing {
                Framing::Size(size) => match (b as char).to_digit(16) {
                    Some(d) => {
                        let size = size.saturating_mul(16).saturating_add(u64::from(d));
                        if size > MAX_AWS_CHUNK {
                            self.framing = Framing::Done;
                            return Some(size);
                        }
                        Framing::Size(size)
                    }
                    None if b == b';' || b == b'\r' => Framing::Extension(size),
                    None if b == b'\n' => Self::after_header(size),
                    None => Framing::Done,
                },
                Framing::Extension(size) if b == b'\n' => Self::after_header(size),
                Framing::Extension(size) => Framing::Extension(size),
                Framing::Data(left) => {
                    // Skip the chunk's data in one step.
                    let skip = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    bytes = &bytes[skip..];
                    let left = left - skip as u64;
                    self.framing = if left == 0 {
                        Framing::DataEnd(2)
                    } else {
                        Framing::Data(left)
                    };
                    continue;
                }
                Framing::DataEnd(1) => Framing::Size(0),
                Framing::DataEnd(n) => Framing::DataEnd(n - 1),
                Framing::Done => return None,
            };
            bytes = rest;
        }
        None
    }

    fn after_header(size: u64) -> Framing {
        if size == 0 {
            Framing::Done
        } else {
            Framing::Data(size)
        }
    }
}

impl<B> HttpBody for ChunkBound<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(fault) = this.fault.get() {
            return Poll::Ready(Some(Err((*fault).into())));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
            && let Some(size) = this.follow(data)
        {
            let fault = *this.fault.get_or_init(|| BodyFault::ChunkTooLarge(size));
            return Poll::Ready(Some(Err(fault.into())));
        }
        polled.map(|f| f.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a request's body is `aws-chunked` (`x-amz-content-sha256: STREAMING-…`).
fn is_aws_chunked(headers: &http::HeaderMap) -> bool {
    headers
        .get_all("x-amz-content-sha256")
        .iter()
        .any(|v| v.as_bytes().starts_with(b"STREAMING-"))
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
        let mut close = expects_continue_without_body(&req);
        let fault = FaultSlot::default();
        let ended = Arc::new(AtomicBool::new(false));
        let timeout = self.body_timeout;
        let chunked = is_aws_chunked(req.headers());
        let req = req.map(|b| {
            let watched = EndWatch::new(b, Arc::clone(&ended));
            let timed = TimedBody::new(watched, timeout, Arc::clone(&fault));
            if chunked {
                s3s::Body::http_body(ChunkBound::new(timed, Arc::clone(&fault)))
            } else {
                s3s::Body::http_body(timed)
            }
        });
        Box::pin(async move {
            let mut response = service.serve(req, &fault).await?;
            // The rest of a body cut off or left unread (a request refused before its body
            // was needed) is never read: the connection cannot be reused.
            close |= fault.get().is_some() || !ended.load(Ordering::Acquire);
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

/// A request body that records whether it was read to its end. An answer sent before then
/// closes its connection: what is left of the body must never be parsed as the next
/// request, and a client that sent `Expect: 100-continue` was never told to send its body
/// (hyper sends `100 Continue` only when the body is read), so it would take this final
/// answer for the one to its next request on the connection (botocore does).
pub struct EndWatch<B> {
    inner: B,
    ended: Arc<AtomicBool>,
}

impl<B: HttpBody> EndWatch<B> {
    pub fn new(inner: B, ended: Arc<AtomicBool>) -> Self {
        if inner.is_end_stream() {
            ended.store(true, Ordering::Release);
        }
        EndWatch { inner, ended }
    }
}

impl<B: HttpBody + Unpin> HttpBody for EndWatch<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let end = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            _ => false,
        };
        if end {
            this.ended.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    type Chunks = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;

    /// A body the test feeds chunk by chunk, behind a [`TimedBody`] of `timeout`.
    type Fed = http_body_util::StreamBody<
        tokio_stream::wrappers::ReceiverStream<Result<Frame<Bytes>, std::io::Error>>,
    >;

    /// A body the test feeds chunk by chunk.
    fn fed() -> (Chunks, Fed) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        (tx, body)
    }

    /// A fed body behind a [`TimedBody`] of `timeout`.
    fn fed_body(timeout: Duration) -> (Chunks, TimedBody<Fed>, FaultSlot) {
        let (tx, body) = fed();
        let fault = FaultSlot::default();
        (tx, TimedBody::new(body, timeout, Arc::clone(&fault)), fault)
    }

    async fn next_chunk<B>(body: &mut B) -> Option<Result<Bytes, String>>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        use http_body_util::BodyExt;
        let frame = body.frame().await?;
        Some(
            frame
                .map(|f| f.into_data().unwrap_or_default())
                .map_err(|e| e.to_string()),
        )
    }

    #[tokio::test]
    async fn a_stalled_body_fails_after_its_timeout() {
        let timeout = Duration::from_millis(300);
        let (tx, mut body, fault) = fed_body(timeout);
        tx.send(Ok(Frame::data(Bytes::from_static(b"first"))))
            .await
            .unwrap();
        assert_eq!(next_chunk(&mut body).await.unwrap().unwrap(), "first");
        let started = Instant::now();
        let err = next_chunk(&mut body).await.unwrap().unwrap_err();
        assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
        assert!(started.elapsed() < timeout * 5, "{:?}", started.elapsed());
        assert_eq!(err, "the client sent no byte of the request body for 0.3s");
        assert_eq!(fault.get(), Some(&BodyFault::Stalled(timeout)));
        // A late chunk changes nothing: the request is over.
        let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"late")))).await;
        assert!(next_chunk(&mut body).await.unwrap().is_err());
        drop(tx);
    }

    #[tokio::test]
    async fn a_slow_body_that_keeps_sending_and_time_not_spent_waiting_on_it_are_fine() {
        let timeout = Duration::from_millis(300);
        let (tx, mut body, fault) = fed_body(timeout);
        // The reader is busy elsewhere (e.g. waiting for upload budget) for longer than the
        // timeout: the client is not to blame.
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        tokio::time::sleep(timeout * 2).await;
        assert_eq!(next_chunk(&mut body).await.unwrap().unwrap(), "a");
        // Chunks every 150 ms for a second: slow, never stalled.
        let feeder = tokio::spawn(async move {
            for _ in 0..7 {
                tokio::time::sleep(timeout / 2).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"b"))))
                    .await
                    .unwrap();
            }
        });
        for _ in 0..7 {
            assert_eq!(next_chunk(&mut body).await.unwrap().unwrap(), "b");
        }
        feeder.await.unwrap();
        assert!(next_chunk(&mut body).await.is_none());
        assert_eq!(fault.get(), None);
    }

    /// Feeds `frames` through a [`ChunkBound`]: the data it passed on, and its fault.
    async fn bounded(frames: &[&[u8]]) -> (Vec<u8>, Option<BodyFault>) {
        let (tx, body) = fed();
        let fault = FaultSlot::default();
        let mut body = ChunkBound::new(body, Arc::clone(&fault));
        let frames: Vec<Bytes> = frames.iter().map(|f| Bytes::copy_from_slice(f)).collect();
        let feeder = tokio::spawn(async move {
            for f in frames {
                // The body stops reading at a fault: the rest is never sent.
                if tx.send(Ok(Frame::data(f))).await.is_err() {
                    break;
                }
            }
        });
        let mut passed = Vec::new();
        while let Some(Ok(chunk)) = next_chunk(&mut body).await {
            passed.extend_from_slice(&chunk);
        }
        drop(body);
        feeder.await.unwrap();
        (passed, fault.get().copied())
    }

    #[tokio::test]
    async fn aws_chunked_bodies_pass_unless_a_chunk_is_too_large() {
        let sig = format!(";chunk-signature={}\r\n", "a".repeat(64));
        let data = vec![b'd'; 0x10000];
        let mut body = format!("10000{sig}").into_bytes();
        body.extend_from_slice(&data);
        body.extend_from_slice(format!("\r\n400{sig}").as_bytes());
        body.extend_from_slice(&data[..0x400]);
        body.extend_from_slice(format!("\r\n0{sig}\r\n").as_bytes());
        // Whole, and cut at every awkward place (mid-size, mid-signature, mid-data, CRLF).
        let (passed, fault) = bounded(&[&body]).await;
        assert_eq!((passed.len(), fault), (body.len(), None));
        let cuts: Vec<&[u8]> = body.chunks(7).collect();
        let (passed, fault) = bounded(&cuts).await;
        assert_eq!((passed.len(), fault), (body.len(), None));
        // Unsigned chunks with trailers (botocore's 1 MiB chunks).
        let unsigned = b"100000\r\n"
            .iter()
            .chain(&vec![b'u'; 1 << 20])
            .chain(b"\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n")
            .copied()
            .collect::<Vec<u8>>();
        let (passed, fault) = bounded(&[&unsigned]).await;
        assert_eq!((passed.len(), fault), (unsigned.len(), None));
        // A chunk announcing 4 GiB fails at its header, its data never gathered.
        let huge = format!("100000000{sig}");
        let (passed, fault) = bounded(&[huge.as_bytes(), &data]).await;
        assert!(matches!(fault, Some(BodyFault::ChunkTooLarge(n)) if n > MAX_AWS_CHUNK));
        assert!(passed.is_empty());
        // Also after a good first chunk.
        let mut second = format!("10{sig}0123456789abcdef\r\n").into_bytes();
        second.extend_from_slice(b"FFFFFFFFFFFF;chunk-signature=");
        let (_, fault) = bounded(&[&second]).await;
        assert!(matches!(fault, Some(BodyFault::ChunkTooLarge(n)) if n > MAX_AWS_CHUNK));
    }

    /// Serves one connection with a [`MeteredService`] whose S3 implementation refuses
    /// everything (NotImplemented, the body unread) on a loopback socket; its address.
    async fn serve_refusing() -> std::net::SocketAddr {
        struct Refusing;
        impl s3s::S3 for Refusing {}
        let service = MeteredService::new(
            s3s::service::S3ServiceBuilder::new(Refusing).build(),
            Metrics::new().unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
        addr
    }

    /// What the server sends on `stream` until it closes it or 2 s pass: (text, closed).
    async fn answer_and_close(stream: &mut tokio::net::TcpStream) -> (String, bool) {
        use tokio::io::AsyncReadExt;
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&raw).into_owned(), true),
                Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
                Err(_) => return (String::from_utf8_lossy(&raw).into_owned(), false),
            }
        }
    }

    #[tokio::test]
    async fn an_answer_sent_with_the_request_body_unread_closes_the_connection() {
        use tokio::io::AsyncWriteExt;
        // A PUT waiting for `100 Continue`, refused before its body is wanted: no
        // `100 Continue`, the final answer, and the connection closed (botocore takes that
        // answer's status line for its next request's on a connection kept open).
        let mut stream = tokio::net::TcpStream::connect(serve_refusing().await)
            .await
            .unwrap();
        let head = "PUT /bucket/key HTTP/1.1\r\nhost: localhost\r\n\
                    expect: 100-continue\r\ncontent-length: 5\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        let (text, closed) = answer_and_close(&mut stream).await;
        assert!(text.starts_with("HTTP/1.1 501"), "{text}");
        assert!(!text.contains("100 Continue"), "{text}");
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
        assert!(closed, "the connection stayed open: {text}");

        // The same PUT sending its body at once: the body is left unread, so the
        // connection closes rather than parse what follows it.
        let mut stream = tokio::net::TcpStream::connect(serve_refusing().await)
            .await
            .unwrap();
        let head = "PUT /bucket/key HTTP/1.1\r\nhost: localhost\r\ncontent-length: 5\r\n\r\nhello";
        stream.write_all(head.as_bytes()).await.unwrap();
        let (text, closed) = answer_and_close(&mut stream).await;
        assert!(text.starts_with("HTTP/1.1 501"), "{text}");
        assert!(closed, "the connection stayed open: {text}");

        // A request without a body keeps its connection: two GETs on one.
        let mut stream = tokio::net::TcpStream::connect(serve_refusing().await)
            .await
            .unwrap();
        let get = "GET /bucket/key HTTP/1.1\r\nhost: localhost\r\n\r\n";
        stream.write_all(get.repeat(2).as_bytes()).await.unwrap();
        let (text, closed) = answer_and_close(&mut stream).await;
        assert_eq!(text.matches("HTTP/1.1 501").count(), 2, "{text}");
        assert!(
            !text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
        assert!(
            !closed,
            "a connection without unread bodies was closed: {text}"
        );
    }

    #[test]
    fn forwarded_https_counts_only_from_trusted_proxies() {
        let proxies = [Cidr::parse("10.0.0.0/8").unwrap()];
        let conn = |peer: &str, tls: bool| Connection {
            peer: peer.parse().unwrap(),
            tls,
        };
        let headers = |values: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append("x-forwarded-proto", http::HeaderValue::from_str(v).unwrap());
            }
            h
        };
        let https = headers(&["https"]);
        // From the proxy: its word counts, in any case; the nearest proxy's (last) value.
        assert!(forwarded(conn("10.1.2.3:4000", false), &https, &proxies).tls);
        assert!(forwarded(conn("10.1.2.3:4000", false), &headers(&["HTTPS"]), &proxies).tls);
        assert!(
            forwarded(
                conn("10.1.2.3:4000", false),
                &headers(&["http, https"]),
                &proxies
            )
            .tls
        );
        assert!(
            !forwarded(
                conn("10.1.2.3:4000", false),
                &headers(&["https, http"]),
                &proxies
            )
            .tls
        );
        assert!(
            !forwarded(
                conn("10.1.2.3:4000", false),
                &headers(&["https", "http"]),
                &proxies
            )
            .tls
        );
        assert!(!forwarded(conn("10.1.2.3:4000", false), &headers(&[]), &proxies).tls);
        // From anyone else, or with no proxy trusted: ignored.
        assert!(!forwarded(conn("192.168.1.9:4000", false), &https, &proxies).tls);
        assert!(!forwarded(conn("10.1.2.3:4000", false), &https, &[]).tls);
        // A TLS connection stays TLS whatever the header says.
        assert!(
            forwarded(
                conn("192.168.1.9:4000", true),
                &headers(&["http"]),
                &proxies
            )
            .tls
        );
    }

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
}
