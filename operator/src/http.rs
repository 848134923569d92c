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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::body::Body;
    use http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn health_and_metrics_are_served() {
        let metrics = Metrics::new().unwrap();
        metrics.reconciles.with_label_values(&["StoragePlan"]).inc();
        let router = router(metrics);
        assert_eq!(
            get(router.clone(), "/healthz").await,
            (StatusCode::OK, "ok\n".into())
        );
        let (status, text) = get(router.clone(), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains("sublet_operator_reconciles_total{kind=\"StoragePlan\"} 1"),
            "{text}"
        );
        assert_eq!(get(router, "/nope").await.0, StatusCode::NOT_FOUND);
    }
}
