//! Broker outages against the real brokers: while Kafka or NATS is stopped the ingress answers
//! 503 + Retry-After within the ack budget and `/readyz` turns red; once it is back, Graph's
//! retry is accepted and every notification that ever got a 2xx is in the broker.
//!
//! This binary stops and starts the shared test brokers, so it lives alone: cargo runs test
//! binaries one after another. A guard restarts the broker even if an assertion fails.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Two mixed batches with different seeds: 4 events each, 2 of them shared.
const DISTINCT_EVENTS: usize = 6;

fn broker(script: &str, action: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script);
    let status = std::process::Command::new("bash")
        .arg(&path)
        .arg(action)
        .status()
        .expect("run broker script");
    assert!(status.success(), "{script} {action} failed");
}

/// Starts the broker again when dropped, so a failing test leaves the others a broker.
struct Restart(&'static str);
impl Drop for Restart {
    fn drop(&mut self) {
        broker(self.0, "start");
    }
}

async fn status(url: &str) -> u16 {
    reqwest::get(url)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Posts like Graph: retries on non-2xx after Retry-After, bounded in time.
async fn deliver_with_retries(srv: &Running, body: &Value, bound: Duration) -> u32 {
    let deadline = Instant::now() + bound;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let resp = srv.post_json("/notifications", body).await;
        if resp.status() == 202 {
            return attempts;
        }
        assert_eq!(resp.status(), 503);
        let wait: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            Instant::now() < deadline,
            "not accepted within {bound:?} after the broker came back"
        );
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

/// During the outage: 503 with Retry-After inside the budget, and readiness red.
async fn assert_outage_answers(srv: &Running, body: &Value, budget: Duration) {
    let started = Instant::now();
    let resp = srv.post_json("/notifications", body).await;
    let took = started.elapsed();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(
        took < budget + Duration::from_secs(1),
        "503 after {took:?}, budget {budget:?}"
    );
    assert_eq!(status(&format!("{}/readyz", srv.admin)).await, 503);
}

#[tokio::test]
async fn kafka_outage_gives_503_then_delivers_everything_acked() {
    use common::kafka::*;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = kafka_config(dir.path(), &unique("outage"));
    cfg.ack.budget_ms = 1500;
    cfg.ack.retry_after_s = 1;
    let budget = Duration::from_millis(cfg.ack.budget_ms);
    let srv = Running::start(&cfg).await;
    let before = mixed_batch(1_700_000_500_000);
    let during = mixed_batch(1_700_000_600_000);
    assert_eq!(
        srv.post_json("/notifications", &before.body).await.status(),
        202
    );

    let guard = Restart("kafka.sh");
    broker("kafka.sh", "stop");
    assert_outage_answers(&srv, &during.body, budget).await;
    drop(guard); // starts Kafka and waits until it serves requests

    deliver_with_retries(&srv, &during.body, Duration::from_secs(90)).await;
    let t = &cfg.sink.kafka.topics;
    let topics = [
        t.channel_messages.as_str(),
        t.chat_messages.as_str(),
        t.lifecycle.as_str(),
    ];
    // Both batches carry the same two vector items (same ids), so 4 + 2 distinct events were
    // acked; copies queued by the first attempt may also have landed and are deduped by id.
    let got = consume_until_distinct(&topics, DISTINCT_EVENTS, Duration::from_secs(60)).await;
    let ids: HashSet<String> = got.iter().map(|m| m.headers["ce_id"].clone()).collect();
    assert_eq!(
        ids.len(),
        DISTINCT_EVENTS,
        "every acked event, exactly once after dedupe by id"
    );
    assert_eq!(status(&format!("{}/readyz", srv.admin)).await, 200);
    srv.shutdown().await;
}

#[tokio::test]
async fn nats_outage_gives_503_then_delivers_everything_acked() {
    use common::nats::*;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = nats_config(dir.path(), &unique("outage"));
    cfg.ack.budget_ms = 1500;
    cfg.ack.retry_after_s = 1;
    let budget = Duration::from_millis(cfg.ack.budget_ms);
    let srv = Running::start(&cfg).await;
    let before = mixed_batch(1_700_000_700_000);
    let during = mixed_batch(1_700_000_800_000);
    assert_eq!(
        srv.post_json("/notifications", &before.body).await.status(),
        202
    );

    let guard = Restart("nats.sh");
    broker("nats.sh", "stop");
    assert_outage_answers(&srv, &during.body, budget).await;
    drop(guard);

    deliver_with_retries(&srv, &during.body, Duration::from_secs(60)).await;
    let stored = read_stream(&cfg.sink.nats.stream).await;
    // JetStream's duplicate window removed any copy of the first attempt: exactly once.
    let events: Vec<&Stored> = stored
        .iter()
        .filter(|m| !m.subject.ends_with(".deadletter"))
        .collect();
    let ids: HashSet<&str> = events.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(events.len(), DISTINCT_EVENTS);
    assert_eq!(ids.len(), DISTINCT_EVENTS);
    // Two rejects are the same in both batches, the tampered one differs: 3 + 1.
    assert_eq!(stored.len() - events.len(), 4);
    srv.shutdown().await;
}
