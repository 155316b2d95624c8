//! End to end: `graphbridge simulate` drives `serve`, which publishes to the real Kafka and the
//! real NATS; the simulator's verifier reads everything back and checks that every acked item
//! arrived exactly once by event id and that no rejected item arrived.

use crate::common;

use common::*;
use std::sync::Arc;

use graphbridge_sim::issuer::Issuer;
use graphbridge_sim::report::Report;
use graphbridge_sim::run::{run, RunOptions};
use graphbridge_sim::verify::{verify, Target};
use graphbridge_sim::workload::Workload;

const ITEMS: u64 = 3000;

async fn simulate_and_verify(
    srv: &Running,
    issuer: Arc<Issuer>,
    target: Target,
    seed: u64,
) -> Report {
    simulate_workload_and_verify(srv, issuer, target, sim_workload(seed, 0.06), false).await
}

async fn simulate_workload_and_verify(
    srv: &Running,
    issuer: Arc<Issuer>,
    target: Target,
    workload: Workload,
    pregenerate: bool,
) -> Report {
    let outcomes = run(
        RunOptions {
            issuer: Some(issuer),
            pregenerate,
            ..sim_options(&srv.base, ITEMS)
        },
        workload,
    )
    .await
    .expect("simulation runs");
    let verification = verify(&target, &outcomes.acked, &outcomes.may_repeat)
        .await
        .expect("verification reads the broker");
    let report = Report::new(&outcomes, None, Some(verification));
    println!("{report}");
    report
}

fn assert_good(report: &Report) {
    assert_eq!(report.items_sent, ITEMS);
    assert_eq!(report.items_acked as u64, ITEMS, "every item acked");
    assert_eq!(
        report.mismatched_batches, 0,
        "bridge rejected exactly the planned items"
    );
    let rejected: u64 = report.rejected.values().sum();
    assert!(
        rejected > 0 && report.rejected.len() == 3,
        "all three bad kinds were sent: {:?}",
        report.rejected
    );
    let v = report.verification.as_ref().unwrap();
    assert_eq!(v.expected as u64 + v.rejected_expected_absent as u64, ITEMS);
    assert_eq!(v.missing, 0);
    assert_eq!(v.forbidden_found, 0);
    assert!(v.passed);
}

#[tokio::test]
async fn simulator_to_serve_to_kafka_exactly_once() {
    common::needs!(simulator_to_serve_to_kafka_exactly_once: "GRAPHBRIDGE_TEST_KAFKA");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::kafka::kafka_config(dir.path(), &unique("e2e"));
    let issuer = with_tokens(&mut cfg).await;
    let srv = Running::start(&cfg).await;
    let report = simulate_and_verify(&srv, issuer, Target::Kafka(cfg.sink.kafka.clone()), 11).await;
    assert_good(&report);
    // Graph resends a batch it saw fail or time out, and the first attempt may have reached
    // Kafka; any other copy would be the bridge's own doing.
    assert_eq!(
        report.verification.as_ref().unwrap().unexplained_duplicates,
        0
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn reused_wrapped_key_is_served_from_the_cache_and_still_verified() {
    common::needs!(reused_wrapped_key_is_served_from_the_cache_and_still_verified: "GRAPHBRIDGE_TEST_KAFKA");
    // One wrapped key for every item: after the first, the key cache answers and batches are
    // opened without RSA. Tampered items (same key, altered data) must still be caught by the
    // HMAC, and every good item must reach Kafka exactly once. The batches are built before
    // sending, as in the pass-through benchmark (`--pregenerate`).
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::kafka::kafka_config(dir.path(), &unique("e2e-cached"));
    let issuer = with_tokens(&mut cfg).await;
    let srv = Running::start(&cfg).await;
    let workload = sim_workload_keyed(14, 0.06, true);
    let report = simulate_workload_and_verify(
        &srv,
        issuer,
        Target::Kafka(cfg.sink.kafka.clone()),
        workload,
        true,
    )
    .await;
    assert_good(&report);
    assert!(report.rejected.contains_key("signature_mismatch"));
    srv.shutdown().await;
}

#[tokio::test]
async fn simulator_to_serve_to_nats_exactly_once() {
    common::needs!(simulator_to_serve_to_nats_exactly_once: "GRAPHBRIDGE_TEST_NATS");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::nats::nats_config(dir.path(), &unique("e2e"));
    let issuer = with_tokens(&mut cfg).await;
    let srv = Running::start(&cfg).await;
    let report = simulate_and_verify(&srv, issuer, Target::Nats(cfg.sink.nats.clone()), 12).await;
    assert_good(&report);
    srv.shutdown().await;
}

#[tokio::test]
async fn simulator_to_serve_to_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let issuer = with_tokens(&mut cfg).await;
    let srv = Running::start(&cfg).await;
    let report =
        simulate_and_verify(&srv, issuer, Target::File(cfg.sink.file.path.clone()), 13).await;
    assert_good(&report);
    // Every emitted event of the realistic workload validates against the v1 schema.
    for e in jsonl(&cfg.sink.file.path) {
        assert_valid_event(&e);
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn handshake_failure_is_loud() {
    // A server that answers the handshake wrongly (HTML, re-encoded) must stop the simulator.
    let app = axum::Router::new().route(
        "/notifications",
        axum::routing::post(|| async { ([("content-type", "text/html")], "Validation%3A") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let err = run(sim_options(&base, ITEMS), sim_workload(1, 0.06))
        .await
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("handshake"), "{err}");
}
