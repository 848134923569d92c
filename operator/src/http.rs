//! The operator's own HTTP endpoints: `/healthz` and `/metrics`.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;

use crate::metrics::Metrics;

/// The router serving `/healthz` and `/metrics`.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        )
}

/// Serves [`router`] on `addr` until the process stops.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz and /metrics");
    axum::serve(listener, router(metrics)).await
}
