//! Dead letters: permanently rejected items, kept still encrypted with the reason, so an
//! operator can see what was refused and why without the bridge ever publishing its content.

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Hex SHA-256 of the item as received: a redelivered reject dedupes like an event.
    pub id: String,
    /// Stable label, the same as the `rejected{reason}` metric.
    pub reason: String,
    /// Human-readable detail, never containing secrets or message content.
    pub detail: String,
    pub subscription_id: Option<String>,
    pub tenant_id: Option<String>,
    pub received_at: String,
    /// The notification item as Graph sent it, `clientState` redacted; content stays encrypted.
    pub item: serde_json::Value,
}

impl DeadLetter {
    pub fn new(raw: &RawValue, reason: &str, detail: String, received_at: &str) -> Self {
        let mut item: serde_json::Value =
            serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null);
        let field = |k: &str| item.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let subscription_id = field("subscriptionId");
        let tenant_id = field("tenantId");
        if let Some(cs) = item.get_mut("clientState") {
            *cs = serde_json::Value::String("<redacted>".into());
        }
        DeadLetter {
            id: hex::encode(digest::digest(&digest::SHA256, raw.get().as_bytes())),
            reason: reason.to_string(),
            detail,
            subscription_id,
            tenant_id,
            received_at: received_at.to_string(),
            item,
        }
    }
}
