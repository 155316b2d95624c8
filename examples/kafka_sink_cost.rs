//! CPU cost of the Kafka sink alone: batches of 50 records shaped like events (1.3 KB payload,
//! the nine CloudEvents/tenant headers, keys over two topics) published through `KafkaSink`
//! with the bridge's producer settings, `CONC` batches in flight. Prints records per
//! CPU-second of this process (the producer's own threads included).
//!
//! ```sh
//! scripts/brokers.sh up && eval "$(scripts/brokers.sh env)"
//! cargo run --release --example kafka_sink_cost                 # CONC=8 BATCHES=2000
//! CONC=1 BATCHES=500 cargo run --release --example kafka_sink_cost
//! ```
//! Extra librdkafka properties: `KAFKA_PROPS="linger.ms=5,compression.type=none"`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use graphbridge_core::config::Config;
use graphbridge_core::sink::kafka::KafkaSink;
use graphbridge_core::sink::{Record, Sink, Stream};
use graphbridge_sim::report::ProcessUsage;

const BATCH: usize = 50;
const HEADERS: [&str; 9] = [
    "ce_specversion",
    "ce_id",
    "ce_type",
    "ce_source",
    "ce_subject",
    "ce_time",
    "ce_dataschema",
    "content-type",
    "graph_tenant_id",
];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
}

fn batch(n: usize, payload: &[u8]) -> Vec<Record> {
    (0..BATCH)
        .map(|i| Record {
            stream: if i % 2 == 0 {
                Stream::ChannelMessages
            } else {
                Stream::ChatMessages
            },
            id: format!("{n:032x}{i:032x}"),
            key: format!("conversation-{}", (n * BATCH + i) % 97),
            subject_vars: vec![],
            headers: HEADERS
                .iter()
                .map(|h| (*h, format!("{h}-value-{n}-{i}").into()))
                .collect(),
            payload: payload.to_vec(),
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut cfg = Config::defaults().sink.kafka;
    cfg.brokers = std::env::var("GRAPHBRIDGE_TEST_KAFKA").expect("GRAPHBRIDGE_TEST_KAFKA");
    let prefix = format!("sink-cost-{}", std::process::id());
    cfg.topics.channel_messages = format!("{prefix}.channel");
    cfg.topics.chat_messages = format!("{prefix}.chat");
    for kv in std::env::var("KAFKA_PROPS").unwrap_or_default().split(',') {
        if let Some((k, v)) = kv.split_once('=') {
            cfg.properties.insert(k.into(), v.into());
        }
    }
    let sink = Arc::new(KafkaSink::new(&cfg).expect("producer"));
    let payload: Vec<u8> = b"{\"data\":\"x\"}"
        .iter()
        .copied()
        .cycle()
        .take(1300)
        .collect();
    sink.publish(&batch(0, &payload))
        .await
        .expect("warm-up (topic creation)");

    let (batches, conc) = (env("BATCHES", 2000), env("CONC", 8));
    let next = Arc::new(AtomicUsize::new(0));
    let me = std::process::id();
    let (cpu0, t0) = (
        ProcessUsage::read(me).expect("/proc").cpu_seconds,
        Instant::now(),
    );
    let tasks: Vec<_> = (0..conc)
        .map(|_| {
            let (sink, next, payload) = (sink.clone(), next.clone(), payload.clone());
            // Records are built before the clock matters: one set per task, published in turn.
            let prepared: Vec<Vec<Record>> = (0..16).map(|n| batch(n, &payload)).collect();
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= batches {
                        break;
                    }
                    let records = &prepared[n % prepared.len()];
                    sink.publish(records).await.expect("publish");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let cpu = ProcessUsage::read(me).expect("/proc").cpu_seconds - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let records = (batches * BATCH) as f64;
    println!(
        "{records} records, {conc} batches of {BATCH} in flight: {:.0}/s, {:.0} per CPU-second ({:.1} µs each)",
        records / wall,
        records / cpu,
        cpu / records * 1e6
    );
}
