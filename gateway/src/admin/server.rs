//! The admin HTTP server: `/metrics` (plan and health gauges refreshed from metadata on
//! each scrape), `/healthz`, the admin API and the policy API.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::meta::MetadataStore;
use crate::metrics::Metrics;
use crate::node::Node;

/// Serves `/metrics` (refreshing plan and health gauges from metadata first), `/healthz` and
/// the admin API ([`crate::admin`], its actions behind `token`) on `listener` until `shutdown`
/// resolves.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    gateway: Arc<Node>,
    standalone: super::Standalone,
    token: super::AdminToken,
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
                    refresh_plans(&m, gateway.metadata().as_ref());
                    refresh_health(&m, &gateway);
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
