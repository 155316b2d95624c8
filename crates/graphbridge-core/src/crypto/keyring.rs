//! The keyring: every private key Graph may reference, by `encryptionCertificateId`.
//!
//! A keys directory holds one key per file named after its id, so a Kubernetes secret mounts
//! as the directory and rotation is adding a file:
//! - `<id>.pem`: PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`), optionally followed by
//!   the `CERTIFICATE`;
//! - `<id>.pfx` / `<id>.p12`: PKCS#12 with password from `<id>.password` beside it or the
//!   configured default (legacy RC2-40/3DES bags load, as Graph's own samples use them);
//! - `<id>.crt`, `<id>.cer`, `<id>.cert.pem` or `<id>.crt.pem` (PEM or DER) beside a `.pem`
//!   supplies the certificate for the thumbprint check.
//!
//! A `.pem` holding only certificates is a certificate, not a key. Other files are skipped with
//! a warning (Kubernetes' hidden `..data` entries silently); a key file that does not parse is an
//! error, since a half-loaded keyring would dead-letter notifications for the missing key.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{OaepPrivateDecryptingKey, PrivateDecryptingKey};
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::CertificateDer;

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("keys directory {0} does not exist or is not a directory")]
    MissingDir(PathBuf),
    #[error("cannot read {0}: {1}")]
    Unreadable(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    BadKey(PathBuf, String),
}

/// One RSA private key and, when known, its certificate.
pub struct PrivateKey {
    id: String,
    oaep: OaepPrivateDecryptingKey,
    bits: usize,
    certificate_der: Option<Vec<u8>>,
    thumbprint: Option<String>,
}

impl fmt::Debug for PrivateKey {
    // Never print key material: id, size and thumbprint identify a key well enough.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("id", &self.id)
            .field("bits", &self.bits)
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// Uppercase hex SHA-1 of a DER certificate: Graph's `encryptionCertificateThumbprint`.
pub fn thumbprint(certificate_der: &[u8]) -> String {
    hex::encode_upper(digest::digest(
        &digest::SHA1_FOR_LEGACY_USE_ONLY,
        certificate_der,
    ))
}

impl PrivateKey {
    /// Builds a key from PKCS#8 DER, with an optional DER certificate.
    pub fn from_pkcs8(
        id: &str,
        pkcs8: &[u8],
        certificate_der: Option<Vec<u8>>,
    ) -> Result<Self, String> {
        let key = PrivateDecryptingKey::from_pkcs8(pkcs8)
            .map_err(|e| format!("not an RSA private key (2048-8192 bits): {e}"))?;
        let bits = key.key_size_bits();
        if !(2048..=4096).contains(&bits) {
            return Err(format!("RSA key of {bits} bits; Graph uses 2048 to 4096"));
        }
        let oaep = OaepPrivateDecryptingKey::new(key).map_err(|e| e.to_string())?;
        Ok(PrivateKey {
            id: id.to_string(),
            oaep,
            bits,
            thumbprint: certificate_der.as_deref().map(thumbprint),
            certificate_der,
        })
    }

    /// Parses a PEM file's text: a private key block and an optional certificate block.
    pub fn from_pem(
        id: &str,
        text: &[u8],
        certificate_der: Option<Vec<u8>>,
    ) -> Result<Self, String> {
        // Sections PEM parsing does not know (an encrypted key among them) are skipped: name it.
        if memchr::memmem::find(text, b"-----BEGIN ENCRYPTED PRIVATE KEY-----").is_some() {
            return Err("encrypted PEM keys are not supported; use a .pfx with a password".into());
        }
        let mut certificate = certificate_der;
        let mut pkcs8 = None;
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(text) {
            let (kind, der) = section.map_err(|e| format!("invalid PEM: {e}"))?;
            let der = zeroize::Zeroizing::new(der);
            match kind {
                SectionKind::PrivateKey => pkcs8 = Some(der),
                SectionKind::RsaPrivateKey => {
                    pkcs8 = Some(zeroize::Zeroizing::new(pkcs1_to_pkcs8(&der)))
                }
                SectionKind::Certificate if certificate.is_none() => {
                    certificate = Some(der.to_vec())
                }
                _ => {}
            }
        }
        let pkcs8 = pkcs8.ok_or("no PRIVATE KEY or RSA PRIVATE KEY block")?;
        Self::from_pkcs8(id, &pkcs8, certificate)
    }

    /// Opens a PKCS#12 archive with its password; the first key bag and certificate are used.
    pub fn from_pfx(id: &str, der: &[u8], password: &str) -> Result<Self, String> {
        let pfx = p12::PFX::parse(der).map_err(|e| format!("invalid PKCS#12: {e:?}"))?;
        if !pfx.verify_mac(password) {
            return Err("wrong PKCS#12 password (MAC check failed)".into());
        }
        let keys = pfx
            .key_bags(password)
            .map_err(|e| format!("cannot decrypt PKCS#12 key: {e:?}"))?;
        let pkcs8 = zeroize::Zeroizing::new(
            keys.into_iter()
                .next()
                .ok_or("PKCS#12 holds no private key")?,
        );
        let certificate = pfx
            .cert_x509_bags(password)
            .map_err(|e| format!("cannot read PKCS#12 certificate: {e:?}"))?
            .into_iter()
            .next();
        Self::from_pkcs8(id, &pkcs8, certificate)
    }

    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn bits(&self) -> usize {
        self.bits
    }
    pub fn thumbprint(&self) -> Option<&str> {
        self.thumbprint.as_deref()
    }
    pub fn certificate_der(&self) -> Option<&[u8]> {
        self.certificate_der.as_deref()
    }
    pub(crate) fn oaep(&self) -> &OaepPrivateDecryptingKey {
        &self.oaep
    }
}

/// Wraps a PKCS#1 RSAPrivateKey into a PKCS#8 PrivateKeyInfo, the form aws-lc-rs loads.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    const RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(0);
            w.next().write_sequence(|w| {
                w.next()
                    .write_oid(&yasna::models::ObjectIdentifier::from_slice(RSA_ENCRYPTION));
                w.next().write_null();
            });
            w.next().write_bytes(pkcs1);
        })
    })
}

/// The inner PKCS#1 RSAPrivateKey of a PKCS#8 PrivateKeyInfo.
pub fn pkcs8_to_pkcs1(pkcs8: &[u8]) -> Option<Vec<u8>> {
    yasna::parse_der(pkcs8, |r| {
        r.read_sequence(|r| {
            r.next().read_u8()?;
            r.next().read_sequence(|r| {
                r.next().read_oid()?;
                r.next().read_null()
            })?;
            r.next().read_bytes()
        })
    })
    .ok()
}

/// Every loaded key, by certificate id.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: HashMap<String, PrivateKey>,
}

impl Keyring {
    pub fn new(keys: impl IntoIterator<Item = PrivateKey>) -> Self {
        Keyring {
            keys: keys.into_iter().map(|k| (k.id.clone(), k)).collect(),
        }
    }

    pub fn get(&self, id: &str) -> Option<&PrivateKey> {
        self.keys.get(id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Loads every key file in `dir`. Any unreadable or invalid key file is an error naming the
    /// file: a half-loaded keyring would silently dead-letter notifications for the missing key.
    pub fn load_dir(dir: &Path, default_password: Option<&Secret>) -> Result<Self, KeyringError> {
        if !dir.is_dir() {
            return Err(KeyringError::MissingDir(dir.to_path_buf()));
        }
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| KeyringError::Unreadable(p.to_path_buf(), e));
        let entries =
            std::fs::read_dir(dir).map_err(|e| KeyringError::Unreadable(dir.to_path_buf(), e))?;
        let mut keys = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| KeyringError::Unreadable(dir.to_path_buf(), e))?
                .path();
            let (Some(stem), Some(ext)) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            if stem.starts_with('.') || !path.is_file() {
                continue;
            }
            let key = match ext {
                "pem" => {
                    let text = read(&path)?;
                    if holds_only_certificates(&text) {
                        // `<id>.cert.pem`, or a TLS secret's certificate: not a key to load.
                        tracing::debug!(file = %path.display(), "keys directory: a certificate, not a key");
                        continue;
                    }
                    let cert = match companion_certificate(&path) {
                        Some(cert_path) => Some(
                            certificate_der(&read(&cert_path)?)
                                .map_err(|e| KeyringError::BadKey(cert_path.clone(), e))?,
                        ),
                        None => None,
                    };
                    PrivateKey::from_pem(stem, &text, cert)
                }
                "pfx" | "p12" => {
                    let pw_path = path.with_extension("password");
                    let password = if pw_path.is_file() {
                        let raw = read(&pw_path)?;
                        String::from_utf8_lossy(&raw)
                            .trim_end_matches(['\r', '\n'])
                            .to_string()
                    } else {
                        default_password
                            .map(|s| s.expose().to_string())
                            .unwrap_or_default()
                    };
                    PrivateKey::from_pfx(stem, &read(&path)?, &password)
                }
                // Certificates and passwords: read beside the key they belong to.
                "crt" | "cer" | "password" => continue,
                _ => {
                    tracing::warn!(
                        file = %path.display(),
                        "keys directory: ignoring a file that is neither a key (.pem, .pfx, .p12) nor a certificate (.crt, .cer)"
                    );
                    continue;
                }
            }
            .map_err(|e| KeyringError::BadKey(path.clone(), e))?;
            keys.push(key);
        }
        Ok(Keyring::new(keys))
    }
}

/// A PEM file with certificates and no key block: a certificate file, whatever its name says.
fn holds_only_certificates(text: &[u8]) -> bool {
    let mut kinds = <(SectionKind, Vec<u8>)>::pem_slice_iter(text).map(|s| s.map(|(k, _)| k));
    let mut any = false;
    kinds.all(|k| {
        any = true;
        matches!(k, Ok(SectionKind::Certificate))
    }) && any
}

/// The certificate file beside key `<id>.pem`: `<id>.crt`, `<id>.cer`, `<id>.cert.pem` or
/// `<id>.crt.pem`.
fn companion_certificate(key: &Path) -> Option<PathBuf> {
    ["crt", "cer", "cert.pem", "crt.pem"]
        .iter()
        .map(|ext| key.with_extension(ext))
        .find(|p| p.is_file())
}

/// Accepts a certificate as PEM or raw DER.
pub fn certificate_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.starts_with(b"-----") {
        let der = CertificateDer::from_pem_slice(bytes)
            .map_err(|e| format!("invalid certificate PEM: {e}"))?;
        Ok(der.to_vec())
    } else {
        Ok(bytes.to_vec())
    }
}

/// PKCS#8 DER of a key, for writing generated keys.
pub fn pkcs8_der(key: &PrivateDecryptingKey) -> Vec<u8> {
    key.as_der()
        .map(|d| d.as_ref().to_vec())
        .expect("aws-lc-rs serializes its own RSA keys")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::pipeline::test_support::{fixture, SYNTH_ID};

    /// Loads `dir` and returns the keyring and what was logged at WARN and above.
    fn load_logged(dir: &Path) -> (Result<Keyring, KeyringError>, String) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let log = log.clone();
            move || LogWriter(log.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(writer)
            .finish();
        let ring = tracing::subscriber::with_default(subscriber, || Keyring::load_dir(dir, None));
        let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
        (ring, text)
    }

    struct LogWriter(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for LogWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn certificate_files_are_certificates_and_other_files_are_skipped_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let cert = fixture("synthetic/certificate.pem");
        std::fs::write(
            dir.path().join(format!("{SYNTH_ID}.pem")),
            fixture("synthetic/private_key.pem"),
        )
        .unwrap();
        // The key's certificate under a name tools use, and a TLS secret's pair beside it.
        std::fs::write(dir.path().join(format!("{SYNTH_ID}.cert.pem")), &cert).unwrap();
        std::fs::write(dir.path().join("tls.crt"), &cert).unwrap();
        std::fs::write(dir.path().join("ca.pem"), &cert).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a key").unwrap();

        let (ring, log) = load_logged(dir.path());
        let ring = ring.expect("certificate files do not stop the load");
        assert_eq!(ring.ids().collect::<Vec<_>>(), [SYNTH_ID]);
        assert_eq!(
            ring.get(SYNTH_ID).unwrap().thumbprint(),
            Some(thumbprint(&certificate_der(&cert).unwrap()).as_str()),
            "<id>.cert.pem is the key's certificate"
        );
        assert!(log.contains("notes.txt"), "{log}");
        assert!(!log.contains("tls.crt") && !log.contains("ca.pem"), "{log}");
    }

    #[test]
    fn a_pem_that_is_neither_key_nor_certificate_is_still_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("public.pem"),
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let err = Keyring::load_dir(dir.path(), None).unwrap_err().to_string();
        assert!(
            err.contains("public.pem") && err.contains("no PRIVATE KEY"),
            "{err}"
        );
    }
}
