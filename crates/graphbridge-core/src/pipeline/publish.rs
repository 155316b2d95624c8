//! Step 4, publish: the sink accepts the batch's records durably or the batch is unavailable;
//! once accepted, the lifecycle tap gets its events and the counters move.

use std::time::Instant;

use super::assemble::BatchSummary;
use super::error::{BatchError, Unavailable};
use super::Pipeline;
use crate::event::v1::LifecycleEvent;
use crate::sink::{Record, SinkError};

impl Pipeline {
    /// Publishes an assembled batch; `tapped` are its lifecycle events for the tap.
    pub(super) async fn publish(
        &self,
        records: &[Record],
        summary: BatchSummary,
        tapped: Vec<LifecycleEvent>,
    ) -> Result<BatchSummary, BatchError> {
        self.publish_records(records).await?;
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

    /// Hands the records to the sink and waits for it to accept every one durably.
    async fn publish_records(&self, records: &[Record]) -> Result<(), Unavailable> {
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
                Err(Unavailable::Sink(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::test_support::*;
    use crate::sink::Stream;

    fn records() -> Vec<Record> {
        let raw = lifecycle_item("missed");
        let n = crate::graph::envelope::ChangeNotification::parse(&raw).unwrap();
        let event = crate::event::normalize::lifecycle(&n, RECEIVED_AT, 0);
        vec![Record::lifecycle(event)]
    }

    fn summary() -> BatchSummary {
        BatchSummary {
            lifecycle: 1,
            rejected: vec!["client_state"],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn accepted_records_move_the_counters_and_reach_the_tap() {
        let sink = FakeSink::ok();
        let p = pipeline(sink.clone(), false);
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        assert!(p.tap_lifecycle(tx));
        let recs = records();
        let tapped = vec![crate::event::normalize::lifecycle(
            &crate::graph::envelope::ChangeNotification::parse(&lifecycle_item("missed")).unwrap(),
            RECEIVED_AT,
            0,
        )];
        let s = p.publish(&recs, summary(), tapped).await.unwrap();
        assert_eq!(s.lifecycle, 1);
        assert_eq!(sink.streams(), [Stream::Lifecycle]);
        assert_eq!(rx.try_recv().unwrap().data.lifecycle_event, "missed");
        let m = p.metrics().render();
        assert!(m.contains("graphbridge_accepted_total 1\n"), "{m}");
        assert!(
            m.contains("graphbridge_published_total{sink=\"fake\"} 1\n"),
            "{m}"
        );
        assert!(m.contains("graphbridge_rejected_total{reason=\"client_state\"} 1\n"));
    }

    #[tokio::test]
    async fn a_failing_sink_keeps_its_class_and_moves_no_counter() {
        let p = pipeline(FakeSink::failing(true), false);
        let err = p.publish(&records(), summary(), vec![]).await.unwrap_err();
        let BatchError::Unavailable(u @ Unavailable::Sink(SinkError::Permanent(_))) = &err else {
            panic!("{err:?}");
        };
        assert_eq!(u.reason(), "sink_permanent");
        let m = p.metrics().render();
        assert!(m.contains("graphbridge_accepted_total 0\n"), "{m}");
        assert!(!m.contains("graphbridge_rejected_total{"), "{m}");
    }

    #[tokio::test]
    async fn nothing_to_publish_does_not_call_the_sink() {
        let sink = FakeSink::failing(false);
        let p = pipeline(sink.clone(), false);
        let s = p
            .publish(&[], BatchSummary::default(), vec![])
            .await
            .unwrap();
        assert_eq!(s.events, 0);
        assert_eq!(sink.calls(), 0);
    }
}
