//! The NATS sink: JetStream publishes with `Nats-Msg-Id` = event id, so Graph redeliveries are
//! dropped by the stream's duplicate window. Every PubAck is awaited before a batch counts.
//!
//! Subject tokens are escaped reversibly: ids contain `.` (and could contain `*`, `>`, spaces),
//! which would split or wildcard a subject. Those bytes, `%` itself and non-ASCII become `%XX`;
//! `percent_decode` restores the id.

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::context::{Publish, PublishError, PublishErrorKind};
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use futures::future::join_all;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::{lock, Record, Sink, SinkError, Stream};
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

/// Reconnect attempts at most a second apart (async-nats' own backoff grows to several
/// seconds): a spool waiting for the server resumes draining about a second after it is back.
fn reconnect_delay(attempts: usize) -> Duration {
    Duration::from_millis(100 * attempts.min(10) as u64)
}

/// The last trouble a connection reported (disconnected, or a server error such as an
/// authorization violation after a credentials change), for `/readyz`; cleared on connect.
type LastProblem = Arc<Mutex<Option<String>>>;

/// Connects with the configured credentials, nkey and TLS settings; shared by the sink and the
/// subscription controller's lifecycle consumer so both authenticate the same way.
pub async fn connect(cfg: &NatsConfig, name: &str) -> Result<async_nats::Client, ConnectError> {
    connect_reporting(cfg, name, LastProblem::default()).await
}

async fn connect_reporting(
    cfg: &NatsConfig,
    name: &str,
    last: LastProblem,
) -> Result<async_nats::Client, ConnectError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| ConnectError::Options(format!("{what}: {e}"));
    let url = cfg.url.clone();
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            let (last, url) = (last.clone(), url.clone());
            async move {
                if let async_nats::Event::Connected = event {
                    tracing::debug!(url, "nats: connected");
                    *lock(&last) = None;
                } else {
                    tracing::warn!(url, %event, "nats: connection trouble");
                    *lock(&last) = Some(event.to_string());
                }
            }
        });
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
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(user.clone(), password.expose().to_string());
    }
    if let Some(path) = &cfg.tls_ca_file {
        opts = opts.add_root_certificates(path.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        super::client_cert::check(cert)
            .map_err(|e| ConnectError::Options(format!("connect to {}: {e}", cfg.url)))?;
        opts = opts
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    opts.connect(cfg.url.as_str())
        .await
        .map_err(|e| describe_connect_error(&cfg.url, e.kind(), &e.to_string()))
}

/// A failed first connection in words: authentication and TLS failures are misconfigurations
/// (`Options`), the rest an unreachable server (`Connect`).
fn describe_connect_error(
    url: &str,
    kind: async_nats::ConnectErrorKind,
    text: &str,
) -> ConnectError {
    use async_nats::ConnectErrorKind as Kind;
    let cause = match kind {
        Kind::AuthorizationViolation | Kind::Authentication => {
            Some("authentication failed (check the user and password, nkey or credentials file)")
        }
        Kind::Tls | Kind::Io => tls_cause(text),
        _ => None,
    };
    match cause {
        Some(cause) => ConnectError::Options(format!("connect to {url}: {cause}: {text}")),
        None => ConnectError::Connect(format!("connect to {url}: {text}")),
    }
}

/// What a TLS failure reported by rustls means, if `text` is one.
fn tls_cause(text: &str) -> Option<&'static str> {
    let t = text.to_ascii_lowercase();
    if t.contains("unknownissuer") || t.contains("unknown issuer") {
        Some("TLS: the server's certificate is not trusted (unknown CA; check tls_ca_file)")
    } else if t.contains("expired") {
        Some("TLS: a certificate has expired (check tls_cert_file)")
    } else if t.contains("alert") || t.contains("badcertificate") {
        Some("TLS: the server refused the client certificate (check tls_cert_file)")
    } else if t.contains("certificate") || t.contains("tls") {
        Some("TLS handshake failed")
    } else {
        None
    }
}

/// What a durable consumer reads: the messages, the subject filter and the durable name.
pub type DurableMessages = (jetstream::consumer::pull::Stream, String, String);

/// A durable JetStream pull consumer (`group`, made a valid name) on the lifecycle subjects of
/// `event` (`*`: every event), shared by the subscription controller and backfill; messages
/// are acked by the caller once handled.
pub async fn lifecycle_consumer(
    cfg: &NatsConfig,
    client_name: &str,
    group: &str,
    event: &str,
    ack_wait: Option<Duration>,
) -> Result<DurableMessages, String> {
    let client = connect(cfg, client_name).await.map_err(|e| e.to_string())?;
    let filter = cfg.subjects.lifecycle.replace("{event}", event);
    durable_consumer(
        &jetstream::new(client),
        &cfg.stream,
        filter,
        group,
        ack_wait,
    )
    .await
}

/// A durable pull consumer `group` (made a valid name) of `stream`, reading `filter` from the
/// start, explicit acks.
pub async fn durable_consumer(
    js: &jetstream::Context,
    stream: &str,
    filter: String,
    group: &str,
    ack_wait: Option<Duration>,
) -> Result<DurableMessages, String> {
    use jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    let err = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    let stream = js
        .get_stream(stream)
        .await
        .map_err(|e| err(&format!("stream {stream}"), &e))?;
    let durable = group.replace(['.', '*', '>', ' '], "_");
    let mut config = pull::Config {
        durable_name: Some(durable.clone()),
        filter_subject: filter.clone(),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ..Default::default()
    };
    if let Some(wait) = ack_wait {
        config.ack_wait = wait;
    }
    let consumer = stream
        .get_or_create_consumer(&durable, config)
        .await
        .map_err(|e| err(&format!("consumer {durable}"), &e))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| err("subscribe", &e))?;
    Ok((messages, filter, durable))
}

/// Creates or updates stream `name` capturing `subjects`, with the sink's limits (file storage,
/// duplicate window, maximum age).
pub async fn ensure_stream(
    js: &jetstream::Context,
    cfg: &NatsConfig,
    name: &str,
    subjects: Vec<String>,
) -> Result<(), String> {
    let config = stream::Config {
        name: name.to_string(),
        subjects,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(cfg.duplicate_window_s),
        max_age: Duration::from_secs(cfg.max_age_s),
        ..Default::default()
    };
    js.create_or_update_stream(config)
        .await
        .map(|_| ())
        .map_err(|e| format!("create stream {name}: {e}"))
}

pub struct NatsSink {
    client: async_nats::Client,
    url: String,
    last_problem: LastProblem,
    js: jetstream::Context,
    subjects: StreamNames,
}

/// Sorts a JetStream publish failure into permanent (a misconfiguration that retrying will not
/// fix, reported loudly) or retryable (an outage), as the Kafka sink does with its error codes.
fn classify(what: &str, e: &PublishError) -> SinkError {
    let api = std::error::Error::source(e).and_then(|s| s.downcast_ref::<jetstream::Error>());
    let text = format!("nats {what}: {e}");
    if is_permanent(e.kind(), api) {
        SinkError::Permanent(text)
    } else {
        SinkError::Retryable(text)
    }
}

/// Whether a publish that failed with `kind` (and the JetStream API error the server answered,
/// if any) cannot succeed by retrying.
fn is_permanent(kind: PublishErrorKind, api: Option<&jetstream::Error>) -> bool {
    use jetstream::ErrorCode;
    match kind {
        // The server answered "no responders": no stream captures the subject (subjects or
        // stream misconfigured, or the stream deleted). async-nats reports a stream that is
        // briefly without a leader in a cluster the same way; that costs a louder log line
        // only, the batch is retried (spooled or 503) either way.
        PublishErrorKind::StreamNotFound => true,
        // Expected-last-id/sequence checks, which this sink never asks for.
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => true,
        // No PubAck in time, or the connection dropped: the server is down or restarting.
        // (A publish the account may not make is dropped by the server and ends here too.)
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => false,
        // The server refused the message: 4xx is about the request itself (larger than the
        // stream's max_msg_size, no such stream, bad request); JetStream missing for the
        // account is configuration; the rest (5xx: storage, no quorum) passes.
        PublishErrorKind::Other => api.is_some_and(|a| {
            (400..500).contains(&a.code())
                || matches!(
                    a.error_code(),
                    ErrorCode::JETSTREAM_NOT_ENABLED
                        | ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT
                        | ErrorCode::NO_ACCOUNT
                )
        }),
    }
}

/// Bytes of a message on the wire that the server's `max_payload` bounds: the payload and the
/// headers block (`NATS/1.0`, each header, `Nats-Msg-Id`).
fn wire_size(r: &Record) -> usize {
    let line = |k: &str, v: &str| k.len() + 2 + v.len() + 2;
    let headers: usize = r.headers.iter().map(|(k, v)| line(k, v)).sum();
    "NATS/1.0\r\n".len() + headers + line("Nats-Msg-Id", &r.id) + 2 + r.payload.len()
}

/// Refuses, before sending, what the server would refuse only by closing the connection (a
/// message over `max_payload`; 0: not known yet) or never acknowledge (an invalid subject).
fn precheck(subject: &str, size: usize, max_payload: usize) -> Result<(), SinkError> {
    let bad_token =
        |t: &str| t.is_empty() || t == "*" || t == ">" || t.contains(char::is_whitespace);
    if subject.split('.').any(bad_token) {
        return Err(SinkError::Permanent(format!(
            "nats publish: invalid subject {subject:?} (check the subject templates)"
        )));
    }
    if max_payload > 0 && size > max_payload {
        return Err(SinkError::Permanent(format!(
            "nats publish: message of {size} bytes exceeds the server's max_payload of {max_payload}"
        )));
    }
    Ok(())
}

impl NatsSink {
    pub async fn connect(cfg: &NatsConfig) -> Result<Self, SinkError> {
        let last_problem = LastProblem::default();
        let client = connect_reporting(cfg, "graphbridge", last_problem.clone())
            .await
            .map_err(|e| match e {
                ConnectError::Options(what) => SinkError::Permanent(format!("nats {what}")),
                ConnectError::Connect(what) => SinkError::Retryable(format!("nats {what}")),
            })?;
        let js = jetstream::new(client.clone());
        if cfg.create_stream {
            ensure_stream(&js, cfg, &cfg.stream, stream_subjects(&cfg.subjects))
                .await
                .map_err(|e| SinkError::Permanent(format!("nats {e}")))?;
        }
        Ok(NatsSink {
            client,
            url: cfg.url.clone(),
            last_problem,
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
        let max_payload = self.client.server_info().max_payload;
        let mut acks = Vec::with_capacity(records.len());
        for r in records {
            let Some(subject) = self.subject(r.stream, &r.subject_vars) else {
                continue;
            };
            precheck(&subject, wire_size(r), max_payload)?;
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
                    .map_err(|e| classify("publish", &e))?,
            );
        }
        for ack in join_all(acks.into_iter().map(|a| a.into_future())).await {
            ack.map_err(|e| classify("ack", &e))?;
        }
        Ok(())
    }

    async fn ready(&self) -> Result<(), SinkError> {
        use async_nats::connection::State;
        let state = self.client.connection_state();
        if state == State::Connected {
            return Ok(());
        }
        let problem = lock(&self.last_problem).clone().unwrap_or_default();
        let text = format!("nats {}: {state}; last event: {problem}", self.url);
        // The server refusing the credentials will not change by reconnecting.
        if problem.contains("authorization violation") {
            Err(SinkError::Permanent(text))
        } else {
            Err(SinkError::Retryable(text))
        }
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

    fn api_error(code: usize, err_code: u64) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": code, "err_code": err_code, "description": "test"
        }))
        .unwrap()
    }

    #[test]
    fn publish_errors_are_sorted_into_permanent_and_retryable() {
        use PublishErrorKind::*;
        assert!(
            is_permanent(StreamNotFound, None),
            "no stream matches the subject"
        );
        assert!(is_permanent(WrongLastSequence, None));
        assert!(!is_permanent(TimedOut, None), "no PubAck in time");
        assert!(!is_permanent(BrokenPipe, None), "connection lost");
        assert!(
            !is_permanent(Other, None),
            "request not sent: client closing"
        );
        // The server's JetStream answers, by code.
        let too_large = api_error(400, 10054);
        assert!(is_permanent(Other, Some(&too_large)), "over max_msg_size");
        assert!(
            is_permanent(Other, Some(&api_error(404, 10059))),
            "stream not found"
        );
        assert!(
            is_permanent(Other, Some(&api_error(503, 10039))),
            "no JetStream for account"
        );
        assert!(
            !is_permanent(Other, Some(&api_error(503, 10008))),
            "temporarily unavailable"
        );
        assert!(
            !is_permanent(Other, Some(&api_error(500, 10047))),
            "storage exceeded"
        );
    }

    #[test]
    fn classification_keeps_the_words_of_the_error() {
        let e = classify("ack", &PublishError::from(PublishErrorKind::TimedOut));
        assert!(matches!(&e, SinkError::Retryable(m) if m.starts_with("nats ack: timed out")));
        let e = classify("ack", &PublishError::from(PublishErrorKind::StreamNotFound));
        assert!(
            matches!(&e, SinkError::Permanent(m) if m.contains("no stream")),
            "{e}"
        );
    }

    #[test]
    fn invalid_subjects_and_oversized_messages_are_refused_before_sending() {
        assert!(precheck("graph.v1.chats.19:a%2Eb.messages", 100, 1024).is_ok());
        assert!(
            precheck("graph.v1.chats.x.messages", 5000, 0).is_ok(),
            "max not known"
        );
        for bad in [
            "graph..messages",
            "graph.v1.",
            "graph.*.x",
            "graph.>",
            "a b.c",
            "",
        ] {
            assert!(
                matches!(precheck(bad, 1, 1024), Err(SinkError::Permanent(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            precheck("graph.v1.deadletter", 1025, 1024),
            Err(SinkError::Permanent(m)) if m.contains("max_payload")
        ));
    }

    #[test]
    fn the_wire_size_counts_payload_and_headers() {
        let r = Record {
            stream: Stream::DeadLetter,
            id: "abc".into(),
            key: "k".into(),
            subject_vars: vec![],
            headers: vec![("ce_id", "abc".into())],
            payload: vec![b'x'; 10],
        };
        // "NATS/1.0\r\n" + "ce_id: abc\r\n" + "Nats-Msg-Id: abc\r\n" + "\r\n" + payload
        assert_eq!(wire_size(&r), 10 + 12 + 18 + 2 + 10);
    }
}
