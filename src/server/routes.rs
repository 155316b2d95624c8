//! `POST /notifications` and `POST /lifecycle`: Graph's validation handshake, then batches.
//! The mapping from pipeline results to HTTP status lives here and nowhere else.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use super::AppState;
use crate::auth::tokens::TokenError;
use crate::pipeline::BatchError;

#[derive(Deserialize)]
struct Handshake {
    /// Already URL-decoded by the query extractor, which is what Graph expects back.
    #[serde(rename = "validationToken")]
    validation_token: Option<String>,
}

pub fn public_router(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/notifications", post(notify))
        .route("/lifecycle", post(notify))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

async fn notify(
    State(state): State<Arc<AppState>>,
    Query(handshake): Query<Handshake>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(token) = handshake.validation_token {
        // Echo the decoded token as plain text, never as HTML: it is attacker-controllable.
        return text(StatusCode::OK, token);
    }
    let metrics = state.pipeline.metrics();
    if !is_json(&headers) {
        metrics.reject("content_type");
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "notifications must be sent as application/json\n".into(),
        );
    }
    metrics.in_flight.inc();
    let result = state.pipeline.process(&body).await;
    metrics.in_flight.dec();
    match result {
        Ok(summary) => (StatusCode::ACCEPTED, Json(summary)).into_response(),
        Err(e @ BatchError::BadRequest(_)) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        Err(BatchError::Token(e)) if !matches!(e, TokenError::KeysUnavailable(_)) => {
            // Authenticated-but-not-authorized (a valid token that does not cover the items)
            // is 403; everything else failed to prove who is calling.
            let status = match e {
                TokenError::Uncovered(_)
                | TokenError::Tenant
                | TokenError::Audience
                | TokenError::Caller => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            text(status, format!("{e}\n"))
        }
        Err(e @ (BatchError::Unavailable(_) | BatchError::Token(_))) => {
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"));
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(state.retry_after_s));
            r
        }
    }
}
