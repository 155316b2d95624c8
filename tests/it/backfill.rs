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
use std::collections::HashSet;

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

/// The whole loop against real brokers: the bridge gets 90 % of the notifications, the
/// controller's `resync_required` names the gaps, and the worker fills them from the Graph
/// stand-in until every message is in the stream under its notification's event id.
mod end_to_end {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    use graphbridge::backfill::worker::{self, Source};
    use graphbridge_core::config::{Config, Secret};
    use graphbridge_core::event::fetched::message_event;
    use graphbridge_core::event::v1::LifecycleEvent;
    use graphbridge_core::graph::envelope::ChangeType;
    use graphbridge_core::graph::resource::Conversation;
    use graphbridge_core::sink::{Record, Sink};
    use graphbridge_core::telemetry::Metrics;
    use graphbridge_sim::generate::MessageSpec;
    use graphbridge_sim::graph_api::{GraphStandIn, StandInOptions};
    use serde_json::json;
    use tokio::net::TcpListener;

    use crate::common::{self, *};

    const TENANT: &str = "6d1c5b4a-0000-4000-8000-00000000e2e0";
    const SUB: &str = "sub-e2e";
    const SENDER: &str = "a660dbf8-1ebf-4be9-be48-19c602bf5194";

    /// `n` messages over two teams (two channels each, replies among them) and three chats,
    /// every fifth edited and every seventh deleted, modified in the last few minutes.
    fn specs(n: usize) -> Vec<MessageSpec> {
        let now = chrono::Utc::now().timestamp_millis() - 5 * 60_000;
        (0..n)
            .map(|i| {
                let conversation = match i % 7 {
                    0..=3 => Conversation::Channel {
                        team_id: format!("team-{}", i % 2),
                        channel_id: format!("19:ch{}@thread.tacv2", i % 4 / 2),
                    },
                    _ => Conversation::Chat {
                        chat_id: format!("19:chat{}@unq.gbl.spaces", i % 3),
                    },
                };
                let change = if i % 7 == 6 {
                    ChangeType::Deleted
                } else if i % 5 == 4 {
                    ChangeType::Updated
                } else {
                    ChangeType::Created
                };
                let id = now + i as i64 * 10;
                let mut s = MessageSpec::new(
                    TENANT,
                    conversation.clone(),
                    id,
                    change,
                    &format!("<p>m{i}</p>"),
                );
                if change != ChangeType::Created {
                    s.modified_ms = id + 5;
                }
                // Every third channel message is a reply to the first message of its channel.
                if matches!(conversation, Conversation::Channel { .. }) && i % 3 == 2 && i >= 8 {
                    s.reply_to_id = Some((now + (i as i64 % 4) * 10).to_string());
                }
                s
            })
            .collect()
    }

    fn resync(resource: &str, from: &str, to: &str) -> LifecycleEvent {
        common::resync_event(TENANT, SUB, resource, from, to)
    }

    async fn graph(cfg: &mut Config) -> GraphStandIn {
        let g = GraphStandIn::new(StandInOptions::default());
        let base = g.serve(TcpListener::bind("127.0.0.1:0").await.unwrap());
        cfg.graph.api_base = format!("{base}/v1.0");
        cfg.graph.auth.authority = base;
        cfg.graph.auth.client_id = Some(StandInOptions::default().client_id);
        cfg.graph.auth.client_secret = Some(Secret::new(StandInOptions::default().client_secret));
        cfg.backfill.users = vec![SENDER.into()];
        g
    }

    /// Sends 90 % of the notifications to the bridge at `srv`, all messages to Graph's store,
    /// then the two gaps to the lifecycle stream through `sink`; returns every expected event
    /// id and the ids of the dropped ones.
    async fn scenario(
        cfg: &Config,
        graph: &GraphStandIn,
        srv: &Running,
        sink: &dyn Sink,
        n: usize,
    ) -> (HashSet<String>, HashSet<String>) {
        let specs = specs(n);
        let r = synthetic_recipient();
        let mut expected = HashSet::new();
        let mut dropped = HashSet::new();
        let mut delivered = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let body = serde_json::to_vec(&s.chat_message()).unwrap();
            graph.put_message(TENANT, s.chat_message());
            let id = message_event(TENANT, SUB, &body, "2026-01-01T00:00:00.000Z", false)
                .unwrap()
                .id;
            expected.insert(id.clone());
            if i % 10 == 3 {
                dropped.insert(id);
            } else {
                delivered.push(s.notification(SUB, SYNTH_CLIENT_STATE, &r));
            }
        }
        for chunk in delivered.chunks(50) {
            let resp = srv
                .post_json("/notifications", &json!({ "value": chunk }))
                .await;
            assert_eq!(resp.status(), 202);
        }
        let from = (chrono::Utc::now() - chrono::Duration::minutes(30)).to_rfc3339();
        let to = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339();
        let gaps = ["/teams/getAllMessages", "/chats/getAllMessages"]
            .map(|r| Record::lifecycle(resync(r, &from, &to)));
        sink.publish(&gaps).await.unwrap();
        let _ = cfg;
        (expected, dropped)
    }

    #[tokio::test]
    async fn kafka_every_dropped_notification_is_backfilled_under_its_id() {
        common::needs!(kafka_every_dropped_notification_is_backfilled_under_its_id: "GRAPHBRIDGE_TEST_KAFKA");
        use common::kafka::*;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = kafka_config(dir.path(), &unique("bf"));
        cfg.backfill.consumer_group = unique("bf-group");
        let graph = graph(&mut cfg).await;
        let srv = Running::start(&cfg).await;
        let sink: Arc<dyn Sink> =
            Arc::new(graphbridge_core::sink::kafka::KafkaSink::new(&cfg.sink.kafka).unwrap());
        let (expected, dropped) = scenario(&cfg, &graph, &srv, sink.as_ref(), 2000).await;

        let metrics = Metrics::new();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let source = Source::broker(&cfg).await.unwrap();
        let run = {
            let (cfg, sink, metrics) = (cfg.clone(), sink.clone(), metrics.clone());
            tokio::spawn(async move { worker::run(&cfg, source, sink, metrics, stop).await })
        };
        let t = &cfg.sink.kafka.topics;
        let got = consume_until_distinct(
            &[&t.channel_messages, &t.chat_messages],
            expected.len(),
            Duration::from_secs(90),
        )
        .await;
        let ids: HashSet<String> = got.iter().map(|m| m.headers["ce_id"].clone()).collect();
        assert_eq!(ids, expected, "every message, under its notification's id");
        for m in got.iter().filter(|m| dropped.contains(&m.headers["ce_id"])) {
            assert_eq!(
                m.headers.get("ce_graphbridgeorigin").map(String::as_str),
                Some("backfill")
            );
            assert_valid_event(&m.json());
        }
        let duplicates = got.len() - ids.len();
        println!(
            "{} messages, {} notifications dropped, {} records, {duplicates} duplicates by id",
            expected.len(),
            dropped.len(),
            got.len()
        );
        let _ = stop_tx.send(true);
        run.await.unwrap();
        assert_eq!(metrics.backfill.gaps_closed.get(), 2);
        assert!(metrics.backfill.messages.get() >= expected.len() as u64);
        srv.shutdown().await;
    }

    #[tokio::test]
    async fn nats_every_dropped_notification_is_backfilled_under_its_id() {
        common::needs!(nats_every_dropped_notification_is_backfilled_under_its_id: "GRAPHBRIDGE_TEST_NATS");
        use common::nats::*;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = nats_config(dir.path(), &unique("bf"));
        cfg.backfill.consumer_group = unique("bf-group");
        let graph = graph(&mut cfg).await;
        let srv = Running::start(&cfg).await;
        let sink: Arc<dyn Sink> = Arc::new(
            graphbridge_core::sink::nats::NatsSink::connect(&cfg.sink.nats)
                .await
                .unwrap(),
        );
        let (expected, dropped) = scenario(&cfg, &graph, &srv, sink.as_ref(), 2000).await;

        let metrics = Metrics::new();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let source = Source::broker(&cfg).await.unwrap();
        let run = {
            let (cfg, sink, metrics) = (cfg.clone(), sink.clone(), metrics.clone());
            tokio::spawn(async move { worker::run(&cfg, source, sink, metrics, stop).await })
        };
        // Both gaps filled: everything they hold is in the stream.
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while metrics.backfill.gaps_closed.get() < 2 {
            assert!(std::time::Instant::now() < deadline, "gaps not filled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let stored: Vec<Stored> = read_stream(&cfg.sink.nats.stream)
            .await
            .into_iter()
            .filter(|m| {
                m.payload["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("graph.teams."))
            })
            .collect();
        let ids: HashSet<String> = stored.iter().map(|m| m.msg_id.clone()).collect();
        assert_eq!(ids, expected, "every message, under its notification's id");
        assert_eq!(
            stored.len(),
            ids.len(),
            "JetStream dropped the backfilled copies by id"
        );
        for m in stored.iter().filter(|m| dropped.contains(&m.msg_id)) {
            assert_eq!(m.payload["graphbridgeorigin"], "backfill");
            assert_valid_event(&m.payload);
        }
        let _ = stop_tx.send(true);
        run.await.unwrap();
        srv.shutdown().await;
    }
}

/// `graphbridge backfill …` as an operator runs it: a window filled into the file sink, a dry
/// run, refusal of a backwards window, and SIGTERM during a throttled read.
mod cli {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use graphbridge::replay::stop::EXIT_INTERRUPTED;
    use graphbridge_core::graph::envelope::ChangeType;
    use graphbridge_core::graph::resource::Conversation;
    use graphbridge_sim::generate::MessageSpec;
    use graphbridge_sim::graph_api::{Fault, GraphStandIn, StandInOptions};
    use serde_json::Value;
    use tokio::net::TcpListener;

    use crate::common::{self, *};

    const TENANT: &str = "7e2d6c5b-0000-4000-8000-0000000000c1";
    const CHAT: &str = "19:cli@unq.gbl.spaces";

    async fn setup(dir: &std::path::Path) -> (GraphStandIn, std::path::PathBuf) {
        let graph = GraphStandIn::new(StandInOptions::default());
        let base = graph.serve(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let mut cfg = test_config(dir);
        cfg.graph.api_base = format!("{base}/v1.0");
        cfg.graph.auth.authority = base;
        cfg.graph.auth.client_id = Some(StandInOptions::default().client_id);
        // A written configuration redacts secrets: the client secret goes in a file.
        let secret = dir.join("client-secret");
        std::fs::write(&secret, StandInOptions::default().client_secret).unwrap();
        cfg.graph.auth.client_secret_file = Some(secret);
        let start = 1_800_000_000_000; // 2027-01-15T08:00:00Z
        for i in 0..12 {
            let s = MessageSpec::new(
                TENANT,
                Conversation::Chat {
                    chat_id: CHAT.into(),
                },
                start + i * 1000,
                ChangeType::Created,
                "<p>cli</p>",
            );
            graph.put_message(TENANT, s.chat_message());
        }
        (graph, common::process::write_config(&cfg, dir))
    }

    /// The config `setup` wrote, plus `backfill.state_file` in `dir`.
    fn with_state_file(dir: &std::path::Path) -> std::path::PathBuf {
        let written = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "toml"))
            .unwrap();
        let mut text = std::fs::read_to_string(&written).unwrap();
        text = text.replace(
            "[backfill]\n",
            &format!(
                "[backfill]\nstate_file = {:?}\n",
                dir.join("backfill-state.json")
            ),
        );
        let path = dir.join("with-state.cfg.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn backfill(config: &std::path::Path, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_graphbridge"));
        c.arg("--config").arg(config).args([
            "backfill",
            "--tenant",
            TENANT,
            "--chat",
            CHAT,
            // Ten of the twelve messages: 1..=10 seconds after the first.
            "--from",
            "2027-01-15T08:00:00.500Z",
            "--to",
            "2027-01-15T08:00:10.500Z",
        ]);
        c.args(extra);
        c
    }

    #[tokio::test]
    async fn a_window_is_filled_counted_and_a_dry_run_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (_graph, config) = setup(dir.path()).await;
        let events = dir.path().join("events.jsonl");

        let out = tokio::task::spawn_blocking({
            let config = config.clone();
            move || {
                backfill(&config, &["--dry-run", "--json"])
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{:?} {} {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (summary["ending"].as_str(), summary["published"].as_u64()),
            (Some("complete"), Some(10))
        );
        assert!(
            !events.exists() || jsonl(&events).is_empty(),
            "a dry run publishes nothing"
        );

        let out = tokio::task::spawn_blocking({
            let config = config.clone();
            move || backfill(&config, &["--json"]).output().unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = jsonl(&events);
        assert_eq!(got.len(), 10);
        for e in &got {
            assert_valid_event(e);
            assert_eq!(e["graphbridgeorigin"], "backfill");
        }

        let out = Command::new(env!("CARGO_BIN_EXE_graphbridge"))
            .arg("--config")
            .arg(&config)
            .args([
                "backfill",
                "--tenant",
                TENANT,
                "--chat",
                CHAT,
                "--from",
                "2027-01-15T09:00:00Z",
                "--to",
                "2027-01-15T08:00:00Z",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("backwards"));
    }

    /// A subscription on one channel is backfilled with the delta query; its deltaLink is kept
    /// in `backfill.state_file`, so the next gap reads only what changed since.
    #[tokio::test]
    async fn a_channel_gap_reads_the_delta_since_the_stored_link() {
        let dir = tempfile::tempdir().unwrap();
        let (graph, _) = setup(dir.path()).await;
        let channel = Conversation::Channel {
            team_id: "team-d".into(),
            channel_id: "19:delta@thread.tacv2".into(),
        };
        let start = 1_800_000_000_000; // 2027-01-15T08:00:00Z
        let put = |i: i64| {
            let s = MessageSpec::new(
                TENANT,
                channel.clone(),
                start + i * 1000,
                ChangeType::Created,
                "<p>d</p>",
            );
            graph.put_message(TENANT, s.chat_message());
        };
        for i in 0..4 {
            put(i);
        }
        let config = with_state_file(dir.path());
        let run = |config: std::path::PathBuf| {
            tokio::task::spawn_blocking(move || {
                Command::new(env!("CARGO_BIN_EXE_graphbridge"))
                    .arg("--config")
                    .arg(&config)
                    .args([
                        "backfill",
                        "--tenant",
                        TENANT,
                        "--resource",
                        "/teams/team-d/channels/19:delta@thread.tacv2/messages",
                        "--from",
                        "2027-01-15T07:00:00Z",
                        "--to",
                        "2027-01-15T09:00:00Z",
                        "--json",
                    ])
                    .output()
                    .unwrap()
            })
        };
        let first = run(config.clone()).await.unwrap();
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        let summary: Value = serde_json::from_slice(&first.stdout).unwrap();
        assert_eq!(summary["published"], 4);
        put(9);
        let second = run(config).await.unwrap();
        assert!(
            second.status.success(),
            "{}",
            String::from_utf8_lossy(&second.stderr)
        );
        let summary: Value = serde_json::from_slice(&second.stdout).unwrap();
        assert_eq!(
            summary["published"], 1,
            "only what changed since the stored link"
        );
        assert!(graph
            .log()
            .iter()
            .any(|l| l.path.ends_with("/messages/delta") && l.status == 200));
        assert_eq!(jsonl(&dir.path().join("events.jsonl")).len(), 5);
    }

    #[tokio::test]
    async fn sigterm_while_throttled_stops_with_the_interrupted_status() {
        let dir = tempfile::tempdir().unwrap();
        let (graph, config) = setup(dir.path()).await;
        graph.inject(Fault {
            method: None,
            status: 429,
            retry_after_s: Some(60),
        });
        let child = backfill(&config, &["--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until Graph has answered 429: the backfill now waits out Retry-After.
        let deadline = Instant::now() + Duration::from_secs(30);
        while graph.count("GET", "/v1.0/chats/", 429) == 0 {
            assert!(Instant::now() < deadline, "no throttled read");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(i32::from(EXIT_INTERRUPTED)),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["ending"], "interrupted");
        assert_eq!(
            graph.count("GET", "/v1.0/chats/", 200),
            0,
            "no call before Retry-After"
        );
    }
}

/// `graphbridge backfill run` killed with SIGKILL in the middle of a gap: its position was not
/// committed, so the next run fills the gap again and nothing in it is missing.
#[tokio::test]
async fn kill_9_mid_gap_resumes_and_nothing_is_missing() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use common::kafka::*;
    use graphbridge_core::sink::kafka::KafkaSink;
    use graphbridge_core::sink::{Record, Sink};
    use graphbridge_sim::graph_api::{GraphStandIn, StandInOptions};

    common::needs!(kill_9_mid_gap_resumes_and_nothing_is_missing: "GRAPHBRIDGE_TEST_KAFKA");
    const TENANT: &str = "8f3e7d6c-0000-4000-8000-0000000000k9";
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("bf-k9");
    let mut cfg = kafka_config(dir.path(), &prefix);
    // Pages of 5 that take 150 ms each: three users' chats take seconds to read.
    let graph = GraphStandIn::new(StandInOptions {
        page_size: 5,
        page_delay: Duration::from_millis(150),
        ..StandInOptions::default()
    });
    let base = graph.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    cfg.graph.api_base = format!("{base}/v1.0");
    cfg.graph.auth.authority = base;
    cfg.graph.auth.client_id = Some(StandInOptions::default().client_id);
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, StandInOptions::default().client_secret).unwrap();
    cfg.graph.auth.client_secret_file = Some(secret);
    cfg.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    cfg.backfill.consumer_group = unique("bf-k9-group");
    let users: Vec<String> = (0..3).map(|u| format!("user-{u}")).collect();
    cfg.backfill.users = users.clone();

    let start = chrono::Utc::now().timestamp_millis() - 60_000;
    let mut expected = HashSet::new();
    for (u, user) in users.iter().enumerate() {
        for i in 0..20 {
            let mut s = MessageSpec::new(
                TENANT,
                Conversation::Chat {
                    chat_id: format!("19:k9-{u}@unq.gbl.spaces"),
                },
                start + (u * 100 + i) as i64,
                ChangeType::Created,
                "<p>k9</p>",
            );
            s.from_id = user.clone();
            let body = serde_json::to_vec(&s.chat_message()).unwrap();
            expected.insert(
                message_event(TENANT, "sub-k9", &body, "2026-01-01T00:00:00.000Z", false)
                    .unwrap()
                    .id,
            );
            graph.put_message(TENANT, s.chat_message());
        }
    }
    let from = chrono::DateTime::from_timestamp_millis(start - 1000)
        .unwrap()
        .to_rfc3339();
    let gap = common::resync_event(
        TENANT,
        "sub-k9",
        "/chats/getAllMessages",
        &from,
        &chrono::Utc::now().to_rfc3339(),
    );
    KafkaSink::new(&cfg.sink.kafka)
        .unwrap()
        .publish(&[Record::lifecycle(gap)])
        .await
        .unwrap();

    let config = common::process::write_config(&cfg, dir.path());
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_graphbridge"))
            .arg("--config")
            .arg(&config)
            .args(["backfill", "run"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let topic = cfg.sink.kafka.topics.chat_messages.clone();
    let mut first = spawn();
    // Killed once the first user's chats are published and the second's are being read.
    let deadline = Instant::now() + Duration::from_secs(60);
    while graph.count("GET", "/v1.0/users/user-1/", 200) == 0 {
        assert!(
            Instant::now() < deadline,
            "the worker never got to the second user"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let reads_before = graph.count("GET", "/v1.0/users/user-2/", 200);
    assert_eq!(
        reads_before, 0,
        "killed mid-gap, before the last user's chats"
    );

    let mut second = spawn();
    let got = consume_until_distinct(&[&topic], expected.len(), Duration::from_secs(90)).await;
    second.kill().unwrap();
    second.wait().unwrap();
    let ids: HashSet<String> = got.iter().map(|m| m.headers["ce_id"].clone()).collect();
    assert_eq!(ids, expected, "nothing in the gap is missing");
    println!(
        "{} messages, {} records after a kill -9 mid-gap ({} duplicates by id)",
        expected.len(),
        got.len(),
        got.len() - ids.len()
    );
}

/// The controller and the worker together, with real Kafka: a subscription the controller
/// created, 10 % of its notifications never delivered and then `missed`; later the subscription
/// removed and recreated. Both windows are filled from the Graph stand-in, every message under
/// its notification's event id.
#[tokio::test]
async fn missed_and_removed_windows_from_the_controller_are_filled() {
    use std::sync::Arc;
    use std::time::Duration;

    use common::kafka::*;
    use graphbridge::backfill::worker::{self, Source};
    use graphbridge::subscriptions;
    use graphbridge::subscriptions::controller::Action;
    use graphbridge_core::config::subscriptions::SubscriptionItem;
    use graphbridge_core::config::Secret;
    use graphbridge_core::sink::kafka::KafkaSink;
    use graphbridge_core::sink::Sink;
    use graphbridge_core::telemetry::Metrics;
    use graphbridge_graph_api::clock::SystemClock;
    use graphbridge_sim::graph_api::{GraphStandIn, StandInOptions};

    common::needs!(missed_and_removed_windows_from_the_controller_are_filled: "GRAPHBRIDGE_TEST_KAFKA");
    const TENANT: &str = "9a4f8e7d-0000-4000-8000-0000000000c0";
    const SENDER: &str = "b771ecf9-2fc0-4cfa-8f59-2ad703cf6205";
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = kafka_config(dir.path(), &unique("bf-ctl"));
    let srv = Running::start(&cfg).await;
    let graph = GraphStandIn::new(StandInOptions::default());
    let base = graph.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    cfg.graph.api_base = format!("{base}/v1.0");
    cfg.graph.auth.authority = base;
    cfg.graph.auth.tenant_id = Some(TENANT.into());
    cfg.graph.auth.client_id = Some(StandInOptions::default().client_id);
    cfg.graph.auth.client_secret = Some(Secret::new(StandInOptions::default().client_secret));
    cfg.backfill.users = vec![SENDER.into()];
    cfg.backfill.consumer_group = unique("bf-ctl-group");
    cfg.subscriptions.items = vec![SubscriptionItem {
        name: "chats".into(),
        resource: "/chats/getAllMessages".into(),
        model: None,
        change_types: vec!["created".into(), "updated".into(), "deleted".into()],
        tenant_id: None,
        notification_url: format!("{}/notifications", srv.base),
        lifecycle_url: Some(format!("{}/lifecycle", srv.base)),
        certificate_id: Some(SYNTH_ID.into()),
        lifetime: None,
        include_resource_data: true,
    }];
    let sink: Arc<dyn Sink> = Arc::new(KafkaSink::new(&cfg.sink.kafka).unwrap());
    let mut controller = subscriptions::build(
        &cfg,
        Arc::new(SystemClock),
        Metrics::new(),
        Some(sink.clone()),
    )
    .unwrap();
    let report = controller.reconcile().await;
    let sub = report
        .actions
        .iter()
        .find_map(|a| match a {
            Action::Created { id, .. } => Some(id.clone()),
            _ => None,
        })
        .expect("created");

    let lifecycle = |id: &str, kind: &str| common::lifecycle_event(TENANT, id, kind);
    // Messages sent after the subscription exists, with a notification each, but for every
    // tenth one that Graph never delivers.
    let messages = |n: usize, tag: &str| -> Vec<MessageSpec> {
        let at = chrono::Utc::now().timestamp_millis();
        (0..n)
            .map(|i| {
                let mut s = MessageSpec::new(
                    TENANT,
                    Conversation::Chat {
                        chat_id: format!("19:{tag}{}@unq.gbl.spaces", i % 5),
                    },
                    at + i as i64,
                    ChangeType::Created,
                    "<p>ctl</p>",
                );
                s.from_id = SENDER.into();
                s
            })
            .collect()
    };
    let wait_past = |ms: i64| async move {
        while chrono::Utc::now().timestamp_millis() <= ms + 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let id_of = |s: &MessageSpec| {
        let body = serde_json::to_vec(&s.chat_message()).unwrap();
        message_event(TENANT, &sub, &body, "2026-01-01T00:00:00.000Z", false)
            .unwrap()
            .id
    };
    wait_past(chrono::Utc::now().timestamp_millis()).await;
    let first = messages(2000, "ctl-a");
    let r = synthetic_recipient();
    let mut delivered = Vec::new();
    for (i, s) in first.iter().enumerate() {
        graph.put_message(TENANT, s.chat_message());
        if i % 10 != 7 {
            delivered.push(s.notification(&sub, SYNTH_CLIENT_STATE, &r));
        }
    }
    for chunk in delivered.chunks(100) {
        let resp = srv
            .post_json("/notifications", &json!({ "value": chunk }))
            .await;
        assert_eq!(resp.status(), 202);
    }
    wait_past(first.last().unwrap().modified_ms).await;
    let report = controller.on_lifecycle(&lifecycle(&sub, "missed")).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    // Removed by Graph; messages sent while it was gone have no notification at all.
    assert_eq!(graph.remove(&sub).await.unwrap(), 202);
    let during = messages(50, "ctl-b");
    for s in &during {
        graph.put_message(TENANT, s.chat_message());
    }
    wait_past(during.last().unwrap().modified_ms).await;
    let report = controller
        .on_lifecycle(&lifecycle(&sub, "subscriptionRemoved"))
        .await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(
        report
            .actions
            .iter()
            .any(|a| matches!(a, Action::ResyncPublished { .. })),
        "{:?}",
        report.actions
    );

    let expected: HashSet<String> = first.iter().chain(&during).map(id_of).collect();
    let metrics = Metrics::new();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let source = Source::broker(&cfg).await.unwrap();
    let run = {
        let (cfg, sink, metrics) = (cfg.clone(), sink.clone(), metrics.clone());
        tokio::spawn(async move { worker::run(&cfg, source, sink, metrics, stop).await })
    };
    let got = consume_until_distinct(
        &[&cfg.sink.kafka.topics.chat_messages],
        expected.len(),
        Duration::from_secs(120),
    )
    .await;
    let ids: HashSet<String> = got.iter().map(|m| m.headers["ce_id"].clone()).collect();
    let missing: Vec<&String> = expected.difference(&ids).take(5).collect();
    assert!(
        missing.is_empty(),
        "both windows filled, under the notifications' ids; missing {missing:?}"
    );
    println!(
        "{} messages ({} notified), {} records: {} duplicates by id",
        expected.len(),
        delivered.len(),
        got.len(),
        got.len() - ids.len()
    );
    let _ = stop_tx.send(true);
    run.await.unwrap();
    srv.shutdown().await;
}

/// The simulator as a Graph that loses notifications: 10 % of the good ones of a realistic
/// workload (three tenants, channels, replies, chats, edits, deletes) are never sent, and a
/// `missed` lifecycle notification follows. With the gaps published, backfill brings every
/// message Graph holds into the stream under its notification's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_losses_are_backfilled() {
    use std::sync::Arc;
    use std::time::Duration;

    use common::kafka::*;
    use graphbridge::backfill::worker::{self, Source};
    use graphbridge_core::config::Secret;
    use graphbridge_core::sink::kafka::KafkaSink;
    use graphbridge_core::sink::{Record, Sink};
    use graphbridge_core::telemetry::Metrics;
    use graphbridge_sim::graph_api::{GraphStandIn, StandInOptions};
    use graphbridge_sim::run::{run, RunOptions};
    use graphbridge_sim::workload::PEOPLE;

    common::needs!(simulated_losses_are_backfilled: "GRAPHBRIDGE_TEST_KAFKA");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = kafka_config(dir.path(), &unique("bf-sim"));
    let graph = GraphStandIn::new(StandInOptions::default());
    let base = graph.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    cfg.graph.api_base = format!("{base}/v1.0");
    cfg.graph.auth.authority = base;
    cfg.graph.auth.client_id = Some(StandInOptions::default().client_id);
    cfg.graph.auth.client_secret = Some(Secret::new(StandInOptions::default().client_secret));
    cfg.backfill.users = PEOPLE.iter().map(|(id, _)| id.to_string()).collect();
    cfg.backfill.consumer_group = unique("bf-sim-group");
    let srv = Running::start(&cfg).await;

    let began = chrono::Utc::now();
    let workload = sim_workload(77, 0.0).starting_at(began.timestamp_millis());
    let (subscription, _) = workload.subscription();
    let subscription = subscription.to_string();
    let outcomes = run(
        RunOptions {
            drop_fraction: 0.1,
            graph: Some(graph.clone()),
            ..sim_options(&srv.base, 2000)
        },
        workload,
    )
    .await
    .unwrap();
    assert!(
        (150..=250).contains(&outcomes.dropped.len()),
        "about 10 % withheld: {}",
        outcomes.dropped.len()
    );
    // The `missed` the simulator sent, one per tenant, reached the lifecycle stream.
    let stored = graph.stored_messages();
    let tenants: std::collections::BTreeSet<String> =
        stored.iter().map(|(t, _)| t.clone()).collect();
    let lifecycle = consume(
        &[&cfg.sink.kafka.topics.lifecycle],
        tenants.len(),
        Duration::from_secs(30),
    )
    .await;
    assert!(lifecycle
        .iter()
        .all(|m| m.json()["type"] == "graph.subscription.missed"));

    // The gaps as the controller publishes them, one per tenant and resource.
    let (from, to) = (
        (began - chrono::Duration::seconds(1)).to_rfc3339(),
        (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
    );
    let mut gaps = Vec::new();
    for t in &tenants {
        for resource in ["/teams/getAllMessages", "/chats/getAllMessages"] {
            let ev = common::resync_event(t, &subscription, resource, &from, &to);
            gaps.push(Record::lifecycle(ev));
        }
    }
    let sink: Arc<dyn Sink> = Arc::new(KafkaSink::new(&cfg.sink.kafka).unwrap());
    sink.publish(&gaps).await.unwrap();

    // What Graph holds now: each message's current version.
    let current: HashSet<String> = stored
        .iter()
        .map(|(t, m)| {
            let body = serde_json::to_vec(m).unwrap();
            message_event(t, &subscription, &body, "2026-01-01T00:00:00.000Z", false)
                .unwrap()
                .id
        })
        .collect();
    let metrics = Metrics::new();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let source = Source::broker(&cfg).await.unwrap();
    let worker = {
        let (cfg, sink, metrics) = (cfg.clone(), sink.clone(), metrics.clone());
        tokio::spawn(async move { worker::run(&cfg, source, sink, metrics, stop).await })
    };
    let t = &cfg.sink.kafka.topics;
    let want: HashSet<String> = current
        .iter()
        .cloned()
        .chain(outcomes.acked.iter().filter_map(|e| match e {
            graphbridge_sim::workload::Expect::Event(id) => Some(id.clone()),
            _ => None,
        }))
        .collect();
    let got = consume_until_distinct(
        &[&t.channel_messages, &t.chat_messages],
        want.len(),
        Duration::from_secs(120),
    )
    .await;
    let ids: HashSet<String> = got.iter().map(|m| m.headers["ce_id"].clone()).collect();
    let missing: Vec<&String> = want.difference(&ids).take(5).collect();
    assert!(
        missing.is_empty(),
        "every delivered event and every message Graph holds; missing {missing:?}"
    );
    // A withheld notification is in the stream, unless a later version of its message
    // (an edit or delete that was delivered or backfilled) superseded it in Graph.
    let superseded = outcomes
        .dropped
        .iter()
        .filter(|id| !ids.contains(*id))
        .count();
    let backfilled_dropped = outcomes.dropped.len() - superseded;
    println!(
        "{} items sent, {} withheld: {backfilled_dropped} backfilled under their own id, {superseded} superseded by a later version; {} records, {} duplicates by id",
        outcomes.items_sent,
        outcomes.dropped.len(),
        got.len(),
        got.len() - ids.len()
    );
    for m in got
        .iter()
        .filter(|m| outcomes.dropped.contains(&m.headers["ce_id"]))
    {
        assert_eq!(
            m.headers.get("ce_graphbridgeorigin").map(String::as_str),
            Some("backfill")
        );
    }
    let _ = stop_tx.send(true);
    worker.await.unwrap();
    srv.shutdown().await;
}
