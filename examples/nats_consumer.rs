//! A downstream consumer of graphbridge's NATS JetStream stream, in the pattern the README
//! recommends: a durable pull consumer with explicit acks, events deserialized with the crate's
//! own v1 types, duplicates dropped by event id (`Nats-Msg-Id`; JetStream already drops copies
//! published within its duplicate window, replays later than that are caught here), and each
//! message acknowledged only after it was processed, so a crash redelivers instead of losing.
//!
//! ```sh
//! cargo run --example nats_consumer -- --url nats://127.0.0.1:4222 --stream GRAPH \
//!     --durable my-service --filter 'graph.v1.chats.>'
//! ```

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use clap::Parser;
use futures::StreamExt;
use graphbridge_event::dedupe::DedupeWindow;
use graphbridge_event::v1::{LifecycleEvent, MessageEvent};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    #[arg(long, default_value = "GRAPH")]
    stream: String,
    /// Durable consumer name: the server remembers what was acknowledged.
    #[arg(long)]
    durable: String,
    /// Subject filter, e.g. `graph.v1.teams.>` (default: the whole stream).
    #[arg(long)]
    filter: Option<String>,
    /// Event ids remembered for deduplication.
    #[arg(long, default_value_t = 100_000)]
    dedupe_window: usize,
    /// Exit after this long without a message (default: run until stopped).
    #[arg(long)]
    idle_exit_ms: Option<u64>,
}

/// The application's work. Here: one line per event.
fn process(subject: &str, payload: &[u8]) -> Result<String, serde_json::Error> {
    if subject.contains(".lifecycle.") {
        let e: LifecycleEvent = serde_json::from_slice(payload)?;
        println!("{} {} {}", e.id, e.ty, e.data.subscription_id);
        Ok(e.id)
    } else {
        let e: MessageEvent = serde_json::from_slice(payload)?;
        println!("{} {} {}", e.id, e.ty, e.data.conversation.key());
        Ok(e.id)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let js = jetstream::new(async_nats::connect(&args.url).await?);
    let stream = js.get_stream(&args.stream).await?;
    let consumer: pull::Stream = stream
        .get_or_create_consumer(
            &args.durable,
            pull::Config {
                durable_name: Some(args.durable.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                filter_subject: args.filter.clone().unwrap_or_default(),
                ..Default::default()
            },
        )
        .await?
        .messages()
        .await?;
    tokio::pin!(consumer);
    let mut seen = DedupeWindow::new(args.dedupe_window);
    let (mut processed, mut duplicates) = (0u64, 0u64);
    loop {
        let next = match args.idle_exit_ms {
            Some(ms) => {
                match tokio::time::timeout(Duration::from_millis(ms), consumer.next()).await {
                    Ok(n) => n,
                    Err(_) => break,
                }
            }
            None => consumer.next().await,
        };
        let Some(msg) = next else { break };
        let msg = msg.map_err(|e| anyhow::anyhow!("{e}"))?;
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string());
        if id.as_deref().is_some_and(|id| !seen.first_time(id)) {
            duplicates += 1;
        } else {
            match process(msg.subject.as_str(), &msg.payload) {
                Ok(_) => processed += 1,
                // A message this consumer cannot read: terminate it (no redelivery) rather
                // than block the stream; an application may prefer to stop instead.
                Err(e) => {
                    eprintln!("cannot read {}: {e}", msg.subject);
                    msg.ack_with(AckKind::Term)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    continue;
                }
            }
        }
        // Only now is the message done: a crash before this line redelivers it.
        msg.double_ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    eprintln!("processed {processed}, duplicates dropped {duplicates}");
    Ok(())
}
