//! Graph's side of §4: how Graph encrypts a resource for a subscription's certificate.
//! Used by the simulator, the demo and the tests; `serve` never encrypts.

use aws_lc_rs::cipher::{PaddedBlockEncryptingKey, UnboundCipherKey, AES_256};
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA1_MGF1SHA1};
use aws_lc_rs::{hmac, rand};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::keyring::thumbprint;
use crate::graph::envelope::EncryptedContent;

/// A subscription's `encryptionCertificate` as Graph holds it: an id and a public key.
pub struct Recipient {
    id: String,
    thumbprint: String,
    public: OaepPublicEncryptingKey,
}

impl Recipient {
    /// From the DER certificate given to Graph in `encryptionCertificate`.
    pub fn from_certificate(id: &str, certificate_der: &[u8]) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(certificate_der)
            .map_err(|e| format!("invalid certificate: {e}"))?;
        let spki = cert.tbs_certificate.subject_pki.raw;
        let public =
            PublicEncryptingKey::from_der(spki).map_err(|e| format!("not an RSA key: {e}"))?;
        Ok(Recipient {
            id: id.to_string(),
            thumbprint: thumbprint(certificate_der),
            public: OaepPublicEncryptingKey::new(public).map_err(|e| e.to_string())?,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts `plaintext` with a fresh random symmetric key, exactly as Graph does.
    pub fn encrypt(&self, plaintext: &[u8]) -> EncryptedContent<'static> {
        let mut symmetric = zeroize::Zeroizing::new([0u8; 32]);
        rand::fill(symmetric.as_mut()).expect("system RNG");
        self.encrypt_with_key(&symmetric, plaintext)
    }

    /// Deterministic form for tests: the caller picks the symmetric key.
    pub fn encrypt_with_key(
        &self,
        symmetric: &[u8; 32],
        plaintext: &[u8],
    ) -> EncryptedContent<'static> {
        self.encrypt_with_wrapped_key(symmetric, &self.wrap_key(symmetric), plaintext)
    }

    /// RSA-OAEP(SHA-1) wrap of a symmetric key, base64: Graph's `dataKey`.
    pub fn wrap_key(&self, symmetric: &[u8; 32]) -> String {
        let mut wrapped = vec![0u8; self.public.ciphertext_size()];
        let wrapped = self
            .public
            .encrypt(&OAEP_SHA1_MGF1SHA1, symmetric, &mut wrapped, None)
            .expect("OAEP wrap of 32 bytes");
        B64.encode(wrapped)
    }

    /// Encrypts with a key already wrapped by [`Self::wrap_key`] (the load generator reuses one
    /// to measure the bridge without RSA cost).
    pub fn encrypt_with_wrapped_key(
        &self,
        symmetric: &[u8; 32],
        data_key: &str,
        plaintext: &[u8],
    ) -> EncryptedContent<'static> {
        let iv: [u8; 16] = symmetric[..16].try_into().expect("16 of 32 bytes");
        let key = UnboundCipherKey::new(&AES_256, symmetric).expect("32-byte AES key");
        let encrypting = PaddedBlockEncryptingKey::cbc_pkcs7(key).expect("CBC key");
        let mut data = plaintext.to_vec();
        encrypting
            .less_safe_encrypt(
                &mut data,
                aws_lc_rs::cipher::EncryptionContext::Iv128(iv.into()),
            )
            .expect("AES-CBC encryption");
        let signature = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, symmetric), &data);
        EncryptedContent {
            data: B64.encode(&data).into(),
            data_key: data_key.to_string().into(),
            data_signature: B64.encode(signature.as_ref()).into(),
            encryption_certificate_id: self.id.clone().into(),
            encryption_certificate_thumbprint: Some(self.thumbprint.clone().into()),
        }
    }
}
