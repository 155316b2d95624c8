//! What a batch that is not accepted answers, and why: the cause keeps its source and its class
//! from the sink or spool up to the HTTP answer, the log line and the metric label.

use std::time::Duration;

use crate::auth::tokens::TokenError;
use crate::graph::envelope::EnvelopeError;
use crate::sink::SinkError;
use crate::spool::SpoolError;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The body is not a notification envelope: nothing of it is processed (400).
    #[error(transparent)]
    BadRequest(#[from] EnvelopeError),
    /// The request did not prove it came from Graph: nothing of it is processed or
    /// dead-lettered (401/403; 503 when the signing keys are unavailable).
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Durable acceptance did not happen within the budget: Graph must retry (503).
    #[error("not accepted: {0}")]
    Unavailable(#[from] Unavailable),
}

impl BatchError {
    /// Whether the answer is a 503 that Graph retries (as opposed to a refusal).
    pub fn graph_retries(&self) -> bool {
        self.unavailable_reason().is_some()
    }

    /// The `reason` label of `graphbridge_unavailable_total` for a 503 that Graph retries;
    /// `None` for refusals.
    pub fn unavailable_reason(&self) -> Option<&'static str> {
        match self {
            BatchError::Unavailable(u) => Some(u.reason()),
            BatchError::Token(TokenError::KeysUnavailable(_)) => Some("token_keys_unavailable"),
            BatchError::BadRequest(_) | BatchError::Token(_) => None,
        }
    }
}

/// Why durable acceptance did not happen. Each text keeps the words of its cause, which is
/// also the error's `source()`, so the class survives (retryable or permanent sink failure).
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The whole batch did not finish within the ack budget.
    #[error("ack budget of {} ms exceeded", .0.as_millis())]
    Budget(Duration),
    /// The sink did not confirm the records.
    #[error("{0}")]
    Sink(#[source] SinkError),
    /// The spool could not take the batch (full, i/o, closed).
    #[error("{0}")]
    Spool(#[source] SpoolError),
    /// A crypto worker opening items panicked or had stopped.
    #[error("decrypt task failed: {0}")]
    Task(#[source] super::workers::WorkerError),
}

impl Unavailable {
    /// Stable `reason` label of `graphbridge_unavailable_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Unavailable::Budget(_) => "ack_budget",
            Unavailable::Sink(SinkError::Retryable(_)) => "sink_retryable",
            Unavailable::Sink(SinkError::Permanent(_)) => "sink_permanent",
            Unavailable::Spool(_) => "spool",
            Unavailable::Task(_) => "task",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn texts_keep_todays_words_and_the_cause_stays_the_source() {
        let e = BatchError::from(Unavailable::Budget(Duration::from_millis(2000)));
        assert_eq!(
            e.to_string(),
            "not accepted: ack budget of 2000 ms exceeded"
        );
        assert_eq!(e.unavailable_reason(), Some("ack_budget"));

        let e = BatchError::from(Unavailable::Sink(SinkError::Retryable("kafka: x".into())));
        assert_eq!(
            e.to_string(),
            "not accepted: sink temporarily unavailable: kafka: x"
        );
        let cause = e.source().and_then(|u| u.source()).expect("sink error");
        assert!(matches!(
            cause.downcast_ref::<SinkError>(),
            Some(SinkError::Retryable(_))
        ));

        let e = BatchError::from(Unavailable::Spool(SpoolError::Full(42)));
        assert_eq!(e.to_string(), "not accepted: spool full (42 bytes waiting)");
        assert_eq!(e.unavailable_reason(), Some("spool"));
    }

    #[test]
    fn reasons_are_stable_labels_and_only_503s_have_one() {
        let permanent = Unavailable::Sink(SinkError::Permanent("nats: no stream".into()));
        assert_eq!(permanent.reason(), "sink_permanent");
        let retryable = Unavailable::Sink(SinkError::Retryable("nats: timed out".into()));
        assert_eq!(retryable.reason(), "sink_retryable");
        assert_eq!(Unavailable::Spool(SpoolError::Closed).reason(), "spool");
        let keys = BatchError::Token(TokenError::KeysUnavailable("down".into()));
        assert!(keys.graph_retries());
        assert_eq!(keys.unavailable_reason(), Some("token_keys_unavailable"));
        let refused = BatchError::BadRequest(EnvelopeError::TooManyItems(11, 10));
        assert!(!refused.graph_retries());
        assert_eq!(refused.unavailable_reason(), None);
    }
}
