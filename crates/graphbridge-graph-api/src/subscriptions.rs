//! A small client for Graph's `/subscriptions` API, with Graph's documented errors sorted into
//! what the controller does about them: 409 adopt, 404 recreate, 429/503 wait `Retry-After`,
//! 403 quota, 400 validation (the endpoint did not answer the handshake).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::oauth::{OAuthError, TokenSource};

/// A subscription as Graph returns it (the fields the controller uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub resource: String,
    pub change_type: String,
    pub notification_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_notification_url: Option<String>,
    pub expiration_date_time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_state: Option<String>,
    #[serde(default)]
    pub include_resource_data: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_certificate_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_supported_tls_version: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    Auth(#[from] OAuthError),
    /// 409: a subscription for this resource already exists (another replica, an earlier run).
    #[error("duplicate subscription (409): {0}")]
    Duplicate(String),
    /// 404: the subscription is gone (expired or removed).
    #[error("subscription not found (404): {0}")]
    NotFound(String),
    /// 403: over the subscription quota, or the app lacks the permission for the resource.
    #[error("forbidden (403): {0}; check the app's application permissions and the tenant's subscription quota")]
    Forbidden(String),
    /// 429, 503 or 504: try again after the given time.
    #[error("throttled ({status}), retry after {retry_after:?}: {message}")]
    Throttled {
        status: u16,
        retry_after: Duration,
        message: String,
    },
    /// 400 on create: usually the notification or lifecycle URL did not answer the handshake.
    #[error("Graph refused the subscription (400): {message}")]
    BadRequest { message: String },
    #[error("Graph answered {status}: {message}")]
    Other { status: u16, message: String },
    #[error("request to Graph failed: {0}")]
    Network(String),
}

impl GraphError {
    /// The `reason` label of `graphbridge_subscription_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            GraphError::Auth(e) if e.retryable() => "auth_unavailable",
            GraphError::Auth(_) => "auth",
            GraphError::Duplicate(_) => "duplicate",
            GraphError::NotFound(_) => "not_found",
            GraphError::Forbidden(_) => "forbidden",
            GraphError::Throttled { .. } => "throttled",
            GraphError::BadRequest { .. } => "validation",
            GraphError::Other { .. } => "graph_error",
            GraphError::Network(_) => "network",
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct Page {
    value: Vec<Subscription>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

/// Graph's subscriptions API for one tenant.
pub struct GraphClient {
    base: String,
    http: reqwest::Client,
    tokens: Arc<TokenSource>,
}

/// An HTTP client for Graph and the token authority (HTTPS through rustls, webpki roots).
pub fn http_client() -> reqwest::Client {
    graphbridge_core::http::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        // Graph usually sends one; without it, back off a little rather than hammer.
        .unwrap_or(Duration::from_secs(10))
}

impl GraphClient {
    pub fn new(base: &str, http: reqwest::Client, tokens: Arc<TokenSource>) -> Self {
        GraphClient {
            base: base.trim_end_matches('/').to_string(),
            http,
            tokens,
        }
    }

    /// The API base, e.g. `https://graph.microsoft.com/v1.0`.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request with a bearer token; on 401 the token is fetched again once.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, bytes::Bytes), GraphError> {
        for attempt in 0..2 {
            let token = self.tokens.token().await?;
            let mut req = self
                .http
                .request(method.clone(), url)
                .bearer_auth(token.expose());
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| GraphError::Network(format!("{method} {url}: {e}")))?;
            let status = resp.status().as_u16();
            if status == 401 && attempt == 0 {
                self.tokens.invalidate().await;
                continue;
            }
            let headers = resp.headers().clone();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| GraphError::Network(format!("{method} {url}: {e}")))?;
            if (200..300).contains(&status) {
                return Ok((status, bytes));
            }
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| format!("{}: {}", b.error.code, b.error.message))
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(300).collect());
            return Err(match status {
                409 => GraphError::Duplicate(message),
                404 => GraphError::NotFound(message),
                403 => GraphError::Forbidden(message),
                429 | 503 | 504 => GraphError::Throttled {
                    status,
                    retry_after: retry_after(&headers),
                    message,
                },
                400 => GraphError::BadRequest { message },
                _ => GraphError::Other { status, message },
            });
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn parse<T: for<'de> Deserialize<'de>>(url: &str, bytes: &[u8]) -> Result<T, GraphError> {
        serde_json::from_slice(bytes).map_err(|e| GraphError::Other {
            status: 200,
            message: format!("unexpected answer from {url}: {e}"),
        })
    }

    /// Every subscription of this app in the tenant (all pages).
    pub async fn list(&self) -> Result<Vec<Subscription>, GraphError> {
        let mut url = format!("{}/subscriptions", self.base);
        let mut all = Vec::new();
        loop {
            let (_, bytes) = self.send(reqwest::Method::GET, &url, None).await?;
            let page: Page = Self::parse(&url, &bytes)?;
            all.extend(page.value);
            match page.next_link {
                Some(next) => url = next,
                None => return Ok(all),
            }
        }
    }

    pub async fn create(&self, sub: &Subscription) -> Result<Subscription, GraphError> {
        let url = format!("{}/subscriptions", self.base);
        let body = serde_json::to_value(sub).expect("subscription serializes");
        let (_, bytes) = self.send(reqwest::Method::POST, &url, Some(&body)).await?;
        Self::parse(&url, &bytes)
    }

    /// Renews (and thereby reauthorizes) a subscription; optionally switches its certificate.
    pub async fn renew(
        &self,
        id: &str,
        expiration: DateTime<Utc>,
        certificate: Option<(&str, &str)>,
    ) -> Result<Subscription, GraphError> {
        let url = format!("{}/subscriptions/{id}", self.base);
        let mut body = serde_json::json!({
            "expirationDateTime": expiration.to_rfc3339_opts(SecondsFormat::Secs, true),
        });
        if let Some((cert, cert_id)) = certificate {
            body["encryptionCertificate"] = cert.into();
            body["encryptionCertificateId"] = cert_id.into();
        }
        let (_, bytes) = self.send(reqwest::Method::PATCH, &url, Some(&body)).await?;
        Self::parse(&url, &bytes)
    }

    /// Deletes a subscription; one that is already gone counts as deleted.
    pub async fn delete(&self, id: &str) -> Result<(), GraphError> {
        let url = format!("{}/subscriptions/{id}", self.base);
        match self.send(reqwest::Method::DELETE, &url, None).await {
            Ok(_) | Err(GraphError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Whether `url` delivers to Azure Event Hubs (`EventHub:https://…`, naming a Key Vault secret
/// with the connection string or the namespace and hub with role-based access): Graph then
/// writes to the hub and makes no validation handshake.
pub fn is_event_hub(url: &str) -> bool {
    url.starts_with("EventHub:")
}

/// Resource paths compare without the leading slash, the query (`?model=`) and case (Graph
/// echoes them in its own spelling); Graph allows one subscription per path and app anyway.
pub fn same_resource(a: &str, b: &str) -> bool {
    let path = |r: &str| {
        r.split('?')
            .next()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_ascii_lowercase()
    };
    path(a) == path(b)
}
