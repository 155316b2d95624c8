//! Reading a range of a topic: an assign-based consumer without a consumer group, so a replay
//! moves nobody's committed offsets (and commits none of its own: `enable.auto.commit=false`).
//! The position of each partition is tracked here and advanced only for records the target has
//! confirmed, which is what a stopped replay prints as its resume point.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::item::Item;
use super::range::{self, Bound, PartitionRange};
use super::ReplayError;
use graphbridge_core::config::KafkaConfig;
use graphbridge_core::sink::kafka::KafkaSink;

/// A consumer of `sink.kafka` (brokers, security properties) that joins no group and commits
/// nothing. rdkafka's consumer needs a `group.id` to exist at all, so it gets a throwaway one;
/// with assign() and no commits that group is never created on the broker.
pub fn consumer_config(k: &KafkaConfig) -> ClientConfig {
    let mut cc = KafkaSink::consumer_config(k);
    let throwaway = format!(
        "graphbridge-replay-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    cc.set("client.id", "graphbridge-replay")
        .set("group.id", throwaway)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A range start deleted by retention is clamped when resolved; anything else out of
        // range is an error rather than a silent jump.
        .set("auto.offset.reset", "error");
    cc
}

/// Resolves the range on a short-lived consumer, off the async reactor (the calls block).
pub async fn resolve(
    k: &KafkaConfig,
    topic: &str,
    from: Option<Bound>,
    to: Option<Bound>,
) -> Result<Vec<PartitionRange>, ReplayError> {
    let cc = consumer_config(k);
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = cc
            .create()
            .map_err(|e| ReplayError::Kafka(format!("consumer: {e}")))?;
        range::resolve(&consumer, &topic, from.as_ref(), to.as_ref())
    })
    .await
    .map_err(|e| ReplayError::Kafka(format!("resolving the range: {e}")))?
}

/// One record read, with where it came from.
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub item: Item,
}

pub struct Source {
    consumer: StreamConsumer,
    topic: String,
    ranges: BTreeMap<i32, PartitionRange>,
    /// Next offset to publish per partition: everything before it is done.
    next: BTreeMap<i32, i64>,
}

impl Source {
    pub fn open(
        k: &KafkaConfig,
        topic: &str,
        ranges: &[PartitionRange],
    ) -> Result<Self, ReplayError> {
        let consumer: StreamConsumer = consumer_config(k)
            .create()
            .map_err(|e| ReplayError::Kafka(format!("consumer: {e}")))?;
        let mut tpl = TopicPartitionList::new();
        for r in ranges.iter().filter(|r| !r.is_empty()) {
            tpl.add_partition_offset(topic, r.partition, Offset::Offset(r.from))
                .map_err(|e| ReplayError::Kafka(e.to_string()))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| ReplayError::Kafka(format!("assign: {e}")))?;
        Ok(Source {
            consumer,
            topic: topic.to_string(),
            ranges: ranges.iter().map(|r| (r.partition, *r)).collect(),
            next: ranges.iter().map(|r| (r.partition, r.from)).collect(),
        })
    }

    pub fn ranges(&self) -> impl Iterator<Item = &PartitionRange> {
        self.ranges.values()
    }

    /// Next offset per partition (the resume point).
    pub fn next_offsets(&self) -> &BTreeMap<i32, i64> {
        &self.next
    }

    fn partition_done(&self, p: i32) -> bool {
        self.next[&p] >= self.ranges[&p].to
    }

    pub fn done(&self) -> bool {
        self.ranges.keys().all(|p| self.partition_done(*p))
    }

    /// Records not yet published.
    pub fn remaining(&self) -> u64 {
        self.ranges
            .values()
            .map(|r| (r.to - self.next[&r.partition]).max(0) as u64)
            .sum()
    }

    /// Marks a record as published (or filtered out): its partition continues after it.
    pub fn advance(&mut self, partition: i32, offset: i64) {
        if let Some(n) = self.next.get_mut(&partition) {
            *n = (*n).max(offset + 1);
        }
    }

    /// Up to `max` records in range, waiting at most `wait` for the first. Records past a
    /// partition's end are dropped and the partition paused.
    pub async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Read>, ReplayError> {
        let mut out = Vec::new();
        let mut timeout = wait;
        while out.len() < max {
            let msg = match tokio::time::timeout(timeout, self.consumer.recv()).await {
                Err(_) => break,
                Ok(r) => r.map_err(|e| ReplayError::Kafka(format!("read {}: {e}", self.topic)))?,
            };
            // Once something arrived, take what is already buffered but do not wait for more.
            timeout = Duration::from_millis(5);
            let (p, o) = (msg.partition(), msg.offset());
            let Some(r) = self.ranges.get(&p) else {
                continue;
            };
            if o >= r.to {
                self.pause(p)?;
                continue;
            }
            let headers = msg
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| (x.key.to_string(), x.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            let item = Item::read(
                msg.key().map(<[u8]>::to_vec),
                headers,
                msg.payload().unwrap_or_default().to_vec(),
                msg.timestamp().to_millis(),
            );
            out.push(Read {
                partition: p,
                offset: o,
                item,
            });
        }
        if out.is_empty() {
            self.skip_gaps()?;
        }
        Ok(out)
    }

    fn pause(&self, p: i32) -> Result<(), ReplayError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, p);
        self.consumer
            .pause(&tpl)
            .map_err(|e| ReplayError::Kafka(format!("pause: {e}")))
    }

    /// When nothing arrives although a partition's range is not done, the offsets left may hold
    /// no records (transaction markers, compaction): the consumer's position then already is
    /// at or beyond the end.
    fn skip_gaps(&mut self) -> Result<(), ReplayError> {
        let pos = self
            .consumer
            .position()
            .map_err(|e| ReplayError::Kafka(format!("position: {e}")))?;
        for e in pos.elements_for_topic(&self.topic) {
            let p = e.partition();
            if let (Offset::Offset(o), Some(r)) = (e.offset(), self.ranges.get(&p)) {
                if o >= r.to && !self.partition_done(p) {
                    self.next.insert(p, r.to);
                }
            }
        }
        Ok(())
    }
}
