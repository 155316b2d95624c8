//! The NATS sink against a real nats-server with JetStream, started by scripts/brokers.sh.

use crate::common;

use common::nats::*;
use common::*;
use graphbridge_core::sink::nats::escape_token;

#[tokio::test]
async fn mixed_batch_lands_on_escaped_subjects_with_msg_ids() {
    common::needs!(mixed_batch_lands_on_escaped_subjects_with_msg_ids: "GRAPHBRIDGE_TEST_NATS");
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("mixed");
    let cfg = nats_config(dir.path(), &prefix);
    let srv = Running::start(&cfg).await;
    let batch = mixed_batch(1_700_000_300_000);
    assert_eq!(
        srv.post_json("/notifications", &batch.body).await.status(),
        202
    );

    let stored = read_stream(&cfg.sink.nats.stream).await;
    assert_eq!(stored.len(), 7, "4 events + 3 dead letters");
    let events: Vec<&Stored> = stored
        .iter()
        .filter(|m| !m.subject.ends_with(".deadletter"))
        .collect();
    let subjects: Vec<&str> = events.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        vec![
            format!(
                "{prefix}.v1.teams.{REAL_TEAM}.channels.{}.messages",
                escape_token("19:etTE40ziboDEfQ1v0B96_nCVjGUsZ77LQa5KRb0cukQ1@thread.tacv2")
            ),
            format!("{prefix}.v1.chats.{}.messages", escape_token(SYNTH_CHAT)),
            format!(
                "{prefix}.v1.teams.team%2Ewith%2Edots.channels.19:chan@thread%2Etacv2.messages"
            ),
            format!("{prefix}.v1.lifecycle.reauthorizationRequired"),
        ]
    );
    for m in &events {
        assert_valid_event(&m.payload);
        assert_eq!(m.msg_id, m.payload["id"].as_str().unwrap());
        assert!(m
            .headers
            .iter()
            .any(|(k, v)| k == "ce_type" && v == m.payload["type"].as_str().unwrap()));
    }
    let reasons: Vec<&str> = stored
        .iter()
        .filter(|m| m.subject.ends_with(".deadletter"))
        .map(|m| m.payload["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, batch.rejected);
    srv.shutdown().await;
}

#[tokio::test]
async fn redelivered_batch_is_dropped_by_the_duplicate_window() {
    common::needs!(redelivered_batch_is_dropped_by_the_duplicate_window: "GRAPHBRIDGE_TEST_NATS");
    let dir = tempfile::tempdir().unwrap();
    let cfg = nats_config(dir.path(), &unique("dup"));
    let srv = Running::start(&cfg).await;
    let batch = mixed_batch(1_700_000_400_000);
    assert_eq!(
        srv.post_json("/notifications", &batch.body).await.status(),
        202
    );
    let first: Vec<String> = read_stream(&cfg.sink.nats.stream)
        .await
        .into_iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(
        srv.post_json("/notifications", &batch.body).await.status(),
        202
    );
    let second: Vec<String> = read_stream(&cfg.sink.nats.stream)
        .await
        .into_iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(first.len(), 7);
    assert_eq!(
        first, second,
        "the second copy is acknowledged but not stored again"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn readiness_is_green_when_connected() {
    common::needs!(readiness_is_green_when_connected: "GRAPHBRIDGE_TEST_NATS");
    let dir = tempfile::tempdir().unwrap();
    let srv = Running::start(&nats_config(dir.path(), &unique("ready"))).await;
    assert_eq!(srv.admin_status("/readyz").await, 200);
    srv.shutdown().await;
}
