//! `--reprocess`: rebuilds events from the raw archive (`sink.kafka.raw_topic`) with the current
//! code, through the same stages as a live request — the item's clientState and tenant checked
//! against today's configuration, decrypted with the keys directory, normalized — by handing
//! the stored items to the pipeline as if they came from the spool, with a sink that only
//! collects. Event ids depend on the item alone (tenant, resource, change type, etag), and the
//! receive time comes from the archive's `graph_received_at` header, so an unchanged item gives
//! exactly the event first published. Validation tokens are not stored: they were checked
//! before the item was archived. Nor is the clientState: the archive holds a fingerprint of the
//! secret that matched, and the configured secret with that fingerprint is put back
//! ([`archive::unseal`]); older records that still hold it in clear are read as they are.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::value::RawValue;

use super::item::Item;
use super::ReplayError;
use graphbridge_core::auth::{archive, Authenticator};
use graphbridge_core::config::{Config, Secret};
use graphbridge_core::crypto::keyring::Keyring;
use graphbridge_core::pipeline::{Pipeline, PipelineOptions};
use graphbridge_core::sink::record::RAW_RECEIVED_AT;
use graphbridge_core::sink::{Record, Sink, SinkError, Stream};
use graphbridge_core::spool::SpooledBatch;
use graphbridge_core::telemetry::Metrics;

/// Keeps what the pipeline publishes instead of sending it anywhere.
#[derive(Default)]
struct Collect(Mutex<Vec<Record>>);

#[async_trait::async_trait]
impl Sink for Collect {
    async fn publish(&self, records: &[Record]) -> Result<(), SinkError> {
        self.0
            .lock()
            .expect("not poisoned")
            .extend_from_slice(records);
        Ok(())
    }
    fn kind(&self) -> &'static str {
        "replay"
    }
}

pub struct Reprocessor {
    pipeline: Pipeline,
    out: Arc<Collect>,
    /// The configured clientStates, to restore archived items' own.
    client_states: Vec<Secret>,
}

/// What a batch of archived items turned into.
#[derive(Debug, Default)]
pub struct Reprocessed {
    /// Events, in the order of their items.
    pub events: Vec<Item>,
    /// Items the current code or configuration rejects, by reason (not published: the
    /// original run dead-lettered them or published them, and the report shows the change).
    pub rejected: BTreeMap<String, u64>,
}

impl Reprocessor {
    pub fn new(cfg: &Config) -> Result<Self, ReplayError> {
        let keyring = Keyring::load_dir(&cfg.graph.keys_dir, cfg.graph.keys_password.as_ref())
            .map_err(|e| ReplayError::Reprocess(format!("keys: {e}")))?;
        if keyring.is_empty() {
            return Err(ReplayError::Reprocess(format!(
                "no keys in {}",
                cfg.graph.keys_dir.display()
            )));
        }
        let states = cfg
            .client_states()
            .map_err(|e| ReplayError::Reprocess(e.to_string()))?;
        let out = Arc::new(Collect::default());
        let pipeline = Pipeline::new(
            Arc::new(ArcSwap::from_pointee(keyring)),
            Authenticator::new(states.clone(), cfg.graph.tenants.clone()),
            out.clone(),
            Metrics::new(),
            PipelineOptions {
                // deliver_spooled applies no budget; these only shape limits it does not use.
                budget: Duration::from_millis(cfg.ack.budget_ms.max(1)),
                include_resource: cfg.graph.include_resource,
                raw_archive: false,
                key_cache_entries: cfg.graph.key_cache_entries,
                tokens: None,
                max_items: usize::MAX,
                max_json_depth: cfg.server.max_json_depth,
                spool: None,
            },
        );
        Ok(Reprocessor {
            pipeline,
            out,
            client_states: states,
        })
    }

    /// Rebuilds the events of `items` (raw archive records), keeping their order.
    pub async fn run(&self, items: &[Item]) -> Result<Reprocessed, ReplayError> {
        let mut result = Reprocessed::default();
        // Items received together share a receive time: one pipeline batch each, which
        // spreads their RSA work over the cores like a live request.
        let mut start = 0;
        while start < items.len() {
            let at = received_at(&items[start]);
            let mut end = start + 1;
            while end < items.len() && received_at(&items[end]) == at {
                end += 1;
            }
            self.batch(&items[start..end], at, &mut result).await?;
            start = end;
        }
        Ok(result)
    }

    async fn batch(
        &self,
        items: &[Item],
        received_at: String,
        result: &mut Reprocessed,
    ) -> Result<(), ReplayError> {
        // A record that is not JSON cannot be an archived item, and one whose fingerprint
        // matches no configured clientState cannot be authenticated: count them, keep going.
        let mut raw = Vec::with_capacity(items.len());
        let mut sources = Vec::with_capacity(items.len());
        for i in items {
            let item = std::str::from_utf8(&i.payload)
                .map_err(|_| "malformed_item")
                .and_then(|t| match archive::unseal(t, &self.client_states) {
                    Ok(t) => Ok(t),
                    Err(archive::UnsealError::Malformed) => Err("malformed_item"),
                    Err(archive::UnsealError::NoSecretMatches) => Err("client_state"),
                })
                .and_then(|t| RawValue::from_string(t).map_err(|_| "malformed_item"));
            match item {
                Ok(v) => {
                    raw.push(v);
                    sources.push(i);
                }
                Err(reason) => *result.rejected.entry(reason.into()).or_default() += 1,
            }
        }
        if raw.is_empty() {
            return Ok(());
        }
        self.pipeline
            .deliver_spooled(SpooledBatch {
                received_at,
                items: raw,
            })
            .await
            .map_err(|e| ReplayError::Reprocess(e.to_string()))?;
        let records = std::mem::take(&mut *self.out.0.lock().expect("not poisoned"));
        // One outcome per item, in item order (lifecycle items are never archived).
        for (n, r) in records.iter().enumerate() {
            let ts = sources.get(n).and_then(|i| i.timestamp);
            match r.stream {
                Stream::DeadLetter => {
                    let reason = r
                        .headers
                        .iter()
                        .find(|(k, _)| *k == "graph_reject_reason")
                        .map_or("unknown", |(_, v)| v.as_ref());
                    *result.rejected.entry(reason.to_string()).or_default() += 1;
                }
                _ => result.events.push(Item::from_record(r, ts)),
            }
        }
        Ok(())
    }
}

/// The original receive time: the archive's header, or for records archived before it
/// existed, the record's timestamp (the produce time, milliseconds after the receipt).
fn received_at(i: &Item) -> String {
    if let Some(at) = i.header(RAW_RECEIVED_AT) {
        return at.to_string();
    }
    i.timestamp
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
