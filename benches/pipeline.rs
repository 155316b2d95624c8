//! Per-item costs of the stages: parse, authenticate, decrypt (RSA-2048 and RSA-4096, and with
//! a cached key), normalize. `cargo bench --bench pipeline`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use graphbridge::auth::Authenticator;
use graphbridge::config::Secret;
use graphbridge::crypto::decrypt::{decrypt, decrypt_cached};
use graphbridge::crypto::key_cache::KeyCache;
use graphbridge::crypto::keyring::{certificate_der, Keyring, PrivateKey};
use graphbridge::event::normalize::{message_resource, normalize};
use graphbridge::graph::envelope::{ChangeNotification, Envelope};

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
    let item =
        |body: &[u8]| ChangeNotification::parse(&Envelope::parse(body).unwrap().value[0]).unwrap();
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

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
