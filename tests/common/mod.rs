//! Shared test helpers: fixture keys, a `serve` on port 0, schema validation, broker addresses.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use graphbridge::config::{Config, OneOrMany, Secret};
use graphbridge::crypto::encrypt::Recipient;
use graphbridge::crypto::keyring::certificate_der;
use graphbridge::server::{self, AppState};
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

/// Defaults with the vectors' keys and client states, file sink in `dir`.
pub fn test_config(dir: &Path) -> Config {
    let mut cfg = Config::defaults();
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
    pub task: Option<tokio::task::JoinHandle<Result<(), server::StartError>>>,
}

impl Running {
    pub async fn start(cfg: &Config) -> Self {
        let state = AppState::build(cfg).await.expect("serve starts");
        let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", public.local_addr().unwrap());
        let admin_base = format!("http://{}", admin.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::run(state.clone(), public, admin, async {
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
        reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
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
