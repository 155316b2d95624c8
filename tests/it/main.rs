//! The integration tests: one binary, one module per area (the crate graph is linked once).
//! Broker tests read GRAPHBRIDGE_TEST_KAFKA / GRAPHBRIDGE_TEST_NATS (scripts/brokers.sh env)
//! and say they were skipped when those are unset.

mod common;

mod backfill;
mod config_cli;
mod durability;
mod e2e;
mod eventhubs;
#[cfg(feature = "fuzzing")]
mod fuzz_corpus;
mod hostile;
mod ingress;
mod kafka;
mod keys_tls_secrets;
mod metrics;
mod nats;
mod otlp;
mod outage;
mod replay;
mod secured;
mod spool;
mod subscriptions;
mod tokens;
mod vectors;
mod verdicts;
