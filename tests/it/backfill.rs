//! Backfill: messages fetched from Graph's message APIs become the events their notifications
//! would have produced (same ids), marked as backfilled.

use crate::common;

use std::collections::BTreeMap;

use common::*;
use graphbridge_core::event::fetched::message_event;
use graphbridge_core::graph::envelope::ChangeType;
use graphbridge_core::graph::resource::Conversation;
use graphbridge_sim::generate::MessageSpec;
use serde_json::{json, Value};

const TENANT: &str = "tenant-backfill";

/// A channel message, a reply to it, a chat message; created, edited and deleted ones.
fn specs() -> Vec<MessageSpec> {
    let channel = Conversation::Channel {
        team_id: "team-b".into(),
        channel_id: "19:chan-b@thread.tacv2".into(),
    };
    let chat = Conversation::Chat {
        chat_id: "19:chat-b@unq.gbl.spaces".into(),
    };
    let base = 1_800_001_000_000;
    let mut out = Vec::new();
    for (i, (conversation, change)) in [
        (&channel, ChangeType::Created),
        (&channel, ChangeType::Updated),
        (&channel, ChangeType::Deleted),
        (&chat, ChangeType::Created),
        (&chat, ChangeType::Updated),
        (&chat, ChangeType::Deleted),
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = MessageSpec::new(
            TENANT,
            conversation.clone(),
            base + i as i64 * 1000,
            change,
            &format!("<p>message {i}</p>"),
        );
        if change != ChangeType::Created {
            s.modified_ms += 500;
        }
        out.push(s);
    }
    // A reply, edited.
    let mut reply = MessageSpec::new(
        TENANT,
        channel,
        base + 9000,
        ChangeType::Updated,
        "<p>re</p>",
    );
    reply.reply_to_id = Some(base.to_string());
    reply.modified_ms += 700;
    out.push(reply);
    out
}

#[tokio::test]
async fn a_fetched_message_gets_the_event_id_of_its_notification() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path());
    let srv = Running::start(&cfg).await;
    let r = synthetic_recipient();
    let specs = specs();
    let items: Vec<Value> = specs
        .iter()
        .map(|s| s.notification("sub-b", SYNTH_CLIENT_STATE, &r))
        .collect();
    assert_eq!(
        srv.post_json("/notifications", &json!({ "value": items }))
            .await
            .status(),
        202
    );
    srv.shutdown().await;
    let notified: BTreeMap<String, Value> = jsonl(&cfg.sink.file.path)
        .into_iter()
        .map(|e| (e["data"]["message_id"].as_str().unwrap().to_string(), e))
        .collect();
    assert_eq!(notified.len(), specs.len());

    for s in &specs {
        let body = serde_json::to_vec(&s.chat_message()).unwrap();
        let event =
            message_event(TENANT, "sub-b", &body, "2026-12-03T12:00:00.000Z", false).unwrap();
        let fetched = serde_json::to_value(&event).unwrap();
        assert_valid_event(&fetched);
        let original = &notified[&s.message_id];
        assert_eq!(fetched["id"], original["id"], "{}", s.resource());
        assert_eq!(fetched["type"], original["type"]);
        // The same data, but for when it was received (notified) or fetched (backfilled).
        let without_received_at = |e: &Value| {
            let mut d = e["data"].clone();
            d.as_object_mut().unwrap().remove("received_at");
            d
        };
        assert_eq!(without_received_at(&fetched), without_received_at(original));
        assert_eq!(fetched["graphbridgeorigin"], "backfill");
        assert!(original.get("graphbridgeorigin").is_none());
    }
}
