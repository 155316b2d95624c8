//! The Kafka sink: an idempotent producer (`acks=all`) writing each record to its stream's topic,
//! keyed by team, chat or subscription id, with CloudEvents binding headers. A batch's records
//! are produced concurrently and the call returns only after every delivery report.
//!
//! Delivery reports are counted per batch ([`BatchAck`]): the batch's task is woken once, when
//! the last report arrives, instead of once per record as with a future per record.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART as UNKNOWN_TOPIC;
use tokio::sync::oneshot;

use super::{lock, Record, Sink, SinkError, Stream};
use crate::config::KafkaConfig;

pub mod health;
pub use health::Reporting;

/// Producer settings that `sink.kafka.properties` may hold and consumers leave out.
const PRODUCER_ONLY: &[&str] = &[
    "acks",
    "enable.idempotence",
    "linger.ms",
    "compression.type",
    "max.in.flight.requests.per.connection",
    "queue.buffering.max.messages",
    "message.timeout.ms",
    "batch.size",
    "batch.num.messages",
    "queue.buffering.max.ms",
    "retries",
    "message.send.max.retries",
];

pub struct KafkaSink {
    producer: ThreadedProducer<BatchContext>,
    cfg: KafkaConfig,
}

/// The delivery reports still expected for one batch, and the first failure among them.
struct BatchAck {
    state: Mutex<AckState>,
}

struct AckState {
    /// Reports still to come, plus one while records are being enqueued.
    pending: usize,
    error: Option<KafkaError>,
    done: Option<oneshot::Sender<Option<KafkaError>>>,
}

impl BatchAck {
    fn new(records: usize) -> (Arc<Self>, oneshot::Receiver<Option<KafkaError>>) {
        let (tx, rx) = oneshot::channel();
        let state = AckState {
            pending: records + 1,
            error: None,
            done: Some(tx),
        };
        (
            Arc::new(BatchAck {
                state: Mutex::new(state),
            }),
            rx,
        )
    }

    /// `n` expected reports settled (delivered, failed, or never enqueued).
    fn settle(&self, n: usize, error: Option<KafkaError>) {
        let mut s = lock(&self.state);
        if s.error.is_none() {
            s.error = error;
        }
        s.pending -= n;
        if s.pending == 0 {
            if let Some(done) = s.done.take() {
                let _ = done.send(s.error.take());
            }
        }
    }
}

/// Routes each delivery report to its batch; keeps the last connection failure.
struct BatchContext {
    errors: Reporting,
}

impl ClientContext for BatchContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.error(error, reason);
    }
}

impl ProducerContext for BatchContext {
    type DeliveryOpaque = Arc<BatchAck>;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: Arc<BatchAck>) {
        batch.settle(1, result.as_ref().err().map(|(e, _)| e.clone()));
    }
}

/// Producer settings the acknowledgement rule depends on; user properties cannot weaken them.
const REQUIRED: &[(&str, &str)] = &[("enable.idempotence", "true"), ("acks", "all")];

/// Defaults that user properties may override: batch without adding noticeable latency.
/// `linger.ms` 5 or 10 saved 8-15 % CPU per notification in pass-through, but at 70 % of the
/// RSA-bound rate (batches of 10) 5 ms took the ack p99 from 38 to 131-155 ms: 2 stays.
const DEFAULTS: &[(&str, &str)] = &[
    ("compression.type", "lz4"),
    ("linger.ms", "2"),
    ("max.in.flight.requests.per.connection", "5"),
    ("queue.buffering.max.messages", "100000"),
    ("socket.keepalive.enable", "true"),
    // librdkafka's reconnect backoff grows to 10 s during an outage, so a spool waited up to
    // that long after the broker was back before it drained; one second at most instead.
    ("reconnect.backoff.max.ms", "1000"),
];

/// Has glibc keep freed C heap memory mapped for reuse, up to 4 MiB per arena, instead of
/// handing it back at once. librdkafka sets up an LZ4 frame context per message set (a zeroed
/// 64 KiB buffer, a 16 KiB table) and frees it after; glibc's default trim threshold (128 KiB)
/// had the broker thread's arena give those pages back after every set and fault them in again
/// for the next: 0.6-0.9 page faults and about 3 µs of that thread's CPU per notification at
/// saturation (docs/performance.md).
///
/// glibc raises its thresholds by itself when a block it had mapped on its own is freed (the
/// mmap threshold to that block's size, the trim threshold to twice that, and it keeps adapting;
/// mallopt(3)), but a producer never frees one. Freeing one 2 MiB block here starts them where
/// a larger program's first big buffer would have: 2 and 4 MiB. Unlike setting them with
/// `mallopt`, this keeps glibc's adaptation, and `GLIBC_TUNABLES` or `MALLOC_*_` settings still
/// win (glibc stops adapting when they are set). Only C libraries use glibc's malloc in
/// `graphbridge` (Rust allocates with mimalloc); the effect is process-wide and idempotent.
fn keep_c_heap_resident() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: a block allocated and freed at once, never read or written.
    unsafe {
        // black_box: the compiler may otherwise drop an unused malloc/free pair.
        libc::free(std::hint::black_box(libc::malloc(2 << 20)));
    }
}

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
        if let Some(p) = &cfg.sasl_password {
            cc.set("sasl.password", p.expose());
        }
        cc.set("message.timeout.ms", cfg.message_timeout_ms.to_string());
        for (k, v) in REQUIRED {
            cc.set(*k, *v);
        }
        cc
    }

    /// A consumer of the same cluster (replay, the lifecycle reader, the simulator's checker):
    /// the brokers and the pass-through properties (security among them) without the
    /// producer-only ones, about which librdkafka would warn. Callers add their group settings.
    pub fn consumer_config(cfg: &KafkaConfig) -> ClientConfig {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &cfg.brokers);
        for (k, v) in &cfg.properties {
            if !PRODUCER_ONLY.contains(&k.as_str()) {
                cc.set(k, v);
            }
        }
        if let Some(p) = &cfg.sasl_password {
            cc.set("sasl.password", p.expose());
        }
        cc
    }

    /// A client of an Azure event hub's Kafka endpoint (`[eventhubs]`): the connection string
    /// as that endpoint takes it (SASL_SSL, PLAIN, user `$ConnectionString`) and the caller's
    /// `defaults`, then the configured properties (which win). Shared by the Event Hubs
    /// source and the simulator writing to a hub.
    pub fn eventhubs_config(
        cfg: &crate::config::eventhubs::EventHubsConfig,
        defaults: &[(&str, &str)],
    ) -> ClientConfig {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &cfg.brokers);
        for (k, v) in defaults {
            cc.set(*k, *v);
        }
        if let Some(cs) = &cfg.connection_string {
            cc.set("security.protocol", "SASL_SSL")
                .set("sasl.mechanisms", "PLAIN")
                .set("sasl.username", "$ConnectionString")
                .set("sasl.password", cs.expose());
        }
        for (k, v) in &cfg.properties {
            cc.set(k, v);
        }
        cc
    }

    pub fn new(cfg: &KafkaConfig) -> Result<Self, SinkError> {
        if let Some(cert) = cfg.properties.get("ssl.certificate.location") {
            super::client_cert::check(cert.as_ref())
                .map_err(|e| SinkError::Permanent(format!("kafka {}: {e}", cfg.brokers)))?;
        }
        keep_c_heap_resident();
        let context = BatchContext {
            errors: Reporting::new(&cfg.brokers),
        };
        let producer = Self::client_config(cfg)
            .create_with_context(context)
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
    let empty = OwnedHeaders::new_with_capacity(r.headers.len());
    r.headers.iter().fold(empty, |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        })
    })
}

/// The cluster answers for `topic`, and knows it. A topic that does not exist (where the brokers
/// or `allow.auto.create.topics` do not create it) fails every publish after the message timeout.
/// When the cluster does not answer, the error says why (see [`Reporting`]).
fn topic_ready(producer: &ThreadedProducer<BatchContext>, topic: &str) -> Result<(), SinkError> {
    let errors = &producer.context().errors;
    // Asking for a missing topic is what makes a broker with auto-creation create it, and the
    // answer to that very request still says "unknown": ask once more before calling it missing.
    for attempt in 0..2 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(250));
        }
        match producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_millis(1500))
        {
            Err(e) => return Err(errors.explain(&e)),
            Ok(m) if m.brokers().is_empty() => return Err(errors.explain(&"no brokers known")),
            Ok(m) if !m.topics().iter().any(|t| t.error() == Some(UNKNOWN_TOPIC)) => {
                errors.clear();
                return Ok(());
            }
            Ok(_) => {}
        }
    }
    errors.clear();
    tracing::warn!(topic, "kafka: the cluster has no such topic; not ready");
    Err(SinkError::Retryable(format!(
        "kafka: the cluster has no topic {topic}"
    )))
}

#[async_trait::async_trait]
impl Sink for KafkaSink {
    async fn publish(&self, records: &[Record]) -> Result<(), SinkError> {
        let (batch, done) = BatchAck::new(records.len());
        let mut skipped = 0;
        for r in records {
            let Some(topic) = self.topic(r.stream) else {
                skipped += 1; // raw archive not configured
                continue;
            };
            let rec = BaseRecord::with_opaque_to(topic, batch.clone())
                .key(r.key.as_bytes())
                .payload(&r.payload)
                .headers(headers(r));
            // send enqueues without waiting; a full local queue is back-pressure. Records
            // already enqueued still report to `batch`, which outlives this call if need be.
            if let Err((e, _)) = self.producer.send(rec) {
                return Err(classify(e));
            }
        }
        batch.settle(skipped + 1, None);
        match done.await {
            Ok(None) => Ok(()),
            Ok(Some(e)) => Err(classify(e)),
            Err(_) => Err(SinkError::Retryable("kafka producer shut down".into())),
        }
    }

    async fn ready(&self) -> Result<(), SinkError> {
        // Metadata of the configured topics only: a probe every few seconds from every pod must
        // not fetch every topic of a large cluster. The fetch blocks: run it off the reactor.
        let producer = self.producer.clone();
        let mut topics: Vec<String> = Stream::ALL
            .iter()
            .filter_map(|s| self.topic(*s).map(str::to_owned))
            .collect();
        topics.sort();
        topics.dedup();
        tokio::task::spawn_blocking(move || {
            topics.iter().try_for_each(|t| topic_ready(&producer, t))
        })
        .await
        .unwrap_or_else(|e| Err(SinkError::Retryable(format!("kafka probe: {e}"))))
    }

    fn kind(&self) -> &'static str {
        "kafka"
    }

    async fn close(&self) {
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_completes_once_after_every_report_and_keeps_the_first_error() {
        let (batch, mut done) = BatchAck::new(3);
        batch.settle(1, None);
        batch.settle(
            1,
            Some(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut,
            )),
        );
        batch.settle(
            1,
            Some(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)),
        );
        // Still enqueueing: not complete until the enqueue guard is settled too.
        assert!(done.try_recv().is_err());
        batch.settle(1, None);
        let first = done.try_recv().expect("complete").expect("an error");
        assert_eq!(
            first.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageTimedOut)
        );
    }

    #[test]
    fn batch_without_records_to_report_completes_when_enqueueing_ends() {
        // Two records skipped (no raw topic configured): nothing to wait for.
        let (batch, mut done) = BatchAck::new(2);
        batch.settle(2 + 1, None);
        assert!(matches!(done.try_recv(), Ok(None)));
    }
}
