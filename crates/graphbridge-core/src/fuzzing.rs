//! Entry points for the cargo-fuzz targets in `fuzz/` and for `tests/fuzz_corpus.rs`, which
//! replays the committed corpus on every test run. Each must never panic, whatever the input.
//! Built only with the `fuzzing` feature (it embeds the synthetic test key).

use std::sync::OnceLock;

use crate::auth::jwks::Jwks;
use crate::auth::tokens::{TokenPolicy, TokenVerifier};
use crate::crypto::decrypt::decrypt;
use crate::crypto::keyring::{Keyring, PrivateKey};
use crate::event::normalize::{lifecycle, message_resource, normalize};
use crate::graph::envelope::{ChangeNotification, EncryptedContent, Envelope};
use crate::graph::resource;

/// Envelope, limits, each item, and normalization of whatever parses.
pub fn envelope(data: &[u8]) {
    let Ok(env) = Envelope::parse_limited(data, 64, 1000) else {
        return;
    };
    for raw in &env.value {
        let Ok(n) = ChangeNotification::parse(raw) else {
            continue;
        };
        let _ = lifecycle(&n, "2026-01-01T00:00:00Z", 0);
        if let Ok((raw_resource, r)) = message_resource(&n) {
            // The body doubles as an arbitrary "decrypted" chatMessage.
            if let Ok(event) = normalize(
                &n,
                raw_resource,
                r,
                Some(data),
                "2026-01-01T00:00:00Z",
                true,
            ) {
                assert_eq!(event.id.len(), 64);
            }
        }
    }
}

/// Resource strings; a parsed one must have non-empty ids.
pub fn resource(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = resource::parse(s) {
        assert!(!r.message_id.is_empty() && !r.conversation.key().is_empty());
    }
}

fn keyring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(|| {
        let pem = include_bytes!("../../../tests/fixtures/synthetic/private_key.pem");
        Keyring::new([PrivateKey::from_pem("synthetic-cert-2025", pem, None).expect("fixture key")])
    })
}

/// Arbitrary `encryptedContent`: as JSON when it parses, else the bytes as every field, so
/// inputs reach the RSA unwrap, the HMAC check and AES.
pub fn decrypt_content(data: &[u8]) {
    let content = serde_json::from_slice::<EncryptedContent>(data).unwrap_or_else(|_| {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        EncryptedContent {
            data: b64.clone().into(),
            data_key: b64.clone().into(),
            data_signature: b64.into(),
            encryption_certificate_id: "synthetic-cert-2025".into(),
            encryption_certificate_thumbprint: None,
        }
    });
    let _ = decrypt(keyring(), &content);
}

/// Arbitrary tokens against the synthetic JWKS at the vectors' `now`.
pub fn token(data: &[u8]) {
    static STATE: OnceLock<(tokio::runtime::Runtime, TokenVerifier)> = OnceLock::new();
    let (rt, verifier) = STATE.get_or_init(|| {
        let set = serde_json::from_slice(include_bytes!(
            "../../../tests/fixtures/synthetic/jwt_jwks.json"
        ))
        .expect("fixture JWKS");
        let verifier = TokenVerifier::new(
            std::sync::Arc::new(Jwks::from_set(&set)),
            TokenPolicy {
                app_ids: vec!["925bff9f-f6e2-4a69-b858-f71ea2b9b6d0".into()],
                tenants: vec![],
                skew_s: 300,
            },
        );
        (
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            verifier,
        )
    });
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = rt.block_on(verifier.verify(s, 1_750_000_000));
}
