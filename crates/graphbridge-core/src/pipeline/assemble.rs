//! Step 3, assemble: the filled slots become the records to publish, in item order with the raw
//! archive's records last, and the summary the caller is told once they are accepted.

use serde::Serialize;

use super::outcome::Outcome;
use crate::sink::Record;

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

/// The records of a batch and its summary. Every slot is filled by then (an empty one, which
/// the steps before never leave, would be skipped).
pub(super) fn assemble(
    slots: Vec<Option<Outcome>>,
    raw_records: Vec<Record>,
) -> (Vec<Record>, BatchSummary) {
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
    (records, summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Stream;

    fn record(stream: Stream, id: &str) -> Record {
        Record {
            stream,
            id: id.into(),
            key: "k".into(),
            subject_vars: vec![],
            headers: vec![],
            payload: vec![],
        }
    }

    #[test]
    fn records_keep_item_order_with_raw_records_last_and_the_counts_add_up() {
        let slots = vec![
            Some(Outcome::Rejected(
                "client_state",
                record(Stream::DeadLetter, "0"),
            )),
            Some(Outcome::Event(record(Stream::ChatMessages, "1"))),
            Some(Outcome::Lifecycle(record(Stream::Lifecycle, "2"))),
            Some(Outcome::Event(record(Stream::ChannelMessages, "3"))),
            Some(Outcome::Rejected(
                "signature_mismatch",
                record(Stream::DeadLetter, "4"),
            )),
        ];
        let raw = vec![record(Stream::Raw, "r1"), record(Stream::Raw, "r3")];
        let (records, summary) = assemble(slots, raw);
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["0", "1", "2", "3", "4", "r1", "r3"]);
        assert_eq!(summary.events, 2);
        assert_eq!(summary.lifecycle, 1);
        assert_eq!(summary.rejected, ["client_state", "signature_mismatch"]);
        assert_eq!(summary.spooled, 0);
    }

    #[test]
    fn an_empty_batch_has_no_records_and_the_summary_hides_spooled_zero() {
        let (records, summary) = assemble(vec![], vec![]);
        assert!(records.is_empty());
        assert_eq!(
            serde_json::to_value(&summary).unwrap(),
            serde_json::json!({"events": 0, "lifecycle": 0, "rejected": []})
        );
    }
}
