//! Reading back what the bridge wrote to the real NATS JetStream.
#![allow(dead_code)]

use graphbridge_core::config::{Config, SinkKind};
use serde_json::Value;

#[derive(Debug)]
pub struct Stored {
    pub subject: String,
    pub msg_id: String,
    pub headers: Vec<(String, String)>,
    pub payload: Value,
}

pub fn url() -> String {
    super::broker_env("GRAPHBRIDGE_TEST_NATS")
}

/// The test config with the NATS sink, a stream and a subject root unique to this test
/// (JetStream refuses streams whose subjects overlap).
pub fn nats_config(dir: &std::path::Path, prefix: &str) -> Config {
    let mut cfg = super::test_config(dir);
    cfg.sink.kind = SinkKind::Nats;
    cfg.sink.nats.url = url();
    cfg.sink.nats.stream = prefix.replace(['.', '-'], "_").to_uppercase();
    let s = &mut cfg.sink.nats.subjects;
    s.channel_messages = format!("{prefix}.v1.teams.{{team}}.channels.{{channel}}.messages");
    s.chat_messages = format!("{prefix}.v1.chats.{{chat}}.messages");
    s.lifecycle = format!("{prefix}.v1.lifecycle.{{event}}");
    s.deadletter = format!("{prefix}.v1.deadletter");
    cfg
}

/// Every message stored in `stream`, in sequence order.
pub async fn read_stream(stream: &str) -> Vec<Stored> {
    read_stream_at(&url(), stream).await
}

/// [`read_stream`] from the server at `url`.
pub async fn read_stream_at(url: &str, stream: &str) -> Vec<Stored> {
    read_from(async_nats::connect(url).await.expect("connect"), stream).await
}

/// The stream of `cfg`, read with its credentials and TLS settings (secured servers too).
pub async fn read_stream_with(cfg: &graphbridge_core::config::NatsConfig) -> Vec<Stored> {
    let client = graphbridge_core::sink::nats::connect(cfg, "test-reader")
        .await
        .expect("connect");
    read_from(client, &cfg.stream).await
}

async fn read_from(client: async_nats::Client, stream: &str) -> Vec<Stored> {
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.expect("stream exists");
    let last = s.info().await.expect("info").state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = s.get_raw_message(seq).await.expect("message");
        let headers: Vec<(String, String)> = m
            .headers
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
            .collect();
        let msg_id = headers
            .iter()
            .find(|(k, _)| k == "Nats-Msg-Id")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        out.push(Stored {
            subject: m.subject.to_string(),
            msg_id,
            headers,
            payload: serde_json::from_slice(&m.payload).expect("JSON payload"),
        });
    }
    out
}
