//! `graphbridge keys generate`: a fresh RSA key and a self-signed certificate to give Graph.

use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use base64::Engine;

use super::keyring::{pkcs8_der, thumbprint};

/// A generated key pair, ready to be written as `<id>.pem` and `<id>.crt`.
pub struct GeneratedKey {
    pub pkcs8_pem: zeroize::Zeroizing<String>,
    pub certificate_pem: String,
    pub certificate_der: Vec<u8>,
}

impl GeneratedKey {
    /// What goes into a subscription's `encryptionCertificate`: base64 of the DER certificate.
    pub fn encryption_certificate(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.certificate_der)
    }

    pub fn thumbprint(&self) -> String {
        thumbprint(&self.certificate_der)
    }
}

pub fn generate(id: &str, bits: usize) -> Result<GeneratedKey, String> {
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        _ => {
            return Err(format!(
                "unsupported key size {bits}; use 2048, 3072 or 4096"
            ))
        }
    };
    let key = PrivateDecryptingKey::generate(size).map_err(|e| e.to_string())?;
    let pkcs8 = zeroize::Zeroizing::new(pkcs8_der(&key));
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
        &rcgen::PKCS_RSA_SHA256,
    )
    .map_err(|e| e.to_string())?;
    let pkcs8_pem = zeroize::Zeroizing::new(pair.serialize_pem());
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("graphbridge {id}"));
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let cert = params.self_signed(&pair).map_err(|e| e.to_string())?;
    Ok(GeneratedKey {
        pkcs8_pem,
        certificate_pem: cert.pem(),
        certificate_der: cert.der().to_vec(),
    })
}
