//! The simulator's stand-in for Microsoft's token service: an RS256 signing key, validation
//! tokens shaped like Graph's (v1 and v2), and the OpenID metadata + JWKS served on a local
//! port so a bridge can be pointed at it (`graph.validation_tokens.openid_config_url`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use graphbridge_core::auth::tokens::GRAPH_CHANGE_TRACKING;
use graphbridge_core::crypto::keyring::pkcs8_to_pkcs1;

pub struct Issuer {
    key: EncodingKey,
    /// Tokens already signed, per (tenant, v2): Graph reuses a token for its hour of validity,
    /// and signing (an RSA private-key operation) per batch would load the machine under test.
    signed: Mutex<HashMap<(String, bool), (i64, String)>>,
    kid: String,
    jwk: Value,
    /// Our app id as Graph's tokens name it (`aud`).
    pub app_id: String,
}

/// The OpenID metadata. Its `jwks_uri` is on the host the request was addressed to (its Host
/// header), so that a bridge reaching the issuer by a service name (Compose, Kubernetes) fetches
/// the keys there too, also when the issuer listens on 0.0.0.0; on `base` without one.
fn metadata(host: Option<&str>, base: &str) -> Value {
    let base = host.map_or_else(|| base.to_string(), |h| format!("http://{h}"));
    json!({ "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0", "jwks_uri": format!("{base}/keys") })
}

impl std::fmt::Debug for Issuer {
    // The signing key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("kid", &self.kid)
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// A new signing key; when `path` is given the key is kept there (PKCS#8 DER) and reused,
    /// so a bridge that cached the JWKS keeps trusting successive simulator runs.
    pub fn new(app_id: &str, path: Option<&Path>) -> anyhow::Result<Self> {
        let pkcs8 = match path {
            Some(p) if p.exists() => std::fs::read(p)?,
            _ => {
                let der = KeyPair::generate(KeySize::Rsa2048)?
                    .as_der()?
                    .as_ref()
                    .to_vec();
                if let Some(p) = path {
                    std::fs::write(p, &der)?;
                }
                der
            }
        };
        let pair = KeyPair::from_pkcs8(&pkcs8).map_err(|e| anyhow::anyhow!("issuer key: {e}"))?;
        let public = pair.public_key();
        let kid = hex::encode(
            &aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public.as_ref()).as_ref()[..8],
        );
        let jwk = json!({
            "kty": "RSA", "use": "sig", "kid": kid,
            "n": B64URL.encode(public.modulus().big_endian_without_leading_zero()),
            "e": B64URL.encode(public.exponent().big_endian_without_leading_zero()),
        });
        let pkcs1 = pkcs8_to_pkcs1(&pkcs8)
            .ok_or_else(|| anyhow::anyhow!("issuer key is not PKCS#8 RSA"))?;
        Ok(Issuer {
            key: EncodingKey::from_rsa_der(&pkcs1),
            signed: Mutex::new(HashMap::new()),
            kid,
            jwk,
            app_id: app_id.to_string(),
        })
    }

    /// A validation token for `tenant`, valid for an hour from `now` (seconds since the epoch).
    /// `v2` selects the v2 shape (issuer `login.microsoftonline.com/{tid}/v2.0`, caller in `azp`).
    pub fn token(&self, tenant: &str, v2: bool, now: i64) -> String {
        let key = (tenant.to_string(), v2);
        if let Some((issued, token)) = self.signed.lock().expect("lock").get(&key) {
            // Reused for 50 of its 60 minutes, like Graph.
            if (*issued..*issued + 3000).contains(&now) {
                return token.clone();
            }
        }
        let token = self.sign(tenant, v2, now);
        self.signed
            .lock()
            .expect("lock")
            .insert(key, (now, token.clone()));
        token
    }

    fn sign(&self, tenant: &str, v2: bool, now: i64) -> String {
        let mut claims = json!({
            "aud": self.app_id, "tid": tenant, "iat": now - 60, "nbf": now - 60, "exp": now + 3600,
        });
        if v2 {
            claims["iss"] = json!(format!("https://login.microsoftonline.com/{tenant}/v2.0"));
            claims["azp"] = json!(GRAPH_CHANGE_TRACKING);
            claims["ver"] = json!("2.0");
        } else {
            claims["iss"] = json!(format!("https://sts.windows.net/{tenant}/"));
            claims["appid"] = json!(GRAPH_CHANGE_TRACKING);
            claims["ver"] = json!("1.0");
        }
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("RS256 signing")
    }

    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    /// Serves `/.well-known/openid-configuration` and `/keys` on `listener`; returns the
    /// metadata URL to configure in the bridge.
    pub fn serve(self: &Arc<Self>, listener: TcpListener) -> anyhow::Result<String> {
        let base = format!("http://{}", listener.local_addr()?);
        let jwks = self.jwks();
        let fallback = base.clone();
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move |headers: axum::http::HeaderMap| async move {
                    let host = headers
                        .get(axum::http::header::HOST)
                        .and_then(|h| h.to_str().ok());
                    axum::Json(metadata(host, &fallback))
                }),
            )
            .route(
                "/keys",
                axum::routing::get(move || async move { axum::Json(jwks) }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(format!("{base}/.well-known/openid-configuration"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_uri_on_the_host_the_bridge_asked() {
        let uri = |host| metadata(host, "http://0.0.0.0:8443")["jwks_uri"].clone();
        assert_eq!(uri(Some("simulate:8443")), "http://simulate:8443/keys");
        assert_eq!(uri(None), "http://0.0.0.0:8443/keys");
    }

    #[tokio::test]
    async fn served_metadata_names_the_requested_host() {
        let issuer = Arc::new(Issuer::new("app", None).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        issuer.serve(listener).unwrap();
        let url = format!("http://127.0.0.1:{port}/.well-known/openid-configuration");
        let client = graphbridge_core::http::client();
        let get = |host: String| {
            let req = client.get(&url).header(reqwest::header::HOST, host);
            async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
        };
        let meta = get(format!("issuer.test:{port}")).await;
        assert_eq!(meta["jwks_uri"], format!("http://issuer.test:{port}/keys"));
        let meta = get(format!("127.0.0.1:{port}")).await;
        let keys: Value = client
            .get(meta["jwks_uri"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(keys, issuer.jwks());
    }
}
