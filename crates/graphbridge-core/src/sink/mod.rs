//! Outputs. Every sink takes a whole batch of records and returns only once each one is durably
//! accepted (fsynced, broker-acknowledged) or fails; the pipeline's acknowledgement rule relies
//! on nothing else.

pub mod client_cert;
pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "nats")]
pub mod nats;
pub mod record;
pub mod stdout;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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

impl SinkError {
    /// What went wrong, without the retryable/permanent preamble.
    pub fn detail(&self) -> &str {
        match self {
            SinkError::Retryable(m) | SinkError::Permanent(m) => m,
        }
    }
}

#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// Durably accepts every record, or fails. Never returns early on partial success.
    async fn publish(&self, records: &[Record]) -> Result<(), SinkError>;
    /// Whether a publish is expected to succeed now (for `/readyz` and the start-up check), and
    /// if not, why: `Permanent` for a misconfiguration such as failed authentication or an
    /// untrusted certificate, `Retryable` for an outage.
    async fn ready(&self) -> Result<(), SinkError> {
        Ok(())
    }
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

/// The sink at start: a misconfiguration (authentication, TLS) stops the start with its cause;
/// an unreachable broker is logged and the process starts anyway (not ready, or spooling).
pub async fn check_at_start(sink: &dyn Sink) -> Result<(), SinkError> {
    refused_at_start(sink.kind(), sink.ready().await)
}

/// A start-up probe's answer for `what` (a sink, the Event Hubs source): a refusal stops the
/// start, an outage is logged and the process starts anyway.
pub fn refused_at_start(what: &str, probe: Result<(), SinkError>) -> Result<(), SinkError> {
    match probe {
        Err(e @ SinkError::Permanent(_)) => Err(e),
        Err(e) => {
            tracing::warn!(what, error = %e.detail(), "not reachable at start; starting anyway");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// Locks a `std` mutex of the sinks or the spool, recovering it if a thread panicked while
/// holding it: the one lock-poison policy of this crate's outputs (the key cache follows it too).
///
/// Why recover rather than panic: what these mutexes guard stays consistent whatever point a
/// panic interrupts. The spool's state and the Kafka batch acks are only read, or have fields
/// assigned and counters adjusted, with nothing in between that can panic; the file sink's
/// files are left by a panic mid-write as by a failed write, which it already survives (that
/// batch is not acknowledged). Panicking on poison instead would turn one failed thread into
/// every later request and the spool writer failing too. Durability does not rest on these
/// in-memory states but on what is fsynced or broker-acknowledged, which a panic cannot undo.
/// A mutex whose state a panic could leave half-updated must not use this.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// For a group-committing writer thread (the file sink's, the spool's): waits for the next
/// request, then takes every other one already queued, up to `max`. `None` once the queue is
/// closed and empty.
pub(crate) fn next_group<T>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    max: usize,
) -> Option<Vec<T>> {
    let mut group = vec![rx.blocking_recv()?];
    while group.len() < max {
        match rx.try_recv() {
            Ok(next) => group.push(next),
            Err(_) => break,
        }
    }
    Some(group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_recovered_with_its_state() {
        let m = Arc::new(Mutex::new(1));
        let poisoner = m.clone();
        let _ = std::thread::spawn(move || {
            let mut g = poisoner.lock().unwrap();
            *g = 2;
            panic!("poison the lock");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), 2);
    }
}
