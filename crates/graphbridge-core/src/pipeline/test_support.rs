//! Fixtures for the pipeline's unit tests: the synthetic vector, its key and client state, and
//! an in-memory sink that records what it got or fails.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{Pipeline, PipelineOptions};
use crate::auth::Authenticator;
use crate::crypto::keyring::{certificate_der, Keyring, PrivateKey};
use crate::secret::Secret;
use crate::sink::{lock, Record, Sink, SinkError, Stream};
use crate::spool::Spool;
use crate::telemetry::Metrics;

pub const RECEIVED_AT: &str = "2026-01-01T00:00:00.000Z";
pub const SYNTH_ID: &str = "synthetic-cert-2025";
pub const SYNTH_CLIENT_STATE: &str = "synthetic-client-state";
pub const SYNTH_TENANT: &str = "9f4ebab6-520d-49c0-85cc-7b25c78d4a93";

pub fn fixture(path: &str) -> Vec<u8> {
    let at = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(path);
    std::fs::read(&at).unwrap_or_else(|e| panic!("{}: {e}", at.display()))
}

fn json(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).unwrap()
}

/// The synthetic vector's key, as the keys directory would hold it.
pub fn synthetic_keyring() -> Arc<ArcSwap<Keyring>> {
    let cert = certificate_der(&fixture("synthetic/certificate.pem")).unwrap();
    let key =
        PrivateKey::from_pem(SYNTH_ID, &fixture("synthetic/private_key.pem"), Some(cert)).unwrap();
    Arc::new(ArcSwap::from_pointee(Keyring::new([key])))
}

pub fn authenticator() -> Authenticator {
    Authenticator::new(
        vec![Secret::new("other"), Secret::new(SYNTH_CLIENT_STATE)],
        vec![],
    )
}

pub fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_string()).unwrap()
}

fn to_raw(v: &Value) -> Box<RawValue> {
    raw(&v.to_string())
}

/// The synthetic chat message notification (encrypted, RSA-2048).
pub fn synthetic_item() -> Box<RawValue> {
    to_raw(&json("synthetic/chat_notification.json")["value"][0])
}

/// The same item with its ciphertext tampered: the HMAC must fail.
pub fn tampered_item() -> Box<RawValue> {
    let mut v = json("synthetic/chat_notification.json")["value"][0].clone();
    v["encryptedContent"] = json("synthetic/chat_encryptedContent_TAMPERED_must_fail.json");
    to_raw(&v)
}

/// `item` with another clientState (`None`: without one).
pub fn with_client_state(item: &RawValue, client_state: Option<&str>) -> Box<RawValue> {
    let mut v: Value = serde_json::from_str(item.get()).unwrap();
    match client_state {
        Some(cs) => v["clientState"] = cs.into(),
        None => {
            v.as_object_mut().unwrap().remove("clientState");
        }
    }
    to_raw(&v)
}

/// A lifecycle notification of the synthetic subscription.
pub fn lifecycle_item(event: &str) -> Box<RawValue> {
    to_raw(&serde_json::json!({
        "subscriptionId": "10493aa0-4d29-4df5-bc0c-ef742cc6cd7f",
        "subscriptionExpirationDateTime": "2021-02-02T10:30:34.9097561-08:00",
        "clientState": SYNTH_CLIENT_STATE,
        "tenantId": SYNTH_TENANT,
        "lifecycleEvent": event,
    }))
}

/// A request body holding `items`.
pub fn body(items: &[&RawValue]) -> bytes::Bytes {
    serde_json::to_vec(&serde_json::json!({ "value": items }))
        .unwrap()
        .into()
}

/// What a [`FakeSink`] does with every publish.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Keep,
    Fail {
        permanent: bool,
    },
    /// Never answers, as a broker that stopped responding.
    Hang,
}

/// A sink in memory: keeps every record it is given, fails every publish, or never answers.
pub struct FakeSink {
    behaviour: Behaviour,
    calls: Mutex<usize>,
    records: Mutex<Vec<Record>>,
}

impl FakeSink {
    pub fn ok() -> Arc<Self> {
        Self::new(Behaviour::Keep)
    }

    pub fn failing(permanent: bool) -> Arc<Self> {
        Self::new(Behaviour::Fail { permanent })
    }

    pub fn hanging() -> Arc<Self> {
        Self::new(Behaviour::Hang)
    }

    fn new(behaviour: Behaviour) -> Arc<Self> {
        Arc::new(FakeSink {
            behaviour,
            calls: Mutex::new(0),
            records: Mutex::new(Vec::new()),
        })
    }

    pub fn calls(&self) -> usize {
        *lock(&self.calls)
    }

    /// The streams of the records published so far, in order.
    pub fn streams(&self) -> Vec<Stream> {
        lock(&self.records).iter().map(|r| r.stream).collect()
    }
}

#[async_trait::async_trait]
impl Sink for FakeSink {
    async fn publish(&self, records: &[Record]) -> Result<(), SinkError> {
        *lock(&self.calls) += 1;
        match self.behaviour {
            Behaviour::Fail { permanent: true } => {
                Err(SinkError::Permanent("fake: refused".into()))
            }
            Behaviour::Fail { permanent: false } => Err(SinkError::Retryable("fake: down".into())),
            Behaviour::Hang => std::future::pending().await,
            Behaviour::Keep => {
                lock(&self.records).extend_from_slice(records);
                Ok(())
            }
        }
    }

    async fn ready(&self) -> Result<(), SinkError> {
        match self.behaviour {
            Behaviour::Keep => Ok(()),
            Behaviour::Fail { permanent: true } => {
                Err(SinkError::Permanent("fake: refused".into()))
            }
            _ => Err(SinkError::Retryable("fake: down".into())),
        }
    }

    fn kind(&self) -> &'static str {
        "fake"
    }
}

/// A pipeline over the synthetic key and `sink`, without tokens or spool.
pub fn pipeline(sink: Arc<FakeSink>, raw_archive: bool) -> Pipeline {
    pipeline_with(sink, raw_archive, None, Metrics::new())
}

/// The same with a spool (whose metrics are `metrics`).
pub fn pipeline_with(
    sink: Arc<FakeSink>,
    raw_archive: bool,
    spool: Option<Arc<Spool>>,
    metrics: Arc<Metrics>,
) -> Pipeline {
    Pipeline::new(
        synthetic_keyring(),
        authenticator(),
        sink,
        metrics,
        PipelineOptions {
            budget: Duration::from_secs(10),
            include_resource: false,
            raw_archive,
            key_cache_entries: 16,
            tokens: None,
            max_items: 100,
            max_json_depth: 64,
            spool,
        },
    )
}
