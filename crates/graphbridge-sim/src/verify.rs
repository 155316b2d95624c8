//! End-to-end verification: read back what the bridge published and check that every
//! acknowledged item arrived exactly once by event id (after removing duplicates, as a consumer
//! does) and that no rejected item arrived.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use anyhow::Context;
#[cfg(feature = "kafka")]
use graphbridge_core::sink::kafka::KafkaSink;
#[cfg(feature = "kafka")]
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    Message, Offset, TopicPartitionList,
};
use serde::Serialize;
#[cfg(feature = "kafka")]
use std::time::Duration;

use super::workload::Expect;
use graphbridge_core::config::{KafkaConfig, NatsConfig};

pub enum Target {
    File(PathBuf),
    Kafka(KafkaConfig),
    Nats(NatsConfig),
}

#[derive(Debug, Default, Serialize)]
pub struct Verification {
    /// Acknowledged items that must be present.
    pub expected: usize,
    pub found: usize,
    pub missing: usize,
    /// Extra copies of present events (removed by consumer dedupe).
    pub duplicates: usize,
    /// Extra copies of events whose batch was sent once and acknowledged directly: at-least-once
    /// delivery explains none of them, so they point at a bug.
    pub unexplained_duplicates: usize,
    /// Acknowledged-but-rejected items that must be absent.
    pub rejected_expected_absent: usize,
    /// Rejected items that were published anyway.
    pub forbidden_found: usize,
    pub passed: bool,
}

/// Counts of event ids in the target's message streams.
async fn event_ids(target: &Target) -> anyhow::Result<HashMap<String, usize>> {
    let mut counts = HashMap::new();
    match target {
        Target::File(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value =
                    serde_json::from_str(line).context("event line is not JSON")?;
                if let Some(id) = v["id"].as_str() {
                    *counts.entry(id.to_string()).or_default() += 1;
                }
            }
        }
        Target::Kafka(cfg) => {
            let cfg = cfg.clone();
            counts = tokio::task::spawn_blocking(move || kafka_ids(&cfg)).await??;
        }
        Target::Nats(cfg) => counts = nats_ids(cfg).await?,
    }
    Ok(counts)
}

/// Counts of the `Nats-Msg-Id` headers of every message in the stream.
#[cfg(feature = "nats")]
async fn nats_ids(cfg: &NatsConfig) -> anyhow::Result<HashMap<String, usize>> {
    let mut counts = HashMap::new();
    let client = async_nats::connect(&cfg.url).await?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(&cfg.stream).await?;
    let last = stream.info().await?.state.last_sequence;
    let first = stream.info().await?.state.first_sequence;
    for seq in first.max(1)..=last {
        let Ok(m) = stream.get_raw_message(seq).await else {
            continue;
        };
        if let Some(id) = m.headers.get(async_nats::header::NATS_MESSAGE_ID) {
            *counts.entry(id.to_string()).or_default() += 1;
        }
    }
    Ok(counts)
}

#[cfg(not(feature = "nats"))]
async fn nats_ids(_: &NatsConfig) -> anyhow::Result<HashMap<String, usize>> {
    anyhow::bail!("this build has no NATS support (cargo feature `nats`)")
}

#[cfg(not(feature = "kafka"))]
fn kafka_ids(_: &KafkaConfig) -> anyhow::Result<HashMap<String, usize>> {
    anyhow::bail!("this build has no Kafka support (cargo feature `kafka`)")
}

/// Reads the channel and chat topics from the start up to their current high watermarks:
/// every event acknowledged without spooling is below them, so the read is complete without
/// waiting (a spooled one may not be yet: the caller checks again).
#[cfg(feature = "kafka")]
fn kafka_ids(cfg: &KafkaConfig) -> anyhow::Result<HashMap<String, usize>> {
    let consumer: BaseConsumer = KafkaSink::consumer_config(cfg)
        .set("group.id", "graphbridge-simulate-verify")
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let mut tpl = TopicPartitionList::new();
    let mut remaining = HashMap::new();
    for topic in [&cfg.topics.channel_messages, &cfg.topics.chat_messages] {
        let md = consumer.fetch_metadata(Some(topic), timeout)?;
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            if high > low {
                tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
                remaining.insert((topic.clone(), p.id()), high);
            }
        }
    }
    consumer.assign(&tpl)?;
    let mut counts = HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !remaining.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "kafka read did not reach the high watermarks"
        );
        let Some(msg) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let msg = msg?;
        let key = (msg.topic().to_string(), msg.partition());
        if let Some(high) = remaining.get(&key) {
            if msg.offset() + 1 >= *high {
                remaining.remove(&key);
            }
        }
        if let Some(headers) = msg.headers() {
            for h in rdkafka::message::Headers::iter(headers) {
                if h.key == "ce_id" {
                    let id = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
                    *counts.entry(id).or_default() += 1;
                }
            }
        }
    }
    Ok(counts)
}

/// Checks the target against the acknowledged items; `may_repeat` names the events that
/// at-least-once delivery may have published more than once (see `Outcomes::may_repeat`).
pub async fn verify(
    target: &Target,
    acked: &[Expect],
    may_repeat: &HashSet<String>,
) -> anyhow::Result<Verification> {
    let counts = event_ids(target).await?;
    let mut v = Verification::default();
    for e in acked {
        match e {
            Expect::Event(id) => {
                v.expected += 1;
                match counts.get(id) {
                    Some(n) => {
                        v.found += 1;
                        v.duplicates += n - 1;
                        if !may_repeat.contains(id) {
                            v.unexplained_duplicates += n - 1;
                        }
                    }
                    None => v.missing += 1,
                }
            }
            Expect::Rejected(_, id) => {
                v.rejected_expected_absent += 1;
                if counts.contains_key(id) {
                    v.forbidden_found += 1;
                }
            }
        }
    }
    v.passed = v.missing == 0 && v.forbidden_found == 0;
    Ok(v)
}
