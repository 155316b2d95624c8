//! Turning an authenticated notification and its decrypted chatMessage into a v1 event.
//! Pure: no I/O, no clocks (the receive time is passed in).

use html5gum::emitters::callback::CallbackEvent;

use super::v1::*;
use crate::graph::envelope::ChangeNotification;
use crate::graph::message::{self, ChatMessage};
use crate::graph::resource::{self, Conversation, MessageResource, ResourceError};
use graphbridge_event::event_id;

#[derive(Debug, thiserror::Error)]
pub enum NormalizeError {
    #[error("notification has no resource")]
    MissingResource,
    #[error("notification has no changeType")]
    MissingChangeType,
    #[error(transparent)]
    Resource(#[from] ResourceError),
    #[error("decrypted content is not a chatMessage: {0}")]
    NotChatMessage(String),
    #[error("decrypted message does not match the notification's resource: {0}")]
    ResourceMismatch(&'static str),
}

impl NormalizeError {
    pub fn reason(&self) -> &'static str {
        match self {
            NormalizeError::MissingResource | NormalizeError::MissingChangeType => "malformed_item",
            NormalizeError::Resource(_) => "unsupported_resource",
            NormalizeError::NotChatMessage(_) => "not_chat_message",
            NormalizeError::ResourceMismatch(_) => "resource_mismatch",
        }
    }
}

/// The resource string and the parsed resource of a message notification.
pub fn message_resource<'n>(
    n: &'n ChangeNotification<'_>,
) -> Result<(&'n str, MessageResource), NormalizeError> {
    let raw = n
        .resource
        .as_deref()
        .ok_or(NormalizeError::MissingResource)?;
    Ok((raw, resource::parse(raw)?))
}

/// Only the body is covered by the HMAC, so the ids Graph put outside it must agree with it.
fn cross_check(r: &MessageResource, m: &ChatMessage) -> Result<(), NormalizeError> {
    if m.id != r.message_id {
        return Err(NormalizeError::ResourceMismatch("message id"));
    }
    if let Some(parent) = m.reply_to_id.as_deref() {
        if r.reply_to_id.as_deref() != Some(parent) {
            return Err(NormalizeError::ResourceMismatch("replyToId"));
        }
    }
    match &r.conversation {
        Conversation::Channel {
            team_id,
            channel_id,
        } => {
            if m.chat_id.is_some() {
                return Err(NormalizeError::ResourceMismatch(
                    "chat message on a channel resource",
                ));
            }
            if let Some(ci) = &m.channel_identity {
                if ci.team_id.as_deref().is_some_and(|t| t != team_id)
                    || ci.channel_id.as_deref().is_some_and(|c| c != channel_id)
                {
                    return Err(NormalizeError::ResourceMismatch("channelIdentity"));
                }
            }
        }
        Conversation::Chat { chat_id } => {
            if m.chat_id.as_deref().is_some_and(|c| c != chat_id) {
                return Err(NormalizeError::ResourceMismatch("chatId"));
            }
            if m.channel_identity
                .as_ref()
                .is_some_and(|ci| ci.team_id.is_some())
            {
                return Err(NormalizeError::ResourceMismatch(
                    "channel message on a chat resource",
                ));
            }
        }
    }
    Ok(())
}

fn sender(from: &message::From) -> Option<Sender> {
    let (kind, who) = if let Some(u) = &from.user {
        (SenderKind::User, u)
    } else if let Some(a) = &from.application {
        (SenderKind::Application, a)
    } else {
        (SenderKind::Device, from.device.as_ref()?)
    };
    Some(Sender {
        kind,
        id: who.id.clone(),
        display_name: who.display_name.clone(),
    })
}

/// Elements whose start or end is a line break in the text.
const BLOCKS: &[&[u8]] = &[
    b"br",
    b"p",
    b"div",
    b"li",
    b"pre",
    b"blockquote",
    b"tr",
    b"hr",
    b"ul",
    b"ol",
    b"h1",
    b"h2",
    b"h3",
    b"h4",
    b"h5",
    b"h6",
];

/// Text of an HTML body: tags dropped (block elements become line breaks), character references
/// decoded, emoji (Teams' `<emoji alt>` and emoji images) kept as their character. A WHATWG
/// tokenizer decides where tags end, so `<pre>` is not `<p>` and a `>` inside a quoted
/// attribute value does not end the tag. Its callback emitter hands over borrowed slices: no
/// token, tag or attribute map is allocated per element (about half the cost of the default
/// emitter's tokens, docs/performance.md).
pub fn plain_text(content_type: &str, content: &str) -> String {
    use html5gum::emitters::callback::CallbackEmitter;
    use html5gum::{Span, Tokenizer};
    if !content_type.eq_ignore_ascii_case("html") {
        return content.to_string();
    }
    let mut text = PlainText {
        out: String::with_capacity(content.len()),
        tag: Tag::default(),
    };
    let emitter = CallbackEmitter::new(|event: CallbackEvent<'_>, _: Span<()>| {
        text.event(event);
        None::<std::convert::Infallible>
    });
    Tokenizer::new_with_emitter(content, emitter).for_each(drop);
    let mut out = text.out;
    out.truncate(out.trim_end().len());
    out.drain(..out.len() - out.trim_start().len());
    out
}

/// What [`plain_text`] keeps of the start tag being read.
#[derive(Default)]
struct Tag {
    block: bool,
    /// `<emoji>`, or `<img>` whose `itemtype` is Skype's emoji schema.
    emoji: bool,
    img: bool,
    /// The attribute whose value comes next, if it is one of ours.
    attribute: Option<Attribute>,
    /// The first `alt` (a repeated attribute is ignored, as HTML does).
    alt: Option<String>,
    itemtype_seen: bool,
}

#[derive(Clone, Copy)]
enum Attribute {
    Alt,
    ItemType,
}

struct PlainText {
    out: String,
    tag: Tag,
}

impl PlainText {
    fn event(&mut self, event: CallbackEvent<'_>) {
        use CallbackEvent as E;
        match event {
            E::String { value } => {
                let text = String::from_utf8_lossy(value);
                let at_line_start = self.out.is_empty() || self.out.ends_with('\n');
                self.out.push_str(if at_line_start {
                    text.trim_start()
                } else {
                    &text
                });
            }
            E::OpenStartTag { name } => {
                self.tag = Tag {
                    block: BLOCKS.contains(&name),
                    emoji: name == b"emoji",
                    img: name == b"img",
                    ..Tag::default()
                };
            }
            E::AttributeName { name } => {
                self.tag.attribute = match name {
                    b"alt" if self.tag.alt.is_none() => Some(Attribute::Alt),
                    b"itemtype" if !self.tag.itemtype_seen => Some(Attribute::ItemType),
                    _ => None,
                };
                // An attribute without a value still counts as its first occurrence.
                match self.tag.attribute {
                    Some(Attribute::Alt) => self.tag.alt = Some(String::new()),
                    Some(Attribute::ItemType) => self.tag.itemtype_seen = true,
                    None => {}
                }
            }
            E::AttributeValue { value } => match self.tag.attribute.take() {
                Some(Attribute::Alt) => self.tag.alt = Some(String::from_utf8_lossy(value).into()),
                Some(Attribute::ItemType) => {
                    self.tag.emoji |= self.tag.img
                        && memchr::memmem::find(value, b"schema.skype.com/Emoji").is_some();
                }
                None => {}
            },
            E::CloseStartTag { .. } => {
                let tag = std::mem::take(&mut self.tag);
                if tag.block {
                    self.line_break();
                }
                if let Some(alt) = tag.alt.filter(|_| tag.emoji) {
                    self.out.push_str(&alt);
                }
            }
            E::EndTag { name } if BLOCKS.contains(&name) => self.line_break(),
            _ => {}
        }
    }

    /// One line break per block boundary, without the source's indentation around it.
    fn line_break(&mut self) {
        self.out.truncate(self.out.trim_end().len());
        if !self.out.is_empty() {
            self.out.push('\n');
        }
    }
}

/// The message's parts of the event, moved out of the parsed message (no copies).
fn message_data(m: ChatMessage) -> (Option<Body>, Vec<Mention>, Vec<Attachment>, Vec<Reaction>) {
    let body = m.body.map(|b| {
        let mut content_type = b.content_type.unwrap_or_else(|| "text".into());
        content_type.make_ascii_lowercase();
        let content = b.content.unwrap_or_default();
        Body {
            plain_text: plain_text(&content_type, &content),
            content_type,
            content,
        }
    });
    let mentions = m
        .mentions
        .into_iter()
        .map(|x| {
            let who = x.mentioned.unwrap_or_default();
            let (kind, ident) = [
                ("user", who.user),
                ("application", who.application),
                ("conversation", who.conversation),
                ("tag", who.tag),
            ]
            .into_iter()
            .find_map(|(k, i)| i.map(|i| (Some(k.to_string()), i)))
            .unwrap_or_default();
            Mention {
                id: x.id,
                text: x.mention_text,
                kind,
                mentioned_id: ident.id,
                display_name: ident.display_name,
            }
        })
        .collect();
    let attachments = m
        .attachments
        .into_iter()
        .map(|a| Attachment {
            id: a.id,
            content_type: a.content_type,
            name: a.name,
            content_url: a.content_url,
        })
        .collect();
    let reactions = m
        .reactions
        .into_iter()
        .map(|r| Reaction {
            reaction_type: r.reaction_type,
            created_at: r.created_date_time,
            user_id: r.user.and_then(|u| u.user).and_then(|u| u.id),
        })
        .collect();
    (body, mentions, attachments, reactions)
}

/// Builds the event. `plaintext` is the decrypted resource, absent when Graph sent none
/// (a deleted message may carry no content: the event then holds what the resource says).
/// `raw_resource` and `r` come from [`message_resource`], checked before any decryption.
pub fn normalize(
    n: &ChangeNotification<'_>,
    raw_resource: &str,
    r: MessageResource,
    plaintext: Option<&[u8]>,
    received_at: &str,
    include_resource: bool,
) -> Result<MessageEvent, NormalizeError> {
    let change_type = n.change_type.ok_or(NormalizeError::MissingChangeType)?;
    let message = plaintext
        .map(|p| {
            ChatMessage::parse(p)
                .map_err(|e| NormalizeError::NotChatMessage(crate::graph::json_error(&e)))
        })
        .transpose()?;
    if let Some(m) = &message {
        cross_check(&r, m)?;
    }
    // Everything below moves fields out of the message instead of copying them; without
    // content (a deletion may carry none) the event holds what the resource says.
    let mut m = message.unwrap_or_default();
    let version = m
        .etag
        .as_deref()
        .or(m.last_modified_date_time.as_deref())
        .or(m.deleted_date_time.as_deref())
        .unwrap_or("");
    let id = event_id(&n.tenant_id, raw_resource, change_type.as_str(), version);
    let source = match &r.conversation {
        Conversation::Channel {
            team_id,
            channel_id,
        } => {
            format!(
                "/tenants/{}/teams/{team_id}/channels/{channel_id}",
                n.tenant_id
            )
        }
        Conversation::Chat { chat_id } => format!("/tenants/{}/chats/{chat_id}", n.tenant_id),
    };
    let time = m
        .last_modified_date_time
        .clone()
        .or_else(|| m.created_date_time.clone())
        .unwrap_or_else(|| received_at.to_string());
    let from = m.from.take().as_ref().and_then(sender);
    let (etag, created_at, last_modified_at, deleted_at) = (
        m.etag.take(),
        m.created_date_time.take(),
        m.last_modified_date_time.take(),
        m.deleted_date_time.take(),
    );
    let (subject, importance, locale, web_url, message_type) = (
        m.subject.take(),
        m.importance.take(),
        m.locale.take(),
        m.web_url.take(),
        m.message_type.take(),
    );
    let policy_violation = m
        .policy_violation
        .take()
        .and_then(|v| graphbridge_event::verdict::PolicyViolation::from_graph(&v));
    let (body, mentions, attachments, reactions) = message_data(m);
    Ok(CloudEvent {
        specversion: SPEC_VERSION.into(),
        id,
        source,
        ty: change_type.event_type().into(),
        subject: format!("messages/{}", r.message_id),
        time,
        datacontenttype: "application/json".into(),
        dataschema: MESSAGE_SCHEMA.into(),
        graphbridgeorigin: None,
        data: MessageData {
            schema_version: 1,
            tenant_id: n.tenant_id.to_string(),
            change_type: change_type.as_str().into(),
            conversation: r.conversation,
            message_id: r.message_id,
            reply_to_id: r.reply_to_id,
            etag,
            created_at,
            last_modified_at,
            deleted_at,
            from,
            body,
            subject,
            importance,
            locale,
            web_url,
            message_type,
            mentions,
            attachments,
            reactions,
            policy_violation,
            subscription_id: n.subscription_id.to_string(),
            received_at: received_at.to_string(),
            resource: if include_resource {
                plaintext.and_then(|p| crate::graph::from_json_bytes(p).ok())
            } else {
                None
            },
        },
    })
}

/// A lifecycle notification as an event. Its id covers the subscription, the event and the
/// expiration Graph reported, so a redelivery dedupes while a later occurrence does not.
/// The event of a lifecycle notification, the `index`th item of a request received at
/// `received_at`. Graph's lifecycle notifications carry no id, and a second `missed` is a new
/// loss, not a retry: the id is the receipt's (time and place in the request), so a spooled
/// batch delivered again keeps its ids while two equal notifications get two.
pub fn lifecycle(n: &ChangeNotification<'_>, received_at: &str, index: usize) -> LifecycleEvent {
    let event = n.lifecycle_event.as_deref().unwrap_or_default().to_string();
    let expires = n
        .subscription_expiration_date_time
        .as_deref()
        .map(str::to_string);
    let id = event_id(
        &n.tenant_id,
        &format!("subscriptions('{}')", n.subscription_id),
        &event,
        &format!("{}|{received_at}|{index}", expires.as_deref().unwrap_or("")),
    );
    CloudEvent {
        specversion: SPEC_VERSION.into(),
        id,
        source: format!(
            "/tenants/{}/subscriptions/{}",
            n.tenant_id, n.subscription_id
        ),
        ty: format!("graph.subscription.{event}").into(),
        subject: format!("subscriptions/{}", n.subscription_id),
        time: received_at.to_string(),
        datacontenttype: "application/json".into(),
        dataschema: LIFECYCLE_SCHEMA.into(),
        graphbridgeorigin: None,
        data: LifecycleData {
            schema_version: 1,
            tenant_id: n.tenant_id.to_string(),
            subscription_id: n.subscription_id.to_string(),
            lifecycle_event: event,
            subscription_expires_at: expires,
            received_at: received_at.to_string(),
            resync: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_strips_tags_and_entities() {
        assert_eq!(
            plain_text(
                "html",
                "<p>Hi <at id=\"0\">Ann</at> &amp; co</p><p>line2</p>"
            ),
            "Hi Ann & co\nline2"
        );
        assert_eq!(plain_text("text", "<b>x</b>"), "<b>x</b>");
        // Without entities the trimmed text is returned as is; tag names in any case.
        assert_eq!(
            plain_text("html", "  <P>one</P><BR/>two <b>x</b>  "),
            "one\ntwo x"
        );
        assert_eq!(plain_text("html", " <p> </p> "), "");
    }

    #[test]
    fn equal_lifecycle_notifications_are_distinct_events_and_a_redelivery_is_not() {
        let raw = crate::pipeline::test_support::lifecycle_item("missed");
        let n = ChangeNotification::parse(&raw).unwrap();
        let at = "2026-12-03T07:50:01.993Z";
        let first = lifecycle(&n, at, 0).id;
        assert_ne!(first, lifecycle(&n, at, 1).id, "two in one request");
        assert_ne!(
            first,
            lifecycle(&n, "2026-12-03T07:50:02.001Z", 0).id,
            "one in a later request"
        );
        assert_eq!(
            first,
            lifecycle(&n, at, 0).id,
            "the same receipt again (spool)"
        );
    }

    #[test]
    fn tag_names_match_whole_and_quoted_attributes_may_hold_angle_brackets() {
        // `<pre>` is not `<p>`, `<link>` is not `<li>`: no line breaks inside the sentence.
        assert_eq!(
            plain_text("html", "run <pre>make</pre> then <link rel=x>done"),
            "run\nmake\nthen done"
        );
        // A `>` inside an attribute value does not end the tag, in either quote style.
        assert_eq!(
            plain_text(
                "html",
                r#"<p>see <a href="https://x.example/?q=a>b" title='1 > 0'>the docs</a>.</p>"#
            ),
            "see the docs."
        );
    }

    /// The token-by-token form `plain_text` had before it used the callback emitter: the
    /// reference its output must keep matching (events carry `plain_text`; replays rebuild them).
    fn reference_plain_text(content: &str) -> String {
        use html5gum::{Token, Tokenizer};
        let mut out = String::with_capacity(content.len());
        let line_break = |out: &mut String| {
            out.truncate(out.trim_end().len());
            if !out.is_empty() {
                out.push('\n');
            }
        };
        for token in Tokenizer::new(content).flatten() {
            match token {
                Token::String(text) => {
                    let text = String::from_utf8_lossy(&text);
                    let at_line_start = out.is_empty() || out.ends_with('\n');
                    out.push_str(if at_line_start {
                        text.trim_start()
                    } else {
                        &text
                    });
                }
                Token::StartTag(tag) => {
                    if BLOCKS.contains(&tag.name.as_slice()) {
                        line_break(&mut out);
                    }
                    let emoji = tag.name.as_slice() == b"emoji"
                        || tag.name.as_slice() == b"img"
                            && tag.attributes.get(b"itemtype".as_slice()).is_some_and(|t| {
                                memchr::memmem::find(&t.value, b"schema.skype.com/Emoji").is_some()
                            });
                    if let Some(alt) = tag.attributes.get(b"alt".as_slice()).filter(|_| emoji) {
                        out.push_str(&String::from_utf8_lossy(&alt.value));
                    }
                }
                Token::EndTag(tag) if BLOCKS.contains(&tag.name.as_slice()) => line_break(&mut out),
                _ => {}
            }
        }
        out.truncate(out.trim_end().len());
        out.drain(..out.len() - out.trim_start().len());
        out
    }

    /// Random bodies stitched from the pieces that matter (block and inline tags, emoji with
    /// repeated or valueless attributes, end tags with attributes, entities, comments, stray
    /// brackets and quotes, whitespace): the text is the reference's, byte for byte.
    #[test]
    fn plain_text_matches_the_token_based_reference() {
        const PIECES: &[&str] = &[
            "<p>",
            "</p>",
            "<P class=x>",
            "<br/>",
            "<div>",
            "</div >",
            "<pre>",
            "</pre>",
            "<li>",
            "</li>",
            "<b>",
            "</b>",
            "<at id=\"0\">",
            "</at>",
            "</p foo=bar>",
            r#"<emoji id="1f389" alt="🎉" title="x"></emoji>"#,
            r#"<emoji alt="a" alt="b">"#,
            "<emoji alt>",
            r#"<img alt="👍" itemtype="http://schema.skype.com/Emoji">"#,
            r#"<img itemtype="http://schema.skype.com/Emoji" alt='😀' itemtype="x">"#,
            r#"<img itemtype="x" itemtype="http://schema.skype.com/Emoji" alt="no">"#,
            r#"<img alt="image" src="a.png">"#,
            r#"<a href="x>y" title='1 > 0'>"#,
            "</a>",
            "&amp;",
            "&lt;",
            "&nbsp;",
            "&#x1F600;",
            "&bogus;",
            "<!-- c -->",
            "<!doctype html>",
            " ",
            "  \n ",
            "\t",
            "text",
            "日本語",
            "Zoë",
            "<",
            ">",
            "\"",
            "'",
            "=",
            "</",
            "<>",
            "<script>x<p>y</script>",
            "<h1>",
            "</h1>",
            "<hr>",
            "<ul>",
            "</ol>",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = next() % 12;
            let html: String = (0..len)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            assert_eq!(
                plain_text("html", &html),
                reference_plain_text(&html),
                "{html:?}"
            );
        }
    }

    /// Bodies in the shapes Teams sends: mentions, code blocks, emoji, links, entities.
    #[test]
    fn teams_message_bodies_become_readable_text() {
        let cases = [
            (
                r#"<div><div><at id="0">Megan Bowen</at>&nbsp;<at id="1">Alex Wilber</at> can you review?</div></div>"#,
                "Megan Bowen\u{a0}Alex Wilber can you review?",
            ),
            (
                r#"<p>Fix:</p><codeblock class="Rust"><code>if a &lt; b &amp;&amp; c &gt; d { go() }</code></codeblock>"#,
                "Fix:\nif a < b && c > d { go() }",
            ),
            (
                r#"<p>Shipped <emoji id="1f389_partypopper" alt="🎉" title="Party popper"></emoji> thanks</p>"#,
                "Shipped 🎉 thanks",
            ),
            (
                r#"<div>ok <img alt="👍" src="https://statics.teams.cdn.office.net/evergreen-assets/skype/v2/yes/20.png" itemtype="http://schema.skype.com/Emoji" style="width:20px;height:20px"></div>"#,
                "ok 👍",
            ),
            (
                r#"<p>Spec: <a href="https://contoso.sharepoint.com/sites/eng/Shared%20Documents/spec.docx?web=1&amp;e=x" rel="noreferrer noopener" target="_blank" title="https://contoso.sharepoint.com/...">spec.docx</a></p><ul><li>one</li><li>two</li></ul>"#,
                "Spec: spec.docx\none\ntwo",
            ),
            (
                r#"<p><img src="https://graph.microsoft.com/v1.0/chats/19:x/messages/1/hostedContents/aWQ9/$value" alt="image" width="250"></p>"#,
                "",
            ),
        ];
        for (html, text) in cases {
            assert_eq!(plain_text("html", html), text, "{html}");
        }
    }
}
