//! HTTP: the public listener (Graph's notification and lifecycle URLs) and the admin listener
//! (health, readiness, metrics). The server knows HTTP, not storage: it is handed a pipeline
//! (built by the binary's composition root) and bound listeners and a shutdown future, so tests
//! bind port 0 and stop it deterministically.

mod admin;
pub mod listener;
mod routes;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::pipeline::Pipeline;

pub use admin::{admin_router, Health, MetricsOnly};
use listener::ConnLimits;
pub use routes::public_router;

/// Everything the handlers share.
pub struct AppState {
    pub pipeline: Pipeline,
    pub max_body_bytes: usize,
    pub body_read_timeout: Duration,
    pub retry_after_s: u64,
    /// Requests being processed; when none is free the request is shed with 503.
    pub in_flight: Semaphore,
    /// Connection limits and TLS of the public listener (the admin one never has TLS).
    pub conn_limits: ConnLimits,
    /// Set when shutdown starts, so readiness turns red before the listeners close.
    pub draining: AtomicBool,
    /// Time between readiness turning red and the listeners closing.
    pub shutdown_delay: Duration,
}

/// Why the HTTP side could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {0}: {1}")]
    Bind(std::net::SocketAddr, std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("tls: {0}")]
    Tls(#[from] listener::TlsError),
}

impl AppState {
    /// The HTTP side of `serve` around a built pipeline: limits, timeouts and TLS from `cfg`.
    pub fn new(pipeline: Pipeline, cfg: &Config) -> Result<Arc<Self>, ServerError> {
        Ok(Arc::new(AppState {
            pipeline,
            max_body_bytes: cfg.server.max_body_bytes,
            body_read_timeout: Duration::from_millis(cfg.server.body_read_timeout_ms),
            retry_after_s: cfg.ack.retry_after_s,
            in_flight: Semaphore::new(cfg.server.max_in_flight),
            conn_limits: ConnLimits::from_config(&cfg.server)?,
            draining: AtomicBool::new(false),
            shutdown_delay: Duration::from_millis(cfg.server.shutdown_delay_ms),
        }))
    }
}

/// Serves both listeners until `shutdown` completes. Then: readiness red, `shutdown_delay` of
/// serving on, the public listener closes and in-flight requests finish within the drain
/// deadline; `teardown` runs (the caller's storage: drainer, sink, spool) while the admin port
/// still answers, and last the admin port closes.
pub async fn run(
    state: Arc<AppState>,
    public: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    teardown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let (tx, rx) = watch::channel(false);
    let public_srv = tokio::spawn(listener::serve(
        public,
        public_router(state.clone()),
        state.conn_limits.clone(),
        rx,
    ));
    // The admin port answers (readiness red) until everything else has stopped.
    let (admin_tx, admin_rx) = watch::channel(false);
    let admin_srv = tokio::spawn(serve_admin(
        admin,
        state.clone(),
        state.conn_limits.without_tls(),
        admin_rx,
    ));
    shutdown.await;
    tracing::info!(
        delay_ms = state.shutdown_delay.as_millis() as u64,
        "shutting down: not ready; serving on until load balancers notice"
    );
    state.draining.store(true, Ordering::SeqCst);
    tokio::time::sleep(state.shutdown_delay).await;
    tracing::info!("closing the listener, finishing in-flight requests");
    let _ = tx.send(true);
    let public_result = public_srv.await;
    teardown.await;
    let _ = admin_tx.send(true);
    let admin_result = admin_srv.await;
    public_result.map_err(|e| std::io::Error::other(e.to_string()))?;
    admin_result.map_err(|e| std::io::Error::other(e.to_string()))?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// The admin port (`/healthz`, `/readyz`, `/metrics`) with the listener's connection limits,
/// for `serve` and for `subscriptions run` alike, until `stop` turns true.
pub async fn serve_admin(
    listener: TcpListener,
    health: Arc<dyn Health>,
    limits: ConnLimits,
    stop: watch::Receiver<bool>,
) {
    listener::serve(listener, admin_router(health), limits, stop).await
}

/// The stop switch of a worker verb (`backfill run`, `verdicts run`, `serve --source
/// eventhubs`): turns true on SIGINT or SIGTERM.
pub fn stop_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    rx
}

/// A worker verb's admin port on `server.admin_listen` (no TLS), answering from `health`
/// until `stop` turns true.
pub async fn spawn_admin(
    cfg: &crate::config::ServerConfig,
    health: Arc<dyn Health>,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let listener = bind(cfg.admin_listen).await?;
    let limits = ConnLimits::from_config(cfg)?.without_tls();
    Ok(tokio::spawn(serve_admin(listener, health, limits, stop)))
}

/// Binds `addr`, naming it in the error.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError::Bind(addr, e))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
