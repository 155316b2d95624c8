//! Conformance: every vector in shared/vectors (copied to tests/fixtures) decrypts to the exact
//! expected plaintext, via PEM and via PFX, and the tampered one is rejected.

use crate::common;

use common::*;
use graphbridge_core::crypto::decrypt::{decrypt, open_data, unwrap_key, DecryptError};
use graphbridge_core::crypto::keyring::{Keyring, PrivateKey};
use graphbridge_core::graph::envelope::{ChangeNotification, EncryptedContent, Envelope};

/// The vector's content detached from the file's buffer, as the crypto workers get it.
fn content(path: &str) -> EncryptedContent<'static> {
    let bytes = bytes::Bytes::from(read(path));
    serde_json::from_slice::<EncryptedContent>(&bytes)
        .unwrap()
        .detach(&bytes)
}

fn pem_key(id: &str, folder: &str) -> PrivateKey {
    let cert = graphbridge_core::crypto::keyring::certificate_der(&read(&format!(
        "{folder}/certificate.pem"
    )))
    .unwrap();
    PrivateKey::from_pem(id, &read(&format!("{folder}/private_key.pem")), Some(cert)).unwrap()
}

fn hex_file(path: &str) -> Vec<u8> {
    hex::decode(String::from_utf8(read(path)).unwrap().trim()).unwrap()
}

#[test]
fn real_vector_decrypts_via_pem() {
    let key = pem_key(REAL_ID, "sdk-core-channel-reply");
    assert_eq!(key.bits(), 4096);
    assert_eq!(
        key.thumbprint(),
        Some("4B95353E086AD37196606ACF834A14532F03E6DB")
    );
    let c = content("sdk-core-channel-reply/encryptedContent.json");
    let sym = unwrap_key(&key, &c.data_key).unwrap();
    assert_eq!(
        sym.to_vec(),
        hex_file("sdk-core-channel-reply/symmetric_key.hex")
    );
    assert_eq!(
        sym[..16].to_vec(),
        hex_file("sdk-core-channel-reply/iv.hex")
    );
    let plain = decrypt(&Keyring::new([key]), &c).unwrap();
    assert_eq!(
        plain,
        read("sdk-core-channel-reply/expected_plaintext.json")
    );
    assert_eq!(plain.len(), 1297);
}

#[test]
fn real_vector_decrypts_via_legacy_pfx() {
    let password = String::from_utf8(read("sdk-core-channel-reply/pfx_password.txt")).unwrap();
    let key = PrivateKey::from_pfx(
        REAL_ID,
        &read("sdk-core-channel-reply/certificate.pfx"),
        password.trim(),
    )
    .unwrap();
    assert_eq!(
        key.thumbprint(),
        Some("4B95353E086AD37196606ACF834A14532F03E6DB")
    );
    let plain = decrypt(
        &Keyring::new([key]),
        &content("sdk-core-channel-reply/encryptedContent.json"),
    )
    .unwrap();
    assert_eq!(
        plain,
        read("sdk-core-channel-reply/expected_plaintext.json")
    );
}

#[test]
fn pfx_with_wrong_password_is_a_clear_error() {
    let err = PrivateKey::from_pfx(
        REAL_ID,
        &read("sdk-core-channel-reply/certificate.pfx"),
        "nope",
    )
    .unwrap_err();
    assert!(err.contains("password"), "{err}");
}

#[test]
fn keys_dir_loads_pem_pkcs1_and_pfx_with_password_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("sdk-core-channel-reply/certificate.pfx"),
        dir.path().join("from-pfx.pfx"),
    )
    .unwrap();
    std::fs::copy(
        fixture("sdk-core-channel-reply/pfx_password.txt"),
        dir.path().join("from-pfx.password"),
    )
    .unwrap();
    // PKCS#1 form of the synthetic key, written by openssl-compatible tooling.
    let pkcs8 = pem::parse(read("synthetic/private_key.pem")).unwrap();
    let pkcs1 = graphbridge_core::crypto::keyring::pkcs8_to_pkcs1(pkcs8.contents()).unwrap();
    std::fs::write(
        dir.path().join(format!("{SYNTH_ID}.pem")),
        pem::encode(&pem::Pem::new("RSA PRIVATE KEY", pkcs1)),
    )
    .unwrap();
    std::fs::write(dir.path().join("README.txt"), "ignored").unwrap();
    let ring = Keyring::load_dir(dir.path(), None).unwrap();
    assert_eq!(ring.len(), 2);
    let plain = decrypt(&ring, &content("synthetic/chat_encryptedContent.json")).unwrap();
    assert_eq!(plain, read("synthetic/chat_expected_plaintext.json"));
    assert_eq!(ring.get("from-pfx").unwrap().bits(), 4096);
}

#[test]
fn bad_key_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = Keyring::load_dir(dir.path(), None).unwrap_err().to_string();
    assert!(err.contains("broken.pem"), "{err}");
    let err = Keyring::load_dir(&dir.path().join("missing"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn synthetic_chat_vector_decrypts() {
    let key = pem_key(SYNTH_ID, "synthetic");
    let c = content("synthetic/chat_encryptedContent.json");
    assert_eq!(
        unwrap_key(&key, &c.data_key).unwrap().to_vec(),
        hex_file("synthetic/chat_symmetric_key.hex")
    );
    let plain = decrypt(&Keyring::new([key]), &c).unwrap();
    assert_eq!(plain, read("synthetic/chat_expected_plaintext.json"));
    assert!(String::from_utf8(plain).unwrap().contains("héllo ✓"));
}

#[test]
fn tampered_vector_fails_the_signature_check() {
    let ring = Keyring::new([pem_key(SYNTH_ID, "synthetic")]);
    let c = content("synthetic/chat_encryptedContent_TAMPERED_must_fail.json");
    assert_eq!(
        decrypt(&ring, &c).unwrap_err(),
        DecryptError::SignatureMismatch
    );
}

#[test]
fn verification_happens_before_decryption() {
    // A signature over different bytes must fail even when the ciphertext itself is intact.
    let key = pem_key(SYNTH_ID, "synthetic");
    let c = content("synthetic/chat_encryptedContent.json");
    let sym = unwrap_key(&key, &c.data_key).unwrap();
    let other = content("sdk-core-channel-reply/encryptedContent.json");
    assert_eq!(
        open_data(&sym, &c.data, &other.data_signature).unwrap_err(),
        DecryptError::SignatureMismatch
    );
}

#[test]
fn unknown_certificate_and_thumbprint_mismatch() {
    let ring = Keyring::new([pem_key(SYNTH_ID, "synthetic")]);
    let mut c = content("synthetic/chat_encryptedContent.json");
    c.encryption_certificate_thumbprint = Some("00".repeat(20).into());
    assert!(matches!(
        decrypt(&ring, &c),
        Err(DecryptError::ThumbprintMismatch(_))
    ));
    c.encryption_certificate_id = "nobody".into();
    assert_eq!(
        decrypt(&ring, &c).unwrap_err(),
        DecryptError::UnknownCertificate("nobody".into())
    );
}

#[test]
fn envelopes_parse_with_lenient_fields() {
    for path in [
        "sdk-core-channel-reply/constructed_notification_envelope.json",
        "synthetic/chat_notification.json",
    ] {
        let body = read(path);
        let env = Envelope::parse(&body).unwrap();
        assert_eq!(env.value.len(), 1);
        let n = ChangeNotification::parse(env.value[0]).unwrap();
        assert!(n.encrypted_content.is_some() && n.resource.is_some());
    }
}

#[test]
fn graph_side_encryption_roundtrips() {
    let recipient = synthetic_recipient();
    let ring = Keyring::new([pem_key(SYNTH_ID, "synthetic")]);
    let c = recipient.encrypt("{\"id\":\"1\"}".as_bytes());
    assert_eq!(decrypt(&ring, &c).unwrap(), b"{\"id\":\"1\"}");
}

#[test]
fn key_cache_skips_rsa_but_never_the_signature_check() {
    use graphbridge_core::crypto::decrypt::decrypt_cached;
    use graphbridge_core::crypto::key_cache::KeyCache;
    let ring = Keyring::new([pem_key(SYNTH_ID, "synthetic")]);
    let cache = KeyCache::new(16);
    let c = content("synthetic/chat_encryptedContent.json");
    let expected = read("synthetic/chat_expected_plaintext.json");
    assert_eq!(decrypt_cached(&ring, &cache, &c).unwrap(), expected);
    assert_eq!(cache.len(), 1);
    assert_eq!(
        decrypt_cached(&ring, &cache, &c).unwrap(),
        expected,
        "served from the cache"
    );
    // Same dataKey (a cache hit), tampered data: still rejected.
    let tampered = content("synthetic/chat_encryptedContent_TAMPERED_must_fail.json");
    assert_eq!(tampered.data_key, c.data_key);
    assert_eq!(
        decrypt_cached(&ring, &cache, &tampered).unwrap_err(),
        DecryptError::SignatureMismatch
    );
    // A tampered item never enters the cache.
    let fresh = KeyCache::new(16);
    assert!(decrypt_cached(&ring, &fresh, &tampered).is_err());
    assert!(fresh.is_empty());
}
