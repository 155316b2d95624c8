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
        let meta = json!({ "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0", "jwks_uri": format!("{base}/keys") });
        let jwks = self.jwks();
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(meta) }),
            )
            .route(
                "/keys",
                axum::routing::get(move || async move { axum::Json(jwks) }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(format!("{base}/.well-known/openid-configuration"))
    }
}
