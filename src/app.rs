//! The composition root: the one place that turns a configuration into running parts. It
//! builds the keyring (and its reloader), the sink, the validation-token verifier (and its
//! JWKS refresher), the spool and its drainer, and the pipeline over them; the HTTP server is
//! handed the pipeline and a shutdown future and knows nothing of storage.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use graphbridge_core::auth::jwks::Jwks;
use graphbridge_core::auth::tokens::{TokenPolicy, TokenVerifier};
use graphbridge_core::auth::Authenticator;
use graphbridge_core::config::ConfigError;
use graphbridge_core::config::{Config, SinkKind};
use graphbridge_core::crypto::keyring::Keyring;
use graphbridge_core::crypto::keyring::KeyringError;
use graphbridge_core::crypto::reload::KeyReloader;
use graphbridge_core::pipeline::{drain, Pipeline, PipelineOptions};
use graphbridge_core::server::{self, AppState, ServerError};
use graphbridge_core::sink::SinkError;
use graphbridge_core::spool::{Spool, SpoolError};
use graphbridge_core::telemetry::Metrics;

/// Why `serve` could not start (or its server stop cleanly).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("keys: {0}")]
    Keys(#[from] KeyringError),
    /// The sink's own words (not "rejected the batch": nothing was sent yet), and no source,
    /// which would print them twice.
    #[error("sink: {}", .0.detail())]
    Sink(SinkError),
    #[error("{0}")]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("{0}")]
    EventHubs(String),
}

impl From<SinkError> for StartError {
    fn from(e: SinkError) -> Self {
        StartError::Sink(e)
    }
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Server(e.into())
    }
}

/// Validates the configuration, loads the keys, connects the sink and builds `serve`'s state.
pub async fn build(cfg: &Config) -> Result<Arc<AppState>, StartError> {
    cfg.validate_for_serve()?;
    let metrics = Metrics::new();
    let keyring = keyring(cfg, &metrics)?;
    let sink = graphbridge_core::sink::build(&cfg.sink).await?;
    graphbridge_core::sink::check_at_start(&*sink).await?;
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
    Ok(AppState::new(
        Pipeline::new(keyring, auth, sink, metrics, opts),
        cfg,
    )?)
}

/// The keys directory, loaded now and (unless turned off) reloaded when it changes.
fn keyring(cfg: &Config, metrics: &Arc<Metrics>) -> Result<Arc<ArcSwap<Keyring>>, StartError> {
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
    Ok(keyring)
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

/// Runs `serve`'s state on bound listeners until `shutdown` completes: the HTTP server, and the
/// spool's drainer beside it. After the listener closed and in-flight requests finished, the
/// drainer stops (what it has not published stays spooled), the sink flushes and the spool
/// writer finishes; then the admin port closes.
pub async fn run(
    state: Arc<AppState>,
    public: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let teardown = start_drainer(&state);
    Ok(server::run(state, public, admin, shutdown, teardown).await?)
}

/// Starts the spool's drainer (when there is a spool); the returned future stops it, flushes
/// the sink and closes the spool: what runs after the last batch was accepted.
fn start_drainer(state: &Arc<AppState>) -> impl Future<Output = ()> {
    let (stop_drain, drain_rx) = tokio::sync::watch::channel(false);
    let drainer = state.pipeline.spool().cloned().map(|spool| {
        let state = state.clone();
        tokio::spawn(async move { drain::run(&state.pipeline, &spool, drain_rx).await })
    });
    let storage = state.clone();
    async move {
        let _ = stop_drain.send(true);
        if let Some(d) = drainer {
            let _ = d.await;
        }
        storage.pipeline.sink().close().await;
        if let Some(spool) = storage.pipeline.spool() {
            let spool = spool.clone();
            let _ = tokio::task::spawn_blocking(move || spool.close()).await;
        }
    }
}

/// `graphbridge serve --source eventhubs`: the same pipeline fed from Azure Event Hubs instead
/// of the webhook; only the admin port listens. Runs until SIGINT/SIGTERM.
#[cfg(feature = "kafka")]
pub async fn serve_eventhubs(cfg: &Config) -> Result<(), StartError> {
    let state = build(cfg).await?;
    crate::eventhubs::check_at_start(&cfg.eventhubs)
        .await
        .map_err(StartError::EventHubs)?;
    let consumer =
        Arc::new(crate::eventhubs::consumer(&cfg.eventhubs).map_err(StartError::EventHubs)?);
    let rx = server::stop_on_signal();
    let health = Arc::new(crate::eventhubs::HubHealth {
        state: state.clone(),
        consumer: consumer.clone(),
    });
    let admin = server::spawn_admin(&cfg.server, health, rx.clone()).await?;
    tracing::info!(
        hub = %cfg.eventhubs.topic,
        group = %cfg.eventhubs.consumer_group,
        admin = %cfg.server.admin_listen,
        sink = state.pipeline.sink().kind(),
        "graphbridge reading Graph's notifications from Event Hubs"
    );
    let teardown = start_drainer(&state);
    crate::eventhubs::run(state, consumer, cfg.eventhubs.concurrency, rx).await;
    teardown.await;
    let _ = admin.await;
    Ok(())
}

/// `graphbridge serve`: binds the configured addresses and runs until SIGINT/SIGTERM.
pub async fn serve(cfg: &Config) -> Result<(), StartError> {
    let state = build(cfg).await?;
    let public = server::bind(cfg.server.listen).await?;
    let admin = server::bind(cfg.server.admin_listen).await?;
    tracing::info!(
        listen = %public.local_addr()?,
        admin = %admin.local_addr()?,
        sink = state.pipeline.sink().kind(),
        "graphbridge serving"
    );
    run(state, public, admin, server::shutdown_signal()).await
}
