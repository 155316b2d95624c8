//! Verdict events v1: what a DLP service decided about a message, for `graphbridge verdicts
//! run` to apply to Graph (`PATCH …/messages/{id}` with `policyViolation`), and the audit event
//! of each outcome. CloudEvents 1.0 structured JSON; JSON Schema in
//! `schema/message-verdict.v1.json` and `schema/message-verdict-audit.v1.json`. Additive only
//! within v1.
//!
//! Producers key verdicts by [`MessageRef::key`] (team or chat id), so verdicts on one message
//! stay in order.

use serde::{Deserialize, Serialize};

use crate::v1::{CloudEvent, Conversation};
// The policyViolation is part of the message event too; it lives with it.
pub use crate::v1::{PolicyTip, PolicyViolation, DLP_ACTIONS, USER_ACTIONS, VERDICT_DETAILS};

pub const VERDICT_TYPE: &str = "dev.graphbridge.teams.message.verdict.v1";
pub const VERDICT_SCHEMA: &str = "https://graphbridge.dev/schema/message-verdict.v1.json";
pub const AUDIT_TYPE: &str = "dev.graphbridge.teams.message.verdict.audit.v1";
pub const AUDIT_SCHEMA: &str = "https://graphbridge.dev/schema/message-verdict-audit.v1.json";

pub type VerdictEvent = CloudEvent<VerdictData>;
pub type AuditEvent = CloudEvent<AuditData>;

/// The message a verdict is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    pub tenant_id: String,
    pub conversation: Conversation,
    pub message_id: String,
    /// The parent message of a channel reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_id: Option<String>,
}

impl MessageRef {
    /// The partition key: team id or chat id.
    pub fn key(&self) -> &str {
        self.conversation.key()
    }

    /// Graph's path of the message, under the API base.
    pub fn graph_path(&self) -> String {
        match (&self.conversation, &self.reply_to_id) {
            (
                Conversation::Channel {
                    team_id,
                    channel_id,
                },
                Some(parent),
            ) => format!(
                "/teams/{team_id}/channels/{channel_id}/messages/{parent}/replies/{}",
                self.message_id
            ),
            (
                Conversation::Channel {
                    team_id,
                    channel_id,
                },
                None,
            ) => format!(
                "/teams/{team_id}/channels/{channel_id}/messages/{}",
                self.message_id
            ),
            (Conversation::Chat { chat_id }, _) => {
                format!("/chats/{chat_id}/messages/{}", self.message_id)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictData {
    pub schema_version: u32,
    /// The message event this verdict answers (its CloudEvents `id`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub message: MessageRef,
    pub policy_violation: PolicyViolation,
    /// Why, in the DLP service's words (audit only; not sent to Graph).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
}

impl VerdictEvent {
    /// A verdict with a fresh CloudEvents envelope; `id` should be unique per decision (e.g. a
    /// hash of the event id and rule), so a republished verdict dedupes.
    pub fn verdict(id: String, source: &str, time: String, data: VerdictData) -> Self {
        CloudEvent {
            specversion: crate::v1::SPEC_VERSION.into(),
            id,
            source: source.to_string(),
            ty: VERDICT_TYPE.into(),
            subject: format!("messages/{}", data.message.message_id),
            time,
            datacontenttype: "application/json".into(),
            dataschema: VERDICT_SCHEMA.into(),
            graphbridgeorigin: None,
            data,
        }
    }
}

/// What became of one verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditData {
    pub schema_version: u32,
    /// The verdict's CloudEvents id (absent when the record was not a readable verdict).
    pub verdict_id: Option<String>,
    /// `applied` (Graph answered 2xx) or `failed` (dead-lettered).
    pub outcome: String,
    /// Why it failed: `bad_json`, `invalid_verdict`, `not_found`, `forbidden`, `bad_request`,
    /// `graph_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageRef>,
    /// Graph's HTTP status of the last attempt (absent when Graph was not called).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_status: Option<u16>,
    /// Graph's error code and message, or why the record was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// PATCH attempts made (throttled and failed ones included).
    pub attempts: u32,
    /// Milliseconds from reading the verdict to Graph's final answer.
    pub latency_ms: u64,
    /// When Graph gave its final answer (or the record was refused).
    pub decided_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_paths_for_channel_reply_and_chat() {
        let mut m = MessageRef {
            tenant_id: "t".into(),
            conversation: Conversation::Channel {
                team_id: "T".into(),
                channel_id: "19:c@thread.tacv2".into(),
            },
            message_id: "2".into(),
            reply_to_id: None,
        };
        assert_eq!(
            m.graph_path(),
            "/teams/T/channels/19:c@thread.tacv2/messages/2"
        );
        m.reply_to_id = Some("1".into());
        assert_eq!(
            m.graph_path(),
            "/teams/T/channels/19:c@thread.tacv2/messages/1/replies/2"
        );
        m.conversation = Conversation::Chat {
            chat_id: "19:x@unq".into(),
        };
        assert_eq!(m.graph_path(), "/chats/19:x@unq/messages/2");
        assert_eq!(m.key(), "19:x@unq");
    }

    #[test]
    fn enum_values_are_checked_against_graphs() {
        let mut p = PolicyViolation {
            dlp_action: Some("BlockAccess".into()),
            verdict_details: Some(
                "AllowOverrideWithoutJustification, AllowFalsePositiveOverride".into(),
            ),
            ..Default::default()
        };
        assert!(p.problems().is_empty(), "{:?}", p.problems());
        p.dlp_action = Some("Shred".into());
        p.verdict_details = Some("AllowEverything".into());
        let problems = p.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("\"Shred\""));
        p.dlp_action = None;
        assert!(p.problems()[0].contains("required"));
    }

    #[test]
    fn graph_form_round_trips() {
        let p = PolicyViolation {
            dlp_action: Some("BlockAccess".into()),
            verdict_details: Some("AllowFalsePositiveOverride".into()),
            policy_tip: Some(PolicyTip {
                general_text: Some("Blocked".into()),
                compliance_url: Some("https://contoso.com/dlp".into()),
                matched_condition_descriptions: vec!["Credit Card Number".into()],
            }),
            user_action: None,
            justification_text: None,
        };
        let g = p.to_graph();
        assert_eq!(g["dlpAction"], "BlockAccess");
        assert_eq!(
            g["policyTip"]["matchedConditionDescriptions"][0],
            "Credit Card Number"
        );
        assert_eq!(PolicyViolation::from_graph(&g), Some(p));
        assert_eq!(PolicyViolation::from_graph(&serde_json::Value::Null), None);
    }
}
