//! A downstream consumer of graphbridge's Kafka topics, in the pattern the README recommends:
//! deserialize with the crate's own v1 types, drop duplicates by event id (Graph redeliveries,
//! spool re-drains and replays carry the same id), and commit an offset only after its record
//! was processed, so a crash re-reads instead of losing.
//!
//! ```sh
//! cargo run --example kafka_consumer -- --brokers 127.0.0.1:9092 --group my-service \
//!     --topic graph.teams.channel-messages.v1 --topic graph.teams.chat-messages.v1
//! ```

use std::time::Duration;

use clap::Parser;
use graphbridge_event::dedupe::DedupeWindow;
use graphbridge_event::v1::{LifecycleEvent, MessageEvent};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long)]
    group: String,
    #[arg(long, required = true)]
    topic: Vec<String>,
    /// Event ids remembered for deduplication (how far apart two copies may arrive).
    #[arg(long, default_value_t = 100_000)]
    dedupe_window: usize,
    /// Exit after this long without a record (default: run until stopped).
    #[arg(long)]
    idle_exit_ms: Option<u64>,
}

enum Event {
    Message(Box<MessageEvent>),
    Lifecycle(Box<LifecycleEvent>),
}

/// The event in a record, by its CloudEvents type (`ce_type` header, else the payload).
fn decode(msg: &impl Message) -> Result<Event, String> {
    let payload = msg.payload().ok_or("empty record")?;
    let ty = msg
        .headers()
        .and_then(|h| h.iter().find(|x| x.key == "ce_type"))
        .and_then(|x| x.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    if ty.starts_with("graph.subscription.") {
        serde_json::from_slice(payload)
            .map(|e| Event::Lifecycle(Box::new(e)))
            .map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(payload)
            .map(|e| Event::Message(Box::new(e)))
            .map_err(|e| e.to_string())
    }
}

/// The application's work. Here: one line per event.
fn process(event: &Event) {
    match event {
        Event::Message(e) => println!(
            "{} {} {} {}",
            e.id,
            e.ty,
            e.data.conversation.key(),
            e.data.body.as_ref().map_or("", |b| b.plain_text.as_str())
        ),
        Event::Lifecycle(e) => println!("{} {} {}", e.id, e.ty, e.data.subscription_id),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", &args.group)
        .set("auto.offset.reset", "earliest")
        // Offsets are committed by hand, after processing.
        .set("enable.auto.commit", "false")
        .create()?;
    let topics: Vec<&str> = args.topic.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let mut seen = DedupeWindow::new(args.dedupe_window);
    let (mut processed, mut duplicates) = (0u64, 0u64);
    loop {
        let msg = match args.idle_exit_ms {
            Some(ms) => {
                match tokio::time::timeout(Duration::from_millis(ms), consumer.recv()).await {
                    Ok(m) => m?,
                    Err(_) => break,
                }
            }
            None => consumer.recv().await?,
        };
        match decode(&msg) {
            Ok(event) => {
                let id = match &event {
                    Event::Message(e) => &e.id,
                    Event::Lifecycle(e) => &e.id,
                };
                if seen.first_time(id) {
                    process(&event);
                    processed += 1;
                } else {
                    duplicates += 1;
                }
            }
            // A record this consumer cannot read (a newer schema): log it and move on, or
            // stop here if skipping would be wrong for the application.
            Err(e) => eprintln!(
                "skipping {}/{}@{}: {e}",
                msg.topic(),
                msg.partition(),
                msg.offset()
            ),
        }
        // Only now is the record done: commit past it. A crash before this line re-reads it,
        // and the dedupe window (or the idempotent processing) absorbs the copy.
        consumer.commit_message(&msg, CommitMode::Async)?;
    }
    // The last async commits must land before exiting.
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    eprintln!("processed {processed}, duplicates dropped {duplicates}");
    Ok(())
}
