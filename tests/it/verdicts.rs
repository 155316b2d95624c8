//! The DLP loop against real brokers: the simulator's messages reach the bridge, the example
//! DLP service (examples/dlp_service.rs) flags those with a card number, the verdict worker
//! PATCHes the Graph stand-in, and the stand-in's `updated` notifications come back through
//! the bridge with the policyViolation. Plus the worker's faults: throttling storms, Graph's
//! 404, malformed verdicts, and kill -9.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use graphbridge::verdicts::io::{Input, Output};
use graphbridge::verdicts::worker;
use graphbridge_core::config::{Config, Secret};
use graphbridge_core::graph::resource::Conversation;
use graphbridge_core::telemetry::Metrics;
use graphbridge_event::v1::MessageEvent;
use graphbridge_event::verdict::{MessageRef, PolicyViolation, VerdictData, VerdictEvent};
use graphbridge_graph_api::subscriptions::Subscription;
use graphbridge_sim::graph_api::{GraphStandIn, StandInOptions};
use graphbridge_sim::workload::{Workload, WorkloadConfig, TEST_CARDS};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::common::{self, *};

#[path = "../../examples/dlp_service.rs"]
#[allow(dead_code)]
mod dlp_service;

/// (tenant, team or chat id, message id): one message.
type MessageKey = (String, String, String);

fn key_of(tenant: &str, conversation: &Conversation, message_id: &str) -> MessageKey {
    (
        tenant.to_string(),
        conversation.key().to_string(),
        message_id.to_string(),
    )
}

/// The stand-in, serving, with the app's credentials in `cfg`.
async fn graph(cfg: &mut Config, opts: StandInOptions) -> GraphStandIn {
    let g = GraphStandIn::new(opts);
    let base = g.serve(TcpListener::bind("127.0.0.1:0").await.unwrap());
    cfg.graph.api_base = format!("{base}/v1.0");
    cfg.graph.auth.authority = base;
    cfg.graph.auth.client_id = Some(StandInOptions::default().client_id);
    cfg.graph.auth.client_secret = Some(Secret::new(StandInOptions::default().client_secret));
    cfg.verdicts.rate_per_second = 0.0;
    cfg.verdicts.max_backoff_s = 2;
    cfg.verdicts.consumer_group = unique("verdicts-group");
    g
}

/// Tenant-wide channel and chat subscriptions delivering to the bridge at `target`, with the
/// synthetic certificate (what the controller would have created).
fn subscribe(g: &GraphStandIn, tenant: &str, target: &str) {
    let der = graphbridge_core::crypto::keyring::certificate_der(&common::read(
        "synthetic/certificate.pem",
    ))
    .unwrap();
    for resource in ["/teams/getAllMessages", "/chats/getAllMessages"] {
        g.insert(
            tenant,
            Subscription {
                id: String::new(),
                resource: resource.into(),
                change_type: "created,updated,deleted".into(),
                notification_url: format!("{target}/notifications"),
                lifecycle_notification_url: Some(format!("{target}/lifecycle")),
                expiration_date_time: chrono::Utc::now() + chrono::Duration::hours(1),
                client_state: Some(SYNTH_CLIENT_STATE.into()),
                include_resource_data: Some(true),
                encryption_certificate: Some(
                    base64::engine::general_purpose::STANDARD.encode(&der),
                ),
                encryption_certificate_id: Some(SYNTH_ID.into()),
                latest_supported_tls_version: None,
            },
        );
    }
}

/// The workload's tenants (as `Workload::tenant` names them).
fn tenants(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{:08x}-0000-4000-8000-{:012x}", 0x7e0a_0000u32, i))
        .collect()
}

/// The stand-in's stored messages that `keep` selects.
fn in_graph(g: &GraphStandIn, keep: impl Fn(&Value) -> bool) -> impl Iterator<Item = MessageKey> {
    g.stored_messages()
        .into_iter()
        .filter(move |(_, m)| keep(m))
        .map(|(tenant, m)| {
            let conv = m["chatId"]
                .as_str()
                .or(m["channelIdentity"]["teamId"].as_str())
                .unwrap()
                .to_string();
            (tenant, conv, m["id"].as_str().unwrap().to_string())
        })
}

/// Stored messages that carry a policyViolation.
fn flagged_in_graph(g: &GraphStandIn) -> BTreeSet<MessageKey> {
    in_graph(g, |m| !m["policyViolation"].is_null()).collect()
}

/// Deleted messages in the stand-in (a verdict on one gets Graph's 404).
fn deleted_in_graph(g: &GraphStandIn) -> HashSet<MessageKey> {
    in_graph(g, |m| !m["deletedDateTime"].is_null()).collect()
}

/// Polls `attempt` until it gives a value (bounded).
async fn until<T, F, Fut>(what: &str, bound: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = attempt().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The broker's streams, read the same way for Kafka and NATS: JSON payloads.
#[derive(Clone, Copy)]
enum Read {
    Messages,
    Verdicts,
    Audit,
    DeadLetters,
}

async fn read(cfg: &Config, what: Read) -> Vec<Value> {
    use graphbridge_core::config::SinkKind;
    match cfg.sink.kind {
        SinkKind::Kafka => {
            let (k, v) = (&cfg.sink.kafka.topics, &cfg.verdicts.kafka);
            let topics: Vec<&str> = match what {
                Read::Messages => vec![&k.channel_messages, &k.chat_messages],
                Read::Verdicts => vec![&v.verdicts],
                Read::Audit => vec![&v.audit],
                Read::DeadLetters => vec![&v.deadletter],
            };
            common::kafka::snapshot(&topics, Duration::from_secs(30))
                .await
                .iter()
                .map(|c| c.json())
                .collect()
        }
        _ => {
            let v = &cfg.verdicts.nats;
            let (stream, prefix) = match what {
                Read::Messages => (cfg.sink.nats.stream.clone(), None),
                Read::Verdicts => (v.stream.clone(), Some(&v.subjects.verdicts)),
                Read::Audit => (v.stream.clone(), Some(&v.subjects.audit)),
                Read::DeadLetters => (v.stream.clone(), Some(&v.subjects.deadletter)),
            };
            common::nats::read_stream(&stream)
                .await
                .into_iter()
                .filter(|s| match prefix {
                    Some(p) => &s.subject == p,
                    None => s.payload["type"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("graph.teams.message.")),
                })
                .map(|s| s.payload)
                .collect()
        }
    }
}

/// Starts the worker in this process; returns its stop switch and task.
async fn start_worker(
    cfg: &Config,
) -> (
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
    Arc<Metrics>,
) {
    let (tx, rx) = watch::channel(false);
    let metrics = Metrics::new();
    let input = Input::open(cfg).await.expect("verdict input");
    let output = Output::open(cfg).await.expect("verdict output");
    let (cfg, m) = (cfg.clone(), metrics.clone());
    let task = tokio::spawn(async move { worker::run(&cfg, input, output, m, rx).await });
    (tx, task, metrics)
}

/// 1,000 simulated messages, about a tenth with a card number: the whole loop.
async fn end_to_end(mut cfg: Config) {
    let graph = graph(&mut cfg, StandInOptions::default()).await;
    let srv = Running::start(&cfg).await;
    for t in tenants(2) {
        subscribe(&graph, &t, &srv.base);
    }
    let workload = Workload::new(
        WorkloadConfig {
            tenants: 2,
            teams: 4,
            chats: 6,
            bad_fraction: 0.0,
            seed: 1717,
            subscription_id: "sim-dlp".into(),
            client_state: SYNTH_CLIENT_STATE.into(),
            reuse_key: false,
            sensitive_fraction: 0.1,
        },
        synthetic_recipient(),
    );
    let mut opts = sim_options(&srv.base, 1000);
    opts.graph = Some(graph.clone());
    let outcome = graphbridge_sim::run::run(opts, workload).await.unwrap();
    assert_eq!(outcome.acked.len(), 1000, "every notification acknowledged");

    // What the bridge published: the messages with a card, by the test's own reading.
    let events = until(
        "the simulated events in the stream",
        Duration::from_secs(60),
        || {
            let cfg = cfg.clone();
            async move {
                let events = read(&cfg, Read::Messages).await;
                let ids: HashSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
                (ids.len() >= 1000).then_some(events)
            }
        },
    )
    .await;
    let mut with_card: HashSet<MessageKey> = HashSet::new();
    let rule = dlp_service::CardRule::default();
    let mut expected_verdicts: HashSet<String> = HashSet::new();
    for e in &events {
        let e: MessageEvent = serde_json::from_value(e.clone()).unwrap();
        let text = e
            .data
            .body
            .as_ref()
            .map(|b| b.plain_text.as_str())
            .unwrap_or("");
        if TEST_CARDS.iter().any(|c| text.contains(c)) {
            with_card.insert(key_of(
                &e.data.tenant_id,
                &e.data.conversation,
                &e.data.message_id,
            ));
        }
        if let Some(v) = rule.verdict(&e) {
            expected_verdicts.insert(v.id);
        }
    }
    assert!(
        with_card.len() >= 40,
        "about a tenth of the messages: {}",
        with_card.len()
    );
    let deleted = deleted_in_graph(&graph);
    let expected_flagged: BTreeSet<MessageKey> = with_card.difference(&deleted).cloned().collect();
    let expected_gone: HashSet<MessageKey> = with_card.intersection(&deleted).cloned().collect();

    // The DLP service and the worker, started after the fact: both read from the start.
    let (dlp_stop, dlp_rx) = watch::channel(false);
    let dlp_cfg = cfg.clone();
    let dlp = tokio::spawn(async move { dlp_service::run(&dlp_cfg, &unique("dlp"), dlp_rx).await });
    let (stop, task, metrics) = start_worker(&cfg).await;

    let audits = until(
        "an audit event for every verdict",
        Duration::from_secs(120),
        || {
            let cfg = cfg.clone();
            let expected = &expected_verdicts;
            async move {
                let audits = read(&cfg, Read::Audit).await;
                let seen: HashSet<&str> = audits
                    .iter()
                    .filter_map(|a| a["data"]["verdict_id"].as_str())
                    .collect();
                expected
                    .iter()
                    .all(|v| seen.contains(v.as_str()))
                    .then_some(audits)
            }
        },
    )
    .await;
    let verdicts = read(&cfg, Read::Verdicts).await;
    let verdict_ids: HashSet<&str> = verdicts.iter().filter_map(|v| v["id"].as_str()).collect();
    assert_eq!(
        verdict_ids,
        expected_verdicts.iter().map(String::as_str).collect(),
        "one verdict per event with a card number"
    );
    let named: HashSet<MessageKey> = verdicts
        .iter()
        .map(|v| {
            let v: VerdictEvent = serde_json::from_value(v.clone()).unwrap();
            let m = v.data.message;
            key_of(&m.tenant_id, &m.conversation, &m.message_id)
        })
        .collect();
    assert_eq!(
        named, with_card,
        "the DLP rule flags exactly the messages with a card number"
    );
    common::assert_valid_event(&verdicts[0]);

    assert_eq!(
        flagged_in_graph(&graph),
        expected_flagged,
        "Graph holds a policyViolation on exactly the flagged messages"
    );
    for a in &audits {
        common::assert_valid_event(a);
        let d = &a["data"];
        let m: MessageRef = serde_json::from_value(d["message"].clone()).unwrap();
        let k = key_of(&m.tenant_id, &m.conversation, &m.message_id);
        if expected_gone.contains(&k) {
            assert_eq!(
                (d["outcome"].as_str(), d["graph_status"].as_u64()),
                (Some("failed"), Some(404)),
                "{a}"
            );
        } else {
            assert_eq!(
                (d["outcome"].as_str(), d["graph_status"].as_u64()),
                (Some("applied"), Some(204)),
                "{a}"
            );
        }
    }
    let dead = read(&cfg, Read::DeadLetters).await;
    let dead_keys: HashSet<MessageKey> = dead
        .iter()
        .map(|d| {
            assert_eq!(d["reason"], "not_found", "{d}");
            let v: VerdictEvent = serde_json::from_value(d["verdict"].clone()).unwrap();
            key_of(
                &v.data.message.tenant_id,
                &v.data.message.conversation,
                &v.data.message.message_id,
            )
        })
        .collect();
    assert_eq!(
        dead_keys, expected_gone,
        "verdicts on deleted messages are dead letters with Graph's 404"
    );

    // Graph's `updated` notifications came back through the bridge with the policyViolation.
    until(
        "an updated event with the policyViolation for every flagged message",
        Duration::from_secs(60),
        || {
            let cfg = cfg.clone();
            let expected = &expected_flagged;
            async move {
                let got: HashSet<MessageKey> = read(&cfg, Read::Messages)
                    .await
                    .into_iter()
                    .filter(|e| e["data"]["policy_violation"]["dlp_action"] == "BlockAccess")
                    .map(|e| {
                        let e: MessageEvent = serde_json::from_value(e).unwrap();
                        assert_eq!(e.data.change_type, "updated");
                        key_of(&e.data.tenant_id, &e.data.conversation, &e.data.message_id)
                    })
                    .collect();
                expected.iter().all(|k| got.contains(k)).then_some(())
            }
        },
    )
    .await;
    let updated = read(&cfg, Read::Messages).await;
    let sample = updated
        .iter()
        .find(|e| !e["data"]["policy_violation"].is_null())
        .unwrap();
    common::assert_valid_event(sample);
    assert_eq!(
        sample["data"]["policy_violation"]["policy_tip"]["matched_condition_descriptions"][0],
        "Credit Card Number"
    );

    let text = metrics.render();
    let applied = metric_value(
        &text,
        "graphbridge_verdicts_total{outcome=\"applied\",reason=\"ok\"}",
    )
    .unwrap_or(0.0);
    assert!(
        applied >= (expected_verdicts.len() - dead.len()) as f64,
        "{text}"
    );
    let _ = stop.send(true);
    task.await.unwrap();
    let _ = dlp_stop.send(true);
    let stats = dlp.await.unwrap().unwrap();
    println!(
        "{} events read by the DLP service, {} verdicts ({} messages with a card, {} flagged in Graph, {} deleted before the verdict: 404 dead letters), {} updated notifications back",
        stats.events,
        expected_verdicts.len(),
        with_card.len(),
        expected_flagged.len(),
        expected_gone.len(),
        graph.updated_notifications()
    );
    srv.shutdown().await;
}

fn kafka_cfg(dir: &std::path::Path, prefix: &str) -> Config {
    let mut cfg = common::kafka::kafka_config(dir, prefix);
    let v = &mut cfg.verdicts.kafka;
    v.verdicts = format!("{prefix}.verdicts");
    v.deadletter = format!("{prefix}.verdicts-dlq");
    v.audit = format!("{prefix}.verdicts-audit");
    cfg
}

fn nats_cfg(dir: &std::path::Path, prefix: &str) -> Config {
    let mut cfg = common::nats::nats_config(dir, prefix);
    let v = &mut cfg.verdicts.nats;
    v.stream = format!("{}_VERDICTS", cfg.sink.nats.stream);
    v.subjects.verdicts = format!("{prefix}.v1.verdicts.in");
    v.subjects.deadletter = format!("{prefix}.v1.verdicts.deadletter");
    v.subjects.audit = format!("{prefix}.v1.verdicts.audit");
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_dlp_loop_end_to_end() {
    common::needs!(kafka_dlp_loop_end_to_end: "GRAPHBRIDGE_TEST_KAFKA");
    let dir = tempfile::tempdir().unwrap();
    end_to_end(kafka_cfg(dir.path(), &unique("vd-e2e"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_dlp_loop_end_to_end() {
    common::needs!(nats_dlp_loop_end_to_end: "GRAPHBRIDGE_TEST_NATS");
    let dir = tempfile::tempdir().unwrap();
    end_to_end(nats_cfg(dir.path(), &unique("vd-e2e"))).await;
}

const TENANT: &str = "3c1d5b4a-0000-4000-8000-00000000d1b0";

/// `n` chat messages in the stand-in and a verdict for each; returns the verdicts.
fn seeded(graph: &GraphStandIn, n: usize) -> Vec<VerdictEvent> {
    let now = chrono::Utc::now().timestamp_millis();
    (0..n)
        .map(|i| {
            let conversation = Conversation::Chat {
                chat_id: format!("19:dlp{}@unq.gbl.spaces", i % 4),
            };
            let spec = graphbridge_sim::generate::MessageSpec::new(
                TENANT,
                conversation.clone(),
                now + i as i64,
                graphbridge_core::graph::envelope::ChangeType::Created,
                "<p>card 4111 1111 1111 1111</p>",
            );
            graph.put_message(TENANT, spec.chat_message());
            verdict(&format!("v-{i}"), conversation, &spec.message_id)
        })
        .collect()
}

fn verdict(id: &str, conversation: Conversation, message_id: &str) -> VerdictEvent {
    VerdictEvent::verdict(
        id.into(),
        "/test",
        chrono::Utc::now().to_rfc3339(),
        VerdictData {
            schema_version: 1,
            event_id: None,
            message: MessageRef {
                tenant_id: TENANT.into(),
                conversation,
                message_id: message_id.into(),
                reply_to_id: None,
            },
            policy_violation: PolicyViolation {
                dlp_action: Some("BlockAccess".into()),
                ..Default::default()
            },
            reason: None,
            rule_id: Some("test".into()),
        },
    )
}

/// Publishes raw verdict records to the Kafka verdict topic, keyed by `key`.
async fn publish_kafka(cfg: &Config, records: &[(String, Vec<u8>)]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer =
        graphbridge_core::sink::kafka::KafkaSink::client_config(&cfg.sink.kafka)
            .create()
            .unwrap();
    for (key, payload) in records {
        producer
            .send(
                FutureRecord::to(&cfg.verdicts.kafka.verdicts)
                    .key(key)
                    .payload(payload),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
}

fn records(verdicts: &[VerdictEvent]) -> Vec<(String, Vec<u8>)> {
    verdicts
        .iter()
        .map(|v| {
            (
                v.data.message.key().to_string(),
                serde_json::to_vec(v).unwrap(),
            )
        })
        .collect()
}

async fn audited(cfg: &Config, n: usize) -> Vec<Value> {
    until(
        &format!("{n} audit events"),
        Duration::from_secs(90),
        || {
            let cfg = cfg.clone();
            async move {
                let audits = read(&cfg, Read::Audit).await;
                let distinct: HashSet<&str> =
                    audits.iter().filter_map(|a| a["id"].as_str()).collect();
                (distinct.len() >= n).then_some(audits)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_waited_out_and_every_verdict_is_applied() {
    common::needs!(a_429_storm_is_waited_out_and_every_verdict_is_applied: "GRAPHBRIDGE_TEST_KAFKA");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = kafka_cfg(dir.path(), &unique("vd-429"));
    let graph = graph(&mut cfg, StandInOptions::default()).await;
    let verdicts = seeded(&graph, 12);
    for _ in 0..4 {
        graph.inject(graphbridge_sim::graph_api::Fault {
            method: Some(axum::http::Method::PATCH),
            status: 429,
            retry_after_s: Some(1),
        });
    }
    publish_kafka(&cfg, &records(&verdicts)).await;
    let (stop, task, metrics) = start_worker(&cfg).await;
    let audits = audited(&cfg, verdicts.len()).await;
    assert!(
        audits.iter().all(|a| a["data"]["outcome"] == "applied"),
        "{audits:?}"
    );
    assert_eq!(flagged_in_graph(&graph).len(), verdicts.len());
    let patches: Vec<_> = graph
        .log()
        .into_iter()
        .filter(|l| l.method == "PATCH")
        .collect();
    assert_eq!(patches.iter().filter(|l| l.status == 429).count(), 4);
    for pair in patches.windows(2) {
        if pair[0].status == 429 {
            let waited = pair[1].at - pair[0].at;
            assert!(
                waited >= Duration::from_secs(1),
                "called again {waited:?} after a 429 with Retry-After: 1"
            );
        }
    }
    let text = metrics.render();
    assert_eq!(
        metric_value(
            &text,
            "graphbridge_verdict_retries_total{cause=\"throttled\"}"
        ),
        Some(4.0),
        "{text}"
    );
    let _ = stop.send(true);
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_verdicts_and_graphs_404_are_dead_letters_and_nothing_malformed_is_patched() {
    common::needs!(malformed_verdicts_and_graphs_404_are_dead_letters_and_nothing_malformed_is_patched: "GRAPHBRIDGE_TEST_KAFKA");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = kafka_cfg(dir.path(), &unique("vd-bad"));
    let graph = graph(&mut cfg, StandInOptions::default()).await;
    let good = seeded(&graph, 1).remove(0);
    let chat = Conversation::Chat {
        chat_id: "19:dlp0@unq.gbl.spaces".into(),
    };
    let mut unknown_enum = serde_json::to_value(verdict("v-enum", chat.clone(), "1")).unwrap();
    unknown_enum["data"]["policy_violation"]["dlp_action"] = "Shred".into();
    let mut bad_ref = serde_json::to_value(verdict("v-ref", chat.clone(), "1")).unwrap();
    bad_ref["data"]["message"]["message_id"] = "../../users/x".into();
    let missing = verdict("v-404", chat.clone(), "999");
    let recs = vec![
        ("k".to_string(), b"{not json".to_vec()),
        ("k".to_string(), serde_json::to_vec(&unknown_enum).unwrap()),
        ("k".to_string(), serde_json::to_vec(&bad_ref).unwrap()),
        ("k".to_string(), serde_json::to_vec(&missing).unwrap()),
        ("k".to_string(), serde_json::to_vec(&good).unwrap()),
    ];
    publish_kafka(&cfg, &recs).await;
    let (stop, task, metrics) = start_worker(&cfg).await;
    let audits = audited(&cfg, recs.len()).await;
    // Keyed by conversation ("unreadable" without one): partitions differ, so by verdict.
    let mut dead = read(&cfg, Read::DeadLetters).await;
    dead.sort_by_key(|d| d["verdict_id"].as_str().map(str::to_string));
    let reasons: Vec<(&str, Option<&str>)> = dead
        .iter()
        .map(|d| (d["reason"].as_str().unwrap(), d["verdict_id"].as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("bad_json", None),
            ("not_found", Some("v-404")),
            ("invalid_verdict", Some("v-enum")),
            ("invalid_verdict", Some("v-ref")),
        ],
        "{dead:?}"
    );
    assert_eq!(dead[0]["verdict"], "{not json", "the record as read");
    assert_eq!(dead[1]["graph_status"], 404);
    assert!(dead[2]["error"]
        .as_str()
        .unwrap()
        .contains("unknown dlp_action \"Shred\""));
    assert!(dead[3]["error"]
        .as_str()
        .unwrap()
        .contains("is not a Graph id"));
    let patches: Vec<u16> = graph
        .log()
        .into_iter()
        .filter(|l| l.method == "PATCH")
        .map(|l| l.status)
        .collect();
    assert_eq!(
        patches,
        [404, 204],
        "only the well-formed verdicts reached Graph"
    );
    let mut outcomes: Vec<&str> = audits
        .iter()
        .map(|a| a["data"]["outcome"].as_str().unwrap())
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        ["applied", "failed", "failed", "failed", "failed"]
    );
    let text = metrics.render();
    for (reason, n) in [
        ("bad_json", 1.0),
        ("invalid_verdict", 2.0),
        ("not_found", 1.0),
    ] {
        assert_eq!(
            metric_value(
                &text,
                &format!("graphbridge_verdicts_total{{outcome=\"failed\",reason=\"{reason}\"}}")
            ),
            Some(n),
            "{text}"
        );
    }
    let _ = stop.send(true);
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_worker_loses_no_verdict_and_repeats_are_harmless() {
    use std::process::{Command, Stdio};
    common::needs!(kill_9_of_the_worker_loses_no_verdict_and_repeats_are_harmless: "GRAPHBRIDGE_TEST_KAFKA");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = kafka_cfg(dir.path(), &unique("vd-k9"));
    let graph = graph(&mut cfg, StandInOptions::default()).await;
    // 20 PATCHes a second: 60 verdicts take three seconds, the kill lands mid-stream.
    cfg.verdicts.rate_per_second = 20.0;
    cfg.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, StandInOptions::default().client_secret).unwrap();
    cfg.graph.auth.client_secret = None;
    cfg.graph.auth.client_secret_file = Some(secret);
    let verdicts = seeded(&graph, 60);
    publish_kafka(&cfg, &records(&verdicts)).await;
    let config = common::process::write_config(&cfg, dir.path());
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_graphbridge"))
            .arg("--config")
            .arg(&config)
            .args(["verdicts", "run"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = spawn();
    until(
        "the first worker applying verdicts",
        Duration::from_secs(60),
        || {
            let n = graph.count("PATCH", "/v1.0/chats/", 204);
            async move { (n >= 15).then_some(()) }
        },
    )
    .await;
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let before = flagged_in_graph(&graph).len();
    assert!(
        before < verdicts.len(),
        "killed mid-stream ({before} applied)"
    );

    // A producer that crashed republishes: five verdicts arrive a second time.
    publish_kafka(&cfg, &records(&verdicts[..5])).await;
    let mut second = spawn();
    let audits = audited(&cfg, verdicts.len()).await;
    until(
        "the republished verdicts applied again",
        Duration::from_secs(60),
        || {
            let n = graph.count("PATCH", "/v1.0/chats/", 204);
            let want = verdicts.len() + 5;
            async move { (n >= want).then_some(()) }
        },
    )
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(
        flagged_in_graph(&graph).len(),
        verdicts.len(),
        "no verdict lost"
    );
    let patched = graph.count("PATCH", "/v1.0/chats/", 204);
    let ids: HashSet<&str> = audits
        .iter()
        .filter_map(|a| a["data"]["verdict_id"].as_str())
        .collect();
    assert_eq!(ids.len(), verdicts.len());
    let distinct_audits: HashSet<&str> = audits.iter().filter_map(|a| a["id"].as_str()).collect();
    assert_eq!(
        distinct_audits.len(),
        verdicts.len(),
        "a repeated verdict's audit has the same id"
    );
    assert!(audits.iter().all(|a| a["data"]["outcome"] == "applied"));
    println!(
        "kill -9 after {before} of {} verdicts: {patched} PATCHes in all ({} repeated, each a no-op)",
        verdicts.len(),
        patched - verdicts.len()
    );
}

// Multi-threaded: the stand-in answers while this thread waits for the child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_apply_patches_one_message_and_its_dry_run_calls_nothing() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(dir.path());
    let graph = graph(&mut cfg, StandInOptions::default()).await;
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, StandInOptions::default().client_secret).unwrap();
    cfg.graph.auth.client_secret = None;
    cfg.graph.auth.client_secret_file = Some(secret);
    let v = seeded(&graph, 1).remove(0);
    let Conversation::Chat { chat_id } = &v.data.message.conversation else {
        unreachable!()
    };
    let config = common::process::write_config(&cfg, dir.path());
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_graphbridge"))
            .arg("--config")
            .arg(&config)
            .args(["verdicts", "apply", "--tenant", TENANT, "--chat", chat_id])
            .args([
                "--message",
                &v.data.message.message_id,
                "--condition",
                "Credit Card Number",
            ])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&["--dry-run"]);
    assert_eq!(code, Some(0), "{out}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["method"], "PATCH");
    assert!(plan["url"].as_str().unwrap().ends_with(&format!(
        "/chats/{chat_id}/messages/{}",
        v.data.message.message_id
    )));
    assert_eq!(plan["body"]["policyViolation"]["dlpAction"], "BlockAccess");
    assert!(
        graph.log().iter().all(|l| l.method != "PATCH"),
        "a dry run calls nothing"
    );

    let (code, out) = run(&[]);
    assert_eq!(code, Some(0), "{out}");
    let audit: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (audit["outcome"].as_str(), audit["graph_status"].as_u64()),
        (Some("applied"), Some(204))
    );
    assert_eq!(flagged_in_graph(&graph).len(), 1);

    let (code, out) = run(&["--dlp-action", "Shred"]);
    assert_eq!(code, Some(1), "{out}");
    let audit: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(audit["reason"], "invalid_verdict");
}
