//! The S3 API over HTTP: the s3s service with request metrics around it, answering only
//! once a request's metadata change is in the journal (503 when it cannot be stored).

use std::sync::Arc;
use std::time::Instant;

use s3s::service::S3Service;
use s3s::{HttpError, HttpRequest, HttpResponse};

use crate::meta::journal::Journal;
use crate::metrics::{Metrics, OperationSlot};

/// The S3 service with request metrics around it.
#[derive(Clone)]
pub struct MeteredService {
    inner: S3Service,
    metrics: Metrics,
    journal: Option<Arc<Journal>>,
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
    pub fn with_journal(mut self, journal: Option<Arc<Journal>>) -> Self {
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
}
