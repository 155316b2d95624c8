//! One batch through the stages, and the acknowledgement rule — which lives here only:
//!
//! `Received → Authenticated → Decrypted → Event`, then the sink. The answer is `Accepted`
//! only when every item is durably accepted by the sink (an event, a lifecycle event, or a
//! dead letter for a permanent rejection). If that cannot happen within the ack budget the
//! batch is `Unavailable` and Graph retries; nothing is acknowledged that is not safe.

pub mod drain;

mod assemble;
mod authenticate;
mod error;
mod open;
mod outcome;
mod publish;
#[cfg(test)]
pub(crate) mod test_support;
mod workers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use serde_json::value::RawValue;

pub use assemble::BatchSummary;
pub use error::{BatchError, Unavailable};

use crate::auth::tokens::TokenVerifier;
use crate::auth::Authenticator;
use crate::crypto::keyring::Keyring;
use crate::graph::envelope::{ChangeNotification, Envelope};
use crate::sink::Sink;
use crate::spool::{Spool, SpooledBatch};
use crate::telemetry::Metrics;
use assemble::assemble;
use authenticate::{authenticate, AuthenticateOptions, AuthenticatedBatch};
use open::Opener;

pub struct Pipeline {
    /// The keys (swapped whole on hot reload), the unwrapped-key cache and the CPU budget.
    opener: Opener,
    auth: Authenticator,
    tokens: Option<Arc<TokenVerifier>>,
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    budget: Duration,
    /// Part of the budget a direct publish may use when the spool can take over after it.
    publish_budget: Duration,
    spool: Option<Arc<Spool>>,
    raw_archive: bool,
    max_items: usize,
    max_json_depth: usize,
    /// Lifecycle events, once durably accepted, also go here: the subscription controller
    /// running in the same process (file sink, no broker to carry them).
    lifecycle_tap: std::sync::OnceLock<tokio::sync::mpsc::Sender<crate::event::v1::LifecycleEvent>>,
}

pub struct PipelineOptions {
    pub budget: Duration,
    pub include_resource: bool,
    /// Also publish every authenticated item, still encrypted, to the raw stream.
    pub raw_archive: bool,
    /// Unwrapped keys remembered (0 = off).
    pub key_cache_entries: usize,
    /// Graph's validation tokens are required and checked by this verifier.
    pub tokens: Option<Arc<TokenVerifier>>,
    /// Request limits applied while parsing.
    pub max_items: usize,
    pub max_json_depth: usize,
    /// Where batches go that the sink cannot confirm in time (None: they get 503).
    pub spool: Option<Arc<Spool>>,
}

impl Pipeline {
    pub fn new(
        keyring: Arc<ArcSwap<Keyring>>,
        auth: Authenticator,
        sink: Arc<dyn Sink>,
        metrics: Arc<Metrics>,
        opts: PipelineOptions,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Pipeline {
            opener: Opener::new(
                keyring,
                opts.key_cache_entries,
                opts.include_resource,
                cores,
            ),
            auth,
            tokens: opts.tokens,
            sink,
            metrics,
            budget: opts.budget,
            // Leave the spool time for its fsync: a quarter of the budget, at most 500 ms.
            publish_budget: opts.budget - (opts.budget / 4).min(Duration::from_millis(500)),
            spool: opts.spool,
            raw_archive: opts.raw_archive,
            max_items: opts.max_items,
            max_json_depth: opts.max_json_depth,
            lifecycle_tap: std::sync::OnceLock::new(),
        }
    }

    /// Hands every accepted lifecycle event to `tx` as well (set once).
    pub fn tap_lifecycle(
        &self,
        tx: tokio::sync::mpsc::Sender<crate::event::v1::LifecycleEvent>,
    ) -> bool {
        self.lifecycle_tap.set(tx).is_ok()
    }

    pub fn sink(&self) -> &Arc<dyn Sink> {
        &self.sink
    }

    /// The keys in use now.
    pub fn keyring(&self) -> Arc<Keyring> {
        self.opener.keyring.load_full()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }

    pub fn spool(&self) -> Option<&Arc<Spool>> {
        self.spool.as_ref()
    }

    pub fn tokens(&self) -> Option<&Arc<TokenVerifier>> {
        self.tokens.as_ref()
    }

    /// Processes one request body. The whole call is bounded by the ack budget. The items
    /// borrow from `body`; the crypto workers share its buffer instead of copies.
    pub async fn process(&self, body: &Bytes) -> Result<BatchSummary, BatchError> {
        let started = Instant::now();
        let envelope = Envelope::parse_limited(body, self.max_json_depth, self.max_items)
            .inspect_err(|e| self.metrics.reject(e.reason()))?;
        let result = tokio::time::timeout(self.budget, self.accept(body, envelope)).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(Unavailable::Budget(self.budget).into()),
        };
        match &result {
            Ok(_) => self
                .metrics
                .ack_latency
                .observe(started.elapsed().as_secs_f64()),
            Err(e) => {
                if let BatchError::Token(t) = e {
                    self.metrics.reject(t.reason());
                }
                if let Some(reason) = e.unavailable_reason() {
                    self.metrics.unavailable(reason);
                    tracing::warn!(error = %e, "batch not accepted; Graph will retry");
                } else {
                    tracing::warn!(error = %e, "request refused: not proven to come from Graph");
                }
            }
        }
        result
    }

    async fn accept(
        &self,
        body: &Bytes,
        envelope: Envelope<'_>,
    ) -> Result<BatchSummary, BatchError> {
        let received_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let items = &envelope.value[..];
        let parsed = parse_items(items);
        self.metrics.received.inc_by(parsed.len() as u64);

        // Proof of origin first, before any per-item work: a forged request reaches neither
        // the decryptor, nor the spool, nor the dead-letter stream.
        if let Some(verifier) = &self.tokens {
            let tenants = parsed
                .iter()
                .filter_map(|item| item.as_ref().ok())
                .filter(|n| n.encrypted_content.is_some())
                .map(|n| n.tenant_id.to_ascii_lowercase())
                .collect();
            let now = chrono::Utc::now().timestamp();
            verifier
                .check_request(envelope.validation_tokens.as_deref(), &tenants, now)
                .await?;
        }

        let Some(spool) = &self.spool else {
            return self.deliver(body, items, parsed, &received_at).await;
        };
        // Batches already waiting go first: queue behind them, which also answers at once
        // instead of waiting out the budget against a broker known to be down.
        if spool.backlog() {
            return self.spool_batch(spool, items, received_at).await;
        }
        let attempt = self.deliver(body, items, parsed, &received_at);
        match tokio::time::timeout(self.publish_budget, attempt).await {
            Ok(Ok(summary)) => Ok(summary),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "sink did not confirm; spooling the batch");
                self.spool_batch(spool, items, received_at).await
            }
            Err(_) => {
                tracing::warn!(
                    budget_ms = self.publish_budget.as_millis() as u64,
                    "sink did not confirm in time; spooling the batch"
                );
                self.spool_batch(spool, items, received_at).await
            }
        }
    }

    /// Appends a batch to the spool; it counts as accepted once fsynced.
    async fn spool_batch(
        &self,
        spool: &Spool,
        items: &[&RawValue],
        received_at: String,
    ) -> Result<BatchSummary, BatchError> {
        let batch = SpooledBatch {
            received_at,
            items: items.iter().map(|raw| (*raw).to_owned()).collect(),
        };
        spool.append(&batch).await.map_err(Unavailable::Spool)?;
        Ok(BatchSummary {
            spooled: batch.items.len(),
            ..Default::default()
        })
    }

    /// Publishes a spooled batch (for the drainer): the same stages as a fresh one, without
    /// the budget, the token check (done before it was spooled) or the spool.
    pub async fn deliver_spooled(&self, batch: SpooledBatch) -> Result<BatchSummary, BatchError> {
        let items: Vec<&RawValue> = batch.items.iter().map(|raw| &**raw).collect();
        let parsed = parse_items(&items);
        // Each spooled item is its own allocation: the workers get copies.
        self.deliver(&Bytes::new(), &items, parsed, &batch.received_at)
            .await
    }

    /// Authenticates, decrypts, normalizes and publishes the items of one batch: the steps
    /// each in its file, the records in item order (raw archive last). `body` holds the items
    /// (see [`Opener::open_into`]).
    async fn deliver<'a>(
        &self,
        body: &Bytes,
        items: &[&'a RawValue],
        parsed: Vec<Result<ChangeNotification<'a>, serde_json::Error>>,
        received_at: &str,
    ) -> Result<BatchSummary, BatchError> {
        let opts = AuthenticateOptions {
            raw_archive: self.raw_archive,
            tap_lifecycle: self.lifecycle_tap.get().is_some(),
        };
        let AuthenticatedBatch {
            mut slots,
            raw_records,
            to_open,
            tapped,
        } = authenticate(&self.auth, items, parsed, received_at, opts);
        self.opener
            .open_into(body, items, &mut slots, to_open, received_at)
            .await?;
        let (records, summary) = assemble(slots, raw_records);
        self.publish(&records, summary, tapped).await
    }
}

fn parse_items<'a>(
    items: &[&'a RawValue],
) -> Vec<Result<ChangeNotification<'a>, serde_json::Error>> {
    items
        .iter()
        .map(|raw| ChangeNotification::parse(raw))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::sink::Stream;

    #[tokio::test]
    async fn a_failing_sink_answers_unavailable_and_graph_retries() {
        for (permanent, reason) in [(false, "sink_retryable"), (true, "sink_permanent")] {
            let sink = FakeSink::failing(permanent);
            let p = pipeline(sink.clone(), false);
            let err = p.process(&body(&[&synthetic_item()])).await.unwrap_err();
            assert!(err.graph_retries(), "{err}");
            assert_eq!(err.unavailable_reason(), Some(reason));
            assert!(err.to_string().starts_with("not accepted: sink "), "{err}");
            assert_eq!(sink.calls(), 1);
            let m = p.metrics().render();
            let line = format!("graphbridge_unavailable_total{{reason=\"{reason}\"}} 1\n");
            assert!(m.contains(&line), "{m}");
            assert!(m.contains("graphbridge_accepted_total 0\n"), "{m}");
        }
    }

    #[tokio::test]
    async fn bad_items_are_accepted_as_dead_letters_with_their_reasons_in_item_order() {
        let sink = FakeSink::ok();
        let p = pipeline(sink.clone(), false);
        let good = synthetic_item();
        let items = [
            &*with_client_state(&good, Some("forged")),
            &*raw(r#"{"subscriptionId": 7}"#),
            &*tampered_item(),
            &*good,
            &*lifecycle_item("missed"),
        ];
        let summary = p.process(&body(&items)).await.unwrap();
        assert_eq!(
            summary.rejected,
            ["client_state", "malformed_item", "signature_mismatch"]
        );
        assert_eq!(
            (summary.events, summary.lifecycle, summary.spooled),
            (1, 1, 0)
        );
        use Stream::*;
        assert_eq!(
            sink.streams(),
            [DeadLetter, DeadLetter, DeadLetter, ChatMessages, Lifecycle]
        );
        let m = p.metrics().render();
        assert!(m.contains("graphbridge_received_total 5\n"), "{m}");
        assert!(m.contains("graphbridge_accepted_total 2\n"), "{m}");
        assert!(m.contains("graphbridge_rejected_total{reason=\"signature_mismatch\"} 1\n"));
        assert!(!m.contains("graphbridge_unavailable_total{"), "{m}");
    }

    #[tokio::test]
    async fn the_raw_archive_comes_after_the_items() {
        let sink = FakeSink::ok();
        let p = pipeline(sink.clone(), true);
        let good = synthetic_item();
        let items = [&*good, &*lifecycle_item("missed"), &*good];
        let summary = p.process(&body(&items)).await.unwrap();
        assert_eq!(summary.events, 2);
        use Stream::*;
        assert_eq!(
            sink.streams(),
            [ChatMessages, Lifecycle, ChatMessages, Raw, Raw]
        );
    }

    #[tokio::test]
    async fn a_body_that_is_not_an_envelope_is_a_bad_request_and_reaches_no_sink() {
        let sink = FakeSink::ok();
        let p = pipeline(sink.clone(), false);
        let err = p
            .process(&Bytes::from_static(b"{not json"))
            .await
            .unwrap_err();
        assert!(matches!(err, BatchError::BadRequest(_)), "{err}");
        assert!(!err.graph_retries());
        assert_eq!(sink.calls(), 0);
    }

    #[tokio::test]
    async fn a_spooled_batch_goes_through_the_same_steps() {
        let sink = FakeSink::ok();
        let p = pipeline(sink.clone(), false);
        let batch = SpooledBatch {
            received_at: RECEIVED_AT.into(),
            items: vec![tampered_item(), synthetic_item()],
        };
        let summary = p.deliver_spooled(batch).await.unwrap();
        assert_eq!(summary.rejected, ["signature_mismatch"]);
        assert_eq!(summary.events, 1);
        assert_eq!(sink.streams(), [Stream::DeadLetter, Stream::ChatMessages]);
    }

    #[tokio::test]
    async fn with_a_spool_a_failing_sink_spools_and_a_closed_spool_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let spool = Spool::open(dir.path(), 1 << 20, metrics.clone()).unwrap();
        let sink = FakeSink::failing(false);
        let p = pipeline_with(sink.clone(), false, Some(spool.clone()), metrics);
        let items = [&*synthetic_item(), &*tampered_item()];
        let summary = p.process(&body(&items)).await.unwrap();
        assert_eq!(summary.spooled, 2);
        assert!(summary.rejected.is_empty(), "opened only when drained");
        assert_eq!(sink.calls(), 1);

        spool.close();
        let err = p.process(&body(&items)).await.unwrap_err();
        assert_eq!(err.unavailable_reason(), Some("spool"));
        assert_eq!(err.to_string(), "not accepted: spool closed");
        let m = p.metrics().render();
        assert!(
            m.contains("graphbridge_unavailable_total{reason=\"spool\"} 1\n"),
            "{m}"
        );
    }
}
