//! The Kafka sink against a real Apache Kafka (KRaft), started by scripts/brokers.sh: each test
//! over the plaintext listener and again over SASL_SSL (SCRAM-SHA-512; the first ones also
//! PLAIN and mTLS). The tests read back over the plaintext listener.

use crate::common;

use std::time::Duration;

use common::kafka::*;
use common::secure::{self, per_listener, Kafka};
use common::*;
use graphbridge_core::graph::envelope::ChangeType;
use graphbridge_core::graph::resource::Conversation;
use graphbridge_core::sink::{kafka::KafkaSink, Record, Sink, SinkError};
use graphbridge_sim::generate::MessageSpec;
use serde_json::json;

const BOUND: Duration = Duration::from_secs(60);

per_listener!(mixed_batch_lands_on_the_right_topics_with_keys_and_headers: plaintext => Kafka::Plaintext, sasl_ssl_scram => Kafka::Scram, sasl_ssl_plain => Kafka::Plain, mutual_tls => Kafka::MutualTls);
async fn mixed_batch_lands_on_the_right_topics_with_keys_and_headers(listener: Kafka) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("mixed");
    let mut cfg = secure::kafka(kafka_config(dir.path(), &prefix), listener);
    cfg.sink.kafka.raw_topic = Some(format!("{prefix}.raw"));
    let srv = Running::start(&cfg).await;
    let batch = mixed_batch(1_700_000_000_000);
    let resp = srv.post_json("/notifications", &batch.body).await;
    assert_eq!(resp.status(), 202);

    let t = &cfg.sink.kafka.topics;
    let events = consume(
        &[&t.channel_messages, &t.chat_messages, &t.lifecycle],
        4,
        BOUND,
    )
    .await;
    let mut got: Vec<(String, String)> = events
        .iter()
        .map(|m| (m.topic.clone(), m.key.clone()))
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = batch
        .events
        .iter()
        .map(|(stream, key)| {
            let topic = match *stream {
                "channel" => &t.channel_messages,
                "chat" => &t.chat_messages,
                _ => &t.lifecycle,
            };
            (topic.clone(), key.clone())
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
    for m in &events {
        let e = m.json();
        assert_valid_event(&e);
        assert_eq!(m.headers["ce_id"], e["id"].as_str().unwrap());
        assert_eq!(m.headers["ce_type"], e["type"].as_str().unwrap());
        assert_eq!(m.headers["ce_source"], e["source"].as_str().unwrap());
        assert_eq!(m.headers["ce_specversion"], "1.0");
        assert_eq!(m.headers["ce_time"], e["time"].as_str().unwrap());
        assert!(m.headers["content-type"].starts_with("application/cloudevents+json"));
        assert_eq!(
            m.headers["graph_tenant_id"],
            e["data"]["tenant_id"].as_str().unwrap()
        );
    }

    let dead = consume(&[&t.deadletter], 3, BOUND).await;
    let mut reasons: Vec<&str> = dead
        .iter()
        .map(|m| m.headers["graph_reject_reason"].as_str())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec!["client_state", "signature_mismatch", "unknown_certificate"]
    );

    // Raw archive: every authenticated message item (5 of the 7: not the wrong clientState,
    // not the lifecycle event), still encrypted, keyed like its event.
    let raw = consume(&[&format!("{prefix}.raw")], 5, BOUND).await;
    for m in &raw {
        assert!(m.json()["encryptedContent"]["data"].is_string());
    }
    let mut raw_keys: Vec<&str> = raw.iter().map(|m| m.key.as_str()).collect();
    raw_keys.sort();
    let mut want_raw = vec![
        SYNTH_CHAT,
        SYNTH_CHAT,
        "team.with.dots",
        "team.with.dots",
        REAL_TEAM,
    ];
    want_raw.sort();
    assert_eq!(raw_keys, want_raw);
    srv.shutdown().await;
}

per_listener!(redelivery_yields_the_same_event_ids: plaintext => Kafka::Plaintext, sasl_ssl_scram => Kafka::Scram);
async fn redelivery_yields_the_same_event_ids(listener: Kafka) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = secure::kafka(kafka_config(dir.path(), &unique("redeliver")), listener);
    let srv = Running::start(&cfg).await;
    let batch = mixed_batch(1_700_000_100_000);
    assert_eq!(
        srv.post_json("/notifications", &batch.body).await.status(),
        202
    );
    assert_eq!(
        srv.post_json("/notifications", &batch.body).await.status(),
        202
    );
    let t = &cfg.sink.kafka.topics;
    let events = consume(&[&t.channel_messages, &t.chat_messages], 6, BOUND).await;
    let mut ids: Vec<String> = events.iter().map(|m| m.headers["ce_id"].clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        3,
        "two copies of each of 3 message events, same ids"
    );
    // Graph's lifecycle notifications carry no id: a second one is a new signal, kept.
    let lifecycle = consume(&[&t.lifecycle], 2, BOUND).await;
    assert_ne!(lifecycle[0].headers["ce_id"], lifecycle[1].headers["ce_id"]);
    srv.shutdown().await;
}

per_listener!(messages_of_one_chat_keep_their_order_in_one_partition: plaintext => Kafka::Plaintext, sasl_ssl_scram => Kafka::Scram);
async fn messages_of_one_chat_keep_their_order_in_one_partition(listener: Kafka) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = secure::kafka(kafka_config(dir.path(), &unique("order")), listener);
    let srv = Running::start(&cfg).await;
    let r = synthetic_recipient();
    let base = 1_700_000_200_000i64;
    let mut sent = Vec::new();
    for i in 0..30i64 {
        let chat = if i % 3 == 0 {
            "19:other@unq.gbl.spaces"
        } else {
            "19:ordered@unq.gbl.spaces"
        };
        let spec = MessageSpec::new(
            "t",
            Conversation::Chat {
                chat_id: chat.into(),
            },
            base + i,
            ChangeType::Created,
            &format!("<p>{i}</p>"),
        );
        // Posted one after another, as Graph delivers them; pairs share a request.
        let item = spec.notification("s", SYNTH_CLIENT_STATE, &r);
        if chat.contains("ordered") {
            sent.push(spec.message_id.clone());
        }
        assert_eq!(
            srv.post_json("/notifications", &json!({"value": [item]}))
                .await
                .status(),
            202
        );
    }
    let got = consume(&[&cfg.sink.kafka.topics.chat_messages], 30, BOUND).await;
    let ordered: Vec<&common::kafka::Consumed> = got
        .iter()
        .filter(|m| m.key == "19:ordered@unq.gbl.spaces")
        .collect();
    let partitions: std::collections::HashSet<i32> = ordered.iter().map(|m| m.partition).collect();
    assert_eq!(partitions.len(), 1, "one key, one partition");
    let mut by_offset = ordered.clone();
    by_offset.sort_by_key(|m| m.offset);
    let ids: Vec<String> = by_offset
        .iter()
        .map(|m| m.json()["data"]["message_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, sent);
    srv.shutdown().await;
}

per_listener!(permanent_producer_errors_fail_fast_and_are_classified: plaintext => Kafka::Plaintext, sasl_ssl_scram => Kafka::Scram);
async fn permanent_producer_errors_fail_fast_and_are_classified(listener: Kafka) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = secure::kafka(kafka_config(dir.path(), &unique("perm")), listener)
        .sink
        .kafka;
    cfg.properties
        .insert("message.max.bytes".into(), "1000".into());
    let sink = KafkaSink::new(&cfg).unwrap();
    let mut rec = Record::raw(
        "id".into(),
        "k".into(),
        "t",
        "2026-01-01T00:00:00.000Z",
        vec![b'x'; 5000],
    );
    rec.stream = graphbridge_core::sink::Stream::DeadLetter;
    let started = std::time::Instant::now();
    let err = sink.publish(&[rec]).await.unwrap_err();
    assert!(matches!(err, SinkError::Permanent(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fails fast, not at the message timeout"
    );

    let mut bad = secure::kafka(kafka_config(dir.path(), "x"), listener)
        .sink
        .kafka;
    bad.properties.insert("no.such.property".into(), "1".into());
    let err = KafkaSink::new(&bad)
        .err()
        .expect("unknown property is rejected")
        .to_string();
    assert!(err.contains("no.such.property"), "{err}");
}

per_listener!(readiness_is_green_with_a_reachable_broker: plaintext => Kafka::Plaintext, sasl_ssl_scram => Kafka::Scram, sasl_ssl_plain => Kafka::Plain, mutual_tls => Kafka::MutualTls);
async fn readiness_is_green_with_a_reachable_broker(listener: Kafka) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = secure::kafka(kafka_config(dir.path(), &unique("ready")), listener);
    let srv = Running::start(&cfg).await;
    assert_eq!(srv.admin_status("/readyz").await, 200);
    srv.shutdown().await;
}

per_listener!(readiness_asks_for_the_configured_topics_and_needs_them_to_exist: plaintext => Kafka::Plaintext, sasl_ssl_scram => Kafka::Scram);
/// Readiness asks the cluster about the configured topics, not the whole cluster, and a topic
/// that does not exist (and will not be created) keeps the pod out of rotation until it does.
async fn readiness_asks_for_the_configured_topics_and_needs_them_to_exist(listener: Kafka) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = secure::kafka(kafka_config(dir.path(), &unique("ready-topics")), listener);
    // As on clusters that create no topics on first use (MSK, Confluent Cloud, Event Hubs).
    cfg.sink
        .kafka
        .properties
        .insert("allow.auto.create.topics".into(), "false".into());
    cfg.spool.enabled = false;
    let srv = Running::start(&cfg).await;
    assert_eq!(
        srv.admin_status("/readyz").await,
        503,
        "the topics do not exist: every publish would fail"
    );

    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let t = &cfg.sink.kafka.topics;
    let names = [
        &t.channel_messages,
        &t.chat_messages,
        &t.lifecycle,
        &t.deadletter,
    ];
    let new: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, 1, TopicReplication::Fixed(1)))
        .collect();
    for r in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    // Topic creation propagates to the brokers' metadata asynchronously: poll, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut status = srv.admin_status("/readyz").await;
    while status != 200 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        status = srv.admin_status("/readyz").await;
    }
    assert_eq!(status, 200, "ready once the configured topics exist");
    srv.shutdown().await;
}

/// Minor page faults so far of each librdkafka broker thread of this process, by thread id.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn broker_thread_faults() -> std::collections::HashMap<String, u64> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            if !comm.starts_with("rdk:broker") {
                return None;
            }
            // Field 10 of stat is minflt; the name (field 2) is the only one with spaces or
            // parentheses, so count from its closing parenthesis.
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            let after_name = &stat[stat.rfind(')')? + 2..];
            let minflt = after_name.split(' ').nth(7)?.parse().ok()?;
            Some((dir.file_name()?.to_string_lossy().into_owned(), minflt))
        })
        .collect()
}

/// librdkafka sets up and frees an LZ4 context per message set; with glibc's default trim
/// threshold its broker thread faulted those pages in again for every set (0.6-0.9 faults per
/// record at the bench's rate). `KafkaSink::new` keeps them mapped (`keep_c_heap_resident`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test]
async fn producing_compressed_batches_takes_no_page_faults_per_message_set() {
    needs!(producing_compressed_batches_takes_no_page_faults_per_message_set: "GRAPHBRIDGE_TEST_KAFKA");
    let dir = tempfile::tempdir().unwrap();
    let before = broker_thread_faults();
    let cfg = kafka_config(dir.path(), &unique("faults")).sink.kafka;
    let sink = KafkaSink::new(&cfg).unwrap();
    // Batches of 50 records over many chats, so over every partition: a message set per
    // partition per batch, each LZ4-compressed (the sink's default).
    let batch = |n: usize| -> Vec<Record> {
        (0..50)
            .map(|i| {
                let text = format!("<p>message {n}-{i} in a chat about the release</p>").repeat(40);
                let mut r = Record::raw(
                    format!("{n}-{i}"),
                    format!("19:chat-{i}@unq.gbl.spaces"),
                    "t",
                    "2026-01-01T00:00:00.000Z",
                    text.into_bytes(),
                );
                r.stream = graphbridge_core::sink::Stream::ChatMessages;
                r
            })
            .collect()
    };
    // The first batches connect, fetch metadata and start the broker's own thread.
    for n in 0..5 {
        sink.publish(&batch(n)).await.unwrap();
    }
    // This sink's broker threads: started since `before` (other tests run in this process
    // too), counted from now on only.
    let warm: std::collections::HashMap<String, u64> = broker_thread_faults()
        .into_iter()
        .filter(|(tid, _)| !before.contains_key(tid))
        .collect();
    assert!(!warm.is_empty(), "no broker thread found");
    for n in 5..105 {
        sink.publish(&batch(n)).await.unwrap();
    }
    let now = broker_thread_faults();
    let faults: u64 = warm
        .iter()
        .map(|(tid, at_warm)| now.get(tid).map_or(0, |f| f - at_warm))
        .sum();
    assert!(
        faults < 100,
        "{faults} page faults on the broker threads for 5,000 records in 100 batches"
    );
}
