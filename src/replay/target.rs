//! Where replayed records go. Every target keeps what consumers dedupe by: Kafka gets the same
//! key, headers (with `ce_id`) and timestamp; NATS the sink's subject for the record's stream
//! and `Nats-Msg-Id` = event id; a file the event JSON, one per line. `publish` returns only
//! when the whole batch is durably accepted, so the source may advance past it.

#[cfg(feature = "nats")]
use std::future::IntoFuture;
use std::io::Write;
use std::path::Path;

#[cfg(feature = "nats")]
use async_nats::{jetstream::context::Publish, HeaderMap};
use futures::future::join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::item::Item;
use super::ReplayError;
use graphbridge_core::config::Config;
use graphbridge_core::sink::kafka::KafkaSink;
#[cfg(feature = "nats")]
use graphbridge_core::sink::nats::NatsSink;

pub enum Target {
    Kafka {
        producer: FutureProducer,
        topic: String,
    },
    #[cfg(feature = "nats")]
    Nats(Box<NatsSink>),
    File(std::fs::File),
}

fn target_err(what: &str, e: impl std::fmt::Display) -> ReplayError {
    ReplayError::Target(format!("{what}: {e}"))
}

impl Target {
    /// A Kafka topic on the configured cluster, with the sink's producer settings
    /// (idempotent, `acks=all`).
    pub fn kafka(cfg: &Config, topic: &str) -> Result<Self, ReplayError> {
        let producer = KafkaSink::client_config(&cfg.sink.kafka)
            .create()
            .map_err(|e| target_err("kafka producer", e))?;
        Ok(Target::Kafka {
            producer,
            topic: topic.to_string(),
        })
    }

    /// The configured NATS (`sink.nats`: URL, auth, stream, subject templates).
    #[cfg(feature = "nats")]
    pub async fn nats(cfg: &Config) -> Result<Self, ReplayError> {
        let sink = NatsSink::connect(&cfg.sink.nats)
            .await
            .map_err(|e| target_err("nats", e))?;
        Ok(Target::Nats(Box::new(sink)))
    }

    #[cfg(not(feature = "nats"))]
    pub async fn nats(_: &Config) -> Result<Self, ReplayError> {
        Err(target_err(
            "nats",
            "this build has no NATS support (cargo feature `nats`)",
        ))
    }

    /// JSON Lines appended to `path`.
    pub fn file(path: &Path) -> Result<Self, ReplayError> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| target_err(&path.display().to_string(), e))?;
        Ok(Target::File(f))
    }

    pub async fn publish(&mut self, items: &[Item]) -> Result<(), ReplayError> {
        if items.is_empty() {
            return Ok(());
        }
        match self {
            Target::Kafka { producer, topic } => publish_kafka(producer, topic, items).await,
            #[cfg(feature = "nats")]
            Target::Nats(sink) => publish_nats(sink, items).await,
            Target::File(f) => {
                let mut buf = Vec::new();
                for i in items {
                    buf.extend_from_slice(&i.payload);
                    buf.push(b'\n');
                }
                f.write_all(&buf).map_err(|e| target_err("file", e))?;
                f.sync_data().map_err(|e| target_err("file fsync", e))
            }
        }
    }

    /// Flushes what is buffered (the Kafka producer).
    pub async fn close(self) {
        if let Target::Kafka { producer, .. } = self {
            let _ = tokio::task::spawn_blocking(move || {
                producer.flush(std::time::Duration::from_secs(10))
            })
            .await;
        }
    }
}

async fn publish_kafka(
    producer: &FutureProducer,
    topic: &str,
    items: &[Item],
) -> Result<(), ReplayError> {
    let mut deliveries = Vec::with_capacity(items.len());
    for i in items {
        let headers = i.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            })
        });
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
            .payload(i.payload.as_slice())
            .headers(headers);
        if let Some(k) = &i.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(ts) = i.timestamp {
            rec = rec.timestamp(ts);
        }
        // Enqueue all, then await every delivery report: one round trip per batch.
        deliveries.push(
            producer
                .send_result(rec)
                .map_err(|(e, _)| target_err("kafka", e))?,
        );
    }
    for outcome in join_all(deliveries).await {
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(target_err("kafka delivery", e)),
            Err(_) => return Err(ReplayError::Target("kafka producer shut down".into())),
        }
    }
    Ok(())
}

#[cfg(feature = "nats")]
async fn publish_nats(sink: &NatsSink, items: &[Item]) -> Result<(), ReplayError> {
    let mut acks = Vec::with_capacity(items.len());
    for i in items {
        let f = &i.facts;
        let subject = f
            .stream
            .and_then(|s| sink.subject(s, &f.subject_vars))
            .ok_or_else(|| {
                ReplayError::Target(
                    "a record is not a v1 event, lifecycle event or dead letter: it has no NATS \
                     subject (raw archive records go to Kafka or a file, or use --reprocess)"
                        .into(),
                )
            })?;
        let id = f.id.as_deref().ok_or_else(|| {
            ReplayError::Target("a record without an event id cannot go to NATS".into())
        })?;
        let mut headers = HeaderMap::new();
        for (k, v) in &i.headers {
            headers.insert(k.as_str(), String::from_utf8_lossy(v).as_ref());
        }
        let publish = Publish::build()
            .payload(i.payload.clone().into())
            .headers(headers)
            .message_id(id);
        acks.push(
            sink.jetstream()
                .send_publish(subject, publish)
                .await
                .map_err(|e| target_err("nats publish", e))?,
        );
    }
    for ack in join_all(acks.into_iter().map(|a| a.into_future())).await {
        ack.map_err(|e| target_err("nats ack", e))?;
    }
    Ok(())
}
