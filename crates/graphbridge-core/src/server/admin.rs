//! The admin listener: `/healthz` (the process is alive), `/readyz` (keys are loaded and the
//! sink is usable or the spool has room, so a load balancer may send traffic), `/metrics` (Prometheus text).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

pub fn admin_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn ready(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        );
    }
    let p = &state.pipeline;
    if p.keyring().is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no keys loaded\n",
        );
    }
    if p.tokens().is_some_and(|t| t.jwks().is_empty()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no validation token signing keys yet\n",
        );
    }
    // With a spool, a broker outage is absorbed: stay in rotation while there is room.
    if !p.sink().ready().await && !p.spool().is_some_and(|s| s.has_room()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: sink unavailable\n",
        );
    }
    (StatusCode::OK, "ready\n")
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if let Some(spool) = state.pipeline.spool() {
        spool.update_gauges(); // the oldest batch's age grows between events
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.pipeline.metrics().render(),
    )
}
