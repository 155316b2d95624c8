//! `graphbridge verdicts run | apply`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use graphbridge_core::config::Config;
use graphbridge_core::event::v1::Conversation;
use graphbridge_core::server::{self, MetricsOnly};
use graphbridge_core::telemetry::Metrics;
use graphbridge_event::verdict::{
    MessageRef, PolicyTip, PolicyViolation, VerdictData, VerdictEvent,
};

use super::apply::Applier;
use super::io::{Input, Output};
use super::worker;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Apply the verdicts of the verdict topic (or subject) to Graph until SIGTERM; audit events
    /// and dead letters to their topics; admin port with /healthz and /metrics.
    Run,
    /// Apply one verdict now, for operators (Graph's throttling is waited out).
    Apply(Box<ApplyArgs>),
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("where").required(true).args(["team", "chat"])))]
pub struct ApplyArgs {
    #[arg(long)]
    pub tenant: String,
    /// The team of a channel message (with --channel).
    #[arg(long, requires = "channel")]
    pub team: Option<String>,
    #[arg(long)]
    pub channel: Option<String>,
    /// The chat of a chat message.
    #[arg(long, conflicts_with_all = ["team", "channel", "reply_to"])]
    pub chat: Option<String>,
    #[arg(long)]
    pub message: String,
    /// The parent message of a channel reply.
    #[arg(long)]
    pub reply_to: Option<String>,
    /// Graph's dlpAction: None, NotifySender, BlockAccess, BlockAccessExternal.
    #[arg(long, default_value = "BlockAccess")]
    pub dlp_action: String,
    /// Graph's verdictDetails, comma-separated (e.g. AllowFalsePositiveOverride).
    #[arg(long)]
    pub verdict_details: Option<String>,
    /// The policy tip shown to the sender.
    #[arg(long)]
    pub general_text: Option<String>,
    #[arg(long)]
    pub compliance_url: Option<String>,
    /// A matched condition (repeatable), e.g. "Credit Card Number".
    #[arg(long = "condition")]
    pub conditions: Vec<String>,
    /// Print the PATCH Graph would get, and call nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl ApplyArgs {
    fn verdict(&self) -> VerdictEvent {
        let conversation = match (&self.team, &self.channel, &self.chat) {
            (Some(team_id), Some(channel_id), _) => Conversation::Channel {
                team_id: team_id.clone(),
                channel_id: channel_id.clone(),
            },
            (_, _, Some(chat_id)) => Conversation::Chat {
                chat_id: chat_id.clone(),
            },
            _ => unreachable!("clap requires --team with --channel, or --chat"),
        };
        let policy_tip = (self.general_text.is_some()
            || self.compliance_url.is_some()
            || !self.conditions.is_empty())
        .then(|| PolicyTip {
            general_text: self.general_text.clone(),
            compliance_url: self.compliance_url.clone(),
            matched_condition_descriptions: self.conditions.clone(),
        });
        let time = chrono::Utc::now().to_rfc3339();
        VerdictEvent::verdict(
            format!(
                "cli-{}",
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
            ),
            "/graphbridge/verdicts/cli",
            time,
            VerdictData {
                schema_version: 1,
                event_id: None,
                message: MessageRef {
                    tenant_id: self.tenant.clone(),
                    conversation,
                    message_id: self.message.clone(),
                    reply_to_id: self.reply_to.clone(),
                },
                policy_violation: PolicyViolation {
                    dlp_action: Some(self.dlp_action.clone()),
                    verdict_details: self.verdict_details.clone(),
                    policy_tip,
                    ..Default::default()
                },
                reason: Some("applied by an operator".into()),
                rule_id: None,
            },
        )
    }
}

/// Runs the verb; the exit status of `apply` is 0 when Graph took the verdict, 1 otherwise.
pub async fn main(command: Command, cfg: &Config) -> anyhow::Result<u8> {
    match command {
        Command::Run => run(cfg).await.map(|_| 0),
        Command::Apply(args) => apply(cfg, &args).await,
    }
}

async fn run(cfg: &Config) -> anyhow::Result<()> {
    // A missing credential is a configuration error now, not a retry loop on every verdict.
    crate::graph_client(cfg, "common").map_err(anyhow::Error::msg)?;
    let rx = server::stop_on_signal();
    let metrics = Metrics::new();
    let input = Input::open(cfg).await.map_err(anyhow::Error::msg)?;
    let output = Output::open(cfg).await.map_err(anyhow::Error::msg)?;
    let health = Arc::new(MetricsOnly(metrics.clone()));
    let admin = server::spawn_admin(&cfg.server, health, rx.clone()).await?;
    tracing::info!(sink = ?cfg.sink.kind, rate_per_second = cfg.verdicts.rate_per_second, "verdict worker running");
    worker::run(cfg, input, output, metrics, rx).await;
    admin.await.context("admin listener")?;
    Ok(())
}

async fn apply(cfg: &Config, args: &ApplyArgs) -> anyhow::Result<u8> {
    let payload = serde_json::to_vec(&args.verdict())?;
    if args.dry_run {
        let v = super::verdict::parse(&payload)
            .map_err(|r| anyhow::anyhow!("{}: {}", r.reason, r.error))?;
        let url = format!(
            "{}{}",
            cfg.graph.api_base.trim_end_matches('/'),
            v.data.message.graph_path()
        );
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "dry_run": true,
                "method": "PATCH",
                "url": url,
                "body": {"policyViolation": v.data.policy_violation.to_graph()},
            }))?
        );
        return Ok(0);
    }
    let (_tx, mut stop) = tokio::sync::watch::channel(false);
    let mut applier = Applier::new(cfg, Metrics::new());
    let started = Instant::now();
    let outcome = worker::decide(&mut applier, &payload, &mut stop)
        .await
        .expect("never stopped");
    let audit = outcome.audit(&payload, started.elapsed());
    println!("{}", serde_json::to_string_pretty(&audit.data)?);
    Ok(if outcome.applied.is_ok() { 0 } else { 1 })
}
