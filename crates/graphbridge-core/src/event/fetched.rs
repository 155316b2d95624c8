//! A chatMessage fetched from Graph's message APIs (backfill) becomes the event its change
//! notification would have produced: the resource string Graph puts in notifications, the
//! change type the message's state implies and the same version, hence the same event id, so
//! consumers dedupe a backfilled copy of a message they already have. The event is marked with
//! the `graphbridgeorigin = backfill` extension attribute, which is not part of the id.

use super::normalize::{message_resource, normalize, NormalizeError};
use super::v1::{MessageEvent, ORIGIN_BACKFILL};
use crate::graph::envelope::{ChangeNotification, ChangeType};
use crate::graph::message::ChatMessage;

/// Why a fetched message cannot become an event.
#[derive(Debug, thiserror::Error)]
pub enum FetchedError {
    #[error("not a chatMessage: {0}")]
    NotChatMessage(String),
    #[error("chatMessage {0} names neither a channel (channelIdentity) nor a chat (chatId)")]
    NoConversation(String),
    #[error(transparent)]
    Normalize(#[from] NormalizeError),
}

/// The resource string of `m` as in a change notification:
/// `teams('…')/channels('…')/messages('…')`, `…/messages('…')/replies('…')` for a reply,
/// `chats('…')/messages('…')`.
pub fn notification_resource(m: &ChatMessage) -> Result<String, FetchedError> {
    let channel = m
        .channel_identity
        .as_ref()
        .and_then(|c| Some((c.team_id.as_deref()?, c.channel_id.as_deref()?)));
    match (channel, m.chat_id.as_deref()) {
        (Some((team, channel)), _) => Ok(match m.reply_to_id.as_deref() {
            Some(parent) if parent != m.id => format!(
                "teams('{team}')/channels('{channel}')/messages('{parent}')/replies('{}')",
                m.id
            ),
            _ => format!("teams('{team}')/channels('{channel}')/messages('{}')", m.id),
        }),
        (None, Some(chat)) => Ok(format!("chats('{chat}')/messages('{}')", m.id)),
        (None, None) => Err(FetchedError::NoConversation(m.id.clone())),
    }
}

/// The change a notification would report for `m` now: `deleted` once it is deleted,
/// `updated` once it was edited or otherwise modified after its creation, `created` before.
pub fn change_type(m: &ChatMessage) -> ChangeType {
    if m.deleted_date_time.is_some() {
        ChangeType::Deleted
    } else if m.last_edited_date_time.is_some()
        || m.last_modified_date_time.is_some() && m.last_modified_date_time != m.created_date_time
    {
        ChangeType::Updated
    } else {
        ChangeType::Created
    }
}

/// The event for chatMessage JSON `message` of `tenant`, fetched at `received_at` to fill a gap
/// of subscription `subscription_id`.
pub fn message_event(
    tenant: &str,
    subscription_id: &str,
    message: &[u8],
    received_at: &str,
    include_resource: bool,
) -> Result<MessageEvent, FetchedError> {
    let m = ChatMessage::parse(message)
        .map_err(|e| FetchedError::NotChatMessage(crate::graph::json_error(&e)))?;
    let resource = notification_resource(&m)?;
    let n = ChangeNotification {
        subscription_id: subscription_id.into(),
        subscription_expiration_date_time: None,
        change_type: Some(change_type(&m)),
        client_state: None,
        tenant_id: tenant.into(),
        resource: Some(resource.into()),
        resource_data: None,
        encrypted_content: None,
        lifecycle_event: None,
    };
    let (raw, r) = message_resource(&n)?;
    let mut event = normalize(&n, raw, r, Some(message), received_at, include_resource)?;
    event.graphbridgeorigin = Some(ORIGIN_BACKFILL.into());
    Ok(event)
}
