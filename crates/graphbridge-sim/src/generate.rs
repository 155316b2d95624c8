//! Realistic Teams chatMessages and the notification items Graph would send for them.
//! Shared by `demo`, the simulator and the tests.

use serde_json::{json, Value};

use graphbridge_core::crypto::encrypt::Recipient;
use graphbridge_core::graph::envelope::ChangeType;
use graphbridge_core::graph::resource::Conversation;

/// One message to notify about.
#[derive(Debug, Clone)]
pub struct MessageSpec {
    pub tenant_id: String,
    pub conversation: Conversation,
    pub message_id: String,
    pub reply_to_id: Option<String>,
    pub change_type: ChangeType,
    /// HTML body content.
    pub html: String,
    pub from_id: String,
    pub from_name: String,
    /// Milliseconds since the epoch of the last change: also the etag, as Graph does.
    pub modified_ms: i64,
    /// Mentioned users: (id, display name); the body should contain `<at id="i">name</at>`.
    pub mentions: Vec<(String, String)>,
    /// Attached file names (reference attachments on SharePoint, as Teams does).
    pub attachments: Vec<String>,
    /// Reactions: (reactionType, user id).
    pub reactions: Vec<(String, String)>,
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl MessageSpec {
    /// A plain message by a fixed sender; callers adjust the public fields.
    pub fn new(
        tenant_id: &str,
        conversation: Conversation,
        message_id: i64,
        change_type: ChangeType,
        html: &str,
    ) -> Self {
        MessageSpec {
            tenant_id: tenant_id.to_string(),
            conversation,
            message_id: message_id.to_string(),
            reply_to_id: None,
            change_type,
            html: html.to_string(),
            from_id: "a660dbf8-1ebf-4be9-be48-19c602bf5194".into(),
            from_name: "Megan Bowen".into(),
            modified_ms: message_id,
            mentions: vec![],
            attachments: vec![],
            reactions: vec![],
        }
    }

    /// Graph's resource string for this message.
    pub fn resource(&self) -> String {
        match (&self.conversation, &self.reply_to_id) {
            (
                Conversation::Channel {
                    team_id,
                    channel_id,
                },
                Some(parent),
            ) => format!(
                "teams('{team_id}')/channels('{channel_id}')/messages('{parent}')/replies('{}')",
                self.message_id
            ),
            (
                Conversation::Channel {
                    team_id,
                    channel_id,
                },
                None,
            ) => {
                format!(
                    "teams('{team_id}')/channels('{channel_id}')/messages('{}')",
                    self.message_id
                )
            }
            (Conversation::Chat { chat_id }, _) => {
                format!("chats('{chat_id}')/messages('{}')", self.message_id)
            }
        }
    }

    /// The chatMessage resource as Graph serializes it.
    pub fn chat_message(&self) -> Value {
        let created: i64 = self.message_id.parse().unwrap_or(self.modified_ms);
        let deleted = self.change_type == ChangeType::Deleted;
        let (chat_id, channel_identity) = match &self.conversation {
            Conversation::Channel {
                team_id,
                channel_id,
            } => (
                Value::Null,
                json!({"teamId": team_id, "channelId": channel_id}),
            ),
            Conversation::Chat { chat_id } => (json!(chat_id), Value::Null),
        };
        json!({
            "@odata.type": "#Microsoft.Graph.chatMessage",
            "id": self.message_id,
            "replyToId": self.reply_to_id,
            "etag": self.modified_ms.to_string(),
            "messageType": "message",
            "createdDateTime": iso(created),
            "lastModifiedDateTime": iso(self.modified_ms),
            "lastEditedDateTime": if self.change_type == ChangeType::Updated { json!(iso(self.modified_ms)) } else { Value::Null },
            "deletedDateTime": if deleted { json!(iso(self.modified_ms)) } else { Value::Null },
            "subject": null,
            "summary": null,
            "chatId": chat_id,
            "importance": "normal",
            "locale": "en-us",
            "webUrl": null,
            "from": {"application": null, "device": null, "user": {
                "@odata.type": "#microsoft.graph.teamworkUserIdentity",
                "id": self.from_id, "displayName": self.from_name, "userIdentityType": "aadUser",
                "tenantId": self.tenant_id}},
            "body": {"contentType": "html", "content": if deleted { String::new() } else { self.html.clone() }},
            "channelIdentity": channel_identity,
            "attachments": self.attachments.iter().enumerate().map(|(i, name)| json!({
                "id": format!("{:08x}-0000-4000-8000-{:012x}", created, i),
                "contentType": "reference",
                "contentUrl": format!("https://contoso.sharepoint.com/sites/team/Shared%20Documents/{name}"),
                "content": null, "name": name, "thumbnailUrl": null, "teamsAppId": null})).collect::<Vec<_>>(),
            "mentions": self.mentions.iter().enumerate().map(|(i, (id, name))| json!({
                "id": i, "mentionText": name,
                "mentioned": {"application": null, "device": null, "conversation": null, "tag": null,
                              "user": {"id": id, "displayName": name, "userIdentityType": "aadUser"}}})).collect::<Vec<_>>(),
            "policyViolation": null,
            "reactions": self.reactions.iter().map(|(ty, user)| json!({
                "reactionType": ty, "displayName": null, "reactionContentUrl": null,
                "createdDateTime": iso(self.modified_ms),
                "user": {"application": null, "device": null, "user": {"id": user, "displayName": null, "userIdentityType": "aadUser"}}})).collect::<Vec<_>>(),
            "replies": [],
            "hostedContents": [],
            "eventDetail": null
        })
    }

    /// The changeNotification item, content encrypted for `recipient`.
    pub fn notification(
        &self,
        subscription_id: &str,
        client_state: &str,
        recipient: &Recipient,
    ) -> Value {
        let plaintext = serde_json::to_vec(&self.chat_message()).expect("json");
        self.notification_with(
            subscription_id,
            client_state,
            &serde_json::to_value(recipient.encrypt(&plaintext)).expect("json"),
        )
    }

    /// The item around a given `encryptedContent` (for tests that tamper with it).
    pub fn notification_with(
        &self,
        subscription_id: &str,
        client_state: &str,
        encrypted: &Value,
    ) -> Value {
        let resource = self.resource();
        json!({
            "subscriptionId": subscription_id,
            "subscriptionExpirationDateTime": iso(self.modified_ms + 3 * 24 * 3600 * 1000),
            "changeType": self.change_type.as_str(),
            "clientState": client_state,
            "tenantId": self.tenant_id,
            "resource": resource,
            "resourceData": {"id": self.message_id, "@odata.type": "#Microsoft.Graph.chatMessage", "@odata.id": resource},
            "encryptedContent": encrypted,
        })
    }
}

/// A lifecycle notification item.
pub fn lifecycle_item(
    subscription_id: &str,
    tenant_id: &str,
    client_state: &str,
    event: &str,
    expires: &str,
) -> Value {
    json!({
        "subscriptionId": subscription_id,
        "subscriptionExpirationDateTime": expires,
        "tenantId": tenant_id,
        "clientState": client_state,
        "lifecycleEvent": event,
    })
}

/// Flips one bit of the base64 `data`, keeping it valid base64: the HMAC must catch it.
pub fn tamper(encrypted: &mut Value) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let data = encrypted["data"].as_str().expect("data");
    let mut bytes = b64.decode(data).expect("base64");
    bytes[0] ^= 1;
    encrypted["data"] = json!(b64.encode(bytes));
}
