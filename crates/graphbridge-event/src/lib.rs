//! graphbridge's event schema, for producers and consumers alike: the CloudEvents v1 types
//! (`v1`), the deterministic event id (`id`) and a dedupe helper for consumers (`dedupe`).
//! No I/O, no crypto provider, no broker client: a downstream Rust consumer depends on this
//! crate alone. The JSON Schemas are in the repository's `schema/` folder and embedded here.

pub mod dedupe;
pub mod id;
pub mod v1;

pub use id::event_id;

/// JSON Schema of the message event, v1 (`schema/teams-message.v1.json`).
pub const MESSAGE_SCHEMA_JSON: &str = include_str!("../../../schema/teams-message.v1.json");
/// JSON Schema of the lifecycle event, v1 (`schema/lifecycle.v1.json`).
pub const LIFECYCLE_SCHEMA_JSON: &str = include_str!("../../../schema/lifecycle.v1.json");
