//! Decrypting `encryptedContent` exactly as Graph produces it (graph-protocol.md §4):
//! RSA-OAEP(SHA-1, MGF1-SHA1) unwraps a 32-byte key; HMAC-SHA256 over the decoded data is
//! verified in constant time *before* AES-256-CBC/PKCS7 with IV = key[0..16].
//!
//! Everything here is CPU-bound and synchronous: callers run it off the async reactor.

use aws_lc_rs::cipher::{PaddedBlockDecryptingKey, UnboundCipherKey, AES_256};
use aws_lc_rs::hmac;
use aws_lc_rs::rsa::OAEP_SHA1_MGF1SHA1;
use zeroize::Zeroizing;

use super::key_cache::{fingerprint, Digest, KeyCache};
use super::keyring::{Keyring, PrivateKey};
use crate::graph::envelope::EncryptedContent;

/// Why an `encryptedContent` could not be turned into plaintext. Every variant is permanent:
/// retrying the same bytes cannot succeed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecryptError {
    #[error("no private key for encryptionCertificateId {0:?}")]
    UnknownCertificate(String),
    #[error("encryptionCertificateThumbprint does not match the certificate for id {0:?}")]
    ThumbprintMismatch(String),
    #[error("{0} is not valid base64")]
    BadBase64(&'static str),
    #[error("dataKey could not be unwrapped with the private key")]
    KeyUnwrap,
    #[error("unwrapped symmetric key has {0} bytes, expected 32")]
    KeyLength(usize),
    #[error("dataSignature does not match the data (tampered or wrong key)")]
    SignatureMismatch,
    #[error("data could not be decrypted (bad padding)")]
    Cipher,
}

impl DecryptError {
    /// Short, stable label for metrics and dead letters.
    pub fn reason(&self) -> &'static str {
        match self {
            DecryptError::UnknownCertificate(_) => "unknown_certificate",
            DecryptError::ThumbprintMismatch(_) => "thumbprint_mismatch",
            DecryptError::BadBase64(_) => "bad_base64",
            DecryptError::KeyUnwrap | DecryptError::KeyLength(_) => "key_unwrap_failed",
            DecryptError::SignatureMismatch => "signature_mismatch",
            DecryptError::Cipher => "decrypt_failed",
        }
    }
}

/// The 32-byte symmetric key Graph wrapped in `dataKey`; wiped on drop.
pub type SymmetricKey = Zeroizing<[u8; 32]>;

fn b64(field: &'static str, s: &str) -> Result<Vec<u8>, DecryptError> {
    base64_simd::STANDARD
        .decode_to_vec(s.trim())
        .map_err(|_| DecryptError::BadBase64(field))
}

/// Finds the key for the content's certificate id and checks the thumbprint when both sides have one.
pub fn select_key<'k>(
    keyring: &'k Keyring,
    content: &EncryptedContent,
) -> Result<&'k PrivateKey, DecryptError> {
    let key = keyring
        .get(&content.encryption_certificate_id)
        .ok_or_else(|| {
            DecryptError::UnknownCertificate(content.encryption_certificate_id.to_string())
        })?;
    if let (Some(expected), Some(got)) = (
        key.thumbprint(),
        content.encryption_certificate_thumbprint.as_deref(),
    ) {
        if !expected.eq_ignore_ascii_case(got.trim()) {
            return Err(DecryptError::ThumbprintMismatch(
                content.encryption_certificate_id.to_string(),
            ));
        }
    }
    Ok(key)
}

/// RSA-OAEP(SHA-1/MGF1-SHA1) unwrap of `dataKey`: the expensive step (~1 ms at 2048 bits).
pub fn unwrap_key(key: &PrivateKey, data_key_b64: &str) -> Result<SymmetricKey, DecryptError> {
    let wrapped = b64("dataKey", data_key_b64)?;
    let oaep = key.oaep();
    let mut out = Zeroizing::new(vec![0u8; oaep.min_output_size()]);
    let plain = oaep
        .decrypt(&OAEP_SHA1_MGF1SHA1, &wrapped, &mut out, None)
        .map_err(|_| DecryptError::KeyUnwrap)?;
    let bytes: [u8; 32] = (&*plain)
        .try_into()
        .map_err(|_| DecryptError::KeyLength(plain.len()))?;
    Ok(Zeroizing::new(bytes))
}

/// Verifies the HMAC over the decoded data, then AES-256-CBC decrypts it.
pub fn open_data(
    symmetric: &[u8; 32],
    data_b64: &str,
    signature_b64: &str,
) -> Result<Vec<u8>, DecryptError> {
    let mut data = b64("data", data_b64)?;
    let signature = b64("dataSignature", signature_b64)?;
    let mac_key = hmac::Key::new(hmac::HMAC_SHA256, symmetric);
    // Constant-time comparison inside aws-lc-rs; nothing is decrypted before this passes.
    hmac::verify(&mac_key, &data, &signature).map_err(|_| DecryptError::SignatureMismatch)?;

    let iv: [u8; 16] = symmetric[..16].try_into().expect("16 of 32 bytes");
    let cipher_key =
        UnboundCipherKey::new(&AES_256, symmetric).map_err(|_| DecryptError::Cipher)?;
    let decrypting =
        PaddedBlockDecryptingKey::cbc_pkcs7(cipher_key).map_err(|_| DecryptError::Cipher)?;
    let context = aws_lc_rs::cipher::DecryptionContext::Iv128(iv.into());
    let len = decrypting
        .decrypt(&mut data, context)
        .map_err(|_| DecryptError::Cipher)?
        .len();
    data.truncate(len);
    Ok(data)
}

/// The whole §4 algorithm: select key, unwrap, verify, decrypt. Returns the plaintext bytes.
pub fn decrypt(keyring: &Keyring, content: &EncryptedContent) -> Result<Vec<u8>, DecryptError> {
    decrypt_cached(keyring, &KeyCache::new(0), content)
}

/// [`decrypt`] with a cache of unwrapped keys: a repeated `dataKey` skips the RSA operation;
/// the HMAC is verified either way, and only verified keys are cached.
pub fn decrypt_cached(
    keyring: &Keyring,
    cache: &KeyCache,
    content: &EncryptedContent,
) -> Result<Vec<u8>, DecryptError> {
    let fp = fingerprint(&content.encryption_certificate_id, &content.data_key);
    let key = data_key(keyring, cache, content, &fp)?;
    open_with(cache, content, &fp, key)
}

/// A content's symmetric key: from the cache, or just unwrapped with RSA and not yet proven by
/// the HMAC, so not cached yet.
pub struct DataKey {
    key: SymmetricKey,
    unwrapped: bool,
}

/// The first half of [`decrypt_cached`], for a caller that already has the content's
/// [`fingerprint`] (the pipeline looks the key up first, to choose the thread that opens the
/// item, and runs a chunk's RSA operations back to back): the content's key, from the cache
/// or unwrapped with RSA (the expensive step), after the certificate checks.
pub fn data_key(
    keyring: &Keyring,
    cache: &KeyCache,
    content: &EncryptedContent,
    fp: &Digest,
) -> Result<DataKey, DecryptError> {
    let private = select_key(keyring, content)?;
    Ok(match cache.get(fp) {
        Some(key) => DataKey {
            key,
            unwrapped: false,
        },
        None => DataKey {
            key: unwrap_key(private, &content.data_key)?,
            unwrapped: true,
        },
    })
}

/// The second half: verifies and decrypts the data with the key from [`data_key`]; a freshly
/// unwrapped key is cached once the HMAC proved it.
pub fn open_with(
    cache: &KeyCache,
    content: &EncryptedContent,
    fp: &Digest,
    key: DataKey,
) -> Result<Vec<u8>, DecryptError> {
    let plaintext = open_data(&key.key, &content.data, &content.data_signature)?;
    if key.unwrapped {
        cache.insert(*fp, &key.key);
    }
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// The SIMD decoder accepts exactly what the `base64` crate's strict standard engine
    /// accepts (padding required, canonical trailing bits, no URL-safe alphabet or inner
    /// whitespace), and decodes to the same bytes.
    #[test]
    fn base64_is_as_strict_as_the_standard_engine() {
        let inputs = [
            "",
            "QQ==",
            "QR==",
            "QQ=",
            "QQ",
            "QUI=",
            "QUJD",
            "QUJ",
            "Q===",
            "QUJD\nRA==",
            "QUJD RA==",
            "a-_b",
            "a+/b",
            " QUJD ",
            "QUJD====",
            "=QUJ",
            "QU=J",
            "AAEC/w==",
            "AAEC_w==",
        ];
        for input in inputs {
            let reference = base64::engine::general_purpose::STANDARD
                .decode(input.trim())
                .ok();
            assert_eq!(b64("data", input).ok(), reference, "{input:?}");
        }
    }
}
