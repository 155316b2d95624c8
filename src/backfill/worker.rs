//! The long-running worker: reads `resync_required` events from the lifecycle stream with a
//! consumer group of its own, merges the gaps that arrived together, fills each, and only then
//! commits its position (Kafka offsets, JetStream acks). The gap bookkeeping is that position:
//! it lives in the broker, so a worker killed mid-gap (kill -9, a lost pod) reads the gap again
//! and fills it again — duplicates by event id, never a hole.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use graphbridge_core::config::Config;
use graphbridge_core::event::v1::{LifecycleEvent, RESYNC_REQUIRED};
use graphbridge_core::sink::Sink;
use graphbridge_core::telemetry::Metrics;
use graphbridge_graph_api::subscriptions::GraphClient;

use super::delta::DeltaLinks;
use super::fill::{FillError, Filled, Filler};
use super::plan::{self, Gap};

/// Most events merged and filled before the position is committed.
const BATCH: usize = 256;
/// How long to wait for more events to merge with the first of a batch.
const GATHER: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("backfill source: {0}")]
    Source(String),
    #[error("graph client for tenant {0}: {1}")]
    Client(String, String),
}

/// The gap a `resync_required` event names (None for other lifecycle events).
pub fn gap_of(e: &LifecycleEvent) -> Option<Gap> {
    if e.data.lifecycle_event != RESYNC_REQUIRED {
        return None;
    }
    let r = e.data.resync.as_ref()?;
    let t = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    Some(Gap {
        tenant: e.data.tenant_id.clone(),
        subscription_id: e.data.subscription_id.clone(),
        resource: r.resource.clone(),
        from: t(&r.from)?,
        to: t(&r.to)?,
    })
}

/// Where the worker's position is, per event, to commit once filled.
enum Ack {
    None,
    #[cfg(feature = "kafka")]
    Kafka {
        partition: i32,
        offset: i64,
    },
    #[cfg(feature = "nats")]
    Nats(Box<async_nats::jetstream::Message>),
}

pub struct Delivery {
    gap: Option<Gap>,
    ack: Ack,
}

/// Where `resync_required` events come from.
pub enum Source {
    /// Handed over in-process (`subscriptions run` with the file sink): nothing to commit, and
    /// an unfilled gap is lost with the process.
    InProcess(tokio::sync::mpsc::Receiver<LifecycleEvent>),
    #[cfg(feature = "kafka")]
    Kafka {
        consumer: rdkafka::consumer::StreamConsumer,
        topic: String,
    },
    #[cfg(feature = "nats")]
    Nats(Box<async_nats::jetstream::consumer::pull::Stream>),
}

fn parse(payload: &[u8]) -> Option<LifecycleEvent> {
    serde_json::from_slice(payload)
        .map_err(|e| tracing::warn!(error = %e, "backfill: unreadable lifecycle record; skipped"))
        .ok()
}

impl Source {
    /// The lifecycle stream of the configured broker, read by `backfill.consumer_group`.
    pub async fn broker(cfg: &Config) -> Result<Self, WorkerError> {
        use graphbridge_core::config::SinkKind;
        let group = &cfg.backfill.consumer_group;
        match cfg.sink.kind {
            #[cfg(feature = "kafka")]
            SinkKind::Kafka => {
                use rdkafka::consumer::Consumer;
                let k = &cfg.sink.kafka;
                let mut cc = graphbridge_core::sink::kafka::KafkaSink::consumer_config(k);
                cc.set("group.id", group)
                    .set("auto.offset.reset", "earliest")
                    // Committed by hand, after the gap is filled: the bookkeeping.
                    .set("enable.auto.commit", "false")
                    // A replacement for a killed worker takes its partitions after this long.
                    .set("session.timeout.ms", "10000")
                    .set("topic.metadata.refresh.interval.ms", "10000");
                let consumer: rdkafka::consumer::StreamConsumer =
                    cc.create().map_err(|e| WorkerError::Source(e.to_string()))?;
                consumer
                    .subscribe(&[&k.topics.lifecycle])
                    .map_err(|e| WorkerError::Source(e.to_string()))?;
                tracing::info!(topic = %k.topics.lifecycle, group, "backfill: reading resync_required from Kafka");
                Ok(Source::Kafka {
                    consumer,
                    topic: k.topics.lifecycle.clone(),
                })
            }
            #[cfg(feature = "nats")]
            SinkKind::Nats => {
                // A gap may take minutes to fill; it is acked after that.
                let (messages, subject, durable) = graphbridge_core::sink::nats::lifecycle_consumer(
                    &cfg.sink.nats,
                    "graphbridge-backfill",
                    group,
                    RESYNC_REQUIRED,
                    Some(Duration::from_secs(30 * 60)),
                )
                .await
                .map_err(|e| WorkerError::Source(e.to_string()))?;
                tracing::info!(subject, durable, "backfill: reading resync_required from NATS");
                Ok(Source::Nats(Box::new(messages)))
            }
            kind => Err(WorkerError::Source(format!(
                "sink.kind = {kind:?} has no lifecycle stream to read; with the file sink backfill runs inside `subscriptions run`"
            ))),
        }
    }

    /// The next event (None: the source ended).
    async fn next(&mut self) -> Option<Delivery> {
        match self {
            Source::InProcess(rx) => rx.recv().await.map(|e| Delivery {
                gap: gap_of(&e),
                ack: Ack::None,
            }),
            #[cfg(feature = "kafka")]
            Source::Kafka { consumer, .. } => loop {
                use rdkafka::message::Message;
                match consumer.recv().await {
                    Ok(m) => {
                        let gap = m.payload().and_then(parse).as_ref().and_then(gap_of);
                        return Some(Delivery {
                            gap,
                            ack: Ack::Kafka {
                                partition: m.partition(),
                                offset: m.offset(),
                            },
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "backfill: kafka consumer");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            },
            #[cfg(feature = "nats")]
            Source::Nats(messages) => loop {
                use futures::StreamExt;
                match messages.next().await? {
                    Ok(m) => {
                        let gap = parse(&m.payload).as_ref().and_then(gap_of);
                        return Some(Delivery {
                            gap,
                            ack: Ack::Nats(Box::new(m)),
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "backfill: nats consumer");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            },
        }
    }

    /// Commits the position past `done` (all of them filled).
    async fn ack(&self, done: Vec<Delivery>) {
        match self {
            Source::InProcess(_) => {}
            #[cfg(feature = "kafka")]
            Source::Kafka { consumer, topic } => {
                use rdkafka::consumer::{CommitMode, Consumer};
                let mut next: HashMap<i32, i64> = HashMap::new();
                for d in &done {
                    if let Ack::Kafka { partition, offset } = d.ack {
                        let n = next.entry(partition).or_insert(offset + 1);
                        *n = (*n).max(offset + 1);
                    }
                }
                let mut tpl = rdkafka::TopicPartitionList::new();
                for (p, o) in next {
                    let _ = tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(o));
                }
                if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                    tracing::warn!(error = %e, "backfill: committing the position failed; the gaps will be filled again");
                }
            }
            #[cfg(feature = "nats")]
            Source::Nats(_) => {
                for d in done {
                    if let Ack::Nats(m) = d.ack {
                        if let Err(e) = m.double_ack().await {
                            tracing::warn!(error = %e, "backfill: ack failed; the gap will be filled again");
                        }
                    }
                }
            }
        }
    }
}

/// A Graph client for `tenant` with the controller's app credentials.
pub fn client(cfg: &Config, tenant: &str) -> Result<GraphClient, WorkerError> {
    crate::graph_client(cfg, tenant).map_err(|e| WorkerError::Client(tenant.to_string(), e))
}

/// Fills the gaps `source` delivers until `stop` turns true. Unfilled gaps are not committed.
pub async fn run(
    cfg: &Config,
    mut source: Source,
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut clients: HashMap<String, GraphClient> = HashMap::new();
    let delta_links = std::sync::Mutex::new(DeltaLinks::load(cfg.backfill.state_file.as_deref()));
    loop {
        let first = tokio::select! {
            d = source.next() => d,
            _ = stop.changed() => return,
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match tokio::time::timeout(GATHER, source.next()).await {
                Ok(Some(d)) => batch.push(d),
                _ => break,
            }
        }
        let gaps = plan::merge(batch.iter().filter_map(|d| d.gap.clone()).collect());
        let read_at = Instant::now();
        metrics.backfill.gaps_open.set(gaps.len() as i64);
        for (i, gap) in gaps.iter().enumerate() {
            let mut backoff = Duration::from_secs(1);
            loop {
                metrics
                    .backfill
                    .oldest_gap_age
                    .set(read_at.elapsed().as_secs_f64());
                let result = match clients.get(&gap.tenant) {
                    Some(c) => fill(cfg, &delta_links, c, &sink, &metrics, gap).await,
                    None => match client(cfg, &gap.tenant) {
                        Ok(c) => {
                            let c = clients.entry(gap.tenant.clone()).or_insert(c);
                            fill(cfg, &delta_links, c, &sink, &metrics, gap).await
                        }
                        Err(e) => Err(FillError::NoClient(e.to_string())),
                    },
                };
                match result {
                    Ok(f) => {
                        tracing::info!(tenant = %gap.tenant, resource = %gap.resource, from = %gap.from, to = %gap.to, fetched = f.fetched, published = f.published, "backfill: gap filled");
                        metrics.backfill.gaps_closed.inc();
                        break;
                    }
                    Err(e) if e.retryable() => {
                        tracing::warn!(error = %e, resource = %gap.resource, retry_in = ?backoff, "backfill: gap not filled yet; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            // Not committed: the next run fills it.
                            _ = stop.changed() => return,
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                    Err(e) => {
                        // Retrying cannot help (a permission, a resource backfill does not know):
                        // say so loudly and go on, or every later gap would wait behind it.
                        tracing::error!(error = %e, tenant = %gap.tenant, resource = %gap.resource, from = %gap.from, to = %gap.to, "backfill: gap cannot be filled; skipped");
                        metrics.backfill.graph_call("gave_up");
                        break;
                    }
                }
            }
            metrics.backfill.gaps_open.set((gaps.len() - i - 1) as i64);
        }
        metrics.backfill.oldest_gap_age.set(0.0);
        source.ack(batch).await;
    }
}

async fn fill(
    cfg: &Config,
    delta_links: &std::sync::Mutex<DeltaLinks>,
    client: &GraphClient,
    sink: &Arc<dyn Sink>,
    metrics: &Metrics,
    gap: &Gap,
) -> Result<Filled, FillError> {
    Filler {
        cfg: &cfg.backfill,
        client,
        sink: Some(sink.clone()),
        metrics,
        include_resource: cfg.graph.include_resource,
        rate: None,
        progress: false,
        delta_links: Some(delta_links),
    }
    .fill(gap)
    .await
}
