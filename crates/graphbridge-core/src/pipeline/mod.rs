//! One batch through the stages, and the acknowledgement rule — which lives here only:
//!
//! `Received → Authenticated → Decrypted → Event`, then the sink. The answer is `Accepted`
//! only when every item is durably accepted by the sink (an event, a lifecycle event, or a
//! dead letter for a permanent rejection). If that cannot happen within the ack budget the
//! batch is `Unavailable` and Graph retries; nothing is acknowledged that is not safe.

pub mod drain;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use crate::auth::tokens::{TokenError, TokenVerifier};
use crate::auth::{Authenticated, Authenticator};
use crate::crypto::decrypt::decrypt_cached_with;
use crate::crypto::key_cache::{fingerprint, Digest, KeyCache};
use crate::crypto::keyring::Keyring;
use crate::event::deadletter::DeadLetter;
use crate::event::normalize::{self, message_resource};
use crate::graph::envelope::{ChangeNotification, Envelope, EnvelopeError};
use crate::sink::{Record, Sink, SinkError};
use crate::spool::{Spool, SpooledBatch};
use crate::telemetry::Metrics;
use arc_swap::ArcSwap;

/// Largest batch opened on the reactor thread when no item needs RSA (≈30 µs per item).
const INLINE_MAX_ITEMS: usize = 100;

/// What the caller is told about a batch that was accepted.
#[derive(Debug, Default, Serialize)]
pub struct BatchSummary {
    pub events: usize,
    pub lifecycle: usize,
    /// Reasons of the items that went to the dead-letter stream, in item order.
    pub rejected: Vec<&'static str>,
    /// Items kept in the spool because the sink could not confirm them in time: published
    /// (or dead-lettered) once it can.
    #[serde(skip_serializing_if = "is_zero")]
    pub spooled: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

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
    Unavailable(String),
}

impl BatchError {
    /// Whether the answer is a 503 that Graph retries (as opposed to a refusal).
    pub fn graph_retries(&self) -> bool {
        matches!(
            self,
            BatchError::Unavailable(_) | BatchError::Token(TokenError::KeysUnavailable(_))
        )
    }
}

pub struct Pipeline {
    /// Swapped whole when the keys directory changes (hot reload).
    keyring: Arc<ArcSwap<Keyring>>,
    key_cache: Arc<KeyCache>,
    auth: Authenticator,
    tokens: Option<Arc<TokenVerifier>>,
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    budget: Duration,
    /// Part of the budget a direct publish may use when the spool can take over after it.
    publish_budget: Duration,
    spool: Option<Arc<Spool>>,
    include_resource: bool,
    raw_archive: bool,
    max_items: usize,
    max_json_depth: usize,
    /// One permit per core: RSA work runs on blocking threads, never more at once than cores.
    cpu: Arc<Semaphore>,
    cores: usize,
    /// Lifecycle events, once durably accepted, also go here: the subscription controller
    /// running in the same process (file sink, no broker to carry them).
    lifecycle_tap: std::sync::OnceLock<tokio::sync::mpsc::Sender<crate::event::v1::LifecycleEvent>>,
}

/// What one item turned into, before publishing.
enum Outcome {
    Event(Record),
    Lifecycle(Record),
    Rejected(&'static str, Record),
}

fn reject(raw: &RawValue, reason: &'static str, detail: String, received_at: &str) -> Outcome {
    tracing::info!(reason, %detail, "item rejected");
    Outcome::Rejected(
        reason,
        Record::dead_letter(&DeadLetter::new(raw, reason, detail, received_at)),
    )
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
            keyring,
            key_cache: Arc::new(KeyCache::new(opts.key_cache_entries)),
            auth,
            tokens: opts.tokens,
            sink,
            metrics,
            budget: opts.budget,
            // Leave the spool time for its fsync: a quarter of the budget, at most 500 ms.
            publish_budget: opts.budget - (opts.budget / 4).min(Duration::from_millis(500)),
            spool: opts.spool,
            include_resource: opts.include_resource,
            raw_archive: opts.raw_archive,
            max_items: opts.max_items,
            max_json_depth: opts.max_json_depth,
            cpu: Arc::new(Semaphore::new(cores)),
            cores,
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
        self.keyring.load_full()
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

    /// Processes one request body. The whole call is bounded by the ack budget.
    pub async fn process(&self, body: &[u8]) -> Result<BatchSummary, BatchError> {
        let started = Instant::now();
        let envelope = Envelope::parse_limited(body, self.max_json_depth, self.max_items)
            .inspect_err(|e| self.metrics.reject(e.reason()))?;
        let result = tokio::time::timeout(self.budget, self.accept(envelope)).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(BatchError::Unavailable(format!(
                "ack budget of {} ms exceeded",
                self.budget.as_millis()
            ))),
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
                if e.graph_retries() {
                    self.metrics.unavailable.inc();
                    tracing::warn!(error = %e, "batch not accepted; Graph will retry");
                } else {
                    tracing::warn!(error = %e, "request refused: not proven to come from Graph");
                }
            }
        }
        result
    }

    async fn accept(&self, envelope: Envelope<'_>) -> Result<BatchSummary, BatchError> {
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
            return self.deliver(items, parsed, &received_at).await;
        };
        // Batches already waiting go first: queue behind them, which also answers at once
        // instead of waiting out the budget against a broker known to be down.
        if spool.backlog() {
            return self.spool_batch(spool, items, received_at).await;
        }
        let attempt = self.deliver(items, parsed, &received_at);
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
        spool
            .append(&batch)
            .await
            .map_err(|e| BatchError::Unavailable(e.to_string()))?;
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
        self.deliver(&items, parsed, &batch.received_at).await
    }

    /// Authenticates, decrypts, normalizes and publishes the items of one batch.
    async fn deliver<'a>(
        &self,
        items: &[&'a RawValue],
        parsed: Vec<Result<ChangeNotification<'a>, serde_json::Error>>,
        received_at: &str,
    ) -> Result<BatchSummary, BatchError> {
        let mut slots: Vec<Option<Outcome>> = Vec::with_capacity(items.len());
        let mut raw_records = Vec::new();
        let mut to_open = Vec::new();
        let mut tapped = Vec::new();

        // Cheap stages on the reactor: authenticate every item.
        for (i, item) in parsed.into_iter().enumerate() {
            let raw = items[i];
            let item = match item {
                Ok(item) => item,
                Err(e) => {
                    slots.push(Some(reject(
                        raw,
                        "malformed_item",
                        crate::graph::json_error(&e),
                        received_at,
                    )));
                    continue;
                }
            };
            let authenticated = match self.auth.authenticate(item) {
                Ok(a) => a,
                Err(e) => {
                    slots.push(Some(reject(raw, e.reason(), e.to_string(), received_at)));
                    continue;
                }
            };
            let n = authenticated.item();
            if n.is_lifecycle() {
                let event = normalize::lifecycle(n, received_at);
                if self.lifecycle_tap.get().is_some() {
                    tapped.push(event.clone());
                }
                slots.push(Some(Outcome::Lifecycle(Record::lifecycle(event))));
                continue;
            }
            if self.raw_archive {
                raw_records.push(raw_record(n, raw, received_at));
            }
            slots.push(None);
            to_open.push(ToOpen::new(i, authenticated));
        }

        // CPU stage. When a key must be unwrapped (RSA, ~1 ms) the work runs off the reactor,
        // the batch split into one chunk per core; the semaphore keeps concurrent batches from
        // running more chunks than cores. When every key is already unwrapped (cached) an item
        // costs tens of microseconds, less than handing it to other threads: a batch of up to
        // INLINE_MAX_ITEMS runs here (a few milliseconds at most).
        let batch_span = tracing::Span::current();
        if to_open.len() <= INLINE_MAX_ITEMS && to_open.iter().all(|t| !self.needs_rsa(t)) {
            let keyring = self.keyring.load();
            let ctx = OpenContext {
                keyring: &keyring,
                cache: &self.key_cache,
                received_at,
                include_resource: self.include_resource,
                batch_span: &batch_span,
            };
            for (index, opened) in ctx.open_all(std::mem::take(&mut to_open)) {
                slots[index] = Some(outcome(items[index], opened, received_at));
            }
        }
        let chunk = to_open.len().div_ceil(self.cores).max(1);
        let mut chunks = Vec::new();
        while !to_open.is_empty() {
            let rest = to_open.split_off(chunk.min(to_open.len()));
            // Other threads outlive this borrow of the request body: they get copies (the
            // RSA operation each item needs costs far more than the copy).
            let work: Vec<_> = std::mem::replace(&mut to_open, rest)
                .into_iter()
                .map(ToOpen::into_owned)
                .collect();
            let permit = self
                .cpu
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore never closed");
            let (keyring, cache) = (self.keyring.load_full(), self.key_cache.clone());
            let (include, at) = (self.include_resource, received_at.to_string());
            // Blocking threads do not inherit the batch's span: name it as the parent.
            let batch_span = batch_span.clone();
            chunks.push(tokio::task::spawn_blocking(move || {
                let _permit = permit;
                OpenContext {
                    keyring: &keyring,
                    cache: &cache,
                    received_at: &at,
                    include_resource: include,
                    batch_span: &batch_span,
                }
                .open_all(work)
            }));
        }
        for handle in chunks {
            let opened = handle
                .await
                .map_err(|e| BatchError::Unavailable(format!("decrypt task failed: {e}")))?;
            for (index, opened) in opened {
                slots[index] = Some(outcome(items[index], opened, received_at));
            }
        }

        let mut summary = BatchSummary::default();
        let mut records = Vec::with_capacity(slots.len() + raw_records.len());
        for outcome in slots.into_iter().flatten() {
            match outcome {
                Outcome::Event(r) => {
                    summary.events += 1;
                    records.push(r)
                }
                Outcome::Lifecycle(r) => {
                    summary.lifecycle += 1;
                    records.push(r)
                }
                Outcome::Rejected(reason, r) => {
                    summary.rejected.push(reason);
                    records.push(r)
                }
            }
        }
        records.extend(raw_records);
        self.publish(&records).await?;
        if let Some(tap) = self.lifecycle_tap.get() {
            for event in tapped {
                // Never hold up Graph's answer: the controller's periodic round is the backstop.
                if tap.try_send(event).is_err() {
                    tracing::warn!("lifecycle event not handed to the controller (queue full)");
                }
            }
        }

        self.metrics
            .accepted
            .inc_by((summary.events + summary.lifecycle) as u64);
        for reason in &summary.rejected {
            self.metrics.reject(reason);
        }
        Ok(summary)
    }

    async fn publish(&self, records: &[Record]) -> Result<(), BatchError> {
        if records.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        match self.sink.publish(records).await {
            Ok(()) => {
                self.metrics
                    .publish_latency
                    .observe(started.elapsed().as_secs_f64());
                self.metrics
                    .published(self.sink.kind(), records.len() as u64);
                Ok(())
            }
            Err(e) => {
                if let SinkError::Permanent(_) = e {
                    tracing::error!(error = %e, "sink refused the batch; fix the configuration");
                }
                Err(BatchError::Unavailable(e.to_string()))
            }
        }
    }

    /// Whether opening the item needs an RSA private-key operation: it carries content whose
    /// wrapped key is not in the cache.
    fn needs_rsa(&self, t: &ToOpen<'_>) -> bool {
        t.key_id.is_some_and(|fp| !self.key_cache.contains(&fp))
    }
}

/// An authenticated message item waiting to be opened, with the cache key of its wrapped key
/// computed once: for the cache check that chooses the thread, and for the decryption.
struct ToOpen<'a> {
    /// Position in the batch.
    index: usize,
    item: Authenticated<'a>,
    /// [`fingerprint`] of the item's `dataKey`; `None` when Graph sent no content.
    key_id: Option<Digest>,
}

impl<'a> ToOpen<'a> {
    fn new(index: usize, item: Authenticated<'a>) -> Self {
        let key_id = item
            .item()
            .encrypted_content
            .as_ref()
            .map(|c| fingerprint(&c.encryption_certificate_id, &c.data_key));
        ToOpen {
            index,
            item,
            key_id,
        }
    }

    /// The same, no longer borrowing the request body (for work on other threads).
    fn into_owned(self) -> ToOpen<'static> {
        ToOpen {
            index: self.index,
            item: self.item.into_owned(),
            key_id: self.key_id,
        }
    }
}

/// What opening a batch's items needs, on whichever thread does it.
struct OpenContext<'a> {
    keyring: &'a Keyring,
    cache: &'a KeyCache,
    received_at: &'a str,
    include_resource: bool,
    batch_span: &'a tracing::Span,
}

/// An opened item's event, or why it was rejected.
type Opened = Result<Record, (&'static str, String)>;

/// What an opened item turns into; a rejection keeps the item as received.
fn outcome(raw: &RawValue, opened: Opened, received_at: &str) -> Outcome {
    match opened {
        Ok(record) => Outcome::Event(record),
        Err((reason, detail)) => reject(raw, reason, detail, received_at),
    }
}

impl OpenContext<'_> {
    /// Decrypts and normalizes each item (by its index in the batch).
    fn open_all(&self, work: Vec<ToOpen<'_>>) -> Vec<(usize, Opened)> {
        work.into_iter()
            .map(|t| {
                let n = t.item.item();
                // Ids only, never content or secrets. DEBUG: logs at INFO do not pay for a
                // span per item; trace export takes it (telemetry.rs).
                let _item = tracing::debug_span!(
                    parent: self.batch_span,
                    "item",
                    subscription_id = &*n.subscription_id,
                    tenant_id = &*n.tenant_id,
                    resource = n.resource.as_deref().unwrap_or_default(),
                )
                .entered();
                let at = self.received_at;
                (
                    t.index,
                    open(self.keyring, self.cache, &t, at, self.include_resource),
                )
            })
            .collect()
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

/// Decrypts (when Graph sent content) and normalizes one authenticated message item.
fn open(
    keyring: &Keyring,
    cache: &KeyCache,
    t: &ToOpen<'_>,
    received_at: &str,
    include_resource: bool,
) -> Opened {
    let n = t.item.item();
    // Check the resource before any RSA work: an unsupported one is rejected for free.
    let (raw_resource, resource) = message_resource(n).map_err(|e| (e.reason(), e.to_string()))?;
    let plaintext = match (&n.encrypted_content, &t.key_id) {
        (Some(c), Some(fp)) => Some(decrypt_cached_with(keyring, cache, c, fp)),
        _ => None, // ToOpen::new sets key_id exactly when there is content
    }
    .transpose()
    .map_err(|e| (e.reason(), e.to_string()))?;
    let event = normalize::normalize(
        n,
        raw_resource,
        resource,
        plaintext.as_deref(),
        received_at,
        include_resource,
    )
    .map_err(|e| (e.reason(), e.to_string()))?;
    Ok(Record::message(event))
}

fn raw_record(n: &ChangeNotification<'_>, raw: &RawValue, received_at: &str) -> Record {
    let key = message_resource(n)
        .map(|(_, r)| r.conversation.key().to_string())
        .unwrap_or_else(|_| n.subscription_id.to_string());
    let id = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        raw.get().as_bytes(),
    ));
    Record::raw(id, key, &n.tenant_id, received_at, raw.get().as_bytes())
}
