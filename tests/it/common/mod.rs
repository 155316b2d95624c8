//! Shared test helpers: fixture keys, a `serve` on port 0, schema validation, broker addresses.
#![allow(dead_code)]

pub mod kafka;
pub mod nats;
pub mod process;
pub mod secure;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use graphbridge_core::config::{Config, OneOrMany, Secret};
use graphbridge_core::crypto::encrypt::Recipient;
use graphbridge_core::crypto::keyring::certificate_der;
use graphbridge_core::server::AppState;
use serde_json::Value;

pub const REAL_ID: &str = "custom-id-for-testing";
pub const SYNTH_ID: &str = "synthetic-cert-2025";
pub const REAL_CLIENT_STATE: &str = "example-client-state";
pub const SYNTH_CLIENT_STATE: &str = "synthetic-client-state";

pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(fixture(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn json(path: &str) -> Value {
    serde_json::from_slice(&read(path)).unwrap()
}

/// A keys directory holding both vectors' keys as `<id>.pem` + `<id>.crt`.
pub fn vector_keys_dir(dir: &Path) -> PathBuf {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for (id, folder) in [(REAL_ID, "sdk-core-channel-reply"), (SYNTH_ID, "synthetic")] {
        std::fs::write(
            keys.join(format!("{id}.pem")),
            read(&format!("{folder}/private_key.pem")),
        )
        .unwrap();
        std::fs::write(
            keys.join(format!("{id}.crt")),
            read(&format!("{folder}/certificate.pem")),
        )
        .unwrap();
    }
    keys
}

/// What Graph holds for the synthetic subscription: its certificate.
pub fn synthetic_recipient() -> Recipient {
    let der = certificate_der(&read("synthetic/certificate.pem")).unwrap();
    Recipient::from_certificate(SYNTH_ID, &der).unwrap()
}

/// Defaults with the vectors' keys and client states, file sink in `dir`. Validation tokens
/// are off here so tests can post hand-made batches; tests/tokens.rs and tests/e2e.rs turn
/// them on with the simulator's token issuer ([`with_tokens`]).
pub fn test_config(dir: &Path) -> Config {
    let mut cfg = Config::defaults();
    cfg.graph.validation_tokens.required = false;
    cfg.graph.client_state = OneOrMany::Many(vec![
        Secret::new(REAL_CLIENT_STATE),
        Secret::new(SYNTH_CLIENT_STATE),
    ]);
    cfg.graph.keys_dir = vector_keys_dir(dir);
    cfg.sink.file.path = dir.join("events.jsonl");
    cfg.sink.file.deadletter_path = dir.join("deadletter.jsonl");
    cfg
}

/// A running `serve` on loopback port 0; dropped = shut down.
pub struct Running {
    pub base: String,
    pub admin: String,
    pub state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<Result<(), graphbridge::app::StartError>>>,
}

/// With `RUST_LOG` set, the bridge's logs (and librdkafka's) go to the test output: captured
/// (shown for a failing test only) from the test's own thread, printed from the others.
pub fn capture_logs() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

impl Running {
    pub async fn start(cfg: &Config) -> Self {
        capture_logs();
        let state = graphbridge::app::build(cfg).await.expect("serve starts");
        let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", public.local_addr().unwrap());
        let admin_base = format!("http://{}", admin.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(graphbridge::app::run(state.clone(), public, admin, async {
            let _ = rx.await;
        }));
        Running {
            base,
            admin: admin_base,
            state,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        post_json(&self.base, path, body).await
    }

    /// The Prometheus text from the admin port.
    pub async fn metrics(&self) -> String {
        metrics_at(&self.admin).await
    }

    /// Status of a GET on the admin port (`/healthz`, `/readyz`).
    pub async fn admin_status(&self, path: &str) -> u16 {
        graphbridge_core::http::client()
            .get(format!("{}{path}", self.admin))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// The value of an unlabelled metric in Prometheus text (`name` without the `_total` suffix
/// of counters is not matched: give the exposed name).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The metrics text of the admin port at `admin` (a base URL).
pub async fn metrics_at(admin: &str) -> String {
    graphbridge_core::http::client()
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls an unlabelled metric on the admin port at `admin` until `done` holds, at most `bound`.
pub async fn wait_metric(admin: &str, name: &str, bound: Duration, done: impl Fn(f64) -> bool) {
    let deadline = std::time::Instant::now() + bound;
    loop {
        let text = metrics_at(admin).await;
        let v = metric_value(&text, name).unwrap_or_else(|| panic!("no metric {name}"));
        if done(v) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} = {v} after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The simulator's realistic workload (3 % to 6 % bad items of each kind) for the synthetic key.
pub fn sim_workload(seed: u64, bad_fraction: f64) -> graphbridge_sim::workload::Workload {
    sim_workload_keyed(seed, bad_fraction, false)
}

/// [`sim_workload`], optionally with one wrapped key for every item (the bridge's key cache
/// answers instead of RSA).
pub fn sim_workload_keyed(
    seed: u64,
    bad_fraction: f64,
    reuse_key: bool,
) -> graphbridge_sim::workload::Workload {
    use graphbridge_sim::workload::{Workload, WorkloadConfig};
    Workload::new(
        WorkloadConfig {
            tenants: 3,
            teams: 10,
            chats: 20,
            bad_fraction,
            seed,
            subscription_id: format!("sim-sub-{seed}"),
            client_state: SYNTH_CLIENT_STATE.into(),
            reuse_key,
            sensitive_fraction: 0.0,
        },
        synthetic_recipient(),
    )
}

/// Simulator options: `count` items as fast as 4 connections go, batches of 25, Graph-like
/// retries for up to a minute, no validation tokens. Tests adjust fields.
pub fn sim_options(target: &str, count: u64) -> graphbridge_sim::run::RunOptions {
    use graphbridge_sim::run::{RetryPolicy, RunOptions};
    RunOptions {
        target: target.into(),
        count: Some(count),
        duration: None,
        rate: 0.0,
        concurrency: 4,
        batch_size: 25,
        request_timeout: Duration::from_secs(15),
        retry: RetryPolicy {
            base: Duration::from_millis(200),
            max: Duration::from_secs(2),
            give_up_after: Duration::from_secs(60),
        },
        issuer: None,
        stop: None,
        pregenerate: false,
        drop_fraction: 0.0,
        graph: None,
    }
}

/// POSTs a JSON body to a bridge at `base` (in process or a child process).
pub async fn post_json(base: &str, path: &str, body: &Value) -> reqwest::Response {
    graphbridge_core::http::client()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The spool's segment files in `dir`, oldest first.
pub fn spool_segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

pub fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// Validates an emitted event against the schema named by its `dataschema`.
pub fn assert_valid_event(event: &Value) {
    let file = match event["dataschema"].as_str() {
        Some(s) if s.ends_with("teams-message.v1.json") => "teams-message.v1.json",
        Some(s) if s.ends_with("lifecycle.v1.json") => "lifecycle.v1.json",
        Some(s) if s.ends_with("message-verdict.v1.json") => "message-verdict.v1.json",
        Some(s) if s.ends_with("message-verdict-audit.v1.json") => "message-verdict-audit.v1.json",
        other => panic!("unknown dataschema {other:?}"),
    };
    let schema: Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("schema")
                .join(file),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(event)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "event does not match {file}: {errors:?}\n{event:#}"
    );
}

/// Whether a broker test must stop here: its broker's address is not set. A plain `cargo test`
/// (no brokers) then says the test was skipped; under CI (`CI` set) a missing broker is a
/// failure, never a skip: scripts/test.sh starts the brokers.
pub fn skip_without(var: &str, test: &str) -> bool {
    if std::env::var_os(var).is_some() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{var} is not set under CI: scripts/test.sh starts the brokers and exports it"
    );
    // Straight to stderr: libtest captures eprintln! of passing tests, and this must show.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipped {test}: {var} is not set (scripts/test.sh starts the brokers)"
    );
    true
}

/// Returns from a broker test when its broker is not configured (see [`skip_without`]).
macro_rules! needs {
    ($test:ident: $($var:literal),+) => {
        $(
            if $crate::common::skip_without($var, concat!(module_path!(), "::", stringify!($test))) {
                return;
            }
        )+
    };
}
pub(crate) use needs;

/// Broker address from the environment; tests fail (not skip) when CI should have started it.
pub fn broker_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: start the brokers with scripts/brokers.sh up and export its env (scripts/test.sh does both)")
    })
}

/// A name unique to this test run, for topics, streams and consumer groups.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A batch with every outcome: the real RSA-4096 channel reply, the synthetic chat message, a
/// fresh channel message, a wrong clientState, a tampered signature, an unknown certificate id
/// and a lifecycle event. The two vector items are the same in every batch (like a Graph
/// redelivery); the fresh message, the tampered item and the lifecycle event vary with `seed`.
pub struct MixedBatch {
    pub body: Value,
    /// (stream, key) of each event in item order: "channel"/"chat"/"lifecycle".
    pub events: Vec<(&'static str, String)>,
    pub rejected: Vec<&'static str>,
}

pub const REAL_TEAM: &str = "79852646-8963-4d32-95f1-e0c5237d37fa";
pub const SYNTH_CHAT: &str =
    "19:8ea0e38b-efb3-4757-924a-5f94061cf8c2_97f62344-57dc-409c-88ad-c4af14158ff5@unq.gbl.spaces";

pub fn mixed_batch(seed: i64) -> MixedBatch {
    use graphbridge_core::graph::envelope::ChangeType;
    use graphbridge_core::graph::resource::Conversation;
    use graphbridge_sim::generate::{lifecycle_item, tamper, MessageSpec};
    let r = synthetic_recipient();
    let spec = MessageSpec::new(
        "tenant-1",
        Conversation::Channel {
            team_id: "team.with.dots".into(),
            channel_id: "19:chan@thread.tacv2".into(),
        },
        seed,
        ChangeType::Created,
        "<p>hello</p>",
    );
    let real =
        json("sdk-core-channel-reply/constructed_notification_envelope.json")["value"][0].clone();
    let synth = json("synthetic/chat_notification.json")["value"][0].clone();
    let mut wrong = synth.clone();
    wrong["clientState"] = Value::from("wrong");
    let mut tampered = spec.clone();
    tampered.message_id = (seed + 1).to_string();
    let mut tampered = tampered.notification("sub-t", SYNTH_CLIENT_STATE, &r);
    tamper(&mut tampered["encryptedContent"]);
    let mut unknown = synth.clone();
    unknown["encryptedContent"]["encryptionCertificateId"] = Value::from("nobody");
    let fresh = spec.notification("sub-t", SYNTH_CLIENT_STATE, &r);
    let life_sub = format!("sub-life-{seed}");
    let lifecycle = lifecycle_item(
        &life_sub,
        "tenant-1",
        SYNTH_CLIENT_STATE,
        "reauthorizationRequired",
        "2030-01-01T00:00:00Z",
    );
    MixedBatch {
        body: serde_json::json!({"value": [real, wrong, synth, tampered, unknown, fresh, lifecycle], "validationTokens": []}),
        events: vec![
            ("channel", REAL_TEAM.to_string()),
            ("chat", SYNTH_CHAT.to_string()),
            ("channel", "team.with.dots".to_string()),
            ("lifecycle", life_sub),
        ],
        rejected: vec!["client_state", "signature_mismatch", "unknown_certificate"],
    }
}

/// Turns validation tokens on, trusting a fresh simulator issuer served on loopback.
pub async fn with_tokens(cfg: &mut Config) -> std::sync::Arc<graphbridge_sim::issuer::Issuer> {
    let issuer = std::sync::Arc::new(
        graphbridge_sim::issuer::Issuer::new(graphbridge_sim::cli::DEFAULT_APP_ID, None).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    cfg.graph.validation_tokens.required = true;
    cfg.graph.validation_tokens.openid_config_url = issuer.serve(listener).unwrap();
    cfg.graph.app_ids = vec![issuer.app_id.clone()];
    issuer
}

/// A lifecycle event as the ingress publishes it (`kind`: `missed`, `subscriptionRemoved`, ...),
/// received now.
pub fn lifecycle_event(
    tenant: &str,
    subscription: &str,
    kind: &str,
) -> graphbridge_core::event::v1::LifecycleEvent {
    let now = chrono::Utc::now().to_rfc3339();
    serde_json::from_value(serde_json::json!({
        "specversion": "1.0",
        "id": graphbridge_event::event_id(tenant, subscription, kind, &now),
        "source": format!("/tenants/{tenant}/subscriptions/{subscription}"),
        "type": format!("graph.subscription.{kind}"),
        "subject": format!("subscriptions/{subscription}"),
        "time": now, "datacontenttype": "application/json",
        "dataschema": "https://graphbridge.dev/schema/lifecycle.v1.json",
        "data": {"schema_version": 1, "tenant_id": tenant, "subscription_id": subscription,
                 "lifecycle_event": kind, "subscription_expires_at": null, "received_at": now}
    }))
    .unwrap()
}

/// A `resync_required` event as the controller publishes it: `resource` may be missing
/// messages between `from` and `to` (RFC 3339).
pub fn resync_event(
    tenant: &str,
    subscription: &str,
    resource: &str,
    from: &str,
    to: &str,
) -> graphbridge_core::event::v1::LifecycleEvent {
    let mut e = lifecycle_event(tenant, subscription, "resync_required");
    e.id =
        graphbridge_event::event_id(tenant, resource, "resync_required", &format!("{from}|{to}"));
    e.data.resync = Some(graphbridge_core::event::v1::ResyncGap {
        from: from.into(),
        to: to.into(),
        cause: "missed".into(),
        subscription_name: "test".into(),
        resource: resource.into(),
        new_subscription_id: None,
    });
    e
}
