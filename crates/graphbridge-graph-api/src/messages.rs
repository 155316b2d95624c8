//! Graph's message APIs, as backfill reads them: every page (`@odata.nextLink`), throttling
//! honoured (429, 503 and 504 wait their `Retry-After`; no call before that time), bounded.
//! Messages stay raw JSON: they go through the same normalization as a notification's content.
//! These are metered APIs (Microsoft charges per message returned beyond the free allowance).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::subscriptions::{GraphClient, GraphError};

/// Throttled answers waited out before giving up on one request.
const MAX_THROTTLED: u32 = 8;

/// A `lastModifiedDateTime` window, both ends exclusive (Graph's `gt` and `lt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Window {
    /// `$filter` for the window.
    pub fn filter(&self) -> String {
        let t = |d: DateTime<Utc>| d.to_rfc3339_opts(SecondsFormat::Millis, true);
        format!(
            "lastModifiedDateTime gt {} and lastModifiedDateTime lt {}",
            t(self.from),
            t(self.to)
        )
    }
}

/// The messages of a read, and for a delta query the link to read the next changes with.
#[derive(Debug, Default)]
pub struct Messages {
    pub messages: Vec<Box<RawValue>>,
    pub delta_link: Option<String>,
}

#[derive(Deserialize)]
struct Page {
    value: Vec<Box<RawValue>>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink", default)]
    delta_link: Option<String>,
}

#[derive(Deserialize)]
struct Team {
    id: String,
}

/// `?model=A|B` as the subscription used it (metered APIs bill by model).
fn with_model(mut url: reqwest::Url, model: Option<&str>) -> reqwest::Url {
    if let Some(m) = model {
        url.query_pairs_mut().append_pair("model", m);
    }
    url
}

impl GraphClient {
    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<reqwest::Url, GraphError> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base()))
            .map_err(|e| GraphError::Network(format!("{path}: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// GET with throttling waited out: a 429/503/504 is retried after its `Retry-After`.
    async fn get_patiently(&self, url: &str) -> Result<bytes::Bytes, GraphError> {
        let mut throttled = 0;
        loop {
            match self.send(reqwest::Method::GET, url, None).await {
                Ok((_, bytes)) => return Ok(bytes),
                Err(GraphError::Throttled {
                    retry_after,
                    status,
                    ..
                }) if throttled < MAX_THROTTLED => {
                    throttled += 1;
                    tracing::info!(
                        url,
                        status,
                        ?retry_after,
                        "Graph throttles the message API; waiting"
                    );
                    tokio::time::sleep(retry_after).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Every page from `url` on.
    async fn all_pages(&self, url: reqwest::Url) -> Result<Messages, GraphError> {
        let mut out = Messages::default();
        let mut next = Some(url.to_string());
        while let Some(url) = next.take() {
            let bytes = self.get_patiently(&url).await?;
            let page: Page = serde_json::from_slice(&bytes).map_err(|e| GraphError::Other {
                status: 200,
                message: format!("unexpected answer from {url}: {e}"),
            })?;
            out.messages.extend(page.value);
            next = page.next_link;
            if page.delta_link.is_some() {
                out.delta_link = page.delta_link;
            }
        }
        Ok(out)
    }

    /// `GET /teams/{team}/channels/getAllMessages` in `window`: the team's channel messages
    /// and replies.
    pub async fn team_channel_messages(
        &self,
        team: &str,
        window: Window,
        model: Option<&str>,
    ) -> Result<Messages, GraphError> {
        let url = self.url(
            &format!("/teams/{team}/channels/getAllMessages"),
            &[("$filter", &window.filter())],
        )?;
        self.all_pages(with_model(url, model)).await
    }

    /// `GET /users/{user}/chats/getAllMessages` in `window`: the messages of the user's chats.
    pub async fn user_chat_messages(
        &self,
        user: &str,
        window: Window,
        model: Option<&str>,
    ) -> Result<Messages, GraphError> {
        let url = self.url(
            &format!("/users/{user}/chats/getAllMessages"),
            &[("$filter", &window.filter())],
        )?;
        self.all_pages(with_model(url, model)).await
    }

    /// `GET /chats/{chat}/messages` in `window`, newest first.
    pub async fn chat_messages(&self, chat: &str, window: Window) -> Result<Messages, GraphError> {
        let url = self.url(
            &format!("/chats/{chat}/messages"),
            &[
                ("$filter", &window.filter()),
                ("$orderby", "lastModifiedDateTime desc"),
            ],
        )?;
        self.all_pages(url).await
    }

    /// `GET /teams/{team}/channels/{channel}/messages/delta`: the changes since `delta_link`
    /// (everything when `None`), and the link for the next call.
    pub async fn channel_delta(
        &self,
        team: &str,
        channel: &str,
        delta_link: Option<&str>,
    ) -> Result<Messages, GraphError> {
        let url = match delta_link {
            Some(link) => reqwest::Url::parse(link)
                .map_err(|e| GraphError::Network(format!("deltaLink {link}: {e}")))?,
            None => self.url(
                &format!("/teams/{team}/channels/{channel}/messages/delta"),
                &[],
            )?,
        };
        self.all_pages(url).await
    }

    /// `GET /teams`: the ids of the tenant's teams.
    pub async fn team_ids(&self) -> Result<Vec<String>, GraphError> {
        let mut out = Vec::new();
        let mut next = Some(self.url("/teams", &[])?.to_string());
        while let Some(url) = next.take() {
            let bytes = self.get_patiently(&url).await?;
            #[derive(Deserialize)]
            struct Teams {
                value: Vec<Team>,
                #[serde(rename = "@odata.nextLink", default)]
                next_link: Option<String>,
            }
            let page: Teams = serde_json::from_slice(&bytes).map_err(|e| GraphError::Other {
                status: 200,
                message: format!("unexpected answer from {url}: {e}"),
            })?;
            out.extend(page.value.into_iter().map(|t| t.id));
            next = page.next_link;
        }
        Ok(out)
    }
}

impl GraphClient {
    /// `PATCH {path}` (a message, under the API base) with only `policyViolation`: Graph's call
    /// for a DLP verdict, which hides a blocked message from its readers. One attempt; the
    /// caller waits out throttling (it owns the rate and the retries).
    pub async fn patch_policy_violation(
        &self,
        path: &str,
        policy_violation: &serde_json::Value,
    ) -> Result<u16, GraphError> {
        let url = self.url(path, &[])?;
        let body = serde_json::json!({ "policyViolation": policy_violation });
        let (status, _) = self
            .send(reqwest::Method::PATCH, url.as_str(), Some(&body))
            .await?;
        Ok(status)
    }
}
