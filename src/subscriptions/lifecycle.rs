//! Where the controller hears lifecycle events: the ingress publishes them to the lifecycle
//! stream (Kafka topic `graph.lifecycle.v1`, NATS `graph.v1.lifecycle.>`), and this reads them
//! back; with the file or stdout sink there is no broker, so `serve` in the same process hands
//! them over directly ([`graphbridge_core::pipeline::Pipeline::tap_lifecycle`]).

#[cfg(feature = "nats")]
use futures::StreamExt;
#[cfg(any(feature = "kafka", feature = "nats"))]
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

#[cfg(feature = "kafka")]
use graphbridge_core::config::KafkaConfig;
#[cfg(feature = "nats")]
use graphbridge_core::config::NatsConfig;
use graphbridge_core::config::{SinkConfig, SinkKind};
use graphbridge_core::event::v1::LifecycleEvent;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("kafka lifecycle consumer: {0}")]
    Kafka(String),
    #[error("nats lifecycle consumer: {0}")]
    Nats(String),
    #[error("lifecycle consumer: {0}")]
    NotBuilt(String),
}

/// Queue between a source and the controller.
pub fn channel() -> (mpsc::Sender<LifecycleEvent>, mpsc::Receiver<LifecycleEvent>) {
    mpsc::channel(1024)
}

/// Starts reading the lifecycle stream of the configured broker into `tx`. `None` for sinks
/// without a broker (the in-process path applies).
#[cfg_attr(not(all(feature = "kafka", feature = "nats")), allow(unused_variables))]
pub async fn spawn_broker_source(
    sink: &SinkConfig,
    group: &str,
    tx: mpsc::Sender<LifecycleEvent>,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<JoinHandle<()>>, LifecycleError> {
    Ok(match sink.kind {
        #[cfg(feature = "kafka")]
        SinkKind::Kafka => Some(kafka(&sink.kafka, group, tx, shutdown)?),
        #[cfg(feature = "nats")]
        SinkKind::Nats => Some(nats(&sink.nats, group, tx, shutdown).await?),
        SinkKind::File | SinkKind::Stdout => None,
        #[allow(unreachable_patterns)] // with every broker built in
        kind => return Err(LifecycleError::NotBuilt(kind.not_built())),
    })
}

#[cfg(any(feature = "kafka", feature = "nats"))]
fn parse(payload: &[u8]) -> Option<LifecycleEvent> {
    match serde_json::from_slice(payload) {
        Ok(ev) => Some(ev),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable record on the lifecycle stream; skipped");
            None
        }
    }
}

#[cfg(feature = "kafka")]
fn kafka(
    cfg: &KafkaConfig,
    group: &str,
    tx: mpsc::Sender<LifecycleEvent>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, LifecycleError> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message;
    let mut cc = graphbridge_core::sink::kafka::KafkaSink::consumer_config(cfg);
    // A new group starts at the beginning; events older than lifecycle_max_age are skipped.
    cc.set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        // Notice a lifecycle topic created after we subscribed within seconds, not minutes.
        .set("topic.metadata.refresh.interval.ms", "10000");
    let consumer: StreamConsumer = cc
        .create()
        .map_err(|e| LifecycleError::Kafka(e.to_string()))?;
    consumer
        .subscribe(&[&cfg.topics.lifecycle])
        .map_err(|e| LifecycleError::Kafka(e.to_string()))?;
    tracing::info!(topic = %cfg.topics.lifecycle, group, "reading lifecycle events from Kafka");
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                m = consumer.recv() => {
                    // The borrowed message must not live across an await (it is not Send).
                    let got = m.map(|m| m.payload().and_then(parse));
                    match got {
                        Ok(Some(ev)) => {
                            if tx.send(ev).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "kafka lifecycle consumer");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        }
    }))
}

#[cfg(feature = "nats")]
async fn nats(
    cfg: &NatsConfig,
    group: &str,
    tx: mpsc::Sender<LifecycleEvent>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, LifecycleError> {
    let (mut messages, filter, durable) = graphbridge_core::sink::nats::lifecycle_consumer(
        cfg,
        "graphbridge-subscriptions",
        group,
        "*",
        None,
    )
    .await
    .map_err(LifecycleError::Nats)?;
    tracing::info!(subject = %filter, durable, "reading lifecycle events from NATS");
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                m = messages.next() => match m {
                    Some(Ok(m)) => {
                        if let Some(ev) = parse(&m.payload) {
                            if tx.send(ev).await.is_err() {
                                return;
                            }
                        }
                        if let Err(e) = m.ack().await {
                            tracing::warn!(error = %e, "nats ack of a lifecycle event");
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "nats lifecycle consumer");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    None => return,
                },
            }
        }
    }))
}
