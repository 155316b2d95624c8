//! `POST /notifications` and `POST /lifecycle`: Graph's validation handshake, then batches.
//! The mapping from pipeline results to HTTP status lives here and nowhere else.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use tracing::Instrument;

use super::AppState;
use crate::auth::tokens::TokenError;
use crate::graph::envelope::EnvelopeError;
use crate::pipeline::{BatchError, BatchSummary};
use crate::telemetry::GaugeGuard;

#[derive(Deserialize)]
struct Handshake {
    /// Already URL-decoded by the query extractor, which is what Graph expects back.
    #[serde(rename = "validationToken")]
    validation_token: Option<String>,
}

pub fn public_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/notifications", post(notify))
        .route("/lifecycle", post(notify))
        // The body is read by the handler under its own limit and timeout.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

fn unavailable(state: &AppState, body: String) -> Response {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, body);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(state.retry_after_s));
    r
}

/// Reads the body within the size limit and the read timeout.
async fn read_body(state: &AppState, body: Body) -> Result<Bytes, Response> {
    let metrics = state.pipeline.metrics();
    match tokio::time::timeout(
        state.body_read_timeout,
        axum::body::to_bytes(body, state.max_body_bytes),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let too_large =
                std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                    .any(|e| e.is::<http_body_util::LengthLimitError>());
            if too_large {
                metrics.reject("body_too_large");
                Err(text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body exceeds {} bytes\n", state.max_body_bytes),
                ))
            } else {
                metrics.reject("body_read");
                Err(text(
                    StatusCode::BAD_REQUEST,
                    "body could not be read\n".into(),
                ))
            }
        }
        Err(_) => {
            metrics.reject("body_timeout");
            Err(text(
                StatusCode::REQUEST_TIMEOUT,
                "body not received in time\n".into(),
            ))
        }
    }
}

/// The one place that maps pipeline results to HTTP.
fn respond(state: &AppState, result: Result<BatchSummary, BatchError>) -> Response {
    match result {
        Ok(summary) => (StatusCode::ACCEPTED, Json(summary)).into_response(),
        Err(BatchError::BadRequest(e @ EnvelopeError::TooManyItems(..))) => {
            text(StatusCode::PAYLOAD_TOO_LARGE, format!("{e}\n"))
        }
        Err(e @ BatchError::BadRequest(_)) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        Err(e) if e.graph_retries() => unavailable(state, format!("{e}\n")),
        Err(BatchError::Token(e)) => {
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
        // Anything else is not safe to acknowledge: let Graph retry.
        Err(e) => unavailable(state, format!("{e}\n")),
    }
}

async fn notify(
    State(state): State<Arc<AppState>>,
    Query(handshake): Query<Handshake>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
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
    // Load shedding: past the in-flight limit answer at once, so Graph retries elsewhere or
    // later, instead of queueing until every request is slow.
    let Ok(_slot) = state.in_flight.try_acquire() else {
        metrics.reject("overloaded");
        return unavailable(&state, "overloaded, retry later\n".into());
    };
    let body = match read_body(&state, body).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let _counted = GaugeGuard::hold(&metrics.in_flight);
    // One span per batch (exported with telemetry.otlp_endpoint); the pipeline adds one per item.
    let span = tracing::info_span!(
        "batch",
        path = uri.path(),
        bytes = body.len(),
        status = tracing::field::Empty
    );
    let result = state.pipeline.process(&body).instrument(span.clone()).await;
    let response = respond(&state, result);
    span.record("status", response.status().as_u16());
    response
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::config::Config;
    use crate::pipeline::test_support::{body, pipeline, synthetic_item, FakeSink};

    /// The in_flight gauge, polled until `done` (bounded: the test fails instead of hanging).
    async fn wait_in_flight(state: &AppState, done: impl Fn(i64) -> bool) -> i64 {
        let gauge = &state.pipeline.metrics().in_flight;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !done(gauge.get()) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        gauge.get()
    }

    #[tokio::test]
    async fn a_client_that_disconnects_mid_request_leaves_in_flight_at_zero() {
        let state =
            AppState::new(pipeline(FakeSink::hanging(), false), &Config::defaults()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
            listener,
            public_router(state.clone()),
        )));

        let payload = body(&[&synthetic_item()]);
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        );
        client.write_all(head.as_bytes()).await.unwrap();
        client.write_all(&payload).await.unwrap();
        // The batch is in the pipeline, waiting on a sink that never answers.
        assert_eq!(wait_in_flight(&state, |n| n == 1).await, 1);
        drop(client);
        assert_eq!(
            wait_in_flight(&state, |n| n == 0).await,
            0,
            "the abandoned request is still counted"
        );
    }
}
