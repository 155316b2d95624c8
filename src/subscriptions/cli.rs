//! `graphbridge subscriptions run | list | reconcile --once`.

use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;

use super::controller::Action;
use graphbridge_core::config::Config;
use graphbridge_core::telemetry::Metrics;
use graphbridge_graph_api::clock::SystemClock;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Keep the configured subscriptions alive until SIGTERM: reconcile periodically, act on
    /// lifecycle events at once; admin port with /healthz and /metrics.
    Run,
    /// List the app's subscriptions in each configured tenant and which item each one is.
    List,
    /// Reconcile once: create missing, renew due, delete unwanted; print what was done.
    Reconcile {
        /// Run one round and exit (non-zero when any action failed).
        #[arg(long, required = true)]
        once: bool,
    },
    #[cfg(feature = "sim")]
    /// Serve a local stand-in for Graph's subscriptions API and token endpoint (development):
    /// set graph.auth.authority to the printed URL and graph.api_base to it plus /v1.0.
    StandIn {
        #[arg(long, default_value = "127.0.0.1:8444")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = "11111111-2222-3333-4444-555555555555")]
        client_id: String,
        #[arg(long, default_value = "stand-in-secret")]
        client_secret: String,
        /// Run the stand-in's clock this many times faster (subscriptions expire sooner).
        #[arg(long, default_value_t = 1)]
        clock_speed: u32,
    },
}

pub async fn main(cmd: Command, cfg: &Config) -> anyhow::Result<()> {
    match cmd {
        Command::Run => {
            let listeners = super::Listeners::bind(cfg).await?;
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                graphbridge_core::server::shutdown_signal().await;
                let _ = tx.send(true);
            });
            tracing::info!(
                items = cfg.subscriptions.items.len(),
                sink = ?cfg.sink.kind,
                "subscription controller running"
            );
            super::run(cfg, Arc::new(SystemClock), listeners, rx).await?;
        }
        Command::List => list(cfg).await?,
        #[cfg(feature = "sim")]
        Command::StandIn {
            listen,
            client_id,
            client_secret,
            clock_speed,
        } => stand_in(listen, client_id, client_secret, clock_speed).await?,
        Command::Reconcile { .. } => reconcile(cfg).await?,
    }
    Ok(())
}

/// Graph's subscriptions API and token endpoint on loopback, for development.
#[cfg(feature = "sim")]
async fn stand_in(
    listen: std::net::SocketAddr,
    client_id: String,
    client_secret: String,
    clock_speed: u32,
) -> anyhow::Result<()> {
    use graphbridge_sim::graph_api::{GraphStandIn, StandInOptions};
    let clock: Arc<dyn graphbridge_graph_api::clock::Clock> = if clock_speed > 1 {
        Arc::new(graphbridge_graph_api::clock::FastClock::new(clock_speed))
    } else {
        Arc::new(SystemClock)
    };
    let standin = GraphStandIn::new(StandInOptions {
        client_id: client_id.clone(),
        client_secret,
        clock,
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let base = standin.serve(listener);
    println!("graph.auth.authority = \"{base}\"\ngraph.api_base = \"{base}/v1.0\"\ngraph.auth.client_id = \"{client_id}\"");
    graphbridge_core::server::shutdown_signal().await;
    Ok(())
}

async fn list(cfg: &Config) -> anyhow::Result<()> {
    let desired = super::desired::from_config(cfg)?;
    let clients = super::clients(cfg, &desired)?;
    let now = Utc::now();
    let mut tenants: Vec<&String> = clients.keys().collect();
    tenants.sort();
    for tenant in tenants {
        let subs = clients[tenant]
            .list()
            .await
            .with_context(|| format!("listing subscriptions in tenant {tenant}"))?;
        println!("tenant {tenant}: {} subscription(s)", subs.len());
        for s in subs {
            let item = desired
                .iter()
                .find(|d| d.tenant_id == *tenant && d.matches(&s))
                .map_or("-", |d| d.name.as_str());
            let left = s.expiration_date_time - now;
            println!(
                "  {}  item={item}  expires={} (in {}h{:02}m)  resource={}  notificationUrl={}",
                s.id,
                s.expiration_date_time.to_rfc3339(),
                left.num_hours(),
                left.num_minutes() % 60,
                s.resource,
                s.notification_url
            );
        }
    }
    for d in &desired {
        println!(
            "desired {}: {} in tenant {}",
            d.name, d.resource, d.tenant_id
        );
    }
    Ok(())
}

async fn reconcile(cfg: &Config) -> anyhow::Result<()> {
    let sink = graphbridge_core::sink::build(&cfg.sink).await?;
    let mut controller = super::build(
        cfg,
        Arc::new(SystemClock),
        Metrics::new(),
        Some(sink.clone()),
    )?;
    let report = controller.reconcile().await;
    sink.close().await;
    for a in &report.actions {
        match a {
            Action::Created { name, id } => println!("created  {name}: {id}"),
            Action::Adopted { name, id } => println!("adopted  {name}: {id}"),
            Action::Renewed { name, id } => println!("renewed  {name}: {id}"),
            Action::Deleted { id, resource } => println!("deleted  {id} ({resource})"),
            Action::ResyncPublished { name, from, to } => {
                println!("resync_required {name}: {from} .. {to}")
            }
        }
    }
    for d in controller.desired() {
        if let Some(id) = controller.subscription_id(&d.name) {
            println!("ok       {}: {id}", d.name);
        }
    }
    if let Some((first, _)) = report.errors.first() {
        for (name, e) in &report.errors {
            eprintln!("failed   {name}: {e}");
        }
        anyhow::bail!(
            "{} subscription action(s) failed (first: {first})",
            report.errors.len()
        );
    }
    Ok(())
}
