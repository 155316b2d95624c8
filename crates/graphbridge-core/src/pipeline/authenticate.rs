//! Step 1, authenticate: the cheap per-item checks, on the reactor. Every item gets its slot in
//! item order: a rejection or a lifecycle event now, or left empty for the open step.

use serde_json::value::RawValue;

use super::open::ToOpen;
use super::outcome::{reject, Outcome};
use crate::auth::{archive, Authenticator};
use crate::event::normalize::{self, message_resource};
use crate::event::v1::LifecycleEvent;
use crate::graph::envelope::ChangeNotification;
use crate::secret::Secret;
use crate::sink::Record;

/// A batch after authentication.
pub(super) struct AuthenticatedBatch<'a> {
    /// One per item, in item order; `None` for the items in `to_open`.
    pub slots: Vec<Option<Outcome>>,
    /// The raw archive's records (when configured), in item order.
    pub raw_records: Vec<Record>,
    /// Authenticated message items, still encrypted.
    pub to_open: Vec<ToOpen<'a>>,
    /// Copies of the lifecycle events for the lifecycle tap (when one is set).
    pub tapped: Vec<LifecycleEvent>,
}

/// What authentication does besides checking: archive raw items, copy lifecycle events.
#[derive(Clone, Copy)]
pub(super) struct AuthenticateOptions {
    pub raw_archive: bool,
    pub tap_lifecycle: bool,
}

/// Authenticates every item; `parsed[i]` is `items[i]` parsed.
pub(super) fn authenticate<'a>(
    auth: &Authenticator,
    items: &[&'a RawValue],
    parsed: Vec<Result<ChangeNotification<'a>, serde_json::Error>>,
    received_at: &str,
    opts: AuthenticateOptions,
) -> AuthenticatedBatch<'a> {
    let mut batch = AuthenticatedBatch {
        slots: Vec::with_capacity(items.len()),
        raw_records: Vec::new(),
        to_open: Vec::new(),
        tapped: Vec::new(),
    };
    for (i, item) in parsed.into_iter().enumerate() {
        let raw = items[i];
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                let detail = crate::graph::json_error(&e);
                batch
                    .slots
                    .push(Some(reject(raw, "malformed_item", detail, received_at)));
                continue;
            }
        };
        let authenticated = match auth.authenticate(item) {
            Ok(a) => a,
            Err(e) => {
                let outcome = reject(raw, e.reason(), e.to_string(), received_at);
                batch.slots.push(Some(outcome));
                continue;
            }
        };
        let n = authenticated.item();
        if n.is_lifecycle() {
            let event = normalize::lifecycle(n, received_at, i);
            if opts.tap_lifecycle {
                batch.tapped.push(event.clone());
            }
            batch
                .slots
                .push(Some(Outcome::Lifecycle(Record::lifecycle(event))));
            continue;
        }
        if opts.raw_archive {
            batch.raw_records.push(raw_record(n, raw, received_at));
        }
        batch.slots.push(None);
        batch.to_open.push(ToOpen::new(i, authenticated));
    }
    batch
}

/// The raw archive's record of an authenticated item: still encrypted, keyed like its event,
/// its clientState replaced by a fingerprint ([`archive::seal`]).
fn raw_record(n: &ChangeNotification<'_>, raw: &RawValue, received_at: &str) -> Record {
    let key = message_resource(n)
        .map(|(_, r)| r.conversation.key().to_string())
        .unwrap_or_else(|_| n.subscription_id.to_string());
    let id = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        raw.get().as_bytes(),
    ));
    let client_state = n.client_state.as_ref().map_or("", Secret::expose);
    let sealed = archive::seal(raw, client_state, &n.subscription_id);
    Record::raw(id, key, &n.tenant_id, received_at, sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::test_support::*;
    use crate::sink::Stream;

    const OPTS: AuthenticateOptions = AuthenticateOptions {
        raw_archive: false,
        tap_lifecycle: false,
    };

    fn run<'a>(raws: &[&'a RawValue], opts: AuthenticateOptions) -> AuthenticatedBatch<'a> {
        let parsed = raws.iter().map(|r| ChangeNotification::parse(r)).collect();
        authenticate(&authenticator(), raws, parsed, RECEIVED_AT, opts)
    }

    fn rejected(slot: &Option<Outcome>) -> Option<&'static str> {
        match slot {
            Some(Outcome::Rejected(reason, r)) => {
                assert_eq!(r.stream, Stream::DeadLetter);
                Some(reason)
            }
            _ => None,
        }
    }

    #[test]
    fn malformed_items_and_bad_client_states_are_rejected_with_their_reason() {
        let malformed = raw(r#"{"subscriptionId": 7}"#);
        let wrong = with_client_state(&synthetic_item(), Some("not-ours"));
        let missing = with_client_state(&synthetic_item(), None);
        let good = synthetic_item();
        let batch = run(&[&malformed, &wrong, &missing, &good], OPTS);
        let reasons: Vec<_> = batch.slots.iter().map(rejected).collect();
        assert_eq!(
            reasons,
            [
                Some("malformed_item"),
                Some("client_state"),
                Some("client_state"),
                None
            ]
        );
        assert!(batch.slots[3].is_none(), "the good item waits to be opened");
        assert_eq!(batch.to_open.len(), 1);
        assert_eq!(batch.to_open[0].index, 3);
        assert!(batch.raw_records.is_empty() && batch.tapped.is_empty());
    }

    #[test]
    fn lifecycle_items_pass_straight_through_and_are_tapped_when_asked() {
        let lifecycle = lifecycle_item("reauthorizationRequired");
        let good = synthetic_item();
        let opts = AuthenticateOptions {
            tap_lifecycle: true,
            ..OPTS
        };
        let batch = run(&[&lifecycle, &good], opts);
        let Some(Outcome::Lifecycle(record)) = &batch.slots[0] else {
            panic!("not a lifecycle event");
        };
        assert_eq!(record.stream, Stream::Lifecycle);
        assert_eq!(batch.tapped.len(), 1);
        assert_eq!(
            batch.tapped[0].data.lifecycle_event,
            "reauthorizationRequired"
        );
        assert_eq!(batch.to_open.len(), 1, "only the message item is opened");

        let untapped = run(&[&lifecycle], OPTS);
        assert!(untapped.tapped.is_empty());
        assert!(matches!(untapped.slots[0], Some(Outcome::Lifecycle(_))));
    }

    #[test]
    fn the_raw_archive_gets_authenticated_message_items_only() {
        let good = synthetic_item();
        let wrong = with_client_state(&good, Some("not-ours"));
        let lifecycle = lifecycle_item("missed");
        let opts = AuthenticateOptions {
            raw_archive: true,
            ..OPTS
        };
        let batch = run(&[&wrong, &good, &lifecycle], opts);
        assert_eq!(batch.raw_records.len(), 1);
        let r = &batch.raw_records[0];
        assert_eq!(r.stream, Stream::Raw);
        let archived = std::str::from_utf8(&r.payload).unwrap();
        assert!(
            !archived.contains(SYNTH_CLIENT_STATE),
            "the archive does not hold the clientState: {archived}"
        );
        // Still encrypted, as received, once the configured secret is put back.
        let restored = archive::unseal(archived, &[Secret::new(SYNTH_CLIENT_STATE)]).unwrap();
        let as_json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert_eq!(as_json(&restored), as_json(good.get()));
    }
}
