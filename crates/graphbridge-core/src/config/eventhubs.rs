//! `[eventhubs]`: Graph's notifications read from Azure Event Hubs (`serve --source eventhubs`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventHubsConfig {
    /// The namespace's Kafka endpoint, `<namespace>.servicebus.windows.net:9093`.
    pub brokers: String,
    /// The event hub Graph delivers to (a Kafka topic on that endpoint).
    pub topic: String,
    /// Kafka consumer group: replicas share the hub's partitions.
    pub consumer_group: String,
    /// Events processed at once by one replica (committed in the order they were read).
    pub concurrency: usize,
    /// The namespace's (or hub's) connection string: SASL_SSL PLAIN with the user
    /// `$ConnectionString`, as Event Hubs' Kafka endpoint expects. From the environment
    /// (`GRAPHBRIDGE_EVENTHUBS__CONNECTION_STRING`) or `connection_string_file`; without
    /// either, the properties below decide the security settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_string: Option<Secret>,
    /// File holding the connection string (a mounted Secret), read when the configuration is
    /// loaded.
    #[serde(default)]
    pub connection_string_file: Option<PathBuf>,
    /// librdkafka consumer properties passed through (after the connection string's).
    #[serde(default, serialize_with = "super::redact_properties")]
    pub properties: BTreeMap<String, String>,
}
