//! Reading back what the bridge wrote to the real Kafka.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use graphbridge_core::config::{Config, SinkKind};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use serde_json::Value;

pub struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Record timestamp, milliseconds since the epoch.
    pub timestamp: Option<i64>,
    pub key: String,
    pub headers: HashMap<String, String>,
    pub payload: Vec<u8>,
}

impl Consumed {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).expect("payload is JSON")
    }
}

pub fn brokers() -> String {
    super::broker_env("GRAPHBRIDGE_TEST_KAFKA")
}

/// The test config with the Kafka sink and topics unique to this test.
pub fn kafka_config(dir: &std::path::Path, prefix: &str) -> Config {
    let mut cfg = super::test_config(dir);
    cfg.sink.kind = SinkKind::Kafka;
    cfg.sink.kafka.brokers = brokers();
    let t = &mut cfg.sink.kafka.topics;
    t.channel_messages = format!("{prefix}.channel");
    t.chat_messages = format!("{prefix}.chat");
    t.lifecycle = format!("{prefix}.lifecycle");
    t.deadletter = format!("{prefix}.deadletter");
    cfg
}

/// Reads `topics` from the beginning until `done` says enough arrived (bounded by `bound`).
pub async fn consume_until(
    brokers: &str,
    topics: &[&str],
    bound: Duration,
    done: impl Fn(&[Consumed]) -> bool,
) -> (StreamConsumer, Vec<Consumed>) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", super::unique("test-consumer"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(topics).expect("subscribe");
    let deadline = Instant::now() + bound;
    let mut out = Vec::new();
    while !done(&out) {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} messages arrived on {topics:?} within {bound:?}",
                    out.len()
                )
            })
            .expect("kafka recv");
        out.push(to_consumed(&msg));
    }
    (consumer, out)
}

/// Reads `topics` from the beginning until `n` messages arrived (bounded by `bound`), then
/// checks with the high watermarks that there are exactly `n`.
pub async fn consume(topics: &[&str], n: usize, bound: Duration) -> Vec<Consumed> {
    let (consumer, out) = consume_until(&brokers(), topics, bound, |got| got.len() >= n).await;
    assert_eq!(
        total_messages(&consumer, topics),
        n as i64,
        "exactly {n} messages on {topics:?}"
    );
    out
}

/// Reads `topics` from the beginning until `distinct` different `ce_id`s were seen (bounded);
/// duplicates a consumer would remove are kept in the result.
pub async fn consume_until_distinct(
    topics: &[&str],
    distinct: usize,
    bound: Duration,
) -> Vec<Consumed> {
    consume_until_distinct_at(&brokers(), topics, distinct, bound).await
}

/// [`consume_until_distinct`] from the cluster at `brokers`.
pub async fn consume_until_distinct_at(
    brokers: &str,
    topics: &[&str],
    distinct: usize,
    bound: Duration,
) -> Vec<Consumed> {
    let ids = |got: &[Consumed]| {
        got.iter()
            .map(|c| c.headers.get("ce_id").cloned())
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    consume_until(brokers, topics, bound, |got| ids(got) >= distinct)
        .await
        .1
}

/// Sum of high watermarks over every partition of `topics`. A topic created moments ago may
/// not have its leaders known everywhere yet (`NotLeaderForPartition`, `LeaderNotAvailable`):
/// the broker's answer is asked again until it settles, for at most 30 s.
fn total_messages(consumer: &StreamConsumer, topics: &[&str]) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match try_total_messages(consumer, topics) {
            Ok(total) => return total,
            Err(e) if std::time::Instant::now() < deadline && leaders_settling(&e) => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("watermarks: {e}"),
        }
    }
}

fn leaders_settling(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::*;
    matches!(
        e.rdkafka_error_code(),
        Some(NotLeaderForPartition | LeaderNotAvailable | UnknownTopicOrPartition)
    )
}

fn try_total_messages(
    consumer: &StreamConsumer,
    topics: &[&str],
) -> Result<i64, rdkafka::error::KafkaError> {
    let mut total = 0;
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for p in md.topics()[0].partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            total += high - low;
        }
    }
    Ok(total)
}

fn to_consumed(msg: &impl Message) -> Consumed {
    let headers = msg
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| {
                    (
                        x.key.to_string(),
                        String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Consumed {
        topic: msg.topic().to_string(),
        partition: msg.partition(),
        offset: msg.offset(),
        timestamp: msg.timestamp().to_millis(),
        key: String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned(),
        headers,
        payload: msg.payload().unwrap_or_default().to_vec(),
    }
}

/// Everything `topics` hold now (read up to the high watermarks at the time of the call).
pub async fn snapshot(topics: &[&str], bound: Duration) -> Vec<Consumed> {
    let probe: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", super::unique("test-probe"))
        .create()
        .expect("consumer");
    let n = total_messages(&probe, topics) as usize;
    if n == 0 {
        return Vec::new();
    }
    consume_until(&brokers(), topics, bound, |got| got.len() >= n)
        .await
        .1
}
