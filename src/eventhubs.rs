//! Graph's notifications from Azure Event Hubs (`graphbridge serve --source eventhubs`). Graph
//! writes one notification collection (`{"value": [...], "validationTokens": [...]}`) per event;
//! each goes through the same pipeline as a webhook POST, and the event's offset is committed
//! only once the pipeline accepted it durably: the offset commit stands in for the 202. What the
//! pipeline would answer 400 or 401/403 to (not a collection, a forged or expired token) has
//! nobody to answer here, so it becomes a dead letter with the reason instead of stopping the
//! partition; what it would answer 503 to is retried. Graph's reachability test, the first event
//! of a new subscription, is skipped.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio::sync::watch;

use graphbridge_core::config::eventhubs::EventHubsConfig;
use graphbridge_core::event::deadletter::DeadLetter;
use graphbridge_core::pipeline::{BatchError, Pipeline};
use graphbridge_core::server::AppState;
use graphbridge_core::server::Health;
use graphbridge_core::sink::kafka::Reporting;
use graphbridge_core::sink::Record;
use graphbridge_core::telemetry::Metrics;

/// The hub's consumer; its context keeps the last connection failure (see [`Reporting`]).
pub type HubConsumer = StreamConsumer<Reporting>;

/// The `changeType` of the event Graph writes to check that it can reach the hub.
const VALIDATION_PREFIX: &str = "Validation: Testing client application reachability";
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Accepted,
    /// Graph's reachability test.
    Validation,
    /// Refused for good, with the reason; in the dead-letter stream.
    DeadLetter(&'static str),
    /// Not accepted now (sink or spool unavailable): read again.
    Retry(String),
}

/// Whether `body` is Graph's reachability test: every item's `changeType` starts with it.
pub fn is_validation(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let Some(items) = v["value"].as_array() else {
        return false;
    };
    !items.is_empty()
        && items.iter().all(|i| {
            i["changeType"]
                .as_str()
                .is_some_and(|c| c.starts_with(VALIDATION_PREFIX))
        })
}

/// The whole event as a dead-letter item: JSON as read with every `clientState` redacted, or
/// the text of what is not JSON.
fn dead_letter(body: &[u8], reason: &'static str, detail: String) -> DeadLetter {
    let mut v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    if let Some(items) = v.get_mut("value").and_then(Value::as_array_mut) {
        for item in items {
            if let Some(cs) = item.get_mut("clientState") {
                *cs = Value::String("<redacted>".into());
            }
        }
    }
    let raw = serde_json::value::to_raw_value(&v).expect("JSON serializes");
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    DeadLetter::new(&raw, reason, detail, &now)
}

/// Processes one event through the pipeline.
pub async fn handle(pipeline: &Pipeline, body: &[u8]) -> Handled {
    if is_validation(body) {
        return Handled::Validation;
    }
    // One copy of the event's body; the crypto workers share it instead of per-item copies.
    let shared = bytes::Bytes::copy_from_slice(body);
    let (reason, detail) = match pipeline.process(&shared).await {
        Ok(_) => return Handled::Accepted,
        Err(e) if e.graph_retries() => return Handled::Retry(e.to_string()),
        Err(BatchError::BadRequest(e)) => (e.reason(), e.to_string()),
        Err(BatchError::Token(t)) => (t.reason(), t.to_string()),
        Err(e) => return Handled::Retry(e.to_string()),
    };
    let record = Record::dead_letter(&dead_letter(body, reason, detail));
    match pipeline.sink().publish(&[record]).await {
        Ok(()) => Handled::DeadLetter(reason),
        Err(e) => Handled::Retry(format!("dead letter not published: {e}")),
    }
}

/// The hub's client settings: the connection string as Event Hubs' Kafka endpoint wants it,
/// then the configured properties; offsets committed by hand.
fn client_config(cfg: &EventHubsConfig) -> rdkafka::ClientConfig {
    graphbridge_core::sink::kafka::KafkaSink::eventhubs_config(
        cfg,
        &[
            ("group.id", &cfg.consumer_group),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "10000"),
        ],
    )
}

/// The hub's consumer, subscribed.
pub fn consumer(cfg: &EventHubsConfig) -> Result<HubConsumer, String> {
    let consumer: HubConsumer = client_config(cfg)
        .create_with_context(Reporting::new(&cfg.brokers))
        .map_err(|e| format!("eventhubs consumer: {e}"))?;
    consumer
        .subscribe(&[&cfg.topic])
        .map_err(|e| format!("eventhubs subscribe {}: {e}", cfg.topic))?;
    Ok(consumer)
}

/// The hub at start: wrong credentials or an untrusted certificate stop the start with the
/// cause; an unreachable namespace is logged and the consumer keeps trying. A client of its own
/// (not subscribed, so polling it cannot take an event from the real consumer) asks for the
/// hub's metadata and is then polled, which hands librdkafka's connection failures to its
/// context.
pub async fn check_at_start(cfg: &EventHubsConfig) -> Result<(), String> {
    let probe: BaseConsumer<Reporting> = client_config(cfg)
        .create_with_context(Reporting::new(&cfg.brokers))
        .map_err(|e| format!("eventhubs consumer: {e}"))?;
    let topic = cfg.topic.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        match probe.fetch_metadata(Some(&topic), Duration::from_secs(5)) {
            Ok(_) => Ok(()),
            Err(e) => {
                for _ in 0..5 {
                    let _ = probe.poll(Duration::from_millis(100));
                }
                Err(probe.context().explain(&e))
            }
        }
    })
    .await
    .map_err(|e| format!("eventhubs probe: {e}"))?;
    graphbridge_core::sink::refused_at_start("eventhubs", outcome)
        .map_err(|e| format!("eventhubs: {}", e.detail()))
}

/// `serve --source eventhubs`'s readiness: the pipeline's, and not while the hub refuses us
/// (authentication, certificates) since the last failure the consumer saw.
pub struct HubHealth {
    pub state: Arc<AppState>,
    pub consumer: Arc<HubConsumer>,
}

#[async_trait::async_trait]
impl Health for HubHealth {
    async fn ready(&self) -> Result<(), String> {
        self.state.ready().await?;
        match self.consumer.context().recent_refusal() {
            Some(why) => Err(format!("event hub refuses the consumer: {why}")),
            None => Ok(()),
        }
    }

    fn metrics(&self) -> String {
        Health::metrics(&*self.state)
    }
}

/// Reads the hub until `stop` turns true. Up to `window` events are processed at once (the
/// pipeline decrypts on the crypto workers and waits on the broker; one at a time left the core
/// idle during those waits), and they complete and are committed in the order they were read,
/// so an offset is committed only once it and every event before it on its partition was
/// accepted, skipped or dead-lettered. One that must be retried is processed again (after a
/// backoff) before anything behind it is committed.
pub async fn run(
    state: Arc<AppState>,
    consumer: Arc<HubConsumer>,
    window: usize,
    mut stop: watch::Receiver<bool>,
) {
    let pipeline = &state.pipeline;
    let metrics = pipeline.metrics().clone();
    let mut in_flight = FuturesOrdered::new();
    let mut committed = TopicPartitionList::new();
    let mut reading = true;
    let stopping = stop.clone();
    loop {
        tokio::select! {
            biased;
            Some((m, done)) = in_flight.next(), if !in_flight.is_empty() => {
                let done: bool = done; // (the futures' type is only known further down)
                if !done {
                    break; // stopped while retrying: nothing from here on is committed
                }
                commit(&consumer, &m, &mut committed);
            }
            _ = stop.wait_for(|s| *s), if reading => reading = false,
            m = consumer.recv(), if reading && in_flight.len() < window.max(1) => match m {
                Ok(m) => in_flight.push_back(process(pipeline, &metrics, m, stopping.clone())),
                Err(e) => {
                    tracing::warn!(error = %e, "eventhubs: consumer");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            else => break,
        }
    }
    // What the asynchronous commits may not have sent yet, synchronously before leaving.
    if committed.count() > 0 {
        if let Err(e) = consumer.commit(&committed, CommitMode::Sync) {
            tracing::warn!(error = %e, "eventhubs: final commit failed; those events will be read again");
        }
    }
}

/// Commits `m` (its offset + 1) and remembers it for the final synchronous commit. Async: a
/// commit lost to a crash re-reads the event, whose ids dedupe downstream.
fn commit(consumer: &HubConsumer, m: &BorrowedMessage<'_>, committed: &mut TopicPartitionList) {
    if let Err(e) = consumer.commit_message(m, CommitMode::Async) {
        tracing::warn!(error = %e, "eventhubs: commit failed; the event will be read again");
    }
    let next = Offset::Offset(m.offset() + 1);
    if committed
        .set_partition_offset(m.topic(), m.partition(), next)
        .is_err()
    {
        let _ = committed.add_partition_offset(m.topic(), m.partition(), next);
    }
}

/// One event through the pipeline, retried until it is accepted, skipped or dead-lettered;
/// `false` if `stop` came first (then it is not committed).
async fn process<'a>(
    pipeline: &Pipeline,
    metrics: &Metrics,
    m: BorrowedMessage<'a>,
    mut stop: watch::Receiver<bool>,
) -> (BorrowedMessage<'a>, bool) {
    let body = m.payload().unwrap_or_default();
    let mut backoff = Duration::from_millis(100);
    loop {
        match handle(pipeline, body).await {
            Handled::Accepted => metrics.eventhubs_event("accepted"),
            Handled::Validation => {
                tracing::info!(
                    partition = m.partition(),
                    offset = m.offset(),
                    "eventhubs: Graph's validation event skipped"
                );
                metrics.eventhubs_event("validation");
            }
            Handled::DeadLetter(reason) => {
                tracing::warn!(
                    reason,
                    partition = m.partition(),
                    offset = m.offset(),
                    "eventhubs: event dead-lettered"
                );
                metrics.eventhubs_event("deadletter");
            }
            Handled::Retry(e) => {
                metrics.eventhubs_event("retried");
                tracing::warn!(error = %e, retry_in = ?backoff, "eventhubs: event not accepted; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    // Not committed: the next reader of the partition takes it.
                    _ = stop.wait_for(|s| *s) => return (m, false),
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        }
        return (m, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphs_reachability_test_is_recognised() {
        let v = br#"{"value":[{"subscriptionId":"NA","subscriptionExpirationDateTime":"NA","clientState":"NA","changeType":"Validation: Testing client application reachability for subscription Request-Id: 0f1d","resource":"NA","resourceData":{"@odata.type":"NA","@odata.id":"NA","id":"NA"}}]}"#;
        assert!(is_validation(v));
        assert!(!is_validation(br#"{"value":[{"changeType":"created"}]}"#));
        assert!(!is_validation(br#"{"value":[]}"#));
        assert!(!is_validation(b"not json"));
    }

    #[test]
    fn a_dead_letter_keeps_the_event_without_its_client_states() {
        let d = dead_letter(
            br#"{"value":[{"clientState":"s3cret","tenantId":"t"}]}"#,
            "token_missing",
            "x".into(),
        );
        assert_eq!(d.item["value"][0]["clientState"], "<redacted>");
        let d = dead_letter(b"\xffnot json", "bad_json", "x".into());
        assert!(d.item.as_str().unwrap().ends_with("not json"));
    }
}
