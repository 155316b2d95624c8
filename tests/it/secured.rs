//! Secured brokers refusing the bridge: a wrong password, an untrusted CA, an expired client
//! certificate. Each stops `serve` at start with an error that names the broker and the cause
//! (the sink's readiness, which `/readyz` reports, says the same), within seconds, never a
//! silent hang; the secrets never appear in what is printed. And the secrets themselves: from
//! files and from the environment, redacted in `config check`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use graphbridge_core::config::{Config, Secret};
use graphbridge_core::sink::SinkError;

use crate::common::kafka::kafka_config;
use crate::common::nats::nats_config;
use crate::common::process::write_config;
use crate::common::secure::{self, Kafka, Nats};
use crate::common::{self, unique};

/// `serve` with `cfg` (and `env`) must exit unsuccessfully within a bound: its stderr.
fn serve_refuses(cfg: &Config, dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    refuses(cfg, dir, &["serve"], env)
}

/// The binary with `cfg`, `args` and `env` must exit unsuccessfully within a bound: its stderr.
fn refuses(cfg: &Config, dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let path = write_config(cfg, dir);
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_graphbridge"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .envs(env.iter().copied())
        .env("GRAPHBRIDGE_SERVER__LISTEN", "127.0.0.1:0")
        .env("GRAPHBRIDGE_SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A hang is the failure this guards against: bounded, then killed.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("{args:?} still running after 60 s: it must refuse to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!status.success(), "{args:?} started: {stderr}");
    stderr
}

/// Both the sink's readiness and `serve`'s start fail with `cause`, naming `broker`; neither
/// shows `secret`.
async fn refused(
    cfg: Config,
    dir: &std::path::Path,
    env: &[(&str, &str)],
    broker: &str,
    cause: &str,
    secret: &str,
) {
    let sink = graphbridge_core::sink::build(&cfg.sink).await;
    let why = match sink {
        Ok(sink) => match sink.ready().await {
            Err(SinkError::Permanent(why)) => why,
            other => panic!("readiness must fail for good, got {other:?}"),
        },
        // NATS authenticates while connecting: the connection itself is refused.
        Err(SinkError::Permanent(why)) => why,
        Err(e) => panic!("a misconfiguration, not an outage: {e}"),
    };
    for text in [why, serve_refuses(&cfg, dir, env)] {
        assert!(text.contains(cause), "{cause:?} not in: {text}");
        assert!(text.contains(broker), "{broker:?} not in: {text}");
        assert!(!text.contains(secret), "the secret shows in: {text}");
    }
}

fn wrong() -> String {
    unique("wrong-password")
}

#[tokio::test]
async fn kafka_with_a_wrong_password_says_authentication_failed() {
    common::needs!(kafka_with_a_wrong_password_says_authentication_failed: "GRAPHBRIDGE_TEST_KAFKA_SASL_SSL");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = secure::kafka(kafka_config(dir.path(), &unique("wrongpw")), Kafka::Scram);
    let broker = cfg.sink.kafka.brokers.clone();
    let bad = wrong();
    // In process the wrong password is the configured one; the process gets it from the
    // environment, as a Kubernetes secretKeyRef would set it.
    cfg.sink.kafka.sasl_password_file = None;
    cfg.sink.kafka.sasl_password = Some(Secret::new(bad.as_str()));
    let env = [("GRAPHBRIDGE_SINK__KAFKA__SASL_PASSWORD", bad.as_str())];
    refused(
        cfg,
        dir.path(),
        &env,
        &broker,
        "authentication failed",
        &bad,
    )
    .await;
}

#[tokio::test]
async fn kafka_with_an_untrusted_ca_says_unknown_ca() {
    common::needs!(kafka_with_an_untrusted_ca_says_unknown_ca: "GRAPHBRIDGE_TEST_KAFKA_SASL_SSL");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = secure::kafka(kafka_config(dir.path(), &unique("badca")), Kafka::Scram);
    let broker = cfg.sink.kafka.brokers.clone();
    cfg.sink.kafka.properties.insert(
        "ssl.ca.location".into(),
        secure::file("other-ca.pem").display().to_string(),
    );
    let password = secure::read("kafka-scram.password");
    refused(
        cfg,
        dir.path(),
        &[],
        &broker,
        "not trusted (unknown CA",
        &password,
    )
    .await;
}

#[tokio::test]
async fn kafka_with_an_expired_client_certificate_says_so() {
    common::needs!(kafka_with_an_expired_client_certificate_says_so: "GRAPHBRIDGE_TEST_KAFKA_MTLS");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = secure::kafka(
        kafka_config(dir.path(), &unique("expired")),
        Kafka::MutualTls,
    );
    let broker = cfg.sink.kafka.brokers.clone();
    let p = &mut cfg.sink.kafka.properties;
    p.insert(
        "ssl.certificate.location".into(),
        secure::file("expired-client.pem").display().to_string(),
    );
    p.insert(
        "ssl.key.location".into(),
        secure::file("expired-client.key").display().to_string(),
    );
    refused(
        cfg,
        dir.path(),
        &[],
        &broker,
        "certificate has expired",
        "-----BEGIN",
    )
    .await;
}

#[tokio::test]
async fn nats_with_a_wrong_password_says_authentication_failed() {
    common::needs!(nats_with_a_wrong_password_says_authentication_failed: "GRAPHBRIDGE_TEST_NATS_SECURE");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = secure::nats(nats_config(dir.path(), &unique("wrongpw")), Nats::Password);
    let broker = cfg.sink.nats.url.clone();
    let bad = wrong();
    cfg.sink.nats.password_file = None;
    cfg.sink.nats.password = Some(Secret::new(bad.as_str()));
    let env = [("GRAPHBRIDGE_SINK__NATS__PASSWORD", bad.as_str())];
    refused(
        cfg,
        dir.path(),
        &env,
        &broker,
        "authentication failed",
        &bad,
    )
    .await;
}

#[tokio::test]
async fn nats_with_an_untrusted_ca_says_unknown_ca() {
    common::needs!(nats_with_an_untrusted_ca_says_unknown_ca: "GRAPHBRIDGE_TEST_NATS_SECURE");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = secure::nats(nats_config(dir.path(), &unique("badca")), Nats::Password);
    let broker = cfg.sink.nats.url.clone();
    cfg.sink.nats.tls_ca_file = Some(secure::file("other-ca.pem"));
    let password = secure::read("nats.password");
    refused(
        cfg,
        dir.path(),
        &[],
        &broker,
        "not trusted (unknown CA",
        &password,
    )
    .await;
}

#[tokio::test]
async fn nats_with_an_expired_client_certificate_says_so() {
    common::needs!(nats_with_an_expired_client_certificate_says_so: "GRAPHBRIDGE_TEST_NATS_SECURE");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = secure::nats(nats_config(dir.path(), &unique("expired")), Nats::Nkey);
    let broker = cfg.sink.nats.url.clone();
    cfg.sink.nats.tls_cert_file = Some(secure::file("expired-client.pem"));
    cfg.sink.nats.tls_key_file = Some(secure::file("expired-client.key"));
    let seed = secure::read("nats-user.nk");
    refused(
        cfg,
        dir.path(),
        &[],
        &broker,
        "certificate has expired",
        &seed,
    )
    .await;
}

/// A client certificate the brokers' CA did not sign: valid, so only the broker can refuse it,
/// and it does so with a bare TLS alert. The cause is still named.
#[tokio::test]
async fn a_client_certificate_the_broker_refuses_is_named() {
    common::needs!(a_client_certificate_the_broker_refuses_is_named: "GRAPHBRIDGE_TEST_KAFKA_MTLS", "GRAPHBRIDGE_TEST_NATS_SECURE");
    let dir = tempfile::tempdir().unwrap();
    let cause = "refused the client certificate";
    let mut cfg = secure::kafka(
        kafka_config(dir.path(), &unique("refused")),
        Kafka::MutualTls,
    );
    let broker = cfg.sink.kafka.brokers.clone();
    let p = &mut cfg.sink.kafka.properties;
    p.insert(
        "ssl.certificate.location".into(),
        secure::file("untrusted-client.pem").display().to_string(),
    );
    p.insert(
        "ssl.key.location".into(),
        secure::file("untrusted-client.key").display().to_string(),
    );
    refused(cfg, dir.path(), &[], &broker, cause, "-----BEGIN").await;

    let mut cfg = secure::nats(nats_config(dir.path(), &unique("refused")), Nats::Password);
    let broker = cfg.sink.nats.url.clone();
    cfg.sink.nats.tls_cert_file = Some(secure::file("untrusted-client.pem"));
    cfg.sink.nats.tls_key_file = Some(secure::file("untrusted-client.key"));
    let password = secure::read("nats.password");
    refused(cfg, dir.path(), &[], &broker, cause, &password).await;
}

/// `serve --source eventhubs` with a connection string the hub does not accept: refused at start
/// with the cause, as the sink is.
#[tokio::test]
async fn the_event_hubs_source_with_a_wrong_connection_string_says_authentication_failed() {
    common::needs!(the_event_hubs_source_with_a_wrong_connection_string_says_authentication_failed: "GRAPHBRIDGE_TEST_KAFKA_SASL_SSL");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = kafka_config(dir.path(), &unique("ehpw"));
    cfg.eventhubs.brokers = common::broker_env("GRAPHBRIDGE_TEST_KAFKA_SASL_SSL");
    cfg.eventhubs.topic = unique("ehpw.hub");
    cfg.eventhubs.properties.insert(
        "ssl.ca.location".into(),
        secure::file("ca.pem").display().to_string(),
    );
    let bad = format!(
        "Endpoint=sb://graphbridge-test.servicebus.windows.net/;SharedAccessKeyName=graphbridge;SharedAccessKey={}",
        wrong()
    );
    let env = [("GRAPHBRIDGE_EVENTHUBS__CONNECTION_STRING", bad.as_str())];
    let stderr = refuses(&cfg, dir.path(), &["serve", "--source", "eventhubs"], &env);
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(stderr.contains(&cfg.eventhubs.brokers), "{stderr}");
    assert!(!stderr.contains(&bad), "{stderr}");
}
