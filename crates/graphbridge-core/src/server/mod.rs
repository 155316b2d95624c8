//! HTTP: the public listener (Graph's notification and lifecycle URLs) and the admin listener
//! (health, readiness, metrics). The server takes bound listeners and a shutdown future, so
//! tests bind port 0 and stop it deterministically.

mod admin;
pub mod listener;
mod routes;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::jwks::Jwks;
use crate::auth::tokens::{TokenPolicy, TokenVerifier};
use crate::auth::Authenticator;
use crate::config::{Config, ConfigError, SinkKind};
use crate::crypto::keyring::{Keyring, KeyringError};
use crate::crypto::reload::KeyReloader;
use crate::pipeline::{Pipeline, PipelineOptions};
use crate::sink::SinkError;
use crate::spool::{Spool, SpoolError};
use crate::telemetry::Metrics;
use arc_swap::ArcSwap;

pub use admin::admin_router;
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

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("keys: {0}")]
    Keys(#[from] KeyringError),
    #[error("sink: {0}")]
    Sink(#[from] SinkError),
    #[error("cannot listen on {0}: {1}")]
    Bind(std::net::SocketAddr, std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("tls: {0}")]
    Tls(#[from] listener::TlsError),
    #[error("{0}")]
    Spool(#[from] SpoolError),
}

impl AppState {
    /// Validates the configuration, loads the keys and connects the sink.
    pub async fn build(cfg: &Config) -> Result<Arc<Self>, StartError> {
        cfg.validate_for_serve()?;
        let keyring = Keyring::load_dir(&cfg.graph.keys_dir, cfg.graph.keys_password.as_ref())?;
        if keyring.is_empty() {
            tracing::warn!(dir = %cfg.graph.keys_dir.display(), "keys directory holds no keys; not ready");
        }
        for id in keyring.ids() {
            let key = keyring.get(id).expect("listed id");
            tracing::info!(
                id,
                bits = key.bits(),
                thumbprint = key.thumbprint(),
                "key loaded"
            );
        }
        let sink = crate::sink::build(&cfg.sink).await?;
        let auth = Authenticator::new(cfg.client_states()?, cfg.graph.tenants.clone());
        let tokens = cfg
            .graph
            .validation_tokens
            .required
            .then(|| token_verifier(cfg));
        if let Some(v) = &tokens {
            v.jwks().spawn_refresh(Duration::from_secs(
                cfg.graph.validation_tokens.refresh_interval_s.max(60),
            ));
        }
        let metrics = Metrics::new();
        let opts = PipelineOptions {
            budget: Duration::from_millis(cfg.ack.budget_ms),
            include_resource: cfg.graph.include_resource,
            raw_archive: cfg.sink.kind == SinkKind::Kafka && cfg.sink.kafka.raw_topic.is_some(),
            key_cache_entries: cfg.graph.key_cache_entries,
            tokens,
            max_items: cfg.server.max_items,
            max_json_depth: cfg.server.max_json_depth,
            spool: cfg
                .spool
                .enabled
                .then(|| Spool::open(&cfg.spool.dir, cfg.spool.max_bytes, metrics.clone()))
                .transpose()?,
        };
        let keyring = Arc::new(ArcSwap::from_pointee(keyring));
        if cfg.graph.keys_reload_interval_ms > 0 {
            KeyReloader {
                dir: cfg.graph.keys_dir.clone(),
                password: cfg.graph.keys_password.clone(),
                interval: Duration::from_millis(cfg.graph.keys_reload_interval_ms),
            }
            .spawn(keyring.clone(), metrics.clone());
        } else {
            metrics.keys_loaded.set(keyring.load().len() as i64);
        }
        let pipeline = Pipeline::new(keyring, auth, sink, metrics, opts);
        Ok(Arc::new(AppState {
            pipeline,
            max_body_bytes: cfg.server.max_body_bytes,
            body_read_timeout: Duration::from_millis(cfg.server.body_read_timeout_ms),
            retry_after_s: cfg.ack.retry_after_s,
            in_flight: Semaphore::new(cfg.server.max_in_flight),
            conn_limits: ConnLimits {
                max_connections: cfg.server.max_connections,
                max_header_bytes: cfg.server.max_header_bytes,
                header_read_timeout: Duration::from_millis(cfg.server.header_read_timeout_ms),
                drain_timeout: Duration::from_millis(cfg.server.drain_timeout_ms),
                tls: cfg
                    .server
                    .tls
                    .as_ref()
                    .map(listener::tls_acceptor)
                    .transpose()?,
            },
            draining: AtomicBool::new(false),
            shutdown_delay: Duration::from_millis(cfg.server.shutdown_delay_ms),
        }))
    }
}

fn token_verifier(cfg: &Config) -> Arc<TokenVerifier> {
    let vt = &cfg.graph.validation_tokens;
    let jwks = Arc::new(Jwks::new(
        &vt.openid_config_url,
        Duration::from_secs(vt.min_refresh_interval_s),
    ));
    Arc::new(TokenVerifier::new(
        jwks,
        TokenPolicy {
            app_ids: cfg.graph.app_ids.clone(),
            tenants: cfg
                .graph
                .tenants
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            skew_s: vt.clock_skew_s as i64,
        },
    ))
}

/// Serves both listeners (and drains the spool) until `shutdown` completes. Then: readiness
/// red, `shutdown_delay` of serving on, the listeners close and in-flight requests finish
/// within the drain deadline, the drainer stops, the sink flushes, the spool writer finishes.
pub async fn run(
    state: Arc<AppState>,
    public: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let admin_limits = ConnLimits {
        tls: None,
        ..state.conn_limits.clone()
    };
    let public_srv = tokio::spawn(listener::serve(
        public,
        public_router(state.clone()),
        state.conn_limits.clone(),
        rx,
    ));
    // The admin port answers (readiness red) until everything else has stopped.
    let (admin_tx, admin_rx) = tokio::sync::watch::channel(false);
    let admin_srv = tokio::spawn(listener::serve(
        admin,
        admin_router(state.clone()),
        admin_limits,
        admin_rx,
    ));
    let (stop_drain, drain_rx) = tokio::sync::watch::channel(false);
    let drainer = state.pipeline.spool().cloned().map(|spool| {
        let state = state.clone();
        tokio::spawn(async move {
            crate::pipeline::drain::run(&state.pipeline, &spool, drain_rx).await;
        })
    });
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
    let _ = stop_drain.send(true);
    if let Some(d) = drainer {
        let _ = d.await;
    }
    state.pipeline.sink().close().await;
    if let Some(spool) = state.pipeline.spool() {
        let spool = spool.clone();
        let _ = tokio::task::spawn_blocking(move || spool.close()).await;
    }
    let _ = admin_tx.send(true);
    let admin_result = admin_srv.await;
    public_result.map_err(|e| std::io::Error::other(e.to_string()))?;
    admin_result.map_err(|e| std::io::Error::other(e.to_string()))?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// `graphbridge serve`: binds the configured addresses and runs until SIGINT/SIGTERM.
pub async fn serve(cfg: &Config) -> Result<(), StartError> {
    let state = AppState::build(cfg).await?;
    let public = TcpListener::bind(cfg.server.listen)
        .await
        .map_err(|e| StartError::Bind(cfg.server.listen, e))?;
    let admin = TcpListener::bind(cfg.server.admin_listen)
        .await
        .map_err(|e| StartError::Bind(cfg.server.admin_listen, e))?;
    tracing::info!(
        listen = %public.local_addr()?,
        admin = %admin.local_addr()?,
        sink = state.pipeline.sink().kind(),
        "graphbridge serving"
    );
    run(state, public, admin, shutdown_signal()).await
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
