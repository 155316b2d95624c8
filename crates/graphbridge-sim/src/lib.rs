//! The Graph emulator: Graph's side of the protocol, as a load generator and an end-to-end
//! checker. `generate` builds messages and notification items, `workload` a realistic stream
//! with planned bad items, `run` drives a bridge with Graph's handshake and retries, `verify`
//! reads back what the bridge published, `report` summarizes.

pub mod cli;
pub mod generate;
pub mod graph_api;
mod graph_messages;
mod graph_verdicts;
pub mod issuer;
pub mod report;
pub mod run;
pub mod verify;
pub mod workload;
