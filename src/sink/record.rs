//! A record is an event ready for any sink: its stream, key, id, routing values and JSON.

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
    /// CloudEvents Kafka binding headers plus the tenant id.
    pub headers: Vec<(&'static str, String)>,
    /// One JSON document, no trailing newline.
    pub payload: Vec<u8>,
}

fn ce_headers<T>(e: &CloudEvent<T>, tenant: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ce_specversion", e.specversion.clone()),
        ("ce_id", e.id.clone()),
        ("ce_type", e.ty.clone()),
        ("ce_source", e.source.clone()),
        ("ce_subject", e.subject.clone()),
        ("ce_time", e.time.clone()),
        ("ce_dataschema", e.dataschema.clone()),
        (
            "content-type",
            "application/cloudevents+json; charset=utf-8".into(),
        ),
        ("graph_tenant_id", tenant.to_string()),
    ]
}

fn json(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(v).expect("events serialize")
}

impl Record {
    pub fn message(e: &MessageEvent) -> Self {
        let (stream, subject_vars) = match &e.data.conversation {
            Conversation::Channel {
                team_id,
                channel_id,
            } => (
                Stream::ChannelMessages,
                vec![("team", team_id.clone()), ("channel", channel_id.clone())],
            ),
            Conversation::Chat { chat_id } => {
                (Stream::ChatMessages, vec![("chat", chat_id.clone())])
            }
        };
        Record {
            stream,
            id: e.id.clone(),
            key: e.data.conversation.key().to_string(),
            subject_vars,
            headers: ce_headers(e, &e.data.tenant_id),
            payload: json(e),
        }
    }

    pub fn lifecycle(e: &LifecycleEvent) -> Self {
        Record {
            stream: Stream::Lifecycle,
            id: e.id.clone(),
            key: e.data.subscription_id.clone(),
            subject_vars: vec![("event", e.data.lifecycle_event.clone())],
            headers: ce_headers(e, &e.data.tenant_id),
            payload: json(e),
        }
    }

    pub fn dead_letter(d: &DeadLetter) -> Self {
        Record {
            stream: Stream::DeadLetter,
            id: d.id.clone(),
            key: d.subscription_id.clone().unwrap_or_default(),
            subject_vars: vec![],
            headers: vec![
                ("graph_reject_reason", d.reason.clone()),
                ("graph_tenant_id", d.tenant_id.clone().unwrap_or_default()),
                ("content-type", "application/json".into()),
            ],
            payload: json(d),
        }
    }

    /// An authenticated item exactly as received, still encrypted, keyed like its event.
    /// `graph_received_at` keeps the receive time, which the event carries (`data.received_at`),
    /// so `replay --reprocess` rebuilds the very same event from the archive.
    pub fn raw(id: String, key: String, tenant: &str, received_at: &str, item: &[u8]) -> Self {
        Record {
            stream: Stream::Raw,
            id,
            key,
            subject_vars: vec![],
            headers: vec![
                ("graph_tenant_id", tenant.to_string()),
                (RAW_RECEIVED_AT, received_at.to_string()),
                ("content-type", "application/json".into()),
            ],
            payload: item.to_vec(),
        }
    }
}
