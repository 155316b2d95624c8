//! A record is an event ready for any sink: its stream, key, id, routing values and JSON.

use std::borrow::Cow;

use serde::Serialize;

use crate::event::deadletter::DeadLetter;
use crate::event::v1::{CloudEvent, LifecycleEvent, MessageEvent};
use crate::graph::resource::Conversation;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    ChannelMessages,
    ChatMessages,
    Lifecycle,
    DeadLetter,
    /// The optional archive of authenticated items, still encrypted.
    Raw,
}

impl Stream {
    pub const ALL: [Stream; 5] = [
        Stream::ChannelMessages,
        Stream::ChatMessages,
        Stream::Lifecycle,
        Stream::DeadLetter,
        Stream::Raw,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::ChannelMessages => "channel_messages",
            Stream::ChatMessages => "chat_messages",
            Stream::Lifecycle => "lifecycle",
            Stream::DeadLetter => "deadletter",
            Stream::Raw => "raw",
        }
    }
}

/// Header of raw archive records holding the time the item was received.
pub const RAW_RECEIVED_AT: &str = "graph_received_at";

#[derive(Debug, Clone)]
pub struct Record {
    pub stream: Stream,
    /// Event id: Kafka `ce_id`, NATS `Nats-Msg-Id`.
    pub id: String,
    /// Partition key: team id, chat id or subscription id.
    pub key: String,
    /// Values for NATS subject placeholders (`{team}`, `{channel}`, `{chat}`, `{event}`).
    pub subject_vars: Vec<(&'static str, String)>,
    /// CloudEvents Kafka binding headers plus the tenant id (constants are not copied).
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    /// One JSON document, no trailing newline.
    pub payload: Vec<u8>,
}

fn json(v: &impl Serialize) -> Vec<u8> {
    // Events are a few KiB: start there instead of growing (and copying) from 128 bytes.
    let mut out = Vec::with_capacity(4096);
    serde_json::to_writer(&mut out, v).expect("events serialize");
    out
}

/// The CloudEvents binding headers plus the tenant id, moved out of an event already
/// serialized.
fn ce_headers<T>(e: CloudEvent<T>, tenant: String) -> Vec<(&'static str, Cow<'static, str>)> {
    let origin = e.graphbridgeorigin.map(|o| ("ce_graphbridgeorigin", o));
    let mut headers = vec![
        ("ce_specversion", e.specversion),
        ("ce_id", e.id.into()),
        ("ce_type", e.ty),
        ("ce_source", e.source.into()),
        ("ce_subject", e.subject.into()),
        ("ce_time", e.time.into()),
        ("ce_dataschema", e.dataschema),
        (
            "content-type",
            "application/cloudevents+json; charset=utf-8".into(),
        ),
        ("graph_tenant_id", tenant.into()),
    ];
    headers.extend(origin);
    headers
}

impl Record {
    /// A message event; its strings move into the record's key and headers.
    pub fn message(mut e: MessageEvent) -> Self {
        let payload = json(&e);
        let (stream, key, subject_vars) = match &mut e.data.conversation {
            Conversation::Channel {
                team_id,
                channel_id,
            } => {
                let team = std::mem::take(team_id);
                let vars = vec![
                    ("team", team.clone()),
                    ("channel", std::mem::take(channel_id)),
                ];
                (Stream::ChannelMessages, team, vars)
            }
            Conversation::Chat { chat_id } => {
                let chat = std::mem::take(chat_id);
                (Stream::ChatMessages, chat.clone(), vec![("chat", chat)])
            }
        };
        let tenant = std::mem::take(&mut e.data.tenant_id);
        Record {
            stream,
            id: e.id.clone(),
            key,
            subject_vars,
            headers: ce_headers(e, tenant),
            payload,
        }
    }

    pub fn lifecycle(mut e: LifecycleEvent) -> Self {
        let payload = json(&e);
        let tenant = std::mem::take(&mut e.data.tenant_id);
        Record {
            stream: Stream::Lifecycle,
            id: e.id.clone(),
            key: std::mem::take(&mut e.data.subscription_id),
            subject_vars: vec![("event", std::mem::take(&mut e.data.lifecycle_event))],
            headers: ce_headers(e, tenant),
            payload,
        }
    }

    pub fn dead_letter(d: &DeadLetter) -> Self {
        Record {
            stream: Stream::DeadLetter,
            id: d.id.clone(),
            key: d.subscription_id.clone().unwrap_or_default(),
            subject_vars: vec![],
            headers: vec![
                ("graph_reject_reason", d.reason.clone().into()),
                (
                    "graph_tenant_id",
                    d.tenant_id.clone().unwrap_or_default().into(),
                ),
                ("content-type", "application/json".into()),
            ],
            payload: json(d),
        }
    }

    /// An authenticated item exactly as received, still encrypted, keyed like its event.
    /// `graph_received_at` keeps the receive time, which the event carries (`data.received_at`),
    /// so `replay --reprocess` rebuilds the very same event from the archive.
    pub fn raw(id: String, key: String, tenant: &str, received_at: &str, item: Vec<u8>) -> Self {
        Record {
            stream: Stream::Raw,
            id,
            key,
            subject_vars: vec![],
            headers: vec![
                ("graph_tenant_id", tenant.to_string().into()),
                (RAW_RECEIVED_AT, received_at.to_string().into()),
                ("content-type", "application/json".into()),
            ],
            payload: item,
        }
    }
}
