//! Outputs. Every sink takes a whole batch of records and returns only once each one is durably
//! accepted (fsynced, broker-acknowledged) or fails; the pipeline's acknowledgement rule relies
//! on nothing else.

pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "nats")]
pub mod nats;
pub mod record;
pub mod stdout;

use std::sync::Arc;

pub use record::{Record, Stream};

use crate::config::{SinkConfig, SinkKind};

/// How a publish failed, which decides what Graph is told.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Try again later (broker down, timeout, disk busy): Graph gets 503 and retries.
    #[error("sink temporarily unavailable: {0}")]
    Retryable(String),
    /// Configuration or authorization problem that retrying will not fix.
    #[error("sink rejected the batch: {0}")]
    Permanent(String),
}

#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// Durably accepts every record, or fails. Never returns early on partial success.
    async fn publish(&self, records: &[Record]) -> Result<(), SinkError>;
    /// Whether a publish is expected to succeed now (for `/readyz`).
    async fn ready(&self) -> bool;
    /// Metric label: `file`, `stdout`, `kafka`, `nats`.
    fn kind(&self) -> &'static str;
    /// Flushes whatever is buffered; called on shutdown.
    async fn close(&self) {}
}

/// Builds the configured sink, connecting to brokers where needed.
pub async fn build(cfg: &SinkConfig) -> Result<Arc<dyn Sink>, SinkError> {
    Ok(match cfg.kind {
        SinkKind::File => Arc::new(file::FileSink::open(&cfg.file)?),
        SinkKind::Stdout => Arc::new(stdout::StdoutSink),
        #[cfg(feature = "kafka")]
        SinkKind::Kafka => Arc::new(kafka::KafkaSink::new(&cfg.kafka)?),
        #[cfg(feature = "nats")]
        SinkKind::Nats => Arc::new(nats::NatsSink::connect(&cfg.nats).await?),
        #[allow(unreachable_patterns)] // with every broker built in
        kind => return Err(SinkError::Permanent(kind.not_built())),
    })
}
