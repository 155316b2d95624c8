//! Broker outages against the real brokers: while Kafka or NATS is stopped the ingress answers
//! 503 + Retry-After within the ack budget and `/readyz` turns red; once it is back, Graph's
//! retry is accepted and every notification that ever got a 2xx is in the broker.
//!
//! With the spool on, the same outage under a steady simulated load is absorbed: every batch is
//! acknowledged, the spooled ones are drained once the broker is back, and every acknowledged
//! item is in the broker exactly once by event id after consumer dedupe.
//!
//! This binary stops and starts the shared test brokers, so it lives alone: cargo runs test
//! binaries one after another. Tests stopping the same broker take its lock; a guard restarts
//! the broker even if an assertion fails.

use crate::common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use graphbridge_core::config::Config;
use graphbridge_sim::run::run;
use graphbridge_sim::verify::{verify, Target};
use serde_json::Value;

/// Two mixed batches with different seeds: 4 events each, 2 of them shared.
const DISTINCT_EVENTS: usize = 6;

/// Runs a broker script without blocking the runtime (load keeps running meanwhile).
async fn broker_async(script: &str, action: &str) {
    let status = tokio::process::Command::new("bash")
        .arg(script_path(script))
        .arg(action)
        .status()
        .await
        .expect("run broker script");
    assert!(status.success(), "{script} {action} failed");
}

fn script_path(script: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script)
}

fn broker(script: &str, action: &str) {
    let status = std::process::Command::new("bash")
        .arg(script_path(script))
        .arg(action)
        .status()
        .expect("run broker script");
    assert!(status.success(), "{script} {action} failed");
}

/// Held while a test stops and starts a broker, so tests of this binary don't overlap on it.
static KAFKA: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static NATS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Held by the tests that run a steady simulated load, so two of them never share the CPU:
/// each needs the bridge to keep up with its rate for the outage to be the only disturbance.
static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _broker = KAFKA.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = kafka_config(dir.path(), &unique("outage"));
    cfg.ack.budget_ms = 1500;
    cfg.ack.retry_after_s = 1;
    let budget = Duration::from_millis(cfg.ack.budget_ms);
    let srv = Running::start(&cfg).await;
    let before = mixed_batch(1_700_000_500_000);
    let during = mixed_batch(1_700_000_600_000);
    // Before the outage (retried like Graph: a first publish may wait out topic creation).
    deliver_with_retries(&srv, &before.body, Duration::from_secs(60)).await;

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
    let _broker = NATS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = nats_config(dir.path(), &unique("outage"));
    cfg.ack.budget_ms = 1500;
    cfg.ack.retry_after_s = 1;
    let budget = Duration::from_millis(cfg.ack.budget_ms);
    let srv = Running::start(&cfg).await;
    let before = mixed_batch(1_700_000_700_000);
    let during = mixed_batch(1_700_000_800_000);
    // Before the outage (retried like Graph: a first publish may wait out topic creation).
    deliver_with_retries(&srv, &before.body, Duration::from_secs(60)).await;

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

/// Simulated Graph at a steady rate → `serve` with the spool; the broker stops once events flow
/// and starts again once the spool holds a good part of the load; then everything acked must be
/// in the broker.
async fn outage_with_spool(
    mut cfg: Config,
    dir: &std::path::Path,
    script: &'static str,
    target: Target,
) {
    let _load = LOAD.lock().await;
    cfg.spool.enabled = true;
    cfg.spool.dir = dir.join("spool");
    cfg.ack.budget_ms = 1000;
    cfg.ack.retry_after_s = 1;
    let srv = Running::start(&cfg).await;
    // The load runs until the outage is over, however long stopping and starting the broker
    // takes on a busy machine; the count only caps it.
    let stop = Arc::new(AtomicBool::new(false));
    let mut opts = sim_options(&srv.base, 20_000);
    (opts.rate, opts.batch_size, opts.stop) = (150.0, 10, Some(stop.clone()));
    let sim = tokio::spawn(run(opts, sim_workload(41, 0.05)));

    let bound = Duration::from_secs(60);
    // Stop once events flow straight to the broker (a spool started by a slow first publish,
    // topic creation say, has drained).
    wait_metric(&srv.admin, "graphbridge_accepted_total", bound, |v| {
        v >= 150.0
    })
    .await;
    wait_metric(&srv.admin, "graphbridge_spool_depth_items", bound, |v| {
        v == 0.0
    })
    .await;
    let guard = Restart(script);
    broker_async(script, "stop").await;
    wait_metric(&srv.admin, "graphbridge_spool_depth_items", bound, |v| {
        v >= 300.0
    })
    .await;
    assert_eq!(
        status(&format!("{}/readyz", srv.admin)).await,
        200,
        "spooling, still ready"
    );
    drop(guard);
    // Once the broker is back, the spool drains while new batches keep coming.
    let drained = metric_value(
        &srv.metrics().await,
        "graphbridge_spool_drained_items_total",
    )
    .expect("drain metric");
    wait_metric(
        &srv.admin,
        "graphbridge_spool_drained_items_total",
        Duration::from_secs(120),
        |v| v > drained,
    )
    .await;
    stop.store(true, Ordering::Relaxed);

    let outcomes = sim.await.unwrap().expect("simulation ran");
    wait_metric(
        &srv.admin,
        "graphbridge_spool_depth_items",
        Duration::from_secs(120),
        |v| v == 0.0,
    )
    .await;
    assert_eq!(
        outcomes.acked.len() as u64,
        outcomes.items_sent,
        "every item acked: {outcomes:?}"
    );
    assert!(outcomes.spooled_items >= 300, "{outcomes:?}");
    let v = verify(&target, &outcomes.acked, &outcomes.may_repeat)
        .await
        .expect("reads the broker");
    println!("{v:?}, spooled {}", outcomes.spooled_items);
    assert_eq!(v.missing, 0, "every acked item arrived: {v:?}");
    assert_eq!(v.forbidden_found, 0, "no rejected item arrived: {v:?}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_outage_with_spool_acks_everything_and_drains_it() {
    let _broker = KAFKA.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::kafka::kafka_config(dir.path(), &unique("spool-outage"));
    let target = Target::Kafka(cfg.sink.kafka.clone());
    outage_with_spool(cfg, dir.path(), "kafka.sh", target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_with_spool_acks_everything_and_drains_it() {
    let _broker = NATS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::nats::nats_config(dir.path(), &unique("spool-outage"));
    let target = Target::Nats(cfg.sink.nats.clone());
    outage_with_spool(cfg, dir.path(), "nats.sh", target).await;
}
