//! Trace export: with `telemetry.otlp_endpoint` set, `serve` sends its spans (one per batch,
//! one per item) to an OTLP/HTTP collector as protobuf. A tiny collector on loopback receives
//! them; the spans carry ids, never message content.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::process::Bridge;
use common::*;

type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A collector that accepts `POST /v1/traces` and keeps (content-type, body).
async fn collector() -> (String, Received) {
    let received: Received = Arc::default();
    let store = received.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let store = store.clone();
            async move {
                let ctype = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                store.lock().unwrap().push((ctype, body.to_vec()));
                // An empty ExportTraceServiceResponse: full success.
                (
                    StatusCode::OK,
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector_with_ids_and_without_content() {
    let dir = tempfile::tempdir().unwrap();
    let (url, received) = collector().await;
    let mut cfg = test_config(dir.path());
    cfg.telemetry.otlp_endpoint = Some(url);
    // Logs quiet: spans are exported whatever the log level says.
    cfg.telemetry.log_level = "warn".into();
    let mut bridge = Bridge::start(&cfg, dir.path()).await;

    let batch = mixed_batch(1_700_300_000_000);
    let resp = post_json(&bridge.base, "/notifications", &batch.body).await;
    assert_eq!(resp.status(), 202);

    // SIGTERM: the bridge exits 0 and flushes the spans it still buffers on the way out.
    bridge.signal("TERM");
    let status = bridge.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "exit {status:?}: {}", bridge.log_text());

    let got = received.lock().unwrap().clone();
    assert!(!got.is_empty(), "no export arrived: {}", bridge.log_text());
    assert!(
        got.iter()
            .all(|(ctype, _)| ctype == "application/x-protobuf"),
        "OTLP/HTTP protobuf: {:?}",
        got.iter().map(|g| &g.0).collect::<Vec<_>>()
    );
    let all: Vec<u8> = got.into_iter().flat_map(|(_, body)| body).collect();
    for needle in [
        "graphbridge",    // service.name
        "batch",          // the request's span
        "/notifications", // its path attribute
        "item",           // a span per decrypted item
        "sub-t",          // the item's subscription id
        "team.with.dots", // and its resource
    ] {
        assert!(
            contains(&all, needle),
            "no {needle:?} in the exported spans"
        );
    }
    assert!(
        !contains(&all, "hello"),
        "message content must never be exported"
    );
}
