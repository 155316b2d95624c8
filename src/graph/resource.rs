//! Parsing Graph `resource` strings for Teams messages (graph-protocol.md §7):
//! `teams('{team}')/channels('{channel}')/messages('{msg}')[/replies('{reply}')]` and
//! `chats('{chat}')/messages('{msg}')`. Segment names are matched case-insensitively, an optional
//! leading `/` is allowed, keys may use OData quoting (`''` for `'`) or the `/seg/{id}` form, and
//! percent-encoded keys are decoded.

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

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

/// A parsed message resource. For a reply, `message_id` is the reply's id and `reply_to_id`
/// the parent's, matching the chatMessage fields `id` and `replyToId`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageResource {
    pub conversation: Conversation,
    pub message_id: String,
    pub reply_to_id: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("resource {resource:?} is not a Teams channel or chat message: {why}")]
pub struct ResourceError {
    pub resource: String,
    pub why: &'static str,
}

/// Splits `a('x')/b('y')` or `a/x/b/y` into `[(a, x), (b, y)]`.
fn segments(resource: &str) -> Result<Vec<(String, String)>, &'static str> {
    let mut out = Vec::new();
    let mut rest = resource.trim().trim_start_matches('/');
    while !rest.is_empty() {
        let name_end = rest.find(['(', '/']).unwrap_or(rest.len());
        let name = rest[..name_end].to_ascii_lowercase();
        if name.is_empty() {
            return Err("empty path segment");
        }
        rest = &rest[name_end..];
        let key = if let Some(after) = rest.strip_prefix("('") {
            // OData string literal: ends at a quote not followed by another quote.
            let mut key = String::new();
            let mut chars = after.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if matches!(chars.peek(), Some((_, '\''))) {
                        chars.next();
                        key.push('\'');
                        continue;
                    }
                    end = Some(i);
                    break;
                }
                key.push(c);
            }
            let end = end.ok_or("unterminated quoted key")?;
            rest = after[end + 1..]
                .strip_prefix(')')
                .ok_or("quoted key not followed by ')'")?;
            key
        } else if let Some(after) = rest.strip_prefix('/') {
            let end = after.find('/').unwrap_or(after.len());
            rest = &after[end..];
            after[..end].to_string()
        } else {
            return Err("segment without a key");
        };
        if key.is_empty() {
            return Err("empty key");
        }
        let key = percent_decode_str(&key)
            .decode_utf8()
            .map_err(|_| "key is not valid percent-encoded UTF-8")?
            .into_owned();
        out.push((name, key));
        rest = rest.strip_prefix('/').unwrap_or(rest);
    }
    Ok(out)
}

pub fn parse(resource: &str) -> Result<MessageResource, ResourceError> {
    let err = |why| ResourceError {
        resource: resource.to_string(),
        why,
    };
    let segs = segments(resource).map_err(err)?;
    let names: Vec<&str> = segs.iter().map(|(n, _)| n.as_str()).collect();
    let key = |i: usize| segs[i].1.clone();
    match names.as_slice() {
        ["teams", "channels", "messages"] => Ok(MessageResource {
            conversation: Conversation::Channel {
                team_id: key(0),
                channel_id: key(1),
            },
            message_id: key(2),
            reply_to_id: None,
        }),
        ["teams", "channels", "messages", "replies"] => Ok(MessageResource {
            conversation: Conversation::Channel {
                team_id: key(0),
                channel_id: key(1),
            },
            message_id: key(3),
            reply_to_id: Some(key(2)),
        }),
        ["chats", "messages"] => Ok(MessageResource {
            conversation: Conversation::Chat { chat_id: key(0) },
            message_id: key(1),
            reply_to_id: None,
        }),
        _ => Err(err("unsupported resource path")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_reply() {
        let r = parse("teams('79852646-8963-4d32-95f1-e0c5237d37fa')/channels('19:etTE40@thread.tacv2')/messages('1625067617497')/replies('1625126194597')").unwrap();
        assert_eq!(
            r.conversation,
            Conversation::Channel {
                team_id: "79852646-8963-4d32-95f1-e0c5237d37fa".into(),
                channel_id: "19:etTE40@thread.tacv2".into()
            }
        );
        assert_eq!(r.message_id, "1625126194597");
        assert_eq!(r.reply_to_id.as_deref(), Some("1625067617497"));
    }

    #[test]
    fn chat_message_with_leading_slash_and_case() {
        let r = parse("/Chats('19:a_b@unq.gbl.spaces')/Messages('1612289992105')").unwrap();
        assert_eq!(
            r.conversation,
            Conversation::Chat {
                chat_id: "19:a_b@unq.gbl.spaces".into()
            }
        );
        assert_eq!(r.message_id, "1612289992105");
        assert_eq!(r.reply_to_id, None);
    }

    #[test]
    fn slash_form_percent_encoded_and_quoted_quote() {
        let r = parse("teams/t1/channels/19%3Aabc%40thread.tacv2/messages/42").unwrap();
        assert_eq!(r.conversation.key(), "t1");
        match r.conversation {
            Conversation::Channel { channel_id, .. } => {
                assert_eq!(channel_id, "19:abc@thread.tacv2")
            }
            _ => panic!("not a channel"),
        }
        let q = parse("chats('it''s')/messages('1')").unwrap();
        assert_eq!(q.conversation.key(), "it's");
    }

    #[test]
    fn rejects_other_resources() {
        for bad in [
            "",
            "users('u')/messages('1')",
            "teams('t')/channels('c')",
            "chats('c')/messages('1",
            "chats('')/messages('1')",
            "chats('c')x/messages('1')",
            "chats(c)/messages('1')",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
