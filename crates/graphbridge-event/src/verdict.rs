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

pub const VERDICT_TYPE: &str = "dev.graphbridge.teams.message.verdict.v1";
pub const VERDICT_SCHEMA: &str = "https://graphbridge.dev/schema/message-verdict.v1.json";
pub const AUDIT_TYPE: &str = "dev.graphbridge.teams.message.verdict.audit.v1";
pub const AUDIT_SCHEMA: &str = "https://graphbridge.dev/schema/message-verdict-audit.v1.json";

pub type VerdictEvent = CloudEvent<VerdictData>;
pub type AuditEvent = CloudEvent<AuditData>;

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
    pub applied_at: String,
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
