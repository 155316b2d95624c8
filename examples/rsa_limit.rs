//! The machine's RSA limit: RSA-OAEP private-key operations per second (the bridge's dominant
//! per-notification cost), on one core and on every core at once, with aws-lc-rs.
//!
//! `cargo run --release --example rsa_limit -- [bits] [seconds]` prints JSON.

use std::time::{Duration, Instant};

use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    OAEP_SHA1_MGF1SHA1,
};

fn ops_per_second(key: &OaepPrivateDecryptingKey, ciphertext: &[u8], seconds: f64) -> f64 {
    let mut out = vec![0u8; key.min_output_size()];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs_f64(seconds) {
        key.decrypt(&OAEP_SHA1_MGF1SHA1, ciphertext, &mut out, None)
            .unwrap();
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bits: usize = args.next().map_or(2048, |a| a.parse().expect("bits"));
    let seconds: f64 = args.next().map_or(3.0, |a| a.parse().expect("seconds"));
    let size = if bits == 4096 {
        KeySize::Rsa4096
    } else {
        KeySize::Rsa2048
    };
    let private = PrivateDecryptingKey::generate(size).unwrap();
    let public = OaepPublicEncryptingKey::new(private.public_key()).unwrap();
    let mut ct = vec![0u8; public.ciphertext_size()];
    let ct = public
        .encrypt(&OAEP_SHA1_MGF1SHA1, &[7u8; 32], &mut ct, None)
        .unwrap()
        .to_vec();
    let key = OaepPrivateDecryptingKey::new(private).unwrap();

    let single = ops_per_second(&key, &ct, seconds);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all: f64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cores)
            .map(|_| s.spawn(|| ops_per_second(&key, &ct, seconds)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    println!(
        "{{\"bits\": {bits}, \"cores\": {cores}, \"one_core_ops_per_s\": {single:.0}, \"all_cores_ops_per_s\": {all:.0}, \"per_core_ops_per_s\": {:.0}}}",
        all / cores as f64
    );
}
