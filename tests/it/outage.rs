//! Broker outages against the real brokers: while Kafka or NATS is stopped the ingress answers
//! 503 + Retry-After within the ack budget and `/readyz` turns red; once it is back, Graph's
//! retry is accepted and every notification that ever got a 2xx is in the broker.
//!
//! With the spool on, the same outage under a steady simulated load is absorbed: every batch is
//! acknowledged, the spooled ones are drained once the broker is back, and every acknowledged
//! item is in the broker exactly once by event id after consumer dedupe.
//!
//! Each test runs a broker of its own (the project's scripts, on free loopback ports, data in a
//! temporary directory), so stopping it disturbs no other test of the suite. A guard restarts
//! it even if an assertion fails, and stops it when the test ends.

use crate::common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use graphbridge_core::config::{Config, SinkKind};
use graphbridge_sim::run::run;
use graphbridge_sim::verify::{verify, Target};
use serde_json::Value;

/// Two mixed batches with different seeds: 4 events each, 2 of them shared.
const DISTINCT_EVENTS: usize = 6;

/// A Kafka or NATS of one test's own: `scripts/kafka.sh` or `scripts/nats.sh` with its ports
/// and run directory taken from the environment. Stopped (and its data removed) when dropped.
struct OwnBroker {
    script: &'static str,
    env: Vec<(&'static str, String)>,
    /// Bootstrap servers (Kafka) or URL (NATS).
    addr: String,
    _run: tempfile::TempDir,
}

/// A port nothing listens on right now (the broker binds it moments later), below the
/// ephemeral range: while the broker is stopped, a client reconnecting to an ephemeral port on
/// loopback can be given that very port as its own and connect to itself, which stalls it.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Start where the process id says and step on: concurrent runs rarely meet.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    (0..12_000)
        .map(|_| {
            (20_000 + start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000) as u16
        })
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port below the ephemeral range")
}

impl OwnBroker {
    fn kafka() -> Self {
        let port = free_port();
        Self::start(
            "kafka.sh",
            vec![
                ("KAFKA_PORT", port.to_string()),
                ("KAFKA_CONTROLLER_PORT", free_port().to_string()),
                // The secured listeners come along; not used here, but not on the shared ports.
                ("KAFKA_SASL_PORT", free_port().to_string()),
                ("KAFKA_MTLS_PORT", free_port().to_string()),
            ],
            format!("127.0.0.1:{port}"),
        )
    }

    fn nats() -> Self {
        let port = free_port();
        Self::start(
            "nats.sh",
            vec![
                ("NATS_PORT", port.to_string()),
                ("NATS_MON_PORT", free_port().to_string()),
                ("NATS_SECURE_PORT", free_port().to_string()),
                ("NATS_SECURE_MON_PORT", free_port().to_string()),
            ],
            format!("nats://127.0.0.1:{port}"),
        )
    }

    fn start(script: &'static str, mut env: Vec<(&'static str, String)>, addr: String) -> Self {
        let run = tempfile::tempdir().unwrap();
        env.push(("GRAPHBRIDGE_RUN", run.path().display().to_string()));
        let broker = OwnBroker {
            script,
            env,
            addr,
            _run: run,
        };
        broker.run("start");
        broker
    }

    fn command(&self, action: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(script_path(self.script))
            .arg(action)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn run(&self, action: &str) {
        let status = self.command(action).status().expect("run broker script");
        assert!(status.success(), "{} {action} failed", self.script);
    }

    /// Runs the script without blocking the runtime (load keeps running meanwhile).
    async fn run_async(&self, action: &str) {
        let status = tokio::process::Command::from(self.command(action))
            .status()
            .await
            .expect("run broker script");
        assert!(status.success(), "{} {action} failed", self.script);
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.command("stop").status();
    }
}

fn script_path(script: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script)
}

/// Held by the tests that run a steady simulated load, so two of them never share the CPU:
/// each needs the bridge to keep up with its rate for the outage to be the only disturbance.
static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Ends the outage when dropped: starts the broker again (waiting until it serves). Not an
/// assertion here: a panic while unwinding would abort; a broker that did not come back fails
/// the test's next delivery instead.
struct Restart<'a>(&'a OwnBroker);
impl Drop for Restart<'_> {
    fn drop(&mut self) {
        let _ = self.0.command("start").status();
    }
}

async fn status(url: &str) -> u16 {
    graphbridge_core::http::client()
        .get(url)
        .send()
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
    common::needs!(kafka_outage_gives_503_then_delivers_everything_acked: "GRAPHBRIDGE_TEST_KAFKA");
    use common::kafka::*;
    let broker = OwnBroker::kafka();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = kafka_config(dir.path(), &unique("outage"));
    cfg.sink.kafka.brokers = broker.addr.clone();
    cfg.ack.budget_ms = 1500;
    cfg.ack.retry_after_s = 1;
    let budget = Duration::from_millis(cfg.ack.budget_ms);
    let srv = Running::start(&cfg).await;
    let before = mixed_batch(1_700_000_500_000);
    let during = mixed_batch(1_700_000_600_000);
    // Before the outage (retried like Graph: a first publish may wait out topic creation).
    deliver_with_retries(&srv, &before.body, Duration::from_secs(60)).await;

    let guard = Restart(&broker);
    broker.run("stop");
    assert_outage_answers(&srv, &during.body, budget).await;
    drop(guard); // starts Kafka and waits until it serves requests

    deliver_with_retries(&srv, &during.body, Duration::from_secs(90)).await;
    let t = &cfg.sink.kafka.topics;
    let topics = [t.channel_messages.as_str(), t.chat_messages.as_str()];
    // Both batches carry the same two vector items (same ids), so 2 + 2 distinct message events
    // were acked; copies queued by the first attempt may also have landed and are deduped by id.
    let got = consume_until_distinct_at(
        &broker.addr,
        &topics,
        DISTINCT_EVENTS - 2,
        Duration::from_secs(60),
    )
    .await;
    let ids: HashSet<String> = got.iter().map(|m| m.headers["ce_id"].clone()).collect();
    assert_eq!(
        ids.len(),
        DISTINCT_EVENTS - 2,
        "every acked message event, exactly once after dedupe by id"
    );
    // Each batch's lifecycle notification arrived (at least once: a retried request's copy is a
    // signal of its own, as Graph's lifecycle notifications carry no id).
    let subscriptions = |got: &[common::kafka::Consumed]| -> HashSet<String> {
        got.iter()
            .filter_map(|m| {
                m.json()["data"]["subscription_id"]
                    .as_str()
                    .map(String::from)
            })
            .collect()
    };
    let (_, lifecycle) = common::kafka::consume_until(
        &broker.addr,
        &[t.lifecycle.as_str()],
        Duration::from_secs(60),
        |got| subscriptions(got).len() >= 2,
    )
    .await;
    let subscriptions = subscriptions(&lifecycle);
    assert_eq!(
        subscriptions.len(),
        2,
        "both batches' lifecycle notifications"
    );
    assert_eq!(status(&format!("{}/readyz", srv.admin)).await, 200);
    srv.shutdown().await;
}

#[tokio::test]
async fn nats_outage_gives_503_then_delivers_everything_acked() {
    common::needs!(nats_outage_gives_503_then_delivers_everything_acked: "GRAPHBRIDGE_TEST_NATS");
    use common::nats::*;
    let broker = OwnBroker::nats();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = nats_config(dir.path(), &unique("outage"));
    cfg.sink.nats.url = broker.addr.clone();
    cfg.ack.budget_ms = 1500;
    cfg.ack.retry_after_s = 1;
    let budget = Duration::from_millis(cfg.ack.budget_ms);
    let srv = Running::start(&cfg).await;
    let before = mixed_batch(1_700_000_700_000);
    let during = mixed_batch(1_700_000_800_000);
    // Before the outage (retried like Graph: a first publish may wait out topic creation).
    deliver_with_retries(&srv, &before.body, Duration::from_secs(60)).await;

    let guard = Restart(&broker);
    broker.run("stop");
    assert_outage_answers(&srv, &during.body, budget).await;
    drop(guard);

    deliver_with_retries(&srv, &during.body, Duration::from_secs(60)).await;
    let stored = read_stream_at(&broker.addr, &cfg.sink.nats.stream).await;
    // JetStream's duplicate window removed any copy of the first attempt: exactly once.
    let events: Vec<&Stored> = stored
        .iter()
        .filter(|m| !m.subject.ends_with(".deadletter"))
        .collect();
    // Message events exactly once; the two batches' lifecycle notifications (one each, with
    // different subscriptions) at least once: they carry no id of Graph's, so a retried
    // request's copy is a signal of its own (acting twice is harmless, dropping one is not).
    let (lifecycle, messages): (Vec<&Stored>, Vec<&Stored>) = events
        .iter()
        .partition(|m| m.subject.contains(".lifecycle."));
    let ids: HashSet<&str> = messages.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(messages.len(), DISTINCT_EVENTS - 2);
    assert_eq!(ids.len(), DISTINCT_EVENTS - 2);
    let subscriptions: HashSet<&str> = lifecycle
        .iter()
        .filter_map(|m| m.payload["data"]["subscription_id"].as_str())
        .collect();
    assert_eq!(
        subscriptions.len(),
        2,
        "both batches' lifecycle notifications"
    );
    // Two rejects are the same in both batches, the tampered one differs: 3 + 1.
    assert_eq!(stored.len() - events.len(), 4);
    srv.shutdown().await;
}

/// How soon the drain must resume once the broker serves again: the drainer retries at least
/// every second and the clients reconnect at least every second (about 2 s at worst), with
/// room for a loaded machine.
const RESUME_BOUND: Duration = Duration::from_secs(5);

/// Simulated Graph at a steady rate → `serve` with the spool; the broker stops once events flow
/// and starts again once the spool holds a good part of the load; then everything acked must be
/// in the broker.
async fn outage_with_spool(mut cfg: Config, dir: &std::path::Path, broker: &OwnBroker) {
    let target = match cfg.sink.kind {
        SinkKind::Kafka => Target::Kafka(cfg.sink.kafka.clone()),
        _ => Target::Nats(cfg.sink.nats.clone()),
    };
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
    let guard = Restart(broker);
    broker.run_async("stop").await;
    // Long enough down (about 15 s at 150 items/s) that the clients' reconnect backoff has
    // grown and a drain publish has been waiting for a while.
    wait_metric(&srv.admin, "graphbridge_spool_depth_items", bound, |v| {
        v >= 2000.0
    })
    .await;
    assert_eq!(
        status(&format!("{}/readyz", srv.admin)).await,
        200,
        "spooling, still ready"
    );
    let drained = metric_value(
        &srv.metrics().await,
        "graphbridge_spool_drained_items_total",
    )
    .expect("drain metric");
    drop(guard); // returns once the broker serves again
    let back = std::time::Instant::now();
    // Once the broker is back, the spool drains while new batches keep coming: at once, not
    // after a publish timeout and the client's reconnect backoff (they took 6-14 s).
    wait_metric(
        &srv.admin,
        "graphbridge_spool_drained_items_total",
        Duration::from_secs(120),
        |v| v > drained,
    )
    .await;
    let resumed = back.elapsed();
    println!("drain resumed {resumed:?} after the broker was back");
    assert!(
        resumed < RESUME_BOUND,
        "the drain resumed {resumed:?} after the broker was back"
    );
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
    assert!(outcomes.spooled_items >= 2000, "{outcomes:?}");
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
    common::needs!(kafka_outage_with_spool_acks_everything_and_drains_it: "GRAPHBRIDGE_TEST_KAFKA");
    let broker = OwnBroker::kafka();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::kafka::kafka_config(dir.path(), &unique("spool-outage"));
    cfg.sink.kafka.brokers = broker.addr.clone();
    outage_with_spool(cfg, dir.path(), &broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_with_spool_acks_everything_and_drains_it() {
    common::needs!(nats_outage_with_spool_acks_everything_and_drains_it: "GRAPHBRIDGE_TEST_NATS");
    let broker = OwnBroker::nats();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::nats::nats_config(dir.path(), &unique("spool-outage"));
    cfg.sink.nats.url = broker.addr.clone();
    outage_with_spool(cfg, dir.path(), &broker).await;
}
