//! Per-item costs of the stages: parse, authenticate, decrypt (RSA-2048 and RSA-4096, and with
//! a cached key), normalize; and the CPU cost of a whole simulator batch through
//! `Pipeline::process` with one reused key and a sink that drops the records (pass-through
//! without HTTP or a broker). `cargo bench --bench pipeline`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use graphbridge_core::auth::Authenticator;
use graphbridge_core::config::Secret;
use graphbridge_core::crypto::decrypt::{decrypt, decrypt_cached};
use graphbridge_core::crypto::encrypt::Recipient;
use graphbridge_core::crypto::key_cache::KeyCache;
use graphbridge_core::crypto::keyring::{certificate_der, Keyring, PrivateKey};
use graphbridge_core::event::normalize::{message_resource, normalize};
use graphbridge_core::graph::envelope::{ChangeNotification, Envelope};
use graphbridge_core::pipeline::{Pipeline, PipelineOptions};
use graphbridge_core::sink::{Record, Sink, SinkError};
use graphbridge_core::telemetry::Metrics;
use graphbridge_sim::workload::{Workload, WorkloadConfig};

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(path),
    )
    .unwrap()
}

fn key(id: &str, folder: &str) -> PrivateKey {
    let cert = certificate_der(&fixture(&format!("{folder}/certificate.pem"))).unwrap();
    PrivateKey::from_pem(
        id,
        &fixture(&format!("{folder}/private_key.pem")),
        Some(cert),
    )
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let synth_body = fixture("synthetic/chat_notification.json");
    let real_body = fixture("sdk-core-channel-reply/constructed_notification_envelope.json");
    let ring = Keyring::new([
        key("synthetic-cert-2025", "synthetic"),
        key("custom-id-for-testing", "sdk-core-channel-reply"),
    ]);
    fn item(body: &[u8]) -> ChangeNotification<'_> {
        ChangeNotification::parse(Envelope::parse(body).unwrap().value[0]).unwrap()
    }
    let synth = item(&synth_body);
    let real = item(&real_body);

    let mut g = c.benchmark_group("item");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse", |b| b.iter(|| item(&synth_body)));
    let auth = Authenticator::new(
        vec![Secret::new("other"), Secret::new("synthetic-client-state")],
        vec![],
    );
    g.bench_function("authenticate", |b| {
        b.iter_batched(
            || synth.clone(),
            |n| auth.authenticate(n).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let synth_content = synth.encrypted_content.clone().unwrap();
    let real_content = real.encrypted_content.clone().unwrap();
    g.bench_function("decrypt_rsa2048", |b| {
        b.iter(|| decrypt(&ring, &synth_content).unwrap())
    });
    g.bench_function("decrypt_rsa4096", |b| {
        b.iter(|| decrypt(&ring, &real_content).unwrap())
    });
    let cache = KeyCache::new(16);
    g.bench_function("decrypt_cached_key", |b| {
        b.iter(|| decrypt_cached(&ring, &cache, &synth_content).unwrap())
    });
    let plaintext = decrypt(&ring, &real_content).unwrap();
    g.bench_function("normalize", |b| {
        b.iter(|| {
            let (raw, r) = message_resource(&real).unwrap();
            normalize(
                &real,
                raw,
                r,
                Some(&plaintext),
                "2026-01-01T00:00:00Z",
                false,
            )
            .unwrap()
        })
    });
    g.finish();
}

/// A sink that takes every record and keeps nothing: the pipeline's own cost, without a broker.
struct NullSink;

#[async_trait::async_trait]
impl Sink for NullSink {
    async fn publish(&self, records: &[Record]) -> Result<(), SinkError> {
        std::hint::black_box(records);
        Ok(())
    }
    fn kind(&self) -> &'static str {
        "null"
    }
}

/// CPU time of this process (every thread: the reactor and the blocking pool), in nanoseconds:
/// `ProcessUsage` (/proc, 10 ms ticks) is too coarse for criterion's samples.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which we own.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) },
        0
    );
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One simulator batch (50 items, one reused wrapped key) through `Pipeline::process`; the
/// time reported is CPU time over all threads, so items/s below means items per CPU-second.
fn batch(c: &mut Criterion) {
    const ITEMS: usize = 50;
    let der = certificate_der(&fixture("synthetic/certificate.pem")).unwrap();
    let recipient = Recipient::from_certificate("synthetic-cert-2025", &der).unwrap();
    let mut workload = Workload::new(
        WorkloadConfig {
            tenants: 3,
            teams: 20,
            chats: 50,
            bad_fraction: 0.0,
            seed: 7,
            subscription_id: "bench-subscription".into(),
            client_state: "synthetic-client-state".into(),
            reuse_key: true,
            sensitive_fraction: 0.0,
        },
        recipient,
    );
    let bodies: Vec<bytes::Bytes> = (0..20)
        .map(|_| {
            let items: Vec<_> = (0..ITEMS).map(|_| workload.next_item().json).collect();
            serde_json::to_vec(&serde_json::json!({ "value": items }))
                .unwrap()
                .into()
        })
        .collect();
    let keyring = Arc::new(ArcSwap::from_pointee(Keyring::new([key(
        "synthetic-cert-2025",
        "synthetic",
    )])));
    let auth = Authenticator::new(vec![Secret::new("synthetic-client-state")], vec![]);
    let pipeline = Pipeline::new(
        keyring,
        auth,
        Arc::new(NullSink),
        Metrics::new(),
        PipelineOptions {
            budget: Duration::from_secs(10),
            include_resource: false,
            raw_archive: false,
            key_cache_entries: 16,
            tokens: None,
            max_items: 1000,
            max_json_depth: 64,
            spool: None,
        },
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(ITEMS as u64));
    g.bench_function("pass_through_cpu", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = process_cpu();
                for i in 0..iters as usize {
                    let summary = pipeline.process(&bodies[i % bodies.len()]).await.unwrap();
                    assert_eq!(summary.events, ITEMS);
                }
                process_cpu() - start
            })
        })
    });
    g.finish();
}

criterion_group!(pipeline, benches, batch);
criterion_main!(pipeline);
