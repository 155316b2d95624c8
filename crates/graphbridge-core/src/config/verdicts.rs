//! `[verdicts]`: applying DLP verdicts to Graph (`graphbridge verdicts run`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerdictsConfig {
    /// Kafka consumer group / JetStream durable consumer reading verdicts.
    pub consumer_group: String,
    /// Most PATCH calls per second to Graph, across tenants (0: no limit). Graph's own
    /// throttling (429 with `Retry-After`) is honoured on top of it.
    pub rate_per_second: f64,
    /// Longest wait between retries of a throttled or failed call, seconds.
    pub max_backoff_s: u64,
    pub kafka: VerdictStreams,
    pub nats: VerdictNats,
}

/// Kafka topics (or NATS subjects) of the verdict loop.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerdictStreams {
    /// Verdicts in, keyed by team or chat id.
    pub verdicts: String,
    /// Verdicts Graph refused for good (400, 403, 404) or that could not be read, with the reason.
    pub deadletter: String,
    /// One audit event per verdict: applied or failed, Graph's status, the latency.
    pub audit: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerdictNats {
    /// JetStream stream capturing the three subjects (created with `sink.nats.create_stream`).
    pub stream: String,
    #[serde(flatten)]
    pub subjects: VerdictStreams,
}
