//! Every metric `serve` exports fires for the behaviour it describes, with the right value, and
//! its labels stay within fixed sets (dashboards and alerts in charts/graphbridge depend on the
//! names). No broker needed: a Kafka sink pointed at a closed port is a broker that is down.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use graphbridge_core::config::{Config, SinkKind};
use serde_json::{json, Value};

/// Families `serve` registers (exposition names, counters with `_total`). A new metric must be
/// added here, to the README and, where it matters, to the chart's dashboard and alerts.
const FAMILIES: &[(&str, &str)] = &[
    ("graphbridge_received_total", "counter"),
    ("graphbridge_accepted_total", "counter"),
    ("graphbridge_rejected_total", "counter"),
    ("graphbridge_published_total", "counter"),
    ("graphbridge_unavailable_total", "counter"),
    ("graphbridge_ack_latency_seconds", "histogram"),
    ("graphbridge_publish_latency_seconds", "histogram"),
    ("graphbridge_in_flight", "gauge"),
    ("graphbridge_keys_loaded", "gauge"),
    ("graphbridge_key_reload_failures_total", "counter"),
    ("graphbridge_spool_depth_items", "gauge"),
    ("graphbridge_spool_depth_bytes", "gauge"),
    ("graphbridge_spool_oldest_age_seconds", "gauge"),
    ("graphbridge_spool_appended_items_total", "counter"),
    ("graphbridge_spool_drained_items_total", "counter"),
    ("graphbridge_spool_full_total", "counter"),
    ("graphbridge_spool_discarded_bytes_total", "counter"),
    ("graphbridge_spool_unreadable_total", "counter"),
    // The subscription controller's, in the same registry; `subscriptions run` drives them
    // (tests/subscriptions.rs), serve only exposes them empty. Labelled by configured name.
    ("graphbridge_subscription_expiry_seconds", "gauge"),
    ("graphbridge_subscription_renewals_total", "counter"),
    ("graphbridge_subscription_failures_total", "counter"),
    ("graphbridge_subscriptions_unhealthy", "gauge"),
    (
        "graphbridge_subscriptions_last_reconcile_timestamp_seconds",
        "gauge",
    ),
    // Backfill's, in the same registry; `backfill run` drives them (tests/backfill.rs).
    ("graphbridge_backfill_gaps_open", "gauge"),
    ("graphbridge_backfill_gaps_closed_total", "counter"),
    ("graphbridge_backfill_oldest_gap_age_seconds", "gauge"),
    ("graphbridge_backfill_messages_total", "counter"),
    ("graphbridge_backfill_graph_calls_total", "counter"),
    // The verdict worker's; `verdicts run` drives them (tests/verdicts.rs).
    ("graphbridge_verdicts_total", "counter"),
    ("graphbridge_verdict_patch_seconds", "histogram"),
    ("graphbridge_verdict_retries_total", "counter"),
    ("graphbridge_verdict_consumer_lag", "gauge"),
    // The Event Hubs source's; `serve --source eventhubs` drives it (tests/eventhubs.rs).
    ("graphbridge_eventhubs_events_total", "counter"),
];

/// The README's rejection reasons: items dead-lettered and requests refused whole.
const REASONS: &[&str] = &[
    "client_state",
    "tenant_not_allowed",
    "malformed_item",
    "unsupported_resource",
    "unknown_certificate",
    "thumbprint_mismatch",
    "bad_base64",
    "key_unwrap_failed",
    "signature_mismatch",
    "decrypt_failed",
    "not_chat_message",
    "resource_mismatch",
    "bad_json",
    "too_deep",
    "body_read",
    "token_missing",
    "token_null",
    "token_malformed",
    "token_signature",
    "token_unknown_key",
    "token_expired",
    "token_issuer",
    "token_uncovered",
    "token_audience",
    "token_caller",
    "body_timeout",
    "body_too_large",
    "too_many_items",
    "content_type",
    "overloaded",
    "token_keys_unavailable",
];
const SINKS: &[&str] = &["file", "stdout", "kafka", "nats"];
/// Why batches were answered 503 (`BatchError::unavailable_reason`).
const UNAVAILABLE_REASONS: &[&str] = &[
    "ack_budget",
    "sink_retryable",
    "sink_permanent",
    "spool",
    "task",
    "token_keys_unavailable",
];

/// `name{label="value"}` → value, for one labelled series.
fn labelled(text: &str, name: &str, label: &str, value: &str) -> Option<f64> {
    metric_value(text, &format!("{name}{{{label}=\"{value}\"}}"))
}

/// Batches answered 503, whatever the reason.
fn unavailable_total(text: &str) -> f64 {
    series(text, "graphbridge_unavailable_total")
        .iter()
        .map(|(_, v)| v)
        .sum()
}

/// Every series of `name` as (labels, value).
fn series(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            if !(labels.is_empty() || labels.starts_with('{')) {
                return None;
            }
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("# TYPE ")?.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

fn dead_broker() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn down_kafka(dir: &Path) -> Config {
    let mut cfg = test_config(dir);
    cfg.sink.kind = SinkKind::Kafka;
    cfg.sink.kafka.brokers = dead_broker();
    // Fail publishes to the dead broker quickly so the drainer retries (and re-reads) often.
    cfg.sink.kafka.message_timeout_ms = 1000;
    // Spooling answers within 3/4 of this; generous, so a loaded CI machine still makes it.
    cfg.ack.budget_ms = 2000;
    cfg.ack.retry_after_s = 1;
    cfg
}

async fn post_raw(srv: &Running, content_type: &str, body: &str) -> u16 {
    graphbridge_core::http::client()
        .post(format!("{}/notifications", srv.base))
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn wait_for(srv: &Running, what: &str, bound: Duration, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + bound;
    loop {
        let m = srv.metrics().await;
        if done(&m) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} within {bound:?}:\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Names the README documents (backticked `graphbridge_…`).
fn documented_metrics() -> BTreeSet<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    readme
        .split('`')
        .filter_map(|s| {
            let name: String = s
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (name.starts_with("graphbridge_") && !name.ends_with('_')).then_some(name)
        })
        .collect()
}

fn assert_bounded_labels(text: &str) {
    for (labels, _) in series(text, "graphbridge_rejected_total") {
        let reason = labels
            .strip_prefix("{reason=\"")
            .and_then(|l| l.strip_suffix("\"}"))
            .unwrap_or_else(|| panic!("rejected_total has labels {labels}"));
        assert!(REASONS.contains(&reason), "undocumented reason {reason}");
    }
    for (labels, _) in series(text, "graphbridge_published_total") {
        let sink = labels
            .strip_prefix("{sink=\"")
            .and_then(|l| l.strip_suffix("\"}"))
            .unwrap_or_else(|| panic!("published_total has labels {labels}"));
        assert!(SINKS.contains(&sink), "unknown sink label {sink}");
    }
    for (labels, _) in series(text, "graphbridge_unavailable_total") {
        let reason = labels
            .strip_prefix("{reason=\"")
            .and_then(|l| l.strip_suffix("\"}"))
            .unwrap_or_else(|| panic!("unavailable_total has labels {labels}"));
        assert!(
            UNAVAILABLE_REASONS.contains(&reason),
            "unknown unavailable reason {reason}"
        );
    }
    // No other family carries labels (histogram buckets carry only `le`).
    for (name, _) in FAMILIES {
        if name.ends_with("rejected_total")
            || name.ends_with("published_total")
            || name.ends_with("unavailable_total")
            || name.starts_with("graphbridge_subscription")
            || name.starts_with("graphbridge_verdict")
            || name.starts_with("graphbridge_eventhubs")
        {
            continue;
        }
        for (labels, _) in series(text, name) {
            assert!(
                labels.is_empty()
                    || labels.starts_with("_bucket{le=")
                    || labels == "_sum"
                    || labels == "_count",
                "{name} has labels {labels}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_batch_and_refused_requests_move_the_right_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.server.max_items = 10;
    cfg.graph.keys_reload_interval_ms = 100;
    let srv = Running::start(&cfg).await;

    let m = srv.metrics().await;
    let found = families(&m);
    for (name, kind) in FAMILIES {
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert_eq!(
            found.get(family).map(String::as_str),
            Some(*kind),
            "{name} registered as a {kind}\n{m}"
        );
    }
    assert_eq!(
        found.len(),
        FAMILIES.len(),
        "unexpected families: {found:?}"
    );
    assert_eq!(metric_value(&m, "graphbridge_keys_loaded"), Some(2.0));
    for name in [
        "graphbridge_received_total",
        "graphbridge_accepted_total",
        "graphbridge_in_flight",
    ] {
        assert_eq!(metric_value(&m, name), Some(0.0), "{name} at start");
    }

    // 7 items: 3 events and a lifecycle event accepted; wrong clientState, tampered signature
    // and unknown certificate dead-lettered; all 7 records published to the file sink.
    let batch = mixed_batch(1_700_100_000_000);
    let resp = srv.post_json("/notifications", &batch.body).await;
    assert_eq!(resp.status(), 202);
    let m = srv.metrics().await;
    assert_eq!(metric_value(&m, "graphbridge_received_total"), Some(7.0));
    assert_eq!(metric_value(&m, "graphbridge_accepted_total"), Some(4.0));
    for reason in &batch.rejected {
        let name = "graphbridge_rejected_total";
        assert_eq!(
            labelled(&m, name, "reason", reason),
            Some(1.0),
            "{reason}\n{m}"
        );
    }
    assert_eq!(
        labelled(&m, "graphbridge_published_total", "sink", "file"),
        Some(7.0)
    );
    assert_eq!(
        metric_value(&m, "graphbridge_ack_latency_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&m, "graphbridge_publish_latency_seconds_count"),
        Some(1.0)
    );
    let ack = metric_value(&m, "graphbridge_ack_latency_seconds_sum").unwrap();
    assert!(ack > 0.0 && ack < 2.0, "ack latency {ack} s");
    assert_eq!(metric_value(&m, "graphbridge_in_flight"), Some(0.0));
    assert_eq!(unavailable_total(&m), 0.0);

    // Requests refused whole count under their reason and reach nothing else.
    assert_eq!(post_raw(&srv, "application/json", "{not json").await, 400);
    assert_eq!(post_raw(&srv, "text/plain", "{}").await, 415);
    let many: Vec<Value> = (0..11).map(|_| json!({})).collect();
    assert_eq!(
        srv.post_json("/notifications", &json!({ "value": many }))
            .await
            .status(),
        413
    );
    let m = srv.metrics().await;
    for reason in ["bad_json", "content_type", "too_many_items"] {
        assert_eq!(
            labelled(&m, "graphbridge_rejected_total", "reason", reason),
            Some(1.0),
            "{reason}"
        );
    }
    assert_eq!(metric_value(&m, "graphbridge_received_total"), Some(7.0));
    assert_eq!(metric_value(&m, "graphbridge_accepted_total"), Some(4.0));

    // A broken key file: the reload fails and counts, the loaded keys stay.
    std::fs::write(cfg.graph.keys_dir.join("broken.pem"), "not a key").unwrap();
    wait_metric(
        &srv.admin,
        "graphbridge_key_reload_failures_total",
        Duration::from_secs(10),
        |v| v >= 1.0,
    )
    .await;
    let m = srv.metrics().await;
    assert_eq!(metric_value(&m, "graphbridge_keys_loaded"), Some(2.0));
    assert_bounded_labels(&m);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_broker_moves_in_flight_unavailable_overloaded_and_the_spool_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");

    // Without a spool: the batch waits out the ack budget (in flight meanwhile), then 503.
    // A second request while it waits is shed at once (max_in_flight = 1).
    let mut cfg = down_kafka(dir.path());
    cfg.server.max_in_flight = 1;
    let srv = Running::start(&cfg).await;
    let body = mixed_batch(1_700_200_000_000).body;
    let first = {
        let (url, body) = (format!("{}/notifications", srv.base), body.clone());
        tokio::spawn(async move {
            graphbridge_core::http::client()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    wait_for(
        &srv,
        "in_flight 1 while the broker does not confirm",
        Duration::from_secs(5),
        |m| metric_value(m, "graphbridge_in_flight") == Some(1.0),
    )
    .await;
    assert_eq!(srv.post_json("/notifications", &body).await.status(), 503);
    assert_eq!(first.await.unwrap(), 503);
    let m = srv.metrics().await;
    // The dead broker's delivery reports fail (message_timeout_ms) or the budget runs out.
    assert_eq!(unavailable_total(&m), 1.0, "{m}");
    assert_bounded_labels(&m);
    assert_eq!(
        labelled(&m, "graphbridge_rejected_total", "reason", "overloaded"),
        Some(1.0)
    );
    assert_eq!(metric_value(&m, "graphbridge_in_flight"), Some(0.0));
    assert_eq!(metric_value(&m, "graphbridge_accepted_total"), Some(0.0));
    assert_eq!(
        metric_value(&m, "graphbridge_ack_latency_seconds_count"),
        Some(0.0),
        "only answered batches"
    );
    srv.shutdown().await;

    // With a spool: acknowledged from the spool; depth, bytes and age rise; a full spool
    // answers 503 and counts as unavailable too (the 503-rate alert adds only `overloaded`).
    cfg.server.max_in_flight = 256;
    cfg.spool.enabled = true;
    cfg.spool.dir = spool_dir.clone();
    cfg.spool.max_bytes = 64 << 10;
    let srv = Running::start(&cfg).await;
    let resp = srv
        .post_json("/notifications", &mixed_batch(1_700_201_000_000).body)
        .await;
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.json::<Value>().await.unwrap()["spooled"], 7);
    let m = srv.metrics().await;
    assert_eq!(
        metric_value(&m, "graphbridge_spool_appended_items_total"),
        Some(7.0)
    );
    assert_eq!(metric_value(&m, "graphbridge_spool_depth_items"), Some(7.0));
    assert!(metric_value(&m, "graphbridge_spool_depth_bytes").unwrap() > 1000.0);
    assert_eq!(
        metric_value(&m, "graphbridge_ack_latency_seconds_count"),
        Some(1.0)
    );
    wait_for(
        &srv,
        "the oldest spooled batch ages",
        Duration::from_secs(15),
        |m| metric_value(m, "graphbridge_spool_oldest_age_seconds").unwrap() > 0.0,
    )
    .await;
    let mut acked = 1u64;
    loop {
        let resp = srv
            .post_json(
                "/notifications",
                &mixed_batch(1_700_202_000_000 + acked as i64 * 1000).body,
            )
            .await;
        if resp.status() != 202 {
            assert_eq!(resp.status(), 503);
            break;
        }
        acked += 1;
        assert!(acked < 50, "a 64 KiB spool never filled");
    }
    let m = srv.metrics().await;
    assert_eq!(metric_value(&m, "graphbridge_spool_full_total"), Some(1.0));
    assert_eq!(
        labelled(&m, "graphbridge_unavailable_total", "reason", "spool"),
        Some(1.0),
        "spool full is a 503"
    );
    assert_eq!(unavailable_total(&m), 1.0, "{m}");
    assert_eq!(
        metric_value(&m, "graphbridge_spool_depth_items"),
        Some(7.0 * acked as f64)
    );
    assert_eq!(
        metric_value(&m, "graphbridge_spool_appended_items_total"),
        Some(7.0 * acked as f64)
    );
    srv.shutdown().await;

    // A torn tail (a write that never finished) is cut off at start; the broker is "back"
    // (the file sink): every acknowledged item drains.
    let last = spool_segments(&spool_dir).pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0xab; 40]);
    std::fs::write(&last, bytes).unwrap();
    let mut file_cfg = cfg.clone();
    file_cfg.sink.kind = SinkKind::File;
    let srv = Running::start(&file_cfg).await;
    // Drained first (the depth gauge may read 0 before the start-up scan has set it).
    let all = 7.0 * acked as f64;
    let name = "graphbridge_spool_drained_items_total";
    wait_metric(&srv.admin, name, Duration::from_secs(60), |v| v == all).await;
    let name = "graphbridge_spool_depth_items";
    wait_metric(&srv.admin, name, Duration::from_secs(5), |v| v == 0.0).await;
    let m = srv.metrics().await;
    assert_eq!(
        metric_value(&m, "graphbridge_spool_discarded_bytes_total"),
        Some(40.0)
    );
    assert_eq!(
        metric_value(&m, "graphbridge_spool_drained_items_total"),
        Some(7.0 * acked as f64)
    );
    assert_eq!(metric_value(&m, "graphbridge_spool_depth_bytes"), Some(0.0));
    assert_eq!(
        metric_value(&m, "graphbridge_spool_oldest_age_seconds"),
        Some(0.0)
    );
    assert!(
        labelled(&m, "graphbridge_published_total", "sink", "file").unwrap() >= 7.0 * acked as f64
    );
    assert_eq!(
        metric_value(&m, "graphbridge_spool_unreadable_total"),
        Some(0.0)
    );
    srv.shutdown().await;

    // Corruption after the start-up check: the drainer cannot read an acknowledged batch back.
    let srv = Running::start(&cfg).await;
    let resp = srv
        .post_json("/notifications", &mixed_batch(1_700_203_000_000).body)
        .await;
    assert_eq!(resp.status(), 202);
    let seg = spool_segments(&spool_dir).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    wait_metric(
        &srv.admin,
        "graphbridge_spool_unreadable_total",
        Duration::from_secs(30),
        |v| v == 1.0,
    )
    .await;
    let m = srv.metrics().await;
    assert_bounded_labels(&m);
    let exposed: BTreeSet<String> = families(&m)
        .into_iter()
        .flat_map(|(f, kind)| {
            let names = match kind.as_str() {
                "counter" => vec![format!("{f}_total")],
                "histogram" => vec![
                    f.clone(),
                    format!("{f}_bucket"),
                    format!("{f}_count"),
                    format!("{f}_sum"),
                ],
                _ => vec![f.clone()],
            };
            names.into_iter()
        })
        .collect();
    let documented = documented_metrics();
    let missing: Vec<_> = documented.difference(&exposed).cloned().collect();
    assert!(
        missing.is_empty(),
        "README documents metrics serve does not export: {missing:?}"
    );
    let undocumented: Vec<_> = FAMILIES
        .iter()
        .map(|(name, _)| name.to_string())
        .filter(|name| !documented.contains(name))
        .collect();
    assert!(
        undocumented.is_empty(),
        "README does not document {undocumented:?}"
    );
    srv.shutdown().await;
}
