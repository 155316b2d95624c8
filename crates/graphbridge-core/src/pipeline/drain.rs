//! The drainer: publishes spooled batches, oldest first and up to [`STEP`] of them concurrently
//! (so not strictly in order across batches), through the normal pipeline (decrypt, normalize,
//! sink) and moves the cursor only after the sink confirmed them. While the broker is down it
//! retries the oldest batches with a capped exponential backoff.

use std::time::Duration;

use tokio::sync::watch;

use std::sync::Arc;

use super::Pipeline;
use crate::spool::{Position, Spool};

/// Batches published concurrently per step (they share the pipeline's CPU permits).
const STEP: usize = 64;
/// Longest a single publish may take before it is retried.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// With the clients reconnecting at least once a second, a drain waiting for the broker
/// resumes within about two seconds of its return (it took 6-14 s with 5 s here and the
/// clients' default reconnect backoffs).
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Runs until `stop` turns true. Whatever is not confirmed stays spooled for the next start.
pub async fn run(pipeline: &Pipeline, spool: &Arc<Spool>, mut stop: watch::Receiver<bool>) {
    let mut backoff = BACKOFF_MIN;
    while !*stop.borrow() {
        let appended = spool.appended().notified();
        tokio::pin!(appended);
        appended.as_mut().enable();
        let batch = spool.peek(STEP);
        if batch.is_empty() {
            tokio::select! {
                _ = appended => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        // On shutdown, abandon a publish the broker has not confirmed: it stays spooled.
        let done = tokio::select! {
            done = step(pipeline, spool, &batch) => done,
            _ = stop.changed() => break,
        };
        if done == batch.len() {
            backoff = BACKOFF_MIN;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Publishes `batch` and commits the confirmed prefix; returns how many were committed.
async fn step(pipeline: &Pipeline, spool: &Arc<Spool>, batch: &[Position]) -> usize {
    let reads: Vec<std::io::Result<_>> = {
        let (spool, batch) = (spool.clone(), batch.to_vec());
        match tokio::task::spawn_blocking(move || batch.iter().map(|at| spool.read(at)).collect())
            .await
        {
            Ok(reads) => reads,
            Err(e) => {
                tracing::error!(error = %e, "spool: read task failed");
                return 0;
            }
        }
    };
    let results =
        futures::future::join_all(reads.into_iter().zip(batch).map(|(read, at)| async move {
            let spooled = match read {
                Ok(b) => b,
                Err(e) => {
                    // Only disk corruption after the start-up scan gets here. The batch was
                    // acknowledged, so say so loudly instead of retrying it forever.
                    tracing::error!(error = %e, segment = at.segment, offset = at.offset,
                        items = at.items, "spool: acknowledged batch unreadable; skipped");
                    pipeline.metrics().spool_unreadable.inc();
                    return Ok(());
                }
            };
            match tokio::time::timeout(PUBLISH_TIMEOUT, pipeline.deliver_spooled(spooled)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no confirmation within {PUBLISH_TIMEOUT:?}")),
            }
        }))
        .await;
    let confirmed = results.iter().take_while(|r| r.is_ok()).count();
    if let Some(Err(e)) = results.get(confirmed) {
        tracing::warn!(error = %e, "spool: publish failed; retrying");
    }
    if confirmed == 0 {
        return 0;
    }
    let committed = {
        let spool = spool.clone();
        tokio::task::spawn_blocking(move || spool.commit(confirmed)).await
    };
    match committed {
        Ok(Ok(())) => confirmed,
        Ok(Err(e)) => {
            // The batches are published; at worst they are published again after a restart.
            tracing::error!(error = %e, "spool: cannot move the cursor");
            0
        }
        Err(e) => {
            tracing::error!(error = %e, "spool: cursor task failed");
            0
        }
    }
}
