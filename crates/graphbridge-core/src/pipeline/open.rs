//! Step 2, open: decrypts and normalizes the authenticated message items of a batch, on the
//! reactor when that is cheaper than handing them over, else on the crypto workers.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use serde_json::value::RawValue;

use super::error::Unavailable;
use super::outcome::{reject, Outcome};
use super::workers::Workers;
use crate::auth::Authenticated;
use crate::crypto::decrypt::{data_key, open_with, DataKey};
use crate::crypto::key_cache::{fingerprint, Digest, KeyCache};
use crate::crypto::keyring::Keyring;
use crate::event::normalize::{self, message_resource};
use crate::graph::resource::MessageResource;
use crate::sink::Record;

/// Largest batch opened on the reactor thread when no item needs RSA (≈30 µs per item).
const INLINE_MAX_ITEMS: usize = 100;

/// An authenticated message item waiting to be opened, with the cache key of its wrapped key
/// computed once: for the cache check that chooses the thread, and for the decryption.
pub(super) struct ToOpen<'a> {
    /// Position in the batch.
    pub index: usize,
    item: Authenticated<'a>,
    /// [`fingerprint`] of the item's `dataKey`; `None` when Graph sent no content.
    key_id: Option<Digest>,
}

impl<'a> ToOpen<'a> {
    pub fn new(index: usize, item: Authenticated<'a>) -> Self {
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

    /// The same, no longer borrowing the request body `body` (for work on other threads).
    fn detach(self, body: &Bytes) -> ToOpen<'static> {
        ToOpen {
            index: self.index,
            item: self.item.detach(body),
            key_id: self.key_id,
        }
    }
}

/// What opening items needs, for every batch: the keys, the CPU budget and the options.
pub(super) struct Opener {
    /// Swapped whole when the keys directory changes (hot reload).
    pub keyring: Arc<ArcSwap<Keyring>>,
    key_cache: Arc<KeyCache>,
    /// One thread per core: RSA work runs there, never on the reactor.
    workers: Workers,
    cores: usize,
    include_resource: bool,
}

impl Opener {
    pub fn new(
        keyring: Arc<ArcSwap<Keyring>>,
        key_cache_entries: usize,
        include_resource: bool,
        cores: usize,
    ) -> Self {
        Opener {
            keyring,
            key_cache: Arc::new(KeyCache::new(key_cache_entries)),
            workers: Workers::start(cores),
            cores,
            include_resource,
        }
    }

    /// Opens every item of `to_open` into its slot (`slots[index]`, `items[index]` being the
    /// item as received): an event, or a rejection that keeps the item as received. `body` is
    /// the buffer the items were parsed from, shared with the workers instead of copies; an
    /// empty one when they were not parsed from one buffer (spooled batches).
    pub async fn open_into(
        &self,
        body: &Bytes,
        items: &[&RawValue],
        slots: &mut [Option<Outcome>],
        to_open: Vec<ToOpen<'_>>,
        received_at: &str,
    ) -> Result<(), Unavailable> {
        // CPU stage. When a key must be unwrapped (RSA, ~0.3-1 ms) the work runs off the reactor
        // on the crypto workers, the batch split into one chunk per core; there is one worker
        // per core, whatever the number of concurrent batches. When every key is already
        // unwrapped (cached) an item costs tens of microseconds, less than handing it to other
        // threads: a batch of up to INLINE_MAX_ITEMS runs here (a few milliseconds at most).
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
            for (index, opened) in ctx.open_all(to_open) {
                slots[index] = Some(outcome(items[index], opened, received_at));
            }
            return Ok(());
        }
        self.open_on_workers(body, items, slots, to_open, received_at, &batch_span)
            .await
    }

    /// Opens the items in one chunk per core on the crypto workers.
    async fn open_on_workers(
        &self,
        body: &Bytes,
        items: &[&RawValue],
        slots: &mut [Option<Outcome>],
        mut to_open: Vec<ToOpen<'_>>,
        received_at: &str,
        batch_span: &tracing::Span,
    ) -> Result<(), Unavailable> {
        let chunk = to_open.len().div_ceil(self.cores).max(1);
        let mut chunks = Vec::new();
        while !to_open.is_empty() {
            let rest = to_open.split_off(chunk.min(to_open.len()));
            // Other threads outlive this borrow of the request body: they get the items detached
            // from it, their strings still in the body's buffer (copied where escapes forced it).
            let work: Vec<_> = std::mem::replace(&mut to_open, rest)
                .into_iter()
                .map(|t| t.detach(body))
                .collect();
            let (keyring, cache) = (self.keyring.load_full(), self.key_cache.clone());
            let (include, at) = (self.include_resource, received_at.to_string());
            // Worker threads do not inherit the batch's span: name it as the parent.
            let batch_span = batch_span.clone();
            chunks.push(self.workers.run(move || {
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
        // join_all queues every chunk at once: the workers take them back to back.
        for opened in futures::future::join_all(chunks).await {
            let opened = opened.map_err(Unavailable::Task)?;
            for (index, opened) in opened {
                slots[index] = Some(outcome(items[index], opened, received_at));
            }
        }
        Ok(())
    }

    /// Whether opening the item needs an RSA private-key operation: it carries content whose
    /// wrapped key is not in the cache.
    fn needs_rsa(&self, t: &ToOpen<'_>) -> bool {
        t.key_id.is_some_and(|fp| !self.key_cache.contains(&fp))
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
    /// Decrypts and normalizes each item (by its index in the batch). Every RSA operation of
    /// the chunk runs first, back to back, and then the rest item by item: RSA's code and the
    /// key's tables stay in the caches instead of alternating with JSON work (the crypto
    /// thread's CPU per item 0.5 % lower, docs/performance.md). One span per item covers both.
    fn open_all(&self, work: Vec<ToOpen<'_>>) -> Vec<(usize, Opened)> {
        let spans: Vec<_> = work.iter().map(|t| self.item_span(t)).collect();
        let keyed: Vec<_> = work
            .iter()
            .zip(&spans)
            .map(|(t, span)| span.in_scope(|| key_item(self.keyring, self.cache, t)))
            .collect();
        work.iter()
            .zip(spans)
            .zip(keyed)
            .map(|((t, span), keyed)| {
                let _item = span.entered();
                let opened = keyed
                    .and_then(|k| open(self.cache, t, k, self.received_at, self.include_resource));
                (t.index, opened)
            })
            .collect()
    }

    /// Ids only, never content or secrets. DEBUG: logs at INFO do not pay for a span per
    /// item; trace export takes it (telemetry.rs).
    fn item_span(&self, t: &ToOpen<'_>) -> tracing::Span {
        let n = t.item.item();
        tracing::debug_span!(
            parent: self.batch_span,
            "item",
            subscription_id = &*n.subscription_id,
            tenant_id = &*n.tenant_id,
            resource = n.resource.as_deref().unwrap_or_default(),
        )
    }
}

/// An item after its first step: its resource checked and its content's key at hand.
struct Keyed<'n> {
    raw_resource: &'n str,
    resource: MessageResource,
    /// `None` when Graph sent no content.
    key: Option<DataKey>,
}

fn rejection(e: impl std::fmt::Display, reason: &'static str) -> (&'static str, String) {
    (reason, e.to_string())
}

/// The first step of opening an item: the resource checked, then the key found (RSA when it
/// is not cached). An unsupported resource is rejected before any RSA work, for free.
fn key_item<'n>(
    keyring: &Keyring,
    cache: &KeyCache,
    t: &'n ToOpen<'_>,
) -> Result<Keyed<'n>, (&'static str, String)> {
    let n = t.item.item();
    let (raw_resource, resource) = message_resource(n).map_err(|e| rejection(&e, e.reason()))?;
    let key = match (&n.encrypted_content, &t.key_id) {
        (Some(c), Some(fp)) => {
            Some(data_key(keyring, cache, c, fp).map_err(|e| rejection(&e, e.reason()))?)
        }
        _ => None, // ToOpen::new sets key_id exactly when there is content
    };
    Ok(Keyed {
        raw_resource,
        resource,
        key,
    })
}

/// The rest: decrypts (when Graph sent content) and normalizes the item.
fn open(
    cache: &KeyCache,
    t: &ToOpen<'_>,
    keyed: Keyed<'_>,
    received_at: &str,
    include_resource: bool,
) -> Opened {
    let n = t.item.item();
    let plaintext = match (keyed.key, &n.encrypted_content, &t.key_id) {
        (Some(key), Some(c), Some(fp)) => {
            Some(open_with(cache, c, fp, key).map_err(|e| rejection(&e, e.reason()))?)
        }
        _ => None,
    };
    let event = normalize::normalize(
        n,
        keyed.raw_resource,
        keyed.resource,
        plaintext.as_deref(),
        received_at,
        include_resource,
    )
    .map_err(|e| rejection(&e, e.reason()))?;
    Ok(Record::message(event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::test_support::*;
    use crate::sink::Stream;

    fn opener(cores: usize) -> Opener {
        Opener::new(synthetic_keyring(), 16, false, cores)
    }

    /// The items of `body`, authenticated, ready to open.
    fn to_open(raws: &[&RawValue]) -> Vec<ToOpen<'static>> {
        raws.iter()
            .enumerate()
            .map(|(i, raw)| {
                let n = crate::graph::envelope::ChangeNotification::parse(raw).unwrap();
                ToOpen::new(i, authenticator().authenticate(n).unwrap()).detach(&Bytes::new())
            })
            .collect()
    }

    async fn open_batch(opener: &Opener, raws: &[&RawValue]) -> Vec<Option<Outcome>> {
        let mut slots: Vec<Option<Outcome>> = raws.iter().map(|_| None).collect();
        let work = to_open(raws);
        opener
            .open_into(&Bytes::new(), raws, &mut slots, work, RECEIVED_AT)
            .await
            .unwrap();
        slots
    }

    #[tokio::test]
    async fn the_synthetic_vector_opens_into_a_chat_event() {
        let raw = synthetic_item();
        let slots = open_batch(&opener(2), &[&raw]).await;
        let Some(Outcome::Event(record)) = &slots[0] else {
            panic!("not an event");
        };
        assert_eq!(record.stream, Stream::ChatMessages);
        let event: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
        assert_eq!(event["data"]["message_id"], "1612289992105");
        assert_eq!(event["data"]["tenant_id"], SYNTH_TENANT);
    }

    #[tokio::test]
    async fn the_tampered_vector_is_rejected_for_its_signature() {
        let raw = tampered_item();
        let slots = open_batch(&opener(2), &[&raw]).await;
        let Some(Outcome::Rejected(reason, record)) = &slots[0] else {
            panic!("not rejected");
        };
        assert_eq!(*reason, "signature_mismatch");
        assert_eq!(record.stream, Stream::DeadLetter);
    }

    #[tokio::test]
    async fn a_cold_key_needs_rsa_and_a_cached_one_does_not() {
        let o = opener(1);
        let raw = synthetic_item();
        assert!(o.needs_rsa(&to_open(&[&raw])[0]));
        open_batch(&o, &[&raw]).await;
        assert!(
            !o.needs_rsa(&to_open(&[&raw])[0]),
            "key cached after the first"
        );
        // Cached: opened inline, same result.
        let slots = open_batch(&o, &[&raw]).await;
        assert!(matches!(slots[0], Some(Outcome::Event(_))));
    }

    #[tokio::test]
    async fn chunks_on_the_workers_fill_every_slot_by_index() {
        // A cache of 0 entries: every item needs RSA, 5 items over 2 cores = chunks of 3 and 2.
        let o = Opener::new(synthetic_keyring(), 0, false, 2);
        let (good, bad) = (synthetic_item(), tampered_item());
        let raws: Vec<&RawValue> = vec![&good, &bad, &good, &bad, &good];
        let slots = open_batch(&o, &raws).await;
        let kinds: Vec<&str> = slots
            .iter()
            .map(|s| match s {
                Some(Outcome::Event(_)) => "event",
                Some(Outcome::Rejected(r, _)) => r,
                _ => "empty",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "event",
                "signature_mismatch",
                "event",
                "signature_mismatch",
                "event"
            ]
        );
    }
}
