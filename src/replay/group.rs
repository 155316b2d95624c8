//! `--reset-group GROUP --to-time T | --to-offset O`: moves a consumer group's committed
//! offsets on a topic, the explicit way to make a production consumer re-read (or skip) a range.
//! It is a separate action from replay, refuses while the group has members (their commits
//! would overwrite the reset, and the broker rejects ours anyway), and `--dry-run` prints the
//! current and new offsets without committing anything.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::range::{self, Bound, Position};
use super::source::consumer_config;
use super::ReplayError;
use graphbridge_core::config::KafkaConfig;

const TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Serialize)]
pub struct OffsetChange {
    pub partition: i32,
    /// The committed offset now (None: the group has none for this partition).
    pub current: Option<i64>,
    pub new: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupReset {
    pub group: String,
    pub topic: String,
    pub dry_run: bool,
    pub changes: Vec<OffsetChange>,
}

impl GroupReset {
    pub fn print_human(&self) {
        let verb = if self.dry_run { "would move" } else { "moved" };
        eprintln!("group {} on {}: {verb}", self.group, self.topic);
        for c in &self.changes {
            let cur = c.current.map_or("none".to_string(), |o| o.to_string());
            eprintln!("  partition {}: {cur} -> {}", c.partition, c.new);
        }
        if self.dry_run {
            eprintln!("dry run: nothing was committed");
        }
    }
}

/// Resets `group` on `topic` to `to`; blocking calls run off the reactor.
pub async fn reset(
    k: &KafkaConfig,
    topic: &str,
    group: &str,
    to: Bound,
    dry_run: bool,
) -> Result<GroupReset, ReplayError> {
    let mut cc = consumer_config(k);
    cc.set("group.id", group);
    let (topic, group) = (topic.to_string(), group.to_string());
    tokio::task::spawn_blocking(move || {
        // Never subscribes: the consumer only reads and commits offsets, it does not join.
        let consumer: BaseConsumer = cc
            .create()
            .map_err(|e| ReplayError::Kafka(format!("consumer: {e}")))?;
        let members = active_members(&consumer, &group)?;
        if members > 0 {
            return Err(ReplayError::GroupActive(group, members));
        }
        let marks = range::watermarks(&consumer, &topic)?;
        let targets = match &to {
            Bound::Time(t) => range::offsets_for_time(&consumer, &topic, &marks, *t)?,
            Bound::Offsets(spec) => {
                let all: Vec<_> = marks.keys().copied().collect();
                let mut out = std::collections::BTreeMap::new();
                for p in all {
                    let pos = match spec {
                        range::OffsetSpec::All(pos) => Some(*pos),
                        range::OffsetSpec::Partitions(m) => m.get(&p).copied(),
                    };
                    let (low, high) = marks[&p];
                    let o = match pos {
                        None => continue,
                        Some(Position::Offset(o)) => o.clamp(low, high),
                        Some(Position::Earliest) => low,
                        Some(Position::Latest) => high,
                    };
                    out.insert(p, o);
                }
                out
            }
        };
        let mut tpl = TopicPartitionList::new();
        for p in targets.keys() {
            tpl.add_partition(&topic, *p);
        }
        let committed = consumer
            .committed_offsets(tpl, TIMEOUT)
            .map_err(|e| ReplayError::Kafka(format!("committed offsets of {group}: {e}")))?;
        let mut changes = Vec::new();
        let mut commit = TopicPartitionList::new();
        for (p, new) in &targets {
            let current = committed
                .find_partition(&topic, *p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            changes.push(OffsetChange {
                partition: *p,
                current,
                new: *new,
            });
            commit
                .add_partition_offset(&topic, *p, Offset::Offset(*new))
                .map_err(|e| ReplayError::Kafka(e.to_string()))?;
        }
        if !dry_run {
            // A member that joined since the check makes the broker refuse this commit
            // (the group is no longer empty): the reset never races a running consumer.
            consumer
                .commit(&commit, CommitMode::Sync)
                .map_err(|e| ReplayError::Kafka(format!("commit for {group}: {e}")))?;
        }
        Ok(GroupReset {
            group,
            topic,
            dry_run,
            changes,
        })
    })
    .await
    .map_err(|e| ReplayError::Kafka(format!("reset task: {e}")))?
}

/// Members currently in `group` (0 for an empty or unknown group).
pub fn active_members(consumer: &BaseConsumer, group: &str) -> Result<usize, ReplayError> {
    let list = consumer
        .fetch_group_list(Some(group), TIMEOUT)
        .map_err(|e| ReplayError::Kafka(format!("describe group {group}: {e}")))?;
    Ok(list
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .map(|g| g.members().len())
        .sum())
}
