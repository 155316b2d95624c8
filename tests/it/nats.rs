//! The NATS sink against a real nats-server with JetStream, started by scripts/brokers.sh: each
//! test on the plaintext server and again on the secured one (TLS with a client certificate,
//! user and password or an NKey).

use crate::common;

use common::nats::*;
use common::secure::{self, per_listener, Nats};
use common::*;
use graphbridge_core::sink::nats::escape_token;

per_listener!(mixed_batch_lands_on_escaped_subjects_with_msg_ids: plaintext => Nats::Plaintext, tls_password => Nats::Password, tls_nkey => Nats::Nkey);
async fn mixed_batch_lands_on_escaped_subjects_with_msg_ids(listener: Nats) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("mixed");
    let cfg = secure::nats(nats_config(dir.path(), &prefix), listener);
    let srv = Running::start(&cfg).await;
    let batch = mixed_batch(1_700_000_300_000);
    assert_eq!(
        srv.post_json("/notifications", &batch.body).await.status(),
        202
    );

    let stored = read_stream_with(&cfg.sink.nats).await;
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

per_listener!(redelivered_batch_is_dropped_by_the_duplicate_window: plaintext => Nats::Plaintext, tls_password => Nats::Password);
async fn redelivered_batch_is_dropped_by_the_duplicate_window(listener: Nats) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = secure::nats(nats_config(dir.path(), &unique("dup")), listener);
    let srv = Running::start(&cfg).await;
    let batch = mixed_batch(1_700_000_400_000);
    assert_eq!(
        srv.post_json("/notifications", &batch.body).await.status(),
        202
    );
    let first: Vec<String> = read_stream_with(&cfg.sink.nats)
        .await
        .into_iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(
        srv.post_json("/notifications", &batch.body).await.status(),
        202
    );
    let second: Vec<String> = read_stream_with(&cfg.sink.nats)
        .await
        .into_iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(first.len(), 7);
    // The events and dead letters are not stored again. The lifecycle notification is: Graph's
    // carry no id, so a second one is a new signal (acting twice is harmless, dropping one not).
    assert_eq!(second.len(), 8, "{second:?}");
    assert_eq!(
        second[..7],
        first[..],
        "the second copy's events are acknowledged but not stored again"
    );
    srv.shutdown().await;
}

per_listener!(repeated_lifecycle_notifications_are_all_kept: plaintext => Nats::Plaintext, tls_nkey => Nats::Nkey);
/// Three `missed` for one subscription, two of them identical in one request: three events,
/// none dropped by JetStream's duplicate window.
async fn repeated_lifecycle_notifications_are_all_kept(listener: Nats) {
    use graphbridge_sim::generate::lifecycle_item;
    let dir = tempfile::tempdir().unwrap();
    let cfg = secure::nats(nats_config(dir.path(), &unique("missed3")), listener);
    let srv = Running::start(&cfg).await;
    let missed = lifecycle_item(
        "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
        "9f4ebab6-520d-49c0-85cc-7b25c78d4a93",
        SYNTH_CLIENT_STATE,
        "missed",
        "2026-12-04T10:00:00Z",
    );
    let two = serde_json::json!({ "value": [missed.clone(), missed.clone()] });
    let one = serde_json::json!({ "value": [missed] });
    assert_eq!(srv.post_json("/lifecycle", &two).await.status(), 202);
    assert_eq!(srv.post_json("/lifecycle", &one).await.status(), 202);
    let stored = read_stream_with(&cfg.sink.nats).await;
    let ids: std::collections::HashSet<&str> = stored.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!((stored.len(), ids.len()), (3, 3), "{stored:?}");
    srv.shutdown().await;
}

per_listener!(readiness_is_green_when_connected: plaintext => Nats::Plaintext, tls_password => Nats::Password, tls_nkey => Nats::Nkey);
async fn readiness_is_green_when_connected(listener: Nats) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = secure::nats(nats_config(dir.path(), &unique("ready")), listener);
    let srv = Running::start(&cfg).await;
    assert_eq!(srv.admin_status("/readyz").await, 200);
    srv.shutdown().await;
}
