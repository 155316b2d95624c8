//! `graphbridge backfill run | fill`.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::delta::DeltaLinks;
use super::fill::{Filled, Filler};
use super::plan::Gap;
use super::worker::{self, Source};
use crate::replay::progress::Ending;
use crate::replay::range::parse_time;
use crate::replay::stop::Stop;
use graphbridge_core::config::Config;
use graphbridge_core::server::{self, MetricsOnly};
use graphbridge_core::telemetry::Metrics;

/// `graphbridge backfill --tenant … (--team|--chat|--user|--resource) … --from … --to …` fills
/// one window now; `graphbridge backfill run` is the worker.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub fill: FillArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Fill every gap the subscription controller reports (`resync_required` on the lifecycle
    /// stream) until SIGTERM; admin port with /healthz and /metrics.
    Run,
}

/// One window, for operators: a team's channels, a chat, a user's chats, or a subscription's
/// resource.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["team", "chat", "user", "resource"])))]
pub struct FillArgs {
    #[arg(long, required = true)]
    pub tenant: Option<String>,
    /// Every channel of this team (`/teams/{id}/channels/getAllMessages`).
    #[arg(long)]
    pub team: Option<String>,
    /// This chat (`/chats/{id}/messages`).
    #[arg(long)]
    pub chat: Option<String>,
    /// This user's chats (`/users/{id}/chats/getAllMessages`).
    #[arg(long)]
    pub user: Option<String>,
    /// A subscription resource, as in `subscriptions.items` (e.g. `/teams/getAllMessages`).
    #[arg(long)]
    pub resource: Option<String>,
    /// The subscription id the events name (default: `backfill`).
    #[arg(long, default_value = "backfill")]
    pub subscription_id: String,
    /// Start of the window (exclusive), RFC 3339.
    #[arg(long, value_parser = parse_time, required = true)]
    pub from: Option<DateTime<Utc>>,
    /// End of the window (exclusive), RFC 3339.
    #[arg(long, value_parser = parse_time, required = true)]
    pub to: Option<DateTime<Utc>>,
    /// Messages published per second at most.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Read from Graph and count, publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

impl FillArgs {
    fn gap(&self) -> anyhow::Result<Gap> {
        let (Some(tenant), Some(from), Some(to)) = (&self.tenant, self.from, self.to) else {
            anyhow::bail!("--tenant, --from and --to are required");
        };
        if from >= to {
            anyhow::bail!("--from must be before --to: the window is empty or backwards");
        }
        if self.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
            anyhow::bail!("--rate must be positive");
        }
        let resource = match (&self.team, &self.chat, &self.user, &self.resource) {
            (Some(t), ..) => format!("/teams/{t}/channels/getAllMessages"),
            (_, Some(c), ..) => format!("/chats/{c}/messages"),
            (_, _, Some(u), _) => format!("/users/{u}/chats/getAllMessages"),
            (_, _, _, Some(r)) => r.clone(),
            _ => unreachable!("clap requires one"),
        };
        Ok(Gap {
            tenant: tenant.clone(),
            subscription_id: self.subscription_id.clone(),
            resource,
            from,
            to,
        })
    }
}

#[derive(Serialize)]
struct Summary<'a> {
    ending: Ending,
    dry_run: bool,
    tenant: &'a str,
    resource: &'a str,
    from: String,
    to: String,
    #[serde(flatten)]
    filled: Filled,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Runs the verb; the exit status of `fill` follows replay's (0 done, 1 failed, 75 stopped by
/// a signal).
pub async fn main(args: Args, cfg: &Config) -> anyhow::Result<u8> {
    match args.command {
        Some(Command::Run) => {
            run(cfg).await?;
            Ok(0)
        }
        None => fill(cfg, &args.fill).await,
    }
}

async fn run(cfg: &Config) -> anyhow::Result<()> {
    let rx = server::stop_on_signal();
    let metrics = Metrics::new();
    let sink = graphbridge_core::sink::build(&cfg.sink).await?;
    let source = Source::broker(cfg).await?;
    let health = Arc::new(MetricsOnly(metrics.clone()));
    let admin = server::spawn_admin(&cfg.server, health, rx.clone()).await?;
    tracing::info!(sink = ?cfg.sink.kind, "backfill worker running");
    worker::run(cfg, source, sink.clone(), metrics, rx).await;
    sink.close().await;
    admin.await.context("admin listener")?;
    Ok(())
}

async fn fill(cfg: &Config, args: &FillArgs) -> anyhow::Result<u8> {
    let gap = args.gap()?;
    let client = worker::client(cfg, &gap.tenant)?;
    let sink = if args.dry_run {
        None
    } else {
        Some(graphbridge_core::sink::build(&cfg.sink).await?)
    };
    let delta_links = std::sync::Mutex::new(DeltaLinks::load(cfg.backfill.state_file.as_deref()));
    let metrics = Metrics::new();
    let filler = Filler {
        cfg: &cfg.backfill,
        client: &client,
        sink: sink.clone(),
        metrics: &metrics,
        include_resource: cfg.graph.include_resource,
        rate: args.rate,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        delta_links: Some(&delta_links),
    };
    let stop = Stop::on_signals().context("installing the SIGINT/SIGTERM handlers")?;
    // Stopping abandons the window: it is filled again from the start when run again.
    let (ending, filled, error) = tokio::select! {
        r = filler.fill(&gap) => match r {
            Ok(f) => (Ending::Complete, f, None),
            Err(e) => (Ending::Failed, Filled::default(), Some(e.to_string())),
        },
        _ = stop.wait() => (Ending::Interrupted, Filled::default(), None),
    };
    if let Some(s) = &sink {
        s.close().await;
    }
    let summary = Summary {
        ending,
        dry_run: args.dry_run,
        tenant: &gap.tenant,
        resource: &gap.resource,
        from: gap.from.to_rfc3339(),
        to: gap.to.to_rfc3339(),
        filled,
        error,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let verb = if args.dry_run {
            "would publish"
        } else {
            "published"
        };
        eprintln!(
            "backfill of {} in {} ({} .. {}) {}: fetched {}, {verb} {}, skipped {}",
            summary.resource,
            summary.tenant,
            summary.from,
            summary.to,
            ending.as_str(),
            summary.filled.fetched,
            summary.filled.published,
            summary.filled.skipped
        );
        if let Some(e) = &summary.error {
            eprintln!("failed: {e}");
        }
    }
    Ok(ending.exit_code())
}
