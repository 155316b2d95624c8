//! The secured brokers (scripts/brokers.sh): the same Kafka's SASL_SSL (SCRAM-SHA-512, PLAIN)
//! and mTLS listeners, a second nats-server with TLS (client certificates required) and users,
//! and the test CA, certificates and passwords scripts/secure.sh made for them.
#![allow(dead_code)]

use std::path::PathBuf;

use graphbridge_core::config::{Config, KafkaConfig, NatsConfig};

/// Where scripts/secure.sh put the CA, certificates and passwords.
pub fn tls_dir() -> PathBuf {
    PathBuf::from(super::broker_env("GRAPHBRIDGE_TEST_TLS_DIR"))
}

pub fn file(name: &str) -> PathBuf {
    tls_dir().join(name)
}

pub fn read(name: &str) -> String {
    std::fs::read_to_string(file(name))
        .unwrap()
        .trim()
        .to_string()
}

/// How a client reaches the test Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kafka {
    Plaintext,
    /// SASL_SSL, SCRAM-SHA-512, the password from `sasl_password_file`.
    Scram,
    /// SASL_SSL, PLAIN, the password set as the environment would set it (`sasl_password`).
    Plain,
    /// SSL with a client certificate.
    MutualTls,
}

impl Kafka {
    /// The environment variable with this listener's address.
    pub fn var(self) -> &'static str {
        match self {
            Kafka::Plaintext => "GRAPHBRIDGE_TEST_KAFKA",
            Kafka::Scram | Kafka::Plain => "GRAPHBRIDGE_TEST_KAFKA_SASL_SSL",
            Kafka::MutualTls => "GRAPHBRIDGE_TEST_KAFKA_MTLS",
        }
    }

    /// Points `k` at this listener with its credentials, as an operator would configure them.
    pub fn apply(self, k: &mut KafkaConfig) {
        k.brokers = super::broker_env(self.var());
        let mut set = |key: &str, value: String| {
            k.properties.insert(key.into(), value);
        };
        let ca = file("ca.pem").display().to_string();
        match self {
            Kafka::Plaintext => {}
            Kafka::Scram | Kafka::Plain => {
                set("security.protocol", "SASL_SSL".into());
                set("ssl.ca.location", ca);
                set("sasl.username", "graphbridge".into());
            }
            Kafka::MutualTls => {
                set("security.protocol", "SSL".into());
                set("ssl.ca.location", ca);
                set(
                    "ssl.certificate.location",
                    file("client.pem").display().to_string(),
                );
                set("ssl.key.location", file("client.key").display().to_string());
            }
        }
        match self {
            Kafka::Scram => {
                k.properties
                    .insert("sasl.mechanisms".into(), "SCRAM-SHA-512".into());
                k.sasl_password_file = Some(file("kafka-scram.password"));
            }
            Kafka::Plain => {
                k.properties
                    .insert("sasl.mechanisms".into(), "PLAIN".into());
                k.sasl_password = Some(graphbridge_core::config::Secret::new(read(
                    "kafka-plain.password",
                )));
            }
            _ => {}
        }
    }
}

/// How a client reaches the test NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nats {
    Plaintext,
    /// The secured server: TLS with a client certificate, user and password (from a file).
    Password,
    /// The secured server: TLS with a client certificate, an NKey seed file.
    Nkey,
}

impl Nats {
    pub fn var(self) -> &'static str {
        match self {
            Nats::Plaintext => "GRAPHBRIDGE_TEST_NATS",
            Nats::Password | Nats::Nkey => "GRAPHBRIDGE_TEST_NATS_SECURE",
        }
    }

    pub fn apply(self, n: &mut NatsConfig) {
        n.url = super::broker_env(self.var());
        if self == Nats::Plaintext {
            return;
        }
        n.tls_ca_file = Some(file("ca.pem"));
        n.tls_cert_file = Some(file("client.pem"));
        n.tls_key_file = Some(file("client.key"));
        match self {
            Nats::Password => {
                n.user = Some("graphbridge".into());
                n.password_file = Some(file("nats.password"));
            }
            _ => n.nkey_seed_file = Some(file("nats-user.nk")),
        }
    }
}

/// `cfg` with its Kafka sink on `listener`, secret files read as `Config::load` reads them.
pub fn kafka(mut cfg: Config, listener: Kafka) -> Config {
    listener.apply(&mut cfg.sink.kafka);
    cfg.read_secret_files().unwrap();
    cfg
}

/// `cfg` with its NATS sink on `listener`, secret files read as `Config::load` reads them.
pub fn nats(mut cfg: Config, listener: Nats) -> Config {
    listener.apply(&mut cfg.sink.nats);
    cfg.read_secret_files().unwrap();
    cfg
}

/// One test function `$f(listener)`, run once per listener as `$f::<name>`.
macro_rules! per_listener {
    ($f:ident: $($name:ident => $listener:expr),+ $(,)?) => {
        mod $f {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let listener = $listener;
                    if $crate::common::skip_without(
                        listener.var(),
                        concat!(module_path!(), "::", stringify!($name)),
                    ) {
                        return;
                    }
                    super::$f(listener).await
                }
            )+
        }
    };
}
pub(crate) use per_listener;
