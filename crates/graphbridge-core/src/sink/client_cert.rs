//! A client certificate checked before it is offered to a broker. A broker that refuses an
//! expired or not yet valid certificate only sends a "bad certificate" / "certificate unknown"
//! alert (TLS 1.3 gives the client no reason), so the start says what is wrong instead.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::time::ASN1Time;

/// The first certificate in the PEM file `path` is valid now.
pub fn check(path: &Path) -> Result<(), String> {
    let der = CertificateDer::from_pem_file(path)
        .map_err(|e| format!("client certificate {}: {e}", path.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("client certificate {}: {e}", path.display()))?;
    let validity = cert.validity();
    let now = ASN1Time::now();
    if now > validity.not_after {
        return Err(format!(
            "TLS: the client certificate has expired ({} was valid until {})",
            path.display(),
            validity.not_after
        ));
    }
    if now < validity.not_before {
        return Err(format!(
            "TLS: the client certificate is not valid yet ({} is valid from {})",
            path.display(),
            validity.not_before
        ));
    }
    Ok(())
}
