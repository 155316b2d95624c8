//! The admin listener: `/healthz` (the process is alive), `/readyz` (traffic may be sent),
//! `/metrics` (Prometheus text). One router for every long-running verb: `serve` answers
//! readiness from its pipeline, `subscriptions run` from its metrics alone ([`MetricsOnly`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;
use crate::sink::SinkError;
use crate::telemetry::Metrics;

/// What the admin port reports.
#[async_trait::async_trait]
pub trait Health: Send + Sync + 'static {
    /// `Ok` when a load balancer may send traffic; otherwise why not.
    async fn ready(&self) -> Result<(), String>;
    /// The metrics in Prometheus text format.
    fn metrics(&self) -> String;
}

pub fn admin_router(health: Arc<dyn Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn ready(State(health): State<Arc<dyn Health>>) -> impl IntoResponse {
    match health.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(State(health): State<Arc<dyn Health>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics(),
    )
}

/// `serve`: ready when keys are loaded, the validation-token keys fetched (when required) and
/// the sink usable or the spool has room; red from the start of shutdown.
#[async_trait::async_trait]
impl Health for AppState {
    async fn ready(&self) -> Result<(), String> {
        if self.draining.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("shutting down".into());
        }
        let p = &self.pipeline;
        if p.keyring().is_empty() {
            return Err("no keys loaded".into());
        }
        if p.tokens().is_some_and(|t| t.jwks().is_empty()) {
            return Err("no validation token signing keys yet".into());
        }
        // With a spool, a broker outage is absorbed: stay in rotation while there is room. A
        // misconfiguration (authentication, TLS) is never absorbed: the spool would only fill.
        match p.sink().ready().await {
            Err(SinkError::Permanent(why)) => return Err(format!("sink misconfigured: {why}")),
            Err(SinkError::Retryable(why)) if !p.spool().is_some_and(|s| s.has_room()) => {
                return Err(format!("sink unavailable: {why}"))
            }
            _ => {}
        }
        Ok(())
    }

    fn metrics(&self) -> String {
        if let Some(spool) = self.pipeline.spool() {
            spool.update_gauges(); // the oldest batch's age grows between events
        }
        self.pipeline.metrics().render()
    }
}

/// A process without an ingress (`subscriptions run` with a broker): always ready, its metrics.
pub struct MetricsOnly(pub Arc<Metrics>);

#[async_trait::async_trait]
impl Health for MetricsOnly {
    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    fn metrics(&self) -> String {
        self.0.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::pipeline::test_support::{pipeline_with, FakeSink};
    use crate::spool::Spool;

    /// `serve`'s readiness with a spool that has room: an outage is absorbed (still ready), a
    /// misconfigured sink (wrong credentials, untrusted certificate) is not, and says why.
    #[tokio::test]
    async fn a_misconfigured_sink_is_not_ready_even_with_room_in_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let state = |sink, name: &str| {
            let metrics = Metrics::new();
            let spool = Spool::open(&dir.path().join(name), 1 << 20, metrics.clone()).unwrap();
            let p = pipeline_with(sink, false, Some(spool), metrics);
            AppState::new(p, &Config::defaults()).unwrap()
        };
        let down = state(FakeSink::failing(false), "down");
        assert_eq!(Health::ready(&*down).await, Ok(()));
        let refused = state(FakeSink::failing(true), "refused");
        assert_eq!(
            Health::ready(&*refused).await,
            Err("sink misconfigured: fake: refused".to_string())
        );
    }
}
