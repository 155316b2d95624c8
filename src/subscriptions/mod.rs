//! The subscription controller: keeps the Graph subscriptions declared in `[subscriptions]`
//! alive (create, renew, reauthorize, recreate, delete), driven by a periodic reconcile and by
//! lifecycle events. Graph's REST API and its tokens come from `graphbridge-graph-api`; `desired`
//! turns config into desired state, `controller` reconciles, `lifecycle` feeds it events.

pub mod cli;
pub mod controller;
pub mod desired;
pub mod lifecycle;
pub mod planner;
pub mod watermark;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::StartError;
use controller::{Controller, Options};
use graphbridge_core::config::{Config, SinkKind};
use graphbridge_core::server::listener::ConnLimits;
use graphbridge_core::server::{self, Health, ServerError};
use graphbridge_core::sink::{Sink, SinkError};
use graphbridge_core::telemetry::Metrics;
use graphbridge_graph_api::clock::Clock;
use graphbridge_graph_api::oauth::{OAuthError, TokenSource};
use graphbridge_graph_api::subscriptions::GraphClient;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Desired(#[from] desired::DesiredError),
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    #[error("sink for resync events: {0}")]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::LifecycleError),
    #[error("ingress (file sink: lifecycle events in-process): {0}")]
    Serve(#[from] StartError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no [[subscriptions.items]] configured: nothing to keep alive")]
    NoItems,
}

/// A listener that could not be bound: reported like the ingress's own start errors.
impl From<ServerError> for SetupError {
    fn from(e: ServerError) -> Self {
        SetupError::Serve(e.into())
    }
}

pub fn options(cfg: &Config) -> Options {
    let s = &cfg.subscriptions;
    Options {
        renew_margin: s.renew_margin.0,
        jitter: s.jitter.0,
        poll_interval: s.poll_interval.0,
        preflight_handshake: s.preflight_handshake,
        lifecycle_max_age: s.lifecycle_max_age.0,
        state_file: s.state_file.clone(),
    }
}

/// One Graph client per tenant of the desired subscriptions.
pub fn clients(
    cfg: &Config,
    desired: &[desired::Desired],
) -> Result<HashMap<String, GraphClient>, SetupError> {
    let http = graphbridge_graph_api::subscriptions::http_client();
    let mut clients = HashMap::new();
    for d in desired {
        if !clients.contains_key(&d.tenant_id) {
            let tokens = TokenSource::new(&cfg.graph.auth, &d.tenant_id, http.clone())?;
            clients.insert(
                d.tenant_id.clone(),
                GraphClient::new(&cfg.graph.api_base, http.clone(), Arc::new(tokens)),
            );
        }
    }
    Ok(clients)
}

/// What `subscriptions run` checks before it touches the network (`config check
/// --subscriptions` runs it alone): the items (at least one, each valid, certificates readable)
/// and a Graph client per tenant (the app's credential readable).
pub fn check(
    cfg: &Config,
) -> Result<(Vec<desired::Desired>, HashMap<String, GraphClient>), SetupError> {
    let desired = desired::from_config(cfg)?;
    if desired.is_empty() {
        return Err(SetupError::NoItems);
    }
    let clients = clients(cfg, &desired)?;
    Ok((desired, clients))
}

/// A controller for the configured subscriptions.
pub fn build(
    cfg: &Config,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    resync_sink: Option<Arc<dyn Sink>>,
) -> Result<Controller, SetupError> {
    let (desired, clients) = check(cfg)?;
    Ok(Controller::new(
        desired,
        clients,
        clock,
        metrics,
        options(cfg),
        resync_sink,
    ))
}

/// `subscriptions run`'s readiness: a reconcile round completed cleanly within `stale_after`
/// (`graphbridge_subscriptions_last_reconcile_timestamp_seconds`). A wedged loop, or one that
/// keeps failing (Graph unreachable, credentials revoked), turns it red.
pub struct ControllerHealth {
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub stale_after: std::time::Duration,
}

/// Three poll intervals (a round runs at least once per interval), at least a minute.
pub fn stale_after(cfg: &Config) -> std::time::Duration {
    (cfg.subscriptions.poll_interval.0 * 3).max(std::time::Duration::from_secs(60))
}

#[async_trait::async_trait]
impl Health for ControllerHealth {
    async fn ready(&self) -> Result<(), String> {
        let last = self.metrics.subscriptions.last_reconcile.get();
        if last <= 0.0 {
            return Err("no reconcile round has completed yet".into());
        }
        let now = self.clock.now().timestamp_millis() as f64 / 1000.0;
        let age = now - last;
        if age > self.stale_after.as_secs_f64() {
            return Err(format!(
                "the last clean reconcile round was {age:.0} s ago (more than {} s)",
                self.stale_after.as_secs()
            ));
        }
        Ok(())
    }

    fn metrics(&self) -> String {
        self.metrics.render()
    }
}

/// The listeners `subscriptions run` serves: the admin port always; the public one too with the
/// file or stdout sink, where the ingress runs in the same process.
pub struct Listeners {
    pub public: Option<TcpListener>,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(cfg: &Config) -> Result<Self, SetupError> {
        let in_process = matches!(cfg.sink.kind, SinkKind::File | SinkKind::Stdout);
        let public = if in_process {
            Some(
                server::bind(cfg.server.listen)
                    .await
                    .map_err(StartError::from)?,
            )
        } else {
            None
        };
        let admin = server::bind(cfg.server.admin_listen).await?;
        Ok(Listeners { public, admin })
    }
}

/// `graphbridge subscriptions run`: the controller loop until `shutdown` turns true.
///
/// With Kafka or NATS it reads lifecycle events from the broker and serves the admin port
/// (`/healthz`, `/metrics`). With the file or stdout sink there is no broker to carry them,
/// so it also runs the ingress (`serve`) in this process and receives them directly.
pub async fn run(
    cfg: &Config,
    clock: Arc<dyn Clock>,
    listeners: Listeners,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SetupError> {
    let (tx, rx) = lifecycle::channel();
    match listeners.public {
        Some(public) => {
            let state = crate::app::build(cfg).await?;
            state.pipeline.tap_lifecycle(tx);
            #[cfg_attr(not(feature = "kafka"), allow(unused_mut))]
            let mut controller = build(
                cfg,
                clock,
                state.pipeline.metrics().clone(),
                Some(state.pipeline.sink().clone()),
            )?;
            // No broker to carry resync_required to a backfill worker: fill the gaps here.
            #[cfg(feature = "kafka")]
            let backfill = {
                let (gaps, queue) = tokio::sync::mpsc::channel(1024);
                controller.tap_resync_events(gaps);
                let (cfg, sink, metrics, stop) = (
                    cfg.clone(),
                    state.pipeline.sink().clone(),
                    state.pipeline.metrics().clone(),
                    shutdown.clone(),
                );
                tokio::spawn(async move {
                    let source = crate::backfill::worker::Source::InProcess(queue);
                    crate::backfill::worker::run(&cfg, source, sink, metrics, stop).await
                })
            };
            let mut stop = shutdown.clone();
            let server = tokio::spawn(crate::app::run(
                state,
                public,
                listeners.admin,
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ));
            controller.run(rx, shutdown).await;
            #[cfg(feature = "kafka")]
            let _ = backfill.await;
            server
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
        }
        None => {
            let metrics = Metrics::new();
            let sink = graphbridge_core::sink::build(&cfg.sink).await?;
            let clock_for_health = clock.clone();
            let controller = build(cfg, clock, metrics.clone(), Some(sink.clone()))?;
            let source = lifecycle::spawn_broker_source(
                &cfg.sink,
                &cfg.subscriptions.consumer_group,
                tx,
                shutdown.clone(),
            )
            .await?;
            let admin = tokio::spawn(server::serve_admin(
                listeners.admin,
                Arc::new(ControllerHealth {
                    metrics,
                    clock: clock_for_health,
                    stale_after: stale_after(cfg),
                }),
                ConnLimits::from_config(&cfg.server)
                    .map_err(ServerError::from)?
                    .without_tls(),
                shutdown.clone(),
            ));
            controller.run(rx, shutdown.clone()).await;
            let _ = shutdown.wait_for(|s| *s).await;
            if let Some(s) = source {
                let _ = s.await;
            }
            sink.close().await;
            admin
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
    }
    Ok(())
}
