//! The decrypted resource: Graph's `chatMessage`, only the fields the event schema uses.
//! Unknown fields are ignored (Graph adds fields over time); `id` is required, so JSON that is
//! not a chatMessage is rejected instead of producing an empty event.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    pub id: String,
    #[serde(default)]
    pub reply_to_id: Option<String>,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub message_type: Option<String>,
    #[serde(default)]
    pub created_date_time: Option<String>,
    #[serde(default)]
    pub last_modified_date_time: Option<String>,
    /// Set once the message text was edited (a reaction changes `lastModifiedDateTime` only).
    #[serde(default)]
    pub last_edited_date_time: Option<String>,
    #[serde(default)]
    pub deleted_date_time: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub chat_id: Option<String>,
    #[serde(default)]
    pub importance: Option<String>,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub web_url: Option<String>,
    #[serde(default)]
    pub from: Option<From>,
    #[serde(default)]
    pub body: Option<ItemBody>,
    #[serde(default)]
    pub channel_identity: Option<ChannelIdentity>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    #[serde(default)]
    pub mentions: Vec<Mention>,
    #[serde(default)]
    pub reactions: Vec<Reaction>,
    /// Set by a DLP app (a verdict); `null` on most messages.
    #[serde(default)]
    pub policy_violation: Option<serde_json::Value>,
}

/// `chatMessageFromIdentitySet`: exactly one of the three is set for a normal message.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct From {
    #[serde(default)]
    pub user: Option<Identity>,
    #[serde(default)]
    pub application: Option<Identity>,
    #[serde(default)]
    pub device: Option<Identity>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemBody {
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelIdentity {
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub channel_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub content_url: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mention {
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub mention_text: Option<String>,
    #[serde(default)]
    pub mentioned: Option<Mentioned>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Mentioned {
    #[serde(default)]
    pub user: Option<Identity>,
    #[serde(default)]
    pub application: Option<Identity>,
    #[serde(default)]
    pub conversation: Option<Identity>,
    #[serde(default)]
    pub tag: Option<Identity>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reaction {
    #[serde(default)]
    pub reaction_type: Option<String>,
    #[serde(default)]
    pub created_date_time: Option<String>,
    #[serde(default)]
    pub user: Option<From>,
}

impl ChatMessage {
    pub fn parse(plaintext: &[u8]) -> Result<Self, serde_json::Error> {
        super::from_json_bytes(plaintext)
    }
}
