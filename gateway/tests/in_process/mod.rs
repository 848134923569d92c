//! A gateway in the test's own process, driven through its HTTP service without sockets (no
//! signatures): the cluster `sublet dev` runs, and one request at a time. Shared by the
//! gateway's integration tests as `mod in_process;` (each uses part of it).
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use s3s::{Body, HttpError};
use sublet_gateway::node::Plan;
use sublet_gateway::runtime::dev::{self, Cluster};
use sublet_gateway::s3::http::MeteredService;

/// An HTTP service of the gateway: the bare s3s one, or the one `sublet dev` serves.
pub trait Service {
    fn serve(&self, req: Request<Body>) -> impl Future<Output = Result<Response<Body>, HttpError>>;
}

impl Service for s3s::service::S3Service {
    fn serve(&self, req: Request<Body>) -> impl Future<Output = Result<Response<Body>, HttpError>> {
        self.call(req)
    }
}

impl Service for MeteredService {
    fn serve(&self, req: Request<Body>) -> impl Future<Output = Result<Response<Body>, HttpError>> {
        self.call(req)
    }
}

/// `providers` in-process providers and a gateway with `plans` (the first the default), and
/// the HTTP layer `sublet dev` serves over it: metrics and status fix-ups around s3s.
pub async fn start(dir: &Path, providers: usize, plans: Vec<Plan>) -> (Cluster, MeteredService) {
    let cluster = dev::start_cluster(dir, providers, plans)
        .await
        .expect("starting the in-process cluster");
    let svc = serve(&cluster);
    (cluster, svc)
}

/// The HTTP layer `sublet dev` serves over `cluster`'s gateway, without signatures.
pub fn serve(cluster: &Cluster) -> MeteredService {
    MeteredService::new(
        dev::service(Arc::clone(&cluster.gateway), None),
        cluster.metrics.clone(),
    )
}

/// One request to `svc` (`uri` a path and query, path-style): its status, headers and body.
pub async fn call(
    svc: &impl Service,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1{uri}"))
        .header("host", "127.0.0.1")
        .header("content-length", body.len().to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Body::from(body)).expect("request");
    let resp = svc.serve(req).await.expect("service call");
    let (parts, mut body) = resp.into_parts();
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("body chunk"));
    }
    (parts.status, parts.headers, out)
}
