//! graphbridge: Microsoft Graph change notifications for Teams messages → Kafka and NATS.
//!
//! A notification flows down this list: `server` → `graph` → `auth` → `crypto` → `event` →
//! `pipeline` → `sink`.

pub mod auth;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod event;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod graph;
pub mod pipeline;
pub mod replay;
pub mod server;
pub mod simulate;
pub mod sink;
pub mod spool;
pub mod subscriptions;
pub mod telemetry;
