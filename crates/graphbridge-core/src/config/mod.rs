//! Configuration: built-in commented defaults (`config/default.toml`, compiled in) →
//! `config/graphbridge.toml` or `--config FILE` → `GRAPHBRIDGE_` environment variables with
//! `__` between levels. Unknown keys are errors naming the key. Validation is pure and separate
//! from building any I/O.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize, Serializer};

pub use crate::secret::Secret;

pub mod backfill;
pub mod eventhubs;
pub mod subscriptions;
pub mod verdicts;

/// The compiled-in defaults, also the commented reference of every key.
pub const DEFAULT_TOML: &str = include_str!("../../../../config/default.toml");
/// Read when present and no `--config` is given.
pub const DEFAULT_PATH: &str = "config/graphbridge.toml";

/// Accepts `"x"` or `["x", "y"]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(Secret),
    Many(Vec<Secret>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<Secret> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub graph: GraphConfig,
    pub ack: AckConfig,
    pub sink: SinkConfig,
    pub spool: SpoolConfig,
    pub telemetry: TelemetryConfig,
    /// The subscription controller (`graphbridge subscriptions …`).
    pub subscriptions: crate::config::subscriptions::SubscriptionsConfig,
    /// Filling notification gaps from Graph's message APIs (`graphbridge backfill …`).
    pub backfill: crate::config::backfill::BackfillConfig,
    /// Applying DLP verdicts to Graph (`graphbridge verdicts …`).
    pub verdicts: crate::config::verdicts::VerdictsConfig,
    /// Graph's notifications from Azure Event Hubs instead of the webhook (`serve --source
    /// eventhubs`).
    pub eventhubs: crate::config::eventhubs::EventHubsConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Public listener for `/notifications` and `/lifecycle`.
    pub listen: SocketAddr,
    /// Admin listener for `/healthz`, `/readyz`, `/metrics`.
    pub admin_listen: SocketAddr,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Most notification items in one request (413 beyond).
    pub max_items: usize,
    /// Deepest JSON nesting accepted (400 beyond).
    pub max_json_depth: usize,
    /// Largest request head (request line + headers) accepted (431 beyond).
    pub max_header_bytes: usize,
    /// Time allowed to receive the request head; slower connections are closed (slowloris).
    pub header_read_timeout_ms: u64,
    /// Time allowed to receive the body (408 beyond).
    pub body_read_timeout_ms: u64,
    /// Open connections per listener; beyond, new connections wait in the kernel backlog.
    pub max_connections: usize,
    /// Requests processed at once; beyond, 503 + Retry-After at once instead of queueing.
    pub max_in_flight: usize,
    /// On shutdown, time for in-flight requests to finish.
    pub drain_timeout_ms: u64,
    /// On shutdown, time to keep serving with readiness red before the listener closes, so
    /// load balancers stop sending first.
    pub shutdown_delay_ms: u64,
    /// In-process TLS for the public listener (PEM files); absent = plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// Accepted `clientState` secrets.
    pub client_state: OneOrMany,
    /// File with more client states, one per line.
    #[serde(default)]
    pub client_state_file: Option<PathBuf>,
    /// Tenant allowlist; empty = any.
    pub tenants: Vec<String>,
    /// Our app ids: the audience of validation tokens.
    pub app_ids: Vec<String>,
    pub validation_tokens: ValidationTokensConfig,
    /// Private keys by certificate id.
    pub keys_dir: PathBuf,
    /// How often the keys directory is checked for added or removed keys (0 = never).
    pub keys_reload_interval_ms: u64,
    /// Default password for PKCS#12 files.
    #[serde(default)]
    pub keys_password: Option<Secret>,
    /// Put the decrypted chatMessage under `data.resource`.
    pub include_resource: bool,
    /// Unwrapped symmetric keys remembered by `dataKey` hash (0 = off).
    pub key_cache_entries: usize,
    /// Graph REST API base URL (the subscription controller).
    pub api_base: String,
    /// OAuth2 client credentials for the Graph API (the subscription controller).
    pub auth: crate::config::subscriptions::GraphAuthConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationTokensConfig {
    /// Reject requests with resource data unless Graph's validation tokens verify.
    pub required: bool,
    pub openid_config_url: String,
    pub clock_skew_s: u64,
    pub refresh_interval_s: u64,
    pub min_refresh_interval_s: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AckConfig {
    /// Time allowed for durable acceptance before answering 503.
    pub budget_ms: u64,
    /// `Retry-After` seconds on 503.
    pub retry_after_s: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Keep batches the sink cannot confirm in time in a local write-ahead log and answer 202.
    pub enabled: bool,
    /// Directory of the log's segments (a persistent volume in production).
    pub dir: PathBuf,
    /// Bytes of spooled, not yet published batches; beyond, 503 + Retry-After.
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    File,
    Stdout,
    Kafka,
    Nats,
}

impl SinkKind {
    /// The cargo feature a build needs for this sink, if any (`kafka`, `nats`).
    pub fn feature(self) -> Option<&'static str> {
        match self {
            SinkKind::File | SinkKind::Stdout => None,
            SinkKind::Kafka => Some("kafka"),
            SinkKind::Nats => Some("nats"),
        }
    }

    /// Whether this build can connect to the sink (its cargo feature was on).
    pub fn is_built(self) -> bool {
        match self {
            SinkKind::File | SinkKind::Stdout => true,
            SinkKind::Kafka => cfg!(feature = "kafka"),
            SinkKind::Nats => cfg!(feature = "nats"),
        }
    }

    /// Why this build cannot use the sink: for configurations naming a broker the build left out.
    pub fn not_built(self) -> String {
        // Only brokers can be left out, and each one's feature is named like its kind.
        let f = self.feature().unwrap_or_default();
        format!("sink.kind = \"{f}\": this graphbridge was built without the `{f}` cargo feature")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub kind: SinkKind,
    pub file: FileSinkConfig,
    pub kafka: KafkaConfig,
    pub nats: NatsConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    pub path: PathBuf,
    pub deadletter_path: PathBuf,
}

/// Names of the four streams, shared by Kafka topics and NATS subject templates.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamNames {
    pub channel_messages: String,
    pub chat_messages: String,
    pub lifecycle: String,
    pub deadletter: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topics: StreamNames,
    #[serde(default)]
    pub raw_topic: Option<String>,
    pub message_timeout_ms: u64,
    /// librdkafka properties passed through; values of keys naming a password or secret are
    /// redacted when printed.
    #[serde(serialize_with = "redact_properties")]
    pub properties: BTreeMap<String, String>,
    /// librdkafka's `sasl.password`, kept out of the properties so that it can come from the
    /// environment (`GRAPHBRIDGE_SINK__KAFKA__SASL_PASSWORD`) or from `sasl_password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_password: Option<Secret>,
    /// File holding `sasl.password` (a mounted Secret), read when the configuration is loaded.
    #[serde(default)]
    pub sasl_password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    pub url: String,
    pub stream: String,
    pub create_stream: bool,
    pub duplicate_window_s: u64,
    pub max_age_s: u64,
    pub subjects: StreamNames,
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and its key (PEM) for servers that verify clients (mTLS).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// User and password authentication; the password from the environment
    /// (`GRAPHBRIDGE_SINK__NATS__PASSWORD`) or from `password_file`.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    pub log_level: String,
    /// OTLP/HTTP (protobuf) collector base URL, e.g. `http://otel-collector:4318`; spans go to
    /// `<url>/v1/traces`. None: no trace export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
}

fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "key.pem", "jaas"]
        .iter()
        .any(|w| k.contains(w))
}

pub(crate) fn redact_properties<S: Serializer>(
    p: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let redacted: BTreeMap<&str, &str> = p
        .iter()
        .map(|(k, v)| {
            let v = if is_secret_property(k) {
                "<redacted>"
            } else {
                v.as_str()
            };
            (k.as_str(), v)
        })
        .collect();
    redacted.serialize(s)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration file {0} not found")]
    MissingFile(PathBuf),
    #[error("cannot read {0}: {1}")]
    Unreadable(PathBuf, std::io::Error),
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// Environment variables with the prefix that are not configuration keys: CLI options
/// (`GRAPHBRIDGE_CONFIG`, the simulator's `GRAPHBRIDGE_SIM_*`) and test settings.
const NON_CONFIG_ENV: &[&str] = &["config", "log", "cache", "run"];
const NON_CONFIG_ENV_PREFIXES: &[&str] = &["test_", "sim_"];

impl Config {
    /// The layered figment; `file` is `--config` when given.
    pub fn figment(file: Option<&Path>) -> Result<Figment, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        match file {
            Some(path) if !path.is_file() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => fig = fig.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_PATH).is_file() => {
                fig = fig.merge(Toml::file_exact(DEFAULT_PATH))
            }
            None => {}
        }
        let env = Env::prefixed("GRAPHBRIDGE_")
            .filter(|k| {
                let k = k.as_str().to_ascii_lowercase();
                !NON_CONFIG_ENV_PREFIXES.iter().any(|p| k.starts_with(p))
                    && !NON_CONFIG_ENV.contains(&k.as_str())
            })
            .split("__");
        Ok(fig.merge(env))
    }

    /// The built-in defaults alone, ignoring files and environment (for `demo` and tests).
    pub fn defaults() -> Self {
        Figment::from(Toml::string(DEFAULT_TOML))
            .extract()
            .expect("built-in defaults are valid")
    }

    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut cfg: Self = Self::figment(file)?
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        cfg.read_secret_files()?;
        Ok(cfg)
    }

    /// Reads the broker secrets that are given as files (mounted Secrets) into their fields,
    /// where a file wins over a value from the configuration or the environment. A missing
    /// file is an error now rather than an authentication failure later.
    pub fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        let read = |path: &Option<PathBuf>, into: &mut Option<Secret>| {
            if let Some(path) = path {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Unreadable(path.clone(), e))?;
                *into = Some(Secret::new(text.trim()));
            }
            Ok::<_, ConfigError>(())
        };
        read(
            &self.sink.kafka.sasl_password_file,
            &mut self.sink.kafka.sasl_password,
        )?;
        read(&self.sink.nats.password_file, &mut self.sink.nats.password)?;
        let hub = &mut self.eventhubs;
        read(&hub.connection_string_file, &mut hub.connection_string)
    }

    /// Every accepted client state: inline ones plus those from `client_state_file`.
    pub fn client_states(&self) -> Result<Vec<Secret>, ConfigError> {
        let mut all = self.graph.client_state.to_vec();
        if let Some(path) = &self.graph.client_state_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Unreadable(path.clone(), e))?;
            all.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(Secret::new),
            );
        }
        Ok(all)
    }

    /// Checks what `serve` needs, without touching the network. Lists every problem at once.
    pub fn validate_for_serve(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if !self.sink.kind.is_built() {
            problems.push(self.sink.kind.not_built());
        }
        match self.client_states() {
            Ok(states) if states.is_empty() => problems.push(
                "graph.client_state (or graph.client_state_file) must name at least one secret"
                    .into(),
            ),
            Ok(states)
                if states
                    .iter()
                    .any(|s| s.expose().is_empty() || s.expose().len() > 128) =>
            {
                problems.push("graph.client_state: each secret must be 1 to 128 characters".into())
            }
            Ok(_) => {}
            Err(e) => problems.push(e.to_string()),
        }
        if !self.graph.keys_dir.is_dir() {
            problems.push(format!(
                "graph.keys_dir {} does not exist or is not a directory",
                self.graph.keys_dir.display()
            ));
        }
        if self.graph.validation_tokens.required && self.graph.app_ids.is_empty() {
            problems.push(
                "graph.app_ids must list the app registration id(s) when graph.validation_tokens.required is on".into(),
            );
        }
        if self.ack.budget_ms == 0 || self.ack.budget_ms > 9_000 {
            problems.push("ack.budget_ms must be between 1 and 9000 (Graph's 10 s limit)".into());
        }
        if self.server.max_body_bytes < 1024 {
            problems.push("server.max_body_bytes must be at least 1024".into());
        }
        let s = &self.server;
        if s.max_items == 0
            || s.max_json_depth < 4
            || s.max_connections == 0
            || s.max_in_flight == 0
        {
            problems.push("server.max_items, max_connections, max_in_flight must be positive and max_json_depth at least 4".into());
        }
        if self.spool.enabled && self.spool.max_bytes < 64 << 10 {
            problems.push("spool.max_bytes must be at least 64 KiB".into());
        }
        if let Some(tls) = &s.tls {
            for (name, p) in [("cert", &tls.cert), ("key", &tls.key)] {
                if !p.is_file() {
                    problems.push(format!(
                        "server.tls.{name} {} is not a readable file",
                        p.display()
                    ));
                }
            }
        }
        match self.sink.kind {
            SinkKind::Kafka if self.sink.kafka.brokers.trim().is_empty() => {
                problems.push("sink.kafka.brokers is empty".into())
            }
            SinkKind::Nats if self.sink.nats.url.trim().is_empty() => {
                problems.push("sink.nats.url is empty".into())
            }
            _ => {}
        }
        if let Some(url) = &self.telemetry.otlp_endpoint {
            // The exporter's HTTP client has no TLS: a local collector forwards over TLS.
            if !url.starts_with("http://") || url.len() <= "http://".len() {
                problems.push(format!(
                    "telemetry.otlp_endpoint {url:?} must be an http:// URL (e.g. a collector agent at http://127.0.0.1:4318)"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_secrets_redact() {
        let mut cfg = Config::load(None).unwrap();
        cfg.graph.client_state = OneOrMany::One(Secret::new("s3cr3t-value"));
        cfg.sink
            .kafka
            .properties
            .insert("sasl.password".into(), "hunter2".into());
        let printed = cfg.to_redacted_toml();
        assert!(!printed.contains("s3cr3t-value") && !printed.contains("hunter2"));
        assert!(printed.contains("<redacted>"));
        assert!(!format!("{cfg:?}").contains("s3cr3t-value"));
    }
}
