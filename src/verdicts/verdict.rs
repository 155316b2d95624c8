//! One verdict record: read, checked, or refused with a reason for the dead letters. Nothing
//! that fails here reaches Graph.

use graphbridge_core::event::v1::Conversation;
use graphbridge_event::verdict::{VerdictEvent, VERDICT_TYPE};

/// Why a record is refused before any call to Graph (`reason` label and audit reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: &'static str,
    pub error: String,
}

fn refused(reason: &'static str, error: impl Into<String>) -> Refused {
    Refused {
        reason,
        error: error.into(),
    }
}

/// Characters that would change the meaning of Graph's URL if an id carried them.
fn bad_id(what: &str, id: &str) -> Option<String> {
    if id.is_empty() {
        return Some(format!("{what} is empty"));
    }
    if id
        .chars()
        .any(|c| matches!(c, '/' | '?' | '#' | '\\' | '%') || c.is_whitespace() || c.is_control())
    {
        return Some(format!("{what} {id:?} is not a Graph id"));
    }
    None
}

/// Reads and checks a verdict: CloudEvents type, a message reference that makes a Graph path,
/// and Graph's enum values.
pub fn parse(payload: &[u8]) -> Result<VerdictEvent, Refused> {
    let v: VerdictEvent = serde_json::from_slice(payload).map_err(|e| {
        if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_err() {
            refused("bad_json", format!("not JSON: {e}"))
        } else {
            refused("invalid_verdict", format!("not a verdict event: {e}"))
        }
    })?;
    if v.ty != VERDICT_TYPE {
        return Err(refused(
            "invalid_verdict",
            format!("type {:?} is not {VERDICT_TYPE}", v.ty),
        ));
    }
    if v.id.is_empty() {
        return Err(refused("invalid_verdict", "the verdict has no id"));
    }
    let m = &v.data.message;
    let mut problems: Vec<String> = Vec::new();
    problems.extend(bad_id("message.tenant_id", &m.tenant_id));
    problems.extend(bad_id("message.message_id", &m.message_id));
    match &m.conversation {
        Conversation::Channel {
            team_id,
            channel_id,
        } => {
            problems.extend(bad_id("message.conversation.team_id", team_id));
            problems.extend(bad_id("message.conversation.channel_id", channel_id));
        }
        Conversation::Chat { chat_id } => {
            problems.extend(bad_id("message.conversation.chat_id", chat_id));
            if m.reply_to_id.is_some() {
                problems.push("message.reply_to_id: chat messages have no replies".into());
            }
        }
    }
    if let Some(p) = &m.reply_to_id {
        problems.extend(bad_id("message.reply_to_id", p));
    }
    problems.extend(v.data.policy_violation.problems());
    if problems.is_empty() {
        Ok(v)
    } else {
        Err(refused("invalid_verdict", problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn verdict() -> Value {
        json!({
            "specversion": "1.0", "id": "v-1", "source": "/dlp", "type": VERDICT_TYPE,
            "subject": "messages/1", "time": "2026-12-03T10:00:00Z",
            "datacontenttype": "application/json",
            "dataschema": "https://graphbridge.dev/schema/message-verdict.v1.json",
            "data": {"schema_version": 1,
                "message": {"tenant_id": "t", "conversation": {"kind": "chat", "chat_id": "19:a@unq.gbl.spaces"}, "message_id": "1700000000000"},
                "policy_violation": {"dlp_action": "BlockAccess", "verdict_details": "AllowFalsePositiveOverride",
                    "policy_tip": {"general_text": "Blocked", "matched_condition_descriptions": ["Credit Card Number"]}},
                "rule_id": "card"}
        })
    }

    fn reason(v: &Value) -> Refused {
        parse(&serde_json::to_vec(v).unwrap()).unwrap_err()
    }

    #[test]
    fn a_good_verdict_reads() {
        let v = parse(&serde_json::to_vec(&verdict()).unwrap()).unwrap();
        assert_eq!(
            v.data.message.graph_path(),
            "/chats/19:a@unq.gbl.spaces/messages/1700000000000"
        );
    }

    #[test]
    fn bad_json_unknown_enums_and_bad_references_are_refused_with_reasons() {
        assert_eq!(parse(b"{not json").unwrap_err().reason, "bad_json");
        let mut v = verdict();
        v["data"]["policy_violation"]["dlp_action"] = json!("Shred");
        let r = reason(&v);
        assert_eq!(r.reason, "invalid_verdict");
        assert!(
            r.error.contains("unknown dlp_action \"Shred\""),
            "{}",
            r.error
        );

        let mut v = verdict();
        v["data"]["message"]["message_id"] = json!("1/../../users");
        assert!(reason(&v).error.contains("is not a Graph id"));

        let mut v = verdict();
        v["data"]["message"]["conversation"] = json!({"kind": "channel", "team_id": "T"});
        assert!(reason(&v).error.contains("not a verdict event"));

        let mut v = verdict();
        v["type"] = json!("graph.teams.message.created");
        assert!(reason(&v).error.contains("is not dev.graphbridge"));

        let mut v = verdict();
        v["data"]["message"]["reply_to_id"] = json!("1");
        assert!(reason(&v).error.contains("chat messages have no replies"));
    }
}
