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

mod message_apis {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::{DateTime, Utc};
    use graphbridge_core::config::{Config, Secret};
    use graphbridge_core::graph::envelope::ChangeType;
    use graphbridge_core::graph::resource::Conversation;
    use graphbridge_graph_api::messages::Window;
    use graphbridge_graph_api::oauth::TokenSource;
    use graphbridge_graph_api::subscriptions::GraphClient;
    use graphbridge_sim::generate::MessageSpec;
    use graphbridge_sim::graph_api::{Fault, GraphStandIn, StandInOptions};
    use serde_json::Value;
    use tokio::net::TcpListener;

    const TENANT: &str = "4a1b5c2d-0000-4000-8000-000000000001";
    const TEAM: &str = "team-m";
    const BASE: i64 = 1_800_002_000_000;

    async fn setup(page_size: usize) -> (GraphStandIn, GraphClient) {
        let graph = GraphStandIn::new(StandInOptions {
            page_size,
            ..StandInOptions::default()
        });
        let base = graph.serve(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let mut cfg = Config::defaults();
        cfg.graph.auth.authority = base.clone();
        cfg.graph.auth.client_id = Some(StandInOptions::default().client_id);
        cfg.graph.auth.client_secret = Some(Secret::new(StandInOptions::default().client_secret));
        let http = graphbridge_graph_api::subscriptions::http_client();
        let tokens = TokenSource::new(&cfg.graph.auth, TENANT, http.clone()).unwrap();
        let client = GraphClient::new(&format!("{base}/v1.0"), http, Arc::new(tokens));
        (graph, client)
    }

    fn channel(n: usize) -> Conversation {
        Conversation::Channel {
            team_id: TEAM.into(),
            channel_id: format!("19:ch{n}@thread.tacv2"),
        }
    }

    /// Message `i` of `conversation`, last modified at BASE + i seconds.
    fn message(conversation: Conversation, i: i64) -> Value {
        let mut s = MessageSpec::new(
            TENANT,
            conversation,
            BASE + i * 1000,
            ChangeType::Created,
            "<p>x</p>",
        );
        s.modified_ms = BASE + i * 1000;
        s.chat_message()
    }

    fn at(i: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(BASE + i * 1000).unwrap()
    }

    fn ids(v: &[Box<serde_json::value::RawValue>]) -> Vec<i64> {
        v.iter()
            .map(|m| {
                let m: Value = serde_json::from_str(m.get()).unwrap();
                (m["id"].as_str().unwrap().parse::<i64>().unwrap() - BASE) / 1000
            })
            .collect()
    }

    #[tokio::test]
    async fn a_window_is_read_exactly_across_pages() {
        let (graph, client) = setup(3).await;
        for i in 0..12 {
            graph.put_message(TENANT, message(channel(i as usize % 2), i));
        }
        graph.put_message(
            TENANT,
            message(
                Conversation::Chat {
                    chat_id: "19:c@unq".into(),
                },
                5,
            ),
        );
        // (2, 9) exclusive: 3..=8, six messages over two pages of three.
        let got = client
            .team_channel_messages(
                TEAM,
                Window {
                    from: at(2),
                    to: at(9),
                },
                Some("B"),
            )
            .await
            .unwrap();
        let mut got = ids(&got.messages);
        got.sort();
        assert_eq!(got, [3, 4, 5, 6, 7, 8]);
        assert_eq!(
            graph.count("GET", "/v1.0/teams/team-m/channels/getAllMessages", 200),
            2
        );
        assert_eq!(client.team_ids().await.unwrap(), [TEAM]);

        let chat = client
            .chat_messages(
                "19:c@unq",
                Window {
                    from: at(0),
                    to: at(20),
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&chat.messages), [5]);
    }

    #[tokio::test]
    async fn throttling_is_waited_out_and_no_call_comes_before_retry_after() {
        let (graph, client) = setup(2).await;
        for i in 0..5 {
            graph.put_message(TENANT, message(channel(0), i));
        }
        for _ in 0..2 {
            graph.inject(Fault {
                method: Some(axum::http::Method::GET),
                status: 429,
                retry_after_s: Some(1),
            });
        }
        let got = client
            .team_channel_messages(
                TEAM,
                Window {
                    from: at(-1),
                    to: at(10),
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(ids(&got.messages).len(), 5);
        let log: Vec<_> = graph
            .log()
            .into_iter()
            .filter(|l| l.path.contains("getAllMessages"))
            .collect();
        let statuses: Vec<u16> = log.iter().map(|l| l.status).collect();
        assert_eq!(statuses, [429, 429, 200, 200, 200]);
        for pair in log.windows(2).take(2) {
            let waited = pair[1].at - pair[0].at;
            assert!(
                waited >= Duration::from_secs(1),
                "called again after {waited:?}"
            );
        }
    }

    #[tokio::test]
    async fn delta_returns_what_changed_since_the_stored_link() {
        let (graph, client) = setup(2).await;
        for i in 0..3 {
            graph.put_message(TENANT, message(channel(0), i));
        }
        let first = client
            .channel_delta(TEAM, "19:ch0@thread.tacv2", None)
            .await
            .unwrap();
        assert_eq!(ids(&first.messages).len(), 3);
        let link = first.delta_link.expect("a deltaLink");
        graph.put_message(TENANT, message(channel(0), 7));
        graph.put_message(TENANT, message(channel(1), 8));
        let next = client
            .channel_delta(TEAM, "19:ch0@thread.tacv2", Some(&link))
            .await
            .unwrap();
        assert_eq!(ids(&next.messages), [7]);
        assert!(next.delta_link.is_some());
    }
}
