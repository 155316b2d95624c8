//! `serve --source eventhubs` against real Kafka playing the event hub (its SASL_SSL listener,
//! PLAIN with `$ConnectionString`, as Event Hubs' Kafka endpoint): Graph's collections
//! (with validation tokens and bad items of each kind) written to the hub topic, two replicas in
//! one consumer group, one killed with SIGKILL mid-stream.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use graphbridge_sim::run::collection;
use graphbridge_sim::workload::{Expect, Item, Workload, WorkloadConfig};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::common::kafka::*;
use crate::common::process::Bridge;
use crate::common::secure;
use crate::common::{self, *};

const PARTITIONS: i32 = 4;

async fn create_topic(topic: &str) {
    let admin: AdminClient<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let t = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    let r = admin
        .create_topics([&t], &AdminOptions::new())
        .await
        .unwrap();
    r.into_iter().for_each(|x| {
        x.unwrap();
    });
}

/// The Kafka test config with a hub topic and the output topics created (4 partitions each).
/// The hub is read the way Event Hubs' Kafka endpoint is: over the test Kafka's SASL_SSL
/// listener, PLAIN, user `$ConnectionString`, the connection string from a file.
async fn hub_config(dir: &std::path::Path, prefix: &str) -> graphbridge_core::config::Config {
    let mut cfg = kafka_config(dir, prefix);
    cfg.eventhubs.brokers = common::broker_env("GRAPHBRIDGE_TEST_KAFKA_SASL_SSL");
    cfg.eventhubs.connection_string_file = Some(secure::file("eventhub.connection-string"));
    // The namespace's certificate is the test CA's, not a public one.
    cfg.eventhubs.properties.insert(
        "ssl.ca.location".into(),
        secure::file("ca.pem").display().to_string(),
    );
    cfg.read_secret_files().unwrap();
    cfg.eventhubs.topic = format!("{prefix}.hub");
    cfg.eventhubs.consumer_group = unique(&format!("{prefix}-group"));
    let t = &cfg.sink.kafka.topics;
    for topic in [
        &cfg.eventhubs.topic,
        &t.channel_messages,
        &t.chat_messages,
        &t.deadletter,
    ] {
        create_topic(topic).await;
    }
    cfg
}

/// Writes `events` to the hub, spread over its partitions by key.
async fn write(topic: &str, events: &[Vec<u8>], first_key: usize) {
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    for (i, body) in events.iter().enumerate() {
        let key = format!("k{}", first_key + i);
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(body),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_read_the_hub_and_a_kill_9_loses_nothing() {
    common::needs!(two_replicas_read_the_hub_and_a_kill_9_loses_nothing: "GRAPHBRIDGE_TEST_KAFKA", "GRAPHBRIDGE_TEST_KAFKA_SASL_SSL");
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("eh");
    let mut cfg = hub_config(dir.path(), &prefix).await;
    let issuer = with_tokens(&mut cfg).await;

    // 3,000 notifications, a tenth of them bad (clientState, signature, certificate), in
    // collections of 25 with their validation tokens, as Graph writes them.
    let mut workload = Workload::new(
        WorkloadConfig {
            tenants: 3,
            teams: 10,
            chats: 20,
            bad_fraction: 0.1,
            seed: 1818,
            subscription_id: "sim-eh".into(),
            client_state: SYNTH_CLIENT_STATE.into(),
            reuse_key: false,
            sensitive_fraction: 0.0,
        },
        synthetic_recipient(),
    );
    let items: Vec<Item> = (0..3000).map(|_| workload.next_item()).collect();
    let mut good = HashSet::new();
    let mut bad: BTreeMap<&str, usize> = BTreeMap::new();
    for i in &items {
        match &i.expect {
            Expect::Event(id) => {
                good.insert(id.clone());
            }
            Expect::Rejected(reason, _) => *bad.entry(reason).or_default() += 1,
        }
    }
    let mut events: Vec<Vec<u8>> = items
        .chunks(25)
        .map(|c| collection(c, Some(&issuer)))
        .collect();
    // Events that are not Graph's: not JSON, not a collection, a forged token.
    let forged = {
        let mut v: serde_json::Value = serde_json::from_slice(&events[0]).unwrap();
        v["validationTokens"] = json!(["eyJhbGciOiJSUzI1NiJ9.e30.Zm9yZ2Vk"]);
        serde_json::to_vec(&v).unwrap()
    };
    events.insert(10, b"\x00 not json at all".to_vec());
    events.insert(20, br#"{"hello": "world"}"#.to_vec());
    events.insert(30, forged);
    let (first, second) = events.split_at(events.len() / 2);
    write(&cfg.eventhubs.topic, first, 0).await;

    let args = ["serve", "--source", "eventhubs"];
    let a = Bridge::start_args(&cfg, dir.path(), &args).await;
    let b = Bridge::start_args(&cfg, dir.path(), &args).await;
    let topics = [
        cfg.sink.kafka.topics.channel_messages.as_str(),
        cfg.sink.kafka.topics.chat_messages.as_str(),
    ];
    // Killed once part of the first half is in the broker.
    consume_until_distinct(&topics, 300, Duration::from_secs(60)).await;
    a.signal("KILL");
    drop(a);
    // Graph's reachability test, then the rest, read by the replica left.
    let validation = json!({"value": [{"subscriptionId": "NA", "subscriptionExpirationDateTime": "NA",
        "clientState": "NA", "changeType": "Validation: Testing client application reachability for subscription Request-Id: 3f2a",
        "resource": "NA", "resourceData": {"@odata.type": "NA", "@odata.id": "NA", "id": "NA"}}]});
    let mut rest = vec![serde_json::to_vec(&validation).unwrap()];
    rest.extend_from_slice(second);
    write(&cfg.eventhubs.topic, &rest, first.len()).await;

    let got = consume_until_distinct(&topics, good.len(), Duration::from_secs(120)).await;
    let ids: HashSet<String> = got.iter().map(|m| m.headers["ce_id"].clone()).collect();
    assert_eq!(ids, good, "every valid notification published, by id");
    let expected_dead = bad.values().sum::<usize>() + 3;
    let dead = consume_until(
        &brokers(),
        &[&cfg.sink.kafka.topics.deadletter],
        Duration::from_secs(60),
        |got| {
            // Dead letters carry their id in the payload (no ce_id header).
            let ids: HashSet<String> = got
                .iter()
                .map(|d| d.json()["id"].as_str().unwrap().to_string())
                .collect();
            ids.len() >= expected_dead
        },
    )
    .await
    .1;
    let mut reasons: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for d in &dead {
        let v = d.json();
        reasons
            .entry(v["reason"].as_str().unwrap().to_string())
            .or_default()
            .insert(v["id"].as_str().unwrap().to_string());
        assert!(
            !d.payload.windows(6).any(|w| w == b"s3cret"),
            "no clientState in dead letters"
        );
    }
    let counts: BTreeMap<&str, usize> = reasons
        .iter()
        .map(|(r, ids)| (r.as_str(), ids.len()))
        .collect();
    for (reason, n) in &bad {
        assert_eq!(counts.get(reason), Some(n), "{reason}: {counts:?}");
    }
    assert_eq!(
        counts.get("bad_json"),
        Some(&2),
        "not JSON and not a collection: {counts:?}"
    );
    assert!(
        counts.keys().any(|r| r.starts_with("token_")),
        "the forged token: {counts:?}"
    );
    assert!(
        !dead
            .iter()
            .any(|d| String::from_utf8_lossy(&d.payload).contains("Validation: Testing")),
        "Graph's reachability test is skipped, not dead-lettered"
    );
    b.wait_metric(
        "graphbridge_eventhubs_events_total{outcome=\"validation\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    )
    .await;
    println!(
        "{} events ({} notifications, {} valid), {} records published ({} duplicates by id after the kill), {} dead letters",
        events.len() + 1,
        items.len(),
        good.len(),
        got.len(),
        got.len() - ids.len(),
        dead.len()
    );
}

/// `graphbridge simulate --to-hub --verify kafka`: the simulator writes to the hub as Graph
/// does, the bridge reads it, and the simulator checks every item arrived exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_writes_to_the_hub_and_verifies_the_stream() {
    common::needs!(the_simulator_writes_to_the_hub_and_verifies_the_stream: "GRAPHBRIDGE_TEST_KAFKA", "GRAPHBRIDGE_TEST_KAFKA_SASL_SSL");
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("eh-sim");
    let cfg = hub_config(dir.path(), &prefix).await;
    let bridge = Bridge::start_args(&cfg, dir.path(), &["serve", "--source", "eventhubs"]).await;
    let config = common::process::write_config(&cfg, dir.path());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_graphbridge"))
        .arg("--config")
        .arg(&config)
        .args([
            "simulate",
            "--to-hub",
            "--no-tokens",
            "--count",
            "500",
            "--batch-size",
            "20",
        ])
        .args([
            "--bad-fraction",
            "0.05",
            "--verify",
            "kafka",
            "--json",
            "--cert-id",
            SYNTH_ID,
        ])
        .arg("--cert")
        .arg(common::fixture("synthetic/certificate.pem"))
        .env("GRAPHBRIDGE_SIM_CLIENT_STATE", SYNTH_CLIENT_STATE)
        .output()
        .await
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "{report:#}\n{}", bridge.log_text());
    assert_eq!(report["items_sent"], 500, "{report:#}");
}
