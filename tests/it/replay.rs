//! `graphbridge replay` against the real Kafka and NATS: ranges by offsets and by times to a
//! topic and to NATS (exact counts, keys, headers, ids, timestamps), reprocessing the raw
//! archive, stopping (max messages, SIGINT) and resuming without gaps or duplicates, and
//! resetting a consumer group (with its dry run and its refusal while the group is active).

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::kafka::*;
use common::secure::{self, per_listener, Kafka, Nats};
use common::*;
use graphbridge::replay::progress::{Ending, Summary};
use graphbridge::replay::range::Bound;
use graphbridge::replay::stop::Stop;
use graphbridge::replay::{cli, group, ReplayError};
use graphbridge_core::auth::archive;
use graphbridge_core::config::{Config, OneOrMany, Secret};
use graphbridge_core::graph::envelope::ChangeType;
use graphbridge_core::graph::resource::Conversation;
use graphbridge_sim::generate::MessageSpec;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

const BOUND: Duration = Duration::from_secs(30);

fn chat(n: usize) -> String {
    format!("19:replay-{n}@unq.gbl.spaces")
}

/// `n` chat messages over six chats; every fourth is an edit.
fn specs(base: i64, n: usize) -> Vec<MessageSpec> {
    (0..n)
        .map(|i| {
            let change = if i % 4 == 3 {
                ChangeType::Updated
            } else {
                ChangeType::Created
            };
            MessageSpec::new(
                "tenant-replay",
                Conversation::Chat {
                    chat_id: chat(i % 6),
                },
                base + i as i64,
                change,
                &format!("<p>message {i}</p>"),
            )
        })
        .collect()
}

async fn post(srv: &Running, specs: &[MessageSpec]) {
    let r = synthetic_recipient();
    let items: Vec<Value> = specs
        .iter()
        .map(|s| s.notification("sub-replay", SYNTH_CLIENT_STATE, &r))
        .collect();
    for chunk in items.chunks(25) {
        let resp = srv
            .post_json("/notifications", &json!({ "value": chunk }))
            .await;
        assert_eq!(resp.status(), 202);
    }
}

/// Runs `replay ARGS` in-process with `cfg` (as `--config` would give it).
async fn replay(cfg: &Config, args: &[&str]) -> Summary {
    let args = cli::parse(std::iter::once("replay").chain(args.iter().copied())).unwrap();
    let opts = args.options(cfg).unwrap();
    graphbridge::replay::run(cfg, &opts, &Stop::default())
        .await
        .unwrap()
}

/// What a consumer dedupes and routes by, for comparing a replay with its source.
type Fingerprint = (i32, String, BTreeMap<String, String>, Value, Option<i64>);

fn fingerprints<'a>(
    records: impl IntoIterator<Item = &'a Consumed>,
) -> HashMap<String, Fingerprint> {
    let mut out = HashMap::new();
    for m in records {
        let id = m.headers["ce_id"].clone();
        let headers = m.headers.clone().into_iter().collect();
        let fp = (m.partition, m.key.clone(), headers, m.json(), m.timestamp);
        assert!(out.insert(id.clone(), fp).is_none(), "duplicate {id}");
    }
    out
}

fn ids<'a>(records: impl IntoIterator<Item = &'a Consumed>) -> HashSet<String> {
    records
        .into_iter()
        .map(|m| m.headers["ce_id"].clone())
        .collect()
}

/// A time after every record produced so far and before every record produced after it
/// returns (record timestamps have millisecond resolution).
async fn time_barrier() -> chrono::DateTime<chrono::Utc> {
    let t = chrono::Utc::now() + chrono::Duration::milliseconds(2);
    let deadline = Instant::now() + Duration::from_secs(1);
    while chrono::Utc::now() <= t + chrono::Duration::milliseconds(1) {
        assert!(Instant::now() < deadline, "clock does not advance");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    t
}

// Replay reads and writes with the sink's security settings: plaintext and SASL_SSL alike.
per_listener!(offsets_range_to_a_topic_keeps_keys_headers_ids_and_timestamps: plaintext => Kafka::Plaintext, sasl_ssl_scram => Kafka::Scram);
async fn offsets_range_to_a_topic_keeps_keys_headers_ids_and_timestamps(listener: Kafka) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("rp-off");
    let cfg = secure::kafka(kafka_config(dir.path(), &prefix), listener);
    let srv = Running::start(&cfg).await;
    post(&srv, &specs(1_800_000_000_000, 24)).await;
    let src = cfg.sink.kafka.topics.chat_messages.clone();
    let all = consume(&[&src], 24, BOUND).await;

    // [1, 5) in every partition.
    let want: Vec<&Consumed> = all.iter().filter(|m| (1..5).contains(&m.offset)).collect();
    let out = format!("{prefix}.out");
    let s = replay(
        &cfg,
        &[
            "--topic",
            &src,
            "--from-offset",
            "1",
            "--to-offset",
            "5",
            "--to-topic",
            &out,
        ],
    )
    .await;
    assert_eq!(s.ending, Ending::Complete);
    assert_eq!(
        (s.read, s.published, s.filtered),
        (want.len() as u64, want.len() as u64, 0)
    );
    assert!(s.resume.is_none());
    let got = consume(&[&out], want.len(), BOUND).await;
    // Same key (hence partition), headers, payload and timestamp for every event id.
    assert_eq!(fingerprints(got.iter()), fingerprints(want.iter().copied()));

    // One partition only, filtered by chat and change type: a dry run counts exactly.
    let target_chat = all.iter().find(|m| m.partition == 0).unwrap().key.clone();
    let expect = all
        .iter()
        .filter(|m| m.partition == 0 && m.offset >= 2)
        .filter(|m| m.key == target_chat && m.json()["data"]["change_type"] == "created")
        .count();
    let in_range = all
        .iter()
        .filter(|m| m.partition == 0 && m.offset >= 2)
        .count();
    let s = replay(
        &cfg,
        &[
            "--topic",
            &src,
            "--from-offset",
            "0:2",
            "--chat",
            &target_chat,
            "--change-type",
            "created",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(s.ending, Ending::Complete);
    assert_eq!(s.partitions.len(), 1);
    assert_eq!(s.read, in_range as u64);
    assert_eq!(s.published, expect as u64);
    assert_eq!(s.filtered, (in_range - expect) as u64);
    srv.shutdown().await;
}

#[tokio::test]
async fn time_range_to_nats_and_to_a_topic() {
    common::needs!(time_range_to_nats_and_to_a_topic: "GRAPHBRIDGE_TEST_KAFKA", "GRAPHBRIDGE_TEST_NATS");
    time_range_to_nats_and_to_a_topic_on(Kafka::Plaintext, Nats::Plaintext).await;
}

#[tokio::test]
async fn time_range_to_nats_and_to_a_topic_secured() {
    common::needs!(time_range_to_nats_and_to_a_topic_secured: "GRAPHBRIDGE_TEST_KAFKA_SASL_SSL", "GRAPHBRIDGE_TEST_NATS_SECURE");
    time_range_to_nats_and_to_a_topic_on(Kafka::Scram, Nats::Password).await;
}

async fn time_range_to_nats_and_to_a_topic_on(kafka: Kafka, nats: Nats) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("rp-time");
    let mut cfg = secure::kafka(kafka_config(dir.path(), &prefix), kafka);
    cfg.sink.nats = common::nats::nats_config(dir.path(), &prefix).sink.nats;
    nats.apply(&mut cfg.sink.nats);
    cfg.read_secret_files().unwrap();
    let srv = Running::start(&cfg).await;
    let src = cfg.sink.kafka.topics.chat_messages.clone();
    post(&srv, &specs(1_800_000_100_000, 10)).await;
    let before = ids(consume(&[&src], 10, BOUND).await.iter());
    let t = time_barrier().await;
    post(&srv, &specs(1_800_000_200_000, 8)).await;
    let all = consume(&[&src], 18, BOUND).await;
    let after: Vec<&Consumed> = all
        .iter()
        .filter(|m| !before.contains(&m.headers["ce_id"]))
        .collect();
    assert_eq!(after.len(), 8);
    let t_arg = t.to_rfc3339();

    // From the time on, to NATS: exactly the later events, on the sink's subjects, with
    // Nats-Msg-Id = event id and the Kafka headers.
    let s = replay(&cfg, &["--topic", &src, "--from-time", &t_arg, "--to-nats"]).await;
    assert_eq!((s.ending, s.read, s.published), (Ending::Complete, 8, 8));
    let stored = common::nats::read_stream_with(&cfg.sink.nats).await;
    assert_eq!(stored.len(), 8);
    let by_id: HashMap<&str, &Consumed> = after
        .iter()
        .map(|m| (m.headers["ce_id"].as_str(), *m))
        .collect();
    for m in &stored {
        let k = by_id.get(m.msg_id.as_str()).expect("a later event");
        assert_eq!(m.payload, k.json());
        let subject = graphbridge_core::sink::nats::render_subject(
            &cfg.sink.nats.subjects.chat_messages,
            &[("chat", k.key.clone())],
        );
        assert_eq!(m.subject, subject);
        for (name, value) in &k.headers {
            assert!(
                m.headers.iter().any(|(n, v)| n == name && v == value),
                "header {name} kept"
            );
        }
    }
    let stored_ids: HashSet<&str> = stored.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(stored_ids.len(), 8);

    // Up to the time, to a topic: exactly the earlier events.
    let out = format!("{prefix}.out");
    let s = replay(
        &cfg,
        &["--topic", &src, "--to-time", &t_arg, "--to-topic", &out],
    )
    .await;
    assert_eq!((s.ending, s.read), (Ending::Complete, 10));
    assert_eq!(ids(consume(&[&out], 10, BOUND).await.iter()), before);

    // An empty window is complete at once.
    let s = replay(
        &cfg,
        &[
            "--topic",
            &src,
            "--from-time",
            &t_arg,
            "--to-time",
            &t_arg,
            "--dry-run",
        ],
    )
    .await;
    assert_eq!((s.ending, s.read), (Ending::Complete, 0));
    srv.shutdown().await;
}

#[tokio::test]
async fn reprocess_from_the_raw_archive_gives_the_published_events() {
    common::needs!(reprocess_from_the_raw_archive_gives_the_published_events: "GRAPHBRIDGE_TEST_KAFKA");
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("rp-raw");
    let mut cfg = kafka_config(dir.path(), &prefix);
    cfg.sink.kafka.raw_topic = Some(format!("{prefix}.raw"));
    let srv = Running::start(&cfg).await;
    // Three message events and two items the pipeline rejects after archiving them.
    let batch = mixed_batch(1_800_000_300_000);
    assert_eq!(
        srv.post_json("/notifications", &batch.body).await.status(),
        202
    );
    post(&srv, &specs(1_800_000_400_000, 6)).await;
    let t = &cfg.sink.kafka.topics;
    let original = consume(&[&t.channel_messages, &t.chat_messages], 9, BOUND).await;
    let archived = consume(&[&format!("{prefix}.raw")], 11, BOUND).await;
    srv.shutdown().await;
    // The archive keeps what reprocessing needs, not the secret that authenticates Graph.
    for m in &archived {
        let text = String::from_utf8_lossy(&m.payload);
        for secret in [SYNTH_CLIENT_STATE, REAL_CLIENT_STATE] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(m.json()["clientStateFingerprint"].is_string(), "{text}");
    }

    let out = format!("{prefix}.out");
    let s = replay(&cfg, &["--reprocess", "--to-topic", &out]).await;
    assert_eq!(s.ending, Ending::Complete);
    assert_eq!((s.read, s.published), (11, 9));
    assert_eq!(
        s.rejected,
        BTreeMap::from([
            ("signature_mismatch".to_string(), 1),
            ("unknown_certificate".to_string(), 1)
        ])
    );
    let rebuilt = consume(&[&out], 9, BOUND).await;
    // Same ids, same event JSON (received_at included), same keys and headers.
    let strip = |m: HashMap<String, Fingerprint>| -> HashMap<String, (String, BTreeMap<String, String>, Value)> {
        m.into_iter().map(|(id, (_, k, h, v, _))| (id, (k, h, v))).collect()
    };
    let rebuilt_fp = strip(fingerprints(rebuilt.iter()));
    assert_eq!(rebuilt_fp, strip(fingerprints(original.iter())));
    for m in &rebuilt {
        assert_valid_event(&m.json());
    }

    // Across a rotation: the old secret still configured beside the new one, it still matches;
    // once it is removed, the items it authenticated are rejected, counted, not published.
    let mut rotated = cfg.clone();
    rotated.graph.client_state = OneOrMany::Many(vec![
        Secret::new("the-new-client-state"),
        Secret::new(REAL_CLIENT_STATE),
        Secret::new(SYNTH_CLIENT_STATE),
    ]);
    let s = replay(&rotated, &["--reprocess", "--dry-run"]).await;
    assert_eq!((s.read, s.published), (11, 9));
    rotated.graph.client_state = OneOrMany::Many(vec![Secret::new("the-new-client-state")]);
    let s = replay(&rotated, &["--reprocess", "--dry-run"]).await;
    assert_eq!(
        (s.published, s.rejected.get("client_state")),
        (0, Some(&11))
    );

    // Records archived before the fingerprint (clientState in clear) are still reprocessed.
    let old_topic = format!("{prefix}.raw-old");
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let secrets = cfg.client_states().unwrap();
    for m in &archived {
        let clear = archive::unseal(std::str::from_utf8(&m.payload).unwrap(), &secrets).unwrap();
        assert!(clear.contains("\"clientState\""));
        let headers = m
            .headers
            .iter()
            .fold(rdkafka::message::OwnedHeaders::new(), |h, (k, v)| {
                h.insert(rdkafka::message::Header {
                    key: k,
                    value: Some(v.as_str()),
                })
            });
        let rec = rdkafka::producer::FutureRecord::to(&old_topic)
            .key(&m.key)
            .payload(&clear)
            .headers(headers)
            .partition(0);
        producer.send(rec, Duration::from_secs(10)).await.unwrap();
    }
    let old_out = format!("{prefix}.out-old");
    let s = replay(
        &cfg,
        &["--reprocess", "--topic", &old_topic, "--to-topic", &old_out],
    )
    .await;
    assert_eq!((s.read, s.published), (11, 9));
    let from_old = consume(&[&old_out], 9, BOUND).await;
    assert_eq!(strip(fingerprints(from_old.iter())), rebuilt_fp);
}

#[tokio::test]
async fn a_replay_stopped_by_max_messages_resumes_without_gaps_or_duplicates() {
    common::needs!(a_replay_stopped_by_max_messages_resumes_without_gaps_or_duplicates: "GRAPHBRIDGE_TEST_KAFKA");
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("rp-max");
    let cfg = kafka_config(dir.path(), &prefix);
    let srv = Running::start(&cfg).await;
    post(&srv, &specs(1_800_000_500_000, 30)).await;
    let src = cfg.sink.kafka.topics.chat_messages.clone();
    let all = consume(&[&src], 30, BOUND).await;
    srv.shutdown().await;

    let out = format!("{prefix}.out");
    let s = replay(
        &cfg,
        &["--topic", &src, "--to-topic", &out, "--max-messages", "7"],
    )
    .await;
    assert_eq!((s.ending, s.read, s.published), (Ending::MaxMessages, 7, 7));
    let resume = s.resume.expect("a resume point");
    let next: i64 = s.partitions.iter().map(|p| p.next - p.from).sum();
    assert_eq!(next, 7, "positions advanced by exactly what was published");

    let mut args = vec!["--topic", src.as_str(), "--to-topic", out.as_str()];
    args.extend(resume.split_whitespace());
    let s = replay(&cfg, &args).await;
    assert_eq!((s.ending, s.read), (Ending::Complete, 23));
    let got = consume(&[&out], 30, BOUND).await;
    assert_eq!(fingerprints(got.iter()), fingerprints(all.iter()));
}

#[tokio::test]
async fn sigint_stops_cleanly_and_the_printed_position_resumes_exactly() {
    common::needs!(sigint_stops_cleanly_and_the_printed_position_resumes_exactly: "GRAPHBRIDGE_TEST_KAFKA");
    stops_cleanly_on("INT", "rp-int", 1_800_000_600_000).await;
}

/// `kill`, `timeout` and a Kubernetes Job send SIGTERM: the same clean stop as Ctrl-C.
#[tokio::test]
async fn sigterm_stops_cleanly_and_the_printed_position_resumes_exactly() {
    common::needs!(sigterm_stops_cleanly_and_the_printed_position_resumes_exactly: "GRAPHBRIDGE_TEST_KAFKA");
    stops_cleanly_on("TERM", "rp-term", 1_800_000_650_000).await;
}

/// Replays 30 records at 10 a second, sends `signal` once some arrived, and checks the summary,
/// the exit status ([`EXIT_INTERRUPTED`]) and that the printed position resumes exactly.
async fn stops_cleanly_on(signal: &str, prefix: &str, base: i64) {
    use graphbridge::replay::stop::EXIT_INTERRUPTED;
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique(prefix);
    let cfg = kafka_config(dir.path(), &prefix);
    let srv = Running::start(&cfg).await;
    post(&srv, &specs(base, 30)).await;
    let src = cfg.sink.kafka.topics.chat_messages.clone();
    let all = consume(&[&src], 30, BOUND).await;
    srv.shutdown().await;

    let config = common::process::write_config(&cfg, dir.path());
    let out = format!("{prefix}.out");
    // 10 records a second: the signal lands mid-range.
    let child = Command::new(env!("CARGO_BIN_EXE_graphbridge"))
        .arg("--config")
        .arg(&config)
        .args([
            "replay",
            "--topic",
            &src,
            "--to-topic",
            &out,
            "--rate",
            "10",
            "--json",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_records(&out, 3).await;
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let output = tokio::time::timeout(
        BOUND,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("replay exits after the signal")
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(i32::from(EXIT_INTERRUPTED)),
        "an interrupted replay is told apart from a finished one: {stderr}"
    );
    assert!(stderr.contains(&format!("SIG{signal}")), "{stderr}");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["ending"], "interrupted");
    let read = summary["read"].as_u64().unwrap();
    assert!((3..30).contains(&read), "stopped mid-range after {read}");
    let resume = summary["resume"].as_str().unwrap().to_string();

    let mut args = vec!["--topic", src.as_str(), "--to-topic", out.as_str()];
    args.extend(resume.split_whitespace());
    let s = replay(&cfg, &args).await;
    assert_eq!((s.ending, s.read), (Ending::Complete, 30 - read));
    let got = consume(&[&out], 30, BOUND).await;
    assert_eq!(fingerprints(got.iter()), fingerprints(all.iter()));
}

/// Backwards ranges are refused with an error and a non-zero exit, never replayed as empty.
#[tokio::test]
async fn a_backwards_range_is_refused() {
    common::needs!(a_backwards_range_is_refused: "GRAPHBRIDGE_TEST_KAFKA");
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("rp-back");
    let cfg = kafka_config(dir.path(), &prefix);
    let srv = Running::start(&cfg).await;
    post(&srv, &specs(1_800_000_700_000, 12)).await;
    let src = cfg.sink.kafka.topics.chat_messages.clone();
    consume(&[&src], 12, BOUND).await;
    srv.shutdown().await;
    let config = common::process::write_config(&cfg, dir.path());
    let file = dir.path().join("out.jsonl");
    let file = file.to_str().unwrap();
    for (range, needle) in [
        (["--from-offset", "50", "--to-offset", "10"], "backwards"),
        (
            ["--from-offset", "0:40", "--to-offset", "0:12"],
            "backwards",
        ),
        (
            [
                "--from-time",
                "2026-12-03T12:00:00Z",
                "--to-time",
                "2026-12-03T11:00:00Z",
            ],
            "later than --to-time",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_graphbridge"))
            .arg("--config")
            .arg(&config)
            .args(["replay", "--topic", &src, "--to-file", file])
            .args(range)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{range:?}: {stderr}");
        assert!(stderr.contains(needle), "{range:?}: {stderr}");
        assert!(!stderr.contains("complete"), "{range:?}: {stderr}");
    }
    assert!(!std::path::Path::new(file).exists(), "nothing was replayed");
}

/// Operators append `--dry-run` to the real command: it is accepted, names the target, counts
/// what would go there and publishes nothing.
#[tokio::test]
async fn dry_run_with_a_target_reports_and_publishes_nothing() {
    common::needs!(dry_run_with_a_target_reports_and_publishes_nothing: "GRAPHBRIDGE_TEST_KAFKA");
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("rp-dry");
    let cfg = kafka_config(dir.path(), &prefix);
    let srv = Running::start(&cfg).await;
    post(&srv, &specs(1_800_000_800_000, 9)).await;
    let src = cfg.sink.kafka.topics.chat_messages.clone();
    consume(&[&src], 9, BOUND).await;
    srv.shutdown().await;

    let out = format!("{prefix}.out");
    let s = replay(&cfg, &["--topic", &src, "--to-topic", &out, "--dry-run"]).await;
    assert!(s.dry_run);
    assert_eq!((s.ending, s.read, s.published), (Ending::Complete, 9, 9));
    assert_eq!(
        s.target.as_deref(),
        Some(format!("kafka topic {out}").as_str())
    );
    let probe = group_consumer(&unique("probe"));
    let md = probe
        .fetch_metadata(Some(&out), Duration::from_secs(5))
        .unwrap();
    let written: i64 = md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (low, high) = probe
                .fetch_watermarks(&out, p.id(), Duration::from_secs(5))
                .unwrap();
            high - low
        })
        .sum();
    assert_eq!(written, 0, "a dry run publishes nothing");
}

/// `--to-file` keeps "one JSON per line": records whose value is not JSON or is null are
/// skipped and counted; a JSON value spread over lines is written on one.
#[tokio::test]
async fn to_file_skips_records_that_are_not_json() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    common::needs!(to_file_skips_records_that_are_not_json: "GRAPHBRIDGE_TEST_KAFKA");
    let dir = tempfile::tempdir().unwrap();
    let cfg = kafka_config(dir.path(), &unique("rp-nonjson"));
    let topic = unique("rp-nonjson-src");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let values: [Option<&[u8]>; 4] = [
        Some(br#"{"id":"a","n":1}"#),
        Some(b"plain text, not JSON"),
        None,
        Some(b"{\n  \"id\": \"b\",\n  \"n\": 2\n}"),
    ];
    for v in values {
        let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic).key("k").partition(0);
        if let Some(v) = v {
            rec = rec.payload(v);
        }
        producer.send(rec, Duration::from_secs(10)).await.unwrap();
    }
    let file = dir.path().join("out.jsonl");
    let s = replay(
        &cfg,
        &["--topic", &topic, "--to-file", file.to_str().unwrap()],
    )
    .await;
    assert_eq!((s.ending, s.read), (Ending::Complete, 4));
    assert_eq!((s.published, s.skipped_not_json), (2, 2));
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(
        lines,
        [json!({"id": "a", "n": 1}), json!({"id": "b", "n": 2})]
    );
}

/// Waits until `topic` holds at least `n` records (it may not exist yet).
async fn wait_records(topic: &str, n: i64) {
    let probe = group_consumer(&unique("probe"));
    let deadline = Instant::now() + BOUND;
    loop {
        let total: i64 = (0..3)
            .filter_map(|p| {
                probe
                    .fetch_watermarks(topic, p, Duration::from_secs(5))
                    .ok()
            })
            .map(|(low, high)| high - low)
            .sum();
        if total >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} holds {total} records, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn group_consumer(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

fn committed(group: &str, topic: &str, partitions: &[i32]) -> BTreeMap<i32, Option<i64>> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let got = group_consumer(group)
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    got.elements()
        .iter()
        .map(|e| {
            let o = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            (e.partition(), o)
        })
        .collect()
}

#[tokio::test]
async fn reset_group_to_a_time_with_a_dry_run_that_changes_nothing() {
    common::needs!(reset_group_to_a_time_with_a_dry_run_that_changes_nothing: "GRAPHBRIDGE_TEST_KAFKA");
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("rp-grp");
    let cfg = kafka_config(dir.path(), &prefix);
    let srv = Running::start(&cfg).await;
    let src = cfg.sink.kafka.topics.chat_messages.clone();
    post(&srv, &specs(1_800_000_700_000, 9)).await;
    let early = consume(&[&src], 9, BOUND).await;
    let t = time_barrier().await;
    post(&srv, &specs(1_800_000_800_000, 9)).await;
    let all = consume(&[&src], 18, BOUND).await;
    srv.shutdown().await;

    // The group has read everything: committed offsets at each partition's end.
    let partitions = [0, 1, 2];
    let mut ends = BTreeMap::new();
    for m in &all {
        let e = ends.entry(m.partition).or_insert(0i64);
        *e = (*e).max(m.offset + 1);
    }
    let group_name = unique("grp");
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(&src, p, Offset::Offset(*ends.get(&p).unwrap_or(&0)))
            .unwrap();
    }
    group_consumer(&group_name)
        .commit(&tpl, CommitMode::Sync)
        .unwrap();
    let before = committed(&group_name, &src, &partitions);
    // After the reset each partition restarts at its first record from after the time.
    let want: BTreeMap<i32, i64> = partitions
        .iter()
        .map(|p| {
            (
                *p,
                early.iter().filter(|m| m.partition == *p).count() as i64,
            )
        })
        .collect();

    // Dry run, through the binary: current and new offsets printed, nothing committed.
    let config = common::process::write_config(&cfg, dir.path());
    let output = Command::new(env!("CARGO_BIN_EXE_graphbridge"))
        .arg("--config")
        .arg(&config)
        .args(["replay", "--topic", &src, "--reset-group", &group_name])
        .args(["--to-time", &t.to_rfc3339(), "--dry-run", "--json"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plan: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(plan["dry_run"], true);
    for c in plan["changes"].as_array().unwrap() {
        let p = c["partition"].as_i64().unwrap() as i32;
        assert_eq!(c["current"].as_i64(), before[&p]);
        assert_eq!(c["new"].as_i64().unwrap(), want[&p]);
    }
    assert_eq!(committed(&group_name, &src, &partitions), before);

    // While a member is in the group the reset is refused.
    let member: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", &group_name)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    member.subscribe(&[&src]).unwrap();
    let deadline = Instant::now() + BOUND;
    while member.assignment().unwrap().count() == 0 {
        assert!(Instant::now() < deadline, "member never joined");
        let _ = tokio::time::timeout(Duration::from_millis(100), member.recv()).await;
    }
    let refused = group::reset(&cfg.sink.kafka, &src, &group_name, Bound::Time(t), false).await;
    assert!(
        matches!(refused, Err(ReplayError::GroupActive(_, 1))),
        "{refused:?}"
    );
    assert_eq!(committed(&group_name, &src, &partitions), before);
    member.unsubscribe();
    drop(member);
    let probe = group_consumer(&unique("probe"));
    let deadline = Instant::now() + BOUND;
    while group::active_members(&probe, &group_name).unwrap() > 0 {
        assert!(Instant::now() < deadline, "member never left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let reset = group::reset(&cfg.sink.kafka, &src, &group_name, Bound::Time(t), false)
        .await
        .unwrap();
    assert!(!reset.dry_run);
    let now: BTreeMap<i32, i64> = committed(&group_name, &src, &partitions)
        .into_iter()
        .map(|(p, o)| (p, o.expect("committed")))
        .collect();
    assert_eq!(now, want);
}
