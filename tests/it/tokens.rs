//! Graph's validationTokens: the vector cases, hostile tokens, key refresh and fail-closed
//! behaviour, unit-level and through `serve`.

use crate::common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use common::*;
use graphbridge_core::auth::jwks::Jwks;
use graphbridge_core::auth::tokens::{TokenError, TokenPolicy, TokenVerifier};
use graphbridge_sim::issuer::Issuer;
use serde_json::{json, Value};

fn cases() -> Value {
    json("synthetic/jwt_validation_token_cases.json")
}

fn vector_verifier(tenants: Vec<String>) -> TokenVerifier {
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(json("synthetic/jwt_jwks.json")).unwrap();
    TokenVerifier::new(
        Arc::new(Jwks::from_set(&set)),
        TokenPolicy {
            app_ids: vec![cases()["expected_audience"].as_str().unwrap().into()],
            tenants,
            skew_s: 300,
        },
    )
}

#[tokio::test]
async fn vector_cases_valid_pass_and_bad_fail() {
    let c = cases();
    let now = c["now"].as_i64().unwrap();
    let v = vector_verifier(vec![c["expected_tenant"].as_str().unwrap().into()]);
    let mut seen = 0;
    for (name, case) in c["cases"].as_object().unwrap() {
        let result = v.verify(case["token"].as_str().unwrap(), now).await;
        assert_eq!(
            result.is_ok(),
            case["expected_valid"].as_bool().unwrap(),
            "{name}: {result:?}"
        );
        seen += 1;
    }
    assert!(seen >= 8);
    // The expired one is valid an hour earlier: it is the clock that rejects it.
    let expired = c["cases"]["bad_expired"]["token"].as_str().unwrap();
    assert!(v.verify(expired, now - 3600).await.is_ok());
    assert_eq!(
        v.verify(expired, now).await.unwrap_err(),
        TokenError::Expired
    );
}

#[tokio::test]
async fn forged_algorithms_are_refused() {
    let c = cases();
    let now = c["now"].as_i64().unwrap();
    let v = vector_verifier(vec![]);
    let valid = c["cases"]["valid_v2"]["token"].as_str().unwrap();
    let payload = valid.split('.').nth(1).unwrap();
    // alg: none, no signature.
    let none = format!(
        "{}.{payload}.",
        B64URL.encode(r#"{"alg":"none","typ":"JWT","kid":"synthetic-kid-1"}"#)
    );
    assert!(matches!(
        v.verify(&none, now).await,
        Err(TokenError::Malformed | TokenError::Algorithm(_))
    ));
    // HS256 keyed with the public key's modulus: the classic key-confusion forgery.
    let jwks = json("synthetic/jwt_jwks.json");
    let secret = B64URL
        .decode(jwks["keys"][0]["n"].as_str().unwrap())
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("synthetic-kid-1".into());
    let claims: Value = serde_json::from_slice(&B64URL.decode(payload).unwrap()).unwrap();
    let hs = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap();
    assert!(matches!(
        v.verify(&hs, now).await,
        Err(TokenError::Algorithm(_))
    ));
    // Garbage.
    assert_eq!(
        v.verify("not.a.jwt", now).await.unwrap_err(),
        TokenError::Malformed
    );
}

#[tokio::test]
async fn request_coverage_missing_null_and_other_tenant() {
    let c = cases();
    let now = c["now"].as_i64().unwrap();
    let v = vector_verifier(vec![]);
    let tenant = c["expected_tenant"].as_str().unwrap().to_string();
    let tenants: HashSet<String> = [tenant.clone()].into();
    let valid = Some(
        c["cases"]["valid_v1"]["token"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    assert!(v
        .check_request(Some(std::slice::from_ref(&valid)), &tenants, now)
        .await
        .is_ok());
    assert_eq!(
        v.check_request(None, &tenants, now).await.unwrap_err(),
        TokenError::Missing
    );
    assert_eq!(
        v.check_request(Some(&[]), &tenants, now).await.unwrap_err(),
        TokenError::Missing
    );
    assert_eq!(
        v.check_request(Some(&[valid.clone(), None]), &tenants, now)
            .await
            .unwrap_err(),
        TokenError::Null
    );
    let other: HashSet<String> = [tenant, "another-tenant".to_string()].into();
    assert_eq!(
        v.check_request(Some(&[valid]), &other, now)
            .await
            .unwrap_err(),
        TokenError::Uncovered("another-tenant".into())
    );
    // Batches without resource data (lifecycle only) need no token.
    assert!(v.check_request(None, &HashSet::new(), now).await.is_ok());
}

/// An OpenID endpoint serving `jwks`, counting key-set fetches.
async fn counting_openid(jwks: Value) -> (String, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let meta = json!({"jwks_uri": format!("{base}/keys")});
    let f = fetches.clone();
    let app = axum::Router::new()
        .route(
            "/openid",
            axum::routing::get(move || async move { axum::Json(meta) }),
        )
        .route(
            "/keys",
            axum::routing::get(move || {
                f.fetch_add(1, Ordering::SeqCst);
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("{base}/openid"), fetches)
}

#[tokio::test]
async fn unknown_kid_refreshes_once_then_rejects() {
    let trusted = Issuer::new("app", None).unwrap();
    let stranger = Issuer::new("app", None).unwrap();
    let (url, fetches) = counting_openid(trusted.jwks()).await;
    let jwks = Arc::new(Jwks::new(&url, Duration::from_secs(30)));
    let v = TokenVerifier::new(
        jwks.clone(),
        TokenPolicy {
            app_ids: vec!["app".into()],
            tenants: vec![],
            skew_s: 60,
        },
    );
    let now = chrono::Utc::now().timestamp();
    assert!(
        v.verify(&trusted.token("t1", true, now), now).await.is_ok(),
        "first use fetches the keys"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    assert!(v
        .verify(&trusted.token("t2", false, now), now)
        .await
        .is_ok());
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "known kid: no fetch");
    assert_eq!(
        v.verify(&stranger.token("t1", true, now), now)
            .await
            .unwrap_err(),
        TokenError::UnknownKey
    );
    assert_eq!(
        v.verify(&stranger.token("t1", true, now), now)
            .await
            .unwrap_err(),
        TokenError::UnknownKey
    );
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "refresh for unknown kids is rate-limited"
    );
}

#[tokio::test]
async fn serve_refuses_forged_requests_without_publishing_or_dead_lettering() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let issuer = with_tokens(&mut cfg).await;
    let srv = Running::start(&cfg).await;
    let item = json("synthetic/chat_notification.json")["value"][0].clone();
    let tenant = item["tenantId"].as_str().unwrap().to_string();
    let now = chrono::Utc::now().timestamp();
    let post = |tokens: Value| {
        let body = json!({"value": [item.clone()], "validationTokens": tokens});
        let srv = &srv;
        async move {
            srv.post_json("/notifications", &body)
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(post(json!([])).await, 401, "missing");
    assert_eq!(post(json!([null])).await, 401, "null");
    assert_eq!(post(json!(["x.y.z"])).await, 401, "garbage");
    assert_eq!(
        post(json!([issuer.token("another-tenant", true, now)])).await,
        403,
        "other tenant"
    );
    let stranger = Issuer::new(&issuer.app_id, None).unwrap();
    assert_eq!(
        post(json!([stranger.token(&tenant, true, now)])).await,
        401,
        "unknown signer"
    );
    assert!(
        jsonl(&cfg.sink.file.path).is_empty() && jsonl(&cfg.sink.file.deadletter_path).is_empty()
    );

    assert_eq!(
        post(json!([issuer.token(&tenant, false, now)])).await,
        202,
        "valid v1 token"
    );
    assert_eq!(jsonl(&cfg.sink.file.path).len(), 1);
    let metrics = srv.metrics().await;
    for reason in [
        "token_missing",
        "token_null",
        "token_malformed",
        "token_uncovered",
        "token_unknown_key",
    ] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason} not counted: {metrics}"
        );
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn signing_keys_unreachable_fails_closed_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let issuer = with_tokens(&mut cfg).await;
    // Point at a port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    cfg.graph.validation_tokens.openid_config_url =
        format!("http://{}/openid", closed.local_addr().unwrap());
    drop(closed);
    let srv = Running::start(&cfg).await;
    let item = json("synthetic/chat_notification.json")["value"][0].clone();
    let token = issuer.token(
        item["tenantId"].as_str().unwrap(),
        true,
        chrono::Utc::now().timestamp(),
    );
    let resp = srv
        .post_json(
            "/notifications",
            &json!({"value": [item], "validationTokens": [token]}),
        )
        .await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(srv.admin_status("/readyz").await, 503);
    let metrics = srv.metrics().await;
    assert!(
        metrics.contains("reason=\"token_keys_unavailable\""),
        "{metrics}"
    );
    assert!(
        jsonl(&cfg.sink.file.path).is_empty() && jsonl(&cfg.sink.file.deadletter_path).is_empty()
    );
    srv.shutdown().await;
}
