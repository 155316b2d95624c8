//! Why a Kafka cluster does not answer. librdkafka reports connection failures (refused,
//! authentication, TLS) through the client context's error callback, not through the request
//! that waits on them, and keeps retrying. [`Reporting`] remembers the last one so that the
//! start-up check and `/readyz` can name the broker and the cause, and logs each failure, the
//! same one again at most once a minute.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::super::{lock, SinkError};

/// How often the same failure is logged again while librdkafka keeps retrying.
const RELOG: Duration = Duration::from_secs(60);
/// A failure older than this no longer explains a probe that fails now.
const STALE: Duration = Duration::from_secs(120);

/// A client context that keeps (and logs) the last connection failure.
pub struct Reporting {
    /// `bootstrap.servers`, to name the cluster in messages.
    brokers: String,
    last: Mutex<Option<Failure>>,
}

struct Failure {
    code: RDKafkaErrorCode,
    reason: String,
    seen: Instant,
    logged: Instant,
}

impl Reporting {
    pub fn new(brokers: &str) -> Self {
        Reporting {
            brokers: brokers.to_string(),
            last: Mutex::new(None),
        }
    }

    /// librdkafka's error callback: remember and log (see the module's doc).
    pub fn error(&self, error: KafkaError, reason: &str) {
        self.record(&error, reason);
    }

    fn record(&self, error: &KafkaError, reason: &str) {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        let now = Instant::now();
        let mut last = lock(&self.last);
        let repeat = last
            .as_ref()
            .filter(|f| f.code == code && f.reason == reason && now - f.logged < RELOG);
        let logged = match repeat {
            Some(f) => f.logged,
            None => {
                let (permanent, cause) = cause(code, reason);
                if permanent {
                    tracing::error!(brokers = %self.brokers, reason, "kafka: {cause}");
                } else {
                    tracing::warn!(brokers = %self.brokers, reason, "kafka: {cause}");
                }
                now
            }
        };
        *last = Some(Failure {
            code,
            reason: reason.to_string(),
            seen: now,
            logged,
        });
    }

    /// The cluster answered: earlier failures explain nothing any more.
    pub fn clear(&self) {
        *lock(&self.last) = None;
    }

    /// The last failure if it is recent and a refusal (authentication, certificates), for a
    /// readiness probe of a client that makes no requests of its own (a consumer).
    pub fn recent_refusal(&self) -> Option<String> {
        match self.explain(&"") {
            SinkError::Permanent(why) => Some(why),
            SinkError::Retryable(_) => None,
        }
    }

    /// Why a request to the cluster failed with `error`: the last reported connection failure
    /// if there is a recent one (permanent for authentication and TLS failures), else `error`.
    pub fn explain(&self, error: &dyn std::fmt::Display) -> SinkError {
        let last = lock(&self.last);
        match last.as_ref().filter(|f| f.seen.elapsed() < STALE) {
            Some(f) => {
                let (permanent, cause) = cause(f.code, &f.reason);
                let text = format!("kafka {}: {cause}: {}", self.brokers, f.reason);
                if permanent {
                    SinkError::Permanent(text)
                } else {
                    SinkError::Retryable(text)
                }
            }
            None => SinkError::Retryable(format!("kafka {}: {error}", self.brokers)),
        }
    }
}

/// Whether a connection failure is a misconfiguration (retrying cannot help) and what it
/// means in words, from librdkafka's code and text.
fn cause(code: RDKafkaErrorCode, reason: &str) -> (bool, &'static str) {
    let r = reason.to_ascii_lowercase();
    if matches!(
        code,
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed
    ) {
        return (
            true,
            "authentication failed (check the SASL mechanism, user and password)",
        );
    }
    if r.contains("certificate verify failed") {
        return (
            true,
            "TLS: the broker's certificate is not trusted (unknown CA; check ssl.ca.location)",
        );
    }
    // With TLS 1.3 the broker's refusal of a client certificate arrives as an alert on the
    // first read, reported as a transport error, not an SSL one.
    if r.contains("alert certificate") || r.contains("alert bad certificate") {
        return (
            true,
            "TLS: the broker refused the client certificate (check ssl.certificate.location)",
        );
    }
    match code {
        RDKafkaErrorCode::SSL => (true, "TLS handshake failed"),
        _ => (false, "cluster not reachable"),
    }
}

impl ClientContext for Reporting {
    fn error(&self, error: KafkaError, reason: &str) {
        Reporting::error(self, error, reason);
    }
}

impl ConsumerContext for Reporting {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_and_tls_failures_are_permanent_and_named() {
        let r = Reporting::new("b1:9093");
        let sasl = "sasl_ssl://b1:9093/bootstrap: SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512";
        r.record(
            &KafkaError::ClientCreation(String::new()),
            "ignored: no code",
        );
        assert!(matches!(r.explain(&"timed out"), SinkError::Retryable(_)));
        r.record(&KafkaError::Global(RDKafkaErrorCode::Authentication), sasl);
        match r.explain(&"timed out") {
            SinkError::Permanent(m) => {
                assert!(m.starts_with("kafka b1:9093: authentication failed"), "{m}");
                assert!(m.contains("sasl_ssl://b1:9093/bootstrap"), "{m}");
            }
            e => panic!("{e}"),
        }
        r.record(
            &KafkaError::Global(RDKafkaErrorCode::SSL),
            "ssl://b1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed",
        );
        assert!(r.explain(&"x").to_string().contains("unknown CA"));
        r.record(
            &KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
            "ssl://b1:9093/bootstrap: Receive failed: error:0A000416:SSL routines::sslv3 alert certificate unknown: SSL alert number 46",
        );
        match r.explain(&"x") {
            SinkError::Permanent(m) => assert!(m.contains("refused the client certificate"), "{m}"),
            e => panic!("{e}"),
        }
        r.clear();
        assert_eq!(
            r.explain(&"timed out").to_string(),
            "sink temporarily unavailable: kafka b1:9093: timed out"
        );
    }
}
