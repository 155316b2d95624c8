//! Key rotation without a restart, in-process TLS, and secrets kept out of Debug output.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use graphbridge_core::crypto::certgen;
use graphbridge_core::crypto::encrypt::Recipient;
use graphbridge_core::graph::envelope::ChangeType;
use graphbridge_core::graph::resource::Conversation;
use graphbridge_sim::generate::MessageSpec;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn add_key(dir: &std::path::Path, id: &str) -> Recipient {
    let key = certgen::generate(id, 2048).unwrap();
    std::fs::write(dir.join(format!("{id}.crt")), &key.certificate_pem).unwrap();
    // The key file last: a reload that sees it also sees its certificate.
    std::fs::write(dir.join(format!("{id}.pem")), key.pkcs8_pem.as_bytes()).unwrap();
    Recipient::from_certificate(id, &key.certificate_der).unwrap()
}

/// Waits (bounded) until the bridge reports `n` keys loaded.
async fn until_keys(admin: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = common::metrics_at(admin).await;
        if m.contains(&format!("graphbridge_keys_loaded {n}\n")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "keys_loaded never reached {n}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn item(r: &Recipient, id: i64) -> serde_json::Value {
    MessageSpec::new(
        "t1",
        Conversation::Chat {
            chat_id: "19:rot@unq.gbl.spaces".into(),
        },
        id,
        ChangeType::Created,
        "<p>x</p>",
    )
    .notification("sub", SYNTH_CLIENT_STATE, r)
}

#[tokio::test]
async fn old_and_new_keys_both_decrypt_during_rotation_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let keys = dir.path().join("rotating-keys");
    std::fs::create_dir_all(&keys).unwrap();
    cfg.graph.keys_dir = keys.clone();
    cfg.graph.keys_reload_interval_ms = 100;
    let old = add_key(&keys, "cert-2026-10");
    let srv = Running::start(&cfg).await;
    until_keys(&srv.admin, 1).await;

    let new = add_key(&keys, "cert-2026-11");
    until_keys(&srv.admin, 2).await;
    // Graph may use either certificate for a while after the subscription PATCH.
    let resp = srv
        .post_json(
            "/notifications",
            &json!({"value": [item(&old, 1), item(&new, 2)]}),
        )
        .await;
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["events"], 2);

    // Retire the old key: its notifications are now dead letters with a clear reason.
    std::fs::remove_file(keys.join("cert-2026-10.pem")).unwrap();
    until_keys(&srv.admin, 1).await;
    let resp = srv
        .post_json(
            "/notifications",
            &json!({"value": [item(&old, 3), item(&new, 4)]}),
        )
        .await;
    let summary: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(summary["events"], 1);
    assert_eq!(summary["rejected"], json!(["unknown_certificate"]));

    // A broken file does not take the working keys down.
    std::fs::write(keys.join("broken.pem"), "not a key").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !srv
        .metrics()
        .await
        .contains("graphbridge_key_reload_failures_total 1")
    {
        assert!(Instant::now() < deadline, "reload failure not reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = srv
        .post_json("/notifications", &json!({"value": [item(&new, 5)]}))
        .await;
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["events"], 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn tls_listener_serves_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), cert.key_pair.serialize_pem()).unwrap();
    cfg.server.tls = Some(graphbridge_core::config::TlsConfig {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    });
    let srv = Running::start(&cfg).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(srv.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"POST /notifications?validationToken=over%20TLS HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("over TLS"), "{response}");
    let (_, conn) = tls.get_ref();
    assert!(matches!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3 | rustls::ProtocolVersion::TLSv1_2)
    ));

    // Plain HTTP on the TLS port gets nowhere.
    assert!(graphbridge_core::http::client()
        .post(format!("{}/notifications?validationToken=x", srv.base))
        .send()
        .await
        .is_err());
    srv.shutdown().await;
}

#[test]
fn secrets_and_content_stay_out_of_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.graph.keys_password = Some(graphbridge_core::config::Secret::new("pfx-password-123"));
    let printed = format!("{cfg:?}");
    assert!(
        !printed.contains(SYNTH_CLIENT_STATE) && !printed.contains("pfx-password-123"),
        "{printed}"
    );

    let item = json("synthetic/chat_notification.json")["value"][0].clone();
    let n =
        <graphbridge_core::graph::envelope::ChangeNotification as serde::Deserialize>::deserialize(
            &item,
        )
        .unwrap();
    let printed = format!("{n:?}");
    assert!(!printed.contains(SYNTH_CLIENT_STATE), "{printed}");
    assert!(
        !printed.contains(item["encryptedContent"]["data"].as_str().unwrap()),
        "{printed}"
    );

    let ring =
        graphbridge_core::crypto::keyring::Keyring::load_dir(&cfg.graph.keys_dir, None).unwrap();
    let printed = format!("{ring:?}");
    assert!(
        !printed.contains("PRIVATE") && printed.contains("synthetic-cert-2025"),
        "{printed}"
    );
}
