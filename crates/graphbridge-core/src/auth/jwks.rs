//! Microsoft's token signing keys: fetched from the OpenID metadata's `jwks_uri`, cached,
//! refreshed in the background and on an unknown `kid` (rate-limited, so a flood of forged
//! `kid`s cannot hammer the endpoint). Fails closed: without keys nothing verifies.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::DecodingKey;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum JwksError {
    #[error("fetching signing keys: {0}")]
    Fetch(String),
}

pub struct Jwks {
    openid_config_url: String,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, Arc<DecodingKey>>>,
    /// When the last fetch was attempted; serializes fetches too.
    last_fetch: Mutex<Option<Instant>>,
    min_refresh_interval: Duration,
}

impl Jwks {
    pub fn new(openid_config_url: &str, min_refresh_interval: Duration) -> Self {
        Jwks {
            openid_config_url: openid_config_url.to_string(),
            http: crate::http::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client"),
            keys: RwLock::new(HashMap::new()),
            last_fetch: Mutex::new(None),
            min_refresh_interval,
        }
    }

    /// Fixed keys from a JWKS document, never refreshed (tests, fuzzing, offline use).
    pub fn from_set(set: &JwkSet) -> Self {
        Jwks {
            keys: RwLock::new(decode_set(set)),
            last_fetch: Mutex::new(Some(Instant::now())),
            ..Jwks::new("", Duration::MAX)
        }
    }

    pub fn len(&self) -> usize {
        self.keys.read().expect("lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn cached(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.keys.read().expect("lock").get(kid).cloned()
    }

    /// The key for `kid`: from the cache, or after a refresh if the last fetch is old enough.
    /// `Ok(None)` means the kid is unknown to Microsoft's current key set.
    pub async fn key(&self, kid: &str) -> Result<Option<Arc<DecodingKey>>, JwksError> {
        if let Some(k) = self.cached(kid) {
            return Ok(Some(k));
        }
        let mut last = self.last_fetch.lock().await;
        // Another request may have refreshed while we waited for the lock.
        if let Some(k) = self.cached(kid) {
            return Ok(Some(k));
        }
        // Without any keys (start-up, or the endpoint was down) retry soon; with keys, an
        // unknown kid is more likely forged than new, so refresh rarely.
        let interval = if self.is_empty() {
            Duration::from_secs(1)
        } else {
            self.min_refresh_interval
        };
        let recent = last.is_some_and(|t| t.elapsed() < interval);
        if recent {
            // Rate-limited: without any keys at all we cannot judge, so fail closed (503).
            return if self.is_empty() {
                Err(JwksError::Fetch(
                    "no signing keys and refresh rate-limited".into(),
                ))
            } else {
                Ok(None)
            };
        }
        *last = Some(Instant::now());
        self.fetch().await?;
        Ok(self.cached(kid))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, JwksError> {
        let err = |e: reqwest::Error| JwksError::Fetch(format!("{url}: {e}"));
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(err)?;
        resp.json().await.map_err(err)
    }

    /// Fetches the metadata and the key set and replaces the cache.
    pub async fn fetch(&self) -> Result<usize, JwksError> {
        let meta: serde_json::Value = self.get_json(&self.openid_config_url).await?;
        let uri = meta["jwks_uri"]
            .as_str()
            .ok_or_else(|| JwksError::Fetch("OpenID metadata has no jwks_uri".into()))?;
        let set: JwkSet = self.get_json(uri).await?;
        let keys = decode_set(&set);
        let n = keys.len();
        if n == 0 {
            return Err(JwksError::Fetch("key set holds no usable RSA keys".into()));
        }
        *self.keys.write().expect("lock") = keys;
        tracing::info!(keys = n, "validation token signing keys refreshed");
        Ok(n)
    }

    /// Refreshes every `interval` until the process ends (keys rotate on Microsoft's side).
    pub fn spawn_refresh(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = me.fetch().await {
                    tracing::warn!(error = %e, "signing key refresh failed; keeping the cached keys");
                }
                *me.last_fetch.lock().await = Some(Instant::now());
                tokio::time::sleep(interval).await;
            }
        })
    }
}

fn decode_set(set: &JwkSet) -> HashMap<String, Arc<DecodingKey>> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((kid, Arc::new(key)))
        })
        .collect()
}
