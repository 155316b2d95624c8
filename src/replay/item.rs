//! A record read from the source topic, and what it is: an event, a lifecycle event, a dead
//! letter or a raw archive item. Replayed records keep their bytes (key, headers, payload,
//! timestamp); the classification only routes (NATS subject) and filters them.

use serde::Deserialize;
use serde_json::Value;

use graphbridge_core::event::deadletter::DeadLetter;
use graphbridge_core::event::normalize::message_resource;
use graphbridge_core::event::v1::{LifecycleEvent, MessageEvent};
use graphbridge_core::graph::envelope::ChangeNotification;
use graphbridge_core::graph::resource::Conversation;
use graphbridge_core::sink::{Record, Stream};

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

    /// Makes the payload one line of JSON Lines: false (leave the record out) when it is not
    /// JSON or empty (a null value); a JSON value spread over lines is written compactly.
    pub fn to_json_line(&mut self) -> bool {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&self.payload) else {
            return false;
        };
        if self.payload.iter().any(|b| matches!(b, b'\n' | b'\r')) {
            self.payload = serde_json::to_vec(&value).expect("a Value serializes");
        }
        true
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
                Record::message(e.clone()),
                &d.tenant_id,
                Some(d.conversation.clone()),
                Some(&d.change_type),
            );
        }
    } else if v.get("specversion").is_some() && ty.starts_with("graph.subscription.") {
        if let Ok(e) = serde_json::from_value::<LifecycleEvent>(v) {
            return facts_of(Record::lifecycle(e.clone()), &e.data.tenant_id, None, None);
        }
    } else if v.get("reason").is_some() && v.get("item").is_some() {
        if let Ok(d) = serde_json::from_value::<DeadLetter>(v) {
            let tenant = d.tenant_id.clone().unwrap_or_default();
            return facts_of(Record::dead_letter(&d), &tenant, None, None);
        }
    } else if v.get("subscriptionId").is_some() {
        // A raw archive item: routing facts from its resource string, content still encrypted.
        if let Ok(n) = ChangeNotification::deserialize(&v) {
            return Facts {
                id: None,
                stream: Some(Stream::Raw),
                subject_vars: vec![],
                tenant: Some(n.tenant_id.to_string()),
                conversation: message_resource(&n).ok().map(|(_, r)| r.conversation),
                change_type: n.change_type.map(|c| c.as_str().to_string()),
            };
        }
    }
    Facts::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message_event() -> Value {
        json!({
            "specversion": "1.0", "id": "e1", "source": "/tenants/t/chats/c",
            "type": "graph.teams.message.updated", "subject": "messages/1",
            "time": "2026-01-01T00:00:00.000Z", "datacontenttype": "application/json",
            "dataschema": "https://graphbridge.dev/schema/teams-message.v1.json",
            "data": {
                "schema_version": 1, "tenant_id": "t", "change_type": "updated",
                "conversation": {"kind": "chat", "chat_id": "19:a.b@unq.gbl.spaces"},
                "message_id": "1", "mentions": [], "attachments": [], "reactions": [],
                "subscription_id": "s", "received_at": "2026-01-01T00:00:00.000Z",
                "a_field_added_later_in_v1": true
            }
        })
    }

    #[test]
    fn message_events_route_like_the_sink() {
        let f = classify(message_event().to_string().as_bytes());
        assert_eq!(f.id.as_deref(), Some("e1"));
        assert_eq!(f.stream, Some(Stream::ChatMessages));
        assert_eq!(
            f.subject_vars,
            vec![("chat", "19:a.b@unq.gbl.spaces".to_string())]
        );
        assert_eq!(f.tenant.as_deref(), Some("t"));
        assert_eq!(f.change_type.as_deref(), Some("updated"));
    }

    #[test]
    fn raw_items_and_unknown_payloads() {
        let raw = json!({
            "subscriptionId": "s", "tenantId": "t", "changeType": "created",
            "resource": "teams('T')/channels('19:c@thread.tacv2')/messages('1')"
        });
        let f = classify(raw.to_string().as_bytes());
        assert_eq!(f.stream, Some(Stream::Raw));
        assert!(f.id.is_none());
        assert_eq!(
            f.conversation.map(|c| c.key().to_string()).as_deref(),
            Some("T")
        );
        let f = classify(b"not json");
        assert!(f.stream.is_none() && f.id.is_none());
    }

    #[test]
    fn headers_fill_what_the_payload_lacks() {
        let i = Item::read(
            None,
            vec![
                ("ce_id".into(), b"from-header".to_vec()),
                ("graph_tenant_id".into(), b"t9".to_vec()),
            ],
            b"{}".to_vec(),
            None,
        );
        assert_eq!(i.facts.id.as_deref(), Some("from-header"));
        assert_eq!(i.facts.tenant.as_deref(), Some("t9"));
    }
}
