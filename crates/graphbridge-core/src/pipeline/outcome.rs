//! What one item of a batch turns into before publishing: the slot it fills in item order.

use serde_json::value::RawValue;

use crate::event::deadletter::DeadLetter;
use crate::sink::Record;

/// What one item turned into, before publishing.
pub(super) enum Outcome {
    Event(Record),
    Lifecycle(Record),
    Rejected(&'static str, Record),
}

/// A permanent rejection: the item as received goes to the dead-letter stream with the reason.
pub(super) fn reject(
    raw: &RawValue,
    reason: &'static str,
    detail: String,
    received_at: &str,
) -> Outcome {
    tracing::info!(reason, %detail, "item rejected");
    Outcome::Rejected(
        reason,
        Record::dead_letter(&DeadLetter::new(raw, reason, detail, received_at)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Stream;

    #[test]
    fn a_rejection_dead_letters_the_item_as_received_with_its_reason() {
        let raw = RawValue::from_string(r#"{"subscriptionId":"s","x":1}"#.into()).unwrap();
        let Outcome::Rejected(reason, record) = reject(
            &raw,
            "client_state",
            "no".into(),
            "2026-01-01T00:00:00.000Z",
        ) else {
            panic!("not a rejection");
        };
        assert_eq!(reason, "client_state");
        assert_eq!(record.stream, Stream::DeadLetter);
        let text = String::from_utf8_lossy(&record.payload);
        assert!(text.contains("client_state"), "{text}");
        assert!(text.contains(r#""x":1"#), "{text}");
    }
}
