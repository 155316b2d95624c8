//! A small DLP service on graphbridge's streams: it reads message events, flags those whose
//! text carries a payment card number (digits, spaces or dashes, 13 to 19 digits, Luhn-valid),
//! and publishes a verdict for each (schema/message-verdict.v1.json), keyed by team or chat,
//! for `graphbridge verdicts run` to apply to Graph. It reads the graphbridge configuration
//! file for the broker, the message topics and the verdict topic.
//!
//! ```sh
//! cargo run --example dlp_service -- --config config/graphbridge.toml
//! ```
//!
//! Events that already carry a `policy_violation` are the `updated` notifications Graph sends
//! after a verdict: they are skipped, which is what ends the loop.

use std::time::Duration;

use clap::Parser;
use graphbridge_core::config::{Config, SinkKind};
use graphbridge_event::event_id;
use graphbridge_event::v1::MessageEvent;
use graphbridge_event::verdict::{
    MessageRef, PolicyTip, PolicyViolation, VerdictData, VerdictEvent,
};
use tokio::sync::watch;

#[derive(Parser)]
struct Args {
    /// graphbridge's configuration file (sink.kind, the topics or subjects, [verdicts]).
    #[arg(long, env = "GRAPHBRIDGE_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Kafka consumer group or JetStream durable consumer of this service.
    #[arg(long, default_value = "dlp-service")]
    group: String,
}

/// The rule: a card number in the text.
pub struct CardRule(regex::Regex);

impl Default for CardRule {
    fn default() -> Self {
        CardRule(regex::Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").expect("valid regex"))
    }
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

impl CardRule {
    pub fn matches(&self, text: &str) -> bool {
        self.0.find_iter(text).any(|m| {
            let digits: Vec<u32> = m.as_str().chars().filter_map(|c| c.to_digit(10)).collect();
            luhn(&digits)
        })
    }

    /// The verdict for `e`, if its text carries a card number and Graph does not already
    /// report a policy violation on it.
    pub fn verdict(&self, e: &MessageEvent) -> Option<VerdictEvent> {
        if e.data.policy_violation.is_some() || e.data.change_type == "deleted" {
            return None;
        }
        let body = e.data.body.as_ref()?;
        if !self.matches(&body.plain_text) {
            return None;
        }
        let data = VerdictData {
            schema_version: 1,
            event_id: Some(e.id.clone()),
            message: MessageRef {
                tenant_id: e.data.tenant_id.clone(),
                conversation: e.data.conversation.clone(),
                message_id: e.data.message_id.clone(),
                reply_to_id: e.data.reply_to_id.clone(),
            },
            policy_violation: PolicyViolation {
                dlp_action: Some("BlockAccess".into()),
                verdict_details: Some("AllowFalsePositiveOverride".into()),
                policy_tip: Some(PolicyTip {
                    general_text: Some(
                        "This message was blocked: it contains a payment card number.".into(),
                    ),
                    compliance_url: Some("https://contoso.example/dlp".into()),
                    matched_condition_descriptions: vec!["Credit Card Number".into()],
                }),
                ..Default::default()
            },
            reason: Some("payment card number in the message text".into()),
            rule_id: Some("card-number".into()),
        };
        // One id per event and rule: a verdict republished after a crash dedupes.
        let id = event_id("dlp-service", &e.id, "card-number", "");
        Some(VerdictEvent::verdict(
            id,
            "/dlp-service",
            chrono::Utc::now().to_rfc3339(),
            data,
        ))
    }
}

/// What the service did.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub events: u64,
    pub verdicts: u64,
}

/// Reads message events and publishes verdicts until `stop` turns true.
pub async fn run(
    cfg: &Config,
    group: &str,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Stats> {
    let rule = CardRule::default();
    let mut stats = Stats::default();
    match cfg.sink.kind {
        SinkKind::Kafka => {
            use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
            use rdkafka::message::{Header, Message, OwnedHeaders};
            use rdkafka::producer::{FutureProducer, FutureRecord};
            let k = &cfg.sink.kafka;
            let mut cc = graphbridge_core::sink::kafka::KafkaSink::consumer_config(k);
            cc.set("group.id", group)
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false");
            let consumer: StreamConsumer = cc.create()?;
            consumer.subscribe(&[&k.topics.channel_messages, &k.topics.chat_messages])?;
            let producer: FutureProducer =
                graphbridge_core::sink::kafka::KafkaSink::client_config(k).create()?;
            loop {
                let m = tokio::select! {
                    m = consumer.recv() => m?,
                    _ = stop.wait_for(|s| *s) => return Ok(stats),
                };
                stats.events += 1;
                let event: Option<MessageEvent> =
                    m.payload().and_then(|p| serde_json::from_slice(p).ok());
                if let Some(v) = event.as_ref().and_then(|e| rule.verdict(e)) {
                    let payload = serde_json::to_vec(&v)?;
                    let headers = OwnedHeaders::new().insert(Header {
                        key: "ce_id",
                        value: Some(&v.id),
                    });
                    let record = FutureRecord::to(&cfg.verdicts.kafka.verdicts)
                        .key(v.data.message.key())
                        .payload(&payload)
                        .headers(headers);
                    producer
                        .send(record, Duration::from_secs(30))
                        .await
                        .map_err(|(e, _)| anyhow::anyhow!("publishing a verdict: {e}"))?;
                    stats.verdicts += 1;
                }
                // After the verdict is in the broker: a crash re-reads the event, never skips it.
                consumer.commit_message(&m, CommitMode::Async)?;
            }
        }
        SinkKind::Nats => {
            use futures::StreamExt;
            let n = &cfg.sink.nats;
            let client = graphbridge_core::sink::nats::connect(n, "dlp-service")
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let js = async_nats::jetstream::new(client);
            let v = &cfg.verdicts.nats;
            graphbridge_core::sink::nats::ensure_stream(
                &js,
                n,
                &v.stream,
                vec![
                    v.subjects.verdicts.clone(),
                    v.subjects.deadletter.clone(),
                    v.subjects.audit.clone(),
                ],
            )
            .await
            .map_err(anyhow::Error::msg)?;
            // The whole stream (no filter): lifecycle events and dead letters are skipped below.
            let (mut messages, _, _) = graphbridge_core::sink::nats::durable_consumer(
                &js,
                &n.stream,
                String::new(),
                group,
                None,
            )
            .await
            .map_err(anyhow::Error::msg)?;
            loop {
                let m = tokio::select! {
                    m = messages.next() => match m {
                        Some(m) => m.map_err(|e| anyhow::anyhow!("{e}"))?,
                        None => return Ok(stats),
                    },
                    _ = stop.wait_for(|s| *s) => return Ok(stats),
                };
                stats.events += 1;
                let event: Option<MessageEvent> = serde_json::from_slice(&m.payload).ok();
                if let Some(verdict) = event.as_ref().and_then(|e| rule.verdict(e)) {
                    let payload = serde_json::to_vec(&verdict)?;
                    let publish = async_nats::jetstream::context::Publish::build()
                        .payload(payload.into())
                        .message_id(&verdict.id);
                    js.send_publish(v.subjects.verdicts.clone(), publish)
                        .await?
                        .await?;
                    stats.verdicts += 1;
                }
                m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        kind => anyhow::bail!("sink.kind = {kind:?}: the DLP example reads Kafka or NATS"),
    }
}

#[allow(dead_code)] // the tests include this file for `run` and `CardRule`
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    graphbridge_core::http::install_crypto_provider();
    let args = Args::parse();
    let cfg = Config::load(args.config.as_deref())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
    });
    let stats = run(&cfg, &args.group, rx).await?;
    eprintln!(
        "dlp-service: {} events read, {} verdicts published",
        stats.events, stats.verdicts
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_are_found_with_separators_and_luhn() {
        let r = CardRule::default();
        assert!(r.matches("pay with 4111 1111 1111 1111 please"));
        assert!(r.matches("5500-0000-0000-0004"));
        assert!(r.matches("amex 378282246310005."));
        assert!(!r.matches("4111 1111 1111 1112"), "fails Luhn");
        assert!(!r.matches("call 555 1234 tomorrow"), "too short");
    }
}
