//! The stand-in's message APIs, the ones backfill reads: channel and chat `getAllMessages` with
//! a `lastModifiedDateTime` window, one chat's messages (newest first), one channel's delta,
//! and the list of teams. Backed by a store the simulator fills with the very messages it sends
//! notifications for ([`GraphStandIn::put_message`]), so a backfilled event can be checked
//! against the notification's. Pages of `page_size` linked by `@odata.nextLink`; the stand-in's
//! injected faults (429 with `Retry-After`) apply here too.

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::graph_api::GraphStandIn;

/// One stored message and when it last changed in the store (the delta sequence).
pub(crate) struct StoredMessage {
    pub tenant: String,
    pub json: Value,
    pub seq: u64,
}

#[derive(Default)]
pub(crate) struct MessageStore {
    pub messages: Vec<StoredMessage>,
    pub seq: u64,
}

impl MessageStore {
    /// Adds `json`, or replaces the stored message with the same conversation and id.
    pub fn put(&mut self, tenant: &str, json: Value) {
        self.seq += 1;
        let key = |v: &Value| {
            (
                v["id"].clone(),
                v["chatId"].clone(),
                v["channelIdentity"]["channelId"].clone(),
            )
        };
        let k = key(&json);
        match self.messages.iter_mut().find(|m| key(&m.json) == k) {
            Some(m) => {
                m.json = json;
                m.seq = self.seq;
            }
            None => self.messages.push(StoredMessage {
                tenant: tenant.to_string(),
                json,
                seq: self.seq,
            }),
        }
    }
}

/// `lastModifiedDateTime gt X and lastModifiedDateTime lt Y` (either part optional).
#[derive(Default, Debug)]
struct Window {
    gt: Option<DateTime<Utc>>,
    lt: Option<DateTime<Utc>>,
}

fn parse_filter(filter: Option<&str>) -> Result<Window, String> {
    let mut w = Window::default();
    let Some(f) = filter else { return Ok(w) };
    for clause in f.split(" and ") {
        let parts: Vec<&str> = clause.split_whitespace().collect();
        let [field, op, value] = parts[..] else {
            return Err(format!("unsupported $filter clause {clause:?}"));
        };
        if field != "lastModifiedDateTime" {
            return Err(format!("$filter on {field} is not supported"));
        }
        let t = DateTime::parse_from_rfc3339(value)
            .map_err(|e| format!("{value}: {e}"))?
            .with_timezone(&Utc);
        match op {
            "gt" => w.gt = Some(t),
            "lt" => w.lt = Some(t),
            _ => return Err(format!("operator {op} is not supported")),
        }
    }
    Ok(w)
}

impl Window {
    fn contains(&self, m: &Value) -> bool {
        let Some(t) = m["lastModifiedDateTime"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        else {
            return false;
        };
        self.gt.is_none_or(|gt| t > gt) && self.lt.is_none_or(|lt| t < lt)
    }
}

#[derive(serde::Deserialize, Default)]
pub(crate) struct ListQuery {
    #[serde(rename = "$filter")]
    filter: Option<String>,
    #[serde(rename = "$orderby")]
    orderby: Option<String>,
    #[serde(rename = "$skiptoken")]
    skiptoken: Option<usize>,
    #[serde(rename = "$deltatoken")]
    deltatoken: Option<u64>,
    model: Option<String>,
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"code": "BadRequest", "message": message}})),
    )
        .into_response()
}

impl GraphStandIn {
    /// Stores a chatMessage (as [`crate::generate::MessageSpec::chat_message`] makes it) for
    /// `tenant`; a message with the same id in the same conversation is replaced.
    pub fn put_message(&self, tenant: &str, message: Value) {
        self.messages().lock().unwrap().put(tenant, message);
    }

    /// Every stored message, with its tenant: what Graph holds now.
    pub fn stored_messages(&self) -> Vec<(String, Value)> {
        let store = self.messages().lock().unwrap();
        store
            .messages
            .iter()
            .map(|m| (m.tenant.clone(), m.json.clone()))
            .collect()
    }

    /// One page of `all` at `skip`, with the link to the next.
    fn page(&self, uri: &Uri, all: Vec<Value>, skip: usize, delta_link: Option<String>) -> Value {
        let size = self.page_size();
        let end = (skip + size).min(all.len());
        let mut page = json!({ "value": all[skip.min(end)..end] });
        if end < all.len() {
            let path = uri.path();
            let mut query: Vec<String> = uri
                .query()
                .unwrap_or("")
                .split('&')
                .filter(|kv| {
                    !kv.is_empty()
                        && !kv.starts_with("%24skiptoken")
                        && !kv.starts_with("$skiptoken")
                })
                .map(str::to_string)
                .collect();
            query.push(format!("%24skiptoken={end}"));
            page["@odata.nextLink"] =
                format!("{}{path}?{}", self.base_url(), query.join("&")).into();
        } else if let Some(link) = delta_link {
            page["@odata.deltaLink"] = link.into();
        }
        page
    }

    /// The stored messages of `tenant` that `keep` selects, in the window of `q`.
    fn select(
        &self,
        tenant: &str,
        q: &ListQuery,
        keep: impl Fn(&Value) -> bool,
    ) -> Result<Vec<Value>, String> {
        if let Some(m) = q.model.as_deref() {
            if m != "A" && m != "B" {
                return Err(format!("model must be A or B, not {m}"));
            }
        }
        let window = parse_filter(q.filter.as_deref())?;
        let store = self.messages().lock().unwrap();
        let mut out: Vec<Value> = store
            .messages
            .iter()
            .filter(|m| m.tenant == tenant && keep(&m.json) && window.contains(&m.json))
            .map(|m| m.json.clone())
            .collect();
        let by_time = |v: &Value| v["lastModifiedDateTime"].as_str().unwrap_or("").to_string();
        match q.orderby.as_deref() {
            Some("lastModifiedDateTime desc") => out.sort_by_key(|v| std::cmp::Reverse(by_time(v))),
            Some(o) => return Err(format!("$orderby {o} is not supported")),
            None => {}
        }
        Ok(out)
    }

    fn answer(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        list: impl FnOnce(&str) -> Result<(Vec<Value>, Option<String>), String>,
        skip: usize,
    ) -> Response {
        let r = match self.admit(method, headers) {
            Err(r) => *r,
            Ok(tenant) => match list(&tenant) {
                Ok((all, delta)) => Json(self.page(uri, all, skip, delta)).into_response(),
                Err(e) => bad_request(e),
            },
        };
        self.record(method, uri.path(), r.status());
        r
    }
}

pub(crate) async fn channel_all(
    State(g): State<GraphStandIn>,
    Path(team): Path<String>,
    Query(q): Query<ListQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    tokio::time::sleep(g.page_delay()).await;
    let skip = q.skiptoken.unwrap_or(0);
    g.answer(
        &method,
        &uri,
        &headers,
        |tenant| {
            g.select(tenant, &q, |m| {
                m["channelIdentity"]["teamId"] == team.as_str()
            })
            .map(|v| (v, None))
        },
        skip,
    )
}

pub(crate) async fn user_chats_all(
    State(g): State<GraphStandIn>,
    Path(user): Path<String>,
    Query(q): Query<ListQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    tokio::time::sleep(g.page_delay()).await;
    let skip = q.skiptoken.unwrap_or(0);
    // The user's chats: those they wrote in (the stand-in keeps no member lists).
    let chats: BTreeSet<String> = g
        .messages()
        .lock()
        .unwrap()
        .messages
        .iter()
        .filter(|m| m.json["from"]["user"]["id"] == user.as_str())
        .filter_map(|m| m.json["chatId"].as_str().map(str::to_string))
        .collect();
    g.answer(
        &method,
        &uri,
        &headers,
        |tenant| {
            g.select(tenant, &q, |m| {
                m["chatId"].as_str().is_some_and(|c| chats.contains(c))
            })
            .map(|v| (v, None))
        },
        skip,
    )
}

pub(crate) async fn chat_messages(
    State(g): State<GraphStandIn>,
    Path(chat): Path<String>,
    Query(q): Query<ListQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    tokio::time::sleep(g.page_delay()).await;
    let skip = q.skiptoken.unwrap_or(0);
    g.answer(
        &method,
        &uri,
        &headers,
        |tenant| {
            g.select(tenant, &q, |m| m["chatId"] == chat.as_str())
                .map(|v| (v, None))
        },
        skip,
    )
}

pub(crate) async fn channel_delta(
    State(g): State<GraphStandIn>,
    Path((team, channel)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    tokio::time::sleep(g.page_delay()).await;
    let skip = q.skiptoken.unwrap_or(0);
    let since = q.deltatoken.unwrap_or(0);
    g.answer(
        &method,
        &uri,
        &headers,
        |tenant| {
            let store = g.messages().lock().unwrap();
            let changed: Vec<Value> = store
                .messages
                .iter()
                .filter(|m| {
                    m.tenant == tenant
                        && m.seq > since
                        && m.json["channelIdentity"]["teamId"] == team.as_str()
                        && m.json["channelIdentity"]["channelId"] == channel.as_str()
                })
                .map(|m| m.json.clone())
                .collect();
            let link = format!("{}{}?%24deltatoken={}", g.base_url(), uri.path(), store.seq);
            Ok((changed, Some(link)))
        },
        skip,
    )
}

pub(crate) async fn teams(
    State(g): State<GraphStandIn>,
    Query(q): Query<ListQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    tokio::time::sleep(g.page_delay()).await;
    let skip = q.skiptoken.unwrap_or(0);
    g.answer(
        &method,
        &uri,
        &headers,
        |tenant| {
            let store = g.messages().lock().unwrap();
            let ids: BTreeSet<String> = store
                .messages
                .iter()
                .filter(|m| m.tenant == tenant)
                .filter_map(|m| {
                    m.json["channelIdentity"]["teamId"]
                        .as_str()
                        .map(str::to_string)
                })
                .collect();
            Ok((ids.into_iter().map(|id| json!({"id": id})).collect(), None))
        },
        skip,
    )
}
