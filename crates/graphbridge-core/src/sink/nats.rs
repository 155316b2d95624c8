//! The NATS sink: JetStream publishes with `Nats-Msg-Id` = event id, so Graph redeliveries are
//! dropped by the stream's duplicate window. Every PubAck is awaited before a batch counts.
//!
//! Subject tokens are escaped reversibly: ids contain `.` (and could contain `*`, `>`, spaces),
//! which would split or wildcard a subject. Those bytes, `%` itself and non-ASCII become `%XX`;
//! `percent_decode` restores the id.

use std::future::IntoFuture;
use std::time::Duration;

use async_nats::jetstream::{self, context::Publish, stream};
use async_nats::HeaderMap;
use futures::future::join_all;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::{Record, Sink, SinkError, Stream};
use crate::config::{NatsConfig, StreamNames};

const SUBJECT_RESERVED: &AsciiSet = &CONTROLS.add(b' ').add(b'.').add(b'*').add(b'>').add(b'%');

/// Escapes one subject token reversibly (`percent_encoding::percent_decode_str` inverts it).
pub fn escape_token(id: &str) -> String {
    utf8_percent_encode(id, SUBJECT_RESERVED).to_string()
}

/// Fills `{name}` placeholders with escaped values.
pub fn render_subject(template: &str, vars: &[(&str, String)]) -> String {
    vars.iter().fold(template.to_string(), |s, (k, v)| {
        s.replace(&format!("{{{k}}}"), &escape_token(v))
    })
}

/// The subjects a stream must capture: each template with its placeholders as `*`.
pub fn stream_subjects(names: &StreamNames) -> Vec<String> {
    [
        &names.channel_messages,
        &names.chat_messages,
        &names.lifecycle,
        &names.deadletter,
    ]
    .iter()
    .map(|t| {
        t.split('.')
            .map(|tok| {
                if tok.starts_with('{') && tok.ends_with('}') {
                    "*"
                } else {
                    tok
                }
            })
            .collect::<Vec<_>>()
            .join(".")
    })
    .collect()
}

/// Why a NATS connection could not be made: bad options (a permanent misconfiguration) or an
/// unreachable server (worth retrying).
#[derive(Debug)]
pub enum ConnectError {
    Options(String),
    Connect(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Options(m) | ConnectError::Connect(m) => f.write_str(m),
        }
    }
}

/// Connects with the configured credentials, nkey and TLS settings; shared by the sink and the
/// subscription controller's lifecycle consumer so both authenticate the same way.
pub async fn connect(cfg: &NatsConfig, name: &str) -> Result<async_nats::Client, ConnectError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| ConnectError::Options(format!("{what}: {e}"));
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5));
    if let Some(path) = &cfg.credentials_file {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| bad("credentials_file", &e))?;
    }
    if let Some(path) = &cfg.nkey_seed_file {
        let seed = std::fs::read_to_string(path).map_err(|e| bad("nkey_seed_file", &e))?;
        opts = opts.nkey(seed.trim().to_string());
    }
    if let Some(path) = &cfg.tls_ca_file {
        opts = opts.add_root_certificates(path.clone()).require_tls(true);
    }
    opts.connect(cfg.url.as_str())
        .await
        .map_err(|e| ConnectError::Connect(format!("connect to {}: {e}", cfg.url)))
}

pub struct NatsSink {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: StreamNames,
}

fn retryable(what: &str, e: impl std::fmt::Display) -> SinkError {
    SinkError::Retryable(format!("nats {what}: {e}"))
}

impl NatsSink {
    pub async fn connect(cfg: &NatsConfig) -> Result<Self, SinkError> {
        let permanent = |what: &str, e: &dyn std::fmt::Display| {
            SinkError::Permanent(format!("nats {what}: {e}"))
        };
        let client = connect(cfg, "graphbridge").await.map_err(|e| match e {
            ConnectError::Options(what) => SinkError::Permanent(format!("nats {what}")),
            ConnectError::Connect(what) => SinkError::Retryable(format!("nats {what}")),
        })?;
        let js = jetstream::new(client.clone());
        if cfg.create_stream {
            let config = stream::Config {
                name: cfg.stream.clone(),
                subjects: stream_subjects(&cfg.subjects),
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(cfg.duplicate_window_s),
                max_age: Duration::from_secs(cfg.max_age_s),
                ..Default::default()
            };
            js.create_or_update_stream(config)
                .await
                .map_err(|e| permanent(&format!("create stream {}", cfg.stream), &e))?;
        }
        Ok(NatsSink {
            client,
            js,
            subjects: cfg.subjects.clone(),
        })
    }

    /// The subject of a record of `stream` with these placeholder values (None for the raw
    /// archive, which is Kafka-only).
    pub fn subject(&self, stream: Stream, vars: &[(&str, String)]) -> Option<String> {
        let s = &self.subjects;
        let template = match stream {
            Stream::ChannelMessages => &s.channel_messages,
            Stream::ChatMessages => &s.chat_messages,
            Stream::Lifecycle => &s.lifecycle,
            Stream::DeadLetter => &s.deadletter,
            Stream::Raw => return None,
        };
        Some(render_subject(template, vars))
    }

    /// The JetStream context, for publishers that are not [`Record`]s (replay).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }
}

#[async_trait::async_trait]
impl Sink for NatsSink {
    async fn publish(&self, records: &[Record]) -> Result<(), SinkError> {
        let mut acks = Vec::with_capacity(records.len());
        for r in records {
            let Some(subject) = self.subject(r.stream, &r.subject_vars) else {
                continue;
            };
            let mut headers = HeaderMap::new();
            for (k, v) in &r.headers {
                headers.insert(*k, v.as_ref());
            }
            let publish = Publish::build()
                .payload(r.payload.clone().into())
                .headers(headers)
                .message_id(r.id.as_str());
            // Send every message first, then await the acks: one round trip per batch.
            acks.push(
                self.js
                    .send_publish(subject, publish)
                    .await
                    .map_err(|e| retryable("publish", e))?,
            );
        }
        for ack in join_all(acks.into_iter().map(|a| a.into_future())).await {
            ack.map_err(|e| retryable("ack", e))?;
        }
        Ok(())
    }

    async fn ready(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn kind(&self) -> &'static str {
        "nats"
    }

    async fn close(&self) {
        let _ = self.client.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_escape_reversibly() {
        for id in [
            "19:abc@thread.tacv2",
            "19:a_b@unq.gbl.spaces",
            "a*b>c d%e",
            "ü.ø",
        ] {
            let e = escape_token(id);
            assert!(!e.contains(['.', '*', '>', ' ']), "{e}");
            assert_eq!(
                percent_encoding::percent_decode_str(&e)
                    .decode_utf8()
                    .unwrap(),
                id
            );
        }
    }

    #[test]
    fn subjects_render_and_stream_captures_them() {
        let s = render_subject(
            "graph.v1.teams.{team}.channels.{channel}.messages",
            &[
                ("team", "t1".into()),
                ("channel", "19:x@thread.tacv2".into()),
            ],
        );
        assert_eq!(s, "graph.v1.teams.t1.channels.19:x@thread%2Etacv2.messages");
        let names = StreamNames {
            channel_messages: "graph.v1.teams.{team}.channels.{channel}.messages".into(),
            chat_messages: "graph.v1.chats.{chat}.messages".into(),
            lifecycle: "graph.v1.lifecycle.{event}".into(),
            deadletter: "graph.v1.deadletter".into(),
        };
        assert_eq!(
            stream_subjects(&names),
            vec![
                "graph.v1.teams.*.channels.*.messages",
                "graph.v1.chats.*.messages",
                "graph.v1.lifecycle.*",
                "graph.v1.deadletter"
            ]
        );
    }
}
