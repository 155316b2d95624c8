//! A record read from the source topic, and what it is: an event, a lifecycle event, a dead
//! letter or a raw archive item. Replayed records keep their bytes (key, headers, payload,
//! timestamp); the classification only routes (NATS subject) and filters them.

use serde_json::Value;

use crate::event::deadletter::DeadLetter;
use crate::event::normalize::message_resource;
use crate::event::v1::{LifecycleEvent, MessageEvent};
use crate::graph::envelope::ChangeNotification;
use crate::graph::resource::Conversation;
use crate::sink::{Record, Stream};

/// One record, as read or as rebuilt by `--reprocess`.
#[derive(Debug, Clone)]
pub struct Item {
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub payload: Vec<u8>,
    /// Milliseconds since the epoch (the source record's timestamp).
    pub timestamp: Option<i64>,
    pub facts: Facts,
}

/// What filters and targets need to know about a record.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Event id (`ce_id`, the dead letter's id); Nats-Msg-Id on NATS.
    pub id: Option<String>,
    pub stream: Option<Stream>,
    /// Values for the NATS subject template of `stream`.
    pub subject_vars: Vec<(&'static str, String)>,
    pub tenant: Option<String>,
    pub conversation: Option<Conversation>,
    pub change_type: Option<String>,
}

impl Item {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// A record read from Kafka, classified by its payload.
    pub fn read(
        key: Option<Vec<u8>>,
        headers: Vec<(String, Vec<u8>)>,
        payload: Vec<u8>,
        timestamp: Option<i64>,
    ) -> Item {
        let mut item = Item {
            key,
            headers,
            payload,
            timestamp,
            facts: Facts::default(),
        };
        item.facts = classify(&item.payload);
        if item.facts.id.is_none() {
            item.facts.id = item.header("ce_id").map(str::to_string);
        }
        if item.facts.tenant.is_none() {
            item.facts.tenant = item.header("graph_tenant_id").map(str::to_string);
        }
        item
    }

    /// A record the pipeline built (`--reprocess`), stamped with its source's timestamp.
    pub fn from_record(r: &Record, timestamp: Option<i64>) -> Item {
        let headers = r
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        Item::read(
            Some(r.key.as_bytes().to_vec()),
            headers,
            r.payload.clone(),
            timestamp,
        )
    }
}

fn facts_of(
    r: Record,
    tenant: &str,
    conversation: Option<Conversation>,
    change: Option<&str>,
) -> Facts {
    Facts {
        id: Some(r.id),
        stream: Some(r.stream),
        subject_vars: r.subject_vars,
        tenant: Some(tenant.to_string()),
        conversation,
        change_type: change.map(str::to_string),
    }
}

/// Classifies a payload with the crate's own types, so routing matches what the sinks do.
/// Unknown payloads get empty facts: they can still be copied to Kafka or a file.
pub fn classify(payload: &[u8]) -> Facts {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else {
        return Facts::default();
    };
    let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
    if v.get("specversion").is_some() && ty.starts_with("graph.teams.message.") {
        if let Ok(e) = serde_json::from_value::<MessageEvent>(v) {
            let d = &e.data;
            return facts_of(
                Record::message(&e),
                &d.tenant_id,
                Some(d.conversation.clone()),
                Some(&d.change_type),
            );
        }
    } else if v.get("specversion").is_some() && ty.starts_with("graph.subscription.") {
        if let Ok(e) = serde_json::from_value::<LifecycleEvent>(v) {
            return facts_of(Record::lifecycle(&e), &e.data.tenant_id, None, None);
        }
    } else if v.get("reason").is_some() && v.get("item").is_some() {
        if let Ok(d) = serde_json::from_value::<DeadLetter>(v) {
            let tenant = d.tenant_id.clone().unwrap_or_default();
            return facts_of(Record::dead_letter(&d), &tenant, None, None);
        }
    } else if v.get("subscriptionId").is_some() {
        // A raw archive item: routing facts from its resource string, content still encrypted.
        if let Ok(n) = serde_json::from_value::<ChangeNotification>(v) {
            return Facts {
                id: None,
                stream: Some(Stream::Raw),
                subject_vars: vec![],
                tenant: Some(n.tenant_id.clone()),
                conversation: message_resource(&n).ok().map(|(_, r)| r.conversation),
                change_type: n.change_type.map(|c| c.as_str().to_string()),
            };
        }
    }
    Facts::default()
}
