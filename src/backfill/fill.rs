//! Filling one gap: read what the plan says from Graph, turn every message into the event its
//! notification would have produced, and publish them through the configured sink. Returns only
//! once the sink confirmed everything: only then may the gap be marked done.

use std::collections::HashSet;
use std::sync::Arc;

use graphbridge_core::config::backfill::BackfillConfig;
use graphbridge_core::event::fetched::message_event;
use graphbridge_core::sink::{Record, Sink};
use graphbridge_core::telemetry::Metrics;
use graphbridge_graph_api::messages::{Messages, Window};
use graphbridge_graph_api::subscriptions::{GraphClient, GraphError};
use serde::Serialize;

use super::delta::{self, DeltaLinks};
use super::plan::{self, Fetch, Gap, PlanError};

/// Records per sink call.
const CHUNK: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum FillError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("graph: {0}")]
    Graph(#[from] GraphError),
    #[error("publishing: {0}")]
    Sink(String),
    #[error("no Graph client for tenant {0}")]
    NoClient(String),
}

impl FillError {
    /// Whether trying the same gap later may succeed (throttling, outages) or not (a resource
    /// backfill does not know, a permission the app lacks).
    pub fn retryable(&self) -> bool {
        match self {
            FillError::Plan(_) | FillError::NoClient(_) => false,
            FillError::Graph(e) => {
                !matches!(e, GraphError::Forbidden(_) | GraphError::BadRequest { .. })
            }
            FillError::Sink(_) => true,
        }
    }
}

/// What filling one gap did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Filled {
    /// Messages Graph returned in the window.
    pub fetched: u64,
    /// Events published (or, in a dry run, that would be); a message returned twice (a chat two
    /// configured users share) counts once.
    pub published: u64,
    /// Messages that could not become an event (logged with the reason).
    pub skipped: u64,
}

pub struct Filler<'a> {
    pub cfg: &'a BackfillConfig,
    pub client: &'a GraphClient,
    /// None: a dry run.
    pub sink: Option<Arc<dyn Sink>>,
    pub metrics: &'a Metrics,
    pub include_resource: bool,
    /// Messages published per second at most (None: as fast as the sink confirms).
    pub rate: Option<f64>,
    /// Show reads and messages on stderr as they go (a terminal).
    pub progress: bool,
    /// Channels' delta links, read and stored (None: read channels whole).
    pub delta_links: Option<&'a std::sync::Mutex<DeltaLinks>>,
}

fn in_window(w: &Window, m: &serde_json::Value) -> bool {
    m["lastModifiedDateTime"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t > w.from && t < w.to)
}

impl Filler<'_> {
    /// What `fetch` returns, and for a delta read the key and link to keep once published.
    async fn read(
        &self,
        tenant: &str,
        fetch: &Fetch,
    ) -> Result<(Messages, Option<String>), GraphError> {
        let mut link_key = None;
        let got = match fetch {
            Fetch::TeamChannels {
                team,
                window,
                model,
            } => {
                self.client
                    .team_channel_messages(team, *window, model.as_deref())
                    .await
            }
            Fetch::EveryTeam { .. } => unreachable!("expanded before reading"),
            Fetch::UserChats {
                user,
                window,
                model,
            } => {
                self.client
                    .user_chat_messages(user, *window, model.as_deref())
                    .await
            }
            Fetch::Chat { chat, window } => self.client.chat_messages(chat, *window).await,
            Fetch::ChannelDelta {
                team,
                channel,
                window,
            } => {
                let k = delta::key(tenant, team, channel);
                let stored = self
                    .delta_links
                    .and_then(|l| l.lock().expect("not poisoned").get(&k).map(str::to_string));
                link_key = Some(k);
                match stored {
                    // What changed since the last read: all of it may be missing downstream.
                    Some(link) => self.client.channel_delta(team, channel, Some(&link)).await,
                    // A first read returns the whole channel: keep what falls into the window.
                    None => {
                        let mut all = self.client.channel_delta(team, channel, None).await?;
                        all.messages.retain(|m| {
                            serde_json::from_str(m.get()).is_ok_and(|v| in_window(window, &v))
                        });
                        Ok(all)
                    }
                }
            }
        };
        self.metrics.backfill.graph_call(match &got {
            Ok(_) => "ok",
            Err(e) => e.reason(),
        });
        got.map(|m| (m, link_key))
    }

    /// `EveryTeam` becomes one read per team: the configured ones, or the tenant's.
    async fn expand(&self, fetches: Vec<Fetch>) -> Result<Vec<Fetch>, GraphError> {
        let mut out = Vec::with_capacity(fetches.len());
        for f in fetches {
            match f {
                Fetch::EveryTeam { window, model } => {
                    let teams = if self.cfg.teams.is_empty() {
                        self.client.team_ids().await?
                    } else {
                        self.cfg.teams.clone()
                    };
                    out.extend(teams.into_iter().map(|team| Fetch::TeamChannels {
                        team,
                        window,
                        model: model.clone(),
                    }));
                }
                f => out.push(f),
            }
        }
        Ok(out)
    }

    /// Fills `gap`; Ok only once every event is in the sink.
    pub async fn fill(&self, gap: &Gap) -> Result<Filled, FillError> {
        let fetches = self.expand(plan::fetches(gap, &self.cfg.users)?).await?;
        let received_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut done = Filled::default();
        let mut seen = HashSet::new();
        let started = std::time::Instant::now();
        for (i, f) in fetches.iter().enumerate() {
            let (got, link_key) = self.read(&gap.tenant, f).await?;
            done.fetched += got.messages.len() as u64;
            let mut records = Vec::with_capacity(got.messages.len());
            for m in &got.messages {
                match message_event(
                    &gap.tenant,
                    &gap.subscription_id,
                    m.get().as_bytes(),
                    &received_at,
                    self.include_resource,
                ) {
                    Ok(e) if seen.insert(e.id.clone()) => records.push(Record::message(e)),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "backfill: a fetched message has no event; skipped");
                        done.skipped += 1;
                    }
                }
            }
            done.published += records.len() as u64;
            if let Some(sink) = &self.sink {
                let mut sent = done.published - records.len() as u64;
                for chunk in records.chunks(CHUNK) {
                    if let Some(rate) = self.rate {
                        let due = started + std::time::Duration::from_secs_f64(sent as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    sink.publish(chunk)
                        .await
                        .map_err(|e| FillError::Sink(e.to_string()))?;
                    sent += chunk.len() as u64;
                }
                self.metrics.backfill.messages.inc_by(records.len() as u64);
                self.metrics.published(sink.kind(), records.len() as u64);
            }
            // Published: the next read of this channel may start here.
            if let (Some(links), Some(k), Some(link), Some(_)) =
                (self.delta_links, link_key, got.delta_link, &self.sink)
            {
                links.lock().expect("not poisoned").set(k, link);
            }
            if self.progress {
                eprint!(
                    "\r\x1b[2Kbackfill: read {}/{}, {} messages",
                    i + 1,
                    fetches.len(),
                    done.fetched
                );
            }
        }
        if self.progress {
            eprint!("\r\x1b[2K");
        }
        Ok(done)
    }
}
