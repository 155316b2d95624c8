//! The broker side of the verdict worker: verdicts in (a Kafka consumer group committing by
//! hand, or a durable JetStream consumer with explicit acks), audit events and dead letters
//! out (each awaited until the broker confirms it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use graphbridge_core::config::{Config, SinkKind};
use graphbridge_core::telemetry::Metrics;

/// One verdict record read, and where the input's position is once it is done.
pub struct Delivery {
    pub payload: Vec<u8>,
    ack: Ack,
}

enum Ack {
    Kafka {
        partition: i32,
        offset: i64,
    },
    #[cfg(feature = "nats")]
    Nats(Box<async_nats::jetstream::Message>),
}

pub enum Input {
    Kafka {
        consumer: Arc<rdkafka::consumer::StreamConsumer>,
        topic: String,
        /// Unread verdicts per partition, for the lag gauge.
        lag: Arc<Mutex<HashMap<i32, i64>>>,
        /// When the high watermarks were last asked for.
        lag_asked: Option<Instant>,
    },
    #[cfg(feature = "nats")]
    Nats(Box<async_nats::jetstream::consumer::pull::Stream>),
}

/// How often the Kafka input asks the broker for its high watermarks (the lag gauge).
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// Sets the lag gauge from `partition`'s high watermark, asked off the reactor (the call
/// blocks for a round trip to the broker).
fn kafka_lag(
    consumer: &Arc<rdkafka::consumer::StreamConsumer>,
    topic: &str,
    partition: i32,
    offset: i64,
    lag: &Arc<Mutex<HashMap<i32, i64>>>,
    metrics: &Metrics,
) {
    let (consumer, topic, lag) = (consumer.clone(), topic.to_string(), lag.clone());
    let gauge = metrics.verdicts.consumer_lag.clone();
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer;
        if let Ok((_, high)) = consumer.fetch_watermarks(&topic, partition, Duration::from_secs(2))
        {
            let mut lag = lag
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            lag.insert(partition, (high - offset).max(0));
            gauge.set(lag.values().sum());
        }
    });
}

/// The JetStream stream of the verdict subjects, created when the sink creates its own.
#[cfg(feature = "nats")]
async fn nats_context(cfg: &Config, name: &str) -> Result<async_nats::jetstream::Context, String> {
    let n = &cfg.sink.nats;
    let v = &cfg.verdicts.nats;
    let client = graphbridge_core::sink::nats::connect(n, name)
        .await
        .map_err(|e| e.to_string())?;
    let js = async_nats::jetstream::new(client);
    if n.create_stream {
        let subjects = vec![
            v.subjects.verdicts.clone(),
            v.subjects.deadletter.clone(),
            v.subjects.audit.clone(),
        ];
        graphbridge_core::sink::nats::ensure_stream(&js, n, &v.stream, subjects).await?;
    }
    Ok(js)
}

fn no_broker(kind: SinkKind) -> String {
    format!("sink.kind = {kind:?}: verdicts are read from and written to Kafka or NATS")
}

impl Input {
    /// The verdict topic or subject of the configured broker, read by
    /// `verdicts.consumer_group` from the start.
    pub async fn open(cfg: &Config) -> Result<Self, String> {
        let group = &cfg.verdicts.consumer_group;
        match cfg.sink.kind {
            SinkKind::Kafka => {
                use rdkafka::consumer::Consumer;
                let topic = cfg.verdicts.kafka.verdicts.clone();
                let mut cc =
                    graphbridge_core::sink::kafka::KafkaSink::consumer_config(&cfg.sink.kafka);
                cc.set("group.id", group)
                    .set("auto.offset.reset", "earliest")
                    // Committed by hand, once Graph gave its final answer.
                    .set("enable.auto.commit", "false")
                    .set("session.timeout.ms", "10000")
                    .set("topic.metadata.refresh.interval.ms", "10000");
                let consumer: rdkafka::consumer::StreamConsumer =
                    cc.create().map_err(|e| format!("kafka consumer: {e}"))?;
                consumer
                    .subscribe(&[&topic])
                    .map_err(|e| format!("kafka subscribe {topic}: {e}"))?;
                tracing::info!(topic, group, "verdicts: reading from Kafka");
                Ok(Input::Kafka {
                    consumer: Arc::new(consumer),
                    topic,
                    lag: Arc::default(),
                    lag_asked: None,
                })
            }
            #[cfg(feature = "nats")]
            SinkKind::Nats => {
                let js = nats_context(cfg, "graphbridge-verdicts").await?;
                let (messages, subject, durable) = graphbridge_core::sink::nats::durable_consumer(
                    &js,
                    &cfg.verdicts.nats.stream,
                    cfg.verdicts.nats.subjects.verdicts.clone(),
                    group,
                    // Graph may throttle one verdict for minutes; it is acked after that.
                    Some(Duration::from_secs(30 * 60)),
                )
                .await?;
                tracing::info!(subject, durable, "verdicts: reading from NATS");
                Ok(Input::Nats(Box::new(messages)))
            }
            kind => Err(no_broker(kind)),
        }
    }

    /// The next record (None: the input ended).
    pub async fn next(&mut self, metrics: &Metrics) -> Option<Delivery> {
        match self {
            Input::Kafka {
                consumer,
                topic,
                lag,
                lag_asked,
            } => loop {
                use rdkafka::message::Message;
                match consumer.recv().await {
                    Ok(m) => {
                        if lag_asked.is_none_or(|t| t.elapsed() >= LAG_INTERVAL) {
                            *lag_asked = Some(Instant::now());
                            kafka_lag(consumer, topic, m.partition(), m.offset(), lag, metrics);
                        }
                        return Some(Delivery {
                            payload: m.payload().unwrap_or_default().to_vec(),
                            ack: Ack::Kafka {
                                partition: m.partition(),
                                offset: m.offset(),
                            },
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "verdicts: kafka consumer");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            },
            #[cfg(feature = "nats")]
            Input::Nats(messages) => loop {
                use futures::StreamExt;
                match messages.next().await? {
                    Ok(m) => {
                        if let Ok(info) = m.info() {
                            metrics.verdicts.consumer_lag.set(info.pending as i64 + 1);
                        }
                        return Some(Delivery {
                            payload: m.payload.to_vec(),
                            ack: Ack::Nats(Box::new(m)),
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "verdicts: nats consumer");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            },
        }
    }

    /// Moves the position past `d`: Graph answered it for good and its audit is published.
    pub async fn done(&mut self, d: Delivery, metrics: &Metrics) {
        match (self, d.ack) {
            (
                Input::Kafka {
                    consumer, topic, ..
                },
                Ack::Kafka { partition, offset },
            ) => {
                use rdkafka::consumer::{CommitMode, Consumer};
                let mut tpl = rdkafka::TopicPartitionList::new();
                let _ =
                    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset + 1));
                // Async: a commit lost to a crash means the verdict is applied again, which
                // Graph takes as a no-op.
                if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                    tracing::warn!(error = %e, "verdicts: commit failed; the verdict will be applied again");
                }
            }
            #[cfg(feature = "nats")]
            (Input::Nats(_), Ack::Nats(m)) => {
                if let Err(e) = m.double_ack().await {
                    tracing::warn!(error = %e, "verdicts: ack failed; the verdict will be applied again");
                }
                metrics
                    .verdicts
                    .consumer_lag
                    .set(m.info().map(|i| i.pending as i64).unwrap_or(0));
            }
            #[allow(unreachable_patterns)]
            _ => unreachable!("a delivery is acked by the input that read it"),
        }
    }

    /// Commits what was committed asynchronously before the process ends.
    pub fn close(&self) {
        if let Input::Kafka { consumer, .. } = self {
            use rdkafka::consumer::{CommitMode, Consumer};
            if let Ok(tpl) = consumer.position() {
                let _ = consumer.commit(&tpl, CommitMode::Sync);
            }
        }
    }
}

/// What the worker writes.
#[derive(Debug, Clone, Copy)]
pub enum Out {
    Audit,
    DeadLetter,
}

pub enum Output {
    Kafka {
        producer: rdkafka::producer::FutureProducer,
        audit: String,
        deadletter: String,
    },
    #[cfg(feature = "nats")]
    Nats {
        js: async_nats::jetstream::Context,
        audit: String,
        deadletter: String,
    },
}

impl Output {
    pub async fn open(cfg: &Config) -> Result<Self, String> {
        match cfg.sink.kind {
            SinkKind::Kafka => {
                let t = &cfg.verdicts.kafka;
                let producer =
                    graphbridge_core::sink::kafka::KafkaSink::client_config(&cfg.sink.kafka)
                        .create()
                        .map_err(|e| format!("kafka producer: {e}"))?;
                Ok(Output::Kafka {
                    producer,
                    audit: t.audit.clone(),
                    deadletter: t.deadletter.clone(),
                })
            }
            #[cfg(feature = "nats")]
            SinkKind::Nats => {
                let s = &cfg.verdicts.nats.subjects;
                Ok(Output::Nats {
                    js: nats_context(cfg, "graphbridge-verdicts-out").await?,
                    audit: s.audit.clone(),
                    deadletter: s.deadletter.clone(),
                })
            }
            kind => Err(no_broker(kind)),
        }
    }

    /// Publishes one record and waits for the broker's confirmation. `id` deduplicates
    /// (Kafka `ce_id` header, NATS `Nats-Msg-Id`).
    pub async fn publish(
        &self,
        out: Out,
        key: &str,
        id: &str,
        ty: &str,
        payload: &[u8],
    ) -> Result<(), String> {
        match self {
            Output::Kafka {
                producer,
                audit,
                deadletter,
            } => {
                use rdkafka::message::{Header, OwnedHeaders};
                let topic = match out {
                    Out::Audit => audit,
                    Out::DeadLetter => deadletter,
                };
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "ce_id",
                        value: Some(id),
                    })
                    .insert(Header {
                        key: "ce_type",
                        value: Some(ty),
                    })
                    .insert(Header {
                        key: "content-type",
                        value: Some("application/json"),
                    });
                let record = rdkafka::producer::FutureRecord::to(topic)
                    .key(key)
                    .payload(payload)
                    .headers(headers);
                producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| format!("kafka {topic}: {e}"))
            }
            #[cfg(feature = "nats")]
            Output::Nats {
                js,
                audit,
                deadletter,
            } => {
                use async_nats::jetstream::context::Publish;
                let subject = match out {
                    Out::Audit => audit,
                    Out::DeadLetter => deadletter,
                };
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("ce_type", ty);
                let publish = Publish::build()
                    .payload(payload.to_vec().into())
                    .headers(headers)
                    .message_id(id);
                js.send_publish(subject.clone(), publish)
                    .await
                    .map_err(|e| format!("nats {subject}: {e}"))?
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("nats {subject}: {e}"))
            }
        }
    }
}
