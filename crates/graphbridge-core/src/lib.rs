//! graphbridge's ingress core. A notification flows down this list: `server` → `graph` →
//! `auth` → `crypto` → `event` → `pipeline` → `sink` (or `spool`). `config` and `telemetry`
//! are leaves everything may use.

pub mod auth;
pub mod config;
pub mod crypto;
pub mod event;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod graph;
pub mod http;
pub mod pipeline;
pub mod secret;
pub mod server;
pub mod sink;
pub mod spool;
pub mod telemetry;
