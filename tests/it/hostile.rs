//! Hostile input against a running `serve`: every bad input class gets its documented status,
//! the process stays healthy, and nothing reaches the sinks. Bounded in count and time.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn hostile_config(dir: &std::path::Path) -> graphbridge_core::config::Config {
    let mut cfg = test_config(dir);
    let s = &mut cfg.server;
    s.max_body_bytes = 1024 * 1024;
    s.max_items = 100;
    s.max_json_depth = 16;
    s.header_read_timeout_ms = 500;
    s.body_read_timeout_ms = 500;
    s.max_connections = 128;
    s.max_in_flight = 4;
    cfg
}

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// Sends raw bytes and returns the response's status code (0 if the server closed first).
async fn raw(base: &str, request: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr(base)).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("server answers or closes in time");
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn post(body: &[u8], content_type: &str) -> Vec<u8> {
    let mut r = format!(
        "POST /notifications HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test]
async fn each_bad_input_class_gets_its_status_and_nothing_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = hostile_config(dir.path());
    let srv = Running::start(&cfg).await;

    let item = json("synthetic/chat_notification.json")["value"][0].clone();
    let oversize = vec![b' '; 1100 * 1024];
    let deep = format!("{{\"value\":[{}{}]}}", "[".repeat(1000), "]".repeat(1000));
    let huge_array = serde_json::to_vec(&json!({"value": vec![item.clone(); 101]})).unwrap();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("oversize", post(&oversize, "application/json"), 413),
        ("deep nesting", post(deep.as_bytes(), "application/json"), 400),
        ("huge array", post(&huge_array, "application/json"), 413),
        ("invalid UTF-8", post(&[b'{', 0xff, 0xfe, b'}'], "application/json"), 400),
        ("wrong content type", post(b"{\"value\":[]}", "text/xml"), 415),
        ("not JSON", post(b"<xml/>", "application/json"), 400),
        (
            "chunked oversize",
            [
                b"POST /notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec(),
                format!("{:x}\r\n", 1100 * 1024).into_bytes(),
                vec![b' '; 1100 * 1024],
                b"\r\n0\r\n\r\n".to_vec(),
            ]
            .concat(),
            413,
        ),
        (
            "header too large",
            format!("POST /notifications HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(40_000)).into_bytes(),
            431,
        ),
    ];
    for (name, request, want) in cases {
        assert_eq!(raw(&srv.base, &request).await, want, "{name}");
    }

    let metrics = srv.metrics().await;
    for reason in [
        "body_too_large",
        "too_deep",
        "too_many_items",
        "bad_json",
        "content_type",
    ] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason} not counted"
        );
    }
    // Healthy, and a good request still works.
    assert_eq!(srv.admin_status("/healthz").await, 200);
    assert!(
        jsonl(&cfg.sink.file.path).is_empty() && jsonl(&cfg.sink.file.deadletter_path).is_empty()
    );
    assert_eq!(
        srv.post_json("/notifications", &json!({"value": [item]}))
            .await
            .status(),
        202
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn slowloris_headers_and_stalled_bodies_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Running::start(&hostile_config(dir.path())).await;
    // Headers that never finish: the connection is closed after the header read timeout.
    let mut s = TcpStream::connect(addr(&srv.base)).await.unwrap();
    s.write_all(b"POST /notifications HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("closed by the server")
        .unwrap();
    // A body that stalls: 408 after the body read timeout.
    let mut s = TcpStream::connect(addr(&srv.base)).await.unwrap();
    s.write_all(b"POST /notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"va").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("answered in time");
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(srv.admin_status("/healthz").await, 200);
    srv.shutdown().await;
}

#[tokio::test]
async fn overload_is_shed_with_503_and_many_connections_do_not_hurt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = hostile_config(dir.path());
    let srv = Running::start(&cfg).await;
    // Hold every in-flight slot with requests whose bodies never finish.
    let mut holders = Vec::new();
    for _ in 0..cfg.server.max_in_flight {
        let mut s = TcpStream::connect(addr(&srv.base)).await.unwrap();
        s.write_all(b"POST /notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{").await.unwrap();
        holders.push(s);
    }
    // The next request is shed at once (the holders may need a moment to be admitted).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let shed = loop {
        let resp = srv.post_json("/notifications", &json!({"value": []})).await;
        if resp.status() == 503 {
            break resp;
        }
        assert!(std::time::Instant::now() < deadline, "never shed");
    };
    assert!(shed.headers().contains_key("retry-after"));
    drop(holders);

    // Two thousand idle connections beyond the connection limit: the admin port and, once they
    // go, the public port keep working.
    let mut idle = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        for _ in 0..2000 {
            idle.push(TcpStream::connect(addr(&srv.base)).await.unwrap());
        }
    })
    .await
    .expect("2000 connections opened within the bound");
    assert_eq!(srv.admin_status("/healthz").await, 200);
    drop(idle);
    let item = json("synthetic/chat_notification.json")["value"][0].clone();
    let ok = tokio::time::timeout(
        Duration::from_secs(10),
        srv.post_json("/notifications", &json!({"value": [item]})),
    )
    .await
    .expect("served after the flood");
    assert_eq!(ok.status(), 202);
    let metrics = srv.metrics().await;
    assert!(metrics.contains("reason=\"overloaded\""));
    srv.shutdown().await;
}
