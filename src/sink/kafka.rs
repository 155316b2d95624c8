//! The Kafka sink: an idempotent producer (`acks=all`) writing each record to its stream's topic,
//! keyed by team, chat or subscription id, with CloudEvents binding headers. A batch's records
//! are produced concurrently and the call returns only after every delivery report.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::{Record, Sink, SinkError, Stream};
use crate::config::KafkaConfig;

pub struct KafkaSink {
    producer: FutureProducer,
    cfg: KafkaConfig,
}

/// Producer settings the acknowledgement rule depends on; user properties cannot weaken them.
const REQUIRED: &[(&str, &str)] = &[("enable.idempotence", "true"), ("acks", "all")];

/// Defaults that user properties may override: batch without adding noticeable latency.
const DEFAULTS: &[(&str, &str)] = &[
    ("compression.type", "lz4"),
    ("linger.ms", "2"),
    ("max.in.flight.requests.per.connection", "5"),
    ("queue.buffering.max.messages", "100000"),
    ("socket.keepalive.enable", "true"),
];

/// Errors that retrying cannot fix: a misconfiguration to report loudly, not a broker outage.
fn is_permanent(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        TopicAuthorizationFailed
            | ClusterAuthorizationFailed
            | TransactionalIdAuthorizationFailed
            | SaslAuthenticationFailed
            | Authentication
            | MessageSizeTooLarge
            | InvalidMessageSize
            | InvalidRecord
            | InvalidTopic
            | InvalidConfig
            | InvalidRequiredAcks
            | UnsupportedVersion
            | UnsupportedForMessageFormat
            | Fatal
    )
}

fn classify(e: KafkaError) -> SinkError {
    match e.rdkafka_error_code() {
        Some(code) if is_permanent(code) => SinkError::Permanent(format!("kafka: {e}")),
        _ => SinkError::Retryable(format!("kafka: {e}")),
    }
}

impl KafkaSink {
    pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &cfg.brokers);
        for (k, v) in DEFAULTS {
            cc.set(*k, *v);
        }
        for (k, v) in &cfg.properties {
            cc.set(k, v);
        }
        cc.set("message.timeout.ms", cfg.message_timeout_ms.to_string());
        for (k, v) in REQUIRED {
            cc.set(*k, *v);
        }
        cc
    }

    pub fn new(cfg: &KafkaConfig) -> Result<Self, SinkError> {
        let producer = Self::client_config(cfg)
            .create()
            .map_err(|e| SinkError::Permanent(format!("kafka producer configuration: {e}")))?;
        Ok(KafkaSink {
            producer,
            cfg: cfg.clone(),
        })
    }

    fn topic(&self, stream: Stream) -> Option<&str> {
        let t = &self.cfg.topics;
        match stream {
            Stream::ChannelMessages => Some(&t.channel_messages),
            Stream::ChatMessages => Some(&t.chat_messages),
            Stream::Lifecycle => Some(&t.lifecycle),
            Stream::DeadLetter => Some(&t.deadletter),
            Stream::Raw => self.cfg.raw_topic.as_deref(),
        }
    }
}

fn headers(r: &Record) -> OwnedHeaders {
    r.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        })
    })
}

#[async_trait::async_trait]
impl Sink for KafkaSink {
    async fn publish(&self, records: &[Record]) -> Result<(), SinkError> {
        let mut deliveries = Vec::with_capacity(records.len());
        for r in records {
            let Some(topic) = self.topic(r.stream) else {
                continue; // raw archive not configured
            };
            let rec = FutureRecord::to(topic)
                .key(r.key.as_bytes())
                .payload(&r.payload)
                .headers(headers(r));
            // send_result enqueues without waiting; a full local queue is back-pressure.
            let delivery = self
                .producer
                .send_result(rec)
                .map_err(|(e, _)| classify(e))?;
            deliveries.push(delivery);
        }
        for outcome in join_all(deliveries).await {
            match outcome {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(classify(e)),
                Err(_canceled) => {
                    return Err(SinkError::Retryable("kafka producer shut down".into()))
                }
            }
        }
        Ok(())
    }

    async fn ready(&self) -> bool {
        // The metadata fetch blocks: run it off the reactor.
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_millis(1500))
                .map(|m| !m.brokers().is_empty())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }

    fn kind(&self) -> &'static str {
        "kafka"
    }

    async fn close(&self) {
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
    }
}
