//! Parsing Graph `resource` strings for Teams messages (graph-protocol.md §7):
//! `teams('{team}')/channels('{channel}')/messages('{msg}')[/replies('{reply}')]` and
//! `chats('{chat}')/messages('{msg}')`. Segment names are matched case-insensitively, an optional
//! leading `/` is allowed, keys may use OData quoting (`''` for `'`) or the `/seg/{id}` form, and
//! percent-encoded keys are decoded.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

pub use graphbridge_event::v1::Conversation;

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

/// Splits `a('x')/b('y')` or `a/x/b/y` into `[(a, x), (b, y)]`, names as written.
fn segments(resource: &str) -> Result<Vec<(&str, String)>, &'static str> {
    let mut out = Vec::with_capacity(4);
    let mut rest = resource.trim().trim_start_matches('/');
    while !rest.is_empty() {
        let name_end = rest.find(['(', '/']).unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty() {
            return Err("empty path segment");
        }
        rest = &rest[name_end..];
        let key: Cow<str> = if let Some(after) = rest.strip_prefix("('") {
            // OData string literal: ends at a quote not followed by another quote ('' is one).
            let mut end = 0;
            loop {
                let quote = after[end..].find('\'').ok_or("unterminated quoted key")? + end;
                if after[quote + 1..].starts_with('\'') {
                    end = quote + 2;
                    continue;
                }
                end = quote;
                break;
            }
            rest = after[end + 1..]
                .strip_prefix(')')
                .ok_or("quoted key not followed by ')'")?;
            let literal = &after[..end];
            if literal.contains("''") {
                Cow::Owned(literal.replace("''", "'"))
            } else {
                Cow::Borrowed(literal)
            }
        } else if let Some(after) = rest.strip_prefix('/') {
            let end = after.find('/').unwrap_or(after.len());
            rest = &after[end..];
            Cow::Borrowed(&after[..end])
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

/// Whether the segment names are `expected`, ignoring ASCII case.
fn names_are(segs: &[(&str, String)], expected: &[&str]) -> bool {
    segs.len() == expected.len()
        && segs
            .iter()
            .zip(expected)
            .all(|((name, _), e)| name.eq_ignore_ascii_case(e))
}

pub fn parse(resource: &str) -> Result<MessageResource, ResourceError> {
    let err = |why| ResourceError {
        resource: resource.to_string(),
        why,
    };
    let segs = segments(resource).map_err(err)?;
    let channel = names_are(&segs, &["teams", "channels", "messages"]);
    let reply = names_are(&segs, &["teams", "channels", "messages", "replies"]);
    let chat = names_are(&segs, &["chats", "messages"]);
    let mut keys = segs.into_iter().map(|(_, key)| key);
    let mut key = || keys.next().expect("length checked by names_are");
    if channel || reply {
        let (team_id, channel_id, first) = (key(), key(), key());
        let (message_id, reply_to_id) = if reply {
            (key(), Some(first))
        } else {
            (first, None)
        };
        Ok(MessageResource {
            conversation: Conversation::Channel {
                team_id,
                channel_id,
            },
            message_id,
            reply_to_id,
        })
    } else if chat {
        let chat_id = key();
        Ok(MessageResource {
            conversation: Conversation::Chat { chat_id },
            message_id: key(),
            reply_to_id: None,
        })
    } else {
        Err(err("unsupported resource path"))
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
