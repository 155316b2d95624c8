//! Graph's `validationTokens` (graph-protocol.md §5): proof that a request with resource data
//! came from Microsoft Graph. A token is valid when it is RS256-signed by a current Microsoft
//! key, within `nbf`/`exp` (small skew), addressed to one of our app ids, issued for an allowed
//! tenant by the v1 or v2 issuer of that tenant, and the caller is Microsoft Graph Change
//! Tracking (`appid` in v1, `azp` in v2). Every (app, tenant) pair of the items must be covered.
//! Verified tokens are cached until they expire, so the hot path costs a hash lookup.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::jwks::Jwks;

/// Microsoft Graph Change Tracking, the only legitimate caller.
pub const GRAPH_CHANGE_TRACKING: &str = "0bf30f3b-4a52-48df-9a82-234910c4a086";

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    #[error("validationTokens missing for notifications with resource data")]
    Missing,
    #[error(
        "a validation token is null (Graph's service principal is misconfigured in the tenant)"
    )]
    Null,
    #[error("validation token is malformed")]
    Malformed,
    #[error("validation token algorithm {0} is not RS256")]
    Algorithm(String),
    #[error("validation token signed by unknown key id")]
    UnknownKey,
    #[error("validation token signature does not verify")]
    Signature,
    #[error("validation token expired")]
    Expired,
    #[error("validation token not yet valid")]
    NotYetValid,
    #[error("validation token audience is not one of graph.app_ids")]
    Audience,
    #[error("validation token issuer is not Microsoft's issuer for its tenant")]
    Issuer,
    #[error("validation token tenant is not allowed")]
    Tenant,
    #[error("validation token caller is not Microsoft Graph Change Tracking")]
    Caller,
    #[error("no validation token covers tenant {0}")]
    Uncovered(String),
    /// Microsoft's keys could not be fetched: fail closed, but Graph should retry (503).
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(String),
}

impl TokenError {
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::Null => "token_null",
            TokenError::Malformed | TokenError::Algorithm(_) => "token_malformed",
            TokenError::UnknownKey => "token_unknown_key",
            TokenError::Signature => "token_signature",
            TokenError::Expired | TokenError::NotYetValid => "token_expired",
            TokenError::Audience => "token_audience",
            TokenError::Issuer | TokenError::Tenant => "token_issuer",
            TokenError::Caller => "token_caller",
            TokenError::Uncovered(_) => "token_uncovered",
            TokenError::KeysUnavailable(_) => "token_keys_unavailable",
        }
    }
}

/// What a valid token proves: Graph calls on behalf of `app_id` for `tenant_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Verified {
    pub app_id: String,
    pub tenant_id: String,
    pub expires: i64,
}

#[derive(Deserialize)]
struct Claims {
    aud: String,
    iss: String,
    tid: String,
    exp: i64,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    ver: Option<String>,
    #[serde(default)]
    appid: Option<String>,
    #[serde(default)]
    azp: Option<String>,
}

pub struct TokenPolicy {
    pub app_ids: Vec<String>,
    /// Allowed tenants, lowercase; empty = any.
    pub tenants: Vec<String>,
    pub skew_s: i64,
}

/// Checks claims after the signature verified. Pure: `now` is passed in.
fn check_claims(c: &Claims, policy: &TokenPolicy, now: i64) -> Result<Verified, TokenError> {
    if c.exp + policy.skew_s < now {
        return Err(TokenError::Expired);
    }
    if c.nbf.is_some_and(|nbf| nbf - policy.skew_s > now) {
        return Err(TokenError::NotYetValid);
    }
    if !policy
        .app_ids
        .iter()
        .any(|a| a.eq_ignore_ascii_case(&c.aud))
    {
        return Err(TokenError::Audience);
    }
    let tid = c.tid.to_ascii_lowercase();
    let v1 = format!("https://sts.windows.net/{tid}/");
    let v2 = format!("https://login.microsoftonline.com/{tid}/v2.0");
    let iss = c.iss.to_ascii_lowercase();
    // The caller claim depends on the token version: appid in v1, azp in v2.
    let caller = if iss == v1 && c.ver.as_deref() != Some("2.0") {
        c.appid.as_deref()
    } else if iss == v2 && c.ver.as_deref() != Some("1.0") {
        c.azp.as_deref()
    } else {
        return Err(TokenError::Issuer);
    };
    if !policy.tenants.is_empty() && !policy.tenants.contains(&tid) {
        return Err(TokenError::Tenant);
    }
    if caller != Some(GRAPH_CHANGE_TRACKING) {
        return Err(TokenError::Caller);
    }
    Ok(Verified {
        app_id: c.aud.to_ascii_lowercase(),
        tenant_id: tid,
        expires: c.exp,
    })
}

pub struct TokenVerifier {
    jwks: Arc<Jwks>,
    policy: TokenPolicy,
    /// SHA-256 of token → what it proved. Bounded; entries expire with their token.
    cache: Mutex<HashMap<[u8; 32], Verified>>,
}

const CACHE_LIMIT: usize = 10_000;

impl TokenVerifier {
    pub fn new(jwks: Arc<Jwks>, policy: TokenPolicy) -> Self {
        TokenVerifier {
            jwks,
            policy,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn jwks(&self) -> &Arc<Jwks> {
        &self.jwks
    }

    /// Verifies one token at time `now` (seconds since the epoch).
    pub async fn verify(&self, token: &str, now: i64) -> Result<Verified, TokenError> {
        let fp: [u8; 32] = digest::digest(&digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .expect("32 bytes");
        if let Some(v) = self.cache.lock().expect("lock").get(&fp) {
            if v.expires + self.policy.skew_s >= now {
                return Ok(v.clone());
            }
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            // Never let the token pick its algorithm: no `none`, no HS256 keyed with a public key.
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(TokenError::Malformed)?;
        let key = self
            .jwks
            .key(&kid)
            .await
            .map_err(|e| TokenError::KeysUnavailable(e.to_string()))?
            .ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::RS256);
        // Time and claims are checked by check_claims with an injectable clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
            _ => TokenError::Malformed,
        })?;
        let verified = check_claims(&data.claims, &self.policy, now)?;
        let mut cache = self.cache.lock().expect("lock");
        if cache.len() >= CACHE_LIMIT {
            cache.retain(|_, v| v.expires + self.policy.skew_s >= now);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(fp, verified.clone());
        Ok(verified)
    }

    /// Checks a request: every token valid, and every tenant of an item with resource data
    /// covered by a token for one of our apps. Any bad token fails the whole request.
    pub async fn check_request(
        &self,
        tokens: Option<&[Option<String>]>,
        tenants_with_data: &HashSet<String>,
        now: i64,
    ) -> Result<(), TokenError> {
        if tenants_with_data.is_empty() {
            return Ok(());
        }
        let tokens = tokens
            .filter(|t| !t.is_empty())
            .ok_or(TokenError::Missing)?;
        let mut covered = HashSet::new();
        for token in tokens {
            let token = token.as_deref().ok_or(TokenError::Null)?;
            covered.insert(self.verify(token, now).await?.tenant_id);
        }
        match tenants_with_data
            .iter()
            .find(|t| !covered.contains(&t.to_ascii_lowercase()))
        {
            Some(t) => Err(TokenError::Uncovered(t.clone())),
            None => Ok(()),
        }
    }
}
