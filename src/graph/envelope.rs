//! Graph's delivery body: `{"value":[changeNotification…], "validationTokens":[JWT…]}`.
//!
//! The batch is parsed in two steps: the envelope keeps each item as raw JSON, then each item
//! is parsed on its own, so one malformed item is rejected alone instead of failing its batch,
//! and the raw bytes stay available for the dead-letter stream and the raw archive.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub value: Vec<Box<RawValue>>,
    /// One JWT per (app, tenant) pair; `null` entries mean a misconfigured service principal.
    #[serde(default)]
    pub validation_tokens: Option<Vec<Option<String>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeType {
    Created,
    Updated,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Created => "created",
            ChangeType::Updated => "updated",
            ChangeType::Deleted => "deleted",
        }
    }
}

/// One `changeNotification`. Lifecycle notifications share the type and carry `lifecycleEvent`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeNotification {
    pub subscription_id: String,
    #[serde(default)]
    pub subscription_expiration_date_time: Option<String>,
    #[serde(default)]
    pub change_type: Option<ChangeType>,
    /// Echo of the subscription's secret; compared in constant time, never logged.
    #[serde(default)]
    pub client_state: Option<String>,
    pub tenant_id: String,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub resource_data: Option<ResourceData>,
    #[serde(default)]
    pub encrypted_content: Option<EncryptedContent>,
    #[serde(default)]
    pub lifecycle_event: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ResourceData {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(rename = "@odata.type", default)]
    pub odata_type: Option<String>,
    #[serde(rename = "@odata.id", default)]
    pub odata_id: Option<String>,
}

#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EncryptedContent {
    pub data: String,
    pub data_key: String,
    pub data_signature: String,
    pub encryption_certificate_id: String,
    #[serde(default)]
    pub encryption_certificate_thumbprint: Option<String>,
}

impl std::fmt::Debug for EncryptedContent {
    // The ciphertext is noise in logs; the certificate id is what an operator needs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedContent")
            .field("encryption_certificate_id", &self.encryption_certificate_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not a JSON notification envelope: {0}")]
    Json(#[from] serde_json::Error),
}

impl Envelope {
    pub fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        Ok(serde_json::from_slice(body)?)
    }
}

impl ChangeNotification {
    pub fn parse(raw: &RawValue) -> Result<Self, serde_json::Error> {
        serde_json::from_str(raw.get())
    }

    pub fn is_lifecycle(&self) -> bool {
        self.lifecycle_event.is_some()
    }
}
