//! A local stand-in for Microsoft Graph's subscriptions API and the Entra token endpoint, for
//! tests and local runs of the subscription controller. It enforces the rules the controller
//! must live with (graph-protocol.md §1, §2, §6): the validation handshake against both URLs on
//! create (400 when it fails), lifetime limits, 409 on a duplicate resource, 404 on unknown ids,
//! a quota (403), injectable 429/503 with `Retry-After`, expiry on a (possibly fast) clock, and
//! lifecycle notifications on demand, POSTed in Graph's format.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::graph_messages::{self, MessageStore};
use crate::graph_verdicts;
use graphbridge_graph_api::clock::{Clock, SystemClock};
use graphbridge_graph_api::subscriptions::Subscription;

/// A one-time answer for the next matching Graph API request.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Only requests with this method (any when `None`).
    pub method: Option<Method>,
    pub status: u16,
    pub retry_after_s: Option<u64>,
}

/// One Graph API request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub at: Instant,
}

pub struct StandInOptions {
    pub client_id: String,
    pub client_secret: String,
    /// The app's registered certificate (DER): client assertions signed by its key are accepted.
    pub certificate_der: Option<Vec<u8>>,
    pub clock: Arc<dyn Clock>,
    /// Seconds an access token is valid.
    pub token_lifetime_s: u64,
    /// Subscriptions allowed before 403 (Graph: 10,000 per tenant for Teams).
    pub max_subscriptions: usize,
    /// Messages per page of the message APIs (Graph: 50 for getAllMessages).
    pub page_size: usize,
    /// Time each message API page takes to answer (Graph's latency; tests use it to act
    /// mid-read).
    pub page_delay: Duration,
    /// Signs the validation tokens of the change notifications the stand-in sends itself (the
    /// `updated` after a policyViolation PATCH); none without it.
    pub issuer: Option<Arc<crate::issuer::Issuer>>,
}

impl Default for StandInOptions {
    fn default() -> Self {
        StandInOptions {
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            client_secret: "stand-in-secret".into(),
            certificate_der: None,
            clock: Arc::new(SystemClock),
            token_lifetime_s: 3599,
            max_subscriptions: 10_000,
            page_size: 50,
            page_delay: Duration::ZERO,
            issuer: None,
        }
    }
}

struct Stored {
    sub: Subscription,
    tenant: String,
}

struct Inner {
    opts: StandInOptions,
    /// access token → tenant
    tokens: Mutex<HashMap<String, String>>,
    subs: Mutex<HashMap<String, Stored>>,
    faults: Mutex<VecDeque<Fault>>,
    stale_lists: AtomicUsize,
    log: Mutex<Vec<Logged>>,
    expired: Mutex<Vec<String>>,
    handshakes: AtomicUsize,
    token_requests: AtomicUsize,
    next_id: AtomicU64,
    http: reqwest::Client,
    messages: Mutex<MessageStore>,
    /// `http://addr` once serving: the start of `@odata.nextLink`s.
    base: Mutex<String>,
    /// `updated` notifications delivered after policyViolation PATCHes.
    updated_notifications: AtomicUsize,
}

/// The stand-in; clones share one state.
#[derive(Clone)]
pub struct GraphStandIn {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GraphStandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphStandIn").finish_non_exhaustive()
    }
}

/// Token Graph sends in the handshake: it needs URL-decoding, like Graph's.
const HANDSHAKE_TOKEN: &str = "Validation: Testing client application reachability for subscription Request-Id: 7a1e2f0c & more";

fn graph_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `application/x-www-form-urlencoded` → pairs.
fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .to_string()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// One subscription per app and resource path (the `?model=` query aside).
fn same_resource(a: &str, b: &str) -> bool {
    graphbridge_graph_api::subscriptions::same_resource(a, b)
}

impl GraphStandIn {
    pub fn new(opts: StandInOptions) -> Self {
        GraphStandIn {
            inner: Arc::new(Inner {
                opts,
                tokens: Mutex::new(HashMap::new()),
                subs: Mutex::new(HashMap::new()),
                faults: Mutex::new(VecDeque::new()),
                stale_lists: AtomicUsize::new(0),
                log: Mutex::new(Vec::new()),
                expired: Mutex::new(Vec::new()),
                handshakes: AtomicUsize::new(0),
                token_requests: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                http: graphbridge_core::http::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("HTTP client"),
                messages: Mutex::new(MessageStore::default()),
                base: Mutex::new(String::new()),
                updated_notifications: AtomicUsize::new(0),
            }),
        }
    }

    pub(crate) fn messages(&self) -> &Mutex<MessageStore> {
        &self.inner.messages
    }

    pub(crate) fn base_url(&self) -> String {
        self.inner.base.lock().unwrap().clone()
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn issuer(&self) -> Option<&crate::issuer::Issuer> {
        self.inner.opts.issuer.as_deref()
    }

    pub(crate) fn count_updated_notification(&self) {
        self.inner
            .updated_notifications
            .fetch_add(1, Ordering::SeqCst);
    }

    /// `updated` notifications the bridge acknowledged after policyViolation PATCHes.
    pub fn updated_notifications(&self) -> usize {
        self.inner.updated_notifications.load(Ordering::SeqCst)
    }

    /// Live subscriptions of `tenant`, with their certificates and client states.
    pub(crate) fn subscriptions_of(&self, tenant: &str) -> Vec<Subscription> {
        self.purge();
        let subs = self.inner.subs.lock().unwrap();
        subs.values()
            .filter(|s| s.tenant == tenant)
            .map(|s| s.sub.clone())
            .collect()
    }

    pub(crate) fn page_size(&self) -> usize {
        self.inner.opts.page_size.max(1)
    }

    pub(crate) fn page_delay(&self) -> Duration {
        self.inner.opts.page_delay
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/v1.0/subscriptions", get(list).post(create))
            .route(
                "/v1.0/subscriptions/{id}",
                get(get_one).patch(patch).delete(delete),
            )
            .route("/v1.0/teams", get(graph_messages::teams))
            .route(
                "/v1.0/teams/{team}/channels/getAllMessages",
                get(graph_messages::channel_all),
            )
            .route(
                "/v1.0/teams/{team}/channels/{channel}/messages/delta",
                get(graph_messages::channel_delta),
            )
            .route(
                "/v1.0/users/{user}/chats/getAllMessages",
                get(graph_messages::user_chats_all),
            )
            .route(
                "/v1.0/chats/{chat}/messages",
                get(graph_messages::chat_messages),
            )
            .route(
                "/v1.0/chats/{chat}/messages/{id}",
                axum::routing::patch(graph_verdicts::patch_chat_message),
            )
            .route(
                "/v1.0/teams/{team}/channels/{channel}/messages/{id}",
                axum::routing::patch(graph_verdicts::patch_channel_message),
            )
            .route(
                "/v1.0/teams/{team}/channels/{channel}/messages/{parent}/replies/{id}",
                axum::routing::patch(graph_verdicts::patch_channel_reply),
            )
            .with_state(self.clone())
    }

    /// Serves on `listener`; returns the base URL: the authority, and `{base}/v1.0` the API.
    pub fn serve(&self, listener: TcpListener) -> String {
        let base = format!("http://{}", listener.local_addr().expect("bound"));
        *self.inner.base.lock().unwrap() = base.clone();
        let app = self.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        base
    }

    /// Live subscriptions (expired ones removed first).
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.purge();
        let mut v: Vec<Subscription> = self
            .inner
            .subs
            .lock()
            .unwrap()
            .values()
            .map(|s| s.sub.clone())
            .collect();
        v.sort_by(|a, b| a.resource.cmp(&b.resource));
        v
    }

    pub fn get(&self, id: &str) -> Option<Subscription> {
        self.purge();
        self.inner
            .subs
            .lock()
            .unwrap()
            .get(id)
            .map(|s| s.sub.clone())
    }

    /// Ids of subscriptions that reached their expiration.
    pub fn expired(&self) -> Vec<String> {
        self.purge();
        self.inner.expired.lock().unwrap().clone()
    }

    pub fn inject(&self, fault: Fault) {
        self.inner.faults.lock().unwrap().push_back(fault);
    }

    /// The next `n` list requests answer as if nothing existed yet (a replica's stale view).
    pub fn stale_lists(&self, n: usize) {
        self.inner.stale_lists.store(n, Ordering::SeqCst);
    }

    pub fn log(&self) -> Vec<Logged> {
        self.inner.log.lock().unwrap().clone()
    }

    /// Requests with this method and status whose path starts with `path`.
    pub fn count(&self, method: &str, path: &str, status: u16) -> usize {
        self.log()
            .iter()
            .filter(|l| l.method == method && l.path.starts_with(path) && l.status == status)
            .count()
    }

    pub fn handshakes(&self) -> usize {
        self.inner.handshakes.load(Ordering::SeqCst)
    }

    pub fn token_requests(&self) -> usize {
        self.inner.token_requests.load(Ordering::SeqCst)
    }

    /// Adds a subscription as if someone else (another replica) had created it.
    pub fn insert(&self, tenant: &str, mut sub: Subscription) -> String {
        let id = self.new_id();
        sub.id = id.clone();
        self.inner.subs.lock().unwrap().insert(
            id.clone(),
            Stored {
                sub,
                tenant: tenant.into(),
            },
        );
        id
    }

    /// Deletes a subscription without telling anyone (it expired or was removed).
    pub fn drop_silently(&self, id: &str) -> Option<Subscription> {
        self.inner.subs.lock().unwrap().remove(id).map(|s| s.sub)
    }

    /// Removes a subscription the way Graph does for Teams, then sends `subscriptionRemoved`.
    pub async fn remove(&self, id: &str) -> Result<u16, String> {
        let stored = self
            .inner
            .subs
            .lock()
            .unwrap()
            .remove(id)
            .ok_or_else(|| format!("no subscription {id}"))?;
        self.post_lifecycle(&stored.sub, &stored.tenant, "subscriptionRemoved")
            .await
    }

    /// POSTs a lifecycle notification for a live subscription to its lifecycle URL.
    pub async fn send_lifecycle(&self, id: &str, event: &str) -> Result<u16, String> {
        let (sub, tenant) = {
            let subs = self.inner.subs.lock().unwrap();
            let s = subs
                .get(id)
                .ok_or_else(|| format!("no subscription {id}"))?;
            (s.sub.clone(), s.tenant.clone())
        };
        self.post_lifecycle(&sub, &tenant, event).await
    }

    async fn post_lifecycle(
        &self,
        sub: &Subscription,
        tenant: &str,
        event: &str,
    ) -> Result<u16, String> {
        let url = sub
            .lifecycle_notification_url
            .clone()
            .ok_or("the subscription has no lifecycleNotificationUrl")?;
        let body = json!({"value": [{
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": ts(sub.expiration_date_time),
            "tenantId": tenant,
            "clientState": sub.client_state,
            "lifecycleEvent": event,
        }]});
        self.inner
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| format!("POST {url}: {e}"))
    }

    fn new_id(&self) -> String {
        let n = self.inner.next_id.fetch_add(1, Ordering::SeqCst);
        let r: u32 = rand::random();
        format!("{r:08x}-{n:04x}-4000-8000-{:012x}", n * 7919)
    }

    fn purge(&self) {
        let now = self.inner.opts.clock.now();
        let mut subs = self.inner.subs.lock().unwrap();
        let gone: Vec<String> = subs
            .iter()
            .filter(|(_, s)| s.sub.expiration_date_time <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            subs.remove(&id);
            self.inner.expired.lock().unwrap().push(id);
        }
    }

    pub(crate) fn record(&self, method: &Method, path: &str, status: StatusCode) {
        self.inner.log.lock().unwrap().push(Logged {
            method: method.to_string(),
            path: path.to_string(),
            status: status.as_u16(),
            at: Instant::now(),
        });
    }

    /// Bearer check and injected faults; `Ok(tenant)` when the request may proceed.
    /// Token check and injected faults, as for every Graph API request: the tenant.
    pub(crate) fn admit(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<String, Box<Response>> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let Some(tenant) = self.inner.tokens.lock().unwrap().get(token).cloned() else {
            return Err(Box::new(graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token validation failure.",
            )));
        };
        let mut faults = self.inner.faults.lock().unwrap();
        let pos = faults
            .iter()
            .position(|f| f.method.as_ref().is_none_or(|m| m == method));
        if let Some(f) = pos.and_then(|i| faults.remove(i)) {
            let status = StatusCode::from_u16(f.status).expect("valid status");
            let (code, message) = match f.status {
                429 => ("TooManyRequests", "Too many requests"),
                503 => ("ServiceUnavailable", "Service unavailable"),
                403 => (
                    "ExtensionError",
                    "Operation: Create; Exception: [Status Code: Forbidden; Reason: The subscription quota has been reached]",
                ),
                _ => ("Fault", "injected fault"),
            };
            let mut r = graph_error(status, code, message);
            if let Some(s) = f.retry_after_s {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, s.to_string().parse().expect("digits"));
            }
            return Err(Box::new(r));
        }
        self.purge();
        Ok(tenant)
    }

    /// Graph's handshake: POST `{url}?validationToken=…`, 200 text/plain with the decoded token.
    /// None for an Event Hubs URL: Graph writes a validation event to the hub instead.
    async fn handshake(&self, url: &str) -> Result<(), String> {
        if graphbridge_graph_api::subscriptions::is_event_hub(url) {
            return Ok(());
        }
        self.inner.handshakes.fetch_add(1, Ordering::SeqCst);
        let resp = self
            .inner
            .http
            .post(url)
            .query(&[("validationToken", HANDSHAKE_TOKEN)])
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status == StatusCode::OK && body == HANDSHAKE_TOKEN {
            Ok(())
        } else {
            Err(format!("got {status}"))
        }
    }

    fn check_expiration(
        &self,
        exp: DateTime<Utc>,
        lifecycle: bool,
    ) -> Result<DateTime<Utc>, Box<Response>> {
        let now = self.inner.opts.clock.now();
        let max_min = if lifecycle { 4320 } else { 60 };
        if exp > now + chrono::Duration::minutes(max_min) {
            return Err(Box::new(graph_error(
                StatusCode::BAD_REQUEST,
                "ExtensionError",
                format!(
                    "Subscription expiration can only be {max_min} minutes in the future{}.",
                    if lifecycle {
                        ""
                    } else {
                        " without a lifecycleNotificationUrl"
                    }
                ),
            )));
        }
        // Graph raises short requests to 45 minutes for chatMessage subscriptions.
        Ok(exp.max(now + chrono::Duration::minutes(45)))
    }
}

async fn token(State(g): State<GraphStandIn>, Path(tenant): Path<String>, body: Bytes) -> Response {
    g.inner.token_requests.fetch_add(1, Ordering::SeqCst);
    let form = parse_form(&body);
    let invalid = |code: &str, description: &str| {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({
                "error": code,
                "error_description": format!("{description}\r\nTrace ID: 00000000-0000-0000-0000-000000000000\r\nTimestamp: {}", ts(Utc::now())),
                "error_codes": [7000215],
            })),
        )
            .into_response()
    };
    let o = &g.inner.opts;
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("scope").map(String::as_str) != Some("https://graph.microsoft.com/.default")
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_request", "error_description": "AADSTS900144: The request body must contain client_credentials and the .default scope."})),
        )
            .into_response();
    }
    if form.get("client_id") != Some(&o.client_id) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unauthorized_client", "error_description": format!("AADSTS700016: Application with identifier '{}' was not found in the directory '{tenant}'.", form.get("client_id").cloned().unwrap_or_default())})),
        )
            .into_response();
    }
    let ok = match (form.get("client_secret"), form.get("client_assertion")) {
        (Some(secret), None) => secret == &o.client_secret,
        (None, Some(assertion)) => verify_assertion(o, assertion),
        _ => false,
    };
    if !ok {
        return invalid(
            "invalid_client",
            &format!("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.", o.client_id),
        );
    }
    let access = hex::encode(rand::random::<[u8; 24]>());
    g.inner
        .tokens
        .lock()
        .unwrap()
        .insert(access.clone(), tenant);
    Json(json!({"token_type": "Bearer", "expires_in": o.token_lifetime_s, "access_token": access}))
        .into_response()
}

/// A client assertion: RS256, signed by the registered certificate's key, `x5t#S256` naming
/// it, issued by and for the client, not expired.
fn verify_assertion(o: &StandInOptions, assertion: &str) -> bool {
    let Some(der) = &o.certificate_der else {
        return false;
    };
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return false;
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let expected = b64.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der));
    if header.x5t_s256.as_deref() != Some(expected.as_str()) {
        return false;
    }
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let key = jsonwebtoken::DecodingKey::from_rsa_der(&cert.public_key().subject_public_key.data);
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.validate_aud = false;
    v.set_required_spec_claims(&["exp", "iss", "sub"]);
    v.set_issuer(&[&o.client_id]);
    match jsonwebtoken::decode::<Value>(assertion, &key, &v) {
        Ok(data) => data.claims["sub"] == o.client_id.as_str(),
        Err(_) => false,
    }
}

fn public(sub: &Subscription) -> Subscription {
    // Graph does not return the client state or the certificate when listing.
    Subscription {
        client_state: None,
        encryption_certificate: None,
        ..sub.clone()
    }
}

async fn list(State(g): State<GraphStandIn>, method: Method, headers: HeaderMap) -> Response {
    let r = match g.admit(&method, &headers) {
        Err(r) => *r,
        Ok(tenant) => {
            let stale = g
                .inner
                .stale_lists
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            let value: Vec<Subscription> = if stale {
                vec![]
            } else {
                g.inner
                    .subs
                    .lock()
                    .unwrap()
                    .values()
                    .filter(|s| s.tenant == tenant)
                    .map(|s| public(&s.sub))
                    .collect()
            };
            Json(json!({"value": value})).into_response()
        }
    };
    g.record(&method, "/v1.0/subscriptions", r.status());
    r
}

async fn get_one(
    State(g): State<GraphStandIn>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let r = match g.admit(&method, &headers) {
        Err(r) => *r,
        Ok(_) => match g.inner.subs.lock().unwrap().get(&id) {
            Some(s) => Json(public(&s.sub)).into_response(),
            None => not_found(&id),
        },
    };
    g.record(&method, &format!("/v1.0/subscriptions/{id}"), r.status());
    r
}

fn not_found(id: &str) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("The object was not found. Subscription Id: {id}"),
    )
}

async fn create(
    State(g): State<GraphStandIn>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = create_inner(&g, &method, &headers, &body).await;
    g.record(&method, "/v1.0/subscriptions", r.status());
    r
}

async fn create_inner(
    g: &GraphStandIn,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let tenant = match g.admit(method, headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let bad = |m: String| graph_error(StatusCode::BAD_REQUEST, "InvalidRequest", m);
    let mut sub: Subscription = match serde_json::from_slice(body) {
        Ok(s) => s,
        Err(e) => return bad(format!("Invalid subscription: {e}")),
    };
    if sub.resource.trim().is_empty() {
        return bad("resource is required".into());
    }
    if sub
        .change_type
        .split(',')
        .any(|c| !["created", "updated", "deleted"].contains(&c.trim()))
    {
        return bad(format!("Invalid changeType {:?}", sub.change_type));
    }
    if sub.client_state.as_ref().is_some_and(|c| c.len() > 128) {
        return bad("clientState is longer than 128 characters".into());
    }
    if sub.include_resource_data == Some(true) {
        let cert_ok = sub.encryption_certificate.as_ref().is_some_and(|c| {
            base64::engine::general_purpose::STANDARD
                .decode(c)
                .is_ok_and(|der| x509_parser::parse_x509_certificate(&der).is_ok())
        });
        if !cert_ok
            || sub
                .encryption_certificate_id
                .as_ref()
                .is_none_or(|i| i.is_empty())
        {
            return bad("includeResourceData requires encryptionCertificate (base64 DER) and encryptionCertificateId".into());
        }
    }
    sub.expiration_date_time = match g.check_expiration(
        sub.expiration_date_time,
        sub.lifecycle_notification_url.is_some(),
    ) {
        Ok(e) => e,
        Err(r) => return *r,
    };
    let duplicate = |subs: &HashMap<String, Stored>| {
        subs.values()
            .find(|s| s.tenant == tenant && same_resource(&s.sub.resource, &sub.resource))
            .map(|s| {
                graph_error(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!(
                        "A subscription for this resource already exists for the application: {}",
                        s.sub.id
                    ),
                )
            })
    };
    if let Some(conflict) = duplicate(&g.inner.subs.lock().unwrap()) {
        return conflict;
    }
    if g.inner.subs.lock().unwrap().len() >= g.inner.opts.max_subscriptions {
        return graph_error(
            StatusCode::FORBIDDEN,
            "ExtensionError",
            "Operation: Create; Exception: [Status Code: Forbidden; Reason: The subscription quota has been reached]",
        );
    }
    if let Err(e) = g.handshake(&sub.notification_url).await {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            format!("Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request ({e})."),
        );
    }
    if let Some(url) = &sub.lifecycle_notification_url {
        if let Err(e) = g.handshake(url).await {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ValidationError",
                format!("Subscription validation request failed. Lifecycle notification endpoint must respond with 200 OK to validation request ({e})."),
            );
        }
    }
    // Checked again with the insert, under one lock: two creates racing through the handshakes
    // must not both succeed (Graph's uniqueness check is atomic).
    let mut subs = g.inner.subs.lock().unwrap();
    if let Some(conflict) = duplicate(&subs) {
        return conflict;
    }
    sub.id = g.new_id();
    subs.insert(
        sub.id.clone(),
        Stored {
            sub: sub.clone(),
            tenant: tenant.clone(),
        },
    );
    drop(subs);
    (StatusCode::CREATED, Json(sub)).into_response()
}

async fn patch(
    State(g): State<GraphStandIn>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = match g.admit(&method, &headers) {
        Err(r) => *r,
        Ok(_) => patch_inner(&g, &id, &body),
    };
    g.record(&method, &format!("/v1.0/subscriptions/{id}"), r.status());
    r
}

fn patch_inner(g: &GraphStandIn, id: &str, body: &[u8]) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return graph_error(StatusCode::BAD_REQUEST, "InvalidRequest", "invalid JSON");
    };
    let Some(exp) = v["expirationDateTime"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "expirationDateTime is required",
        );
    };
    let lifecycle = match g.inner.subs.lock().unwrap().get(id) {
        Some(s) => s.sub.lifecycle_notification_url.is_some(),
        None => return not_found(id),
    };
    let exp = match g.check_expiration(exp.with_timezone(&Utc), lifecycle) {
        Ok(e) => e,
        Err(r) => return *r,
    };
    let mut subs = g.inner.subs.lock().unwrap();
    let Some(s) = subs.get_mut(id) else {
        return not_found(id);
    };
    s.sub.expiration_date_time = exp;
    if let (Some(c), Some(i)) = (
        v["encryptionCertificate"].as_str(),
        v["encryptionCertificateId"].as_str(),
    ) {
        s.sub.encryption_certificate = Some(c.into());
        s.sub.encryption_certificate_id = Some(i.into());
    }
    Json(public(&s.sub)).into_response()
}

async fn delete(
    State(g): State<GraphStandIn>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let r = match g.admit(&method, &headers) {
        Err(r) => *r,
        Ok(_) => match g.inner.subs.lock().unwrap().remove(&id) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => not_found(&id),
        },
    };
    g.record(&method, &format!("/v1.0/subscriptions/{id}"), r.status());
    r
}
