//! The stand-in's side of the DLP loop: `PATCH` of a channel message, a reply or a chat message
//! with only `policyViolation` (Graph refuses any other property: 400), 404 for a message it
//! does not hold or that was deleted. The stored message gets the policyViolation and a new etag and
//! `lastModifiedDateTime`, and then, as Graph does, an `updated` change notification goes to
//! every subscription covering the message: resource data encrypted with the subscription's
//! certificate, its clientState, and validation tokens when the stand-in has an issuer.
//!
//! Graph also requires the application permission `ChannelMessage.UpdatePolicyViolation.All`
//! (channels) or `Chat.UpdatePolicyViolation.All` (chats); the stand-in's tokens carry no
//! roles, so that check is not made here.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use super::graph_api::GraphStandIn;
use graphbridge_core::crypto::encrypt::Recipient;
use graphbridge_event::verdict::PolicyViolation;
use graphbridge_graph_api::subscriptions::Subscription;

/// Which stored message a PATCH names.
enum Target {
    Channel {
        team: String,
        channel: String,
        parent: Option<String>,
        id: String,
    },
    Chat {
        chat: String,
        id: String,
    },
}

impl Target {
    fn matches(&self, m: &Value) -> bool {
        match self {
            Target::Channel {
                team,
                channel,
                parent,
                id,
            } => {
                m["id"] == id.as_str()
                    && m["channelIdentity"]["teamId"] == team.as_str()
                    && m["channelIdentity"]["channelId"] == channel.as_str()
                    && m["replyToId"].as_str() == parent.as_deref()
            }
            Target::Chat { chat, id } => m["id"] == id.as_str() && m["chatId"] == chat.as_str(),
        }
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// Graph's checks of the PATCH body; the policyViolation on success.
fn check_body(body: &[u8]) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("Invalid JSON: {e}"))?;
    let o = v
        .as_object()
        .ok_or("The request body must be a JSON object")?;
    if let Some(other) = o.keys().find(|k| *k != "policyViolation") {
        return Err(format!(
            "Only policyViolation can be updated on a chatMessage by this app; found {other}"
        ));
    }
    let pv = o
        .get("policyViolation")
        .filter(|p| p.is_object())
        .ok_or("policyViolation is required and must be an object")?;
    let parsed = PolicyViolation::from_graph(pv).ok_or("policyViolation must be an object")?;
    let problems = parsed.problems();
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(pv.clone())
}

/// Whether subscription resource `resource` covers message `m`.
fn covers(resource: &str, m: &Value) -> bool {
    let path = resource
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_ascii_lowercase();
    let parts: Vec<&str> = path.split('/').collect();
    let team = m["channelIdentity"]["teamId"]
        .as_str()
        .map(str::to_ascii_lowercase);
    let channel = m["channelIdentity"]["channelId"]
        .as_str()
        .map(str::to_ascii_lowercase);
    let chat = m["chatId"].as_str().map(str::to_ascii_lowercase);
    match parts[..] {
        ["teams", "getallmessages"] => team.is_some(),
        ["chats", "getallmessages"] => chat.is_some(),
        ["teams", t, "channels", "getallmessages"] => team.as_deref() == Some(t),
        ["teams", t, "channels", c, "messages"] => {
            team.as_deref() == Some(t) && channel.as_deref() == Some(c)
        }
        ["chats", c, "messages"] => chat.as_deref() == Some(c),
        _ => false,
    }
}

/// Graph's resource string of a stored message, as notifications carry it.
fn resource_of(m: &Value) -> String {
    let id = m["id"].as_str().unwrap_or_default();
    if let Some(chat) = m["chatId"].as_str() {
        return format!("chats('{chat}')/messages('{id}')");
    }
    let ci = &m["channelIdentity"];
    let (team, channel) = (
        ci["teamId"].as_str().unwrap_or_default(),
        ci["channelId"].as_str().unwrap_or_default(),
    );
    match m["replyToId"].as_str() {
        Some(parent) => {
            format!("teams('{team}')/channels('{channel}')/messages('{parent}')/replies('{id}')")
        }
        None => format!("teams('{team}')/channels('{channel}')/messages('{id}')"),
    }
}

impl GraphStandIn {
    fn patch_message(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        target: Target,
        body: &[u8],
    ) -> Response {
        let r = match self.admit(method, headers) {
            Err(r) => *r,
            Ok(tenant) => match check_body(body) {
                Err(e) => error(StatusCode::BAD_REQUEST, "BadRequest", e),
                Ok(pv) => match self.set_policy_violation(&tenant, &target, pv) {
                    None => error(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        "The requested message was not found.",
                    ),
                    Some(updated) => {
                        let g = self.clone();
                        tokio::spawn(async move { g.notify_updated(&tenant, &updated).await });
                        StatusCode::NO_CONTENT.into_response()
                    }
                },
            },
        };
        self.record(method, uri.path(), r.status());
        r
    }

    /// Sets the message's policyViolation with a new version; the message as stored now.
    fn set_policy_violation(&self, tenant: &str, target: &Target, pv: Value) -> Option<Value> {
        let mut store = self.messages().lock().unwrap();
        let current = store
            .messages
            .iter()
            // A deleted message is gone for Graph's message APIs too: 404.
            .find(|m| {
                m.tenant == tenant && target.matches(&m.json) && m.json["deletedDateTime"].is_null()
            })?
            .json
            .clone();
        let mut updated = current;
        let old: i64 = updated["etag"]
            .as_str()
            .and_then(|e| e.parse().ok())
            .unwrap_or(0);
        let now = Utc::now().timestamp_millis().max(old + 1);
        updated["policyViolation"] = pv;
        updated["etag"] = now.to_string().into();
        updated["lastModifiedDateTime"] = chrono::DateTime::from_timestamp_millis(now)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
            .into();
        store.put(tenant, updated.clone());
        Some(updated)
    }

    /// The `updated` notification for `message`, to each live subscription of `tenant` that
    /// covers it (retried a few times on a non-2xx answer, as Graph retries).
    async fn notify_updated(&self, tenant: &str, message: &Value) {
        let subs: Vec<Subscription> = self
            .subscriptions_of(tenant)
            .into_iter()
            .filter(|s| s.change_type.split(',').any(|c| c.trim() == "updated"))
            .filter(|s| covers(&s.resource, message))
            .collect();
        for sub in subs {
            let Some(item) = updated_item(&sub, tenant, message) else {
                tracing::warn!(subscription = %sub.id, "stand-in: no usable encryption certificate; no notification");
                continue;
            };
            let mut body = json!({ "value": [item] });
            if let Some(issuer) = self.issuer() {
                body["validationTokens"] =
                    json!([issuer.token(tenant, true, Utc::now().timestamp())]);
            }
            let mut backoff = Duration::from_millis(200);
            for _ in 0..6 {
                let sent = self
                    .http()
                    .post(&sub.notification_url)
                    .json(&body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        self.count_updated_notification();
                        break;
                    }
                    _ => {
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
            }
        }
    }
}

/// The change notification item: resource data encrypted for the subscription's certificate.
fn updated_item(sub: &Subscription, tenant: &str, message: &Value) -> Option<Value> {
    let cert = base64::engine::general_purpose::STANDARD
        .decode(sub.encryption_certificate.as_deref()?)
        .ok()?;
    let recipient =
        Recipient::from_certificate(sub.encryption_certificate_id.as_deref()?, &cert).ok()?;
    let plaintext = serde_json::to_vec(message).expect("json");
    let resource = resource_of(message);
    Some(json!({
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": sub.expiration_date_time.to_rfc3339_opts(SecondsFormat::Secs, true),
        "changeType": "updated",
        "clientState": sub.client_state,
        "tenantId": tenant,
        "resource": resource,
        "resourceData": {"id": message["id"], "@odata.type": "#Microsoft.Graph.chatMessage", "@odata.id": resource},
        "encryptedContent": serde_json::to_value(recipient.encrypt(&plaintext)).expect("json"),
    }))
}

pub(crate) async fn patch_channel_message(
    State(g): State<GraphStandIn>,
    Path((team, channel, id)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = Target::Channel {
        team,
        channel,
        parent: None,
        id,
    };
    g.patch_message(&method, &uri, &headers, target, &body)
}

pub(crate) async fn patch_channel_reply(
    State(g): State<GraphStandIn>,
    Path((team, channel, parent, id)): Path<(String, String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = Target::Channel {
        team,
        channel,
        parent: Some(parent),
        id,
    };
    g.patch_message(&method, &uri, &headers, target, &body)
}

pub(crate) async fn patch_chat_message(
    State(g): State<GraphStandIn>,
    Path((chat, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    g.patch_message(&method, &uri, &headers, Target::Chat { chat, id }, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_policy_violation_with_graphs_values_is_accepted() {
        assert!(check_body(br#"{"policyViolation": {"dlpAction": "BlockAccess"}}"#).is_ok());
        let e = check_body(br#"{"policyViolation": {"dlpAction": "BlockAccess"}, "body": {}}"#)
            .unwrap_err();
        assert!(e.contains("Only policyViolation"), "{e}");
        assert!(check_body(br#"{"policyViolation": {"dlpAction": "Nope"}}"#).is_err());
        assert!(check_body(br#"{"policyViolation": null}"#).is_err());
        assert!(check_body(b"[1]").is_err());
    }

    #[test]
    fn subscriptions_cover_their_messages() {
        let ch = json!({"id": "1", "channelIdentity": {"teamId": "T", "channelId": "C"}, "chatId": null});
        let chat = json!({"id": "2", "chatId": "19:x", "channelIdentity": null});
        assert!(covers("/teams/getAllMessages?model=B", &ch));
        assert!(!covers("/teams/getAllMessages", &chat));
        assert!(covers("/chats/getAllMessages", &chat));
        assert!(covers("/teams/T/channels/getAllMessages", &ch));
        assert!(covers("/teams/t/channels/c/messages", &ch));
        assert!(!covers("/teams/T/channels/D/messages", &ch));
        assert!(covers("/chats/19:x/messages", &chat));
        assert_eq!(resource_of(&ch), "teams('T')/channels('C')/messages('1')");
    }
}
