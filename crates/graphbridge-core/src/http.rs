//! HTTP clients (reqwest) on the one TLS crypto provider of the whole process: aws-lc-rs, the
//! same that decrypts notifications and serves TLS. reqwest is built without a provider of its
//! own (which would be ring), so every client comes from here, after the provider is installed.

/// Makes aws-lc-rs the process's rustls crypto provider (once; later calls do nothing).
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only when a provider is installed already, which is as good.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// A client builder, the provider installed.
pub fn builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// A client with reqwest's defaults, the provider installed.
pub fn client() -> reqwest::Client {
    builder()
        .build()
        .expect("an HTTP client with default settings")
}

#[cfg(test)]
mod tests {
    #[test]
    fn clients_use_aws_lc() {
        super::client();
        let provider = rustls::crypto::CryptoProvider::get_default().expect("installed");
        let aws_lc = rustls::crypto::aws_lc_rs::default_provider();
        assert_eq!(
            format!("{:?}", provider.cipher_suites),
            format!("{:?}", aws_lc.cipher_suites)
        );
    }
}
