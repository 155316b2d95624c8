//! Event schema v1: CloudEvents 1.0 structured JSON (design.md §3), JSON Schema in
//! `schema/teams-message.v1.json` and `schema/lifecycle.v1.json`. Within v1 changes are
//! additive only. Consumers deserialize with these same types.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

pub const SPEC_VERSION: &str = "1.0";
pub const MESSAGE_SCHEMA: &str = "https://graphbridge.dev/schema/teams-message.v1.json";
pub const LIFECYCLE_SCHEMA: &str = "https://graphbridge.dev/schema/lifecycle.v1.json";

/// A CloudEvent envelope around `data`. The attributes that are constants (or one of a few)
/// are `Cow`, so building an event does not allocate a copy of each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent<T> {
    pub specversion: Cow<'static, str>,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: Cow<'static, str>,
    pub subject: String,
    pub time: String,
    pub datacontenttype: Cow<'static, str>,
    pub dataschema: Cow<'static, str>,
    /// Extension attribute: `backfill` for a message fetched from Graph to fill a gap in
    /// notifications ([`ORIGIN_BACKFILL`]); absent for one that arrived as a notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphbridgeorigin: Option<Cow<'static, str>>,
    pub data: T,
}

/// `graphbridgeorigin` of backfilled events.
pub const ORIGIN_BACKFILL: &str = "backfill";

pub type MessageEvent = CloudEvent<MessageData>;
pub type LifecycleEvent = CloudEvent<LifecycleData>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageData {
    pub schema_version: u32,
    pub tenant_id: String,
    pub change_type: String,
    pub conversation: Conversation,
    pub message_id: String,
    pub reply_to_id: Option<String>,
    pub etag: Option<String>,
    pub created_at: Option<String>,
    pub last_modified_at: Option<String>,
    pub deleted_at: Option<String>,
    pub from: Option<Sender>,
    pub body: Option<Body>,
    pub subject: Option<String>,
    pub importance: Option<String>,
    pub locale: Option<String>,
    pub web_url: Option<String>,
    pub message_type: Option<String>,
    pub mentions: Vec<Mention>,
    pub attachments: Vec<Attachment>,
    pub reactions: Vec<Reaction>,
    /// The message's `policyViolation` as Graph reports it: set once a DLP app (for example
    /// `graphbridge verdicts`) flagged it. Absent when Graph reported none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_violation: Option<PolicyViolation>,
    pub subscription_id: String,
    pub received_at: String,
    /// The decrypted chatMessage as Graph sent it, when `graph.include_resource` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SenderKind {
    User,
    Application,
    Device,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sender {
    pub kind: SenderKind,
    pub id: Option<String>,
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Body {
    pub content_type: String,
    pub content: String,
    /// `content` with HTML tags removed and entities decoded, for search and previews.
    pub plain_text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mention {
    pub id: Option<i64>,
    pub text: Option<String>,
    /// `user`, `application`, `conversation` or `tag`.
    pub kind: Option<String>,
    pub mentioned_id: Option<String>,
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub id: Option<String>,
    pub content_type: Option<String>,
    pub name: Option<String>,
    pub content_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reaction {
    pub reaction_type: Option<String>,
    pub created_at: Option<String>,
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleData {
    pub schema_version: u32,
    pub tenant_id: String,
    pub subscription_id: String,
    /// Graph's name: `reauthorizationRequired`, `subscriptionRemoved`, `missed`, or another
    /// Graph adds later (kept verbatim).
    pub lifecycle_event: String,
    pub subscription_expires_at: Option<String>,
    pub received_at: String,
    /// On `resync_required` events only (published by the subscription controller, not Graph):
    /// the window in which notifications may have been lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync: Option<ResyncGap>,
}

/// `lifecycle_event` of the controller's own event: notifications between `from` and `to` may
/// be missing; consumers re-read that window from Graph (e.g. the messages' delta queries).
pub const RESYNC_REQUIRED: &str = "resync_required";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResyncGap {
    /// Earliest time of the possible gap: when the subscription was last confirmed alive.
    pub from: String,
    /// End of the gap: when a new subscription was in place (or the event was received).
    pub to: String,
    /// The Graph lifecycle event that revealed the gap (`subscriptionRemoved`, `missed`).
    pub cause: String,
    /// The configured subscription's name and resource.
    pub subscription_name: String,
    pub resource: String,
    /// The replacement subscription, when one was created.
    pub new_subscription_id: Option<String>,
}

/// Graph's `chatMessagePolicyViolationDlpActionType` values.
pub const DLP_ACTIONS: [&str; 4] = ["None", "NotifySender", "BlockAccess", "BlockAccessExternal"];
/// Graph's `chatMessagePolicyViolationVerdictDetailsType` values (a flags enum: Graph takes
/// several joined by commas).
pub const VERDICT_DETAILS: [&str; 4] = [
    "None",
    "AllowFalsePositiveOverride",
    "AllowOverrideWithoutJustification",
    "AllowOverrideWithJustification",
];
/// Graph's `chatMessagePolicyViolationUserActionType` values.
pub const USER_ACTIONS: [&str; 3] = ["None", "Override", "ReportFalsePositive"];

/// A chatMessage's `policyViolation`, field for field (snake_case here, Graph's camelCase on
/// the wire to Graph). Values are kept as Graph spells them; [`PolicyViolation::problems`]
/// checks them against Graph's enums.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyViolation {
    /// [`DLP_ACTIONS`]: `BlockAccess` hides the message from its readers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlp_action: Option<String>,
    /// [`VERDICT_DETAILS`], several joined by commas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict_details: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_tip: Option<PolicyTip>,
    /// Set by Teams when the sender overrides; a verdict does not send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification_text: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyTip {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub general_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matched_condition_descriptions: Vec<String>,
}

impl PolicyViolation {
    /// Why Graph would refuse these values (empty: none): unknown enum values.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.dlp_action.as_deref() {
            None => out.push("policy_violation.dlp_action is required".to_string()),
            Some(a) if !DLP_ACTIONS.contains(&a) => out.push(format!(
                "unknown dlp_action {a:?} (Graph's values: {})",
                DLP_ACTIONS.join(", ")
            )),
            Some(_) => {}
        }
        if let Some(d) = &self.verdict_details {
            for flag in d.split(',').map(str::trim) {
                if !VERDICT_DETAILS.contains(&flag) {
                    out.push(format!(
                        "unknown verdict_details value {flag:?} (Graph's values: {})",
                        VERDICT_DETAILS.join(", ")
                    ));
                }
            }
        }
        if let Some(u) = &self.user_action {
            if !USER_ACTIONS.contains(&u.as_str()) {
                out.push(format!("unknown user_action {u:?}"));
            }
        }
        out
    }

    /// The `policyViolation` object as Graph takes it in a PATCH and returns it.
    pub fn to_graph(&self) -> serde_json::Value {
        let mut v = serde_json::Map::new();
        let mut put = |k: &str, val: Option<&String>| {
            if let Some(val) = val {
                v.insert(k.into(), val.clone().into());
            }
        };
        put("dlpAction", self.dlp_action.as_ref());
        put("verdictDetails", self.verdict_details.as_ref());
        put("userAction", self.user_action.as_ref());
        put("justificationText", self.justification_text.as_ref());
        if let Some(t) = &self.policy_tip {
            let mut tip = serde_json::Map::new();
            if let Some(g) = &t.general_text {
                tip.insert("generalText".into(), g.clone().into());
            }
            if let Some(c) = &t.compliance_url {
                tip.insert("complianceUrl".into(), c.clone().into());
            }
            tip.insert(
                "matchedConditionDescriptions".into(),
                t.matched_condition_descriptions.clone().into(),
            );
            v.insert("policyTip".into(), tip.into());
        }
        v.into()
    }

    /// Reads Graph's `policyViolation` object (camelCase); `None` for null or not an object.
    pub fn from_graph(v: &serde_json::Value) -> Option<Self> {
        let o = v.as_object()?;
        let s = |k: &str| o.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let policy_tip = o.get("policyTip").and_then(|t| t.as_object()).map(|t| {
            let s = |k: &str| t.get(k).and_then(|x| x.as_str()).map(str::to_string);
            PolicyTip {
                general_text: s("generalText"),
                compliance_url: s("complianceUrl"),
                matched_condition_descriptions: t
                    .get("matchedConditionDescriptions")
                    .and_then(|m| m.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        });
        Some(PolicyViolation {
            dlp_action: s("dlpAction"),
            verdict_details: s("verdictDetails"),
            policy_tip,
            user_action: s("userAction"),
            justification_text: s("justificationText"),
        })
    }
}

/// Where a message lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Conversation {
    Channel { team_id: String, channel_id: String },
    Chat { chat_id: String },
}

impl Conversation {
    /// The partition key: team id for channel messages, chat id for chats.
    pub fn key(&self) -> &str {
        match self {
            Conversation::Channel { team_id, .. } => team_id,
            Conversation::Chat { chat_id } => chat_id,
        }
    }
}
