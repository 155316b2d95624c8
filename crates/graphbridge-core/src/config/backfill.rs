//! `[backfill]`: filling the gaps Graph leaves from its message APIs.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillConfig {
    /// Kafka consumer group / JetStream durable consumer reading `resync_required` events.
    pub consumer_group: String,
    /// Teams read for a tenant-wide channel subscription (`/teams/getAllMessages`); empty: every
    /// team of the tenant (`GET /teams`).
    #[serde(default)]
    pub teams: Vec<String>,
    /// Users whose chats are read for a tenant-wide chat subscription (`/chats/getAllMessages`,
    /// `GET /users/{id}/chats/getAllMessages`); Graph has no tenant-wide chat read.
    #[serde(default)]
    pub users: Vec<String>,
    /// Where to keep each channel's delta link (`/teams/{id}/channels/{id}/messages`
    /// subscriptions), so the next gap reads only what changed since; without it every such
    /// gap reads the channel whole.
    #[serde(default)]
    pub state_file: Option<std::path::PathBuf>,
}
