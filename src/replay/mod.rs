//! `graphbridge replay`: re-publishes a range of a Kafka topic — by offsets or by times — to
//! another topic, NATS or a file, keeping keys, headers and event ids so consumers dedupe;
//! `--reprocess` rebuilds the events from the raw archive with the current code; and
//! `--reset-group` moves a consumer group's offsets as an explicit, separate action.
//!
//! `range` resolves what to read, `source` reads it without a consumer group, `item` and
//! `filter` decide what each record is and whether it goes, `reprocess` rebuilds events,
//! `target` publishes, `run` ties them together with `progress` and `stop`, `group` resets
//! a group, and `cli` is the verb.

pub mod cli;
pub mod filter;
pub mod group;
pub mod item;
pub mod progress;
pub mod range;
pub mod reprocess;
pub mod run;
pub mod source;
pub mod stop;
pub mod target;

pub use run::{run, Options, TargetSpec};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("topic {0} does not exist or has no partitions")]
    UnknownTopic(String),
    #[error("range: {0}")]
    Range(String),
    #[error("target: {0}")]
    Target(String),
    #[error("reprocess: {0}")]
    Reprocess(String),
    #[error("consumer group {0} has {1} active member(s): stop its consumers before resetting its offsets")]
    GroupActive(String, usize),
}
