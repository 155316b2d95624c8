//! OAuth2 client credentials against Microsoft Entra (or a stand-in): a client secret or a
//! certificate (signed JWT client assertion). Tokens are cached until shortly before they
//! expire, so the controller asks for one about once an hour, not once per call.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;
use tokio::sync::Mutex;

use graphbridge_core::config::subscriptions::GraphAuthConfig;
use graphbridge_core::config::Secret;

pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Renew a cached token this long before it expires (clock skew, request time).
const EARLY: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("graph.auth: {0}")]
    Config(String),
    #[error("cannot read {0}: {1}")]
    Unreadable(String, std::io::Error),
    #[error("graph.auth certificate: {0}")]
    Certificate(String),
    /// The authority refused the credentials: not retryable until the configuration changes.
    #[error(
        "token request to {url} for client {client_id} refused ({status}): {error}: {description}"
    )]
    Rejected {
        url: String,
        client_id: String,
        status: u16,
        error: String,
        description: String,
    },
    #[error("token request to {url} failed: {detail}")]
    Unavailable { url: String, detail: String },
}

impl OAuthError {
    /// Whether trying again later may help (network, 5xx), as opposed to fixing the config.
    pub fn retryable(&self) -> bool {
        matches!(self, OAuthError::Unavailable { .. })
    }
}

enum Credential {
    Secret(Secret),
    Certificate {
        key: jsonwebtoken::EncodingKey,
        /// base64url SHA-256 and SHA-1 of the DER certificate: how Entra finds the key.
        x5t_s256: String,
        x5t: String,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Secret(_) => f.write_str("Secret(<redacted>)"),
            Credential::Certificate { x5t_s256, .. } => {
                write!(f, "Certificate {{ x5t#S256: {x5t_s256} }}")
            }
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize, Default)]
struct TokenErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// Tokens for one tenant.
#[derive(Debug)]
pub struct TokenSource {
    token_url: String,
    client_id: String,
    credential: Credential,
    http: reqwest::Client,
    cached: Mutex<Option<(Secret, Instant)>>,
}

fn read(path: &Path) -> Result<Vec<u8>, OAuthError> {
    std::fs::read(path).map_err(|e| OAuthError::Unreadable(path.display().to_string(), e))
}

fn certificate_credential(cert: &Path, key: &Path) -> Result<Credential, OAuthError> {
    let der = graphbridge_core::crypto::keyring::certificate_der(&read(cert)?)
        .map_err(OAuthError::Certificate)?;
    x509_parser::parse_x509_certificate(&der)
        .map_err(|e| OAuthError::Certificate(format!("{}: {e}", cert.display())))?;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&read(key)?)
        .map_err(|e| OAuthError::Certificate(format!("{}: {e}", key.display())))?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let sha = |alg| b64.encode(aws_lc_rs::digest::digest(alg, &der));
    Ok(Credential::Certificate {
        key,
        x5t_s256: sha(&aws_lc_rs::digest::SHA256),
        x5t: sha(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY),
    })
}

impl TokenSource {
    pub fn new(
        cfg: &GraphAuthConfig,
        tenant: &str,
        http: reqwest::Client,
    ) -> Result<Self, OAuthError> {
        let client_id = cfg
            .client_id
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| OAuthError::Config("client_id is required".into()))?;
        let credential = match (
            &cfg.client_secret,
            &cfg.client_secret_file,
            &cfg.certificate_file,
            &cfg.private_key_file,
        ) {
            (Some(s), None, None, None) => Credential::Secret(s.clone()),
            (None, Some(path), None, None) => {
                let raw = read(path)?;
                let s = String::from_utf8_lossy(&raw)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
                Credential::Secret(Secret::new(s))
            }
            (None, None, Some(cert), Some(key)) => certificate_credential(cert, key)?,
            _ => {
                return Err(OAuthError::Config(
                    "set exactly one credential: client_secret, client_secret_file, or certificate_file with private_key_file".into(),
                ))
            }
        };
        Ok(TokenSource {
            token_url: format!(
                "{}/{tenant}/oauth2/v2.0/token",
                cfg.authority.trim_end_matches('/')
            ),
            client_id,
            credential,
            http,
            cached: Mutex::new(None),
        })
    }

    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// A valid access token, from the cache when it has more than a few minutes left.
    pub async fn token(&self) -> Result<Secret, OAuthError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let (token, lifetime) = self.fetch().await?;
        // Short-lived tokens (a stand-in) are kept for half their life.
        let keep = lifetime.saturating_sub(EARLY).max(lifetime / 2);
        *cached = Some((token.clone(), Instant::now() + keep));
        Ok(token)
    }

    /// Forgets the cached token (Graph answered 401: revoked or rotated).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    fn assertion(&self) -> Result<Option<String>, OAuthError> {
        let Credential::Certificate { key, x5t_s256, x5t } = &self.credential else {
            return Ok(None);
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.x5t_s256 = Some(x5t_s256.clone());
        header.x5t = Some(x5t.clone());
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "aud": self.token_url,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": hex::encode(graphbridge_core::crypto::random_bytes::<16>()),
            "iat": now,
            "nbf": now,
            "exp": now + 600,
        });
        jsonwebtoken::encode(&header, &claims, key)
            .map(Some)
            .map_err(|e| OAuthError::Certificate(format!("signing the client assertion: {e}")))
    }

    async fn fetch(&self) -> Result<(Secret, Duration), OAuthError> {
        let assertion = self.assertion()?;
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "client_credentials"),
            ("client_id", &self.client_id),
            ("scope", GRAPH_SCOPE),
        ];
        match (&self.credential, &assertion) {
            (Credential::Secret(s), _) => form.push(("client_secret", s.expose())),
            (Credential::Certificate { .. }, Some(a)) => {
                form.push(("client_assertion_type", ASSERTION_TYPE));
                form.push(("client_assertion", a.as_str()));
            }
            (Credential::Certificate { .. }, None) => unreachable!("assertion built above"),
        }
        let unavailable = |detail: String| OAuthError::Unavailable {
            url: self.token_url.clone(),
            detail,
        };
        let resp = self
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| unavailable(e.to_string()))?;
        if status.is_success() {
            let t: TokenResponse = serde_json::from_slice(&body)
                .map_err(|e| unavailable(format!("unexpected token response: {e}")))?;
            let lifetime = Duration::from_secs(t.expires_in.unwrap_or(3600));
            return Ok((Secret::new(t.access_token), lifetime));
        }
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(unavailable(format!("HTTP {status}")));
        }
        let e: TokenErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        Err(OAuthError::Rejected {
            url: self.token_url.clone(),
            client_id: self.client_id.clone(),
            status: status.as_u16(),
            error: if e.error.is_empty() {
                "unknown_error".into()
            } else {
                e.error
            },
            description: e
                .error_description
                .lines()
                .next()
                .unwrap_or_default()
                .trim_end()
                .to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_must_be_exactly_one_and_debug_hides_the_secret() {
        let mut cfg = GraphAuthConfig {
            authority: "https://login.example/".into(),
            client_id: Some("app".into()),
            client_secret: Some(Secret::new("hunter2-secret")),
            ..Default::default()
        };
        let http = graphbridge_core::http::client();
        let src = TokenSource::new(&cfg, "t1", http.clone()).unwrap();
        assert_eq!(
            src.token_url(),
            "https://login.example/t1/oauth2/v2.0/token"
        );
        assert!(!format!("{src:?}").contains("hunter2"));
        cfg.certificate_file = Some("x.crt".into());
        let err = TokenSource::new(&cfg, "t1", http.clone()).unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
        cfg.client_id = None;
        assert!(TokenSource::new(&cfg, "t1", http).is_err());
    }
}
